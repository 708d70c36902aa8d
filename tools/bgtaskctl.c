/*
 * bgtaskctl.c - the command-line client: submit, status, watch, cancel, retry,
 * list, hosts and stats. It talks to Redis only through the store
 * (host/store.h), so it knows no key names; --json gives every command a form
 * for scripts.
 */
#include <ctype.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "events.h"
#include "store.h"
#include "util.h"

#ifndef BGT_VERSION
#define BGT_VERSION "dev"
#endif

/* Exit codes, as documented in the help text. */
enum {
    EX_OK = 0,
    EX_FAIL = 1,
    EX_USAGE = 2, /* also: Redis cannot be reached */
    EX_CANCELLED = 3,
    EX_PARTIAL = 4,
    EX_NOTFOUND = 5,
};

/* How long watch waits for an event before it re-reads the record. */
#define WATCH_QUIET_S 2.0
/* How long watch goes on trying to reach Redis again before it gives up. */
#define WATCH_RECONNECT_S 30.0
#define BAR_WIDTH 20
/* The most running subtasks watch --subtasks draws under the bar on a terminal. */
#define SUB_LINES_MAX 20
/* The highest tasks.max_subtasks a config may set: a record counting more is corrupted. */
#define SUBTASKS_MAX 1000000

/* What every command shares: the global options and the connection. */
typedef struct ctl {
    const char *cli_url;   /* --redis */
    const char *conf_path; /* -c */
    const char *prefix;    /* --prefix, else the config's */
    bool json;
    bgt_config cfg;      /* loaded from -c, else the defaults */
    const char *url;     /* the address in use */
    char url_shown[256]; /* url without its password, for messages */
    redis_addr addr;
    store *st; /* the connection */
} ctl;

/* The options of every command (each command's table says which it takes). */
typedef struct cmd_opts {
    const char *args, *args_file, *subtasks_file, *id, *state, *handler, *on_failure;
    long max_attempts, limit, parallelism;
    double delay;
    bool wait, subtasks;
} cmd_opts;

static const char usage_short[] =
    "usage: bgtaskctl [--redis URL] [-c FILE] [--prefix P] [--json] COMMAND [ARGS]\n"
    "commands: submit, status, watch, cancel, retry, list, hosts, stats (bgtaskctl --help)\n";

static const char usage_long[] =
    "usage: bgtaskctl [OPTIONS] COMMAND [ARGS]\n"
    "\n"
    "Submit, follow and manage bgtask background tasks, whose state lives in Redis.\n"
    "\n"
    "Options (also accepted after the command):\n"
    "  --redis URL    Redis address: redis://[:password@]host[:port][/db] or unix:///path\n"
    "                 (default: $BGTASK_REDIS, else the config's redis.url, else\n"
    "                 " STORE_DEFAULT_URL ")\n"
    "                 The password: the URL's, else $BGTASK_REDIS_PASSWORD, else the\n"
    "                 config's (keep it off the command line, where ps shows it)\n"
    "  -c, --config FILE  read redis.url, redis.password (or redis.password_file),\n"
    "                 redis.prefix and the task limits from a bgtaskd config file\n"
    "  --prefix P     key prefix (default: the config's, else \"bgtask\")\n"
    "  --json         machine-readable output\n"
    "  -h, --help     this text\n"
    "  --version      print the version\n"
    "\n"
    "Commands:\n"
    "  submit HANDLER [--args JSON | --args-file F] [--id ID] [--delay S]\n"
    "         [--max-attempts N] [--subtasks-file F] [--parallelism N]\n"
    "         [--on-failure continue|fail_fast] [--wait]\n"
    "                 create a task and print its id (F may be - for stdin);\n"
    "                 --subtasks-file gives a parallel task its subtasks (a JSON\n"
    "                 array: one element of args per subtask); --parallelism (1..1024)\n"
    "                 and --on-failure override the handler's for this task;\n"
    "                 --wait then follows it like watch and exits with its outcome\n"
    "  status ID [--subtasks]\n"
    "                 show a task's record; --subtasks adds a table of a parallel\n"
    "                 task's subtasks (index, state, attempt, message), which with\n"
    "                 --json is printed alone, as an array\n"
    "  watch ID [--subtasks]\n"
    "                 follow a task's progress until it ends; --subtasks adds one line\n"
    "                 per running subtask of a parallel task, with its own progress\n"
    "  cancel ID      cancel a task (a running one is asked to stop)\n"
    "  retry ID [--wait]\n"
    "                 run the failed and cancelled subtasks of a finished parallel task\n"
    "                 again, as a new attempt (the others keep their outcome); exits 1\n"
    "                 if the task is not parallel, still running or has none of those;\n"
    "                 --wait then follows it like watch\n"
    "  list [--state S] [--handler H] [--limit N]\n"
    "                 recent tasks, newest first (default limit 20)\n"
    "  hosts          live hosts\n"
    "  stats          queue and outcome counts\n"
    "\n"
    "Exit codes:\n"
    "  0  success (watch: the task is done)\n"
    "  1  failure (watch: the task failed; retry: nothing to retry)\n"
    "  2  usage error, bad input or Redis cannot be reached\n"
    "  3  the task was cancelled\n"
    "  4  partial success (some subtasks failed)\n"
    "  5  task not found\n";

/* ---- small helpers ---- */

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bgtaskctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fputs(usage_short, stderr);
    return EX_USAGE;
}

/* Display width of UTF-8 text, counting each code point as one column. */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

/*
 * Copy s into out (n >= 8 bytes) for one line of output: control characters
 * become spaces, and text wider than max code points (or than out) is cut to
 * end in "...", never inside a UTF-8 sequence. Returns out.
 */
static const char *clean(const char *s, size_t max, char *out, size_t n)
{
    size_t o = 0, chars = 0, cap = n - 4; /* room for "..." and the NUL */
    size_t limit = s && text_width(s) <= max ? max : max > 3 ? max - 3 : 0;
    bool all = true;
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool start = (ch & 0xC0) != 0x80;
        if ((start && (chars++ == limit || o + 4 > cap)) || o >= cap) {
            all = false;
            break;
        }
        out[o++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
    }
    if (!all) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) && v->valuestring ? v->valuestring : "";
}

static double jnum(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* A number without a needless ".000000". */
static const char *fmt_num(double v, char *buf, size_t n)
{
    snprintf(buf, n, v == floor(v) && fabs(v) < 1e15 ? "%.0f" : "%g", v);
    return buf;
}

/* Local time of a ms timestamp. */
static const char *fmt_time(double ms, char *buf, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

/* How long ago a ms timestamp was: "12s ago", "5m ago", "3h ago", "2d ago". */
static const char *fmt_age(double ms, char *buf, size_t n)
{
    double s = fmax(0, (double)now_ms() - ms) / 1000;
    if (s < 120)
        snprintf(buf, n, "%.0fs ago", s);
    else if (s < 7200)
        snprintf(buf, n, "%.0fm ago", s / 60);
    else if (s < 172800)
        snprintf(buf, n, "%.0fh ago", s / 3600);
    else
        snprintf(buf, n, "%.0fd ago", s / 86400);
    return buf;
}

static int term_columns(void)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
        return ws.ws_col;
    return 80;
}

static int term_rows(void)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0)
        return ws.ws_row;
    return 24;
}

/* Print a JSON value (pretty, or on one line) and a newline. */
static void print_json(const cJSON *v, bool one_line)
{
    char *s = one_line ? cJSON_PrintUnformatted(v) : cJSON_Print(v);
    if (s)
        puts(s);
    free(s);
    fflush(stdout);
}

/* A JSON value as table text: arrays joined by ",", null as "-". Caller frees. */
static char *cell_text(const cJSON *v)
{
    char buf[64];
    if (cJSON_IsString(v))
        return xstrdup(v->valuestring);
    if (cJSON_IsNumber(v))
        return xstrdup(fmt_num(v->valuedouble, buf, sizeof buf));
    if (!v || cJSON_IsNull(v))
        return xstrdup("-");
    if (!cJSON_IsArray(v)) {
        char *s = cJSON_PrintUnformatted(v);
        char *out = xstrdup(s ? s : "");
        free(s);
        return out;
    }
    char *out = xstrdup("");
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        char *s = cell_text(e);
        char *joined = xasprintf("%s%s%s", out, *out ? "," : "", s);
        free(out);
        free(s);
        out = joined;
    }
    return out;
}

/* ---- tables ---- */

#define TABLE_MAX_COLS 8

/* Text cells printed in aligned columns under a header; the table owns the cells. */
typedef struct table {
    int ncols;
    const char *head[TABLE_MAX_COLS];
    char **cells;
    size_t nrows, cap;
} table;

/* Append one row of ncols cells; takes ownership of each (malloc'd) string. */
static void table_row(table *t, char **row)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 16;
        t->cells = xrealloc(t->cells, t->cap * (size_t)t->ncols * sizeof *t->cells);
    }
    memcpy(t->cells + t->nrows * (size_t)t->ncols, row, (size_t)t->ncols * sizeof *row);
    t->nrows++;
}

/* Print the header and the rows (nothing at all without rows), then free the cells. */
static void table_print(table *t)
{
    size_t w[TABLE_MAX_COLS], nc = (size_t)t->ncols;
    for (size_t i = 0; i < nc; i++) {
        w[i] = strlen(t->head[i]);
        for (size_t r = 0; r < t->nrows; r++)
            if (text_width(t->cells[r * nc + i]) > w[i])
                w[i] = text_width(t->cells[r * nc + i]);
    }
    for (size_t r = 0; t->nrows && r <= t->nrows; r++)
        for (size_t i = 0; i < nc; i++) {
            const char *s = r == 0 ? t->head[i] : t->cells[(r - 1) * nc + i];
            if (i == nc - 1)
                printf("%s\n", s);
            else
                printf("%s%*s  ", s, (int)(w[i] - text_width(s)), "");
        }
    for (size_t i = 0; i < t->nrows * nc; i++)
        free(t->cells[i]);
    free(t->cells);
}

/* Print an array of objects as a table: one column per key, headed by the key in capitals. */
static void print_objects(const cJSON *arr, int ncols, const char *const *keys)
{
    table tb = {.ncols = ncols};
    char heads[TABLE_MAX_COLS][32];
    const cJSON *o;
    for (int i = 0; i < ncols; i++) {
        size_t j = 0;
        for (; keys[i][j] && j < sizeof heads[i] - 1; j++)
            heads[i][j] = (char)toupper((unsigned char)keys[i][j]);
        heads[i][j] = '\0';
        tb.head[i] = heads[i];
    }
    cJSON_ArrayForEach(o, arr) {
        char *row[TABLE_MAX_COLS];
        for (int i = 0; i < ncols; i++)
            row[i] = cell_text(cJSON_GetObjectItemCaseSensitive(o, keys[i]));
        table_row(&tb, row);
    }
    table_print(&tb);
}

/* ---- connection ---- */

/* Resolve the address, password and prefix from the options, env and config. */
static int ctl_setup(ctl *c)
{
    char err[512];
    if (c->conf_path) {
        config_free(&c->cfg);
        if (config_load(c->conf_path, &c->cfg, err, sizeof err) < 0) {
            fprintf(stderr, "bgtaskctl: %s\n", err);
            config_defaults(&c->cfg);
            return EX_USAGE;
        }
    }
    c->url = redis_url_pick(c->cli_url, c->conf_path ? c->cfg.redis_url : NULL);
    char *shown = redis_url_mask(c->url);
    snprintf(c->url_shown, sizeof c->url_shown, "%s", shown);
    free(shown);
    if (redis_addr_resolve(c->cli_url, c->conf_path ? c->cfg.redis_url : NULL, c->conf_path,
                           c->conf_path ? c->cfg.redis_password : NULL, &c->addr, err,
                           sizeof err) < 0 ||
        store_addr_check(&c->addr, err, sizeof err) < 0) {
        fprintf(stderr, "bgtaskctl: %s\n", err);
        return EX_USAGE;
    }
    if (!c->prefix)
        c->prefix = c->conf_path && c->cfg.prefix ? c->cfg.prefix : "bgtask";
    if (!*c->prefix || strpbrk(c->prefix, " \t\r\n"))
        return usage_error("bad prefix '%s': must be non-empty, without spaces", c->prefix);
    /* store_open reads the prefix from the config: the one chosen here. */
    if (c->prefix != c->cfg.prefix) {
        free(c->cfg.prefix);
        c->cfg.prefix = xstrdup(c->prefix);
        c->prefix = c->cfg.prefix;
    }
    return EX_OK;
}

/* A new connected store in *out, or EX_USAGE after saying why. */
static int ctl_open(ctl *c, store **out)
{
    store *st = store_open(&c->cfg, &c->addr);
    if (store_connect(st) < 0) {
        fprintf(stderr, "bgtaskctl: cannot connect to redis at %s: %s\n", c->url_shown,
                store_errstr(st));
        store_free(st);
        return EX_USAGE;
    }
    *out = st;
    return EX_OK;
}

/* Report a failed store call and return the exit code for it. */
static int store_fail(ctl *c, store *st, int rc, const char *id)
{
    if (rc == -ENOENT) {
        fprintf(stderr, "bgtaskctl: task %s not found\n", id);
        return EX_NOTFOUND;
    }
    if (rc == -EIO) {
        fprintf(stderr, "bgtaskctl: cannot reach redis at %s: %s\n", c->url_shown,
                store_errstr(st));
        return EX_USAGE;
    }
    fprintf(stderr, "bgtaskctl: %s\n", store_errstr(st));
    return rc == -EINVAL ? EX_USAGE : EX_FAIL;
}

/* ---- watch ---- */

/* A running subtask as the last progress event showed it. */
typedef struct sub_view {
    int index;
    double progress; /* its own, 0..1 */
} sub_view;

/* What watch shows: the last known progress and how to draw it. */
typedef struct watch_view {
    bool tty, json;
    bool subtasks; /* --subtasks: show the running subtasks too */
    bool drawn;    /* a bar line is on screen */
    int below;     /* lines drawn under the bar (running subtasks) */
    bool have_t0;
    double t0, cur0; /* when and where watching began, for the ETA */
    double cur, total;
    char message[512];
    sub_view *running; /* from the last event with a "subtasks" object */
    int nrunning, running_cap;
} watch_view;

/* The exit code of an event that ends its task (EX_OK, EX_FAIL, EX_CANCELLED or
 * EX_PARTIAL), else -1. */
static int event_exit_code(const char *name)
{
    switch (ev_kind_of(name)) {
    case EV_DONE: return EX_OK;
    case EV_FAILED: return EX_FAIL;
    case EV_CANCELLED: return EX_CANCELLED;
    case EV_PARTIAL_SUCCESS: return EX_PARTIAL;
    default: return -1;
    }
}

/*
 * The event that describes a record's state, for a reader who missed the real
 * one (events.c makes it). *name is static; the caller owns *data.
 */
static void record_event(const cJSON *rec, const char **name, cJSON **data)
{
    ev_buf b = {0};
    size_t off;
    *name = ev_name(ev_of_record(&b, rec, &off));
    *data = cJSON_Parse(b.s + off);
    ev_buf_free(&b);
    if (!*data)
        *data = cJSON_CreateObject(); /* only out of memory gets here */
}

/* A bar of width cells for frac (0..1) into bar (width + 1 bytes). */
static void fill_bar(char *bar, int width, double frac)
{
    for (int i = 0; i < width; i++)
        bar[i] = i < (int)(frac * width) ? '#' : '.';
    bar[width] = '\0';
}

/*
 * Take the running subtasks from a progress event's "subtasks" object
 * ({"total", "succeeded", "failed", "running": [{"index", "progress"}]});
 * an event without one leaves the list as it was.
 */
static void view_take_subtasks(watch_view *v, const cJSON *data)
{
    const cJSON *subs = cJSON_GetObjectItemCaseSensitive(data, "subtasks");
    const cJSON *run = cJSON_GetObjectItemCaseSensitive(subs, "running"), *r;
    if (!cJSON_IsArray(run))
        return;
    v->nrunning = 0;
    cJSON_ArrayForEach(r, run) {
        if (v->nrunning == v->running_cap) {
            v->running_cap = v->running_cap ? 2 * v->running_cap : 16;
            v->running = xrealloc(v->running, (size_t)v->running_cap * sizeof *v->running);
        }
        v->running[v->nrunning++] =
            (sub_view){(int)jnum(r, "index"), fmin(1, fmax(0, jnum(r, "progress")))};
    }
}

/*
 * Under the bar, one line per running subtask; at most what fits on the
 * screen, then a line that counts the rest. The cursor stays at the end of
 * the last line, and what an earlier, taller block left below is cleared.
 */
static void view_draw_subtasks(watch_view *v)
{
    int fit = term_rows() - 2, max = fit < 1 ? 1 : fit < SUB_LINES_MAX ? fit : SUB_LINES_MAX;
    int shown = v->nrunning <= max ? v->nrunning : max - 1;
    char bar[BAR_WIDTH / 2 + 1];
    for (int i = 0; i < shown; i++) {
        fill_bar(bar, BAR_WIDTH / 2, v->running[i].progress);
        printf("\n  subtask %-6d [%s] %3.0f%%\033[K", v->running[i].index, bar,
               v->running[i].progress * 100);
    }
    if (shown < v->nrunning)
        printf("\n  ... and %d more running\033[K", v->nrunning - shown);
    printf("\033[J");
    v->below = shown + (shown < v->nrunning);
}

/*
 * Redraw the bar in place: [#####.....]  42%  420/1000  ETA 0:12  message,
 * and with --subtasks the block of running subtasks under it.
 */
static void view_draw(watch_view *v)
{
    char line[256], a[32], b[32], eta[32] = "ETA -:--", pct[8] = "   -", bar[BAR_WIDTH + 1];
    double frac = v->total > 0 ? fmin(1, fmax(0, v->cur / v->total)) : 0;
    fill_bar(bar, BAR_WIDTH, frac);
    double dt = mono_s() - v->t0, done = v->cur - v->cur0;
    if (v->total > 0) {
        snprintf(pct, sizeof pct, "%3.0f%%", frac * 100);
        long s = dt > 0.5 && done > 0 ? lround(fmax(0, v->total - v->cur) / (done / dt)) : -1;
        if (s >= 3600)
            snprintf(eta, sizeof eta, "ETA %ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
        else if (s >= 0)
            snprintf(eta, sizeof eta, "ETA %ld:%02ld", s / 60, s % 60);
    }
    int n = snprintf(line, sizeof line, "[%s] %s  %s/%s  %s  ", bar, pct,
                     fmt_num(v->cur, a, sizeof a), fmt_num(v->total, b, sizeof b), eta);
    int room = term_columns() - 1 - n;
    char msg[512];
    if (v->below > 0)
        printf("\033[%dA", v->below); /* back up to the bar's line */
    printf("\r%s%s\033[K", line, clean(v->message, room > 3 ? (size_t)room : 0, msg, sizeof msg));
    if (v->subtasks)
        view_draw_subtasks(v);
    fflush(stdout);
    v->drawn = true;
}

/* Show one event (live or made from the record); its exit code if terminal, else -1. */
static int view_event(watch_view *v, const char *name, const cJSON *data)
{
    int code = event_exit_code(name);
    char a[32], b[32], buf[1024];
    if (ev_kind_of(name) == EV_UPDATED) {
        v->cur = jnum(data, "current_progress");
        v->total = jnum(data, "total_progress");
        if (!v->have_t0) {
            v->t0 = mono_s();
            v->cur0 = v->cur;
            v->have_t0 = true;
        }
        view_take_subtasks(v, data);
    } else if (code >= 0) {
        v->nrunning = 0; /* the task ended: nothing runs any more */
    }
    snprintf(v->message, sizeof v->message, "%s", jstr(data, "message"));
    if (v->json) {
        cJSON *line = cJSON_CreateObject();
        cJSON_AddStringToObject(line, "event", name);
        cJSON_AddItemToObject(line, "data", cJSON_Duplicate(data, true));
        print_json(line, true);
        cJSON_Delete(line);
    } else if (!v->tty) {
        char ts[32];
        time_t t = time(NULL);
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(ts, sizeof ts, "%H:%M:%S", &tm);
        printf("%s %s ", ts, name);
        printf("%s/%s %s\n", fmt_num(v->cur, a, sizeof a), fmt_num(v->total, b, sizeof b),
               clean(v->message, 1000, buf, sizeof buf));
        /* --subtasks: a line per running subtask after each progress line. */
        for (int i = 0; v->subtasks && code < 0 && i < v->nrunning; i++)
            printf("%s   subtask %d %.0f%%\n", ts, v->running[i].index,
                   v->running[i].progress * 100);
        /* A partial success: a line per failed subtask, as on a terminal. */
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(data, "errors")) {
            if (cJSON_IsString(e))
                printf("%s   error: %s\n", ts, clean(e->valuestring, 1000, buf, sizeof buf));
        }
        fflush(stdout);
    } else if (code < 0) {
        view_draw(v);
    } else {
        static const char *const words[] = {"done", "failed", "", "cancelled", "partial success"};
        const cJSON *res = cJSON_GetObjectItemCaseSensitive(data, "result"), *e;
        if (v->drawn) {
            view_draw(v);
            putchar('\n');
        }
        printf("%s: %s\n", words[code], clean(v->message, 1000, buf, sizeof buf));
        if (res && !cJSON_IsNull(res)) {
            char *s = cJSON_PrintUnformatted(res);
            printf("result: %s\n", clean(s, 1000, buf, sizeof buf));
            free(s);
        }
        const cJSON *errors = cJSON_GetObjectItemCaseSensitive(data, "errors");
        cJSON_ArrayForEach(e, errors) {
            if (cJSON_IsString(e))
                printf("error: %s\n", clean(e->valuestring, 1000, buf, sizeof buf));
        }
        fflush(stdout);
    }
    return code;
}

/* Show the record's state (only if it differs from what is shown, when asked);
 * returns the exit code if it is terminal, else -1. */
static int view_record(watch_view *v, const cJSON *rec, bool only_if_changed)
{
    const char *name;
    cJSON *data;
    record_event(rec, &name, &data);
    int code = event_exit_code(name);
    bool same = code < 0 && jnum(data, "current_progress") == v->cur &&
                jnum(data, "total_progress") == v->total &&
                strcmp(jstr(data, "message"), v->message) == 0;
    if (!only_if_changed || !same)
        code = view_event(v, name, data);
    cJSON_Delete(data);
    return code;
}

static void on_sigint(int sig)
{
    /* Leave the terminal on a fresh line below the bar; write() is async-signal-safe. */
    ssize_t w = write(STDOUT_FILENO, "\n", 1);
    (void)w;
    _exit(128 + sig);
}

/*
 * Follow a task until its terminal event. Subscribe first, then read the
 * record, so that nothing after the read can be missed; re-read the record
 * whenever no event came for WATCH_QUIET_S, which catches a terminal state
 * reached between the subscribe and the read or while reconnecting.
 */
static int watch_task(ctl *c, const char *id, bool subtasks)
{
    watch_view v = {.tty = isatty(STDOUT_FILENO), .json = c->json, .subtasks = subtasks};
    store *sub = NULL;
    cJSON *rec = NULL;
    int code = ctl_open(c, &sub);
    if (code != EX_OK)
        return code;
    store *failed = sub;
    int rc = store_subscribe_task(sub, id);
    if (rc == 0)
        rc = store_get_task((failed = c->st), id, &rec);
    if (rc < 0) {
        code = store_fail(c, failed, rc, id);
        goto out;
    }
    if (v.tty && !v.json)
        signal(SIGINT, on_sigint);
    code = view_record(&v, rec, false);
    double lost_since = 0;
    while (code < 0) {
        char *name = NULL;
        cJSON *data = NULL;
        int ev = store_next_event(sub, WATCH_QUIET_S, &name, &data);
        if (ev == 0) {
            lost_since = 0;
            code = view_event(&v, name, data);
            free(name);
            cJSON_Delete(data);
            continue;
        }
        if (ev == -EIO)
            sleep_s(0.2); /* the store reconnects and subscribes again, with backoff */
        cJSON_Delete(rec);
        rec = NULL;
        rc = store_get_task(c->st, id, &rec);
        if (rc == -ENOENT) {
            code = store_fail(c, c->st, rc, id);
            break;
        }
        if (rc == 0)
            code = view_record(&v, rec, true);
        if (rc == 0 && ev != -EIO)
            lost_since = 0;
        else if (!lost_since)
            lost_since = mono_s();
        else if (mono_s() - lost_since > WATCH_RECONNECT_S)
            break;
    }
    if (code < 0) {
        if (v.drawn)
            putchar('\n');
        fprintf(stderr, "bgtaskctl: lost the connection to redis at %s: %s\n", c->url_shown,
                *store_errstr(sub) ? store_errstr(sub) : store_errstr(c->st));
        code = EX_USAGE;
    }
out:
    cJSON_Delete(rec);
    store_free(sub);
    free(v.running);
    return code;
}

/* ---- submit ---- */

/* Read a whole file ("-" is stdin) into a NUL-terminated heap buffer; NULL with errno. */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f)
        return NULL;
    size_t n = 0, cap = 4096, r;
    char *buf = xmalloc(cap);
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0)
        if ((n += r) == cap - 1)
            buf = xrealloc(buf, cap *= 2);
    int bad = ferror(f) ? (errno ? errno : EIO) : 0;
    if (f != stdin)
        fclose(f);
    if (bad) {
        free(buf);
        errno = bad;
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/*
 * Check that text (len bytes, from what) is JSON of the wanted type (cJSON_Object
 * or cJSON_Array) and at most max bytes (0: any). Returns EX_OK, or EX_USAGE
 * after saying where the text is wrong. *count gets the number of elements.
 */
static int check_json(const char *what, const char *text, size_t len, int type, size_t max,
                      int *count)
{
    if (strlen(text) != len) {
        fprintf(stderr, "bgtaskctl: %s: invalid JSON: a NUL byte at offset %zu\n", what,
                strlen(text));
        return EX_USAGE;
    }
    if (max && len > max) {
        fprintf(stderr, "bgtaskctl: %s: %zu bytes, over the limit of %zu (tasks.max_args_bytes)\n",
                what, len, max);
        return EX_USAGE;
    }
    cJSON *v = cJSON_ParseWithOpts(text, NULL, true);
    if (!v) {
        const char *at = cJSON_GetErrorPtr(), *p;
        if (!at || at < text || at > text + len)
            at = text + len;
        int line = 1, col = 1;
        for (p = text; p < at; p++, col++)
            if (*p == '\n')
                line++, col = 0;
        char near[64];
        fprintf(stderr, "bgtaskctl: %s: invalid JSON at line %d, column %d (offset %zu): %s%s%s\n",
                what, line, col, (size_t)(at - text), *at ? "near '" : "at the end of the text",
                *at ? clean(at, 20, near, sizeof near) : "", *at ? "'" : "");
        return EX_USAGE;
    }
    bool ok = (v->type & 0xFF) == type;
    *count = cJSON_GetArraySize(v);
    cJSON_Delete(v);
    if (!ok)
        fprintf(stderr, "bgtaskctl: %s: must be a JSON %s\n", what,
                type == cJSON_Object ? "object" : "array");
    return ok ? EX_OK : EX_USAGE;
}

/* Read and check the JSON of --args / --args-file or --subtasks-file into *text. */
static int load_json(const char *inline_text, const char *file, int type, size_t max, char **text,
                     int *count)
{
    size_t len;
    const char *what = !file ? "--args" : strcmp(file, "-") == 0 ? "stdin" : file;
    if (!file)
        *text = xstrdup(inline_text), len = strlen(inline_text);
    else if (!(*text = read_all(file, &len))) {
        fprintf(stderr, "bgtaskctl: %s: %s\n", what, strerror(errno));
        return EX_USAGE;
    }
    return check_json(what, *text, len, type, max, count);
}

static int cmd_submit(ctl *c, const cmd_opts *o, const char *handler)
{
    char *args = NULL, *subs = NULL;
    int code = EX_USAGE, n;
    if (o->args && o->args_file)
        return usage_error("give --args or --args-file, not both");
    if (!name_valid(handler)) {
        fprintf(stderr, "bgtaskctl: bad handler name '%s': must match [a-z0-9][a-z0-9._-]{0,62}\n",
                handler);
        return EX_USAGE;
    }
    if (o->id && !id_valid(o->id)) {
        fprintf(stderr, "bgtaskctl: bad task id '%s': must be a UUID (36 characters, dashed)\n",
                o->id);
        return EX_USAGE;
    }
    if (load_json(o->args ? o->args : "{}", o->args_file, cJSON_Object, c->cfg.max_args_bytes,
                  &args, &n) != EX_OK)
        goto out;
    if (o->subtasks_file && load_json(NULL, o->subtasks_file, cJSON_Array, 0, &subs, &n) != EX_OK)
        goto out;
    if (subs && (n < 1 || n > c->cfg.max_subtasks)) {
        fprintf(stderr, "bgtaskctl: %s: a task has 1..%d subtasks (tasks.max_subtasks), got %d\n",
                o->subtasks_file, c->cfg.max_subtasks, n);
        goto out;
    }
    /* Everything is checked before connecting: bad input never reaches Redis. */
    if ((code = ctl_open(c, &c->st)) != EX_OK)
        goto out;
    submit_req req = {.id = o->id,
                      .handler = handler,
                      .args = args,
                      .subtasks = subs,
                      .max_attempts = (int)o->max_attempts,
                      .delay_s = o->delay,
                      .parallelism = (int)o->parallelism,
                      .on_failure = o->on_failure};
    int rc = store_submit(c->st, &req, 1);
    if (rc < 0) {
        code = store_fail(c, c->st, rc, "");
    } else if (req.rc == -EEXIST) {
        fprintf(stderr, "bgtaskctl: task %s already exists (nothing was changed)\n", req.id_out);
        code = EX_FAIL;
    } else if (req.rc < 0) {
        fprintf(stderr, "bgtaskctl: %s\n", req.err[0] ? req.err : strerror(-req.rc));
        code = req.rc == -EPROTO ? EX_FAIL : EX_USAGE;
    } else {
        printf(c->json ? "{\"task_id\": \"%s\"}\n" : "%s\n", req.id_out);
        fflush(stdout);
        code = o->wait ? watch_task(c, req.id_out, false) : EX_OK;
    }
out:
    free(args);
    free(subs);
    return code;
}

/* ---- status, watch, cancel ---- */

static void print_field(const char *key, const char *value)
{
    if (value && *value)
        printf("%-10s %s\n", key, value);
}

/* A JSON text as a JSON value: parsed, else the text itself; NULL as null. */
static cJSON *json_value(const char *text)
{
    cJSON *v = text && *text ? cJSON_Parse(text) : NULL;
    if (v)
        return v;
    return text && *text ? cJSON_CreateString(text) : cJSON_CreateNull();
}

/* The record's count of subtasks, kept within int (a corrupted one reads SUBTASKS_MAX + 1). */
static int sub_count(const cJSON *rec)
{
    return (int)fmin(fmax(jnum(rec, "subtasks"), 0), SUBTASKS_MAX + 1);
}

/*
 * The n subtasks of task id: a table of index, state, attempt and message, or
 * with --json an array of {index, state, attempt, message, args, result}.
 * A running subtask reads PENDING: its state changes when it ends.
 */
static int print_subtasks(ctl *c, const char *id, int n)
{
    if (n > SUBTASKS_MAX) {
        fprintf(stderr, "bgtaskctl: task %s: its record counts %d subtasks, more than a host "
                        "allows (%d): the record is corrupted\n",
                id, n, SUBTASKS_MAX);
        return EX_FAIL;
    }
    sub_rec *subs = NULL;
    int rc = store_load_subtasks(c->st, id, n, &subs);
    if (rc < 0)
        return store_fail(c, c->st, rc, id);
    if (c->json) {
        cJSON *arr = cJSON_CreateArray();
        for (int i = 0; i < n; i++) {
            cJSON *s = cJSON_CreateObject();
            cJSON_AddNumberToObject(s, "index", i);
            cJSON_AddStringToObject(s, "state", subs[i].state);
            cJSON_AddNumberToObject(s, "attempt", subs[i].attempt);
            if (subs[i].message && *subs[i].message)
                cJSON_AddStringToObject(s, "message", subs[i].message);
            else
                cJSON_AddNullToObject(s, "message");
            cJSON_AddItemToObject(s, "args", json_value(subs[i].args));
            cJSON_AddItemToObject(s, "result", json_value(subs[i].result));
            cJSON_AddItemToArray(arr, s);
        }
        print_json(arr, false);
        cJSON_Delete(arr);
    } else {
        table tb = {.ncols = 4, .head = {"INDEX", "STATE", "ATTEMPT", "MESSAGE"}};
        int room = isatty(STDOUT_FILENO) ? term_columns() - 30 : 100;
        for (int i = 0; i < n; i++) {
            char idx[32], att[32], msg[512];
            snprintf(idx, sizeof idx, "%d", i);
            snprintf(att, sizeof att, "%u", subs[i].attempt);
            const char *m = subs[i].message && *subs[i].message ? subs[i].message : "-";
            char *row[] = {xstrdup(idx), xstrdup(subs[i].state), xstrdup(att),
                           xstrdup(clean(m, room > 20 ? (size_t)room : 20, msg, sizeof msg))};
            table_row(&tb, row);
        }
        table_print(&tb);
        fflush(stdout);
    }
    store_sub_recs_free(subs, n);
    return EX_OK;
}

static int cmd_status(ctl *c, const cmd_opts *o, const char *id)
{
    cJSON *rec = NULL;
    int rc = store_get_task(c->st, id, &rec);
    if (rc < 0)
        return store_fail(c, c->st, rc, id);
    if (c->json && o->subtasks) {
        /* The table alone, as an array (empty for a task without subtasks). */
        int n = sub_count(rec);
        cJSON_Delete(rec);
        if (n > 0)
            return print_subtasks(c, id, n);
        puts("[]");
        return EX_OK;
    }
    if (c->json) {
        print_json(rec, false);
        cJSON_Delete(rec);
        return EX_OK;
    }
    char buf[1024], a[32], b[32], s[32];
    const char *state = jstr(rec, "state");
    double cur = jnum(rec, "progress_current"), total = jnum(rec, "progress_total");
    print_field("id:", jstr(rec, "id"));
    snprintf(buf, sizeof buf, "%s (%s)", jstr(rec, "handler"), jstr(rec, "kind"));
    print_field("handler:", *jstr(rec, "kind") ? buf : jstr(rec, "handler"));
    bool cancelling = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "cancel_requested"));
    snprintf(buf, sizeof buf, "%s%s", state,
             cancelling && strcmp(state, "ONGOING") == 0 ? " (cancel requested)" : "");
    print_field("state:", buf);
    snprintf(buf, sizeof buf, "%s/%s", fmt_num(jnum(rec, "attempt"), a, sizeof a),
             jnum(rec, "max_attempts") > 0 ? fmt_num(jnum(rec, "max_attempts"), b, sizeof b)
                                           : "default");
    print_field("attempt:", buf);
    print_field("owner:", *jstr(rec, "owner") ? jstr(rec, "owner") : "-");
    snprintf(buf, sizeof buf, "%s/%s", fmt_num(cur, a, sizeof a), fmt_num(total, b, sizeof b));
    if (total > 0)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), " (%.0f%%)",
                 fmin(100, 100 * cur / total));
    print_field("progress:", buf);
    if (jnum(rec, "subtasks") > 0) {
        snprintf(buf, sizeof buf, "%s (%s succeeded, %s failed)",
                 fmt_num(jnum(rec, "subtasks"), s, sizeof s),
                 fmt_num(jnum(rec, "sub_success"), a, sizeof a),
                 fmt_num(jnum(rec, "sub_failure"), b, sizeof b));
        print_field("subtasks:", buf);
    }
    /* A parallel task's own settings; "0" and "" stand for the handler's. */
    if (strcmp(jstr(rec, "parallelism"), "0") != 0)
        print_field("parallel:", jstr(rec, "parallelism"));
    print_field("on fail:", jstr(rec, "on_failure"));
    print_field("message:", clean(jstr(rec, "message"), 900, buf, sizeof buf));
    print_field("error:", clean(jstr(rec, "error"), 900, buf, sizeof buf));
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(rec, "result");
    if (res && !cJSON_IsNull(res)) {
        char *text = cJSON_PrintUnformatted(res);
        print_field("result:", clean(text, 900, buf, sizeof buf));
        free(text);
    }
    static const char *const times[][2] = {
        {"created_ms", "created:"}, {"started_ms", "started:"}, {"finished_ms", "finished:"}};
    for (int i = 0; i < 3; i++)
        if (jnum(rec, times[i][0]) > 0)
            print_field(times[i][1], fmt_time(jnum(rec, times[i][0]), buf, sizeof buf));
    int n = sub_count(rec);
    cJSON_Delete(rec);
    if (!o->subtasks)
        return EX_OK;
    if (n <= 0) {
        puts("\nno subtasks (not a parallel task, or not split yet)");
        return EX_OK;
    }
    putchar('\n');
    return print_subtasks(c, id, n);
}

static int cmd_watch(ctl *c, const cmd_opts *o, const char *id)
{
    return watch_task(c, id, o->subtasks);
}

static int cmd_cancel(ctl *c, const cmd_opts *o, const char *id)
{
    char state[128] = "";
    int rc = store_cancel(c->st, id, state, sizeof state);
    if (rc < 0)
        return store_fail(c, c->st, rc, id);
    /* For a request, the store answers the owner in state_out. */
    const char *owner = rc == CANCEL_REQUESTED && *state ? state : "another host";
    if (c->json) {
        static const char *const outcome[] = {"cancelled", "requested", "final"};
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "task_id", id);
        cJSON_AddStringToObject(j, "outcome", outcome[rc]);
        cJSON_AddStringToObject(j, "state",
                                rc == CANCEL_FINAL  ? state
                                : rc == CANCEL_DONE ? "CANCELLED"
                                                    : "ONGOING");
        if (rc == CANCEL_REQUESTED)
            cJSON_AddStringToObject(j, "owner", owner);
        print_json(j, true);
        cJSON_Delete(j);
    } else if (rc == CANCEL_DONE) {
        puts("cancelled");
    } else if (rc == CANCEL_REQUESTED) {
        printf("cancel requested (running on %s)\n", owner);
    } else {
        printf("already %s\n", state);
    }
    return EX_OK;
}

/*
 * Run the failed and cancelled subtasks of a finished parallel task again.
 * Not parallel, still running or nothing to run again: EX_FAIL with the
 * store's reason; with --wait, follow the new attempt like watch.
 */
static int cmd_retry(ctl *c, const cmd_opts *o, const char *id)
{
    int n = 0;
    int rc = store_retry(c->st, id, &n);
    if (rc == -EINVAL || rc == -EBUSY || rc == -EALREADY) {
        fprintf(stderr, "bgtaskctl: %s: nothing was changed\n", store_errstr(c->st));
        return EX_FAIL;
    }
    if (rc < 0)
        return store_fail(c, c->st, rc, id);
    if (c->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "task_id", id);
        cJSON_AddNumberToObject(j, "retrying", n);
        print_json(j, true);
        cJSON_Delete(j);
    } else {
        printf("retrying %d failed subtask(s)\n", n);
        fflush(stdout);
    }
    return o->wait ? watch_task(c, id, false) : EX_OK;
}

/* ---- list, hosts, stats ---- */

static int cmd_list(ctl *c, const cmd_opts *o, const char *unused)
{
    static const char *const states[] = {"ONGOING", "SUCCESS", "FAILURE", "CANCELLED"};
    const char *state = NULL;
    for (size_t i = 0; o->state && i < 4; i++)
        if (strcasecmp(o->state, states[i]) == 0)
            state = states[i];
    if (o->state && !state)
        return usage_error("--state must be ONGOING, SUCCESS, FAILURE or CANCELLED, got '%s'",
                           o->state);
    if (o->handler && !name_valid(o->handler))
        return usage_error("bad handler name '%s'", o->handler);
    cJSON *tasks = NULL, *t;
    int rc = store_list_tasks(c->st, state, o->handler, (int)o->limit, &tasks);
    if (rc < 0)
        return store_fail(c, c->st, rc, "");
    if (c->json) {
        print_json(tasks, false);
        cJSON_Delete(tasks);
        return EX_OK;
    }
    table tb = {.ncols = 7,
                .head = {"ID", "HANDLER", "STATE", "ATTEMPT", "PROGRESS", "UPDATED", "MESSAGE"}};
    /* On a terminal, the message gets what is left of the line (the rest takes ~93). */
    int room = isatty(STDOUT_FILENO) ? term_columns() - 93 : 60;
    cJSON_ArrayForEach(t, tasks) {
        char att[32], prog[64], age[32], msg[512];
        double cur = jnum(t, "progress_current"), total = jnum(t, "progress_total");
        if (total > 0)
            snprintf(prog, sizeof prog, "%.0f%%", fmin(100, 100 * cur / total));
        else
            fmt_num(cur, prog, sizeof prog);
        double upd = jnum(t, "updated_ms") > 0 ? jnum(t, "updated_ms") : jnum(t, "created_ms");
        const char *m = *jstr(t, "error") ? jstr(t, "error") : jstr(t, "message");
        char *row[] = {xstrdup(jstr(t, "id")),
                       xstrdup(jstr(t, "handler")),
                       xstrdup(jstr(t, "state")),
                       xstrdup(fmt_num(jnum(t, "attempt"), att, sizeof att)),
                       xstrdup(prog),
                       xstrdup(fmt_age(upd, age, sizeof age)),
                       xstrdup(clean(m, room > 20 ? (size_t)room : 20, msg, sizeof msg))};
        table_row(&tb, row);
    }
    table_print(&tb);
    cJSON_Delete(tasks);
    return EX_OK;
}

static int cmd_hosts(ctl *c, const cmd_opts *o, const char *unused)
{
    static const char *const keys[] = {"id",       "machine", "pid",    "version",
                                       "handlers", "workers", "running"};
    cJSON *hosts = NULL;
    int rc = store_list_hosts(c->st, &hosts);
    if (rc < 0)
        return store_fail(c, c->st, rc, "");
    if (c->json)
        print_json(hosts, false);
    else
        print_objects(hosts, 7, keys);
    cJSON_Delete(hosts);
    return EX_OK;
}

/* store_stats' answer: its plain members as "name: value" lines, then each
 * array of objects (the per-handler counts) as a table of the first one's keys. */
static int cmd_stats(ctl *c, const cmd_opts *o, const char *unused)
{
    cJSON *stats = NULL;
    const cJSON *e, *f;
    int rc = store_stats(c->st, &stats);
    if (rc < 0)
        return store_fail(c, c->st, rc, "");
    if (c->json) {
        print_json(stats, false);
        cJSON_Delete(stats);
        return EX_OK;
    }
    cJSON_ArrayForEach(e, stats) {
        if (!cJSON_IsArray(e)) {
            char *s = cell_text(e);
            printf("%s: %s\n", e->string, s);
            free(s);
        }
    }
    cJSON_ArrayForEach(e, stats) {
        const char *keys[TABLE_MAX_COLS];
        int n = 0;
        if (!cJSON_IsArray(e))
            continue;
        cJSON_ArrayForEach(f, cJSON_GetArrayItem(e, 0))
            if (n < TABLE_MAX_COLS)
                keys[n++] = f->string;
        printf("%s:%s\n", e->string, n ? "" : " none");
        if (n)
            print_objects(e, n, keys);
    }
    cJSON_Delete(stats);
    return EX_OK;
}

/* ---- options and main ---- */

enum {
    OPT_REDIS = 256,
    OPT_PREFIX,
    OPT_JSON,
    OPT_VERSION,
    OPT_ARGS,
    OPT_ARGS_FILE,
    OPT_ID,
    OPT_DELAY,
    OPT_MAX_ATTEMPTS,
    OPT_SUBTASKS_FILE,
    OPT_WAIT,
    OPT_STATE,
    OPT_HANDLER,
    OPT_LIMIT,
    OPT_PARALLELISM,
    OPT_ON_FAILURE,
    OPT_SUBTASKS
};

/* The options every command takes, first in each table. */
// clang-format off
#define COMMON_OPTIONS                                        \
    {"redis", required_argument, NULL, OPT_REDIS},            \
    {"config", required_argument, NULL, 'c'},                 \
    {"prefix", required_argument, NULL, OPT_PREFIX},          \
    {"json", no_argument, NULL, OPT_JSON},                    \
    {"help", no_argument, NULL, 'h'}
// clang-format on

static const struct option global_options[] = {
    COMMON_OPTIONS, {"version", no_argument, NULL, OPT_VERSION}, {0}};
static const struct option plain_options[] = {COMMON_OPTIONS, {0}};
static const struct option submit_options[] = {
    COMMON_OPTIONS,
    {"args", required_argument, NULL, OPT_ARGS},
    {"args-file", required_argument, NULL, OPT_ARGS_FILE},
    {"id", required_argument, NULL, OPT_ID},
    {"delay", required_argument, NULL, OPT_DELAY},
    {"max-attempts", required_argument, NULL, OPT_MAX_ATTEMPTS},
    {"subtasks-file", required_argument, NULL, OPT_SUBTASKS_FILE},
    {"parallelism", required_argument, NULL, OPT_PARALLELISM},
    {"on-failure", required_argument, NULL, OPT_ON_FAILURE},
    {"wait", no_argument, NULL, OPT_WAIT},
    {0},
};
static const struct option subtasks_options[] = {
    COMMON_OPTIONS,
    {"subtasks", no_argument, NULL, OPT_SUBTASKS},
    {0},
};
static const struct option retry_options[] = {
    COMMON_OPTIONS,
    {"wait", no_argument, NULL, OPT_WAIT},
    {0},
};
static const struct option list_options[] = {
    COMMON_OPTIONS,
    {"state", required_argument, NULL, OPT_STATE},
    {"handler", required_argument, NULL, OPT_HANDLER},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {0},
};

static const struct command {
    const char *name;
    int (*run)(ctl *c, const cmd_opts *o, const char *operand);
    const struct option *options;
    const char *operand; /* what the one operand is, or NULL for none */
} commands[] = {
    {"submit", cmd_submit, submit_options, "a handler name"},
    {"status", cmd_status, subtasks_options, "a task id"},
    {"watch", cmd_watch, subtasks_options, "a task id"},
    {"cancel", cmd_cancel, plain_options, "a task id"},
    {"retry", cmd_retry, retry_options, "a task id"},
    {"list", cmd_list, list_options, NULL},
    {"hosts", cmd_hosts, plain_options, NULL},
    {"stats", cmd_stats, plain_options, NULL},
};

/* Apply one parsed option: EX_OK, -1 when the run is over (--help, --version), or EX_USAGE. */
static int apply_option(ctl *c, cmd_opts *o, int opt, char *const argv[])
{
    switch (opt) {
    case OPT_REDIS: c->cli_url = optarg; break;
    case 'c': c->conf_path = optarg; break;
    case OPT_PREFIX: c->prefix = optarg; break;
    case OPT_JSON: c->json = true; break;
    case 'h': fputs(usage_long, stdout); return -1;
    case OPT_VERSION:
        printf("bgtaskctl %s (redis protocol %d)\n", BGT_VERSION, STORE_PROTOCOL_VERSION);
        return -1;
    case OPT_ARGS: o->args = optarg; break;
    case OPT_ARGS_FILE: o->args_file = optarg; break;
    case OPT_SUBTASKS_FILE: o->subtasks_file = optarg; break;
    case OPT_ID: o->id = optarg; break;
    case OPT_WAIT: o->wait = true; break;
    case OPT_SUBTASKS: o->subtasks = true; break;
    case OPT_STATE: o->state = optarg; break;
    case OPT_HANDLER: o->handler = optarg; break;
    case OPT_DELAY:
        if (!parse_double(optarg, 0, 31536000, &o->delay))
            return usage_error("--delay needs seconds 0..31536000, got '%s'", optarg);
        break;
    case OPT_MAX_ATTEMPTS:
        if (!parse_long(optarg, 1, 1000, &o->max_attempts))
            return usage_error("--max-attempts needs a number 1..1000, got '%s'", optarg);
        break;
    case OPT_LIMIT:
        if (!parse_long(optarg, 1, 100000, &o->limit))
            return usage_error("--limit needs a number 1..100000, got '%s'", optarg);
        break;
    case OPT_PARALLELISM:
        if (!parse_long(optarg, 1, 1024, &o->parallelism))
            return usage_error("--parallelism needs a number 1..1024, got '%s'", optarg);
        break;
    case OPT_ON_FAILURE:
        if (strcmp(optarg, "continue") != 0 && strcmp(optarg, "fail_fast") != 0)
            return usage_error("--on-failure must be continue or fail_fast, got '%s'", optarg);
        o->on_failure = optarg;
        break;
    case ':': return usage_error("option %s needs an argument", argv[optind - 1]);
    default:
        if (optopt > 0 && optopt < 256)
            return usage_error("unknown option -%c", optopt);
        return usage_error("unknown option %s", argv[optind - 1]);
    }
    return EX_OK;
}

/* Parse options until the first operand (global) or all of them (a command's). */
static int parse_options(ctl *c, cmd_opts *o, int argc, char **argv, const char *shortopts,
                         const struct option *options)
{
    int opt, rc;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, shortopts, options, NULL)) != -1)
        if ((rc = apply_option(c, o, opt, argv)) != EX_OK)
            return rc;
    return EX_OK;
}

static int run(ctl *c, int argc, char **argv)
{
    cmd_opts o = {.limit = 20};
    int code = parse_options(c, &o, argc, argv, "+:c:h", global_options);
    if (code != EX_OK)
        return code;
    if (optind >= argc)
        return usage_error("no command given");
    const struct command *cmd = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[optind], commands[i].name) == 0)
            cmd = &commands[i];
    if (!cmd)
        return usage_error("unknown command '%s'", argv[optind]);
    argc -= optind;
    argv += optind;
    optind = 0; /* glibc: start over on the command's own arguments */
    if ((code = parse_options(c, &o, argc, argv, ":c:h", cmd->options)) != EX_OK)
        return code;
    const char *operand = optind < argc ? argv[optind] : NULL;
    if (cmd->operand && argc - optind != 1)
        return usage_error("%s needs %s", cmd->name, cmd->operand);
    if (!cmd->operand && operand)
        return usage_error("%s takes no operands, got '%s'", cmd->name, operand);
    if ((code = ctl_setup(c)) != EX_OK)
        return code;
    /* A malformed id cannot name a task; submit checks its input before connecting. */
    if (cmd->run != cmd_submit) {
        if (operand && !id_valid(operand)) {
            fprintf(stderr, "bgtaskctl: task %s not found (not a task id)\n", operand);
            return EX_NOTFOUND;
        }
        if ((code = ctl_open(c, &c->st)) != EX_OK)
            return code;
    }
    return cmd->run(c, &o, operand);
}

int main(int argc, char **argv)
{
    ctl c = {0};
    config_defaults(&c.cfg);
    int code = run(&c, argc, argv);
    store_free(c.st);
    redis_addr_free(&c.addr);
    config_free(&c.cfg);
    return code < 0 ? EX_OK : code;
}

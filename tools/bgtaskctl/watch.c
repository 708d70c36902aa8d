/* watch.c - bgtaskctl watch: follow a task until it ends, as a progress bar on a terminal,
 * else plain lines; and bgtaskctl events: every task's events as they come. */
#include "ctl.h"

/* How long watch waits for an event before it re-reads the record. */
#define WATCH_QUIET_S 2.0
/* How often watch says again that no live host serves the task's handler, while it waits. */
#define WATCH_UNSERVED_S 10.0
/* How long watch goes on trying to reach Redis again before it gives up. */
#define WATCH_RECONNECT_S 30.0
#define BAR_WIDTH 20
/* The most running subtasks watch --subtasks draws under the bar on a terminal. */
#define SUB_LINES_MAX 20

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
    double unserved_at; /* mono_s of the last look for a host that serves the handler */
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
    cJSON_ArrayForEach (r, run) {
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
        cJSON_ArrayForEach (e, cJSON_GetObjectItemCaseSensitive(data, "errors")) {
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
        cJSON_ArrayForEach (e, errors) {
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

bool ctl_served(ctl *c, const char *handler)
{
    cJSON *hosts = NULL;
    if (store_list_hosts(c->st, &hosts) < 0)
        return true; /* a warning, not the command's business: no answer, no warning */
    bool served = view_served(hosts, handler);
    cJSON_Delete(hosts);
    return served;
}

void warn_unserved(const char *handler)
{
    char *w = view_unserved_warning(handler);
    fprintf(stderr, "bgtaskctl: warning: %s\n", w);
    free(w);
}

/* While an unfinished task waits, say (again) when no live host serves its handler: at most
 * once per WATCH_UNSERVED_S, the bar redrawn under the warning. */
static void view_unserved(watch_view *v, ctl *c, const cJSON *rec)
{
    if (strcmp(jstr(rec, "state"), "ONGOING") != 0 || mono_s() - v->unserved_at < WATCH_UNSERVED_S)
        return;
    v->unserved_at = mono_s();
    if (ctl_served(c, jstr(rec, "handler")))
        return;
    bool bar = v->drawn && v->tty && !v->json;
    if (bar) {
        printf("\r\033[K");
        fflush(stdout);
    }
    warn_unserved(jstr(rec, "handler"));
    if (bar)
        view_draw(v);
}

/* A new store subscribed to task id's events, in *sub; EX_OK, or the exit code after saying
 * why not. */
int watch_open(ctl *c, const char *id, store **sub)
{
    int code = ctl_open(c, sub);
    if (code != EX_OK)
        return code;
    int rc = store_subscribe_task(*sub, id);
    if (rc < 0) {
        code = store_fail(c, *sub, rc, id);
        store_free(*sub);
        *sub = NULL;
    }
    return code;
}

/*
 * Follow task id on sub (subscribed to it before anything below was read)
 * until its terminal event; takes sub. With record_first, show the record's
 * state first: what happened before the subscription is only there. Without,
 * the subscription came before the task's own events began (submit --wait,
 * retry --wait), and they are all shown as they come. Whenever no event came
 * for WATCH_QUIET_S, re-read the record, which catches a terminal state
 * reached while the connection was being made again. While the task is
 * unfinished and no live host serves its handler, say so (again) every
 * WATCH_UNSERVED_S; unserved_at is when it was said last (0: never).
 */
static int follow(ctl *c, store *sub, const char *id, bool subtasks, bool record_first,
                  double unserved_at)
{
    watch_view v = {.tty = isatty(STDOUT_FILENO),
                    .json = c->json,
                    .subtasks = subtasks,
                    .unserved_at = unserved_at};
    cJSON *rec = NULL;
    int code = -1;
    if (record_first) {
        int rc = store_get_task(c->st, id, &rec);
        if (rc < 0) {
            code = store_fail(c, c->st, rc, id);
            goto out;
        }
    }
    if (v.tty && !v.json)
        signal(SIGINT, on_sigint);
    if (rec)
        code = view_record(&v, rec, false);
    if (rec && code < 0)
        view_unserved(&v, c, rec);
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
        int rc = store_get_task(c->st, id, &rec);
        if (rc == -ENOENT) {
            code = store_fail(c, c->st, rc, id);
            break;
        }
        if (rc == 0)
            code = view_record(&v, rec, true);
        if (rc == 0 && code < 0)
            view_unserved(&v, c, rec);
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

int watch_follow(ctl *c, store *sub, const char *id, bool subtasks, double unserved_at)
{
    return follow(c, sub, id, subtasks, false, unserved_at);
}

/* Subscribe first, then read the record, so that nothing after the read can be missed. */
int watch_task(ctl *c, const char *id, bool subtasks)
{
    store *sub = NULL;
    int code = watch_open(c, id, &sub);
    return code == EX_OK ? follow(c, sub, id, subtasks, true, 0) : code;
}

/* ---- events ---- */

/*
 * Every task's events (of --handler only, if given) as they come, until the
 * command is interrupted: one line each, "HH:MM:SS <event> <task id>
 * <handler> <current>/<total> <message>", or with --json {"id", "event",
 * "data"} (id: its place in the event stream), as GET /v1/events streams
 * them. Events of the time it cannot reach Redis are not shown; it gives up
 * after WATCH_RECONNECT_S of that.
 */
int cmd_events(ctl *c, const cmd_opts *o, const char *unused)
{
    if (o->handler && !name_valid(o->handler))
        return usage_error("bad handler name '%s'", o->handler);
    store *sub = NULL;
    int code = ctl_open(c, &sub);
    if (code != EX_OK)
        return code;
    int rc = store_subscribe_all(sub);
    double lost_since = 0;
    while (rc == 0 || rc == -ETIMEDOUT || rc == -EIO) {
        char *name = NULL, *sid = NULL;
        cJSON *data = NULL;
        rc = store_next_event_ex(sub, WATCH_QUIET_S, &name, &data, &sid);
        if (rc == -EIO) {
            if (!lost_since)
                lost_since = mono_s();
            else if (mono_s() - lost_since > WATCH_RECONNECT_S)
                break;
            sleep_s(0.2); /* the store reconnects and subscribes again, with backoff */
            continue;
        }
        lost_since = 0;
        if (rc < 0)
            continue;
        if (!o->handler || strcmp(jstr(data, "handler"), o->handler) == 0) {
            if (c->json) {
                cJSON *line = cJSON_CreateObject();
                cJSON_AddStringToObject(line, "id", sid ? sid : "");
                cJSON_AddStringToObject(line, "event", name);
                cJSON_AddItemToObject(line, "data", data);
                data = NULL;
                print_json(line, true);
                cJSON_Delete(line);
            } else {
                char ts[32], a[32], b[32], msg[1024];
                time_t t = time(NULL);
                struct tm tm;
                localtime_r(&t, &tm);
                strftime(ts, sizeof ts, "%H:%M:%S", &tm);
                printf("%s %s %s %s %s/%s %s\n", ts, name, jstr(data, "task_id"),
                       jstr(data, "handler"), fmt_num(jnum(data, "current_progress"), a, sizeof a),
                       fmt_num(jnum(data, "total_progress"), b, sizeof b),
                       clean(jstr(data, "message"), 1000, msg, sizeof msg));
                fflush(stdout);
            }
        }
        free(name);
        free(sid);
        cJSON_Delete(data);
    }
    fprintf(stderr, "bgtaskctl: lost the connection to redis at %s: %s\n", c->url_shown,
            store_errstr(sub));
    store_free(sub);
    return EX_USAGE;
}

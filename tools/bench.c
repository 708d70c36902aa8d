/*
 * bench.c - throughput, latency and Redis cost of one bgtaskd running no-op tasks.
 *
 * It starts its own bgtaskd (build/bin/bgtaskd next to this binary, with the bench
 * plugin from build/plugins) against the Redis given with --redis, which should be a
 * private server: `make bench` (tools/run-bench) starts one. Each mode uses its own key
 * prefix and its own host, so the modes do not see each other's tasks:
 *
 *   drain    N tasks are submitted in batches while no host runs (the submit rate),
 *            then a host is started and timed until all N are finished.
 *   mixed    a host is running; N tasks are submitted in batches while it consumes
 *            them; timed from the first submit to the last finished.
 *   latency  a host is running and idle; one bench.noop at a time, submit to the
 *            arrival of its terminal event on a pub/sub subscription.
 *   parallel a host is running and idle; one bench.parallel task of N no-op subtasks,
 *            timed from its submit to the arrival of its terminal event.
 *
 * The Redis cost of drain, mixed and parallel comes from INFO commandstats and INFO cpu
 * taken before and after. It talks to Redis only through the store (host/store.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "events.h"
#include "store.h"
#include "util.h"

/* How often the finished count is read while waiting for a run to end. */
#define POLL_S 0.002
/* A run whose finished count does not move for this long has stalled. */
#define STALL_S 10.0
/* How long a host may take to show up in P:hosts, and to exit after SIGTERM. */
#define HOST_START_S 10.0
#define HOST_STOP_S 15.0
/* How long one latency sample may take. */
#define SAMPLE_S 5.0
/* How often the parallel mode looks at its host while it waits for the task's end. */
#define PARALLEL_CHECK_S 0.5

enum {
    MODE_DRAIN = 1,
    MODE_MIXED = 2,
    MODE_LATENCY = 4,
    MODE_PARALLEL = 8,
    MODE_AOF = 16,
    MODE_ALL = 31
};

static const char usage_text[] =
    "usage: bench --redis URL [options]\n"
    "\n"
    "Measures one bgtaskd running bench.noop tasks, and one bench.parallel task, against\n"
    "the Redis at URL (use a private server: `make bench` starts one). Prints a table and\n"
    "one JSON line.\n"
    "\n"
    "  --redis URL      the Redis to use (default: $BGTASK_REDIS, else " STORE_DEFAULT_URL ")\n"
    "  --mode M         drain, mixed, latency, parallel, aof or all (default all)\n"
    "  --tasks N        tasks per throughput mode (default 100000)\n"
    "  --samples M      latency samples (default 2000)\n"
    "  --subtasks N     subtasks of the parallel mode's task (default 10000, at most 1000000)\n"
    "  --aof-tasks N    tasks of the aof mode's drain (default 20000); the aof mode measures\n"
    "                   AOF bytes per task with automatic AOF rewrites off, and is skipped\n"
    "                   when the server keeps no AOF\n"
    "  --workers W      the host's worker threads (default 64: a host claims as many tasks\n"
    "                   per call as it has free workers, and for no-op tasks larger claims\n"
    "                   are what lowers the Redis cost per task)\n"
    "  --batch B        tasks per submit call (default 1000)\n"
    "  --timeout S      the longest any one run may take (default 300)\n"
    "  --keep-logs      keep the host's config and log files under build/bench/\n"
    "  -h, --help       this text\n"
    "\n"
    "Exit status: 0 when every mode ran to its end, 1 when one failed or ran out of time\n"
    "(what was measured until then is printed), 2 on a usage error.\n";

/* The bench's settings and what it measured. */
typedef struct bench {
    const char *url;
    redis_addr addr;
    int modes;
    long tasks;
    long samples;
    long subtasks;
    long aof_tasks;
    int workers;
    int batch;
    double timeout_s;
    bool keep_logs;
    char bgtaskd[PATH_MAX]; /* the host binary */
    char plugins[PATH_MAX]; /* the plugins dir */
    char outdir[PATH_MAX];  /* config and log files */
    cJSON *json;            /* the figures, printed as one line at the end */
} bench;

/* One bgtaskd started by the bench. */
typedef struct host_proc {
    pid_t pid;       /* 0 when not running */
    char id[64];     /* its host id */
    char prefix[64]; /* its key prefix */
    char conf[PATH_MAX + 32];
    char log[PATH_MAX + 32];
    struct rusage usage; /* its CPU use, filled when it is reaped */
    bool reaped;
} host_proc;

/* Set by SIGINT/SIGTERM: every wait ends as if its deadline had come. */
static volatile sig_atomic_t interrupted;

static void on_signal(int sig) { interrupted = sig; }

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ---- the host process ---- */

/* Fill b's paths from the folder of this binary: bin/bgtaskd, plugins/, bench/. */
static int find_paths(bench *b)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) {
        say("bench: cannot find its own path: %s", strerror(errno));
        return -errno;
    }
    exe[n] = '\0';
    char *bin = dirname(exe);
    snprintf(b->bgtaskd, sizeof b->bgtaskd, "%s/bgtaskd", bin);
    snprintf(b->plugins, sizeof b->plugins, "%s/../plugins", bin);
    snprintf(b->outdir, sizeof b->outdir, "%s/../bench", bin);
    if (access(b->bgtaskd, X_OK) < 0) {
        say("bench: %s: %s (run make)", b->bgtaskd, strerror(errno));
        return -ENOENT;
    }
    char so[PATH_MAX + 16];
    snprintf(so, sizeof so, "%s/bench.so", b->plugins);
    if (access(so, R_OK) < 0) {
        say("bench: %s: %s (run make)", so, strerror(errno));
        return -ENOENT;
    }
    if (mkdir(b->outdir, 0755) < 0 && errno != EEXIST) {
        say("bench: %s: %s", b->outdir, strerror(errno));
        return -errno;
    }
    char real[PATH_MAX];
    if (realpath(b->outdir, real))
        strlcpy_(b->outdir, real, sizeof b->outdir);
    return 0;
}

/*
 * Write the host's config file: its prefix, id, workers, and the bench plugin alone.
 * tasks.max_subtasks (default 10000) is raised or lowered to --subtasks, so that the
 * parallel mode's split is not refused; the other modes have no subtasks.
 */
static int host_write_config(const bench *b, host_proc *h, const char *mode)
{
    snprintf(h->id, sizeof h->id, "bench-%d-%s", (int)getpid(), mode);
    snprintf(h->prefix, sizeof h->prefix, "bgbench:%d:%s", (int)getpid(), mode);
    snprintf(h->conf, sizeof h->conf, "%s/bgtaskd-%s.conf", b->outdir, mode);
    snprintf(h->log, sizeof h->log, "%s/bgtaskd-%s.log", b->outdir, mode);
    FILE *f = fopen(h->conf, "w");
    if (!f) {
        say("bench: %s: %s", h->conf, strerror(errno));
        return -errno;
    }
    fprintf(f,
            "# Written by build/bin/bench for its %s run.\n"
            "redis: { prefix = \"%s\"; };\n"
            "host: { id = \"%s\"; workers = %d; log_level = \"warning\"; shutdown_grace = 5.0; };\n"
            "tasks: { max_subtasks = %ld; };\n"
            "plugins: { dir = \"%s\"; load = ( { name = \"bench\"; } ); };\n",
            mode, h->prefix, h->id, b->workers, b->subtasks, b->plugins);
    if (fclose(f) != 0) {
        say("bench: %s: %s", h->conf, strerror(errno));
        return -EIO;
    }
    return 0;
}

/*
 * Start bgtaskd -c <conf> with stdout and stderr in the log file. The Redis address goes
 * in $BGTASK_REDIS (which overrides the config file), not on the command line, where ps
 * would show a password in it.
 */
static int host_start(const bench *b, host_proc *h)
{
    int fd = open(h->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        say("bench: %s: %s", h->log, strerror(errno));
        return -errno;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        say("bench: fork: %s", strerror(errno));
        close(fd);
        return -errno;
    }
    if (pid == 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        setenv("BGTASK_REDIS", b->url, 1);
        execl(b->bgtaskd, b->bgtaskd, "-c", h->conf, (char *)NULL);
        dprintf(STDERR_FILENO, "bench: exec %s: %s\n", b->bgtaskd, strerror(errno));
        _exit(127);
    }
    close(fd);
    h->pid = pid;
    h->reaped = false;
    return 0;
}

/* Print the end of the host's log (after it failed). */
static void host_log_tail(const host_proc *h)
{
    FILE *f = fopen(h->log, "r");
    if (!f)
        return;
    char line[512];
    char *last[20] = {0};
    size_t n = 0;
    while (fgets(line, sizeof line, f)) {
        free(last[n % 20]);
        last[n++ % 20] = xstrdup(line);
    }
    fclose(f);
    say("bench: the end of %s:", h->log);
    for (size_t i = n > 20 ? n - 20 : 0; i < n; i++) {
        fprintf(stderr, "  %s", last[i % 20]);
        free(last[i % 20]);
    }
}

/* True if the host is still running; reaps it (and says so) when it is not. */
static bool host_alive(host_proc *h)
{
    if (!h->pid || h->reaped)
        return false;
    int status;
    pid_t r = wait4(h->pid, &status, WNOHANG, &h->usage);
    if (r == 0)
        return true;
    h->reaped = true;
    if (r == h->pid) {
        if (WIFEXITED(status))
            say("bench: bgtaskd (pid %d) exited with status %d", (int)h->pid, WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
            say("bench: bgtaskd (pid %d) was killed by signal %d", (int)h->pid, WTERMSIG(status));
        host_log_tail(h);
    }
    return false;
}

/* Wait until the host is in P:hosts. 0, -ETIMEDOUT, -ECHILD (it exited) or -EINTR. */
static int host_wait_registered(store *st, host_proc *h)
{
    double end = mono_s() + HOST_START_S;
    while (!interrupted) {
        if (!host_alive(h))
            return -ECHILD;
        cJSON *hosts = NULL;
        if (store_list_hosts(st, &hosts) == 0) {
            const cJSON *o;
            bool found = false;
            cJSON_ArrayForEach (o, hosts) {
                const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
                found |= cJSON_IsString(id) && strcmp(id->valuestring, h->id) == 0;
            }
            cJSON_Delete(hosts);
            if (found)
                return 0;
        }
        if (mono_s() > end) {
            say("bench: bgtaskd (pid %d) did not show up in the host list within %.0fs",
                (int)h->pid, HOST_START_S);
            host_log_tail(h);
            return -ETIMEDOUT;
        }
        sleep_s(0.005);
    }
    return -EINTR;
}

/*
 * Stop the host: SIGTERM, then wait for it (it drains, leaves P:hosts and exits). If it
 * is still there after HOST_STOP_S it gets SIGKILL. Only ever signals h->pid.
 */
static int host_stop(host_proc *h)
{
    if (!h->pid || h->reaped)
        return 0;
    kill(h->pid, SIGTERM);
    double end = mono_s() + HOST_STOP_S;
    int status = 0;
    for (;;) {
        pid_t r = wait4(h->pid, &status, WNOHANG, &h->usage);
        if (r == h->pid || (r < 0 && errno == ECHILD))
            break;
        if (mono_s() > end) {
            say("bench: bgtaskd (pid %d) did not exit within %.0fs of SIGTERM: killing it",
                (int)h->pid, HOST_STOP_S);
            kill(h->pid, SIGKILL);
            wait4(h->pid, &status, 0, &h->usage);
            h->reaped = true;
            return -ETIMEDOUT;
        }
        sleep_s(0.01);
    }
    h->reaped = true;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        say("bench: bgtaskd (pid %d) ended with status 0x%x after SIGTERM", (int)h->pid, status);
        host_log_tail(h);
        return -EIO;
    }
    return 0;
}

/* Stop the host and remove its files (unless they are wanted, or it failed). */
static void host_finish(const bench *b, host_proc *h, bool ok)
{
    if (!h->pid) {
        unlink(h->conf); /* never started: nothing to look at */
        return;
    }
    if (host_stop(h) < 0)
        ok = false;
    if (b->keep_logs || !ok) {
        say("bench: kept %s and %s", h->conf, h->log);
        return;
    }
    unlink(h->conf);
    unlink(h->log);
}

/* CPU seconds (user + system) of a rusage. */
static double cpu_s(const struct rusage *u)
{
    return (double)u->ru_utime.tv_sec + (double)u->ru_utime.tv_usec / 1e6 +
           (double)u->ru_stime.tv_sec + (double)u->ru_stime.tv_usec / 1e6;
}

/* ---- Redis' own accounting ---- */

typedef struct cmdstat {
    char name[48];
    long long calls;
    long long usec;
} cmdstat;

/* INFO commandstats and INFO cpu at one moment. */
typedef struct snapshot {
    cmdstat *cmds;
    size_t n;
    double cpu_s;    /* used_cpu_user + used_cpu_sys */
    long long forks; /* background saves and AOF rewrites so far */
    long long aof;   /* aof_current_size, -1 when AOF is off */
    long long mem;   /* used_memory */
} snapshot;

static void snapshot_free(snapshot *s)
{
    free(s->cmds);
    memset(s, 0, sizeof *s);
}

static int snapshot_take(store *st, snapshot *s)
{
    memset(s, 0, sizeof *s);
    char *text = NULL;
    int rc = store_info(st, "commandstats", &text);
    if (rc < 0) {
        say("bench: INFO commandstats: %s", store_errstr(st));
        return rc;
    }
    size_t cap = 0;
    for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
        char name[48];
        long long calls, usec;
        if (sscanf(line, "cmdstat_%47[^:]:calls=%lld,usec=%lld", name, &calls, &usec) != 3)
            continue;
        if (s->n == cap) {
            cap = cap ? cap * 2 : 64;
            s->cmds = xrealloc(s->cmds, cap * sizeof *s->cmds);
        }
        cmdstat *c = &s->cmds[s->n++];
        strlcpy_(c->name, name, sizeof c->name);
        c->calls = calls;
        c->usec = usec;
    }
    free(text);
    if ((rc = store_info(st, "cpu", &text)) < 0) {
        say("bench: INFO cpu: %s", store_errstr(st));
        snapshot_free(s);
        return rc;
    }
    double user = 0, sys = 0;
    for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
        sscanf(line, "used_cpu_user:%lf", &user);
        sscanf(line, "used_cpu_sys:%lf", &sys);
    }
    free(text);
    s->cpu_s = user + sys;
    /* A background save or AOF rewrite forks a child that competes for the CPUs (and is
     * not in used_cpu_*): the figures of a run with one are not comparable to one without. */
    if ((rc = store_info(st, "persistence", &text)) < 0) {
        say("bench: INFO persistence: %s", store_errstr(st));
        snapshot_free(s);
        return rc;
    }
    long long rewrites = 0, saves = 0;
    int aof_on = 0;
    s->aof = -1;
    for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
        sscanf(line, "aof_rewrites:%lld", &rewrites);
        sscanf(line, "rdb_saves:%lld", &saves);
        sscanf(line, "aof_enabled:%d", &aof_on);
        sscanf(line, "aof_current_size:%lld", &s->aof);
    }
    free(text);
    s->forks = rewrites + saves;
    if (!aof_on)
        s->aof = -1;
    if ((rc = store_info(st, "memory", &text)) < 0) {
        say("bench: INFO memory: %s", store_errstr(st));
        snapshot_free(s);
        return rc;
    }
    for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n"))
        sscanf(line, "used_memory:%lld", &s->mem);
    free(text);
    return 0;
}

static const cmdstat *snapshot_find(const snapshot *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->cmds[i].name, name) == 0)
            return &s->cmds[i];
    return NULL;
}

/* Whether name is one of the NULL-terminated names. */
static bool one_of(const char *name, const char *const *names)
{
    for (int i = 0; names[i]; i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

/* Commands that run scripts: their usec include the commands the script calls. */
static bool is_script_cmd(const char *name)
{
    static const char *const names[] = {"eval",  "evalsha",  "eval_ro", "evalsha_ro",
                                        "fcall", "fcall_ro", NULL};
    return one_of(name, names);
}

/*
 * Commands the store sends on their own, never from a script: blocking reads, the DEL
 * that takes wake tokens, connection and setup commands. commandstats also counts
 * every command a script calls, under that command's name; whatever is neither a
 * script call nor listed here is taken to have run inside a script.
 */
static bool is_plain_cmd(const char *name)
{
    static const char *const names[] = {"blpop",         "brpop",          "blmove",
                                        "brpoplpush",    "bzpopmin",       "bzpopmax",
                                        "del",           "unlink",         "ping",
                                        "auth",          "select",         "hello",
                                        "subscribe",     "psubscribe",     "unsubscribe",
                                        "punsubscribe",  "config|get",     "script|load",
                                        "script|exists", "client|setname", NULL};
    return one_of(name, names);
}

/* The bench's own probes (the finished count, INFO): left out of the cost. */
static bool is_probe_cmd(const char *name)
{
    return strcmp(name, "info") == 0 || strcmp(name, "zcard") == 0;
}

/* Redis' cost of a run, per task (per subtask in the parallel mode). */
typedef struct cost {
    double calls;        /* every command, those inside scripts included */
    double toplevel;     /* script calls + plain commands: what clients sent */
    double script_calls; /* EVALSHA & co */
    double usec;         /* commandstats usec of the top-level commands */
    double cpu_usec;     /* INFO cpu: the server process' CPU time */
    long long forks;     /* background saves and AOF rewrites during the run */
    double aof_bytes;    /* AOF growth; -1 when AOF is off or a rewrite ran (it shrinks the file) */
    double mem_bytes;    /* used_memory growth */
} cost;

/*
 * The cost per unit (a task, or a subtask: `unit` names it) between two snapshots, over
 * `units` of them; prints the per-command breakdown.
 */
static cost snapshot_cost(const snapshot *a, const snapshot *z, long units, const char *unit,
                          const char *title)
{
    cost c = {0};
    double n = units > 0 ? (double)units : 1;
    char calls_h[32], usec_h[32];
    snprintf(calls_h, sizeof calls_h, "calls/%s", unit);
    snprintf(usec_h, sizeof usec_h, "usec/%s", unit);
    int w = (int)strlen(calls_h) > 10 ? (int)strlen(calls_h) : 10;
    printf("  %s: Redis commands per %s (commandstats; * = top level)\n", title, unit);
    printf("    %-22s %*s %*s\n", "command", w, calls_h, w, usec_h);
    for (size_t i = 0; i < z->n; i++) {
        const cmdstat *e = &z->cmds[i];
        const cmdstat *s = snapshot_find(a, e->name);
        long long calls = e->calls - (s ? s->calls : 0);
        long long usec = e->usec - (s ? s->usec : 0);
        if (calls <= 0 || is_probe_cmd(e->name))
            continue;
        bool script = is_script_cmd(e->name), top = script || is_plain_cmd(e->name);
        c.calls += (double)calls;
        if (top) {
            c.toplevel += (double)calls;
            c.usec += (double)usec;
        }
        if (script)
            c.script_calls += (double)calls;
        printf("    %-22s %*.3f %*.3f%s\n", e->name, w, (double)calls / n, w, (double)usec / n,
               top ? " *" : "");
    }
    c.calls /= n;
    c.toplevel /= n;
    c.script_calls /= n;
    c.usec /= n;
    c.cpu_usec = (z->cpu_s - a->cpu_s) * 1e6 / n;
    c.forks = z->forks - a->forks;
    c.aof_bytes = a->aof >= 0 && z->aof >= 0 && c.forks == 0 ? (double)(z->aof - a->aof) / n : -1;
    c.mem_bytes = (double)(z->mem - a->mem) / n;
    return c;
}

static void cost_print(const cost *c, const char *unit)
{
    printf("    all commands %.2f/%s (top level %.2f, of which script calls %.3f)\n", c->calls,
           unit, c->toplevel, c->script_calls);
    printf("    command time %.2f us/%s, Redis CPU (INFO cpu) %.2f us/%s\n", c->usec, unit,
           c->cpu_usec, unit);
    if (c->aof_bytes >= 0)
        printf("    AOF %.0f bytes/%s\n", c->aof_bytes, unit);
    printf("    Redis memory %+.0f bytes/%s (used_memory)\n", c->mem_bytes, unit);
    if (c->forks)
        printf("    %lld background AOF rewrite(s) or save(s) ran meanwhile: a forked child "
               "shared the CPUs\n",
               c->forks);
}

/* Add the cost to j as <pre>redis_..._per_<unit>. */
static void cost_json(cJSON *j, const char *pre, const char *unit, const cost *c)
{
    char key[96];
    snprintf(key, sizeof key, "%sredis_cmds_per_%s", pre, unit);
    cJSON_AddNumberToObject(j, key, round(c->calls * 100) / 100);
    snprintf(key, sizeof key, "%sredis_toplevel_per_%s", pre, unit);
    cJSON_AddNumberToObject(j, key, round(c->toplevel * 1000) / 1000);
    snprintf(key, sizeof key, "%sredis_script_calls_per_%s", pre, unit);
    cJSON_AddNumberToObject(j, key, round(c->script_calls * 1000) / 1000);
    snprintf(key, sizeof key, "%sredis_usec_per_%s", pre, unit);
    cJSON_AddNumberToObject(j, key, round(c->usec * 100) / 100);
    snprintf(key, sizeof key, "%sredis_cpu_usec_per_%s", pre, unit);
    cJSON_AddNumberToObject(j, key, round(c->cpu_usec * 100) / 100);
    snprintf(key, sizeof key, "%sredis_forks", pre);
    cJSON_AddNumberToObject(j, key, (double)c->forks);
    if (c->aof_bytes >= 0) {
        snprintf(key, sizeof key, "%saof_bytes_per_%s", pre, unit);
        cJSON_AddNumberToObject(j, key, round(c->aof_bytes));
    }
    snprintf(key, sizeof key, "%smem_bytes_per_%s", pre, unit);
    cJSON_AddNumberToObject(j, key, round(c->mem_bytes));
}

/* ---- submitting and waiting ---- */

/* Submit n bench.noop tasks in batches of b->batch, within --timeout. Returns 0 or the
 * first error. */
static int submit_noops(const bench *b, store *st, long n)
{
    submit_req *reqs = xcalloc((size_t)b->batch, sizeof *reqs);
    int rc = 0;
    double end = mono_s() + b->timeout_s;
    for (long done = 0; done < n && !interrupted;) {
        if (mono_s() > end) {
            say("bench: %ld of %ld tasks submitted within %.0fs (--timeout)", done, n,
                b->timeout_s);
            rc = -ETIMEDOUT;
            break;
        }
        size_t k = (size_t)(n - done < b->batch ? n - done : b->batch);
        for (size_t i = 0; i < k; i++)
            reqs[i] = (submit_req){.handler = "bench.noop"};
        if ((rc = store_submit(st, reqs, k)) < 0) {
            say("bench: submit: %s", store_errstr(st));
            break;
        }
        for (size_t i = 0; i < k; i++)
            if (reqs[i].rc < 0) {
                say("bench: submit: %s", reqs[i].err);
                rc = reqs[i].rc;
                goto out;
            }
        done += (long)k;
    }
out:
    free(reqs);
    return rc < 0 ? rc : interrupted ? -EINTR : 0;
}

/*
 * Wait until the finished count reaches n, polling every POLL_S. *t_first gets the time
 * the first finished task was seen, *t_done the time all were, *got the last count.
 * -ETIMEDOUT when the run (which began at start) has taken --timeout, or when nothing
 * finished for STALL_S; -ECHILD when the host exits, -EINTR on a signal.
 */
static int wait_finished(const bench *b, store *st, host_proc *h, long n, double start,
                         double *t_first, double *t_done, long long *got)
{
    double moved = mono_s();
    long long last = -1;
    *t_first = 0;
    *got = 0;
    for (;;) {
        long long c;
        int rc = store_count_finished(st, &c);
        double now = mono_s();
        if (rc < 0) {
            say("bench: reading the finished count: %s", store_errstr(st));
            return rc;
        }
        *got = c;
        if (c > 0 && *t_first == 0)
            *t_first = now;
        if (c >= n) {
            *t_done = now;
            return 0;
        }
        if (c != last) {
            last = c;
            moved = now;
        }
        if (interrupted)
            return -EINTR;
        if (!host_alive(h))
            return -ECHILD;
        if (now - moved > STALL_S || now - start > b->timeout_s) {
            say("bench: %lld of %ld tasks finished after %.1fs; %s", c, n, now - start,
                now - moved > STALL_S ? "nothing finished for 10s" : "out of time (--timeout)");
            return -ETIMEDOUT;
        }
        sleep_s(POLL_S);
    }
}

/* A fresh connection for the bench's own calls. */
static store *open_store(const bench *b, const char *prefix)
{
    bgt_config cfg;
    config_defaults(&cfg);
    free(cfg.prefix);
    cfg.prefix = xstrdup(prefix);
    store *st = store_open(&cfg, &b->addr);
    config_free(&cfg);
    if (store_connect(st) < 0) {
        say("bench: %s", store_errstr(st));
        store_free(st);
        return NULL;
    }
    return st;
}

static double self_cpu_s(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return cpu_s(&u);
}

/*
 * Wait (up to HOST_STOP_S) until Redis runs no background AOF rewrite or save: one left
 * over from an earlier run would share the CPUs with the next.
 */
static int wait_redis_quiet(store *st)
{
    double end = mono_s() + HOST_STOP_S;
    for (;;) {
        char *text = NULL;
        int rc = store_info(st, "persistence", &text);
        if (rc < 0) {
            say("bench: INFO persistence: %s", store_errstr(st));
            return rc;
        }
        int aof = 0, rdb = 0;
        for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
            sscanf(line, "aof_rewrite_in_progress:%d", &aof);
            sscanf(line, "rdb_bgsave_in_progress:%d", &rdb);
        }
        free(text);
        if (!aof && !rdb)
            return 0;
        if (interrupted)
            return -EINTR;
        if (mono_s() > end) {
            say("bench: redis still runs a background save or AOF rewrite after %.0fs",
                HOST_STOP_S);
            return -ETIMEDOUT;
        }
        sleep_s(0.05);
    }
}

/* ---- the modes ---- */

/* drain: submit everything with no host running, then start one and time it. */
static int run_drain(bench *b)
{
    host_proc h = {0};
    snapshot s0 = {0}, s1 = {0}, s2 = {0};
    int rc = host_write_config(b, &h, "drain");
    if (rc < 0)
        return rc;
    store *st = open_store(b, h.prefix);
    if (!st) {
        host_finish(b, &h, false);
        return -EIO;
    }
    printf("drain: %ld tasks submitted in batches of %d, then one host with %d workers\n", b->tasks,
           b->batch, b->workers);
    if ((rc = wait_redis_quiet(st)) < 0 || (rc = snapshot_take(st, &s0)) < 0)
        goto out;
    double t0 = mono_s(), cpu0 = self_cpu_s();
    if ((rc = submit_noops(b, st, b->tasks)) < 0)
        goto out;
    double t1 = mono_s(), cpu1 = self_cpu_s();
    if ((rc = snapshot_take(st, &s1)) < 0)
        goto out;
    double submit_rate = (double)b->tasks / (t1 - t0);
    printf("  submit: %.3fs, %.0f tasks/s (the bench's CPU: %.2f us/task)\n", t1 - t0, submit_rate,
           (cpu1 - cpu0) * 1e6 / (double)b->tasks);
    cJSON_AddNumberToObject(b->json, "submit_rate", round(submit_rate));
    cost sc = snapshot_cost(&s0, &s1, b->tasks, "task", "submit alone");
    cost_print(&sc, "task");
    cost_json(b->json, "submit_", "task", &sc);

    double t2 = mono_s();
    if ((rc = host_start(b, &h)) < 0)
        goto out;
    double t_first, t_done;
    long long got;
    rc = wait_finished(b, st, &h, b->tasks, t2, &t_first, &t_done, &got);
    if (rc < 0) {
        double t = mono_s() - t2;
        printf("  drain: INCOMPLETE: %lld of %ld tasks in %.3fs (%.0f tasks/s)\n", got, b->tasks, t,
               (double)got / t);
        goto out;
    }
    if ((rc = snapshot_take(st, &s2)) < 0)
        goto out;
    double drain_tps = (double)b->tasks / (t_done - t2);
    double steady = t_done > t_first ? (double)(b->tasks - 1) / (t_done - t_first) : drain_tps;
    printf("  drain: %.3fs from the host's start, %.0f tasks/s (first finished after %.1f ms; "
           "%.0f tasks/s from then)\n",
           t_done - t2, drain_tps, (t_first - t2) * 1e3, steady);
    cJSON_AddNumberToObject(b->json, "drain_tps", round(drain_tps));
    cJSON_AddNumberToObject(b->json, "drain_steady_tps", round(steady));
    cJSON_AddNumberToObject(b->json, "drain_first_done_ms", round((t_first - t2) * 1e4) / 10);
    cost dc =
        snapshot_cost(&s0, &s2, b->tasks, "task", "submit + drain (the whole life of a task)");
    cost_print(&dc, "task");
    cost_json(b->json, "", "task", &dc);
    rc = host_stop(&h);
    if (rc == 0) {
        double host_us = cpu_s(&h.usage) * 1e6 / (double)b->tasks;
        printf("  bgtaskd CPU (its whole life): %.2f us/task\n", host_us);
        cJSON_AddNumberToObject(b->json, "host_cpu_usec_per_task", round(host_us * 100) / 100);
    }
out:
    host_finish(b, &h, rc == 0);
    snapshot_free(&s0);
    snapshot_free(&s1);
    snapshot_free(&s2);
    store_free(st);
    return rc;
}

/* mixed: a host is running; submit while it consumes. */
static int run_mixed(bench *b)
{
    host_proc h = {0};
    snapshot s0 = {0}, s1 = {0};
    int rc = host_write_config(b, &h, "mixed");
    if (rc < 0)
        return rc;
    store *st = open_store(b, h.prefix);
    if (!st) {
        host_finish(b, &h, false);
        return -EIO;
    }
    printf("mixed: %ld tasks submitted in batches of %d while one host with %d workers runs "
           "them\n",
           b->tasks, b->batch, b->workers);
    if ((rc = host_start(b, &h)) < 0 || (rc = host_wait_registered(st, &h)) < 0 ||
        (rc = wait_redis_quiet(st)) < 0 || (rc = snapshot_take(st, &s0)) < 0)
        goto out;
    double t0 = mono_s();
    if ((rc = submit_noops(b, st, b->tasks)) < 0)
        goto out;
    double t1 = mono_s();
    double t_first, t_done;
    long long got;
    rc = wait_finished(b, st, &h, b->tasks, t0, &t_first, &t_done, &got);
    if (rc < 0) {
        double t = mono_s() - t0;
        printf("  mixed: INCOMPLETE: %lld of %ld tasks in %.3fs (%.0f tasks/s)\n", got, b->tasks, t,
               (double)got / t);
        goto out;
    }
    if ((rc = snapshot_take(st, &s1)) < 0)
        goto out;
    double e2e = (double)b->tasks / (t_done - t0);
    printf("  submit: %.3fs (%.0f tasks/s while the host ran)\n", t1 - t0,
           (double)b->tasks / (t1 - t0));
    printf("  end to end: %.3fs from the first submit to the last finished, %.0f tasks/s\n",
           t_done - t0, e2e);
    cJSON_AddNumberToObject(b->json, "e2e_tps", round(e2e));
    cJSON_AddNumberToObject(b->json, "mixed_submit_rate", round((double)b->tasks / (t1 - t0)));
    cost c = snapshot_cost(&s0, &s1, b->tasks, "task", "mixed");
    cost_print(&c, "task");
    cost_json(b->json, "mixed_", "task", &c);
    rc = host_stop(&h);
    if (rc == 0) {
        double host_us = cpu_s(&h.usage) * 1e6 / (double)b->tasks;
        printf("  bgtaskd CPU (its whole life): %.2f us/task\n", host_us);
        cJSON_AddNumberToObject(b->json, "mixed_host_cpu_usec_per_task",
                                round(host_us * 100) / 100);
    }
out:
    host_finish(b, &h, rc == 0);
    snapshot_free(&s0);
    snapshot_free(&s1);
    store_free(st);
    return rc;
}

/*
 * aof: the AOF bytes a task costs, from its submit to its end, over a drain of --aof-tasks
 * tasks. Redis rewrites its AOF in the background when it has grown by
 * auto-aof-rewrite-percentage, and a rewrite shrinks the file: the setting is 0 (no
 * automatic rewrite) for this run and restored after it. Skipped when AOF is off.
 */
static int run_aof(bench *b)
{
    host_proc h = {0};
    snapshot s0 = {0}, s1 = {0};
    char old[32] = "";
    int rc = host_write_config(b, &h, "aof");
    if (rc < 0)
        return rc;
    store *st = open_store(b, h.prefix);
    if (!st) {
        host_finish(b, &h, false);
        return -EIO;
    }
    if ((rc = snapshot_take(st, &s0)) < 0)
        goto out;
    if (s0.aof < 0) {
        printf("aof: skipped: the server keeps no AOF\n");
        goto out;
    }
    printf("aof: %ld tasks submitted, then drained by one host; automatic AOF rewrites off\n",
           b->aof_tasks);
    if ((rc = store_config_get(st, "auto-aof-rewrite-percentage", old, sizeof old)) < 0 ||
        (rc = store_config_set(st, "auto-aof-rewrite-percentage", "0")) < 0) {
        say("bench: auto-aof-rewrite-percentage: %s", store_errstr(st));
        goto out;
    }
    snapshot_free(&s0);
    if ((rc = wait_redis_quiet(st)) < 0 || (rc = snapshot_take(st, &s0)) < 0 ||
        (rc = submit_noops(b, st, b->aof_tasks)) < 0)
        goto out;
    double t0 = mono_s(), t_first, t_done;
    long long got;
    if ((rc = host_start(b, &h)) < 0 ||
        (rc = wait_finished(b, st, &h, b->aof_tasks, t0, &t_first, &t_done, &got)) < 0 ||
        (rc = snapshot_take(st, &s1)) < 0)
        goto out;
    if (s1.forks != s0.forks) {
        say("bench: a background save or rewrite ran during the aof run: no figure");
        rc = -EAGAIN;
        goto out;
    }
    double per = (double)(s1.aof - s0.aof) / (double)b->aof_tasks;
    printf("  AOF: %.0f bytes/task (submit to end)\n", per);
    cJSON_AddNumberToObject(b->json, "aof_tasks", (double)b->aof_tasks);
    cJSON_AddNumberToObject(b->json, "aof_bytes_per_task", round(per));
    rc = host_stop(&h);
out:
    if (old[0] && store_config_set(st, "auto-aof-rewrite-percentage", old) < 0)
        say("bench: could not restore auto-aof-rewrite-percentage %s: %s", old,
            store_errstr(st));
    host_finish(b, &h, rc == 0);
    snapshot_free(&s0);
    snapshot_free(&s1);
    store_free(st);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The nearest-rank percentile p (0..1) of sorted v[0..n). */
static double percentile(const double *v, long n, double p)
{
    long i = (long)ceil(p * (double)n) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/*
 * Wait on the subscriber for the terminal event of task id. Returns 0 with *at its
 * arrival time, or a negative errno; a failed or cancelled task is -EPROTO.
 */
static int wait_terminal(store *sub, const char *id, double end, double *at)
{
    for (;;) {
        double left = end - mono_s();
        if (left <= 0 || interrupted)
            return interrupted ? -EINTR : -ETIMEDOUT;
        char *name;
        cJSON *data;
        int rc = store_next_event(sub, left, &name, &data);
        if (rc == -ETIMEDOUT || rc == -EINTR)
            continue;
        if (rc == -EPROTO)
            continue; /* not an event message: skip it */
        if (rc < 0)
            return rc;
        *at = mono_s();
        const cJSON *tid = cJSON_GetObjectItemCaseSensitive(data, "task_id");
        bool mine = cJSON_IsString(tid) && strcmp(tid->valuestring, id) == 0;
        bool terminal = ev_name_terminal(name), done = ev_kind_of(name) == EV_DONE;
        if (mine && terminal && !done)
            say("bench: task %s ended with %s", id, name);
        rc = mine && terminal ? (done ? 0 : -EPROTO) : 1;
        free(name);
        cJSON_Delete(data);
        if (rc <= 0)
            return rc;
    }
}

/*
 * latency: one bench.noop at a time on an idle host. The end of a sample is the arrival
 * of the task's terminal event on a subscriber connection (subscribed to every task's
 * channel once, before the first submit): the event is published by the same script
 * that finishes the task, so it marks the end without polling.
 */
static int run_latency(bench *b)
{
    host_proc h = {0};
    int rc = host_write_config(b, &h, "latency");
    if (rc < 0)
        return rc;
    store *st = open_store(b, h.prefix), *sub = open_store(b, h.prefix);
    double *lat = xcalloc((size_t)b->samples, sizeof *lat);
    double claim_sum = 0, run_sum = 0;
    long n = 0, claim_n = 0;
    snapshot s0 = {0}, s1 = {0};
    if (!st || !sub) {
        rc = -EIO;
        goto out;
    }
    printf("latency: %ld samples of one bench.noop at a time, host idle in between\n", b->samples);
    if ((rc = store_subscribe_all(sub)) < 0) {
        say("bench: subscribe: %s", store_errstr(sub));
        goto out;
    }
    if ((rc = host_start(b, &h)) < 0 || (rc = host_wait_registered(st, &h)) < 0 ||
        (rc = wait_redis_quiet(st)) < 0 || (rc = snapshot_take(st, &s0)) < 0)
        goto out;
    for (; n < b->samples; n++) {
        submit_req q = {.handler = "bench.noop"};
        char id[BGT_ID_LEN + 1];
        uuid4(id);
        q.id = id;
        double t0 = mono_s(), t1;
        if ((rc = store_submit(st, &q, 1)) < 0 || (rc = q.rc) < 0) {
            say("bench: submit: %s", q.err[0] ? q.err : store_errstr(st));
            break;
        }
        if ((rc = wait_terminal(sub, id, t0 + SAMPLE_S, &t1)) < 0) {
            if (rc == -ETIMEDOUT)
                say("bench: sample %ld: task %s did not finish within %.0fs", n + 1, id, SAMPLE_S);
            break;
        }
        lat[n] = (t1 - t0) * 1e3;
        /* Redis' clock in whole ms: coarse one by one, but the mean over many is fair. */
        cJSON *rec;
        if (store_get_task(st, id, &rec) == 0) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(rec, "created_ms");
            const cJSON *s = cJSON_GetObjectItemCaseSensitive(rec, "started_ms");
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(rec, "finished_ms");
            if (cJSON_IsNumber(c) && cJSON_IsNumber(s) && cJSON_IsNumber(f)) {
                claim_sum += s->valuedouble - c->valuedouble;
                run_sum += f->valuedouble - s->valuedouble;
                claim_n++;
            }
            cJSON_Delete(rec);
        }
        if (!host_alive(&h)) {
            rc = -ECHILD;
            break;
        }
    }
    if (n > 0) {
        double sum = 0;
        for (long i = 0; i < n; i++)
            sum += lat[i];
        qsort(lat, (size_t)n, sizeof *lat, cmp_double);
        double p50 = percentile(lat, n, 0.50), p99 = percentile(lat, n, 0.99);
        double p999 = percentile(lat, n, 0.999), max = lat[n - 1];
        printf("  submit -> done (terminal event received), %ld samples%s:\n", n,
               n < b->samples ? " (INCOMPLETE)" : "");
        printf("    min %.3f  p50 %.3f  mean %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms\n", lat[0],
               p50, sum / (double)n, p99, p999, max);
        if (claim_n)
            printf("    mean by Redis' clock (1 ms steps): submit -> claimed %.3f ms, "
                   "claimed -> finished %.3f ms\n",
                   claim_sum / (double)claim_n, run_sum / (double)claim_n);
        cJSON_AddNumberToObject(b->json, "pickup_samples", (double)n);
        cJSON_AddNumberToObject(b->json, "pickup_p50_ms", round(p50 * 1000) / 1000);
        cJSON_AddNumberToObject(b->json, "pickup_p99_ms", round(p99 * 1000) / 1000);
        cJSON_AddNumberToObject(b->json, "pickup_max_ms", round(max * 1000) / 1000);
        cJSON_AddNumberToObject(b->json, "pickup_mean_ms", round(sum / (double)n * 1000) / 1000);
        if (claim_n)
            cJSON_AddNumberToObject(b->json, "claim_mean_ms",
                                    round(claim_sum / (double)claim_n * 1000) / 1000);
        if (snapshot_take(st, &s1) == 0) {
            long long forks = s1.forks - s0.forks;
            if (forks)
                printf("    %lld background AOF rewrite(s) or save(s) ran meanwhile\n", forks);
            cJSON_AddNumberToObject(b->json, "pickup_redis_forks", (double)forks);
        }
    }
out:
    host_finish(b, &h, rc == 0);
    snapshot_free(&s0);
    snapshot_free(&s1);
    free(lat);
    store_free(sub);
    store_free(st);
    return rc;
}

/* A number field of a task record, or -1 when it has none. */
static double rec_number(const cJSON *rec, const char *field)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, field);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/*
 * parallel: one bench.parallel task of --subtasks no-op subtasks on an idle host. As for a
 * latency sample, its end is the arrival of its terminal event on a subscriber connection
 * (subscribed to the task's channel before the submit); the rate is the subtasks over
 * submit -> done, which takes in the claim, the split and its write, and the end. The
 * record then says whether every subtask succeeded. (Its started_ms and finished_ms are
 * no measure here: a script reads Redis' clock once, when it starts, and the host records
 * a burst of subtask ends in one script call, which may run for a good part of the task.)
 */
static int run_parallel(bench *b)
{
    host_proc h = {0};
    snapshot s0 = {0}, s1 = {0};
    cJSON *rec = NULL;
    int rc = host_write_config(b, &h, "parallel");
    if (rc < 0)
        return rc;
    store *st = open_store(b, h.prefix), *sub = open_store(b, h.prefix);
    if (!st || !sub) {
        rc = -EIO;
        goto out;
    }
    char id[BGT_ID_LEN + 1];
    uuid4(id);
    printf("parallel: one bench.parallel task of %ld no-op subtasks, one host with %d workers\n",
           b->subtasks, b->workers);
    if ((rc = store_subscribe_task(sub, id)) < 0) {
        say("bench: subscribe: %s", store_errstr(sub));
        goto out;
    }
    if ((rc = host_start(b, &h)) < 0 || (rc = host_wait_registered(st, &h)) < 0 ||
        (rc = wait_redis_quiet(st)) < 0 || (rc = snapshot_take(st, &s0)) < 0)
        goto out;

    char args[64];
    snprintf(args, sizeof args, "{\"n\": %ld}", b->subtasks);
    submit_req q = {.id = id, .handler = "bench.parallel", .args = args};
    double t0 = mono_s(), t1 = 0, end = t0 + b->timeout_s;
    if ((rc = store_submit(st, &q, 1)) < 0 || (rc = q.rc) < 0) {
        say("bench: submit: %s", q.err[0] ? q.err : store_errstr(st));
        goto out;
    }
    /* Wait in short slices, so that a host that dies is noticed before --timeout. */
    for (;;) {
        rc = wait_terminal(sub, id, fmin(mono_s() + PARALLEL_CHECK_S, end), &t1);
        if (rc != -ETIMEDOUT)
            break;
        if (!host_alive(&h)) {
            rc = -ECHILD;
            break;
        }
        if (mono_s() >= end) {
            say("bench: task %s did not finish within %.0fs (--timeout)", id, b->timeout_s);
            break;
        }
    }
    if (store_get_task(st, id, &rec) < 0)
        rec = NULL;
    double ok = rec_number(rec, "sub_success"), failed = rec_number(rec, "sub_failure");
    if (rc < 0) {
        double t = mono_s() - t0;
        printf("  parallel: INCOMPLETE: %.0f of %ld subtasks succeeded in %.3fs "
               "(%.0f subtasks/s)\n",
               ok < 0 ? 0 : ok, b->subtasks, t, (ok < 0 ? 0 : ok) / t);
        goto out;
    }
    if (ok != (double)b->subtasks) {
        say("bench: task %s ended with %.0f of %ld subtasks succeeded, %.0f failed", id, ok,
            b->subtasks, failed);
        rc = -EPROTO;
        goto out;
    }
    if ((rc = snapshot_take(st, &s1)) < 0)
        goto out;

    double sps = (double)b->subtasks / (t1 - t0);
    printf("  submit -> done (terminal event received): %.3fs, %.0f subtasks/s\n", t1 - t0, sps);
    cJSON_AddNumberToObject(b->json, "parallel_subtasks", (double)b->subtasks);
    cJSON_AddNumberToObject(b->json, "parallel_sps", round(sps));
    cost c = snapshot_cost(&s0, &s1, b->subtasks, "subtask",
                           "parallel (submit, split, every subtask, the end)");
    cost_print(&c, "subtask");
    cost_json(b->json, "parallel_", "subtask", &c);
    rc = host_stop(&h);
    if (rc == 0) {
        double host_us = cpu_s(&h.usage) * 1e6 / (double)b->subtasks;
        printf("  bgtaskd CPU (its whole life): %.2f us/subtask\n", host_us);
        cJSON_AddNumberToObject(b->json, "parallel_host_cpu_usec_per_subtask",
                                round(host_us * 100) / 100);
    }
out:
    host_finish(b, &h, rc == 0);
    snapshot_free(&s0);
    snapshot_free(&s1);
    cJSON_Delete(rec);
    store_free(sub);
    store_free(st);
    return rc;
}

/* ---- main ---- */

/* Print which Redis is measured and whether it keeps an AOF (which weighs on every figure). */
static int describe_redis(bench *b)
{
    store *st = open_store(b, "bgbench");
    if (!st)
        return -EIO;
    char *server = NULL, *persistence = NULL;
    int rc = store_info(st, "server", &server);
    if (rc == 0)
        rc = store_info(st, "persistence", &persistence);
    if (rc < 0) {
        say("bench: INFO: %s", store_errstr(st));
        goto out;
    }
    char version[32] = "?";
    int aof = 0;
    for (char *line = strtok(server, "\r\n"); line; line = strtok(NULL, "\r\n"))
        sscanf(line, "redis_version:%31s", version);
    for (char *line = strtok(persistence, "\r\n"); line; line = strtok(NULL, "\r\n"))
        sscanf(line, "aof_enabled:%d", &aof);
    if (b->addr.path)
        printf("bench: redis %s at %s, AOF %s\n", version, b->addr.path, aof ? "on" : "off");
    else
        printf("bench: redis %s at %s:%d, AOF %s\n", version, b->addr.host, b->addr.port,
               aof ? "on" : "off");
    cJSON_AddStringToObject(b->json, "redis_version", version);
    cJSON_AddBoolToObject(b->json, "aof", aof != 0);
out:
    free(server);
    free(persistence);
    store_free(st);
    return rc;
}

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "bench: %s: '%s' (see bench --help)\n", what, arg);
    return 2;
}

int main(int argc, char **argv)
{
    bench b = {.modes = MODE_ALL,
               .tasks = 100000,
               .samples = 2000,
               .subtasks = 10000,
               .aof_tasks = 20000,
               .workers = 64,
               .batch = 1000,
               .timeout_s = 300};
    const char *cli_url = NULL;
    enum {
        O_REDIS = 256,
        O_MODE,
        O_TASKS,
        O_SAMPLES,
        O_SUBTASKS,
        O_AOF_TASKS,
        O_WORKERS,
        O_BATCH,
        O_TIMEOUT,
        O_KEEP
    };
    static const struct option opts[] = {
        {"redis", required_argument, NULL, O_REDIS},
        {"mode", required_argument, NULL, O_MODE},
        {"tasks", required_argument, NULL, O_TASKS},
        {"samples", required_argument, NULL, O_SAMPLES},
        {"subtasks", required_argument, NULL, O_SUBTASKS},
        {"aof-tasks", required_argument, NULL, O_AOF_TASKS},
        {"workers", required_argument, NULL, O_WORKERS},
        {"batch", required_argument, NULL, O_BATCH},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"keep-logs", no_argument, NULL, O_KEEP},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    long v;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_REDIS: cli_url = optarg; break;
        case O_MODE:
            if (strcmp(optarg, "drain") == 0)
                b.modes = MODE_DRAIN;
            else if (strcmp(optarg, "mixed") == 0)
                b.modes = MODE_MIXED;
            else if (strcmp(optarg, "latency") == 0)
                b.modes = MODE_LATENCY;
            else if (strcmp(optarg, "aof") == 0)
                b.modes = MODE_AOF;
            else if (strcmp(optarg, "parallel") == 0)
                b.modes = MODE_PARALLEL;
            else if (strcmp(optarg, "all") == 0)
                b.modes = MODE_ALL;
            else
                return usage_error("--mode must be drain, mixed, latency, parallel, aof or all",
                                   optarg);
            break;
        case O_TASKS:
            if (!parse_long(optarg, 1, 100000000, &b.tasks))
                return usage_error("--tasks must be 1..100000000", optarg);
            break;
        case O_SAMPLES:
            if (!parse_long(optarg, 1, 10000000, &b.samples))
                return usage_error("--samples must be 1..10000000", optarg);
            break;
        case O_AOF_TASKS:
            if (!parse_long(optarg, 1, 10000000, &b.aof_tasks))
                return usage_error("--aof-tasks must be 1..10000000", optarg);
            break;
        case O_SUBTASKS:
            if (!parse_long(optarg, 1, 1000000, &b.subtasks))
                return usage_error("--subtasks must be 1..1000000", optarg);
            break;
        case O_WORKERS:
            if (!parse_long(optarg, 1, 1024, &v))
                return usage_error("--workers must be 1..1024", optarg);
            b.workers = (int)v;
            break;
        case O_BATCH:
            if (!parse_long(optarg, 1, 100000, &v))
                return usage_error("--batch must be 1..100000", optarg);
            b.batch = (int)v;
            break;
        case O_TIMEOUT:
            if (!parse_long(optarg, 1, 86400, &v))
                return usage_error("--timeout must be 1..86400 seconds", optarg);
            b.timeout_s = (double)v;
            break;
        case O_KEEP: b.keep_logs = true; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument", argv[optind]);

    b.url = redis_url_pick(cli_url, NULL);
    char err[512];
    if (redis_addr_resolve(cli_url, NULL, NULL, NULL, &b.addr, err, sizeof err) < 0 ||
        store_addr_check(&b.addr, err, sizeof err) < 0) {
        fprintf(stderr, "bench: %s\n", err);
        redis_addr_free(&b.addr);
        return 2;
    }
    if (find_paths(&b) < 0) {
        redis_addr_free(&b.addr);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    b.json = cJSON_CreateObject();
    cJSON_AddNumberToObject(b.json, "tasks", (double)b.tasks);
    cJSON_AddNumberToObject(b.json, "workers", b.workers);
    cJSON_AddNumberToObject(b.json, "batch", b.batch);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    cJSON_AddNumberToObject(b.json, "cpus", (double)cpus);
    printf("bench: bgtaskd %s, %d worker(s), %ld CPU(s)\n", b.bgtaskd, b.workers, cpus);

    int failed = 0;
    if (describe_redis(&b) < 0)
        failed++;
    if (!failed && !interrupted && (b.modes & MODE_DRAIN) && run_drain(&b) < 0)
        failed++;
    if (!failed && !interrupted && (b.modes & MODE_MIXED) && run_mixed(&b) < 0)
        failed++;
    if (!failed && !interrupted && (b.modes & MODE_LATENCY) && run_latency(&b) < 0)
        failed++;
    if (!failed && !interrupted && (b.modes & MODE_PARALLEL) && run_parallel(&b) < 0)
        failed++;
    if (!failed && !interrupted && (b.modes & MODE_AOF) && run_aof(&b) < 0)
        failed++;
    if (interrupted)
        failed++;
    cJSON_AddBoolToObject(b.json, "complete", failed == 0);

    char *line = cJSON_PrintUnformatted(b.json);
    printf("%s\n", line);
    free(line);
    cJSON_Delete(b.json);
    redis_addr_free(&b.addr);
    return failed ? 1 : 0;
}

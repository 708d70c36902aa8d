/*
 * crash.c - a test plugin whose handlers kill their host, run for a while
 * reporting progress, or get orphaned, so the crash-safety tests can prove
 * what the host promises (DESIGN §9, properties 1 to 3).
 *
 *   crash.abort  {}                          calls abort(): the host dies mid-attempt
 *   crash.maybe  {"p": P=0, "ms": M=0, "max_ms": X=0, "seed": S=0}
 *                aborts with probability P, else sleeps M ms (or, with max_ms, a random
 *                0..X ms) and succeeds with {"attempt": a, "pid": p}. The draw depends only
 *                on (task id, attempt, seed), so a run is reproducible
 *   crash.steps  {"steps": N=20, "step_ms": M=100, "ignore_cancel": false, "spin": false}
 *                N steps of M ms with "step i/N" progress after each; resumes at the step a
 *                lost attempt persisted (bgt_last_progress); stops when bgt_cancelled() says
 *                so unless ignore_cancel; with spin it waits by spinning on the clock, never
 *                leaving its own code for long. Result {"resumed_from": k, "steps": N,
 *                "attempt": a, "pid": p}
 *   crash.local  as crash.steps, registered not retriable: an orphaned attempt fails
 *
 * Every run of every handler first appends one line "<task id> <attempt> <pid> <handler>"
 * to the record file (args.record, else the plugin config's record = "/path"; none: no
 * record), with one O_APPEND write, so lines of several host processes never interleave.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <bgtask.h>

/* The longest a crash.steps step or a crash.maybe sleep may be. */
#define CRASH_MAX_MS 600000.0
/* The most steps crash.steps accepts. */
#define CRASH_MAX_STEPS 100000
/* The longest a handler sleeps without looking at bgt_cancelled(). */
#define CRASH_SLICE_S 0.02

/* What every handler of one load shares: its own copy, handed to the host as udata. */
struct crash_config {
    char *record; /* the record file, or NULL */
};

static void crash_config_free(void *p)
{
    struct crash_config *cfg = p;
    if (cfg == NULL)
        return;
    free(cfg->record);
    free(cfg);
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Sleep until the monotonic time `deadline` in short slices (or spin until then: a handler
 * busy in its own code, not parked in a system call). Unless `ignore_cancel`, return false
 * as soon as bgt_cancelled() turns true.
 */
static bool sleep_until(bgt_task *t, double deadline, bool ignore_cancel, bool spin)
{
    for (;;) {
        if (!ignore_cancel && bgt_cancelled(t))
            return false;
        double left = deadline - mono_now();
        if (left <= 0)
            return true;
        if (spin)
            continue;
        if (left > CRASH_SLICE_S)
            left = CRASH_SLICE_S;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(left * 1e9)};
        nanosleep(&ts, NULL);
    }
}

/* Read the optional number args.<field> (lo..hi) into *out; on a bad value set the error. */
static bool arg_number(bgt_task *t, const cJSON *args, const char *field, double lo, double hi,
                       double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, field);
    if (v == NULL)
        return true;
    if (cJSON_IsNumber(v) && v->valuedouble >= lo && v->valuedouble <= hi) {
        *out = v->valuedouble;
        return true;
    }
    bgt_set_error(t, "args.%s must be a number %g..%g", field, lo, hi);
    return false;
}

/*
 * Append this run's line to the record file. A failure to record fails the run: a test that
 * counts runs must not be told a wrong number silently.
 */
static bool record_run(bgt_task *t, const cJSON *args, const struct crash_config *cfg)
{
    const char *path = cfg->record;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(args, "record");
    if (cJSON_IsString(a))
        path = a->valuestring;
    if (path == NULL)
        return true;
    char line[256];
    int n = snprintf(line, sizeof line, "%s %u %d %s\n", bgt_task_id(t), bgt_attempt(t),
                     (int)getpid(), bgt_task_handler(t));
    if (n < 0 || (size_t)n >= sizeof line) {
        bgt_set_error(t, "record line too long");
        return false;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        bgt_set_error(t, "%s: %s", path, strerror(errno));
        return false;
    }
    ssize_t w = write(fd, line, (size_t)n);
    int err = errno;
    close(fd);
    if (w != n) {
        bgt_set_error(t, "%s: short write: %s", path, w < 0 ? strerror(err) : "disk full?");
        return false;
    }
    return true;
}

/* A result {"attempt": a, "pid": p} plus one more number if name is not NULL. */
static bgt_status finish(bgt_task *t, const char *name, double value, int steps)
{
    cJSON *r = cJSON_CreateObject();
    if (r == NULL || !cJSON_AddNumberToObject(r, "attempt", bgt_attempt(t)) ||
        !cJSON_AddNumberToObject(r, "pid", (double)getpid()) ||
        (name != NULL && !cJSON_AddNumberToObject(r, name, value)) ||
        (steps > 0 && !cJSON_AddNumberToObject(r, "steps", steps))) {
        cJSON_Delete(r);
        bgt_set_error(t, "out of memory building the result");
        return BGT_FAILED;
    }
    int rc = bgt_set_result(t, r);
    cJSON_Delete(r);
    if (rc < 0) {
        bgt_set_error(t, "the host refused the result: %s", strerror(-rc));
        return BGT_FAILED;
    }
    return BGT_OK;
}

/* Die like a crashing handler would, without leaving a core file behind in the test folder. */
static _Noreturn void die(bgt_task *t)
{
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
    bgt_log(t, BGT_LOG_NOTICE, "attempt %u: aborting the host on purpose", bgt_attempt(t));
    abort();
}

static bgt_status crash_abort(bgt_task *t, const cJSON *args, void *udata)
{
    if (!record_run(t, args, udata))
        return BGT_FAILED;
    die(t);
}

/* 64 reproducible bits from the task id, the attempt and a seed (FNV-1a, then splitmix64). */
static uint64_t draw(const char *id, uint32_t attempt, uint64_t seed)
{
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (const char *c = id; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    h ^= attempt;
    h += 0x9e3779b97f4a7c15ULL;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

static bgt_status crash_maybe(bgt_task *t, const cJSON *args, void *udata)
{
    double p = 0, ms = 0, max_ms = 0, seed = 0;
    if (!cJSON_IsObject(args)) {
        bgt_set_error(t, "args must be a JSON object");
        return BGT_FAILED;
    }
    if (!arg_number(t, args, "p", 0, 1, &p) || !arg_number(t, args, "ms", 0, CRASH_MAX_MS, &ms) ||
        !arg_number(t, args, "max_ms", 0, CRASH_MAX_MS, &max_ms) ||
        !arg_number(t, args, "seed", 0, 9007199254740992.0, &seed))
        return BGT_FAILED;
    if (!record_run(t, args, udata))
        return BGT_FAILED;
    uint64_t r = draw(bgt_task_id(t), bgt_attempt(t), (uint64_t)seed);
    double u = (double)(r >> 11) / 9007199254740992.0; /* uniform in [0, 1) */
    if (u < p)
        die(t);
    if (max_ms > 0)
        ms = (double)((r & 0xffffffffu) % ((uint64_t)max_ms + 1));
    if (!sleep_until(t, mono_now() + ms / 1000.0, false, false))
        return BGT_CANCELLED;
    return finish(t, "slept_ms", ms, 0);
}

static bgt_status crash_steps(bgt_task *t, const cJSON *args, void *udata)
{
    double steps_d = 20, step_ms = 100;
    if (!cJSON_IsObject(args)) {
        bgt_set_error(t, "args must be a JSON object");
        return BGT_FAILED;
    }
    if (!arg_number(t, args, "steps", 1, CRASH_MAX_STEPS, &steps_d) ||
        !arg_number(t, args, "step_ms", 0, CRASH_MAX_MS, &step_ms))
        return BGT_FAILED;
    bool ignore_cancel = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(args, "ignore_cancel"));
    bool spin = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(args, "spin"));
    int steps = (int)steps_d;
    if (!record_run(t, args, udata))
        return BGT_FAILED;

    /* The handler chooses where to resume: at the step the last attempt persisted. */
    double done = 0, total = 0;
    bgt_last_progress(t, &done, &total);
    int start = 0;
    if (total == steps && done > 0 && done <= steps) {
        start = (int)done;
        bgt_log(t, BGT_LOG_INFO, "attempt %u resuming at step %d/%d", bgt_attempt(t), start, steps);
    }
    double t0 = mono_now();
    for (int i = start + 1; i <= steps; i++) {
        if (!sleep_until(t, t0 + (i - start) * step_ms / 1000.0, ignore_cancel, spin)) {
            bgt_log(t, BGT_LOG_INFO, "attempt %u told to stop during step %d/%d", bgt_attempt(t), i,
                    steps);
            return BGT_CANCELLED;
        }
        char msg[48];
        snprintf(msg, sizeof msg, "step %d/%d", i, steps);
        bgt_progress(t, i, steps, msg);
    }
    return finish(t, "resumed_from", start, steps);
}

/* Register one handler with its own copy of the config (each udata is freed on its own). */
static int add_handler(bgt_plugin *p, const char *name, bgt_run_fn run, bool not_retriable,
                       const char *record)
{
    struct crash_config *cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL)
        return -ENOMEM;
    if (record != NULL && (cfg->record = strdup(record)) == NULL) {
        free(cfg);
        return -ENOMEM;
    }
    return bgt_register_handler(p, (bgt_handler_def){
                                       .name = name,
                                       .kind = BGT_SINGLE,
                                       .run = run,
                                       .not_retriable = not_retriable,
                                       .udata = cfg,
                                       .udata_free = crash_config_free,
                                   });
}

static int crash_init(bgt_plugin *p, const cJSON *config)
{
    const char *record = NULL;
    const cJSON *item;
    cJSON_ArrayForEach (item, config) {
        if (strcmp(item->string, "record") == 0 && cJSON_IsString(item) &&
            item->valuestring[0] == '/') {
            record = item->valuestring;
        } else {
            bgt_plugin_log(p, BGT_LOG_ERR, "config: %s: expected record = \"/absolute/path\"",
                           item->string);
            return -EINVAL;
        }
    }
    int rc;
    if ((rc = add_handler(p, "crash.abort", crash_abort, false, record)) < 0 ||
        (rc = add_handler(p, "crash.maybe", crash_maybe, false, record)) < 0 ||
        (rc = add_handler(p, "crash.steps", crash_steps, false, record)) < 0 ||
        (rc = add_handler(p, "crash.local", crash_steps, true, record)) < 0)
        return rc;
    return 0;
}

BGT_PLUGIN("crash", "1.0", crash_init, NULL);

/*
 * demo.c - the demo plugin: five small handlers that show the whole SDK at work.
 *
 *   demo.sleep  {"seconds": F=1, "steps": N=10}  sleeps in N steps, reports progress, honours
 *               cancellation and resumes where a lost attempt got to. Result:
 *               {"slept": F, "steps": N, "resumed_from": k} (F for the whole task; this
 *               attempt slept the steps after k)
 *   demo.echo   any args            the result is the args
 *   demo.fail   {"message": S}      fails with that message (default: "demo.fail was asked
 *                                   to fail")
 *   demo.flaky  {"n": N=3}          asks to be retried until attempt N, then succeeds with
 *                                   {"attempt": N}; registered with max_attempts = 10
 *   demo.parallel {"items": N, "ms": M=100, "fail": [i, ...]}
 *               a parallel task of N subtasks (1..100000; the host's tasks.max_subtasks caps
 *               it too). Subtask i sleeps M ms in slices, reporting its own progress, then
 *               fails with "subtask i was asked to fail" if i is listed in "fail", else
 *               succeeds with {"index": i}. The task's result: {"succeeded": S, "items": N}.
 *               Subtask args, as the split writes them: {"index": i, "ms": M, "fail": bool}.
 *
 * Plugin config (all optional):
 *   max_seconds = 600.0;   the longest demo.sleep accepts, and the longest "ms" of
 *                          demo.parallel (default and ceiling: 86400)
 *
 * Read this file as a template: argument checks that name the field and what was expected,
 * a cancel check at least every 50 ms, per-handler state passed as udata (never a global
 * that several loads of the plugin would share), and every host call's return checked.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bgtask.h>

/* The upper bound of demo.sleep's "seconds", and of the max_seconds setting. */
#define DEMO_MAX_SECONDS 86400.0
/* The upper bound of demo.sleep's "steps". */
#define DEMO_MAX_STEPS 100000
/* The longest demo.sleep sleeps without looking at bgt_cancelled(). */
#define DEMO_SLICE_S 0.05
/* The upper bound of demo.parallel's "items". */
#define DEMO_MAX_ITEMS 100000
/* demo.parallel's "ms" when the args do not say. */
#define DEMO_DEFAULT_MS 100
/* The length of one of demo.parallel's progress slices, in ms (DEMO_SLICE_S). */
#define DEMO_SLICE_MS 50

/* What demo.sleep needs from the plugin config: one per load, handed to the host as udata. */
struct demo_config {
    double max_seconds;
};

/* Monotonic seconds: deadlines must not move when the wall clock is set. */
static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Sleep until the monotonic time `deadline`, in slices of at most DEMO_SLICE_S, polling
 * bgt_cancelled() before each slice. Returns false as soon as the task is cancelled.
 */
static bool sleep_until(bgt_task *t, double deadline)
{
    for (;;) {
        if (bgt_cancelled(t))
            return false;
        double left = deadline - mono_now();
        if (left <= 0)
            return true;
        if (left > DEMO_SLICE_S)
            left = DEMO_SLICE_S;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(left * 1e9)};
        nanosleep(&ts, NULL);
    }
}

/*
 * Read the optional number args.<field> into *out, which keeps its default when the field
 * is absent. A present field must be a number in lo..hi, and a whole number if `integer`.
 * Otherwise the task's error names the field and what was expected, and this returns false.
 */
static bool arg_number(bgt_task *t, const cJSON *args, const char *field, double lo, double hi,
                       bool integer, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, field);
    if (v == NULL)
        return true;
    /* The range check comes first: it keeps the cast below within the range of long long. */
    if (cJSON_IsNumber(v) && v->valuedouble >= lo && v->valuedouble <= hi &&
        (!integer || v->valuedouble == (double)(long long)v->valuedouble)) {
        *out = v->valuedouble;
        return true;
    }
    /* %.15g: whole bounds print in full (86400000, not 8.64e+07). */
    bgt_set_error(t, "args.%s must be %s %.15g..%.15g", field,
                  integer ? "an integer" : "a number", lo, hi);
    return false;
}

/* Handlers that read fields need an object (NULL reads as {}); say so plainly otherwise. */
static bool args_object(bgt_task *t, const cJSON *args)
{
    if (args == NULL || cJSON_IsObject(args))
        return true;
    bgt_set_error(t, "args must be a JSON object");
    return false;
}

/*
 * Check what bgt_set_result returned. On a refusal, set an error that says why (a result over
 * the host's size limit is the one to expect) and return true: the task has failed.
 */
static bool result_refused(bgt_task *t, int rc)
{
    if (rc == -E2BIG)
        bgt_set_error(t, "the result is larger than the host accepts (tasks.max_result_bytes)");
    else if (rc < 0)
        bgt_set_error(t, "the host refused the result: %s", strerror(-rc));
    return rc < 0;
}

/*
 * Hand a result to the host and free our copy: the host serializes it at the call. NULL
 * stands for a result that could not be built.
 */
static bgt_status finish_with(bgt_task *t, cJSON *result)
{
    if (result == NULL) {
        bgt_set_error(t, "out of memory building the result");
        return BGT_FAILED;
    }
    int rc = bgt_set_result(t, result);
    cJSON_Delete(result);
    return result_refused(t, rc) ? BGT_FAILED : BGT_OK;
}

/*
 * demo.sleep: sleep `seconds` in `steps` equal steps, reporting "step i/N" after each.
 * If a previous attempt of this task was lost (its host died) after reporting step k, the
 * host still has that progress: this attempt starts at step k instead of at 0.
 */
static bgt_status demo_sleep(bgt_task *t, const cJSON *args, void *udata)
{
    const struct demo_config *cfg = udata;
    double seconds = 1, steps_d = 10;

    if (!args_object(t, args) ||
        !arg_number(t, args, "seconds", 0, cfg->max_seconds, false, &seconds) ||
        !arg_number(t, args, "steps", 1, DEMO_MAX_STEPS, true, &steps_d))
        return BGT_FAILED;
    int steps = (int)steps_d;

    /* Resume only from progress that this handler could have written: same step count. */
    double done = 0, total = 0;
    bgt_last_progress(t, &done, &total);
    int start = 0;
    if (total == steps && done > 0 && done <= steps) {
        start = (int)done;
        bgt_log(t, BGT_LOG_INFO, "resuming at step %d/%d: a previous attempt got that far",
                start, steps);
    }

    /* Each step ends at a fixed point of one schedule, so slices and reports add no drift. */
    double step_s = seconds / steps;
    double t0 = mono_now();
    for (int i = start + 1; i <= steps; i++) {
        if (!sleep_until(t, t0 + (i - start) * step_s)) {
            bgt_log(t, BGT_LOG_INFO, "cancelled during step %d/%d", i, steps);
            return BGT_CANCELLED;
        }
        char msg[48];
        snprintf(msg, sizeof msg, "step %d/%d", i, steps);
        bgt_progress(t, i, steps, msg);
    }

    cJSON *result = cJSON_CreateObject();
    if (result != NULL && (!cJSON_AddNumberToObject(result, "slept", seconds) ||
                           !cJSON_AddNumberToObject(result, "steps", steps) ||
                           !cJSON_AddNumberToObject(result, "resumed_from", start))) {
        cJSON_Delete(result);
        result = NULL;
    }
    return finish_with(t, result);
}

/* demo.echo: the result is the args, whatever JSON they are. */
static bgt_status demo_echo(bgt_task *t, const cJSON *args, void *udata)
{
    return result_refused(t, bgt_set_result(t, args)) ? BGT_FAILED : BGT_OK;
}

/* demo.fail: a final failure with args.message (or a default). Never retried. */
static bgt_status demo_fail(bgt_task *t, const cJSON *args, void *udata)
{
    const char *message = "demo.fail was asked to fail";

    if (!args_object(t, args))
        return BGT_FAILED;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(args, "message");
    if (m != NULL && !cJSON_IsString(m)) {
        bgt_set_error(t, "args.message must be a string");
        return BGT_FAILED;
    }
    if (m != NULL)
        message = m->valuestring;
    bgt_set_error(t, "%s", message);
    return BGT_FAILED;
}

/*
 * demo.flaky: a transient failure (BGT_RETRY) on attempts 1..n-1, success on attempt n. The
 * host runs the task again after a backoff, and each run counts against max_attempts.
 */
static bgt_status demo_flaky(bgt_task *t, const cJSON *args, void *udata)
{
    double n = 3;

    if (!args_object(t, args) || !arg_number(t, args, "n", 1, 1000, true, &n))
        return BGT_FAILED;
    uint32_t attempt = bgt_attempt(t);
    if (attempt < n) {
        bgt_set_error(t, "attempt %u of %d: not yet", attempt, (int)n);
        return BGT_RETRY;
    }
    cJSON *result = cJSON_CreateObject();
    if (result != NULL && !cJSON_AddNumberToObject(result, "attempt", attempt)) {
        cJSON_Delete(result);
        result = NULL;
    }
    return finish_with(t, result);
}

/*
 * demo.parallel, split: check the task's args and add one subtask per item,
 * {"index": i, "ms": M, "fail": bool}. The checks happen here, once, so that a bad request
 * fails the task before any subtask runs.
 */
static bgt_status demo_parallel_split(bgt_task *t, const cJSON *args, void *udata)
{
    const struct demo_config *cfg = udata;
    double items_d = 0, ms = DEMO_DEFAULT_MS;

    if (!args_object(t, args))
        return BGT_FAILED;
    if (cJSON_GetObjectItemCaseSensitive(args, "items") == NULL) {
        bgt_set_error(t, "args.items is required: the number of subtasks, 1..%d",
                      DEMO_MAX_ITEMS);
        return BGT_FAILED;
    }
    if (!arg_number(t, args, "items", 1, DEMO_MAX_ITEMS, true, &items_d) ||
        !arg_number(t, args, "ms", 0, cfg->max_seconds * 1000, true, &ms))
        return BGT_FAILED;
    int n = (int)items_d;

    /* Which items fail: a flag per item, so that the loop below does not search the list. */
    bool *fails = calloc((size_t)n, sizeof *fails);
    if (fails == NULL) {
        bgt_set_error(t, "out of memory");
        return BGT_FAILED;
    }
    bgt_status st = BGT_FAILED;
    const cJSON *fail = cJSON_GetObjectItemCaseSensitive(args, "fail");
    if (fail != NULL && !cJSON_IsArray(fail)) {
        bgt_set_error(t, "args.fail must be an array of subtask indices 0..%d", n - 1);
        goto out;
    }
    const cJSON *f;
    cJSON_ArrayForEach(f, fail) {
        if (!cJSON_IsNumber(f) || f->valuedouble < 0 || f->valuedouble > n - 1 ||
            f->valuedouble != (double)(int)f->valuedouble) {
            bgt_set_error(t, "args.fail must be an array of subtask indices 0..%d", n - 1);
            goto out;
        }
        fails[(int)f->valuedouble] = true;
    }

    for (int i = 0; i < n; i++) {
        cJSON *item = cJSON_CreateObject();
        if (item == NULL || !cJSON_AddNumberToObject(item, "index", i) ||
            !cJSON_AddNumberToObject(item, "ms", ms) ||
            !cJSON_AddBoolToObject(item, "fail", fails[i])) {
            cJSON_Delete(item);
            bgt_set_error(t, "out of memory");
            goto out;
        }
        int rc = bgt_add_subtask(t, item);
        cJSON_Delete(item);
        if (rc == -E2BIG) {
            bgt_set_error(t, "args.items = %d is more subtasks than the host accepts "
                             "(tasks.max_subtasks)", n);
            goto out;
        }
        if (rc < 0) {
            bgt_set_error(t, "the host refused subtask %d: %s", i, strerror(-rc));
            goto out;
        }
    }
    st = BGT_OK;
out:
    free(fails);
    return st;
}

/*
 * demo.parallel, run (one call per subtask): sleep args.ms in slices of DEMO_SLICE_MS,
 * reporting "slice k/n" after each, then fail or succeed as args.fail says. Args that did not
 * come from the split (a submitter may give the subtasks itself) are checked the same way;
 * a missing index is the subtask's own.
 */
static bgt_status demo_parallel_run(bgt_task *t, const cJSON *args, void *udata)
{
    const struct demo_config *cfg = udata;
    double index_d = bgt_subtask(t), ms = DEMO_DEFAULT_MS;

    if (!args_object(t, args) ||
        !arg_number(t, args, "index", 0, DEMO_MAX_ITEMS - 1, true, &index_d) ||
        !arg_number(t, args, "ms", 0, cfg->max_seconds * 1000, true, &ms))
        return BGT_FAILED;
    const cJSON *fail = cJSON_GetObjectItemCaseSensitive(args, "fail");
    if (fail != NULL && !cJSON_IsBool(fail)) {
        bgt_set_error(t, "args.fail must be true or false");
        return BGT_FAILED;
    }
    int index = (int)index_d;

    /* At least one slice, so that even a 0 ms subtask reports that it got to its end. */
    long long slices = ((long long)ms + DEMO_SLICE_MS - 1) / DEMO_SLICE_MS;
    if (slices < 1)
        slices = 1;
    double slice_s = ms / 1000.0 / (double)slices;
    double t0 = mono_now();
    for (long long k = 1; k <= slices; k++) {
        if (!sleep_until(t, t0 + (double)k * slice_s))
            return BGT_CANCELLED;
        char msg[64];
        snprintf(msg, sizeof msg, "subtask %d: slice %lld/%lld", index, k, slices);
        bgt_progress(t, (double)k, (double)slices, msg);
    }

    if (cJSON_IsTrue(fail)) {
        bgt_set_error(t, "subtask %d was asked to fail", index);
        return BGT_FAILED;
    }
    cJSON *result = cJSON_CreateObject();
    if (result != NULL && !cJSON_AddNumberToObject(result, "index", index)) {
        cJSON_Delete(result);
        result = NULL;
    }
    return finish_with(t, result);
}

/*
 * demo.parallel, merge: `results` holds one entry per subtask, null for those that failed.
 * The task's result is {"succeeded": S, "items": N}.
 */
static bgt_status demo_parallel_merge(bgt_task *t, const cJSON *results, void *udata)
{
    if (!cJSON_IsArray(results)) {
        bgt_set_error(t, "the host passed subtask results that are not an array");
        return BGT_FAILED;
    }
    int n = 0, succeeded = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, results) {
        n++;
        if (!cJSON_IsNull(r))
            succeeded++;
    }
    cJSON *result = cJSON_CreateObject();
    if (result != NULL && (!cJSON_AddNumberToObject(result, "succeeded", succeeded) ||
                           !cJSON_AddNumberToObject(result, "items", n))) {
        cJSON_Delete(result);
        result = NULL;
    }
    return finish_with(t, result);
}

/*
 * Read the plugin config into a fresh struct demo_config. Unknown settings are logged, not
 * fatal, so a config written for a newer version of the plugin still loads.
 */
static int demo_config_read(bgt_plugin *p, const cJSON *config, struct demo_config **out)
{
    struct demo_config *cfg = malloc(sizeof *cfg);
    if (cfg == NULL)
        return -ENOMEM;
    cfg->max_seconds = DEMO_MAX_SECONDS;
    if (config != NULL && !cJSON_IsObject(config)) {
        bgt_plugin_log(p, BGT_LOG_ERR, "config: must be a group of settings");
        free(cfg);
        return -EINVAL;
    }

    const cJSON *item;
    cJSON_ArrayForEach(item, config) {
        if (strcmp(item->string, "max_seconds") != 0) {
            bgt_plugin_log(p, BGT_LOG_WARNING, "config: unknown setting %s ignored",
                           item->string);
            continue;
        }
        if (!cJSON_IsNumber(item) || item->valuedouble < 0 ||
            item->valuedouble > DEMO_MAX_SECONDS) {
            bgt_plugin_log(p, BGT_LOG_ERR, "config: max_seconds must be a number 0..%g",
                           DEMO_MAX_SECONDS);
            free(cfg);
            return -EINVAL;
        }
        cfg->max_seconds = item->valuedouble;
    }
    *out = cfg;
    return 0;
}

/*
 * Called once at load. Any failure fails the load, and the host then undoes the
 * registrations that did succeed, so there is nothing to clean up here.
 */
static int demo_init(bgt_plugin *p, const cJSON *config)
{
    struct demo_config *cfg;
    int rc = demo_config_read(p, config, &cfg);
    if (rc < 0)
        return rc;
    /* Kept for demo.parallel: cfg is the host's once it is handed over below. */
    double max_seconds = cfg->max_seconds;

    /* cfg passes to the host here, whatever the call returns: the host frees it with free(). */
    rc = bgt_register_handler(p, (bgt_handler_def){
                                     .name = "demo.sleep",
                                     .kind = BGT_SINGLE,
                                     .run = demo_sleep,
                                     .udata = cfg,
                                     .udata_free = free,
                                 });
    if (rc < 0)
        return rc;
    rc = bgt_register_handler(p, (bgt_handler_def){
                                     .name = "demo.echo", .kind = BGT_SINGLE, .run = demo_echo});
    if (rc < 0)
        return rc;
    rc = bgt_register_handler(p, (bgt_handler_def){
                                     .name = "demo.fail", .kind = BGT_SINGLE, .run = demo_fail});
    if (rc < 0)
        return rc;
    /* Ten claims, so that {"n": 10} succeeds without touching the host's max_attempts. */
    rc = bgt_register_handler(p, (bgt_handler_def){
                                     .name = "demo.flaky",
                                     .kind = BGT_SINGLE,
                                     .run = demo_flaky,
                                     .max_attempts = 10,
                                 });
    if (rc < 0)
        return rc;

    /* demo.parallel reads the same settings; the host frees each handler's udata once, so
     * it gets a struct of its own. */
    struct demo_config *pcfg = malloc(sizeof *pcfg);
    if (pcfg == NULL)
        return -ENOMEM;
    pcfg->max_seconds = max_seconds;
    return bgt_register_handler(p, (bgt_handler_def){
                                       .name = "demo.parallel",
                                       .kind = BGT_PARALLEL,
                                       .run = demo_parallel_run,
                                       .split = demo_parallel_split,
                                       .merge = demo_parallel_merge,
                                       .udata = pcfg,
                                       .udata_free = free,
                                   });
}

BGT_PLUGIN("demo", "1.0", demo_init, NULL);

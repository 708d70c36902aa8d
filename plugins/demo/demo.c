/*
 * demo.c - the demo plugin: four small handlers that show the whole SDK at work.
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
 *
 * Plugin config (all optional):
 *   max_seconds = 600.0;   the longest demo.sleep accepts (default and ceiling: 86400)
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
    bgt_set_error(t, "args.%s must be %s %g..%g", field, integer ? "an integer" : "a number", lo,
                  hi);
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
    return bgt_register_handler(p, (bgt_handler_def){
                                       .name = "demo.flaky",
                                       .kind = BGT_SINGLE,
                                       .run = demo_flaky,
                                       .max_attempts = 10,
                                   });
}

BGT_PLUGIN("demo", "1.0", demo_init, NULL);

/*
 * bench.c - the handlers the benchmark and the latency tests run.
 *
 *   bench.noop      returns at once, no result: what is measured is the host and Redis alone
 *   bench.sleep_ms  {"ms": M}  sleeps M milliseconds (0..3600000), honouring cancellation
 *
 * bench.noop is the smallest handler there can be: it does not look at its args, and it
 * calls no host service, so that the benchmark's figures are the system's own cost.
 */
#include <time.h>

#include <bgtask.h>

/* The longest bench.sleep_ms sleeps without looking at bgt_cancelled(). */
#define BENCH_SLICE_MS 50
/* The upper bound of bench.sleep_ms's "ms": one hour. */
#define BENCH_MAX_MS 3600000

/* bench.noop: nothing to do, done. */
static bgt_status bench_noop(bgt_task *t, const cJSON *args, void *udata)
{
    return BGT_OK;
}

/* Monotonic nanoseconds: deadlines must not move when the wall clock is set. */
static long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * bench.sleep_ms: sleep args.ms milliseconds in slices of at most BENCH_SLICE_MS, so that a
 * cancel request stops it within about that long.
 */
static bgt_status bench_sleep_ms(bgt_task *t, const cJSON *args, void *udata)
{
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(args, "ms");
    /* The range check comes first: it keeps the cast within the range of long long. */
    if (!cJSON_IsNumber(ms) || ms->valuedouble < 0 || ms->valuedouble > BENCH_MAX_MS ||
        ms->valuedouble != (double)(long long)ms->valuedouble) {
        bgt_set_error(t, "args.ms must be an integer 0..%d", BENCH_MAX_MS);
        return BGT_FAILED;
    }

    long long deadline = mono_ns() + (long long)ms->valuedouble * 1000000;
    for (;;) {
        if (bgt_cancelled(t))
            return BGT_CANCELLED;
        long long left = deadline - mono_ns();
        if (left <= 0)
            return BGT_OK;
        if (left > BENCH_SLICE_MS * 1000000LL)
            left = BENCH_SLICE_MS * 1000000LL;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = left};
        nanosleep(&ts, NULL);
    }
}

/* Called once at load: register both handlers. */
static int bench_init(bgt_plugin *p, const cJSON *config)
{
    int rc = bgt_register_handler(p, (bgt_handler_def){
                                         .name = "bench.noop",
                                         .kind = BGT_SINGLE,
                                         .run = bench_noop,
                                     });
    if (rc < 0)
        return rc;
    return bgt_register_handler(p, (bgt_handler_def){
                                       .name = "bench.sleep_ms",
                                       .kind = BGT_SINGLE,
                                       .run = bench_sleep_ms,
                                   });
}

BGT_PLUGIN("bench", "1.0", bench_init, NULL);

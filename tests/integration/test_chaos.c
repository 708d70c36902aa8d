/*
 * test_chaos.c - a seeded chaos run (DESIGN §9, properties 1 and 2): three
 * hosts work through a few thousand short tasks of random durations, submitted
 * in waves, while the test kills a random host with kill -9 every few seconds
 * and starts another in its place (half of the time under the same host id,
 * as a supervisor restarting a host with a configured id would). At the end
 * every task is terminal, none has two terminal events, every one succeeded,
 * and no attempt ran twice.
 *
 * The seed is printed; BGT_CHAOS_SEED=<n> replays the same schedule (task
 * durations, kill times, victims, restart delays). Timing still varies from
 * run to run, the outcome must not.
 */
#include <inttypes.h>

#include "../harness/crashkit.h"

enum {
    NHOSTS = 3,
    NTASKS = 4000,
    WAVES = 40,        /* submitted in WAVES waves ... */
    MAX_TASK_MS = 150, /* each task sleeps 0..MAX_TASK_MS ms */
    MAX_ATTEMPTS = 20, /* far more than a short task can lose with its host */
};
#define WAVE_EVERY_S 0.3  /* ... one every WAVE_EVERY_S: faster than the hosts can go */
#define CHAOS_MAX_S 100.0 /* the kills go on until every task is terminal, at most this long */
#define KILL_MIN_S 1.0    /* a kill every KILL_MIN_S..KILL_MAX_S */
#define KILL_MAX_S 3.0
#define RESTART_MAX_S 1.0 /* a killed host's replacement starts 0..RESTART_MAX_S later */
#define DEFAULT_SEED 20240611u

static uint64_t rng_state;

/* xorshift64*: small, and the same sequence for the same seed everywhere. */
static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

/* Uniform in [lo, hi). */
static double rng_uniform(double lo, double hi)
{
    return lo + (hi - lo) * (double)(rng_next() >> 11) / 9007199254740992.0;
}

typedef struct slot {
    th_host *h;        /* the current process, or NULL while waiting to restart */
    char id[64];       /* its host id */
    double restart_at; /* when h is NULL: when to start the replacement */
} slot;

static void test_chaos(void **state)
{
    it_need_redis();
    const char *env = getenv("BGT_CHAOS_SEED");
    uint64_t seed = env && *env ? strtoull(env, NULL, 10) : DEFAULT_SEED;
    printf("chaos seed %" PRIu64 " (replay with BGT_CHAOS_SEED=%" PRIu64 ")\n", seed, seed);
    rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;

    /* The whole schedule of task durations is drawn up front. */
    static char ids[NTASKS][37];
    static char *args[NTASKS];
    for (int i = 0; i < NTASKS; i++)
        assert_true(asprintf(&args[i], "{\"ms\": %d}", (int)(rng_next() % (MAX_TASK_MS + 1))) > 0);

    slot slots[NHOSTS];
    int next_host = 0;
    for (int i = 0; i < NHOSTS; i++) {
        snprintf(slots[i].id, sizeof slots[i].id, "c%d", ++next_host);
        th_host_opts o = ck_opts(slots[i].id);
        slots[i].h = ck_host_start(&o, true);
    }

    double t0 = th_now();
    double next_kill = t0 + rng_uniform(KILL_MIN_S, KILL_MAX_S);
    double next_count = t0;
    int waves = 0, kills = 0, same_id = 0;
    size_t terminal = 0;
    double last_wave = t0;
    while (waves < WAVES || terminal < NTASKS) {
        double now = th_now();
        if (now > t0 + CHAOS_MAX_S)
            fail_msg("after %.0f s, %zu of %d tasks are terminal", CHAOS_MAX_S, terminal, NTASKS);
        if (now >= next_count) {
            terminal = ck_count_terminal(ids, (size_t)waves * (NTASKS / WAVES));
            next_count = now + 0.5;
        }
        if (waves < WAVES && now >= t0 + waves * WAVE_EVERY_S) {
            int from = waves * (NTASKS / WAVES);
            ck_submit_many("crash.maybe", args + from, NTASKS / WAVES, MAX_ATTEMPTS, ids + from);
            waves++;
            last_wave = now;
        }
        if (now >= next_kill) {
            int live[NHOSTS], nlive = 0;
            for (int i = 0; i < NHOSTS; i++)
                if (slots[i].h)
                    live[nlive++] = i;
            if (nlive > 0) {
                slot *s = &slots[live[rng_next() % (uint64_t)nlive]];
                th_host_kill(s->h);
                kills++;
                s->h = NULL;
                s->restart_at = now + rng_uniform(0, RESTART_MAX_S);
                /* Half the replacements take the dead host's id. */
                if (rng_next() % 2)
                    same_id++;
                else
                    snprintf(s->id, sizeof s->id, "c%d", ++next_host);
            }
            next_kill = now + rng_uniform(KILL_MIN_S, KILL_MAX_S);
        }
        for (int i = 0; i < NHOSTS; i++) {
            slot *s = &slots[i];
            int st;
            if (s->h && ck_host_exited(s->h, &st))
                fail_msg("host %s exited on its own (status %#x)", s->id, st);
            if (!s->h && now >= s->restart_at) {
                th_host_opts o = ck_opts(s->id);
                s->h = ck_host_start(&o, false);
            }
        }
        th_sleep(0.01);
    }
    for (int i = 0; i < NTASKS; i++)
        free(args[i]);
    printf("submitted %d tasks in %d waves over %.1f s; all terminal after %.1f s; "
           "%d kill -9s, %d replacements under the dead host's id\n",
           NTASKS, WAVES, last_wave - t0, th_now() - t0, kills, same_id);
    assert_true(kills >= 5);

    size_t success = ck_assert_all_terminal_once(ids, NTASKS, "SUCCESS");
    assert_int_equal(success, NTASKS);
    static ck_state st[NTASKS];
    ck_read_states(ids, NTASKS, st);
    long long max_attempt = 0;
    int rerun = 0;
    for (int i = 0; i < NTASKS; i++) {
        if (st[i].result_attempt != st[i].attempt)
            fail_msg("task %s: result written by attempt %lld, record at attempt %lld", ids[i],
                     st[i].result_attempt, st[i].attempt);
        if (st[i].attempt > max_attempt)
            max_attempt = st[i].attempt;
        rerun += st[i].attempt > 1;
    }
    size_t retried;
    size_t runs = ck_assert_no_attempt_twice(&retried);
    printf("%zu SUCCESS of %d; %zu runs; %d tasks claimed more than once, %zu run more than "
           "once; most attempts %lld\n",
           success, NTASKS, runs, rerun, retried, max_attempt);
    assert_true(runs >= NTASKS);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        CK_TEST(test_chaos),
    };
    ck_filter();
    return cmocka_run_group_tests(tests, it_group_setup, it_group_teardown);
}

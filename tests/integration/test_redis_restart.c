/*
 * test_redis_restart.c - Redis killed with kill -9 and restarted with AOF on
 * (appendonly yes, appendfsync always) while 200 tasks run on two hosts
 * (DESIGN §9, properties 1 and 6): every task ends in exactly one terminal
 * state with exactly one terminal event, no attempt runs twice, and the hosts
 * ride out the outage and reconnect without a restart.
 */
#include "../harness/crashkit.h"

enum { NTASKS = 200, NLONG = 4 };
/* How long Redis stays down: past the lease, so the hosts also give up the attempts that
 * were running (by their own clocks) and the tasks must be claimed again. */
#define OUTAGE_S (CK_LEASE_S + 1.0)

/* The program's redis-server runs with AOF on. */
static int aof_group_setup(void **state)
{
    (void)state;
    return it_redis_start(true);
}

/* Both hosts logged that they noticed Redis was gone. */
static bool both_noticed(th_host **h)
{
    for (int i = 0; i < 2; i++)
        if (!th_log_contains(h[i], "failed") && !th_log_contains(h[i], "redis is back"))
            return false;
    return true;
}

static void test_redis_kill9_with_aof(void **state)
{
    it_need_redis();
    th_host *h[2];
    th_host_opts o = ck_opts("A");
    h[0] = ck_host_start(&o, true);
    o = ck_opts("B");
    h[1] = ck_host_start(&o, true);
    pid_t pids[2] = {h[0]->pid, h[1]->pid};

    /* A few long tasks first, running when Redis goes away and for longer than the lease
     * after; then short ones of random durations of 0..250 ms, drawn by the plugin from
     * (task id, attempt, seed). */
    static char ids[NTASKS][37];
    char *long_args[NLONG];
    for (int i = 0; i < NLONG; i++)
        long_args[i] = "{\"steps\": 60, \"step_ms\": 100}";
    ck_submit_many("crash.steps", long_args, NLONG, 10, ids);
    for (int i = 0; i < NLONG; i++)
        assert_true(TH_WAIT_UNTIL(10, it_field_ll(ids[i], "progress_current") >= 1));
    char *args[NTASKS - NLONG];
    for (int i = 0; i < NTASKS - NLONG; i++)
        assert_true(asprintf(&args[i], "{\"max_ms\": 250, \"seed\": %d}", i) > 0);
    ck_submit_many("crash.maybe", args, NTASKS - NLONG, 10, ids + NLONG);
    for (int i = 0; i < NTASKS - NLONG; i++)
        free(args[i]);

    /* Kill Redis while the work is in full swing. */
    assert_true(TH_WAIT_UNTIL(20, ck_count_terminal(ids, NTASKS) >= NTASKS / 4));
    size_t before = ck_count_terminal(ids, NTASKS);
    redisFree(fx.c);
    fx.c = NULL;
    th_redis_kill(&fx.r);
    double killed = th_now();
    /* Down for OUTAGE_S, and until both hosts have seen it (a write, claim or wait failed). */
    assert_true(TH_WAIT_UNTIL(OUTAGE_S + 15, both_noticed(h) && th_now() - killed >= OUTAGE_S));
    assert_int_equal(th_redis_restart(&fx.r), 0);
    fx.c = th_redis_connect(&fx.r);
    printf("redis killed with %zu of %d tasks finished; down %.3f s; restarted from its AOF\n",
           before, NTASKS, th_now() - killed);

    /* Nothing acknowledged before the kill was lost: the finished tasks are still there. */
    size_t after_restart = ck_count_terminal(ids, NTASKS);
    assert_true(after_restart >= before);

    double t0 = th_now();
    assert_true(TH_WAIT_UNTIL(60, ck_count_terminal(ids, NTASKS) == NTASKS));
    printf("all %d tasks terminal %.3f s after the restart\n", NTASKS, th_now() - t0);
    assert_int_equal(ck_assert_all_terminal_once(ids, NTASKS, "SUCCESS"), NTASKS);

    /* The successful run of each task was its last attempt, and no attempt ran twice. */
    static ck_state st[NTASKS];
    ck_read_states(ids, NTASKS, st);
    int rerun = 0;
    for (int i = 0; i < NTASKS; i++) {
        if (st[i].result_attempt != st[i].attempt)
            fail_msg("task %s: result written by attempt %lld, record at attempt %lld", ids[i],
                     st[i].result_attempt, st[i].attempt);
        rerun += st[i].attempt > 1;
    }
    size_t retried;
    size_t runs = ck_assert_no_attempt_twice(&retried);
    printf("%zu runs for %d tasks; %d tasks needed more than one attempt\n", runs, NTASKS, rerun);
    /* The long ones outlived their leases during the outage: given up by their hosts, run
     * again, and resumed where they were. */
    for (int i = 0; i < NLONG; i++)
        assert_true(st[i].attempt >= 2);
    assert_true(ck_logged_lost_lease(h[0]) || ck_logged_lost_lease(h[1]));

    /* The same two processes, back in P:hosts, having said so in their logs. */
    for (int i = 0; i < 2; i++) {
        assert_true(it_host_alive(h[i]));
        assert_int_equal(h[i]->pid, pids[i]);
        assert_true(TH_WAIT_UNTIL(5, th_host_expiry(fx.c, IT_PREFIX, h[i]->id) >= 0));
        assert_true(th_log_contains(h[i], "redis is back"));
    }
    /* And they still take new work. */
    char *next = it_submit("demo.echo", "{\"after\": \"restart\"}", NULL);
    assert_true(it_wait_state(next, "SUCCESS", 10));
    it_assert_one_terminal(next, "bgtask_done");
    free(next);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        CK_TEST(test_redis_kill9_with_aof),
    };
    ck_filter();
    return cmocka_run_group_tests(tests, aof_group_setup, it_group_teardown);
}

/*
 * test_failover.c - two hosts share the work: a host killed with kill -9
 * while running a task loses it to the other host once its lease (or its host
 * entry) runs out, and the task resumes from its persisted progress with
 * attempt 2; a host stopped with SIGTERM releases its running task at once
 * (the attempt refunded) and leaves the host list.
 */
#include <signal.h>
#include <sys/wait.h>

#include "../harness/itest.h"

/* Short leases so a dead host's task is claimable again within seconds. */
#define LEASE_S 2.5
#define HEARTBEAT_S 0.5

static void test_kill9_failover(void **state)
{
    it_need_redis();
    th_host_opts o = {.lease_s = LEASE_S, .heartbeat_s = HEARTBEAT_S};
    o.id = "A";
    th_host *a = it_host_start(&o);
    /* 40 steps of 0.1 s: long enough to be killed halfway. */
    char *id = it_submit("demo.sleep", "{\"seconds\": 4, \"steps\": 40}", NULL);
    assert_true(TH_WAIT_UNTIL(10, it_running_on(id, "A", 1, 1)));
    /* Only now does B start: the task is surely A's. */
    o.id = "B";
    th_host *b = it_host_start(&o);
    assert_true(TH_WAIT_UNTIL(10, it_running_on(id, "A", 1, 8)));

    th_host_kill(a);
    double killed = th_now();
    long long at_kill = it_field_ll(id, "progress_current");
    assert_true(at_kill >= 8 && at_kill < 40);

    /* B claims it once A's lease or host entry runs out, and not before. */
    assert_true(TH_WAIT_UNTIL(LEASE_S + 10, it_running_on(id, "B", 2, 0)));
    double pickup = th_now() - killed;
    printf("kill -9 of host A to the task running on host B: %.3f s (lease %.1f s, "
           "heartbeat %.1f s)\n",
           pickup, LEASE_S, HEARTBEAT_S);
    /* A's entry lives min(lease, 2 heartbeats + 1 s) = 2 s past its last heartbeat, at most
     * 0.5 s before the kill: B must not have taken the task before A was given up. */
    assert_true(pickup >= 1.0);
    assert_true(pickup <= LEASE_S + 3);

    assert_true(it_wait_state(id, "SUCCESS", 15));
    it_assert_ended_on(id, b, 2);
    it_assert_field(id, "attempt", "2");
    it_assert_field(id, "released", "0");
    it_assert_field(id, "progress_current", "40");
    it_assert_one_terminal(id, "bgtask_done");

    /* B resumed from the progress A had persisted, not from step 0. */
    cJSON *res = it_field_json(id, "result");
    assert_non_null(res);
    int resumed = cJSON_GetObjectItem(res, "resumed_from")->valueint;
    printf("A persisted step %lld when killed; B resumed from step %d\n", at_kill, resumed);
    assert_true(resumed >= at_kill && resumed < 40);
    assert_int_equal(cJSON_GetObjectItem(res, "steps")->valueint, 40);
    cJSON_Delete(res);
    assert_true(th_log_contains(b, "resuming at step"));

    /* The progress events never went backwards across the two attempts. */
    cJSON *evs = it_events(id);
    const cJSON *e;
    double last = -1;
    cJSON_ArrayForEach (e, evs) {
        double cur = it_ev_number(e, "current_progress");
        if (strcmp(it_ev_name(e), "bgtask_updated") == 0 && cur > 0) {
            assert_true(cur >= last);
            last = cur;
        }
    }
    assert_true(last == 40);
    cJSON_Delete(evs);

    /* A's entry is gone from the host list (buried), B's stays. */
    assert_true(TH_WAIT_UNTIL(10, !it_host_listed("A")));
    assert_true(it_host_listed("B"));
    free(id);
    it_pass();
}

static void test_sigterm_releases(void **state)
{
    it_need_redis();
    th_host_opts o = {.lease_s = LEASE_S, .heartbeat_s = HEARTBEAT_S, .shutdown_grace_s = 0.3};
    o.id = "A";
    th_host *a = it_host_start(&o);
    char *id = it_submit("demo.sleep", "{\"seconds\": 4, \"steps\": 40}", NULL);
    assert_true(TH_WAIT_UNTIL(10, it_running_on(id, "A", 1, 1)));
    o.id = "B";
    th_host *b = it_host_start(&o);
    assert_true(TH_WAIT_UNTIL(10, it_running_on(id, "A", 1, 3)));

    double term = th_now();
    th_host_signal(a, SIGTERM);
    int status = -1;
    assert_true(th_host_wait_exit(a, 10, &status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    printf("host A drained and exited %.3f s after SIGTERM (grace 0.3 s)\n", th_now() - term);

    /* Released, not lost: B claims it without waiting for a lease to run out. */
    assert_true(TH_WAIT_UNTIL(LEASE_S, it_running_on(id, "B", 2, 0)));
    printf("SIGTERM of host A to the task running on host B: %.3f s\n", th_now() - term);
    it_assert_field(id, "released", "1");
    assert_false(it_host_listed("A"));
    assert_false(th_host_entry_exists(fx.c, IT_PREFIX, "A"));
    assert_true(it_host_listed("B"));

    assert_true(it_wait_state(id, "SUCCESS", 15));
    it_assert_ended_on(id, b, 2);
    /* Two claims, one refunded: one attempt counts against max_attempts. */
    it_assert_field(id, "attempt", "2");
    it_assert_field(id, "released", "1");
    it_assert_one_terminal(id, "bgtask_done");

    /* An event says it was released, by whom, with attempt 1. */
    assert_int_equal(it_count_released(id, "A", 1), 1);
    cJSON *res = it_field_json(id, "result");
    assert_true(cJSON_GetObjectItem(res, "resumed_from")->valueint >= 3);
    cJSON_Delete(res);
    assert_true(th_log_contains(b, "resuming at step"));
    free(id);
    it_pass();
}

/*
 * A released attempt is refunded: a task released at shutdown as often as
 * max_attempts still runs to the end.
 */
static void test_release_is_refunded(void **state)
{
    it_need_redis();
    th_host_opts o = {.lease_s = LEASE_S, .heartbeat_s = HEARTBEAT_S, .shutdown_grace_s = 0.2};
    char *id =
        it_submit("demo.sleep", "{\"seconds\": 3, \"steps\": 30}", "--max-attempts", "2", NULL);
    char hid[16];
    for (int i = 1; i <= 2; i++) {
        snprintf(hid, sizeof hid, "R%d", i);
        o.id = hid;
        th_host *h = it_host_start(&o);
        assert_true(TH_WAIT_UNTIL(10, it_running_on(id, hid, i, 1)));
        assert_int_equal(th_host_stop(h, 10), 0);
        assert_true(TH_WAIT_UNTIL(5, it_field_ll(id, "released") == i));
        it_assert_field(id, "state", "ONGOING");
        it_assert_field(id, "owner", "");
    }
    o.id = "R3";
    it_host_start(&o);
    assert_true(it_wait_state(id, "SUCCESS", 15));
    it_assert_field(id, "attempt", "3");
    it_assert_field(id, "released", "2");
    it_assert_one_terminal(id, "bgtask_done");
    free(id);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_kill9_failover),
        IT_TEST(test_sigterm_releases),
        IT_TEST(test_release_is_refunded),
    };
    return cmocka_run_group_tests(tests, it_group_setup, it_group_teardown);
}

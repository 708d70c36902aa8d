/*
 * test_crash.c - crash safety with real processes (DESIGN §9, properties 1 to
 * 3): a host killed with kill -9 mid-progress loses its task to another host,
 * which resumes it as attempt 2; a host paused past its lease (SIGSTOP) is
 * fenced out and carries on with other work once continued; a handler that
 * aborts its host is given up after max_attempts while a supervisor restarts
 * the hosts and the tasks beside it succeed; a non-retriable handler orphaned
 * by kill -9 fails at the next claim; SIGTERM releases running attempts to
 * another host with the attempt refunded, a second SIGTERM releases at once,
 * and a handler that ignores the stop request is released anyway.
 *
 * Handlers come from the crash test plugin, which records every run (task,
 * attempt, host pid) in a file: the record proves which process ran what.
 */
#include "../harness/crashkit.h"
#include "events.h"

/* A number field of the task's result; fails the test when it is missing. */
static double result_number(const char *id, const char *name)
{
    cJSON *res = it_field_json(id, "result");
    const cJSON *v = cJSON_GetObjectItem(res, name);
    if (!cJSON_IsNumber(v))
        fail_msg("task %s: result has no number '%s'", id, name);
    double d = v->valuedouble;
    cJSON_Delete(res);
    return d;
}

/*
 * The attempts in the task's events never go back: once an event of attempt 2 was
 * written, no event of attempt 1 follows. Returns the attempt of the last event.
 */
static int assert_events_monotonic(const char *id)
{
    cJSON *evs = it_events(id);
    int highest = 0;
    const cJSON *e;
    cJSON_ArrayForEach (e, evs) {
        int a = (int)it_ev_number(e, "attempt");
        if (a < highest) {
            char *s = cJSON_Print(evs);
            fprintf(stderr, "events of %s:\n%s\n", id, s);
            free(s);
            fail_msg("task %s: an event of attempt %d came after one of attempt %d", id, a,
                     highest);
        }
        highest = a;
    }
    cJSON_Delete(evs);
    return highest;
}

/*
 * kill -9 of the host running a task: another host takes it over as attempt 2 (once the
 * dead host's entry in P:hosts ran out), resumes at the step the first attempt persisted,
 * and the task ends with exactly one terminal event.
 */
static void test_kill9_mid_progress(void **state)
{
    it_need_redis();
    th_host_opts o = ck_opts("A");
    th_host *a = ck_host_start(&o, true);
    char *id = it_submit("crash.steps", "{\"steps\": 30, \"step_ms\": 100}", NULL);
    assert_true(TH_WAIT_UNTIL(10, it_running_on(id, "A", 1, 1)));
    /* B starts only now: the first attempt is surely A's. */
    o = ck_opts("B");
    th_host *b = ck_host_start(&o, true);
    assert_true(TH_WAIT_UNTIL(10, it_running_on(id, "A", 1, 8)));

    th_host_kill(a);
    double killed = th_now();
    long long at_kill = it_field_ll(id, "progress_current");
    assert_true(at_kill >= 8 && at_kill < 30);

    /* Running again = the handler of attempt 2 has started (its record line is written). */
    assert_true(TH_WAIT_UNTIL(CK_LEASE_S + 10, ck_count_runs(id, 2) == 1));
    double again = th_now() - killed;
    double ttl = CK_LEASE_S < 2 * CK_HEARTBEAT_S + 1.0 ? CK_LEASE_S : 2 * CK_HEARTBEAT_S + 1.0;
    printf("kill -9 to the task running again on another host: %.3f s "
           "(lease %.1f s, heartbeat %.1f s, host entry ttl %.1f s)\n",
           again, CK_LEASE_S, CK_HEARTBEAT_S, ttl);
    /* The dead host's entry (the lease of its attempts) lives 2 heartbeats + 1 s after its
     * last heartbeat, which came about a heartbeat before the kill: the task was not taken
     * before that, and is taken within a second of it running out (B wakes for it). */
    assert_true(again >= 1.0);
    assert_true(again <= ttl + 1.0);
    assert_int_equal(ck_run_pid(id, 2), (int)b->pid);

    assert_true(it_wait_state(id, "SUCCESS", 15));
    it_assert_ended_on(id, b, 2);
    it_assert_field(id, "attempt", "2");
    it_assert_field(id, "released", "0");
    it_assert_field(id, "progress_current", "30");
    it_assert_one_terminal(id, "bgtask_done");
    assert_int_equal(assert_events_monotonic(id), 2);

    /* The handler chose to resume where attempt 1 had got to. */
    int resumed = (int)result_number(id, "resumed_from");
    printf("attempt 1 persisted step %lld before the kill; attempt 2 resumed from step %d\n",
           at_kill, resumed);
    assert_true(resumed >= at_kill && resumed < 30);
    assert_int_equal((int)result_number(id, "attempt"), 2);

    /* Exactly two runs: attempt 1 in A's process, attempt 2 in B's. */
    assert_int_equal(ck_count_runs(id, 0), 2);
    assert_int_equal(ck_count_runs(id, 1), 1);
    assert_int_not_equal(ck_run_pid(id, 1), ck_run_pid(id, 2));
    assert_true(TH_WAIT_UNTIL(5, !it_host_listed("A")));
    free(id);
    it_pass();
}

/* A late write of host `host` for the attempt with lease token `token` of id; returns its
 * fin_item rc. */
static int late_write(const char *id, const char *host, const char *token, fin_op op)
{
    store *st = ck_store();
    fin_item f = {.op = op,
                  .id = id,
                  .handler = "crash.steps",
                  .token = token,
                  .has_progress = true,
                  .current = 12345,
                  .total = 40,
                  .progress_message = "late",
                  .progress_body = "\"message\":\"late\",\"current_progress\":12345,"
                                   "\"total_progress\":40",
                  .message = "late finish",
                  .result = "{\"late\":true}",
                  .ev = op == FIN_SUCCESS ? EV_DONE : -1,
                  .ev_body = "\"message\":\"late finish\",\"result\":{\"late\":true}"};
    int rc = store_apply(st, host, &f, 1);
    if (rc < 0)
        fail_msg("apply: %s", store_errstr(st));
    store_free(st);
    return f.rc;
}

/*
 * SIGSTOP a host past its lease: a second host claims the task and finishes it; writes
 * carrying the first host's (owner, attempt) are refused; continued with SIGCONT, the
 * first host sees its lease lost, writes nothing for that attempt, and takes new work.
 */
static void test_sigstop_fenced(void **state)
{
    it_need_redis();
    th_host_opts o = ck_opts("A");
    th_host *a = ck_host_start(&o, true);
    char *id = it_submit("crash.steps", "{\"steps\": 40, \"step_ms\": 100}", NULL);
    assert_true(TH_WAIT_UNTIL(10, it_running_on(id, "A", 1, 3)));
    /* A's lease token for attempt 1: every write A makes for it carries it. */
    char *started = it_field(id, "started_ms");
    char token[64];
    snprintf(token, sizeof token, "1 %s", started);
    free(started);
    o = ck_opts("B");
    th_host *b = ck_host_start(&o, true);

    th_host_signal(a, SIGSTOP);
    double stopped = th_now();
    assert_true(TH_WAIT_UNTIL(CK_LEASE_S + 10, it_running_on(id, "B", 2, 0)));
    printf("SIGSTOP of host A to the task claimed by host B: %.3f s\n", th_now() - stopped);

    /* Fencing in the store: writes carrying A's lease token for attempt 1 change nothing
     * while B holds attempt 2, whoever sends them. */
    assert_int_equal(late_write(id, "A", token, FIN_PROGRESS), -ESTALE);
    assert_int_equal(late_write(id, "A", token, FIN_SUCCESS), -ESTALE);
    assert_int_equal(late_write(id, "B", token, FIN_SUCCESS), -ESTALE);
    it_assert_field(id, "state", "ONGOING");
    assert_true(it_field_ll(id, "progress_current") <= 40);

    assert_true(it_wait_state(id, "SUCCESS", 15));
    assert_true(it_host_alive(a));
    th_host_signal(a, SIGCONT);
    /* A finds its lease gone and drops the attempt: its outcome is never written. */
    assert_true(TH_WAIT_UNTIL(10, th_log_contains(a, "outcome is discarded") ||
                                      th_log_contains(a, "the write was refused")));
    assert_true(ck_logged_lost_lease(a));

    it_assert_ended_on(id, b, 2);
    it_assert_field(id, "attempt", "2");
    it_assert_field(id, "progress_current", "40");
    assert_int_equal((int)result_number(id, "attempt"), 2);
    it_assert_one_terminal(id, "bgtask_done");
    assert_int_equal(assert_events_monotonic(id), 2);
    cJSON *evs = it_events(id);
    const cJSON *e;
    cJSON_ArrayForEach (e, evs)
        assert_true(it_ev_number(e, "current_progress") != 12345);
    cJSON_Delete(evs);
    assert_int_equal(ck_count_runs(id, 0), 2);
    assert_int_equal(ck_run_pid(id, 1), (int)a->pid);
    assert_int_equal(ck_run_pid(id, 2), (int)b->pid);

    /* A carries on: with B gone, a new task runs on A. */
    assert_int_equal(th_host_stop(b, 10), 0);
    assert_true(TH_WAIT_UNTIL(5, it_host_listed("A")));
    char *next = it_submit("demo.echo", "{\"after\": \"sigcont\"}", NULL);
    assert_true(it_wait_state(next, "SUCCESS", 10));
    it_assert_ended_on(next, a, 1);
    it_assert_one_terminal(next, "bgtask_done");
    assert_true(it_host_alive(a));
    free(next);
    free(id);
    it_pass();
}

/*
 * A poison pill: crash.abort kills every host that runs it. With max_attempts = 3 and a
 * supervisor that keeps two hosts up, it ends FAILURE after three attempts, saying the
 * previous attempts were lost with their host; tasks submitted beside it all succeed.
 */
static void test_poison_pill(void **state)
{
    it_need_redis();
    enum { OTHERS = 30 };
    th_host_opts o = ck_opts(NULL);
    o.max_attempts = 3;
    th_host *slot[2];
    for (int i = 0; i < 2; i++)
        slot[i] = ck_host_start(&o, true);

    char ids[1 + OTHERS][37];
    char *crash_args[] = {"{}"};
    ck_submit_many("crash.abort", crash_args, 1, 0, ids);
    /* The others can be lost with a dying host at most 3 times: 4 attempts always suffice. */
    char *echo_args[OTHERS / 2], *step_args[OTHERS / 2];
    for (int i = 0; i < OTHERS / 2; i++) {
        assert_true(asprintf(&echo_args[i], "{\"n\": %d}", i) > 0);
        step_args[i] = "{\"steps\": 3, \"step_ms\": 100}";
    }
    ck_submit_many("demo.echo", echo_args, OTHERS / 2, 4, ids + 1);
    ck_submit_many("crash.steps", step_args, OTHERS / 2, 4, ids + 1 + OTHERS / 2);
    for (int i = 0; i < OTHERS / 2; i++)
        free(echo_args[i]);

    /* The supervisor: whenever a host dies, start another in its place. */
    int deaths = 0;
    double end = th_now() + 40;
    while (!th_task_terminal(fx.c, IT_PREFIX, ids[0]) && th_now() < end) {
        for (int i = 0; i < 2; i++) {
            int st;
            if (!ck_host_exited(slot[i], &st))
                continue;
            deaths++;
            if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT)
                fail_msg("host %s died otherwise than by abort(): status %#x", slot[i]->id, st);
            printf("host %s died by abort(); starting another\n", slot[i]->id);
            slot[i] = ck_host_start(&o, false);
        }
        th_sleep(0.01);
    }
    assert_true(it_wait_state(ids[0], "FAILURE", 1));
    char *err = it_field(ids[0], "error");
    printf("poison pill: %s\n", err);
    assert_non_null(strstr(err, "gave up after 3 attempts"));
    assert_non_null(strstr(err, "previous attempts were lost with their host"));
    free(err);
    it_assert_field(ids[0], "attempt", "3");
    it_assert_one_terminal(ids[0], "bgtask_failed");
    assert_int_equal(assert_events_monotonic(ids[0]), 3);

    /* Three runs, each in a different process, each of which died. */
    assert_int_equal(ck_count_runs(ids[0], 0), 3);
    int p1 = ck_run_pid(ids[0], 1), p2 = ck_run_pid(ids[0], 2), p3 = ck_run_pid(ids[0], 3);
    assert_true(p1 && p2 && p3 && p1 != p2 && p2 != p3 && p1 != p3);
    for (int i = 0; i < 2; i++)
        if (ck_host_exited(slot[i], NULL))
            deaths++;
    assert_int_equal(deaths, 3);

    /* Everything else succeeded, once. */
    assert_true(TH_WAIT_UNTIL(20, ck_count_terminal(ids + 1, OTHERS) == OTHERS));
    assert_int_equal(ck_assert_all_terminal_once(ids + 1, OTHERS, "SUCCESS"), OTHERS);
    size_t retried;
    ck_assert_no_attempt_twice(&retried);
    printf("%d tasks beside the poison pill: all succeeded; %zu task(s) ran more than once, "
           "the pill included\n",
           OTHERS, retried);
    it_pass();
}

/* A non-retriable handler orphaned by kill -9 fails at the next claim instead of running. */
static void test_not_retriable_orphan(void **state)
{
    it_need_redis();
    th_host_opts o = ck_opts("A");
    th_host *a = ck_host_start(&o, true);
    char *id = it_submit("crash.local", "{\"steps\": 100, \"step_ms\": 100}", NULL);
    assert_true(TH_WAIT_UNTIL(10, it_running_on(id, "A", 1, 1)));
    o = ck_opts("B");
    ck_host_start(&o, true);
    th_host_kill(a);

    assert_true(it_wait_state(id, "FAILURE", CK_LEASE_S + 10));
    char *err = it_field(id, "error");
    printf("non-retriable orphan: %s\n", err);
    assert_non_null(strstr(err, "attempt 1 was lost with its host A"));
    assert_non_null(strstr(err, "not retriable"));
    free(err);
    it_assert_field(id, "attempt", "1");
    it_assert_one_terminal(id, "bgtask_failed");
    assert_int_equal(ck_count_runs(id, 0), 1);
    free(id);
    it_pass();
}

/*
 * SIGTERM with long tasks running and a short grace: the attempts are released (claimable
 * at once, attempt refunded, a bgtask_updated event says so), the other host resumes them,
 * and the stopped host leaves P:hosts.
 */
static void test_sigterm_releases(void **state)
{
    it_need_redis();
    enum { N = 3 };
    th_host_opts o = ck_opts("A");
    o.shutdown_grace_s = 0.5;
    th_host *a = ck_host_start(&o, true);
    char ids[N][37];
    char *args[N];
    for (int i = 0; i < N; i++)
        args[i] = "{\"steps\": 60, \"step_ms\": 50}";
    ck_submit_many("crash.steps", args, N, 0, ids);
    for (int i = 0; i < N; i++)
        assert_true(TH_WAIT_UNTIL(10, it_running_on(ids[i], "A", 1, 2)));
    o = ck_opts("B");
    th_host *b = ck_host_start(&o, true);

    double term = th_now();
    th_host_signal(a, SIGTERM);
    int status = -1;
    assert_true(th_host_wait_exit(a, 10, &status));
    double exit_s = th_now() - term;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    printf("host A exited %.3f s after SIGTERM (grace 0.5 s)\n", exit_s);
    assert_false(it_host_listed("A"));
    assert_false(th_host_entry_exists(fx.c, IT_PREFIX, "A"));

    for (int i = 0; i < N; i++) {
        /* Released, not lost: B takes it without waiting for a lease or a burial. */
        assert_true(TH_WAIT_UNTIL(1.5, it_running_on(ids[i], "B", 2, 0) ||
                                           it_field_is(ids[i], "state", "SUCCESS")));
    }
    printf("SIGTERM of host A to its tasks running on host B: %.3f s\n", th_now() - term);
    for (int i = 0; i < N; i++) {
        const char *id = ids[i];
        assert_true(it_wait_state(id, "SUCCESS", 10));
        it_assert_ended_on(id, b, 2);
        it_assert_field(id, "attempt", "2");
        it_assert_field(id, "released", "1");
        assert_int_equal(it_field_ll(id, "attempt") - it_field_ll(id, "released"), 1);
        it_assert_one_terminal(id, "bgtask_done");
        assert_int_equal(assert_events_monotonic(id), 2);
        assert_true(result_number(id, "resumed_from") >= 2);
        assert_int_equal(ck_run_pid(id, 2), (int)b->pid);
        assert_int_equal(it_count_released(id, "A", 1), 1);
    }
    it_pass();
}

/*
 * A long grace: after one SIGTERM the host stops claiming but lets its attempts run; a
 * second SIGTERM releases them at once and the host exits quickly.
 */
static void test_second_sigterm(void **state)
{
    it_need_redis();
    enum { N = 2 };
    th_host_opts o = ck_opts("A");
    o.shutdown_grace_s = 60;
    th_host *a = ck_host_start(&o, true);
    char ids[N][37];
    char *args[N] = {"{\"steps\": 100, \"step_ms\": 50}", "{\"steps\": 100, \"step_ms\": 50}"};
    ck_submit_many("crash.steps", args, N, 0, ids);
    for (int i = 0; i < N; i++)
        assert_true(TH_WAIT_UNTIL(10, it_running_on(ids[i], "A", 1, 2)));
    o = ck_opts("B");
    th_host *b = ck_host_start(&o, true);

    th_host_signal(a, SIGTERM);
    assert_true(TH_WAIT_UNTIL(5, th_log_contains(a, "shutting down")));
    /* Draining: A takes nothing new, and its attempts go on. */
    char *echo = it_submit("demo.echo", "{}", NULL);
    assert_true(it_wait_state(echo, "SUCCESS", 10));
    it_assert_ended_on(echo, b, 1);
    free(echo);
    long long before = it_field_ll(ids[0], "progress_current");
    assert_true(TH_WAIT_UNTIL(5, it_field_ll(ids[0], "progress_current") >= before + 4));
    assert_true(it_host_alive(a));
    for (int i = 0; i < N; i++)
        assert_true(it_running_on(ids[i], "A", 1, 2));

    double second = th_now();
    th_host_signal(a, SIGTERM);
    int status = -1;
    assert_true(th_host_wait_exit(a, 5, &status));
    double exit_s = th_now() - second;
    printf("host A (grace 60 s) exited %.3f s after the second SIGTERM\n", exit_s);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(exit_s < 2.0);
    assert_false(it_host_listed("A"));
    for (int i = 0; i < N; i++) {
        assert_true(it_wait_state(ids[i], "SUCCESS", 15));
        it_assert_ended_on(ids[i], b, 2);
        it_assert_field(ids[i], "attempt", "2");
        it_assert_field(ids[i], "released", "1");
        it_assert_one_terminal(ids[i], "bgtask_done");
        assert_int_equal(assert_events_monotonic(ids[i]), 2);
    }
    it_pass();
}

/*
 * A handler that ignores the stop request at shutdown is released anyway a little after
 * the grace (the process exits with it still running), and another host finishes the task.
 */
static void test_stuck_handler_released(void **state)
{
    it_need_redis();
    th_host_opts o = ck_opts("A");
    o.shutdown_grace_s = 0.3;
    /* A's entry must outlive its release (~2.3 s after SIGTERM) even when a heartbeat comes
     * late under load: with a heartbeat every 2 s it lasts 5 s, so B cannot bury A's attempt
     * first and the release is what ends it. */
    o.heartbeat_s = 2;
    o.lease_s = 6;
    th_host *a = ck_host_start(&o, true);
    /* It spins and reports progress every 0.1 ms: always busy in the plugin's code or the
     * host's, never parked in a system call for long. */
    char *id = it_submit("crash.steps",
                         "{\"steps\": 50000, \"step_ms\": 0.1, \"ignore_cancel\": true, "
                         "\"spin\": true}",
                         NULL);
    assert_true(TH_WAIT_UNTIL(10, it_running_on(id, "A", 1, 2)));
    o = ck_opts("B");
    th_host *b = ck_host_start(&o, true);

    double term = th_now();
    th_host_signal(a, SIGTERM);
    int status = -1;
    assert_true(th_host_wait_exit(a, 10, &status));
    double exit_s = th_now() - term;
    printf("host A exited %.3f s after SIGTERM with a handler that ignores it (grace 0.3 s)\n",
           exit_s);
    if (!WIFEXITED(status))
        fail_msg("host A was killed by signal %d while a handler still ran", WTERMSIG(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(th_log_contains(a, "did not stop"));
    assert_true(it_wait_state(id, "SUCCESS", 10));
    it_assert_ended_on(id, b, 2);
    it_assert_field(id, "attempt", "2");
    it_assert_field(id, "released", "1");
    it_assert_one_terminal(id, "bgtask_done");
    assert_int_equal(assert_events_monotonic(id), 2);
    assert_int_equal(ck_run_pid(id, 2), (int)b->pid);
    free(id);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        CK_TEST(test_kill9_mid_progress),
        CK_TEST(test_sigstop_fenced),
        CK_TEST(test_poison_pill),
        CK_TEST(test_not_retriable_orphan),
        CK_TEST(test_sigterm_releases),
        CK_TEST(test_second_sigterm),
        CK_TEST(test_stuck_handler_released),
    };
    ck_filter();
    return cmocka_run_group_tests(tests, it_group_setup, it_group_teardown);
}

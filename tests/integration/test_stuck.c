/*
 * test_stuck.c - thread mode stays honest: the hostile test plugin loaded in thread mode (no
 * isolation). A handler that spins past its 1 s timeout cannot be stopped, but its attempt
 * ends FAILURE "did not stop" tasks.kill_grace later, its worker thread is counted as stuck
 * and replaced, other tasks keep running on the host's full complement of workers, and the
 * host still shuts down cleanly. A parallel task whose subtask hangs past the timeout ends
 * the same way, without waiting for that subtask.
 */
#include <signal.h>

#include "../harness/itest.h"

/* Host options: the hostile and crash test plugins in thread mode, kill_grace 1 s. */
static th_host_opts opts(const char *id, int workers)
{
    static char *plugins;
    char *crash = th_plugin_path("crash", true), *hostile = th_plugin_path("hostile", true);
    free(plugins);
    assert_true(asprintf(&plugins,
                         "{ name = \"crash\"; file = \"%s\"; }, "
                         "{ name = \"hostile\"; file = \"%s\"; }",
                         crash, hostile) > 0);
    free(crash);
    free(hostile);
    return (th_host_opts){.id = id, .workers = workers, .kill_grace_s = 1, .plugins = plugins,
                          .extra = "http: { listen = \"127.0.0.1:0\"; };"};
}

static bool terminal(const char *id) { return th_task_terminal(fx.c, IT_PREFIX, id); }

/* The body of GET http://<the host's address>/path (malloc'd). */
static char *http_get(const th_host *h, const char *path)
{
    assert_true(TH_WAIT_UNTIL(10, th_log_contains(h, "serving on http://")));
    char *log = it_read_file(h->log);
    const char *p = strstr(log, "serving on http://") + strlen("serving on http://");
    char url[256];
    snprintf(url, sizeof url, "http://%.*s%s", (int)strcspn(p, "/"), p, path);
    free(log);
    char *argv[] = {"/usr/bin/curl", "-s", "--max-time", "10", url, NULL};
    char *out = NULL;
    assert_int_equal(th_run(20, argv, &out, NULL), 0);
    return out;
}

/*
 * A single attempt spinning past its timeout: FAILURE "did not stop" within timeout +
 * kill_grace + 1 s of its start, one terminal event; the stuck thread shows in /metrics and
 * /healthz; two tasks then run side by side on a host of two workers (the replacement);
 * and SIGTERM still ends the host with status 0.
 */
static void test_spin_written_off(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", 2);
    th_host *a = it_host_start(&o);
    char *id = it_submit("hostile.spin", NULL, NULL);
    assert_true(TH_WAIT_UNTIL(15, terminal(id)));
    it_assert_one_terminal(id, "bgtask_failed");
    long long ran = it_field_ll(id, "finished_ms") - it_field_ll(id, "started_ms");
    printf("spinning task in thread mode: %lld ms from its start to FAILURE (timeout 1 s, "
           "kill_grace 1 s)\n", ran);
    assert_true(ran <= 3000);
    char *err = it_field(id, "error");
    assert_non_null(strstr(err, "timed out after 1s; the handler did not stop within "
                                "kill_grace 1 s and its worker thread was written off"));
    free(err);
    char *metrics = http_get(a, "/metrics");
    assert_non_null(strstr(metrics, "bgtask_stuck_workers 1"));
    free(metrics);
    char *health = http_get(a, "/healthz");
    assert_non_null(strstr(health, "\"stuck_workers\":1"));
    free(health);
    /* Two workers still take jobs: two tasks of 1.5 s run at once. */
    char *s1 = it_submit("crash.steps", "{\"steps\": 15, \"step_ms\": 100}", NULL);
    char *s2 = it_submit("crash.steps", "{\"steps\": 15, \"step_ms\": 100}", NULL);
    assert_true(TH_WAIT_UNTIL(10, it_running_on(s1, "A", 1, 1) && it_running_on(s2, "A", 1, 1)));
    assert_true(it_wait_state(s1, "SUCCESS", 20) && it_wait_state(s2, "SUCCESS", 20));
    th_host_signal(a, SIGTERM);
    int status;
    assert_true(th_host_wait_exit(a, 15, &status));
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(th_log_contains(a, "exiting with handler(s) still running"));
    free(s1);
    free(s2);
    free(id);
    it_pass();
}

/*
 * A parallel task with a 1 s timeout whose subtask hangs ignoring it: the subtask is written
 * off as failed, the task ends FAILURE (timed out) without waiting for it, and the others
 * finished.
 */
static void test_subtask_written_off(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", 4);
    it_host_start(&o);
    char *id = it_submit("hostile.partimed", "{\"items\": 4, \"hang\": [2]}", NULL);
    assert_true(TH_WAIT_UNTIL(15, terminal(id)));
    it_assert_one_terminal(id, "bgtask_failed");
    long long ran = it_field_ll(id, "finished_ms") - it_field_ll(id, "started_ms");
    assert_true(ran <= 3000);
    char *msg = it_field(id, "error");
    assert_non_null(strstr(msg, "timed out after 1s"));
    free(msg);
    char *v = th_subtask_field(fx.c, IT_PREFIX, id, 2, "message");
    assert_non_null(v);
    assert_non_null(strstr(v, "did not stop within kill_grace 1 s"));
    free(v);
    v = th_subtask_field(fx.c, IT_PREFIX, id, 2, "state");
    assert_string_equal(v, "FAILURE");
    free(v);
    free(id);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_spin_written_off),
        IT_TEST(test_subtask_written_off),
    };
    return cmocka_run_group_tests(tests, it_group_setup, it_group_teardown);
}

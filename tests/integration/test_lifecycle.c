/*
 * test_lifecycle.c - single tasks from submission to their one terminal state,
 * on real bgtaskd processes with the demo plugin: success with a result,
 * failure with a message, RETRY with backoff until success, max_attempts,
 * cancellation while running and before a claim, a handler no host has yet,
 * progress (events, throttling, the persisted last value), delayed tasks, and
 * a task's place in the lists after a run longer than a heartbeat.
 */
#include "../harness/itest.h"

/* The JSON args must come back as the result, value for value. */
static void test_success_with_result(void **state)
{
    it_need_redis();
    th_host *h = it_host_start(NULL);
    const char *args = "{\"name\":\"x\",\"list\":[1,2.5,\"three\"],\"nested\":{\"ok\":true}}";
    char *id = it_submit("demo.echo", args, NULL);
    assert_true(it_wait_state(id, "SUCCESS", 10));

    cJSON *want = cJSON_Parse(args), *got = it_field_json(id, "result");
    assert_non_null(got);
    assert_true(cJSON_Compare(want, got, true));
    it_assert_field(id, "attempt", "1");
    it_assert_field(id, "released", "0");
    it_assert_ended_on(id, h, 1);
    it_assert_field(id, "error", "");
    assert_true(it_field_ll(id, "finished_ms") >= it_field_ll(id, "started_ms"));
    assert_true(it_field_ll(id, "started_ms") >= it_field_ll(id, "created_ms"));
    it_assert_one_terminal(id, "bgtask_done");

    /* The done event carries the result too, and the task left its queue for P:done. */
    cJSON *evs = it_events(id);
    const cJSON *done = cJSON_GetArrayItem(evs, cJSON_GetArraySize(evs) - 1);
    assert_true(cJSON_Compare(want, cJSON_GetObjectItem(it_ev_data(done), "result"), true));
    assert_int_equal((int)it_ev_number(done, "attempt"), 1);
    assert_string_equal(cJSON_GetObjectItem(it_ev_data(done), "handler")->valuestring, "demo.echo");
    assert_true(th_queue_score(fx.c, IT_PREFIX, "demo.echo", id) < 0);
    assert_true(th_finished_at(fx.c, IT_PREFIX, id) > 0);

    /* bgtaskctl reads the same record, with the result as a JSON value. */
    char *out = NULL;
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "status", id, "--json", NULL), 0);
    cJSON *st = cJSON_Parse(out);
    assert_non_null(st);
    assert_string_equal(cJSON_GetObjectItem(st, "state")->valuestring, "SUCCESS");
    assert_true(cJSON_Compare(want, cJSON_GetObjectItem(st, "result"), true));
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "watch", id, NULL), 0);
    cJSON_Delete(st);
    free(out);
    cJSON_Delete(evs);
    cJSON_Delete(want);
    cJSON_Delete(got);
    free(id);
    it_pass();
}

/* A final failure keeps the handler's message, and is not retried. */
static void test_failure_with_message(void **state)
{
    it_need_redis();
    it_host_start(NULL);
    char *id = it_submit("demo.fail", "{\"message\": \"the disk is on fire\"}", NULL);
    assert_true(it_wait_state(id, "FAILURE", 10));
    it_assert_field(id, "error", "the disk is on fire");
    it_assert_field(id, "message", "the disk is on fire");
    it_assert_field(id, "attempt", "1");
    it_assert_field(id, "result", "");
    it_assert_one_terminal(id, "bgtask_failed");
    cJSON *evs = it_events(id);
    const cJSON *last = cJSON_GetArrayItem(evs, cJSON_GetArraySize(evs) - 1);
    assert_string_equal(it_ev_message(last), "the disk is on fire");
    cJSON_Delete(evs);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "watch", id, NULL), 1);
    free(id);

    /* Bad args are a failure that names the field, not a crash. */
    id = it_submit("demo.sleep", "{\"steps\": \"many\"}", NULL);
    assert_true(it_wait_state(id, "FAILURE", 10));
    char *err = it_field(id, "error");
    assert_non_null(strstr(err, "args.steps"));
    free(err);
    it_assert_one_terminal(id, "bgtask_failed");
    free(id);
    it_pass();
}

/*
 * demo.flaky n=3 asks for a retry on attempts 1 and 2. Each retry is one
 * bgtask_updated event with the handler's message, and the next claim waits
 * for the backoff: retry k waits base * 2^(k-1) times a jitter of 50-100%.
 */
static void test_retry_then_success(void **state)
{
    it_need_redis();
    const double base = 0.3;
    it_host_start(&(th_host_opts){.backoff_base_s = base, .backoff_max_s = 5});
    char *id = it_submit("demo.flaky", "{\"n\": 3}", NULL);
    assert_true(it_wait_state(id, "SUCCESS", 15));
    it_assert_field(id, "attempt", "3");
    it_assert_field(id, "released", "0");
    cJSON *res = it_field_json(id, "result");
    assert_int_equal(cJSON_GetObjectItem(res, "attempt")->valueint, 3);
    cJSON_Delete(res);
    it_assert_one_terminal(id, "bgtask_done");

    /* Events stored: two retries (attempts 1 and 2), done (attempt 3). ("Task started" is
     * published to live subscribers, not stored: a late reader makes it from the record.) */
    cJSON *evs = it_events(id);
    double retry_ms[2] = {0, 0};
    int retries = 0;
    const cJSON *e;
    cJSON_ArrayForEach (e, evs) {
        if (strcmp(it_ev_name(e), "bgtask_updated") != 0 || !strstr(it_ev_message(e), "not yet"))
            continue;
        assert_true(retries < 2);
        assert_int_equal((int)it_ev_number(e, "attempt"), retries + 1);
        char want[64];
        snprintf(want, sizeof want, "attempt %d of 3: not yet", retries + 1);
        assert_non_null(strstr(it_ev_message(e), want));
        assert_non_null(strstr(it_ev_message(e), "retrying in"));
        /* With the progress, as every bgtask_updated (issue 8, item 12). */
        assert_true(it_ev_number(e, "current_progress") >= 0);
        assert_true(it_ev_number(e, "total_progress") >= 0);
        retry_ms[retries++] = cJSON_GetObjectItem(e, "ms")->valuedouble;
    }
    assert_int_equal(retries, 2);
    assert_int_equal(cJSON_GetArraySize(evs), 3);

    /* Backoff observed, by Redis' clock: the second retry event comes at least the first
     * backoff after the first, and attempt 3 was claimed at least the second backoff after
     * the second retry. (The 1 ms is the rounding of the backoff to whole ms.) */
    double gap1 = retry_ms[1] - retry_ms[0];
    double gap2 = (double)it_field_ll(id, "started_ms") - retry_ms[1];
    printf("retry gaps: %.0f ms (backoff >= %.0f), %.0f ms (backoff >= %.0f)\n", gap1, base * 500,
           gap2, base * 1000);
    assert_true(gap1 >= base * 0.5 * 1000 - 1);
    assert_true(gap2 >= base * 1.0 * 1000 - 1);
    /* ...and not absurdly more than its cap (base * 2^(k-1)) plus scheduling slack. */
    assert_true(gap1 <= base * 1000 + 2000);
    assert_true(gap2 <= base * 2000 + 2000);
    cJSON_Delete(evs);
    free(id);
    it_pass();
}

/* --max-attempts caps the claims: the last RETRY becomes FAILURE naming the cause. */
static void test_max_attempts(void **state)
{
    it_need_redis();
    it_host_start(NULL);
    char *id = it_submit("demo.flaky", "{\"n\": 5}", "--max-attempts", "2", NULL);
    char *ok = it_submit("demo.flaky", "{\"n\": 3}", "--max-attempts", "3", NULL);
    assert_true(it_wait_state(id, "FAILURE", 15));
    it_assert_field(id, "attempt", "2");
    it_assert_field(id, "max_attempts", "2");
    char *err = it_field(id, "error");
    assert_non_null(strstr(err, "gave up after 2 attempts"));
    assert_non_null(strstr(err, "attempt 2 of 5: not yet"));
    free(err);
    it_assert_one_terminal(id, "bgtask_failed");
    /* The one retry ("Task started" is not stored). */
    assert_int_equal(th_count_events(fx.c, IT_PREFIX, id, "bgtask_updated"), 1);

    /* Exactly at the cap still succeeds. */
    assert_true(it_wait_state(ok, "SUCCESS", 15));
    it_assert_field(ok, "attempt", "3");
    it_assert_one_terminal(ok, "bgtask_done");

    /* Without --max-attempts, the handler's own default (10 for demo.flaky) applies. */
    char *dflt = it_submit("demo.flaky", "{\"n\": 4}", NULL);
    assert_true(it_wait_state(dflt, "SUCCESS", 15));
    it_assert_field(dflt, "attempt", "4");
    it_assert_field(dflt, "max_attempts", ""); /* none of its own: its handler's */
    free(dflt);
    free(ok);
    free(id);
    it_pass();
}

/* Wait until the task runs on a host and has persisted at least `step` steps. */
static bool running_at(const char *id, const char *owner, long long step)
{
    return it_field_is(id, "state", "ONGOING") && it_field_is(id, "owner", owner) &&
           it_field_ll(id, "progress_current") >= step;
}

/* A cancel reaches the running handler through the host's control channel. */
static void test_cancel_running(void **state)
{
    it_need_redis();
    th_host *h = it_host_start(NULL);
    char *id = it_submit("demo.sleep", "{\"seconds\": 60, \"steps\": 600}", NULL);
    assert_true(TH_WAIT_UNTIL(10, running_at(id, h->id, 2)));

    char *out = NULL;
    double t0 = th_now();
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "cancel", id, NULL), 0);
    assert_non_null(strstr(out, "cancel requested"));
    assert_non_null(strstr(out, h->id));
    free(out);
    assert_true(it_wait_state(id, "CANCELLED", 5));
    double took = th_now() - t0;
    printf("cancel of a running task took %.3f s\n", took);
    assert_true(took < 1.5);
    it_assert_one_terminal(id, "bgtask_cancelled");
    it_assert_field(id, "attempt", "1");
    assert_true(th_queue_score(fx.c, IT_PREFIX, "demo.sleep", id) < 0);

    /* The handler itself stopped: it says so in the host's log. */
    assert_true(TH_WAIT_UNTIL(5, th_log_contains(h, "cancelled during step")));
    assert_true(th_log_contains(h, "cancel requested"));
    long long at = it_field_ll(id, "progress_current");
    assert_true(at >= 2 && at < 600);

    /* A second cancel changes nothing. */
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "cancel", id, NULL), 0);
    assert_string_equal(out, "already CANCELLED\n");
    free(out);

    /* The host is free for other work. */
    char *next = it_submit("demo.echo", "{}", NULL);
    assert_true(it_wait_state(next, "SUCCESS", 10));
    it_assert_field(id, "state", "CANCELLED");
    it_assert_one_terminal(id, "bgtask_cancelled");
    free(next);
    free(id);
    it_pass();
}

/* An unclaimed task is cancelled at once, with or without a host, and never runs. */
static void test_cancel_before_claim(void **state)
{
    it_need_redis();
    /* No host at all. */
    char *id = it_submit("demo.echo", "{\"a\": 1}", NULL);
    char *out = NULL;
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "cancel", id, NULL), 0);
    assert_string_equal(out, "cancelled\n");
    free(out);
    it_assert_field(id, "state", "CANCELLED");
    it_assert_field(id, "attempt", "0");
    it_assert_field(id, "owner", "");
    it_assert_one_terminal(id, "bgtask_cancelled");
    assert_true(th_queue_score(fx.c, IT_PREFIX, "demo.echo", id) < 0);

    /* A host running and a delayed task it has not claimed yet. */
    th_host *h = it_host_start(NULL);
    char *delayed = it_submit("demo.echo", "{\"b\": 2}", "--delay", "30", NULL);
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "cancel", delayed, NULL), 0);
    assert_string_equal(out, "cancelled\n");
    free(out);
    it_assert_field(delayed, "state", "CANCELLED");
    it_assert_one_terminal(delayed, "bgtask_cancelled");

    /* The host runs a task submitted after both; neither cancelled task was touched. */
    char *after = it_submit("demo.echo", "{}", NULL);
    assert_true(it_wait_state(after, "SUCCESS", 10));
    it_assert_field(id, "attempt", "0");
    it_assert_field(delayed, "attempt", "0");
    it_assert_field(delayed, "owner", "");
    assert_false(th_log_contains(h, id));
    assert_false(th_log_contains(h, delayed));
    it_assert_one_terminal(id, "bgtask_cancelled");
    it_assert_one_terminal(delayed, "bgtask_cancelled");
    free(after);
    free(delayed);
    free(id);
    it_pass();
}

/*
 * A task for a handler no running host has stays ONGOING and unclaimed (no host
 * fails it) until a host that has the handler starts.
 */
static void test_unknown_handler_waits(void **state)
{
    it_need_redis();
    th_host *a =
        it_host_start(&(th_host_opts){.id = "files-only", .plugins = "{ name = \"files\"; }"});
    char *id = it_submit("demo.echo", "{\"v\": 42}", NULL);

    /* Host a is claiming: a files task submitted after it runs to the end... */
    char *args = NULL;
    assert_true(asprintf(&args, "{\"path\": \"%s\"}", a->conf) > 0);
    char *files = it_submit("files.checksum", args, NULL);
    assert_true(it_wait_state(files, "SUCCESS", 10));
    it_assert_ended_on(files, a, 1);
    /* ...and a second one: its dispatcher has been round its claim loop several times. */
    char *files2 = it_submit("files.checksum", args, NULL);
    assert_true(it_wait_state(files2, "SUCCESS", 10));

    /* The demo task was never claimed, nor failed. */
    it_assert_field(id, "state", "ONGOING");
    it_assert_field(id, "attempt", "0");
    it_assert_field(id, "owner", "");
    assert_int_equal(th_count_events(fx.c, IT_PREFIX, id, NULL), 0); /* none stored */
    assert_true(th_queue_score(fx.c, IT_PREFIX, "demo.echo", id) > 0);
    assert_false(th_log_contains(a, id));
    char *out = NULL;
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "hosts", "--json", NULL), 0);
    assert_non_null(strstr(out, "files.checksum"));
    assert_null(strstr(out, "demo.echo"));
    free(out);

    /* A host with the demo plugin starts: it runs the task, with attempt 1. */
    th_host *b = it_host_start(&(th_host_opts){.id = "with-demo"});
    assert_true(it_wait_state(id, "SUCCESS", 10));
    it_assert_ended_on(id, b, 1);
    it_assert_field(id, "attempt", "1");
    it_assert_one_terminal(id, "bgtask_done");
    cJSON *res = it_field_json(id, "result");
    assert_int_equal(cJSON_GetObjectItem(res, "v")->valueint, 42);
    cJSON_Delete(res);
    assert_false(th_log_contains(a, id));
    free(files2);
    free(files);
    free(args);
    free(id);
    it_pass();
}

/*
 * Progress: bgtask_updated events with increasing current, strictly ordered,
 * the last one (N/N) before the terminal event, and the last value persisted
 * in the record.
 */
static void test_progress_events(void **state)
{
    it_need_redis();
    it_host_start(&(th_host_opts){.progress_interval_s = 0.05});
    const int steps = 6;
    char *id = it_submit("demo.sleep", "{\"seconds\": 0.6, \"steps\": 6}", NULL);
    assert_true(it_wait_state(id, "SUCCESS", 10));
    it_assert_one_terminal(id, "bgtask_done");
    it_assert_field(id, "progress_current", "6");
    it_assert_field(id, "progress_total", "6");

    cJSON *evs = it_events(id);
    int n = cJSON_GetArraySize(evs), progress = 0;
    double last_current = 0, last_ms = 0;
    const cJSON *e;
    int i = 0;
    cJSON_ArrayForEach (e, evs) {
        double ms = cJSON_GetObjectItem(e, "ms")->valuedouble;
        assert_true(ms >= last_ms);
        last_ms = ms;
        if (i < n - 1) {
            /* Every event before the last is a progress report ("Task started" is not stored). */
            assert_string_equal(it_ev_name(e), "bgtask_updated");
            double cur = it_ev_number(e, "current_progress");
            assert_true(cur > last_current);
            assert_true(it_ev_number(e, "total_progress") == steps);
            char want[32];
            snprintf(want, sizeof want, "step %d/%d", (int)cur, steps);
            assert_string_equal(it_ev_message(e), want);
            last_current = cur;
            progress++;
        } else {
            assert_string_equal(it_ev_name(e), "bgtask_done");
        }
        i++;
    }
    /* Steps 0.1 s apart with a 0.05 s interval: (nearly) every step is written. */
    assert_true(progress >= 3);
    assert_true(last_current == steps);
    cJSON_Delete(evs);
    free(id);
    it_pass();
}

/* Progress is throttled: at most about one write per progress_interval, the last always. */
static void test_progress_throttled(void **state)
{
    it_need_redis();
    it_host_start(&(th_host_opts){.progress_interval_s = 0.1});
    char *id = it_submit("demo.sleep", "{\"seconds\": 0.5, \"steps\": 250}", NULL);

    /* While it runs, a reader sees persisted progress from the record. */
    assert_true(TH_WAIT_UNTIL(10, it_field_ll(id, "progress_current") > 0 ||
                                      it_field_is(id, "state", "SUCCESS")));
    assert_true(it_wait_state(id, "SUCCESS", 10));
    it_assert_field(id, "progress_current", "250");
    it_assert_field(id, "progress_total", "250");
    it_assert_one_terminal(id, "bgtask_done");
    int updates = th_count_events(fx.c, IT_PREFIX, id, "bgtask_updated");
    printf("250 progress reports in 0.5 s became %d event(s)\n", updates - 1);
    /* 0.5 s / 0.1 s = 5 intervals; allow slack for a slow machine, never 250. */
    assert_true(updates - 1 >= 1);
    assert_true(updates - 1 <= 20);

    cJSON *evs = it_events(id);
    int n = cJSON_GetArraySize(evs);
    const cJSON *final = cJSON_GetArrayItem(evs, n - 2);
    assert_string_equal(it_ev_name(final), "bgtask_updated");
    assert_true(it_ev_number(final, "current_progress") == 250);
    assert_string_equal(it_ev_message(final), "step 250/250");
    cJSON_Delete(evs);
    free(id);
    it_pass();
}

/* A task with --delay 1 is not claimed before its time and is claimed after. */
static void test_delayed_task(void **state)
{
    it_need_redis();
    th_host *h = it_host_start(NULL);
    long long before = it_redis_ms();
    char *id = it_submit("demo.echo", "{\"late\": true}", "--delay", "1", NULL);
    double score = th_queue_score(fx.c, IT_PREFIX, "demo.echo", id);
    long long created = it_field_ll(id, "created_ms");
    assert_true(score >= (double)before + 1000);
    assert_true(score == (double)created + 1000);

    assert_true(it_wait_state(id, "SUCCESS", 10));
    it_assert_ended_on(id, h, 1);
    it_assert_field(id, "attempt", "1");
    /* Claimed at its time by Redis' clock, and soon after it. */
    long long started = it_field_ll(id, "started_ms");
    printf("delayed task claimed %lld ms after submission\n", started - created);
    assert_true(started - created >= 1000);
    assert_true(started - created < 3000);
    it_assert_one_terminal(id, "bgtask_done");
    free(id);
    it_pass();
}

/* Many tasks at once: each ends in one terminal state with one terminal event. */
static void test_one_terminal_event_each(void **state)
{
    it_need_redis();
    it_host_start(&(th_host_opts){.workers = 4});
    enum { N = 24 };
    char *ids[N];
    static const char *const handlers[] = {"demo.echo", "demo.fail", "demo.flaky", "demo.sleep"};
    static const char *const args[] = {"{\"i\": 1}", "{}", "{\"n\": 2}",
                                       "{\"seconds\": 0.05, \"steps\": 5}"};
    static const char *const events[] = {"bgtask_done", "bgtask_failed", "bgtask_done",
                                         "bgtask_done"};
    for (int i = 0; i < N; i++)
        ids[i] = it_submit(handlers[i % 4], args[i % 4], NULL);
    for (int i = 0; i < N; i++)
        assert_true(TH_WAIT_UNTIL(15, th_task_terminal(fx.c, IT_PREFIX, ids[i])));
    for (int i = 0; i < N; i++) {
        it_assert_one_terminal(ids[i], events[i % 4]);
        free(ids[i]);
    }
    it_pass();
}

/*
 * A task that runs across several heartbeats (0.5 s here), while its
 * handler has nothing else queued or kept in its shard: once it ends, the
 * stats and an unfiltered list show it. (Heartbeats forget a handler whose
 * queue and done list are both empty; the end must list it again.)
 */
static void test_listed_after_a_long_run(void **state)
{
    it_need_redis();
    it_host_start(NULL);
    char *id = it_submit("demo.sleep", "{\"seconds\": 1.5, \"steps\": 3}", NULL);
    assert_true(it_wait_state(id, "SUCCESS", 20));
    char *out = it_ctl(0, NULL, "stats", "--json", NULL);
    cJSON *st = cJSON_Parse(out), *h;
    bool found = false;
    cJSON_ArrayForEach (h, cJSON_GetObjectItem(st, "handlers"))
        found |= strcmp(cJSON_GetObjectItem(h, "handler")->valuestring, "demo.sleep") == 0 &&
                 cJSON_GetObjectItem(h, "finished")->valuedouble == 1;
    if (!found)
        fail_msg("stats: demo.sleep with 1 finished task is missing:\n%s", out);
    cJSON_Delete(st);
    free(out);
    out = it_ctl(0, NULL, "list", "--json", NULL);
    if (!strstr(out, id))
        fail_msg("list: task %s is missing:\n%s", id, out);
    free(out);
    free(id);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_success_with_result),     IT_TEST(test_failure_with_message),
        IT_TEST(test_retry_then_success),      IT_TEST(test_max_attempts),
        IT_TEST(test_cancel_running),          IT_TEST(test_cancel_before_claim),
        IT_TEST(test_unknown_handler_waits),   IT_TEST(test_progress_events),
        IT_TEST(test_progress_throttled),      IT_TEST(test_delayed_task),
        IT_TEST(test_one_terminal_event_each), IT_TEST(test_listed_after_a_long_run),
    };
    return cmocka_run_group_tests(tests, it_group_setup, it_group_teardown);
}

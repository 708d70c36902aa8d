/*
 * test_ops.c - the operator's write operations against a real bgtaskd and
 * Redis, over HTTP and bgtaskctl: retry of a failed single task (a new
 * attempt, the cap counted from the retry), retry in bulk, purge, cancel of
 * all of a handler's tasks, pause and resume of a handler; and their bad
 * inputs, which answer with a message naming the field and change nothing.
 */
#include "../harness/itest.h"

static char base[64]; /* "http://127.0.0.1:<port>" of the test's host */

/* The test's host ("ops": demo, HTTP on a free port, queue gauges read at every scrape). */
static th_host *host_start(void)
{
    th_host *h = it_host_start(&(th_host_opts){
        .id = "ops", .extra = "http: { listen = \"127.0.0.1:0\"; metrics_interval = 0.0; };"});
    int port = th_host_http_port(h);
    assert_true(port > 0);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    return h;
}

/* An API call that must answer `want`: its body as JSON (caller deletes). */
static cJSON *api(int want, const char *method, const char *path, const char *body)
{
    char url[512], *out = NULL;
    snprintf(url, sizeof url, "%s%s", base, path);
    int status = th_http(method, url, NULL, body, &out);
    if (status != want)
        fail_msg("%s %s %s: %d, want %d: %s", method, path, body ? body : "", status, want,
                 out ? out : "");
    cJSON *j = cJSON_Parse(out);
    if (!j)
        fail_msg("%s %s: not JSON: %s", method, path, out);
    free(out);
    return j;
}

/* A refusal: status want, and an error message holding needle. */
static void api_error(int want, const char *method, const char *path, const char *body,
                      const char *needle)
{
    cJSON *j = api(want, method, path, body);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    if (!cJSON_IsString(m) || !strstr(m->valuestring, needle))
        fail_msg("%s %s: message '%s' lacks '%s'", method, path,
                 cJSON_IsString(m) ? m->valuestring : "", needle);
    cJSON_Delete(j);
}

static double num(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static const char *str(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static bool truth(const cJSON *o, const char *f)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, f));
}

/* Whether id is among the task_ids of an answer. */
static bool lists(const cJSON *a, const char *list, const char *id)
{
    const cJSON *e;
    cJSON_ArrayForEach (e, cJSON_GetObjectItemCaseSensitive(a, list))
        if (cJSON_IsString(e) && strcmp(e->valuestring, id) == 0)
            return true;
    return false;
}

/* Events of task id named name with a message holding needle. */
static int count_events(const char *id, const char *name, const char *needle)
{
    cJSON *evs = it_events(id);
    const cJSON *e;
    int n = 0;
    cJSON_ArrayForEach (e, evs)
        n += strcmp(it_ev_name(e), name) == 0 && (!needle || strstr(it_ev_message(e), needle));
    cJSON_Delete(evs);
    return n;
}

/* ---- retry of one task ---- */

/*
 * A single task that gave up after its max attempts runs again as a new
 * attempt: attempt 3 succeeds where attempt 2 gave up (demo.flaky succeeds on
 * attempt 3), so the cap counted from the retry; one bgtask_updated says so;
 * each run has its one terminal event.
 */
static void test_retry_failed_single(void **state)
{
    it_need_redis();
    host_start();
    char *id = it_submit("demo.flaky", "{\"n\": 3}", "--max-attempts", "2", NULL);
    assert_true(it_wait_state(id, "FAILURE", 30));
    it_assert_field(id, "attempt", "2");
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s/retry", id);
    cJSON *a = api(202, "POST", path, NULL);
    assert_string_equal(str(a, "kind"), "single");
    assert_string_equal(str(a, "state"), "ONGOING");
    assert_true(num(a, "retrying") == 1);
    cJSON_Delete(a);
    assert_true(it_wait_state(id, "SUCCESS", 30));
    it_assert_field(id, "attempt", "3");
    it_assert_field(id, "retries", "1");
    char tpath[128];
    snprintf(tpath, sizeof tpath, "/v1/tasks/%s", id);
    cJSON *rec = api(200, "GET", tpath, NULL);
    assert_true(num(rec, "retries") == 1);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(rec, "error")));
    cJSON_Delete(rec);
    assert_int_equal(count_events(id, "bgtask_updated", "Retried by an operator (was FAILURE)"), 1);
    assert_int_equal(count_events(id, "bgtask_failed", NULL), 1);
    assert_int_equal(count_events(id, "bgtask_done", NULL), 1);

    /* Succeeded: nothing to retry (409 with its reason), and nothing changes. */
    char *before = th_task_snapshot(fx.c, IT_PREFIX);
    a = api(409, "POST", path, NULL);
    assert_string_equal(str(cJSON_GetObjectItemCaseSensitive(a, "error"), "reason"),
                        "nothing_to_retry");
    cJSON_Delete(a);
    char *err = NULL;
    free(it_ctl(1, &err, "retry", id, NULL));
    assert_non_null(strstr(err, "did not fail"));
    free(err);
    char *after = th_task_snapshot(fx.c, IT_PREFIX);
    assert_string_equal(before, after);
    free(before);
    free(after);
    api_error(404, "POST", "/v1/tasks/00000000-0000-4000-8000-000000000000/retry", NULL,
              "not found");

    /* Running: 409 "running". */
    char *slow = it_submit("demo.sleep", "{\"seconds\": 30}", NULL);
    assert_true(TH_WAIT_UNTIL(20, it_field_is(slow, "attempt", "1")));
    snprintf(path, sizeof path, "/v1/tasks/%s/retry", slow);
    a = api(409, "POST", path, NULL);
    assert_string_equal(str(cJSON_GetObjectItemCaseSensitive(a, "error"), "reason"), "running");
    cJSON_Delete(a);
    free(it_ctl(0, NULL, "cancel", slow, NULL));
    assert_true(it_wait_state(slow, "CANCELLED", 20));

    /* A cancelled one runs again from bgtaskctl, and --json answers as HTTP does. */
    char *out = it_ctl(0, NULL, "--json", "retry", slow, NULL);
    a = cJSON_Parse(out);
    assert_string_equal(str(a, "kind"), "single");
    assert_true(num(a, "retrying") == 1);
    cJSON_Delete(a);
    free(out);
    assert_true(TH_WAIT_UNTIL(20, it_field_is(slow, "attempt", "2")));
    assert_int_equal(count_events(slow, "bgtask_updated", "(was CANCELLED)"), 1);
    free(it_ctl(0, NULL, "cancel", slow, NULL));
    assert_true(it_wait_state(slow, "CANCELLED", 20));
    free(slow);
    free(id);
    it_pass();
}

/* ---- retry in bulk ---- */

static void test_retry_bulk(void **state)
{
    it_need_redis();
    host_start();
    char *failed[3], *ok = it_submit("demo.echo", "{}", NULL);
    for (int i = 0; i < 3; i++)
        failed[i] = it_submit("demo.fail", "{}", NULL);
    for (int i = 0; i < 3; i++)
        assert_true(it_wait_state(failed[i], "FAILURE", 30));
    assert_true(it_wait_state(ok, "SUCCESS", 30));

    /* Bad input: the field is named, and nothing changes. */
    char *before = th_task_snapshot(fx.c, IT_PREFIX);
    static const struct {
        const char *body, *needle;
    } bad[] = {
        {"{}", "handler is required"},
        {"{\"handler\": \"Demo!\"}", "invalid handler name"},
        {"{\"handler\": \"demo.fail\", \"state\": \"SUCCESS\"}", "state must be FAILURE or"},
        {"{\"handler\": \"demo.fail\", \"since\": \"7 days\"}", "since must be a time"},
        {"{\"handler\": \"demo.fail\", \"until\": true}", "until must be"},
        {"{\"handler\": \"demo.fail\", \"limit\": 0}", "limit must be"},
        {"{\"handler\": \"demo.fail\", \"dry_run\": 1}", "dry_run must be"},
        {"{\"handler\": \"demo.fail\", \"ids\": []}", "unknown field 'ids'"},
        {"{\"handler\": \"demo.fail\", \"since\": \"1h\", \"until\": \"2h\"}",
         "since must be before"},
        {"[1]", "must be a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        api_error(400, "POST", "/v1/tasks/retry", bad[i].body, bad[i].needle);
    char *err = NULL;
    free(it_ctl(2, &err, "retry", "--handler", "demo.fail", "--since", "7 days", NULL));
    assert_non_null(strstr(err, "--since must be a time"));
    free(err);
    free(it_ctl(2, &err, "retry", "--state", "FAILURE", NULL));
    assert_non_null(strstr(err, "retry needs a task id, or --handler"));
    free(err);
    char *after = th_task_snapshot(fx.c, IT_PREFIX);
    assert_string_equal(before, after);
    free(after);

    /* A dry run counts (200) and changes nothing; the CLI says the same. */
    cJSON *a = api(200, "POST", "/v1/tasks/retry",
                   "{\"handler\": \"demo.fail\", \"since\": \"1h\", \"dry_run\": true}");
    assert_true(num(a, "matched") == 3 && num(a, "retried") == 0);
    assert_true(truth(a, "dry_run") && !truth(a, "truncated"));
    for (int i = 0; i < 3; i++)
        assert_true(lists(a, "task_ids", failed[i]));
    cJSON_Delete(a);
    char *out = it_ctl(0, NULL, "retry", "--handler", "demo.fail", "--dry-run", NULL);
    assert_non_null(strstr(out, "would retry 3 task(s):"));
    assert_non_null(strstr(out, failed[0]));
    free(out);
    after = th_task_snapshot(fx.c, IT_PREFIX);
    assert_string_equal(before, after);
    free(after);
    free(before);
    /* Nothing of another state, or of the future. */
    a = api(200, "POST", "/v1/tasks/retry",
            "{\"handler\": \"demo.fail\", \"state\": \"CANCELLED\", \"dry_run\": true}");
    assert_true(num(a, "matched") == 0);
    cJSON_Delete(a);
    a = api(200, "POST", "/v1/tasks/retry",
            "{\"handler\": \"demo.fail\", \"until\": 1000, \"dry_run\": true}");
    assert_true(num(a, "matched") == 0);
    cJSON_Delete(a);

    /* Two of them (limit): truncated; then the CLI retries the rest. */
    a = api(202, "POST", "/v1/tasks/retry", "{\"handler\": \"demo.fail\", \"limit\": 2}");
    assert_true(num(a, "matched") == 3 && num(a, "retried") == 2 && truth(a, "truncated"));
    cJSON_Delete(a);
    assert_true(TH_WAIT_UNTIL(30, count_events(failed[0], "bgtask_failed", NULL) +
                                          count_events(failed[1], "bgtask_failed", NULL) +
                                          count_events(failed[2], "bgtask_failed", NULL) ==
                                      5));
    out = it_ctl(0, NULL, "retry", "--handler", "demo.fail", NULL);
    assert_non_null(strstr(out, "retried 3 task(s) of 3 matched"));
    free(out);
    assert_true(TH_WAIT_UNTIL(30, count_events(failed[0], "bgtask_failed", NULL) +
                                          count_events(failed[1], "bgtask_failed", NULL) +
                                          count_events(failed[2], "bgtask_failed", NULL) ==
                                      8));
    for (int i = 0; i < 3; i++) {
        assert_true(it_wait_state(failed[i], "FAILURE", 30));
        free(failed[i]);
    }
    it_assert_field(ok, "attempt", "1");
    free(ok);
    it_pass();
}

/* ---- purge ---- */

static void test_purge(void **state)
{
    it_need_redis();
    host_start();
    char *done1 = it_submit("demo.echo", "{}", NULL), *done2 = it_submit("demo.echo", "{}", NULL);
    char *failed = it_submit("demo.fail", "{}", NULL);
    char *waiting = it_submit("demo.echo", "{}", "--delay", "3600", NULL);
    assert_true(it_wait_state(done1, "SUCCESS", 30));
    assert_true(it_wait_state(done2, "SUCCESS", 30));
    assert_true(it_wait_state(failed, "FAILURE", 30));

    char *before = th_task_snapshot(fx.c, IT_PREFIX);
    static const struct {
        const char *body, *needle;
    } bad[] = {
        {"{\"older_than\": \"0s\", \"state\": \"ONGOING\"}", "ONGOING tasks are never purged"},
        {"{\"older_than\": \"0s\", \"state\": [\"FAILURE\", \"ONGOING\"]}", "never purged"},
        {"{\"older_than\": \"7 days\"}", "older_than must be a duration"},
        {"{\"older_than\": \"-5s\"}", "older_than must be a duration"},
        {"{\"state\": \"FAILURE\"}", "older_than is required"},
        {"{\"older_than\": \"1h\", \"state\": \"DONE\"}", "state must be SUCCESS, FAILURE"},
        {"{\"ids\": [\"nope\"]}", "ids[0] is not a task id"},
        {"{\"ids\": []}", "ids must be a list of 1..1000"},
        {"{\"ids\": [\"00000000-0000-4000-8000-000000000000\"], \"older_than\": \"1s\"}",
         "ids go alone"},
        {"{\"older_than\": \"1h\", \"since\": \"1h\"}", "unknown field 'since'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        api_error(400, "POST", "/v1/tasks/purge", bad[i].body, bad[i].needle);
    char *err = NULL;
    free(it_ctl(2, &err, "purge", "--older-than", "7 days", NULL));
    assert_non_null(strstr(err, "--older-than must be a duration"));
    free(err);
    free(it_ctl(2, &err, "purge", "--older-than", "0s", "--state", "ONGOING", NULL));
    assert_non_null(strstr(err, "ONGOING tasks are never purged"));
    free(err);
    free(it_ctl(2, &err, "purge", NULL));
    assert_non_null(strstr(err, "purge needs task ids, or --older-than"));
    free(err);
    /* Nothing finished an hour ago. */
    cJSON *a = api(202, "POST", "/v1/tasks/purge", "{\"older_than\": \"1h\"}");
    assert_true(num(a, "matched") == 0 && num(a, "deleted") == 0);
    cJSON_Delete(a);
    char *after = th_task_snapshot(fx.c, IT_PREFIX);
    assert_string_equal(before, after);
    free(after);
    free(before);

    /* The failed one, by state: a dry run, then for real; its record goes. */
    char *out =
        it_ctl(0, NULL, "purge", "--older-than", "0s", "--state", "FAILURE", "--dry-run", NULL);
    assert_non_null(strstr(out, "would delete 1 task(s):"));
    assert_non_null(strstr(out, failed));
    free(out);
    assert_true(th_task_exists(fx.c, IT_PREFIX, failed));
    a = api(202, "POST", "/v1/tasks/purge", "{\"older_than\": 0, \"state\": [\"FAILURE\"]}");
    assert_true(num(a, "matched") == 1 && num(a, "deleted") == 1);
    assert_true(lists(a, "task_ids", failed));
    cJSON_Delete(a);
    assert_false(th_task_exists(fx.c, IT_PREFIX, failed));
    free(it_ctl(5, NULL, "status", failed, NULL));

    /* By id: the unfinished and the unknown are skipped, and stay as they were. */
    const char *unknown = "5d5d8f3e-6a8e-4c39-9d0b-0e6a4f1c2b77";
    out = it_ctl(0, NULL, "--json", "purge", done1, waiting, unknown, NULL);
    a = cJSON_Parse(out);
    free(out);
    assert_true(num(a, "matched") == 1 && num(a, "deleted") == 1);
    assert_true(lists(a, "task_ids", done1));
    assert_true(lists(a, "skipped", waiting) && lists(a, "skipped", unknown));
    cJSON_Delete(a);
    assert_false(th_task_exists(fx.c, IT_PREFIX, done1));
    it_assert_field(waiting, "state", "ONGOING");
    cJSON *stats = api(200, "GET", "/v1/stats", NULL);
    assert_true(num(stats, "finished") == 1); /* done2 */
    cJSON_Delete(stats);

    /* Every finished one of a handler. */
    out = it_ctl(0, NULL, "purge", "--older-than", "0s", "--handler", "demo.echo", NULL);
    assert_non_null(strstr(out, "deleted 1 task(s) of 1 matched"));
    free(out);
    assert_false(th_task_exists(fx.c, IT_PREFIX, done2));
    it_assert_field(waiting, "state", "ONGOING");
    free(done1);
    free(done2);
    free(failed);
    free(waiting);
    it_pass();
}

/* ---- cancel all of a handler's tasks ---- */

static void test_cancel_all(void **state)
{
    it_need_redis();
    host_start();
    char *waiting[3];
    for (int i = 0; i < 3; i++)
        waiting[i] = it_submit("demo.echo", "{}", "--delay", "3600", NULL);
    char *running = it_submit("demo.sleep", "{\"seconds\": 30}", NULL);
    assert_true(TH_WAIT_UNTIL(20, it_field_is(running, "attempt", "1")));

    char *err = NULL;
    free(it_ctl(2, &err, "cancel", "--handler", "demo.echo", NULL));
    assert_non_null(strstr(err, "needs --all"));
    free(err);
    api_error(400, "POST", "/v1/tasks/cancel", "{}", "handler is required");
    api_error(400, "POST", "/v1/tasks/cancel", "{\"handler\": \"demo.echo\", \"state\": \"x\"}",
              "unknown field 'state'");
    char *out = it_ctl(0, NULL, "cancel", "--handler", "demo.echo", "--all", "--dry-run", NULL);
    assert_non_null(strstr(out, "would cancel 3 task(s):"));
    free(out);
    it_assert_field(waiting[0], "state", "ONGOING");
    out = it_ctl(0, NULL, "cancel", "--handler", "demo.echo", "--all", NULL);
    assert_non_null(strstr(out, "cancelled 3 task(s)"));
    free(out);
    for (int i = 0; i < 3; i++) {
        it_assert_field(waiting[i], "state", "CANCELLED");
        free(waiting[i]);
    }
    /* A running one: its host is asked to stop it. */
    cJSON *a = api(202, "POST", "/v1/tasks/cancel", "{\"handler\": \"demo.sleep\"}");
    assert_true(num(a, "matched") == 1 && num(a, "cancel_requested") == 1);
    cJSON_Delete(a);
    assert_true(it_wait_state(running, "CANCELLED", 20));
    free(running);
    it_pass();
}

/* ---- pause and resume ---- */

/* The host's log says it applied an operator's pause (or resume) of demo.echo. */
static bool host_says(const th_host *h, const char *what)
{
    char needle[128];
    snprintf(needle, sizeof needle, "handler demo.echo %s by an operator", what);
    return th_log_contains(h, needle);
}

/* How often the log of h holds needle. */
static int log_count(const th_host *h, const char *needle)
{
    FILE *f = fopen(h->log, "r");
    char line[4096];
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return n;
}

/*
 * A paused handler's new task waits while the host runs others; resumed, it
 * runs. Seen in hosts, stats and the metrics; an unknown handler is a 404
 * (and exit 5) that changes nothing.
 */
static void test_pause_resume(void **state)
{
    it_need_redis();
    th_host *h = host_start();
    char *before = th_task_snapshot(fx.c, IT_PREFIX);
    api_error(404, "POST", "/v1/handlers/nobody.home/pause", NULL,
              "no handler 'nobody.home': no live host serves it");
    api_error(400, "POST", "/v1/handlers/Bad!/pause", NULL, "invalid handler name");
    api_error(400, "POST", "/v1/handlers/demo.echo/resume", "{\"reason\": \"x\"}",
              "this request takes none");
    api_error(400, "POST", "/v1/handlers/demo.echo/pause", "{\"reason\": 5}",
              "reason must be a string");
    api_error(405, "GET", "/v1/handlers/demo.echo/pause", NULL, "not allowed");
    char *err = NULL;
    free(it_ctl(5, &err, "pause", "nobody.home", NULL));
    assert_non_null(strstr(err, "no handler 'nobody.home'"));
    free(err);
    cJSON *stats = api(200, "GET", "/v1/stats", NULL);
    const cJSON *e;
    cJSON_ArrayForEach (e, cJSON_GetObjectItemCaseSensitive(stats, "handlers"))
        assert_false(truth(e, "paused"));
    cJSON_Delete(stats);
    char *after = th_task_snapshot(fx.c, IT_PREFIX);
    assert_string_equal(before, after);
    free(before);
    free(after);

    cJSON *a = api(200, "POST", "/v1/handlers/demo.echo/pause", "{\"reason\": \"deploy\"}");
    assert_true(truth(a, "paused") && truth(a, "changed"));
    assert_string_equal(str(a, "reason"), "deploy");
    assert_true(num(a, "paused_ms") > 0);
    cJSON_Delete(a);
    a = api(200, "POST", "/v1/handlers/demo.echo/pause", NULL);
    assert_true(truth(a, "paused") && !truth(a, "changed"));
    assert_string_equal(str(a, "reason"), "deploy");
    cJSON_Delete(a);
    assert_true(TH_WAIT_UNTIL(10, host_says(h, "paused")));

    /* It waits while a task of another handler, submitted after it, runs. */
    char *held = it_submit("demo.echo", "{}", NULL);
    char *other = it_submit("demo.sleep", "{\"seconds\": 0}", NULL);
    assert_true(it_wait_state(other, "SUCCESS", 20));
    it_assert_field(held, "state", "ONGOING");
    it_assert_field(held, "attempt", "0");

    cJSON *hosts = api(200, "GET", "/v1/hosts", NULL);
    const cJSON *h0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(hosts, "hosts"), 0);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(h0, "paused");
    assert_int_equal(cJSON_GetArraySize(p), 1);
    assert_string_equal(cJSON_GetArrayItem(p, 0)->valuestring, "demo.echo");
    cJSON_Delete(hosts);
    stats = api(200, "GET", "/v1/stats", NULL);
    bool seen = false;
    cJSON_ArrayForEach (e, cJSON_GetObjectItemCaseSensitive(stats, "handlers"))
        if (strcmp(str(e, "handler"), "demo.echo") == 0) {
            seen = true;
            assert_true(truth(e, "paused"));
            assert_string_equal(str(e, "reason"), "deploy");
            assert_true(num(e, "queued") == 1);
        }
    assert_true(seen);
    cJSON_Delete(stats);
    char url[128], *text = NULL;
    snprintf(url, sizeof url, "%s/metrics", base);
    assert_int_equal(th_http("GET", url, NULL, NULL, &text), 200);
    assert_non_null(strstr(text, "bgtask_handler_paused{handler=\"demo.echo\"} 1"));
    assert_non_null(strstr(text, "bgtask_handler_paused{handler=\"demo.sleep\"} 0"));
    free(text);
    char *out = it_ctl(0, NULL, "hosts", NULL);
    assert_non_null(strstr(out, "ops: paused: demo.echo"));
    free(out);

    /* Resumed: it runs. Resuming again changes nothing. */
    out = it_ctl(0, NULL, "resume", "demo.echo", NULL);
    assert_string_equal(out, "demo.echo resumed\n");
    free(out);
    assert_true(it_wait_state(held, "SUCCESS", 20));
    out = it_ctl(0, NULL, "--json", "resume", "demo.echo", NULL);
    a = cJSON_Parse(out);
    assert_true(!truth(a, "paused") && !truth(a, "changed"));
    cJSON_Delete(a);
    free(out);
    assert_true(TH_WAIT_UNTIL(10, host_says(h, "resumed")));
    assert_int_equal(log_count(h, "paused by an operator"), 1);

    /* The heartbeat is the backstop: a pause whose message the host missed still holds
     * within one heartbeat (the pause is written by hand here, without a message). */
    th_pause_plant(fx.c, IT_PREFIX, "demo.echo");
    assert_true(TH_WAIT_UNTIL(10, log_count(h, "paused by an operator") == 2));
    free(held);
    free(other);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_retry_failed_single), IT_TEST(test_retry_bulk),   IT_TEST(test_purge),
        IT_TEST(test_cancel_all),          IT_TEST(test_pause_resume),
    };
    return cmocka_run_group_tests(tests, it_group_setup, it_group_teardown);
}

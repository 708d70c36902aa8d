/*
 * test_plugin_api.c - what the host's API promises a plugin (sdk/bgtask.h),
 * on real bgtaskd processes with the apicheck test plugin: bgt_submit from
 * its init submits (the host connects before it loads plugins), while a
 * check (--check-config) submits nothing; and a hook's after callback gets
 * the outcome and message the header describes.
 */
#include "bgtask.h"

#include "../harness/itest.h"

/* plugins.load for apicheck with this config body. */
static char *apicheck_load(const char *config)
{
    char *path = th_plugin_path("apicheck", true), *load = NULL;
    assert_true(asprintf(&load, "{ name = \"apicheck\"; file = \"%s\"; config = { %s }; }", path,
                         config) > 0);
    free(path);
    return load;
}

/* The ids of the tasks of handler, oldest first (bgtaskctl list --json). */
static cJSON *tasks_of(const char *handler)
{
    char *out = NULL;
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "--json", "list", "--handler", handler, NULL), 0);
    cJSON *page = cJSON_Parse(out);
    cJSON *arr = cJSON_DetachItemFromObject(page, "tasks"); /* {"count", "tasks", ...} */
    cJSON_Delete(page);
    assert_non_null(arr);
    free(out);
    return arr;
}

/*
 * An init that submits: the task is there and runs. A --check-config of the
 * same config loads the plugin (its init runs) and submits nothing, saying so.
 */
static void test_submit_from_init(void **state)
{
    it_need_redis();
    char *load = apicheck_load("submit = \"apicheck.end\";");
    th_host *h = it_host_start(&(th_host_opts){.id = "init", .plugins = load});
    assert_true(th_log_contains(h, "init submit: rc 0 id "));
    cJSON *tasks = tasks_of("apicheck.end");
    assert_int_equal(cJSON_GetArraySize(tasks), 1);
    const char *id = cJSON_GetObjectItem(cJSON_GetArrayItem(tasks, 0), "id")->valuestring;
    assert_true(it_wait_state(id, "SUCCESS", 20));
    cJSON *args = it_field_json(id, "args");
    assert_string_equal(cJSON_GetObjectItem(args, "from")->valuestring, "init");
    cJSON_Delete(args);
    cJSON_Delete(tasks);

    char *bin = it_bin("bgtaskd"), *err = NULL;
    char *argv[] = {bin, "--check-config", "-c", h->conf, NULL};
    assert_int_equal(th_run(60, argv, NULL, &err), 0);
    assert_non_null(strstr(err, "init submit: rc -5"));
    assert_non_null(strstr(err, "bgtaskd --check-config submits nothing"));
    tasks = tasks_of("apicheck.end");
    assert_int_equal(cJSON_GetArraySize(tasks), 1);
    cJSON_Delete(tasks);
    free(err);
    free(bin);
    free(load);
    it_pass();
}

/* The after line of task id in the hook's log, or NULL; *outcome gets its outcome. */
static char *after_line(const char *log, const char *id, int *outcome, int nth)
{
    char *text = it_read_file(log), *found = NULL;
    char needle[64];
    snprintf(needle, sizeof needle, "after %s -1 ", id);
    const char *p = text;
    for (int i = 0; i <= nth && p; i++)
        if ((p = strstr(p, needle)) && i < nth)
            p++;
    if (p) {
        p += strlen(needle);
        *outcome = atoi(p);
        const char *msg = strchr(p, ' ') + 1, *nl = strchr(msg, '\n');
        found = strndup(msg, (size_t)(nl - msg));
    }
    free(text);
    return found;
}

/* The hook saw task id's nth attempt end with outcome and message. */
static void assert_after(const char *log, const char *id, int nth, int outcome,
                         const char *message)
{
    int got = -1;
    char *msg = NULL;
    assert_true(TH_WAIT_UNTIL(20, (free(msg), msg = after_line(log, id, &got, nth)) != NULL));
    if (got != outcome || strcmp(msg, message) != 0)
        fail_msg("task %s, attempt %d: after(%d, \"%s\"), want after(%d, \"%s\")", id, nth + 1,
                 got, msg, outcome, message);
    free(msg);
}

/*
 * after: the status the attempt ended with; no message after BGT_OK (not the
 * record's "Task finished"); the attempt's own error otherwise (a retry's
 * error as the handler set it, not the record's "attempt 1 failed: ...;
 * retrying in ..."), else the host's reason.
 */
static void test_after_hook(void **state)
{
    it_need_redis();
    char *dir = th_tmpdir("apicheck"), *log = NULL, *cfg = NULL;
    assert_true(asprintf(&log, "%s/after.log", dir) > 0);
    assert_true(asprintf(&cfg, "log = \"%s\";", log) > 0);
    char *load = apicheck_load(cfg);
    it_host_start(&(th_host_opts){.id = "hooks", .plugins = load});
    char *ok = it_submit("apicheck.end", "{\"end\": \"ok\", \"error\": \"set, but it succeeded\"}",
                         NULL);
    char *bad = it_submit("apicheck.end", "{\"end\": \"failed\", \"error\": \"it broke\"}", NULL);
    char *again = it_submit("apicheck.end", "{\"end\": \"retry\", \"error\": \"not yet\"}", NULL);
    char *stop = it_submit("apicheck.end", "{\"end\": \"cancelled\"}", NULL);
    assert_true(it_wait_state(ok, "SUCCESS", 20));
    assert_after(log, ok, 0, BGT_OK, "(null)");
    assert_true(it_wait_state(bad, "FAILURE", 20));
    assert_after(log, bad, 0, BGT_FAILED, "it broke");
    assert_true(it_wait_state(again, "SUCCESS", 20));
    assert_after(log, again, 0, BGT_RETRY, "not yet");
    assert_after(log, again, 1, BGT_OK, "(null)");
    assert_true(TH_WAIT_UNTIL(20, it_field_ll(stop, "attempt") == 1));
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "cancel", stop, NULL), 0);
    assert_true(it_wait_state(stop, "CANCELLED", 20));
    assert_after(log, stop, 0, BGT_CANCELLED, "Cancelled");
    free(ok);
    free(bad);
    free(again);
    free(stop);
    free(load);
    free(cfg);
    free(log);
    free(dir);
    it_pass();
}

/*
 * A result is kept only when it can be read back whole: nested at most 64
 * deep, valid UTF-8. bgt_set_result refuses the others (-EINVAL), so the
 * ending's event always parses and every stream ends. (A result nested 998
 * deep used to be taken, and its event, two levels deeper, could not be read.)
 */
static void test_result_checked(void **state)
{
    it_need_redis();
    char *load = apicheck_load("");
    it_host_start(&(th_host_opts){.id = "results", .plugins = load});
    char *ok = it_submit("apicheck.end", "{\"depth\": 64}", NULL);
    char *deep = it_submit("apicheck.end", "{\"depth\": 65}", NULL);
    char *deeper = it_submit("apicheck.end", "{\"depth\": 998}", NULL);
    char *latin1 = it_submit("apicheck.end", "{\"bad_utf8\": true}", NULL);
    assert_true(it_wait_state(ok, "SUCCESS", 20));
    it_assert_one_terminal(ok, "bgtask_done");
    cJSON *res = it_field_json(ok, "result");
    int depth = 0;
    for (const cJSON *v = res; cJSON_IsArray(v); v = v->child)
        depth++;
    assert_int_equal(depth, 64);
    cJSON_Delete(res);
    /* The stream of the kept one ends: watch exits 0 with the task done. */
    char *out = NULL;
    assert_int_equal(th_ctl_timeout(30, &fx.r, &out, NULL, "watch", ok, NULL), 0);
    free(out);

    const char *refused[] = {deep, deeper, latin1};
    for (int i = 0; i < 3; i++) {
        assert_true(it_wait_state(refused[i], "FAILURE", 20));
        it_assert_field(refused[i], "error", "set_result: rc -22");
        it_assert_one_terminal(refused[i], "bgtask_failed");
    }
    free(ok);
    free(deep);
    free(deeper);
    free(latin1);
    free(load);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_submit_from_init),
        IT_TEST(test_after_hook),
        IT_TEST(test_result_checked),
    };
    return cmocka_run_group_tests_name("plugin_api", tests, it_group_setup, it_group_teardown);
}

/*
 * test_cli_live.c - bgtaskctl against live bgtaskd processes: what status and
 * list show of tasks whose attempts failed before they ended.
 */
#include "../harness/itest.h"

/* bgtaskctl with these arguments (NULL-terminated) must exit `want`; returns its stdout. */
static char *ctl_out(int want, const char *arg, ...)
{
    char *argv[32];
    int n = it_ctl_argv(argv);
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a; a = va_arg(ap, const char *)) {
        assert_true(n < 30);
        argv[n++] = (char *)a;
    }
    va_end(ap);
    argv[n] = NULL;
    char *out = NULL, *err = NULL;
    int rc = th_run(60, argv, &out, &err);
    free(argv[0]);
    if (rc != want)
        fail_msg("bgtaskctl %s ...: exit %d, want %d; stderr: %s", arg, rc, want, err);
    free(err);
    return out;
}

/* The one record of task id in a `list --json` answer (owned by arr), or NULL. */
static const cJSON *listed(const cJSON *arr, const char *id)
{
    const cJSON *t;
    cJSON_ArrayForEach (t, arr) {
        const cJSON *v = cJSON_GetObjectItem(t, "id");
        if (cJSON_IsString(v) && strcmp(v->valuestring, id) == 0)
            return t;
    }
    return NULL;
}

/*
 * A task that succeeded after a retry shows no error: the retry's reason is
 * not the outcome. One that failed shows its error, in status, status --json,
 * list and list --json alike.
 */
static void test_error_only_on_failure(void **state)
{
    it_need_redis();
    it_host_start(NULL);
    char *ok = it_submit("demo.flaky", "{\"n\": 2}", NULL);
    char *bad = it_submit("demo.fail", "{\"message\": \"it broke\"}", NULL);
    assert_true(it_wait_state(ok, "SUCCESS", 20));
    assert_true(it_wait_state(bad, "FAILURE", 20));

    char *out = ctl_out(0, "status", ok, NULL);
    assert_null(strstr(out, "error:"));
    assert_null(strstr(out, "not yet"));
    free(out);
    out = ctl_out(0, "status", bad, NULL);
    assert_non_null(strstr(out, "error:"));
    assert_non_null(strstr(out, "it broke"));
    free(out);

    out = ctl_out(0, "--json", "status", ok, NULL);
    cJSON *rec = cJSON_Parse(out);
    assert_non_null(rec);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(rec, "error")));
    cJSON_Delete(rec);
    free(out);

    out = ctl_out(0, "list", NULL);
    assert_null(strstr(out, "not yet"));
    assert_non_null(strstr(out, "it broke"));
    free(out);
    out = ctl_out(0, "--json", "list", NULL);
    cJSON *arr = cJSON_Parse(out);
    assert_non_null(arr);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(listed(arr, ok), "error")));
    const cJSON *e = cJSON_GetObjectItem(listed(arr, bad), "error");
    assert_true(cJSON_IsString(e) && strstr(e->valuestring, "it broke"));
    cJSON_Delete(arr);
    free(out);
    free(ok);
    free(bad);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_error_only_on_failure),
    };
    return cmocka_run_group_tests_name("cli_live", tests, it_group_setup, it_group_teardown);
}

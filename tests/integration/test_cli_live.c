/*
 * test_cli_live.c - bgtaskctl against live bgtaskd processes: what status and
 * list show of tasks whose attempts failed before they ended, and submit
 * --wait showing every event of the task it submits.
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

/* A task id: 36 characters of lower-case hex and dashes. */
static bool id_ok(const char *s)
{
    if (strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++)
        if (!strchr(i == 8 || i == 13 || i == 18 || i == 23 ? "-" : "0123456789abcdef", s[i]))
            return false;
    return true;
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

/*
 * The lines of watch's plain output as [{"event", "message"}]: each line is
 * "HH:MM:SS <event> <current>/<total> <message>", and lines under it that start
 * "HH:MM:SS   " (a subtask's error or progress) are left out. Lines of another
 * form fail.
 */
static cJSON *watch_lines(const char *out)
{
    cJSON *arr = cJSON_CreateArray();
    const char *p = out;
    while (*p) {
        const char *nl = strchr(p, '\n');
        if (!nl)
            fail_msg("an unfinished line in watch's output: '%s'", p);
        char line[1024], ts[16], name[64], prog[64];
        int used = 0;
        snprintf(line, sizeof line, "%.*s", (int)(nl - p), p);
        p = nl + 1;
        if (strlen(line) > 11 && strncmp(line + 8, "   ", 3) == 0)
            continue; /* a line under an event's: a subtask's error or progress */
        if (sscanf(line, "%15s %63s %63s %n", ts, name, prog, &used) != 3)
            fail_msg("not a watch line: '%s'", line);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "event", name);
        cJSON_AddStringToObject(o, "message", used ? line + used : "");
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

/*
 * The lines of watch's output (out, from its first event line) must be the
 * task's events from the first-th on, in order and each once.
 */
static void assert_shows_events(const char *out, const char *id, int first)
{
    cJSON *lines = watch_lines(out);
    cJSON *evs = it_events(id);
    char *shown = cJSON_PrintUnformatted(lines), *stored = cJSON_PrintUnformatted(evs);
    if (cJSON_GetArraySize(lines) != cJSON_GetArraySize(evs) - first)
        fail_msg("watch showed %s; the task's events are %s (from #%d)", shown, stored, first);
    for (int i = 0; i < cJSON_GetArraySize(lines); i++) {
        const cJSON *l = cJSON_GetArrayItem(lines, i), *e = cJSON_GetArrayItem(evs, first + i);
        if (strcmp(cJSON_GetObjectItem(l, "event")->valuestring, it_ev_name(e)) != 0 ||
            strcmp(cJSON_GetObjectItem(l, "message")->valuestring, it_ev_message(e)) != 0)
            fail_msg("line %d differs: watch showed %s; the task's events are %s (from #%d)", i,
                     shown, stored, first);
    }
    free(shown);
    free(stored);
    cJSON_Delete(lines);
    cJSON_Delete(evs);
}

/*
 * submit --wait shows every event of the task, in order, each once: it is
 * subscribed before the task exists, so a retry that comes at once is not
 * missed, and "Task started" is the submission's own event, not one made up
 * from the record. Several rounds: the first retry follows the submission
 * within milliseconds. retry --wait likewise shows all that the retry starts.
 */
static void test_wait_sees_every_event(void **state)
{
    it_need_redis();
    it_host_start(NULL);
    for (int round = 0; round < 4; round++) {
        char *out = ctl_out(0, "submit", "demo.flaky", "--args", "{\"n\": 3}", "--wait", NULL);
        char id[37];
        snprintf(id, sizeof id, "%s", out);
        assert_true(id_ok(id));
        assert_shows_events(strchr(out, '\n') + 1, id, 0);
        /* Started, two retries, done. */
        cJSON *evs = it_events(id);
        assert_int_equal(cJSON_GetArraySize(evs), 4);
        assert_string_equal(it_ev_message(cJSON_GetArrayItem(evs, 0)), "Task started");
        cJSON_Delete(evs);
        free(out);
    }
    /* A partial success, retried: its subtask 1 fails again. */
    char *out = ctl_out(4, "submit", "demo.parallel", "--args",
                        "{\"items\": 3, \"ms\": 1, \"fail\": [1]}", "--wait", NULL);
    char id[37];
    snprintf(id, sizeof id, "%s", out);
    free(out);
    cJSON *evs = it_events(id);
    int before = cJSON_GetArraySize(evs);
    cJSON_Delete(evs);
    out = ctl_out(4, "retry", id, "--wait", NULL);
    assert_true(strncmp(out, "retrying 1 failed subtask(s)\n", 29) == 0);
    assert_shows_events(out + 29, id, before);
    free(out);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_error_only_on_failure),
        IT_TEST(test_wait_sees_every_event),
    };
    return cmocka_run_group_tests_name("cli_live", tests, it_group_setup, it_group_teardown);
}

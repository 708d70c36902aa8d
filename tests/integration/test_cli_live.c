/*
 * test_cli_live.c - bgtaskctl against live bgtaskd processes: what status and
 * list show of tasks whose attempts failed before they ended, submit --wait
 * showing every event of the task it submits, and what is said of a task
 * that no live host can run.
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../harness/itest.h"

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

    char *out = it_ctl(0, NULL, "status", ok, NULL);
    assert_null(strstr(out, "error:"));
    assert_null(strstr(out, "not yet"));
    free(out);
    out = it_ctl(0, NULL, "status", bad, NULL);
    assert_non_null(strstr(out, "error:"));
    assert_non_null(strstr(out, "it broke"));
    free(out);

    out = it_ctl(0, NULL, "--json", "status", ok, NULL);
    cJSON *rec = cJSON_Parse(out);
    assert_non_null(rec);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(rec, "error")));
    cJSON_Delete(rec);
    free(out);

    out = it_ctl(0, NULL, "list", NULL);
    assert_null(strstr(out, "not yet"));
    assert_non_null(strstr(out, "it broke"));
    free(out);
    out = it_ctl(0, NULL, "--json", "list", NULL);
    cJSON *page = cJSON_Parse(out);
    const cJSON *arr = cJSON_GetObjectItem(page, "tasks");
    assert_non_null(arr);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(listed(arr, ok), "error")));
    const cJSON *e = cJSON_GetObjectItem(listed(arr, bad), "error");
    assert_true(cJSON_IsString(e) && strstr(e->valuestring, "it broke"));
    cJSON_Delete(page);
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
 * task's events from the first-th on, in order and each once. With started,
 * the first line is the submission's "Task started", which is published but
 * not stored (protocol 2), and the stored events follow it.
 */
static void assert_shows_events(const char *out, const char *id, int first, bool started)
{
    cJSON *lines = watch_lines(out);
    cJSON *evs = it_events(id);
    char *shown = cJSON_PrintUnformatted(lines), *stored = cJSON_PrintUnformatted(evs);
    int skip = started ? 1 : 0;
    if (cJSON_GetArraySize(lines) - skip != cJSON_GetArraySize(evs) - first)
        fail_msg("watch showed %s; the task's events are %s (from #%d)", shown, stored, first);
    if (started) {
        const cJSON *l = cJSON_GetArrayItem(lines, 0);
        if (strcmp(cJSON_GetObjectItem(l, "event")->valuestring, "bgtask_updated") != 0 ||
            strcmp(cJSON_GetObjectItem(l, "message")->valuestring, "Task started") != 0)
            fail_msg("watch showed %s, not \"Task started\" first", shown);
    }
    for (int i = 0; i + skip < cJSON_GetArraySize(lines); i++) {
        const cJSON *l = cJSON_GetArrayItem(lines, i + skip),
                    *e = cJSON_GetArrayItem(evs, first + i);
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
        char *out = it_ctl(0, NULL, "submit", "demo.flaky", "--args", "{\"n\": 3}", "--wait", NULL);
        char id[37];
        snprintf(id, sizeof id, "%s", out);
        assert_true(id_ok(id));
        assert_shows_events(strchr(out, '\n') + 1, id, 0, true);
        /* Started (shown, not stored), two retries, done. */
        cJSON *evs = it_events(id);
        assert_int_equal(cJSON_GetArraySize(evs), 3);
        assert_non_null(strstr(it_ev_message(cJSON_GetArrayItem(evs, 0)), "attempt 1 failed"));
        cJSON_Delete(evs);
        free(out);
    }
    /* A partial success, retried: its subtask 1 fails again. */
    char *out = it_ctl(4, NULL, "submit", "demo.parallel", "--args",
                        "{\"items\": 3, \"ms\": 1, \"fail\": [1]}", "--wait", NULL);
    char id[37];
    snprintf(id, sizeof id, "%s", out);
    free(out);
    cJSON *evs = it_events(id);
    int before = cJSON_GetArraySize(evs);
    cJSON_Delete(evs);
    out = it_ctl(4, NULL, "retry", id, "--wait", NULL);
    assert_true(strncmp(out, "retrying 1 failed subtask(s)\n", 29) == 0);
    assert_shows_events(out + 29, id, before, false);
    free(out);
    it_pass();
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay ? strstr(hay, needle) : NULL; p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* How many times the file at path says needle (0 while it does not exist). */
static int file_says(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return count_of(buf, needle);
}

#define UNSERVED "no live host serves handler nobody.serves: the task waits until one that does"

/*
 * A task of a handler that no live host serves: submit says so on stderr,
 * status says so (and --json carries a "warning"), handlers lists it with no
 * host and its queue, and submit --wait says it again while it waits. Once a
 * host serves the handler, nothing is said.
 */
static void test_unserved_handler(void **state)
{
    it_need_redis();
    char *err = NULL;
    free(it_ctl(0, &err, "submit", "nobody.serves", NULL));
    assert_int_equal(count_of(err, UNSERVED), 1);
    free(err);
    /* With --json, the answer carries it too, as POST /v1/tasks's does. */
    char *out = it_ctl(0, NULL, "--json", "submit", "nobody.serves", NULL);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(strstr(cJSON_GetObjectItem(j, "warning")->valuestring, UNSERVED));
    char first[37];
    snprintf(first, sizeof first, "%s", cJSON_GetObjectItem(j, "task_id")->valuestring);
    cJSON_Delete(j);
    free(out);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "cancel", first, NULL), 0);
    out = it_ctl(0, NULL, "--json", "list", "--handler", "nobody.serves", "--state", "ONGOING", NULL);
    cJSON *page = cJSON_Parse(out);
    const cJSON *arr = cJSON_GetObjectItem(page, "tasks");
    assert_int_equal(cJSON_GetArraySize(arr), 1);
    char id[37];
    snprintf(id, sizeof id, "%s", cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 0), "id")->valuestring);
    cJSON_Delete(page);
    free(out);

    out = it_ctl(0, NULL, "status", id, NULL);
    assert_non_null(strstr(out, "warning:"));
    assert_non_null(strstr(out, UNSERVED));
    free(out);
    out = it_ctl(0, NULL, "--json", "status", id, NULL);
    cJSON *rec = cJSON_Parse(out);
    assert_non_null(strstr(cJSON_GetObjectItem(rec, "warning")->valuestring, UNSERVED));
    cJSON_Delete(rec);
    free(out);

    th_host *h = it_host_start(NULL);
    out = it_ctl(0, NULL, "--json", "handlers", NULL);
    cJSON *v = cJSON_Parse(out);
    assert_non_null(v);
    const cJSON *e;
    int seen = 0;
    cJSON_ArrayForEach (e, cJSON_GetObjectItem(v, "handlers")) {
        const char *name = cJSON_GetObjectItem(e, "handler")->valuestring;
        const cJSON *hosts = cJSON_GetObjectItem(e, "hosts");
        if (strcmp(name, "nobody.serves") == 0) {
            assert_int_equal(cJSON_GetArraySize(hosts), 0);
            assert_true(cJSON_GetObjectItem(e, "queued")->valuedouble == 1);
            seen++;
        } else if (strcmp(name, "demo.echo") == 0) {
            assert_int_equal(cJSON_GetArraySize(hosts), 1);
            assert_string_equal(cJSON_GetArrayItem(hosts, 0)->valuestring, h->id);
            seen++;
        }
    }
    assert_int_equal(seen, 2);
    cJSON_Delete(v);
    free(out);
    out = it_ctl(0, NULL, "handlers", NULL);
    assert_non_null(strstr(out, "none (unserved)"));
    free(out);

    /* A served handler: nothing said, nothing in the record. */
    free(it_ctl(0, &err, "submit", "demo.echo", NULL));
    assert_int_equal(count_of(err, "warning"), 0);
    free(err);

    /* submit --wait says it again while it waits; a cancel ends the wait. */
    char *dir = th_tmpdir("cli-unserved");
    char errpath[600];
    snprintf(errpath, sizeof errpath, "%s/stderr", dir);
    const char *wid = "5b7c2f6e-1d0a-4c3b-9e8f-7a6b5c4d3e2f";
    char *bin = it_bin("bgtaskctl");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen(errpath, "w", stderr))
            _exit(126);
        execl(bin, bin, "--redis", fx.r.url, "submit", "nobody.serves", "--id", wid, "--wait",
              (char *)NULL);
        _exit(127);
    }
    free(bin);
    bool twice = TH_WAIT_UNTIL(30, file_says(errpath, UNSERVED) >= 2);
    int status = -1;
    bool exited = false;
    if (twice && th_ctl(&fx.r, NULL, NULL, "cancel", wid, NULL) == 0)
        exited = TH_WAIT_UNTIL(10, waitpid(pid, &status, WNOHANG) == pid);
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    assert_true(twice);
    assert_true(exited);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 3);
    free(dir);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_error_only_on_failure),
        IT_TEST(test_wait_sees_every_event),
        IT_TEST(test_unserved_handler),
    };
    return cmocka_run_group_tests_name("cli_live", tests, it_group_setup, it_group_teardown);
}

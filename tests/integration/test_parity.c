/*
 * test_parity.c - everything bgtaskctl can do, the HTTP API can, and the
 * reverse: the README's table ("bgtaskctl and the HTTP API") walked row by
 * row against one host with HTTP on, each row done both ways and the answers
 * compared. The table and the rows walked here must name the same things, so
 * neither can drift from the other.
 */
#include <ctype.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../harness/itest.h"

static char base[64];        /* "http://127.0.0.1:<port>" of the test's host */
static char partest[2048];   /* plugins.load for partest, logger and demo */

static int group_setup(void **state)
{
    char *path = th_plugin_path("partest", true), *logger = th_plugin_path("logger", true);
    snprintf(partest, sizeof partest,
             "{ name = \"demo\"; }, { name = \"partest\"; file = \"%s\"; }, "
             "{ name = \"logger\"; file = \"%s\"; }",
             path, logger);
    free(logger);
    free(path);
    return it_group_setup(state);
}

/* Start the test's host ("par": demo and partest, HTTP on a free port) and fill base. */
static th_host *host_start(void)
{
    th_host *h = it_host_start(&(th_host_opts){.id = "par",
                                                .workers = 8,
                                                .plugins = partest,
                                                .extra = "http: { listen = \"127.0.0.1:0\"; };"});
    int port = th_host_http_port(h);
    assert_true(port > 0);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    return h;
}

/* bgtaskctl --json with these arguments must exit `want`: its stdout as JSON. */
#define ctl_json(want, ...) json_of(it_ctl(want, NULL, "--json", __VA_ARGS__))

/* text (taken) as JSON, which it must be. */
static cJSON *json_of(char *text)
{
    cJSON *j = cJSON_Parse(text);
    if (!j)
        fail_msg("not JSON: %s", text);
    free(text);
    return j;
}

/* An API call that must answer `want`; its body as JSON. */
static cJSON *api(int want, const char *method, const char *path, const char *body)
{
    char url[512], *out = NULL;
    snprintf(url, sizeof url, "%s%s", base, path);
    int status = th_http(method, url, NULL, body, &out);
    if (status != want)
        fail_msg("%s %s: %d, want %d: %s", method, path, status, want, out ? out : "");
    cJSON *j = cJSON_Parse(out);
    if (!j)
        fail_msg("%s %s: not JSON: %s", method, path, out);
    free(out);
    return j;
}

/* a and b must be equal JSON; what says where. Takes both. */
static void assert_same(const char *what, cJSON *a, cJSON *b)
{
    if (!cJSON_Compare(a, b, true)) {
        char *x = cJSON_PrintUnformatted(a), *y = cJSON_PrintUnformatted(b);
        fail_msg("%s differ:\nbgtaskctl: %s\nHTTP:      %s", what, x, y);
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
}

/* Drop field f from every object of arr (and arr itself if an object): what changes
 * between two reads of the same thing (an entry's expiry, a wait's age). */
static cJSON *without(cJSON *j, const char *f)
{
    cJSON *e;
    if (cJSON_IsObject(j))
        cJSON_DeleteItemFromObjectCaseSensitive(j, f);
    cJSON_ArrayForEach (e, j)
        without(e, f);
    return j;
}

static cJSON *detach(cJSON *o, const char *f)
{
    cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(o, f);
    cJSON_Delete(o);
    assert_non_null(v);
    return v;
}

static const char *jstr(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* Start prog (argv[0] a path, or "/usr/bin/env" and a name) with stdout to path. */
static pid_t spawn(char *const argv[], const char *path)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen(path, "w", stdout) || !freopen("/dev/null", "w", stderr))
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static void stop(pid_t pid)
{
    kill(pid, SIGTERM);
    if (!TH_WAIT_UNTIL(10, waitpid(pid, NULL, WNOHANG) == pid)) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
}

/* How many times the file at path says needle. */
static int file_says(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0;
    char line[8192];
    while (fgets(line, sizeof line, f))
        for (const char *p = strstr(line, needle); p; p = strstr(p + 1, needle))
            n++;
    fclose(f);
    return n;
}

/* ---- the rows ---- */

static const char *const id_ctl[] = {"2f1c3a40-5b6d-4e7f-8a9b-0c1d2e3f4a50",
                                     "2f1c3a40-5b6d-4e7f-8a9b-0c1d2e3f4a51"};
static const char *const id_api[] = {"3a1c3a40-5b6d-4e7f-8a9b-0c1d2e3f4a50",
                                     "3a1c3a40-5b6d-4e7f-8a9b-0c1d2e3f4a51"};

/* The record of id, as clients see it, without what differs between two submissions. */
static cJSON *record(const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s", id);
    cJSON *r = api(200, "GET", path, NULL);
    static const char *const differ[] = {"id", "created_ms", "updated_ms", "started_ms",
                                         "finished_ms", NULL};
    for (int i = 0; differ[i]; i++)
        without(r, differ[i]);
    return r;
}

/* submit a task: every option, both ways, the same record (a delayed task: it waits). */
static void row_submit(void)
{
    cJSON *a = ctl_json(0, "submit", "partest.run", "--args", "{\"n\": 2, \"ms\": 1}", "--id",
                        id_ctl[0], "--delay", "600", "--max-attempts", "4", "--parallelism", "2",
                        "--on-failure", "fail_fast", NULL);
    char body[512];
    snprintf(body, sizeof body,
             "{\"handler\": \"partest.run\", \"args\": {\"n\": 2, \"ms\": 1}, \"id\": \"%s\", "
             "\"delay_s\": 600, \"max_attempts\": 4, \"parallelism\": 2, \"on_failure\": "
             "\"fail_fast\"}",
             id_api[0]);
    cJSON *b = api(202, "POST", "/v1/tasks", body);
    assert_string_equal(jstr(a, "task_id"), id_ctl[0]);
    assert_string_equal(jstr(b, "task_id"), id_api[0]);
    cJSON_Delete(a);
    cJSON_Delete(b);
    cJSON *ra = record(id_ctl[0]), *rb = record(id_api[0]);
    assert_string_equal(jstr(ra, "on_failure"), "fail_fast");
    assert_same("the records of the submissions", ra, rb);
}

/* give it its subtasks: --subtasks-file and "subtasks", the same args.subtasks. */
static void row_subtasks(void)
{
    char *dir = th_tmpdir("parity"), *file = NULL;
    assert_true(asprintf(&file, "%s/subs.json", dir) > 0);
    it_write_file(file, "[{\"i\": 0}, {\"i\": 1}, {\"i\": 2}]");
    cJSON *a = ctl_json(0, "submit", "partest.list", "--subtasks-file", file, "--delay", "600",
                        "--id", id_ctl[1], NULL);
    char body[256];
    snprintf(body, sizeof body,
             "{\"handler\": \"partest.list\", \"subtasks\": [{\"i\": 0}, {\"i\": 1}, {\"i\": 2}], "
             "\"delay_s\": 600, \"id\": \"%s\"}",
             id_api[1]);
    cJSON *b = api(202, "POST", "/v1/tasks", body);
    cJSON_Delete(a);
    cJSON_Delete(b);
    cJSON *ra = record(id_ctl[1]), *rb = record(id_api[1]);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(ra, "args"),
                                                            "subtasks")),
                     3);
    assert_same("the records of the submissions with subtasks", ra, rb);
    free(file);
    free(dir);
}

/* read a task: status --json and GET, one record. */
static void row_status(void)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s", id_ctl[0]);
    assert_same("status and GET /v1/tasks/<id>", ctl_json(0, "status", id_ctl[0], NULL),
                api(200, "GET", path, NULL));
    /* Ids in capitals name the same task, both ways. */
    char upper[37];
    for (int i = 0; i <= 36; i++)
        upper[i] = (char)toupper((unsigned char)id_ctl[0][i]);
    snprintf(path, sizeof path, "/v1/tasks/%s", upper);
    assert_same("status and GET /v1/tasks/<ID>", ctl_json(0, "status", upper, NULL),
                api(200, "GET", path, NULL));
}

/* cancel a task: the same outcome, both ways. */
static void row_cancel(void)
{
    cJSON *a = ctl_json(0, "cancel", id_ctl[0], NULL);
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s", id_api[0]);
    cJSON *b = api(202, "DELETE", path, NULL);
    assert_string_equal(jstr(a, "outcome"), "cancelled");
    without(a, "task_id");
    without(b, "task_id");
    assert_same("cancel and DELETE", a, b);
    /* Again: both say it had finished. */
    a = ctl_json(0, "cancel", id_ctl[0], NULL);
    b = api(202, "DELETE", path, NULL);
    assert_string_equal(jstr(a, "outcome"), "already_finished");
    without(a, "task_id");
    without(b, "task_id");
    assert_same("cancel and DELETE of a finished task", a, b);
}

/* Two finished partial successes to read and retry: subtask 1 of each failed. */
static void make_partials(const char **ids)
{
    for (int k = 0; k < 2; k++) {
        char args[128];
        snprintf(args, sizeof args, "{\"n\": 4, \"ms\": 1, \"fail\": [1]}");
        ids[k] = it_submit("partest.run", args, NULL);
    }
    for (int k = 0; k < 2; k++)
        assert_true(it_wait_state(ids[k], "SUCCESS", 30));
}

/* read its subtasks: the same page, both ways. */
static void row_subtasks_read(const char *id)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/tasks/%s/subtasks?state=SUCCESS&offset=1&limit=1", id);
    cJSON *a = ctl_json(0, "status", id, "--subtasks", "--state", "SUCCESS", "--offset", "1",
                        "--limit", "1", NULL);
    cJSON *b = detach(api(200, "GET", path, NULL), "subtasks");
    assert_int_equal(cJSON_GetArraySize(a), 1);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(a, 0), "index")->valueint, 2);
    assert_same("status --subtasks and GET .../subtasks", a, b);
    snprintf(path, sizeof path, "/v1/tasks/%s/subtasks", id);
    assert_same("all the subtasks", ctl_json(0, "status", id, "--subtasks", NULL),
                detach(api(200, "GET", path, NULL), "subtasks"));
}

/* retry its failed subtasks, and follow the task until it ends: watch and the stream end
 * on the same terminal event. */
static void row_retry_and_follow(const char **ids)
{
    cJSON *a = ctl_json(0, "retry", ids[0], NULL);
    char path[256];
    snprintf(path, sizeof path, "/v1/tasks/%s/retry", ids[1]);
    cJSON *b = api(202, "POST", path, NULL);
    assert_int_equal(cJSON_GetObjectItem(a, "retrying")->valueint, 1);
    without(a, "task_id");
    without(b, "task_id");
    assert_same("retry and POST .../retry", a, b);

    char *argv[8];
    int n = it_ctl_argv(argv);
    argv[n++] = "watch";
    argv[n++] = (char *)ids[0];
    argv[n] = NULL;
    char *out = NULL;
    assert_int_equal(th_run(60, argv, &out, NULL), 4); /* the subtask fails again */
    free(argv[0]);
    assert_non_null(strstr(out, "bgtask_partial_success"));
    free(out);
    char url[256];
    snprintf(url, sizeof url, "%s/events/background-task?taskId=%s", base, ids[1]);
    const char *curl[] = {"/usr/bin/env", "curl", "-s", "-N", url, NULL};
    out = NULL;
    assert_int_equal(th_run(60, (char *const *)curl, &out, NULL), 0);
    assert_non_null(strstr(out, "event: bgtask_partial_success\n"));
    assert_non_null(strstr(out, "event: server_close\n"));
    free(out);
}

/* list tasks: the same records, in the same order. */
static void row_list(void)
{
    assert_same("list and GET /v1/tasks",
                ctl_json(0, "list", "--state", "SUCCESS", "--handler", "partest.run", "--limit",
                         "1", NULL),
                api(200, "GET", "/v1/tasks?state=SUCCESS&handler=partest.run&limit=1", NULL));
    /* The next page, from either's cursor. */
    cJSON *first = api(200, "GET", "/v1/tasks?state=SUCCESS&handler=partest.run&limit=1", NULL);
    const char *cur = jstr(first, "next_cursor");
    assert_true(*cur);
    char path[256];
    snprintf(path, sizeof path, "/v1/tasks?state=SUCCESS&handler=partest.run&limit=1&cursor=%s",
             cur);
    assert_same("list --cursor and GET /v1/tasks?cursor=",
                ctl_json(0, "list", "--state", "SUCCESS", "--handler", "partest.run", "--limit",
                         "1", "--cursor", cur, NULL),
                api(200, "GET", path, NULL));
    cJSON_Delete(first);
}

/* live hosts, handlers and queue figures: the same, less what ages between two reads. */
static void row_hosts_handlers_stats(void)
{
    assert_same("hosts and GET /v1/hosts",
                without(without(ctl_json(0, "hosts", NULL), "expires_ms"), "updated_ms"),
                without(without(detach(api(200, "GET", "/v1/hosts", NULL), "hosts"), "expires_ms"),
                        "updated_ms"));
    assert_same("handlers and GET /v1/handlers",
                without(ctl_json(0, "handlers", NULL), "oldest_due_age_ms"),
                without(api(200, "GET", "/v1/handlers", NULL), "oldest_due_age_ms"));
    /* outcomes_since_ms is a minute of each read's own now. */
    assert_same("stats and GET /v1/stats",
                without(without(ctl_json(0, "stats", NULL), "oldest_due_age_ms"),
                        "outcomes_since_ms"),
                without(without(api(200, "GET", "/v1/stats", NULL), "oldest_due_age_ms"),
                        "outcomes_since_ms"));
}

/* the history: the same buckets, both ways, over a range given in full (two reads at
 * different times would end "now" at different times). */
static void row_history(void)
{
    char since[32], until[32], path[256];
    long long now = it_redis_ms();
    snprintf(since, sizeof since, "%lld", now - 3 * 3600 * 1000);
    snprintf(until, sizeof until, "%lld", now + 60000);
    snprintf(path, sizeof path, "/v1/history?handler=demo.echo&since=%s&until=%s&step=15m", since,
             until);
    cJSON *a = ctl_json(0, "history", "--handler", "demo.echo", "--since", since, "--until", until,
                        "--step", "15m", NULL);
    cJSON *b = api(200, "GET", path, NULL);
    const cJSON *s = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(a, "handlers"), 0),
                                         "success");
    double n = 0;
    const cJSON *v;
    cJSON_ArrayForEach (v, s)
        n += v->valuedouble;
    assert_true(n >= 1); /* the events row's tasks */
    assert_same("history and GET /v1/history", a, b);
    snprintf(path, sizeof path, "/v1/history?since=%s&until=%s", since, until);
    assert_same("history of every handler",
                ctl_json(0, "history", "--since", since, "--until", until, NULL),
                api(200, "GET", path, NULL));
}

/* read its logs, and follow them: the same lines both ways. */
static void row_logs(void)
{
    char *id = it_submit("logger.lines", "{\"n\": 4}", NULL);
    assert_true(it_wait_state(id, "SUCCESS", 30));
    char path[256];
    snprintf(path, sizeof path, "/v1/tasks/%s/logs?after=1&limit=2", id);
    cJSON *a = ctl_json(0, "logs", id, "--after", "1", "--limit", "2", NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(a, "lines")), 2);
    assert_same("logs and GET .../logs", a, api(200, "GET", path, NULL));
    /* Followed: bgtaskctl's JSON lines are the data of the stream's events. */
    char *text = it_ctl(0, NULL, "--json", "logs", id, "--follow", NULL);
    char url[256];
    snprintf(url, sizeof url, "%s/v1/tasks/%s/logs?follow=1", base, id);
    const char *curl[] = {"/usr/bin/env", "curl", "-s", "-N", url, NULL};
    char *out = NULL;
    assert_int_equal(th_run(60, (char *const *)curl, &out, NULL), 0);
    char *mine = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&mine, &len);
    for (const char *p = strstr(out, "\ndata: {\"seq\""); p; p = strstr(p + 1, "\ndata: {\"seq\"")) {
        const char *end = strchr(p + 1, '\n');
        fprintf(m, "%.*s\n", (int)(end - p - 7), p + 7);
    }
    fclose(m);
    assert_string_equal(text, mine);
    assert_non_null(strstr(out, "event: server_close"));
    free(mine);
    free(out);
    free(text);
    free(id);
}

/* every task's events: events --json and the /v1/events stream see the same task's. */
static void row_events(void)
{
    char *dir = th_tmpdir("parity-events"), *a = NULL, *b = NULL;
    assert_true(asprintf(&a, "%s/ctl", dir) > 0 && asprintf(&b, "%s/api", dir) > 0);
    char *bin = it_bin("bgtaskctl"), url[256];
    snprintf(url, sizeof url, "%s/v1/events?handler=demo.echo", base);
    char *ctl[] = {bin, "--redis", fx.r.url, "--json", "events", "--handler", "demo.echo", NULL};
    char *curl[] = {"/usr/bin/env", "curl", "-s", "-N", url, NULL};
    pid_t pa = spawn(ctl, a), pb = spawn(curl, b);
    /* Both are listening once a task's events reach both. */
    char *first = NULL;
    bool up = false;
    for (int i = 0; i < 50 && !up; i++) {
        free(first);
        first = it_submit("demo.echo", NULL, NULL);
        up = TH_WAIT_UNTIL(0.5, file_says(a, first) > 0 && file_says(b, first) > 0);
    }
    char *id = it_submit("demo.echo", "{\"x\": 1}", NULL);
    bool both = TH_WAIT_UNTIL(30, file_says(a, "bgtask_done") >= 1 && file_says(b, id) >= 2 &&
                                      file_says(a, id) >= 2 &&
                                      file_says(b, "event: bgtask_done") >= 1);
    stop(pa);
    stop(pb);
    assert_true(up);
    assert_true(both);
    /* The same events of the task: "Task started", then done. */
    assert_int_equal(file_says(a, id), file_says(b, id));
    free(first);
    free(id);
    free(bin);
    free(a);
    free(b);
    free(dir);
}

/*
 * The operator's operations: the dry runs of the bulk ones answer the same
 * both ways; a retry of one failed task answers the same as of another; a
 * pause (or resume) and the same again differ only in "changed".
 */
static void row_ops(void)
{
    char *f1 = it_submit("demo.fail", NULL, NULL), *f2 = it_submit("demo.fail", NULL, NULL);
    assert_true(it_wait_state(f1, "FAILURE", 30) && it_wait_state(f2, "FAILURE", 30));
    assert_same("retry --handler --dry-run and POST /v1/tasks/retry",
                ctl_json(0, "retry", "--handler", "demo.fail", "--since", "1h", "--dry-run", NULL),
                api(200, "POST", "/v1/tasks/retry",
                    "{\"handler\": \"demo.fail\", \"since\": \"1h\", \"dry_run\": true}"));
    assert_same("purge --dry-run and POST /v1/tasks/purge",
                ctl_json(0, "purge", "--older-than", "0s", "--handler", "demo.fail", "--dry-run",
                         NULL),
                api(200, "POST", "/v1/tasks/purge",
                    "{\"older_than\": \"0s\", \"handler\": \"demo.fail\", \"dry_run\": true}"));
    char *pid = it_submit("demo.echo", NULL, NULL);
    assert_true(it_wait_state(pid, "SUCCESS", 30));
    char ids[128];
    snprintf(ids, sizeof ids, "{\"ids\": [\"%s\"], \"dry_run\": true}", pid);
    assert_same("purge ID --dry-run and POST /v1/tasks/purge {ids}",
                ctl_json(0, "purge", pid, "--dry-run", NULL),
                api(200, "POST", "/v1/tasks/purge", ids));
    assert_same("cancel --handler --all --dry-run and POST /v1/tasks/cancel",
                ctl_json(0, "cancel", "--handler", "demo.sleep", "--all", "--dry-run", NULL),
                api(200, "POST", "/v1/tasks/cancel",
                    "{\"handler\": \"demo.sleep\", \"dry_run\": true}"));
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s/retry", f2);
    assert_same("retry ID and POST /v1/tasks/ID/retry",
                without(ctl_json(0, "retry", f1, NULL), "task_id"),
                without(api(202, "POST", path, NULL), "task_id"));
    cJSON *a = ctl_json(0, "pause", "demo.fail", "--reason", "parity", NULL);
    cJSON *b = api(200, "POST", "/v1/handlers/demo.fail/pause", "{\"reason\": \"other\"}");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(a, "changed")));
    assert_same("pause and POST /v1/handlers/H/pause", without(a, "changed"), without(b, "changed"));
    a = api(200, "POST", "/v1/handlers/demo.fail/resume", NULL);
    b = ctl_json(0, "resume", "demo.fail", NULL);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(a, "changed")));
    assert_same("resume and POST /v1/handlers/H/resume", without(a, "changed"),
                without(b, "changed"));
    free(f1);
    free(f2);
    free(pid);
}

/* The rows walked, by the names of the README's table. */
static const char *const walked[] = {
    "submit a task",     "give it its subtasks",      "follow a task until it ends",
    "read a task",       "read its subtasks",         "cancel a task",
    "retry its failed subtasks", "list tasks",        "live hosts",
    "handlers",          "queue figures",             "every task's events",
    "retry a failed task", "retry a handler's failed tasks", "purge finished tasks",
    "cancel a handler's tasks", "pause, resume a handler", "history",
    "read its logs", "follow its logs",
    NULL,
};

/* The first column of the README's table "bgtaskctl and the HTTP API" (malloc'd names). */
static int readme_rows(char **names, int max)
{
    char *text = it_read_file("README.md");
    const char *at = strstr(text, "\n### bgtaskctl and the HTTP API\n");
    assert_non_null(at);
    at = strstr(at, "\n| what |");
    assert_non_null(at);
    at = strstr(at + 1, "\n|---");
    assert_non_null(at);
    int n = 0;
    for (at = strchr(at + 1, '\n'); at && strncmp(at, "\n| ", 3) == 0 && n < max;
         at = strchr(at + 1, '\n')) {
        const char *end = strstr(at + 3, " |");
        assert_non_null(end);
        names[n++] = strndup(at + 3, (size_t)(end - at - 3));
    }
    free(text);
    return n;
}

/* The README's table and the rows walked here name the same things. */
static void test_table_is_walked(void **state)
{
    char *names[64];
    int n = readme_rows(names, 64);
    int walked_n = 0;
    while (walked[walked_n])
        walked_n++;
    for (int i = 0; i < n; i++) {
        bool found = false;
        for (int k = 0; walked[k]; k++)
            found |= strcmp(walked[k], names[i]) == 0;
        if (!found)
            fail_msg("README row '%s' is not walked by test_parity", names[i]);
        free(names[i]);
    }
    assert_int_equal(n, walked_n);
}

static void test_walk(void **state)
{
    it_need_redis();
    host_start();
    row_submit();
    row_subtasks();
    row_status();
    row_cancel();
    const char *ids[2];
    make_partials(ids);
    row_subtasks_read(ids[0]);
    row_list();
    row_retry_and_follow(ids);
    row_hosts_handlers_stats();
    row_events();
    row_ops();
    row_history();
    row_logs();
    free((char *)ids[0]);
    free((char *)ids[1]);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_is_walked),
        IT_TEST(test_walk),
    };
    return cmocka_run_group_tests_name("parity", tests, group_setup, it_group_teardown);
}

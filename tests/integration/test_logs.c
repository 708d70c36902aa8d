/*
 * test_logs.c - a task's bgt_log lines kept with its record, read through the
 * HTTP API and bgtaskctl: the caps (lines, bytes, a line cut at 1 KiB, the
 * oldest dropped and counted), the level kept, subtasks' lines, lines of a
 * plugin isolated in worker processes, following a task's log to its end
 * (SSE and bgtaskctl logs --follow, resumed with Last-Event-ID), the log going
 * with its record, and bad input.
 */
#include <math.h>
#include <signal.h>
#include <unistd.h>

#include "../harness/itest.h"

static char base[64];      /* "http://127.0.0.1:<port>" of the test's host */
static char logger[1024];  /* plugins.load entry of the logger test plugin */

static int group_setup(void **state)
{
    char *path = th_plugin_path("logger", true);
    snprintf(logger, sizeof logger, "{ name = \"logger\"; file = \"%s\"; }", path);
    free(path);
    return it_group_setup(state);
}

/* Start the test's host ("logs": the logger plugin with more settings in plugin, HTTP on a
 * free port, more settings of the tasks group in tasks) and fill base. */
static th_host *host_start(const char *plugin, const char *tasks)
{
    char load[1200];
    snprintf(load, sizeof load, "%.*s%s }", (int)strlen(logger) - 2, logger, plugin ? plugin : "");
    th_host *h = it_host_start(&(th_host_opts){.id = "logs",
                                                .workers = 4,
                                                .plugins = load,
                                                .tasks_settings = tasks,
                                                .extra = "http: { listen = \"127.0.0.1:0\"; };"});
    int port = th_host_http_port(h);
    assert_true(port > 0);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    return h;
}

/* GET path must answer `want`: its body as JSON. */
static cJSON *api(int want, const char *path)
{
    char url[512], *out = NULL;
    snprintf(url, sizeof url, "%s%s", base, path);
    int status = th_http("GET", url, NULL, NULL, &out);
    if (status != want)
        fail_msg("GET %s: %d, want %d: %s", path, status, want, out ? out : "");
    cJSON *j = cJSON_Parse(out);
    if (!j)
        fail_msg("GET %s: not JSON: %s", path, out);
    free(out);
    return j;
}

static cJSON *logs_of(const char *id, const char *query)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/tasks/%s/logs%s", id, query ? query : "");
    return api(200, path);
}

static double num(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItem(o, f);
    if (!cJSON_IsNumber(v))
        fail_msg("field %s is not a number", f);
    return v->valuedouble;
}

static const cJSON *line(const cJSON *page, int i)
{
    return cJSON_GetArrayItem(cJSON_GetObjectItem(page, "lines"), i);
}

static const char *msg(const cJSON *page, int i)
{
    return cJSON_GetObjectItem(line(page, i), "message")->valuestring;
}

static int nlines(const cJSON *page) { return cJSON_GetArraySize(cJSON_GetObjectItem(page, "lines")); }

/* A task of handler with args that must end in state. */
static char *run(const char *handler, const char *args, const char *state)
{
    char *id = it_submit(handler, args, NULL);
    assert_true(it_wait_state(id, state, 30));
    return id;
}

/* The caps: the newest lines kept, the others counted as dropped (by the host before it
 * wrote them or by Redis after), a line cut at 1 KiB, lines below tasks.log_level left
 * out; the record's retention takes its log with it. */
static void test_caps_and_levels(void **state)
{
    it_need_redis();
    host_start(NULL, "log_lines = 5; log_bytes = 4096; retention = 2;");
    /* 12 lines at once: the 5 newest, numbered as logged. */
    char *id = run("logger.lines", "{\"n\": 12}", "SUCCESS");
    cJSON *p = logs_of(id, NULL);
    assert_int_equal(nlines(p), 5);
    assert_true(num(p, "dropped") == 7);
    assert_string_equal(msg(p, 0), "line 8 of 12");
    assert_string_equal(msg(p, 4), "line 12 of 12");
    assert_true(num(line(p, 0), "seq") == 8 && num(line(p, 4), "seq") == 12);
    assert_true(num(p, "next") == 12);
    const cJSON *l = line(p, 0);
    assert_string_equal(cJSON_GetObjectItem(l, "level")->valuestring, "info");
    assert_string_equal(cJSON_GetObjectItem(l, "host")->valuestring, "logs");
    assert_true(num(l, "attempt") == 1);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(l, "subtask")));
    assert_true(fabs(num(l, "ts_ms") - (double)it_redis_ms()) < 60000);
    cJSON_Delete(p);
    /* after and limit: a page. */
    p = logs_of(id, "?after=9&limit=2");
    assert_int_equal(nlines(p), 2);
    assert_true(num(line(p, 0), "seq") == 10 && num(p, "next") == 11);
    cJSON_Delete(p);
    p = logs_of(id, "?after=12");
    assert_int_equal(nlines(p), 0);
    assert_true(num(p, "next") == 12);
    cJSON_Delete(p);

    /* Bytes: 4 lines of 1200 bytes are cut at 1024; 3 of them fit in 4096 bytes. */
    char *big = run("logger.lines", "{\"n\": 4, \"bytes\": 1200}", "SUCCESS");
    p = logs_of(big, NULL);
    assert_int_equal(nlines(p), 3);
    assert_true(num(p, "dropped") == 1);
    assert_int_equal(strlen(msg(p, 0)), 1024);
    assert_int_equal(strncmp(msg(p, 0), "line 2 of 4xxx", 14), 0);
    cJSON_Delete(p);

    /* Levels: debug is below tasks.log_level (info), warning is kept. */
    char *dbg = run("logger.lines", "{\"n\": 2, \"level\": \"debug\"}", "SUCCESS");
    p = logs_of(dbg, NULL);
    assert_int_equal(nlines(p), 0);
    assert_true(num(p, "dropped") == 0);
    cJSON_Delete(p);
    char *warn = run("logger.lines", "{\"n\": 1, \"level\": \"warning\", \"fail\": true}",
                     "FAILURE");
    p = logs_of(warn, NULL);
    assert_int_equal(nlines(p), 1);
    assert_string_equal(cJSON_GetObjectItem(line(p, 0), "level")->valuestring, "warning");
    cJSON_Delete(p);

    /* bgtaskctl logs: the same page with --json; a line per line without. */
    char *text = it_ctl(0, NULL, "--json", "logs", id, "--after", "9", "--limit", "2", NULL);
    cJSON *a = cJSON_Parse(text);
    free(text);
    cJSON *b = logs_of(id, "?after=9&limit=2");
    assert_true(cJSON_Compare(a, b, true));
    cJSON_Delete(a);
    cJSON_Delete(b);
    char *err = NULL;
    text = it_ctl(0, &err, "logs", id, NULL);
    assert_non_null(strstr(text, "  info    1      line 12 of 12\n"));
    assert_non_null(strstr(err, "(7 older line(s) no longer kept)"));
    free(text);
    free(err);

    /* The record goes after tasks.retention (2 s), and its log with it. */
    assert_true(th_log_len(fx.c, IT_PREFIX, id) == 5);
    assert_true(TH_WAIT_UNTIL(30, !th_task_exists(fx.c, IT_PREFIX, id)));
    assert_true(TH_WAIT_UNTIL(5, th_log_len(fx.c, IT_PREFIX, id) == 0));
    cJSON_Delete(api(404, "/v1/tasks/00000000-0000-4000-8000-000000000009/logs"));
    free(id);
    free(big);
    free(dbg);
    free(warn);
    it_pass();
}

/* Following: the lines kept, then the new ones, then server_close once the task ended;
 * Last-Event-ID resumes. bgtaskctl logs --follow does the same. */
static void test_follow(void **state)
{
    it_need_redis();
    host_start(NULL, NULL);
    char *id = it_submit("logger.lines", "{\"n\": 6, \"ms\": 150}", NULL);
    char url[256];
    snprintf(url, sizeof url, "%s/v1/tasks/%s/logs?follow=1", base, id);
    const char *curl[] = {"/usr/bin/env", "curl", "-s", "-N", "--max-time", "60", url, NULL};
    char *out = NULL;
    assert_int_equal(th_run(60, (char *const *)curl, &out, NULL), 0);
    int n = 0;
    for (const char *p = strstr(out, "event: log\n"); p; p = strstr(p + 1, "event: log\n"))
        n++;
    if (n != 6 || !strstr(out, "id: 6\ndata: {\"seq\":6,") ||
        !strstr(out, "\"message\":\"line 6 of 6\"}\n\nevent: server_close\ndata: {}\n\n"))
        fail_msg("the stream: %s", out);
    free(out);
    assert_true(it_wait_state(id, "SUCCESS", 30));

    /* Resumed after line 4: lines 5 and 6, then the end. */
    const char *resume[] = {"/usr/bin/env", "curl", "-s", "-N", "--max-time", "60",
                            "-H", "Last-Event-ID: 4", url, NULL};
    assert_int_equal(th_run(60, (char *const *)resume, &out, NULL), 0);
    if (strstr(out, "id: 4\n") || !strstr(out, "id: 5\n") || !strstr(out, "id: 6\n") ||
        !strstr(out, "event: server_close"))
        fail_msg("the resumed stream: %s", out);
    free(out);

    /* bgtaskctl logs --follow of a running task: every line, then exit 0. */
    char *id2 = it_submit("logger.lines", "{\"n\": 5, \"ms\": 150}", NULL);
    out = it_ctl(0, NULL, "logs", id2, "--follow", NULL);
    for (int i = 1; i <= 5; i++) {
        char want[32];
        snprintf(want, sizeof want, "line %d of 5\n", i);
        if (!strstr(out, want))
            fail_msg("logs --follow misses '%s': %s", want, out);
    }
    free(out);
    out = it_ctl(0, NULL, "--json", "logs", id2, "--follow", "--after", "3", NULL);
    assert_non_null(strstr(out, "\"seq\":4,"));
    assert_null(strstr(out, "\"seq\":3,"));
    assert_non_null(strstr(out, "\"message\":\"line 5 of 5\"}\n"));
    free(out);
    free(id);
    free(id2);
    it_pass();
}

/* The lines of subtasks (with their index), and of a plugin isolated in worker processes. */
static void test_subtasks_and_isolation(void **state)
{
    it_need_redis();
    host_start(" isolation = \"process\"; processes = 2;", NULL);
    char *id = run("logger.lines", "{\"n\": 3}", "SUCCESS");
    cJSON *p = logs_of(id, NULL);
    assert_int_equal(nlines(p), 3);
    assert_string_equal(msg(p, 2), "line 3 of 3");
    cJSON_Delete(p);
    char *dir = th_tmpdir("logs"), *file = NULL;
    assert_true(asprintf(&file, "%s/subs.json", dir) > 0);
    it_write_file(file, "[{}, {}, {}]");
    char *par = it_submit("logger.par", NULL, "--subtasks-file", file, NULL);
    assert_true(it_wait_state(par, "SUCCESS", 30));
    p = logs_of(par, NULL);
    assert_int_equal(nlines(p), 3);
    bool seen[3] = {false, false, false};
    for (int i = 0; i < 3; i++) {
        int sub = (int)num(line(p, i), "subtask");
        assert_true(sub >= 0 && sub < 3);
        char want[32];
        snprintf(want, sizeof want, "subtask %d", sub);
        assert_string_equal(msg(p, i), want);
        seen[sub] = true;
    }
    assert_true(seen[0] && seen[1] && seen[2]);
    cJSON_Delete(p);
    free(par);
    free(file);
    free(dir);
    free(id);
    it_pass();
}

/* Bad input: 400 naming the argument, 404 for an unknown task; bgtaskctl exits 2 and 5. */
static void test_bad_input(void **state)
{
    it_need_redis();
    host_start(NULL, NULL);
    char *id = run("logger.lines", "{\"n\": 1}", "SUCCESS");
    static const struct {
        const char *query, *says;
    } bad[] = {
        {"?after=-1", "after must be a line number"},
        {"?after=abc", "after must be a line number"},
        {"?limit=0", "limit must be an integer 1..1000"},
        {"?limit=1001", "limit must be an integer 1..1000"},
        {"?follow=maybe", "follow must be 1 or 0"},
        {"?lines=3", "unknown query argument 'lines'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, "/v1/tasks/%s/logs%s", id, bad[i].query);
        cJSON *e = api(400, path);
        const char *m =
            cJSON_GetObjectItem(cJSON_GetObjectItem(e, "error"), "message")->valuestring;
        if (!strstr(m, bad[i].says))
            fail_msg("%s: '%s' does not say '%s'", bad[i].query, m, bad[i].says);
        cJSON_Delete(e);
    }
    cJSON_Delete(api(404, "/v1/tasks/00000000-0000-4000-8000-00000000000a/logs"));
    cJSON_Delete(api(404, "/v1/tasks/not-a-task/logs"));
    char *err = NULL;
    free(it_ctl(5, &err, "logs", "00000000-0000-4000-8000-00000000000a", NULL));
    assert_non_null(strstr(err, "not found"));
    free(err);
    free(it_ctl(2, &err, "logs", id, "--limit", "5000", NULL));
    assert_non_null(strstr(err, "--limit"));
    free(err);
    free(it_ctl(2, &err, "logs", id, "--after", "x", NULL));
    assert_non_null(strstr(err, "--after needs a line number"));
    free(err);
    free(id);
    it_pass();
}

/* A purged task's log goes with it; tasks cancelled in bulk are counted in the history. */
static void test_purge_and_bulk_cancel(void **state)
{
    it_need_redis();
    host_start(NULL, NULL);
    char *id = run("logger.lines", "{\"n\": 2}", "SUCCESS");
    assert_true(th_log_len(fx.c, IT_PREFIX, id) == 2);
    char url[256], body[128], *out = NULL;
    snprintf(url, sizeof url, "%s/v1/tasks/purge", base);
    snprintf(body, sizeof body, "{\"ids\": [\"%s\"]}", id);
    int status = th_http("POST", url, NULL, body, &out);
    if (status != 202)
        fail_msg("POST /v1/tasks/purge: %d %s", status, out ? out : "");
    free(out);
    assert_false(th_task_exists(fx.c, IT_PREFIX, id));
    assert_true(th_log_len(fx.c, IT_PREFIX, id) == 0);
    free(id);

    char *w1 = it_submit("logger.lines", NULL, "--delay", "600", NULL);
    char *w2 = it_submit("logger.lines", NULL, "--delay", "600", NULL);
    snprintf(url, sizeof url, "%s/v1/tasks/cancel", base);
    status = th_http("POST", url, NULL, "{\"handler\": \"logger.lines\"}", &out);
    if (status != 202)
        fail_msg("POST /v1/tasks/cancel: %d %s", status, out ? out : "");
    free(out);
    assert_true(it_wait_state(w1, "CANCELLED", 30) && it_wait_state(w2, "CANCELLED", 30));
    assert_int_equal(th_hist_count(fx.c, IT_PREFIX, "logger.lines", "cancelled", NULL), 2);
    free(w1);
    free(w2);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_caps_and_levels),
        IT_TEST(test_follow),
        IT_TEST(test_subtasks_and_isolation),
        IT_TEST(test_bad_input),
        IT_TEST(test_purge_and_bulk_cancel),
    };
    return cmocka_run_group_tests(tests, group_setup, it_group_teardown);
}

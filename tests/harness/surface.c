/*
 * surface.c - bgtaskctl and the HTTP API checked through any Redis address
 * (surface.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "surface.h"

/* A task short enough to wait for, long enough to report progress live (3 steps). */
#define SHORT_ARGS "{\"seconds\": 0.6, \"steps\": 3}"
/* A task that runs until it is cancelled. */
#define LONG_ARGS "{\"seconds\": 120, \"steps\": 120}"
/* How long a check may wait for a state. */
#define WAIT_S 30.0

/* bgtaskctl --redis url <args>: it must exit 0; returns its stdout (malloc'd). */
#define CTL_OK(view, ...)                                                                          \
    ({                                                                                             \
        char *out_ = NULL, *err_ = NULL;                                                           \
        int rc_ = th_ctl(view, &out_, &err_, __VA_ARGS__, NULL);                                   \
        if (rc_ != 0)                                                                              \
            fail_msg("bgtaskctl %s: exit %d: %s", #__VA_ARGS__, rc_, err_ ? err_ : "");            \
        free(err_);                                                                                \
        out_;                                                                                      \
    })

/* How many times needle occurs in text. */
static int count_of(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* A string member of a JSON object text (malloc'd), or NULL. */
static char *json_member(const char *text, const char *name)
{
    cJSON *j = cJSON_Parse(text);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    char *s = cJSON_IsString(v) ? strdup(v->valuestring) : NULL;
    cJSON_Delete(j);
    return s;
}

/* Whether bgtaskctl status --json shows task id with member name equal to want (NULL: any
 * string but ""). */
static bool ctl_status_is(const th_redis *view, const char *id, const char *name, const char *want)
{
    char *out = NULL;
    int rc = th_ctl(view, &out, NULL, "status", id, "--json", NULL);
    char *v = rc == 0 ? json_member(out, name) : NULL;
    bool is = v && (want ? strcmp(v, want) == 0 : *v != '\0');
    free(v);
    free(out);
    return is;
}

/* Whether GET base/v1/tasks/<id> answers member name equal to want (NULL: any string but
 * ""). */
static bool http_task_is(const char *base, const char *id, const char *name, const char *want)
{
    char url[256], *body = NULL;
    snprintf(url, sizeof url, "%s/v1/tasks/%s", base, id);
    int status = th_http("GET", url, NULL, NULL, &body);
    char *v = status == 200 ? json_member(body, name) : NULL;
    bool is = v && (want ? strcmp(v, want) == 0 : *v != '\0');
    free(v);
    free(body);
    return is;
}

/* GET base+path: it must answer 200; returns the body (malloc'd). */
static char *http_get_ok(const char *base, const char *path)
{
    char url[512], *body = NULL;
    snprintf(url, sizeof url, "%s%s", base, path);
    int status = th_http("GET", url, NULL, NULL, &body);
    if (status != 200)
        fail_msg("GET %s: %d %s", path, status, body ? body : "");
    return body;
}

/* POST a task of demo.sleep with args: it must answer 202; returns its id (malloc'd). */
static char *http_submit(const char *base, const char *args)
{
    char url[256], body[256], *out = NULL;
    snprintf(url, sizeof url, "%s/v1/tasks", base);
    snprintf(body, sizeof body, "{\"handler\": \"demo.sleep\", \"args\": %s}", args);
    int status = th_http("POST", url, NULL, body, &out);
    char *id = status == 202 ? json_member(out, "task_id") : NULL;
    if (!id)
        fail_msg("POST /v1/tasks: %d %s", status, out ? out : "");
    free(out);
    return id;
}

/* The CLI: submit --wait (every event live), watch, status, list, stats, hosts, cancel. */
static void check_ctl(const th_redis *view, const th_host *h)
{
    /* --wait subscribes before it submits: every event comes through the subscription. */
    char *out = CTL_OK(view, "submit", "demo.sleep", "--args", SHORT_ARGS, "--wait", "--json");
    if (count_of(out, "\"bgtask_done\"") != 1 || count_of(out, "step 1/3") < 1)
        fail_msg("submit --wait: want the progress and one bgtask_done, got:\n%s", out);
    free(out);

    char *id = CTL_OK(view, "submit", "demo.sleep", "--args", SHORT_ARGS);
    id[strcspn(id, "\n")] = '\0';
    out = CTL_OK(view, "watch", id, "--json");
    if (count_of(out, "\"bgtask_done\"") != 1)
        fail_msg("watch %s: want one bgtask_done, got:\n%s", id, out);
    free(out);
    assert_true(ctl_status_is(view, id, "state", "SUCCESS"));

    out = CTL_OK(view, "list", "--state", "SUCCESS", "--handler", "demo.sleep", "--json");
    if (!strstr(out, id))
        fail_msg("list: %s is not among the finished demo.sleep tasks:\n%s", id, out);
    free(out);
    out = CTL_OK(view, "stats", "--json");
    if (!strstr(out, "\"demo.sleep\"") || !strstr(out, "\"finished\""))
        fail_msg("stats: no demo.sleep figures:\n%s", out);
    free(out);
    out = CTL_OK(view, "hosts", "--json");
    char quoted[80];
    snprintf(quoted, sizeof quoted, "\"%s\"", h->id);
    if (!strstr(out, quoted))
        fail_msg("hosts: %s is not listed:\n%s", h->id, out);
    free(out);
    free(id);

    /* A running task, cancelled: the request reaches its host, which stops it. */
    id = CTL_OK(view, "submit", "demo.sleep", "--args", LONG_ARGS);
    id[strcspn(id, "\n")] = '\0';
    if (!TH_WAIT_UNTIL(WAIT_S, ctl_status_is(view, id, "owner", NULL)))
        fail_msg("task %s did not start", id);
    free(CTL_OK(view, "cancel", id));
    if (!TH_WAIT_UNTIL(WAIT_S, ctl_status_is(view, id, "state", "CANCELLED")))
        fail_msg("task %s was not cancelled", id);
    free(id);
}

/* Whether the stats (JSON text) show handler as paused. */
static bool shown_paused(const char *stats, const char *handler)
{
    cJSON *j = cJSON_Parse(stats);
    const cJSON *e;
    bool paused = false;
    cJSON_ArrayForEach (e, cJSON_GetObjectItemCaseSensitive(j, "handlers")) {
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(e, "handler");
        if (cJSON_IsString(h) && strcmp(h->valuestring, handler) == 0)
            paused = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "paused"));
    }
    cJSON_Delete(j);
    return paused;
}

/* The operator's commands: retry, pause and resume, purge. */
static void check_ops(const th_redis *view)
{
    char *id = CTL_OK(view, "submit", "demo.fail");
    id[strcspn(id, "\n")] = '\0';
    char *out = NULL;
    assert_int_equal(th_ctl(view, NULL, NULL, "watch", id, NULL), 1); /* it failed */
    free(CTL_OK(view, "retry", id));
    assert_int_equal(th_ctl(view, NULL, NULL, "watch", id, NULL), 1); /* again, attempt 2 */
    out = CTL_OK(view, "status", id, "--json");
    cJSON *rec = cJSON_Parse(out);
    if (cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(rec, "attempt")) != 2)
        fail_msg("retry %s: want attempt 2, got:\n%s", id, out);
    cJSON_Delete(rec);
    free(out);
    free(CTL_OK(view, "purge", id));
    char *err = NULL;
    assert_int_equal(th_ctl(view, NULL, &err, "status", id, NULL), 5); /* gone */
    assert_non_null(strstr(err, "not found"));
    free(err);
    free(id);

    /* Paused: its tasks wait, and the stats say so; resumed: they run. */
    free(CTL_OK(view, "pause", "demo.echo", "--reason", "surface check"));
    id = CTL_OK(view, "submit", "demo.echo");
    id[strcspn(id, "\n")] = '\0';
    out = CTL_OK(view, "stats", "--json");
    if (!shown_paused(out, "demo.echo"))
        fail_msg("stats: demo.echo is not shown paused:\n%s", out);
    free(out);
    free(CTL_OK(view, "resume", "demo.echo"));
    free(CTL_OK(view, "watch", id));
    free(id);
}

/* A number member of GET base/v1/tasks/<id>, or -1. */
static double http_task_num(const char *base, const char *id, const char *name)
{
    char url[256], *body = NULL;
    snprintf(url, sizeof url, "%s/v1/tasks/%s", base, id);
    int status = th_http("GET", url, NULL, NULL, &body);
    cJSON *j = status == 200 ? cJSON_Parse(body) : NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    cJSON_Delete(j);
    free(body);
    return d;
}

/* POST base+path with no body: it must answer want. */
static void http_post_expect(const char *base, const char *path, int want)
{
    char url[512], *body = NULL;
    snprintf(url, sizeof url, "%s%s", base, path);
    int status = th_http("POST", url, NULL, NULL, &body);
    if (status != want)
        fail_msg("POST %s: %d %s (want %d)", path, status, body ? body : "", want);
    free(body);
}

/* The HTTP API: submit, the task's event stream, the record, lists, stats, hosts, cancel,
 * retry, pause and resume. */
/* The sum of a history answer's series of handler and outcome (text: the answer). */
static double history_sum(const char *text, const char *handler, const char *outcome)
{
    cJSON *j = cJSON_Parse(text), *e, *v;
    double n = 0;
    cJSON_ArrayForEach (e, cJSON_GetObjectItemCaseSensitive(j, "handlers")) {
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(e, "handler");
        if (cJSON_IsString(h) && strcmp(h->valuestring, handler) == 0)
            cJSON_ArrayForEach (v, cJSON_GetObjectItemCaseSensitive(e, outcome))
                n += cJSON_IsNumber(v) ? v->valuedouble : 0;
    }
    cJSON_Delete(j);
    return n;
}

/* What reads every shard (every master of a cluster): the history, a task's log (the
 * cancelled task cancelled's), a handler with its last hour, and pages of tasks. */
static void check_reads(const char *base, const char *cancelled)
{
    char *body = http_get_ok(base, "/v1/history?handler=demo.sleep&since=1h&step=1h");
    if (history_sum(body, "demo.sleep", "success") < 1 ||
        history_sum(body, "demo.sleep", "cancelled") < 1)
        fail_msg("GET /v1/history: want demo.sleep's success and cancel counted:\n%s", body);
    free(body);
    char path[256];
    snprintf(path, sizeof path, "/v1/tasks/%s/logs", cancelled);
    body = http_get_ok(base, path);
    if (!strstr(body, "cancelled during step"))
        fail_msg("GET %s: want the handler's line on its cancel:\n%s", path, body);
    free(body);
    body = http_get_ok(base, "/v1/handlers/demo.sleep");
    if (!strstr(body, "\"last_hour\"") || !strstr(body, "\"unserved\":false"))
        fail_msg("GET /v1/handlers/demo.sleep:\n%s", body);
    free(body);
    body = http_get_ok(base, "/v1/tasks?handler=demo.sleep&limit=1");
    char *cursor = json_member(body, "next_cursor");
    if (!cursor)
        fail_msg("GET /v1/tasks?limit=1: want a next_cursor (two tasks ran):\n%s", body);
    free(body);
    snprintf(path, sizeof path, "/v1/tasks?handler=demo.sleep&limit=1&cursor=%s", cursor);
    body = http_get_ok(base, path);
    if (!strstr(body, "\"count\":1"))
        fail_msg("GET %s: want the second page:\n%s", path, body);
    free(body);
    free(cursor);
}

/* The HTTP API: submit, the task's event stream, the record, lists, stats, hosts, cancel. */
static void check_http(const char *base, const th_host *h)
{
    char *id = http_submit(base, SHORT_ARGS);
    /* The stream ends after the task's terminal event. */
    char path[256];
    snprintf(path, sizeof path, "/events/background-task?taskId=%s", id);
    char *body = http_get_ok(base, path);
    if (count_of(body, "event: bgtask_done\n") != 1 || !strstr(body, "event: server_close\n"))
        fail_msg("GET %s: want one bgtask_done, then server_close; got:\n%s", path, body);
    free(body);
    assert_true(http_task_is(base, id, "state", "SUCCESS"));

    body = http_get_ok(base, "/v1/tasks?state=SUCCESS&handler=demo.sleep&limit=100");
    if (!strstr(body, id))
        fail_msg("GET /v1/tasks: %s is not listed:\n%s", id, body);
    free(body);
    body = http_get_ok(base, "/v1/stats");
    if (!strstr(body, "\"demo.sleep\""))
        fail_msg("GET /v1/stats: no demo.sleep figures:\n%s", body);
    free(body);
    body = http_get_ok(base, "/v1/hosts");
    if (!strstr(body, h->id))
        fail_msg("GET /v1/hosts: %s is not listed:\n%s", h->id, body);
    free(body);
    free(id);

    id = http_submit(base, LONG_ARGS);
    if (!TH_WAIT_UNTIL(WAIT_S, http_task_is(base, id, "owner", NULL)))
        fail_msg("task %s did not start", id);
    snprintf(path, sizeof path, "/v1/tasks/%s", id);
    char url[512];
    snprintf(url, sizeof url, "%s%s", base, path);
    int status = th_http("DELETE", url, NULL, NULL, &body);
    if (status != 202)
        fail_msg("DELETE %s: %d %s", path, status, body ? body : "");
    free(body);
    if (!TH_WAIT_UNTIL(WAIT_S, http_task_is(base, id, "state", "CANCELLED")))
        fail_msg("task %s was not cancelled through DELETE", id);
    /* The cancelled task again, as a new attempt; cancelled again. */
    snprintf(path, sizeof path, "/v1/tasks/%s/retry", id);
    http_post_expect(base, path, 202);
    if (!TH_WAIT_UNTIL(WAIT_S, http_task_num(base, id, "attempt") == 2 &&
                                   http_task_is(base, id, "owner", NULL)))
        fail_msg("task %s did not run again after POST %s", id, path);
    status = th_http("DELETE", url, NULL, NULL, &body);
    free(body);
    assert_int_equal(status, 202);
    if (!TH_WAIT_UNTIL(WAIT_S, http_task_is(base, id, "state", "CANCELLED")))
        fail_msg("task %s was not cancelled again", id);
    check_reads(base, id);
    free(id);

    http_post_expect(base, "/v1/handlers/demo.sleep/pause", 200);
    body = http_get_ok(base, "/v1/stats");
    if (!shown_paused(body, "demo.sleep"))
        fail_msg("GET /v1/stats: demo.sleep is not shown paused:\n%s", body);
    free(body);
    http_post_expect(base, "/v1/handlers/demo.sleep/resume", 200);
}

void th_surface_check(const char *url, const th_host *h)
{
    th_redis view = {0};
    snprintf(view.url, sizeof view.url, "%s", url);
    check_ctl(&view, h);
    check_ops(&view);
    int port = th_host_http_port(h);
    if (port <= 0)
        fail_msg("host %s does not say where its HTTP server listens", h->id);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    check_http(base, h);
}

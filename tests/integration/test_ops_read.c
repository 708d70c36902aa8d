/*
 * test_ops_read.c - what operators read beyond single tasks, through the HTTP
 * API and bgtaskctl against a real host: the history of ended tasks (counted
 * by every path that ends one: the host's end writes, a claim that gives up,
 * a cancel before the task ran), its keys' expiry, the outcomes in stats, the
 * handlers with the unserved ones and the last hour, and bad input refused
 * with the field named.
 */
#include <signal.h>
#include <unistd.h>

#include "../harness/itest.h"

static char base[64]; /* "http://127.0.0.1:<port>" of the test's host */

/* Start the test's host ("ops": demo, HTTP on a free port, more settings in extra) and
 * fill base. */
static th_host *host_start(const char *extra)
{
    char conf[512];
    snprintf(conf, sizeof conf, "http: { listen = \"127.0.0.1:0\"; }; %s", extra ? extra : "");
    th_host *h = it_host_start(&(th_host_opts){.id = "ops", .workers = 4, .extra = conf});
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

/* GET path must answer 400 with a message that says `says`. */
static void api_refuses(const char *path, const char *says)
{
    cJSON *e = api(400, path);
    const char *msg = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "error"), "message")->valuestring;
    if (!strstr(msg, says))
        fail_msg("GET %s: message '%s' does not say '%s'", path, msg, says);
    cJSON_Delete(e);
}

/* v printed must be want. */
static void assert_text(const cJSON *v, const char *want)
{
    char *got = cJSON_PrintUnformatted(v);
    if (strcmp(got, want) != 0)
        fail_msg("got %s, want %s", got, want);
    free(got);
}

/* bgtaskctl --json with these arguments, exit 0: its stdout as JSON. */
#define ctl_json(...) json_of(it_ctl(0, NULL, "--json", __VA_ARGS__))

static cJSON *json_of(char *text)
{
    cJSON *j = cJSON_Parse(text);
    if (!j)
        fail_msg("not JSON: %s", text);
    free(text);
    return j;
}

static double num(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItem(o, f);
    if (!cJSON_IsNumber(v))
        fail_msg("field %s is not a number", f);
    return v->valuedouble;
}

/* The entry of handler in an answer's "handlers", or NULL. */
static const cJSON *entry_of(const cJSON *o, const char *handler)
{
    const cJSON *e;
    cJSON_ArrayForEach (e, cJSON_GetObjectItem(o, "handlers"))
        if (strcmp(cJSON_GetObjectItem(e, "handler")->valuestring, handler) == 0)
            return e;
    return NULL;
}

/* The sum of an outcome's series of handler in a history answer (0: not listed). */
static double series_sum(const cJSON *hist, const char *handler, const char *outcome)
{
    const cJSON *e = entry_of(hist, handler), *v;
    double n = 0;
    cJSON_ArrayForEach (v, cJSON_GetObjectItem(e, outcome))
        n += v->valuedouble;
    return n;
}

/* The counts a history answer must give handler: success, partial, failure, cancelled. */
static void assert_series(const cJSON *hist, const char *handler, int s, int p, int f, int c)
{
    int got[4] = {(int)series_sum(hist, handler, "success"),
                  (int)series_sum(hist, handler, "partial_success"),
                  (int)series_sum(hist, handler, "failure"),
                  (int)series_sum(hist, handler, "cancelled")};
    if (got[0] != s || got[1] != p || got[2] != f || got[3] != c)
        fail_msg("%s: history %d/%d/%d/%d, want %d/%d/%d/%d", handler, got[0], got[1], got[2],
                 got[3], s, p, f, c);
}

/* Tasks ended every way a task can end, each counted once in the history: by the host
 * (success, failure, partial success, a cancel while it ran), by a claim (a corrupted
 * record), by a cancel before it ran. */
static void test_history_outcomes(void **state)
{
    it_need_redis();
    host_start(NULL);
    char *ok1 = it_submit("demo.echo", "{\"n\": 1}", NULL);
    char *ok2 = it_submit("demo.echo", "{\"n\": 2}", NULL);
    char *failed = it_submit("demo.fail", NULL, NULL);
    char *partial = it_submit("demo.parallel", "{\"items\": 3, \"ms\": 1, \"fail\": [1]}",
                              "--on-failure", "continue", NULL);
    char *waiting = it_submit("demo.echo", NULL, "--delay", "600", NULL);
    char *corrupt = it_submit("demo.echo", NULL, "--delay", "600", NULL);
    char *running = it_submit("demo.sleep", "{\"seconds\": 60, \"steps\": 600}", NULL);
    assert_true(TH_WAIT_UNTIL(30, it_field_ll(running, "progress_current") >= 1));
    free(it_ctl(0, NULL, "cancel", waiting, NULL));
    free(it_ctl(0, NULL, "cancel", running, NULL));
    th_task_set(fx.c, IT_PREFIX, corrupt, "max_attempts", "lots");
    th_task_due(fx.c, IT_PREFIX, "demo.echo", corrupt);
    assert_true(it_wait_state(ok1, "SUCCESS", 30));
    assert_true(it_wait_state(ok2, "SUCCESS", 30));
    assert_true(it_wait_state(failed, "FAILURE", 30));
    assert_true(it_wait_state(partial, "SUCCESS", 30));
    assert_true(it_wait_state(waiting, "CANCELLED", 30));
    assert_true(it_wait_state(running, "CANCELLED", 30));
    assert_true(it_wait_state(corrupt, "FAILURE", 30));
    it_assert_field(partial, "outcome", "partial_success");

    /* In Redis, as the README lays it out: counts per minute, expiring a window (7 days by
     * default) after their minute. */
    th_hist_keys keys;
    assert_int_equal(th_hist_count(fx.c, IT_PREFIX, "demo.echo", "success", &keys), 2);
    assert_true(keys.n >= 1);
    assert_true(keys.min_pttl > 604800000LL - 120000 && keys.max_pttl <= 604800000LL + 60000);
    assert_int_equal(th_hist_count(fx.c, IT_PREFIX, "demo.echo", "failure", NULL), 1);
    assert_int_equal(th_hist_count(fx.c, IT_PREFIX, "demo.echo", "cancelled", NULL), 1);
    assert_int_equal(th_hist_count(fx.c, IT_PREFIX, "demo.fail", "failure", NULL), 1);
    assert_int_equal(th_hist_count(fx.c, IT_PREFIX, "demo.parallel", "partial_success", NULL), 1);
    assert_int_equal(th_hist_count(fx.c, IT_PREFIX, "demo.sleep", "cancelled", NULL), 1);

    /* GET /v1/history: one handler, then all of them, per minute over the last hour. */
    cJSON *h = api(200, "/v1/history?handler=demo.echo&since=1h&step=1m");
    assert_true(num(h, "step_s") == 60);
    int nb = cJSON_GetArraySize(cJSON_GetObjectItem(entry_of(h, "demo.echo"), "success"));
    assert_true(nb == 60 || nb == 61);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(h, "handlers")), 1);
    assert_series(h, "demo.echo", 2, 0, 1, 1);
    cJSON_Delete(h);
    h = api(200, "/v1/history?since=1h");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(h, "handlers")), 4);
    assert_series(h, "demo.echo", 2, 0, 1, 1);
    assert_series(h, "demo.fail", 0, 0, 1, 0);
    assert_series(h, "demo.parallel", 0, 1, 0, 0);
    assert_series(h, "demo.sleep", 0, 0, 0, 1);
    assert_true(num(h, "since_ms") <= it_redis_ms() - 3600000 &&
                num(h, "since_ms") > it_redis_ms() - 3600000 - 120000);
    cJSON_Delete(h);
    /* The default range (24 h) in hours; one bucket of a day. */
    h = api(200, "/v1/history");
    assert_true(num(h, "step_s") == 3600);
    assert_series(h, "demo.echo", 2, 0, 1, 1);
    cJSON_Delete(h);
    h = api(200, "/v1/history?handler=demo.fail&since=1d&step=1d");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(entry_of(h, "demo.fail"), "failure")),
                     cJSON_GetArraySize(cJSON_GetObjectItem(entry_of(h, "demo.fail"), "success")));
    assert_series(h, "demo.fail", 0, 0, 1, 0);
    cJSON_Delete(h);
    /* A range before anything ended: the handler asked for, with zeros. */
    h = api(200, "/v1/history?handler=demo.echo&since=2020-01-01T00:00:00Z&until="
                 "2020-01-01T06:00:00Z");
    assert_series(h, "demo.echo", 0, 0, 0, 0);
    assert_true(num(h, "since_ms") == 1577836800000.0);
    cJSON_Delete(h);

    /* bgtaskctl history: the same answer with --json, a table without. */
    h = ctl_json("history", "--handler", "demo.echo", "--since", "1h", NULL);
    assert_series(h, "demo.echo", 2, 0, 1, 1);
    cJSON_Delete(h);
    char *text = it_ctl(0, NULL, "history", "--since", "1h", "--step", "1h", NULL);
    assert_non_null(strstr(text, "TIME"));
    assert_non_null(strstr(text, "SUCCESS  PARTIAL  FAILURE  CANCELLED"));
    assert_non_null(strstr(text, "handlers: demo.echo demo.fail demo.parallel demo.sleep"));
    free(text);

    /* stats: the finished tasks by outcome, both ways. */
    cJSON *st = api(200, "/v1/stats"), *st2 = ctl_json("stats", NULL);
    cJSON *out[2] = {cJSON_GetObjectItem(st, "outcomes"), cJSON_GetObjectItem(st2, "outcomes")};
    for (int i = 0; i < 2; i++) {
        assert_true(num(out[i], "success") == 2 && num(out[i], "partial_success") == 1 &&
                    num(out[i], "failure") == 2 && num(out[i], "cancelled") == 2);
    }
    assert_true(cJSON_Compare(out[0], out[1], true));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(st, "unserved")), 0);
    cJSON_Delete(st);
    cJSON_Delete(st2);
    text = it_ctl(0, NULL, "stats", NULL);
    assert_non_null(strstr(text, "finished since 24h ago: success 2, partial_success 1, "
                                 "failure 2, cancelled 2"));
    free(text);

    /* handlers: the last hour of each. */
    cJSON *hs = api(200, "/v1/handlers");
    const cJSON *lh = cJSON_GetObjectItem(entry_of(hs, "demo.echo"), "last_hour");
    assert_true(num(lh, "success") == 2 && num(lh, "partial_success") == 0 &&
                num(lh, "failure") == 1 && num(lh, "cancelled") == 1);
    cJSON_Delete(hs);
    cJSON *one = api(200, "/v1/handlers/demo.parallel");
    assert_true(num(cJSON_GetObjectItem(one, "last_hour"), "partial_success") == 1);
    assert_string_equal(cJSON_GetObjectItem(one, "hosts")->child->valuestring, "ops");
    cJSON_Delete(one);
    char *ids[] = {ok1, ok2, failed, partial, waiting, corrupt, running};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        free(ids[i]);
    it_pass();
}

/* Bad input: 400 (bgtaskctl: exit 2) with the argument named, and nothing read. */
static void test_bad_input(void **state)
{
    it_need_redis();
    host_start(NULL);
    api_refuses("/v1/history?since=yesterday", "since must be a time (RFC 3339");
    api_refuses("/v1/history?until=soon", "until must be a time");
    api_refuses("/v1/history?since=2026-13-01T00:00:00Z", "since must be");
    api_refuses("/v1/history?step=90s", "step must be a whole number of minutes");
    api_refuses("/v1/history?step=0m", "step must be a whole number of minutes");
    api_refuses("/v1/history?step=7%20days", "got '7 days'");
    api_refuses("/v1/history?since=7d&step=1m", "choose a larger step");
    api_refuses("/v1/history?since=1h&until=2h", "until must be later than since");
    api_refuses("/v1/history?handler=Bad!Name", "handler must be a handler name");
    api_refuses("/v1/history?hander=demo.echo", "unknown query argument 'hander'");
    api_refuses("/v1/handlers/Bad!Name", "invalid handler name 'Bad!Name'");
    api_refuses("/v1/handlers/demo.echo?x=1", "unknown query argument 'x'");
    cJSON *nf = api(404, "/v1/handlers/no.such");
    assert_non_null(strstr(cJSON_GetObjectItem(cJSON_GetObjectItem(nf, "error"), "message")
                               ->valuestring,
                           "no handler 'no.such': no live host serves it and no task waits"));
    cJSON_Delete(nf);
    char *err = NULL;
    free(it_ctl(2, &err, "history", "--since", "yesterday", NULL));
    assert_non_null(strstr(err, "since must be a time"));
    free(err);
    free(it_ctl(2, &err, "history", "--step", "90s", NULL));
    assert_non_null(strstr(err, "step must be a whole number of minutes"));
    free(err);
    free(it_ctl(2, &err, "history", "--handler", "Bad!Name", NULL));
    assert_non_null(strstr(err, "handler must be a handler name"));
    free(err);
    it_pass();
}

/* A handler with tasks waiting that no live host serves is unserved: in handlers (its
 * entry, and the list), in stats, and first in bgtaskctl stats. A served handler with
 * tasks waiting is not. */
static void test_unserved(void **state)
{
    it_need_redis();
    host_start(NULL);
    free(it_submit("nobody.home", NULL, NULL));
    free(it_submit("nobody.home", NULL, NULL));
    free(it_submit("demo.sleep", NULL, "--delay", "600", NULL));
    cJSON *hs = api(200, "/v1/handlers");
    assert_text(cJSON_GetObjectItem(hs, "unserved"), "[\"nobody.home\"]");
    const cJSON *nh = entry_of(hs, "nobody.home"), *ds = entry_of(hs, "demo.sleep");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(nh, "unserved")));
    assert_true(num(nh, "queued") == 2);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(nh, "hosts")), 0);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(ds, "unserved")));
    assert_true(num(ds, "queued") == 1);
    cJSON *cli = ctl_json("handlers", NULL);
    assert_true(cJSON_Compare(cJSON_GetObjectItem(hs, "unserved"),
                              cJSON_GetObjectItem(cli, "unserved"), true));
    cJSON_Delete(cli);
    cJSON_Delete(hs);
    cJSON *one = api(200, "/v1/handlers/nobody.home");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(one, "unserved")));
    cJSON_Delete(one);
    cJSON *st = api(200, "/v1/stats");
    assert_text(cJSON_GetObjectItem(st, "unserved"), "[\"nobody.home\"]");
    cJSON_Delete(st);
    char *text = it_ctl(0, NULL, "stats", NULL);
    static const char first[] = "waiting with no live host: nobody.home (2, oldest ";
    if (strncmp(text, first, strlen(first)) != 0)
        fail_msg("stats does not start with the unserved handler: %s", text);
    free(text);
    text = it_ctl(0, NULL, "handlers", NULL);
    assert_non_null(strstr(text, "none (unserved)"));
    free(text);
    it_pass();
}

/* history.window = 0: nothing is counted, and stats says outcomes null. */
static void test_history_off(void **state)
{
    it_need_redis();
    host_start("history: { window = 0; };");
    char *id = it_submit("demo.echo", NULL, NULL);
    assert_true(it_wait_state(id, "SUCCESS", 30));
    th_hist_keys keys;
    assert_int_equal(th_hist_count(fx.c, IT_PREFIX, "demo.echo", "success", &keys), 0);
    assert_int_equal(keys.n, 0);
    /* The host's own stats know the history is off. */
    cJSON *st = api(200, "/v1/stats");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(st, "outcomes")));
    cJSON_Delete(st);
    free(id);
    it_pass();
}

/* A task's listing key: finished_ms once finished, else created_ms. */
static double list_key(const cJSON *t)
{
    double f = num(t, "finished_ms");
    return f > 0 ? f : num(t, "created_ms");
}

/* Walk every page of GET /v1/tasks?<query>&limit=<limit> (or bgtaskctl list with args, when
 * ctl): each task must come once, newest first; returns how many came (ids in seen). */
static int walk_pages(const char *query, int limit, bool ctl, const char *const *args,
                      char (*seen)[37], int max)
{
    char *cursor = NULL;
    int n = 0, pages = 0;
    double last = 1e300;
    char last_id[37] = "~";
    do {
        cJSON *page;
        char lim[16];
        snprintf(lim, sizeof lim, "%d", limit);
        if (ctl) {
            const char *argv[16] = {"--json", "list", "--limit", lim};
            int k = 4;
            for (int i = 0; args && args[i]; i++)
                argv[k++] = args[i];
            if (cursor) {
                argv[k++] = "--cursor";
                argv[k++] = cursor;
            }
            argv[k] = NULL;
            page = json_of(it_ctl(0, NULL, argv[0], argv[1], argv[2], argv[3], argv[4], argv[5],
                                  argv[6], argv[7], argv[8], argv[9], argv[10], argv[11], NULL));
        } else {
            char path[512];
            snprintf(path, sizeof path, "/v1/tasks?%s&limit=%d%s%s", query, limit,
                     cursor ? "&cursor=" : "", cursor ? cursor : "");
            page = api(200, path);
        }
        free(cursor);
        cursor = NULL;
        const cJSON *t, *next = cJSON_GetObjectItem(page, "next_cursor");
        assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(page, "tasks")) <= limit);
        cJSON_ArrayForEach (t, cJSON_GetObjectItem(page, "tasks")) {
            const char *id = cJSON_GetObjectItem(t, "id")->valuestring;
            double k = list_key(t);
            if (k > last || (k == last && strcmp(id, last_id) >= 0))
                fail_msg("%s: %s (%.0f) after %s (%.0f): not newest first", query, id, k,
                         last_id, last);
            last = k;
            snprintf(last_id, sizeof last_id, "%s", id);
            for (int i = 0; i < n; i++)
                if (strcmp(seen[i], id) == 0)
                    fail_msg("%s: task %s listed twice", query, id);
            assert_true(n < max);
            snprintf(seen[n++], 37, "%s", id);
        }
        if (cJSON_IsString(next))
            cursor = strdup(next->valuestring);
        cJSON_Delete(page);
        assert_true(++pages < 200);
    } while (cursor);
    return n;
}

/* Pages: every task once, newest first, whatever the page size and the filters; a cursor
 * belongs to its filters; bad input refused. */
static void test_list_pages(void **state)
{
    it_need_redis();
    host_start(NULL);
    enum { NOK = 30, NFAIL = 5, NWAIT = 4, NGONE = 3, ALL = NOK + NFAIL + NWAIT + NGONE };
    char *ids[ALL];
    int k = 0;
    for (int i = 0; i < NOK; i++)
        ids[k++] = it_submit("demo.echo", NULL, NULL);
    for (int i = 0; i < NFAIL; i++)
        ids[k++] = it_submit("demo.fail", NULL, NULL);
    for (int i = 0; i < NWAIT; i++)
        ids[k++] = it_submit("demo.sleep", NULL, "--delay", "600", NULL);
    for (int i = 0; i < NGONE; i++)
        ids[k++] = it_submit("nobody.home", NULL, NULL);
    for (int i = 0; i < NOK; i++)
        assert_true(it_wait_state(ids[i], "SUCCESS", 30));
    for (int i = NOK; i < NOK + NFAIL; i++)
        assert_true(it_wait_state(ids[i], "FAILURE", 30));
    char(*seen)[37] = calloc(ALL + 1, 37);
    static const int sizes[] = {1, 4, 7, 20, 1000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        assert_int_equal(walk_pages("", sizes[i], false, NULL, seen, ALL), ALL);
    for (int i = 0; i < ALL; i++) {
        bool found = false;
        for (int j = 0; j < ALL && !found; j++)
            found = strcmp(seen[j], ids[i]) == 0;
        assert_true(found);
    }
    assert_int_equal(walk_pages("state=SUCCESS", 4, false, NULL, seen, ALL), NOK);
    assert_int_equal(walk_pages("state=failure", 2, false, NULL, seen, ALL), NFAIL);
    assert_int_equal(walk_pages("state=ONGOING", 3, false, NULL, seen, ALL), NWAIT + NGONE);
    assert_int_equal(walk_pages("handler=demo.sleep", 3, false, NULL, seen, ALL), NWAIT);
    const char *cli_args[] = {"--state", "SUCCESS", NULL};
    assert_int_equal(walk_pages("", 6, true, cli_args, seen, ALL), NOK);
    assert_int_equal(walk_pages("", 9, true, NULL, seen, ALL), ALL);

    /* since/until select on the listing key: those of the newest 10 finished. */
    cJSON *top = api(200, "/v1/tasks?state=SUCCESS&limit=10");
    double tenth = list_key(cJSON_GetArrayItem(cJSON_GetObjectItem(top, "tasks"), 9));
    cJSON_Delete(top);
    char q[128];
    snprintf(q, sizeof q, "state=SUCCESS&since=%.0f", tenth);
    int n = walk_pages(q, 3, false, NULL, seen, ALL);
    assert_true(n >= 10 && n <= NOK);
    snprintf(q, sizeof q, "state=SUCCESS&until=%.0f", tenth);
    assert_int_equal(walk_pages(q, 3, false, NULL, seen, ALL) + n, NOK);
    assert_int_equal(walk_pages("since=2020-01-01T00:00:00Z&until=2020-01-02T00:00:00Z", 5, false,
                                NULL, seen, ALL),
                     0);

    /* A cursor belongs to its filters; bad input is refused. */
    cJSON *p1 = api(200, "/v1/tasks?state=SUCCESS&limit=2");
    char path[256];
    snprintf(path, sizeof path, "/v1/tasks?state=FAILURE&limit=2&cursor=%s",
             cJSON_GetObjectItem(p1, "next_cursor")->valuestring);
    api_refuses(path, "cursor does not belong to these filters");
    cJSON_Delete(p1);
    api_refuses("/v1/tasks?cursor=nonsense", "cursor must be a next_cursor");
    api_refuses("/v1/tasks?limit=0", "limit must be an integer 1..1000");
    api_refuses("/v1/tasks?limit=1001", "limit must be an integer 1..1000");
    api_refuses("/v1/tasks?since=soon", "since must be a time");
    api_refuses("/v1/tasks?since=1h&until=2h", "until must be later than since");
    api_refuses("/v1/tasks?state=DONE", "unknown state 'DONE'");
    char *err = NULL;
    free(it_ctl(2, &err, "list", "--cursor", "nonsense", NULL));
    assert_non_null(strstr(err, "cursor must be a next_cursor"));
    free(err);
    free(it_ctl(2, &err, "list", "--until", "later", NULL));
    assert_non_null(strstr(err, "until must be a time"));
    free(err);
    for (int i = 0; i < ALL; i++)
        free(ids[i]);
    free(seen);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_history_outcomes),
        IT_TEST(test_bad_input),
        IT_TEST(test_unserved),
        IT_TEST(test_history_off),
        IT_TEST(test_list_pages),
    };
    return cmocka_run_group_tests(tests, it_group_setup, it_group_teardown);
}

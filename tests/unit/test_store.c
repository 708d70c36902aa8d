/*
 * test_store.c - the store (protocol 2) against a real redis-server: a task's
 * whole life through the store's calls, fencing by lease token, the burial of
 * a host whose entry ran out, cancel, retry and release, the events as
 * subscribers and replays see them, retention by count, JSON kept byte for
 * byte, corrupted records and wrong-typed keys, and the refusal of other
 * protocol versions.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../harness/harness.h"
#include "config.h"
#include "events.h"
#include "json_check.h"
#include "store.h"
#include "util.h"

#define SHARDS 4

typedef struct fixture {
    th_redis r;
    bgt_config cfg;
    redis_addr addr;
    store *st;
    redisContext *c;
} fixture;

static fixture fx;

static int setup(void **state)
{
    int rc = th_redis_start(&fx.r, false);
    if (rc == -2)
        return 0; /* skipped in each test */
    assert_int_equal(rc, 0);
    config_defaults(&fx.cfg);
    fx.cfg.shards = SHARDS;
    char err[256];
    assert_int_equal(redis_addr_parse(fx.r.url, &fx.addr, err, sizeof err), 0);
    fx.st = store_open(&fx.cfg, &fx.addr);
    assert_int_equal(store_connect(fx.st), 0);
    fx.c = th_redis_connect(&fx.r);
    return 0;
}

static int teardown(void **state)
{
    if (!fx.r.pid)
        return 0;
    store_free(fx.st);
    redisFree(fx.c);
    redis_addr_free(&fx.addr);
    config_free(&fx.cfg);
    th_redis_stop(&fx.r);
    return 0;
}

/* A clean database and a fresh store for each test. */
static int each(void **state)
{
    if (!fx.r.pid)
        skip();
    freeReplyObject(redisCommand(fx.c, "FLUSHALL"));
    store_free(fx.st);
    fx.cfg.retention_max = 100000;
    fx.st = store_open(&fx.cfg, &fx.addr);
    assert_int_equal(store_connect(fx.st), 0);
    return 0;
}

static const claim_handler H = {.name = "t.h", .max_attempts = 3};

static void submit1(const char *handler, const char *args, char *id)
{
    submit_req q = {.handler = handler, .args = args};
    assert_int_equal(store_submit(fx.st, &q, 1), 0);
    assert_int_equal(q.rc, 0);
    strcpy(id, q.id_out);
}

/* Claim from every shard until the task id is claimed by host (or nothing is due). */
static bool claim_id(const char *host, const claim_handler *h, const char *id, claimed *out,
                     int64_t ttl_ms)
{
    claimed got[16];
    int n;
    double due;
    int s = store_shard_of(fx.st, id);
    assert_int_equal(store_claim(fx.st, host, s, h, 1, 16, ttl_ms, got, &n, &due), 0);
    bool found = false;
    for (int i = 0; i < n; i++) {
        if (strcmp(got[i].id, id) == 0) {
            *out = got[i];
            found = true;
        } else {
            store_claimed_clear(&got[i]);
        }
    }
    return found;
}

static cJSON *task(const char *id)
{
    cJSON *j;
    assert_int_equal(store_get_task(fx.st, id, &j), 0);
    return j;
}

static const char *sfield(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static double nfield(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* One write of op for claimed attempt c, with the default event of its kind. */
static int write1(const char *host, const claimed *c, fin_op op, const char *message,
                  const char *result)
{
    fin_item f = {.op = op,
                  .id = c->id,
                  .handler = c->handler,
                  .token = c->token,
                  .message = message,
                  .result = result,
                  .ev = -1};
    ev_buf b = {0};
    size_t off = 0;
    if (op == FIN_SUCCESS)
        f.ev = EV_DONE;
    else if (op == FIN_FAILURE)
        f.ev = EV_FAILED;
    else if (op == FIN_CANCELLED)
        f.ev = EV_CANCELLED;
    else if (op == FIN_RETRY || op == FIN_RELEASE)
        f.ev = EV_UPDATED;
    if (f.ev >= 0)
        off = ev_body_ending(&b, (ev_kind)f.ev, message, result, NULL, 0, 1, 2);
    f.ev_body = f.ev >= 0 ? b.s + off : NULL;
    int rc = store_apply(fx.st, host, &f, 1);
    ev_buf_free(&b);
    return rc < 0 ? rc : f.rc;
}

static void count_event(void *arg, const char *sid, const char *task_id, const char *name,
                        const char *payload)
{
}

static void test_life(void **state)
{
    char id[37];
    const char *args = "{\"x\": 123456789012345, \"y\":[], \"z\":1.0}";
    submit1("t.h", args, id);
    cJSON *t = task(id);
    assert_string_equal(sfield(t, "state"), "ONGOING");
    assert_string_equal(sfield(t, "message"), "Task started");
    assert_int_equal(nfield(t, "attempt"), 0);
    char *a = cJSON_PrintUnformatted(cJSON_GetObjectItem(t, "args"));
    assert_string_equal(a, "{\"x\":123456789012345,\"y\":[],\"z\":1}");
    free(a);
    cJSON_Delete(t);

    claimed c;
    assert_true(claim_id("A", &H, id, &c, 5000));
    assert_int_equal(c.attempt, 1);
    assert_string_equal(c.args, args); /* byte for byte (issue 8, item 7) */
    assert_int_equal(c.max_attempts, 3);
    t = task(id);
    assert_string_equal(sfield(t, "owner"), "A");
    assert_int_equal(nfield(t, "attempt"), 1);
    assert_true(nfield(t, "started_ms") > 0);
    cJSON_Delete(t);

    assert_int_equal(write1("A", &c, FIN_SUCCESS, "Task finished", NULL), 0);
    t = task(id);
    assert_string_equal(sfield(t, "state"), "SUCCESS");
    assert_string_equal(sfield(t, "outcome"), "success");
    assert_string_equal(sfield(t, "message"), "Task finished");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(t, "owner")));
    assert_true(nfield(t, "finished_ms") >= nfield(t, "started_ms"));
    double finished = nfield(t, "finished_ms");
    cJSON_Delete(t);
    long events = store_each_event(fx.st, count_event, NULL);
    /* The same write again (sent again when the replicas did not confirm it): answered as
     * applied, and nothing changes. */
    sleep_s(0.01);
    assert_int_equal(write1("A", &c, FIN_SUCCESS, "Task finished", NULL), 0);
    assert_int_equal(write1("A", &c, FIN_FAILURE, "boom", NULL), -ESTALE);
    t = task(id);
    assert_string_equal(sfield(t, "outcome"), "success");
    assert_true(nfield(t, "finished_ms") == finished);
    cJSON_Delete(t);
    assert_int_equal(store_each_event(fx.st, count_event, NULL), events);
    /* Another attempt's token is refused. */
    claimed other = c;
    snprintf(other.token, sizeof other.token, "1 1");
    assert_int_equal(write1("A", &other, FIN_SUCCESS, "Task finished", NULL), -ESTALE);
    store_claimed_clear(&c);
}

/* The args and subtask args are stored as the JSON text given: no script re-encodes them
 * (issue 8, item 7). */
static void test_kept_as_given(void **state)
{
    const char *args = "{\"subtasks\": [ {\"n\": 123456789012345}, [], 1.0 ]}";
    submit_req q = {.handler = "t.h", .args = args};
    assert_int_equal(store_submit(fx.st, &q, 1), 0);
    assert_int_equal(q.rc, 0);
    claimed c;
    assert_true(claim_id("A", &H, q.id_out, &c, 5000));
    assert_string_equal(c.args, args);
    char *subs[] = {"{\"n\": 123456789012345}", "[]", "1.0", "\"a,b]\"", "{\"q\":\"}\"}"};
    assert_int_equal(store_split(fx.st, "A", q.id_out, c.token, subs, 5), 0);
    sub_rec *r;
    assert_int_equal(store_load_subtasks(fx.st, q.id_out, 5, &r), 0);
    for (int i = 0; i < 5; i++)
        assert_string_equal(r[i].args, subs[i]);
    assert_string_equal(r[0].state, "PENDING");
    store_sub_recs_free(r, 5);
    cJSON *t = task(q.id_out);
    assert_string_equal(sfield(t, "kind"), "parallel");
    assert_int_equal(nfield(t, "subtasks"), 5);
    cJSON_Delete(t);
    store_claimed_clear(&c);
}

/* Nesting of depth levels: {"a": [[...]]} with depth - 1 arrays (depth 0: {}). */
static char *nested_args(int depth)
{
    char *s = xmalloc((size_t)depth * 2 + 16);
    int n = sprintf(s, "{\"a\":");
    for (int i = 1; i < depth; i++)
        s[n++] = '[';
    n += sprintf(s + n, "1");
    for (int i = 1; i < depth; i++)
        s[n++] = ']';
    strcpy(s + n, "}");
    return s;
}

/*
 * Args are kept only when they can be read back whole: valid UTF-8, no NUL
 * character (cJSON would cut a string there), nested at most JSON_MAX_DEPTH
 * deep. A refusal names what and where and writes nothing.
 */
static void test_args_refused(void **state)
{
    char *deep = nested_args(JSON_MAX_DEPTH + 1), *ok = nested_args(JSON_MAX_DEPTH);
    const struct {
        const char *args, *needle;
    } bad[] = {
        {"{\"s\":\"caf\xe9\"}", "invalid UTF-8 at byte 9"},
        {"{\"s\":\"\xc0\x80\"}", "invalid UTF-8"},     /* an overlong NUL */
        {"{\"s\":\"\xed\xa0\x80\"}", "invalid UTF-8"}, /* a surrogate */
        {"{\"s\":\"\xf4\x90\x80\x80\"}", "invalid UTF-8"}, /* past U+10FFFF */
        {"{\"s\":\"x\\u0000y\"}", "\\u0000"},
        {"{\"s\":\"x\\u0000\"}", "NUL"},
        {deep, "nested deeper than 64"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        submit_req q = {.handler = "t.h", .args = bad[i].args};
        assert_int_equal(store_submit(fx.st, &q, 1), 0);
        if (q.rc != -EINVAL || !strstr(q.err, bad[i].needle))
            fail_msg("args %zu: rc %d, '%s' (want -EINVAL and '%s')", i, q.rc, q.err,
                     bad[i].needle);
        assert_true(strstr(q.err, "args: ") == q.err);
    }
    redisReply *r = redisCommand(fx.c, "DBSIZE");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);

    /* What is allowed: an escaped backslash before u0000, brackets inside strings, UTF-8 of
     * every length, the deepest nesting allowed. */
    const char *good[] = {"{\"s\":\"x\\\\u0000\"}", "{\"s\":\"[[[[{{{{\"}",
                          "{\"s\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}", ok};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char id[BGT_ID_LEN + 1];
        submit1("t.h", good[i], id);
    }
    free(deep);
    free(ok);
}

/*
 * An attempt held in a host's name that the host no longer lists (its end write was lost in
 * a failover, before a replica had it) is queued again once it is older than the host's
 * entry ttl, and counted as lost with that host; a younger one may be a claim whose reply
 * the host has not taken yet, and stays.
 */
static void test_unlisted_attempts(void **state)
{
    char id[37];
    submit1("t.h", NULL, id);
    claimed a, b;
    assert_true(claim_id("A", &H, id, &a, 400));
    host_info ha = {.id = "A", .machine = "m", .version = "v", .handlers = "t.h", .ttl_ms = 400};
    hb_item none[1];
    assert_int_equal(store_heartbeat(fx.st, &ha, none, 0), 0);
    assert_false(claim_id("B", &H, id, &b, 5000));
    sleep_s(0.5);
    assert_int_equal(store_heartbeat(fx.st, &ha, none, 0), 0);
    assert_true(claim_id("B", &H, id, &b, 5000));
    assert_int_equal(b.attempt, 2);
    /* A's late end is refused. */
    assert_int_equal(write1("A", &a, FIN_SUCCESS, "Task finished", NULL), -ESTALE);
    store_claimed_clear(&a);
    store_claimed_clear(&b);
}

static void test_fencing_and_burial(void **state)
{
    char id[37];
    submit1("t.h", NULL, id);
    claimed a, b;
    assert_true(claim_id("A", &H, id, &a, 300));
    /* B heartbeats; A does not: once A's entry runs out B's claim buries it. */
    hb_item none[1];
    host_info hb = {.id = "B", .machine = "m", .version = "v", .handlers = "t.h", .ttl_ms = 5000};
    assert_int_equal(store_heartbeat(fx.st, &hb, none, 0), 0);
    double end = mono_s() + 5;
    bool got = false;
    while (!got && mono_s() < end) {
        got = claim_id("B", &H, id, &b, 5000);
        if (!got)
            sleep_s(0.05);
    }
    assert_true(got);
    assert_int_equal(b.attempt, 2);
    /* A's late writes are refused; its heartbeat says it lost the attempt. */
    assert_int_equal(write1("A", &a, FIN_SUCCESS, "Task finished", NULL), -ESTALE);
    hb_item it = {.id = id, .token = a.token};
    host_info ha = {.id = "A", .machine = "m", .version = "v", .handlers = "t.h", .ttl_ms = 5000};
    assert_int_equal(store_heartbeat(fx.st, &ha, &it, 1), 0);
    assert_int_equal(it.status, HB_LOST);
    /* B's attempt stands. */
    hb_item itb = {.id = id, .token = b.token};
    assert_int_equal(store_heartbeat(fx.st, &hb, &itb, 1), 0);
    assert_int_equal(itb.status, HB_OK);
    assert_int_equal(write1("B", &b, FIN_FAILURE, "boom", NULL), 0);
    cJSON *t = task(id);
    assert_string_equal(sfield(t, "state"), "FAILURE");
    assert_string_equal(sfield(t, "error"), "boom");
    assert_string_equal(sfield(t, "message"), "boom");
    assert_int_equal(nfield(t, "attempt"), 2);
    cJSON_Delete(t);
    store_claimed_clear(&a);
    store_claimed_clear(&b);
}

static void test_max_attempts_after_losses(void **state)
{
    char id[37];
    submit1("t.h", NULL, id);
    claim_handler h1 = H;
    h1.max_attempts = 1;
    claimed a;
    assert_true(claim_id("A", &h1, id, &a, 200));
    store_claimed_clear(&a);
    sleep_s(0.3);
    /* The next claim buries A and finds the only attempt used. */
    claimed b;
    assert_false(claim_id("B", &h1, id, &b, 5000));
    cJSON *t = task(id);
    assert_string_equal(sfield(t, "state"), "FAILURE");
    assert_non_null(strstr(sfield(t, "message"), "gave up after 1 attempts"));
    assert_non_null(strstr(sfield(t, "message"), "(last: A)"));
    cJSON_Delete(t);
}

static void test_retry_release_cancel(void **state)
{
    char id[37];
    submit1("t.h", NULL, id);
    claimed a;
    assert_true(claim_id("A", &H, id, &a, 5000));
    fin_item f = {.op = FIN_RETRY,
                  .id = id,
                  .handler = "t.h",
                  .token = a.token,
                  .message = "attempt 1 failed: x; retrying",
                  .backoff_ms = 0,
                  .ev = -1};
    assert_int_equal(store_apply(fx.st, "A", &f, 1), 0);
    assert_int_equal(f.rc, 0);
    cJSON *t = task(id);
    assert_string_equal(sfield(t, "message"), "attempt 1 failed: x; retrying");
    assert_int_equal(nfield(t, "attempt"), 1);
    cJSON_Delete(t);
    claimed b;
    assert_true(claim_id("A", &H, id, &b, 5000));
    assert_int_equal(b.attempt, 2);
    assert_int_equal(write1("A", &b, FIN_RELEASE, "released", NULL), 0);
    claimed c;
    assert_true(claim_id("A", &H, id, &c, 5000));
    assert_int_equal(c.attempt, 3);
    assert_int_equal(c.released, 1);
    /* Cancel while it runs: its host is asked, and its heartbeat says so too. */
    char who[64];
    assert_int_equal(store_cancel(fx.st, id, who, sizeof who), CANCEL_REQUESTED);
    assert_string_equal(who, "A");
    hb_item it = {.id = id, .token = c.token};
    host_info ha = {.id = "A", .machine = "m", .version = "v", .handlers = "t.h", .ttl_ms = 5000};
    assert_int_equal(store_heartbeat(fx.st, &ha, &it, 1), 0);
    assert_int_equal(it.status, HB_CANCEL);
    assert_int_equal(write1("A", &c, FIN_CANCELLED, "Cancelled", NULL), 0);
    assert_int_equal(store_cancel(fx.st, id, who, sizeof who), CANCEL_FINAL);
    assert_string_equal(who, "CANCELLED");
    /* A waiting task is cancelled at once. */
    char id2[37];
    submit1("t.h", NULL, id2);
    assert_int_equal(store_cancel(fx.st, id2, who, sizeof who), CANCEL_DONE);
    t = task(id2);
    assert_string_equal(sfield(t, "state"), "CANCELLED");
    assert_string_equal(sfield(t, "message"), "Cancelled before it ran");
    cJSON_Delete(t);
    store_claimed_clear(&a);
    store_claimed_clear(&b);
    store_claimed_clear(&c);
}

/* Wait for the next event of the subscriber; its name and payload as text. */
static void next_event(store *sub, char *name, size_t n, char **payload)
{
    char *nm;
    cJSON *d;
    assert_int_equal(store_next_event(sub, 5, &nm, &d), 0);
    snprintf(name, n, "%s", nm);
    free(nm);
    /* ts_ms varies: compare the rest. */
    cJSON_DeleteItemFromObject(d, "ts_ms");
    *payload = cJSON_PrintUnformatted(d);
    cJSON_Delete(d);
}

static void test_events(void **state)
{
    char id[37];
    uuid4(id);
    store *sub = store_open(&fx.cfg, &fx.addr);
    assert_int_equal(store_subscribe_task(sub, id), 0);
    submit_req q = {.id = id, .handler = "t.h"};
    assert_int_equal(store_submit(fx.st, &q, 1), 0);
    char name[64], *p;
    next_event(sub, name, sizeof name, &p);
    assert_string_equal(name, "bgtask_updated");
    char want[512];
    snprintf(want, sizeof want,
             "{\"task_id\":\"%s\",\"handler\":\"t.h\",\"attempt\":0,\"message\":\"Task "
             "started\",\"current_progress\":0,\"total_progress\":0}",
             id);
    assert_string_equal(p, want);
    free(p);
    claimed c;
    assert_true(claim_id("A", &H, id, &c, 5000));
    /* A retry: its bgtask_updated carries the progress (issue 8, item 12). */
    assert_int_equal(write1("A", &c, FIN_RETRY, "again", NULL), 0);
    next_event(sub, name, sizeof name, &p);
    assert_string_equal(name, "bgtask_updated");
    snprintf(want, sizeof want,
             "{\"task_id\":\"%s\",\"handler\":\"t.h\",\"attempt\":1,\"message\":\"again\","
             "\"current_progress\":1,\"total_progress\":2}",
             id);
    assert_string_equal(p, want);
    free(p);
    store_claimed_clear(&c);
    assert_true(claim_id("A", &H, id, &c, 5000));
    /* A partial success: its own event and outcome (issue 8, item 13). */
    fin_item f = {.op = FIN_SUCCESS,
                  .id = id,
                  .handler = "t.h",
                  .token = c.token,
                  .message = "1 of 2 subtasks succeeded, 1 failed",
                  .result = "{\"ok\":1}",
                  .partial = true,
                  .parallel = true,
                  .ev = EV_PARTIAL_SUCCESS};
    ev_buf b = {0};
    const char *errs[] = {"subtask 1: boom"};
    size_t off = ev_body_ending(&b, EV_PARTIAL_SUCCESS, f.message, f.result, errs, 1, 0, 0);
    f.ev_body = b.s + off;
    assert_int_equal(store_apply(fx.st, "A", &f, 1), 0);
    assert_int_equal(f.rc, 0);
    ev_buf_free(&b);
    next_event(sub, name, sizeof name, &p);
    assert_string_equal(name, "bgtask_partial_success");
    snprintf(want, sizeof want,
             "{\"task_id\":\"%s\",\"handler\":\"t.h\",\"attempt\":2,\"message\":\"1 of 2 "
             "subtasks succeeded, 1 failed\",\"errors\":[\"subtask 1: boom\"],"
             "\"result\":{\"ok\":1}}",
             id);
    assert_string_equal(p, want);
    free(p);
    cJSON *t = task(id);
    assert_string_equal(sfield(t, "state"), "SUCCESS");
    assert_string_equal(sfield(t, "outcome"), "partial_success");
    cJSON_Delete(t);
    /* A replay has what was stored: the retry and the end ("Task started" is not). */
    cJSON *ev;
    assert_int_equal(store_events_after(fx.st, id, "0", 100, &ev), 0);
    assert_int_equal(cJSON_GetArraySize(ev), 2);
    assert_string_equal(sfield(cJSON_GetArrayItem(ev, 0), "event"), "bgtask_updated");
    assert_string_equal(sfield(cJSON_GetArrayItem(ev, 1), "event"), "bgtask_partial_success");
    cJSON *second = cJSON_DetachItemFromArray(ev, 1);
    cJSON *after;
    assert_int_equal(
        store_events_after(fx.st, id, sfield(cJSON_GetArrayItem(ev, 0), "id"), 100, &after), 0);
    assert_int_equal(cJSON_GetArraySize(after), 1);
    cJSON_Delete(after);
    cJSON_Delete(second);
    cJSON_Delete(ev);
    store_claimed_clear(&c);
    store_free(sub);
}

/*
 * One call's events are one stream entry: a progress report and the end of one task written
 * together have the ids "<entry>" and "<entry>.1", and a replay resumes inside the entry.
 */
static void test_events_of_one_entry(void **state)
{
    char id[37];
    submit1("t.h", NULL, id);
    claimed c;
    assert_true(claim_id("A", &H, id, &c, 5000));
    ev_buf b = {0};
    size_t pbody = ev_body_progress(&b, 1, 2, "half");
    size_t ebody = ev_body_ending(&b, EV_DONE, "all", NULL, NULL, 0, 2, 2);
    fin_item f = {.op = FIN_SUCCESS,
                  .id = id,
                  .handler = "t.h",
                  .token = c.token,
                  .message = "all",
                  .ev = EV_DONE,
                  .has_progress = true,
                  .current = 1,
                  .total = 2,
                  .progress_message = "half"};
    f.progress_body = b.s + pbody;
    f.ev_body = b.s + ebody;
    assert_int_equal(store_apply(fx.st, "A", &f, 1), 0);
    assert_int_equal(f.rc, 0);
    ev_buf_free(&b);
    cJSON *ev;
    assert_int_equal(store_events_after(fx.st, id, "0", 100, &ev), 0);
    assert_int_equal(cJSON_GetArraySize(ev), 2);
    char first[48], second[64];
    snprintf(first, sizeof first, "%s", sfield(cJSON_GetArrayItem(ev, 0), "id"));
    snprintf(second, sizeof second, "%s.1", first);
    assert_true(store_event_id_valid(first));
    assert_string_equal(sfield(cJSON_GetArrayItem(ev, 0), "event"), "bgtask_updated");
    assert_string_equal(sfield(cJSON_GetArrayItem(ev, 1), "id"), second);
    assert_string_equal(sfield(cJSON_GetArrayItem(ev, 1), "event"), "bgtask_done");
    cJSON_Delete(ev);
    assert_int_equal(store_events_after(fx.st, id, first, 100, &ev), 0);
    assert_int_equal(cJSON_GetArraySize(ev), 1);
    assert_string_equal(sfield(cJSON_GetArrayItem(ev, 0), "event"), "bgtask_done");
    cJSON_Delete(ev);
    assert_int_equal(store_events_after(fx.st, id, second, 100, &ev), 0);
    assert_int_equal(cJSON_GetArraySize(ev), 0);
    cJSON_Delete(ev);
    assert_false(store_event_id_valid("1-2.0"));
    assert_false(store_event_id_valid("1-2."));
    assert_false(store_event_id_valid("1-2.x"));
    store_claimed_clear(&c);
}

static void test_retention_by_count(void **state)
{
    store_free(fx.st);
    fx.cfg.retention_max = SHARDS * 2; /* two per shard */
    fx.st = store_open(&fx.cfg, &fx.addr);
    enum { N = 40 };
    char ids[N][37];
    for (int i = 0; i < N; i++) {
        submit1("t.h", NULL, ids[i]);
        claimed c;
        assert_true(claim_id("A", &H, ids[i], &c, 5000));
        assert_int_equal(write1("A", &c, FIN_SUCCESS, "Task finished", NULL), 0);
        store_claimed_clear(&c);
    }
    cJSON *s;
    assert_int_equal(store_stats(fx.st, &s), 0);
    assert_true(nfield(s, "finished") <= SHARDS * 2);
    cJSON_Delete(s);
    int kept = 0;
    for (int i = 0; i < N; i++) {
        cJSON *t;
        int rc = store_get_task(fx.st, ids[i], &t);
        assert_true(rc == 0 || rc == -ENOENT);
        kept += rc == 0;
        cJSON_Delete(t);
    }
    assert_true(kept <= SHARDS * 2);
    assert_true(kept >= 1);
    long long open;
    assert_int_equal(store_count_open(fx.st, &open), 0);
    assert_int_equal(open, 0);
}

/* The number field n of a store_bulk answer. */
static long bulk_num(const cJSON *a, const char *n) { return (long)nfield(a, n); }

/*
 * Bulk retry and purge of many tasks of one handler (more than a few in each
 * shard: the done lists are filtered once per call, not once per task): the
 * failed ones leave the done lists and the successes stay, in order.
 */
static void test_bulk_many(void **state)
{
    enum { N = 90 };
    char ids[N][37];
    for (int i = 0; i < N; i++) {
        submit1("t.h", NULL, ids[i]);
        claimed c;
        assert_true(claim_id("A", &H, ids[i], &c, 5000));
        assert_int_equal(write1("A", &c, i % 3 ? FIN_FAILURE : FIN_SUCCESS, "x", NULL), 0);
        store_claimed_clear(&c);
    }
    long long kept;
    assert_int_equal(store_count_finished(fx.st, "t.h", &kept), 0);
    assert_int_equal(kept, N);
    cJSON *a;
    bulk_req q = {.op = BULK_RETRY, .handler = "t.h"};
    assert_int_equal(store_bulk(fx.st, &q, &a), 0);
    assert_int_equal(bulk_num(a, "matched"), 60);
    assert_int_equal(bulk_num(a, "retried"), 60);
    cJSON_Delete(a);
    assert_int_equal(store_count_finished(fx.st, "t.h", &kept), 0);
    assert_int_equal(kept, N / 3);
    long long open;
    assert_int_equal(store_count_open(fx.st, &open), 0);
    assert_int_equal(open, 60);
    /* They fail again: a purge of the failed ones leaves the successes. */
    int again = 0;
    for (int s = 0; s < SHARDS; s++) {
        claimed got[N];
        int n;
        double due;
        assert_int_equal(store_claim(fx.st, "A", s, &H, 1, N, 5000, got, &n, &due), 0);
        for (int i = 0; i < n; i++) {
            assert_int_equal(got[i].attempt, 2);
            assert_int_equal(write1("A", &got[i], FIN_FAILURE, "again", NULL), 0);
            store_claimed_clear(&got[i]);
        }
        again += n;
    }
    assert_int_equal(again, 60);
    bulk_req p = {.op = BULK_PURGE, .states = (const char *[]){"failure"}, .nstates = 1,
                  .has_older_than = true};
    assert_int_equal(store_bulk(fx.st, &p, &a), 0);
    assert_int_equal(bulk_num(a, "deleted"), 60);
    cJSON_Delete(a);
    assert_int_equal(store_count_finished(fx.st, "t.h", &kept), 0);
    assert_int_equal(kept, N / 3);
    for (int i = 0; i < N; i++) {
        cJSON *t = NULL;
        assert_int_equal(store_get_task(fx.st, ids[i], &t), i % 3 ? -ENOENT : 0);
        cJSON_Delete(t);
    }
}

/* A key of the record of id, as protocol 2 spells it (a corruption by hand). */
static void corrupt(const char *fmt_key_field_value, const char *id, const char *field,
                    const char *value)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "{bgtask:%d}:t:%s", store_shard_of(fx.st, id), id);
    redisReply *r = redisCommand(fx.c, fmt_key_field_value, cmd, field, value);
    assert_non_null(r);
    freeReplyObject(r);
}

static void test_corrupted_count(void **state)
{
    char bad[37], good[37];
    do {
        submit1("t.h", NULL, bad);
        submit1("t.h", NULL, good);
    } while (store_shard_of(fx.st, bad) != store_shard_of(fx.st, good));
    corrupt("HSET %s %s %s", bad, "ns", "2000000000");
    /* Room for every task the loop left in the shard: good is the last of them. */
    claimed got[64];
    int n;
    double due;
    assert_int_equal(
        store_claim(fx.st, "A", store_shard_of(fx.st, bad), &H, 1, 64, 5000, got, &n, &due), 0);
    bool good_claimed = false;
    for (int i = 0; i < n; i++) {
        assert_string_not_equal(got[i].id, bad);
        good_claimed |= strcmp(got[i].id, good) == 0;
        store_claimed_clear(&got[i]);
    }
    assert_true(good_claimed);
    cJSON *t = task(bad);
    assert_string_equal(sfield(t, "state"), "FAILURE");
    assert_non_null(strstr(sfield(t, "message"), "corrupted task record"));
    assert_non_null(strstr(sfield(t, "message"), "subtasks count"));
    cJSON_Delete(t);
}

static void test_wrong_typed_keys(void **state)
{
    char id[37];
    submit1("t.h", NULL, id);
    int s = store_shard_of(fx.st, id);
    /* A dead host whose held hash is a string. */
    freeReplyObject(redisCommand(fx.c, "SET {bgtask:%d}:held:ghost x", s));
    freeReplyObject(redisCommand(fx.c, "ZADD {bgtask:%d}:hosts 1 ghost", s));
    claimed c;
    assert_true(claim_id("A", &H, id, &c, 5000));
    char *w = store_take_warnings(fx.st);
    assert_non_null(w);
    assert_non_null(strstr(w, ":held:ghost"));
    free(w);
    assert_null(store_take_warnings(fx.st));
    hb_item it = {.id = id, .token = c.token};
    host_info ha = {.id = "A", .machine = "m", .version = "v", .handlers = "t.h", .ttl_ms = 5000};
    assert_int_equal(store_heartbeat(fx.st, &ha, &it, 1), 0);
    assert_int_equal(it.status, HB_OK);
    store_claimed_clear(&c);
}

static void test_protocol_versions(void **state)
{
    /* Data of protocol 1 under the prefix: refused, naming the key and both versions. */
    freeReplyObject(redisCommand(fx.c, "XADD bgtask:events * event x"));
    store *st = store_open(&fx.cfg, &fx.addr);
    assert_int_equal(store_connect(st), -EPROTONOSUPPORT);
    assert_non_null(strstr(store_errstr(st), "protocol version 1"));
    assert_non_null(strstr(store_errstr(st), "bgtask:events"));
    assert_non_null(strstr(store_errstr(st), "version 2"));
    store_free(st);
    freeReplyObject(redisCommand(fx.c, "FLUSHALL"));
    /* The shard count of the data wins over the configured one. */
    freeReplyObject(redisCommand(fx.c, "HSET {bgtask}:meta protocol 2 shards 7"));
    st = store_open(&fx.cfg, &fx.addr);
    assert_int_equal(store_connect(st), 0);
    assert_int_equal(store_shards(st), 7);
    store_free(st);
    /* And the first writer records it. */
    freeReplyObject(redisCommand(fx.c, "FLUSHALL"));
    st = store_open(&fx.cfg, &fx.addr);
    assert_int_equal(store_prepare(st), 0);
    redisReply *r = redisCommand(fx.c, "HGET {bgtask}:meta shards");
    assert_string_equal(r->str, "4");
    freeReplyObject(r);
    store_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_life, each),
        cmocka_unit_test_setup(test_kept_as_given, each),
        cmocka_unit_test_setup(test_args_refused, each),
        cmocka_unit_test_setup(test_unlisted_attempts, each),
        cmocka_unit_test_setup(test_fencing_and_burial, each),
        cmocka_unit_test_setup(test_max_attempts_after_losses, each),
        cmocka_unit_test_setup(test_retry_release_cancel, each),
        cmocka_unit_test_setup(test_events, each),
        cmocka_unit_test_setup(test_events_of_one_entry, each),
        cmocka_unit_test_setup(test_retention_by_count, each),
        cmocka_unit_test_setup(test_bulk_many, each),
        cmocka_unit_test_setup(test_corrupted_count, each),
        cmocka_unit_test_setup(test_wrong_typed_keys, each),
        cmocka_unit_test_setup(test_protocol_versions, each),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

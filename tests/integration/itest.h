/*
 * itest.h - what the integration tests share on top of the harness: one
 * private redis-server per test program and a fresh database per test, the
 * hosts a test started (stopped by the teardown, which prints their logs when
 * the test failed), bgtaskctl submissions, and reads of task records, queues
 * and events.
 *
 * Each test program includes it once. Everything is static inline, so a
 * program that leaves a helper unused gets no warning for it.
 */
#ifndef BGT_ITEST_H
#define BGT_ITEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "../harness/harness.h"

#define IT_PREFIX "bgtask"
/* The most hosts one test runs at once. */
#define IT_MAX_HOSTS 4
/* How long a host may take to register itself after it was started (ASan is slow). */
#define IT_READY_S 15.0

typedef struct it_fixture {
    th_redis r;
    redisContext *c;
    bool up;                     /* redis-server runs (else tests skip) */
    th_host hosts[IT_MAX_HOSTS]; /* started by this test */
    int nhosts;
    bool passed; /* set by it_pass() as a test's last step */
} it_fixture;

static it_fixture fx;

/*
 * Start the program's redis-server (with AOF on if `aof`) and connect to it. Returns 0, or
 * -1 when it cannot run and CI is set; without CI a missing redis-server leaves fx.up false
 * and the tests skip.
 */
static inline int it_redis_start(bool aof)
{
    int rc = th_redis_start(&fx.r, aof);
    if (rc == -1)
        return -1;
    fx.up = rc == 0;
    if (fx.up)
        fx.c = th_redis_connect(&fx.r);
    return 0;
}

/* cmocka group setup: one redis-server for the program (skip without one, fail under CI). */
static inline int it_group_setup(void **state)
{
    (void)state;
    return it_redis_start(false);
}

static inline int it_group_teardown(void **state)
{
    (void)state;
    if (fx.c)
        redisFree(fx.c);
    fx.c = NULL;
    if (fx.up)
        th_redis_stop(&fx.r);
    th_cleanup();
    return 0;
}

/* Per-test setup: an empty database and no hosts. */
static inline int it_setup(void **state)
{
    (void)state;
    fx.nhosts = 0;
    fx.passed = false;
    if (!fx.up)
        return 0;
    redisReply *rep = redisCommand(fx.c, "FLUSHALL");
    if (!rep)
        return -1;
    freeReplyObject(rep);
    return 0;
}

/*
 * Per-test teardown: stop the test's hosts and show their logs if the test
 * did not pass. A host that was still running must exit 0 on SIGTERM, and no
 * host may have printed a sanitizer report (make asan): either fails the test.
 */
static inline int it_teardown(void **state)
{
    (void)state;
    int rc = 0;
    for (int i = 0; i < fx.nhosts; i++) {
        th_host *h = &fx.hosts[i];
        bool alive = !th_host_wait_exit(h, 0, NULL);
        int st = th_host_stop(h, 15.0);
        bool dirty = th_log_contains(h, "Sanitizer") || th_log_contains(h, "runtime error:");
        if ((alive && st != 0) || dirty) {
            fprintf(stderr, "host %s: %s\n", h->id,
                    dirty ? "sanitizer report in its log" : "did not exit 0 on SIGTERM");
            rc = -1;
        }
        if (!fx.passed || rc)
            th_log_dump(h);
    }
    fx.nhosts = 0;
    return rc;
}

#define IT_TEST(fn) cmocka_unit_test_setup_teardown(fn, it_setup, it_teardown)

static inline void it_need_redis(void)
{
    if (!fx.up)
        skip();
}

/* The last step of a test: its hosts' logs are not worth showing. */
static inline void it_pass(void) { fx.passed = true; }

/* Start a host and wait until it serves; the teardown stops it. */
static inline th_host *it_host_start(const th_host_opts *o)
{
    assert_true(fx.nhosts < IT_MAX_HOSTS);
    th_host *h = &fx.hosts[fx.nhosts];
    assert_int_equal(th_host_start(h, &fx.r, o), 0);
    fx.nhosts++;
    assert_true(th_host_wait_ready(h, &fx.r, IT_READY_S));
    return h;
}

/* True while the host process has not exited. */
static inline bool it_host_alive(th_host *h) { return !th_host_wait_exit(h, 0, NULL); }

/* A command on the test's own connection; the reply must not be an error. */
static inline redisReply *it_cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(fx.c, fmt, ap);
    va_end(ap);
    if (!rep)
        fail_msg("redis: %s", fx.c->errstr);
    if (rep->type == REDIS_REPLY_ERROR)
        fail_msg("redis: %s", rep->str);
    return rep;
}

static inline long long it_dbsize(void)
{
    redisReply *rep = it_cmd("DBSIZE");
    long long n = rep->integer;
    freeReplyObject(rep);
    return n;
}

/* The score of member in a zset, or -1 when it is not there. */
static inline double it_zscore(const char *key, const char *member)
{
    redisReply *rep = it_cmd("ZSCORE %s %s", key, member);
    double s = rep->type == REDIS_REPLY_STRING ? atof(rep->str) : -1;
    freeReplyObject(rep);
    return s;
}

/* Whether a key exists. */
static inline bool it_exists(const char *key)
{
    redisReply *rep = it_cmd("EXISTS %s", key);
    bool e = rep->integer == 1;
    freeReplyObject(rep);
    return e;
}

/* Redis' clock in ms (the one scores and stream ids use). */
static inline long long it_redis_ms(void)
{
    redisReply *rep = it_cmd("TIME");
    long long ms = atoll(rep->element[0]->str) * 1000 + atoll(rep->element[1]->str) / 1000;
    freeReplyObject(rep);
    return ms;
}

/* The path of a built binary ("bgtaskd", "bgtaskctl"); malloc'd. */
static inline char *it_bin(const char *name)
{
    const char *b = getenv("BUILD");
    char *p = NULL;
    assert_true(asprintf(&p, "%s/bin/%s", b && *b ? b : "build", name) > 0);
    return p;
}

/*
 * Start a bgtaskctl command line aimed at the test's Redis: argv[0..2] get the binary's
 * path (malloc'd: the caller frees argv[0]), "--redis" and the URL. Returns 3, the next free
 * slot.
 */
static inline int it_ctl_argv(char **argv)
{
    argv[0] = it_bin("bgtaskctl");
    argv[1] = "--redis";
    argv[2] = fx.r.url;
    return 3;
}

/*
 * bgtaskctl submit HANDLER [--args ARGS] [more options...] (NULL-terminated):
 * it must succeed; returns the task id (malloc'd).
 */
static inline char *it_submit(const char *handler, const char *args, ...)
{
    char *argv[32];
    int n = it_ctl_argv(argv);
    argv[n++] = "submit";
    argv[n++] = (char *)handler;
    if (args) {
        argv[n++] = "--args";
        argv[n++] = (char *)args;
    }
    va_list ap;
    va_start(ap, args);
    for (const char *a = va_arg(ap, const char *); a; a = va_arg(ap, const char *)) {
        assert_true(n < 30);
        argv[n++] = (char *)a;
    }
    va_end(ap);
    argv[n] = NULL;
    char *out = NULL, *err = NULL;
    int rc = th_run(60, argv, &out, &err);
    free(argv[0]);
    if (rc != 0)
        fail_msg("bgtaskctl submit %s exited with %d: %s", handler, rc, err ? err : "");
    free(err);
    assert_int_equal(strlen(out), 37);
    out[36] = '\0';
    return out;
}

/* A field of the task record (malloc'd), or NULL. */
static inline char *it_field(const char *id, const char *name)
{
    return th_task_field(fx.c, IT_PREFIX, id, name);
}

static inline bool it_field_is(const char *id, const char *name, const char *want)
{
    char *v = it_field(id, name);
    bool eq = v && strcmp(v, want) == 0;
    free(v);
    return eq;
}

/* A numeric field of the record; -1 when it is missing. */
static inline long long it_field_ll(const char *id, const char *name)
{
    char *v = it_field(id, name);
    long long n = v ? atoll(v) : -1;
    free(v);
    return n;
}

static inline void it_assert_field(const char *id, const char *name, const char *want)
{
    char *v = it_field(id, name);
    if (!v)
        fail_msg("task %s: no field %s (want '%s')", id, name, want);
    if (strcmp(v, want) != 0) {
        char got[512];
        snprintf(got, sizeof got, "%s", v);
        free(v);
        fail_msg("task %s: %s is '%s', want '%s'", id, name, got, want);
    }
    free(v);
}

/* The task is ONGOING on owner with this attempt and has persisted at least `step`. */
static inline bool it_running_on(const char *id, const char *owner, long long attempt,
                                 long long step)
{
    return it_field_is(id, "state", "ONGOING") && it_field_is(id, "owner", owner) &&
           it_field_ll(id, "attempt") == attempt && it_field_ll(id, "progress_current") >= step;
}

/* Whether the host is in <prefix>:hosts. */
static inline bool it_host_listed(const char *host_id)
{
    return it_zscore(IT_PREFIX ":hosts", host_id) >= 0;
}

/* Wait until the task's state is `state`; true if it got there in time. */
static inline bool it_wait_state(const char *id, const char *state, double timeout_s)
{
    return TH_WAIT_UNTIL(timeout_s, it_field_is(id, "state", state));
}

/* The parsed JSON of a field (args, result); NULL when missing or not JSON. */
static inline cJSON *it_field_json(const char *id, const char *name)
{
    char *v = it_field(id, name);
    cJSON *j = v ? cJSON_Parse(v) : NULL;
    free(v);
    return j;
}

/*
 * The events of task id in <prefix>:events, oldest first: a JSON array of
 * {"ms": Redis ms of the stream id, "event": name, "data": payload}.
 */
static inline cJSON *it_events(const char *id)
{
    cJSON *list = cJSON_CreateArray();
    char start[80] = "-";
    for (;;) {
        redisReply *rep = it_cmd("XRANGE %s:events %s + COUNT 1000", IT_PREFIX, start);
        size_t n = rep->elements;
        for (size_t i = 0; i < n; i++) {
            redisReply *e = rep->element[i];
            const char *sid = e->element[0]->str, *tid = NULL, *name = NULL, *data = NULL;
            redisReply *kv = e->element[1];
            for (size_t k = 0; k + 1 < kv->elements; k += 2) {
                const char *f = kv->element[k]->str, *v = kv->element[k + 1]->str;
                if (strcmp(f, "task_id") == 0)
                    tid = v;
                else if (strcmp(f, "event") == 0)
                    name = v;
                else if (strcmp(f, "data") == 0)
                    data = v;
            }
            if (tid && strcmp(tid, id) == 0) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddNumberToObject(o, "ms", (double)atoll(sid));
                cJSON_AddStringToObject(o, "event", name ? name : "");
                cJSON *d = data ? cJSON_Parse(data) : NULL;
                if (!d)
                    fail_msg("event %s of task %s: data is not JSON: %s", sid, id,
                             data ? data : "(none)");
                cJSON_AddItemToObject(o, "data", d);
                cJSON_AddItemToArray(list, o);
            }
            if (i == n - 1)
                snprintf(start, sizeof start, "(%s", sid);
        }
        freeReplyObject(rep);
        if (n < 1000)
            break;
    }
    return list;
}

/* An event's name, payload and fields of the payload. */
static inline const char *it_ev_name(const cJSON *e)
{
    return cJSON_GetObjectItem(e, "event")->valuestring;
}

static inline const cJSON *it_ev_data(const cJSON *e) { return cJSON_GetObjectItem(e, "data"); }

static inline const char *it_ev_message(const cJSON *e)
{
    const cJSON *m = cJSON_GetObjectItem(it_ev_data(e), "message");
    return cJSON_IsString(m) ? m->valuestring : "";
}

static inline double it_ev_number(const cJSON *e, const char *field)
{
    const cJSON *v = cJSON_GetObjectItem(it_ev_data(e), field);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/*
 * How many bgtask_updated events of task id say it was released by host `host`; each of
 * them must be of attempt `attempt`.
 */
static inline int it_count_released(const char *id, const char *host, int attempt)
{
    char says[128];
    snprintf(says, sizeof says, "released by host %s", host);
    cJSON *evs = it_events(id);
    int released = 0;
    const cJSON *e;
    cJSON_ArrayForEach (e, evs) {
        if (strcmp(it_ev_name(e), "bgtask_updated") == 0 && strstr(it_ev_message(e), says)) {
            released++;
            assert_int_equal((int)it_ev_number(e, "attempt"), attempt);
        }
    }
    cJSON_Delete(evs);
    return released;
}

static inline bool it_ev_terminal(const cJSON *e)
{
    const char *n = it_ev_name(e);
    return strcmp(n, "bgtask_done") == 0 || strcmp(n, "bgtask_failed") == 0 ||
           strcmp(n, "bgtask_cancelled") == 0 || strcmp(n, "bgtask_partial_success") == 0;
}

/*
 * The task has exactly one terminal event, it is `name`, it is the task's last
 * event, and the record's state agrees with it.
 */
static inline void it_assert_one_terminal(const char *id, const char *name)
{
    cJSON *evs = it_events(id);
    int terminal = 0;
    const cJSON *e, *last = NULL;
    cJSON_ArrayForEach (e, evs) {
        terminal += it_ev_terminal(e);
        last = e;
    }
    if (terminal != 1 || !last || strcmp(it_ev_name(last), name) != 0) {
        char *s = cJSON_Print(evs);
        fprintf(stderr, "events of %s:\n%s\n", id, s);
        free(s);
        cJSON_Delete(evs);
        fail_msg("task %s: %d terminal event(s), want exactly one %s, last", id, terminal, name);
    }
    cJSON_Delete(evs);
    assert_int_equal(th_count_events(fx.c, IT_PREFIX, id, name), 1);
    static const char *const states[][2] = {{"bgtask_done", "SUCCESS"},
                                            {"bgtask_failed", "FAILURE"},
                                            {"bgtask_cancelled", "CANCELLED"},
                                            {"bgtask_partial_success", "SUCCESS"}};
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
        if (strcmp(states[i][0], name) == 0)
            it_assert_field(id, "state", states[i][1]);
}

/* Write a whole file (a config rewritten for SIGHUP): a temp file renamed over it. */
static inline void it_write_file(const char *path, const char *text)
{
    char *tmp = NULL;
    assert_true(asprintf(&tmp, "%s.tmp", path) > 0);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, path), 0);
    free(tmp);
}

/* The whole text of a file (malloc'd, NUL-terminated). */
static inline char *it_read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    assert_true(len >= 0);
    rewind(f);
    char *text = malloc((size_t)len + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
    text[len] = '\0';
    fclose(f);
    return text;
}

#endif

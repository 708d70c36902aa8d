/*
 * test_sentinel.c - bgtask on a master that Redis Sentinel watches: a
 * master, two replicas and three redis-sentinel processes from the harness,
 * hosts and clients given a redis+sentinel:// URL.
 *
 *   - bgtaskctl and the HTTP API work through the sentinels (every command
 *     and endpoint of surface.h), and follow a failover the sentinels are
 *     asked for (SENTINEL FAILOVER: the old master lives on as a replica, so
 *     a client that kept using it would fail);
 *   - a submit that fewer replicas confirm than redis.min_replicas_ack asks
 *     for is reported as not durable (bgtaskctl exit 7, HTTP "durable":
 *     false) and can be submitted again with its id;
 *   - the failover scenario: two hosts, 1,000 short tasks submitted with
 *     min_replicas_ack = 1 while the master is killed with kill -9 mid-run:
 *     every acknowledged task ends SUCCESS with exactly one terminal event,
 *     the hosts are back within the failover time + 2 s, and the report says
 *     how many ran twice.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../harness/harness.h"
#include "../harness/surface.h"
#include "config.h"
#include "store.h"

#define PREFIX "bgtask"
#define NTASKS 1000
/* Submitted (and acknowledged) before the master is killed. */
#define KILL_AFTER 300
#define BATCH 20
/* How long a host may take to come up (sanitizers are slow). */
#define READY_S 20.0

static th_sentinels sen;
static bool up;

static int group_setup(void **state)
{
    (void)state;
    int rc = th_sentinels_start(&sen, 2);
    up = rc == 0;
    return rc == -1 ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (up)
        th_sentinels_stop(&sen);
    th_cleanup();
    return 0;
}

static void need_up(void)
{
    if (!up)
        skip();
}

/* The current master (asked of the sentinels); fails the test if there is none. */
static th_redis *master(void)
{
    th_redis *m = th_sentinels_master(&sen);
    if (!m)
        fail_msg("no sentinel names a master");
    return m;
}

/* A th_redis view of the current master whose url is the sentinel URL (for th_ctl). */
static th_redis via_sentinels(void)
{
    th_redis v = *master();
    snprintf(v.url, sizeof v.url, "%s", sen.url);
    return v;
}

/* A command on a fresh connection to the current master; the reply must not be an error. */
__attribute__((format(printf, 1, 2))) static redisReply *mcmd(const char *fmt, ...)
{
    redisContext *c = th_redis_connect(master());
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!r || r->type == REDIS_REPLY_ERROR)
        fail_msg("redis: %s", r ? r->str : c->errstr);
    redisFree(c);
    return r;
}

/* Per test: an empty database on the current master. */
static int setup(void **state)
{
    (void)state;
    if (up)
        freeReplyObject(mcmd("FLUSHALL"));
    return 0;
}

/* The crash test plugin's record of runs: "<id> <attempt> <pid> <handler>" per run. */
static char *record_path(void)
{
    char *dir = th_tmpdir("record");
    char *p = NULL;
    assert_true(asprintf(&p, "%s/runs.txt", dir) > 0);
    free(dir);
    return p;
}

static char *plugins_with_record(const char *record)
{
    char *crash = th_plugin_path("crash", true);
    char *p = NULL;
    assert_true(asprintf(&p,
                         "{ name = \"crash\"; file = \"%s\"; config = { record = \"%s\"; }; }, "
                         "{ name = \"demo\"; }",
                         crash, record) > 0);
    free(crash);
    return p;
}

static th_host *host_start(th_host *h, const th_host_opts *o)
{
    assert_int_equal(th_host_start(h, master(), o), 0);
    if (!th_host_wait_ready(h, master(), READY_S)) {
        th_log_dump(h);
        fail_msg("host %s did not come up", h->id);
    }
    return h;
}

static void host_stop(th_host *h, bool dump)
{
    int st = th_host_stop(h, 20.0);
    if (dump || st != 0 || th_log_contains(h, "Sanitizer") || th_log_contains(h, "runtime error:")) {
        th_log_dump(h);
        if (st != 0)
            fail_msg("host %s did not exit 0 on SIGTERM (%d)", h->id, st);
    }
}

/* ---- bgtaskctl and HTTP ---- */

/* curl -s with args (NULL-terminated); returns its stdout (malloc'd) or fails. */
static char *curl(const char *arg, ...)
{
    char *bin = NULL;
    const char *path = getenv("PATH");
    char *copy = strdup(path ? path : "/usr/bin"), *save = NULL;
    for (char *d = strtok_r(copy, ":", &save); d && !bin; d = strtok_r(NULL, ":", &save)) {
        char *cand = NULL;
        assert_true(asprintf(&cand, "%s/curl", d) > 0);
        if (access(cand, X_OK) == 0)
            bin = cand;
        else
            free(cand);
    }
    free(copy);
    if (!bin)
        fail_msg("curl not found (tools/install-deps installs it)");
    const char *argv[24] = {bin, "-s", "--max-time", "20"};
    int n = 4;
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a && n < 22; a = va_arg(ap, const char *))
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    char *out = NULL;
    int rc = th_run(30, (char *const *)argv, &out, NULL);
    free(bin);
    if (rc != 0)
        fail_msg("curl %s: exit %d", arg, rc);
    return out;
}

/* The value of a string field of a JSON object text (malloc'd), or NULL. */
static char *json_str(const char *text, const char *field)
{
    cJSON *j = cJSON_Parse(text);
    const cJSON *v = cJSON_GetObjectItem(j, field);
    char *s = cJSON_IsString(v) ? strdup(v->valuestring) : NULL;
    cJSON_Delete(j);
    return s;
}

/* The port the host's log says its HTTP server listens on, or 0. */
static int http_port(const th_host *h)
{
    FILE *f = fopen(h->log, "r");
    char line[512];
    int port = 0;
    while (f && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "serving on http://127.0.0.1:");
        if (p)
            port = atoi(p + strlen("serving on http://127.0.0.1:"));
    }
    if (f)
        fclose(f);
    return port;
}

/* A finished task's state through bgtaskctl --json status. */
static bool ctl_state_is(const char *id, const char *want)
{
    th_redis v = via_sentinels();
    char *out = NULL;
    int rc = th_ctl(&v, &out, NULL, "status", id, "--json", NULL);
    char *state = rc == 0 ? json_str(out, "state") : NULL;
    bool ok = state && strcmp(state, want) == 0;
    free(state);
    free(out);
    return ok;
}

static void test_ctl_and_http(void **state)
{
    (void)state;
    need_up();
    th_host h;
    th_host_opts o = {.id = "s1",
                      .redis_url = sen.url,
                      .extra = "http: { listen = \"127.0.0.1:0\"; };"};
    host_start(&h, &o);
    bool passed = false;
    th_surface_check(sen.url, &h);
    th_redis v = via_sentinels();

    char *out = NULL, *err = NULL;
    assert_int_equal(th_ctl(&v, &out, &err, "submit", "demo.echo", "--args", "{\"x\": 1}", "--wait",
                            NULL),
                     0);
    free(out);
    free(err);
    assert_int_equal(th_ctl(&v, &out, NULL, "hosts", "--json", NULL), 0);
    assert_non_null(strstr(out, "\"s1\""));
    free(out);

    int port = 0;
    assert_true(TH_WAIT_UNTIL(10, (port = http_port(&h)) > 0));
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    char url[128];
    snprintf(url, sizeof url, "%s/v1/tasks", base);
    out = curl("-H", "Content-Type: application/json", "-d", "{\"handler\": \"demo.echo\"}", url,
               NULL);
    char *id = json_str(out, "task_id");
    if (!id)
        fail_msg("POST /v1/tasks: %s", out);
    assert_null(strstr(out, "durable")); /* no replicas asked for: nothing to say */
    free(out);
    assert_true(TH_WAIT_UNTIL(20, ctl_state_is(id, "SUCCESS")));
    free(id);

    /* A failover the sentinels are asked for: the old master lives on as a replica. */
    th_redis *old = master();
    int old_port = old->port;
    redisContext *sc = th_redis_connect(&sen.sentinels[0]);
    redisReply *r = redisCommand(sc, "SENTINEL FAILOVER %s", sen.name);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("SENTINEL FAILOVER: %s", r->str);
    freeReplyObject(r);
    redisFree(sc);
    th_redis *now = th_sentinels_wait_failover(&sen, old_port, 30);
    assert_non_null(now);
    /* Through the CLI and through the host's HTTP API, on the new master. */
    v = via_sentinels();
    assert_int_equal(th_ctl(&v, &out, &err, "submit", "demo.echo", "--wait", NULL), 0);
    free(out);
    free(err);
    out = curl("-H", "Content-Type: application/json", "-d", "{\"handler\": \"demo.echo\"}", url,
               NULL);
    id = json_str(out, "task_id");
    if (!id)
        fail_msg("POST /v1/tasks after the failover: %s", out);
    free(out);
    assert_true(TH_WAIT_UNTIL(20, ctl_state_is(id, "SUCCESS")));
    snprintf(url, sizeof url, "%s/v1/tasks/%s", base, id);
    out = curl(url, NULL);
    char *st = json_str(out, "state");
    assert_non_null(st);
    assert_string_equal(st, "SUCCESS");
    free(st);
    free(out);
    free(id);
    /* A cancel reaches the host's control channel, which followed the master too. */
    assert_int_equal(th_ctl(&v, &out, NULL, "submit", "demo.sleep", "--args",
                            "{\"seconds\": 60, \"steps\": 60}", NULL),
                     0);
    out[36] = '\0';
    id = out;
    assert_true(TH_WAIT_UNTIL(20, ({
                                  redisContext *mc = th_redis_connect(master());
                                  char *owner = th_task_field(mc, PREFIX, id, "owner");
                                  redisFree(mc);
                                  bool owned = owner && *owner;
                                  free(owner);
                                  owned;
                              })));
    assert_int_equal(th_ctl(&v, NULL, NULL, "cancel", id, NULL), 0);
    assert_true(TH_WAIT_UNTIL(20, ctl_state_is(id, "CANCELLED")));
    free(id);
    snprintf(url, sizeof url, "%s/healthz", base);
    out = curl(url, NULL);
    assert_non_null(strstr(out, "\"ok\""));
    free(out);
    passed = true;
    host_stop(&h, !passed);
}

/* More replicas asked for than there are: created, reported as not durable. */
static void test_not_durable(void **state)
{
    (void)state;
    need_up();
    th_redis v = via_sentinels();
    char *out = NULL, *err = NULL;
    const char *id = "6a0f5a8e-2b7c-4d8a-9c1e-3f4b5a6c7d8e";
    int rc = th_ctl(&v, &out, &err, "submit", "demo.echo", "--id", id, "--min-replicas-ack", "5",
                    NULL);
    if (rc != 7 || !strstr(err, "not durable yet") || !strstr(err, "of 5 replicas confirmed"))
        fail_msg("submit with 5 replicas asked: exit %d, stderr: %s", rc, err);
    assert_int_equal(strncmp(out, id, 36), 0);
    free(out);
    free(err);
    /* It is there; submitting it again says so. */
    assert_int_equal(th_ctl(&v, NULL, &err, "submit", "demo.echo", "--id", id, NULL), 6);
    assert_non_null(strstr(err, "already exists"));
    free(err);
    /* As many as there are: durable. */
    assert_int_equal(th_ctl(&v, &out, &err, "--json", "submit", "demo.echo", "--min-replicas-ack",
                            "1", NULL),
                     0);
    assert_null(strstr(out, "durable"));
    free(out);
    free(err);
}

/* ---- the failover scenario ---- */

typedef struct run {
    char id[37];
} run;

static int cmp_str(const void *a, const void *b) { return strcmp(a, b); }

/* Read the state of n tasks from the current master in one pipeline; counts SUCCESS. */
static size_t count_state(redisContext *c, char (*ids)[37], size_t n, const char *want,
                          size_t *terminal)
{
    static const char *const fields[] = {"state"};
    char **states = calloc(n + 1, sizeof *states);
    assert_non_null(states);
    th_task_fields(c, PREFIX, ids, n, fields, 1, states);
    size_t matching = 0, term = 0;
    for (size_t i = 0; i < n; i++) {
        if (states[i]) {
            matching += strcmp(states[i], want) == 0;
            term += strcmp(states[i], "ONGOING") != 0;
        }
        free(states[i]);
    }
    free(states);
    if (terminal)
        *terminal = term;
    return matching;
}

struct tally {
    char (*ids)[37];
    size_t n;
    int *counts;
};

static void tally_event(void *arg, const char *sid, const char *task_id, const char *name,
                        const char *data)
{
    struct tally *t = arg;
    bool terminal = name && (strcmp(name, "bgtask_done") == 0 ||
                             strcmp(name, "bgtask_failed") == 0 ||
                             strcmp(name, "bgtask_cancelled") == 0);
    char (*hit)[37] = terminal && task_id ? bsearch(task_id, t->ids, t->n, 37, cmp_str) : NULL;
    if (hit)
        t->counts[hit - t->ids]++;
}

/* Terminal events per task (counts[i] for sorted ids[i]), from one scan of the stream. */
static void terminal_events(redisContext *c, char (*ids)[37], size_t n, int *counts)
{
    memset(counts, 0, n * sizeof *counts);
    struct tally t = {ids, n, counts};
    assert_true(th_each_event(c, PREFIX, tally_event, &t) >= 0);
}

/* How many runs each of the sorted ids had in the record file; returns the ids that ran
 * more than once. */
static size_t ran_twice(const char *record, char (*ids)[37], size_t n)
{
    int *runs = calloc(n, sizeof *runs);
    assert_non_null(runs);
    FILE *f = fopen(record, "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        char id[37];
        if (sscanf(line, "%36s", id) != 1)
            continue;
        char (*hit)[37] = bsearch(id, ids, n, 37, cmp_str);
        if (hit)
            runs[hit - ids]++;
    }
    if (f)
        fclose(f);
    size_t twice = 0;
    for (size_t i = 0; i < n; i++)
        twice += runs[i] > 1;
    free(runs);
    return twice;
}

/*
 * What the monitor thread measures: when the sentinels announced the new master
 * (+switch-master, as a subscriber of one of them hears it) and when each host first wrote
 * to it (its entry's heartbeat time or the attempts it holds changed), on the monotonic
 * clock. It polls every few ms, so the figures do not depend on what the test's main
 * thread is busy with.
 */
typedef struct monitor {
    pthread_t thread;
    const char *hosts[2];
    int sentinel_port;
    double stop_at;        /* give up then */
    double switched_at;    /* 0 until the announcement */
    int new_port;
    double back_at[2];     /* 0 until the host wrote to the new master */
} monitor;

/* A host's entry heartbeat time and the attempts it holds, as one comparable string. */
static void host_trace(redisContext *c, const char *id, char *out, size_t n)
{
    char *beat = th_host_field(c, PREFIX, id, "updated_ms");
    char *held = th_host_held(c, PREFIX, id);
    snprintf(out, n, "%s|%s", beat ? beat : "", held ? held : "");
    free(beat);
    free(held);
}

/* Connect to the sentinel at port and subscribe to +switch-master; NULL on failure. */
static redisContext *watch_switch(int port)
{
    struct timeval tv = {1, 0};
    redisContext *s = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!s || s->err) {
        if (s)
            redisFree(s);
        return NULL;
    }
    redisSetTimeout(s, tv);
    redisReply *r = redisCommand(s, "SUBSCRIBE +switch-master");
    if (!r) {
        redisFree(s);
        return NULL;
    }
    freeReplyObject(r);
    return s;
}

static void *monitor_main(void *arg)
{
    monitor *m = arg;
    redisContext *s = watch_switch(m->sentinel_port);
    /* Wait in poll, so the subscription stays one connection and misses nothing. */
    while (s && !m->switched_at && th_now() < m->stop_at) {
        struct pollfd p = {s->fd, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0)
            continue;
        if (redisBufferRead(s) != REDIS_OK)
            break;
        void *rep = NULL;
        while (!m->switched_at && redisGetReplyFromReader(s, &rep) == REDIS_OK && rep) {
            redisReply *r = rep;
            char name[64], ip[64], nip[64];
            int op, np;
            if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
                r->element[2]->type == REDIS_REPLY_STRING &&
                sscanf(r->element[2]->str, "%63s %63s %d %63s %d", name, ip, &op, nip, &np) == 5) {
                m->new_port = np;
                m->switched_at = th_now();
            }
            freeReplyObject(r);
            rep = NULL;
        }
    }
    if (s)
        redisFree(s);
    if (!m->switched_at)
        return NULL;
    struct timeval ctv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", m->new_port, ctv);
    if (!c || c->err)
        return NULL;
    redisSetTimeout(c, ctv);
    char first[2][4096], now[4096];
    for (int i = 0; i < 2; i++)
        host_trace(c, m->hosts[i], first[i], sizeof first[i]);
    while ((!m->back_at[0] || !m->back_at[1]) && th_now() < m->stop_at) {
        for (int i = 0; i < 2; i++) {
            if (m->back_at[i])
                continue;
            host_trace(c, m->hosts[i], now, sizeof now);
            if (strcmp(now, first[i]) != 0)
                m->back_at[i] = th_now();
        }
        th_sleep(0.005);
    }
    redisFree(c);
    return NULL;
}

static void test_failover_mid_run(void **state)
{
    (void)state;
    need_up();
    char *record = record_path();
    char *plugins = plugins_with_record(record);
    /* Host entries live 2 heartbeats + 1 s = 9 s: longer than a failover (2-5 s here), so
     * the hosts keep their attempts through it. */
    th_host_opts o = {.workers = 8,
                      .lease_s = 20,
                      .heartbeat_s = 4,
                      .plugins = plugins,
                      .redis_url = sen.url,
                      .redis_settings = "min_replicas_ack = 1; ack_timeout = 1.0;"};
    th_host hosts[2];
    o.id = "f1";
    host_start(&hosts[0], &o);
    o.id = "f2";
    host_start(&hosts[1], &o);

    bgt_config cfg;
    config_defaults(&cfg);
    cfg.min_replicas_ack = 1;
    redis_addr addr;
    char err[512];
    assert_int_equal(redis_addr_parse(sen.url, &addr, err, sizeof err), 0);
    store *st = store_open(&cfg, &addr);

    char (*acked)[37] = calloc(NTASKS, 37);
    assert_non_null(acked);
    size_t nacked = 0, failed_batches = 0, not_durable = 0;
    th_redis *old = master();
    int old_port = old->port;
    monitor mon = {.hosts = {"f1", "f2"}, .sentinel_port = sen.sentinels[0].port,
                   .stop_at = th_now() + 150};
    assert_int_equal(pthread_create(&mon.thread, NULL, monitor_main, &mon), 0);
    double killed_at = 0;
    double end = th_now() + 120;
    while (nacked < NTASKS && th_now() < end) {
        submit_req q[BATCH];
        size_t k = NTASKS - nacked < BATCH ? NTASKS - nacked : BATCH;
        for (size_t i = 0; i < k; i++)
            q[i] = (submit_req){.handler = "crash.maybe", .args = "{\"ms\": 20}"};
        if (store_submit(st, q, k) < 0) {
            failed_batches++; /* not acknowledged: those tasks may or may not exist */
            th_sleep(0.05);
        } else {
            for (size_t i = 0; i < k; i++) {
                if (q[i].rc == 0 && !q[i].not_durable)
                    memcpy(acked[nacked++], q[i].id_out, 37);
                not_durable += q[i].rc == 0 && q[i].not_durable;
            }
        }
        if (!killed_at && nacked >= KILL_AFTER) {
            th_redis_kill(old); /* kill -9 the master mid-run */
            killed_at = th_now();
        }
    }
    assert_true(killed_at > 0);
    /* The monitor gives up by itself at stop_at. */
    TH_WAIT_UNTIL(60, mon.switched_at && mon.back_at[0] && mon.back_at[1]);
    mon.stop_at = 0;
    pthread_join(mon.thread, NULL);
    if (!mon.switched_at || mon.new_port == old_port)
        fail_msg("the sentinels announced no new master within 60 s of the kill");
    printf("failover: %.2f s from kill -9 to +switch-master\n", mon.switched_at - killed_at);
    /* Both hosts are back on the new master within the failover time + 2 s. */
    for (int i = 0; i < 2; i++) {
        if (!mon.back_at[i] || mon.back_at[i] > mon.switched_at + 2.0)
            fail_msg("host %s did not write to the new master within 2 s of the failover (%s)",
                     mon.hosts[i], mon.back_at[i] ? "later" : "never");
        printf("host %s: wrote to the new master %.3f s after +switch-master\n", mon.hosts[i],
               mon.back_at[i] - mon.switched_at);
    }
    if (nacked < NTASKS)
        fail_msg("only %zu of %d submissions were acknowledged in time", nacked, NTASKS);

    /* Every acknowledged task ends SUCCESS, with one terminal event. */
    qsort(acked, nacked, 37, cmp_str);
    redisContext *c = th_redis_connect(master());
    size_t terminal = 0;
    bool all = TH_WAIT_UNTIL(90, ({
                                 if (c->err) {
                                     /* Closed by a server that is no master any more (the
                                      * sentinels may fail over again): ask them again. */
                                     redisFree(c);
                                     c = th_redis_connect(master());
                                 }
                                 count_state(c, acked, nacked, "SUCCESS", &terminal);
                                 terminal == nacked;
                             }));
    size_t success = count_state(c, acked, nacked, "SUCCESS", &terminal);
    if (!all || success != nacked) {
        for (int i = 0; i < 2; i++)
            th_log_dump(&hosts[i]);
        fail_msg("%zu of %zu acknowledged tasks are terminal, %zu SUCCESS", terminal, nacked,
                 success);
    }
    int *events = calloc(nacked, sizeof *events);
    assert_non_null(events);
    terminal_events(c, acked, nacked, events);
    for (size_t i = 0; i < nacked; i++)
        if (events[i] != 1)
            fail_msg("task %s has %d terminal events, want 1", acked[i], events[i]);
    size_t twice = ran_twice(record, acked, nacked);
    printf("sentinel failover: %zu tasks acknowledged (%zu submissions not durable, %zu batches "
           "failed during the failover), all SUCCESS with one terminal event; %zu ran twice\n",
           nacked, not_durable, failed_batches, twice);
    free(events);
    redisFree(c);
    store_free(st);
    redis_addr_free(&addr);
    config_free(&cfg);
    for (int i = 0; i < 2; i++)
        host_stop(&hosts[i], false);
    free(acked);
    free(plugins);
    free(record);
}

int main(void)
{
    const char *filter = getenv("BGT_TEST_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_ctl_and_http, setup),
        cmocka_unit_test_setup(test_not_durable, setup),
        cmocka_unit_test_setup(test_failover_mid_run, setup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

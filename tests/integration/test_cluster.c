/*
 * test_cluster.c - the store's Redis Cluster router (store_cluster.c through
 * the link of store_conn.h) against a real cluster from the harness: three
 * masters with a replica each, node timeout 1 s.
 *
 *   - slots: the router's hash slot of a key (hash tags included) is Redis'
 *     own (CLUSTER KEYSLOT);
 *   - routing: a pipeline of keys of every master, each landing on the master
 *     that serves its slot; keyless calls go to any master;
 *   - scripts: EVALSHA with a key in KEYS on masters that never saw the
 *     script: each answers NOSCRIPT, gets it loaded, runs it;
 *   - ASK while a slot migrates (CLUSTER SETSLOT ... MIGRATING/IMPORTING and
 *     MIGRATE), then MOVED once it has moved (SETSLOT ... NODE), after which
 *     calls go straight to the new owner;
 *   - blocking calls and subscriptions;
 *   - a master killed with kill -9: its replica is promoted and the same
 *     link writes to it, after reading the slot map again; a subscriber that
 *     listened on it listens on a live master and hears what comes after;
 *   - INFO and CONFIG answer per master; a host warns about each master that
 *     may evict keys;
 *   - bgtaskd on the cluster (protocol 2): two hosts run tasks whose shards
 *     spread over the masters; a subscriber hears each event once;
 *     bgtaskctl and the HTTP API work through the cluster URL (surface.h);
 *   - the operator's operations (bulk retry, purge, pause, bulk cancel) over
 *     the shards of every master;
 *   - the failover scenario: three hosts, 3,000 short tasks spread over every
 *     master, one master killed with kill -9 mid-run and its replica
 *     promoted: every task ends SUCCESS with one terminal event.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../harness/harness.h"
#include "../harness/surface.h"
#include "config.h"
#include "store.h"
#include "store_conn.h"

static th_cluster cl;
static bool up;

static int group_setup(void **state)
{
    (void)state;
    int rc = th_cluster_start(&cl, 3, 1);
    up = rc == 0;
    return rc == -1 ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (up)
        th_cluster_stop(&cl);
    th_cleanup();
    return 0;
}

static void need_up(void)
{
    if (!up)
        skip();
}

/* A link to the cluster; its messages go to err. */
static char err[512];
static rconn *link_open(void)
{
    redis_addr a;
    assert_int_equal(redis_addr_parse(cl.url, &a, err, sizeof err), 0);
    rconn *rc = rconn_new(&a, -1, err, sizeof err);
    redis_addr_free(&a);
    if (rconn_connect(rc) < 0)
        fail_msg("connect: %s", err);
    return rc;
}

/* A call routed by key, its command formatted from fmt; free with call_free. */
static rcall call(const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *cmd = NULL;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    assert_true(len > 0);
    return (rcall){.key = key, .keylen = key ? strlen(key) : 0, .cmd = cmd, .len = (size_t)len};
}

static void call_free(rcall *c) { free((char *)c->cmd); }

/* Run one call; the reply (caller frees) must not be an error. */
static redisReply *run1(rconn *rc, rcall c)
{
    redisReply *r = NULL;
    int e = rconn_run(rc, &c, 1, &r);
    call_free(&c);
    if (e < 0)
        fail_msg("call failed (%d): %s", e, err);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("error reply: %s", r->str);
    return r;
}

/* A command on a fresh connection to node; the reply (caller frees) must not be an error. */
__attribute__((format(printf, 2, 3))) static redisReply *node_cmd(const th_redis *node,
                                                                   const char *fmt, ...)
{
    redisContext *c = th_redis_connect(node);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!r || r->type == REDIS_REPLY_ERROR)
        fail_msg("port %d: %s", node->port, r ? r->str : c->errstr);
    redisFree(c);
    return r;
}

/* The slot Redis computes for key (CLUSTER KEYSLOT on any running node). */
static unsigned redis_slot(const char *key)
{
    for (int i = 0; i < cl.n; i++) {
        if (!cl.nodes[i].pid)
            continue;
        redisReply *r = node_cmd(&cl.nodes[i], "CLUSTER KEYSLOT %s", key);
        unsigned s = (unsigned)r->integer;
        freeReplyObject(r);
        return s;
    }
    fail_msg("no node runs");
    return 0;
}

static void test_key_slot(void **state)
{
    (void)state;
    need_up();
    static const char *const keys[] = {
        "foo", "bar", "{user1000}.following", "{user1000}.followers", "foo{}{bar}", "foo{{bar}}zap",
        "foo{bar}{zap}", "{}", "{", "}", "a{b", "{bgtask:7}:task:6c1f4e0a", "", "\xff\xfe{\x01}",
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        unsigned mine = rc__key_slot(keys[i], strlen(keys[i]));
        unsigned theirs = redis_slot(keys[i]);
        if (mine != theirs)
            fail_msg("slot of '%s': router %u, Redis %u", keys[i], mine, theirs);
    }
    /* The tag decides: two keys with one tag share a slot. */
    assert_int_equal(rc__key_slot("{P:3}:q:a", 9), rc__key_slot("{P:3}:events", 12));
}

/* Keys spread over every master in one pipeline; each lands where its slot is served. */
static void test_routing(void **state)
{
    (void)state;
    need_up();
    rconn *rc = link_open();
    enum { N = 120 };
    char keys[N][32];
    rcall calls[N];
    redisReply *reps[N];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "route:%d", i);
        calls[i] = call(keys[i], "SET %s v%d", keys[i], i);
    }
    assert_int_equal(rconn_run(rc, calls, N, reps), 0);
    int ports[TH_MAX_CLUSTER_NODES] = {0}, nports = 0;
    for (int i = 0; i < N; i++) {
        if (reps[i]->type != REDIS_REPLY_STATUS)
            fail_msg("SET %s: %s", keys[i], reps[i]->str);
        freeReplyObject(reps[i]);
        call_free(&calls[i]);
        th_redis *owner = th_cluster_master_of_key(&cl, keys[i]);
        assert_non_null(owner);
        redisReply *r = node_cmd(owner, "GET %s", keys[i]);
        char want[16];
        snprintf(want, sizeof want, "v%d", i);
        assert_int_equal(r->type, REDIS_REPLY_STRING);
        assert_string_equal(r->str, want);
        freeReplyObject(r);
        bool seen = false;
        for (int k = 0; k < nports; k++)
            seen |= ports[k] == owner->port;
        if (!seen)
            ports[nports++] = owner->port;
    }
    assert_int_equal(nports, 3); /* every master got some */
    /* Keyless calls go to any master. */
    redisReply *r = run1(rc, call(NULL, "PING"));
    assert_string_equal(r->str, "PONG");
    freeReplyObject(r);
    rconn_free(rc);
}

/* EVALSHA with a key on masters that never saw the script. */
static void test_script_noscript(void **state)
{
    (void)state;
    need_up();
    for (int i = 0; i < cl.n; i++)
        if (cl.nodes[i].pid)
            freeReplyObject(node_cmd(&cl.nodes[i], "SCRIPT FLUSH"));
    static const char src[] = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
    redisReply *l = node_cmd(&cl.nodes[0], "SCRIPT LOAD %s", src); /* for its SHA only */
    char sha[41];
    snprintf(sha, sizeof sha, "%s", l->str);
    freeReplyObject(l);
    freeReplyObject(node_cmd(&cl.nodes[0], "SCRIPT FLUSH"));

    rconn *rc = link_open();
    enum { N = 30 };
    char keys[N][32];
    rcall calls[N];
    redisReply *reps[N];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "{script%d}:n", i);
        calls[i] = call(keys[i], "EVALSHA %s 1 %s %d", sha, keys[i], i + 1);
        calls[i].script = src;
    }
    assert_int_equal(rconn_run(rc, calls, N, reps), 0);
    for (int i = 0; i < N; i++) {
        if (reps[i]->type != REDIS_REPLY_INTEGER)
            fail_msg("EVALSHA on %s: %s", keys[i],
                     reps[i]->type == REDIS_REPLY_ERROR ? reps[i]->str : "not an integer");
        assert_int_equal(reps[i]->integer, i + 1);
        freeReplyObject(reps[i]);
        call_free(&calls[i]);
    }
    /* Loaded where it ran: every master has it now; a second round needs no loading. */
    for (int i = 0; i < cl.n; i++) {
        redisReply *role = node_cmd(&cl.nodes[i], "ROLE");
        bool master = strcmp(role->element[0]->str, "master") == 0;
        freeReplyObject(role);
        if (!master)
            continue;
        redisReply *e = node_cmd(&cl.nodes[i], "SCRIPT EXISTS %s", sha);
        assert_int_equal(e->element[0]->integer, 1);
        freeReplyObject(e);
    }
    rcall c = call(keys[0], "EVALSHA %s 1 %s 10", sha, keys[0]);
    c.script = src;
    redisReply *r = run1(rc, c);
    assert_int_equal(r->integer, 11);
    freeReplyObject(r);
    rconn_free(rc);
}

/* A master other than a. */
static th_redis *other_master(th_redis *a)
{
    for (unsigned slot = 0; slot < 16384; slot += 97) {
        th_redis *m = th_cluster_master_of(&cl, slot);
        if (m && m != a)
            return m;
    }
    fail_msg("no other master");
    return NULL;
}

/* ASK during a slot's migration, MOVED after it. */
static void test_ask_and_moved(void **state)
{
    (void)state;
    need_up();
    rconn *rc = link_open();
    const char *k1 = "{mig}:1", *k2 = "{mig}:2";
    unsigned slot = rc__key_slot(k1, strlen(k1));
    th_redis *a = th_cluster_master_of(&cl, slot);
    assert_non_null(a);
    th_redis *b = other_master(a);
    char *aid = th_cluster_node_id(a), *bid = th_cluster_node_id(b);
    assert_true(aid && bid);
    freeReplyObject(run1(rc, call(k1, "SET %s one", k1)));

    /* The slot starts to move from a to b. */
    freeReplyObject(node_cmd(b, "CLUSTER SETSLOT %u IMPORTING %s", slot, aid));
    freeReplyObject(node_cmd(a, "CLUSTER SETSLOT %u MIGRATING %s", slot, bid));
    /* A key a does not have goes to b (a answers ASK). */
    freeReplyObject(run1(rc, call(k2, "SET %s two", k2)));
    redisContext *bc = th_redis_connect(b);
    freeReplyObject(redisCommand(bc, "ASKING"));
    redisReply *r = redisCommand(bc, "GET %s", k2);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, "two");
    freeReplyObject(r);
    redisFree(bc);
    /* k1 moves over: read through a's ASK. */
    freeReplyObject(node_cmd(a, "MIGRATE 127.0.0.1 %d %s 0 5000 KEYS %s", b->port, "", k1));
    r = run1(rc, call(k1, "GET %s", k1));
    assert_string_equal(r->str, "one");
    freeReplyObject(r);
    /* While it migrates, the slot stays a's in the router's map. */
    rnode *n = rc__cluster_route(rc, k1, strlen(k1));
    assert_int_equal(n->port, a->port);

    /* The slot is b's now: a answers MOVED, and the router goes to b from then on. */
    for (int i = 0; i < cl.n; i++) {
        redisReply *role = node_cmd(&cl.nodes[i], "ROLE");
        bool master = strcmp(role->element[0]->str, "master") == 0;
        freeReplyObject(role);
        if (master)
            freeReplyObject(node_cmd(&cl.nodes[i], "CLUSTER SETSLOT %u NODE %s", slot, bid));
    }
    r = run1(rc, call(k1, "GET %s", k1));
    assert_string_equal(r->str, "one");
    freeReplyObject(r);
    n = rc__cluster_route(rc, k1, strlen(k1));
    assert_int_equal(n->port, b->port);
    r = run1(rc, call(k2, "GET %s", k2));
    assert_string_equal(r->str, "two");
    freeReplyObject(r);
    /* A fresh link learns the new owner from the cluster's own map. */
    assert_true(TH_WAIT_UNTIL(10, th_cluster_master_of(&cl, slot) == b));
    rconn *fresh = link_open();
    n = rc__cluster_route(fresh, k1, strlen(k1));
    assert_int_equal(n->port, b->port);
    rconn_free(fresh);
    free(aid);
    free(bid);
    rconn_free(rc);
}

/* A blocking pop routed to its key's master; a subscriber on any master hears a PUBLISH
 * sent through another. */
static void test_block_and_subscribe(void **state)
{
    (void)state;
    need_up();
    rconn *rc = link_open();
    rconn *sub = link_open();
    const char *chans[] = {"bgt:chan"};
    assert_int_equal(rconn_subscribe(sub, chans, 1), 0);
    const char *q = "{blk}:list";
    freeReplyObject(run1(rc, call(q, "RPUSH %s a", q)));
    rcall c = call(q, "BLPOP %s 1", q);
    redisReply *r = NULL;
    assert_int_equal(rconn_block(rc, &c, 3.0, &r), 0);
    call_free(&c);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_string_equal(r->element[1]->str, "a");
    freeReplyObject(r);
    /* Nothing there: Redis' own timeout answers nil. */
    c = call(q, "BLPOP %s 0.2", q);
    assert_int_equal(rconn_block(rc, &c, 3.0, &r), 0);
    call_free(&c);
    assert_int_equal(r->type, REDIS_REPLY_NIL);
    freeReplyObject(r);

    /* Published through each master in turn (keyless calls rotate over them). */
    bool got = false;
    for (int i = 0; i < 6 && !got; i++) {
        freeReplyObject(run1(rc, call(NULL, "PUBLISH %s hello", chans[0])));
        for (;;) {
            int e = rconn_next_push(sub, 2.0, &r);
            if (e < 0)
                fail_msg("no message: %s", err);
            bool msg = r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
                       strcmp(r->element[0]->str, "message") == 0;
            if (msg)
                assert_string_equal(r->element[2]->str, "hello");
            freeReplyObject(r);
            if (msg) {
                got = true;
                break;
            }
        }
    }
    assert_true(got);
    rconn_free(sub);
    rconn_free(rc);
}

/* Kill a master: its replica is promoted and the link writes to it. */
static void test_master_failover(void **state)
{
    (void)state;
    need_up();
    rconn *rc = link_open();
    const char *k = "{fail}:counter";
    unsigned slot = rc__key_slot(k, strlen(k));
    freeReplyObject(run1(rc, call(k, "SET %s 1", k)));
    th_redis *a = th_cluster_master_of(&cl, slot);
    assert_non_null(a);
    /* Wait for the replica to have it, so the promoted one does too: WAIT on the connection
     * that wrote it (a WAIT counts the writes of its own client only). */
    redisReply *w = run1(rc, call(k, "WAIT 1 5000"));
    assert_int_equal(w->integer, 1);
    freeReplyObject(w);
    int old_port = a->port;
    /* A subscriber listening on that master (each subscribe picks the next master). */
    rconn *sub = link_open();
    const char *chans[] = {"bgt:failover"};
    for (int i = 0; i < 12 && sub->subnode.port != old_port; i++)
        assert_int_equal(rconn_subscribe(sub, chans, 1), 0);
    assert_int_equal(sub->subnode.port, old_port);
    th_redis_kill(a);
    double killed = th_now();
    redisReply *r = NULL;
    int e = -EIO;
    while (th_now() < killed + 30) {
        rcall c = call(k, "INCR %s", k);
        e = rconn_run(rc, &c, 1, &r);
        call_free(&c);
        if (e == 0 && r->type == REDIS_REPLY_INTEGER)
            break;
        if (r)
            freeReplyObject(r);
        r = NULL;
        th_sleep(0.05);
    }
    if (!r)
        fail_msg("no write after the master was killed within 30 s: %s", err);
    assert_int_equal(r->integer, 2);
    freeReplyObject(r);
    printf("cluster failover: the link wrote to the promoted replica %.2f s after kill -9\n",
           th_now() - killed);
    rnode *n = rc__cluster_route(rc, k, strlen(k));
    assert_int_not_equal(n->port, old_port);
    th_redis *now = th_cluster_master_of(&cl, slot);
    assert_non_null(now);
    assert_int_equal(n->port, now->port);
    /* The subscriber moves to a master that runs, and hears what is published after. */
    bool heard = false;
    while (!heard && th_now() < killed + 30) {
        rcall c = call(NULL, "PUBLISH %s after", chans[0]);
        if (rconn_run(rc, &c, 1, &r) == 0)
            freeReplyObject(r);
        call_free(&c);
        while (!heard && rconn_next_push(sub, 0.2, &r) == 0) {
            heard = r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
                    strcmp(r->element[0]->str, "message") == 0;
            freeReplyObject(r);
        }
    }
    if (!heard)
        fail_msg("the subscriber on the killed master heard nothing within 30 s: %s", err);
    assert_int_not_equal(sub->subnode.port, old_port);
    printf("cluster failover: a subscriber of the killed master heard a message %.2f s after "
           "kill -9\n",
           th_now() - killed);
    rconn_free(sub);
    rconn_free(rc);
}

/* ---- bgtaskd on the cluster ---- */

/* A store on the cluster, as bgtaskctl opens one. */
static store *store_on_cluster(int min_replicas_ack)
{
    bgt_config cfg;
    config_defaults(&cfg);
    cfg.min_replicas_ack = min_replicas_ack;
    redis_addr a;
    assert_int_equal(redis_addr_parse(cl.url, &a, err, sizeof err), 0);
    store *st = store_open(&cfg, &a);
    redis_addr_free(&a);
    config_free(&cfg);
    return st;
}

/* The node that serves the host list: the one to ask whether a host is up. */
static th_redis *hosts_node(void)
{
    th_redis *n = th_cluster_master_of_key(&cl, "{bgtask}:hosts");
    assert_non_null(n);
    return n;
}

/* Start host id on the cluster (workers; extra: more top-level config, or NULL). */
static void host_start(th_host *h, const char *id, int workers, double heartbeat_s,
                       const char *extra)
{
    th_host_opts o = {.id = id,
                      .workers = workers,
                      .lease_s = 20,
                      .heartbeat_s = heartbeat_s,
                      .redis_url = cl.url,
                      .extra = extra};
    assert_int_equal(th_host_start(h, hosts_node(), &o), 0);
    if (!th_host_wait_ready(h, hosts_node(), 20)) {
        th_log_dump(h);
        fail_msg("host %s did not come up on the cluster", id);
    }
}

static void host_stop(th_host *h)
{
    int rc = th_host_stop(h, 20.0);
    if (rc != 0 || th_log_contains(h, "Sanitizer") || th_log_contains(h, "runtime error:")) {
        th_log_dump(h);
        fail_msg("host %s: exit %d", h->id, rc);
    }
}

/* Submit n tasks of handler with args, in batches; their ids into ids. Returns how many
 * were acknowledged (durably, with min_replicas_ack). */
static size_t submit_n(store *st, const char *handler, const char *args, size_t n, char (*ids)[37])
{
    size_t got = 0;
    for (size_t at = 0; at < n; at += 50) {
        submit_req q[50];
        size_t k = n - at < 50 ? n - at : 50;
        for (size_t i = 0; i < k; i++)
            q[i] = (submit_req){.handler = handler, .args = args};
        if (store_submit(st, q, k) < 0)
            fail_msg("submit: %s", store_errstr(st));
        for (size_t i = 0; i < k; i++) {
            if (q[i].rc != 0 || q[i].not_durable)
                fail_msg("submit: %s", q[i].err);
            memcpy(ids[got++], q[i].id_out, 37);
        }
    }
    return got;
}

/* How many of ids are in state want (all terminal ones in *terminal). */
static size_t count_state(store *st, char (*ids)[37], size_t n, const char *want, size_t *terminal)
{
    size_t match = 0, term = 0;
    for (size_t i = 0; i < n; i++) {
        cJSON *t = NULL;
        if (store_get_task(st, ids[i], &t) < 0)
            continue;
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(t, "state");
        if (cJSON_IsString(s)) {
            match += strcmp(s->valuestring, want) == 0;
            term += strcmp(s->valuestring, "ONGOING") != 0;
        }
        cJSON_Delete(t);
    }
    if (terminal)
        *terminal = term;
    return match;
}

static int cmp_id(const void *a, const void *b) { return strcmp(a, b); }

struct tally {
    char (*ids)[37];
    size_t n;
    int *terminal;
};

static void tally_event(void *arg, const char *sid, const char *task_id, const char *name,
                        const char *payload)
{
    struct tally *t = arg;
    char(*hit)[37] = bsearch(task_id, t->ids, t->n, 37, cmp_id);
    if (hit &&
        (strcmp(name, "bgtask_done") == 0 || strcmp(name, "bgtask_failed") == 0 ||
         strcmp(name, "bgtask_cancelled") == 0 || strcmp(name, "bgtask_partial_success") == 0))
        t->terminal[hit - t->ids]++;
}

/* Every one of the sorted ids has exactly one terminal event in the streams. */
static void one_terminal_each(store *st, char (*ids)[37], size_t n)
{
    int *terminal = calloc(n + 1, sizeof *terminal);
    assert_non_null(terminal);
    struct tally t = {ids, n, terminal};
    assert_true(store_each_event(st, tally_event, &t) >= 0);
    for (size_t i = 0; i < n; i++)
        if (terminal[i] != 1)
            fail_msg("task %s has %d terminal events, want 1", ids[i], terminal[i]);
    free(terminal);
}

/* The masters now, each once; how many. */
static int masters_now(th_redis **out)
{
    int n = 0;
    for (int i = 0; i < cl.n; i++) {
        if (!cl.nodes[i].pid)
            continue;
        redisReply *r = node_cmd(&cl.nodes[i], "ROLE");
        bool master = r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                      strcmp(r->element[0]->str, "master") == 0;
        freeReplyObject(r);
        if (master)
            out[n++] = &cl.nodes[i];
    }
    return n;
}

/* An empty cluster: FLUSHALL on every master (the replicas follow). */
static void flush_cluster(void)
{
    th_redis *m[TH_MAX_CLUSTER_NODES];
    for (int i = 0, n = masters_now(m); i < n; i++)
        freeReplyObject(node_cmd(m[i], "FLUSHALL"));
}

/* How many masters hold any key. */
static int masters_with_keys(void)
{
    th_redis *m[TH_MAX_CLUSTER_NODES];
    int with = 0;
    for (int i = 0, n = masters_now(m); i < n; i++) {
        redisReply *r = node_cmd(m[i], "DBSIZE");
        with += r->integer > 0;
        freeReplyObject(r);
    }
    return with;
}

/* The master of each shard's hash tag into of[0..shards); returns how many masters serve
 * shards. */
static int shard_masters(store *st, th_redis **of)
{
    int n = 0;
    th_redis *seen[TH_MAX_CLUSTER_NODES];
    for (int s = 0; s < store_shards(st); s++) {
        char tag[32];
        snprintf(tag, sizeof tag, "{bgtask:%d}", s);
        of[s] = th_cluster_master_of_key(&cl, tag);
        assert_non_null(of[s]);
        bool known = false;
        for (int k = 0; k < n; k++)
            known |= seen[k] == of[s];
        if (!known)
            seen[n++] = of[s];
    }
    return n;
}

/* How many masters the tasks ids[0..n) are on. */
static int masters_of_tasks(store *st, char (*ids)[37], size_t n)
{
    th_redis *of[STORE_MAX_SHARDS];
    shard_masters(st, of);
    int count = 0;
    th_redis *seen[TH_MAX_CLUSTER_NODES];
    for (size_t i = 0; i < n; i++) {
        th_redis *m = of[store_shard_of(st, ids[i])];
        bool known = false;
        for (int k = 0; k < count; k++)
            known |= seen[k] == m;
        if (!known)
            seen[count++] = m;
    }
    return count;
}

/* Tasks not finished yet (waiting or running), or -1 while the cluster cannot say. */
static long long open_tasks(store *st)
{
    long long n;
    return store_count_open(st, &n) == 0 ? n : -1;
}

static long long finished_tasks(store *st, const char *handler)
{
    long long n;
    return store_count_finished(st, handler, &n) == 0 ? n : -1;
}

/* INFO and CONFIG through the store: one answer per master, each naming its master; a
 * setting Redis does not have, or a value it refuses, names the master that said so. */
static void test_every_master_reads(void **state)
{
    (void)state;
    need_up();
    store *st = store_on_cluster(0);
    store_master_text *t;
    size_t n;
    assert_int_equal(store_info(st, "server", &t, &n), 0);
    assert_int_equal(n, 3);
    th_redis *m[TH_MAX_CLUSTER_NODES];
    assert_int_equal(masters_now(m), 3);
    for (size_t i = 0; i < n; i++) {
        char want[64];
        bool one_of = false;
        for (int k = 0; k < 3; k++) {
            snprintf(want, sizeof want, "127.0.0.1:%d", m[k]->port);
            one_of |= strcmp(t[i].server, want) == 0;
        }
        if (!one_of || !strstr(t[i].text, "redis_version:"))
            fail_msg("INFO server from %s is not a master's answer", t[i].server);
        for (size_t k = 0; k < i; k++)
            assert_string_not_equal(t[k].server, t[i].server);
    }
    store_master_texts_free(t, n);
    assert_int_equal(store_config_get(st, "maxmemory-policy", &t, &n), 0);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(t[i].text, "noeviction");
    store_master_texts_free(t, n);
    assert_int_equal(store_config_get(st, "no-such-setting", &t, &n), -ENOENT);
    assert_null(t);
    assert_non_null(strstr(store_errstr(st), "127.0.0.1:"));
    assert_non_null(strstr(store_errstr(st), "CONFIG GET no-such-setting: no such setting"));
    assert_int_equal(store_config_set(st, "maxmemory-policy", "noeviction"), 0);
    assert_int_equal(store_config_set(st, "maxmemory-policy", "sometimes"), -EPROTO);
    assert_non_null(strstr(store_errstr(st), "127.0.0.1:"));
    assert_non_null(strstr(store_errstr(st), "CONFIG SET maxmemory-policy sometimes: ERR"));
    store_free(st);
}

/*
 * A host warns about every master whose maxmemory-policy may evict keys, by
 * its address: here the two that do not serve slot 0, so that asking one
 * master (any) could not find both.
 */
static void test_eviction_warning_every_master(void **state)
{
    (void)state;
    need_up();
    th_redis *m[TH_MAX_CLUSTER_NODES], *first = th_cluster_master_of(&cl, 0);
    int n = masters_now(m), set = 0;
    assert_int_equal(n, 3);
    for (int i = 0; i < n; i++)
        if (m[i] != first) {
            freeReplyObject(node_cmd(m[i], "CONFIG SET maxmemory-policy allkeys-lru"));
            set++;
        }
    assert_int_equal(set, 2);
    th_host h;
    host_start(&h, "e1", 1, 4, NULL);
    for (int i = 0; i < n; i++) {
        char want[128];
        snprintf(want, sizeof want, "redis 127.0.0.1:%d: maxmemory-policy is '%s'", m[i]->port,
                 m[i] == first ? "noeviction" : "allkeys-lru");
        if (th_log_contains(&h, want) != (m[i] != first)) {
            th_log_dump(&h);
            fail_msg("the host's log %s \"%s\"", m[i] == first ? "has" : "lacks", want);
        }
    }
    host_stop(&h);
    for (int i = 0; i < n; i++)
        freeReplyObject(node_cmd(m[i], "CONFIG SET maxmemory-policy noeviction"));
}

/* What a subscriber heard: per task (sorted ids) its "Task started" notices and terminal
 * events, and every event's id with its task's. */
typedef struct heard {
    char (*ids)[37];
    size_t n;
    int *started, *terminal;
    char **sids;
    size_t nsids;
    size_t terminals; /* terminal events of these tasks in all */
} heard;

/* Read sub's events for the tasks of h until each has had a terminal event (up to 30 s),
 * then whatever else comes within 0.5 s (a duplicate would follow its first copy). */
static void listen_all(store *sub, heard *h)
{
    double end = th_now() + 30, quiet_from = 0;
    for (;;) {
        double now = th_now();
        if (h->terminals >= h->n && !quiet_from)
            quiet_from = now;
        if (quiet_from ? now > quiet_from + 0.5 : now > end)
            break;
        char *name = NULL, *sid = NULL;
        cJSON *data = NULL;
        if (store_next_event_ex(sub, 0.1, &name, &data, &sid) < 0)
            continue;
        const cJSON *tid = cJSON_GetObjectItemCaseSensitive(data, "task_id");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(data, "message");
        char(*hit)[37] =
            cJSON_IsString(tid) ? bsearch(tid->valuestring, h->ids, h->n, 37, cmp_id) : NULL;
        if (hit && strcmp(name, "bgtask_updated") == 0 && cJSON_IsString(msg) &&
            strcmp(msg->valuestring, "Task started") == 0)
            h->started[hit - h->ids]++;
        if (hit && strcmp(name, "bgtask_done") == 0) {
            h->terminal[hit - h->ids]++;
            h->terminals++;
        }
        if (sid && hit) { /* stream ids are per shard: an event is its id and its task */
            h->sids = realloc(h->sids, (h->nsids + 1) * sizeof *h->sids);
            assert_true(asprintf(&h->sids[h->nsids++], "%s %s", sid, tid->valuestring) > 0);
        }
        free(sid);
        free(name);
        cJSON_Delete(data);
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Each task of h was announced once and ended once, and no event came twice. */
static void heard_once(heard *h)
{
    for (size_t i = 0; i < h->n; i++)
        if (h->started[i] != 1 || h->terminal[i] != 1)
            fail_msg("task %s: heard %d 'Task started' and %d bgtask_done, want 1 and 1", h->ids[i],
                     h->started[i], h->terminal[i]);
    qsort(h->sids, h->nsids, sizeof *h->sids, cmp_str);
    for (size_t i = 1; i < h->nsids; i++)
        if (strcmp(h->sids[i - 1], h->sids[i]) == 0)
            fail_msg("event %s heard twice", h->sids[i]);
    for (size_t i = 0; i < h->nsids; i++)
        free(h->sids[i]);
    free(h->sids);
    free(h->started);
    free(h->terminal);
}

/*
 * Protocol 2 on a cluster: two hosts run tasks whose shards spread over the
 * three masters; a subscriber on one master hears what scripts publish on
 * all three, each message once (classic PUBLISH goes over the cluster bus to
 * every node; in cluster mode Redis does not also replicate it, so a
 * replica does not publish it a second time); bgtaskctl and the HTTP API
 * work through the cluster URL.
 */
static void test_tasks_over_masters(void **state)
{
    (void)state;
    need_up();
    flush_cluster();
    th_host h[2];
    host_start(&h[0], "c1", 4, 4, "http: { listen = \"127.0.0.1:0\"; };");
    host_start(&h[1], "c2", 4, 4, NULL);
    store *st = store_on_cluster(1), *sub = store_on_cluster(0);
    assert_int_equal(store_subscribe_all(sub), 0);
    enum { N = 200 };
    char(*ids)[37] = calloc(N, 37);
    assert_non_null(ids);
    assert_int_equal(submit_n(st, "demo.echo", "{\"x\": 1}", N, ids), N);
    assert_int_equal(masters_of_tasks(st, ids, N), 3);
    heard hd = {.ids = calloc(N, 37),
                .n = N,
                .started = calloc(N, sizeof(int)),
                .terminal = calloc(N, sizeof(int))};
    memcpy(hd.ids, ids, (size_t)N * 37);
    qsort(hd.ids, N, 37, cmp_id);
    listen_all(sub, &hd);
    heard_once(&hd);
    free(hd.ids);
    store_free(sub);
    size_t terminal = 0;
    bool all = TH_WAIT_UNTIL(60, count_state(st, ids, N, "SUCCESS", &terminal) == N);
    if (!all) {
        th_log_dump(&h[0]);
        th_log_dump(&h[1]);
        fail_msg("%zu of %d tasks terminal", terminal, N);
    }
    qsort(ids, N, 37, cmp_id);
    one_terminal_each(st, ids, N);
    /* 16 shards over 3 masters: every master holds some. */
    assert_int_equal(masters_with_keys(), 3);

    th_surface_check(cl.url, &h[0]);
    store_free(st);
    free(ids);
    host_stop(&h[0]);
    host_stop(&h[1]);
}

/* The number n of a store_bulk answer. */
static long answer_num(const cJSON *a, const char *n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(a, n);
    return cJSON_IsNumber(v) ? (long)v->valuedouble : -1;
}

/* How many of the n tasks have attempt `attempt` (and are not ONGOING). */
static size_t count_ended_attempt(store *st, char (*ids)[37], size_t n, int attempt)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        cJSON *t = NULL;
        if (store_get_task(st, ids[i], &t) < 0)
            continue;
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(t, "state");
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(t, "attempt");
        k += cJSON_IsString(s) && strcmp(s->valuestring, "ONGOING") != 0 && cJSON_IsNumber(a) &&
             (int)a->valuedouble == attempt;
        cJSON_Delete(t);
    }
    return k;
}

/*
 * The operator's operations on a cluster: each script call stays in one
 * slot, and what must see every shard asks each, over the three masters. A
 * bulk retry finds the failed tasks of every shard, a purge deletes them; a
 * pause reaches the host and holds: the tasks submitted meanwhile all wait,
 * and a bulk cancel ends every one of them at once (none was running).
 */
static void test_ops_over_masters(void **state)
{
    (void)state;
    need_up();
    flush_cluster();
    th_host h;
    host_start(&h, "c3", 4, 4, NULL);
    store *st = store_on_cluster(0);
    enum { N = 40 };
    char(*ids)[37] = calloc(N, 37);
    assert_non_null(ids);
    assert_int_equal(submit_n(st, "demo.fail", NULL, N, ids), N);
    assert_true(TH_WAIT_UNTIL(60, count_state(st, ids, N, "FAILURE", NULL) == N));
    cJSON *a = NULL;
    bulk_req q = {.op = BULK_RETRY, .handler = "demo.fail", .dry_run = true};
    assert_int_equal(store_bulk(st, &q, &a), 0);
    assert_int_equal(answer_num(a, "matched"), N);
    cJSON_Delete(a);
    q.dry_run = false;
    assert_int_equal(store_bulk(st, &q, &a), 0);
    assert_int_equal(answer_num(a, "retried"), N);
    cJSON_Delete(a);
    assert_true(TH_WAIT_UNTIL(60, count_ended_attempt(st, ids, N, 2) == N));

    bulk_req p = {
        .op = BULK_PURGE, .handler = "demo.fail", .has_older_than = true, .older_than_ms = 0};
    assert_int_equal(store_bulk(st, &p, &a), 0);
    assert_int_equal(answer_num(a, "deleted"), N);
    cJSON_Delete(a);
    cJSON *t = NULL;
    for (size_t i = 0; i < N; i++)
        assert_int_equal(store_get_task(st, ids[i], &t), -ENOENT);

    pause_state ps;
    assert_int_equal(store_pause(st, "demo.echo", true, "cluster", &ps), 0);
    assert_true(ps.changed && ps.paused);
    assert_true(TH_WAIT_UNTIL(20, th_log_contains(&h, "handler demo.echo paused by an operator")));
    assert_int_equal(submit_n(st, "demo.echo", NULL, N, ids), N);
    bulk_req c = {.op = BULK_CANCEL, .handler = "demo.echo"};
    assert_int_equal(store_bulk(st, &c, &a), 0);
    assert_int_equal(answer_num(a, "matched"), N);
    assert_int_equal(answer_num(a, "cancelled"), N);
    assert_int_equal(answer_num(a, "cancel_requested"), 0);
    cJSON_Delete(a);
    assert_int_equal(count_state(st, ids, N, "CANCELLED", NULL), N);
    assert_int_equal(store_pause(st, "demo.echo", false, NULL, &ps), 0);
    assert_true(ps.changed && !ps.paused);
    store_free(st);
    free(ids);
    host_stop(&h);
}

/* The failover scenario's size: tasks, and those finished when a master is killed. */
#define FO_TASKS 3000
#define FO_KILL_AFTER (FO_TASKS / 5)

/*
 * kill -9 of a master while three hosts run 3,000 short tasks spread over
 * every master (submitted with min_replicas_ack = 1, so its replica has
 * them): its replica takes over, the hosts follow, and every task ends
 * SUCCESS with one terminal event. An end written to the dead master but not
 * yet to its replica is lost with it: its host no longer lists the attempt,
 * and the heartbeat queues it again after the host entry's ttl (the task runs
 * again).
 */
static void test_tasks_through_failover(void **state)
{
    (void)state;
    need_up();
    flush_cluster();
    th_host h[3];
    static const char *const names[] = {"f1", "f2", "f3"};
    /* Heartbeat 2 s: a host entry lasts 5 s, longer than a failover takes (~2-3 s). */
    for (int i = 0; i < 3; i++)
        host_start(&h[i], names[i], 8, 2, NULL);
    store *st = store_on_cluster(1);
    char(*ids)[37] = calloc(FO_TASKS, 37);
    assert_non_null(ids);
    double t0 = th_now();
    assert_int_equal(submit_n(st, "demo.sleep", "{\"seconds\": 0.05, \"steps\": 1}", FO_TASKS, ids),
                     FO_TASKS);
    assert_int_equal(masters_of_tasks(st, ids, FO_TASKS), 3);
    /* A master of some shard, but not of the slot test_master_failover kills (its replica is
     * needed then). */
    const char *keep = "{fail}:counter";
    th_redis *spare = th_cluster_master_of(&cl, rc__key_slot(keep, strlen(keep)));
    assert_non_null(spare);
    th_redis *of[STORE_MAX_SHARDS], *victim = NULL;
    shard_masters(st, of);
    for (int s = 0; s < store_shards(st) && !victim; s++)
        if (of[s] != spare)
            victim = of[s];
    assert_non_null(victim);
    if (!TH_WAIT_UNTIL(60, finished_tasks(st, "demo.sleep") >= FO_KILL_AFTER))
        fail_msg("fewer than %d tasks finished in 60 s", FO_KILL_AFTER);
    /* Mid-run: most of the tasks are still to run. */
    long long open = open_tasks(st);
    if (open < FO_TASKS / 2)
        fail_msg("%lld of %d tasks open when the master was to be killed: too late", open,
                 FO_TASKS);
    th_redis_kill(victim);
    double killed = th_now();
    bool all =
        TH_WAIT_UNTIL(120, finished_tasks(st, "demo.sleep") >= FO_TASKS && open_tasks(st) == 0);
    if (!all) {
        for (int i = 0; i < 3; i++)
            th_log_dump(&h[i]);
        fail_msg("%lld of %d tasks finished 120 s after the kill", finished_tasks(st, "demo.sleep"),
                 FO_TASKS);
    }
    printf("cluster failover: %d tasks on 3 hosts, %lld open at the kill -9 of a master; all "
           "finished %.1f s after it (%.1f s in all)\n",
           FO_TASKS, open, th_now() - killed, th_now() - t0);
    assert_true(th_cluster_wait_ok(&cl, 30));
    size_t terminal = 0;
    assert_int_equal(count_state(st, ids, FO_TASKS, "SUCCESS", &terminal), FO_TASKS);
    qsort(ids, FO_TASKS, 37, cmp_id);
    one_terminal_each(st, ids, FO_TASKS);
    store_free(st);
    free(ids);
    for (int i = 0; i < 3; i++)
        host_stop(&h[i]);
}

int main(void)
{
    const char *filter = getenv("BGT_TEST_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_slot),
        cmocka_unit_test(test_routing),
        cmocka_unit_test(test_script_noscript),
        cmocka_unit_test(test_ask_and_moved),
        cmocka_unit_test(test_block_and_subscribe),
        cmocka_unit_test(test_every_master_reads),
        cmocka_unit_test(test_eviction_warning_every_master),
        cmocka_unit_test(test_tasks_over_masters),
        cmocka_unit_test(test_ops_over_masters),
        cmocka_unit_test(test_tasks_through_failover),
        cmocka_unit_test(test_master_failover),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

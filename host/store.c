/*
 * store.c - the store's plumbing (protocol version 1): a store is one link
 * to Redis (store_conn.c: one server, Sentinel or Cluster) plus the key
 * prefix, the limits and the SHAs of the Lua scripts, which are called by
 * SHA and loaded where a server does not know them. Commands carry the key
 * they are for, so the link can route them. The scripts themselves are in
 * store_lua.h; store_ops.c and store_read.c use what is here.
 */
#include "store.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_int.h"
#include "store_lua.h"
#include "store_lua_ops.h"
#include "store_lua_read.h"
#include "util.h"

static const char *const script_src[SC_COUNT] = {
    [SC_SUBMIT] = LUA_SUBMIT, [SC_CLAIM] = LUA_CLAIM,   [SC_HEARTBEAT] = LUA_HEARTBEAT,
    [SC_APPLY] = LUA_APPLY,   [SC_CANCEL] = LUA_CANCEL, [SC_SPLIT] = LUA_SPLIT,
    [SC_RETRY] = LUA_RETRY,   [SC_LEAVE] = LUA_LEAVE,   [SC_HOST] = LUA_HOST,
    [SC_SELECT] = LUA_SELECT, [SC_PURGE] = LUA_PURGE,   [SC_PAUSE] = LUA_PAUSE,
    [SC_HISTORY] = LUA_HISTORY,
    [SC_LIST] = LUA_LIST,
};

/* ---- connection ---- */

int store_addr_check(const redis_addr *addr, char *err, size_t errlen)
{
    switch (addr->kind) {
    case REDIS_SERVER:
    case REDIS_SENTINEL:
    case REDIS_CLUSTER: return 0;
    }
    return -EINVAL;
}

/* The hash tags: "{P:s}" of each shard and "{P}" of the data every shard shares. */
static void set_shards(store *st, int n)
{
    if (st->tags && st->shards == n)
        return;
    for (int i = 0; i < st->shards && st->tags; i++)
        free(st->tags[i]);
    free(st->tags);
    st->shards = n;
    st->tags = xcalloc((size_t)n, sizeof *st->tags);
    for (int i = 0; i < n; i++)
        st->tags[i] = xasprintf("{%s:%d}", st->prefix, i);
}

/* A reply that says the key lives on another node of a cluster. */
static bool redirected(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR &&
           (strncmp(r->str, "MOVED ", 6) == 0 || strncmp(r->str, "ASK ", 4) == 0);
}

/*
 * Refuse a Redis whose data was written by another protocol version: {P}:meta
 * holds this protocol's version and shard count (the count is adopted), and
 * without it no key of version 1 (P:events, P:hosts) may exist. Runs on every
 * new connection the link makes (n), before anything else is sent; in a
 * cluster, the node that holds a key checks it.
 */
static int check_protocol(rconn *rc, rnode *n, void *arg)
{
    store *st = arg;
    char key[300], name[300];
    snprintf(key, sizeof key, "%s:meta", st->gtag);
    const char *argv[] = {"HMGET", key, "protocol", "shards"};
    redisReply *r;
    int err = rc__node_cmd(rc, n, &r, 4, argv);
    if (err < 0)
        return err;
    char have[32] = "";
    long shards = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        if (r->element[0]->type == REDIS_REPLY_STRING)
            snprintf(have, sizeof have, "%.31s", r->element[0]->str);
        if (r->element[1]->type == REDIS_REPLY_STRING &&
            !parse_long(r->element[1]->str, 1, STORE_MAX_SHARDS, &shards))
            snprintf(have, sizeof have, "(unreadable shard count)");
    } else if (r->type == REDIS_REPLY_ERROR && !redirected(r)) {
        rc__err(rc, "%s: HMGET %s: %s", rc__node_name(n, name, sizeof name), key, r->str);
        freeReplyObject(r);
        return -EIO;
    }
    freeReplyObject(r);
    for (int i = 0; !have[0] && i < 2; i++) {
        /* Keys that only protocol 1 writes, under the same prefix. */
        char old[300];
        store__key(st, old, sizeof old, "%s", i == 0 ? "events" : "hosts");
        const char *ex[] = {"EXISTS", old};
        if ((err = rc__node_cmd(rc, n, &r, 2, ex)) < 0)
            return err;
        if (r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
            snprintf(have, sizeof have, "1");
            snprintf(key, sizeof key, "%s", old);
        }
        freeReplyObject(r);
    }
    char want[16];
    snprintf(want, sizeof want, "%d", STORE_PROTOCOL_VERSION);
    if (!have[0] || strcmp(have, want) == 0) {
        if (shards > 0) {
            set_shards(st, (int)shards);
            st->meta_read = true;
        }
        return 0;
    }
    char where[700];
    snprintf(st->err, sizeof st->err,
             "redis at %.150s holds bgtask data of protocol version %s (key %.100s); this "
             "build speaks version %s and does not migrate it: finish those tasks with the "
             "release that wrote them, or use another prefix or database",
             redis_addr_describe(&rc->addr, where, sizeof where), have, key, want);
    return -EPROTONOSUPPORT;
}

store *store_open(const bgt_config *cfg, const redis_addr *addr)
{
    store *st = xcalloc(1, sizeof *st);
    st->prefix = xstrdup(cfg->prefix && *cfg->prefix ? cfg->prefix : "bgtask");
    st->gtag = xasprintf("{%s}", st->prefix);
    set_shards(st, cfg->shards > 0 ? cfg->shards : STORE_DEFAULT_SHARDS);
    st->lim = (store_limits){.max_args_bytes = cfg->max_args_bytes,
                             .max_result_bytes = cfg->max_result_bytes,
                             .max_subtasks = cfg->max_subtasks,
                             .events_maxlen = cfg->events_maxlen,
                             .retention_s = cfg->retention_s,
                             .retention_max = cfg->retention_max,
                             .history_ms = (long long)(cfg->history_window_s * 1000),
                             .log_lines = cfg->task_log_lines,
                             .log_bytes = cfg->task_log_bytes};
    st->ack_n = cfg->min_replicas_ack;
    st->ack_ms = (int)(cfg->ack_timeout_s * 1000 + 0.5);
    if (pipe2(st->intr, O_CLOEXEC | O_NONBLOCK) < 0)
        st->intr[0] = st->intr[1] = -1;
    redis_addr a;
    redis_addr_copy(&a, addr);
    if (!a.password && cfg->redis_password && *cfg->redis_password)
        a.password = xstrdup(cfg->redis_password);
    st->rc = rconn_new(&a, st->intr[0], st->err, sizeof st->err);
    rconn_on_connect(st->rc, check_protocol, st);
    redis_addr_free(&a);
    return st;
}

int store_shards(const store *st) { return st->shards; }

int store_shard_of(const store *st, const char *id)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
        unsigned char c = *p >= 'A' && *p <= 'Z' ? (unsigned char)(*p - 'A' + 'a') : *p;
        h = (h ^ c) * 16777619u;
    }
    return (int)(h % (uint32_t)st->shards);
}

void store__norm_id(const char *id, char *out)
{
    size_t i = 0;
    for (; id[i] && i < BGT_ID_LEN; i++)
        out[i] = id[i] >= 'A' && id[i] <= 'Z' ? (char)(id[i] - 'A' + 'a') : id[i];
    out[i] = '\0';
}

int store__take_id(store *st, const char *id, char *out)
{
    if (!id_valid(id)) {
        snprintf(st->err, sizeof st->err, "invalid task id '%.40s'", id ? id : "");
        return -EINVAL;
    }
    store__norm_id(id, out);
    return 0;
}

int store__meta(store *st)
{
    if (st->meta_read || st->marked)
        return 0;
    char key[300], want[16];
    snprintf(key, sizeof key, "%s:meta", st->gtag);
    snprintf(want, sizeof want, "%d", STORE_PROTOCOL_VERSION);
    redisReply *r;
    int rc = store__cmd(st, key, &r, "HMGET %s protocol shards", key);
    if (rc < 0 || st->meta_read)
        goto out;
    long got = 0;
    const redisReply *p = r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? r->element[0] : NULL;
    const redisReply *n = p ? r->element[1] : NULL;
    if (p && p->type != REDIS_REPLY_STRING && n->type != REDIS_REPLY_STRING)
        goto out; /* not marked yet: this host's configured count stands */
    if (!p || p->type != REDIS_REPLY_STRING || strcmp(p->str, want) != 0 ||
        n->type != REDIS_REPLY_STRING || !parse_long(n->str, 1, STORE_MAX_SHARDS, &got)) {
        snprintf(st->err, sizeof st->err,
                 "%s does not say protocol %s with a shard count: bgtask data of another "
                 "version, or a key written by hand",
                 key, want);
        rc = -EPROTONOSUPPORT;
        goto out;
    }
    set_shards(st, (int)got);
    st->meta_read = true;
out:
    freeReplyObject(r);
    return rc;
}

int store_prepare(store *st)
{
    if (st->marked)
        return 0;
    char key[300], n[16], want[16];
    snprintf(key, sizeof key, "%s:meta", st->gtag);
    snprintf(n, sizeof n, "%d", st->shards);
    snprintf(want, sizeof want, "%d", STORE_PROTOCOL_VERSION);
    rcall c[3];
    redisReply *r[3] = {NULL};
    int rc = 0;
    if (store__call_fmt(&c[0], key, "HSETNX %s protocol %s", key, want) < 0 ||
        store__call_fmt(&c[1], key, "HSETNX %s shards %s", key, n) < 0 ||
        store__call_fmt(&c[2], key, "HMGET %s protocol shards", key) < 0)
        abort(); /* only on out-of-memory */
    rc = store__run(st, c, 3, r);
    for (int i = 0; i < 3; i++)
        free((char *)c[i].cmd);
    if (rc < 0)
        return rc;
    long got = 0;
    redisReply *m = r[2];
    if (m->type != REDIS_REPLY_ARRAY || m->elements != 2 ||
        m->element[0]->type != REDIS_REPLY_STRING || strcmp(m->element[0]->str, want) != 0 ||
        m->element[1]->type != REDIS_REPLY_STRING ||
        !parse_long(m->element[1]->str, 1, STORE_MAX_SHARDS, &got)) {
        snprintf(st->err, sizeof st->err,
                 "%s does not say protocol %s with a shard count: bgtask data of another "
                 "version, or a key written by hand",
                 key, want);
        rc = -EPROTONOSUPPORT;
    } else {
        set_shards(st, (int)got);
        st->marked = true;
    }
    for (int i = 0; i < 3; i++)
        freeReplyObject(r[i]);
    return rc;
}

char *store_take_warnings(store *st)
{
    if (!st->warn[0])
        return NULL;
    char *w = xstrdup(st->warn);
    st->warn[0] = '\0';
    return w;
}

void store__note_warnings(store *st, const redisReply *r)
{
    if (r->type != REDIS_REPLY_STRING || r->len == 0)
        return;
    size_t have = strlen(st->warn);
    snprintf(st->warn + have, sizeof st->warn - have, "%s%s", have ? " " : "", r->str);
}

void store_free(store *st)
{
    if (!st)
        return;
    rconn_free(st->rc);
    for (int i = 0; i < st->shards; i++)
        free(st->tags[i]);
    free(st->tags);
    free(st->gtag);
    free(st->prefix);
    store__events_clear(st);
    free(st->paused);
    if (st->intr[0] >= 0) {
        close(st->intr[0]);
        close(st->intr[1]);
    }
    free(st);
}

const char *store_errstr(const store *st) { return st->err; }

void store_set_error(store *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->err, sizeof st->err, fmt, ap);
    va_end(ap);
}

const char *store_prefix(const store *st) { return st->prefix; }

int store_connect(store *st) { return rconn_connect(st->rc); }

__attribute__((format(printf, 4, 5))) const char *store__key(const store *st, char *buf,
                                                              size_t n, const char *fmt, ...)
{
    int k = snprintf(buf, n, "%s:", st->prefix);
    va_list ap;
    va_start(ap, fmt);
    if (k >= 0 && (size_t)k < n)
        vsnprintf(buf + k, n - (size_t)k, fmt, ap);
    va_end(ap);
    return buf;
}

int store__run(store *st, const rcall *calls, size_t n, redisReply **replies)
{
    return rconn_run(st->rc, calls, n, replies);
}

int store__call_fmt(rcall *c, const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *cmd = NULL;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    *c = (rcall){.key = key, .keylen = key ? strlen(key) : 0, .cmd = cmd,
                 .len = len > 0 ? (size_t)len : 0};
    return len > 0 ? 0 : -ENOMEM;
}

/* Take r: 0 with *out = r, or -EPROTO with the error text kept (r freed). */
static int take_reply(store *st, redisReply *r, redisReply **out)
{
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(st->err, sizeof st->err, "%s", r->str);
        freeReplyObject(r);
        return -EPROTO;
    }
    *out = r;
    return 0;
}

/* Run a command routed by key; *out gets the reply (caller frees) unless it is an error. */
__attribute__((format(printf, 4, 5))) int store__cmd(store *st, const char *key, redisReply **out,
                                                     const char *fmt, ...)
{
    *out = NULL;
    va_list ap;
    va_start(ap, fmt);
    char *cmd = NULL;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len <= 0)
        return -ENOMEM;
    rcall c = {.key = key, .keylen = key ? strlen(key) : 0, .cmd = cmd, .len = (size_t)len};
    redisReply *r;
    int rc = rconn_run(st->rc, &c, 1, &r);
    free(cmd);
    return rc < 0 ? rc : take_reply(st, r, out);
}

int store__block(store *st, const char *key, argbuf *a, double timeout_s, redisReply **out)
{
    *out = NULL;
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, (int)a->n, a->v, a->len);
    if (len <= 0)
        return -ENOMEM;
    rcall c = {.key = key, .keylen = key ? strlen(key) : 0, .cmd = cmd, .len = (size_t)len};
    redisReply *r;
    int rc = rconn_block(st->rc, &c, timeout_s, &r);
    free(cmd);
    return rc < 0 ? rc : take_reply(st, r, out);
}

void store__args_push_len(argbuf *a, const char *s, size_t len)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = xrealloc(a->v, a->cap * sizeof *a->v);
        a->len = xrealloc(a->len, a->cap * sizeof *a->len);
    }
    a->v[a->n] = s;
    a->len[a->n++] = len;
}

void store__args_push(argbuf *a, const char *s)
{
    if (!s)
        s = "";
    store__args_push_len(a, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) void store__args_pushf(argbuf *a, const char *fmt, ...)
{
    if (a->num_cap - a->num_used < 64) {
        a->num_cap = 4096;
        a->num = xmalloc(a->num_cap);
        a->num_used = 0;
        a->nums = xrealloc(a->nums, (a->nnums + 1) * sizeof *a->nums);
        a->nums[a->nnums++] = a->num;
    }
    va_list ap;
    va_start(ap, fmt);
    char *p = a->num + a->num_used;
    int n = vsnprintf(p, 64, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= 64)
        n = 63;
    a->num_used += (size_t)n + 1;
    store__args_push_len(a, p, (size_t)n);
}

void store__args_free(argbuf *a)
{
    for (size_t i = 0; i < a->nnums; i++)
        free(a->nums[i]);
    free(a->nums);
    free(a->v);
    free(a->len);
    memset(a, 0, sizeof *a);
}

void store__args_script(store *st, argbuf *a, int script, int shard)
{
    store__args_push(a, "EVALSHA");
    store__args_push(a, st->sha[script]); /* patched in eval_script once known */
    store__args_push(a, "1");
    if (shard < 0) {
        store__args_push(a, st->gtag);
        return;
    }
    store__args_push(a, st->tags[shard]);
    store__args_push(a, st->prefix);
    store__args_pushf(a, "%d", shard);
}

/* The SHA of a script, from the first server that loads it (the same everywhere). */
static int script_sha(store *st, int script, const char *key)
{
    if (st->sha[script][0])
        return 0;
    redisReply *r;
    int rc = store__cmd(st, key, &r, "SCRIPT LOAD %s", script_src[script]);
    if (rc < 0)
        return rc;
    if (r->type == REDIS_REPLY_STRING && r->len == 40)
        memcpy(st->sha[script], r->str, 41);
    else
        rc = -EPROTO;
    freeReplyObject(r);
    if (rc < 0)
        snprintf(st->err, sizeof st->err, "SCRIPT LOAD: unexpected reply");
    return rc;
}

/*
 * Run n script calls together: each by SHA, routed by its first key (KEYS[1]),
 * calls to one server pipelined; a server that answers NOSCRIPT gets the
 * script loaded and the call again. A durable call, with
 * redis.min_replicas_ack set, has a WAIT right after it on the same
 * connection: its short_ says whether fewer replicas confirmed its writes in
 * time (st->err then says how many).
 */
int store__eval_many(store *st, script_call *calls, size_t n)
{
    rcall *c = xcalloc(2 * n + 1, sizeof *c);
    redisReply **r = xcalloc(2 * n + 1, sizeof *r);
    size_t *at = xcalloc(n + 1, sizeof *at);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = script_sha(st, calls[i].script, calls[i].a.v[3]);
    size_t nc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        argbuf *a = &calls[i].a;
        a->v[1] = st->sha[calls[i].script];
        a->len[1] = 40;
        char *cmd = NULL;
        int len = redisFormatCommandArgv(&cmd, (int)a->n, a->v, a->len);
        if (len <= 0)
            abort(); /* only on out-of-memory */
        at[i] = nc;
        c[nc++] = (rcall){.key = a->v[3],
                          .keylen = a->len[3],
                          .cmd = cmd,
                          .len = (size_t)len,
                          .script = script_src[calls[i].script]};
        if (calls[i].durable && st->ack_n > 0) {
            if (store__call_fmt(&c[nc], a->v[3], "WAIT %d %d", st->ack_n, st->ack_ms) < 0)
                abort(); /* only on out-of-memory */
            c[nc++].with_prev = true;
        }
    }
    if (rc == 0)
        rc = rconn_run(st->rc, c, nc, r);
    int acked = -1;
    for (size_t i = 0; i < n; i++) {
        calls[i].reply = NULL;
        calls[i].short_ = false;
        if (rc < 0)
            continue;
        redisReply *w = calls[i].durable && st->ack_n > 0 ? r[at[i] + 1] : NULL;
        if (w && w->type == REDIS_REPLY_INTEGER && w->integer < st->ack_n) {
            calls[i].short_ = true;
            acked = (int)w->integer;
        } else if (w && w->type != REDIS_REPLY_INTEGER) {
            snprintf(st->err, sizeof st->err, "WAIT: %s",
                     w->type == REDIS_REPLY_ERROR ? w->str : "unexpected reply");
            rc = -EPROTO;
        }
        redisReply *e = r[at[i]];
        if (e->type == REDIS_REPLY_ERROR) {
            snprintf(st->err, sizeof st->err, "script failed: %s", e->str);
            rc = -EPROTO;
        } else {
            calls[i].reply = e;
            r[at[i]] = NULL;
        }
    }
    for (size_t i = 0; i < nc; i++) {
        free((char *)c[i].cmd);
        freeReplyObject(r[i]);
    }
    if (rc < 0)
        for (size_t i = 0; i < n; i++) {
            freeReplyObject(calls[i].reply);
            calls[i].reply = NULL;
        }
    else if (acked >= 0)
        snprintf(st->err, sizeof st->err,
                 "%d of %d replicas confirmed within %d ms (redis.min_replicas_ack): the "
                 "change is on the master only and a failover may lose it",
                 acked, st->ack_n, st->ack_ms);
    free(at);
    free(c);
    free(r);
    return rc;
}

/* One call of store__eval_many; a takes the argbuf's place and is left to the caller. */
static int eval_one(store *st, int script, argbuf *a, bool durable, redisReply **out, bool *short_)
{
    script_call c = {.script = script, .a = *a, .durable = durable};
    int rc = store__eval_many(st, &c, 1);
    *a = c.a;
    *out = c.reply;
    if (short_)
        *short_ = c.short_;
    return rc;
}

int store__eval_script(store *st, int script, argbuf *a, redisReply **out)
{
    return eval_one(st, script, a, false, out, NULL);
}

int store__eval_script_durable(store *st, int script, argbuf *a, redisReply **out, bool *short_)
{
    return eval_one(st, script, a, true, out, short_);
}

int store_ping(store *st)
{
    redisReply *r;
    int rc = store__cmd(st, NULL, &r, "PING");
    freeReplyObject(r);
    return rc;
}

void store_master_texts_free(store_master_text *t, size_t n)
{
    for (size_t i = 0; t && i < n; i++) {
        free(t[i].server);
        free(t[i].text);
    }
    free(t);
}

/*
 * Run the command fmt on every master (rconn_each_master) and keep what
 * each answered: a string reply (INFO), or the value of a CONFIG GET pair.
 * An error reply, or another shape, is -EPROTO (-ENOENT for an empty CONFIG
 * GET) with store_errstr naming the master.
 */
__attribute__((format(printf, 4, 5))) static int each_master(store *st, store_master_text **out,
                                                             size_t *n, const char *fmt, ...)
{
    *out = NULL;
    *n = 0;
    va_list ap, copy;
    va_start(ap, fmt);
    va_copy(copy, ap);
    char what[160], *cmd = NULL;
    vsnprintf(what, sizeof what, fmt, copy); /* for messages */
    va_end(copy);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len <= 0)
        return -ENOMEM;
    rcall c = {.cmd = cmd, .len = (size_t)len};
    redisReply **r;
    char **names;
    int got = rconn_each_master(st->rc, &c, &r, &names);
    free(cmd);
    if (got < 0)
        return got;
    store_master_text *t = xcalloc((size_t)got, sizeof *t);
    int rc = 0;
    for (int i = 0; i < got; i++) {
        const redisReply *v = r[i];
        if (v->type == REDIS_REPLY_ARRAY && v->elements == 2) /* CONFIG GET: name, value */
            v = v->element[1];
        else if (v->type == REDIS_REPLY_ARRAY && v->elements == 0)
            v = NULL;
        if (rc == 0 && (!v || (v->type != REDIS_REPLY_STRING && v->type != REDIS_REPLY_STATUS))) {
            snprintf(st->err, sizeof st->err, "%s: %s: %s", names[i], what,
                     !v                                ? "no such setting"
                     : r[i]->type == REDIS_REPLY_ERROR ? r[i]->str
                                                       : "unexpected reply");
            rc = v ? -EPROTO : -ENOENT;
        }
        t[i].server = names[i];
        t[i].text = rc == 0 ? strndup(v->str, v->len) : NULL;
        freeReplyObject(r[i]);
    }
    free(r);
    free(names);
    if (rc < 0) {
        store_master_texts_free(t, (size_t)got);
        return rc;
    }
    *out = t;
    *n = (size_t)got;
    return 0;
}

int store_config_get(store *st, const char *name, store_master_text **out, size_t *n)
{
    return each_master(st, out, n, "CONFIG GET %s", name);
}

int store_config_set(store *st, const char *name, const char *value)
{
    store_master_text *t;
    size_t n;
    int rc = each_master(st, &t, &n, "CONFIG SET %s %s", name, value);
    store_master_texts_free(t, n);
    return rc;
}

int store_info(store *st, const char *section, store_master_text **out, size_t *n)
{
    return each_master(st, out, n, "INFO %s", section);
}

void store_interrupt(store *st)
{
    if (st->intr[1] >= 0) {
        ssize_t w = write(st->intr[1], "x", 1);
        (void)w;
    }
}

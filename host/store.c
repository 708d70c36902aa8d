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
#include "util.h"

static const char *const script_src[SC_COUNT] = {
    [SC_SUBMIT] = LUA_SUBMIT,       [SC_CLAIM] = LUA_CLAIM, [SC_HEARTBEAT] = LUA_HEARTBEAT,
    [SC_APPLY] = LUA_APPLY,         [SC_CANCEL] = LUA_CANCEL, [SC_SPLIT] = LUA_SPLIT,
    [SC_RETRY] = LUA_RETRY,
};

/* ---- connection ---- */

int store_addr_check(const redis_addr *addr, char *err, size_t errlen)
{
    switch (addr->kind) {
    case REDIS_SERVER:
    case REDIS_SENTINEL: return 0;
    case REDIS_CLUSTER:
        snprintf(err, errlen, "redis+cluster://: a Redis Cluster needs protocol 2 (hash-tagged "
                              "keys, one slot per script call); this build speaks protocol %d, "
                              "whose scripts touch keys of many slots",
                 STORE_PROTOCOL_VERSION);
        return -ENOTSUP;
    }
    return -EINVAL;
}

/*
 * Refuse a Redis whose data was written by another protocol version: its
 * P:protocol key (set by every submission) must be absent or ours. Runs on
 * every new connection the link makes (n), before anything else is sent.
 */
static int check_protocol(rconn *rc, rnode *n, void *arg)
{
    store *st = arg;
    char key[300];
    store__key(st, key, sizeof key, "protocol");
    const char *argv[] = {"GET", key};
    redisReply *r;
    int err = rc__node_cmd(rc, n, &r, 2, argv);
    if (err < 0)
        return err;
    char have[32] = "";
    if (r->type == REDIS_REPLY_STRING) {
        snprintf(have, sizeof have, "%.*s", (int)(r->len < 31 ? r->len : 31), r->str);
    } else if (r->type == REDIS_REPLY_ERROR && (strncmp(r->str, "MOVED ", 6) == 0 ||
                                                strncmp(r->str, "ASK ", 4) == 0)) {
        /* A cluster node that does not hold the key: its owner checks. */
    } else if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "WRONGTYPE", 9) != 0) {
        char name[300];
        rc__err(rc, "%s: GET %s: %s", rc__node_name(n, name, sizeof name), key, r->str);
        freeReplyObject(r);
        return -EIO;
    } else if (r->type != REDIS_REPLY_NIL) {
        snprintf(have, sizeof have, "(unreadable)");
    }
    freeReplyObject(r);
    char want[16];
    snprintf(want, sizeof want, "%d", STORE_PROTOCOL_VERSION);
    if (!have[0] || strcmp(have, want) == 0)
        return 0;
    char where[700];
    snprintf(st->err, sizeof st->err,
             "redis at %s holds bgtask data of protocol version %s (key %s:protocol); this "
             "build speaks version %s: use a matching version, or another prefix or database",
             redis_addr_describe(&rc->addr, where, sizeof where), have, st->prefix, want);
    return -EPROTONOSUPPORT;
}

store *store_open(const bgt_config *cfg, const redis_addr *addr)
{
    store *st = xcalloc(1, sizeof *st);
    st->prefix = xstrdup(cfg->prefix && *cfg->prefix ? cfg->prefix : "bgtask");
    st->lim = (store_limits){.max_args_bytes = cfg->max_args_bytes,
                             .max_result_bytes = cfg->max_result_bytes,
                             .max_subtasks = cfg->max_subtasks,
                             .events_maxlen = cfg->events_maxlen,
                             .retention_s = cfg->retention_s};
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

void store_free(store *st)
{
    if (!st)
        return;
    rconn_free(st->rc);
    free(st->prefix);
    if (st->intr[0] >= 0) {
        close(st->intr[0]);
        close(st->intr[1]);
    }
    free(st);
}

const char *store_errstr(const store *st) { return st->err; }

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

/* Start a script call's argv: EVALSHA sha 0 prefix maxlen retention. */
void store__args_script(store *st, argbuf *a, int script)
{
    store__args_push(a, "EVALSHA");
    store__args_push(a, st->sha[script]); /* patched in eval_script once known */
    store__args_push(a, "0");
    store__args_push(a, st->prefix);
    store__args_pushf(a, "%ld", st->lim.events_maxlen);
    store__args_pushf(a, "%.3f", st->lim.retention_s);
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
 * Call a script by SHA, routed by its first key (KEYS[1]) if it has one; a
 * server that answers NOSCRIPT gets the script loaded and the call again.
 * With durable and redis.min_replicas_ack set, a WAIT goes right after it on
 * the same connection, and *acked gets how many replicas confirmed the
 * script's writes (else -1).
 */
static int eval_script(store *st, int script, argbuf *a, bool durable, redisReply **out,
                       int *acked)
{
    *out = NULL;
    *acked = -1;
    const char *key = strcmp(a->v[2], "0") != 0 ? a->v[3] : NULL;
    int rc = script_sha(st, script, key);
    if (rc < 0)
        return rc;
    a->v[1] = st->sha[script];
    a->len[1] = 40;
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, (int)a->n, a->v, a->len);
    if (len <= 0)
        return -ENOMEM;
    rcall c[2] = {{.key = key, .keylen = key ? strlen(key) : 0, .cmd = cmd, .len = (size_t)len,
                   .script = script_src[script]}};
    size_t n = 1;
    if (durable && st->ack_n > 0) {
        if ((rc = store__call_fmt(&c[1], key, "WAIT %d %d", st->ack_n, st->ack_ms)) < 0) {
            free(cmd);
            return rc;
        }
        c[1].with_prev = true;
        n = 2;
    }
    redisReply *r[2] = {NULL, NULL};
    rc = rconn_run(st->rc, c, n, r);
    free(cmd);
    if (n == 2)
        free((char *)c[1].cmd);
    if (rc < 0)
        return rc;
    if (n == 2) {
        if (r[1]->type == REDIS_REPLY_INTEGER) {
            *acked = (int)r[1]->integer;
        } else {
            snprintf(st->err, sizeof st->err, "WAIT: %s",
                     r[1]->type == REDIS_REPLY_ERROR ? r[1]->str : "unexpected reply");
            rc = -EPROTO;
        }
        freeReplyObject(r[1]);
    }
    if (rc == 0 && r[0]->type == REDIS_REPLY_ERROR) {
        snprintf(st->err, sizeof st->err, "script failed: %s", r[0]->str);
        rc = -EPROTO;
    }
    if (rc < 0) {
        freeReplyObject(r[0]);
        return rc;
    }
    if (*acked >= 0 && *acked < st->ack_n)
        snprintf(st->err, sizeof st->err,
                 "%d of %d replicas confirmed within %d ms (redis.min_replicas_ack): the "
                 "change is on the master only and a failover may lose it",
                 *acked, st->ack_n, st->ack_ms);
    *out = r[0];
    return 0;
}

int store__eval_script(store *st, int script, argbuf *a, redisReply **out)
{
    int acked;
    return eval_script(st, script, a, false, out, &acked);
}

int store__eval_script_durable(store *st, int script, argbuf *a, redisReply **out, bool *short_)
{
    int acked;
    int rc = eval_script(st, script, a, true, out, &acked);
    *short_ = rc == 0 && acked >= 0 && acked < st->ack_n;
    return rc;
}

int store_ping(store *st)
{
    redisReply *r;
    int rc = store__cmd(st, NULL, &r, "PING");
    freeReplyObject(r);
    return rc;
}

int store_config_get(store *st, const char *name, char *value, size_t n)
{
    redisReply *r;
    int rc = store__cmd(st, NULL, &r, "CONFIG GET %s", name);
    if (rc < 0)
        return rc;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING) {
        strlcpy_(value, r->element[1]->str, n);
    } else {
        snprintf(st->err, sizeof st->err, "CONFIG GET %.64s: no such setting", name);
        rc = -ENOENT;
    }
    freeReplyObject(r);
    return rc;
}

int store_config_set(store *st, const char *name, const char *value)
{
    redisReply *r;
    int rc = store__cmd(st, NULL, &r, "CONFIG SET %s %s", name, value);
    freeReplyObject(r);
    return rc;
}

void store_interrupt(store *st)
{
    if (st->intr[1] >= 0) {
        ssize_t w = write(st->intr[1], "x", 1);
        (void)w;
    }
}

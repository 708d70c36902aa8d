/*
 * store.c - the Redis connection of the store (protocol version 1): addresses,
 * connecting with reconnect backoff, loading the Lua scripts once per
 * connection and calling them by SHA (NOSCRIPT handled), waiting for replies
 * with a timeout that store_interrupt can cut short. The scripts themselves
 * are in store_lua.h; store_ops.c and store_read.c use what is here.
 */
#include "store.h"

#include <fcntl.h>
#include <math.h>
#include <poll.h>
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
    case REDIS_SERVER: return 0;
    case REDIS_SENTINEL:
        snprintf(err, errlen, "redis+sentinel:// addresses are not supported by this build");
        return -ENOTSUP;
    case REDIS_CLUSTER:
        snprintf(err, errlen, "redis+cluster://: a Redis Cluster needs protocol 2 (hash-tagged "
                              "keys, one slot per script call); this build speaks protocol %d, "
                              "whose scripts touch keys of many slots",
                 STORE_PROTOCOL_VERSION);
        return -ENOTSUP;
    }
    return -EINVAL;
}

store *store_open(const bgt_config *cfg, const redis_addr *addr)
{
    store *st = xcalloc(1, sizeof *st);
    redis_addr_copy(&st->addr, addr);
    if (!st->addr.password && cfg->redis_password && *cfg->redis_password)
        st->addr.password = xstrdup(cfg->redis_password);
    st->prefix = xstrdup(cfg->prefix && *cfg->prefix ? cfg->prefix : "bgtask");
    st->lim = (store_limits){.max_args_bytes = cfg->max_args_bytes,
                             .max_result_bytes = cfg->max_result_bytes,
                             .max_subtasks = cfg->max_subtasks,
                             .events_maxlen = cfg->events_maxlen,
                             .retention_s = cfg->retention_s};
    st->backoff = BACKOFF_MIN_S;
    if (pipe2(st->intr, O_CLOEXEC | O_NONBLOCK) < 0)
        st->intr[0] = st->intr[1] = -1;
    return st;
}

void store__drop_conn(store *st)
{
    if (st->c)
        redisFree(st->c);
    st->c = NULL;
}

void store_free(store *st)
{
    if (!st)
        return;
    store__drop_conn(st);
    redis_addr_free(&st->addr);
    free(st->prefix);
    free(st->sub_channel);
    if (st->intr[0] >= 0) {
        close(st->intr[0]);
        close(st->intr[1]);
    }
    free(st);
}


const char *store_errstr(const store *st) { return st->err; }

const char *store_prefix(const store *st) { return st->prefix; }

static struct timeval tv_of(double s)
{
    return (struct timeval){(time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6)};
}

/* Mark the connection dead after an I/O error; the next call reconnects. */
int store__conn_failed(store *st, const char *what)
{
    snprintf(st->err, sizeof st->err, "%s: %s", what,
             st->c && st->c->errstr[0] ? st->c->errstr : "connection lost");
    store__drop_conn(st);
    return -EIO;
}

/* Run one command on a fresh connection during setup; frees the reply. */
static int setup_cmd(store *st, const char *what, int argc, const char **argv)
{
    redisReply *r = redisCommandArgv(st->c, argc, argv, NULL);
    if (!r)
        return store__conn_failed(st, what);
    int rc = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(st->err, sizeof st->err, "%s: %s", what, r->str);
        rc = -EIO;
    }
    freeReplyObject(r);
    return rc;
}

static int load_scripts(store *st)
{
    for (int i = 0; i < SC_COUNT; i++) {
        redisReply *r = redisCommand(st->c, "SCRIPT LOAD %s", script_src[i]);
        if (!r)
            return store__conn_failed(st, "SCRIPT LOAD");
        if (r->type != REDIS_REPLY_STRING || r->len != 40) {
            snprintf(st->err, sizeof st->err, "SCRIPT LOAD failed: %s",
                     r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
            freeReplyObject(r);
            return -EIO;
        }
        memcpy(st->sha[i], r->str, 41);
        freeReplyObject(r);
    }
    return 0;
}

/*
 * Refuse a Redis whose data was written by another protocol version: its
 * P:protocol key (set by every submission) must be absent or ours.
 */
static int check_protocol(store *st)
{
    redisReply *r = redisCommand(st->c, "GET %s:protocol", st->prefix);
    if (!r)
        return store__conn_failed(st, "GET protocol");
    char have[32] = "";
    if (r->type == REDIS_REPLY_STRING)
        snprintf(have, sizeof have, "%.*s", (int)(r->len < 31 ? r->len : 31), r->str);
    else if (r->type != REDIS_REPLY_NIL)
        snprintf(have, sizeof have, "(unreadable)");
    freeReplyObject(r);
    char want[16];
    snprintf(want, sizeof want, "%d", STORE_PROTOCOL_VERSION);
    if (!have[0] || strcmp(have, want) == 0)
        return 0;
    char where[256];
    snprintf(st->err, sizeof st->err,
             "redis at %s holds bgtask data of protocol version %s (key %s:protocol); this "
             "build speaks version %s: use a matching version, or another prefix or database",
             redis_addr_describe(&st->addr, where, sizeof where), have, st->prefix, want);
    return -EPROTONOSUPPORT;
}

static int connect_now(store *st)
{
    struct timeval tv = tv_of(2.0);
    st->c = st->addr.path ? redisConnectUnixWithTimeout(st->addr.path, tv)
                          : redisConnectWithTimeout(st->addr.host, st->addr.port, tv);
    if (!st->c || st->c->err) {
        snprintf(st->err, sizeof st->err, "cannot connect to %s%s%d: %s",
                 st->addr.path ? st->addr.path : st->addr.host, st->addr.path ? "" : ":",
                 st->addr.path ? 0 : st->addr.port, st->c ? st->c->errstr : "out of memory");
        if (st->addr.path) /* drop the ":0" that makes no sense for a socket */
            snprintf(st->err, sizeof st->err, "cannot connect to %s: %s", st->addr.path,
                     st->c ? st->c->errstr : "out of memory");
        store__drop_conn(st);
        return -EIO;
    }
    redisSetTimeout(st->c, tv_of(CMD_TIMEOUT_S));
    int rc = 0;
    if (st->addr.password) {
        const char *argv[] = {"AUTH", st->addr.username ? st->addr.username : st->addr.password,
                              st->addr.password};
        int argc = st->addr.username ? 3 : 2;
        if ((rc = setup_cmd(st, "AUTH", argc, argv)) < 0)
            goto fail;
    }
    if (st->addr.db) {
        char db[16];
        snprintf(db, sizeof db, "%d", st->addr.db);
        const char *argv[] = {"SELECT", db};
        if ((rc = setup_cmd(st, "SELECT", 2, argv)) < 0)
            goto fail;
    }
    if ((rc = check_protocol(st)) < 0)
        goto fail;
    if (st->sub_channel) {
        bool pattern = strchr(st->sub_channel, '*') != NULL;
        redisReply *r = redisCommand(st->c, pattern ? "PSUBSCRIBE %s" : "SUBSCRIBE %s",
                                     st->sub_channel);
        if (!r)
            return store__conn_failed(st, "SUBSCRIBE");
        freeReplyObject(r);
        st->subscribed = true;
        return 0;
    }
    if ((rc = load_scripts(st)) < 0)
        goto fail;
    return 0;
fail:
    store__drop_conn(st);
    return rc;
}

/* Make sure there is a connection: reconnect unless still backing off. */
int store__ensure(store *st)
{
    if (st->c)
        return 0;
    double now = mono_s();
    if (now < st->retry_at)
        return -EIO; /* st->err still says why the last attempt failed */
    int rc = connect_now(st);
    if (rc < 0) {
        st->retry_at = now + st->backoff;
        st->backoff = fmin(st->backoff * 2, BACKOFF_MAX_S);
        return rc == -EPROTONOSUPPORT ? rc : -EIO;
    }
    st->backoff = BACKOFF_MIN_S;
    st->retry_at = 0;
    return 0;
}

int store_connect(store *st)
{
    st->retry_at = 0;
    return store__ensure(st);
}

/* Run a command; *out gets the reply (caller frees) unless it is an error. */
__attribute__((format(printf, 3, 4))) int store__cmd(store *st, redisReply **out,
                                                     const char *fmt, ...)
{
    *out = NULL;
    int rc = store__ensure(st);
    if (rc < 0)
        return rc;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(st->c, fmt, ap);
    va_end(ap);
    if (!r)
        return store__conn_failed(st, fmt);
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(st->err, sizeof st->err, "%s", r->str);
        freeReplyObject(r);
        return -EPROTO;
    }
    *out = r;
    return 0;
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
    store__args_push(a, st->sha[script]); /* patched in eval_script once connected */
    store__args_push(a, "0");
    store__args_push(a, st->prefix);
    store__args_pushf(a, "%ld", st->lim.events_maxlen);
    store__args_pushf(a, "%.3f", st->lim.retention_s);
}

/* Call a script by SHA; on NOSCRIPT load the scripts again and retry once. */
int store__eval_script(store *st, int script, argbuf *a, redisReply **out)
{
    *out = NULL;
    int rc = store__ensure(st);
    if (rc < 0)
        return rc;
    for (int tries = 0; tries < 2; tries++) {
        a->v[1] = st->sha[script];
        a->len[1] = strlen(st->sha[script]);
        redisReply *r = redisCommandArgv(st->c, (int)a->n, a->v, a->len);
        if (!r)
            return store__conn_failed(st, "EVALSHA");
        if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0 && tries == 0) {
            freeReplyObject(r);
            if ((rc = load_scripts(st)) < 0)
                return rc;
            continue;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(st->err, sizeof st->err, "script failed: %s", r->str);
            freeReplyObject(r);
            return -EPROTO;
        }
        *out = r;
        return 0;
    }
    return -EPROTO;
}

int store_ping(store *st)
{
    redisReply *r;
    int rc = store__cmd(st, &r, "PING");
    freeReplyObject(r);
    return rc;
}

int store_config_get(store *st, const char *name, char *value, size_t n)
{
    redisReply *r;
    int rc = store__cmd(st, &r, "CONFIG GET %s", name);
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
    int rc = store__cmd(st, &r, "CONFIG SET %s %s", name, value);
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

static void drain_intr(store *st)
{
    char buf[64];
    while (st->intr[0] >= 0 && read(st->intr[0], buf, sizeof buf) > 0) {
    }
}

/*
 * Wait up to timeout_s for one reply on st->c (a command already sent, or a
 * subscriber connection). -ETIMEDOUT, -EINTR (store_interrupt: the connection
 * is dropped, since a reply may still be on its way), -EIO.
 */
int store__wait_reply(store *st, double timeout_s, redisReply **out)
{
    *out = NULL;
    void *rep = NULL;
    if (redisGetReplyFromReader(st->c, &rep) != REDIS_OK)
        return store__conn_failed(st, "read");
    if (rep) {
        *out = rep;
        return 0;
    }
    double end = mono_s() + timeout_s;
    for (;;) {
        /* Flush anything still unsent (the command itself). */
        int done = 0;
        while (!done) {
            if (redisBufferWrite(st->c, &done) != REDIS_OK)
                return store__conn_failed(st, "write");
        }
        struct pollfd pfd[2] = {{st->c->fd, POLLIN, 0}, {st->intr[0], POLLIN, 0}};
        double left = end - mono_s();
        if (left < 0)
            left = 0;
        int n = poll(pfd, st->intr[0] >= 0 ? 2 : 1, (int)(left * 1000) + (left > 0));
        if (n < 0 && errno != EINTR)
            return store__conn_failed(st, "poll");
        if (n > 0 && (pfd[1].revents & POLLIN)) {
            drain_intr(st);
            store__drop_conn(st);
            snprintf(st->err, sizeof st->err, "interrupted");
            return -EINTR;
        }
        if (n > 0 && pfd[0].revents) {
            if (redisBufferRead(st->c) != REDIS_OK)
                return store__conn_failed(st, "read");
            if (redisGetReplyFromReader(st->c, &rep) != REDIS_OK)
                return store__conn_failed(st, "read");
            if (rep) {
                *out = rep;
                return 0;
            }
        }
        if (mono_s() >= end)
            return -ETIMEDOUT;
    }
}


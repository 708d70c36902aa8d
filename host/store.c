/*
 * store.c - all Redis I/O (protocol version 1): connection with reconnect
 * backoff, the Lua scripts (loaded once per connection, called by SHA, NOSCRIPT
 * handled), and the reads clients make. The only file that includes hiredis.
 */
#include "store.h"

#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "store_lua.h"
#include "util.h"

enum { SC_SUBMIT, SC_CLAIM, SC_HEARTBEAT, SC_APPLY, SC_CANCEL, SC_SPLIT, SC_RETRY, SC_COUNT };

static const char *const script_src[SC_COUNT] = {
    [SC_SUBMIT] = LUA_SUBMIT,       [SC_CLAIM] = LUA_CLAIM, [SC_HEARTBEAT] = LUA_HEARTBEAT,
    [SC_APPLY] = LUA_APPLY,         [SC_CANCEL] = LUA_CANCEL, [SC_SPLIT] = LUA_SPLIT,
    [SC_RETRY] = LUA_RETRY,
};

#define CMD_TIMEOUT_S 5.0
#define BACKOFF_MIN_S 0.05
#define BACKOFF_MAX_S 5.0

struct store {
    redis_addr addr;
    char *password;
    char *prefix;
    store_limits lim;
    redisContext *c;
    char sha[SC_COUNT][41];
    bool subscribed;        /* a subscriber connection: only pub/sub replies */
    char *sub_channel;      /* what to re-subscribe after a reconnect */
    double retry_at;        /* no reconnect attempt before this (mono) */
    double backoff;         /* current reconnect backoff */
    int intr[2];            /* self-pipe for store_interrupt */
    char err[256];
};

/* ---- addresses ---- */

static int redis_addr_parse_(const char *url, const char *shown, redis_addr *out, char *err,
                             size_t errlen);

/* url with any password replaced by "***", for messages (malloc'd). */
static char *mask_url(const char *url)
{
    const char *scheme = strstr(url, "://");
    const char *at = scheme ? strrchr(scheme + 3, '@') : NULL;
    if (!at)
        return xstrdup(url);
    return xasprintf("%.*s***%s", (int)(scheme + 3 - url), url, at);
}

int redis_addr_parse(const char *url, redis_addr *out, char *err, size_t errlen)
{
    char *shown = url ? mask_url(url) : NULL;
    int rc = redis_addr_parse_(url, shown, out, err, errlen);
    free(shown);
    return rc;
}

static int redis_addr_parse_(const char *url, const char *shown, redis_addr *out, char *err,
                             size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (!url || !*url) {
        snprintf(err, errlen, "empty redis address");
        return -EINVAL;
    }
    if (url[0] == '/') {
        out->path = xstrdup(url);
        return 0;
    }
    if (strncmp(url, "unix://", 7) == 0) {
        const char *p = url + 7;
        const char *q = strchr(p, '?');
        out->path = q ? strndup(p, (size_t)(q - p)) : xstrdup(p);
        if (!out->path || out->path[0] != '/') {
            snprintf(err, errlen, "%s: a unix socket path must be absolute", shown);
            goto fail;
        }
        if (q) {
            char *end;
            if (strncmp(q, "?db=", 4) != 0 || (out->db = (int)strtol(q + 4, &end, 10), *end) ||
                out->db < 0) {
                snprintf(err, errlen, "%s: expected ?db=N after the socket path", shown);
                goto fail;
            }
        }
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "%s: expected redis://host:port/db, unix:///path or /path", shown);
        return -EINVAL;
    }
    const char *p = url + 8;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon)
            out->password = strndup(colon + 1, (size_t)(at - colon - 1));
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    const char *hostend = slash ? slash : p + strlen(p);
    const char *colon = memchr(p, ':', (size_t)(hostend - p));
    if (p[0] == '[') { /* [::1]:port */
        const char *rb = memchr(p, ']', (size_t)(hostend - p));
        if (!rb) {
            snprintf(err, errlen, "%s: unterminated [address]", shown);
            goto fail;
        }
        out->host = strndup(p + 1, (size_t)(rb - p - 1));
        colon = rb[1] == ':' ? rb + 1 : NULL;
    } else {
        out->host = strndup(p, (size_t)((colon ? colon : hostend) - p));
    }
    if (!out->host || !*out->host) {
        snprintf(err, errlen, "%s: missing host", shown);
        goto fail;
    }
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (end != hostend || port < 1 || port > 65535) {
            snprintf(err, errlen, "%s: port must be 1..65535", shown);
            goto fail;
        }
        out->port = (int)port;
    }
    if (slash && slash[1]) {
        char *end;
        long db = strtol(slash + 1, &end, 10);
        if (*end || db < 0 || db > 1000000) {
            snprintf(err, errlen, "%s: database must be a number", shown);
            goto fail;
        }
        out->db = (int)db;
    }
    return 0;
fail:
    redis_addr_free(out);
    return -EINVAL;
}

void redis_addr_free(redis_addr *a)
{
    free(a->host);
    free(a->path);
    free(a->password);
    memset(a, 0, sizeof *a);
}

const char *redis_url_pick(const char *cli, const char *config)
{
    if (cli && *cli)
        return cli;
    const char *env = getenv("BGTASK_REDIS");
    if (env && *env)
        return env;
    if (config && *config)
        return config;
    return STORE_DEFAULT_URL;
}

/* ---- connection ---- */

store *store_new(const redis_addr *addr, const char *password, const char *prefix)
{
    store *st = xcalloc(1, sizeof *st);
    st->addr.host = xstrdup(addr->host);
    st->addr.path = xstrdup(addr->path);
    st->addr.port = addr->port;
    st->addr.db = addr->db;
    st->password = xstrdup(password && *password ? password : addr->password);
    st->prefix = xstrdup(prefix && *prefix ? prefix : "bgtask");
    st->lim = (store_limits){.max_args_bytes = 1 << 20,
                             .max_result_bytes = 1 << 20,
                             .max_subtasks = 10000,
                             .events_maxlen = 100000,
                             .retention_s = 86400};
    st->backoff = BACKOFF_MIN_S;
    if (pipe2(st->intr, O_CLOEXEC | O_NONBLOCK) < 0)
        st->intr[0] = st->intr[1] = -1;
    return st;
}

static void drop_conn(store *st)
{
    if (st->c)
        redisFree(st->c);
    st->c = NULL;
}

void store_free(store *st)
{
    if (!st)
        return;
    drop_conn(st);
    redis_addr_free(&st->addr);
    free(st->password);
    free(st->prefix);
    free(st->sub_channel);
    if (st->intr[0] >= 0) {
        close(st->intr[0]);
        close(st->intr[1]);
    }
    free(st);
}

void store_set_limits(store *st, const store_limits *lim) { st->lim = *lim; }

const char *store_errstr(const store *st) { return st->err; }

const char *store_prefix(const store *st) { return st->prefix; }

static struct timeval tv_of(double s)
{
    return (struct timeval){(time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6)};
}

/* Mark the connection dead after an I/O error; the next call reconnects. */
static int conn_failed(store *st, const char *what)
{
    snprintf(st->err, sizeof st->err, "%s: %s", what,
             st->c && st->c->errstr[0] ? st->c->errstr : "connection lost");
    drop_conn(st);
    return -EIO;
}

/* Run one command on a fresh connection during setup; frees the reply. */
static int setup_cmd(store *st, const char *what, int argc, const char **argv)
{
    redisReply *r = redisCommandArgv(st->c, argc, argv, NULL);
    if (!r)
        return conn_failed(st, what);
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
            return conn_failed(st, "SCRIPT LOAD");
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
        drop_conn(st);
        return -EIO;
    }
    redisSetTimeout(st->c, tv_of(CMD_TIMEOUT_S));
    int rc = 0;
    if (st->password) {
        const char *argv[] = {"AUTH", st->password};
        if ((rc = setup_cmd(st, "AUTH", 2, argv)) < 0)
            goto fail;
    }
    if (st->addr.db) {
        char db[16];
        snprintf(db, sizeof db, "%d", st->addr.db);
        const char *argv[] = {"SELECT", db};
        if ((rc = setup_cmd(st, "SELECT", 2, argv)) < 0)
            goto fail;
    }
    if (st->sub_channel) {
        bool pattern = strchr(st->sub_channel, '*') != NULL;
        redisReply *r = redisCommand(st->c, pattern ? "PSUBSCRIBE %s" : "SUBSCRIBE %s",
                                     st->sub_channel);
        if (!r)
            return conn_failed(st, "SUBSCRIBE");
        freeReplyObject(r);
        st->subscribed = true;
        return 0;
    }
    if ((rc = load_scripts(st)) < 0)
        goto fail;
    return 0;
fail:
    drop_conn(st);
    return rc;
}

/* Make sure there is a connection: reconnect unless still backing off. */
static int ensure(store *st)
{
    if (st->c)
        return 0;
    double now = mono_s();
    if (now < st->retry_at)
        return -EIO; /* st->err still says why the last attempt failed */
    if (connect_now(st) < 0) {
        st->retry_at = now + st->backoff;
        st->backoff = fmin(st->backoff * 2, BACKOFF_MAX_S);
        return -EIO;
    }
    st->backoff = BACKOFF_MIN_S;
    st->retry_at = 0;
    return 0;
}

int store_connect(store *st)
{
    st->retry_at = 0;
    return ensure(st);
}

/* Run a command; *out gets the reply (caller frees) unless it is an error. */
__attribute__((format(printf, 3, 4))) static int cmd(store *st, redisReply **out,
                                                     const char *fmt, ...)
{
    *out = NULL;
    int rc = ensure(st);
    if (rc < 0)
        return rc;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(st->c, fmt, ap);
    va_end(ap);
    if (!r)
        return conn_failed(st, fmt);
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(st->err, sizeof st->err, "%s", r->str);
        freeReplyObject(r);
        return -EPROTO;
    }
    *out = r;
    return 0;
}

/*
 * A growing argv for script calls. Numbers are formatted into arena chunks so
 * a call with thousands of arguments costs a handful of allocations.
 */
typedef struct argbuf {
    const char **v;
    size_t *len;
    size_t n, cap;
    char *num;  /* arena of formatted numbers */
    size_t num_used, num_cap;
    char **nums; /* arena chunks to free */
    size_t nnums;
} argbuf;

static void args_push_len(argbuf *a, const char *s, size_t len)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = xrealloc(a->v, a->cap * sizeof *a->v);
        a->len = xrealloc(a->len, a->cap * sizeof *a->len);
    }
    a->v[a->n] = s;
    a->len[a->n++] = len;
}

static void args_push(argbuf *a, const char *s)
{
    if (!s)
        s = "";
    args_push_len(a, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void args_pushf(argbuf *a, const char *fmt, ...)
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
    args_push_len(a, p, (size_t)n);
}

static void args_free(argbuf *a)
{
    for (size_t i = 0; i < a->nnums; i++)
        free(a->nums[i]);
    free(a->nums);
    free(a->v);
    free(a->len);
    memset(a, 0, sizeof *a);
}

/* Start a script call's argv: EVALSHA sha 0 prefix maxlen retention. */
static void args_script(store *st, argbuf *a, int script)
{
    args_push(a, "EVALSHA");
    args_push(a, st->sha[script]); /* patched in eval_script once connected */
    args_push(a, "0");
    args_push(a, st->prefix);
    args_pushf(a, "%ld", st->lim.events_maxlen);
    args_pushf(a, "%.3f", st->lim.retention_s);
}

/* Call a script by SHA; on NOSCRIPT load the scripts again and retry once. */
static int eval_script(store *st, int script, argbuf *a, redisReply **out)
{
    *out = NULL;
    int rc = ensure(st);
    if (rc < 0)
        return rc;
    for (int tries = 0; tries < 2; tries++) {
        a->v[1] = st->sha[script];
        a->len[1] = strlen(st->sha[script]);
        redisReply *r = redisCommandArgv(st->c, (int)a->n, a->v, a->len);
        if (!r)
            return conn_failed(st, "EVALSHA");
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
    int rc = cmd(st, &r, "PING");
    freeReplyObject(r);
    return rc;
}

int store_maxmemory_policy(store *st, char *policy, size_t n)
{
    redisReply *r;
    int rc = cmd(st, &r, "CONFIG GET maxmemory-policy");
    if (rc < 0)
        return rc;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING)
        strlcpy_(policy, r->element[1]->str, n);
    else
        rc = -EPROTO;
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
static int wait_reply(store *st, double timeout_s, redisReply **out)
{
    *out = NULL;
    void *rep = NULL;
    if (redisGetReplyFromReader(st->c, &rep) != REDIS_OK)
        return conn_failed(st, "read");
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
                return conn_failed(st, "write");
        }
        struct pollfd pfd[2] = {{st->c->fd, POLLIN, 0}, {st->intr[0], POLLIN, 0}};
        double left = end - mono_s();
        if (left < 0)
            left = 0;
        int n = poll(pfd, st->intr[0] >= 0 ? 2 : 1, (int)(left * 1000) + (left > 0));
        if (n < 0 && errno != EINTR)
            return conn_failed(st, "poll");
        if (n > 0 && (pfd[1].revents & POLLIN)) {
            drain_intr(st);
            drop_conn(st);
            snprintf(st->err, sizeof st->err, "interrupted");
            return -EINTR;
        }
        if (n > 0 && pfd[0].revents) {
            if (redisBufferRead(st->c) != REDIS_OK)
                return conn_failed(st, "read");
            if (redisGetReplyFromReader(st->c, &rep) != REDIS_OK)
                return conn_failed(st, "read");
            if (rep) {
                *out = rep;
                return 0;
            }
        }
        if (mono_s() >= end)
            return -ETIMEDOUT;
    }
}

/* ---- submission ---- */

static int validate_submit(store *st, submit_req *q, char **args_norm, char **subs_norm)
{
    *args_norm = *subs_norm = NULL;
    if (!name_valid(q->handler)) {
        snprintf(q->err, sizeof q->err,
                 "invalid handler name '%.64s': expected [a-z0-9][a-z0-9._-]{0,62}",
                 q->handler ? q->handler : "");
        return -EINVAL;
    }
    if (q->id && !id_valid(q->id)) {
        snprintf(q->err, sizeof q->err, "invalid task id '%.40s': expected a UUID like %s",
                 q->id, "123e4567-e89b-42d3-a456-426614174000");
        return -EINVAL;
    }
    const char *args = q->args && *q->args ? q->args : "{}";
    size_t alen = strlen(args);
    if (alen > st->lim.max_args_bytes) {
        snprintf(q->err, sizeof q->err, "args are %zu bytes, over the limit of %zu", alen,
                 st->lim.max_args_bytes);
        return -E2BIG;
    }
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(args, &end, true);
    if (!j) {
        size_t at = end ? (size_t)(end - args) : 0;
        snprintf(q->err, sizeof q->err, "args are not valid JSON (at byte %zu)", at);
        return -EINVAL;
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        snprintf(q->err, sizeof q->err, "args must be a JSON object");
        return -EINVAL;
    }
    *args_norm = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (q->subtasks) {
        cJSON *s = cJSON_ParseWithOpts(q->subtasks, &end, true);
        if (!s || !cJSON_IsArray(s)) {
            cJSON_Delete(s);
            snprintf(q->err, sizeof q->err, "subtasks must be a JSON array");
            goto fail;
        }
        int n = cJSON_GetArraySize(s);
        if (n == 0 || n > st->lim.max_subtasks) {
            cJSON_Delete(s);
            snprintf(q->err, sizeof q->err, "a task has 1..%d subtasks (max_subtasks), got %d",
                     st->lim.max_subtasks, n);
            goto fail;
        }
        *subs_norm = cJSON_PrintUnformatted(s);
        cJSON_Delete(s);
    }
    if (q->parallelism < 0 || q->parallelism > 1024) {
        snprintf(q->err, sizeof q->err, "parallelism must be 1..1024, got %d", q->parallelism);
        goto fail;
    }
    if (q->on_failure && *q->on_failure && strcmp(q->on_failure, "continue") != 0 &&
        strcmp(q->on_failure, "fail_fast") != 0) {
        snprintf(q->err, sizeof q->err, "on_failure must be continue or fail_fast, got '%.32s'",
                 q->on_failure);
        goto fail;
    }
    if (q->max_attempts < 0 || q->max_attempts > 1000) {
        snprintf(q->err, sizeof q->err, "max_attempts must be 1..1000, got %d", q->max_attempts);
        goto fail;
    }
    if (!(q->delay_s >= 0 && q->delay_s <= 365.0 * 86400)) {
        snprintf(q->err, sizeof q->err, "delay must be 0..31536000 seconds");
        goto fail;
    }
    return 0;
fail:
    free(*args_norm);
    free(*subs_norm);
    *args_norm = *subs_norm = NULL;
    return -EINVAL;
}

int store_submit(store *st, submit_req *reqs, size_t n)
{
    argbuf a = {0};
    char **norm = xcalloc(n * 2 + 1, sizeof *norm);
    size_t *idx = xcalloc(n + 1, sizeof *idx);
    size_t m = 0;
    args_script(st, &a, SC_SUBMIT);
    args_push(&a, ""); /* count, filled below */
    size_t count_at = a.n - 1;
    for (size_t i = 0; i < n; i++) {
        submit_req *q = &reqs[i];
        q->err[0] = '\0';
        q->rc = validate_submit(st, q, &norm[2 * i], &norm[2 * i + 1]);
        if (q->rc < 0)
            continue;
        if (q->id)
            strlcpy_(q->id_out, q->id, sizeof q->id_out);
        else
            uuid4(q->id_out);
        for (char *c = q->id_out; *c; c++) /* one spelling per id */
            if (*c >= 'A' && *c <= 'F')
                *c = (char)(*c - 'A' + 'a');
        args_push(&a, q->id_out);
        args_push(&a, q->handler);
        args_push(&a, norm[2 * i]);
        args_pushf(&a, "%d", q->max_attempts);
        args_pushf(&a, "%lld", (long long)llround(q->delay_s * 1000));
        args_push(&a, norm[2 * i + 1] ? norm[2 * i + 1] : "");
        args_pushf(&a, "%d", q->parallelism);
        args_push(&a, q->on_failure ? q->on_failure : "");
        args_push(&a, q->id ? "0" : "1"); /* a fresh UUIDv4 cannot exist yet */
        idx[m++] = i;
    }
    int rc = 0;
    if (m > 0) {
        char cnt[24];
        snprintf(cnt, sizeof cnt, "%zu", m);
        a.v[count_at] = cnt;
        a.len[count_at] = strlen(cnt);
        redisReply *r;
        rc = eval_script(st, SC_SUBMIT, &a, &r);
        if (rc == 0) {
            if (r->type == REDIS_REPLY_ARRAY && r->elements == m) {
                for (size_t k = 0; k < m; k++) {
                    submit_req *q = &reqs[idx[k]];
                    if (r->element[k]->integer != 1) {
                        q->rc = -EEXIST;
                        snprintf(q->err, sizeof q->err, "task %s already exists", q->id_out);
                    }
                }
            } else {
                rc = -EPROTO;
            }
            freeReplyObject(r);
        }
        if (rc < 0)
            for (size_t k = 0; k < m; k++) {
                reqs[idx[k]].rc = rc;
                snprintf(reqs[idx[k]].err, sizeof reqs[idx[k]].err, "%.190s", st->err);
            }
    }
    for (size_t i = 0; i < 2 * n; i++)
        free(norm[i]);
    free(norm);
    free(idx);
    args_free(&a);
    return rc;
}

/* ---- reading ---- */

static const char *const numeric_fields[] = {
    "attempt",     "released",         "max_attempts",   "created_ms",       "started_ms",
    "updated_ms",  "finished_ms",      "progress_current", "progress_total", "subtasks",
    "sub_success", "sub_failure",      NULL,
};

static bool is_numeric_field(const char *f)
{
    for (int i = 0; numeric_fields[i]; i++)
        if (strcmp(f, numeric_fields[i]) == 0)
            return true;
    return false;
}

/* Build the JSON form of a record from an HGETALL reply. */
static cJSON *record_json(const redisReply *r)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *f = r->element[i]->str;
        const char *v = r->element[i + 1]->str ? r->element[i + 1]->str : "";
        if (!f)
            continue;
        if (is_numeric_field(f)) {
            char *end;
            double d = strtod(v, &end);
            if (*v && !*end)
                cJSON_AddNumberToObject(o, f, d);
            else
                cJSON_AddStringToObject(o, f, v); /* corrupted: show what is there */
        } else if (strcmp(f, "cancel_requested") == 0) {
            cJSON_AddBoolToObject(o, f, strcmp(v, "1") == 0);
        } else if (strcmp(f, "args") == 0 || strcmp(f, "result") == 0) {
            cJSON *j = *v ? cJSON_Parse(v) : NULL;
            if (j)
                cJSON_AddItemToObject(o, f, j);
            else if (*v)
                cJSON_AddStringToObject(o, f, v);
            else
                cJSON_AddNullToObject(o, f);
        } else if ((strcmp(f, "owner") == 0 || strcmp(f, "error") == 0) && !*v) {
            cJSON_AddNullToObject(o, f);
        } else {
            cJSON_AddStringToObject(o, f, v);
        }
    }
    return o;
}

int store_get_task(store *st, const char *id, cJSON **out)
{
    *out = NULL;
    if (!id_valid(id)) {
        snprintf(st->err, sizeof st->err, "invalid task id '%.40s'", id ? id : "");
        return -EINVAL;
    }
    redisReply *r;
    int rc = cmd(st, &r, "HGETALL %s:task:%s", st->prefix, id);
    if (rc < 0)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        freeReplyObject(r);
        snprintf(st->err, sizeof st->err, "task %s not found", id);
        return -ENOENT;
    }
    *out = record_json(r);
    freeReplyObject(r);
    return 0;
}

/* Fetch records of ids (pipelined) and append those matching the filters. */
static int fetch_matching(store *st, redisReply *ids, size_t from, const char *state,
                          const char *handler, int limit, cJSON *arr)
{
    size_t n = ids->elements;
    for (size_t i = from; i < n; i++)
        redisAppendCommand(st->c, "HGETALL %s:task:%s", st->prefix, ids->element[i]->str);
    int rc = 0;
    for (size_t i = from; i < n; i++) {
        void *rep;
        if (redisGetReply(st->c, &rep) != REDIS_OK)
            return conn_failed(st, "HGETALL");
        redisReply *r = rep;
        if (rc == 0 && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
            cJSON_GetArraySize(arr) < limit) {
            cJSON *o = record_json(r);
            cJSON *s = cJSON_GetObjectItem(o, "state");
            cJSON *h = cJSON_GetObjectItem(o, "handler");
            bool ok = (!state || (cJSON_IsString(s) && strcasecmp(s->valuestring, state) == 0)) &&
                      (!handler || (cJSON_IsString(h) && strcmp(h->valuestring, handler) == 0));
            if (ok)
                cJSON_AddItemToArray(arr, o);
            else
                cJSON_Delete(o);
        }
        freeReplyObject(r);
    }
    return rc;
}

static double num_field(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItem(o, f);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static int cmp_created_desc(const void *a, const void *b)
{
    double x = num_field(*(cJSON *const *)a, "created_ms");
    double y = num_field(*(cJSON *const *)b, "created_ms");
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Sort an array of records newest first (cJSON arrays are linked lists). */
static void sort_records(cJSON *arr)
{
    int n = cJSON_GetArraySize(arr);
    if (n < 2)
        return;
    cJSON **v = xmalloc((size_t)n * sizeof *v);
    for (int i = 0; i < n; i++)
        v[i] = cJSON_DetachItemFromArray(arr, 0);
    qsort(v, (size_t)n, sizeof *v, cmp_created_desc);
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, v[i]);
    free(v);
}

int store_list_tasks(store *st, const char *state, const char *handler, int limit, cJSON **out)
{
    *out = NULL;
    if (limit <= 0)
        limit = 20;
    if (handler && !name_valid(handler)) {
        snprintf(st->err, sizeof st->err, "invalid handler name '%.64s'", handler);
        return -EINVAL;
    }
    static const char *const states[] = {"ONGOING", "SUCCESS", "FAILURE", "CANCELLED", NULL};
    if (state) {
        bool known = false;
        for (int i = 0; states[i]; i++)
            known |= strcasecmp(state, states[i]) == 0;
        if (!known) {
            snprintf(st->err, sizeof st->err,
                     "unknown state '%.32s': expected ONGOING, SUCCESS, FAILURE or CANCELLED",
                     state);
            return -EINVAL;
        }
    }
    cJSON *arr = cJSON_CreateArray();
    int rc = 0;
    redisReply *r = NULL;
    bool want_ongoing = !state || strcasecmp(state, "ONGOING") == 0;
    bool want_done = !state || strcasecmp(state, "ONGOING") != 0;
    if (want_ongoing) {
        /* Queues hold the ONGOING tasks; one per handler. */
        char cursor[32] = "0";
        do {
            rc = handler ? cmd(st, &r, "SCAN %s MATCH %s:q:%s COUNT 1000", cursor, st->prefix,
                               handler)
                         : cmd(st, &r, "SCAN %s MATCH %s:q:* COUNT 1000", cursor, st->prefix);
            if (rc < 0)
                goto fail;
            strlcpy_(cursor, r->element[0]->str, sizeof cursor);
            redisReply *keys = r->element[1];
            for (size_t k = 0; k < keys->elements; k++) {
                redisReply *ids;
                rc = cmd(st, &ids, "ZRANGE %s 0 %d", keys->element[k]->str, limit * 4);
                if (rc < 0)
                    goto fail;
                rc = fetch_matching(st, ids, 0, "ONGOING", handler, limit * 4, arr);
                freeReplyObject(ids);
                if (rc < 0)
                    goto fail;
            }
            freeReplyObject(r);
            r = NULL;
        } while (strcmp(cursor, "0") != 0);
    }
    if (want_done) {
        /* Finished tasks, newest first, a page at a time until limit match. */
        cJSON *done = cJSON_CreateArray();
        for (long start = 0; cJSON_GetArraySize(done) < limit; start += 200) {
            rc = cmd(st, &r, "ZREVRANGE %s:done %ld %ld", st->prefix, start, start + 199);
            if (rc < 0) {
                cJSON_Delete(done);
                goto fail;
            }
            size_t got = r->elements;
            rc = fetch_matching(st, r, 0, state, handler, limit, done);
            freeReplyObject(r);
            r = NULL;
            if (rc < 0 || got < 200)
                break;
        }
        cJSON *it;
        while ((it = cJSON_DetachItemFromArray(done, 0)))
            cJSON_AddItemToArray(arr, it);
        cJSON_Delete(done);
        if (rc < 0)
            goto fail;
    }
    sort_records(arr);
    while (cJSON_GetArraySize(arr) > limit)
        cJSON_DeleteItemFromArray(arr, limit);
    *out = arr;
    return 0;
fail:
    freeReplyObject(r);
    cJSON_Delete(arr);
    return rc;
}

int store_list_hosts(store *st, cJSON **out)
{
    *out = NULL;
    redisReply *r;
    int rc = cmd(st, &r, "ZRANGE %s:hosts 0 -1 WITHSCORES", st->prefix);
    if (rc < 0)
        return rc;
    redisReply *t;
    rc = cmd(st, &t, "TIME");
    if (rc < 0) {
        freeReplyObject(r);
        return rc;
    }
    double now = atof(t->element[0]->str) * 1000 + atof(t->element[1]->str) / 1000;
    freeReplyObject(t);
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        double exp = atof(r->element[i + 1]->str);
        if (exp < now)
            continue; /* its lease ran out: not live */
        redisReply *h;
        rc = cmd(st, &h, "HGETALL %s:host:%s", st->prefix, r->element[i]->str);
        if (rc < 0)
            break;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", r->element[i]->str);
        for (size_t k = 0; k + 1 < h->elements; k += 2) {
            const char *f = h->element[k]->str, *v = h->element[k + 1]->str;
            if (strcmp(f, "id") == 0)
                continue;
            if (strcmp(f, "pid") == 0 || strcmp(f, "workers") == 0 ||
                strcmp(f, "running") == 0 || strcmp(f, "started_ms") == 0 ||
                strcmp(f, "updated_ms") == 0)
                cJSON_AddNumberToObject(o, f, atof(v));
            else if (strcmp(f, "handlers") == 0) {
                cJSON *list = cJSON_AddArrayToObject(o, "handlers");
                char *copy = xstrdup(v), *save = NULL;
                for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
                    cJSON_AddItemToArray(list, cJSON_CreateString(tok));
                free(copy);
            } else
                cJSON_AddStringToObject(o, f, v);
        }
        cJSON_AddNumberToObject(o, "expires_ms", exp);
        freeReplyObject(h);
        cJSON_AddItemToArray(arr, o);
    }
    freeReplyObject(r);
    if (rc < 0) {
        cJSON_Delete(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int store_stats(store *st, cJSON **out)
{
    *out = NULL;
    redisReply *t, *r = NULL;
    int rc = cmd(st, &t, "TIME");
    if (rc < 0)
        return rc;
    long long now = atoll(t->element[0]->str) * 1000 + atoll(t->element[1]->str) / 1000;
    freeReplyObject(t);
    cJSON *o = cJSON_CreateObject();
    cJSON *hs = cJSON_AddArrayToObject(o, "handlers");
    char cursor[32] = "0";
    size_t plen = strlen(st->prefix) + 3;
    do {
        rc = cmd(st, &r, "SCAN %s MATCH %s:q:* COUNT 1000", cursor, st->prefix);
        if (rc < 0)
            goto fail;
        strlcpy_(cursor, r->element[0]->str, sizeof cursor);
        redisReply *keys = r->element[1];
        for (size_t k = 0; k < keys->elements; k++) {
            const char *key = keys->element[k]->str;
            redisReply *a, *b;
            if ((rc = cmd(st, &a, "ZCARD %s", key)) < 0)
                goto fail;
            if ((rc = cmd(st, &b, "ZCOUNT %s -inf %lld", key, now)) < 0) {
                freeReplyObject(a);
                goto fail;
            }
            redisReply *c;
            if ((rc = cmd(st, &c, "ZRANGEBYSCORE %s -inf %lld WITHSCORES LIMIT 0 1", key, now)) <
                0) {
                freeReplyObject(a);
                freeReplyObject(b);
                goto fail;
            }
            double oldest = c->elements == 2 ? (double)now - atof(c->element[1]->str) : 0;
            freeReplyObject(c);
            cJSON *h = cJSON_CreateObject();
            cJSON_AddStringToObject(h, "handler", key + plen);
            cJSON_AddNumberToObject(h, "queued", (double)a->integer);
            cJSON_AddNumberToObject(h, "due", (double)b->integer);
            cJSON_AddNumberToObject(h, "oldest_due_age_ms", oldest > 0 ? oldest : 0);
            cJSON_AddItemToArray(hs, h);
            freeReplyObject(a);
            freeReplyObject(b);
        }
        freeReplyObject(r);
        r = NULL;
    } while (strcmp(cursor, "0") != 0);
    if ((rc = cmd(st, &r, "ZCARD %s:done", st->prefix)) < 0)
        goto fail;
    cJSON_AddNumberToObject(o, "finished", (double)r->integer);
    freeReplyObject(r);
    r = NULL;
    if ((rc = cmd(st, &r, "ZCOUNT %s:hosts %lld +inf", st->prefix, now)) < 0)
        goto fail;
    cJSON_AddNumberToObject(o, "hosts", (double)r->integer);
    freeReplyObject(r);
    *out = o;
    return 0;
fail:
    freeReplyObject(r);
    cJSON_Delete(o);
    return rc;
}

int store_cancel(store *st, const char *id, char *state_out, size_t n)
{
    if (state_out && n)
        state_out[0] = '\0';
    if (!id_valid(id)) {
        snprintf(st->err, sizeof st->err, "invalid task id '%.40s'", id ? id : "");
        return -EINVAL;
    }
    argbuf a = {0};
    args_script(st, &a, SC_CANCEL);
    args_push(&a, id);
    redisReply *r;
    int rc = eval_script(st, SC_CANCEL, &a, &r);
    args_free(&a);
    if (rc < 0)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        freeReplyObject(r);
        return -EPROTO;
    }
    rc = (int)r->element[0]->integer;
    if (rc < 0) {
        snprintf(st->err, sizeof st->err, "task %s not found", id);
        rc = -ENOENT;
    } else if (r->elements > 1 && state_out && r->element[1]->str) {
        strlcpy_(state_out, r->element[1]->str, n);
    }
    freeReplyObject(r);
    return rc;
}

/* ---- following ---- */

static int subscribe(store *st, char *channel)
{
    free(st->sub_channel);
    st->sub_channel = channel;
    drop_conn(st);
    st->retry_at = 0;
    return ensure(st);
}

int store_subscribe_task(store *st, const char *id)
{
    if (!id_valid(id)) {
        snprintf(st->err, sizeof st->err, "invalid task id '%.40s'", id ? id : "");
        return -EINVAL;
    }
    return subscribe(st, xasprintf("%s:ev:%s", st->prefix, id));
}

int store_subscribe_control(store *st, const char *host_id)
{
    return subscribe(st, xasprintf("%s:ctl:%s", st->prefix, host_id));
}

/* Next "message" payload on a subscriber connection (malloc'd). */
static int next_message(store *st, double timeout_s, char **payload)
{
    *payload = NULL;
    double end = mono_s() + timeout_s;
    for (;;) {
        int rc = ensure(st);
        if (rc < 0)
            return rc;
        double left = end - mono_s();
        if (left < 0)
            return -ETIMEDOUT;
        redisReply *r;
        rc = wait_reply(st, left, &r);
        if (rc < 0)
            return rc;
        /* "message" channel payload, or "pmessage" pattern channel payload. */
        size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
        bool msg = (n == 3 || n == 4) && r->element[0]->type == REDIS_REPLY_STRING &&
                   strcmp(r->element[0]->str, n == 3 ? "message" : "pmessage") == 0 &&
                   r->element[n - 1]->type == REDIS_REPLY_STRING;
        if (msg)
            *payload = strndup(r->element[n - 1]->str, (size_t)r->element[n - 1]->len);
        freeReplyObject(r);
        if (msg)
            return *payload ? 0 : -ENOMEM;
    }
}

int store_subscribe_all(store *st) { return subscribe(st, xasprintf("%s:ev:*", st->prefix)); }

int store_next_event(store *st, double timeout_s, char **name, cJSON **data)
{
    return store_next_event_ex(st, timeout_s, name, data, NULL);
}

int store_next_event_ex(store *st, double timeout_s, char **name, cJSON **data, char **stream_id)
{
    *name = NULL;
    *data = NULL;
    if (stream_id)
        *stream_id = NULL;
    char *payload;
    int rc = next_message(st, timeout_s, &payload);
    if (rc < 0)
        return rc;
    cJSON *j = cJSON_Parse(payload);
    free(payload);
    cJSON *ev = cJSON_GetObjectItem(j, "event");
    cJSON *d = cJSON_DetachItemFromObject(j, "data");
    if (!cJSON_IsString(ev) || !d) {
        cJSON_Delete(j);
        cJSON_Delete(d);
        snprintf(st->err, sizeof st->err, "unreadable event message");
        return -EPROTO;
    }
    *name = xstrdup(ev->valuestring);
    *data = d;
    cJSON *sid = cJSON_GetObjectItem(j, "id");
    if (stream_id && cJSON_IsString(sid))
        *stream_id = xstrdup(sid->valuestring);
    cJSON_Delete(j);
    return 0;
}

/* A stream id is "ms-seq" with both parts decimal. */
static bool stream_id_valid(const char *s)
{
    if (strcmp(s, "0") == 0)
        return true;
    const char *dash = strchr(s, '-');
    if (!dash || dash == s || !dash[1] || strlen(s) > 40)
        return false;
    for (const char *c = s; *c; c++)
        if (c != dash && (*c < '0' || *c > '9'))
            return false;
    return true;
}

int store_events_after(store *st, const char *id, const char *after, int limit, cJSON **out)
{
    *out = NULL;
    if (!id_valid(id) || !stream_id_valid(after)) {
        snprintf(st->err, sizeof st->err, "invalid task id or event id");
        return -EINVAL;
    }
    cJSON *arr = cJSON_CreateArray();
    char start[48];
    snprintf(start, sizeof start, "(%s", after);
    if (strcmp(after, "0") == 0)
        strcpy(start, "-");
    for (;;) {
        redisReply *r;
        int rc = cmd(st, &r, "XRANGE %s:events %s + COUNT 1000", st->prefix, start);
        if (rc < 0) {
            cJSON_Delete(arr);
            return rc;
        }
        for (size_t i = 0; i < r->elements && cJSON_GetArraySize(arr) < limit; i++) {
            redisReply *e = r->element[i];
            if (e->elements != 2)
                continue;
            redisReply *kv = e->element[1];
            const char *ev = NULL, *tid = NULL, *data = NULL;
            for (size_t k = 0; k + 1 < kv->elements; k += 2) {
                const char *f = kv->element[k]->str;
                if (strcmp(f, "event") == 0)
                    ev = kv->element[k + 1]->str;
                else if (strcmp(f, "task_id") == 0)
                    tid = kv->element[k + 1]->str;
                else if (strcmp(f, "data") == 0)
                    data = kv->element[k + 1]->str;
            }
            if (!ev || !tid || !data || strcmp(tid, id) != 0)
                continue;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "id", e->element[0]->str);
            cJSON_AddStringToObject(o, "event", ev);
            cJSON *d = cJSON_Parse(data);
            cJSON_AddItemToObject(o, "data", d ? d : cJSON_CreateObject());
            cJSON_AddItemToArray(arr, o);
        }
        size_t n = r->elements;
        if (n > 0)
            snprintf(start, sizeof start, "(%s", r->element[n - 1]->element[0]->str);
        freeReplyObject(r);
        if (n < 1000 || cJSON_GetArraySize(arr) >= limit)
            break;
    }
    *out = arr;
    return 0;
}

int store_count_finished(store *st, long long *n)
{
    redisReply *r;
    int rc = cmd(st, &r, "ZCARD %s:done", st->prefix);
    if (rc == 0) {
        *n = r->integer;
        freeReplyObject(r);
    }
    return rc;
}

int store_info(store *st, const char *section, char **out)
{
    *out = NULL;
    redisReply *r;
    int rc = cmd(st, &r, "INFO %s", section);
    if (rc < 0)
        return rc;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
        *out = strndup(r->str, (size_t)r->len);
    freeReplyObject(r);
    return *out ? 0 : -EPROTO;
}

int store_next_control(store *st, double timeout_s, char *id)
{
    char *payload;
    int rc = next_message(st, timeout_s, &payload);
    if (rc < 0)
        return rc;
    rc = -EPROTO;
    if (strncmp(payload, "cancel ", 7) == 0 && id_valid(payload + 7)) {
        strlcpy_(id, payload + 7, BGT_ID_LEN + 1);
        rc = 0;
    }
    free(payload);
    return rc;
}

/* ---- the host's side ---- */

void claimed_clear(claimed *c)
{
    free(c->args);
    free(c->corrupt);
    memset(c, 0, sizeof *c);
}

static const char *str_el(const redisReply *r, size_t i)
{
    const redisReply *e = r->element[i];
    return e->type == REDIS_REPLY_STRING ? e->str : "";
}

static long long int_el(const redisReply *r, size_t i)
{
    const redisReply *e = r->element[i];
    if (e->type == REDIS_REPLY_INTEGER)
        return e->integer;
    if (e->type == REDIS_REPLY_STRING)
        return atoll(e->str);
    return 0;
}

int store_claim(store *st, const char *host_id, const claim_handler *hs, size_t nh, int max,
                int64_t lease_ms, claimed *out, int *nout, double *next_due_s)
{
    *nout = 0;
    *next_due_s = -1;
    argbuf a = {0};
    args_script(st, &a, SC_CLAIM);
    args_push(&a, host_id);
    args_pushf(&a, "%lld", (long long)lease_ms);
    args_pushf(&a, "%d", max);
    args_pushf(&a, "%zu", nh);
    for (size_t i = 0; i < nh; i++) {
        args_push(&a, hs[i].name);
        args_pushf(&a, "%d", hs[i].max_attempts);
        args_push(&a, hs[i].not_retriable ? "1" : "0");
        args_push(&a, hs[i].parallel ? "parallel" : "single");
    }
    redisReply *r;
    int rc = eval_script(st, SC_CLAIM, &a, &r);
    args_free(&a);
    if (rc < 0)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || (r->elements - 2) % 13) {
        freeReplyObject(r);
        snprintf(st->err, sizeof st->err, "claim: unexpected reply");
        return -EPROTO;
    }
    long long due = int_el(r, 1);
    *next_due_s = due < 0 ? -1 : (double)due / 1000.0;
    int n = 0;
    for (size_t i = 2; i + 12 < r->elements && n < max; i += 13) {
        claimed *c = &out[n++];
        memset(c, 0, sizeof *c);
        strlcpy_(c->id, str_el(r, i), sizeof c->id);
        strlcpy_(c->handler, str_el(r, i + 1), sizeof c->handler);
        c->attempt = (uint32_t)int_el(r, i + 2);
        c->released = (uint32_t)int_el(r, i + 3);
        c->max_attempts = (int)int_el(r, i + 4);
        c->args = xstrdup(str_el(r, i + 5));
        c->progress_current = atof(str_el(r, i + 6));
        c->progress_total = atof(str_el(r, i + 7));
        c->created_ms = int_el(r, i + 8);
        const char *bad = str_el(r, i + 9);
        c->corrupt = *bad ? xstrdup(bad) : NULL;
        c->subtasks = (int)int_el(r, i + 10);
        c->parallelism = (int)int_el(r, i + 11);
        const char *onf = str_el(r, i + 12);
        c->fail_fast = strcmp(onf, "fail_fast") == 0 ? 1 : strcmp(onf, "continue") == 0 ? 0 : -1;
    }
    *nout = n;
    freeReplyObject(r);
    return 0;
}

int store_wait_wake(store *st, const claim_handler *hs, size_t nh, double timeout_s)
{
    int rc = ensure(st);
    if (rc < 0)
        return rc;
    argbuf a = {0};
    args_push(&a, "BLPOP");
    char **keys = xcalloc(nh + 1, sizeof *keys);
    for (size_t i = 0; i < nh; i++) {
        keys[i] = xasprintf("%s:wake:%s", st->prefix, hs[i].name);
        args_push(&a, keys[i]);
    }
    if (timeout_s < 0.001)
        timeout_s = 0.001;
    args_pushf(&a, "%.3f", timeout_s);
    redisAppendCommandArgv(st->c, (int)a.n, a.v, a.len);
    for (size_t i = 0; i < nh; i++)
        free(keys[i]);
    free(keys);
    args_free(&a);
    redisReply *r;
    /* Redis answers nil at the timeout; allow it a second more before giving up. */
    rc = wait_reply(st, timeout_s + 1.0, &r);
    if (rc == -ETIMEDOUT)
        return conn_failed(st, "BLPOP"); /* the reply may still come: start afresh */
    if (rc < 0)
        return rc;
    int woke = r->type == REDIS_REPLY_ARRAY;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(st->err, sizeof st->err, "BLPOP: %s", r->str);
        freeReplyObject(r);
        return -EPROTO;
    }
    if (woke) {
        /* Take every other token of that list: one wake-up is enough. */
        redisReply *d;
        if (cmd(st, &d, "DEL %s", r->element[0]->str) == 0)
            freeReplyObject(d);
    }
    freeReplyObject(r);
    return woke;
}

int store_heartbeat(store *st, const host_info *hi, hb_item *items, size_t n, int64_t lease_ms)
{
    argbuf a = {0};
    args_script(st, &a, SC_HEARTBEAT);
    args_push(&a, hi->id);
    args_pushf(&a, "%lld", (long long)lease_ms);
    args_pushf(&a, "%lld", (long long)(hi->ttl_ms > 0 ? hi->ttl_ms : lease_ms));
    args_push(&a, hi->machine);
    args_pushf(&a, "%d", hi->pid);
    args_push(&a, hi->version);
    args_push(&a, hi->handlers);
    args_pushf(&a, "%d", hi->workers);
    args_pushf(&a, "%d", hi->running);
    args_pushf(&a, "%lld", (long long)hi->started_ms);
    args_pushf(&a, "%zu", n);
    for (size_t i = 0; i < n; i++) {
        args_push(&a, items[i].id);
        args_push(&a, items[i].handler);
        args_pushf(&a, "%u", items[i].attempt);
    }
    redisReply *r;
    int rc = eval_script(st, SC_HEARTBEAT, &a, &r);
    args_free(&a);
    if (rc < 0)
        return rc;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == n) {
        for (size_t i = 0; i < n; i++)
            items[i].status = (int)r->element[i]->integer;
    } else if (n > 0) {
        rc = -EPROTO;
    }
    freeReplyObject(r);
    return rc;
}

int store_host_remove(store *st, const char *host_id)
{
    redisReply *r;
    int rc = cmd(st, &r, "ZREM %s:hosts %s", st->prefix, host_id);
    freeReplyObject(r);
    if (rc < 0)
        return rc;
    rc = cmd(st, &r, "DEL %s:host:%s", st->prefix, host_id);
    freeReplyObject(r);
    return rc;
}

int store_apply(store *st, const char *host_id, fin_item *items, size_t n)
{
    argbuf a = {0};
    args_script(st, &a, SC_APPLY);
    args_push(&a, host_id);
    args_pushf(&a, "%zu", n);
    for (size_t i = 0; i < n; i++) {
        fin_item *f = &items[i];
        args_pushf(&a, "%d", (int)f->op);
        args_push(&a, f->id);
        args_push(&a, f->handler);
        args_pushf(&a, "%u", f->attempt);
        args_push(&a, f->has_progress ? "1" : "0");
        args_pushf(&a, "%.17g", f->current);
        args_pushf(&a, "%.17g", f->total);
        args_push(&a, f->progress_message);
        args_push(&a, f->progress_event);
        args_push(&a, f->message);
        args_push(&a, f->result);
        args_push(&a, f->event_name);
        args_push(&a, f->event_payload);
        args_pushf(&a, "%lld", (long long)f->backoff_ms);
        args_pushf(&a, "%lld", (long long)f->retention_s);
        if (f->op == FIN_SUBTASK) {
            args_pushf(&a, "%d", f->sub_index);
            args_push(&a, f->sub_state);
            args_pushf(&a, "%u", f->sub_attempt);
        } else {
            args_push(&a, "");
            args_push(&a, "");
            args_push(&a, "");
        }
    }
    redisReply *r;
    int rc = eval_script(st, SC_APPLY, &a, &r);
    args_free(&a);
    if (rc < 0)
        return rc;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == n) {
        for (size_t i = 0; i < n; i++) {
            long long v = r->element[i]->integer;
            items[i].rc = v == 0 ? -ESTALE : 0;
            items[i].gave_up = v == 2;
        }
    } else {
        rc = -EPROTO;
    }
    freeReplyObject(r);
    return rc;
}

/* ---- parallel tasks ---- */

void sub_rec_free(sub_rec *subs, int n)
{
    if (!subs)
        return;
    for (int i = 0; i < n; i++) {
        free(subs[i].args);
        free(subs[i].message);
        free(subs[i].result);
    }
    free(subs);
}

int store_load_subtasks(store *st, const char *id, int n, sub_rec **out)
{
    *out = NULL;
    redisReply *r;
    int rc = cmd(st, &r, "HGETALL %s:sub:%s", st->prefix, id);
    if (rc < 0)
        return rc;
    sub_rec *subs = xcalloc((size_t)n + 1, sizeof *subs);
    for (int i = 0; i < n; i++)
        strcpy(subs[i].state, "PENDING");
    for (size_t k = 0; k + 1 < r->elements; k += 2) {
        const char *f = r->element[k]->str, *v = r->element[k + 1]->str;
        char *colon;
        long i = strtol(f, &colon, 10);
        if (*colon != ':' || i < 0 || i >= n)
            continue; /* not a subtask field, or past the count: ignore */
        const char *name = colon + 1;
        if (strcmp(name, "args") == 0)
            subs[i].args = xstrdup(v);
        else if (strcmp(name, "state") == 0)
            strlcpy_(subs[i].state, v, sizeof subs[i].state);
        else if (strcmp(name, "attempt") == 0)
            subs[i].attempt = (uint32_t)atol(v);
        else if (strcmp(name, "message") == 0)
            subs[i].message = xstrdup(v);
        else if (strcmp(name, "result") == 0)
            subs[i].result = xstrdup(v);
    }
    freeReplyObject(r);
    *out = subs;
    return 0;
}

int store_split(store *st, const char *host_id, const char *id, uint32_t attempt,
                char *const *subs, int n)
{
    argbuf a = {0};
    args_script(st, &a, SC_SPLIT);
    args_push(&a, host_id);
    args_push(&a, id);
    args_pushf(&a, "%u", attempt);
    for (int i = 0; i < n; i++)
        args_push(&a, subs[i]);
    redisReply *r;
    int rc = eval_script(st, SC_SPLIT, &a, &r);
    args_free(&a);
    if (rc < 0)
        return rc;
    rc = r->type == REDIS_REPLY_INTEGER && r->integer == 1 ? 0 : -ESTALE;
    freeReplyObject(r);
    return rc;
}

int store_retry(store *st, const char *id, int *reset)
{
    *reset = 0;
    if (!id_valid(id)) {
        snprintf(st->err, sizeof st->err, "invalid task id '%.40s'", id ? id : "");
        return -EINVAL;
    }
    argbuf a = {0};
    args_script(st, &a, SC_RETRY);
    args_push(&a, id);
    redisReply *r;
    int rc = eval_script(st, SC_RETRY, &a, &r);
    args_free(&a);
    if (rc < 0)
        return rc;
    long long v = r->type == REDIS_REPLY_ARRAY && r->elements > 0 ? r->element[0]->integer : -5;
    freeReplyObject(r);
    switch (v) {
    case -1:
        snprintf(st->err, sizeof st->err, "task %s not found", id);
        return -ENOENT;
    case -2:
        snprintf(st->err, sizeof st->err, "task %s is not a parallel task", id);
        return -EINVAL;
    case -3:
        snprintf(st->err, sizeof st->err, "task %s is still running", id);
        return -EBUSY;
    case -4:
        snprintf(st->err, sizeof st->err, "task %s has no failed subtasks", id);
        return -EALREADY;
    default:
        if (v < 0)
            return -EPROTO;
        *reset = (int)v;
        return 0;
    }
}

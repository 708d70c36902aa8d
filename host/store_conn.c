/*
 * store_conn.c - the store's link to Redis (store_conn.h): connections to
 * one server with reconnect backoff, AUTH and SELECT; calls routed by their
 * key, pipelined per server and sent again where a server redirects them;
 * scripts loaded where a server answers NOSCRIPT; blocking calls and
 * subscriptions whose waits store_interrupt can cut short. The Sentinel and
 * Cluster specifics are in store_sentinel.c and store_cluster.c.
 */
#include "store_conn.h"

#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

/* ---- nodes ---- */

__attribute__((format(printf, 2, 3))) void rc__err(rconn *rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rc->err, rc->errlen, fmt, ap);
    va_end(ap);
}

static struct timeval tv_of(double s)
{
    return (struct timeval){(time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6)};
}

const char *rc__node_name(const rnode *n, char *buf, size_t len)
{
    if (n->path)
        snprintf(buf, len, "%s", n->path);
    else
        snprintf(buf, len, strchr(n->host ? n->host : "", ':') ? "[%s]:%d" : "%s:%d",
                 n->host ? n->host : "?", n->port);
    return buf;
}

void rc__node_close(rnode *n)
{
    if (n->c)
        redisFree(n->c);
    n->c = NULL;
}

void rc__node_free(rnode *n)
{
    rc__node_close(n);
    free(n->host);
    free(n->path);
    memset(n, 0, sizeof *n);
}

int rc__node_failed(rconn *rc, rnode *n, const char *what)
{
    char name[300];
    rc__err(rc, "%s: %s: %s", rc__node_name(n, name, sizeof name), what,
            n->c && n->c->errstr[0] ? n->c->errstr : "connection lost");
    rc__node_close(n);
    return -EIO;
}

int rc__node_cmd(rconn *rc, rnode *n, redisReply **out, int argc, const char **argv)
{
    *out = redisCommandArgv(n->c, argc, argv, NULL);
    return *out ? 0 : rc__node_failed(rc, n, argv[0]);
}

/* Run one setup command (AUTH, SELECT) on a fresh connection; an error reply fails it. */
static int setup_cmd(rconn *rc, rnode *n, int argc, const char **argv)
{
    redisReply *r;
    int err = rc__node_cmd(rc, n, &r, argc, argv);
    if (err < 0)
        return err;
    if (r->type == REDIS_REPLY_ERROR) {
        char name[300];
        rc__err(rc, "%s: %s: %s", rc__node_name(n, name, sizeof name), argv[0], r->str);
        err = -EIO;
    }
    freeReplyObject(r);
    return err;
}

int rc__node_connect(rconn *rc, rnode *n, double timeout_s, bool select_db)
{
    rc__node_close(n);
    struct timeval tv = tv_of(timeout_s);
    n->c = n->path ? redisConnectUnixWithTimeout(n->path, tv)
                   : redisConnectWithTimeout(n->host, n->port, tv);
    char name[300];
    if (!n->c || n->c->err) {
        rc__err(rc, "cannot connect to %s: %s", rc__node_name(n, name, sizeof name),
                n->c ? n->c->errstr : "out of memory");
        rc__node_close(n);
        return -EIO;
    }
    redisSetTimeout(n->c, tv_of(RC_CMD_TIMEOUT_S));
    int err = 0;
    const redis_addr *a = &rc->addr;
    if (a->password) {
        const char *argv[] = {"AUTH", a->username ? a->username : a->password, a->password};
        if ((err = setup_cmd(rc, n, a->username ? 3 : 2, argv)) < 0)
            goto fail;
    }
    if (select_db && a->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", a->db);
        const char *argv[] = {"SELECT", db};
        if ((err = setup_cmd(rc, n, 2, argv)) < 0)
            goto fail;
    } else if (!a->password) {
        /* Nothing sent yet: ask once, so a server that wants a password says so now. */
        const char *argv[] = {"PING"};
        if ((err = setup_cmd(rc, n, 1, argv)) < 0)
            goto fail;
    }
    if (rc->check && (err = rc->check(rc, n, rc->check_arg)) < 0)
        goto fail;
    return 0;
fail:
    rc__node_close(n);
    return err;
}

int rc__node_ensure(rconn *rc, rnode *n, bool select_db)
{
    if (n->c)
        return 0;
    double now = mono_s();
    if (now < n->retry_at)
        return n->refused ? n->refused : -EIO; /* the message still says why */
    int err = rc__node_connect(rc, n, RC_CONNECT_TIMEOUT_S, select_db);
    if (err < 0) {
        if (n->backoff < RC_BACKOFF_MIN_S)
            n->backoff = RC_BACKOFF_MIN_S;
        n->retry_at = now + n->backoff;
        n->backoff = fmin(n->backoff * 2, RC_BACKOFF_MAX_S);
        n->refused = err == -EIO ? 0 : err;
        return err;
    }
    n->refused = 0;
    n->backoff = RC_BACKOFF_MIN_S;
    n->retry_at = 0;
    return 0;
}

static void drain(int fd)
{
    char buf[64];
    while (fd >= 0 && read(fd, buf, sizeof buf) > 0) {
    }
}

int rc__node_wait(rconn *rc, rnode *n, double timeout_s, int extra_fd, redisReply **out)
{
    *out = NULL;
    void *rep = NULL;
    if (redisGetReplyFromReader(n->c, &rep) != REDIS_OK)
        return rc__node_failed(rc, n, "read");
    if (rep) {
        *out = rep;
        return 0;
    }
    double end = mono_s() + timeout_s;
    for (;;) {
        /* Flush anything still unsent (the command itself). */
        int done = 0;
        while (!done) {
            if (redisBufferWrite(n->c, &done) != REDIS_OK)
                return rc__node_failed(rc, n, "write");
        }
        struct pollfd pfd[3] = {{n->c->fd, POLLIN, 0}, {rc->intr_fd, POLLIN, 0},
                                {extra_fd, POLLIN, 0}};
        double left = end - mono_s();
        if (left < 0)
            left = 0;
        int k = poll(pfd, 3, (int)(left * 1000) + (left > 0));
        if (k < 0 && errno != EINTR)
            return rc__node_failed(rc, n, "poll");
        if (k > 0 && (pfd[1].revents & POLLIN)) {
            drain(rc->intr_fd);
            rc__node_close(n); /* a reply may still be on its way */
            rc__err(rc, "interrupted");
            return -EINTR;
        }
        if (k > 0 && pfd[2].revents)
            return -EAGAIN;
        if (k > 0 && pfd[0].revents) {
            if (redisBufferRead(n->c) != REDIS_OK)
                return rc__node_failed(rc, n, "read");
            if (redisGetReplyFromReader(n->c, &rep) != REDIS_OK)
                return rc__node_failed(rc, n, "read");
            if (rep) {
                *out = rep;
                return 0;
            }
        }
        if (mono_s() >= end)
            return -ETIMEDOUT;
    }
}

/* ---- the link ---- */

static void node_from_addr(rnode *n, const redis_addr *a)
{
    n->host = a->host ? xstrdup(a->host) : NULL;
    n->path = a->path ? xstrdup(a->path) : NULL;
    n->port = a->port;
}

void rconn_on_connect(rconn *rc, rconn_check_fn *fn, void *arg)
{
    rc->check = fn;
    rc->check_arg = arg;
}

rconn *rconn_new(const redis_addr *addr, int intr_fd, char *err, size_t errlen)
{
    rconn *rc = xcalloc(1, sizeof *rc);
    redis_addr_copy(&rc->addr, addr);
    rc->err = err;
    rc->errlen = errlen;
    rc->intr_fd = intr_fd;
    node_from_addr(&rc->node, addr);
    node_from_addr(&rc->subnode, addr);
    return rc;
}

void rconn_drop(rconn *rc)
{
    rc__node_close(&rc->node);
    rc__node_close(&rc->subnode);
    rc->node.retry_at = rc->subnode.retry_at = 0;
}

void rconn_free(rconn *rc)
{
    if (!rc)
        return;
    rc__node_free(&rc->node);
    rc__node_free(&rc->subnode);
    for (size_t i = 0; i < rc->nchannels; i++)
        free(rc->channels[i]);
    free(rc->channels);
    redis_addr_free(&rc->addr);
    free(rc);
}

/* Send the SUBSCRIBE / PSUBSCRIBE commands of the link's channels on n (not waiting). */
static int send_subscriptions(rconn *rc, rnode *n)
{
    for (size_t i = 0; i < rc->nchannels; i++) {
        const char *argv[] = {strchr(rc->channels[i], '*') ? "PSUBSCRIBE" : "SUBSCRIBE",
                              rc->channels[i]};
        if (redisAppendCommandArgv(n->c, 2, argv, NULL) != REDIS_OK)
            return rc__node_failed(rc, n, argv[0]);
    }
    int done = 0;
    while (!done)
        if (redisBufferWrite(n->c, &done) != REDIS_OK)
            return rc__node_failed(rc, n, "SUBSCRIBE");
    return 0;
}

/* The connection that listens, connected and subscribed; -EIO while it cannot be. */
static int ensure_subscriber(rconn *rc)
{
    rnode *n = &rc->subnode;
    if (n->c)
        return 0;
    int err = rc__node_ensure(rc, n, true);
    if (err == 0 && (err = send_subscriptions(rc, n)) < 0)
        rc__node_close(n);
    return err;
}

int rconn_connect(rconn *rc)
{
    rc->node.retry_at = 0;
    if (rc->channels) {
        rc->subnode.retry_at = 0;
        return ensure_subscriber(rc);
    }
    return rc__node_ensure(rc, &rc->node, true);
}

int rconn_subscribe(rconn *rc, const char *const *channels, size_t n)
{
    for (size_t i = 0; i < rc->nchannels; i++)
        free(rc->channels[i]);
    free(rc->channels);
    rc->channels = xcalloc(n + 1, sizeof *rc->channels);
    for (size_t i = 0; i < n; i++)
        rc->channels[i] = xstrdup(channels[i]);
    rc->nchannels = n;
    rconn_drop(rc);
    return ensure_subscriber(rc);
}

int rconn_next_push(rconn *rc, double timeout_s, redisReply **reply)
{
    *reply = NULL;
    int err = ensure_subscriber(rc);
    if (err < 0)
        return err;
    err = rc__node_wait(rc, &rc->subnode, timeout_s, -1, reply);
    if (err == -ETIMEDOUT)
        rc__err(rc, "no message within %.3f s", timeout_s);
    return err;
}

/* The server for a call routed by key; connected, or -EIO. */
static int route(rconn *rc, const char *key, size_t keylen, rnode **out)
{
    (void)key, (void)keylen;
    *out = &rc->node;
    return rc__node_ensure(rc, &rc->node, true);
}

static void free_replies(redisReply **r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (r[i])
            freeReplyObject(r[i]);
        r[i] = NULL;
    }
}

/* How the link treats an error reply that is the first of a unit. */
typedef enum unit_verdict { U_DONE, U_AGAIN, U_EIO } unit_verdict;

/*
 * Whether the first reply of a unit (sent to n) asks for the unit to be sent
 * again: NOSCRIPT (the script is loaded on n first). U_EIO with the message
 * set when the server cannot serve it now.
 */
static unit_verdict judge(rconn *rc, rnode *n, const rcall *first, const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ERROR)
        return U_DONE;
    if (strncmp(r->str, "NOSCRIPT", 8) == 0 && first->script) {
        const char *argv[] = {"SCRIPT", "LOAD", first->script};
        redisReply *l;
        if (rc__node_cmd(rc, n, &l, 3, argv) < 0)
            return U_EIO;
        bool ok = l->type == REDIS_REPLY_STRING;
        if (!ok)
            rc__err(rc, "SCRIPT LOAD: %s", l->type == REDIS_REPLY_ERROR ? l->str : "bad reply");
        freeReplyObject(l);
        return ok ? U_AGAIN : U_EIO;
    }
    if (strncmp(r->str, "LOADING", 7) == 0 || strncmp(r->str, "MASTERDOWN", 10) == 0) {
        char name[300];
        rc__err(rc, "%s: %s", rc__node_name(n, name, sizeof name), r->str);
        return U_EIO;
    }
    return U_DONE;
}

/* Append calls[0..k) to n. */
static int append_unit(rconn *rc, rnode *n, const rcall *calls, size_t k)
{
    for (size_t i = 0; i < k; i++)
        if (redisAppendFormattedCommand(n->c, calls[i].cmd, calls[i].len) != REDIS_OK)
            return rc__node_failed(rc, n, "write");
    return 0;
}

/* Read k replies from n into out. */
static int read_unit(rconn *rc, rnode *n, redisReply **out, size_t k)
{
    for (size_t i = 0; i < k; i++) {
        void *rep;
        if (redisGetReply(n->c, &rep) != REDIS_OK || !rep)
            return rc__node_failed(rc, n, "read");
        out[i] = rep;
    }
    return 0;
}

/* Send one unit (calls that go together) and read its replies, following what judge says. */
static int exec_unit(rconn *rc, const rcall *calls, size_t k, redisReply **out)
{
    rnode *n;
    int err = route(rc, calls[0].key, calls[0].keylen, &n);
    for (int tries = 0; err == 0; tries++) {
        if ((err = append_unit(rc, n, calls, k)) < 0 || (err = read_unit(rc, n, out, k)) < 0)
            break;
        unit_verdict v = judge(rc, n, &calls[0], out[0]);
        if (v == U_DONE)
            return 0;
        free_replies(out, k);
        if (v == U_EIO || tries == RC_MAX_REDIRECTS) {
            if (v == U_AGAIN)
                rc__err(rc, "gave up after %d redirections", RC_MAX_REDIRECTS);
            err = -EIO;
        }
    }
    free_replies(out, k);
    return err;
}

int rconn_run(rconn *rc, const rcall *calls, size_t n, redisReply **replies)
{
    memset(replies, 0, n * sizeof *replies);
    if (rc->channels) {
        rc__err(rc, "a subscribed connection takes no commands");
        return -EINVAL;
    }
    rnode *node;
    int err = route(rc, calls[0].key, calls[0].keylen, &node);
    if (err < 0)
        return err;
    /* One server: everything in one pipeline, then the units that must go again. */
    if ((err = append_unit(rc, node, calls, n)) < 0 || (err = read_unit(rc, node, replies, n)) < 0)
        goto fail;
    for (size_t i = 0; i < n;) {
        size_t k = 1;
        while (i + k < n && calls[i + k].with_prev)
            k++;
        unit_verdict v = judge(rc, node, &calls[i], replies[i]);
        if (v == U_EIO) {
            err = -EIO;
            goto fail;
        }
        if (v == U_AGAIN) {
            free_replies(replies + i, k);
            if ((err = exec_unit(rc, calls + i, k, replies + i)) < 0)
                goto fail;
        }
        i += k;
    }
    return 0;
fail:
    free_replies(replies, n);
    return err;
}

int rconn_block(rconn *rc, const rcall *call, double timeout_s, redisReply **reply)
{
    *reply = NULL;
    rnode *n;
    int err = route(rc, call->key, call->keylen, &n);
    if (err < 0)
        return err;
    if ((err = append_unit(rc, n, call, 1)) < 0)
        return err;
    err = rc__node_wait(rc, n, timeout_s, -1, reply);
    if (err == -ETIMEDOUT) {
        rc__err(rc, "no reply within %.3f s", timeout_s);
        rc__node_close(n); /* the reply may still come: start afresh */
    }
    return err;
}

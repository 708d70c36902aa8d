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
    rc__cluster_suspect(rc);
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

/* AUTH on a sentinel: one configured without a password says so, and that is fine. */
static int sentinel_auth(rconn *rc, rnode *n, int argc, const char **argv)
{
    redisReply *r;
    int err = rc__node_cmd(rc, n, &r, argc, argv);
    if (err < 0)
        return err;
    if (r->type == REDIS_REPLY_ERROR && !strstr(r->str, "without any password configured")) {
        char name[300];
        rc__err(rc, "sentinel %s: AUTH: %s", rc__node_name(n, name, sizeof name), r->str);
        err = -EIO;
    }
    freeReplyObject(r);
    return err;
}

int rc__node_connect(rconn *rc, rnode *n, double timeout_s, rc_kind kind)
{
    rc__node_close(n);
    struct timeval tv = tv_of(timeout_s);
    n->c = n->path ? redisConnectUnixWithTimeout(n->path, tv)
                   : redisConnectWithTimeout(n->host, n->port, tv);
    char name[300];
    if (!n->c || n->c->err) {
        rc__err(rc, "cannot connect to %s%s: %s", kind == RC_SENTINEL ? "sentinel " : "",
                rc__node_name(n, name, sizeof name), n->c ? n->c->errstr : "out of memory");
        rc__node_close(n);
        return -EIO;
    }
    redisSetTimeout(n->c, tv_of(kind == RC_SENTINEL ? timeout_s : RC_CMD_TIMEOUT_S));
    int err = 0;
    const redis_addr *a = &rc->addr;
    if (a->password) {
        const char *argv[] = {"AUTH", a->username ? a->username : a->password, a->password};
        int argc = a->username ? 3 : 2;
        err = kind == RC_SENTINEL ? sentinel_auth(rc, n, argc, argv) : setup_cmd(rc, n, argc, argv);
        if (err < 0)
            goto fail;
    }
    if (kind == RC_SENTINEL)
        return 0;
    if (kind == RC_DATA && a->db) {
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

int rc__node_ensure(rconn *rc, rnode *n)
{
    if (n->c)
        return 0;
    double now = mono_s();
    if (now < n->retry_at && !(rc->sen && rc__sentinel_poll(rc))) {
        rc__cluster_suspect(rc); /* a cluster node that is down: read the map again */
        return n->refused ? n->refused : -EIO; /* the message still says why */
    }
    int err = rc->sen  ? rc__sentinel_connect(rc, n)
              : rc->cl ? rc__node_connect(rc, n, RC_CONNECT_TIMEOUT_S, RC_NODE)
                       : rc__node_connect(rc, n, RC_CONNECT_TIMEOUT_S, RC_DATA);
    if (err < 0) {
        rc__cluster_suspect(rc);
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
    if (addr->kind == REDIS_SENTINEL)
        rc->sen = rc__sentinel_new();
    else if (addr->kind == REDIS_CLUSTER)
        rc->cl = rc__cluster_new();
    return rc;
}

void rconn_drop(rconn *rc)
{
    rc__node_close(&rc->node);
    rc__node_close(&rc->subnode);
    rc->node.retry_at = rc->subnode.retry_at = 0;
    rnode *nodes;
    size_t n = rc__cluster_nodes(rc, &nodes);
    for (size_t i = 0; i < n; i++) {
        rc__node_close(&nodes[i]);
        nodes[i].retry_at = 0;
    }
}

void rconn_free(rconn *rc)
{
    if (!rc)
        return;
    rc__node_free(&rc->node);
    rc__node_free(&rc->subnode);
    rc__sentinel_free(rc->sen);
    rc__cluster_free(rc->cl);
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

/*
 * The connection that listens, connected and subscribed; -EIO while it
 * cannot be. In a cluster any master will do: PUBLISH reaches every node.
 */
static int ensure_subscriber(rconn *rc)
{
    rnode *n = &rc->subnode;
    if (n->c)
        return 0;
    if (rc->cl && mono_s() >= n->retry_at) {
        rnode *any = rc__cluster_route(rc, NULL, 0);
        if (!any)
            return -EIO;
        free(n->host);
        n->host = xstrdup(any->host);
        n->port = any->port;
    }
    int err = rc__node_ensure(rc, n);
    if (err == 0 && (err = send_subscriptions(rc, n)) < 0)
        rc__node_close(n);
    if (err < 0)
        rc__cluster_suspect(rc);
    return err;
}

int rconn_connect(rconn *rc)
{
    rc->node.retry_at = rc->subnode.retry_at = 0;
    if (rc->channels)
        return ensure_subscriber(rc);
    if (rc->cl)
        return rc__cluster_refresh(rc);
    return rc__node_ensure(rc, &rc->node);
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
    double end = mono_s() + timeout_s;
    for (;;) {
        rc__sentinel_poll(rc);
        int err = ensure_subscriber(rc);
        if (err < 0)
            return err;
        double left = end - mono_s();
        err = rc__node_wait(rc, &rc->subnode, left > 0 ? left : 0, rc__sentinel_fd(rc), reply);
        if (err == -EAGAIN)
            continue; /* the sentinels said something: a new master is listened to next */
        if (err == -ETIMEDOUT)
            rc__err(rc, "no message within %.3f s", timeout_s);
        if (err == -EIO)
            rc__cluster_suspect(rc);
        return err;
    }
}

/* The server for a call routed by key, connected; or -EIO (or what the check refused). */
static int route(rconn *rc, const char *key, size_t keylen, rnode **out)
{
    rnode *n = &rc->node;
    if (rc->cl && !(n = rc__cluster_route(rc, key, keylen)))
        return -EIO;
    *out = n;
    return rc__node_ensure(rc, n);
}

static void free_replies(redisReply **r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (r[i])
            freeReplyObject(r[i]);
        r[i] = NULL;
    }
}

/* What to do with a unit whose first reply came from n: keep it, send it again (to
 * `to`, with ASKING if `ask`; to NULL: routed again), or give up with -EIO. */
typedef enum verdict { U_DONE, U_AGAIN, U_EIO } verdict;

static bool starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/*
 * Judge the first reply r of a unit sent to n (with ASKING if *ask).
 * NOSCRIPT: the script is loaded on n, the unit goes there again. MOVED, ASK:
 * to the node named. TRYAGAIN (keys of a slot being migrated): again after a
 * moment. READONLY: the master became a replica; the sentinels (or the slot
 * map) say where to go. LOADING, MASTERDOWN, CLUSTERDOWN: -EIO now, the
 * caller's retry comes back later.
 */
static verdict judge(rconn *rc, rnode *n, const rcall *first, const redisReply *r, rnode **to,
                     bool *ask)
{
    *to = NULL;
    if (!r || r->type != REDIS_REPLY_ERROR)
        return U_DONE;
    char name[300];
    if (starts(r->str, "NOSCRIPT") && first->script) {
        const char *argv[] = {"SCRIPT", "LOAD", first->script};
        redisReply *l;
        if (rc__node_cmd(rc, n, &l, 3, argv) < 0)
            return U_EIO;
        bool ok = l->type == REDIS_REPLY_STRING;
        if (!ok)
            rc__err(rc, "%s: SCRIPT LOAD: %s", rc__node_name(n, name, sizeof name),
                    l->type == REDIS_REPLY_ERROR ? l->str : "unexpected reply");
        freeReplyObject(l);
        *to = n;
        return ok ? U_AGAIN : U_EIO;
    }
    if (rc->cl && (starts(r->str, "MOVED ") || starts(r->str, "ASK "))) {
        *to = rc__cluster_redirect(rc, r, ask);
        if (!*to) {
            *ask = false;
            rc__cluster_suspect(rc); /* an unknown target: the map tells */
        }
        return U_AGAIN;
    }
    if (rc->cl && starts(r->str, "TRYAGAIN")) {
        sleep_s(0.02);
        *to = n;
        return U_AGAIN;
    }
    if (starts(r->str, "READONLY") && (rc->sen || rc->cl)) {
        rc__err(rc, "%s: %s", rc__node_name(n, name, sizeof name), r->str);
        rc__node_close(n);
        rc__cluster_suspect(rc);
        *ask = false;
        return U_AGAIN;
    }
    if (starts(r->str, "LOADING") || starts(r->str, "MASTERDOWN") ||
        starts(r->str, "CLUSTERDOWN")) {
        rc__err(rc, "%s: %s", rc__node_name(n, name, sizeof name), r->str);
        rc__cluster_suspect(rc);
        return U_EIO;
    }
    return U_DONE;
}

/* Append calls[0..k) to n, after ASKING if ask. */
static int append_unit(rconn *rc, rnode *n, const rcall *calls, size_t k, bool ask)
{
    static const char asking[] = "*1\r\n$6\r\nASKING\r\n";
    if (ask && redisAppendFormattedCommand(n->c, asking, sizeof asking - 1) != REDIS_OK)
        return rc__node_failed(rc, n, "write");
    for (size_t i = 0; i < k; i++)
        if (redisAppendFormattedCommand(n->c, calls[i].cmd, calls[i].len) != REDIS_OK)
            return rc__node_failed(rc, n, "write");
    return 0;
}

/* Read k replies from n into out (after the reply to ASKING if ask). */
static int read_unit(rconn *rc, rnode *n, redisReply **out, size_t k, bool ask)
{
    for (size_t i = 0; i < k + ask; i++) {
        void *rep;
        if (redisGetReply(n->c, &rep) != REDIS_OK || !rep)
            return rc__node_failed(rc, n, "read");
        if (ask && i == 0)
            freeReplyObject(rep);
        else
            out[i - ask] = rep;
    }
    return 0;
}

/*
 * Send one unit (calls that go together) to `to` (NULL: where its key routes),
 * with ASKING if ask, and read its replies; follow what judge says.
 */
static int exec_unit(rconn *rc, const rcall *calls, size_t k, redisReply **out, rnode *to,
                     bool ask)
{
    int err = 0;
    for (int tries = 0;; tries++) {
        rnode *n = to;
        err = to ? rc__node_ensure(rc, to) : route(rc, calls[0].key, calls[0].keylen, &n);
        if (err < 0 || (err = append_unit(rc, n, calls, k, ask)) < 0 ||
            (err = read_unit(rc, n, out, k, ask)) < 0)
            break;
        verdict v = judge(rc, n, &calls[0], out[0], &to, &ask);
        if (v == U_DONE)
            return 0;
        free_replies(out, k);
        if (v == U_EIO) {
            err = -EIO;
            break;
        }
        if (tries == RC_MAX_REDIRECTS) {
            char why[400];
            snprintf(why, sizeof why, "%s", rc->err);
            rc__err(rc, "gave up after %d redirections (last: %s)", RC_MAX_REDIRECTS, why);
            err = -EIO;
            break;
        }
    }
    free_replies(out, k);
    return err;
}

/* The end of the unit that starts at calls[i]. */
static size_t unit_end(const rcall *calls, size_t n, size_t i)
{
    size_t j = i + 1;
    while (j < n && calls[j].with_prev)
        j++;
    return j;
}

int rconn_run(rconn *rc, const rcall *calls, size_t n, redisReply **replies)
{
    memset(replies, 0, n * sizeof *replies);
    if (rc->channels) {
        rc__err(rc, "a subscribed connection takes no commands");
        return -EINVAL;
    }
    if (n == 0)
        return 0;
    rc__sentinel_poll(rc);
    /* Each unit to its server, all pipelined; then the replies in order; then the units that
     * must go again (NOSCRIPT, a redirection) one by one. */
    rnode **where = xcalloc(n, sizeof *where);
    int err = 0;
    for (size_t i = 0; i < n && err == 0; i = unit_end(calls, n, i)) {
        size_t j = unit_end(calls, n, i);
        if ((err = route(rc, calls[i].key, calls[i].keylen, &where[i])) == 0)
            err = append_unit(rc, where[i], calls + i, j - i, false);
    }
    for (size_t i = 0; i < n && err == 0; i = unit_end(calls, n, i))
        err = read_unit(rc, where[i], replies + i, unit_end(calls, n, i) - i, false);
    for (size_t i = 0; i < n && err == 0; i = unit_end(calls, n, i)) {
        size_t k = unit_end(calls, n, i) - i;
        rnode *to;
        bool ask = false;
        verdict v = judge(rc, where[i], &calls[i], replies[i], &to, &ask);
        if (v == U_EIO) {
            err = -EIO;
        } else if (v == U_AGAIN) {
            free_replies(replies + i, k);
            err = exec_unit(rc, calls + i, k, replies + i, to, ask);
        }
    }
    if (err < 0) {
        /* Replies still owed on any server of this run would be read by the next call. */
        for (size_t i = 0; i < n; i = unit_end(calls, n, i))
            if (where[i])
                rc__node_close(where[i]);
        free_replies(replies, n);
    }
    free(where);
    return err;
}

int rconn_each_master(rconn *rc, const rcall *call, redisReply ***replies, char ***names)
{
    *replies = NULL;
    *names = NULL;
    if (rc->channels) {
        rc__err(rc, "a subscribed connection takes no commands");
        return -EINVAL;
    }
    rnode *one = &rc->node, **nodes = &one;
    size_t n = 1;
    if (rc->cl) {
        int err = rc__cluster_refresh(rc);
        if (err < 0)
            return err;
        n = rc__cluster_masters(rc, &nodes);
    } else {
        rc__sentinel_poll(rc);
    }
    redisReply **r = xcalloc(n + 1, sizeof *r);
    int err = 0;
    for (size_t i = 0; i < n && err == 0; i++)
        if ((err = rc__node_ensure(rc, nodes[i])) == 0 &&
            (err = append_unit(rc, nodes[i], call, 1, false)) == 0)
            err = read_unit(rc, nodes[i], &r[i], 1, false);
    if (err < 0) {
        free_replies(r, n);
        free(r);
    } else {
        *replies = r;
        *names = xcalloc(n + 1, sizeof **names);
        for (size_t i = 0; i < n; i++) {
            char name[300];
            (*names)[i] = xstrdup(rc__node_name(nodes[i], name, sizeof name));
        }
    }
    if (nodes != &one)
        free(nodes);
    return err < 0 ? err : (int)n;
}

int rconn_block(rconn *rc, const rcall *call, double timeout_s, redisReply **reply)
{
    *reply = NULL;
    if (rc->channels) {
        rc__err(rc, "a subscribed connection takes no commands");
        return -EINVAL;
    }
    rc__sentinel_poll(rc);
    double end = mono_s() + timeout_s;
    rnode *to = NULL;
    bool ask = false;
    for (int tries = 0;; tries++) {
        rnode *n = to;
        int err = to ? rc__node_ensure(rc, to) : route(rc, call->key, call->keylen, &n);
        if (err < 0 || (err = append_unit(rc, n, call, 1, ask)) < 0)
            return err;
        redisReply *r = NULL;
        for (int i = 0; i < 1 + ask && err == 0;) {
            if (r)
                freeReplyObject(r); /* the reply to ASKING */
            r = NULL;
            double left = end - mono_s();
            err = rc__node_wait(rc, n, left > 0 ? left : 0, rc__sentinel_fd(rc), &r);
            if (err == -EAGAIN) {
                /* The sentinels announced something. If the master moved, its connection
                 * is closed: the caller tries again (on the new one). */
                if (rc__sentinel_poll(rc)) {
                    rc__err(rc, "master '%s' moved (sentinels)", rc->addr.master);
                    err = -EIO;
                }
                continue;
            }
            i++;
        }
        if (err == -ETIMEDOUT) {
            rc__err(rc, "no reply within %.3f s", timeout_s);
            rc__node_close(n); /* the reply may still come: start afresh */
        }
        if (err < 0) {
            if (r)
                freeReplyObject(r);
            return err;
        }
        verdict v = judge(rc, n, call, r, &to, &ask);
        if (v == U_DONE) {
            *reply = r;
            return 0;
        }
        freeReplyObject(r);
        if (v == U_EIO || tries == RC_MAX_REDIRECTS)
            return -EIO;
    }
}

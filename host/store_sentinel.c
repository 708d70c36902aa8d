/*
 * store_sentinel.c - a master found through Redis Sentinel (the client
 * protocol of https://redis.io/docs/reference/sentinel-clients/): ask the
 * sentinels in turn for the master's address (the one that answered is
 * asked first next time), connect and check with ROLE that it is a master,
 * and keep one connection to a sentinel subscribed to +switch-master, so a
 * failover is noticed as soon as the sentinels announce it: the link drops
 * its connections to the old master, and its next call (or its wait, which
 * watches that connection too) goes to the new one without waiting out a
 * reconnect backoff.
 */
#include "store_conn.h"

#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* How long one sentinel may take to answer: the others are asked next. */
#define SENTINEL_TIMEOUT_S 0.5

struct sentinel {
    size_t first;       /* the sentinel that answered last: asked first */
    rnode watch;        /* subscribed to +switch-master on one sentinel */
};

sentinel *rc__sentinel_new(void)
{
    sentinel *s = xcalloc(1, sizeof *s);
    return s;
}

void rc__sentinel_free(sentinel *s)
{
    if (!s)
        return;
    rc__node_free(&s->watch);
    free(s);
}

/* Point n at seed i of the address (closing what it had). */
static void point_at(rnode *n, const char *host, int port)
{
    if (n->host && strcmp(n->host, host) == 0 && n->port == port)
        return;
    rc__node_close(n);
    free(n->host);
    n->host = xstrdup(host);
    n->port = port;
}

/* Ask sentinel n where the master is: 0 with host (malloc'd) and port, -ENOENT when it
 * does not know the name, -EIO. */
static int ask(rconn *rc, rnode *n, char **host, int *port)
{
    int err = rc__node_connect(rc, n, SENTINEL_TIMEOUT_S, RC_SENTINEL);
    if (err < 0)
        return err;
    const char *argv[] = {"SENTINEL", "GET-MASTER-ADDR-BY-NAME", rc->addr.master};
    redisReply *r;
    if ((err = rc__node_cmd(rc, n, &r, 3, argv)) < 0)
        return err;
    char name[300];
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING &&
        atoi(r->element[1]->str) > 0) {
        *host = xstrdup(r->element[0]->str);
        *port = atoi(r->element[1]->str);
    } else if (r->type == REDIS_REPLY_NIL) {
        rc__err(rc, "sentinel %s does not know master '%s'", rc__node_name(n, name, sizeof name),
                rc->addr.master);
        err = -ENOENT;
    } else {
        rc__err(rc, "sentinel %s: SENTINEL GET-MASTER-ADDR-BY-NAME: %s",
                rc__node_name(n, name, sizeof name),
                r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        err = -EIO;
    }
    freeReplyObject(r);
    rc__node_close(n);
    return err;
}

/* Subscribe the watch (on the sentinel that answered last) to +switch-master; best
 * effort: without it a failover is still found, by the next failed call. */
static void watch_start(rconn *rc, sentinel *s)
{
    rnode *w = &s->watch;
    if (w->c || mono_s() < w->retry_at)
        return;
    const redis_hostport *hp = &rc->addr.seeds[s->first];
    point_at(w, hp->host, hp->port);
    char saved[512];
    snprintf(saved, sizeof saved, "%s", rc->err); /* a failed watch is no news for callers */
    const char *argv[] = {"SUBSCRIBE", "+switch-master"};
    int done = 0;
    if (rc__node_connect(rc, w, SENTINEL_TIMEOUT_S, RC_SENTINEL) < 0 ||
        redisAppendCommandArgv(w->c, 2, argv, NULL) != REDIS_OK) {
        rc__node_close(w);
        done = -1;
    }
    while (done == 0)
        if (redisBufferWrite(w->c, &done) != REDIS_OK) {
            rc__node_close(w);
            done = -1;
        }
    if (!w->c) {
        w->backoff = fmin(fmax(w->backoff * 2, RC_BACKOFF_MIN_S), RC_BACKOFF_MAX_S);
        w->retry_at = mono_s() + w->backoff;
        s->first = (s->first + 1) % rc->addr.nseeds; /* try another one next time */
    } else {
        w->backoff = RC_BACKOFF_MIN_S;
    }
    snprintf(rc->err, rc->errlen, "%s", saved);
}

int rc__sentinel_connect(rconn *rc, rnode *n)
{
    sentinel *s = rc->sen;
    size_t count = rc->addr.nseeds;
    char why[512] = "";
    char *host = NULL;
    int port = 0, err = -EIO;
    bool unknown = true;
    for (size_t k = 0; k < count && !host; k++) {
        size_t i = (s->first + k) % count;
        rnode q = {.host = rc->addr.seeds[i].host, .port = rc->addr.seeds[i].port};
        err = ask(rc, &q, &host, &port);
        rc__node_close(&q);
        if (err == 0)
            s->first = i;
        else
            snprintf(why, sizeof why, "%s", rc->err);
        unknown = unknown && err == -ENOENT;
    }
    if (!host) {
        if (unknown)
            rc__err(rc, "no sentinel knows master '%s' (%s)", rc->addr.master, why);
        else
            rc__err(rc, "no sentinel answered where master '%s' is (last: %s)", rc->addr.master,
                    why);
        return -EIO;
    }
    point_at(n, host, port);
    free(host);
    err = rc__node_connect(rc, n, RC_CONNECT_TIMEOUT_S, RC_DATA);
    if (err < 0)
        return err;
    /* The sentinels may still name a master that has just become a replica. */
    const char *argv[] = {"ROLE"};
    redisReply *r;
    if ((err = rc__node_cmd(rc, n, &r, 1, argv)) < 0)
        return err;
    bool master = r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                  r->element[0]->type == REDIS_REPLY_STRING &&
                  strcmp(r->element[0]->str, "master") == 0;
    freeReplyObject(r);
    if (!master) {
        char name[300];
        rc__err(rc, "%s, named master '%s' by the sentinels, is not a master (a failover in "
                    "progress?)",
                rc__node_name(n, name, sizeof name), rc->addr.master);
        rc__node_close(n);
        return -EIO;
    }
    watch_start(rc, s);
    return 0;
}

/* The link's connections to where the master was: closed, to reconnect now. */
static void forget_master(rconn *rc)
{
    rc__node_close(&rc->node);
    rc__node_close(&rc->subnode);
    rc->node.retry_at = rc->subnode.retry_at = 0;
    rc->node.backoff = rc->subnode.backoff = RC_BACKOFF_MIN_S;
}

/* Whether "<name> <old ip> <old port> <new ip> <new port>" moves our master away from n. */
static bool moves_master(rconn *rc, const rnode *n, const char *msg)
{
    char name[200], oldip[100], newip[100];
    int oldport, newport;
    if (sscanf(msg, "%199s %99s %d %99s %d", name, oldip, &oldport, newip, &newport) != 5 ||
        strcmp(name, rc->addr.master) != 0)
        return false;
    return !n->host || strcmp(n->host, newip) != 0 || n->port != newport;
}

bool rc__sentinel_poll(rconn *rc)
{
    sentinel *s = rc->sen;
    if (!s)
        return false;
    rnode *w = &s->watch;
    if (!w->c) {
        watch_start(rc, s);
        return false;
    }
    bool moved = false;
    for (;;) {
        void *rep = NULL;
        if (redisGetReplyFromReader(w->c, &rep) != REDIS_OK) {
            rc__node_close(w);
            break;
        }
        if (rep) {
            redisReply *r = rep;
            if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
                r->element[0]->type == REDIS_REPLY_STRING &&
                strcmp(r->element[0]->str, "message") == 0 &&
                r->element[2]->type == REDIS_REPLY_STRING &&
                moves_master(rc, rc->channels ? &rc->subnode : &rc->node, r->element[2]->str))
                moved = true;
            freeReplyObject(r);
            continue;
        }
        struct pollfd p = {w->c->fd, POLLIN, 0};
        if (poll(&p, 1, 0) <= 0)
            break;
        if (redisBufferRead(w->c) != REDIS_OK) {
            rc__node_close(w); /* the sentinel went away: another one is watched next */
            break;
        }
    }
    if (moved)
        forget_master(rc);
    return moved;
}

int rc__sentinel_fd(rconn *rc)
{
    return rc->sen && rc->sen->watch.c ? rc->sen->watch.c->fd : -1;
}

/*
 * store_cluster.c - the Redis Cluster router of the store's link: the slot
 * map (CLUSTER SLOTS, asked of any node that answers, seeds last), the
 * hash slot of a key as Redis computes it (CRC16 of the hash tag, mod
 * 16384), one connection per master, and what MOVED and ASK redirections
 * teach. A MOVED points its slot at the new owner at once and has the whole
 * map refreshed before the next call; a node that fails has the map
 * refreshed too, at most every RC_CLUSTER_REFRESH_S, so a failover inside
 * the cluster (a replica promoted) is found as soon as the cluster knows it.
 */
#include "store_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define SLOTS 16384
/* The most nodes the router keeps (masters and redirect targets). */
#define MAX_NODES 1024
/* How often the slot map may be asked for again while it is suspect. */
#define RC_CLUSTER_REFRESH_S 0.1

struct cluster {
    rnode *nodes;          /* every node learnt; never shrinks, so pointers stay valid */
    size_t n;
    int16_t slot[SLOTS];   /* index into nodes of each slot's master, -1 unknown */
    bool stale;            /* the map must be asked for before the next call */
    double refresh_at;     /* not before this (mono) */
    unsigned next_any;     /* rotates the node that keyless calls go to */
};

/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as in the cluster spec. */
static uint16_t crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

unsigned rc__key_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1)
            return crc16(open + 1, (size_t)(close - open - 1)) & (SLOTS - 1);
    }
    return crc16(key, len) & (SLOTS - 1);
}

cluster *rc__cluster_new(void)
{
    cluster *cl = xcalloc(1, sizeof *cl);
    cl->nodes = xcalloc(MAX_NODES, sizeof *cl->nodes);
    memset(cl->slot, 0xff, sizeof cl->slot);
    cl->stale = true;
    return cl;
}

void rc__cluster_free(cluster *cl)
{
    if (!cl)
        return;
    for (size_t i = 0; i < cl->n; i++)
        rc__node_free(&cl->nodes[i]);
    free(cl->nodes);
    free(cl);
}

size_t rc__cluster_nodes(rconn *rc, rnode **nodes)
{
    *nodes = rc->cl ? rc->cl->nodes : NULL;
    return rc->cl ? rc->cl->n : 0;
}

size_t rc__cluster_masters(rconn *rc, rnode ***out)
{
    cluster *cl = rc->cl;
    bool *seen = xcalloc(cl->n + 1, sizeof *seen);
    *out = xcalloc(cl->n + 1, sizeof **out);
    size_t n = 0;
    for (unsigned s = 0; s < SLOTS; s++) {
        int idx = cl->slot[s];
        if (idx >= 0 && !seen[idx]) {
            seen[idx] = true;
            (*out)[n++] = &cl->nodes[idx];
        }
    }
    free(seen);
    return n;
}

/* The index of node host:port, added if new; -1 when the table is full. */
static int node_index(cluster *cl, const char *host, size_t hlen, int port)
{
    for (size_t i = 0; i < cl->n; i++)
        if (cl->nodes[i].port == port && strlen(cl->nodes[i].host) == hlen &&
            memcmp(cl->nodes[i].host, host, hlen) == 0)
            return (int)i;
    if (cl->n == MAX_NODES)
        return -1;
    rnode *n = &cl->nodes[cl->n];
    memset(n, 0, sizeof *n);
    n->host = strndup(host, hlen);
    if (!n->host)
        return -1;
    n->port = port;
    return (int)cl->n++;
}

void rc__cluster_suspect(rconn *rc)
{
    if (rc->cl)
        rc->cl->stale = true;
}

/*
 * Read a CLUSTER SLOTS reply asked of `from` into the map: [start, end,
 * [ip, port, id, ...], replicas...] per range. An empty ip means the node
 * asked. Returns the number of slots covered, or -1 for a reply that is not
 * a slot map.
 */
static long read_slots(cluster *cl, const rnode *from, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY)
        return -1;
    int16_t next[SLOTS];
    memset(next, 0xff, sizeof next);
    long covered = 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2)
            return -1;
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        const redisReply *m = e->element[2];
        if (lo < 0 || hi >= SLOTS || lo > hi || m->element[0]->type != REDIS_REPLY_STRING ||
            m->element[1]->type != REDIS_REPLY_INTEGER || m->element[1]->integer < 1 ||
            m->element[1]->integer > 65535)
            return -1;
        const char *ip = m->element[0]->str;
        size_t iplen = m->element[0]->len;
        if (iplen == 0 || (iplen == 1 && ip[0] == '?')) { /* the node we asked */
            ip = from->host;
            iplen = strlen(from->host);
        }
        int idx = node_index(cl, ip, iplen, (int)m->element[1]->integer);
        if (idx < 0)
            return -1;
        for (long long s = lo; s <= hi; s++)
            next[s] = (int16_t)idx;
        covered += hi - lo + 1;
    }
    memcpy(cl->slot, next, sizeof next);
    return covered;
}

/* Ask n for the slot map; 0 when it gave one. */
static int refresh_from(rconn *rc, rnode *n)
{
    cluster *cl = rc->cl;
    int err = rc__node_ensure(rc, n);
    if (err < 0)
        return err;
    const char *argv[] = {"CLUSTER", "SLOTS"};
    redisReply *r;
    if ((err = rc__node_cmd(rc, n, &r, 2, argv)) < 0)
        return err;
    char name[300];
    long covered = r->type == REDIS_REPLY_ERROR ? -1 : read_slots(cl, n, r);
    if (covered < 0)
        rc__err(rc, "%s: CLUSTER SLOTS: %s", rc__node_name(n, name, sizeof name),
                r->type == REDIS_REPLY_ERROR ? r->str : "not a slot map");
    else if (covered == 0)
        rc__err(rc, "%s: CLUSTER SLOTS: no slot is served", rc__node_name(n, name, sizeof name));
    freeReplyObject(r);
    return covered > 0 ? 0 : -EIO;
}

int rc__cluster_refresh(rconn *rc)
{
    cluster *cl = rc->cl;
    cl->refresh_at = mono_s() + RC_CLUSTER_REFRESH_S;
    /* The nodes known first (a connected one answers at once), then the seeds. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < cl->n; i++)
            if ((cl->nodes[i].c != NULL) == (pass == 0) && refresh_from(rc, &cl->nodes[i]) == 0) {
                cl->stale = false;
                return 0;
            }
    char why[512];
    snprintf(why, sizeof why, "%s", rc->err);
    for (size_t i = 0; i < rc->addr.nseeds; i++) {
        const redis_hostport *hp = &rc->addr.seeds[i];
        int idx = node_index(cl, hp->host, strlen(hp->host), hp->port);
        if (idx >= 0 && refresh_from(rc, &cl->nodes[idx]) == 0) {
            cl->stale = false;
            return 0;
        }
        snprintf(why, sizeof why, "%s", rc->err);
    }
    rc__err(rc, "no node of the cluster told its slots (last: %s)", why);
    return -EIO;
}

rnode *rc__cluster_route(rconn *rc, const char *key, size_t keylen)
{
    cluster *cl = rc->cl;
    bool failed = false;
    if ((cl->stale || cl->n == 0) && mono_s() >= cl->refresh_at)
        failed = rc__cluster_refresh(rc) < 0; /* then the old map is still the best guess */
    int idx;
    if (key) {
        idx = cl->slot[rc__key_slot(key, keylen)];
    } else {
        idx = -1;
        for (unsigned k = 0; k < SLOTS && idx < 0; k += 1024)
            idx = cl->slot[(cl->next_any + k) % SLOTS];
        cl->next_any += 4099; /* a prime stride: spreads keyless calls over the masters */
    }
    if (idx < 0) {
        if (!failed) /* else the message says why the map is not known */
            rc__err(rc, "no node of the cluster serves slot %u",
                    key ? rc__key_slot(key, keylen) : 0);
        return NULL;
    }
    return &cl->nodes[idx];
}

rnode *rc__cluster_redirect(rconn *rc, const redisReply *r, bool *ask)
{
    cluster *cl = rc->cl;
    if (!cl || r->type != REDIS_REPLY_ERROR)
        return NULL;
    /* "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>"; the host may be empty. */
    unsigned long slot;
    char *end;
    const char *p;
    if (strncmp(r->str, "MOVED ", 6) == 0)
        p = r->str + 6, *ask = false;
    else if (strncmp(r->str, "ASK ", 4) == 0)
        p = r->str + 4, *ask = true;
    else
        return NULL;
    slot = strtoul(p, &end, 10);
    if (end == p || *end != ' ' || slot >= SLOTS)
        return NULL;
    const char *hp = end + 1;
    const char *colon = strrchr(hp, ':');
    if (!colon)
        return NULL;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535)
        return NULL;
    size_t hlen = (size_t)(colon - hp);
    if (hlen == 0) /* the node that answered: unknown here, so ask the map */
        return NULL;
    int idx = node_index(cl, hp, hlen, (int)port);
    if (idx < 0)
        return NULL;
    if (!*ask) {
        cl->slot[slot] = (int16_t)idx;
        cl->stale = true; /* a slot moved: others may have too */
    }
    return &cl->nodes[idx];
}

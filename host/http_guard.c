/*
 * http_guard.c - the HTTP connection guard: per-client counts, the lists of
 * connections still receiving their request (oldest first, so the oldest is
 * the one to evict and the first to time out), and a thread that shuts down
 * those past their deadline and says, at most every 10 s, what it refused.
 *
 * Locking: one mutex over everything. A connection is shut down with the
 * lock held; the library closes its socket only after it told us (through
 * guard_close, which takes the lock), so a socket number is never used after
 * it was closed and perhaps reused.
 */
#include "http_guard.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Hash buckets of client addresses; chains stay short at any sane connection count. */
#define GUARD_BUCKETS 1024
/* The shortest time between two summaries of what was refused. */
#define GUARD_LOG_EVERY_S 10.0

/* One client address and its open connections. */
typedef struct client {
    struct client *next;
    unsigned char key[16]; /* IPv4 as ::ffff:a.b.c.d; IPv6 cut to its /64 */
    int conns;
} client;

struct guard_conn {
    struct guard_conn *prev, *next; /* in a receiving list */
    client *client;
    int fd;
    double since;   /* mono_s when it began waiting for its current request */
    bool receiving; /* in a receiving list */
    bool reserve;   /* admitted on the reserve */
    bool cut;       /* shut down; waiting for the library to close it */
};

typedef struct conn_list {
    guard_conn *head, *tail;
} conn_list;

/* What was refused since the last summary. */
typedef struct tally {
    long per_client, full, evicted, slow;
} tally;

struct http_guard {
    guard_limits lim;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thr;
    bool started, stop;
    conn_list recv[2]; /* receiving: [0] normal, [1] reserve; oldest first */
    int open;          /* slots not closed yet, cut ones included */
    int cut;           /* of which shut down */
    int reserve_live;  /* reserve slots not cut */
    client *buckets[GUARD_BUCKETS];
    tally t;
    double logged; /* mono_s of the last summary */
};

/* ---- client addresses ---- */

static void client_key(const struct sockaddr *sa, socklen_t len, unsigned char key[16])
{
    memset(key, 0, 16);
    if (sa && sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa && sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            memcpy(key, a->s6_addr, 16); /* the same client as over IPv4 */
        else
            memcpy(key, a->s6_addr, 8); /* one /64 is one client */
    }
}

static client **bucket(http_guard *g, const unsigned char key[16])
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    return &g->buckets[h % GUARD_BUCKETS];
}

static client *client_find(http_guard *g, const unsigned char key[16])
{
    for (client *c = *bucket(g, key); c; c = c->next)
        if (memcmp(c->key, key, 16) == 0)
            return c;
    return NULL;
}

static client *client_get(http_guard *g, const unsigned char key[16])
{
    client *c = client_find(g, key);
    if (!c) {
        client **b = bucket(g, key);
        c = xcalloc(1, sizeof *c);
        memcpy(c->key, key, 16);
        c->next = *b;
        *b = c;
    }
    return c;
}

static void client_put(http_guard *g, client *c)
{
    if (--c->conns > 0)
        return;
    for (client **pp = bucket(g, c->key); *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    free(c);
}

/* ---- receiving lists ---- */

static void list_push(conn_list *l, guard_conn *c)
{
    c->prev = l->tail;
    c->next = NULL;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
    c->receiving = true;
}

static void list_unlink(http_guard *g, guard_conn *c)
{
    if (!c->receiving)
        return;
    conn_list *l = &g->recv[c->reserve];
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
    c->receiving = false;
}

/* Shut c down (lock held): the library sees its socket end and closes it. */
static void cut(http_guard *g, guard_conn *c)
{
    list_unlink(g, c);
    c->cut = true;
    g->cut++;
    if (c->reserve)
        g->reserve_live--;
    shutdown(c->fd, SHUT_RDWR);
}

/* ---- the deadline thread ---- */

static double timeout_of(const http_guard *g, int list)
{
    return list ? fmin(g->lim.request_timeout, GUARD_RESERVE_TIMEOUT_S) : g->lim.request_timeout;
}

/* One line for what was refused since the last one (lock held). */
static void summarize(http_guard *g, double now)
{
    tally *t = &g->t;
    if (now - g->logged < GUARD_LOG_EVERY_S ||
        (t->per_client | t->full | t->evicted | t->slow) == 0)
        return;
    char line[512];
    size_t n = 0;
    if (t->slow)
        n += (size_t)snprintf(line + n, sizeof line - n,
                              "; closed %ld that did not send a whole request within "
                              "http.request_timeout (%g s)",
                              t->slow, g->lim.request_timeout);
    if (t->evicted && n < sizeof line)
        n += (size_t)snprintf(line + n, sizeof line - n,
                              "; at http.max_connections (%d), closed %ld that had waited the "
                              "longest for their request",
                              g->lim.max_connections, t->evicted);
    if (t->per_client && n < sizeof line)
        n += (size_t)snprintf(line + n, sizeof line - n,
                              "; refused %ld from clients that had "
                              "http.max_connections_per_client (%d) open",
                              t->per_client, g->lim.per_client);
    if (t->full && n < sizeof line)
        snprintf(line + n, sizeof line - n,
                 "; refused %ld with http.max_connections (%d) and the %d kept for /healthz "
                 "all busy",
                 t->full, g->lim.max_connections, GUARD_RESERVE);
    log_warn("http: connections in the last %.0f s%s", now - g->logged, line);
    memset(t, 0, sizeof *t);
    g->logged = now;
}

static void *guard_main(void *arg)
{
    http_guard *g = arg;
    pthread_mutex_lock(&g->lock);
    while (!g->stop) {
        double now = mono_s(), next = now + GUARD_LOG_EVERY_S;
        for (int l = 0; l < 2; l++) {
            double timeout = timeout_of(g, l);
            guard_conn *c;
            while ((c = g->recv[l].head) && c->since + timeout <= now) {
                cut(g, c);
                g->t.slow++;
            }
            if (c)
                next = fmin(next, c->since + timeout);
        }
        summarize(g, now);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double wait = fmax(next - mono_s(), 0.001);
        ts.tv_sec += (time_t)wait;
        ts.tv_nsec += (long)((wait - floor(wait)) * 1e9);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g->cond, &g->lock, &ts);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

/* ---- the interface ---- */

http_guard *guard_new(const guard_limits *lim, char *err, size_t errlen)
{
    http_guard *g = xcalloc(1, sizeof *g);
    g->lim = *lim;
    g->logged = mono_s();
    pthread_mutex_init(&g->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cond, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&g->thr, NULL, guard_main, g);
    if (rc != 0) {
        snprintf(err, errlen, "http: cannot start a thread: %s", strerror(rc));
        guard_free(g);
        return NULL;
    }
    g->started = true;
    return g;
}

void guard_free(http_guard *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->lock);
    g->stop = true;
    pthread_cond_signal(&g->cond);
    pthread_mutex_unlock(&g->lock);
    if (g->started)
        pthread_join(g->thr, NULL);
    for (int i = 0; i < GUARD_BUCKETS; i++)
        for (client *c = g->buckets[i], *next; c; c = next) {
            next = c->next;
            free(c);
        }
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

/* Why a connection from client c cannot be let in now (lock held): 1 its client has
 * per_client, 2 the server and the reserve are full with nothing to evict; 0 it can. */
static int refusal(const http_guard *g, const client *c)
{
    if (c && c->conns >= g->lim.per_client)
        return 1;
    if (g->open - g->cut - g->reserve_live >= g->lim.max_connections && !g->recv[0].head &&
        g->reserve_live >= GUARD_RESERVE)
        return 2;
    return 0;
}

/* A first look, before the library takes the connection in: refuses what guard_open would,
 * and changes nothing else. Connections accepted at once on several threads all pass it;
 * guard_open decides for each, one at a time. */
bool guard_admit(http_guard *g, const struct sockaddr *addr, socklen_t len)
{
    unsigned char key[16];
    client_key(addr, len, key);
    pthread_mutex_lock(&g->lock);
    int why = refusal(g, client_find(g, key));
    if (why == 1)
        g->t.per_client++;
    else if (why == 2)
        g->t.full++;
    pthread_mutex_unlock(&g->lock);
    return why == 0;
}

guard_conn *guard_open(http_guard *g, const struct sockaddr *addr, socklen_t len, int fd)
{
    unsigned char key[16];
    client_key(addr, len, key);
    guard_conn *c = xcalloc(1, sizeof *c);
    c->fd = fd;
    pthread_mutex_lock(&g->lock);
    c->client = client_get(g, key);
    int why = refusal(g, c->client);
    c->client->conns++;
    g->open++;
    c->since = mono_s();
    if (why) {
        /* Over a limit after all: shut down at once; the library closes it. */
        c->cut = true;
        g->cut++;
        shutdown(fd, SHUT_RDWR);
        if (why == 1)
            g->t.per_client++;
        else
            g->t.full++;
    } else {
        if (g->open - 1 - g->cut - g->reserve_live >= g->lim.max_connections) {
            guard_conn *oldest = g->recv[0].head;
            if (oldest) {
                cut(g, oldest); /* its place is this one's */
                g->t.evicted++;
            } else {
                c->reserve = true;
                g->reserve_live++;
            }
        }
        list_push(&g->recv[c->reserve], c);
        pthread_cond_signal(&g->cond); /* its deadline may be the first one */
    }
    pthread_mutex_unlock(&g->lock);
    return c;
}

void guard_close(http_guard *g, guard_conn *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&g->lock);
    list_unlink(g, c);
    client_put(g, c->client);
    g->open--;
    if (c->cut)
        g->cut--;
    else if (c->reserve)
        g->reserve_live--;
    pthread_mutex_unlock(&g->lock);
    free(c);
}

void guard_received(http_guard *g, guard_conn *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&g->lock);
    list_unlink(g, c);
    pthread_mutex_unlock(&g->lock);
}

void guard_idle(http_guard *g, guard_conn *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&g->lock);
    if (!c->cut && !c->receiving) {
        c->since = mono_s();
        list_push(&g->recv[c->reserve], c);
        pthread_cond_signal(&g->cond);
    }
    pthread_mutex_unlock(&g->lock);
}

bool guard_reserved(const guard_conn *c) { return c && c->reserve; }

int guard_open_count(http_guard *g)
{
    pthread_mutex_lock(&g->lock);
    int n = g->open - g->cut;
    pthread_mutex_unlock(&g->lock);
    return n;
}

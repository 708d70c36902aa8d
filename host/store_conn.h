/*
 * store_conn.h - the store's link to Redis, whatever its shape: one server,
 * a master found through Sentinel (store_sentinel.c), or a Redis Cluster
 * (store_cluster.c, a router by hash slot). Everything above it sends
 * commands that carry the key (or "{tag}") they are for; the link picks the
 * server, follows MOVED and ASK, loads a script where a server answers
 * NOSCRIPT, reconnects with backoff and finds a new master after a failover.
 *
 * A link is not thread-safe: like the store that owns it, one per thread.
 * Functions return 0 or a negative errno: -EIO when Redis cannot be reached
 * (the link reconnects on the next call, with backoff), -EINTR when a wait
 * was interrupted, -ETIMEDOUT, -ENOMEM. Messages go into the err buffer the
 * link was made with. Only store files include this header.
 */
#ifndef BGT_STORE_CONN_H
#define BGT_STORE_CONN_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

#include "store.h"

/* How long a command may take before the connection is given up. */
#define RC_CMD_TIMEOUT_S 5.0
/* How long a connection may take to open. */
#define RC_CONNECT_TIMEOUT_S 2.0
/* Reconnect backoff: doubles from min to max after each failed attempt. */
#define RC_BACKOFF_MIN_S 0.05
#define RC_BACKOFF_MAX_S 5.0
/* Redirections (MOVED, ASK, TRYAGAIN, NOSCRIPT) one call may follow. */
#define RC_MAX_REDIRECTS 8

/* One Redis server the link talks to. */
typedef struct rnode {
    char *host;      /* TCP host, or NULL for a unix socket */
    int port;
    char *path;      /* unix socket path, or NULL */
    redisContext *c; /* NULL while not connected */
    double retry_at; /* no reconnect attempt before this (mono) */
    double backoff;  /* the delay after the next failed attempt */
    int refused;     /* what the link's check refused the last connection with, or 0 */
} rnode;

/* One command for rconn_run: its RESP text and the key it is routed by. */
typedef struct rcall {
    const char *key;    /* the key (or "{tag}") the call is for; NULL = any server */
    size_t keylen;
    const char *cmd;    /* the command as RESP text (redisFormatCommandArgv) */
    size_t len;
    const char *script; /* EVALSHA: the script's source, loaded where NOSCRIPT is answered */
    bool with_prev;     /* goes to the server of the previous call, right after it, and is
                           sent again with it when that one is redirected (WAIT after a write) */
} rcall;

typedef struct rconn rconn;

/*
 * A new, unconnected link to addr (copied). intr_fd: a descriptor that
 * becomes readable to cut a wait short (rconn_block, rconn_next_push), or
 * -1; borrowed. err/errlen: where messages go; borrowed for the link's life.
 */
rconn *rconn_new(const redis_addr *addr, int intr_fd, char *err, size_t errlen);
void rconn_free(rconn *rc);
/* A check run on every new connection (after AUTH and SELECT, before any call): 0 to use
 * it, or a negative errno (message in the link's buffer) to refuse it. */
typedef int rconn_check_fn(rconn *rc, rnode *n, void *arg);
/* Set the check (arg borrowed). A refusal other than -EIO is what calls return. */
void rconn_on_connect(rconn *rc, rconn_check_fn *fn, void *arg);
/* Connect now (for a cluster: learn the slots), without waiting for the backoff. */
int rconn_connect(rconn *rc);
/* Close every connection; the next call connects again (no backoff). */
void rconn_drop(rconn *rc);

/*
 * Send n calls and read their replies into replies[0..n) (caller frees each
 * with freeReplyObject). Calls to one server are pipelined. A reply may be a
 * Redis error: the link handles MOVED, ASK, TRYAGAIN, CLUSTERDOWN, NOSCRIPT
 * (for calls with a script) and READONLY (a master turned replica: it finds
 * the new one) itself and returns any other error reply as it is. -EIO when
 * a server could not be reached or answered nothing: then no reply is kept,
 * and calls may or may not have run.
 */
int rconn_run(rconn *rc, const rcall *calls, size_t n, redisReply **replies);

/*
 * Run one call on every master: the one server, the master the sentinels
 * name, or each master of a cluster (its slot map read first). *replies gets
 * one reply per master (a malloc'd array: free each with freeReplyObject,
 * then the array) and *names the "host:port" (or socket path) each came from
 * (a malloc'd array of malloc'd strings). Returns how many masters answered
 * (>= 1), or -EIO when one could not be reached (nothing is kept then).
 * For what a server's own state answers (INFO, CONFIG), not for keys.
 */
int rconn_each_master(rconn *rc, const rcall *call, redisReply ***replies, char ***names);

/*
 * Send one blocking call (BLPOP ...) and wait up to timeout_s for its reply.
 * -ETIMEDOUT when none came (the connection is dropped: the reply may still
 * come), -EINTR when intr_fd became readable (likewise), -EIO.
 */
int rconn_block(rconn *rc, const rcall *call, double timeout_s, redisReply **reply);

/*
 * Make the link a subscriber of channels[0..n) (a name with '*' is a
 * pattern), on a connection of its own: from now on only rconn_next_push.
 * After a reconnect it subscribes again. Copies the names.
 */
int rconn_subscribe(rconn *rc, const char *const *channels, size_t n);
/* Wait up to timeout_s for the next message on a subscribed link (any push
 * reply: the caller picks the "message"s). -ETIMEDOUT, -EINTR, -EIO. */
int rconn_next_push(rconn *rc, double timeout_s, redisReply **reply);

/* ---- shared by the files of the link (store_conn.c, store_sentinel.c, store_cluster.c) ---- */

typedef struct sentinel sentinel;
typedef struct cluster cluster;

struct rconn {
    redis_addr addr;      /* a copy */
    char *err;            /* the owner's message buffer */
    size_t errlen;
    int intr_fd;          /* -1: waits cannot be cut short */
    rnode node;           /* one server, or the master (Sentinel) */
    rnode subnode;        /* subscribers: the connection that listens */
    sentinel *sen;        /* REDIS_SENTINEL */
    cluster *cl;          /* REDIS_CLUSTER */
    char **channels;      /* subscribed to, or NULL */
    size_t nchannels;
    rconn_check_fn *check; /* run on every new connection, or NULL */
    void *check_arg;
};

__attribute__((format(printf, 2, 3))) void rc__err(rconn *rc, const char *fmt, ...);

/* What a connection is for. */
typedef enum rc_kind {
    RC_DATA,     /* a server of one database: AUTH, SELECT, then the link's check */
    RC_NODE,     /* a cluster node: AUTH, then the link's check */
    RC_SENTINEL, /* a sentinel: AUTH when it wants a password, nothing else */
} rc_kind;

/* Connect n as kind within timeout_s. -EIO with the message in rc's buffer, or what the
 * link's check refused it with. */
int rc__node_connect(rconn *rc, rnode *n, double timeout_s, rc_kind kind);
/* Connect n (for a Sentinel link: to wherever the sentinels say the master is) unless it
 * is connected or its backoff has not passed (-EIO then, or what the check refused the
 * last connection with). */
int rc__node_ensure(rconn *rc, rnode *n);
/* Close n's connection (it reconnects at once when asked to). */
void rc__node_close(rnode *n);
/* n's connection failed doing `what`: close it, say why, -EIO. */
int rc__node_failed(rconn *rc, rnode *n, const char *what);
void rc__node_free(rnode *n);
/* "host:port" or the socket path of n, into buf. */
const char *rc__node_name(const rnode *n, char *buf, size_t len);
/* Run argv on a connected n and take its reply; -EIO if the connection failed. */
int rc__node_cmd(rconn *rc, rnode *n, redisReply **out, int argc, const char **argv);
/*
 * Wait up to timeout_s for one reply on n (a command already appended).
 * Also watches extra_fd (>= 0) and returns -EAGAIN when it becomes readable.
 * -ETIMEDOUT, -EINTR (intr_fd), -EIO.
 */
int rc__node_wait(rconn *rc, rnode *n, double timeout_s, int extra_fd, redisReply **out);

/* store_sentinel.c */
sentinel *rc__sentinel_new(void);
void rc__sentinel_free(sentinel *s);
/* Ask the sentinels where the master is, point n at it, connect and check with ROLE that
 * it is a master. */
int rc__sentinel_connect(rconn *rc, rnode *n);
/* Read what the sentinels announced; true if the master moved (rc->node is then closed
 * and pointed at the new address). */
bool rc__sentinel_poll(rconn *rc);
/* The descriptor that becomes readable when the sentinels announce something, or -1. */
int rc__sentinel_fd(rconn *rc);

/* store_cluster.c */
cluster *rc__cluster_new(void);
void rc__cluster_free(cluster *cl);
/* Learn the slot map (CLUSTER SLOTS) from any node that answers. */
int rc__cluster_refresh(rconn *rc);
/* The master serving key (any master for NULL), or NULL with the message set. */
rnode *rc__cluster_route(rconn *rc, const char *key, size_t keylen);
/* A MOVED or ASK error reply names a server: the node for it (added if new). For MOVED the
 * slot is pointed at it, and a refresh of the whole map is due. NULL: not a redirect. */
rnode *rc__cluster_redirect(rconn *rc, const redisReply *r, bool *ask);
/* A node of the cluster failed: the map is refreshed before the next call. */
void rc__cluster_suspect(rconn *rc);
/* The masters that serve slots in the map now, each once, in slot order: *out gets a
 * malloc'd array of pointers into the link's nodes. Returns how many. */
size_t rc__cluster_masters(rconn *rc, rnode ***out);
/* Every node the link knows, for closing them. */
size_t rc__cluster_nodes(rconn *rc, rnode **nodes);
/* The hash slot of key: CRC16 of its hash tag (the part between the first '{' and the
 * next '}', if not empty), else of the whole key, mod 16384. */
unsigned rc__key_slot(const char *key, size_t len);

#endif

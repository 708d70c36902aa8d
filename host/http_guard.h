/*
 * http_guard.h - what one HTTP client may hold of the server's connections.
 * The HTTP layer asks it before accepting a connection and tells it where
 * each connection is in its life; it knows nothing of libmicrohttpd.
 *
 * A connection is "receiving" from the moment it is accepted, or its last
 * response was sent (keep-alive), until its whole request (headers and body)
 * has arrived. Three rules keep slow clients from locking others out:
 *   - a request must arrive whole within request_timeout (not per line or
 *     packet): a connection still receiving past that is shut down;
 *   - one client address (an IPv4 address, an IPv6 /64) holds at most
 *     per_client connections;
 *   - at max_connections, a new connection evicts the one that has been
 *     receiving the longest (a slow or idle client, never a request being
 *     answered or a stream); when none is receiving, up to GUARD_RESERVE more
 *     connections are admitted on the reserve, which serves /healthz only
 *     and gives its requests GUARD_RESERVE_TIMEOUT_S at most.
 * Shutting a connection down (shutdown(2) of its socket) makes the HTTP
 * library see it end and close it; the guard forgets it at that close.
 */
#ifndef BGT_HTTP_GUARD_H
#define BGT_HTTP_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Connections kept beyond max_connections for /healthz. */
#define GUARD_RESERVE 16
/* The longest a request on a reserve connection may take to arrive. */
#define GUARD_RESERVE_TIMEOUT_S 2.0

typedef struct http_guard http_guard;
typedef struct guard_conn guard_conn;

typedef struct guard_limits {
    int max_connections;    /* connections served normally */
    int per_client;         /* connections of one client address */
    double request_timeout; /* seconds for a whole request to arrive */
} guard_limits;

/* A guard with limits lim (copied), and its thread that enforces the
 * deadlines. NULL with err set if the thread cannot start. */
http_guard *guard_new(const guard_limits *lim, char *err, size_t errlen);
/* Stop the thread and free g; every connection must have been closed (NULL is fine). */
void guard_free(http_guard *g);

/* Whether to accept a connection from addr: a first look, which refuses
 * cheaply what guard_open would and changes nothing else. */
bool guard_admit(http_guard *g, const struct sockaddr *addr, socklen_t len);

/* A connection from addr was accepted on socket fd. guard_open decides, one
 * connection at a time: it starts receiving (on the reserve, or in the place
 * of the one it evicts), or, over a limit after all (connections accepted at
 * once on several threads all passed guard_admit), it is shut down at once.
 * Returns its slot either way (owned by g until guard_close). */
guard_conn *guard_open(http_guard *g, const struct sockaddr *addr, socklen_t len, int fd);
/* The connection is closing: forget it. c may be NULL. */
void guard_close(http_guard *g, guard_conn *c);
/* Its whole request has arrived (or was answered early): no deadline until
 * guard_idle. c may be NULL. */
void guard_received(http_guard *g, guard_conn *c);
/* Its response was sent: it may send another request, from now on. c may be NULL. */
void guard_idle(http_guard *g, guard_conn *c);
/* Whether c was admitted on the reserve (it may ask for /healthz only). */
bool guard_reserved(const guard_conn *c);

/* Connections open now (the reserve included), for tests and metrics. */
int guard_open_count(http_guard *g);

#endif

/*
 * sse.h - the event hub behind the Server-Sent Events endpoints. One Redis
 * connection subscribes to every task's events (a pattern subscription); one
 * thread reads it and appends each event, formatted once, to the queue of
 * every client that follows that task (or all tasks). A second thread sends
 * keep-alive comments and notices clients that hung up while idle. The HTTP
 * layer owns the sockets: it lends the hub a suspend and a resume function
 * so an idle stream costs no thread and no polling.
 *
 * Only sse.c knows the SSE wire format; it knows nothing of libmicrohttpd.
 *
 * Life of a client (all calls but sse_client_read come from the HTTP layer's
 * request handler and completion callback):
 *   cl = sse_client_new(...)        registered: live events are held from now on
 *   ... read the task's record ...  (so nothing published meanwhile is lost)
 *   sse_client_begin(cl, record...) the current state first, then what was held
 *   sse_client_attach(cl, conn, fd) the connection it writes to
 *   sse_client_read(cl, buf, max)   from the response's content callback
 *   sse_client_close(cl)            the connection is done: unregistered
 *   sse_client_release(cl)          each reference taken is given back once
 */
#ifndef BGT_SSE_H
#define BGT_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

#include "metrics.h"
#include "store.h"

/* Seconds between keep-alive comments on an idle stream. */
#define SSE_KEEPALIVE_S 15.0

typedef struct sse_hub sse_hub;
typedef struct sse_client sse_client;

/* How the hub parks and wakes a connection (the HTTP layer's functions). */
typedef struct sse_io {
    /* Park conn: called from sse_client_read, in the connection's own thread,
     * with the hub's lock held. */
    void (*suspend)(void *conn);
    /* Wake a parked conn so its content callback runs again: called from the
     * hub's threads without the lock, exactly once per suspend. */
    void (*resume)(void *conn);
} sse_io;

/*
 * Start the hub: a subscriber connection to every task's events and its two
 * threads, connected as cfg and addr say (read at the call); met is borrowed (it gets the SSE
 * client gauge and the delivered-events counter). Redis need not be up: the
 * subscriber reconnects with backoff, and sse_hub_subscribed says whether it
 * is listening. Returns NULL (err says why) only when threads or the epoll
 * instance cannot be created.
 */
sse_hub *sse_hub_start(const bgt_config *cfg, const redis_addr *addr, const sse_io *io,
                       metrics *met, char *err, size_t errlen);
/* True while the subscription is live (a stream opened now misses nothing). */
bool sse_hub_subscribed(sse_hub *h);
/* Number of registered clients. */
size_t sse_hub_clients(sse_hub *h);
/*
 * Stop the threads, then end every stream: clients still registered are
 * marked ended and their parked connections resumed, so the HTTP layer can
 * close them. No connection is parked after this returns.
 */
void sse_hub_shutdown(sse_hub *h);
/* Free the hub: after sse_hub_shutdown and once every client is released. */
void sse_hub_free(sse_hub *h);

/*
 * Register a client that follows task_id (lower-case UUID), or, with task_id
 * NULL, every task's events (of handler only, if handler is not NULL). A task
 * client holds live events aside until sse_client_begin; an all-tasks client
 * streams at once. The client starts with two references: one for the request
 * (given back by sse_client_close) and one for whoever reads it (given back
 * by sse_client_release). Strings are copied.
 */
sse_client *sse_client_new(sse_hub *h, const char *task_id, const char *handler);

/*
 * Write a task client's opening: with last_id NULL, the record's current
 * state as an event (bgtask_updated with its persisted progress while
 * ONGOING, else its terminal event); with last_id (a stream id from a
 * Last-Event-ID header), the events of replay (store_events_after's answer)
 * and, if the record is terminal and none of them is, its terminal event.
 * Then the live events held since sse_client_new that the opening does not
 * already cover. After a terminal event comes server_close and the stream
 * ends. record and replay are borrowed.
 */
void sse_client_begin(sse_client *cl, const cJSON *record, const cJSON *replay,
                      const char *last_id);

/* The connection cl writes to, and its socket (watched for hang-ups while
 * parked; -1 for none). Call once, before the first sse_client_read. */
void sse_client_attach(sse_client *cl, void *conn, int fd);

/* sse_client_read's answers besides a byte count. */
enum { SSE_PARKED = 0, SSE_END = -1, SSE_ABORT = -2 };

/*
 * Copy up to max bytes of queued output into buf. Returns the count, or
 * SSE_PARKED (nothing queued: the connection was suspended through sse_io and
 * will be resumed when there is), SSE_END (the stream is over: end the
 * response), SSE_ABORT (the client hung up or fell too far behind: drop the
 * connection).
 */
ssize_t sse_client_read(sse_client *cl, char *buf, size_t max);

/* The connection is finished: unregister cl and give back the request's
 * reference. cl must not be parked. */
void sse_client_close(sse_client *cl);
/* Unregister a client that never got a connection (the request failed before
 * the stream began) and give back both references. */
void sse_client_abandon(sse_client *cl);
/* Give back the reader's reference; the last one frees cl. */
void sse_client_release(sse_client *cl);

#endif

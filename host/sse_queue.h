/*
 * sse_queue.h - what SSE streams have yet to send. An event is formatted
 * once into an sse_msg, which every stream it goes to queues by reference;
 * the last stream to send it frees it. A pool counts the bytes all queues
 * hold: each message once, plus one pointer per queued entry, so that a cap
 * on the pool is a cap on the memory the streams hold, however many of them
 * share an event.
 *
 * Not thread-safe: the hub's lock guards every pool, queue and message.
 */
#ifndef BGT_SSE_QUEUE_H
#define BGT_SSE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

/* One formatted event (or comment), shared. */
typedef struct sse_msg {
    int refs;    /* queues (and holders) that reference it */
    size_t len;  /* bytes of text */
    char text[]; /* not NUL-terminated */
} sse_msg;

/* The bytes held by every queue that counts into it. */
typedef struct sse_pool {
    size_t bytes;
} sse_pool;

/* One stream's queue: a ring of messages, the first one partly sent. */
typedef struct sse_queue {
    sse_msg **v;
    size_t head, n, cap;
    size_t off;     /* bytes of v[head] already sent */
    size_t backlog; /* bytes not sent yet */
} sse_queue;

/* A message holding a copy of text[0..len) with no reference yet, or NULL for NULL text. */
sse_msg *sse_msg_new(const char *text, size_t len);
/* Take a reference (the pool counts the message from its first one). */
void sse_msg_ref(sse_pool *p, sse_msg *m);
/* Give one back; the last one frees m. */
void sse_msg_unref(sse_pool *p, sse_msg *m);
/* Free m if nobody took a reference to it. NULL is fine. */
void sse_msg_discard(sse_msg *m);

/* Queue m (a reference is taken). */
void sse_queue_push(sse_pool *p, sse_queue *q, sse_msg *m);
/* Copy up to max unsent bytes into buf and mark them sent; returns the count. */
size_t sse_queue_read(sse_pool *p, sse_queue *q, char *buf, size_t max);
/* Drop what is queued, except the rest of a message that is partly sent when
 * keep_partial (so the stream stays well-formed). */
void sse_queue_drop(sse_pool *p, sse_queue *q, bool keep_partial);
/* Drop everything and free the ring. */
void sse_queue_free(sse_pool *p, sse_queue *q);

#endif

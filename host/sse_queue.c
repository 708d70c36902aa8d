/* sse_queue.c - shared SSE messages, per-stream rings of them, and the bytes they hold. */
#include "sse_queue.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

/* What a message costs the pool, header included. */
static size_t msg_size(const sse_msg *m) { return sizeof *m + m->len; }

sse_msg *sse_msg_new(const char *text, size_t len)
{
    if (!text)
        return NULL;
    sse_msg *m = xmalloc(sizeof *m + len);
    m->refs = 0;
    m->len = len;
    memcpy(m->text, text, len);
    return m;
}

void sse_msg_ref(sse_pool *p, sse_msg *m)
{
    if (m->refs++ == 0)
        p->bytes += msg_size(m);
}

void sse_msg_unref(sse_pool *p, sse_msg *m)
{
    if (--m->refs > 0)
        return;
    p->bytes -= msg_size(m);
    free(m);
}

void sse_msg_discard(sse_msg *m)
{
    if (m && m->refs == 0)
        free(m);
}

void sse_queue_push(sse_pool *p, sse_queue *q, sse_msg *m)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 8;
        sse_msg **v = xmalloc(cap * sizeof *v);
        for (size_t i = 0; i < q->n; i++)
            v[i] = q->v[(q->head + i) % q->cap];
        free(q->v);
        q->v = v;
        q->cap = cap;
        q->head = 0;
    }
    q->v[(q->head + q->n) % q->cap] = m;
    q->n++;
    q->backlog += m->len;
    p->bytes += sizeof *q->v;
    sse_msg_ref(p, m);
}

/* Take the first message, wholly sent, off q. */
static void pop_sent(sse_pool *p, sse_queue *q)
{
    sse_msg *m = q->v[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    q->off = 0;
    p->bytes -= sizeof *q->v;
    sse_msg_unref(p, m);
}

size_t sse_queue_read(sse_pool *p, sse_queue *q, char *buf, size_t max)
{
    size_t done = 0;
    while (q->n && done < max) {
        const sse_msg *m = q->v[q->head];
        size_t k = m->len - q->off;
        if (k > max - done)
            k = max - done;
        memcpy(buf + done, m->text + q->off, k);
        done += k;
        q->off += k;
        q->backlog -= k;
        if (q->off == m->len)
            pop_sent(p, q);
    }
    return done;
}

void sse_queue_drop(sse_pool *p, sse_queue *q, bool keep_partial)
{
    size_t keep = keep_partial && q->n && q->off > 0 ? 1 : 0;
    while (q->n > keep) {
        /* Take the last one off, leaving a partly sent first one. */
        size_t last = (q->head + q->n - 1) % q->cap;
        sse_msg *m = q->v[last];
        q->backlog -= q->n == 1 ? m->len - q->off : m->len;
        q->n--;
        p->bytes -= sizeof *q->v;
        sse_msg_unref(p, m);
    }
    if (q->n == 0)
        q->off = 0;
}

void sse_queue_free(sse_pool *p, sse_queue *q)
{
    sse_queue_drop(p, q, false);
    free(q->v);
    memset(q, 0, sizeof *q);
}

/*
 * ipc.c - frames of the host-worker protocol (see ipc.h): building them,
 * reading their fields with bounds checks, and moving them over a socket.
 */
#include "ipc.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

const char *ipc_type_name(int type)
{
    switch (type) {
    case IPC_INIT: return "INIT";
    case IPC_CALL: return "CALL";
    case IPC_CANCEL: return "CANCEL";
    case IPC_SUBMITTED: return "SUBMITTED";
    case IPC_READY: return "READY";
    case IPC_FAILED: return "FAILED";
    case IPC_PROGRESS: return "PROGRESS";
    case IPC_LOG: return "LOG";
    case IPC_SUBMIT: return "SUBMIT";
    case IPC_SUBTASKS: return "SUBTASKS";
    case IPC_DONE: return "DONE";
    case IPC_NOTE: return "NOTE";
    case IPC_WAKE: return "WAKE";
    default: return "unknown";
    }
}

/* ---- building ---- */

static void grow(uint8_t **data, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    *data = xrealloc(*data, c);
    *cap = c;
}

static void put(ipc_buf *b, const void *p, size_t n)
{
    grow(&b->data, &b->cap, b->len + n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void ipc_begin(ipc_buf *b, int type)
{
    uint8_t h[IPC_HEADER] = {0, 0, 0, 0, (uint8_t)type, IPC_VERSION, 0, 0};
    b->len = 0;
    put(b, h, sizeof h);
}

void ipc_put_u32(ipc_buf *b, uint32_t v) { put(b, &v, sizeof v); }

void ipc_put_f64(ipc_buf *b, double v) { put(b, &v, sizeof v); }

void ipc_put_str(ipc_buf *b, const char *s)
{
    size_t n = s ? strlen(s) + 1 : 0;
    ipc_put_u32(b, (uint32_t)n);
    if (n)
        put(b, s, n);
}

void ipc_end(ipc_buf *b)
{
    uint32_t n = (uint32_t)(b->len - IPC_HEADER);
    memcpy(b->data, &n, sizeof n);
}

void ipc_buf_free(ipc_buf *b)
{
    free(b->data);
    *b = (ipc_buf){0};
}

/* ---- reading fields ---- */

void ipc_rd_init(ipc_rd *r, const ipc_frame *f)
{
    *r = (ipc_rd){.p = f->p, .len = f->len};
}

/* Take n bytes, or mark the cursor bad. */
static const uint8_t *take(ipc_rd *r, const char *what, size_t n)
{
    if (r->bad)
        return NULL;
    if (r->len - r->off < n) {
        r->bad = true;
        r->what = what;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

bool ipc_get_u32(ipc_rd *r, const char *what, uint32_t *v)
{
    const uint8_t *p = take(r, what, sizeof *v);
    if (p)
        memcpy(v, p, sizeof *v);
    return p != NULL;
}

bool ipc_get_f64(ipc_rd *r, const char *what, double *v)
{
    const uint8_t *p = take(r, what, sizeof *v);
    if (!p)
        return false;
    memcpy(v, p, sizeof *v);
    if (!isfinite(*v)) {
        r->bad = true;
        r->what = what;
        return false;
    }
    return true;
}

bool ipc_get_str(ipc_rd *r, const char *what, bool null_ok, size_t max, const char **s)
{
    uint32_t n;
    *s = NULL;
    if (!ipc_get_u32(r, what, &n))
        return false;
    if (n == 0 && null_ok)
        return true;
    /* A string is its bytes and one NUL, which must be its last byte and its only one. */
    const uint8_t *p = n == 0 || n - 1 > max ? NULL : take(r, what, n);
    if (!p || p[n - 1] != 0 || memchr(p, 0, n - 1)) {
        r->bad = true;
        r->what = what;
        return false;
    }
    *s = (const char *)p;
    return true;
}

bool ipc_rd_done(ipc_rd *r, char *err, size_t errlen)
{
    if (r->bad) {
        snprintf(err, errlen, "field '%s' is missing, too long or malformed", r->what);
        return false;
    }
    if (r->off != r->len) {
        snprintf(err, errlen, "%zu bytes after the last field", r->len - r->off);
        return false;
    }
    return true;
}

/* ---- a connection ---- */

void ipc_conn_init(ipc_conn *c, int fd, size_t max)
{
    *c = (ipc_conn){.fd = fd, .max = max};
}

void ipc_conn_close(ipc_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->in);
    free(c->out);
    *c = (ipc_conn){.fd = -1};
}

/* One read of up to the free room of the buffer; flags for recv. */
static long fill(ipc_conn *c, int flags)
{
    /* Drop what was consumed, then make room for at least a header or the frame under way. */
    if (c->in_off) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    size_t want = c->in_len + 65536;
    if (c->in_len >= IPC_HEADER) {
        uint32_t n;
        memcpy(&n, c->in, sizeof n);
        if ((size_t)n + IPC_HEADER > want && n <= c->max)
            want = (size_t)n + IPC_HEADER;
    }
    grow(&c->in, &c->in_cap, want);
    for (;;) {
        size_t room = c->in_cap - c->in_len;
        ssize_t r = recv(c->fd, c->in + c->in_len, room, flags);
        if (r > 0) {
            c->in_len += (size_t)r;
            c->drained = (size_t)r < room;
            return r;
        }
        if (r == 0)
            return -EPIPE;
        if (errno == EINTR)
            continue;
        c->drained = errno == EWOULDBLOCK;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

long ipc_fill(ipc_conn *c) { return fill(c, 0); }

int ipc_drain(ipc_conn *c)
{
    for (;;) {
        long r = fill(c, MSG_DONTWAIT);
        if (r == -EAGAIN)
            return 0;
        if (r < 0)
            return (int)r;
        if (c->drained)
            return 0;
    }
}

static bool known_type(int t)
{
    return (t >= IPC_INIT && t <= IPC_SUBMITTED) || (t >= IPC_READY && t <= IPC_WAKE);
}

int ipc_next(ipc_conn *c, ipc_frame *f)
{
    size_t avail = c->in_len - c->in_off;
    if (avail < IPC_HEADER)
        return 0;
    const uint8_t *h = c->in + c->in_off;
    uint32_t n;
    memcpy(&n, h, sizeof n);
    if (h[5] != IPC_VERSION) {
        snprintf(c->err, sizeof c->err, "frame of protocol version %u, expected %d", h[5],
                 IPC_VERSION);
        return -EPROTO;
    }
    if (h[6] || h[7]) {
        snprintf(c->err, sizeof c->err, "frame header has reserved bytes set");
        return -EPROTO;
    }
    if (!known_type(h[4])) {
        snprintf(c->err, sizeof c->err, "frame of unknown type %u", h[4]);
        return -EPROTO;
    }
    if (n > c->max) {
        snprintf(c->err, sizeof c->err, "%s frame of %u bytes, over the limit of %zu",
                 ipc_type_name(h[4]), n, c->max);
        return -EPROTO;
    }
    if (avail - IPC_HEADER < n)
        return 0;
    *f = (ipc_frame){.type = h[4], .p = h + IPC_HEADER, .len = n};
    c->in_off += IPC_HEADER + n;
    return 1;
}

int ipc_recv(ipc_conn *c, ipc_frame *f)
{
    for (;;) {
        int rc = ipc_next(c, f);
        if (rc != 0)
            return rc;
        long r = ipc_fill(c);
        if (r < 0)
            return (int)r;
    }
}

int ipc_send(ipc_conn *c, const ipc_buf *b)
{
    size_t off = 0;
    while (off < b->len) {
        ssize_t w = send(c->fd, b->data + off, b->len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        off += (size_t)w;
    }
    return 0;
}

void ipc_queue(ipc_conn *c, const ipc_buf *b)
{
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    grow(&c->out, &c->out_cap, c->out_len + b->len);
    memcpy(c->out + c->out_len, b->data, b->len);
    c->out_len += b->len;
}

int ipc_flush(ipc_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        c->out_off += (size_t)w;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

bool ipc_pending(const ipc_conn *c) { return c->out_off < c->out_len; }

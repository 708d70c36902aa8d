/*
 * ipc.h - the protocol between bgtaskd and the worker processes of its
 * isolated plugins (`bgtaskd --worker`), over one AF_UNIX stream socketpair
 * and one shared page of memory (below). The worker's end of the socket is
 * its file descriptor 3 (IPC_WORKER_FD), the page its file descriptor 4
 * (IPC_PAGE_FD, a memfd it maps and then closes).
 *
 * Protocol version 3. Both ends are the same executable (the host starts
 * /proc/self/exe), so integers travel in native byte order. Every message is
 * one frame: an 8-byte header, then the payload.
 *
 *     offset  size  field
 *     0       4     payload length in bytes (u32); at most the receiver's limit
 *     4       1     type (IPC_* below)
 *     5       1     protocol version: IPC_VERSION
 *     6       2     zero
 *
 * A payload is a fixed sequence of fields per type, packed, nothing after the
 * last one:
 *     u32   4 bytes
 *     f64   8 bytes, IEEE 754, finite
 *     str   u32 n, then n bytes: the text and its terminating NUL (no other NUL);
 *           n = 0 is NULL, written "str?" where NULL is allowed
 *
 * Host -> worker
 *   INIT       u32 version, str plugin file, str? plugins folder (for the loader's
 *              checks of who could have written the file), str config (a JSON object),
 *              u32 max_args_bytes, u32 max_result_bytes, u32 max_subtasks,
 *              f64 progress gap (s), u32 log level, u32 seccomp (a seccomp_mode),
 *              f64 data limit (bytes for RLIMIT_DATA, 0: none)
 *   CALL       u32 call (its number on this connection, from 1 up), u32 op (IPC_OP_*),
 *              str task id, str handler, u32 attempt (bgt_attempt),
 *              u32 hook attempt (the task's attempt, for hooks), u32 subtask + 1 (0: none),
 *              f64 last current, f64 last total, str args (JSON; for MERGE the results)
 *   CANCEL     u32 call: that call should stop (bgt_cancelled() turns true), or not
 *              start at all if it has not
 *   SUBMITTED  u32 rc (0 or a negative errno), str id (the new task's, "" on failure)
 *
 * Worker -> host
 *   READY      str plugin name, str plugin version, u32 hooks, u32 n, then n times:
 *              str name, u32 kind, u32 flags (IPC_HF_*), u32 max_attempts,
 *              u32 parallelism, f64 timeout_s, u32 batch_size, u32 on_failure
 *   FAILED     str message: the load or init failed; the worker exits
 *   PROGRESS   f64 current, f64 total, str? message
 *   LOG        u32 level, u32 about (IPC_LOG_*), str text
 *   SUBMIT     str handler, str? args (a JSON object); answered by exactly one SUBMITTED
 *   SUBTASKS   u32 n, then n times str args: a split's bgt_add_subtask calls, in order
 *   DONE       u32 call, u32 status (a bgt_status), str? error, str? result (JSON)
 *   NOTE       str text: a crash note, sent by a worker that is about to die
 *   WAKE       nothing: a call ended in the page while the host slept (below)
 *
 * The page (ipc_page) holds the state of each call in flight, one 64-bit word
 * per call at index call % IPC_PAGE_CALLS: the call's number in the high 32
 * bits, its state in bits 8-15 and, once it ended there, its bgt_status in
 * bits 0-7. The host sets QUEUED before it writes the CALL. The worker moves
 * QUEUED to STARTED with a compare-and-swap before it runs the call, and the
 * host moves QUEUED to WITHDRAWN the same way to take a call back: exactly one
 * of them wins, so a call taken back never starts, and the host knows which
 * call a worker that died was running. The host gives a word to a new call
 * only once the call before in it ended or was taken back, so a worker that
 * finds a later call's number in the word of a call it is about to start
 * skips that call too. A call that ends without having sent a
 * frame and with no error text or result ends in the page (ENDED, with its
 * status) instead of with a DONE frame: a stream of short calls costs the
 * worker no system call while the host is awake. The host sets bell to 1
 * before its io thread sleeps and then looks at the page again; a worker
 * that ends a call in the page and swaps a 1 out of bell sends WAKE.
 *
 * Order. The host sends INIT first; the worker answers with LOG and SUBMIT
 * frames (its plugin's init runs), then one READY or FAILED. After READY the
 * host may send several CALLs without waiting (at most IPC_PAGE_CALLS in
 * flight): the worker runs them one at a time, in the order they came,
 * skipping those taken back (WITHDRAWN); for each it sends PROGRESS, LOG,
 * SUBMIT and (for a split) SUBTASKS frames, then ends it, with exactly one
 * DONE with its number or in the page, and only then starts the next. So a
 * frame the worker sends belongs to the oldest call that has neither ended
 * (by DONE or in the page) nor been taken back. A worker that is not running
 * a call sends nothing but NOTE and WAKE. Closing the host's end asks the
 * worker to exit (calls it has not started are dropped); a worker exits when
 * its end reads EOF.
 *
 * Cancelling. CANCEL may arrive at any time and is for the call running
 * (bgt_cancelled() turns true); one for a call that is not running is
 * ignored. A call that has not started is taken back in the page instead.
 *
 * Trust. The worker runs plugin code and is untrusted: the host checks every
 * frame (header, limit, each field's bounds, NUL terminators, finite numbers,
 * nothing left over, the type allowed at that point, a DONE's call number)
 * and every word of the page it acts on (the call's number, a known state, a
 * bgt_status), and one that fails any check ends that worker, never the host.
 * The page is that worker's alone: what it writes there touches its own
 * calls. The worker checks the host's frames the same way and exits on a bad
 * one.
 */
#ifndef BGT_IPC_H
#define BGT_IPC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IPC_VERSION 3
/* The worker's end of the socketpair. */
#define IPC_WORKER_FD 3
/* The shared page, as the worker gets it. */
#define IPC_PAGE_FD 4
#define IPC_HEADER 8
/* Calls in flight on one worker at most: the call words of the page. */
#define IPC_PAGE_CALLS 32
/* The size of the page's memfd. */
#define IPC_PAGE_SIZE 4096

/* The states of a call in the page. */
enum ipc_call_state {
    IPC_CS_QUEUED = 1,    /* the host wrote it; not started */
    IPC_CS_STARTED = 2,   /* the worker runs it */
    IPC_CS_WITHDRAWN = 3, /* the host took it back before it started */
    IPC_CS_ENDED = 4,     /* it ended with the status in the low byte; no DONE follows */
};

/* The page shared by the host and one worker (its first bytes; the rest stays zero). */
typedef struct ipc_page {
    _Atomic uint32_t bell; /* 1: the host's io thread sleeps, or is about to */
    uint32_t zero;
    _Atomic uint64_t call[IPC_PAGE_CALLS];
} ipc_page;

/* A word of the page: call number, state, status. */
static inline uint64_t ipc_word(uint32_t call, int state, int status)
{
    return (uint64_t)call << 32 | (uint64_t)(state & 0xff) << 8 | (uint64_t)(status & 0xff);
}
/* The largest payload the host sends a worker (a merge's results are the big ones). */
#define IPC_TO_WORKER_MAX (256u << 20)

enum ipc_type {
    IPC_INIT = 1,
    IPC_CALL = 2,
    IPC_CANCEL = 3,
    IPC_SUBMITTED = 4,
    IPC_READY = 64,
    IPC_FAILED = 65,
    IPC_PROGRESS = 66,
    IPC_LOG = 67,
    IPC_SUBMIT = 68,
    IPC_SUBTASKS = 69,
    IPC_DONE = 70,
    IPC_NOTE = 71,
    IPC_WAKE = 72,
};

/* What a CALL asks for. */
enum ipc_op { IPC_OP_RUN = 0, IPC_OP_SPLIT = 1, IPC_OP_MERGE = 2 };

/* READY: flags of a handler. */
#define IPC_HF_SPLIT 0x1
#define IPC_HF_MERGE 0x2
#define IPC_HF_NOT_RETRIABLE 0x4

/* LOG: what the line is about. */
enum { IPC_LOG_PLUGIN = 0, IPC_LOG_TASK = 1 };

/* The name of a frame type for messages ("CALL"), or "unknown". */
const char *ipc_type_name(int type);

/* ---- building a frame ---- */

/* A frame being built. Zero-initialise; ipc_buf_free releases it. */
typedef struct ipc_buf {
    uint8_t *data;
    size_t len, cap;
} ipc_buf;

/* Start a frame of this type in b (its previous content is dropped). */
void ipc_begin(ipc_buf *b, int type);
void ipc_put_u32(ipc_buf *b, uint32_t v);
void ipc_put_f64(ipc_buf *b, double v);
/* A str field; s may be NULL (a str? field). */
void ipc_put_str(ipc_buf *b, const char *s);
/* Finish the frame: writes its length into the header. */
void ipc_end(ipc_buf *b);
void ipc_buf_free(ipc_buf *b);

/* ---- reading a frame's fields ---- */

/* A received frame; its payload is borrowed from the connection's buffer. */
typedef struct ipc_frame {
    int type;
    const uint8_t *p;
    size_t len;
} ipc_frame;

/* A cursor over a payload. Once a get fails the cursor is bad and every later get fails. */
typedef struct ipc_rd {
    const uint8_t *p;
    size_t len, off;
    bool bad;
    const char *what; /* the first field that failed, for messages */
} ipc_rd;

void ipc_rd_init(ipc_rd *r, const ipc_frame *f);
bool ipc_get_u32(ipc_rd *r, const char *what, uint32_t *v);
/* A finite f64. */
bool ipc_get_f64(ipc_rd *r, const char *what, double *v);
/* A str field: *s points into the frame (NUL-terminated) or is NULL when the
 * field is NULL and null_ok; a NULL where !null_ok fails. max bounds strlen. */
bool ipc_get_str(ipc_rd *r, const char *what, bool null_ok, size_t max, const char **s);
/* True when every field was read and nothing is left over; else fills err. */
bool ipc_rd_done(ipc_rd *r, char *err, size_t errlen);

/* ---- a connection ---- */

/*
 * One end of the socketpair with its receive buffer and, for non-blocking
 * senders, a queue of bytes not written yet. Not thread-safe.
 */
typedef struct ipc_conn {
    int fd;
    size_t max;        /* the largest payload accepted from the other end */
    uint8_t *in;       /* received bytes: [in_off, in_len) not consumed yet */
    size_t in_len, in_off, in_cap;
    uint8_t *out;      /* queued bytes: [out_off, out_len) not written yet */
    size_t out_len, out_off, out_cap;
    bool drained;      /* the last ipc_fill took all there was (it read less than it could) */
    char err[200];     /* what went wrong, for the last -EPROTO */
} ipc_conn;

/* Set up c over fd (owned by c from now on), accepting payloads up to max bytes. */
void ipc_conn_init(ipc_conn *c, int fd, size_t max);
/* Close the fd and free the buffers. */
void ipc_conn_close(ipc_conn *c);

/*
 * One read() into the receive buffer. Returns the bytes read (> 0), -EAGAIN
 * (nothing there: a non-blocking fd, or SO_RCVTIMEO passed), -EPIPE (the
 * other end closed) or another negative errno; c->drained tells whether it
 * took everything the socket held. Frames taken earlier with ipc_next become
 * invalid.
 */
long ipc_fill(ipc_conn *c);
/*
 * Read everything the socket holds now, without waiting (MSG_DONTWAIT).
 * 0, -EPIPE (the other end closed) or another negative errno.
 */
int ipc_drain(ipc_conn *c);
/*
 * Take the next whole frame out of the receive buffer. Returns 1 and fills f
 * (valid until the next ipc_fill), 0 when no whole frame is there yet, or
 * -EPROTO for a bad header (a wrong version, a length over c->max, a type
 * unknown to this protocol, reserved bits set), with c->err saying which.
 */
int ipc_next(ipc_conn *c, ipc_frame *f);
/* Read until a whole frame is there (blocking fd). 1, or -EPIPE, -EPROTO, ... */
int ipc_recv(ipc_conn *c, ipc_frame *f);

/* Write the whole frame b (blocking fd; retries on EINTR). 0, -EPIPE or another errno. */
int ipc_send(ipc_conn *c, const ipc_buf *b);
/* Queue frame b for ipc_flush (non-blocking senders). */
void ipc_queue(ipc_conn *c, const ipc_buf *b);
/* Write what is queued without blocking: 0 when all of it went, -EAGAIN when
 * some is left (wait for POLLOUT), -EPIPE or another errno. */
int ipc_flush(ipc_conn *c);
/* True when bytes are queued. */
bool ipc_pending(const ipc_conn *c);

#endif

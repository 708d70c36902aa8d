/*
 * worker_main.c - `bgtaskd --worker`: the process that runs an isolated plugin.
 *
 * Threads: the main thread reads the host's frames and runs one call at a
 * time, in the order the calls arrived; calls that arrive while one runs wait
 * in a queue (the host may send several). A plugin's own threads may call
 * the task API during a call. Sending is serialised by send_lock (a frame goes
 * out whole), reading by recv_lock: while a call runs, whoever needs the
 * host's answer (bgt_submit waiting for SUBMITTED, bgt_cancelled looking for
 * CANCEL at most every POLL_GAP_S) reads and handles what arrived. Before it
 * starts a call the main thread reads everything the socket holds, so a call
 * whose CANCEL the host wrote before that is skipped (ipc.h, "Order"). Progress is coalesced: at most one PROGRESS frame
 * per progress gap, the latest report wins, and the last one is sent before
 * DONE; a small flusher thread sends a report that would otherwise wait.
 *
 * A fatal signal (a crashing plugin) sends a NOTE saying what was running and,
 * when errno says an allocation had failed, that memory ran out; then the
 * signal kills the process as it would have, and the host reports it.
 */
#include "worker_main.h"

#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "hooks.h"
#include "ipc.h"
#include "plugin.h"
#include "registry.h"
#include "sandbox.h"
#include "util.h"

/* How often bgt_cancelled() looks at the socket for a CANCEL. */
#define POLL_GAP_S 0.005
/* A split's subtasks go to the host in frames of about this size. */
#define SUBTASKS_CHUNK (256u << 10)

/* Calls received and not started at most (the host sends ISO_DEPTH at most). */
#define QUEUE_MAX 1024

/* The call running: the worker's side of the opaque bgt_task a plugin sees. */
typedef struct wcall {
    uint32_t seq; /* its number on the connection */
    int op;       /* IPC_OP_* */
    char id[BGT_ID_LEN + 1];
    char handler[BGT_NAME_MAX + 1];
    uint32_t attempt;
    int subtask;
    double last_current, last_total;
    bgt_hook_info info;
    char *result; /* JSON text, or NULL */
    char *error;
    ipc_buf subs; /* a split's subtasks not sent yet: a SUBTASKS frame under way */
    uint32_t nsubs;
    int added;
} wcall;

static struct worker {
    ipc_conn conn;
    pthread_mutex_t send_lock, recv_lock;
    registry reg;
    struct bgt_plugin *plugin;
    char name[BGT_NAME_MAX + 1]; /* for log lines outside calls */
    size_t max_args, max_result, data_limit;
    int max_subtasks;
    double gap;
    bool in_init;
    bool filtered; /* a seccomp filter is installed */
    wcall call;             /* the one call, reused */
    _Atomic(wcall *) running; /* &call while a call runs, else NULL */
    atomic_int cancel;
    _Atomic int64_t polled_ns; /* when bgt_cancelled last read the socket */
    /* bgt_submit: one at a time; the answer is filled by whoever reads it. */
    pthread_mutex_t submit_lock;
    bool answered;
    int answer_rc;
    char answer_id[BGT_ID_LEN + 1];
    /* Progress not sent yet (guarded by prog_lock). */
    pthread_mutex_t prog_lock;
    pthread_cond_t prog_cond;
    bool pending, flusher;
    double p_current, p_total, p_sent_at;
    char *p_message;
    ipc_buf pbuf;
    ipc_buf dbuf; /* DONE frames, reused */
    /* Calls received and not started, oldest first (guarded by recv_lock). */
    struct queued {
        uint32_t seq;
        bool cancelled;  /* a CANCEL for it came first: it is answered without running */
        uint8_t *payload;
        size_t len;
    } queue[QUEUE_MAX];
    size_t nqueue;
} W = {
    .send_lock = PTHREAD_MUTEX_INITIALIZER,
    .recv_lock = PTHREAD_MUTEX_INITIALIZER,
    .submit_lock = PTHREAD_MUTEX_INITIALIZER,
    .prog_lock = PTHREAD_MUTEX_INITIALIZER,
    .prog_cond = PTHREAD_COND_INITIALIZER,
};

static const char *const op_names[] = {"run", "split", "merge"};

/* Something from the host or of this process is wrong beyond repair: say so and exit. */
__attribute__((format(printf, 1, 2), noreturn)) static void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(BGT_LOG_ERR, W.name, fmt, ap);
    va_end(ap);
    _exit(1);
}

static void send_frame(const ipc_buf *b)
{
    pthread_mutex_lock(&W.send_lock);
    int rc = ipc_send(&W.conn, b);
    pthread_mutex_unlock(&W.send_lock);
    /* The host closed its end: it has given up on this worker. */
    if (rc == -EPIPE)
        _exit(0);
    if (rc < 0)
        fatal("worker: writing to the host failed: %s", strerror(-rc));
}

/* ---- what the host sends during a call ---- */

/* Handle a frame of the host at any time: queue a CALL, mark a CANCEL, take a SUBMITTED.
 * recv_lock held. */
static void host_frame(const ipc_frame *f)
{
    char err[200];
    ipc_rd r;
    ipc_rd_init(&r, f);
    if (f->type == IPC_CALL) {
        uint32_t seq;
        if (!ipc_get_u32(&r, "call", &seq))
            fatal("worker: bad CALL from the host: no call number");
        if (W.nqueue == QUEUE_MAX)
            fatal("worker: more than %d calls queued by the host", QUEUE_MAX);
        uint8_t *copy = xmalloc(f->len);
        memcpy(copy, f->p, f->len);
        W.queue[W.nqueue++] = (struct queued){seq, false, copy, f->len};
        return;
    }
    if (f->type == IPC_CANCEL) {
        uint32_t seq;
        ipc_get_u32(&r, "call", &seq);
        if (!ipc_rd_done(&r, err, sizeof err))
            fatal("worker: bad CANCEL from the host: %s", err);
        wcall *c = atomic_load(&W.running);
        if (c && c->seq == seq)
            atomic_store(&W.cancel, 1);
        for (size_t i = 0; i < W.nqueue; i++)
            if (W.queue[i].seq == seq)
                W.queue[i].cancelled = true;
        return; /* or for a call that has ended */
    }
    if (f->type == IPC_SUBMITTED) {
        uint32_t rc;
        const char *id;
        ipc_get_u32(&r, "rc", &rc);
        ipc_get_str(&r, "id", false, BGT_ID_LEN, &id);
        if (!ipc_rd_done(&r, err, sizeof err))
            fatal("worker: bad SUBMITTED from the host: %s", err);
        W.answered = true;
        W.answer_rc = (int)(int32_t)rc;
        strlcpy_(W.answer_id, id, sizeof W.answer_id);
        return;
    }
    fatal("worker: unexpected %s frame from the host", ipc_type_name(f->type));
}

/* Handle every whole frame received. recv_lock held. */
static void handle_frames(void)
{
    ipc_frame f;
    int rc;
    while ((rc = ipc_next(&W.conn, &f)) == 1)
        host_frame(&f);
    if (rc < 0)
        fatal("worker: bad frame from the host: %s", W.conn.err);
}

/* Handle every frame the host has sent; with wait, first wait for one. recv_lock held. */
static void pump(bool wait)
{
    int handled = 0;
    for (;;) {
        ipc_frame f;
        int rc = ipc_next(&W.conn, &f);
        if (rc < 0)
            fatal("worker: bad frame from the host: %s", W.conn.err);
        if (rc == 1) {
            host_frame(&f);
            handled++;
            continue;
        }
        if (wait && handled)
            return;
        if (!wait) {
            struct pollfd p = {.fd = W.conn.fd, .events = POLLIN};
            if (poll(&p, 1, 0) <= 0)
                return;
        }
        long n = ipc_fill(&W.conn);
        if (n == -EPIPE)
            _exit(0); /* the host is gone or gave up on this worker */
        if (n < 0)
            fatal("worker: reading from the host failed: %s", strerror((int)-n));
    }
}

/* ---- progress ---- */

/* Send the pending progress report. prog_lock held. */
static void send_progress(void)
{
    ipc_begin(&W.pbuf, IPC_PROGRESS);
    ipc_put_f64(&W.pbuf, W.p_current);
    ipc_put_f64(&W.pbuf, W.p_total);
    ipc_put_str(&W.pbuf, W.p_message);
    ipc_end(&W.pbuf);
    W.pending = false;
    W.p_sent_at = mono_s();
    send_frame(&W.pbuf);
}

/* Sends a coalesced report once the gap since the last one has passed. */
static void *flusher_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&W.prog_lock);
    for (;;) {
        if (!W.pending) {
            pthread_cond_wait(&W.prog_cond, &W.prog_lock);
            continue;
        }
        double due = W.p_sent_at + W.gap;
        if (mono_s() >= due) {
            send_progress();
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double at = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + (due - mono_s());
        ts.tv_sec = (time_t)at;
        ts.tv_nsec = (long)((at - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&W.prog_cond, &W.prog_lock, &ts);
    }
    return NULL;
}

static void w_progress(bgt_task *t, double current, double total, const char *message)
{
    wcall *c = (wcall *)t;
    if (!isfinite(current) || !isfinite(total))
        return;
    hooks_plugins_progress(&W.reg, &c->info, current, total, message);
    char *copy = message ? strndup(message, 1024) : NULL;
    pthread_mutex_lock(&W.prog_lock);
    if (!atomic_load(&W.running)) {
        /* A plugin thread reporting after its call ended: nothing to report it for. */
        pthread_mutex_unlock(&W.prog_lock);
        free(copy);
        return;
    }
    W.p_current = current;
    W.p_total = total;
    free(W.p_message);
    W.p_message = copy;
    W.pending = true;
    if (mono_s() - W.p_sent_at >= W.gap) {
        send_progress();
    } else {
        if (!W.flusher) {
            pthread_t th;
            W.flusher = pthread_create(&th, NULL, flusher_main, NULL) == 0;
            if (W.flusher)
                pthread_detach(th);
        }
        pthread_cond_signal(&W.prog_cond);
    }
    pthread_mutex_unlock(&W.prog_lock);
}

/* ---- the task API of the worker ---- */

static const char *w_task_id(const bgt_task *t) { return ((const wcall *)t)->id; }
static const char *w_task_handler(const bgt_task *t) { return ((const wcall *)t)->handler; }
static uint32_t w_task_attempt(const bgt_task *t) { return ((const wcall *)t)->attempt; }
static int w_task_subtask(const bgt_task *t) { return ((const wcall *)t)->subtask; }

static void w_last_progress(const bgt_task *t, double *current, double *total)
{
    const wcall *c = (const wcall *)t;
    if (current)
        *current = c->last_current;
    if (total)
        *total = c->last_total;
}

static bool w_cancelled(const bgt_task *t)
{
    (void)t;
    if (atomic_load(&W.cancel) || !atomic_load(&W.running))
        return true;
    int64_t now = (int64_t)(mono_s() * 1e9);
    if (now - atomic_load(&W.polled_ns) < (int64_t)(POLL_GAP_S * 1e9))
        return false;
    /* Another thread reading for us is as good. */
    if (pthread_mutex_trylock(&W.recv_lock) == 0) {
        atomic_store(&W.polled_ns, now);
        pump(false);
        pthread_mutex_unlock(&W.recv_lock);
    }
    return atomic_load(&W.cancel) != 0;
}

static int w_set_result(bgt_task *t, const cJSON *result)
{
    wcall *c = (wcall *)t;
    if (!result)
        return -EINVAL;
    char *s = cJSON_PrintUnformatted(result);
    if (!s)
        return -ENOMEM;
    if (strlen(s) > W.max_result) {
        log_msg(BGT_LOG_WARNING, c->id, "result of %zu bytes is over the limit of %zu",
                strlen(s), W.max_result);
        free(s);
        return -E2BIG;
    }
    free(c->result);
    c->result = s;
    return 0;
}

static void w_set_error(bgt_task *t, const char *fmt, va_list ap)
{
    wcall *c = (wcall *)t;
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        return;
    if (strlen(s) > 4096)
        s[4096] = '\0';
    free(c->error);
    c->error = s;
}

/*
 * A log line: to the host in a LOG frame during init and during a call, so
 * the host attaches the plugin's name or the task's id; from a plugin thread
 * outside a call straight to stderr, which the worker shares with the host.
 */
static void send_log(int level, int about, const char *fmt, va_list ap)
{
    char text[2048];
    vsnprintf(text, sizeof text, fmt ? fmt : "", ap);
    if (level < BGT_LOG_ERR)
        level = BGT_LOG_ERR;
    if (level > BGT_LOG_DEBUG)
        level = BGT_LOG_DEBUG;
    if (!W.in_init && !atomic_load(&W.running)) {
        log_msg(level, W.name, "%s", text);
        return;
    }
    ipc_buf b = {0};
    ipc_begin(&b, IPC_LOG);
    ipc_put_u32(&b, (uint32_t)level);
    ipc_put_u32(&b, (uint32_t)about);
    ipc_put_str(&b, text);
    ipc_end(&b);
    send_frame(&b);
    ipc_buf_free(&b);
}

static void w_task_log(bgt_task *t, int level, const char *fmt, va_list ap)
{
    (void)t;
    send_log(level, IPC_LOG_TASK, fmt, ap);
}

static void w_plugin_log(struct bgt_plugin *p, int level, const char *fmt, va_list ap)
{
    (void)p;
    send_log(level, IPC_LOG_PLUGIN, fmt, ap);
}

/* bgt_submit: asks the host, which submits with its own connection, and waits for its answer. */
static int w_submit(bgt_task *t, const char *hname, const cJSON *args, char *id_out)
{
    (void)t;
    if (!W.in_init && !atomic_load(&W.running)) {
        log_msg(BGT_LOG_WARNING, W.name, "bgt_submit outside init and outside a call: refused "
                "(an isolated plugin submits through its host, which listens only then)");
        return -EPERM;
    }
    if (!hname || !name_valid(hname) || (args && !cJSON_IsObject(args)))
        return -EINVAL;
    char *text = args ? cJSON_PrintUnformatted(args) : NULL;
    if (args && !text)
        return -ENOMEM;
    if (text && strlen(text) > W.max_args) {
        free(text);
        return -E2BIG;
    }
    pthread_mutex_lock(&W.submit_lock);
    ipc_buf b = {0};
    ipc_begin(&b, IPC_SUBMIT);
    ipc_put_str(&b, hname);
    ipc_put_str(&b, text);
    ipc_end(&b);
    pthread_mutex_lock(&W.recv_lock);
    W.answered = false;
    pthread_mutex_unlock(&W.recv_lock);
    send_frame(&b);
    ipc_buf_free(&b);
    free(text);
    pthread_mutex_lock(&W.recv_lock);
    while (!W.answered)
        pump(true);
    int rc = W.answer_rc;
    if (rc == 0 && id_out)
        memcpy(id_out, W.answer_id, BGT_ID_LEN + 1);
    pthread_mutex_unlock(&W.recv_lock);
    pthread_mutex_unlock(&W.submit_lock);
    return rc;
}

/* Send the subtasks gathered so far in one SUBTASKS frame. */
static void flush_subtasks(wcall *c)
{
    if (c->nsubs == 0)
        return;
    memcpy(c->subs.data + IPC_HEADER, &c->nsubs, sizeof c->nsubs);
    ipc_end(&c->subs);
    send_frame(&c->subs);
    c->nsubs = 0;
}

static int w_add_subtask(bgt_task *t, const cJSON *args)
{
    wcall *c = (wcall *)t;
    if (c->op != IPC_OP_SPLIT || !atomic_load(&W.running))
        return -EPERM;
    if (!args)
        return -EINVAL;
    if (c->added >= W.max_subtasks)
        return -E2BIG;
    char *s = cJSON_PrintUnformatted(args);
    if (!s)
        return -ENOMEM;
    if (strlen(s) > W.max_args) {
        free(s);
        return -E2BIG;
    }
    if (c->nsubs == 0) {
        ipc_begin(&c->subs, IPC_SUBTASKS);
        ipc_put_u32(&c->subs, 0); /* the count, written when the frame is sent */
    }
    ipc_put_str(&c->subs, s);
    free(s);
    c->nsubs++;
    c->added++;
    if (c->subs.len >= SUBTASKS_CHUNK)
        flush_subtasks(c);
    return 0;
}

static const bgt_api worker_api = {
    .size = sizeof(bgt_api),
    .abi_major = BGT_ABI_MAJOR,
    .abi_minor = BGT_ABI_MINOR,
    .register_handler = plugin_api_register_handler,
    .register_hook = plugin_api_register_hook,
    .plugin_log = w_plugin_log,
    .task_id = w_task_id,
    .task_handler = w_task_handler,
    .task_attempt = w_task_attempt,
    .task_subtask = w_task_subtask,
    .progress = w_progress,
    .last_progress = w_last_progress,
    .cancelled = w_cancelled,
    .set_result = w_set_result,
    .set_error = w_set_error,
    .task_log = w_task_log,
    .submit = w_submit,
    .add_subtask = w_add_subtask,
};

/* ---- crash notes ---- */

/* Append s to buf (size n) at *len; async-signal-safe. */
static void note_add(char *buf, size_t n, size_t *len, const char *s)
{
    while (s && *s && *len + 1 < n)
        buf[(*len)++] = *s++;
    buf[*len] = '\0';
}

static void note_num(char *buf, size_t n, size_t *len, unsigned long v, unsigned base)
{
    char d[24];
    int i = 0;
    do {
        d[i++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v && i < (int)sizeof d);
    char out[25];
    for (int k = 0; k < i; k++)
        out[k] = d[i - 1 - k];
    out[i] = '\0';
    note_add(buf, n, len, out);
}

/* Send a NOTE frame built in place; async-signal-safe (skipped if a send is under way). */
static void send_note(const char *text)
{
    static uint8_t frame[IPC_HEADER + 4 + 1024];
    size_t n = strlen(text) + 1;
    if (n > 1024)
        n = 1024;
    uint32_t len = (uint32_t)(4 + n), sn = (uint32_t)n;
    memcpy(frame, &len, 4);
    frame[4] = IPC_NOTE;
    frame[5] = IPC_VERSION;
    frame[6] = frame[7] = 0;
    memcpy(frame + IPC_HEADER, &sn, 4);
    memcpy(frame + IPC_HEADER + 4, text, n);
    frame[IPC_HEADER + 4 + n - 1] = '\0';
    if (pthread_mutex_trylock(&W.send_lock) != 0)
        return;
    ssize_t w = write(W.conn.fd, frame, IPC_HEADER + 4 + n);
    (void)w;
    pthread_mutex_unlock(&W.send_lock);
}

/* What was running, for a note. */
static void note_where(char *buf, size_t n, size_t *len)
{
    wcall *c = atomic_load(&W.running);
    if (c) {
        note_add(buf, n, len, "in ");
        note_add(buf, n, len, op_names[c->op]);
        note_add(buf, n, len, " of ");
        note_add(buf, n, len, c->handler);
    } else {
        note_add(buf, n, len, W.in_init ? "in the plugin's init" : "between calls");
    }
}

static void on_fatal(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    int saved = errno;
    char text[512];
    size_t len = 0;
    text[0] = '\0';
    note_where(text, sizeof text, &len);
    if ((sig == SIGSEGV || sig == SIGBUS) && si) {
        note_add(text, sizeof text, &len, ", fault at address 0x");
        note_num(text, sizeof text, &len, (unsigned long)si->si_addr, 16);
    }
    if (saved == ENOMEM) {
        note_add(text, sizeof text, &len, "; out of memory: an allocation had failed");
        if (W.data_limit) {
            note_add(text, sizeof text, &len, " (memory_max ");
            note_num(text, sizeof text, &len, (unsigned long)(W.data_limit >> 20), 10);
            note_add(text, sizeof text, &len, " MiB, applied as RLIMIT_DATA)");
        }
    }
    send_note(text);
    /* SA_RESETHAND restored the default action: die of the same signal. */
    raise(sig);
}

/* exit() from plugin code (a call, or init): say so before the process goes. */
static void on_exit_note(void)
{
    if (!atomic_load(&W.running) && !W.in_init)
        return;
    char text[256];
    size_t len = 0;
    text[0] = '\0';
    note_add(text, sizeof text, &len, "the plugin called exit() ");
    note_where(text, sizeof text, &len);
    send_note(text);
}

static void install_crash_notes(void)
{
    static char stack[64 * 1024];
    stack_t ss = {.ss_sp = stack, .ss_size = sizeof stack};
    sigaltstack(&ss, NULL);
    struct sigaction sa = {.sa_sigaction = on_fatal,
                           .sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND};
    sigemptyset(&sa.sa_mask);
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS, SIGTRAP};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaction(sigs[i], &sa, NULL);
    atexit(on_exit_note);
}

/* ---- calls ---- */

/* Parse a CALL frame into W.call; *args gets its parsed args. */
static void take_call(const ipc_frame *f, cJSON **args)
{
    wcall *c = &W.call;
    ipc_rd r;
    uint32_t seq, op, attempt, hook_attempt, sub;
    const char *id, *hname, *text;
    char err[200];
    ipc_rd_init(&r, f);
    ipc_get_u32(&r, "call", &seq);
    ipc_get_u32(&r, "op", &op);
    ipc_get_str(&r, "task id", false, BGT_ID_LEN, &id);
    ipc_get_str(&r, "handler", false, BGT_NAME_MAX, &hname);
    ipc_get_u32(&r, "attempt", &attempt);
    ipc_get_u32(&r, "hook attempt", &hook_attempt);
    ipc_get_u32(&r, "subtask", &sub);
    ipc_get_f64(&r, "last current", &c->last_current);
    ipc_get_f64(&r, "last total", &c->last_total);
    ipc_get_str(&r, "args", false, IPC_TO_WORKER_MAX, &text);
    if (!ipc_rd_done(&r, err, sizeof err) || op > IPC_OP_MERGE)
        fatal("worker: bad CALL from the host: %s", r.bad ? err : "unknown op");
    c->seq = seq;
    c->op = (int)op;
    strlcpy_(c->id, id, sizeof c->id);
    strlcpy_(c->handler, hname, sizeof c->handler);
    c->attempt = attempt;
    c->subtask = (int)sub - 1;
    c->info = (bgt_hook_info){c->id, c->handler, hook_attempt, c->subtask};
    *args = cJSON_Parse(text);
}

/* Run the call in W.call and answer DONE. */
static void run_call(cJSON *args)
{
    wcall *c = &W.call;
    const handler *h = registry_find(&W.reg, c->handler);
    bgt_status status;
    double t0 = mono_s();
    atomic_store(&W.cancel, 0);
    atomic_store(&W.running, c);
    hooks_plugins_before(&W.reg, &c->info);
    if (!h || (c->op == IPC_OP_SPLIT && !h->def.split) || (c->op == IPC_OP_MERGE && !h->def.merge)) {
        c->error = xasprintf("worker of plugin %s has no %s function for handler '%s'", W.name,
                             op_names[c->op], c->handler);
        status = BGT_FAILED;
    } else if (!args) {
        c->error = xasprintf("the %s's input is not valid JSON", op_names[c->op]);
        status = BGT_FAILED;
    } else if (c->op == IPC_OP_RUN) {
        status = h->def.run((bgt_task *)c, args, h->def.udata);
    } else if (c->op == IPC_OP_SPLIT) {
        status = h->def.split((bgt_task *)c, args, h->def.udata);
    } else {
        status = h->def.merge((bgt_task *)c, args, h->def.udata);
    }
    hooks_plugins_after(&W.reg, &c->info, status, mono_s() - t0,
                        status == BGT_OK ? NULL : c->error);
    flush_subtasks(c);
    /* The last progress report goes before the outcome, and none after it. */
    pthread_mutex_lock(&W.prog_lock);
    if (W.pending)
        send_progress();
    atomic_store(&W.running, NULL);
    pthread_mutex_unlock(&W.prog_lock);

    ipc_begin(&W.dbuf, IPC_DONE);
    ipc_put_u32(&W.dbuf, c->seq);
    ipc_put_u32(&W.dbuf, (uint32_t)status);
    ipc_put_str(&W.dbuf, c->error);
    ipc_put_str(&W.dbuf, c->result);
    ipc_end(&W.dbuf);
    send_frame(&W.dbuf);
    free(c->result);
    free(c->error);
    c->result = c->error = NULL;
    c->nsubs = 0;
    c->added = 0;
}

/* Answer a call cancelled before it started, without running it. */
static void skip_call(uint32_t seq)
{
    ipc_begin(&W.dbuf, IPC_DONE);
    ipc_put_u32(&W.dbuf, seq);
    ipc_put_u32(&W.dbuf, BGT_CANCELLED);
    ipc_put_str(&W.dbuf, "cancelled before it started");
    ipc_put_str(&W.dbuf, NULL);
    ipc_end(&W.dbuf);
    send_frame(&W.dbuf);
}

/* ---- start ---- */

/* Send FAILED with the message and exit 1. */
__attribute__((noreturn)) static void init_failed(const char *msg)
{
    ipc_buf b = {0};
    ipc_begin(&b, IPC_FAILED);
    ipc_put_str(&b, msg);
    ipc_end(&b);
    send_frame(&b);
    ipc_buf_free(&b);
    _exit(1);
}

/* Tell the host what the plugin registered. */
static void send_ready(void)
{
    size_t n = registry_handlers(&W.reg, NULL, 0);
    const handler **hs = xcalloc(n + 1, sizeof *hs);
    n = registry_handlers(&W.reg, hs, n);
    ipc_buf b = {0};
    ipc_begin(&b, IPC_READY);
    ipc_put_str(&b, W.plugin->name);
    ipc_put_str(&b, W.plugin->version);
    ipc_put_u32(&b, (uint32_t)registry_hooks(&W.reg, NULL, 0));
    ipc_put_u32(&b, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        const bgt_handler_def *d = &hs[i]->def;
        ipc_put_str(&b, hs[i]->name);
        ipc_put_u32(&b, (uint32_t)d->kind);
        ipc_put_u32(&b, (d->split ? IPC_HF_SPLIT : 0) | (d->merge ? IPC_HF_MERGE : 0) |
                            (d->not_retriable ? IPC_HF_NOT_RETRIABLE : 0));
        ipc_put_u32(&b, (uint32_t)d->max_attempts);
        ipc_put_u32(&b, (uint32_t)d->parallelism);
        ipc_put_f64(&b, d->timeout_s);
        ipc_put_u32(&b, (uint32_t)d->batch_size);
        ipc_put_u32(&b, (uint32_t)d->on_failure);
    }
    ipc_end(&b);
    send_frame(&b);
    ipc_buf_free(&b);
    free(hs);
}

/* Read INIT, set the limits, load the plugin, answer READY (or FAILED and exit). */
static void start(void)
{
    ipc_frame f;
    int rc = ipc_recv(&W.conn, &f);
    if (rc < 0 || f.type != IPC_INIT)
        fatal("worker: expected INIT from the host, got %s",
              rc < 0 ? strerror(-rc) : ipc_type_name(f.type));
    ipc_rd r;
    uint32_t version, max_args, max_result, max_subtasks, level, seccomp;
    double gap, data_limit;
    const char *path, *dir, *config_text;
    char err[512];
    ipc_rd_init(&r, &f);
    ipc_get_u32(&r, "version", &version);
    ipc_get_str(&r, "plugin file", false, 4096, &path);
    ipc_get_str(&r, "plugins folder", true, 4096, &dir);
    ipc_get_str(&r, "config", false, IPC_TO_WORKER_MAX, &config_text);
    ipc_get_u32(&r, "max_args_bytes", &max_args);
    ipc_get_u32(&r, "max_result_bytes", &max_result);
    ipc_get_u32(&r, "max_subtasks", &max_subtasks);
    ipc_get_f64(&r, "progress gap", &gap);
    ipc_get_u32(&r, "log level", &level);
    ipc_get_u32(&r, "seccomp", &seccomp);
    ipc_get_f64(&r, "data limit", &data_limit);
    if (!ipc_rd_done(&r, err, sizeof err))
        fatal("worker: bad INIT from the host: %s", err);
    if (version != IPC_VERSION)
        init_failed("the host speaks another worker protocol version");
    W.max_args = max_args;
    W.max_result = max_result;
    W.max_subtasks = (int)max_subtasks;
    W.gap = gap;
    log_set_level((int)level);
    if (data_limit > 0) {
#if defined(__SANITIZE_ADDRESS__)
        /* The sanitizer's shadow memory is data: a worker under RLIMIT_DATA cannot run. */
        log_msg(BGT_LOG_WARNING, W.name, "memory_max is not enforced in a sanitizer build");
#else
        if ((rc = sandbox_limit_data((size_t)data_limit)) < 0) {
            snprintf(err, sizeof err, "cannot set RLIMIT_DATA: %s", strerror(-rc));
            init_failed(err);
        }
        W.data_limit = (size_t)data_limit;
#endif
    }
    if (seccomp > SECCOMP_NO_NETWORK)
        fatal("worker: bad seccomp mode %u from the host", seccomp);
    if (sandbox_seccomp((seccomp_mode)seccomp, err, sizeof err) < 0)
        init_failed(err);
    W.filtered = seccomp != SECCOMP_OFF;
    cJSON *config = cJSON_Parse(config_text);
    char *file = xstrdup(path), *folder = dir ? xstrdup(dir) : NULL;
    if (!cJSON_IsObject(config))
        init_failed("the plugin's config is not a JSON object");
    W.in_init = true;
    rc = plugin_load(file, folder, config, &W.reg, &worker_api, &W.plugin, err, sizeof err);
    W.in_init = false;
    cJSON_Delete(config);
    free(file);
    free(folder);
    if (rc < 0)
        init_failed(err);
    send_ready();
}

int worker_main(int argc, char **argv)
{
    if (argc != 4 || strcmp(argv[1], WORKER_ARG) != 0) {
        fprintf(stderr, "usage: bgtaskd " WORKER_ARG " NAME HOSTPID (started by bgtaskd)\n");
        return 2;
    }
    strlcpy_(W.name, argv[2], sizeof W.name);
    long host;
    /* Die with the host; a host gone before this line leaves us a new parent. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (!parse_long(argv[3], 1, 1L << 30, &host) || getppid() != (pid_t)host)
        return 1;
    /* Nothing of the host but the socket: no Redis connection, no listening socket. And
     * not the socket for a program the plugin runs: the host must see EOF when we die. */
    close_range(IPC_WORKER_FD + 1, ~0U, 0);
    fcntl(IPC_WORKER_FD, F_SETFD, FD_CLOEXEC);
    signal(SIGPIPE, SIG_IGN);
    /* The worker exits right after unloading its plugin: unmapping it first gains nothing. */
    setenv("BGT_NO_DLCLOSE", "1", 1);
    ipc_conn_init(&W.conn, IPC_WORKER_FD, IPC_TO_WORKER_MAX);
    registry_init(&W.reg);
    install_crash_notes();
    start();

    for (;;) {
        pthread_mutex_lock(&W.recv_lock);
        /* Everything there is, read after the last DONE went, before a call starts: a
         * CANCEL for it may be there. With no call queued, the read that waits for one is
         * that read (and all there was, unless it filled the buffer). */
        int rc;
        handle_frames();
        do {
            if (W.nqueue > 0) {
                rc = ipc_drain(&W.conn);
            } else {
                long n = ipc_fill(&W.conn);
                rc = n < 0 ? (int)n : W.conn.drained ? 0 : ipc_drain(&W.conn);
            }
            if (rc == 0)
                handle_frames();
        } while (rc == 0 && W.nqueue == 0);
        if (rc == -EPIPE) {
            pthread_mutex_unlock(&W.recv_lock);
            break; /* the host closed its end: retire */
        }
        if (rc < 0)
            fatal("worker: reading from the host failed: %s", strerror(-rc));
        struct queued q = W.queue[0];
        memmove(W.queue, W.queue + 1, --W.nqueue * sizeof *W.queue);
        pthread_mutex_unlock(&W.recv_lock);
        if (q.cancelled) {
            skip_call(q.seq);
        } else {
            cJSON *args;
            take_call(&(ipc_frame){.type = IPC_CALL, .p = q.payload, .len = q.len}, &args);
            run_call(args);
            cJSON_Delete(args);
        }
        free(q.payload);
    }
    plugin_unload(W.plugin);
    registry_destroy(&W.reg);
    ipc_conn_close(&W.conn);
    ipc_buf_free(&W.pbuf);
    ipc_buf_free(&W.dbuf);
    free(W.p_message);
    ipc_buf_free(&W.call.subs);
    /* A leak checker at exit traces the process, which the filter refuses: skip it. */
    if (W.filtered)
        _exit(0);
    return 0;
}

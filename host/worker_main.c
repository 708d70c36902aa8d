/*
 * worker_main.c - `bgtaskd --worker`: the process that runs an isolated plugin.
 *
 * Threads: the main thread reads the host's frames and runs one call at a
 * time, in the order the calls arrived; calls that arrive while one runs wait
 * in a queue (the host may send several). A plugin's own threads may call
 * the task API during a call. Sending is serialised by send_lock (a frame goes
 * out whole), reading by recv_lock: while a call runs, whoever needs the
 * host's answer (bgt_submit waiting for SUBMITTED, bgt_cancelled looking for
 * CANCEL at most every POLL_GAP_S) reads and handles what arrived. The main
 * thread starts a call only by marking it STARTED in the page it shares with
 * the host, and skips one the host took back there (ipc.h); a call that sent
 * nothing and has no error text or result ends in the page too, with no
 * system call unless the host's io thread sleeps. The task API a plugin gets
 * here is in worker_api.c.
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
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "hooks.h"
#include "ipc.h"
#include "plugin.h"
#include "registry.h"
#include "sandbox.h"
#include "util.h"
#include "worker_int.h"

struct worker W = {
    .send_lock = PTHREAD_MUTEX_INITIALIZER,
    .recv_lock = PTHREAD_MUTEX_INITIALIZER,
    .submit_lock = PTHREAD_MUTEX_INITIALIZER,
    .prog_lock = PTHREAD_MUTEX_INITIALIZER,
    .prog_cond = PTHREAD_COND_INITIALIZER,
};

static const char *const op_names[] = {"run", "split", "merge"};

void worker__fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(BGT_LOG_ERR, W.name, fmt, ap);
    va_end(ap);
    _exit(1);
}

void worker__send_frame(const ipc_buf *b)
{
    pthread_mutex_lock(&W.send_lock);
    int rc = ipc_send(&W.conn, b);
    W.sent++;
    pthread_mutex_unlock(&W.send_lock);
    /* The host closed its end: it has given up on this worker. */
    if (rc == -EPIPE)
        _exit(0);
    if (rc < 0)
        worker__fatal("worker: writing to the host failed: %s", strerror(-rc));
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
            worker__fatal("worker: bad CALL from the host: no call number");
        if (W.nqueue == QUEUE_MAX)
            worker__fatal("worker: more than %d calls queued by the host", QUEUE_MAX);
        uint8_t *copy = xmalloc(f->len);
        memcpy(copy, f->p, f->len);
        W.queue[W.nqueue++] = (struct queued){seq, copy, f->len};
        return;
    }
    if (f->type == IPC_CANCEL) {
        uint32_t seq;
        ipc_get_u32(&r, "call", &seq);
        if (!ipc_rd_done(&r, err, sizeof err))
            worker__fatal("worker: bad CANCEL from the host: %s", err);
        wcall *c = atomic_load(&W.running);
        if (c && c->seq == seq)
            atomic_store(&W.cancel, 1);
        return; /* or for a call that is not running (ipc.h, "Cancelling") */
    }
    if (f->type == IPC_SUBMITTED) {
        uint32_t rc;
        const char *id;
        ipc_get_u32(&r, "rc", &rc);
        ipc_get_str(&r, "id", false, BGT_ID_LEN, &id);
        if (!ipc_rd_done(&r, err, sizeof err))
            worker__fatal("worker: bad SUBMITTED from the host: %s", err);
        W.answered = true;
        W.answer_rc = (int)(int32_t)rc;
        strlcpy_(W.answer_id, id, sizeof W.answer_id);
        return;
    }
    worker__fatal("worker: unexpected %s frame from the host", ipc_type_name(f->type));
}

/* Handle every whole frame received. recv_lock held. */
static void handle_frames(void)
{
    ipc_frame f;
    int rc;
    while ((rc = ipc_next(&W.conn, &f)) == 1)
        host_frame(&f);
    if (rc < 0)
        worker__fatal("worker: bad frame from the host: %s", W.conn.err);
}

void worker__pump(bool wait)
{
    int handled = 0;
    for (;;) {
        ipc_frame f;
        int rc = ipc_next(&W.conn, &f);
        if (rc < 0)
            worker__fatal("worker: bad frame from the host: %s", W.conn.err);
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
            worker__fatal("worker: reading from the host failed: %s", strerror((int)-n));
    }
}

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
        worker__fatal("worker: bad CALL from the host: %s", r.bad ? err : "unknown op");
    c->seq = seq;
    c->op = (int)op;
    strlcpy_(c->id, id, sizeof c->id);
    strlcpy_(c->handler, hname, sizeof c->handler);
    c->attempt = attempt;
    c->subtask = (int)sub - 1;
    c->info = (bgt_hook_info){c->id, c->handler, hook_attempt, c->subtask};
    *args = cJSON_Parse(text);
}

/* Send the frames of a call's end: DONE, or WAKE after an end in the page. */
static void send_end(const wcall *c, bgt_status status, unsigned long sent_before)
{
    pthread_mutex_lock(&W.send_lock);
    bool quiet = W.sent == sent_before;
    pthread_mutex_unlock(&W.send_lock);
    if (quiet && !c->error && !c->result && (unsigned)status <= BGT_CANCELLED) {
        /* Nothing of it went by the socket: it ends in the page (ipc.h). */
        atomic_store(&W.page->call[c->seq % IPC_PAGE_CALLS],
                     ipc_word(c->seq, IPC_CS_ENDED, (int)status));
        if (atomic_exchange(&W.page->bell, 0) == 1) {
            ipc_begin(&W.dbuf, IPC_WAKE);
            ipc_end(&W.dbuf);
            worker__send_frame(&W.dbuf);
        }
        return;
    }
    ipc_begin(&W.dbuf, IPC_DONE);
    ipc_put_u32(&W.dbuf, c->seq);
    ipc_put_u32(&W.dbuf, (uint32_t)status);
    ipc_put_str(&W.dbuf, c->error);
    ipc_put_str(&W.dbuf, c->result);
    ipc_end(&W.dbuf);
    worker__send_frame(&W.dbuf);
}

/* Run the call in W.call and end it (send_end). */
static void run_call(cJSON *args)
{
    wcall *c = &W.call;
    const handler *h = registry_find(&W.reg, c->handler);
    bgt_status status;
    double t0 = mono_s();
    pthread_mutex_lock(&W.send_lock);
    unsigned long sent_before = W.sent;
    pthread_mutex_unlock(&W.send_lock);
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
    worker__flush_subtasks(c);
    /* The last progress report goes before the outcome, and none after it. */
    pthread_mutex_lock(&W.prog_lock);
    if (W.pending)
        worker__send_progress();
    atomic_store(&W.running, NULL);
    pthread_mutex_unlock(&W.prog_lock);

    send_end(c, status, sent_before);
    free(c->result);
    free(c->error);
    c->result = c->error = NULL;
    c->nsubs = 0;
    c->added = 0;
}

/*
 * Mark call seq STARTED in the page: true, or false when the host took it back (its word
 * says WITHDRAWN, or holds a later call: the host gives a word to another call only once the
 * one before ended or was taken back).
 */
static bool start_call(uint32_t seq)
{
    uint64_t want = ipc_word(seq, IPC_CS_QUEUED, 0);
    if (atomic_compare_exchange_strong(&W.page->call[seq % IPC_PAGE_CALLS], &want,
                                       ipc_word(seq, IPC_CS_STARTED, 0)))
        return true;
    if (want == ipc_word(seq, IPC_CS_WITHDRAWN, 0) || (uint32_t)(want >> 32) != seq)
        return false;
    worker__fatal("worker: call %u is neither queued nor taken back in the shared page", seq);
}

/* ---- start ---- */

/* Send FAILED with the message and exit 1. */
__attribute__((noreturn)) static void init_failed(const char *msg)
{
    ipc_buf b = {0};
    ipc_begin(&b, IPC_FAILED);
    ipc_put_str(&b, msg);
    ipc_end(&b);
    worker__send_frame(&b);
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
    worker__send_frame(&b);
    ipc_buf_free(&b);
    free(hs);
}

/* Read INIT, set the limits, load the plugin, answer READY (or FAILED and exit). */
static void start(void)
{
    ipc_frame f;
    int rc = ipc_recv(&W.conn, &f);
    if (rc < 0 || f.type != IPC_INIT)
        worker__fatal("worker: expected INIT from the host, got %s",
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
        worker__fatal("worker: bad INIT from the host: %s", err);
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
        worker__fatal("worker: bad seccomp mode %u from the host", seccomp);
    if (sandbox_seccomp((seccomp_mode)seccomp, err, sizeof err) < 0)
        init_failed(err);
    W.filtered = seccomp != SECCOMP_OFF;
    cJSON *config = cJSON_Parse(config_text);
    char *file = xstrdup(path), *folder = dir ? xstrdup(dir) : NULL;
    if (!cJSON_IsObject(config))
        init_failed("the plugin's config is not a JSON object");
    W.in_init = true;
    rc = plugin_load(file, folder, config, &W.reg, &worker__api, &W.plugin, err, sizeof err);
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
    /* The page shared with the host; its descriptor is not needed once it is mapped. */
    void *page = mmap(NULL, IPC_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, IPC_PAGE_FD, 0);
    if (page == MAP_FAILED) {
        fprintf(stderr, "bgtaskd --worker: cannot map the shared page (fd %d): %s\n",
                IPC_PAGE_FD, strerror(errno));
        return 1;
    }
    W.page = page;
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
        /* The calls received are run before the socket is read again: one taken back since
         * is skipped (start_call), and a CANCEL is for the call running. */
        int rc = 0;
        handle_frames();
        while (W.nqueue == 0) {
            long n = ipc_fill(&W.conn);
            if (n < 0) {
                rc = (int)n;
                break;
            }
            handle_frames();
        }
        if (rc == -EPIPE) {
            pthread_mutex_unlock(&W.recv_lock);
            break; /* the host closed its end: retire */
        }
        if (rc < 0)
            worker__fatal("worker: reading from the host failed: %s", strerror(-rc));
        struct queued q = W.queue[0];
        memmove(W.queue, W.queue + 1, --W.nqueue * sizeof *W.queue);
        pthread_mutex_unlock(&W.recv_lock);
        if (start_call(q.seq)) {
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

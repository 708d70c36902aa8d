/*
 * iso_io.c - the io thread of process isolation: the one reader of every
 * running worker's socket (epoll) and of the pages it shares with them. It
 * serves what the workers send through the host's task API: progress to the
 * host's bgt_progress of the real task (which throttles and persists it), logs
 * to the host's log, submissions to the host's bgt_submit, a split's subtasks
 * to bgt_add_subtask, the outcome to bgt_set_error / bgt_set_result; it takes
 * the calls that ended in a page (ipc.h), and then wakes the call's proxy or
 * hands the run back. Before it sleeps it rings every worker's bell, so that
 * a worker that ends a call in its page meanwhile wakes it with WAKE. Every
 * tick it looks at the stop flags of the calls in flight and pending: a call
 * told to stop (cancel, timeout, lost lease, shutdown) that has not started
 * is taken back in the page, one that runs gets a CANCEL frame, and
 * kill_grace later its worker gets SIGKILL; a call queued behind one that
 * runs long is taken back and given to another worker. It notices deaths
 * (end of file, or the process gone) and ends the call that was running (the
 * page says which) with the death, while the calls queued behind it, which
 * never started, go to other workers.
 *
 * A worker is untrusted: a frame that is malformed, too large or not allowed
 * at that point, or a word of its page that is not what the protocol allows,
 * ends the worker (counted as a death), never the host.
 */
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "api.h"
#include "isolate_int.h"
#include "task_api.h"
#include "util.h"

/* The grace a worker gets at shutdown, whatever kill_grace says: the manager releases an
 * attempt whose handler has not returned soon after the grace is over. */
#define SHUTDOWN_KILL_GRACE_S 1.0

void iso__set_error(bgt_task *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    host_api()->set_error(t, fmt, ap);
    va_end(ap);
}

/* Mark the call's worker as misbehaving: "protocol violation: <what>". Returns -EPROTO. */
__attribute__((format(printf, 2, 3))) static int violation(iso_call *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(c->violation, sizeof c->violation, "protocol violation: ");
    vsnprintf(c->violation + n, sizeof c->violation - (size_t)n, fmt, ap);
    va_end(ap);
    return -EPROTO;
}

static int on_progress(iso_call *c, const ipc_frame *f)
{
    ipc_rd r;
    double cur, total;
    const char *msg;
    char why[200];
    ipc_rd_init(&r, f);
    ipc_get_f64(&r, "current", &cur);
    ipc_get_f64(&r, "total", &total);
    ipc_get_str(&r, "message", true, 4096, &msg);
    if (!ipc_rd_done(&r, why, sizeof why))
        return violation(c, "malformed PROGRESS: %s", why);
    host_api()->progress(c->t, cur, total, msg);
    return 0;
}

/* A SUBTASKS frame: each item goes to the host's bgt_add_subtask. */
static int on_subtasks(iso_call *c, const ipc_frame *f)
{
    if (c->op != IPC_OP_SPLIT)
        return violation(c, "SUBTASKS frame outside a split");
    ipc_rd r;
    uint32_t n;
    char why[200];
    ipc_rd_init(&r, f);
    ipc_get_u32(&r, "count", &n);
    const bgt_config *cfg = c->pl->host->cfg;
    for (uint32_t i = 0; i < n && !r.bad; i++) {
        const char *text;
        if (!ipc_get_str(&r, "subtask args", false, cfg->max_args_bytes, &text))
            break;
        cJSON *item = cJSON_Parse(text);
        int rc = item ? host_api()->add_subtask(c->t, item) : -EINVAL;
        cJSON_Delete(item);
        if (rc < 0)
            return violation(c, "subtask refused by the host: %s", strerror(-rc));
    }
    if (!ipc_rd_done(&r, why, sizeof why))
        return violation(c, "malformed SUBTASKS: %s", why);
    return 0;
}

static int on_done(iso_call *c, const ipc_frame *f)
{
    ipc_rd r;
    uint32_t seq, status;
    const char *error, *result;
    char why[200];
    ipc_rd_init(&r, f);
    ipc_get_u32(&r, "call", &seq);
    ipc_get_u32(&r, "status", &status);
    ipc_get_str(&r, "error", true, 4096, &error);
    ipc_get_str(&r, "result", true, c->pl->host->cfg->max_result_bytes, &result);
    if (!ipc_rd_done(&r, why, sizeof why))
        return violation(c, "malformed DONE: %s", why);
    if (status > BGT_CANCELLED)
        return violation(c, "DONE with status %u, which is no bgt_status", status);
    if (seq != c->seq)
        return violation(c, "DONE for call %u, expected call %u", seq, c->seq);
    if (error)
        iso__set_error(c->t, "%s", error);
    if (result) {
        cJSON *res = cJSON_Parse(result);
        int rc = res ? host_api()->set_result(c->t, res) : -EINVAL;
        cJSON_Delete(res);
        if (rc < 0)
            return violation(c, "result refused by the host: %s",
                             rc == -EINVAL ? "not JSON" : strerror(-rc));
    }
    c->status = (bgt_status)status;
    return 1;
}

/* Handle one frame from the worker for call c: 1 for its DONE (c->status set), 0 for another,
 * or -EPROTO with c->violation set. */
static int on_frame(iso_call *c, const ipc_frame *f)
{
    char why[300];
    int rc;
    c->heard |= f->type != IPC_NOTE;
    switch (f->type) {
    case IPC_PROGRESS: return on_progress(c, f);
    case IPC_SUBTASKS: return on_subtasks(c, f);
    case IPC_DONE: return on_done(c, f);
    case IPC_LOG:
    case IPC_SUBMIT:
    case IPC_NOTE:
        rc = iso__serve(c->pl, c->s, c->t, f, c->note, sizeof c->note, why, sizeof why);
        return rc < 0 ? violation(c, "%s", why) : 0;
    default: return violation(c, "unexpected %s frame during a call", ipc_type_name(f->type));
    }
}

void iso__queue_cancel(iso_slot *s, iso_call *c)
{
    ipc_buf *b = &s->scratch;
    ipc_begin(b, IPC_CANCEL);
    ipc_put_u32(b, c->seq);
    ipc_end(b);
    ipc_queue(&s->conn, b);
}

void iso__watch(iso_host *h, iso_slot *s)
{
    struct epoll_event ev = {.events = EPOLLIN | (s->want_out ? EPOLLOUT : 0), .data.ptr = s};
    if (epoll_ctl(h->epfd, EPOLL_CTL_MOD, s->conn.fd, &ev) < 0 && errno == ENOENT)
        epoll_ctl(h->epfd, EPOLL_CTL_ADD, s->conn.fd, &ev);
}

int iso__flush(iso_host *h, iso_slot *s)
{
    if (s->conn.fd < 0)
        return -EPIPE;
    int rc = ipc_flush(&s->conn);
    if (rc == 0)
        s->unsent = 0;
    if ((rc == -EAGAIN) != s->want_out) {
        s->want_out = rc == -EAGAIN;
        iso__watch(h, s);
    }
    return rc;
}

/* Write what is queued for s. */
static void flush_slot(iso_host *h, iso_slot *s)
{
    pthread_mutex_lock(&s->send_lock);
    iso__flush(h, s);
    pthread_mutex_unlock(&s->send_lock);
}

/* How the attempt of c, whose worker died or was killed (killed) under it, ends. */
static bgt_status lost_status(iso_call *c, bool killed, const char *msg)
{
    if (killed) {
        if (task_api_stop_reason(c->t) == TASK_STOP_TIMEOUT) {
            iso__set_error(c->t, "timed out after %gs; killed after %g s (kill_grace)",
                           c->px->def.timeout_s, c->grace);
            return BGT_FAILED;
        }
        return BGT_CANCELLED;
    }
    iso__set_error(c->t, "%s", msg);
    /* Told to stop before it died: end as the stop says (the death is counted all the same). */
    if (task_api_stop_reason(c->t) != TASK_STOP_NONE)
        return BGT_CANCELLED;
    return (c->px->def.flags & IPC_HF_NOT_RETRIABLE) || c->op == IPC_OP_MERGE ? BGT_FAILED
                                                                              : BGT_RETRY;
}

/* The word of the page for call seq of s (s->page is set while s runs). */
static uint64_t page_word(const iso_slot *s, uint32_t seq)
{
    return atomic_load(&s->page->call[seq % ISO_DEPTH]);
}

/*
 * Take the ends the worker of s put in the page, in order: while the first call in its fifo
 * has ENDED there, finish it; a call taken back (withdrawn) is dropped. 0, or -EPROTO with
 * v saying what in the page is wrong (a word for another call, an unknown state or status).
 */
static int settle(iso_host *h, iso_slot *s, char *v, size_t vlen)
{
    iso_pool *pl = s->pool;
    pthread_mutex_lock(&h->lock);
    while (s->n > 0 && (s->state == SLOT_READY || s->state == SLOT_DRAINING) && s->page) {
        iso_entry e = s->fifo[s->first];
        uint64_t w = page_word(s, e.seq);
        uint32_t seq = (uint32_t)(w >> 32);
        int state = (int)(w >> 8 & 0xff), status = (int)(w & 0xff);
        if (!e.call) {
            iso__answered(pl, s, false, 0); /* taken back: it never starts */
            continue;
        }
        if (seq != e.seq || (w >> 16 & 0xffff) != 0 || state < IPC_CS_QUEUED ||
            state > IPC_CS_ENDED || state == IPC_CS_WITHDRAWN ||
            (state != IPC_CS_ENDED && status != 0) ||
            (state == IPC_CS_ENDED && status > BGT_CANCELLED)) {
            pthread_mutex_unlock(&h->lock);
            snprintf(v, vlen, "protocol violation: the shared page says %#llx for call %u",
                     (unsigned long long)w, e.seq);
            return -EPROTO;
        }
        if (state != IPC_CS_ENDED)
            break;
        size_t rss = 0;
        if (pl->conf.max_rss) {
            /* (only this thread takes calls off a fifo's front) */
            pthread_mutex_unlock(&h->lock);
            rss = iso__rss(s->pid);
            pthread_mutex_lock(&h->lock);
        }
        e.call->heard = true;
        iso__answered(pl, s, true, rss);
        iso__finish(e.call, (bgt_status)status);
    }
    pthread_mutex_unlock(&h->lock);
    return 0;
}

/*
 * The worker of s died, broke the protocol (violation, or its first call's) or was killed
 * (killed): bury it. The ends it put in the page count; then the call it was running ends
 * with the death; every other call in its fifo never started and goes to another worker,
 * and so does the first when the page says it had not started (and the worker sent nothing
 * of it, and no crash note from inside a call).
 */
static void slot_lost(iso_host *h, iso_slot *s, bool killed, const char *violation)
{
    char v[400];
    if (!violation && settle(h, s, v, sizeof v) < 0)
        violation = v;
    pthread_mutex_lock(&h->lock);
    iso_call *front = s->n > 0 ? s->fifo[s->first].call : NULL;
    bool queued = front && s->page &&
                  page_word(s, s->fifo[s->first].seq) ==
                      ipc_word(s->fifo[s->first].seq, IPC_CS_QUEUED, 0);
    pthread_mutex_unlock(&h->lock);
    if (!violation && front && front->violation[0])
        violation = front->violation;
    const char *note = front && front->note[0] ? front->note : s->note;
    bool between = !front || (queued && !killed && !front->heard && !violation &&
                              (!note[0] || strncmp(note, "between calls", 13) == 0));
    char msg[1600];
    pid_t pid = s->pid;
    iso__bury(s->pool, s, killed, violation, between ? "between calls" : NULL, note,
              between ? NULL : front, msg, sizeof msg);
    if (between)
        return;
    if (killed)
        log_msg(BGT_LOG_WARNING, host_api()->task_id(front->t),
                "worker %d of plugin %s did not stop within %g s of being told to: killed it",
                (int)pid, s->pool->name, front->grace);
    bgt_status st = lost_status(front, killed, msg);
    pthread_mutex_lock(&h->lock);
    iso__finish(front, st);
    pthread_mutex_unlock(&h->lock);
}

/* Whether s runs (its socket and page are there). */
static bool slot_live(iso_host *h, iso_slot *s)
{
    pthread_mutex_lock(&h->lock);
    bool live = (s->state == SLOT_READY || s->state == SLOT_DRAINING) && s->conn.fd >= 0;
    pthread_mutex_unlock(&h->lock);
    return live;
}

/* Read what s's worker sent and serve it, with the ends it put in the page. */
static void read_slot(iso_host *h, iso_slot *s)
{
    if (!slot_live(h, s))
        return;
    int rc = ipc_drain(&s->conn);
    ipc_frame f;
    int more;
    char v[400];
    while ((more = ipc_next(&s->conn, &f)) == 1) {
        /* A frame belongs to the first call that has not ended: the ends in the page
         * before it were put there before it was sent. */
        if (settle(h, s, v, sizeof v) < 0) {
            slot_lost(h, s, false, v);
            return;
        }
        if (!slot_live(h, s))
            return; /* retired: its end is closed */
        if (f.type == IPC_WAKE) {
            if (f.len == 0)
                continue;
            slot_lost(h, s, false, "protocol violation: a WAKE frame with a payload");
            return;
        }
        pthread_mutex_lock(&h->lock);
        iso_call *c = s->n > 0 ? s->fifo[s->first].call : NULL;
        pthread_mutex_unlock(&h->lock);
        if (!c) {
            /* Nothing may come between calls but a crash note. */
            char why[300];
            if (f.type == IPC_NOTE &&
                iso__serve(s->pool, s, NULL, &f, s->note, sizeof s->note, why, sizeof why) == 0)
                continue;
            snprintf(v, sizeof v, "protocol violation: %s frame with no call in flight",
                     ipc_type_name(f.type));
            slot_lost(h, s, false, v);
            return;
        }
        int r = on_frame(c, &f);
        if (r < 0) {
            slot_lost(h, s, false, NULL);
            return;
        }
        if (r == 1) {
            size_t rss = s->pool->conf.max_rss ? iso__rss(s->pid) : 0;
            pthread_mutex_lock(&h->lock);
            iso__answered(s->pool, s, true, rss);
            iso__finish(c, c->status);
            pthread_mutex_unlock(&h->lock);
            if (!slot_live(h, s))
                return; /* retired: its end is closed */
        }
    }
    if (more < 0) {
        snprintf(v, sizeof v, "protocol violation: %s", s->conn.err);
        slot_lost(h, s, false, v);
        return;
    }
    if (rc < 0) {
        slot_lost(h, s, false, NULL); /* its end closed: it died (or closed it on purpose) */
        return;
    }
    if (settle(h, s, v, sizeof v) < 0) {
        slot_lost(h, s, false, v);
        return;
    }
    flush_slot(h, s); /* calls queued for it, answers to SUBMIT */
}

/* End the pending calls of pl whose task was told to stop. Lock held. */
static void end_stopped_pending(iso_pool *pl)
{
    iso_call **pp = &pl->pending, *prev = NULL;
    while (*pp) {
        iso_call *c = *pp;
        if (!host_api()->cancelled(c->t)) {
            prev = c;
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        if (pl->pending_tail == c)
            pl->pending_tail = prev;
        pl->npending--;
        iso__finish(c, BGT_CANCELLED);
    }
}

/* What a tick found to do on a slot, outside the lock. */
enum { ACT_KILL, ACT_CHECK };

/*
 * Look at the calls in flight on s: take back (in the page) those told to stop or queued
 * behind a call that runs long, if they have not started; CANCEL the one running when it
 * was told to stop; say whether s must be killed (it did not stop within its grace) or
 * checked for death. Lock held.
 */
static int tick_slot(iso_host *h, iso_slot *s, double now)
{
    int act = ACT_CHECK, lead = -1;
    bool taken = false;
    pthread_mutex_lock(&s->send_lock);
    if (s->unsent)
        iso__flush(h, s); /* (calls are written as the worker ends calls; this is in case) */
    pthread_mutex_unlock(&s->send_lock);
    for (int i = 0; i < s->n && lead < 0; i++)
        if (s->fifo[(s->first + i) % ISO_DEPTH].call)
            lead = i;
    /* From the back: the calls taken back go to the head of the pending queue in order. */
    for (int i = s->n - 1; i >= 0; i--) {
        iso_entry *e = &s->fifo[(s->first + i) % ISO_DEPTH];
        iso_call *c = e->call;
        if (!c)
            continue;
        if (!c->stopping && host_api()->cancelled(c->t)) {
            c->stopping = true;
            c->stop_at = now;
            c->grace = task_api_stop_reason(c->t) == TASK_STOP_SHUTDOWN
                           ? fmin(s->pool->conf.kill_grace_s, SHUTDOWN_KILL_GRACE_S)
                           : s->pool->conf.kill_grace_s;
        }
        bool stuck = i != lead && now - s->front_since > ISO_REROUTE_S;
        if (!c->stopping && !stuck)
            continue;
        uint64_t want = ipc_word(e->seq, IPC_CS_QUEUED, 0);
        if (s->page && atomic_compare_exchange_strong(&s->page->call[e->seq % ISO_DEPTH], &want,
                                                      ipc_word(e->seq, IPC_CS_WITHDRAWN, 0))) {
            log_msg(BGT_LOG_DEBUG, host_api()->task_id(c->t), "call %u taken back from "
                    "worker %d, which had not started it", e->seq, (int)s->pid);
            iso__requeue(c); /* (one told to stop ends there, CANCELLED) */
            e->call = NULL;
            taken = true;
            continue;
        }
        if (c->stopping && !c->cancel_sent) {
            c->cancel_sent = true;
            pthread_mutex_lock(&s->send_lock);
            iso__queue_cancel(s, c);
            iso__flush(h, s);
            pthread_mutex_unlock(&s->send_lock);
        }
        if (i == lead && c->stopping && now >= fmax(c->stop_at, c->front_at) + c->grace)
            act = ACT_KILL;
    }
    if (taken)
        iso__dispatch(s->pool);
    return act;
}

/* Every tick: stop flags, withdrawals, and workers gone without closing their end. */
static void tick(iso_host *h, double now)
{
    pthread_mutex_lock(&h->lock);
    for (iso_pool *pl = h->pools; pl; pl = pl->next) {
        end_stopped_pending(pl);
        for (int i = 0; i < pl->nslots; i++) {
            iso_slot *s = &pl->slots[i];
            if ((s->state != SLOT_READY && s->state != SLOT_DRAINING) || s->n == 0)
                continue;
            int act = tick_slot(h, s, now);
            pid_t pid = s->pid;
            pthread_mutex_unlock(&h->lock);
            siginfo_t si = {0};
            if (act == ACT_KILL) {
                kill(pid, SIGKILL);
                slot_lost(h, s, true, NULL);
            } else if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                       si.si_pid == pid) {
                /* A process it forked may hold the socket open after the worker itself died
                 * (WNOWAIT: iso__bury reaps it). What it sent before is read first. */
                read_slot(h, s);
                pthread_mutex_lock(&h->lock);
                bool same = s->pid == pid;
                pthread_mutex_unlock(&h->lock);
                if (same)
                    slot_lost(h, s, false, NULL);
            }
            pthread_mutex_lock(&h->lock);
        }
    }
    pthread_mutex_unlock(&h->lock);
}

/*
 * Set (on, before the io thread sleeps) or clear (after it woke) the bell of every running
 * worker: one idle now may get a call from a proxy meanwhile. Setting them, look at the
 * pages of those with calls in flight again: the slots whose first call ended there or was
 * taken back meanwhile go in due (at most max, their count returned), to be settled before
 * any sleep (a worker that found its bell clear sent no WAKE).
 */
static int bells(iso_host *h, bool on, iso_slot **due, int max)
{
    int nd = 0;
    pthread_mutex_lock(&h->lock);
    for (iso_pool *pl = h->pools; pl; pl = pl->next)
        for (int i = 0; i < pl->nslots; i++) {
            iso_slot *s = &pl->slots[i];
            if ((s->state != SLOT_READY && s->state != SLOT_DRAINING) || !s->page)
                continue;
            atomic_store(&s->page->bell, on ? 1u : 0u);
            if (!on || nd == max || s->n == 0)
                continue;
            iso_entry e = s->fifo[s->first];
            uint64_t w = page_word(s, e.seq);
            if (!e.call || (w != ipc_word(e.seq, IPC_CS_QUEUED, 0) &&
                            w != ipc_word(e.seq, IPC_CS_STARTED, 0)))
                due[nd++] = s;
        }
    pthread_mutex_unlock(&h->lock);
    return nd;
}

/* Take the ends in s's page and write what is queued for it. */
static void settle_slot(iso_host *h, iso_slot *s)
{
    char v[400];
    if (!slot_live(h, s))
        return;
    if (settle(h, s, v, sizeof v) < 0) {
        slot_lost(h, s, false, v);
        return;
    }
    flush_slot(h, s);
}

void *iso__io_main(void *arg)
{
    iso_host *h = arg;
    prctl(PR_SET_NAME, "bgt-iso-io");
    struct epoll_event evs[64];
    iso_slot *due[64];
    double next_tick = mono_s() + ISO_TICK_S;
    for (;;) {
        int nd = bells(h, true, due, 64);
        int ms = nd ? 0 : (int)ceil(fmax(next_tick - mono_s(), 0) * 1000);
        int n = epoll_wait(h->epfd, evs, 64, ms);
        bells(h, false, NULL, 0);
        for (int i = 0; i < nd; i++)
            settle_slot(h, due[i]);
        pthread_mutex_lock(&h->lock);
        bool quit = h->quit;
        pthread_mutex_unlock(&h->lock);
        if (quit)
            break;
        for (int i = 0; i < n; i++) {
            iso_slot *s = evs[i].data.ptr;
            if (!s) {
                eventfd_t v;
                eventfd_read(h->wakefd, &v);
                continue;
            }
            if (evs[i].events & EPOLLOUT)
                flush_slot(h, s);
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                read_slot(h, s);
        }
        double now = mono_s();
        if (now >= next_tick) {
            tick(h, now);
            next_tick = now + ISO_TICK_S;
        }
        iso__hand_back(h);
    }
    return NULL;
}

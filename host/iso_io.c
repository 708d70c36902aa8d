/*
 * iso_io.c - the io thread of process isolation: the one reader of every
 * running worker's socket (epoll). It serves what the workers send through
 * the host's task API: progress to the host's bgt_progress of the real task
 * (which throttles and persists it), logs to the host's log, submissions to
 * the host's bgt_submit, a split's subtasks to bgt_add_subtask, the outcome to
 * bgt_set_error / bgt_set_result, and then wakes the call's proxy. Every tick
 * it looks at the stop flags of the calls in flight and pending: a call told
 * to stop (cancel, timeout, lost lease, shutdown) gets a CANCEL frame, and
 * kill_grace later its worker gets SIGKILL; a call queued behind one that
 * runs long is withdrawn and given to another worker. It notices deaths (end
 * of file, or the process gone) and ends the call that was running with the
 * death, while the calls queued behind it, which never started, go to other
 * workers.
 *
 * A worker is untrusted: a frame that is malformed, too large or not allowed
 * at that point ends the worker (counted as a death), never the host.
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

/*
 * A frame for a withdrawn call (seq), which the worker must have skipped: only its DONE, as
 * CANCELLED, or a crash note (into s->note). 1 for that DONE, 0 for a note, -EPROTO
 * otherwise with v saying why.
 */
static int on_withdrawn_frame(iso_slot *s, uint32_t seq, const ipc_frame *f, char *v,
                              size_t vlen)
{
    char why[300];
    if (f->type == IPC_NOTE) {
        if (iso__serve(s->pool, s, NULL, f, s->note, sizeof s->note, why, sizeof why) == 0)
            return 0;
        snprintf(v, vlen, "protocol violation: %s", why);
        return -EPROTO;
    }
    ipc_rd r;
    uint32_t got = 0, status = 0;
    const char *error, *result;
    ipc_rd_init(&r, f);
    ipc_get_u32(&r, "call", &got);
    ipc_get_u32(&r, "status", &status);
    ipc_get_str(&r, "error", true, 4096, &error);
    ipc_get_str(&r, "result", true, 0, &result);
    if (f->type != IPC_DONE || !ipc_rd_done(&r, why, sizeof why) || got != seq ||
        status != BGT_CANCELLED) {
        snprintf(v, vlen, "protocol violation: %s frame for call %u, which was withdrawn "
                 "before it started", ipc_type_name(f->type), seq);
        return -EPROTO;
    }
    return 1;
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

/*
 * The worker of s died, broke the protocol (violation, or its first call's) or was killed
 * (killed): bury it. The call it was running ends with the death; every other call in its
 * fifo never started and goes to another worker, and so does the first when the worker
 * died before reading it ("between calls", nothing heard).
 */
static void slot_lost(iso_host *h, iso_slot *s, bool killed, const char *violation)
{
    pthread_mutex_lock(&h->lock);
    iso_call *front = s->n > 0 ? s->fifo[s->first].call : NULL;
    pthread_mutex_unlock(&h->lock);
    if (!violation && front && front->violation[0])
        violation = front->violation;
    const char *note = front && front->note[0] ? front->note : s->note;
    bool between = !front || (!killed && !front->heard && !violation &&
                              strncmp(note, "between calls", 13) == 0);
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

/*
 * After a read that began at read_at, took everything there was and whose frames were
 * handled: withdraw the calls whose CANCEL was written whole 2 x IPC_READ_GAP_S or more
 * before that read began and that are still behind another. The worker had not answered
 * the call before them when the read ended, so it had not started them, and it reads the
 * CANCEL before it starts one (ipc.h): it will skip them. They go back to the pending
 * queue, in their order. Lock held.
 */
static void withdraw(iso_slot *s, double read_at)
{
    bool any = false;
    for (int i = s->n - 1; i >= 1; i--) {
        iso_entry *e = &s->fifo[(s->first + i) % ISO_DEPTH];
        if (e->call && e->call->cancel_at > 0 &&
            read_at >= e->call->cancel_at + 2 * IPC_READ_GAP_S) {
            log_msg(BGT_LOG_DEBUG, host_api()->task_id(e->call->t), "call %u taken back from "
                    "worker %d, which had not started it", e->seq, (int)s->pid);
            iso__requeue(e->call);
            e->call = NULL;
            any = true;
        }
    }
    if (any)
        iso__dispatch(s->pool);
}

/* Read what s's worker sent and serve it. */
static void read_slot(iso_host *h, iso_slot *s)
{
    iso_pool *pl = s->pool;
    pthread_mutex_lock(&h->lock);
    bool live = (s->state == SLOT_READY || s->state == SLOT_DRAINING) && s->conn.fd >= 0;
    pthread_mutex_unlock(&h->lock);
    if (!live)
        return;
    double read_at = mono_s();
    int rc = ipc_drain(&s->conn);
    ipc_frame f;
    int more;
    char v[400];
    while ((more = ipc_next(&s->conn, &f)) == 1) {
        pthread_mutex_lock(&h->lock);
        bool any = s->n > 0;
        iso_entry e = any ? s->fifo[s->first] : (iso_entry){0, NULL};
        pthread_mutex_unlock(&h->lock);
        if (!any) {
            /* Nothing may follow a DONE but a crash note. */
            if (f.type == IPC_NOTE && on_withdrawn_frame(s, 0, &f, v, sizeof v) == 0)
                continue;
            snprintf(v, sizeof v, "protocol violation: %s frame after DONE, with no call in "
                     "flight", ipc_type_name(f.type));
            slot_lost(h, s, false, v);
            return;
        }
        if (!e.call) {
            int w = on_withdrawn_frame(s, e.seq, &f, v, sizeof v);
            if (w < 0) {
                slot_lost(h, s, false, v);
                return;
            }
            if (w == 1) {
                pthread_mutex_lock(&h->lock);
                iso__answered(pl, s, false, 0);
                live = s->state == SLOT_READY || s->state == SLOT_DRAINING;
                pthread_mutex_unlock(&h->lock);
                if (!live)
                    return; /* retired: its end is closed */
            }
            continue;
        }
        int r = on_frame(e.call, &f);
        if (r < 0) {
            slot_lost(h, s, false, NULL);
            return;
        }
        if (r == 1) {
            size_t rss = pl->conf.max_rss ? iso__rss(s->pid) : 0;
            pthread_mutex_lock(&h->lock);
            iso__answered(pl, s, true, rss);
            iso__finish(e.call, e.call->status);
            live = s->state == SLOT_READY || s->state == SLOT_DRAINING;
            pthread_mutex_unlock(&h->lock);
            if (!live)
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
    flush_slot(h, s); /* answers to SUBMIT */
    pthread_mutex_lock(&h->lock);
    withdraw(s, read_at);
    pthread_mutex_unlock(&h->lock);
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
enum { ACT_NONE, ACT_READ, ACT_KILL, ACT_CHECK };

/* Look at the calls in flight on s: CANCEL those told to stop or stuck behind a long call;
 * say whether s must be killed, read (to withdraw calls) or checked for death. Lock held. */
static int tick_slot(iso_host *h, iso_slot *s, double now)
{
    int act = ACT_CHECK;
    pthread_mutex_lock(&s->send_lock);
    if (s->unsent)
        iso__flush(h, s); /* (calls are written at the worker's answers; this is in case) */
    pthread_mutex_unlock(&s->send_lock);
    for (int i = 0; i < s->n; i++) {
        iso_call *c = s->fifo[(s->first + i) % ISO_DEPTH].call;
        if (!c)
            continue;
        if (!c->stopping && host_api()->cancelled(c->t)) {
            c->stopping = true;
            c->stop_at = now;
            c->grace = task_api_stop_reason(c->t) == TASK_STOP_SHUTDOWN
                           ? fmin(s->pool->conf.kill_grace_s, SHUTDOWN_KILL_GRACE_S)
                           : s->pool->conf.kill_grace_s;
        }
        bool stuck = i > 0 && now - s->front_since > ISO_REROUTE_S;
        if ((c->stopping || stuck) && !c->cancel_sent) {
            c->cancel_sent = true;
            pthread_mutex_lock(&s->send_lock);
            iso__queue_cancel(s, c);
            if (iso__flush(h, s) == 0)
                c->cancel_at = mono_s();
            pthread_mutex_unlock(&s->send_lock);
        }
        if (i > 0 && c->cancel_at > 0)
            act = ACT_READ;
        if (i == 0 && c->stopping && now >= fmax(c->stop_at, c->front_at) + c->grace)
            return ACT_KILL;
    }
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
            } else if (act == ACT_READ) {
                read_slot(h, s);
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

void *iso__io_main(void *arg)
{
    iso_host *h = arg;
    prctl(PR_SET_NAME, "bgt-iso-io");
    struct epoll_event evs[64];
    double next_tick = mono_s() + ISO_TICK_S;
    for (;;) {
        int ms = (int)ceil(fmax(next_tick - mono_s(), 0) * 1000);
        int n = epoll_wait(h->epfd, evs, 64, ms);
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

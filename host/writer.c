/*
 * writer.c - the manager's writer thread: every Redis write a host makes for
 * its attempts goes through here, batched: outcomes (in the order they were
 * queued, each with its last progress), throttled progress, one heartbeat per
 * interval for all attempts, and the checks made by the host's own clock
 * (lease ran out, timeouts, the end of the shutdown grace).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "manager_int.h"
#include "util.h"

/*
 * Most writes in one script call. Redis runs a script to its end before
 * anything else, so a burst (the ends of thousands of subtasks) goes out in
 * calls of this size rather than as one call that blocks Redis for long.
 */
#define WRITE_BATCH_MAX 1000

/* No text: an offset in wbatch.text that is not there. */
#define NO_TEXT SIZE_MAX

/*
 * A batch of writes. The texts they carry (event payloads, progress messages)
 * are appended to one buffer, kept from batch to batch, and pointed at once
 * the batch is complete (the buffer may move while it grows).
 */
typedef struct wbatch {
    fin_item *items;
    bgt_task **tasks;
    size_t (*off)[3]; /* per item: progress message, progress event, ending event */
    size_t n, cap;
    ev_buf text;
} wbatch;

enum { OFF_PMSG, OFF_PEVENT, OFF_EVENT };

static fin_item *wbatch_add(wbatch *b, bgt_task *t)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->items = xrealloc(b->items, b->cap * sizeof *b->items);
        b->tasks = xrealloc(b->tasks, b->cap * sizeof *b->tasks);
        b->off = xrealloc(b->off, b->cap * sizeof *b->off);
    }
    memset(&b->items[b->n], 0, sizeof b->items[b->n]);
    b->tasks[b->n] = t;
    b->off[b->n][OFF_PMSG] = b->off[b->n][OFF_PEVENT] = b->off[b->n][OFF_EVENT] = NO_TEXT;
    return &b->items[b->n++];
}

/* Point every item at its texts, now that none is added any more. */
static void wbatch_seal(wbatch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        fin_item *f = &b->items[i];
        size_t *o = b->off[i];
        if (o[OFF_PMSG] != NO_TEXT)
            f->progress_message = b->text.s + o[OFF_PMSG];
        if (o[OFF_PEVENT] != NO_TEXT)
            f->progress_event = b->text.s + o[OFF_PEVENT];
        if (o[OFF_EVENT] != NO_TEXT)
            f->event_payload = b->text.s + o[OFF_EVENT];
    }
}

static void wbatch_reset(wbatch *b)
{
    b->n = 0;
    ev_buf_reset(&b->text);
}

static void wbatch_free(wbatch *b)
{
    free(b->items);
    free(b->tasks);
    free(b->off);
    ev_buf_free(&b->text);
}

/* Add t's pending progress (if any) to the last write of the batch. Lock held. */
static void take_progress(wbatch *b, bgt_task *t)
{
    if (!t->p_dirty)
        return;
    fin_item *f = &b->items[b->n - 1];
    size_t *o = b->off[b->n - 1];
    const char *message = t->p_message ? t->p_message : "";
    f->has_progress = true;
    f->current = t->p_current;
    f->total = t->p_total;
    o[OFF_PMSG] = ev_buf_add(&b->text, message);
    ev_head h = {t->id, t->handler, t->info.attempt, now_ms()};
    o[OFF_PEVENT] = t->par ? mgr__parallel_progress_event(t, &b->text, &h, message)
                           : ev_progress(&b->text, &h, t->p_current, t->p_total, message);
    t->p_dirty = false;
    t->p_written_at = mono_s();
}

/*
 * Collect what to write now: every queued outcome (with its last progress)
 * and the progress of running attempts whose interval has passed. Called with
 * the lock held.
 */
static void collect_writes(manager *m, wbatch *b, double now)
{
    while (m->writeq_head && b->n < WRITE_BATCH_MAX) {
        bgt_task *t = m->writeq_head;
        /* A dropped attempt is freed here, but not while writes of its subtasks that
         * point at it are in this batch: then it waits for the next round. */
        if (t->drop && t->par && b->n > 0)
            break;
        m->writeq_head = t->qnext;
        if (!m->writeq_head)
            m->writeq_tail = NULL;
        if (t->drop) {
            mgr__disown(m, t);
            mgr__task_free(t);
            continue;
        }
        fin_item *f = wbatch_add(b, t);
        take_progress(b, t);
        f->op = t->op;
        f->id = t->id;
        f->handler = t->handler;
        f->attempt = t->attempt;
        f->message = t->end_message ? t->end_message : "";
        f->backoff_ms = t->backoff_ms;
        f->retention_s = -1;
        if (t->op == FIN_SUBTASK) {
            /* Fenced by the task's claim; the subtask's own run count goes along. The
             * subtask's copies of the task's id and attempt (info.attempt), not the
             * task's: a task that lost its lease is freed while these still wait. */
            f->attempt = t->info.attempt;
            f->result = t->result;
            f->sub_index = t->subtask;
            f->sub_state = t->sub_state_name;
            f->sub_attempt = t->attempt;
        } else if (t->ev >= 0) {
            f->result = t->end == END_SUCCESS ? t->result : NULL;
            f->event_name = ev_name((ev_kind)t->ev);
            ev_head h = {t->id, t->handler, t->attempt, t->ended_ms};
            b->off[b->n - 1][OFF_EVENT] =
                ev_ending(&b->text, &h, (ev_kind)t->ev, f->message, f->result,
                          (const char *const *)t->errors, t->nerrors);
        }
    }
    for (bgt_task *t = m->owned; t; t = t->next) {
        if (!t->p_dirty || t->finishing || t->lost || t->released_stuck)
            continue;
        if (now - t->p_written_at < m->cfg->progress_interval_s)
            continue;
        fin_item *f = wbatch_add(b, t);
        take_progress(b, t);
        f->op = FIN_PROGRESS;
        f->id = t->id;
        f->handler = t->handler;
        f->attempt = t->attempt;
    }
    wbatch_seal(b);
}

/* Handle the answers to a batch of writes; frees finished attempts. */
static void writes_done(manager *m, wbatch *b)
{
    long progress = 0, fenced = 0;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < b->n; i++) {
        fin_item *f = &b->items[i];
        bgt_task *t = b->tasks[i];
        if (f->has_progress)
            progress++;
        if (f->rc == -ESTALE) {
            fenced++;
            if (f->op == FIN_SUBTASK)
                log_msg(BGT_LOG_WARNING, t->id,
                        "subtask %d: the task's lease was lost; its outcome was refused",
                        t->subtask);
            else if (f->op != FIN_PROGRESS)
                log_msg(BGT_LOG_WARNING, t->id,
                        "attempt %u lost its lease before its outcome was written; "
                        "the write was refused",
                        t->attempt);
            else if (!t->lost) {
                t->lost = true;
                atomic_store(&t->stop, STOP_LOST);
                log_msg(BGT_LOG_WARNING, t->id, "attempt %u lost its lease", t->attempt);
            }
        } else if (f->gave_up) {
            log_msg(BGT_LOG_NOTICE, t->id, "attempt %u asked to retry; gave up at max attempts",
                    t->attempt);
        } else if (f->op == FIN_SUBTASK) {
            log_msg(BGT_LOG_DEBUG, t->id, "subtask %d: %s", t->subtask,
                    t->sub_state_name);
        } else if (f->op != FIN_PROGRESS) {
            log_msg(BGT_LOG_INFO, t->id, "attempt %u: %s", t->attempt,
                    hooks_end_status(t->end));
        }
        if (f->op == FIN_SUBTASK) {
            mgr__task_free(t);
            b->tasks[i] = NULL;
        } else if (f->op != FIN_PROGRESS && !t->released_stuck) {
            mgr__disown(m, t);
            mgr__task_free(t);
            b->tasks[i] = NULL;
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (progress)
        metrics_inc(m->met, MC_PROGRESS_WRITES, progress);
    if (fenced)
        metrics_inc(m->met, MC_FENCED, fenced);
}

/* Put a batch that could not be written back at the head of the queues. */
static void writes_requeue(manager *m, wbatch *b)
{
    pthread_mutex_lock(&m->lock);
    for (size_t i = b->n; i-- > 0;) {
        bgt_task *t = b->tasks[i];
        fin_item *f = &b->items[i];
        if (f->has_progress && !t->p_dirty) {
            t->p_dirty = true; /* write it again next time (latest value wins) */
            t->p_written_at = 0;
        }
        if (f->op != FIN_PROGRESS) {
            t->qnext = m->writeq_head;
            m->writeq_head = t;
            if (!m->writeq_tail)
                m->writeq_tail = t;
        }
    }
    pthread_mutex_unlock(&m->lock);
}

/* One heartbeat for every attempt still held. */
static int heartbeat(manager *m)
{
    pthread_mutex_lock(&m->lock);
    size_t n = 0;
    for (bgt_task *t = m->owned; t; t = t->next)
        if (!t->lost && !t->released_stuck)
            n++;
    hb_item *items = xcalloc(n + 1, sizeof *items);
    bgt_task **tasks = xcalloc(n + 1, sizeof *tasks);
    size_t i = 0;
    for (bgt_task *t = m->owned; t; t = t->next)
        if (!t->lost && !t->released_stuck) {
            items[i] = (hb_item){t->id, t->handler, t->attempt, 0};
            tasks[i++] = t;
        }
    char *handlers = xstrdup(m->handler_list ? m->handler_list : "");
    /* The host's entry lives two heartbeats and a second: a host that stops
     * beating for that long is taken for dead and its attempts are claimable
     * then, before their leases run out. */
    double ttl = fmin(m->cfg->lease_s, 2 * m->cfg->heartbeat_s + 1.0);
    host_info hi = {m->host_id, m->machine, (int)getpid(), BGT_VERSION, handlers,
                    m->cfg->workers, m->nexecuting, m->started_ms, (int64_t)(ttl * 1000)};
    pthread_mutex_unlock(&m->lock);

    double sent = mono_s();
    int rc = store_heartbeat(m->st_write, &hi, items, n, (int64_t)(m->cfg->lease_s * 1000));
    if (rc == 0) {
        pthread_mutex_lock(&m->lock);
        m->entry_until = sent + ttl;
        for (i = 0; i < n; i++) {
            bgt_task *t = tasks[i];
            if (items[i].status == HB_LOST) {
                if (!t->lost && !t->finishing) {
                    t->lost = true;
                    atomic_store(&t->stop, STOP_LOST);
                    log_msg(BGT_LOG_WARNING, t->id,
                            "attempt %u lost its lease (another host may run it now)",
                            t->attempt);
                }
            } else {
                /* Not the lease: other hosts may bury this one and claim the attempt
                 * once its entry (ttl) runs out, which can come first. */
                double until = sent + ttl - LEASE_MARGIN_S(m->cfg);
                __atomic_store(&t->lease_until, &until, __ATOMIC_RELAXED);
                if (items[i].status == HB_CANCEL) {
                    int none = STOP_NONE;
                    if (atomic_compare_exchange_strong(&t->stop, &none, STOP_CANCEL))
                        log_msg(BGT_LOG_INFO, t->id, "cancel requested");
                }
            }
        }
        pthread_mutex_unlock(&m->lock);
    }
    free(handlers);
    free(items);
    free(tasks);
    return rc;
}

/*
 * Checks by the host's own clock: leases that ran out without renewal,
 * timeouts, the end of the shutdown grace. Called with the lock held.
 */
static void check_clocks(manager *m, double now)
{
    for (bgt_task *t = m->owned; t; t = t->next) {
        if (t->lost || t->finishing || t->released_stuck)
            continue;
        if (now > t->lease_until) {
            t->lost = true;
            atomic_store(&t->stop, STOP_LOST);
            log_msg(BGT_LOG_WARNING, t->id,
                    "attempt %u: lease ran out before it could be renewed; stopping it",
                    t->attempt);
            continue;
        }
        if ((t->executing || t->par) && t->deadline > 0 && now > t->deadline) {
            int none = STOP_NONE;
            if (atomic_compare_exchange_strong(&t->stop, &none, STOP_TIMEOUT))
                log_msg(BGT_LOG_NOTICE, t->id, "attempt %u timed out; stopping it", t->attempt);
        }
    }
    if (m->stopping && !m->force_stop && now >= m->grace_deadline) {
        m->force_stop = true;
        if (m->nexecuting)
            log_notice("shutdown grace over: asking %d running attempt(s) to stop",
                       m->nexecuting);
        for (bgt_task *t = m->owned; t; t = t->next)
            if (t->executing || t->par) {
                int none = STOP_NONE;
                atomic_compare_exchange_strong(&t->stop, &none, STOP_SHUTDOWN);
            }
    }
    if (m->force_stop && now >= m->grace_deadline + STUCK_GRACE_S) {
        /* Handlers that ignore the request: give their attempts back anyway. */
        for (bgt_task *t = m->owned; t; t = t->next)
            if ((t->executing || (t->par && t->par->inflight > 0)) && !t->released_stuck &&
                !t->lost && !t->finishing) {
                t->released_stuck = true;
                log_msg(BGT_LOG_WARNING, t->id,
                        "attempt %u did not stop within %.0fs; releasing it", t->attempt,
                        STUCK_GRACE_S);
                bgt_task *r = xcalloc(1, sizeof *r);
                memcpy(r->id, t->id, sizeof r->id);
                memcpy(r->handler, t->handler, sizeof r->handler);
                r->attempt = t->attempt;
                r->info = (bgt_hook_info){r->id, r->handler, r->attempt, -1};
                mgr__set_release(r, xasprintf("released by host %s at shutdown; attempt "
                                              "refunded",
                                              m->host_id));
                mgr__own(m, r);
                mgr__writeq_push(m, r);
            }
    }
}

/* Release attempts claimed but not started (shutdown). Called with the lock held. */
static void release_queued(manager *m)
{
    while (m->runq_head) {
        bgt_task *t = m->runq_head;
        m->runq_head = t->qnext;
        m->nqueued--;
        if (t->parent) {
            mgr__subtask_drop(m, t); /* its task is released when its running ones end */
            continue;
        }
        mgr__set_release(t, xasprintf("released by host %s at shutdown before it started",
                                      m->host_id));
        mgr__writeq_push(m, t);
    }
    m->runq_tail = NULL;
}

/*
 * Whether every attempt still owned was released while its handler went on
 * ignoring the stop request: those are written off and must not keep a
 * stopping host from exiting. Called with the lock held.
 */
static bool only_released_left(const manager *m)
{
    for (const bgt_task *t = m->owned; t; t = t->next)
        if (!t->released_stuck)
            return false;
    return true;
}

void *mgr__writer_main(void *arg)
{
    manager *m = arg;
    wbatch b = {0};
    double next_hb = 0, backoff = 0.05, last_ok = mono_s();
    bool was_down = false;
    pthread_mutex_lock(&m->lock);
    bgt_task **ready = NULL;
    size_t nready = 0, ready_cap = 0;
    for (;;) {
        double now = mono_s();
        check_clocks(m, now);
        if (m->stopping)
            release_queued(m);
        /* Parallel tasks: start subtasks whose retry is due, conclude those that are done. */
        nready = 0;
        for (bgt_task *t = m->owned; t; t = t->next)
            if (t->par && mgr__parallel_tick(m, t, now)) {
                if (nready == ready_cap) {
                    ready_cap = ready_cap ? ready_cap * 2 : 8;
                    ready = xrealloc(ready, ready_cap * sizeof *ready);
                }
                ready[nready++] = t;
            }
        if (nready) {
            pthread_mutex_unlock(&m->lock);
            for (size_t i = 0; i < nready; i++)
                mgr__parallel_conclude(m, ready[i]);
            pthread_mutex_lock(&m->lock);
            continue;
        }
        bool drained = m->stopping && !m->writeq_head && only_released_left(m);
        if (drained)
            break;
        collect_writes(m, &b, now);
        bool hb_due = now >= next_hb;
        if (b.n == 0 && !hb_due) {
            /* Sleep until the next heartbeat, or sooner when attempts need watching. */
            double wait = next_hb - now;
            if (m->nowned > 0)
                wait = fmin(wait, fmax(0.005, fmin(m->cfg->progress_interval_s, 0.25)));
            if (m->stopping)
                wait = fmin(wait, 0.05);
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double at = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + wait;
            ts.tv_sec = (time_t)at;
            ts.tv_nsec = (long)((at - (double)ts.tv_sec) * 1e9);
            pthread_cond_timedwait(&m->write_cond, &m->lock, &ts);
            continue;
        }
        pthread_mutex_unlock(&m->lock);

        int rc = 0;
        if (b.n) {
            rc = store_apply(m->st_write, m->host_id, b.items, b.n);
            if (rc == 0) {
                writes_done(m, &b);
            } else {
                metrics_inc(m->met, MC_REDIS_ERRORS, 1);
                writes_requeue(m, &b);
            }
            wbatch_reset(&b);
        }
        if (rc == 0 && hb_due) {
            rc = heartbeat(m);
            if (rc == 0)
                next_hb = mono_s() + m->cfg->heartbeat_s;
            else
                metrics_inc(m->met, MC_REDIS_ERRORS, 1);
        }
        if (rc < 0) {
            if (!was_down)
                log_err("writing to redis failed: %s; retrying", store_errstr(m->st_write));
            was_down = true;
            /* Give up on an outage that outlasts the lease at shutdown: others own it now. */
            if (m->stopping && mono_s() - last_ok > m->cfg->lease_s + m->cfg->shutdown_grace_s) {
                log_err("redis unreachable for longer than the lease at shutdown; "
                        "leaving %d attempt(s) to be claimed again",
                        m->nowned);
                pthread_mutex_lock(&m->lock);
                break;
            }
            /* Short naps: the store paces reconnects itself, and the checks by the host's
             * own clock (a lease running out during the outage) must not wait for long. */
            sleep_s(backoff);
            backoff = fmin(backoff * 2, 0.25);
        } else {
            if (was_down)
                log_notice("redis is back: writes resumed");
            was_down = false;
            backoff = 0.05;
            last_ok = mono_s();
        }
        pthread_mutex_lock(&m->lock);
    }
    pthread_mutex_unlock(&m->lock);
    if (store_host_remove(m->st_write, m->host_id) < 0)
        log_warn("could not remove this host from the host list: %s", store_errstr(m->st_write));
    free(ready);
    wbatch_free(&b);
    pthread_mutex_lock(&m->lock);
    m->done = true;
    m->threads_exit = true;
    pthread_cond_broadcast(&m->work_cond);
    pthread_mutex_unlock(&m->lock);
    store_interrupt(m->st_ctl);
    return NULL;
}


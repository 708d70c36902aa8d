/*
 * writer.c - the manager's writer thread: every Redis write a host makes for
 * its attempts goes through here, batched: outcomes (in the order they were
 * queued, each with its last progress), throttled progress, and one heartbeat
 * per interval for every attempt held. It decides nothing: what it learns
 * (a lease lost, a cancel request) it reports through the attempts' flags,
 * and every attempt queued for it goes back to the manager on the done queue
 * once written (manager_int.h).
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
 * A batch of writes. The texts they carry (event bodies, progress messages)
 * are appended to one buffer, kept from batch to batch, and pointed at once
 * the batch is complete (the buffer may move while it grows).
 */
typedef struct wbatch {
    fin_item *items;
    bgt_task **tasks;
    size_t (*off)[3]; /* per item: progress message, progress event, ending event (bodies) */
    size_t n, cap;
    ev_buf text;
} wbatch;

/* Move t's log lines not written yet onto the last write of the batch (the write owns them
 * until it gives them back or frees them). (L) */
static void take_logs(wbatch *b, bgt_task *t)
{
    if (t->nlogs == 0 && t->logs_dropped == 0)
        return;
    fin_item *f = &b->items[b->n - 1];
    f->log_lines = t->logs;
    f->nlog = (size_t)t->nlogs;
    f->log_dropped = t->logs_dropped;
    t->logs = NULL;
    t->nlogs = t->logs_cap = 0;
    t->logs_dropped = 0;
}

/* Free the log lines of write f. */
static void free_logs(fin_item *f)
{
    for (size_t i = 0; i < f->nlog; i++)
        free(f->log_lines[i]);
    free(f->log_lines);
    f->log_lines = NULL;
    f->nlog = 0;
}

/* Give write f's log lines back to t, before those it got since (a write that could not be
 * sent). (L) */
static void give_logs_back(fin_item *f, bgt_task *t)
{
    if (!f->nlog && !f->log_dropped)
        return;
    size_t n = f->nlog + (size_t)t->nlogs;
    char **v = xcalloc(n + 1, sizeof *v);
    memcpy(v, f->log_lines, f->nlog * sizeof *v);
    if (t->nlogs)
        memcpy(v + f->nlog, t->logs, (size_t)t->nlogs * sizeof *v);
    free(t->logs);
    free(f->log_lines);
    f->log_lines = NULL;
    t->logs = v;
    t->nlogs = t->logs_cap = (int)n;
    t->logs_dropped += f->log_dropped;
    f->nlog = 0;
}

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
            f->progress_body = b->text.s + o[OFF_PEVENT];
        if (o[OFF_EVENT] != NO_TEXT)
            f->ev_body = b->text.s + o[OFF_EVENT];
    }
}

static void wbatch_reset(wbatch *b)
{
    for (size_t i = 0; i < b->n; i++)
        free_logs(&b->items[i]);
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

/* The progress event of a parallel task: with its subtasks, counted and running. (L) */
static size_t parallel_progress(ev_buf *text, const bgt_task *t, const char *message)
{
    const par *p = t->par;
    size_t off = ev_body_progress_sub_open(text, t->p_current, t->p_total, message, p->n,
                                           p->nsuccess, p->nfailure);
    for (int i = 0; i < p->n; i++)
        if (p->subs[i].state == PAR_RUNNING)
            ev_progress_sub_running(text, i, p->subs[i].frac);
    ev_body_progress_sub_close(text);
    return off;
}

/* Add t's pending progress (if any) to the last write of the batch. (L) */
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
    o[OFF_PEVENT] = t->par ? parallel_progress(&b->text, t, message)
                           : ev_body_progress(&b->text, t->p_current, t->p_total, message);
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
        m->writeq_head = t->qnext;
        m->nwriteq--;
        if (!m->writeq_head)
            m->writeq_tail = NULL;
        if (t->drop) {
            mgr__hand_back(m, t); /* nothing to write */
            continue;
        }
        fin_item *f = wbatch_add(b, t);
        take_progress(b, t);
        if (t->op != FIN_SUBTASK && t->op != FIN_LOST)
            take_logs(b, t);
        f->op = t->op;
        f->id = t->id;
        f->handler = t->handler;
        f->token = t->token;
        f->parallel = t->h && t->h->def.kind == BGT_PARALLEL;
        f->message = t->end_message ? t->end_message : "";
        f->backoff_ms = t->backoff_ms;
        f->ev = -1;
        if (t->op == FIN_SUBTASK) {
            /* Fenced by the task's claim (the subtask's copy of its token: a task that
             * lost its lease is freed while these still wait); the subtask's own run
             * count goes along. */
            f->result = t->result;
            f->sub_index = t->subtask;
            f->sub_state = t->sub_state_name;
            f->sub_attempt = t->attempt;
        } else if (t->ev >= 0) {
            f->result = t->end == END_SUCCESS ? t->result : NULL;
            f->partial = t->ev == EV_PARTIAL_SUCCESS;
            f->ev = t->ev;
            /* Every bgtask_updated carries the progress persisted (issue 8, item 12). */
            b->off[b->n - 1][OFF_EVENT] = ev_body_ending(&b->text, (ev_kind)t->ev, f->message,
                                                         f->result, (const char *const *)t->errors,
                                                         t->nerrors, t->p_current, t->p_total);
        }
    }
    for (bgt_task *t = m->owned; t; t = t->next) {
        bool logs = t->nlogs > 0 || t->logs_dropped > 0;
        if ((!t->p_dirty && !logs) || t->finishing || t->lost || t->released_stuck)
            continue;
        if (now - t->p_written_at < m->cfg->progress_interval_s)
            continue;
        fin_item *f = wbatch_add(b, t);
        take_progress(b, t);
        take_logs(b, t);
        if (!f->has_progress)
            t->p_written_at = now; /* lines alone: at most one write per interval too */
        f->op = FIN_PROGRESS;
        f->id = t->id;
        f->handler = t->handler;
        f->token = t->token;
        f->ev = -1;
    }
    wbatch_seal(b);
}

/* Handle the answers to a batch of writes; hand back what was queued. */
static void writes_done(manager *m, wbatch *b)
{
    long progress = 0, fenced = 0;
    mgr__lock(m);
    for (size_t i = 0; i < b->n; i++) {
        fin_item *f = &b->items[i];
        bgt_task *t = b->tasks[i];
        if (f->has_progress)
            progress++;
        if (f->op == FIN_LOST) {
            /* Not fenced out: the attempt was still held here, and is claimable again. */
            if (f->rc == 0)
                log_msg(BGT_LOG_NOTICE, t->id,
                        "attempt %u given up in redis too: the task may run again", t->attempt);
        } else if (f->rc == -ESTALE) {
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
            if (f->op == FIN_PROGRESS)
                t->refused = true;
        } else if (f->op == FIN_SUBTASK) {
            log_msg(BGT_LOG_DEBUG, t->id, "subtask %d: %s", t->subtask, t->sub_state_name);
        } else if (f->op != FIN_PROGRESS) {
            log_msg(BGT_LOG_INFO, t->id, "attempt %u: %s", t->attempt,
                    hooks_end_status(t->end, t->ev == EV_PARTIAL_SUCCESS));
        }
        if (f->op != FIN_PROGRESS) { /* it came from the write queue */
            mgr__hand_back(m, t);
            b->tasks[i] = NULL;
        }
    }
    mgr__unlock(m);
    if (progress)
        metrics_inc(m->met, MC_PROGRESS_WRITES, progress);
    if (fenced)
        metrics_inc(m->met, MC_FENCED, fenced);
}

/* Put a batch that could not be written back at the head of the queues. */
static void writes_requeue(manager *m, wbatch *b)
{
    mgr__lock(m);
    for (size_t i = b->n; i-- > 0;) {
        bgt_task *t = b->tasks[i];
        fin_item *f = &b->items[i];
        if (f->has_progress && !t->p_dirty) {
            t->p_dirty = true; /* write it again next time (latest value wins) */
            t->p_written_at = 0;
        }
        give_logs_back(f, t);
        if (f->op != FIN_PROGRESS) {
            t->qnext = m->writeq_head;
            m->writeq_head = t;
            m->nwriteq++;
            if (!m->writeq_tail)
                m->writeq_tail = t;
        }
    }
    mgr__unlock(m);
}

/*
 * Whether the heartbeat renews t: an attempt held and still running. One whose
 * outcome is queued (finishing) is left out: the writer writes it before its
 * next heartbeat, and it may be handed back and freed while a heartbeat is on
 * its way, which must not point at it.
 */
static bool beats(const bgt_task *t) { return !t->lost && !t->released_stuck && !t->finishing; }

/* One heartbeat for every attempt still held. */
static int heartbeat(manager *m)
{
    mgr__lock(m);
    size_t n = 0;
    for (bgt_task *t = m->owned; t; t = t->next)
        n += beats(t);
    hb_item *items = xcalloc(n + 1, sizeof *items);
    bgt_task **tasks = xcalloc(n + 1, sizeof *tasks);
    size_t i = 0;
    for (bgt_task *t = m->owned; t; t = t->next)
        if (beats(t)) {
            items[i] = (hb_item){t->id, t->token, 0};
            tasks[i++] = t;
        }
    char *handlers = xstrdup(m->handler_list ? m->handler_list : "");
    char *breakers = metrics_iso_breakers(m->met);
    /* The host's entries are the lease of all its attempts (mgr__entry_ttl). */
    double ttl = mgr__entry_ttl(m->cfg);
    host_info hi = {m->host_id,      m->machine,    (int)getpid(), BGT_VERSION,
                    handlers,        m->cfg->workers, m->nexecuting, m->started_ms,
                    (int64_t)(ttl * 1000), breakers};
    unsigned paused_gen = m->paused_gen;
    mgr__unlock(m);

    double sent = mono_s();
    int rc = store_heartbeat(m->st_write, &hi, items, n);
    mgr__log_store_warnings(m->st_write);
    metrics_health(m->met, MH_HEARTBEAT, rc < 0 ? store_errstr(m->st_write) : NULL);
    char *paused = store_take_paused(m->st_write);
    if (rc == 0) {
        mgr__lock(m);
        m->entry_until = sent + ttl;
        /* The paused handlers, unless the control channel told a change meanwhile. */
        if (paused && paused_gen == m->paused_gen)
            mgr__set_paused(m, paused);
        for (i = 0; i < n; i++) {
            bgt_task *t = tasks[i];
            if (items[i].status == HB_LOST) {
                t->refused = true;
                if (!t->lost && !t->finishing) {
                    t->lost = true;
                    atomic_store(&t->stop, STOP_LOST);
                    log_msg(BGT_LOG_WARNING, t->id,
                            "attempt %u lost its lease (another host may run it now)", t->attempt);
                }
            } else {
                /* Other hosts may bury this one and claim the attempt once its entries
                 * run out. */
                double until = sent + ttl - LEASE_MARGIN_S(m->cfg);
                __atomic_store(&t->lease_until, &until, __ATOMIC_RELAXED);
                if (items[i].status == HB_CANCEL) {
                    int none = STOP_NONE;
                    if (atomic_compare_exchange_strong(&t->stop, &none, STOP_CANCEL))
                        log_msg(BGT_LOG_INFO, t->id, "cancel requested");
                }
            }
        }
        mgr__unlock(m);
    }
    free(paused);
    free(handlers);
    free(breakers);
    free(items);
    free(tasks);
    return rc;
}

void *mgr__writer_main(void *arg)
{
    manager *m = arg;
    mgr__name_thread("bgt-writer");
    wbatch b = {0};
    double next_hb = 0, backoff = 0.05, last_ok = mono_s(), pending_since = 0;
    bool was_down = false;
    mgr__lock(m);
    for (;;) {
        if (m->drained && !m->writeq_head)
            break; /* the manager has nothing left: leave the host lists and exit */
        double now = mono_s();
        /* While attempts run, let outcomes add up a little: one call carries them all. */
        if (m->writeq_head && !m->stopping && m->nexecuting + m->nqueued > 0 &&
            m->nwriteq < WRITE_BATCH_WANT && now < next_hb) {
            if (pending_since == 0)
                pending_since = now;
            if (now < pending_since + BATCH_WAIT_S) {
                mgr__wait(m, &m->write_cond, pending_since + BATCH_WAIT_S - now);
                continue;
            }
        }
        pending_since = 0;
        collect_writes(m, &b, now);
        bool hb_due = now >= next_hb;
        if (b.n == 0 && !hb_due) {
            /* Sleep until the next heartbeat, or until progress may be due. */
            double wait = next_hb - now;
            if (m->nowned > 0)
                wait = fmin(wait, fmax(0.005, fmin(m->cfg->progress_interval_s, 0.25)));
            mgr__wait(m, &m->write_cond, wait);
            continue;
        }
        int owned = m->nowned;
        mgr__unlock(m);

        int rc = 0;
        if (b.n) {
            rc = store_apply(m->st_write, m->host_id, b.items, b.n);
            mgr__log_store_warnings(m->st_write);
            if (rc == 0) {
                writes_done(m, &b);
            } else {
                /* -EAGAIN: written on the master, but not confirmed by the replicas it must
                 * reach (redis.min_replicas_ack): not done until they do. Sent again, a write
                 * that went through is answered as applied and changes nothing. */
                metrics_inc(m->met, MC_REDIS_ERRORS, 1);
                writes_requeue(m, &b);
            }
            wbatch_reset(&b);
        }
        /* Unconfirmed writes must not cost the host its leases: it still beats. */
        if ((rc == 0 || rc == -EAGAIN) && hb_due) {
            int unconfirmed = rc;
            rc = heartbeat(m);
            if (rc == 0)
                next_hb = mono_s() + m->cfg->heartbeat_s;
            else
                metrics_inc(m->met, MC_REDIS_ERRORS, 1);
            if (rc == 0)
                rc = unconfirmed;
        }
        if (rc < 0) {
            if (!was_down)
                log_err("writing to redis failed: %s; retrying", store_errstr(m->st_write));
            was_down = true;
            /* Give up on an outage that outlasts the lease at shutdown: others own it now. */
            mgr__lock(m);
            bool give_up =
                m->stopping && mono_s() - last_ok > m->cfg->lease_s + m->cfg->shutdown_grace_s;
            mgr__unlock(m);
            if (give_up) {
                log_err("redis unreachable for longer than the lease at shutdown; "
                        "leaving %d attempt(s) to be claimed again",
                        owned);
                mgr__lock(m);
                break;
            }
            /* Short naps: the store paces reconnects itself, and a lease running out
             * during the outage is the manager thread's to notice. */
            sleep_s(backoff);
            backoff = fmin(backoff * 2, 0.25);
        } else {
            if (was_down)
                log_notice("redis is back: writes resumed");
            was_down = false;
            backoff = 0.05;
            last_ok = mono_s();
        }
        mgr__lock(m);
    }
    mgr__unlock(m);
    if (store_host_remove(m->st_write, m->host_id) < 0)
        log_warn("could not remove this host from the host list: %s", store_errstr(m->st_write));
    wbatch_free(&b);
    mgr__lock(m);
    m->done = true;
    m->threads_exit = true;
    pthread_cond_broadcast(&m->work_cond);
    pthread_cond_broadcast(&m->mgr_cond);
    mgr__unlock(m);
    store_interrupt(m->st_ctl);
    return NULL;
}

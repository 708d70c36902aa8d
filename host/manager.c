/*
 * manager.c - the manager's lifecycle and the manager thread: the one place
 * that decides, by the host's own clock, what happens to the attempts it
 * holds (leases that ran out, timeouts, the shutdown grace, retries that fell
 * due, parallel tasks to conclude, releases at shutdown) and that frees them
 * once the writer hands them back. manager_int.h has the rules the threads
 * share; attempt.c the attempts and queues they share.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "manager.h"
#include "manager_int.h"
#include "util.h"

/* ---- the manager thread ---- */

/* Stop attempt t: its lease is gone (it writes nothing more). (L) */
static void mark_lost(bgt_task *t, const char *why)
{
    t->lost = true;
    t->lost_at = mono_s();
    atomic_store(&t->stop, STOP_LOST);
    log_msg(BGT_LOG_WARNING, t->id, "attempt %u: %s", t->attempt, why);
}

/*
 * Give up attempt t in Redis too: this host gave it up by its own clock (its entries may
 * have run out while heartbeats failed), and its handler ignores the stop. Queued for the
 * writer, the give-up makes the task claimable at once, as the burial of a dead host
 * would, unless another host has taken it already (then the write is fenced out). Without
 * it, a host that comes back and renews its entries would hold the attempt for ever. (An
 * attempt whose handler stops is given up when it ends: mgr__conclude.) (L)
 */
static void give_up(manager *m, bgt_task *t)
{
    if (t->refused || t->given_up)
        return; /* Redis knows */
    t->given_up = true;
    bgt_task *r = xcalloc(1, sizeof *r);
    memcpy(r->id, t->id, sizeof r->id);
    memcpy(r->handler, t->handler, sizeof r->handler);
    r->attempt = t->attempt;
    memcpy(r->token, t->token, sizeof r->token);
    r->info = (bgt_hook_info){r->id, r->handler, r->attempt, -1};
    r->op = FIN_LOST;
    r->ev = -1;
    mgr__own(m, r);
    mgr__writeq_push(m, r);
}

/* A release record for stuck attempt t, queued for the writer. (L) */
static void release_stuck(manager *m, bgt_task *t)
{
    t->released_stuck = true;
    log_msg(BGT_LOG_WARNING, t->id, "attempt %u did not stop within %.0fs; releasing it",
            t->attempt, STUCK_GRACE_S);
    bgt_task *r = xcalloc(1, sizeof *r);
    memcpy(r->id, t->id, sizeof r->id);
    memcpy(r->handler, t->handler, sizeof r->handler);
    r->attempt = t->attempt;
    memcpy(r->token, t->token, sizeof r->token);
    r->p_current = t->p_current;
    r->p_total = t->p_total;
    r->info = (bgt_hook_info){r->id, r->handler, r->attempt, -1};
    mgr__set_release(r, xasprintf("released by host %s at shutdown; attempt refunded", m->host_id));
    mgr__own(m, r);
    mgr__writeq_push(m, r);
}

/*
 * Checks by the host's own clock: leases that ran out without renewal,
 * timeouts, the end of the shutdown grace, handlers that ignore it. (L)
 */
static void check_clocks(manager *m, double now)
{
    for (bgt_task *t = m->owned; t; t = t->next) {
        if (t->finishing || t->released_stuck)
            continue;
        if (t->lost) {
            if (now > t->lost_at + STUCK_GRACE_S)
                give_up(m, t);
            continue;
        }
        double until;
        __atomic_load(&t->lease_until, &until, __ATOMIC_RELAXED);
        /* (bgt_cancelled may have seen the lease run out first: it set the stop.) */
        if (now > until || atomic_load(&t->stop) == STOP_LOST) {
            mark_lost(t, "lease ran out before it could be renewed; stopping it");
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
            log_notice("shutdown grace over: asking %d running attempt(s) to stop", m->nexecuting);
        for (bgt_task *t = m->owned; t; t = t->next)
            if (t->executing || t->par) {
                int none = STOP_NONE;
                atomic_compare_exchange_strong(&t->stop, &none, STOP_SHUTDOWN);
            }
    }
    if (m->force_stop && now >= m->grace_deadline + STUCK_GRACE_S)
        for (bgt_task *t = m->owned; t; t = t->next)
            if ((t->executing || (t->par && t->par->inflight > 0)) && !t->released_stuck &&
                !t->lost && !t->finishing)
                release_stuck(m, t);
}

/*
 * At shutdown, give back what was claimed but never started; drop queued
 * subtasks (their task is released once its running ones end). Conclusions
 * and failures stay queued: they write an outcome that is already decided. (L)
 */
static void release_queued(manager *m)
{
    m->runq_tail = NULL;
    for (bgt_task **pp = &m->runq_head; *pp;) {
        bgt_task *t = *pp;
        if (t->job != JOB_SUBTASK && t->job != JOB_RUN) {
            m->runq_tail = t;
            pp = &t->qnext;
            continue;
        }
        *pp = t->qnext;
        m->nqueued--;
        if (t->job == JOB_SUBTASK) {
            par_unstart(t->parent->par, t->subtask);
            mgr__task_free(t);
        } else {
            mgr__set_release(
                t, xasprintf("released by host %s at shutdown before it started", m->host_id));
            mgr__writeq_push(m, t);
        }
    }
}

/* Start retries that fell due and queue conclusions; the soonest retry to come (mono
 * time), or INFINITY. (L) */
static double tick_parallel(manager *m, double now)
{
    double next = INFINITY;
    for (bgt_task *t = m->owned; t; t = t->next) {
        if (!t->par)
            continue;
        mgr__par_schedule(m, t, now);
        const par *p = t->par;
        for (int i = 0; p->waiting > 0 && i < p->n; i++)
            if (p->subs[i].state == PAR_WAITING)
                next = fmin(next, p->subs[i].retry_at);
    }
    return next;
}

/* Free what the writer handed back. (L) */
static void reap(manager *m)
{
    while (m->doneq_head) {
        bgt_task *t = m->doneq_head;
        m->doneq_head = t->qnext;
        if (t->op != FIN_SUBTASK) /* subtask runs are never owned */
            mgr__disown(m, t);
        mgr__task_free(t);
    }
    m->doneq_tail = NULL;
}

/*
 * Whether every attempt still owned was released while its handler went on
 * ignoring the stop request: those are written off and must not keep a
 * stopping host from exiting. (L)
 */
static bool only_released_left(const manager *m)
{
    for (const bgt_task *t = m->owned; t; t = t->next)
        if (!t->released_stuck)
            return false;
    return true;
}

static void *manager_main(void *arg)
{
    manager *m = arg;
    mgr__name_thread("bgt-manager");
    mgr__lock(m);
    while (!m->threads_exit) {
        double now = mono_s();
        check_clocks(m, now);
        mgr__write_off_stuck(m, now);
        if (m->stopping)
            release_queued(m);
        double retry = tick_parallel(m, now);
        reap(m);
        if (m->stopping && !m->writeq_head && only_released_left(m)) {
            m->drained = true;
            pthread_cond_signal(&m->write_cond);
            break;
        }
        /* Wake for what is handed back or queued, and to watch the clocks: as often as
         * progress may be written while attempts run, or sooner for a retry. */
        double wait = m->stopping ? 0.05 : MAX_BLOCK_S;
        if (m->nowned > 0)
            wait = fmin(wait, fmax(0.005, fmin(m->cfg->progress_interval_s, 0.25)));
        wait = fmin(wait, fmax(0.001, retry - now));
        mgr__wait(m, &m->mgr_cond, wait);
    }
    mgr__unlock(m);
    return NULL;
}

/* ---- lifecycle ---- */

manager *mgr_new(const bgt_config *cfg, const redis_addr *addr, registry *reg, metrics *met,
                 const char *host_id)
{
    manager *m = xcalloc(1, sizeof *m);
    m->cfg = cfg;
    m->task_log_level = log_level_parse(cfg->task_log_level ? cfg->task_log_level : "info");
    m->reg = reg;
    m->met = met;
    m->hk = (hooks){.met = met, .reg = reg};
    strlcpy_(m->host_id, host_id, sizeof m->host_id);
    redis_addr_copy(&m->addr, addr);
    if (gethostname(m->machine, sizeof m->machine) < 0)
        strlcpy_(m->machine, "unknown", sizeof m->machine);
    m->started_ms = now_ms();
    mutex_init_spinning(&m->lock);
    pthread_cond_init(&m->work_cond, NULL);
    pthread_cond_init(&m->slot_cond, NULL);
    pthread_cond_init(&m->write_cond, NULL);
    pthread_cond_init(&m->mgr_cond, NULL);
    m->st_claim = store_open(cfg, addr);
    m->st_write = store_open(cfg, addr);
    m->st_ctl = store_open(cfg, addr);
    m->nshards = store_shards(m->st_claim);
    m->shard_ready = xcalloc((size_t)m->nshards, sizeof *m->shard_ready);
    m->shard_due = xcalloc((size_t)m->nshards, sizeof *m->shard_due);
    mgr__refresh_handlers(m);
    srandom((unsigned)(now_ms() ^ getpid()));
    return m;
}

int mgr_start(manager *m)
{
    int rc;
    /* Room for the replacements of threads written off (stuck.c). */
    m->workers = xcalloc((size_t)m->cfg->workers * 2, sizeof *m->workers);
    rc = 0;
    mgr__lock(m);
    for (int i = 0; i < m->cfg->workers && rc >= 0; i++)
        rc = mgr__start_worker(m);
    mgr__unlock(m);
    if (rc < 0)
        return rc;
    if ((rc = pthread_create(&m->writer, NULL, mgr__writer_main, m)) != 0 ||
        (rc = pthread_create(&m->supervisor, NULL, manager_main, m)) != 0 ||
        (rc = pthread_create(&m->dispatcher, NULL, mgr__dispatcher_main, m)) != 0 ||
        (rc = pthread_create(&m->control, NULL, mgr__control_main, m)) != 0)
        return -rc;
    m->started = true;
    return 0;
}

void mgr_handlers_changed(manager *m)
{
    mgr__lock(m);
    m->handlers_changed = true;
    pthread_cond_broadcast(&m->slot_cond);
    mgr__unlock(m);
}

void mgr_stop(manager *m, bool now)
{
    mgr__lock(m);
    if (!m->stopping) {
        m->stopping = true;
        m->grace_deadline = mono_s() + (now ? 0 : m->cfg->shutdown_grace_s);
        log_notice("shutting down: %d attempt(s) running, grace %.0fs", m->nexecuting,
                   now ? 0.0 : m->cfg->shutdown_grace_s);
    } else if (now && !m->force_stop) {
        m->grace_deadline = mono_s();
        log_notice("second signal: releasing running attempts now");
    }
    pthread_cond_broadcast(&m->slot_cond);
    pthread_cond_broadcast(&m->mgr_cond);
    pthread_cond_broadcast(&m->write_cond);
    mgr__unlock(m);
}

bool mgr_done(manager *m)
{
    mgr__lock(m);
    bool done = m->done;
    mgr__unlock(m);
    return done;
}

bool mgr_free(manager *m)
{
    if (!m)
        return false;
    if (m->started) {
        pthread_join(m->dispatcher, NULL);
        pthread_join(m->writer, NULL);
        pthread_join(m->supervisor, NULL);
        pthread_join(m->control, NULL);
        /* Workers still inside a handler that ignored the stop request are left
         * behind (the process is exiting); the others are joined. */
        mgr__lock(m);
        bool stuck = m->nexecuting > 0 || m->nstuck > 0;
        mgr__unlock(m);
        for (int i = 0; i < m->nworkers; i++)
            if (stuck)
                pthread_detach(m->workers[i]);
            else
                pthread_join(m->workers[i], NULL);
        if (stuck)
            return true; /* their threads still reference m */
    }
    while (m->doneq_head) {
        bgt_task *t = m->doneq_head;
        m->doneq_head = t->qnext;
        if (t->op == FIN_SUBTASK)
            mgr__task_free(t);
        else
            t->qnext = NULL; /* owned: freed below */
    }
    while (m->owned) {
        bgt_task *t = m->owned;
        mgr__disown(m, t);
        mgr__task_free(t);
    }
    store_free(m->st_claim);
    store_free(m->st_write);
    store_free(m->st_ctl);
    redis_addr_free(&m->addr);
    free(m->workers);
    free(m->hs);
    free(m->handler_list);
    for (size_t i = 0; i < m->npaused; i++)
        free(m->paused[i]);
    free(m->paused);
    free(m->shard_ready);
    free(m->shard_due);
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->work_cond);
    pthread_cond_destroy(&m->slot_cond);
    pthread_cond_destroy(&m->write_cond);
    pthread_cond_destroy(&m->mgr_cond);
    free(m);
    return false;
}

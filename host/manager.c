/*
 * manager.c - claim and run: the dispatcher, the workers, the control
 * listener, single attempts, and the manager's lifecycle. The writer is in
 * writer.c, parallel tasks in parallel.c. An attempt is owned by the manager
 * from its claim until the writer has written its outcome (or it was lost);
 * the writer frees it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "manager_int.h"
#include "util.h"

/* ---- attempts ---- */

void mgr__task_free(bgt_task *t)
{
    if (!t)
        return;
    mgr__par_free(t->par);
    for (int i = 0; i < t->nsplit; i++)
        free(t->split_items[i]);
    free(t->split_items);
    free(t->args_text);
    cJSON_Delete(t->args);
    free(t->p_message);
    free(t->result);
    free(t->error);
    free(t->end_message);
    for (size_t i = 0; i < t->nerrors; i++)
        free(t->errors[i]);
    free(t->errors);
    free(t);
}

void mgr__own(manager *m, bgt_task *t)
{
    t->next = m->owned;
    if (m->owned)
        m->owned->prev = t;
    m->owned = t;
    m->nowned++;
}

void mgr__disown(manager *m, bgt_task *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        m->owned = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
    m->nowned--;
}

void mgr__writeq_push(manager *m, bgt_task *t)
{
    t->qnext = NULL;
    if (m->writeq_tail)
        m->writeq_tail->qnext = t;
    else
        m->writeq_head = t;
    m->writeq_tail = t;
    t->finishing = true;
    pthread_cond_signal(&m->write_cond);
}

void mgr__runq_push(manager *m, bgt_task *t)
{
    t->qnext = NULL;
    if (m->runq_tail)
        m->runq_tail->qnext = t;
    else
        m->runq_head = t;
    m->runq_tail = t;
    m->nqueued++;
    pthread_cond_signal(&m->work_cond);
}

bool mgr__end_executing(manager *m, bgt_task *t)
{
    pthread_mutex_lock(&m->lock);
    t->executing = false;
    m->nexecuting--;
    bool gone = t->lost || t->released_stuck;
    pthread_cond_signal(&m->slot_cond);
    pthread_mutex_unlock(&m->lock);
    return gone;
}

/* The event an attempt's end publishes (a partial success has errors), or -1 for none. */
static int end_event(end_kind kind, size_t nerrors)
{
    static const int evs[] = {[END_SUCCESS] = EV_DONE,     [END_FAILURE] = EV_FAILED,
                              [END_CANCELLED] = EV_CANCELLED, [END_RETRY] = EV_UPDATED,
                              [END_RELEASE] = EV_UPDATED,  [END_LOST] = -1};
    return kind == END_SUCCESS && nerrors > 0 ? EV_PARTIAL_SUCCESS : evs[kind];
}

void mgr__conclude(manager *m, bgt_task *t, end_kind kind, bgt_status status,
                   const char *message, int64_t backoff_ms, char **errors, size_t nerrors)
{
    double now = mono_s();
    t->end_message = xstrdup(message);
    t->end = kind;
    t->ev = end_event(kind, nerrors);
    t->ended_ms = now_ms();
    t->backoff_ms = backoff_ms;
    t->errors = errors;
    t->nerrors = nerrors;
    hooks_after(&m->hk, &t->info, kind, status, t->started > 0 ? now - t->started : 0,
                t->end_message);
    static const fin_op ops[] = {[END_SUCCESS] = FIN_SUCCESS, [END_FAILURE] = FIN_FAILURE,
                                 [END_CANCELLED] = FIN_CANCELLED, [END_RETRY] = FIN_RETRY,
                                 [END_RELEASE] = FIN_RELEASE, [END_LOST] = FIN_PROGRESS};
    t->op = ops[kind];
    pthread_mutex_lock(&m->lock);
    if (kind == END_LOST) {
        /* Nothing to write, but only the writer frees an owned attempt: a heartbeat it
         * has in flight may still point at this one. */
        t->lost = true;
        t->drop = true;
    }
    mgr__writeq_push(m, t);
    pthread_mutex_unlock(&m->lock);
}

void mgr__set_release(bgt_task *t, char *message)
{
    t->op = FIN_RELEASE;
    t->end = END_RELEASE;
    t->ev = EV_UPDATED;
    t->ended_ms = now_ms();
    free(t->end_message);
    t->end_message = message;
}

/* Backoff before retry number n (1-based): base * 2^(n-1), capped, with jitter in [50%, 100%]. */
int64_t mgr__backoff_ms(const bgt_config *cfg, uint32_t n)
{
    double d = cfg->backoff_base_s * pow(2.0, n > 0 ? (double)(n - 1) : 0.0);
    if (d > cfg->backoff_max_s)
        d = cfg->backoff_max_s;
    unsigned r = (unsigned)random();
    d *= 0.5 + 0.5 * ((double)(r % 10000) / 10000.0);
    return (int64_t)(d * 1000);
}

void mgr__conclude_status(manager *m, bgt_task *t, bgt_status status, int stop)
{
    switch (status) {
    case BGT_OK:
        mgr__conclude(m, t, END_SUCCESS, status, "Task finished", 0, NULL, 0);
        break;
    case BGT_FAILED:
        mgr__conclude(m, t, END_FAILURE, status, t->error ? t->error : "the handler failed", 0,
                      NULL, 0);
        break;
    case BGT_RETRY: {
        int64_t b = mgr__backoff_ms(m->cfg, t->attempt - t->released);
        char *msg = xasprintf("attempt %u failed: %s; retrying in %.1fs", t->attempt,
                              t->error ? t->error : "the handler asked to retry",
                              (double)b / 1000.0);
        mgr__conclude(m, t, END_RETRY, status, msg, b, NULL, 0);
        free(msg);
        break;
    }
    case BGT_CANCELLED:
        if (stop == STOP_TIMEOUT) {
            char *msg = xasprintf("timed out after %gs", t->h ? t->h->def.timeout_s : 0.0);
            mgr__conclude(m, t, END_FAILURE, status, msg, 0, NULL, 0);
            free(msg);
        } else if (stop == STOP_SHUTDOWN) {
            char *msg = xasprintf("released by host %s at shutdown; attempt refunded",
                                  m->host_id);
            mgr__conclude(m, t, END_RELEASE, status, msg, 0, NULL, 0);
            free(msg);
        } else {
            mgr__conclude(m, t, END_CANCELLED, status, "Cancelled", 0, NULL, 0);
        }
        break;
    default: {
        char *msg = xasprintf("the handler returned an unknown status %d", (int)status);
        mgr__conclude(m, t, END_FAILURE, status, msg, 0, NULL, 0);
        free(msg);
    }
    }
}

/* Run one attempt of a single task on a worker thread. */
static void run_single(manager *m, bgt_task *t)
{
    t->started = mono_s();
    hooks_before(&m->hk, &t->info);
    bgt_status status = t->h->def.run(t, t->args, t->h->def.udata);
    int stop = atomic_load(&t->stop);

    if (!mgr__end_executing(m, t) && stop != STOP_LOST) {
        mgr__conclude_status(m, t, status, stop);
        return;
    }
    pthread_mutex_lock(&m->lock);
    bool stuck = t->released_stuck;
    pthread_mutex_unlock(&m->lock);
    if (stuck)
        return; /* released at shutdown while it ran: the release was written already */
    log_msg(BGT_LOG_WARNING, t->id,
            "attempt %u ended after its lease was lost; its outcome is discarded", t->attempt);
    mgr__conclude(m, t, END_LOST, status, "lease lost", 0, NULL, 0);
}

static void *worker_main(void *arg)
{
    manager *m = arg;
    store *wst = NULL; /* for the setup of parallel tasks, made on first use */
    pthread_mutex_lock(&m->lock);
    for (;;) {
        while (!m->runq_head && !m->threads_exit)
            pthread_cond_wait(&m->work_cond, &m->lock);
        if (!m->runq_head)
            break;
        bgt_task *t = m->runq_head;
        m->runq_head = t->qnext;
        if (!m->runq_head)
            m->runq_tail = NULL;
        m->nqueued--;
        t->executing = true;
        m->nexecuting++;
        pthread_mutex_unlock(&m->lock);
        if (t->parent)
            mgr__subtask_run(m, t);
        else if (t->h->def.kind == BGT_PARALLEL)
            mgr__parallel_run(m, t, &wst);
        else
            run_single(m, t);
        pthread_mutex_lock(&m->lock);
    }
    pthread_mutex_unlock(&m->lock);
    store_free(wst);
    return NULL;
}

/* ---- claiming ---- */

/* Rebuild the list of handlers served. Called with the lock held. */
static void refresh_handlers(manager *m)
{
    size_t n = registry_handlers(m->reg, NULL, 0);
    const handler **hv = xcalloc(n + 1, sizeof *hv);
    n = registry_handlers(m->reg, hv, n);
    free(m->hs);
    m->hs = xcalloc(n + 1, sizeof *m->hs);
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(hv[i]->name) + 1;
    free(m->handler_list);
    m->handler_list = xcalloc(1, len);
    for (size_t i = 0; i < n; i++) {
        const bgt_handler_def *d = &hv[i]->def;
        m->hs[i] = (claim_handler){
            .name = hv[i]->name,
            .max_attempts = d->max_attempts > 0 ? d->max_attempts : m->cfg->max_attempts,
            .not_retriable = d->not_retriable,
            .parallel = d->kind == BGT_PARALLEL,
        };
        if (i)
            strcat(m->handler_list, ",");
        strcat(m->handler_list, hv[i]->name);
    }
    m->nhs = n;
    free(hv);
    m->reg_generation = m->reg->generation;
    m->handlers_changed = false;
}

/* Turn a claimed record into an attempt ready to run (or to fail at once). */
static bgt_task *make_task(manager *m, claimed *c, char **bad)
{
    *bad = NULL;
    bgt_task *t = xcalloc(1, sizeof *t);
    t->m = m;
    t->h = registry_find(m->reg, c->handler);
    memcpy(t->id, c->id, sizeof t->id);
    strlcpy_(t->handler, c->handler, sizeof t->handler);
    t->attempt = c->attempt;
    t->released = c->released;
    t->max_attempts = c->max_attempts;
    t->subtask = -1;
    t->args_text = c->args;
    c->args = NULL;
    t->last_current = t->p_current = c->progress_current;
    t->last_total = t->p_total = c->progress_total;
    t->info = (bgt_hook_info){t->id, t->handler, t->attempt, -1};
    t->claimed_subtasks = c->subtasks;
    t->claimed_parallelism = c->parallelism;
    t->claimed_fail_fast = c->fail_fast;
    double lease = m->cfg->lease_s;
    t->lease_until = mono_s() + lease;
    if (c->corrupt)
        *bad = xasprintf("corrupted task record: %s", c->corrupt);
    else if (!t->h)
        *bad = xasprintf("no handler '%s' on host %s", c->handler, m->host_id);
    else if (!(t->args = cJSON_Parse(t->args_text)) || !cJSON_IsObject(t->args))
        *bad = xasprintf("corrupted task record: args is not a JSON object");
    if (t->h && t->h->def.timeout_s > 0)
        t->deadline = mono_s() + t->h->def.timeout_s;
    return t;
}

static void *dispatcher_main(void *arg)
{
    manager *m = arg;
    int max = m->cfg->workers;
    claimed *batch = xcalloc((size_t)max, sizeof *batch);
    claim_handler *hs = NULL;
    size_t nhs = 0;
    bool was_down = false;
    for (;;) {
        pthread_mutex_lock(&m->lock);
        while (!m->stopping && (m->nqueued + m->nexecuting >= max || m->nhs == 0) &&
               !m->handlers_changed)
            pthread_cond_wait(&m->slot_cond, &m->lock);
        if (m->stopping) {
            pthread_mutex_unlock(&m->lock);
            break;
        }
        if (m->handlers_changed || m->reg->generation != m->reg_generation)
            refresh_handlers(m);
        if (m->nhs == 0) {
            pthread_mutex_unlock(&m->lock);
            continue;
        }
        /* A private copy: names point into the registry, which never drops live handlers. */
        hs = xrealloc(hs, m->nhs * sizeof *hs);
        memcpy(hs, m->hs, m->nhs * sizeof *hs);
        nhs = m->nhs;
        int want = max - m->nqueued - m->nexecuting;
        /* Heartbeats have failed for so long that other hosts may bury this one: a claim now
         * would hand out attempts it cannot hold. Wait for the writer's next heartbeat. */
        if (m->entry_until > 0 && mono_s() > m->entry_until - LEASE_MARGIN_S(m->cfg)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&m->slot_cond, &m->lock, &ts);
            pthread_mutex_unlock(&m->lock);
            continue;
        }
        pthread_mutex_unlock(&m->lock);

        int got = 0;
        double due = -1;
        double claim_sent = mono_s();
        int rc = store_claim(m->st_claim, m->host_id, hs, nhs, want,
                             (int64_t)(m->cfg->lease_s * 1000), batch, &got, &due);
        if (rc < 0) {
            metrics_inc(m->met, MC_REDIS_ERRORS, 1);
            if (!was_down)
                log_err("claim failed: %s; retrying", store_errstr(m->st_claim));
            was_down = true;
            pthread_mutex_lock(&m->lock);
            if (!m->stopping) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 200 * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&m->slot_cond, &m->lock, &ts);
            }
            pthread_mutex_unlock(&m->lock);
            continue;
        }
        if (was_down)
            log_notice("redis is back: claiming again");
        was_down = false;
        if (got)
            metrics_inc(m->met, MC_CLAIMS, got);
        for (int i = 0; i < got; i++) {
            char *bad;
            bgt_task *t = make_task(m, &batch[i], &bad);
            store_claimed_clear(&batch[i]);
            log_debug("[%s] claimed %s, attempt %u", t->id, t->handler, t->attempt);
            pthread_mutex_lock(&m->lock);
            /* The claim does not renew this host's entry: once the entry runs out, other
             * hosts may bury this one and take the attempt, lease or not. */
            double until = claim_sent + m->cfg->lease_s - LEASE_MARGIN_S(m->cfg);
            if (m->entry_until > 0)
                until = fmin(until, m->entry_until - LEASE_MARGIN_S(m->cfg));
            __atomic_store(&t->lease_until, &until, __ATOMIC_RELAXED);
            mgr__own(m, t);
            pthread_mutex_unlock(&m->lock);
            if (bad) {
                log_msg(BGT_LOG_ERR, t->id, "%s", bad);
                hooks_before(&m->hk, &t->info);
                mgr__conclude(m, t, END_FAILURE, BGT_FAILED, bad, 0, NULL, 0);
                free(bad);
                continue;
            }
            pthread_mutex_lock(&m->lock);
            mgr__runq_push(m, t);
            pthread_mutex_unlock(&m->lock);
        }
        if (got < want) {
            /* Nothing more is due: sleep until woken, or until the next one falls due. */
            double wait = due < 0 ? MAX_BLOCK_S : fmin(due, MAX_BLOCK_S);
            log_debug("claimed %d of %d; waiting up to %.3fs for work", got, want, wait);
            if (wait > 0.0005) {
                rc = store_wait_wake(m->st_claim, hs, nhs, wait);
                if (rc < 0 && rc != -EINTR) {
                    metrics_inc(m->met, MC_REDIS_ERRORS, 1);
                    if (!was_down)
                        log_err("waiting for work failed: %s; retrying",
                                store_errstr(m->st_claim));
                    was_down = true;
                }
            }
        }
    }
    free(hs);
    free(batch);
    return NULL;
}

/* ---- control: cancel requests ---- */

static void *control_main(void *arg)
{
    manager *m = arg;
    bool was_down = false;
    for (;;) {
        pthread_mutex_lock(&m->lock);
        bool quit = m->threads_exit;
        pthread_mutex_unlock(&m->lock);
        if (quit)
            break;
        char id[BGT_ID_LEN + 1];
        int rc = store_next_control(m->st_ctl, 0.5, id);
        if (rc == 0) {
            pthread_mutex_lock(&m->lock);
            for (bgt_task *t = m->owned; t; t = t->next)
                if (strcmp(t->id, id) == 0 && !t->finishing) {
                    int none = STOP_NONE;
                    atomic_compare_exchange_strong(&t->stop, &none, STOP_CANCEL);
                    log_msg(BGT_LOG_INFO, t->id, "cancel requested");
                }
            pthread_mutex_unlock(&m->lock);
        } else if (rc == -EIO) {
            if (!was_down)
                log_warn("control channel: %s; retrying", store_errstr(m->st_ctl));
            was_down = true;
            sleep_s(0.1);
            continue;
        }
        was_down = false;
    }
    return NULL;
}

/* ---- lifecycle ---- */

manager *manager_new(const bgt_config *cfg, const redis_addr *addr, registry *reg, metrics *met,
                     const char *host_id)
{
    manager *m = xcalloc(1, sizeof *m);
    m->cfg = cfg;
    m->reg = reg;
    m->met = met;
    m->hk = (hooks){.met = met, .reg = reg};
    strlcpy_(m->host_id, host_id, sizeof m->host_id);
    redis_addr_copy(&m->addr, addr);
    if (gethostname(m->machine, sizeof m->machine) < 0)
        strlcpy_(m->machine, "unknown", sizeof m->machine);
    m->started_ms = now_ms();
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->work_cond, NULL);
    pthread_cond_init(&m->slot_cond, NULL);
    pthread_cond_init(&m->write_cond, NULL);
    m->st_claim = store_open(cfg, addr);
    m->st_write = store_open(cfg, addr);
    m->st_ctl = store_open(cfg, addr);
    refresh_handlers(m);
    srandom((unsigned)(now_ms() ^ getpid()));
    return m;
}

int manager_start(manager *m)
{
    int rc = store_subscribe_control(m->st_ctl, m->host_id);
    if (rc < 0)
        log_warn("control channel: %s; will retry", store_errstr(m->st_ctl));
    m->nworkers = m->cfg->workers;
    m->workers = xcalloc((size_t)m->nworkers, sizeof *m->workers);
    for (int i = 0; i < m->nworkers; i++)
        if ((rc = pthread_create(&m->workers[i], NULL, worker_main, m)) != 0)
            return -rc;
    if ((rc = pthread_create(&m->writer, NULL, mgr__writer_main, m)) != 0 ||
        (rc = pthread_create(&m->dispatcher, NULL, dispatcher_main, m)) != 0 ||
        (rc = pthread_create(&m->control, NULL, control_main, m)) != 0)
        return -rc;
    m->started = true;
    return 0;
}

void manager_handlers_changed(manager *m)
{
    pthread_mutex_lock(&m->lock);
    m->handlers_changed = true;
    pthread_cond_broadcast(&m->slot_cond);
    pthread_mutex_unlock(&m->lock);
    store_interrupt(m->st_claim);
}

void manager_stop(manager *m, bool now)
{
    pthread_mutex_lock(&m->lock);
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
    pthread_cond_broadcast(&m->write_cond);
    pthread_mutex_unlock(&m->lock);
    store_interrupt(m->st_claim);
}

bool manager_done(manager *m)
{
    pthread_mutex_lock(&m->lock);
    bool done = m->done;
    pthread_mutex_unlock(&m->lock);
    return done;
}

bool manager_free(manager *m)
{
    if (!m)
        return false;
    if (m->started) {
        pthread_join(m->dispatcher, NULL);
        pthread_join(m->writer, NULL);
        pthread_join(m->control, NULL);
        /* Workers still inside a handler that ignored the stop request are left
         * behind (the process is exiting); the others are joined. */
        pthread_mutex_lock(&m->lock);
        bool stuck = m->nexecuting > 0;
        pthread_mutex_unlock(&m->lock);
        for (int i = 0; i < m->nworkers; i++)
            if (stuck)
                pthread_detach(m->workers[i]);
            else
                pthread_join(m->workers[i], NULL);
        if (stuck)
            return true; /* their threads still reference m */
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
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->work_cond);
    pthread_cond_destroy(&m->slot_cond);
    pthread_cond_destroy(&m->write_cond);
    free(m);
    return false;
}


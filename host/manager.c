/*
 * manager.c - claim, run, renew, write, drain. See manager.h for the threads.
 *
 * One mutex (m->lock) guards the run queue, the list of owned attempts, the
 * write queue and each attempt's progress and flags. Handlers run without it.
 * An attempt is owned by the manager from its claim until the writer has
 * written its outcome (or it was lost); the writer frees it.
 */
#include "manager.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hooks.h"
#include "util.h"

/* Why an attempt was asked to stop. */
enum { STOP_NONE = 0, STOP_CANCEL, STOP_LOST, STOP_TIMEOUT, STOP_SHUTDOWN };

/* Extra time after the grace for handlers told to stop before they are released anyway. */
#define STUCK_GRACE_S 2.0
/* Longest the dispatcher blocks on the wake lists before looking again. */
#define MAX_BLOCK_S 5.0

struct bgt_task {
    manager *m;
    const handler *h;
    char id[BGT_ID_LEN + 1];
    char handler[BGT_NAME_MAX + 1];
    uint32_t attempt;
    uint32_t released;
    int max_attempts;
    int subtask;
    char *args_text;
    cJSON *args;
    double last_current, last_total; /* persisted by earlier attempts */
    bgt_hook_info info;

    /* Guarded by m->lock. */
    double p_current, p_total;
    char *p_message;
    bool p_dirty;          /* a progress report not written yet */
    double p_written_at;   /* mono time of the last progress write */
    bool executing;        /* its handler is running */
    bool lost;             /* lease lost: its outcome is discarded */
    bool finishing;        /* outcome queued for the writer */
    bool released_stuck;   /* released while its handler still ran (shutdown) */
    double lease_until;    /* mono time until which the lease surely holds */
    double deadline;       /* mono time of its timeout, 0 = none */
    struct bgt_task *prev, *next; /* m->owned */
    struct bgt_task *qnext;       /* m->runq or m->writeq */

    _Atomic int stop;      /* STOP_*: read by bgt_cancelled() */

    /* The worker's own while the handler runs. */
    char *result;          /* JSON text */
    char *error;
    double started;

    /* The outcome, set by the worker, read by the writer. */
    fin_op op;
    attempt_end end;
    char *end_message;
};

struct manager {
    const bgt_config *cfg;
    registry *reg;
    metrics *met;
    hooks hk;
    redis_addr addr;
    char host_id[256];
    char machine[256];
    int64_t started_ms;

    pthread_mutex_t lock;
    pthread_cond_t work_cond;   /* workers: runq not empty or stopping */
    pthread_cond_t slot_cond;   /* dispatcher: a slot freed, handlers changed, or stopping */
    pthread_cond_t write_cond;  /* writer: something to write */

    bgt_task *owned;            /* every attempt this host holds */
    int nowned;
    bgt_task *runq_head, *runq_tail;
    int nqueued;                /* in runq */
    int nexecuting;
    bgt_task *writeq_head, *writeq_tail;

    /* Handlers served; rebuilt when the registry changes. */
    claim_handler *hs;
    size_t nhs;
    unsigned reg_generation;
    char *handler_list;         /* comma-separated, for P:host:<id> */
    bool handlers_changed;

    bool stopping;              /* no more claims */
    bool force_stop;            /* grace over: tell handlers to stop */
    double grace_deadline;
    bool done;                  /* drained, left P:hosts */
    bool threads_exit;

    store *st_claim, *st_write, *st_ctl;
    pthread_t dispatcher, writer, control;
    pthread_t *workers;
    int nworkers;
    bool started;
};

/* ---- attempts ---- */

static void task_free(bgt_task *t)
{
    if (!t)
        return;
    free(t->args_text);
    cJSON_Delete(t->args);
    free(t->p_message);
    free(t->result);
    free(t->error);
    free(t->end_message);
    attempt_end_clear(&t->end);
    free(t);
}

/* Link into m->owned. Called with the lock held. */
static void own(manager *m, bgt_task *t)
{
    t->next = m->owned;
    if (m->owned)
        m->owned->prev = t;
    m->owned = t;
    m->nowned++;
}

static void disown(manager *m, bgt_task *t)
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

static void writeq_push(manager *m, bgt_task *t)
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

/*
 * Decide what an ended attempt writes: run the after-hooks and queue the
 * write. Called without the lock; takes it to queue.
 */
static void conclude(manager *m, bgt_task *t, end_kind kind, bgt_status status,
                     const char *message, int64_t backoff_ms)
{
    double now = mono_s();
    t->end_message = xstrdup(message);
    t->end = (attempt_end){
        .info = &t->info,
        .kind = kind,
        .status = status,
        .duration_s = t->started > 0 ? now - t->started : 0,
        .message = t->end_message,
        .result = kind == END_SUCCESS ? t->result : NULL,
        .backoff_ms = backoff_ms,
        .host_id = m->host_id,
        .retention_s = -1,
    };
    hooks_after(&m->hk, &t->end);
    static const fin_op ops[] = {[END_SUCCESS] = FIN_SUCCESS, [END_FAILURE] = FIN_FAILURE,
                                 [END_CANCELLED] = FIN_CANCELLED, [END_RETRY] = FIN_RETRY,
                                 [END_RELEASE] = FIN_RELEASE, [END_LOST] = FIN_PROGRESS};
    t->op = ops[kind];
    pthread_mutex_lock(&m->lock);
    if (kind == END_LOST) {
        disown(m, t);
        pthread_mutex_unlock(&m->lock);
        task_free(t);
        return;
    }
    writeq_push(m, t);
    pthread_mutex_unlock(&m->lock);
}

/* Backoff before retry number n (1-based): base * 2^(n-1), capped, with jitter in [50%, 100%]. */
static int64_t backoff_ms(const bgt_config *cfg, uint32_t n)
{
    double d = cfg->backoff_base_s * pow(2.0, n > 0 ? (double)(n - 1) : 0.0);
    if (d > cfg->backoff_max_s)
        d = cfg->backoff_max_s;
    unsigned r = (unsigned)random();
    d *= 0.5 + 0.5 * ((double)(r % 10000) / 10000.0);
    return (int64_t)(d * 1000);
}

/* Run one attempt on a worker thread. */
static void run_attempt(manager *m, bgt_task *t)
{
    t->started = mono_s();
    hooks_before(&m->hk, &t->info);
    bgt_status status = t->h->def.run(t, t->args, t->h->def.udata);
    int stop = atomic_load(&t->stop);

    pthread_mutex_lock(&m->lock);
    t->executing = false;
    m->nexecuting--;
    bool lost = t->lost, stuck = t->released_stuck;
    pthread_cond_signal(&m->slot_cond);
    pthread_mutex_unlock(&m->lock);

    if (stuck)
        return; /* released at shutdown while it ran: the release was written already */
    if (lost) {
        log_msg(BGT_LOG_WARNING, t->id,
                "attempt %u ended after its lease was lost; its outcome is discarded",
                t->attempt);
        conclude(m, t, END_LOST, status, "lease lost", 0);
        return;
    }
    switch (status) {
    case BGT_OK:
        conclude(m, t, END_SUCCESS, status, "Task finished", 0);
        break;
    case BGT_FAILED:
        conclude(m, t, END_FAILURE, status, t->error ? t->error : "the handler failed", 0);
        break;
    case BGT_RETRY: {
        int64_t b = backoff_ms(m->cfg, t->attempt - t->released);
        char *msg = xasprintf("attempt %u failed: %s; retrying in %.1fs", t->attempt,
                              t->error ? t->error : "the handler asked to retry",
                              (double)b / 1000.0);
        /* The record's error keeps the handler's own words. */
        conclude(m, t, END_RETRY, status, t->error ? t->error : msg, b);
        free(msg);
        break;
    }
    case BGT_CANCELLED:
        if (stop == STOP_TIMEOUT) {
            char *msg = xasprintf("timed out after %gs", t->h->def.timeout_s);
            conclude(m, t, END_FAILURE, status, msg, 0);
            free(msg);
        } else if (stop == STOP_SHUTDOWN) {
            char *msg = xasprintf("released by host %s at shutdown; attempt refunded",
                                  m->host_id);
            conclude(m, t, END_RELEASE, status, msg, 0);
            free(msg);
        } else {
            conclude(m, t, END_CANCELLED, status, "Cancelled", 0);
        }
        break;
    default: {
        char *msg = xasprintf("the handler returned an unknown status %d", (int)status);
        conclude(m, t, END_FAILURE, status, msg, 0);
        free(msg);
    }
    }
}

static void *worker_main(void *arg)
{
    manager *m = arg;
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
        run_attempt(m, t);
        pthread_mutex_lock(&m->lock);
    }
    pthread_mutex_unlock(&m->lock);
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
        pthread_mutex_unlock(&m->lock);

        int got = 0;
        double due = -1;
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
            claimed_clear(&batch[i]);
            log_debug("[%s] claimed %s, attempt %u", t->id, t->handler, t->attempt);
            pthread_mutex_lock(&m->lock);
            own(m, t);
            pthread_mutex_unlock(&m->lock);
            if (bad) {
                log_msg(BGT_LOG_ERR, t->id, "%s", bad);
                hooks_before(&m->hk, &t->info);
                conclude(m, t, END_FAILURE, BGT_FAILED, bad, 0);
                free(bad);
                continue;
            }
            pthread_mutex_lock(&m->lock);
            t->qnext = NULL;
            if (m->runq_tail)
                m->runq_tail->qnext = t;
            else
                m->runq_head = t;
            m->runq_tail = t;
            m->nqueued++;
            pthread_cond_signal(&m->work_cond);
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

/* ---- writing: progress, outcomes, heartbeats ---- */

/* Fill a write for t's pending progress (if any). Called with the lock held. */
static void take_progress(manager *m, bgt_task *t, fin_item *f, char **event)
{
    if (!t->p_dirty)
        return;
    f->has_progress = true;
    f->current = t->p_current;
    f->total = t->p_total;
    f->progress_message = t->p_message ? t->p_message : "";
    *event = event_progress_payload(&t->info, t->p_current, t->p_total, f->progress_message);
    f->progress_event = *event;
    t->p_dirty = false;
    t->p_written_at = mono_s();
}

typedef struct wbatch {
    fin_item *items;
    bgt_task **tasks;
    char **events;   /* progress payloads to free */
    char **msgs;     /* progress messages copied out of the tasks */
    size_t n, cap;
} wbatch;

static void wbatch_add(wbatch *b, bgt_task *t)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->items = xrealloc(b->items, b->cap * sizeof *b->items);
        b->tasks = xrealloc(b->tasks, b->cap * sizeof *b->tasks);
        b->events = xrealloc(b->events, b->cap * sizeof *b->events);
        b->msgs = xrealloc(b->msgs, b->cap * sizeof *b->msgs);
    }
    memset(&b->items[b->n], 0, sizeof b->items[b->n]);
    b->tasks[b->n] = t;
    b->events[b->n] = NULL;
    b->msgs[b->n] = NULL;
    b->n++;
}

static void wbatch_reset(wbatch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->events[i]);
        free(b->msgs[i]);
    }
    b->n = 0;
}

/*
 * Collect what to write now: every queued outcome (with its last progress)
 * and the progress of running attempts whose interval has passed. Called with
 * the lock held.
 */
static void collect_writes(manager *m, wbatch *b, double now)
{
    while (m->writeq_head) {
        bgt_task *t = m->writeq_head;
        m->writeq_head = t->qnext;
        if (!m->writeq_head)
            m->writeq_tail = NULL;
        wbatch_add(b, t);
        fin_item *f = &b->items[b->n - 1];
        take_progress(m, t, f, &b->events[b->n - 1]);
        if (f->has_progress) {
            b->msgs[b->n - 1] = xstrdup(f->progress_message);
            f->progress_message = b->msgs[b->n - 1];
        }
        f->op = t->op;
        f->id = t->id;
        f->handler = t->handler;
        f->attempt = t->attempt;
        f->message = t->end.message;
        f->result = t->end.result;
        f->event_name = t->end.event_name;
        f->event_payload = t->end.event_payload;
        f->backoff_ms = t->end.backoff_ms;
        f->retention_s = t->end.retention_s;
    }
    for (bgt_task *t = m->owned; t; t = t->next) {
        if (!t->p_dirty || t->finishing || t->lost || t->released_stuck)
            continue;
        if (now - t->p_written_at < m->cfg->progress_interval_s)
            continue;
        wbatch_add(b, t);
        fin_item *f = &b->items[b->n - 1];
        take_progress(m, t, f, &b->events[b->n - 1]);
        b->msgs[b->n - 1] = xstrdup(f->progress_message);
        f->progress_message = b->msgs[b->n - 1];
        f->op = FIN_PROGRESS;
        f->id = t->id;
        f->handler = t->handler;
        f->attempt = t->attempt;
    }
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
            if (f->op != FIN_PROGRESS)
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
        } else if (f->op != FIN_PROGRESS) {
            log_msg(BGT_LOG_INFO, t->id, "attempt %u: %s", t->attempt,
                    end_kind_status(t->end.kind));
        }
        if (f->op != FIN_PROGRESS && !t->released_stuck) {
            disown(m, t);
            task_free(t);
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
                t->lease_until = sent + m->cfg->lease_s;
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
        if (t->executing && t->deadline > 0 && now > t->deadline) {
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
            if (t->executing) {
                int none = STOP_NONE;
                atomic_compare_exchange_strong(&t->stop, &none, STOP_SHUTDOWN);
            }
    }
    if (m->force_stop && now >= m->grace_deadline + STUCK_GRACE_S) {
        /* Handlers that ignore the request: give their attempts back anyway. */
        for (bgt_task *t = m->owned; t; t = t->next)
            if (t->executing && !t->released_stuck && !t->lost) {
                t->released_stuck = true;
                log_msg(BGT_LOG_WARNING, t->id,
                        "attempt %u did not stop within %.0fs; releasing it", t->attempt,
                        STUCK_GRACE_S);
                bgt_task *r = xcalloc(1, sizeof *r);
                memcpy(r->id, t->id, sizeof r->id);
                memcpy(r->handler, t->handler, sizeof r->handler);
                r->attempt = t->attempt;
                r->info = (bgt_hook_info){r->id, r->handler, r->attempt, -1};
                r->op = FIN_RELEASE;
                r->end_message = xasprintf("released by host %s at shutdown; attempt refunded",
                                           m->host_id);
                r->end = (attempt_end){.info = &r->info, .kind = END_RELEASE,
                                       .message = r->end_message, .retention_s = -1};
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "task_id", r->id);
                cJSON_AddStringToObject(o, "handler", r->handler);
                cJSON_AddNumberToObject(o, "attempt", r->attempt);
                cJSON_AddNumberToObject(o, "ts_ms", (double)now_ms());
                cJSON_AddStringToObject(o, "message", r->end_message);
                r->end.event_name = "bgtask_updated";
                r->end.event_payload = cJSON_PrintUnformatted(o);
                cJSON_Delete(o);
                own(m, r);
                writeq_push(m, r);
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
        t->end_message = xasprintf("released by host %s at shutdown before it started",
                                   m->host_id);
        t->op = FIN_RELEASE;
        t->end = (attempt_end){.info = &t->info, .kind = END_RELEASE,
                               .message = t->end_message, .retention_s = -1};
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "task_id", t->id);
        cJSON_AddStringToObject(o, "handler", t->handler);
        cJSON_AddNumberToObject(o, "attempt", t->attempt);
        cJSON_AddNumberToObject(o, "ts_ms", (double)now_ms());
        cJSON_AddStringToObject(o, "message", t->end_message);
        t->end.event_name = "bgtask_updated";
        t->end.event_payload = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        writeq_push(m, t);
    }
    m->runq_tail = NULL;
}

static void *writer_main(void *arg)
{
    manager *m = arg;
    wbatch b = {0};
    double next_hb = 0, backoff = 0.05, last_ok = mono_s();
    bool was_down = false;
    pthread_mutex_lock(&m->lock);
    for (;;) {
        double now = mono_s();
        check_clocks(m, now);
        if (m->stopping)
            release_queued(m);
        bool drained = m->stopping && m->nowned == 0 && !m->writeq_head;
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
            sleep_s(backoff);
            backoff = fmin(backoff * 2, 2.0);
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
    free(b.items);
    free(b.tasks);
    free(b.events);
    free(b.msgs);
    pthread_mutex_lock(&m->lock);
    m->done = true;
    m->threads_exit = true;
    pthread_cond_broadcast(&m->work_cond);
    pthread_mutex_unlock(&m->lock);
    store_interrupt(m->st_ctl);
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
    m->hk = (hooks){.met = met, .reg = reg, .retention_s = cfg->retention_s};
    strlcpy_(m->host_id, host_id, sizeof m->host_id);
    if (gethostname(m->machine, sizeof m->machine) < 0)
        strlcpy_(m->machine, "unknown", sizeof m->machine);
    m->started_ms = now_ms();
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->work_cond, NULL);
    pthread_cond_init(&m->slot_cond, NULL);
    pthread_cond_init(&m->write_cond, NULL);
    store_limits lim = {cfg->max_args_bytes, cfg->max_result_bytes, cfg->max_subtasks,
                        cfg->events_maxlen, cfg->retention_s};
    m->st_claim = store_new(addr, cfg->redis_password, cfg->prefix);
    m->st_write = store_new(addr, cfg->redis_password, cfg->prefix);
    m->st_ctl = store_new(addr, cfg->redis_password, cfg->prefix);
    store_set_limits(m->st_claim, &lim);
    store_set_limits(m->st_write, &lim);
    store_set_limits(m->st_ctl, &lim);
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
    if ((rc = pthread_create(&m->writer, NULL, writer_main, m)) != 0 ||
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

void manager_free(manager *m)
{
    if (!m)
        return;
    if (m->started) {
        pthread_join(m->dispatcher, NULL);
        pthread_join(m->writer, NULL);
        pthread_join(m->control, NULL);
        /* Workers still inside a handler that ignored the stop request are left
         * behind (the process is exiting); the others are joined. */
        pthread_mutex_lock(&m->lock);
        bool stuck = false;
        for (bgt_task *t = m->owned; t; t = t->next)
            stuck |= t->released_stuck && t->executing;
        pthread_mutex_unlock(&m->lock);
        for (int i = 0; i < m->nworkers; i++)
            if (stuck)
                pthread_detach(m->workers[i]);
            else
                pthread_join(m->workers[i], NULL);
        if (stuck)
            return; /* attempts still reference m */
    }
    while (m->owned) {
        bgt_task *t = m->owned;
        disown(m, t);
        task_free(t);
    }
    store_free(m->st_claim);
    store_free(m->st_write);
    store_free(m->st_ctl);
    free(m->workers);
    free(m->hs);
    free(m->handler_list);
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->work_cond);
    pthread_cond_destroy(&m->slot_cond);
    pthread_cond_destroy(&m->write_cond);
    free(m);
}

/* ---- the task side of the host table ---- */

const char *task_api_id(const bgt_task *t) { return t->id; }
const char *task_api_handler(const bgt_task *t) { return t->handler; }
uint32_t task_api_attempt(const bgt_task *t) { return t->attempt; }
int task_api_subtask(const bgt_task *t) { return t->subtask; }

void task_api_progress(bgt_task *t, double current, double total, const char *message)
{
    manager *m = t->m;
    if (!isfinite(current) || !isfinite(total))
        return;
    char *copy = message ? strndup(message, 1024) : NULL;
    pthread_mutex_lock(&m->lock);
    if (t->p_dirty)
        metrics_inc(m->met, MC_PROGRESS_COALESCED, 1);
    t->p_current = current;
    t->p_total = total;
    free(t->p_message);
    t->p_message = copy;
    bool first = !t->p_dirty;
    t->p_dirty = true;
    if (first && mono_s() - t->p_written_at >= m->cfg->progress_interval_s)
        pthread_cond_signal(&m->write_cond);
    pthread_mutex_unlock(&m->lock);
    hooks_progress(&m->hk, &t->info, current, total, message);
}

void task_api_last_progress(const bgt_task *t, double *current, double *total)
{
    if (current)
        *current = t->last_current;
    if (total)
        *total = t->last_total;
}

bool task_api_cancelled(const bgt_task *t)
{
    return atomic_load_explicit(&((bgt_task *)t)->stop, memory_order_relaxed) != STOP_NONE;
}

int task_api_set_result(bgt_task *t, const cJSON *result)
{
    if (!result)
        return -EINVAL;
    char *s = cJSON_PrintUnformatted(result);
    if (!s)
        return -ENOMEM;
    if (strlen(s) > t->m->cfg->max_result_bytes) {
        log_msg(BGT_LOG_WARNING, t->id, "result of %zu bytes is over the limit of %zu",
                strlen(s), t->m->cfg->max_result_bytes);
        free(s);
        return -E2BIG;
    }
    free(t->result);
    t->result = s;
    return 0;
}

void task_api_set_error(bgt_task *t, const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        return;
    if (strlen(s) > 4096)
        s[4096] = '\0';
    free(t->error);
    t->error = s;
}

void task_api_log(bgt_task *t, int level, const char *fmt, va_list ap)
{
    log_vmsg(level, t->id, fmt, ap);
}

int task_api_add_subtask(bgt_task *t, const cJSON *args)
{
    (void)t;
    (void)args;
    return -EPERM; /* only inside a split function: parallel tasks have none yet */
}

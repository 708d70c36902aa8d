/*
 * attempt.c - the manager's attempts, the queues they travel through (run
 * queue, write queue, done queue), and the one lock the manager's threads
 * share (manager_int.h has its rules). Every thread of the manager uses what
 * is here; nothing here calls back into them.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager_int.h"
#include "util.h"

/* ---- the lock ---- */

/* How many times this thread holds a manager's lock (0 or 1: it is not recursive). */
static __thread int locks_held;

void mgr__lock(manager *m)
{
    pthread_mutex_lock(&m->lock);
    locks_held++;
}

void mgr__unlock(manager *m)
{
    locks_held--;
    pthread_mutex_unlock(&m->lock);
}

void mgr__wait(manager *m, pthread_cond_t *cond, double timeout_s)
{
    if (timeout_s < 0) {
        pthread_cond_wait(cond, &m->lock);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double at = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + timeout_s;
    ts.tv_sec = (time_t)at;
    ts.tv_nsec = (long)((at - floor(at)) * 1e9);
    pthread_cond_timedwait(cond, &m->lock, &ts);
}

void mgr__assert_unlocked(void)
{
    if (locks_held) {
        log_err("internal error: plugin code called with the manager's lock held");
        abort();
    }
}

void mgr__name_thread(const char *fmt, ...)
{
    char name[16]; /* the kernel's limit, NUL included */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    pthread_setname_np(pthread_self(), name);
}

/* ---- attempts and queues ---- */

void mgr__task_free(bgt_task *t)
{
    if (!t)
        return;
    par_free(t->par);
    for (int i = 0; i < t->nsplit; i++)
        free(t->split_items[i]);
    free(t->split_items);
    free(t->bad);
    free(t->args_text);
    cJSON_Delete(t->args);
    free(t->p_message);
    for (int i = 0; i < t->nlogs; i++)
        free(t->logs[i]);
    free(t->logs);
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

/* Append t to the queue head/tail. */
static void enqueue(bgt_task **head, bgt_task **tail, bgt_task *t)
{
    t->qnext = NULL;
    if (*tail)
        (*tail)->qnext = t;
    else
        *head = t;
    *tail = t;
}

void mgr__wake_worker(manager *m)
{
    /* One wake-up in flight at a time: short jobs are taken by the workers that are
     * awake already (no futex call and no context switch per job), and long ones still
     * spread, each worker that takes one waking the next. */
    if (m->runq_head && m->nidle > 0 && m->nwaking == 0) {
        m->nwaking++;
        pthread_cond_signal(&m->work_cond);
    }
}

void mgr__runq_push(manager *m, bgt_task *t, mgr_job job)
{
    t->job = job;
    enqueue(&m->runq_head, &m->runq_tail, t);
    m->nqueued++;
    mgr__wake_worker(m);
}

void mgr__writeq_push(manager *m, bgt_task *t)
{
    bool was_empty = !m->writeq_head;
    enqueue(&m->writeq_head, &m->writeq_tail, t);
    m->nwriteq++;
    t->finishing = true;
    /* The writer wants to know when there is something, and when there is a batch. */
    if (was_empty || m->nwriteq == WRITE_BATCH_WANT)
        pthread_cond_signal(&m->write_cond);
}

void mgr__hand_back(manager *m, bgt_task *t)
{
    bool was_empty = !m->doneq_head;
    enqueue(&m->doneq_head, &m->doneq_tail, t);
    if (was_empty)
        pthread_cond_signal(&m->mgr_cond);
}

void mgr__job_start(manager *m, bgt_task *t)
{
    t->executing = true;
    m->nexecuting++;
    t->rprev = NULL;
    t->rnext = m->running;
    if (m->running)
        m->running->rprev = t;
    m->running = t;
}

bool mgr__job_end(manager *m, bgt_task *t)
{
    if (t->rprev)
        t->rprev->rnext = t->rnext;
    else
        m->running = t->rnext;
    if (t->rnext)
        t->rnext->rprev = t->rprev;
    t->rprev = t->rnext = NULL;
    t->executing = false;
    if (t->written_off)
        return true; /* not counted any more since it was written off */
    m->nexecuting--;
    pthread_cond_signal(&m->slot_cond);
    return false;
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

/* ---- parallel tasks: what runs where ---- */

par_ctx mgr__par_ctx(const manager *m, const bgt_task *t, double now)
{
    static const par_stop stops[] = {[STOP_NONE] = PAR_GO,
                                     [STOP_CANCEL] = PAR_STOP_CANCEL,
                                     [STOP_LOST] = PAR_STOP_LOST,
                                     [STOP_TIMEOUT] = PAR_STOP_TIMEOUT,
                                     [STOP_SHUTDOWN] = PAR_STOP_SHUTDOWN};
    int stop = atomic_load(&((bgt_task *)t)->stop);
    return (par_ctx){
        .stop = t->lost ? PAR_STOP_LOST : stops[stop], .draining = m->stopping, .now = now};
}

/* Queue subtask i of t to run. (L) */
static void start_subtask(manager *m, bgt_task *t, int i)
{
    const par_sub *s = &t->par->subs[i];
    bgt_task *st = xcalloc(1, sizeof *st);
    st->m = m;
    st->h = t->h;
    st->parent = t;
    memcpy(st->id, t->id, sizeof st->id);
    memcpy(st->handler, t->handler, sizeof st->handler);
    st->subtask = i;
    st->attempt = s->attempt + 1;
    memcpy(st->token, t->token, sizeof st->token);
    st->max_attempts = t->max_attempts;
    st->args_text = xstrdup(s->args ? s->args : "{}");
    st->info = (bgt_hook_info){t->id, t->handler, t->attempt, i};
    st->ev = -1;
    mgr__runq_push(m, st, JOB_SUBTASK);
}

void mgr__par_schedule(manager *m, bgt_task *t, double now)
{
    par *p = t->par;
    if (!p || p->concluded || t->finishing)
        return;
    par_ctx c = mgr__par_ctx(m, t, now);
    for (int i; (i = par_next(p, &c)) >= 0;)
        start_subtask(m, t, i);
    if (par_take_conclusion(p, &c))
        mgr__runq_push(m, t, JOB_CONCLUDE);
}

/*
 * parallel.c - parallel tasks. One host claims the whole task (one attempt,
 * one lease); on a worker it splits it once (the split is persisted, fenced,
 * so recovery never splits again), loads the subtasks' states, and queues the
 * unfinished ones on the worker pool, at most `parallelism` at once. Each
 * subtask's outcome is a fenced write that Redis counts once. When every
 * subtask has ended the task ends: all succeeded -> SUCCESS (bgtask_done);
 * some failed -> SUCCESS with bgtask_partial_success; all failed, or one
 * failed under fail_fast -> FAILURE; cancelled -> CANCELLED. A host that dies
 * leaves the finished subtasks finished: the next claim runs only the rest.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager_int.h"
#include "util.h"

void mgr__par_free(par *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n; i++) {
        free(p->subs[i].args);
        free(p->subs[i].result);
        free(p->subs[i].message);
    }
    free(p->subs);
    free(p);
}

static void conclude_claimed(manager *m, bgt_task *t);

/* The worker's own store, connected on first use. */
static store *worker_store(manager *m, store **wst)
{
    if (!*wst)
        *wst = store_open(m->cfg, &m->addr);
    return *wst;
}

/*
 * The subtasks of a task not split yet: its split function's, else the
 * array args.subtasks. Fills t->split_items; *why says what is wrong.
 */
static bgt_status get_items(manager *m, bgt_task *t, char **why)
{
    *why = NULL;
    const bgt_handler_def *d = &t->h->def;
    if (d->split) {
        t->in_split = true;
        bgt_status s = d->split(t, t->args, d->udata);
        t->in_split = false;
        if (s != BGT_OK) {
            /* At the limit, bgt_add_subtask refused the next one: name the setting, which
             * the plugin cannot know. */
            if (t->nsplit >= m->cfg->max_subtasks)
                *why = xasprintf("split failed: more than %d subtasks (tasks.max_subtasks): %s",
                                 m->cfg->max_subtasks, t->error ? t->error : "no reason given");
            else
                *why = xasprintf("split failed: %s", t->error ? t->error : "no reason given");
            return s;
        }
    } else {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(t->args, "subtasks");
        if (!cJSON_IsArray(arr)) {
            *why = xasprintf("handler %s is parallel: give the task subtasks, or args.subtasks "
                             "as an array",
                             t->handler);
            return BGT_FAILED;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, arr)
        {
            t->in_split = true;
            int rc = task_api_add_subtask(t, it);
            t->in_split = false;
            if (rc == -E2BIG) {
                *why = xasprintf("more than %d subtasks (tasks.max_subtasks)",
                                 m->cfg->max_subtasks);
                return BGT_FAILED;
            }
        }
    }
    if (t->nsplit == 0)
        return BGT_OK; /* nothing to do: the task succeeds at once (see nothing_to_do) */
    /* batch_size groups consecutive items into one subtask. */
    int bs = d->batch_size;
    if (bs > 1) {
        int nb = (t->nsplit + bs - 1) / bs;
        char **batches = xcalloc((size_t)nb, sizeof *batches);
        for (int b = 0; b < nb; b++) {
            cJSON *o = cJSON_CreateObject();
            cJSON *items = cJSON_AddArrayToObject(o, "items");
            for (int i = b * bs; i < t->nsplit && i < (b + 1) * bs; i++)
                cJSON_AddItemToArray(items, cJSON_Parse(t->split_items[i]));
            cJSON_AddNumberToObject(o, "first", b * bs);
            batches[b] = cJSON_PrintUnformatted(o);
            cJSON_Delete(o);
        }
        for (int i = 0; i < t->nsplit; i++)
            free(t->split_items[i]);
        free(t->split_items);
        t->split_items = batches;
        t->nsplit = t->split_cap = nb;
    }
    return BGT_OK;
}

/* Make a store call until it stops failing for want of Redis, or the attempt must stop. */
#define WITH_REDIS(t, rc, call)                                                 \
    do {                                                                        \
        double back = 0.05;                                                     \
        while (((rc) = (call)) == -EIO && atomic_load(&(t)->stop) == STOP_NONE) { \
            sleep_s(back);                                                      \
            back = fmin(back * 2, 2.0);                                         \
        }                                                                       \
    } while (0)

/*
 * The end of a setup that could not start the subtasks: the split failed
 * (status from the split function), or Redis refused or was gone (lost).
 */
static void setup_failed(manager *m, bgt_task *t, bgt_status status, const char *why, bool lost)
{
    int stop = atomic_load(&t->stop);
    if (mgr__end_executing(m, t) || lost || stop == STOP_LOST) {
        log_msg(BGT_LOG_WARNING, t->id, "attempt %u lost its lease during setup", t->attempt);
        mgr__conclude(m, t, END_LOST, status, "lease lost", 0, NULL, 0);
        return;
    }
    if (status == BGT_RETRY || status == BGT_CANCELLED) {
        free(t->error);
        t->error = xstrdup(why);
        mgr__conclude_status(m, t, status, stop);
        return;
    }
    mgr__conclude(m, t, END_FAILURE, BGT_FAILED, why, 0, NULL, 0);
}

/*
 * A split with no items: there is nothing to do, and the task succeeds at
 * once, with its merge of no results (or zero counts) as its result. Nothing
 * was persisted, so a recovery would split again and find the same.
 */
static void nothing_to_do(manager *m, bgt_task *t)
{
    if (mgr__end_executing(m, t)) {
        mgr__conclude(m, t, END_LOST, BGT_OK, "lease lost", 0, NULL, 0);
        return;
    }
    bgt_status ms = BGT_OK;
    if (t->h->def.merge) {
        cJSON *none = cJSON_CreateArray();
        ms = t->h->def.merge(t, none, t->h->def.udata);
        cJSON_Delete(none);
    } else {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "succeeded", 0);
        cJSON_AddNumberToObject(o, "failed", 0);
        task_api_set_result(t, o);
        cJSON_Delete(o);
    }
    if (ms != BGT_OK) {
        char *msg = xasprintf("merge failed: %s", t->error ? t->error : "no reason given");
        mgr__conclude(m, t, END_FAILURE, BGT_FAILED, msg, 0, NULL, 0);
        free(msg);
        return;
    }
    mgr__conclude(m, t, END_SUCCESS, BGT_OK, "no subtasks: nothing to do", 0, NULL, 0);
}

/* Queue subtask i of t. Lock held. */
static void start_subtask(manager *m, bgt_task *t, int i)
{
    par *p = t->par;
    par_sub *s = &p->subs[i];
    if (s->state == SUB_WAITING)
        p->waiting--;
    s->state = SUB_RUNNING;
    s->frac = 0;
    p->inflight++;
    bgt_task *st = xcalloc(1, sizeof *st);
    st->m = m;
    st->h = t->h;
    st->parent = t;
    memcpy(st->id, t->id, sizeof st->id);
    memcpy(st->handler, t->handler, sizeof st->handler);
    st->subtask = i;
    st->attempt = s->attempt + 1;
    st->max_attempts = t->max_attempts;
    st->args_text = xstrdup(s->args ? s->args : "{}");
    st->info = (bgt_hook_info){t->id, t->handler, t->attempt, i};
    mgr__runq_push(m, st);
}

/* Queue what may run now. Lock held. */
static void schedule(manager *m, bgt_task *t, double now)
{
    par *p = t->par;
    if (p->halt || atomic_load(&t->stop) != STOP_NONE || m->stopping)
        return;
    if (p->waiting > 0)
        for (int i = 0; i < p->n && p->inflight < p->limit; i++)
            if (p->subs[i].state == SUB_WAITING && p->subs[i].retry_at <= now)
                start_subtask(m, t, i);
    while (p->inflight < p->limit && p->next < p->n) {
        if (p->subs[p->next].state == SUB_PENDING)
            start_subtask(m, t, p->next);
        p->next++;
    }
}

/* True when nothing of t runs or will run. Lock held. */
static bool finished(manager *m, const bgt_task *t)
{
    const par *p = t->par;
    if (p->inflight > 0 || p->concluded)
        return false;
    if (p->halt || atomic_load(&((bgt_task *)t)->stop) != STOP_NONE || m->stopping || t->lost)
        return true;
    if (p->waiting > 0)
        return false;
    for (int i = p->next; i < p->n; i++)
        if (p->subs[i].state == SUB_PENDING)
            return false;
    return true;
}

void mgr__parallel_run(manager *m, bgt_task *t, store **wst)
{
    t->started = mono_s();
    hooks_before(&m->hk, &t->info);
    store *st = worker_store(m, wst);
    int rc;
    int n = t->claimed_subtasks;
    if (n == 0) {
        char *why = NULL;
        bgt_status s = get_items(m, t, &why);
        if (s != BGT_OK) {
            setup_failed(m, t, s, why, false);
            free(why);
            return;
        }
        if (t->nsplit == 0) {
            nothing_to_do(m, t);
            return;
        }
        WITH_REDIS(t, rc, store_split(st, m->host_id, t->id, t->attempt, t->split_items,
                                      t->nsplit));
        if (rc < 0) {
            setup_failed(m, t, BGT_CANCELLED, "could not persist the split", true);
            return;
        }
        log_msg(BGT_LOG_INFO, t->id, "split into %d subtasks", t->nsplit);
        n = t->nsplit;
        for (int i = 0; i < t->nsplit; i++)
            free(t->split_items[i]);
        free(t->split_items);
        t->split_items = NULL;
        t->nsplit = t->split_cap = 0;
    }
    sub_rec *recs = NULL;
    WITH_REDIS(t, rc, store_load_subtasks(st, t->id, n, &recs));
    if (rc < 0) {
        setup_failed(m, t, BGT_CANCELLED, "could not read the subtasks", true);
        return;
    }
    par *p = xcalloc(1, sizeof *p);
    p->n = n;
    p->subs = xcalloc((size_t)n, sizeof *p->subs);
    p->failed_first = -1;
    const bgt_handler_def *d = &t->h->def;
    p->limit = t->claimed_parallelism > 0 ? t->claimed_parallelism
               : d->parallelism > 0       ? d->parallelism
                                          : m->cfg->parallelism;
    p->fail_fast = t->claimed_fail_fast >= 0 ? t->claimed_fail_fast == 1
                                             : d->on_failure == BGT_FAIL_FAST;
    int resumed = 0;
    for (int i = 0; i < n; i++) {
        par_sub *s = &p->subs[i];
        s->args = recs[i].args;
        s->result = recs[i].result;
        s->message = recs[i].message;
        recs[i].args = recs[i].result = recs[i].message = NULL;
        s->attempt = recs[i].attempt;
        if (strcmp(recs[i].state, "SUCCESS") == 0)
            s->state = SUB_SUCCESS, p->nsuccess++, resumed++;
        else if (strcmp(recs[i].state, "FAILURE") == 0)
            s->state = SUB_FAILURE, p->nfailure++, resumed++;
        else
            s->state = SUB_PENDING;
    }
    store_sub_recs_free(recs, n);
    if (resumed)
        log_msg(BGT_LOG_INFO, t->id, "%d of %d subtasks already finished; running the rest",
                resumed, n);

    pthread_mutex_lock(&m->lock);
    t->par = p;
    t->executing = false;
    m->nexecuting--;
    pthread_cond_signal(&m->slot_cond);
    t->p_current = p->nsuccess + p->nfailure;
    t->p_total = n;
    t->p_dirty = true;
    schedule(m, t, mono_s());
    /* Claim the conclusion under the lock: the writer's tick then leaves t alone,
     * so it cannot conclude, write and free t before this thread gets to it. */
    bool done = finished(m, t);
    p->concluded |= done;
    pthread_mutex_unlock(&m->lock);
    if (done)
        conclude_claimed(m, t);
}

/* Record how subtask st ended. Lock held. Returns the state written, or NULL for none. */
static const char *record_outcome(manager *m, bgt_task *st, bgt_status status, int stop)
{
    bgt_task *t = st->parent;
    par *p = t->par;
    par_sub *s = &p->subs[st->subtask];
    p->frac_sum -= s->frac;
    s->frac = 0;
    s->attempt = st->attempt;
    p->inflight--;
    int tstop = atomic_load(&t->stop);
    if (tstop == STOP_LOST || t->lost) {
        s->state = SUB_PENDING;
        return NULL; /* the task's lease is gone: nothing may be written */
    }
    switch (status) {
    case BGT_OK:
        s->state = SUB_SUCCESS;
        p->nsuccess++;
        free(s->result);
        s->result = xstrdup(st->result);
        return "SUCCESS";
    case BGT_RETRY:
        if (tstop != STOP_NONE || p->halt)
            goto stopped;
        if ((int)st->attempt < t->max_attempts) {
            s->state = SUB_WAITING;
            p->waiting++;
            s->retry_at = mono_s() + (double)mgr__backoff_ms(m->cfg, st->attempt) / 1000.0;
            free(st->end_message);
            st->end_message = xasprintf("attempt %u failed: %s", st->attempt,
                                        st->error ? st->error : "retry");
            return "RETRY";
        }
        free(st->end_message);
        st->end_message = xasprintf("gave up after %u attempts: %s", st->attempt,
                                    st->error ? st->error : "the handler asked to retry");
        break;
    case BGT_CANCELLED:
    stopped:
        if (tstop == STOP_SHUTDOWN || (m->stopping && tstop == STOP_NONE && !p->halt)) {
            s->state = SUB_PENDING; /* runs again after the release */
            return NULL;
        }
        if (tstop == STOP_TIMEOUT) {
            free(st->end_message);
            st->end_message = xasprintf("timed out after %gs", t->h->def.timeout_s);
            break;
        }
        s->state = SUB_CANCELLED;
        p->ncancelled++;
        free(st->end_message);
        st->end_message = xstrdup("Cancelled");
        return "CANCELLED";
    case BGT_FAILED:
        free(st->end_message);
        st->end_message = xstrdup(st->error ? st->error : "the handler failed");
        break;
    default:
        free(st->end_message);
        st->end_message = xasprintf("the handler returned an unknown status %d", (int)status);
    }
    s->state = SUB_FAILURE;
    p->nfailure++;
    free(s->message);
    s->message = xstrdup(st->end_message);
    if (p->fail_fast && !p->halt) {
        __atomic_store_n(&p->halt, true, __ATOMIC_RELAXED);
        p->failed_first = st->subtask;
    }
    return "FAILURE";
}

void mgr__subtask_run(manager *m, bgt_task *st)
{
    bgt_task *t = st->parent;
    st->started = mono_s();
    hooks_before(&m->hk, &st->info);
    bgt_status status;
    if (!(st->args = cJSON_Parse(st->args_text))) {
        st->error = xstrdup("corrupted subtask record: args is not valid JSON");
        status = BGT_FAILED;
    } else if (task_api_cancelled(st)) {
        /* Its task stopped (cancel, fail_fast, timeout, shutdown) while it waited in the
         * run queue: it never starts, and ends as if it had seen the stop at once. */
        status = BGT_CANCELLED;
    } else {
        status = t->h->def.run(st, st->args, t->h->def.udata);
    }
    int stop = atomic_load(&st->stop);
    /* What the after-hooks need, copied: once queued, st belongs to the writer. */
    char id[BGT_ID_LEN + 1], name[BGT_NAME_MAX + 1];
    memcpy(id, st->id, sizeof id);
    memcpy(name, st->handler, sizeof name);
    bgt_hook_info info = {id, name, st->info.attempt, st->subtask};
    double duration = mono_s() - st->started;

    pthread_mutex_lock(&m->lock);
    st->executing = false;
    m->nexecuting--;
    pthread_cond_signal(&m->slot_cond);
    const char *state = record_outcome(m, st, status, stop);
    char *message = NULL;
    if (state) {
        st->op = FIN_SUBTASK;
        st->sub_state_name = state;
        message = xstrdup(st->end_message);
        /* Progress of the task: the subtasks done, plus the running ones' shares. */
        par *p = t->par;
        t->p_current = p->nsuccess + p->nfailure + p->ncancelled + p->frac_sum;
        t->p_total = p->n;
        free(t->p_message);
        t->p_message = xasprintf("%d of %d subtasks done", p->nsuccess + p->nfailure, p->n);
        t->p_dirty = true;
        mgr__writeq_push(m, st);
    }
    schedule(m, t, mono_s());
    /* Claimed under the lock (see mgr__parallel_run): t stays alive until concluded here. */
    bool done = finished(m, t);
    t->par->concluded |= done;
    pthread_mutex_unlock(&m->lock);

    /* Plugin hooks and metrics see each subtask end. */
    end_kind kind = !state                             ? END_LOST
                    : strcmp(state, "SUCCESS") == 0   ? END_SUCCESS
                    : strcmp(state, "RETRY") == 0     ? END_RETRY
                    : strcmp(state, "CANCELLED") == 0 ? END_CANCELLED
                                                      : END_FAILURE;
    hooks_after(&m->hk, &info, kind, status, duration, message);
    free(message);
    if (!state)
        mgr__task_free(st);
    if (done)
        conclude_claimed(m, t);
}

void mgr__subtask_drop(manager *m, bgt_task *st)
{
    par *p = st->parent->par;
    par_sub *s = &p->subs[st->subtask];
    s->state = SUB_PENDING;
    p->inflight--;
    mgr__task_free(st);
}

bool mgr__parallel_tick(manager *m, bgt_task *t, double now)
{
    if (!t->par || t->par->concluded || t->finishing)
        return false;
    schedule(m, t, now);
    return finished(m, t);
}

/* "subtask i: message" for each failed subtask (a malloc'd array of *n malloc'd lines). */
static char **errors_list(const par *p, size_t *n)
{
    char **v = xcalloc((size_t)p->nfailure + 1, sizeof *v);
    *n = 0;
    for (int i = 0; i < p->n; i++)
        if (p->subs[i].state == SUB_FAILURE)
            v[(*n)++] = xasprintf("subtask %d: %s", i,
                                  p->subs[i].message ? p->subs[i].message : "failed");
    return v;
}

void mgr__parallel_conclude(manager *m, bgt_task *t)
{
    pthread_mutex_lock(&m->lock);
    par *p = t->par;
    if (p->concluded || p->inflight > 0) {
        pthread_mutex_unlock(&m->lock);
        return;
    }
    p->concluded = true;
    pthread_mutex_unlock(&m->lock);
    conclude_claimed(m, t);
}

/* Conclude t, whose conclusion this thread claimed by setting p->concluded under the lock. */
static void conclude_claimed(manager *m, bgt_task *t)
{
    pthread_mutex_lock(&m->lock);
    par *p = t->par;
    int stop = atomic_load(&t->stop);
    bool lost = t->lost || stop == STOP_LOST, stuck = t->released_stuck;
    int pending = p->n - p->nsuccess - p->nfailure - p->ncancelled;
    bool release = !lost && (stop == STOP_SHUTDOWN ||
                             (m->stopping && pending > 0 && stop == STOP_NONE &&
                              p->failed_first < 0));
    pthread_mutex_unlock(&m->lock);

    if (stuck)
        return; /* already released */
    if (lost) {
        log_msg(BGT_LOG_WARNING, t->id, "attempt %u lost its lease; its subtasks stopped",
                t->attempt);
        mgr__conclude(m, t, END_LOST, BGT_CANCELLED, "lease lost", 0, NULL, 0);
        return;
    }
    char *msg = NULL;
    if (release) {
        msg = xasprintf("released by host %s at shutdown with %d of %d subtasks left; "
                        "attempt refunded",
                        m->host_id, pending, p->n);
        mgr__conclude(m, t, END_RELEASE, BGT_CANCELLED, msg, 0, NULL, 0);
    } else if (stop == STOP_CANCEL) {
        msg = xasprintf("Cancelled (%d of %d subtasks had finished)", p->nsuccess + p->nfailure,
                        p->n);
        mgr__conclude(m, t, END_CANCELLED, BGT_CANCELLED, msg, 0, NULL, 0);
    } else if (stop == STOP_TIMEOUT) {
        msg = xasprintf("timed out after %gs", t->h->def.timeout_s);
        mgr__conclude(m, t, END_FAILURE, BGT_FAILED, msg, 0, NULL, 0);
    } else if (p->failed_first >= 0) {
        const par_sub *f = &p->subs[p->failed_first];
        msg = xasprintf("subtask %d failed: %s; the others were stopped (on_failure = fail_fast)",
                        p->failed_first, f->message ? f->message : "failed");
        mgr__conclude(m, t, END_FAILURE, BGT_FAILED, msg, 0, NULL, 0);
    } else if (p->nsuccess == 0) {
        const par_sub *f = NULL;
        for (int i = 0; i < p->n && !f; i++)
            if (p->subs[i].state == SUB_FAILURE)
                f = &p->subs[i];
        msg = xasprintf("all %d subtasks failed (first: %s)", p->n,
                        f && f->message ? f->message : "no message");
        mgr__conclude(m, t, END_FAILURE, BGT_FAILED, msg, 0, NULL, 0);
    } else {
        /* The result: the handler's merge of the subtasks' results, or a count. */
        bgt_status ms = BGT_OK;
        if (t->h->def.merge) {
            cJSON *results = cJSON_CreateArray();
            for (int i = 0; i < p->n; i++) {
                cJSON *r = p->subs[i].state == SUB_SUCCESS && p->subs[i].result
                               ? cJSON_Parse(p->subs[i].result)
                               : NULL;
                cJSON_AddItemToArray(results, r ? r : cJSON_CreateNull());
            }
            ms = t->h->def.merge(t, results, t->h->def.udata);
            cJSON_Delete(results);
        } else {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "succeeded", p->nsuccess);
            cJSON_AddNumberToObject(o, "failed", p->nfailure);
            task_api_set_result(t, o);
            cJSON_Delete(o);
        }
        if (ms != BGT_OK) {
            msg = xasprintf("merge failed: %s", t->error ? t->error : "no reason given");
            mgr__conclude(m, t, END_FAILURE, BGT_FAILED, msg, 0, NULL, 0);
        } else if (p->nfailure == 0) {
            msg = xasprintf("all %d subtasks succeeded", p->n);
            mgr__conclude(m, t, END_SUCCESS, BGT_OK, msg, 0, NULL, 0);
        } else {
            size_t nerrs;
            char **errs = errors_list(p, &nerrs);
            msg = xasprintf("%d of %d subtasks succeeded, %d failed", p->nsuccess, p->n,
                            p->nfailure);
            mgr__conclude(m, t, END_SUCCESS, BGT_OK, msg, 0, errs, nerrs);
        }
    }
    free(msg);
}

size_t mgr__parallel_progress_event(const bgt_task *t, ev_buf *b, const ev_head *h,
                                    const char *message)
{
    const par *p = t->par;
    size_t off = ev_progress_sub_open(b, h, t->p_current, t->p_total, message, p->n,
                                      p->nsuccess, p->nfailure);
    for (int i = 0; i < p->n; i++)
        if (p->subs[i].state == SUB_RUNNING)
            ev_progress_sub_running(b, i, p->subs[i].frac);
    ev_progress_sub_close(b);
    return off;
}

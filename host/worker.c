/*
 * worker.c - what the worker threads run: every job of the run queue. A job
 * is an attempt with what to do with it: run a single attempt; set a parallel
 * task up (split it once, persist the split, load its subtasks, start them);
 * run one subtask; conclude a parallel task (merge); fail a claim that cannot
 * run. Plugin code (run, split, merge, every hook callback) runs here and
 * nowhere else, never with the manager's lock held (mgr__assert_unlocked
 * says so before each call). Each job ends by concluding its attempt: the
 * after-hooks run, the attempt's ending and event are decided, and it is
 * queued for the writer. Two jobs of an isolated plugin's single run hold no
 * plugin code of this process and may run elsewhere while no plugin has a
 * hook: its hand-off on the dispatcher that claimed it, and its end on the
 * io thread that learned it (mgr__hand_off_here, mgr__end_handed_here).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager_int.h"
#include "subtasks.h"
#include "task_api.h"
#include "util.h"

/* ---- concluding ---- */

/* The event an attempt's end publishes (a partial success has errors), or -1 for none. */
static int end_event(end_kind kind, size_t nerrors)
{
    static const int evs[] = {
        [END_SUCCESS] = EV_DONE,  [END_FAILURE] = EV_FAILED,  [END_CANCELLED] = EV_CANCELLED,
        [END_RETRY] = EV_UPDATED, [END_RELEASE] = EV_UPDATED, [END_LOST] = -1};
    return kind == END_SUCCESS && nerrors > 0 ? EV_PARTIAL_SUCCESS : evs[kind];
}

void mgr__conclude(manager *m, bgt_task *t, end_kind kind, bgt_status status, const char *message,
                   int64_t backoff_ms, char **errors, size_t nerrors)
{
    double now = mono_s();
    t->end_message = xstrdup(message);
    t->end = kind;
    t->ev = end_event(kind, nerrors);
    t->ended_ms = now_ms();
    t->backoff_ms = backoff_ms;
    t->errors = errors;
    t->nerrors = nerrors;
    mgr__assert_unlocked();
    hooks_after(&m->hk, &t->info, kind, nerrors > 0, status, t->started > 0 ? now - t->started : 0,
                t->error ? t->error : t->end_message);
    static const fin_op ops[] = {
        [END_SUCCESS] = FIN_SUCCESS, [END_FAILURE] = FIN_FAILURE, [END_CANCELLED] = FIN_CANCELLED,
        [END_RETRY] = FIN_RETRY,     [END_RELEASE] = FIN_RELEASE, [END_LOST] = FIN_PROGRESS};
    t->op = ops[kind];
    mgr__lock(m);
    if (kind == END_LOST && !t->refused && !t->given_up && t->subtask < 0) {
        /* Lost by this host's own clock (its lease ran out) and not given up yet: give it
         * up in Redis, so that it runs again (FIN_LOST); fenced out if another host has
         * taken it meanwhile. */
        t->lost = true;
        t->given_up = true;
        t->op = FIN_LOST;
        t->ev = -1;
    } else if (kind == END_LOST) {
        /* Nothing to write, but the writer hands it back to be freed: a heartbeat it has
         * in flight may still point at this one. */
        t->lost = true;
        t->drop = true;
    }
    mgr__writeq_push(m, t);
    mgr__unlock(m);
}

/* Conclude a single attempt from its handler's status and the stop reason. */
static void conclude_status(manager *m, bgt_task *t, bgt_status status, int stop)
{
    switch (status) {
    case BGT_OK: mgr__conclude(m, t, END_SUCCESS, status, "Task finished", 0, NULL, 0); break;
    case BGT_FAILED:
        mgr__conclude(m, t, END_FAILURE, status, t->error ? t->error : "the handler failed", 0,
                      NULL, 0);
        break;
    case BGT_RETRY: {
        if ((int)(t->attempt - t->released) >= t->max_attempts) {
            /* Its last attempt: no more runs. */
            char *msg = xasprintf("gave up after %u attempts: %s", t->attempt - t->released,
                                  t->error ? t->error : "the handler asked to retry");
            mgr__conclude(m, t, END_FAILURE, status, msg, 0, NULL, 0);
            free(msg);
            break;
        }
        int64_t b = mgr__backoff_ms(m->cfg, t->attempt - t->released);
        char *msg =
            xasprintf("attempt %u failed: %s; retrying in %.1fs", t->attempt,
                      t->error ? t->error : "the handler asked to retry", (double)b / 1000.0);
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
            char *msg = xasprintf("released by host %s at shutdown; attempt refunded", m->host_id);
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

/* The job of t ends (its plugin code returned): true when its outcome no longer counts
 * (the lease was lost, or it was released or written off while it ran). */
static bool end_job(manager *m, bgt_task *t)
{
    mgr__lock(m);
    mgr__job_end(m, t);
    bool gone = t->lost || t->released_stuck;
    mgr__unlock(m);
    return gone;
}

/* Whether t was released at shutdown while its job ran (that release is written). */
static bool was_released(manager *m, bgt_task *t)
{
    mgr__lock(m);
    bool stuck = t->released_stuck;
    mgr__unlock(m);
    return stuck;
}

/* ---- single attempts, and claims that cannot run ---- */

/* The rest of a single attempt once its run returned status. True when it was written off
 * while it ran: the worker leaves. */
static bool end_single(manager *m, bgt_task *t, bgt_status status)
{
    int stop = atomic_load(&t->stop);

    if (!end_job(m, t) && stop != STOP_LOST) {
        conclude_status(m, t, status, stop);
        return false;
    }
    mgr__lock(m);
    bool written_off = t->written_off, released = t->released_stuck;
    if (written_off) {
        /* Its end was written without it: what it returned counts for nothing. */
        log_msg(BGT_LOG_NOTICE, t->id, "attempt %u: its handler returned %g s after it was "
                "written off; this worker thread leaves", t->attempt, mono_s() - t->deadline);
        t->drop = true; /* through the writer: a heartbeat in flight may point at it */
        mgr__writeq_push(m, t);
    }
    mgr__unlock(m);
    if (released)
        return written_off; /* released at shutdown while it ran: the release was written */
    log_msg(BGT_LOG_WARNING, t->id,
            "attempt %u ended after its lease was lost; its outcome is discarded", t->attempt);
    mgr__conclude(m, t, END_LOST, status, "lease lost", 0, NULL, 0);
    return false;
}

/* Run a single attempt, or hand its run off (its end is a JOB_HANDED_BACK job). True when it
 * was written off while it ran: the worker leaves. */
static bool run_single(manager *m, bgt_task *t)
{
    t->started = mono_s();
    mgr__assert_unlocked();
    hooks_before(&m->hk, &t->info);
    if (t->h->hand_off) {
        t->h->hand_off(t, t->args_text, t->h->def.udata);
        return false;
    }
    return end_single(m, t, t->h->def.run(t, t->args, t->h->def.udata));
}

bool mgr__end_handed_here(manager *m, bgt_task *const *ts, const bgt_status *status, size_t n)
{
    if (!registry_hookless(m->reg))
        return false;
    for (size_t i = 0; i < n; i++)
        end_single(m, ts[i], status[i]); /* (never written off: a worker process is killed) */
    return true;
}

bool mgr__may_hand_off_here(const manager *m, const bgt_task *t)
{
    return t->h && t->h->hand_off && t->h->def.kind != BGT_PARALLEL && !t->bad &&
           registry_hookless(m->reg);
}

void mgr__hand_off_here(manager *m, bgt_task *const *ts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        run_single(m, ts[i]);
}

/* A claim that fails at once (corrupted record, no such handler): its hooks see it too. */
static void fail_at_once(manager *m, bgt_task *t)
{
    t->started = mono_s();
    mgr__assert_unlocked();
    hooks_before(&m->hk, &t->info);
    end_job(m, t);
    mgr__conclude(m, t, END_FAILURE, BGT_FAILED, t->bad, 0, NULL, 0);
}

/* ---- parallel tasks: the setup ---- */

/* The worker's own store, connected on first use. */
static store *worker_store(manager *m, store **wst)
{
    if (!*wst)
        *wst = store_open(m->cfg, &m->addr);
    return *wst;
}

/*
 * The subtasks of a task not split yet: those its args give (args.subtasks:
 * however the submitter gave them, see subtasks.h), else its split
 * function's. Fills t->split_items; *why says what is wrong.
 */
static bgt_status get_items(manager *m, bgt_task *t, char **why)
{
    *why = NULL;
    const bgt_handler_def *d = &t->h->def;
    const cJSON *list = NULL;
    int given = subtasks_in_args(t->args, &list, why);
    if (given < 0)
        return BGT_FAILED;
    if (given) {
        const cJSON *it;
        cJSON_ArrayForEach (it, list) {
            t->in_split = true;
            int rc = task_api_add_subtask(t, it);
            t->in_split = false;
            if (rc == -E2BIG) {
                *why =
                    xasprintf("more than %d subtasks (tasks.max_subtasks)", m->cfg->max_subtasks);
                return BGT_FAILED;
            }
        }
    } else if (d->split) {
        t->in_split = true;
        mgr__assert_unlocked();
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
        *why = xasprintf("handler %s is parallel and has no split function: give the task its "
                         "subtasks (args.%s, bgtaskctl submit --subtasks-file, or \"%s\" in "
                         "POST /v1/tasks)",
                         t->handler, SUBTASKS_KEY, SUBTASKS_KEY);
        return BGT_FAILED;
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
#define WITH_REDIS(t, rc, call)                                                                    \
    do {                                                                                           \
        double back = 0.05;                                                                        \
        while (((rc) = (call)) == -EIO && atomic_load(&(t)->stop) == STOP_NONE) {                  \
            sleep_s(back);                                                                         \
            back = fmin(back * 2, 2.0);                                                            \
        }                                                                                          \
    } while (0)

/*
 * The end of a setup that could not start the subtasks: the split failed
 * (status from the split function), or Redis refused or was gone (lost).
 */
static void setup_failed(manager *m, bgt_task *t, bgt_status status, const char *why, bool lost)
{
    int stop = atomic_load(&t->stop);
    if (end_job(m, t) || lost || stop == STOP_LOST) {
        log_msg(BGT_LOG_WARNING, t->id, "attempt %u lost its lease during setup", t->attempt);
        mgr__conclude(m, t, END_LOST, status, "lease lost", 0, NULL, 0);
        return;
    }
    if (status == BGT_RETRY || status == BGT_CANCELLED) {
        free(t->error);
        t->error = xstrdup(why);
        conclude_status(m, t, status, stop);
        return;
    }
    mgr__conclude(m, t, END_FAILURE, BGT_FAILED, why, 0, NULL, 0);
}

/* Set t's result: its handler's merge of results, else counts. Takes both. */
static bgt_status merge(bgt_task *t, cJSON *results, cJSON *counts)
{
    bgt_status ms = BGT_OK;
    if (t->h->def.merge) {
        mgr__assert_unlocked();
        ms = t->h->def.merge(t, results, t->h->def.udata);
    } else {
        task_api_set_result(t, counts);
    }
    cJSON_Delete(results);
    cJSON_Delete(counts);
    return ms;
}

/*
 * A split with no items: there is nothing to do, and the task succeeds at
 * once, with its merge of no results (or zero counts) as its result. Nothing
 * was persisted, so a recovery would split again and find the same.
 */
static void nothing_to_do(manager *m, bgt_task *t)
{
    cJSON *counts = cJSON_CreateObject();
    cJSON_AddNumberToObject(counts, "succeeded", 0);
    cJSON_AddNumberToObject(counts, "failed", 0);
    bgt_status ms = merge(t, cJSON_CreateArray(), counts);
    if (end_job(m, t)) {
        mgr__conclude(m, t, END_LOST, BGT_OK, "lease lost", 0, NULL, 0);
        return;
    }
    if (ms != BGT_OK) {
        char *msg = xasprintf("merge failed: %s", t->error ? t->error : "no reason given");
        mgr__conclude(m, t, END_FAILURE, BGT_FAILED, msg, 0, NULL, 0);
        free(msg);
        return;
    }
    mgr__conclude(m, t, END_SUCCESS, BGT_OK, "no subtasks: nothing to do", 0, NULL, 0);
}

/*
 * Set parallel task t up: split it (once: the split is persisted, fenced, so
 * a recovery never splits again), load its subtasks' states, and start what
 * may run. From then on its subtasks are the jobs; the task's own job ends.
 */
static void setup_parallel(manager *m, bgt_task *t, store **wst)
{
    t->started = mono_s();
    mgr__assert_unlocked();
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
        WITH_REDIS(t, rc, store_split(st, m->host_id, t->id, t->token, t->split_items, t->nsplit));
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
    const bgt_handler_def *d = &t->h->def;
    int limit = t->claimed_parallelism > 0 ? t->claimed_parallelism
                : d->parallelism > 0       ? d->parallelism
                                           : m->cfg->parallelism;
    bool fail_fast =
        t->claimed_fail_fast >= 0 ? t->claimed_fail_fast == 1 : d->on_failure == BGT_FAIL_FAST;
    par *p = par_new(n, limit, fail_fast);
    for (int i = 0; i < n; i++) {
        par_load(p, i, recs[i].state, recs[i].attempt, recs[i].args, recs[i].result,
                 recs[i].message);
        recs[i].args = recs[i].result = recs[i].message = NULL;
    }
    store_sub_recs_free(recs, n);
    if (par_finished_count(p))
        log_msg(BGT_LOG_INFO, t->id, "%d of %d subtasks already finished; running the rest",
                par_finished_count(p), n);

    mgr__lock(m);
    t->par = p;
    mgr__job_end(m, t);
    par_progress(p, &t->p_current, &t->p_total);
    t->p_dirty = true;
    mgr__par_schedule(m, t, mono_s());
    mgr__unlock(m);
}

/* ---- parallel tasks: subtasks and the conclusion ---- */

/* Run one subtask of a parallel task, then record how it ended. True when it was written off
 * while it ran: the worker leaves. */
static bool run_subtask(manager *m, bgt_task *st)
{
    bgt_task *t = st->parent;
    st->started = mono_s();
    mgr__assert_unlocked();
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
    /* What the after-hooks need, copied: once queued, st belongs to the writer. */
    char id[BGT_ID_LEN + 1], name[BGT_NAME_MAX + 1];
    memcpy(id, st->id, sizeof id);
    memcpy(name, st->handler, sizeof name);
    bgt_hook_info info = {id, name, st->info.attempt, st->subtask};
    char *error = st->error ? xstrdup(st->error) : NULL;
    double duration = mono_s() - st->started;
    par_report r = {.status = status,
                    .attempt = st->attempt,
                    .error = st->error,
                    .result = st->result,
                    .max_attempts = t->max_attempts,
                    .backoff_s = status == BGT_RETRY
                                     ? (double)mgr__backoff_ms(m->cfg, st->attempt) / 1000.0
                                     : 0,
                    .timeout_s = t->h->def.timeout_s};

    mgr__lock(m);
    if (mgr__job_end(m, st)) {
        /* Its end was recorded and written without it (stuck.c). */
        mgr__unlock(m);
        log_msg(BGT_LOG_NOTICE, id, "subtask %d: its handler returned after it was written off; "
                "this worker thread leaves", st->subtask);
        mgr__task_free(st);
        free(error);
        return true;
    }
    double now = mono_s();
    par_ctx c = mgr__par_ctx(m, t, now);
    par_outcome out = par_end(t->par, st->subtask, &c, &r);
    if (out.state) {
        st->op = FIN_SUBTASK;
        st->sub_state_name = out.state;
        st->end_message = out.message ? xstrdup(out.message) : NULL;
        /* Progress of the task: the subtasks done, plus the running ones' shares. */
        par_progress(t->par, &t->p_current, &t->p_total);
        char msg[64];
        par_progress_message(t->par, msg, sizeof msg);
        free(t->p_message);
        t->p_message = xstrdup(msg);
        t->p_dirty = true;
        mgr__writeq_push(m, st);
    }
    mgr__par_schedule(m, t, now);
    mgr__unlock(m);

    /* Plugin hooks and metrics see each subtask end. */
    end_kind kind = !out.state                            ? END_LOST
                    : strcmp(out.state, "SUCCESS") == 0   ? END_SUCCESS
                    : strcmp(out.state, "RETRY") == 0     ? END_RETRY
                    : strcmp(out.state, "CANCELLED") == 0 ? END_CANCELLED
                                                          : END_FAILURE;
    mgr__assert_unlocked();
    hooks_after(&m->hk, &info, kind, false, status, duration, error ? error : out.message);
    free(error);
    free(out.message);
    if (!out.state)
        mgr__task_free(st); /* nothing to write: it never went to the writer */
    return false;
}

/*
 * The end of an attempt or subtask written off by the manager (stuck.c): r is a record of
 * its own (its handler still holds the real one). A single attempt's after-hooks run and
 * its FAILURE is written (mgr__conclude); a subtask's write was queued already, and only
 * its after-hooks run here.
 */
static void end_written_off(manager *m, bgt_task *r)
{
    if (r->subtask < 0) {
        end_job(m, r);
        mgr__conclude(m, r, END_FAILURE, BGT_FAILED, r->error, 0, NULL, 0);
        return;
    }
    mgr__assert_unlocked();
    hooks_after(&m->hk, &r->info, END_FAILURE, false, BGT_CANCELLED, mono_s() - r->started,
                r->error ? r->error : r->end_message);
    end_job(m, r);
    mgr__task_free(r); /* never owned, never queued for the writer */
}

/* Conclude parallel task t, which has nothing left to run: its verdict, its merge. */
static void conclude_parallel(manager *m, bgt_task *t)
{
    mgr__lock(m);
    par_ctx c = mgr__par_ctx(m, t, mono_s());
    par_verdict v = par_verdict_of(t->par, &c, m->host_id, t->h->def.timeout_s);
    mgr__unlock(m);
    /* Nothing changes t->par any more: it is read without the lock from here on. */
    bgt_status ms = BGT_OK;
    if (v.kind == PAR_VERDICT_SUCCEEDED)
        ms = merge(t, par_results(t->par), par_counts(t->par));
    if (end_job(m, t) && was_released(m, t)) {
        free(v.message);
        return; /* released at shutdown while the merge ran */
    }
    mgr__lock(m);
    if (t->lost)
        v.kind = PAR_VERDICT_LOST;
    mgr__unlock(m);
    switch (v.kind) {
    case PAR_VERDICT_LOST:
        log_msg(BGT_LOG_WARNING, t->id, "attempt %u lost its lease; its subtasks stopped",
                t->attempt);
        mgr__conclude(m, t, END_LOST, BGT_CANCELLED, "lease lost", 0, NULL, 0);
        break;
    case PAR_VERDICT_RELEASED:
        mgr__conclude(m, t, END_RELEASE, BGT_CANCELLED, v.message, 0, NULL, 0);
        break;
    case PAR_VERDICT_CANCELLED:
        mgr__conclude(m, t, END_CANCELLED, BGT_CANCELLED, v.message, 0, NULL, 0);
        break;
    case PAR_VERDICT_FAILED:
        mgr__conclude(m, t, END_FAILURE, BGT_FAILED, v.message, 0, NULL, 0);
        break;
    case PAR_VERDICT_SUCCEEDED:
        if (ms != BGT_OK) {
            v.message = xasprintf("merge failed: %s", t->error ? t->error : "no reason given");
            mgr__conclude(m, t, END_FAILURE, BGT_FAILED, v.message, 0, NULL, 0);
        } else {
            size_t nerrors = 0;
            char **errors = t->par->nfailure ? par_errors(t->par, &nerrors) : NULL;
            v.message = par_success_message(t->par);
            mgr__conclude(m, t, END_SUCCESS, BGT_OK, v.message, 0, errors, nerrors);
        }
        break;
    }
    free(v.message);
}

/* ---- the worker thread ---- */

/* A worker takes up to this many quick jobs at once (see quick). */
#define QUICK_BATCH 16

/*
 * Whether t's job runs no plugin code of its own and holds the thread only briefly: the
 * hand-off of a single attempt's run and the end of a handed-off run (a few writes to
 * memory, the hooks). A worker takes a run of such jobs at once, so that a burst of them
 * (a worker process's answers, read together) costs one wake-up, not one per job.
 */
static bool quick(const bgt_task *t)
{
    return t->job == JOB_HANDED_BACK ||
           (t->job == JOB_RUN && t->h->hand_off && t->h->def.kind != BGT_PARALLEL);
}

void *mgr__worker_main(void *arg)
{
    manager *m = arg;
    static int seq;
    mgr__name_thread("bgt-worker-%d", __atomic_fetch_add(&seq, 1, __ATOMIC_RELAXED));
    store *wst = NULL; /* for the setup of parallel tasks, made on first use */
    mgr__lock(m);
    for (;;) {
        while (!m->runq_head && !m->threads_exit) {
            m->nidle++;
            mgr__wait(m, &m->work_cond, -1);
            m->nidle--;
            if (m->nwaking > 0)
                m->nwaking--;
        }
        if (!m->runq_head)
            break;
        /* One job, or a run of quick ones: no wake-up and no lock round per job. */
        bgt_task *batch[QUICK_BATCH];
        int nb = 0;
        do {
            bgt_task *t = m->runq_head;
            m->runq_head = t->qnext;
            if (!m->runq_head)
                m->runq_tail = NULL;
            m->nqueued--;
            if (t->job != JOB_HANDED_BACK)
                mgr__job_start(m, t); /* (a handed-off run is still running) */
            batch[nb++] = t;
        } while (nb < QUICK_BATCH && quick(batch[0]) && m->runq_head && quick(m->runq_head));
        mgr__wake_worker(m); /* more queued: the next worker */
        mgr__unlock(m);
        bool leave = false;
        for (int i = 0; i < nb; i++) {
            bgt_task *t = batch[i];
            switch (t->job) {
            case JOB_RUN:
                if (t->h->def.kind == BGT_PARALLEL)
                    setup_parallel(m, t, &wst);
                else
                    leave |= run_single(m, t);
                break;
            case JOB_SUBTASK: leave |= run_subtask(m, t); break;
            case JOB_CONCLUDE: conclude_parallel(m, t); break;
            case JOB_FAIL: fail_at_once(m, t); break;
            case JOB_HANDED_BACK: leave |= end_single(m, t, t->handed_status); break;
            case JOB_WRITTEN_OFF: end_written_off(m, t); break;
            }
        }
        mgr__lock(m);
        if (leave) {
            /* A thread that ran a handler past its timeout is not trusted with more: a
             * replacement took its place when it was written off. */
            m->nstuck--;
            metrics_set(m->met, MG_STUCK_WORKERS, m->nstuck);
            break;
        }
    }
    mgr__unlock(m);
    store_free(wst);
    return NULL;
}

/*
 * stuck.c - thread mode stays honest. A handler that ignores its attempt's
 * timeout cannot be stopped: it is code running in this process. But its
 * attempt need not wait for it. tasks.kill_grace after the timeout, the
 * manager thread ends the attempt without it: FAILURE "timed out after Ns;
 * the handler did not stop within kill_grace G s", written and published
 * like any ending (by a record of its own, JOB_WRITTEN_OFF, whose job runs
 * the after-hooks on another worker), so the task is finished and its lease
 * gone. A subtask of a parallel task that timed out is written off the same
 * way, as a failed subtask, and the task concludes without it.
 *
 * The worker thread inside that handler is counted as stuck
 * (bgtask_stuck_workers) and is not trusted with another job: if the handler
 * ever returns, its outcome is dropped and the thread leaves. A replacement
 * thread is started at once, so the host keeps host.workers threads that
 * take jobs, up to host.workers replacements over its life; past that the
 * host runs with fewer (its log says so), and process isolation is the cure
 * for a plugin that keeps doing it. The splits and merges of parallel tasks
 * are not written off (the task's own job runs them), nor are the proxies of
 * isolated plugins (they kill their worker kill_grace after a stop).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager_int.h"
#include "util.h"

int mgr__start_worker(manager *m)
{
    int rc = pthread_create(&m->workers[m->nworkers], NULL, mgr__worker_main, m);
    if (rc != 0)
        return -rc;
    m->nworkers++;
    return 0;
}

/* A record standing for job j, whose handler still holds j: what its end needs. (L) */
static bgt_task *stand_in(const bgt_task *j)
{
    bgt_task *r = xcalloc(1, sizeof *r);
    r->m = j->m;
    r->h = j->h;
    memcpy(r->id, j->id, sizeof r->id);
    memcpy(r->handler, j->handler, sizeof r->handler);
    r->attempt = j->attempt;
    memcpy(r->token, j->token, sizeof r->token); /* its writes are fenced by it */
    r->released = j->released;
    r->max_attempts = j->max_attempts;
    r->subtask = j->subtask;
    r->started = j->started;
    r->info = (bgt_hook_info){r->id, r->handler, j->info.attempt, j->subtask};
    r->ev = -1;
    return r;
}

/* Write job j off: end what it ran without it, and replace its thread. (L) */
static void write_off(manager *m, bgt_task *j, double now)
{
    bgt_task *own = j->parent ? j->parent : j;
    double timeout = own->h->def.timeout_s, grace = m->cfg->kill_grace_s;
    j->written_off = true;
    m->nexecuting--;
    m->nstuck++;
    metrics_set(m->met, MG_STUCK_WORKERS, m->nstuck);
    pthread_cond_signal(&m->slot_cond);
    char *why = xasprintf("timed out after %gs; the handler did not stop within kill_grace "
                          "%g s and its worker thread was written off",
                          timeout, grace);
    bgt_task *r = stand_in(j);
    if (!j->parent) {
        log_msg(BGT_LOG_ERR, j->id, "attempt %u of %s: %s", j->attempt, j->handler, why);
        j->released_stuck = true; /* the writer and the heartbeats leave it alone */
        r->error = why;           /* the message of its FAILURE (end_written_off) */
        mgr__own(m, r);
        mgr__runq_push(m, r, JOB_WRITTEN_OFF);
    } else {
        log_msg(BGT_LOG_ERR, j->id, "subtask %d of %s: %s", j->subtask, j->handler, why);
        par_report rep = {.status = BGT_CANCELLED,
                          .attempt = j->attempt,
                          .max_attempts = own->max_attempts,
                          .timeout_s = timeout};
        par_ctx c = mgr__par_ctx(m, own, now);
        par_outcome out = par_end(own->par, j->subtask, &c, &rep);
        free(out.message);
        if (out.state) {
            /* Its write is queued now, before the task's conclusion can be: the writer
             * writes in order, and a task's end fences out its subtasks' later writes. */
            r->op = FIN_SUBTASK;
            r->sub_state_name = out.state;
            r->end_message = xstrdup(why);
            par_progress(own->par, &own->p_current, &own->p_total);
            own->p_dirty = true;
            mgr__writeq_push(m, r);
            /* The after-hooks run on a worker, with a record of their own (the writer
             * frees r once written). */
            bgt_task *hk = stand_in(j);
            hk->end_message = why;
            mgr__runq_push(m, hk, JOB_WRITTEN_OFF);
        } else {
            free(why);
            mgr__task_free(r);
        }
        mgr__par_schedule(m, own, now);
    }
    if (m->nspare >= m->cfg->workers) {
        log_err("%d worker thread(s) are stuck in handlers that ignored their timeout and "
                "%d replacements were started already: this host now runs %d job(s) at most; "
                "run such plugins with isolation = \"process\"",
                m->nstuck, m->nspare, m->nworkers - m->nstuck);
        return;
    }
    if (mgr__start_worker(m) == 0)
        m->nspare++;
    else
        log_err("cannot start a worker thread to replace a stuck one");
}

void mgr__write_off_stuck(manager *m, double now)
{
    double grace = m->cfg->kill_grace_s;
    for (bgt_task *j = m->running; j; j = j->rnext) {
        bool single = j->job == JOB_RUN && !j->parent && j->h && j->h->def.kind == BGT_SINGLE;
        if (j->written_off || !(single || j->job == JOB_SUBTASK) || j->h->stops_itself)
            continue;
        bgt_task *own = j->parent ? j->parent : j;
        if (own->deadline <= 0 || now < own->deadline + grace || own->lost || own->finishing ||
            atomic_load(&own->stop) != STOP_TIMEOUT)
            continue;
        write_off(m, j, now);
    }
}

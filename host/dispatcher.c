/*
 * dispatcher.c - the manager's two listeners to Redis: the dispatcher, which
 * claims as many attempts as there are free workers (in one script call) and
 * queues them as jobs, and blocks on the handlers' wake lists when there is
 * nothing to claim; and the control listener, which turns cancel requests
 * into stop flags. Neither runs plugin code: a claim that fails at once is a
 * job too, so its hooks run on a worker.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "manager_int.h"
#include "util.h"

void mgr__refresh_handlers(manager *m)
{
    size_t n = registry_handlers(m->reg, NULL, 0);
    const handler **hv = xcalloc(n + 1, sizeof *hv);
    n = registry_handlers(m->reg, hv, n);
    /* A paused handler (its isolated plugin's crash breaker is open) is not claimed. */
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (!registry_paused(hv[i]))
            hv[kept++] = hv[i];
    n = kept;
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

/* Turn a claimed record into an attempt ready to run (or, *bad set, to fail at once). */
static bgt_task *make_task(manager *m, claimed *c, char **bad)
{
    *bad = NULL;
    bgt_task *t = xcalloc(1, sizeof *t);
    t->ev = -1;
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

void *mgr__dispatcher_main(void *arg)
{
    manager *m = arg;
    mgr__name_thread("bgt-dispatch");
    int max = m->cfg->workers;
    claimed *batch = xcalloc((size_t)max, sizeof *batch);
    claim_handler *hs = NULL;
    size_t nhs = 0;
    bool was_down = false;
    for (;;) {
        mgr__lock(m);
        while (!m->stopping && (m->nqueued + m->nexecuting >= max || m->nhs == 0) &&
               !m->handlers_changed)
            mgr__wait(m, &m->slot_cond, -1);
        if (m->stopping) {
            mgr__unlock(m);
            break;
        }
        if (m->handlers_changed || m->reg->generation != m->reg_generation)
            mgr__refresh_handlers(m);
        if (m->nhs == 0) {
            mgr__unlock(m);
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
            mgr__wait(m, &m->slot_cond, 0.05);
            mgr__unlock(m);
            continue;
        }
        mgr__unlock(m);

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
            mgr__lock(m);
            if (!m->stopping) {
                mgr__wait(m, &m->slot_cond, 0.2);
            }
            mgr__unlock(m);
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
            mgr__lock(m);
            /* The claim does not renew this host's entry: once the entry runs out, other
             * hosts may bury this one and take the attempt, lease or not. */
            double until = claim_sent + m->cfg->lease_s - LEASE_MARGIN_S(m->cfg);
            if (m->entry_until > 0)
                until = fmin(until, m->entry_until - LEASE_MARGIN_S(m->cfg));
            __atomic_store(&t->lease_until, &until, __ATOMIC_RELAXED);
            mgr__own(m, t);
            /* The manager thread may be asleep for seconds (it held nothing): it watches
             * leases and timeouts by the host's clock. */
            if (t->deadline > 0 || m->nowned == 1)
                pthread_cond_signal(&m->mgr_cond);
            if (bad)
                log_msg(BGT_LOG_ERR, t->id, "%s", bad);
            t->bad = bad; /* it fails at once, on a worker: hooks run there */
            mgr__runq_push(m, t, bad ? JOB_FAIL : JOB_RUN);
            mgr__unlock(m);
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
                        log_err("waiting for work failed: %s; retrying", store_errstr(m->st_claim));
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

void *mgr__control_main(void *arg)
{
    manager *m = arg;
    mgr__name_thread("bgt-control");
    bool was_down = false;
    for (;;) {
        mgr__lock(m);
        bool quit = m->threads_exit;
        mgr__unlock(m);
        if (quit)
            break;
        char id[BGT_ID_LEN + 1];
        int rc = store_next_control(m->st_ctl, 0.5, id);
        if (rc == 0) {
            mgr__lock(m);
            for (bgt_task *t = m->owned; t; t = t->next)
                if (strcmp(t->id, id) == 0 && !t->finishing) {
                    int none = STOP_NONE;
                    atomic_compare_exchange_strong(&t->stop, &none, STOP_CANCEL);
                    log_msg(BGT_LOG_INFO, t->id, "cancel requested");
                }
            mgr__unlock(m);
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

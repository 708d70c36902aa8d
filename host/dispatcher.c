/*
 * dispatcher.c - the manager's two listeners to Redis: the dispatcher, which
 * claims as many attempts as there are free workers (one script call per
 * shard, round-robin over the shards known to have work) and queues them as
 * jobs; and the control listener, which turns cancel requests into stop flags,
 * wake-ups into shards to claim from, and an operator's pause or resume of a
 * handler into the handlers claimed. Neither runs plugin code: a claim
 * that fails at once is a job too, so its hooks run on a worker.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "manager_int.h"
#include "util.h"

/* Whether an operator paused handler name. (L) */
static bool op_paused(const manager *m, const char *name)
{
    for (size_t i = 0; i < m->npaused; i++)
        if (strcmp(m->paused[i], name) == 0)
            return true;
    return false;
}

void mgr__refresh_handlers(manager *m)
{
    size_t n = registry_handlers(m->reg, NULL, 0);
    const handler **hv = xcalloc(n + 1, sizeof *hv);
    n = registry_handlers(m->reg, hv, n);
    /* A paused handler (its isolated plugin's crash breaker is open) is not served. */
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
    /* One an operator paused is served (listed) but not claimed. */
    m->nhs = 0;
    for (size_t i = 0; i < n; i++) {
        const bgt_handler_def *d = &hv[i]->def;
        if (i)
            strcat(m->handler_list, ",");
        strcat(m->handler_list, hv[i]->name);
        if (op_paused(m, hv[i]->name))
            continue;
        m->hs[m->nhs++] = (claim_handler){
            .name = hv[i]->name,
            .max_attempts = d->max_attempts > 0 ? d->max_attempts : m->cfg->max_attempts,
            .not_retriable = d->not_retriable,
        };
    }
    free(hv);
    m->reg_generation = m->reg->generation;
    m->handlers_changed = false;
    m->resubscribe = true;
    for (int s = 0; s < m->nshards; s++)
        m->shard_ready[s] = true;
}

/* Claims follow a change of the paused handlers. (L) */
static void paused_changed(manager *m)
{
    m->handlers_changed = true;
    pthread_cond_signal(&m->slot_cond);
}

/* Pause or resume one handler, as the control channel tells it; true if that changed it. (L) */
static bool pause_one(manager *m, const char *name, bool pause)
{
    for (size_t i = 0; i < m->npaused; i++)
        if (strcmp(m->paused[i], name) == 0) {
            if (pause)
                return false;
            log_notice("handler %s resumed by an operator: its tasks are claimed again", name);
            free(m->paused[i]); /* name may be it */
            m->paused[i] = m->paused[--m->npaused];
            paused_changed(m);
            return true;
        }
    if (!pause)
        return false;
    m->paused = xrealloc(m->paused, (m->npaused + 1) * sizeof *m->paused);
    m->paused[m->npaused++] = xstrdup(name);
    log_notice("handler %s paused by an operator: its tasks wait (running ones finish)", name);
    paused_changed(m);
    return true;
}

void mgr__set_paused(manager *m, const char *list)
{
    /* Resume those no longer listed, then pause those listed. */
    for (size_t i = 0; i < m->npaused;) {
        const char *name = m->paused[i];
        size_t len = strlen(name);
        bool listed = false;
        for (const char *p = strstr(list, name); p && !listed; p = strstr(p + 1, name))
            listed = (p == list || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0');
        if (listed || !pause_one(m, name, false))
            i++;
    }
    char *copy = xstrdup(list), *save = NULL;
    for (char *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
        pause_one(m, tok, true);
    free(copy);
}

double mgr__entry_ttl(const bgt_config *cfg)
{
    /* Two heartbeats and a second: a host that stops beating for that long is taken for
     * dead, and its attempts are claimable again. */
    return fmin(cfg->lease_s, 2 * cfg->heartbeat_s + 1.0);
}

void mgr__log_store_warnings(store *st)
{
    char *w = store_take_warnings(st);
    if (w)
        log_warn("redis: %s held a value of the wrong type; treated as absent and removed", w);
    free(w);
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
    memcpy(t->token, c->token, sizeof t->token);
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
    t->lease_until = mono_s() + mgr__entry_ttl(m->cfg);
    if (!t->h)
        *bad = xasprintf("no handler '%s' on host %s", c->handler, m->host_id);
    else if (!(t->args = cJSON_Parse(t->args_text)) || !cJSON_IsObject(t->args))
        *bad = xasprintf("corrupted task record: args is not a JSON object");
    if (t->h && t->h->def.timeout_s > 0)
        t->deadline = mono_s() + t->h->def.timeout_s;
    return t;
}

/*
 * The next shard to claim from (round-robin from m->shard_next), or -1 when
 * none is known to have work; shards whose work fell due become ready. (L)
 */
static int pick_shard(manager *m, double now, double *wake_at)
{
    *wake_at = 0;
    for (int i = 0; i < m->nshards; i++) {
        int s = (m->shard_next + i) % m->nshards;
        if (m->shard_due[s] > 0 && m->shard_due[s] <= now) {
            m->shard_due[s] = 0;
            m->shard_ready[s] = true;
        }
        if (m->shard_due[s] > 0 && (*wake_at == 0 || m->shard_due[s] < *wake_at))
            *wake_at = m->shard_due[s];
    }
    for (int i = 0; i < m->nshards; i++) {
        int s = (m->shard_next + i) % m->nshards;
        if (m->shard_ready[s]) {
            m->shard_next = (s + 1) % m->nshards;
            return s;
        }
    }
    return -1;
}

/*
 * Before the first claim: mark the data under the prefix with this protocol and
 * the host's shard count ({P}:meta), unless it is marked already, and refuse
 * to claim from data spread over another count (a client or host with another
 * redis.shards marked it first): -EPROTONOSUPPORT with the message in the
 * store's error, which the claim's failure path logs and /healthz reports.
 */
static int prepare(manager *m)
{
    int rc = store_prepare(m->st_claim);
    /* The handlers an operator paused, before the first claim (heartbeats keep it current). */
    cJSON *paused = NULL;
    if (rc == 0)
        rc = store_paused(m->st_claim, &paused);
    if (rc == 0) {
        size_t len = 1;
        const cJSON *p;
        cJSON_ArrayForEach (p, paused)
            len += strlen(p->string) + 1;
        char *list = xcalloc(1, len);
        cJSON_ArrayForEach (p, paused) {
            strcat(list, *list ? " " : "");
            strcat(list, p->string);
        }
        mgr__lock(m);
        mgr__set_paused(m, list);
        mgr__unlock(m);
        free(list);
    }
    cJSON_Delete(paused);
    if (rc == 0 && store_shards(m->st_claim) != m->nshards) {
        store_set_error(m->st_claim,
                        "the bgtask data is spread over %d shards ({%s}:meta) and this host "
                        "over %d (redis.shards): set redis.shards = %d and restart it",
                        store_shards(m->st_claim), store_prefix(m->st_claim), m->nshards,
                        store_shards(m->st_claim));
        rc = -EPROTONOSUPPORT;
    }
    return rc;
}

void *mgr__dispatcher_main(void *arg)
{
    manager *m = arg;
    mgr__name_thread("bgt-dispatch");
    int max = m->cfg->workers;
    claimed *batch = xcalloc((size_t)max, sizeof *batch);
    bgt_task **here = xcalloc((size_t)max, sizeof *here);
    claim_handler *hs = NULL;
    size_t nhs = 0;
    bool was_down = false, prepared = false;
    double ttl = mgr__entry_ttl(m->cfg), look_all_at = 0;
    for (;;) {
        mgr__lock(m);
        int shard = -1;
        for (;;) {
            double now = mono_s(), wake_at;
            if (now >= look_all_at) {
                /* Now and then every shard: a wake-up may have been lost. */
                for (int s = 0; s < m->nshards; s++)
                    m->shard_ready[s] = true;
                look_all_at = now + MAX_BLOCK_S;
            }
            if (m->stopping)
                break;
            if (m->handlers_changed || m->reg->generation != m->reg_generation)
                mgr__refresh_handlers(m);
            int free_ = max - m->nqueued - m->nexecuting;
            shard = free_ > 0 && m->nhs > 0 ? pick_shard(m, now, &wake_at) : -1;
            if (shard >= 0)
                break;
            double until = look_all_at;
            if (free_ > 0 && wake_at > 0 && wake_at < until)
                until = wake_at;
            mgr__wait(m, &m->slot_cond, free_ > 0 && m->nhs > 0 ? until - now : -1);
        }
        if (m->stopping) {
            mgr__unlock(m);
            break;
        }
        /* While attempts run, let free workers add up a little before a small claim. */
        if (m->nqueued + m->nexecuting > 0 && max - m->nqueued - m->nexecuting < (max + 3) / 4)
            mgr__wait(m, &m->slot_cond, BATCH_WAIT_S);
        /* A private copy: names point into the registry, which never drops live handlers. */
        hs = xrealloc(hs, m->nhs * sizeof *hs);
        memcpy(hs, m->hs, m->nhs * sizeof *hs);
        nhs = m->nhs;
        int want = max - m->nqueued - m->nexecuting;
        /* Heartbeats have failed for so long that other hosts may bury this one: a claim now
         * would hand out attempts it cannot hold. Wait for the writer's next heartbeat. */
        if (want <= 0 ||
            (m->entry_until > 0 && mono_s() > m->entry_until - LEASE_MARGIN_S(m->cfg))) {
            if (want > 0)
                mgr__wait(m, &m->slot_cond, 0.05);
            mgr__unlock(m);
            continue;
        }
        mgr__unlock(m);

        int got = 0;
        double due = -1;
        double claim_sent = mono_s();
        bool first = !prepared;
        int rc = prepared ? 0 : prepare(m);
        prepared = rc == 0;
        if (rc == 0 && first)
            continue; /* the paused handlers are known now: take the handlers claimed again */
        if (rc == 0)
            rc = store_claim(m->st_claim, m->host_id, shard, hs, nhs, want, (int64_t)(ttl * 1000),
                             batch, &got, &due);
        mgr__log_store_warnings(m->st_claim);
        if (rc < 0) {
            metrics_inc(m->met, MC_REDIS_ERRORS, 1);
            metrics_health(m->met, MH_CLAIM, store_errstr(m->st_claim));
            if (!was_down)
                log_err("claim failed: %s; retrying", store_errstr(m->st_claim));
            was_down = true;
            mgr__lock(m);
            if (!m->stopping)
                mgr__wait(m, &m->slot_cond, 0.2);
            mgr__unlock(m);
            continue;
        }
        metrics_health(m->met, MH_CLAIM, NULL);
        if (was_down)
            log_notice("redis is back: claiming again");
        was_down = false;
        if (got)
            metrics_inc(m->met, MC_CLAIMS, got);
        mgr__lock(m);
        if (got < want) {
            /* Nothing more due there: until a wake-up, or until the next task falls due. */
            m->shard_ready[shard] = false;
            m->shard_due[shard] = due < 0 ? 0 : claim_sent + fmax(due, 0.001);
        }
        /* The claim did not extend this host's entries: other hosts may bury it and take
         * the attempts once they run out, whatever the claim's time. */
        double until = claim_sent + ttl - LEASE_MARGIN_S(m->cfg);
        if (m->entry_until > 0)
            until = fmin(until, m->entry_until - LEASE_MARGIN_S(m->cfg));
        mgr__unlock(m);
        size_t nhere = 0;
        for (int i = 0; i < got; i++) {
            char *bad;
            bgt_task *t = make_task(m, &batch[i], &bad);
            store_claimed_clear(&batch[i]);
            log_debug("[%s] claimed %s, attempt %u", t->id, t->handler, t->attempt);
            mgr__lock(m);
            __atomic_store(&t->lease_until, &until, __ATOMIC_RELAXED);
            mgr__own(m, t);
            /* The manager thread may be asleep for seconds (it held nothing): it watches
             * leases and timeouts by the host's clock. */
            if (t->deadline > 0 || m->nowned == 1)
                pthread_cond_signal(&m->mgr_cond);
            if (bad)
                log_msg(BGT_LOG_ERR, t->id, "%s", bad);
            t->bad = bad; /* it fails at once, on a worker: hooks run there */
            if (mgr__may_hand_off_here(m, t)) {
                /* Nothing of the plugin runs here: the run goes straight to where it runs
                 * (a worker process), without a hop through the run queue. */
                t->job = JOB_RUN;
                mgr__job_start(m, t);
                here[nhere++] = t;
            } else {
                mgr__runq_push(m, t, bad ? JOB_FAIL : JOB_RUN);
            }
            mgr__unlock(m);
        }
        mgr__hand_off_here(m, here, nhere);
    }
    free(hs);
    free(here);
    free(batch);
    return NULL;
}

/* ---- control: cancel requests and wake-ups ---- */

/* Subscribe to this host's control channel and its handlers' wake-ups. */
static int subscribe(manager *m)
{
    mgr__lock(m);
    m->resubscribe = false;
    size_t n = m->nhs;
    const char **names = xcalloc(n + 1, sizeof *names);
    for (size_t i = 0; i < n; i++)
        names[i] = m->hs[i].name; /* the registry never drops live handlers */
    mgr__unlock(m);
    int rc = store_subscribe_control(m->st_ctl, m->host_id, names, n);
    free(names);
    return rc;
}

void *mgr__control_main(void *arg)
{
    manager *m = arg;
    mgr__name_thread("bgt-control");
    bool was_down = false;
    for (;;) {
        mgr__lock(m);
        bool quit = m->threads_exit, again = m->resubscribe;
        mgr__unlock(m);
        if (quit)
            break;
        if (again)
            subscribe(m);
        ctl_msg msg;
        int rc = store_next_control(m->st_ctl, 0.5, &msg);
        if (rc == 0 && (msg.kind == CTL_PAUSE || msg.kind == CTL_RESUME)) {
            mgr__lock(m);
            pause_one(m, msg.handler, msg.kind == CTL_PAUSE);
            m->paused_gen++;
            mgr__unlock(m);
        } else if (rc == 0 && msg.kind == CTL_CANCEL) {
            mgr__lock(m);
            for (bgt_task *t = m->owned; t; t = t->next)
                if (strcmp(t->id, msg.id) == 0 && !t->finishing) {
                    int none = STOP_NONE;
                    atomic_compare_exchange_strong(&t->stop, &none, STOP_CANCEL);
                    log_msg(BGT_LOG_INFO, t->id, "cancel requested");
                }
            mgr__unlock(m);
        } else if ((rc == 0 && msg.kind == CTL_WAKE) || rc == -EAGAIN) {
            /* Work in a shard; or (re)subscribed, and wake-ups may have been missed. */
            mgr__lock(m);
            for (int s = 0; s < m->nshards; s++)
                if (rc == -EAGAIN || s == msg.shard)
                    m->shard_ready[s] = true;
            pthread_cond_signal(&m->slot_cond);
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

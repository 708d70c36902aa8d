/*
 * parallel.c - the bookkeeping of one parallel task (see parallel.h): pure
 * state transitions and the messages that describe them. Nothing here waits,
 * locks, talks to Redis or calls plugin code.
 */
#include "parallel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

par *par_new(int n, int limit, bool fail_fast)
{
    par *p = xcalloc(1, sizeof *p);
    p->n = n;
    p->subs = xcalloc((size_t)n + 1, sizeof *p->subs);
    p->limit = limit > 0 ? limit : 1;
    p->fail_fast = fail_fast;
    p->failed_first = -1;
    return p;
}

void par_free(par *p)
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

void par_load(par *p, int i, const char *state, uint32_t attempt, char *args, char *result,
              char *message)
{
    par_sub *s = &p->subs[i];
    free(s->args);
    free(s->result);
    free(s->message);
    s->args = args;
    s->result = result;
    s->message = message;
    s->attempt = attempt;
    if (state && strcmp(state, "SUCCESS") == 0) {
        s->state = PAR_SUCCESS;
        p->nsuccess++;
    } else if (state && strcmp(state, "FAILURE") == 0) {
        s->state = PAR_FAILURE;
        p->nfailure++;
    } else {
        s->state = PAR_PENDING;
    }
}

int par_finished_count(const par *p) { return p->nsuccess + p->nfailure; }

bool par_halted(const par *p) { return __atomic_load_n(&p->halt, __ATOMIC_RELAXED); }

/* Hand subtask i out to run. */
static int start(par *p, int i)
{
    par_sub *s = &p->subs[i];
    if (s->state == PAR_WAITING)
        p->waiting--;
    s->state = PAR_RUNNING;
    s->frac = 0;
    p->inflight++;
    return i;
}

int par_next(par *p, const par_ctx *c)
{
    if (p->halt || c->stop != PAR_GO || c->draining || p->inflight >= p->limit)
        return -1;
    if (p->waiting > 0)
        for (int i = 0; i < p->n; i++)
            if (p->subs[i].state == PAR_WAITING && p->subs[i].retry_at <= c->now)
                return start(p, i);
    while (p->next < p->n) {
        int i = p->next++;
        if (p->subs[i].state == PAR_PENDING)
            return start(p, i);
    }
    return -1;
}

void par_unstart(par *p, int i)
{
    p->subs[i].state = PAR_PENDING;
    p->inflight--;
}

void par_sub_progress(par *p, int i, double current, double total)
{
    par_sub *s = &p->subs[i];
    if (s->state != PAR_RUNNING)
        return;
    double frac = total > 0 ? fmin(fmax(current / total, 0.0), 1.0) : 0.0;
    p->frac_sum += frac - s->frac;
    s->frac = frac;
}

void par_progress(const par *p, double *current, double *total)
{
    *current = p->nsuccess + p->nfailure + p->ncancelled + p->frac_sum;
    *total = p->n;
}

void par_progress_message(const par *p, char *buf, size_t n)
{
    snprintf(buf, n, "%d of %d subtasks done", p->nsuccess + p->nfailure, p->n);
}

par_outcome par_end(par *p, int i, const par_ctx *c, const par_report *r)
{
    par_sub *s = &p->subs[i];
    p->frac_sum -= s->frac;
    s->frac = 0;
    s->attempt = r->attempt;
    p->inflight--;
    if (c->stop == PAR_STOP_LOST) {
        s->state = PAR_PENDING; /* the task's lease is gone: nothing may be written */
        return (par_outcome){NULL, NULL};
    }
    char *msg;
    switch (r->status) {
    case BGT_OK:
        s->state = PAR_SUCCESS;
        p->nsuccess++;
        free(s->result);
        s->result = r->result ? xstrdup(r->result) : NULL;
        return (par_outcome){"SUCCESS", NULL};
    case BGT_RETRY:
        if (c->stop != PAR_GO || p->halt)
            goto stopped;
        if ((int)r->attempt < r->max_attempts) {
            s->state = PAR_WAITING;
            p->waiting++;
            s->retry_at = c->now + r->backoff_s;
            return (par_outcome){"RETRY", xasprintf("attempt %u failed: %s", r->attempt,
                                                    r->error ? r->error : "retry")};
        }
        msg = xasprintf("gave up after %u attempts: %s", r->attempt,
                        r->error ? r->error : "the handler asked to retry");
        break;
    case BGT_CANCELLED:
    stopped:
        if (c->stop == PAR_STOP_SHUTDOWN || (c->draining && c->stop == PAR_GO && !p->halt)) {
            s->state = PAR_PENDING; /* runs again after the release */
            return (par_outcome){NULL, NULL};
        }
        if (c->stop == PAR_STOP_TIMEOUT) {
            msg = xasprintf("timed out after %gs", r->timeout_s);
            break;
        }
        s->state = PAR_CANCELLED;
        p->ncancelled++;
        return (par_outcome){"CANCELLED", xstrdup("Cancelled")};
    case BGT_FAILED: msg = xstrdup(r->error ? r->error : "the handler failed"); break;
    default: msg = xasprintf("the handler returned an unknown status %d", (int)r->status);
    }
    s->state = PAR_FAILURE;
    p->nfailure++;
    free(s->message);
    s->message = xstrdup(msg);
    if (p->fail_fast && !p->halt) {
        __atomic_store_n(&p->halt, true, __ATOMIC_RELAXED);
        p->failed_first = i;
    }
    return (par_outcome){"FAILURE", msg};
}

bool par_take_conclusion(par *p, const par_ctx *c)
{
    if (p->inflight > 0 || p->concluded)
        return false;
    bool stopped = p->halt || c->stop != PAR_GO || c->draining;
    if (!stopped) {
        if (p->waiting > 0)
            return false;
        for (int i = p->next; i < p->n; i++)
            if (p->subs[i].state == PAR_PENDING)
                return false;
    }
    p->concluded = true;
    return true;
}

/* The message of the first failed subtask (fail_fast's, else the lowest index). */
static const char *first_failure(const par *p)
{
    const par_sub *f = p->failed_first >= 0 ? &p->subs[p->failed_first] : NULL;
    for (int i = 0; i < p->n && !f; i++)
        if (p->subs[i].state == PAR_FAILURE)
            f = &p->subs[i];
    return f && f->message ? f->message : NULL;
}

par_verdict par_verdict_of(const par *p, const par_ctx *c, const char *host_id, double timeout_s)
{
    if (c->stop == PAR_STOP_LOST)
        return (par_verdict){PAR_VERDICT_LOST, NULL};
    int pending = p->n - p->nsuccess - p->nfailure - p->ncancelled;
    if (c->stop == PAR_STOP_SHUTDOWN ||
        (c->draining && pending > 0 && c->stop == PAR_GO && p->failed_first < 0))
        return (par_verdict){PAR_VERDICT_RELEASED,
                             xasprintf("released by host %s at shutdown with %d of %d subtasks "
                                       "left; attempt refunded",
                                       host_id, pending, p->n)};
    if (c->stop == PAR_STOP_CANCEL)
        return (par_verdict){PAR_VERDICT_CANCELLED,
                             xasprintf("Cancelled (%d of %d subtasks had finished)",
                                       p->nsuccess + p->nfailure, p->n)};
    if (c->stop == PAR_STOP_TIMEOUT)
        return (par_verdict){PAR_VERDICT_FAILED, xasprintf("timed out after %gs", timeout_s)};
    if (p->failed_first >= 0) {
        const char *why = first_failure(p);
        return (par_verdict){PAR_VERDICT_FAILED,
                             xasprintf("subtask %d failed: %s; the others were stopped "
                                       "(on_failure = fail_fast)",
                                       p->failed_first, why ? why : "failed")};
    }
    if (p->nsuccess == 0) {
        const char *why = first_failure(p);
        return (par_verdict){PAR_VERDICT_FAILED, xasprintf("all %d subtasks failed (first: %s)",
                                                           p->n, why ? why : "no message")};
    }
    return (par_verdict){PAR_VERDICT_SUCCEEDED, NULL};
}

cJSON *par_results(const par *p)
{
    cJSON *results = cJSON_CreateArray();
    for (int i = 0; i < p->n; i++) {
        cJSON *r = p->subs[i].state == PAR_SUCCESS && p->subs[i].result
                       ? cJSON_Parse(p->subs[i].result)
                       : NULL;
        cJSON_AddItemToArray(results, r ? r : cJSON_CreateNull());
    }
    return results;
}

cJSON *par_counts(const par *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "succeeded", p->nsuccess);
    cJSON_AddNumberToObject(o, "failed", p->nfailure);
    return o;
}

char *par_success_message(const par *p)
{
    if (p->nfailure == 0)
        return xasprintf("all %d subtasks succeeded", p->n);
    return xasprintf("%d of %d subtasks succeeded, %d failed", p->nsuccess, p->n, p->nfailure);
}

char **par_errors(const par *p, size_t *n)
{
    char **v = xcalloc((size_t)p->nfailure + 1, sizeof *v);
    *n = 0;
    for (int i = 0; i < p->n; i++)
        if (p->subs[i].state == PAR_FAILURE)
            v[(*n)++] =
                xasprintf("subtask %d: %s", i, p->subs[i].message ? p->subs[i].message : "failed");
    return v;
}

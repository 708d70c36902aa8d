/*
 * store_ops.c - what clients write: submission (grouped by shard, one script
 * call per shard, pipelined), cancel, and the re-run of a parallel task's
 * failed subtasks. User JSON (args) is checked here and stored exactly as
 * given: no script decodes or re-encodes it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_check.h"
#include "store_int.h"
#include "util.h"

/* ---- submission ---- */

/* A request checked and ready to go. */
typedef struct ready {
    size_t req; /* index in reqs */
    int shard;
    char opts[64];
    char nums[3][16]; /* max_attempts, parallelism as text */
} ready;

static int validate_submit(store *st, submit_req *q, ready *r)
{
    if (!name_valid(q->handler)) {
        snprintf(q->err, sizeof q->err,
                 "invalid handler name '%.64s': expected [a-z0-9][a-z0-9._-]{0,62}",
                 q->handler ? q->handler : "");
        return -EINVAL;
    }
    if (q->id && !id_valid(q->id)) {
        snprintf(q->err, sizeof q->err, "invalid task id '%.40s': expected a UUID like %s",
                 q->id, "123e4567-e89b-42d3-a456-426614174000");
        return -EINVAL;
    }
    if (q->args && *q->args) {
        size_t alen = strlen(q->args);
        if (alen > st->lim.max_args_bytes) {
            snprintf(q->err, sizeof q->err, "args are %zu bytes, over the limit of %zu", alen,
                     st->lim.max_args_bytes);
            return -E2BIG;
        }
        char why[160];
        if (!json_text_ok(q->args, alen, why, sizeof why)) {
            snprintf(q->err, sizeof q->err, "args: %s", why);
            return -EINVAL;
        }
        const char *end = NULL;
        cJSON *j = cJSON_ParseWithOpts(q->args, &end, true);
        if (!j) {
            size_t at = end ? (size_t)(end - q->args) : 0;
            snprintf(q->err, sizeof q->err, "args are not valid JSON (at byte %zu)", at);
            return -EINVAL;
        }
        bool obj = cJSON_IsObject(j);
        cJSON_Delete(j);
        if (!obj) {
            snprintf(q->err, sizeof q->err, "args must be a JSON object");
            return -EINVAL;
        }
    }
    if (q->parallelism < 0 || q->parallelism > 1024) {
        snprintf(q->err, sizeof q->err, "parallelism must be 1..1024, got %d", q->parallelism);
        return -EINVAL;
    }
    if (q->on_failure && *q->on_failure && strcmp(q->on_failure, "continue") != 0 &&
        strcmp(q->on_failure, "fail_fast") != 0) {
        snprintf(q->err, sizeof q->err, "on_failure must be continue or fail_fast, got '%.32s'",
                 q->on_failure);
        return -EINVAL;
    }
    if (q->max_attempts < 0 || q->max_attempts > 1000) {
        snprintf(q->err, sizeof q->err, "max_attempts must be 1..1000, got %d", q->max_attempts);
        return -EINVAL;
    }
    if (!(q->delay_s >= 0 && q->delay_s <= 365.0 * 86400)) {
        snprintf(q->err, sizeof q->err, "delay must be 0..31536000 seconds");
        return -EINVAL;
    }
    return 0;
}

/* The record fields a request sets beyond handler, created and args (see LUA_SUBMIT). */
static int extra_fields(const submit_req *q, ready *r, const char **f, size_t n)
{
    size_t k = 0;
    if (q->max_attempts > 0 && k + 2 <= n) {
        snprintf(r->nums[0], sizeof r->nums[0], "%d", q->max_attempts);
        f[k++] = "x";
        f[k++] = r->nums[0];
    }
    if (q->parallelism > 0 && k + 2 <= n) {
        snprintf(r->nums[1], sizeof r->nums[1], "%d", q->parallelism);
        f[k++] = "pl";
        f[k++] = r->nums[1];
    }
    if (q->on_failure && *q->on_failure && k + 2 <= n) {
        f[k++] = "of";
        f[k++] = q->on_failure;
    }
    return (int)k / 2;
}

/* Add request r (of reqs) to a submit call's argv. */
static void push_request(argbuf *a, const submit_req *q, ready *r)
{
    store__args_push(a, q->id_out);
    store__args_push(a, q->args && *q->args ? q->args : "");
    const char *f[6];
    int nf = extra_fields(q, r, f, 6);
    long long delay = llround(q->delay_s * 1000);
    if (!q->id && delay == 0 && nf == 0) {
        store__args_push(a, ""); /* the common case: nothing more */
        return;
    }
    snprintf(r->opts, sizeof r->opts, "%d %lld %d", q->id ? 1 : 0, delay, nf);
    store__args_push(a, r->opts);
    for (int i = 0; i < 2 * nf; i++)
        store__args_push(a, f[i]);
}

int store_submit(store *st, submit_req *reqs, size_t n)
{
    ready *rd = xcalloc(n + 1, sizeof *rd);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        submit_req *q = &reqs[i];
        q->err[0] = '\0';
        q->not_durable = false;
        ready *r = &rd[m];
        memset(r, 0, sizeof *r);
        if ((q->rc = validate_submit(st, q, r)) < 0)
            continue;
        if (q->id)
            store__norm_id(q->id, q->id_out);
        else
            uuid4(q->id_out);
        r->req = i;
        m++;
    }
    int rc = m > 0 ? store_prepare(st) : 0;
    script_call *calls = NULL;
    size_t ncalls = 0;
    if (rc == 0 && m > 0) {
        /* One call per shard, the requests in order; in it one group per run of
         * requests of one handler. */
        size_t *order = xcalloc(m + 1, sizeof *order), *call_at = NULL;
        size_t no = 0;
        for (size_t k = 0; k < m; k++)
            rd[k].shard = store_shard_of(st, reqs[rd[k].req].id_out);
        calls = xcalloc((size_t)st->shards, sizeof *calls);
        call_at = xcalloc((size_t)st->shards + 1, sizeof *call_at);
        for (int s = 0; s < st->shards; s++) {
            size_t first = no;
            for (size_t k = 0; k < m; k++)
                if (rd[k].shard == s)
                    order[no++] = k;
            if (no == first)
                continue;
            script_call *c = &calls[ncalls];
            call_at[ncalls++] = first;
            c->script = SC_SUBMIT;
            c->durable = true;
            store__args_script(st, &c->a, SC_SUBMIT, s);
            size_t ngroups = 0;
            for (size_t j = first; j < no; j++)
                ngroups += j == first || strcmp(reqs[rd[order[j]].req].handler,
                                                reqs[rd[order[j - 1]].req].handler) != 0;
            store__args_pushf(&c->a, "%zu", ngroups);
            for (size_t j = first; j < no;) {
                const char *h = reqs[rd[order[j]].req].handler;
                size_t end = j;
                while (end < no && strcmp(reqs[rd[order[end]].req].handler, h) == 0)
                    end++;
                store__args_push(&c->a, h);
                store__args_pushf(&c->a, "%zu", end - j);
                for (; j < end; j++)
                    push_request(&c->a, &reqs[rd[order[j]].req], &rd[order[j]]);
            }
        }
        rc = store__eval_many(st, calls, ncalls);
        /* Replies: {warnings, then one per request in the call's order}. */
        for (size_t c = 0; rc == 0 && c < ncalls; c++) {
            redisReply *r = calls[c].reply;
            size_t first = call_at[c], last = c + 1 < ncalls ? call_at[c + 1] : no;
            if (r->type != REDIS_REPLY_ARRAY || r->elements != last - first + 1) {
                snprintf(st->err, sizeof st->err, "submit: unexpected reply");
                rc = -EPROTO;
                break;
            }
            store__note_warnings(st, r->element[0]);
            for (size_t j = first; j < last; j++) {
                submit_req *q = &reqs[rd[order[j]].req];
                if (r->element[j - first + 1]->integer != 1) {
                    q->rc = -EEXIST;
                    snprintf(q->err, sizeof q->err, "task %s already exists", q->id_out);
                } else if (calls[c].short_) {
                    q->not_durable = true;
                    snprintf(q->err, sizeof q->err, "%.190s", st->err);
                }
            }
        }
        free(order);
        free(call_at);
    }
    if (rc < 0)
        for (size_t k = 0; k < m; k++) {
            submit_req *q = &reqs[rd[k].req];
            q->rc = rc;
            snprintf(q->err, sizeof q->err, "%.190s", st->err);
        }
    for (size_t c = 0; c < ncalls; c++) {
        freeReplyObject(calls[c].reply);
        store__args_free(&calls[c].a);
    }
    free(calls);
    free(rd);
    return rc;
}

/* ---- cancel, retry ---- */

/* Per-shard shares of the limits given over all shards. */
long store__rmax_shard(const store *st)
{
    if (st->lim.retention_max <= 0)
        return 0;
    return (st->lim.retention_max + st->shards - 1) / st->shards;
}

long store__evcap_shard(const store *st)
{
    long cap = st->lim.events_maxlen / st->shards;
    return cap > 0 ? cap : 1;
}

int store_cancel(store *st, const char *id, char *state_out, size_t n)
{
    if (state_out && n)
        state_out[0] = '\0';
    char tid[BGT_ID_LEN + 1];
    int rc = store__take_id(st, id, tid);
    if (rc < 0)
        return rc;
    if ((rc = store__meta(st)) < 0)
        return rc;
    argbuf a = {0};
    store__args_script(st, &a, SC_CANCEL, store_shard_of(st, tid));
    store__args_push(&a, tid);
    store__args_pushf(&a, "%ld", store__rmax_shard(st));
    store__args_pushf(&a, "%ld", store__evcap_shard(st));
    store__args_pushf(&a, "%lld", st->lim.history_ms);
    redisReply *r;
    rc = store__eval_script(st, SC_CANCEL, &a, &r);
    store__args_free(&a);
    if (rc < 0)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        freeReplyObject(r);
        snprintf(st->err, sizeof st->err, "cancel: unexpected reply");
        return -EPROTO;
    }
    rc = (int)r->element[0]->integer;
    if (rc < 0) {
        snprintf(st->err, sizeof st->err, "task %s not found", tid);
        rc = -ENOENT;
    } else if (r->elements > 1 && state_out && r->element[1]->type == REDIS_REPLY_STRING) {
        strlcpy_(state_out, r->element[1]->str, n);
    }
    freeReplyObject(r);
    return rc;
}

int store_retry(store *st, const char *id, int *reset, bool *parallel)
{
    *reset = 0;
    *parallel = false;
    char tid[BGT_ID_LEN + 1];
    int rc = store__take_id(st, id, tid);
    if (rc < 0)
        return rc;
    if ((rc = store__meta(st)) < 0)
        return rc;
    argbuf a = {0};
    store__args_script(st, &a, SC_RETRY, store_shard_of(st, tid));
    store__args_pushf(&a, "%ld", store__evcap_shard(st));
    store__args_push(&a, ""); /* any outcome: the script says what cannot be retried */
    store__args_push(&a, tid);
    redisReply *r;
    rc = store__eval_script(st, SC_RETRY, &a, &r);
    store__args_free(&a);
    if (rc < 0)
        return rc;
    bool ok = r->type == REDIS_REPLY_ARRAY && r->elements == 2;
    long long v = ok ? r->element[0]->integer : -6;
    *parallel = ok && r->element[1]->integer == 1;
    freeReplyObject(r);
    switch (v) {
    case -1: snprintf(st->err, sizeof st->err, "task %s not found", tid); return -ENOENT;
    case -2:
        snprintf(st->err, sizeof st->err,
                 "task %s: its subtasks count (field ns) is corrupted: nothing to retry", tid);
        return -EALREADY;
    case -3: snprintf(st->err, sizeof st->err, "task %s is still running", tid); return -EBUSY;
    case -4:
        snprintf(st->err, sizeof st->err,
                 *parallel ? "task %s has no failed or cancelled subtasks"
                           : "task %s did not fail and was not cancelled",
                 tid);
        return -EALREADY;
    default:
        if (v < 0) {
            snprintf(st->err, sizeof st->err, "retry: unexpected reply");
            return -EPROTO;
        }
        *reset = (int)v;
        return 0;
    }
}

/*
 * store_bulk.c - the operator's bulk operations: retry, purge and cancel of
 * the tasks a filter selects (one handler's, in some states, finished in a
 * time range) or of a list of ids. A selection reads, one script call per
 * shard (pipelined), the per-handler done lists that retention keeps anyway
 * (finished tasks) or the queues and held hashes (unfinished ones): no index
 * is written on any task's path for it. The change is then one script call
 * per shard and chunk of ids, which checks each task again, so a task that
 * changed meanwhile is left alone and not counted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "store_int.h"
#include "util.h"

/* Records one selection call reads at most: about 4 ms of Redis' time (2 us a record). */
#define SELECT_BUDGET 2000
/* Ids per script call that changes tasks (a retry: about 10 us each). */
#define ACT_CHUNK 500

/* A task chosen: its id, shard and the time it finished (ms; 0 when unfinished). */
typedef struct cand {
    char id[BGT_ID_LEN + 1];
    int shard;
    long long ms;
} cand;

typedef struct cands {
    cand *v;
    size_t n, cap;
} cands;

static void cands_add(cands *c, const char *id, int shard, long long ms)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 256;
        c->v = xrealloc(c->v, c->cap * sizeof *c->v);
    }
    cand *x = &c->v[c->n++];
    strlcpy_(x->id, id, sizeof x->id);
    x->shard = shard;
    x->ms = ms;
}

static int cmp_newest(const void *a, const void *b)
{
    long long x = ((const cand *)a)->ms, y = ((const cand *)b)->ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

static int cmp_oldest(const void *a, const void *b) { return -cmp_newest(a, b); }

static const char *op_name(bulk_op op)
{
    return op == BULK_RETRY ? "retry" : op == BULK_PURGE ? "purge" : "cancel";
}

/*
 * The outcomes the states of q name, space-separated into out (what the
 * scripts match), or -EINVAL with the message naming the field. An empty list
 * takes the operation's default: FAILURE for retry, every finished state for
 * purge.
 */
static int outcomes_of(store *st, const bulk_req *q, char *out, size_t n)
{
    out[0] = '\0';
    if (q->nstates == 0 && q->op == BULK_RETRY)
        snprintf(out, n, "failure");
    for (size_t i = 0; i < q->nstates; i++) {
        const char *s = q->states[i] ? q->states[i] : "";
        const char *o = strcasecmp(s, "FAILURE") == 0     ? "failure"
                        : strcasecmp(s, "CANCELLED") == 0 ? "cancelled"
                        : strcasecmp(s, "SUCCESS") == 0   ? "success partial_success"
                                                          : NULL;
        if (strcasecmp(s, "ONGOING") == 0 && q->op == BULK_PURGE) {
            snprintf(st->err, sizeof st->err,
                     "purge deletes finished tasks only: ONGOING tasks are never purged "
                     "(cancel them first)");
            return -EINVAL;
        }
        if (!o ||
            (q->op == BULK_RETRY && strcmp(o, "failure") != 0 && strcmp(o, "cancelled") != 0)) {
            snprintf(st->err, sizeof st->err,
                     q->op == BULK_RETRY
                         ? "state must be FAILURE or CANCELLED (retry runs failed or cancelled "
                           "tasks again), got '%.32s'"
                         : "state must be SUCCESS, FAILURE or CANCELLED, got '%.32s'",
                     s);
            return -EINVAL;
        }
        size_t have = strlen(out);
        snprintf(out + have, n - have, "%s%s", have ? " " : "", o);
    }
    return 0;
}

/* Check q: 0, or -EINVAL with the message naming the field (nothing is read or changed). */
static int check_req(store *st, const bulk_req *q)
{
    if (q->limit < 0 || q->limit > BULK_LIMIT_MAX) {
        snprintf(st->err, sizeof st->err, "limit must be 1..%d, got %ld", BULK_LIMIT_MAX, q->limit);
        return -EINVAL;
    }
    if (q->nids > 0) {
        if (q->op == BULK_RETRY) {
            snprintf(st->err, sizeof st->err, "retry takes handler, not ids");
            return -EINVAL;
        }
        if (q->handler || q->nstates || q->has_older_than) {
            snprintf(st->err, sizeof st->err,
                     "ids go alone: not with handler, state or older_than");
            return -EINVAL;
        }
        if (q->nids < 1 || q->nids > BULK_IDS_MAX) {
            snprintf(st->err, sizeof st->err, "ids must hold 1..%d task ids, got %zu", BULK_IDS_MAX,
                     q->nids);
            return -EINVAL;
        }
        for (size_t i = 0; i < q->nids; i++)
            if (!id_valid(q->ids[i])) {
                snprintf(st->err, sizeof st->err, "ids[%zu] is not a task id: '%.40s'", i,
                         q->ids[i] ? q->ids[i] : "");
                return -EINVAL;
            }
        return 0;
    }
    if (!q->handler && q->op != BULK_PURGE) {
        snprintf(st->err, sizeof st->err, "handler is required (%s acts on one handler's tasks)",
                 op_name(q->op));
        return -EINVAL;
    }
    if (q->handler && !name_valid(q->handler)) {
        snprintf(st->err, sizeof st->err,
                 "invalid handler name '%.64s': expected [a-z0-9][a-z0-9._-]{0,62}", q->handler);
        return -EINVAL;
    }
    if (q->op == BULK_PURGE && !q->has_older_than) {
        snprintf(st->err, sizeof st->err,
                 "older_than is required (a duration such as 7d; 0s: every finished task)");
        return -EINVAL;
    }
    if (q->op == BULK_CANCEL && q->nstates) {
        snprintf(st->err, sizeof st->err, "cancel takes no state: it acts on ONGOING tasks");
        return -EINVAL;
    }
    if (q->since_ms > 0 && q->until_ms > 0 && q->since_ms >= q->until_ms) {
        snprintf(st->err, sizeof st->err, "since must be before until");
        return -EINVAL;
    }
    return 0;
}

/* Free the replies and argvs of n calls. */
static void calls_free(script_call *calls, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        freeReplyObject(calls[i].reply);
        store__args_free(&calls[i].a);
    }
    free(calls);
}

/* A reply of the select script: {cursor, count, id, value, ...}; NULL when malformed. */
static const redisReply *select_reply(store *st, const redisReply *r)
{
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2 && r->elements % 2 == 0 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_INTEGER)
        return r;
    snprintf(st->err, sizeof st->err, "select: unexpected reply");
    return NULL;
}

/* Finished tasks matching q's filter, over every shard: *matched counts them all. */
static int select_finished(store *st, const bulk_req *q, const char *outcomes, cands *out,
                           long *matched)
{
    char since[32] = "", upto[32] = "";
    if (q->since_ms > 0)
        snprintf(since, sizeof since, "%lld", (long long)q->since_ms);
    if (q->has_older_than)
        snprintf(upto, sizeof upto, "-%lld", (long long)q->older_than_ms);
    else if (q->until_ms > 0)
        snprintf(upto, sizeof upto, "%lld", (long long)q->until_ms);
    /* Where each shard goes on: NULL when it is done. */
    char **cursor = xcalloc((size_t)st->shards, sizeof *cursor);
    for (int s = 0; s < st->shards; s++)
        cursor[s] = xstrdup("");
    int rc = 0;
    for (;;) {
        script_call *calls = xcalloc((size_t)st->shards, sizeof *calls);
        int *shard = xcalloc((size_t)st->shards, sizeof *shard);
        size_t n = 0;
        for (int s = 0; s < st->shards; s++) {
            if (!cursor[s])
                continue;
            script_call *c = &calls[n];
            shard[n++] = s;
            c->script = SC_SELECT;
            store__args_script(st, &c->a, SC_SELECT, s);
            store__args_push(&c->a, "done");
            store__args_push(&c->a, q->handler ? q->handler : "");
            store__args_push(&c->a, outcomes);
            store__args_push(&c->a, since);
            store__args_push(&c->a, upto);
            store__args_push(&c->a, cursor[s]);
            store__args_pushf(&c->a, "%d", SELECT_BUDGET);
        }
        if (n == 0) {
            free(calls);
            free(shard);
            break;
        }
        rc = store__eval_many(st, calls, n);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            const redisReply *r = select_reply(st, calls[i].reply);
            if (!r) {
                rc = -EPROTO;
                break;
            }
            int s = shard[i];
            *matched += (long)r->element[1]->integer;
            for (size_t k = 2; k + 1 < r->elements; k += 2)
                cands_add(out, r->element[k]->str, s, atoll(r->element[k + 1]->str));
            free(cursor[s]);
            cursor[s] = r->element[0]->len ? xstrdup(r->element[0]->str) : NULL;
        }
        calls_free(calls, n);
        free(shard);
        if (rc < 0)
            break;
    }
    for (int s = 0; s < st->shards; s++)
        free(cursor[s]);
    free(cursor);
    return rc;
}

/* Unfinished tasks of q's handler, over every shard: at most limit + 1 kept, all counted. */
static int select_open(store *st, const bulk_req *q, long limit, cands *out, long *matched)
{
    script_call *calls = xcalloc((size_t)st->shards, sizeof *calls);
    for (int s = 0; s < st->shards; s++) {
        calls[s].script = SC_SELECT;
        store__args_script(st, &calls[s].a, SC_SELECT, s);
        store__args_push(&calls[s].a, "open");
        store__args_push(&calls[s].a, q->handler);
        store__args_pushf(&calls[s].a, "%ld", limit + 1);
    }
    int rc = store__eval_many(st, calls, (size_t)st->shards);
    for (int s = 0; rc == 0 && s < st->shards; s++) {
        const redisReply *r = select_reply(st, calls[s].reply);
        if (!r) {
            rc = -EPROTO;
            break;
        }
        *matched += (long)r->element[1]->integer;
        for (size_t k = 2; k + 1 < r->elements; k += 2)
            cands_add(out, r->element[k]->str, s, 0);
    }
    calls_free(calls, (size_t)st->shards);
    return rc;
}

/*
 * The tasks q->ids names: those the operation may act on (purge: finished;
 * cancel: unfinished) into out, the others (unknown too) into skipped.
 */
static int select_ids(store *st, const bulk_req *q, cands *out, cJSON *skipped)
{
    char(*ids)[BGT_ID_LEN + 1] = xcalloc(q->nids, sizeof *ids);
    int *shard = xcalloc(q->nids, sizeof *shard);
    for (size_t i = 0; i < q->nids; i++) {
        store__norm_id(q->ids[i], ids[i]);
        shard[i] = store_shard_of(st, ids[i]);
    }
    script_call *calls = xcalloc((size_t)st->shards, sizeof *calls);
    int *call_shard = xcalloc((size_t)st->shards, sizeof *call_shard);
    size_t n = 0;
    for (int s = 0; s < st->shards; s++) {
        bool any = false;
        for (size_t i = 0; i < q->nids && !any; i++)
            any = shard[i] == s;
        if (!any)
            continue;
        script_call *c = &calls[n];
        call_shard[n++] = s;
        c->script = SC_SELECT;
        store__args_script(st, &c->a, SC_SELECT, s);
        store__args_push(&c->a, "ids");
        for (size_t i = 0; i < q->nids; i++)
            if (shard[i] == s)
                store__args_push(&c->a, ids[i]);
    }
    int rc = store__eval_many(st, calls, n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const redisReply *r = select_reply(st, calls[i].reply);
        if (!r) {
            rc = -EPROTO;
            break;
        }
        for (size_t k = 2; k + 1 < r->elements; k += 2) {
            const char *id = r->element[k]->str, *o = r->element[k + 1]->str;
            bool finished = *o && strcmp(o, "-") != 0;
            if (strcmp(o, "-") != 0 && finished == (q->op == BULK_PURGE))
                cands_add(out, id, call_shard[i], 0);
            else
                cJSON_AddItemToArray(skipped, cJSON_CreateString(id));
        }
    }
    calls_free(calls, n);
    free(call_shard);
    free(shard);
    free(ids);
    return rc;
}

/*
 * Act on the first n candidates: one script call per shard and chunk of ids
 * (cancel: per task), pipelined. Counts what each call did: done[0] (retried,
 * deleted, cancelled) and done[1] (cancel requested); the ids acted on, up to
 * BULK_IDS_SHOWN, go into shown.
 */
static int act(store *st, const bulk_req *q, const char *outcomes, const cand *v, size_t n,
               long done[2], cJSON *shown)
{
    char upto[32] = "";
    if (q->has_older_than)
        snprintf(upto, sizeof upto, "-%lld", (long long)q->older_than_ms);
    int script = q->op == BULK_RETRY ? SC_RETRY : q->op == BULK_PURGE ? SC_PURGE : SC_CANCEL;
    size_t cap = q->op == BULK_CANCEL ? n : (n / ACT_CHUNK + (size_t)st->shards + 1);
    script_call *calls = xcalloc(cap + 1, sizeof *calls);
    /* Call i carries count[i] candidates of its shard, the first of them v[first[i]]. */
    size_t *first = xcalloc(cap + 1, sizeof *first), *count = xcalloc(cap + 1, sizeof *count);
    size_t nc = 0;
    for (int s = 0; s < st->shards; s++) {
        for (size_t i = 0; i < n;) {
            if (v[i].shard != s) {
                i++;
                continue;
            }
            script_call *c = &calls[nc];
            first[nc] = i;
            c->script = script;
            store__args_script(st, &c->a, script, s);
            if (q->op == BULK_CANCEL) {
                store__args_push(&c->a, v[i].id);
                store__args_pushf(&c->a, "%ld", store__rmax_shard(st));
                store__args_pushf(&c->a, "%ld", store__evcap_shard(st));
                store__args_pushf(&c->a, "%lld", st->lim.history_ms);
                count[nc++] = 1;
                i++;
                continue;
            }
            if (q->op == BULK_RETRY)
                store__args_pushf(&c->a, "%ld", store__evcap_shard(st));
            store__args_push(&c->a, outcomes);
            if (q->op == BULK_PURGE)
                store__args_push(&c->a, upto);
            size_t k = 0;
            for (; i < n && k < ACT_CHUNK; i++)
                if (v[i].shard == s) {
                    store__args_push(&c->a, v[i].id);
                    k++;
                }
            count[nc++] = k;
        }
    }
    int rc = store__eval_many(st, calls, nc);
    for (size_t c = 0; rc == 0 && c < nc; c++) {
        const redisReply *r = calls[c].reply;
        size_t per = q->op == BULK_RETRY ? 2 : 1;
        if (r->type != REDIS_REPLY_ARRAY ||
            (q->op != BULK_CANCEL && r->elements != count[c] * per)) {
            snprintf(st->err, sizeof st->err, "%s: unexpected reply", op_name(q->op));
            rc = -EPROTO;
            break;
        }
        /* The candidates of this call: those of its shard from first[c] on. */
        size_t i = first[c];
        for (size_t k = 0; k < count[c]; i++) {
            if (v[i].shard != v[first[c]].shard)
                continue;
            long long res = r->elements > k * per ? r->element[k * per]->integer : -1;
            k++;
            int slot = q->op == BULK_CANCEL && res == CANCEL_REQUESTED ? 1 : 0;
            bool did =
                q->op == BULK_CANCEL ? (res == CANCEL_DONE || res == CANCEL_REQUESTED) : res > 0;
            if (!did)
                continue;
            done[slot]++;
            if (cJSON_GetArraySize(shown) < BULK_IDS_SHOWN)
                cJSON_AddItemToArray(shown, cJSON_CreateString(v[i].id));
        }
    }
    calls_free(calls, nc);
    free(first);
    free(count);
    return rc;
}

int store_bulk(store *st, const bulk_req *q, cJSON **out)
{
    *out = NULL;
    char outcomes[64];
    int rc = check_req(st, q);
    if (rc == 0)
        rc = outcomes_of(st, q, outcomes, sizeof outcomes);
    if (rc == 0)
        rc = store__meta(st);
    if (rc < 0)
        return rc;
    long limit = q->limit > 0 ? q->limit : BULK_LIMIT_DEFAULT, matched = 0, done[2] = {0, 0};
    cands c = {0};
    cJSON *skipped = cJSON_CreateArray(), *shown = cJSON_CreateArray();
    if (q->nids > 0)
        rc = select_ids(st, q, &c, skipped);
    else if (q->op == BULK_CANCEL)
        rc = select_open(st, q, limit, &c, &matched);
    else
        rc = select_finished(st, q, outcomes, &c, &matched);
    if (q->nids > 0)
        matched = (long)c.n;
    /* Retry the newest first, purge the oldest first; cancel as the queues hold them. */
    if (rc == 0 && q->op != BULK_CANCEL && c.n > 1)
        qsort(c.v, c.n, sizeof *c.v, q->op == BULK_RETRY ? cmp_newest : cmp_oldest);
    size_t n = c.n < (size_t)limit ? c.n : (size_t)limit;
    if (rc == 0 && q->dry_run) {
        for (size_t i = 0; i < n && i < BULK_IDS_SHOWN; i++)
            cJSON_AddItemToArray(shown, cJSON_CreateString(c.v[i].id));
    } else if (rc == 0) {
        rc = act(st, q, q->nids > 0 ? "" : outcomes, c.v, n, done, shown);
    }
    free(c.v);
    if (rc < 0) {
        cJSON_Delete(skipped);
        cJSON_Delete(shown);
        return rc;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "matched", (double)matched);
    static const char *const did[] = {
        [BULK_RETRY] = "retried", [BULK_PURGE] = "deleted", [BULK_CANCEL] = "cancelled"};
    cJSON_AddNumberToObject(o, did[q->op], (double)done[0]);
    if (q->op == BULK_CANCEL)
        cJSON_AddNumberToObject(o, "cancel_requested", (double)done[1]);
    cJSON_AddBoolToObject(o, "dry_run", q->dry_run);
    cJSON_AddBoolToObject(o, "truncated", matched > limit);
    cJSON_AddItemToObject(o, "task_ids", shown);
    if (q->nids > 0 || q->op == BULK_PURGE)
        cJSON_AddItemToObject(o, "skipped", skipped);
    else
        cJSON_Delete(skipped);
    *out = o;
    return 0;
}

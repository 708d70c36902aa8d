/*
 * store_history.c - the history: how many tasks ended per handler, outcome
 * and minute. The scripts that end tasks count them into {P:s}:hist:<minute>
 * (one HINCRBY per handler and outcome of a call, expiring history.window
 * after the minute); this file sums the shards' counts into buckets, one
 * script call per shard, pipelined.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "util.h"

const char *const store_outcomes[STORE_OUTCOMES] = {"success", "partial_success", "failure",
                                                   "cancelled"};

int store_outcome_index(const char *name, size_t len)
{
    for (int k = 0; k < STORE_OUTCOMES; k++)
        if (strlen(store_outcomes[k]) == len && strncmp(store_outcomes[k], name, len) == 0)
            return k;
    return -1;
}

long store_history_buckets(int64_t since_ms, int64_t until_ms, int step_min)
{
    int64_t from = since_ms / 60000, to = (until_ms + 59999) / 60000;
    return step_min > 0 && to > from ? (long)((to - from + step_min - 1) / step_min) : 0;
}

/* One handler's series: STORE_OUTCOMES arrays of nb counts. */
typedef struct series {
    char name[64];
    long long *n; /* [outcome * nb + bucket] */
} series;

/* The series of name in v (made when missing). */
static series *series_of(series **v, size_t *nv, const char *name, size_t len, long nb)
{
    for (size_t i = 0; i < *nv; i++)
        if (strlen((*v)[i].name) == len && strncmp((*v)[i].name, name, len) == 0)
            return &(*v)[i];
    *v = xrealloc(*v, (*nv + 1) * sizeof **v);
    series *s = &(*v)[(*nv)++];
    snprintf(s->name, sizeof s->name, "%.*s", (int)len, name);
    s->n = xcalloc((size_t)(STORE_OUTCOMES * nb), sizeof *s->n);
    return s;
}

static int cmp_series(const void *a, const void *b)
{
    return strcmp(((const series *)a)->name, ((const series *)b)->name);
}

int store_history(store *st, const char *handler, int64_t since_ms, int64_t until_ms,
                  int step_min, cJSON **out)
{
    *out = NULL;
    if (handler && !name_valid(handler)) {
        snprintf(st->err, sizeof st->err, "invalid handler name '%.64s'", handler);
        return -EINVAL;
    }
    if (step_min < 1 || since_ms < 0 || until_ms <= since_ms) {
        snprintf(st->err, sizeof st->err, "history: bad range");
        return -EINVAL;
    }
    int meta = store__meta(st);
    if (meta < 0)
        return meta;
    int64_t from = since_ms / 60000, to = (until_ms + 59999) / 60000;
    long nb = store_history_buckets(since_ms, until_ms, step_min);
    script_call *calls = xcalloc((size_t)st->shards, sizeof *calls);
    for (int s = 0; s < st->shards; s++) {
        calls[s].script = SC_HISTORY;
        store__args_script(st, &calls[s].a, SC_HISTORY, s);
        store__args_pushf(&calls[s].a, "%lld", (long long)from);
        store__args_pushf(&calls[s].a, "%lld", (long long)to);
        store__args_pushf(&calls[s].a, "%d", step_min);
        store__args_push(&calls[s].a, handler ? handler : "");
    }
    int rc = store__eval_many(st, calls, (size_t)st->shards);
    series *v = NULL;
    size_t nv = 0;
    if (handler)
        series_of(&v, &nv, handler, strlen(handler), nb);
    for (int s = 0; rc == 0 && s < st->shards; s++) {
        const redisReply *r = calls[s].reply;
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements % 3) {
            snprintf(st->err, sizeof st->err, "history: unexpected reply from shard %d", s);
            rc = -EPROTO;
            break;
        }
        for (size_t k = 0; k + 2 < r->elements; k += 3) {
            const redisReply *f = r->element[k], *b = r->element[k + 1], *c = r->element[k + 2];
            if (f->type != REDIS_REPLY_STRING || b->type != REDIS_REPLY_INTEGER ||
                c->type != REDIS_REPLY_INTEGER || b->integer < 0 || b->integer >= nb)
                continue;
            const char *bar = memchr(f->str, '|', f->len);
            if (!bar)
                continue; /* not a count of ours */
            size_t hlen = (size_t)(bar - f->str);
            int o = store_outcome_index(bar + 1, f->len - hlen - 1);
            if (o < 0 || hlen == 0 || hlen > 63)
                continue;
            series *e = series_of(&v, &nv, f->str, hlen, nb);
            e->n[o * nb + b->integer] += c->integer;
        }
    }
    for (int s = 0; s < st->shards; s++) {
        freeReplyObject(calls[s].reply);
        store__args_free(&calls[s].a);
    }
    free(calls);
    if (rc == 0) {
        if (nv)
            qsort(v, nv, sizeof *v, cmp_series);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "since_ms", (double)since_ms);
        cJSON_AddNumberToObject(o, "until_ms", (double)until_ms);
        cJSON_AddNumberToObject(o, "step_s", step_min * 60.0);
        cJSON *arr = cJSON_AddArrayToObject(o, "handlers");
        for (size_t i = 0; i < nv; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "handler", v[i].name);
            for (int k = 0; k < STORE_OUTCOMES; k++) {
                cJSON *a = cJSON_AddArrayToObject(e, store_outcomes[k]);
                for (long b = 0; b < nb; b++)
                    cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[i].n[k * nb + b]));
            }
            cJSON_AddItemToArray(arr, e);
        }
        *out = o;
    }
    for (size_t i = 0; i < nv; i++)
        free(v[i].n);
    free(v);
    return rc;
}

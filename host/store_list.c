/*
 * store_list.c - listing tasks a page at a time, newest first: a script per
 * shard (LUA_LIST, store_lua_read.h) finds the candidates of each done list,
 * queue and held hash below the page's position, and this file merges them
 * by (key, id), keeps what every shard has read whole, and fetches the
 * records.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "store_int.h"
#include "util.h"

/* Entries a done list may scan past the page's size, to find tasks of another state. */
#define LIST_SCAN_BUDGET 1000

typedef struct cand {
    int64_t key;
    char id[BGT_ID_LEN + 1];
} cand;

static int cmp_cand_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? 1 : -1;
    return -strcmp(x->id, y->id);
}

/* The script's arguments for a state: which lists, and the outcomes wanted. */
static int state_args(const char *state, const char **which, const char **outcomes)
{
    static const struct {
        const char *state, *which, *outcomes;
    } map[] = {
        {"ONGOING", "o", ""},
        {"SUCCESS", "f", "success,partial_success"},
        {"FAILURE", "f", "failure"},
        {"CANCELLED", "f", "cancelled"},
    };
    *which = "a";
    *outcomes = "";
    if (!state)
        return 0;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcasecmp(state, map[i].state) == 0) {
            *which = map[i].which;
            *outcomes = map[i].outcomes;
            return 0;
        }
    return -EINVAL;
}

int store_list_tasks(store *st, const list_query *q, cJSON **out, bool *more, int64_t *next_key,
                     char next_id[BGT_ID_LEN + 1])
{
    *out = NULL;
    *more = false;
    const char *which, *outcomes;
    if (state_args(q->state, &which, &outcomes) < 0) {
        snprintf(st->err, sizeof st->err,
                 "unknown state '%.32s': expected ONGOING, SUCCESS, FAILURE or CANCELLED",
                 q->state);
        return -EINVAL;
    }
    if (q->handler && !name_valid(q->handler)) {
        snprintf(st->err, sizeof st->err, "invalid handler name '%.64s'", q->handler);
        return -EINVAL;
    }
    int meta = store__meta(st);
    if (meta < 0)
        return meta;
    int limit = q->limit > 0 ? q->limit : 20;
    script_call *calls = xcalloc((size_t)st->shards, sizeof *calls);
    for (int s = 0; s < st->shards; s++) {
        argbuf *a = &calls[s].a;
        calls[s].script = SC_LIST;
        store__args_script(st, a, SC_LIST, s);
        store__args_push(a, q->handler ? q->handler : "");
        store__args_pushf(a, "%d", limit);
        store__args_pushf(a, "%lld", (long long)q->since_ms);
        store__args_pushf(a, "%lld", q->until_ms > 0 ? (long long)q->until_ms : (1LL << 53));
        if (q->below)
            store__args_pushf(a, "%lld", (long long)q->below_key);
        else
            store__args_push(a, "");
        store__args_push(a, q->below ? q->below_id : "");
        store__args_push(a, which);
        store__args_push(a, outcomes);
        store__args_pushf(a, "%d", LIST_SCAN_BUDGET);
    }
    int rc = store__eval_many(st, calls, (size_t)st->shards);
    cand *v = NULL;
    size_t n = 0, cap = 0;
    long long bound = -1;
    for (int s = 0; rc == 0 && s < st->shards; s++) {
        const redisReply *r = calls[s].reply;
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 1 ||
            r->element[0]->type != REDIS_REPLY_INTEGER) {
            snprintf(st->err, sizeof st->err, "list: unexpected reply from shard %d", s);
            rc = -EPROTO;
            break;
        }
        if (r->element[0]->integer > bound)
            bound = r->element[0]->integer;
        for (size_t k = 1; k + 1 < r->elements; k += 2) {
            const redisReply *id = r->element[k], *key = r->element[k + 1];
            if (id->type != REDIS_REPLY_STRING || id->len != BGT_ID_LEN ||
                key->type != REDIS_REPLY_INTEGER)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                v = xrealloc(v, cap * sizeof *v);
            }
            v[n].key = key->integer;
            memcpy(v[n].id, id->str, BGT_ID_LEN + 1);
            n++;
        }
    }
    for (int s = 0; s < st->shards; s++) {
        freeReplyObject(calls[s].reply);
        store__args_free(&calls[s].a);
    }
    free(calls);
    /* Below the bound, a shard's list was not read whole: those wait for the next page. */
    size_t valid = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].key >= bound)
            v[valid++] = v[i];
    if (valid)
        qsort(v, valid, sizeof *v, cmp_cand_desc);
    size_t take = valid < (size_t)limit ? valid : (size_t)limit;
    if (rc == 0) {
        if (valid > take) {
            *more = true;
            *next_key = v[take - 1].key;
            memcpy(next_id, v[take - 1].id, BGT_ID_LEN + 1);
        } else if (bound >= 0) {
            *more = true; /* everything at the bound and above was taken */
            *next_key = bound;
            next_id[0] = '\0';
        }
    }
    char(*ids)[BGT_ID_LEN + 1] = xcalloc(take + 1, sizeof *ids);
    for (size_t i = 0; i < take; i++)
        memcpy(ids[i], v[i].id, BGT_ID_LEN + 1);
    free(v);
    cJSON *arr = cJSON_CreateArray();
    if (rc == 0)
        rc = store__fetch_records(st, ids, take, q->state, q->handler, arr);
    free(ids);
    if (rc < 0) {
        cJSON_Delete(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

/*
 * store_read.c - the store's reads: task records, lists of tasks and hosts,
 * queue figures, the event stream, subtasks and Redis' own INFO.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "store_int.h"
#include "util.h"

/* ---- reading ---- */

static const char *const numeric_fields[] = {
    "attempt",     "released",         "max_attempts",   "created_ms",       "started_ms",
    "updated_ms",  "finished_ms",      "progress_current", "progress_total", "subtasks",
    "sub_success", "sub_failure",      NULL,
};

static bool is_numeric_field(const char *f)
{
    for (int i = 0; numeric_fields[i]; i++)
        if (strcmp(f, numeric_fields[i]) == 0)
            return true;
    return false;
}

/* Build the JSON form of a record from an HGETALL reply. */
static cJSON *record_json(const redisReply *r)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *f = r->element[i]->str;
        const char *v = r->element[i + 1]->str ? r->element[i + 1]->str : "";
        if (!f)
            continue;
        if (is_numeric_field(f)) {
            char *end;
            double d = strtod(v, &end);
            if (*v && !*end)
                cJSON_AddNumberToObject(o, f, d);
            else
                cJSON_AddStringToObject(o, f, v); /* corrupted: show what is there */
        } else if (strcmp(f, "cancel_requested") == 0) {
            cJSON_AddBoolToObject(o, f, strcmp(v, "1") == 0);
        } else if (strcmp(f, "args") == 0 || strcmp(f, "result") == 0) {
            cJSON *j = *v ? cJSON_Parse(v) : NULL;
            if (j)
                cJSON_AddItemToObject(o, f, j);
            else if (*v)
                cJSON_AddStringToObject(o, f, v);
            else
                cJSON_AddNullToObject(o, f);
        } else if ((strcmp(f, "owner") == 0 || strcmp(f, "error") == 0) && !*v) {
            cJSON_AddNullToObject(o, f);
        } else {
            cJSON_AddStringToObject(o, f, v);
        }
    }
    return o;
}

int store_get_task(store *st, const char *id, cJSON **out)
{
    *out = NULL;
    if (!id_valid(id)) {
        snprintf(st->err, sizeof st->err, "invalid task id '%.40s'", id ? id : "");
        return -EINVAL;
    }
    char key[300];
    redisReply *r;
    int rc = store__cmd(st, store__key(st, key, sizeof key, "task:%s", id), &r, "HGETALL %s", key);
    if (rc < 0)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        freeReplyObject(r);
        snprintf(st->err, sizeof st->err, "task %s not found", id);
        return -ENOENT;
    }
    *out = record_json(r);
    freeReplyObject(r);
    return 0;
}

/* Fetch records of ids (pipelined) and append those matching the filters. */
static int fetch_matching(store *st, redisReply *ids, size_t from, const char *state,
                          const char *handler, int limit, cJSON *arr)
{
    size_t n = ids->elements > from ? ids->elements - from : 0;
    if (n == 0)
        return 0;
    rcall *calls = xcalloc(n, sizeof *calls);
    char **keys = xcalloc(n, sizeof *keys);
    redisReply **reps = xcalloc(n, sizeof *reps);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        keys[i] = xasprintf("%s:task:%s", st->prefix, ids->element[from + i]->str);
        rc = store__call_fmt(&calls[i], keys[i], "HGETALL %s", keys[i]);
    }
    if (rc == 0)
        rc = store__run(st, calls, n, reps);
    for (size_t i = 0; i < n; i++) {
        redisReply *r = reps[i];
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
            cJSON_GetArraySize(arr) < limit) {
            cJSON *o = record_json(r);
            cJSON *s = cJSON_GetObjectItem(o, "state");
            cJSON *h = cJSON_GetObjectItem(o, "handler");
            bool ok = (!state || (cJSON_IsString(s) && strcasecmp(s->valuestring, state) == 0)) &&
                      (!handler || (cJSON_IsString(h) && strcmp(h->valuestring, handler) == 0));
            if (ok)
                cJSON_AddItemToArray(arr, o);
            else
                cJSON_Delete(o);
        }
        if (r)
            freeReplyObject(r);
        free((char *)calls[i].cmd);
        free(keys[i]);
    }
    free(calls);
    free(keys);
    free(reps);
    return rc;
}

static double num_field(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItem(o, f);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static int cmp_created_desc(const void *a, const void *b)
{
    double x = num_field(*(cJSON *const *)a, "created_ms");
    double y = num_field(*(cJSON *const *)b, "created_ms");
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Sort an array of records newest first (cJSON arrays are linked lists). */
static void sort_records(cJSON *arr)
{
    int n = cJSON_GetArraySize(arr);
    if (n < 2)
        return;
    cJSON **v = xmalloc((size_t)n * sizeof *v);
    for (int i = 0; i < n; i++)
        v[i] = cJSON_DetachItemFromArray(arr, 0);
    qsort(v, (size_t)n, sizeof *v, cmp_created_desc);
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, v[i]);
    free(v);
}

int store_list_tasks(store *st, const char *state, const char *handler, int limit, cJSON **out)
{
    *out = NULL;
    if (limit <= 0)
        limit = 20;
    if (handler && !name_valid(handler)) {
        snprintf(st->err, sizeof st->err, "invalid handler name '%.64s'", handler);
        return -EINVAL;
    }
    static const char *const states[] = {"ONGOING", "SUCCESS", "FAILURE", "CANCELLED", NULL};
    if (state) {
        bool known = false;
        for (int i = 0; states[i]; i++)
            known |= strcasecmp(state, states[i]) == 0;
        if (!known) {
            snprintf(st->err, sizeof st->err,
                     "unknown state '%.32s': expected ONGOING, SUCCESS, FAILURE or CANCELLED",
                     state);
            return -EINVAL;
        }
    }
    cJSON *arr = cJSON_CreateArray();
    int rc = 0;
    redisReply *r = NULL;
    bool want_ongoing = !state || strcasecmp(state, "ONGOING") == 0;
    bool want_done = !state || strcasecmp(state, "ONGOING") != 0;
    if (want_ongoing) {
        /* Queues hold the ONGOING tasks; one per handler. */
        char cursor[32] = "0";
        do {
            rc = handler ? store__cmd(st, NULL, &r, "SCAN %s MATCH %s:q:%s COUNT 1000", cursor,
                                      st->prefix, handler)
                         : store__cmd(st, NULL, &r, "SCAN %s MATCH %s:q:* COUNT 1000", cursor,
                                      st->prefix);
            if (rc < 0)
                goto fail;
            strlcpy_(cursor, r->element[0]->str, sizeof cursor);
            redisReply *keys = r->element[1];
            for (size_t k = 0; k < keys->elements; k++) {
                redisReply *ids;
                const char *q = keys->element[k]->str;
                rc = store__cmd(st, q, &ids, "ZRANGE %s 0 %d", q, limit * 4);
                if (rc < 0)
                    goto fail;
                rc = fetch_matching(st, ids, 0, "ONGOING", handler, limit * 4, arr);
                freeReplyObject(ids);
                if (rc < 0)
                    goto fail;
            }
            freeReplyObject(r);
            r = NULL;
        } while (strcmp(cursor, "0") != 0);
    }
    if (want_done) {
        /* Finished tasks, newest first, a page at a time until limit match. */
        cJSON *done = cJSON_CreateArray();
        for (long start = 0; cJSON_GetArraySize(done) < limit; start += 200) {
            char key[300];
            rc = store__cmd(st, store__key(st, key, sizeof key, "done"), &r,
                            "ZREVRANGE %s %ld %ld", key, start, start + 199);
            if (rc < 0) {
                cJSON_Delete(done);
                goto fail;
            }
            size_t got = r->elements;
            rc = fetch_matching(st, r, 0, state, handler, limit, done);
            freeReplyObject(r);
            r = NULL;
            if (rc < 0 || got < 200)
                break;
        }
        cJSON *it;
        while ((it = cJSON_DetachItemFromArray(done, 0)))
            cJSON_AddItemToArray(arr, it);
        cJSON_Delete(done);
        if (rc < 0)
            goto fail;
    }
    sort_records(arr);
    while (cJSON_GetArraySize(arr) > limit)
        cJSON_DeleteItemFromArray(arr, limit);
    *out = arr;
    return 0;
fail:
    freeReplyObject(r);
    cJSON_Delete(arr);
    return rc;
}

int store_list_hosts(store *st, cJSON **out)
{
    *out = NULL;
    char key[300];
    redisReply *r;
    int rc = store__cmd(st, store__key(st, key, sizeof key, "hosts"), &r,
                        "ZRANGE %s 0 -1 WITHSCORES", key);
    if (rc < 0)
        return rc;
    redisReply *t;
    rc = store__cmd(st, key, &t, "TIME");
    if (rc < 0) {
        freeReplyObject(r);
        return rc;
    }
    double now = atof(t->element[0]->str) * 1000 + atof(t->element[1]->str) / 1000;
    freeReplyObject(t);
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        double exp = atof(r->element[i + 1]->str);
        if (exp < now)
            continue; /* its lease ran out: not live */
        redisReply *h;
        rc = store__cmd(st, store__key(st, key, sizeof key, "host:%s", r->element[i]->str), &h,
                        "HGETALL %s", key);
        if (rc < 0)
            break;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", r->element[i]->str);
        for (size_t k = 0; k + 1 < h->elements; k += 2) {
            const char *f = h->element[k]->str, *v = h->element[k + 1]->str;
            if (strcmp(f, "id") == 0)
                continue;
            if (strcmp(f, "pid") == 0 || strcmp(f, "workers") == 0 ||
                strcmp(f, "running") == 0 || strcmp(f, "started_ms") == 0 ||
                strcmp(f, "updated_ms") == 0)
                cJSON_AddNumberToObject(o, f, atof(v));
            else if (strcmp(f, "handlers") == 0) {
                cJSON *list = cJSON_AddArrayToObject(o, "handlers");
                char *copy = xstrdup(v), *save = NULL;
                for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
                    cJSON_AddItemToArray(list, cJSON_CreateString(tok));
                free(copy);
            } else
                cJSON_AddStringToObject(o, f, v);
        }
        cJSON_AddNumberToObject(o, "expires_ms", exp);
        freeReplyObject(h);
        cJSON_AddItemToArray(arr, o);
    }
    freeReplyObject(r);
    if (rc < 0) {
        cJSON_Delete(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

/*
 * The depth, due count and oldest due age of each queue key of one SCAN
 * page: three calls per key, run together (pipelined where they go to one
 * server). A key that answers with an error (not a sorted set) is left out.
 */
static int stats_page(store *st, const redisReply *keys, long long now, cJSON *hs)
{
    size_t n = keys->elements * 3;
    if (n == 0)
        return 0;
    size_t plen = strlen(st->prefix) + 3;
    rcall *calls = xcalloc(n, sizeof *calls);
    redisReply **reps = xcalloc(n, sizeof *reps);
    int rc = 0;
    for (size_t k = 0; k < keys->elements && rc == 0; k++) {
        const char *q = keys->element[k]->str;
        if ((rc = store__call_fmt(&calls[3 * k], q, "ZCARD %s", q)) == 0 &&
            (rc = store__call_fmt(&calls[3 * k + 1], q, "ZCOUNT %s -inf %lld", q, now)) == 0)
            rc = store__call_fmt(&calls[3 * k + 2], q,
                                 "ZRANGEBYSCORE %s -inf %lld WITHSCORES LIMIT 0 1", q, now);
    }
    if (rc == 0)
        rc = store__run(st, calls, n, reps);
    for (size_t k = 0; k < keys->elements && rc == 0; k++) {
        redisReply **r = reps + 3 * k;
        if (!r[0] || !r[1] || !r[2] || r[0]->type != REDIS_REPLY_INTEGER ||
            r[1]->type != REDIS_REPLY_INTEGER || r[2]->type != REDIS_REPLY_ARRAY)
            continue;
        double oldest = r[2]->elements == 2 ? (double)now - atof(r[2]->element[1]->str) : 0;
        cJSON *h = cJSON_CreateObject();
        cJSON_AddStringToObject(h, "handler", keys->element[k]->str + plen);
        cJSON_AddNumberToObject(h, "queued", (double)r[0]->integer);
        cJSON_AddNumberToObject(h, "due", (double)r[1]->integer);
        cJSON_AddNumberToObject(h, "oldest_due_age_ms", oldest > 0 ? oldest : 0);
        cJSON_AddItemToArray(hs, h);
    }
    for (size_t i = 0; i < n; i++) {
        if (reps[i])
            freeReplyObject(reps[i]);
        free((char *)calls[i].cmd);
    }
    free(calls);
    free(reps);
    return rc;
}

int store_stats(store *st, cJSON **out)
{
    *out = NULL;
    char key[300];
    redisReply *t, *r = NULL;
    int rc = store__cmd(st, NULL, &t, "TIME");
    if (rc < 0)
        return rc;
    long long now = atoll(t->element[0]->str) * 1000 + atoll(t->element[1]->str) / 1000;
    freeReplyObject(t);
    cJSON *o = cJSON_CreateObject();
    cJSON *hs = cJSON_AddArrayToObject(o, "handlers");
    char cursor[32] = "0";
    do {
        rc = store__cmd(st, NULL, &r, "SCAN %s MATCH %s:q:* COUNT 1000", cursor, st->prefix);
        if (rc < 0)
            goto fail;
        strlcpy_(cursor, r->element[0]->str, sizeof cursor);
        if ((rc = stats_page(st, r->element[1], now, hs)) < 0)
            goto fail;
        freeReplyObject(r);
        r = NULL;
    } while (strcmp(cursor, "0") != 0);
    if ((rc = store__cmd(st, store__key(st, key, sizeof key, "done"), &r, "ZCARD %s", key)) < 0)
        goto fail;
    cJSON_AddNumberToObject(o, "finished", (double)r->integer);
    freeReplyObject(r);
    r = NULL;
    if ((rc = store__cmd(st, store__key(st, key, sizeof key, "hosts"), &r, "ZCOUNT %s %lld +inf",
                         key, now)) < 0)
        goto fail;
    cJSON_AddNumberToObject(o, "hosts", (double)r->integer);
    freeReplyObject(r);
    *out = o;
    return 0;
fail:
    freeReplyObject(r);
    cJSON_Delete(o);
    return rc;
}

/* One part of a stream id: 1..20 decimal digits within 64 bits, up to end (or the NUL). */
static bool sid_part(const char *s, const char *end, uint64_t *v)
{
    size_t n = end ? (size_t)(end - s) : strlen(s);
    if (n == 0 || n > 20)
        return false;
    *v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || *v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
            return false;
        *v = *v * 10 + (uint64_t)(s[i] - '0');
    }
    return true;
}

bool store_event_id_valid(const char *s)
{
    if (!s)
        return false;
    if (strcmp(s, "0") == 0)
        return true;
    const char *dash = strchr(s, '-');
    uint64_t ms, seq;
    return dash && sid_part(s, dash, &ms) && sid_part(dash + 1, NULL, &seq) &&
           !(ms == UINT64_MAX && seq == UINT64_MAX);
}

int store_events_after(store *st, const char *id, const char *after, int limit, cJSON **out)
{
    *out = NULL;
    if (!id_valid(id) || !store_event_id_valid(after)) {
        snprintf(st->err, sizeof st->err, "invalid task id or event id");
        return -EINVAL;
    }
    cJSON *arr = cJSON_CreateArray();
    char start[48];
    snprintf(start, sizeof start, "(%s", after);
    if (strcmp(after, "0") == 0)
        strcpy(start, "-");
    for (;;) {
        redisReply *r;
        char key[300];
        int rc = store__cmd(st, store__key(st, key, sizeof key, "events"), &r,
                            "XRANGE %s %s + COUNT 1000", key, start);
        if (rc < 0) {
            cJSON_Delete(arr);
            return rc;
        }
        for (size_t i = 0; i < r->elements && cJSON_GetArraySize(arr) < limit; i++) {
            redisReply *e = r->element[i];
            if (e->elements != 2)
                continue;
            redisReply *kv = e->element[1];
            const char *ev = NULL, *tid = NULL, *data = NULL;
            for (size_t k = 0; k + 1 < kv->elements; k += 2) {
                const char *f = kv->element[k]->str;
                if (strcmp(f, "event") == 0)
                    ev = kv->element[k + 1]->str;
                else if (strcmp(f, "task_id") == 0)
                    tid = kv->element[k + 1]->str;
                else if (strcmp(f, "data") == 0)
                    data = kv->element[k + 1]->str;
            }
            if (!ev || !tid || !data || strcmp(tid, id) != 0)
                continue;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "id", e->element[0]->str);
            cJSON_AddStringToObject(o, "event", ev);
            cJSON *d = cJSON_Parse(data);
            cJSON_AddItemToObject(o, "data", d ? d : cJSON_CreateObject());
            cJSON_AddItemToArray(arr, o);
        }
        size_t n = r->elements;
        if (n > 0)
            snprintf(start, sizeof start, "(%s", r->element[n - 1]->element[0]->str);
        freeReplyObject(r);
        if (n < 1000 || cJSON_GetArraySize(arr) >= limit)
            break;
    }
    *out = arr;
    return 0;
}

int store_count_finished(store *st, long long *n)
{
    char key[300];
    redisReply *r;
    int rc = store__cmd(st, store__key(st, key, sizeof key, "done"), &r, "ZCARD %s", key);
    if (rc == 0) {
        *n = r->integer;
        freeReplyObject(r);
    }
    return rc;
}

int store_info(store *st, const char *section, char **out)
{
    *out = NULL;
    redisReply *r;
    int rc = store__cmd(st, NULL, &r, "INFO %s", section);
    if (rc < 0)
        return rc;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
        *out = strndup(r->str, (size_t)r->len);
    freeReplyObject(r);
    return *out ? 0 : -EPROTO;
}

/* ---- parallel tasks ---- */

void store_sub_recs_free(sub_rec *subs, int n)
{
    if (!subs)
        return;
    for (int i = 0; i < n; i++) {
        free(subs[i].args);
        free(subs[i].message);
        free(subs[i].result);
    }
    free(subs);
}

int store_load_subtasks(store *st, const char *id, int n, sub_rec **out)
{
    *out = NULL;
    char key[300];
    redisReply *r;
    int rc = store__cmd(st, store__key(st, key, sizeof key, "sub:%s", id), &r, "HGETALL %s", key);
    if (rc < 0)
        return rc;
    sub_rec *subs = xcalloc((size_t)n + 1, sizeof *subs);
    for (int i = 0; i < n; i++)
        strcpy(subs[i].state, "PENDING");
    for (size_t k = 0; k + 1 < r->elements; k += 2) {
        const char *f = r->element[k]->str, *v = r->element[k + 1]->str;
        char *colon;
        long i = strtol(f, &colon, 10);
        if (*colon != ':' || i < 0 || i >= n)
            continue; /* not a subtask field, or past the count: ignore */
        const char *name = colon + 1;
        if (strcmp(name, "args") == 0)
            subs[i].args = xstrdup(v);
        else if (strcmp(name, "state") == 0)
            strlcpy_(subs[i].state, v, sizeof subs[i].state);
        else if (strcmp(name, "attempt") == 0)
            subs[i].attempt = (uint32_t)atol(v);
        else if (strcmp(name, "message") == 0)
            subs[i].message = xstrdup(v);
        else if (strcmp(name, "result") == 0)
            subs[i].result = xstrdup(v);
    }
    freeReplyObject(r);
    *out = subs;
    return 0;
}


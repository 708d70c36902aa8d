/*
 * store_read.c - the store's reads: task records (in the JSON form clients
 * read, with the long field names of DESIGN §5, from the short fields of
 * protocol 2 and the holding host's lease), lists of tasks and hosts, queue
 * figures and subtasks. Reads that span shards are pipelined.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "store_int.h"
#include "util.h"

/* ---- pipelines ---- */

/* A set of commands run together; each reply is NULL or owned by the set. */
typedef struct batch {
    rcall *c;
    redisReply **r;
    size_t n, cap;
} batch;

__attribute__((format(printf, 3, 4))) static void batch_add(batch *b, const char *key,
                                                            const char *fmt, ...)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 32;
        b->c = xrealloc(b->c, b->cap * sizeof *b->c);
        b->r = xrealloc(b->r, b->cap * sizeof *b->r);
    }
    va_list ap;
    va_start(ap, fmt);
    char *cmd = NULL;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len <= 0)
        abort(); /* only on out-of-memory */
    b->c[b->n] =
        (rcall){.key = key, .keylen = key ? strlen(key) : 0, .cmd = cmd, .len = (size_t)len};
    b->r[b->n++] = NULL;
}

static int batch_run(store *st, batch *b) { return b->n ? store__run(st, b->c, b->n, b->r) : 0; }

/* The reply i when it is an array (a wrong-typed key answers an error: nothing there). */
static const redisReply *batch_array(const batch *b, size_t i)
{
    const redisReply *r = b->r[i];
    return r && r->type == REDIS_REPLY_ARRAY ? r : NULL;
}

static long long batch_int(const batch *b, size_t i)
{
    const redisReply *r = b->r[i];
    return r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
}

static void batch_free(batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free((char *)b->c[i].cmd);
        if (b->r[i])
            freeReplyObject(b->r[i]);
    }
    free(b->c);
    free(b->r);
    memset(b, 0, sizeof *b);
}

/* Redis' clock, ms. */
static int redis_now(store *st, long long *now)
{
    redisReply *t;
    int rc = store__cmd(st, NULL, &t, "TIME");
    if (rc < 0)
        return rc;
    if (t->type != REDIS_REPLY_ARRAY || t->elements != 2) {
        freeReplyObject(t);
        snprintf(st->err, sizeof st->err, "TIME: unexpected reply");
        return -EPROTO;
    }
    *now = atoll(t->element[0]->str) * 1000 + atoll(t->element[1]->str) / 1000;
    freeReplyObject(t);
    return 0;
}

/* ---- records ---- */

/* The attempt running now, from the held hash of its host (owner NULL: none). */
typedef struct lease {
    const char *owner;
    const char *token; /* "<attempt> <started_ms>[ c]" */
} lease;

static const char *field(const redisReply *r, const char *name)
{
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING && strcmp(r->element[i]->str, name) == 0)
            return r->element[i + 1]->type == REDIS_REPLY_STRING ? r->element[i + 1]->str : "";
    return NULL;
}

static void add_num(cJSON *o, const char *name, const char *v, double dflt)
{
    char *end;
    double d = v ? strtod(v, &end) : dflt;
    if (v && (!*v || *end))
        cJSON_AddStringToObject(o, name, v); /* corrupted: show what is there */
    else
        cJSON_AddNumberToObject(o, name, d);
}

static void add_json(cJSON *o, const char *name, const char *v, const char *dflt)
{
    if (!v)
        v = dflt;
    cJSON *j = v ? cJSON_Parse(v) : NULL;
    if (j)
        cJSON_AddItemToObject(o, name, j);
    else if (v)
        cJSON_AddStringToObject(o, name, v);
    else
        cJSON_AddNullToObject(o, name);
}

static const char *state_of(const char *outcome)
{
    if (!outcome)
        return "ONGOING";
    if (strcmp(outcome, "success") == 0 || strcmp(outcome, "partial_success") == 0)
        return "SUCCESS";
    if (strcmp(outcome, "failure") == 0)
        return "FAILURE";
    if (strcmp(outcome, "cancelled") == 0)
        return "CANCELLED";
    return outcome; /* corrupted: show what is there */
}

static double dmax(double a, double b) { return a > b ? a : b; }

/* The JSON form of record r (an HGETALL reply) of task id. */
static cJSON *record_json(const char *id, const redisReply *r, const lease *l)
{
    const char *o = field(r, "o"), *n = l->token ? l->token : field(r, "n");
    const char *ns = field(r, "ns"), *pm = field(r, "pm"), *m = field(r, "m"), *e = field(r, "e");
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", id);
    const char *h = field(r, "h");
    cJSON_AddStringToObject(j, "handler", h ? h : "");
    cJSON_AddStringToObject(j, "kind", ns ? "parallel" : "single");
    cJSON_AddStringToObject(j, "state", state_of(o));
    if (o)
        cJSON_AddStringToObject(j, "outcome", o);
    else
        cJSON_AddNullToObject(j, "outcome");
    add_json(j, "args", field(r, "a"), "{}");
    double attempt = n ? atof(n) : 0, started = 0;
    const char *sp = n ? strchr(n, ' ') : NULL;
    if (sp)
        started = atof(sp + 1);
    cJSON_AddNumberToObject(j, "attempt", attempt);
    add_num(j, "released", field(r, "r"), 0);
    add_num(j, "retries", field(r, "rt"), 0); /* an operator's */
    const char *x = field(r, "x");
    if (x && atoi(x) > 0)
        add_num(j, "max_attempts", x, 0);
    else
        cJSON_AddNullToObject(j, "max_attempts"); /* its handler's */
    if (l->owner)
        cJSON_AddStringToObject(j, "owner", l->owner);
    else
        cJSON_AddNullToObject(j, "owner");
    const char *c = field(r, "c"), *f = field(r, "f"), *pu = field(r, "pu");
    add_num(j, "created_ms", c, 0);
    cJSON_AddNumberToObject(j, "started_ms", started);
    double updated = dmax(dmax(c ? atof(c) : 0, started), dmax(pu ? atof(pu) : 0, f ? atof(f) : 0));
    cJSON_AddNumberToObject(j, "updated_ms", updated);
    add_num(j, "finished_ms", f, 0);
    add_num(j, "progress_current", field(r, "pc"), 0);
    add_num(j, "progress_total", field(r, "pt"), 0);
    const char *msg;
    if (!o)
        msg = pm ? pm : m ? m : "Task started";
    else if (strcmp(o, "failure") == 0)
        msg = e ? e : m ? m : "";
    else
        msg = m ? m : strcmp(o, "cancelled") == 0 ? "Cancelled" : "Task finished";
    cJSON_AddStringToObject(j, "message", msg);
    add_json(j, "result", field(r, "y"), NULL);
    if (o && strcmp(o, "failure") == 0 && e)
        cJSON_AddStringToObject(j, "error", e);
    else
        cJSON_AddNullToObject(j, "error");
    const char *k = field(r, "k");
    bool cancel = (k && strcmp(k, "1") == 0) || (l->token && strstr(l->token, " c"));
    cJSON_AddBoolToObject(j, "cancel_requested", cancel);
    add_num(j, "subtasks", ns, 0);
    add_num(j, "sub_success", field(r, "ss"), 0);
    add_num(j, "sub_failure", field(r, "sf"), 0);
    add_num(j, "parallelism", field(r, "pl"), 0);
    const char *of = field(r, "of");
    cJSON_AddStringToObject(j, "on_failure", of ? of : "");
    return j;
}

int store_get_task(store *st, const char *id, cJSON **out)
{
    *out = NULL;
    char tid[BGT_ID_LEN + 1];
    if (store__take_id(st, id, tid) < 0)
        return -EINVAL;
    int meta = store__meta(st);
    if (meta < 0)
        return meta;
    const char *tag = st->tags[store_shard_of(st, tid)];
    batch b = {0};
    batch_add(&b, tag, "HGETALL %s:t:%s", tag, tid);
    batch_add(&b, tag, "ZRANGE %s:hosts 0 -1", tag);
    int rc = batch_run(st, &b);
    const redisReply *rec = rc == 0 ? batch_array(&b, 0) : NULL;
    if (rc == 0 && (!rec || rec->elements == 0)) {
        snprintf(st->err, sizeof st->err, "task %s not found", tid);
        rc = -ENOENT;
    }
    lease l = {0};
    batch held = {0};
    const redisReply *hosts = rc == 0 ? batch_array(&b, 1) : NULL;
    if (rc == 0 && !field(rec, "o") && hosts && hosts->elements > 0) {
        /* Running? Its host's held hash says so. */
        for (size_t i = 0; i < hosts->elements; i++)
            batch_add(&held, tag, "HGET %s:held:%s %s", tag, hosts->element[i]->str, tid);
        rc = batch_run(st, &held);
        for (size_t i = 0; rc == 0 && i < held.n; i++)
            if (held.r[i] && held.r[i]->type == REDIS_REPLY_STRING) {
                l.owner = hosts->element[i]->str;
                l.token = held.r[i]->str;
            }
    }
    if (rc == 0)
        *out = record_json(tid, rec, &l);
    batch_free(&held);
    batch_free(&b);
    return rc;
}

/* ---- lists ---- */

/*
 * The handlers with a queue or a done list in each shard (or just `only` in
 * every shard): one SMEMBERS per shard, pipelined. *out is a batch whose reply
 * s is shard s's array (NULL when only is given).
 */
static int shard_handlers(store *st, const char *only, batch *out)
{
    memset(out, 0, sizeof *out);
    if (only)
        return 0;
    for (int s = 0; s < st->shards; s++)
        batch_add(out, st->tags[s], "SMEMBERS %s:handlers", st->tags[s]);
    return batch_run(st, out);
}

/* The handlers of shard s from shard_handlers: their count, and name k of them. */
static size_t nhandlers(const batch *hb, int s, const char *only)
{
    if (only)
        return 1;
    const redisReply *r = batch_array(hb, (size_t)s);
    return r ? r->elements : 0;
}

static const char *handler_at(const batch *hb, int s, size_t k, const char *only)
{
    return only ? only : batch_array(hb, (size_t)s)->element[k]->str;
}

int store__fetch_records(store *st, char (*ids)[BGT_ID_LEN + 1], size_t n, const char *state,
                         const char *handler, cJSON *arr)
{
    batch b = {0};
    for (size_t i = 0; i < n; i++) {
        const char *tag = st->tags[store_shard_of(st, ids[i])];
        batch_add(&b, tag, "HGETALL %s:t:%s", tag, ids[i]);
    }
    int rc = batch_run(st, &b);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const redisReply *r = batch_array(&b, i);
        if (!r || r->elements == 0)
            continue;
        lease l = {0};
        cJSON *o = record_json(ids[i], r, &l);
        const char *s = cJSON_GetObjectItem(o, "state")->valuestring;
        const char *h = cJSON_GetObjectItem(o, "handler")->valuestring;
        if ((!state || strcasecmp(s, state) == 0) && (!handler || strcmp(h, handler) == 0))
            cJSON_AddItemToArray(arr, o);
        else
            cJSON_Delete(o);
    }
    batch_free(&b);
    return rc;
}

int store_list_hosts(store *st, cJSON **out)
{
    *out = NULL;
    char key[300];
    snprintf(key, sizeof key, "%s:hosts", st->gtag);
    long long now;
    int rc = redis_now(st, &now);
    redisReply *r = NULL;
    if (rc == 0)
        rc = store__cmd(st, st->gtag, &r, "ZRANGEBYSCORE %s %lld +inf WITHSCORES", key, now);
    if (rc < 0)
        return rc;
    batch b = {0};
    size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements / 2 : 0;
    for (size_t i = 0; i < n; i++)
        batch_add(&b, st->gtag, "HGETALL %s:host:%s", st->gtag, r->element[2 * i]->str);
    rc = batch_run(st, &b);
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const redisReply *h = batch_array(&b, i);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", r->element[2 * i]->str);
        for (size_t k = 0; h && k + 1 < h->elements; k += 2) {
            const char *f = h->element[k]->str, *v = h->element[k + 1]->str;
            if (strcmp(f, "id") == 0)
                continue;
            if (strcmp(f, "pid") == 0 || strcmp(f, "workers") == 0 || strcmp(f, "running") == 0 ||
                strcmp(f, "started_ms") == 0 || strcmp(f, "updated_ms") == 0) {
                cJSON_AddNumberToObject(o, f, atof(v));
            } else if (strcmp(f, "handlers") == 0) {
                cJSON *list = cJSON_AddArrayToObject(o, "handlers");
                char *copy = xstrdup(v), *save = NULL;
                for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
                    cJSON_AddItemToArray(list, cJSON_CreateString(tok));
                free(copy);
            } else {
                cJSON_AddStringToObject(o, f, v);
            }
        }
        cJSON_AddNumberToObject(o, "expires_ms", atof(r->element[2 * i + 1]->str));
        cJSON_AddItemToArray(arr, o);
    }
    batch_free(&b);
    freeReplyObject(r);
    if (rc == 0)
        rc = store__hosts_paused(st, arr);
    if (rc < 0) {
        cJSON_Delete(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

/* One handler's figures in one shard, to be summed over the shards. */
typedef struct hrow {
    const char *name;
    long long queued, due, kept;
    double oldest; /* the score of its oldest due task, -1 = none */
} hrow;

static int cmp_hrow(const void *a, const void *b)
{
    return strcmp(((const hrow *)a)->name, ((const hrow *)b)->name);
}

int store_stats(store *st, cJSON **out)
{
    *out = NULL;
    int meta = store__meta(st);
    if (meta < 0)
        return meta;
    long long now;
    batch shb = {0};
    int rc = redis_now(st, &now);
    if (rc == 0)
        rc = shard_handlers(st, NULL, &shb);
    if (rc < 0) {
        batch_free(&shb);
        return rc;
    }
    /* Per shard and handler of that shard: queued, due, the oldest due, finished kept; per
     * shard its hosts; the live hosts. A key of the wrong type counts nothing. */
    batch b = {0};
    size_t nrows = 0;
    for (int s = 0; s < st->shards; s++) {
        const char *tag = st->tags[s];
        for (size_t i = 0; i < nhandlers(&shb, s, NULL); i++) {
            const char *h = handler_at(&shb, s, i, NULL);
            batch_add(&b, tag, "ZCARD %s:q:%s", tag, h);
            batch_add(&b, tag, "ZCOUNT %s:q:%s -inf %lld", tag, h, now);
            batch_add(&b, tag, "ZRANGE %s:q:%s 0 0 WITHSCORES", tag, h);
            batch_add(&b, tag, "LLEN %s:done:%s", tag, h);
            nrows++;
        }
        batch_add(&b, tag, "ZRANGE %s:hosts 0 -1", tag);
    }
    char hosts[300];
    snprintf(hosts, sizeof hosts, "%s:hosts", st->gtag);
    batch_add(&b, st->gtag, "ZCOUNT %s %lld +inf", hosts, now);
    rc = batch_run(st, &b);
    hrow *rows = xcalloc(nrows + 1, sizeof *rows);
    batch held = {0};
    size_t at = 0, r = 0;
    for (int s = 0; s < st->shards && rc == 0; s++) {
        for (size_t i = 0; i < nhandlers(&shb, s, NULL); i++, at += 4) {
            hrow *w = &rows[r++];
            w->name = handler_at(&shb, s, i, NULL);
            w->queued = batch_int(&b, at);
            w->due = batch_int(&b, at + 1);
            const redisReply *first = batch_array(&b, at + 2);
            double score = first && first->elements == 2 ? atof(first->element[1]->str) : -1;
            w->oldest = score >= 0 && score <= (double)now ? score : -1;
            w->kept = batch_int(&b, at + 3);
        }
        const redisReply *hr = batch_array(&b, at++);
        for (size_t k = 0; hr && k < hr->elements; k++)
            batch_add(&held, st->tags[s], "HLEN %s:held:%s", st->tags[s], hr->element[k]->str);
    }
    if (rc == 0)
        rc = batch_run(st, &held);
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "handlers");
    qsort(rows, r, sizeof *rows, cmp_hrow);
    long long finished = 0;
    for (size_t i = 0; rc == 0 && i < r;) {
        hrow sum = rows[i];
        for (i++; i < r && strcmp(rows[i].name, sum.name) == 0; i++) {
            sum.queued += rows[i].queued;
            sum.due += rows[i].due;
            sum.kept += rows[i].kept;
            if (rows[i].oldest >= 0 && (sum.oldest < 0 || rows[i].oldest < sum.oldest))
                sum.oldest = rows[i].oldest;
        }
        finished += sum.kept;
        cJSON *h = cJSON_CreateObject();
        cJSON_AddStringToObject(h, "handler", sum.name);
        cJSON_AddNumberToObject(h, "queued", (double)sum.queued);
        cJSON_AddNumberToObject(h, "due", (double)sum.due);
        cJSON_AddNumberToObject(h, "oldest_due_age_ms",
                                sum.oldest < 0 ? 0 : (double)now - sum.oldest);
        cJSON_AddNumberToObject(h, "finished", (double)sum.kept);
        cJSON_AddItemToArray(arr, h);
    }
    long long running = 0;
    for (size_t i = 0; i < held.n; i++)
        running += batch_int(&held, i);
    if (rc == 0)
        rc = store__stats_paused(st, arr);
    if (rc == 0) {
        cJSON_AddNumberToObject(o, "running", (double)running);
        cJSON_AddNumberToObject(o, "finished", (double)finished);
        cJSON_AddNumberToObject(o, "hosts", (double)batch_int(&b, b.n - 1));
        *out = o;
    } else {
        cJSON_Delete(o);
    }
    free(rows);
    batch_free(&held);
    batch_free(&b);
    batch_free(&shb);
    return rc;
}

int store_count_open(store *st, long long *n)
{
    *n = 0;
    int meta = store__meta(st);
    if (meta < 0)
        return meta;
    batch shb;
    int rc = shard_handlers(st, NULL, &shb);
    batch b = {0}, held = {0};
    for (int s = 0; rc == 0 && s < st->shards; s++) {
        for (size_t i = 0; i < nhandlers(&shb, s, NULL); i++)
            batch_add(&b, st->tags[s], "ZCARD %s:q:%s", st->tags[s], handler_at(&shb, s, i, NULL));
        batch_add(&b, st->tags[s], "ZRANGE %s:hosts 0 -1", st->tags[s]);
    }
    if (rc == 0)
        rc = batch_run(st, &b);
    for (int s = 0, at = 0; rc == 0 && s < st->shards; s++) {
        for (size_t i = 0; i < nhandlers(&shb, s, NULL); i++)
            *n += batch_int(&b, (size_t)at++);
        const redisReply *r = batch_array(&b, (size_t)at++);
        for (size_t k = 0; r && k < r->elements; k++)
            batch_add(&held, st->tags[s], "HLEN %s:held:%s", st->tags[s], r->element[k]->str);
    }
    if (rc == 0)
        rc = batch_run(st, &held);
    for (size_t i = 0; rc == 0 && i < held.n; i++)
        *n += batch_int(&held, i);
    batch_free(&held);
    batch_free(&b);
    batch_free(&shb);
    return rc;
}

int store_count_finished(store *st, const char *handler, long long *n)
{
    *n = 0;
    int meta = store__meta(st);
    if (meta < 0)
        return meta;
    batch b = {0};
    for (int s = 0; s < st->shards; s++)
        batch_add(&b, st->tags[s], "LLEN %s:done:%s", st->tags[s], handler);
    int rc = batch_run(st, &b);
    for (size_t i = 0; rc == 0 && i < b.n; i++)
        *n += batch_int(&b, i);
    batch_free(&b);
    return rc;
}

int store_time_ms(store *st, int64_t *now)
{
    long long t = 0;
    int rc = redis_now(st, &t);
    *now = t;
    return rc;
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
    int meta = store__meta(st);
    if (meta < 0)
        return meta;
    char tid[BGT_ID_LEN + 1];
    store__norm_id(id, tid);
    const char *tag = st->tags[store_shard_of(st, tid)];
    redisReply *r;
    int rc = store__cmd(st, tag, &r, "HGETALL %s:sub:%s", tag, tid);
    if (rc < 0)
        return rc;
    sub_rec *subs = xcalloc((size_t)n + 1, sizeof *subs);
    for (int i = 0; i < n; i++)
        strcpy(subs[i].state, "PENDING");
    for (size_t k = 0; r->type == REDIS_REPLY_ARRAY && k + 1 < r->elements; k += 2) {
        const char *f = r->element[k]->str, *v = r->element[k + 1]->str;
        char *colon;
        long i = strtol(f, &colon, 10);
        if (*colon != ':' || i < 0 || i >= n)
            continue; /* not a subtask field, or past the count: ignore */
        const char *name = colon + 1;
        if (strcmp(name, "a") == 0) {
            free(subs[i].args);
            subs[i].args = xstrdup(v);
        } else if (strcmp(name, "s") == 0) {
            strlcpy_(subs[i].state, v, sizeof subs[i].state);
        } else if (strcmp(name, "n") == 0) {
            subs[i].attempt = (uint32_t)atol(v);
        } else if (strcmp(name, "m") == 0) {
            free(subs[i].message);
            subs[i].message = xstrdup(v);
        } else if (strcmp(name, "y") == 0) {
            free(subs[i].result);
            subs[i].result = xstrdup(v);
        }
    }
    freeReplyObject(r);
    *out = subs;
    return 0;
}

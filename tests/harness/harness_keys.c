/*
 * harness_keys.c - the one place in the tests that knows the Redis key
 * layout (protocol version 2, the README's "Redis protocol" and
 * host/store_lua.h): reading and planting task records, queues, events, host
 * entries, subtasks and the protocol mark. A new key layout changes this file
 * and the store, and no test.
 *
 * It reads the layout with plain commands, as a third-party client would
 * from the README, not through the store: the tests then check what the
 * store wrote, not what it reads back. Records are given to tests with the
 * field names of DESIGN §5 (state, attempt, owner...), made from the short
 * fields and the holding host's lease token as the README says.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness_int.h"
#include "util.h"

/* A command whose reply must not be an error; the harness gives up otherwise. */
static redisReply *must(redisContext *c, redisReply *rep, const char *what)
{
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "harness: %s: %s\n", what, rep ? rep->str : c->errstr);
        abort();
    }
    return rep;
}

/* The score of member in zset key, or -1 when it is not there. */
static double zscore(redisContext *c, const char *key, const char *member)
{
    redisReply *rep = must(c, redisCommand(c, "ZSCORE %s %s", key, member), key);
    double v = rep->type == REDIS_REPLY_STRING ? atof(rep->str) : -1;
    freeReplyObject(rep);
    return v;
}

/* An integer reply of a command on one key (EXISTS, XLEN, ZCARD...). */
static long long count(redisContext *c, const char *cmd, const char *key)
{
    redisReply *rep = must(c, redisCommand(c, "%s %s", cmd, key), key);
    long long n = rep->type == REDIS_REPLY_INTEGER ? rep->integer : 0;
    freeReplyObject(rep);
    return n;
}

/* ---- shards ---- */

/* The shards the data under prefix is spread over ({P}:meta), 16 when not marked yet. */
static int shards(redisContext *c, const char *prefix)
{
    redisReply *rep = redisCommand(c, "HGET {%s}:meta shards", prefix);
    int n = rep && rep->type == REDIS_REPLY_STRING ? atoi(rep->str) : 0;
    if (rep)
        freeReplyObject(rep);
    return n > 0 ? n : 16;
}

/* The shard of a task: FNV-1a-32 of its lowercase id, mod the shards. */
static int shard_of(redisContext *c, const char *prefix, const char *id)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ (unsigned char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p)) * 16777619u;
    return (int)(h % (uint32_t)shards(c, prefix));
}

/* A key of the shard of task id: "{P:s}:" + what (malloc'd). */
static char *task_key(redisContext *c, const char *prefix, const char *id, const char *what)
{
    return xasprintf("{%s:%d}:%s%s", prefix, shard_of(c, prefix, id), what, id);
}

/* ---- task records ---- */

/* A record as its fields and values (an HGETALL reply), and the lease of its attempt. */
typedef struct record {
    redisReply *r;   /* NULL: no record */
    char owner[256]; /* the host holding its attempt, "" for none */
    char token[64];  /* that host's lease token, "" for none */
    bool cancel;     /* the token carries a cancel request */
} record;

static const char *rfield(const record *rec, const char *name)
{
    for (size_t i = 0; rec->r && i + 1 < rec->r->elements; i += 2)
        if (strcmp(rec->r->element[i]->str, name) == 0)
            return rec->r->element[i + 1]->str;
    return NULL;
}

static bool read_record(redisContext *c, const char *prefix, const char *id, record *rec)
{
    memset(rec, 0, sizeof *rec);
    char *key = task_key(c, prefix, id, "t:");
    redisReply *r = redisCommand(c, "HGETALL %s", key);
    free(key);
    if (!r) {
        fprintf(stderr, "harness: HGETALL: %s\n", c->errstr);
        return false;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        freeReplyObject(r);
        return false; /* none, or not a hash */
    }
    rec->r = r;
    if (rfield(rec, "o"))
        return true;
    /* Running? Its host's held hash has its lease token. */
    int s = shard_of(c, prefix, id);
    redisReply *hosts = redisCommand(c, "ZRANGE {%s:%d}:hosts 0 -1", prefix, s);
    for (size_t i = 0; hosts && hosts->type == REDIS_REPLY_ARRAY && i < hosts->elements; i++) {
        redisReply *v =
            redisCommand(c, "HGET {%s:%d}:held:%s %s", prefix, s, hosts->element[i]->str, id);
        if (v && v->type == REDIS_REPLY_STRING) {
            snprintf(rec->owner, sizeof rec->owner, "%s", hosts->element[i]->str);
            snprintf(rec->token, sizeof rec->token, "%s", v->str);
            char *mark = strstr(rec->token, " c");
            if (mark) {
                *mark = '\0';
                rec->cancel = true;
            }
        }
        if (v)
            freeReplyObject(v);
    }
    if (hosts)
        freeReplyObject(hosts);
    return true;
}

static const char *state_of(const char *o)
{
    if (!o)
        return "ONGOING";
    if (strcmp(o, "success") == 0 || strcmp(o, "partial_success") == 0)
        return "SUCCESS";
    if (strcmp(o, "failure") == 0)
        return "FAILURE";
    if (strcmp(o, "cancelled") == 0)
        return "CANCELLED";
    return o;
}

/* Field name (DESIGN §5) of a record, as text (malloc'd), or NULL. */
static char *record_field(const record *rec, const char *name)
{
    const char *o = rfield(rec, "o");
    const char *tok = rec->token[0] ? rec->token : rfield(rec, "n");
    static const char *const plain[][3] = {
        {"handler", "h", ""},
        {"created_ms", "c", "0"},
        {"args", "a", "{}"},
        {"released", "r", "0"},
        {"retries", "rt", "0"},
        {"max_attempts", "x", ""},
        {"finished_ms", "f", "0"},
        {"progress_current", "pc", "0"},
        {"progress_total", "pt", "0"},
        {"result", "y", ""},
        {"subtasks", "ns", "0"},
        {"sub_success", "ss", "0"},
        {"sub_failure", "sf", "0"},
        {"parallelism", "pl", "0"},
        {"on_failure", "of", ""},
        {"outcome", "o", ""},
    };
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
        if (strcmp(name, plain[i][0]) == 0) {
            const char *v = rfield(rec, plain[i][1]);
            return xstrdup(v ? v : plain[i][2]);
        }
    if (strcmp(name, "state") == 0)
        return xstrdup(state_of(o));
    if (strcmp(name, "kind") == 0)
        return xstrdup(rfield(rec, "ns") ? "parallel" : "single");
    if (strcmp(name, "owner") == 0)
        return xstrdup(rec->owner);
    if (strcmp(name, "attempt") == 0 || strcmp(name, "started_ms") == 0) {
        if (!tok)
            return xstrdup("0");
        const char *sp = strchr(tok, ' ');
        if (strcmp(name, "attempt") == 0)
            return sp ? xasprintf("%.*s", (int)(sp - tok), tok) : xstrdup(tok);
        return xstrdup(sp ? sp + 1 : "0");
    }
    if (strcmp(name, "cancel_requested") == 0) {
        const char *k = rfield(rec, "k");
        return xstrdup(rec->cancel || (k && strcmp(k, "1") == 0) ? "1" : "0");
    }
    if (strcmp(name, "error") == 0) {
        const char *e = rfield(rec, "e");
        return xstrdup(o && strcmp(o, "failure") == 0 && e ? e : "");
    }
    if (strcmp(name, "message") == 0) {
        const char *pm = rfield(rec, "pm"), *m = rfield(rec, "m"), *e = rfield(rec, "e");
        if (!o)
            return xstrdup(pm ? pm : m ? m : "Task started");
        if (strcmp(o, "failure") == 0)
            return xstrdup(e ? e : m ? m : "");
        return xstrdup(m ? m : strcmp(o, "cancelled") == 0 ? "Cancelled" : "Task finished");
    }
    if (strcmp(name, "updated_ms") == 0) {
        double v = 0;
        const char *sp = tok ? strchr(tok, ' ') : NULL;
        const char *cand[] = {rfield(rec, "c"), rfield(rec, "f"), rfield(rec, "pu"),
                              sp ? sp + 1 : NULL};
        for (size_t i = 0; i < 4; i++)
            if (cand[i] && atof(cand[i]) > v)
                v = atof(cand[i]);
        return xasprintf("%.0f", v);
    }
    const char *v = rfield(rec, name); /* a name of no field: what is there, if anything */
    return v ? xstrdup(v) : NULL;
}

char *th_task_field(redisContext *c, const char *prefix, const char *id, const char *field)
{
    record rec;
    if (!read_record(c, prefix, id, &rec))
        return NULL;
    char *v = record_field(&rec, field);
    freeReplyObject(rec.r);
    return v;
}

void th_task_fields(redisContext *c, const char *prefix, char (*ids)[37], size_t n,
                    const char *const *fields, size_t nfields, char **out)
{
    for (size_t i = 0; i < n; i++) {
        record rec;
        bool have = read_record(c, prefix, ids[i], &rec);
        for (size_t k = 0; k < nfields; k++)
            out[i * nfields + k] = have ? record_field(&rec, fields[k]) : NULL;
        if (have)
            freeReplyObject(rec.r);
    }
}

bool th_task_terminal(redisContext *c, const char *prefix, const char *id)
{
    char *state = th_task_field(c, prefix, id, "state");
    bool t = state && (strcmp(state, "SUCCESS") == 0 || strcmp(state, "FAILURE") == 0 ||
                       strcmp(state, "CANCELLED") == 0);
    free(state);
    return t;
}

bool th_task_exists(redisContext *c, const char *prefix, const char *id)
{
    char *key = task_key(c, prefix, id, "t:");
    bool e = count(c, "EXISTS", key) == 1;
    free(key);
    return e;
}

void th_task_delete(redisContext *c, const char *prefix, const char *id)
{
    char *key = task_key(c, prefix, id, "t:");
    freeReplyObject(must(c, redisCommand(c, "DEL %s", key), key));
    free(key);
}

void th_corrupt_record(redisContext *c, const char *prefix, const char *id, const char *text)
{
    char *key = task_key(c, prefix, id, "t:");
    freeReplyObject(must(c, redisCommand(c, "SET %s %s", key, text), key));
    free(key);
}

/*
 * Set one field of a record, named as DESIGN §5 names it, in the short fields
 * of protocol 2: an empty or zero value of a field whose absence means that is
 * left out; state is the outcome (ONGOING: none; another word is kept as the
 * outcome, as a corruption); attempt is the lease token "<attempt> 0" (a value
 * that is no whole number is written as it is: a corruption).
 */
void th_task_set(redisContext *c, const char *prefix, const char *id, const char *field,
                 const char *value)
{
    static const char *const names[][2] = {
        {"handler", "h"},
        {"created_ms", "c"},
        {"args", "a"},
        {"released", "r"},
        {"max_attempts", "x"},
        {"finished_ms", "f"},
        {"progress_current", "pc"},
        {"progress_total", "pt"},
        {"result", "y"},
        {"subtasks", "ns"},
        {"sub_success", "ss"},
        {"sub_failure", "sf"},
        {"parallelism", "pl"},
        {"on_failure", "of"},
        {"message", "m"},
        {"error", "e"},
        {"cancel_requested", "k"},
    };
    const char *f = NULL;
    char *v = xstrdup(value);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(field, names[i][0]) == 0)
            f = names[i][1];
    if (strcmp(field, "state") == 0) {
        f = "o";
        free(v);
        v = xstrdup(strcmp(value, "SUCCESS") == 0     ? "success"
                    : strcmp(value, "FAILURE") == 0   ? "failure"
                    : strcmp(value, "CANCELLED") == 0 ? "cancelled"
                    : strcmp(value, "ONGOING") == 0   ? ""
                                                      : value);
    } else if (strcmp(field, "attempt") == 0) {
        f = "n";
        char *end;
        long a = strtol(value, &end, 10);
        free(v);
        v = *value && !*end && a >= 0 ? (a ? xasprintf("%ld 0", a) : xstrdup("")) : xstrdup(value);
    } else if (!f) {
        free(v);
        return; /* id, kind, owner, started_ms, updated_ms: not kept in the record */
    }
    /* Defaults are implied by absence. */
    bool dflt = !*v || (strcmp(f, "k") == 0 && strcmp(v, "0") == 0) ||
                ((strcmp(f, "ns") == 0 || strcmp(f, "ss") == 0 || strcmp(f, "sf") == 0 ||
                  strcmp(f, "f") == 0 || strcmp(f, "pc") == 0 || strcmp(f, "pt") == 0 ||
                  strcmp(f, "r") == 0) &&
                 strcmp(v, "0") == 0);
    char *key = task_key(c, prefix, id, "t:");
    redisReply *rep =
        dflt ? redisCommand(c, "HDEL %s %s", key, f) : redisCommand(c, "HSET %s %s %s", key, f, v);
    freeReplyObject(must(c, rep, key));
    free(key);
    free(v);
}

/* The stored name of a subtask's field ("state" -> "s", ...). */
static const char *sub_field(const char *field)
{
    static const char *const names[][2] = {
        {"args", "a"}, {"state", "s"}, {"attempt", "n"}, {"message", "m"}, {"result", "y"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(field, names[i][0]) == 0)
            return names[i][1];
    return field;
}

char *th_subtask_field(redisContext *c, const char *prefix, const char *id, int index,
                       const char *field)
{
    char *key = task_key(c, prefix, id, "sub:");
    redisReply *rep = must(c, redisCommand(c, "HGET %s %d:%s", key, index, sub_field(field)), key);
    free(key);
    char *v = rep->type == REDIS_REPLY_STRING ? xstrdup(rep->str) : NULL;
    if (!v && strcmp(field, "state") == 0)
        v = xstrdup("PENDING"); /* absent: not run yet */
    freeReplyObject(rep);
    return v;
}

void th_subtask_set(redisContext *c, const char *prefix, const char *id, int index,
                    const char *field, const char *value)
{
    const char *f = sub_field(field);
    char *key = task_key(c, prefix, id, "sub:");
    freeReplyObject(must(c, redisCommand(c, "HSET %s %d:%s %s", key, index, f, value), key));
    free(key);
}

void th_queue_plant(redisContext *c, const char *prefix, const char *handler, const char *id,
                    double score)
{
    int s = shard_of(c, prefix, id);
    char *key = xasprintf("{%s:%d}:q:%s", prefix, s, handler);
    freeReplyObject(must(c, redisCommand(c, "ZADD %s %f %s", key, score, id), key));
    freeReplyObject(must(c, redisCommand(c, "SADD {%s:%d}:handlers %s", prefix, s, handler), key));
    free(key);
}

void th_task_due(redisContext *c, const char *prefix, const char *handler, const char *id)
{
    th_queue_plant(c, prefix, handler, id, 0);
    freeReplyObject(
        must(c, redisCommand(c, "PUBLISH %s:wake:%s %d", prefix, handler, shard_of(c, prefix, id)),
             "PUBLISH"));
}

double th_queue_score(redisContext *c, const char *prefix, const char *handler, const char *id)
{
    char *key = xasprintf("{%s:%d}:q:%s", prefix, shard_of(c, prefix, id), handler);
    double v = zscore(c, key, id);
    free(key);
    return v;
}

/* Every key under prefix's shards matching "{P:*}:<pattern>" (a KEYS reply). */
static redisReply *shard_keys(redisContext *c, const char *prefix, const char *pattern)
{
    return must(c, redisCommand(c, "KEYS {%s:*}:%s", prefix, pattern), "KEYS");
}

bool th_queues_empty(redisContext *c, const char *prefix)
{
    redisReply *q = shard_keys(c, prefix, "q:*");
    redisReply *h = shard_keys(c, prefix, "held:*");
    bool empty = q->elements == 0;
    for (size_t i = 0; empty && i < h->elements; i++)
        empty = count(c, "HLEN", h->element[i]->str) == 0;
    freeReplyObject(q);
    freeReplyObject(h);
    return empty;
}

long long th_log_len(redisContext *c, const char *prefix, const char *id)
{
    char *key = task_key(c, prefix, id, "log:");
    long long n = count(c, "LLEN", key);
    free(key);
    return n;
}

long long th_hist_count(redisContext *c, const char *prefix, const char *handler,
                        const char *outcome, th_hist_keys *keys)
{
    redisReply *k = shard_keys(c, prefix, "hist:*");
    long long n = 0;
    if (keys)
        *keys = (th_hist_keys){.n = (long long)k->elements, .min_pttl = -1, .max_pttl = -1};
    for (size_t i = 0; i < k->elements; i++) {
        const char *key = k->element[i]->str;
        redisReply *v = must(c, redisCommand(c, "HGET %s %s|%s", key, handler, outcome), key);
        n += v->type == REDIS_REPLY_STRING ? atoll(v->str) : 0;
        freeReplyObject(v);
        long long ttl = count(c, "PTTL", key);
        if (keys && (keys->min_pttl < 0 || ttl < keys->min_pttl))
            keys->min_pttl = ttl;
        if (keys && ttl > keys->max_pttl)
            keys->max_pttl = ttl;
    }
    freeReplyObject(k);
    return n;
}

double th_finished_at(redisContext *c, const char *prefix, const char *id)
{
    char *f = th_task_field(c, prefix, id, "finished_ms");
    double v = f && atof(f) > 0 ? atof(f) : -1;
    free(f);
    return v;
}

/* ---- events ---- */

/* The event name of a packed event's code, or NULL. */
static const char *event_name(char code)
{
    switch (code) {
    case 'u': return "bgtask_updated";
    case 'd': return "bgtask_done";
    case 'f': return "bgtask_failed";
    case 'c': return "bgtask_cancelled";
    case 'p': return "bgtask_partial_success";
    default: return NULL;
    }
}

/* Call fn for each event of one stream entry (its fields: 'h' then task ids, see README). */
static long entry_events(const char *sid, const redisReply *kv, th_event_fn fn, void *arg)
{
    const char *handler = "";
    long n = 0;
    for (size_t i = 0; i + 1 < kv->elements; i += 2) {
        const char *f = kv->element[i]->str, *v = kv->element[i + 1]->str;
        if (strcmp(f, "h") == 0) {
            handler = v;
            continue;
        }
        const char *name = event_name(v[0]);
        char *end;
        unsigned long attempt = strtoul(v + 1, &end, 10);
        const char *body = *end == ' '   ? end + 1
                           : v[0] == 'd' ? "\"message\":\"Task finished\""
                           : v[0] == 'c' ? "\"message\":\"Cancelled\""
                                         : "";
        char *data = xasprintf("{\"task_id\":\"%s\",\"handler\":\"%s\",\"attempt\":%lu,"
                               "\"ts_ms\":%lld,%s}",
                               f, handler, attempt, atoll(sid), body);
        fn(arg, sid, f, name, data);
        free(data);
        n++;
    }
    return n;
}

long th_each_event(redisContext *c, const char *prefix, th_event_fn fn, void *arg)
{
    long seen = 0;
    int n = shards(c, prefix);
    for (int s = 0; s < n; s++) {
        char *key = xasprintf("{%s:%d}:ev", prefix, s);
        char start[80] = "-";
        for (;;) {
            redisReply *rep = redisCommand(c, "XRANGE %s %s + COUNT 5000", key, start);
            if (!rep || rep->type != REDIS_REPLY_ARRAY) {
                fprintf(stderr, "harness: XRANGE %s: %s\n", key,
                        !rep                             ? c->errstr
                        : rep->type == REDIS_REPLY_ERROR ? rep->str
                                                         : "bad reply");
                if (rep)
                    freeReplyObject(rep);
                free(key);
                return -1;
            }
            size_t k = rep->elements;
            for (size_t i = 0; i < k; i++) {
                const redisReply *e = rep->element[i];
                if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
                    e->element[0]->type != REDIS_REPLY_STRING)
                    continue;
                seen += entry_events(e->element[0]->str, e->element[1], fn, arg);
                if (i == k - 1)
                    snprintf(start, sizeof start, "(%s", e->element[0]->str);
            }
            freeReplyObject(rep);
            if (k < 5000)
                break;
        }
        free(key);
    }
    return seen;
}

struct counting {
    const char *id, *event;
    int n;
};

static void count_one(void *arg, const char *sid, const char *task_id, const char *name,
                      const char *data)
{
    struct counting *k = arg;
    if (task_id && strcmp(task_id, k->id) == 0 &&
        (!k->event || (name && strcmp(name, k->event) == 0)))
        k->n++;
}

int th_count_events(redisContext *c, const char *prefix, const char *id, const char *event)
{
    struct counting k = {id, event, 0};
    return th_each_event(c, prefix, count_one, &k) < 0 ? -1 : k.n;
}

static void count_any(void *arg, const char *sid, const char *task_id, const char *name,
                      const char *data)
{
}

long long th_event_total(redisContext *c, const char *prefix)
{
    return th_each_event(c, prefix, count_any, NULL);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char *th_task_snapshot(redisContext *c, const char *prefix)
{
    static const char *const kinds[] = {"t:*", "sub:*", "q:*", "done:*", "held:*"};
    char **v = NULL;
    size_t n = 0;
    redisReply *k[5];
    for (size_t i = 0; i < 5; i++) {
        k[i] = shard_keys(c, prefix, kinds[i]);
        v = xrealloc(v, (n + k[i]->elements + 1) * sizeof *v);
        for (size_t j = 0; j < k[i]->elements; j++)
            v[n++] = k[i]->element[j]->str;
    }
    qsort(v, n, sizeof *v, cmp_str);
    long long finished = 0;
    redisReply *d = shard_keys(c, prefix, "done:*");
    for (size_t i = 0; i < d->elements; i++)
        finished += count(c, "LLEN", d->element[i]->str);
    freeReplyObject(d);
    char *s = xasprintf("events=%lld done=%lld\n", th_event_total(c, prefix), finished);
    for (size_t i = 0; i < n; i++) {
        char *next = xasprintf("%s%s\n", s, v[i]);
        free(s);
        s = next;
    }
    free(v);
    for (size_t i = 0; i < 5; i++)
        freeReplyObject(k[i]);
    return s;
}

/* ---- hosts ---- */

double th_host_expiry(redisContext *c, const char *prefix, const char *host_id)
{
    char *key = xasprintf("{%s}:hosts", prefix);
    double v = zscore(c, key, host_id);
    free(key);
    return v;
}

long long th_host_count(redisContext *c, const char *prefix)
{
    char *key = xasprintf("{%s}:hosts", prefix);
    long long n = count(c, "ZCARD", key);
    free(key);
    return n;
}

char *th_host_field(redisContext *c, const char *prefix, const char *host_id, const char *field)
{
    redisReply *rep = redisCommand(c, "HGET {%s}:host:%s %s", prefix, host_id, field);
    char *v = rep && rep->type == REDIS_REPLY_STRING ? xstrdup(rep->str) : NULL;
    if (rep)
        freeReplyObject(rep);
    return v;
}

char *th_host_held(redisContext *c, const char *prefix, const char *host_id)
{
    char *s = xstrdup("");
    int n = shards(c, prefix);
    for (int k = 0; k < n; k++) {
        redisReply *rep = redisCommand(c, "HGETALL {%s:%d}:held:%s", prefix, k, host_id);
        if (!rep || rep->type != REDIS_REPLY_ARRAY) {
            if (rep)
                freeReplyObject(rep);
            free(s);
            return NULL;
        }
        for (size_t i = 0; i < rep->elements; i++) {
            char *next = xasprintf("%s%s,", s, rep->element[i]->str);
            free(s);
            s = next;
        }
        freeReplyObject(rep);
    }
    return s;
}

bool th_host_entry_exists(redisContext *c, const char *prefix, const char *host_id)
{
    char *key = xasprintf("{%s}:host:%s", prefix, host_id);
    bool e = count(c, "EXISTS", key) == 1;
    free(key);
    return e;
}

bool th__host_registered(redisContext *c, const char *prefix, const char *host_id, pid_t pid,
                         bool *ready)
{
    *ready = false;
    redisReply *rep = redisCommand(c, "ZSCORE {%s}:hosts %s", prefix, host_id);
    if (!rep)
        return false;
    bool listed = rep->type == REDIS_REPLY_STRING;
    freeReplyObject(rep);
    if (!listed)
        return true;
    rep = redisCommand(c, "HGET {%s}:host:%s pid", prefix, host_id);
    if (!rep)
        return false;
    *ready = rep->type != REDIS_REPLY_STRING || atoi(rep->str) == (int)pid;
    freeReplyObject(rep);
    return true;
}

/* ---- the protocol mark ---- */

void th_pause_plant(redisContext *c, const char *prefix, const char *handler)
{
    redisReply *r = redisCommand(c, "HSET {%s}:paused %s %s", prefix, handler, "1 planted");
    if (!r || r->type == REDIS_REPLY_ERROR)
        abort();
    freeReplyObject(r);
}

char *th_protocol_get(redisContext *c, const char *prefix)
{
    redisReply *rep = redisCommand(c, "HGET {%s}:meta protocol", prefix);
    char *v = rep && rep->type == REDIS_REPLY_STRING ? xstrdup(rep->str) : NULL;
    if (rep)
        freeReplyObject(rep);
    return v;
}

void th_protocol_set(redisContext *c, const char *prefix, const char *version)
{
    redisReply *rep = redisCommand(c, "HSET {%s}:meta protocol %s shards 16", prefix, version);
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "harness: HSET {%s}:meta: %s\n", prefix, rep ? rep->str : c->errstr);
        abort();
    }
    freeReplyObject(rep);
}

void th_protocol1_data(redisContext *c, const char *prefix)
{
    redisReply *rep =
        redisCommand(c, "XADD %s:events * event bgtask_updated task_id x data {}", prefix);
    freeReplyObject(must(c, rep, "XADD"));
}

void th_plant_wrong_types(redisContext *c, const char *prefix, const char *host)
{
    int n = shards(c, prefix);
    for (int s = 0; s < n; s++) {
        freeReplyObject(must(c, redisCommand(c, "SET {%s:%d}:held:%s x", prefix, s, host), "SET"));
        freeReplyObject(
            must(c, redisCommand(c, "ZADD {%s:%d}:hosts 1 %s", prefix, s, host), "ZADD"));
    }
}

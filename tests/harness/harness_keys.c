/*
 * harness_keys.c - the one place in the tests that knows the Redis key
 * layout (protocol version 1, host/store_lua.h): reading and planting task
 * records, queues, events, host entries, subtasks and the protocol mark. A
 * new key layout changes this file and the store, and no test.
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

/* ---- task records ---- */

char *th_task_field(redisContext *c, const char *prefix, const char *id, const char *field)
{
    char *key = xasprintf("%s:task:%s", prefix, id);
    redisReply *rep = redisCommand(c, "HGET %s %s", key, field);
    free(key);
    char *v = NULL;
    if (!rep)
        fprintf(stderr, "harness: HGET: %s\n", c->errstr);
    else if (rep->type == REDIS_REPLY_STRING)
        v = xstrdup(rep->str);
    else if (rep->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "harness: HGET: %s\n", rep->str);
    if (rep)
        freeReplyObject(rep);
    return v;
}

/* The value of field in a stream entry's flat [field, value, ...] array, or NULL. */
static const char *entry_field(const redisReply *fields, const char *name)
{
    if (!fields || fields->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *f = fields->element[i], *v = fields->element[i + 1];
        if (f->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
            strcmp(f->str, name) == 0)
            return v->str;
    }
    return NULL;
}

long th_each_event(redisContext *c, const char *prefix, th_event_fn fn, void *arg)
{
    char *key = xasprintf("%s:events", prefix);
    char start[80] = "-";
    long seen = 0;
    /* Page through the stream, each page starting after the last id seen. */
    for (;;) {
        redisReply *rep = redisCommand(c, "XRANGE %s %s + COUNT 5000", key, start);
        if (!rep || rep->type != REDIS_REPLY_ARRAY) {
            fprintf(stderr, "harness: XRANGE %s: %s\n", key,
                    !rep                             ? c->errstr
                    : rep->type == REDIS_REPLY_ERROR ? rep->str
                                                     : "bad reply");
            if (rep)
                freeReplyObject(rep);
            seen = -1;
            break;
        }
        size_t n = rep->elements;
        for (size_t i = 0; i < n; i++) {
            const redisReply *e = rep->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
                e->element[0]->type != REDIS_REPLY_STRING)
                continue;
            const char *sid = e->element[0]->str;
            fn(arg, sid, entry_field(e->element[1], "task_id"), entry_field(e->element[1], "event"),
               entry_field(e->element[1], "data"));
            seen++;
            if (i == n - 1)
                snprintf(start, sizeof start, "(%s", sid);
        }
        freeReplyObject(rep);
        if (n < 5000)
            break;
    }
    free(key);
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

void th_task_fields(redisContext *c, const char *prefix, char (*ids)[37], size_t n,
                    const char *const *fields, size_t nfields, char **out)
{
    const char **argv = xcalloc(nfields + 2, sizeof *argv);
    argv[0] = "HMGET";
    for (size_t k = 0; k < nfields; k++)
        argv[k + 2] = fields[k];
    char **keys = xcalloc(n + 1, sizeof *keys);
    for (size_t i = 0; i < n; i++) {
        keys[i] = xasprintf("%s:task:%s", prefix, ids[i]);
        argv[1] = keys[i];
        redisAppendCommandArgv(c, (int)nfields + 2, argv, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        void *r = NULL;
        if (redisGetReply(c, &r) != REDIS_OK || !r) {
            fprintf(stderr, "harness: HMGET: %s\n", c->errstr);
            abort();
        }
        redisReply *rep = must(c, r, keys[i]);
        for (size_t k = 0; k < nfields; k++) {
            const redisReply *v = k < rep->elements ? rep->element[k] : NULL;
            out[i * nfields + k] = v && v->type == REDIS_REPLY_STRING ? xstrdup(v->str) : NULL;
        }
        freeReplyObject(rep);
        free(keys[i]);
    }
    free(keys);
    free(argv);
}

bool th_task_terminal(redisContext *c, const char *prefix, const char *id)
{
    char *state = th_task_field(c, prefix, id, "state");
    bool t = state && (strcmp(state, "SUCCESS") == 0 || strcmp(state, "FAILURE") == 0 ||
                       strcmp(state, "CANCELLED") == 0);
    free(state);
    return t;
}

char *th_protocol_get(redisContext *c, const char *prefix)
{
    redisReply *rep = redisCommand(c, "GET %s:protocol", prefix);
    char *v = rep && rep->type == REDIS_REPLY_STRING ? xstrdup(rep->str) : NULL;
    if (rep)
        freeReplyObject(rep);
    return v;
}

void th_protocol_set(redisContext *c, const char *prefix, const char *version)
{
    redisReply *rep = redisCommand(c, "SET %s:protocol %s", prefix, version);
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "harness: SET %s:protocol: %s\n", prefix, rep ? rep->str : c->errstr);
        abort();
    }
    freeReplyObject(rep);
}

void th_task_set(redisContext *c, const char *prefix, const char *id, const char *field,
                 const char *value)
{
    redisReply *rep = redisCommand(c, "HSET %s:task:%s %s %s", prefix, id, field, value);
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "harness: HSET %s:task:%s: %s\n", prefix, id, rep ? rep->str : c->errstr);
        abort();
    }
    freeReplyObject(rep);
}

void th_task_due(redisContext *c, const char *prefix, const char *handler, const char *id)
{
    redisReply *rep = redisCommand(c, "ZADD %s:q:%s 0 %s", prefix, handler, id);
    if (rep)
        freeReplyObject(rep);
    rep = redisCommand(c, "LPUSH %s:wake:%s 1", prefix, handler);
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "harness: LPUSH %s:wake:%s: %s\n", prefix, handler,
                rep ? rep->str : c->errstr);
        abort();
    }
    freeReplyObject(rep);
}

bool th_task_exists(redisContext *c, const char *prefix, const char *id)
{
    char *key = xasprintf("%s:task:%s", prefix, id);
    bool e = count(c, "EXISTS", key) == 1;
    free(key);
    return e;
}

void th_task_delete(redisContext *c, const char *prefix, const char *id)
{
    char *key = xasprintf("%s:task:%s", prefix, id);
    freeReplyObject(must(c, redisCommand(c, "DEL %s", key), key));
    free(key);
}

void th_corrupt_record(redisContext *c, const char *prefix, const char *id, const char *text)
{
    char *key = xasprintf("%s:task:%s", prefix, id);
    freeReplyObject(must(c, redisCommand(c, "SET %s %s", key, text), key));
    free(key);
}

void th_subtask_set(redisContext *c, const char *prefix, const char *id, int index,
                    const char *field, const char *value)
{
    char *key = xasprintf("%s:sub:%s", prefix, id);
    freeReplyObject(must(c, redisCommand(c, "HSET %s %d:%s %s", key, index, field, value), key));
    free(key);
}

void th_queue_plant(redisContext *c, const char *prefix, const char *handler, const char *id,
                    double score)
{
    char *key = xasprintf("%s:q:%s", prefix, handler);
    freeReplyObject(must(c, redisCommand(c, "ZADD %s %f %s", key, score, id), key));
    free(key);
}

double th_queue_score(redisContext *c, const char *prefix, const char *handler, const char *id)
{
    char *key = xasprintf("%s:q:%s", prefix, handler);
    double v = zscore(c, key, id);
    free(key);
    return v;
}

bool th_queues_empty(redisContext *c, const char *prefix)
{
    redisReply *rep = must(c, redisCommand(c, "KEYS %s:q:*", prefix), "KEYS");
    bool empty = rep->elements == 0;
    freeReplyObject(rep);
    return empty;
}

double th_finished_at(redisContext *c, const char *prefix, const char *id)
{
    char *key = xasprintf("%s:done", prefix);
    double v = zscore(c, key, id);
    free(key);
    return v;
}

long long th_event_total(redisContext *c, const char *prefix)
{
    char *key = xasprintf("%s:events", prefix);
    long long n = count(c, "XLEN", key);
    free(key);
    return n;
}

/* Whether a key holds a task's state (its record, subtasks, queue entry, finished entry). */
static bool task_key(const char *prefix, const char *k)
{
    static const char *const kinds[] = {":task:", ":sub:", ":q:", ":done", NULL};
    size_t n = strlen(prefix);
    if (strncmp(k, prefix, n) != 0)
        return false;
    for (int i = 0; kinds[i]; i++)
        if (strncmp(k + n, kinds[i], strlen(kinds[i])) == 0)
            return true;
    return false;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char *th_task_snapshot(redisContext *c, const char *prefix)
{
    redisReply *k = must(c, redisCommand(c, "KEYS %s:*", prefix), "KEYS");
    size_t n = 0;
    char **v = xcalloc(k->elements + 1, sizeof *v);
    for (size_t i = 0; i < k->elements; i++)
        if (task_key(prefix, k->element[i]->str))
            v[n++] = k->element[i]->str;
    qsort(v, n, sizeof *v, cmp_str);
    char *done = xasprintf("%s:done", prefix);
    char *s =
        xasprintf("events=%lld done=%lld\n", th_event_total(c, prefix), count(c, "ZCARD", done));
    free(done);
    for (size_t i = 0; i < n; i++) {
        char *next = xasprintf("%s%s\n", s, v[i]);
        free(s);
        s = next;
    }
    free(v);
    freeReplyObject(k);
    return s;
}

/* ---- hosts ---- */

double th_host_expiry(redisContext *c, const char *prefix, const char *host_id)
{
    char *key = xasprintf("%s:hosts", prefix);
    double v = zscore(c, key, host_id);
    free(key);
    return v;
}

long long th_host_count(redisContext *c, const char *prefix)
{
    char *key = xasprintf("%s:hosts", prefix);
    long long n = count(c, "ZCARD", key);
    free(key);
    return n;
}

char *th_host_field(redisContext *c, const char *prefix, const char *host_id, const char *field)
{
    redisReply *rep = redisCommand(c, "HGET %s:host:%s %s", prefix, host_id, field);
    char *v = rep && rep->type == REDIS_REPLY_STRING ? xstrdup(rep->str) : NULL;
    if (rep)
        freeReplyObject(rep);
    return v;
}

char *th_host_held(redisContext *c, const char *prefix, const char *host_id)
{
    redisReply *rep = redisCommand(c, "HGETALL %s:held:%s", prefix, host_id);
    if (!rep || rep->type != REDIS_REPLY_ARRAY) {
        if (rep)
            freeReplyObject(rep);
        return NULL;
    }
    char *s = xstrdup("");
    for (size_t i = 0; i < rep->elements; i++) {
        char *next = xasprintf("%s%s,", s, rep->element[i]->str);
        free(s);
        s = next;
    }
    freeReplyObject(rep);
    return s;
}

bool th_host_entry_exists(redisContext *c, const char *prefix, const char *host_id)
{
    char *key = xasprintf("%s:host:%s", prefix, host_id);
    bool e = count(c, "EXISTS", key) == 1;
    free(key);
    return e;
}

bool th__host_registered(redisContext *c, const char *prefix, const char *host_id, pid_t pid,
                         bool *ready)
{
    *ready = false;
    redisReply *rep = redisCommand(c, "ZSCORE %s:hosts %s", prefix, host_id);
    if (!rep)
        return false;
    bool listed = rep->type == REDIS_REPLY_STRING;
    freeReplyObject(rep);
    if (!listed)
        return true;
    rep = redisCommand(c, "HGET %s:host:%s pid", prefix, host_id);
    if (!rep)
        return false;
    *ready = rep->type != REDIS_REPLY_STRING || atoi(rep->str) == (int)pid;
    freeReplyObject(rep);
    return true;
}

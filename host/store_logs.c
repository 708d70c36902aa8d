/*
 * store_logs.c - reading a task's log: the bgt_log lines its attempts wrote
 * (at tasks.log_level and above), kept in {P:s}:log:<id> beside the record
 * and numbered by it (the apply script's G writes; see store_lua.h). The
 * record's lq is the last line's number, ld the lines dropped; the list holds
 * the newest, oldest first, and goes with the record.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "util.h"

/* The next space-separated word of *p (its length in *len), moving *p past it and one space;
 * NULL when there is none. */
static const char *word(const char **p, size_t *len)
{
    const char *w = *p, *sp = strchr(w, ' ');
    if (!sp || sp == w)
        return NULL;
    *len = (size_t)(sp - w);
    *p = sp + 1;
    return w;
}

/* One kept line "<seq> <attempt> <host> <ts_ms> <level> <subtask|-> <text>" as JSON
 * ({"seq", "ts_ms", "level", "attempt", "subtask", "host", "message"}), or NULL when it is
 * not one (written by hand). */
static cJSON *line_json(const char *s, long long *seq)
{
    const char *p = s, *w[6];
    size_t len[6];
    for (int k = 0; k < 6; k++)
        if (!(w[k] = word(&p, &len[k])))
            return NULL;
    char *end;
    *seq = strtoll(w[0], &end, 10);
    if (end != w[0] + len[0])
        return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "seq", (double)*seq);
    cJSON_AddNumberToObject(o, "ts_ms", strtod(w[3], NULL));
    char level[16];
    snprintf(level, sizeof level, "%.*s", (int)(len[4] < 15 ? len[4] : 15), w[4]);
    cJSON_AddStringToObject(o, "level", level);
    cJSON_AddNumberToObject(o, "attempt", strtod(w[1], NULL));
    if (len[5] == 1 && w[5][0] == '-')
        cJSON_AddNullToObject(o, "subtask");
    else
        cJSON_AddNumberToObject(o, "subtask", strtod(w[5], NULL));
    char *host = strndup(w[2], len[2]);
    cJSON_AddStringToObject(o, "host", host);
    free(host);
    cJSON_AddStringToObject(o, "message", p);
    return o;
}

int store_task_logs(store *st, const char *id, long long after, int limit, cJSON **out,
                    bool *ended)
{
    *out = NULL;
    char tid[BGT_ID_LEN + 1];
    if (store__take_id(st, id, tid) < 0)
        return -EINVAL;
    int meta = store__meta(st);
    if (meta < 0)
        return meta;
    const char *tag = st->tags[store_shard_of(st, tid)];
    rcall c[2];
    redisReply *r[2] = {NULL, NULL};
    if (store__call_fmt(&c[0], tag, "HMGET %s:t:%s h o lq ld", tag, tid) < 0 ||
        store__call_fmt(&c[1], tag, "LRANGE %s:log:%s 0 -1", tag, tid) < 0)
        abort(); /* only on out-of-memory */
    int rc = store__run(st, c, 2, r);
    const redisReply *rec = rc == 0 ? r[0] : NULL, *list = rc == 0 ? r[1] : NULL;
    if (rc == 0 && (!rec || rec->type != REDIS_REPLY_ARRAY || rec->elements != 4 ||
                    rec->element[0]->type != REDIS_REPLY_STRING)) {
        snprintf(st->err, sizeof st->err, "task %s not found", tid);
        rc = -ENOENT;
    }
    if (rc == 0) {
        if (ended)
            *ended = rec->element[1]->type == REDIS_REPLY_STRING;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "task_id", tid);
        long long next = after;
        cJSON *next_j = cJSON_AddNumberToObject(o, "next", 0);
        const redisReply *ld = rec->element[3];
        cJSON_AddNumberToObject(o, "dropped", ld->type == REDIS_REPLY_STRING ? atof(ld->str) : 0);
        cJSON *lines = cJSON_AddArrayToObject(o, "lines");
        int n = 0;
        for (size_t i = 0; list && list->type == REDIS_REPLY_ARRAY && i < list->elements; i++) {
            if (n >= limit || list->element[i]->type != REDIS_REPLY_STRING)
                continue;
            long long seq;
            cJSON *l = line_json(list->element[i]->str, &seq);
            if (!l || seq <= after) {
                cJSON_Delete(l);
                continue;
            }
            cJSON_AddItemToArray(lines, l);
            next = seq;
            n++;
        }
        cJSON_SetNumberValue(next_j, (double)next);
        *out = o;
    }
    for (int i = 0; i < 2; i++) {
        free((char *)c[i].cmd);
        if (r[i])
            freeReplyObject(r[i]);
    }
    return rc;
}

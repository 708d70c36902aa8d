/*
 * store_pause.c - paused handlers: the operator's pause and resume ({P}:paused,
 * told to every host on P:ctl), what hosts read of it at each heartbeat, and
 * the "paused" marks of store_stats and store_list_hosts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "util.h"

/* An entry of {P}:paused, "<paused_ms> <reason>", into out. */
static void entry_parse(const char *v, pause_state *out)
{
    char *end;
    out->paused = true;
    out->paused_ms = strtoll(v, &end, 10);
    strlcpy_(out->reason, *end == ' ' ? end + 1 : "", sizeof out->reason);
}

/*
 * Whether anything names handler: a live host serves it, or tasks of it wait
 * or run in some shard. One select call per shard and the hosts, pipelined.
 */
static int handler_known(store *st, const char *handler, bool *known)
{
    *known = false;
    cJSON *hosts = NULL;
    int rc = store_list_hosts(st, &hosts);
    const cJSON *h, *name;
    cJSON_ArrayForEach (h, hosts) {
        cJSON_ArrayForEach (name, cJSON_GetObjectItemCaseSensitive(h, "handlers"))
            if (cJSON_IsString(name) && strcmp(name->valuestring, handler) == 0)
                *known = true;
    }
    cJSON_Delete(hosts);
    if (rc < 0 || *known)
        return rc;
    script_call *calls = xcalloc((size_t)st->shards, sizeof *calls);
    for (int s = 0; s < st->shards; s++) {
        calls[s].script = SC_SELECT;
        store__args_script(st, &calls[s].a, SC_SELECT, s);
        store__args_push(&calls[s].a, "open");
        store__args_push(&calls[s].a, handler);
        store__args_push(&calls[s].a, "0");
    }
    rc = store__eval_many(st, calls, (size_t)st->shards);
    for (int s = 0; rc == 0 && s < st->shards; s++) {
        const redisReply *r = calls[s].reply;
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
            r->element[1]->type == REDIS_REPLY_INTEGER && r->element[1]->integer > 0)
            *known = true;
    }
    for (int s = 0; s < st->shards; s++) {
        freeReplyObject(calls[s].reply);
        store__args_free(&calls[s].a);
    }
    free(calls);
    return rc;
}

int store_pause(store *st, const char *handler, bool pause, const char *reason, pause_state *out)
{
    memset(out, 0, sizeof *out);
    if (!name_valid(handler)) {
        snprintf(st->err, sizeof st->err,
                 "invalid handler name '%.64s': expected [a-z0-9][a-z0-9._-]{0,62}",
                 handler ? handler : "");
        return -EINVAL;
    }
    if (!reason)
        reason = "";
    if (strlen(reason) > PAUSE_REASON_MAX) {
        snprintf(st->err, sizeof st->err, "reason must be at most %d bytes, got %zu",
                 PAUSE_REASON_MAX, strlen(reason));
        return -EINVAL;
    }
    for (const char *p = reason; *p; p++)
        if ((unsigned char)*p < 0x20) {
            snprintf(st->err, sizeof st->err,
                     "reason must be one line of text, without "
                     "control characters");
            return -EINVAL;
        }
    int rc = store__meta(st);
    cJSON *paused = NULL;
    if (rc == 0)
        rc = store_paused(st, &paused);
    bool known = cJSON_GetObjectItemCaseSensitive(paused, handler) != NULL;
    cJSON_Delete(paused);
    if (rc == 0 && !known)
        rc = handler_known(st, handler, &known);
    if (rc < 0)
        return rc;
    if (!known) {
        snprintf(st->err, sizeof st->err,
                 "no handler '%s': no live host serves it and no task waits for it", handler);
        return -ENOENT;
    }
    argbuf a = {0};
    store__args_script(st, &a, SC_PAUSE, -1);
    store__args_push(&a, st->prefix);
    store__args_push(&a, pause ? "pause" : "resume");
    store__args_push(&a, handler);
    store__args_push(&a, reason);
    redisReply *r;
    rc = store__eval_script(st, SC_PAUSE, &a, &r);
    store__args_free(&a);
    if (rc < 0)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        snprintf(st->err, sizeof st->err, "pause: unexpected reply");
        return -EPROTO;
    }
    out->changed = r->element[0]->integer == 1;
    if (r->element[1]->len > 0)
        entry_parse(r->element[1]->str, out);
    freeReplyObject(r);
    return 0;
}

int store_paused(store *st, cJSON **out)
{
    *out = NULL;
    char key[300];
    snprintf(key, sizeof key, "%s:paused", st->gtag);
    redisReply *r;
    int rc = store__cmd(st, st->gtag, &r, "HGETALL %s", key);
    if (rc == -EPROTO) /* a value of the wrong type (written by hand): none is paused */
        rc = 0, r = NULL;
    if (rc < 0)
        return rc;
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        pause_state p = {0};
        entry_parse(r->element[i + 1]->str, &p);
        cJSON *e = cJSON_AddObjectToObject(o, r->element[i]->str);
        cJSON_AddNumberToObject(e, "paused_ms", (double)p.paused_ms);
        cJSON_AddStringToObject(e, "reason", p.reason);
    }
    freeReplyObject(r);
    *out = o;
    return 0;
}

char *store_take_paused(store *st)
{
    char *p = st->paused;
    st->paused = NULL;
    return p;
}

/* Set an entry's "paused", "paused_ms" and "reason" from the paused handlers. */
static void mark(cJSON *entry, const cJSON *paused, const char *name)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(paused, name);
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(p, "paused_ms");
    const cJSON *why = cJSON_GetObjectItemCaseSensitive(p, "reason");
    cJSON_AddBoolToObject(entry, "paused", p != NULL);
    cJSON_AddNumberToObject(entry, "paused_ms", cJSON_IsNumber(ms) ? ms->valuedouble : 0);
    cJSON_AddStringToObject(entry, "reason", cJSON_IsString(why) ? why->valuestring : "");
}

int store__stats_paused(store *st, cJSON *handlers)
{
    cJSON *paused;
    int rc = store_paused(st, &paused);
    if (rc < 0)
        return rc;
    cJSON *h;
    cJSON_ArrayForEach (h, handlers) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(h, "handler");
        mark(h, paused, cJSON_IsString(name) ? name->valuestring : "");
    }
    /* A paused handler with nothing queued or kept has no entry yet: it gets one. */
    const cJSON *p;
    cJSON_ArrayForEach (p, paused) {
        bool listed = false;
        cJSON_ArrayForEach (h, handlers) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(h, "handler");
            listed |= cJSON_IsString(name) && strcmp(name->valuestring, p->string) == 0;
        }
        if (listed)
            continue;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "handler", p->string);
        static const char *const zero[] = {"queued", "due", "oldest_due_age_ms", "finished"};
        for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++)
            cJSON_AddNumberToObject(e, zero[i], 0);
        mark(e, paused, p->string);
        cJSON_AddItemToArray(handlers, e);
    }
    cJSON_Delete(paused);
    return 0;
}

int store__hosts_paused(store *st, cJSON *hosts)
{
    cJSON *paused;
    int rc = store_paused(st, &paused);
    if (rc < 0)
        return rc;
    cJSON *h;
    cJSON_ArrayForEach (h, hosts) {
        cJSON *list = cJSON_AddArrayToObject(h, "paused");
        const cJSON *name;
        cJSON_ArrayForEach (name, cJSON_GetObjectItemCaseSensitive(h, "handlers"))
            if (cJSON_IsString(name) && cJSON_GetObjectItemCaseSensitive(paused, name->valuestring))
                cJSON_AddItemToArray(list, cJSON_CreateString(name->valuestring));
    }
    cJSON_Delete(paused);
    return 0;
}

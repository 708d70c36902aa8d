/*
 * http_ops.c - the operator's write operations over HTTP: bulk retry, purge
 * and cancel (POST /v1/tasks/retry|purge|cancel) and pause/resume of a
 * handler (POST /v1/handlers/<name>/pause|resume). The bodies are read and
 * checked here; the store does the rest and answers what bgtaskctl prints
 * with --json.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_int.h"
#include "util.h"
#include "view.h"

/* The fields each bulk operation takes, in the order its messages list them. */
static const char *const bulk_fields[][8] = {
    [BULK_RETRY] = {"handler", "state", "since", "until", "limit", "dry_run", NULL},
    [BULK_PURGE] = {"older_than", "state", "handler", "ids", "limit", "dry_run", NULL},
    [BULK_CANCEL] = {"handler", "ids", "limit", "dry_run", NULL},
};

/* Why a field of the body is refused, for the 400 (empty: all is well). */
typedef struct why {
    char msg[300];
} why;

/* The body as a JSON object (the caller deletes it), or NULL with w saying why. */
static cJSON *body_object(const request *rq, why *w, bool may_be_empty)
{
    if (rq->len && memchr(rq->body, '\0', rq->len)) {
        snprintf(w->msg, sizeof w->msg, "the body contains a NUL byte");
        return NULL;
    }
    if (!rq->len && may_be_empty)
        return cJSON_CreateObject();
    const char *text = rq->body ? rq->body : "", *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(text, &end, true);
    if (!j)
        snprintf(w->msg, sizeof w->msg, "the body is not valid JSON (at byte %zu)",
                 end ? (size_t)(end - text) : (size_t)0);
    else if (!cJSON_IsObject(j))
        snprintf(w->msg, sizeof w->msg, "the body must be a JSON object");
    if (w->msg[0]) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

/* Every field of j one of fields (NULL-terminated), each once; else false with w's message. */
static bool fields_known(const cJSON *j, const char *const *fields, why *w)
{
    const cJSON *f, *g;
    cJSON_ArrayForEach (f, j) {
        size_t k = 0;
        while (fields[k] && strcmp(fields[k], f->string) != 0)
            k++;
        if (!fields[k] && !fields[0]) {
            snprintf(w->msg, sizeof w->msg, "unknown field '%.64s' (this request takes none)",
                     f->string);
            return false;
        }
        if (!fields[k]) {
            int at = snprintf(w->msg, sizeof w->msg, "unknown field '%.64s' (expected", f->string);
            for (k = 0; fields[k] && at > 0 && (size_t)at < sizeof w->msg; k++)
                at += snprintf(w->msg + at, sizeof w->msg - (size_t)at, "%s %s", k ? "," : "",
                               fields[k]);
            if (at > 0 && (size_t)at < sizeof w->msg)
                snprintf(w->msg + at, sizeof w->msg - (size_t)at, ")");
            return false;
        }
        for (g = j->child; g != f; g = g->next)
            if (strcmp(g->string, f->string) == 0) {
                snprintf(w->msg, sizeof w->msg, "field '%s' is given twice", f->string);
                return false;
            }
    }
    return true;
}

/* A field that is a string: v's text, or NULL with w's message (also when absent and required). */
static const char *string_field(const cJSON *j, const char *name, bool required, why *w)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    if (!v || cJSON_IsNull(v)) {
        if (required)
            snprintf(w->msg, sizeof w->msg, "%s is required", name);
        return NULL;
    }
    if (!cJSON_IsString(v)) {
        snprintf(w->msg, sizeof w->msg, "%s must be a string", name);
        return NULL;
    }
    return v->valuestring;
}

/* since or until: a time as text, or ms since the epoch as a number; 0 when absent. */
static int64_t time_field(const cJSON *j, const char *name, why *w)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    int64_t ms = 0;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble == floor(v->valuedouble) &&
        v->valuedouble < 9007199254740992.0)
        return (int64_t)v->valuedouble;
    if (cJSON_IsString(v) && parse_time_ms(v->valuestring, now_ms(), &ms))
        return ms;
    snprintf(w->msg, sizeof w->msg, "%s must be %s, got '%.40s'", name, TIME_EXPECTED,
             cJSON_IsString(v) ? v->valuestring : "(not a string)");
    return 0;
}

/* The body of a bulk operation into q (its strings borrowed from j); false with w's message. */
static bool bulk_from_json(const cJSON *j, bulk_req *q, const char **list, size_t nlist, why *w)
{
    if (!fields_known(j, bulk_fields[q->op], w))
        return false;
    q->handler = string_field(j, "handler", false, w);
    if (w->msg[0])
        return false;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "state");
    if (cJSON_IsString(v)) {
        list[0] = v->valuestring;
        q->states = list;
        q->nstates = 1;
    } else if (cJSON_IsArray(v)) {
        const cJSON *e;
        q->states = list;
        cJSON_ArrayForEach (e, v) {
            if (!cJSON_IsString(e) || q->nstates == nlist) {
                snprintf(w->msg, sizeof w->msg,
                         "state must be a state or a list of at most %zu states", nlist);
                return false;
            }
            list[q->nstates++] = e->valuestring;
        }
    } else if (v && !cJSON_IsNull(v)) {
        snprintf(w->msg, sizeof w->msg, "state must be a string or a list of strings");
        return false;
    }
    q->since_ms = time_field(j, "since", w);
    if (!w->msg[0])
        q->until_ms = time_field(j, "until", w);
    if (w->msg[0])
        return false;
    v = cJSON_GetObjectItemCaseSensitive(j, "older_than");
    if (v && !cJSON_IsNull(v)) {
        char num[32];
        const char *text = cJSON_IsString(v) ? v->valuestring : NULL;
        if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1e12 &&
            v->valuedouble == floor(v->valuedouble)) {
            snprintf(num, sizeof num, "%.0f", v->valuedouble); /* a bare number: seconds */
            text = num;
        }
        int64_t ms;
        if (!text || !parse_duration_ms(text, &ms)) {
            snprintf(w->msg, sizeof w->msg, "older_than must be %s, got '%.40s'", DURATION_EXPECTED,
                     cJSON_IsString(v) ? v->valuestring : "(not a string)");
            return false;
        }
        q->has_older_than = true;
        q->older_than_ms = ms;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "limit");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 1 ||
            v->valuedouble > BULK_LIMIT_MAX) {
            snprintf(w->msg, sizeof w->msg, "limit must be an integer 1..%d", BULK_LIMIT_MAX);
            return false;
        }
        q->limit = (long)v->valuedouble;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "dry_run");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsBool(v)) {
            snprintf(w->msg, sizeof w->msg, "dry_run must be true or false");
            return false;
        }
        q->dry_run = cJSON_IsTrue(v);
    }
    return true;
}

/* The ids of a bulk body: a malloc'd array of borrowed strings, or NULL (none, or w says why). */
static const char **bulk_ids(const cJSON *j, size_t *n, why *w)
{
    *n = 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "ids"), *e;
    if (!v || cJSON_IsNull(v))
        return NULL;
    int count = cJSON_GetArraySize(v);
    if (!cJSON_IsArray(v) || count < 1 || count > BULK_IDS_MAX) {
        snprintf(w->msg, sizeof w->msg, "ids must be a list of 1..%d task ids", BULK_IDS_MAX);
        return NULL;
    }
    const char **ids = xcalloc((size_t)count, sizeof *ids);
    cJSON_ArrayForEach (e, v) {
        if (!cJSON_IsString(e)) {
            snprintf(w->msg, sizeof w->msg, "ids[%zu] must be a string (a task id)", *n);
            free(ids);
            return NULL;
        }
        ids[(*n)++] = e->valuestring;
    }
    return ids;
}

enum MHD_Result http__post_bulk(http_server *s, struct MHD_Connection *c, const request *rq)
{
    why w = {{0}};
    cJSON *j = body_object(rq, &w, false);
    if (!j)
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "%s", w.msg);
    bulk_req q = {.op = (bulk_op)rq->bulk};
    const char *states[4];
    const char **ids = NULL;
    if (bulk_from_json(j, &q, states, 4, &w))
        ids = bulk_ids(j, &q.nids, &w);
    q.ids = ids;
    enum MHD_Result ret;
    if (w.msg[0]) {
        ret = http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "%s", w.msg);
        goto out;
    }
    store *st = http__pool_get(s);
    cJSON *answer = NULL;
    int rc = store_bulk(st, &q, &answer);
    if (q.dry_run && http__again(rc, st)) /* a real run is not made twice */
        rc = store_bulk(st, &q, &answer);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    http__pool_put(s, st);
    if (rc < 0)
        ret = http__send_store_error(s, c, rc, err);
    else
        ret = http__send_json(c, q.dry_run ? MHD_HTTP_OK : MHD_HTTP_ACCEPTED, answer, NULL);
out:
    free(ids);
    cJSON_Delete(j);
    return ret;
}

enum MHD_Result http__post_pause(http_server *s, struct MHD_Connection *c, const request *rq)
{
    static const char *const pause_fields[] = {"reason", NULL}, *const none[] = {NULL};
    why w = {{0}};
    cJSON *j = body_object(rq, &w, true);
    const char *reason = NULL;
    if (j && fields_known(j, rq->resume ? none : pause_fields, &w))
        reason = string_field(j, "reason", false, &w);
    if (w.msg[0]) {
        cJSON_Delete(j);
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "%s", w.msg);
    }
    store *st = http__pool_get(s);
    pause_state p;
    int rc = store_pause(st, rq->handler, !rq->resume, reason, &p);
    if (http__again(rc, st)) /* pausing twice is pausing once */
        rc = store_pause(st, rq->handler, !rq->resume, reason, &p);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    http__pool_put(s, st);
    cJSON_Delete(j);
    if (rc < 0)
        return http__send_store_error(s, c, rc, err);
    return http__send_json(c, MHD_HTTP_OK, view_pause(rq->handler, &p), NULL);
}

/* view.c - what clients are shown of tasks and subtasks (see view.h). */
#include "view.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

void view_task(cJSON *rec)
{
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(rec, "state");
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(rec, "error");
    bool failed = cJSON_IsString(state) && strcmp(state->valuestring, "FAILURE") == 0;
    if (error && !failed && !cJSON_IsNull(error))
        cJSON_ReplaceItemInObjectCaseSensitive(rec, "error", cJSON_CreateNull());
}

void view_tasks(cJSON *recs)
{
    cJSON *rec;
    cJSON_ArrayForEach (rec, recs)
        view_task(rec);
}

static const char *str_of(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static double num_of(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* Whether one host entry lists handler. */
static bool host_serves(const cJSON *host, const char *handler)
{
    const cJSON *h;
    cJSON_ArrayForEach (h, cJSON_GetObjectItemCaseSensitive(host, "handlers"))
        if (cJSON_IsString(h) && strcmp(h->valuestring, handler) == 0)
            return true;
    return false;
}

bool view_served(const cJSON *hosts, const char *handler)
{
    const cJSON *host;
    cJSON_ArrayForEach (host, hosts)
        if (host_serves(host, handler))
            return true;
    return false;
}

char *view_unserved_warning(const char *handler)
{
    return xasprintf("no live host serves handler %s: the task waits until one that does "
                     "is started",
                     handler);
}

void view_task_hosts(cJSON *rec, const cJSON *hosts)
{
    const char *handler = str_of(rec, "handler");
    if (strcmp(str_of(rec, "state"), "ONGOING") != 0 || !*handler || view_served(hosts, handler))
        return;
    char *w = view_unserved_warning(handler);
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "warning");
    cJSON_AddStringToObject(rec, "warning", w);
    free(w);
}

/* The entry of name in the array of handler entries, made (zeroed) when missing. */
static cJSON *entry(cJSON *arr, const char *name)
{
    cJSON *e;
    cJSON_ArrayForEach (e, arr)
        if (strcmp(str_of(e, "handler"), name) == 0)
            return e;
    e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "handler", name);
    cJSON_AddArrayToObject(e, "hosts");
    cJSON_AddNumberToObject(e, "workers", 0);
    cJSON_AddFalseToObject(e, "paused");
    cJSON_AddNumberToObject(e, "paused_ms", 0);
    cJSON_AddStringToObject(e, "reason", "");
    cJSON_AddNumberToObject(e, "queued", 0);
    cJSON_AddNumberToObject(e, "due", 0);
    cJSON_AddNumberToObject(e, "oldest_due_age_ms", 0);
    cJSON_AddFalseToObject(e, "unserved");
    cJSON *lh = cJSON_AddObjectToObject(e, "last_hour");
    for (int k = 0; k < STORE_OUTCOMES; k++)
        cJSON_AddNumberToObject(lh, store_outcomes[k], 0);
    cJSON_AddItemToArray(arr, e);
    return e;
}

/* The entry of hist (store_history's answer) for handler name, or NULL. */
static const cJSON *hist_of(const cJSON *hist, const char *name)
{
    const cJSON *e;
    cJSON_ArrayForEach (e, cJSON_GetObjectItemCaseSensitive(hist, "handlers"))
        if (strcmp(str_of(e, "handler"), name) == 0)
            return e;
    return NULL;
}

/* The sum of a series (an array of counts). */
static double series_sum(const cJSON *arr)
{
    double n = 0;
    const cJSON *v;
    cJSON_ArrayForEach (v, arr)
        n += cJSON_IsNumber(v) ? v->valuedouble : 0;
    return n;
}

static void add_to(cJSON *e, const char *field, double v)
{
    cJSON *n = cJSON_GetObjectItemCaseSensitive(e, field);
    cJSON_SetNumberValue(n, n->valuedouble + v);
}

static int cmp_handler(const void *a, const void *b)
{
    return strcmp(str_of(*(cJSON *const *)a, "handler"), str_of(*(cJSON *const *)b, "handler"));
}

cJSON *view_handlers(const cJSON *hosts, const cJSON *stats, const cJSON *last_hour)
{
    cJSON *arr = cJSON_CreateArray();
    const cJSON *host, *h, *q;
    cJSON_ArrayForEach (host, hosts) {
        cJSON_ArrayForEach (h, cJSON_GetObjectItemCaseSensitive(host, "handlers")) {
            if (!cJSON_IsString(h))
                continue;
            cJSON *e = entry(arr, h->valuestring);
            cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(e, "hosts"),
                                 cJSON_CreateString(str_of(host, "id")));
            add_to(e, "workers", num_of(host, "workers"));
        }
    }
    cJSON_ArrayForEach (q, cJSON_GetObjectItemCaseSensitive(stats, "handlers")) {
        const char *name = str_of(q, "handler");
        bool paused = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(q, "paused"));
        if (!*name || (num_of(q, "queued") <= 0 && !paused && !view_served(hosts, name)))
            continue; /* an empty queue of a handler no one serves: nothing to show */
        cJSON *e = entry(arr, name);
        if (paused) {
            cJSON_ReplaceItemInObjectCaseSensitive(e, "paused", cJSON_CreateTrue());
            add_to(e, "paused_ms", num_of(q, "paused_ms"));
            cJSON_ReplaceItemInObjectCaseSensitive(e, "reason",
                                                   cJSON_CreateString(str_of(q, "reason")));
        }
        add_to(e, "queued", num_of(q, "queued"));
        add_to(e, "due", num_of(q, "due"));
        add_to(e, "oldest_due_age_ms", num_of(q, "oldest_due_age_ms"));
    }
    /* By name: cJSON arrays are linked lists, so through a vector. */
    int n = cJSON_GetArraySize(arr);
    cJSON **v = xcalloc((size_t)n + 1, sizeof *v);
    for (int i = 0; i < n; i++)
        v[i] = cJSON_DetachItemFromArray(arr, 0);
    qsort(v, (size_t)n, sizeof *v, cmp_handler);
    cJSON *unserved = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        const char *name = str_of(v[i], "handler");
        bool paused = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v[i], "paused"));
        if (num_of(v[i], "queued") > 0 && !paused && !view_served(hosts, name)) {
            cJSON_ReplaceItemInObjectCaseSensitive(v[i], "unserved", cJSON_CreateTrue());
            cJSON_AddItemToArray(unserved, cJSON_CreateString(name));
        }
        const cJSON *hist = hist_of(last_hour, name);
        cJSON *lh = cJSON_GetObjectItemCaseSensitive(v[i], "last_hour");
        for (int k = 0; hist && k < STORE_OUTCOMES; k++)
            add_to(lh, store_outcomes[k],
                   series_sum(cJSON_GetObjectItemCaseSensitive(hist, store_outcomes[k])));
        cJSON_AddItemToArray(arr, v[i]);
    }
    free(v);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "handlers", arr);
    cJSON_AddItemToObject(o, "unserved", unserved);
    return o;
}

void view_stats(cJSON *stats, const cJSON *hosts, const cJSON *hist)
{
    cJSON *unserved = cJSON_CreateArray();
    const cJSON *q, *e;
    cJSON_ArrayForEach (q, cJSON_GetObjectItemCaseSensitive(stats, "handlers")) {
        const char *name = str_of(q, "handler");
        if (num_of(q, "queued") > 0 && !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(q, "paused")) &&
            !view_served(hosts, name))
            cJSON_AddItemToArray(unserved, cJSON_CreateString(name));
    }
    cJSON_DeleteItemFromObjectCaseSensitive(stats, "unserved");
    cJSON_AddItemToObject(stats, "unserved", unserved);
    cJSON_DeleteItemFromObjectCaseSensitive(stats, "outcomes");
    cJSON_DeleteItemFromObjectCaseSensitive(stats, "outcomes_since_ms");
    if (!hist) {
        cJSON_AddNullToObject(stats, "outcomes");
        cJSON_AddNullToObject(stats, "outcomes_since_ms");
        return;
    }
    cJSON *out = cJSON_AddObjectToObject(stats, "outcomes");
    for (int k = 0; k < STORE_OUTCOMES; k++)
        cJSON_AddNumberToObject(out, store_outcomes[k], 0);
    cJSON_ArrayForEach (e, cJSON_GetObjectItemCaseSensitive(hist, "handlers"))
        for (int k = 0; k < STORE_OUTCOMES; k++)
            add_to(out, store_outcomes[k],
                   series_sum(cJSON_GetObjectItemCaseSensitive(e, store_outcomes[k])));
    cJSON_AddNumberToObject(stats, "outcomes_since_ms", num_of(hist, "since_ms"));
}

void view_mark_unserved(cJSON *stats, const cJSON *hosts)
{
    cJSON *q;
    cJSON_ArrayForEach (q, cJSON_GetObjectItemCaseSensitive(stats, "handlers")) {
        double unserved = view_served(hosts, str_of(q, "handler")) ? 0 : num_of(q, "queued");
        cJSON_DeleteItemFromObjectCaseSensitive(q, "unserved");
        /* A handler listed for its finished tasks alone waits for nothing. */
        if (num_of(q, "queued") > 0)
            cJSON_AddNumberToObject(q, "unserved", unserved);
    }
}

cJSON *view_submitted(const char *id, const char *not_durable, const char *unserved)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "task_id", id);
    if (not_durable)
        cJSON_AddFalseToObject(o, "durable");
    char *w = unserved ? view_unserved_warning(unserved) : NULL;
    if (not_durable || w) {
        char *both = xasprintf("%s%s%s", not_durable ? not_durable : "",
                               not_durable && w ? "; " : "", w ? w : "");
        cJSON_AddStringToObject(o, "warning", both);
        free(both);
    }
    free(w);
    return o;
}

cJSON *view_cancel(const char *id, int rc, const char *state_out)
{
    static const char *const outcome[] = {
        [CANCEL_DONE] = "cancelled",
        [CANCEL_REQUESTED] = "cancel_requested",
        [CANCEL_FINAL] = "already_finished",
    };
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "task_id", id);
    cJSON_AddStringToObject(o, "outcome", rc >= 0 && rc <= CANCEL_FINAL ? outcome[rc] : "unknown");
    cJSON_AddStringToObject(o, "state",
                            rc == CANCEL_DONE        ? "CANCELLED"
                            : rc == CANCEL_REQUESTED ? "ONGOING"
                                                     : state_out);
    if (rc == CANCEL_REQUESTED)
        cJSON_AddStringToObject(o, "owner", state_out);
    return o;
}

cJSON *view_retry(const char *id, bool parallel, int n)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "task_id", id);
    cJSON_AddStringToObject(o, "kind", parallel ? "parallel" : "single");
    cJSON_AddStringToObject(o, "state", "ONGOING");
    cJSON_AddNumberToObject(o, "retrying", n);
    return o;
}

cJSON *view_pause(const char *handler, const pause_state *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "handler", handler);
    cJSON_AddBoolToObject(o, "paused", p->paused);
    cJSON_AddNumberToObject(o, "paused_ms", (double)p->paused_ms);
    cJSON_AddStringToObject(o, "reason", p->reason);
    cJSON_AddBoolToObject(o, "changed", p->changed);
    return o;
}

int view_subtask_count(const cJSON *rec)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, "subtasks");
    double n = cJSON_IsNumber(v) ? v->valuedouble : 0;
    return n > VIEW_SUBTASKS_MAX ? -1 : n > 0 ? (int)n : 0;
}

/* Stored JSON text as a value: parsed when it is JSON, else the text itself; null if empty. */
static cJSON *json_value(const char *text)
{
    cJSON *v = text && *text ? cJSON_Parse(text) : NULL;
    if (v)
        return v;
    return text && *text ? cJSON_CreateString(text) : cJSON_CreateNull();
}

static const char *const sub_states[] = {"PENDING", "SUCCESS", "FAILURE", "CANCELLED", NULL};

const char *view_subtask_state(const char *s)
{
    for (int k = 0; s && sub_states[k]; k++)
        if (strcasecmp(sub_states[k], s) == 0)
            return sub_states[k];
    return NULL;
}

cJSON *view_subtask_page(const char *id, const sub_rec *subs, int n, const char *state,
                         long offset, long limit)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "task_id", id);
    cJSON_AddNumberToObject(o, "total", n);
    cJSON *counts = cJSON_AddObjectToObject(o, "counts");
    for (int k = 0; sub_states[k]; k++)
        cJSON_AddNumberToObject(counts, sub_states[k], 0);
    cJSON_AddNumberToObject(o, "offset", (double)offset);
    cJSON *arr = cJSON_CreateArray();
    long matched = 0, shown = 0;
    for (int i = 0; i < n; i++) {
        cJSON *cnt = cJSON_GetObjectItemCaseSensitive(counts, subs[i].state);
        if (cnt)
            cJSON_SetNumberValue(cnt, cnt->valuedouble + 1);
        else
            cJSON_AddNumberToObject(counts, subs[i].state, 1);
        if (state && strcmp(state, subs[i].state) != 0)
            continue;
        if (matched++ >= offset && (limit <= 0 || shown < limit)) {
            cJSON_AddItemToArray(arr, view_subtask(&subs[i], i));
            shown++;
        }
    }
    cJSON_AddNumberToObject(o, "matched", (double)matched);
    cJSON_AddNumberToObject(o, "count", (double)shown);
    cJSON_AddItemToObject(o, "subtasks", arr);
    return o;
}

cJSON *view_subtask(const sub_rec *s, int i)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", i);
    cJSON_AddStringToObject(o, "state", s->state);
    cJSON_AddNumberToObject(o, "attempt", s->attempt);
    if (s->message && *s->message)
        cJSON_AddStringToObject(o, "message", s->message);
    else
        cJSON_AddNullToObject(o, "message");
    cJSON_AddItemToObject(o, "args", json_value(s->args));
    cJSON_AddItemToObject(o, "result", json_value(s->result));
    return o;
}

/*
 * hooks.c - the hook chain and the three built-in hooks (metrics, events,
 * cleanup). Plugin hooks are called through the registry's list; a hook's
 * own failures stay its own: nothing here looks at what a hook did except
 * the fields the built-ins fill.
 */
#include "hooks.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "util.h"

const char *end_kind_status(end_kind k)
{
    static const char *const names[] = {
        [END_SUCCESS] = "success", [END_FAILURE] = "failure", [END_CANCELLED] = "cancelled",
        [END_RETRY] = "retry",     [END_RELEASE] = "released", [END_LOST] = "lost",
    };
    return names[k];
}

/* Every event carries these. */
static cJSON *event_base(const bgt_hook_info *info, const char *message)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "task_id", info->task_id);
    cJSON_AddStringToObject(o, "handler", info->handler);
    cJSON_AddNumberToObject(o, "attempt", info->attempt);
    cJSON_AddNumberToObject(o, "ts_ms", (double)now_ms());
    cJSON_AddStringToObject(o, "message", message ? message : "");
    return o;
}

static char *print_and_free(cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        abort(); /* cJSON only fails on out-of-memory */
    return s;
}

char *event_progress_payload(const bgt_hook_info *info, double current, double total,
                             const char *message)
{
    return event_progress_payload_ex(info, current, total, message, NULL);
}

char *event_progress_payload_ex(const bgt_hook_info *info, double current, double total,
                                const char *message, const cJSON *extra)
{
    cJSON *o = event_base(info, message);
    cJSON_AddNumberToObject(o, "current_progress", current);
    cJSON_AddNumberToObject(o, "total_progress", total);
    if (extra)
        for (const cJSON *f = extra->child; f; f = f->next)
            cJSON_AddItemToObject(o, f->string, cJSON_Duplicate(f, true));
    return print_and_free(o);
}

/* ---- built-in: metrics ---- */

static void metrics_before(hooks *hk, const bgt_hook_info *info)
{
    metrics_started(hk->met, info->handler);
}

static void metrics_after(hooks *hk, attempt_end *e)
{
    metrics_ended(hk->met, e->info->handler, end_kind_status(e->kind), e->duration_s);
    if (e->kind == END_RETRY)
        metrics_inc(hk->met, MC_RETRIES, 1);
    else if (e->kind == END_RELEASE)
        metrics_inc(hk->met, MC_RELEASES, 1);
    else if (e->kind == END_LOST)
        metrics_inc(hk->met, MC_LOST, 1);
}

/* ---- built-in: events ---- */

static void events_after(hooks *hk, attempt_end *e)
{
    cJSON *o;
    switch (e->kind) {
    case END_SUCCESS:
        /* Some subtasks of a parallel task failed: Backend.AI's partial success. */
        e->event_name = e->errors_json ? "bgtask_partial_success" : "bgtask_done";
        o = event_base(e->info, e->message);
        if (e->errors_json) {
            cJSON *errs = cJSON_Parse(e->errors_json);
            cJSON_AddItemToObject(o, "errors", errs ? errs : cJSON_CreateArray());
        }
        if (e->result) {
            cJSON *r = cJSON_Parse(e->result);
            if (r)
                cJSON_AddItemToObject(o, "result", r);
        }
        break;
    case END_FAILURE:
        e->event_name = "bgtask_failed";
        o = event_base(e->info, e->message);
        break;
    case END_CANCELLED:
        e->event_name = "bgtask_cancelled";
        o = event_base(e->info, e->message);
        break;
    case END_RETRY:
    case END_RELEASE:
        /* Still ONGOING: a progress-shaped update saying what happened. */
        e->event_name = "bgtask_updated";
        o = event_base(e->info, e->message);
        break;
    default:
        return; /* a lost attempt writes nothing */
    }
    e->event_payload = print_and_free(o);
}

/* ---- built-in: cleanup ---- */

static void cleanup_after(hooks *hk, attempt_end *e)
{
    /* Finished records, their subtasks and their P:done entry expire after
     * the configured retention; the store removes the queue entry. */
    e->retention_s = hk->retention_s > 0 ? (int64_t)hk->retention_s : -1;
}

/* ---- the chain ---- */

/* Whether any plugin registered a hook: lets the common case skip the lock. */
static bool have_plugin_hooks(hooks *hk)
{
    return __atomic_load_n(&hk->reg->hooks, __ATOMIC_ACQUIRE) != NULL;
}

void hooks_before(hooks *hk, const bgt_hook_info *info)
{
    metrics_before(hk, info);
    if (!have_plugin_hooks(hk))
        return;
    pthread_mutex_lock(&hk->reg->lock);
    for (hook *h = hk->reg->hooks; h; h = h->next)
        if (h->def.before)
            h->def.before(h->def.udata, info);
    pthread_mutex_unlock(&hk->reg->lock);
}

void hooks_progress(hooks *hk, const bgt_hook_info *info, double current, double total,
                    const char *message)
{
    if (!have_plugin_hooks(hk))
        return;
    pthread_mutex_lock(&hk->reg->lock);
    for (hook *h = hk->reg->hooks; h; h = h->next)
        if (h->def.progress)
            h->def.progress(h->def.udata, info, current, total, message);
    pthread_mutex_unlock(&hk->reg->lock);
}

void hooks_after(hooks *hk, attempt_end *e)
{
    /* Plugin hooks in reverse registration order, then the built-ins. */
    size_t n = 0;
    if (have_plugin_hooks(hk))
        pthread_mutex_lock(&hk->reg->lock);
    else
        goto builtins;
    for (hook *h = hk->reg->hooks; h; h = h->next)
        n++;
    if (n) {
        hook **v = xmalloc(n * sizeof *v);
        size_t i = 0;
        for (hook *h = hk->reg->hooks; h; h = h->next)
            v[i++] = h;
        while (i-- > 0)
            if (v[i]->def.after)
                v[i]->def.after(v[i]->def.udata, e->info, e->status, e->duration_s, e->message);
        free(v);
    }
    pthread_mutex_unlock(&hk->reg->lock);
builtins:
    cleanup_after(hk, e);
    events_after(hk, e);
    metrics_after(hk, e);
}

void attempt_end_clear(attempt_end *e)
{
    free(e->event_payload);
    e->event_payload = NULL;
}

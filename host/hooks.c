/*
 * hooks.c - the hook chain and the built-in metrics hook. Plugin hooks are
 * called through the registry's list; a hook's own failures stay its own:
 * nothing here looks at what a hook did.
 */
#include "hooks.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

const char *hooks_end_status(end_kind k)
{
    static const char *const names[] = {
        [END_SUCCESS] = "success", [END_FAILURE] = "failure", [END_CANCELLED] = "cancelled",
        [END_RETRY] = "retry",     [END_RELEASE] = "released", [END_LOST] = "lost",
    };
    return names[k];
}

/* ---- built-in: metrics ---- */

static void metrics_before(hooks *hk, const bgt_hook_info *info)
{
    metrics_started(hk->met, info->handler);
}

static void metrics_after(hooks *hk, const bgt_hook_info *info, end_kind kind,
                          double duration_s)
{
    metrics_ended(hk->met, info->handler, hooks_end_status(kind), duration_s);
    if (kind == END_RETRY)
        metrics_inc(hk->met, MC_RETRIES, 1);
    else if (kind == END_RELEASE)
        metrics_inc(hk->met, MC_RELEASES, 1);
    else if (kind == END_LOST)
        metrics_inc(hk->met, MC_LOST, 1);
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

void hooks_after(hooks *hk, const bgt_hook_info *info, end_kind kind, bgt_status status,
                 double duration_s, const char *message)
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
                v[i]->def.after(v[i]->def.udata, info, status, duration_s, message);
        free(v);
    }
    pthread_mutex_unlock(&hk->reg->lock);
builtins:
    metrics_after(hk, info, kind, duration_s);
}

/*
 * hooks.c - the hook chain and the built-in metrics hook. Plugin hooks are
 * called through the registry's list; a hook's own failures stay its own:
 * nothing here looks at what a hook did.
 */
#include "hooks.h"

const char *hooks_end_status(end_kind k, bool partial)
{
    if (k == END_SUCCESS && partial)
        return "partial_success";
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

static void metrics_after(hooks *hk, const bgt_hook_info *info, end_kind kind, bool partial,
                          double duration_s)
{
    metrics_ended(hk->met, info->handler, hooks_end_status(kind, partial), duration_s);
    if (kind == END_RETRY)
        metrics_inc(hk->met, MC_RETRIES, 1);
    else if (kind == END_RELEASE)
        metrics_inc(hk->met, MC_RELEASES, 1);
    else if (kind == END_LOST)
        metrics_inc(hk->met, MC_LOST, 1);
}

/* ---- the chain ----
 *
 * Plugin hooks are called through the registry's published list, read
 * without a lock: a hook that blocks holds up only its own thread, and one
 * that calls back into the registry or the host's API cannot deadlock. */

void hooks_plugins_before(registry *reg, const bgt_hook_info *info)
{
    hook_list *l = registry_hooks_get(reg);
    for (size_t i = 0; l && i < l->n; i++)
        if (l->v[i]->def.before)
            l->v[i]->def.before(l->v[i]->def.udata, info);
    registry_hooks_put(l);
}

void hooks_plugins_progress(registry *reg, const bgt_hook_info *info, double current,
                            double total, const char *message)
{
    hook_list *l = registry_hooks_get(reg);
    for (size_t i = 0; l && i < l->n; i++)
        if (l->v[i]->def.progress)
            l->v[i]->def.progress(l->v[i]->def.udata, info, current, total, message);
    registry_hooks_put(l);
}

void hooks_plugins_after(registry *reg, const bgt_hook_info *info, bgt_status status,
                         double duration_s, const char *message)
{
    hook_list *l = registry_hooks_get(reg);
    for (size_t i = l ? l->n : 0; i-- > 0;)
        if (l->v[i]->def.after)
            l->v[i]->def.after(l->v[i]->def.udata, info, status, duration_s, message);
    registry_hooks_put(l);
}

void hooks_before(hooks *hk, const bgt_hook_info *info)
{
    metrics_before(hk, info);
    hooks_plugins_before(hk->reg, info);
}

void hooks_progress(hooks *hk, const bgt_hook_info *info, double current, double total,
                    const char *message)
{
    hooks_plugins_progress(hk->reg, info, current, total, message);
}

void hooks_after(hooks *hk, const bgt_hook_info *info, end_kind kind, bool partial,
                 bgt_status status, double duration_s, const char *message)
{
    /* Plugin hooks in reverse registration order, then the built-in. */
    hooks_plugins_after(hk->reg, info, status, duration_s, status == BGT_OK ? NULL : message);
    metrics_after(hk, info, kind, partial, duration_s);
}

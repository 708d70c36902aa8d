/*
 * hooks.h - the chain run around every attempt: before it starts, on each
 * progress report, after it ends. The built-in metrics hook comes first;
 * plugin hooks follow in registration order. "before" runs in that order and
 * "after" in reverse, like nested context managers. What an attempt's end
 * publishes is not a hook's business: the manager decides it (events.h) and
 * the store writes it in the same script as the state change.
 */
#ifndef BGT_HOOKS_H
#define BGT_HOOKS_H

#include <stdint.h>

#include "bgtask.h"
#include "metrics.h"
#include "registry.h"

/* How an attempt ended, as the host decided from the handler's status. */
typedef enum end_kind {
    END_SUCCESS,
    END_FAILURE,
    END_CANCELLED,
    END_RETRY,    /* run again after a backoff */
    END_RELEASE,  /* given back at shutdown, attempt refunded */
    END_LOST,     /* the lease was lost: nothing is written */
} end_kind;

typedef struct hooks {
    metrics *met;        /* borrowed */
    registry *reg;       /* plugin hooks live here; borrowed */
} hooks;

void hooks_before(hooks *hk, const bgt_hook_info *info);
void hooks_progress(hooks *hk, const bgt_hook_info *info, double current, double total,
                    const char *message);
/* After an attempt (or a subtask) ended: plugin hooks in reverse order, then metrics.
 * status: what it ended with (the handler's); partial: a success with failed subtasks;
 * message: why (the error it set, else the host's reason), borrowed; the hooks get NULL
 * for it after BGT_OK (sdk/bgtask.h). */
void hooks_after(hooks *hk, const bgt_hook_info *info, end_kind kind, bool partial,
                 bgt_status status, double duration_s, const char *message);

/* The name of the metrics status for an end kind ("success", ...), "partial_success" for
 * a success with failed subtasks (partial): the record's outcome, for the ends that are
 * final. */
const char *hooks_end_status(end_kind k, bool partial);

/*
 * The plugin part of the chain alone: the hooks registered in reg, "after" in
 * reverse order. The host's chain above calls them; a worker process, which
 * runs its plugin's hooks without the built-in, calls them directly.
 */
void hooks_plugins_before(registry *reg, const bgt_hook_info *info);
void hooks_plugins_progress(registry *reg, const bgt_hook_info *info, double current,
                            double total, const char *message);
void hooks_plugins_after(registry *reg, const bgt_hook_info *info, bgt_status status,
                         double duration_s, const char *message);

#endif

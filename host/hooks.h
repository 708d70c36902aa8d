/*
 * hooks.h - the chain run around every attempt: before it starts, on each
 * progress report, after it ends. Built-in hooks come first, in this order:
 * metrics, events, cleanup; plugin hooks follow in registration order. "before"
 * runs in that order and "after" in reverse, like nested context managers.
 *
 * The events and cleanup hooks decide what is written when an attempt ends
 * (the event and its payload, the retention of the record); the manager hands
 * that to the store, which writes it in the same script as the state change.
 */
#ifndef BGT_HOOKS_H
#define BGT_HOOKS_H

#include <stdint.h>

#include <cjson/cJSON.h>

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

/* What the after-chain sees and fills. */
typedef struct attempt_end {
    const bgt_hook_info *info;
    end_kind kind;
    bgt_status status;       /* what the handler returned */
    double duration_s;
    const char *message;     /* the record's message (the error for failures) */
    const char *result;      /* JSON text of the result, or NULL */
    int64_t backoff_ms;      /* END_RETRY */
    const char *host_id;     /* for messages */
    const char *errors_json; /* parallel: JSON array of "subtask i: message" strings, or NULL */
    /* filled by the events hook: */
    const char *event_name;  /* NULL: no event */
    char *event_payload;     /* malloc'd JSON, freed by attempt_end_clear */
    /* filled by the cleanup hook: */
    int64_t retention_s;     /* TTL of the finished record; -1 = the store's default */
} attempt_end;

typedef struct hooks {
    metrics *met;        /* borrowed */
    registry *reg;       /* plugin hooks live here; borrowed */
    double retention_s;  /* from the config */
} hooks;

void hooks_before(hooks *hk, const bgt_hook_info *info);
void hooks_progress(hooks *hk, const bgt_hook_info *info, double current, double total,
                    const char *message);
void hooks_after(hooks *hk, attempt_end *e);
void attempt_end_clear(attempt_end *e);

/* The bgtask_updated payload for a progress report (malloc'd JSON). */
char *event_progress_payload(const bgt_hook_info *info, double current, double total,
                             const char *message);
/* The same with the fields of extra (an object, borrowed; may be NULL) added. */
char *event_progress_payload_ex(const bgt_hook_info *info, double current, double total,
                                const char *message, const cJSON *extra);

/* The name of the metrics status for an end kind ("success", ...). */
const char *end_kind_status(end_kind k);

#endif

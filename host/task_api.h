/*
 * task_api.h - the task side of the host table (struct bgt_api of
 * sdk/bgtask.h): what a handler, split or merge function calls on the
 * bgt_task it was given. Implemented by task_api.c over the manager's
 * attempts; api.c puts these functions into the table. Every one is called
 * on the worker thread that runs the plugin function holding t, and t is
 * borrowed for the length of that call (see bgtask.h for each entry's
 * contract); for an isolated plugin's call, on the host's isolation io
 * thread, which holds t while the call runs in a worker process.
 */
#ifndef BGT_TASK_API_H
#define BGT_TASK_API_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "bgtask.h"

const char *task_api_id(const bgt_task *t);
const char *task_api_handler(const bgt_task *t);
uint32_t task_api_attempt(const bgt_task *t);
int task_api_subtask(const bgt_task *t);
/* Progress: kept as the latest value for the writer (at most one write per
 * progress_interval); a subtask's counts as its share of its task's. */
void task_api_progress(bgt_task *t, double current, double total, const char *message);
void task_api_last_progress(const bgt_task *t, double *current, double *total);
/* True once t should stop: cancel, lease lost (also by this host's clock), timeout,
 * shutdown; a subtask also when its task stops or fail_fast halted it. Lock-free. */
bool task_api_cancelled(const bgt_task *t);
/* Serialize result into t (0, -EINVAL, -ENOMEM, -E2BIG over tasks.max_result_bytes). */
int task_api_set_result(bgt_task *t, const cJSON *result);
void task_api_set_error(bgt_task *t, const char *fmt, va_list ap);
/* A line of t's log: printed on stderr at the host's level, and kept with the task's record
 * (written with its next write) at tasks.log_level and above, cut at TASK_LOG_LINE_MAX. */
void task_api_log(bgt_task *t, int level, const char *fmt, va_list ap);
/* The same for text already made (an isolated plugin's line, from its worker). */
void task_api_log_text(bgt_task *t, int level, const char *text);
#define TASK_LOG_LINE_MAX 1024
/* Split functions only: 0, -EPERM outside a split, -E2BIG past tasks.max_subtasks. */
int task_api_add_subtask(bgt_task *t, const cJSON *args);

/* Why t was told to stop: what bgt_cancelled() does not say. The proxies of isolated
 * plugins need it to end a call whose worker ignored the stop as thread mode would (a
 * timeout fails, a cancel cancels, a shutdown releases). */
typedef enum task_stop {
    TASK_STOP_NONE = 0,
    TASK_STOP_CANCEL,   /* cancel requested, or a sibling failed under fail_fast */
    TASK_STOP_LOST,     /* the lease is lost */
    TASK_STOP_TIMEOUT,
    TASK_STOP_SHUTDOWN, /* the host's shutdown grace is over */
} task_stop;
task_stop task_api_stop_reason(const bgt_task *t);
/*
 * The run of single attempt t, handed off by the worker that took it (handler.hand_off),
 * returned status: its end (after-hooks, outcome, write) is queued for a worker. From any
 * thread, without the manager's lock; t is not the caller's any more.
 */
void task_api_handed_back(bgt_task *t, bgt_status status);
/* task_api_handed_back of n runs at once: ts[i] returned status[i]. While no plugin has a
 * hook, their ends run on the calling thread (mgr__end_handed_here), not on a worker. */
void task_api_handed_back_all(bgt_task *const *ts, const bgt_status *status, size_t n);
/* What the hooks see of t (its task's attempt, even for a subtask); borrowed like t. */
const bgt_hook_info *task_api_hook_info(const bgt_task *t);

#endif

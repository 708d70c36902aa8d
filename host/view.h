/*
 * view.h - what clients are shown of tasks and subtasks: bgtaskctl and the
 * HTTP API present the store's answers through these, so both show one thing
 * the same way, whatever the records in Redis hold.
 */
#ifndef BGT_VIEW_H
#define BGT_VIEW_H

#include <cjson/cJSON.h>

#include "store.h"

/* The most subtasks a host allows (the top of tasks.max_subtasks): a record counting more
 * is corrupted. */
#define VIEW_SUBTASKS_MAX 1000000

/*
 * Make a task record (store_get_task's answer, or one element of
 * store_list_tasks') what clients are shown, in place: `error` is the
 * failure's and is kept only when the task's state is FAILURE; otherwise it
 * is null (what an attempt that asked to be retried left there says nothing
 * about a task that then succeeded or was cancelled).
 */
void view_task(cJSON *rec);
/* view_task on every record of an array. */
void view_tasks(cJSON *recs);

/*
 * Whether a live host of hosts (store_list_hosts' answer, borrowed) serves
 * handler: hosts lists only those whose entry has not run out.
 */
bool view_served(const cJSON *hosts, const char *handler);
/* What a task of handler is told when no live host serves it (malloc'd): it waits until
 * one that does is started. */
char *view_unserved_warning(const char *handler);
/*
 * For an unfinished task (rec, as view_task takes it) whose handler no live
 * host of hosts serves, add "warning": view_unserved_warning. A finished task,
 * or one a live host can run, is left as it is.
 */
void view_task_hosts(cJSON *rec, const cJSON *hosts);

/*
 * The handlers clients are shown (bgtaskctl handlers, GET /v1/handlers), made
 * of store_list_hosts', store_stats' and store_history's answers (borrowed;
 * last_hour: one bucket, may be NULL): {"handlers": [{"handler", "hosts":
 * [ids], "workers", "paused", "paused_ms", "reason", "queued", "due",
 * "oldest_due_age_ms", "unserved", "last_hour": {outcome: n}}], "unserved":
 * [names]}, by name. Every handler a live host serves (workers: the sum of
 * those hosts' workers, which they share with their other handlers), every
 * paused one, and every other one that has tasks in its queue: its "hosts" is
 * empty, as no live host serves it, and unless it is paused it is "unserved"
 * (true, and named in the top-level list). Caller owns the answer.
 */
cJSON *view_handlers(const cJSON *hosts, const cJSON *stats, const cJSON *last_hour);
/*
 * Add to stats (store_stats' answer, changed in place) "unserved": the names
 * of its handlers with tasks queued, not paused, that no live host of hosts serves, and
 * "outcomes": {outcome: n} summed from hist (store_history's answer in one
 * bucket; NULL: null, the history is off) with "outcomes_since_ms" (its start).
 */
void view_stats(cJSON *stats, const cJSON *hosts, const cJSON *hist);
/*
 * Give each entry of stats' "handlers" (store_stats' answer, changed in place)
 * that has tasks queued "unserved": those tasks when no live host of hosts
 * serves it, else 0 (for the bgtask_unserved_handler gauge).
 */
void view_mark_unserved(cJSON *stats, const cJSON *hosts);

/*
 * What a submission answers (bgtaskctl submit --json, POST /v1/tasks):
 * {"task_id"}, with "durable": false when not_durable (the store's text saying
 * how many replicas confirmed it) is not NULL, and a "warning" joining that
 * text and the unserved warning when unserved (the handler's name) is not
 * NULL. Caller owns it.
 */
cJSON *view_submitted(const char *id, const char *not_durable, const char *unserved);

/*
 * What a cancel did (store_cancel's answer rc >= 0, with its state_out), as
 * bgtaskctl cancel --json and DELETE /v1/tasks/<id> answer: {"task_id",
 * "outcome": "cancelled" (it had not started: CANCELLED now),
 * "cancel_requested" (its host was told to stop it: "owner" names the host)
 * or "already_finished", "state"}. Caller owns it.
 */
cJSON *view_cancel(const char *id, int rc, const char *state_out);
/* What a retry did, as bgtaskctl retry --json and POST /v1/tasks/<id>/retry answer:
 * {"task_id", "kind" ("single" or "parallel"), "state": "ONGOING", "retrying": n (1 for a
 * single task, the subtasks run again for a parallel one)}. Caller owns it. */
cJSON *view_retry(const char *id, bool parallel, int n);

/* What a pause or resume did, as bgtaskctl pause/resume --json and POST
 * /v1/handlers/<name>/pause|resume answer: {"handler", "paused", "paused_ms",
 * "reason", "changed"}. Caller owns it. */
cJSON *view_pause(const char *handler, const pause_state *p);

/* The record's count of subtasks: 0..VIEW_SUBTASKS_MAX, or -1 when the record counts more
 * (it is corrupted). */
int view_subtask_count(const cJSON *rec);

/* The state named by s (any case) among PENDING, SUCCESS, FAILURE and CANCELLED, as that
 * constant, or NULL when it names none. */
const char *view_subtask_state(const char *s);
/*
 * A page of the n subtasks of task id (store_load_subtasks' answer, borrowed),
 * as GET /v1/tasks/<id>/subtasks answers and bgtaskctl status --subtasks
 * shows: {"task_id", "total": n, "counts": {state: count}, "offset",
 * "matched", "count", "subtasks": [view_subtask...]}, the subtasks in state
 * (NULL: any; a view_subtask_state constant) from the offset-th of those on,
 * at most limit (<= 0: all). Caller owns it.
 */
cJSON *view_subtask_page(const char *id, const sub_rec *subs, int n, const char *state,
                         long offset, long limit);

/* One subtask, index i, as {"index", "state", "attempt", "message", "args", "result"}:
 * message null when empty; args and result JSON values (null when none). Caller owns it. */
cJSON *view_subtask(const sub_rec *s, int i);

#endif

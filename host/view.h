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

/* The record's count of subtasks: 0..VIEW_SUBTASKS_MAX, or -1 when the record counts more
 * (it is corrupted). */
int view_subtask_count(const cJSON *rec);

/* One subtask, index i, as {"index", "state", "attempt", "message", "args", "result"}:
 * message null when empty; args and result JSON values (null when none). Caller owns it. */
cJSON *view_subtask(const sub_rec *s, int i);

#endif

/*
 * ops_read.h - what operators read, composed of store calls and the view the
 * same way for bgtaskctl and the HTTP API: the handlers (with the unserved
 * ones and the last hour), the queue figures with outcomes, and the history.
 * Query text (since, until, step) is checked here, so both refuse bad input
 * with the same words.
 */
#ifndef BGT_OPS_READ_H
#define BGT_OPS_READ_H

#include <cjson/cJSON.h>

#include "config.h"
#include "store.h"

/* Buckets of one history answer, at most. */
#define HISTORY_MAX_BUCKETS 1440

/*
 * GET /v1/handlers, bgtaskctl handlers: view_handlers of the live hosts, the
 * queues and the last hour's history. With only (a name): that handler's
 * entry alone, or -ENOENT (store_errstr: "no handler 'x': ..."); -EINVAL for a
 * bad name. Caller owns *out.
 */
int ops_handlers(store *st, const char *only, cJSON **out);
/*
 * GET /v1/stats, bgtaskctl stats: store_stats with view_stats' "unserved" and
 * "outcomes", the tasks that ended within the time finished tasks are kept
 * (cfg's tasks.retention, at most its history.window; null when the history is
 * off). Caller owns *out.
 */
int ops_stats(store *st, const bgt_config *cfg, cJSON **out);
/*
 * GET /v1/history, bgtaskctl history: handler (NULL: all), since (default
 * 24h ago), until (default now) and step (default 1m for a range up to 6 h,
 * else 1h) as given; see store_history for the answer. -EINVAL with
 * store_errstr naming the argument and what was expected, nothing read.
 * Caller owns *out.
 */
int ops_history(store *st, const char *handler, const char *since, const char *until,
                const char *step, cJSON **out);

/* The largest `limit` of a page of tasks. */
#define LIST_PAGE_MAX 1000

/*
 * GET /v1/tasks, bgtaskctl list: a page of tasks newest first, as
 * {"count", "tasks": [records], "next_cursor": text | null}. state, handler,
 * since and until (a time as ops_history takes it: on finished_ms for
 * finished tasks, created_ms for the others; since inclusive, until
 * exclusive) filter; limit 1..LIST_PAGE_MAX (0: 20); cursor (NULL: the first
 * page) is a next_cursor of an earlier page with the same filters. -EINVAL
 * with store_errstr naming the argument. Caller owns *out.
 */
int ops_list(store *st, const char *state, const char *handler, const char *since,
             const char *until, long limit, const char *cursor, cJSON **out);

#endif

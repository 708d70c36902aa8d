/*
 * manager.h - runs tasks: claims what this host has handlers for (as many as
 * it has free workers), runs them on a fixed pool of worker threads, renews
 * their leases with one heartbeat per interval, writes progress (throttled)
 * and outcomes (batched) through one writer, listens for cancel requests, and
 * drains on shutdown.
 *
 * Threads: one dispatcher (claims; blocks on the wake lists when idle), N
 * workers, one writer (every Redis write: progress, outcomes, heartbeats),
 * one control listener (P:ctl:<host>). Each has its own store connection.
 */
#ifndef BGT_MANAGER_H
#define BGT_MANAGER_H

#include <stdbool.h>

#include "bgtask.h"
#include "config.h"
#include "metrics.h"
#include "registry.h"
#include "store.h"

typedef struct manager manager;

/*
 * A manager for host_id with cfg's settings, serving the handlers in reg.
 * cfg, reg and met are borrowed and must outlive the manager. addr is copied.
 */
manager *manager_new(const bgt_config *cfg, const redis_addr *addr, registry *reg, metrics *met,
                     const char *host_id);
/* Start the threads. Returns 0 or a negative errno. */
int manager_start(manager *m);
/* The registry changed (SIGHUP loaded plugins): serve the new handlers. */
void manager_handlers_changed(manager *m);
/*
 * Begin a graceful shutdown: stop claiming, let running attempts end within
 * the shutdown grace, then release the rest. now = true releases at once
 * (a second SIGTERM).
 */
void manager_stop(manager *m, bool now);
/* True once the manager has drained and left P:hosts. */
bool manager_done(manager *m);
/*
 * Wait for the threads and free everything. Returns true when it had to leave
 * worker threads behind, still inside handlers that ignored the stop request
 * (their attempts were released): the caller must then exit without unloading
 * the plugins those threads are running.
 */
bool manager_free(manager *m);

/* The bgt_api entries for running tasks (used to build the host table). */
const char *task_api_id(const bgt_task *t);
const char *task_api_handler(const bgt_task *t);
uint32_t task_api_attempt(const bgt_task *t);
int task_api_subtask(const bgt_task *t);
void task_api_progress(bgt_task *t, double current, double total, const char *message);
void task_api_last_progress(const bgt_task *t, double *current, double *total);
bool task_api_cancelled(const bgt_task *t);
int task_api_set_result(bgt_task *t, const cJSON *result);
void task_api_set_error(bgt_task *t, const char *fmt, va_list ap);
void task_api_log(bgt_task *t, int level, const char *fmt, va_list ap);
int task_api_add_subtask(bgt_task *t, const cJSON *args);

#endif

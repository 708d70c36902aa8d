/*
 * manager.h - runs tasks: claims what this host has handlers for (as many as
 * it has free workers), runs them on a fixed pool of worker threads, renews
 * their leases with one heartbeat per interval, writes progress (throttled)
 * and outcomes (batched) through one writer, listens for cancel requests, and
 * drains on shutdown.
 *
 * Threads (each named, as top -H and the thread check of the tests see them):
 *   bgt-dispatch   claims attempts into the run queue; blocks on the wake
 *                  lists when idle
 *   bgt-worker-N   runs every job: handlers, splits, merges, every plugin
 *                  hook, and the conclusion of each attempt (plugin code runs
 *                  on these threads only)
 *   bgt-writer     every Redis write for the attempts (outcomes, progress,
 *                  heartbeats), in batches; reports back what it learned
 *   bgt-manager    decides by the host's own clock: leases, timeouts,
 *                  retries that fall due, parallel tasks to conclude, the
 *                  shutdown; frees attempts once written
 *   bgt-control    listens for cancel requests
 * manager_int.h says who owns what and how they share it.
 */
#ifndef BGT_MANAGER_H
#define BGT_MANAGER_H

#include <stdbool.h>

#include "config.h"
#include "metrics.h"
#include "registry.h"
#include "store.h"

typedef struct manager manager;

/*
 * A manager for host_id with cfg's settings, serving the handlers in reg.
 * cfg, reg and met are borrowed and must outlive the manager. addr is copied.
 */
manager *mgr_new(const bgt_config *cfg, const redis_addr *addr, registry *reg, metrics *met,
                 const char *host_id);
/* Start the threads. Returns 0 or a negative errno. */
int mgr_start(manager *m);
/* The registry changed (SIGHUP loaded plugins): serve the new handlers. */
void mgr_handlers_changed(manager *m);
/*
 * Begin a graceful shutdown: stop claiming, let running attempts end within
 * the shutdown grace, then release the rest. now = true releases at once
 * (a second SIGTERM).
 */
void mgr_stop(manager *m, bool now);
/* True once the manager has drained and left P:hosts. */
bool mgr_done(manager *m);
/*
 * Wait for the threads and free everything. Returns true when it had to leave
 * worker threads behind, still inside handlers that ignored the stop request
 * (their attempts were released): the caller must then exit without unloading
 * the plugins those threads are running.
 */
bool mgr_free(manager *m);

#endif

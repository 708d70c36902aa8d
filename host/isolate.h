/*
 * isolate.h - process isolation: plugins loaded with isolation = "process"
 * never run in the host. The host starts worker processes for such a plugin
 * (`bgtaskd --worker`, see worker_main.h), learns from the first one which
 * handlers the plugin registers, and registers a proxy for each in its own
 * registry. A proxy runs on a host worker thread like any handler: it hands
 * the call (run, split or merge) to a free worker process of the plugin and
 * serves what comes back (progress, logs, submissions, subtasks, the outcome)
 * through the host's own task API, so leases, fencing and every Redis write
 * stay in the host and are the same as in thread mode.
 *
 * A worker may have several calls in flight: it runs them one at a time, and
 * a call goes to a worker that answers quickly or to an idle one (isolate.c).
 * Host and worker share a page of memory that says which call the worker
 * started, lets the host take back one it has not, and carries the plain ends
 * of calls (ipc.h). A worker that dies during a call ends that attempt (RETRY,
 * which counts an attempt, or FAILURE for a not-retriable handler) with the
 * signal and any crash note it sent; the calls queued behind it had not
 * started and go to another worker. A call told to stop (cancel, timeout,
 * lost lease, shutdown) is taken back if it has not started, else forwarded
 * to the worker, which is killed kill_grace later if it has not answered.
 * Workers are respawned with a backoff, replaced after max_tasks_per_process
 * calls or when left above max_rss, and a crash breaker pauses claims of the
 * plugin's handlers after breaker_deaths deaths within breaker_window.
 *
 * Threads: a supervisor thread starts and replaces workers, retires those due
 * for replacement and closes breakers; the io thread (iso_io.c) reads every
 * worker's socket and watches stop flags; proxies run on the manager's
 * workers, and a single attempt's run is handed off (it holds no thread).
 */
#ifndef BGT_ISOLATE_H
#define BGT_ISOLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "metrics.h"
#include "registry.h"

typedef struct iso_host iso_host;

/* The isolated plugins of one host. cfg, reg and met are borrowed and must outlive it. */
iso_host *iso_host_new(const bgt_config *cfg, registry *reg, metrics *met);

/*
 * Load the plugin of pc (pc->iso.mode must be ISOLATION_PROCESS): start its
 * first worker, which loads it with the host's loader and runs its init, and
 * register a proxy for every handler it reports. Returns 0, or a negative
 * errno with err saying why ("<file>: init failed (returned -22)", "worker
 * died during init: signal 11 (SIGSEGV)", a duplicate handler name); nothing
 * stays registered and no worker stays running.
 */
int iso_load(iso_host *h, const plugin_conf *pc, char *err, size_t errlen);

/* True if a plugin of this file (resolved path) or this name is loaded isolated. */
bool iso_loaded(iso_host *h, const char *path, const char *name);

/* Call fn(arg) from the supervisor when a breaker pauses or resumes handlers. */
void iso_set_notify(iso_host *h, void (*fn)(void *), void *arg);

/* Start the supervisor thread. 0 or a negative errno. */
int iso_start(iso_host *h);

/*
 * Stop every worker (asked to exit, killed after kill_grace), remove the
 * proxies from the registry and free h (NULL is fine). No proxy may be
 * running: free the manager first.
 */
void iso_host_free(iso_host *h);

#endif

/*
 * metrics.h - the host's counters, gauges and histograms, kept in memory and
 * rendered in the Prometheus text format. Fed by the built-in metrics hook
 * and by the manager; thread-safe.
 */
#ifndef BGT_METRICS_H
#define BGT_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "bgtask.h"

typedef struct metrics metrics;

/* Counters that are not per handler. */
typedef enum metric_counter {
    MC_CLAIMS,             /* attempts claimed */
    MC_LOST,               /* attempts whose lease was lost */
    MC_RETRIES,            /* attempts that asked to run again */
    MC_RELEASES,           /* attempts given back at shutdown */
    MC_REDIS_ERRORS,       /* Redis calls that failed */
    MC_PROGRESS_WRITES,    /* progress updates written */
    MC_PROGRESS_COALESCED, /* progress updates replaced by a later one before being written */
    MC_FENCED,             /* writes refused by fencing */
    MC_SSE_EVENTS,         /* events queued to SSE streams (one per stream it went to) */
    MC_SSE_DROPPED,        /* SSE streams dropped for falling behind past http.sse_max_queued */
    MC_COUNT
} metric_counter;

/* Gauges that are not per handler. */
typedef enum metric_gauge {
    MG_SSE_CLIENTS,        /* open SSE streams */
    MG_SSE_QUEUED,         /* bytes queued for all SSE streams (shared events counted once) */
    MG_STUCK_WORKERS,      /* worker threads inside handlers that ignored their timeout */
    MG_COUNT
} metric_gauge;

/* The host's work with Redis that /healthz reports on. */
typedef enum metric_health {
    MH_CLAIM,     /* claims */
    MH_HEARTBEAT, /* heartbeats */
    MH_COUNT
} metric_health;

metrics *metrics_new(void);
void metrics_free(metrics *m);

void metrics_inc(metrics *m, metric_counter c, long n);
/* Set a gauge. */
void metrics_set(metrics *m, metric_gauge g, long v);
/* A gauge's value. */
long metrics_gauge(metrics *m, metric_gauge g);
/* Make handler's series exist (at zero) before its first attempt, so a
 * dashboard sees every handler the host serves. */
void metrics_declare(metrics *m, const char *handler);
/* An attempt of handler started (running gauge +1). */
void metrics_started(metrics *m, const char *handler);
/* An attempt ended with status ("success", "failure", "cancelled", "retry",
 * "released", "lost") after duration_s (running gauge -1). */
void metrics_ended(metrics *m, const char *handler, const char *status, double duration_s);

/*
 * Bound the handlers of store_stats' answer (stats: its "handlers" array is
 * changed in place) to the ones this host serves (declared or run) plus at
 * most max others, the deepest queues first; the rest are summed into one
 * entry "other" (queued, due and unserved added up, the largest oldest_due_age_ms), so
 * the series a scrape exports do not grow with the handler names clients
 * submit to. A handler named "other" that this host does not serve is summed
 * there too.
 */
void metrics_cap_handlers(metrics *m, cJSON *stats, int max);

/* What happens to the worker processes of isolated plugins, per plugin. */
typedef enum iso_event {
    MI_SPAWN,          /* a worker started (its plugin's init succeeded) */
    MI_DEATH_SIGNAL,   /* a worker died of a signal */
    MI_DEATH_OOM,      /* a worker ran out of memory */
    MI_DEATH_EXIT,     /* a worker exited on its own during a call */
    MI_DEATH_PROTOCOL, /* a worker was killed for a malformed or unexpected frame */
    MI_DEATH_INIT,     /* a worker failed or died while starting */
    MI_KILL,           /* a worker was killed kill_grace after a stop request it ignored */
    MI_RECYCLE_TASKS,  /* a worker was replaced after max_tasks_per_process calls */
    MI_RECYCLE_RSS,    /* a worker was replaced for being left above max_rss */
    MI_COUNT
} iso_event;

/* Make the plugin's isolation series exist (at zero). */
void metrics_iso_declare(metrics *m, const char *plugin);
void metrics_iso_inc(metrics *m, const char *plugin, iso_event e);
/* The plugin's live worker processes. */
void metrics_iso_workers(metrics *m, const char *plugin, long n);
/* The plugin's crash breaker opened (why says so, copied) or closed (why NULL). */
void metrics_iso_breaker(metrics *m, const char *plugin, const char *why);
/* "plugin: why; ..." for every open breaker (malloc'd), or NULL when none is open. */
char *metrics_iso_breakers(metrics *m);
/* The last call of kind h failed (why: its error) or worked (why NULL). */
void metrics_health(metrics *m, metric_health h, const char *why);
/* Whether claims and heartbeats work: false with why saying which fails, since when and
 * why ("claims have failed for 3.2 s: ..."). */
bool metrics_healthy(metrics *m, char *why, size_t n);

/* Render everything in the Prometheus text format into a malloc'd string. */
char *metrics_render(metrics *m);
/*
 * The same, plus what a scrape reads from Redis: stats is store_stats' answer
 * (borrowed), or NULL when Redis did not answer. Adds bgtask_redis_up, the
 * queue depth and due count per handler, the age of the oldest due task per
 * handler (when stats carries a handler's "oldest_due_age_ms"), the tasks
 * waiting for a handler no live host serves (bgtask_unserved_handler, from
 * the entries' "unserved": see view_mark_unserved), and the numbers of
 * finished tasks and live hosts. Returns a malloc'd string.
 */
char *metrics_render_scrape(metrics *m, const cJSON *stats);

#endif

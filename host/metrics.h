/*
 * metrics.h - the host's counters, gauges and histograms, kept in memory and
 * rendered in the Prometheus text format. Fed by the built-in metrics hook
 * and by the manager; thread-safe.
 */
#ifndef BGT_METRICS_H
#define BGT_METRICS_H

#include <stddef.h>

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
    MC_COUNT
} metric_counter;

metrics *metrics_new(void);
void metrics_free(metrics *m);

void metrics_inc(metrics *m, metric_counter c, long n);
/* An attempt of handler started (running gauge +1). */
void metrics_started(metrics *m, const char *handler);
/* An attempt ended with status ("success", "failure", "cancelled", "retry",
 * "released", "lost") after duration_s (running gauge -1). */
void metrics_ended(metrics *m, const char *handler, const char *status, double duration_s);

/* Render everything in the Prometheus text format into a malloc'd string. */
char *metrics_render(metrics *m);

#endif

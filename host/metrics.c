/* metrics.c - in-memory counters rendered in the Prometheus text format. */
#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Buckets of the processing-time histogram, as Backend.AI's, in seconds. */
static const double buckets[] = {0.1, 1, 10, 30, 60, 300, 600};
#define NBUCKETS (sizeof buckets / sizeof buckets[0])

static const char *const statuses[] = {"success", "failure", "cancelled",
                                       "retry",   "released", "lost"};
#define NSTATUS (sizeof statuses / sizeof statuses[0])

typedef struct hmetrics {
    char handler[BGT_NAME_MAX + 1];
    long running;
    long done[NSTATUS];
    long bucket[NBUCKETS]; /* not cumulative; summed when rendered */
    long count;
    double sum;
    struct hmetrics *next;
} hmetrics;

struct metrics {
    pthread_mutex_t lock;
    long counters[MC_COUNT];
    hmetrics *handlers;
};

static const struct {
    const char *name;
    const char *help;
} counter_info[MC_COUNT] = {
    [MC_CLAIMS] = {"bgtask_claims_total", "Attempts claimed by this host."},
    [MC_LOST] = {"bgtask_lost_leases_total", "Attempts whose lease this host lost."},
    [MC_RETRIES] = {"bgtask_retries_total", "Attempts that asked to run again."},
    [MC_RELEASES] = {"bgtask_releases_total", "Attempts given back at shutdown."},
    [MC_REDIS_ERRORS] = {"bgtask_redis_errors_total", "Redis calls that failed."},
    [MC_PROGRESS_WRITES] = {"bgtask_progress_writes_total", "Progress updates written."},
    [MC_PROGRESS_COALESCED] = {"bgtask_progress_coalesced_total",
                               "Progress updates replaced by a later one before being written."},
    [MC_FENCED] = {"bgtask_fenced_writes_total", "Writes refused because the lease was lost."},
};

metrics *metrics_new(void)
{
    metrics *m = xcalloc(1, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void metrics_free(metrics *m)
{
    if (!m)
        return;
    for (hmetrics *h = m->handlers, *next; h; h = next) {
        next = h->next;
        free(h);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

void metrics_inc(metrics *m, metric_counter c, long n)
{
    pthread_mutex_lock(&m->lock);
    m->counters[c] += n;
    pthread_mutex_unlock(&m->lock);
}

/* The entry of a handler, created on first use. Called with the lock held. */
static hmetrics *handler_entry(metrics *m, const char *handler)
{
    hmetrics **pp = &m->handlers;
    for (; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->handler, handler) == 0)
            return *pp;
    *pp = xcalloc(1, sizeof **pp);
    strlcpy_((*pp)->handler, handler, sizeof (*pp)->handler);
    return *pp;
}

void metrics_started(metrics *m, const char *handler)
{
    pthread_mutex_lock(&m->lock);
    handler_entry(m, handler)->running++;
    pthread_mutex_unlock(&m->lock);
}

void metrics_ended(metrics *m, const char *handler, const char *status, double duration_s)
{
    pthread_mutex_lock(&m->lock);
    hmetrics *h = handler_entry(m, handler);
    h->running--;
    for (size_t i = 0; i < NSTATUS; i++)
        if (strcmp(status, statuses[i]) == 0)
            h->done[i]++;
    size_t b = 0;
    while (b < NBUCKETS && duration_s > buckets[b])
        b++;
    if (b < NBUCKETS)
        h->bucket[b]++;
    h->count++;
    h->sum += duration_s;
    pthread_mutex_unlock(&m->lock);
}

/* A growing text buffer. */
typedef struct text {
    char *s;
    size_t len, cap;
} text;

__attribute__((format(printf, 2, 3))) static void put(text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        t->cap = t->cap * 2 + (size_t)(n > 0 ? n : 0) + 256;
        t->s = xrealloc(t->s, t->cap);
    }
}

char *metrics_render(metrics *m)
{
    text t = {xmalloc(4096), 0, 4096};
    t.s[0] = '\0';
    pthread_mutex_lock(&m->lock);
    put(&t, "# HELP bgtask_running Attempts running now, per handler.\n"
            "# TYPE bgtask_running gauge\n");
    for (hmetrics *h = m->handlers; h; h = h->next)
        put(&t, "bgtask_running{handler=\"%s\"} %ld\n", h->handler, h->running);
    put(&t, "# HELP bgtask_done_total Attempts ended, per handler and status.\n"
            "# TYPE bgtask_done_total counter\n");
    for (hmetrics *h = m->handlers; h; h = h->next)
        for (size_t i = 0; i < NSTATUS; i++)
            put(&t, "bgtask_done_total{handler=\"%s\",status=\"%s\"} %ld\n", h->handler,
                statuses[i], h->done[i]);
    put(&t, "# HELP bgtask_processing_seconds Time attempts ran, per handler.\n"
            "# TYPE bgtask_processing_seconds histogram\n");
    for (hmetrics *h = m->handlers; h; h = h->next) {
        long cum = 0;
        for (size_t b = 0; b < NBUCKETS; b++) {
            cum += h->bucket[b];
            put(&t, "bgtask_processing_seconds_bucket{handler=\"%s\",le=\"%g\"} %ld\n",
                h->handler, buckets[b], cum);
        }
        put(&t, "bgtask_processing_seconds_bucket{handler=\"%s\",le=\"+Inf\"} %ld\n", h->handler,
            h->count);
        put(&t, "bgtask_processing_seconds_sum{handler=\"%s\"} %.6f\n", h->handler, h->sum);
        put(&t, "bgtask_processing_seconds_count{handler=\"%s\"} %ld\n", h->handler, h->count);
    }
    for (int c = 0; c < MC_COUNT; c++)
        put(&t, "# HELP %s %s\n# TYPE %s counter\n%s %ld\n", counter_info[c].name,
            counter_info[c].help, counter_info[c].name, counter_info[c].name, m->counters[c]);
    pthread_mutex_unlock(&m->lock);
    return t.s;
}

/* metrics.c - in-memory counters rendered in the Prometheus text format. */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Buckets of the processing-time histogram, as Backend.AI's, in seconds. */
static const double buckets[] = {0.1, 1, 10, 30, 60, 300, 600};
#define NBUCKETS (sizeof buckets / sizeof buckets[0])

static const char *const statuses[] = {"success", "partial_success", "failure", "cancelled",
                                       "retry",   "released",        "lost"};
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

/* The worker processes of one isolated plugin. */
typedef struct imetrics {
    char plugin[BGT_NAME_MAX + 1];
    long events[MI_COUNT];
    long workers;
    char *breaker; /* why its breaker is open, or NULL */
    struct imetrics *next;
} imetrics;

struct metrics {
    pthread_mutex_t lock;
    double failing_since[MH_COUNT]; /* mono time of the first failure in a row, 0 = works */
    char failing_why[MH_COUNT][256];
    long counters[MC_COUNT];
    long gauges[MG_COUNT];
    hmetrics *handlers;
    imetrics *isolated;
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
    [MC_SSE_EVENTS] = {"bgtask_sse_events_sent_total",
                       "Events queued to SSE streams, counted once per stream."},
    [MC_SSE_DROPPED] = {"bgtask_sse_dropped_total",
                        "SSE streams ended for falling furthest behind past http.sse_max_queued."},
};

static const struct {
    const char *name;
    const char *help;
} gauge_info[MG_COUNT] = {
    [MG_SSE_CLIENTS] = {"bgtask_sse_clients", "Open SSE event streams."},
    [MG_SSE_QUEUED] = {"bgtask_sse_queued_bytes",
                       "Bytes queued for all SSE streams, each shared event counted once."},
    [MG_STUCK_WORKERS] = {"bgtask_stuck_workers",
                          "Worker threads inside handlers that ignored their timeout past "
                          "tasks.kill_grace (written off: they take no more jobs)."},
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
    for (imetrics *i = m->isolated, *next; i; i = next) {
        next = i->next;
        free(i->breaker);
        free(i);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

void metrics_health(metrics *m, metric_health h, const char *why)
{
    pthread_mutex_lock(&m->lock);
    if (!why) {
        m->failing_since[h] = 0;
    } else {
        if (m->failing_since[h] == 0)
            m->failing_since[h] = mono_s();
        snprintf(m->failing_why[h], sizeof m->failing_why[h], "%s", why);
    }
    pthread_mutex_unlock(&m->lock);
}

bool metrics_healthy(metrics *m, char *why, size_t n)
{
    static const char *const what[MH_COUNT] = {
        [MH_CLAIM] = "claims", [MH_HEARTBEAT] = "heartbeats"};
    bool ok = true;
    pthread_mutex_lock(&m->lock);
    for (int h = 0; h < MH_COUNT && ok; h++)
        if (m->failing_since[h] > 0) {
            snprintf(why, n, "%s have failed for %.1f s: %s", what[h],
                     mono_s() - m->failing_since[h], m->failing_why[h]);
            ok = false;
        }
    pthread_mutex_unlock(&m->lock);
    return ok;
}

void metrics_inc(metrics *m, metric_counter c, long n)
{
    pthread_mutex_lock(&m->lock);
    m->counters[c] += n;
    pthread_mutex_unlock(&m->lock);
}

long metrics_gauge(metrics *m, metric_gauge g)
{
    pthread_mutex_lock(&m->lock);
    long v = m->gauges[g];
    pthread_mutex_unlock(&m->lock);
    return v;
}

void metrics_set(metrics *m, metric_gauge g, long v)
{
    pthread_mutex_lock(&m->lock);
    m->gauges[g] = v;
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

void metrics_declare(metrics *m, const char *handler)
{
    pthread_mutex_lock(&m->lock);
    handler_entry(m, handler);
    pthread_mutex_unlock(&m->lock);
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

/* The entry of an isolated plugin, created on first use. Called with the lock held. */
static imetrics *iso_entry(metrics *m, const char *plugin)
{
    imetrics **pp = &m->isolated;
    for (; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->plugin, plugin) == 0)
            return *pp;
    *pp = xcalloc(1, sizeof **pp);
    strlcpy_((*pp)->plugin, plugin, sizeof (*pp)->plugin);
    return *pp;
}

void metrics_iso_declare(metrics *m, const char *plugin)
{
    pthread_mutex_lock(&m->lock);
    iso_entry(m, plugin);
    pthread_mutex_unlock(&m->lock);
}

void metrics_iso_inc(metrics *m, const char *plugin, iso_event e)
{
    pthread_mutex_lock(&m->lock);
    iso_entry(m, plugin)->events[e]++;
    pthread_mutex_unlock(&m->lock);
}

void metrics_iso_workers(metrics *m, const char *plugin, long n)
{
    pthread_mutex_lock(&m->lock);
    iso_entry(m, plugin)->workers = n;
    pthread_mutex_unlock(&m->lock);
}

void metrics_iso_breaker(metrics *m, const char *plugin, const char *why)
{
    char *copy = why ? xstrdup(why) : NULL;
    pthread_mutex_lock(&m->lock);
    imetrics *i = iso_entry(m, plugin);
    free(i->breaker);
    i->breaker = copy;
    pthread_mutex_unlock(&m->lock);
}

char *metrics_iso_breakers(metrics *m)
{
    char *out = NULL;
    pthread_mutex_lock(&m->lock);
    for (imetrics *i = m->isolated; i; i = i->next)
        if (i->breaker) {
            char *next = xasprintf("%s%s%s: %s", out ? out : "", out ? "; " : "", i->plugin,
                                   i->breaker);
            free(out);
            out = next;
        }
    pthread_mutex_unlock(&m->lock);
    return out;
}

/* Whether this host has series for handler (lock held). */
static bool handler_known(const metrics *m, const char *handler)
{
    for (const hmetrics *h = m->handlers; h; h = h->next)
        if (strcmp(h->handler, handler) == 0)
            return true;
    return false;
}

/* One entry of store_stats' "handlers" array, for ranking. */
typedef struct qentry {
    cJSON *item;
    const char *name;
    double queued;
} qentry;

/* Deepest queue first; equal depths by name, so the choice is stable. */
static int cmp_depth(const void *a, const void *b)
{
    const qentry *x = a, *y = b;
    if (x->queued != y->queued)
        return x->queued < y->queued ? 1 : -1;
    return strcmp(x->name, y->name);
}

static double entry_num(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *entry_name(const cJSON *o)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "handler");
    return cJSON_IsString(v) ? v->valuestring : "";
}

void metrics_cap_handlers(metrics *m, cJSON *stats, int max)
{
    cJSON *hs = cJSON_GetObjectItemCaseSensitive(stats, "handlers");
    int n = cJSON_GetArraySize(hs);
    if (!cJSON_IsArray(hs) || n <= max)
        return;
    qentry *others = xcalloc((size_t)n, sizeof *others);
    size_t nothers = 0;
    cJSON *own = NULL; /* this host's handler named "other", if it has one */
    /* Take every entry out; this host's own go straight back. */
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < n; i++) {
        cJSON *it = cJSON_DetachItemFromArray(hs, 0);
        const char *name = entry_name(it);
        if (handler_known(m, name)) {
            cJSON_AddItemToArray(hs, it);
            if (strcmp(name, "other") == 0)
                own = it;
        } else if (strcmp(name, "other") == 0) {
            others[nothers++] = (qentry){it, name, INFINITY}; /* never kept on its own */
        } else {
            others[nothers++] = (qentry){it, name, entry_num(it, "queued")};
        }
    }
    pthread_mutex_unlock(&m->lock);
    qsort(others, nothers, sizeof *others, cmp_depth);
    /* The "other" handler sorts first (INFINITY): skip it when keeping. */
    size_t first = nothers && isinf(others[0].queued) ? 1 : 0, kept = 0;
    double queued = 0, due = 0, oldest = 0, unserved = 0;
    bool summed = false;
    for (size_t i = 0; i < nothers; i++) {
        if (i >= first && kept < (size_t)max) {
            cJSON_AddItemToArray(hs, others[i].item);
            kept++;
            continue;
        }
        queued += entry_num(others[i].item, "queued");
        due += entry_num(others[i].item, "due");
        oldest = fmax(oldest, entry_num(others[i].item, "oldest_due_age_ms"));
        unserved += entry_num(others[i].item, "unserved");
        summed = true;
        cJSON_Delete(others[i].item);
    }
    free(others);
    if (!summed)
        return;
    if (own) {
        queued += entry_num(own, "queued");
        due += entry_num(own, "due");
        oldest = fmax(oldest, entry_num(own, "oldest_due_age_ms"));
        unserved += entry_num(own, "unserved");
        cJSON_Delete(cJSON_DetachItemViaPointer(hs, own)); /* the sum below replaces it */
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "handler", "other");
    cJSON_AddNumberToObject(o, "queued", queued);
    cJSON_AddNumberToObject(o, "due", due);
    cJSON_AddNumberToObject(o, "oldest_due_age_ms", oldest);
    cJSON_AddNumberToObject(o, "unserved", unserved);
    cJSON_AddItemToArray(hs, o);
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

/* A label value with \, " and line feeds escaped, as the text format wants. */
static void put_label(text *t, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            put(t, "\\%c", *v);
        else if (*v == '\n')
            put(t, "\\n");
        else
            put(t, "%c", *v);
    }
}

/* A number of store_stats (a true or false counts 1 or 0). */
static double stat_num(const cJSON *o, const char *f, bool *found)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f);
    if (found)
        *found = cJSON_IsNumber(v) || cJSON_IsBool(v);
    return cJSON_IsNumber(v) ? v->valuedouble : cJSON_IsTrue(v) ? 1 : 0;
}

/* The entry of handler in store_stats' "handlers" array, or NULL. */
static const cJSON *stats_handler(const cJSON *handlers, const char *name)
{
    const cJSON *h;
    cJSON_ArrayForEach(h, handlers) {
        const cJSON *hn = cJSON_GetObjectItemCaseSensitive(h, "handler");
        if (cJSON_IsString(hn) && strcmp(hn->valuestring, name) == 0)
            return h;
    }
    return NULL;
}

/*
 * One per-handler gauge family from the "handlers" array of store_stats: its
 * entries that carry field, and, with zero_known, a 0 for each handler this
 * host knows that has no entry (its queue is empty, so Redis has no key).
 */
static void put_queue_gauge(text *t, const metrics *m, const cJSON *handlers, const char *name,
                            const char *help, const char *field, double scale, bool zero_known)
{
    put(t, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
    const cJSON *h;
    cJSON_ArrayForEach(h, handlers) {
        bool found;
        double v = stat_num(h, field, &found);
        const cJSON *hn = cJSON_GetObjectItemCaseSensitive(h, "handler");
        if (!found || !cJSON_IsString(hn))
            continue;
        put(t, "%s{handler=\"", name);
        put_label(t, hn->valuestring);
        put(t, "\"} %.15g\n", v * scale);
    }
    if (!zero_known)
        return;
    for (const hmetrics *hm = m->handlers; hm; hm = hm->next)
        if (!stats_handler(handlers, hm->handler))
            put(t, "%s{handler=\"%s\"} 0\n", name, hm->handler);
}

/* What a scrape read from Redis (stats may be NULL: Redis did not answer).
 * Called with the lock held. */
static void render_redis(text *t, const metrics *m, const cJSON *stats)
{
    put(t, "# HELP bgtask_redis_up Whether Redis answered this scrape.\n"
           "# TYPE bgtask_redis_up gauge\nbgtask_redis_up %d\n",
        stats ? 1 : 0);
    if (!stats)
        return;
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(stats, "handlers");
    put_queue_gauge(t, m, hs, "bgtask_queue_depth",
                    "Tasks waiting in the queue, per handler (delayed ones included).", "queued", 1,
                    true);
    put_queue_gauge(t, m, hs, "bgtask_queue_due", "Tasks due now and not claimed, per handler.",
                    "due", 1, true);
    put_queue_gauge(t, m, hs, "bgtask_queue_oldest_due_age_seconds",
                    "How long the oldest due task has waited to be claimed, per handler.",
                    "oldest_due_age_ms", 0.001, false);
    put_queue_gauge(t, m, hs, "bgtask_unserved_handler",
                    "Unfinished tasks of a handler that no live host serves, per handler: they "
                    "wait until a host with the handler starts.",
                    "unserved", 1, false);
    put_queue_gauge(t, m, hs, "bgtask_handler_paused",
                    "1 while an operator has paused the handler (no host claims its tasks).",
                    "paused", 1, true);
    bool found;
    double v = stat_num(stats, "finished", &found);
    if (found)
        put(t, "# HELP bgtask_tasks_finished Finished tasks still kept (within retention).\n"
               "# TYPE bgtask_tasks_finished gauge\nbgtask_tasks_finished %.15g\n",
            v);
    v = stat_num(stats, "hosts", &found);
    if (found)
        put(t, "# HELP bgtask_hosts Live hosts sharing this Redis.\n"
               "# TYPE bgtask_hosts gauge\nbgtask_hosts %.15g\n",
            v);
}

/* The isolated plugins' worker processes. Called with the lock held. */
static void render_isolated(text *t, const metrics *m)
{
    if (!m->isolated)
        return;
    static const struct {
        const char *name, *help, *label;
        iso_event ev;
    } rows[] = {
        {"bgtask_isolated_spawns_total", "Worker processes started, per isolated plugin.", NULL,
         MI_SPAWN},
        {"bgtask_isolated_deaths_total",
         "Worker processes that died or were killed for breaking the protocol, per isolated "
         "plugin and cause.",
         "cause=\"signal\"", MI_DEATH_SIGNAL},
        {NULL, NULL, "cause=\"oom\"", MI_DEATH_OOM},
        {NULL, NULL, "cause=\"exit\"", MI_DEATH_EXIT},
        {NULL, NULL, "cause=\"protocol\"", MI_DEATH_PROTOCOL},
        {NULL, NULL, "cause=\"init\"", MI_DEATH_INIT},
        {"bgtask_isolated_kills_total",
         "Worker processes killed kill_grace after a stop request they ignored, per isolated "
         "plugin.",
         NULL, MI_KILL},
        {"bgtask_isolated_recycles_total",
         "Worker processes replaced, per isolated plugin and reason.", "reason=\"max_tasks\"",
         MI_RECYCLE_TASKS},
        {NULL, NULL, "reason=\"max_rss\"", MI_RECYCLE_RSS},
    };
    put(t, "# HELP bgtask_isolated_workers Live worker processes, per isolated plugin.\n"
           "# TYPE bgtask_isolated_workers gauge\n");
    for (const imetrics *i = m->isolated; i; i = i->next)
        put(t, "bgtask_isolated_workers{plugin=\"%s\"} %ld\n", i->plugin, i->workers);
    put(t, "# HELP bgtask_isolated_breaker_open Whether the crash breaker of an isolated plugin "
           "is open (its handlers are not claimed).\n"
           "# TYPE bgtask_isolated_breaker_open gauge\n");
    for (const imetrics *i = m->isolated; i; i = i->next)
        put(t, "bgtask_isolated_breaker_open{plugin=\"%s\"} %d\n", i->plugin,
            i->breaker != NULL);
    const char *family = NULL;
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        if (rows[r].name) {
            family = rows[r].name;
            put(t, "# HELP %s %s\n# TYPE %s counter\n", family, rows[r].help, family);
        }
        for (const imetrics *i = m->isolated; i; i = i->next)
            put(t, "%s{plugin=\"%s\"%s%s} %ld\n", family, i->plugin, rows[r].label ? "," : "",
                rows[r].label ? rows[r].label : "", i->events[rows[r].ev]);
    }
}

static char *render(metrics *m, bool scrape, const cJSON *stats)
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
    for (int g = 0; g < MG_COUNT; g++)
        put(&t, "# HELP %s %s\n# TYPE %s gauge\n%s %ld\n", gauge_info[g].name,
            gauge_info[g].help, gauge_info[g].name, gauge_info[g].name, m->gauges[g]);
    render_isolated(&t, m);
    if (scrape)
        render_redis(&t, m, stats);
    pthread_mutex_unlock(&m->lock);
    return t.s;
}

char *metrics_render(metrics *m) { return render(m, false, NULL); }

char *metrics_render_scrape(metrics *m, const cJSON *stats) { return render(m, true, stats); }

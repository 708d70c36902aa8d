/* ops_read.c - what operators read, for bgtaskctl and the HTTP API alike (see ops_read.h). */
#include "ops_read.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "view.h"

#define MINUTE_MS INT64_C(60000)

/* The history of the last hour in one bucket: the minute now is in and the 59 before. */
static int last_hour(store *st, cJSON **out)
{
    int64_t now;
    int rc = store_time_ms(st, &now);
    if (rc < 0)
        return rc;
    int64_t since = (now / MINUTE_MS - 59) * MINUTE_MS;
    return store_history(st, NULL, since, now, 60, out);
}

int ops_handlers(store *st, const char *only, cJSON **out)
{
    *out = NULL;
    if (only && !name_valid(only)) {
        store_set_error(st, "invalid handler name '%.64s': expected [a-z0-9][a-z0-9._-]{0,62}",
                        only);
        return -EINVAL;
    }
    cJSON *hosts = NULL, *stats = NULL, *hist = NULL;
    int rc = store_list_hosts(st, &hosts);
    if (rc == 0)
        rc = store_stats(st, &stats);
    if (rc == 0)
        rc = last_hour(st, &hist);
    cJSON *v = rc == 0 ? view_handlers(hosts, stats, hist) : NULL;
    cJSON_Delete(hosts);
    cJSON_Delete(stats);
    cJSON_Delete(hist);
    if (rc < 0 || !only) {
        *out = v;
        return rc;
    }
    cJSON *e, *found = NULL;
    cJSON_ArrayForEach (e, cJSON_GetObjectItemCaseSensitive(v, "handlers")) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "handler");
        if (cJSON_IsString(n) && strcmp(n->valuestring, only) == 0)
            found = e;
    }
    if (found)
        found = cJSON_DetachItemViaPointer(cJSON_GetObjectItemCaseSensitive(v, "handlers"), found);
    cJSON_Delete(v);
    if (!found) {
        store_set_error(st, "no handler '%s': no live host serves it and no task waits for it",
                        only);
        return -ENOENT;
    }
    *out = found;
    return 0;
}

int ops_stats(store *st, const bgt_config *cfg, cJSON **out)
{
    *out = NULL;
    cJSON *stats = NULL, *hosts = NULL, *hist = NULL;
    int64_t now = 0;
    int rc = store_stats(st, &stats);
    if (rc == 0)
        rc = store_list_hosts(st, &hosts);
    if (rc == 0)
        rc = store_time_ms(st, &now);
    double keep = cfg->history_window_s;
    if (cfg->retention_s > 0 && cfg->retention_s < keep)
        keep = cfg->retention_s;
    if (rc == 0 && keep > 0) {
        int64_t since = (now - (int64_t)(keep * 1000)) / MINUTE_MS * MINUTE_MS;
        if (since < 0)
            since = 0;
        int minutes = (int)((now - since + MINUTE_MS - 1) / MINUTE_MS);
        rc = store_history(st, NULL, since, now, minutes > 0 ? minutes : 1, &hist);
    }
    if (rc == 0) {
        view_stats(stats, hosts, hist);
        *out = stats;
        stats = NULL;
    }
    cJSON_Delete(stats);
    cJSON_Delete(hosts);
    cJSON_Delete(hist);
    return rc;
}

int ops_history(store *st, const char *handler, const char *since, const char *until,
                const char *step, cJSON **out)
{
    *out = NULL;
    if (handler && !name_valid(handler)) {
        store_set_error(st, "handler must be a handler name ([a-z0-9][a-z0-9._-]{0,62}), got '%.64s'",
                        handler);
        return -EINVAL;
    }
    int64_t now;
    int rc = store_time_ms(st, &now);
    if (rc < 0)
        return rc;
    int64_t t0 = now - 24 * 60 * MINUTE_MS, t1 = now, step_ms = 0;
    if (since && !parse_time_ms(since, now, &t0)) {
        store_set_error(st, "since must be " TIME_EXPECTED ", got '%.64s'", since);
        return -EINVAL;
    }
    if (until && !parse_time_ms(until, now, &t1)) {
        store_set_error(st, "until must be " TIME_EXPECTED ", got '%.64s'", until);
        return -EINVAL;
    }
    if (t1 <= t0) {
        store_set_error(st, "until must be later than since (since %lld ms, until %lld ms)",
                        (long long)t0, (long long)t1);
        return -EINVAL;
    }
    if (step) {
        if (!parse_duration_ms(step, &step_ms) || step_ms == 0 || step_ms % MINUTE_MS ||
            step_ms / MINUTE_MS > 366 * 24 * 60) {
            store_set_error(st,
                            "step must be a whole number of minutes (1m..366d) such as 1m, 15m "
                            "or 1h, got '%.64s'",
                            step);
            return -EINVAL;
        }
    } else {
        step_ms = t1 - t0 <= 6 * 60 * MINUTE_MS ? MINUTE_MS : 60 * MINUTE_MS;
    }
    int step_min = (int)(step_ms / MINUTE_MS);
    int64_t start = t0 / step_ms * step_ms;
    long nb = store_history_buckets(start, t1, step_min);
    if (nb > HISTORY_MAX_BUCKETS) {
        store_set_error(st,
                        "step %s gives %ld buckets from since to until, more than %d: choose a "
                        "larger step",
                        step ? step : "1h", nb, HISTORY_MAX_BUCKETS);
        return -EINVAL;
    }
    return store_history(st, handler, start, t1, step_min, out);
}

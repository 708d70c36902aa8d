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

/* The filters a cursor belongs to, as a number (FNV-1a of their text as given). */
static uint32_t filters_digest(const char *state, const char *handler, const char *since,
                               const char *until)
{
    const char *parts[] = {state ? state : "", handler ? handler : "", since ? since : "",
                           until ? until : ""};
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < 4; i++) {
        for (const char *p = parts[i]; *p; p++) {
            unsigned char ch = (unsigned char)*p;
            if (i == 0 && ch >= 'a' && ch <= 'z')
                ch = (unsigned char)(ch - 'a' + 'A');
            h = (h ^ ch) * 16777619u;
        }
        h = (h ^ '|') * 16777619u;
    }
    return h;
}

/* Read cursor "c1.<key>.<id|->.<digest>": true and the position, or false. */
static bool cursor_parse(const char *c, uint32_t digest, list_query *q, bool *foreign)
{
    long long key;
    char id[BGT_ID_LEN + 2];
    unsigned dg;
    int used = 0;
    *foreign = false;
    if (!c || strlen(c) > 80 ||
        sscanf(c, "c1.%lld.%37[0-9a-f-].%8x%n", &key, id, &dg, &used) != 3 || c[used] ||
        key < 0 || (strcmp(id, "-") != 0 && !id_valid(id)))
        return false;
    if (dg != digest) {
        *foreign = true;
        return false;
    }
    q->below = true;
    q->below_key = key;
    if (strcmp(id, "-") == 0)
        q->below_id[0] = '\0';
    else
        memcpy(q->below_id, id, sizeof q->below_id); /* a task id: 36 characters */
    return true;
}

int ops_list(store *st, const char *state, const char *handler, const char *since,
             const char *until, long limit, const char *cursor, cJSON **out)
{
    *out = NULL;
    if (limit < 0 || limit > LIST_PAGE_MAX) {
        store_set_error(st, "limit must be an integer 1..%d, got %ld", LIST_PAGE_MAX, limit);
        return -EINVAL;
    }
    list_query q = {.state = state, .handler = handler, .limit = limit ? (int)limit : 20};
    int64_t now = 0;
    int rc = since || until ? store_time_ms(st, &now) : 0;
    if (rc < 0)
        return rc;
    if (since && !parse_time_ms(since, now, &q.since_ms)) {
        store_set_error(st, "since must be " TIME_EXPECTED ", got '%.64s'", since);
        return -EINVAL;
    }
    if (until && !parse_time_ms(until, now, &q.until_ms)) {
        store_set_error(st, "until must be " TIME_EXPECTED ", got '%.64s'", until);
        return -EINVAL;
    }
    if (until && q.until_ms <= q.since_ms) {
        store_set_error(st, "until must be later than since (since %lld ms, until %lld ms)",
                        (long long)q.since_ms, (long long)q.until_ms);
        return -EINVAL;
    }
    bool foreign;
    uint32_t digest = filters_digest(state, handler, since, until);
    if (cursor && !cursor_parse(cursor, digest, &q, &foreign)) {
        if (foreign)
            store_set_error(st, "cursor does not belong to these filters (state, handler, "
                                "since, until must be those of the page it came from)");
        else
            store_set_error(st, "cursor must be a next_cursor of this listing, got '%.64s'",
                            cursor);
        return -EINVAL;
    }
    cJSON *tasks = NULL;
    bool more = false;
    int64_t key = 0;
    char id[BGT_ID_LEN + 1] = "";
    rc = store_list_tasks(st, &q, &tasks, &more, &key, id);
    if (rc < 0)
        return rc;
    view_tasks(tasks);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", cJSON_GetArraySize(tasks));
    cJSON_AddItemToObject(o, "tasks", tasks);
    if (more) {
        char next[96];
        snprintf(next, sizeof next, "c1.%lld.%s.%08x", (long long)key, id[0] ? id : "-", digest);
        cJSON_AddStringToObject(o, "next_cursor", next);
    } else {
        cJSON_AddNullToObject(o, "next_cursor");
    }
    *out = o;
    return 0;
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

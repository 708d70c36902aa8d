/*
 * http_api.c - the REST endpoints of the HTTP interface (tasks, subtasks,
 * retry, hosts, handlers, stats), /healthz and /metrics: each reads its arguments,
 * makes its store calls on a request store and answers in JSON.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_int.h"
#include "json_check.h"
#include "ops_read.h"
#include "subtasks.h"
#include "util.h"
#include "view.h"

/* ---- live hosts: who serves what ---- */

/* A copy of the live hosts (caller frees), read from Redis when the last reading is older
 * than HTTP_HOSTS_EVERY_S; NULL when Redis does not answer. */
static cJSON *live_hosts(http_server *s)
{
    pthread_mutex_lock(&s->hosts_lock);
    cJSON *hosts = s->hosts && mono_s() - s->hosts_at < HTTP_HOSTS_EVERY_S
                       ? cJSON_Duplicate(s->hosts, true)
                       : NULL;
    pthread_mutex_unlock(&s->hosts_lock);
    if (hosts)
        return hosts;
    store *st = http__pool_get(s);
    int rc = store_list_hosts(st, &hosts);
    if (http__again(rc, st))
        rc = store_list_hosts(st, &hosts);
    http__pool_put(s, st);
    if (rc < 0)
        return NULL;
    pthread_mutex_lock(&s->hosts_lock);
    cJSON_Delete(s->hosts);
    s->hosts = cJSON_Duplicate(hosts, true);
    s->hosts_at = mono_s();
    pthread_mutex_unlock(&s->hosts_lock);
    return hosts;
}

/* Whether a live host serves handler name: this host, when it does, else one of the live
 * hosts; true too when they cannot be read (no warning without knowing). */
static bool served(http_server *s, const char *name)
{
    if (registry_find(s->reg, name))
        return true; /* this host is live, and serves it */
    cJSON *hosts = live_hosts(s);
    bool yes = !hosts || view_served(hosts, name);
    cJSON_Delete(hosts);
    return yes;
}

/* ---- endpoints ---- */

enum MHD_Result http__get_healthz(http_server *s, struct MHD_Connection *c)
{
    store *st = http__pool_get(s);
    int rc = store_ping(st);
    if (http__again(rc, st))
        rc = store_ping(st);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    http__pool_put(s, st);
    const char *reason = NULL;
    char buf[300];
    if (rc < 0) {
        snprintf(buf, sizeof buf, "redis: %s", err);
        reason = buf;
    } else if (registry_handlers(s->reg, NULL, 0) == 0) {
        reason = "no handlers loaded";
    } else if (!sse_hub_subscribed(s->hub)) {
        reason = "the event subscription to Redis is down";
    } else if (!metrics_healthy(s->met, buf, sizeof buf)) {
        reason = buf; /* claims or heartbeats fail (issue 8, item 9) */
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", reason ? "unavailable" : "ok");
    if (reason)
        cJSON_AddStringToObject(o, "reason", reason);
    /* Isolated plugins whose crash breaker is open: the host serves, but not their handlers. */
    char *breakers = metrics_iso_breakers(s->met);
    if (breakers)
        cJSON_AddStringToObject(o, "breakers", breakers);
    free(breakers);
    /* Worker threads written off inside handlers that ignored their timeout. */
    long stuck = metrics_gauge(s->met, MG_STUCK_WORKERS);
    if (stuck > 0)
        cJSON_AddNumberToObject(o, "stuck_workers", (double)stuck);
    return http__send_json(c, reason ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK, o, NULL);
}

/*
 * Read what the queue gauges show from Redis, if the last reading is older
 * than http.metrics_interval and no other scrape is reading it now (that one
 * refreshes it; this one serves the last reading). The first scrape waits for
 * the first reading.
 */
static void refresh_scrape(http_server *s)
{
    pthread_mutex_lock(&s->scrape_lock);
    bool mine = !s->scraping &&
                (s->scrape_at == 0 || mono_s() - s->scrape_at >= s->cfg->http_metrics_interval_s);
    if (mine)
        s->scraping = true;
    while (!mine && s->scrape_at == 0)
        pthread_cond_wait(&s->scrape_cond, &s->scrape_lock);
    pthread_mutex_unlock(&s->scrape_lock);
    if (!mine)
        return;
    store *st = http__pool_get(s);
    cJSON *stats = NULL, *hosts = NULL;
    int rc = store_stats(st, &stats);
    if (http__again(rc, st))
        rc = store_stats(st, &stats);
    if (rc == 0 && (rc = store_list_hosts(st, &hosts)) < 0) {
        cJSON_Delete(stats);
        stats = NULL;
    }
    http__pool_put(s, st);
    if (rc < 0) {
        metrics_inc(s->met, MC_REDIS_ERRORS, 1);
    } else {
        view_mark_unserved(stats, hosts); /* before the cap, which sums what it leaves out */
        metrics_cap_handlers(s->met, stats, s->cfg->http_metrics_max_handlers);
    }
    cJSON_Delete(hosts);
    pthread_mutex_lock(&s->scrape_lock);
    cJSON_Delete(s->scrape);
    s->scrape = rc == 0 ? stats : NULL;
    s->scrape_at = mono_s();
    s->scraping = false;
    pthread_cond_broadcast(&s->scrape_cond);
    pthread_mutex_unlock(&s->scrape_lock);
}

enum MHD_Result http__get_metrics(http_server *s, struct MHD_Connection *c)
{
    size_t n = registry_handlers(s->reg, NULL, 0);
    const handler **hs = xcalloc(n + 1, sizeof *hs);
    n = registry_handlers(s->reg, hs, n);
    for (size_t i = 0; i < n && hs[i]; i++)
        metrics_declare(s->met, hs[i]->name);
    free(hs);
    refresh_scrape(s);
    pthread_mutex_lock(&s->scrape_lock);
    char *text = metrics_render_scrape(s->met, s->scrape);
    pthread_mutex_unlock(&s->scrape_lock);
    return http__send_body(c, MHD_HTTP_OK, text, "text/plain; version=0.0.4; charset=utf-8", NULL,
                           NULL);
}

enum MHD_Result http__get_tasks(http_server *s, struct MHD_Connection *c)
{
    static const char *const ok[] = {"state", "handler", "since", "until",
                                     "limit", "cursor",  NULL};
    args_check a;
    const char *bad = http__unknown_arg(c, ok, &a);
    if (bad)
        return http__send_error(
            c, MHD_HTTP_BAD_REQUEST, NULL,
            "unknown query argument '%s' (expected state, handler, since, until, limit, cursor)",
            bad);
    const char *state = http__arg(c, "state"), *hname = http__arg(c, "handler"),
               *lim = http__arg(c, "limit"), *since = http__arg(c, "since"),
               *until = http__arg(c, "until"), *cursor = http__arg(c, "cursor");
    long limit = 20;
    if (lim) {
        char *end;
        errno = 0;
        limit = strtol(lim, &end, 10);
        if (errno || *end || end == lim || limit < 1 || limit > LIST_LIMIT_MAX)
            return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                    "limit must be an integer 1..%d, got '%.32s'", LIST_LIMIT_MAX,
                                    lim);
    }
    store *st = http__pool_get(s);
    cJSON *o = NULL;
    int rc = ops_list(st, state, hname, since, until, limit, cursor, &o);
    if (http__again(rc, st))
        rc = ops_list(st, state, hname, since, until, limit, cursor, &o);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    http__pool_put(s, st);
    if (rc < 0)
        return http__send_store_error(s, c, rc, err);
    return http__send_json(c, MHD_HTTP_OK, o, NULL);
}

enum MHD_Result http__get_task(http_server *s, struct MHD_Connection *c, const request *rq)
{
    store *st = http__pool_get(s);
    cJSON *rec = NULL;
    int rc = store_get_task(st, rq->id, &rec);
    if (http__again(rc, st))
        rc = store_get_task(st, rq->id, &rec);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    http__pool_put(s, st);
    if (rc < 0)
        return http__send_store_error(s, c, rc, err);
    view_task(rec);
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(rec, "state");
    if (cJSON_IsString(state) && strcmp(state->valuestring, "ONGOING") == 0) {
        cJSON *hosts = live_hosts(s);
        if (hosts)
            view_task_hosts(rec, hosts); /* says so when no live host can run it */
        cJSON_Delete(hosts);
    }
    return http__send_json(c, MHD_HTTP_OK, rec, NULL);
}

enum MHD_Result http__delete_task(http_server *s, struct MHD_Connection *c, const request *rq)
{
    store *st = http__pool_get(s);
    char state[256]; /* the terminal state, or the owning host */
    int rc = store_cancel(st, rq->id, state, sizeof state);
    if (http__again(rc, st)) /* a second cancel of the same task changes nothing more */
        rc = store_cancel(st, rq->id, state, sizeof state);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    http__pool_put(s, st);
    if (rc < 0)
        return http__send_store_error(s, c, rc, err);
    cJSON *o = view_cancel(rq->id, rc, state);
    return http__send_json(c, MHD_HTTP_ACCEPTED, o, NULL);
}

enum MHD_Result http__get_hosts(http_server *s, struct MHD_Connection *c)
{
    store *st = http__pool_get(s);
    cJSON *hosts = NULL;
    int rc = store_list_hosts(st, &hosts);
    if (http__again(rc, st))
        rc = store_list_hosts(st, &hosts);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    http__pool_put(s, st);
    if (rc < 0)
        return http__send_store_error(s, c, rc, err);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "hosts", hosts);
    return http__send_json(c, MHD_HTTP_OK, o, NULL);
}

/* The handlers live hosts serve, with those hosts, and those with tasks waiting that no
 * live host serves (as bgtaskctl handlers --json prints them); with rq->handler set, that
 * one handler's entry. */
enum MHD_Result http__get_handlers(http_server *s, struct MHD_Connection *c, const request *rq)
{
    const char *only = rq->route == R_HANDLER ? rq->handler : NULL;
    store *st = http__pool_get(s);
    cJSON *o = NULL;
    int rc = ops_handlers(st, only, &o);
    if (http__again(rc, st))
        rc = ops_handlers(st, only, &o);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    http__pool_put(s, st);
    if (rc < 0)
        return http__send_store_error(s, c, rc, err);
    return http__send_json(c, MHD_HTTP_OK, o, NULL);
}

/* What bgtaskctl stats shows: per-handler queues, the unserved ones, finished tasks kept
 * and by outcome, live hosts. */
enum MHD_Result http__get_stats(http_server *s, struct MHD_Connection *c)
{
    store *st = http__pool_get(s);
    cJSON *stats = NULL;
    int rc = ops_stats(st, s->cfg, &stats);
    if (http__again(rc, st))
        rc = ops_stats(st, s->cfg, &stats);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    http__pool_put(s, st);
    if (rc < 0)
        return http__send_store_error(s, c, rc, err);
    return http__send_json(c, MHD_HTTP_OK, stats, NULL);
}

/*
 * The subtasks of a parallel task: {"task_id", "total", "counts": {state: n},
 * "offset", "count", "subtasks": [...]}, those in `state` if given, `limit`
 * of them from `offset`. A task that has none (single, or not split yet) has
 * total 0. A running subtask reads PENDING until it ends.
 */
enum MHD_Result http__get_subtasks(http_server *s, struct MHD_Connection *c, const request *rq)
{
    static const char *const ok[] = {"state", "offset", "limit", NULL};
    args_check a;
    const char *bad = http__unknown_arg(c, ok, &a);
    if (bad)
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                "unknown query argument '%s' (expected state, offset, limit)", bad);
    const char *state = http__arg(c, "state"), *off = http__arg(c, "offset"),
               *lim = http__arg(c, "limit");
    if (state && !view_subtask_state(state))
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                "state must be PENDING, SUCCESS, FAILURE or CANCELLED, got '%.32s'",
                                state);
    state = view_subtask_state(state);
    long offset = 0, limit = 100;
    if (off && !parse_long(off, 0, VIEW_SUBTASKS_MAX, &offset))
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                "offset must be an integer 0..%d, got '%.32s'", VIEW_SUBTASKS_MAX,
                                off);
    if (lim && !parse_long(lim, 1, LIST_LIMIT_MAX, &limit))
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                "limit must be an integer 1..%d, got '%.32s'", LIST_LIMIT_MAX, lim);
    store *st = http__pool_get(s);
    cJSON *rec = NULL;
    sub_rec *subs = NULL;
    int n = 0;
    int rc = store_get_task(st, rq->id, &rec);
    if (http__again(rc, st))
        rc = store_get_task(st, rq->id, &rec);
    if (rc == 0) {
        n = view_subtask_count(rec);
        if (n > 0)
            rc = store_load_subtasks(st, rq->id, n, &subs);
    }
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    http__pool_put(s, st);
    cJSON_Delete(rec);
    if (rc < 0)
        return http__send_store_error(s, c, rc, err);
    if (n < 0)
        return http__send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
                                "task %s: its record counts more than %d subtasks: it is corrupted",
                                rq->id, VIEW_SUBTASKS_MAX);
    cJSON *o = view_subtask_page(rq->id, subs, n, state, offset, limit);
    store_sub_recs_free(subs, n);
    return http__send_json(c, MHD_HTTP_OK, o, NULL);
}

/*
 * Run a finished task again, as bgtaskctl retry does: a single one that
 * failed or was cancelled as a new attempt, a parallel one's failed and
 * cancelled subtasks: 202 {"task_id", "kind", "state", "retrying"}. The body,
 * if any, is an empty JSON object. A task still running or with nothing to
 * run again is a 409 (reason "running" or "nothing_to_retry") that changes
 * nothing.
 */
enum MHD_Result http__post_retry(http_server *s, struct MHD_Connection *c, const request *rq)
{
    if (!rq->id[0])
        return http__send_error(c, MHD_HTTP_NOT_FOUND, NULL, "no task '%s' (task ids are UUIDs)",
                                rq->raw_id);
    if (rq->len) {
        cJSON *j = cJSON_ParseWithOpts(rq->body, NULL, true);
        bool empty = cJSON_IsObject(j) && !j->child;
        const char *field = cJSON_IsObject(j) && j->child ? j->child->string : NULL;
        char msg[128];
        snprintf(msg, sizeof msg, "unknown field '%.64s' (this request takes none)",
                 field ? field : "");
        cJSON_Delete(j);
        if (!empty)
            return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "%s",
                                    field ? msg : "the body must be a JSON object ({} or none)");
    }
    store *st = http__pool_get(s);
    int n = 0;
    bool parallel = false;
    int rc = store_retry(st, rq->id, &n, &parallel);
    /* A retry that went through answers "running" the second time. */
    if (http__again(rc, st))
        rc = store_retry(st, rq->id, &n, &parallel);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    http__pool_put(s, st);
    if (rc == -EBUSY || rc == -EALREADY)
        return http__send_conflict(c, rc == -EBUSY ? "running" : "nothing_to_retry",
                                   "%s: nothing was changed", err);
    if (rc < 0)
        return http__send_store_error(s, c, rc, err);
    return http__send_json(c, MHD_HTTP_ACCEPTED, view_retry(rq->id, parallel, n), NULL);
}

/* The fields POST /v1/tasks takes. */
static const char *const submit_fields[] = {"handler",     "delay_s",      "args",
                                            "id",          "max_attempts", "subtasks",
                                            "parallelism", "on_failure",   NULL};

enum MHD_Result http__post_task(http_server *s, struct MHD_Connection *c, request *rq)
{
    if (rq->len && memchr(rq->body, '\0', rq->len))
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "the body contains a NUL byte");
    char bad[160];
    if (rq->len && !json_text_ok(rq->body, rq->len, bad, sizeof bad))
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "the body: %s", bad);
    const char *text = rq->body ? rq->body : "";
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(text, &end, true);
    if (!j)
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                "the body is not valid JSON (at byte %zu)",
                                end ? (size_t)(end - text) : (size_t)0);
    enum MHD_Result ret;
    char *args = NULL, *subtasks = NULL;
    if (!cJSON_IsObject(j)) {
        ret = http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "the body must be a JSON object");
        goto out;
    }
    /* Every field known, and each at most once. */
    bool seen[sizeof submit_fields / sizeof submit_fields[0]] = {false};
    const cJSON *f;
    cJSON_ArrayForEach (f, j) {
        int k = 0;
        while (submit_fields[k] && strcmp(submit_fields[k], f->string) != 0)
            k++;
        if (!submit_fields[k]) {
            ret = http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                   "unknown field '%.64s' (expected handler, args, id, delay_s, "
                                   "max_attempts, subtasks, parallelism, on_failure)",
                                   f->string);
            goto out;
        }
        if (seen[k]) {
            ret = http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "field '%s' is given twice",
                                   f->string);
            goto out;
        }
        seen[k] = true;
    }
    submit_req q = {0};
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "handler");
    if (!cJSON_IsString(v)) {
        ret = http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                               v ? "handler must be a string" : "handler is required");
        goto out;
    }
    q.handler = v->valuestring;
    v = cJSON_GetObjectItemCaseSensitive(j, "args");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsObject(v)) {
            ret = http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "args must be a JSON object");
            goto out;
        }
        q.args = args = cJSON_PrintUnformatted(v);
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "id");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v)) {
            ret = http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "id must be a string (a UUID)");
            goto out;
        }
        q.id = v->valuestring;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "delay_s");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0)) {
            ret = http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                   "delay_s must be a number of seconds >= 0");
            goto out;
        }
        q.delay_s = v->valuedouble;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "max_attempts");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 1 ||
            v->valuedouble > 1000) {
            ret = http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                   "max_attempts must be an integer 1..1000");
            goto out;
        }
        q.max_attempts = (int)v->valuedouble;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "parallelism");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 1 ||
            v->valuedouble > 1024) {
            ret = http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                   "parallelism must be an integer 1..1024");
            goto out;
        }
        q.parallelism = (int)v->valuedouble;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "on_failure");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v) ||
            (strcmp(v->valuestring, "continue") != 0 && strcmp(v->valuestring, "fail_fast") != 0)) {
            ret = http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                   "on_failure must be \"continue\" or \"fail_fast\"");
            goto out;
        }
        q.on_failure = v->valuestring;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "subtasks");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsArray(v)) {
            ret = http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                   "subtasks must be a JSON array of argument objects");
            goto out;
        }
        subtasks = cJSON_PrintUnformatted(v);
    }
    /* The subtasks travel as args.subtasks, however they are given (subtasks.h). */
    char why[300], *given = NULL;
    if (subtasks_submit_args(args, subtasks, s->cfg->max_subtasks, &given, why, sizeof why) < 0) {
        ret = http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "%s", why);
        goto out;
    }
    free(args);
    q.args = args = given;
    /* The id is chosen here when the client did not: a submission repeated
     * after a lost connection then cannot create a second task, and its
     * -EEXIST means the first one went through. */
    char fresh[BGT_ID_LEN + 1];
    if (!q.id) {
        uuid4(fresh);
        q.id = fresh;
    }
    store *st = http__pool_get(s);
    store_submit(st, &q, 1);
    if (http__again(q.rc, st)) {
        store_submit(st, &q, 1);
        if (q.rc == -EEXIST && q.id == fresh)
            q.rc = 0;
    }
    http__pool_put(s, st);
    switch (q.rc) {
    case 0: {
        char location[64];
        snprintf(location, sizeof location, "/v1/tasks/%s", q.id_out);
        /* Created, but: on the master only (redis.min_replicas_ack), or waiting for a host. */
        cJSON *o = view_submitted(q.id_out, q.not_durable ? q.err : NULL,
                                  served(s, q.handler) ? NULL : q.handler);
        ret = http__send_json(c, MHD_HTTP_ACCEPTED, o, location);
        break;
    }
    case -EEXIST: ret = http__send_error(c, MHD_HTTP_CONFLICT, NULL, "%s", q.err); break;
    case -E2BIG: ret = http__send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, NULL, "%s", q.err); break;
    default: ret = http__send_store_error(s, c, q.rc, q.err); break;
    }
out:
    free(args);
    free(subtasks);
    cJSON_Delete(j);
    return ret;
}

/*
 * http.c - the HTTP interface on libmicrohttpd: routing, the bearer token,
 * JSON errors, the REST API, /healthz, /metrics, and the glue that lets the
 * SSE hub (sse.c) park and wake streams.
 *
 * A request is refused from the access handler's first call (headers only)
 * or answered from its last one, after the body (POST bodies are kept up to
 * http.max_body). Redis calls use a small pool of request stores, one per
 * libmicrohttpd thread.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "http_guard.h"
#include "http_ui.h"
#include "sse.h"
#include "util.h"
#include "view.h"

/* libmicrohttpd threads, and as many request stores. */
#define HTTP_THREADS 4
/* Seconds a connection may stay silent while a response is written to it (waiting for a
 * request is bounded by http.request_timeout; parked SSE streams do not time out). */
#define HTTP_IDLE_TIMEOUT_S 60
/* Largest `limit` of GET /v1/tasks and GET /v1/tasks/<id>/subtasks. */
#define LIST_LIMIT_MAX 1000
/* Most events replayed for a Last-Event-ID. */
#define REPLAY_MAX 10000
/* A body is read and dropped up to this many times http.max_body before the
 * connection is cut, so an oversized chunked upload still gets its 413. */
#define DISCARD_FACTOR 16

struct http_server {
    struct MHD_Daemon *d;
    const bgt_config *cfg;
    metrics *met;
    registry *reg;
    sse_hub *hub;
    ui_files *ui; /* the dashboard, NULL when off */
    pthread_mutex_t pool_lock;
    pthread_cond_t pool_cond;
    store *stores[HTTP_THREADS];
    bool busy[HTTP_THREADS];
    http_guard *guard; /* what one client may hold of the connections */
    /* The queue gauges' reading from Redis, shared by the scrapes of one
     * http.metrics_interval: bounded (metrics_cap_handlers), NULL when Redis
     * did not answer. Under scrape_lock. */
    pthread_mutex_t scrape_lock;
    pthread_cond_t scrape_cond;
    cJSON *scrape;
    double scrape_at; /* mono_s of that reading; 0 before the first */
    bool scraping;    /* a scrape is reading Redis now */
    char address[96];
};

typedef enum route {
    R_NONE,
    R_HEALTHZ,
    R_METRICS,
    R_TASKS,
    R_TASK,
    R_SUBTASKS, /* /v1/tasks/<id>/subtasks */
    R_RETRY,    /* /v1/tasks/<id>/retry */
    R_HOSTS,
    R_STATS,
    R_SSE_TASK,
    R_SSE_ALL,
    R_ROOT, /* "/": to the dashboard */
    R_UI,   /* "/ui" and what is under it */
} route;

/* One request across the access handler's calls. */
typedef struct request {
    route route;
    char id[BGT_ID_LEN + 1]; /* R_TASK and below: the id, lower-case; "" if not a task id */
    char raw_id[48];         /* R_TASK and below: what the path said, for messages */
    char ui_name[UI_NAME_MAX + 2]; /* R_UI: what follows "/ui/"; "/" for "/ui" itself */
    bool post, del;          /* the method, when it is not GET or HEAD */
    guard_conn *conn;        /* the connection's slot in the guard */
    bool responded;
    char *body; /* POST body, NUL-terminated */
    size_t len, cap;
    size_t received; /* body bytes received, kept or not */
    bool too_big;
    sse_client *client; /* an SSE stream, closed when the request completes */
} request;

/* ---- the request store pool ---- */

/* A store for one request; waits while all are in use. */
static store *pool_get(http_server *s)
{
    store *st = NULL;
    pthread_mutex_lock(&s->pool_lock);
    while (!st) {
        for (int i = 0; i < HTTP_THREADS && !st; i++)
            if (!s->busy[i]) {
                s->busy[i] = true;
                st = s->stores[i];
            }
        if (!st)
            pthread_cond_wait(&s->pool_cond, &s->pool_lock);
    }
    pthread_mutex_unlock(&s->pool_lock);
    return st;
}

/*
 * A call failed with -EIO: the store's connection may have died while it sat
 * in the pool (Redis restarted), or the store may still be waiting out its
 * reconnect backoff from an outage that is over. Either way a request has
 * someone waiting for it, so try one connection now: true if it is up and
 * the caller should make the call once more. Used for calls that can be
 * repeated safely (submission takes care of its own).
 */
static bool again(int rc, store *st) { return rc == -EIO && store_connect(st) == 0; }

static void pool_put(http_server *s, store *st)
{
    pthread_mutex_lock(&s->pool_lock);
    for (int i = 0; i < HTTP_THREADS; i++)
        if (s->stores[i] == st)
            s->busy[i] = false;
    pthread_cond_signal(&s->pool_cond);
    pthread_mutex_unlock(&s->pool_lock);
}

/* ---- responses ---- */

static const char *status_code(unsigned status)
{
    switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthorized";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 409: return "conflict";
    case 413: return "payload_too_large";
    case 415: return "unsupported_media_type";
    case 503: return "unavailable";
    default: return "internal_error";
    }
}

/* Queue body (malloc'd; ownership passes here) with the given status. */
static enum MHD_Result send_body(struct MHD_Connection *c, unsigned status, char *body,
                                 const char *ctype, const char *allow, const char *location)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    if (location)
        MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, location);
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"bgtask\"");
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

/* Queue o (freed here) as JSON. */
static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, cJSON *o,
                                 const char *location)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        return MHD_NO;
    char *body = xasprintf("%s\n", s);
    free(s);
    return send_body(c, status, body, "application/json", NULL, location);
}

/* {"error": {"code": ..., "message": ...}}, with Allow for a 405. */
__attribute__((format(printf, 4, 5))) static enum MHD_Result
send_error(struct MHD_Connection *c, unsigned status, const char *allow, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "code", status_code(status));
    cJSON_AddStringToObject(e, "message", msg);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        return MHD_NO;
    char *body = xasprintf("%s\n", s);
    free(s);
    return send_body(c, status, body, "application/json", allow, NULL);
}

/* A store call failed: 404 unknown, 400 refused input, 503 Redis down or refusing. */
static enum MHD_Result send_store_error(http_server *s, struct MHD_Connection *c, int rc,
                                        const char *err)
{
    switch (rc) {
    case -ENOENT: return send_error(c, MHD_HTTP_NOT_FOUND, NULL, "%s", err);
    case -EINVAL: return send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "%s", err);
    case -EIO:
    case -EPROTO:
        metrics_inc(s->met, MC_REDIS_ERRORS, 1);
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, "redis: %s", err);
    default: return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "%s", strerror(-rc));
    }
}

/* ---- request checks ---- */

/* Compare in time that depends on the lengths only, never on where the
 * strings differ, so the token cannot be guessed byte by byte. */
static bool equal_ct(const char *want, const char *got)
{
    size_t wn = strlen(want), gn = strlen(got);
    volatile unsigned char diff = wn != gn;
    for (size_t i = 0; i < wn; i++)
        diff |= (unsigned char)want[i] ^ (unsigned char)(i < gn ? got[i] : 0);
    return diff == 0;
}

static bool authorized(http_server *s, struct MHD_Connection *c)
{
    const char *token = s->cfg->http_token;
    if (!token || !*token)
        return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    return equal_ct(token, h);
}

/* Lower-case copy of a task id into out (37 bytes); false if s is not one. */
static bool task_id_norm(const char *s, char *out)
{
    if (!s || !id_valid(s))
        return false;
    for (int i = 0; i <= BGT_ID_LEN; i++)
        out[i] = (char)(s[i] >= 'A' && s[i] <= 'F' ? s[i] - 'A' + 'a' : s[i]);
    return true;
}

static route route_of(const char *url, request *rq)
{
    static const struct {
        const char *path;
        route r;
    } fixed[] = {
        {"/healthz", R_HEALTHZ}, {"/metrics", R_METRICS},   {"/v1/tasks", R_TASKS},
        {"/v1/hosts", R_HOSTS},  {"/v1/events", R_SSE_ALL}, {"/events/background-task", R_SSE_TASK},
        {"/v1/stats", R_STATS},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(url, fixed[i].path) == 0)
            return fixed[i].r;
    if (strcmp(url, "/") == 0)
        return R_ROOT;
    if (strcmp(url, "/ui") == 0 || strncmp(url, "/ui/", 4) == 0) {
        /* A name too long to be a file's is kept cut, so that it finds none. */
        snprintf(rq->ui_name, sizeof rq->ui_name, "%s", url[3] ? url + 4 : "/");
        return R_UI;
    }
    if (strncmp(url, "/v1/tasks/", 10) == 0) {
        /* "<id>", "<id>/subtasks" or "<id>/retry" */
        const char *rest = url + 10, *slash = strchr(rest, '/');
        route r = R_TASK;
        if (slash && strcmp(slash, "/subtasks") == 0)
            r = R_SUBTASKS;
        else if (slash && strcmp(slash, "/retry") == 0)
            r = R_RETRY;
        else if (slash)
            return R_NONE;
        size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
        snprintf(rq->raw_id, sizeof rq->raw_id, "%.*s", (int)(n < 47 ? n : 47), rest);
        if (n != BGT_ID_LEN || !task_id_norm(rq->raw_id, rq->id))
            rq->id[0] = '\0';
        return r;
    }
    return R_NONE;
}

/* The methods a route takes, as an Allow header; HEAD goes with GET. */
static const char *allowed_methods(route r)
{
    switch (r) {
    case R_TASKS: return "GET, HEAD, POST";
    case R_TASK: return "GET, HEAD, DELETE";
    case R_RETRY: return "POST";
    case R_SSE_TASK:
    case R_SSE_ALL: return "GET";
    default: return "GET, HEAD";
    }
}

static bool method_allowed(route r, const char *method)
{
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    bool head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    switch (r) {
    case R_TASKS: return get || head || strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    case R_TASK: return get || head || strcmp(method, MHD_HTTP_METHOD_DELETE) == 0;
    case R_RETRY: return strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    case R_SSE_TASK:
    case R_SSE_ALL: return get;
    default: return get || head;
    }
}

/* The query must hold only the named arguments. */
typedef struct args_check {
    const char *const *allowed;
    char bad[64];
} args_check;

static enum MHD_Result check_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    args_check *a = cls;
    for (const char *const *p = a->allowed; *p; p++)
        if (strcmp(*p, key) == 0)
            return MHD_YES;
    snprintf(a->bad, sizeof a->bad, "%s", key);
    return MHD_NO;
}

/* NULL if the query is fine, else the first unknown argument (in a). */
static const char *unknown_arg(struct MHD_Connection *c, const char *const *allowed, args_check *a)
{
    a->allowed = allowed;
    a->bad[0] = '\0';
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, check_arg, a);
    return a->bad[0] ? a->bad : NULL;
}

static const char *arg(struct MHD_Connection *c, const char *name)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
    return v && *v ? v : NULL;
}

/* application/json, with or without parameters such as charset. */
static bool is_json_type(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* ---- endpoints ---- */

static enum MHD_Result get_healthz(http_server *s, struct MHD_Connection *c)
{
    store *st = pool_get(s);
    int rc = store_ping(st);
    if (again(rc, st))
        rc = store_ping(st);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    pool_put(s, st);
    const char *reason = NULL;
    char buf[300];
    if (rc < 0) {
        snprintf(buf, sizeof buf, "redis: %s", err);
        reason = buf;
    } else if (registry_handlers(s->reg, NULL, 0) == 0) {
        reason = "no handlers loaded";
    } else if (!sse_hub_subscribed(s->hub)) {
        reason = "the event subscription to Redis is down";
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
    return send_json(c, reason ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK, o, NULL);
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
    bool mine = !s->scraping && (s->scrape_at == 0 ||
                                 mono_s() - s->scrape_at >= s->cfg->http_metrics_interval_s);
    if (mine)
        s->scraping = true;
    while (!mine && s->scrape_at == 0)
        pthread_cond_wait(&s->scrape_cond, &s->scrape_lock);
    pthread_mutex_unlock(&s->scrape_lock);
    if (!mine)
        return;
    store *st = pool_get(s);
    cJSON *stats = NULL;
    int rc = store_stats(st, &stats);
    if (again(rc, st))
        rc = store_stats(st, &stats);
    pool_put(s, st);
    if (rc < 0)
        metrics_inc(s->met, MC_REDIS_ERRORS, 1);
    else
        metrics_cap_handlers(s->met, stats, s->cfg->http_metrics_max_handlers);
    pthread_mutex_lock(&s->scrape_lock);
    cJSON_Delete(s->scrape);
    s->scrape = rc == 0 ? stats : NULL;
    s->scrape_at = mono_s();
    s->scraping = false;
    pthread_cond_broadcast(&s->scrape_cond);
    pthread_mutex_unlock(&s->scrape_lock);
}

static enum MHD_Result get_metrics(http_server *s, struct MHD_Connection *c)
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
    return send_body(c, MHD_HTTP_OK, text, "text/plain; version=0.0.4; charset=utf-8", NULL, NULL);
}

static enum MHD_Result get_tasks(http_server *s, struct MHD_Connection *c)
{
    static const char *const ok[] = {"state", "handler", "limit", NULL};
    args_check a;
    const char *bad = unknown_arg(c, ok, &a);
    if (bad)
        return send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                          "unknown query argument '%s' (expected state, handler, limit)", bad);
    const char *state = arg(c, "state"), *hname = arg(c, "handler"), *lim = arg(c, "limit");
    long limit = 20;
    if (lim) {
        char *end;
        errno = 0;
        limit = strtol(lim, &end, 10);
        if (errno || *end || end == lim || limit < 1 || limit > LIST_LIMIT_MAX)
            return send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                              "limit must be an integer 1..%d, got '%.32s'", LIST_LIMIT_MAX, lim);
    }
    store *st = pool_get(s);
    cJSON *tasks = NULL;
    int rc = store_list_tasks(st, state, hname, (int)limit, &tasks);
    if (again(rc, st))
        rc = store_list_tasks(st, state, hname, (int)limit, &tasks);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    pool_put(s, st);
    if (rc < 0)
        return send_store_error(s, c, rc, err);
    view_tasks(tasks);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", cJSON_GetArraySize(tasks));
    cJSON_AddItemToObject(o, "tasks", tasks);
    return send_json(c, MHD_HTTP_OK, o, NULL);
}

static enum MHD_Result get_task(http_server *s, struct MHD_Connection *c, const request *rq)
{
    store *st = pool_get(s);
    cJSON *rec = NULL;
    int rc = store_get_task(st, rq->id, &rec);
    if (again(rc, st))
        rc = store_get_task(st, rq->id, &rec);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    pool_put(s, st);
    if (rc < 0)
        return send_store_error(s, c, rc, err);
    view_task(rec);
    return send_json(c, MHD_HTTP_OK, rec, NULL);
}

static enum MHD_Result delete_task(http_server *s, struct MHD_Connection *c, const request *rq)
{
    store *st = pool_get(s);
    char state[32];
    int rc = store_cancel(st, rq->id, state, sizeof state);
    if (again(rc, st)) /* a second cancel of the same task changes nothing more */
        rc = store_cancel(st, rq->id, state, sizeof state);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    pool_put(s, st);
    if (rc < 0)
        return send_store_error(s, c, rc, err);
    static const char *const outcome[] = {
        [CANCEL_DONE] = "cancelled",
        [CANCEL_REQUESTED] = "cancel_requested",
        [CANCEL_FINAL] = "already_finished",
    };
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "task_id", rq->id);
    cJSON_AddStringToObject(o, "outcome", rc <= CANCEL_FINAL ? outcome[rc] : "unknown");
    cJSON_AddStringToObject(o, "state",
                            rc == CANCEL_DONE        ? "CANCELLED"
                            : rc == CANCEL_REQUESTED ? "ONGOING"
                                                     : state);
    return send_json(c, MHD_HTTP_ACCEPTED, o, NULL);
}

static enum MHD_Result get_hosts(http_server *s, struct MHD_Connection *c)
{
    store *st = pool_get(s);
    cJSON *hosts = NULL;
    int rc = store_list_hosts(st, &hosts);
    if (again(rc, st))
        rc = store_list_hosts(st, &hosts);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    pool_put(s, st);
    if (rc < 0)
        return send_store_error(s, c, rc, err);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "hosts", hosts);
    return send_json(c, MHD_HTTP_OK, o, NULL);
}

/* What bgtaskctl stats shows: per-handler queues, finished tasks kept, live hosts. */
static enum MHD_Result get_stats(http_server *s, struct MHD_Connection *c)
{
    store *st = pool_get(s);
    cJSON *stats = NULL;
    int rc = store_stats(st, &stats);
    if (again(rc, st))
        rc = store_stats(st, &stats);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    pool_put(s, st);
    if (rc < 0)
        return send_store_error(s, c, rc, err);
    return send_json(c, MHD_HTTP_OK, stats, NULL);
}

/*
 * The subtasks of a parallel task: {"task_id", "total", "counts": {state: n},
 * "offset", "count", "subtasks": [...]}, those in `state` if given, `limit`
 * of them from `offset`. A task that has none (single, or not split yet) has
 * total 0. A running subtask reads PENDING until it ends.
 */
static enum MHD_Result get_subtasks(http_server *s, struct MHD_Connection *c, const request *rq)
{
    static const char *const ok[] = {"state", "offset", "limit", NULL};
    static const char *const states[] = {"PENDING", "SUCCESS", "FAILURE", "CANCELLED", NULL};
    args_check a;
    const char *bad = unknown_arg(c, ok, &a);
    if (bad)
        return send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                          "unknown query argument '%s' (expected state, offset, limit)", bad);
    const char *state = arg(c, "state"), *off = arg(c, "offset"), *lim = arg(c, "limit");
    if (state) {
        int k = 0;
        while (states[k] && strcasecmp(states[k], state) != 0)
            k++;
        if (!states[k])
            return send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                              "state must be PENDING, SUCCESS, FAILURE or CANCELLED, got '%.32s'",
                              state);
        state = states[k];
    }
    long offset = 0, limit = 100;
    if (off && !parse_long(off, 0, VIEW_SUBTASKS_MAX, &offset))
        return send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "offset must be an integer 0..%d, got '%.32s'",
                          VIEW_SUBTASKS_MAX, off);
    if (lim && !parse_long(lim, 1, LIST_LIMIT_MAX, &limit))
        return send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "limit must be an integer 1..%d, got '%.32s'",
                          LIST_LIMIT_MAX, lim);
    store *st = pool_get(s);
    cJSON *rec = NULL;
    sub_rec *subs = NULL;
    int n = 0;
    int rc = store_get_task(st, rq->id, &rec);
    if (again(rc, st))
        rc = store_get_task(st, rq->id, &rec);
    if (rc == 0) {
        n = view_subtask_count(rec);
        if (n > 0)
            rc = store_load_subtasks(st, rq->id, n, &subs);
    }
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    pool_put(s, st);
    cJSON_Delete(rec);
    if (rc < 0)
        return send_store_error(s, c, rc, err);
    if (n < 0)
        return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
                          "task %s: its record counts more than %d subtasks: it is corrupted",
                          rq->id, VIEW_SUBTASKS_MAX);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "task_id", rq->id);
    cJSON_AddNumberToObject(o, "total", n);
    cJSON *counts = cJSON_AddObjectToObject(o, "counts");
    for (int k = 0; states[k]; k++)
        cJSON_AddNumberToObject(counts, states[k], 0);
    cJSON_AddNumberToObject(o, "offset", (double)offset);
    cJSON *arr = cJSON_CreateArray();
    long matched = 0;
    for (int i = 0; i < n; i++) {
        cJSON *cnt = cJSON_GetObjectItemCaseSensitive(counts, subs[i].state);
        if (cnt)
            cJSON_SetNumberValue(cnt, cnt->valuedouble + 1);
        else
            cJSON_AddNumberToObject(counts, subs[i].state, 1);
        if (state && strcmp(state, subs[i].state) != 0)
            continue;
        if (matched++ >= offset && cJSON_GetArraySize(arr) < limit)
            cJSON_AddItemToArray(arr, view_subtask(&subs[i], i));
    }
    store_sub_recs_free(subs, n);
    cJSON_AddNumberToObject(o, "matched", (double)matched);
    cJSON_AddNumberToObject(o, "count", cJSON_GetArraySize(arr));
    cJSON_AddItemToObject(o, "subtasks", arr);
    return send_json(c, MHD_HTTP_OK, o, NULL);
}

/*
 * Run the failed and cancelled subtasks of a finished parallel task again, as
 * bgtaskctl retry does: 202 {"task_id", "state", "retrying"}. The body, if
 * any, is an empty JSON object. A task that is single, still running or has
 * nothing to run again is a 409 that changes nothing.
 */
static enum MHD_Result post_retry(http_server *s, struct MHD_Connection *c, const request *rq)
{
    if (!rq->id[0])
        return send_error(c, MHD_HTTP_NOT_FOUND, NULL, "no task '%s' (task ids are UUIDs)",
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
            return send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "%s",
                              field ? msg : "the body must be a JSON object ({} or none)");
    }
    store *st = pool_get(s);
    int n = 0;
    int rc = store_retry(st, rq->id, &n);
    if (again(rc, st)) /* a retry that went through answers "nothing to retry" the second time */
        rc = store_retry(st, rq->id, &n);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    pool_put(s, st);
    if (rc == -EINVAL || rc == -EBUSY || rc == -EALREADY)
        return send_error(c, MHD_HTTP_CONFLICT, NULL, "%s: nothing was changed", err);
    if (rc < 0)
        return send_store_error(s, c, rc, err);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "task_id", rq->id);
    cJSON_AddStringToObject(o, "state", "ONGOING");
    cJSON_AddNumberToObject(o, "retrying", n);
    return send_json(c, MHD_HTTP_ACCEPTED, o, NULL);
}

/* The fields POST /v1/tasks takes. */
static const char *const submit_fields[] = {"handler",      "delay_s",  "args", "id",
                                            "max_attempts", "subtasks", NULL};

static enum MHD_Result post_task(http_server *s, struct MHD_Connection *c, request *rq)
{
    if (rq->len && memchr(rq->body, '\0', rq->len))
        return send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "the body contains a NUL byte");
    const char *text = rq->body ? rq->body : "";
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(text, &end, true);
    if (!j)
        return send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "the body is not valid JSON (at byte %zu)",
                          end ? (size_t)(end - text) : (size_t)0);
    enum MHD_Result ret;
    char *args = NULL, *subtasks = NULL;
    if (!cJSON_IsObject(j)) {
        ret = send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "the body must be a JSON object");
        goto out;
    }
    /* Every field known, and each at most once. */
    bool seen[6] = {false};
    const cJSON *f;
    cJSON_ArrayForEach (f, j) {
        int k = 0;
        while (submit_fields[k] && strcmp(submit_fields[k], f->string) != 0)
            k++;
        if (!submit_fields[k]) {
            ret = send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                             "unknown field '%.64s' (expected handler, args, id, delay_s, "
                             "max_attempts, subtasks)",
                             f->string);
            goto out;
        }
        if (seen[k]) {
            ret = send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "field '%s' is given twice", f->string);
            goto out;
        }
        seen[k] = true;
    }
    submit_req q = {0};
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "handler");
    if (!cJSON_IsString(v)) {
        ret = send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                         v ? "handler must be a string" : "handler is required");
        goto out;
    }
    q.handler = v->valuestring;
    v = cJSON_GetObjectItemCaseSensitive(j, "args");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsObject(v)) {
            ret = send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "args must be a JSON object");
            goto out;
        }
        q.args = args = cJSON_PrintUnformatted(v);
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "id");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v)) {
            ret = send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "id must be a string (a UUID)");
            goto out;
        }
        q.id = v->valuestring;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "delay_s");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0)) {
            ret = send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                             "delay_s must be a number of seconds >= 0");
            goto out;
        }
        q.delay_s = v->valuedouble;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "max_attempts");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 1 ||
            v->valuedouble > 1000) {
            ret = send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                             "max_attempts must be an integer 1..1000");
            goto out;
        }
        q.max_attempts = (int)v->valuedouble;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "subtasks");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsArray(v)) {
            ret = send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                             "subtasks must be a JSON array of argument objects");
            goto out;
        }
        q.subtasks = subtasks = cJSON_PrintUnformatted(v);
    }
    /* The id is chosen here when the client did not: a submission repeated
     * after a lost connection then cannot create a second task, and its
     * -EEXIST means the first one went through. */
    char fresh[BGT_ID_LEN + 1];
    if (!q.id) {
        uuid4(fresh);
        q.id = fresh;
    }
    store *st = pool_get(s);
    store_submit(st, &q, 1);
    if (again(q.rc, st)) {
        store_submit(st, &q, 1);
        if (q.rc == -EEXIST && q.id == fresh)
            q.rc = 0;
    }
    pool_put(s, st);
    switch (q.rc) {
    case 0: {
        char location[64];
        snprintf(location, sizeof location, "/v1/tasks/%s", q.id_out);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "task_id", q.id_out);
        if (q.not_durable) { /* redis.min_replicas_ack: created, on the master only */
            cJSON_AddFalseToObject(o, "durable");
            cJSON_AddStringToObject(o, "warning", q.err);
        }
        ret = send_json(c, MHD_HTTP_ACCEPTED, o, location);
        break;
    }
    case -EEXIST: ret = send_error(c, MHD_HTTP_CONFLICT, NULL, "%s", q.err); break;
    case -E2BIG: ret = send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, NULL, "%s", q.err); break;
    default: ret = send_store_error(s, c, q.rc, q.err); break;
    }
out:
    free(args);
    free(subtasks);
    cJSON_Delete(j);
    return ret;
}

/* ---- SSE ---- */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    ssize_t n = sse_client_read(cls, buf, max);
    if (n == SSE_END)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n == SSE_ABORT)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    return n;
}

static void stream_free(void *cls) { sse_client_release(cls); }

static void io_suspend(void *conn) { MHD_suspend_connection(conn); }

static void io_resume(void *conn) { MHD_resume_connection(conn); }

/* Answer with the stream cl (whose opening is written). */
static enum MHD_Result start_stream(struct MHD_Connection *c, request *rq, sse_client *cl)
{
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024,
                                                               stream_read, cl, stream_free);
    if (!r) {
        sse_client_abandon(cl);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no"); /* proxies: do not buffer */
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    sse_client_attach(cl, c, ci ? ci->connect_fd : -1);
    rq->client = cl; /* closed by the completion callback, whatever happens next */
    enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result sse_task(http_server *s, struct MHD_Connection *c, request *rq)
{
    static const char *const ok[] = {"taskId", "task_id", NULL};
    args_check a;
    const char *bad = unknown_arg(c, ok, &a);
    if (bad)
        return send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                          "unknown query argument '%s' (expected taskId)", bad);
    const char *raw = arg(c, "taskId");
    if (!raw)
        raw = arg(c, "task_id");
    if (!raw)
        return send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "taskId is required");
    char id[BGT_ID_LEN + 1];
    if (!task_id_norm(raw, id))
        return send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                          "taskId must be a task id (a UUID), got '%.40s'", raw);
    const char *last = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
    if (last && !*last)
        last = NULL;
    if (last && !store_event_id_valid(last))
        return send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                          "Last-Event-ID must be an event id from this stream, got '%.48s'", last);
    if (!sse_hub_subscribed(s->hub))
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
                          "the event subscription to Redis is down");
    /* Registered before the record is read, so nothing published in between
     * is missed; the opening drops what the record already shows. */
    sse_client *cl = sse_client_new(s->hub, id, NULL);
    store *st = pool_get(s);
    cJSON *rec = NULL, *replay = NULL;
    int rc = store_get_task(st, id, &rec);
    if (again(rc, st))
        rc = store_get_task(st, id, &rec);
    if (rc == 0 && last) {
        rc = store_events_after(st, id, last, REPLAY_MAX, &replay);
        if (again(rc, st))
            rc = store_events_after(st, id, last, REPLAY_MAX, &replay);
    }
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    pool_put(s, st);
    if (rc < 0) {
        sse_client_abandon(cl);
        cJSON_Delete(rec);
        return send_store_error(s, c, rc, err);
    }
    sse_client_begin(cl, rec, replay, last);
    cJSON_Delete(rec);
    cJSON_Delete(replay);
    return start_stream(c, rq, cl);
}

static enum MHD_Result sse_all(http_server *s, struct MHD_Connection *c, request *rq)
{
    static const char *const ok[] = {"handler", NULL};
    args_check a;
    const char *bad = unknown_arg(c, ok, &a);
    if (bad)
        return send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                          "unknown query argument '%s' (expected handler)", bad);
    const char *hname = arg(c, "handler");
    if (hname && !name_valid(hname))
        return send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                          "invalid handler name '%.64s': expected [a-z0-9][a-z0-9._-]{0,62}",
                          hname);
    if (!sse_hub_subscribed(s->hub))
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
                          "the event subscription to Redis is down");
    return start_stream(c, rq, sse_client_new(s->hub, NULL, hname));
}

/* ---- the dashboard ---- */

/* Its files are open to all, like a login page: they hold nothing secret, and
 * the page asks for the token itself and sends it with each API call. "/" and
 * "/ui" lead to "/ui/", so that the page's relative links resolve. */
static enum MHD_Result serve_ui(http_server *s, struct MHD_Connection *c, const request *rq)
{
    if (!s->ui)
        return send_error(c, MHD_HTTP_NOT_FOUND, NULL,
                          "the dashboard is off (http.ui_dir; see the log at start)");
    if (rq->route == R_ROOT || strcmp(rq->ui_name, "/") == 0)
        return send_body(c, MHD_HTTP_FOUND, xstrdup("see /ui/\n"), "text/plain; charset=utf-8",
                         NULL, "/ui/");
    int rc = ui_files_answer(s->ui, c, rq->ui_name);
    if (rc == UI_NOT_FOUND)
        return send_error(c, MHD_HTTP_NOT_FOUND, NULL, "no such file in the dashboard: /ui/%.100s",
                          rq->ui_name);
    return rc == MHD_YES ? MHD_YES : MHD_NO;
}

/* ---- the access handler ---- */

/* Answer a request that has no body to wait for. */
static enum MHD_Result dispatch(http_server *s, struct MHD_Connection *c, request *rq)
{
    static const char *const none[] = {NULL};
    args_check a;
    const char *bad;
    switch (rq->route) {
    case R_HEALTHZ: return get_healthz(s, c);
    case R_METRICS: return get_metrics(s, c);
    case R_TASKS: return get_tasks(s, c);
    case R_SSE_TASK: return sse_task(s, c, rq);
    case R_SSE_ALL: return sse_all(s, c, rq);
    case R_ROOT:
    case R_UI: return serve_ui(s, c, rq);
    case R_SUBTASKS:
        if (!rq->id[0])
            return send_error(c, MHD_HTTP_NOT_FOUND, NULL, "no task '%s' (task ids are UUIDs)",
                              rq->raw_id);
        return get_subtasks(s, c, rq);
    case R_HOSTS:
    case R_STATS:
    case R_TASK:
        if ((bad = unknown_arg(c, none, &a)))
            return send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                              "unknown query argument '%s' (this path takes none)", bad);
        if (rq->route == R_HOSTS)
            return get_hosts(s, c);
        if (rq->route == R_STATS)
            return get_stats(s, c);
        if (!rq->id[0])
            return send_error(c, MHD_HTTP_NOT_FOUND, NULL, "no task '%s' (task ids are UUIDs)",
                              rq->raw_id);
        return rq->del ? delete_task(s, c, rq) : get_task(s, c, rq);
    default: return send_error(c, MHD_HTTP_NOT_FOUND, NULL, "no such path");
    }
}

/* The first call for a request: headers only. Refusals are answered at once
 * (the connection is then closed, as the body, if any, is not read); the rest
 * wait for the last call, after any body. */
static enum MHD_Result first_call(http_server *s, struct MHD_Connection *c, request *rq,
                                  const char *url, const char *method)
{
    rq->route = route_of(url, rq);
    rq->post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    rq->del = strcmp(method, MHD_HTTP_METHOD_DELETE) == 0;
    if (rq->route == R_ROOT && !s->ui)
        rq->route = R_NONE;
    bool open = rq->route == R_HEALTHZ || rq->route == R_UI || rq->route == R_ROOT ||
                (rq->route == R_METRICS && !s->cfg->http_metrics_auth);
    rq->responded = true;
    if (guard_reserved(rq->conn) && rq->route != R_HEALTHZ)
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
                          "the server has http.max_connections (%d) open; the connections kept "
                          "beyond them answer /healthz only",
                          s->cfg->http_max_connections);
    if (!open && !authorized(s, c))
        return send_error(c, MHD_HTTP_UNAUTHORIZED, NULL,
                          "a valid bearer token is required (Authorization: Bearer <token>)");
    if (rq->route == R_NONE)
        return send_error(c, MHD_HTTP_NOT_FOUND, NULL, "no such path: %.200s", url);
    if (!method_allowed(rq->route, method))
        return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, allowed_methods(rq->route),
                          "%.16s is not allowed on %.200s (allowed: %s)", method, url,
                          allowed_methods(rq->route));
    rq->responded = false;
    if (!rq->post)
        return MHD_YES; /* answered on the last call: the connection can then be reused */
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    /* A retry needs no body, and then no type. */
    bool bodiless = rq->route == R_RETRY && !ct && (!cl || strcmp(cl, "0") == 0);
    rq->responded = !is_json_type(ct) && !bodiless;
    if (rq->responded)
        return send_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, NULL,
                          "the body must be application/json, got '%.64s'", ct ? ct : "");
    if (cl && strtoull(cl, NULL, 10) > s->cfg->http_max_body) {
        rq->responded = true;
        return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
                          "the body is %.20s bytes, over http.max_body (%zu)", cl,
                          s->cfg->http_max_body);
    }
    return MHD_YES;
}

/* Keep a piece of the body, or only count it once it is over the limit. */
static void take_body(http_server *s, request *rq, const char *data, size_t n)
{
    rq->received += n;
    if (rq->too_big)
        return;
    if (rq->len + n > s->cfg->http_max_body) {
        rq->too_big = true;
        free(rq->body);
        rq->body = NULL;
        rq->len = rq->cap = 0;
        return;
    }
    if (rq->len + n + 1 > rq->cap) {
        rq->cap = rq->len + n + 1 > rq->cap * 2 ? rq->len + n + 1 : rq->cap * 2;
        rq->body = xrealloc(rq->body, rq->cap);
    }
    memcpy(rq->body + rq->len, data, n);
    rq->len += n;
    rq->body[rq->len] = '\0';
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    http_server *s = cls;
    request *rq = *con_cls;
    if (!rq) {
        rq = xcalloc(1, sizeof *rq);
        *con_cls = rq;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        rq->conn = ci ? ci->socket_context : NULL;
        enum MHD_Result ok = first_call(s, c, rq, url, method);
        if (rq->responded) /* refused at once: nothing more to wait for */
            guard_received(s->guard, rq->conn);
        return ok;
    }
    if (*upload_size) {
        if (rq->post && !rq->responded)
            take_body(s, rq, upload, *upload_size);
        else
            rq->received += *upload_size; /* a body where none is read: dropped */
        *upload_size = 0;
        /* Past this, the client is only wasting our time: cut it off. */
        return rq->received > DISCARD_FACTOR * s->cfg->http_max_body ? MHD_NO : MHD_YES;
    }
    if (rq->responded)
        return MHD_YES;
    rq->responded = true;
    guard_received(s->guard, rq->conn); /* the whole request is here */
    if (!rq->post)
        return dispatch(s, c, rq);
    if (rq->too_big)
        return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
                          "the body is over http.max_body (%zu bytes)", s->cfg->http_max_body);
    return rq->route == R_RETRY ? post_retry(s, c, rq) : post_task(s, c, rq);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_server *s = cls;
    request *rq = *con_cls;
    if (!rq)
        return;
    guard_idle(s->guard, rq->conn); /* the next request's time starts now */
    if (rq->client)
        sse_client_close(rq->client);
    free(rq->body);
    free(rq);
    *con_cls = NULL;
}

/* Tell the guard where each connection is: http.max_connections and
 * http.max_connections_per_client hold for the whole server (the library's
 * own limits are split between its threads). */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *ad =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const struct sockaddr *sa = ad ? ad->client_addr : NULL;
        socklen_t len = !sa                        ? 0
                        : sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                    : sizeof(struct sockaddr_in);
        *socket_context = fd ? guard_open(s->guard, sa, len, fd->connect_fd) : NULL;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        guard_close(s->guard, *socket_context);
        *socket_context = NULL;
    }
}

static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    http_server *s = cls;
    return guard_admit(s->guard, addr, addrlen) ? MHD_YES : MHD_NO;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_msg(BGT_LOG_DEBUG, "http", "%s", msg);
}

/* ---- start and stop ---- */

/* Bind and listen on "host:port" or "[v6]:port"; fills s->address. */
static int listen_on(http_server *s, const char *where, bool *v6, char *err, size_t errlen)
{
    char host[256], port[16];
    const char *colon;
    if (where[0] == '[') {
        const char *rb = strchr(where, ']');
        if (!rb || rb[1] != ':' || (size_t)(rb - where - 1) >= sizeof host)
            goto bad;
        snprintf(host, sizeof host, "%.*s", (int)(rb - where - 1), where + 1);
        colon = rb + 1;
    } else {
        colon = strrchr(where, ':');
        if (!colon || colon == where || (size_t)(colon - where) >= sizeof host)
            goto bad;
        snprintf(host, sizeof host, "%.*s", (int)(colon - where), where);
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || p < 0 || p > 65535)
        goto bad;
    snprintf(port, sizeof port, "%ld", p);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "http: %s: %s", where, gai_strerror(rc));
        return -EINVAL;
    }
    /* Without a token, only a loopback address: judged on what the name resolved to, before
     * anything is bound. */
    const char *token = s->cfg->http_token;
    char resolved[NI_MAXHOST];
    if ((!token || !*token) &&
        (getnameinfo(ai->ai_addr, ai->ai_addrlen, resolved, sizeof resolved, NULL, 0,
                     NI_NUMERICHOST) != 0 ||
         host_is_loopback(resolved) != 1)) {
        if (!s->cfg->http_allow_insecure) {
            snprintf(err, errlen, "http: " HTTP_INSECURE_FMT, where);
            freeaddrinfo(ai);
            return -EACCES;
        }
        log_warn("http: serving %s without a token (http.allow_insecure): anyone who can reach "
                 "it can submit, read and cancel tasks", where);
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6) /* exactly this address, not the v4 one too */
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    *v6 = ai->ai_family == AF_INET6;
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 256) < 0) {
        int e = errno;
        snprintf(err, errlen, "http: cannot listen on %s: %s", where, strerror(e));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -e;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char numeric[INET6_ADDRSTRLEN] = "?";
    int bound = (int)p;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a6->sin6_addr, numeric, sizeof numeric);
            bound = ntohs(a6->sin6_port);
        } else {
            struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a4->sin_addr, numeric, sizeof numeric);
            bound = ntohs(a4->sin_port);
        }
    }
    snprintf(s->address, sizeof s->address, *v6 ? "[%s]:%d" : "%s:%d", numeric, bound);
    return fd;
bad:
    snprintf(err, errlen, "http: listen address must be host:port or [v6addr]:port, got '%s'",
             where);
    return -EINVAL;
}

/* Every stream holds a socket: make sure the process may open enough. */
static void raise_fd_limit(int connections)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)connections + 256;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn("http: cannot raise the open-files limit to %llu: %s",
                     (unsigned long long)want, strerror(errno));
    }
}

http_server *http_start(const bgt_config *cfg, const char *listen, const redis_addr *addr,
                        metrics *met, registry *reg, char *err, size_t errlen)
{
    http_server *s = xcalloc(1, sizeof *s);
    s->cfg = cfg;
    s->met = met;
    s->reg = reg;
    pthread_mutex_init(&s->pool_lock, NULL);
    pthread_mutex_init(&s->scrape_lock, NULL);
    pthread_cond_init(&s->scrape_cond, NULL);
    pthread_cond_init(&s->pool_cond, NULL);
    for (int i = 0; i < HTTP_THREADS; i++) {
        s->stores[i] = store_open(cfg, addr);
        /* Now rather than on first use, so the server's open files stay put
         * while it serves; one that fails connects on its first request. */
        store_connect(s->stores[i]);
    }
    if (*cfg->http_ui_dir) {
        char why[512];
        if (ui_files_load(cfg->http_ui_dir, &s->ui, why, sizeof why) == 0)
            log_info("http: dashboard at /ui/: %zu files from %s", ui_files_count(s->ui),
                     cfg->http_ui_dir);
        else
            log_warn("http: no dashboard: %s (http.ui_dir)", why);
    }
    bool v6 = false;
    int fd = listen_on(s, listen, &v6, err, errlen);
    if (fd < 0)
        goto fail;
    raise_fd_limit(cfg->http_max_connections + GUARD_RESERVE);
    guard_limits gl = {cfg->http_max_connections, cfg->http_max_per_client,
                       cfg->http_request_timeout_s};
    if (!(s->guard = guard_new(&gl, err, errlen))) {
        close(fd);
        goto fail;
    }
    sse_io io = {io_suspend, io_resume};
    s->hub = sse_hub_start(cfg, addr, &io, met, err, errlen);
    if (!s->hub) {
        close(fd);
        goto fail;
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    s->d = MHD_start_daemon(
        flags, 0, on_accept, s, on_request, s, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)HTTP_THREADS, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(cfg->http_max_connections + GUARD_RESERVE) * HTTP_THREADS,
        MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)HTTP_IDLE_TIMEOUT_S, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
        MHD_OPTION_END);
    if (!s->d) {
        snprintf(err, errlen, "http: libmicrohttpd could not start on %s", s->address);
        close(fd);
        goto fail;
    }
    return s;
fail:
    http_stop(s);
    return NULL;
}

const char *http_address(const http_server *s) { return s->address; }

void http_stop(http_server *s)
{
    if (!s)
        return;
    /* Streams end first (their parked connections are resumed), so that no
     * connection is suspended when the library is stopped. */
    if (s->hub)
        sse_hub_shutdown(s->hub);
    if (s->d)
        MHD_stop_daemon(s->d);
    guard_free(s->guard);
    sse_hub_free(s->hub);
    ui_files_free(s->ui); /* after the daemon: responses point into it */
    for (int i = 0; i < HTTP_THREADS; i++)
        store_free(s->stores[i]);
    pthread_mutex_destroy(&s->pool_lock);
    pthread_mutex_destroy(&s->scrape_lock);
    pthread_cond_destroy(&s->scrape_cond);
    cJSON_Delete(s->scrape);
    pthread_cond_destroy(&s->pool_cond);
    free(s);
}

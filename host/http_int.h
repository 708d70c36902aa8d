/*
 * http_int.h - what the files of the HTTP interface share: the server, one
 * request across the access handler's calls, the pool of request stores and
 * the JSON answers. http.c: the server, the access handler, the SSE streams
 * and the dashboard's files; http_route.c: routing, the bearer token and the
 * checks of a request's line; http_api.c: the REST endpoints, /healthz and
 * /metrics; http_ops.c: the operator's write operations. Only these files
 * include <microhttpd.h>.
 */
#ifndef BGT_HTTP_INT_H
#define BGT_HTTP_INT_H

#include <pthread.h>
#include <stdbool.h>

#include <microhttpd.h>

#include "http.h"
#include "http_guard.h"
#include "http_ui.h"
#include "sse.h"

/* libmicrohttpd threads, and as many request stores. */
#define HTTP_THREADS 4
/* Largest `limit` of GET /v1/tasks and GET /v1/tasks/<id>/subtasks. */
#define LIST_LIMIT_MAX 1000
/* How old the live hosts may be that say a submission's handler has no host. */
#define HTTP_HOSTS_EVERY_S 1.0

typedef struct log_follow log_follow; /* a GET /v1/tasks/<id>/logs?follow=1 (http_logs.c) */

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
    /* The live hosts (store_list_hosts), read at most once per HTTP_HOSTS_EVERY_S for
     * the warnings of submissions and records; NULL before the first reading and when
     * Redis did not answer. Under hosts_lock. */
    pthread_mutex_t hosts_lock;
    cJSON *hosts;
    double hosts_at; /* mono_s of that reading */
    char address[96];
    /* The followers of task logs and their poller (http_logs.c), under logs_lock. */
    pthread_mutex_t logs_lock;
    pthread_cond_t logs_cond;
    log_follow *followers;
    pthread_t logs_poller;
    bool logs_started, logs_stop;
};

typedef enum route {
    R_NONE,
    R_HEALTHZ,
    R_METRICS,
    R_TASKS,
    R_TASK,
    R_SUBTASKS, /* /v1/tasks/<id>/subtasks */
    R_RETRY,    /* /v1/tasks/<id>/retry */
    R_BULK,     /* /v1/tasks/retry, /v1/tasks/purge, /v1/tasks/cancel (request.bulk) */
    R_PAUSE,    /* /v1/handlers/<name>/pause or /resume (request.handler, request.resume) */
    R_LOGS,     /* /v1/tasks/<id>/logs */
    R_HOSTS,
    R_HANDLERS,
    R_HANDLER, /* /v1/handlers/<name> */
    R_HISTORY,
    R_STATS,
    R_SSE_TASK,
    R_SSE_ALL,
    R_ROOT, /* "/": to the dashboard */
    R_UI,   /* "/ui" and what is under it */
} route;

/* One request across the access handler's calls. */
typedef struct request {
    route route;
    char id[BGT_ID_LEN + 1];       /* R_TASK and below: the id, lower-case; "" if not a task id */
    char raw_id[48];               /* R_TASK and below: what the path said, for messages */
    char ui_name[UI_NAME_MAX + 2]; /* R_UI: what follows "/ui/"; "/" for "/ui" itself */
    char handler[72];              /* R_PAUSE, R_HANDLER: the handler name in the path (cut if
                                      longer) */
    bool resume;                   /* R_PAUSE: resume, not pause */
    int bulk;                      /* R_BULK: the operation (a bulk_op) */
    bool post, del;                /* the method, when it is not GET or HEAD */
    guard_conn *conn;              /* the connection's slot in the guard */
    bool responded;
    char *body; /* POST body, NUL-terminated */
    size_t len, cap;
    size_t received; /* body bytes received, kept or not */
    bool too_big;
    sse_client *client; /* an SSE stream, closed when the request completes */
    log_follow *logs;   /* a task's log followed, closed when the request completes */
} request;

/* The query must hold only the named arguments. */
typedef struct args_check {
    const char *const *allowed;
    char bad[64];
} args_check;

/* ---- http.c: what every endpoint uses ---- */

/* A store for one request (one of the pool); waits while all are in use. Give it back with
 * http__pool_put. */
store *http__pool_get(http_server *s);
void http__pool_put(http_server *s, store *st);
/*
 * A call on st failed with rc: true when it was -EIO and a new connection is
 * up now, so the caller should make the call once more (calls that can be
 * repeated safely only).
 */
bool http__again(int rc, store *st);
/* Queue body (malloc'd; ownership passes here) with the given status and Content-Type,
 * and an Allow and a Location header when not NULL. */
enum MHD_Result http__send_body(struct MHD_Connection *c, unsigned status, char *body,
                                const char *ctype, const char *allow, const char *location);
/* Queue o (freed here) as JSON, with a Location header when not NULL. */
enum MHD_Result http__send_json(struct MHD_Connection *c, unsigned status, cJSON *o,
                                const char *location);
/* {"error": {"code", "message"}} with this status, and an Allow header for a 405. */
__attribute__((format(printf, 4, 5))) enum MHD_Result http__send_error(struct MHD_Connection *c,
                                                                       unsigned status,
                                                                       const char *allow,
                                                                       const char *fmt, ...);
/* A 409 conflict with a "reason" a client can tell cases apart by ("running", ...). */
__attribute__((format(printf, 3, 4))) enum MHD_Result
http__send_conflict(struct MHD_Connection *c, const char *reason, const char *fmt, ...);
/* A store call failed with rc (err: the store's text): 404 unknown, 400 refused input, 503
 * Redis down or refusing (counted as a Redis error). */
enum MHD_Result http__send_store_error(http_server *s, struct MHD_Connection *c, int rc,
                                       const char *err);
/* ---- http_route.c ---- */

/* Whether the request carries the bearer token (or none is configured). */
bool http__authorized(http_server *s, struct MHD_Connection *c);
/* Lower-case copy of a task id into out (37 bytes); false if s is not one. */
bool http__task_id_norm(const char *s, char *out);
/* The route of url; fills rq's task id and the like from it. R_NONE for none. */
route http__route_of(const char *url, request *rq);
/* The methods a route takes, as an Allow header; HEAD goes with GET. */
const char *http__allowed_methods(route r);
/* Whether route r takes method. */
bool http__method_allowed(route r, const char *method);
/* application/json, with or without parameters such as charset. */
bool http__is_json_type(const char *ct);
/* NULL when the query holds only the allowed arguments (a NULL-terminated list), else the
 * first other one (in a). */
const char *http__unknown_arg(struct MHD_Connection *c, const char *const *allowed, args_check *a);
/* The query argument name, or NULL when it is missing or empty. */
const char *http__arg(struct MHD_Connection *c, const char *name);

/* ---- http_api.c: the endpoints; each answers its request ---- */

enum MHD_Result http__get_healthz(http_server *s, struct MHD_Connection *c);
enum MHD_Result http__get_metrics(http_server *s, struct MHD_Connection *c);
enum MHD_Result http__get_tasks(http_server *s, struct MHD_Connection *c);
enum MHD_Result http__get_task(http_server *s, struct MHD_Connection *c, const request *rq);
enum MHD_Result http__delete_task(http_server *s, struct MHD_Connection *c, const request *rq);
enum MHD_Result http__get_hosts(http_server *s, struct MHD_Connection *c);
enum MHD_Result http__get_handlers(http_server *s, struct MHD_Connection *c, const request *rq);
enum MHD_Result http__get_stats(http_server *s, struct MHD_Connection *c);
enum MHD_Result http__get_subtasks(http_server *s, struct MHD_Connection *c, const request *rq);
enum MHD_Result http__post_retry(http_server *s, struct MHD_Connection *c, const request *rq);
enum MHD_Result http__post_task(http_server *s, struct MHD_Connection *c, request *rq);

/* ---- http_ops.c: the operator's write operations ---- */

/* POST /v1/tasks/retry|purge|cancel: 200 (dry run) or 202 with what store_bulk answers. */
enum MHD_Result http__post_bulk(http_server *s, struct MHD_Connection *c, const request *rq);
/* POST /v1/handlers/<name>/pause|resume: 200 with view_pause's answer. */
enum MHD_Result http__post_pause(http_server *s, struct MHD_Connection *c, const request *rq);
/* ---- http_read.c: the operators' reads beyond the records ---- */

/* GET /v1/history?handler=&since=&until=&step= */
enum MHD_Result http__get_history(http_server *s, struct MHD_Connection *c);

/* ---- http_logs.c: a task's log, a page of it or followed ---- */

/* GET /v1/tasks/<id>/logs?after=&limit=&follow= */
enum MHD_Result http__get_logs(http_server *s, struct MHD_Connection *c, request *rq);
/* The request of a follower completed: let go of it. */
void http__logs_close(http_server *s, log_follow *f);
/* Stop the poller and end every follower's stream (before the library stops). */
void http__logs_stop(http_server *s);
/* Free what is left of the followers (after the library stopped). */
void http__logs_free(http_server *s);

#endif

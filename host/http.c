/*
 * http.c - the HTTP interface on libmicrohttpd: the server, the access
 * handler, JSON errors, the request stores, and the glue that lets the SSE
 * hub (sse.c) park and wake streams. Routing, the bearer token and the
 * checks of a request's line and headers are in http_route.c; the REST
 * endpoints, /healthz and /metrics in http_api.c.
 *
 * A request is refused from the access handler's first call (headers only)
 * or answered from its last one, after the body (POST bodies are kept up to
 * http.max_body). Redis calls use a small pool of request stores, one per
 * libmicrohttpd thread.
 */
#include "http_int.h"

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

#include "util.h"

/* Seconds a connection may stay silent while a response is written to it (waiting for a
 * request is bounded by http.request_timeout; parked SSE streams do not time out). */
#define HTTP_IDLE_TIMEOUT_S 60
/* Most events replayed for a Last-Event-ID. */
#define REPLAY_MAX 10000
/* A body is read and dropped up to this many times http.max_body before the
 * connection is cut, so an oversized chunked upload still gets its 413. */
#define DISCARD_FACTOR 16

/* ---- the request store pool ---- */

/* A store for one request; waits while all are in use. */
store *http__pool_get(http_server *s)
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
bool http__again(int rc, store *st) { return rc == -EIO && store_connect(st) == 0; }

void http__pool_put(http_server *s, store *st)
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
enum MHD_Result http__send_body(struct MHD_Connection *c, unsigned status, char *body,
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
enum MHD_Result http__send_json(struct MHD_Connection *c, unsigned status, cJSON *o,
                                const char *location)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        return MHD_NO;
    char *body = xasprintf("%s\n", s);
    free(s);
    return http__send_body(c, status, body, "application/json", NULL, location);
}

/* {"error": {"code", "message", "reason"}} (no reason when NULL), with Allow for a 405. */
__attribute__((format(printf, 5, 0))) static enum MHD_Result
send_error(struct MHD_Connection *c, unsigned status, const char *allow, const char *reason,
           const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "code", status_code(status));
    cJSON_AddStringToObject(e, "message", msg);
    if (reason)
        cJSON_AddStringToObject(e, "reason", reason);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        return MHD_NO;
    char *body = xasprintf("%s\n", s);
    free(s);
    return http__send_body(c, status, body, "application/json", allow, NULL);
}

enum MHD_Result http__send_error(struct MHD_Connection *c, unsigned status, const char *allow,
                                 const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    enum MHD_Result ret = send_error(c, status, allow, NULL, fmt, ap);
    va_end(ap);
    return ret;
}

enum MHD_Result http__send_conflict(struct MHD_Connection *c, const char *reason,
                                    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    enum MHD_Result ret = send_error(c, MHD_HTTP_CONFLICT, NULL, reason, fmt, ap);
    va_end(ap);
    return ret;
}

/* A store call failed: 404 unknown, 400 refused input, 503 Redis down or refusing. */
enum MHD_Result http__send_store_error(http_server *s, struct MHD_Connection *c, int rc,
                                       const char *err)
{
    switch (rc) {
    case -ENOENT: return http__send_error(c, MHD_HTTP_NOT_FOUND, NULL, "%s", err);
    case -EINVAL: return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "%s", err);
    case -EIO:
    case -EPROTO:
        metrics_inc(s->met, MC_REDIS_ERRORS, 1);
        return http__send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, "redis: %s", err);
    default: return http__send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "%s", strerror(-rc));
    }
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
    const char *bad = http__unknown_arg(c, ok, &a);
    if (bad)
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                "unknown query argument '%s' (expected taskId)", bad);
    const char *raw = http__arg(c, "taskId");
    if (!raw)
        raw = http__arg(c, "task_id");
    if (!raw)
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL, "taskId is required");
    char id[BGT_ID_LEN + 1];
    if (!http__task_id_norm(raw, id))
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                "taskId must be a task id (a UUID), got '%.40s'", raw);
    const char *last = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
    if (last && !*last)
        last = NULL;
    if (last && !store_event_id_valid(last))
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                "Last-Event-ID must be an event id from this stream, got '%.48s'",
                                last);
    if (!sse_hub_subscribed(s->hub))
        return http__send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
                                "the event subscription to Redis is down");
    /* Registered before the record is read, so nothing published in between
     * is missed; the opening drops what the record already shows. */
    sse_client *cl = sse_client_new(s->hub, id, NULL);
    store *st = http__pool_get(s);
    cJSON *rec = NULL, *replay = NULL;
    int rc = store_get_task(st, id, &rec);
    if (http__again(rc, st))
        rc = store_get_task(st, id, &rec);
    if (rc == 0 && last) {
        rc = store_events_after(st, id, last, REPLAY_MAX, &replay);
        if (http__again(rc, st))
            rc = store_events_after(st, id, last, REPLAY_MAX, &replay);
    }
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    http__pool_put(s, st);
    if (rc < 0) {
        sse_client_abandon(cl);
        cJSON_Delete(rec);
        return http__send_store_error(s, c, rc, err);
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
    const char *bad = http__unknown_arg(c, ok, &a);
    if (bad)
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                "unknown query argument '%s' (expected handler)", bad);
    const char *hname = http__arg(c, "handler");
    if (hname && !name_valid(hname))
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                "invalid handler name '%.64s': expected [a-z0-9][a-z0-9._-]{0,62}",
                                hname);
    if (!sse_hub_subscribed(s->hub))
        return http__send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
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
        return http__send_error(c, MHD_HTTP_NOT_FOUND, NULL,
                                "the dashboard is off (http.ui_dir; see the log at start)");
    if (rq->route == R_ROOT || strcmp(rq->ui_name, "/") == 0)
        return http__send_body(c, MHD_HTTP_FOUND, xstrdup("see /ui/\n"),
                               "text/plain; charset=utf-8", NULL, "/ui/");
    int rc = ui_files_answer(s->ui, c, rq->ui_name);
    if (rc == UI_NOT_FOUND)
        return http__send_error(c, MHD_HTTP_NOT_FOUND, NULL,
                                "no such file in the dashboard: /ui/%.100s", rq->ui_name);
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
    case R_HEALTHZ: return http__get_healthz(s, c);
    case R_METRICS: return http__get_metrics(s, c);
    case R_TASKS: return http__get_tasks(s, c);
    case R_SSE_TASK: return sse_task(s, c, rq);
    case R_SSE_ALL: return sse_all(s, c, rq);
    case R_ROOT:
    case R_UI: return serve_ui(s, c, rq);
    case R_SUBTASKS:
        if (!rq->id[0])
            return http__send_error(c, MHD_HTTP_NOT_FOUND, NULL,
                                    "no task '%s' (task ids are UUIDs)", rq->raw_id);
        return http__get_subtasks(s, c, rq);
    case R_HISTORY: return http__get_history(s, c);
    case R_LOGS: return http__get_logs(s, c, rq);
    case R_HOSTS:
    case R_HANDLERS:
    case R_HANDLER:
    case R_STATS:
    case R_TASK:
        if ((bad = http__unknown_arg(c, none, &a)))
            return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                    "unknown query argument '%s' (this path takes none)", bad);
        if (rq->route == R_HOSTS)
            return http__get_hosts(s, c);
        if (rq->route == R_HANDLERS || rq->route == R_HANDLER)
            return http__get_handlers(s, c, rq);
        if (rq->route == R_STATS)
            return http__get_stats(s, c);
        if (!rq->id[0])
            return http__send_error(c, MHD_HTTP_NOT_FOUND, NULL,
                                    "no task '%s' (task ids are UUIDs)", rq->raw_id);
        return rq->del ? http__delete_task(s, c, rq) : http__get_task(s, c, rq);
    default: return http__send_error(c, MHD_HTTP_NOT_FOUND, NULL, "no such path");
    }
}

/* The first call for a request: headers only. Refusals are answered at once
 * (the connection is then closed, as the body, if any, is not read); the rest
 * wait for the last call, after any body. */
static enum MHD_Result first_call(http_server *s, struct MHD_Connection *c, request *rq,
                                  const char *url, const char *method)
{
    rq->route = http__route_of(url, rq);
    rq->post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    rq->del = strcmp(method, MHD_HTTP_METHOD_DELETE) == 0;
    if (rq->route == R_ROOT && !s->ui)
        rq->route = R_NONE;
    bool open = rq->route == R_HEALTHZ || rq->route == R_UI || rq->route == R_ROOT ||
                (rq->route == R_METRICS && !s->cfg->http_metrics_auth);
    rq->responded = true;
    if (guard_reserved(rq->conn) && rq->route != R_HEALTHZ)
        return http__send_error(
            c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
            "the server has http.max_connections (%d) open; the connections kept "
            "beyond them answer /healthz only",
            s->cfg->http_max_connections);
    if (!open && !http__authorized(s, c))
        return http__send_error(c, MHD_HTTP_UNAUTHORIZED, NULL,
                                "a valid bearer token is required (Authorization: Bearer <token>)");
    if (rq->route == R_NONE)
        return http__send_error(c, MHD_HTTP_NOT_FOUND, NULL, "no such path: %.200s", url);
    if (!http__method_allowed(rq->route, method))
        return http__send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, http__allowed_methods(rq->route),
                                "%.16s is not allowed on %.200s (allowed: %s)", method, url,
                                http__allowed_methods(rq->route));
    rq->responded = false;
    if (!rq->post)
        return MHD_YES; /* answered on the last call: the connection can then be reused */
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    /* A retry, pause or resume needs no body, and then no type. */
    bool bodiless = (rq->route == R_RETRY || rq->route == R_PAUSE) && !ct &&
                    (!cl || strcmp(cl, "0") == 0);
    rq->responded = !http__is_json_type(ct) && !bodiless;
    if (rq->responded)
        return http__send_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, NULL,
                                "the body must be application/json, got '%.64s'", ct ? ct : "");
    if (cl && strtoull(cl, NULL, 10) > s->cfg->http_max_body) {
        rq->responded = true;
        return http__send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
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
        return http__send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
                                "the body is over http.max_body (%zu bytes)",
                                s->cfg->http_max_body);
    switch (rq->route) {
    case R_RETRY: return http__post_retry(s, c, rq);
    case R_BULK: return http__post_bulk(s, c, rq);
    case R_PAUSE: return http__post_pause(s, c, rq);
    default: return http__post_task(s, c, rq);
    }
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
    if (rq->logs)
        http__logs_close(s, rq->logs);
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
        socklen_t len = !sa                         ? 0
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
    if ((!token || !*token) && (getnameinfo(ai->ai_addr, ai->ai_addrlen, resolved, sizeof resolved,
                                            NULL, 0, NI_NUMERICHOST) != 0 ||
                                host_is_loopback(resolved) != 1)) {
        if (!s->cfg->http_allow_insecure) {
            snprintf(err, errlen, "http: " HTTP_INSECURE_FMT, where);
            freeaddrinfo(ai);
            return -EACCES;
        }
        log_warn("http: serving %s without a token (http.allow_insecure): anyone who can reach "
                 "it can submit, read and cancel tasks",
                 where);
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
    pthread_mutex_init(&s->hosts_lock, NULL);
    pthread_cond_init(&s->scrape_cond, NULL);
    pthread_cond_init(&s->pool_cond, NULL);
    pthread_mutex_init(&s->logs_lock, NULL);
    pthread_cond_init(&s->logs_cond, NULL);
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
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT_S, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_EXTERNAL_LOGGER,
        on_mhd_log, s, MHD_OPTION_END);
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
    http__logs_stop(s);
    if (s->d)
        MHD_stop_daemon(s->d);
    http__logs_free(s);
    guard_free(s->guard);
    sse_hub_free(s->hub);
    ui_files_free(s->ui); /* after the daemon: responses point into it */
    for (int i = 0; i < HTTP_THREADS; i++)
        store_free(s->stores[i]);
    pthread_mutex_destroy(&s->pool_lock);
    pthread_mutex_destroy(&s->scrape_lock);
    pthread_cond_destroy(&s->scrape_cond);
    cJSON_Delete(s->scrape);
    pthread_mutex_destroy(&s->hosts_lock);
    cJSON_Delete(s->hosts);
    pthread_mutex_destroy(&s->logs_lock);
    pthread_cond_destroy(&s->logs_cond);
    pthread_cond_destroy(&s->pool_cond);
    free(s);
}

/*
 * http_logs.c - a task's log over HTTP: GET /v1/tasks/<id>/logs (a page of
 * the lines kept) and ?follow=1, the lines as Server-Sent Events: those kept
 * first, then new ones as the task's hosts write them, and server_close once
 * the task has ended and its last lines are sent.
 *
 * Lines reach Redis with the writes of the task's host (no event announces
 * them), so a follower is fed by polling: one poller thread, started with the
 * first follower, reads the new lines of every follower each
 * HTTP_LOGS_POLL_S, through a request store. A follower with nothing to send
 * is parked (its connection suspended) until the poller has something, or
 * finds that its client hung up.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "events.h"
#include "http_int.h"
#include "util.h"

/* How often followers are polled, and how often an idle one gets a keep-alive. */
#define HTTP_LOGS_POLL_S 0.25
#define HTTP_LOGS_KEEPALIVE_S 15.0
/* Lines read per poll of one follower, at most (the rest: next poll). */
#define HTTP_LOGS_BATCH 1000

struct log_follow {
    http_server *s;
    char id[BGT_ID_LEN + 1];
    struct MHD_Connection *conn;
    int fd;
    /* Under s->logs_lock: */
    long long last;   /* the last line sent (queued) */
    char *out;        /* text queued for the client, from off */
    size_t len, off, cap;
    bool parked;      /* suspended, waiting for text */
    bool ended;       /* server_close is queued: the stream ends once it is sent */
    bool abort;       /* the client hung up, or the server stops */
    bool closed;      /* the request completed: the poller lets go of it */
    double quiet_since; /* mono_s of the last text queued */
    int refs;         /* the request's, the poller's */
    log_follow *next; /* s->followers */
};

static void follow_unref(log_follow *f)
{
    if (--f->refs > 0)
        return;
    free(f->out);
    free(f);
}

/* Queue text for f. (logs_lock) */
static void queue_text(log_follow *f, const char *text, size_t n)
{
    if (f->len + n + 1 > f->cap) {
        if (f->off > 0) {
            memmove(f->out, f->out + f->off, f->len - f->off);
            f->len -= f->off;
            f->off = 0;
        }
        while (f->len + n + 1 > f->cap)
            f->cap = f->cap ? f->cap * 2 : 4096;
        f->out = xrealloc(f->out, f->cap);
    }
    memcpy(f->out + f->len, text, n);
    f->len += n;
    f->quiet_since = mono_s();
}

/* Queue the lines of a store_task_logs answer as events, and server_close after them when
 * the task has ended. (logs_lock) */
static void queue_lines(log_follow *f, const cJSON *page, bool ended)
{
    const cJSON *l;
    cJSON_ArrayForEach (l, cJSON_GetObjectItemCaseSensitive(page, "lines")) {
        char *data = cJSON_PrintUnformatted(l);
        long long seq = (long long)cJSON_GetObjectItemCaseSensitive(l, "seq")->valuedouble;
        char *ev = xasprintf("event: log\nid: %lld\ndata: %s\n\n", seq, data);
        queue_text(f, ev, strlen(ev));
        free(ev);
        free(data);
        if (seq > f->last)
            f->last = seq;
    }
    if (ended && cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(page, "lines")) <
                     HTTP_LOGS_BATCH) {
        char close_ev[64];
        int n = snprintf(close_ev, sizeof close_ev, "event: %s\ndata: {}\n\n",
                         ev_stream_end_name());
        queue_text(f, close_ev, (size_t)n);
        f->ended = true;
    }
}

/* Whether the peer of fd has hung up (no byte waits, the stream is closed). */
static bool hung_up(int fd)
{
    char c;
    if (fd < 0)
        return false;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Read the new lines of f (not under the lock). */
static void poll_one(http_server *s, log_follow *f, long long after)
{
    store *st = http__pool_get(s);
    cJSON *page = NULL;
    bool ended = false;
    int rc = store_task_logs(st, f->id, after, HTTP_LOGS_BATCH, &page, &ended);
    if (http__again(rc, st))
        rc = store_task_logs(st, f->id, after, HTTP_LOGS_BATCH, &page, &ended);
    http__pool_put(s, st);
    pthread_mutex_lock(&s->logs_lock);
    if (rc == 0 && f->last == after && !f->ended)
        queue_lines(f, page, ended);
    else if (rc == -ENOENT && !f->ended) /* the record went (purged, retention) */
        queue_lines(f, NULL, true);
    pthread_mutex_unlock(&s->logs_lock);
    cJSON_Delete(page);
}

static void *poller_main(void *arg)
{
    http_server *s = arg;
    pthread_mutex_lock(&s->logs_lock);
    while (!s->logs_stop) {
        /* Let go of the completed; take a reference on the others for this pass. */
        log_follow **pp = &s->followers;
        size_t n = 0;
        for (log_follow *f = *pp; f; f = *pp) {
            if (f->closed) {
                *pp = f->next;
                follow_unref(f);
                continue;
            }
            f->refs++;
            n++;
            pp = &f->next;
        }
        log_follow **v = xcalloc(n + 1, sizeof *v);
        size_t k = 0;
        for (log_follow *f = s->followers; f; f = f->next)
            v[k++] = f;
        pthread_mutex_unlock(&s->logs_lock);
        for (size_t i = 0; i < n; i++) {
            log_follow *f = v[i];
            pthread_mutex_lock(&s->logs_lock);
            bool skip = f->ended || f->abort || f->closed;
            long long after = f->last;
            pthread_mutex_unlock(&s->logs_lock);
            if (!skip)
                poll_one(s, f, after);
            pthread_mutex_lock(&s->logs_lock);
            if (!f->ended && !f->abort && mono_s() - f->quiet_since >= HTTP_LOGS_KEEPALIVE_S)
                queue_text(f, ": keep-alive\n\n", 14);
            bool wake = false;
            if (f->parked && (f->len > f->off || f->ended || hung_up(f->fd))) {
                if (f->len == f->off && !f->ended)
                    f->abort = true;
                f->parked = false;
                wake = true;
            }
            pthread_mutex_unlock(&s->logs_lock);
            if (wake)
                MHD_resume_connection(f->conn);
            pthread_mutex_lock(&s->logs_lock);
            follow_unref(f);
            pthread_mutex_unlock(&s->logs_lock);
        }
        free(v);
        pthread_mutex_lock(&s->logs_lock);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long ns = ts.tv_nsec + (long)(HTTP_LOGS_POLL_S * 1e9);
        ts.tv_sec += ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        if (!s->logs_stop)
            pthread_cond_timedwait(&s->logs_cond, &s->logs_lock, &ts);
    }
    pthread_mutex_unlock(&s->logs_lock);
    return NULL;
}

static ssize_t follow_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    log_follow *f = cls;
    http_server *s = f->s;
    (void)pos;
    pthread_mutex_lock(&s->logs_lock);
    ssize_t n;
    if (f->len > f->off) {
        n = (ssize_t)(f->len - f->off < max ? f->len - f->off : max);
        memcpy(buf, f->out + f->off, (size_t)n);
        f->off += (size_t)n;
    } else if (f->abort) {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (f->ended) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        f->parked = true;
        MHD_suspend_connection(f->conn);
        n = 0;
    }
    pthread_mutex_unlock(&s->logs_lock);
    return n;
}

static void follow_free(void *cls)
{
    log_follow *f = cls;
    http_server *s = f->s;
    pthread_mutex_lock(&s->logs_lock);
    follow_unref(f); /* the response's */
    pthread_mutex_unlock(&s->logs_lock);
}

void http__logs_close(http_server *s, log_follow *f)
{
    pthread_mutex_lock(&s->logs_lock);
    f->closed = true;
    follow_unref(f); /* the request's */
    pthread_mutex_unlock(&s->logs_lock);
}

void http__logs_stop(http_server *s)
{
    pthread_mutex_lock(&s->logs_lock);
    s->logs_stop = true;
    pthread_cond_broadcast(&s->logs_cond);
    bool started = s->logs_started;
    pthread_mutex_unlock(&s->logs_lock);
    if (started)
        pthread_join(s->logs_poller, NULL);
    /* End every stream; resume the parked ones so that the library can close them. */
    pthread_mutex_lock(&s->logs_lock);
    for (log_follow *f = s->followers; f; f = f->next) {
        f->abort = true;
        if (f->parked) {
            f->parked = false;
            MHD_resume_connection(f->conn);
        }
    }
    pthread_mutex_unlock(&s->logs_lock);
}

void http__logs_free(http_server *s)
{
    pthread_mutex_lock(&s->logs_lock);
    while (s->followers) {
        log_follow *f = s->followers;
        s->followers = f->next;
        follow_unref(f);
    }
    pthread_mutex_unlock(&s->logs_lock);
}

/* The number of ?after=, Last-Event-ID: a line number 0..2^53. */
static bool parse_seq(const char *s, long long *out)
{
    long v;
    if (!s || !parse_long(s, 0, (1L << 53), &v))
        return false;
    *out = v;
    return true;
}

enum MHD_Result http__get_logs(http_server *s, struct MHD_Connection *c, request *rq)
{
    static const char *const ok[] = {"after", "limit", "follow", NULL};
    args_check a;
    const char *bad = http__unknown_arg(c, ok, &a);
    if (bad)
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                "unknown query argument '%s' (expected after, limit, follow)", bad);
    const char *after_s = http__arg(c, "after"), *lim = http__arg(c, "limit"),
               *follow_s = http__arg(c, "follow");
    long long after = 0;
    long limit = 200;
    if (after_s && !parse_seq(after_s, &after))
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                "after must be a line number (seq) 0..2^53, got '%.32s'", after_s);
    if (lim && !parse_long(lim, 1, 1000, &limit))
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                "limit must be an integer 1..1000, got '%.32s'", lim);
    bool follow = false;
    if (follow_s) {
        if (strcmp(follow_s, "1") != 0 && strcmp(follow_s, "true") != 0 &&
            strcmp(follow_s, "0") != 0 && strcmp(follow_s, "false") != 0)
            return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                    "follow must be 1 or 0, got '%.32s'", follow_s);
        follow = follow_s[0] == '1' || follow_s[0] == 't';
    }
    const char *last = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
    if (follow && last && *last && !parse_seq(last, &after))
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                "Last-Event-ID must be a line number (seq) from this stream, got "
                                "'%.32s'",
                                last);
    if (!rq->id[0])
        return http__send_error(c, MHD_HTTP_NOT_FOUND, NULL, "no task '%s' (task ids are UUIDs)",
                                rq->raw_id);
    store *st = http__pool_get(s);
    cJSON *page = NULL;
    bool ended = false;
    int n = follow ? HTTP_LOGS_BATCH : (int)limit;
    int rc = store_task_logs(st, rq->id, after, n, &page, &ended);
    if (http__again(rc, st))
        rc = store_task_logs(st, rq->id, after, n, &page, &ended);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    http__pool_put(s, st);
    if (rc < 0)
        return http__send_store_error(s, c, rc, err);
    if (!follow)
        return http__send_json(c, MHD_HTTP_OK, page, NULL);

    log_follow *f = xcalloc(1, sizeof *f);
    f->s = s;
    snprintf(f->id, sizeof f->id, "%s", rq->id);
    f->conn = c;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    f->fd = ci ? ci->connect_fd : -1;
    f->last = after;
    f->refs = 3; /* the request's, the response's, the poller list's */
    queue_lines(f, page, ended);
    cJSON_Delete(page);
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, follow_read, f, follow_free);
    if (!r) {
        free(f->out);
        free(f);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    pthread_mutex_lock(&s->logs_lock);
    f->next = s->followers;
    s->followers = f;
    f->abort = s->logs_stop; /* the server stops: no stream starts */
    int prc = 0;
    if (!s->logs_started && !s->logs_stop) {
        prc = pthread_create(&s->logs_poller, NULL, poller_main, s);
        s->logs_started = prc == 0;
    }
    pthread_mutex_unlock(&s->logs_lock);
    if (prc != 0)
        log_err("http: cannot start the log followers' thread: %s", strerror(prc));
    rq->logs = f; /* closed by the completion callback, whatever happens next */
    enum MHD_Result res = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return res;
}

/*
 * sse.c - the SSE event hub: one pattern subscriber fanned out to per-client
 * output queues, keep-alives, and hang-up detection for parked streams.
 *
 * Each event is formatted once into a message that every stream it goes to
 * queues by reference (sse_queue.h). The bytes all queues hold are capped
 * (http.sse_max_queued): past the cap, the stream furthest behind is
 * dropped, its queue replaced by an end event that says why.
 *
 * Locking: one mutex guards the client list and every client's queue and
 * flags. Connections are suspended with the lock held (from the reader, so a
 * wake-up can never come before the park) and resumed after it is released
 * (collected in a wakelist), so the hub never calls into the HTTP library
 * while holding its own lock across a resume.
 */
#include "sse.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "events.h"
#include "sse_queue.h"
#include "util.h"

/* A live event held for a task client until its opening is written. */
typedef struct held {
    struct held *next;
    sse_msg *msg;  /* the formatted event (a reference) */
    char sid[48];  /* its stream id, "" if none */
    int64_t ts_ms; /* the payload's ts_ms */
    bool progress; /* a progress update (EV_UPDATED) */
    bool terminal;
} held;

struct sse_client {
    sse_hub *hub;
    uint64_t serial;                /* names the client in the epoll set */
    int refs;                       /* atomic */
    char task_id[BGT_ID_LEN + 1];   /* "" for an all-tasks stream */
    char handler[BGT_NAME_MAX + 1]; /* all-tasks filter, "" for any */
    /* Below: under hub->lock. */
    struct sse_client *prev, *next;
    bool linked;
    bool ready; /* opening written: live events go to out */
    held *held_head, *held_tail;
    sse_queue out; /* what it has yet to send */
    bool finished; /* the stream's end event is queued: end once out drains */
    bool dropped;  /* fell furthest behind past the cap: only its end is queued */
    bool gone;     /* hung up: abort */
    bool parked;   /* suspended through io.suspend */
    void *conn;
    double last_data; /* mono_s when output was last queued */
};

struct sse_hub {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* the subscriber's backoff sleep */
    sse_client *clients;
    size_t nclients;
    uint64_t serial;
    bool stop;       /* the threads exit */
    bool ending;     /* shutdown: every stream ends, nothing parks */
    bool subscribed; /* atomic */
    sse_io io;
    metrics *met;
    sse_pool pool;      /* the bytes every client's queue holds */
    size_t max_queued;  /* http.sse_max_queued */
    sse_msg *keepalive; /* shared by every stream (the hub holds a reference) */
    sse_msg *end;       /* a task stream's end event, likewise */
    long drops;         /* streams dropped since the last warning */
    double drops_logged; /* mono_s of that warning */
    size_t drop_behind; /* the last dropped stream's unsent bytes */
    char drop_task[BGT_ID_LEN + 1]; /* and its task ("" for an all-tasks stream) */
    store *sub; /* the pattern subscriber; subscriber thread only */
    store *aux; /* record reads after a reconnect; subscriber thread only */
    int epfd, evfd;
    pthread_t sub_thr, watch_thr;
    bool sub_started, watch_started;
};

/* Connections to resume once the lock is released. */
typedef struct wakelist {
    void **v;
    size_t n, cap;
} wakelist;

static const char KEEPALIVE[] = ": keep-alive\n\n";
/* The shortest time between two warnings about dropped streams. */
#define SSE_DROP_LOG_S 10.0

/* An event id "ms-seq" or "ms-seq.pos" (store_event_id_valid) into three numbers ("0" is
 * 0-0.0). */
static void sid_parse(const char *s, uint64_t *ms, uint64_t *seq, uint64_t *pos)
{
    char *end;
    *ms = strtoull(s, &end, 10);
    *seq = *end == '-' ? strtoull(end + 1, &end, 10) : 0;
    *pos = *end == '.' ? strtoull(end + 1, NULL, 10) : 0;
}

static int sid_cmp(const char *a, const char *b)
{
    uint64_t am, as, ap, bm, bs, bp;
    sid_parse(a, &am, &as, &ap);
    sid_parse(b, &bm, &bs, &bp);
    if (am != bm)
        return am < bm ? -1 : 1;
    if (as != bs)
        return as < bs ? -1 : 1;
    return ap < bp ? -1 : ap > bp ? 1 : 0;
}

/* One event in the wire format. An event name that could break the framing
 * (a line break) is refused: NULL. */
static char *format_event(const char *name, const char *data, const char *sid)
{
    if (strpbrk(name, "\r\n") || strpbrk(data, "\r\n") || (sid && strpbrk(sid, "\r\n")))
        return NULL;
    if (sid && *sid)
        return xasprintf("event: %s\ndata: %s\nid: %s\n\n", name, data, sid);
    return xasprintf("event: %s\ndata: %s\n\n", name, data);
}

static void wake_push(wakelist *wl, void *conn)
{
    if (wl->n == wl->cap) {
        wl->cap = wl->cap ? wl->cap * 2 : 64;
        wl->v = xrealloc(wl->v, wl->cap * sizeof *wl->v);
    }
    wl->v[wl->n++] = conn;
}

/* Resume what was collected; called without the lock. */
static void wake_run(sse_hub *h, wakelist *wl)
{
    for (size_t i = 0; i < wl->n; i++)
        h->io.resume(wl->v[i]);
    wl->n = 0;
}

/* Unpark cl (lock held): its connection goes on the wakelist. */
static void client_wake(sse_client *cl, wakelist *wl)
{
    if (cl->parked) {
        cl->parked = false;
        wake_push(wl, cl->conn);
    }
}

/* Queue message m for cl (lock held). */
static void client_push(sse_client *cl, sse_msg *m, wakelist *wl)
{
    if (cl->gone || cl->dropped)
        return;
    sse_queue_push(&cl->hub->pool, &cl->out, m);
    cl->last_data = mono_s();
    client_wake(cl, wl);
}

/* Queue text of cl's own (lock held). */
static void push_str(sse_client *cl, const char *s, wakelist *wl)
{
    sse_msg *m = sse_msg_new(s, strlen(s));
    client_push(cl, m, wl);
    sse_msg_discard(m);
}

static void held_free(sse_client *cl)
{
    for (held *e = cl->held_head, *next; e; e = next) {
        next = e->next;
        sse_msg_unref(&cl->hub->pool, e->msg);
        free(e);
    }
    cl->held_head = cl->held_tail = NULL;
}

static double num(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *str(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/*
 * The record's state as an event, the one events.c makes of a record: its
 * terminal event when finished, else a progress update with the persisted
 * progress. *terminal says which. Returns the formatted event.
 */
static char *state_event(const cJSON *rec, bool *terminal)
{
    ev_buf b = {0};
    size_t off;
    ev_kind k = ev_of_record(&b, rec, &off);
    *terminal = ev_terminal(k);
    char *ev = format_event(ev_name(k), b.s + off, NULL);
    ev_buf_free(&b);
    return ev;
}

/* Queue the end of a task's stream (lock held): nothing follows it. */
static void push_close(sse_client *cl, wakelist *wl)
{
    client_push(cl, cl->hub->end, wl);
    cl->finished = true;
}

/* Append a formatted event (lock held); after a terminal one, the stream's end. */
static void push_event(sse_client *cl, sse_msg *m, bool terminal, wakelist *wl)
{
    client_push(cl, m, wl);
    if (terminal && cl->task_id[0])
        push_close(cl, wl);
}

/* The same for an event formatted for cl alone (text may be NULL: nothing). */
static void push_text_event(sse_client *cl, const char *text, bool terminal, wakelist *wl)
{
    sse_msg *m = sse_msg_new(text, text ? strlen(text) : 0);
    if (m)
        push_event(cl, m, terminal, wl);
    sse_msg_discard(m);
}

/* Say how many streams were dropped since the last warning (lock held): the first drop at
 * once, then at most one line per SSE_DROP_LOG_S. */
static void drops_say(sse_hub *h, double now)
{
    if (h->drops == 0 || now - h->drops_logged < SSE_DROP_LOG_S)
        return;
    log_warn("sse: events queued for all streams passed http.sse_max_queued (%zu bytes): "
             "dropped %ld stream(s) furthest behind, the last one of %s with %zu bytes unsent",
             h->max_queued, h->drops, h->drop_task[0] ? h->drop_task : "all events",
             h->drop_behind);
    h->drops = 0;
    h->drops_logged = now;
}

/*
 * Keep the bytes queued for all streams under the cap (lock held): while they
 * are over it, drop the queue of the stream furthest behind (what it is in
 * the middle of sending aside, so the stream stays well-formed) and queue in
 * its place an end event whose data says why; it ends once that is sent.
 */
static void trim(sse_hub *h, wakelist *wl)
{
    while (h->pool.bytes > h->max_queued) {
        sse_client *worst = NULL;
        for (sse_client *cl = h->clients; cl; cl = cl->next)
            if (!cl->gone && !cl->dropped &&
                cl->out.backlog > (worst ? worst->out.backlog : 0))
                worst = cl;
        if (!worst)
            return;
        size_t behind = worst->out.backlog;
        sse_queue_drop(&h->pool, &worst->out, true);
        char text[384];
        snprintf(text, sizeof text,
                 "event: %s\ndata: {\"reason\":\"this stream fell behind: %zu bytes of events "
                 "unsent while all streams held more than http.sse_max_queued (%zu bytes)\"}\n\n",
                 ev_stream_end_name(), behind, h->max_queued);
        push_str(worst, text, wl);
        worst->finished = worst->dropped = true;
        client_wake(worst, wl);
        metrics_inc(h->met, MC_SSE_DROPPED, 1);
        h->drops++;
        h->drop_behind = behind;
        strlcpy_(h->drop_task, worst->task_id, sizeof h->drop_task);
        drops_say(h, mono_s());
    }
}

/* Publish the bytes queued (call after the lock is released). */
static void report_queued(sse_hub *h)
{
    pthread_mutex_lock(&h->lock);
    long bytes = (long)h->pool.bytes;
    pthread_mutex_unlock(&h->lock);
    metrics_set(h->met, MG_SSE_QUEUED, bytes);
}

/* ---- clients ---- */

static void wake_watcher(sse_hub *h)
{
    uint64_t one = 1;
    ssize_t w = write(h->evfd, &one, sizeof one);
    (void)w;
}

sse_client *sse_client_new(sse_hub *h, const char *task_id, const char *handler)
{
    sse_client *cl = xcalloc(1, sizeof *cl);
    cl->hub = h;
    cl->refs = 2;
    strlcpy_(cl->task_id, task_id ? task_id : "", sizeof cl->task_id);
    strlcpy_(cl->handler, handler ? handler : "", sizeof cl->handler);
    wakelist wl = {0};
    pthread_mutex_lock(&h->lock);
    cl->serial = ++h->serial;
    cl->next = h->clients;
    if (h->clients)
        h->clients->prev = cl;
    h->clients = cl;
    cl->linked = true;
    size_t n = ++h->nclients;
    if (!task_id) {
        cl->ready = true;
        push_str(cl, ": connected\n\n", &wl);
    }
    cl->last_data = mono_s();
    pthread_mutex_unlock(&h->lock);
    free(wl.v); /* nothing is parked yet */
    metrics_set(h->met, MG_SSE_CLIENTS, (long)n);
    if (!task_id) /* ready now: its keep-alives are due from now on */
        wake_watcher(h);
    return cl;
}

void sse_client_begin(sse_client *cl, const cJSON *record, const cJSON *replay, const char *last_id)
{
    sse_hub *h = cl->hub;
    wakelist wl = {0};
    bool rec_terminal;
    char *state = state_event(record, &rec_terminal);
    long sent = 0;
    pthread_mutex_lock(&h->lock);
    bool done = false;
    if (last_id) {
        /* Resume: what the stream kept after last_id, then held events that
         * are newer than the last one replayed. */
        char last[48];
        strlcpy_(last, last_id, sizeof last);
        const cJSON *e;
        cJSON_ArrayForEach (e, replay) {
            const char *name = str(e, "event"), *sid = str(e, "id");
            char *data = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(e, "data"));
            char *text = data ? format_event(name, data, sid) : NULL;
            free(data);
            if (text) {
                push_text_event(cl, text, ev_name_terminal(name), &wl);
                sent++;
            }
            free(text);
            strlcpy_(last, sid, sizeof last);
            if ((done = ev_name_terminal(name)))
                break;
        }
        for (held *e2 = cl->held_head; e2 && !done; e2 = e2->next) {
            if (e2->sid[0] && sid_cmp(e2->sid, last) <= 0)
                continue;
            push_event(cl, e2->msg, e2->terminal, &wl);
            sent++;
            done = e2->terminal;
        }
        if (!done && rec_terminal && state) {
            push_text_event(cl, state, true, &wl);
            sent++;
        }
    } else {
        /* The current state, then held events it does not cover: progress
         * stamped no later than the record's last update is already in it. */
        if (state) {
            push_text_event(cl, state, rec_terminal, &wl);
            sent++;
        }
        int64_t updated = (int64_t)num(record, "updated_ms");
        for (held *e2 = cl->held_head; e2 && !rec_terminal && !done; e2 = e2->next) {
            if (e2->progress && e2->ts_ms <= updated)
                continue;
            push_event(cl, e2->msg, e2->terminal, &wl);
            sent++;
            done = e2->terminal;
        }
    }
    held_free(cl);
    cl->ready = true;
    trim(h, &wl);
    pthread_mutex_unlock(&h->lock);
    report_queued(h);
    free(state);
    wake_run(h, &wl); /* others the trim dropped; this one is not attached yet */
    free(wl.v);
    wake_watcher(h); /* ready now: its keep-alives are due from now on */
    if (sent)
        metrics_inc(h->met, MC_SSE_EVENTS, sent);
}

void sse_client_attach(sse_client *cl, void *conn, int fd)
{
    sse_hub *h = cl->hub;
    pthread_mutex_lock(&h->lock);
    cl->conn = conn;
    pthread_mutex_unlock(&h->lock);
    if (fd >= 0) {
        /* Only hang-ups: a parked stream's socket is otherwise nobody's to watch.
         * One-shot, and a closed socket leaves the set by itself. */
        struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLONESHOT, .data.u64 = cl->serial};
        if (epoll_ctl(h->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            log_debug("sse: cannot watch socket %d: %s", fd, strerror(errno));
    }
}

ssize_t sse_client_read(sse_client *cl, char *buf, size_t max)
{
    sse_hub *h = cl->hub;
    ssize_t n;
    pthread_mutex_lock(&h->lock);
    if (cl->gone) {
        n = SSE_ABORT;
    } else if (cl->out.n) {
        n = (ssize_t)sse_queue_read(&h->pool, &cl->out, buf, max);
    } else if (cl->finished || h->ending) {
        n = SSE_END;
    } else {
        cl->parked = true;
        h->io.suspend(cl->conn);
        n = SSE_PARKED;
    }
    pthread_mutex_unlock(&h->lock);
    if (n > 0)
        report_queued(h);
    return n;
}

/* Take cl off the list (lock held). Returns the number of clients left. */
static size_t unlink_client(sse_hub *h, sse_client *cl)
{
    if (cl->linked) {
        if (cl->prev)
            cl->prev->next = cl->next;
        else
            h->clients = cl->next;
        if (cl->next)
            cl->next->prev = cl->prev;
        cl->prev = cl->next = NULL;
        cl->linked = false;
        h->nclients--;
    }
    cl->conn = NULL;
    cl->parked = false;
    held_free(cl);
    sse_queue_free(&h->pool, &cl->out); /* nobody reads it any more */
    return h->nclients;
}

void sse_client_close(sse_client *cl)
{
    sse_hub *h = cl->hub;
    pthread_mutex_lock(&h->lock);
    size_t n = unlink_client(h, cl);
    pthread_mutex_unlock(&h->lock);
    metrics_set(h->met, MG_SSE_CLIENTS, (long)n);
    report_queued(h);
    sse_client_release(cl);
}

void sse_client_abandon(sse_client *cl)
{
    sse_client_release(cl); /* the reader's: there is none */
    sse_client_close(cl);
}

void sse_client_release(sse_client *cl)
{
    if (__atomic_sub_fetch(&cl->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    /* sse_client_close (always called before the last release) freed its queue. */
    free(cl);
}

static void client_ref(sse_client *cl) { __atomic_add_fetch(&cl->refs, 1, __ATOMIC_ACQ_REL); }

/* ---- the subscriber thread ---- */

static bool hub_stopping(sse_hub *h)
{
    pthread_mutex_lock(&h->lock);
    bool s = h->stop;
    pthread_mutex_unlock(&h->lock);
    return s;
}

/* One live event to every client that follows it. */
static void dispatch(sse_hub *h, const char *name, const cJSON *data, const char *sid, wakelist *wl)
{
    const char *task = str(data, "task_id"), *handler = str(data, "handler");
    char *json = cJSON_PrintUnformatted(data);
    char *text = json ? format_event(name, json, sid) : NULL;
    free(json);
    if (!text) {
        log_debug("sse: skipped an event that cannot be framed: %.64s", name);
        return;
    }
    sse_msg *m = sse_msg_new(text, strlen(text)); /* shared by every client it goes to */
    free(text);
    bool terminal = ev_name_terminal(name), progress = ev_kind_of(name) == EV_UPDATED;
    int64_t ts = (int64_t)num(data, "ts_ms");
    long sent = 0;
    pthread_mutex_lock(&h->lock);
    for (sse_client *cl = h->clients; cl; cl = cl->next) {
        if (cl->gone || cl->finished)
            continue;
        if (cl->task_id[0] ? strcmp(cl->task_id, task) != 0
                           : cl->handler[0] && strcmp(cl->handler, handler) != 0)
            continue;
        if (!cl->ready) {
            held *e = xcalloc(1, sizeof *e);
            e->msg = m;
            sse_msg_ref(&h->pool, m);
            strlcpy_(e->sid, sid ? sid : "", sizeof e->sid);
            e->ts_ms = ts;
            e->progress = progress;
            e->terminal = terminal;
            if (cl->held_tail)
                cl->held_tail->next = e;
            else
                cl->held_head = e;
            cl->held_tail = e;
            continue;
        }
        push_event(cl, m, terminal, wl);
        sent++;
    }
    sse_msg_discard(m); /* no client took it */
    trim(h, wl);
    pthread_mutex_unlock(&h->lock);
    report_queued(h);
    wake_run(h, wl);
    if (sent)
        metrics_inc(h->met, MC_SSE_EVENTS, sent);
}

/*
 * After the subscription was down, events may have been missed: give every
 * task stream its task's current state again (ending those that finished).
 */
static void resync(sse_hub *h, wakelist *wl)
{
    size_t n = 0, cap = 0;
    sse_client **v = NULL;
    pthread_mutex_lock(&h->lock);
    for (sse_client *cl = h->clients; cl; cl = cl->next) {
        if (!cl->task_id[0] || !cl->ready || cl->finished || cl->gone)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            v = xrealloc(v, cap * sizeof *v);
        }
        client_ref(cl);
        v[n++] = cl;
    }
    pthread_mutex_unlock(&h->lock);
    for (size_t i = 0; i < n; i++) {
        cJSON *rec = NULL;
        int rc = store_get_task(h->aux, v[i]->task_id, &rec);
        if (rc == -EIO && store_connect(h->aux) == 0) /* a connection left from before */
            rc = store_get_task(h->aux, v[i]->task_id, &rec);
        bool terminal = false;
        char *ev = rc == 0 ? state_event(rec, &terminal) : NULL;
        pthread_mutex_lock(&h->lock);
        if (v[i]->linked && !v[i]->finished && !v[i]->gone) {
            if (ev)
                push_text_event(v[i], ev, terminal, wl);
            else if (rc == -ENOENT) /* expired meanwhile: nothing more will come */
                push_close(v[i], wl);
        }
        trim(h, wl);
        pthread_mutex_unlock(&h->lock);
        wake_run(h, wl);
        free(ev);
        cJSON_Delete(rec);
        sse_client_release(v[i]);
    }
    free(v);
}

static void set_subscribed(sse_hub *h, bool on)
{
    __atomic_store_n(&h->subscribed, on, __ATOMIC_RELEASE);
}

bool sse_hub_subscribed(sse_hub *h) { return __atomic_load_n(&h->subscribed, __ATOMIC_ACQUIRE); }

static void *sub_main(void *arg)
{
    sse_hub *h = arg;
    wakelist wl = {0};
    bool lost = false;
    while (!hub_stopping(h)) {
        char *name = NULL, *sid = NULL;
        cJSON *data = NULL;
        /* While down, short waits: the first one that does not fail means the
         * store reconnected and subscribed again. */
        double wait = sse_hub_subscribed(h) ? 5.0 : 0.2;
        int rc = store_next_event_ex(h->sub, wait, &name, &data, &sid);
        if (rc == 0 || rc == -ETIMEDOUT) {
            if (!sse_hub_subscribed(h)) {
                set_subscribed(h, true);
                if (lost) {
                    log_notice("sse: event subscription restored");
                    resync(h, &wl);
                }
                lost = false;
            }
            if (rc == 0)
                dispatch(h, name, data, sid, &wl);
        } else if (rc == -EIO) {
            if (sse_hub_subscribed(h)) {
                log_warn("sse: event subscription lost: %s; retrying", store_errstr(h->sub));
                metrics_inc(h->met, MC_REDIS_ERRORS, 1);
                set_subscribed(h, false);
                lost = true;
            }
            pthread_mutex_lock(&h->lock);
            if (!h->stop) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 250 * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&h->cond, &h->lock, &ts);
            }
            pthread_mutex_unlock(&h->lock);
        } else if (rc == -EPROTO) {
            log_debug("sse: %s", store_errstr(h->sub));
        }
        free(name);
        free(sid);
        cJSON_Delete(data);
    }
    free(wl.v);
    return NULL;
}

/* ---- the watcher thread: keep-alives and hang-ups ---- */

/* Keep-alive comments for streams idle for SSE_KEEPALIVE_S; returns the
 * milliseconds until the next one is due, -1 for none. */
static int keepalive_pass(sse_hub *h, wakelist *wl)
{
    double now = mono_s(), next = INFINITY;
    pthread_mutex_lock(&h->lock);
    for (sse_client *cl = h->clients; cl; cl = cl->next) {
        if (!cl->ready || cl->gone || cl->finished)
            continue;
        if (cl->last_data + SSE_KEEPALIVE_S <= now)
            client_push(cl, h->keepalive, wl);
        next = fmin(next, cl->last_data + SSE_KEEPALIVE_S);
    }
    trim(h, wl);
    drops_say(h, now); /* drops not said yet, when no more came to say them */
    if (h->drops)
        next = fmin(next, h->drops_logged + SSE_DROP_LOG_S);
    pthread_mutex_unlock(&h->lock);
    report_queued(h);
    if (isinf(next))
        return -1;
    return (int)((next - now) * 1000) + 1;
}

static void hung_up(sse_hub *h, uint64_t serial, wakelist *wl)
{
    pthread_mutex_lock(&h->lock);
    for (sse_client *cl = h->clients; cl; cl = cl->next)
        if (cl->serial == serial) {
            cl->gone = true;
            client_wake(cl, wl);
            break;
        }
    pthread_mutex_unlock(&h->lock);
}

static void *watch_main(void *arg)
{
    sse_hub *h = arg;
    wakelist wl = {0};
    struct epoll_event evs[64];
    while (!hub_stopping(h)) {
        int timeout = keepalive_pass(h, &wl);
        wake_run(h, &wl);
        int n = epoll_wait(h->epfd, evs, 64, timeout);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == 0) {
                uint64_t v;
                ssize_t r = read(h->evfd, &v, sizeof v);
                (void)r;
            } else {
                hung_up(h, evs[i].data.u64, &wl);
            }
        }
        wake_run(h, &wl);
    }
    free(wl.v);
    return NULL;
}

/* ---- the hub ---- */

sse_hub *sse_hub_start(const bgt_config *cfg, const redis_addr *addr,
                       const sse_io *io, metrics *met, char *err, size_t errlen)
{
    sse_hub *h = xcalloc(1, sizeof *h);
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    h->io = *io;
    h->met = met;
    h->max_queued = cfg->http_sse_max_queued;
    h->keepalive = sse_msg_new(KEEPALIVE, strlen(KEEPALIVE));
    sse_msg_ref(&h->pool, h->keepalive);
    char end[64];
    snprintf(end, sizeof end, "event: %s\ndata: {}\n\n", ev_stream_end_name());
    h->end = sse_msg_new(end, strlen(end));
    sse_msg_ref(&h->pool, h->end);
    h->evfd = -1;
    h->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (h->epfd < 0) {
        snprintf(err, errlen, "sse: epoll_create1: %s", strerror(errno));
        goto fail;
    }
    h->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (h->evfd < 0 || epoll_ctl(h->epfd, EPOLL_CTL_ADD, h->evfd, &ev) < 0) {
        snprintf(err, errlen, "sse: eventfd: %s", strerror(errno));
        goto fail;
    }
    h->sub = store_open(cfg, addr);
    h->aux = store_open(cfg, addr);
    if (store_subscribe_all(h->sub) == 0)
        set_subscribed(h, true);
    else
        log_warn("sse: cannot subscribe to events yet: %s; retrying", store_errstr(h->sub));
    int rc = pthread_create(&h->sub_thr, NULL, sub_main, h);
    h->sub_started = rc == 0;
    if (rc == 0) {
        rc = pthread_create(&h->watch_thr, NULL, watch_main, h);
        h->watch_started = rc == 0;
    }
    if (rc != 0) {
        snprintf(err, errlen, "sse: cannot start a thread: %s", strerror(rc));
        goto fail;
    }
    return h;
fail:
    sse_hub_shutdown(h);
    sse_hub_free(h);
    return NULL;
}

size_t sse_hub_clients(sse_hub *h)
{
    pthread_mutex_lock(&h->lock);
    size_t n = h->nclients;
    pthread_mutex_unlock(&h->lock);
    return n;
}

void sse_hub_shutdown(sse_hub *h)
{
    pthread_mutex_lock(&h->lock);
    h->stop = true;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
    if (h->sub)
        store_interrupt(h->sub);
    if (h->evfd >= 0)
        wake_watcher(h);
    if (h->sub_started)
        pthread_join(h->sub_thr, NULL);
    if (h->watch_started)
        pthread_join(h->watch_thr, NULL);
    h->sub_started = h->watch_started = false;
    wakelist wl = {0};
    pthread_mutex_lock(&h->lock);
    h->ending = true;
    for (sse_client *cl = h->clients; cl; cl = cl->next)
        client_wake(cl, &wl);
    pthread_mutex_unlock(&h->lock);
    wake_run(h, &wl);
    free(wl.v);
}

void sse_hub_free(sse_hub *h)
{
    if (!h)
        return;
    store_free(h->sub);
    store_free(h->aux);
    sse_msg_unref(&h->pool, h->keepalive);
    sse_msg_unref(&h->pool, h->end);
    if (h->epfd >= 0)
        close(h->epfd);
    if (h->evfd >= 0)
        close(h->evfd);
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

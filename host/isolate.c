/*
 * isolate.c - the worker processes of isolated plugins: the pool of slots
 * calls are given to, replacing workers, the crash breaker, and the
 * supervisor thread that does the waiting parts. Starting a worker is in
 * iso_start.c, the calls themselves in proxy.c.
 */
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api.h"
#include "isolate_int.h"
#include "task_api.h"
#include "util.h"

/* The longest respawn backoff. */
#define BACKOFF_MAX_S 5.0

/* Live worker processes of pl, into the metrics. Lock held. */
static void count_workers(iso_pool *pl)
{
    long n = 0;
    for (int i = 0; i < pl->nslots; i++)
        n += pl->slots[i].state != SLOT_EMPTY;
    metrics_iso_workers(pl->host->met, pl->name, n);
}

/* ---- the crash breaker ---- */

/* A death of one of pl's workers: back off further starts, maybe open the breaker.
 * Lock held. Returns true when it opened the breaker (the caller notifies). */
static bool count_death(iso_pool *pl, double now)
{
    const isolation_conf *c = &pl->conf;
    pl->failures++;
    /* A death or two in a row is a bad task; more is a bad plugin: slow its restarts down. */
    double delay = pl->failures <= 2 ? 0 : fmin(0.05 * pow(2, pl->failures - 3), BACKOFF_MAX_S);
    pl->next_spawn = now + delay;
    pl->deaths[pl->ndeaths % c->breaker_deaths] = now;
    pl->ndeaths++;
    if (pl->breaker_open || pl->ndeaths < c->breaker_deaths)
        return false;
    /* The oldest of the last breaker_deaths deaths. */
    double oldest = pl->deaths[pl->ndeaths % c->breaker_deaths];
    if (now - oldest > c->breaker_window_s)
        return false;
    pl->breaker_open = true;
    pl->breaker_until = now + c->breaker_pause_s;
    char why[200];
    snprintf(why, sizeof why,
             "crash breaker open: %d worker deaths within %.0f s; its handlers are not claimed "
             "for %.0f s",
             c->breaker_deaths, c->breaker_window_s, c->breaker_pause_s);
    log_msg(BGT_LOG_ERR, pl->name, "%s", why);
    metrics_iso_breaker(pl->host->met, pl->name, why);
    registry_pause_plugin(pl->host->reg, &pl->owner, true);
    return true;
}

/* Close breakers whose pause is over. Lock held; true if one closed. */
static bool close_breakers(iso_host *h, double now)
{
    bool closed = false;
    for (iso_pool *pl = h->pools; pl; pl = pl->next)
        if (pl->breaker_open && now >= pl->breaker_until) {
            pl->breaker_open = false;
            pl->ndeaths = 0;
            log_msg(BGT_LOG_NOTICE, pl->name, "crash breaker closed: claiming its handlers again");
            metrics_iso_breaker(h->met, pl->name, NULL);
            registry_pause_plugin(h->reg, &pl->owner, false);
            closed = true;
        }
    return closed;
}

static void notify(iso_host *h)
{
    if (h->notify)
        h->notify(h->notify_arg);
}

/* ---- giving calls to workers ---- */

/* How well s fits a new call now: 2 for a worker that turns calls over quickly and has room,
 * 1 for an idle one, 0 for none. Lock held. */
static int fit(const iso_slot *s, double now)
{
    if (s->state != SLOT_READY)
        return 0;
    if (s->n == 0)
        return 1;
    return s->n < ISO_DEPTH && now - s->front_since < ISO_FAST_S ? 2 : 0;
}

/* Whether pl has a worker waiting for a call or being started. Lock held. */
static bool any_idle(const iso_pool *pl)
{
    for (int i = 0; i < pl->nslots; i++)
        if ((pl->slots[i].state == SLOT_READY && pl->slots[i].n == 0) ||
            pl->slots[i].state == SLOT_STARTING)
            return true;
    return false;
}

/* The best slot of pl for a new call, or NULL. Lock held. */
static iso_slot *pick(iso_pool *pl, double now)
{
    iso_slot *best = NULL;
    int bf = 0;
    for (int i = 0; i < pl->nslots && bf < 2; i++) {
        int f = fit(&pl->slots[i], now);
        if (f > bf) {
            bf = f;
            best = &pl->slots[i];
        }
    }
    return best;
}

/* Append c to s's fifo and write its CALL (what does not fit now, the io thread writes).
 * Lock held. */
static void send_call(iso_pool *pl, iso_slot *s, iso_call *c, double now)
{
    const bgt_api *api = host_api();
    c->s = s;
    c->seq = s->next_seq++;
    c->front_at = s->n == 0 ? now : 0;
    if (s->n == 0)
        s->front_since = now;
    c->heard = c->cancel_sent = false;
    c->note[0] = c->violation[0] = '\0';
    s->fifo[(s->first + s->n) % ISO_DEPTH] = (iso_entry){c->seq, c};
    /* Queued in the page before the worker can read the call (ipc.h). */
    atomic_store(&s->page->call[c->seq % ISO_DEPTH], ipc_word(c->seq, IPC_CS_QUEUED, 0));
    if (s->n++ == 0 && !any_idle(pl))
        pthread_cond_signal(&pl->host->work_cond); /* the supervisor starts a spare */
    if (++s->calls >= pl->conf.max_tasks_per_process && pl->conf.max_tasks_per_process) {
        log_msg(BGT_LOG_INFO, pl->name, "replacing worker %d after %ld calls "
                "(max_tasks_per_process)", (int)s->pid, s->calls);
        metrics_iso_inc(pl->host->met, pl->name, MI_RECYCLE_TASKS);
        s->state = SLOT_DRAINING;
    }
    double cur = 0, total = 0;
    api->last_progress(c->t, &cur, &total);
    pthread_mutex_lock(&s->send_lock);
    ipc_buf *b = &s->scratch;
    ipc_begin(b, IPC_CALL);
    ipc_put_u32(b, c->seq);
    ipc_put_u32(b, (uint32_t)c->op);
    ipc_put_str(b, api->task_id(c->t));
    ipc_put_str(b, api->task_handler(c->t));
    ipc_put_u32(b, api->task_attempt(c->t));
    ipc_put_u32(b, task_api_hook_info(c->t)->attempt);
    ipc_put_u32(b, (uint32_t)(api->task_subtask(c->t) + 1));
    ipc_put_f64(b, cur);
    ipc_put_f64(b, total);
    ipc_put_str(b, c->args);
    ipc_end(b);
    ipc_queue(&s->conn, b);
    /* A worker with two calls written to it and not answered has work until the io thread
     * reads its next answer, which writes what is queued then (iso_io.c): no system call
     * per call for the calls of a busy worker. */
    if (s->n - ++s->unsent < 2)
        iso__flush(pl->host, s);
    pthread_mutex_unlock(&s->send_lock);
}

void iso__finish(iso_call *c, bgt_status status)
{
    c->status = status;
    c->finished = true;
    c->s = NULL;
    if (!c->handed) {
        pthread_cond_signal(&c->cond);
        return;
    }
    iso_host *h = c->pl->host;
    if (h->nback == h->back_cap) {
        h->back_cap = h->back_cap ? 2 * h->back_cap : 64;
        h->back = xrealloc(h->back, h->back_cap * sizeof *h->back);
        h->back_status = xrealloc(h->back_status, h->back_cap * sizeof *h->back_status);
    }
    h->back[h->nback] = c->t;
    h->back_status[h->nback++] = status;
    free(c);
}

void iso__hand_back(iso_host *h)
{
    pthread_mutex_lock(&h->lock);
    size_t n = h->nback;
    bgt_task **ts = NULL;
    bgt_status *st = NULL;
    if (n > 0) {
        /* Taken whole: new finishes go to fresh arrays while these are handed back. */
        ts = h->back;
        st = h->back_status;
        h->back = NULL;
        h->back_status = NULL;
        h->nback = h->back_cap = 0;
    }
    pthread_mutex_unlock(&h->lock);
    if (n == 0)
        return;
    task_api_handed_back_all(ts, st, n);
    free(ts);
    free(st);
}

void iso__dispatch(iso_pool *pl)
{
    double now = mono_s();
    while (pl->pending) {
        iso_call *c = pl->pending;
        iso_slot *s = NULL;
        bool stop = host_api()->cancelled(c->t);
        if (!stop && !(s = pick(pl, now)))
            break;
        pl->pending = c->next;
        if (!pl->pending)
            pl->pending_tail = NULL;
        pl->npending--;
        c->next = NULL;
        if (stop)
            iso__finish(c, BGT_CANCELLED); /* told to stop before any worker took it */
        else
            send_call(pl, s, c, now);
    }
    /* While the breaker is open, workers are started only for calls that wait. */
    if (pl->pending && pl->breaker_open)
        pthread_cond_signal(&pl->host->work_cond);
}

void iso__submit(iso_call *c)
{
    iso_pool *pl = c->pl;
    pthread_mutex_lock(&pl->host->lock);
    c->next = NULL;
    if (pl->pending_tail)
        pl->pending_tail->next = c;
    else
        pl->pending = c;
    pl->pending_tail = c;
    pl->npending++;
    iso__dispatch(pl);
    pthread_mutex_unlock(&pl->host->lock);
    iso__hand_back(pl->host);
}

void iso__requeue(iso_call *c)
{
    iso_pool *pl = c->pl;
    c->s = NULL;
    c->next = pl->pending;
    pl->pending = c;
    if (!pl->pending_tail)
        pl->pending_tail = c;
    pl->npending++;
}

size_t iso__rss(pid_t pid)
{
    char path[64], buf[128];
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    unsigned long size, resident;
    if (sscanf(buf, "%lu %lu", &size, &resident) != 2)
        return 0;
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* Close s's end (its socket leaves the io thread's epoll with it). Lock held. */
static void close_conn(iso_host *h, iso_slot *s)
{
    pthread_mutex_lock(&s->send_lock);
    if (s->conn.fd >= 0)
        epoll_ctl(h->epfd, EPOLL_CTL_DEL, s->conn.fd, NULL);
    ipc_conn_close(&s->conn);
    iso__unmap_page(s);
    s->want_out = false;
    s->unsent = 0;
    pthread_mutex_unlock(&s->send_lock);
}

/* Ask s's process to exit (its end closed) and leave the reaping to the supervisor. Its fifo
 * is empty. Lock held. */
static void retire(iso_pool *pl, iso_slot *s)
{
    close_conn(pl->host, s);
    s->state = SLOT_RETIRING;
    s->retire_by = mono_s() + pl->conf.kill_grace_s;
    pthread_cond_signal(&pl->host->work_cond);
}

void iso__answered(iso_pool *pl, iso_slot *s, bool real, size_t rss)
{
    double now = mono_s();
    s->first = (s->first + 1) % ISO_DEPTH;
    s->n--;
    s->front_since = now;
    if (s->n > 0 && s->fifo[s->first].call)
        s->fifo[s->first].call->front_at = now;
    if (real)
        pl->failures = 0;
    if (real && pl->conf.max_rss && rss > pl->conf.max_rss && s->state == SLOT_READY) {
        log_msg(BGT_LOG_NOTICE, pl->name, "replacing worker %d: %zu MiB resident after a call, "
                "over max_rss %zu MiB", (int)s->pid, rss >> 20, pl->conf.max_rss >> 20);
        metrics_iso_inc(pl->host->met, pl->name, MI_RECYCLE_RSS);
        s->state = SLOT_DRAINING;
    }
    if (s->state == SLOT_DRAINING && s->n == 0)
        retire(pl, s);
    iso__dispatch(pl);
}

void iso__bury(iso_pool *pl, iso_slot *s, bool stopped, const char *violation,
               const char *where, const char *note, iso_call *keep, char *msg, size_t msglen)
{
    iso_host *h = pl->host;
    int st = 0;
    pid_t pid = s->pid;
    /* Whatever it did last, it runs no more: a worker that closed its end may still be alive. */
    kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    bool oom = s->cgroup && cgroup_oom_kills(s->cgroup) > s->oom_base;
    char what[200];
    iso_event ev = MI_DEATH_SIGNAL;
    if (violation) {
        snprintf(what, sizeof what, "worker killed: %s", violation);
        ev = MI_DEATH_PROTOCOL;
    } else if (oom) {
        snprintf(what, sizeof what, "worker died: out of memory (memory_max %zu MiB, cgroup "
                 "memory.max)", pl->conf.memory_max >> 20);
        ev = MI_DEATH_OOM;
    } else if (WIFSIGNALED(st) && !(stopped && WTERMSIG(st) == SIGKILL)) {
        const char *abbrev = sigabbrev_np(WTERMSIG(st));
        snprintf(what, sizeof what, "worker died: signal %d (SIG%s)", WTERMSIG(st),
                 abbrev ? abbrev : "?");
    } else if (WIFEXITED(st)) {
        snprintf(what, sizeof what, "worker died: exited with status %d", WEXITSTATUS(st));
        ev = MI_DEATH_EXIT;
    } else {
        snprintf(what, sizeof what, "worker killed");
    }
    if (note && strstr(note, "out of memory"))
        ev = MI_DEATH_OOM;
    snprintf(msg, msglen, "%s%s%s", what, note && *note ? "; crash note: " : "", note ? note : "");
    if (!stopped)
        log_msg(BGT_LOG_WARNING, pl->name, "worker %d%s%s%s: %s", (int)pid, where ? " (" : "",
                where ? where : "", where ? ")" : "", msg);

    pthread_mutex_lock(&h->lock);
    close_conn(h, s);
    /* The calls queued behind the one it ran never started: they go to another worker, in
     * their order. */
    int requeued = 0;
    for (int i = s->n - 1; i >= 0; i--) {
        iso_call *c = s->fifo[(s->first + i) % ISO_DEPTH].call;
        if (c && c != keep) {
            iso__requeue(c);
            requeued++;
        }
    }
    if (requeued)
        log_msg(BGT_LOG_INFO, pl->name, "worker %d: %d call(s) queued behind the call it ran "
                "had not started: they go to other workers", (int)pid, requeued);
    s->n = s->first = 0;
    s->state = SLOT_EMPTY;
    s->pid = 0;
    s->note[0] = '\0';
    bool opened = false;
    if (stopped)
        metrics_iso_inc(h->met, pl->name, MI_KILL);
    else {
        metrics_iso_inc(h->met, pl->name, ev);
        opened = count_death(pl, mono_s());
    }
    count_workers(pl);
    iso__dispatch(pl);
    pthread_cond_signal(&h->work_cond);
    pthread_mutex_unlock(&h->lock);
    if (opened)
        notify(h);
}

/* ---- the supervisor ---- */

/*
 * Start a worker in an empty slot of pl when it has no idle worker and none starting: one
 * worker always waits for a call (a call should not wait for a start), and the pool grows
 * to the number of workers its calls keep busy, up to its processes. While the breaker is
 * open, only for calls that wait for a worker. Lock held; released while the worker
 * starts. True if it tried.
 */
static bool maybe_start(iso_host *h, iso_pool *pl, double now, double *wake)
{
    int idle = 0, starting = 0, live = 0;
    iso_slot *empty = NULL;
    for (int i = 0; i < pl->nslots; i++) {
        iso_slot *s = &pl->slots[i];
        idle += s->state == SLOT_READY && s->n == 0;
        starting += s->state == SLOT_STARTING;
        live += s->state == SLOT_READY || s->state == SLOT_DRAINING || s->state == SLOT_STARTING;
        if (s->state == SLOT_EMPTY && !empty)
            empty = s;
    }
    bool wanted = pl->breaker_open ? pl->npending > idle + starting : idle + starting == 0;
    if (!wanted || live >= pl->nslots || !empty)
        return false;
    if (now < pl->next_spawn) {
        *wake = fmin(*wake, pl->next_spawn);
        return false;
    }
    empty->state = SLOT_STARTING;
    pthread_mutex_unlock(&h->lock);
    char err[1200];
    err[0] = '\0';
    int rc = iso__start_worker(pl, empty, false, err, sizeof err);
    if (rc < 0)
        log_msg(BGT_LOG_ERR, pl->name, "worker start failed: %s", err);
    pthread_mutex_lock(&h->lock);
    bool opened = false;
    if (rc == 0) {
        empty->state = SLOT_READY;
        iso__watch(h, empty);
        metrics_iso_inc(h->met, pl->name, MI_SPAWN);
        iso__dispatch(pl);
    } else {
        empty->state = SLOT_EMPTY;
        metrics_iso_inc(h->met, pl->name, MI_DEATH_INIT);
        opened = count_death(pl, mono_s());
    }
    count_workers(pl);
    if (opened) {
        pthread_mutex_unlock(&h->lock);
        notify(h);
        pthread_mutex_lock(&h->lock);
    }
    return true;
}

/* Reap retiring workers that exited; SIGKILL those past their grace. Lock held. */
static void reap_retired(iso_host *h, double now, double *wake)
{
    for (iso_pool *pl = h->pools; pl; pl = pl->next)
        for (int i = 0; i < pl->nslots; i++) {
            iso_slot *s = &pl->slots[i];
            if (s->state != SLOT_RETIRING)
                continue;
            int st;
            pid_t r = waitpid(s->pid, &st, WNOHANG);
            if (r == 0 && now >= s->retire_by) {
                kill(s->pid, SIGKILL);
                r = waitpid(s->pid, &st, 0);
            }
            if (r == 0) {
                *wake = fmin(*wake, now + 0.02);
                continue;
            }
            s->state = SLOT_EMPTY;
            s->pid = 0;
            count_workers(pl);
        }
}

static void *supervisor_main(void *arg)
{
    iso_host *h = arg;
    pthread_mutex_lock(&h->lock);
    while (!h->quit) {
        double now = mono_s(), wake = now + 1.0;
        if (close_breakers(h, now)) {
            pthread_mutex_unlock(&h->lock);
            notify(h);
            pthread_mutex_lock(&h->lock);
            continue;
        }
        reap_retired(h, now, &wake);
        bool started = false;
        for (iso_pool *pl = h->pools; pl && !started; pl = pl->next) {
            started = maybe_start(h, pl, now, &wake);
            if (pl->breaker_open)
                wake = fmin(wake, pl->breaker_until);
        }
        if (h->nback > 0) {
            pthread_mutex_unlock(&h->lock);
            iso__hand_back(h);
            pthread_mutex_lock(&h->lock);
        }
        if (started || h->quit)
            continue;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double at = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + fmax(wake - now, 0.001);
        ts.tv_sec = (time_t)at;
        ts.tv_nsec = (long)((at - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&h->work_cond, &h->lock, &ts);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

/* ---- the host's side ---- */

iso_host *iso_host_new(const bgt_config *cfg, registry *reg, metrics *met)
{
    iso_host *h = xcalloc(1, sizeof *h);
    h->cfg = cfg;
    h->reg = reg;
    h->met = met;
    mutex_init_spinning(&h->lock);
    pthread_cond_init(&h->work_cond, NULL);
    /* Checked by iso_start: without them no worker is ever read. */
    h->epfd = epoll_create1(EPOLL_CLOEXEC);
    h->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (h->epfd >= 0 && h->wakefd >= 0)
        epoll_ctl(h->epfd, EPOLL_CTL_ADD, h->wakefd, &ev);
    return h;
}

void iso_set_notify(iso_host *h, void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&h->lock);
    h->notify = fn;
    h->notify_arg = arg;
    pthread_mutex_unlock(&h->lock);
}

int iso_start(iso_host *h)
{
    if (h->epfd < 0 || h->wakefd < 0)
        return -EMFILE;
    int rc = pthread_create(&h->io, NULL, iso__io_main, h);
    if (rc != 0)
        return -rc;
    rc = pthread_create(&h->supervisor, NULL, supervisor_main, h);
    if (rc != 0) {
        pthread_mutex_lock(&h->lock);
        h->quit = true;
        pthread_mutex_unlock(&h->lock);
        eventfd_write(h->wakefd, 1);
        pthread_join(h->io, NULL);
        return -rc;
    }
    h->started = true;
    return 0;
}

/* Stop every worker of pl: ends closed, then SIGKILL after kill_grace. */
static void stop_workers(iso_pool *pl)
{
    double until = mono_s() + pl->conf.kill_grace_s;
    for (int i = 0; i < pl->nslots; i++)
        if (pl->slots[i].state != SLOT_EMPTY) {
            ipc_conn_close(&pl->slots[i].conn);
            iso__unmap_page(&pl->slots[i]);
        }
    for (int i = 0; i < pl->nslots; i++) {
        iso_slot *s = &pl->slots[i];
        if (s->state == SLOT_EMPTY || s->pid <= 0)
            continue;
        int st;
        while (waitpid(s->pid, &st, WNOHANG) == 0) {
            if (mono_s() >= until) {
                log_msg(BGT_LOG_WARNING, pl->name, "worker %d did not exit within kill_grace: "
                        "killing it", (int)s->pid);
                kill(s->pid, SIGKILL);
                waitpid(s->pid, &st, 0);
                break;
            }
            sleep_s(0.005);
        }
        s->state = SLOT_EMPTY;
        s->pid = 0;
    }
}

static void pool_free(iso_pool *pl)
{
    if (!pl)
        return;
    registry_remove_plugin(pl->host->reg, &pl->owner);
    stop_workers(pl);
    for (int i = 0; i < pl->nslots; i++) {
        if (pl->slots[i].cgroup)
            cgroup_remove(pl->slots[i].cgroup);
        free(pl->slots[i].cgroup);
        ipc_buf_free(&pl->slots[i].scratch);
        pthread_mutex_destroy(&pl->slots[i].send_lock);
    }
    free(pl->slots);
    free(pl->defs);
    free(pl->deaths);
    free(pl->name);
    free(pl->file);
    free(pl->config_text);
    free(pl->owner.name);
    free(pl->owner.version);
    free(pl->owner.path);
    free(pl);
}

/* Register a proxy for every handler the first worker reported. */
static int register_proxies(iso_pool *pl, char *err, size_t errlen)
{
    for (int i = 0; i < pl->ndefs; i++) {
        const proxy_def *d = &pl->defs[i];
        proxy *px = xcalloc(1, sizeof *px);
        px->pool = pl;
        px->def = *d;
        bgt_handler_def hd = {
            .size = sizeof hd,
            .name = d->name,
            .kind = (bgt_kind)d->kind,
            .run = proxy_run,
            .split = d->flags & IPC_HF_SPLIT ? proxy_split : NULL,
            .merge = d->flags & IPC_HF_MERGE ? proxy_merge : NULL,
            .not_retriable = d->flags & IPC_HF_NOT_RETRIABLE,
            .max_attempts = (int)d->max_attempts,
            .parallelism = (int)d->parallelism,
            .timeout_s = d->timeout_s,
            .batch_size = (int)d->batch_size,
            .on_failure = (bgt_on_failure)d->on_failure,
            .udata = px,
            .udata_free = free,
        };
        char why[256];
        int rc = registry_add_handler(pl->host->reg, &pl->owner, pl->owner.name, &hd, why,
                                      sizeof why);
        if (rc < 0) {
            snprintf(err, errlen, "%s: plugin '%s' not loaded: %s", pl->file, pl->owner.name,
                     why);
            registry_remove_plugin(pl->host->reg, &pl->owner);
            return rc;
        }
    }
    return 0;
}

int iso_load(iso_host *h, const plugin_conf *pc, char *err, size_t errlen)
{
    iso_pool *pl = xcalloc(1, sizeof *pl);
    pl->host = h;
    pl->name = xstrdup(pc->name);
    pl->file = xstrdup(pc->file);
    pl->config_text = cJSON_PrintUnformatted(pc->config);
    if (!pl->config_text)
        pl->config_text = xstrdup("{}");
    pl->conf = pc->iso;
    pl->nslots = pl->conf.processes > 0 ? pl->conf.processes : h->cfg->workers;
    if (pl->nslots > h->cfg->workers) {
        log_notice("%s: processes = %d is more than host.workers = %d: at most %d will be used",
                   pc->name, pl->nslots, h->cfg->workers, h->cfg->workers);
        pl->nslots = h->cfg->workers;
    }
    pl->slots = xcalloc((size_t)pl->nslots, sizeof *pl->slots);
    for (int i = 0; i < pl->nslots; i++) {
        pl->slots[i] = (iso_slot){.pool = pl, .index = i, .state = SLOT_EMPTY, .conn = {.fd = -1}};
        pthread_mutex_init(&pl->slots[i].send_lock, NULL);
    }
    pl->deaths = xcalloc((size_t)pl->conf.breaker_deaths, sizeof *pl->deaths);
    pl->owner.path = xstrdup(pc->file);
    pl->owner.reg = h->reg;

    char why[1200];
    why[0] = '\0';
    pl->slots[0].state = SLOT_STARTING;
    int rc = iso__start_worker(pl, &pl->slots[0], true, why, sizeof why);
    if (rc < 0) {
        /* The loader's own message (rc -ECANCELED) names the file already. */
        if (rc == -ECANCELED)
            snprintf(err, errlen, "%s", why);
        else
            snprintf(err, errlen, "%s: %s", pc->file, why);
        pool_free(pl);
        return rc;
    }
    pl->slots[0].state = SLOT_READY;
    iso__watch(h, &pl->slots[0]);
    if ((rc = register_proxies(pl, err, errlen)) < 0) {
        pool_free(pl);
        return rc;
    }
    /* A proxy kills its worker kill_grace after a stop: the manager need not write it off. */
    registry_stops_itself(h->reg, &pl->owner, proxy_hand_off);
    metrics_iso_declare(h->met, pl->name);
    metrics_iso_inc(h->met, pl->name, MI_SPAWN);
    pthread_mutex_lock(&h->lock);
    count_workers(pl);
    pl->next = h->pools;
    h->pools = pl;
    pthread_mutex_unlock(&h->lock);
    return 0;
}

bool iso_loaded(iso_host *h, const char *path, const char *name)
{
    bool found = false;
    pthread_mutex_lock(&h->lock);
    for (iso_pool *pl = h->pools; pl && !found; pl = pl->next)
        found = (path && strcmp(pl->file, path) == 0) ||
                (name && (strcmp(pl->name, name) == 0 || strcmp(pl->owner.name, name) == 0));
    pthread_mutex_unlock(&h->lock);
    return found;
}

void iso_host_free(iso_host *h)
{
    if (!h)
        return;
    if (h->started) {
        pthread_mutex_lock(&h->lock);
        h->quit = true;
        pthread_cond_signal(&h->work_cond);
        pthread_mutex_unlock(&h->lock);
        eventfd_write(h->wakefd, 1);
        pthread_join(h->supervisor, NULL);
        pthread_join(h->io, NULL);
    }
    while (h->pools) {
        iso_pool *pl = h->pools;
        h->pools = pl->next;
        pool_free(pl);
    }
    cgroup_base_free(&h->cg);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->work_cond);
    if (h->epfd >= 0)
        close(h->epfd);
    if (h->wakefd >= 0)
        close(h->wakefd);
    free(h->back); /* empty: the manager, gone first, had nothing handed off any more */
    free(h->back_status);
    free(h);
}

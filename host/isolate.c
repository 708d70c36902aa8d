/*
 * isolate.c - the worker processes of isolated plugins: starting them
 * (posix_spawn of /proc/self/exe, so the worker is this very binary even if
 * the file was replaced since), their start-up exchange, the pool of slots
 * proxies take them from, replacing them, the crash breaker, and the
 * supervisor thread that does the waiting parts. The calls themselves are in
 * proxy.c.
 */
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api.h"
#include "isolate_int.h"
#include "util.h"
#include "worker_main.h"

extern char **environ;

/* The longest respawn backoff. */
#define BACKOFF_MAX_S 5.0

void iso__clean(char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = ' ';
}

/* The largest frame the host accepts from a worker: a result, a submission's args. */
static size_t frame_max(const bgt_config *cfg)
{
    size_t m = cfg->max_result_bytes > cfg->max_args_bytes ? cfg->max_result_bytes
                                                           : cfg->max_args_bytes;
    return (m > (1u << 20) ? m : (1u << 20)) + (64u << 10);
}

/* Live worker processes of pl, into the metrics. Lock held. */
static void count_workers(iso_pool *pl)
{
    long n = 0;
    for (int i = 0; i < pl->nslots; i++)
        n += pl->slots[i].state != SLOT_EMPTY;
    metrics_iso_workers(pl->host->met, pl->name, n);
}

/* ---- starting a worker ---- */

/* The environment of a worker: the host's, without the Redis address (it may hold a password). */
static char **worker_env(void)
{
    size_t n = 0;
    for (char **e = environ; *e; e++)
        n++;
    char **env = xcalloc(n + 1, sizeof *env);
    size_t k = 0;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "BGTASK_REDIS", 12) != 0)
            env[k++] = *e;
    return env;
}

/* posix_spawn the worker with fd as its IPC_WORKER_FD. 0 with *pid, or a negative errno. */
static int spawn(const iso_pool *pl, int fd, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, all;
    char host_pid[24];
    char *name = pl->name;
    snprintf(host_pid, sizeof host_pid, "%d", (int)getpid());
    char *argv[] = {"bgtaskd", WORKER_ARG, name, host_pid, NULL};
    char **env = worker_env();
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fd, IPC_WORKER_FD);
    posix_spawn_file_actions_addclosefrom_np(&fa, IPC_WORKER_FD + 1);
    /* Its own process group: a terminal's Ctrl-C is for the host, which stops its workers. */
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
    int rc = posix_spawn(pid, "/proc/self/exe", &fa, &at, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    free(env);
    return -rc;
}

/* Check a READY frame; the first fills pl's definitions, later ones must match them. */
static int take_ready(iso_pool *pl, const ipc_frame *f, bool first, char *err, size_t errlen)
{
    ipc_rd r;
    const char *name, *version;
    uint32_t hooks, n;
    ipc_rd_init(&r, f);
    ipc_get_str(&r, "plugin name", false, BGT_NAME_MAX, &name);
    ipc_get_str(&r, "plugin version", false, 256, &version);
    ipc_get_u32(&r, "hooks", &hooks);
    ipc_get_u32(&r, "handlers", &n);
    if (!r.bad && n > 1024) {
        snprintf(err, errlen, "READY lists %u handlers, more than 1024", n);
        return -EPROTO;
    }
    proxy_def *defs = xcalloc(n + 1, sizeof *defs);
    for (uint32_t i = 0; i < n && !r.bad; i++) {
        const char *hn;
        proxy_def *d = &defs[i];
        ipc_get_str(&r, "handler name", false, BGT_NAME_MAX, &hn);
        ipc_get_u32(&r, "kind", &d->kind);
        ipc_get_u32(&r, "flags", &d->flags);
        ipc_get_u32(&r, "max_attempts", &d->max_attempts);
        ipc_get_u32(&r, "parallelism", &d->parallelism);
        ipc_get_f64(&r, "timeout_s", &d->timeout_s);
        ipc_get_u32(&r, "batch_size", &d->batch_size);
        ipc_get_u32(&r, "on_failure", &d->on_failure);
        if (hn)
            strlcpy_(d->name, hn, sizeof d->name);
        if (!r.bad && (d->flags & ~(uint32_t)(IPC_HF_SPLIT | IPC_HF_MERGE | IPC_HF_NOT_RETRIABLE))) {
            r.bad = true;
            r.what = "flags";
        }
    }
    char why[200];
    if (!ipc_rd_done(&r, why, sizeof why)) {
        snprintf(err, errlen, "malformed READY: %s", why);
        free(defs);
        return -EPROTO;
    }
    if (first) {
        free(pl->defs);
        pl->defs = defs;
        pl->ndefs = (int)n;
        pl->nhooks = (int)hooks;
        free(pl->owner.name);
        free(pl->owner.version);
        pl->owner.name = xstrdup(name);
        pl->owner.version = xstrdup(version);
        return 0;
    }
    bool same = (int)n == pl->ndefs && strcmp(name, pl->owner.name) == 0;
    for (uint32_t i = 0; same && i < n; i++) {
        const proxy_def *a = &defs[i], *b = &pl->defs[i];
        same = strcmp(a->name, b->name) == 0 && a->kind == b->kind && a->flags == b->flags &&
               a->max_attempts == b->max_attempts && a->parallelism == b->parallelism &&
               a->timeout_s == b->timeout_s && a->batch_size == b->batch_size &&
               a->on_failure == b->on_failure;
    }
    free(defs);
    if (!same) {
        snprintf(err, errlen, "the worker registered other handlers than the first worker did");
        return -EPROTO;
    }
    return 0;
}

/* Answer a SUBMIT with the host's own submission (t is NULL in init). Queues SUBMITTED. */
static int serve_submit(iso_pool *pl, ipc_conn *c, bgt_task *t, const ipc_frame *f, char *err,
                        size_t errlen)
{
    ipc_rd r;
    const char *hname, *args;
    ipc_rd_init(&r, f);
    ipc_get_str(&r, "handler", false, BGT_NAME_MAX, &hname);
    ipc_get_str(&r, "args", true, pl->host->cfg->max_args_bytes, &args);
    char why[200];
    if (!ipc_rd_done(&r, why, sizeof why)) {
        snprintf(err, errlen, "malformed SUBMIT: %s", why);
        return -EPROTO;
    }
    cJSON *a = args ? cJSON_Parse(args) : NULL;
    char id[BGT_ID_LEN + 1] = "";
    int rc = args && !cJSON_IsObject(a) ? -EINVAL : host_api()->submit(t, hname, a, id);
    cJSON_Delete(a);
    ipc_buf b = {0};
    ipc_begin(&b, IPC_SUBMITTED);
    ipc_put_u32(&b, (uint32_t)rc);
    ipc_put_str(&b, rc == 0 ? id : "");
    ipc_end(&b);
    ipc_queue(c, &b);
    ipc_buf_free(&b);
    return 0;
}

/* A LOG frame: the line, tagged with the task's id (t, for task logs) or the plugin's name. */
static int serve_log(iso_pool *pl, bgt_task *t, const ipc_frame *f, char *err, size_t errlen)
{
    ipc_rd r;
    uint32_t level, about;
    const char *text;
    ipc_rd_init(&r, f);
    ipc_get_u32(&r, "level", &level);
    ipc_get_u32(&r, "about", &about);
    ipc_get_str(&r, "text", false, 4096, &text);
    char why[200];
    if (!ipc_rd_done(&r, why, sizeof why)) {
        snprintf(err, errlen, "malformed LOG: %s", why);
        return -EPROTO;
    }
    int lv = level < BGT_LOG_ERR ? BGT_LOG_ERR : level > BGT_LOG_DEBUG ? BGT_LOG_DEBUG
                                                                        : (int)level;
    iso__clean((char *)text);
    if (about == IPC_LOG_TASK && t)
        log_msg(lv, host_api()->task_id(t), "%s", text);
    else
        log_msg(lv, pl->name, "%s", text);
    return 0;
}

/* A NOTE frame: keep its text for the death message. */
static int take_note(const ipc_frame *f, char *note, size_t notelen, char *err, size_t errlen)
{
    ipc_rd r;
    const char *text;
    ipc_rd_init(&r, f);
    ipc_get_str(&r, "text", false, 1024, &text);
    char why[200];
    if (!ipc_rd_done(&r, why, sizeof why)) {
        snprintf(err, errlen, "malformed NOTE: %s", why);
        return -EPROTO;
    }
    strlcpy_(note, text, notelen);
    iso__clean(note);
    return 0;
}

int iso__serve(iso_pool *pl, ipc_conn *c, bgt_task *t, const ipc_frame *f, char *note,
               size_t notelen, char *err, size_t errlen)
{
    switch (f->type) {
    case IPC_LOG: return serve_log(pl, t, f, err, errlen);
    case IPC_SUBMIT: return serve_submit(pl, c, t, f, err, errlen);
    case IPC_NOTE: return take_note(f, note, notelen, err, errlen);
    default:
        snprintf(err, errlen, "unexpected %s frame", ipc_type_name(f->type));
        return -EPROTO;
    }
}

/* Queue the INIT frame for pl on c. */
static void queue_init(const iso_pool *pl, ipc_conn *c, size_t data_limit)
{
    const bgt_config *cfg = pl->host->cfg;
    ipc_buf b = {0};
    ipc_begin(&b, IPC_INIT);
    ipc_put_u32(&b, IPC_VERSION);
    ipc_put_str(&b, pl->file);
    ipc_put_str(&b, cfg->plugins_dir);
    ipc_put_str(&b, pl->config_text);
    ipc_put_u32(&b, (uint32_t)cfg->max_args_bytes);
    ipc_put_u32(&b, (uint32_t)cfg->max_result_bytes);
    ipc_put_u32(&b, (uint32_t)cfg->max_subtasks);
    ipc_put_f64(&b, cfg->progress_interval_s);
    ipc_put_u32(&b, (uint32_t)(log_enabled(BGT_LOG_DEBUG)  ? BGT_LOG_DEBUG
                               : log_enabled(BGT_LOG_INFO) ? BGT_LOG_INFO
                                                           : BGT_LOG_NOTICE));
    ipc_put_u32(&b, (uint32_t)pl->conf.seccomp);
    ipc_put_f64(&b, (double)data_limit);
    ipc_end(&b);
    ipc_queue(c, &b);
    ipc_buf_free(&b);
}

int iso__exchange(ipc_conn *c, double timeout_s)
{
    int rc = ipc_flush(c);
    if (rc < 0 && rc != -EAGAIN)
        return rc;
    if (!ipc_pending(c)) {
        /* The common case, all sent: the read itself waits (up to SO_RCVTIMEO, ISO_TICK_S),
         * one system call instead of poll and read. */
        long r = ipc_fill(c);
        return r < 0 && r != -EAGAIN ? (int)r : 0;
    }
    struct pollfd p = {.fd = c->fd, .events = POLLIN | POLLOUT};
    int ms = (int)ceil(fmin(fmax(timeout_s, 0), ISO_TICK_S) * 1000);
    int n = poll(&p, 1, ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    if (p.revents & POLLOUT) {
        rc = ipc_flush(c);
        if (rc < 0 && rc != -EAGAIN)
            return rc;
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
        long r = ipc_fill(c);
        if (r < 0 && r != -EAGAIN)
            return (int)r;
    }
    return 0;
}

/* Where a worker's memory limit goes: its slot's cgroup, or 0 cgroup and the RLIMIT_DATA size. */
static size_t memory_limit(iso_pool *pl, iso_slot *s)
{
    iso_host *h = pl->host;
    if (pl->conf.memory_max == 0)
        return 0;
    if (!s->cgroup) {
        pthread_mutex_lock(&h->lock);
        if (!h->cg_tried) {
            h->cg_tried = true;
            if (cgroup_base_setup(&h->cg, "/sys/fs/cgroup", "/proc/self/cgroup", h->cg_why,
                                  sizeof h->cg_why) == 0)
                log_info("memory_max of isolated plugins: cgroup v2 memory.max under %s",
                         h->cg.dir);
            else
                log_notice("memory_max of isolated plugins: RLIMIT_DATA, because %s", h->cg_why);
        }
        bool cg = h->cg.dir != NULL;
        pthread_mutex_unlock(&h->lock);
        char name[BGT_NAME_MAX + 32], why[300];
        snprintf(name, sizeof name, "w-%s-%d", pl->name, s->index);
        if (cg && cgroup_worker(&h->cg, name, pl->conf.memory_max, &s->cgroup, why,
                                sizeof why) < 0)
            log_warn("%s; this worker's memory_max is RLIMIT_DATA instead", why);
    }
    return s->cgroup ? 0 : pl->conf.memory_max;
}

/*
 * Start the process of slot s (SLOT_STARTING, owned by the caller) and run its start-up
 * exchange: INIT, then the plugin's init (its LOG and SUBMIT frames are served), then READY.
 * first: this READY defines the plugin's handlers. On failure the process is gone and err
 * says why; a death also sets *note to its crash note.
 */
static int start_worker(iso_pool *pl, iso_slot *s, bool first, char *err, size_t errlen)
{
    char note[1024] = "";
    int sv[2] = {-1, -1};
    int rc;
    s->pid = 0;
    size_t data_limit = memory_limit(pl, s);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        rc = -errno;
        snprintf(err, errlen, "socketpair: %s", strerror(-rc));
        return rc;
    }
    /* dup2 onto itself would keep the close-on-exec flag. */
    if (sv[1] == IPC_WORKER_FD) {
        int moved = fcntl(sv[1], F_DUPFD_CLOEXEC, IPC_WORKER_FD + 1);
        close(sv[1]);
        sv[1] = moved;
    }
    rc = sv[1] < 0 ? -errno : spawn(pl, sv[1], &s->pid);
    close(sv[1]);
    if (rc < 0) {
        close(sv[0]);
        snprintf(err, errlen, "cannot start a worker: %s", strerror(-rc));
        return rc;
    }
    /* Reads wait at most a tick (the callers look at deadlines and stop flags between
     * them); sends never wait (MSG_DONTWAIT), what does not fit is queued. */
    struct timeval tick = {0, (suseconds_t)(ISO_TICK_S * 1e6)};
    setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof tick);
    ipc_conn_init(&s->conn, sv[0], frame_max(pl->host->cfg));
    if (s->cgroup) {
        if ((rc = cgroup_move(s->cgroup, s->pid)) < 0) {
            snprintf(err, errlen, "cannot move the worker into %s: %s", s->cgroup,
                     strerror(-rc));
            goto fail;
        }
        s->oom_base = cgroup_oom_kills(s->cgroup);
    }
    queue_init(pl, &s->conn, data_limit);
    double limit = pl->host->cfg->plugins_init_timeout_s;
    double deadline = limit > 0 ? mono_s() + limit : INFINITY;
    for (;;) {
        ipc_frame f;
        while ((rc = ipc_next(&s->conn, &f)) == 1) {
            switch (f.type) {
            case IPC_LOG:
            case IPC_SUBMIT:
            case IPC_NOTE:
                rc = iso__serve(pl, &s->conn, NULL, &f, note, sizeof note, err, errlen);
                break;
            case IPC_READY:
                rc = take_ready(pl, &f, first, err, errlen);
                if (rc == 0) {
                    s->calls = 0;
                    return 0;
                }
                break;
            case IPC_FAILED: {
                ipc_rd r;
                const char *msg;
                ipc_rd_init(&r, &f);
                ipc_get_str(&r, "message", false, 2048, &msg);
                char why[200];
                if (ipc_rd_done(&r, why, sizeof why)) {
                    iso__clean((char *)msg);
                    snprintf(err, errlen, "%s", msg);
                    rc = -ECANCELED;
                } else {
                    snprintf(err, errlen, "malformed FAILED: %s", why);
                    rc = -EPROTO;
                }
                break;
            }
            default:
                snprintf(err, errlen, "unexpected %s frame while starting",
                         ipc_type_name(f.type));
                rc = -EPROTO;
            }
            if (rc < 0)
                goto fail;
        }
        if (rc < 0) {
            snprintf(err, errlen, "%s", s->conn.err);
            goto fail;
        }
        double left = deadline - mono_s();
        if (left <= 0) {
            snprintf(err, errlen, "the plugin's init did not return within %g s "
                     "(plugins.init_timeout): its worker was killed", limit);
            rc = -ETIMEDOUT;
            goto fail;
        }
        if ((rc = iso__exchange(&s->conn, fmin(left, ISO_TICK_S))) < 0) {
            /* It died: the message is its exit, made below. */
            err[0] = '\0';
            goto fail;
        }
    }

fail:
    kill(s->pid, SIGKILL);
    int st = 0;
    while (waitpid(s->pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (!err[0]) {
        char what[160];
        if (WIFSIGNALED(st))
            snprintf(what, sizeof what, "signal %d (SIG%s)", WTERMSIG(st),
                     sigabbrev_np(WTERMSIG(st)) ? sigabbrev_np(WTERMSIG(st)) : "?");
        else
            snprintf(what, sizeof what, "exited with status %d", WEXITSTATUS(st));
        snprintf(err, errlen, "worker died during init: %s%s%s", what, note[0] ? "; crash note: " : "",
                 note);
    }
    ipc_conn_close(&s->conn);
    s->pid = 0;
    return rc < 0 ? rc : -ECHILD;
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

/* ---- slots ---- */

iso_slot *iso__acquire(iso_pool *pl, bgt_task *t)
{
    iso_host *h = pl->host;
    pthread_mutex_lock(&h->lock);
    pl->waiting++;
    for (;;) {
        iso_slot *s = NULL;
        for (int i = 0; i < pl->nslots && !s; i++)
            if (pl->slots[i].state == SLOT_IDLE)
                s = &pl->slots[i];
        if (s) {
            s->state = SLOT_BUSY;
            pl->waiting--;
            pthread_mutex_unlock(&h->lock);
            /* Nothing may follow a DONE: a worker that sent more is misbehaving. (One that
             * died between calls shows at the first read of the next call.) */
            if (s->conn.in_len == s->conn.in_off)
                return s;
            char msg[1400];
            iso__bury(pl, s, false, "protocol violation: frames after DONE", "between calls",
                      "", msg, sizeof msg);
            pthread_mutex_lock(&h->lock);
            pl->waiting++;
            continue;
        }
        if (host_api()->cancelled(t)) {
            pl->waiting--;
            pthread_mutex_unlock(&h->lock);
            return NULL;
        }
        pthread_cond_signal(&h->work_cond);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(ISO_TICK_S * 1e9);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&h->idle_cond, &h->lock, &ts);
    }
}

/* The resident memory of process pid in bytes, or 0 when it cannot be read. */
static size_t rss_of(pid_t pid)
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

/* Ask s's process to exit (its end closed) and leave the reaping to the supervisor. Lock held. */
static void retire(iso_pool *pl, iso_slot *s)
{
    ipc_conn_close(&s->conn);
    s->state = SLOT_RETIRING;
    s->retire_by = mono_s() + pl->conf.kill_grace_s;
    pthread_cond_signal(&pl->host->work_cond);
}

void iso__release(iso_pool *pl, iso_slot *s)
{
    iso_host *h = pl->host;
    s->calls++;
    size_t rss = pl->conf.max_rss ? rss_of(s->pid) : 0;
    pthread_mutex_lock(&h->lock);
    pl->failures = 0;
    if (pl->conf.max_tasks_per_process && s->calls >= pl->conf.max_tasks_per_process) {
        log_msg(BGT_LOG_INFO, pl->name, "replacing worker %d after %ld calls "
                "(max_tasks_per_process)", (int)s->pid, s->calls);
        metrics_iso_inc(h->met, pl->name, MI_RECYCLE_TASKS);
        retire(pl, s);
    } else if (rss > pl->conf.max_rss) {
        log_msg(BGT_LOG_NOTICE, pl->name, "replacing worker %d: %zu MiB resident after a call, "
                "over max_rss %zu MiB", (int)s->pid, rss >> 20, pl->conf.max_rss >> 20);
        metrics_iso_inc(h->met, pl->name, MI_RECYCLE_RSS);
        retire(pl, s);
    } else {
        s->state = SLOT_IDLE;
        pthread_cond_signal(&h->idle_cond);
    }
    pthread_mutex_unlock(&h->lock);
}

void iso__bury(iso_pool *pl, iso_slot *s, bool stopped, const char *violation,
               const char *where, const char *note, char *msg, size_t msglen)
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
    ipc_conn_close(&s->conn);

    pthread_mutex_lock(&h->lock);
    s->state = SLOT_EMPTY;
    s->pid = 0;
    bool opened = false;
    if (stopped)
        metrics_iso_inc(h->met, pl->name, MI_KILL);
    else {
        metrics_iso_inc(h->met, pl->name, ev);
        opened = count_death(pl, mono_s());
    }
    count_workers(pl);
    pthread_cond_signal(&h->work_cond);
    pthread_mutex_unlock(&h->lock);
    if (opened)
        notify(h);
}

/* ---- the supervisor ---- */

/*
 * Start a worker in an empty slot of pl: the pool is kept full (a call should not wait for a
 * start), but while the breaker is open only for a proxy that waits for a worker when none is
 * idle or starting. Lock held; released while the worker starts. True if it tried.
 */
static bool maybe_start(iso_host *h, iso_pool *pl, double now, double *wake)
{
    int idle = 0, starting = 0, live = 0;
    iso_slot *empty = NULL;
    for (int i = 0; i < pl->nslots; i++) {
        iso_slot *s = &pl->slots[i];
        idle += s->state == SLOT_IDLE;
        starting += s->state == SLOT_STARTING;
        live += s->state == SLOT_IDLE || s->state == SLOT_BUSY || s->state == SLOT_STARTING;
        if (s->state == SLOT_EMPTY && !empty)
            empty = s;
    }
    bool wanted = pl->breaker_open ? pl->waiting > idle + starting : true;
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
    int rc = start_worker(pl, empty, false, err, sizeof err);
    if (rc < 0)
        log_msg(BGT_LOG_ERR, pl->name, "worker start failed: %s", err);
    pthread_mutex_lock(&h->lock);
    bool opened = false;
    if (rc == 0) {
        empty->state = SLOT_IDLE;
        metrics_iso_inc(h->met, pl->name, MI_SPAWN);
        pthread_cond_broadcast(&h->idle_cond);
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
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->idle_cond, NULL);
    pthread_cond_init(&h->work_cond, NULL);
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
    int rc = pthread_create(&h->supervisor, NULL, supervisor_main, h);
    h->started = rc == 0;
    return -rc;
}

/* Stop every worker of pl: ends closed, then SIGKILL after kill_grace. */
static void stop_workers(iso_pool *pl)
{
    double until = mono_s() + pl->conf.kill_grace_s;
    for (int i = 0; i < pl->nslots; i++)
        if (pl->slots[i].state != SLOT_EMPTY)
            ipc_conn_close(&pl->slots[i].conn);
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
    for (int i = 0; i < pl->nslots; i++)
        pl->slots[i] = (iso_slot){.index = i, .state = SLOT_EMPTY, .conn = {.fd = -1}};
    pl->deaths = xcalloc((size_t)pl->conf.breaker_deaths, sizeof *pl->deaths);
    pl->owner.path = xstrdup(pc->file);
    pl->owner.reg = h->reg;

    char why[1200];
    why[0] = '\0';
    pl->slots[0].state = SLOT_STARTING;
    int rc = start_worker(pl, &pl->slots[0], true, why, sizeof why);
    if (rc < 0) {
        /* The loader's own message (rc -ECANCELED) names the file already. */
        if (rc == -ECANCELED)
            snprintf(err, errlen, "%s", why);
        else
            snprintf(err, errlen, "%s: %s", pc->file, why);
        pool_free(pl);
        return rc;
    }
    pl->slots[0].state = SLOT_IDLE;
    if ((rc = register_proxies(pl, err, errlen)) < 0) {
        pool_free(pl);
        return rc;
    }
    /* A proxy kills its worker kill_grace after a stop: the manager need not write it off. */
    registry_stops_itself(h->reg, &pl->owner);
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
        pthread_join(h->supervisor, NULL);
    }
    while (h->pools) {
        iso_pool *pl = h->pools;
        h->pools = pl->next;
        pool_free(pl);
    }
    cgroup_base_free(&h->cg);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->idle_cond);
    pthread_cond_destroy(&h->work_cond);
    free(h);
}

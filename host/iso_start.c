/*
 * iso_start.c - starting a worker process of an isolated plugin: its
 * environment, posix_spawn of /proc/self/exe (so the worker is this very
 * binary even if the file was replaced since), its cgroup or RLIMIT_DATA,
 * and the start-up exchange (INIT, the plugin's init with its LOG and SUBMIT
 * frames, then READY or FAILED). Also the serving of the frames a worker may
 * send at any time (LOG, SUBMIT, NOTE), which calls share.
 */
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api.h"
#include "isolate_int.h"
#include "util.h"
#include "worker_main.h"

extern char **environ;

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

void iso__unmap_page(iso_slot *s)
{
    if (s->page)
        munmap(s->page, IPC_PAGE_SIZE);
    s->page = NULL;
}

/* fd moved, if needed, to a number above IPC_PAGE_FD (close-on-exec): dup2 onto the worker's
 * numbers then never overwrites the other one, nor keeps the flag (a dup2 onto itself). */
static int above_page_fd(int fd)
{
    if (fd < 0 || fd > IPC_PAGE_FD)
        return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, IPC_PAGE_FD + 1);
    close(fd);
    return moved;
}

/* A new zeroed page for s, mapped; its memfd (close-on-exec) in *fd. 0 or a negative errno. */
static int make_page(iso_slot *s, int *fd)
{
    *fd = above_page_fd(memfd_create("bgtaskd-worker-page", MFD_CLOEXEC));
    if (*fd < 0)
        return -errno;
    void *p = MAP_FAILED;
    if (ftruncate(*fd, IPC_PAGE_SIZE) == 0)
        p = mmap(NULL, IPC_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
    if (p == MAP_FAILED) {
        int rc = -errno;
        close(*fd);
        *fd = -1;
        return rc;
    }
    s->page = p;
    return 0;
}

/* posix_spawn the worker with fd as its IPC_WORKER_FD and page_fd as its IPC_PAGE_FD (both
 * above IPC_PAGE_FD here). 0 with *pid, or a negative errno. */
static int spawn(const iso_pool *pl, int fd, int page_fd, pid_t *pid)
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
    posix_spawn_file_actions_adddup2(&fa, page_fd, IPC_PAGE_FD);
    posix_spawn_file_actions_addclosefrom_np(&fa, IPC_PAGE_FD + 1);
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
static int serve_submit(iso_pool *pl, iso_slot *s, bgt_task *t, const ipc_frame *f, char *err,
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
    pthread_mutex_lock(&s->send_lock);
    ipc_queue(&s->conn, &b);
    pthread_mutex_unlock(&s->send_lock);
    ipc_buf_free(&b);
    return 0;
}

/* A line of task t's log, as bgt_log in thread mode makes it: printed, and kept with the
 * task (tasks.log_level). */
static void task_log(bgt_task *t, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    host_api()->task_log(t, level, fmt, ap);
    va_end(ap);
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
        task_log(t, lv, "%s", text);
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

int iso__serve(iso_pool *pl, iso_slot *s, bgt_task *t, const ipc_frame *f, char *note,
               size_t notelen, char *err, size_t errlen)
{
    switch (f->type) {
    case IPC_LOG: return serve_log(pl, t, f, err, errlen);
    case IPC_SUBMIT: return serve_submit(pl, s, t, f, err, errlen);
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
    /* The most verbose of the host's level and the one task logs keep. */
    int keep = cfg->task_log_lines > 0 && cfg->task_log_level
                   ? log_level_parse(cfg->task_log_level)
                   : BGT_LOG_NOTICE;
    int shown = log_enabled(BGT_LOG_DEBUG) ? BGT_LOG_DEBUG
                : log_enabled(BGT_LOG_INFO) ? BGT_LOG_INFO
                                            : BGT_LOG_NOTICE;
    ipc_put_u32(&b, (uint32_t)(keep > shown ? keep : shown));
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
int iso__start_worker(iso_pool *pl, iso_slot *s, bool first, char *err, size_t errlen)
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
    int page_fd = -1;
    sv[1] = above_page_fd(sv[1]);
    rc = sv[1] < 0 ? -errno : make_page(s, &page_fd);
    if (rc == 0)
        rc = spawn(pl, sv[1], page_fd, &s->pid);
    if (sv[1] >= 0)
        close(sv[1]);
    if (page_fd >= 0)
        close(page_fd); /* the mapping stays */
    if (rc < 0) {
        close(sv[0]);
        iso__unmap_page(s);
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
                rc = iso__serve(pl, s, NULL, &f, note, sizeof note, err, errlen);
                break;
            case IPC_READY:
                rc = take_ready(pl, &f, first, err, errlen);
                if (rc == 0) {
                    s->calls = 0;
                    s->n = s->first = 0;
                    s->next_seq = 1;
                    s->note[0] = '\0';
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
    iso__unmap_page(s);
    s->pid = 0;
    return rc < 0 ? rc : -ECHILD;
}

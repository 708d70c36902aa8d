/*
 * harness.c - the core of the test harness: the record of every process it
 * started and every folder it made, spawning, running a command with its
 * output captured, clocks, and th_cleanup, which undoes it all at exit.
 *
 * Every child is recorded with its pid; the harness only ever signals a pid it
 * started and has not reaped yet, so a recycled pid is never hit. Children get
 * PR_SET_PDEATHSIG(SIGKILL), so a test program killed by its timeout does not
 * leave servers behind. The harness uses hiredis and libc only, so it builds
 * without the host library. harness_redis.c runs redis-servers and reads
 * Redis; harness_host.c runs bgtaskd and bgtaskctl.
 */
#include "harness_int.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static struct child *children;
static size_t nchildren, children_cap;
static char **dirs; /* scratch folders to remove */
static size_t ndirs, dirs_cap;
static pid_t owner_pid; /* the test program; its forked children never clean up */
static int tmp_seq;

/*
 * Runs before main: line-buffered stdout so cmocka's lines and the messages
 * on stderr come out in order through a pipe; SIGPIPE ignored so a write to a
 * killed redis-server is an error, not the death of the test; $BGTASK_REDIS
 * dropped so a developer's own setting never points a test host at a real
 * Redis; th_cleanup registered to run at exit.
 */
__attribute__((constructor)) static void th_init(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    unsetenv("BGTASK_REDIS");
    owner_pid = getpid();
    atexit(th_cleanup);
}

/* The host's own clock helpers (util.h): the tests link the host library. */
double th_now(void) { return mono_s(); }

void th_sleep(double s) { sleep_s(s); }

/* Read a whole file into a malloc'd NUL-terminated buffer; NULL if unreadable. */
char *th__read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t n = 0, cap = 4096;
    char *buf = xrealloc(NULL, cap);
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* Print the last max bytes of a file on stderr, under a title. */
void th__dump_tail(const char *title, const char *path, size_t max)
{
    size_t len;
    char *s = th__read_file(path, &len);
    if (!s)
        return;
    const char *from = len > max ? s + len - max : s;
    fprintf(stderr, "----- %s (%s) -----\n%s%s----- end -----\n", title, path, from,
            len && s[len - 1] == '\n' ? "" : "\n");
    free(s);
}

static int mkdir_p(const char *path)
{
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST) {
            free(p);
            return -1;
        }
        *s = '/';
    }
    int rc = mkdir(p, 0755) < 0 && errno != EEXIST ? -1 : 0;
    free(p);
    return rc;
}

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    remove(path);
    return 0;
}

static void rm_rf(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* The absolute path of $BUILD (default "build"), created if missing; malloc'd. */
char *th__build_dir(void)
{
    const char *b = getenv("BUILD");
    if (!b || !*b)
        b = "build";
    if (mkdir_p(b) < 0) {
        fprintf(stderr, "harness: cannot create %s: %s\n", b, strerror(errno));
        abort();
    }
    char *abs = realpath(b, NULL);
    if (!abs) {
        fprintf(stderr, "harness: %s: %s\n", b, strerror(errno));
        abort();
    }
    return abs;
}

/* ---- children ---- */

void th__child_add(pid_t pid, enum child_kind kind, const char *prefix)
{
    if (nchildren == children_cap) {
        children_cap = children_cap ? children_cap * 2 : 16;
        children = xrealloc(children, children_cap * sizeof *children);
    }
    struct child *c = &children[nchildren++];
    memset(c, 0, sizeof *c);
    c->pid = pid;
    c->kind = kind;
    snprintf(c->prefix, sizeof c->prefix, "%s", prefix ? prefix : "bgtask");
}

/* The newest record of pid (a pid can be reused after a reap), or NULL. */
struct child *th__child_find(pid_t pid)
{
    if (pid <= 0)
        return NULL;
    for (size_t i = nchildren; i-- > 0;)
        if (children[i].pid == pid)
            return &children[i];
    return NULL;
}

/* True if pid is a child we started and have not reaped: the only kind we signal. */
bool th__child_live(pid_t pid)
{
    struct child *c = th__child_find(pid);
    return c && !c->reaped;
}

/* waitpid on one of our children; true once it has exited (status kept). */
bool th__child_reap(struct child *c, bool block)
{
    if (!c)
        return true;
    while (!c->reaped) {
        int st;
        pid_t r = waitpid(c->pid, &st, block ? 0 : WNOHANG);
        if (r == c->pid) {
            c->reaped = true;
            c->status = st;
        } else if (r == 0) {
            return false;
        } else if (errno != EINTR) {
            /* Reaped behind our back (or never ours): treat it as gone. */
            c->reaped = true;
            c->status = 0;
        }
    }
    return true;
}

/* Wait up to timeout_s for a child to exit; true if it did. */
bool th__child_wait(struct child *c, double timeout_s)
{
    double end = th_now() + timeout_s;
    for (;;) {
        if (th__child_reap(c, false))
            return true;
        if (th_now() >= end)
            return false;
        th_sleep(0.005);
    }
}

/* "exited with code N" or "killed by signal N" for a waitpid status. */
const char *th__status_text(int st, char *buf, size_t n)
{
    if (WIFEXITED(st))
        snprintf(buf, n, "exited with code %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, n, "killed by signal %d", WTERMSIG(st));
    else
        snprintf(buf, n, "status 0x%x", st);
    return buf;
}

void th__child_kill9(struct child *c)
{
    if (!c || c->reaped)
        return;
    kill(c->pid, SIGKILL);
    th__child_reap(c, true);
}

/*
 * fork + exec argv[0] with stdin from /dev/null and stdout/stderr on fd_out /
 * fd_err (-1: inherited). The child dies with the test program. Returns the pid
 * or -1. Only async-signal-safe calls happen between fork and exec.
 */
pid_t th__spawn(char *const argv[], int fd_out, int fd_err)
{
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "harness: fork: %s\n", strerror(errno));
        if (devnull >= 0)
            close(devnull);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        if (fd_out >= 0)
            dup2(fd_out, STDOUT_FILENO);
        if (fd_err >= 0)
            dup2(fd_err, STDERR_FILENO);
        /* Sockets of the test's own Redis connections must not leak into servers. */
        if (close_range(3, ~0U, 0) < 0)
            for (int fd = 3; fd < 1024; fd++)
                close(fd);
        execv(argv[0], argv);
        static const char msg[] = "harness: exec failed\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
        _exit(127);
    }
    if (devnull >= 0)
        close(devnull);
    return pid;
}
/* ---- scratch folders ---- */

char *th_tmpdir(const char *tag)
{
    char *build = th__build_dir();
    char *root = xasprintf("%s/tmp", build);
    free(build);
    if (mkdir_p(root) < 0) {
        fprintf(stderr, "harness: cannot create %s: %s\n", root, strerror(errno));
        abort();
    }
    char safe[64] = "";
    if (tag) {
        size_t i = 0;
        for (; tag[i] && i < sizeof safe - 1; i++) {
            char c = tag[i];
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-';
            safe[i] = ok ? c : '_';
        }
        safe[i] = '\0';
    }
    char *dir = xasprintf("%s/%s-%d-%d%s%s", root, program_invocation_short_name, (int)getpid(),
                          ++tmp_seq, *safe ? "-" : "", safe);
    free(root);
    /* A folder of that name can only be left over from an earlier program with our pid. */
    rm_rf(dir);
    if (mkdir(dir, 0755) < 0) {
        fprintf(stderr, "harness: cannot create %s: %s\n", dir, strerror(errno));
        abort();
    }
    if (ndirs == dirs_cap) {
        dirs_cap = dirs_cap ? dirs_cap * 2 : 16;
        dirs = xrealloc(dirs, dirs_cap * sizeof *dirs);
    }
    dirs[ndirs++] = xstrdup(dir);
    return dir;
}

/* Remove a scratch folder now and forget it. */
/* Whether BGT_TEST_KEEP asks to keep the scratch folders. */
static bool keep_dirs(void)
{
    const char *keep = getenv("BGT_TEST_KEEP");
    return keep && *keep && strcmp(keep, "0") != 0;
}

void th__tmpdir_remove(const char *dir)
{
    if (keep_dirs())
        return; /* th_cleanup names it */
    for (size_t i = 0; i < ndirs; i++) {
        if (strcmp(dirs[i], dir) == 0) {
            rm_rf(dirs[i]);
            free(dirs[i]);
            dirs[i] = dirs[--ndirs];
            return;
        }
    }
}

void th_cleanup(void)
{
    if (getpid() != owner_pid)
        return;
    for (size_t i = 0; i < nchildren; i++)
        th__child_kill9(&children[i]);
    free(children);
    children = NULL;
    nchildren = children_cap = 0;

    bool keep = keep_dirs();
    char *root = NULL;
    for (size_t i = 0; i < ndirs; i++) {
        if (keep) {
            fprintf(stderr, "harness: kept %s\n", dirs[i]);
        } else {
            rm_rf(dirs[i]);
            if (!root) {
                root = xstrdup(dirs[i]);
                char *slash = strrchr(root, '/');
                if (slash)
                    *slash = '\0';
            }
        }
        free(dirs[i]);
    }
    /* The shared $BUILD/tmp goes too once no program uses it any more. */
    if (root)
        rmdir(root);
    free(root);
    free(dirs);
    dirs = NULL;
    ndirs = dirs_cap = 0;
}
/* ---- commands ---- */

struct sink {
    int fd;
    char *buf;
    size_t len, cap;
};

/* Read what is there from s->fd; false at end of file. */
static bool sink_read(struct sink *s)
{
    if (s->cap - s->len < 4096) {
        s->cap = s->cap ? s->cap * 2 : 8192;
        s->buf = xrealloc(s->buf, s->cap);
    }
    ssize_t n = read(s->fd, s->buf + s->len, s->cap - s->len - 1);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (n <= 0)
        return false;
    s->len += (size_t)n;
    return true;
}

static char *sink_take(struct sink *s)
{
    char *b = s->buf ? s->buf : xrealloc(NULL, 1);
    b[s->len] = '\0';
    s->buf = NULL;
    return b;
}

int th_run(double timeout_s, char *const argv[], char **out, char **err)
{
    if (out)
        *out = NULL;
    if (err)
        *err = NULL;
    int po[2] = {-1, -1}, pe[2] = {-1, -1};
    if (pipe2(po, O_CLOEXEC) < 0 || (err && pipe2(pe, O_CLOEXEC) < 0)) {
        fprintf(stderr, "harness: pipe: %s\n", strerror(errno));
        for (int i = 0; i < 2; i++) {
            if (po[i] >= 0)
                close(po[i]);
            if (pe[i] >= 0)
                close(pe[i]);
        }
        return -1;
    }
    pid_t pid = th__spawn(argv, po[1], err ? pe[1] : -1);
    close(po[1]);
    if (err)
        close(pe[1]);
    if (pid < 0) {
        close(po[0]);
        if (err)
            close(pe[0]);
        return -1;
    }
    th__child_add(pid, CHILD_COMMAND, NULL);
    struct child *ch = th__child_find(pid);

    /* Drain both pipes together so a child filling one of them never blocks. */
    struct sink sinks[2] = {{.fd = po[0]}, {.fd = err ? pe[0] : -1}};
    double end = timeout_s > 0 ? th_now() + timeout_s : 0;
    bool timed_out = false;
    for (;;) {
        struct pollfd pfd[2];
        int n = 0;
        for (int i = 0; i < 2; i++) {
            if (sinks[i].fd >= 0) {
                pfd[n].fd = sinks[i].fd;
                pfd[n].events = POLLIN;
                pfd[n].revents = 0;
                n++;
            }
        }
        bool exited = n == 0 && th__child_reap(ch, false);
        if (exited)
            break;
        int wait_ms = n == 0 ? 5 : -1;
        if (end > 0) {
            double left = end - th_now();
            if (left <= 0) {
                timed_out = true;
                break;
            }
            if (wait_ms < 0 || left * 1000 < wait_ms)
                wait_ms = (int)(left * 1000) + 1;
        }
        if (n == 0) {
            th_sleep(wait_ms / 1000.0);
            continue;
        }
        int pr = poll(pfd, (nfds_t)n, wait_ms);
        if (pr < 0 && errno != EINTR)
            break;
        for (int k = 0; k < n && pr > 0; k++) {
            if (!pfd[k].revents)
                continue;
            for (int i = 0; i < 2; i++) {
                if (sinks[i].fd == pfd[k].fd && !sink_read(&sinks[i])) {
                    close(sinks[i].fd);
                    sinks[i].fd = -1;
                }
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (sinks[i].fd >= 0)
            close(sinks[i].fd);
    int rc;
    if (timed_out) {
        fprintf(stderr, "harness: %s still running after %.1f s: killed\n", argv[0], timeout_s);
        th__child_kill9(ch);
        rc = -2;
    } else {
        th__child_reap(ch, true);
        rc = WIFEXITED(ch->status) ? WEXITSTATUS(ch->status) : -1;
    }
    if (out)
        *out = sink_take(&sinks[0]);
    if (err)
        *err = sink_take(&sinks[1]);
    free(sinks[0].buf);
    free(sinks[1].buf);
    return rc;
}

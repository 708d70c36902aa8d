/* host.c - the bgtaskd the bench starts: its config, its process, its exit and its CPU. */
#include "bench.h"

/* ---- the host process ---- */

/* Fill b's paths from the folder of this binary: bin/bgtaskd, plugins/, bench/. */
int find_paths(bench *b)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) {
        say("bench: cannot find its own path: %s", strerror(errno));
        return -errno;
    }
    exe[n] = '\0';
    char *bin = dirname(exe);
    snprintf(b->bgtaskd, sizeof b->bgtaskd, "%s/bgtaskd", bin);
    snprintf(b->plugins, sizeof b->plugins, "%s/../plugins", bin);
    snprintf(b->outdir, sizeof b->outdir, "%s/../bench", bin);
    if (access(b->bgtaskd, X_OK) < 0) {
        say("bench: %s: %s (run make)", b->bgtaskd, strerror(errno));
        return -ENOENT;
    }
    char so[PATH_MAX + 16];
    snprintf(so, sizeof so, "%s/bench.so", b->plugins);
    if (access(so, R_OK) < 0) {
        say("bench: %s: %s (run make)", so, strerror(errno));
        return -ENOENT;
    }
    if (mkdir(b->outdir, 0755) < 0 && errno != EEXIST) {
        say("bench: %s: %s", b->outdir, strerror(errno));
        return -errno;
    }
    char real[PATH_MAX];
    if (realpath(b->outdir, real))
        strlcpy_(b->outdir, real, sizeof b->outdir);
    return 0;
}

/*
 * Write the host's config file: its prefix, id, workers, and the bench plugin alone.
 * tasks.max_subtasks (default 10000) is raised or lowered to --subtasks, so that the
 * parallel mode's split is not refused; the other modes have no subtasks.
 * tasks.retention_max is the flat mode's --retention-max; the other modes keep every
 * task they run (0: no limit), since they count the finished ones. A limit as large as
 * --tasks is not enough: it is split over the shards, and a shard that got more than
 * its share would trim records the count still waits for. Hosts of one mode (h->index
 * 1, 2, ...) share its prefix, each with its own id and files.
 */
int host_write_config(const bench *b, host_proc *h, const char *mode)
{
    long keep = strcmp(mode, "flat") == 0 ? b->retention_max : 0;
    char name[32];
    if (h->index > 0)
        snprintf(name, sizeof name, "%s-%d", mode, h->index);
    else
        snprintf(name, sizeof name, "%s", mode);
    snprintf(h->id, sizeof h->id, "bench-%d-%s", (int)getpid(), name);
    snprintf(h->prefix, sizeof h->prefix, "bgbench:%d:%s", (int)getpid(), mode);
    snprintf(h->conf, sizeof h->conf, "%s/bgtaskd-%s.conf", b->outdir, name);
    snprintf(h->log, sizeof h->log, "%s/bgtaskd-%s.log", b->outdir, name);
    FILE *f = fopen(h->conf, "w");
    if (!f) {
        say("bench: %s: %s", h->conf, strerror(errno));
        return -errno;
    }
    fprintf(f,
            "# Written by build/bin/bench for its %s run.\n"
            "redis: { prefix = \"%s\"; };\n"
            "host: { id = \"%s\"; workers = %d; log_level = \"warning\"; shutdown_grace = 5.0; };\n"
            "tasks: { max_subtasks = %ld; retention_max = %ld; };\n"
            "plugins: { dir = \"%s\"; load = ( { name = \"bench\"; %s } ); };\n",
            mode, h->prefix, h->id, b->workers, b->subtasks, keep, b->plugins,
            b->isolation ? b->isolation : "");
    if (fclose(f) != 0) {
        say("bench: %s: %s", h->conf, strerror(errno));
        return -EIO;
    }
    return 0;
}

/* In the child: join the network namespace `name` (made by `ip netns add`). */
static void enter_netns(const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/var/run/netns/%s", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) {
        dprintf(STDERR_FILENO, "bench: network namespace %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    close(fd);
}

/*
 * Start bgtaskd -c <conf> with stdout and stderr in the log file, in the network
 * namespace h->netns when one is named. The Redis address goes in $BGTASK_REDIS (which
 * overrides the config file), not on the command line, where ps would show a password in
 * it.
 */
int host_start(const bench *b, host_proc *h)
{
    int fd = open(h->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        say("bench: %s: %s", h->log, strerror(errno));
        return -errno;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        say("bench: fork: %s", strerror(errno));
        close(fd);
        return -errno;
    }
    if (pid == 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        setenv("BGTASK_REDIS", b->url, 1);
        if (h->netns)
            enter_netns(h->netns);
        execl(b->bgtaskd, b->bgtaskd, "-c", h->conf, (char *)NULL);
        dprintf(STDERR_FILENO, "bench: exec %s: %s\n", b->bgtaskd, strerror(errno));
        _exit(127);
    }
    close(fd);
    h->pid = pid;
    h->reaped = false;
    return 0;
}

/* Print the end of the host's log (after it failed). */
static void host_log_tail(const host_proc *h)
{
    FILE *f = fopen(h->log, "r");
    if (!f)
        return;
    char line[512];
    char *last[20] = {0};
    size_t n = 0;
    while (fgets(line, sizeof line, f)) {
        free(last[n % 20]);
        last[n++ % 20] = xstrdup(line);
    }
    fclose(f);
    say("bench: the end of %s:", h->log);
    for (size_t i = n > 20 ? n - 20 : 0; i < n; i++) {
        fprintf(stderr, "  %s", last[i % 20]);
        free(last[i % 20]);
    }
}

/* True if the host is still running; reaps it (and says so) when it is not. */
bool host_alive(host_proc *h)
{
    if (!h->pid || h->reaped)
        return false;
    int status;
    pid_t r = wait4(h->pid, &status, WNOHANG, &h->usage);
    if (r == 0)
        return true;
    h->reaped = true;
    if (r == h->pid) {
        if (WIFEXITED(status))
            say("bench: bgtaskd (pid %d) exited with status %d", (int)h->pid, WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
            say("bench: bgtaskd (pid %d) was killed by signal %d", (int)h->pid, WTERMSIG(status));
        host_log_tail(h);
    }
    return false;
}

/* Wait until the host is in P:hosts. 0, -ETIMEDOUT, -ECHILD (it exited) or -EINTR. */
int host_wait_registered(store *st, host_proc *h)
{
    double end = mono_s() + HOST_START_S;
    while (!interrupted) {
        if (!host_alive(h))
            return -ECHILD;
        cJSON *hosts = NULL;
        if (store_list_hosts(st, &hosts) == 0) {
            const cJSON *o;
            bool found = false;
            cJSON_ArrayForEach (o, hosts) {
                const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
                found |= cJSON_IsString(id) && strcmp(id->valuestring, h->id) == 0;
            }
            cJSON_Delete(hosts);
            if (found)
                return 0;
        }
        if (mono_s() > end) {
            say("bench: bgtaskd (pid %d) did not show up in the host list within %.0fs",
                (int)h->pid, HOST_START_S);
            host_log_tail(h);
            return -ETIMEDOUT;
        }
        sleep_s(0.005);
    }
    return -EINTR;
}

/*
 * Stop the host: SIGTERM, then wait for it (it drains, leaves P:hosts and exits). If it
 * is still there after HOST_STOP_S it gets SIGKILL. Only ever signals h->pid.
 */
int host_stop(host_proc *h)
{
    if (!h->pid || h->reaped)
        return 0;
    kill(h->pid, SIGTERM);
    double end = mono_s() + HOST_STOP_S;
    int status = 0;
    for (;;) {
        pid_t r = wait4(h->pid, &status, WNOHANG, &h->usage);
        if (r == h->pid || (r < 0 && errno == ECHILD))
            break;
        if (mono_s() > end) {
            say("bench: bgtaskd (pid %d) did not exit within %.0fs of SIGTERM: killing it",
                (int)h->pid, HOST_STOP_S);
            kill(h->pid, SIGKILL);
            wait4(h->pid, &status, 0, &h->usage);
            h->reaped = true;
            return -ETIMEDOUT;
        }
        sleep_s(0.01);
    }
    h->reaped = true;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        say("bench: bgtaskd (pid %d) ended with status 0x%x after SIGTERM", (int)h->pid, status);
        host_log_tail(h);
        return -EIO;
    }
    return 0;
}

/* Stop the host and remove its files (unless they are wanted, or it failed). */
void host_finish(const bench *b, host_proc *h, bool ok)
{
    if (!h->pid) {
        unlink(h->conf); /* never started: nothing to look at */
        return;
    }
    if (host_stop(h) < 0)
        ok = false;
    if (b->keep_logs || !ok) {
        say("bench: kept %s and %s", h->conf, h->log);
        return;
    }
    unlink(h->conf);
    unlink(h->log);
}

/* CPU seconds (user + system) of a rusage. */
double cpu_s(const struct rusage *u)
{
    return (double)u->ru_utime.tv_sec + (double)u->ru_utime.tv_usec / 1e6 +
           (double)u->ru_stime.tv_sec + (double)u->ru_stime.tv_usec / 1e6;
}

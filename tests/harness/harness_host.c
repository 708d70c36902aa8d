/*
 * harness_host.c - real bgtaskd processes with a config written for each
 * (th_host_*), their logs, and bgtaskctl runs (th_ctl).
 */
#include "harness_int.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

/* The bound th_ctl puts on a bgtaskctl run, so a hung client cannot hang a test. */
#define CTL_DEFAULT_TIMEOUT_S 120.0

static int host_seq;

/* Append the escaped form of s to a libconfig string literal being written. */
static void put_conf_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static bool write_host_conf(const char *path, const char *id, const th_redis *r,
                            const th_host_opts *o, const char *prefix)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "harness: %s: %s\n", path, strerror(errno));
        return false;
    }
    char *build = th__build_dir();
    char *plugdir = xasprintf("%s/plugins", build);
    free(build);

    fprintf(f, "# Written by the test harness for host %s.\n", id);
    fputs("redis: {\n    url = ", f);
    put_conf_string(f, o->redis_url ? o->redis_url : r->url);
    fputs(";\n    prefix = ", f);
    put_conf_string(f, prefix);
    fprintf(f, ";\n    %s\n};\nhost: {\n    id = ", o->redis_settings ? o->redis_settings : "");
    put_conf_string(f, id);
    fprintf(f, ";\n    workers = %d;\n    log_level = \"debug\";\n    shutdown_grace = %f;\n};\n",
            o->workers > 0 ? o->workers : 4, o->shutdown_grace_s > 0 ? o->shutdown_grace_s : 5.0);
    fprintf(f,
            "tasks: {\n    lease = %f;\n    heartbeat = %f;\n    progress_interval = %f;\n"
            "    backoff_base = %f;\n    backoff_max = %f;\n    max_attempts = %d;\n",
            o->lease_s > 0 ? o->lease_s : 3.0, o->heartbeat_s > 0 ? o->heartbeat_s : 0.5,
            o->progress_interval_s > 0 ? o->progress_interval_s : 0.05,
            o->backoff_base_s > 0 ? o->backoff_base_s : 0.05,
            o->backoff_max_s > 0 ? o->backoff_max_s : 1.0,
            o->max_attempts > 0 ? o->max_attempts : 3);
    if (o->max_subtasks > 0)
        fprintf(f, "    max_subtasks = %d;\n", o->max_subtasks);
    if (o->kill_grace_s > 0)
        fprintf(f, "    kill_grace = %f;\n", o->kill_grace_s);
    if (o->tasks_settings)
        fprintf(f, "    %s\n", o->tasks_settings);
    fputs("};\n", f);
    fputs("plugins: {\n    dir = ", f);
    put_conf_string(f, plugdir);
    if (o->plugins_init_timeout_s > 0)
        fprintf(f, ";\n    init_timeout = %f", o->plugins_init_timeout_s);
    fprintf(f, ";\n    load = ( %s );\n};\n", o->plugins ? o->plugins : "{ name = \"demo\"; }");
    if (o->extra)
        fprintf(f, "%s\n", o->extra);
    free(plugdir);
    bool ok = !ferror(f);
    if (fclose(f) != 0)
        ok = false;
    if (!ok)
        fprintf(stderr, "harness: cannot write %s\n", path);
    return ok;
}

int th_host_start(th_host *h, const th_redis *r, const th_host_opts *o)
{
    static const th_host_opts defaults;
    if (!o)
        o = &defaults;
    memset(h, 0, sizeof *h);
    if (o->id)
        snprintf(h->id, sizeof h->id, "%s", o->id);
    else
        snprintf(h->id, sizeof h->id, "h%d", ++host_seq);
    const char *prefix = o->prefix ? o->prefix : "bgtask";

    char *tag = xasprintf("host-%s", h->id);
    char *dir = th_tmpdir(tag);
    free(tag);
    snprintf(h->conf, sizeof h->conf, "%s/bgtaskd.conf", dir);
    snprintf(h->log, sizeof h->log, "%s/bgtaskd.log", dir);
    free(dir);

    char *build = th__build_dir();
    char *bin = xasprintf("%s/bin/bgtaskd", build);
    free(build);
    int rc = -1;
    int log = -1;
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "harness: %s: %s (run make first)\n", bin, strerror(errno));
        goto fail;
    }
    if (!write_host_conf(h->conf, h->id, r, o, prefix))
        goto fail;
    log = open(h->log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (log < 0) {
        fprintf(stderr, "harness: %s: %s\n", h->log, strerror(errno));
        goto fail;
    }
    char *argv[] = {bin, "-c", h->conf, NULL};
    pid_t pid = th__spawn(argv, log, log);
    if (pid < 0)
        goto fail;
    th__child_add(pid, CHILD_HOST, prefix);
    h->pid = pid;
    rc = 0;
fail:
    if (log >= 0)
        close(log);
    free(bin);
    return rc;
}

bool th_host_wait_ready(th_host *h, const th_redis *r, double timeout_s)
{
    struct child *ch = th__child_find(h->pid);
    if (!ch) {
        fprintf(stderr, "harness: host %s was not started by the harness\n", h->id);
        return false;
    }
    double end = th_now() + timeout_s;
    redisContext *c = NULL;
    bool ready = false;
    for (;;) {
        if (th__child_reap(ch, false)) {
            char why[64];
            fprintf(stderr, "harness: host %s %s before it was ready\n", h->id,
                    th__status_text(ch->status, why, sizeof why));
            break;
        }
        if (!c) {
            struct timeval tv = {0, 500000};
            c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
            if (c && c->err) {
                redisFree(c);
                c = NULL;
            }
            if (c)
                redisSetTimeout(c, tv);
        }
        if (c && !th__host_registered(c, ch->prefix, h->id, h->pid, &ready)) {
            redisFree(c);
            c = NULL;
        }
        if (ready)
            break;
        if (th_now() >= end) {
            fprintf(stderr, "harness: host %s not among the live hosts after %.1f s\n", h->id,
                    timeout_s);
            break;
        }
        th_sleep(0.01);
    }
    if (c)
        redisFree(c);
    return ready;
}

void th_host_signal(th_host *h, int sig)
{
    if (th__child_live(h->pid))
        kill(h->pid, sig);
}

bool th_host_wait_exit(th_host *h, double timeout_s, int *status)
{
    struct child *c = th__child_find(h->pid);
    if (!c)
        return false;
    if (!th__child_wait(c, timeout_s))
        return false;
    if (status)
        *status = c->status;
    return true;
}

void th_host_kill(th_host *h) { th__child_kill9(th__child_find(h->pid)); }

int th_host_stop(th_host *h, double timeout_s)
{
    struct child *c = th__child_find(h->pid);
    if (!c)
        return -1;
    if (!c->reaped) {
        kill(c->pid, SIGTERM);
        if (!th__child_wait(c, timeout_s)) {
            fprintf(stderr, "harness: host %s did not stop within %.1f s: kill -9\n", h->id,
                    timeout_s);
            th__child_kill9(c);
            return -1;
        }
    }
    return WIFEXITED(c->status) ? WEXITSTATUS(c->status) : -1;
}

bool th_log_contains(const th_host *h, const char *needle)
{
    size_t len;
    char *s = th__read_file(h->log, &len);
    if (!s)
        return false;
    bool found = memmem(s, len, needle, strlen(needle)) != NULL;
    free(s);
    return found;
}

void th_log_dump(const th_host *h)
{
    char *title = xasprintf("log of host %s", h->id);
    th__dump_tail(title, h->log, (size_t)1 << 20);
    free(title);
}

int th_host_http_port(const th_host *h)
{
    static const char needle[] = "http: serving on http://127.0.0.1:";
    if (!TH_WAIT_UNTIL(15, th_log_contains(h, needle)))
        return -1;
    FILE *f = fopen(h->log, "r");
    char line[1024];
    int port = -1;
    while (f && port < 0 && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, needle);
        if (p)
            port = atoi(p + strlen(needle));
    }
    if (f)
        fclose(f);
    return port;
}

int th_http(const char *method, const char *url, const char *token, const char *body,
            char **out)
{
    char *auth = token ? xasprintf("Authorization: Bearer %s", token) : NULL;
    const char *argv[24] = {"/usr/bin/env", "curl", "-s", "-o", "-", "-w", "\n%{http_code}",
                            "-X", method};
    int n = 9;
    if (auth) {
        argv[n++] = "-H";
        argv[n++] = auth;
    }
    if (body) {
        argv[n++] = "-H";
        argv[n++] = "Content-Type: application/json";
        argv[n++] = "--data-binary";
        argv[n++] = body;
    }
    argv[n++] = url;
    argv[n] = NULL;
    char *text = NULL;
    int rc = th_run(60, (char *const *)argv, &text, NULL);
    free(auth);
    /* The body, then a line with the status (-w). */
    char *nl = text ? strrchr(text, '\n') : NULL;
    int status = rc == 0 && nl ? atoi(nl + 1) : -1;
    if (nl)
        *nl = '\0';
    if (out)
        *out = text;
    else
        free(text);
    return status > 0 ? status : -1;
}

char *th_plugin_path(const char *name, bool test_plugin)
{
    char *build = th__build_dir();
    char *p = xasprintf("%s/%s/%s.so", build, test_plugin ? "tests/plugins" : "plugins", name);
    free(build);
    return p;
}
static int ctl_v(double timeout_s, const th_redis *r, char **out, char **err, const char *arg,
                 va_list ap)
{
    va_list count;
    va_copy(count, ap);
    size_t n = 0;
    for (const char *a = arg; a; a = va_arg(count, const char *))
        n++;
    va_end(count);

    char *build = th__build_dir();
    char *bin = xasprintf("%s/bin/bgtaskctl", build);
    free(build);
    char **argv = xrealloc(NULL, (n + 4) * sizeof *argv);
    size_t k = 0;
    argv[k++] = bin;
    argv[k++] = "--redis";
    argv[k++] = (char *)r->url;
    for (const char *a = arg; a; a = va_arg(ap, const char *))
        argv[k++] = (char *)a;
    argv[k] = NULL;
    int rc;
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "harness: %s: %s (run make first)\n", bin, strerror(errno));
        if (out)
            *out = NULL;
        if (err)
            *err = NULL;
        rc = -1;
    } else {
        rc = th_run(timeout_s, argv, out, err);
    }
    free(argv);
    free(bin);
    return rc;
}

int th_ctl(const th_redis *r, char **out, char **err, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    int rc = ctl_v(CTL_DEFAULT_TIMEOUT_S, r, out, err, arg, ap);
    va_end(ap);
    return rc;
}

int th_ctl_timeout(double timeout_s, const th_redis *r, char **out, char **err, const char *arg,
                   ...)
{
    va_list ap;
    va_start(ap, arg);
    int rc = ctl_v(timeout_s, r, out, err, arg, ap);
    va_end(ap);
    return rc;
}

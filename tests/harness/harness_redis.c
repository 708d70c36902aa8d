/*
 * harness_redis.c - private redis-servers on free loopback ports (start,
 * kill -9, restart on the same port and folder, stop) and the readers tests
 * use to look at what the hosts wrote.
 */
#include "harness_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

/* How long a redis-server may take to answer PING after it was started. */
#define REDIS_START_TIMEOUT_S 15.0
/* How many fresh ports th_redis_start tries before it gives up. */
#define REDIS_START_TRIES 6

/* ---- redis-server ---- */

/* A port on 127.0.0.1 that was free a moment ago, or -1. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &alen) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* The path of name in $PATH (malloc'd), or NULL. */
char *th__find_in_path(const char *name)
{
    const char *path = getenv("PATH");
    if (!path)
        return NULL;
    char *copy = xstrdup(path);
    char *save = NULL, *found = NULL;
    for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        char *cand = xasprintf("%s/%s", *d ? d : ".", name);
        if (access(cand, X_OK) == 0)
            found = cand;
        else
            free(cand);
    }
    free(copy);
    return found;
}

/*
 * Wait until the redis-server we started as pid answers PING on port, and is
 * really that process (INFO's process_id), not another server that took the
 * port. Returns 0, -1 when the deadline passed, or -2 when the process exited.
 */
static int redis_wait_up(pid_t pid, int port, double timeout_s)
{
    double end = th_now() + timeout_s;
    struct timeval tv = {0, 200000};
    for (;;) {
        struct child *ch = th__child_find(pid);
        if (th__child_reap(ch, false))
            return -2;
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        bool up = false;
        if (c && !c->err) {
            redisSetTimeout(c, tv);
            redisReply *rep = redisCommand(c, "PING");
            if (rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0) {
                freeReplyObject(rep);
                rep = redisCommand(c, "INFO server");
                char want[40];
                snprintf(want, sizeof want, "process_id:%d\r", (int)pid);
                up = rep && rep->type == REDIS_REPLY_STRING && strstr(rep->str, want);
            }
            if (rep)
                freeReplyObject(rep);
        }
        if (c)
            redisFree(c);
        if (up)
            return 0;
        if (th_now() >= end)
            return -1;
        th_sleep(0.01);
    }
}

/* Start r's server on r->port (and r->bus_port) in r->dir; 0, -1 (did not come up) or -2
 * (exited). */
static int redis_spawn(th_redis *r, const char *bin)
{
    char port[16], bus[16];
    snprintf(port, sizeof port, "%d", r->port);
    snprintf(bus, sizeof bus, "%d", r->bus_port);
    char *logfile = xasprintf("%s/redis.log", r->dir);
    char *outfile = xasprintf("%s/redis.out", r->dir);
    char *argv[32];
    int k = 0;
    argv[k++] = (char *)bin;
    if (r->conf[0])
        argv[k++] = r->conf;
    char *common[] = {"--port", port, "--bind", "127.0.0.1", "--dir", r->dir, "--daemonize", "no",
                      "--logfile", logfile};
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++)
        argv[k++] = common[i];
    if (!r->sentinel) {
        /* A replica that needs a full copy gets it at once, not after diskless sync's
         * default wait of 5 s for more replicas. */
        char *data[] = {"--save",       "",     "--appendonly",
                        r->aof ? "yes" : "no", "--appendfsync", "always",
                        "--repl-diskless-sync-delay", "0"};
        for (size_t i = 0; i < sizeof data / sizeof data[0]; i++)
            argv[k++] = data[i];
    }
    if (r->bus_port) {
        argv[k++] = "--cluster-port";
        argv[k++] = bus;
    }
    argv[k] = NULL;
    int rc = -1;
    int out = open(outfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out < 0) {
        fprintf(stderr, "harness: %s: %s\n", outfile, strerror(errno));
        goto fail;
    }
    pid_t pid = th__spawn(argv, out, out);
    close(out);
    if (pid < 0)
        goto fail;
    th__child_add(pid, CHILD_REDIS, NULL);
    rc = redis_wait_up(pid, r->port, REDIS_START_TIMEOUT_S);
    if (rc == 0) {
        r->pid = pid;
    } else {
        th__child_kill9(th__child_find(pid));
    }
fail:
    free(logfile);
    free(outfile);
    return rc;
}

static void redis_dump_logs(const th_redis *r)
{
    char *p = xasprintf("%s/redis.log", r->dir);
    th__dump_tail("redis.log", p, 3000);
    free(p);
    p = xasprintf("%s/redis.out", r->dir);
    th__dump_tail("redis-server output", p, 3000);
    free(p);
}

/* The binary r runs (malloc'd), or NULL after saying why. */
static char *redis_bin(const th_redis *r)
{
    const char *name = r->sentinel ? "redis-sentinel" : "redis-server";
    char *bin = th__find_in_path(name);
    if (!bin)
        fprintf(stderr, "harness: %s not found in PATH\n", name);
    return bin;
}

int th__redis_start_as(th_redis *r, const char *tag, const char *conf_text)
{
    char *bin = redis_bin(r);
    if (!bin) {
        const char *ci = getenv("CI");
        if (ci && *ci) {
            fprintf(stderr, "harness: CI is set: failing\n");
            return -1;
        }
        fprintf(stderr, "harness: skipping\n");
        return -2;
    }
    char *dir = th_tmpdir(tag);
    snprintf(r->dir, sizeof r->dir, "%s", dir);
    free(dir);
    int rc = -1;
    if (conf_text) {
        snprintf(r->conf, sizeof r->conf, "%s/%s.conf", r->dir, tag);
        FILE *f = fopen(r->conf, "w");
        if (!f || fputs(conf_text, f) < 0 || fclose(f) != 0) {
            fprintf(stderr, "harness: cannot write %s: %s\n", r->conf, strerror(errno));
            free(bin);
            return -1;
        }
    }
    bool cluster = r->bus_port != 0;
    for (int try = 0; try < REDIS_START_TRIES; try++) {
        r->port = free_port();
        if (cluster)
            r->bus_port = free_port();
        if (r->port < 0 || r->bus_port < 0) {
            fprintf(stderr, "harness: no free port on 127.0.0.1: %s\n", strerror(errno));
            break;
        }
        rc = redis_spawn(r, bin);
        /* Only an exit (most likely: someone took the port) is worth another port. */
        if (rc != -2)
            break;
    }
    free(bin);
    if (rc != 0) {
        fprintf(stderr, "harness: %s did not come up in %s\n",
                r->sentinel ? "redis-sentinel" : "redis-server", r->dir);
        redis_dump_logs(r);
        r->pid = 0;
        return -1;
    }
    snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d/0", r->port);
    return 0;
}

int th_redis_start(th_redis *r, bool aof)
{
    memset(r, 0, sizeof *r);
    r->aof = aof;
    return th__redis_start_as(r, "redis", NULL);
}

void th_redis_kill(th_redis *r)
{
    struct child *c = th__child_find(r->pid);
    if (c && !c->reaped)
        th__child_kill9(c);
    r->pid = 0;
}

int th_redis_restart(th_redis *r)
{
    th_redis_kill(r);
    char *bin = redis_bin(r);
    if (!bin)
        return -1;
    int rc = -1;
    /* The port must stay (clients and hosts know the URL): retry on it a few times. */
    for (int try = 0; try < 5; try++) {
        rc = redis_spawn(r, bin);
        if (rc != -2)
            break;
        th_sleep(0.2);
    }
    free(bin);
    if (rc != 0) {
        fprintf(stderr, "harness: %s did not come back on port %d\n",
                r->sentinel ? "redis-sentinel" : "redis-server", r->port);
        redis_dump_logs(r);
        return -1;
    }
    return 0;
}

void th_redis_stop(th_redis *r)
{
    struct child *c = th__child_find(r->pid);
    if (c && !c->reaped) {
        kill(c->pid, SIGTERM);
        if (!th__child_wait(c, 5.0))
            th__child_kill9(c);
    }
    r->pid = 0;
    if (r->dir[0])
        th__tmpdir_remove(r->dir);
}

redisContext *th_redis_connect(const th_redis *r)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (!c || c->err) {
        fprintf(stderr, "harness: cannot connect to redis on port %d: %s\n", r->port,
                c ? c->errstr : "out of memory");
        abort();
    }
    /* Bound every command, so a stopped server fails a test instead of hanging it. */
    struct timeval cmd = {60, 0};
    redisSetTimeout(c, cmd);
    return c;
}

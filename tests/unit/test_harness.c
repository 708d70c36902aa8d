/*
 * test_harness.c - the test harness itself: private redis-servers (start,
 * kill -9, restart with AOF, stop), command capture with timeouts, the Redis
 * readers, polling with a deadline, and host control against a fake bgtaskd
 * (a shell script), so none of it needs the real host.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <libconfig.h>
#include <netinet/in.h>

#include "../harness/harness.h"

/* Start a redis-server or skip the test when there is none (and CI is not set). */
static void start_redis(th_redis *r, bool aof)
{
    int rc = th_redis_start(r, aof);
    if (rc == -2)
        skip();
    assert_int_equal(rc, 0);
}

static void command_ok(redisContext *c, const char *expect_status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(rep);
    assert_int_not_equal(rep->type, REDIS_REPLY_ERROR);
    if (expect_status) {
        assert_int_equal(rep->type, REDIS_REPLY_STATUS);
        assert_string_equal(rep->str, expect_status);
    }
    freeReplyObject(rep);
}

static bool path_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static bool pid_gone(pid_t pid) { return kill(pid, 0) < 0 && errno == ESRCH; }

static void write_script(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, 0755), 0);
}

static void test_redis_start_stop(void **state)
{
    th_redis r;
    start_redis(&r, false);
    assert_true(r.pid > 0);
    assert_true(r.port > 0 && r.port < 65536);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", r.port);
    assert_string_equal(r.url, url);
    assert_true(path_exists(r.dir));

    redisContext *c = th_redis_connect(&r);
    command_ok(c, "PONG", "PING");

    /* The server listens on loopback only, and we reached it there. */
    redisReply *rep = redisCommand(c, "CONFIG GET bind");
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    assert_int_equal(rep->elements, 2);
    assert_string_equal(rep->element[1]->str, "127.0.0.1");
    freeReplyObject(rep);
    struct sockaddr_in peer;
    socklen_t plen = sizeof peer;
    assert_int_equal(getpeername(c->fd, (struct sockaddr *)&peer, &plen), 0);
    assert_int_equal(ntohl(peer.sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(ntohs(peer.sin_port), r.port);
    redisFree(c);

    pid_t pid = r.pid;
    char dir[sizeof r.dir];
    memcpy(dir, r.dir, sizeof dir);
    th_redis_stop(&r);
    assert_true(pid_gone(pid));
    assert_false(path_exists(dir));
}

/* Write a key, kill -9, restart: with AOF (fsync always) the key survives. */
static void test_redis_kill_restart_aof(void **state)
{
    th_redis r;
    start_redis(&r, true);
    int port = r.port;
    redisContext *c = th_redis_connect(&r);
    command_ok(c, "OK", "SET %s %s", "survivor", "written-before-kill");

    pid_t old = r.pid;
    th_redis_kill(&r);
    assert_true(pid_gone(old));
    assert_int_equal(r.pid, 0);
    /* The old connection is dead: the server really went away. */
    redisReply *rep = redisCommand(c, "PING");
    assert_null(rep);
    redisFree(c);

    assert_int_equal(th_redis_restart(&r), 0);
    assert_true(r.pid > 0 && r.pid != old);
    assert_int_equal(r.port, port);
    c = th_redis_connect(&r);
    rep = redisCommand(c, "GET survivor");
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_string_equal(rep->str, "written-before-kill");
    freeReplyObject(rep);
    redisFree(c);
    th_redis_stop(&r);
}

/* The control for the test above: without AOF the same key is lost, so the
 * kill is a real kill -9 and the survival above is the AOF's doing. */
static void test_redis_kill_restart_no_aof(void **state)
{
    th_redis r;
    start_redis(&r, false);
    redisContext *c = th_redis_connect(&r);
    command_ok(c, "OK", "SET %s %s", "survivor", "written-before-kill");
    redisFree(c);
    th_redis_kill(&r);
    assert_int_equal(th_redis_restart(&r), 0);
    c = th_redis_connect(&r);
    redisReply *rep = redisCommand(c, "GET survivor");
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_NIL);
    freeReplyObject(rep);
    redisFree(c);
    th_redis_stop(&r);
}

static int polls;

static bool true_on_fifth_poll(void) { return ++polls >= 5; }

static void test_wait_until(void **state)
{
    double t0 = th_now();
    bool ok = TH_WAIT_UNTIL(0.3, false);
    double took = th_now() - t0;
    assert_false(ok);
    assert_true(took >= 0.3);
    assert_true(took < 0.8);

    t0 = th_now();
    assert_true(TH_WAIT_UNTIL(5.0, true));
    assert_true(th_now() - t0 < 0.1);

    polls = 0;
    t0 = th_now();
    assert_true(TH_WAIT_UNTIL(5.0, true_on_fifth_poll()));
    assert_int_equal(polls, 5);
    assert_true(th_now() - t0 < 1.0);
}

static void test_run_capture(void **state)
{
    char *out, *err;
    char *const small[] = {"/bin/sh", "-c", "echo out; echo err >&2; exit 3", NULL};
    assert_int_equal(th_run(10, small, &out, &err), 3);
    assert_string_equal(out, "out\n");
    assert_string_equal(err, "err\n");
    free(out);
    free(err);

    /* A megabyte on each stream at once: neither pipe may stall the other. */
    char *const big[] = {"/bin/sh", "-c",
                         "head -c 1000000 /dev/zero | tr '\\0' a; "
                         "head -c 1000000 /dev/zero | tr '\\0' b >&2; "
                         "head -c 1000 /dev/zero | tr '\\0' c",
                         NULL};
    assert_int_equal(th_run(30, big, &out, &err), 0);
    assert_int_equal(strlen(out), 1001000);
    assert_int_equal(strlen(err), 1000000);
    assert_int_equal(out[0], 'a');
    assert_int_equal(out[1000999], 'c');
    assert_int_equal(err[999999], 'b');
    free(out);
    free(err);

    char *const signalled[] = {"/bin/sh", "-c", "kill -9 $$", NULL};
    assert_int_equal(th_run(10, signalled, NULL, NULL), -1);

    char *const missing[] = {"/nonexistent/binary", NULL};
    assert_int_equal(th_run(10, missing, &out, &err), 127);
    free(out);
    free(err);

    double t0 = th_now();
    char *const slow[] = {"/bin/sleep", "20", NULL};
    assert_int_equal(th_run(0.3, slow, &out, NULL), -2);
    assert_true(th_now() - t0 < 5.0);
    assert_string_equal(out, "");
    free(out);
}

/* The shard of a task id under 16 shards, as the README defines it: FNV-1a-32 mod 16. */
static int shard16(const char *id)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return (int)(h % 16);
}

static void test_task_field_and_events(void **state)
{
    th_redis r;
    start_redis(&r, false);
    redisContext *c = th_redis_connect(&r);
    const char *id = "0b6f3f6e-1a1e-4f0c-9d41-3c0e6a0c6a01";
    const char *other = "9a1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";
    int s = shard16(id), so = shard16(other);
    /* The README's example of the shard function. */
    assert_int_equal(shard16("00000000-0000-4000-8000-000000000001"), 2);

    command_ok(c, NULL, "HSET {bgtask:%d}:t:%s h %s c 1", s, id, "demo.sleep");
    char *v = th_task_field(c, "bgtask", id, "handler");
    assert_non_null(v);
    assert_string_equal(v, "demo.sleep");
    free(v);
    v = th_task_field(c, "bgtask", id, "state");
    assert_string_equal(v, "ONGOING");
    free(v);
    v = th_task_field(c, "bgtask", id, "attempt");
    assert_string_equal(v, "0");
    free(v);
    assert_null(th_task_field(c, "bgtask", id, "nosuchfield"));
    assert_null(th_task_field(c, "other", id, "handler"));
    assert_false(th_task_terminal(c, "bgtask", id));
    /* Running: its host's held hash has the lease token. */
    command_ok(c, NULL, "ZADD {bgtask:%d}:hosts 1 h1", s);
    command_ok(c, NULL, "HSET {bgtask:%d}:held:h1 %s %s", s, id, "2 123 c");
    v = th_task_field(c, "bgtask", id, "owner");
    assert_string_equal(v, "h1");
    free(v);
    v = th_task_field(c, "bgtask", id, "attempt");
    assert_string_equal(v, "2");
    free(v);
    v = th_task_field(c, "bgtask", id, "cancel_requested");
    assert_string_equal(v, "1");
    free(v);
    const char *terminal[] = {"success", "failure", "cancelled", "partial_success"};
    for (int i = 0; i < 4; i++) {
        command_ok(c, NULL, "HSET {bgtask:%d}:t:%s o %s", s, id, terminal[i]);
        assert_true(th_task_terminal(c, "bgtask", id));
    }
    v = th_task_field(c, "bgtask", id, "state");
    assert_string_equal(v, "SUCCESS");
    free(v);
    assert_false(th_task_terminal(c, "bgtask", other));

    /* Events: one stream entry per script call, a field h naming the handler. */
    assert_int_equal(th_count_events(c, "bgtask", id, NULL), 0);
    command_ok(c, NULL, "XADD {bgtask:%d}:ev * h demo.sleep %s u1 %s u1 %s u1 %s d1", s, id, id, id,
               id);
    command_ok(c, NULL, "XADD {bgtask:%d}:ev * h x %s d1", so, other);
    assert_int_equal(th_count_events(c, "bgtask", id, NULL), 4);
    assert_int_equal(th_count_events(c, "bgtask", id, "bgtask_updated"), 3);
    assert_int_equal(th_count_events(c, "bgtask", id, "bgtask_done"), 1);
    assert_int_equal(th_count_events(c, "bgtask", id, "bgtask_failed"), 0);
    assert_int_equal(th_count_events(c, "bgtask", other, NULL), 1);
    assert_int_equal(th_count_events(c, "other", id, NULL), 0);

    /* More entries than one page of XRANGE, with the task's own at both ends. */
    for (int i = 0; i < 2500; i++) {
        const char *t = i == 0 || i == 2499 ? id : other;
        redisAppendCommand(c, "XADD {bgtask:%d}:ev * h x %s u1", shard16(t), t);
    }
    for (int i = 0; i < 2500; i++) {
        redisReply *rep;
        assert_int_equal(redisGetReply(c, (void **)&rep), REDIS_OK);
        freeReplyObject(rep);
    }
    assert_int_equal(th_count_events(c, "bgtask", id, NULL), 6);
    assert_int_equal(th_count_events(c, "bgtask", other, NULL), 2499);

    /* A key of the wrong type is an error, not a count. */
    command_ok(c, "OK", "SET {wrong:%d}:ev x", s);
    assert_int_equal(th_count_events(c, "wrong", id, NULL), -1);
    redisFree(c);
    th_redis_stop(&r);
}

/* Without redis-server in PATH: a skip (-2) normally, a failure (-1) under CI. */
static void test_redis_missing(void **state)
{
    char *path = strdup(getenv("PATH") ? getenv("PATH") : "");
    char *ci = getenv("CI") ? strdup(getenv("CI")) : NULL;
    char *empty = th_tmpdir("empty-path");
    th_redis r;

    setenv("PATH", empty, 1);
    setenv("CI", "true", 1);
    int with_ci = th_redis_start(&r, false);
    unsetenv("CI");
    int without_ci = th_redis_start(&r, false);

    setenv("PATH", path, 1);
    if (ci)
        setenv("CI", ci, 1);
    free(path);
    free(ci);
    free(empty);
    assert_int_equal(with_ci, -1);
    assert_int_equal(without_ci, -2);
}

/*
 * A fake bgtaskd: registers in {<prefix>}:hosts and {<prefix>}:host:<id> (its pid)
 * the way a host does, a little late, writes to stdout and stderr, exits 3 at
 * once for the id "bad", and exits 0 on SIGTERM.
 */
static const char fake_bgtaskd[] =
    "#!/bin/sh\n"
    "conf=$2\n"
    "get() { sed -n \"s/^ *$1 = \\\"\\(.*\\)\\\";/\\1/p\" \"$conf\" | sed 's/\\\\\\(.\\)/\\1/g'; "
    "}\n"
    "id=$(get id); url=$(get url); prefix=$(get prefix)\n"
    "echo \"fake bgtaskd $id starting\" >&2\n"
    "echo \"fake bgtaskd $id on stdout\"\n"
    "[ \"$id\" = bad ] && exit 3\n"
    "trap 'echo \"fake bgtaskd $id stopping\" >&2; exit 0' TERM\n"
    "sleep 0.3\n"
    "redis-cli -u \"$url\" hset \"{$prefix}:host:$id\" pid $$ >/dev/null\n"
    "redis-cli -u \"$url\" zadd \"{$prefix}:hosts\" 1 \"$id\" >/dev/null\n"
    "while :; do sleep 0.05; done\n";

/* A fake bgtaskctl: prints its arguments; "hang" makes it sleep. */
static const char fake_bgtaskctl[] = "#!/bin/sh\n"
                                     "echo \"$@\"\n"
                                     "echo ctl-stderr >&2\n"
                                     "case \"$*\" in *hang*) exec sleep 30;; esac\n"
                                     "exit 4\n";

static void check_host_conf(const char *path, const th_redis *r, const char *fake_build)
{
    config_t cfg;
    config_init(&cfg);
    if (config_read_file(&cfg, path) != CONFIG_TRUE)
        fail_msg("%s:%d: %s", path, config_error_line(&cfg), config_error_text(&cfg));
    const char *s;
    int i;
    double d;
    assert_true(config_lookup_string(&cfg, "redis.url", &s));
    assert_string_equal(s, r->url);
    assert_true(config_lookup_string(&cfg, "redis.prefix", &s));
    assert_string_equal(s, "tp");
    assert_true(config_lookup_string(&cfg, "host.id", &s));
    assert_string_equal(s, "fake\"1");
    assert_true(config_lookup_int(&cfg, "host.workers", &i));
    assert_int_equal(i, 2);
    assert_true(config_lookup_string(&cfg, "host.log_level", &s));
    assert_string_equal(s, "debug");
    /* Doubles are written as floats: libconfig will not read an int as a float. */
    assert_true(config_lookup_float(&cfg, "host.shutdown_grace", &d));
    assert_true(d == 5.0);
    assert_true(config_lookup_float(&cfg, "tasks.lease", &d));
    assert_true(d == 7.5);
    assert_true(config_lookup_float(&cfg, "tasks.heartbeat", &d));
    assert_true(d == 0.5);
    assert_true(config_lookup_float(&cfg, "tasks.progress_interval", &d));
    assert_true(d == 0.05);
    assert_true(config_lookup_float(&cfg, "tasks.backoff_base", &d));
    assert_true(d == 0.05);
    assert_true(config_lookup_float(&cfg, "tasks.backoff_max", &d));
    assert_true(d == 1.0);
    assert_true(config_lookup_int(&cfg, "tasks.max_attempts", &i));
    assert_int_equal(i, 3);
    char want[1024];
    snprintf(want, sizeof want, "%s/plugins", fake_build);
    assert_true(config_lookup_string(&cfg, "plugins.dir", &s));
    assert_string_equal(s, want);
    assert_true(config_lookup_string(&cfg, "plugins.load.[0].name", &s));
    assert_string_equal(s, "demo");
    assert_true(config_lookup_string(&cfg, "plugins.load.[1].file", &s));
    assert_string_equal(s, "/x/crash.so");
    assert_true(config_lookup_string(&cfg, "http.listen", &s));
    assert_string_equal(s, "127.0.0.1:0");
    config_destroy(&cfg);
}

static void test_fake_host_and_ctl(void **state)
{
    char *redis_cli = NULL;
    th_run(5, (char *const[]){"/bin/sh", "-c", "command -v redis-cli", NULL}, &redis_cli, NULL);
    bool have_cli = redis_cli && *redis_cli;
    free(redis_cli);
    if (!have_cli)
        skip();

    char *old_build = getenv("BUILD") ? strdup(getenv("BUILD")) : NULL;
    char *fake = th_tmpdir("fakebuild");
    char *bindir = NULL;
    assert_int_not_equal(asprintf(&bindir, "%s/bin", fake), -1);
    assert_int_equal(mkdir(bindir, 0755), 0);
    char *p = NULL;
    assert_int_not_equal(asprintf(&p, "%s/bgtaskd", bindir), -1);
    write_script(p, fake_bgtaskd);
    free(p);
    assert_int_not_equal(asprintf(&p, "%s/bgtaskctl", bindir), -1);
    write_script(p, fake_bgtaskctl);
    free(p);
    free(bindir);
    setenv("BUILD", fake, 1);

    th_redis r;
    start_redis(&r, false);

    /* th_plugin_path follows $BUILD. */
    char *want = NULL, *got = th_plugin_path("crash", true);
    assert_int_not_equal(asprintf(&want, "%s/tests/plugins/crash.so", fake), -1);
    assert_string_equal(got, want);
    free(got);
    free(want);
    got = th_plugin_path("demo", false);
    assert_int_not_equal(asprintf(&want, "%s/plugins/demo.so", fake), -1);
    assert_string_equal(got, want);
    free(got);
    free(want);

    /* A host that registers, then stops on SIGTERM with status 0. */
    th_host_opts o = {
        .id = "fake\"1",
        .workers = 2,
        .lease_s = 7.5,
        .prefix = "tp",
        .plugins = "{ name = \"demo\"; }, { name = \"crash\"; file = \"/x/crash.so\"; }",
        .extra = "http: { listen = \"127.0.0.1:0\"; };",
    };
    /* An entry left by an earlier process with this id must not count as ready. */
    redisContext *c = th_redis_connect(&r);
    command_ok(c, NULL, "ZADD {tp}:hosts 1 %s", o.id);
    command_ok(c, NULL, "HSET {tp}:host:%s pid 1", o.id);
    th_host h;
    assert_int_equal(th_host_start(&h, &r, &o), 0);
    assert_string_equal(h.id, "fake\"1");
    check_host_conf(h.conf, &r, fake);
    assert_true(th_host_wait_ready(&h, &r, 10));
    redisReply *rep = redisCommand(c, "HGET {tp}:host:%s pid", o.id);
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_int_equal(atoi(rep->str), h.pid);
    freeReplyObject(rep);
    redisFree(c);
    assert_true(th_log_contains(&h, "starting"));
    assert_true(th_log_contains(&h, "on stdout"));
    assert_false(th_log_contains(&h, "stopping"));
    assert_int_equal(th_host_stop(&h, 10), 0);
    assert_true(th_log_contains(&h, "fake bgtaskd fake\"1 stopping"));
    assert_true(pid_gone(h.pid));

    /* Default options; kill -9; the status says so. */
    th_host h2;
    assert_int_equal(th_host_start(&h2, &r, NULL), 0);
    assert_true(h2.id[0] == 'h');
    assert_true(th_host_wait_ready(&h2, &r, 10));
    int st = 0;
    assert_false(th_host_wait_exit(&h2, 0.05, &st));
    th_host_kill(&h2);
    assert_true(th_host_wait_exit(&h2, 1, &st));
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    assert_int_equal(th_host_stop(&h2, 1), -1);
    /* Signalling a reaped host is a no-op, never a signal to a recycled pid. */
    th_host_signal(&h2, SIGTERM);

    /* A host that dies at start: wait_ready gives up at once, not at its deadline. */
    th_host bad;
    th_host_opts ob = {.id = "bad"};
    assert_int_equal(th_host_start(&bad, &r, &ob), 0);
    double t0 = th_now();
    assert_false(th_host_wait_ready(&bad, &r, 20));
    assert_true(th_now() - t0 < 10);
    assert_true(th_host_wait_exit(&bad, 1, &st));
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 3);

    /* th_ctl passes --redis <url> first and captures both streams. */
    char *out, *err;
    assert_int_equal(th_ctl(&r, &out, &err, "status", "some-id", NULL), 4);
    char line[256];
    snprintf(line, sizeof line, "--redis %s status some-id\n", r.url);
    assert_string_equal(out, line);
    assert_string_equal(err, "ctl-stderr\n");
    free(out);
    free(err);
    t0 = th_now();
    assert_int_equal(th_ctl_timeout(0.3, &r, &out, NULL, "hang", NULL), -2);
    assert_true(th_now() - t0 < 5);
    free(out);

    th_redis_stop(&r);
    if (old_build)
        setenv("BUILD", old_build, 1);
    else
        unsetenv("BUILD");
    free(old_build);
    free(fake);
}

/* th_cleanup stops every server the program started and removes its folders. */
static void test_cleanup(void **state)
{
    th_redis r;
    start_redis(&r, true);
    pid_t pid = r.pid;
    char *dir = th_tmpdir("scratch");
    assert_true(path_exists(dir));
    th_cleanup();
    assert_true(pid_gone(pid));
    assert_false(path_exists(r.dir));
    assert_false(path_exists(dir));
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wait_until),
        cmocka_unit_test(test_run_capture),
        cmocka_unit_test(test_redis_start_stop),
        cmocka_unit_test(test_redis_kill_restart_aof),
        cmocka_unit_test(test_redis_kill_restart_no_aof),
        cmocka_unit_test(test_task_field_and_events),
        cmocka_unit_test(test_redis_missing),
        cmocka_unit_test(test_fake_host_and_ctl),
        cmocka_unit_test(test_cleanup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_plugins_parallel.c - the parallel handlers of the shipped plugins (demo.parallel,
 * net.probe; files.cleanup has test_cleanup.c) against the fake host of fake_host.h.
 *
 * Each handler's split, run and merge are called as the host calls them: the split on the
 * task's args, collecting what it adds with add_subtask; the run once per subtask with that
 * subtask's args and index; the merge with the array of results, null for a subtask that
 * failed. run_parallel does the three in a row, one subtask after the other.
 *
 * net.probe works on sockets this test opens on 127.0.0.1: a listener, a port bound but not
 * listening (a connect is refused at once), and a listener whose backlog is full (a connect
 * hangs).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <dlfcn.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "../harness/fake_host.h"
#include "util.h"

static fake_plugin *demo, *files, *net;

static int group_setup(void **state)
{
    int rc;
    demo = fake_load_plugin("demo", "{}", &rc);
    assert_int_equal(rc, 0);
    files = fake_load_plugin("files", "{}", &rc);
    assert_int_equal(rc, 0);
    net = fake_load_plugin("net", "{}", &rc);
    assert_int_equal(rc, 0);

    return 0;
}

static int group_teardown(void **state)
{
    fake_unload_plugin(demo);
    fake_unload_plugin(files);
    fake_unload_plugin(net);
    return 0;
}

/* ---- loading ---- */

static void test_entries(void **state)
{
    struct {
        fake_plugin *p;
        const char *name;
        int nhandlers;
    } cases[] = {
        {demo, "demo.parallel", 5},
        {files, "files.cleanup", 2},
        {net, "net.probe", 1},
    };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(cases[i].p->nhandlers, cases[i].nhandlers);
        const bgt_handler_def *h = fake_find_handler(cases[i].p, cases[i].name);
        assert_int_equal(h->kind, BGT_PARALLEL);
        assert_non_null(h->run);
        assert_non_null(h->split);
        assert_non_null(h->merge);
        assert_int_equal(h->batch_size, 0); /* files.cleanup batches in its split */
        assert_non_null(h->udata);
        assert_non_null(h->udata_free);
        assert_null(dlsym(cases[i].p->dl, "bgt_host_api"));
    }
    /* The single handlers are still there and still single. */
    assert_int_equal(fake_find_handler(demo, "demo.sleep")->kind, BGT_SINGLE);
    assert_int_equal(fake_find_handler(demo, "demo.flaky")->max_attempts, 10);
    assert_int_equal(fake_find_handler(files, "files.checksum")->kind, BGT_SINGLE);
    assert_string_equal(net->entry->version, "1.0");

    /* net has no settings: an unknown one is logged, a non-group refused. */
    int rc;
    fake_plugin *p = fake_load_plugin("net", "{\"colour\": 1}", &rc);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(p->log, "unknown setting colour"));
    fake_unload_plugin(p);
    p = fake_load_plugin("net", "[]", &rc);
    assert_int_not_equal(rc, 0);
    assert_int_equal(p->nhandlers, 0);
    fake_unload_plugin(p);
}

/* ---- demo.parallel ---- */

static void test_demo_split(void **state)
{
    bgt_task *t = fake_task_new(1);
    assert_int_equal(
        fake_run_split(demo, "demo.parallel", t, "{\"items\": 5, \"ms\": 20, \"fail\": [1, 3, 3]}"),
        BGT_OK);
    assert_int_equal(t->nsubtasks, 5);
    for (int i = 0; i < 5; i++) {
        char want[96];
        snprintf(want, sizeof want, "{\"index\": %d, \"ms\": 20, \"fail\": %s}", i,
                 i == 1 || i == 3 ? "true" : "false");
        fake_assert_json(t->subtasks[i], want);
    }
    assert_null(t->error);
    fake_task_free(t);

    /* ms defaults to 100; no fail list, no failures. */
    t = fake_task_new(1);
    assert_int_equal(fake_run_split(demo, "demo.parallel", t, "{\"items\": 2}"), BGT_OK);
    assert_int_equal(t->nsubtasks, 2);
    fake_assert_json(t->subtasks[1], "{\"index\": 1, \"ms\": 100, \"fail\": false}");
    fake_task_free(t);

    /* Outside a split, add_subtask is refused (the fake does as the host). */
    t = fake_task_new(1);
    cJSON *o = cJSON_CreateObject();
    assert_int_equal(fake_api.add_subtask(t, o), -EPERM);
    cJSON_Delete(o);
    fake_task_free(t);
}

static void test_demo_split_bad_args(void **state)
{
    const char *h = "demo.parallel";
    const char *items = "args.items must be an integer 1..100000";
    fake_expect_split_failure(demo, h, "{}", 0,
                              "args.items is required: the number of subtasks, 1..100000");
    fake_expect_split_failure(demo, h, "{\"items\": 0}", 0, items);
    fake_expect_split_failure(demo, h, "{\"items\": 100001}", 0, items);
    fake_expect_split_failure(demo, h, "{\"items\": 2.5}", 0, items);
    fake_expect_split_failure(demo, h, "{\"items\": \"3\"}", 0, items);
    fake_expect_split_failure(demo, h, "[]", 0, "args must be a JSON object");
    fake_expect_split_failure(demo, h, "{\"items\": 3, \"ms\": -1}", 0,
                              "args.ms must be an integer 0..86400000");
    const char *fail = "args.fail must be an array of subtask indices 0..4";
    fake_expect_split_failure(demo, h, "{\"items\": 5, \"fail\": 1}", 0, fail);
    fake_expect_split_failure(demo, h, "{\"items\": 5, \"fail\": [5]}", 0, fail);
    fake_expect_split_failure(demo, h, "{\"items\": 5, \"fail\": [-1]}", 0, fail);
    fake_expect_split_failure(demo, h, "{\"items\": 5, \"fail\": [0.5]}", 0, fail);
    fake_expect_split_failure(demo, h, "{\"items\": 5, \"fail\": [\"1\"]}", 0, fail);
    /* More items than the host's tasks.max_subtasks: the message names the setting. */
    fake_expect_split_failure(demo, h, "{\"items\": 5}", 3,
                              "args.items = 5 is more subtasks than the host accepts "
                              "(tasks.max_subtasks)");
    fake_expect_split_failure(demo, h, "{\"items\": 100000}", 0,
                              "args.items = 100000 is more subtasks than the host accepts "
                              "(tasks.max_subtasks)");

    /* The ceiling of ms follows the plugin's max_seconds. */
    int rc;
    fake_plugin *p = fake_load_plugin("demo", "{\"max_seconds\": 2}", &rc);
    assert_int_equal(rc, 0);
    fake_expect_split_failure(p, h, "{\"items\": 1, \"ms\": 2001}", 0,
                              "args.ms must be an integer 0..2000");
    fake_unload_plugin(p);
}

static void test_demo_run(void **state)
{
    /* 120 ms: three slices of 40 ms, each reported. */
    bgt_status st;
    double t0 = mono_s();
    bgt_task *t = fake_run_subtask(demo, "demo.parallel", 2,
                                   "{\"index\": 2, \"ms\": 120, \"fail\": false}", &st);
    double took = mono_s() - t0;
    assert_int_equal(st, BGT_OK);
    fake_assert_json(t->result, "{\"index\": 2}");
    assert_null(t->error);
    assert_true(took >= 0.12);
    assert_int_equal(atomic_load(&t->nprogress), 3);
    for (int k = 0; k < 3; k++) {
        assert_true(t->progress[k].current == k + 1);
        assert_true(t->progress[k].total == 3);
    }
    assert_string_equal(t->progress[2].message, "subtask 2: slice 3/3");
    fake_task_free(t);

    /* The listed index fails, after its sleep, with the message the issue gives. */
    t = fake_run_subtask(demo, "demo.parallel", 3, "{\"index\": 3, \"ms\": 20, \"fail\": true}",
                         &st);
    assert_int_equal(st, BGT_FAILED);
    assert_string_equal(t->error, "subtask 3 was asked to fail");
    assert_null(t->result);
    assert_int_equal(atomic_load(&t->nprogress), 1);
    assert_true(t->progress[0].current == 1 && t->progress[0].total == 1);
    fake_task_free(t);

    /* Args a submitter wrote: the index defaults to the subtask's own, ms to 100. */
    t = fake_run_subtask(demo, "demo.parallel", 7, "{\"ms\": 0}", &st);
    assert_int_equal(st, BGT_OK);
    fake_assert_json(t->result, "{\"index\": 7}");
    fake_task_free(t);

    t = fake_run_subtask(demo, "demo.parallel", 0, "{\"fail\": 1}", &st);
    assert_int_equal(st, BGT_FAILED);
    assert_string_equal(t->error, "args.fail must be true or false");
    fake_task_free(t);
    t = fake_run_subtask(demo, "demo.parallel", 0, "{\"ms\": -5}", &st);
    assert_int_equal(st, BGT_FAILED);
    assert_string_equal(t->error, "args.ms must be an integer 0..86400000");
    fake_task_free(t);
}

static void test_demo_cancel(void **state)
{
    /* Cancelled before it starts: nothing reported, no result. */
    bgt_task *t = fake_task_new(1);
    t->subtask = 0;
    atomic_store(&t->cancel, true);
    assert_int_equal(fake_run(demo, "demo.parallel", t, "{\"index\": 0, \"ms\": 10000}"),
                     BGT_CANCELLED);
    assert_int_equal(atomic_load(&t->nprogress), 0);
    assert_null(t->result);
    fake_task_free(t);

    /* Cancelled while sleeping 60 s: it stops within a few slices. */
    t = fake_task_new(1);
    t->subtask = 0;
    t->cancel_after_polls = 3;
    double t0 = mono_s();
    assert_int_equal(fake_run(demo, "demo.parallel", t, "{\"index\": 0, \"ms\": 60000}"),
                     BGT_CANCELLED);
    double took = mono_s() - t0;
    if (took >= 1.0)
        fail_msg("demo.parallel took %.3f s to see the cancel (slices are 50 ms)", took);
    assert_null(t->result);
    fake_task_free(t);
}

static void test_demo_merge(void **state)
{
    bgt_task *t = fake_task_new(1);
    assert_int_equal(
        fake_run_merge(demo, "demo.parallel", t, "[{\"index\": 0}, null, {\"index\": 2}, null]"),
        BGT_OK);
    fake_assert_json(t->result, "{\"succeeded\": 2, \"items\": 4}");
    fake_task_free(t);

    /* The whole task, as the host runs it: one listed failure, the rest merged. */
    bgt_status merged;
    int failed;
    t = fake_run_parallel(demo, "demo.parallel", "{\"items\": 6, \"ms\": 0, \"fail\": [4]}",
                          &merged, &failed);
    assert_int_equal(failed, 1);
    assert_int_equal(merged, BGT_OK);
    fake_assert_json(t->result, "{\"succeeded\": 5, \"items\": 6}");
    fake_task_free(t);
}

/* ---- net.probe ---- */

/* A TCP socket on 127.0.0.1, any port; listening with backlog if backlog >= 0. */
static int loopback_socket(int backlog, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    if (backlog >= 0)
        assert_int_equal(listen(fd, backlog), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/*
 * Fill the accept queue of a listener (backlog 0) that never accepts, until a connect to it
 * hangs: then a probe of it hangs too. Returns the listener, or -1 if no connect hung (the
 * kernel answers them all); clients[] gets the client sockets (*nclients of them).
 */
static int hanging_listener(int *port, int *clients, int *nclients)
{
    int fd = loopback_socket(0, port);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)*port)};
    *nclients = 0;
    for (int i = 0; i < 16; i++) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(c >= 0);
        clients[(*nclients)++] = c;
        if (connect(c, (struct sockaddr *)&a, sizeof a) == 0)
            continue;
        assert_int_equal(errno, EINPROGRESS);
        struct pollfd p = {.fd = c, .events = POLLOUT};
        if (poll(&p, 1, 200) == 0)
            return fd;
    }
    close(fd);
    return -1;
}

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

/* Probe one target (args.target = target) as subtask 0; caller frees the task. */
static bgt_task *probe(const char *target, int timeout_ms, bgt_status *st)
{
    char args[256];
    snprintf(args, sizeof args, "{\"target\": \"%s\", \"timeout_ms\": %d}", target, timeout_ms);
    return fake_run_subtask(net, "net.probe", 0, args, st);
}

static void test_probe_up_and_down(void **state)
{
    int up_port, down_port;
    int up = loopback_socket(16, &up_port);
    int down = loopback_socket(-1, &down_port); /* bound, not listening: refused */
    char target[64], want[128];
    bgt_status st;

    snprintf(target, sizeof target, "127.0.0.1:%d", up_port);
    bgt_task *t = probe(target, 1000, &st);
    assert_int_equal(st, BGT_OK);
    cJSON *r = cJSON_Parse(t->result);
    assert_non_null(r);
    assert_string_equal(cJSON_GetObjectItem(r, "target")->valuestring, target);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(r, "ok")));
    assert_string_equal(cJSON_GetObjectItem(r, "address")->valuestring, "127.0.0.1");
    double latency = cJSON_GetObjectItem(r, "latency_ms")->valuedouble;
    assert_true(latency >= 0 && latency < 1000);
    cJSON_Delete(r);
    fake_task_free(t);

    /* A name, looked up by the resolver (localhost is in /etc/hosts). */
    snprintf(target, sizeof target, "localhost:%d", up_port);
    t = probe(target, 2000, &st);
    if (st != BGT_OK)
        fail_msg("%s: status %d, error %s", target, st, t->error ? t->error : "none");
    fake_task_free(t);

    snprintf(target, sizeof target, "127.0.0.1:%d", down_port);
    t = probe(target, 1000, &st);
    assert_int_equal(st, BGT_FAILED);
    snprintf(want, sizeof want, "%s: Connection refused", target);
    assert_string_equal(t->error, want);
    assert_null(t->result);
    fake_task_free(t);

    /* A name that does not resolve: the message starts with the target (the resolver says
     * "not known", or, without a DNS server to ask, the lookup times out). */
    t = probe("nosuch.invalid:80", 2000, &st);
    assert_int_equal(st, BGT_FAILED);
    assert_non_null(t->error);
    if (strncmp(t->error, "nosuch.invalid:80: cannot resolve nosuch.invalid: ", 50) != 0 &&
        strcmp(t->error, "nosuch.invalid:80: timed out after 2000 ms looking up "
                         "nosuch.invalid") != 0)
        fail_msg("unexpected error: %s", t->error);
    fake_task_free(t);

    /* The whole task: up, down, up; the merge keeps the order, null for the one down. */
    char args[256];
    snprintf(args, sizeof args,
             "{\"targets\": [\"127.0.0.1:%d\", \"127.0.0.1:%d\", \"localhost:%d\"]}", up_port,
             down_port, up_port);
    bgt_status merged;
    int failed;
    t = fake_run_parallel(net, "net.probe", args, &merged, &failed);
    assert_int_equal(failed, 1);
    assert_int_equal(merged, BGT_OK);
    r = cJSON_Parse(t->result);
    assert_true(cJSON_GetObjectItem(r, "up")->valuedouble == 2);
    assert_true(cJSON_GetObjectItem(r, "down")->valuedouble == 1);
    const cJSON *results = cJSON_GetObjectItem(r, "results");
    assert_int_equal(cJSON_GetArraySize(results), 3);
    snprintf(target, sizeof target, "127.0.0.1:%d", up_port);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(results, 0), "target")->valuestring,
                        target);
    assert_true(cJSON_IsNull(cJSON_GetArrayItem(results, 1)));
    snprintf(target, sizeof target, "localhost:%d", up_port);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(results, 2), "target")->valuestring,
                        target);
    cJSON_Delete(r);
    fake_task_free(t);
    close(up);
    close(down);
}

static void test_probe_timeout_and_cancel(void **state)
{
    int port, clients[16], nclients;
    int fd = hanging_listener(&port, clients, &nclients);
    if (fd < 0) {
        close_all(clients, nclients);
        fprintf(stderr, "test_probe_timeout_and_cancel: this kernel accepts every connect to a "
                        "full backlog: skipped\n");
        return;
    }
    char target[64], want[128];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    bgt_status st;
    double t0 = mono_s();
    bgt_task *t = probe(target, 200, &st);
    double took = mono_s() - t0;
    assert_int_equal(st, BGT_FAILED);
    snprintf(want, sizeof want, "%s: timed out after 200 ms", target);
    assert_string_equal(t->error, want);
    if (took < 0.19 || took > 2.0)
        fail_msg("a 200 ms timeout took %.3f s", took);
    fake_task_free(t);

    /* Cancelled while it waits for the connect: it stops within a few slices. */
    t = fake_task_new(1);
    t->subtask = 0;
    t->cancel_after_polls = 3;
    char args[128];
    snprintf(args, sizeof args, "{\"target\": \"%s\", \"timeout_ms\": 60000}", target);
    t0 = mono_s();
    assert_int_equal(fake_run(net, "net.probe", t, args), BGT_CANCELLED);
    took = mono_s() - t0;
    if (took > 1.0)
        fail_msg("net.probe took %.3f s to see the cancel (slices are 50 ms)", took);
    assert_null(t->result);
    fake_task_free(t);
    close_all(clients, nclients);
    close(fd);
}

static void test_probe_split(void **state)
{
    bgt_task *t = fake_task_new(1);
    assert_int_equal(fake_run_split(net, "net.probe", t,
                                    "{\"targets\": [\"10.0.0.5:22\", \"db.example:5432\", "
                                    "\"[::1]:80\", \"[fe80::1%eth0]:8080\"], \"timeout_ms\": 300}"),
                     BGT_OK);
    assert_int_equal(t->nsubtasks, 4);
    fake_assert_json(t->subtasks[0], "{\"target\": \"10.0.0.5:22\", \"timeout_ms\": 300}");
    fake_assert_json(t->subtasks[2], "{\"target\": \"[::1]:80\", \"timeout_ms\": 300}");
    fake_assert_json(t->subtasks[3], "{\"target\": \"[fe80::1%eth0]:8080\", \"timeout_ms\": 300}");
    fake_task_free(t);

    t = fake_task_new(1);
    assert_int_equal(fake_run_split(net, "net.probe", t, "{\"targets\": [\"h:65535\"]}"), BGT_OK);
    fake_assert_json(t->subtasks[0], "{\"target\": \"h:65535\", \"timeout_ms\": 1000}");
    fake_task_free(t);

    /* A bad target fails the split, naming it and its place; nothing is added. */
    struct {
        const char *target, *why;
    } bad[] = {
        {"nocolon", "expected host:port"},
        {"host:", "the port must be a number 1..65535"},
        {"host:0", "the port must be a number 1..65535"},
        {"host:65536", "the port must be a number 1..65535"},
        {"host:+80", "the port must be a number 1..65535"},
        {"host:http", "the port must be a number 1..65535"},
        {"host:123456", "the port must be a number 1..65535"},
        {":80", "the host is empty"},
        {"[]:80", "the host is empty"},
        {"::1:80", "an IPv6 address goes in brackets, as in [::1]:80"},
        {"[::1]", "expected [address]:port"},
        {"[::1:80", "expected [address]:port"},
        {"[::1]80", "expected [address]:port"},
        {"a b:80", "a target has no spaces or control characters"},
        {"a\\tb:80", "a target has no spaces or control characters"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char args[256], want[256];
        snprintf(args, sizeof args, "{\"targets\": [\"127.0.0.1:80\", \"%s\"]}", bad[i].target);
        cJSON *a = cJSON_Parse(args);
        assert_non_null(a);
        snprintf(want, sizeof want, "args.targets[1] \"%s\": %s",
                 cJSON_GetArrayItem(cJSON_GetObjectItem(a, "targets"), 1)->valuestring, bad[i].why);
        cJSON_Delete(a);
        assert_int_equal(fake_expect_split_failure(net, "net.probe", args, 0, want), 0);
    }

    const char *targets = "args.targets must be an array of 1..10000 \"host:port\" strings";
    fake_expect_split_failure(net, "net.probe", "{}", 0, targets);
    fake_expect_split_failure(net, "net.probe", "[]", 0, targets);
    fake_expect_split_failure(net, "net.probe", "{\"targets\": []}", 0, targets);
    fake_expect_split_failure(net, "net.probe", "{\"targets\": \"h:1\"}", 0, targets);
    fake_expect_split_failure(net, "net.probe", "{\"targets\": [\"h:1\", 5]}", 0,
                              "args.targets[1] must be a \"host:port\" string");
    const char *timeout = "args.timeout_ms must be an integer 1..60000";
    fake_expect_split_failure(net, "net.probe", "{\"targets\": [\"h:1\"], \"timeout_ms\": 0}", 0,
                              timeout);
    fake_expect_split_failure(net, "net.probe", "{\"targets\": [\"h:1\"], \"timeout_ms\": 60001}",
                              0, timeout);
    fake_expect_split_failure(net, "net.probe", "{\"targets\": [\"h:1\"], \"timeout_ms\": \"1\"}",
                              0, timeout);
    fake_expect_split_failure(net, "net.probe", "{\"targets\": [\"h:1\", \"h:2\", \"h:3\"]}", 2,
                              "3 targets are more subtasks than the host accepts "
                              "(tasks.max_subtasks)");

    /* 10001 targets are too many, 10000 are fine (the host's own limit aside). */
    cJSON *a = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(a, "targets");
    for (int i = 0; i < 10000; i++)
        cJSON_AddItemToArray(arr, cJSON_CreateString("h:1"));
    char *text = cJSON_PrintUnformatted(a);
    t = fake_task_new(1);
    assert_int_equal(fake_run_split(net, "net.probe", t, text), BGT_OK);
    assert_int_equal(t->nsubtasks, 10000);
    fake_task_free(t);
    free(text);
    cJSON_AddItemToArray(arr, cJSON_CreateString("h:1"));
    text = cJSON_PrintUnformatted(a);
    fake_expect_split_failure(net, "net.probe", text, 0, targets);
    free(text);
    cJSON_Delete(a);

    /* The run checks its own args too. */
    bgt_status st;
    t = fake_run_subtask(net, "net.probe", 0, "{\"target\": 5}", &st);
    assert_int_equal(st, BGT_FAILED);
    assert_string_equal(t->error, "args.target must be a \"host:port\" string");
    fake_task_free(t);
    t = fake_run_subtask(net, "net.probe", 0, "{\"target\": \"x\"}", &st);
    assert_int_equal(st, BGT_FAILED);
    assert_string_equal(t->error, "args.target \"x\": expected host:port");
    fake_task_free(t);
}

static void test_probe_merge(void **state)
{
    bgt_task *t = fake_task_new(1);
    const char *results = "[{\"target\": \"a:1\", \"ok\": true, \"latency_ms\": 0.5}, null, "
                          "null]";
    assert_int_equal(fake_run_merge(net, "net.probe", t, results), BGT_OK);
    fake_assert_json(t->result, "{\"up\": 1, \"down\": 2, \"results\": [{\"target\": \"a:1\", "
                                "\"ok\": true, \"latency_ms\": 0.5}, null, null]}");
    fake_task_free(t);

    /* Over the host's result limit: the message names the setting. */
    t = fake_task_new(1);
    t->max_result = 20;
    assert_int_equal(fake_run_merge(net, "net.probe", t, results), BGT_FAILED);
    assert_string_equal(t->error, "the results of 3 targets are larger than the host accepts "
                                  "(tasks.max_result_bytes)");
    fake_task_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entries),
        cmocka_unit_test(test_demo_split),
        cmocka_unit_test(test_demo_split_bad_args),
        cmocka_unit_test(test_demo_run),
        cmocka_unit_test(test_demo_cancel),
        cmocka_unit_test(test_demo_merge),
        cmocka_unit_test(test_probe_up_and_down),
        cmocka_unit_test(test_probe_timeout_and_cancel),
        cmocka_unit_test(test_probe_split),
        cmocka_unit_test(test_probe_merge),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

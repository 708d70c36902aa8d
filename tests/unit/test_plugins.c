/*
 * test_plugins.c - the shipped plugins (demo, files, bench) against the fake host of
 * fake_host.h.
 *
 * Each plugin is dlopen()ed from $BUILD/plugins (BUILD defaults to "build") as the host
 * would load it, and its init gets the fake host's bgt_api table, which records what the
 * handlers report on a struct bgt_task. The tests then call the handlers' run functions.
 */
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>

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

#define SHA256_ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define MIB (1024 * 1024)

/* ---- fixtures ---- */

static fake_plugin *demo, *files, *bench;
static char scratch[PATH_MAX]; /* $BUILD/tmp/test_plugins-XXXXXX */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int group_setup(void **state)
{
    int rc;
    demo = fake_load_plugin("demo", "{}", &rc);
    assert_int_equal(rc, 0);
    files = fake_load_plugin("files", "{}", &rc);
    assert_int_equal(rc, 0);
    bench = fake_load_plugin("bench", "{}", &rc);
    assert_int_equal(rc, 0);

    snprintf(scratch, sizeof scratch, "%s/tmp", fake_build_dir());
    mkdir(scratch, 0755);
    snprintf(scratch, sizeof scratch, "%s/tmp/test_plugins-XXXXXX", fake_build_dir());
    assert_non_null(mkdtemp(scratch));
    chmod(scratch, 0755); /* the unreadable-file case may look at it as another user */
    return 0;
}

static int group_teardown(void **state)
{
    fake_unload_plugin(demo);
    fake_unload_plugin(files);
    fake_unload_plugin(bench);
    if (scratch[0] != '\0')
        nftw(scratch, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* Write len bytes of data to scratch/rel, making the folders on the way; returns the path. */
static char *write_file(const char *rel, const void *data, size_t len)
{
    char *path;
    assert_true(asprintf(&path, "%s/%s", scratch, rel) > 0);
    for (char *s = strchr(path + strlen(scratch) + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = '\0';
        mkdir(path, 0755);
        *s = '/';
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
    return path;
}

static char *scratch_path(const char *rel)
{
    char *path;
    assert_true(asprintf(&path, "%s/%s", scratch, rel) > 0);
    return path;
}

/* The SHA-256 of data in hex, computed here with OpenSSL's one-shot call. */
static void sha256_hex(const void *data, size_t len, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    assert_int_equal(EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL), 1);
    assert_int_equal(mdlen, 32);
    for (unsigned int i = 0; i < mdlen; i++)
        sprintf(hex + 2 * i, "%02x", md[i]);
}

/* ---- loading ---- */

static void test_entries(void **state)
{
    assert_string_equal(demo->entry->version, "1.0");
    assert_int_equal(demo->nhandlers, 5); /* demo.parallel: see test_plugins_parallel.c */
    assert_int_equal(demo->nhooks, 0);
    fake_find_handler(demo, "demo.sleep");
    fake_find_handler(demo, "demo.echo");
    fake_find_handler(demo, "demo.fail");
    assert_int_equal(fake_find_handler(demo, "demo.flaky")->max_attempts, 10);
    for (int i = 0; i < demo->nhandlers; i++)
        assert_int_equal(demo->handlers[i].kind,
                         strcmp(demo->handlers[i].name, "demo.parallel") == 0 ? BGT_PARALLEL
                                                                              : BGT_SINGLE);

    assert_int_equal(files->nhandlers, 2); /* files.cleanup: see test_plugins_parallel.c */
    const bgt_handler_def *ck = fake_find_handler(files, "files.checksum");
    assert_non_null(ck->udata);
    assert_non_null(ck->udata_free);

    assert_int_equal(bench->nhandlers, 3);
    fake_find_handler(bench, "bench.noop");
    fake_find_handler(bench, "bench.sleep_ms");

    /* The entry is the one symbol each exports: the SDK's table pointer stays hidden. */
    fake_plugin *all[] = {demo, files, bench};
    for (int i = 0; i < 3; i++) {
        assert_null(dlsym(all[i]->dl, "bgt_host_api"));
        assert_null(dlsym(all[i]->dl, "demo_init"));
    }
}

static void test_config(void **state)
{
    int rc;
    fake_plugin *p = fake_load_plugin("demo", "{\"max_seconds\": 2}", &rc);
    assert_int_equal(rc, 0);
    fake_expect_failure(p, "demo.sleep", "{\"seconds\": 3}", "args.seconds must be a number 0..2");
    fake_unload_plugin(p);

    p = fake_load_plugin("demo", "{\"max_seconds\": \"x\"}", &rc);
    assert_int_not_equal(rc, 0);
    assert_int_equal(p->nhandlers, 0);
    assert_non_null(strstr(p->log, "max_seconds must be a number 0..86400"));
    fake_unload_plugin(p);

    p = fake_load_plugin("demo", "{\"colour\": \"blue\"}", &rc);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(p->log, "unknown setting colour"));
    fake_unload_plugin(p);

    p = fake_load_plugin("files", "{\"max_files\": 0}", &rc);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(p->log, "max_files must be an integer"));
    fake_unload_plugin(p);

    p = fake_load_plugin("files", "{\"max_files\": 2.5}", &rc);
    assert_int_not_equal(rc, 0);
    fake_unload_plugin(p);
}

/* ---- demo.echo, demo.fail, demo.flaky ---- */

static void test_echo(void **state)
{
    const char *args = "{\"a\": 1, \"b\": [true, null, \"x\"], \"c\": {\"d\": \"\\u00e9\"}}";
    bgt_task *t = fake_task_new(1);
    assert_int_equal(fake_run(demo, "demo.echo", t, args), BGT_OK);
    fake_assert_json(t->result, args);
    assert_null(t->error);
    fake_task_free(t);

    /* Args that are not an object are echoed too. */
    t = fake_task_new(1);
    assert_int_equal(fake_run(demo, "demo.echo", t, "[1, 2]"), BGT_OK);
    fake_assert_json(t->result, "[1, 2]");
    fake_task_free(t);

    /* A result over the host's limit ends the task as a failure that says why. */
    t = fake_task_new(1);
    t->max_result = 8;
    assert_int_equal(fake_run(demo, "demo.echo", t, "{\"long\": \"0123456789\"}"), BGT_FAILED);
    assert_null(t->result);
    assert_non_null(t->error);
    assert_string_equal(t->error,
                        "the result is larger than the host accepts (tasks.max_result_bytes)");
    fake_task_free(t);
}

static void test_fail(void **state)
{
    fake_expect_failure(demo, "demo.fail", "{}", "demo.fail was asked to fail");
    fake_expect_failure(demo, "demo.fail", "{\"message\": \"disk on fire\"}", "disk on fire");
    /* The message is data, never a format. */
    fake_expect_failure(demo, "demo.fail", "{\"message\": \"100%s %n\"}", "100%s %n");
    fake_expect_failure(demo, "demo.fail", "{\"message\": 5}", "args.message must be a string");
    fake_expect_failure(demo, "demo.fail", "[]", "args must be a JSON object");
}

static void test_flaky(void **state)
{
    /* Default n = 3: attempts 1 and 2 ask for a retry, 3 (and later) succeed. */
    for (uint32_t a = 1; a <= 4; a++) {
        bgt_task *t = fake_task_new(a);
        bgt_status st = fake_run(demo, "demo.flaky", t, "{}");
        if (a < 3) {
            char want[64];
            snprintf(want, sizeof want, "attempt %u of 3: not yet", a);
            assert_int_equal(st, BGT_RETRY);
            assert_string_equal(t->error, want);
            assert_null(t->result);
        } else {
            char want[64];
            snprintf(want, sizeof want, "{\"attempt\": %u}", a);
            assert_int_equal(st, BGT_OK);
            fake_assert_json(t->result, want);
        }
        fake_task_free(t);
    }

    bgt_task *t = fake_task_new(9);
    assert_int_equal(fake_run(demo, "demo.flaky", t, "{\"n\": 10}"), BGT_RETRY);
    assert_string_equal(t->error, "attempt 9 of 10: not yet");
    fake_task_free(t);
    t = fake_task_new(10);
    assert_int_equal(fake_run(demo, "demo.flaky", t, "{\"n\": 10}"), BGT_OK);
    fake_assert_json(t->result, "{\"attempt\": 10}");
    fake_task_free(t);

    fake_expect_failure(demo, "demo.flaky", "{\"n\": 0}", "args.n must be an integer 1..1000");
    fake_expect_failure(demo, "demo.flaky", "{\"n\": 2.5}", "args.n must be an integer 1..1000");
    fake_expect_failure(demo, "demo.flaky", "{\"n\": \"3\"}", "args.n must be an integer 1..1000");
}

/* ---- demo.sleep ---- */

/* Check that t's reports are "step i/steps" for i = first..steps, in order. */
static void assert_steps(const bgt_task *t, int first, int steps)
{
    assert_int_equal(atomic_load(&t->nprogress), steps - first + 1);
    for (int i = first; i <= steps; i++) {
        const struct progress_call *c = &t->progress[i - first];
        char want[48];
        snprintf(want, sizeof want, "step %d/%d", i, steps);
        assert_true(c->current == i);
        assert_true(c->total == steps);
        assert_string_equal(c->message, want);
    }
}

static void test_sleep_progress(void **state)
{
    bgt_task *t = fake_task_new(1);
    double t0 = mono_s();
    assert_int_equal(fake_run(demo, "demo.sleep", t, "{\"seconds\": 0.05, \"steps\": 5}"), BGT_OK);
    double took = mono_s() - t0;
    assert_true(took >= 0.05);
    assert_true(took < 5);
    assert_steps(t, 1, 5);
    fake_assert_json(t->result, "{\"slept\": 0.05, \"steps\": 5, \"resumed_from\": 0}");
    assert_null(t->error);
    assert_null(strstr(t->log, "resum"));
    fake_task_free(t);

    /* Zero seconds still walks every step. */
    t = fake_task_new(1);
    assert_int_equal(fake_run(demo, "demo.sleep", t, "{\"seconds\": 0, \"steps\": 100}"), BGT_OK);
    assert_steps(t, 1, 100);
    fake_task_free(t);
}

static void test_sleep_resume(void **state)
{
    /* A previous attempt got to step 3 of 5: only 4 and 5 are left. */
    bgt_task *t = fake_task_new(2);
    t->prev_current = 3;
    t->prev_total = 5;
    assert_int_equal(fake_run(demo, "demo.sleep", t, "{\"seconds\": 0.05, \"steps\": 5}"), BGT_OK);
    assert_steps(t, 4, 5);
    fake_assert_json(t->result, "{\"slept\": 0.05, \"steps\": 5, \"resumed_from\": 3}");
    assert_non_null(strstr(t->log, "resuming at step 3/5"));
    fake_task_free(t);

    /* The defaults (1 s in 10 steps), resumed at step 9: one tenth of a second is left. */
    t = fake_task_new(2);
    t->prev_current = 9;
    t->prev_total = 10;
    double t0 = mono_s();
    assert_int_equal(fake_run(demo, "demo.sleep", t, "{}"), BGT_OK);
    assert_true(mono_s() - t0 < 0.9);
    assert_steps(t, 10, 10);
    fake_assert_json(t->result, "{\"slept\": 1, \"steps\": 10, \"resumed_from\": 9}");
    fake_task_free(t);

    /* Progress that another step count wrote is not this run's: start from 0. */
    t = fake_task_new(2);
    t->prev_current = 3;
    t->prev_total = 7;
    assert_int_equal(fake_run(demo, "demo.sleep", t, "{\"seconds\": 0, \"steps\": 5}"), BGT_OK);
    assert_steps(t, 1, 5);
    fake_assert_json(t->result, "{\"slept\": 0, \"steps\": 5, \"resumed_from\": 0}");
    fake_task_free(t);
}

static void test_sleep_cancel_before(void **state)
{
    bgt_task *t = fake_task_new(1);
    atomic_store(&t->cancel, true);
    double t0 = mono_s();
    assert_int_equal(fake_run(demo, "demo.sleep", t, "{\"seconds\": 60}"), BGT_CANCELLED);
    assert_true(mono_s() - t0 < 0.5);
    assert_int_equal(atomic_load(&t->nprogress), 0);
    assert_null(t->result);
    fake_task_free(t);
}

struct runner {
    fake_plugin *p;
    const char *handler;
    const char *args;
    bgt_task *t;
    bgt_status status;
    double ended; /* mono_s() when the run function returned */
};

static void *runner_main(void *arg)
{
    struct runner *r = arg;
    const bgt_handler_def *h = NULL;
    for (int i = 0; i < r->p->nhandlers; i++)
        if (strcmp(r->p->handlers[i].name, r->handler) == 0)
            h = &r->p->handlers[i];
    cJSON *a = cJSON_Parse(r->args);
    r->t->handler = r->handler;
    r->status = h->run(r->t, a, h->udata);
    r->ended = mono_s();
    cJSON_Delete(a);
    return NULL;
}

/*
 * Run handler on another thread; once it has polled bgt_cancelled() twice (it is inside its
 * sleep loop, at the start of a slice), set the cancel flag and return the seconds from then
 * until the run function returned. The handler's own length bounds the wait.
 */
static double cancel_latency(fake_plugin *p, const char *handler, const char *args,
                             bgt_status *status)
{
    struct runner r = {.p = p, .handler = handler, .args = args, .t = fake_task_new(1)};
    fake_find_handler(p, handler);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, runner_main, &r), 0);
    double deadline = mono_s() + 10;
    while (atomic_load(&r.t->cancel_polls) < 2 && mono_s() < deadline)
        sched_yield();
    double cancelled_at = mono_s();
    atomic_store(&r.t->cancel, true);
    pthread_join(th, NULL);
    *status = r.status;
    assert_null(r.t->result);
    fake_task_free(r.t);
    return r.ended - cancelled_at;
}

static void test_sleep_cancel_running(void **state)
{
    /* One 3 s step: unless it sleeps in short slices, the cancel waits for the whole step. */
    bgt_status st;
    double latency = cancel_latency(demo, "demo.sleep", "{\"seconds\": 3, \"steps\": 1}", &st);
    assert_int_equal(st, BGT_CANCELLED);
    if (latency >= 0.25)
        fail_msg("demo.sleep took %.3f s to see the cancel (slices are 50 ms)", latency);
}

static void test_sleep_bad_args(void **state)
{
    const char *sec = "args.seconds must be a number 0..86400";
    const char *steps = "args.steps must be an integer 1..100000";
    fake_expect_failure(demo, "demo.sleep", "{\"seconds\": \"1\"}", sec);
    fake_expect_failure(demo, "demo.sleep", "{\"seconds\": -1}", sec);
    fake_expect_failure(demo, "demo.sleep", "{\"seconds\": 86401}", sec);
    fake_expect_failure(demo, "demo.sleep", "{\"seconds\": null}", sec);
    fake_expect_failure(demo, "demo.sleep", "{\"steps\": 0}", steps);
    fake_expect_failure(demo, "demo.sleep", "{\"steps\": 1.5}", steps);
    fake_expect_failure(demo, "demo.sleep", "{\"steps\": 100001}", steps);
    fake_expect_failure(demo, "demo.sleep", "{\"steps\": 1e300}", steps);
    fake_expect_failure(demo, "demo.sleep", "{\"steps\": [10]}", steps);
    fake_expect_failure(demo, "demo.sleep", "\"soon\"", "args must be a JSON object");
}

/* ---- bench ---- */

static void test_bench(void **state)
{
    bgt_task *t = fake_task_new(1);
    assert_int_equal(fake_run(bench, "bench.noop", t, "{}"), BGT_OK);
    assert_null(t->result);
    assert_null(t->error);
    assert_int_equal(atomic_load(&t->nprogress), 0);
    fake_task_free(t);

    t = fake_task_new(1);
    double t0 = mono_s();
    assert_int_equal(fake_run(bench, "bench.sleep_ms", t, "{\"ms\": 30}"), BGT_OK);
    double took = mono_s() - t0;
    assert_true(took >= 0.030);
    assert_true(took < 5);
    assert_null(t->result);
    fake_task_free(t);

    t = fake_task_new(1);
    atomic_store(&t->cancel, true);
    t0 = mono_s();
    assert_int_equal(fake_run(bench, "bench.sleep_ms", t, "{\"ms\": 60000}"), BGT_CANCELLED);
    assert_true(mono_s() - t0 < 0.5);
    fake_task_free(t);

    bgt_status st;
    double latency = cancel_latency(bench, "bench.sleep_ms", "{\"ms\": 3000}", &st);
    assert_int_equal(st, BGT_CANCELLED);
    if (latency >= 0.25)
        fail_msg("bench.sleep_ms took %.3f s to see the cancel (slices are 50 ms)", latency);

    const char *ms = "args.ms must be an integer 0..3600000";
    fake_expect_failure(bench, "bench.sleep_ms", "{}", ms);
    fake_expect_failure(bench, "bench.sleep_ms", "{\"ms\": -1}", ms);
    fake_expect_failure(bench, "bench.sleep_ms", "{\"ms\": 0.5}", ms);
    fake_expect_failure(bench, "bench.sleep_ms", "{\"ms\": \"5\"}", ms);
    fake_expect_failure(bench, "bench.sleep_ms", "{\"ms\": 3600001}", ms);
}

/* ---- files.checksum ---- */

/* {"path": path} as JSON text (caller frees). */
static char *path_args(const char *path)
{
    cJSON *args = cJSON_CreateObject();
    cJSON_AddStringToObject(args, "path", path);
    char *text = cJSON_PrintUnformatted(args);
    cJSON_Delete(args);
    return text;
}

/* Run files.checksum on path with plugin p; returns the task (caller frees). */
static bgt_task *checksum(fake_plugin *p, const char *path, bgt_status want)
{
    char *text = path_args(path);
    bgt_task *t = fake_task_new(1);
    bgt_status st = fake_run(p, "files.checksum", t, text);
    free(text);
    if (st != want)
        fail_msg("files.checksum %s: status %d, want %d (error: %s)", path, st, want,
                 t->error ? t->error : "none");
    return t;
}

/* Check the reports of a finished checksum: bytes, never backwards, ending at all of it. */
static void assert_byte_progress(const bgt_task *t, double bytes)
{
    int n = atomic_load(&t->nprogress);
    assert_true(n >= 2);
    assert_true(n <= FAKE_MAX_PROGRESS);
    for (int i = 0; i < n; i++) {
        assert_true(t->progress[i].total == bytes);
        if (i > 0)
            assert_true(t->progress[i].current >= t->progress[i - 1].current);
    }
    assert_true(t->progress[0].current == 0);
    assert_true(t->progress[n - 1].current == bytes);
    /* At most one report per MiB, plus the first and the last. */
    assert_true(n <= bytes / MIB + 3);
}

static void test_checksum_file(void **state)
{
    char *path = write_file("abc.txt", "abc", 3);
    bgt_task *t = checksum(files, path, BGT_OK);

    char want[PATH_MAX + 128];
    snprintf(want, sizeof want, "{\"files\": {\"%s\": \"%s\"}, \"bytes\": 3, \"count\": 1}", path,
             SHA256_ABC);
    fake_assert_json(t->result, want);
    assert_byte_progress(t, 3);
    assert_null(t->error);
    fake_task_free(t);

    /* A result over the host's limit fails the task, naming the path and the limit. */
    char *args = path_args(path);
    t = fake_task_new(1);
    t->max_result = 50;
    assert_int_equal(fake_run(files, "files.checksum", t, args), BGT_FAILED);
    snprintf(want, sizeof want,
             "the result for %s is larger than the host accepts (tasks.max_result_bytes)", path);
    assert_string_equal(t->error, want);
    assert_null(t->result);
    fake_task_free(t);
    free(args);

    /* The digest computed here agrees with the known one. */
    char hex[65];
    sha256_hex("abc", 3, hex);
    assert_string_equal(hex, SHA256_ABC);
    free(path);
}

static void test_checksum_tree(void **state)
{
    /* tree/a.txt, tree/empty, tree/sub/b.txt, tree/sub/deep/big.bin; plus things to skip:
     * a link to a file, a dangling link, a FIFO, an empty folder. */
    size_t big_len = 3 * MIB + 123;
    unsigned char *big = malloc(big_len);
    assert_non_null(big);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (unsigned char)(i * 7 + (i >> 11));

    struct {
        const char *rel;
        const void *data;
        size_t len;
        char *path;
        char hex[65];
    } f[] = {
        {.rel = "tree/a.txt", .data = "abc", .len = 3},
        {.rel = "tree/empty", .data = "", .len = 0},
        {.rel = "tree/sub/b.txt", .data = "hello\n", .len = 6},
        {.rel = "tree/sub/deep/big.bin", .data = big, .len = big_len},
    };
    size_t nf = sizeof f / sizeof f[0];
    double bytes = 0;
    for (size_t i = 0; i < nf; i++) {
        f[i].path = write_file(f[i].rel, f[i].data, f[i].len);
        sha256_hex(f[i].data, f[i].len, f[i].hex);
        bytes += (double)f[i].len;
    }
    free(big);
    char *link = scratch_path("tree/sub/link"), *dangling = scratch_path("tree/dangling");
    char *fifo = scratch_path("tree/fifo"), *emptydir = scratch_path("tree/sub/deep/nothing");
    assert_int_equal(symlink("../a.txt", link), 0);
    assert_int_equal(symlink("/nonexistent/bgtask", dangling), 0);
    assert_int_equal(mkfifo(fifo, 0644), 0);
    assert_int_equal(mkdir(emptydir, 0755), 0);

    char *root = scratch_path("tree");
    char *root_slash = scratch_path("tree//");
    const char *roots[] = {root, root_slash};
    for (int k = 0; k < 2; k++) {
        bgt_task *t = checksum(files, roots[k], BGT_OK);
        cJSON *res = cJSON_Parse(t->result);
        assert_non_null(res);
        assert_true(cJSON_GetObjectItem(res, "count")->valuedouble == (double)nf);
        assert_true(cJSON_GetObjectItem(res, "bytes")->valuedouble == bytes);
        const cJSON *fo = cJSON_GetObjectItem(res, "files");
        assert_int_equal(cJSON_GetArraySize(fo), (int)nf);
        /* The write order above is the sorted order: the keys must come in it. */
        const cJSON *e = fo->child;
        for (size_t i = 0; i < nf; i++, e = e->next) {
            assert_non_null(e);
            assert_string_equal(e->string, f[i].path);
            assert_string_equal(e->valuestring, f[i].hex);
        }
        cJSON_Delete(res);
        assert_byte_progress(t, bytes);
        /* Three MiB and more: the big file was reported along the way, not only at its end. */
        assert_true(atomic_load(&t->nprogress) >= 4);
        fake_task_free(t);
    }

    /* The root itself may be a link (the caller named it): it is followed. */
    char *root_link = scratch_path("tree-link");
    assert_int_equal(symlink("tree/sub", root_link), 0);
    bgt_task *t = checksum(files, root_link, BGT_OK);
    cJSON *res = cJSON_Parse(t->result);
    assert_true(cJSON_GetObjectItem(res, "count")->valuedouble == 2);
    cJSON_Delete(res);
    fake_task_free(t);

    /* An empty folder: nothing to hash, and that is a success. */
    t = checksum(files, emptydir, BGT_OK);
    fake_assert_json(t->result, "{\"files\": {}, \"bytes\": 0, \"count\": 0}");
    fake_task_free(t);

    for (size_t i = 0; i < nf; i++)
        free(f[i].path);
    free(link);
    free(dangling);
    free(fifo);
    free(emptydir);
    free(root);
    free(root_slash);
    free(root_link);
}

static void test_checksum_missing(void **state)
{
    char want[PATH_MAX + 64];
    char *missing = scratch_path("no/such/file");
    bgt_task *t = checksum(files, missing, BGT_FAILED);
    snprintf(want, sizeof want, "cannot open %s: No such file or directory", missing);
    assert_string_equal(t->error, want);
    assert_null(t->result);
    fake_task_free(t);

    /* A file used as a folder. */
    char *file = write_file("plain.txt", "x", 1);
    char *under = scratch_path("plain.txt/x");
    t = checksum(files, under, BGT_FAILED);
    snprintf(want, sizeof want, "cannot open %s: Not a directory", under);
    assert_string_equal(t->error, want);
    fake_task_free(t);

    /* A dangling link named as the root leads nowhere. */
    char *dangling = scratch_path("dangling-root");
    assert_int_equal(symlink("/nonexistent/bgtask", dangling), 0);
    t = checksum(files, dangling, BGT_FAILED);
    snprintf(want, sizeof want, "cannot open %s: No such file or directory", dangling);
    assert_string_equal(t->error, want);
    fake_task_free(t);

    /* A FIFO named as the root is neither a file nor a folder (and is never opened). */
    char *fifo = scratch_path("fifo-root");
    assert_int_equal(mkfifo(fifo, 0644), 0);
    t = checksum(files, fifo, BGT_FAILED);
    snprintf(want, sizeof want, "%s is not a regular file or a directory", fifo);
    assert_string_equal(t->error, want);
    fake_task_free(t);

    fake_expect_failure(files, "files.checksum", "{}", "args.path must be a non-empty string");
    fake_expect_failure(files, "files.checksum", "{\"path\": \"\"}",
                        "args.path must be a non-empty string");
    fake_expect_failure(files, "files.checksum", "{\"path\": 5}",
                        "args.path must be a non-empty string");
    free(missing);
    free(file);
    free(under);
    free(dangling);
    free(fifo);
}

/* What the unreadable cases check: run files.checksum on path, expect the message. */
struct perm_case {
    const char *path;  /* what to checksum */
    const char *named; /* the path the "Permission denied" message must name */
};

/*
 * Run the permission cases as the current user. Returns 0 when all hold, 1 (after saying
 * which on stderr) when one does not, 77 when `readable` cannot be hashed, which means this
 * user cannot reach the scratch folder at all. The outcome is an exit code, not a cmocka
 * assert, because this also runs in a child process.
 */
static int perm_cases(const char *readable, const struct perm_case *cases, size_t n)
{
    const bgt_handler_def *h = &files->handlers[0];
    for (size_t i = 0; i <= n; i++) {
        const char *path = i == 0 ? readable : cases[i - 1].path;
        char *args = path_args(path);
        cJSON *a = cJSON_Parse(args);
        bgt_task *t = fake_task_new(1);
        bgt_status st = h->run(t, a, h->udata);
        cJSON_Delete(a);
        free(args);
        bool ok;
        char want[PATH_MAX + 64] = "";
        if (i == 0) {
            ok = st == BGT_OK;
        } else {
            snprintf(want, sizeof want, "cannot open %s: Permission denied", cases[i - 1].named);
            ok = st == BGT_FAILED && t->error != NULL && strcmp(t->error, want) == 0;
        }
        if (!ok)
            fprintf(stderr, "files.checksum %s: status %d, error \"%s\", want \"%s\"\n", path, st,
                    t->error ? t->error : "none", want);
        fake_task_free(t);
        if (!ok)
            return i == 0 ? 77 : 1;
    }
    return 0;
}

static void test_checksum_unreadable(void **state)
{
    /* perm/one/secret is a mode 000 file (found by the second pass, when it is opened);
     * perm/two/locked is a mode 000 folder (found by the first pass, when it is listed). */
    char *readable = write_file("perm/readable", "abc", 3);
    char *secret = write_file("perm/one/secret", "top secret", 10);
    free(write_file("perm/one/fine", "fine", 4));
    free(write_file("perm/two/locked/inner", "x", 1));
    char *one = scratch_path("perm/one"), *two = scratch_path("perm/two");
    char *locked = scratch_path("perm/two/locked");
    assert_int_equal(chmod(secret, 0), 0);
    assert_int_equal(chmod(locked, 0), 0);
    const struct perm_case cases[] = {
        {secret, secret},
        {one, secret},
        {locked, locked},
        {two, locked},
    };
    size_t ncases = sizeof cases / sizeof cases[0];

    int rc;
    if (geteuid() != 0) {
        rc = perm_cases(readable, cases, ncases);
    } else {
        /* Root reads mode 000 files: look as user nobody (65534), from a child process. */
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            if (setgroups(0, NULL) != 0 || setresgid(65534, 65534, 65534) != 0 ||
                setresuid(65534, 65534, 65534) != 0)
                _exit(78);
            _exit(perm_cases(readable, cases, ncases));
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        rc = WEXITSTATUS(status);
        if (rc == 78 || rc == 77) {
            /* Only this sub-case is skipped, and the output says so. */
            fprintf(stderr,
                    "test_checksum_unreadable: running as root, and %s: the "
                    "permission cases are skipped\n",
                    rc == 78 ? "cannot switch to uid 65534"
                             : "uid 65534 cannot reach the scratch folder");
            rc = 0;
        }
    }
    chmod(locked, 0755);
    chmod(secret, 0644);
    assert_int_equal(rc, 0);
    free(readable);
    free(secret);
    free(one);
    free(two);
    free(locked);
}

static void test_checksum_max_files(void **state)
{
    int rc;
    fake_plugin *p = fake_load_plugin("files", "{\"max_files\": 2}", &rc);
    assert_int_equal(rc, 0);
    free(write_file("three/1", "1", 1));
    free(write_file("three/2", "2", 1));
    char *root = scratch_path("three");
    bgt_task *t = checksum(p, root, BGT_OK);
    fake_task_free(t);

    free(write_file("three/sub/3", "3", 1));
    t = checksum(p, root, BGT_FAILED);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want, "%s holds more than 2 regular files (the files plugin's max_files)",
             root);
    assert_string_equal(t->error, want);
    fake_task_free(t);

    /* The default limit is far away. */
    t = checksum(files, root, BGT_OK);
    fake_task_free(t);
    fake_unload_plugin(p);
    free(root);
}

static void test_checksum_cancel(void **state)
{
    size_t len = 3 * MIB;
    char *data = calloc(1, len);
    assert_non_null(data);
    char *path = write_file("cancel/big", data, len);
    free(data);

    /* Cancelled before it starts: it stops during the listing. */
    bgt_task *t = fake_task_new(1);
    atomic_store(&t->cancel, true);
    char *args = path_args(path);
    assert_int_equal(fake_run(files, "files.checksum", t, args), BGT_CANCELLED);
    assert_null(t->result);
    fake_task_free(t);

    /* Cancelled at the first report past 0 (1 MiB in): it stops before the end of the file. */
    t = fake_task_new(1);
    t->cancel_after_progress = true;
    assert_int_equal(fake_run(files, "files.checksum", t, args), BGT_CANCELLED);
    int n = atomic_load(&t->nprogress);
    assert_true(n >= 2);
    assert_true(t->progress[n - 1].current < (double)len);
    assert_null(t->result);
    fake_task_free(t);
    free(args);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entries),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_echo),
        cmocka_unit_test(test_fail),
        cmocka_unit_test(test_flaky),
        cmocka_unit_test(test_sleep_progress),
        cmocka_unit_test(test_sleep_resume),
        cmocka_unit_test(test_sleep_cancel_before),
        cmocka_unit_test(test_sleep_cancel_running),
        cmocka_unit_test(test_sleep_bad_args),
        cmocka_unit_test(test_bench),
        cmocka_unit_test(test_checksum_file),
        cmocka_unit_test(test_checksum_tree),
        cmocka_unit_test(test_checksum_missing),
        cmocka_unit_test(test_checksum_unreadable),
        cmocka_unit_test(test_checksum_max_files),
        cmocka_unit_test(test_checksum_cancel),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

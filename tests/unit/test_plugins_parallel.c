/*
 * test_plugins_parallel.c - the parallel handlers of the shipped plugins (demo.parallel,
 * files.cleanup, net.probe) against the fake host of fake_host.h.
 *
 * Each handler's split, run and merge are called as the host calls them: the split on the
 * task's args, collecting what it adds with add_subtask; the run once per subtask with that
 * subtask's args and index; the merge with the array of results, null for a subtask that
 * failed. run_parallel does the three in a row, one subtask after the other.
 *
 * files.cleanup works on trees made under $BUILD/tmp with mtimes set by utimensat; net.probe
 * on sockets this test opens on 127.0.0.1: a listener, a port bound but not listening (a
 * connect is refused at once), and a listener whose backlog is full (a connect hangs).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fake_host.h"

#define DAY_S 86400.0

static bgt_plugin *demo, *files, *net;
static char scratch[PATH_MAX]; /* realpath of $BUILD/tmp/test_plugins_parallel-XXXXXX */

/* ---- helpers ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int group_setup(void **state)
{
    int rc;
    demo = load_plugin("demo", "{}", &rc);
    assert_int_equal(rc, 0);
    files = load_plugin("files", "{}", &rc);
    assert_int_equal(rc, 0);
    net = load_plugin("net", "{}", &rc);
    assert_int_equal(rc, 0);

    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/tmp", build_dir());
    mkdir(dir, 0755);
    snprintf(dir, sizeof dir, "%s/tmp/test_plugins_parallel-XXXXXX", build_dir());
    assert_non_null(mkdtemp(dir));
    /* files.cleanup wants absolute paths, and names folders by their resolved path. */
    assert_non_null(realpath(dir, scratch));
    chmod(scratch, 0755); /* the permission case looks at it as another user */
    return 0;
}

static int group_teardown(void **state)
{
    unload_plugin(demo);
    unload_plugin(files);
    unload_plugin(net);
    if (scratch[0] != '\0')
        nftw(scratch, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* scratch/rel (caller frees). */
static char *scratch_path(const char *rel)
{
    char *path;
    assert_true(asprintf(&path, "%s/%s", scratch, rel) > 0);
    return path;
}

/* Write len bytes of 'x' to scratch/rel, making the folders on the way; returns the path. */
static char *write_file(const char *rel, size_t len)
{
    char dir[2 * PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", scratch, rel);
    for (char *s = strchr(dir + strlen(scratch) + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = '\0';
        mkdir(dir, 0755);
        *s = '/';
    }
    char *path = scratch_path(rel);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    char buf[256];
    memset(buf, 'x', sizeof buf);
    assert_true(len <= sizeof buf);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
    return path;
}

/* Set the mtime (and atime) of path to age_s seconds ago; links themselves, not targets. */
static void set_age(const char *path, double age_s)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    time_t when = now.tv_sec - (time_t)age_s;
    struct timespec ts[2] = {{.tv_sec = when}, {.tv_sec = when}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/*
 * Run the split of handler (with the host's max_subtasks, 0 for the default) and check that
 * it fails with message. Returns the number of subtasks it added before it failed (the host
 * drops them).
 */
static int expect_split_failure(bgt_plugin *p, const char *handler, const char *args,
                                int max_subtasks, const char *message)
{
    bgt_task *t = task_new(1);
    t->max_subtasks = max_subtasks;
    bgt_status st = run_split(p, handler, t, args);
    if (st != BGT_FAILED || t->error == NULL || strcmp(t->error, message) != 0)
        fail_msg("%s split %s: status %d, error \"%s\", want \"%s\"", handler, args, st,
                 t->error ? t->error : "none", message);
    assert_null(t->result);
    int n = t->nsubtasks;
    task_free(t);
    return n;
}

/* The number field of a JSON object given as text. */
static double json_number(const char *text, const char *field)
{
    cJSON *o = cJSON_Parse(text);
    assert_non_null(o);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);
    if (!cJSON_IsNumber(v))
        fail_msg("%s has no number %s", text, field);
    double d = v->valuedouble;
    cJSON_Delete(o);
    return d;
}

/* ---- loading ---- */

static void test_entries(void **state)
{
    struct {
        bgt_plugin *p;
        const char *name;
        int nhandlers;
    } cases[] = {
        {demo, "demo.parallel", 5},
        {files, "files.cleanup", 2},
        {net, "net.probe", 1},
    };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(cases[i].p->nhandlers, cases[i].nhandlers);
        const bgt_handler_def *h = find_handler(cases[i].p, cases[i].name);
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
    assert_int_equal(find_handler(demo, "demo.sleep")->kind, BGT_SINGLE);
    assert_int_equal(find_handler(demo, "demo.flaky")->max_attempts, 10);
    assert_int_equal(find_handler(files, "files.checksum")->kind, BGT_SINGLE);
    assert_string_equal(net->entry->version, "1.0");

    /* net has no settings: an unknown one is logged, a non-group refused. */
    int rc;
    bgt_plugin *p = load_plugin("net", "{\"colour\": 1}", &rc);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(p->log, "unknown setting colour"));
    unload_plugin(p);
    p = load_plugin("net", "[]", &rc);
    assert_int_not_equal(rc, 0);
    assert_int_equal(p->nhandlers, 0);
    unload_plugin(p);
}

/* ---- demo.parallel ---- */

static void test_demo_split(void **state)
{
    bgt_task *t = task_new(1);
    assert_int_equal(run_split(demo, "demo.parallel", t,
                               "{\"items\": 5, \"ms\": 20, \"fail\": [1, 3, 3]}"),
                     BGT_OK);
    assert_int_equal(t->nsubtasks, 5);
    for (int i = 0; i < 5; i++) {
        char want[96];
        snprintf(want, sizeof want, "{\"index\": %d, \"ms\": 20, \"fail\": %s}", i,
                 i == 1 || i == 3 ? "true" : "false");
        assert_json(t->subtasks[i], want);
    }
    assert_null(t->error);
    task_free(t);

    /* ms defaults to 100; no fail list, no failures. */
    t = task_new(1);
    assert_int_equal(run_split(demo, "demo.parallel", t, "{\"items\": 2}"), BGT_OK);
    assert_int_equal(t->nsubtasks, 2);
    assert_json(t->subtasks[1], "{\"index\": 1, \"ms\": 100, \"fail\": false}");
    task_free(t);

    /* Outside a split, add_subtask is refused (the fake does as the host). */
    t = task_new(1);
    cJSON *o = cJSON_CreateObject();
    assert_int_equal(fake_api.add_subtask(t, o), -EPERM);
    cJSON_Delete(o);
    task_free(t);
}

static void test_demo_split_bad_args(void **state)
{
    const char *h = "demo.parallel";
    const char *items = "args.items must be an integer 1..100000";
    expect_split_failure(demo, h, "{}", 0,
                         "args.items is required: the number of subtasks, 1..100000");
    expect_split_failure(demo, h, "{\"items\": 0}", 0, items);
    expect_split_failure(demo, h, "{\"items\": 100001}", 0, items);
    expect_split_failure(demo, h, "{\"items\": 2.5}", 0, items);
    expect_split_failure(demo, h, "{\"items\": \"3\"}", 0, items);
    expect_split_failure(demo, h, "[]", 0, "args must be a JSON object");
    expect_split_failure(demo, h, "{\"items\": 3, \"ms\": -1}", 0,
                         "args.ms must be an integer 0..86400000");
    const char *fail = "args.fail must be an array of subtask indices 0..4";
    expect_split_failure(demo, h, "{\"items\": 5, \"fail\": 1}", 0, fail);
    expect_split_failure(demo, h, "{\"items\": 5, \"fail\": [5]}", 0, fail);
    expect_split_failure(demo, h, "{\"items\": 5, \"fail\": [-1]}", 0, fail);
    expect_split_failure(demo, h, "{\"items\": 5, \"fail\": [0.5]}", 0, fail);
    expect_split_failure(demo, h, "{\"items\": 5, \"fail\": [\"1\"]}", 0, fail);
    /* More items than the host's tasks.max_subtasks: the message names the setting. */
    expect_split_failure(demo, h, "{\"items\": 5}", 3,
                         "args.items = 5 is more subtasks than the host accepts "
                         "(tasks.max_subtasks)");
    expect_split_failure(demo, h, "{\"items\": 100000}", 0,
                         "args.items = 100000 is more subtasks than the host accepts "
                         "(tasks.max_subtasks)");

    /* The ceiling of ms follows the plugin's max_seconds. */
    int rc;
    bgt_plugin *p = load_plugin("demo", "{\"max_seconds\": 2}", &rc);
    assert_int_equal(rc, 0);
    expect_split_failure(p, h, "{\"items\": 1, \"ms\": 2001}", 0,
                         "args.ms must be an integer 0..2000");
    unload_plugin(p);
}

static void test_demo_run(void **state)
{
    /* 120 ms: three slices of 40 ms, each reported. */
    bgt_status st;
    double t0 = now_s();
    bgt_task *t = run_subtask(demo, "demo.parallel", 2,
                              "{\"index\": 2, \"ms\": 120, \"fail\": false}", &st);
    double took = now_s() - t0;
    assert_int_equal(st, BGT_OK);
    assert_json(t->result, "{\"index\": 2}");
    assert_null(t->error);
    assert_true(took >= 0.12);
    assert_int_equal(atomic_load(&t->nprogress), 3);
    for (int k = 0; k < 3; k++) {
        assert_true(t->progress[k].current == k + 1);
        assert_true(t->progress[k].total == 3);
    }
    assert_string_equal(t->progress[2].message, "subtask 2: slice 3/3");
    task_free(t);

    /* The listed index fails, after its sleep, with the message the issue gives. */
    t = run_subtask(demo, "demo.parallel", 3, "{\"index\": 3, \"ms\": 20, \"fail\": true}", &st);
    assert_int_equal(st, BGT_FAILED);
    assert_string_equal(t->error, "subtask 3 was asked to fail");
    assert_null(t->result);
    assert_int_equal(atomic_load(&t->nprogress), 1);
    assert_true(t->progress[0].current == 1 && t->progress[0].total == 1);
    task_free(t);

    /* Args a submitter wrote: the index defaults to the subtask's own, ms to 100. */
    t = run_subtask(demo, "demo.parallel", 7, "{\"ms\": 0}", &st);
    assert_int_equal(st, BGT_OK);
    assert_json(t->result, "{\"index\": 7}");
    task_free(t);

    t = run_subtask(demo, "demo.parallel", 0, "{\"fail\": 1}", &st);
    assert_int_equal(st, BGT_FAILED);
    assert_string_equal(t->error, "args.fail must be true or false");
    task_free(t);
    t = run_subtask(demo, "demo.parallel", 0, "{\"ms\": -5}", &st);
    assert_int_equal(st, BGT_FAILED);
    assert_string_equal(t->error, "args.ms must be an integer 0..86400000");
    task_free(t);
}

static void test_demo_cancel(void **state)
{
    /* Cancelled before it starts: nothing reported, no result. */
    bgt_task *t = task_new(1);
    t->subtask = 0;
    atomic_store(&t->cancel, true);
    assert_int_equal(run_handler(demo, "demo.parallel", t, "{\"index\": 0, \"ms\": 10000}"),
                     BGT_CANCELLED);
    assert_int_equal(atomic_load(&t->nprogress), 0);
    assert_null(t->result);
    task_free(t);

    /* Cancelled while sleeping 60 s: it stops within a few slices. */
    t = task_new(1);
    t->subtask = 0;
    t->cancel_after_polls = 3;
    double t0 = now_s();
    assert_int_equal(run_handler(demo, "demo.parallel", t, "{\"index\": 0, \"ms\": 60000}"),
                     BGT_CANCELLED);
    double took = now_s() - t0;
    if (took >= 1.0)
        fail_msg("demo.parallel took %.3f s to see the cancel (slices are 50 ms)", took);
    assert_null(t->result);
    task_free(t);
}

static void test_demo_merge(void **state)
{
    bgt_task *t = task_new(1);
    assert_int_equal(run_merge(demo, "demo.parallel", t,
                               "[{\"index\": 0}, null, {\"index\": 2}, null]"),
                     BGT_OK);
    assert_json(t->result, "{\"succeeded\": 2, \"items\": 4}");
    task_free(t);

    /* The whole task, as the host runs it: one listed failure, the rest merged. */
    bgt_status merged;
    int failed;
    t = run_parallel(demo, "demo.parallel", "{\"items\": 6, \"ms\": 0, \"fail\": [4]}", &merged,
                     &failed);
    assert_int_equal(failed, 1);
    assert_int_equal(merged, BGT_OK);
    assert_json(t->result, "{\"succeeded\": 5, \"items\": 6}");
    task_free(t);
}

/* ---- files.cleanup ---- */

/* The tree a cleanup test works on: what must go, what must stay. */
struct tree {
    char *root;
    char *old[4];  /* in the order the split lists them (fts, names sorted per folder) */
    char *keep[7]; /* new files, a link, a FIFO, folders */
};

/* Sizes of the old files, in tree.old order: 100 bytes in all. */
static const size_t old_sizes[4] = {40, 30, 20, 10};

/*
 * Make scratch/<name>: old files (10 days) at every depth, new ones (1 day) beside them, and
 * an old link, an old FIFO and old folders, none of which a cleanup may touch.
 */
static struct tree make_tree(const char *name)
{
    struct tree tr = {0};
    char rel[128];
    tr.root = scratch_path(name);
    const char *old_rel[4] = {"a/b/c/ancient", "a/b/deep.bin", "a/old.txt", "top.log"};
    for (int i = 0; i < 4; i++) {
        snprintf(rel, sizeof rel, "%s/%s", name, old_rel[i]);
        tr.old[i] = write_file(rel, old_sizes[i]);
    }
    const char *new_rel[3] = {"new.txt", "a/fresh", "a/b/recent"};
    for (int i = 0; i < 3; i++) {
        snprintf(rel, sizeof rel, "%s/%s", name, new_rel[i]);
        tr.keep[i] = write_file(rel, 5);
        set_age(tr.keep[i], 1 * DAY_S);
    }
    snprintf(rel, sizeof rel, "%s/a/link-old", name);
    tr.keep[3] = scratch_path(rel);
    assert_int_equal(symlink("../top.log", tr.keep[3]), 0);
    snprintf(rel, sizeof rel, "%s/a/pipe", name);
    tr.keep[4] = scratch_path(rel);
    assert_int_equal(mkfifo(tr.keep[4], 0644), 0);
    snprintf(rel, sizeof rel, "%s/a/b/c", name);
    tr.keep[5] = scratch_path(rel);
    snprintf(rel, sizeof rel, "%s/a/empty", name);
    tr.keep[6] = scratch_path(rel);
    assert_int_equal(mkdir(tr.keep[6], 0755), 0);
    for (int i = 0; i < 4; i++)
        set_age(tr.old[i], 10 * DAY_S);
    for (int i = 3; i < 7; i++)
        set_age(tr.keep[i], 10 * DAY_S);
    return tr;
}

static void tree_free(struct tree *tr)
{
    free(tr->root);
    for (int i = 0; i < 4; i++)
        free(tr->old[i]);
    for (int i = 0; i < 7; i++)
        free(tr->keep[i]);
}

/* {"path": root, "older_than_days": 5} plus `extra` members (JSON text; caller frees). */
static char *cleanup_args(const char *root, const char *extra)
{
    char *text;
    assert_true(asprintf(&text, "{\"path\": \"%s\", \"older_than_days\": 5%s%s}", root,
                         extra[0] ? ", " : "", extra) > 0);
    return text;
}

/* Check a batch's args: root, dry_run and the files from old[first] on, count of them. */
static void assert_batch(const char *batch, const struct tree *tr, bool dry_run, int first,
                         int count)
{
    cJSON *b = cJSON_Parse(batch);
    assert_non_null(b);
    assert_string_equal(cJSON_GetObjectItem(b, "root")->valuestring, tr->root);
    assert_true(cJSON_IsBool(cJSON_GetObjectItem(b, "dry_run")));
    assert_int_equal(cJSON_IsTrue(cJSON_GetObjectItem(b, "dry_run")), dry_run);
    /* The cutoff is five days ago, give or take the time this test took. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double cutoff = cJSON_GetObjectItem(b, "cutoff")->valuedouble;
    assert_true(cutoff <= (double)now.tv_sec + 1 - 5 * DAY_S);
    assert_true(cutoff >= (double)now.tv_sec - 60 - 5 * DAY_S);
    const cJSON *f = cJSON_GetObjectItem(b, "files");
    assert_int_equal(cJSON_GetArraySize(f), count);
    for (int i = 0; i < count; i++)
        assert_string_equal(cJSON_GetArrayItem(f, i)->valuestring, tr->old[first + i]);
    cJSON_Delete(b);
}

static void test_cleanup_dry_run(void **state)
{
    struct tree tr = make_tree("dry");
    char *args = cleanup_args(tr.root, "\"batch_size\": 3, \"dry_run\": true");
    bgt_status merged;
    int failed;
    bgt_task *t = run_parallel(files, "files.cleanup", args, &merged, &failed);
    assert_int_equal(t->nsubtasks, 2);
    assert_batch(t->subtasks[0], &tr, true, 0, 3);
    assert_batch(t->subtasks[1], &tr, true, 3, 1);
    assert_int_equal(failed, 0);
    assert_int_equal(merged, BGT_OK);
    assert_json(t->result, "{\"deleted\": 4, \"bytes\": 100, \"skipped\": 0, \"errors\": 0, "
                           "\"batches\": 2, \"dry_run\": true}");
    task_free(t);

    /* One batch's own result counts its files and bytes. */
    bgt_status st;
    t = task_new(1);
    assert_int_equal(run_split(files, "files.cleanup", t, args), BGT_OK);
    bgt_task *s = run_subtask(files, "files.cleanup", 0, t->subtasks[0], &st);
    assert_int_equal(st, BGT_OK);
    assert_json(s->result, "{\"deleted\": 3, \"bytes\": 90, \"skipped\": 0, \"dry_run\": true, "
                           "\"errors\": []}");
    int n = atomic_load(&s->nprogress);
    assert_true(n >= 1);
    assert_true(s->progress[n - 1].current == 3 && s->progress[n - 1].total == 3);
    task_free(s);
    task_free(t);

    /* Nothing was deleted. */
    for (int i = 0; i < 4; i++)
        assert_true(exists(tr.old[i]));
    for (int i = 0; i < 7; i++)
        assert_true(exists(tr.keep[i]));
    free(args);
    tree_free(&tr);
}

static void test_cleanup_deletes(void **state)
{
    struct tree tr = make_tree("real");
    /* The root spelled with a trailing slash and a "." still names the same tree. */
    char *spelled;
    assert_true(asprintf(&spelled, "%s/./", tr.root) > 0);
    char *args = cleanup_args(spelled, "");
    bgt_status merged;
    int failed;
    bgt_task *t = run_parallel(files, "files.cleanup", args, &merged, &failed);
    /* The default batch size (100) holds all four. */
    assert_int_equal(t->nsubtasks, 1);
    assert_batch(t->subtasks[0], &tr, false, 0, 4);
    assert_int_equal(failed, 0);
    assert_int_equal(merged, BGT_OK);
    assert_json(t->result, "{\"deleted\": 4, \"bytes\": 100, \"skipped\": 0, \"errors\": 0, "
                           "\"batches\": 1, \"dry_run\": false}");
    task_free(t);
    for (int i = 0; i < 4; i++)
        if (exists(tr.old[i]))
            fail_msg("%s is old and was not deleted", tr.old[i]);
    for (int i = 0; i < 7; i++)
        if (!exists(tr.keep[i]))
            fail_msg("%s was deleted, and is not an old regular file", tr.keep[i]);

    /* Again: nothing is old any more, one empty batch, a success that deleted nothing. */
    t = run_parallel(files, "files.cleanup", args, &merged, &failed);
    assert_int_equal(t->nsubtasks, 1);
    assert_batch(t->subtasks[0], &tr, false, 0, 0);
    assert_int_equal(merged, BGT_OK);
    assert_json(t->result, "{\"deleted\": 0, \"bytes\": 0, \"skipped\": 0, \"errors\": 0, "
                           "\"batches\": 1, \"dry_run\": false}");
    task_free(t);

    /* older_than_days 0: everything regular is old, new files too. */
    free(args);
    assert_true(asprintf(&args, "{\"path\": \"%s\", \"older_than_days\": 0}", tr.root) > 0);
    t = run_parallel(files, "files.cleanup", args, &merged, &failed);
    assert_int_equal(merged, BGT_OK);
    assert_true(json_number(t->result, "deleted") == 3);
    for (int i = 0; i < 3; i++)
        assert_false(exists(tr.keep[i]));
    for (int i = 3; i < 7; i++)
        assert_true(exists(tr.keep[i]));
    task_free(t);
    free(args);
    free(spelled);
    tree_free(&tr);
}

static void test_cleanup_config(void **state)
{
    int rc;
    bgt_plugin *p = load_plugin("files", "{\"cleanup_batch_size\": 1}", &rc);
    assert_int_equal(rc, 0);
    struct tree tr = make_tree("config");
    char *args = cleanup_args(tr.root, "\"dry_run\": true");
    bgt_task *t = task_new(1);
    assert_int_equal(run_split(p, "files.cleanup", t, args), BGT_OK);
    assert_int_equal(t->nsubtasks, 4);
    for (int i = 0; i < 4; i++)
        assert_batch(t->subtasks[i], &tr, true, i, 1);
    task_free(t);

    /* The args win over the config. */
    free(args);
    args = cleanup_args(tr.root, "\"dry_run\": true, \"batch_size\": 2");
    t = task_new(1);
    assert_int_equal(run_split(p, "files.cleanup", t, args), BGT_OK);
    assert_int_equal(t->nsubtasks, 2);
    task_free(t);

    /* Batches past the host's tasks.max_subtasks: the message says what to change. */
    free(args);
    args = cleanup_args(tr.root, "\"batch_size\": 1");
    char want[PATH_MAX + 160];
    snprintf(want, sizeof want,
             "%s: more than the host's tasks.max_subtasks batches of 1 files; give a larger "
             "args.batch_size",
             tr.root);
    expect_split_failure(files, "files.cleanup", args, 3, want);
    unload_plugin(p);

    /* max_files caps the files one task deletes. */
    p = load_plugin("files", "{\"max_files\": 3}", &rc);
    assert_int_equal(rc, 0);
    snprintf(want, sizeof want,
             "%s holds more than 3 files to clean up (the files plugin's max_files)", tr.root);
    expect_split_failure(p, "files.cleanup", args, 0, want);
    unload_plugin(p);

    const char *bad[] = {"0", "10001", "2.5", "\"100\""};
    for (int i = 0; i < 4; i++) {
        char cfg[64];
        snprintf(cfg, sizeof cfg, "{\"cleanup_batch_size\": %s}", bad[i]);
        p = load_plugin("files", cfg, &rc);
        assert_int_not_equal(rc, 0);
        assert_int_equal(p->nhandlers, 0);
        assert_non_null(strstr(p->log, "cleanup_batch_size must be an integer 1..10000"));
        unload_plugin(p);
    }
    for (int i = 0; i < 4; i++)
        assert_true(exists(tr.old[i]));
    free(args);
    tree_free(&tr);
}

static void test_cleanup_bad_args(void **state)
{
    const char *h = "files.cleanup";
    const char *path = "args.path must be an absolute path (the directory to clean up)";
    expect_split_failure(files, h, "{}", 0, path);
    expect_split_failure(files, h, "[]", 0, "args must be a JSON object");
    expect_split_failure(files, h, "{\"path\": 5, \"older_than_days\": 1}", 0, path);
    expect_split_failure(files, h, "{\"path\": \"build/tmp\", \"older_than_days\": 1}", 0, path);
    expect_split_failure(files, h, "{\"path\": \"\", \"older_than_days\": 1}", 0, path);

    char *dir = scratch_path("args");
    mkdir(dir, 0755);
    char args[PATH_MAX + 128], want[PATH_MAX + 160];
    const char *days = "args.older_than_days must be a number >= 0 (the age, in days, from "
                       "which a file is deleted)";
    const char *bad_days[] = {"", ", \"older_than_days\": -1", ", \"older_than_days\": \"1\"",
                              ", \"older_than_days\": null"};
    for (int i = 0; i < 4; i++) {
        snprintf(args, sizeof args, "{\"path\": \"%s\"%s}", dir, bad_days[i]);
        expect_split_failure(files, h, args, 0, days);
    }
    const char *bad_bs[] = {"0", "10001", "2.5", "\"10\""};
    for (int i = 0; i < 4; i++) {
        snprintf(args, sizeof args, "{\"path\": \"%s\", \"older_than_days\": 1, "
                                    "\"batch_size\": %s}", dir, bad_bs[i]);
        expect_split_failure(files, h, args, 0, "args.batch_size must be an integer 1..10000");
    }
    snprintf(args, sizeof args, "{\"path\": \"%s\", \"older_than_days\": 1, \"dry_run\": 1}",
             dir);
    expect_split_failure(files, h, args, 0, "args.dry_run must be true or false");

    /* Not there, not a folder. */
    char *missing = scratch_path("args/none");
    snprintf(args, sizeof args, "{\"path\": \"%s\", \"older_than_days\": 1}", missing);
    snprintf(want, sizeof want, "cannot open %s: No such file or directory", missing);
    expect_split_failure(files, h, args, 0, want);
    char *file = write_file("args/file", 1);
    snprintf(args, sizeof args, "{\"path\": \"%s\", \"older_than_days\": 1}", file);
    snprintf(want, sizeof want, "args.path %s is not a directory", file);
    expect_split_failure(files, h, args, 0, want);

    /* The root of the filesystem, however it is spelled, and with the message saying why. */
    char *to_root = scratch_path("args/to-root");
    assert_int_equal(symlink("/", to_root), 0);
    const char *roots[] = {"/", "//", "/.", "/tmp/..", to_root};
    for (int i = 0; i < 5; i++) {
        snprintf(args, sizeof args, "{\"path\": \"%s\", \"older_than_days\": 3650}", roots[i]);
        snprintf(want, sizeof want,
                 "refusing to clean up %s: it is the root of the filesystem, and deleting every "
                 "old file on the machine is never what was meant",
                 roots[i]);
        expect_split_failure(files, h, args, 0, want);
    }
    free(dir);
    free(missing);
    free(file);
    free(to_root);
}

/* The subtask args of a batch, written by hand (caller frees). */
static char *batch_args(const char *root, bool dry_run, const char *const *paths, int n)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "root", root);
    cJSON_AddNumberToObject(b, "cutoff", (double)time(NULL) - 5 * DAY_S);
    cJSON_AddBoolToObject(b, "dry_run", dry_run);
    cJSON *f = cJSON_AddArrayToObject(b, "files");
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(f, cJSON_CreateString(paths[i]));
    char *text = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    return text;
}

static void test_cleanup_changed_since_split(void **state)
{
    struct tree tr = make_tree("changed");
    char *args = cleanup_args(tr.root, "");
    bgt_task *t = task_new(1);
    assert_int_equal(run_split(files, "files.cleanup", t, args), BGT_OK);
    assert_int_equal(t->nsubtasks, 1);

    /* Between the split and the run: one file vanishes, one is written to, one becomes a
     * folder. None of them is an error, and none is deleted; the fourth still goes. */
    assert_int_equal(unlink(tr.old[2]), 0);
    set_age(tr.old[1], 0);
    assert_int_equal(unlink(tr.old[3]), 0);
    assert_int_equal(mkdir(tr.old[3], 0755), 0);
    set_age(tr.old[3], 10 * DAY_S);
    bgt_status st;
    bgt_task *s = run_subtask(files, "files.cleanup", 0, t->subtasks[0], &st);
    assert_int_equal(st, BGT_OK);
    assert_json(s->result, "{\"deleted\": 1, \"bytes\": 40, \"skipped\": 3, \"dry_run\": false, "
                           "\"errors\": []}");
    assert_false(exists(tr.old[0]));
    assert_true(exists(tr.old[1]));
    assert_true(exists(tr.old[3]));
    task_free(s);

    /* Run again (a retry after a crash): everything is skipped, nothing fails. */
    s = run_subtask(files, "files.cleanup", 0, t->subtasks[0], &st);
    assert_int_equal(st, BGT_OK);
    assert_true(json_number(s->result, "deleted") == 0);
    assert_true(json_number(s->result, "skipped") == 4);
    task_free(s);
    task_free(t);
    free(args);
    tree_free(&tr);
}

static void test_cleanup_stays_inside(void **state)
{
    /* Files outside the root, paths that climb out, and a folder swapped for a link to
     * elsewhere: each is an error of the batch, and nothing outside is touched. */
    struct tree tr = make_tree("inside");
    char *outside = write_file("outside/victim", 8);
    set_age(outside, 10 * DAY_S);
    char *swapped = scratch_path("inside/a/b");
    char *moved = scratch_path("inside-b");
    assert_int_equal(rename(swapped, moved), 0);
    char *outdir = scratch_path("outside");
    assert_int_equal(symlink(outdir, swapped), 0);
    char *via_link = scratch_path("inside/a/b/victim");
    char *climb = scratch_path("inside/a/../../outside/victim");

    const char *paths[] = {outside, climb, via_link};
    char *args = batch_args(tr.root, false, paths, 3);
    bgt_status st;
    bgt_task *s = run_subtask(files, "files.cleanup", 0, args, &st);
    assert_int_equal(st, BGT_FAILED);
    char want[PATH_MAX + 200];
    snprintf(want, sizeof want,
             "every file of this batch failed (3); the first: cannot delete %s: not under the "
             "folder being cleaned up",
             outside);
    assert_string_equal(s->error, want);
    assert_true(exists(outside));
    task_free(s);
    free(args);

    /* One good file among them: the batch succeeds and lists the two errors. */
    const char *mixed[] = {via_link, tr.old[3], climb};
    args = batch_args(tr.root, false, mixed, 3);
    s = run_subtask(files, "files.cleanup", 0, args, &st);
    assert_int_equal(st, BGT_OK);
    cJSON *r = cJSON_Parse(s->result);
    assert_true(cJSON_GetObjectItem(r, "deleted")->valuedouble == 1);
    const cJSON *errors = cJSON_GetObjectItem(r, "errors");
    assert_int_equal(cJSON_GetArraySize(errors), 2);
    snprintf(want, sizeof want, "cannot delete %s: Not a directory", via_link);
    assert_string_equal(cJSON_GetArrayItem(errors, 0)->valuestring, want);
    snprintf(want, sizeof want, "cannot delete %s: not a plain path under the folder", climb);
    assert_string_equal(cJSON_GetArrayItem(errors, 1)->valuestring, want);
    cJSON_Delete(r);
    assert_true(exists(outside));
    assert_false(exists(tr.old[3]));
    task_free(s);
    free(args);

    /* The merge counts a batch's errors. */
    bgt_task *t = task_new(1);
    assert_int_equal(run_merge(files, "files.cleanup", t,
                               "[{\"deleted\": 1, \"bytes\": 10, \"skipped\": 2, "
                               "\"errors\": [\"a\", \"b\"], \"dry_run\": false}, null, "
                               "{\"deleted\": 2, \"bytes\": 5, \"skipped\": 0, \"errors\": [], "
                               "\"dry_run\": false}]"),
                     BGT_OK);
    assert_json(t->result, "{\"deleted\": 3, \"bytes\": 15, \"skipped\": 2, \"errors\": 2, "
                           "\"batches\": 3, \"dry_run\": false}");
    task_free(t);

    /* Subtask args that did not come from the split. */
    const char *bad[] = {"{}", "{\"root\": \"/\", \"cutoff\": 0, \"files\": []}",
                         "{\"root\": \"rel\", \"cutoff\": 0, \"files\": []}",
                         "{\"root\": \"/x\", \"files\": []}",
                         "{\"root\": \"/x\", \"cutoff\": 0, \"dry_run\": 1, \"files\": []}"};
    for (int i = 0; i < 5; i++) {
        s = run_subtask(files, "files.cleanup", 0, bad[i], &st);
        assert_int_equal(st, BGT_FAILED);
        assert_string_equal(s->error,
                            "subtask args must be {\"root\": dir, \"cutoff\": seconds, "
                            "\"dry_run\": bool, \"files\": [paths]}, as files.cleanup's split "
                            "writes them");
        task_free(s);
    }
    free(outside);
    free(swapped);
    free(moved);
    free(outdir);
    free(via_link);
    free(climb);
    tree_free(&tr);
}

static void test_cleanup_cancel(void **state)
{
    struct tree tr = make_tree("cancel");
    char *args = cleanup_args(tr.root, "");

    /* Cancelled during the listing. */
    bgt_task *t = task_new(1);
    atomic_store(&t->cancel, true);
    assert_int_equal(run_split(files, "files.cleanup", t, args), BGT_CANCELLED);
    assert_int_equal(t->nsubtasks, 0);
    task_free(t);

    /* Cancelled between files: the first goes, the rest stay, and no result. */
    t = task_new(1);
    assert_int_equal(run_split(files, "files.cleanup", t, args), BGT_OK);
    bgt_task *s = task_new(1);
    s->subtask = 0;
    s->cancel_after_polls = 2;
    assert_int_equal(run_handler(files, "files.cleanup", s, t->subtasks[0]), BGT_CANCELLED);
    assert_null(s->result);
    assert_false(exists(tr.old[0]));
    for (int i = 1; i < 4; i++)
        assert_true(exists(tr.old[i]));
    task_free(s);
    task_free(t);
    free(args);
    tree_free(&tr);
}

/*
 * The unlink failures, as the current user (who must not be able to write into `locked`):
 * a batch whose every file fails fails, naming the first; a batch with one deletable file
 * succeeds and lists the other. Returns 0 when all holds, else 1 after saying what on stderr:
 * an exit code, because this also runs in a child process.
 */
static int unlink_cases(const char *root, const char *f1, const char *f2, const char *free_file)
{
    const char *all[] = {f1, f2};
    char *args = batch_args(root, false, all, 2);
    bgt_status st;
    bgt_task *s = task_new(1);
    s->subtask = 0;
    s->handler = "files.cleanup";
    const bgt_handler_def *h = find_handler(files, "files.cleanup");
    cJSON *a = cJSON_Parse(args);
    st = h->run(s, a, h->udata);
    cJSON_Delete(a);
    free(args);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want,
             "every file of this batch failed (2); the first: cannot delete %s: Permission denied",
             f1);
    int rc = 0;
    if (st != BGT_FAILED || s->error == NULL || strcmp(s->error, want) != 0) {
        fprintf(stderr, "all fail: status %d, error \"%s\", want \"%s\"\n", st,
                s->error ? s->error : "none", want);
        rc = 1;
    }
    task_free(s);

    const char *mixed[] = {f1, free_file};
    args = batch_args(root, false, mixed, 2);
    s = task_new(1);
    s->subtask = 1;
    a = cJSON_Parse(args);
    st = h->run(s, a, h->udata);
    cJSON_Delete(a);
    free(args);
    snprintf(want, sizeof want,
             "{\"deleted\":1,\"bytes\":3,\"skipped\":0,\"dry_run\":false,"
             "\"errors\":[\"cannot delete %s: Permission denied\"]}",
             f1);
    if (st != BGT_OK || s->result == NULL || strcmp(s->result, want) != 0) {
        fprintf(stderr, "mixed: status %d, result %s, want %s\n", st,
                s->result ? s->result : "none", want);
        rc = 1;
    }
    task_free(s);
    return rc;
}

static void test_cleanup_unlink_fails(void **state)
{
    /* perm/locked (0555, or root's 0755 seen by nobody) holds two old files;
     * perm/open (0777) one. */
    char *f1 = write_file("perm/locked/f1", 1);
    char *f2 = write_file("perm/locked/f2", 2);
    char *free_file = write_file("perm/open/f3", 3);
    char *root = scratch_path("perm");
    char *locked = scratch_path("perm/locked"), *open_dir = scratch_path("perm/open");
    set_age(f1, 10 * DAY_S);
    set_age(f2, 10 * DAY_S);
    set_age(free_file, 10 * DAY_S);
    assert_int_equal(chmod(open_dir, 0777), 0);

    int rc;
    if (geteuid() != 0) {
        assert_int_equal(chmod(locked, 0555), 0);
        rc = unlink_cases(root, f1, f2, free_file);
        chmod(locked, 0755);
    } else {
        /* Root may delete anything: look as user nobody (65534), from a child process. */
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            if (setgroups(0, NULL) != 0 || setresgid(65534, 65534, 65534) != 0 ||
                setresuid(65534, 65534, 65534) != 0)
                _exit(78);
            if (access(locked, X_OK) != 0)
                _exit(77);
            _exit(unlink_cases(root, f1, f2, free_file));
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        rc = WEXITSTATUS(status);
        if (rc == 78 || rc == 77) {
            fprintf(stderr, "test_cleanup_unlink_fails: running as root, and %s: skipped\n",
                    rc == 78 ? "cannot switch to uid 65534"
                             : "uid 65534 cannot reach the scratch folder");
            rc = 0;
        } else {
            assert_false(exists(free_file));
        }
    }
    assert_int_equal(rc, 0);
    assert_true(exists(f1));
    assert_true(exists(f2));
    free(f1);
    free(f2);
    free(free_file);
    free(root);
    free(locked);
    free(open_dir);
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
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
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
    return run_subtask(net, "net.probe", 0, args, st);
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
    task_free(t);

    /* A name, looked up by the resolver (localhost is in /etc/hosts). */
    snprintf(target, sizeof target, "localhost:%d", up_port);
    t = probe(target, 2000, &st);
    if (st != BGT_OK)
        fail_msg("%s: status %d, error %s", target, st, t->error ? t->error : "none");
    task_free(t);

    snprintf(target, sizeof target, "127.0.0.1:%d", down_port);
    t = probe(target, 1000, &st);
    assert_int_equal(st, BGT_FAILED);
    snprintf(want, sizeof want, "%s: Connection refused", target);
    assert_string_equal(t->error, want);
    assert_null(t->result);
    task_free(t);

    /* A name that does not resolve: the message starts with the target (the resolver says
     * "not known", or, without a DNS server to ask, the lookup times out). */
    t = probe("nosuch.invalid:80", 2000, &st);
    assert_int_equal(st, BGT_FAILED);
    assert_non_null(t->error);
    if (strncmp(t->error, "nosuch.invalid:80: cannot resolve nosuch.invalid: ", 50) != 0 &&
        strcmp(t->error, "nosuch.invalid:80: timed out after 2000 ms looking up "
                         "nosuch.invalid") != 0)
        fail_msg("unexpected error: %s", t->error);
    task_free(t);

    /* The whole task: up, down, up; the merge keeps the order, null for the one down. */
    char args[256];
    snprintf(args, sizeof args,
             "{\"targets\": [\"127.0.0.1:%d\", \"127.0.0.1:%d\", \"localhost:%d\"]}", up_port,
             down_port, up_port);
    bgt_status merged;
    int failed;
    t = run_parallel(net, "net.probe", args, &merged, &failed);
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
    task_free(t);
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
    double t0 = now_s();
    bgt_task *t = probe(target, 200, &st);
    double took = now_s() - t0;
    assert_int_equal(st, BGT_FAILED);
    snprintf(want, sizeof want, "%s: timed out after 200 ms", target);
    assert_string_equal(t->error, want);
    if (took < 0.19 || took > 2.0)
        fail_msg("a 200 ms timeout took %.3f s", took);
    task_free(t);

    /* Cancelled while it waits for the connect: it stops within a few slices. */
    t = task_new(1);
    t->subtask = 0;
    t->cancel_after_polls = 3;
    char args[128];
    snprintf(args, sizeof args, "{\"target\": \"%s\", \"timeout_ms\": 60000}", target);
    t0 = now_s();
    assert_int_equal(run_handler(net, "net.probe", t, args), BGT_CANCELLED);
    took = now_s() - t0;
    if (took > 1.0)
        fail_msg("net.probe took %.3f s to see the cancel (slices are 50 ms)", took);
    assert_null(t->result);
    task_free(t);
    close_all(clients, nclients);
    close(fd);
}

static void test_probe_split(void **state)
{
    bgt_task *t = task_new(1);
    assert_int_equal(run_split(net, "net.probe", t,
                               "{\"targets\": [\"10.0.0.5:22\", \"db.example:5432\", "
                               "\"[::1]:80\", \"[fe80::1%eth0]:8080\"], \"timeout_ms\": 300}"),
                     BGT_OK);
    assert_int_equal(t->nsubtasks, 4);
    assert_json(t->subtasks[0], "{\"target\": \"10.0.0.5:22\", \"timeout_ms\": 300}");
    assert_json(t->subtasks[2], "{\"target\": \"[::1]:80\", \"timeout_ms\": 300}");
    assert_json(t->subtasks[3], "{\"target\": \"[fe80::1%eth0]:8080\", \"timeout_ms\": 300}");
    task_free(t);

    t = task_new(1);
    assert_int_equal(run_split(net, "net.probe", t, "{\"targets\": [\"h:65535\"]}"), BGT_OK);
    assert_json(t->subtasks[0], "{\"target\": \"h:65535\", \"timeout_ms\": 1000}");
    task_free(t);

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
                 cJSON_GetArrayItem(cJSON_GetObjectItem(a, "targets"), 1)->valuestring,
                 bad[i].why);
        cJSON_Delete(a);
        assert_int_equal(expect_split_failure(net, "net.probe", args, 0, want), 0);
    }

    const char *targets = "args.targets must be an array of 1..10000 \"host:port\" strings";
    expect_split_failure(net, "net.probe", "{}", 0, targets);
    expect_split_failure(net, "net.probe", "[]", 0, targets);
    expect_split_failure(net, "net.probe", "{\"targets\": []}", 0, targets);
    expect_split_failure(net, "net.probe", "{\"targets\": \"h:1\"}", 0, targets);
    expect_split_failure(net, "net.probe", "{\"targets\": [\"h:1\", 5]}", 0,
                         "args.targets[1] must be a \"host:port\" string");
    const char *timeout = "args.timeout_ms must be an integer 1..60000";
    expect_split_failure(net, "net.probe", "{\"targets\": [\"h:1\"], \"timeout_ms\": 0}", 0,
                         timeout);
    expect_split_failure(net, "net.probe", "{\"targets\": [\"h:1\"], \"timeout_ms\": 60001}", 0,
                         timeout);
    expect_split_failure(net, "net.probe", "{\"targets\": [\"h:1\"], \"timeout_ms\": \"1\"}", 0,
                         timeout);
    expect_split_failure(net, "net.probe", "{\"targets\": [\"h:1\", \"h:2\", \"h:3\"]}", 2,
                         "3 targets are more subtasks than the host accepts "
                         "(tasks.max_subtasks)");

    /* 10001 targets are too many, 10000 are fine (the host's own limit aside). */
    cJSON *a = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(a, "targets");
    for (int i = 0; i < 10000; i++)
        cJSON_AddItemToArray(arr, cJSON_CreateString("h:1"));
    char *text = cJSON_PrintUnformatted(a);
    t = task_new(1);
    assert_int_equal(run_split(net, "net.probe", t, text), BGT_OK);
    assert_int_equal(t->nsubtasks, 10000);
    task_free(t);
    free(text);
    cJSON_AddItemToArray(arr, cJSON_CreateString("h:1"));
    text = cJSON_PrintUnformatted(a);
    expect_split_failure(net, "net.probe", text, 0, targets);
    free(text);
    cJSON_Delete(a);

    /* The run checks its own args too. */
    bgt_status st;
    t = run_subtask(net, "net.probe", 0, "{\"target\": 5}", &st);
    assert_int_equal(st, BGT_FAILED);
    assert_string_equal(t->error, "args.target must be a \"host:port\" string");
    task_free(t);
    t = run_subtask(net, "net.probe", 0, "{\"target\": \"x\"}", &st);
    assert_int_equal(st, BGT_FAILED);
    assert_string_equal(t->error, "args.target \"x\": expected host:port");
    task_free(t);
}

static void test_probe_merge(void **state)
{
    bgt_task *t = task_new(1);
    const char *results = "[{\"target\": \"a:1\", \"ok\": true, \"latency_ms\": 0.5}, null, "
                          "null]";
    assert_int_equal(run_merge(net, "net.probe", t, results), BGT_OK);
    assert_json(t->result, "{\"up\": 1, \"down\": 2, \"results\": [{\"target\": \"a:1\", "
                           "\"ok\": true, \"latency_ms\": 0.5}, null, null]}");
    task_free(t);

    /* Over the host's result limit: the message names the setting. */
    t = task_new(1);
    t->max_result = 20;
    assert_int_equal(run_merge(net, "net.probe", t, results), BGT_FAILED);
    assert_string_equal(t->error, "the results of 3 targets are larger than the host accepts "
                                  "(tasks.max_result_bytes)");
    task_free(t);
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
        cmocka_unit_test(test_cleanup_dry_run),
        cmocka_unit_test(test_cleanup_deletes),
        cmocka_unit_test(test_cleanup_config),
        cmocka_unit_test(test_cleanup_bad_args),
        cmocka_unit_test(test_cleanup_changed_since_split),
        cmocka_unit_test(test_cleanup_stays_inside),
        cmocka_unit_test(test_cleanup_cancel),
        cmocka_unit_test(test_cleanup_unlink_fails),
        cmocka_unit_test(test_probe_up_and_down),
        cmocka_unit_test(test_probe_timeout_and_cancel),
        cmocka_unit_test(test_probe_split),
        cmocka_unit_test(test_probe_merge),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/*
 * test_cleanup.c - files.cleanup, the files plugin's parallel handler, against the fake host
 * of fake_host.h: its split, its batches and its merge, on trees made under $BUILD/tmp with
 * mtimes set by utimensat, and the guard that keeps it inside the folders the plugin's
 * config allows (allowed_roots), whoever wrote the subtask args.
 *
 * The plugin is loaded with allowed_roots = [the scratch folder]; the guard's tests load
 * their own copies with other lists.
 */
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
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

#define DAY_S 86400.0

static fake_plugin *files;
static char scratch[PATH_MAX]; /* realpath of $BUILD/tmp/test_cleanup-XXXXXX */

/* ---- helpers ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* The files plugin's config with allowed_roots = [root] (JSON text; caller frees). */
static char *allowed_config(const char *root)
{
    char *text;
    assert_true(asprintf(&text, "{\"allowed_roots\": [\"%s\"]}", root) > 0);
    return text;
}

/* The files plugin loaded with allowed_roots = [the scratch folder] and more settings (JSON
 * members, "" for none); init must succeed. */
static fake_plugin *load_files(const char *more)
{
    char *config;
    assert_true(asprintf(&config, "{\"allowed_roots\": [\"%s\"]%s%s}", scratch, more[0] ? ", " : "",
                         more) > 0);
    int rc;
    fake_plugin *p = fake_load_plugin("files", config, &rc);
    assert_int_equal(rc, 0);
    free(config);
    return p;
}

static int group_setup(void **state)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/tmp", fake_build_dir());
    mkdir(dir, 0755);
    snprintf(dir, sizeof dir, "%s/tmp/test_cleanup-XXXXXX", fake_build_dir());
    assert_non_null(mkdtemp(dir));
    /* files.cleanup wants absolute paths, and names folders by their resolved path. */
    assert_non_null(realpath(dir, scratch));
    chmod(scratch, 0755); /* the permission case looks at it as another user */
    char *config = allowed_config(scratch);
    int rc;
    files = fake_load_plugin("files", config, &rc);
    assert_int_equal(rc, 0);
    free(config);
    return 0;
}

static int group_teardown(void **state)
{
    fake_unload_plugin(files);
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

/* ---- split, batches, merge ---- */

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
    bgt_task *t = fake_run_parallel(files, "files.cleanup", args, &merged, &failed);
    assert_int_equal(t->nsubtasks, 2);
    assert_batch(t->subtasks[0], &tr, true, 0, 3);
    assert_batch(t->subtasks[1], &tr, true, 3, 1);
    assert_int_equal(failed, 0);
    assert_int_equal(merged, BGT_OK);
    fake_assert_json(t->result, "{\"deleted\": 4, \"bytes\": 100, \"skipped\": 0, \"errors\": 0, "
                                "\"batches\": 2, \"dry_run\": true}");
    fake_task_free(t);

    /* One batch's own result counts its files and bytes. */
    bgt_status st;
    t = fake_task_new(1);
    assert_int_equal(fake_run_split(files, "files.cleanup", t, args), BGT_OK);
    bgt_task *s = fake_run_subtask(files, "files.cleanup", 0, t->subtasks[0], &st);
    assert_int_equal(st, BGT_OK);
    fake_assert_json(s->result,
                     "{\"deleted\": 3, \"bytes\": 90, \"skipped\": 0, \"dry_run\": true, "
                     "\"errors\": []}");
    int n = atomic_load(&s->nprogress);
    assert_true(n >= 1);
    assert_true(s->progress[n - 1].current == 3 && s->progress[n - 1].total == 3);
    fake_task_free(s);
    fake_task_free(t);

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
    bgt_task *t = fake_run_parallel(files, "files.cleanup", args, &merged, &failed);
    /* The default batch size (100) holds all four. */
    assert_int_equal(t->nsubtasks, 1);
    assert_batch(t->subtasks[0], &tr, false, 0, 4);
    assert_int_equal(failed, 0);
    assert_int_equal(merged, BGT_OK);
    fake_assert_json(t->result, "{\"deleted\": 4, \"bytes\": 100, \"skipped\": 0, \"errors\": 0, "
                                "\"batches\": 1, \"dry_run\": false}");
    fake_task_free(t);
    for (int i = 0; i < 4; i++)
        if (exists(tr.old[i]))
            fail_msg("%s is old and was not deleted", tr.old[i]);
    for (int i = 0; i < 7; i++)
        if (!exists(tr.keep[i]))
            fail_msg("%s was deleted, and is not an old regular file", tr.keep[i]);

    /* Again: nothing is old any more, one empty batch, a success that deleted nothing. */
    t = fake_run_parallel(files, "files.cleanup", args, &merged, &failed);
    assert_int_equal(t->nsubtasks, 1);
    assert_batch(t->subtasks[0], &tr, false, 0, 0);
    assert_int_equal(merged, BGT_OK);
    fake_assert_json(t->result, "{\"deleted\": 0, \"bytes\": 0, \"skipped\": 0, \"errors\": 0, "
                                "\"batches\": 1, \"dry_run\": false}");
    fake_task_free(t);

    /* older_than_days 0: everything regular is old, new files too. */
    free(args);
    assert_true(asprintf(&args, "{\"path\": \"%s\", \"older_than_days\": 0}", tr.root) > 0);
    t = fake_run_parallel(files, "files.cleanup", args, &merged, &failed);
    assert_int_equal(merged, BGT_OK);
    assert_true(json_number(t->result, "deleted") == 3);
    for (int i = 0; i < 3; i++)
        assert_false(exists(tr.keep[i]));
    for (int i = 3; i < 7; i++)
        assert_true(exists(tr.keep[i]));
    fake_task_free(t);
    free(args);
    free(spelled);
    tree_free(&tr);
}

static void test_cleanup_config(void **state)
{
    int rc;
    fake_plugin *p = load_files("\"cleanup_batch_size\": 1");
    struct tree tr = make_tree("config");
    char *args = cleanup_args(tr.root, "\"dry_run\": true");
    bgt_task *t = fake_task_new(1);
    assert_int_equal(fake_run_split(p, "files.cleanup", t, args), BGT_OK);
    assert_int_equal(t->nsubtasks, 4);
    for (int i = 0; i < 4; i++)
        assert_batch(t->subtasks[i], &tr, true, i, 1);
    fake_task_free(t);

    /* The args win over the config. */
    free(args);
    args = cleanup_args(tr.root, "\"dry_run\": true, \"batch_size\": 2");
    t = fake_task_new(1);
    assert_int_equal(fake_run_split(p, "files.cleanup", t, args), BGT_OK);
    assert_int_equal(t->nsubtasks, 2);
    fake_task_free(t);

    /* Batches past the host's tasks.max_subtasks: the message says what to change. */
    free(args);
    args = cleanup_args(tr.root, "\"batch_size\": 1");
    char want[PATH_MAX + 160];
    snprintf(want, sizeof want,
             "%s: more than the host's tasks.max_subtasks batches of 1 files; give a larger "
             "args.batch_size",
             tr.root);
    fake_expect_split_failure(files, "files.cleanup", args, 3, want);
    fake_unload_plugin(p);

    /* max_files caps the files one task deletes. */
    p = load_files("\"max_files\": 3");
    snprintf(want, sizeof want,
             "%s holds more than 3 files to clean up (the files plugin's max_files)", tr.root);
    fake_expect_split_failure(p, "files.cleanup", args, 0, want);
    fake_unload_plugin(p);

    const char *bad[] = {"0", "10001", "2.5", "\"100\""};
    for (int i = 0; i < 4; i++) {
        char cfg[64];
        snprintf(cfg, sizeof cfg, "{\"cleanup_batch_size\": %s}", bad[i]);
        p = fake_load_plugin("files", cfg, &rc);
        assert_int_not_equal(rc, 0);
        assert_int_equal(p->nhandlers, 0);
        assert_non_null(strstr(p->log, "cleanup_batch_size must be an integer 1..10000"));
        fake_unload_plugin(p);
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
    fake_expect_split_failure(files, h, "{}", 0, path);
    fake_expect_split_failure(files, h, "[]", 0, "args must be a JSON object");
    fake_expect_split_failure(files, h, "{\"path\": 5, \"older_than_days\": 1}", 0, path);
    fake_expect_split_failure(files, h, "{\"path\": \"build/tmp\", \"older_than_days\": 1}", 0,
                              path);
    fake_expect_split_failure(files, h, "{\"path\": \"\", \"older_than_days\": 1}", 0, path);

    char *dir = scratch_path("args");
    mkdir(dir, 0755);
    char args[PATH_MAX + 128], want[PATH_MAX + 160];
    const char *days = "args.older_than_days must be a number >= 0 (the age, in days, from "
                       "which a file is deleted)";
    const char *bad_days[] = {"", ", \"older_than_days\": -1", ", \"older_than_days\": \"1\"",
                              ", \"older_than_days\": null"};
    for (int i = 0; i < 4; i++) {
        snprintf(args, sizeof args, "{\"path\": \"%s\"%s}", dir, bad_days[i]);
        fake_expect_split_failure(files, h, args, 0, days);
    }
    const char *bad_bs[] = {"0", "10001", "2.5", "\"10\""};
    for (int i = 0; i < 4; i++) {
        snprintf(args, sizeof args,
                 "{\"path\": \"%s\", \"older_than_days\": 1, "
                 "\"batch_size\": %s}",
                 dir, bad_bs[i]);
        fake_expect_split_failure(files, h, args, 0, "args.batch_size must be an integer 1..10000");
    }
    snprintf(args, sizeof args, "{\"path\": \"%s\", \"older_than_days\": 1, \"dry_run\": 1}", dir);
    fake_expect_split_failure(files, h, args, 0, "args.dry_run must be true or false");

    /* Not there, not a folder. */
    char *missing = scratch_path("args/none");
    snprintf(args, sizeof args, "{\"path\": \"%s\", \"older_than_days\": 1}", missing);
    snprintf(want, sizeof want, "cannot open %s: No such file or directory", missing);
    fake_expect_split_failure(files, h, args, 0, want);
    char *file = write_file("args/file", 1);
    snprintf(args, sizeof args, "{\"path\": \"%s\", \"older_than_days\": 1}", file);
    snprintf(want, sizeof want, "args.path %s is not a directory", file);
    fake_expect_split_failure(files, h, args, 0, want);

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
        fake_expect_split_failure(files, h, args, 0, want);
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
    bgt_task *t = fake_task_new(1);
    assert_int_equal(fake_run_split(files, "files.cleanup", t, args), BGT_OK);
    assert_int_equal(t->nsubtasks, 1);

    /* Between the split and the run: one file vanishes, one is written to, one becomes a
     * folder. None of them is an error, and none is deleted; the fourth still goes. */
    assert_int_equal(unlink(tr.old[2]), 0);
    set_age(tr.old[1], 0);
    assert_int_equal(unlink(tr.old[3]), 0);
    assert_int_equal(mkdir(tr.old[3], 0755), 0);
    set_age(tr.old[3], 10 * DAY_S);
    bgt_status st;
    bgt_task *s = fake_run_subtask(files, "files.cleanup", 0, t->subtasks[0], &st);
    assert_int_equal(st, BGT_OK);
    fake_assert_json(s->result,
                     "{\"deleted\": 1, \"bytes\": 40, \"skipped\": 3, \"dry_run\": false, "
                     "\"errors\": []}");
    assert_false(exists(tr.old[0]));
    assert_true(exists(tr.old[1]));
    assert_true(exists(tr.old[3]));
    fake_task_free(s);

    /* Run again (a retry after a crash): everything is skipped, nothing fails. */
    s = fake_run_subtask(files, "files.cleanup", 0, t->subtasks[0], &st);
    assert_int_equal(st, BGT_OK);
    assert_true(json_number(s->result, "deleted") == 0);
    assert_true(json_number(s->result, "skipped") == 4);
    fake_task_free(s);
    fake_task_free(t);
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
    bgt_task *s = fake_run_subtask(files, "files.cleanup", 0, args, &st);
    assert_int_equal(st, BGT_FAILED);
    char want[PATH_MAX + 200];
    snprintf(want, sizeof want,
             "every file of this batch failed (3); the first: cannot delete %s: not under the "
             "folder being cleaned up",
             outside);
    assert_string_equal(s->error, want);
    assert_true(exists(outside));
    fake_task_free(s);
    free(args);

    /* One good file among them: the batch succeeds and lists the two errors. */
    const char *mixed[] = {via_link, tr.old[3], climb};
    args = batch_args(tr.root, false, mixed, 3);
    s = fake_run_subtask(files, "files.cleanup", 0, args, &st);
    assert_int_equal(st, BGT_OK);
    cJSON *r = cJSON_Parse(s->result);
    assert_true(cJSON_GetObjectItem(r, "deleted")->valuedouble == 1);
    const cJSON *errors = cJSON_GetObjectItem(r, "errors");
    assert_int_equal(cJSON_GetArraySize(errors), 2);
    snprintf(want, sizeof want, "cannot delete %s: not under the folder being cleaned up",
             via_link);
    assert_string_equal(cJSON_GetArrayItem(errors, 0)->valuestring, want);
    snprintf(want, sizeof want, "cannot delete %s: not under the folder being cleaned up", climb);
    assert_string_equal(cJSON_GetArrayItem(errors, 1)->valuestring, want);
    cJSON_Delete(r);
    assert_true(exists(outside));
    assert_false(exists(tr.old[3]));
    fake_task_free(s);
    free(args);

    /* The merge counts a batch's errors. */
    bgt_task *t = fake_task_new(1);
    assert_int_equal(
        fake_run_merge(files, "files.cleanup", t,
                       "[{\"deleted\": 1, \"bytes\": 10, \"skipped\": 2, "
                       "\"errors\": [\"a\", \"b\"], \"dry_run\": false}, null, "
                       "{\"deleted\": 2, \"bytes\": 5, \"skipped\": 0, \"errors\": [], "
                       "\"dry_run\": false}]"),
        BGT_OK);
    fake_assert_json(t->result, "{\"deleted\": 3, \"bytes\": 15, \"skipped\": 2, \"errors\": 2, "
                                "\"batches\": 3, \"dry_run\": false}");
    fake_task_free(t);

    /* Subtask args that did not come from the split. */
    const char *bad[] = {"{}", "{\"root\": \"rel\", \"cutoff\": 0, \"files\": []}",
                         "{\"root\": \"/x\", \"files\": []}",
                         "{\"root\": \"/x\", \"cutoff\": 0, \"dry_run\": 1, \"files\": []}"};
    for (int i = 0; i < 4; i++) {
        s = fake_run_subtask(files, "files.cleanup", 0, bad[i], &st);
        assert_int_equal(st, BGT_FAILED);
        assert_string_equal(s->error,
                            "subtask args must be {\"root\": dir, \"cutoff\": seconds, "
                            "\"dry_run\": bool, \"files\": [paths]}, as files.cleanup's split "
                            "writes them");
        fake_task_free(s);
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
    bgt_task *t = fake_task_new(1);
    atomic_store(&t->cancel, true);
    assert_int_equal(fake_run_split(files, "files.cleanup", t, args), BGT_CANCELLED);
    assert_int_equal(t->nsubtasks, 0);
    fake_task_free(t);

    /* Cancelled between files: the first goes, the rest stay, and no result. */
    t = fake_task_new(1);
    assert_int_equal(fake_run_split(files, "files.cleanup", t, args), BGT_OK);
    bgt_task *s = fake_task_new(1);
    s->subtask = 0;
    s->cancel_after_polls = 2;
    assert_int_equal(fake_run(files, "files.cleanup", s, t->subtasks[0]), BGT_CANCELLED);
    assert_null(s->result);
    assert_false(exists(tr.old[0]));
    for (int i = 1; i < 4; i++)
        assert_true(exists(tr.old[i]));
    fake_task_free(s);
    fake_task_free(t);
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
    bgt_task *s = fake_task_new(1);
    s->subtask = 0;
    s->handler = "files.cleanup";
    const bgt_handler_def *h = fake_find_handler(files, "files.cleanup");
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
    fake_task_free(s);

    const char *mixed[] = {f1, free_file};
    args = batch_args(root, false, mixed, 2);
    s = fake_task_new(1);
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
    fake_task_free(s);
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

/* ---- the guard: allowed_roots, and subtask args written by the submitter ---- */

/* Run one batch of subtask args (JSON text) on plugin p; returns the finished task. */
static bgt_task *run_batch(fake_plugin *p, const char *args, bgt_status *st)
{
    return fake_run_subtask(p, "files.cleanup", 0, args, st);
}

/* An old file at scratch/rel that nothing may delete; returns its path. */
static char *victim(const char *rel)
{
    char *path = write_file(rel, 8);
    set_age(path, 10 * DAY_S);
    return path;
}

/*
 * Subtask args need not come from the split: a submitter writes them with --subtasks-file.
 * Roots that resolve to "/" however they are spelled, and roots outside allowed_roots, fail
 * the batch and delete nothing.
 */
static void test_guard_hostile_roots(void **state)
{
    char *allowed = scratch_path("guard/allowed");
    char *other = scratch_path("guard/other");
    char *doomed = victim("guard/other/old.bin");
    char *inside = victim("guard/allowed/old.bin");
    char *config = allowed_config(allowed);
    int rc;
    fake_plugin *p = fake_load_plugin("files", config, &rc);
    assert_int_equal(rc, 0);

    /* "/." and "/tmp/.." are "/": the files, spelled from them, are the victims. */
    char via_dot[2 * PATH_MAX], via_tmp[2 * PATH_MAX];
    snprintf(via_dot, sizeof via_dot, "/.%s", doomed);
    snprintf(via_tmp, sizeof via_tmp, "/tmp/..%s", doomed);
    struct {
        const char *root, *file;
    } cases[] = {
        {"/.", via_dot},
        {"/tmp/..", via_tmp},
        {"//", via_dot},
        {"/", doomed},
    };
    char want[3 * PATH_MAX];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *paths[] = {cases[i].file};
        char *args = batch_args(cases[i].root, false, paths, 1);
        bgt_status st;
        bgt_task *t = run_batch(p, args, &st);
        if (!exists(doomed))
            fail_msg("root %s, file %s: deleted %s", cases[i].root, cases[i].file, doomed);
        assert_int_equal(st, BGT_FAILED);
        snprintf(want, sizeof want,
                 "refusing to clean up %s: it is the root of the filesystem, and deleting every "
                 "old file on the machine is never what was meant",
                 cases[i].root);
        assert_string_equal(t->error, want);
        fake_task_free(t);
        free(args);
    }

    /* A real folder that is not allowed, named directly or through "..". */
    char *climb = scratch_path("guard/allowed/../other");
    const char *roots[] = {other, climb};
    for (int i = 0; i < 2; i++) {
        const char *paths[] = {doomed};
        char *args = batch_args(roots[i], false, paths, 1);
        bgt_status st;
        bgt_task *t = run_batch(p, args, &st);
        if (!exists(doomed))
            fail_msg("root %s: deleted %s", roots[i], doomed);
        assert_int_equal(st, BGT_FAILED);
        snprintf(want, sizeof want,
                 "refusing to clean up %s: it is not inside the files plugin's allowed_roots (%s)",
                 roots[i], allowed);
        assert_string_equal(t->error, want);
        fake_task_free(t);
        free(args);
    }

    /* An allowed root whose files climb out of it. */
    char *out = scratch_path("guard/allowed/../other/old.bin");
    const char *paths[] = {out, inside};
    char *args = batch_args(allowed, false, paths, 2);
    bgt_status st;
    bgt_task *t = run_batch(p, args, &st);
    assert_int_equal(st, BGT_OK);
    snprintf(want, sizeof want, "cannot delete %s: not under the folder being cleaned up", out);
    cJSON *r = cJSON_Parse(t->result);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "errors"), 0)->valuestring, want);
    assert_true(cJSON_GetObjectItem(r, "deleted")->valuedouble == 1);
    cJSON_Delete(r);
    assert_true(exists(doomed));
    assert_false(exists(inside));
    fake_task_free(t);
    free(args);

    fake_unload_plugin(p);
    free(config);
    free(out);
    free(climb);
    free(inside);
    free(doomed);
    free(other);
    free(allowed);
}

/* Links inside an allowed root that lead out of it: as the root itself, or on a file's way. */
static void test_guard_links_out(void **state)
{
    char *allowed = scratch_path("links/allowed");
    char *doomed = victim("links/outside/old.bin");
    char *outside = scratch_path("links/outside");
    char *keep = victim("links/allowed/keep/old.bin");
    char *link = scratch_path("links/allowed/out");
    assert_int_equal(symlink(outside, link), 0);
    char *via = scratch_path("links/allowed/out/old.bin");
    char *config = allowed_config(allowed);
    int rc;
    fake_plugin *p = fake_load_plugin("files", config, &rc);
    assert_int_equal(rc, 0);

    /* The link as the root: it resolves outside. */
    const char *paths[] = {via};
    char *args = batch_args(link, false, paths, 1);
    bgt_status st;
    bgt_task *t = run_batch(p, args, &st);
    assert_int_equal(st, BGT_FAILED);
    char want[3 * PATH_MAX];
    snprintf(want, sizeof want,
             "refusing to clean up %s: it is not inside the files plugin's allowed_roots (%s)",
             link, allowed);
    assert_string_equal(t->error, want);
    fake_task_free(t);
    free(args);

    /* The link on a file's way, from the allowed root. */
    args = batch_args(allowed, false, paths, 1);
    t = run_batch(p, args, &st);
    assert_int_equal(st, BGT_FAILED);
    snprintf(want, sizeof want,
             "every file of this batch failed (1); the first: cannot delete %s: not under the "
             "folder being cleaned up",
             via);
    assert_string_equal(t->error, want);
    fake_task_free(t);
    free(args);

    /* The split never lists what is behind the link. */
    char *split_args = cleanup_args(allowed, "\"dry_run\": true");
    t = fake_task_new(1);
    assert_int_equal(fake_run_split(p, "files.cleanup", t, split_args), BGT_OK);
    assert_int_equal(t->nsubtasks, 1);
    assert_null(strstr(t->subtasks[0], "outside"));
    assert_non_null(strstr(t->subtasks[0], keep));
    fake_task_free(t);

    assert_true(exists(doomed));
    assert_true(exists(keep));
    fake_unload_plugin(p);
    free(split_args);
    free(config);
    free(via);
    free(link);
    free(keep);
    free(outside);
    free(doomed);
    free(allowed);
}

/* The split refuses a path outside allowed_roots; an empty list allows nothing. */
static void test_guard_split(void **state)
{
    char *allowed = scratch_path("split/allowed");
    char *other = scratch_path("split/other");
    char *a = victim("split/allowed/deep/old.bin");
    char *b = victim("split/other/old.bin");
    char *config = allowed_config(allowed);
    int rc;
    fake_plugin *p = fake_load_plugin("files", config, &rc);
    assert_int_equal(rc, 0);
    char want[3 * PATH_MAX];

    char *args = cleanup_args(other, "");
    snprintf(want, sizeof want,
             "refusing to clean up %s: it is not inside the files plugin's allowed_roots (%s)",
             other, allowed);
    fake_expect_split_failure(p, "files.cleanup", args, 0, want);
    free(args);

    /* The allowed root itself and a folder inside it are fine. */
    char *deep = scratch_path("split/allowed/deep");
    const char *ok[] = {allowed, deep};
    for (int i = 0; i < 2; i++) {
        args = cleanup_args(ok[i], "\"dry_run\": true");
        bgt_task *t = fake_task_new(1);
        assert_int_equal(fake_run_split(p, "files.cleanup", t, args), BGT_OK);
        assert_non_null(strstr(t->subtasks[0], a));
        fake_task_free(t);
        free(args);
    }
    fake_unload_plugin(p);

    /* No allowed_roots: nothing may be cleaned up, and the message says where to allow it. */
    p = fake_load_plugin("files", "{}", &rc);
    assert_int_equal(rc, 0);
    args = cleanup_args(allowed, "");
    snprintf(want, sizeof want,
             "refusing to clean up %s: the files plugin's allowed_roots is empty, so "
             "files.cleanup may clean up nothing (list the folders it may clean up in the "
             "plugin's config)",
             allowed);
    fake_expect_split_failure(p, "files.cleanup", args, 0, want);
    free(args);
    const char *paths[] = {a};
    args = batch_args(allowed, false, paths, 1);
    bgt_status st;
    bgt_task *t = run_batch(p, args, &st);
    assert_int_equal(st, BGT_FAILED);
    assert_string_equal(t->error, want);
    fake_task_free(t);
    free(args);
    fake_unload_plugin(p);

    assert_true(exists(a));
    assert_true(exists(b));
    free(deep);
    free(config);
    free(a);
    free(b);
    free(other);
    free(allowed);
}

/* allowed_roots in the plugin config: absolute paths, never "/". */
static void test_guard_config(void **state)
{
    struct {
        const char *config, *log;
    } bad[] = {
        {"{\"allowed_roots\": \"/srv\"}",
         "config: allowed_roots must be a list of absolute folder paths"},
        {"{\"allowed_roots\": [\"srv\"]}",
         "config: allowed_roots must be a list of absolute folder paths, got \"srv\""},
        {"{\"allowed_roots\": [5]}",
         "config: allowed_roots must be a list of absolute folder paths"},
        {"{\"allowed_roots\": [\"/\"]}",
         "config: allowed_roots: \"/\" is the root of the filesystem: files.cleanup must never "
         "clean up everything"},
        {"{\"allowed_roots\": [\"/srv\", \"/tmp/..\"]}",
         "config: allowed_roots: \"/tmp/..\" is the root of the filesystem"},
        {"{\"allowed_roots\": [\"//.\"]}", "config: allowed_roots: \"//.\" is the root"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc;
        fake_plugin *p = fake_load_plugin("files", bad[i].config, &rc);
        if (rc >= 0 || !strstr(p->log, bad[i].log))
            fail_msg("config %s: init returned %d, log \"%s\", want \"%s\"", bad[i].config, rc,
                     p->log, bad[i].log);
        fake_unload_plugin(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cleanup_dry_run),
        cmocka_unit_test(test_cleanup_deletes),
        cmocka_unit_test(test_cleanup_config),
        cmocka_unit_test(test_cleanup_bad_args),
        cmocka_unit_test(test_cleanup_changed_since_split),
        cmocka_unit_test(test_cleanup_stays_inside),
        cmocka_unit_test(test_cleanup_cancel),
        cmocka_unit_test(test_cleanup_unlink_fails),
        cmocka_unit_test(test_guard_hostile_roots),
        cmocka_unit_test(test_guard_links_out),
        cmocka_unit_test(test_guard_split),
        cmocka_unit_test(test_guard_config),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/*
 * cleanup.c - files.cleanup, the files plugin's parallel handler: delete the old files of a
 * tree in batches, one subtask per batch.
 *
 *   files.cleanup  {"path": P, "older_than_days": D, "batch_size": B, "dry_run": false}
 *       A parallel task that deletes the regular files under the directory P (at any depth)
 *       whose mtime is more than D days old. The split lists them and adds one subtask per
 *       batch of B files (1..10000; default: the plugin config's cleanup_batch_size, 100);
 *       each subtask deletes its batch, or with "dry_run": true only counts it. A subtask's
 *       result: {"deleted": n, "bytes": b, "skipped": s, "errors": ["cannot delete X: ...",
 *       ...], "dry_run": bool}; a subtask fails only when every file of its batch failed, with
 *       a message naming the first. The task's result: {"deleted", "bytes", "skipped",
 *       "errors" (a count), "batches", "dry_run"}. A tree without old files is one empty batch,
 *       so that the task succeeds with "deleted": 0.
 *       P must be an absolute path to a directory that is, or is inside, one of the folders
 *       the plugin config's allowed_roots names (none by default: then every task is refused),
 *       and never "/". Links met inside the tree are never followed nor deleted. A folder
 *       inside the tree that cannot be read is skipped with a warning in the task's log: a
 *       cleanup does what it can.
 *       Subtasks may run long after the split (a retry, or another host after a crash), and
 *       their args may come from a submitter rather than from the split, so every subtask
 *       checks again before it deletes: it resolves (realpath) its root, which must be inside
 *       an allowed root and not "/", and each file's folder, which must lead strictly inside
 *       the root; it then reaches the file from the allowed root one folder at a time without
 *       following links, and leaves alone (counts as "skipped") a file that vanished, is no
 *       longer a regular file, or was modified since the split. Subtask args, as the split
 *       writes them: {"root": realpath(P), "cutoff": epoch seconds, "dry_run": bool,
 *       "files": [absolute paths under root]}.
 */
#include <errno.h>
#include <fcntl.h>
#include <fts.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bgtask.h>

#include "files.h"

/* Files deleted between two progress reports of a batch. */
#define CLEANUP_REPORT_EVERY 16

/* The state of one files.cleanup split. */
struct cleanup_split {
    bgt_task *t;
    const char *root; /* realpath of args.path */
    double cutoff;    /* files with an mtime before this (epoch seconds) are old */
    bool dry_run;
    int batch_size;
    long max_files;
    long listed;   /* old files found so far */
    cJSON *batch;  /* the subtask args being filled, or NULL */
    cJSON *files;  /* its "files" array (owned by batch) */
    int nbatch;    /* files in batch */
    int batches;   /* subtasks added */
};

/* A timestamp as epoch seconds, the unit of the cutoff. */
static double ts_seconds(struct timespec ts)
{
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Whether path is dir or below it (both resolved: absolute, no links, no "." or ".."). */
static bool at_or_below(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/*
 * The allowed root that holds real (a resolved path), itself resolved now (heap), or NULL.
 * A root that does not resolve (it is not there) or resolves to "/" (a link made since the
 * config was read) holds nothing.
 */
static char *allowed_root_of(const struct files_config *cfg, const char *real)
{
    for (size_t i = 0; i < cfg->nallowed; i++) {
        char *r = realpath(cfg->allowed_roots[i], NULL);
        if (r != NULL && strcmp(r, "/") != 0 && at_or_below(real, r))
            return r;
        free(r);
    }
    return NULL;
}

/* Set the task's error for a folder outside allowed_roots, listing them. */
static void not_allowed(bgt_task *t, const struct files_config *cfg, const char *given)
{
    if (cfg->nallowed == 0) {
        bgt_set_error(t, "refusing to clean up %s: the files plugin's allowed_roots is empty, so "
                         "files.cleanup may clean up nothing (list the folders it may clean up in "
                         "the plugin's config)", given);
        return;
    }
    char list[1024];
    size_t n = 0;
    list[0] = '\0';
    for (size_t i = 0; i < cfg->nallowed && n < sizeof list; i++) {
        int w = snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", cfg->allowed_roots[i]);
        n += w > 0 ? (size_t)w : 0;
    }
    bgt_set_error(t, "refusing to clean up %s: it is not inside the files plugin's allowed_roots "
                     "(%s)", given, list);
}

/*
 * Resolve the folder a task or a batch names (given), and check that it may be cleaned up:
 * not "/", however spelled or linked, and inside an allowed root. On success *real is its
 * resolved path and *allowed the resolved allowed root that holds it (both heap). Returns 0,
 * or a negative errno after setting the task's error; -ENOENT (it is not there) leaves the
 * error alone when missing_ok.
 */
static int resolve_root(bgt_task *t, const struct files_config *cfg, const char *given,
                        bool missing_ok, char **real, char **allowed)
{
    *allowed = NULL;
    if ((*real = realpath(given, NULL)) == NULL) {
        int rc = -errno;
        if (!(missing_ok && rc == -ENOENT))
            bgt_set_error(t, "cannot open %s: %s", given, strerror(-rc));
        return rc;
    }
    if (strcmp(*real, "/") == 0) {
        bgt_set_error(t, "refusing to clean up %s: it is the root of the filesystem, and "
                         "deleting every old file on the machine is never what was meant",
                      given);
    } else if ((*allowed = allowed_root_of(cfg, *real)) == NULL) {
        not_allowed(t, cfg, given);
    } else {
        return 0;
    }
    free(*real);
    *real = NULL;
    return -EPERM;
}

/* Start a new, empty batch: {"root", "cutoff", "dry_run", "files": []}. */
static int batch_start(struct cleanup_split *c)
{
    c->batch = cJSON_CreateObject();
    if (c->batch == NULL || !cJSON_AddStringToObject(c->batch, "root", c->root) ||
        !cJSON_AddNumberToObject(c->batch, "cutoff", c->cutoff) ||
        !cJSON_AddBoolToObject(c->batch, "dry_run", c->dry_run) ||
        (c->files = cJSON_AddArrayToObject(c->batch, "files")) == NULL) {
        cJSON_Delete(c->batch);
        c->batch = NULL;
        bgt_set_error(c->t, "out of memory");
        return -ENOMEM;
    }
    c->nbatch = 0;
    return 0;
}

/* Hand the current batch to the host as one subtask, and drop it. */
static int batch_flush(struct cleanup_split *c)
{
    int rc = bgt_add_subtask(c->t, c->batch);
    cJSON_Delete(c->batch);
    c->batch = NULL;
    if (rc == -E2BIG) {
        bgt_set_error(c->t, "%s: more than the host's tasks.max_subtasks batches of %d files; "
                            "give a larger args.batch_size", c->root, c->batch_size);
        return rc;
    }
    if (rc < 0) {
        bgt_set_error(c->t, "the host refused batch %d: %s", c->batches, strerror(-rc));
        return rc;
    }
    c->batches++;
    return 0;
}

/* Add one old file to the current batch, starting or sending batches as they fill. */
static int batch_add(struct cleanup_split *c, const char *path)
{
    if (c->listed >= c->max_files) {
        bgt_set_error(c->t, "%s holds more than %ld files to clean up (the files plugin's "
                            "max_files)", c->root, c->max_files);
        return -E2BIG;
    }
    c->listed++;
    int rc;
    if (c->batch == NULL && (rc = batch_start(c)) < 0)
        return rc;
    cJSON *s = cJSON_CreateString(path);
    if (s == NULL || !cJSON_AddItemToArray(c->files, s)) {
        cJSON_Delete(s);
        bgt_set_error(c->t, "out of memory");
        return -ENOMEM;
    }
    if (++c->nbatch == c->batch_size)
        return batch_flush(c);
    return 0;
}

/* fts visits the entries of a folder in name order, so the batches come out the same way. */
static int cmp_fts_name(const FTSENT **a, const FTSENT **b)
{
    return strcmp((*a)->fts_name, (*b)->fts_name);
}

/* List the old regular files under c->root into batches, added as subtasks as they fill. */
static int cleanup_list(struct cleanup_split *c)
{
    char *roots[] = {(char *)c->root, NULL};
    FTS *fts = fts_open(roots, FTS_PHYSICAL | FTS_NOCHDIR, cmp_fts_name);
    if (fts == NULL) {
        int err = errno;
        bgt_set_error(c->t, "cannot open %s: %s", c->root, strerror(err));
        return -err;
    }
    int rc = 0;
    while (rc == 0) {
        errno = 0;
        FTSENT *e = fts_read(fts);
        if (e == NULL) {
            if (errno != 0) {
                rc = -errno;
                bgt_set_error(c->t, "cannot walk %s: %s", c->root, strerror(-rc));
            }
            break;
        }
        if (bgt_cancelled(c->t)) {
            rc = -ECANCELED;
            break;
        }
        switch (e->fts_info) {
        case FTS_F:
            if (ts_seconds(e->fts_statp->st_mtim) < c->cutoff)
                rc = batch_add(c, e->fts_path);
            break;
        case FTS_DNR:
        case FTS_ERR:
        case FTS_NS:
            if (e->fts_level == FTS_ROOTLEVEL) {
                bgt_set_error(c->t, "cannot open %s: %s", e->fts_path, strerror(e->fts_errno));
                rc = -e->fts_errno;
            } else {
                /* Someone else's folder in a shared tree must not stop the whole cleanup. */
                bgt_log(c->t, BGT_LOG_WARNING, "%s skipped: %s", e->fts_path,
                        strerror(e->fts_errno));
            }
            break;
        default:
            break; /* folders, links, sockets, FIFOs, devices: nothing to delete */
        }
    }
    fts_close(fts);
    return rc;
}

/*
 * Read args.batch_size (default: the plugin config's), args.older_than_days and
 * args.dry_run into c. Returns false after setting the task's error.
 */
static bool cleanup_args(bgt_task *t, const cJSON *args, const struct files_config *cfg,
                         struct cleanup_split *c)
{
    const cJSON *days = cJSON_GetObjectItemCaseSensitive(args, "older_than_days");
    if (!cJSON_IsNumber(days) || !(days->valuedouble >= 0)) {
        bgt_set_error(t, "args.older_than_days must be a number >= 0 (the age, in days, from "
                         "which a file is deleted)");
        return false;
    }
    c->batch_size = cfg->cleanup_batch_size;
    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(args, "batch_size");
    if (bs != NULL) {
        if (!cJSON_IsNumber(bs) || bs->valuedouble < 1 || bs->valuedouble > CLEANUP_MAX_BATCH ||
            bs->valuedouble != (double)(int)bs->valuedouble) {
            bgt_set_error(t, "args.batch_size must be an integer 1..%d", CLEANUP_MAX_BATCH);
            return false;
        }
        c->batch_size = (int)bs->valuedouble;
    }
    const cJSON *dry = cJSON_GetObjectItemCaseSensitive(args, "dry_run");
    if (dry != NULL && !cJSON_IsBool(dry)) {
        bgt_set_error(t, "args.dry_run must be true or false");
        return false;
    }
    c->dry_run = cJSON_IsTrue(dry);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    c->cutoff = ts_seconds(now) - days->valuedouble * 86400.0;
    return true;
}

/*
 * files.cleanup, split: check the args, resolve args.path, refuse "/", and list the old
 * files into subtasks of batch_size files each.
 */
bgt_status cleanup_split(bgt_task *t, const cJSON *args, void *udata)
{
    const struct files_config *cfg = udata;
    struct cleanup_split c = {.t = t, .max_files = cfg->max_files};
    char *root = NULL;
    int rc = 0;

    if (!cJSON_IsObject(args)) {
        bgt_set_error(t, "args must be a JSON object");
        return BGT_FAILED;
    }
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(args, "path");
    if (!cJSON_IsString(path) || path->valuestring[0] != '/') {
        bgt_set_error(t, "args.path must be an absolute path (the directory to clean up)");
        return BGT_FAILED;
    }
    if (!cleanup_args(t, args, cfg, &c))
        return BGT_FAILED;

    /* The subtasks get the resolved path, which has no link in it; "/" and folders outside
     * allowed_roots are refused however they are spelled ("/.", "//", a link). */
    char *allowed = NULL;
    if ((rc = resolve_root(t, cfg, path->valuestring, false, &root, &allowed)) < 0)
        return BGT_FAILED; /* a split cannot ask for a retry: anything but OK ends the task */
    free(allowed);
    struct stat st;
    if (stat(root, &st) < 0) {
        rc = -errno;
        bgt_set_error(t, "cannot open %s: %s", path->valuestring, strerror(-rc));
        goto out;
    }
    if (!S_ISDIR(st.st_mode)) {
        bgt_set_error(t, "args.path %s is not a directory", path->valuestring);
        rc = -ENOTDIR;
        goto out;
    }
    c.root = root;

    rc = cleanup_list(&c);
    /* The last, partly filled batch; or one empty batch when nothing is old, so that the task
     * has a subtask and ends as a success that deleted nothing. */
    if (rc == 0 && (c.batch != NULL || c.batches == 0)) {
        if (c.batch == NULL)
            rc = batch_start(&c);
        if (rc == 0)
            rc = batch_flush(&c);
    }
    if (rc == 0)
        bgt_log(t, BGT_LOG_INFO, "%s: %ld files older than the cutoff in %d batches%s", root,
                c.listed, c.batches, c.dry_run ? " (dry run)" : "");
out:
    cJSON_Delete(c.batch);
    free(root);
    if (rc == -ECANCELED)
        return BGT_CANCELLED;
    return rc < 0 ? BGT_FAILED : BGT_OK;
}

/* What one cleanup batch did. */
struct cleanup_batch {
    bgt_task *t;
    const char *root;    /* resolved args.root */
    const char *allowed; /* the resolved allowed root that holds it */
    double cutoff;
    bool dry_run;
    double deleted, bytes, skipped;
    cJSON *errors; /* array of messages */
    char *first_error; /* the first message, for a batch that failed as a whole; owned */
};

/*
 * Record a failure on one file, "cannot <what> <path>: <why>", in the errors array.
 * Returns 0, or -ENOMEM.
 */
static int batch_error(struct cleanup_batch *b, const char *what, const char *path,
                       const char *why)
{
    int len = snprintf(NULL, 0, "cannot %s %s: %s", what, path, why);
    char *msg = len < 0 ? NULL : malloc((size_t)len + 1);
    if (msg == NULL)
        return -ENOMEM;
    snprintf(msg, (size_t)len + 1, "cannot %s %s: %s", what, path, why);
    cJSON *s = cJSON_CreateString(msg);
    if (s == NULL || !cJSON_AddItemToArray(b->errors, s)) {
        cJSON_Delete(s);
        free(msg);
        return -ENOMEM;
    }
    if (b->first_error == NULL)
        b->first_error = msg;
    else
        free(msg);
    return 0;
}

/* Whether name is a plain file name: not empty, ".", or "..". */
static bool plain_name(const char *name)
{
    return name[0] != '\0' && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

/*
 * Delete (or, in a dry run, count) one file of the batch. Its folder is resolved and must lead
 * strictly inside the batch's root; the file is then reached from the allowed root one folder
 * at a time with O_NOFOLLOW, so that a folder swapped for a link since cannot lead outside,
 * and it is deleted only if it still is a regular file older than the cutoff. Returns 0
 * (whatever happened to the file: that is counted in b), or -ENOMEM.
 */
static int cleanup_one(struct cleanup_batch *b, const char *path)
{
    const char *slash = strrchr(path, '/');
    if (path[0] != '/' || !plain_name(slash + 1))
        return batch_error(b, "delete", path, "not a plain path under the folder");
    char *folder = slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
    if (folder == NULL)
        return -ENOMEM;
    char *rfolder = realpath(folder, NULL);
    int err = errno;
    free(folder);
    if (rfolder == NULL && (err == ENOENT || err == ENOTDIR)) {
        b->skipped++; /* its folder went away, and the file with it */
        return 0;
    }
    if (rfolder == NULL)
        return err == ENOMEM ? -ENOMEM : batch_error(b, "delete", path, strerror(err));
    /* The folder at or below the root, and a plain name: the file is strictly inside. */
    bool inside = at_or_below(rfolder, b->root);
    char *real = NULL;
    if (inside) {
        size_t len = strlen(rfolder) + strlen(slash) + 1;
        if ((real = malloc(len)) != NULL)
            snprintf(real, len, "%s%s", rfolder, slash);
    }
    free(rfolder);
    if (!inside)
        return batch_error(b, "delete", path, "not under the folder being cleaned up");
    if (real == NULL)
        return -ENOMEM;

    int rc = 0;
    int dfd = open(b->allowed, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        rc = batch_error(b, "open", b->allowed, strerror(errno));
        free(real);
        return rc;
    }
    /* real is below the allowed root: walk what follows it. */
    char *name = real + strlen(b->allowed) + 1;
    for (char *next; (next = strchr(name, '/')) != NULL; name = next + 1) {
        *next = '\0';
        int sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
            if (errno == ENOENT)
                b->skipped++; /* its folder went away, and the file with it */
            else
                rc = batch_error(b, "delete", path, strerror(errno));
            goto out;
        }
        close(dfd);
        dfd = sub;
    }

    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            b->skipped++;
        else
            rc = batch_error(b, "delete", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode) || !(ts_seconds(st.st_mtim) < b->cutoff)) {
        b->skipped++; /* no longer what the split found: not ours to delete */
    } else if (b->dry_run) {
        b->deleted++;
        b->bytes += (double)st.st_size;
    } else if (unlinkat(dfd, name, 0) == 0) {
        b->deleted++;
        b->bytes += (double)st.st_size;
    } else if (errno == ENOENT) {
        b->skipped++;
    } else {
        rc = batch_error(b, "delete", path, strerror(errno));
    }
out:
    free(real);
    close(dfd);
    return rc;
}

/*
 * files.cleanup, run (one call per batch): delete the batch's files, checking for a cancel
 * between files. The result counts what was done, and lists what could not be done.
 */
bgt_status cleanup_run(bgt_task *t, const cJSON *args, void *udata)
{
    const struct files_config *cfg = udata;
    struct cleanup_batch b = {.t = t};
    cJSON *result = NULL;
    char *root_real = NULL, *allowed = NULL;
    bgt_status status = BGT_FAILED;

    const cJSON *root = cJSON_GetObjectItemCaseSensitive(args, "root");
    const cJSON *cutoff = cJSON_GetObjectItemCaseSensitive(args, "cutoff");
    const cJSON *dry = cJSON_GetObjectItemCaseSensitive(args, "dry_run");
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(args, "files");
    if (!cJSON_IsString(root) || root->valuestring[0] != '/' || !cJSON_IsNumber(cutoff) ||
        (dry != NULL && !cJSON_IsBool(dry)) || !cJSON_IsArray(files)) {
        bgt_set_error(t, "subtask args must be {\"root\": dir, \"cutoff\": seconds, "
                         "\"dry_run\": bool, \"files\": [paths]}, as files.cleanup's split "
                         "writes them");
        return BGT_FAILED;
    }
    int n = cJSON_GetArraySize(files), i = 0;
    /* The root is checked again here, whoever wrote these args: resolved, not "/", inside an
     * allowed root. One that went away since the split took its files with it. */
    int rc = resolve_root(t, cfg, root->valuestring, true, &root_real, &allowed);
    if (rc == -ENOENT) {
        b.skipped = n;
    } else if (rc < 0) {
        return BGT_FAILED;
    }
    b.root = root_real;
    b.allowed = allowed;
    b.cutoff = cutoff->valuedouble;
    b.dry_run = cJSON_IsTrue(dry);

    result = cJSON_CreateObject();
    b.errors = cJSON_CreateArray();
    if (result == NULL || b.errors == NULL)
        goto nomem;

    const cJSON *f;
    cJSON_ArrayForEach(f, files) {
        if (b.root == NULL)
            break; /* the root went away: every file is skipped */
        if (bgt_cancelled(t)) {
            status = BGT_CANCELLED;
            goto out;
        }
        rc = cJSON_IsString(f) ? cleanup_one(&b, f->valuestring)
                               : batch_error(&b, "delete", "an entry", "it is not a string");
        if (rc < 0)
            goto nomem;
        if (++i % CLEANUP_REPORT_EVERY == 0 && i < n)
            bgt_progress(t, i, n, NULL);
    }
    bgt_progress(t, n, n, NULL);

    int nerrors = cJSON_GetArraySize(b.errors);
    if (n > 0 && nerrors == n) {
        bgt_set_error(t, "every file of this batch failed (%d); the first: %s", n,
                      b.first_error);
        goto out;
    }
    if (!cJSON_AddNumberToObject(result, "deleted", b.deleted) ||
        !cJSON_AddNumberToObject(result, "bytes", b.bytes) ||
        !cJSON_AddNumberToObject(result, "skipped", b.skipped) ||
        !cJSON_AddBoolToObject(result, "dry_run", b.dry_run) ||
        !cJSON_AddItemToObject(result, "errors", b.errors))
        goto nomem;
    b.errors = NULL; /* result owns it now */
    rc = bgt_set_result(t, result);
    if (rc == -E2BIG) {
        bgt_set_error(t, "the result of this batch is larger than the host accepts "
                         "(tasks.max_result_bytes): give a smaller args.batch_size");
        goto out;
    }
    if (rc < 0) {
        bgt_set_error(t, "the host refused the result: %s", strerror(-rc));
        goto out;
    }
    status = BGT_OK;
    goto out;
nomem:
    bgt_set_error(t, "out of memory");
    status = BGT_RETRY;
out:
    cJSON_Delete(result);
    cJSON_Delete(b.errors);
    free(b.first_error);
    free(root_real);
    free(allowed);
    return status;
}

/* The number args.<field> of a batch result, 0 if it has none. */
static double result_number(const cJSON *r, const char *field)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, field);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/*
 * files.cleanup, merge: add up the batches' results (null for a batch that failed). The
 * dry_run flag comes from the results: the merge does not see the task's args.
 */
bgt_status cleanup_merge(bgt_task *t, const cJSON *results, void *udata)
{
    double deleted = 0, bytes = 0, skipped = 0, errors = 0;
    int batches = 0;
    bool dry_run = false;
    const cJSON *r;
    cJSON_ArrayForEach(r, results) {
        batches++;
        if (!cJSON_IsObject(r))
            continue;
        deleted += result_number(r, "deleted");
        bytes += result_number(r, "bytes");
        skipped += result_number(r, "skipped");
        errors += cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "errors"));
        dry_run = dry_run || cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "dry_run"));
    }
    cJSON *result = cJSON_CreateObject();
    if (result == NULL || !cJSON_AddNumberToObject(result, "deleted", deleted) ||
        !cJSON_AddNumberToObject(result, "bytes", bytes) ||
        !cJSON_AddNumberToObject(result, "skipped", skipped) ||
        !cJSON_AddNumberToObject(result, "errors", errors) ||
        !cJSON_AddNumberToObject(result, "batches", batches) ||
        !cJSON_AddBoolToObject(result, "dry_run", dry_run)) {
        cJSON_Delete(result);
        bgt_set_error(t, "out of memory");
        return BGT_FAILED;
    }
    int rc = bgt_set_result(t, result);
    cJSON_Delete(result);
    if (rc < 0) {
        bgt_set_error(t, "the host refused the result: %s", strerror(-rc));
        return BGT_FAILED;
    }
    return BGT_OK;
}

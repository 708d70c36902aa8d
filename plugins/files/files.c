/*
 * files.c - the files plugin: SHA-256 checksums of a file or of a directory tree, and the
 * cleanup of old files in a tree, as a parallel task.
 *
 *   files.checksum  {"path": P}
 *       P a regular file: its digest. P a directory: the digest of every regular file under
 *       it, at any depth. Result:
 *           {"files": {"<path>": "<64 hex digits>", ...}, "bytes": <total>, "count": <n>}
 *       with the paths sorted (byte order) and spelled from P as given. Relative paths are
 *       taken from the host's working directory, so give absolute ones.
 *
 * Symbolic links: P itself is followed if it is one (the caller named it), but links met
 * inside the tree are neither followed nor hashed (like `find -H P -type f`), so a tree
 * cannot pull in files from outside itself or loop. Sockets, FIFOs and devices are skipped.
 *
 * Progress counts bytes: a first pass lists the files and adds up their sizes, the second
 * hashes them and reports about every MiB (the host throttles reports anyway). Cancellation
 * is checked between chunks, so a huge file does not delay it.
 *
 *   files.cleanup  {"path": P, "older_than_days": D, "batch_size": B, "dry_run": false}
 *       deletes the regular files under P older than D days, as a parallel task of batches:
 *       see cleanup.c.
 *
 * Plugin config (all optional):
 *   max_files = 100000;         files.checksum: a tree with more regular files than this fails
 *                               the task; files.cleanup: the most files one task deletes
 *   cleanup_batch_size = 100;   files.cleanup's batch_size when the args do not give one
 *   allowed_roots = ["/var/tmp/cache"];
 *                               the folders files.cleanup may clean up (each with what is
 *                               below it): absolute paths, never "/". Default: none, and then
 *                               files.cleanup refuses every task.
 *
 * A missing or unreadable path fails the task with a message that names it and the reason,
 * "cannot open /x/y: Permission denied"; running out of memory or file descriptors is this
 * host's passing trouble, so that asks for a retry instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <fts.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <bgtask.h>

#include "files.h"

#define FILES_DEFAULT_MAX_FILES 100000
#define FILES_MAX_MAX_FILES 100000000
/* Bytes read and hashed between two cancel checks. */
#define FILES_CHUNK (128 * 1024)
/* Bytes hashed between two progress reports. */
#define FILES_REPORT_EVERY (1024 * 1024)

/* One regular file found by the first pass. */
struct file_entry {
    char *path; /* owned */
    off_t size; /* at the time of the first pass */
};

/* The state of one files.checksum run. */
struct checksum_run {
    bgt_task *t;
    char *root;     /* args.path without trailing slashes; owned */
    long max_files; /* from the plugin config */
    struct file_entry *files;
    size_t count, cap;
    uint64_t total;    /* bytes, from the first pass */
    uint64_t done;     /* bytes hashed so far */
    uint64_t reported; /* `done` at the last progress report */
};

/*
 * Failures inside a run return a negative errno after setting the task's error message.
 * This turns that code into what the handler returns.
 */
static bgt_status status_of(int rc)
{
    switch (rc) {
    case -ECANCELED:
        return BGT_CANCELLED;
    case -ENOMEM:
    case -EMFILE:
    case -ENFILE:
        return BGT_RETRY; /* this host's resources: another attempt may well succeed */
    default:
        return BGT_FAILED;
    }
}

/* Set the task's error for a system call that failed on path with errno err; returns -err. */
static int path_error(struct checksum_run *r, const char *what, const char *path, int err)
{
    bgt_set_error(r->t, "cannot %s %s: %s", what, path, strerror(err));
    return -err;
}

static int out_of_memory(struct checksum_run *r)
{
    bgt_set_error(r->t, "out of memory");
    return -ENOMEM;
}

/* Append a copy of path to the file list, enforcing max_files. */
static int add_file(struct checksum_run *r, const char *path, off_t size)
{
    if (r->count >= (size_t)r->max_files) {
        bgt_set_error(r->t, "%s holds more than %ld regular files (the files plugin's max_files)",
                      r->root, r->max_files);
        return -E2BIG;
    }
    if (r->count == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        struct file_entry *v = realloc(r->files, cap * sizeof *v);
        if (v == NULL)
            return out_of_memory(r);
        r->files = v;
        r->cap = cap;
    }
    char *copy = strdup(path);
    if (copy == NULL)
        return out_of_memory(r);
    r->files[r->count++] = (struct file_entry){.path = copy, .size = size};
    r->total += (uint64_t)size;
    return 0;
}

static int cmp_path(const void *a, const void *b)
{
    return strcmp(((const struct file_entry *)a)->path, ((const struct file_entry *)b)->path);
}

/*
 * First pass: list the regular files at or under r->root, sorted by path, and add up their
 * sizes. fts(3) walks without changing directory (FTS_NOCHDIR: the working directory is the
 * whole process's, and other tasks run beside this one), does not follow links
 * (FTS_PHYSICAL) except for the root (FTS_COMFOLLOW), and keeps no descriptor per level.
 */
static int list_files(struct checksum_run *r)
{
    char *roots[] = {r->root, NULL};
    FTS *fts = fts_open(roots, FTS_PHYSICAL | FTS_COMFOLLOW | FTS_NOCHDIR, NULL);
    if (fts == NULL)
        return path_error(r, "open", r->root, errno);

    int rc = 0;
    while (rc == 0) {
        errno = 0;
        FTSENT *e = fts_read(fts);
        if (e == NULL) {
            if (errno != 0)
                rc = path_error(r, "walk", r->root, errno);
            break;
        }
        if (bgt_cancelled(r->t)) {
            rc = -ECANCELED;
            break;
        }
        switch (e->fts_info) {
        case FTS_F:
            rc = add_file(r, e->fts_path, e->fts_statp->st_size);
            break;
        case FTS_NS:  /* stat failed: missing, or a folder on the way is not searchable */
        case FTS_DNR: /* a directory that cannot be read */
        case FTS_ERR:
            rc = path_error(r, "open", e->fts_path, e->fts_errno);
            break;
        case FTS_SLNONE:
            /* Inside the tree a link is skipped, but a root link must lead somewhere. */
            if (e->fts_level == FTS_ROOTLEVEL)
                rc = path_error(r, "open", e->fts_path, ENOENT);
            break;
        case FTS_DC:
            /* Only bind mounts make cycles when links are not followed: skip the repeat. */
            bgt_log(r->t, BGT_LOG_WARNING, "%s: directory cycle skipped", e->fts_path);
            break;
        case FTS_D:
        case FTS_DP:
            break; /* a directory, visited before and after its contents */
        default:
            /* Links, sockets, FIFOs, devices: nothing to hash, unless the caller named one. */
            if (e->fts_level == FTS_ROOTLEVEL) {
                bgt_set_error(r->t, "%s is not a regular file or a directory", e->fts_path);
                rc = -EINVAL;
            }
            break;
        }
    }
    fts_close(fts);
    if (rc == 0 && r->count > 1) /* qsort wants a non-NULL array, even of none */
        qsort(r->files, r->count, sizeof *r->files, cmp_path);
    return rc;
}

/* Report progress in bytes if a MiB has gone by since the last report, or if `force`. */
static void report(struct checksum_run *r, size_t index, bool force)
{
    if (!force && r->done - r->reported < FILES_REPORT_EVERY)
        return;
    /* A file that grew since the first pass must not make the bar run past its end. */
    if (r->done > r->total)
        r->total = r->done;
    char msg[64];
    snprintf(msg, sizeof msg, "file %zu/%zu", index, r->count);
    bgt_progress(r->t, (double)r->done, (double)r->total, msg);
    r->reported = r->done;
}

/*
 * Second pass, for one file: hash f into hex (65 bytes), reading through buf
 * (FILES_CHUNK bytes) with ctx. Files found inside the tree are opened with O_NOFOLLOW so a
 * link swapped in since the first pass is refused, and with O_NONBLOCK so a FIFO swapped in
 * cannot hang the open; fstat then checks that what was opened is a regular file.
 */
static int hash_file(struct checksum_run *r, size_t index, EVP_MD_CTX *ctx, unsigned char *buf,
                     char hex[65])
{
    const struct file_entry *f = &r->files[index];
    bool is_root = strcmp(f->path, r->root) == 0;
    int fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (is_root ? 0 : O_NOFOLLOW));
    if (fd < 0)
        return path_error(r, "open", f->path, errno);

    int rc = 0;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = path_error(r, "stat", f->path, errno);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        bgt_set_error(r->t, "%s is no longer a regular file", f->path);
        rc = -EINVAL;
        goto out;
    }
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        bgt_set_error(r->t, "OpenSSL could not start a SHA-256 digest");
        rc = -EIO;
        goto out;
    }
    for (;;) {
        if (bgt_cancelled(r->t)) {
            rc = -ECANCELED;
            goto out;
        }
        ssize_t n = read(fd, buf, FILES_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = path_error(r, "read", f->path, errno);
            goto out;
        }
        if (n == 0)
            break;
        if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1) {
            bgt_set_error(r->t, "OpenSSL could not update a SHA-256 digest");
            rc = -EIO;
            goto out;
        }
        r->done += (uint64_t)n;
        report(r, index + 1, false);
    }

    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx, md, &len) != 1 || len != 32) {
        bgt_set_error(r->t, "OpenSSL could not finish a SHA-256 digest");
        rc = -EIO;
        goto out;
    }
    static const char digits[] = "0123456789abcdef";
    for (unsigned int i = 0; i < len; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[2 * len] = '\0';
out:
    close(fd);
    return rc;
}

/* Second pass: hash every listed file into the "files" object of result. */
static int hash_files(struct checksum_run *r, cJSON *files)
{
    int rc = 0;
    unsigned char *buf = malloc(FILES_CHUNK);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (buf == NULL || ctx == NULL) {
        rc = out_of_memory(r);
        goto out;
    }
    report(r, 0, true); /* 0 of total: watchers see the size of the job at once */
    for (size_t i = 0; i < r->count; i++) {
        char hex[65];
        rc = hash_file(r, i, ctx, buf, hex);
        if (rc < 0)
            goto out;
        if (cJSON_AddStringToObject(files, r->files[i].path, hex) == NULL) {
            rc = out_of_memory(r);
            goto out;
        }
    }
    /* The last report says "all of it", also when files shrank since the first pass. */
    r->total = r->done;
    report(r, r->count, true);
out:
    EVP_MD_CTX_free(ctx);
    free(buf);
    return rc;
}

/* files.checksum: see the top of this file. */
static bgt_status files_checksum(bgt_task *t, const cJSON *args, void *udata)
{
    const struct files_config *cfg = udata;
    struct checksum_run r = {.t = t, .max_files = cfg->max_files};
    cJSON *result = NULL;
    int rc;

    const cJSON *path = cJSON_GetObjectItemCaseSensitive(args, "path");
    if (!cJSON_IsString(path) || path->valuestring[0] == '\0') {
        bgt_set_error(t, "args.path must be a non-empty string");
        return BGT_FAILED;
    }
    /* "/data/" and "/data" name the same tree; keep "/" as it is. */
    r.root = strdup(path->valuestring);
    if (r.root == NULL) {
        rc = out_of_memory(&r);
        goto out;
    }
    for (size_t len = strlen(r.root); len > 1 && r.root[len - 1] == '/'; len--)
        r.root[len - 1] = '\0';

    rc = list_files(&r);
    if (rc < 0)
        goto out;

    cJSON *files = NULL;
    result = cJSON_CreateObject();
    if (result == NULL || (files = cJSON_AddObjectToObject(result, "files")) == NULL) {
        rc = out_of_memory(&r);
        goto out;
    }
    rc = hash_files(&r, files);
    if (rc < 0)
        goto out;
    if (cJSON_AddNumberToObject(result, "bytes", (double)r.done) == NULL ||
        cJSON_AddNumberToObject(result, "count", (double)r.count) == NULL) {
        rc = out_of_memory(&r);
        goto out;
    }
    /* The host copies the result; -E2BIG means it is over the host's size limit. */
    rc = bgt_set_result(t, result);
    if (rc == -E2BIG)
        bgt_set_error(t, "the result for %s is larger than the host accepts "
                         "(tasks.max_result_bytes)", r.root);
    else if (rc < 0)
        bgt_set_error(t, "the host refused the result for %s: %s", r.root, strerror(-rc));
out:
    cJSON_Delete(result);
    for (size_t i = 0; i < r.count; i++)
        free(r.files[i].path);
    free(r.files);
    free(r.root);
    return rc < 0 ? status_of(rc) : BGT_OK;
}

void files_config_free(void *p)
{
    struct files_config *cfg = p;
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->nallowed; i++)
        free(cfg->allowed_roots[i]);
    free(cfg->allowed_roots);
    free(cfg);
}

/*
 * Whether path names "/" as written, whatever exists: every component is "", "." or a name
 * that a later ".." takes back ("/", "//.", "/tmp/.."). Links are not followed here (the caller
 * also asks realpath).
 */
static bool spells_root(const char *path)
{
    int depth = 0;
    for (const char *c = path; *c != '\0';) {
        while (*c == '/')
            c++;
        const char *end = strchr(c, '/');
        if (end == NULL)
            end = c + strlen(c);
        size_t n = (size_t)(end - c);
        if (n == 2 && c[0] == '.' && c[1] == '.')
            depth = depth > 0 ? depth - 1 : 0;
        else if (n > 0 && !(n == 1 && c[0] == '.'))
            depth++;
        c = end;
    }
    return depth == 0;
}

/*
 * Read config.allowed_roots (a list of absolute paths; none of them "/", however spelled or
 * linked) into cfg. Returns 0, or -EINVAL after logging why.
 */
static int read_allowed_roots(bgt_plugin *p, const cJSON *item, struct files_config *cfg)
{
    if (!cJSON_IsArray(item)) {
        bgt_plugin_log(p, BGT_LOG_ERR, "config: allowed_roots must be a list of absolute folder "
                                       "paths (the folders files.cleanup may clean up)");
        return -EINVAL;
    }
    int n = cJSON_GetArraySize(item);
    cfg->allowed_roots = calloc((size_t)n + 1, sizeof *cfg->allowed_roots);
    if (cfg->allowed_roots == NULL)
        return -ENOMEM;
    const cJSON *r;
    cJSON_ArrayForEach(r, item) {
        if (!cJSON_IsString(r) || r->valuestring[0] != '/') {
            bgt_plugin_log(p, BGT_LOG_ERR,
                           "config: allowed_roots must be a list of absolute folder paths, got "
                           "%s%s%s",
                           cJSON_IsString(r) ? "\"" : "",
                           cJSON_IsString(r) ? r->valuestring : "something else",
                           cJSON_IsString(r) ? "\"" : "");
            return -EINVAL;
        }
        char *real = realpath(r->valuestring, NULL);
        bool root = spells_root(r->valuestring) || (real != NULL && strcmp(real, "/") == 0);
        free(real);
        if (root) {
            bgt_plugin_log(p, BGT_LOG_ERR,
                           "config: allowed_roots: \"%s\" is the root of the filesystem: "
                           "files.cleanup must never clean up everything",
                           r->valuestring);
            return -EINVAL;
        }
        if ((cfg->allowed_roots[cfg->nallowed] = strdup(r->valuestring)) == NULL)
            return -ENOMEM;
        cfg->nallowed++;
    }
    return 0;
}

/* Read the plugin config into a fresh struct files_config; unknown settings are logged. */
static int files_config_read(bgt_plugin *p, const cJSON *config, struct files_config **out)
{
    if (config != NULL && !cJSON_IsObject(config)) {
        bgt_plugin_log(p, BGT_LOG_ERR, "config: must be a group of settings");
        return -EINVAL;
    }
    struct files_config *cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL)
        return -ENOMEM;
    cfg->max_files = FILES_DEFAULT_MAX_FILES;
    cfg->cleanup_batch_size = CLEANUP_DEFAULT_BATCH;

    int rc = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, config) {
        if (strcmp(item->string, "cleanup_batch_size") == 0) {
            if (!cJSON_IsNumber(item) || item->valuedouble < 1 ||
                item->valuedouble > CLEANUP_MAX_BATCH ||
                item->valuedouble != (double)(int)item->valuedouble) {
                bgt_plugin_log(p, BGT_LOG_ERR,
                               "config: cleanup_batch_size must be an integer 1..%d",
                               CLEANUP_MAX_BATCH);
                rc = -EINVAL;
                break;
            }
            cfg->cleanup_batch_size = (int)item->valuedouble;
        } else if (strcmp(item->string, "allowed_roots") == 0) {
            if ((rc = read_allowed_roots(p, item, cfg)) < 0)
                break;
        } else if (strcmp(item->string, "max_files") == 0) {
            if (!cJSON_IsNumber(item) || item->valuedouble < 1 ||
                item->valuedouble > FILES_MAX_MAX_FILES ||
                item->valuedouble != (double)(long)item->valuedouble) {
                bgt_plugin_log(p, BGT_LOG_ERR, "config: max_files must be an integer 1..%d",
                               FILES_MAX_MAX_FILES);
                rc = -EINVAL;
                break;
            }
            cfg->max_files = (long)item->valuedouble;
        } else {
            bgt_plugin_log(p, BGT_LOG_WARNING, "config: unknown setting %s ignored",
                           item->string);
        }
    }
    if (rc < 0) {
        files_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

/* Called once at load: read the config, register files.checksum and files.cleanup. */
static int files_init(bgt_plugin *p, const cJSON *config)
{
    struct files_config *ccfg;
    int rc = files_config_read(p, config, &ccfg);
    if (rc < 0)
        return rc;
    /* The host frees each handler's udata once: files.checksum gets a copy of its own, made
     * now (without the roots, which only files.cleanup reads), because ccfg is the host's
     * from its registration on. */
    struct files_config *cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL) {
        files_config_free(ccfg);
        return -ENOMEM;
    }
    cfg->max_files = ccfg->max_files;
    cfg->cleanup_batch_size = ccfg->cleanup_batch_size;
    /* cfg passes to the host here, whatever the call returns. */
    rc = bgt_register_handler(p, (bgt_handler_def){
                                     .name = "files.checksum",
                                     .kind = BGT_SINGLE,
                                     .run = files_checksum,
                                     .udata = cfg,
                                     .udata_free = files_config_free,
                                 });
    if (rc < 0) {
        files_config_free(ccfg);
        return rc;
    }
    /* The batches are made by the split, not by the host (batch_size stays 0), because the
     * size is the task's own args.batch_size, which the host's per-handler setting cannot
     * follow. */
    return bgt_register_handler(p, (bgt_handler_def){
                                       .name = "files.cleanup",
                                       .kind = BGT_PARALLEL,
                                       .run = cleanup_run,
                                       .split = cleanup_split,
                                       .merge = cleanup_merge,
                                       .udata = ccfg,
                                       .udata_free = files_config_free,
                                   });
}

BGT_PLUGIN("files", "1.0", files_init, NULL);

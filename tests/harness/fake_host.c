/*
 * fake_host.c - the fake host of the unit tests (fake_host.h): the host
 * table fake_api, the fake task side, plugins loaded through the real loader,
 * and scratch files.
 */
#include "fake_host.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "plugin.h"
#include "registry.h"
#include "util.h"

/* The plugins fake_load_plugin loaded, and the one it is loading (its init logs). */
static fake_plugin *loaded;
static fake_plugin *loading;

/* Append one formatted line to a fixed log buffer (silently truncated when full). */
static void log_append(char *log, size_t size, const char *fmt, va_list ap)
{
    size_t len = strlen(log);
    if (len + 2 >= size)
        return;
    vsnprintf(log + len, size - len - 1, fmt, ap);
    strcat(log, "\n");
}

/* ---- the table ---- */

/* The loader's log (on stderr), and a copy in the fake plugin's own log. */
static void fake_plugin_log(bgt_plugin *p, int level, const char *fmt, va_list ap)
{
    fake_plugin *fp = loading;
    for (fake_plugin *it = loaded; it && !fp; it = it->next)
        if (it->p == p)
            fp = it;
    if (fp) {
        va_list copy;
        va_copy(copy, ap);
        log_append(fp->log, sizeof fp->log, fmt, copy);
        va_end(copy);
    }
    plugin_api_log(p, level, fmt, ap);
}

static const char *fake_task_id(const bgt_task *t)
{
    return "00000000-0000-4000-8000-000000000000";
}
static const char *fake_task_handler(const bgt_task *t) { return t->handler; }
static uint32_t fake_task_attempt(const bgt_task *t) { return t->attempt; }
static int fake_task_subtask(const bgt_task *t) { return t->subtask; }

static void fake_progress(bgt_task *t, double current, double total, const char *message)
{
    int n = atomic_load(&t->nprogress);
    if (n < FAKE_MAX_PROGRESS) {
        t->progress[n].current = current;
        t->progress[n].total = total;
        snprintf(t->progress[n].message, sizeof t->progress[n].message, "%s",
                 message ? message : "");
    }
    atomic_store(&t->nprogress, n + 1);
    if (t->cancel_after_progress && current > 0)
        atomic_store(&t->cancel, true);
}

static void fake_last_progress(const bgt_task *t, double *current, double *total)
{
    if (current)
        *current = t->prev_current;
    if (total)
        *total = t->prev_total;
}

static bool fake_cancelled(const bgt_task *t)
{
    int polls = atomic_fetch_add(&((bgt_task *)t)->cancel_polls, 1) + 1;
    if (t->cancel_after_polls > 0 && polls >= t->cancel_after_polls)
        atomic_store(&((bgt_task *)t)->cancel, true);
    return atomic_load(&t->cancel);
}

static int fake_set_result(bgt_task *t, const cJSON *result)
{
    if (!result)
        return -EINVAL;
    char *text = cJSON_PrintUnformatted(result);
    if (!text)
        return -ENOMEM;
    if (t->max_result > 0 && strlen(text) > t->max_result) {
        free(text);
        return -E2BIG;
    }
    free(t->result);
    t->result = text;
    return 0;
}

static void fake_set_error(bgt_task *t, const char *fmt, va_list ap)
{
    free(t->error);
    if (vasprintf(&t->error, fmt, ap) < 0)
        t->error = NULL;
}

static void fake_task_log(bgt_task *t, int level, const char *fmt, va_list ap)
{
    log_append(t->log, sizeof t->log, fmt, ap);
}

static int fake_submit(bgt_task *t, const char *hname, const cJSON *args, char *id_out)
{
    return -EIO;
}

/* Like the host: only in a split, up to the limit; the args are copied (serialized). */
static int fake_add_subtask(bgt_task *t, const cJSON *args)
{
    if (!t->in_split)
        return -EPERM;
    if (!args)
        return -EINVAL;
    if (t->nsubtasks >= (t->max_subtasks > 0 ? t->max_subtasks : FAKE_MAX_SUBTASKS))
        return -E2BIG;
    char *text = cJSON_PrintUnformatted(args);
    if (!text)
        return -ENOMEM;
    t->subtasks = xrealloc(t->subtasks, (size_t)(t->nsubtasks + 1) * sizeof *t->subtasks);
    t->subtasks[t->nsubtasks++] = text;
    return 0;
}

const bgt_api fake_api = {
    .size = sizeof(bgt_api),
    .abi_major = BGT_ABI_MAJOR,
    .abi_minor = BGT_ABI_MINOR,
    .register_handler = plugin_api_register_handler,
    .register_hook = plugin_api_register_hook,
    .plugin_log = fake_plugin_log,
    .task_id = fake_task_id,
    .task_handler = fake_task_handler,
    .task_attempt = fake_task_attempt,
    .task_subtask = fake_task_subtask,
    .progress = fake_progress,
    .last_progress = fake_last_progress,
    .cancelled = fake_cancelled,
    .set_result = fake_set_result,
    .set_error = fake_set_error,
    .task_log = fake_task_log,
    .submit = fake_submit,
    .add_subtask = fake_add_subtask,
};

/* ---- files ---- */

const char *fake_build_dir(void)
{
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

void fake_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(path);
        return;
    }
    chmod(path, 0755);
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            char *sub = xasprintf("%s/%s", path, de->d_name);
            fake_remove_tree(sub);
            free(sub);
        }
        closedir(d);
    }
    rmdir(path);
}

void fake_copy_file(const char *from, const char *to, mode_t mode)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        fail_msg("%s: %s (build the fixtures with make first)", from, strerror(errno));
    int outfd = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (outfd < 0)
        fail_msg("%s: %s", to, strerror(errno));
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        assert_int_equal(write(outfd, buf, (size_t)n), n);
    assert_int_equal(n, 0);
    assert_int_equal(fchmod(outfd, mode), 0);
    close(in);
    close(outfd);
}

/* ---- plugins ---- */

fake_plugin *fake_load_plugin(const char *name, const char *config, int *rc)
{
    char path[PATH_MAX], err[512];
    snprintf(path, sizeof path, "%s/plugins/%s.so", fake_build_dir(), name);
    fake_plugin *fp = xcalloc(1, sizeof *fp);
    fp->reg = xcalloc(1, sizeof *fp->reg);
    registry_init(fp->reg);
    cJSON *cfg = cJSON_Parse(config);
    assert_non_null(cfg);
    loading = fp;
    *rc = plugin_load(path, NULL, cfg, fp->reg, &fake_api, &fp->p, err, sizeof err);
    loading = NULL;
    cJSON_Delete(cfg);
    fp->next = loaded;
    loaded = fp;
    if (*rc < 0)
        return fp; /* nothing stays registered: the loader undid it */
    assert_string_equal(fp->p->name, name);
    fp->entry = fp->p->entry;
    fp->dl = fp->p->dl;
    const handler *hs[FAKE_MAX_HANDLERS];
    size_t n = registry_handlers(fp->reg, hs, FAKE_MAX_HANDLERS);
    assert_true(n <= FAKE_MAX_HANDLERS);
    for (size_t i = 0; i < n; i++)
        fp->handlers[fp->nhandlers++] = hs[i]->def;
    fp->nhooks = (int)registry_hooks(fp->reg, NULL, 0);
    return fp;
}

void fake_unload_plugin(fake_plugin *fp)
{
    if (!fp)
        return;
    for (fake_plugin **pp = &loaded; *pp; pp = &(*pp)->next)
        if (*pp == fp) {
            *pp = fp->next;
            break;
        }
    plugin_unload(fp->p);
    registry_destroy(fp->reg);
    free(fp->reg);
    free(fp);
}

const bgt_handler_def *fake_find_handler(const fake_plugin *p, const char *name)
{
    for (int i = 0; i < p->nhandlers; i++)
        if (strcmp(p->handlers[i].name, name) == 0)
            return &p->handlers[i];
    fail_msg("plugin %s has no handler %s", p->entry ? p->entry->name : "?", name);
    return NULL;
}

/* ---- running ---- */

bgt_task *fake_task_new(uint32_t attempt)
{
    bgt_task *t = xcalloc(1, sizeof *t);
    t->attempt = attempt;
    t->subtask = -1;
    return t;
}

void fake_task_free(bgt_task *t)
{
    for (int i = 0; i < t->nsubtasks; i++)
        free(t->subtasks[i]);
    free(t->subtasks);
    free(t->result);
    free(t->error);
    free(t);
}

bgt_status fake_run(fake_plugin *p, const char *hname, bgt_task *t, const char *args)
{
    const bgt_handler_def *h = fake_find_handler(p, hname);
    cJSON *a = cJSON_Parse(args);
    assert_non_null(a);
    t->handler = h->name;
    bgt_status st = h->run(t, a, h->udata);
    cJSON_Delete(a);
    return st;
}

void fake_assert_json(const char *got, const char *want)
{
    assert_non_null(got);
    cJSON *g = cJSON_Parse(got), *w = cJSON_Parse(want);
    assert_non_null(g);
    assert_non_null(w);
    bool same = cJSON_Compare(g, w, true);
    cJSON_Delete(g);
    cJSON_Delete(w);
    if (!same)
        fail_msg("JSON differs:\n got  %s\n want %s", got, want);
}

void fake_expect_failure(fake_plugin *p, const char *hname, const char *args, const char *message)
{
    bgt_task *t = fake_task_new(1);
    assert_int_equal(fake_run(p, hname, t, args), BGT_FAILED);
    assert_non_null(t->error);
    if (strcmp(t->error, message) != 0)
        fail_msg("%s %s: error \"%s\", want \"%s\"", hname, args, t->error, message);
    assert_null(t->result);
    fake_task_free(t);
}

bgt_status fake_run_split(fake_plugin *p, const char *hname, bgt_task *t, const char *args)
{
    const bgt_handler_def *h = fake_find_handler(p, hname);
    assert_int_equal(h->kind, BGT_PARALLEL);
    assert_non_null(h->split);
    cJSON *a = cJSON_Parse(args);
    assert_non_null(a);
    t->handler = h->name;
    t->in_split = true;
    bgt_status st = h->split(t, a, h->udata);
    t->in_split = false;
    cJSON_Delete(a);
    return st;
}

int fake_expect_split_failure(fake_plugin *p, const char *hname, const char *args, int max_subtasks,
                              const char *message)
{
    bgt_task *t = fake_task_new(1);
    t->max_subtasks = max_subtasks;
    bgt_status st = fake_run_split(p, hname, t, args);
    if (st != BGT_FAILED || !t->error || strcmp(t->error, message) != 0)
        fail_msg("%s split %s: status %d, error \"%s\", want \"%s\"", hname, args, st,
                 t->error ? t->error : "none", message);
    assert_null(t->result);
    int n = t->nsubtasks;
    fake_task_free(t);
    return n;
}

bgt_task *fake_run_subtask(fake_plugin *p, const char *hname, int index, const char *args,
                           bgt_status *st)
{
    bgt_task *t = fake_task_new(1);
    t->subtask = index;
    *st = fake_run(p, hname, t, args);
    return t;
}

bgt_status fake_run_merge(fake_plugin *p, const char *hname, bgt_task *t, const char *results)
{
    const bgt_handler_def *h = fake_find_handler(p, hname);
    assert_non_null(h->merge);
    cJSON *r = cJSON_Parse(results);
    assert_non_null(r);
    t->handler = h->name;
    bgt_status st = h->merge(t, r, h->udata);
    cJSON_Delete(r);
    return st;
}

bgt_task *fake_run_parallel(fake_plugin *p, const char *hname, const char *args, bgt_status *merged,
                            int *failed)
{
    bgt_task *t = fake_task_new(1);
    bgt_status st = fake_run_split(p, hname, t, args);
    if (st != BGT_OK)
        fail_msg("%s %s: split status %d (error: %s)", hname, args, st,
                 t->error ? t->error : "none");
    cJSON *results = cJSON_CreateArray();
    int nfailed = 0;
    for (int i = 0; i < t->nsubtasks; i++) {
        bgt_task *s = fake_run_subtask(p, hname, i, t->subtasks[i], &st);
        cJSON *r = st == BGT_OK && s->result ? cJSON_Parse(s->result) : cJSON_CreateNull();
        assert_non_null(r);
        cJSON_AddItemToArray(results, r);
        nfailed += st != BGT_OK;
        fake_task_free(s);
    }
    char *text = cJSON_PrintUnformatted(results);
    cJSON_Delete(results);
    *merged = nfailed < t->nsubtasks ? fake_run_merge(p, hname, t, text) : BGT_FAILED;
    free(text);
    if (failed)
        *failed = nfailed;
    return t;
}

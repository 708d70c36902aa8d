/*
 * fake_host.h - a fake bgtask host for plugin unit tests: a bgt_api table written here,
 * and helpers to load a plugin from $BUILD/plugins (BUILD defaults to "build") as the host
 * would, run its handlers, and check what they reported.
 *
 * register_handler records the definitions; the task services work on the struct bgt_task
 * below, which records every progress report, the result (serialized at set_result, as the
 * host does), the error text and the task's log, and serves the attempt number, the subtask
 * index, a cancel flag and the progress of "previous attempts". For parallel handlers,
 * add_subtask records the subtasks a split adds (only while run_split runs it, as the host
 * allows it only in a split) up to max_subtasks.
 *
 * test_plugins.c, test_plugins_parallel.c and test_cleanup.c share it. Everything is static:
 * include it from one test file per binary.
 */
#ifndef FAKE_HOST_H
#define FAKE_HOST_H

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "bgtask.h"

#define MAX_HANDLERS 16
#define MAX_PROGRESS 1024
/* The host's default tasks.max_subtasks. */
#define FAKE_MAX_SUBTASKS 10000

/* Helpers a test file may leave unused. */
#define FAKE_HELPER __attribute__((unused)) static

/* A loaded plugin: its dlopen handle, entry and what its init registered. */
struct bgt_plugin {
    void *dl;
    const bgt_plugin_entry_t *entry;
    bool in_init;
    int nhandlers;
    bgt_handler_def handlers[MAX_HANDLERS];
    char names[MAX_HANDLERS][BGT_NAME_MAX + 1]; /* the copies of handlers[i].name */
    int nhooks;
    char log[4096]; /* every plugin_log line */
};

/* One progress report. */
struct progress_call {
    double current, total;
    char message[64];
};

/* A running attempt (or a split, a subtask, a merge), as the fake host keeps it. */
struct bgt_task {
    const char *handler;
    uint32_t attempt;
    int subtask;                     /* what task_subtask serves: -1, or a subtask's index */
    double prev_current, prev_total; /* what last_progress serves */
    size_t max_result;               /* 0: no limit; else set_result's -E2BIG limit */
    atomic_bool cancel;
    atomic_int cancel_polls;         /* calls of cancelled() */
    int cancel_after_polls;          /* > 0: set cancel at that call of cancelled() */
    bool cancel_after_progress;      /* set cancel at the first report with current > 0 */
    atomic_int nprogress;            /* all reports, even past MAX_PROGRESS */
    struct progress_call progress[MAX_PROGRESS];
    char *result;     /* serialized JSON */
    char *error;
    char log[4096];   /* every task_log line */
    bool in_split;    /* add_subtask is allowed (run_split sets it) */
    int max_subtasks; /* add_subtask's -E2BIG limit; 0: FAKE_MAX_SUBTASKS */
    int nsubtasks;
    char **subtasks;  /* the serialized args of each subtask added */
};

/* Append one formatted line to a fixed log buffer (silently truncated when full). */
static void log_append(char *log, size_t size, const char *fmt, va_list ap)
{
    size_t len = strlen(log);
    if (len + 2 >= size)
        return;
    vsnprintf(log + len, size - len - 1, fmt, ap);
    strcat(log, "\n");
}

static bool name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > BGT_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return false;
    }
    return true;
}

/* Like the host: refuse outside init, check the definition, copy it; udata passes to us. */
static int fake_register_handler(bgt_plugin *p, const bgt_handler_def *def)
{
    int rc = 0;
    if (!p->in_init)
        rc = -EPERM;
    else if (def->size != sizeof(bgt_handler_def) || !name_ok(def->name) || def->run == NULL ||
             p->nhandlers == MAX_HANDLERS)
        rc = -EINVAL;
    for (int i = 0; rc == 0 && i < p->nhandlers; i++)
        if (strcmp(p->names[i], def->name) == 0)
            rc = -EEXIST;
    if (rc < 0) {
        if (def->udata_free != NULL)
            def->udata_free(def->udata);
        return rc;
    }
    int i = p->nhandlers++;
    p->handlers[i] = *def;
    snprintf(p->names[i], sizeof p->names[i], "%s", def->name);
    p->handlers[i].name = p->names[i];
    return 0;
}

static int fake_register_hook(bgt_plugin *p, const bgt_hook_def *def)
{
    /* None of the shipped plugins registers a hook; count them, and drop udata at once. */
    p->nhooks++;
    if (def->udata_free != NULL)
        def->udata_free(def->udata);
    return 0;
}

static void fake_plugin_log(bgt_plugin *p, int level, const char *fmt, va_list ap)
{
    log_append(p->log, sizeof p->log, fmt, ap);
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
    if (n < MAX_PROGRESS) {
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
    if (current != NULL)
        *current = t->prev_current;
    if (total != NULL)
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
    if (result == NULL)
        return -EINVAL;
    char *text = cJSON_PrintUnformatted(result);
    if (text == NULL)
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

static int fake_submit(bgt_task *t, const char *handler, const cJSON *args, char *id_out)
{
    return -EIO;
}

/* Like the host: only in a split, up to the limit; the args are copied (serialized). */
static int fake_add_subtask(bgt_task *t, const cJSON *args)
{
    if (!t->in_split)
        return -EPERM;
    if (args == NULL)
        return -EINVAL;
    if (t->nsubtasks >= (t->max_subtasks > 0 ? t->max_subtasks : FAKE_MAX_SUBTASKS))
        return -E2BIG;
    char *text = cJSON_PrintUnformatted(args);
    if (text == NULL)
        return -ENOMEM;
    char **v = realloc(t->subtasks, (size_t)(t->nsubtasks + 1) * sizeof *v);
    if (v == NULL) {
        free(text);
        return -ENOMEM;
    }
    t->subtasks = v;
    t->subtasks[t->nsubtasks++] = text;
    return 0;
}

static const bgt_api fake_api = {
    .size = sizeof(bgt_api),
    .abi_major = BGT_ABI_MAJOR,
    .abi_minor = BGT_ABI_MINOR,
    .register_handler = fake_register_handler,
    .register_hook = fake_register_hook,
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

FAKE_HELPER const char *build_dir(void)
{
    const char *b = getenv("BUILD");
    return b != NULL && *b != '\0' ? b : "build";
}

/* Drop what p registered, as the host does after a failed init or at unload. */
static void drop_handlers(bgt_plugin *p)
{
    for (int i = 0; i < p->nhandlers; i++)
        if (p->handlers[i].udata_free != NULL)
            p->handlers[i].udata_free(p->handlers[i].udata);
    p->nhandlers = 0;
}

/*
 * dlopen $BUILD/plugins/<name>.so, check its entry and run its init with config (JSON
 * text). *init_rc gets what init returned; after a failed init nothing stays registered.
 * Loading the same file again runs its init again into a fresh registry.
 */
FAKE_HELPER bgt_plugin *load_plugin(const char *name, const char *config, int *init_rc)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/plugins/%s.so", build_dir(), name);
    bgt_plugin *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (p->dl == NULL)
        fail_msg("%s: dlopen failed: %s", path, dlerror());
    p->entry = dlsym(p->dl, BGT_ENTRY_SYMBOL);
    assert_non_null(p->entry);
    assert_int_equal(p->entry->abi_major, BGT_ABI_MAJOR);
    assert_true(p->entry->abi_minor <= BGT_ABI_MINOR);
    assert_int_equal(p->entry->size, sizeof(bgt_plugin_entry_t));
    assert_string_equal(p->entry->name, name);

    cJSON *cfg = cJSON_Parse(config);
    assert_non_null(cfg);
    p->in_init = true;
    *init_rc = p->entry->init(p, &fake_api, cfg);
    p->in_init = false;
    cJSON_Delete(cfg);
    if (*init_rc != 0)
        drop_handlers(p);
    return p;
}

FAKE_HELPER void unload_plugin(bgt_plugin *p)
{
    if (p == NULL)
        return;
    if (p->entry->fini != NULL)
        p->entry->fini(p);
    drop_handlers(p);
    dlclose(p->dl);
    free(p);
}

FAKE_HELPER const bgt_handler_def *find_handler(const bgt_plugin *p, const char *name)
{
    for (int i = 0; i < p->nhandlers; i++)
        if (strcmp(p->handlers[i].name, name) == 0)
            return &p->handlers[i];
    fail_msg("plugin %s has no handler %s", p->entry->name, name);
    return NULL;
}

FAKE_HELPER bgt_task *task_new(uint32_t attempt)
{
    bgt_task *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->attempt = attempt;
    t->subtask = -1;
    return t;
}

FAKE_HELPER void task_free(bgt_task *t)
{
    for (int i = 0; i < t->nsubtasks; i++)
        free(t->subtasks[i]);
    free(t->subtasks);
    free(t->result);
    free(t->error);
    free(t);
}

/* Run handler of p on t with args (JSON text), as a worker thread would. */
FAKE_HELPER bgt_status run_handler(bgt_plugin *p, const char *handler, bgt_task *t,
                                   const char *args)
{
    const bgt_handler_def *h = find_handler(p, handler);
    cJSON *a = cJSON_Parse(args);
    assert_non_null(a);
    t->handler = h->name;
    bgt_status st = h->run(t, a, h->udata);
    cJSON_Delete(a);
    return st;
}

FAKE_HELPER double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Assert that JSON text got means the same as JSON text want. */
FAKE_HELPER void assert_json(const char *got, const char *want)
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

/* Run one handler on a fresh task (attempt 1) and check that it fails with message. */
FAKE_HELPER void expect_failure(bgt_plugin *p, const char *handler, const char *args,
                           const char *message)
{
    bgt_task *t = task_new(1);
    assert_int_equal(run_handler(p, handler, t, args), BGT_FAILED);
    assert_non_null(t->error);
    if (strcmp(t->error, message) != 0)
        fail_msg("%s %s: error \"%s\", want \"%s\"", handler, args, t->error, message);
    assert_null(t->result);
    task_free(t);
}

/*
 * Run the split of parallel handler `handler` of p on t with args (JSON text), as the host
 * does on a task's first claim: add_subtask works only meanwhile. t->subtasks gets what it
 * added.
 */
FAKE_HELPER bgt_status run_split(bgt_plugin *p, const char *handler, bgt_task *t,
                                 const char *args)
{
    const bgt_handler_def *h = find_handler(p, handler);
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

/* Run subtask `index` of handler with its args (JSON text) on a fresh task; caller frees. */
FAKE_HELPER bgt_task *run_subtask(bgt_plugin *p, const char *handler, int index,
                                  const char *args, bgt_status *st)
{
    bgt_task *t = task_new(1);
    t->subtask = index;
    *st = run_handler(p, handler, t, args);
    return t;
}

/* Run the merge of handler on t with results (JSON text, an array). */
FAKE_HELPER bgt_status run_merge(bgt_plugin *p, const char *handler, bgt_task *t,
                                 const char *results)
{
    const bgt_handler_def *h = find_handler(p, handler);
    assert_non_null(h->merge);
    cJSON *r = cJSON_Parse(results);
    assert_non_null(r);
    t->handler = h->name;
    bgt_status st = h->merge(t, r, h->udata);
    cJSON_Delete(r);
    return st;
}

/*
 * Run a whole parallel task the way the host does, one subtask after the other: split,
 * every subtask (a failed one's result is null), merge (only if one succeeded). Returns the
 * task (caller frees); *merged is the merge's status, or BGT_FAILED when none succeeded.
 * failed (may be NULL) gets the number of subtasks that did not succeed.
 */
FAKE_HELPER bgt_task *run_parallel(bgt_plugin *p, const char *handler, const char *args,
                                   bgt_status *merged, int *failed)
{
    bgt_task *t = task_new(1);
    bgt_status st = run_split(p, handler, t, args);
    if (st != BGT_OK)
        fail_msg("%s %s: split status %d (error: %s)", handler, args, st,
                 t->error ? t->error : "none");
    cJSON *results = cJSON_CreateArray();
    int nfailed = 0;
    for (int i = 0; i < t->nsubtasks; i++) {
        bgt_task *s = run_subtask(p, handler, i, t->subtasks[i], &st);
        cJSON *r = st == BGT_OK && s->result ? cJSON_Parse(s->result) : cJSON_CreateNull();
        assert_non_null(r);
        cJSON_AddItemToArray(results, r);
        nfailed += st != BGT_OK;
        task_free(s);
    }
    char *text = cJSON_PrintUnformatted(results);
    cJSON_Delete(results);
    *merged = nfailed < t->nsubtasks ? run_merge(p, handler, t, text) : BGT_FAILED;
    free(text);
    if (failed != NULL)
        *failed = nfailed;
    return t;
}

/*
 * Run the split of handler (with the host's max_subtasks, 0 for the default) and check that
 * it fails with message. Returns the number of subtasks it added before it failed (the host
 * drops them).
 */
FAKE_HELPER int expect_split_failure(bgt_plugin *p, const char *handler, const char *args,
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

#endif /* FAKE_HOST_H */

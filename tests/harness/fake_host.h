/*
 * fake_host.h - the fake host of the unit tests (part of the harness
 * library: fake_host.c). One host table, fake_api: its registration and
 * plugin-log entries are the real loader's (so plugins are loaded with
 * plugin_load, its ABI and trust checks, into a registry), and its task
 * entries work on the fake struct bgt_task below, which records every
 * progress report, the result (serialized at set_result, as the host does),
 * the error and the task's log, and serves the attempt, the subtask index, a
 * cancel flag and the progress of "previous attempts". add_subtask records
 * what a split adds, only while fake_run_split runs it, up to max_subtasks.
 *
 * The loader's tests (test_plugin, test_plugin_trust) hand fake_api to
 * plugin_load themselves; the plugins' tests (test_plugins,
 * test_plugins_parallel, test_cleanup) load a shipped plugin from $BUILD/plugins with
 * fake_load_plugin and run its handlers, splits and merges as the host would.
 */
#ifndef BGT_FAKE_HOST_H
#define BGT_FAKE_HOST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bgtask.h"

struct registry;

#define FAKE_MAX_HANDLERS 16
#define FAKE_MAX_PROGRESS 1024
/* The host's default tasks.max_subtasks. */
#define FAKE_MAX_SUBTASKS 10000

/* The host table of the unit tests. */
extern const bgt_api fake_api;

/* A plugin the fake host loaded, and what its init registered. */
typedef struct fake_plugin {
    struct bgt_plugin *p;            /* the loader's; NULL when the load failed */
    struct registry *reg;            /* its own registry */
    const bgt_plugin_entry_t *entry; /* as the loader found it (NULL when it failed) */
    void *dl;                        /* its dlopen handle (NULL when it failed) */
    int nhandlers;
    bgt_handler_def handlers[FAKE_MAX_HANDLERS]; /* copies of the registered definitions */
    int nhooks;
    char log[4096]; /* every line it logged with bgt_plugin_log */
    struct fake_plugin *next;
} fake_plugin;

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
    atomic_int cancel_polls;    /* calls of cancelled() */
    int cancel_after_polls;     /* > 0: set cancel at that call of cancelled() */
    bool cancel_after_progress; /* set cancel at the first report with current > 0 */
    atomic_int nprogress;       /* all reports, even past FAKE_MAX_PROGRESS */
    struct progress_call progress[FAKE_MAX_PROGRESS];
    char *result; /* serialized JSON */
    char *error;
    char log[4096];   /* every task_log line */
    bool in_split;    /* add_subtask is allowed (fake_run_split sets it) */
    int max_subtasks; /* add_subtask's -E2BIG limit; 0: FAKE_MAX_SUBTASKS */
    int nsubtasks;
    char **subtasks; /* the serialized args of each subtask added */
};

/* $BUILD, else "build" (relative to the current folder). */
const char *fake_build_dir(void);
/* Remove a folder tree (made writable first), or a file. */
void fake_remove_tree(const char *path);
/* Copy a file, then give the copy mode (not subject to the umask); fails the test on error. */
void fake_copy_file(const char *from, const char *to, mode_t mode);

/*
 * Load $BUILD/plugins/<name>.so with config (JSON text) into a registry of
 * its own, as the host does. *rc gets plugin_load's return (0, or a negative
 * errno when it or its init failed: then nothing stays registered, and log
 * says what the plugin said). Free with fake_unload_plugin.
 */
fake_plugin *fake_load_plugin(const char *name, const char *config, int *rc);
void fake_unload_plugin(fake_plugin *p);
/* The definition of handler name; fails the test when p has none. */
const bgt_handler_def *fake_find_handler(const fake_plugin *p, const char *name);

/* A fresh task of that attempt (subtask -1). Free with fake_task_free. */
bgt_task *fake_task_new(uint32_t attempt);
void fake_task_free(bgt_task *t);
/* Run handler of p on t with args (JSON text), as a worker thread would. */
bgt_status fake_run(fake_plugin *p, const char *handler, bgt_task *t, const char *args);
/* Run one handler on a fresh task (attempt 1) and check that it fails with message. */
void fake_expect_failure(fake_plugin *p, const char *handler, const char *args,
                         const char *message);
/*
 * Run the split of handler (with the host's max_subtasks, 0 for the default) and check that
 * it fails with message. Returns the number of subtasks it added before it failed (the host
 * drops them).
 */
int fake_expect_split_failure(fake_plugin *p, const char *handler, const char *args,
                              int max_subtasks, const char *message);
/*
 * Run the split of parallel handler `handler` of p on t with args (JSON text), as the host
 * does on a task's first claim: add_subtask works only meanwhile. t->subtasks gets what it
 * added.
 */
bgt_status fake_run_split(fake_plugin *p, const char *handler, bgt_task *t, const char *args);
/* Run subtask `index` of handler with its args (JSON text) on a fresh task; caller frees. */
bgt_task *fake_run_subtask(fake_plugin *p, const char *handler, int index, const char *args,
                           bgt_status *st);
/* Run the merge of handler on t with results (JSON text, an array). */
bgt_status fake_run_merge(fake_plugin *p, const char *handler, bgt_task *t, const char *results);
/*
 * Run a whole parallel task the way the host does, one subtask after the other: split,
 * every subtask (a failed one's result is null), merge (only if one succeeded). Returns the
 * task (caller frees); *merged is the merge's status, or BGT_FAILED when none succeeded.
 * failed (may be NULL) gets the number of subtasks that did not succeed.
 */
bgt_task *fake_run_parallel(fake_plugin *p, const char *handler, const char *args,
                            bgt_status *merged, int *failed);

/* Assert that JSON text got means the same as JSON text want. */
void fake_assert_json(const char *got, const char *want);

#endif

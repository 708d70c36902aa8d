/*
 * bgtask.h - the one header a bgtask handler plugin includes.
 *
 * A plugin is a shared object that exports exactly one data symbol,
 * `bgt_plugin_entry` (defined by BGT_PLUGIN below). The host reads its version
 * fields before it runs any plugin code, then calls the plugin's init function
 * with a `const` table of host services (struct bgt_api) and the plugin's own
 * config section as cJSON. The plugin never links against the host: every host
 * service is reached through that table, wrapped below in short inline
 * functions so plugin code reads plainly: `bgt_progress(t, 3, 10, "copying")`.
 *
 * Ownership, in one rule: whatever one side passes to the other is borrowed for
 * the length of that call and copied if it is kept. Strings, cJSON values and
 * results a plugin hands to the host are copied by the host; what the host
 * passes to a callback stays the host's. The only hand-over is a
 * (udata, udata_free) pair in a definition: it passes to the host at the
 * registering call, whatever that call returns, and the host calls udata_free
 * exactly once, when it no longer needs udata (also when registration fails).
 *
 * Build a plugin:
 *     cc -shared -fPIC -fvisibility=hidden $(pkg-config --cflags bgtask-sdk) \
 *        x.c -o x.so $(pkg-config --libs libcjson)
 *
 * ABI changelog (major.minor). A new minor only appends: new entries at the
 * end of struct bgt_api, new fields at the end of the definition structs
 * (each carries its own size). Anything else bumps the major.
 *   1.0  first release: handlers (single, parallel with split), hooks,
 *        progress, cancellation, results, errors, logging, submission.
 */
#ifndef BGTASK_H
#define BGTASK_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BGT_ABI_MAJOR 1
#define BGT_ABI_MINOR 0

/* The symbol the host looks up in every plugin. */
#define BGT_ENTRY_SYMBOL "bgt_plugin_entry"

/* Longest handler name; names match [a-z0-9][a-z0-9._-]{0,62}. */
#define BGT_NAME_MAX 63
/* Length of a task id in its dashed text form, without the NUL. */
#define BGT_ID_LEN 36

/* What a run function returns. */
typedef enum bgt_status {
    BGT_OK = 0,        /* done; the result set with bgt_set_result is kept */
    BGT_FAILED = 1,    /* final failure; message from bgt_set_error */
    BGT_RETRY = 2,     /* transient failure: run again after a backoff (counts an attempt) */
    BGT_CANCELLED = 3, /* stopped because bgt_cancelled() said so */
} bgt_status;

typedef enum bgt_kind {
    BGT_SINGLE = 0,   /* one run function call per attempt */
    BGT_PARALLEL = 1, /* one run function call per subtask, side by side */
} bgt_kind;

/* Log levels, as syslog's. */
enum {
    BGT_LOG_ERR = 3,
    BGT_LOG_WARNING = 4,
    BGT_LOG_NOTICE = 5,
    BGT_LOG_INFO = 6,
    BGT_LOG_DEBUG = 7,
};

typedef struct bgt_plugin bgt_plugin; /* a loaded plugin, owned by the host */
typedef struct bgt_task bgt_task;     /* a running attempt (or subtask), owned by the host */

/*
 * The run function of a handler. `args` is the task's args (for a subtask of
 * a parallel task: that subtask's args), borrowed for the call. It is called
 * on a host worker thread; several calls run at once on different threads.
 */
typedef bgt_status (*bgt_run_fn)(bgt_task *t, const cJSON *args, void *udata);

/*
 * The split function of a parallel handler: called once, on a worker thread at
 * the first claim of a task that was submitted without subtasks (args.subtasks,
 * however the submitter gave them: a task given its subtasks is not split); it
 * calls bgt_add_subtask once per subtask. Its outcome is persisted, so recovery
 * never splits again.
 * Returning anything but BGT_OK ends the task (BGT_FAILED with bgt_set_error).
 */
typedef bgt_status (*bgt_split_fn)(bgt_task *t, const cJSON *args, void *udata);

/*
 * The merge function of a parallel handler, optional: called once, after
 * every subtask ended and at least one succeeded, on a worker thread, with
 * `results` (borrowed) an array with one entry per subtask: its result, or
 * null for a subtask that failed or set none. It sets the task's result with
 * bgt_set_result (e.g. totals). Without one the task's result is
 * {"succeeded": S, "failed": F}. Its status is the task's outcome when it is
 * not BGT_OK.
 */
typedef bgt_status (*bgt_merge_fn)(bgt_task *t, const cJSON *results, void *udata);

/* What a parallel task does when a subtask fails. */
typedef enum bgt_on_failure {
    BGT_CONTINUE = 0,  /* run the others; the task ends with a partial success */
    BGT_FAIL_FAST = 1, /* cancel the running siblings, start no more, end FAILURE */
} bgt_on_failure;

/*
 * A handler definition, passed to bgt_register_handler (which copies it).
 * Use designated initializers; zero means "the host's default" for every
 * numeric field.
 */
typedef struct bgt_handler_def {
    size_t size;            /* sizeof(bgt_handler_def): set by bgt_register_handler */
    const char *name;       /* [a-z0-9][a-z0-9._-]{0,62}; copied */
    bgt_kind kind;          /* BGT_SINGLE or BGT_PARALLEL */
    bgt_run_fn run;         /* required */
    bgt_split_fn split;     /* parallel only, optional */
    bool not_retriable;     /* true: an orphaned attempt (its host died) fails instead of
                               being revived (Backend.AI's LocalBgtask) */
    int max_attempts;       /* claims allowed per task; 0 = host default */
    int parallelism;        /* parallel only: subtasks of one task at once; 0 = host default */
    double timeout_s;       /* per attempt; 0 = none. On expiry bgt_cancelled() turns true
                               and the attempt ends FAILURE "timed out" */
    int batch_size;         /* parallel only: items per subtask; 0 or 1 = one item each.
                               Above 1, a subtask's args are {"items": [...], "first": k}:
                               the items k, k+1, ... of the split */
    void *udata;            /* passed to run and split; owned by the host from the call on */
    void (*udata_free)(void *udata); /* called once when the handler is dropped; may be NULL */
    bgt_merge_fn merge;     /* parallel only, optional */
    bgt_on_failure on_failure; /* parallel only; a task may override it */
} bgt_handler_def;

/* What a hook callback learns about the attempt it runs around. Borrowed. */
typedef struct bgt_hook_info {
    const char *task_id;  /* 36-char id */
    const char *handler;  /* handler name */
    uint32_t attempt;     /* the attempt number (fencing token) */
    int subtask;          /* subtask index, or -1 for the task itself */
} bgt_hook_info;

/*
 * A hook definition, passed to bgt_register_hook (which copies it). Every
 * callback is optional and runs on a host worker thread, never with a host
 * lock held, so it may call back into the host: before and after on the
 * worker that runs the attempt (a parallel task's after on the worker that
 * concludes it), progress on the thread that reported it. A hook must not
 * block for long; what it fails at is its own affair: it never changes the
 * task's outcome.
 */
typedef struct bgt_hook_def {
    size_t size;       /* sizeof(bgt_hook_def): set by bgt_register_hook */
    const char *name;  /* for logs; copied */
    void (*before)(void *udata, const bgt_hook_info *info);
    void (*progress)(void *udata, const bgt_hook_info *info, double current, double total,
                     const char *message);
    /* The attempt (or subtask) ended after duration_s. outcome: the status it
     * ended with, its handler's return value (BGT_FAILED for one the host failed
     * before its handler ran, a corrupted record say). It is this attempt's
     * ending, not the task's: a BGT_RETRY past max_attempts still fails the
     * task, a BGT_CANCELLED that came from a timeout ends it FAILURE.
     * message: NULL after BGT_OK; otherwise why, borrowed: the error the
     * attempt set with bgt_set_error, else the host's own reason when it has
     * one ("Cancelled", "timed out after 5s", "lease lost"; a worker process of
     * an isolated plugin knows only the error, and passes NULL without one). */
    void (*after)(void *udata, const bgt_hook_info *info, bgt_status outcome,
                  double duration_s, const char *message);
    void *udata;                     /* owned by the host from the call on */
    void (*udata_free)(void *udata); /* called once when the hook is dropped; may be NULL */
} bgt_hook_def;

/*
 * The table of host services. The host owns it; it lives as long as the
 * plugin is loaded. Entries are only ever appended: check `size` before using
 * an entry that came after the minor your plugin was built for
 * (BGT_API_HAS(api, entry)).
 */
typedef struct bgt_api {
    uint32_t size;       /* sizeof the host's table */
    uint32_t abi_major;  /* the host's BGT_ABI_MAJOR */
    uint32_t abi_minor;  /* the host's BGT_ABI_MINOR */

    /* Registration: only during init. Returns 0, or -EINVAL (bad definition:
     * the reason is logged), -EEXIST (name taken: the log names both plugins),
     * -EPERM (called outside init). def is copied; udata passes to the host. */
    int (*register_handler)(bgt_plugin *p, const bgt_handler_def *def);
    int (*register_hook)(bgt_plugin *p, const bgt_hook_def *def);

    /* Logging with the plugin's name attached. fmt is borrowed. */
    void (*plugin_log)(bgt_plugin *p, int level, const char *fmt, va_list ap);

    /* The running attempt. Returned strings are borrowed for the call of the
     * run function that received t. */
    const char *(*task_id)(const bgt_task *t);
    const char *(*task_handler)(const bgt_task *t);
    uint32_t (*task_attempt)(const bgt_task *t); /* 1 for the first claim; it also counts
                                                    claims given back at shutdown, so it
                                                    is not the count charged against
                                                    max_attempts */
    int (*task_subtask)(const bgt_task *t); /* index, or -1 (the task itself, or a split) */

    /* Progress: throttled by the host (latest value wins; the last one is
     * always written before the terminal event). message may be NULL; copied. */
    void (*progress)(bgt_task *t, double current, double total, const char *message);
    /* The progress the previous attempts persisted (0/0 if none): lets a
     * handler resume where a lost attempt got to. Fills what is not NULL.
     * Progress is written at most once per progress_interval, so this may
     * trail the lost attempt's last report: a resuming handler may redo a
     * little work. */
    void (*last_progress)(const bgt_task *t, double *current, double *total);

    /* True once the attempt should stop: cancel requested, lease lost,
     * timeout, or host shutdown past its grace. Cheap: poll it often. */
    bool (*cancelled)(const bgt_task *t);

    /* The result of a successful attempt: serialized at the call (copied);
     * a later call replaces it. Returns 0, or -EINVAL for NULL, for a string
     * or key that is not valid UTF-8 or for nesting deeper than 64 arrays and
     * objects, -E2BIG over the host's tasks.max_result_bytes (the host logs
     * why). */
    int (*set_result)(bgt_task *t, const cJSON *result);
    /* The failure message (also used as the retry reason). Copied. */
    void (*set_error)(bgt_task *t, const char *fmt, va_list ap);

    /* Logging with the task id attached. */
    void (*task_log)(bgt_task *t, int level, const char *fmt, va_list ap);

    /* Submit a new task, from a run function (t: its task) or from init (t:
     * NULL; the host connects to Redis before it loads plugins). args
     * borrowed, may be NULL for {}. id_out (37 bytes) receives the new id if
     * not NULL. Returns 0, -EINVAL (bad handler name or args: args.subtasks,
     * which gives a parallel task its subtasks, must be an array and the only
     * key), -E2BIG (args too large), -EIO (Redis unreachable, or a check:
     * bgtaskd --check-config and --check-plugin run inits and submit
     * nothing). The host logs why it refused. */
    int (*submit)(bgt_task *t, const char *handler, const cJSON *args, char *id_out);

    /* Split functions only: append one subtask (or, with batch_size > 1, one
     * item) with these args (copied). Returns 0, -E2BIG past the host's
     * tasks.max_subtasks, -EINVAL for args that are not valid UTF-8 or nest
     * deeper than 64, -EPERM outside a split function. */
    int (*add_subtask)(bgt_task *t, const cJSON *args);
} bgt_api;

#define BGT_API_HAS(api, entry) \
    ((api)->size >= offsetof(bgt_api, entry) + sizeof((api)->entry) && (api)->entry != NULL)

/* The one data symbol a plugin exports. The version fields come first: the
 * host reads them before anything else, and they protect the rest. */
typedef struct bgt_plugin_entry_t {
    uint32_t abi_major;  /* must equal the host's major */
    uint32_t abi_minor;  /* must be <= the host's minor */
    uint32_t size;       /* sizeof(struct bgt_plugin_entry_t) the plugin was built with */
    const char *name;    /* the plugin's name: [a-z0-9][a-z0-9._-]{0,62} */
    const char *version; /* free-form version text */
    /* Called once at load: register handlers and hooks. config is the
     * plugin's section of the host config (an object, maybe empty), borrowed.
     * Return 0 on success; anything else fails the load and the host undoes
     * every registration this plugin made. */
    int (*init)(bgt_plugin *p, const bgt_api *api, const cJSON *config);
    /* Called once before unload, after every task of the plugin ended. May be NULL. */
    void (*fini)(bgt_plugin *p);
} bgt_plugin_entry_t;

/* The plugin's copy of the host table, set before its init runs. Hidden:
 * every plugin has its own. */
extern __attribute__((visibility("hidden"))) const bgt_api *bgt_host_api;

/*
 * Define the plugin. Use once, in one .c file of the plugin:
 *     BGT_PLUGIN("demo", "1.0", demo_init, NULL);
 * with `int demo_init(bgt_plugin *p, const cJSON *config)`. config is never
 * NULL: a plugin without a config section gets an empty object.
 */
#define BGT_PLUGIN(NAME, VERSION, INIT, FINI)                                           \
    __attribute__((visibility("hidden"))) const bgt_api *bgt_host_api;                  \
    static int bgt__entry_init(bgt_plugin *p, const bgt_api *api, const cJSON *config) \
    {                                                                                   \
        bgt_host_api = api;                                                             \
        return (INIT)(p, config);                                                       \
    }                                                                                   \
    __attribute__((visibility("default"))) const bgt_plugin_entry_t bgt_plugin_entry = { \
        BGT_ABI_MAJOR, BGT_ABI_MINOR, sizeof(bgt_plugin_entry_t), (NAME), (VERSION),    \
        bgt__entry_init, (FINI)}

/* ---- inline wrappers: what plugin code calls ---- */

/* Register a handler: see bgt_api.register_handler. */
static inline int bgt_register_handler(bgt_plugin *p, bgt_handler_def def)
{
    def.size = sizeof def;
    return bgt_host_api->register_handler(p, &def);
}

/* Register a hook: see bgt_api.register_hook. */
static inline int bgt_register_hook(bgt_plugin *p, bgt_hook_def def)
{
    def.size = sizeof def;
    return bgt_host_api->register_hook(p, &def);
}

__attribute__((format(printf, 3, 4))) static inline void bgt_plugin_log(bgt_plugin *p, int level,
                                                                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bgt_host_api->plugin_log(p, level, fmt, ap);
    va_end(ap);
}

static inline const char *bgt_task_id(const bgt_task *t) { return bgt_host_api->task_id(t); }
static inline const char *bgt_task_handler(const bgt_task *t) { return bgt_host_api->task_handler(t); }
static inline uint32_t bgt_attempt(const bgt_task *t) { return bgt_host_api->task_attempt(t); }
static inline int bgt_subtask(const bgt_task *t) { return bgt_host_api->task_subtask(t); }

static inline void bgt_progress(bgt_task *t, double current, double total, const char *message)
{
    bgt_host_api->progress(t, current, total, message);
}

static inline void bgt_last_progress(const bgt_task *t, double *current, double *total)
{
    bgt_host_api->last_progress(t, current, total);
}

static inline bool bgt_cancelled(const bgt_task *t) { return bgt_host_api->cancelled(t); }

static inline int bgt_set_result(bgt_task *t, const cJSON *result)
{
    return bgt_host_api->set_result(t, result);
}

__attribute__((format(printf, 2, 3))) static inline void bgt_set_error(bgt_task *t,
                                                                       const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bgt_host_api->set_error(t, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 3, 4))) static inline void bgt_log(bgt_task *t, int level,
                                                                 const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bgt_host_api->task_log(t, level, fmt, ap);
    va_end(ap);
}

static inline int bgt_submit(bgt_task *t, const char *handler, const cJSON *args, char *id_out)
{
    return bgt_host_api->submit(t, handler, args, id_out);
}

static inline int bgt_add_subtask(bgt_task *t, const cJSON *args)
{
    return bgt_host_api->add_subtask(t, args);
}

#ifdef __cplusplus
}
#endif

#endif /* BGTASK_H */

/*
 * isolate_int.h - what isolate.c (pools, the supervisor, starting workers,
 * the crash breaker) and proxy.c (the proxies' calls) share. Nothing else
 * includes it.
 *
 * One mutex (h->lock) guards every pool's slots, counters and breaker. A
 * slot in SLOT_BUSY or SLOT_STARTING belongs to the one thread that set it:
 * its connection and process are used without the lock.
 */
#ifndef BGT_ISOLATE_INT_H
#define BGT_ISOLATE_INT_H

#include <pthread.h>
#include <sys/types.h>

#include "ipc.h"
#include "isolate.h"
#include "plugin.h"
#include "sandbox.h"

/* How often a waiting or running proxy looks at its task's stop flag. */
#define ISO_TICK_S 0.05

typedef enum slot_state {
    SLOT_EMPTY,    /* no process */
    SLOT_STARTING, /* being started by the supervisor */
    SLOT_IDLE,     /* ready for a call */
    SLOT_BUSY,     /* a proxy's */
    SLOT_RETIRING, /* told to exit (its end closed); reaped by the supervisor */
} slot_state;

typedef struct iso_slot {
    int index;
    slot_state state;
    pid_t pid;
    ipc_conn conn;
    ipc_buf scratch;    /* frames to it are built here (queued frames are copied) */
    long calls;         /* calls its process has served */
    char *cgroup;       /* its cgroup folder (memory.max), or NULL */
    long oom_base;      /* the cgroup's oom_kill count when the process started */
    double retire_by;   /* SLOT_RETIRING: SIGKILL after this (mono time) */
} iso_slot;

/* What the first worker reported for a handler; later workers must report the same. */
typedef struct proxy_def {
    char name[BGT_NAME_MAX + 1];
    uint32_t kind, flags, max_attempts, parallelism, batch_size, on_failure;
    double timeout_s;
} proxy_def;

typedef struct iso_pool {
    struct iso_host *host;
    char *name;              /* the config entry's name */
    char *file;              /* the plugin file */
    char *config_text;       /* its config section, JSON */
    isolation_conf conf;
    int nslots;
    iso_slot *slots;
    struct bgt_plugin owner; /* the registry's owner of the proxies: name, version, file */
    proxy_def *defs;
    int ndefs, nhooks;
    int waiting;             /* proxies waiting for an idle slot */
    int failures;            /* deaths and failed starts since a call last succeeded */
    double next_spawn;       /* mono time before which no worker is started (backoff) */
    double *deaths;          /* ring of the last breaker_deaths death times */
    int ndeaths;
    bool breaker_open;
    double breaker_until;
    struct iso_pool *next;
} iso_pool;

struct iso_host {
    const bgt_config *cfg;
    registry *reg;
    metrics *met;
    pthread_mutex_t lock;
    pthread_cond_t idle_cond; /* proxies: a slot became idle */
    pthread_cond_t work_cond; /* the supervisor: something to do */
    iso_pool *pools;
    pthread_t supervisor;
    bool started, quit;
    void (*notify)(void *);
    void *notify_arg;
    cgroup_base cg;           /* the host's delegated cgroup, when memory_max can use it */
    bool cg_tried;
    char cg_why[256];         /* why it cannot, for the log */
};

/* A proxy handler's udata. */
typedef struct proxy {
    iso_pool *pool;
    proxy_def def;
} proxy;

/* isolate.c */
/* Take an idle slot of pl for task t, waiting as long as it takes and t is not told to stop.
 * NULL when t was told to stop first. Lock not held. */
iso_slot *iso__acquire(iso_pool *pl, bgt_task *t);
/* A call on s ended well: make s idle again, or retire it (max_tasks_per_process, max_rss). */
void iso__release(iso_pool *pl, iso_slot *s);
/*
 * The process of s died, broke the protocol (violation says how) or was killed by the host
 * for a stop request it ignored (stopped): reap it and describe it in msg ("worker died:
 * signal 11 (SIGSEGV); crash note: ...", "worker died: out of memory (...)", "worker killed:
 * protocol violation: ..."), log it with where it happened (NULL: during a call), count the
 * death for the backoff and the breaker unless stopped, and empty s. note is the crash note
 * it sent, or "". Lock not held.
 */
void iso__bury(iso_pool *pl, iso_slot *s, bool stopped, const char *violation,
               const char *where, const char *note, char *msg, size_t msglen);
/* Replace control characters of untrusted text in place, so a log line stays one line. */
void iso__clean(char *s);
/*
 * Wait up to timeout_s for the worker on c to become readable (or writable, with bytes
 * queued), then write what is queued and read what arrived. 0, or -EPIPE (its end closed)
 * or another negative errno.
 */
int iso__exchange(ipc_conn *c, double timeout_s);
/*
 * Serve a frame a worker may send at any point of a call or of its start: LOG (to the
 * host's log, tagged with t's id for task logs), SUBMIT (answered on c with the host's
 * bgt_submit for t, NULL in init), NOTE (its text into note). 0, or -EPROTO with err saying
 * what is malformed or that the frame is of another type.
 */
int iso__serve(iso_pool *pl, ipc_conn *c, bgt_task *t, const ipc_frame *f, char *note,
               size_t notelen, char *err, size_t errlen);

/* proxy.c */
bgt_status proxy_run(bgt_task *t, const cJSON *args, void *udata);
bgt_status proxy_split(bgt_task *t, const cJSON *args, void *udata);
bgt_status proxy_merge(bgt_task *t, const cJSON *results, void *udata);

#endif

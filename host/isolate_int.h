/*
 * isolate_int.h - what isolate.c (pools, the supervisor, starting workers,
 * the crash breaker) and proxy.c (the proxies' calls) share. Nothing else
 * includes it.
 *
 * One mutex (h->lock) guards every pool's slots (their state and the fifo
 * of calls in flight), pending calls, counters and breaker. A slot's
 * connection is split: its sending side is guarded by the slot's send_lock
 * (taken after h->lock, never before), its receiving side belongs to the io
 * thread (iso_io.c), the only reader of running workers' sockets. A slot in
 * SLOT_STARTING belongs to the supervisor.
 */
#ifndef BGT_ISOLATE_INT_H
#define BGT_ISOLATE_INT_H

#include <pthread.h>
#include <sys/types.h>

#include "ipc.h"
#include "isolate.h"
#include "plugin.h"
#include "sandbox.h"

/* How often the io thread looks at the stop flags of the calls in flight and pending. */
#define ISO_TICK_S 0.05
/* Calls in flight on one worker process at most: the one it runs and those queued behind
 * (one word each in the page shared with it). */
#define ISO_DEPTH IPC_PAGE_CALLS
/* A call is queued behind a busy worker only while that worker's current call started
 * less than this ago (it turns calls over quickly); else it goes to an idle worker. */
#define ISO_FAST_S 0.005
/* A call queued this long behind a call that is still running is withdrawn from that
 * worker (it has not started there) and given to another. */
#define ISO_REROUTE_S 0.05

typedef enum slot_state {
    SLOT_EMPTY,    /* no process */
    SLOT_STARTING, /* being started by the supervisor */
    SLOT_READY,    /* running: calls may be given to it (while it has room) */
    SLOT_DRAINING, /* running, due for replacement: no new calls; retired once it has none */
    SLOT_RETIRING, /* told to exit (its end closed); reaped by the supervisor */
} slot_state;

typedef struct iso_call iso_call;

/*
 * A call sent to a worker, in the order sent. The worker runs its calls in that order, one
 * at a time, and ends each (DONE, or in the page) before it starts the next, so every frame
 * it sends belongs to the first entry that has not ended, and the page says whether that
 * one has started. call is NULL once the call was taken back (withdrawn in the page): the
 * worker skips it, and the entry is dropped when it comes first.
 */
typedef struct iso_entry {
    uint32_t seq;
    iso_call *call;
} iso_entry;

typedef struct iso_slot {
    struct iso_pool *pool;
    int index;
    slot_state state;
    pid_t pid;
    /* The connection: its receiving side is the io thread's; its sending side (out queue,
     * writes, scratch) is guarded by send_lock, which is taken after the host's lock, never
     * before it. */
    ipc_conn conn;
    ipc_page *page;     /* shared with its process (ipc.h); NULL when it has none */
    pthread_mutex_t send_lock;
    ipc_buf scratch;    /* frames to it are built here (queued frames are copied) */
    bool want_out;      /* (send_lock) the io thread waits for room to write */
    int unsent;         /* (send_lock) calls queued in conn's out queue, not written yet */
    /* The host's lock: */
    iso_entry fifo[ISO_DEPTH]; /* calls in flight, fifo[first] the oldest */
    int first, n;
    uint32_t next_seq;
    double front_since; /* mono time the first entry became first */
    long calls;         /* calls given to its process */
    char *cgroup;       /* its cgroup folder (memory.max), or NULL */
    long oom_base;      /* the cgroup's oom_kill count when the process started */
    double retire_by;   /* SLOT_RETIRING: SIGKILL after this (mono time) */
    char note[1024];    /* (io thread) a crash note sent between calls */
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
    iso_call *pending, *pending_tail; /* calls waiting for a slot with room, oldest first */
    int npending;
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
    pthread_cond_t work_cond; /* the supervisor: something to do */
    iso_pool *pools;
    pthread_t supervisor, io;
    bool started, quit;
    int epfd;                 /* the io thread's epoll: every running worker's socket */
    int wakefd;               /* an eventfd that wakes the io thread (to quit) */
    void (*notify)(void *);
    void *notify_arg;
    /* Handed-off runs finished and not handed back yet: their tasks and outcomes. */
    bgt_task **back;
    bgt_status *back_status;
    size_t nback, back_cap;
    cgroup_base cg;           /* the host's delegated cgroup, when memory_max can use it */
    bool cg_tried;
    char cg_why[256];         /* why it cannot, for the log */
};

/* A proxy handler's udata. */
typedef struct proxy {
    iso_pool *pool;
    proxy_def def;
} proxy;

/*
 * A call of a proxy: run, split or merge of one task, in a worker process. Made by the
 * proxy, which waits for finished, or (handed) by proxy_hand_off, which does not wait; from
 * submission to finished it is the pool's (the host's lock, and the io thread for the fields
 * so marked).
 */
struct iso_call {
    iso_call *next;       /* in the pool's pending queue */
    const struct proxy *px;
    iso_pool *pl;
    bgt_task *t;
    int op;               /* IPC_OP_* */
    const char *args;     /* JSON text, borrowed from the proxy or (handed) the task */
    bool handed;          /* a handed-off run: nobody waits; finishing it frees it */
    iso_slot *s;          /* while in a slot's fifo */
    uint32_t seq;         /* its number there */
    double front_at;      /* when it became the first of that fifo (0: not yet) */
    bool finished;        /* its outcome is decided: status (and the task's error, result) */
    bgt_status status;
    pthread_cond_t cond;  /* signalled when finished */
    /* The io thread's, reset at each sending: */
    bool heard;           /* a frame of this call arrived */
    bool stopping;        /* its task was told to stop (kept across sendings) */
    bool cancel_sent;
    double stop_at, grace;
    char note[1024];      /* the crash note the worker sent, if any */
    char violation[300];  /* what the worker got wrong, if anything */
};

/* iso_start.c */
/*
 * Start the process of slot s (SLOT_STARTING, owned by the caller) and run its start-up
 * exchange: INIT, then the plugin's init (its LOG and SUBMIT frames are served), then READY.
 * first: this READY defines the plugin's handlers. 0, or a negative errno with err saying
 * why; the process is gone then.
 */
int iso__start_worker(iso_pool *pl, iso_slot *s, bool first, char *err, size_t errlen);
/* Replace control characters of untrusted text in place, so a log line stays one line. */
void iso__clean(char *s);
/*
 * Wait up to timeout_s for the worker on c to become readable (or writable, with bytes
 * queued), then write what is queued and read what arrived. 0, or -EPIPE (its end closed)
 * or another negative errno. For a worker being started (nobody else uses c).
 */
int iso__exchange(ipc_conn *c, double timeout_s);
/*
 * Serve a frame a worker may send at any point of a call or of its start: LOG (to the
 * host's log, tagged with t's id for task logs), SUBMIT (answered on s's connection, under
 * its send_lock, with the host's bgt_submit for t, NULL in init), NOTE (its text into note).
 * 0, or -EPROTO with err saying what is malformed or that the frame is of another type.
 */
int iso__serve(iso_pool *pl, iso_slot *s, bgt_task *t, const ipc_frame *f, char *note,
               size_t notelen, char *err, size_t errlen);

/* isolate.c */
/* Queue call c (finished false) in its pool and give it to a worker if one has room. Lock
 * not held. */
void iso__submit(iso_call *c);
/* Give the pending calls of pl to workers while some have room; end those whose task was
 * told to stop meanwhile (BGT_CANCELLED). Lock held. */
void iso__dispatch(iso_pool *pl);
/* Put c back at the head of its pool's pending queue (it never started where it was sent).
 * Lock held; the caller dispatches. */
void iso__requeue(iso_call *c);
/* c's outcome is decided: wake its proxy; or, for a handed-off run, free c and queue its
 * task for iso__hand_back. Lock held. */
void iso__finish(iso_call *c, bgt_status status);
/*
 * Hand the tasks of the handed-off runs that finished back to the manager, all at once
 * (task_api_handed_back_all: one round of the manager's lock for a worker's burst of
 * answers). Lock not held: the io thread calls it after each round of events, and whoever
 * else may finish a call (a proxy's submission, the supervisor) after its own work.
 */
void iso__hand_back(iso_host *h);
/*
 * The first entry of s's fifo ended (DONE, or in the page) or was taken back: remove it and,
 * for a call that ran (real,
 * rss its worker's resident memory after it when max_rss is set), mark s for replacement
 * when its memory is over max_rss; retire s when it is due and has no call left; dispatch.
 * Lock held.
 */
void iso__answered(iso_pool *pl, iso_slot *s, bool real, size_t rss);
/* Unmap s's page, if it has one. */
void iso__unmap_page(iso_slot *s);
/* The resident memory of process pid in bytes, or 0 when it cannot be read. */
size_t iso__rss(pid_t pid);
/*
 * The process of s died, broke the protocol (violation says how) or was killed by the host
 * for a stop request it ignored (stopped): reap it and describe it in msg ("worker died:
 * signal 11 (SIGSEGV); crash note: ...", "worker died: out of memory (...)", "worker killed:
 * protocol violation: ..."), log it with where it happened (NULL: during a call), count the
 * death for the backoff and the breaker unless stopped, and empty s. note is the crash note
 * it sent, or "". Every call in its fifo but keep (the one that ran, which the caller ends)
 * goes back to the pending queue: it never started. Lock not held; from the io thread.
 */
void iso__bury(iso_pool *pl, iso_slot *s, bool stopped, const char *violation,
               const char *where, const char *note, iso_call *keep, char *msg, size_t msglen);

/* iso_io.c */
/* The io thread: reads every worker's frames, serves them, watches stop flags and deaths. */
void *iso__io_main(void *arg);
/* Watch s's socket (a worker that just started). */
void iso__watch(iso_host *h, iso_slot *s);
/* Write what is queued for s without waiting; what does not fit waits for room (the io
 * thread). An error shows as the worker's death at the io thread's next read. send_lock
 * held; 0, -EAGAIN or another negative errno. */
int iso__flush(iso_host *h, iso_slot *s);
/* The task's error, as bgt_set_error would set it. */
void iso__set_error(bgt_task *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Queue the CANCEL of c (in s's fifo) for its worker. send_lock held. */
void iso__queue_cancel(iso_slot *s, iso_call *c);

/* proxy.c */
bgt_status proxy_run(bgt_task *t, const cJSON *args, void *udata);
bgt_status proxy_split(bgt_task *t, const cJSON *args, void *udata);
bgt_status proxy_merge(bgt_task *t, const cJSON *results, void *udata);
/* handler.hand_off of the proxies: run without waiting (see registry.h). */
void proxy_hand_off(bgt_task *t, const char *args_json, void *udata);

#endif

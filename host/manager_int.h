/*
 * manager_int.h - what the parts of the manager share: the attempt and
 * manager structs and the mgr__ functions (internal, shared between
 * manager.c, writer.c, parallel.c and task_api.c; nothing else includes it).
 *
 * One mutex (m->lock) guards the run queue, the list of owned attempts, the
 * write queue, each attempt's progress and flags, and parallel bookkeeping.
 * Handlers, hooks and merge functions run without it.
 */
#ifndef BGT_MANAGER_INT_H
#define BGT_MANAGER_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "events.h"
#include "hooks.h"
#include "manager.h"

/* Why an attempt was asked to stop. */
enum { STOP_NONE = 0, STOP_CANCEL, STOP_LOST, STOP_TIMEOUT, STOP_SHUTDOWN };

/* Extra time after the grace for handlers told to stop before they are released anyway. */
#define STUCK_GRACE_S 2.0
/* How much sooner than its lease or its host entry (by its own clock) a host gives up an
 * attempt: room for the handler to see bgt_cancelled() turn true before another host buries
 * this one and claims the attempt. */
#define LEASE_MARGIN_S(cfg) fmin(0.5, (cfg)->heartbeat_s / 2)
/* Longest the dispatcher blocks on the wake lists before looking again. */
#define MAX_BLOCK_S 5.0

/* One subtask of a parallel task, as the host tracks it. */
typedef enum sub_state {
    SUB_PENDING,   /* not run yet in this attempt (or to run again) */
    SUB_RUNNING,   /* queued or running */
    SUB_WAITING,   /* asked to retry: runs again at retry_at */
    SUB_SUCCESS,
    SUB_FAILURE,
    SUB_CANCELLED,
} sub_state;

typedef struct par_sub {
    sub_state state;
    uint32_t attempt;  /* runs so far, over all attempts of the task */
    char *args;        /* JSON text */
    char *result;      /* JSON text or NULL */
    char *message;     /* the failure, or NULL */
    double frac;       /* its own progress while running, 0..1 */
    double retry_at;   /* SUB_WAITING: mono time */
} par_sub;

/* The parallel side of a task. Guarded by m->lock. */
typedef struct par {
    int n;
    par_sub *subs;
    int next;          /* no SUB_PENDING below this index */
    int inflight;      /* SUB_RUNNING */
    int waiting;       /* SUB_WAITING */
    int limit;         /* parallelism */
    bool fail_fast;
    bool halt;         /* start no more subtasks */
    int failed_first;  /* fail_fast: the subtask that stopped it, or -1 */
    int nsuccess, nfailure, ncancelled;
    double frac_sum;   /* sum of running subtasks' own progress */
    bool concluded;
} par;

struct bgt_task {
    manager *m;
    const handler *h;
    char id[BGT_ID_LEN + 1];
    char handler[BGT_NAME_MAX + 1];
    uint32_t attempt;      /* the claim's (for a subtask: its own run count) */
    uint32_t released;
    int max_attempts;
    int subtask;           /* index, or -1 */
    struct bgt_task *parent; /* a subtask: its task */
    char *args_text;
    cJSON *args;
    double last_current, last_total; /* persisted by earlier attempts */
    bgt_hook_info info;

    /* Parallel tasks: what the claim said, then the subtasks. */
    int claimed_subtasks;
    int claimed_parallelism;
    int claimed_fail_fast;
    par *par;
    /* A split in progress (only the split function's thread touches it). */
    bool in_split;
    char **split_items;
    int nsplit, split_cap;

    /* Guarded by m->lock. */
    double p_current, p_total;
    char *p_message;
    bool p_dirty;          /* a progress report not written yet */
    double p_written_at;   /* mono time of the last progress write */
    bool executing;        /* its handler is running */
    bool lost;             /* lease lost: its outcome is discarded */
    bool finishing;        /* outcome queued for the writer */
    bool drop;             /* queued for the writer only to be freed (lost: nothing to write) */
    bool released_stuck;   /* released while its handler still ran (shutdown) */
    double lease_until;    /* mono time until which the lease surely holds; written under
                              m->lock with __atomic_store, read by bgt_cancelled() without */
    double deadline;       /* mono time of its timeout, 0 = none */
    struct bgt_task *prev, *next; /* m->owned */
    struct bgt_task *qnext;       /* m->runq or m->writeq */

    _Atomic int stop;      /* STOP_*: read by bgt_cancelled() */

    /* The worker's own while the handler runs. */
    char *result;          /* JSON text */
    char *error;
    double started;

    /* The outcome, set by the worker, read by the writer. */
    fin_op op;
    end_kind end;          /* how the attempt ended */
    int ev;                /* the event it publishes (ev_kind), or -1 for none */
    int64_t ended_ms;      /* when it ended (the event's ts_ms) */
    char *end_message;
    int64_t backoff_ms;    /* END_RETRY */
    char **errors;         /* EV_PARTIAL_SUCCESS: "subtask i: message" per failed subtask */
    size_t nerrors;
    const char *sub_state_name; /* FIN_SUBTASK */
};

struct manager {
    const bgt_config *cfg;
    registry *reg;
    metrics *met;
    hooks hk;
    redis_addr addr;
    char host_id[256];
    char machine[256];
    int64_t started_ms;

    pthread_mutex_t lock;
    pthread_cond_t work_cond;   /* workers: runq not empty or stopping */
    pthread_cond_t slot_cond;   /* dispatcher: a slot freed, handlers changed, or stopping */
    pthread_cond_t write_cond;  /* writer: something to write */

    bgt_task *owned;            /* every attempt this host holds */
    int nowned;
    bgt_task *runq_head, *runq_tail;
    int nqueued;                /* in runq */
    int nexecuting;
    bgt_task *writeq_head, *writeq_tail;

    /* Handlers served; rebuilt when the registry changes. */
    claim_handler *hs;
    size_t nhs;
    unsigned reg_generation;
    char *handler_list;         /* comma-separated, for P:host:<id> */
    bool handlers_changed;

    bool stopping;              /* no more claims */
    bool force_stop;            /* grace over: tell handlers to stop */
    double grace_deadline;
    double entry_until;         /* mono time until which this host's entry in P:hosts surely
                                   lives (last heartbeat sent + its ttl); 0 before the first */
    bool done;                  /* drained, left P:hosts */
    bool threads_exit;

    store *st_claim, *st_write, *st_ctl;
    pthread_t dispatcher, writer, control;
    pthread_t *workers;
    int nworkers;
    bool started;
};

/* manager.c */
void mgr__task_free(bgt_task *t);
/* Link t into / out of m->owned. Lock held. */
void mgr__own(manager *m, bgt_task *t);
void mgr__disown(manager *m, bgt_task *t);
/* Queue t's outcome for the writer. Lock held. */
void mgr__writeq_push(manager *m, bgt_task *t);
/* Queue t to run on a worker. Lock held. */
void mgr__runq_push(manager *m, bgt_task *t);
/*
 * Run the after-hooks for t's end, decide its event and queue its write (frees t for
 * END_LOST). errors (a partial success's lines, or NULL) pass to t. Lock not held.
 */
void mgr__conclude(manager *m, bgt_task *t, end_kind kind, bgt_status status,
                   const char *message, int64_t backoff_ms, char **errors, size_t nerrors);
/* Make t a release at shutdown that writes message and its bgtask_updated. Lock held. */
void mgr__set_release(bgt_task *t, char *message);
/* Conclude a single attempt from its handler's status and the stop reason. Lock not held. */
void mgr__conclude_status(manager *m, bgt_task *t, bgt_status status, int stop);
/* Backoff before retry number n (1-based), with jitter. */
int64_t mgr__backoff_ms(const bgt_config *cfg, uint32_t n);
/* Mark t's handler as no longer running; returns t->lost || t->released_stuck. */
bool mgr__end_executing(manager *m, bgt_task *t);

/* writer.c */
void *mgr__writer_main(void *arg);

/* parallel.c */
/* Run the setup of a parallel task on a worker: split (once), load its
 * subtasks, queue the first of them. */
void mgr__parallel_run(manager *m, bgt_task *t, store **wst);
/* Run one subtask on a worker. */
void mgr__subtask_run(manager *m, bgt_task *st);
/* Writer tick: schedule due retries; true if t should be concluded now. Lock held. */
bool mgr__parallel_tick(manager *m, bgt_task *t, double now);
/* Conclude a parallel task once all its subtasks are done. Lock not held. */
void mgr__parallel_conclude(manager *m, bgt_task *t);
/* Drop a subtask that never started (shutdown). Lock held. */
void mgr__subtask_drop(manager *m, bgt_task *st);
/* Append the bgtask_updated payload of a parallel task's progress to b. Lock held. */
size_t mgr__parallel_progress_event(const bgt_task *t, ev_buf *b, const ev_head *h,
                                    const char *message);
void mgr__par_free(par *p);

#endif

/*
 * manager_int.h - what the files of the manager share (nothing else includes
 * it): the attempt (struct bgt_task) and the manager, and the mgr__
 * functions. manager.c: lifecycle and the manager thread. dispatcher.c:
 * claims and cancel requests. worker.c: the jobs workers run. writer.c: the
 * writes. task_api.c: what plugins call on an attempt. attempt.c: the
 * attempts, the queues and the lock all of them share. stuck.c: attempts
 * whose handler ignores its timeout. parallel.c (no manager
 * types): a parallel task's bookkeeping.
 *
 * Who does what. The manager alone decides what runs where: the dispatcher
 * turns claims into jobs on the run queue; the manager thread (by the host's
 * own clock) stops attempts whose lease, timeout or shutdown grace ran out,
 * starts retries that fell due, queues the conclusion of a parallel task that
 * has nothing left to run, releases what is left at shutdown, and frees
 * attempts. Workers run jobs, and only they run plugin code. The writer only
 * writes: it takes what is queued for it, writes it in batches, and reports
 * back through flags (lost, stop) and through the done queue, on which it
 * hands every attempt back once it holds no pointer to it.
 *
 * The lock. One mutex, m->lock, guards every field marked (L) below: the
 * queues, the owned list and the counts, each attempt's progress and flags,
 * and each parallel task's par. Its rules:
 *   1. No plugin code (run, split, merge, hook callbacks, udata_free) and no
 *      Redis call is ever made with m->lock held; worker.c checks the first
 *      with mgr__assert_unlocked before every call into a plugin.
 *   2. Under m->lock the only other locks taken are leaves that call nothing
 *      back: the registry's (refresh_handlers reads the handlers), the
 *      metrics' and the log's.
 *   3. Read without it: t->stop (atomic), t->lease_until (atomic loads and
 *      stores), par_halted(t->par); what the job running an attempt owns (the
 *      fields marked (J)) is touched by that job's worker only.
 *   4. An attempt queued for the writer belongs to it until the writer puts it
 *      on the done queue; only the manager thread frees an attempt that was
 *      owned (a subtask run that had nothing to write is freed by its worker).
 */
#ifndef BGT_MANAGER_INT_H
#define BGT_MANAGER_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "config.h"
#include "events.h"
#include "hooks.h"
#include "metrics.h"
#include "parallel.h"
#include "registry.h"
#include "store.h"

typedef struct manager manager; /* as in manager.h, which only manager.c needs */

/* Why an attempt was asked to stop. */
enum { STOP_NONE = 0, STOP_CANCEL, STOP_LOST, STOP_TIMEOUT, STOP_SHUTDOWN };

/* Extra time after the grace for handlers told to stop before they are released anyway. */
#define STUCK_GRACE_S 2.0
/* How much sooner than its lease or its host entry (by its own clock) a host gives up an
 * attempt: room for the handler to see bgt_cancelled() turn true before another host buries
 * this one and claims the attempt. */
#define LEASE_MARGIN_S(cfg) fmin(0.5, (cfg)->heartbeat_s / 2)
/* Longest the dispatcher waits for a wake-up before it looks at every shard again (a
 * wake-up lost with the control connection costs at most this). */
#define MAX_BLOCK_S 5.0
/* While attempts run, how long the dispatcher lets free workers add up before it claims
 * fewer than a quarter of them, and the writer lets outcomes add up before it writes: one
 * script call costs Redis about as much as a few dozen tasks, so calls carry batches. */
#define BATCH_WAIT_S 0.001
/* Outcomes that make a write batch worth sending at once, without waiting for more. */
#define WRITE_BATCH_WANT 64

/* What a worker does with an attempt it takes from the run queue. */
typedef enum mgr_job {
    JOB_RUN,      /* run a single attempt, or set a parallel task up (split, load, start) */
    JOB_SUBTASK,  /* run one subtask of a parallel task */
    JOB_CONCLUDE, /* conclude a parallel task: merge, after-hooks, its ending */
    JOB_FAIL,     /* a claim that fails at once (why in t->bad): hooks, then its ending */
    JOB_HANDED_BACK, /* a single attempt whose run was handed off (handler.hand_off) has its
                        status (t->handed_status): the rest of run_single */
    JOB_WRITTEN_OFF, /* the end of an attempt or subtask whose handler ignored its timeout
                        past kill_grace (a record of its own): hooks, then its write */
} mgr_job;

struct bgt_task {
    /* Set when the attempt is made, then read-only. */
    manager *m;
    const handler *h; /* NULL when this host has no such handler (JOB_FAIL) */
    char id[BGT_ID_LEN + 1];
    char handler[BGT_NAME_MAX + 1];
    uint32_t attempt; /* the claim's (for a subtask: its own run count) */
    char token[32];   /* the claim's lease token (a subtask: its task's): fences every write */
    uint32_t released;
    int max_attempts;
    int subtask;             /* index, or -1 */
    struct bgt_task *parent; /* a subtask: its task */
    bgt_hook_info info;
    double last_current, last_total; /* persisted by earlier attempts */
    double deadline;                 /* mono time of its timeout, 0 = none */
    /* Parallel tasks: what the claim said. */
    int claimed_subtasks;
    int claimed_parallelism;
    int claimed_fail_fast;

    /* (J) The job's own: only the worker running the attempt's current job. */
    mgr_job job;
    char *bad; /* JOB_FAIL: why it fails */
    char *args_text;
    cJSON *args;
    char *result; /* JSON text */
    char *error;
    double started;
    bool in_split; /* a split function runs: bgt_add_subtask is allowed */
    char **split_items;
    int nsplit, split_cap;

    /* (L) Under m->lock. */
    par *par; /* a parallel task once set up */
    double p_current, p_total;
    char *p_message;
    bool p_dirty;        /* a progress report not written yet */
    double p_written_at; /* mono time of the last progress write */
    bool executing;      /* a job of it runs on a worker */
    bool lost;           /* lease lost: its outcome is discarded */
    bool refused;        /* Redis said this host no longer holds it (a heartbeat, a write) */
    bool given_up;       /* lost by this host's own clock, and given up in Redis (FIN_LOST) */
    double lost_at;      /* mono time it was found lost */
    bool finishing;      /* queued for the writer: its outcome is decided */
    bool drop;           /* queued for the writer only to be handed back (nothing to write) */
    bgt_status handed_status; /* JOB_HANDED_BACK: what the handed-off run returned */
    bool released_stuck; /* released while its handler still ran (shutdown), or written off */
    bool written_off;    /* its job ignored its timeout past kill_grace: the attempt (or
                            subtask) ended without it; the worker running it leaves when
                            the job returns */
    char **logs;         /* its bgt_log lines (and its subtasks') not written yet, oldest
                            first: "<ts_ms> <level> <subtask|-> <text>" (task_api.c) */
    int nlogs, logs_cap;
    long logs_dropped;   /* lines dropped before they were written */
    struct bgt_task *rprev, *rnext; /* m->running while a job of it runs */
    struct bgt_task *prev, *next; /* m->owned */
    struct bgt_task *qnext;       /* the run queue, the write queue or the done queue */

    /* The outcome: set by whoever concludes the attempt before it is queued for the
     * writer (mgr__conclude, mgr__set_release), read by the writer after. */
    fin_op op;
    end_kind end;     /* how the attempt ended */
    int ev;           /* the event it publishes (ev_kind), or -1 for none */
    int64_t ended_ms; /* when it ended (the event's ts_ms) */
    char *end_message;
    int64_t backoff_ms; /* END_RETRY */
    char **errors;      /* EV_PARTIAL_SUCCESS: "subtask i: message" per failed subtask */
    size_t nerrors;
    const char *sub_state_name; /* FIN_SUBTASK */

    /* Lock-free. */
    _Atomic int stop;   /* STOP_*: read by bgt_cancelled() */
    double lease_until; /* mono time until which the lease surely holds: __atomic_store
                                under m->lock, __atomic_load anywhere */
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
    int task_log_level; /* tasks.log_level, parsed */

    pthread_mutex_t lock;
    pthread_cond_t work_cond;  /* workers: a job queued, or exit */
    int nidle;                 /* workers waiting on work_cond */
    int nwaking;               /* of them, signalled and not awake yet: jobs wake one worker
                                  at a time, and a worker that takes a job while more wait
                                  wakes the next (mgr__runq_push) */
    pthread_cond_t slot_cond;  /* dispatcher: a slot freed, handlers changed, or stopping */
    pthread_cond_t write_cond; /* writer: something to write, or drained */
    pthread_cond_t mgr_cond;   /* manager thread: something handed back, or stopping */

    /* (L) */
    bgt_task *owned; /* every attempt this host holds */
    int nowned;
    bgt_task *runq_head, *runq_tail;
    int nqueued;    /* in runq */
    int nexecuting; /* jobs running on workers (not counting written-off ones) */
    bgt_task *running; /* the jobs running on workers */
    int nstuck;        /* worker threads still inside a written-off job */
    int nspare;        /* worker threads started to replace written-off ones */
    bgt_task *writeq_head, *writeq_tail;
    int nwriteq;                       /* in the write queue */
    bgt_task *doneq_head, *doneq_tail; /* handed back by the writer, for the manager to free */

    /* (L) Handlers served; rebuilt when the registry changes. */
    claim_handler *hs;
    size_t nhs;
    unsigned reg_generation;
    char *handler_list; /* comma-separated, for the host's description */
    bool handlers_changed;
    bool resubscribe; /* the control listener must listen to the new handlers' wake-ups */
    /* (L) The handlers an operator paused (store_pause): served, not claimed. */
    char **paused;
    size_t npaused;
    unsigned paused_gen; /* counts the changes told on the control channel: a heartbeat
                            that read the paused handlers before one of them does not undo it */

    /* (L) Shards with work to claim: ready ones (a wake-up, a full claim, a task falling
     * due, a host to bury) are claimed round-robin from next. */
    int nshards;
    bool *shard_ready;
    double *shard_due; /* mono time from which the shard has work, 0 = none known */
    int shard_next;

    /* (L) */
    bool stopping;   /* no more claims */
    bool force_stop; /* grace over: handlers were told to stop */
    double grace_deadline;
    double entry_until; /* mono time until which this host's entries surely live (last
                           heartbeat sent + their ttl); 0 before the first */
    bool drained;       /* stopping, and nothing is left to run or write */
    bool done;          /* drained, left P:hosts */
    bool threads_exit;

    store *st_claim, *st_write, *st_ctl; /* the dispatcher's, the writer's, control's */
    pthread_t dispatcher, writer, supervisor, control;
    pthread_t *workers; /* room for twice host.workers: replacements of written-off ones */
    int nworkers;
    bool started;
};

/* ---- worker.c ---- */

/*
 * The end of handed-off runs ts[0..n) (their run returned status[i]) on the calling thread
 * instead of a worker: their after-hooks, outcome and queueing for the writer. Only while no
 * plugin has a hook (plugin code runs on worker threads only): false, and nothing done,
 * otherwise.
 */
bool mgr__end_handed_here(manager *m, bgt_task *const *ts, const bgt_status *status, size_t n);
/*
 * Whether the run of t, just claimed, may be handed off on the claiming thread (the
 * dispatcher) instead of a worker: a single attempt of a handler with hand_off, while no
 * plugin has a hook (its before-hooks would run there). Then mgr__job_start it (L) and
 * give it to mgr__hand_off_here (not L).
 */
bool mgr__may_hand_off_here(const manager *m, const bgt_task *t);
void mgr__hand_off_here(manager *m, bgt_task *const *ts, size_t n);

/* ---- attempt.c ---- */

/* Free an attempt and everything it owns (its par too). */
void mgr__task_free(bgt_task *t);
/* Link t into / out of m->owned. (L) */
void mgr__own(manager *m, bgt_task *t);
void mgr__disown(manager *m, bgt_task *t);
/* Queue t for a worker to run job. (L) */
void mgr__runq_push(manager *m, bgt_task *t, mgr_job job);
/* Wake an idle worker if jobs wait and no wake-up is in flight already. (L) */
void mgr__wake_worker(manager *m);
/* Queue t's outcome for the writer. (L) */
void mgr__writeq_push(manager *m, bgt_task *t);
/* The writer is done with t: hand it back for the manager thread to free. (L) */
void mgr__hand_back(manager *m, bgt_task *t);
/* What parallel.c needs to know about t's situation. (L) */
par_ctx mgr__par_ctx(const manager *m, const bgt_task *t, double now);
/*
 * Start what of parallel task t may run now (subtask jobs on the run queue), and queue
 * its conclusion once nothing of it runs or will run. (L)
 */
void mgr__par_schedule(manager *m, bgt_task *t, double now);
/* A job of t starts on a worker / has returned (executing, counts, m->running). job_end
 * returns whether the job was written off meanwhile (stuck.c): the worker then leaves. (L) */
void mgr__job_start(manager *m, bgt_task *t);
bool mgr__job_end(manager *m, bgt_task *t);
/* Make t a release at shutdown: it writes message (taken) and a bgtask_updated. (L) */
void mgr__set_release(bgt_task *t, char *message);
/* Backoff before retry number n (1-based), with jitter. */
int64_t mgr__backoff_ms(const bgt_config *cfg, uint32_t n);
/* Name the calling thread ("bgt-worker-3"): how the thread check of the tests sees it. */
void mgr__name_thread(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Take and give back m->lock; the calling thread's count of them is what
 * mgr__assert_unlocked checks. */
void mgr__lock(manager *m);
void mgr__unlock(manager *m);
/* Wait on cond with m->lock (taken with mgr__lock), at most timeout_s (< 0: no limit). */
void mgr__wait(manager *m, pthread_cond_t *cond, double timeout_s);
/* Abort if the calling thread holds m->lock: plugin code must never run under it. */
void mgr__assert_unlocked(void);

/* ---- the threads ---- */

void *mgr__dispatcher_main(void *arg); /* dispatcher.c */
void *mgr__control_main(void *arg);    /* dispatcher.c */
void *mgr__worker_main(void *arg);     /* worker.c */
void *mgr__writer_main(void *arg);     /* writer.c */

/* dispatcher.c: rebuild the list of handlers served, and of those claimed: the ones not
 * paused. (L) */
void mgr__refresh_handlers(manager *m);
/* dispatcher.c: the paused handlers are those of list (space-separated; what a heartbeat
 * read): claims follow at once. (L) */
void mgr__set_paused(manager *m, const char *list);
/* dispatcher.c: the ttl of this host's entries (lease, two heartbeats and a second). */
double mgr__entry_ttl(const bgt_config *cfg);
/* Log the keys of the wrong type st's scripts found (once each: they are removed). */
void mgr__log_store_warnings(store *st);

/* ---- stuck.c ---- */

/*
 * Jobs whose handler has ignored its attempt's timeout for kill_grace (a single attempt,
 * or a subtask of a parallel task that timed out): end the attempt or subtask without
 * them (FAILURE "did not stop", through a JOB_WRITTEN_OFF record), count their worker
 * thread as stuck and start a replacement (up to host.workers of them). (L)
 */
void mgr__write_off_stuck(manager *m, double now);
/* A worker thread started, for the count of live ones: 0 or a negative errno. (L) */
int mgr__start_worker(manager *m);

/* ---- worker.c ---- */

/*
 * Run the after-hooks for t's end, decide what it publishes and queue it for
 * the writer (for END_LOST: only to be handed back). errors (a partial
 * success's lines, or NULL) pass to t. On a worker, without the lock.
 */
void mgr__conclude(manager *m, bgt_task *t, end_kind kind, bgt_status status, const char *message,
                   int64_t backoff_ms, char **errors, size_t nerrors);

#endif

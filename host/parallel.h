/*
 * parallel.h - the bookkeeping of one parallel task: the state of each of its
 * subtasks (as persisted, then as they run), which of them to start next
 * (within the task's parallelism; a retry once it falls due), how each run
 * ended and what to write for it, the task's progress, and its verdict once
 * nothing runs any more.
 *
 * Pure: no Redis, no threads, no locks, no manager types. Its owner (the
 * manager) serializes the calls on one par (it holds its lock) and does what
 * the answers say: it runs the subtasks, writes their outcomes, concludes the
 * task. The one exception is par_halted, which may be read at any time.
 *
 * The verdict, when every subtask has ended: all succeeded -> SUCCESS
 * (bgtask_done); some failed -> SUCCESS with a partial success listing the
 * failures; all failed, or one failed under fail_fast -> FAILURE; a cancel ->
 * CANCELLED; the host's shutdown with subtasks left -> released (they run
 * again elsewhere; finished ones never do).
 */
#ifndef BGT_PARALLEL_H
#define BGT_PARALLEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "bgtask.h"

/* One subtask, as the owner of its task tracks it. */
typedef enum par_state {
    PAR_PENDING, /* not run in this attempt yet (or to run again) */
    PAR_RUNNING, /* handed out by par_next: queued or running */
    PAR_WAITING, /* asked to retry: runs again at retry_at */
    PAR_SUCCESS,
    PAR_FAILURE,
    PAR_CANCELLED,
} par_state;

typedef struct par_sub {
    par_state state;
    uint32_t attempt; /* runs so far, over every attempt of the task */
    char *args;       /* JSON text; owned */
    char *result;     /* JSON text or NULL; owned */
    char *message;    /* why it failed, or NULL; owned */
    double frac;      /* its own progress while running, 0..1 */
    double retry_at;  /* PAR_WAITING: when it may run again (the caller's clock) */
} par_sub;

/* A parallel task's subtasks. Read its fields freely; change them only through
 * the functions below. */
typedef struct par {
    int n;
    par_sub *subs;
    int limit;        /* parallelism: at most this many running */
    bool fail_fast;   /* the first failure stops the task */
    bool halt;        /* start no more: fail_fast tripped (read it with par_halted) */
    int failed_first; /* fail_fast: the subtask that stopped it, or -1 */
    int next;         /* no PAR_PENDING below this index */
    int inflight;     /* PAR_RUNNING */
    int waiting;      /* PAR_WAITING */
    int nsuccess, nfailure, ncancelled;
    double frac_sum; /* the running subtasks' own progress, summed */
    bool concluded;  /* par_take_conclusion said yes */
} par;

/* Whether the task is stopping, as its owner sees it. */
typedef enum par_stop {
    PAR_GO = 0,        /* running */
    PAR_STOP_CANCEL,   /* a cancel was requested */
    PAR_STOP_TIMEOUT,  /* the handler's timeout passed */
    PAR_STOP_SHUTDOWN, /* the host's shutdown grace ran out */
    PAR_STOP_LOST,     /* its lease is lost: nothing may be written */
} par_stop;

/* What the owner knows when it asks. */
typedef struct par_ctx {
    par_stop stop;
    bool draining; /* the host is shutting down: start nothing more */
    double now;    /* the clock retry_at is on */
} par_ctx;

/* A task of n (>= 1) subtasks, all pending with no args yet, at most limit at once. */
par *par_new(int n, int limit, bool fail_fast);
/* Free p and everything it owns. NULL is allowed. */
void par_free(par *p);

/*
 * Set subtask i as persisted: its state ("SUCCESS" and "FAILURE" are
 * finished, anything else runs), its runs so far, and its args, result and
 * message (malloc'd or NULL: p takes them). Before any par_next.
 */
void par_load(par *p, int i, const char *state, uint32_t attempt, char *args, char *result,
              char *message);
/* How many subtasks had finished before this attempt (after par_load). */
int par_finished_count(const par *p);

/*
 * The next subtask to start now, marked running, or -1: none may start (the
 * task halted or is stopping, the host is draining, parallelism is reached)
 * or none is due. Retries that fell due come first, then pending ones in order.
 */
int par_next(par *p, const par_ctx *c);
/* Subtask i, handed out by par_next, never ran (its run was dropped): pending again. */
void par_unstart(par *p, int i);
/* Whether no more subtasks may start (fail_fast tripped). Safe without the owner's
 * lock: subtasks poll it through bgt_cancelled. */
bool par_halted(const par *p);

/* Running subtask i reports progress (current of total); it counts as that share. */
void par_sub_progress(par *p, int i, double current, double total);
/* The task's progress: finished subtasks plus the running ones' shares, of n. */
void par_progress(const par *p, double *current, double *total);
/* "k of n subtasks done" into buf. */
void par_progress_message(const par *p, char *buf, size_t n);

/* How one run of subtask i ended. Strings are borrowed for the call. */
typedef struct par_report {
    bgt_status status;  /* what its run function returned */
    uint32_t attempt;   /* this run's number: 1 for its first */
    const char *error;  /* bgt_set_error's text, or NULL */
    const char *result; /* JSON text, or NULL */
    int max_attempts;   /* runs allowed per subtask */
    double backoff_s;   /* before a retry */
    double timeout_s;   /* the handler's timeout, for the message */
} par_report;

/* What to write for it. */
typedef struct par_outcome {
    const char *state; /* "SUCCESS", "FAILURE", "CANCELLED" or "RETRY" (static), or NULL:
                          nothing (the lease is lost, or it runs again after a release) */
    char *message;     /* malloc'd (the caller frees it); NULL for a success and with
                          state NULL */
} par_outcome;

/* Record how subtask i's run ended (it was running). */
par_outcome par_end(par *p, int i, const par_ctx *c, const par_report *r);

/*
 * Whether nothing of the task runs or will run, so it is time to conclude
 * it; true only once (it marks p concluded), so exactly one caller concludes.
 */
bool par_take_conclusion(par *p, const par_ctx *c);

/* The verdict of a concluded task. */
typedef enum par_verdict_kind {
    PAR_VERDICT_LOST,     /* the lease is lost: write nothing */
    PAR_VERDICT_RELEASED, /* given back at shutdown (message says how many are left) */
    PAR_VERDICT_CANCELLED,
    PAR_VERDICT_FAILED,    /* timed out, stopped by fail_fast, or every subtask failed */
    PAR_VERDICT_SUCCEEDED, /* some or all succeeded: merge, then par_success_message */
} par_verdict_kind;

typedef struct par_verdict {
    par_verdict_kind kind;
    char *message; /* malloc'd, NULL for PAR_VERDICT_LOST and _SUCCEEDED */
} par_verdict;

/* The verdict; host_id and timeout_s only go into messages. */
par_verdict par_verdict_of(const par *p, const par_ctx *c, const char *host_id, double timeout_s);

/* The results to merge: an array with each subtask's result, null where it failed or
 * set none. The caller frees it. */
cJSON *par_results(const par *p);
/* The result without a merge: {"succeeded": S, "failed": F}. The caller frees it. */
cJSON *par_counts(const par *p);
/* "all N subtasks succeeded" or "S of N subtasks succeeded, F failed" (malloc'd). */
char *par_success_message(const par *p);
/* "subtask i: message" per failed subtask: a malloc'd array of *n malloc'd lines. */
char **par_errors(const par *p, size_t *n);

#endif

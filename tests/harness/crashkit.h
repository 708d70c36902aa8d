/*
 * crashkit.h - what the crash-safety tests (test_crash, test_redis_restart,
 * test_chaos, test_partition) share on top of itest.h: a pool of hosts that tests kill and
 * restart at will (stopped, and continued if paused, by the teardown), the
 * crash test plugin with its record of runs, submission of many tasks in one
 * script call, and whole-database checks: the state of every task and the
 * terminal events of every task, read in a few round trips.
 *
 * Part of the harness library (crashkit.c); a test program includes
 * "../harness/crashkit.h" (which includes itest.h).
 */
#ifndef BGT_CRASHKIT_H
#define BGT_CRASHKIT_H

#include <errno.h>
#include <signal.h>
#include <sys/wait.h>

#include "itest.h"
#include "store.h"

/* Short leases, so a dead host's work is claimable again within two seconds. */
#define CK_LEASE_S 2.0
#define CK_HEARTBEAT_S 0.3
/* The most hosts one test program starts over all its tests (restarts included). */
#define CK_MAX_HOSTS 256

typedef struct ck_pool {
    th_host hosts[CK_MAX_HOSTS];
    int n;         /* started so far in this test */
    char *record;  /* the crash plugin's record file for this test */
    char *plugins; /* plugins.load text naming the crash and demo plugins */
} ck_pool;

extern ck_pool ck; /* the program's: crashkit.c */

/* Per-test setup: itest's (empty database), a fresh record file, no hosts. */
int ck_setup(void **state);

/* The last max bytes of a host's log on stderr: the whole log of a busy host is too much. */
void ck_log_tail(const th_host *h, size_t max);

/*
 * Per-test teardown: continue paused hosts and stop them all; show logs if the test failed.
 * A host still running must drain and exit with status 0 (under the sanitizers, a leak or
 * an error report makes it exit otherwise): if one does not, the test fails here.
 */
int ck_teardown(void **state);

#define CK_TEST(fn) cmocka_unit_test_setup_teardown(fn, ck_setup, ck_teardown)

/* Run only the tests whose name matches $BGT_TEST_FILTER (a cmocka pattern), when set. */
void ck_filter(void);

/* Host options with the short leases and the crash and demo plugins; id NULL = "h<n>". */
th_host_opts ck_opts(const char *id);

/* Start a host; wait until it serves if `wait`. The teardown stops it. */
th_host *ck_host_start(const th_host_opts *o, bool wait);

/* The host logged that it lost the lease of an attempt (by a heartbeat's answer, its own
 * clock, or a refused write). */
bool ck_logged_lost_lease(const th_host *h);

/* The host has exited (reaped); *status gets the waitpid status. */
bool ck_host_exited(th_host *h, int *status);

/* ---- the record of runs ---- */

typedef struct ck_run {
    char id[37];
    unsigned attempt;
    int pid;
    char handler[64];
} ck_run;

/* Every line of the record file so far (an absent file is no runs). *n gets the count. */
ck_run *ck_runs(size_t *n);

/* How many runs of task id are recorded (with attempt `attempt`, or any if 0). */
int ck_count_runs(const char *id, unsigned attempt);

/* The pid of the host that ran attempt `attempt` of id (0 if not recorded). */
int ck_run_pid(const char *id, unsigned attempt);

int ck_cmp_run(const void *a, const void *b);

/*
 * No attempt ran twice: every (task, attempt) pair is in the record at most once. Returns
 * the number of runs and sets *retried to the number of tasks that ran more than once.
 */
size_t ck_assert_no_attempt_twice(size_t *retried);

/* ---- many tasks ---- */

/* A store on the test's redis-server, for bulk submission. */
store *ck_store(void);

/*
 * Submit n tasks of handler with args[i] (JSON text) and max_attempts (0 = the host's) in
 * batches of one script call each; ids[i] (37 bytes each) get the ids.
 */
void ck_submit_many(const char *handler, char *const *args, size_t n, int max_attempts,
                    char (*ids)[37]);

/* What the record of one task says, read in bulk. */
typedef struct ck_state {
    char state[16];
    long long attempt, released;
    char owner[64];
    char error[256];
    long long result_attempt; /* "attempt" of the result object, or -1 */
} ck_state;

/* Read state, attempt, released, owner, error and result of n tasks in one pipeline. */
void ck_read_states(char (*ids)[37], size_t n, ck_state *out);

bool ck_is_terminal(const char *state);

/* How many of the n tasks are in a terminal state (for polling). */
size_t ck_count_terminal(char (*ids)[37], size_t n);

int ck_cmp_id(const void *a, const void *b);

/*
 * Count the terminal events of each of the n tasks in one scan of <prefix>:events:
 * counts[i] for ids[i]. Returns the number of events scanned.
 */
size_t ck_terminal_events(char (*ids)[37], size_t n, int *counts);

/*
 * The whole-run check: every one of the n tasks is terminal and has exactly one terminal
 * event. Returns how many are in state `want` (e.g. "SUCCESS").
 */
size_t ck_assert_all_terminal_once(char (*ids)[37], size_t n, const char *want);

#endif

/*
 * crashkit.h - what the crash-safety tests (test_crash, test_redis_restart,
 * test_chaos, test_partition) share on top of itest.h: a pool of hosts that tests kill and
 * restart at will (stopped, and continued if paused, by the teardown), the
 * crash test plugin with its record of runs, submission of many tasks in one
 * script call, and whole-database checks: the state of every task and the
 * terminal events of every task, read in a few round trips.
 *
 * Each test program includes it once, after nothing else (it includes itest.h).
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

static ck_pool ck;

/* Per-test setup: itest's (empty database), a fresh record file, no hosts. */
static inline int ck_setup(void **state)
{
    int rc = it_setup(state);
    ck.n = 0;
    free(ck.record);
    free(ck.plugins);
    char *dir = th_tmpdir("record");
    ck.record = NULL;
    if (asprintf(&ck.record, "%s/runs.txt", dir) < 0)
        return -1;
    free(dir);
    char *crash = th_plugin_path("crash", true);
    int n = asprintf(&ck.plugins,
                     "{ name = \"crash\"; file = \"%s\"; config = { record = \"%s\"; }; }, "
                     "{ name = \"demo\"; }",
                     crash, ck.record);
    free(crash);
    return n < 0 ? -1 : rc;
}

/* The last max bytes of a host's log on stderr: the whole log of a busy host is too much. */
static inline void ck_log_tail(const th_host *h, size_t max)
{
    FILE *f = fopen(h->log, "r");
    if (!f)
        return;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    long from = len > (long)max ? len - (long)max : 0;
    fseek(f, from, SEEK_SET);
    fprintf(stderr, "----- last %ld bytes of the log of host %s (pid %d) -----\n", len - from,
            h->id, (int)h->pid);
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, got, stderr);
    fprintf(stderr, "----- end -----\n");
    fclose(f);
}

/*
 * Per-test teardown: continue paused hosts and stop them all; show logs if the test failed.
 * A host still running must drain and exit with status 0 (under the sanitizers, a leak or
 * an error report makes it exit otherwise): if one does not, the test fails here.
 */
static inline int ck_teardown(void **state)
{
    int rc = 0;
    for (int i = 0; i < ck.n; i++)
        th_host_signal(&ck.hosts[i], SIGCONT);
    for (int i = 0; i < ck.n; i++) {
        th_host *h = &ck.hosts[i];
        bool running = it_host_alive(h);
        int st = th_host_stop(h, 10.0);
        if (running && st != 0) {
            fprintf(stderr, "host %s (pid %d) did not exit cleanly on SIGTERM: status %d\n", h->id,
                    (int)h->pid, st);
            rc = -1;
        }
        if (!fx.passed || (running && st != 0))
            ck_log_tail(h, ck.n > 8 ? 8000 : 200000);
    }
    ck.n = 0;
    int it = it_teardown(state);
    return rc ? rc : it;
}

#define CK_TEST(fn) cmocka_unit_test_setup_teardown(fn, ck_setup, ck_teardown)

/* Run only the tests whose name matches $BGT_TEST_FILTER (a cmocka pattern), when set. */
static inline void ck_filter(void)
{
    const char *f = getenv("BGT_TEST_FILTER");
    if (f && *f)
        cmocka_set_test_filter(f);
}

/* Host options with the short leases and the crash and demo plugins; id NULL = "h<n>". */
static inline th_host_opts ck_opts(const char *id)
{
    return (th_host_opts){
        .id = id, .lease_s = CK_LEASE_S, .heartbeat_s = CK_HEARTBEAT_S, .plugins = ck.plugins};
}

/* Start a host; wait until it serves if `wait`. The teardown stops it. */
static inline th_host *ck_host_start(const th_host_opts *o, bool wait)
{
    assert_true(ck.n < CK_MAX_HOSTS);
    th_host *h = &ck.hosts[ck.n];
    assert_int_equal(th_host_start(h, &fx.r, o), 0);
    ck.n++;
    if (wait && !th_host_wait_ready(h, &fx.r, IT_READY_S))
        fail_msg("host %s did not come up", h->id);
    return h;
}

/* The host logged that it lost the lease of an attempt (by a heartbeat's answer, its own
 * clock, or a refused write). */
static inline bool ck_logged_lost_lease(const th_host *h)
{
    return th_log_contains(h, "lease ran out") || th_log_contains(h, "lost its lease") ||
           th_log_contains(h, "lease was lost");
}

/* The host has exited (reaped); *status gets the waitpid status. */
static inline bool ck_host_exited(th_host *h, int *status)
{
    return th_host_wait_exit(h, 0, status);
}

/* ---- the record of runs ---- */

typedef struct ck_run {
    char id[37];
    unsigned attempt;
    int pid;
    char handler[64];
} ck_run;

/* Every line of the record file so far (an absent file is no runs). *n gets the count. */
static inline ck_run *ck_runs(size_t *n)
{
    *n = 0;
    FILE *f = fopen(ck.record, "r");
    if (!f)
        return NULL;
    ck_run *runs = NULL;
    size_t cap = 0;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 256;
            runs = realloc(runs, cap * sizeof *runs);
            assert_non_null(runs);
        }
        ck_run *r = &runs[*n];
        if (sscanf(line, "%36s %u %d %63s", r->id, &r->attempt, &r->pid, r->handler) != 4)
            fail_msg("bad line in the record file %s: %s", ck.record, line);
        (*n)++;
    }
    fclose(f);
    return runs;
}

/* How many runs of task id are recorded (with attempt `attempt`, or any if 0). */
static inline int ck_count_runs(const char *id, unsigned attempt)
{
    size_t n;
    ck_run *runs = ck_runs(&n);
    int count = 0;
    for (size_t i = 0; i < n; i++)
        count += strcmp(runs[i].id, id) == 0 && (attempt == 0 || runs[i].attempt == attempt);
    free(runs);
    return count;
}

/* The pid of the host that ran attempt `attempt` of id (0 if not recorded). */
static inline int ck_run_pid(const char *id, unsigned attempt)
{
    size_t n;
    ck_run *runs = ck_runs(&n);
    int pid = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(runs[i].id, id) == 0 && runs[i].attempt == attempt)
            pid = runs[i].pid;
    free(runs);
    return pid;
}

static inline int ck_cmp_run(const void *a, const void *b)
{
    const ck_run *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->attempt > y->attempt) - (x->attempt < y->attempt);
}

/*
 * No attempt ran twice: every (task, attempt) pair is in the record at most once. Returns
 * the number of runs and sets *retried to the number of tasks that ran more than once.
 */
static inline size_t ck_assert_no_attempt_twice(size_t *retried)
{
    size_t n;
    ck_run *runs = ck_runs(&n);
    if (n)
        qsort(runs, n, sizeof *runs, ck_cmp_run);
    *retried = 0;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(runs[i].id, runs[i - 1].id) != 0)
            continue;
        if (runs[i].attempt == runs[i - 1].attempt)
            fail_msg("task %s: attempt %u ran twice (pids %d and %d)", runs[i].id, runs[i].attempt,
                     runs[i - 1].pid, runs[i].pid);
        if (i == 1 || strcmp(runs[i - 1].id, runs[i - 2].id) != 0)
            (*retried)++;
    }
    free(runs);
    return n;
}

/* ---- many tasks ---- */

/* A store on the test's redis-server, for bulk submission. */
static inline store *ck_store(void)
{
    redis_addr a;
    char err[256];
    if (redis_addr_parse(fx.r.url, &a, err, sizeof err) < 0)
        fail_msg("%s", err);
    bgt_config cfg;
    config_defaults(&cfg);
    store *st = store_open(&cfg, &a);
    config_free(&cfg);
    redis_addr_free(&a);
    return st;
}

/*
 * Submit n tasks of handler with args[i] (JSON text) and max_attempts (0 = the host's) in
 * batches of one script call each; ids[i] (37 bytes each) get the ids.
 */
static inline void ck_submit_many(const char *handler, char *const *args, size_t n,
                                  int max_attempts, char (*ids)[37])
{
    store *st = ck_store();
    submit_req *q = calloc(n ? n : 1, sizeof *q);
    assert_non_null(q);
    for (size_t i = 0; i < n; i++)
        q[i] = (submit_req){.handler = handler, .args = args[i], .max_attempts = max_attempts};
    for (size_t done = 0; done < n;) {
        size_t k = n - done < 500 ? n - done : 500;
        if (store_submit(st, q + done, k) < 0)
            fail_msg("submit: %s", store_errstr(st));
        done += k;
    }
    for (size_t i = 0; i < n; i++) {
        if (q[i].rc != 0)
            fail_msg("submit %s #%zu: %s", handler, i, q[i].err);
        memcpy(ids[i], q[i].id_out, 37);
    }
    free(q);
    store_free(st);
}

/* What the record of one task says, read in bulk. */
typedef struct ck_state {
    char state[16];
    long long attempt, released;
    char owner[64];
    char error[256];
    long long result_attempt; /* "attempt" of the result object, or -1 */
} ck_state;

/* Read state, attempt, released, owner, error and result of n tasks in one pipeline. */
static inline void ck_read_states(char (*ids)[37], size_t n, ck_state *out)
{
    for (size_t i = 0; i < n; i++)
        redisAppendCommand(fx.c, "HMGET %s:task:%s state attempt released owner error result",
                           IT_PREFIX, ids[i]);
    for (size_t i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(fx.c, (void **)&r) != REDIS_OK || !r)
            fail_msg("redis: %s", fx.c->errstr);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        ck_state *s = &out[i];
        memset(s, 0, sizeof *s);
        s->result_attempt = -1;
        redisReply **e = r->element;
        if (e[0]->type == REDIS_REPLY_STRING)
            snprintf(s->state, sizeof s->state, "%s", e[0]->str);
        s->attempt = e[1]->type == REDIS_REPLY_STRING ? atoll(e[1]->str) : -1;
        s->released = e[2]->type == REDIS_REPLY_STRING ? atoll(e[2]->str) : -1;
        if (e[3]->type == REDIS_REPLY_STRING)
            snprintf(s->owner, sizeof s->owner, "%s", e[3]->str);
        if (e[4]->type == REDIS_REPLY_STRING)
            snprintf(s->error, sizeof s->error, "%s", e[4]->str);
        if (e[5]->type == REDIS_REPLY_STRING) {
            cJSON *res = cJSON_Parse(e[5]->str);
            const cJSON *a = cJSON_GetObjectItem(res, "attempt");
            if (cJSON_IsNumber(a))
                s->result_attempt = (long long)a->valuedouble;
            cJSON_Delete(res);
        }
        freeReplyObject(r);
    }
}

static inline bool ck_is_terminal(const char *state)
{
    return strcmp(state, "SUCCESS") == 0 || strcmp(state, "FAILURE") == 0 ||
           strcmp(state, "CANCELLED") == 0;
}

/* How many of the n tasks are in a terminal state (for polling). */
static inline size_t ck_count_terminal(char (*ids)[37], size_t n)
{
    ck_state *s = calloc(n ? n : 1, sizeof *s);
    assert_non_null(s);
    ck_read_states(ids, n, s);
    size_t t = 0;
    for (size_t i = 0; i < n; i++)
        t += ck_is_terminal(s[i].state);
    free(s);
    return t;
}

static inline int ck_cmp_id(const void *a, const void *b) { return strcmp(a, b); }

/*
 * Count the terminal events of each of the n tasks in one scan of <prefix>:events:
 * counts[i] for ids[i]. Returns the number of events scanned.
 */
static inline size_t ck_terminal_events(char (*ids)[37], size_t n, int *counts)
{
    /* The ids sorted, with their index, so each event is found by a binary search. */
    typedef struct {
        char id[37];
        size_t index;
    } slot;
    slot *sorted = calloc(n ? n : 1, sizeof *sorted);
    assert_non_null(sorted);
    for (size_t i = 0; i < n; i++) {
        memcpy(sorted[i].id, ids[i], 37);
        sorted[i].index = i;
        counts[i] = 0;
    }
    qsort(sorted, n, sizeof *sorted, ck_cmp_id);
    char start[80] = "-";
    size_t scanned = 0;
    for (;;) {
        redisReply *rep = it_cmd("XRANGE %s:events %s + COUNT 5000", IT_PREFIX, start);
        size_t k = rep->elements;
        for (size_t i = 0; i < k; i++) {
            redisReply *e = rep->element[i];
            const char *tid = NULL, *name = NULL;
            redisReply *kv = e->element[1];
            for (size_t j = 0; j + 1 < kv->elements; j += 2) {
                if (strcmp(kv->element[j]->str, "task_id") == 0)
                    tid = kv->element[j + 1]->str;
                else if (strcmp(kv->element[j]->str, "event") == 0)
                    name = kv->element[j + 1]->str;
            }
            bool terminal =
                name && (strcmp(name, "bgtask_done") == 0 || strcmp(name, "bgtask_failed") == 0 ||
                         strcmp(name, "bgtask_cancelled") == 0 ||
                         strcmp(name, "bgtask_partial_success") == 0);
            if (terminal && tid) {
                slot *s = bsearch(tid, sorted, n, sizeof *sorted, ck_cmp_id);
                if (s)
                    counts[s->index]++;
            }
            if (i == k - 1)
                snprintf(start, sizeof start, "(%s", e->element[0]->str);
        }
        scanned += k;
        freeReplyObject(rep);
        if (k < 5000)
            break;
    }
    free(sorted);
    return scanned;
}

/*
 * The whole-run check: every one of the n tasks is terminal and has exactly one terminal
 * event. Returns how many are in state `want` (e.g. "SUCCESS").
 */
static inline size_t ck_assert_all_terminal_once(char (*ids)[37], size_t n, const char *want)
{
    ck_state *s = calloc(n ? n : 1, sizeof *s);
    int *counts = calloc(n ? n : 1, sizeof *counts);
    assert_true(s && counts);
    ck_read_states(ids, n, s);
    size_t scanned = ck_terminal_events(ids, n, counts);
    size_t matching = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ck_is_terminal(s[i].state))
            fail_msg("task %s (#%zu) is not terminal: state '%s', attempt %lld, owner '%s'", ids[i],
                     i, s[i].state, s[i].attempt, s[i].owner);
        if (counts[i] != 1)
            fail_msg("task %s (#%zu): %d terminal events in %zu events scanned, want 1", ids[i], i,
                     counts[i], scanned);
        matching += strcmp(s[i].state, want) == 0;
    }
    free(s);
    free(counts);
    return matching;
}

#endif

/*
 * crashkit.c - the crash-safety tests' pool of hosts, record of runs and
 * whole-database checks (crashkit.h).
 */
#include "crashkit.h"

#include "events.h"

ck_pool ck;

int ck_setup(void **state)
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

void ck_log_tail(const th_host *h, size_t max)
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

int ck_teardown(void **state)
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

void ck_filter(void)
{
    const char *f = getenv("BGT_TEST_FILTER");
    if (f && *f)
        cmocka_set_test_filter(f);
}

th_host_opts ck_opts(const char *id)
{
    return (th_host_opts){
        .id = id, .lease_s = CK_LEASE_S, .heartbeat_s = CK_HEARTBEAT_S, .plugins = ck.plugins};
}

th_host *ck_host_start(const th_host_opts *o, bool wait)
{
    assert_true(ck.n < CK_MAX_HOSTS);
    th_host *h = &ck.hosts[ck.n];
    assert_int_equal(th_host_start(h, &fx.r, o), 0);
    ck.n++;
    if (wait && !th_host_wait_ready(h, &fx.r, IT_READY_S))
        fail_msg("host %s did not come up", h->id);
    return h;
}

bool ck_logged_lost_lease(const th_host *h)
{
    return th_log_contains(h, "lease ran out") || th_log_contains(h, "lost its lease") ||
           th_log_contains(h, "lease was lost");
}

bool ck_host_exited(th_host *h, int *status) { return th_host_wait_exit(h, 0, status); }

ck_run *ck_runs(size_t *n)
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

int ck_count_runs(const char *id, unsigned attempt)
{
    size_t n;
    ck_run *runs = ck_runs(&n);
    int count = 0;
    for (size_t i = 0; i < n; i++)
        count += strcmp(runs[i].id, id) == 0 && (attempt == 0 || runs[i].attempt == attempt);
    free(runs);
    return count;
}

int ck_run_pid(const char *id, unsigned attempt)
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

int ck_cmp_run(const void *a, const void *b)
{
    const ck_run *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->attempt > y->attempt) - (x->attempt < y->attempt);
}

size_t ck_assert_no_attempt_twice(size_t *retried)
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

store *ck_store(void)
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

void ck_submit_many(const char *handler, char *const *args, size_t n, int max_attempts,
                    char (*ids)[37])
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

void ck_read_states(char (*ids)[37], size_t n, ck_state *out)
{
    static const char *const fields[] = {"state", "attempt", "released",
                                         "owner", "error",   "result"};
    char **v = calloc(n * 6 + 1, sizeof *v);
    assert_non_null(v);
    th_task_fields(fx.c, IT_PREFIX, ids, n, fields, 6, v);
    for (size_t i = 0; i < n; i++) {
        char **e = &v[i * 6];
        ck_state *s = &out[i];
        memset(s, 0, sizeof *s);
        s->result_attempt = -1;
        snprintf(s->state, sizeof s->state, "%s", e[0] ? e[0] : "");
        s->attempt = e[1] ? atoll(e[1]) : -1;
        s->released = e[2] ? atoll(e[2]) : -1;
        snprintf(s->owner, sizeof s->owner, "%s", e[3] ? e[3] : "");
        snprintf(s->error, sizeof s->error, "%s", e[4] ? e[4] : "");
        if (e[5]) {
            cJSON *res = cJSON_Parse(e[5]);
            const cJSON *a = cJSON_GetObjectItem(res, "attempt");
            if (cJSON_IsNumber(a))
                s->result_attempt = (long long)a->valuedouble;
            cJSON_Delete(res);
        }
        for (int k = 0; k < 6; k++)
            free(e[k]);
    }
    free(v);
}

bool ck_is_terminal(const char *state)
{
    return strcmp(state, "SUCCESS") == 0 || strcmp(state, "FAILURE") == 0 ||
           strcmp(state, "CANCELLED") == 0;
}

size_t ck_count_terminal(char (*ids)[37], size_t n)
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

int ck_cmp_id(const void *a, const void *b) { return strcmp(a, b); }

/* The ids sorted, with their index, so each event is found by a binary search. */
typedef struct slot {
    char id[37];
    size_t index;
} slot;

struct tally {
    slot *sorted;
    size_t n;
    int *counts;
};

static void tally_event(void *arg, const char *sid, const char *task_id, const char *name,
                        const char *data)
{
    struct tally *t = arg;
    if (!task_id || !name || !ev_name_terminal(name))
        return;
    slot *s = bsearch(task_id, t->sorted, t->n, sizeof *t->sorted, ck_cmp_id);
    if (s)
        t->counts[s->index]++;
}

size_t ck_terminal_events(char (*ids)[37], size_t n, int *counts)
{
    slot *sorted = calloc(n ? n : 1, sizeof *sorted);
    assert_non_null(sorted);
    for (size_t i = 0; i < n; i++) {
        memcpy(sorted[i].id, ids[i], 37);
        sorted[i].index = i;
        counts[i] = 0;
    }
    qsort(sorted, n, sizeof *sorted, ck_cmp_id);
    struct tally t = {sorted, n, counts};
    long scanned = th_each_event(fx.c, IT_PREFIX, tally_event, &t);
    assert_true(scanned >= 0);
    free(sorted);
    return (size_t)scanned;
}

size_t ck_assert_all_terminal_once(char (*ids)[37], size_t n, const char *want)
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

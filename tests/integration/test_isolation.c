/*
 * test_isolation.c - process isolation with real processes: the hostile test plugin, loaded
 * with isolation = "process" beside thread-mode handlers on one host, crashes (segfault,
 * abort, exit(0)), spins past its timeout, ignores cancellation, leaks, runs out of memory,
 * crashes in init and writes malformed frames on its socket; the host never restarts, other
 * handlers' tasks lose no attempt, each hostile attempt ends with a message naming what
 * happened, the crash breaker trips and recovers, and every SDK call works across the
 * boundary (progress and resume, result, error, logs, submit, split/merge/partial retry,
 * hooks, a seccomp filter).
 *
 * The hostile plugin records every run ("<id> <attempt> <pid> <handler> <subtask>") and every
 * hook call in a file: the record says which process ran what.
 */
#include <errno.h>
#include <signal.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "../harness/crashkit.h"
#include "../harness/itest.h"

static char *rec; /* the hostile plugin's record file of the current test */

static int iso_setup(void **state)
{
    int rc = it_setup(state);
    free(rec);
    char *dir = th_tmpdir("hostile");
    rec = NULL;
    if (asprintf(&rec, "%s/runs.txt", dir) < 0)
        return -1;
    free(dir);
    return rc;
}

#define ISO_TEST(fn) cmocka_unit_test_setup_teardown(fn, iso_setup, it_teardown)

/*
 * Host options with the crash plugin (thread mode) and the hostile plugin isolated; iso is
 * more settings of the hostile entry (may be ""), config more of its config section.
 */
static th_host_opts opts(const char *id, const char *iso, const char *config)
{
    static char *plugins;
    char *crash = th_plugin_path("crash", true), *hostile = th_plugin_path("hostile", true);
    free(plugins);
    assert_true(asprintf(&plugins,
                         "{ name = \"crash\"; file = \"%s\"; }, "
                         "{ name = \"hostile\"; file = \"%s\"; isolation = \"process\"; "
                         "kill_grace = 1.0; %s %s config = { record = \"%s\"; %s }; }",
                         crash, hostile, strstr(iso, "processes") ? "" : "processes = 2;", iso,
                         rec, config) > 0);
    free(crash);
    free(hostile);
    return (th_host_opts){.id = id, .workers = 8, .plugins = plugins};
}

/* ---- reading what happened ---- */

/* The lines of the record file that start with prefix (a task id or "hook-..."), all if NULL. */
static int rec_lines(const char *prefix, const char *needle, char out[][256], int max)
{
    FILE *f = fopen(rec, "r");
    if (!f)
        return 0;
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if ((!prefix || strncmp(line, prefix, strlen(prefix)) == 0) &&
            (!needle || strstr(line, needle))) {
            if (n < max)
                snprintf(out[n], 256, "%s", line);
            n++;
        }
    fclose(f);
    return n;
}

/* How many runs of task id (attempt a, or any attempt if 0) with subtask sub the record has. */
static int runs(const char *id, unsigned a, int sub)
{
    char lines[64][256];
    int n = rec_lines(id, NULL, lines, 64), k = 0;
    for (int i = 0; i < n && i < 64; i++) {
        unsigned att;
        int pid, s;
        char handler[80];
        if (sscanf(lines[i] + 37, "%u %d %79s %d", &att, &pid, handler, &s) == 4 &&
            (a == 0 || att == a) && s == sub)
            k++;
    }
    return k;
}

/* The pid of the worker that ran attempt a of task id (subtask -1), or 0. */
static pid_t run_pid(const char *id, unsigned a)
{
    char lines[16][256];
    int n = rec_lines(id, NULL, lines, 16);
    for (int i = 0; i < n && i < 16; i++) {
        unsigned att;
        int pid, s;
        char handler[80];
        if (sscanf(lines[i] + 37, "%u %d %79s %d", &att, &pid, handler, &s) == 4 && att == a &&
            s == -1)
            return pid;
    }
    return 0;
}

/* A process that is gone: not even a zombie (its parent reaped it). */
static bool pid_gone(pid_t pid) { return kill(pid, 0) < 0 && errno == ESRCH; }

static bool terminal(const char *id) { return th_task_terminal(fx.c, IT_PREFIX, id); }

/* Wait for the task to end; it must end in `state`. */
static void wait_end(const char *id, const char *state, double timeout_s)
{
    if (!TH_WAIT_UNTIL(timeout_s, terminal(id)))
        fail_msg("task %s did not end within %.0f s", id, timeout_s);
    char *st = it_field(id, "state");
    if (strcmp(st, state) != 0) {
        char *err = it_field(id, "error");
        fail_msg("task %s ended %s, want %s (error: %s)", id, st, state, err ? err : "");
    }
    free(st);
}

/* The task's error field contains needle. */
static void assert_error_has(const char *id, const char *needle)
{
    char *err = it_field(id, "error");
    if (!err || !strstr(err, needle))
        fail_msg("task %s: error '%s' does not contain '%s'", id, err ? err : "(none)", needle);
    free(err);
}

/* A number of the task's result. */
static double result_num(const char *id, const char *field)
{
    cJSON *r = it_field_json(id, "result");
    const cJSON *v = cJSON_GetObjectItem(r, field);
    if (!cJSON_IsNumber(v))
        fail_msg("task %s: result has no number '%s'", id, field);
    double d = v->valuedouble;
    cJSON_Delete(r);
    return d;
}

/* Submit handler with args and max_attempts (0: the handler's). */
static char *submit(const char *handler, const char *args, int max_attempts)
{
    char n[16];
    snprintf(n, sizeof n, "%d", max_attempts);
    return max_attempts ? it_submit(handler, args, "--max-attempts", n, NULL)
                        : it_submit(handler, args, NULL);
}

/* The resident memory of a process in KiB, from /proc. */
static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* The ms epoch of the first log line of h that contains needle (its timestamp), or -1. */
static long long log_time_ms(const th_host *h, const char *needle)
{
    FILE *f = fopen(h->log, "r");
    if (!f)
        return -1;
    char line[2048];
    long long ms = -1;
    while (ms < 0 && fgets(line, sizeof line, f)) {
        struct tm tm = {0};
        int msec;
        if (strstr(line, needle) &&
            sscanf(line, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &msec) == 7) {
            tm.tm_year -= 1900;
            tm.tm_mon -= 1;
            ms = (long long)timegm(&tm) * 1000 + msec;
        }
    }
    fclose(f);
    return ms;
}

/* The HTTP address the host logged ("127.0.0.1:port"), into out. */
static void http_addr(const th_host *h, char *out, size_t n)
{
    assert_true(TH_WAIT_UNTIL(10, th_log_contains(h, "serving on http://")));
    char *log = it_read_file(h->log);
    const char *p = strstr(log, "serving on http://") + strlen("serving on http://");
    size_t len = strcspn(p, "/");
    snprintf(out, n, "%.*s", (int)len, p);
    free(log);
}

/* GET http://addr/path with curl; the body (malloc'd). */
static char *http_get(const char *addr, const char *path)
{
    char url[256];
    snprintf(url, sizeof url, "http://%s%s", addr, path);
    char *argv[] = {"curl", "-s", "--max-time", "10", url, NULL};
    char *out = NULL;
    char *curl = "/usr/bin/curl";
    argv[0] = curl;
    assert_int_equal(th_run(20, argv, &out, NULL), 0);
    return out;
}

/* ---- the tests ---- */

/*
 * Crashes (segfault, abort, exit(0) inside run) cost only the crashing attempt: the host
 * lives on (same pid), four thread-mode tasks running at the same time finish in their first
 * attempt, and each hostile task fails after its attempts with the signal and its crash note.
 */
static void test_crashes_cost_only_their_attempt(void **state)
{
    it_need_redis();
    /* Six deaths: more than the default breaker allows within a minute (tested below). */
    th_host_opts o = opts("A", "breaker_deaths = 100;", "");
    th_host *a = it_host_start(&o);
    pid_t host = a->pid;
    char *steady[4];
    for (int i = 0; i < 4; i++)
        steady[i] = submit("crash.steps", "{\"steps\": 15, \"step_ms\": 100}", 0);
    for (int i = 0; i < 4; i++)
        assert_true(TH_WAIT_UNTIL(10, it_running_on(steady[i], "A", 1, 1)));
    char *segv = submit("hostile.segv", NULL, 2);
    char *abrt = submit("hostile.abort", NULL, 2);
    char *ex = submit("hostile.exit", NULL, 2);
    wait_end(segv, "FAILURE", 20);
    wait_end(abrt, "FAILURE", 20);
    wait_end(ex, "FAILURE", 20);
    assert_error_has(segv, "worker died: signal 11 (SIGSEGV); crash note: in run of hostile.segv, "
                           "fault at address 0x0");
    assert_error_has(segv, "gave up after 2 attempts");
    assert_error_has(abrt, "worker died: signal 6 (SIGABRT); crash note: in run of hostile.abort");
    assert_error_has(ex, "worker died: exited with status 0; crash note: the plugin called exit() "
                         "in run of hostile.exit");
    assert_int_equal(runs(segv, 0, -1), 2);
    /* Each attempt ran in a worker, never in the host. */
    assert_true(run_pid(segv, 1) != host && run_pid(segv, 2) != host);
    assert_true(run_pid(segv, 1) != run_pid(segv, 2));
    for (int i = 0; i < 4; i++) {
        wait_end(steady[i], "SUCCESS", 20);
        assert_int_equal(it_field_ll(steady[i], "attempt"), 1);
        it_assert_one_terminal(steady[i], "bgtask_done");
        free(steady[i]);
    }
    it_assert_one_terminal(segv, "bgtask_failed");
    it_assert_one_terminal(ex, "bgtask_failed");
    assert_true(it_host_alive(a));
    assert_int_equal(a->pid, host);
    free(segv);
    free(abrt);
    free(ex);
    it_pass();
}

/*
 * A worker that dies with calls queued behind the one it runs: only the one it ran ends with
 * the death; the others had not started, and each runs once, in another worker, without
 * losing an attempt. The tasks are waiting when the host starts, so that its first claims
 * give the single worker a crash and the calls behind it at once.
 */
static void test_death_with_calls_queued(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", "processes = 1; breaker_deaths = 100;", "");
    enum { N = 30 };
    char *fast[N], *segv[2];
    for (int i = 0; i < N; i++) {
        fast[i] = submit("hostile.sdk", "{\"steps\": 1, \"log\": false}", 1);
        if (i == N / 3 || i == 2 * N / 3)
            segv[i == N / 3 ? 0 : 1] = submit("hostile.segv", NULL, 1);
    }
    th_host *a = it_host_start(&o);
    for (int k = 0; k < 2; k++) {
        wait_end(segv[k], "FAILURE", 20);
        assert_error_has(segv[k], "worker died: signal 11 (SIGSEGV); crash note: in run of "
                                  "hostile.segv");
        assert_int_equal(runs(segv[k], 0, -1), 1);
    }
    for (int i = 0; i < N; i++) {
        wait_end(fast[i], "SUCCESS", 20);
        assert_int_equal(it_field_ll(fast[i], "attempt"), 1);
        assert_int_equal(runs(fast[i], 0, -1), 1);
        it_assert_one_terminal(fast[i], "bgtask_done");
        free(fast[i]);
    }
    /* Whether calls were queued behind a crash depends on how fast the host handed them
     * out; what the test checks holds either way. Say which case it was. */
    if (th_log_contains(a, "queued behind the call it ran"))
        fprintf(stderr, "  (calls were queued behind a crash)\n");
    assert_true(it_host_alive(a));
    free(segv[0]);
    free(segv[1]);
    it_pass();
}

/*
 * A call queued behind a long one is taken back and run by another worker: short tasks
 * waiting with a 5 s one when the host starts all end before it, each run once at its
 * first attempt. (Whether a short call was queued behind the long one, rather than given
 * to the other worker at once, depends on timing; the host logs each call it takes back,
 * and the test says which case it was. Without taking calls back, one queued behind the
 * long call would end after it.)
 */
static void test_queued_behind_long_call(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", "", "");
    enum { N = 6 };
    char *fast[N];
    char *slow = submit("hostile.sdk", "{\"steps\": 100, \"step_ms\": 50, \"log\": false}", 1);
    for (int i = 0; i < N; i++)
        fast[i] = submit("hostile.sdk", "{\"steps\": 1, \"log\": false}", 1);
    th_host *a = it_host_start(&o);
    for (int i = 0; i < N; i++) {
        wait_end(fast[i], "SUCCESS", 20);
        assert_int_equal(it_field_ll(fast[i], "attempt"), 1);
        assert_int_equal(runs(fast[i], 0, -1), 1);
    }
    wait_end(slow, "SUCCESS", 30);
    long long slow_end = it_field_ll(slow, "finished_ms");
    for (int i = 0; i < N; i++) {
        assert_true(it_field_ll(fast[i], "finished_ms") < slow_end);
        free(fast[i]);
    }
    if (th_log_contains(a, "taken back"))
        fprintf(stderr, "  (a call queued behind the long one was taken back)\n");
    free(slow);
    it_pass();
}

/*
 * A worker that dies while a process it forked keeps its socket open: the host does not wait
 * for an end of file that will not come (the child holds it 5 s), it sees the worker gone.
 */
static void test_fork_keeps_socket(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", "", "");
    it_host_start(&o);
    char *id = submit("hostile.forkcrash", NULL, 1);
    wait_end(id, "FAILURE", 15);
    long long ran = it_field_ll(id, "finished_ms") - it_field_ll(id, "started_ms");
    assert_true(ran < 4000);
    assert_error_has(id, "worker died: signal 11 (SIGSEGV)");
    free(id);
    it_pass();
}

/*
 * A handler that spins past its 1 s timeout ignoring bgt_cancelled(): FAILURE within
 * timeout + kill_grace + 1 s of its start, its worker killed and reaped (the CPU comes back),
 * and the plugin's next task runs in a new worker.
 */
static void test_spin_past_timeout(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", "", "");
    th_host *a = it_host_start(&o);
    char *id = submit("hostile.spin", NULL, 1);
    wait_end(id, "FAILURE", 15);
    long long ran = it_field_ll(id, "finished_ms") - it_field_ll(id, "started_ms");
    printf("spinning task: %lld ms from its start to FAILURE (timeout 1 s, kill_grace 1 s)\n",
           ran);
    assert_true(ran <= 3000);
    assert_error_has(id, "timed out after 1s; killed after 1 s (kill_grace)");
    pid_t spinner = run_pid(id, 1);
    assert_true(spinner > 0 && spinner != a->pid);
    assert_true(TH_WAIT_UNTIL(5, pid_gone(spinner)));
    assert_true(th_log_contains(a, "did not stop within 1 s of being told to: killed it"));
    char *next = submit("hostile.sdk", "{\"steps\": 1}", 0);
    wait_end(next, "SUCCESS", 15);
    assert_true(run_pid(next, 1) != spinner);
    free(next);
    free(id);
    it_pass();
}

/*
 * Cancelling a call: one that polls bgt_cancelled() stops at the CANCEL frame; one that
 * never does is killed kill_grace later; both end CANCELLED. At shutdown a hung call is
 * killed within a second after the grace, its attempt released, and the host exits 0.
 */
static void test_cancel_and_shutdown(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", "", "");
    o.shutdown_grace_s = 1;
    th_host *a = it_host_start(&o);
    char *coop = submit("hostile.sdk", "{\"steps\": 1000, \"step_ms\": 50, \"log\": false}", 0);
    assert_true(TH_WAIT_UNTIL(10, it_running_on(coop, "A", 1, 2)));
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "cancel", coop, NULL), 0);
    wait_end(coop, "CANCELLED", 10);
    char needle[128];
    snprintf(needle, sizeof needle, "[%s] worker", coop);
    assert_false(th_log_contains(a, needle)); /* it stopped by itself: nobody killed it */

    char *hung = submit("hostile.hang", NULL, 0);
    assert_true(TH_WAIT_UNTIL(10, runs(hung, 1, -1) == 1));
    pid_t worker = run_pid(hung, 1);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "cancel", hung, NULL), 0);
    wait_end(hung, "CANCELLED", 10);
    it_assert_one_terminal(hung, "bgtask_cancelled");
    assert_true(TH_WAIT_UNTIL(5, pid_gone(worker)));

    char *last = submit("hostile.hang", NULL, 0);
    assert_true(TH_WAIT_UNTIL(10, runs(last, 1, -1) == 1));
    worker = run_pid(last, 1);
    th_host_signal(a, SIGTERM);
    int status;
    assert_true(th_host_wait_exit(a, 15, &status));
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(pid_gone(worker));
    it_assert_field(last, "state", "ONGOING");
    assert_int_equal(it_field_ll(last, "released"), 1);
    free(coop);
    free(hung);
    free(last);
    it_pass();
}

/*
 * A worker left above max_rss after a call is replaced: every leaking task runs in a fresh
 * worker, the old ones exit, and the host's own memory does not grow with the leaks.
 */
static void test_leak_recycled(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", "processes = 1; max_rss = \"48M\";", "");
    th_host *a = it_host_start(&o);
    char *warm = submit("hostile.sdk", "{\"steps\": 1}", 0);
    wait_end(warm, "SUCCESS", 15);
    long before = rss_kib(a->pid);
    pid_t pids[4];
    for (int i = 0; i < 4; i++) {
        char *id = submit("hostile.leak", "{\"mb\": 64}", 0);
        wait_end(id, "SUCCESS", 30);
        pids[i] = (pid_t)result_num(id, "pid");
        for (int k = 0; k < i; k++)
            assert_true(pids[k] != pids[i]);
        free(id);
    }
    for (int i = 0; i < 4; i++)
        assert_true(TH_WAIT_UNTIL(10, pid_gone(pids[i])));
    assert_true(th_log_contains(a, "over max_rss 48 MiB"));
    long after = rss_kib(a->pid);
    printf("host RSS %ld KiB before, %ld KiB after four workers leaked 64 MiB each\n", before,
           after);
    assert_true(after - before < 32 * 1024);
    free(warm);
    it_pass();
}

/* memory_max: a worker that allocates past it dies, and the attempt says it ran out of memory. */
static void test_memory_max(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", "memory_max = \"96M\";", "");
    th_host *a = it_host_start(&o);
#if defined(__SANITIZE_ADDRESS__)
    /* A sanitizer's shadow memory is data too: the worker warns and runs without the limit. */
    char *id = submit("hostile.oom", "{\"chunk_mb\": 8, \"max_mb\": 64}", 1);
    wait_end(id, "FAILURE", 30);
    assert_error_has(id, "allocated 64 MiB without running out");
    assert_true(th_log_contains(a, "memory_max is not enforced in a sanitizer build"));
#else
    char *id = submit("hostile.oom", "{\"chunk_mb\": 8, \"max_mb\": 1024}", 1);
    wait_end(id, "FAILURE", 30);
    assert_error_has(id, "worker died");
    assert_error_has(id, "out of memory");
    assert_true(th_log_contains(a, "memory_max of isolated plugins: "));
#endif
    free(id);
    it_pass();
}

/*
 * The crash breaker: three deaths within the window pause claims of the plugin's handlers;
 * the host says so in `bgtaskctl hosts`, /healthz, /metrics and its log, and stops listing
 * the handlers; other handlers are still served.
 */
static void test_breaker_visible(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", "breaker_deaths = 3; breaker_window = 60; breaker_pause = 600;",
                          "");
    o.extra = "http: { listen = \"127.0.0.1:0\"; };";
    th_host *a = it_host_start(&o);
    char addr[64];
    http_addr(a, addr, sizeof addr);
    for (int i = 0; i < 3; i++) {
        char *id = submit("hostile.segv", NULL, 1);
        wait_end(id, "FAILURE", 20);
        free(id);
    }
    assert_true(TH_WAIT_UNTIL(5, th_log_contains(a, "[hostile] crash breaker open: 3 worker "
                                                    "deaths within 60 s")));
    char *out = NULL;
    bool shown = TH_WAIT_UNTIL(5, (free(out), out = NULL,
                                   th_ctl(&fx.r, &out, NULL, "hosts", NULL) == 0 &&
                                       strstr(out, "A: hostile: crash breaker open") &&
                                       !strstr(out, "hostile.segv")));
    if (!shown)
        fail_msg("bgtaskctl hosts does not show the open breaker:\n%s", out);
    assert_non_null(strstr(out, "crash.steps"));
    free(out);
    char *health = http_get(addr, "/healthz");
    assert_non_null(strstr(health, "\"status\":\"ok\""));
    assert_non_null(strstr(health, "\"breakers\":\"hostile: crash breaker open"));
    free(health);
    char *metrics = http_get(addr, "/metrics");
    assert_non_null(strstr(metrics, "bgtask_isolated_breaker_open{plugin=\"hostile\"} 1"));
    assert_non_null(
        strstr(metrics, "bgtask_isolated_deaths_total{plugin=\"hostile\",cause=\"signal\"} 3"));
    free(metrics);
    /* A task of the paused plugin waits; one of the thread-mode plugin runs. */
    char *waits = submit("hostile.sdk", "{\"steps\": 1}", 0);
    char *runs_ok = submit("crash.maybe", NULL, 0);
    wait_end(runs_ok, "SUCCESS", 10);
    assert_int_equal(it_field_ll(waits, "attempt"), 0);
    free(waits);
    free(runs_ok);
    it_pass();
}

/* The breaker closes after its pause: the waiting task is claimed only then, and succeeds. */
static void test_breaker_recovers(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", "breaker_deaths = 2; breaker_window = 60; breaker_pause = 1.5;",
                          "");
    th_host *a = it_host_start(&o);
    for (int i = 0; i < 2; i++) {
        char *id = submit("hostile.abort", NULL, 1);
        wait_end(id, "FAILURE", 20);
        free(id);
    }
    assert_true(TH_WAIT_UNTIL(5, th_log_contains(a, "[hostile] crash breaker open")));
    char *id = submit("hostile.sdk", "{\"steps\": 1}", 0);
    wait_end(id, "SUCCESS", 15);
    long long closed = log_time_ms(a, "[hostile] crash breaker closed");
    assert_true(closed > 0);
    /* Claimed after the breaker closed (same clock: the host's and Redis' machine). */
    assert_true(it_field_ll(id, "started_ms") >= closed - 2);
    free(id);
    it_pass();
}

/*
 * Every SDK call across the boundary: progress persisted and resumed after a crash
 * (bgt_last_progress), the result, task logs tagged with the task id, plugin logs with the
 * plugin's name, bgt_submit, the error of a failure, and the plugin's hooks around each call
 * in the worker's process.
 */
static void test_sdk_across_boundary(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", "", "");
    th_host *a = it_host_start(&o);
    assert_true(th_log_contains(a, "[hostile] hostile plugin ready in process"));
    char *id = submit("hostile.sdk",
                      "{\"steps\": 6, \"crash_at\": 3, \"submit\": \"hostile.syscalls\"}", 0);
    wait_end(id, "SUCCESS", 30);
    assert_int_equal(result_num(id, "attempt"), 2);
    assert_int_equal(result_num(id, "resumed_from"), 3);
    assert_int_equal(result_num(id, "subtask"), -1);
    cJSON *res = it_field_json(id, "result");
    const char *sub = cJSON_GetStringValue(cJSON_GetObjectItem(res, "submitted"));
    assert_non_null(sub);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(res, "id")), id);
    char *child = strdup(sub);
    cJSON_Delete(res);
    /* The task it submitted ran too; without a filter, ptrace finds nothing to trace. */
    wait_end(child, "SUCCESS", 15);
    it_assert_field(child, "handler", "hostile.syscalls");
    assert_int_equal(result_num(child, "ptrace"), ESRCH);
    assert_int_equal(result_num(child, "socket"), 0);
    /* Progress: the crash's retry event, then the steps of attempt 2 from 4 on. */
    cJSON *evs = it_events(id);
    bool step3 = false, died = false, step6 = false;
    const cJSON *e;
    cJSON_ArrayForEach (e, evs) {
        const char *m = it_ev_message(e);
        step3 |= strcmp(m, "step 3/6") == 0 && it_ev_number(e, "attempt") == 1;
        died |= strstr(m, "worker died: signal 11 (SIGSEGV)") != NULL;
        step6 |= strcmp(m, "step 6/6") == 0 && it_ev_number(e, "current_progress") == 6;
    }
    cJSON_Delete(evs);
    assert_true(step3 && died && step6);
    char line[128];
    snprintf(line, sizeof line, "[%s] hostile.sdk at step 5 of 6", id);
    assert_true(th_log_contains(a, line));
    /* Hooks ran in the worker around each call: attempt 2's pair in its process. */
    pid_t pid = run_pid(id, 2);
    char hb[160], ha[160], lines[4][256];
    snprintf(hb, sizeof hb, "hook-before %s 2 -1 %d\n", id, (int)pid);
    snprintf(ha, sizeof ha, "hook-after %s 2 -1 %d 0\n", id, (int)pid);
    assert_int_equal(rec_lines(hb, NULL, lines, 4), 1);
    assert_int_equal(rec_lines(ha, NULL, lines, 4), 1);
    assert_true(pid != a->pid);

    char *bad = submit("hostile.sdk", "{\"steps\": 2, \"fail\": true}", 0);
    wait_end(bad, "FAILURE", 15);
    assert_error_has(bad, "failed on purpose after 2 steps");
    it_assert_one_terminal(bad, "bgtask_failed");
    snprintf(ha, sizeof ha, "hook-after %s 1 -1", bad);
    assert_int_equal(rec_lines(ha, " 1\n", lines, 4), 1);
    free(child);
    free(bad);
    free(id);
    it_pass();
}

/*
 * A parallel handler across the boundary: the split and the merge run in workers, a subtask
 * whose worker crashed is retried alone, a failed one makes a partial success, and a retry of
 * the finished task re-runs only the failed subtask.
 */
static void test_parallel_across_boundary(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", "", "");
    th_host *a = it_host_start(&o);
    char *flag = th_tmpdir("flag");
    char ff[600], args[800];
    snprintf(ff, sizeof ff, "%s/fail", flag);
    it_write_file(ff, "x");
    snprintf(args, sizeof args,
             "{\"items\": 6, \"crash\": [2], \"fail\": [4], \"fail_file\": \"%s\"}", ff);
    char *id = submit("hostile.par", args, 0);
    wait_end(id, "SUCCESS", 30);
    it_assert_one_terminal(id, "bgtask_partial_success");
    assert_int_equal(result_num(id, "sum"), 0 + 1 + 2 + 3 + 5);
    assert_int_equal(result_num(id, "results"), 6);
    assert_true((pid_t)result_num(id, "pid") != a->pid);
    assert_int_equal(runs(id, 1, 2) + runs(id, 2, 2), 2); /* crashed once, then succeeded */
    assert_int_equal(runs(id, 0, 4), 1);
    assert_int_equal(it_field_ll(id, "attempt"), 1);

    assert_int_equal(unlink(ff), 0);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "retry", id, NULL), 0);
    assert_true(TH_WAIT_UNTIL(20, it_field_ll(id, "attempt") == 2 && terminal(id)));
    it_assert_field(id, "state", "SUCCESS");
    assert_int_equal(result_num(id, "sum"), 15);
    assert_int_equal(runs(id, 0, 4), 2);
    for (int i = 0; i < 6; i++)
        if (i != 4 && i != 2)
            assert_int_equal(runs(id, 0, i), 1);
    free(flag);
    free(id);
    it_pass();
}

/*
 * A plugin that crashes in init: refused at load, with the signal and the crash note; one
 * whose respawned workers crash in init is never handed a call until it starts cleanly.
 */
static void test_init_failures(void **state)
{
    it_need_redis();
    char *dir = th_tmpdir("conf"), *conf = NULL, *hostile = th_plugin_path("hostile", true);
    assert_true(asprintf(&conf, "%s/init.conf", dir) > 0);
    char text[2048];
    snprintf(text, sizeof text,
             "plugins: { load = ( { name = \"hostile\"; file = \"%s\"; isolation = \"process\"; "
             "config = { crash_init = true; }; } ); };\n",
             hostile);
    it_write_file(conf, text);
    char *bin = it_bin("bgtaskd"), *err = NULL;
    char *argv[] = {bin, "--check-config", "-c", conf, NULL};
    assert_int_equal(th_run(60, argv, NULL, &err), 1);
    if (!strstr(err, "worker died during init: signal 11 (SIGSEGV); crash note: in the "
                     "plugin's init, fault at address 0x0"))
        fail_msg("unexpected message: %s", err);
    free(err);

    char marker[700], cfg[900];
    snprintf(marker, sizeof marker, "%s/crash-init", dir);
    snprintf(cfg, sizeof cfg, "init_crash_file = \"%s\";", marker);
    th_host_opts o = opts("A", "processes = 1; breaker_deaths = 100;", cfg);
    th_host *a = it_host_start(&o);
    it_write_file(marker, "x");
    char *crash = submit("hostile.segv", NULL, 1);
    wait_end(crash, "FAILURE", 15);
    char *id = submit("hostile.sdk", "{\"steps\": 1}", 0);
    assert_true(TH_WAIT_UNTIL(20, th_log_contains(a, "worker start failed: worker died during "
                                                     "init: signal 11 (SIGSEGV)")));
    assert_int_equal(runs(id, 0, -1), 0);
    assert_int_equal(unlink(marker), 0);
    wait_end(id, "SUCCESS", 20);
    assert_int_equal(runs(id, 0, -1), 1);
    assert_int_equal(it_field_ll(id, "attempt"), 1);
    free(crash);
    free(id);
    free(bin);
    free(hostile);
    free(conf);
    free(dir);
    it_pass();
}

/*
 * Malformed or misplaced frames written on the worker's socket by plugin code: each ends that
 * worker and its attempt with what was wrong, never the host.
 */
static void test_malformed_frames(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", "breaker_deaths = 100;", "");
    th_host *a = it_host_start(&o);
    static const char *const cases[][2] = {
        {"oversized", "protocol violation: PROGRESS frame of 2147483647 bytes, over the limit"},
        {"type", "protocol violation: frame of unknown type 99"},
        {"version", "protocol violation: frame of protocol version 9, expected 3"},
        {"nan", "protocol violation: malformed PROGRESS: field 'current'"},
        {"string", "protocol violation: malformed DONE: field 'error'"},
        {"trailing", "protocol violation: malformed PROGRESS: 4 bytes after the last field"},
        {"status", "protocol violation: DONE with status 7, which is no bgt_status"},
        {"call", "protocol violation: DONE for call 4294967295, expected call "},
        {"unexpected", "protocol violation: unexpected INIT frame during a call"},
        {"short", "protocol violation: malformed PROGRESS: field 'current'"},
        {"page", "protocol violation: the shared page says 0xdeadbeefdeadbeef for call "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[64];
        snprintf(args, sizeof args, "{\"kind\": \"%s\"}", cases[i][0]);
        char *id = submit("hostile.garbage", args, 1);
        wait_end(id, "FAILURE", 15);
        assert_error_has(id, "worker killed: ");
        assert_error_has(id, cases[i][1]);
        /* A good call between bad ones: the pool recovers, and no restart backoff builds up. */
        char *ok = submit("hostile.sdk", "{\"steps\": 1, \"log\": false}", 0);
        wait_end(ok, "SUCCESS", 15);
        free(ok);
        free(id);
    }
    assert_true(it_host_alive(a));
    it_pass();
}

/* Submit n tasks of handler, all with args, in bulk; their ids (to free). */
static char (*submit_same(const char *handler, const char *args, int n, int max_attempts))[37]
{
    char (*ids)[37] = calloc((size_t)n, sizeof *ids);
    char **a = calloc((size_t)n, sizeof *a);
    assert_non_null(ids);
    assert_non_null(a);
    for (int i = 0; i < n; i++)
        a[i] = (char *)args;
    ck_submit_many(handler, a, (size_t)n, max_attempts, ids);
    free(a);
    return ids;
}

/* Wait up to wait_s for the n tasks to end, each SUCCESS; their states (to free). */
static ck_state *all_succeed(char (*ids)[37], int n, int wait_s)
{
    assert_true(TH_WAIT_UNTIL(wait_s, ck_count_terminal(ids, (size_t)n) == (size_t)n));
    ck_state *st = calloc((size_t)n, sizeof *st);
    assert_non_null(st);
    ck_read_states(ids, (size_t)n, st);
    for (int i = 0; i < n; i++)
        if (strcmp(st[i].state, "SUCCESS") != 0)
            fail_msg("task %s: %s (%s)", ids[i], st[i].state, st[i].error);
    return st;
}

/*
 * A plugin thread that logs all the time, between calls too, beside 2,000 short calls on two
 * workers: each line reaches the host while a call runs, or the worker's stderr between
 * calls, and never arrives as a frame after its call ended (with no call in flight, or
 * another one), which would end the worker as a protocol violation.
 */
static void test_plugin_thread_logs(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", "breaker_deaths = 100;", "log_thread_us = 20;");
    enum { N = 2000 };
    char (*ids)[37] = submit_same("hostile.leak", "{\"mb\": 0}", N, 1);
    th_host *a = it_host_start(&o);
    ck_state *st = all_succeed(ids, N, 120);
    for (int i = 0; i < N; i++)
        assert_int_equal(st[i].attempt, 1);
    assert_false(th_log_contains(a, "protocol violation"));
    assert_false(th_log_contains(a, "worker died"));
    free(ids);
    free(st);
    it_pass();
}

/* The pid of the last worker the record file names that is still a child of host, or 0. */
static pid_t live_worker(const th_host *host)
{
    FILE *f = fopen(rec, "r");
    if (!f)
        return 0;
    char line[256];
    pid_t last = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned att;
        int pid;
        if (strlen(line) > 37 && sscanf(line + 37, "%u %d", &att, &pid) == 2)
            last = pid;
    }
    fclose(f);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)last);
    if (!last || !(f = fopen(path, "r")))
        return 0;
    int ppid = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "PPid: %d", &ppid) == 1)
            break;
    fclose(f);
    return ppid == host->pid ? last : 0; /* only a worker of the host this test started */
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Workers killed with SIGKILL at moments of their own (each time another share of 2,000
 * short calls has ended, two workers busy with queues of calls): every task ends SUCCESS,
 * no attempt runs twice (a call queued behind the one a killed worker ran starts elsewhere
 * at the same attempt; one that had ended in the shared page counts as ended), and retries
 * add at most one attempt per kill (only the call the page says was started dies with it).
 */
static void test_workers_killed_midstream(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", "breaker_deaths = 100;", "");
    enum { N = 2000, KILLS = 6 };
    char (*ids)[37] = submit_same("hostile.nap", "{\"ms\": 1}", N, 3);
    th_host *a = it_host_start(&o);
    int kills = 0;
    for (int k = 0; k < KILLS; k++) {
        size_t want = (size_t)(k + 1) * N / (KILLS + 2);
        assert_true(TH_WAIT_UNTIL(60, ck_count_terminal(ids, N) >= want));
        pid_t w = live_worker(a);
        if (w > 0 && kill(w, SIGKILL) == 0)
            kills++;
    }
    ck_state *st = all_succeed(ids, N, 120);
    long long extra = 0;
    for (int i = 0; i < N; i++)
        extra += st[i].attempt - 1;
    fprintf(stderr, "  %d worker(s) killed; %lld attempt(s) added by retries\n", kills, extra);
    assert_true(kills >= KILLS / 2);
    assert_true(extra <= kills);
    /* Each (task, attempt) ran once: the record has one line per run, "<id> <attempt> ...". */
    FILE *f = fopen(rec, "r");
    assert_non_null(f);
    char **runs_seen = calloc(4 * N, sizeof *runs_seen), line[256];
    size_t n = 0;
    while (n < 4 * (size_t)N && fgets(line, sizeof line, f)) {
        unsigned att;
        if (strncmp(line, "hook-", 5) != 0 && sscanf(line + 37, "%u", &att) == 1) {
            line[36] = '\0';
            assert_true(asprintf(&runs_seen[n++], "%s %u", line, att) > 0);
        }
    }
    fclose(f);
    qsort(runs_seen, n, sizeof *runs_seen, cmp_str);
    for (size_t i = 1; i < n; i++)
        if (strcmp(runs_seen[i - 1], runs_seen[i]) == 0)
            fail_msg("attempt run twice: %s", runs_seen[i]);
    assert_true(n >= N);
    for (size_t i = 0; i < n; i++)
        free(runs_seen[i]);
    free(runs_seen);
    assert_true(it_host_alive(a));
    free(ids);
    free(st);
    it_pass();
}

/* seccomp = "no-network": the filter refuses ptrace and an AF_INET socket; the rest works. */
static void test_seccomp(void **state)
{
    it_need_redis();
    th_host_opts o = opts("A", "seccomp = \"no-network\";", "");
    it_host_start(&o);
    char *id = submit("hostile.syscalls", NULL, 0);
    wait_end(id, "SUCCESS", 15);
    assert_int_equal(result_num(id, "ptrace"), EPERM);
    assert_int_equal(result_num(id, "socket"), EPERM);
    char *sdk = submit("hostile.sdk", "{\"steps\": 3, \"submit\": \"crash.maybe\"}", 0);
    wait_end(sdk, "SUCCESS", 15);
    free(sdk);
    free(id);
    it_pass();
}

/* SIGHUP loads an isolated plugin added to the config: its tasks run in its workers. */
static void test_sighup_loads_isolated(void **state)
{
    it_need_redis();
    char *crash = th_plugin_path("crash", true);
    char only[600];
    snprintf(only, sizeof only, "{ name = \"crash\"; file = \"%s\"; }", crash);
    th_host *a = it_host_start(&(th_host_opts){.id = "A", .plugins = only});
    char *id = submit("hostile.sdk", "{\"steps\": 2}", 0);
    th_host_opts o = opts("A", "", "");
    char *text = it_read_file(a->conf), *from = strstr(text, "load = ("), *next = NULL;
    assert_non_null(from);
    assert_true(asprintf(&next, "%.*sload = ( %s );\n};\n", (int)(from - text), text,
                         o.plugins) > 0);
    it_write_file(a->conf, next);
    th_host_signal(a, SIGHUP);
    wait_end(id, "SUCCESS", 20);
    assert_true(th_log_contains(a, "in worker processes (isolation = process)"));
    assert_true(run_pid(id, 1) != a->pid);
    free(next);
    free(text);
    free(crash);
    free(id);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        ISO_TEST(test_crashes_cost_only_their_attempt),
        ISO_TEST(test_death_with_calls_queued),
        ISO_TEST(test_queued_behind_long_call),
        ISO_TEST(test_fork_keeps_socket),
        ISO_TEST(test_spin_past_timeout),
        ISO_TEST(test_cancel_and_shutdown),
        ISO_TEST(test_leak_recycled),
        ISO_TEST(test_memory_max),
        ISO_TEST(test_breaker_visible),
        ISO_TEST(test_breaker_recovers),
        ISO_TEST(test_sdk_across_boundary),
        ISO_TEST(test_parallel_across_boundary),
        ISO_TEST(test_init_failures),
        ISO_TEST(test_malformed_frames),
        ISO_TEST(test_plugin_thread_logs),
        ISO_TEST(test_workers_killed_midstream),
        ISO_TEST(test_seccomp),
        ISO_TEST(test_sighup_loads_isolated),
    };
    int rc = cmocka_run_group_tests(tests, it_group_setup, it_group_teardown);
    free(rec);
    return rc;
}

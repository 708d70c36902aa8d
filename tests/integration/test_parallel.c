/*
 * test_parallel.c - parallel tasks on real bgtaskd processes with the partest
 * plugin, which logs every split and every subtask run to a file so the test
 * can count them: 1,000 subtasks under a parallelism cap, partial failure and
 * `bgtaskctl retry`, fail_fast, kill -9 of the host halfway through (only
 * the unfinished subtasks run again, the split is never redone), cancel,
 * explicit subtasks (--subtasks-file, args.subtasks), the subtask count
 * limit, the per-task parallelism and on_failure overrides, watch --subtasks,
 * a Redis pause past the lease; and the shipped parallel handlers
 * files.cleanup (on a generated tree) and net.probe (against listeners the
 * test opens).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../harness/itest.h"

/* The workers of a test host: more than partest.run's parallelism (8). */
#define PAR_WORKERS 10

/* plugins.load for partest, built by the group setup. */
static char partest_load[1024];

static int group_setup(void **state)
{
    char *path = th_plugin_path("partest", true);
    snprintf(partest_load, sizeof partest_load, "{ name = \"partest\"; file = \"%s\"; }", path);
    free(path);
    return it_group_setup(state);
}

/* A host with partest, PAR_WORKERS workers and the harness's defaults otherwise. */
static th_host *par_host(const char *id, int max_subtasks)
{
    return it_host_start(&(th_host_opts){
        .id = id, .workers = PAR_WORKERS, .plugins = partest_load, .max_subtasks = max_subtasks});
}

/* A fresh path for partest's log (malloc'd); the file appears with its first line. */
static char *log_path(void)
{
    char *dir = th_tmpdir("par");
    char *p = NULL;
    assert_true(asprintf(&p, "%s/partest.log", dir) > 0);
    free(dir);
    return p;
}

/* What partest wrote to its log, from byte `from` on. */
typedef struct plog {
    int n;                        /* subtasks counted per index (0..n-1) */
    int splits;                   /* "split" lines */
    int batches;                  /* "batch" lines (partest.batch) */
    int starts, ends;             /* all "start" and "end" lines */
    int max;                      /* the highest number of subtasks partest saw at once */
    int *start;                   /* per subtask: runs started */
    int *ok, *failed, *cancelled; /* per subtask: runs that ended so */
    int starts_after_fail;        /* start lines after the first failed end */
    long size;                    /* where the log ended when read */
} plog;

/*
 * Read the log from byte `from` on, counting for subtasks 0..n-1. A last line
 * without its newline is being written: it is left for the next read.
 */
static void plog_read(plog *pl, const char *path, long from, int n)
{
    memset(pl, 0, sizeof *pl);
    pl->n = n;
    pl->start = calloc((size_t)n + 1, sizeof(int));
    pl->ok = calloc((size_t)n + 1, sizeof(int));
    pl->failed = calloc((size_t)n + 1, sizeof(int));
    pl->cancelled = calloc((size_t)n + 1, sizeof(int));
    assert_true(pl->start && pl->ok && pl->failed && pl->cancelled);
    FILE *f = fopen(path, "r");
    if (!f) {
        assert_int_equal(errno, ENOENT); /* nothing was logged yet */
        return;
    }
    assert_int_equal(fseek(f, from, SEEK_SET), 0);
    char line[256];
    bool failed_seen = false;
    pl->size = from;
    while (fgets(line, sizeof line, f)) {
        int i, a, st, mx;
        if (!strchr(line, '\n'))
            break;
        pl->size = ftell(f);
        if (strncmp(line, "split ", 6) == 0) {
            pl->splits++;
        } else if (strncmp(line, "batch ", 6) == 0) {
            pl->batches++;
        } else if (sscanf(line, "start %d %d", &i, &a) == 2) {
            pl->starts++;
            pl->starts_after_fail += failed_seen;
            if (i >= 0 && i < n)
                pl->start[i]++;
        } else if (sscanf(line, "end %d %d max %d", &i, &st, &mx) == 3) {
            pl->ends++;
            pl->max = mx > pl->max ? mx : pl->max;
            failed_seen |= st == 1;
            if (i >= 0 && i < n)
                (st == 0 ? pl->ok : st == 1 ? pl->failed : pl->cancelled)[i]++;
        } else {
            fail_msg("%s: unexpected line '%s'", path, line);
        }
    }
    fclose(f);
}

static void plog_free(plog *pl)
{
    free(pl->start);
    free(pl->ok);
    free(pl->failed);
    free(pl->cancelled);
}

/* The number of "start" or "end" lines in the log so far (for polling). */
static int log_lines(const char *path, const char *kind)
{
    plog pl;
    plog_read(&pl, path, 0, 0);
    plog_free(&pl);
    return strcmp(kind, "start") == 0 ? pl.starts : pl.ends;
}

/* The size of the log now (0 before its first line). */
static long log_size(const char *path)
{
    plog pl;
    plog_read(&pl, path, 0, 0);
    plog_free(&pl);
    return pl.size;
}

/* The task's subtasks as `bgtaskctl --json status ID --subtasks` shows them. */
static cJSON *sub_states(const char *id)
{
    char *out = NULL;
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "--json", "status", id, "--subtasks", NULL), 0);
    cJSON *arr = cJSON_Parse(out);
    free(out);
    assert_true(cJSON_IsArray(arr));
    return arr;
}

static const char *sub_state(const cJSON *subs, int i)
{
    return cJSON_GetObjectItem(cJSON_GetArrayItem(subs, i), "state")->valuestring;
}

/* How many of the task's events are terminal, and the last event (in *last, owned by evs). */
static int terminal_events(const cJSON *evs, const cJSON **last)
{
    int n = 0;
    const cJSON *e;
    *last = NULL;
    cJSON_ArrayForEach (e, evs) {
        n += it_ev_terminal(e);
        *last = e;
    }
    return n;
}

/* An event's "errors" must be exactly "subtask <i>: ..." for the indices in want. */
static void assert_errors(const cJSON *ev, const int *want, int nwant)
{
    const cJSON *errs = cJSON_GetObjectItem(it_ev_data(ev), "errors");
    assert_true(cJSON_IsArray(errs));
    assert_int_equal(cJSON_GetArraySize(errs), nwant);
    for (int k = 0; k < nwant; k++) {
        const cJSON *e = cJSON_GetArrayItem(errs, k);
        char head[32];
        snprintf(head, sizeof head, "subtask %d: ", want[k]);
        assert_true(cJSON_IsString(e));
        if (strncmp(e->valuestring, head, strlen(head)) != 0)
            fail_msg("error %d is '%s', want it to start with '%s'", k, e->valuestring, head);
        assert_non_null(strstr(e->valuestring, "was asked to fail"));
    }
}

/*
 * 1,000 subtasks with parallelism 8: each runs exactly once, never more than
 * 8 at once (measured inside the handler), the progress in the record ends at
 * 1000/1000 and only grows, and the task has one bgtask_done.
 */
static void test_thousand_subtasks(void **state)
{
    it_need_redis();
    par_host("thousand", 0);
    char *log = log_path(), *args = NULL;
    assert_true(asprintf(&args, "{\"n\": 1000, \"ms\": 10, \"log\": \"%s\"}", log) > 0);
    double t0 = th_now();
    char *id = it_submit("partest.run", args, NULL);
    assert_true(it_wait_state(id, "SUCCESS", 120));
    fprintf(stderr, "1000 subtasks ran in %.2fs\n", th_now() - t0);

    plog pl;
    plog_read(&pl, log, 0, 1000);
    assert_int_equal(pl.splits, 1);
    assert_int_equal(pl.starts, 1000);
    assert_int_equal(pl.ends, 1000);
    for (int i = 0; i < 1000; i++)
        if (pl.start[i] != 1 || pl.ok[i] != 1)
            fail_msg("subtask %d: %d start(s), %d success(es), want 1 each", i, pl.start[i],
                     pl.ok[i]);
    fprintf(stderr, "highest concurrency seen by the handler: %d\n", pl.max);
    assert_true(pl.max <= 8);
    assert_true(pl.max >= 2); /* they did run side by side */

    it_assert_field(id, "progress_current", "1000");
    it_assert_field(id, "progress_total", "1000");
    it_assert_field(id, "sub_success", "1000");
    it_assert_field(id, "sub_failure", "0");
    it_assert_field(id, "attempt", "1");
    it_assert_one_terminal(id, "bgtask_done");
    cJSON *res = it_field_json(id, "result");
    assert_int_equal(cJSON_GetObjectItem(res, "succeeded")->valueint, 1000);
    assert_int_equal(cJSON_GetObjectItem(res, "failed")->valueint, 0);
    cJSON_Delete(res);

    /* Progress events: the overall count never goes back, and each carries the
     * subtasks object with at most 8 running. */
    cJSON *evs = it_events(id);
    const cJSON *e;
    double prev = 0;
    int with_subtasks = 0;
    cJSON_ArrayForEach (e, evs) {
        if (strcmp(it_ev_name(e), "bgtask_updated") != 0)
            continue;
        double cur = it_ev_number(e, "current_progress");
        if (cur < prev)
            fail_msg("progress went back from %g to %g", prev, cur);
        prev = cur;
        const cJSON *subs = cJSON_GetObjectItem(it_ev_data(e), "subtasks");
        if (!subs)
            continue;
        with_subtasks++;
        assert_int_equal(cJSON_GetObjectItem(subs, "total")->valueint, 1000);
        assert_int_equal(cJSON_GetObjectItem(subs, "failed")->valueint, 0);
        assert_true(it_ev_number(e, "total_progress") == 1000);
        const cJSON *run = cJSON_GetObjectItem(subs, "running"), *r;
        assert_true(cJSON_IsArray(run));
        assert_true(cJSON_GetArraySize(run) <= 8);
        cJSON_ArrayForEach (r, run) {
            double p = cJSON_GetObjectItem(r, "progress")->valuedouble;
            assert_true(p >= 0 && p <= 1);
        }
    }
    assert_true(with_subtasks > 0);
    assert_true(prev == 1000);
    cJSON_Delete(evs);

    /* The CLI agrees: watch exits 0, and every subtask is SUCCESS after one run. */
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "watch", id, NULL), 0);
    cJSON *subs = sub_states(id);
    assert_int_equal(cJSON_GetArraySize(subs), 1000);
    for (int i = 0; i < 1000; i++) {
        assert_string_equal(sub_state(subs, i), "SUCCESS");
        assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(subs, i), "attempt")->valueint, 1);
    }
    cJSON_Delete(subs);
    plog_free(&pl);
    free(id);
    free(args);
    free(log);
    it_pass();
}

/*
 * Subtasks 3 and 7 of 10 fail: SUCCESS with a bgtask_partial_success that
 * lists exactly those two. `bgtaskctl retry` runs only 3 and 7 again; they
 * fail again, and the task ends with one more partial success.
 */
static void test_partial_failure_then_retry(void **state)
{
    it_need_redis();
    par_host("partial", 0);
    char *log = log_path(), *args = NULL;
    assert_true(asprintf(&args, "{\"n\": 10, \"ms\": 5, \"fail\": [3, 7], \"log\": \"%s\"}", log) >
                0);
    char *id = it_submit("partest.run", args, NULL);
    assert_true(TH_WAIT_UNTIL(30, th_task_terminal(fx.c, IT_PREFIX, id)));
    it_assert_one_terminal(id, "bgtask_partial_success");
    it_assert_field(id, "sub_success", "8");
    it_assert_field(id, "sub_failure", "2");
    const int want[] = {3, 7};
    cJSON *evs = it_events(id);
    const cJSON *last;
    assert_int_equal(terminal_events(evs, &last), 1);
    assert_errors(last, want, 2);
    assert_string_equal(it_ev_message(last), "8 of 10 subtasks succeeded, 2 failed");
    cJSON_Delete(evs);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "watch", id, NULL), 4);

    plog pl;
    plog_read(&pl, log, 0, 10);
    assert_int_equal(pl.starts, 10);
    long mark = pl.size;
    plog_free(&pl);

    char *out = NULL;
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "retry", id, NULL), 0);
    assert_string_equal(out, "retrying 2 failed subtask(s)\n");
    free(out);
    assert_true(
        TH_WAIT_UNTIL(30, th_count_events(fx.c, IT_PREFIX, id, "bgtask_partial_success") == 2 &&
                              th_task_terminal(fx.c, IT_PREFIX, id)));

    /* Only 3 and 7 ran again, once each, and the split was not redone. */
    plog_read(&pl, log, mark, 10);
    assert_int_equal(pl.splits, 0);
    assert_int_equal(pl.starts, 2);
    assert_int_equal(pl.start[3], 1);
    assert_int_equal(pl.start[7], 1);
    assert_int_equal(pl.failed[3] + pl.failed[7], 2);
    plog_free(&pl);

    evs = it_events(id);
    assert_int_equal(terminal_events(evs, &last), 2);
    assert_string_equal(it_ev_name(last), "bgtask_partial_success");
    assert_errors(last, want, 2);
    /* The re-run's bgtask_updated carries the progress, as every one does: the subtasks
     * that had succeeded, over all of them (issue 8, item 12). */
    const cJSON *e;
    int reruns = 0;
    cJSON_ArrayForEach (e, evs)
        if (strstr(it_ev_message(e), "Retrying 2 failed subtask(s)")) {
            assert_true(it_ev_number(e, "current_progress") == 8);
            assert_true(it_ev_number(e, "total_progress") == 10);
            reruns++;
        }
    assert_int_equal(reruns, 1);
    cJSON_Delete(evs);
    it_assert_field(id, "state", "SUCCESS");
    it_assert_field(id, "attempt", "2");
    it_assert_field(id, "sub_success", "8");
    it_assert_field(id, "sub_failure", "2");
    cJSON *subs = sub_states(id);
    for (int i = 0; i < 10; i++) {
        bool bad = i == 3 || i == 7;
        assert_string_equal(sub_state(subs, i), bad ? "FAILURE" : "SUCCESS");
        assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(subs, i), "attempt")->valueint,
                         bad ? 2 : 1);
    }
    cJSON_Delete(subs);
    free(id);
    free(args);
    free(log);
    it_pass();
}

/* Subtasks that fail only their first run: a retry (with --wait) ends bgtask_done. */
static void test_retry_then_done(void **state)
{
    it_need_redis();
    par_host("retry-done", 0);
    char *log = log_path(), *args = NULL;
    assert_true(
        asprintf(&args, "{\"n\": 10, \"ms\": 5, \"fail_once\": [3, 7], \"log\": \"%s\"}", log) > 0);
    char *id = it_submit("partest.run", args, NULL);
    assert_true(TH_WAIT_UNTIL(30, th_task_terminal(fx.c, IT_PREFIX, id)));
    it_assert_one_terminal(id, "bgtask_partial_success");
    long mark = log_size(log);

    char *out = NULL;
    assert_int_equal(th_ctl_timeout(60, &fx.r, &out, NULL, "retry", id, "--wait", NULL), 0);
    assert_non_null(strstr(out, "retrying 2 failed subtask(s)\n"));
    assert_non_null(strstr(out, "bgtask_done"));
    free(out);

    plog pl;
    plog_read(&pl, log, mark, 10);
    assert_int_equal(pl.splits, 0);
    assert_int_equal(pl.starts, 2);
    assert_int_equal(pl.ok[3], 1);
    assert_int_equal(pl.ok[7], 1);
    plog_free(&pl);

    cJSON *evs = it_events(id);
    const cJSON *last;
    assert_int_equal(terminal_events(evs, &last), 2);
    assert_string_equal(it_ev_name(last), "bgtask_done");
    cJSON_Delete(evs);
    assert_int_equal(th_count_events(fx.c, IT_PREFIX, id, "bgtask_partial_success"), 1);
    it_assert_field(id, "state", "SUCCESS");
    it_assert_field(id, "sub_success", "10");
    it_assert_field(id, "sub_failure", "0");
    cJSON *res = it_field_json(id, "result");
    assert_int_equal(cJSON_GetObjectItem(res, "succeeded")->valueint, 10);
    assert_int_equal(cJSON_GetObjectItem(res, "failed")->valueint, 0);
    cJSON_Delete(res);
    /* Nothing failed any more: nothing to retry. */
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "retry", id, NULL), 1);
    free(id);
    free(args);
    free(log);
    it_pass();
}

/*
 * A fail_fast run of 40 subtasks of 300 ms under parallelism par: subtask
 * par + 1 fails 20 ms after it starts, while the second wave is mid-run. Its
 * failure stops the running siblings, nothing starts after it, and the task
 * ends FAILURE with one terminal event.
 */
static void check_fail_fast(const char *id, const char *log, int par)
{
    const int n = 40, bad = par + 1;
    assert_true(it_wait_state(id, "FAILURE", 60));
    it_assert_one_terminal(id, "bgtask_failed");
    char *err = it_field(id, "error"), want[64];
    snprintf(want, sizeof want, "subtask %d failed", bad);
    assert_non_null(strstr(err, want));
    assert_non_null(strstr(err, "fail_fast"));
    free(err);

    plog pl;
    plog_read(&pl, log, 0, n);
    assert_int_equal(pl.starts, pl.ends); /* every run ended before the task did */
    assert_int_equal(pl.starts_after_fail, 0);
    assert_true(pl.starts < n);
    assert_int_equal(pl.failed[bad], 1);
    int told = 0;
    for (int i = 0; i < n; i++)
        told += pl.cancelled[i];
    assert_true(told >= 1); /* the siblings running at the failure were stopped */

    cJSON *subs = sub_states(id);
    int cancelled = 0;
    for (int i = 0; i < n; i++) {
        const char *s = sub_state(subs, i);
        if (pl.start[i] == 0)
            assert_string_equal(s, "PENDING");
        else if (i == bad)
            assert_string_equal(s, "FAILURE");
        else if (strcmp(s, "CANCELLED") == 0)
            cancelled++;
        else
            assert_string_equal(s, "SUCCESS");
    }
    assert_int_equal(cancelled, told);
    cJSON_Delete(subs);
    plog_free(&pl);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "watch", id, NULL), 1);
}

static void test_fail_fast(void **state)
{
    it_need_redis();
    par_host("ff", 0);
    char *log = log_path(), *args = NULL;
    assert_true(asprintf(&args,
                         "{\"n\": 40, \"ms\": 300, \"fail\": [5], \"fail_ms\": 20, "
                         "\"log\": \"%s\"}",
                         log) > 0);
    char *id = it_submit("partest.ff", args, NULL); /* parallelism 4 */
    check_fail_fast(id, log, 4);
    free(id);
    free(args);
    free(log);
    it_pass();
}

/* --on-failure fail_fast makes partest.run (parallelism 8) behave like partest.ff. */
static void test_on_failure_override(void **state)
{
    it_need_redis();
    par_host("ff-override", 0);
    char *log = log_path(), *args = NULL;
    assert_true(asprintf(&args,
                         "{\"n\": 40, \"ms\": 300, \"fail\": [9], \"fail_ms\": 20, "
                         "\"log\": \"%s\"}",
                         log) > 0);
    char *id = it_submit("partest.run", args, "--on-failure", "fail_fast", NULL);
    it_assert_field(id, "on_failure", "fail_fast");
    check_fail_fast(id, log, 8);
    free(id);
    free(args);
    free(log);
    it_pass();
}

/* --parallelism 2 caps partest.run (parallelism 8) at 2 subtasks at once. */
static void test_parallelism_override(void **state)
{
    it_need_redis();
    par_host("par2", 0);
    char *log = log_path(), *args = NULL;
    assert_true(asprintf(&args, "{\"n\": 12, \"ms\": 50, \"log\": \"%s\"}", log) > 0);
    char *id = it_submit("partest.run", args, "--parallelism", "2", NULL);
    it_assert_field(id, "parallelism", "2");
    assert_true(it_wait_state(id, "SUCCESS", 60));
    it_assert_one_terminal(id, "bgtask_done");
    plog pl;
    plog_read(&pl, log, 0, 12);
    assert_int_equal(pl.starts, 12);
    fprintf(stderr, "highest concurrency seen by the handler: %d\n", pl.max);
    assert_int_equal(pl.max, 2);
    plog_free(&pl);
    free(id);
    free(args);
    free(log);
    it_pass();
}

/*
 * watch --subtasks, not on a terminal: after each progress line, one line per
 * running subtask, never more than the task's parallelism (2). The task is
 * delayed so that the watch is listening before it starts.
 */
static void test_watch_subtasks(void **state)
{
    it_need_redis();
    par_host("watch", 0);
    char *log = log_path(), *args = NULL, *out = NULL;
    assert_true(asprintf(&args, "{\"n\": 6, \"ms\": 100, \"log\": \"%s\"}", log) > 0);
    char *id = it_submit("partest.run", args, "--parallelism", "2", "--delay", "1.5", NULL);
    assert_int_equal(th_ctl_timeout(60, &fx.r, &out, NULL, "watch", id, "--subtasks", NULL), 0);
    int progress = 0, lines = 0, under = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        int i, pct;
        if (strstr(line, " bgtask_updated ")) {
            progress++;
            under = 0;
        } else if (sscanf(line, "%*s subtask %d %d%%", &i, &pct) == 2) {
            assert_true(i >= 0 && i < 6 && pct >= 0 && pct <= 100);
            lines++;
            under++;
            assert_true(under <= 2);
        }
    }
    assert_true(progress >= 2);
    assert_true(lines >= 1);
    free(out);
    free(id);
    free(args);
    free(log);
    it_pass();
}

/*
 * kill -9 the host halfway through 200 subtasks; a second host takes the task
 * over once the first is buried. Every subtask ran to success exactly once,
 * except those in flight at the kill (started, outcome not yet in Redis),
 * which ran at most twice; the split was called once; one terminal event.
 */
static void test_kill_host_midway(void **state)
{
    it_need_redis();
    const int n = 200;
    th_host *a = par_host("first", 0);
    char *log = log_path(), *args = NULL;
    assert_true(asprintf(&args, "{\"n\": %d, \"ms\": 30, \"log\": \"%s\"}", n, log) > 0);
    char *id = it_submit("partest.run", args, NULL);
    assert_true(TH_WAIT_UNTIL(60, log_lines(log, "end") >= n / 2));
    th_host_kill(a);
    assert_false(it_host_alive(a));
    it_assert_field(id, "state", "ONGOING");

    /* What was finished in Redis and what had started when the host died. */
    cJSON *subs = sub_states(id);
    plog before;
    plog_read(&before, log, 0, n);
    bool *done = calloc((size_t)n, sizeof *done), *in_flight = calloc((size_t)n, sizeof *done);
    assert_true(done && in_flight);
    int ndone = 0, nflight = 0;
    for (int i = 0; i < n; i++) {
        done[i] = strcmp(sub_state(subs, i), "SUCCESS") == 0;
        in_flight[i] = !done[i] && before.start[i] > 0;
        ndone += done[i];
        nflight += in_flight[i];
        if (done[i])
            assert_int_equal(before.ok[i], 1); /* persisted only after it ran */
    }
    cJSON_Delete(subs);
    fprintf(stderr, "at the kill: %d subtasks done in redis, %d in flight\n", ndone, nflight);
    assert_true(ndone > 0 && ndone < n);
    /* In flight: at most 8 running plus those ended but not yet written, a batch at most. */
    assert_true(nflight <= 16);

    th_host *b = par_host("second", 0);
    assert_true(it_wait_state(id, "SUCCESS", 60));
    assert_true(th_log_contains(b, "subtasks already finished; running the rest"));

    plog pl;
    plog_read(&pl, log, 0, n);
    assert_int_equal(pl.splits, 1);
    int twice = 0;
    for (int i = 0; i < n; i++) {
        if (pl.ok[i] < 1)
            fail_msg("subtask %d never succeeded", i);
        int allowed = in_flight[i] ? 2 : 1;
        if (pl.start[i] > allowed)
            fail_msg("subtask %d ran %d times (%s at the kill)", i, pl.start[i],
                     done[i]        ? "done"
                     : in_flight[i] ? "in flight"
                                    : "not started");
        twice += pl.start[i] == 2;
    }
    fprintf(stderr, "subtasks run twice: %d\n", twice);
    it_assert_one_terminal(id, "bgtask_done");
    it_assert_field(id, "attempt", "2");
    it_assert_ended_on(id, b, 2);
    it_assert_field(id, "sub_success", "200");
    it_assert_field(id, "progress_current", "200");
    it_assert_field(id, "progress_total", "200");
    plog_free(&pl);
    plog_free(&before);
    free(done);
    free(in_flight);
    free(id);
    free(args);
    free(log);
    it_pass();
}

/*
 * Redis paused (SIGSTOP) for longer than the lease while a parallel task runs:
 * the host's calls time out, its own clock says the lease ran out, it stops
 * the subtasks and drops the attempt, with subtask outcomes it could not
 * write still queued (the writer must not use the dropped task for them:
 * make asan tells). When Redis is back the task is claimed again (attempt 2)
 * and ends once, with every subtask succeeded; the subtasks that were
 * finished in Redis before the pause never ran again.
 */
static void test_redis_paused_past_lease(void **state)
{
    it_need_redis();
    const int n = 200;
    th_host *h = par_host("paused", 0);
    char *log = log_path(), *args = NULL;
    assert_true(asprintf(&args, "{\"n\": %d, \"ms\": 300, \"log\": \"%s\"}", n, log) > 0);
    char *id = it_submit("partest.run", args, NULL);
    assert_true(TH_WAIT_UNTIL(30, log_lines(log, "end") >= 24));
    cJSON *subs = sub_states(id);
    bool *done = calloc((size_t)n, sizeof *done);
    assert_non_null(done);
    for (int i = 0; i < n; i++)
        done[i] = strcmp(sub_state(subs, i), "SUCCESS") == 0;
    cJSON_Delete(subs);

    /* Paused, not killed: nothing is lost, and the host's commands hang until they time
     * out. Resume it whatever happens, before any assertion. */
    assert_int_equal(kill(fx.r.pid, SIGSTOP), 0);
    bool noticed = TH_WAIT_UNTIL(30, th_log_contains(h, "lease ran out") ||
                                         th_log_contains(h, "lost its lease"));
    bool stopped = TH_WAIT_UNTIL(30, th_log_contains(h, "its subtasks stopped") &&
                                         th_log_contains(h, "writing to redis failed"));
    /* Paused a while longer than one Redis call may take (the store's 5 s): the writer
     * then fails a batch after the attempt was dropped, with the outcomes it held
     * requeued. Only the outage gets longer here; nothing waits for a race to settle. */
    for (double until = th_now() + 6.0; stopped && th_now() < until;)
        th_sleep(0.05);
    assert_int_equal(kill(fx.r.pid, SIGCONT), 0);
    assert_true(noticed);
    assert_true(stopped);

    assert_true(it_wait_state(id, "SUCCESS", 60));
    it_assert_one_terminal(id, "bgtask_done");
    it_assert_field(id, "attempt", "2");
    it_assert_field(id, "sub_success", "200");
    plog pl;
    plog_read(&pl, log, 0, n);
    assert_int_equal(pl.splits, 1);
    for (int i = 0; i < n; i++) {
        if (pl.ok[i] < 1)
            fail_msg("subtask %d never succeeded", i);
        if (pl.start[i] > (done[i] ? 1 : 2))
            fail_msg("subtask %d ran %d times (%s before the pause)", i, pl.start[i],
                     done[i] ? "done" : "not done");
    }
    plog_free(&pl);
    free(done);
    free(id);
    free(args);
    free(log);
    it_pass();
}

/*
 * Cancel a running parallel task: the running subtasks are told and end, the
 * unstarted ones never start, the task ends CANCELLED with one terminal event.
 */
static void test_cancel_running(void **state)
{
    it_need_redis();
    par_host("cancel", 0);
    char *log = log_path(), *args = NULL;
    assert_true(asprintf(&args, "{\"n\": 100, \"ms\": 400, \"log\": \"%s\"}", log) > 0);
    char *id = it_submit("partest.run", args, NULL);
    assert_true(TH_WAIT_UNTIL(30, log_lines(log, "start") >= 8));
    char *out = NULL;
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "cancel", id, NULL), 0);
    assert_non_null(strstr(out, "cancel requested"));
    free(out);
    assert_true(it_wait_state(id, "CANCELLED", 30));

    /* When the task ends, every run it started has ended: the running ones were told. */
    plog pl;
    plog_read(&pl, log, 0, 100);
    assert_int_equal(pl.starts, pl.ends);
    assert_true(pl.starts < 100);
    int told = 0;
    for (int i = 0; i < 100; i++)
        told += pl.cancelled[i];
    assert_true(told >= 1);
    it_assert_one_terminal(id, "bgtask_cancelled");
    char *msg = it_field(id, "message");
    assert_non_null(strstr(msg, "Cancelled"));
    free(msg);
    cJSON *subs = sub_states(id);
    for (int i = 0; i < 100; i++) {
        const char *s = sub_state(subs, i);
        if (pl.start[i] == 0)
            assert_string_equal(s, "PENDING");
        else if (pl.cancelled[i])
            assert_string_equal(s, "CANCELLED");
        else
            assert_string_equal(s, "SUCCESS");
    }
    cJSON_Delete(subs);
    long size = pl.size;
    plog_free(&pl);

    /* A later task runs on the same workers; by its end, nothing of the first one started. */
    char *log2 = log_path(), *args2 = NULL;
    assert_true(asprintf(&args2, "{\"n\": 1, \"ms\": 1, \"log\": \"%s\"}", log2) > 0);
    char *id2 = it_submit("partest.run", args2, NULL);
    assert_true(it_wait_state(id2, "SUCCESS", 30));
    assert_int_equal(log_size(log), size);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "watch", id, NULL), 3);
    free(id2);
    free(args2);
    free(log2);
    free(id);
    free(args);
    free(log);
    it_pass();
}

/* A JSON array of k subtask args {"ms": 5, "log": L, "tag": "t<i>"} (malloc'd). */
static char *subtask_array(int k, const char *log)
{
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < k; i++) {
        cJSON *o = cJSON_CreateObject();
        char tag[16];
        snprintf(tag, sizeof tag, "t%d", i);
        cJSON_AddNumberToObject(o, "ms", 5);
        cJSON_AddStringToObject(o, "log", log);
        cJSON_AddStringToObject(o, "tag", tag);
        cJSON_AddItemToArray(arr, o);
    }
    char *s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return s;
}

/* A file holding text, in a scratch folder (path malloc'd). */
static char *write_temp(const char *text)
{
    char *dir = th_tmpdir("par-subs"), *path = NULL;
    assert_true(asprintf(&path, "%s/subtasks.json", dir) > 0);
    free(dir);
    it_write_file(path, text);
    return path;
}

/* The subtasks' args in P:sub are the submitted elements, in order. */
static void assert_tags(const char *id, int k)
{
    cJSON *subs = sub_states(id);
    assert_int_equal(cJSON_GetArraySize(subs), k);
    for (int i = 0; i < k; i++) {
        char tag[16];
        snprintf(tag, sizeof tag, "t%d", i);
        cJSON *a = cJSON_GetObjectItem(cJSON_GetArrayItem(subs, i), "args");
        assert_string_equal(cJSON_GetObjectItem(a, "tag")->valuestring, tag);
        assert_string_equal(sub_state(subs, i), "SUCCESS");
    }
    cJSON_Delete(subs);
}

/*
 * Subtask args given at submission reach the handler as they were written (issue 8,
 * item 7): a number that a double keeps exactly is not rounded, an empty array stays an
 * array. The store keeps the submitted text of each element and no script decodes or
 * encodes it.
 */
static void test_subtask_args_as_given(void **state)
{
    it_need_redis();
    par_host("asgiven", 0);
    char *log = log_path();
    char *arr = NULL;
    assert_true(asprintf(&arr,
                         "[{\"log\": \"%s\", \"echo_args\": true, \"n\": 123456789012345, "
                         "\"l\": [], \"o\": {}},"
                         " {\"log\": \"%s\", \"echo_args\": true, \"f\": 0.1, \"m\": [[], [1]]}]",
                         log, log) > 0);
    char *file = write_temp(arr);
    char *id = it_submit("partest.list", NULL, "--subtasks-file", file, NULL);
    assert_true(it_wait_state(id, "SUCCESS", 30));
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    char line[512];
    int seen = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "args 0 ", 7) == 0) {
            const char *want_tail = "\"n\":123456789012345,\"l\":[],\"o\":{}}";
            if (!strstr(line, want_tail))
                fail_msg("subtask 0 got %s, want ...%s", line + 7, want_tail);
            seen++;
        } else if (strncmp(line, "args 1 ", 7) == 0) {
            const char *want_tail = "\"f\":0.1,\"m\":[[],[1]]}";
            if (!strstr(line, want_tail))
                fail_msg("subtask 1 got %s, want ...%s", line + 7, want_tail);
            seen++;
        }
    }
    fclose(f);
    assert_int_equal(seen, 2);
    free(id);
    free(file);
    free(arr);
    free(log);
    it_pass();
}

/* Subtasks given at submission: --subtasks-file (the split is not called) and args.subtasks. */
static void test_explicit_subtasks(void **state)
{
    it_need_redis();
    par_host("explicit", 0);
    char *log = log_path();
    char *arr = subtask_array(5, log);
    char *file = write_temp(arr);
    char *id = it_submit("partest.run", NULL, "--subtasks-file", file, NULL);
    assert_true(it_wait_state(id, "SUCCESS", 30));
    it_assert_one_terminal(id, "bgtask_done");
    it_assert_field(id, "kind", "parallel");
    it_assert_field(id, "subtasks", "5");
    plog pl;
    plog_read(&pl, log, 0, 5);
    assert_int_equal(pl.splits, 0);
    assert_int_equal(pl.starts, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(pl.ok[i], 1);
    long mark = pl.size;
    plog_free(&pl);
    assert_tags(id, 5);
    free(id);
    free(arr);

    /* A handler without a split function takes args.subtasks. */
    arr = subtask_array(4, log);
    char *args = NULL;
    assert_true(asprintf(&args, "{\"subtasks\": %s}", arr) > 0);
    id = it_submit("partest.list", args, NULL);
    assert_true(it_wait_state(id, "SUCCESS", 30));
    it_assert_one_terminal(id, "bgtask_done");
    it_assert_field(id, "subtasks", "4");
    plog_read(&pl, log, mark, 4);
    assert_int_equal(pl.splits, 0);
    assert_int_equal(pl.starts, 4);
    plog_free(&pl);
    assert_tags(id, 4);
    free(id);
    free(args);

    /* An empty list: nothing to do, done at once, nothing ran. */
    id = it_submit("partest.list", "{\"subtasks\": []}", NULL);
    assert_true(it_wait_state(id, "SUCCESS", 30));
    it_assert_one_terminal(id, "bgtask_done");
    char *msg = it_field(id, "message");
    assert_non_null(strstr(msg, "nothing to do"));
    free(msg);
    free(id);

    /* Neither: the failure says what is missing. */
    id = it_submit("partest.list", "{}", NULL);
    assert_true(it_wait_state(id, "FAILURE", 30));
    it_assert_one_terminal(id, "bgtask_failed");
    char *err = it_field(id, "error");
    assert_non_null(strstr(err, "args.subtasks"));
    free(err);
    free(id);
    free(arr);
    free(file);
    free(log);
    it_pass();
}

/* The subtasks of a partest.batch task that got the 5 items of subtask_array(5): 3, of
 * {"items": [items 2k, 2k+1], "first": 2k}, each ended with its count. */
static void assert_batches(const char *id)
{
    assert_true(it_wait_state(id, "SUCCESS", 30));
    it_assert_one_terminal(id, "bgtask_done");
    cJSON *subs = sub_states(id);
    assert_int_equal(cJSON_GetArraySize(subs), 3);
    for (int k = 0; k < 3; k++) {
        const cJSON *sub = cJSON_GetArrayItem(subs, k);
        const cJSON *a = cJSON_GetObjectItem(sub, "args");
        assert_int_equal(cJSON_GetObjectItem(a, "first")->valueint, 2 * k);
        const cJSON *items = cJSON_GetObjectItem(a, "items");
        assert_int_equal(cJSON_GetArraySize(items), k < 2 ? 2 : 1);
        for (int i = 0; i < cJSON_GetArraySize(items); i++) {
            char tag[16];
            snprintf(tag, sizeof tag, "t%d", 2 * k + i);
            assert_string_equal(
                cJSON_GetObjectItem(cJSON_GetArrayItem(items, i), "tag")->valuestring, tag);
        }
        assert_string_equal(sub_state(subs, k), "SUCCESS");
        assert_int_equal(
            cJSON_GetObjectItem(cJSON_GetObjectItem(sub, "result"), "items")->valueint,
            k < 2 ? 2 : 1);
    }
    cJSON_Delete(subs);
}

/*
 * The three ways a submitter gives a parallel task its subtasks (bgtaskctl
 * --subtasks-file, args.subtasks, "subtasks" in POST /v1/tasks) are one: the
 * handler's batch_size groups them the same (5 items in batches of 2: 3
 * subtasks), and args beside them, which nothing would read, are refused in
 * every way, changing nothing. A handler with a split function does not split
 * a task given its subtasks; args a client wrote past these checks are refused
 * by the host that claims the task.
 */
static void test_subtasks_three_ways(void **state)
{
    it_need_redis();
    th_host *h = it_host_start(&(th_host_opts){.id = "ways",
                                                .workers = PAR_WORKERS,
                                                .plugins = partest_load,
                                                .extra = "http: { listen = \"127.0.0.1:0\"; };"});
    int port = th_host_http_port(h);
    assert_true(port > 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/tasks", port);
    char *log = log_path();
    char *arr = subtask_array(5, log);
    char *file = write_temp(arr);

    char *id = it_submit("partest.batch", NULL, "--subtasks-file", file, NULL);
    assert_batches(id);
    free(id);
    char *args = NULL, *body = NULL, *out = NULL;
    assert_true(asprintf(&args, "{\"subtasks\": %s}", arr) > 0);
    id = it_submit("partest.batch", args, NULL);
    assert_batches(id);
    free(id);
    assert_true(asprintf(&body, "{\"handler\": \"partest.batch\", \"subtasks\": %s}", arr) > 0);
    assert_int_equal(th_http("POST", url, NULL, body, &out), 202);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_batches(cJSON_GetObjectItem(j, "task_id")->valuestring);
    cJSON_Delete(j);
    free(out);
    free(body);
    free(args);

    plog pl;
    plog_read(&pl, log, 0, 0);
    assert_int_equal(pl.batches, 9);
    plog_free(&pl);

    /* Args beside the subtasks: refused, whichever way, and nothing written. */
    long long keys = it_dbsize();
    char *err = NULL;
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "submit", "partest.batch", "--subtasks-file", file,
                            "--args", "{\"ms\": 1}", NULL),
                     2);
    assert_non_null(strstr(err, "args would be ignored"));
    free(err);
    assert_true(asprintf(&args, "{\"subtasks\": %s, \"ms\": 1}", arr) > 0);
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "submit", "partest.batch", "--args", args, NULL), 2);
    assert_non_null(strstr(err, "args.ms would be ignored"));
    free(err);
    assert_true(asprintf(&body, "{\"handler\": \"partest.batch\", \"args\": %s}", args) > 0);
    assert_int_equal(th_http("POST", url, NULL, body, &out), 400);
    assert_non_null(strstr(out, "args.ms would be ignored"));
    free(out);
    free(body);
    free(args);
    assert_true(asprintf(&body,
                         "{\"handler\": \"partest.batch\", \"args\": {\"ms\": 1}, \"subtasks\": %s}",
                         arr) > 0);
    assert_int_equal(th_http("POST", url, NULL, body, &out), 400);
    assert_non_null(strstr(out, "args would be ignored"));
    free(out);
    free(body);
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "submit", "partest.batch", "--args",
                            "{\"subtasks\": {\"a\": 1}}", NULL),
                     2);
    assert_non_null(strstr(err, "args.subtasks must be an array"));
    free(err);
    assert_int_equal(it_dbsize(), keys);

    /* A handler with a split function, given its subtasks: they are the subtasks, one each. */
    long mark = log_size(log);
    assert_true(asprintf(&args, "{\"subtasks\": %s}", arr) > 0);
    id = it_submit("partest.run", args, NULL);
    assert_true(it_wait_state(id, "SUCCESS", 30));
    plog_read(&pl, log, mark, 5);
    assert_int_equal(pl.splits, 0);
    assert_int_equal(pl.starts, 5);
    plog_free(&pl);
    assert_tags(id, 5);
    free(id);
    free(args);

    /* Args a client wrote past the checks: the claim refuses them, the task fails, and no
     * subtask runs. */
    id = it_submit("partest.batch", "{}", "--delay", "600", NULL);
    assert_true(asprintf(&args, "{\"subtasks\": %s, \"ms\": 1}", arr) > 0);
    th_task_set(fx.c, IT_PREFIX, id, "args", args);
    mark = log_size(log);
    th_task_due(fx.c, IT_PREFIX, "partest.batch", id);
    assert_true(it_wait_state(id, "FAILURE", 30));
    char *why = it_field(id, "error");
    assert_non_null(strstr(why, "args.ms would be ignored"));
    free(why);
    assert_int_equal(log_size(log), mark);
    free(id);
    free(args);
    free(arr);
    free(file);
    free(log);
    it_pass();
}

/* The error of a task over tasks.max_subtasks names the setting and its value. */
static void assert_limit_error(const char *id)
{
    assert_true(it_wait_state(id, "FAILURE", 30));
    it_assert_one_terminal(id, "bgtask_failed");
    char *err = it_field(id, "error");
    if (!strstr(err, "tasks.max_subtasks") || !strstr(err, "5"))
        fail_msg("error '%s' does not name tasks.max_subtasks = 5", err);
    free(err);
}

/* tasks.max_subtasks = 5 on the host (and in the CLI's config): 5 pass, 6 do not. */
static void test_subtask_limit(void **state)
{
    it_need_redis();
    th_host *h = par_host("limit", 5);
    char *log = log_path(), *args = NULL;

    assert_true(asprintf(&args, "{\"n\": 6, \"ms\": 1, \"log\": \"%s\"}", log) > 0);
    char *id = it_submit("partest.run", args, NULL);
    assert_limit_error(id);
    free(id);
    free(args);

    char *arr = subtask_array(6, log);
    assert_true(asprintf(&args, "{\"subtasks\": %s}", arr) > 0);
    id = it_submit("partest.list", args, NULL);
    assert_limit_error(id);
    free(id);
    free(args);
    assert_int_equal(log_lines(log, "start"), 0);

    /* The CLI with the host's config refuses the same count before anything is sent. */
    char *file = write_temp(arr), *err = NULL;
    long long keys = it_dbsize();
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "-c", h->conf, "submit", "partest.run",
                            "--subtasks-file", file, NULL),
                     2);
    assert_non_null(strstr(err, "tasks.max_subtasks"));
    free(err);
    assert_int_equal(it_dbsize(), keys);

    assert_true(asprintf(&args, "{\"n\": 5, \"ms\": 1, \"log\": \"%s\"}", log) > 0);
    id = it_submit("partest.run", args, NULL);
    assert_true(it_wait_state(id, "SUCCESS", 30));
    it_assert_one_terminal(id, "bgtask_done");
    assert_int_equal(log_lines(log, "start"), 5);
    free(id);
    free(args);
    free(arr);
    free(file);
    free(log);
    it_pass();
}

/* ---- the shipped parallel handlers ---- */

#define CLEAN_OLD 25 /* old files in the tree: deleted */
#define CLEAN_NEW 8  /* recent files: kept */

/* Create dir/name with size bytes and set its mtime (and atime) to age_days ago. */
static void make_file(const char *dir, const char *name, int size, double age_days, char **path)
{
    assert_true(asprintf(path, "%s/%s", dir, name) > 0);
    FILE *f = fopen(*path, "w");
    assert_non_null(f);
    for (int i = 0; i < size; i++)
        fputc('x', f);
    assert_int_equal(fclose(f), 0);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct timespec ts = {now.tv_sec - (time_t)(age_days * 86400), 0};
    struct timespec times[2] = {ts, ts};
    assert_int_equal(utimensat(AT_FDCWD, *path, times, 0), 0);
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/*
 * files.cleanup on a generated tree (old files 10 days old, recent ones 1 and
 * 4 days old, a link inside the tree to an old file outside it): a dry run
 * deletes nothing; the real run deletes exactly the old files, in batches of 4,
 * and counts them and their bytes. Subtasks a submitter wrote to reach outside
 * the tree (the plugin's allowed_roots) fail and delete nothing.
 */
static void test_files_cleanup(void **state)
{
    it_need_redis();
    char *top = th_tmpdir("cleanup"), *root = NULL, *sub = NULL, *deep = NULL, *outside = NULL;
    char *plugins = NULL;
    assert_true(asprintf(&plugins,
                         "{ name = \"files\"; config = { allowed_roots = [\"%s/tree\"]; }; }",
                         top) > 0);
    it_host_start(&(th_host_opts){.id = "files", .workers = PAR_WORKERS, .plugins = plugins});
    assert_true(asprintf(&root, "%s/tree", top) > 0);
    assert_true(asprintf(&sub, "%s/a", root) > 0);
    assert_true(asprintf(&deep, "%s/a/b", root) > 0);
    assert_true(asprintf(&outside, "%s/outside", top) > 0);
    const char *dirs[] = {root, sub, deep, outside};
    for (int i = 0; i < 4; i++)
        assert_int_equal(mkdir(dirs[i], 0755), 0);
    char *old[CLEAN_OLD], *recent[CLEAN_NEW], *victim = NULL, *link = NULL;
    long bytes = 0;
    for (int i = 0; i < CLEAN_OLD; i++) {
        char name[32];
        snprintf(name, sizeof name, "old%d.log", i);
        make_file(dirs[i % 3], name, 100 + i, 10, &old[i]);
        bytes += 100 + i;
    }
    for (int i = 0; i < CLEAN_NEW; i++) {
        char name[32];
        snprintf(name, sizeof name, "new%d.log", i);
        make_file(dirs[i % 3], name, 50, i % 2 ? 1 : 4, &recent[i]);
    }
    make_file(outside, "victim.log", 10, 10, &victim);
    assert_true(asprintf(&link, "%s/link.log", sub) > 0);
    assert_int_equal(symlink(victim, link), 0);
    struct timespec old_ts[2] = {{time(NULL) - 10 * 86400, 0}, {time(NULL) - 10 * 86400, 0}};
    assert_int_equal(utimensat(AT_FDCWD, link, old_ts, AT_SYMLINK_NOFOLLOW), 0);

    char *args = NULL;
    assert_true(asprintf(&args,
                         "{\"path\": \"%s\", \"older_than_days\": 5, \"batch_size\": 4, "
                         "\"dry_run\": true}",
                         root) > 0);
    char *id = it_submit("files.cleanup", args, NULL);
    assert_true(it_wait_state(id, "SUCCESS", 60));
    it_assert_one_terminal(id, "bgtask_done");
    cJSON *res = it_field_json(id, "result");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(res, "dry_run")));
    assert_int_equal(cJSON_GetObjectItem(res, "deleted")->valueint, CLEAN_OLD);
    cJSON_Delete(res);
    for (int i = 0; i < CLEAN_OLD; i++)
        assert_true(exists(old[i]));
    free(id);
    free(args);

    assert_true(
        asprintf(&args, "{\"path\": \"%s\", \"older_than_days\": 5, \"batch_size\": 4}", root) > 0);
    id = it_submit("files.cleanup", args, NULL);
    assert_true(it_wait_state(id, "SUCCESS", 60));
    it_assert_one_terminal(id, "bgtask_done");
    it_assert_field(id, "subtasks", "7"); /* 25 files in batches of 4 */
    res = it_field_json(id, "result");
    assert_int_equal(cJSON_GetObjectItem(res, "deleted")->valueint, CLEAN_OLD);
    assert_int_equal((long)cJSON_GetObjectItem(res, "bytes")->valuedouble, bytes);
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(res, "dry_run")));
    cJSON_Delete(res);
    for (int i = 0; i < CLEAN_OLD; i++)
        if (exists(old[i]))
            fail_msg("%s is old and was not deleted", old[i]);
    for (int i = 0; i < CLEAN_NEW; i++)
        if (!exists(recent[i]))
            fail_msg("%s is recent and was deleted", recent[i]);
    assert_true(exists(link));   /* links are neither followed nor deleted */
    assert_true(exists(victim)); /* and what they point at is outside the tree */
    for (int i = 0; i < 4; i++)
        assert_true(exists(dirs[i]));

    /* Subtasks written by the submitter, not by the split: a root spelled "/." and a file
     * spelled from it; a root outside allowed_roots. Each batch fails, the victim stays. */
    char *hostile = NULL, *file = NULL;
    assert_true(asprintf(&hostile,
                         "[{\"root\": \"/.\", \"cutoff\": %ld, \"files\": [\"/.%s\"]}, "
                         "{\"root\": \"%s\", \"cutoff\": %ld, \"files\": [\"%s\"]}]",
                         (long)time(NULL), victim, outside, (long)time(NULL), victim) > 0);
    assert_true(asprintf(&file, "%s/hostile.json", top) > 0);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs(hostile, f);
    fclose(f);
    free(id);
    id = it_submit("files.cleanup", NULL, "--subtasks-file", file, NULL);
    assert_true(it_wait_state(id, "FAILURE", 60));
    assert_true(exists(victim));
    free(hostile);
    free(file);

    for (int i = 0; i < CLEAN_OLD; i++)
        free(old[i]);
    for (int i = 0; i < CLEAN_NEW; i++)
        free(recent[i]);
    free(victim);
    free(link);
    free(id);
    free(args);
    free(root);
    free(sub);
    free(deep);
    free(outside);
    free(top);
    free(plugins);
    it_pass();
}

/* A TCP socket bound to a free port on 127.0.0.1, listening or not; *port gets the port. */
static int loopback_socket(bool listening, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    if (listening)
        assert_int_equal(listen(fd, 16), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/*
 * net.probe against three listeners the test opens on 127.0.0.1 and a port it
 * holds without listening (refused): a partial success whose one error is
 * that port, with a result per target; the closed port alone fails the task.
 */
static void test_net_probe(void **state)
{
    it_need_redis();
    it_host_start(
        &(th_host_opts){.id = "net", .workers = PAR_WORKERS, .plugins = "{ name = \"net\"; }"});
    int fds[4], ports[4];
    for (int i = 0; i < 4; i++)
        fds[i] = loopback_socket(i != 2, &ports[i]); /* target 2 is closed */
    char *args = NULL;
    assert_true(asprintf(&args,
                         "{\"targets\": [\"127.0.0.1:%d\", \"127.0.0.1:%d\", \"127.0.0.1:%d\", "
                         "\"127.0.0.1:%d\"], \"timeout_ms\": 5000}",
                         ports[0], ports[1], ports[2], ports[3]) > 0);
    char *id = it_submit("net.probe", args, NULL);
    assert_true(TH_WAIT_UNTIL(60, th_task_terminal(fx.c, IT_PREFIX, id)));
    it_assert_one_terminal(id, "bgtask_partial_success");
    cJSON *evs = it_events(id);
    const cJSON *last;
    assert_int_equal(terminal_events(evs, &last), 1);
    const cJSON *errs = cJSON_GetObjectItem(it_ev_data(last), "errors");
    assert_int_equal(cJSON_GetArraySize(errs), 1);
    char want[64];
    snprintf(want, sizeof want, "subtask 2: 127.0.0.1:%d: ", ports[2]);
    const char *e = cJSON_GetArrayItem(errs, 0)->valuestring;
    if (strncmp(e, want, strlen(want)) != 0 || !strstr(e, "refused"))
        fail_msg("error is '%s', want '%s...refused'", e, want);
    cJSON_Delete(evs);

    cJSON *res = it_field_json(id, "result");
    assert_int_equal(cJSON_GetObjectItem(res, "up")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(res, "down")->valueint, 1);
    const cJSON *results = cJSON_GetObjectItem(res, "results");
    assert_int_equal(cJSON_GetArraySize(results), 4);
    for (int i = 0; i < 4; i++) {
        const cJSON *r = cJSON_GetArrayItem(results, i);
        if (i == 2) {
            assert_true(cJSON_IsNull(r));
            continue;
        }
        char target[32];
        snprintf(target, sizeof target, "127.0.0.1:%d", ports[i]);
        assert_string_equal(cJSON_GetObjectItem(r, "target")->valuestring, target);
        assert_true(cJSON_IsTrue(cJSON_GetObjectItem(r, "ok")));
        assert_true(cJSON_GetObjectItem(r, "latency_ms")->valuedouble >= 0);
        assert_string_equal(cJSON_GetObjectItem(r, "address")->valuestring, "127.0.0.1");
    }
    cJSON_Delete(res);
    free(id);
    free(args);

    assert_true(
        asprintf(&args, "{\"targets\": [\"127.0.0.1:%d\"], \"timeout_ms\": 5000}", ports[2]) > 0);
    id = it_submit("net.probe", args, NULL);
    assert_true(it_wait_state(id, "FAILURE", 60));
    it_assert_one_terminal(id, "bgtask_failed");
    char *err = it_field(id, "error");
    assert_non_null(strstr(err, "refused"));
    free(err);
    for (int i = 0; i < 4; i++)
        close(fds[i]);
    free(id);
    free(args);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_thousand_subtasks),       IT_TEST(test_partial_failure_then_retry),
        IT_TEST(test_retry_then_done),         IT_TEST(test_fail_fast),
        IT_TEST(test_on_failure_override),     IT_TEST(test_parallelism_override),
        IT_TEST(test_watch_subtasks),          IT_TEST(test_kill_host_midway),
        IT_TEST(test_redis_paused_past_lease), IT_TEST(test_cancel_running),
        IT_TEST(test_explicit_subtasks),       IT_TEST(test_subtasks_three_ways),
        IT_TEST(test_subtask_limit),           IT_TEST(test_subtask_args_as_given),
        IT_TEST(test_files_cleanup),           IT_TEST(test_net_probe),
    };
    return cmocka_run_group_tests(tests, group_setup, it_group_teardown);
}

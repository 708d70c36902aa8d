/*
 * test_parallel.c - the bookkeeping of one parallel task (host/parallel.c),
 * without Redis or threads: what starts within parallelism, persisted
 * subtasks that never run again, retries that wait for their time, fail_fast,
 * cancel, timeout, shutdown and a lost lease, progress, and each verdict
 * with its message, results and errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "parallel.h"

static const par_ctx GO = {.stop = PAR_GO, .now = 100};

/* A report for run `attempt` of a subtask. */
static par_report report(bgt_status status, uint32_t attempt, const char *error)
{
    return (par_report){.status = status,
                        .attempt = attempt,
                        .error = error,
                        .max_attempts = 3,
                        .backoff_s = 5,
                        .timeout_s = 2};
}

/* End subtask i and check what is to be written. */
static void end(par *p, int i, const par_ctx *c, par_report r, const char *state,
                const char *message)
{
    par_outcome o = par_end(p, i, c, &r);
    if (!state)
        assert_null(o.state);
    else
        assert_string_equal(o.state, state);
    if (!message)
        assert_null(o.message);
    else
        assert_string_equal(o.message, message);
    free(o.message);
}

/* Load n fresh subtasks with args {"i": k}. */
static par *fresh(int n, int limit, bool fail_fast)
{
    par *p = par_new(n, limit, fail_fast);
    for (int i = 0; i < n; i++) {
        char *args = NULL;
        assert_true(asprintf(&args, "{\"i\":%d}", i) > 0);
        par_load(p, i, "PENDING", 0, args, NULL, NULL);
    }
    return p;
}

static void test_parallelism(void **state)
{
    par *p = fresh(5, 2, false);
    assert_int_equal(par_next(p, &GO), 0);
    assert_int_equal(par_next(p, &GO), 1);
    assert_int_equal(par_next(p, &GO), -1); /* two run: the limit */
    assert_int_equal(p->inflight, 2);
    end(p, 1, &GO, report(BGT_OK, 1, NULL), "SUCCESS", NULL);
    assert_int_equal(par_next(p, &GO), 2);
    assert_int_equal(par_next(p, &GO), -1);
    assert_false(par_take_conclusion(p, &GO)); /* two run, two wait */
    end(p, 0, &GO, report(BGT_OK, 1, NULL), "SUCCESS", NULL);
    end(p, 2, &GO, report(BGT_OK, 1, NULL), "SUCCESS", NULL);
    assert_int_equal(par_next(p, &GO), 3);
    assert_int_equal(par_next(p, &GO), 4);
    end(p, 3, &GO, report(BGT_OK, 1, NULL), "SUCCESS", NULL);
    assert_false(par_take_conclusion(p, &GO));
    end(p, 4, &GO, report(BGT_OK, 1, NULL), "SUCCESS", NULL);
    assert_true(par_take_conclusion(p, &GO));
    assert_false(par_take_conclusion(p, &GO)); /* once */
    par_verdict v = par_verdict_of(p, &GO, "h1", 0);
    assert_int_equal(v.kind, PAR_VERDICT_SUCCEEDED);
    assert_null(v.message);
    char *msg = par_success_message(p);
    assert_string_equal(msg, "all 5 subtasks succeeded");
    free(msg);
    par_free(p);
}

/* Subtasks persisted as finished never run again; the others do, with their run count. */
static void test_resume(void **state)
{
    par *p = par_new(4, 8, false);
    par_load(p, 0, "SUCCESS", 1, strdup("{}"), strdup("{\"n\":1}"), NULL);
    par_load(p, 1, "PENDING", 2, strdup("{}"), NULL, NULL);
    par_load(p, 2, "FAILURE", 3, strdup("{}"), NULL, strdup("boom"));
    par_load(p, 3, "CANCELLED", 1, strdup("{}"), NULL, NULL);
    assert_int_equal(par_finished_count(p), 2);
    double cur, total;
    par_progress(p, &cur, &total);
    assert_true(cur == 2 && total == 4);
    assert_int_equal(par_next(p, &GO), 1);
    assert_int_equal(p->subs[1].attempt, 2);
    assert_int_equal(par_next(p, &GO), 3);
    assert_int_equal(par_next(p, &GO), -1);
    end(p, 1, &GO, report(BGT_OK, 3, NULL), "SUCCESS", NULL);
    end(p, 3, &GO, report(BGT_OK, 2, NULL), "SUCCESS", NULL);
    assert_true(par_take_conclusion(p, &GO));
    par_verdict v = par_verdict_of(p, &GO, "h1", 0);
    assert_int_equal(v.kind, PAR_VERDICT_SUCCEEDED);
    char *msg = par_success_message(p);
    assert_string_equal(msg, "3 of 4 subtasks succeeded, 1 failed");
    free(msg);
    size_t n;
    char **errors = par_errors(p, &n);
    assert_int_equal(n, 1);
    assert_string_equal(errors[0], "subtask 2: boom");
    free(errors[0]);
    free(errors);
    cJSON *results = par_results(p);
    char *text = cJSON_PrintUnformatted(results);
    assert_string_equal(text, "[{\"n\":1},null,null,null]");
    free(text);
    cJSON_Delete(results);
    cJSON *counts = par_counts(p);
    text = cJSON_PrintUnformatted(counts);
    assert_string_equal(text, "{\"succeeded\":3,\"failed\":1}");
    free(text);
    cJSON_Delete(counts);
    par_free(p);
}

/* A retry waits for its time, comes before new subtasks then, and counts its runs. */
static void test_retry(void **state)
{
    par *p = fresh(3, 1, false);
    par_ctx c = GO;
    assert_int_equal(par_next(p, &c), 0);
    end(p, 0, &c, report(BGT_RETRY, 1, "flaky"), "RETRY", "attempt 1 failed: flaky");
    assert_int_equal(p->subs[0].state, PAR_WAITING);
    assert_true(p->subs[0].retry_at == 105);
    assert_int_equal(par_next(p, &c), 1); /* not due: the next one starts */
    assert_false(par_take_conclusion(p, &c));
    end(p, 1, &c, report(BGT_OK, 1, NULL), "SUCCESS", NULL);
    c.now = 104.9;
    assert_int_equal(par_next(p, &c), 2);
    end(p, 2, &c, report(BGT_OK, 1, NULL), "SUCCESS", NULL);
    assert_int_equal(par_next(p, &c), -1);
    assert_false(par_take_conclusion(p, &c)); /* one still waits */
    c.now = 105;
    assert_int_equal(par_next(p, &c), 0);
    end(p, 0, &c, report(BGT_RETRY, 2, NULL), "RETRY", "attempt 2 failed: retry");
    c.now = 200;
    assert_int_equal(par_next(p, &c), 0);
    end(p, 0, &c, report(BGT_RETRY, 3, "flaky"), "FAILURE", "gave up after 3 attempts: flaky");
    assert_true(par_take_conclusion(p, &c));
    par_verdict v = par_verdict_of(p, &c, "h1", 0);
    assert_int_equal(v.kind, PAR_VERDICT_SUCCEEDED);
    char *msg = par_success_message(p);
    assert_string_equal(msg, "2 of 3 subtasks succeeded, 1 failed");
    free(msg);
    par_free(p);
}

static void test_fail_fast(void **state)
{
    par *p = fresh(6, 3, true);
    for (int i = 0; i < 3; i++)
        assert_int_equal(par_next(p, &GO), i);
    assert_false(par_halted(p));
    end(p, 1, &GO, report(BGT_FAILED, 1, "boom"), "FAILURE", "boom");
    assert_true(par_halted(p));
    assert_int_equal(par_next(p, &GO), -1); /* halted: nothing more starts */
    /* The siblings see bgt_cancelled() and stop. */
    end(p, 0, &GO, report(BGT_CANCELLED, 1, NULL), "CANCELLED", "Cancelled");
    /* A retry asked for after the halt is a cancel too. */
    end(p, 2, &GO, report(BGT_RETRY, 1, NULL), "CANCELLED", "Cancelled");
    assert_true(par_take_conclusion(p, &GO));
    par_verdict v = par_verdict_of(p, &GO, "h1", 0);
    assert_int_equal(v.kind, PAR_VERDICT_FAILED);
    assert_string_equal(v.message,
                        "subtask 1 failed: boom; the others were stopped (on_failure = fail_fast)");
    free(v.message);
    par_free(p);
}

static void test_all_failed(void **state)
{
    par *p = fresh(3, 3, false);
    for (int i = 0; i < 3; i++)
        assert_int_equal(par_next(p, &GO), i);
    end(p, 2, &GO, report(BGT_FAILED, 1, "third"), "FAILURE", "third");
    end(p, 0, &GO, report(BGT_FAILED, 1, NULL), "FAILURE", "the handler failed");
    end(p, 1, &GO, report((bgt_status)42, 1, NULL), "FAILURE",
        "the handler returned an unknown status 42");
    assert_true(par_take_conclusion(p, &GO));
    par_verdict v = par_verdict_of(p, &GO, "h1", 0);
    assert_int_equal(v.kind, PAR_VERDICT_FAILED);
    assert_string_equal(v.message, "all 3 subtasks failed (first: the handler failed)");
    free(v.message);
    par_free(p);
}

static void test_cancel(void **state)
{
    par *p = fresh(4, 2, false);
    assert_int_equal(par_next(p, &GO), 0);
    assert_int_equal(par_next(p, &GO), 1);
    end(p, 0, &GO, report(BGT_OK, 1, NULL), "SUCCESS", NULL);
    par_ctx c = {.stop = PAR_STOP_CANCEL, .now = 100};
    assert_int_equal(par_next(p, &c), -1);
    assert_false(par_take_conclusion(p, &c)); /* subtask 1 still runs */
    end(p, 1, &c, report(BGT_CANCELLED, 1, NULL), "CANCELLED", "Cancelled");
    assert_true(par_take_conclusion(p, &c));
    par_verdict v = par_verdict_of(p, &c, "h1", 0);
    assert_int_equal(v.kind, PAR_VERDICT_CANCELLED);
    assert_string_equal(v.message, "Cancelled (1 of 4 subtasks had finished)");
    free(v.message);
    par_free(p);
}

static void test_timeout(void **state)
{
    par *p = fresh(2, 2, false);
    assert_int_equal(par_next(p, &GO), 0);
    par_ctx c = {.stop = PAR_STOP_TIMEOUT, .now = 100};
    end(p, 0, &c, report(BGT_CANCELLED, 1, NULL), "FAILURE", "timed out after 2s");
    assert_true(par_take_conclusion(p, &c));
    par_verdict v = par_verdict_of(p, &c, "h1", 2);
    assert_int_equal(v.kind, PAR_VERDICT_FAILED);
    assert_string_equal(v.message, "timed out after 2s");
    free(v.message);
    par_free(p);
}

/* At shutdown, what ran is written, what was stopped runs again elsewhere: released. */
static void test_shutdown(void **state)
{
    par *p = fresh(5, 3, false);
    for (int i = 0; i < 3; i++)
        assert_int_equal(par_next(p, &GO), i);
    par_ctx drain = {.stop = PAR_GO, .draining = true, .now = 100};
    assert_int_equal(par_next(p, &drain), -1);
    end(p, 0, &drain, report(BGT_OK, 1, NULL), "SUCCESS", NULL);
    /* Stopped by the grace running out, or seeing the drain: pending again, no write. */
    end(p, 1, &drain, report(BGT_CANCELLED, 1, NULL), NULL, NULL);
    par_ctx grace = {.stop = PAR_STOP_SHUTDOWN, .draining = true, .now = 100};
    end(p, 2, &grace, report(BGT_CANCELLED, 1, NULL), NULL, NULL);
    assert_int_equal(p->subs[1].state, PAR_PENDING);
    assert_int_equal(p->subs[2].state, PAR_PENDING);
    assert_true(par_take_conclusion(p, &grace));
    par_verdict v = par_verdict_of(p, &grace, "h1", 0);
    assert_int_equal(v.kind, PAR_VERDICT_RELEASED);
    assert_string_equal(
        v.message, "released by host h1 at shutdown with 4 of 5 subtasks left; attempt refunded");
    free(v.message);
    par_free(p);
}

/* A queued subtask that never ran goes back to pending. */
static void test_unstart(void **state)
{
    par *p = fresh(2, 2, false);
    assert_int_equal(par_next(p, &GO), 0);
    par_unstart(p, 0);
    assert_int_equal(p->subs[0].state, PAR_PENDING);
    assert_int_equal(p->inflight, 0);
    par_free(p);
}

/* With the lease lost nothing is written: the subtask is pending for the next owner. */
static void test_lost(void **state)
{
    par *p = fresh(2, 2, false);
    assert_int_equal(par_next(p, &GO), 0);
    par_ctx lost = {.stop = PAR_STOP_LOST, .now = 100};
    end(p, 0, &lost, report(BGT_OK, 1, NULL), NULL, NULL);
    assert_int_equal(p->subs[0].state, PAR_PENDING);
    assert_int_equal(par_next(p, &lost), -1);
    assert_true(par_take_conclusion(p, &lost));
    par_verdict v = par_verdict_of(p, &lost, "h1", 0);
    assert_int_equal(v.kind, PAR_VERDICT_LOST);
    assert_null(v.message);
    par_free(p);
}

/* The task's progress: finished subtasks plus the running ones' own shares. */
static void test_progress(void **state)
{
    par *p = fresh(4, 4, false);
    for (int i = 0; i < 3; i++)
        assert_int_equal(par_next(p, &GO), i);
    par_sub_progress(p, 0, 5, 10);
    par_sub_progress(p, 1, 30, 10); /* clamped to 1 */
    par_sub_progress(p, 3, 5, 10);  /* not running: ignored */
    double cur, total;
    par_progress(p, &cur, &total);
    assert_true(cur == 1.5 && total == 4);
    end(p, 1, &GO, report(BGT_OK, 1, NULL), "SUCCESS", NULL);
    par_progress(p, &cur, &total);
    assert_true(cur == 1.5);
    char msg[64];
    par_progress_message(p, msg, sizeof msg);
    assert_string_equal(msg, "1 of 4 subtasks done");
    par_sub_progress(p, 2, 0, 0); /* no total: no share */
    par_progress(p, &cur, &total);
    assert_true(cur == 1.5);
    par_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parallelism), cmocka_unit_test(test_resume),
        cmocka_unit_test(test_retry),       cmocka_unit_test(test_fail_fast),
        cmocka_unit_test(test_all_failed),  cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_timeout),     cmocka_unit_test(test_shutdown),
        cmocka_unit_test(test_unstart),     cmocka_unit_test(test_lost),
        cmocka_unit_test(test_progress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

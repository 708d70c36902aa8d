/*
 * test_threads.c - plugin code runs only on worker threads, never under a
 * host lock. The threadcheck test plugin records the name of the thread of
 * every callback (run, split, merge, a hook's before, progress and after) and
 * calls back into the host from inside its hook (a registration, refused
 * outside init, and a submission). Every path that ends an attempt is taken:
 * success, failure, retry, a parallel task with a merge and a failed
 * subtask, an empty split, a cancel while a subtask waits for its retry (the
 * manager thread finds it concluded), and a claim that fails at once (a
 * corrupted record). No callback may have run on the writer,
 * the dispatcher, the manager or the control thread; the host aborts if one
 * runs with its lock held (mgr__assert_unlocked), which fails the test too.
 */
#include "../harness/itest.h"

static char *record_path;

static th_host *threadcheck_host(int workers, double backoff_s)
{
    char *dir = th_tmpdir("threads");
    free(record_path);
    assert_true(asprintf(&record_path, "%s/record.txt", dir) > 0);
    char *plugin = th_plugin_path("threadcheck", true), *plugins = NULL;
    assert_true(
        asprintf(&plugins,
                 "{ name = \"threadcheck\"; file = \"%s\"; config = { record = \"%s\"; }; }",
                 plugin, record_path) > 0);
    th_host_opts o = {.id = "A",
                      .workers = workers,
                      .plugins = plugins,
                      .backoff_base_s = backoff_s,
                      .backoff_max_s = backoff_s};
    th_host *h = it_host_start(&o);
    free(plugins);
    free(plugin);
    free(dir);
    return h;
}

/* The record so far (malloc'd; "" before the first line). */
static char *record_text(void)
{
    FILE *f = fopen(record_path, "r");
    if (!f)
        return strdup("");
    fclose(f);
    return it_read_file(record_path);
}

/* How many lines of the record start with prefix. */
static int count_lines(const char *text, const char *prefix)
{
    int n = 0;
    size_t len = strlen(prefix);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        n += strncmp(l, prefix, len) == 0;
    return n;
}

/* The record has no WRONG line, and every callback of `want` ran at least once. */
static char *check_record(const char *const *want)
{
    char *text = record_text();
    if (strstr(text, "WRONG"))
        fail_msg("plugin code ran off the worker threads:\n%s", text);
    for (int i = 0; want[i]; i++)
        if (count_lines(text, want[i]) == 0)
            fail_msg("no '%s' in the record:\n%s", want[i], text);
    return text;
}

static void test_callbacks_on_workers(void **state)
{
    it_need_redis();
    threadcheck_host(3, 0.05);
    char *ok = it_submit("threadcheck.single", "{}", NULL);
    char *failed = it_submit("threadcheck.single", "{\"fail\": true}", NULL);
    char *retried = it_submit("threadcheck.single", "{\"retry\": true}", NULL);
    char *par = it_submit("threadcheck.parallel", "{\"n\": 6, \"fail\": [2]}", NULL);
    char *empty = it_submit("threadcheck.parallel", "{\"n\": 0}", NULL);
    /* A record corrupted while it waits: its claim fails at once. */
    char *bad = it_submit("threadcheck.single", "{}", "--delay", "3600", NULL);
    th_task_set(fx.c, IT_PREFIX, bad, "args", "[\"not an object\"]");
    th_task_due(fx.c, IT_PREFIX, "threadcheck.single", bad);

    assert_true(it_wait_state(ok, "SUCCESS", 30));
    assert_true(it_wait_state(failed, "FAILURE", 30));
    assert_true(it_wait_state(retried, "SUCCESS", 30));
    assert_true(it_wait_state(par, "SUCCESS", 30));
    assert_true(it_wait_state(empty, "SUCCESS", 30));
    assert_true(it_wait_state(bad, "FAILURE", 30));
    it_assert_one_terminal(par, "bgtask_partial_success");
    it_assert_field(par, "result", "{\"sum\":13}");

    /* The followups the hook submitted ran too: one per after-hook of a single task. */
    char *text = record_text();
    int submitted = count_lines(text, "SUBMIT 0");
    free(text);
    assert_true(submitted >= 4);
    assert_true(TH_WAIT_UNTIL(30, ({
                                  char *out = NULL;
                                  int rc = th_ctl(&fx.r, &out, NULL, "--json", "list", "--handler",
                                                  "threadcheck.followup", "--state", "SUCCESS",
                                                  "--limit", "100", NULL);
                                  cJSON *list = rc == 0 ? cJSON_Parse(out) : NULL;
                                  int n = cJSON_GetArraySize(cJSON_GetObjectItem(list, "tasks"));
                                  cJSON_Delete(list);
                                  free(out);
                                  n == submitted;
                              })));

    static const char *const want[] = {"before ", "progress ", "after ",      "run ",
                                       "split ",  "merge ",    "REGISTER -1", NULL};
    text = check_record(want);
    assert_int_equal(count_lines(text, "SUBMIT "), submitted);
    free(text);
    free(ok);
    free(failed);
    free(retried);
    free(par);
    free(empty);
    free(bad);
    it_pass();
}

/*
 * A cancel while a parallel task's subtask waits for its retry: nothing of
 * the task runs, so the manager thread finds it done and queues its
 * conclusion; the after-hook of that conclusion runs on a worker as well.
 */
static void test_conclusion_on_workers(void **state)
{
    it_need_redis();
    th_host *h = threadcheck_host(2, 60);
    char *par = it_submit("threadcheck.parallel", "{\"n\": 2, \"retry\": [1]}", NULL);
    /* Both subtasks ran (their after-hooks say so); subtask 1 now waits out a long backoff. */
    assert_true(TH_WAIT_UNTIL(30, ({
                                  char *t = record_text();
                                  bool seen = count_lines(t, "after ") >= 2;
                                  free(t);
                                  seen;
                              })));
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "cancel", par, NULL), 0);
    assert_true(it_wait_state(par, "CANCELLED", 30));
    it_assert_one_terminal(par, "bgtask_cancelled");

    static const char *const want[] = {"before ", "after ", "run ", "split ", NULL};
    free(check_record(want));
    assert_int_equal(th_host_stop(h, 15), 0);
    free(check_record(want));
    free(par);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_callbacks_on_workers),
        IT_TEST(test_conclusion_on_workers),
    };
    int rc = cmocka_run_group_tests(tests, it_group_setup, it_group_teardown);
    free(record_path);
    return rc;
}

/*
 * test_bad_input.c - bad input gets a clear error and changes nothing:
 * submissions bgtaskctl refuses (invalid JSON, args over the configured
 * limit, illegal handler names), task records corrupted or deleted behind a
 * running host's back (the task fails or is dropped, the host lives on), and
 * bgtaskd configs it refuses before it touches Redis (malformed settings, a
 * required plugin that is missing or not a plugin).
 */
#include <sys/stat.h>

#include "../harness/itest.h"

/* ---- submissions ---- */

/*
 * bgtaskctl with these arguments (NULL-terminated) exits 2, says something on
 * stderr (want_in_err, if not NULL), prints nothing and writes nothing.
 */
static void refused_v(const char *want_in_err, const char *const *args)
{
    long long keys = it_dbsize();
    char *argv[32];
    int n = it_ctl_argv(argv);
    for (int i = 0; args[i]; i++) {
        assert_true(n < 31);
        argv[n++] = (char *)args[i];
    }
    argv[n] = NULL;
    char *out = NULL, *err = NULL;
    int rc = th_run(30, argv, &out, &err);
    if (rc != 2 || !*err || (want_in_err && !strstr(err, want_in_err)))
        fail_msg("bgtaskctl %s %s %s: exit %d, stderr '%s' (want exit 2 and '%s')", args[0],
                 args[1] ? args[1] : "", args[1] && args[2] ? args[2] : "", rc, err,
                 want_in_err ? want_in_err : "a message");
    assert_string_equal(out, "");
    assert_int_equal(it_dbsize(), keys);
    free(out);
    free(err);
    free(argv[0]);
}

#define REFUSED(want, ...) refused_v((want), (const char *const[]){__VA_ARGS__, NULL})

static void test_submit_refused(void **state)
{
    it_need_redis();
    /* With a host running, so that its keys are there and must not change in number. */
    it_host_start(NULL);
    long long keys = it_dbsize();
    assert_true(keys > 0);

    /* Invalid JSON, and JSON that is not an object. */
    REFUSED("invalid JSON", "submit", "demo.echo", "--args", "{\"a\": }");
    REFUSED("invalid JSON", "submit", "demo.echo", "--args", "{\"a\": 1");
    REFUSED("invalid JSON", "submit", "demo.echo", "--args", "not json");
    REFUSED("invalid JSON", "submit", "demo.echo", "--args", "");
    REFUSED("object", "submit", "demo.echo", "--args", "\"a string\"");

    /* JSON that could not be read back whole. */
    REFUSED("invalid UTF-8 at byte 9", "submit", "demo.echo", "--args", "{\"s\":\"caf\xe9\"}");
    REFUSED("\\u0000", "submit", "demo.echo", "--args", "{\"s\":\"x\\u0000y\"}");
    char deep[200];
    int n = snprintf(deep, sizeof deep, "{\"a\":");
    for (int i = 0; i < 65; i++)
        deep[n++] = '[';
    for (int i = 0; i < 65; i++)
        deep[n++] = ']';
    snprintf(deep + n, sizeof deep - (size_t)n, "}");
    REFUSED("nested deeper than 64", "submit", "demo.echo", "--args", deep);

    /* Args over the limit set in the host's own config, which bgtaskctl -c reads. */
    char *text = it_read_file(fx.hosts[0].conf);
    char *tasks = strstr(text, "tasks: {\n");
    assert_non_null(tasks);
    char *limited = NULL;
    assert_true(asprintf(&limited, "%.*stasks: {\n    max_args_bytes = 100;\n%s",
                         (int)(tasks - text), text, tasks + strlen("tasks: {\n")) > 0);
    it_write_file(fx.hosts[0].conf, limited);
    char big[256];
    snprintf(big, sizeof big, "{\"pad\": \"%0120d\"}", 7);
    REFUSED("limit", "-c", fx.hosts[0].conf, "submit", "demo.echo", "--args", big);
    free(limited);
    free(text);

    /* Handler names outside [a-z0-9][a-z0-9._-]{0,62}. */
    char long_name[80];
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    static const char *const bad[] = {"Demo.echo", "demo echo",  ".demo",     "-demo",
                                      "_demo",     "demo/echo",  "demo:echo", "d\xc3\xa9mo",
                                      "",          "demo\necho", "demo*",     NULL};
    for (int i = 0; bad[i]; i++)
        REFUSED(NULL, "submit", bad[i]);
    REFUSED(NULL, "submit", long_name);
    assert_int_equal(it_dbsize(), keys);
    assert_int_equal(th_event_total(fx.c, IT_PREFIX), 0);

    /* The boundary passes: a 63-character name. */
    long_name[63] = '\0';
    char *id = it_submit(long_name, NULL, NULL);
    it_assert_field(id, "handler", long_name);
    free(id);
    it_pass();
}

/* The size limit on args: one byte over is refused, at the limit accepted. */
static void test_args_limit(void **state)
{
    it_need_redis();
    char *dir = th_tmpdir("limit");
    char *conf = NULL;
    assert_true(asprintf(&conf, "%s/limit.conf", dir) > 0);
    it_write_file(conf, "tasks: { max_args_bytes = 100; };\n");
    /* {"pad":"<n zeros>"} is n + 10 bytes, already compact as the CLI sends it. */
    char at[128], over[128];
    snprintf(at, sizeof at, "{\"pad\":\"%090d\"}", 0);
    snprintf(over, sizeof over, "{\"pad\":\"%091d\"}", 0);
    assert_int_equal(strlen(at), 100);
    REFUSED("limit", "-c", conf, "submit", "demo.echo", "--args", over);
    /* From a file too. */
    char *file = NULL;
    assert_true(asprintf(&file, "%s/over.json", dir) > 0);
    it_write_file(file, over);
    REFUSED("limit", "-c", conf, "submit", "demo.echo", "--args-file", file);
    /* Subtasks count against the same limit: they travel as the task's args. */
    char *subs = NULL;
    assert_true(asprintf(&subs, "%s/subs.json", dir) > 0);
    it_write_file(subs, "[{\"pad\":\"0000000000000000000000000000000000000000\"},"
                        " {\"pad\":\"0000000000000000000000000000000000000000\"}]");
    REFUSED("limit", "-c", conf, "submit", "demo.echo", "--subtasks-file", subs);
    free(subs);
    assert_int_equal(it_dbsize(), 0);
    char *out = NULL;
    assert_int_equal(
        th_ctl(&fx.r, &out, NULL, "-c", conf, "submit", "demo.echo", "--args", at, NULL), 0);
    assert_int_equal(strlen(out), 37);
    out[36] = '\0';
    it_assert_field(out, "args", at);
    free(out);
    free(file);
    free(conf);
    free(dir);
    it_pass();
}

/* ---- records corrupted or deleted in Redis ---- */

/*
 * Write a task record by hand: the fields a submit writes, then the overrides
 * (NULL value: leave the field out), queue it as due now and wake the hosts.
 */
static void plant(const char *id, const char *handler, const char *const *overrides)
{
    static const char *const base[][2] = {{"id", NULL},
                                          {"handler", NULL},
                                          {"kind", "single"},
                                          {"state", "ONGOING"},
                                          {"args", "{}"},
                                          {"attempt", "0"},
                                          {"released", "0"},
                                          {"max_attempts", "3"},
                                          {"owner", ""},
                                          {"created_ms", "1"},
                                          {"started_ms", "0"},
                                          {"updated_ms", "1"},
                                          {"finished_ms", "0"},
                                          {"progress_current", "0"},
                                          {"progress_total", "0"},
                                          {"message", "Started"},
                                          {"result", ""},
                                          {"error", ""},
                                          {"cancel_requested", "0"},
                                          {"subtasks", "0"},
                                          {"sub_success", "0"},
                                          {"sub_failure", "0"}};
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) {
        const char *name = base[i][0];
        const char *v = i == 0 ? id : i == 1 ? handler : base[i][1];
        bool skip = false;
        for (int k = 0; overrides && overrides[k]; k += 2) {
            if (strcmp(overrides[k], name) == 0) {
                v = overrides[k + 1];
                skip = v == NULL;
            }
        }
        if (!skip)
            th_task_set(fx.c, IT_PREFIX, id, name, v);
    }
    th_task_due(fx.c, IT_PREFIX, handler, id);
}

/* The task failed with a message saying its record is corrupted, and left its queue. */
static void assert_failed_corrupt(const char *id, const char *handler, const char *detail)
{
    assert_true(it_wait_state(id, "FAILURE", 10));
    char *err = it_field(id, "error");
    assert_non_null(err);
    if (!strstr(err, "corrupted task record") || (detail && !strstr(err, detail)))
        fail_msg("task %s: error '%s' does not say the record is corrupted (%s)", id, err,
                 detail ? detail : "");
    free(err);
    it_assert_one_terminal(id, "bgtask_failed");
    assert_true(th_queue_score(fx.c, IT_PREFIX, handler, id) < 0);
}

static void test_corrupted_records(void **state)
{
    it_need_redis();
    th_host *h = it_host_start(NULL);

    /* args that are not JSON. */
    const char *a = "5b0a4c8e-1f8e-4a55-9d3c-2b8f3c1d9e01";
    plant(a, "demo.echo", (const char *const[]){"args", "not json", NULL});
    assert_failed_corrupt(a, "demo.echo", "args");

    /* JSON args that are not an object. */
    const char *b = "5b0a4c8e-1f8e-4a55-9d3c-2b8f3c1d9e02";
    plant(b, "demo.echo", (const char *const[]){"args", "[1, 2]", NULL});
    assert_failed_corrupt(b, "demo.echo", "args");

    /* An attempt counter that is not a number (the fencing token itself). */
    const char *c = "5b0a4c8e-1f8e-4a55-9d3c-2b8f3c1d9e03";
    plant(c, "demo.echo", (const char *const[]){"attempt", "abc", NULL});
    assert_failed_corrupt(c, "demo.echo", "attempt");

    /* Counters that Lua reads as numbers but are no counts: each would be claimed (and
     * run) again and again with a fencing token the host cannot write back. */
    static const char *const bad_counts[][2] = {{"attempt", "nan"},      {"attempt", "-5"},
                                                {"attempt", "1.5"},      {"released", "nan"},
                                                {"max_attempts", "nan"}, {"released", "-1"}};
    for (size_t i = 0; i < sizeof bad_counts / sizeof bad_counts[0]; i++) {
        char cid[37];
        snprintf(cid, sizeof cid, "5b0a4c8e-1f8e-4a55-9d3c-2b8f3c1d9f%02zu", i);
        plant(cid, "demo.echo", (const char *const[]){bad_counts[i][0], bad_counts[i][1], NULL});
        assert_failed_corrupt(cid, "demo.echo", bad_counts[i][0]);
        it_assert_field(cid, "result", "");
        /* The failure event is valid JSON with a numeric attempt (it_events parses it). */
        cJSON *evs = it_events(cid);
        assert_int_equal(cJSON_GetArraySize(evs), 1);
        assert_true(it_ev_number(cJSON_GetArrayItem(evs, 0), "attempt") >= 0);
        cJSON_Delete(evs);
    }

    /* A subtask count no host could have written (issue 8, item 8): the task fails, the
     * host lives (it must not try to allocate two billion subtasks), and a task claimed
     * along with it runs with its first attempt. */
    static const char *const bad_subtasks[] = {"2000000000", "-1", "1.5", "99999999999"};
    for (size_t i = 0; i < sizeof bad_subtasks / sizeof bad_subtasks[0]; i++) {
        char pid[37];
        snprintf(pid, sizeof pid, "5b0a4c8e-1f8e-4a55-9d3c-2b8f3c1d9a%02zu", i);
        plant(pid, "demo.parallel",
              (const char *const[]){"kind", "parallel", "subtasks", bad_subtasks[i], NULL});
        char *echo = it_submit("demo.echo", "{\"along\": true}", NULL);
        assert_failed_corrupt(pid, "demo.parallel", "subtasks");
        assert_true(it_wait_state(echo, "SUCCESS", 10));
        it_assert_field(echo, "attempt", "1");
        assert_true(it_host_alive(h));
        free(echo);
    }

    /* A record without its handler. (Other fields left out take their defaults.) */
    const char *d = "5b0a4c8e-1f8e-4a55-9d3c-2b8f3c1d9e04";
    plant(d, "demo.sleep", (const char *const[]){"handler", NULL, NULL});
    assert_failed_corrupt(d, "demo.sleep", "handler");

    /* A state that is no state: not ONGOING, so it is dropped from the queue untouched. */
    const char *e = "5b0a4c8e-1f8e-4a55-9d3c-2b8f3c1d9e05";
    plant(e, "demo.echo", (const char *const[]){"state", "WEIRD", NULL});
    assert_true(TH_WAIT_UNTIL(10, th_queue_score(fx.c, IT_PREFIX, "demo.echo", e) < 0));
    it_assert_field(e, "state", "WEIRD");
    it_assert_field(e, "attempt", "0");
    assert_int_equal(th_count_events(fx.c, IT_PREFIX, e, NULL), 0);

    /* The host lives on and runs a normal task. */
    assert_true(it_host_alive(h));
    char *ok = it_submit("demo.echo", "{\"after\": \"corruption\"}", NULL);
    assert_true(it_wait_state(ok, "SUCCESS", 10));
    it_assert_one_terminal(ok, "bgtask_done");
    assert_true(it_host_alive(h));
    assert_true(th_log_contains(h, "corrupted task record"));
    free(ok);
    it_pass();
}

/* A queued id whose record was deleted is dropped; one deleted while it runs is let go. */
static void test_deleted_records(void **state)
{
    it_need_redis();
    th_host *h = it_host_start(NULL);

    const char *gone = "0a6c7d2e-3b4f-4c5d-8e9f-0a1b2c3d4e5f";
    th_task_due(fx.c, IT_PREFIX, "demo.echo", gone);
    assert_true(TH_WAIT_UNTIL(10, th_queue_score(fx.c, IT_PREFIX, "demo.echo", gone) < 0));
    assert_false(th_task_exists(fx.c, IT_PREFIX, gone));
    assert_int_equal(th_count_events(fx.c, IT_PREFIX, gone, NULL), 0);

    /* Deleted while it runs: the host's next heartbeat finds it gone, the handler is told
     * to stop, and nothing brings the record back. */
    char *id = it_submit("demo.sleep", "{\"seconds\": 30, \"steps\": 300}", NULL);
    assert_true(TH_WAIT_UNTIL(10, it_field_ll(id, "progress_current") >= 1));
    th_task_delete(fx.c, IT_PREFIX, id);
    assert_true(TH_WAIT_UNTIL(10, th_log_contains(h, "cancelled during step")));
    assert_true(th_log_contains(h, "lost its lease"));
    /* Its queue entry goes once the lease it had runs out and a claim finds no record. */
    assert_true(TH_WAIT_UNTIL(10, th_queue_score(fx.c, IT_PREFIX, "demo.sleep", id) < 0));
    assert_false(th_task_exists(fx.c, IT_PREFIX, id));
    assert_int_equal(th_count_events(fx.c, IT_PREFIX, id, "bgtask_done"), 0);

    assert_true(it_host_alive(h));
    char *ok = it_submit("demo.echo", "{}", NULL);
    assert_true(it_wait_state(ok, "SUCCESS", 10));
    free(ok);
    free(id);
    it_pass();
}

/*
 * A task key that is not a hash at all (a string where the record should be):
 * queued, it is dropped and every other task still runs; overwritten while its
 * task runs, the host loses that attempt and goes on heartbeating and
 * writing. Neither may stall the claim, heartbeat or write scripts, which
 * serve every task of every host.
 */
static void test_record_wrong_type(void **state)
{
    it_need_redis();
    th_host *h = it_host_start(NULL);

    const char *bad = "7d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6";
    th_corrupt_record(fx.c, IT_PREFIX, bad, "not a hash");
    th_task_due(fx.c, IT_PREFIX, "demo.echo", bad);
    char *ok = it_submit("demo.echo", "{\"n\": 1}", NULL);
    assert_true(it_wait_state(ok, "SUCCESS", 10));
    assert_true(TH_WAIT_UNTIL(5, th_queue_score(fx.c, IT_PREFIX, "demo.echo", bad) < 0));
    free(ok);

    /* Overwritten while it runs. */
    char *id = it_submit("demo.sleep", "{\"seconds\": 30, \"steps\": 300}", NULL);
    assert_true(TH_WAIT_UNTIL(10, it_field_ll(id, "progress_current") >= 1));
    th_corrupt_record(fx.c, IT_PREFIX, id, "not a hash either");
    /* The next progress write or heartbeat finds the attempt lost; the handler is told
     * to stop. */
    assert_true(TH_WAIT_UNTIL(10, th_log_contains(h, "lost its lease")));
    assert_true(TH_WAIT_UNTIL(10, th_log_contains(h, "cancelled during step")));
    ok = it_submit("demo.echo", "{\"n\": 2}", NULL);
    assert_true(it_wait_state(ok, "SUCCESS", 10));
    free(ok);
    /* Heartbeats and writes kept going: the host's entry is renewed past the time the
     * stalled host would have been given up (its entry lives 2 s). */
    long long until = it_redis_ms() + 2500;
    assert_true(TH_WAIT_UNTIL(10, th_host_expiry(fx.c, IT_PREFIX, h->id) > (double)until));
    assert_false(th_log_contains(h, "failed: script"));
    assert_true(it_host_alive(h));
    free(id);
    it_pass();
}

/* ---- configs bgtaskd refuses ---- */

/*
 * Run bgtaskd [--check-config] -c path: it must exit non-zero, say each of
 * wants on stderr, leave Redis empty and never list a host.
 */
static void daemon_refuses(const char *path, bool check, const char *const *wants)
{
    char *bin = it_bin("bgtaskd");
    char *argv[] = {bin, check ? "--check-config" : "-c", check ? "-c" : (char *)path,
                    check ? (char *)path : NULL, NULL};
    char *out = NULL, *err = NULL;
    int rc = th_run(30, argv, &out, &err);
    if (rc <= 0)
        fail_msg("bgtaskd %s -c %s: exit %d, want non-zero; stderr:\n%s",
                 check ? "--check-config" : "", path, rc, err);
    if (strstr(err, "Sanitizer") || strstr(err, "runtime error:"))
        fail_msg("bgtaskd -c %s: sanitizer report:\n%s", path, err);
    for (int i = 0; wants && wants[i]; i++)
        if (!strstr(err, wants[i]))
            fail_msg("bgtaskd %s -c %s: stderr lacks '%s':\n%s", check ? "--check-config" : "",
                     path, wants[i], err);
    assert_int_equal(it_dbsize(), 0);
    free(out);
    free(err);
    free(bin);
}

/* A config that would point at the test's Redis if it got that far, then the bad part. */
static char *bad_conf(const char *dir, const char *name, const char *rest)
{
    char *path = NULL, *text = NULL;
    assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
    assert_true(asprintf(&text, "redis: { url = \"%s\"; };\n%s", fx.r.url, rest) > 0);
    it_write_file(path, text);
    free(text);
    return path;
}

static void test_bad_config(void **state)
{
    it_need_redis();
    char *dir = th_tmpdir("badconf");
    static const struct {
        const char *text;
        const char *line;   /* "file:line" suffix the message must have */
        const char *reason; /* and this */
    } cases[] = {
        {"host: {\n  workers = 0;\n};\n", ":3:", "host.workers"},
        {"host: {\n  workers = ;\n};\n", ":3:", "syntax error"},
        {"tasks: { lease = \"long\"; };\n", ":2:", "tasks.lease"},
        {"tasks: {\n  lease = 5.0;\n  heartbeat = 4.0;\n};\n", ":4:", "tasks.heartbeat"},
        {"\nhost: { wokers = 3; };\n", ":3:", "wokers"},
        {"bogus: { x = 1; };\n", ":2:", "bogus"},
        {"plugins: { load = ( { file = 3; } ); };\n", ":2:", "file"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu.conf", i);
        char *path = bad_conf(dir, name, cases[i].text);
        char *where = NULL;
        assert_true(asprintf(&where, "%s%s", name, cases[i].line) > 0);
        const char *wants[] = {where, cases[i].reason, NULL};
        daemon_refuses(path, true, wants);
        daemon_refuses(path, false, wants);
        free(where);
        free(path);
    }
    /* A file that is not there. */
    char *missing = NULL;
    assert_true(asprintf(&missing, "%s/nope.conf", dir) > 0);
    const char *wants[] = {"nope.conf", NULL};
    daemon_refuses(missing, true, wants);
    daemon_refuses(missing, false, wants);
    free(missing);
    assert_int_equal(th_host_count(fx.c, IT_PREFIX), 0);
    free(dir);
    it_pass();
}

static void test_missing_plugin(void **state)
{
    it_need_redis();
    char *dir = th_tmpdir("plugins");
    char *demo = th_plugin_path("demo", false);
    char *text = NULL, *path = NULL, *notso = NULL;

    /* By name, resolved in plugins.dir, with a working plugin beside it. */
    assert_true(
        asprintf(&text,
                 "plugins: {\n  dir = \"%s\";\n  required = true;\n"
                 "  load = ( { name = \"absent\"; }, { name = \"demo\"; file = \"%s\"; } );\n"
                 "};\n",
                 dir, demo) > 0);
    path = bad_conf(dir, "byname.conf", text);
    char *want = NULL;
    assert_true(asprintf(&want, "%s/absent.so", dir) > 0);
    const char *w1[] = {want, NULL};
    daemon_refuses(path, true, w1);
    daemon_refuses(path, false, w1);
    free(want);
    free(path);
    free(text);

    /* By file, and a file that is there but is no plugin. */
    assert_true(asprintf(&notso, "%s/notaplugin.so", dir) > 0);
    it_write_file(notso, "this is not an ELF file\n");
    assert_int_equal(chmod(notso, 0644), 0);
    assert_true(
        asprintf(&text, "plugins: { load = ( { name = \"x\"; file = \"%s\"; } ); };\n", notso) > 0);
    path = bad_conf(dir, "notelf.conf", text);
    const char *w2[] = {notso, NULL};
    daemon_refuses(path, true, w2);
    daemon_refuses(path, false, w2);
    free(path);
    free(text);

    /* With plugins.required = false the host runs without it (and says why). */
    assert_true(asprintf(&text,
                         "plugins: { required = false; load = ( { name = \"x\"; file = \"%s\"; }, "
                         "{ name = \"demo\"; file = \"%s\"; } ); };\n",
                         notso, demo) > 0);
    path = bad_conf(dir, "optional.conf", text);
    char *bin = it_bin("bgtaskd");
    char *argv[] = {bin, "--check-config", "-c", path, NULL};
    char *out = NULL, *err = NULL;
    assert_int_equal(th_run(30, argv, &out, &err), 0);
    assert_non_null(strstr(err, notso));
    assert_non_null(strstr(out, "ok"));
    assert_int_equal(it_dbsize(), 0);
    free(out);
    free(err);
    free(bin);
    free(path);
    free(text);
    free(notso);
    free(demo);
    free(dir);
    it_pass();
}

/* A bad Redis address, on the command line, in the environment or in the config, stops
 * bgtaskd with a message that names the source and never shows the password. */
static void test_bad_redis_address(void **state)
{
    it_need_redis();
    static const char *const urls[] = {
        "redis:/:hunter2@127.0.0.1:1", ":hunter2@127.0.0.1:1", "app:hunter2@h",
        "redis://u:hunter2@h:0", "redis+sentinel://:hunter2@h1,h2", "redis+cluster://:hunter2@h/1",
        NULL,
    };
    char *bin = it_bin("bgtaskd");
    char *dir = th_tmpdir("badurl");
    for (int i = 0; urls[i]; i++) {
        char *out = NULL, *err = NULL;
        char *argv[] = {bin, "--redis", (char *)urls[i], NULL};
        int rc = th_run(30, argv, &out, &err);
        if (rc != 1 || strstr(err, "hunter2") || !strstr(err, "--redis: "))
            fail_msg("bgtaskd --redis '%s': exit %d, stderr: %s", urls[i], rc, err);
        free(out);
        free(err);
        setenv("BGTASK_REDIS", urls[i], 1);
        char *argv2[] = {bin, NULL};
        rc = th_run(30, argv2, &out, &err);
        unsetenv("BGTASK_REDIS");
        if (rc != 1 || strstr(err, "hunter2") || !strstr(err, "$BGTASK_REDIS: "))
            fail_msg("BGTASK_REDIS='%s' bgtaskd: exit %d, stderr: %s", urls[i], rc, err);
        free(out);
        free(err);
        char *conf = NULL, *text = NULL;
        assert_true(asprintf(&conf, "%s/u%d.conf", dir, i) > 0);
        assert_true(asprintf(&text, "redis: { url = \"%s\"; };\n", urls[i]) > 0);
        it_write_file(conf, text);
        char *argv3[] = {bin, "-c", conf, NULL};
        rc = th_run(30, argv3, &out, &err);
        if (rc != 1 || strstr(err, "hunter2") || !strstr(err, "redis.url: "))
            fail_msg("bgtaskd -c with url '%s': exit %d, stderr: %s", urls[i], rc, err);
        free(out);
        free(err);
        free(text);
        free(conf);
    }
    assert_int_equal(it_dbsize(), 0);
    free(dir);
    free(bin);
    it_pass();
}

/*
 * Data written by another protocol version is refused, with a message naming both
 * versions, by the host (which exits 1 before it serves) and by the CLI (exit 2);
 * neither writes anything. Our own version is set by the first submission.
 */
static void test_protocol_mismatch(void **state)
{
    it_need_redis();
    assert_null(th_protocol_get(fx.c, IT_PREFIX));
    free(it_submit("demo.echo", NULL, NULL));
    char *v = th_protocol_get(fx.c, IT_PREFIX);
    assert_non_null(v);
    assert_string_equal(v, "2");
    free(v);

    /* A later version's data. */
    freeReplyObject(it_cmd("FLUSHALL"));
    th_protocol_set(fx.c, IT_PREFIX, "3");
    REFUSED("protocol version 3", "submit", "demo.echo");
    REFUSED("this build speaks version 2", "status", "00000000-0000-4000-8000-000000000001");
    char *dir = th_tmpdir("protocol");
    char *path = bad_conf(dir, "ok.conf", "");
    char *bin = it_bin("bgtaskd");
    char *argv[] = {bin, "-c", path, NULL};
    char *out = NULL, *err = NULL;
    assert_int_equal(th_run(30, argv, &out, &err), 1);
    if (!strstr(err, "protocol version 3") || !strstr(err, "this build speaks version 2"))
        fail_msg("bgtaskd: stderr lacks the protocol mismatch:\n%s", err);
    assert_int_equal(it_dbsize(), 1);
    free(out);
    free(err);

    /* Data the first release left (protocol 1 had no mark): refused, not migrated. */
    freeReplyObject(it_cmd("FLUSHALL"));
    th_protocol1_data(fx.c, IT_PREFIX);
    long long keys = it_dbsize();
    REFUSED("protocol version 1", "submit", "demo.echo");
    REFUSED("does not migrate", "list", NULL);
    assert_int_equal(th_run(30, argv, &out, &err), 1);
    if (!strstr(err, "protocol version 1") || !strstr(err, "does not migrate"))
        fail_msg("bgtaskd: stderr lacks the protocol mismatch:\n%s", err);
    assert_int_equal(it_dbsize(), keys);
    free(out);
    free(err);

    /* Data spread over another number of shards than the host's configuration says. */
    freeReplyObject(it_cmd("FLUSHALL"));
    th_protocol_set(fx.c, IT_PREFIX, "2"); /* 16 shards */
    free(path);
    assert_true(asprintf(&path, "%s/shards.conf", dir) > 0);
    char *text = NULL;
    assert_true(asprintf(&text, "redis: { url = \"%s\"; shards = 8; };\n", fx.r.url) > 0);
    it_write_file(path, text);
    free(text);
    argv[2] = path;
    assert_int_equal(th_run(30, argv, &out, &err), 1);
    if (!strstr(err, "spread over 16 shards") || !strstr(err, "redis.shards = 8"))
        fail_msg("bgtaskd: stderr lacks the shard mismatch:\n%s", err);
    free(out);
    free(err);
    free(bin);
    free(path);
    free(dir);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_submit_refused),    IT_TEST(test_args_limit),
        IT_TEST(test_corrupted_records), IT_TEST(test_deleted_records),
        IT_TEST(test_record_wrong_type), IT_TEST(test_bad_config),
        IT_TEST(test_missing_plugin),    IT_TEST(test_bad_redis_address),
        IT_TEST(test_protocol_mismatch),
    };
    return cmocka_run_group_tests(tests, it_group_setup, it_group_teardown);
}

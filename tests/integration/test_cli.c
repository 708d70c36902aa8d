/*
 * test_cli.c - bgtaskctl against a private redis-server, with no bgtaskd:
 * submission and its validation (nothing written on bad input), parallel
 * submissions (subtasks, parallelism, on_failure) and their status, retry's
 * exit codes, status, cancel of an unclaimed task, watch and submit --wait
 * ending on the cancel, list filters, hosts on an empty system, --help, exit
 * codes and the ways of naming the Redis server.
 */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../harness/itest.h"

/* A UUIDv4 in dashed lower-case form followed by one newline. */
static bool is_uuid_line(const char *s)
{
    if (strlen(s) != 37 || s[36] != '\n' || s[14] != '4')
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !strchr("0123456789abcdef", s[i]))
            return false;
    }
    return true;
}

/* Submit a task with the given handler (and args, or NULL); returns its id (malloc'd). */
static char *submit(const char *handler, const char *args)
{
    char *out = NULL;
    int rc = args ? th_ctl(&fx.r, &out, NULL, "submit", handler, "--args", args, NULL)
                  : th_ctl(&fx.r, &out, NULL, "submit", handler, NULL);
    assert_int_equal(rc, 0);
    assert_true(is_uuid_line(out));
    out[36] = '\0';
    return out;
}

static bool has_task(const char *id)
{
    char *v = it_field(id, "state");
    free(v);
    return v != NULL;
}

static void test_submit_creates_record(void **state)
{
    it_need_redis();
    char *id = submit("demo", "{\"n\": 3}");
    it_assert_field(id, "state", "ONGOING");
    it_assert_field(id, "attempt", "0");
    it_assert_field(id, "handler", "demo");
    it_assert_field(id, "message", "Task started");
    /* "Task started" is published to live subscribers, not stored: a late reader makes it
     * from the record (as status just did). */
    assert_int_equal(th_count_events(fx.c, IT_PREFIX, id, NULL), 0);
    assert_int_equal(th_event_total(fx.c, IT_PREFIX), 0);

    char *out = NULL;
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "--json", "submit", "demo", NULL), 0);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    cJSON *tid = cJSON_GetObjectItem(j, "task_id");
    assert_true(cJSON_IsString(tid));
    assert_int_equal(strlen(tid->valuestring), 36);
    assert_true(has_task(tid->valuestring));
    cJSON_Delete(j);
    free(out);
    free(id);
}

static void test_submit_id_twice(void **state)
{
    it_need_redis();
    const char *id = "3b241101-e2bb-4255-8caf-4136c566a962";
    char *out = NULL, *err = NULL;
    assert_int_equal(
        th_ctl(&fx.r, &out, NULL, "submit", "demo", "--id", id, "--args", "{\"v\": 1}", NULL), 0);
    assert_string_equal(out, "3b241101-e2bb-4255-8caf-4136c566a962\n");
    free(out);
    long long keys = it_dbsize();
    /* Its own exit code, and the id on stdout as after a submission. */
    int rc = th_ctl(&fx.r, &out, &err, "submit", "other", "--id", id, "--args", "{\"v\": 2}", NULL);
    assert_int_equal(rc, 6);
    assert_non_null(strstr(err, "already exists"));
    assert_string_equal(out, "3b241101-e2bb-4255-8caf-4136c566a962\n");
    free(out);
    free(err);
    /* With --json: the id, and that it existed. An id in capitals names the same task. */
    rc = th_ctl(&fx.r, &out, &err, "--json", "submit", "demo", "--id",
                "3B241101-E2BB-4255-8CAF-4136C566A962", NULL);
    assert_int_equal(rc, 6);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "task_id")->valuestring, id);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "exists")));
    cJSON_Delete(j);
    it_assert_field(id, "handler", "demo");
    it_assert_field(id, "args", "{\"v\": 1}"); /* as submitted, byte for byte */
    assert_int_equal(th_count_events(fx.c, IT_PREFIX, id, NULL), 0);
    assert_int_equal(it_dbsize(), keys);
    free(out);
    free(err);
}

static void test_submit_invalid_json(void **state)
{
    it_need_redis();
    char *err = NULL;
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "submit", "demo", "--args", "{\"a\": tru}", NULL),
                     2);
    /* The message says where: offset 6 is the "tru". */
    assert_non_null(strstr(err, "invalid JSON"));
    assert_non_null(strstr(err, "offset 6"));
    assert_non_null(strstr(err, "column 7"));
    free(err);
    assert_int_equal(it_dbsize(), 0);

    char *dir = th_tmpdir("cli-json");
    char *path = NULL;
    assert_true(asprintf(&path, "%s/args.json", dir) > 0);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\n  \"a\": 1,\n  \"b\": [1, 2,, 3]\n}\n", f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "submit", "demo", "--args-file", path, NULL), 2);
    assert_non_null(strstr(err, "line 3"));
    assert_non_null(strstr(err, path));
    free(err);

    /* Valid JSON that is not an object. */
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "submit", "demo", "--args", "[1, 2]", NULL), 2);
    assert_non_null(strstr(err, "object"));
    free(err);
    assert_int_equal(
        th_ctl(&fx.r, NULL, &err, "submit", "demo", "--args-file", "/nonexistent/args.json", NULL),
        2);
    free(err);
    assert_int_equal(it_dbsize(), 0);
    free(path);
    free(dir);
}

static void test_submit_args_over_limit(void **state)
{
    it_need_redis();
    char *dir = th_tmpdir("cli-limit");
    char *conf = NULL;
    assert_true(asprintf(&conf, "%s/small.conf", dir) > 0);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fputs("tasks: { max_args_bytes = 64; };\n", f);
    assert_int_equal(fclose(f), 0);

    char big[200];
    snprintf(big, sizeof big, "{\"data\": \"%0100d\"}", 0);
    char *err = NULL;
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "-c", conf, "submit", "demo", "--args", big, NULL),
                     2);
    assert_non_null(strstr(err, "limit"));
    free(err);
    assert_int_equal(it_dbsize(), 0);
    /* The same size passes with the default limit, and small args pass with the config. */
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "submit", "demo", "--args", big, NULL), 0);
    assert_int_equal(
        th_ctl(&fx.r, NULL, NULL, "-c", conf, "submit", "demo", "--args", "{\"a\": 1}", NULL), 0);
    free(conf);
    free(dir);
}

static void test_submit_bad_input(void **state)
{
    it_need_redis();
    static const char *const bad_handlers[] = {"Bad", "-x", "a b", "", "x/y", NULL};
    char *err = NULL;
    for (int i = 0; bad_handlers[i]; i++) {
        assert_int_equal(th_ctl(&fx.r, NULL, &err, "submit", bad_handlers[i], NULL), 2);
        assert_true(strlen(err) > 0);
        free(err);
    }
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "submit", "demo", "--id", "not-a-uuid", NULL), 2);
    assert_non_null(strstr(err, "not-a-uuid"));
    free(err);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "submit", "demo", "--delay", "soon", NULL), 2);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "submit", "demo", "--max-attempts", "0", NULL), 2);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "submit", "demo", "--args", "{}", "--args-file",
                            "/dev/null", NULL),
                     2);
    assert_int_equal(it_dbsize(), 0);
}

/* Write text to a new file in a scratch folder; returns its path (malloc'd). */
static char *write_temp(const char *tag, const char *name, const char *text)
{
    char *dir = th_tmpdir(tag);
    char *path = NULL;
    assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
    free(dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* --parallelism and --on-failure are checked before anything is sent. */
static void test_submit_parallel_options_invalid(void **state)
{
    it_need_redis();
    static const char *const bad_par[] = {"0", "-1", "1025", "x", "2.5", "", NULL};
    char *err = NULL;
    for (int i = 0; bad_par[i]; i++) {
        assert_int_equal(
            th_ctl(&fx.r, NULL, &err, "submit", "partest.run", "--parallelism", bad_par[i], NULL),
            2);
        assert_non_null(strstr(err, "--parallelism"));
        free(err);
    }
    static const char *const bad_onf[] = {"stop", "", "FAIL_FAST", "continue ", NULL};
    for (int i = 0; bad_onf[i]; i++) {
        assert_int_equal(
            th_ctl(&fx.r, NULL, &err, "submit", "partest.run", "--on-failure", bad_onf[i], NULL),
            2);
        assert_non_null(strstr(err, "--on-failure"));
        assert_non_null(strstr(err, "fail_fast"));
        free(err);
    }
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "submit", "partest.run", "--parallelism", NULL), 2);
    free(err);

    /* Subtasks: an array of 0..tasks.max_subtasks elements, with no args beside them. */
    char *obj = write_temp("cli-subs", "obj.json", "{\"a\": 1}");
    char *four = write_temp("cli-subs", "four.json", "[{}, {}, {}, {}]");
    char *conf = write_temp("cli-subs", "small.conf", "tasks: { max_subtasks = 3; };\n");
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "submit", "p", "--subtasks-file", obj, NULL), 2);
    assert_non_null(strstr(err, "array"));
    free(err);
    assert_int_equal(
        th_ctl(&fx.r, NULL, &err, "-c", conf, "submit", "p", "--subtasks-file", four, NULL), 2);
    assert_non_null(strstr(err, "tasks.max_subtasks"));
    assert_non_null(strstr(err, "0..3"));
    free(err);
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "submit", "p", "--subtasks-file", four, "--args",
                            "{\"x\": 1}", NULL),
                     2);
    assert_non_null(strstr(err, "--args: args would be ignored"));
    free(err);
    assert_int_equal(it_dbsize(), 0);
    /* Within the limit, the same config lets it through. */
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "submit", "p", "--subtasks-file", four, NULL), 0);
    free(obj);
    free(four);
    free(conf);
}

/* Make task id's n subtasks of args {"i": <index>} as a host's first claim would (its split,
 * here with no host running). */
static void split_as_host(const char *id, int n)
{
    char count[16];
    snprintf(count, sizeof count, "%d", n);
    th_task_set(fx.c, IT_PREFIX, id, "kind", "parallel");
    th_task_set(fx.c, IT_PREFIX, id, "subtasks", count);
    for (int i = 0; i < n; i++) {
        char a[32];
        snprintf(a, sizeof a, "{\"i\": %d}", i);
        th_subtask_set(fx.c, IT_PREFIX, id, i, "args", a);
    }
}

/*
 * A parallel submission: its subtasks travel as args.subtasks (as given), its
 * parallelism and on_failure are in the record; status shows the subtasks once
 * the first claim made them the task's (written here as a host would).
 */
static void test_submit_parallel(void **state)
{
    it_need_redis();
    char *subs = write_temp("cli-par", "subs.json", "[{\"i\": 0}, {\"i\": 1},\n {\"i\": 2}]\n");
    char *out = NULL;
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "submit", "partest.run", "--subtasks-file", subs,
                            "--parallelism", "3", "--on-failure", "fail_fast", NULL),
                     0);
    assert_true(is_uuid_line(out));
    out[36] = '\0';
    char *id = out;
    cJSON *want = cJSON_Parse("{\"subtasks\": [{\"i\": 0}, {\"i\": 1}, {\"i\": 2}]}");
    cJSON *got = it_field_json(id, "args");
    assert_true(cJSON_Compare(want, got, true));
    cJSON_Delete(want);
    cJSON_Delete(got);
    it_assert_field(id, "parallelism", "3");
    it_assert_field(id, "on_failure", "fail_fast");
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "status", id, "--subtasks", NULL), 0);
    assert_non_null(strstr(out, "not split yet"));
    free(out);
    split_as_host(id, 3);

    /* Without the options, the handler's own apply. */
    assert_int_equal(
        th_ctl(&fx.r, &out, NULL, "submit", "partest.run", "--subtasks-file", subs, NULL), 0);
    out[36] = '\0';
    it_assert_field(out, "parallelism", "0");
    it_assert_field(out, "on_failure", "");
    free(out);

    /* status: the counts, and with --subtasks a table or (--json) an array. */
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "status", id, NULL), 0);
    assert_non_null(strstr(out, "3 (0 succeeded, 0 failed)"));
    assert_non_null(strstr(out, "fail_fast"));
    assert_null(strstr(out, "INDEX"));
    free(out);
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "status", id, "--subtasks", NULL), 0);
    const char *table = strstr(out, "INDEX");
    assert_non_null(table);
    assert_non_null(strstr(table, "STATE"));
    assert_non_null(strstr(table, "ATTEMPT"));
    assert_non_null(strstr(table, "MESSAGE"));
    int rows = 0;
    for (const char *p = table; (p = strstr(p, "PENDING")); p++)
        rows++;
    assert_int_equal(rows, 3);
    free(out);
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "--json", "status", id, "--subtasks", NULL), 0);
    cJSON *arr = cJSON_Parse(out);
    assert_true(cJSON_IsArray(arr));
    assert_int_equal(cJSON_GetArraySize(arr), 3);
    for (int i = 0; i < 3; i++) {
        cJSON *s = cJSON_GetArrayItem(arr, i);
        assert_int_equal(cJSON_GetObjectItem(s, "index")->valueint, i);
        assert_string_equal(cJSON_GetObjectItem(s, "state")->valuestring, "PENDING");
        assert_int_equal(cJSON_GetObjectItem(s, "attempt")->valueint, 0);
        assert_true(cJSON_IsNull(cJSON_GetObjectItem(s, "message")));
        cJSON *a = cJSON_GetObjectItem(s, "args");
        assert_int_equal(cJSON_GetObjectItem(a, "i")->valueint, i);
    }
    cJSON_Delete(arr);
    free(out);

    /* A single task has no subtasks to show. */
    char *single = submit("demo", NULL);
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "--json", "status", single, "--subtasks", NULL), 0);
    assert_string_equal(out, "[]\n");
    free(out);
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "status", single, "--subtasks", NULL), 0);
    assert_non_null(strstr(out, "no subtasks"));
    free(out);

    /* A count no host could have written is reported, not allocated. */
    th_task_set(fx.c, IT_PREFIX, id, "subtasks", "99999999999");
    char *err = NULL;
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "status", id, "--subtasks", NULL), 1);
    assert_non_null(strstr(err, "corrupted"));
    free(err);

    /* watch --subtasks follows like watch: the cancel ends it with 3. */
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "cancel", id, NULL), 0);
    assert_int_equal(th_ctl_timeout(10, &fx.r, &out, NULL, "watch", id, "--subtasks", NULL), 3);
    assert_non_null(strstr(out, "bgtask_cancelled"));
    free(out);
    free(single);
    free(id);
    free(subs);
}

/* retry: 0 with the count, 5 unknown, 1 (nothing changed) when it cannot run again. */
static void test_retry_exit_codes(void **state)
{
    it_need_redis();
    char *out = NULL, *err = NULL;
    const char *unknown = "5d5d8f3e-6a8e-4c39-9d0b-0e6a4f1c2b77";
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "retry", unknown, NULL), 5);
    assert_non_null(strstr(err, "not found"));
    free(err);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "retry", "nope", NULL), 5);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "retry", NULL), 2);

    /* A single task cancelled before it ran runs again; then it is running: 1. */
    char *single = submit("demo", NULL);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "cancel", single, NULL), 0);
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "retry", single, NULL), 0);
    assert_string_equal(out, "retrying (a new attempt)\n");
    free(out);
    it_assert_field(single, "state", "ONGOING");
    assert_int_equal(th_ctl(&fx.r, &out, &err, "retry", single, NULL), 1);
    assert_non_null(strstr(err, "still running"));
    assert_string_equal(out, "");
    free(out);
    free(err);

    char *subs = write_temp("cli-retry", "subs.json", "[{}, {}, {}]");
    assert_int_equal(
        th_ctl(&fx.r, &out, NULL, "submit", "partest.run", "--subtasks-file", subs, NULL), 0);
    out[36] = '\0';
    char *id = out;
    split_as_host(id, 3);
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "retry", id, NULL), 1);
    assert_non_null(strstr(err, "still running"));
    free(err);
    it_assert_field(id, "state", "ONGOING");

    /* Cancelled before anything ran: no subtask failed, nothing to retry. */
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "cancel", id, NULL), 0);
    int events = th_count_events(fx.c, IT_PREFIX, id, NULL);
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "retry", id, NULL), 1);
    assert_non_null(strstr(err, "no failed or cancelled subtasks"));
    free(err);
    it_assert_field(id, "state", "CANCELLED");
    assert_int_equal(th_count_events(fx.c, IT_PREFIX, id, NULL), events);

    /* One subtask failed (as a host would have recorded it): it runs again. */
    th_subtask_set(fx.c, IT_PREFIX, id, 1, "state", "FAILURE");
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "retry", id, NULL), 0);
    assert_string_equal(out, "retrying 1 failed subtask(s)\n");
    free(out);
    it_assert_field(id, "state", "ONGOING");
    assert_int_equal(th_count_events(fx.c, IT_PREFIX, id, NULL), events + 1);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "retry", id, NULL), 1);

    /* --json says how many. */
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "cancel", id, NULL), 0);
    th_subtask_set(fx.c, IT_PREFIX, id, 0, "state", "FAILURE");
    th_subtask_set(fx.c, IT_PREFIX, id, 2, "state", "CANCELLED");
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "--json", "retry", id, NULL), 0);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "task_id")->valuestring, id);
    assert_int_equal(cJSON_GetObjectItem(j, "retrying")->valueint, 2);
    cJSON_Delete(j);
    free(out);
    free(subs);
    free(single);
    free(id);
}

static void test_status(void **state)
{
    it_need_redis();
    char *id = submit("demo", "{\"n\": 3, \"s\": \"x\"}");
    char *out = NULL;
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "status", id, "--json", NULL), 0);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "id")->valuestring, id);
    assert_string_equal(cJSON_GetObjectItem(j, "handler")->valuestring, "demo");
    assert_string_equal(cJSON_GetObjectItem(j, "state")->valuestring, "ONGOING");
    static const char *const numbers[] = {"attempt",          "created_ms",     "updated_ms",
                                          "progress_current", "progress_total", NULL};
    for (int i = 0; numbers[i]; i++)
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(j, numbers[i])));
    /* No max_attempts of its own: its handler's applies. */
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "max_attempts")));
    assert_int_equal(cJSON_GetObjectItem(j, "attempt")->valueint, 0);
    assert_true(cJSON_GetObjectItem(j, "created_ms")->valuedouble > 1e12);
    cJSON *args = cJSON_GetObjectItem(j, "args");
    assert_true(cJSON_IsObject(args));
    assert_int_equal(cJSON_GetObjectItem(args, "n")->valueint, 3);
    assert_string_equal(cJSON_GetObjectItem(args, "s")->valuestring, "x");
    assert_true(cJSON_IsString(cJSON_GetObjectItem(j, "message")));
    cJSON_Delete(j);
    free(out);

    assert_int_equal(th_ctl(&fx.r, &out, NULL, "status", id, NULL), 0);
    assert_non_null(strstr(out, id));
    assert_non_null(strstr(out, "ONGOING"));
    assert_non_null(strstr(out, "Task started"));
    free(out);
    free(id);
}

static void test_status_unknown(void **state)
{
    it_need_redis();
    char *err = NULL;
    const char *id = "9c5b94b1-35ad-49bb-b118-8e8fc24abf80";
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "status", id, NULL), 5);
    assert_non_null(strstr(err, "not found"));
    assert_non_null(strstr(err, id));
    free(err);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "watch", id, NULL), 5);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "cancel", id, NULL), 5);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "status", "nope", NULL), 5);
}

static void test_cancel_unclaimed(void **state)
{
    it_need_redis();
    char *id = submit("demo", NULL);
    char *out = NULL;
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "cancel", id, NULL), 0);
    assert_string_equal(out, "cancelled\n");
    free(out);
    it_assert_field(id, "state", "CANCELLED");
    assert_int_equal(th_count_events(fx.c, IT_PREFIX, id, "bgtask_cancelled"), 1);

    /* A second cancel changes nothing and says so. */
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "cancel", id, NULL), 0);
    assert_string_equal(out, "already CANCELLED\n");
    free(out);
    assert_int_equal(th_count_events(fx.c, IT_PREFIX, id, "bgtask_cancelled"), 1);

    /* watch on a finished task shows the end and exits at once. */
    double t0 = th_now();
    assert_int_equal(th_ctl_timeout(10, &fx.r, &out, NULL, "watch", id, NULL), 3);
    assert_true(th_now() - t0 < 1.5);
    assert_non_null(strstr(out, "bgtask_cancelled"));
    free(out);
    assert_int_equal(th_ctl_timeout(10, &fx.r, &out, NULL, "--json", "watch", id, NULL), 3);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "event")->valuestring, "bgtask_cancelled");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "data"), "task_id")->valuestring,
                        id);
    cJSON_Delete(j);
    free(out);
    free(id);
}

/* A watch that is already waiting sees the live cancel and ends with exit code 3. */
static void test_submit_wait_cancelled(void **state)
{
    it_need_redis();
    const char *id = "0f8fad5b-d9cb-469f-a165-70867728950e";
    char *bin = it_bin("bgtaskctl");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *devnull = freopen("/dev/null", "w", stdout);
        (void)devnull;
        execl(bin, bin, "--redis", fx.r.url, "submit", "demo", "--id", id, "--wait", (char *)NULL);
        _exit(127);
    }
    int status = -1;
    /* Whether the cancel comes before or after the watcher subscribes, it must end
     * with 3: it reads the record after subscribing and again when events stop. */
    bool exists = TH_WAIT_UNTIL(10, has_task(id));
    bool exited = false;
    if (exists) {
        assert_int_equal(th_ctl(&fx.r, NULL, NULL, "cancel", id, NULL), 0);
        exited = TH_WAIT_UNTIL(10, waitpid(pid, &status, WNOHANG) == pid);
    }
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    free(bin);
    assert_true(exists);
    assert_true(exited);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 3);
}

static int json_count(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    assert_true(cJSON_IsArray(j));
    int n = cJSON_GetArraySize(j);
    cJSON_Delete(j);
    return n;
}

/* The tasks of a list --json answer ({"count", "tasks", "next_cursor"}). */
static int list_count(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    assert_true(cJSON_IsObject(j));
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(j, "tasks"));
    assert_int_equal(cJSON_GetObjectItem(j, "count")->valueint, n);
    cJSON_Delete(j);
    return n;
}

static void test_list_filters(void **state)
{
    it_need_redis();
    char *a1 = submit("alpha", NULL), *a2 = submit("alpha", NULL), *b1 = submit("beta", NULL);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "cancel", a1, NULL), 0);
    char *out = NULL;
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "list", "--json", NULL), 0);
    assert_int_equal(list_count(out), 3);
    free(out);
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "list", "--handler", "alpha", "--json", NULL), 0);
    assert_int_equal(list_count(out), 2);
    assert_null(strstr(out, b1));
    free(out);
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "list", "--state", "CANCELLED", "--json", NULL), 0);
    assert_int_equal(list_count(out), 1);
    assert_non_null(strstr(out, a1));
    free(out);
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "list", "--state", "ongoing", "--handler", "alpha",
                            "--json", NULL),
                     0);
    assert_int_equal(list_count(out), 1);
    assert_non_null(strstr(out, a2));
    free(out);
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "list", "--limit", "1", "--json", NULL), 0);
    assert_int_equal(list_count(out), 1);
    free(out);
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "list", "--state", "SUCCESS", "--json", NULL), 0);
    assert_int_equal(list_count(out), 0);
    free(out);

    /* The table: a header and one line per task. */
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "list", "--handler", "beta", NULL), 0);
    assert_non_null(strstr(out, "HANDLER"));
    assert_non_null(strstr(out, b1));
    assert_null(strstr(out, a1));
    free(out);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "list", "--state", "DONE", NULL), 2);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "list", "--limit", "x", NULL), 2);
    free(a1);
    free(a2);
    free(b1);
}

static void test_hosts_and_stats(void **state)
{
    it_need_redis();
    char *out = NULL;
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "hosts", NULL), 0);
    assert_string_equal(out, "");
    free(out);
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "hosts", "--json", NULL), 0);
    assert_int_equal(json_count(out), 0);
    free(out);

    char *id = submit("gamma", NULL);
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "stats", "--json", NULL), 0);
    cJSON *j = cJSON_Parse(out);
    assert_true(cJSON_IsObject(j));
    free(out);
    cJSON_Delete(j);
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "stats", NULL), 0);
    assert_non_null(strstr(out, "gamma"));
    free(out);
    free(id);
}

static void test_help_and_usage(void **state)
{
    it_need_redis();
    char *out = NULL, *err = NULL;
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "--help", NULL), 0);
    assert_non_null(strstr(out, "Exit codes"));
    static const char *const codes[] = {"0  ", "1  ", "2  ", "3  ", "4  ", "5  ", "6  ", "7  ", NULL};
    for (int i = 0; codes[i]; i++)
        assert_non_null(strstr(strstr(out, "Exit codes"), codes[i]));
    assert_non_null(strstr(out, "not found"));
    assert_non_null(strstr(out, "cancelled"));
    assert_non_null(strstr(out, "partial success"));
    assert_non_null(strstr(out, "retry ID"));
    assert_non_null(strstr(out, "--parallelism"));
    assert_non_null(strstr(out, "--on-failure"));
    assert_non_null(strstr(out, "--subtasks"));
    assert_non_null(strstr(out, "handlers"));
    assert_non_null(strstr(out, "events [--handler H]"));
    free(out);
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "--version", NULL), 0);
    assert_non_null(strstr(out, "bgtaskctl"));
    free(out);
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "frobnicate", NULL), 2);
    assert_non_null(strstr(err, "frobnicate"));
    assert_non_null(strstr(err, "usage"));
    free(err);
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "list", "--bogus", NULL), 2);
    assert_non_null(strstr(err, "--bogus"));
    free(err);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "status", NULL), 2);
    const char *id = "3b241101-e2bb-4255-8caf-4136c566a962";
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "status", id, "--state", "FAILURE", NULL), 2);
    assert_non_null(strstr(err, "go with --subtasks"));
    free(err);
    assert_int_equal(
        th_ctl(&fx.r, NULL, &err, "status", id, "--subtasks", "--state", "DONE", NULL), 2);
    assert_non_null(strstr(err, "PENDING, SUCCESS, FAILURE or CANCELLED"));
    free(err);
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "events", "--handler", "Bad Name", NULL), 2);
    free(err);
    assert_int_equal(th_ctl(&fx.r, NULL, NULL, "--json", NULL), 2);
}

static void test_connection_error(void **state)
{
    it_need_redis();
    char *err = NULL;
    /* A later --redis wins over the one th_ctl passes; port 1 is never ours. */
    assert_int_equal(
        th_ctl(&fx.r, NULL, &err, "--redis", "redis://:hunter2@127.0.0.1:1/0", "list", NULL), 2);
    assert_non_null(strstr(err, "cannot connect to redis at"));
    assert_null(strstr(err, "hunter2"));
    free(err);
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "--redis", "redis://:hunter2@[::1", "list", NULL),
                     2);
    assert_null(strstr(err, "hunter2"));
    free(err);
}

/*
 * Every form a URL can carry a password in, valid or not, from --redis and from
 * $BGTASK_REDIS: the password never shows in bgtaskctl's messages.
 */
static void test_password_masked(void **state)
{
    it_need_redis();
    static const char *const urls[] = {
        "redis:/:hunter2@127.0.0.1:1",
        ":hunter2@127.0.0.1:1",
        "hunter2@127.0.0.1:1",
        "app:hunter2@127.0.0.1:1",
        "redis://app:hunter2@127.0.0.1:1/0",
        "redis://:hunter2@127.0.0.1:99999/0",
        "redis+sentinel://:hunter2@127.0.0.1:1,127.0.0.1:2",
        "redis+sentinel://:hunter2@127.0.0.1:1/m/x",
        "redis+cluster://:hunter2@127.0.0.1:1/5",
        "redis+cluster://u:hunter2@127.0.0.1:1,127.0.0.1:2",
        NULL,
    };
    char *bin = it_bin("bgtaskctl");
    for (int i = 0; urls[i]; i++) {
        char *err = NULL;
        int rc = th_ctl(&fx.r, NULL, &err, "--redis", urls[i], "list", NULL);
        if (rc != 2 || strstr(err, "hunter2"))
            fail_msg("bgtaskctl --redis '%s': exit %d, stderr: %s", urls[i], rc, err);
        free(err);
        setenv("BGTASK_REDIS", urls[i], 1);
        char *argv[] = {bin, "list", NULL};
        rc = th_run(30, argv, NULL, &err);
        unsetenv("BGTASK_REDIS");
        if (rc != 2 || strstr(err, "hunter2"))
            fail_msg("BGTASK_REDIS='%s' bgtaskctl list: exit %d, stderr: %s", urls[i], rc, err);
        free(err);
    }
    free(bin);
}

/* A password from $BGTASK_REDIS_PASSWORD or a config's redis.password_file, none on the
 * command line. */
static void test_password_off_command_line(void **state)
{
    it_need_redis();
    char *dir = th_tmpdir("cli-pwfile");
    char *conf = NULL, *pwfile = NULL, *text = NULL, *out = NULL, *err = NULL;
    assert_true(asprintf(&pwfile, "%s/redis.pw", dir) > 0);
    assert_true(asprintf(&conf, "%s/pw.conf", dir) > 0);
    it_write_file(pwfile, "pw file secret\n");
    assert_true(asprintf(&text, "redis: { url = \"%s\"; password_file = \"redis.pw\"; };\n",
                         fx.r.url) > 0);
    it_write_file(conf, text);
    redisReply *rep = redisCommand(fx.c, "CONFIG SET requirepass %s", "pw file secret");
    assert_non_null(rep);
    freeReplyObject(rep);

    /* The config's password file. */
    assert_int_equal(th_ctl(&fx.r, &out, &err, "-c", conf, "submit", "demo.echo", NULL), 0);
    assert_true(is_uuid_line(out));
    free(out);
    free(err);
    /* Without it: refused by Redis, and the message does not show what was tried. */
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "list", NULL), 2);
    assert_null(strstr(err, "pw file secret"));
    free(err);
    /* The environment. */
    setenv("BGTASK_REDIS_PASSWORD", "pw file secret", 1);
    assert_int_equal(th_ctl(&fx.r, &out, &err, "list", NULL), 0);
    unsetenv("BGTASK_REDIS_PASSWORD");
    assert_null(strstr(err, "pw file secret"));
    free(out);
    free(err);
    free(text);
    free(conf);
    free(pwfile);
    free(dir);
    it_pass();
}

/* Undo test_config_password's requirepass (this connection stays authenticated). */
static int reset_password(void **state)
{
    if (fx.up)
        freeReplyObject(redisCommand(fx.c, "CONFIG SET requirepass %s", ""));
    return 0;
}

/* The password and prefix come from the -c config (or the URL); neither is ever printed. */
static void test_config_password(void **state)
{
    it_need_redis();
    char *dir = th_tmpdir("cli-pass");
    char *conf = NULL, *url = NULL, *out = NULL, *err = NULL;
    assert_true(asprintf(&conf, "%s/pass.conf", dir) > 0);
    assert_true(asprintf(&url, "redis://:pw-secret@127.0.0.1:%d/0", fx.r.port) > 0);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fputs("redis: { password = \"pw-secret\"; prefix = \"cfgp\"; };\n", f);
    assert_int_equal(fclose(f), 0);
    redisReply *rep = redisCommand(fx.c, "CONFIG SET requirepass %s", "pw-secret");
    assert_non_null(rep);
    freeReplyObject(rep);

    assert_int_equal(th_ctl(&fx.r, &out, NULL, "-c", conf, "submit", "demo", NULL), 0);
    assert_true(is_uuid_line(out));
    out[36] = '\0';
    char *state_field = th_task_field(fx.c, "cfgp", out, "state");
    assert_non_null(state_field);
    assert_string_equal(state_field, "ONGOING");
    free(state_field);
    free(out);
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "--redis", url, "list", NULL), 0);
    free(err);
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "list", NULL), 2);
    assert_non_null(strstr(err, "cannot connect to redis at"));
    free(err);
    assert_int_equal(th_ctl(&fx.r, NULL, &err, "--redis", url, "-c", conf, "--prefix", "x",
                            "status", "nope", NULL),
                     5);
    assert_null(strstr(err, "pw-secret"));
    free(err);
    free(url);
    free(conf);
    free(dir);
}

/* BGTASK_REDIS names the server when --redis does not; --redis wins over it. */
static void test_env_redis(void **state)
{
    it_need_redis();
    char *bin = it_bin("bgtaskctl");
    char *out = NULL;
    setenv("BGTASK_REDIS", fx.r.url, 1);
    char *argv1[] = {bin, "submit", "envtask", NULL};
    int rc1 = th_run(30, argv1, &out, NULL);
    setenv("BGTASK_REDIS", "redis://127.0.0.1:1/0", 1);
    char *argv2[] = {bin, "list", NULL};
    int rc2 = th_run(30, argv2, NULL, NULL);
    char *argv3[] = {bin, "--redis", fx.r.url, "list", "--json", NULL};
    char *out3 = NULL;
    int rc3 = th_run(30, argv3, &out3, NULL);
    unsetenv("BGTASK_REDIS");
    assert_int_equal(rc1, 0);
    assert_true(is_uuid_line(out));
    out[36] = '\0';
    it_assert_field(out, "handler", "envtask");
    assert_int_equal(rc2, 2);
    assert_int_equal(rc3, 0);
    assert_non_null(strstr(out3, out));
    free(out);
    free(out3);
    free(bin);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_submit_creates_record),
        IT_TEST(test_submit_id_twice),
        IT_TEST(test_submit_invalid_json),
        IT_TEST(test_submit_args_over_limit),
        IT_TEST(test_submit_bad_input),
        IT_TEST(test_submit_parallel_options_invalid),
        IT_TEST(test_submit_parallel),
        IT_TEST(test_retry_exit_codes),
        IT_TEST(test_status),
        IT_TEST(test_status_unknown),
        IT_TEST(test_cancel_unclaimed),
        IT_TEST(test_submit_wait_cancelled),
        IT_TEST(test_list_filters),
        IT_TEST(test_hosts_and_stats),
        IT_TEST(test_help_and_usage),
        IT_TEST(test_connection_error),
        IT_TEST(test_env_redis),
        cmocka_unit_test_setup_teardown(test_config_password, it_setup, reset_password),
        IT_TEST(test_password_masked),
        cmocka_unit_test_setup_teardown(test_password_off_command_line, it_setup, reset_password),
    };
    return cmocka_run_group_tests(tests, it_group_setup, it_group_teardown);
}

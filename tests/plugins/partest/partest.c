/*
 * partest.c - a parallel handler for the tests of parallel tasks. It records
 * what happens so a test can count it: every split and every subtask run is
 * one line appended to args.log ("split <task>", "start <i> <attempt>",
 * "end <i>"), and it keeps the highest number of its subtasks seen running at
 * once ("max <k>" on each end).
 *
 *   partest.run {"n": N, "ms": M, "fail": [i...], "fail_once": [i...], "fail_ms": F,
 *                "flaky": [i...], "log": "/abs/path"}
 *     split: N items; subtask i sleeps M ms (honouring cancel), fails if i is in
 *     fail, fails its first run only if i is in fail_once (so a retry of the
 *     task succeeds), returns RETRY on its first attempt if i is in flaky.
 *     A subtask that is going to fail sleeps F ms instead of M when fail_ms is
 *     given, so a test can place a failure while its siblings are mid-run.
 *   partest.ff  the same with on_failure = fail_fast.
 *   partest.list  the same run without a split function: its subtasks come from
 *     the submission (--subtasks-file) or args.subtasks, one element of args each.
 *   partest.batch  no split function, batch_size 2: each subtask's args are
 *     {"items": [two items], "first": k}; it notes "batch <k> <items>" to the
 *     first item's log and returns {"first": k, "items": <count>}.
 *   A subtask whose args have "echo_args": true also notes "args <i> <its args>", as
 *   cJSON prints what the handler was given.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bgtask.h>

static int running, highest;

static void note(const cJSON *args, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append one line to args.log with a single write, so lines never interleave. */
static void note(const cJSON *args, const char *fmt, ...)
{
    const cJSON *log = cJSON_GetObjectItemCaseSensitive(args, "log");
    if (!cJSON_IsString(log))
        return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || n > (int)sizeof line - 2)
        return;
    line[n++] = '\n';
    int fd = open(log->valuestring, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
    close(fd);
}

static bool listed(const cJSON *args, const char *key, int i)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(args, key))
    {
        if (cJSON_IsNumber(it) && it->valueint == i)
            return true;
    }
    return false;
}

static bgt_status split(bgt_task *t, const cJSON *args, void *udata)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(args, "n");
    if (!cJSON_IsNumber(n) || n->valueint < 1) {
        bgt_set_error(t, "args.n must be a positive number");
        return BGT_FAILED;
    }
    note(args, "split %s", bgt_task_id(t));
    for (int i = 0; i < n->valueint; i++) {
        cJSON *item = cJSON_Duplicate(args, true);
        cJSON_DeleteItemFromObject(item, "n");
        cJSON_AddNumberToObject(item, "i", i);
        int rc = bgt_add_subtask(t, item);
        cJSON_Delete(item);
        if (rc < 0) {
            bgt_set_error(t, "bgt_add_subtask refused subtask %d: %s", i,
                          rc == -E2BIG ? "over the host's limit" : strerror(-rc));
            return BGT_FAILED;
        }
    }
    return BGT_OK;
}

static bgt_status run(bgt_task *t, const cJSON *args, void *udata)
{
    int i = bgt_subtask(t);
    int now = __atomic_add_fetch(&running, 1, __ATOMIC_SEQ_CST);
    int seen = __atomic_load_n(&highest, __ATOMIC_SEQ_CST);
    while (now > seen && !__atomic_compare_exchange_n(&highest, &seen, now, false,
                                                      __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    note(args, "start %d %u", i, bgt_attempt(t));
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(args, "echo_args"))) {
        /* The args as the handler got them, printed again: a value changed on the way
         * (a number rounded, [] turned into {}) shows. */
        char *text = cJSON_PrintUnformatted(args);
        note(args, "args %d %s", i, text ? text : "?");
        cJSON_free(text);
    }
    bool fails = listed(args, "fail", i) || (listed(args, "fail_once", i) && bgt_attempt(t) == 1);
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(args, "ms");
    const cJSON *fail_ms = cJSON_GetObjectItemCaseSensitive(args, "fail_ms");
    if (fails && cJSON_IsNumber(fail_ms))
        ms = fail_ms;
    int left = cJSON_IsNumber(ms) ? ms->valueint : 0;
    bgt_status st = BGT_OK;
    while (left > 0) {
        if (bgt_cancelled(t)) {
            st = BGT_CANCELLED;
            break;
        }
        int slice = left < 10 ? left : 10;
        struct timespec ts = {0, slice * 1000000L};
        nanosleep(&ts, NULL);
        left -= slice;
        bgt_progress(t, 1, 2, NULL);
    }
    if (st == BGT_OK && fails) {
        bgt_set_error(t, "subtask %d was asked to fail", i);
        st = BGT_FAILED;
    } else if (st == BGT_OK && listed(args, "flaky", i) && bgt_attempt(t) == 1) {
        bgt_set_error(t, "subtask %d fails its first attempt", i);
        st = BGT_RETRY;
    } else if (st == BGT_OK) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddNumberToObject(r, "i", i);
        bgt_set_result(t, r);
        cJSON_Delete(r);
    }
    __atomic_sub_fetch(&running, 1, __ATOMIC_SEQ_CST);
    note(args, "end %d %d max %d", i, (int)st, __atomic_load_n(&highest, __ATOMIC_SEQ_CST));
    return st;
}

static bgt_status run_batch(bgt_task *t, const cJSON *args, void *udata)
{
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(args, "items");
    const cJSON *first = cJSON_GetObjectItemCaseSensitive(args, "first");
    if (!cJSON_IsArray(items) || !cJSON_IsNumber(first)) {
        bgt_set_error(t, "args must be {\"items\": [...], \"first\": k}");
        return BGT_FAILED;
    }
    int n = cJSON_GetArraySize(items);
    note(cJSON_GetArrayItem(items, 0), "batch %d %d", first->valueint, n);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "first", first->valueint);
    cJSON_AddNumberToObject(r, "items", n);
    bgt_set_result(t, r);
    cJSON_Delete(r);
    return BGT_OK;
}

static int init(bgt_plugin *p, const cJSON *config)
{
    int rc = bgt_register_handler(p, (bgt_handler_def){.name = "partest.run",
                                                       .kind = BGT_PARALLEL,
                                                       .run = run,
                                                       .split = split,
                                                       .parallelism = 8});
    if (rc == 0)
        rc = bgt_register_handler(p, (bgt_handler_def){.name = "partest.ff",
                                                       .kind = BGT_PARALLEL,
                                                       .run = run,
                                                       .split = split,
                                                       .parallelism = 4,
                                                       .on_failure = BGT_FAIL_FAST});
    if (rc == 0)
        rc = bgt_register_handler(p, (bgt_handler_def){.name = "partest.list",
                                                       .kind = BGT_PARALLEL,
                                                       .run = run,
                                                       .parallelism = 8});
    if (rc == 0)
        rc = bgt_register_handler(p, (bgt_handler_def){.name = "partest.batch",
                                                       .kind = BGT_PARALLEL,
                                                       .run = run_batch,
                                                       .parallelism = 8,
                                                       .batch_size = 2});
    return rc;
}

BGT_PLUGIN("partest", "1.0", init, NULL);

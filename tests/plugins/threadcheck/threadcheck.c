/*
 * threadcheck.c - a test plugin that checks where the host runs plugin code:
 * every callback (run, split, merge, and a hook's before, progress and after)
 * looks at the name of the thread it runs on and writes a line to the record
 * file (the plugin config's record = "/path"):
 *
 *   "<callback> <thread name>"      for each call
 *   "WRONG <callback> <thread name>" when that thread is not a host worker
 *                                  ("bgt-worker-N"): the writer, the dispatcher,
 *                                  the manager or the control thread
 *
 * and the hook's after callback calls back into the host from inside the
 * chain: bgt_register_hook (refused outside init: "REGISTER <rc>") and, after
 * each attempt of threadcheck.single, bgt_submit of a threadcheck.followup
 * task ("SUBMIT <rc>"). A host that ran a hook under its registry lock or on
 * a thread that must not block would deadlock or show up as WRONG.
 *
 *   threadcheck.single    {"fail": false, "retry": false}: progress 1/2, then
 *                         done (or failed, or retry on attempt 1)
 *   threadcheck.parallel  {"n": N, "fail": [i, ...], "retry": [i, ...]}: split into
 *                         N items; a subtask fails, or asks to retry every time,
 *                         if listed; merge sums the items
 *   threadcheck.followup  done at once
 */
#define _GNU_SOURCE /* pthread_getname_np */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bgtask.h>

static char *record;     /* the record file, or NULL */
static bgt_plugin *self; /* for the registration tried from a hook */

/* Append one line to the record, in one O_APPEND write. */
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    if (!record)
        return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    int fd = open(record, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
    close(fd);
}

/* Note that callback `what` runs here, and whether here is a host worker. */
static void check_thread(const char *what)
{
    char name[16] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    if (strncmp(name, "bgt-worker-", 11) != 0)
        note("WRONG %s %s", what, name);
    else
        note("%s %s", what, name);
}

static bool flag(const cJSON *args, const char *name)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(args, name));
}

static bgt_status single_run(bgt_task *t, const cJSON *args, void *udata)
{
    check_thread("run");
    bgt_progress(t, 1, 2, "half way");
    if (flag(args, "fail")) {
        bgt_set_error(t, "asked to fail");
        return BGT_FAILED;
    }
    if (flag(args, "retry") && bgt_attempt(t) == 1) {
        bgt_set_error(t, "asked to retry once");
        return BGT_RETRY;
    }
    return BGT_OK;
}

static bgt_status followup_run(bgt_task *t, const cJSON *args, void *udata)
{
    check_thread("run");
    return BGT_OK;
}

/* Whether i is in the array args.name. */
static bool listed(const cJSON *args, const char *name, int i)
{
    const cJSON *f;
    cJSON_ArrayForEach (f, cJSON_GetObjectItemCaseSensitive(args, name)) {
        if (cJSON_IsNumber(f) && f->valueint == i)
            return true;
    }
    return false;
}

static bgt_status parallel_split(bgt_task *t, const cJSON *args, void *udata)
{
    check_thread("split");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(args, "n");
    for (int i = 0; cJSON_IsNumber(n) && i < n->valueint; i++) {
        cJSON *item = cJSON_CreateObject();
        cJSON_AddNumberToObject(item, "i", i);
        cJSON_AddBoolToObject(item, "fail", listed(args, "fail", i));
        cJSON_AddBoolToObject(item, "retry", listed(args, "retry", i));
        int rc = bgt_add_subtask(t, item);
        cJSON_Delete(item);
        if (rc < 0) {
            bgt_set_error(t, "add_subtask: %d", rc);
            return BGT_FAILED;
        }
    }
    return BGT_OK;
}

static bgt_status parallel_run(bgt_task *t, const cJSON *args, void *udata)
{
    check_thread("run");
    bgt_progress(t, 1, 1, NULL);
    if (flag(args, "fail")) {
        bgt_set_error(t, "subtask asked to fail");
        return BGT_FAILED;
    }
    if (flag(args, "retry")) {
        bgt_set_error(t, "subtask asked to retry");
        return BGT_RETRY;
    }
    const cJSON *i = cJSON_GetObjectItemCaseSensitive(args, "i");
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "i", cJSON_IsNumber(i) ? i->valuedouble : -1);
    bgt_set_result(t, r);
    cJSON_Delete(r);
    return BGT_OK;
}

static bgt_status parallel_merge(bgt_task *t, const cJSON *results, void *udata)
{
    check_thread("merge");
    double sum = 0;
    const cJSON *r;
    cJSON_ArrayForEach (r, results) {
        const cJSON *i = cJSON_GetObjectItemCaseSensitive(r, "i");
        if (cJSON_IsNumber(i))
            sum += i->valuedouble;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "sum", sum);
    bgt_set_result(t, o);
    cJSON_Delete(o);
    return BGT_OK;
}

static void hook_before(void *udata, const bgt_hook_info *info) { check_thread("before"); }

static void hook_progress(void *udata, const bgt_hook_info *info, double current, double total,
                          const char *message)
{
    check_thread("progress");
}

static void hook_after(void *udata, const bgt_hook_info *info, bgt_status outcome,
                       double duration_s, const char *message)
{
    check_thread("after");
    /* Back into the host from inside the chain: the loader refuses a registration
     * outside init, and a submission goes through. */
    bgt_hook_def late = {.name = "late"};
    note("REGISTER %d", bgt_register_hook(self, late));
    if (info->subtask < 0 && strcmp(info->handler, "threadcheck.single") == 0) {
        cJSON *args = cJSON_CreateObject();
        cJSON_AddStringToObject(args, "from", info->task_id);
        note("SUBMIT %d", bgt_submit(NULL, "threadcheck.followup", args, NULL));
        cJSON_Delete(args);
    }
}

static void free_record(void *p)
{
    free(record);
    record = NULL;
}

static int threadcheck_init(bgt_plugin *p, const cJSON *config)
{
    const cJSON *rec = cJSON_GetObjectItemCaseSensitive(config, "record");
    record = cJSON_IsString(rec) ? strdup(rec->valuestring) : NULL;
    self = p;
    int rc = bgt_register_handler(p, (bgt_handler_def){.name = "threadcheck.single",
                                                       .kind = BGT_SINGLE,
                                                       .run = single_run,
                                                       .max_attempts = 3});
    if (rc == 0)
        rc = bgt_register_handler(p, (bgt_handler_def){.name = "threadcheck.followup",
                                                       .kind = BGT_SINGLE,
                                                       .run = followup_run});
    if (rc == 0)
        rc = bgt_register_handler(p, (bgt_handler_def){.name = "threadcheck.parallel",
                                                       .kind = BGT_PARALLEL,
                                                       .run = parallel_run,
                                                       .split = parallel_split,
                                                       .merge = parallel_merge,
                                                       .parallelism = 2,
                                                       .max_attempts = 3});
    if (rc == 0)
        rc = bgt_register_hook(p, (bgt_hook_def){.name = "threadcheck",
                                                 .before = hook_before,
                                                 .progress = hook_progress,
                                                 .after = hook_after,
                                                 .udata_free = free_record});
    return rc;
}

BGT_PLUGIN("threadcheck", "1.0", threadcheck_init, NULL);

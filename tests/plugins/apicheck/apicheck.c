/*
 * apicheck.c - a test plugin for what the host's API promises a plugin
 * (sdk/bgtask.h): that its init can bgt_submit, and what a hook's after
 * callback is told.
 *
 * Config (both optional):
 *   submit = "H";    init submits a task of handler H with args {"from": "init"} and logs
 *                    "init submit: rc <rc> id <id>"
 *   log = "/path";   a hook appends "after <task id> <subtask> <outcome> <message>" to it
 *                    for every attempt that ends (message "(null)" when NULL)
 *
 *   apicheck.end {"end": "ok"|"failed"|"retry"|"cancelled", "error": "text"}
 *     sets the error (when given) and returns that status: "retry" asks for a retry on its
 *     first attempt and succeeds on the next; "cancelled" waits (up to 30 s) until
 *     bgt_cancelled() says so. Without "end": ok.
 *   apicheck.end {"depth": N} or {"bad_utf8": true}
 *     sets a result of N nested arrays ([[...[1]...]]), or a string that is not UTF-8;
 *     if bgt_set_result refuses it: FAILURE "set_result: rc <rc>".
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bgtask.h>

static bgt_status run(bgt_task *t, const cJSON *args, void *udata)
{
    const cJSON *end = cJSON_GetObjectItemCaseSensitive(args, "end");
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(args, "error");
    const char *e = cJSON_IsString(end) ? end->valuestring : "ok";
    const cJSON *depth = cJSON_GetObjectItemCaseSensitive(args, "depth");
    cJSON *result = NULL;
    if (cJSON_IsNumber(depth)) {
        result = cJSON_CreateNumber(1);
        for (int i = 0; i < depth->valueint; i++) {
            cJSON *a = cJSON_CreateArray();
            cJSON_AddItemToArray(a, result);
            result = a;
        }
    } else if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(args, "bad_utf8")))
        result = cJSON_CreateString("caf\xe9");
    if (result) {
        int rc = bgt_set_result(t, result);
        cJSON_Delete(result);
        if (rc != 0) {
            bgt_set_error(t, "set_result: rc %d", rc);
            return BGT_FAILED;
        }
    }
    if (cJSON_IsString(error))
        bgt_set_error(t, "%s", error->valuestring);
    if (strcmp(e, "failed") == 0)
        return BGT_FAILED;
    if (strcmp(e, "retry") == 0)
        return bgt_attempt(t) == 1 ? BGT_RETRY : BGT_OK;
    if (strcmp(e, "cancelled") == 0) {
        for (int i = 0; i < 3000 && !bgt_cancelled(t); i++) {
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
        return BGT_CANCELLED;
    }
    return BGT_OK;
}

/* The hook's after: one line per ended attempt, written with one write(). */
static void after(void *udata, const bgt_hook_info *info, bgt_status outcome, double duration_s,
                  const char *message)
{
    const char *path = udata;
    char line[512];
    int n = snprintf(line, sizeof line, "after %s %d %d %s\n", info->task_id, info->subtask,
                     (int)outcome, message ? message : "(null)");
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || n < 0)
        return;
    ssize_t w = write(fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    (void)w;
    close(fd);
}

static int init(bgt_plugin *p, const cJSON *config)
{
    int rc = bgt_register_handler(
        p, (bgt_handler_def){.name = "apicheck.end", .kind = BGT_SINGLE, .run = run});
    const cJSON *log = cJSON_GetObjectItemCaseSensitive(config, "log");
    if (rc == 0 && cJSON_IsString(log)) {
        char *path = strdup(log->valuestring);
        if (!path)
            return -ENOMEM;
        rc = bgt_register_hook(p, (bgt_hook_def){.name = "apicheck.after",
                                                 .after = after,
                                                 .udata = path,
                                                 .udata_free = free});
    }
    const cJSON *submit = cJSON_GetObjectItemCaseSensitive(config, "submit");
    if (rc == 0 && cJSON_IsString(submit)) {
        char id[BGT_ID_LEN + 1] = "";
        cJSON *args = cJSON_CreateObject();
        cJSON_AddStringToObject(args, "from", "init");
        int src = bgt_submit(NULL, submit->valuestring, args, id);
        cJSON_Delete(args);
        bgt_plugin_log(p, BGT_LOG_INFO, "init submit: rc %d id %s", src, src == 0 ? id : "-");
    }
    return rc;
}

BGT_PLUGIN("apicheck", "1.0", init, NULL);

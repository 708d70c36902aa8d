/* api.c - the bgt_api table plugins receive, and bgt_submit. */
#include "api.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "task_api.h"
#include "plugin.h"
#include "subtasks.h"
#include "util.h"

static pthread_mutex_t submit_lock = PTHREAD_MUTEX_INITIALIZER;
static store *submit_store;
static char submit_off[160] = "this process has no Redis connection to submit with";

void host_api_set_submit_store(store *st, const char *why_not)
{
    pthread_mutex_lock(&submit_lock);
    submit_store = st;
    if (why_not)
        strlcpy_(submit_off, why_not, sizeof submit_off);
    pthread_mutex_unlock(&submit_lock);
}

/* bgt_submit: one task, through the shared submit connection. */
static int api_submit(bgt_task *t, const char *name, const cJSON *args, char *id_out)
{
    char *text = args ? cJSON_PrintUnformatted(args) : NULL;
    if (args && !text)
        return -ENOMEM;
    /* args.subtasks, when there, gives a parallel task its subtasks, alone (subtasks.h). */
    char bad[300], *given = NULL;
    if (subtasks_submit_args(text, NULL, 0, &given, bad, sizeof bad) < 0) {
        log_msg(BGT_LOG_WARNING, t ? task_api_id(t) : NULL, "submit %s failed: %s",
                name ? name : "(null)", bad);
        free(text);
        return -EINVAL;
    }
    free(given);
    submit_req q = {.handler = name, .args = text};
    pthread_mutex_lock(&submit_lock);
    int rc = submit_store ? store_submit(submit_store, &q, 1) : -EIO;
    const char *why = submit_store ? store_errstr(submit_store) : submit_off;
    if (rc == 0)
        rc = q.rc;
    if (rc < 0)
        log_msg(BGT_LOG_WARNING, t ? task_api_id(t) : NULL, "submit %s failed: %s",
                name ? name : "(null)", q.err[0] ? q.err : why);
    else if (q.not_durable)
        log_msg(BGT_LOG_WARNING, t ? task_api_id(t) : NULL, "submitted %s as %s: %s",
                name ? name : "(null)", q.id_out, q.err);
    pthread_mutex_unlock(&submit_lock);
    if (rc == 0 && id_out)
        memcpy(id_out, q.id_out, BGT_ID_LEN + 1);
    free(text);
    return rc;
}

static const bgt_api table = {
    .size = sizeof(bgt_api),
    .abi_major = BGT_ABI_MAJOR,
    .abi_minor = BGT_ABI_MINOR,
    .register_handler = plugin_api_register_handler,
    .register_hook = plugin_api_register_hook,
    .plugin_log = plugin_api_log,
    .task_id = task_api_id,
    .task_handler = task_api_handler,
    .task_attempt = task_api_attempt,
    .task_subtask = task_api_subtask,
    .progress = task_api_progress,
    .last_progress = task_api_last_progress,
    .cancelled = task_api_cancelled,
    .set_result = task_api_set_result,
    .set_error = task_api_set_error,
    .task_log = task_api_log,
    .submit = api_submit,
    .add_subtask = task_api_add_subtask,
};

const bgt_api *host_api(void) { return &table; }

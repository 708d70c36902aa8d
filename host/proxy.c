/*
 * proxy.c - the handlers the host registers for an isolated plugin. Each
 * run, split or merge call is handed to the plugin's pool (isolate.c), which
 * gives it to a worker process; the io thread (iso_io.c) serves the worker's
 * frames through the host's task API and decides the outcome, which the
 * proxy returns to the manager as its handler's status. The run of a single
 * attempt is handed off instead (proxy_hand_off): the manager's worker
 * thread goes on with other jobs, and the outcome comes back to the manager
 * as a job of its own, so no host thread waits for a worker process.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "isolate_int.h"
#include "task_api.h"
#include "util.h"

/* Whether input text of len bytes fits a CALL; if not, the task's error says so. */
static bool fits(bgt_task *t, int op, size_t len)
{
    if (len + 1024 <= IPC_TO_WORKER_MAX)
        return true;
    iso__set_error(t, "the %s's input is over %u MiB, more than a worker accepts",
                   op == IPC_OP_MERGE ? "merge" : "call", IPC_TO_WORKER_MAX >> 20);
    return false;
}

static bgt_status proxy_call(const proxy *px, bgt_task *t, int op, const cJSON *input)
{
    char *args = cJSON_PrintUnformatted(input);
    if (!args) {
        iso__set_error(t, "out of memory");
        return BGT_FAILED;
    }
    if (!fits(t, op, strlen(args))) {
        free(args);
        return BGT_FAILED;
    }
    iso_call c = {.px = px, .pl = px->pool, .t = t, .op = op, .args = args};
    pthread_cond_init(&c.cond, NULL);
    iso__submit(&c);
    iso_host *h = c.pl->host;
    pthread_mutex_lock(&h->lock);
    while (!c.finished)
        pthread_cond_wait(&c.cond, &h->lock);
    pthread_mutex_unlock(&h->lock);
    pthread_cond_destroy(&c.cond);
    free(args);
    return c.status;
}

void proxy_hand_off(bgt_task *t, const char *args_json, void *udata)
{
    const proxy *px = udata;
    if (!fits(t, IPC_OP_RUN, strlen(args_json))) {
        task_api_handed_back(t, BGT_FAILED);
        return;
    }
    iso_call *c = xcalloc(1, sizeof *c);
    *c = (iso_call){.px = px, .pl = px->pool, .t = t, .op = IPC_OP_RUN, .args = args_json,
                    .handed = true};
    iso__submit(c);
}

bgt_status proxy_run(bgt_task *t, const cJSON *args, void *udata)
{
    return proxy_call(udata, t, IPC_OP_RUN, args);
}

bgt_status proxy_split(bgt_task *t, const cJSON *args, void *udata)
{
    return proxy_call(udata, t, IPC_OP_SPLIT, args);
}

bgt_status proxy_merge(bgt_task *t, const cJSON *results, void *udata)
{
    return proxy_call(udata, t, IPC_OP_MERGE, results);
}

/*
 * worker_api.c - the bgt_api of `bgtaskd --worker`: what a plugin's calls of
 * bgtask.h do in a worker process. Task fields come with the CALL; progress is
 * coalesced (at most one PROGRESS frame per progress gap, the latest report
 * wins, the last one goes before DONE; a small flusher thread sends a report
 * that would otherwise wait); logs, submissions and a split's subtasks go to
 * the host as frames; bgt_cancelled() reads the socket for a CANCEL at most
 * every POLL_GAP_S.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hooks.h"
#include "plugin.h"
#include "util.h"
#include "worker_int.h"

/* ---- progress ---- */

void worker__send_progress(void)
{
    ipc_begin(&W.pbuf, IPC_PROGRESS);
    ipc_put_f64(&W.pbuf, W.p_current);
    ipc_put_f64(&W.pbuf, W.p_total);
    ipc_put_str(&W.pbuf, W.p_message);
    ipc_end(&W.pbuf);
    W.pending = false;
    W.p_sent_at = mono_s();
    worker__send_frame(&W.pbuf);
}

/* Sends a coalesced report once the gap since the last one has passed. */
static void *flusher_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&W.prog_lock);
    for (;;) {
        if (!W.pending) {
            pthread_cond_wait(&W.prog_cond, &W.prog_lock);
            continue;
        }
        double due = W.p_sent_at + W.gap;
        if (mono_s() >= due) {
            worker__send_progress();
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double at = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + (due - mono_s());
        ts.tv_sec = (time_t)at;
        ts.tv_nsec = (long)((at - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&W.prog_cond, &W.prog_lock, &ts);
    }
    return NULL;
}

static void w_progress(bgt_task *t, double current, double total, const char *message)
{
    wcall *c = (wcall *)t;
    if (!isfinite(current) || !isfinite(total))
        return;
    hooks_plugins_progress(&W.reg, &c->info, current, total, message);
    char *copy = message ? strndup(message, 1024) : NULL;
    pthread_mutex_lock(&W.prog_lock);
    if (!atomic_load(&W.running)) {
        /* A plugin thread reporting after its call ended: nothing to report it for. */
        pthread_mutex_unlock(&W.prog_lock);
        free(copy);
        return;
    }
    W.p_current = current;
    W.p_total = total;
    free(W.p_message);
    W.p_message = copy;
    W.pending = true;
    if (mono_s() - W.p_sent_at >= W.gap) {
        worker__send_progress();
    } else {
        if (!W.flusher) {
            pthread_t th;
            W.flusher = pthread_create(&th, NULL, flusher_main, NULL) == 0;
            if (W.flusher)
                pthread_detach(th);
        }
        pthread_cond_signal(&W.prog_cond);
    }
    pthread_mutex_unlock(&W.prog_lock);
}

/* ---- the task API of the worker ---- */

static const char *w_task_id(const bgt_task *t) { return ((const wcall *)t)->id; }
static const char *w_task_handler(const bgt_task *t) { return ((const wcall *)t)->handler; }
static uint32_t w_task_attempt(const bgt_task *t) { return ((const wcall *)t)->attempt; }
static int w_task_subtask(const bgt_task *t) { return ((const wcall *)t)->subtask; }

static void w_last_progress(const bgt_task *t, double *current, double *total)
{
    const wcall *c = (const wcall *)t;
    if (current)
        *current = c->last_current;
    if (total)
        *total = c->last_total;
}

static bool w_cancelled(const bgt_task *t)
{
    (void)t;
    if (atomic_load(&W.cancel) || !atomic_load(&W.running))
        return true;
    int64_t now = (int64_t)(mono_s() * 1e9);
    if (now - atomic_load(&W.polled_ns) < (int64_t)(POLL_GAP_S * 1e9))
        return false;
    /* Another thread reading for us is as good. */
    if (pthread_mutex_trylock(&W.recv_lock) == 0) {
        atomic_store(&W.polled_ns, now);
        worker__pump(false);
        pthread_mutex_unlock(&W.recv_lock);
    }
    return atomic_load(&W.cancel) != 0;
}

static int w_set_result(bgt_task *t, const cJSON *result)
{
    wcall *c = (wcall *)t;
    if (!result)
        return -EINVAL;
    char *s = cJSON_PrintUnformatted(result);
    if (!s)
        return -ENOMEM;
    if (strlen(s) > W.max_result) {
        log_msg(BGT_LOG_WARNING, c->id, "result of %zu bytes is over the limit of %zu",
                strlen(s), W.max_result);
        free(s);
        return -E2BIG;
    }
    free(c->result);
    c->result = s;
    return 0;
}

static void w_set_error(bgt_task *t, const char *fmt, va_list ap)
{
    wcall *c = (wcall *)t;
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        return;
    if (strlen(s) > 4096)
        s[4096] = '\0';
    free(c->error);
    c->error = s;
}

/*
 * A log line: to the host in a LOG frame during init and during a call, so
 * the host attaches the plugin's name or the task's id; from a plugin thread
 * outside a call straight to stderr, which the worker shares with the host.
 */
static void send_log(int level, int about, const char *fmt, va_list ap)
{
    char text[2048];
    vsnprintf(text, sizeof text, fmt ? fmt : "", ap);
    if (level < BGT_LOG_ERR)
        level = BGT_LOG_ERR;
    if (level > BGT_LOG_DEBUG)
        level = BGT_LOG_DEBUG;
    ipc_buf b = {0};
    ipc_begin(&b, IPC_LOG);
    ipc_put_u32(&b, (uint32_t)level);
    ipc_put_u32(&b, (uint32_t)about);
    ipc_put_str(&b, text);
    ipc_end(&b);
    /* A call ends only under prog_lock (run_call): a line of a plugin thread goes while its
     * call runs, before the call's end, or to stderr; never after the end. */
    pthread_mutex_lock(&W.prog_lock);
    if (W.in_init || atomic_load(&W.running))
        worker__send_frame(&b);
    else
        log_msg(level, W.name, "%s", text);
    pthread_mutex_unlock(&W.prog_lock);
    ipc_buf_free(&b);
}

static void w_task_log(bgt_task *t, int level, const char *fmt, va_list ap)
{
    (void)t;
    send_log(level, IPC_LOG_TASK, fmt, ap);
}

static void w_plugin_log(struct bgt_plugin *p, int level, const char *fmt, va_list ap)
{
    (void)p;
    send_log(level, IPC_LOG_PLUGIN, fmt, ap);
}

/* bgt_submit: asks the host, which submits with its own connection, and waits for its answer. */
static int w_submit(bgt_task *t, const char *hname, const cJSON *args, char *id_out)
{
    (void)t;
    if (!W.in_init && !atomic_load(&W.running)) {
        log_msg(BGT_LOG_WARNING, W.name, "bgt_submit outside init and outside a call: refused "
                "(an isolated plugin submits through its host, which listens only then)");
        return -EPERM;
    }
    if (!hname || !name_valid(hname) || (args && !cJSON_IsObject(args)))
        return -EINVAL;
    char *text = args ? cJSON_PrintUnformatted(args) : NULL;
    if (args && !text)
        return -ENOMEM;
    if (text && strlen(text) > W.max_args) {
        free(text);
        return -E2BIG;
    }
    pthread_mutex_lock(&W.submit_lock);
    ipc_buf b = {0};
    ipc_begin(&b, IPC_SUBMIT);
    ipc_put_str(&b, hname);
    ipc_put_str(&b, text);
    ipc_end(&b);
    pthread_mutex_lock(&W.recv_lock);
    W.answered = false;
    pthread_mutex_unlock(&W.recv_lock);
    /* As a log line: sent while the call runs (before its end), or not at all. */
    pthread_mutex_lock(&W.prog_lock);
    bool live = W.in_init || atomic_load(&W.running);
    if (live)
        worker__send_frame(&b);
    pthread_mutex_unlock(&W.prog_lock);
    ipc_buf_free(&b);
    free(text);
    if (!live) {
        pthread_mutex_unlock(&W.submit_lock);
        return -EPERM; /* its call ended meanwhile (a plugin thread's submission) */
    }
    pthread_mutex_lock(&W.recv_lock);
    while (!W.answered)
        worker__pump(true);
    int rc = W.answer_rc;
    if (rc == 0 && id_out)
        memcpy(id_out, W.answer_id, BGT_ID_LEN + 1);
    pthread_mutex_unlock(&W.recv_lock);
    pthread_mutex_unlock(&W.submit_lock);
    return rc;
}

void worker__flush_subtasks(wcall *c)
{
    if (c->nsubs == 0)
        return;
    memcpy(c->subs.data + IPC_HEADER, &c->nsubs, sizeof c->nsubs);
    ipc_end(&c->subs);
    worker__send_frame(&c->subs);
    c->nsubs = 0;
}

static int w_add_subtask(bgt_task *t, const cJSON *args)
{
    wcall *c = (wcall *)t;
    if (c->op != IPC_OP_SPLIT || !atomic_load(&W.running))
        return -EPERM;
    if (!args)
        return -EINVAL;
    if (c->added >= W.max_subtasks)
        return -E2BIG;
    char *s = cJSON_PrintUnformatted(args);
    if (!s)
        return -ENOMEM;
    if (strlen(s) > W.max_args) {
        free(s);
        return -E2BIG;
    }
    if (c->nsubs == 0) {
        ipc_begin(&c->subs, IPC_SUBTASKS);
        ipc_put_u32(&c->subs, 0); /* the count, written when the frame is sent */
    }
    ipc_put_str(&c->subs, s);
    free(s);
    c->nsubs++;
    c->added++;
    if (c->subs.len >= SUBTASKS_CHUNK)
        worker__flush_subtasks(c);
    return 0;
}

const bgt_api worker__api = {
    .size = sizeof(bgt_api),
    .abi_major = BGT_ABI_MAJOR,
    .abi_minor = BGT_ABI_MINOR,
    .register_handler = plugin_api_register_handler,
    .register_hook = plugin_api_register_hook,
    .plugin_log = w_plugin_log,
    .task_id = w_task_id,
    .task_handler = w_task_handler,
    .task_attempt = w_task_attempt,
    .task_subtask = w_task_subtask,
    .progress = w_progress,
    .last_progress = w_last_progress,
    .cancelled = w_cancelled,
    .set_result = w_set_result,
    .set_error = w_set_error,
    .task_log = w_task_log,
    .submit = w_submit,
    .add_subtask = w_add_subtask,
};

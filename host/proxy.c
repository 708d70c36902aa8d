/*
 * proxy.c - the handlers the host registers for an isolated plugin. Each
 * run, split or merge call takes a worker process of the plugin, sends it
 * one CALL, and serves its frames through the host's task API until DONE:
 * progress goes to the host's bgt_progress of the real task (which throttles
 * and persists it), logs to the host's log, submissions to the host's
 * bgt_submit, a split's subtasks to bgt_add_subtask, the outcome to
 * bgt_set_error / bgt_set_result. The host's own stop flag (cancel, timeout,
 * lost lease, shutdown) becomes a CANCEL frame, and kill_grace later SIGKILL.
 *
 * A worker is untrusted: a frame that is malformed, too large or not allowed
 * at that point ends the worker (counted as a death), never the host.
 */
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "api.h"
#include "isolate_int.h"
#include "task_api.h"
#include "util.h"

/* The grace a worker gets at shutdown, whatever kill_grace says: the manager releases an
 * attempt whose handler has not returned soon after the grace is over. */
#define SHUTDOWN_KILL_GRACE_S 1.0

/* One call in progress. */
typedef struct call {
    const proxy *px;
    iso_pool *pl;
    iso_slot *s;
    bgt_task *t;
    int op;
    bool done;
    bool heard;           /* a frame of this call arrived */
    uint32_t status;
    char note[1024];      /* the crash note the worker sent, if any */
    char violation[300];  /* what the worker got wrong, if anything */
} call;

__attribute__((format(printf, 2, 3))) static void set_error(bgt_task *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    host_api()->set_error(t, fmt, ap);
    va_end(ap);
}

/* Mark the call's worker as misbehaving: "protocol violation: <what>". Returns -EPROTO. */
__attribute__((format(printf, 2, 3))) static int violation(call *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(c->violation, sizeof c->violation, "protocol violation: ");
    vsnprintf(c->violation + n, sizeof c->violation - (size_t)n, fmt, ap);
    va_end(ap);
    return -EPROTO;
}

static int on_progress(call *c, const ipc_frame *f)
{
    ipc_rd r;
    double cur, total;
    const char *msg;
    char why[200];
    ipc_rd_init(&r, f);
    ipc_get_f64(&r, "current", &cur);
    ipc_get_f64(&r, "total", &total);
    ipc_get_str(&r, "message", true, 4096, &msg);
    if (!ipc_rd_done(&r, why, sizeof why))
        return violation(c, "malformed PROGRESS: %s", why);
    host_api()->progress(c->t, cur, total, msg);
    return 0;
}

/* A SUBTASKS frame: each item goes to the host's bgt_add_subtask. */
static int on_subtasks(call *c, const ipc_frame *f)
{
    if (c->op != IPC_OP_SPLIT)
        return violation(c, "SUBTASKS frame outside a split");
    ipc_rd r;
    uint32_t n;
    char why[200];
    ipc_rd_init(&r, f);
    ipc_get_u32(&r, "count", &n);
    const bgt_config *cfg = c->pl->host->cfg;
    for (uint32_t i = 0; i < n && !r.bad; i++) {
        const char *text;
        if (!ipc_get_str(&r, "subtask args", false, cfg->max_args_bytes, &text))
            break;
        cJSON *item = cJSON_Parse(text);
        int rc = item ? host_api()->add_subtask(c->t, item) : -EINVAL;
        cJSON_Delete(item);
        if (rc < 0)
            return violation(c, "subtask refused by the host: %s", strerror(-rc));
    }
    if (!ipc_rd_done(&r, why, sizeof why))
        return violation(c, "malformed SUBTASKS: %s", why);
    return 0;
}

static int on_done(call *c, const ipc_frame *f)
{
    ipc_rd r;
    uint32_t status;
    const char *error, *result;
    char why[200];
    ipc_rd_init(&r, f);
    ipc_get_u32(&r, "status", &status);
    ipc_get_str(&r, "error", true, 4096, &error);
    ipc_get_str(&r, "result", true, c->pl->host->cfg->max_result_bytes, &result);
    if (!ipc_rd_done(&r, why, sizeof why))
        return violation(c, "malformed DONE: %s", why);
    if (status > BGT_CANCELLED)
        return violation(c, "DONE with status %u, which is no bgt_status", status);
    if (error)
        set_error(c->t, "%s", error);
    if (result) {
        cJSON *res = cJSON_Parse(result);
        int rc = res ? host_api()->set_result(c->t, res) : -EINVAL;
        cJSON_Delete(res);
        if (rc < 0)
            return violation(c, "result refused by the host: %s",
                             rc == -EINVAL ? "not JSON" : strerror(-rc));
    }
    c->status = status;
    c->done = true;
    return 0;
}

/* Handle one frame from the worker during a call. 0, or -EPROTO with c->violation set. */
static int on_frame(call *c, const ipc_frame *f)
{
    char why[300];
    int rc;
    c->heard |= f->type != IPC_NOTE;
    switch (f->type) {
    case IPC_PROGRESS: return on_progress(c, f);
    case IPC_SUBTASKS: return on_subtasks(c, f);
    case IPC_DONE: return on_done(c, f);
    case IPC_LOG:
    case IPC_SUBMIT:
    case IPC_NOTE:
        rc = iso__serve(c->pl, &c->s->conn, c->t, f, c->note, sizeof c->note, why, sizeof why);
        return rc < 0 ? violation(c, "%s", why) : 0;
    default: return violation(c, "unexpected %s frame during a call", ipc_type_name(f->type));
    }
}

/* The CALL frame for this call, queued on the worker's connection. 0, or -E2BIG. */
static int send_call(call *c, const char *args)
{
    const bgt_api *api = host_api();
    double cur = 0, total = 0;
    api->last_progress(c->t, &cur, &total);
    ipc_buf *b = &c->s->scratch;
    ipc_begin(b, IPC_CALL);
    ipc_put_u32(b, (uint32_t)c->op);
    ipc_put_str(b, api->task_id(c->t));
    ipc_put_str(b, api->task_handler(c->t));
    ipc_put_u32(b, api->task_attempt(c->t));
    ipc_put_u32(b, task_api_hook_info(c->t)->attempt);
    ipc_put_u32(b, (uint32_t)(api->task_subtask(c->t) + 1));
    ipc_put_f64(b, cur);
    ipc_put_f64(b, total);
    ipc_put_str(b, args);
    ipc_end(b);
    if (b->len - IPC_HEADER > IPC_TO_WORKER_MAX)
        return -E2BIG;
    ipc_queue(&c->s->conn, b);
    return 0;
}

/*
 * The end of a call whose worker did not answer DONE: it died, broke the protocol, or was
 * killed for ignoring a stop request. The worker is buried; the attempt ends as its handler
 * would have if it had seen the stop, or as a crash (RETRY, or FAILURE when not retriable).
 */
static bgt_status lost_worker(call *c, bool killed, double grace)
{
    char msg[1600];
    pid_t pid = c->s->pid;
    iso__bury(c->pl, c->s, killed, c->violation[0] ? c->violation : NULL, NULL, c->note, msg,
              sizeof msg);
    if (killed) {
        task_stop why = task_api_stop_reason(c->t);
        log_msg(BGT_LOG_WARNING, host_api()->task_id(c->t),
                "worker %d of plugin %s did not stop within %g s of being told to: killed it",
                (int)pid, c->pl->name, grace);
        if (why == TASK_STOP_TIMEOUT) {
            set_error(c->t, "timed out after %gs; killed after %g s (kill_grace)",
                      c->px->def.timeout_s, grace);
            return BGT_FAILED;
        }
        return BGT_CANCELLED;
    }
    set_error(c->t, "%s", msg);
    /* Told to stop before it died: end as the stop says (the death is counted all the same). */
    if (task_api_stop_reason(c->t) != TASK_STOP_NONE)
        return BGT_CANCELLED;
    return (c->px->def.flags & IPC_HF_NOT_RETRIABLE) || c->op == IPC_OP_MERGE ? BGT_FAILED
                                                                             : BGT_RETRY;
}

/*
 * Serve the call on c->s until the worker answers DONE (true), or it dies, breaks the
 * protocol or is killed kill_grace after a stop request it ignored (false; *killed says
 * which, *grace the grace it had).
 */
static bool serve_call(call *c, bool *killed, double *grace)
{
    bool stopping = false;
    double kill_at = 0;
    ipc_conn *conn = &c->s->conn;
    *killed = false;
    for (;;) {
        ipc_frame f;
        int rc = 0;
        while (!c->done && (rc = ipc_next(conn, &f)) == 1)
            if (on_frame(c, &f) < 0)
                break;
        if (c->done)
            return true;
        if (c->violation[0])
            return false;
        if (rc < 0) {
            violation(c, "%s", conn->err);
            return false;
        }
        if (!stopping && host_api()->cancelled(c->t)) {
            stopping = true;
            double g = c->pl->conf.kill_grace_s;
            *grace = task_api_stop_reason(c->t) == TASK_STOP_SHUTDOWN
                         ? fmin(g, SHUTDOWN_KILL_GRACE_S)
                         : g;
            kill_at = mono_s() + *grace;
            ipc_begin(&c->s->scratch, IPC_CANCEL);
            ipc_end(&c->s->scratch);
            ipc_queue(conn, &c->s->scratch);
        }
        double wait = ISO_TICK_S;
        if (stopping) {
            wait = kill_at - mono_s();
            if (wait <= 0) {
                kill(c->s->pid, SIGKILL);
                *killed = true;
                return false;
            }
        }
        size_t had = conn->in_len;
        if (iso__exchange(conn, fmin(wait, ISO_TICK_S)) < 0)
            return false; /* its end closed: it died (or closed it on purpose: it ends too) */
        /* A quiet tick: is the worker still there? A process it forked may hold the socket
         * open after the worker itself died (WNOWAIT: iso__bury reaps it). */
        siginfo_t si = {0};
        if (conn->in_len == had &&
            waitid(P_PID, (id_t)c->s->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
            si.si_pid == c->s->pid)
            return false;
    }
}

static bgt_status proxy_call(const proxy *px, bgt_task *t, int op, const cJSON *input)
{
    char *args = cJSON_PrintUnformatted(input);
    if (!args) {
        set_error(t, "out of memory");
        return BGT_FAILED;
    }
    for (;;) {
        call c = {.px = px, .pl = px->pool, .t = t, .op = op};
        c.s = iso__acquire(c.pl, t);
        if (!c.s) {
            free(args);
            return BGT_CANCELLED; /* told to stop while waiting for a worker */
        }
        if (send_call(&c, args) < 0) {
            free(args);
            iso__release(c.pl, c.s);
            set_error(t, "the %s's input is over %u MiB, more than a worker accepts",
                      op == IPC_OP_MERGE ? "merge" : "call", IPC_TO_WORKER_MAX >> 20);
            return BGT_FAILED;
        }
        bool killed;
        double grace = 0;
        if (serve_call(&c, &killed, &grace)) {
            free(args);
            iso__release(c.pl, c.s);
            return (bgt_status)c.status;
        }
        /* A worker that had died between calls, before it read this one: the call never ran,
         * and goes to another worker without costing the task anything. */
        if (!killed && !c.heard && !c.violation[0] && strncmp(c.note, "between calls", 13) == 0) {
            char msg[1600];
            iso__bury(c.pl, c.s, false, NULL, "between calls", c.note, msg, sizeof msg);
            continue;
        }
        free(args);
        return lost_worker(&c, killed, grace);
    }
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

/*
 * task_api.c - the task side of the host table (task_api.h): what a handler
 * calls on the bgt_task it was given, on the worker that runs it. A
 * subtask's progress counts towards its task's; its cancellation follows its
 * task's.
 */
#include "task_api.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_check.h"
#include "manager_int.h"
#include "util.h"

const char *task_api_id(const bgt_task *t) { return t->id; }
const char *task_api_handler(const bgt_task *t) { return t->handler; }
uint32_t task_api_attempt(const bgt_task *t) { return t->attempt; }
int task_api_subtask(const bgt_task *t) { return t->subtask; }

/* A subtask's progress: its share of its task's. (L) */
static void subtask_progress(bgt_task *st, double current, double total)
{
    bgt_task *pt = st->parent;
    par_sub_progress(pt->par, st->subtask, current, total);
    if (pt->p_dirty)
        metrics_inc(pt->m->met, MC_PROGRESS_COALESCED, 1);
    par_progress(pt->par, &pt->p_current, &pt->p_total);
    if (!pt->p_dirty && mono_s() - pt->p_written_at >= pt->m->cfg->progress_interval_s)
        pthread_cond_signal(&pt->m->write_cond);
    pt->p_dirty = true;
}

void task_api_progress(bgt_task *t, double current, double total, const char *message)
{
    manager *m = t->m;
    if (!isfinite(current) || !isfinite(total))
        return;
    if (t->parent) {
        mgr__lock(m);
        subtask_progress(t, current, total);
        mgr__unlock(m);
        mgr__assert_unlocked();
        hooks_progress(&m->hk, &t->info, current, total, message);
        return;
    }
    char *copy = message ? strndup(message, 1024) : NULL;
    mgr__lock(m);
    if (t->p_dirty)
        metrics_inc(m->met, MC_PROGRESS_COALESCED, 1);
    t->p_current = current;
    t->p_total = total;
    free(t->p_message);
    t->p_message = copy;
    bool first = !t->p_dirty;
    t->p_dirty = true;
    if (first && mono_s() - t->p_written_at >= m->cfg->progress_interval_s)
        pthread_cond_signal(&m->write_cond);
    mgr__unlock(m);
    mgr__assert_unlocked();
    hooks_progress(&m->hk, &t->info, current, total, message);
}

void task_api_last_progress(const bgt_task *t, double *current, double *total)
{
    if (current)
        *current = t->last_current;
    if (total)
        *total = t->last_total;
}

bool task_api_cancelled(const bgt_task *t)
{
    bgt_task *self = (bgt_task *)t;
    if (atomic_load_explicit(&self->stop, memory_order_relaxed) != STOP_NONE)
        return true;
    /* The lease by this host's own clock: checked here, not only by the writer, which may
     * be stuck in a Redis call when the lease runs out. */
    bgt_task *own = self->parent ? self->parent : self;
    double until;
    __atomic_load(&own->lease_until, &until, __ATOMIC_RELAXED);
    if (until > 0 && mono_s() > until) {
        int none = STOP_NONE;
        atomic_compare_exchange_strong(&own->stop, &none, STOP_LOST);
        return true;
    }
    if (!self->parent)
        return false;
    /* A subtask stops with its task, and when fail_fast halted the others. */
    bgt_task *pt = self->parent;
    if (atomic_load_explicit(&pt->stop, memory_order_relaxed) != STOP_NONE)
        return true;
    return par_halted(pt->par);
}

task_stop task_api_stop_reason(const bgt_task *t)
{
    _Static_assert(STOP_CANCEL == (int)TASK_STOP_CANCEL && STOP_LOST == (int)TASK_STOP_LOST &&
                       STOP_TIMEOUT == (int)TASK_STOP_TIMEOUT &&
                       STOP_SHUTDOWN == (int)TASK_STOP_SHUTDOWN,
                   "task_stop follows the STOP_ values");
    if (!task_api_cancelled(t))
        return TASK_STOP_NONE;
    int own = atomic_load(&((bgt_task *)t)->stop);
    if (own != STOP_NONE || !t->parent)
        return own != STOP_NONE ? (task_stop)own : TASK_STOP_LOST;
    int parent = atomic_load(&t->parent->stop);
    return parent != STOP_NONE ? (task_stop)parent : TASK_STOP_CANCEL; /* fail_fast halted it */
}

const bgt_hook_info *task_api_hook_info(const bgt_task *t) { return &t->info; }

void task_api_handed_back(bgt_task *t, bgt_status status)
{
    manager *m = t->m;
    mgr__lock(m);
    t->handed_status = status;
    mgr__runq_push(m, t, JOB_HANDED_BACK);
    mgr__unlock(m);
}

void task_api_handed_back_all(bgt_task *const *ts, const bgt_status *status, size_t n)
{
    for (size_t i = 0; i < n;) {
        manager *m = ts[i]->m;
        size_t k = i;
        while (k < n && ts[k]->m == m)
            k++;
        /* No hop through the run queue when no plugin hook runs at their end. */
        if (mgr__end_handed_here(m, ts + i, status + i, k - i)) {
            i = k;
            continue;
        }
        mgr__lock(m);
        for (; i < n && ts[i]->m == m; i++) {
            ts[i]->handed_status = status[i];
            mgr__runq_push(m, ts[i], JOB_HANDED_BACK);
        }
        mgr__unlock(m);
    }
}

int task_api_set_result(bgt_task *t, const cJSON *result)
{
    if (!result)
        return -EINVAL;
    char why[600];
    if (!json_value_ok(result, why, sizeof why)) {
        log_msg(BGT_LOG_WARNING, t->id, "result refused: %s", why);
        return -EINVAL;
    }
    char *s = cJSON_PrintUnformatted(result);
    if (!s)
        return -ENOMEM;
    if (strlen(s) > t->m->cfg->max_result_bytes) {
        log_msg(BGT_LOG_WARNING, t->id, "result of %zu bytes is over the limit of %zu", strlen(s),
                t->m->cfg->max_result_bytes);
        free(s);
        return -E2BIG;
    }
    free(t->result);
    t->result = s;
    return 0;
}

void task_api_set_error(bgt_task *t, const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        return;
    if (strlen(s) > 4096)
        s[4096] = '\0';
    free(t->error);
    t->error = s;
}

/* Keep a line of t's log for the writer (its task's, for a subtask): "<ts_ms> <level>
 * <subtask|-> <text>", the text cut at TASK_LOG_LINE_MAX bytes. Past tasks.log_lines
 * lines not written yet, the oldest is dropped (and counted). */
static void keep_line(bgt_task *t, int level, const char *text)
{
    manager *m = t->m;
    int max = m->cfg->task_log_lines;
    if (max <= 0 || level > m->task_log_level)
        return;
    static const char *const names[] = {"emerg", "alert", "crit",  "error",
                                        "warning", "notice", "info", "debug"};
    int lv = level < 0 ? 0 : level > 7 ? 7 : level;
    char sub[16] = "-";
    if (t->parent)
        snprintf(sub, sizeof sub, "%d", t->subtask);
    char *line = xasprintf("%lld %s %s %.*s", (long long)now_ms(), names[lv], sub,
                           TASK_LOG_LINE_MAX, text);
    bgt_task *task = t->parent ? t->parent : t;
    mgr__lock(m);
    if (task->nlogs >= max) {
        /* More than max after a write that failed gave its lines back: keep the newest. */
        int drop = task->nlogs - max + 1;
        for (int i = 0; i < drop; i++)
            free(task->logs[i]);
        memmove(task->logs, task->logs + drop, (size_t)(task->nlogs - drop) * sizeof *task->logs);
        task->nlogs -= drop;
        task->logs_dropped += drop;
    }
    if (task->nlogs == task->logs_cap) {
        task->logs_cap = task->logs_cap ? task->logs_cap * 2 : 8;
        task->logs = xrealloc(task->logs, (size_t)task->logs_cap * sizeof *task->logs);
    }
    task->logs[task->nlogs++] = line;
    mgr__unlock(m);
    mgr__assert_unlocked();
}

void task_api_log(bgt_task *t, int level, const char *fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    log_vmsg(level, t->id, fmt, ap);
    if (t->m->cfg->task_log_lines > 0 && level <= t->m->task_log_level) {
        char *text = NULL;
        if (vasprintf(&text, fmt, copy) >= 0) {
            keep_line(t, level, text);
            free(text);
        }
    }
    va_end(copy);
}

void task_api_log_text(bgt_task *t, int level, const char *text)
{
    if (log_enabled(level))
        log_msg(level, t->id, "%s", text);
    keep_line(t, level, text);
}

int task_api_add_subtask(bgt_task *t, const cJSON *args)
{
    if (!t->in_split)
        return -EPERM;
    if (!args)
        return -EINVAL;
    if (t->nsplit >= t->m->cfg->max_subtasks)
        return -E2BIG;
    char why[600];
    if (!json_value_ok(args, why, sizeof why)) {
        log_msg(BGT_LOG_WARNING, t->id, "subtask args refused: %s", why);
        return -EINVAL;
    }
    char *s = cJSON_PrintUnformatted(args);
    if (!s)
        return -ENOMEM;
    if (t->nsplit == t->split_cap) {
        t->split_cap = t->split_cap ? t->split_cap * 2 : 64;
        t->split_items = xrealloc(t->split_items, (size_t)t->split_cap * sizeof *t->split_items);
    }
    t->split_items[t->nsplit++] = s;
    return 0;
}

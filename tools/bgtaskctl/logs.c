/* logs.c - bgtaskctl logs: a task's bgt_log lines, kept with its record, and followed. */
#include "ctl.h"

/* How often --follow reads the new lines. */
#define FOLLOW_POLL_S 0.25

static volatile sig_atomic_t stop_follow;

static void on_signal(int sig)
{
    (void)sig;
    stop_follow = 1;
}

/* One line as text: time, level, attempt[/subtask], message. */
static void print_line(const cJSON *l)
{
    char when[64], who[48], msg[TASK_LOG_PRINT_MAX];
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(l, "subtask");
    if (cJSON_IsNumber(sub))
        snprintf(who, sizeof who, "%.0f/%d", jnum(l, "attempt"), sub->valueint);
    else
        snprintf(who, sizeof who, "%.0f", jnum(l, "attempt"));
    printf("%s  %-7s %-6s %s\n", fmt_time(jnum(l, "ts_ms"), when, sizeof when), jstr(l, "level"),
           who, clean(jstr(l, "message"), sizeof msg - 1, msg, sizeof msg));
}

static void print_lines(const cJSON *page, bool json)
{
    const cJSON *l;
    cJSON_ArrayForEach (l, cJSON_GetObjectItemCaseSensitive(page, "lines")) {
        if (json)
            print_json(l, true);
        else
            print_line(l);
    }
}

/*
 * The lines kept, after --after, at most --limit (default 200; --json: the
 * answer of GET /v1/tasks/<id>/logs); with --follow, every line kept and then
 * the new ones as they are written, until the task has ended (--json: one
 * line object per line).
 */
int cmd_logs(ctl *c, const cmd_opts *o, const char *id)
{
    if (o->limit > 1000)
        return usage_error("--limit needs a number 1..1000 for logs, got %ld", o->limit);
    long long after = o->after;
    cJSON *page = NULL;
    bool ended = false;
    int rc = store_task_logs(c->st, id, after, o->wait ? 1000 : o->limit ? (int)o->limit : 200,
                             &page, &ended);
    if (rc < 0)
        return store_fail(c, c->st, rc, id);
    if (!o->wait) {
        if (c->json) {
            print_json(page, false);
        } else {
            print_lines(page, false);
            double dropped = jnum(page, "dropped");
            if (dropped > 0)
                fprintf(stderr, "(%.0f older line(s) no longer kept)\n", dropped);
        }
        cJSON_Delete(page);
        return EX_OK;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    for (;;) {
        print_lines(page, c->json);
        fflush(stdout);
        int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(page, "lines"));
        after = (long long)jnum(page, "next");
        cJSON_Delete(page);
        page = NULL;
        if (ended && n < 1000)
            return EX_OK; /* its last lines were read with its end */
        if (n < 1000)
            for (double t0 = mono_s(); !stop_follow && mono_s() - t0 < FOLLOW_POLL_S;)
                sleep_s(0.05);
        if (stop_follow)
            return EX_OK;
        rc = store_task_logs(c->st, id, after, 1000, &page, &ended);
        if (rc < 0)
            return store_fail(c, c->st, rc, id);
    }
}

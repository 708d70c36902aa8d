/* task.c - bgtaskctl status, watch, cancel and retry: one task. */
#include "ctl.h"

/* ---- status, watch, cancel ---- */

static void print_field(const char *key, const char *value)
{
    if (value && *value)
        printf("%-10s %s\n", key, value);
}

/*
 * The n subtasks of task id, those in --state from --offset on, at most
 * --limit (all by default): a table of index, state, attempt and message, or
 * with --json an array of {index, state, attempt, message, args, result}, as
 * GET /v1/tasks/<id>/subtasks gives them. A running subtask reads PENDING: its
 * state changes when it ends.
 */
static int print_subtasks(ctl *c, const cmd_opts *o, const char *id, int n)
{
    if (n < 0) {
        fprintf(stderr,
                "bgtaskctl: task %s: its record counts more subtasks than a host allows (%d): "
                "the record is corrupted\n",
                id, VIEW_SUBTASKS_MAX);
        return EX_FAIL;
    }
    sub_rec *subs = NULL;
    int rc = n > 0 ? store_load_subtasks(c->st, id, n, &subs) : 0;
    if (rc < 0)
        return store_fail(c, c->st, rc, id);
    cJSON *page = view_subtask_page(id, subs, n, view_subtask_state(o->state), o->offset, o->limit);
    store_sub_recs_free(subs, n);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(page, "subtasks"), *e;
    if (c->json) {
        print_json(list, false);
    } else if (cJSON_GetArraySize(list) == 0) {
        puts(n == 0 ? "no subtasks (not a parallel task, or not split yet)"
                    : "no subtasks match");
    } else {
        table tb = {.ncols = 4, .head = {"INDEX", "STATE", "ATTEMPT", "MESSAGE"}};
        int room = isatty(STDOUT_FILENO) ? term_columns() - 30 : 100;
        cJSON_ArrayForEach (e, list) {
            char idx[32], att[32], msg[512];
            const char *m = *jstr(e, "message") ? jstr(e, "message") : "-";
            char *row[] = {xstrdup(fmt_num(jnum(e, "index"), idx, sizeof idx)),
                           xstrdup(jstr(e, "state")),
                           xstrdup(fmt_num(jnum(e, "attempt"), att, sizeof att)),
                           xstrdup(clean(m, room > 20 ? (size_t)room : 20, msg, sizeof msg))};
            table_row(&tb, row);
        }
        table_print(&tb);
    }
    fflush(stdout);
    cJSON_Delete(page);
    return EX_OK;
}

int cmd_status(ctl *c, const cmd_opts *o, const char *id)
{
    cJSON *rec = NULL;
    int rc = store_get_task(c->st, id, &rec);
    if (rc < 0)
        return store_fail(c, c->st, rc, id);
    view_task(rec);
    cJSON *hosts = NULL;
    if (strcmp(jstr(rec, "state"), "ONGOING") == 0 && store_list_hosts(c->st, &hosts) == 0)
        view_task_hosts(rec, hosts); /* says so when no live host can run it */
    cJSON_Delete(hosts);
    if (c->json && o->subtasks) {
        /* The table alone, as an array (empty for a task without subtasks). */
        int n = view_subtask_count(rec);
        cJSON_Delete(rec);
        return print_subtasks(c, o, id, n);
    }
    if (c->json) {
        print_json(rec, false);
        cJSON_Delete(rec);
        return EX_OK;
    }
    char buf[1024], a[32], b[32], s[32];
    const char *state = jstr(rec, "state");
    double cur = jnum(rec, "progress_current"), total = jnum(rec, "progress_total");
    print_field("id:", jstr(rec, "id"));
    snprintf(buf, sizeof buf, "%s (%s)", jstr(rec, "handler"), jstr(rec, "kind"));
    print_field("handler:", *jstr(rec, "kind") ? buf : jstr(rec, "handler"));
    bool cancelling = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "cancel_requested"));
    snprintf(buf, sizeof buf, "%s%s", state,
             cancelling && strcmp(state, "ONGOING") == 0 ? " (cancel requested)" : "");
    print_field("state:", buf);
    if (*jstr(rec, "outcome"))
        print_field("outcome:", jstr(rec, "outcome"));
    snprintf(buf, sizeof buf, "%s/%s", fmt_num(jnum(rec, "attempt"), a, sizeof a),
             jnum(rec, "max_attempts") > 0 ? fmt_num(jnum(rec, "max_attempts"), b, sizeof b)
                                           : "default");
    print_field("attempt:", buf);
    print_field("owner:", *jstr(rec, "owner") ? jstr(rec, "owner") : "-");
    snprintf(buf, sizeof buf, "%s/%s", fmt_num(cur, a, sizeof a), fmt_num(total, b, sizeof b));
    if (total > 0)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), " (%.0f%%)",
                 fmin(100, 100 * cur / total));
    print_field("progress:", buf);
    if (jnum(rec, "subtasks") > 0) {
        snprintf(buf, sizeof buf, "%s (%s succeeded, %s failed)",
                 fmt_num(jnum(rec, "subtasks"), s, sizeof s),
                 fmt_num(jnum(rec, "sub_success"), a, sizeof a),
                 fmt_num(jnum(rec, "sub_failure"), b, sizeof b));
        print_field("subtasks:", buf);
    }
    /* A parallel task's own settings; "0" and "" stand for the handler's. */
    if (strcmp(jstr(rec, "parallelism"), "0") != 0)
        print_field("parallel:", jstr(rec, "parallelism"));
    print_field("on fail:", jstr(rec, "on_failure"));
    print_field("warning:", jstr(rec, "warning"));
    print_field("message:", clean(jstr(rec, "message"), 900, buf, sizeof buf));
    print_field("error:", clean(jstr(rec, "error"), 900, buf, sizeof buf));
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(rec, "result");
    if (res && !cJSON_IsNull(res)) {
        char *text = cJSON_PrintUnformatted(res);
        print_field("result:", clean(text, 900, buf, sizeof buf));
        free(text);
    }
    static const char *const times[][2] = {
        {"created_ms", "created:"}, {"started_ms", "started:"}, {"finished_ms", "finished:"}};
    for (int i = 0; i < 3; i++)
        if (jnum(rec, times[i][0]) > 0)
            print_field(times[i][1], fmt_time(jnum(rec, times[i][0]), buf, sizeof buf));
    int n = view_subtask_count(rec);
    cJSON_Delete(rec);
    if (!o->subtasks)
        return EX_OK;
    putchar('\n');
    return print_subtasks(c, o, id, n);
}

int cmd_watch(ctl *c, const cmd_opts *o, const char *id) { return watch_task(c, id, o->subtasks); }

int cmd_cancel(ctl *c, const cmd_opts *o, const char *id)
{
    if (id && (o->handler || o->all || o->dry_run))
        return usage_error("cancel ID takes no --handler, --all or --dry-run");
    if (!id && !o->handler)
        return usage_error("cancel needs a task id, or --handler H --all");
    if (!id && !o->all)
        return usage_error("cancel --handler %s needs --all (so that a mistyped id never "
                           "becomes a bulk cancel)",
                           o->handler);
    if (!id)
        return cmd_cancel_bulk(c, o);
    char state[128] = "";
    int rc = store_cancel(c->st, id, state, sizeof state);
    if (rc < 0)
        return store_fail(c, c->st, rc, id);
    /* For a request, the store answers the owner in state_out. */
    const char *owner = rc == CANCEL_REQUESTED && *state ? state : "another host";
    if (c->json) {
        cJSON *j = view_cancel(id, rc, rc == CANCEL_REQUESTED ? owner : state);
        print_json(j, true);
        cJSON_Delete(j);
    } else if (rc == CANCEL_DONE) {
        puts("cancelled");
    } else if (rc == CANCEL_REQUESTED) {
        printf("cancel requested (running on %s)\n", owner);
    } else {
        printf("already %s\n", state);
    }
    return EX_OK;
}

/*
 * Run a finished task again: a single one that failed or was cancelled as a
 * new attempt, a parallel one's failed and cancelled subtasks. Still running
 * or nothing to run again: EX_FAIL with the store's reason; with --wait,
 * follow the new attempt like watch.
 */
int cmd_retry(ctl *c, const cmd_opts *o, const char *id)
{
    bool filter = o->handler || o->nstates || o->since_ms || o->until_ms || o->dry_run;
    if (id && filter)
        return usage_error("retry ID takes no --handler, --state, --since, --until or --dry-run");
    if (!id && !o->handler)
        return usage_error("retry needs a task id, or --handler H");
    if (!id && o->wait)
        return usage_error("retry --handler: --wait goes with a task id");
    if (!id)
        return cmd_retry_bulk(c, o);
    int n = 0;
    bool parallel = false;
    store *sub = NULL; /* --wait: subscribed before the retry, to see all it starts */
    int code = o->wait ? watch_open(c, id, &sub) : EX_OK;
    if (code != EX_OK)
        return code;
    int rc = store_retry(c->st, id, &n, &parallel);
    if (rc < 0)
        store_free(sub);
    if (rc == -EBUSY || rc == -EALREADY) {
        fprintf(stderr, "bgtaskctl: %s: nothing was changed\n", store_errstr(c->st));
        return EX_FAIL;
    }
    if (rc < 0)
        return store_fail(c, c->st, rc, id);
    if (c->json) {
        cJSON *j = view_retry(id, parallel, n);
        print_json(j, true);
        cJSON_Delete(j);
    } else if (parallel) {
        printf("retrying %d failed subtask(s)\n", n);
        fflush(stdout);
    } else {
        printf("retrying (a new attempt)\n");
        fflush(stdout);
    }
    return o->wait ? watch_follow(c, sub, id, false, 0) : EX_OK;
}

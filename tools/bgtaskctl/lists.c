/* lists.c - bgtaskctl list, hosts, handlers and stats. */
#include "ctl.h"

/* ---- list, hosts, stats ---- */

int cmd_list(ctl *c, const cmd_opts *o, const char *unused)
{
    static const char *const states[] = {"ONGOING", "SUCCESS", "FAILURE", "CANCELLED"};
    const char *state = NULL;
    for (size_t i = 0; o->state && i < 4; i++)
        if (strcasecmp(o->state, states[i]) == 0)
            state = states[i];
    if (o->state && !state)
        return usage_error("--state must be ONGOING, SUCCESS, FAILURE or CANCELLED, got '%s'",
                           o->state);
    if (o->handler && !name_valid(o->handler))
        return usage_error("bad handler name '%s'", o->handler);
    if (o->limit > LIST_PAGE_MAX)
        return usage_error("--limit needs a number 1..%d for list, got %ld", LIST_PAGE_MAX,
                           o->limit);
    cJSON *page = NULL, *t;
    int rc = ops_list(c->st, state, o->handler, o->since, o->until, o->limit, o->cursor, &page);
    if (rc == -EINVAL)
        return usage_error("list: %s", store_errstr(c->st));
    if (rc < 0)
        return store_fail(c, c->st, rc, "");
    if (c->json) {
        print_json(page, false);
        cJSON_Delete(page);
        return EX_OK;
    }
    const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(page, "tasks");
    table tb = {.ncols = 7,
                .head = {"ID", "HANDLER", "STATE", "ATTEMPT", "PROGRESS", "UPDATED", "MESSAGE"}};
    /* On a terminal, the message gets what is left of the line (the rest takes ~93). */
    int room = isatty(STDOUT_FILENO) ? term_columns() - 93 : 60;
    cJSON_ArrayForEach (t, tasks) {
        char att[32], prog[64], age[32], msg[512];
        double cur = jnum(t, "progress_current"), total = jnum(t, "progress_total");
        if (total > 0)
            snprintf(prog, sizeof prog, "%.0f%%", fmin(100, 100 * cur / total));
        else
            fmt_num(cur, prog, sizeof prog);
        double upd = jnum(t, "updated_ms") > 0 ? jnum(t, "updated_ms") : jnum(t, "created_ms");
        const char *m = *jstr(t, "error") ? jstr(t, "error") : jstr(t, "message");
        char *row[] = {xstrdup(jstr(t, "id")),
                       xstrdup(jstr(t, "handler")),
                       xstrdup(jstr(t, "state")),
                       xstrdup(fmt_num(jnum(t, "attempt"), att, sizeof att)),
                       xstrdup(prog),
                       xstrdup(fmt_age(upd, age, sizeof age)),
                       xstrdup(clean(m, room > 20 ? (size_t)room : 20, msg, sizeof msg))};
        table_row(&tb, row);
    }
    table_print(&tb);
    /* The command that shows the next page, on a terminal. */
    const cJSON *next = cJSON_GetObjectItemCaseSensitive(page, "next_cursor");
    if (cJSON_IsString(next) && isatty(STDOUT_FILENO)) {
        printf("more: bgtaskctl list");
        const char *flags[][2] = {{"--state", o->state},   {"--handler", o->handler},
                                  {"--since", o->since},   {"--until", o->until}};
        for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
            if (flags[i][1])
                printf(" %s '%s'", flags[i][0], flags[i][1]);
        if (o->limit)
            printf(" --limit %ld", o->limit);
        printf(" --cursor %s\n", next->valuestring);
    }
    cJSON_Delete(page);
    return EX_OK;
}

int cmd_hosts(ctl *c, const cmd_opts *o, const char *unused)
{
    static const char *const keys[] = {"id",       "machine", "pid",    "version",
                                       "handlers", "workers", "running"};
    cJSON *hosts = NULL;
    int rc = store_list_hosts(c->st, &hosts);
    if (rc < 0)
        return store_fail(c, c->st, rc, "");
    if (c->json) {
        print_json(hosts, false);
    } else {
        print_objects(hosts, 7, keys);
        /* An isolated plugin whose crash breaker is open: its handlers are not claimed. */
        const cJSON *h;
        cJSON_ArrayForEach(h, hosts) {
            if (*jstr(h, "breakers"))
                printf("%s: %s\n", jstr(h, "id"), jstr(h, "breakers"));
        }
        /* Handlers an operator paused: served, their tasks not claimed. */
        cJSON_ArrayForEach(h, hosts) {
            const cJSON *p = cJSON_GetObjectItemCaseSensitive(h, "paused");
            if (cJSON_GetArraySize(p) > 0) {
                char *list = cell_text(p);
                printf("%s: paused: %s\n", jstr(h, "id"), list);
                free(list);
            }
        }
    }
    cJSON_Delete(hosts);
    return EX_OK;
}

/*
 * Every handler a live host serves, with those hosts and their workers, and
 * every other one with tasks waiting (no live host serves it: they wait until
 * one that does starts); each with its queue.
 */
int cmd_handlers(ctl *c, const cmd_opts *o, const char *unused)
{
    cJSON *v = NULL, *e;
    int rc = ops_handlers(c->st, NULL, &v);
    if (rc < 0)
        return store_fail(c, c->st, rc, "");
    if (c->json) {
        print_json(v, false);
        cJSON_Delete(v);
        return EX_OK;
    }
    table tb = {.ncols = 7,
                .head = {"HANDLER", "HOSTS", "WORKERS", "QUEUED", "DUE", "OLDEST DUE",
                         "LAST HOUR (ok/partial/failed/cancelled)"}};
    cJSON_ArrayForEach (e, cJSON_GetObjectItemCaseSensitive(v, "handlers")) {
        const cJSON *hs = cJSON_GetObjectItemCaseSensitive(e, "hosts");
        const cJSON *lh = cJSON_GetObjectItemCaseSensitive(e, "last_hour");
        char num[3][32], age[32], last[128];
        double oldest = jnum(e, "oldest_due_age_ms") / 1000;
        snprintf(age, sizeof age, oldest > 0 ? "%.1fs" : "-", oldest);
        snprintf(last, sizeof last, "%.0f/%.0f/%.0f/%.0f", jnum(lh, "success"),
                 jnum(lh, "partial_success"), jnum(lh, "failure"), jnum(lh, "cancelled"));
        char *row[] = {xstrdup(jstr(e, "handler")),
                       cJSON_GetArraySize(hs) ? cell_text(hs) : xstrdup("none (unserved)"),
                       xstrdup(fmt_num(jnum(e, "workers"), num[0], sizeof num[0])),
                       xstrdup(fmt_num(jnum(e, "queued"), num[1], sizeof num[1])),
                       xstrdup(fmt_num(jnum(e, "due"), num[2], sizeof num[2])),
                       xstrdup(age),
                       xstrdup(last)};
        table_row(&tb, row);
    }
    if (tb.nrows == 0)
        puts("no handlers: no live host, and no task waiting");
    table_print(&tb);
    cJSON_Delete(v);
    return EX_OK;
}

/* The entry of handler name in the array of per-handler counts, or NULL. */
static const cJSON *handler_entry(const cJSON *arr, const char *name)
{
    const cJSON *e;
    cJSON_ArrayForEach (e, arr)
        if (strcmp(jstr(e, "handler"), name) == 0)
            return e;
    return NULL;
}

/*
 * ops_stats' answer: the unserved handlers first ("waiting with no live host:
 * H (3, oldest 2m)"), its plain members as "name: value" lines, the finished
 * tasks by outcome, then each array of objects (the per-handler counts) as a
 * table of the first one's keys.
 */
int cmd_stats(ctl *c, const cmd_opts *o, const char *unused)
{
    cJSON *stats = NULL;
    const cJSON *e, *f;
    int rc = ops_stats(c->st, &c->cfg, &stats);
    if (rc < 0)
        return store_fail(c, c->st, rc, "");
    if (c->json) {
        print_json(stats, false);
        cJSON_Delete(stats);
        return EX_OK;
    }
    const cJSON *handlers = cJSON_GetObjectItemCaseSensitive(stats, "handlers");
    const cJSON *unserved = cJSON_GetObjectItemCaseSensitive(stats, "unserved");
    if (cJSON_GetArraySize(unserved) > 0) {
        printf("waiting with no live host:");
        const char *sep = " ";
        cJSON_ArrayForEach (e, unserved) {
            const cJSON *h = handler_entry(handlers, cJSON_IsString(e) ? e->valuestring : "");
            char num[32], age[32];
            double oldest = jnum(h, "oldest_due_age_ms");
            printf("%s%s (%s%s%s)", sep, cJSON_IsString(e) ? e->valuestring : "",
                   fmt_num(jnum(h, "queued"), num, sizeof num), oldest > 0 ? ", oldest " : "",
                   oldest > 0 ? fmt_age((double)now_ms() - oldest, age, sizeof age) : "");
            sep = ", ";
        }
        printf("\n");
    }
    const cJSON *outcomes = cJSON_GetObjectItemCaseSensitive(stats, "outcomes");
    cJSON_ArrayForEach (e, stats) {
        if (cJSON_IsNumber(e) && strcmp(e->string, "outcomes_since_ms") != 0) {
            char *s = cell_text(e);
            printf("%s: %s\n", e->string, s);
            free(s);
        }
    }
    if (cJSON_IsObject(outcomes)) {
        char when[32];
        printf("finished since %s:",
               fmt_age(jnum(stats, "outcomes_since_ms"), when, sizeof when));
        cJSON_ArrayForEach (e, outcomes)
            printf(" %s %.0f%s", e->string, cJSON_IsNumber(e) ? e->valuedouble : 0,
                   e->next ? "," : "\n");
    }
    cJSON_ArrayForEach (e, stats) {
        const char *keys[TABLE_MAX_COLS];
        int n = 0;
        if (!cJSON_IsArray(e) || strcmp(e->string, "unserved") == 0)
            continue;
        cJSON_ArrayForEach (f, cJSON_GetArrayItem(e, 0))
            if (n < TABLE_MAX_COLS)
                keys[n++] = f->string;
        printf("%s:%s\n", e->string, n ? "" : " none");
        if (n)
            print_objects(e, n, keys);
    }
    cJSON_Delete(stats);
    return EX_OK;
}

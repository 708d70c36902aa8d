/* history.c - bgtaskctl history: the tasks that ended per step, by outcome. */
#include "ctl.h"

/*
 * The answer of ops_history as a table: one row per step (its start, local
 * time), the counts of every handler shown summed; the handlers named above
 * it. --json prints the answer itself (as GET /v1/history).
 */
int cmd_history(ctl *c, const cmd_opts *o, const char *unused)
{
    cJSON *h = NULL;
    int rc = ops_history(c->st, o->handler, o->since, o->until, o->step, &h);
    if (rc == -EINVAL)
        return usage_error("history: %s", store_errstr(c->st));
    if (rc < 0)
        return store_fail(c, c->st, rc, "");
    if (c->json) {
        print_json(h, false);
        cJSON_Delete(h);
        return EX_OK;
    }
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(h, "handlers"), *e;
    double since = jnum(h, "since_ms"), step = jnum(h, "step_s") * 1000;
    int nb = 0;
    printf("handlers:");
    cJSON_ArrayForEach (e, hs) {
        printf(" %s", jstr(e, "handler"));
        nb = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(e, "success"));
    }
    printf("%s\n", cJSON_GetArraySize(hs) ? "" : " none (no task ended in this range)");
    table tb = {.ncols = 5, .head = {"TIME", "SUCCESS", "PARTIAL", "FAILURE", "CANCELLED"}};
    for (int b = 0; b < nb; b++) {
        double n[STORE_OUTCOMES] = {0};
        cJSON_ArrayForEach (e, hs)
            for (int k = 0; k < STORE_OUTCOMES; k++) {
                const cJSON *v = cJSON_GetArrayItem(
                    cJSON_GetObjectItemCaseSensitive(e, store_outcomes[k]), b);
                n[k] += cJSON_IsNumber(v) ? v->valuedouble : 0;
            }
        char when[64], num[STORE_OUTCOMES][32];
        char *row[5] = {xstrdup(fmt_time(since + b * step, when, sizeof when))};
        for (int k = 0; k < STORE_OUTCOMES; k++)
            row[k + 1] = xstrdup(fmt_num(n[k], num[k], sizeof num[k]));
        table_row(&tb, row);
    }
    table_print(&tb);
    cJSON_Delete(h);
    return EX_OK;
}

/*
 * ops.c - bgtaskctl's operator operations: retry, cancel and purge in bulk,
 * purge by id, pause and resume of a handler. What --json prints is what the
 * HTTP API answers (store_bulk's answer, view_pause).
 */
#include "ctl.h"

/* The filter and flags of o as a bulk request of op (strings borrowed from o). */
static bulk_req bulk_of(const cmd_opts *o, bulk_op op)
{
    return (bulk_req){.op = op,
                      .handler = o->handler,
                      .states = o->states,
                      .nstates = (size_t)o->nstates,
                      .since_ms = o->since_ms,
                      .until_ms = o->until_ms,
                      .has_older_than = o->has_older_than,
                      .older_than_ms = o->older_than_ms,
                      .ids = (const char *const *)o->operands,
                      .nids = (size_t)o->noperands,
                      .limit = o->limit,
                      .dry_run = o->dry_run};
}

/* Print the ids of answer a's list (one a line), and say when there are more. */
static void print_ids(const cJSON *a, const char *list, double of)
{
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(a, list), *e;
    cJSON_ArrayForEach (e, ids)
        printf("  %s\n", e->valuestring);
    int shown = cJSON_GetArraySize(ids);
    if (of > shown)
        printf("  (and %.0f more)\n", of - shown);
}

/* Run a bulk request and show its answer: "did" is the count's name in the answer and the
 * verb of the lines ("retried" / "retry"). */
static int run_bulk(ctl *c, const bulk_req *q, const char *did, const char *verb)
{
    cJSON *a = NULL;
    int rc = store_bulk(c->st, q, &a);
    if (rc == -EINVAL) {
        fprintf(stderr, "bgtaskctl: %s: nothing was changed\n", store_errstr(c->st));
        return EX_USAGE;
    }
    if (rc < 0)
        return store_fail(c, c->st, rc, "");
    if (c->json) {
        print_json(a, false);
        cJSON_Delete(a);
        return EX_OK;
    }
    double matched = jnum(a, "matched"), done = jnum(a, did);
    double acted = q->dry_run ? fmin(matched, q->limit > 0 ? q->limit : BULK_LIMIT_DEFAULT) : done;
    if (q->dry_run)
        printf("would %s %.0f task(s)%s\n", verb, acted, acted > 0 ? ":" : "");
    else if (q->op == BULK_CANCEL)
        printf("cancelled %.0f task(s), asked the hosts of %.0f running to stop, of %.0f "
               "matched\n",
               done, jnum(a, "cancel_requested"), matched);
    else
        printf("%s %.0f task(s) of %.0f matched\n", did, done, matched);
    if (q->op == BULK_CANCEL && !q->dry_run)
        acted += jnum(a, "cancel_requested");
    print_ids(a, "task_ids", acted);
    if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(a, "skipped")) > 0) {
        printf("skipped (unknown, or not in a state %s takes):\n", verb);
        print_ids(a, "skipped", 0);
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "truncated")))
        printf("more matched than --limit %ld: run it again to go on\n",
               q->limit > 0 ? q->limit : BULK_LIMIT_DEFAULT);
    cJSON_Delete(a);
    return EX_OK;
}

int cmd_retry_bulk(ctl *c, const cmd_opts *o)
{
    bulk_req q = bulk_of(o, BULK_RETRY);
    return run_bulk(c, &q, "retried", "retry");
}

int cmd_cancel_bulk(ctl *c, const cmd_opts *o)
{
    bulk_req q = bulk_of(o, BULK_CANCEL);
    return run_bulk(c, &q, "cancelled", "cancel");
}

int cmd_purge(ctl *c, const cmd_opts *o, const char *unused)
{
    if (o->noperands > 0 && (o->handler || o->nstates || o->has_older_than))
        return usage_error("purge ID... takes no --handler, --state or --older-than");
    if (o->noperands == 0 && !o->has_older_than)
        return usage_error("purge needs task ids, or --older-than D (0s: every finished task)");
    bulk_req q = bulk_of(o, BULK_PURGE);
    return run_bulk(c, &q, "deleted", "delete");
}

/* pause HANDLER [--reason TEXT], resume HANDLER. */
static int pause_or_resume(ctl *c, const cmd_opts *o, const char *handler, bool pause)
{
    pause_state p;
    int rc = store_pause(c->st, handler, pause, o->reason, &p);
    if (rc == -ENOENT || rc == -EINVAL) {
        fprintf(stderr, "bgtaskctl: %s: nothing was changed\n", store_errstr(c->st));
        return rc == -ENOENT ? EX_NOTFOUND : EX_USAGE;
    }
    if (rc < 0)
        return store_fail(c, c->st, rc, "");
    if (c->json) {
        cJSON *j = view_pause(handler, &p);
        print_json(j, true);
        cJSON_Delete(j);
        return EX_OK;
    }
    char when[64];
    if (p.paused)
        printf("%s %s (since %s%s%s)\n", handler, p.changed ? "paused" : "was paused already",
               fmt_time((double)p.paused_ms, when, sizeof when), *p.reason ? ": " : "", p.reason);
    else
        printf("%s %s\n", handler, p.changed ? "resumed" : "was not paused");
    return EX_OK;
}

int cmd_pause(ctl *c, const cmd_opts *o, const char *handler)
{
    return pause_or_resume(c, o, handler, true);
}

int cmd_resume(ctl *c, const cmd_opts *o, const char *handler)
{
    return pause_or_resume(c, o, handler, false);
}

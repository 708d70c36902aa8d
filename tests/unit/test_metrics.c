/*
 * test_metrics.c - the Prometheus text of metrics.c: counters, the
 * histogram's cumulative buckets, the gauges read from store_stats at scrape
 * time, label escaping, the bound on the handlers those gauges name, and
 * promtool's verdict on all of it when promtool is installed (the
 * integration test runs it on a live host's output too).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "../harness/harness.h"
#include "metrics.h"
#include "view.h"

/* The value of a series in a text, NAN if absent. */
static double value(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return NAN;
}

/* promtool check metrics on text: 0 ok, 1 refused, -1 when promtool is missing
 * (a failure instead when CI is set). */
static int promtool(const char *text)
{
    if (access("/usr/bin/promtool", X_OK) != 0) {
        const char *ci = getenv("CI");
        if (ci && *ci)
            fail_msg("promtool not found and CI is set (Debian package prometheus)");
        return -1;
    }
    char *dir = th_tmpdir("metrics");
    char file[600], cmd[1300];
    snprintf(file, sizeof file, "%s/m.txt", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "/usr/bin/promtool check metrics < '%s'", file);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    char *out = NULL, *err = NULL;
    int rc = th_run(60, argv, &out, &err);
    if (rc != 0)
        fprintf(stderr, "promtool: %s%s\n%s\n", out ? out : "", err ? err : "", text);
    free(out);
    free(err);
    free(dir);
    return rc == 0 ? 0 : 1;
}

static void test_counters_and_histogram(void **state)
{
    metrics *m = metrics_new();
    metrics_declare(m, "idle");
    metrics_started(m, "work");
    metrics_ended(m, "work", "success", 0.05);
    metrics_started(m, "work");
    metrics_ended(m, "work", "failure", 45);
    metrics_started(m, "work");
    metrics_ended(m, "work", "retry", 1000);
    metrics_started(m, "work"); /* still running */
    metrics_inc(m, MC_CLAIMS, 4);
    metrics_inc(m, MC_SSE_EVENTS, 7);
    metrics_set(m, MG_SSE_CLIENTS, 3);
    char *t = metrics_render(m);

    assert_true(value(t, "bgtask_running{handler=\"work\"}") == 1);
    assert_true(value(t, "bgtask_running{handler=\"idle\"}") == 0);
    assert_true(value(t, "bgtask_done_total{handler=\"work\",status=\"success\"}") == 1);
    assert_true(value(t, "bgtask_done_total{handler=\"work\",status=\"failure\"}") == 1);
    assert_true(value(t, "bgtask_done_total{handler=\"idle\",status=\"success\"}") == 0);
    /* Cumulative buckets: 0.05 in all, 45 from 60 up, 1000 only in +Inf. */
    assert_true(value(t, "bgtask_processing_seconds_bucket{handler=\"work\",le=\"0.1\"}") == 1);
    assert_true(value(t, "bgtask_processing_seconds_bucket{handler=\"work\",le=\"30\"}") == 1);
    assert_true(value(t, "bgtask_processing_seconds_bucket{handler=\"work\",le=\"60\"}") == 2);
    assert_true(value(t, "bgtask_processing_seconds_bucket{handler=\"work\",le=\"600\"}") == 2);
    assert_true(value(t, "bgtask_processing_seconds_bucket{handler=\"work\",le=\"+Inf\"}") == 3);
    assert_true(value(t, "bgtask_processing_seconds_count{handler=\"work\"}") == 3);
    assert_true(fabs(value(t, "bgtask_processing_seconds_sum{handler=\"work\"}") - 1045.05) < 1e-6);
    assert_true(value(t, "bgtask_claims_total") == 4);
    assert_true(value(t, "bgtask_sse_events_sent_total") == 7);
    assert_true(value(t, "bgtask_sse_clients") == 3);
    /* Nothing from Redis without a scrape. */
    assert_true(isnan(value(t, "bgtask_redis_up")));
    assert_int_not_equal(promtool(t), 1);
    free(t);
    metrics_free(m);
}

static void test_scrape_gauges(void **state)
{
    metrics *m = metrics_new();
    metrics_declare(m, "served");
    cJSON *stats = cJSON_Parse("{\"handlers\": ["
                               "{\"handler\": \"busy\", \"queued\": 5, \"due\": 2,"
                               " \"oldest_due_age_ms\": 1500},"
                               "{\"handler\": \"we\\\"ird\\\\name\", \"queued\": 1, \"due\": 0}],"
                               " \"finished\": 9, \"hosts\": 2}");
    assert_non_null(stats);
    char *t = metrics_render_scrape(m, stats);
    assert_true(value(t, "bgtask_redis_up") == 1);
    assert_true(value(t, "bgtask_queue_depth{handler=\"busy\"}") == 5);
    assert_true(value(t, "bgtask_queue_due{handler=\"busy\"}") == 2);
    assert_true(value(t, "bgtask_queue_oldest_due_age_seconds{handler=\"busy\"}") == 1.5);
    /* A handler this host serves with an empty queue (no key in Redis) shows 0. */
    assert_true(value(t, "bgtask_queue_depth{handler=\"served\"}") == 0);
    /* A name from Redis is escaped, never trusted to be a plain label value. */
    assert_true(value(t, "bgtask_queue_depth{handler=\"we\\\"ird\\\\name\"}") == 1);
    assert_true(value(t, "bgtask_tasks_finished") == 9);
    assert_true(value(t, "bgtask_hosts") == 2);
    assert_int_not_equal(promtool(t), 1);
    free(t);

    /* Redis down: the host's own metrics and redis_up 0. */
    t = metrics_render_scrape(m, NULL);
    assert_true(value(t, "bgtask_redis_up") == 0);
    assert_true(isnan(value(t, "bgtask_queue_depth{handler=\"served\"}")));
    assert_false(isnan(value(t, "bgtask_claims_total")));
    assert_int_not_equal(promtool(t), 1);
    free(t);
    cJSON_Delete(stats);
    metrics_free(m);
}

/* The number of distinct handler label values of one family in a text. */
static int handler_labels(const char *text, const char *family)
{
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s{handler=\"", family);
    int n = 0;
    for (const char *p = strstr(text, prefix); p; p = strstr(p + 1, prefix))
        n++; /* a family has one sample per handler */
    return n;
}

/*
 * Thousands of handler names that clients invented (each with a queue in Redis): the scrape
 * names the handlers this host serves and the deepest 10 others; the rest are summed into
 * handler="other", which a handler that is really named "other" joins.
 */
static void test_handler_cap(void **state)
{
    metrics *m = metrics_new();
    metrics_declare(m, "served.a");
    metrics_declare(m, "served.b");
    cJSON *stats = cJSON_CreateObject();
    cJSON *hs = cJSON_AddArrayToObject(stats, "handlers");
    double total = 0;
    for (int i = 0; i < 5000; i++) {
        char name[32];
        snprintf(name, sizeof name, "invented-%d", i);
        cJSON *h = cJSON_CreateObject();
        cJSON_AddStringToObject(h, "handler", name);
        cJSON_AddNumberToObject(h, "queued", i % 100);
        cJSON_AddNumberToObject(h, "due", i % 2);
        cJSON_AddNumberToObject(h, "oldest_due_age_ms", i);
        cJSON_AddItemToArray(hs, h);
        total += i % 100;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "handler", "other");
    cJSON_AddNumberToObject(o, "queued", 1000); /* deeper than any, summed all the same */
    cJSON_AddNumberToObject(o, "due", 0);
    cJSON_AddItemToArray(hs, o);
    total += 1000;
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "handler", "served.b");
    cJSON_AddNumberToObject(b, "queued", 3);
    cJSON_AddNumberToObject(b, "due", 0);
    cJSON_AddItemToArray(hs, b);

    metrics_cap_handlers(m, stats, 10);
    assert_int_equal(cJSON_GetArraySize(hs), 1 + 10 + 1); /* served.a has no queue in Redis */
    char *t = metrics_render_scrape(m, stats);
    assert_int_equal(handler_labels(t, "bgtask_queue_depth"), 13);
    assert_int_equal(handler_labels(t, "bgtask_queue_due"), 13);
    assert_true(value(t, "bgtask_queue_depth{handler=\"served.a\"}") == 0);
    assert_true(value(t, "bgtask_queue_depth{handler=\"served.b\"}") == 3);
    /* The deepest invented ones (99 each) keep their series, the smallest names first. */
    assert_true(value(t, "bgtask_queue_depth{handler=\"invented-1099\"}") == 99);
    assert_true(isnan(value(t, "bgtask_queue_depth{handler=\"invented-1\"}")));
    double shown = 0;
    for (const char *p = strstr(t, "bgtask_queue_depth{handler=\"invented-"); p;
         p = strstr(p + 1, "bgtask_queue_depth{handler=\"invented-"))
        shown += strtod(strchr(p, ' ') + 1, NULL);
    assert_true(shown == 10 * 99);
    assert_true(value(t, "bgtask_queue_depth{handler=\"other\"}") == total - shown);
    assert_true(value(t, "bgtask_queue_oldest_due_age_seconds{handler=\"other\"}") == 4.999);
    assert_true(strlen(t) < 16384);
    assert_int_not_equal(promtool(t), 1);
    free(t);

    /* Under the bound, nothing changes. */
    cJSON *few = cJSON_Parse("{\"handlers\": [{\"handler\": \"x\", \"queued\": 1, \"due\": 1}]}");
    metrics_cap_handlers(m, few, 10);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(few, "handlers")), 1);
    cJSON_Delete(few);
    cJSON_Delete(stats);
    metrics_free(m);
}

/*
 * bgtask_unserved_handler: the queued tasks of each handler no live host serves, 0 for the
 * served ones; past the bound, the unserved of the handlers left out are summed into
 * "other" with the rest.
 */
static void test_unserved_gauge(void **state)
{
    metrics *m = metrics_new();
    metrics_declare(m, "demo.echo");
    cJSON *hosts = cJSON_Parse("[{\"id\": \"h1\", \"handlers\": [\"demo.echo\"]}]");
    cJSON *stats = cJSON_Parse("{\"handlers\": ["
                               "{\"handler\": \"demo.echo\", \"queued\": 4, \"due\": 1},"
                               "{\"handler\": \"nobody.a\", \"queued\": 7, \"due\": 7},"
                               "{\"handler\": \"nobody.b\", \"queued\": 2, \"due\": 2},"
                               "{\"handler\": \"nobody.c\", \"queued\": 1, \"due\": 1}],"
                               "\"finished\": 0, \"hosts\": 1}");
    view_mark_unserved(stats, hosts);
    metrics_cap_handlers(m, stats, 1);
    char *t = metrics_render_scrape(m, stats);
    assert_true(value(t, "bgtask_unserved_handler{handler=\"demo.echo\"}") == 0);
    assert_true(value(t, "bgtask_unserved_handler{handler=\"nobody.a\"}") == 7);
    assert_true(isnan(value(t, "bgtask_unserved_handler{handler=\"nobody.b\"}")));
    assert_true(value(t, "bgtask_unserved_handler{handler=\"other\"}") == 3);
    assert_non_null(strstr(t, "# TYPE bgtask_unserved_handler gauge\n"));
    assert_int_not_equal(promtool(t), 1);
    free(t);
    cJSON_Delete(stats);
    cJSON_Delete(hosts);
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters_and_histogram),
        cmocka_unit_test(test_scrape_gauges),
        cmocka_unit_test(test_handler_cap),
        cmocka_unit_test(test_unserved_gauge),
    };
    int rc = cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
    th_cleanup();
    return rc;
}

/*
 * test_events.c - the events module: names and which are terminal; strings
 * and numbers printed byte for byte as cJSON_PrintUnformatted prints them
 * (the wire format clients read); each payload against the same payload
 * built with cJSON (a head and a body joined by ev_payload, as readers of
 * protocol 2 join them); bodies that are the kind's default are empty; a
 * record turned into the event that stands for it.
 */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "events.h"

/* The wire names, spelled out: what clients depend on. */
static const char *const wire[EV_COUNT] = {
    [EV_UPDATED] = "bgtask_updated",
    [EV_DONE] = "bgtask_done",
    [EV_FAILED] = "bgtask_failed",
    [EV_CANCELLED] = "bgtask_cancelled",
    [EV_PARTIAL_SUCCESS] = "bgtask_partial_success",
};

static void test_names(void **state)
{
    for (int k = 0; k < EV_COUNT; k++) {
        assert_string_equal(ev_name((ev_kind)k), wire[k]);
        assert_int_equal(ev_kind_of(wire[k]), k);
        assert_int_equal(ev_terminal((ev_kind)k), k != EV_UPDATED);
        assert_int_equal(ev_name_terminal(wire[k]), k != EV_UPDATED);
    }
    assert_int_equal(ev_kind_of("bgtask_unknown"), -1);
    assert_int_equal(ev_kind_of(NULL), -1);
    assert_false(ev_name_terminal("server_close"));
    assert_int_equal(ev_kind_of_state("SUCCESS"), EV_DONE);
    assert_int_equal(ev_kind_of_state("FAILURE"), EV_FAILED);
    assert_int_equal(ev_kind_of_state("CANCELLED"), EV_CANCELLED);
    assert_int_equal(ev_kind_of_state("ONGOING"), -1);
    assert_string_equal(ev_stream_end_name(), "server_close");
}

/* What cJSON prints for item (which this takes). */
static char *cjson_text(cJSON *item)
{
    char *s = cJSON_PrintUnformatted(item);
    cJSON_Delete(item);
    assert_non_null(s);
    return s;
}

static void check_number(double d)
{
    char *want = cjson_text(cJSON_CreateNumber(d));
    ev_buf b = {0};
    ev_json_number(&b, d);
    if (strcmp(b.s, want) != 0)
        fail_msg("%.17g: printed %s, cJSON prints %s", d, b.s, want);
    free(want);
    ev_buf_free(&b);
}

static void test_numbers_as_cjson(void **state)
{
    static const double fixed[] = {
        0,
        -0.0,
        1,
        -1,
        0.5,
        0.1,
        1.0 / 3,
        2.0 / 3,
        123.456,
        -7.25,
        1e-7,
        1.5e-300,
        2147483647,
        2147483648.0,
        -2147483648,
        -2147483649,
        1e15 - 1,
        1e15,
        1e15 + 1,
        1e16,
        1e17,
        1e21,
        1e300,
        DBL_MAX,
        DBL_MIN,
        4.9e-324,
        1795871183540.0,
        1795871183540.5,
        0.30000000000000004,
        100,
        99.99999999999999,
        NAN,
        INFINITY,
        -INFINITY,
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        check_number(fixed[i]);
    /* Fractions and magnitudes over the whole range, from a fixed seed. */
    srandom(20240611);
    for (int i = 0; i < 20000; i++) {
        double mant = (double)random() / (double)RAND_MAX;
        int exp = (int)(random() % 80) - 40;
        double d = ldexp(mant, exp) * (random() % 2 ? 1 : -1);
        check_number(d);
        check_number(floor(d * 1000));
        check_number((double)(random() % 1000) / (double)(1 + random() % 997));
    }
}

static void test_strings_as_cjson(void **state)
{
    char s[512];
    /* Every byte value once, and each next to plain text. */
    for (int c = 1; c < 256; c++) {
        snprintf(s, sizeof s, "a%cb%c", (char)c, (char)c);
        char *want = cjson_text(cJSON_CreateString(s));
        ev_buf b = {0};
        ev_json_string(&b, s);
        if (strcmp(b.s, want) != 0)
            fail_msg("byte %d: printed %s, cJSON prints %s", c, b.s, want);
        free(want);
        ev_buf_free(&b);
    }
    static const char *const texts[] = {
        "", "plain", "quote \" and \\ back", "\t\r\n\b\f", "ünïcödé ✓", "\x01\x1f\x7f", "end\\"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char *want = cjson_text(cJSON_CreateString(texts[i]));
        ev_buf b = {0};
        ev_json_string(&b, texts[i]);
        assert_string_equal(b.s, want);
        free(want);
        ev_buf_free(&b);
    }
    ev_buf b = {0};
    ev_json_string(&b, NULL);
    assert_string_equal(b.s, "\"\"");
    ev_buf_free(&b);
}

/* The fields every event starts with, as cJSON would build them. */
static cJSON *base(const ev_head *h, const char *message)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "task_id", h->task_id);
    cJSON_AddStringToObject(o, "handler", h->handler);
    cJSON_AddNumberToObject(o, "attempt", h->attempt);
    cJSON_AddNumberToObject(o, "ts_ms", (double)h->ts_ms);
    cJSON_AddStringToObject(o, "message", message ? message : "");
    return o;
}

static const ev_head head = {"0f24f8b9-7247-420b-9b6c-d691459865cf", "demo.sleep", 3,
                             1795871183540};

/* The payload of kind k with the body at off in b: head + body, as a reader joins them. */
static char *joined(const ev_buf *b, size_t off, ev_kind k)
{
    ev_buf p = {0};
    size_t at = ev_payload(&p, &head, k, b->s + off, strlen(b->s + off));
    char *s = strdup(p.s + at);
    ev_buf_free(&p);
    return s;
}

static void assert_joined(const ev_buf *b, size_t off, ev_kind k, const char *want)
{
    char *got = joined(b, off, k);
    assert_string_equal(got, want);
    free(got);
}

static void test_progress_payloads(void **state)
{
    ev_buf b = {0};
    /* Several payloads in one buffer: each stays readable at its offset. */
    size_t o1 = ev_body_progress(&b, 2, 5, "step \"2\"/5");
    size_t o2 = ev_body_progress(&b, 0.25, 1e6, NULL);
    size_t o3 = ev_body_progress_sub_open(&b, 7.5, 10, "7 of 10 subtasks done", 10, 6, 1);
    ev_progress_sub_running(&b, 4, 0.5);
    ev_progress_sub_running(&b, 9, 1.0 / 3);
    ev_body_progress_sub_close(&b);
    size_t o4 = ev_body_progress_sub_open(&b, 0, 3, "", 3, 0, 0);
    ev_body_progress_sub_close(&b);

    cJSON *w = base(&head, "step \"2\"/5");
    cJSON_AddNumberToObject(w, "current_progress", 2);
    cJSON_AddNumberToObject(w, "total_progress", 5);
    char *want = cjson_text(w);
    assert_joined(&b, o1, EV_UPDATED, want);
    free(want);

    w = base(&head, NULL);
    cJSON_AddNumberToObject(w, "current_progress", 0.25);
    cJSON_AddNumberToObject(w, "total_progress", 1e6);
    want = cjson_text(w);
    assert_joined(&b, o2, EV_UPDATED, want);
    free(want);

    w = base(&head, "7 of 10 subtasks done");
    cJSON_AddNumberToObject(w, "current_progress", 7.5);
    cJSON_AddNumberToObject(w, "total_progress", 10);
    cJSON *s = cJSON_AddObjectToObject(w, "subtasks");
    cJSON_AddNumberToObject(s, "total", 10);
    cJSON_AddNumberToObject(s, "succeeded", 6);
    cJSON_AddNumberToObject(s, "failed", 1);
    cJSON *run = cJSON_AddArrayToObject(s, "running");
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "index", 4);
    cJSON_AddNumberToObject(r, "progress", 0.5);
    cJSON_AddItemToArray(run, r);
    r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "index", 9);
    cJSON_AddNumberToObject(r, "progress", 1.0 / 3);
    cJSON_AddItemToArray(run, r);
    want = cjson_text(w);
    assert_joined(&b, o3, EV_UPDATED, want);
    free(want);

    w = base(&head, "");
    cJSON_AddNumberToObject(w, "current_progress", 0);
    cJSON_AddNumberToObject(w, "total_progress", 3);
    s = cJSON_AddObjectToObject(w, "subtasks");
    cJSON_AddNumberToObject(s, "total", 3);
    cJSON_AddNumberToObject(s, "succeeded", 0);
    cJSON_AddNumberToObject(s, "failed", 0);
    cJSON_AddArrayToObject(s, "running");
    want = cjson_text(w);
    assert_joined(&b, o4, EV_UPDATED, want);
    free(want);

    /* A reset buffer starts over and keeps its memory. */
    size_t cap = b.cap;
    ev_buf_reset(&b);
    assert_int_equal(ev_body_progress(&b, 1, 1, "x"), 0);
    assert_int_equal(b.cap, cap);
    ev_buf_free(&b);
}

static void test_ending_payloads(void **state)
{
    ev_buf b = {0};
    const char *errors[] = {"subtask 3: boom", "subtask 7: \"bad\" input"};
    size_t done =
        ev_body_ending(&b, EV_DONE, "Task finished", "{\"n\":1,\"s\":\"x\"}", NULL, 0, 0, 0);
    size_t bare = ev_body_ending(&b, EV_DONE, "Task finished", NULL, NULL, 0, 0, 0);
    size_t part = ev_body_ending(&b, EV_PARTIAL_SUCCESS, "8 of 10 subtasks succeeded, 2 failed",
                                 "{\"succeeded\":8,\"failed\":2}", errors, 2, 0, 0);
    size_t failed = ev_body_ending(&b, EV_FAILED, "boom", "{\"ignored\":1}", NULL, 0, 0, 0);
    size_t cancelled = ev_body_ending(&b, EV_CANCELLED, "Cancelled", NULL, NULL, 0, 0, 0);
    size_t stopped = ev_body_ending(&b, EV_CANCELLED, "Cancelled (3 of 9 subtasks had finished)",
                                    NULL, NULL, 0, 0, 0);
    size_t retry = ev_body_ending(&b, EV_UPDATED, "attempt 3 failed: x; retrying in 1.0s", NULL,
                                  NULL, 0, 2, 5);

    cJSON *w = base(&head, "Task finished");
    cJSON_AddItemToObject(w, "result", cJSON_Parse("{\"n\":1,\"s\":\"x\"}"));
    char *want = cjson_text(w);
    assert_joined(&b, done, EV_DONE, want);
    free(want);

    /* The defaults are not kept: the body is empty, and the payload says them. */
    assert_string_equal(b.s + bare, "");
    assert_string_equal(b.s + cancelled, "");
    want = cjson_text(base(&head, "Task finished"));
    assert_joined(&b, bare, EV_DONE, want);
    free(want);
    want = cjson_text(base(&head, "Cancelled"));
    assert_joined(&b, cancelled, EV_CANCELLED, want);
    free(want);
    want = cjson_text(base(&head, "Cancelled (3 of 9 subtasks had finished)"));
    assert_joined(&b, stopped, EV_CANCELLED, want);
    free(want);

    w = base(&head, "8 of 10 subtasks succeeded, 2 failed");
    cJSON *e = cJSON_AddArrayToObject(w, "errors");
    cJSON_AddItemToArray(e, cJSON_CreateString(errors[0]));
    cJSON_AddItemToArray(e, cJSON_CreateString(errors[1]));
    cJSON_AddItemToObject(w, "result", cJSON_Parse("{\"succeeded\":8,\"failed\":2}"));
    want = cjson_text(w);
    assert_joined(&b, part, EV_PARTIAL_SUCCESS, want);
    free(want);

    want = cjson_text(base(&head, "boom"));
    assert_joined(&b, failed, EV_FAILED, want);
    free(want);
    /* A retry's bgtask_updated carries the progress, as every one does (issue 8, item 12). */
    w = base(&head, "attempt 3 failed: x; retrying in 1.0s");
    cJSON_AddNumberToObject(w, "current_progress", 2);
    cJSON_AddNumberToObject(w, "total_progress", 5);
    want = cjson_text(w);
    assert_joined(&b, retry, EV_UPDATED, want);
    free(want);
    ev_buf_free(&b);
}

/* The event of a record given as JSON text. */
static ev_kind of_record(const char *json, cJSON **payload)
{
    cJSON *rec = cJSON_Parse(json);
    assert_non_null(rec);
    ev_buf b = {0};
    size_t off;
    ev_kind k = ev_of_record(&b, rec, &off);
    *payload = cJSON_Parse(b.s + off);
    assert_non_null(*payload);
    ev_buf_free(&b);
    cJSON_Delete(rec);
    return k;
}

static void assert_payload(const cJSON *got, const char *want_json)
{
    cJSON *want = cJSON_Parse(want_json);
    assert_non_null(want);
    if (!cJSON_Compare(got, want, true)) {
        char *g = cJSON_PrintUnformatted(got);
        fail_msg("payload %s, want %s", g, want_json);
    }
    cJSON_Delete(want);
}

/* An empty body (the kind's default) is an empty text, also as the first in a buffer whose
 * memory was never written (the writer's first batch). */
static void test_empty_body_first(void **state)
{
    ev_buf b = {.s = malloc(64), .cap = 64};
    assert_non_null(b.s);
    memset(b.s, 't', 64);
    size_t off = ev_body_ending(&b, EV_DONE, "Task finished", NULL, NULL, 0, 0, 0);
    size_t next = ev_buf_add(&b, "x");
    assert_string_equal(b.s + off, "");
    assert_string_equal(b.s + next, "x");
    ev_buf_free(&b);
}

static void test_record_events(void **state)
{
    cJSON *p;
    assert_int_equal(
        of_record("{\"id\":\"i\",\"handler\":\"h\",\"state\":\"ONGOING\",\"attempt\":2,"
                  "\"updated_ms\":50,\"finished_ms\":0,\"message\":\"step 2/5\","
                  "\"progress_current\":2,\"progress_total\":5}",
                  &p),
        EV_UPDATED);
    assert_payload(p, "{\"task_id\":\"i\",\"handler\":\"h\",\"attempt\":2,\"ts_ms\":50,"
                      "\"message\":\"step 2/5\",\"current_progress\":2,\"total_progress\":5}");
    cJSON_Delete(p);

    assert_int_equal(
        of_record("{\"id\":\"i\",\"handler\":\"h\",\"state\":\"SUCCESS\",\"attempt\":1,"
                  "\"updated_ms\":50,\"finished_ms\":60,\"message\":\"Task finished\","
                  "\"result\":{\"ok\":true},\"sub_failure\":0}",
                  &p),
        EV_DONE);
    assert_payload(p, "{\"task_id\":\"i\",\"handler\":\"h\",\"attempt\":1,\"ts_ms\":60,"
                      "\"message\":\"Task finished\",\"result\":{\"ok\":true}}");
    cJSON_Delete(p);

    /* A partial success: the record keeps no errors list. */
    assert_int_equal(
        of_record("{\"id\":\"i\",\"handler\":\"h\",\"state\":\"SUCCESS\",\"attempt\":1,"
                  "\"updated_ms\":50,\"finished_ms\":60,\"message\":\"m\","
                  "\"result\":null,\"sub_failure\":2}",
                  &p),
        EV_PARTIAL_SUCCESS);
    assert_payload(p, "{\"task_id\":\"i\",\"handler\":\"h\",\"attempt\":1,\"ts_ms\":60,"
                      "\"message\":\"m\",\"errors\":[]}");
    cJSON_Delete(p);

    assert_int_equal(
        of_record("{\"id\":\"i\",\"handler\":\"h\",\"state\":\"FAILURE\",\"attempt\":3,"
                  "\"updated_ms\":50,\"finished_ms\":0,\"message\":\"boom\","
                  "\"result\":{\"x\":1}}",
                  &p),
        EV_FAILED);
    /* No finished_ms: its last update stands in. */
    assert_payload(p, "{\"task_id\":\"i\",\"handler\":\"h\",\"attempt\":3,\"ts_ms\":50,"
                      "\"message\":\"boom\"}");
    cJSON_Delete(p);

    assert_int_equal(of_record("{\"id\":\"i\",\"state\":\"CANCELLED\"}", &p), EV_CANCELLED);
    assert_payload(p, "{\"task_id\":\"i\",\"handler\":\"\",\"attempt\":0,\"ts_ms\":0,"
                      "\"message\":\"\"}");
    cJSON_Delete(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_numbers_as_cjson),
        cmocka_unit_test(test_strings_as_cjson),
        cmocka_unit_test(test_progress_payloads),
        cmocka_unit_test(test_ending_payloads),
        cmocka_unit_test(test_empty_body_first),
        cmocka_unit_test(test_record_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

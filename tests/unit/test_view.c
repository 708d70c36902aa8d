/*
 * test_view.c - what clients are shown of tasks and handlers (host/view.c):
 * a record's error only when it failed, the warning for a task no live host
 * can run, the handlers of live hosts and of queues, and the unserved count
 * the metrics export. Pure functions of the store's answers: no Redis.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "view.h"

static cJSON *parse(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    return j;
}

/* The JSON of v without spaces, compared with want (also without spaces). */
static void assert_json(const cJSON *v, const char *want)
{
    char *got = cJSON_PrintUnformatted(v);
    cJSON *w = parse(want);
    char *norm = cJSON_PrintUnformatted(w);
    if (strcmp(got, norm) != 0)
        fail_msg("got %s\nwant %s", got, norm);
    free(got);
    free(norm);
    cJSON_Delete(w);
}

static void test_error_only_on_failure(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"{\"state\":\"SUCCESS\",\"error\":\"attempt 1 failed\"}", "{\"state\":\"SUCCESS\",\"error\":null}"},
        {"{\"state\":\"CANCELLED\",\"error\":\"x\"}", "{\"state\":\"CANCELLED\",\"error\":null}"},
        {"{\"state\":\"ONGOING\",\"error\":\"retrying\"}", "{\"state\":\"ONGOING\",\"error\":null}"},
        {"{\"state\":\"FAILURE\",\"error\":\"it broke\"}", "{\"state\":\"FAILURE\",\"error\":\"it broke\"}"},
        {"{\"state\":\"FAILURE\",\"error\":null}", "{\"state\":\"FAILURE\",\"error\":null}"},
        {"{\"state\":\"SUCCESS\"}", "{\"state\":\"SUCCESS\"}"},
        {"{\"error\":\"no state\"}", "{\"error\":null}"},
    };
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *rec = parse(cases[i].in);
        view_task(rec);
        assert_json(rec, cases[i].out);
        cJSON_Delete(rec);
        cJSON_AddItemToArray(arr, parse(cases[i].in));
    }
    view_tasks(arr);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_json(cJSON_GetArrayItem(arr, (int)i), cases[i].out);
    cJSON_Delete(arr);
}

static const char hosts_text[] =
    "[{\"id\":\"a\",\"handlers\":[\"demo.echo\",\"demo.sleep\"],\"workers\":8},"
    " {\"id\":\"b\",\"handlers\":[\"demo.echo\"],\"workers\":2}]";

static void test_unserved_warning(void **state)
{
    cJSON *hosts = parse(hosts_text);
    assert_true(view_served(hosts, "demo.echo"));
    assert_true(view_served(hosts, "demo.sleep"));
    assert_false(view_served(hosts, "demo"));
    assert_false(view_served(hosts, "nobody.serves"));
    cJSON *none = cJSON_CreateArray();
    assert_false(view_served(none, "demo.echo"));

    /* An unfinished task of a handler no live host serves says so; nothing else does. */
    cJSON *rec = parse("{\"state\":\"ONGOING\",\"handler\":\"nobody.serves\"}");
    view_task_hosts(rec, hosts);
    const cJSON *w = cJSON_GetObjectItem(rec, "warning");
    assert_true(cJSON_IsString(w));
    assert_non_null(strstr(w->valuestring, "no live host serves handler nobody.serves"));
    view_task_hosts(rec, hosts); /* once, however often */
    assert_int_equal(cJSON_GetArraySize(rec), 3);
    cJSON_Delete(rec);
    static const char *const quiet[] = {
        "{\"state\":\"ONGOING\",\"handler\":\"demo.echo\"}",
        "{\"state\":\"SUCCESS\",\"handler\":\"nobody.serves\"}",
        "{\"state\":\"FAILURE\",\"handler\":\"nobody.serves\"}",
    };
    for (size_t i = 0; i < sizeof quiet / sizeof quiet[0]; i++) {
        rec = parse(quiet[i]);
        view_task_hosts(rec, hosts);
        assert_null(cJSON_GetObjectItem(rec, "warning"));
        cJSON_Delete(rec);
    }
    char *text = view_unserved_warning("x.y");
    assert_string_equal(text, "no live host serves handler x.y: the task waits until one that "
                              "does is started");
    free(text);
    cJSON_Delete(hosts);
    cJSON_Delete(none);
}

static void test_handlers(void **state)
{
    cJSON *hosts = parse(hosts_text);
    cJSON *stats = parse("{\"handlers\":["
                         "{\"handler\":\"zz.nobody\",\"queued\":3,\"due\":2,\"oldest_due_age_ms\":1500},"
                         "{\"handler\":\"demo.echo\",\"queued\":5,\"due\":1,\"oldest_due_age_ms\":10},"
                         "{\"handler\":\"aa.gone\",\"queued\":0,\"due\":0,\"oldest_due_age_ms\":0}],"
                         "\"finished\":4,\"hosts\":2}");
    /* The last hour's history: demo.echo's counts (two buckets summed), and a handler that
     * is neither served nor waited for (not listed for its history alone). */
    cJSON *hist = parse("{\"since_ms\":0,\"until_ms\":60000,\"step_s\":60,\"handlers\":["
                        "{\"handler\":\"demo.echo\",\"success\":[2,3],\"partial_success\":[0,1],"
                        "\"failure\":[1,0],\"cancelled\":[0,0]},"
                        "{\"handler\":\"old.one\",\"success\":[9,9],\"partial_success\":[0,0],"
                        "\"failure\":[0,0],\"cancelled\":[0,0]}]}");
    cJSON *v = view_handlers(hosts, stats, hist);
#define NOT_PAUSED "\"paused\":false,\"paused_ms\":0,\"reason\":\"\","
#define ZERO_HOUR "\"last_hour\":{\"success\":0,\"partial_success\":0,\"failure\":0,\"cancelled\":0}"
    assert_json(v, "{\"handlers\":["
                   "{\"handler\":\"demo.echo\",\"hosts\":[\"a\",\"b\"],\"workers\":10," NOT_PAUSED "\"queued\":5,"
                   "\"due\":1,\"oldest_due_age_ms\":10,\"unserved\":false,\"last_hour\":"
                   "{\"success\":5,\"partial_success\":1,\"failure\":1,\"cancelled\":0}},"
                   "{\"handler\":\"demo.sleep\",\"hosts\":[\"a\"],\"workers\":8," NOT_PAUSED "\"queued\":0,"
                   "\"due\":0,\"oldest_due_age_ms\":0,\"unserved\":false," ZERO_HOUR "},"
                   "{\"handler\":\"zz.nobody\",\"hosts\":[],\"workers\":0," NOT_PAUSED "\"queued\":3,\"due\":2,"
                   "\"oldest_due_age_ms\":1500,\"unserved\":true," ZERO_HOUR "}],"
                   "\"unserved\":[\"zz.nobody\"]}");
    cJSON_Delete(v);

    /* No hosts and no queues: no handlers. */
    cJSON *empty = cJSON_CreateArray(), *nostats = parse("{\"handlers\":[]}");
    v = view_handlers(empty, nostats, NULL);
    assert_json(v, "{\"handlers\":[],\"unserved\":[]}");
    cJSON_Delete(v);

    /* stats: the unserved handlers by name, the outcomes summed over the handlers; null
     * without a history. */
    cJSON *st2 = cJSON_Duplicate(stats, true);
    view_stats(st2, hosts, hist);
    assert_json(cJSON_GetObjectItem(st2, "unserved"), "[\"zz.nobody\"]");
    assert_json(cJSON_GetObjectItem(st2, "outcomes"),
                "{\"success\":23,\"partial_success\":1,\"failure\":1,\"cancelled\":0}");
    assert_true(cJSON_GetObjectItem(st2, "outcomes_since_ms")->valuedouble == 0);
    view_stats(st2, hosts, NULL);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(st2, "outcomes")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(st2, "unserved")), 1);
    cJSON_Delete(st2);

    /* A paused handler: listed with nothing queued, and never unserved. */
    cJSON *pst = parse("{\"handlers\":["
                       "{\"handler\":\"zz.nobody\",\"queued\":3,\"due\":2,\"oldest_due_age_ms\":9,"
                       "\"paused\":true,\"paused_ms\":1000,\"reason\":\"disk full\"},"
                       "{\"handler\":\"p.idle\",\"queued\":0,\"due\":0,\"oldest_due_age_ms\":0,"
                       "\"paused\":true,\"paused_ms\":2000,\"reason\":\"\"}]}");
    v = view_handlers(empty, pst, NULL);
    assert_json(v, "{\"handlers\":["
                   "{\"handler\":\"p.idle\",\"hosts\":[],\"workers\":0,\"paused\":true,"
                   "\"paused_ms\":2000,\"reason\":\"\",\"queued\":0,\"due\":0,"
                   "\"oldest_due_age_ms\":0,\"unserved\":false," ZERO_HOUR "},"
                   "{\"handler\":\"zz.nobody\",\"hosts\":[],\"workers\":0,\"paused\":true,"
                   "\"paused_ms\":1000,\"reason\":\"disk full\",\"queued\":3,\"due\":2,"
                   "\"oldest_due_age_ms\":9,\"unserved\":false," ZERO_HOUR "}],"
                   "\"unserved\":[]}");
    cJSON_Delete(v);
    view_stats(pst, empty, NULL);
    assert_json(cJSON_GetObjectItem(pst, "unserved"), "[]");
    cJSON_Delete(pst);
    cJSON_Delete(hist);

    /* The gauge's count: queued tasks of a handler no live host serves; none for a handler
     * with nothing queued (listed for its finished tasks). */
    view_mark_unserved(stats, hosts);
    const cJSON *q;
    cJSON_ArrayForEach (q, cJSON_GetObjectItem(stats, "handlers")) {
        const char *name = cJSON_GetObjectItem(q, "handler")->valuestring;
        if (strcmp(name, "aa.gone") == 0) {
            assert_null(cJSON_GetObjectItem(q, "unserved"));
            continue;
        }
        double want = strcmp(name, "zz.nobody") == 0 ? 3 : 0;
        assert_true(cJSON_GetObjectItem(q, "unserved")->valuedouble == want);
    }
    view_mark_unserved(stats, empty); /* again, with no live host: every queue counts */
    assert_int_equal(cJSON_GetArraySize(cJSON_GetArrayItem(cJSON_GetObjectItem(stats, "handlers"), 1)), 5);
    assert_true(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(stats, "handlers"), 1),
                                    "unserved")
                    ->valuedouble == 5);
    cJSON_Delete(empty);
    cJSON_Delete(nostats);
    cJSON_Delete(stats);
    cJSON_Delete(hosts);
}

static void test_answers(void **state)
{
    const char *id = "3b241101-e2bb-4255-8caf-4136c566a962";
    cJSON *o = view_submitted(id, NULL, NULL);
    assert_json(o, "{\"task_id\":\"3b241101-e2bb-4255-8caf-4136c566a962\"}");
    cJSON_Delete(o);
    o = view_submitted(id, "1 of 2 replicas confirmed it", "x.y");
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(o, "durable")));
    assert_string_equal(cJSON_GetObjectItem(o, "warning")->valuestring,
                        "1 of 2 replicas confirmed it; no live host serves handler x.y: the task "
                        "waits until one that does is started");
    cJSON_Delete(o);
    o = view_submitted(id, NULL, "x.y");
    assert_null(cJSON_GetObjectItem(o, "durable"));
    assert_non_null(strstr(cJSON_GetObjectItem(o, "warning")->valuestring, "x.y"));
    cJSON_Delete(o);
    o = view_cancel(id, CANCEL_REQUESTED, "host-1");
    assert_json(o, "{\"task_id\":\"3b241101-e2bb-4255-8caf-4136c566a962\",\"outcome\":"
                   "\"cancel_requested\",\"state\":\"ONGOING\",\"owner\":\"host-1\"}");
    cJSON_Delete(o);
    o = view_cancel(id, CANCEL_FINAL, "SUCCESS");
    assert_json(o, "{\"task_id\":\"3b241101-e2bb-4255-8caf-4136c566a962\",\"outcome\":"
                   "\"already_finished\",\"state\":\"SUCCESS\"}");
    cJSON_Delete(o);
    o = view_retry(id, true, 2);
    assert_json(o, "{\"task_id\":\"3b241101-e2bb-4255-8caf-4136c566a962\",\"kind\":"
                   "\"parallel\",\"state\":\"ONGOING\",\"retrying\":2}");
    cJSON_Delete(o);
}

static void test_subtasks(void **state)
{
    cJSON *rec = parse("{\"subtasks\":3}");
    assert_int_equal(view_subtask_count(rec), 3);
    cJSON_Delete(rec);
    rec = parse("{\"subtasks\":99999999999}");
    assert_int_equal(view_subtask_count(rec), -1);
    cJSON_Delete(rec);
    rec = parse("{\"subtasks\":-4}");
    assert_int_equal(view_subtask_count(rec), 0);
    cJSON_Delete(rec);
    rec = parse("{}");
    assert_int_equal(view_subtask_count(rec), 0);
    cJSON_Delete(rec);

    sub_rec s = {.args = "{\"i\":1}", .state = "FAILURE", .attempt = 2, .message = "", .result = NULL};
    cJSON *o = view_subtask(&s, 7);
    assert_json(o, "{\"index\":7,\"state\":\"FAILURE\",\"attempt\":2,\"message\":null,"
                   "\"args\":{\"i\":1},\"result\":null}");
    cJSON_Delete(o);
    sub_rec t = {.args = "not json", .state = "SUCCESS", .attempt = 1, .message = "ok",
                 .result = "[1]"};
    o = view_subtask(&t, 0);
    assert_json(o, "{\"index\":0,\"state\":\"SUCCESS\",\"attempt\":1,\"message\":\"ok\","
                   "\"args\":\"not json\",\"result\":[1]}");
    cJSON_Delete(o);

    /* A page: the state filter, offset and limit; counts of them all. */
    sub_rec subs[4] = {{.state = "SUCCESS"}, {.state = "FAILURE"}, {.state = "SUCCESS"},
                       {.state = "PENDING"}};
    o = view_subtask_page("t", subs, 4, view_subtask_state("success"), 1, 5);
    assert_int_equal(cJSON_GetObjectItem(o, "matched")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItem(o, "count")->valueint, 1);
    assert_int_equal(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "subtasks"), 0), "index")
            ->valueint,
        2);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "counts"), "SUCCESS")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "counts"), "CANCELLED")->valueint,
                     0);
    cJSON_Delete(o);
    o = view_subtask_page("t", subs, 4, NULL, 0, 0);
    assert_int_equal(cJSON_GetObjectItem(o, "count")->valueint, 4);
    cJSON_Delete(o);
    assert_null(view_subtask_state("DONE"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_only_on_failure),
        cmocka_unit_test(test_unserved_warning),
        cmocka_unit_test(test_handlers),
        cmocka_unit_test(test_answers),
        cmocka_unit_test(test_subtasks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

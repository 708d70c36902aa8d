/*
 * test_subtasks.c - the subtasks a submitter gives a parallel task
 * (host/subtasks.c): every way of giving them becomes args.subtasks, with the
 * subtasks' text as given; args beside them, a list that is not an array and
 * one over tasks.max_subtasks are refused with a message that says which.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "subtasks.h"

static void test_submit_args(void **state)
{
    char err[300], *out = NULL;
    /* Subtasks alone: spliced in as given (spaces inside kept, around them dropped). */
    assert_int_equal(subtasks_submit_args(NULL, " [ {\"a\": 1.50},\n[] ]\n", 10, &out, err,
                                          sizeof err),
                     0);
    assert_string_equal(out, "{\"subtasks\":[ {\"a\": 1.50},\n[] ]}");
    free(out);
    assert_int_equal(subtasks_submit_args("{}", "[]", 10, &out, err, sizeof err), 0);
    assert_string_equal(out, "{\"subtasks\":[]}");
    free(out);
    assert_int_equal(subtasks_submit_args(" { } ", "[1]", 10, &out, err, sizeof err), 0);
    assert_string_equal(out, "{\"subtasks\":[1]}");
    free(out);
    /* Args alone: themselves, with or without args.subtasks. */
    assert_int_equal(subtasks_submit_args("{\"x\": 12345678901234567890}", NULL, 10, &out, err,
                                          sizeof err),
                     0);
    assert_string_equal(out, "{\"x\": 12345678901234567890}");
    free(out);
    assert_int_equal(subtasks_submit_args("{\"subtasks\": [{}, {}]}", NULL, 2, &out, err,
                                          sizeof err),
                     0);
    assert_string_equal(out, "{\"subtasks\": [{}, {}]}");
    free(out);
    assert_int_equal(subtasks_submit_args(NULL, NULL, 10, &out, err, sizeof err), 0);
    assert_string_equal(out, "{}");
    free(out);

    static const struct {
        const char *args, *subtasks;
        int max;
        const char *says;
    } bad[] = {
        {"{\"x\": 1}", "[{}]", 10, "args would be ignored"},
        {"{\"subtasks\": [], \"x\": 1}", NULL, 10, "args.x would be ignored"},
        {"{\"x\": 1, \"subtasks\": []}", NULL, 10, "args.x would be ignored"},
        {"{\"subtasks\": {}}", NULL, 10, "args.subtasks must be an array"},
        {"{\"subtasks\": null}", NULL, 10, "args.subtasks must be an array"},
        {NULL, "{}", 10, "subtasks must be a JSON array"},
        {NULL, "[{}, {}, {}]", 2, "0..2 subtasks (tasks.max_subtasks), got 3"},
        {"{\"subtasks\": [1, 2, 3]}", NULL, 2, "0..2 subtasks (tasks.max_subtasks), got 3"},
        {"[]", NULL, 10, "args must be a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        out = (char *)"untouched";
        err[0] = '\0';
        int rc = subtasks_submit_args(bad[i].args, bad[i].subtasks, bad[i].max, &out, err,
                                      sizeof err);
        if (rc != -EINVAL || out != NULL || !strstr(err, bad[i].says))
            fail_msg("case %zu: rc %d, err '%s', want -EINVAL saying '%s'", i, rc, err,
                     bad[i].says);
    }
    /* 0: not counted (bgt_submit leaves the count to the host that claims the task). */
    assert_int_equal(subtasks_submit_args("{\"subtasks\": [1, 2, 3]}", NULL, 0, &out, err,
                                          sizeof err),
                     0);
    free(out);
}

static void test_in_args(void **state)
{
    const cJSON *list = NULL;
    char *why = NULL;
    cJSON *args = cJSON_Parse("{\"subtasks\": [1, 2]}");
    assert_int_equal(subtasks_in_args(args, &list, &why), 1);
    assert_true(cJSON_IsArray(list) && cJSON_GetArraySize(list) == 2);
    assert_null(why);
    cJSON_Delete(args);

    args = cJSON_Parse("{\"n\": 3}");
    assert_int_equal(subtasks_in_args(args, &list, &why), 0);
    assert_null(list);
    cJSON_Delete(args);

    args = cJSON_Parse("{\"subtasks\": [1], \"log\": \"/tmp/x\"}");
    assert_int_equal(subtasks_in_args(args, &list, &why), -EINVAL);
    assert_non_null(strstr(why, "args.log would be ignored"));
    free(why);
    cJSON_Delete(args);

    args = cJSON_Parse("{\"subtasks\": \"all\"}");
    assert_int_equal(subtasks_in_args(args, &list, &why), -EINVAL);
    assert_non_null(strstr(why, "must be an array"));
    free(why);
    cJSON_Delete(args);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_args),
        cmocka_unit_test(test_in_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

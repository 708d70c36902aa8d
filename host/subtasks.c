/* subtasks.c - the subtasks a submitter gives a parallel task (see subtasks.h). */
#include "subtasks.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/*
 * args (an object) holds subtasks the one way: args.subtasks an array, and no
 * other key. 0 when it does or has no "subtasks" at all, else -EINVAL with
 * err saying why. *list gets args.subtasks, or NULL.
 */
static int check(const cJSON *args, const cJSON **list, char *err, size_t errlen)
{
    *list = cJSON_GetObjectItemCaseSensitive(args, SUBTASKS_KEY);
    if (!*list)
        return 0;
    if (!cJSON_IsArray(*list)) {
        snprintf(err, errlen, "args.%s must be an array: one element of args per subtask",
                 SUBTASKS_KEY);
        return -EINVAL;
    }
    const cJSON *f;
    cJSON_ArrayForEach (f, args) {
        if (f != *list) {
            snprintf(err, errlen,
                     "args.%.64s would be ignored: a task given its subtasks is not split, and "
                     "each subtask runs with its own args only (put what they share into each "
                     "subtask's args)",
                     f->string);
            return -EINVAL;
        }
    }
    return 0;
}

int subtasks_submit_args(const char *args, const char *subtasks, int max_subtasks, char **out,
                         char *err, size_t errlen)
{
    *out = NULL;
    cJSON *a = args ? cJSON_Parse(args) : cJSON_CreateObject();
    const cJSON *list = NULL;
    int rc = -EINVAL;
    if (!cJSON_IsObject(a)) {
        snprintf(err, errlen, "args must be a JSON object");
        goto out;
    }
    if (subtasks) {
        if (a->child) {
            snprintf(err, errlen,
                     "args would be ignored: a task given its subtasks is not split, and each "
                     "subtask runs with its own args only (put what they share into each "
                     "subtask's args)");
            goto out;
        }
        cJSON_Delete(a);
        a = cJSON_CreateObject();
        cJSON *s = cJSON_Parse(subtasks);
        if (!cJSON_IsArray(s)) {
            cJSON_Delete(s);
            snprintf(err, errlen, "subtasks must be a JSON array: one element of args per subtask");
            goto out;
        }
        cJSON_AddItemToObject(a, SUBTASKS_KEY, s);
    }
    if (check(a, &list, err, errlen) < 0)
        goto out;
    int n = cJSON_GetArraySize(list);
    if (list && max_subtasks > 0 && n > max_subtasks) {
        snprintf(err, errlen, "a task has 0..%d subtasks (tasks.max_subtasks), got %d",
                 max_subtasks, n);
        goto out;
    }
    /* The text as given: the subtasks spliced in, never printed again. */
    if (!subtasks) {
        *out = xstrdup(args ? args : "{}");
    } else {
        size_t len = strlen(subtasks);
        while (len > 0 && strchr(" \t\r\n", subtasks[len - 1]))
            len--;
        const char *from = subtasks + strspn(subtasks, " \t\r\n");
        len -= (size_t)(from - subtasks);
        *out = xasprintf("{\"%s\":%.*s}", SUBTASKS_KEY, (int)len, from);
    }
    rc = 0;
out:
    cJSON_Delete(a);
    return rc;
}

int subtasks_in_args(const cJSON *args, const cJSON **list, char **why)
{
    char err[300];
    *why = NULL;
    if (check(args, list, err, sizeof err) < 0) {
        *why = xstrdup(err);
        *list = NULL;
        return -EINVAL;
    }
    return *list ? 1 : 0;
}

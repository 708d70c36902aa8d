/* view.c - what clients are shown of tasks and subtasks (see view.h). */
#include "view.h"

#include <string.h>

void view_task(cJSON *rec)
{
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(rec, "state");
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(rec, "error");
    bool failed = cJSON_IsString(state) && strcmp(state->valuestring, "FAILURE") == 0;
    if (error && !failed && !cJSON_IsNull(error))
        cJSON_ReplaceItemInObjectCaseSensitive(rec, "error", cJSON_CreateNull());
}

void view_tasks(cJSON *recs)
{
    cJSON *rec;
    cJSON_ArrayForEach (rec, recs)
        view_task(rec);
}

int view_subtask_count(const cJSON *rec)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, "subtasks");
    double n = cJSON_IsNumber(v) ? v->valuedouble : 0;
    return n > VIEW_SUBTASKS_MAX ? -1 : n > 0 ? (int)n : 0;
}

/* Stored JSON text as a value: parsed when it is JSON, else the text itself; null if empty. */
static cJSON *json_value(const char *text)
{
    cJSON *v = text && *text ? cJSON_Parse(text) : NULL;
    if (v)
        return v;
    return text && *text ? cJSON_CreateString(text) : cJSON_CreateNull();
}

cJSON *view_subtask(const sub_rec *s, int i)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", i);
    cJSON_AddStringToObject(o, "state", s->state);
    cJSON_AddNumberToObject(o, "attempt", s->attempt);
    if (s->message && *s->message)
        cJSON_AddStringToObject(o, "message", s->message);
    else
        cJSON_AddNullToObject(o, "message");
    cJSON_AddItemToObject(o, "args", json_value(s->args));
    cJSON_AddItemToObject(o, "result", json_value(s->result));
    return o;
}

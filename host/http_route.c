/*
 * http_route.c - what the HTTP interface decides from a request's line and
 * headers before it does anything: which route a URL is (with its task id
 * and the ids in it checked), which methods it allows, the bearer token
 * (compared in constant time), the content type of a body, and the query
 * arguments a route accepts.
 */
#include "http_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

/* ---- request checks ---- */

/* Compare in time that depends on the lengths only, never on where the
 * strings differ, so the token cannot be guessed byte by byte. */
static bool equal_ct(const char *want, const char *got)
{
    size_t wn = strlen(want), gn = strlen(got);
    volatile unsigned char diff = wn != gn;
    for (size_t i = 0; i < wn; i++)
        diff |= (unsigned char)want[i] ^ (unsigned char)(i < gn ? got[i] : 0);
    return diff == 0;
}

bool http__authorized(http_server *s, struct MHD_Connection *c)
{
    const char *token = s->cfg->http_token;
    if (!token || !*token)
        return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    return equal_ct(token, h);
}

/* Lower-case copy of a task id into out (37 bytes); false if s is not one. */
bool http__task_id_norm(const char *s, char *out)
{
    if (!s || !id_valid(s))
        return false;
    for (int i = 0; i <= BGT_ID_LEN; i++)
        out[i] = (char)(s[i] >= 'A' && s[i] <= 'F' ? s[i] - 'A' + 'a' : s[i]);
    return true;
}

route http__route_of(const char *url, request *rq)
{
    static const struct {
        const char *path;
        route r;
    } fixed[] = {
        {"/healthz", R_HEALTHZ}, {"/metrics", R_METRICS},   {"/v1/tasks", R_TASKS},
        {"/v1/hosts", R_HOSTS},  {"/v1/events", R_SSE_ALL}, {"/events/background-task", R_SSE_TASK},
        {"/v1/stats", R_STATS},  {"/v1/handlers", R_HANDLERS}, {"/v1/history", R_HISTORY},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(url, fixed[i].path) == 0)
            return fixed[i].r;
    static const char *const bulk[] = {[BULK_RETRY] = "/v1/tasks/retry",
                                       [BULK_PURGE] = "/v1/tasks/purge",
                                       [BULK_CANCEL] = "/v1/tasks/cancel"};
    for (int i = 0; i < 3; i++)
        if (strcmp(url, bulk[i]) == 0) {
            rq->bulk = i;
            return R_BULK;
        }
    if (strncmp(url, "/v1/handlers/", 13) == 0) {
        /* "<name>", "<name>/pause" or "<name>/resume" */
        const char *rest = url + 13, *slash = strchr(rest, '/');
        if (!slash) {
            snprintf(rq->handler, sizeof rq->handler, "%.71s", rest);
            return R_HANDLER;
        }
        if (strcmp(slash, "/pause") != 0 && strcmp(slash, "/resume") != 0)
            return R_NONE;
        int n = (int)(slash - rest);
        snprintf(rq->handler, sizeof rq->handler, "%.*s", n < 71 ? n : 71, rest);
        rq->resume = slash[1] == 'r';
        return R_PAUSE;
    }
    if (strcmp(url, "/") == 0)
        return R_ROOT;
    if (strcmp(url, "/ui") == 0 || strncmp(url, "/ui/", 4) == 0) {
        /* A name too long to be a file's is kept cut, so that it finds none. */
        snprintf(rq->ui_name, sizeof rq->ui_name, "%s", url[3] ? url + 4 : "/");
        return R_UI;
    }
    if (strncmp(url, "/v1/tasks/", 10) == 0) {
        /* "<id>", "<id>/subtasks" or "<id>/retry" */
        const char *rest = url + 10, *slash = strchr(rest, '/');
        route r = R_TASK;
        if (slash && strcmp(slash, "/subtasks") == 0)
            r = R_SUBTASKS;
        else if (slash && strcmp(slash, "/retry") == 0)
            r = R_RETRY;
        else if (slash && strcmp(slash, "/logs") == 0)
            r = R_LOGS;
        else if (slash)
            return R_NONE;
        size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
        snprintf(rq->raw_id, sizeof rq->raw_id, "%.*s", (int)(n < 47 ? n : 47), rest);
        if (n != BGT_ID_LEN || !http__task_id_norm(rq->raw_id, rq->id))
            rq->id[0] = '\0';
        return r;
    }
    return R_NONE;
}

/* The methods a route takes, as an Allow header; HEAD goes with GET. */
const char *http__allowed_methods(route r)
{
    switch (r) {
    case R_TASKS: return "GET, HEAD, POST";
    case R_TASK: return "GET, HEAD, DELETE";
    case R_RETRY:
    case R_BULK:
    case R_PAUSE: return "POST";
    case R_SSE_TASK:
    case R_SSE_ALL: return "GET";
    default: return "GET, HEAD";
    }
}

bool http__method_allowed(route r, const char *method)
{
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    bool head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    switch (r) {
    case R_TASKS: return get || head || strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    case R_TASK: return get || head || strcmp(method, MHD_HTTP_METHOD_DELETE) == 0;
    case R_RETRY:
    case R_BULK:
    case R_PAUSE: return strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    case R_SSE_TASK:
    case R_SSE_ALL: return get;
    default: return get || head;
    }
}

static enum MHD_Result check_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    args_check *a = cls;
    for (const char *const *p = a->allowed; *p; p++)
        if (strcmp(*p, key) == 0)
            return MHD_YES;
    snprintf(a->bad, sizeof a->bad, "%s", key);
    return MHD_NO;
}

/* NULL if the query is fine, else the first unknown argument (in a). */
const char *http__unknown_arg(struct MHD_Connection *c, const char *const *allowed, args_check *a)
{
    a->allowed = allowed;
    a->bad[0] = '\0';
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, check_arg, a);
    return a->bad[0] ? a->bad : NULL;
}

const char *http__arg(struct MHD_Connection *c, const char *name)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
    return v && *v ? v : NULL;
}

/* application/json, with or without parameters such as charset. */
bool http__is_json_type(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

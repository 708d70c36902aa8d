/*
 * http_read.c - the operators' reads of the HTTP interface beyond records and
 * queues: the history of ended tasks. The answers are ops_read's, as
 * bgtaskctl prints them.
 */
#include <stdio.h>

#include "http_int.h"
#include "ops_read.h"

enum MHD_Result http__get_history(http_server *s, struct MHD_Connection *c)
{
    static const char *const ok[] = {"handler", "since", "until", "step", NULL};
    args_check a;
    const char *bad = http__unknown_arg(c, ok, &a);
    if (bad)
        return http__send_error(c, MHD_HTTP_BAD_REQUEST, NULL,
                                "unknown query argument '%s' (expected handler, since, until, step)",
                                bad);
    const char *hname = http__arg(c, "handler"), *since = http__arg(c, "since"),
               *until = http__arg(c, "until"), *step = http__arg(c, "step");
    store *st = http__pool_get(s);
    cJSON *o = NULL;
    int rc = ops_history(st, hname, since, until, step, &o);
    if (http__again(rc, st))
        rc = ops_history(st, hname, since, until, step, &o);
    char err[256];
    snprintf(err, sizeof err, "%s", rc < 0 ? store_errstr(st) : "");
    http__pool_put(s, st);
    if (rc < 0)
        return http__send_store_error(s, c, rc, err);
    return http__send_json(c, MHD_HTTP_OK, o, NULL);
}

/*
 * surface.h - the operator's surface checked through any Redis address:
 * bgtaskctl (submit --wait, watch, status, list, stats, hosts, cancel,
 * retry, purge, pause and resume) and the HTTP API of a running host (POST
 * and GET /v1/tasks, the task's event stream, /v1/stats, /v1/hosts, DELETE,
 * a task's retry, a handler's pause and resume). The Sentinel and Cluster tests run
 * the same checks through their redis+sentinel:// and redis+cluster:// URLs.
 *
 * Part of the harness library (surface.c); its failures are cmocka failures.
 */
#ifndef BGT_SURFACE_H
#define BGT_SURFACE_H

#include "harness.h"

/*
 * Check every command and endpoint above through url, against host h: a
 * running bgtaskd on that same Redis, with the demo plugin and an HTTP
 * server on 127.0.0.1:0 (no token), under the default key prefix (other
 * hosts may run the tasks too). It submits demo.sleep, demo.fail and
 * demo.echo tasks and leaves them finished (demo.echo paused, then resumed).
 */
void th_surface_check(const char *url, const th_host *h);

#endif

/*
 * itest.h - what the integration tests share on top of the harness: one
 * private redis-server per test program and a fresh database per test, the
 * hosts a test started (stopped by the teardown, which prints their logs when
 * the test failed), bgtaskctl submissions, and reads of task records, queues
 * and events.
 *
 * Part of the harness library (itest.c); a test program includes
 * "../harness/itest.h" and uses the one fixture, fx, for its redis-server.
 */
#ifndef BGT_ITEST_H
#define BGT_ITEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "harness.h"

#define IT_PREFIX "bgtask"
/* The most hosts one test runs at once. */
#define IT_MAX_HOSTS 4
/* How long a host may take to register itself after it was started (ASan is slow). */
#define IT_READY_S 15.0

typedef struct it_fixture {
    th_redis r;
    redisContext *c;
    bool up;                     /* redis-server runs (else tests skip) */
    th_host hosts[IT_MAX_HOSTS]; /* started by this test */
    int nhosts;
    bool passed; /* set by it_pass() as a test's last step */
} it_fixture;

extern it_fixture fx; /* the program's: itest.c */

/*
 * Start the program's redis-server (with AOF on if `aof`) and connect to it. Returns 0, or
 * -1 when it cannot run and CI is set; without CI a missing redis-server leaves fx.up false
 * and the tests skip.
 */
int it_redis_start(bool aof);

/* cmocka group setup: one redis-server for the program (skip without one, fail under CI). */
int it_group_setup(void **state);

int it_group_teardown(void **state);

/* Per-test setup: an empty database and no hosts. */
int it_setup(void **state);

/*
 * Per-test teardown: stop the test's hosts and show their logs if the test
 * did not pass. A host that was still running must exit 0 on SIGTERM, and no
 * host may have printed a sanitizer report (make asan): either fails the test.
 */
int it_teardown(void **state);

#define IT_TEST(fn) cmocka_unit_test_setup_teardown(fn, it_setup, it_teardown)

void it_need_redis(void);

/* The last step of a test: its hosts' logs are not worth showing. */
void it_pass(void);

/* Start a host and wait until it serves; the teardown stops it. */
th_host *it_host_start(const th_host_opts *o);

/* True while the host process has not exited. */
bool it_host_alive(th_host *h);

/* A command on the test's own connection; the reply must not be an error. */
redisReply *it_cmd(const char *fmt, ...);

long long it_dbsize(void);

/* Redis' clock in ms (the one scores and stream ids use). */
long long it_redis_ms(void);

/* The path of a built binary ("bgtaskd", "bgtaskctl"); malloc'd. */
char *it_bin(const char *name);

/*
 * Start a bgtaskctl command line aimed at the test's Redis: argv[0..2] get the binary's
 * path (malloc'd: the caller frees argv[0]), "--redis" and the URL. Returns 3, the next free
 * slot.
 */
int it_ctl_argv(char **argv);

/*
 * bgtaskctl with these arguments (NULL-terminated), aimed at the test's Redis: it must
 * exit `want` (the test fails, showing its stderr, otherwise). Returns its stdout
 * (malloc'd); *err (if not NULL) gets its stderr (malloc'd).
 */
char *it_ctl(int want, char **err, const char *arg, ...) __attribute__((sentinel));

/*
 * bgtaskctl submit HANDLER [--args ARGS] [more options...] (NULL-terminated):
 * it must succeed; returns the task id (malloc'd).
 */
char *it_submit(const char *handler, const char *args, ...);

/* A field of the task record (malloc'd), or NULL. */
char *it_field(const char *id, const char *name);

bool it_field_is(const char *id, const char *name, const char *want);

/* A numeric field of the record; -1 when it is missing. */
long long it_field_ll(const char *id, const char *name);

void it_assert_field(const char *id, const char *name, const char *want);

/* The task is ONGOING on owner with this attempt and has persisted at least `step`. */
bool it_running_on(const char *id, const char *owner, long long attempt, long long step);
/* Assert that host h wrote the end of attempt `attempt` of task id (its log says so: a
 * finished record does not name its host). */
void it_assert_ended_on(const char *id, const th_host *h, long long attempt);

/* Whether the host is among the live hosts. */
bool it_host_listed(const char *host_id);

/* Wait until the task's state is `state`; true if it got there in time. */
bool it_wait_state(const char *id, const char *state, double timeout_s);

/* The parsed JSON of a field (args, result); NULL when missing or not JSON. */
cJSON *it_field_json(const char *id, const char *name);

/*
 * The events of task id in <prefix>:events, oldest first: a JSON array of
 * {"ms": Redis ms of the stream id, "event": name, "data": payload}.
 */
cJSON *it_events(const char *id);

/* An event's name, payload and fields of the payload. */
const char *it_ev_name(const cJSON *e);

const cJSON *it_ev_data(const cJSON *e);

const char *it_ev_message(const cJSON *e);

double it_ev_number(const cJSON *e, const char *field);

/*
 * How many bgtask_updated events of task id say it was released by host `host`; each of
 * them must be of attempt `attempt`.
 */
int it_count_released(const char *id, const char *host, int attempt);

bool it_ev_terminal(const cJSON *e);

/*
 * The task has exactly one terminal event, it is `name`, it is the task's last
 * event, and the record's state agrees with it; and every bgtask_updated of it
 * carries current_progress and total_progress (issue 8, item 12).
 */
void it_assert_one_terminal(const char *id, const char *name);

/* Write a whole file (a config rewritten for SIGHUP): a temp file renamed over it. */
void it_write_file(const char *path, const char *text);

/* The whole text of a file (malloc'd, NUL-terminated). */
char *it_read_file(const char *path);

#endif

/*
 * ctl.h - what the files of bgtaskctl share: the command-line client (submit,
 * status, watch, cancel, retry, list, hosts, handlers, stats, events). It
 * talks to Redis only through the store (host/store.h), so it knows no key
 * names; --json gives every command a form for scripts. main.c: options, the
 * connection, dispatch; output.c: text, tables, JSON; watch.c: following a
 * task, and every task's events; submit.c; task.c: status, cancel, retry;
 * lists.c: list, hosts, handlers, stats; ops.c: the operator's bulk retry,
 * cancel and purge, pause and resume; history.c: history; logs.c:
 * logs.
 */
#ifndef BGTASKCTL_CTL_H
#define BGTASKCTL_CTL_H

#include <ctype.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "events.h"
#include "ops_read.h"
#include "store.h"
#include "subtasks.h"
#include "util.h"
#include "view.h"

#ifndef BGT_VERSION
#define BGT_VERSION "dev"
#endif

/* Exit codes, as documented in the help text. */
enum {
    EX_OK = 0,
    EX_FAIL = 1,
    EX_USAGE = 2, /* also: Redis cannot be reached */
    EX_CANCELLED = 3,
    EX_PARTIAL = 4,
    EX_NOTFOUND = 5,
    EX_EXISTS = 6,      /* submit --id: a task with that id exists (nothing was changed) */
    EX_NOT_DURABLE = 7, /* submitted, but not confirmed by redis.min_replicas_ack replicas */
};

/* What every command shares: the global options and the connection. */
typedef struct ctl {
    const char *cli_url;   /* --redis */
    const char *conf_path; /* -c */
    const char *prefix;    /* --prefix, else the config's */
    bool json;
    bgt_config cfg;      /* loaded from -c, else the defaults */
    const char *url;     /* the address in use */
    char url_shown[256]; /* url without its password, for messages */
    redis_addr addr;
    store *st; /* the connection */
} ctl;

/* The options of every command (each command's table says which it takes). */
typedef struct cmd_opts {
    const char *args, *args_file, *subtasks_file, *id, *state, *handler, *on_failure, *reason;
    const char *states[4]; /* every --state given (purge takes several) */
    int nstates;
    long max_attempts, limit, offset, parallelism; /* limit 0: the command's default */
    long min_replicas_ack; /* -1: the config's */
    double delay;
    int64_t since_ms, until_ms; /* --since, --until (0: not given) */
    const char *since, *until, *step; /* the text of --since, --until, --step (history reads
                                         them through ops_history's parser) */
    long long after;                  /* logs --after */
    const char *cursor;               /* list --cursor */
    bool has_older_than;
    int64_t older_than_ms;
    bool wait, subtasks, dry_run, all;
    char **operands; /* a command that takes several (purge ID...): argv's */
    int noperands;
} cmd_opts;

#define TABLE_MAX_COLS 8

/* Text cells printed in aligned columns under a header; the table owns the cells. */
typedef struct table {
    int ncols;
    const char *head[TABLE_MAX_COLS];
    char **cells;
    size_t nrows, cap;
} table;

/* main.c: the connection and errors */
__attribute__((format(printf, 1, 2))) int usage_error(const char *fmt, ...);
int ctl_setup(ctl *c);
int ctl_open(ctl *c, store **out);
int store_fail(ctl *c, store *st, int rc, const char *id);

/* output.c */
const char *clean(const char *s, size_t max, char *out, size_t n);
const char *jstr(const cJSON *o, const char *key);
double jnum(const cJSON *o, const char *key);
const char *fmt_num(double v, char *buf, size_t n);
const char *fmt_time(double ms, char *buf, size_t n);
const char *fmt_age(double ms, char *buf, size_t n);
int term_columns(void);
int term_rows(void);
void print_json(const cJSON *v, bool one_line);
char *cell_text(const cJSON *v);
void table_row(table *t, char **row);
void table_print(table *t);
void print_objects(const cJSON *arr, int ncols, const char *const *keys);

/* watch.c: follow a task until it ends; the exit code of its outcome */
int watch_task(ctl *c, const char *id, bool subtasks);
/* Before a change whose events are all to be shown (a submission, a retry): a new store
 * subscribed to task id, in *sub; EX_OK or the exit code after saying why not. */
int watch_open(ctl *c, const char *id, store **sub);
/* Then, after the change: follow the task from the subscription's first event until it
 * ends, as watch does; takes sub. unserved_at: the mono_s when the caller last said no live
 * host serves its handler (0: never). The exit code of its outcome. */
int watch_follow(ctl *c, store *sub, const char *id, bool subtasks, double unserved_at);
/* Whether a live host serves handler; true also when the hosts cannot be read (nothing is
 * said without knowing). */
bool ctl_served(ctl *c, const char *handler);
/* Say on stderr that no live host serves handler: a task of it waits for one. */
void warn_unserved(const char *handler);

/* the commands: each returns the exit code */
int cmd_submit(ctl *c, const cmd_opts *o, const char *handler);
int cmd_status(ctl *c, const cmd_opts *o, const char *id);
int cmd_watch(ctl *c, const cmd_opts *o, const char *id);
int cmd_cancel(ctl *c, const cmd_opts *o, const char *id);
int cmd_retry(ctl *c, const cmd_opts *o, const char *id);
int cmd_list(ctl *c, const cmd_opts *o, const char *unused);
int cmd_hosts(ctl *c, const cmd_opts *o, const char *unused);
int cmd_handlers(ctl *c, const cmd_opts *o, const char *unused);
int cmd_events(ctl *c, const cmd_opts *o, const char *unused);
int cmd_stats(ctl *c, const cmd_opts *o, const char *unused);
int cmd_purge(ctl *c, const cmd_opts *o, const char *unused);
int cmd_pause(ctl *c, const cmd_opts *o, const char *handler);
int cmd_resume(ctl *c, const cmd_opts *o, const char *handler);
/* retry --handler H ..., cancel --handler H --all (task.c hands them over). */
int cmd_retry_bulk(ctl *c, const cmd_opts *o);
int cmd_cancel_bulk(ctl *c, const cmd_opts *o);
int cmd_history(ctl *c, const cmd_opts *o, const char *unused);
int cmd_logs(ctl *c, const cmd_opts *o, const char *id);

/* The longest message logs prints of a line, in bytes. */
#define TASK_LOG_PRINT_MAX 1100

#endif

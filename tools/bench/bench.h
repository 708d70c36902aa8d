/*
 * bench.h - what the files of the bench share (main.c: options, main, the
 * report; say.c: messages and the interrupt flag; host.c: the bgtaskd it
 * starts; redis.c: Redis' own accounting; modes.c: submitting, waiting and
 * the modes; isolation.c: the isolation mode; scale.c: the scale mode).
 *
 * The bench: throughput, latency and Redis cost of one bgtaskd running no-op tasks.
 *
 * It starts its own bgtaskd (build/bin/bgtaskd next to this binary, with the bench
 * plugin from build/plugins) against the Redis given with --redis, which should be a
 * private server: `make bench` (tools/run-bench) starts one. Each mode uses its own key
 * prefix and its own host, so the modes do not see each other's tasks:
 *
 *   drain    N tasks are submitted in batches while no host runs (the submit rate),
 *            then a host is started and timed until all N are finished.
 *   mixed    a host is running; N tasks are submitted in batches while it consumes
 *            them; timed from the first submit to the last finished.
 *   latency  a host is running and idle; one bench.noop at a time, submit to the
 *            arrival of its terminal event on a pub/sub subscription.
 *   parallel a host is running and idle; one bench.parallel task of N no-op subtasks,
 *            timed from its submit to the arrival of its terminal event.
 *   isolation  the drain of N no-op tasks by a host whose bench plugin runs in its own
 *            threads (isolation = "thread") and by one where it runs in worker processes
 *            (isolation = "process", one per worker thread), twice each, alternating; the
 *            best rate of each mode and process/thread.
 *   scale    --hosts hosts (each in one of the --netns network namespaces, in turn, when
 *            given) run N tasks submitted while they run; tasks/s, and each master's CPU.
 *
 * The Redis cost of drain, mixed, parallel and scale comes from INFO commandstats and INFO
 * cpu taken before and after, summed over the masters (a Redis Cluster has several). It talks to Redis only through the store (host/store.h).
 */
#ifndef BENCH_BENCH_H
#define BENCH_BENCH_H

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "events.h"
#include "store.h"
#include "util.h"

/* How often the finished count is read while waiting for a run to end. */
#define POLL_S 0.002
/* A run whose finished count does not move for this long has stalled. */
#define STALL_S 10.0
/* How long a host may take to show up in P:hosts, and to exit after SIGTERM. */
#define HOST_START_S 10.0
#define HOST_STOP_S 15.0
/* How long one latency sample may take. */
#define SAMPLE_S 5.0
/* How often the parallel mode looks at its host while it waits for the task's end. */
#define PARALLEL_CHECK_S 0.5

enum {
    MODE_DRAIN = 1,
    MODE_MIXED = 2,
    MODE_LATENCY = 4,
    MODE_PARALLEL = 8,
    MODE_AOF = 16,
    MODE_ISOLATION = 32,
    MODE_ALL = 63,
    MODE_FLAT = 64,  /* not in all: it runs a million tasks */
    MODE_SCALE = 128 /* not in all: for tools/run-scaleout */
};

/* The bench's settings and what it measured. */
typedef struct bench {
    const char *url;
    redis_addr addr;
    int modes;
    long tasks;
    long samples;
    long subtasks;
    long aof_tasks;
    long flat_tasks;
    long retention_max;
    int workers;
    int processes;          /* the isolation mode's worker processes; 0 = workers */
    int hosts;              /* the scale mode's hosts */
    char **netns;           /* the scale mode's network namespaces (--netns), or NULL */
    size_t nnetns;
    const char *isolation;  /* more settings of the bench plugin's entry, or NULL */
    int batch;
    double timeout_s;
    bool keep_logs;
    char bgtaskd[PATH_MAX]; /* the host binary */
    char plugins[PATH_MAX]; /* the plugins dir */
    char outdir[PATH_MAX];  /* config and log files */
    cJSON *json;            /* the figures, printed as one line at the end */
} bench;

/* One bgtaskd started by the bench. */
typedef struct host_proc {
    pid_t pid;       /* 0 when not running */
    char id[64];     /* its host id */
    char prefix[64]; /* its key prefix */
    char conf[PATH_MAX + 64];
    char log[PATH_MAX + 64];
    struct rusage usage; /* its CPU use, filled when it is reaped */
    bool reaped;
    int index;         /* 0: its mode's one host; 1, 2...: one of several, sharing a prefix */
    const char *netns; /* the network namespace it runs in, or NULL */
} host_proc;

typedef struct cmdstat {
    char name[48];
    long long calls;
    long long usec;
} cmdstat;

/* The most masters whose figures are shown one by one. */
#define BENCH_MAX_MASTERS 64

/* One master's CPU: its address, and used_cpu_user + used_cpu_sys (a snapshot) or their
 * growth (a cost) in s, and per task. */
typedef struct master_cpu {
    char server[80];
    double cpu_s;
    double cpu_usec; /* a cost: per unit */
} master_cpu;

/* INFO commandstats and INFO cpu at one moment, summed over the masters. */
typedef struct snapshot {
    cmdstat *cmds;
    size_t n;
    master_cpu *masters; /* each master's own CPU (at most BENCH_MAX_MASTERS) */
    size_t nmasters;
    double cpu_s;    /* used_cpu_user + used_cpu_sys */
    long long forks; /* background saves and AOF rewrites so far */
    long long aof;   /* aof_current_size, -1 when AOF is off */
    long long mem;   /* used_memory */
} snapshot;

/* Redis' cost of a run, per task (per subtask in the parallel mode). */
typedef struct cost {
    double calls;        /* every command, those inside scripts included */
    double toplevel;     /* script calls + plain commands: what clients sent */
    double script_calls; /* EVALSHA & co */
    double usec;         /* commandstats usec of the top-level commands */
    double cpu_usec;     /* INFO cpu: the server process' CPU time */
    long long forks;     /* background saves and AOF rewrites during the run */
    double aof_bytes;    /* AOF growth; -1 when AOF is off or a rewrite ran (it shrinks the file) */
    double mem_bytes;    /* used_memory growth */
    master_cpu master[BENCH_MAX_MASTERS]; /* each master's share of cpu_usec */
    size_t nmasters;
} cost;

/* Set by SIGINT/SIGTERM: every wait ends as if its deadline had come. */
extern volatile sig_atomic_t interrupted;
/* The SIGINT/SIGTERM handler that sets it. */
void bench_on_signal(int sig);

/* say.c */
__attribute__((format(printf, 1, 2))) void say(const char *fmt, ...);

/* host.c: the bgtaskd a mode runs */
int find_paths(bench *b);
int host_write_config(const bench *b, host_proc *h, const char *mode);
int host_start(const bench *b, host_proc *h);
bool host_alive(host_proc *h);
int host_wait_registered(store *st, host_proc *h);
int host_stop(host_proc *h);
void host_finish(const bench *b, host_proc *h, bool ok);
double cpu_s(const struct rusage *u);

/* redis.c: INFO commandstats and cpu, and the cost per task between two snapshots */
void snapshot_free(snapshot *s);
/* INFO section from every master into *t (free with store_master_texts_free), saying why
 * when it fails. */
int info_all(store *st, const char *section, store_master_text **t, size_t *n);
int snapshot_take(store *st, snapshot *s);
cost snapshot_cost(const snapshot *a, const snapshot *z, long units, const char *unit,
                   const char *title);
void cost_print(const cost *c, const char *unit);
void cost_json(cJSON *j, const char *pre, const char *unit, const cost *c);

/* modes.c: each mode returns 0 or a negative errno */
int submit_noops(const bench *b, store *st, long n);
int wait_finished(const bench *b, store *st, host_proc *h, int nh, long n, double start,
                  double *t_first, double *t_done, long long *got);
store *open_store(const bench *b, const char *prefix);
int wait_redis_quiet(store *st);
int run_drain(bench *b);
int run_mixed(bench *b);
int run_aof(bench *b);
int run_flat(bench *b);
int run_latency(bench *b);
int run_parallel(bench *b);

/* isolation.c */
int run_isolation(bench *b);

/* scale.c */
int run_scale(bench *b);

#endif

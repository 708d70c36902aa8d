/*
 * harness.h - what integration and store tests share: a private
 * redis-server on a free loopback port, real bgtaskd processes, bgtaskctl
 * runs, and polling with a deadline (never a fixed sleep).
 *
 * Paths: binaries come from $BUILD (default "build"): $BUILD/bin/bgtaskd,
 * $BUILD/bin/bgtaskctl, $BUILD/plugins/<name>.so, $BUILD/tests/plugins/<name>.so.
 * Scratch files go under $BUILD/tmp/<test>-<pid>-<n>/ and are removed on stop.
 *
 * The harness is one library that every test program links
 * ($BUILD/lib/libbgtharness.a, from the .c files of tests/harness): harness.c (child
 * processes, scratch folders), harness_redis.c (the redis-server),
 * harness_ha.c (replicas, sentinels, a Redis Cluster), harness_host.c (bgtaskd and bgtaskctl), harness_keys.c (the key layout:
 * the only test code that spells key names), itest.[ch] (the integration
 * tests' fixture), crashkit.[ch] (the crash tests' pool and checks),
 * surface.[ch] (bgtaskctl and the HTTP API through any Redis address) and
 * fake_host.[ch] (the unit tests' host table). Include its headers as
 * "../harness/<name>.h": the Makefile compiles tests with -Isdk -Ihost only.
 * Every process the harness starts is killed and every folder it made is
 * removed at exit (BGT_TEST_KEEP=1 in the environment keeps the folders).
 */
#ifndef BGT_HARNESS_H
#define BGT_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

/* A private redis-server (or redis-sentinel). */
typedef struct th_redis {
    pid_t pid;
    int port;
    bool aof;
    char dir[512];  /* its working folder (dump/AOF live here) */
    char url[128];  /* "redis://127.0.0.1:<port>/0" */
    bool sentinel;  /* a redis-sentinel process */
    int bus_port;   /* a cluster node: its cluster bus port; 0 = not one */
    char conf[600]; /* a config file it reads first (in dir), or "" */
} th_redis;

/* Start redis-server on 127.0.0.1, a free port, in a fresh folder; with
 * appendonly yes (appendfsync always) when aof. Waits until it answers PING.
 * Returns 0 or -1 (message on stderr). When redis-server is missing: if the
 * environment has CI set, that is a failure (-1); otherwise -2 (skip). */
int th_redis_start(th_redis *r, bool aof);
/* kill -9 the server (it stays stopped until th_redis_restart). */
void th_redis_kill(th_redis *r);
/* Start it again on the same port and folder; waits for PING. */
int th_redis_restart(th_redis *r);
/* Stop the server (SIGTERM, then SIGKILL after 5 s), reap it, remove its folder. */
void th_redis_stop(th_redis *r);
/* A fresh hiredis connection to it (caller frees with redisFree); aborts on failure. */
redisContext *th_redis_connect(const th_redis *r);

/* The most replicas of a sentinel-watched master; the most nodes of a cluster. */
#define TH_MAX_REPLICAS 4
#define TH_MAX_CLUSTER_NODES 12

/* A master with replicas, watched by three redis-sentinel processes. */
typedef struct th_sentinels {
    th_redis servers[1 + TH_MAX_REPLICAS]; /* [0] the first master, then its replicas */
    int nservers;
    th_redis sentinels[3];
    char name[32];  /* the master's name in the sentinels */
    char url[128];  /* "redis+sentinel://127.0.0.1:<p1>,...:<p3>/<name>/0" */
} th_sentinels;

/*
 * Start a master, `replicas` replicas (1..TH_MAX_REPLICAS) and three sentinels
 * (quorum 2, a master is down after 1 s of silence) on free loopback ports;
 * waits until every sentinel sees the master, its replicas and the other two.
 * 0, -1, or -2 when a binary is missing and CI is not set (skip). Stopped and
 * removed by th_sentinels_stop or at exit.
 */
int th_sentinels_start(th_sentinels *s, int replicas);
/* The server the sentinels name as the master now (NULL if none answers). */
th_redis *th_sentinels_master(th_sentinels *s);
/* Wait until every running sentinel names one master other than the server on old_port,
 * and that server says it is a master; returns it, or NULL after timeout_s. */
th_redis *th_sentinels_wait_failover(th_sentinels *s, int old_port, double timeout_s);
void th_sentinels_stop(th_sentinels *s);

/* A Redis Cluster: masters with replicas, node timeout 1 s. */
typedef struct th_cluster {
    th_redis nodes[TH_MAX_CLUSTER_NODES];
    int n;
    int replicas;  /* per master */
    char url[128]; /* "redis+cluster://127.0.0.1:<p1>,...:<p3>" (three seeds) */
} th_cluster;

/*
 * Start masters * (1 + replicas) cluster-enabled redis-servers and join them
 * (redis-cli --cluster create ... --cluster-replicas R); waits until every
 * node says the cluster is ok and every master's replicas are in sync.
 * 0, -1, or -2 (skip, as th_redis_start).
 */
int th_cluster_start(th_cluster *c, int masters, int replicas);
/* Wait until every running node says cluster_state ok with all slots served. */
bool th_cluster_wait_ok(th_cluster *c, double timeout_s);
/* The running node that serves slot now (asking the nodes), or NULL. */
th_redis *th_cluster_master_of(th_cluster *c, unsigned slot);
/* The running node that serves key's slot now (the one to pass to th_host_wait_ready for
 * the key of the host list), or NULL. */
th_redis *th_cluster_master_of_key(th_cluster *c, const char *key);
/* The node listening on port, or NULL. */
th_redis *th_cluster_node(th_cluster *c, int port);
/* The node's cluster id (malloc'd), or NULL. */
char *th_cluster_node_id(const th_redis *node);
void th_cluster_stop(th_cluster *c);

/* Options for a test host; zero fields take the defaults noted. */
typedef struct th_host_opts {
    const char *id;             /* host id; default "h<n>" */
    int workers;                /* default 4 */
    double lease_s;             /* default 3 */
    double heartbeat_s;         /* default 0.5 */
    double progress_interval_s; /* default 0.05 */
    double shutdown_grace_s;    /* default 5 */
    double backoff_base_s;      /* default 0.05 */
    double backoff_max_s;       /* default 1 */
    int max_attempts;           /* default 3 */
    /* Body of plugins.load, e.g. "{ name = \"demo\"; }" ; default loads demo.
     * Test plugins: { name = "crash"; file = "<abs path>"; } - use th_test_plugin(). */
    const char *plugins;
    const char *extra;  /* more top-level libconfig text, verbatim (e.g. an http section) */
    const char *prefix; /* key prefix; default "bgtask" */
    int max_subtasks;   /* tasks.max_subtasks; default: the host's own (10000) */
    double kill_grace_s; /* tasks.kill_grace; default: the host's own (5) */
    double plugins_init_timeout_s; /* plugins.init_timeout; default: the host's own (60) */
    const char *redis_url;   /* redis.url; default: the th_redis's (a sentinel URL, ...) */
    const char *redis_settings; /* more settings of the redis group, verbatim */
    const char *tasks_settings; /* more settings of the tasks group, verbatim */
} th_host_opts;

/* A bgtaskd process. */
typedef struct th_host {
    pid_t pid;
    char id[64];
    char conf[512]; /* config file written for it */
    char log[512];  /* its stderr */
} th_host;

/* Write a config for o and start bgtaskd -c <conf> with stderr to h->log.
 * Does not wait: use th_host_wait_ready. Returns 0 or -1. */
int th_host_start(th_host *h, const th_redis *r, const th_host_opts *o);
/* Wait until the host's entry is in <prefix>:hosts (it is serving). */
bool th_host_wait_ready(th_host *h, const th_redis *r, double timeout_s);
/* Send a signal to the host (only ever to the pid we started). */
void th_host_signal(th_host *h, int sig);
/* Wait for the host to exit; *status gets the waitpid status. false on timeout. */
bool th_host_wait_exit(th_host *h, double timeout_s, int *status);
/* kill -9 and reap (no-op if already reaped). */
void th_host_kill(th_host *h);
/* Stop gracefully (SIGTERM, wait up to timeout, then kill -9); returns exit status or -1. */
int th_host_stop(th_host *h, double timeout_s);
/* True if the host's log contains needle. */
bool th_log_contains(const th_host *h, const char *needle);
/* Print the host's log to stderr (for failures). */
void th_log_dump(const th_host *h);

/* The port the host's HTTP server bound (it was given port 0), read from its log ("http:
 * serving on http://127.0.0.1:<port>/"), waiting up to 15 s for it; -1 if it never says. */
int th_host_http_port(const th_host *h);
/*
 * curl -s -X method url, with the JSON body (NULL: none) and the bearer token (NULL: none).
 * Returns the HTTP status, or -1 when curl could not make the request; *out (if not NULL)
 * gets the response body (malloc'd).
 */
int th_http(const char *method, const char *url, const char *token, const char *body,
            char **out);

/* Absolute path of $BUILD/tests/plugins/<name>.so or $BUILD/plugins/<name>.so (static buffer per call site is not used: returns a malloc'd string). */
char *th_plugin_path(const char *name, bool test_plugin);

/*
 * Run bgtaskctl --redis <r->url> <args...> (NULL-terminated), capture stdout
 * (and stderr, into *err if not NULL). Returns the exit code (or -1 if it died
 * by a signal). *out (if not NULL) gets a malloc'd NUL-terminated copy of stdout.
 */
int th_ctl(const th_redis *r, char **out, char **err, const char *arg, ...)
    __attribute__((sentinel));
/* Same with a timeout in seconds (kills it and returns -2 past that).
 * th_ctl itself bounds a run at 120 s the same way. */
int th_ctl_timeout(double timeout_s, const th_redis *r, char **out, char **err, const char *arg,
                   ...) __attribute__((sentinel));
/* Run argv (argv[0] a path) as th_ctl does: stdin from /dev/null, stdout into
 * *out and stderr into *err (malloc'd; stderr is inherited when err is NULL).
 * Returns the exit code, -1 if it died by a signal, -2 if killed after
 * timeout_s (<= 0: no limit). */
int th_run(double timeout_s, char *const argv[], char **out, char **err);

/*
 * The key layout, as tests see it (harness_keys.c, the only test code that
 * knows key names). prefix is the hosts' key prefix. Readers return NULL or
 * -1 for what is not there; writers abort on a Redis error.
 */
/* A field of task id's record (malloc'd), or NULL. */
char *th_task_field(redisContext *c, const char *prefix, const char *id, const char *field);
/* True if the task's state is terminal (SUCCESS, FAILURE, CANCELLED). */
bool th_task_terminal(redisContext *c, const char *prefix, const char *id);
/* Whether task id has a record. */
bool th_task_exists(redisContext *c, const char *prefix, const char *id);
/* Set one field of the task record (a test that corrupts a record, say). */
void th_task_set(redisContext *c, const char *prefix, const char *id, const char *field,
                 const char *value);
/* Delete task id's record (only the record: its queue entry stays). */
void th_task_delete(redisContext *c, const char *prefix, const char *id);
/* Replace task id's record with text, a value that is no record at all. */
void th_corrupt_record(redisContext *c, const char *prefix, const char *id, const char *text);
/* Set field of subtask index of task id ("state", "attempt", ...). */
/* A field of subtask index of task id ("state", "message", "args", "attempt", "result";
 * malloc'd), or NULL; a subtask not run yet reads state "PENDING". */
char *th_subtask_field(redisContext *c, const char *prefix, const char *id, int index,
                       const char *field);
void th_subtask_set(redisContext *c, const char *prefix, const char *id, int index,
                    const char *field, const char *value);
/* Make task id of handler claimable now and wake the hosts that serve it. */
void th_task_due(redisContext *c, const char *prefix, const char *handler, const char *id);
/* Put id in the queue of handler with score (what a submission leaves, without a record). */
void th_queue_plant(redisContext *c, const char *prefix, const char *handler, const char *id,
                    double score);
/* Task id's score in the queue of handler (ms from which it may be claimed), or -1. */
double th_queue_score(redisContext *c, const char *prefix, const char *handler, const char *id);
/* Whether no task waits or runs (every queue is empty). */
bool th_queues_empty(redisContext *c, const char *prefix);
/* The lines kept in the log of task id ({P:s}:log:<id>; 0 when there is none). */
long long th_log_len(redisContext *c, const char *prefix, const char *id);
/* The history's keys ({P:s}:hist:<minute>): how many, and their least and greatest PTTL
 * (-1: none; a key without expiry answers -1 too). */
typedef struct th_hist_keys {
    long long n, min_pttl, max_pttl;
} th_hist_keys;
/* The tasks of handler that ended with outcome, summed over the history's keys; *keys (if
 * not NULL) describes those keys. */
long long th_hist_count(redisContext *c, const char *prefix, const char *handler,
                        const char *outcome, th_hist_keys *keys);
/* When task id finished (its entry among the finished, ms), or -1. */
double th_finished_at(redisContext *c, const char *prefix, const char *id);
/* Fields of n task records, read in one pipeline: out[i * nfields + k] gets field k of
 * ids[i] (malloc'd), or NULL. */
void th_task_fields(redisContext *c, const char *prefix, char (*ids)[37], size_t n,
                    const char *const *fields, size_t nfields, char **out);
/* What th_each_event calls for each event: its stream id, task id, name and payload (any
 * may be NULL when the entry lacks it), borrowed for the call. */
typedef void (*th_event_fn)(void *arg, const char *sid, const char *task_id, const char *name,
                            const char *data);
/* Call fn for every event in the stream, oldest first; returns how many there were, or
 * -1 when Redis answered with an error (it says so on stderr). */
long th_each_event(redisContext *c, const char *prefix, th_event_fn fn, void *arg);
/* Count events of task id with this name (NULL = any); -1 on a Redis error. */
int th_count_events(redisContext *c, const char *prefix, const char *id, const char *event);
/* How many events the stream holds, of every task. */
long long th_event_total(redisContext *c, const char *prefix);
/* Every key that holds task state, and the event and finished counts, as text
 * (malloc'd): equal snapshots prove that nothing was written between them. */
char *th_task_snapshot(redisContext *c, const char *prefix);
/* When host_id's entry runs out (ms), or -1 when it is not among the live hosts. */
double th_host_expiry(redisContext *c, const char *prefix, const char *host_id);
/* How many hosts are listed. */
long long th_host_count(redisContext *c, const char *prefix);
/* A field of host_id's entry ("handlers", "pid", ...; malloc'd), or NULL (also when Redis
 * cannot be read: a test may ask while a failover is under way). */
char *th_host_field(redisContext *c, const char *prefix, const char *host_id, const char *field);
/* The attempts host_id holds, as "<id>,<handler attempt>," pairs (malloc'd; "" for none),
 * or NULL when Redis cannot be read. */
char *th_host_held(redisContext *c, const char *prefix, const char *host_id);
/* Whether host_id's entry (its details) is there. */
bool th_host_entry_exists(redisContext *c, const char *prefix, const char *host_id);
/* Mark handler paused as an operator's pause does, but without telling the hosts (only
 * their heartbeats can see it). */
void th_pause_plant(redisContext *c, const char *prefix, const char *handler);
/* The protocol version the data under prefix is marked with (malloc'd), or NULL for none. */
char *th_protocol_get(redisContext *c, const char *prefix);
/* Mark the data under prefix as written by protocol `version` (to test a mismatch). */
void th_protocol_set(redisContext *c, const char *prefix, const char *version);
/* Leave under prefix a key that only protocol 1 wrote (its event stream), as the first
 * release's data would be. */
void th_protocol1_data(redisContext *c, const char *prefix);
/* A host `host` that died long ago, whose record of held attempts is a string (a key of
 * the wrong type, written by hand): the next burial touches it. */
void th_plant_wrong_types(redisContext *c, const char *prefix, const char *host);

/* Poll cond every few ms until it is true or timeout_s passes; returns its last value. */
#define TH_WAIT_UNTIL(timeout_s, cond)                                                             \
    ({                                                                                             \
        double th__end = th_now() + (timeout_s);                                                   \
        bool th__ok;                                                                               \
        while (!(th__ok = (cond)) && th_now() < th__end)                                           \
            th_sleep(0.005);                                                                       \
        th__ok;                                                                                    \
    })

double th_now(void);     /* monotonic seconds */
void th_sleep(double s); /* only inside polling loops */

/* A fresh scratch folder under $BUILD/tmp (malloc'd path); removed by th_cleanup. */
char *th_tmpdir(const char *tag);
/* Remove every scratch folder this process made, stop every server and host it started. */
void th_cleanup(void);

#endif

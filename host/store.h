/*
 * store.h - all Redis I/O of hosts and clients (protocol version 2). Only
 * the store's files (store*.c, store_conn.h, store_int.h, store_lua.h)
 * include hiredis and know key names and Lua scripts; every multi-key change
 * is one script, called by SHA and loaded where a server lacks it.
 *
 * A store is one connection and is not thread-safe: give each thread its own.
 * Functions return 0 or a negative errno: -EIO when Redis cannot be reached
 * (the store reconnects on the next call, with backoff), -ENOENT for an unknown
 * task, -EINVAL for bad input (store_errstr says what), -ESTALE for a write
 * refused by fencing, -EPROTO for an answer the store cannot read.
 */
#ifndef BGT_STORE_H
#define BGT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "config.h"

/* The version of the Redis protocol (key layout and scripts) this build speaks. The
 * first write marks the data with it ({P}:meta, with the shard count); a store refuses,
 * at connect, a Redis whose data carries another version (or version 1's keys). */
#define STORE_PROTOCOL_VERSION 2
#define STORE_DEFAULT_URL "redis://127.0.0.1:6379/0"
/* Shards of new data (redis.shards), and the most there may be. */
#define STORE_DEFAULT_SHARDS 16
#define STORE_MAX_SHARDS 1024

/* Where Redis is: one server, a master found through Sentinel, or a Cluster. */
typedef enum redis_kind {
    REDIS_SERVER = 0, /* redis://host:port/db, unix:///path, /path */
    REDIS_SENTINEL,   /* redis+sentinel://host:port,.../MASTER/db */
    REDIS_CLUSTER,    /* redis+cluster://host:port,... */
} redis_kind;

typedef struct redis_hostport {
    char *host;
    int port;
} redis_hostport;

typedef struct redis_addr {
    redis_kind kind;
    char *host;            /* REDIS_SERVER over TCP; NULL otherwise */
    int port;
    char *path;            /* REDIS_SERVER: a unix socket path, or NULL */
    int db;                /* the database (a cluster has 0 only) */
    char *username;        /* ACL user, NULL for the default user */
    char *password;        /* NULL for none; never in a message */
    redis_hostport *seeds; /* the sentinels, or the cluster nodes to start from */
    size_t nseeds;
    char *master;          /* REDIS_SENTINEL: the name the sentinels monitor */
} redis_addr;

/*
 * Parse "redis://[[user]:password@]host[:port][/db]",
 * "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db]"
 * (sentinel port 26379 by default), "redis+cluster://[[user]:password@]host[:port][,...]",
 * "unix:///path[?db=N]" or a bare "/path" (a unix socket). IPv6 addresses go in
 * brackets. The password is for the Redis servers (sentinels that need one get
 * it too). Returns 0, or -EINVAL with err saying what is wrong, the URL in it
 * masked. Free with redis_addr_free.
 */
int redis_addr_parse(const char *url, redis_addr *out, char *err, size_t errlen);
void redis_addr_free(redis_addr *a);
/* A deep copy of src into dst (free with redis_addr_free). */
void redis_addr_copy(redis_addr *dst, const redis_addr *src);
/* url with any password (and user) replaced by "***", in every form a URL can carry
 * one ("redis://:pw@h", "redis:/:pw@h", ":pw@h", "user:pw@h", sentinel and cluster
 * lists). Malloc'd; the one form of a URL that goes into messages. */
char *redis_url_mask(const char *url);
/* "127.0.0.1:6379 db 0", "master 'm' db 0, through the sentinels at h:p,...", ... for
 * logs: never the password. Returns buf. */
const char *redis_addr_describe(const redis_addr *a, char *buf, size_t n);
/* The address to use: the first of cli (--redis), $BGTASK_REDIS, config, default. */
const char *redis_url_pick(const char *cli, const char *config);
/*
 * Pick the URL as redis_url_pick does and parse it into out; then the
 * password when the URL has none: $BGTASK_REDIS_PASSWORD, else
 * config_password (redis.password or redis.password_file), else none. On
 * -EINVAL err says which source was wrong and why ("--redis: ...",
 * "FILE: redis.url: ...", "$BGTASK_REDIS: ..."), the password masked.
 */
int redis_addr_resolve(const char *cli, const char *config_url, const char *config_path,
                       const char *config_password, redis_addr *out, char *err, size_t errlen);

typedef struct store store;

/* Whether this build can talk to addr: 0, or -ENOTSUP with err saying why (a Redis
 * Cluster needs protocol 2). Call it before anything else touches Redis. */
int store_addr_check(const redis_addr *addr, char *err, size_t errlen);

/*
 * A new, unconnected store for the Redis at addr, with cfg's key prefix, its
 * password when addr has none (redis.password) and the limits it enforces
 * (tasks.max_args_bytes, max_result_bytes, max_subtasks, events_maxlen,
 * retention). addr and cfg are read at the call only. Free with store_free.
 */
store *store_open(const bgt_config *cfg, const redis_addr *addr);
void store_free(store *st);
/*
 * Connect now (and AUTH, SELECT, and check the protocol version of the data
 * there). -EIO with store_errstr saying why; -EPROTONOSUPPORT when the data
 * in Redis was written by another protocol version (store_errstr names both).
 */
int store_connect(store *st);
/*
 * Make sure the data is marked as this protocol's with a shard count ({P}:meta),
 * marking it when it is new (with redis.shards): afterwards store_shards is the
 * data's count. Writers call it before their first write (the store does for
 * submissions); a host compares the count with its configuration. 0, -EIO, or
 * -EPROTONOSUPPORT (store_errstr says why).
 */
int store_prepare(store *st);
/*
 * The keys holding a value of the wrong type (written by hand) that scripts
 * found since the last call, treated as absent and removed; space-separated,
 * malloc'd, or NULL when none. For the caller's log.
 */
char *store_take_warnings(store *st);
/* Text of the last error; valid until the next call on st. */
const char *store_errstr(const store *st);
/* Set the message store_errstr returns (for a caller's own refusal of what the store read). */
__attribute__((format(printf, 2, 3))) void store_set_error(store *st, const char *fmt, ...);
/* The key prefix. */
const char *store_prefix(const store *st);
/* PING. */
int store_ping(store *st);
/* What one master said: the server ("host:port" or a socket path) and its answer. */
typedef struct store_master_text {
    char *server;
    char *text;
} store_master_text;
void store_master_texts_free(store_master_text *t, size_t n);
/*
 * Redis' setting name (CONFIG GET) on every master: the one server, the
 * master the sentinels name, or each master of a cluster. *out gets one
 * value per master (free with store_master_texts_free), *n how many.
 * -ENOENT when Redis has no such setting, -EIO when a master cannot be reached.
 */
int store_config_get(store *st, const char *name, store_master_text **out, size_t *n);
/* Change Redis' setting name to value (CONFIG SET) on every master: for tools that run
 * private servers (the bench), never for hosts. -EPROTO when a master refuses
 * (store_errstr names it). */
int store_config_set(store *st, const char *name, const char *value);
/* Wake a store blocked in another thread (store_next_*):
 * that call returns -EINTR. Safe to call from any thread. */
void store_interrupt(store *st);

/* ---- submission (clients, plugins, HTTP) ---- */

typedef struct submit_req {
    const char *id;          /* NULL: a fresh UUIDv4 */
    const char *handler;     /* required */
    const char *args;        /* JSON text, NULL for {} */
    int max_attempts;        /* 0: the handler's default */
    double delay_s;          /* 0: claimable now */
    int parallelism;         /* parallel tasks: 0 = the handler's */
    const char *on_failure;  /* parallel tasks: NULL = the handler's, "continue", "fail_fast" */
    /* out */
    char id_out[37];         /* the task id */
    int rc;                  /* 0, -EINVAL or -E2BIG (err says why), -EEXIST (id taken) */
    bool not_durable;        /* rc 0, but fewer replicas than redis.min_replicas_ack confirmed
                                it within redis.ack_timeout (err says how many): the task is on
                                the master only, and a failover before it replicates loses it.
                                Submitting it again with the same id is safe: -EEXIST then
                                means it was kept. */
    char err[200];
} submit_req;

/*
 * Submit n tasks in one script call. Each request's rc says how it went; the
 * function returns 0 if the call reached Redis (even if some requests were
 * refused), -EIO otherwise. Validates handler names, ids, JSON and sizes before
 * anything is sent: a refused request changes nothing.
 */
int store_submit(store *st, submit_req *reqs, size_t n);

/* ---- reading (clients) ---- */

/* The task record as a JSON object: the record's fields (DESIGN §5) with
 * numbers as numbers and args/result as JSON values. -ENOENT if unknown. */
int store_get_task(store *st, const char *id, cJSON **out);
/* What to list: tasks newest first by their key, finished_ms once finished, else created_ms
 * (then by id, descending). */
typedef struct list_query {
    const char *state;       /* NULL, or ONGOING, SUCCESS, FAILURE, CANCELLED (any case) */
    const char *handler;     /* NULL, or a handler name */
    int64_t since_ms;        /* keys from (inclusive), 0: no limit */
    int64_t until_ms;        /* keys until (exclusive), 0: no limit */
    int limit;               /* 1..1000 */
    bool below;              /* only tasks below the position (key, id) a page ended at: */
    int64_t below_key;
    char below_id[37];
} list_query;
/*
 * A page of tasks: *out a JSON array of records (owner null), at most limit;
 * *more says whether more may follow, and then (*next_key, next_id) is the
 * position to go on below (a query with below set to it gives the next page:
 * every task listed once, as long as the tasks do not change meanwhile).
 * Finished tasks are found by a binary search on their done lists (O(log n +
 * page) per list), unfinished ones by reading every queue and held hash of
 * the handlers asked for. One script call per shard, pipelined, then the
 * records. -EINVAL for a bad state or handler name.
 */
int store_list_tasks(store *st, const list_query *q, cJSON **out, bool *more, int64_t *next_key,
                     char next_id[37]);
/* Live hosts: array of {id, machine, pid, version, handlers, workers, running, started_ms,
 * expires_ms, breakers, paused (its handlers that are paused)}. */
int store_list_hosts(store *st, cJSON **out);
/* {"handlers": [{handler, queued, due, oldest_due_age_ms, finished, paused (+ paused_ms,
 * reason when paused)}], "running": N,
 * "finished": N, "hosts": N (live)}: queued are the tasks waiting (delayed ones too),
 * due those that may start now, running the attempts held by hosts, finished the
 * finished tasks kept (retention). */
int store_stats(store *st, cJSON **out);

typedef enum cancel_result {
    CANCEL_DONE = 0,       /* the task was not running: it is CANCELLED now */
    CANCEL_REQUESTED = 1,  /* the owning host was asked to stop it */
    CANCEL_FINAL = 2,      /* already in a terminal state (state_out says which) */
} cancel_result;

/* Cancel a task. Returns a cancel_result >= 0, or -ENOENT, -EIO. state_out gets
 * the terminal state for CANCEL_FINAL and the owning host's id for CANCEL_REQUESTED. */
int store_cancel(store *st, const char *id, char *state_out, size_t n);

/* ---- following a task (clients) ---- */

/* Turn st into a subscriber of the task's live events (P:ev:<id>). */
int store_subscribe_task(store *st, const char *id);
/*
 * Wait up to timeout_s for the next event on a subscribed store. Returns 0 with
 * *name (event name, owned by caller) and *data (payload, owned by caller),
 * -ETIMEDOUT, -EINTR (store_interrupt), or -EIO.
 */
int store_next_event(store *st, double timeout_s, char **name, cJSON **data);

/* Turn st into a subscriber of every task's live events (for dashboards and
 * SSE fan-out); store_next_event_ex then says which task each is for. */
int store_subscribe_all(store *st);
/*
 * Like store_next_event, and also: *stream_id (owned by caller, may be NULL if
 * not wanted) gets the event's id in P:events, usable as an SSE id and for
 * store_events_after.
 */
int store_next_event_ex(store *st, double timeout_s, char **name, cJSON **data, char **stream_id);
/*
 * The events of task id recorded in P:events after stream id `after` ("0"
 * for all that are kept), oldest first, at most limit: a JSON array of
 * {"id", "event", "data"}. Scans the capped stream: meant for resuming a
 * stream (SSE Last-Event-ID), not for bulk reads.
 */
int store_events_after(store *st, const char *id, const char *after, int limit, cJSON **out);
/*
 * Whether s can name a place in the event stream (a stream_id of
 * store_next_event_ex, the `after` of store_events_after): "0" (before the
 * first event), "<ms>-<seq>" (a stream entry's id: its first event) or
 * "<ms>-<seq>.<n>" (its event n, 1..99999: an entry packs several), the
 * numbers decimal and within 64 bits, and not the last entry id there can be
 * (nothing comes after it). Clients check what they are given with it (an
 * SSE Last-Event-ID) before they ask Redis.
 */
bool store_event_id_valid(const char *s);
/* An event read back: stream id, task id, name, payload JSON; borrowed for the call. */
typedef void (*store_event_fn)(void *arg, const char *sid, const char *task_id, const char *name,
                               const char *payload);
/*
 * Call fn for every event kept in the streams, shard by shard (each shard's in
 * the order it was written). Meant for tools and tests: it reads everything.
 * Returns how many events it saw, or a negative errno.
 */
long store_each_event(store *st, store_event_fn fn, void *arg);
/* How many tasks have not finished (waiting, delayed or running), over every shard. */
int store_count_open(store *st, long long *n);
/* How many finished tasks of handler are kept (at most tasks.retention_max): one LLEN per
 * shard, pipelined. */
int store_count_finished(store *st, const char *handler, long long *n);
/* Redis' INFO text for a section ("commandstats", "cpu", ...) from every master, as
 * store_config_get gives its values: a cluster's figures are the sum over its masters. */
int store_info(store *st, const char *section, store_master_text **out, size_t *n);
/* Redis' clock, ms since the epoch (what scores, stream ids and the history go by). */
int store_time_ms(store *st, int64_t *now);

/*
 * A task's log (its bgt_log lines at tasks.log_level and above, kept with the
 * record): {"task_id", "next", "dropped", "lines": [{"seq", "ts_ms", "level",
 * "attempt", "subtask" (null: the task's own), "host", "message"}]}, the lines
 * numbered after `after`, oldest first, at most limit. next: the last seq
 * given (after, when none): pass it as after to read on. dropped: lines no
 * longer kept (the oldest go past tasks.log_lines or tasks.log_bytes, or were
 * dropped by a host). *ended (if not NULL): the task has finished. -ENOENT
 * for an unknown task, -EINVAL for a malformed id. Caller owns *out.
 */
int store_task_logs(store *st, const char *id, long long after, int limit, cJSON **out,
                    bool *ended);

/* ---- history: tasks ended per handler, outcome and minute ---- */

/* The outcomes of a finished task, in the order answers list them. */
#define STORE_OUTCOMES 4
extern const char *const store_outcomes[STORE_OUTCOMES]; /* success, partial_success, failure,
                                                            cancelled */
/* The index of outcome name (len bytes) in store_outcomes, or -1. */
int store_outcome_index(const char *name, size_t len);
/* The buckets of step_min minutes from since_ms (a whole minute) that cover the minutes
 * starting before until_ms. */
long store_history_buckets(int64_t since_ms, int64_t until_ms, int step_min);
/*
 * The tasks that ended from since_ms (a whole number of minutes) until until_ms
 * (> since_ms), per handler (only handler, when not NULL) and outcome, in
 * buckets of step_min minutes (store_history_buckets of them): {"since_ms",
 * "until_ms", "step_s", "handlers": [{"handler", "success": [n, ...],
 * "partial_success": [...], "failure": [...], "cancelled": [...]}]} by name:
 * the handlers with counts in the range, and handler always. Counts are kept
 * for history.window (of the hosts that wrote them). One script call per
 * shard, pipelined; -EINVAL for a bad handler name or range. Caller owns *out.
 */
int store_history(store *st, const char *handler, int64_t since_ms, int64_t until_ms,
                  int step_min, cJSON **out);

/* ---- the host's side ---- */

/*
 * The shards the data is spread over (redis.shards when the data is new, else the count
 * recorded with it, known once st has connected).
 */
int store_shards(const store *st);
/* The shard of task id: FNV-1a-32 of the 36 bytes of the lowercase id, mod the shards. */
int store_shard_of(const store *st, const char *id);

/* What the host tells claim about each handler it serves. */
typedef struct claim_handler {
    const char *name;
    int max_attempts;    /* the handler's default */
    bool not_retriable;  /* an attempt lost with its host fails the task */
} claim_handler;

/* A claimed attempt. Free its strings with store_claimed_clear. */
typedef struct claimed {
    char id[37];
    char handler[64];
    char token[32];          /* the lease token "<attempt> <started_ms>": every write for the
                                attempt carries it, and is refused when it no longer matches */
    uint32_t attempt;        /* 1 for the first attempt */
    uint32_t released;       /* attempts given back at shutdown (not counted) */
    int max_attempts;        /* the task's own, else its handler's */
    char *args;              /* JSON text, as submitted */
    double progress_current; /* persisted by earlier attempts */
    double progress_total;
    int subtasks;            /* parallel: how many are persisted (0 = not split yet) */
    int parallelism;         /* parallel: the task's own, 0 = the handler's */
    int fail_fast;           /* parallel: the task's own on_failure: 1, 0, or -1 = the handler's */
} claimed;

void store_claimed_clear(claimed *c);

/*
 * Claim up to max due tasks of the given handlers in shard for host_id, in one
 * script call. Tasks that may not run end there instead (a cancel request:
 * CANCELLED; an attempt lost with its host of a handler that is not retriable,
 * the last attempt used, a corrupted record: FAILURE). The claim makes the host's
 * entry in the shard if it has none (ttl_ms), but never extends it: only the
 * heartbeat does. Fills out[0..*nout). *next_due_s: 0 when more may be due now,
 * else the delay until the earliest task of these queues falls due or another
 * host's entry in the shard runs out (-1: neither), by Redis' clock.
 */
int store_claim(store *st, const char *host_id, int shard, const claim_handler *hs, size_t nh,
                int max, int64_t ttl_ms, claimed *out, int *nout, double *next_due_s);

/* One attempt in a heartbeat. */
typedef struct hb_item {
    const char *id;
    const char *token;
    int status;  /* out: HB_OK, HB_LOST or HB_CANCEL */
} hb_item;
enum { HB_OK = 0, HB_LOST = 1, HB_CANCEL = 2 };

/* The host's own entry. */
typedef struct host_info {
    const char *id;
    const char *machine;
    int pid;
    const char *version;
    const char *handlers;  /* comma-separated */
    int workers;
    int running;
    int64_t started_ms;
    int64_t ttl_ms;        /* the entry runs out after this without a heartbeat */
    const char *breakers;  /* the open crash breakers of its isolated plugins; "" or NULL: none */
} host_info;

/*
 * The host's heartbeat: renews its entry in every shard (the lease of all its
 * attempts) and its description, buries hosts whose entry ran out (their
 * attempts become claimable), removes finished tasks past tasks.retention,
 * and fills each item's status. One script call per shard and one for the
 * description, pipelined.
 */
int store_heartbeat(store *st, const host_info *hi, hb_item *items, size_t n);
/* Remove the host's entries (graceful exit); a shard where it still holds attempts keeps
 * its entry until it runs out. */
int store_host_remove(store *st, const char *host_id);

/* What a write does. */
typedef enum fin_op {
    FIN_PROGRESS = 0, /* persist progress + bgtask_updated */
    FIN_SUCCESS = 1,
    FIN_FAILURE = 2,
    FIN_CANCELLED = 3,
    FIN_RETRY = 4,   /* claimable again after backoff_ms (the host checks max_attempts) */
    FIN_RELEASE = 5, /* claimable again now, released += 1 */
    FIN_SUBTASK = 6, /* a subtask's outcome (sub_* fields); counted once */
    FIN_LOST = 7,    /* given up by its host (its lease ran out by the host's clock):
                          claimable again now, as if the host had died */
} fin_op;

/* One fenced write of the host for one attempt. Strings are borrowed. */
typedef struct fin_item {
    fin_op op;
    const char *id;
    const char *handler;
    const char *token; /* the claim's lease token (a subtask: its task's) */
    bool parallel;     /* a parallel task: its subtasks go with its record */
    /* log lines to keep first (any op but FIN_SUBTASK and FIN_LOST), each "<ts_ms> <level>
     * <subtask|-> <text>", and how many were dropped before they could be written: */
    char **log_lines;
    size_t nlog;
    long log_dropped;
    /* progress to persist first (any op but FIN_SUBTASK): */
    bool has_progress;
    double current, total;
    const char *progress_message;  /* may be NULL */
    const char *progress_body;     /* its bgtask_updated event (ev_body_progress) */
    /* the state change (not FIN_PROGRESS): */
    const char *message;           /* record's message (the error for FAILURE) */
    const char *result;            /* JSON text for SUCCESS, or NULL */
    bool partial;                  /* FIN_SUCCESS with failed subtasks: partial_success */
    int ev;                        /* the change's event (an ev_kind), -1 for none */
    const char *ev_body;           /* its body (ev_body_ending) */
    int64_t backoff_ms;            /* FIN_RETRY */
    int sub_index;                 /* FIN_SUBTASK */
    const char *sub_state;         /* FIN_SUBTASK: SUCCESS, FAILURE, CANCELLED or RETRY */
    uint32_t sub_attempt;          /* FIN_SUBTASK */
    /* out */
    int rc; /* 0 applied, -ESTALE fenced out */
} fin_item;

/*
 * Apply n writes of host_id, in order: one script call per shard the writes
 * are in, pipelined. Each item's rc says whether fencing let it through.
 * Returns 0 if the calls reached Redis; -EAGAIN when they did but a change of
 * state among them was not confirmed by redis.min_replicas_ack replicas in
 * time (store_errstr says how many): the writes are on the master only.
 * Sending the same writes again is safe: a write that went through answers
 * rc 0 again, without changing anything.
 */
int store_apply(store *st, const char *host_id, fin_item *items, size_t n);

/*
 * Subscribe st to what a host listens to: its control channel (cancel requests),
 * the one every host listens to (pause, resume) and the wake-ups of the
 * handlers it serves. Call it again when the handlers
 * change.
 */
int store_subscribe_control(store *st, const char *host_id, const char *const *handlers, size_t nh);
typedef enum ctl_kind {
    CTL_CANCEL = 1, /* stop the attempt of task id */
    CTL_WAKE = 2,   /* a handler may have work in shard */
    CTL_PAUSE = 3,  /* an operator paused handler (to every host) */
    CTL_RESUME = 4, /* an operator resumed handler (to every host) */
} ctl_kind;
typedef struct ctl_msg {
    ctl_kind kind;
    char id[37];
    int shard;
    char handler[64];
} ctl_msg;
/* The next control message. Returns 0, -ETIMEDOUT, -EINTR, -EIO; -EAGAIN after the
 * connection was made again (wake-ups may have been missed meanwhile). */
int store_next_control(store *st, double timeout_s, ctl_msg *out);

/* ---- parallel tasks ---- */

/* One subtask as persisted in P:sub:<id>. */
typedef struct sub_rec {
    char *args;        /* JSON text */
    char state[12];    /* PENDING, SUCCESS, FAILURE, CANCELLED */
    uint32_t attempt;  /* runs so far */
    char *message;
    char *result;      /* JSON text or NULL */
} sub_rec;

/* Read the n subtasks of task id; *out is an array of n (free with store_sub_recs_free). */
int store_load_subtasks(store *st, const char *id, int n, sub_rec **out);
void store_sub_recs_free(sub_rec *subs, int n);
/* Persist the split of task id (fenced by host and lease token): subs are n JSON
 * texts. -ESTALE when fenced out. */
int store_split(store *st, const char *host_id, const char *id, const char *token,
                char *const *subs, int n);
/*
 * Run a finished task again as a new attempt (the operator's retry). A
 * single task in FAILURE or CANCELLED runs again as a whole: its error,
 * result and end are cleared, its attempt number goes on growing, and its
 * max_attempts counts from here; a parallel task runs its failed and
 * cancelled subtasks again. *reset: 1 for a single task, the subtasks reset
 * for a parallel one (*parallel). -ENOENT, -EBUSY (still running),
 * -EALREADY (nothing to retry: a single task that succeeded, a parallel one
 * with no failed or cancelled subtasks); store_errstr says which.
 */
int store_retry(store *st, const char *id, int *reset, bool *parallel);

/* ---- the operator's bulk operations (store_bulk.c) ---- */

typedef enum bulk_op {
    BULK_RETRY = 0, /* finished tasks of a handler that failed (or were cancelled) run again */
    BULK_PURGE,     /* finished tasks are deleted: record, subtasks, done-list entry */
    BULK_CANCEL,    /* unfinished tasks of a handler are cancelled (running ones: requested) */
} bulk_op;

#define BULK_LIMIT_DEFAULT 10000
#define BULK_LIMIT_MAX 100000
#define BULK_IDS_MAX 1000   /* ids of one request (purge, cancel) */
#define BULK_IDS_SHOWN 100  /* ids an answer lists */

/* What a bulk operation acts on: a filter, or ids. Strings are borrowed for the call. */
typedef struct bulk_req {
    bulk_op op;
    const char *handler;       /* the filter's handler: required for retry and cancel */
    const char *const *states; /* retry: FAILURE (default), CANCELLED; purge: SUCCESS, FAILURE,
                                  CANCELLED (default all; ONGOING is refused); any case */
    size_t nstates;
    int64_t since_ms, until_ms; /* retry: finished in [since, until) (ms epoch; 0: open) */
    bool has_older_than;        /* purge: required with a filter */
    int64_t older_than_ms;      /* purge: finished more than this long ago (Redis' clock) */
    const char *const *ids;     /* purge, cancel: exactly these tasks (1..BULK_IDS_MAX), alone */
    size_t nids;
    long limit;   /* most tasks acted on: 0 = BULK_LIMIT_DEFAULT, else 1..BULK_LIMIT_MAX */
    bool dry_run; /* select and count only */
} bulk_req;

/*
 * Run a bulk operation. *out (caller frees) is the answer: {"matched",
 * "retried" | "deleted" | "cancelled" (+ "cancel_requested"), "dry_run",
 * "truncated" (more matched than limit), "task_ids" (the first
 * BULK_IDS_SHOWN acted on, or that would be), "skipped" (purge, and the ids
 * form: ids unknown or in a state the operation does not take)}. Retry acts on
 * the newest first, purge on the oldest. A task that changed between the
 * selection and the change is left alone and not counted. -EINVAL for bad
 * input, store_errstr naming the field: nothing is read or changed.
 */
int store_bulk(store *st, const bulk_req *q, cJSON **out);

/* ---- paused handlers (store_pause.c) ---- */

#define PAUSE_REASON_MAX 200

/* A handler's pause, as store_pause answers it. */
typedef struct pause_state {
    bool paused;
    int64_t paused_ms; /* since when (Redis' clock), 0 when not paused */
    char reason[PAUSE_REASON_MAX + 1];
    bool changed; /* this call paused or resumed it */
} pause_state;

/*
 * Pause (pause true, with reason: NULL or up to PAUSE_REASON_MAX bytes) or
 * resume handler: no host claims a paused handler's tasks (running ones
 * finish), submissions still wait in its queue. Every host is told at once
 * (P:ctl) and reads the paused handlers at each heartbeat too. Pausing a
 * paused handler, or resuming one that is not, changes nothing (changed
 * false). -EINVAL for an invalid name or reason; -ENOENT for a handler that no
 * live host serves, no task waits for and that is not paused.
 */
int store_pause(store *st, const char *handler, bool pause, const char *reason,
                pause_state *out);
/* The paused handlers: {"<handler>": {"paused_ms", "reason"}}; *out: caller frees. */
int store_paused(store *st, cJSON **out);
/* The paused handlers the last heartbeat read, space-separated ("" none; malloc'd), or NULL
 * when none was read since the last call. */
char *store_take_paused(store *st);

#endif

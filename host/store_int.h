/*
 * store_int.h - what the files of the store share (store.c: the connection and
 * its plumbing; store_ops.c: the scripts clients and hosts call; store_read.c:
 * the reads of records, hosts and events). Nothing outside the store includes
 * it: key names and hiredis stay inside these files.
 */
#ifndef BGT_STORE_INT_H
#define BGT_STORE_INT_H

#include <hiredis/hiredis.h>

#include "store.h"
#include "store_conn.h"

enum {
    SC_SUBMIT,
    SC_CLAIM,
    SC_HEARTBEAT,
    SC_APPLY,
    SC_CANCEL,
    SC_SPLIT,
    SC_RETRY,
    SC_LEAVE,
    SC_HOST,
    SC_SELECT,
    SC_PURGE,
    SC_PAUSE,
    SC_HISTORY,
    SC_LIST,
    SC_COUNT
};

/* Limits the store enforces (from the config: tasks.*). */
typedef struct store_limits {
    size_t max_args_bytes;
    size_t max_result_bytes;
    int max_subtasks;
    long events_maxlen; /* events kept, over all shards */
    double retention_s; /* finished tasks are kept this long; 0 = no limit */
    long retention_max; /* finished tasks kept per handler; 0 = no limit */
    long long history_ms; /* ended tasks are counted per minute for this long; 0 = no history */
    int log_lines;        /* a task's log lines kept (tasks.log_lines) */
    size_t log_bytes;     /* and their bytes (tasks.log_bytes) */
} store_limits;

/* An event read back from a stream entry or a message, waiting to be taken. */
typedef struct store_event {
    char *name;
    char *payload; /* JSON text */
    char *sid;     /* its stream id, NULL if it was not stored */
    char task_id[37];
} store_event;

struct store {
    char *prefix;
    char *gtag;  /* "{P}": the hash tag of what every shard shares */
    char **tags; /* "{P:s}" of each shard */
    int shards;
    bool marked;    /* {P}:meta is known to say this protocol and shard count */
    bool meta_read; /* {P}:meta was read and its shard count adopted */
    store_limits lim;
    rconn *rc;              /* the link to Redis */
    char sha[SC_COUNT][41]; /* the scripts' SHAs, once a server told them */
    int ack_n;              /* redis.min_replicas_ack: replicas a durable write waits for */
    int ack_ms;             /* redis.ack_timeout, in ms */
    int intr[2];            /* self-pipe for store_interrupt */
    char err[512];
    char warn[512]; /* keys of the wrong type scripts removed, not taken yet */
    char *paused;   /* the paused handlers the last heartbeat read (space-separated), not taken
                       yet; NULL: none read */
    /* A subscriber: the events unpacked from the last message, not taken yet. */
    char only[37]; /* store_subscribe_task: the task whose events are wanted */
    store_event *evq;
    size_t evq_head, evq_n, evq_cap;
};

/*
 * A growing argv for script calls. Numbers are formatted into arena chunks so
 * a call with thousands of arguments costs a handful of allocations.
 */
typedef struct argbuf {
    const char **v;
    size_t *len;
    size_t n, cap;
    char *num;  /* arena of formatted numbers */
    size_t num_used, num_cap;
    char **nums; /* arena chunks to free */
    size_t nnums;
} argbuf;

/* One of several script calls run together (store__eval_many). */
typedef struct script_call {
    int script;
    argbuf a;          /* started with store__args_script */
    bool durable;      /* with redis.min_replicas_ack: a WAIT for the replicas after it */
    redisReply *reply; /* out: owned by the caller */
    bool short_;       /* out: durable, but fewer replicas confirmed it in time */
} script_call;

/* store.c */
/* "<prefix>:" + fmt into buf (a key name); returns buf. */
__attribute__((format(printf, 4, 5))) const char *store__key(const store *st, char *buf,
                                                              size_t n, const char *fmt, ...);
/* Run a command routed by key (NULL: any server); *out gets the reply (caller frees)
 * unless it is an error (-EPROTO, the text in store_errstr). */
__attribute__((format(printf, 4, 5))) int store__cmd(store *st, const char *key, redisReply **out,
                                                     const char *fmt, ...);
/* Format a command for store__run into c, routed by key (borrowed); free c->cmd after. */
int store__call_fmt(rcall *c, const char *key, const char *fmt, ...);
/* Run several calls (pipelined where they go to one server); see rconn_run. */
int store__run(store *st, const rcall *calls, size_t n, redisReply **replies);
/* Run a blocking command (BLPOP) routed by key; waits up to timeout_s, store_interrupt cuts it
 * short (-EINTR). */
int store__block(store *st, const char *key, argbuf *a, double timeout_s, redisReply **out);
void store__args_push_len(argbuf *a, const char *s, size_t len);
void store__args_push(argbuf *a, const char *s);
__attribute__((format(printf, 2, 3))) void store__args_pushf(argbuf *a, const char *fmt, ...);
void store__args_free(argbuf *a);
/* Start a script call's argv: EVALSHA sha 1 {P:s} P s, or EVALSHA sha 1 {P} for shard -1. */
void store__args_script(store *st, argbuf *a, int script, int shard);
/* Call a script by SHA (routed by KEYS[1] if any); NOSCRIPT loads it where it is missing. */
int store__eval_script(store *st, int script, argbuf *a, redisReply **out);
/* The same for a write that must be durable: with redis.min_replicas_ack = N, a WAIT N is
 * pipelined after it on the same connection; *short_ is true when fewer replicas confirmed
 * it in time (store_errstr says how many), the change being on the master only. */
int store__eval_script_durable(store *st, int script, argbuf *a, redisReply **out, bool *short_);
/*
 * Run n script calls together (pipelined where they go to one server); each
 * call's reply in calls[i].reply. On an error reply (-EPROTO, store_errstr says
 * it) or a failure to reach Redis (-EIO) no reply is kept. A durable call's
 * short_ says whether its WAIT fell short (store_errstr says how).
 */
int store__eval_many(store *st, script_call *calls, size_t n);
/* Adopt the shard count of {P}:meta before keys are computed: read through the router
 * once unless the connection's check already did (in a cluster, the node that holds it may
 * not be connected yet). -EPROTONOSUPPORT for data of another protocol. */
int store__meta(store *st);
/* Keep the warnings element of a script's reply (wrong-typed keys it removed). */
void store__note_warnings(store *st, const redisReply *r);
/* A task id in lowercase, as keys spell it, into out (37 bytes). */
void store__norm_id(const char *id, char *out);
/* Check id and put its lowercase spelling in out (37 bytes); -EINVAL with the message set. */
int store__take_id(store *st, const char *id, char *out);

/* store_read.c */
/* The records of ids (without their leases: owner null) appended to arr, those in state (any
 * case; NULL: any) of handler (NULL: any) only, in the order of ids. */
int store__fetch_records(store *st, char (*ids)[37], size_t n, const char *state,
                         const char *handler, cJSON *arr);

/* store_ops.c */
/* The per-shard shares of tasks.retention_max (0: no limit) and events.maxlen. */
long store__rmax_shard(const store *st);
long store__evcap_shard(const store *st);

/* store_pause.c */
/* Give each entry of a store_stats "handlers" array "paused" (and the paused handlers that
 * have no entry one of their own), and each host of a store_list_hosts array "paused": its
 * handlers that are paused. */
int store__stats_paused(store *st, cJSON *handlers);
int store__hosts_paused(store *st, cJSON *hosts);

/* store_pack.c */
/* Drop the events not taken yet. */
void store__events_clear(store *st);

#endif

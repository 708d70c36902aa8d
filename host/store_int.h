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

enum { SC_SUBMIT, SC_CLAIM, SC_HEARTBEAT, SC_APPLY, SC_CANCEL, SC_SPLIT, SC_RETRY, SC_COUNT };

/* Limits the store enforces (from the config: tasks.*). */
typedef struct store_limits {
    size_t max_args_bytes;
    size_t max_result_bytes;
    int max_subtasks;
    long events_maxlen;
    double retention_s;  /* finished records expire after this; 0 = never */
} store_limits;

struct store {
    char *prefix;
    store_limits lim;
    rconn *rc;              /* the link to Redis */
    char sha[SC_COUNT][41]; /* the scripts' SHAs, once a server told them */
    int ack_n;              /* redis.min_replicas_ack: replicas a durable write waits for */
    int ack_ms;             /* redis.ack_timeout, in ms */
    int intr[2];            /* self-pipe for store_interrupt */
    char err[512];
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
/* Start a script call's argv: EVALSHA sha 0 prefix maxlen retention. */
void store__args_script(store *st, argbuf *a, int script);
/* Call a script by SHA (routed by KEYS[1] if any); NOSCRIPT loads it where it is missing. */
int store__eval_script(store *st, int script, argbuf *a, redisReply **out);
/* The same for a write that must be durable: with redis.min_replicas_ack = N, a WAIT N is
 * pipelined after it on the same connection; *short_ is true when fewer replicas confirmed
 * it in time (store_errstr says how many), the change being on the master only. */
int store__eval_script_durable(store *st, int script, argbuf *a, redisReply **out, bool *short_);

#endif

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

enum { SC_SUBMIT, SC_CLAIM, SC_HEARTBEAT, SC_APPLY, SC_CANCEL, SC_SPLIT, SC_RETRY, SC_COUNT };


/* Limits the store enforces (from the config: tasks.*). */
typedef struct store_limits {
    size_t max_args_bytes;
    size_t max_result_bytes;
    int max_subtasks;
    long events_maxlen;
    double retention_s;  /* finished records expire after this; 0 = never */
} store_limits;

#define CMD_TIMEOUT_S 5.0
#define BACKOFF_MIN_S 0.05
#define BACKOFF_MAX_S 5.0

struct store {
    redis_addr addr;
    char *prefix;
    store_limits lim;
    redisContext *c;
    char sha[SC_COUNT][41];
    bool subscribed;        /* a subscriber connection: only pub/sub replies */
    char *sub_channel;      /* what to re-subscribe after a reconnect */
    double retry_at;        /* no reconnect attempt before this (mono) */
    double backoff;         /* current reconnect backoff */
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
int store__conn_failed(store *st, const char *what);
void store__drop_conn(store *st);
int store__ensure(store *st);
/* Run a command; *out gets the reply (caller frees) unless it is an error. */
__attribute__((format(printf, 3, 4))) int store__cmd(store *st, redisReply **out,
                                                     const char *fmt, ...);
void store__args_push_len(argbuf *a, const char *s, size_t len);
void store__args_push(argbuf *a, const char *s);
__attribute__((format(printf, 2, 3))) void store__args_pushf(argbuf *a, const char *fmt, ...);
void store__args_free(argbuf *a);
/* Start a script call's argv: EVALSHA sha 0 prefix maxlen retention. */
void store__args_script(store *st, argbuf *a, int script);
/* Call a script by SHA; on NOSCRIPT load the scripts again and retry once. */
int store__eval_script(store *st, int script, argbuf *a, redisReply **out);
/* Wait for one reply on st->c: -ETIMEDOUT, -EINTR (store_interrupt), -EIO. */
int store__wait_reply(store *st, double timeout_s, redisReply **out);

#endif

/*
 * harness_ha.c - Redis high-availability setups for tests, all on free
 * loopback ports: a master with replicas watched by three redis-sentinel
 * processes, and a Redis Cluster of masters with replicas. Failover
 * settings are short (a master is down after 1 s) so a failover in a test
 * takes seconds; every wait is a poll with a deadline.
 */
#include "harness_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* How long a setup may take to come together (sentinels finding each other take ~2 s). */
#define HA_SETUP_TIMEOUT_S 60.0
/* Sentinel: a master that does not answer for this long is down. */
#define SENTINEL_DOWN_MS 1000
/* Sentinel: how long a failover may take before another is tried. */
#define SENTINEL_FAILOVER_MS 3000
/* Cluster: a node that does not answer for this long is failing. */
#define CLUSTER_NODE_TIMEOUT_MS 1000

/* A short-lived connection to port (NULL if it does not answer). */
static redisContext *connect_port(int port)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    if (c)
        redisSetTimeout(c, tv);
    return c;
}

/* One command on a short-lived connection to port; NULL if it failed. */
__attribute__((format(printf, 2, 3))) static redisReply *cmd_port(int port, const char *fmt, ...)
{
    redisContext *c = connect_port(port);
    if (!c)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

/* The value of "field:" in an INFO text, as a malloc'd string (NULL if absent). */
static char *info_field(const char *info, const char *field)
{
    size_t n = strlen(field);
    for (const char *p = info; p && *p;) {
        if (strncmp(p, field, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            size_t len = strcspn(v, "\r\n");
            char *out = xrealloc(NULL, len + 1);
            memcpy(out, v, len);
            out[len] = '\0';
            return out;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return NULL;
}

/* INFO section's field on the server at port (malloc'd), or NULL. */
static char *info_of(int port, const char *section, const char *field)
{
    redisReply *r = cmd_port(port, "INFO %s", section);
    char *v = r && r->type == REDIS_REPLY_STRING ? info_field(r->str, field) : NULL;
    if (r)
        freeReplyObject(r);
    return v;
}

static bool info_is(int port, const char *section, const char *field, const char *want)
{
    char *v = info_of(port, section, field);
    bool ok = v && strcmp(v, want) == 0;
    free(v);
    return ok;
}

/* Whether the master at port has n replicas connected and in sync. */
static bool replicas_online(int port, int n)
{
    redisReply *r = cmd_port(port, "INFO replication");
    if (!r)
        return false;
    bool ok = false;
    if (r->type == REDIS_REPLY_STRING) {
        char *conn = info_field(r->str, "connected_slaves");
        ok = conn && atoi(conn) == n;
        free(conn);
        for (int i = 0; ok && i < n; i++) {
            char name[32];
            snprintf(name, sizeof name, "slave%d", i);
            char *s = info_field(r->str, name);
            ok = s && strstr(s, "state=online");
            free(s);
        }
    }
    freeReplyObject(r);
    return ok;
}

/* ---- Sentinel ---- */

/* The field of a SENTINEL MASTER reply (a flat name/value array), or NULL. */
static const char *pair_field(const redisReply *r, const char *name)
{
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING && strcmp(r->element[i]->str, name) == 0 &&
            r->element[i + 1]->type == REDIS_REPLY_STRING)
            return r->element[i + 1]->str;
    return NULL;
}

/* Whether sentinel sp sees master `name` up with `replicas` replicas and the other two
 * sentinels. */
static bool sentinel_ready(int sp, const char *name, int replicas)
{
    redisReply *r = cmd_port(sp, "SENTINEL MASTER %s", name);
    const char *flags = pair_field(r, "flags");
    const char *ns = pair_field(r, "num-slaves");
    const char *no = pair_field(r, "num-other-sentinels");
    bool ok = flags && strcmp(flags, "master") == 0 && ns && atoi(ns) == replicas && no &&
              atoi(no) == 2;
    if (r)
        freeReplyObject(r);
    return ok;
}

/* The port sentinel sp names for master `name`, or -1. */
static int sentinel_master_port(int sp, const char *name)
{
    redisReply *r = cmd_port(sp, "SENTINEL GET-MASTER-ADDR-BY-NAME %s", name);
    int port = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING)
        port = atoi(r->element[1]->str);
    if (r)
        freeReplyObject(r);
    return port;
}

int th_sentinels_start(th_sentinels *s, int replicas)
{
    memset(s, 0, sizeof *s);
    if (replicas < 1 || replicas > TH_MAX_REPLICAS) {
        fprintf(stderr, "harness: 1..%d replicas, got %d\n", TH_MAX_REPLICAS, replicas);
        return -1;
    }
    snprintf(s->name, sizeof s->name, "bgtmaster");
    int rc = th__redis_start_as(&s->servers[0], "master", NULL);
    if (rc < 0)
        return rc;
    s->nservers = 1;
    int mport = s->servers[0].port;
    char *conf = xasprintf("replicaof 127.0.0.1 %d\n", mport);
    for (int i = 1; i <= replicas && rc == 0; i++) {
        rc = th__redis_start_as(&s->servers[i], "replica", conf);
        if (rc == 0)
            s->nservers++;
    }
    free(conf);
    if (rc < 0)
        goto fail;
    /* Sentinels find replicas through the master's INFO: start them once the replicas are in. */
    if (!TH_WAIT_UNTIL(HA_SETUP_TIMEOUT_S, replicas_online(mport, replicas))) {
        fprintf(stderr, "harness: the replicas of 127.0.0.1:%d did not come online\n", mport);
        rc = -1;
        goto fail;
    }
    conf = xasprintf("sentinel monitor %s 127.0.0.1 %d 2\n"
                        "sentinel down-after-milliseconds %s %d\n"
                        "sentinel failover-timeout %s %d\n"
                        "sentinel parallel-syncs %s 1\n",
                        s->name, mport, s->name, SENTINEL_DOWN_MS, s->name, SENTINEL_FAILOVER_MS,
                        s->name);
    for (int i = 0; i < 3 && rc == 0; i++) {
        s->sentinels[i].sentinel = true;
        rc = th__redis_start_as(&s->sentinels[i], "sentinel", conf);
    }
    free(conf);
    if (rc < 0)
        goto fail;
    for (int i = 0; i < 3; i++) {
        if (!TH_WAIT_UNTIL(HA_SETUP_TIMEOUT_S,
                           sentinel_ready(s->sentinels[i].port, s->name, replicas))) {
            fprintf(stderr, "harness: sentinel on port %d does not see the master, %d replicas "
                            "and 2 other sentinels\n",
                    s->sentinels[i].port, replicas);
            rc = -1;
            goto fail;
        }
    }
    snprintf(s->url, sizeof s->url, "redis+sentinel://127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d/%s/0",
             s->sentinels[0].port, s->sentinels[1].port, s->sentinels[2].port, s->name);
    return 0;
fail:
    th_sentinels_stop(s);
    return rc;
}

th_redis *th_sentinels_master(th_sentinels *s)
{
    for (int i = 0; i < 3; i++) {
        if (!s->sentinels[i].pid)
            continue;
        int port = sentinel_master_port(s->sentinels[i].port, s->name);
        for (int k = 0; k < s->nservers; k++)
            if (s->servers[k].port == port && s->servers[k].pid)
                return &s->servers[k];
    }
    return NULL;
}

/* Whether every running sentinel names a master other than old_port, and it says so too. */
static bool switched(th_sentinels *s, int old_port)
{
    int port = -1;
    for (int i = 0; i < 3; i++) {
        if (!s->sentinels[i].pid)
            continue;
        int p = sentinel_master_port(s->sentinels[i].port, s->name);
        if (p < 0 || p == old_port || (port >= 0 && p != port))
            return false;
        port = p;
    }
    return port > 0 && info_is(port, "replication", "role", "master");
}

th_redis *th_sentinels_wait_failover(th_sentinels *s, int old_port, double timeout_s)
{
    if (!TH_WAIT_UNTIL(timeout_s, switched(s, old_port)))
        return NULL;
    return th_sentinels_master(s);
}

void th_sentinels_stop(th_sentinels *s)
{
    for (int i = 0; i < 3; i++)
        if (s->sentinels[i].dir[0])
            th_redis_stop(&s->sentinels[i]);
    for (int i = 0; i < s->nservers; i++)
        th_redis_stop(&s->servers[i]);
    memset(s, 0, sizeof *s);
}

/* ---- Cluster ---- */

/* Whether the node at port says the cluster is ok, with all slots and n nodes known. */
static bool cluster_node_ok(int port, int n)
{
    redisReply *r = cmd_port(port, "CLUSTER INFO");
    bool ok = false;
    if (r && r->type == REDIS_REPLY_STRING) {
        char *state = info_field(r->str, "cluster_state");
        char *slots = info_field(r->str, "cluster_slots_ok");
        char *known = info_field(r->str, "cluster_known_nodes");
        ok = state && strcmp(state, "ok") == 0 && slots && atoi(slots) == 16384 && known &&
             atoi(known) >= n;
        free(state);
        free(slots);
        free(known);
    }
    if (r)
        freeReplyObject(r);
    return ok;
}

/* Whether every running node is ok (and, with replicas, every master has its replicas in
 * sync). */
static bool cluster_ok(th_cluster *c, bool replicas)
{
    for (int i = 0; i < c->n; i++) {
        th_redis *r = &c->nodes[i];
        if (!r->pid)
            continue;
        if (!cluster_node_ok(r->port, c->n))
            return false;
        if (!replicas)
            continue;
        char *role = info_of(r->port, "replication", "role");
        bool master = role && strcmp(role, "master") == 0;
        free(role);
        if (master && c->replicas && !replicas_online(r->port, c->replicas))
            return false;
    }
    return true;
}

int th_cluster_start(th_cluster *c, int masters, int replicas)
{
    memset(c, 0, sizeof *c);
    int n = masters * (1 + replicas);
    if (masters < 3 || n > TH_MAX_CLUSTER_NODES) {
        fprintf(stderr, "harness: a cluster of 3.. masters and at most %d nodes, got %d and %d\n",
                TH_MAX_CLUSTER_NODES, masters, n);
        return -1;
    }
    char *conf = xasprintf("cluster-enabled yes\n"
                              "cluster-config-file nodes.conf\n"
                              "cluster-node-timeout %d\n",
                              CLUSTER_NODE_TIMEOUT_MS);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        c->nodes[i].bus_port = 1;
        rc = th__redis_start_as(&c->nodes[i], "cluster", conf);
        if (rc == 0)
            c->n++;
    }
    free(conf);
    if (rc < 0)
        goto fail;
    /* redis-cli --cluster create 127.0.0.1:p ... --cluster-replicas R --cluster-yes */
    char **argv = xrealloc(NULL, (size_t)(n + 8) * sizeof *argv);
    char reps[16];
    snprintf(reps, sizeof reps, "%d", replicas);
    int k = 0;
    char *cli = th__find_in_path("redis-cli");
    if (!cli) {
        fprintf(stderr, "harness: redis-cli not found in PATH\n");
        free(argv);
        rc = -1;
        goto fail;
    }
    argv[k++] = cli;
    argv[k++] = "--cluster";
    argv[k++] = "create";
    for (int i = 0; i < n; i++)
        argv[k++] = xasprintf("127.0.0.1:%d", c->nodes[i].port);
    argv[k++] = "--cluster-replicas";
    argv[k++] = reps;
    argv[k++] = "--cluster-yes";
    argv[k] = NULL;
    char *out = NULL;
    int st = th_run(60, argv, &out, NULL);
    for (int i = 0; i < n; i++)
        free(argv[3 + i]);
    free(cli);
    free(argv);
    if (st != 0) {
        fprintf(stderr, "harness: redis-cli --cluster create exited %d:\n%s\n", st, out);
        free(out);
        rc = -1;
        goto fail;
    }
    free(out);
    c->replicas = replicas;
    if (!TH_WAIT_UNTIL(HA_SETUP_TIMEOUT_S, cluster_ok(c, true))) {
        fprintf(stderr, "harness: the cluster did not come together\n");
        rc = -1;
        goto fail;
    }
    size_t used = (size_t)snprintf(c->url, sizeof c->url, "redis+cluster://");
    for (int i = 0; i < 3; i++)
        used += (size_t)snprintf(c->url + used, sizeof c->url - used, "%s127.0.0.1:%d",
                                 i ? "," : "", c->nodes[i].port);
    return 0;
fail:
    th_cluster_stop(c);
    return rc;
}

bool th_cluster_wait_ok(th_cluster *c, double timeout_s)
{
    return TH_WAIT_UNTIL(timeout_s, cluster_ok(c, false));
}

th_redis *th_cluster_node(th_cluster *c, int port)
{
    for (int i = 0; i < c->n; i++)
        if (c->nodes[i].port == port)
            return &c->nodes[i];
    return NULL;
}

th_redis *th_cluster_master_of(th_cluster *c, unsigned slot)
{
    for (int i = 0; i < c->n; i++) {
        if (!c->nodes[i].pid)
            continue;
        redisReply *r = cmd_port(c->nodes[i].port, "CLUSTER SLOTS");
        th_redis *found = NULL;
        for (size_t k = 0; r && r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
            redisReply *e = r->element[k];
            if (e->elements < 3 || (unsigned)e->element[0]->integer > slot ||
                (unsigned)e->element[1]->integer < slot)
                continue;
            found = th_cluster_node(c, (int)e->element[2]->element[1]->integer);
        }
        if (r)
            freeReplyObject(r);
        if (found)
            return found;
    }
    return NULL;
}

th_redis *th_cluster_master_of_key(th_cluster *c, const char *key)
{
    for (int i = 0; i < c->n; i++) {
        if (!c->nodes[i].pid)
            continue;
        redisReply *r = cmd_port(c->nodes[i].port, "CLUSTER KEYSLOT %s", key);
        long long slot = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
        if (r)
            freeReplyObject(r);
        if (slot >= 0)
            return th_cluster_master_of(c, (unsigned)slot);
    }
    return NULL;
}

char *th_cluster_node_id(const th_redis *node)
{
    redisReply *r = cmd_port(node->port, "CLUSTER MYID");
    char *id = r && r->type == REDIS_REPLY_STRING ? xstrdup(r->str) : NULL;
    if (r)
        freeReplyObject(r);
    return id;
}

void th_cluster_stop(th_cluster *c)
{
    for (int i = 0; i < c->n; i++)
        th_redis_stop(&c->nodes[i]);
    memset(c, 0, sizeof *c);
}

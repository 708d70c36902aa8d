/*
 * store_host.c - what a host writes: claims (one shard per call), the
 * heartbeat (every shard and the host's description, pipelined), its fenced
 * writes (grouped by shard, pipelined), splits, its exit, and the channel it
 * listens to for cancel requests and wake-ups.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "store_int.h"
#include "util.h"

void store_claimed_clear(claimed *c)
{
    free(c->args);
    memset(c, 0, sizeof *c);
}

static const char *str_el(const redisReply *r, size_t i)
{
    const redisReply *e = r->element[i];
    return e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS ? e->str : "";
}

static long long int_el(const redisReply *r, size_t i)
{
    const redisReply *e = r->element[i];
    if (e->type == REDIS_REPLY_INTEGER)
        return e->integer;
    if (e->type == REDIS_REPLY_STRING)
        return atoll(e->str);
    return 0;
}

/* The fields the claim found in a record beyond args ("r=1 x=5 pc=2 ..."). */
static void claimed_extra(claimed *c, const char *s)
{
    while (*s) {
        const char *eq = strchr(s, '='), *end = strchr(s, ' ');
        if (!end)
            end = s + strlen(s);
        if (eq && eq < end) {
            size_t k = (size_t)(eq - s);
            char v[64];
            snprintf(v, sizeof v, "%.*s", (int)(end - eq - 1), eq + 1);
            if (k == 1 && s[0] == 'r')
                c->released = (uint32_t)strtoul(v, NULL, 10);
            else if (k == 1 && s[0] == 'x' && atoi(v) > 0)
                c->max_attempts = atoi(v);
            else if (k == 2 && strncmp(s, "pc", 2) == 0)
                c->progress_current = atof(v);
            else if (k == 2 && strncmp(s, "pt", 2) == 0)
                c->progress_total = atof(v);
            else if (k == 2 && strncmp(s, "ns", 2) == 0)
                c->subtasks = atoi(v);
            else if (k == 2 && strncmp(s, "pl", 2) == 0)
                c->parallelism = atoi(v);
            else if (k == 2 && strncmp(s, "of", 2) == 0)
                c->fail_fast = strcmp(v, "fail_fast") == 0  ? 1
                               : strcmp(v, "continue") == 0 ? 0
                                                            : -1;
        }
        s = *end ? end + 1 : end;
    }
}

int store_claim(store *st, const char *host_id, int shard, const claim_handler *hs, size_t nh,
                int max, int64_t ttl_ms, claimed *out, int *nout, double *next_due_s)
{
    *nout = 0;
    *next_due_s = -1;
    if (shard < 0 || shard >= st->shards) {
        snprintf(st->err, sizeof st->err, "claim: no shard %d (there are %d)", shard, st->shards);
        return -EINVAL;
    }
    argbuf a = {0};
    store__args_script(st, &a, SC_CLAIM, shard);
    store__args_push(&a, host_id);
    store__args_pushf(&a, "%lld", (long long)ttl_ms);
    store__args_pushf(&a, "%d", max);
    store__args_pushf(&a, "%d", st->lim.max_subtasks);
    store__args_pushf(&a, "%ld", store__evcap_shard(st));
    store__args_pushf(&a, "%zu", nh);
    for (size_t i = 0; i < nh; i++) {
        store__args_push(&a, hs[i].name);
        store__args_pushf(&a, "%d", hs[i].max_attempts);
        store__args_push(&a, hs[i].not_retriable ? "1" : "0");
    }
    store__args_pushf(&a, "%lld", st->lim.history_ms);
    redisReply *r;
    int rc = store__eval_script(st, SC_CLAIM, &a, &r);
    store__args_free(&a);
    if (rc < 0)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        goto bad;
    long long due = int_el(r, 1);
    *next_due_s = due < 0 ? -1 : (double)due / 1000.0;
    store__note_warnings(st, r->element[2]);
    int n = 0;
    for (size_t i = 3; i + 1 < r->elements;) {
        const char *h = str_el(r, i);
        long long cnt = int_el(r, i + 1);
        i += 2;
        if (cnt < 0 || i + 4 * (size_t)cnt > r->elements)
            goto bad;
        int hmax = 0;
        for (size_t k = 0; k < nh; k++)
            if (strcmp(hs[k].name, h) == 0)
                hmax = hs[k].max_attempts;
        for (long long k = 0; k < cnt && n < max; k++, i += 4) {
            claimed *c = &out[n++];
            memset(c, 0, sizeof *c);
            strlcpy_(c->id, str_el(r, i), sizeof c->id);
            strlcpy_(c->handler, h, sizeof c->handler);
            strlcpy_(c->token, str_el(r, i + 1), sizeof c->token);
            c->attempt = (uint32_t)strtoul(c->token, NULL, 10);
            c->args = xstrdup(str_el(r, i + 2));
            c->max_attempts = hmax;
            c->fail_fast = -1;
            claimed_extra(c, str_el(r, i + 3));
        }
    }
    *nout = n;
    freeReplyObject(r);
    return 0;
bad:
    freeReplyObject(r);
    snprintf(st->err, sizeof st->err, "claim: unexpected reply");
    return -EPROTO;
}

int store_heartbeat(store *st, const host_info *hi, hb_item *items, size_t n)
{
    int rc = store_prepare(st);
    if (rc < 0)
        return rc;
    size_t ncalls = (size_t)st->shards + 1;
    script_call *calls = xcalloc(ncalls, sizeof *calls);
    int *shard = xcalloc(n + 1, sizeof *shard);
    for (size_t i = 0; i < n; i++)
        shard[i] = store_shard_of(st, items[i].id);
    for (int s = 0; s < st->shards; s++) {
        argbuf *a = &calls[s].a;
        calls[s].script = SC_HEARTBEAT;
        store__args_script(st, a, SC_HEARTBEAT, s);
        store__args_push(a, hi->id);
        store__args_pushf(a, "%lld", (long long)hi->ttl_ms);
        store__args_pushf(a, "%lld", (long long)(st->lim.retention_s * 1000));
        size_t cnt = 0;
        for (size_t i = 0; i < n; i++)
            cnt += shard[i] == s;
        store__args_pushf(a, "%zu", cnt);
        for (size_t i = 0; i < n; i++)
            if (shard[i] == s) {
                store__args_push(a, items[i].id);
                store__args_push(a, items[i].token);
            }
    }
    /* The description, for bgtaskctl hosts and /v1/hosts. */
    argbuf *a = &calls[st->shards].a;
    calls[st->shards].script = SC_HOST;
    store__args_script(st, a, SC_HOST, -1);
    store__args_push(a, hi->id);
    store__args_pushf(a, "%lld", (long long)hi->ttl_ms);
    store__args_push(a, "id");
    store__args_push(a, hi->id);
    store__args_push(a, "machine");
    store__args_push(a, hi->machine);
    store__args_push(a, "pid");
    store__args_pushf(a, "%d", hi->pid);
    store__args_push(a, "version");
    store__args_push(a, hi->version);
    store__args_push(a, "handlers");
    store__args_push(a, hi->handlers);
    store__args_push(a, "workers");
    store__args_pushf(a, "%d", hi->workers);
    store__args_push(a, "running");
    store__args_pushf(a, "%d", hi->running);
    store__args_push(a, "started_ms");
    store__args_pushf(a, "%lld", (long long)hi->started_ms);
    store__args_push(a, "breakers");
    store__args_push(a, hi->breakers ? hi->breakers : "");
    rc = store__eval_many(st, calls, ncalls);
    for (int s = 0; rc == 0 && s < st->shards; s++) {
        redisReply *r = calls[s].reply;
        size_t k = 1;
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
            rc = -EPROTO;
            break;
        }
        store__note_warnings(st, r->element[0]);
        for (size_t i = 0; i < n; i++)
            if (shard[i] == s) {
                if (k >= r->elements) {
                    rc = -EPROTO;
                    break;
                }
                items[i].status = (int)r->element[k++]->integer;
            }
    }
    /* The description's call answers the paused handlers too. */
    const redisReply *d = rc == 0 ? calls[st->shards].reply : NULL;
    if (d && d->type == REDIS_REPLY_ARRAY) {
        size_t len = 1;
        for (size_t i = 1; i < d->elements; i++)
            len += d->element[i]->len + 1;
        free(st->paused);
        st->paused = xcalloc(1, len);
        for (size_t i = 1; i < d->elements; i++) {
            if (i > 1)
                strcat(st->paused, " ");
            strcat(st->paused, d->element[i]->str);
        }
    }
    if (rc == -EPROTO)
        snprintf(st->err, sizeof st->err, "heartbeat: unexpected reply");
    for (size_t c = 0; c < ncalls; c++) {
        freeReplyObject(calls[c].reply);
        store__args_free(&calls[c].a);
    }
    free(calls);
    free(shard);
    return rc;
}

int store_host_remove(store *st, const char *host_id)
{
    size_t ncalls = (size_t)st->shards;
    script_call *calls = xcalloc(ncalls, sizeof *calls);
    for (int s = 0; s < st->shards; s++) {
        calls[s].script = SC_LEAVE;
        store__args_script(st, &calls[s].a, SC_LEAVE, s);
        store__args_push(&calls[s].a, host_id);
    }
    int rc = store__eval_many(st, calls, ncalls);
    for (size_t c = 0; c < ncalls; c++) {
        freeReplyObject(calls[c].reply);
        store__args_free(&calls[c].a);
    }
    free(calls);
    if (rc < 0)
        return rc;
    char hosts[300], host[600];
    snprintf(hosts, sizeof hosts, "%s:hosts", st->gtag);
    snprintf(host, sizeof host, "%s:host:%s", st->gtag, host_id);
    rcall c[2];
    redisReply *r[2] = {NULL, NULL};
    if (store__call_fmt(&c[0], st->gtag, "ZREM %s %s", hosts, host_id) < 0 ||
        store__call_fmt(&c[1], st->gtag, "DEL %s", host) < 0)
        abort(); /* only on out-of-memory */
    rc = store__run(st, c, 2, r);
    for (int i = 0; i < 2; i++) {
        free((char *)c[i].cmd);
        if (r[i])
            freeReplyObject(r[i]);
    }
    return rc;
}

/* ---- fenced writes ---- */

/* The packed event of a write: a code, the attempt (from the token), and the body. */
static size_t pack_event(ev_buf *b, int kind, const char *token, const char *body)
{
    static const char codes[EV_COUNT] = {[EV_UPDATED] = 'u',
                                         [EV_DONE] = 'd',
                                         [EV_FAILED] = 'f',
                                         [EV_CANCELLED] = 'c',
                                         [EV_PARTIAL_SUCCESS] = 'p'};
    char head[32];
    int n = snprintf(head, sizeof head, "%c%.*s", codes[kind], (int)strcspn(token, " "), token);
    if (n < 0)
        n = 0;
    size_t off = ev_buf_add(b, head);
    if (body && *body) {
        ev_buf_append(b, " ");
        ev_buf_append(b, body);
    }
    return off;
}

/* Whether a success is the plain one: no result, message and event the defaults. */
static bool plain_success(const fin_item *f)
{
    const char *dflt = ev_default_message(EV_DONE);
    return f->op == FIN_SUCCESS && !f->partial && !f->parallel && (!f->result || !*f->result) &&
           (!f->message || !*f->message || strcmp(f->message, dflt) == 0) && f->ev == EV_DONE &&
           (!f->ev_body || !*f->ev_body);
}

static const char *outcome_of(const fin_item *f)
{
    switch (f->op) {
    case FIN_SUCCESS: return f->partial ? "partial_success" : "success";
    case FIN_FAILURE: return "failure";
    default: return "cancelled";
    }
}

#define NO_EV ((size_t)-1)

/* Whether write f carries log lines (or a count of lines dropped). */
static bool has_logs(const fin_item *f)
{
    return (f->nlog > 0 || f->log_dropped > 0) && f->op != FIN_SUBTASK && f->op != FIN_LOST;
}

/* How many ops of the apply script item f is: its progress, then its change. */
static int ops_of(const fin_item *f)
{
    return (f->has_progress && f->op != FIN_SUBTASK && f->op != FIN_LOST) + (f->op != FIN_PROGRESS) +
           has_logs(f);
}

/* Add item f's ops to a call's argv; pev/eev: offsets of its events in b (or NO_EV). */
static void push_item(argbuf *a, const fin_item *f, const ev_buf *b, size_t pev, size_t eev)
{
    const char *pv = pev == NO_EV ? "" : b->s + pev, *ev = eev == NO_EV ? "" : b->s + eev;
    if (has_logs(f)) {
        store__args_push(a, "G");
        store__args_push(a, f->id);
        store__args_push(a, f->token);
        store__args_push(a, "");
        store__args_pushf(a, "%zu", f->nlog);
        store__args_pushf(a, "%ld", f->log_dropped);
        for (size_t i = 0; i < f->nlog; i++)
            store__args_push(a, f->log_lines[i]);
    }
    if (f->has_progress && f->op != FIN_SUBTASK && f->op != FIN_LOST) {
        store__args_push(a, "P");
        store__args_push(a, f->id);
        store__args_push(a, f->token);
        store__args_push(a, pv);
        store__args_pushf(a, "%.17g", f->current);
        store__args_pushf(a, "%.17g", f->total);
        store__args_push(a, f->progress_message);
    }
    if (f->op == FIN_PROGRESS)
        return;
    const char *msg = f->message ? f->message : "";
    switch (f->op) {
    case FIN_SUCCESS:
    case FIN_FAILURE:
    case FIN_CANCELLED:
        if (plain_success(f)) {
            store__args_push(a, "d");
            store__args_push(a, f->id);
            store__args_push(a, f->token);
            store__args_push(a, ev);
            return;
        }
        store__args_push(a, "E");
        store__args_push(a, f->id);
        store__args_push(a, f->token);
        store__args_push(a, ev);
        store__args_push(a, outcome_of(f));
        store__args_push(a, f->op == FIN_SUCCESS && f->result ? f->result : "");
        {
            int k = f->op == FIN_SUCCESS ? EV_DONE : f->op == FIN_CANCELLED ? EV_CANCELLED : -1;
            const char *dflt = k >= 0 ? ev_default_message((ev_kind)k) : NULL;
            store__args_push(a, dflt && strcmp(msg, dflt) == 0 ? "" : msg);
        }
        store__args_push(a, f->parallel ? "1" : "0");
        return;
    case FIN_RETRY:
        store__args_push(a, "R");
        store__args_push(a, f->id);
        store__args_push(a, f->token);
        store__args_push(a, ev);
        store__args_pushf(a, "%lld", (long long)f->backoff_ms);
        store__args_push(a, msg);
        return;
    case FIN_RELEASE:
        store__args_push(a, "L");
        store__args_push(a, f->id);
        store__args_push(a, f->token);
        store__args_push(a, ev);
        store__args_push(a, msg);
        return;
    case FIN_SUBTASK:
        store__args_push(a, "T");
        store__args_push(a, f->id);
        store__args_push(a, f->token);
        store__args_push(a, "");
        store__args_pushf(a, "%d", f->sub_index);
        store__args_push(a, f->sub_state);
        store__args_pushf(a, "%u", f->sub_attempt);
        store__args_push(a, msg);
        store__args_push(a, f->result);
        return;
    case FIN_LOST:
        store__args_push(a, "X");
        store__args_push(a, f->id);
        store__args_push(a, f->token);
        store__args_push(a, "");
        return;
    case FIN_PROGRESS: return;
    }
}

int store_apply(store *st, const char *host_id, fin_item *items, size_t n)
{
    if (n == 0)
        return 0;
    int *shard = xcalloc(n, sizeof *shard);
    size_t *pev = xcalloc(n, sizeof *pev), *eev = xcalloc(n, sizeof *eev);
    ev_buf evs = {0};
    for (size_t i = 0; i < n; i++) {
        fin_item *f = &items[i];
        shard[i] = store_shard_of(st, f->id);
        pev[i] = eev[i] = NO_EV;
        if (f->has_progress && f->op != FIN_SUBTASK && f->progress_body)
            pev[i] = pack_event(&evs, EV_UPDATED, f->token, f->progress_body);
        if (f->op != FIN_PROGRESS && f->op != FIN_SUBTASK && f->ev >= 0 && f->ev < EV_COUNT)
            eev[i] = pack_event(&evs, f->ev, f->token, f->ev_body);
    }
    script_call *calls = xcalloc((size_t)st->shards, sizeof *calls);
    int *call_shard = xcalloc((size_t)st->shards, sizeof *call_shard);
    int *ops = xcalloc(n, sizeof *ops);
    size_t ncalls = 0;
    for (size_t i = 0; i < n; i++)
        ops[i] = ops_of(&items[i]);
    for (int s = 0; s < st->shards; s++) {
        /* Runs of writes of one handler, in order: one group each. */
        size_t ngroups = 0, last = n;
        for (size_t i = 0; i < n; i++)
            if (shard[i] == s) {
                ngroups += last == n || strcmp(items[i].handler, items[last].handler) != 0;
                last = i;
            }
        if (last == n)
            continue;
        script_call *c = &calls[ncalls];
        call_shard[ncalls++] = s;
        c->script = SC_APPLY;
        /* A change of state waits for the replicas (redis.min_replicas_ack); progress does
         * not. */
        for (size_t i = 0; i < n && !c->durable; i++)
            c->durable = shard[i] == s && items[i].op != FIN_PROGRESS;
        argbuf *a = &c->a;
        store__args_script(st, a, SC_APPLY, s);
        store__args_push(a, host_id);
        store__args_pushf(a, "%ld", store__rmax_shard(st));
        store__args_pushf(a, "%lld", (long long)(st->lim.retention_s * 1000));
        store__args_pushf(a, "%ld", store__evcap_shard(st));
        store__args_pushf(a, "%zu", ngroups);
        store__args_pushf(a, "%lld", st->lim.history_ms);
        store__args_pushf(a, "%d", st->lim.log_lines);
        store__args_pushf(a, "%zu", st->lim.log_bytes);
        for (size_t i = 0; i < n;) {
            if (shard[i] != s) {
                i++;
                continue;
            }
            const char *h = items[i].handler;
            int cnt = 0;
            size_t end = i;
            for (; end < n; end++) {
                if (shard[end] != s)
                    continue;
                if (strcmp(items[end].handler, h) != 0)
                    break;
                cnt += ops[end];
            }
            store__args_push(a, h);
            store__args_pushf(a, "%d", cnt);
            for (; i < end; i++)
                if (shard[i] == s)
                    push_item(a, &items[i], &evs, pev[i], eev[i]);
        }
    }
    int rc = store__eval_many(st, calls, ncalls);
    bool short_ = false;
    for (size_t c = 0; rc == 0 && c < ncalls; c++) {
        redisReply *r = calls[c].reply;
        short_ |= calls[c].short_;
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
            snprintf(st->err, sizeof st->err, "apply: unexpected reply");
            rc = -EPROTO;
            break;
        }
        store__note_warnings(st, r->element[0]);
        size_t k = 1;
        for (size_t i = 0; i < n; i++) {
            if (shard[i] != call_shard[c])
                continue;
            items[i].rc = 0;
            for (int o = 0; o < ops[i]; o++, k++) {
                if (k >= r->elements) {
                    snprintf(st->err, sizeof st->err, "apply: unexpected reply");
                    rc = -EPROTO;
                    break;
                }
                /* 3: it went through when first sent (unconfirmed), and changed nothing now */
                if (r->element[k]->integer != 1 && r->element[k]->integer != 3)
                    items[i].rc = -ESTALE;
            }
        }
    }
    if (rc == 0 && short_)
        rc = -EAGAIN;
    for (size_t c = 0; c < ncalls; c++) {
        freeReplyObject(calls[c].reply);
        store__args_free(&calls[c].a);
    }
    free(calls);
    free(call_shard);
    free(ops);
    free(shard);
    free(pev);
    free(eev);
    ev_buf_free(&evs);
    return rc;
}

int store_split(store *st, const char *host_id, const char *id, const char *token,
                char *const *subs, int n)
{
    argbuf a = {0};
    store__args_script(st, &a, SC_SPLIT, store_shard_of(st, id));
    store__args_push(&a, host_id);
    store__args_push(&a, id);
    store__args_push(&a, token);
    for (int i = 0; i < n; i++)
        store__args_push(&a, subs[i]);
    redisReply *r;
    int rc = store__eval_script(st, SC_SPLIT, &a, &r);
    store__args_free(&a);
    if (rc < 0)
        return rc;
    rc = r->type == REDIS_REPLY_INTEGER && r->integer == 1 ? 0 : -ESTALE;
    freeReplyObject(r);
    return rc;
}

/* ---- what a host listens to ---- */

int store_subscribe_control(store *st, const char *host_id, const char *const *handlers, size_t nh)
{
    char **ch = xcalloc(nh + 3, sizeof *ch);
    ch[0] = xasprintf("%s:ctl:%s", st->prefix, host_id);
    ch[1] = xasprintf("%s:ctl", st->prefix); /* to every host: pause, resume */
    for (size_t i = 0; i < nh; i++)
        ch[i + 2] = xasprintf("%s:wake:%s", st->prefix, handlers[i]);
    int rc = rconn_subscribe(st->rc, (const char *const *)ch, nh + 2);
    for (size_t i = 0; i < nh + 2; i++)
        free(ch[i]);
    free(ch);
    return rc;
}

int store_next_control(store *st, double timeout_s, ctl_msg *out)
{
    memset(out, 0, sizeof *out);
    double end = mono_s() + timeout_s;
    size_t plen = strlen(st->prefix);
    for (;;) {
        double left = end - mono_s();
        if (left < 0)
            return -ETIMEDOUT;
        redisReply *r;
        int rc = rconn_next_push(st->rc, left, &r);
        if (rc < 0)
            return rc;
        size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
        const char *kind = n == 3 ? str_el(r, 0) : "";
        if (strcmp(kind, "subscribe") == 0) {
            /* (Re)subscribed: whatever was published meanwhile was missed. */
            freeReplyObject(r);
            return -EAGAIN;
        }
        if (strcmp(kind, "message") != 0) {
            freeReplyObject(r);
            continue;
        }
        const char *ch = str_el(r, 1), *msg = str_el(r, 2);
        rc = -EPROTO;
        if (strncmp(ch, st->prefix, plen) == 0 && strncmp(ch + plen, ":wake:", 6) == 0) {
            long s;
            if (parse_long(msg, 0, st->shards - 1, &s)) {
                out->kind = CTL_WAKE;
                out->shard = (int)s;
                rc = 0;
            }
        } else if (strncmp(msg, "cancel ", 7) == 0 && id_valid(msg + 7)) {
            out->kind = CTL_CANCEL;
            strlcpy_(out->id, msg + 7, sizeof out->id);
            rc = 0;
        } else if (strncmp(msg, "pause ", 6) == 0 && name_valid(msg + 6)) {
            out->kind = CTL_PAUSE;
            strlcpy_(out->handler, msg + 6, sizeof out->handler);
            rc = 0;
        } else if (strncmp(msg, "resume ", 7) == 0 && name_valid(msg + 7)) {
            out->kind = CTL_RESUME;
            strlcpy_(out->handler, msg + 7, sizeof out->handler);
            rc = 0;
        }
        freeReplyObject(r);
        if (rc == 0)
            return 0;
    }
}

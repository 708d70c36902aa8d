/*
 * store_ops.c - the store's writes: submission, cancel and retry (clients),
 * claim, wake-ups, heartbeats, fenced writes and splits (hosts), and the
 * pub/sub channels both follow.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "util.h"

/* ---- submission ---- */

static int validate_submit(store *st, submit_req *q, char **args_norm, char **subs_norm)
{
    *args_norm = *subs_norm = NULL;
    if (!name_valid(q->handler)) {
        snprintf(q->err, sizeof q->err,
                 "invalid handler name '%.64s': expected [a-z0-9][a-z0-9._-]{0,62}",
                 q->handler ? q->handler : "");
        return -EINVAL;
    }
    if (q->id && !id_valid(q->id)) {
        snprintf(q->err, sizeof q->err, "invalid task id '%.40s': expected a UUID like %s",
                 q->id, "123e4567-e89b-42d3-a456-426614174000");
        return -EINVAL;
    }
    const char *args = q->args && *q->args ? q->args : "{}";
    size_t alen = strlen(args);
    if (alen > st->lim.max_args_bytes) {
        snprintf(q->err, sizeof q->err, "args are %zu bytes, over the limit of %zu", alen,
                 st->lim.max_args_bytes);
        return -E2BIG;
    }
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(args, &end, true);
    if (!j) {
        size_t at = end ? (size_t)(end - args) : 0;
        snprintf(q->err, sizeof q->err, "args are not valid JSON (at byte %zu)", at);
        return -EINVAL;
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        snprintf(q->err, sizeof q->err, "args must be a JSON object");
        return -EINVAL;
    }
    *args_norm = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (q->subtasks) {
        cJSON *s = cJSON_ParseWithOpts(q->subtasks, &end, true);
        if (!s || !cJSON_IsArray(s)) {
            cJSON_Delete(s);
            snprintf(q->err, sizeof q->err, "subtasks must be a JSON array");
            goto fail;
        }
        int n = cJSON_GetArraySize(s);
        if (n == 0 || n > st->lim.max_subtasks) {
            cJSON_Delete(s);
            snprintf(q->err, sizeof q->err, "a task has 1..%d subtasks (max_subtasks), got %d",
                     st->lim.max_subtasks, n);
            goto fail;
        }
        *subs_norm = cJSON_PrintUnformatted(s);
        cJSON_Delete(s);
    }
    if (q->parallelism < 0 || q->parallelism > 1024) {
        snprintf(q->err, sizeof q->err, "parallelism must be 1..1024, got %d", q->parallelism);
        goto fail;
    }
    if (q->on_failure && *q->on_failure && strcmp(q->on_failure, "continue") != 0 &&
        strcmp(q->on_failure, "fail_fast") != 0) {
        snprintf(q->err, sizeof q->err, "on_failure must be continue or fail_fast, got '%.32s'",
                 q->on_failure);
        goto fail;
    }
    if (q->max_attempts < 0 || q->max_attempts > 1000) {
        snprintf(q->err, sizeof q->err, "max_attempts must be 1..1000, got %d", q->max_attempts);
        goto fail;
    }
    if (!(q->delay_s >= 0 && q->delay_s <= 365.0 * 86400)) {
        snprintf(q->err, sizeof q->err, "delay must be 0..31536000 seconds");
        goto fail;
    }
    return 0;
fail:
    free(*args_norm);
    free(*subs_norm);
    *args_norm = *subs_norm = NULL;
    return -EINVAL;
}

int store_submit(store *st, submit_req *reqs, size_t n)
{
    argbuf a = {0};
    char **norm = xcalloc(n * 2 + 1, sizeof *norm);
    size_t *idx = xcalloc(n + 1, sizeof *idx);
    size_t m = 0;
    store__args_script(st, &a, SC_SUBMIT);
    store__args_push(&a, ""); /* count, filled below */
    size_t count_at = a.n - 1;
    for (size_t i = 0; i < n; i++) {
        submit_req *q = &reqs[i];
        q->err[0] = '\0';
        q->not_durable = false;
        q->rc = validate_submit(st, q, &norm[2 * i], &norm[2 * i + 1]);
        if (q->rc < 0)
            continue;
        if (q->id)
            strlcpy_(q->id_out, q->id, sizeof q->id_out);
        else
            uuid4(q->id_out);
        for (char *c = q->id_out; *c; c++) /* one spelling per id */
            if (*c >= 'A' && *c <= 'F')
                *c = (char)(*c - 'A' + 'a');
        store__args_push(&a, q->id_out);
        store__args_push(&a, q->handler);
        store__args_push(&a, norm[2 * i]);
        store__args_pushf(&a, "%d", q->max_attempts);
        store__args_pushf(&a, "%lld", (long long)llround(q->delay_s * 1000));
        store__args_push(&a, norm[2 * i + 1] ? norm[2 * i + 1] : "");
        store__args_pushf(&a, "%d", q->parallelism);
        store__args_push(&a, q->on_failure ? q->on_failure : "");
        store__args_push(&a, q->id ? "0" : "1"); /* a fresh UUIDv4 cannot exist yet */
        idx[m++] = i;
    }
    int rc = 0;
    if (m > 0) {
        char cnt[24];
        snprintf(cnt, sizeof cnt, "%zu", m);
        a.v[count_at] = cnt;
        a.len[count_at] = strlen(cnt);
        redisReply *r;
        bool short_ = false;
        rc = store__eval_script_durable(st, SC_SUBMIT, &a, &r, &short_);
        if (rc == 0) {
            if (r->type == REDIS_REPLY_ARRAY && r->elements == m) {
                for (size_t k = 0; k < m; k++) {
                    submit_req *q = &reqs[idx[k]];
                    if (r->element[k]->integer != 1) {
                        q->rc = -EEXIST;
                        snprintf(q->err, sizeof q->err, "task %s already exists", q->id_out);
                    } else if (short_) {
                        q->not_durable = true;
                        snprintf(q->err, sizeof q->err, "%.190s", st->err);
                    }
                }
            } else {
                rc = -EPROTO;
            }
            freeReplyObject(r);
        }
        if (rc < 0)
            for (size_t k = 0; k < m; k++) {
                reqs[idx[k]].rc = rc;
                snprintf(reqs[idx[k]].err, sizeof reqs[idx[k]].err, "%.190s", st->err);
            }
    }
    for (size_t i = 0; i < 2 * n; i++)
        free(norm[i]);
    free(norm);
    free(idx);
    store__args_free(&a);
    return rc;
}

int store_cancel(store *st, const char *id, char *state_out, size_t n)
{
    if (state_out && n)
        state_out[0] = '\0';
    if (!id_valid(id)) {
        snprintf(st->err, sizeof st->err, "invalid task id '%.40s'", id ? id : "");
        return -EINVAL;
    }
    argbuf a = {0};
    store__args_script(st, &a, SC_CANCEL);
    store__args_push(&a, id);
    redisReply *r;
    int rc = store__eval_script(st, SC_CANCEL, &a, &r);
    store__args_free(&a);
    if (rc < 0)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        freeReplyObject(r);
        return -EPROTO;
    }
    rc = (int)r->element[0]->integer;
    if (rc < 0) {
        snprintf(st->err, sizeof st->err, "task %s not found", id);
        rc = -ENOENT;
    } else if (r->elements > 1 && state_out && r->element[1]->str) {
        strlcpy_(state_out, r->element[1]->str, n);
    }
    freeReplyObject(r);
    return rc;
}


/* ---- following ---- */

static int subscribe(store *st, char *channel)
{
    const char *list[] = {channel};
    int rc = rconn_subscribe(st->rc, list, 1);
    free(channel);
    return rc;
}

int store_subscribe_task(store *st, const char *id)
{
    if (!id_valid(id)) {
        snprintf(st->err, sizeof st->err, "invalid task id '%.40s'", id ? id : "");
        return -EINVAL;
    }
    return subscribe(st, xasprintf("%s:ev:%s", st->prefix, id));
}

int store_subscribe_control(store *st, const char *host_id)
{
    return subscribe(st, xasprintf("%s:ctl:%s", st->prefix, host_id));
}

/* Next "message" payload on a subscriber connection (malloc'd). */
static int next_message(store *st, double timeout_s, char **payload)
{
    *payload = NULL;
    double end = mono_s() + timeout_s;
    for (;;) {
        double left = end - mono_s();
        if (left < 0)
            return -ETIMEDOUT;
        redisReply *r;
        int rc = rconn_next_push(st->rc, left, &r);
        if (rc < 0)
            return rc;
        /* "message" channel payload, or "pmessage" pattern channel payload. */
        size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
        bool msg = (n == 3 || n == 4) && r->element[0]->type == REDIS_REPLY_STRING &&
                   strcmp(r->element[0]->str, n == 3 ? "message" : "pmessage") == 0 &&
                   r->element[n - 1]->type == REDIS_REPLY_STRING;
        if (msg)
            *payload = strndup(r->element[n - 1]->str, (size_t)r->element[n - 1]->len);
        freeReplyObject(r);
        if (msg)
            return *payload ? 0 : -ENOMEM;
    }
}

int store_subscribe_all(store *st) { return subscribe(st, xasprintf("%s:ev:*", st->prefix)); }

int store_next_event(store *st, double timeout_s, char **name, cJSON **data)
{
    return store_next_event_ex(st, timeout_s, name, data, NULL);
}

int store_next_event_ex(store *st, double timeout_s, char **name, cJSON **data, char **stream_id)
{
    *name = NULL;
    *data = NULL;
    if (stream_id)
        *stream_id = NULL;
    char *payload;
    int rc = next_message(st, timeout_s, &payload);
    if (rc < 0)
        return rc;
    cJSON *j = cJSON_Parse(payload);
    free(payload);
    cJSON *ev = cJSON_GetObjectItem(j, "event");
    cJSON *d = cJSON_DetachItemFromObject(j, "data");
    if (!cJSON_IsString(ev) || !d) {
        cJSON_Delete(j);
        cJSON_Delete(d);
        snprintf(st->err, sizeof st->err, "unreadable event message");
        return -EPROTO;
    }
    *name = xstrdup(ev->valuestring);
    *data = d;
    cJSON *sid = cJSON_GetObjectItem(j, "id");
    if (stream_id && cJSON_IsString(sid))
        *stream_id = xstrdup(sid->valuestring);
    cJSON_Delete(j);
    return 0;
}

int store_next_control(store *st, double timeout_s, char *id)
{
    char *payload;
    int rc = next_message(st, timeout_s, &payload);
    if (rc < 0)
        return rc;
    rc = -EPROTO;
    if (strncmp(payload, "cancel ", 7) == 0 && id_valid(payload + 7)) {
        strlcpy_(id, payload + 7, BGT_ID_LEN + 1);
        rc = 0;
    }
    free(payload);
    return rc;
}

/* ---- the host's side ---- */

void store_claimed_clear(claimed *c)
{
    free(c->args);
    free(c->corrupt);
    memset(c, 0, sizeof *c);
}

static const char *str_el(const redisReply *r, size_t i)
{
    const redisReply *e = r->element[i];
    return e->type == REDIS_REPLY_STRING ? e->str : "";
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

int store_claim(store *st, const char *host_id, const claim_handler *hs, size_t nh, int max,
                int64_t lease_ms, claimed *out, int *nout, double *next_due_s)
{
    *nout = 0;
    *next_due_s = -1;
    argbuf a = {0};
    store__args_script(st, &a, SC_CLAIM);
    store__args_push(&a, host_id);
    store__args_pushf(&a, "%lld", (long long)lease_ms);
    store__args_pushf(&a, "%d", max);
    store__args_pushf(&a, "%zu", nh);
    for (size_t i = 0; i < nh; i++) {
        store__args_push(&a, hs[i].name);
        store__args_pushf(&a, "%d", hs[i].max_attempts);
        store__args_push(&a, hs[i].not_retriable ? "1" : "0");
        store__args_push(&a, hs[i].parallel ? "parallel" : "single");
    }
    redisReply *r;
    int rc = store__eval_script(st, SC_CLAIM, &a, &r);
    store__args_free(&a);
    if (rc < 0)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || (r->elements - 2) % 13) {
        freeReplyObject(r);
        snprintf(st->err, sizeof st->err, "claim: unexpected reply");
        return -EPROTO;
    }
    long long due = int_el(r, 1);
    *next_due_s = due < 0 ? -1 : (double)due / 1000.0;
    int n = 0;
    for (size_t i = 2; i + 12 < r->elements && n < max; i += 13) {
        claimed *c = &out[n++];
        memset(c, 0, sizeof *c);
        strlcpy_(c->id, str_el(r, i), sizeof c->id);
        strlcpy_(c->handler, str_el(r, i + 1), sizeof c->handler);
        c->attempt = (uint32_t)int_el(r, i + 2);
        c->released = (uint32_t)int_el(r, i + 3);
        c->max_attempts = (int)int_el(r, i + 4);
        c->args = xstrdup(str_el(r, i + 5));
        c->progress_current = atof(str_el(r, i + 6));
        c->progress_total = atof(str_el(r, i + 7));
        c->created_ms = int_el(r, i + 8);
        const char *bad = str_el(r, i + 9);
        c->corrupt = *bad ? xstrdup(bad) : NULL;
        c->subtasks = (int)int_el(r, i + 10);
        c->parallelism = (int)int_el(r, i + 11);
        const char *onf = str_el(r, i + 12);
        c->fail_fast = strcmp(onf, "fail_fast") == 0 ? 1 : strcmp(onf, "continue") == 0 ? 0 : -1;
    }
    *nout = n;
    freeReplyObject(r);
    return 0;
}

int store_wait_wake(store *st, const claim_handler *hs, size_t nh, double timeout_s)
{
    argbuf a = {0};
    store__args_push(&a, "BLPOP");
    char **keys = xcalloc(nh + 1, sizeof *keys);
    for (size_t i = 0; i < nh; i++) {
        keys[i] = xasprintf("%s:wake:%s", st->prefix, hs[i].name);
        store__args_push(&a, keys[i]);
    }
    if (timeout_s < 0.001)
        timeout_s = 0.001;
    store__args_pushf(&a, "%.3f", timeout_s);
    redisReply *r;
    /* Redis answers nil at the timeout; allow it a second more before giving up. */
    int rc = store__block(st, nh ? keys[0] : NULL, &a, timeout_s + 1.0, &r);
    for (size_t i = 0; i < nh; i++)
        free(keys[i]);
    free(keys);
    store__args_free(&a);
    if (rc == -ETIMEDOUT)
        return -EIO; /* no answer where Redis owed one */
    if (rc < 0)
        return rc;
    int woke = r->type == REDIS_REPLY_ARRAY;
    if (woke) {
        /* Take every other token of that list: one wake-up is enough. */
        redisReply *d;
        if (store__cmd(st, r->element[0]->str, &d, "DEL %s", r->element[0]->str) == 0)
            freeReplyObject(d);
    }
    freeReplyObject(r);
    return woke;
}

int store_heartbeat(store *st, const host_info *hi, hb_item *items, size_t n, int64_t lease_ms)
{
    argbuf a = {0};
    store__args_script(st, &a, SC_HEARTBEAT);
    store__args_push(&a, hi->id);
    store__args_pushf(&a, "%lld", (long long)lease_ms);
    store__args_pushf(&a, "%lld", (long long)(hi->ttl_ms > 0 ? hi->ttl_ms : lease_ms));
    store__args_push(&a, hi->machine);
    store__args_pushf(&a, "%d", hi->pid);
    store__args_push(&a, hi->version);
    store__args_push(&a, hi->handlers);
    store__args_pushf(&a, "%d", hi->workers);
    store__args_pushf(&a, "%d", hi->running);
    store__args_pushf(&a, "%lld", (long long)hi->started_ms);
    store__args_push(&a, hi->breakers ? hi->breakers : "");
    store__args_pushf(&a, "%zu", n);
    for (size_t i = 0; i < n; i++) {
        store__args_push(&a, items[i].id);
        store__args_push(&a, items[i].handler);
        store__args_pushf(&a, "%u", items[i].attempt);
    }
    redisReply *r;
    int rc = store__eval_script(st, SC_HEARTBEAT, &a, &r);
    store__args_free(&a);
    if (rc < 0)
        return rc;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == n) {
        for (size_t i = 0; i < n; i++)
            items[i].status = (int)r->element[i]->integer;
    } else if (n > 0) {
        rc = -EPROTO;
    }
    freeReplyObject(r);
    return rc;
}

int store_host_remove(store *st, const char *host_id)
{
    char key[300];
    redisReply *r;
    int rc = store__cmd(st, store__key(st, key, sizeof key, "hosts"), &r, "ZREM %s %s", key,
                        host_id);
    freeReplyObject(r);
    if (rc < 0)
        return rc;
    rc = store__cmd(st, store__key(st, key, sizeof key, "host:%s", host_id), &r, "DEL %s", key);
    freeReplyObject(r);
    return rc;
}

int store_apply(store *st, const char *host_id, fin_item *items, size_t n)
{
    argbuf a = {0};
    store__args_script(st, &a, SC_APPLY);
    store__args_push(&a, host_id);
    store__args_pushf(&a, "%zu", n);
    for (size_t i = 0; i < n; i++) {
        fin_item *f = &items[i];
        store__args_pushf(&a, "%d", (int)f->op);
        store__args_push(&a, f->id);
        store__args_push(&a, f->handler);
        store__args_pushf(&a, "%u", f->attempt);
        store__args_push(&a, f->has_progress ? "1" : "0");
        store__args_pushf(&a, "%.17g", f->current);
        store__args_pushf(&a, "%.17g", f->total);
        store__args_push(&a, f->progress_message);
        store__args_push(&a, f->progress_event);
        store__args_push(&a, f->message);
        store__args_push(&a, f->result);
        store__args_push(&a, f->event_name);
        store__args_push(&a, f->event_payload);
        store__args_pushf(&a, "%lld", (long long)f->backoff_ms);
        store__args_pushf(&a, "%lld", (long long)f->retention_s);
        if (f->op == FIN_SUBTASK) {
            store__args_pushf(&a, "%d", f->sub_index);
            store__args_push(&a, f->sub_state);
            store__args_pushf(&a, "%u", f->sub_attempt);
        } else {
            store__args_push(&a, "");
            store__args_push(&a, "");
            store__args_push(&a, "");
        }
    }
    /* A change of state waits for the replicas (redis.min_replicas_ack); progress does not. */
    bool durable = false;
    for (size_t i = 0; i < n && !durable; i++)
        durable = items[i].op != FIN_PROGRESS;
    redisReply *r;
    bool short_ = false;
    int rc = durable ? store__eval_script_durable(st, SC_APPLY, &a, &r, &short_)
                     : store__eval_script(st, SC_APPLY, &a, &r);
    store__args_free(&a);
    if (rc < 0)
        return rc;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == n) {
        for (size_t i = 0; i < n; i++) {
            long long v = r->element[i]->integer;
            items[i].rc = v == 0 ? -ESTALE : 0;
            items[i].gave_up = v == 2;
        }
    } else {
        rc = -EPROTO;
    }
    freeReplyObject(r);
    return rc == 0 && short_ ? -EAGAIN : rc;
}

int store_split(store *st, const char *host_id, const char *id, uint32_t attempt,
                char *const *subs, int n)
{
    argbuf a = {0};
    store__args_script(st, &a, SC_SPLIT);
    store__args_push(&a, host_id);
    store__args_push(&a, id);
    store__args_pushf(&a, "%u", attempt);
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

int store_retry(store *st, const char *id, int *reset)
{
    *reset = 0;
    if (!id_valid(id)) {
        snprintf(st->err, sizeof st->err, "invalid task id '%.40s'", id ? id : "");
        return -EINVAL;
    }
    argbuf a = {0};
    store__args_script(st, &a, SC_RETRY);
    store__args_push(&a, id);
    redisReply *r;
    int rc = store__eval_script(st, SC_RETRY, &a, &r);
    store__args_free(&a);
    if (rc < 0)
        return rc;
    long long v = r->type == REDIS_REPLY_ARRAY && r->elements > 0 ? r->element[0]->integer : -5;
    freeReplyObject(r);
    switch (v) {
    case -1:
        snprintf(st->err, sizeof st->err, "task %s not found", id);
        return -ENOENT;
    case -2:
        snprintf(st->err, sizeof st->err, "task %s is not a parallel task", id);
        return -EINVAL;
    case -3:
        snprintf(st->err, sizeof st->err, "task %s is still running", id);
        return -EBUSY;
    case -4:
        snprintf(st->err, sizeof st->err, "task %s has no failed subtasks", id);
        return -EALREADY;
    default:
        if (v < 0)
            return -EPROTO;
        *reset = (int)v;
        return 0;
    }
}

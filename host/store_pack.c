/*
 * store_pack.c - the events of protocol 2, read back: a script call's events
 * are one entry of its shard's stream {P:s}:ev and one message on P:ev:<s>
 * (the README's "Events"). This file turns entries and messages into the
 * bgtask_* events clients read (payloads from events.c), for subscribers
 * (store_next_event*) and for replays (store_events_after).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "store_int.h"
#include "util.h"

/* The body of the "Task started" notice (code s), which submit publishes but does not store. */
static const char STARTED_BODY[] = "\"message\":\"Task started\",\"current_progress\":0,"
                                   "\"total_progress\":0";

/* One event of an entry, its payload built in b. */
typedef struct unpacked {
    const char *task_id; /* into the entry */
    size_t id_len;
    ev_kind kind;
    size_t payload; /* offset in b */
    unsigned pos;   /* its place among the entry's events (of every task), from 0 */
} unpacked;

static int kind_of_code(char c)
{
    switch (c) {
    case 's':
    case 'u': return EV_UPDATED;
    case 'd': return EV_DONE;
    case 'f': return EV_FAILED;
    case 'c': return EV_CANCELLED;
    case 'p': return EV_PARTIAL_SUCCESS;
    default: return -1;
    }
}

/*
 * Unpack the fields f[0..n) of one entry (name, value, name, value...; a name
 * "h" sets the handler of what follows, a task id is an event of that task)
 * written at ts_ms. Events of tasks other than only (when not NULL) are
 * skipped; payloads go into b. Returns how many went into out (at most max);
 * fields it cannot read are skipped.
 */
static size_t unpack(const char *const *f, const size_t *len, size_t n, int64_t ts_ms,
                     const char *only, ev_buf *b, unpacked *out, size_t max)
{
    char handler[BGT_NAME_MAX + 1] = "";
    size_t k = 0;
    unsigned pos = 0;
    for (size_t i = 0; i + 1 < n && k < max; i += 2) {
        const char *name = f[i], *v = f[i + 1];
        size_t vlen = len[i + 1];
        if (len[i] == 1 && name[0] == 'h') {
            snprintf(handler, sizeof handler, "%.*s",
                     (int)(vlen < BGT_NAME_MAX ? vlen : BGT_NAME_MAX), v);
            continue;
        }
        if (len[i] != BGT_ID_LEN || vlen < 2)
            continue;
        int kind = kind_of_code(v[0]);
        if (kind < 0)
            continue;
        unsigned at = pos++;
        if (only && memcmp(name, only, BGT_ID_LEN) != 0)
            continue;
        char id[BGT_ID_LEN + 1];
        memcpy(id, name, BGT_ID_LEN);
        id[BGT_ID_LEN] = '\0';
        size_t j = 1;
        uint32_t attempt = 0;
        while (j < vlen && v[j] >= '0' && v[j] <= '9')
            attempt = attempt * 10 + (uint32_t)(v[j++] - '0');
        const char *body = v[0] == 's' ? STARTED_BODY : j < vlen && v[j] == ' ' ? v + j + 1 : "";
        size_t blen = v[0] == 's' ? sizeof STARTED_BODY - 1 : j < vlen ? vlen - j - 1 : 0;
        ev_head head = {.task_id = id, .handler = handler, .attempt = attempt, .ts_ms = ts_ms};
        out[k++] = (unpacked){.task_id = name,
                              .id_len = BGT_ID_LEN,
                              .kind = (ev_kind)kind,
                              .payload = ev_payload(b, &head, (ev_kind)kind, body, blen),
                              .pos = at};
    }
    return k;
}

/* The ms of a stream id "ms-seq". */
static int64_t sid_ms(const char *sid) { return (int64_t)strtoll(sid, NULL, 10); }

/* An event's id: its entry's stream id, and ".<pos>" after it for all but the entry's first
 * event (an entry packs several). Into out (48 bytes). */
static void event_id(char *out, const char *sid, unsigned pos)
{
    if (pos == 0)
        snprintf(out, 48, "%.47s", sid);
    else
        snprintf(out, 48, "%.36s.%u", sid, pos);
}

/*
 * The events of stream entry e (those of task only, when not NULL), their payloads built
 * in b (reset first): *u gets them (malloc'd, caller frees) and *sid the entry's id
 * (borrowed from e). Returns how many; 0 for an entry it cannot read.
 */
static size_t unpack_entry(const redisReply *e, const char *only, ev_buf *b, unpacked **u,
                           const char **sid)
{
    *u = NULL;
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_ARRAY)
        return 0;
    *sid = e->element[0]->str;
    const redisReply *kv = e->element[1];
    const char **f = xcalloc(kv->elements + 1, sizeof *f);
    size_t *len = xcalloc(kv->elements + 1, sizeof *len);
    for (size_t j = 0; j < kv->elements; j++) {
        f[j] = kv->element[j]->str ? kv->element[j]->str : "";
        len[j] = kv->element[j]->str ? kv->element[j]->len : 0;
    }
    *u = xcalloc(kv->elements / 2 + 1, sizeof **u);
    ev_buf_reset(b);
    size_t k = unpack(f, len, kv->elements, sid_ms(*sid), only, b, *u, kv->elements / 2 + 1);
    free(f);
    free(len);
    return k;
}

/* ---- subscribers ---- */

void store__events_clear(store *st)
{
    for (size_t i = st->evq_head; i < st->evq_n; i++) {
        free(st->evq[i].name);
        free(st->evq[i].payload);
        free(st->evq[i].sid);
    }
    free(st->evq);
    st->evq = NULL;
    st->evq_head = st->evq_n = st->evq_cap = 0;
}

static int subscribe_shards(store *st, const int *shards, size_t n)
{
    char **ch = xcalloc(n + 1, sizeof *ch);
    for (size_t i = 0; i < n; i++)
        ch[i] = xasprintf("%s:ev:%d", st->prefix, shards[i]);
    store__events_clear(st);
    int rc = rconn_subscribe(st->rc, (const char *const *)ch, n);
    for (size_t i = 0; i < n; i++)
        free(ch[i]);
    free(ch);
    return rc;
}

int store_subscribe_task(store *st, const char *id)
{
    char tid[BGT_ID_LEN + 1];
    if (store__take_id(st, id, tid) < 0)
        return -EINVAL;
    /* The shard count is the data's first. */
    int rc = store__meta(st);
    if (rc < 0 && rc != -EIO)
        return rc;
    memcpy(st->only, tid, sizeof tid);
    int s = store_shard_of(st, st->only);
    return subscribe_shards(st, &s, 1);
}

int store_subscribe_all(store *st)
{
    int rc = store__meta(st);
    if (rc < 0 && rc != -EIO)
        return rc;
    st->only[0] = '\0';
    int *s = xcalloc((size_t)st->shards, sizeof *s);
    for (int i = 0; i < st->shards; i++)
        s[i] = i;
    rc = subscribe_shards(st, s, (size_t)st->shards);
    free(s);
    return rc;
}

/* Queue the events of one message ("<stream id or ms>\n" then fields and values, a line each). */
static void take_message(store *st, const char *msg, size_t mlen)
{
    const char *nl = memchr(msg, '\n', mlen);
    if (!nl)
        return;
    char sid[48];
    snprintf(sid, sizeof sid, "%.*s", (int)((size_t)(nl - msg) < 47 ? nl - msg : 47), msg);
    bool stored = strchr(sid, '-') != NULL;
    size_t cap = 16, n = 0;
    const char **f = xmalloc(cap * sizeof *f);
    size_t *len = xmalloc(cap * sizeof *len);
    for (const char *p = nl + 1, *end = msg + mlen; p < end;) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        if (!e)
            e = end;
        if (n == cap) {
            cap *= 2;
            f = xrealloc(f, cap * sizeof *f);
            len = xrealloc(len, cap * sizeof *len);
        }
        f[n] = p;
        len[n++] = (size_t)(e - p);
        p = e + 1;
    }
    ev_buf b = {0};
    unpacked *u = xcalloc(n / 2 + 1, sizeof *u);
    size_t k = unpack(f, len, n, sid_ms(sid), st->only[0] ? st->only : NULL, &b, u, n / 2 + 1);
    if (st->evq_n + k > st->evq_cap) {
        /* Move what is left to the front, then grow. */
        if (st->evq_head > 0)
            memmove(st->evq, st->evq + st->evq_head, (st->evq_n - st->evq_head) * sizeof *st->evq);
        st->evq_n -= st->evq_head;
        st->evq_head = 0;
        while (st->evq_n + k > st->evq_cap)
            st->evq_cap = st->evq_cap ? st->evq_cap * 2 : 64;
        st->evq = xrealloc(st->evq, st->evq_cap * sizeof *st->evq);
    }
    for (size_t i = 0; i < k; i++) {
        store_event *e = &st->evq[st->evq_n++];
        e->name = xstrdup(ev_name(u[i].kind));
        e->payload = xstrdup(b.s + u[i].payload);
        char eid[48];
        event_id(eid, sid, u[i].pos);
        e->sid = stored ? xstrdup(eid) : NULL;
        memcpy(e->task_id, u[i].task_id, BGT_ID_LEN);
        e->task_id[BGT_ID_LEN] = '\0';
    }
    free(u);
    free(f);
    free(len);
    ev_buf_free(&b);
}

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
    double end = mono_s() + timeout_s;
    while (st->evq_head == st->evq_n) {
        double left = end - mono_s();
        if (left < 0)
            return -ETIMEDOUT;
        redisReply *r;
        int rc = rconn_next_push(st->rc, left, &r);
        if (rc < 0)
            return rc;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            r->element[0]->type == REDIS_REPLY_STRING &&
            strcmp(r->element[0]->str, "message") == 0 && r->element[2]->type == REDIS_REPLY_STRING)
            take_message(st, r->element[2]->str, r->element[2]->len);
        freeReplyObject(r);
    }
    store_event *e = &st->evq[st->evq_head++];
    cJSON *d = cJSON_Parse(e->payload);
    int rc = 0;
    if (!d) {
        snprintf(st->err, sizeof st->err, "unreadable event of task %s", e->task_id);
        rc = -EPROTO;
        free(e->name);
    } else {
        *name = e->name;
        *data = d;
    }
    if (stream_id && rc == 0)
        *stream_id = e->sid;
    else
        free(e->sid);
    free(e->payload);
    if (st->evq_head == st->evq_n)
        st->evq_head = st->evq_n = 0;
    return rc;
}

/* ---- replays ---- */

/* One decimal part of an event id: 1..20 digits within 64 bits, up to end (or the NUL). */
static bool id_part(const char *s, const char *end, uint64_t *v)
{
    size_t n = end ? (size_t)(end - s) : strlen(s);
    if (n == 0 || n > 20)
        return false;
    *v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || *v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
            return false;
        *v = *v * 10 + (uint64_t)(s[i] - '0');
    }
    return true;
}

/* "ms-seq" or "ms-seq.pos" into its parts (pos 0 when absent); false if it is neither. */
static bool id_parse(const char *s, uint64_t *ms, uint64_t *seq, uint64_t *pos)
{
    const char *dash = strchr(s, '-'), *dot = dash ? strchr(dash, '.') : NULL;
    *pos = 0;
    return dash && id_part(s, dash, ms) && id_part(dash + 1, dot, seq) &&
           (!dot || (id_part(dot + 1, NULL, pos) && *pos > 0 && *pos < 100000));
}

bool store_event_id_valid(const char *s)
{
    if (!s)
        return false;
    if (strcmp(s, "0") == 0)
        return true;
    uint64_t ms, seq, pos;
    return id_parse(s, &ms, &seq, &pos) && !(ms == UINT64_MAX && seq == UINT64_MAX);
}

int store_events_after(store *st, const char *id, const char *after, int limit, cJSON **out)
{
    *out = NULL;
    if (!id_valid(id) || !store_event_id_valid(after)) {
        snprintf(st->err, sizeof st->err, "invalid task id or event id");
        return -EINVAL;
    }
    int meta = store__meta(st);
    if (meta < 0)
        return meta;
    char tid[BGT_ID_LEN + 1], key[300], start[48], first[48] = "";
    store__norm_id(id, tid);
    snprintf(key, sizeof key, "%s:ev", st->tags[store_shard_of(st, tid)]);
    /* From after's entry on: its events up to after's place in it are skipped. */
    uint64_t ms = 0, seq = 0, skip = 0;
    if (strcmp(after, "0") == 0) {
        snprintf(start, sizeof start, "-");
    } else {
        id_parse(after, &ms, &seq, &skip);
        snprintf(first, sizeof first, "%llu-%llu", (unsigned long long)ms, (unsigned long long)seq);
        snprintf(start, sizeof start, "%s", first);
    }
    cJSON *arr = cJSON_CreateArray();
    ev_buf b = {0};
    for (;;) {
        redisReply *r;
        int rc = store__cmd(st, key, &r, "XRANGE %s %s + COUNT 1000", key, start);
        if (rc < 0) {
            cJSON_Delete(arr);
            ev_buf_free(&b);
            return rc;
        }
        size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
        for (size_t i = 0; i < n && cJSON_GetArraySize(arr) < limit; i++) {
            unpacked *u;
            const char *sid = NULL;
            size_t k = unpack_entry(r->element[i], tid, &b, &u, &sid);
            for (size_t j = 0; j < k && cJSON_GetArraySize(arr) < limit; j++) {
                if (strcmp(sid, first) == 0 && u[j].pos <= skip)
                    continue;
                char eid[48];
                event_id(eid, sid, u[j].pos);
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "id", eid);
                cJSON_AddStringToObject(o, "event", ev_name(u[j].kind));
                cJSON *d = cJSON_Parse(b.s + u[j].payload);
                cJSON_AddItemToObject(o, "data", d ? d : cJSON_CreateObject());
                cJSON_AddItemToArray(arr, o);
            }
            free(u);
        }
        if (n > 0 && r->element[n - 1]->type == REDIS_REPLY_ARRAY)
            snprintf(start, sizeof start, "(%s", r->element[n - 1]->element[0]->str);
        freeReplyObject(r);
        if (n < 1000 || cJSON_GetArraySize(arr) >= limit)
            break;
    }
    ev_buf_free(&b);
    *out = arr;
    return 0;
}

long store_each_event(store *st, store_event_fn fn, void *arg)
{
    int meta = store__meta(st);
    if (meta < 0)
        return meta;
    long seen = 0;
    ev_buf b = {0};
    for (int s = 0; s < st->shards; s++) {
        char key[300], start[48] = "-";
        snprintf(key, sizeof key, "%s:ev", st->tags[s]);
        for (;;) {
            redisReply *r;
            int rc = store__cmd(st, key, &r, "XRANGE %s %s + COUNT 1000", key, start);
            if (rc < 0) {
                ev_buf_free(&b);
                return rc;
            }
            size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
            for (size_t i = 0; i < n; i++) {
                unpacked *u;
                const char *sid = NULL;
                size_t k = unpack_entry(r->element[i], NULL, &b, &u, &sid);
                for (size_t j = 0; j < k; j++) {
                    char id[BGT_ID_LEN + 1];
                    memcpy(id, u[j].task_id, BGT_ID_LEN);
                    id[BGT_ID_LEN] = '\0';
                    char eid[48];
                    event_id(eid, sid, u[j].pos);
                    fn(arg, eid, id, ev_name(u[j].kind), b.s + u[j].payload);
                    seen++;
                }
                free(u);
            }
            if (n > 0 && r->element[n - 1]->type == REDIS_REPLY_ARRAY)
                snprintf(start, sizeof start, "(%s", r->element[n - 1]->element[0]->str);
            freeReplyObject(r);
            if (n < 1000)
                break;
        }
    }
    ev_buf_free(&b);
    return seen;
}

/*
 * events.c - event names and payloads (see events.h). The text is written by
 * hand into a reusable buffer; strings and numbers come out byte for byte as
 * cJSON_PrintUnformatted prints them (test_events compares the two), so the
 * payloads are the ones clients have always read.
 */
#include "events.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char *const names[EV_COUNT] = {
    [EV_UPDATED] = "bgtask_updated",
    [EV_DONE] = "bgtask_done",
    [EV_FAILED] = "bgtask_failed",
    [EV_CANCELLED] = "bgtask_cancelled",
    [EV_PARTIAL_SUCCESS] = "bgtask_partial_success",
};

const char *ev_name(ev_kind k) { return k >= 0 && k < EV_COUNT ? names[k] : ""; }

int ev_kind_of(const char *name)
{
    for (int k = 0; name && k < EV_COUNT; k++)
        if (strcmp(name, names[k]) == 0)
            return k;
    return -1;
}

bool ev_terminal(ev_kind k) { return k > EV_UPDATED && k < EV_COUNT; }

bool ev_name_terminal(const char *name)
{
    int k = ev_kind_of(name);
    return k >= 0 && ev_terminal((ev_kind)k);
}

int ev_kind_of_state(const char *state)
{
    if (!state)
        return -1;
    if (strcmp(state, "SUCCESS") == 0)
        return EV_DONE;
    if (strcmp(state, "FAILURE") == 0)
        return EV_FAILED;
    if (strcmp(state, "CANCELLED") == 0)
        return EV_CANCELLED;
    return -1;
}

const char *ev_stream_end_name(void) { return "server_close"; }

/* ---- the buffer ---- */

void ev_buf_reset(ev_buf *b)
{
    b->len = 0;
    if (b->s)
        b->s[0] = '\0';
}

void ev_buf_free(ev_buf *b)
{
    free(b->s);
    memset(b, 0, sizeof *b);
}

/* Room for n more bytes and a NUL. */
static void reserve(ev_buf *b, size_t n)
{
    if (b->len + n + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 512;
    while (cap < b->len + n + 1)
        cap *= 2;
    b->s = xrealloc(b->s, cap);
    b->cap = cap;
}

static void put(ev_buf *b, const char *s, size_t n)
{
    reserve(b, n);
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void puts_(ev_buf *b, const char *s) { put(b, s, strlen(s)); }

static void putc_(ev_buf *b, char c) { put(b, &c, 1); }

/* End the text just appended: its NUL stays, and what comes next starts after it. */
static void seal(ev_buf *b)
{
    reserve(b, 1);
    b->s[b->len++] = '\0'; /* set here too: nothing may have been appended (a new buffer) */
    b->s[b->len] = '\0';
}

size_t ev_buf_add(ev_buf *b, const char *s)
{
    size_t off = b->len;
    puts_(b, s ? s : "");
    seal(b);
    return off;
}

void ev_buf_append(ev_buf *b, const char *s)
{
    if (b->len > 0 && b->s[b->len - 1] == '\0')
        b->len--;
    puts_(b, s ? s : "");
    seal(b);
}

/* ---- JSON values, as cJSON prints them ---- */

void ev_json_string(ev_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (!s)
        s = "";
    putc_(b, '"');
    const unsigned char *p = (const unsigned char *)s, *run = p;
    for (; *p; p++) {
        unsigned char c = *p;
        if (c >= 32 && c != '"' && c != '\\')
            continue;
        put(b, (const char *)run, (size_t)(p - run));
        run = p + 1;
        char esc[6] = {'\\', 0};
        size_t n = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            n = 6;
        }
        put(b, esc, n);
    }
    put(b, (const char *)run, (size_t)(p - run));
    putc_(b, '"');
}

/* n in decimal, without snprintf: the common case (counts, attempts, timestamps). */
static void put_int(ev_buf *b, long long n)
{
    char tmp[24];
    char *p = tmp + sizeof tmp;
    unsigned long long u = n < 0 ? 0ULL - (unsigned long long)n : (unsigned long long)n;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (n < 0)
        *--p = '-';
    put(b, p, (size_t)(tmp + sizeof tmp - p));
}

void ev_json_number(ev_buf *b, double d)
{
    if (isnan(d) || isinf(d)) {
        puts_(b, "null");
        return;
    }
    /* cJSON prints the shorter of %1.15g and %1.17g that reads back as the double. An
     * integral value below 1e15 comes out of %1.15g as its plain digits (and -0 as "-0"):
     * print those directly. */
    if (d == floor(d) && fabs(d) < 1e15 && !(d == 0 && signbit(d))) {
        put_int(b, (long long)d);
        return;
    }
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%1.15g", d);
    double back = strtod(tmp, NULL);
    double max = fabs(back) > fabs(d) ? fabs(back) : fabs(d);
    if (!(fabs(back - d) <= max * DBL_EPSILON))
        n = snprintf(tmp, sizeof tmp, "%1.17g", d);
    put(b, tmp, (size_t)n);
}

/* ---- payloads ---- */

/* The head every payload starts with: {"task_id":..,"handler":..,"attempt":..,"ts_ms":.., */
static void put_head(ev_buf *b, const ev_head *h)
{
    puts_(b, "{\"task_id\":");
    ev_json_string(b, h->task_id);
    puts_(b, ",\"handler\":");
    ev_json_string(b, h->handler);
    puts_(b, ",\"attempt\":");
    put_int(b, h->attempt);
    puts_(b, ",\"ts_ms\":");
    ev_json_number(b, (double)h->ts_ms);
    putc_(b, ',');
}

static void put_message(ev_buf *b, const char *message)
{
    puts_(b, "\"message\":");
    ev_json_string(b, message);
}

static void put_progress(ev_buf *b, double current, double total)
{
    puts_(b, ",\"current_progress\":");
    ev_json_number(b, current);
    puts_(b, ",\"total_progress\":");
    ev_json_number(b, total);
}

const char *ev_default_message(ev_kind k)
{
    return k == EV_DONE ? "Task finished" : k == EV_CANCELLED ? "Cancelled" : NULL;
}

size_t ev_body_progress(ev_buf *b, double current, double total, const char *message)
{
    size_t off = b->len;
    put_message(b, message);
    put_progress(b, current, total);
    seal(b);
    return off;
}

size_t ev_body_progress_sub_open(ev_buf *b, double current, double total, const char *message,
                                 int total_subtasks, int succeeded, int failed)
{
    size_t off = b->len;
    put_message(b, message);
    put_progress(b, current, total);
    puts_(b, ",\"subtasks\":{\"total\":");
    put_int(b, total_subtasks);
    puts_(b, ",\"succeeded\":");
    put_int(b, succeeded);
    puts_(b, ",\"failed\":");
    put_int(b, failed);
    puts_(b, ",\"running\":[");
    return off;
}

void ev_progress_sub_running(ev_buf *b, int index, double progress)
{
    if (b->s[b->len - 1] != '[')
        putc_(b, ',');
    puts_(b, "{\"index\":");
    put_int(b, index);
    puts_(b, ",\"progress\":");
    ev_json_number(b, progress);
    putc_(b, '}');
}

void ev_body_progress_sub_close(ev_buf *b)
{
    puts_(b, "]}");
    seal(b);
}

size_t ev_body_ending(ev_buf *b, ev_kind k, const char *message, const char *result,
                      const char *const *errors, size_t nerrors, double current, double total)
{
    size_t off = b->len;
    bool with_result = (k == EV_DONE || k == EV_PARTIAL_SUCCESS) && result && *result;
    const char *dflt = ev_default_message(k);
    if (dflt && !with_result && strcmp(message ? message : "", dflt) == 0) {
        seal(b); /* the kind's default: nothing to keep */
        return off;
    }
    put_message(b, message);
    if (k == EV_UPDATED)
        put_progress(b, current, total);
    if (k == EV_PARTIAL_SUCCESS) {
        puts_(b, ",\"errors\":[");
        for (size_t i = 0; i < nerrors; i++) {
            if (i)
                putc_(b, ',');
            ev_json_string(b, errors[i]);
        }
        putc_(b, ']');
    }
    if (with_result) {
        puts_(b, ",\"result\":");
        puts_(b, result);
    }
    seal(b);
    return off;
}

size_t ev_payload(ev_buf *b, const ev_head *h, ev_kind k, const char *body, size_t len)
{
    size_t off = b->len;
    put_head(b, h);
    if (len > 0)
        put(b, body, len);
    else
        put_message(b, ev_default_message(k));
    putc_(b, '}');
    seal(b);
    return off;
}

static double rec_num(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *rec_str(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f);
    return cJSON_IsString(v) ? v->valuestring : "";
}

ev_kind ev_of_record(ev_buf *b, const cJSON *rec, size_t *off)
{
    int k = ev_kind_of_state(rec_str(rec, "state"));
    if (k < 0)
        k = EV_UPDATED;
    else if (k == EV_DONE && rec_num(rec, "sub_failure") > 0)
        k = EV_PARTIAL_SUCCESS;
    double ts = rec_num(rec, k == EV_UPDATED ? "updated_ms" : "finished_ms");
    ev_head h = {.task_id = rec_str(rec, "id"),
                 .handler = rec_str(rec, "handler"),
                 .attempt = (uint32_t)rec_num(rec, "attempt"),
                 .ts_ms = (int64_t)(ts > 0 ? ts : rec_num(rec, "updated_ms"))};
    const char *message = rec_str(rec, "message");
    ev_buf body = {0};
    size_t boff;
    if (k == EV_UPDATED) {
        boff = ev_body_progress(&body, rec_num(rec, "progress_current"),
                                rec_num(rec, "progress_total"), message);
    } else {
        char *result = NULL;
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(rec, "result");
        if ((k == EV_DONE || k == EV_PARTIAL_SUCCESS) && r && !cJSON_IsNull(r))
            result = cJSON_PrintUnformatted(r);
        boff = ev_body_ending(&body, (ev_kind)k, message, result, NULL, 0, 0, 0);
        free(result);
    }
    *off = ev_payload(b, &h, (ev_kind)k, body.s + boff, strlen(body.s + boff));
    ev_buf_free(&body);
    return (ev_kind)k;
}

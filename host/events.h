/*
 * events.h - the bgtask_* events in one place: their names, which of them end
 * a task, and the JSON payloads the host publishes, with Backend.AI's field
 * names (DESIGN §7). Every C user of an event name or payload (the manager
 * and its writer, the SSE hub, bgtaskctl, the bench) goes through here; the
 * store's Lua scripts are the only other place that spells the names, and
 * tests/unit/test_events.c checks that the two agree.
 *
 * Payloads are JSON text appended to a buffer the caller keeps and reuses
 * (ev_buf), written by hand with an escaper that prints strings and numbers
 * exactly as cJSON_PrintUnformatted does: building an event allocates nothing
 * once the buffer has grown, and the wire format is the one clients read.
 *
 * Every payload starts with the fields every event carries, in this order:
 * task_id, handler, attempt, ts_ms, message.
 */
#ifndef BGT_EVENTS_H
#define BGT_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

typedef enum ev_kind {
    EV_UPDATED = 0,     /* bgtask_updated: progress, or a note while the task stays ONGOING */
    EV_DONE,            /* bgtask_done: SUCCESS */
    EV_FAILED,          /* bgtask_failed: FAILURE */
    EV_CANCELLED,       /* bgtask_cancelled: CANCELLED */
    EV_PARTIAL_SUCCESS, /* bgtask_partial_success: SUCCESS with failed subtasks */
    EV_COUNT,
} ev_kind;

/* The name of an event kind ("bgtask_done"); a static string. */
const char *ev_name(ev_kind k);
/* The kind called name, or -1 when name is no bgtask event (or NULL). */
int ev_kind_of(const char *name);
/* Whether an event of kind k ends its task (its one terminal event). */
bool ev_terminal(ev_kind k);
/* Whether the event called name ends its task; false for unknown names. */
bool ev_name_terminal(const char *name);
/* The event of a plain ending in a terminal state ("SUCCESS" -> bgtask_done,
 * "FAILURE", "CANCELLED"); -1 for any other state. */
int ev_kind_of_state(const char *state);
/* The SSE event that follows a task stream's terminal event ("server_close"). */
const char *ev_stream_end_name(void);

/* A growing text buffer for payloads. Zero-initialise it; free with ev_buf_free. */
typedef struct ev_buf {
    char *s;    /* the text, NUL-terminated after each payload (NULL until the first) */
    size_t len; /* bytes used, without the final NUL */
    size_t cap;
} ev_buf;

/* Forget the text, keep the memory. */
void ev_buf_reset(ev_buf *b);
void ev_buf_free(ev_buf *b);
/* Append a copy of s (NULL is ""), NUL-terminated; returns its offset in b->s. */
size_t ev_buf_add(ev_buf *b, const char *s);
/* Append s to the text added last: it stays one NUL-terminated text. */
void ev_buf_append(ev_buf *b, const char *s);

/* What every event carries. Strings are borrowed for the call. */
typedef struct ev_head {
    const char *task_id;
    const char *handler;
    uint32_t attempt;
    int64_t ts_ms; /* when it happened, ms since the epoch */
} ev_head;

/*
 * Bodies. A payload is a head (task_id, handler, attempt, ts_ms), which the
 * reader knows from where the event is kept (protocol 2 stores the events of
 * one script call together, by task and handler), then a body: the members
 * from "message" on. Each builder below appends one body to b, without braces,
 * NUL-terminated, and returns its offset in b->s (b->s may move as b grows:
 * keep offsets, not pointers, until the last one is appended). message NULL
 * is "". A body that says only the kind's default message
 * (ev_default_message) is empty.
 */

/* bgtask_updated for a progress report: message, current_progress, total_progress. */
size_t ev_body_progress(ev_buf *b, double current, double total, const char *message);

/*
 * The same for a parallel task, with its "subtasks" object: {"total",
 * "succeeded", "failed", "running": [{"index", "progress"}, ...]}. Open it,
 * add each running subtask (its own progress, 0..1), close it.
 */
size_t ev_body_progress_sub_open(ev_buf *b, double current, double total, const char *message,
                                 int total_subtasks, int succeeded, int failed);
void ev_progress_sub_running(ev_buf *b, int index, double progress);
void ev_body_progress_sub_close(ev_buf *b);

/*
 * The event of an attempt's end: EV_DONE (with result, JSON text, when not
 * NULL), EV_PARTIAL_SUCCESS (with errors, the failed subtasks' "subtask i:
 * message" lines, and result), EV_FAILED, EV_CANCELLED, or EV_UPDATED for an
 * end that leaves the task ONGOING (a retry or a release): the message and the
 * progress persisted (current, total), which every bgtask_updated carries.
 */
size_t ev_body_ending(ev_buf *b, ev_kind k, const char *message, const char *result,
                      const char *const *errors, size_t nerrors, double current, double total);

/* The message an empty body of kind k stands for ("Task finished", "Cancelled"), or
 * NULL when bodies of k are never empty. */
const char *ev_default_message(ev_kind k);

/*
 * The payload of an event of kind k: head h, then the body (len bytes; an
 * empty one stands for the kind's default message). Appends it to b and
 * returns its offset, like the builders.
 */
size_t ev_payload(ev_buf *b, const ev_head *h, ev_kind k, const char *body, size_t len);

/*
 * The event that stands for a task record's state, for a reader who missed
 * the real ones (a late SSE subscriber, bgtaskctl watch): bgtask_updated
 * with the persisted progress while ONGOING, else its terminal event (a
 * parallel task that succeeded with failed subtasks is a partial success,
 * with an empty errors list: the record does not keep them). rec is a record
 * as store_get_task gives it (borrowed); ts_ms is its finished_ms, else its
 * updated_ms. Appends the payload at *off and returns the kind.
 */
ev_kind ev_of_record(ev_buf *b, const cJSON *rec, size_t *off);

/* Append s as a JSON string (quoted, escaped as cJSON does); NULL is "". */
void ev_json_string(ev_buf *b, const char *s);
/* Append d as cJSON_PrintUnformatted prints a number. */
void ev_json_number(ev_buf *b, double d);

#endif

/*
 * worker_int.h - what the two files of `bgtaskd --worker` share: worker_main.c
 * (the host's frames, the calls, crash notes, start-up) and worker_api.c (the
 * bgt_api a plugin gets in a worker: its task calls, progress coalescing,
 * logs, submissions, subtasks). Nothing else includes it.
 */
#ifndef BGT_WORKER_INT_H
#define BGT_WORKER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "bgtask.h"
#include "ipc.h"
#include "registry.h"

/* How often bgt_cancelled() looks at the socket for a CANCEL. */
#define POLL_GAP_S 0.005
/* A split's subtasks go to the host in frames of about this size. */
#define SUBTASKS_CHUNK (256u << 10)

/* Calls received and not started at most (the host sends ISO_DEPTH at most). */
#define QUEUE_MAX 1024

/* The call running: the worker's side of the opaque bgt_task a plugin sees. */
typedef struct wcall {
    uint32_t seq; /* its number on the connection */
    int op;       /* IPC_OP_* */
    char id[BGT_ID_LEN + 1];
    char handler[BGT_NAME_MAX + 1];
    uint32_t attempt;
    int subtask;
    double last_current, last_total;
    bgt_hook_info info;
    char *result; /* JSON text, or NULL */
    char *error;
    ipc_buf subs; /* a split's subtasks not sent yet: a SUBTASKS frame under way */
    uint32_t nsubs;
    int added;
} wcall;

/* The state of the worker process: its connection, plugin, limits, call and queue. */
struct worker {
    ipc_conn conn;
    pthread_mutex_t send_lock, recv_lock;
    registry reg;
    struct bgt_plugin *plugin;
    char name[BGT_NAME_MAX + 1]; /* for log lines outside calls */
    size_t max_args, max_result, data_limit;
    int max_subtasks;
    double gap;
    bool in_init;
    bool filtered; /* a seccomp filter is installed */
    wcall call;             /* the one call, reused */
    _Atomic(wcall *) running; /* &call while a call runs, else NULL */
    atomic_int cancel;
    _Atomic int64_t polled_ns; /* when bgt_cancelled last read the socket */
    /* bgt_submit: one at a time; the answer is filled by whoever reads it. */
    pthread_mutex_t submit_lock;
    bool answered;
    int answer_rc;
    char answer_id[BGT_ID_LEN + 1];
    /* Progress not sent yet (guarded by prog_lock). prog_lock also orders a call's end
     * (running set to NULL) after the frames plugin threads send for it: logs and
     * submissions check running and send under it. */
    pthread_mutex_t prog_lock;
    pthread_cond_t prog_cond;
    bool pending, flusher;
    double p_current, p_total, p_sent_at;
    char *p_message;
    ipc_buf pbuf;
    ipc_buf dbuf; /* DONE frames, reused */
    /* Calls received and not started, oldest first (guarded by recv_lock). */
    struct queued {
        uint32_t seq;
        uint8_t *payload;
        size_t len;
    } queue[QUEUE_MAX];
    size_t nqueue;
    ipc_page *page;     /* shared with the host (ipc.h) */
    unsigned long sent; /* (send_lock) frames sent so far */
};

/* The worker process's one state (worker_main.c). */
extern struct worker W;

/* Something from the host or of this process is wrong beyond repair: say so and exit. */
__attribute__((format(printf, 1, 2), noreturn)) void worker__fatal(const char *fmt, ...);
/* Send frame b whole (send_lock); the host gone ends the process. */
void worker__send_frame(const ipc_buf *b);
/* Handle every frame the host has sent; with wait, first wait for one. recv_lock held. */
void worker__pump(bool wait);

/* worker_api.c */
/* The host table a plugin gets in a worker. */
extern const bgt_api worker__api;
/* Send the pending progress report. prog_lock held. */
void worker__send_progress(void);
/* Send the subtasks gathered so far in one SUBTASKS frame. */
void worker__flush_subtasks(wcall *c);

#endif

/*
 * hostile.c - a test plugin that misbehaves in every way a native plugin can, for the process
 * isolation tests, and one that uses every SDK call, to prove they work across the boundary.
 *
 *   hostile.segv      {}                   writes through a NULL pointer
 *   hostile.abort     {}                   calls abort()
 *   hostile.exit      {}                   calls exit(0) in the middle of its run
 *   hostile.spin      {}                   spins forever, never looking at bgt_cancelled();
 *                                          registered with timeout_s = 1
 *   hostile.hang      {}                   sleeps forever, never looking at bgt_cancelled()
 *   hostile.forkcrash {}                   forks a child that keeps the worker's socket open
 *                                          for 5 s, then writes through a NULL pointer
 *   hostile.leak      {"mb": M=64}         leaks M MiB (touched) and succeeds
 *   hostile.nap       {"ms": M=1}          sleeps M ms (in 5 ms slices, watching bgt_cancelled())
 *                                          and succeeds, with no result, no log, no progress
 *   hostile.oom       {"chunk_mb": C=8, "max_mb": X=1024}
 *                                          allocates and touches C MiB at a time without
 *                                          checking for NULL, until it crashes (or X MiB)
 *   hostile.garbage   {"kind": K}          writes a malformed or misplaced frame on the worker's
 *                                          socket (fd 3), then waits to be killed
 *   hostile.syscalls  {}                   tries ptrace(PTRACE_PEEKDATA) on its parent (ESRCH when
 *                                          allowed: it traces nothing) and socket(AF_INET);
 *                                          result {"ptrace": errno, "socket": errno}
 *   hostile.sdk       {"steps": N=10, "step_ms": M=0, "crash_at": K=0, "submit": H, "fail": false,
 *                      "log": true}
 *                     N steps of M ms with "step i/N" progress, resuming at bgt_last_progress,
 *                     returning BGT_CANCELLED as soon as bgt_cancelled() says so; on its
 *                     first attempt crashes once step K is reported (K > 0); logs a line per
 *                     step; submits one task of handler H ({"from": id}); result {"id",
 *                     "handler", "attempt", "subtask", "resumed_from", "submitted", "pid"};
 *                     with fail: sets an error and returns BGT_FAILED
 *   hostile.par       parallel with split and merge; args {"items": N, "fail": [i...],
 *                     "crash": [i...], "hang": [i...], "fail_file": "/path"}: the split adds
 *                     {"i": i} per item; subtask i in "crash" segfaults on its first run; one in
 *                     "hang" sleeps forever, never looking at bgt_cancelled(); one in "fail"
 *                     fails while fail_file exists (or always, without one); merge sums the "i"s
 *   hostile.partimed  hostile.par registered with timeout_s = 1
 *
 * Every run first appends "<task id> <attempt> <pid> <handler> <subtask>" to the record file,
 * and a hook appends "hook-before|hook-after <task id> <attempt> <subtask> <pid> [status]"
 * lines (plugin config record = "/path"). Config crash_init = true makes init write through
 * a NULL pointer; init_crash_file = "/path" does the same whenever that file exists;
 * log_thread_us = N starts a thread in init that logs a plugin line (debug) every N µs, calls
 * or none.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bgtask.h>

/* The worker's end of its socket to the host (host/ipc.h). */
#define IPC_FD 3
/* How much hostile.leak keeps, at most. */
#define MAX_LEAKS 4096

static char *record_path;
/* Leaked blocks stay reachable from here, so a leak checker at exit does not report them. */
static void *leaks[MAX_LEAKS];
static int nleaks;

static void append(const char *line)
{
    if (!record_path)
        return;
    int fd = open(record_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    ssize_t w = write(fd, line, strlen(line));
    (void)w;
    close(fd);
}

static void record_run(bgt_task *t)
{
    char line[256];
    snprintf(line, sizeof line, "%s %u %d %s %d\n", bgt_task_id(t), bgt_attempt(t), (int)getpid(),
             bgt_task_handler(t), bgt_subtask(t));
    append(line);
}

/* No core file from a crash on purpose. */
static void no_core(void)
{
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
}

/* A real segmentation fault: not a sanitizer's report of the NULL store (make asan builds this
 * plugin with -fsanitize=undefined too). */
__attribute__((no_sanitize_undefined, no_sanitize_address)) static _Noreturn void segv(void)
{
    no_core();
    *(volatile int *)(uintptr_t)0 = 1;
    abort();
}

static double num(const cJSON *args, const char *field, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, field);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

static bool in_list(const cJSON *args, const char *field, int i)
{
    const cJSON *v;
    cJSON_ArrayForEach (v, cJSON_GetObjectItemCaseSensitive(args, field))
        if (cJSON_IsNumber(v) && (int)v->valuedouble == i)
            return true;
    return false;
}

static bgt_status h_segv(bgt_task *t, const cJSON *args, void *udata)
{
    record_run(t);
    segv();
}

static bgt_status h_forkcrash(bgt_task *t, const cJSON *args, void *udata)
{
    record_run(t);
    pid_t pid = fork();
    if (pid == 0) {
        struct timespec ts = {5, 0};
        nanosleep(&ts, NULL);
        _exit(0);
    }
    segv();
}

static bgt_status h_abort(bgt_task *t, const cJSON *args, void *udata)
{
    record_run(t);
    no_core();
    abort();
}

static bgt_status h_exit(bgt_task *t, const cJSON *args, void *udata)
{
    record_run(t);
    exit(0);
}

static _Noreturn bgt_status h_spin(bgt_task *t, const cJSON *args, void *udata)
{
    record_run(t);
    for (volatile unsigned long i = 0;; i++) {
    }
}

static _Noreturn void hang_forever(void)
{
    for (;;) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static bgt_status h_hang(bgt_task *t, const cJSON *args, void *udata)
{
    record_run(t);
    hang_forever();
}

static bool nap(bgt_task *t, double ms);

static bgt_status h_nap(bgt_task *t, const cJSON *args, void *udata)
{
    record_run(t);
    return nap(t, num(args, "ms", 1)) ? BGT_OK : BGT_CANCELLED;
}

/* Sleep ms milliseconds in slices, false as soon as bgt_cancelled() is true. */
static bool nap(bgt_task *t, double ms)
{
    struct timespec now, end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    long whole = (long)ms;
    end.tv_sec += whole / 1000;
    end.tv_nsec += (whole % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    for (;;) {
        if (bgt_cancelled(t))
            return false;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec))
            return true;
        struct timespec slice = {0, 5 * 1000000L};
        nanosleep(&slice, NULL);
    }
}

static bgt_status h_leak(bgt_task *t, const cJSON *args, void *udata)
{
    record_run(t);
    size_t mb = (size_t)num(args, "mb", 64);
    for (size_t i = 0; i < mb && nleaks < MAX_LEAKS; i++) {
        char *p = malloc(1 << 20);
        if (!p) {
            bgt_set_error(t, "out of memory after %zu MiB", i);
            return BGT_FAILED;
        }
        memset(p, 0x5a, 1 << 20);
        leaks[nleaks++] = p;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "pid", getpid());
    bgt_set_result(t, r);
    cJSON_Delete(r);
    return BGT_OK;
}

static bgt_status h_oom(bgt_task *t, const cJSON *args, void *udata)
{
    record_run(t);
    no_core();
    size_t chunk = (size_t)num(args, "chunk_mb", 8) << 20, max = (size_t)num(args, "max_mb", 1024);
    for (size_t got = 0; got < max << 20 && nleaks < MAX_LEAKS; got += chunk) {
        char *p = malloc(chunk);
        memset(p, 0x5a, chunk); /* a NULL from a failed allocation crashes here */
        leaks[nleaks++] = p;
    }
    bgt_set_error(t, "allocated %g MiB without running out", num(args, "max_mb", 1024));
    return BGT_FAILED;
}

/* The worker protocol's version (host/ipc.h). */
#define IPC_VERSION 3

/* Overwrite the call words of the page the worker shares with the host (host/ipc.h: a bell,
 * then 32 words of 8 bytes), found by its memfd's name in /proc/self/maps. */
static void scribble_page(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    unsigned long start = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "bgtaskd-worker-page") && sscanf(line, "%lx-", &start) == 1)
            break;
    if (f)
        fclose(f);
    if (!start)
        return;
    uint64_t *words = (uint64_t *)(start + 8);
    for (int i = 0; i < 32; i++)
        __atomic_store_n(&words[i], 0xdeadbeefdeadbeefull, __ATOMIC_SEQ_CST);
}

/* Write a frame header (and payload) on the worker's socket, as the protocol lays it out. */
static void raw_frame(uint32_t len, uint8_t type, uint8_t version, const void *payload,
                      size_t n)
{
    uint8_t h[8] = {0};
    memcpy(h, &len, 4);
    h[4] = type;
    h[5] = version;
    ssize_t w = write(IPC_FD, h, sizeof h);
    if (n)
        w = write(IPC_FD, payload, n);
    (void)w;
}

static bgt_status h_garbage(bgt_task *t, const cJSON *args, void *udata)
{
    record_run(t);
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(args, "kind");
    const char *kind = cJSON_IsString(k) ? k->valuestring : "oversized";
    uint8_t buf[64] = {0};
    if (strcmp(kind, "oversized") == 0) {
        raw_frame(0x7fffffff, 66, IPC_VERSION, NULL, 0);
    } else if (strcmp(kind, "type") == 0) {
        raw_frame(0, 99, IPC_VERSION, NULL, 0);
    } else if (strcmp(kind, "version") == 0) {
        raw_frame(0, 66, 9, NULL, 0);
    } else if (strcmp(kind, "nan") == 0) {
        double nan = NAN, one = 1;
        memcpy(buf, &nan, 8);
        memcpy(buf + 8, &one, 8);
        raw_frame(20, 66, IPC_VERSION, buf, 20); /* PROGRESS: NaN, 1, NULL message */
    } else if (strcmp(kind, "string") == 0) {
        uint32_t n = 5;
        memcpy(buf + 8, &n, 4);
        memcpy(buf + 12, "abcde", 5); /* DONE: call 0, status 0, an error without its NUL */
        raw_frame(17, 70, IPC_VERSION, buf, 17);
    } else if (strcmp(kind, "trailing") == 0) {
        raw_frame(24, 66, IPC_VERSION, buf, 24); /* PROGRESS 0, 0, NULL, and 4 bytes more */
    } else if (strcmp(kind, "status") == 0) {
        uint32_t s = 7;
        memcpy(buf + 4, &s, 4);
        raw_frame(16, 70, IPC_VERSION, buf, 16); /* DONE: call 0, status 7, no error, result */
    } else if (strcmp(kind, "call") == 0) {
        uint32_t c = 0xffffffffu;
        memcpy(buf, &c, 4);
        raw_frame(16, 70, IPC_VERSION, buf, 16); /* DONE of a call never sent */
    } else if (strcmp(kind, "unexpected") == 0) {
        raw_frame(0, 1, IPC_VERSION, NULL, 0); /* INIT, which only the host sends */
    } else if (strcmp(kind, "short") == 0) {
        raw_frame(4, 66, IPC_VERSION, buf, 4); /* PROGRESS cut short */
    } else if (strcmp(kind, "page") == 0) {
        scribble_page(); /* every call word of the page shared with the host: garbage */
    }
    /* The host kills this worker for the frame; wait for that. */
    for (int i = 0; i < 3000; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return BGT_OK;
}

static bgt_status h_syscalls(bgt_task *t, const cJSON *args, void *udata)
{
    record_run(t);
    errno = 0;
    long pr = ptrace(PTRACE_PEEKDATA, getppid(), NULL, NULL);
    int ptrace_errno = pr == -1 ? errno : 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int socket_errno = fd < 0 ? errno : 0;
    if (fd >= 0)
        close(fd);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "ptrace", ptrace_errno);
    cJSON_AddNumberToObject(r, "socket", socket_errno);
    bgt_set_result(t, r);
    cJSON_Delete(r);
    return BGT_OK;
}

static bgt_status h_sdk(bgt_task *t, const cJSON *args, void *udata)
{
    record_run(t);
    int steps = (int)num(args, "steps", 10), crash_at = (int)num(args, "crash_at", 0);
    double step_ms = num(args, "step_ms", 0);
    bool log = !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(args, "log"));
    double done = 0, total = 0;
    bgt_last_progress(t, &done, &total);
    int start = total == steps && done > 0 && done <= steps ? (int)done : 0;
    for (int i = start + 1; i <= steps; i++) {
        if (bgt_cancelled(t) || (step_ms > 0 && !nap(t, step_ms)))
            return BGT_CANCELLED;
        char msg[48];
        snprintf(msg, sizeof msg, "step %d/%d", i, steps);
        bgt_progress(t, i, steps, msg);
        if (log)
            bgt_log(t, BGT_LOG_INFO, "hostile.sdk at step %d of %d", i, steps);
        if (bgt_attempt(t) == 1 && i == crash_at) {
            /* Long enough for the host to persist this step before the crash. */
            nap(t, 500);
            segv();
        }
    }
    char submitted[BGT_ID_LEN + 1] = "";
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(args, "submit");
    if (cJSON_IsString(h)) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddStringToObject(a, "from", bgt_task_id(t));
        int rc = bgt_submit(t, h->valuestring, a, submitted);
        cJSON_Delete(a);
        if (rc < 0) {
            bgt_set_error(t, "bgt_submit failed: %s", strerror(-rc));
            return BGT_FAILED;
        }
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(args, "fail"))) {
        bgt_set_error(t, "failed on purpose after %d steps", steps);
        return BGT_FAILED;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", bgt_task_id(t));
    cJSON_AddStringToObject(r, "handler", bgt_task_handler(t));
    cJSON_AddNumberToObject(r, "attempt", bgt_attempt(t));
    cJSON_AddNumberToObject(r, "subtask", bgt_subtask(t));
    cJSON_AddNumberToObject(r, "resumed_from", start);
    cJSON_AddStringToObject(r, "submitted", submitted);
    cJSON_AddNumberToObject(r, "pid", getpid());
    int rc = bgt_set_result(t, r);
    cJSON_Delete(r);
    return rc == 0 ? BGT_OK : BGT_FAILED;
}

static bgt_status par_split(bgt_task *t, const cJSON *args, void *udata)
{
    record_run(t);
    int n = (int)num(args, "items", 4);
    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "i", i);
        cJSON_AddItemToObject(o, "fail", cJSON_Duplicate(cJSON_GetObjectItem(args, "fail"), 1));
        cJSON_AddItemToObject(o, "crash", cJSON_Duplicate(cJSON_GetObjectItem(args, "crash"), 1));
        cJSON_AddItemToObject(o, "hang", cJSON_Duplicate(cJSON_GetObjectItem(args, "hang"), 1));
        const cJSON *ff = cJSON_GetObjectItemCaseSensitive(args, "fail_file");
        if (cJSON_IsString(ff))
            cJSON_AddStringToObject(o, "fail_file", ff->valuestring);
        int rc = bgt_add_subtask(t, o);
        cJSON_Delete(o);
        if (rc < 0) {
            bgt_set_error(t, "bgt_add_subtask: %s", strerror(-rc));
            return BGT_FAILED;
        }
    }
    return BGT_OK;
}

static bgt_status par_run(bgt_task *t, const cJSON *args, void *udata)
{
    record_run(t);
    int i = (int)num(args, "i", -1);
    if (i != bgt_subtask(t)) {
        bgt_set_error(t, "subtask %d got the args of item %d", bgt_subtask(t), i);
        return BGT_FAILED;
    }
    if (in_list(args, "crash", i) && bgt_attempt(t) == 1)
        segv();
    if (in_list(args, "hang", i))
        hang_forever();
    const cJSON *ff = cJSON_GetObjectItemCaseSensitive(args, "fail_file");
    if (in_list(args, "fail", i) && (!cJSON_IsString(ff) || access(ff->valuestring, F_OK) == 0)) {
        bgt_set_error(t, "item %d fails on purpose", i);
        return BGT_FAILED;
    }
    bgt_progress(t, 1, 1, "done");
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "i", i);
    bgt_set_result(t, r);
    cJSON_Delete(r);
    return BGT_OK;
}

static bgt_status par_merge(bgt_task *t, const cJSON *results, void *udata)
{
    record_run(t);
    double sum = 0;
    int n = 0;
    const cJSON *r;
    cJSON_ArrayForEach (r, results) {
        n++;
        sum += num(r, "i", 0);
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "sum", sum);
    cJSON_AddNumberToObject(o, "results", n);
    cJSON_AddNumberToObject(o, "pid", getpid());
    bgt_set_result(t, o);
    cJSON_Delete(o);
    return BGT_OK;
}

static void hook_line(const char *what, const bgt_hook_info *info, const char *extra)
{
    char line[256];
    snprintf(line, sizeof line, "%s %s %u %d %d%s%s\n", what, info->task_id, info->attempt,
             info->subtask, (int)getpid(), extra ? " " : "", extra ? extra : "");
    append(line);
}

static void hook_before(void *udata, const bgt_hook_info *info)
{
    hook_line("hook-before", info, NULL);
}

static void hook_after(void *udata, const bgt_hook_info *info, bgt_status outcome,
                       double duration_s, const char *message)
{
    char s[16];
    snprintf(s, sizeof s, "%d", (int)outcome);
    hook_line("hook-after", info, s);
}

static long log_thread_us;

/* The thread of config log_thread_us: a plugin line every that many microseconds, for ever. */
static void *log_thread(void *arg)
{
    bgt_plugin *p = arg;
    struct timespec ts = {0, log_thread_us * 1000L};
    for (;;) {
        bgt_plugin_log(p, BGT_LOG_DEBUG, "tick");
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static int hostile_init(bgt_plugin *p, const cJSON *config)
{
    const cJSON *rec = cJSON_GetObjectItemCaseSensitive(config, "record");
    if (cJSON_IsString(rec))
        record_path = strdup(rec->valuestring);
    const cJSON *icf = cJSON_GetObjectItemCaseSensitive(config, "init_crash_file");
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(config, "crash_init")) ||
        (cJSON_IsString(icf) && access(icf->valuestring, F_OK) == 0))
        segv();
    const cJSON *ltu = cJSON_GetObjectItemCaseSensitive(config, "log_thread_us");
    if (cJSON_IsNumber(ltu) && ltu->valuedouble >= 1) {
        pthread_t th;
        log_thread_us = (long)ltu->valuedouble;
        if (pthread_create(&th, NULL, log_thread, p) == 0)
            pthread_detach(th);
    }
    static const struct {
        const char *name;
        bgt_run_fn run;
        double timeout_s;
    } singles[] = {
        {"hostile.segv", h_segv, 0},       {"hostile.abort", h_abort, 0},
        {"hostile.exit", h_exit, 0},       {"hostile.spin", h_spin, 1},
        {"hostile.hang", h_hang, 0},       {"hostile.forkcrash", h_forkcrash, 0},
        {"hostile.leak", h_leak, 0},       {"hostile.oom", h_oom, 0},
        {"hostile.garbage", h_garbage, 0}, {"hostile.syscalls", h_syscalls, 0},
        {"hostile.sdk", h_sdk, 0},         {"hostile.nap", h_nap, 0},
    };
    int rc;
    for (size_t i = 0; i < sizeof singles / sizeof singles[0]; i++)
        if ((rc = bgt_register_handler(p, (bgt_handler_def){.name = singles[i].name,
                                                            .kind = BGT_SINGLE,
                                                            .run = singles[i].run,
                                                            .timeout_s = singles[i].timeout_s,
                                                            .max_attempts = 3})) < 0)
            return rc;
    for (int timed = 0; timed < 2; timed++)
        if ((rc = bgt_register_handler(p, (bgt_handler_def){.name = timed ? "hostile.partimed"
                                                                          : "hostile.par",
                                                            .kind = BGT_PARALLEL,
                                                            .run = par_run,
                                                            .split = par_split,
                                                            .merge = par_merge,
                                                            .max_attempts = 3,
                                                            .parallelism = 4,
                                                            .timeout_s = timed ? 1 : 0})) < 0)
            return rc;
    bgt_plugin_log(p, BGT_LOG_INFO, "hostile plugin ready in process %d", (int)getpid());
    return bgt_register_hook(p, (bgt_hook_def){.name = "hostile-hook",
                                               .before = hook_before,
                                               .after = hook_after});
}

static void hostile_fini(bgt_plugin *p)
{
    for (int i = 0; i < nleaks; i++)
        free(leaks[i]);
    nleaks = 0;
    free(record_path);
    record_path = NULL;
}

BGT_PLUGIN("hostile", "1.0", hostile_init, hostile_fini);

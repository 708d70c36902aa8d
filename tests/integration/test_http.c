/*
 * test_http.c - bgtaskd's HTTP interface against a private redis-server: the
 * REST API driven by the curl program, every error status, the bearer token,
 * bad input that must change nothing in Redis, the SSE streams followed by the
 * npm `eventsource` client (tests/sse/client.js), 200 concurrent streams,
 * hang-ups that must free every socket and subscription, keep-alives,
 * /metrics checked by promtool against a known workload, and Redis going
 * away and coming back.
 *
 * The dashboard's files are served from a folder built here, next to files
 * that must never be served (a symbolic link out, a dotfile, a subfolder, an
 * unknown type, a file outside the folder), asked for by hostile paths.
 *
 * Hosts: "web" serves HTTP with a token and loads only the files plugin, so
 * it runs no demo task; "worker" loads demo and runs them. Stopping the
 * worker holds tasks back until a test is ready for them. The metrics test
 * starts its own host with HTTP and demo, so its counters are its workload.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "../harness/harness.h"

#define PREFIX "bgtask"
#define TOKEN "t0ken-for-tests_42"
#define MAX_BODY 4096
#define NO_TOKEN ""
#define SSE_CLIENT "tests/sse/client.js"

typedef struct fixture {
    th_redis r;
    redisContext *c;
    th_host web, worker;
    bool up, worker_up;
    char base[64]; /* "http://127.0.0.1:<port>" of web */
    char *curl, *node, *npm, *promtool, *sh;
    bool sse_ready; /* node and tests/sse/node_modules are there */
    char *ui_dir;   /* web's http.ui_dir: a few files, and some that must never be served */
} fixture;

static fixture fx;

/* ---- programs ---- */

/* The absolute path of a program in $PATH, or NULL. */
static char *find_prog(const char *name)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    char *copy = strdup(path), *save = NULL;
    char *found = NULL;
    for (char *dir = strtok_r(copy, ":", &save); dir && !found; dir = strtok_r(NULL, ":", &save)) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s/%s", dir, name);
        if (access(buf, X_OK) == 0)
            found = strdup(buf);
    }
    free(copy);
    return found;
}

static bool in_ci(void)
{
    const char *ci = getenv("CI");
    return ci && *ci;
}

/* A free loopback port (the kernel's pick, released for the server to take). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- curl ---- */

typedef struct resp {
    int status;
    char *head; /* the final response's header block */
    char *body;
    cJSON *json; /* the body parsed, or NULL */
} resp;

static void resp_free(resp *r)
{
    free(r->head);
    free(r->body);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

/*
 * curl -X method base+path with the token (NULL: the right one, "" none) and
 * more curl arguments (NULL-terminated). The output of -i is split into the
 * last header block and the body.
 */
static resp vreq(const char *base, const char *method, const char *path, const char *token,
                 va_list ap)
{
    char url[2048], auth[256];
    snprintf(url, sizeof url, "%s%s", base, path);
    const char *argv[64];
    int n = 0;
    argv[n++] = fx.curl;
    argv[n++] = "-s";
    argv[n++] = "-i";
    argv[n++] = "--path-as-is";
    argv[n++] = "--max-time";
    argv[n++] = "30";
    if (strcmp(method, "HEAD") == 0) {
        argv[n++] = "-I";
    } else {
        argv[n++] = "-X";
        argv[n++] = method;
    }
    if (!token)
        token = TOKEN;
    if (*token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        argv[n++] = "-H";
        argv[n++] = auth;
    }
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 60)
        argv[n++] = a;
    argv[n++] = url;
    argv[n] = NULL;
    char *out = NULL;
    int rc = th_run(60, (char *const *)argv, &out, NULL);
    resp r = {0};
    /* 28 is curl's --max-time: what a test of a stream that stays open uses. */
    if ((rc != 0 && rc != 28) || !out) {
        if (rc != 7) /* 7: not listening (yet), which polling expects */
            fprintf(stderr, "curl %s %s: exit %d\n", method, url, rc);
        free(out);
        r.status = -1;
        return r;
    }
    /* Skip interim responses (100 Continue): take the last header block. */
    char *p = out;
    for (;;) {
        char *end = strstr(p, "\r\n\r\n");
        if (!end)
            break;
        if (strncmp(p, "HTTP/1.1 100", 12) == 0) {
            p = end + 4;
            continue;
        }
        r.head = strndup(p, (size_t)(end - p + 2));
        r.body = strdup(end + 4);
        break;
    }
    if (r.head)
        sscanf(r.head, "HTTP/%*s %d", &r.status);
    else
        r.body = strdup(out);
    r.json = cJSON_Parse(r.body);
    free(out);
    return r;
}

static resp req(const char *method, const char *path, const char *token, ...)
{
    va_list ap;
    va_start(ap, token);
    resp r = vreq(fx.base, method, path, token, ap);
    va_end(ap);
    return r;
}

static resp req_at(const char *base, const char *method, const char *path, const char *token, ...)
{
    va_list ap;
    va_start(ap, token);
    resp r = vreq(base, method, path, token, ap);
    va_end(ap);
    return r;
}

/* POST /v1/tasks with a JSON body (and the right token). */
static resp post(const char *base, const char *json)
{
    return req_at(base, "POST", "/v1/tasks", NULL, "-H", "Content-Type: application/json",
                  "--data-binary", json, NULL);
}

/* True if the header block has "name: value" (name case-insensitive, value a prefix). */
static bool has_header(const resp *r, const char *name, const char *value)
{
    if (!r->head)
        return false;
    size_t n = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':') {
            const char *v = p + 3 + n;
            while (*v == ' ')
                v++;
            if (strncmp(v, value, strlen(value)) == 0)
                return true;
        }
    }
    return false;
}

static const char *jstr(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *f)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* Assert r is the JSON error {"error": {"code", "message"}} with this status
 * and a message that contains needle (if not NULL). */
static void assert_error(const resp *r, int status, const char *needle)
{
    if (r->status != status)
        fprintf(stderr, "expected %d, got %d: %s\n", status, r->status, r->body ? r->body : "");
    assert_int_equal(r->status, status);
    assert_true(has_header(r, "Content-Type", "application/json"));
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r->json, "error");
    assert_non_null(e);
    assert_non_null(jstr(e, "code"));
    const char *msg = jstr(e, "message");
    assert_non_null(msg);
    if (needle && !strstr(msg, needle))
        fail_msg("error message '%s' does not mention '%s'", msg, needle);
}

/* Submit through the API; returns the task id (malloc'd). */
static char *submit(const char *base, const char *json)
{
    resp r = post(base, json);
    if (r.status != 202)
        fprintf(stderr, "submit %s: %d %s\n", json, r.status, r.body ? r.body : "");
    assert_int_equal(r.status, 202);
    const char *id = jstr(r.json, "task_id");
    assert_non_null(id);
    char *copy = strdup(id);
    resp_free(&r);
    return copy;
}

static bool state_is(const char *id, const char *state)
{
    char *s = th_task_field(fx.c, PREFIX, id, "state");
    bool ok = s && strcmp(s, state) == 0;
    free(s);
    return ok;
}

static bool started(const char *id)
{
    char *s = th_task_field(fx.c, PREFIX, id, "attempt");
    bool ok = s && atoi(s) >= 1;
    free(s);
    return ok;
}

/* The value of a series ("name{labels}" or "name") in a /metrics text, NAN if absent. */
static double metric(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return NAN;
}

static double web_metric(const char *series)
{
    resp r = req("GET", "/metrics", NO_TOKEN, NULL);
    double v = r.status == 200 ? metric(r.body, series) : NAN;
    resp_free(&r);
    return v;
}

static int fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* The host's open files once they stop changing (sockets of streams that
 * just ended may still be closing), or -1. */
static int settled_fd_count(pid_t pid)
{
    int last = fd_count(pid);
    double end = th_now() + 10;
    while (th_now() < end) {
        th_sleep(0.2); /* polling for two equal readings, not waiting for an event */
        int n = fd_count(pid);
        if (n == last)
            return n;
        last = n;
    }
    return -1;
}

static bool healthy(const char *base)
{
    resp r = req_at(base, "GET", "/healthz", NO_TOKEN, NULL);
    bool ok = r.status == 200;
    resp_free(&r);
    return ok;
}

/* ---- the SSE client (node), run in the background ---- */

typedef struct nodeproc {
    pid_t pid;
    int fd;
    char *buf;
    size_t len, cap;
    int status;
} nodeproc;

/* Start node tests/sse/client.js url args... (NULL-terminated). */
static void np_start(nodeproc *p, const char *url, ...)
{
    const char *argv[32];
    int n = 0;
    argv[n++] = fx.node;
    argv[n++] = SSE_CLIENT;
    argv[n++] = url;
    va_list ap;
    va_start(ap, url);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 30)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    int pfd[2];
    assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
    memset(p, 0, sizeof *p);
    pid_t parent = getpid();
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, STDIN_FILENO);
        dup2(pfd[1], STDOUT_FILENO);
        execv(fx.node, (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    p->fd = pfd[0];
    p->status = -1;
}

/* Read what node printed, waiting up to timeout_s; false at end of output. */
static bool np_read(nodeproc *p, double timeout_s)
{
    if (p->fd < 0)
        return false;
    struct pollfd pf = {p->fd, POLLIN, 0};
    if (poll(&pf, 1, (int)(timeout_s * 1000)) <= 0)
        return true;
    if (p->cap - p->len < 65536) {
        p->cap = p->cap ? p->cap * 2 : 262144;
        p->buf = realloc(p->buf, p->cap);
    }
    ssize_t n = read(p->fd, p->buf + p->len, p->cap - p->len - 1);
    if (n <= 0) {
        close(p->fd);
        p->fd = -1;
        return false;
    }
    p->len += (size_t)n;
    p->buf[p->len] = '\0';
    return true;
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; p && (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* Wait until node's output has count occurrences of needle. */
static bool np_wait(nodeproc *p, const char *needle, int count, double timeout_s)
{
    double end = th_now() + timeout_s;
    while (th_now() < end) {
        if (p->buf && count_of(p->buf, needle) >= count)
            return true;
        if (!np_read(p, 0.05) && !(p->buf && count_of(p->buf, needle) >= count))
            return false;
    }
    return p->buf && count_of(p->buf, needle) >= count;
}

/* Wait for node to exit (reading all it prints); returns its exit status,
 * or -1 after killing it at the timeout. */
static int np_finish(nodeproc *p, double timeout_s)
{
    double end = th_now() + timeout_s;
    while (p->fd >= 0 && th_now() < end)
        np_read(p, 0.05);
    int st;
    while (th_now() < end) {
        if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
            p->pid = 0;
            return p->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        th_sleep(0.01);
    }
    kill(p->pid, SIGKILL);
    waitpid(p->pid, &st, 0);
    p->pid = 0;
    return -1;
}

/* kill -9 the node process (ours, by pid) and reap it. */
static void np_kill(nodeproc *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = 0;
    }
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
}

static void np_free(nodeproc *p)
{
    np_kill(p);
    free(p->buf);
    p->buf = NULL;
}

/* Node's output lines as a JSON array. */
static cJSON *np_lines(const nodeproc *p)
{
    cJSON *arr = cJSON_CreateArray();
    char *copy = strdup(p->buf ? p->buf : ""), *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        if (j)
            cJSON_AddItemToArray(arr, j);
    }
    free(copy);
    return arr;
}

/* The events (objects with "event") of node's output, in order. */
static cJSON *np_events(const nodeproc *p)
{
    cJSON *lines = np_lines(p), *evs = cJSON_CreateArray(), *l;
    cJSON_ArrayForEach (l, lines) {
        if (cJSON_GetObjectItemCaseSensitive(l, "event"))
            cJSON_AddItemToArray(evs, cJSON_Duplicate(l, true));
    }
    cJSON_Delete(lines);
    return evs;
}

/* The summary line of node's output. */
static cJSON *np_summary(const nodeproc *p)
{
    cJSON *lines = np_lines(p), *l, *out = NULL;
    cJSON_ArrayForEach (l, lines) {
        cJSON *s = cJSON_GetObjectItemCaseSensitive(l, "summary");
        if (s)
            out = cJSON_Duplicate(s, true);
    }
    cJSON_Delete(lines);
    return out;
}

static void sse_url(char *buf, size_t n, const char *base, const char *id)
{
    snprintf(buf, n, "%s/events/background-task?taskId=%s", base, id);
}

/* ---- fixture ---- */

static void worker_stop(void)
{
    if (fx.worker_up)
        th_host_stop(&fx.worker, 15);
    fx.worker_up = false;
}

static void worker_start(void)
{
    th_host_opts o = {.id = "worker"};
    assert_int_equal(th_host_start(&fx.worker, &fx.r, &o), 0);
    assert_true(th_host_wait_ready(&fx.worker, &fx.r, 15));
    fx.worker_up = true;
}

/* Tests that need demo tasks to run start with this (an earlier failure may
 * have left the worker stopped). */
static void worker_ensure(void)
{
    if (!fx.worker_up)
        worker_start();
}

/* Make sure the SSE client can run: node, and the locked npm packages. */
static bool sse_setup(void)
{
    fx.node = find_prog("node");
    fx.npm = find_prog("npm");
    if (!fx.node || !fx.npm) {
        fprintf(stderr, "test_http: node/npm not found (tools/install-deps installs them)\n");
        return false;
    }
    struct stat sb;
    if (stat("tests/sse/node_modules/eventsource/package.json", &sb) == 0)
        return true;
    char *argv[] = {fx.npm, "--prefix", "tests/sse", "ci", "--no-audit", "--no-fund", NULL};
    char *out = NULL, *err = NULL;
    int rc = th_run(300, argv, &out, &err);
    if (rc != 0)
        fprintf(stderr, "test_http: npm ci in tests/sse failed (%d): %s%s\n", rc, out ? out : "",
                err ? err : "");
    free(out);
    free(err);
    return rc == 0;
}

static void need_sse(void)
{
    if (fx.sse_ready)
        return;
    if (in_ci())
        fail_msg("the SSE client cannot run (node, npm or tests/sse packages) and CI is set");
    skip();
}

/* Contents of the dashboard test folder (web's http.ui_dir). */
#define UI_INDEX "<!doctype html><title>ui test</title>\n"
#define UI_JS "export const answer = 42;\n"
#define UI_SECRET "SECRET-must-not-be-served"

static bool write_file(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    fputs(text, f);
    return fclose(f) == 0;
}

/* <scratch>/ui with index.html, app.js, style.css, data.json, and what must
 * stay hidden: .hidden.js, notes.bak, link.js (a symbolic link to a file
 * outside), sub/inner.js; <scratch>/secret.js sits outside the folder. */
static char *make_ui_dir(void)
{
    char *top = th_tmpdir("ui");
    char *dir = NULL, sub[1024], target[1024], link[1024];
    if (asprintf(&dir, "%s/ui", top) < 0 || mkdir(dir, 0755) < 0)
        return NULL;
    snprintf(sub, sizeof sub, "%s/sub", dir);
    snprintf(target, sizeof target, "%s/secret.js", top);
    snprintf(link, sizeof link, "%s/link.js", dir);
    bool ok = write_file(dir, "index.html", UI_INDEX) && write_file(dir, "app.js", UI_JS) &&
              write_file(dir, "style.css", "body { margin: 0; }\n") &&
              write_file(dir, "data.json", "{\"a\": 1}\n") &&
              write_file(dir, ".hidden.js", UI_SECRET) && write_file(dir, "notes.bak", UI_SECRET) &&
              write_file(top, "secret.js", UI_SECRET) && symlink(target, link) == 0 &&
              mkdir(sub, 0755) == 0 && write_file(sub, "inner.js", UI_SECRET);
    free(top);
    if (!ok) {
        free(dir);
        return NULL;
    }
    return dir;
}

static int group_setup(void **state)
{
    fx.curl = find_prog("curl");
    fx.promtool = find_prog("promtool");
    fx.sh = find_prog("sh");
    if (!fx.curl) {
        fprintf(stderr, "test_http: curl not found (tools/install-deps installs it)\n");
        return -1;
    }
    int rc = th_redis_start(&fx.r, false);
    if (rc == -1)
        return -1;
    fx.up = rc == 0;
    if (!fx.up)
        return 0;
    fx.c = th_redis_connect(&fx.r);
    int port = free_port();
    if (port < 0)
        return -1;
    snprintf(fx.base, sizeof fx.base, "http://127.0.0.1:%d", port);
    fx.ui_dir = make_ui_dir();
    if (!fx.ui_dir)
        return -1;
    char extra[1024];
    /* metrics_interval = 0: every scrape reads Redis, as the tests compare readings. */
    snprintf(extra, sizeof extra,
             "http: { listen = \"127.0.0.1:%d\"; token = \"%s\"; max_body = %d; ui_dir = \"%s\";"
             " metrics_interval = 0; };",
             port, TOKEN, MAX_BODY, fx.ui_dir);
    th_host_opts web = {.id = "web", .plugins = "{ name = \"files\"; }", .extra = extra};
    if (th_host_start(&fx.web, &fx.r, &web) < 0 || !th_host_wait_ready(&fx.web, &fx.r, 15))
        return -1;
    th_host_opts worker = {.id = "worker"};
    if (th_host_start(&fx.worker, &fx.r, &worker) < 0 || !th_host_wait_ready(&fx.worker, &fx.r, 15))
        return -1;
    fx.worker_up = true;
    if (!TH_WAIT_UNTIL(10, healthy(fx.base))) {
        th_log_dump(&fx.web);
        return -1;
    }
    fx.sse_ready = sse_setup();
    return 0;
}

static int group_teardown(void **state)
{
    if (fx.c)
        redisFree(fx.c);
    th_cleanup();
    free(fx.curl);
    free(fx.node);
    free(fx.npm);
    free(fx.promtool);
    free(fx.sh);
    free(fx.ui_dir);
    return 0;
}

static void need_redis(void)
{
    if (!fx.up)
        skip();
}

/* ---- REST ---- */

static void test_healthz_and_hosts(void **state)
{
    need_redis();
    resp r = req("GET", "/healthz", NO_TOKEN, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "status"), "ok");
    resp_free(&r);

    r = req("GET", "/v1/hosts", NULL, NULL);
    assert_int_equal(r.status, 200);
    const cJSON *hosts = cJSON_GetObjectItemCaseSensitive(r.json, "hosts"), *h;
    bool web = false, worker = false;
    cJSON_ArrayForEach (h, hosts) {
        web |= jstr(h, "id") && strcmp(jstr(h, "id"), "web") == 0;
        worker |= jstr(h, "id") && strcmp(jstr(h, "id"), "worker") == 0;
    }
    assert_true(web && worker);
    resp_free(&r);
}

static void test_submit_status_list_cancel(void **state)
{
    need_redis();
    worker_ensure();
    /* Submit, then status once it ran. */
    resp r = post(fx.base, "{\"handler\":\"demo.echo\",\"args\":{\"x\":7}}");
    assert_int_equal(r.status, 202);
    char *id = strdup(jstr(r.json, "task_id"));
    char location[80];
    snprintf(location, sizeof location, "/v1/tasks/%s", id);
    assert_true(has_header(&r, "Location", location));
    resp_free(&r);
    assert_true(TH_WAIT_UNTIL(20, state_is(id, "SUCCESS")));
    r = req("GET", location, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "id"), id);
    assert_string_equal(jstr(r.json, "state"), "SUCCESS");
    assert_string_equal(jstr(r.json, "handler"), "demo.echo");
    assert_true(jnum(cJSON_GetObjectItemCaseSensitive(r.json, "args"), "x") == 7);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(r.json, "result"));
    assert_true(jnum(r.json, "finished_ms") > 0);
    resp_free(&r);

    /* The id in upper case names the same task. */
    char upper[80];
    snprintf(upper, sizeof upper, "/v1/tasks/%s", id);
    for (char *c = upper + strlen("/v1/tasks/"); *c; c++)
        if (*c >= 'a' && *c <= 'f')
            *c = (char)(*c - 'a' + 'A');
    r = req("GET", upper, NULL, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);

    /* List with filters and a limit. */
    r = req("GET", "/v1/tasks?state=SUCCESS&handler=demo.echo&limit=50", NULL, NULL);
    assert_int_equal(r.status, 200);
    const cJSON *t;
    bool listed = false;
    cJSON_ArrayForEach (t, cJSON_GetObjectItemCaseSensitive(r.json, "tasks")) {
        assert_string_equal(jstr(t, "state"), "SUCCESS");
        assert_string_equal(jstr(t, "handler"), "demo.echo");
        listed |= strcmp(jstr(t, "id"), id) == 0;
    }
    assert_true(listed);
    resp_free(&r);
    char *id2 = submit(fx.base, "{\"handler\":\"demo.echo\"}");
    assert_true(TH_WAIT_UNTIL(20, state_is(id2, "SUCCESS")));
    r = req("GET", "/v1/tasks?limit=1", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(jnum(r.json, "count"), 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "tasks")), 1);
    resp_free(&r);

    /* Cancel: finished, not yet claimed, running. */
    r = req("DELETE", location, NULL, NULL);
    assert_int_equal(r.status, 202);
    assert_string_equal(jstr(r.json, "outcome"), "already_finished");
    assert_string_equal(jstr(r.json, "state"), "SUCCESS");
    resp_free(&r);

    char *delayed = submit(fx.base, "{\"handler\":\"demo.echo\",\"delay_s\":600}");
    snprintf(location, sizeof location, "/v1/tasks/%s", delayed);
    r = req("DELETE", location, NULL, NULL);
    assert_int_equal(r.status, 202);
    assert_string_equal(jstr(r.json, "outcome"), "cancelled");
    assert_string_equal(jstr(r.json, "state"), "CANCELLED");
    resp_free(&r);
    assert_true(state_is(delayed, "CANCELLED"));

    char *running = submit(fx.base, "{\"handler\":\"demo.sleep\",\"args\":{\"seconds\":60}}");
    assert_true(TH_WAIT_UNTIL(20, started(running)));
    snprintf(location, sizeof location, "/v1/tasks/%s", running);
    r = req("DELETE", location, NULL, NULL);
    assert_int_equal(r.status, 202);
    assert_string_equal(jstr(r.json, "outcome"), "cancel_requested");
    resp_free(&r);
    assert_true(TH_WAIT_UNTIL(20, state_is(running, "CANCELLED")));

    /* A client-chosen id: once, then 409. */
    const char *body = "{\"handler\":\"demo.echo\",\"id\":\"5b0c4f5e-3f53-4c43-9e8e-8a2f0e6f2a11\","
                       "\"max_attempts\":2}";
    r = post(fx.base, body);
    assert_int_equal(r.status, 202);
    assert_string_equal(jstr(r.json, "task_id"), "5b0c4f5e-3f53-4c43-9e8e-8a2f0e6f2a11");
    resp_free(&r);
    r = post(fx.base, body);
    assert_error(&r, 409, "already exists");
    resp_free(&r);
    assert_true(TH_WAIT_UNTIL(20, state_is("5b0c4f5e-3f53-4c43-9e8e-8a2f0e6f2a11", "SUCCESS")));

    free(id);
    free(id2);
    free(delayed);
    free(running);
}

/* Every task key and the event and finished counts, to prove nothing was written. */
static char *redis_snapshot(void) { return th_task_snapshot(fx.c, PREFIX); }

/* No unfinished task left. */
static bool queues_empty(void) { return th_queues_empty(fx.c, PREFIX); }

static void test_bad_input_changes_nothing(void **state)
{
    need_redis();
    /* Earlier tests' tasks must be done, or they would write meanwhile. */
    assert_true(TH_WAIT_UNTIL(30, queues_empty()));
    char *before = redis_snapshot();
    static const struct {
        const char *body, *needle;
    } bad[] = {
        {"{bad", "not valid JSON"},
        {"", "not valid JSON"},
        {"[1,2]", "must be a JSON object"},
        {"{\"handler\":\"demo.echo\",\"bogus\":1}", "bogus"},
        {"{\"handler\":\"demo.echo\",\"args\":[1]}", "args"},
        {"{\"handler\":\"demo.echo\",\"args\":\"x\"}", "args"},
        {"{\"args\":{}}", "handler is required"},
        {"{\"handler\":42}", "handler"},
        {"{\"handler\":\"../../etc/passwd\"}", "handler"},
        {"{\"handler\":\"demo.echo\",\"id\":\"../../x\"}", "id"},
        {"{\"handler\":\"demo.echo\",\"id\":7}", "id"},
        {"{\"handler\":\"demo.echo\",\"max_attempts\":0}", "max_attempts"},
        {"{\"handler\":\"demo.echo\",\"max_attempts\":2.5}", "max_attempts"},
        {"{\"handler\":\"demo.echo\",\"delay_s\":-1}", "delay_s"},
        {"{\"handler\":\"demo.echo\",\"delay_s\":\"soon\"}", "delay_s"},
        {"{\"handler\":\"demo.echo\",\"parallelism\":0}", "parallelism"},
        {"{\"handler\":\"demo.echo\",\"parallelism\":1025}", "parallelism"},
        {"{\"handler\":\"demo.echo\",\"parallelism\":2.5}", "parallelism"},
        {"{\"handler\":\"demo.echo\",\"parallelism\":\"4\"}", "parallelism"},
        {"{\"handler\":\"demo.echo\",\"on_failure\":\"stop\"}", "on_failure"},
        {"{\"handler\":\"demo.echo\",\"on_failure\":1}", "on_failure"},
        {"{\"handler\":\"demo.echo\",\"subtasks\":{}}", "subtasks"},
        {"{\"handler\":\"demo.echo\",\"subtasks\":[{}],\"args\":{\"x\":1}}", "args would be ignored"},
        {"{\"handler\":\"demo.echo\",\"args\":{\"subtasks\":[],\"x\":1}}", "args.x would be ignored"},
        {"{\"handler\":\"demo.echo\",\"args\":{\"subtasks\":7}}", "args.subtasks must be an array"},
        {"{\"handler\":\"demo.echo\",\"args\":{},\"args\":{}}", "twice"},
        {"{\"handler\":\"demo.echo\"} trailing", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        resp r = post(fx.base, bad[i].body);
        assert_error(&r, 400, bad[i].needle);
        resp_free(&r);
    }
    /* User JSON that could not be read back whole: invalid UTF-8, a \u0000 escape (a string
     * would be cut there), nesting past 64, in args and in subtasks. */
    static const struct {
        const char *body, *needle;
    } unkept[] = {
        {"{\"handler\":\"demo.echo\",\"args\":{\"s\":\"caf\xe9\"}}", "invalid UTF-8"},
        {"{\"handler\":\"demo.echo\",\"args\":{\"s\":\"x\\u0000y\"}}", "\\u0000"},
        {"{\"handler\":\"demo.echo\",\"subtasks\":[{\"s\":\"\xff\"}]}", "invalid UTF-8"},
    };
    for (size_t i = 0; i < sizeof unkept / sizeof unkept[0]; i++) {
        resp r = post(fx.base, unkept[i].body);
        assert_error(&r, 400, unkept[i].needle);
        resp_free(&r);
    }
    char deep[300];
    int n = snprintf(deep, sizeof deep, "{\"handler\":\"demo.echo\",\"args\":{\"a\":");
    for (int i = 0; i < 70; i++)
        deep[n++] = '[';
    for (int i = 0; i < 70; i++)
        deep[n++] = ']';
    snprintf(deep + n, sizeof deep - (size_t)n, "}}");
    resp dr = post(fx.base, deep);
    assert_error(&dr, 400, "nested deeper than 64");
    resp_free(&dr);

    /* A NUL byte inside the body. */
    char *dir = th_tmpdir("http-bodies");
    char nulfile[600];
    snprintf(nulfile, sizeof nulfile, "%s/nul.json", dir);
    FILE *f = fopen(nulfile, "w");
    fwrite("{\"handler\":\"demo.echo\"}\0{}", 1, 26, f);
    fclose(f);
    char at[620];
    snprintf(at, sizeof at, "@%s", nulfile);
    resp r = req("POST", "/v1/tasks", NULL, "-H", "Content-Type: application/json", "--data-binary",
                 at, NULL);
    assert_error(&r, 400, "NUL");
    resp_free(&r);

    /* Content types. */
    r = req("POST", "/v1/tasks", NULL, "-H", "Content-Type: text/plain", "--data-binary",
            "{\"handler\":\"demo.echo\"}", NULL);
    assert_error(&r, 415, "application/json");
    resp_free(&r);
    r = req("POST", "/v1/tasks", NULL, "-H", "Content-Type:", "--data-binary",
            "{\"handler\":\"demo.echo\"}", NULL);
    assert_error(&r, 415, NULL);
    resp_free(&r);
    r = req("POST", "/v1/tasks", NULL, "-H", "Content-Type: application/json; charset=utf-8",
            "--data-binary", "{\"handler\":\"demo.echo\",\"max_attempts\":0}", NULL);
    assert_error(&r, 400, "max_attempts"); /* accepted as JSON, refused for its content */
    resp_free(&r);

    /* Bodies over http.max_body, with a length and chunked. */
    char bigfile[600];
    snprintf(bigfile, sizeof bigfile, "%s/big.json", dir);
    f = fopen(bigfile, "w");
    fprintf(f, "{\"handler\":\"demo.echo\",\"args\":{\"pad\":\"");
    for (int i = 0; i < MAX_BODY * 4; i++)
        fputc('a', f);
    fprintf(f, "\"}}");
    fclose(f);
    snprintf(at, sizeof at, "@%s", bigfile);
    r = req("POST", "/v1/tasks", NULL, "-H", "Content-Type: application/json", "--data-binary", at,
            NULL);
    assert_error(&r, 413, "max_body");
    resp_free(&r);
    r = req("POST", "/v1/tasks", NULL, "-H", "Content-Type: application/json", "-H",
            "Transfer-Encoding: chunked", "--data-binary", at, NULL);
    assert_error(&r, 413, "max_body");
    resp_free(&r);
    free(dir);

    /* Unknown routes, unknown and junk ids, path traversal. */
    static const char *const not_found[] = {
        "/nope",
        "/v1",
        "/v1/tasks/",
        "/v1/tasks/00000000-0000-4000-8000-000000000000",
        "/v1/tasks/not-a-uuid",
        "/v1/tasks/..%2F..%2Fetc%2Fpasswd",
        "/v1/tasks/../../etc/passwd",
        "/v1/tasks/%00",
        "/../../etc/passwd",
        "/events/background-task?taskId=00000000-0000-4000-8000-000000000000",
    };
    for (size_t i = 0; i < sizeof not_found / sizeof not_found[0]; i++) {
        r = req("GET", not_found[i], NULL, NULL);
        assert_error(&r, 404, NULL);
        resp_free(&r);
    }
    r = req("DELETE", "/v1/tasks/..%2F..%2Fbgtask%3Aevents", NULL, NULL);
    assert_error(&r, 404, NULL);
    resp_free(&r);
    r = req("DELETE", "/v1/tasks/00000000-0000-4000-8000-000000000000", NULL, NULL);
    assert_error(&r, 404, "not found");
    resp_free(&r);

    /* Bad query arguments. */
    static const char *const bad_query[] = {
        "/v1/tasks?limit=abc",
        "/v1/tasks?limit=0",
        "/v1/tasks?limit=100000",
        "/v1/tasks?state=NOPE",
        "/v1/tasks?handler=Bad%20Name",
        "/v1/tasks?bogus=1",
        "/v1/hosts?x=1",
        "/v1/tasks/00000000-0000-4000-8000-000000000000?x=1",
        "/events/background-task",
        "/events/background-task?taskId=..%2F..%2Fetc",
        "/events/background-task?taskId=00000000-0000-4000-8000-000000000000&x=1",
        "/v1/events?handler=..%2Fx",
    };
    for (size_t i = 0; i < sizeof bad_query / sizeof bad_query[0]; i++) {
        r = req("GET", bad_query[i], NULL, NULL);
        assert_error(&r, 400, NULL);
        resp_free(&r);
    }
    r = req("GET", "/events/background-task?taskId=00000000-0000-4000-8000-000000000000", NULL,
            "-H", "Last-Event-ID: ../x", NULL);
    assert_error(&r, 400, "Last-Event-ID");
    resp_free(&r);

    /* Methods: 405 with Allow. */
    static const struct {
        const char *method, *path, *allow;
    } bad_method[] = {
        {"PUT", "/v1/tasks", "GET, HEAD, POST"},
        {"DELETE", "/v1/tasks", "GET, HEAD, POST"},
        {"POST", "/healthz", "GET, HEAD"},
        {"POST", "/metrics", "GET, HEAD"},
        {"PATCH", "/v1/tasks/00000000-0000-4000-8000-000000000000", "GET, HEAD, DELETE"},
        {"POST", "/events/background-task", "GET"},
        {"DELETE", "/v1/hosts", "GET, HEAD"},
    };
    for (size_t i = 0; i < sizeof bad_method / sizeof bad_method[0]; i++) {
        r = req(bad_method[i].method, bad_method[i].path, NULL, NULL);
        assert_error(&r, 405, "not allowed");
        assert_true(has_header(&r, "Allow", bad_method[i].allow));
        resp_free(&r);
    }

    char *after = redis_snapshot();
    assert_string_equal(before, after);
    free(before);
    free(after);
}

static void test_token(void **state)
{
    need_redis();
    assert_true(TH_WAIT_UNTIL(30, queues_empty()));
    char *before = redis_snapshot();
    static const char *const wrong[] = {NO_TOKEN, "nope", TOKEN "x", "t0ken-for-tests_4",
                                        "T0KEN-FOR-TESTS_42"};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        resp r = req("GET", "/v1/tasks", wrong[i], NULL);
        assert_error(&r, 401, "token");
        assert_true(has_header(&r, "WWW-Authenticate", "Bearer"));
        resp_free(&r);
    }
    /* Refused before anything else: unknown paths, SSE, submission. */
    resp r = req("GET", "/nope", NO_TOKEN, NULL);
    assert_error(&r, 401, NULL);
    resp_free(&r);
    r = req("GET", "/events/background-task?taskId=00000000-0000-4000-8000-000000000000", NO_TOKEN,
            NULL);
    assert_error(&r, 401, NULL);
    resp_free(&r);
    r = req("GET", "/v1/events", "wrong", NULL);
    assert_error(&r, 401, NULL);
    resp_free(&r);
    r = req("POST", "/v1/tasks", "wrong", "-H", "Content-Type: application/json", "--data-binary",
            "{\"handler\":\"demo.echo\"}", NULL);
    assert_error(&r, 401, NULL);
    resp_free(&r);
    r = req("GET", "/v1/tasks", NO_TOKEN, "-H", "Authorization: Basic dXNlcjpwYXNz", NULL);
    assert_error(&r, 401, NULL);
    resp_free(&r);
    char *after = redis_snapshot();
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* The scheme is case-insensitive. */
    r = req("GET", "/v1/tasks", NO_TOKEN, "-H", "Authorization: bearer " TOKEN, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    /* /healthz and (without metrics_auth) /metrics are open. */
    r = req("GET", "/healthz", NO_TOKEN, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    r = req("GET", "/metrics", NO_TOKEN, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);

    /* With http.metrics_auth, /metrics needs the token too. */
    int port = free_port();
    char base[64], extra[256];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    snprintf(extra, sizeof extra,
             "http: { listen = \"127.0.0.1:%d\"; token = \"%s\"; metrics_auth = true; };", port,
             TOKEN);
    th_host_opts o = {.id = "guarded", .plugins = "{ name = \"files\"; }", .extra = extra};
    th_host h;
    assert_int_equal(th_host_start(&h, &fx.r, &o), 0);
    assert_true(TH_WAIT_UNTIL(15, healthy(base)));
    r = req_at(base, "GET", "/metrics", NO_TOKEN, NULL);
    assert_error(&r, 401, NULL);
    resp_free(&r);
    r = req_at(base, "GET", "/metrics", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "bgtask_redis_up 1"));
    resp_free(&r);
    assert_int_equal(th_host_stop(&h, 15), 0);
}

/* ---- the dashboard's files ---- */

/* The value of header name in r (copied into out), or "" if absent. */
static const char *header_value(const resp *r, const char *name, char *out, size_t n)
{
    out[0] = '\0';
    size_t len = strlen(name);
    for (const char *p = r->head ? strstr(r->head, "\r\n") : NULL; p; p = strstr(p + 2, "\r\n"))
        if (strncasecmp(p + 2, name, len) == 0 && p[2 + len] == ':') {
            const char *v = p + 3 + len;
            while (*v == ' ')
                v++;
            snprintf(out, n, "%.*s", (int)strcspn(v, "\r\n"), v);
            break;
        }
    return out;
}

/* Files are served without the token, with their type, an ETag that a
 * revalidation matches (304, no body), and headers that keep the page to its
 * origin; "/" and "/ui" lead to "/ui/"; only GET and HEAD. */
static void test_ui_files(void **state)
{
    need_redis();
    resp r = req("GET", "/ui/", NO_TOKEN, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, UI_INDEX);
    assert_true(has_header(&r, "Content-Type", "text/html; charset=utf-8"));
    assert_true(has_header(&r, "Cache-Control", "no-cache"));
    assert_true(has_header(&r, "X-Content-Type-Options", "nosniff"));
    assert_true(has_header(&r, "X-Frame-Options", "DENY"));
    assert_true(has_header(&r, "Content-Security-Policy", "default-src 'self'"));
    resp_free(&r);

    static const struct {
        const char *path, *type;
    } files[] = {
        {"/ui/index.html", "text/html"},
        {"/ui/app.js", "text/javascript; charset=utf-8"},
        {"/ui/style.css", "text/css; charset=utf-8"},
        {"/ui/data.json", "application/json"},
        {"/ui/app.js?v=3", "text/javascript"}, /* a query does not change the file */
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        r = req("GET", files[i].path, NO_TOKEN, NULL);
        if (r.status != 200 || !has_header(&r, "Content-Type", files[i].type))
            fail_msg("GET %s: %d %s", files[i].path, r.status, r.head ? r.head : "");
        resp_free(&r);
    }

    /* Revalidation: the ETag comes back as 304 without a body; HEAD has the same ETag. */
    char etag[64], etag2[64], inm[128];
    r = req("GET", "/ui/app.js", TOKEN, NULL); /* a token does no harm */
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, UI_JS);
    header_value(&r, "ETag", etag, sizeof etag);
    assert_true(strlen(etag) > 2 && etag[0] == '"');
    resp_free(&r);
    r = req("HEAD", "/ui/app.js", NO_TOKEN, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(header_value(&r, "ETag", etag2, sizeof etag2), etag);
    assert_string_equal(r.body, "");
    resp_free(&r);
    snprintf(inm, sizeof inm, "If-None-Match: W/\"nope\", %s", etag);
    r = req("GET", "/ui/app.js", NO_TOKEN, "-H", inm, NULL);
    assert_int_equal(r.status, 304);
    assert_string_equal(r.body, "");
    resp_free(&r);
    r = req("GET", "/ui/app.js", NO_TOKEN, "-H", "If-None-Match: \"0000000000000000\"", NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);

    /* "/" and "/ui" lead to the dashboard. */
    const char *to_ui[] = {"/", "/ui"};
    for (int i = 0; i < 2; i++) {
        r = req("GET", to_ui[i], NO_TOKEN, NULL);
        assert_int_equal(r.status, 302);
        assert_true(has_header(&r, "Location", "/ui/"));
        resp_free(&r);
    }
    r = req("POST", "/ui/app.js", NO_TOKEN, "-H", "Content-Type: application/json", "-d", "{}",
            NULL);
    assert_error(&r, 405, "POST");
    assert_true(has_header(&r, "Allow", "GET, HEAD"));
    resp_free(&r);
    /* The API still wants the token. */
    r = req("GET", "/v1/stats", NO_TOKEN, NULL);
    assert_error(&r, 401, NULL);
    resp_free(&r);
}

/* Paths that try to reach past the folder, or files in it that are not for a
 * browser, get a 404 that shows nothing of them. */
static void test_ui_hostile_paths(void **state)
{
    need_redis();
    char longname[400] = "/ui/";
    memset(longname + 4, 'a', 300);
    strcpy(longname + 304, ".js");
    const char *paths[] = {
        "/ui/notes.bak",        "/ui/.hidden.js",         "/ui/link.js",
        "/ui/sub/inner.js",     "/ui/sub",                "/ui/sub/",
        "/ui/../secret.js",     "/ui/%2e%2e/secret.js",   "/ui/%2E%2E%2Fsecret.js",
        "/ui/..%2fsecret.js",   "/ui/..%5csecret.js",     "/ui/..\\secret.js",
        "/ui//etc/passwd",      "/ui/%2fetc%2fpasswd",    "/ui/..",
        "/ui/.",                "/ui/./app.js",           "/ui/app.js/",
        "/ui/APP.JS",           "/ui/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/ui/....//secret.js",  "/uix",                   longname,
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        resp r = req("GET", paths[i], NO_TOKEN, NULL);
        bool leaked = r.body && (strstr(r.body, UI_SECRET) || strstr(r.body, "root:"));
        /* "/uix" is no dashboard path: the API's 401 comes first there. */
        int want = strcmp(paths[i], "/uix") == 0 ? 401 : 404;
        if (r.status != want || leaked)
            fail_msg("GET %.80s: %d%s: %.200s", paths[i], r.status, leaked ? " (leaked)" : "",
                     r.body ? r.body : "");
        assert_error(&r, want, NULL);
        resp_free(&r);
    }
    /* A NUL can only cut a name short: it never reaches another file. */
    resp r = req("GET", "/ui/app.js%00.html", NO_TOKEN, NULL);
    assert_true(r.status == 404 || (r.status == 200 && strcmp(r.body, UI_JS) == 0));
    resp_free(&r);
}

/* ---- claims that fail, keys of the wrong type, partial success ---- */

/*
 * A key of the wrong type that every claim and heartbeat touches (a dead host's held
 * attempts written as a string) stops neither: tasks run, the hosts stay healthy, and
 * the key is said in a host's log (issue 8, item 9). And /healthz reports claims and
 * heartbeats that fail: here Redis refuses every write (out of memory) while PING works.
 */
static void test_healthz_and_failing_claims(void **state)
{
    need_redis();
    worker_ensure();
    th_plant_wrong_types(fx.c, PREFIX, "ghost");
    char *ids[3];
    for (int i = 0; i < 3; i++)
        ids[i] = submit(fx.base, "{\"handler\":\"demo.echo\",\"args\":{\"after\":\"ghost\"}}");
    for (int i = 0; i < 3; i++) {
        assert_true(TH_WAIT_UNTIL(10, state_is(ids[i], "SUCCESS")));
        free(ids[i]);
    }
    assert_true(healthy(fx.base));
    assert_true(TH_WAIT_UNTIL(10, th_log_contains(&fx.web, "held:ghost held a value of the "
                                                           "wrong type") ||
                                      th_log_contains(&fx.worker, "held:ghost held a value of "
                                                                  "the wrong type")));

    redisReply *rep = redisCommand(fx.c, "CONFIG SET maxmemory 1");
    assert_non_null(rep);
    freeReplyObject(rep);
    bool reported = false;
    double end = th_now() + 15;
    while (!reported && th_now() < end) {
        resp r = req("GET", "/healthz", NO_TOKEN, NULL);
        reported = r.status == 503 && jstr(r.json, "reason") &&
                   strstr(jstr(r.json, "reason"), "have failed") &&
                   strstr(jstr(r.json, "reason"), "OOM");
        resp_free(&r);
        if (!reported)
            th_sleep(0.05);
    }
    rep = redisCommand(fx.c, "CONFIG SET maxmemory 0");
    assert_non_null(rep);
    freeReplyObject(rep);
    assert_true(reported);
    assert_true(TH_WAIT_UNTIL(15, healthy(fx.base)));
}

/*
 * A partial success is one thing everywhere (issue 8, item 13): the stored event, the
 * record's outcome over HTTP and in bgtaskctl, what a late subscriber gets first, and the
 * host's metrics.
 */
static void test_partial_success_everywhere(void **state)
{
    need_redis();
    /* The task runs on a host with HTTP, so that its metrics can be read. */
    worker_stop();
    int port = free_port();
    assert_true(port > 0);
    char extra[256], base[64];
    snprintf(extra, sizeof extra, "http: { listen = \"127.0.0.1:%d\"; token = \"%s\"; };", port,
             TOKEN);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    th_host metered;
    th_host_opts o = {.id = "metered", .extra = extra};
    assert_int_equal(th_host_start(&metered, &fx.r, &o), 0);
    assert_true(th_host_wait_ready(&metered, &fx.r, 15));
    assert_true(TH_WAIT_UNTIL(10, healthy(base)));

    char *id = submit(fx.base, "{\"handler\":\"demo.parallel\",\"args\":{\"items\":5,\"ms\":1,"
                               "\"fail\":[2]}}");
    assert_true(TH_WAIT_UNTIL(30, state_is(id, "SUCCESS")));
    assert_int_equal(th_count_events(fx.c, PREFIX, id, "bgtask_partial_success"), 1);
    assert_int_equal(th_count_events(fx.c, PREFIX, id, "bgtask_done"), 0);

    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s", id);
    resp r = req("GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "state"), "SUCCESS");
    assert_string_equal(jstr(r.json, "outcome"), "partial_success");
    resp_free(&r);

    char *out = NULL;
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "status", id, "--json", NULL), 0);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_string_equal(jstr(j, "outcome"), "partial_success");
    cJSON_Delete(j);
    free(out);
    assert_int_equal(th_ctl(&fx.r, &out, NULL, "status", id, NULL), 0);
    assert_non_null(strstr(out, "partial_success"));
    free(out);

    /* A late subscriber's first event. */
    snprintf(path, sizeof path, "/events/background-task?taskId=%s", id);
    r = req("GET", path, NULL, "-N", NULL);
    assert_int_equal(r.status, 200);
    assert_true(strncmp(r.body, "event: bgtask_partial_success\n", 30) == 0);
    resp_free(&r);

    /* The metrics of the host that ran it count it as what it was. */
    r = req_at(base, "GET", "/metrics", NO_TOKEN, NULL);
    assert_int_equal(r.status, 200);
    assert_true(metric(r.body, "bgtask_done_total{handler=\"demo.parallel\","
                               "status=\"partial_success\"}") == 1);
    /* (Its subtasks count one by one: four succeeded, one failed.) */
    assert_true(metric(r.body, "bgtask_done_total{handler=\"demo.parallel\","
                               "status=\"success\"}") == 4);
    resp_free(&r);
    assert_int_equal(th_host_stop(&metered, 15), 0);
    worker_ensure();
    free(id);
}

/* ---- stats, subtasks, retry ---- */

/* A task that succeeded after a retry has no error to show; a failed one has its own. */
static void test_error_only_on_failure(void **state)
{
    need_redis();
    worker_ensure();
    char *ok = submit(fx.base, "{\"handler\":\"demo.flaky\",\"args\":{\"n\":2}}");
    char *bad = submit(fx.base, "{\"handler\":\"demo.fail\",\"args\":{\"message\":\"it broke\"}}");
    assert_true(TH_WAIT_UNTIL(20, state_is(ok, "SUCCESS") && state_is(bad, "FAILURE")));
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s", ok);
    resp r = req("GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r.json, "error")));
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/tasks/%s", bad);
    r = req("GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(jstr(r.json, "error"), "it broke"));
    resp_free(&r);
    r = req("GET", "/v1/tasks?handler=demo.flaky", NULL, NULL);
    assert_int_equal(r.status, 200);
    const cJSON *t;
    int seen = 0;
    cJSON_ArrayForEach (t, cJSON_GetObjectItemCaseSensitive(r.json, "tasks")) {
        if (strcmp(jstr(t, "id"), ok) == 0) {
            assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(t, "error")));
            seen++;
        }
    }
    assert_int_equal(seen, 1);
    resp_free(&r);
    free(ok);
    free(bad);
}

/*
 * A task for a handler no live host serves: the submission's answer and the
 * record carry a warning, GET /v1/handlers lists the handler with no host
 * and its queue beside the served ones with their hosts, and
 * bgtask_unserved_handler counts its tasks. A served handler: no warning.
 */
static void test_unserved_handler(void **state)
{
    need_redis();
    worker_ensure();
    resp r = post(fx.base, "{\"handler\":\"nobody.serves\"}");
    assert_int_equal(r.status, 202);
    const char *w = jstr(r.json, "warning");
    assert_non_null(w);
    assert_non_null(strstr(w, "no live host serves handler nobody.serves"));
    char *id = strdup(jstr(r.json, "task_id"));
    resp_free(&r);
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s", id);
    r = req("GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(jstr(r.json, "warning"), "no live host serves handler nobody.serves"));
    resp_free(&r);
    /* Served by the worker (not by web itself) and by web (files): no warning. */
    r = post(fx.base, "{\"handler\":\"demo.echo\"}");
    assert_int_equal(r.status, 202);
    assert_null(jstr(r.json, "warning"));
    resp_free(&r);
    r = post(fx.base, "{\"handler\":\"files.checksum\",\"args\":{\"path\":\"/nonexistent\"}}");
    assert_int_equal(r.status, 202);
    assert_null(jstr(r.json, "warning"));
    resp_free(&r);

    r = req("GET", "/v1/handlers", NULL, NULL);
    assert_int_equal(r.status, 200);
    const cJSON *e;
    int seen = 0;
    cJSON_ArrayForEach (e, cJSON_GetObjectItemCaseSensitive(r.json, "handlers")) {
        const char *name = jstr(e, "handler");
        const cJSON *hosts = cJSON_GetObjectItemCaseSensitive(e, "hosts");
        if (strcmp(name, "nobody.serves") == 0) {
            assert_int_equal(cJSON_GetArraySize(hosts), 0);
            assert_true(jnum(e, "queued") == 1);
            seen++;
        } else if (strcmp(name, "demo.echo") == 0 || strcmp(name, "files.checksum") == 0) {
            assert_int_equal(cJSON_GetArraySize(hosts), 1);
            assert_string_equal(cJSON_GetArrayItem(hosts, 0)->valuestring,
                                name[0] == 'd' ? "worker" : "web");
            assert_true(jnum(e, "workers") > 0);
            seen++;
        }
    }
    assert_int_equal(seen, 3);
    resp_free(&r);
    r = req("GET", "/v1/handlers?x=1", NULL, NULL);
    assert_error(&r, 400, "x");
    resp_free(&r);
    assert_true(web_metric("bgtask_unserved_handler{handler=\"nobody.serves\"}") == 1);

    r = req("DELETE", path, NULL, NULL); /* leave no queue behind */
    assert_int_equal(r.status, 202);
    resp_free(&r);
    assert_true(isnan(web_metric("bgtask_unserved_handler{handler=\"nobody.serves\"}")));
    free(id);
}

static void test_stats_subtasks_retry(void **state)
{
    need_redis();
    worker_ensure();
    /* A parallel task with two failing subtasks ends in partial success. */
    char *id = submit(fx.base, "{\"handler\":\"demo.parallel\",\"args\":{\"items\":6,\"ms\":1,"
                               "\"fail\":[1,4]}}");
    assert_true(TH_WAIT_UNTIL(30, state_is(id, "SUCCESS")));
    char path[128];

    /* GET /v1/stats is bgtaskctl stats. */
    resp r = req("GET", "/v1/stats", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(r.json, "handlers")));
    assert_true(jnum(r.json, "finished") >= 1);
    assert_true(jnum(r.json, "hosts") >= 2);
    resp_free(&r);
    r = req("GET", "/v1/stats?x=1", NULL, NULL);
    assert_error(&r, 400, "'x'");
    resp_free(&r);

    /* The subtasks, counted by state, filtered and paged. */
    snprintf(path, sizeof path, "/v1/tasks/%s/subtasks", id);
    r = req("GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "task_id"), id);
    assert_true(jnum(r.json, "total") == 6 && jnum(r.json, "count") == 6);
    const cJSON *counts = cJSON_GetObjectItemCaseSensitive(r.json, "counts");
    assert_true(jnum(counts, "SUCCESS") == 4 && jnum(counts, "FAILURE") == 2);
    const cJSON *sub1 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r.json, "subtasks"), 1);
    assert_true(jnum(sub1, "index") == 1 && jnum(sub1, "attempt") == 1);
    assert_string_equal(jstr(sub1, "state"), "FAILURE");
    assert_string_equal(jstr(sub1, "message"), "subtask 1 was asked to fail");
    assert_true(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(sub1, "args")));
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/tasks/%s/subtasks?state=failure&offset=1&limit=5", id);
    r = req("GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_true(jnum(r.json, "matched") == 2 && jnum(r.json, "count") == 1);
    assert_true(jnum(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r.json, "subtasks"), 0),
                     "index") == 4);
    resp_free(&r);
    static const struct {
        const char *query, *needle;
    } bad[] = {
        {"state=DONE", "state must be"}, {"limit=0", "limit must be"},
        {"limit=1001", "limit must be"}, {"offset=-1", "offset must be"},
        {"offset=x", "offset must be"},  {"page=2", "'page'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(path, sizeof path, "/v1/tasks/%s/subtasks?%s", id, bad[i].query);
        r = req("GET", path, NULL, NULL);
        assert_error(&r, 400, bad[i].needle);
        resp_free(&r);
    }
    r = req("GET", "/v1/tasks/00000000-0000-4000-8000-000000000000/subtasks", NULL, NULL);
    assert_error(&r, 404, NULL);
    resp_free(&r);
    r = req("GET", "/v1/tasks/nope/subtasks", NULL, NULL);
    assert_error(&r, 404, "nope");
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/tasks/%s/other", id);
    r = req("GET", path, NULL, NULL);
    assert_error(&r, 404, NULL);
    resp_free(&r);

    /* Retry refusals change nothing. */
    snprintf(path, sizeof path, "/v1/tasks/%s/retry", id);
    r = req("GET", path, NULL, NULL);
    assert_error(&r, 405, NULL);
    assert_true(has_header(&r, "Allow", "POST"));
    resp_free(&r);
    r = req("POST", path, NULL, "-H", "Content-Type: application/json", "-d", "{\"all\":true}",
            NULL);
    assert_error(&r, 400, "'all'");
    resp_free(&r);
    r = req("POST", path, NULL, "-H", "Content-Type: text/plain", "-d", "please", NULL);
    assert_error(&r, 415, NULL);
    resp_free(&r);
    r = req("POST", path, NO_TOKEN, NULL);
    assert_error(&r, 401, NULL);
    resp_free(&r);
    char *single = submit(fx.base, "{\"handler\":\"demo.echo\"}");
    assert_true(TH_WAIT_UNTIL(20, state_is(single, "SUCCESS")));
    char spath[128];
    snprintf(spath, sizeof spath, "/v1/tasks/%s/retry", single);
    r = req("POST", spath, NULL, NULL);
    assert_error(&r, 409, "did not fail");
    assert_string_equal(jstr(cJSON_GetObjectItem(r.json, "error"), "reason"), "nothing_to_retry");
    resp_free(&r);
    r = req("POST", "/v1/tasks/00000000-0000-4000-8000-000000000000/retry", NULL, NULL);
    assert_error(&r, 404, NULL);
    resp_free(&r);
    char *attempt = th_task_field(fx.c, PREFIX, id, "attempt");
    assert_string_equal(attempt, "1");
    free(attempt);

    /* The retry runs the two failed subtasks again (they fail again: their args say so). */
    r = req("POST", path, NULL, NULL);
    assert_int_equal(r.status, 202);
    assert_string_equal(jstr(r.json, "task_id"), id);
    assert_string_equal(jstr(r.json, "state"), "ONGOING");
    assert_true(jnum(r.json, "retrying") == 2);
    resp_free(&r);
    assert_true(TH_WAIT_UNTIL(30, th_count_events(fx.c, PREFIX, id, "bgtask_partial_success") == 2));
    snprintf(path, sizeof path, "/v1/tasks/%s/subtasks?state=FAILURE", id);
    r = req("GET", path, NULL, NULL);
    const cJSON *s;
    cJSON_ArrayForEach (s, cJSON_GetObjectItemCaseSensitive(r.json, "subtasks"))
        assert_true(jnum(s, "attempt") == 2);
    resp_free(&r);
    free(single);
    free(id);
}

/* ---- SSE ---- */

/* Events of node's output must all be for id; returns how many. */
static int check_task_ids(const cJSON *evs, const char *id)
{
    const cJSON *e;
    int n = 0;
    cJSON_ArrayForEach (e, evs) {
        const char *name = jstr(e, "event");
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "data");
        if (strcmp(name, "server_close") == 0) {
            assert_true(cJSON_IsObject(d) && cJSON_GetArraySize(d) == 0);
        } else {
            assert_string_equal(jstr(d, "task_id"), id);
            assert_non_null(jstr(d, "handler"));
            assert_false(isnan(jnum(d, "ts_ms")));
        }
        n++;
    }
    return n;
}

/* Stream ids "ms-seq" in order ("" before any). */
static bool sid_less(const char *a, const char *b)
{
    unsigned long long am = 0, as = 0, bm = 0, bs = 0;
    if (!*a)
        return true;
    sscanf(a, "%llu-%llu", &am, &as);
    sscanf(b, "%llu-%llu", &bm, &bs);
    return am < bm || (am == bm && as < bs);
}

static void test_sse_running_task(void **state)
{
    need_redis();
    need_sse();
    /* The worker is stopped so the task cannot start before the client is in. */
    worker_stop();
    char *id = submit(fx.base, "{\"handler\":\"demo.sleep\",\"args\":{\"seconds\":1,\"steps\":4}}");
    char url[256];
    sse_url(url, sizeof url, fx.base, id);
    nodeproc p;
    np_start(&p, url, "--token", TOKEN, "--timeout", "60", NULL);
    assert_true(np_wait(&p, "\"event\"", 1, 30));
    worker_start();
    assert_int_equal(np_finish(&p, 60), 0);
    cJSON *evs = np_events(&p);
    int n = check_task_ids(evs, id);
    assert_true(n >= 4);

    /* Started first, progress in order, done, then server_close. */
    const cJSON *first = cJSON_GetArrayItem(evs, 0);
    assert_string_equal(jstr(first, "event"), "bgtask_updated");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(first, "data");
    assert_string_equal(jstr(d, "message"), "Task started");
    assert_true(jnum(d, "current_progress") == 0);
    double last = 0;
    int updates = 0;
    char first_live[64] = "", prev_id[64] = "";
    for (int i = 1; i < n - 2; i++) {
        const cJSON *e = cJSON_GetArrayItem(evs, i);
        assert_string_equal(jstr(e, "event"), "bgtask_updated");
        d = cJSON_GetObjectItemCaseSensitive(e, "data");
        assert_true(jnum(d, "current_progress") >= last);
        assert_true(jnum(d, "total_progress") == 4 || jnum(d, "total_progress") == 0);
        last = jnum(d, "current_progress");
        updates += last > 0;
        /* Live events carry their stream id, in increasing order. */
        const char *sid = jstr(e, "id");
        assert_non_null(sid);
        assert_true(*sid);
        if (!first_live[0] && last > 0)
            snprintf(first_live, sizeof first_live, "%s", sid);
        assert_true(sid_less(prev_id, sid));
        snprintf(prev_id, sizeof prev_id, "%s", sid);
    }
    assert_true(updates >= 1);
    assert_true(last == 4);
    const cJSON *done = cJSON_GetArrayItem(evs, n - 2);
    assert_string_equal(jstr(done, "event"), "bgtask_done");
    d = cJSON_GetObjectItemCaseSensitive(done, "data");
    assert_string_equal(jstr(d, "message"), "Task finished");
    assert_true(jnum(cJSON_GetObjectItemCaseSensitive(d, "result"), "steps") == 4);
    assert_string_equal(jstr(cJSON_GetArrayItem(evs, n - 1), "event"), "server_close");

    /* Last-Event-ID: the stream resumes after that event, from P:events. */
    assert_true(first_live[0]);
    nodeproc q;
    np_start(&q, url, "--token", TOKEN, "--last-event-id", first_live, NULL);
    assert_int_equal(np_finish(&q, 30), 0);
    cJSON *again = np_events(&q);
    int m = check_task_ids(again, id);
    /* Exactly the events after first_live: the tail of the first run. */
    int from = 0;
    for (int i = 0; i < n; i++)
        if (jstr(cJSON_GetArrayItem(evs, i), "id") &&
            strcmp(jstr(cJSON_GetArrayItem(evs, i), "id"), first_live) == 0)
            from = i + 1;
    assert_int_equal(m, n - from);
    for (int i = 0; i < m - 1; i++) {
        const cJSON *a = cJSON_GetArrayItem(again, i), *b = cJSON_GetArrayItem(evs, from + i);
        assert_string_equal(jstr(a, "event"), jstr(b, "event"));
        assert_string_equal(jstr(a, "id"), jstr(b, "id"));
    }
    assert_string_equal(jstr(cJSON_GetArrayItem(again, m - 1), "event"), "server_close");

    cJSON_Delete(evs);
    cJSON_Delete(again);
    np_free(&p);
    np_free(&q);
    free(id);
}

/* Follow a finished task: exactly its terminal event, then server_close. */
static void expect_final(const char *id, const char *event, const char *message)
{
    char url[256];
    sse_url(url, sizeof url, fx.base, id);
    nodeproc p;
    np_start(&p, url, "--token", TOKEN, NULL);
    assert_int_equal(np_finish(&p, 30), 0);
    cJSON *evs = np_events(&p);
    assert_int_equal(check_task_ids(evs, id), 2);
    const cJSON *e = cJSON_GetArrayItem(evs, 0);
    assert_string_equal(jstr(e, "event"), event);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "data");
    if (message)
        assert_non_null(strstr(jstr(d, "message"), message));
    if (strcmp(event, "bgtask_done") == 0)
        assert_non_null(cJSON_GetObjectItemCaseSensitive(d, "result"));
    assert_string_equal(jstr(cJSON_GetArrayItem(evs, 1), "event"), "server_close");
    cJSON_Delete(evs);
    np_free(&p);
}

static void test_sse_finished_task(void **state)
{
    need_redis();
    worker_ensure();
    need_sse();
    char *ok = submit(fx.base, "{\"handler\":\"demo.echo\",\"args\":{\"hello\":1}}");
    char *bad = submit(fx.base, "{\"handler\":\"demo.fail\",\"args\":{\"message\":\"no luck\"}}");
    char *gone = submit(fx.base, "{\"handler\":\"demo.echo\",\"delay_s\":600}");
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s", gone);
    resp r = req("DELETE", path, NULL, NULL);
    assert_int_equal(r.status, 202);
    resp_free(&r);
    assert_true(TH_WAIT_UNTIL(20, state_is(ok, "SUCCESS") && state_is(bad, "FAILURE")));

    expect_final(ok, "bgtask_done", NULL);
    expect_final(bad, "bgtask_failed", "no luck");
    expect_final(gone, "bgtask_cancelled", NULL);

    /* The wire format itself, as curl sees it. */
    snprintf(path, sizeof path, "/events/background-task?task_id=%s", ok);
    r = req("GET", path, NULL, "-N", NULL);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type", "text/event-stream"));
    assert_true(has_header(&r, "Cache-Control", "no-cache"));
    assert_true(strncmp(r.body, "event: bgtask_done\ndata: {", 26) == 0);
    size_t len = strlen(r.body);
    const char *tail = "\n\nevent: server_close\ndata: {}\n\n";
    assert_true(len > strlen(tail) && strcmp(r.body + len - strlen(tail), tail) == 0);
    resp_free(&r);

    /* An unknown task: 404, which the EventSource client reports. */
    char url[256];
    sse_url(url, sizeof url, fx.base, "00000000-0000-4000-8000-000000000000");
    nodeproc p;
    np_start(&p, url, "--token", TOKEN, NULL);
    assert_int_equal(np_finish(&p, 30), 0);
    assert_non_null(strstr(p.buf, "\"status\":404"));
    np_free(&p);
    free(ok);
    free(bad);
    free(gone);
}

/*
 * A Last-Event-ID that cannot name a place in the event stream is the
 * client's mistake, found before Redis is asked: 400, and no Redis error
 * counted. The last ids that can name one still resume a stream.
 */
static void test_sse_bad_last_event_id(void **state)
{
    need_redis();
    char *id = submit(fx.base, "{\"handler\":\"demo.echo\",\"delay_s\":600}");
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s", id);
    resp r = req("DELETE", path, NULL, NULL);
    assert_int_equal(r.status, 202);
    resp_free(&r);
    double errors = web_metric("bgtask_redis_errors_total");
    assert_false(isnan(errors));
    static const char *const bad[] = {
        "99999999999999999999-0",                    /* ms past 64 bits */
        "1-18446744073709551616",                    /* seq past 64 bits */
        "18446744073709551615-18446744073709551615", /* the last id: nothing comes after it */
        "1-", "-1", "1-2-3", "0x1-0", "1.5-0", "+1-0", "1-0 ",
        "123456789012345678901-0",                   /* 21 digits */
    };
    snprintf(path, sizeof path, "/events/background-task?taskId=%s", id);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char header[128];
        snprintf(header, sizeof header, "Last-Event-ID: %s", bad[i]);
        r = req("GET", path, NULL, "-H", header, NULL);
        if (r.status != 400)
            fprintf(stderr, "Last-Event-ID '%s': %d %s\n", bad[i], r.status, r.body);
        assert_error(&r, 400, "Last-Event-ID");
        resp_free(&r);
    }
    assert_true(web_metric("bgtask_redis_errors_total") == errors);
    static const char *const good[] = {"0", "0-0", "18446744073709551615-18446744073709551614",
                                       "18446744073709551614-18446744073709551615"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char header[128];
        snprintf(header, sizeof header, "Last-Event-ID: %s", good[i]);
        r = req("GET", path, NULL, "-N", "-H", header, NULL);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "event: bgtask_cancelled\n"));
        assert_non_null(strstr(r.body, "event: server_close\n"));
        resp_free(&r);
    }
    free(id);
}

static void test_sse_200_clients(void **state)
{
    need_redis();
    worker_ensure();
    need_sse();
    char *id = submit(fx.base, "{\"handler\":\"demo.sleep\",\"args\":{\"seconds\":3,\"steps\":6}}");
    char url[256];
    sse_url(url, sizeof url, fx.base, id);
    nodeproc p;
    np_start(&p, url, "--token", TOKEN, "--clients", "200", "--quiet", "--timeout", "90", NULL);
    assert_int_equal(np_finish(&p, 120), 0);
    cJSON *s = np_summary(&p);
    assert_non_null(s);
    assert_int_equal(jnum(s, "opened"), 200);
    assert_int_equal(jnum(s, "closed"), 200);
    assert_int_equal(jnum(s, "terminal"), 200);
    assert_int_equal(jnum(s, "errors"), 0);
    cJSON_Delete(s);
    np_free(&p);
    assert_true(TH_WAIT_UNTIL(10, web_metric("bgtask_sse_clients") == 0));
    free(id);
}

static void test_sse_hangups_free_everything(void **state)
{
    need_redis();
    worker_ensure();
    need_sse();
    char *id =
        submit(fx.base, "{\"handler\":\"demo.sleep\",\"args\":{\"seconds\":120,\"steps\":12}}");
    assert_true(TH_WAIT_UNTIL(10, web_metric("bgtask_sse_clients") == 0));
    int base_fds = settled_fd_count(fx.web.pid);
    assert_true(base_fds > 0);

    char url[256];
    sse_url(url, sizeof url, fx.base, id);
    nodeproc p;
    np_start(&p, url, "--token", TOKEN, "--clients", "100", "--quiet", "--timeout", "120", NULL);
    assert_true(np_wait(&p, "\"open\"", 100, 60));
    assert_true(TH_WAIT_UNTIL(10, web_metric("bgtask_sse_clients") == 100));
    assert_true(fd_count(fx.web.pid) >= base_fds + 100);
    /* The clients vanish at once (kill -9): the host sees each socket close. */
    np_kill(&p);
    assert_true(TH_WAIT_UNTIL(10, web_metric("bgtask_sse_clients") == 0));
    assert_true(TH_WAIT_UNTIL(10, fd_count(fx.web.pid) <= base_fds));

    /* A client that gives up on its own (curl's timeout) is freed the same way. */
    char path[128];
    snprintf(path, sizeof path, "/events/background-task?taskId=%s", id);
    resp r = req("GET", path, NULL, "-N", "--max-time", "1", NULL);
    resp_free(&r);
    assert_true(TH_WAIT_UNTIL(10, web_metric("bgtask_sse_clients") == 0));
    assert_true(TH_WAIT_UNTIL(10, fd_count(fx.web.pid) <= base_fds));

    snprintf(path, sizeof path, "/v1/tasks/%s", id);
    r = req("DELETE", path, NULL, NULL);
    assert_int_equal(r.status, 202);
    resp_free(&r);
    assert_true(TH_WAIT_UNTIL(20, state_is(id, "CANCELLED")));
    np_free(&p);
    free(id);
}

static void test_sse_all_events(void **state)
{
    need_redis();
    worker_ensure();
    need_sse();
    char url[256];
    snprintf(url, sizeof url, "%s/v1/events?handler=demo.echo", fx.base);
    nodeproc p;
    np_start(&p, url, "--token", TOKEN, "--timeout", "60", NULL);
    assert_true(np_wait(&p, "\"open\"", 1, 30));
    char *other = submit(fx.base, "{\"handler\":\"demo.fail\"}");
    char *mine = submit(fx.base, "{\"handler\":\"demo.echo\"}");
    char needle[80];
    snprintf(needle, sizeof needle, "\"task_id\":\"%s\"", mine);
    assert_true(np_wait(&p, "\"event\":\"bgtask_done\"", 1, 30));
    assert_true(TH_WAIT_UNTIL(20, state_is(other, "FAILURE")));
    np_kill(&p);
    assert_non_null(strstr(p.buf, needle));
    assert_null(strstr(p.buf, other));          /* filtered by handler */
    assert_null(strstr(p.buf, "server_close")); /* a dashboard stream does not end */
    np_free(&p);
    free(other);
    free(mine);
}

static void test_sse_keepalive(void **state)
{
    need_redis();
    char *id = submit(fx.base, "{\"handler\":\"demo.echo\",\"delay_s\":600}");
    char path[128];
    snprintf(path, sizeof path, "/events/background-task?taskId=%s", id);
    /* An idle stream gets a comment line within 15 s (the wait is that long). */
    resp r = req("GET", path, NULL, "-N", "--max-time", "17", NULL);
    assert_non_null(r.body);
    assert_true(strncmp(r.body, "event: bgtask_updated\n", 22) == 0);
    assert_non_null(strstr(r.body, "\n\n: keep-alive\n\n"));
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/tasks/%s", id);
    r = req("DELETE", path, NULL, NULL);
    resp_free(&r);
    free(id);
}

/* ---- metrics ---- */

/* Assert a series of a /metrics text has the value want (the text is shown if not). */
static void expect_metric(const char *text, const char *series, double want)
{
    double v = metric(text, series);
    if (v != want)
        fail_msg("%s is %g, expected %g, in:\n%s", series, v, want, text);
}

/* Cancel every unfinished task (earlier tests' leftovers, if one failed
 * half-way) and wait until no queue holds anything. */
static void quiesce(void)
{
    resp r = req("GET", "/v1/tasks?state=ONGOING&limit=1000", NULL, NULL);
    assert_int_equal(r.status, 200);
    const cJSON *t;
    cJSON_ArrayForEach (t, cJSON_GetObjectItemCaseSensitive(r.json, "tasks")) {
        char path[128];
        snprintf(path, sizeof path, "/v1/tasks/%s", jstr(t, "id"));
        resp d = req("DELETE", path, NULL, NULL);
        resp_free(&d);
    }
    resp_free(&r);
    assert_true(TH_WAIT_UNTIL(30, queues_empty()));
}

static void test_metrics_after_workload(void **state)
{
    need_redis();
    if (!fx.promtool || !fx.sh) {
        if (in_ci())
            fail_msg("promtool not found and CI is set (Debian package prometheus)");
        skip();
    }
    /* A host of its own runs the whole workload, so its counters are exactly it. */
    worker_ensure();
    quiesce();
    worker_stop();
    int port = free_port();
    char base[64], extra[128];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    snprintf(extra, sizeof extra, "http: { listen = \"127.0.0.1:%d\"; metrics_interval = 0; };",
             port);
    th_host_opts o = {.id = "metrics", .extra = extra};
    th_host m;
    assert_int_equal(th_host_start(&m, &fx.r, &o), 0);
    assert_true(th_host_wait_ready(&m, &fx.r, 15));
    assert_true(TH_WAIT_UNTIL(15, healthy(base)));
    /* The queue gauges are Redis-wide: earlier tests' tasks count too. The
     * web host has no demo handlers: an empty queue has no line there. */
    double depth0 = web_metric("bgtask_queue_depth{handler=\"demo.echo\"}");
    if (isnan(depth0))
        depth0 = 0;

    char *ids[16];
    int n = 0;
    for (int i = 0; i < 4; i++)
        ids[n++] = submit(base, "{\"handler\":\"demo.echo\"}");
    for (int i = 0; i < 2; i++)
        ids[n++] = submit(base, "{\"handler\":\"demo.fail\"}");
    ids[n++] = submit(base, "{\"handler\":\"demo.flaky\",\"args\":{\"n\":3}}");
    char *sleeper = submit(base, "{\"handler\":\"demo.sleep\",\"args\":{\"seconds\":60}}");
    char *queued[2];
    for (int i = 0; i < 2; i++)
        queued[i] = submit(base, "{\"handler\":\"demo.echo\",\"delay_s\":600}");
    assert_true(TH_WAIT_UNTIL(20, started(sleeper)));
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s", sleeper);
    resp r = req_at(base, "DELETE", path, NULL, NULL);
    assert_int_equal(r.status, 202);
    resp_free(&r);
    for (int i = 0; i < n; i++)
        assert_true(TH_WAIT_UNTIL(30, th_task_terminal(fx.c, PREFIX, ids[i])));
    assert_true(TH_WAIT_UNTIL(30, state_is(sleeper, "CANCELLED")));

    r = req_at(base, "GET", "/metrics", NO_TOKEN, NULL);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type", "text/plain; version=0.0.4"));
    const char *t = r.body;

    /* promtool reads the text on its standard input. */
    char *dir = th_tmpdir("http-metrics");
    char file[600], cmd[1400];
    snprintf(file, sizeof file, "%s/metrics.txt", dir);
    FILE *f = fopen(file, "w");
    fputs(t, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' check metrics < '%s'", fx.promtool, file);
    char *argv[] = {fx.sh, "-c", cmd, NULL};
    char *out = NULL, *err = NULL;
    int rc = th_run(60, argv, &out, &err);
    if (rc != 0)
        fprintf(stderr, "promtool: %s%s\n", out ? out : "", err ? err : "");
    assert_int_equal(rc, 0);
    free(out);
    free(err);
    free(dir);

    /* The counters are the workload. */
    expect_metric(t, "bgtask_done_total{handler=\"demo.echo\",status=\"success\"}", 4);
    expect_metric(t, "bgtask_done_total{handler=\"demo.fail\",status=\"failure\"}", 2);
    expect_metric(t, "bgtask_done_total{handler=\"demo.flaky\",status=\"retry\"}", 2);
    expect_metric(t, "bgtask_done_total{handler=\"demo.flaky\",status=\"success\"}", 1);
    expect_metric(t, "bgtask_done_total{handler=\"demo.sleep\",status=\"cancelled\"}", 1);
    expect_metric(t, "bgtask_done_total{handler=\"demo.echo\",status=\"failure\"}", 0);
    expect_metric(t, "bgtask_claims_total", 4 + 2 + 3 + 1);
    expect_metric(t, "bgtask_retries_total", 2);
    expect_metric(t, "bgtask_lost_leases_total", 0);
    expect_metric(t, "bgtask_releases_total", 0);
    expect_metric(t, "bgtask_running{handler=\"demo.sleep\"}", 0);
    expect_metric(t, "bgtask_running{handler=\"demo.echo\"}", 0);
    expect_metric(t, "bgtask_processing_seconds_count{handler=\"demo.echo\"}", 4);
    expect_metric(t, "bgtask_processing_seconds_bucket{handler=\"demo.echo\",le=\"+Inf\"}", 4);
    expect_metric(t, "bgtask_processing_seconds_bucket{handler=\"demo.echo\",le=\"0.1\"}", 4);
    expect_metric(t, "bgtask_processing_seconds_count{handler=\"demo.flaky\"}", 3);
    expect_metric(t, "bgtask_processing_seconds_bucket{handler=\"demo.sleep\",le=\"600\"}", 1);
    expect_metric(t, "bgtask_redis_up", 1);
    expect_metric(t, "bgtask_queue_depth{handler=\"demo.echo\"}", depth0 + 2);
    expect_metric(t, "bgtask_queue_due{handler=\"demo.echo\"}", 0);
    expect_metric(t, "bgtask_queue_depth{handler=\"demo.fail\"}", 0);
    assert_true(metric(t, "bgtask_hosts") >= 2);
    assert_true(metric(t, "bgtask_tasks_finished") >= 8);
    expect_metric(t, "bgtask_sse_clients", 0);
    assert_false(isnan(metric(t, "bgtask_progress_coalesced_total")));
    assert_false(isnan(metric(t, "bgtask_redis_errors_total")));
    /* The HTTP host's own counter saw the SSE tests' events. */
    assert_true(web_metric("bgtask_sse_events_sent_total") > 0 || !fx.sse_ready);
    resp_free(&r);

    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "/v1/tasks/%s", queued[i]);
        r = req_at(base, "DELETE", path, NULL, NULL);
        resp_free(&r);
        free(queued[i]);
    }
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(sleeper);
    assert_int_equal(th_host_stop(&m, 15), 0);
    worker_start();
}

/* ---- Redis away and back ---- */

static void test_redis_down(void **state)
{
    need_redis();
    worker_ensure();
    char *waiting = NULL;
    nodeproc p = {.fd = -1};
    if (fx.sse_ready) {
        waiting = submit(fx.base, "{\"handler\":\"demo.echo\",\"delay_s\":600}");
        char url[256];
        sse_url(url, sizeof url, fx.base, waiting);
        np_start(&p, url, "--token", TOKEN, "--timeout", "90", NULL);
        assert_true(np_wait(&p, "\"event\"", 1, 30));
    }
    th_redis_kill(&fx.r);

    resp r = req("GET", "/v1/tasks/00000000-0000-4000-8000-000000000000", NULL, NULL);
    assert_error(&r, 503, "redis");
    resp_free(&r);
    r = post(fx.base, "{\"handler\":\"demo.echo\"}");
    assert_error(&r, 503, "redis");
    resp_free(&r);
    r = req("GET", "/v1/tasks", NULL, NULL);
    assert_error(&r, 503, NULL);
    resp_free(&r);
    r = req("GET", "/events/background-task?taskId=00000000-0000-4000-8000-000000000000", NULL,
            NULL);
    assert_error(&r, 503, NULL);
    resp_free(&r);
    r = req("GET", "/healthz", NO_TOKEN, NULL);
    assert_int_equal(r.status, 503);
    assert_string_equal(jstr(r.json, "status"), "unavailable");
    assert_non_null(strstr(jstr(r.json, "reason"), "redis"));
    resp_free(&r);
    assert_true(web_metric("bgtask_redis_up") == 0);

    /* Back, empty (no persistence): everything recovers without a restart. */
    assert_int_equal(th_redis_restart(&fx.r), 0);
    redisFree(fx.c);
    fx.c = th_redis_connect(&fx.r);
    assert_true(TH_WAIT_UNTIL(30, healthy(fx.base)));
    assert_true(web_metric("bgtask_redis_up") == 1);
    if (fx.sse_ready) {
        /* The open stream was re-synced: its task is gone with the data, so it ends. */
        assert_int_equal(np_finish(&p, 30), 0);
        assert_non_null(strstr(p.buf, "server_close"));
        np_free(&p);
        assert_true(th_host_wait_ready(&fx.worker, &fx.r, 30));
        char *id = submit(fx.base, "{\"handler\":\"demo.echo\"}");
        assert_true(TH_WAIT_UNTIL(30, state_is(id, "SUCCESS")));
        expect_final(id, "bgtask_done", NULL);
        free(id);
    }
    free(waiting);
}

/* True if a host's log shows a sanitizer report (make asan). */
static bool log_has_sanitizer_report(const th_host *h)
{
    return th_log_contains(h, "Sanitizer") || th_log_contains(h, "runtime error");
}

/* SIGTERM with streams open: they end, and the host exits cleanly (under
 * make asan, that includes no leak and no sanitizer report). */
static void test_stop_with_open_streams(void **state)
{
    need_redis();
    nodeproc p = {.fd = -1};
    char *id = submit(fx.base, "{\"handler\":\"demo.echo\",\"delay_s\":600}");
    if (fx.sse_ready) {
        char url[256];
        sse_url(url, sizeof url, fx.base, id);
        np_start(&p, url, "--token", TOKEN, "--clients", "20", "--quiet", "--timeout", "60", NULL);
        if (!np_wait(&p, "\"open\"", 20, 30))
            fail_msg("the clients did not all connect: %s", p.buf ? p.buf : "");
        assert_true(TH_WAIT_UNTIL(10, web_metric("bgtask_sse_clients") == 20));
    }
    int rc = th_host_stop(&fx.web, 30);
    if (rc != 0 || log_has_sanitizer_report(&fx.web))
        th_log_dump(&fx.web);
    assert_int_equal(rc, 0);
    assert_false(log_has_sanitizer_report(&fx.web));
    assert_true(th_log_contains(&fx.web, "stopped"));
    if (fx.sse_ready) {
        /* Every stream ended (without server_close: the task goes on elsewhere). */
        assert_int_equal(np_finish(&p, 30), 0);
        cJSON *s = np_summary(&p);
        assert_non_null(s);
        assert_int_equal(jnum(s, "closed"), 20);
        assert_int_equal(jnum(s, "terminal"), 0);
        cJSON_Delete(s);
        np_free(&p);
    }
    worker_stop();
    assert_false(log_has_sanitizer_report(&fx.worker));
    free(id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthz_and_hosts),
        cmocka_unit_test(test_submit_status_list_cancel),
        cmocka_unit_test(test_bad_input_changes_nothing),
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_ui_files),
        cmocka_unit_test(test_ui_hostile_paths),
        cmocka_unit_test(test_error_only_on_failure),
        cmocka_unit_test(test_unserved_handler),
        cmocka_unit_test(test_stats_subtasks_retry),
        cmocka_unit_test(test_healthz_and_failing_claims),
        cmocka_unit_test(test_partial_success_everywhere),
        cmocka_unit_test(test_sse_running_task),
        cmocka_unit_test(test_sse_finished_task),
        cmocka_unit_test(test_sse_bad_last_event_id),
        cmocka_unit_test(test_sse_200_clients),
        cmocka_unit_test(test_sse_hangups_free_everything),
        cmocka_unit_test(test_sse_all_events),
        cmocka_unit_test(test_sse_keepalive),
        cmocka_unit_test(test_metrics_after_workload),
        cmocka_unit_test(test_redis_down),
        cmocka_unit_test(test_stop_with_open_streams),
    };
    return cmocka_run_group_tests_name("http", tests, group_setup, group_teardown);
}

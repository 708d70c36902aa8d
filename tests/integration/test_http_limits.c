/*
 * test_http_limits.c - what the HTTP interface refuses to let a client, or an
 * operator's mistake, cost: serving a non-loopback address without a token;
 * slow clients holding connections (per-client caps, a deadline for a whole
 * request, eviction at the limit, the connections kept for /healthz); event
 * streams that stop reading (a cap on the bytes queued for all of them);
 * /metrics scraped with thousands of invented handler names in Redis.
 *
 * Each test starts its own hosts against the program's redis-server. Raw
 * sockets play the clients, bound to addresses of 127.0.0.0/8 so that each
 * "client" has an address of its own on this one machine.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../harness/itest.h"


#define TOKEN "t0k-limits"

/* ---- raw clients ---- */

/* The port a host serves HTTP on, from its log line "http: serving on http://ADDR:PORT/". */
static int http_port(const th_host *h)
{
    int port = -1;
    bool found = TH_WAIT_UNTIL(IT_READY_S, ({
        FILE *f = fopen(h->log, "r");
        char line[1024];
        while (f && fgets(line, sizeof line, f)) {
            char *at = strstr(line, "http: serving on http://127.0.0.1:");
            if (at)
                port = atoi(at + strlen("http: serving on http://127.0.0.1:"));
        }
        if (f)
            fclose(f);
        port > 0;
    }));
    if (!found)
        fail_msg("host %s never said where it serves HTTP", h->id);
    return port;
}

/* A host serving HTTP on a free loopback port with the token and the given http settings
 * (libconfig members); *port gets its port. */
static th_host *http_host(const char *settings, int *port)
{
    char *extra = NULL;
    assert_true(asprintf(&extra, "http: { listen = \"127.0.0.1:0\"; token = \"" TOKEN "\"; %s };",
                         settings) > 0);
    th_host *h = it_host_start(&(th_host_opts){.extra = extra});
    free(extra);
    *port = http_port(h);
    return h;
}

/* A TCP connection from src (an address of 127.0.0.0/8) to 127.0.0.1:port. */
static int connect_from(const char *src, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, src, &a.sin_addr), 1);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
        fail_msg("bind %s: %s", src, strerror(errno));
    a.sin_port = htons((uint16_t)port);
    assert_int_equal(inet_pton(AF_INET, "127.0.0.1", &a.sin_addr), 1);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        fail_msg("connect from %s: %s", src, strerror(errno));
    return fd;
}

/* Send text; false if the server has closed the connection. */
static bool send_text(int fd, const char *text)
{
    return send(fd, text, strlen(text), MSG_NOSIGNAL) == (ssize_t)strlen(text);
}

/* Whether the server has closed fd (what it sent before is read and dropped), waiting up to
 * timeout_s for it. */
static bool closed_within(int fd, double timeout_s)
{
    double end = th_now() + timeout_s;
    for (;;) {
        double left = end - th_now();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, left > 0 ? (int)(left * 1000) + 1 : 0);
        if (n > 0) {
            char buf[4096];
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r <= 0)
                return true;
            continue;
        }
        if (left <= 0)
            return false;
    }
}

/* Read a response's head from fd within timeout_s; its status, or -1 if the connection
 * ended or the time ran out first. body (may be NULL) gets what followed the head, up to
 * bodylen - 1 bytes of what had arrived. */
static int read_status(int fd, double timeout_s, char *body, size_t bodylen)
{
    char buf[8192];
    size_t n = 0;
    double end = th_now() + timeout_s;
    while (n < sizeof buf - 1) {
        double left = end - th_now();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) <= 0)
            return -1;
        ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (r <= 0)
            return -1;
        n += (size_t)r;
        buf[n] = '\0';
        char *head_end = strstr(buf, "\r\n\r\n");
        if (head_end) {
            int status = -1;
            sscanf(buf, "HTTP/1.%*d %d", &status);
            if (body)
                snprintf(body, bodylen, "%s", head_end + 4);
            return status;
        }
    }
    return -1;
}

/* One request from src on a connection of its own; the response's status within timeout_s,
 * or -1. body as read_status. */
static int request_from(const char *src, int port, const char *path, bool token, double timeout_s,
                        char *body, size_t bodylen)
{
    int fd = connect_from(src, port);
    char req[512];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n", path,
             token ? "Authorization: Bearer " TOKEN "\r\n" : "");
    int status = send_text(fd, req) ? read_status(fd, timeout_s, body, bodylen) : -1;
    close(fd);
    return status;
}

/* n connections from src, each with the first line of a request sent and no more. */
static void open_slow(const char *src, int port, int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        fds[i] = connect_from(src, port);
        send_text(fds[i], "GET /healthz HTTP/1.1\r\n");
    }
}

/* How many of fds the server has closed by now. */
static int count_closed(const int *fds, int n)
{
    int closed = 0;
    for (int i = 0; i < n; i++)
        closed += closed_within(fds[i], 0);
    return closed;
}

/* The whole response to one request on a connection of its own (read until the server
 * closes it); malloc'd, or NULL. */
static char *fetch(int port, const char *path, bool token)
{
    int fd = connect_from("127.0.0.1", port);
    char req[512];
    snprintf(req, sizeof req, "GET %s HTTP/1.0\r\n%s\r\n", path,
             token ? "Authorization: Bearer " TOKEN "\r\n" : "");
    size_t n = 0, cap = 65536;
    char *buf = malloc(cap);
    double end = th_now() + 30;
    bool ok = send_text(fd, req);
    while (ok) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        double left = end - th_now();
        if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) <= 0) {
            ok = false;
            break;
        }
        if (n + 4096 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = recv(fd, buf + n, cap - n - 1, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (!ok) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* A metric's value in the host's /metrics (a sample without labels); -1 if absent. */
static double metric(int port, const char *name)
{
    char *text = fetch(port, "/metrics", false);
    double v = -1;
    char needle[128];
    snprintf(needle, sizeof needle, "\n%s ", name);
    const char *at = text ? strstr(text, needle) : NULL;
    if (at)
        v = atof(at + strlen(needle));
    free(text);
    return v;
}

/* The resident memory of process pid, in KiB. */
static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = atol(line + 6);
    if (f)
        fclose(f);
    return kib;
}

/* A stream of task id's events over HTTP/1.0 (no chunks: the stream is the body, and ends
 * when the server closes), with a receive buffer of rcvbuf bytes (0: the default). Returns
 * the socket, the response head read. */
static int open_stream(int port, const char *id, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    if (rcvbuf)
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    assert_int_equal(inet_pton(AF_INET, "127.0.0.1", &a.sin_addr), 1);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[256];
    snprintf(req, sizeof req,
             "GET /events/background-task?taskId=%s HTTP/1.0\r\nAuthorization: Bearer " TOKEN
             "\r\n\r\n",
             id);
    assert_true(send_text(fd, req));
    assert_int_equal(read_status(fd, 10, NULL, 0), 200);
    return fd;
}

/* Read what fd has now (without waiting longer than wait_s) and keep the last keep bytes
 * of the stream in tail (NUL-terminated); false once the server has closed it. */
static bool read_tail(int fd, double wait_s, char *tail, size_t keep)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)(wait_s * 1000)) <= 0)
        return true;
    char buf[262144];
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r <= 0)
        return false;
    size_t have = strlen(tail), n = (size_t)r;
    if (n >= keep - 1) {
        memcpy(tail, buf + n - (keep - 1), keep - 1);
        tail[keep - 1] = '\0';
        return true;
    }
    if (have + n > keep - 1) {
        size_t cut = have + n - (keep - 1);
        memmove(tail, tail + cut, have - cut);
        have -= cut;
    }
    memcpy(tail + have, buf, n);
    tail[have + n] = '\0';
    return true;
}

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* ---- no token, no address but loopback ---- */

/* Run the host's binary with its config and more arguments; returns its exit code and
 * stderr (*err, malloc'd). */
static int run_bgtaskd(const th_host *h, char **err, const char *a1, const char *a2)
{
    char *bin = it_bin("bgtaskd");
    char *argv[] = {bin, "-c", (char *)h->conf, (char *)a1, (char *)a2, NULL};
    int rc = th_run(60, argv, NULL, err);
    free(bin);
    return rc;
}

/*
 * Without a token, every interface (0.0.0.0, ::) or any other address that is not loopback is
 * refused before anything is bound, from the config (file and line) and from --http alike,
 * with a message naming the ways out. A token, or http.allow_insecure, lets it through to the
 * bind (an address of TEST-NET that this machine does not have: nothing listens anywhere).
 */
static void test_insecure_refused(void **state)
{
    it_need_redis();
    th_host *h = it_host_start(&(th_host_opts){0});
    assert_int_equal(th_host_stop(h, 15), 0);
    const char *fix = "is not a loopback address and no http.token or http.token_file is set: "
                      "anyone who can reach it could submit, read and cancel tasks. Set a token, "
                      "listen on a loopback address such as 127.0.0.1, or set "
                      "http.allow_insecure = true to serve it anyway";
    const char *every[] = {"0.0.0.0:0", "[::]:0", "192.0.2.1:0"};
    for (int i = 0; i < 3; i++) {
        char *err = NULL;
        assert_int_equal(run_bgtaskd(h, &err, "--http", every[i]), 1);
        char want[512];
        snprintf(want, sizeof want, "http: %s %s", every[i], fix);
        if (!strstr(err, want))
            fail_msg("--http %s: want \"%s\" in:\n%s", every[i], want, err);
        free(err);
    }

    /* The same from the config file, which --check-config catches with its line. */
    th_host bad;
    assert_int_equal(th_host_start(&bad, &fx.r,
                                   &(th_host_opts){.extra = "http: {\n listen = \"0.0.0.0:0\";\n};"}),
                     0);
    int status;
    assert_true(th_host_wait_exit(&bad, 30, &status));
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    char want[1024];
    snprintf(want, sizeof want, "%s:", bad.conf);
    assert_true(th_log_contains(&bad, want));
    snprintf(want, sizeof want, ": http.listen 0.0.0.0:0 %s", fix);
    if (!th_log_contains(&bad, want)) {
        th_log_dump(&bad);
        fail_msg("want \"%s\"", want);
    }

    /* With http.allow_insecure (or a token) it goes on to bind. */
    const char *allowed[] = {"http: { allow_insecure = true; };", "http: { token = \"t0k\"; };"};
    for (int i = 0; i < 2; i++) {
        th_host ok;
        assert_int_equal(th_host_start(&ok, &fx.r, &(th_host_opts){.extra = allowed[i]}), 0);
        assert_true(th_host_wait_ready(&ok, &fx.r, IT_READY_S));
        assert_int_equal(th_host_stop(&ok, 15), 0);
        char *err = NULL;
        assert_int_equal(run_bgtaskd(&ok, &err, "--http", "192.0.2.1:0"), 1);
        if (!strstr(err, "http: cannot listen on 192.0.2.1:0: Cannot assign requested address"))
            fail_msg("%s: want a bind failure in:\n%s", allowed[i], err);
        assert_null(strstr(err, fix));
        free(err);
    }
    it_pass();
}

/* ---- slow clients ---- */

/* One client address holds http.max_connections_per_client connections; more are closed at
 * once. Other clients are not affected. */
static void test_per_client_cap(void **state)
{
    it_need_redis();
    int port;
    http_host("max_connections_per_client = 4; request_timeout = 60.0;", &port);
    int fds[10];
    open_slow("127.0.0.2", port, fds, 10);
    /* Which four are served depends on the order the server accepts them in; the other six
     * are closed, and the four stay open (their deadline is a minute away). */
    int closed = 0;
    assert_true(TH_WAIT_UNTIL(10, (closed = count_closed(fds, 10)) >= 6));
    assert_int_equal(closed, 6);
    assert_int_equal(request_from("127.0.0.1", port, "/healthz", false, 10, NULL, 0), 200);
    assert_int_equal(request_from("127.0.0.3", port, "/v1/tasks", true, 10, NULL, 0), 200);
    close_all(fds, 10);
    it_pass();
}

/*
 * Slow clients from many addresses fill http.max_connections, trickling header lines: a new
 * connection evicts the one that has waited longest for its request, so /healthz and an
 * authenticated /v1 request are still answered.
 */
static void test_slow_clients_fill_the_server(void **state)
{
    it_need_redis();
    int port;
    http_host("max_connections = 32; max_connections_per_client = 4; request_timeout = 60.0;",
              &port);
    enum { ADDRS = 12, EACH = 4 };
    int fds[ADDRS * EACH];
    for (int a = 0; a < ADDRS; a++) {
        char src[32];
        snprintf(src, sizeof src, "127.0.1.%d", a + 1);
        open_slow(src, port, fds + a * EACH, EACH);
    }
    for (int i = 0; i < ADDRS * EACH; i++)
        send_text(fds[i], "X-Slow: 1\r\n");
    char body[256];
    assert_int_equal(request_from("127.0.0.1", port, "/healthz", false, 10, body, sizeof body),
                     200);
    assert_non_null(strstr(body, "\"status\":\"ok\""));
    assert_int_equal(request_from("127.0.0.1", port, "/v1/tasks", true, 10, NULL, 0), 200);
    /* The oldest slow ones made room: the server holds no more than its limit (once it has
     * accepted every connection the kernel took for it). */
    int open = ADDRS * EACH;
    if (!TH_WAIT_UNTIL(10, (open = ADDRS * EACH - count_closed(fds, ADDRS * EACH)) <= 32))
        fail_msg("%d slow connections still open", open);
    close_all(fds, ADDRS * EACH);
    it_pass();
}

/*
 * When every connection is busy (streams, here) and none waits for a request, connections
 * beyond http.max_connections are kept for /healthz: it is answered, anything else gets a 503
 * saying why, and a slow client there is cut after GUARD_RESERVE_TIMEOUT_S.
 */
static void test_healthz_reserve(void **state)
{
    it_need_redis();
    int port;
    http_host("max_connections = 8; request_timeout = 60.0;", &port);
    int streams[8];
    for (int i = 0; i < 8; i++) {
        char src[32];
        snprintf(src, sizeof src, "127.0.2.%d", i + 1);
        streams[i] = connect_from(src, port);
        send_text(streams[i], "GET /v1/events HTTP/1.1\r\nHost: t\r\n"
                              "Authorization: Bearer " TOKEN "\r\n\r\n");
        assert_int_equal(read_status(streams[i], 10, NULL, 0), 200);
    }
    char body[512];
    assert_int_equal(request_from("127.0.0.1", port, "/healthz", false, 10, body, sizeof body),
                     200);
    assert_int_equal(request_from("127.0.0.1", port, "/v1/tasks", true, 10, body, sizeof body),
                     503);
    assert_non_null(strstr(body, "answer /healthz only"));
    int slow = connect_from("127.0.0.1", port);
    send_text(slow, "GET /healthz HTTP/1.1\r\n");
    double t0 = th_now();
    assert_true(closed_within(slow, 15));
    assert_true(th_now() - t0 > 1.0);
    close(slow);
    for (int i = 0; i < 8; i++)
        assert_false(closed_within(streams[i], 0));
    close_all(streams, 8);
    it_pass();
}

/*
 * A whole request must arrive within http.request_timeout, however the client spaces its
 * bytes: header lines every 0.3 s, a body trickled after complete headers, and the silence
 * of a kept-alive connection between two requests are all cut.
 */
static void test_request_timeout(void **state)
{
    it_need_redis();
    int port;
    http_host("request_timeout = 2.0;", &port);

    int fd = connect_from("127.0.0.1", port);
    double t0 = th_now();
    send_text(fd, "GET /healthz HTTP/1.1\r\n");
    bool cut = false;
    while (!cut && th_now() - t0 < 15) {
        cut = !send_text(fd, "X-Slow: 1\r\n") || closed_within(fd, 0.3);
    }
    assert_true(cut);
    assert_true(th_now() - t0 > 1.5);
    close(fd);

    fd = connect_from("127.0.0.1", port);
    t0 = th_now();
    send_text(fd, "POST /v1/tasks HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " TOKEN "\r\n"
                  "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{");
    cut = false;
    while (!cut && th_now() - t0 < 15)
        cut = !send_text(fd, " ") || closed_within(fd, 0.3);
    assert_true(cut);
    assert_true(th_now() - t0 > 1.5);
    close(fd);

    fd = connect_from("127.0.0.1", port);
    send_text(fd, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(read_status(fd, 10, NULL, 0), 200);
    t0 = th_now();
    assert_true(closed_within(fd, 15));
    assert_true(th_now() - t0 > 1.5);
    close(fd);
    it_pass();
}

/* ---- streams that stop reading ---- */

#define SLOW_STREAMS 20
#define SSE_CAP (1 << 20)

/*
 * Twenty streams of one task stop reading (a 4 KiB receive buffer each) while the task
 * reports ~10 MB of progress; a twenty-first reads everything. The bytes queued for all
 * streams stay under http.sse_max_queued (1 MiB) throughout, and so does the host's memory
 * (each event is queued once, by reference, for all streams); the slow streams are dropped,
 * each ending with a server_close that says why, and the reading one gets every event to
 * the task's end.
 */
static void test_sse_memory_bounded(void **state)
{
    it_need_redis();
    char *flood = th_plugin_path("flood", true), *plugins = NULL, *extra = NULL;
    assert_true(asprintf(&plugins, "{ name = \"flood\"; file = \"%s\"; }", flood) > 0);
    assert_true(asprintf(&extra, "http: { listen = \"127.0.0.1:0\"; token = \"" TOKEN "\"; "
                                 "sse_max_queued = %d; };",
                         SSE_CAP) > 0);
    /* Under AddressSanitizer (make asan) freed memory waits in a quarantine of 256 MiB: the
     * host's memory would measure that. Without the quarantine it measures what is held. */
    const char *asan = getenv("ASAN_OPTIONS");
    char *saved = asan ? strdup(asan) : NULL, *opts = NULL;
    assert_true(asprintf(&opts, "%s%squarantine_size_mb=0", asan ? asan : "", asan ? ":" : "") >
                0);
    setenv("ASAN_OPTIONS", opts, 1);
    th_host *h = it_host_start(&(th_host_opts){.plugins = plugins,
                                               .extra = extra,
                                               .progress_interval_s = 0.0001,
                                               .workers = 2});
    if (saved)
        setenv("ASAN_OPTIONS", saved, 1);
    else
        unsetenv("ASAN_OPTIONS");
    free(saved);
    free(opts);
    int port = http_port(h);
    char *dir = th_tmpdir("sse-go"), *go = NULL, *args = NULL;
    assert_true(asprintf(&go, "%s/go", dir) > 0);
    assert_true(asprintf(&args, "{\"reports\": 10000, \"bytes\": 1000, \"go\": \"%s\"}", go) > 0);
    char *id = it_submit("flood.progress", args, NULL);

    int slow[SLOW_STREAMS];
    for (int i = 0; i < SLOW_STREAMS; i++)
        slow[i] = open_stream(port, id, 4096);
    int fast = open_stream(port, id, 0);
    long base = rss_kib(h->pid), peak = base;
    FILE *f = fopen(go, "w");
    assert_non_null(f);
    fclose(f);

    char tail[512] = "";
    double end = th_now() + 120, next_sample = 0;
    bool open = true;
    while (open && th_now() < end) {
        open = read_tail(fast, 0.01, tail, sizeof tail);
        if (th_now() < next_sample)
            continue;
        next_sample = th_now() + 0.25;
        long rss = rss_kib(h->pid);
        peak = rss > peak ? rss : peak;
        double queued = metric(port, "bgtask_sse_queued_bytes");
        if (!(queued >= 0 && queued <= SSE_CAP))
            fail_msg("bgtask_sse_queued_bytes is %.0f, the cap %d", queued, SSE_CAP);
    }
    fprintf(stderr, "host RSS: %ld KiB before the flood, %ld KiB at most during it\n", base, peak);
    if (peak - base > 32 * 1024)
        fail_msg("the host grew by %ld KiB while its streams may hold %d bytes", peak - base,
                 SSE_CAP);
    assert_false(open); /* the reading stream ended: the task did */
    if (!strstr(tail, "event: bgtask_done") ||
        !strstr(tail, "event: server_close\ndata: {}\n\n"))
        fail_msg("the reading stream ended with:\n%s", tail);
    it_assert_field(id, "state", "SUCCESS");

    for (int i = 0; i < SLOW_STREAMS; i++) {
        char last[512] = "";
        double stop = th_now() + 30;
        while (read_tail(slow[i], 0.5, last, sizeof last) && th_now() < stop)
            ;
        if (!strstr(last, "event: server_close\ndata: {\"reason\":\"this stream fell behind: "))
            fail_msg("slow stream %d ended with:\n%s", i, last);
    }
    assert_true(metric(port, "bgtask_sse_dropped_total") == SLOW_STREAMS);
    close_all(slow, SLOW_STREAMS);
    close(fast);
    free(flood);
    free(plugins);
    free(extra);
    free(dir);
    free(go);
    free(args);
    free(id);
    it_pass();
}

/* ---- /metrics and invented handler names ---- */

/* How many times Redis ran cmd (INFO commandstats). */
static long redis_calls(const char *cmd)
{
    redisReply *rep = it_cmd("INFO commandstats");
    char needle[64];
    snprintf(needle, sizeof needle, "cmdstat_%s:calls=", cmd);
    const char *at = strstr(rep->str, needle);
    long n = at ? atol(at + strlen(needle)) : 0;
    freeReplyObject(rep);
    return n;
}

/* The samples of a family with a handler label in a /metrics text; *sum gets their total. */
static int handler_samples(const char *text, const char *family, double *sum)
{
    char prefix[128];
    snprintf(prefix, sizeof prefix, "\n%s{handler=\"", family);
    int n = 0;
    *sum = 0;
    for (const char *p = strstr(text, prefix); p; p = strstr(p + 1, prefix)) {
        n++;
        *sum += strtod(strchr(p + 1, ' ') + 1, NULL);
    }
    return n;
}

/*
 * 3000 handler names that clients made up, each with a queue in Redis (what submitting to it
 * leaves): /metrics names the five handlers this host serves and the 20 deepest others
 * (http.metrics_max_handlers), sums the rest into handler="other", and reads Redis once per
 * http.metrics_interval however often it is scraped.
 */
static void test_metrics_bounded(void **state)
{
    it_need_redis();
    int port;
    http_host("metrics_max_handlers = 20; metrics_interval = 60.0;", &port);
    for (int i = 0; i < 3000; i++) {
        char handler[32], id[32];
        snprintf(handler, sizeof handler, "invented-%d", i);
        snprintf(id, sizeof id, "t%d", i);
        th_queue_plant(fx.c, IT_PREFIX, handler, id, i);
    }
    char *text = fetch(port, "/metrics", false);
    assert_non_null(text);
    double depth;
    int n = handler_samples(text, "bgtask_queue_depth", &depth);
    if (n != 5 + 20 + 1)
        fail_msg("bgtask_queue_depth has %d handlers, want 26", n);
    assert_true(depth == 3000);
    assert_non_null(strstr(text, "\nbgtask_queue_depth{handler=\"other\"} 2980\n"));
    assert_non_null(strstr(text, "\nbgtask_queue_depth{handler=\"demo.echo\"} 0\n"));
    assert_true(strlen(text) < 32768);

    long scans = redis_calls("scan");
    for (int i = 0; i < 20; i++) {
        char *again = fetch(port, "/metrics", false);
        assert_non_null(again);
        assert_int_equal(handler_samples(again, "bgtask_queue_depth", &depth), 26);
        free(again);
    }
    assert_int_equal(redis_calls("scan"), scans);
    free(text);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_insecure_refused),
        IT_TEST(test_per_client_cap),
        IT_TEST(test_slow_clients_fill_the_server),
        IT_TEST(test_healthz_reserve),
        IT_TEST(test_request_timeout),
        IT_TEST(test_sse_memory_bounded),
        IT_TEST(test_metrics_bounded),
    };
    return cmocka_run_group_tests(tests, it_group_setup, it_group_teardown);
}

/*
 * test_partition.c - a host cut off from Redis while the other hosts still
 * reach it (DESIGN §9, property 2). Host A talks to Redis through a TCP proxy
 * in this test; cutting the proxy partitions A alone. A keeps running its
 * attempt, the other host buries A once A's entry in P:hosts runs out and
 * claims the task as attempt 2. At-most-one live attempt means A's handler
 * must have been told to stop, by A's own clock, before attempt 2 starts:
 * whether A was cut off after renewing its lease or right after the claim.
 * When the proxy is restored, A reconnects and carries on with new work.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../harness/crashkit.h"

/* ---- a TCP proxy that can be cut ---- */

#define PROXY_MAX_CONNS 32

typedef struct proxy {
    int port;     /* where it listens (127.0.0.1) */
    int upstream; /* the redis-server's port */
    int lfd;
    int wake[2];           /* a byte here makes the thread look at `cut` and `quit` */
    atomic_bool cut;       /* closed: every connection dropped, new ones closed at once */
    atomic_bool blackhole; /* silent: connections stay open, nothing is relayed or accepted */
    atomic_bool quit;
    int fds[PROXY_MAX_CONNS][2]; /* client, upstream; -1 when unused */
    pthread_t thread;
} proxy;

static void pair_close(proxy *p, int i)
{
    for (int k = 0; k < 2; k++) {
        if (p->fds[i][k] >= 0)
            close(p->fds[i][k]);
        p->fds[i][k] = -1;
    }
}

static int connect_upstream(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Copy what is readable on `from` to `to`; false on EOF or error. */
static bool relay(int from, int to)
{
    char buf[65536];
    ssize_t n = read(from, buf, sizeof buf);
    if (n <= 0)
        return false;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(to, buf + off, (size_t)(n - off));
        if (w <= 0)
            return false;
        off += w;
    }
    return true;
}

static void *proxy_main(void *arg)
{
    proxy *p = arg;
    while (!atomic_load(&p->quit)) {
        struct pollfd pf[2 + 2 * PROXY_MAX_CONNS];
        int idx[2 + 2 * PROXY_MAX_CONNS];
        int n = 0;
        bool silent = atomic_load(&p->blackhole);
        pf[n++] = (struct pollfd){p->lfd, silent ? 0 : POLLIN, 0};
        pf[n++] = (struct pollfd){p->wake[0], POLLIN, 0};
        for (int i = 0; i < PROXY_MAX_CONNS && !silent; i++)
            for (int k = 0; k < 2; k++)
                if (p->fds[i][k] >= 0) {
                    idx[n] = i * 2 + k;
                    pf[n++] = (struct pollfd){p->fds[i][k], POLLIN, 0};
                }
        if (poll(pf, (nfds_t)n, 200) < 0)
            continue;
        if (pf[1].revents & POLLIN) {
            char b[16];
            while (read(p->wake[0], b, sizeof b) > 0) {
            }
        }
        if (atomic_load(&p->cut))
            for (int i = 0; i < PROXY_MAX_CONNS; i++)
                pair_close(p, i);
        if (pf[0].revents & POLLIN) {
            int c = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
            int u = c >= 0 && !atomic_load(&p->cut) ? connect_upstream(p->upstream) : -1;
            int slot = -1;
            for (int i = 0; i < PROXY_MAX_CONNS && slot < 0 && u >= 0; i++)
                if (p->fds[i][0] < 0)
                    slot = i;
            if (slot >= 0) {
                p->fds[slot][0] = c;
                p->fds[slot][1] = u;
            } else {
                if (c >= 0)
                    close(c);
                if (u >= 0)
                    close(u);
            }
        }
        for (int j = 2; j < n; j++) {
            if (!pf[j].revents)
                continue;
            int i = idx[j] / 2, k = idx[j] % 2;
            if (p->fds[i][k] < 0)
                continue;
            if (!relay(p->fds[i][k], p->fds[i][1 - k]))
                pair_close(p, i);
        }
    }
    for (int i = 0; i < PROXY_MAX_CONNS; i++)
        pair_close(p, i);
    return NULL;
}

static int proxy_start(proxy *p, int upstream)
{
    memset(p, 0, sizeof *p);
    for (int i = 0; i < PROXY_MAX_CONNS; i++)
        p->fds[i][0] = p->fds[i][1] = -1;
    p->upstream = upstream;
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(p->lfd, 64) < 0 ||
        getsockname(p->lfd, (struct sockaddr *)&a, &alen) < 0 ||
        pipe2(p->wake, O_CLOEXEC | O_NONBLOCK) < 0)
        return -1;
    p->port = ntohs(a.sin_port);
    return pthread_create(&p->thread, NULL, proxy_main, p) == 0 ? 0 : -1;
}

static void proxy_poke(proxy *p)
{
    ssize_t w = write(p->wake[1], "x", 1);
    (void)w;
}

/* Cut (true) or restore (false) every connection through the proxy. */
static void proxy_cut(proxy *p, bool cut)
{
    atomic_store(&p->cut, cut);
    proxy_poke(p);
}

/* Stop (true) or resume (false) relaying, without closing anything: packets lost in a
 * network that drops them, the kind of partition where calls hang until they time out. */
static void proxy_blackhole(proxy *p, bool on)
{
    atomic_store(&p->blackhole, on);
    proxy_poke(p);
}

static void proxy_stop(proxy *p)
{
    atomic_store(&p->quit, true);
    proxy_poke(p);
    pthread_join(p->thread, NULL);
    close(p->lfd);
    close(p->wake[0]);
    close(p->wake[1]);
}

static proxy px;
static bool px_up;

/* Heal the partition first, so the hosts behind the proxy can drain and exit cleanly. */
static int px_teardown(void **state)
{
    if (px_up) {
        proxy_cut(&px, false);
        proxy_blackhole(&px, false);
    }
    int rc = ck_teardown(state);
    if (px_up)
        proxy_stop(&px);
    px_up = false;
    return rc;
}

/* ---- the test ---- */

/* Start the proxy and host A behind it; wait until A serves. */
static th_host *start_a_behind_proxy(void)
{
    assert_int_equal(proxy_start(&px, fx.r.port), 0);
    px_up = true;
    th_redis via = fx.r;
    snprintf(via.url, sizeof via.url, "redis://127.0.0.1:%d/0", px.port);
    th_host_opts o = ck_opts("A");
    assert_true(ck.n < CK_MAX_HOSTS);
    th_host *a = &ck.hosts[ck.n];
    assert_int_equal(th_host_start(a, &via, &o), 0);
    ck.n++;
    assert_true(th_host_wait_ready(a, &fx.r, IT_READY_S));
    return a;
}

/*
 * After the cut: host B starts attempt 2 once A's entry ran out; by then A's handler must
 * have been told to stop. Then the task ends on B, the partition heals, and A takes new work.
 */
static void check_takeover(th_host *a, th_host *b, const char *id, double cut)
{
    /* B buries A once A's entry runs out, and starts attempt 2. */
    assert_true(TH_WAIT_UNTIL(CK_LEASE_S + 10, ck_count_runs(id, 2) == 1));
    double b_started = th_now() - cut;
    bool a_stopped = th_log_contains(a, "attempt 1 told to stop");
    printf("partition of host A to attempt 2 starting on host B: %.3f s; host A's handler "
           "%s been told to stop by then\n",
           b_started, a_stopped ? "had" : "had NOT");
    assert_int_equal(ck_run_pid(id, 2), (int)b->pid);
    /* At most one live attempt: A gave up its attempt, by its own clock, before B began. */
    assert_true(a_stopped);
    assert_true(TH_WAIT_UNTIL(5, th_log_contains(a, "outcome is discarded")));

    assert_true(it_wait_state(id, "SUCCESS", 15));
    it_assert_ended_on(id, b, 2);
    it_assert_field(id, "attempt", "2");
    it_assert_one_terminal(id, "bgtask_done");

    /* Healed: A reconnects without a restart and takes new work. */
    proxy_cut(&px, false);
    proxy_blackhole(&px, false);
    assert_true(TH_WAIT_UNTIL(15, th_log_contains(a, "redis is back")));
    assert_int_equal(th_host_stop(b, 10), 0);
    assert_true(TH_WAIT_UNTIL(10, th_host_expiry(fx.c, IT_PREFIX, "A") >= 0));
    char *next = it_submit("demo.echo", "{}", NULL);
    assert_true(it_wait_state(next, "SUCCESS", 15));
    it_assert_ended_on(next, a, 1);
    free(next);
}

/* A partitioned after renewing its lease at least once since the claim. */
static void test_partitioned_host_stops_first(void **state)
{
    it_need_redis();
    th_host *a = start_a_behind_proxy();
    char *id = it_submit("crash.steps", "{\"steps\": 200, \"step_ms\": 25}", NULL);
    assert_true(TH_WAIT_UNTIL(10, it_running_on(id, "A", 1, 2)));
    th_host_opts o = ck_opts("B");
    th_host *b = ck_host_start(&o, true);
    /* A has renewed its lease since the claim (heartbeats come every 0.3 s). */
    assert_true(TH_WAIT_UNTIL(10, it_running_on(id, "A", 1, 30)));
    proxy_cut(&px, true);
    check_takeover(a, b, id, th_now());
    free(id);
    it_pass();
}

/*
 * A partitioned right after the claim, most likely before its next heartbeat: the lease
 * the claim gave must not outlive A's entry in P:hosts either.
 */
static void test_partitioned_right_after_claim(void **state)
{
    it_need_redis();
    th_host *a = start_a_behind_proxy();
    char *id = it_submit("crash.steps", "{\"steps\": 200, \"step_ms\": 25}", NULL);
    assert_true(TH_WAIT_UNTIL(10, ck_count_runs(id, 1) == 1));
    proxy_cut(&px, true);
    double cut = th_now();
    th_host_opts o = ck_opts("B");
    th_host *b = ck_host_start(&o, true);
    check_takeover(a, b, id, cut);
    free(id);
    it_pass();
}

/*
 * A partitioned by a network that drops its packets: its Redis calls hang until they time
 * out instead of failing at once. Its own clock must stop the handler all the same.
 */
static void test_blackholed_host_stops_first(void **state)
{
    it_need_redis();
    th_host *a = start_a_behind_proxy();
    char *id = it_submit("crash.steps", "{\"steps\": 300, \"step_ms\": 25}", NULL);
    assert_true(TH_WAIT_UNTIL(10, it_running_on(id, "A", 1, 2)));
    th_host_opts o = ck_opts("B");
    th_host *b = ck_host_start(&o, true);
    assert_true(TH_WAIT_UNTIL(10, it_running_on(id, "A", 1, 30)));
    proxy_blackhole(&px, true);
    check_takeover(a, b, id, th_now());
    free(id);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_partitioned_host_stops_first, ck_setup, px_teardown),
        cmocka_unit_test_setup_teardown(test_partitioned_right_after_claim, ck_setup, px_teardown),
        cmocka_unit_test_setup_teardown(test_blackholed_host_stops_first, ck_setup, px_teardown),
    };
    ck_filter();
    return cmocka_run_group_tests(tests, it_group_setup, it_group_teardown);
}

/*
 * test_notify.c - the service-manager notifications (host/notify.c) against a
 * unix datagram socket the test binds and names in $NOTIFY_SOCKET, as systemd
 * does for a Type=notify unit: READY=1, STOPPING=1, RELOADING=1, WATCHDOG=1,
 * the watchdog interval from $WATCHDOG_USEC, and no-ops without a socket.
 * Built without libsystemd the calls are no-ops and the tests that need the
 * messages skip.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "../harness/harness.h"
#include "notify.h"

typedef struct sock_fixture {
    int fd;
    char *dir;
    char path[108];
} sock_fixture;

static sock_fixture sf = {.fd = -1};

/* Bind a datagram socket in a scratch folder and point $NOTIFY_SOCKET at it. */
static int bind_setup(void **state)
{
    (void)state;
    sf.dir = th_tmpdir("notify");
    int n = snprintf(sf.path, sizeof sf.path, "%s/notify.sock", sf.dir);
    if (n < 0 || (size_t)n >= sizeof sf.path) {
        fprintf(stderr, "socket path too long: %s/notify.sock\n", sf.dir);
        return -1;
    }
    sf.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sf.fd < 0)
        return -1;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    memcpy(a.sun_path, sf.path, strlen(sf.path) + 1);
    if (bind(sf.fd, (struct sockaddr *)&a, sizeof a) < 0) {
        fprintf(stderr, "bind %s: %s\n", sf.path, strerror(errno));
        return -1;
    }
    setenv("NOTIFY_SOCKET", sf.path, 1);
    return 0;
}

static int bind_teardown(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    if (sf.fd >= 0)
        close(sf.fd);
    sf.fd = -1;
    free(sf.dir);
    sf.dir = NULL;
    th_cleanup();
    return 0;
}

static void need_systemd(void)
{
#ifndef HAVE_SYSTEMD
    skip();
#endif
}

/*
 * The next datagram on the socket, waiting up to 2 s; asserts that it has `line` as one of
 * its newline-separated lines.
 */
static void expect_line(const char *line)
{
    struct pollfd p = {sf.fd, POLLIN, 0};
    assert_int_equal(poll(&p, 1, 2000), 1);
    char buf[512];
    ssize_t n = recv(sf.fd, buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    bool found = false;
    for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
        found = found || strcmp(l, line) == 0;
    if (!found)
        fail_msg("expected a line '%s' in the message, got '%s'", line, buf);
}

/* Nothing is waiting on the socket. */
static void expect_nothing(void)
{
    struct pollfd p = {sf.fd, POLLIN, 0};
    assert_int_equal(poll(&p, 1, 0), 0);
}

static void test_ready_and_stopping(void **state)
{
    (void)state;
    need_systemd();
    notify_ready();
    expect_line("READY=1");
    notify_stopping();
    expect_line("STOPPING=1");
    expect_nothing();
}

static void test_reloading_then_ready(void **state)
{
    (void)state;
    need_systemd();
    notify_reloading();
    expect_line("RELOADING=1");
    notify_ready();
    expect_line("READY=1");
    notify_watchdog();
    expect_line("WATCHDOG=1");
    expect_nothing();
}

static void test_watchdog_interval(void **state)
{
    (void)state;
    need_systemd();
    unsetenv("WATCHDOG_USEC");
    assert_true(notify_watchdog_interval() == 0);
    /* WatchdogSec=3 for this process: ping every 1.5 s. */
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    setenv("WATCHDOG_USEC", "3000000", 1);
    assert_true(notify_watchdog_interval() == 1.5);
    /* Meant for another process (the parent of a forked child): not ours to ping. */
    setenv("WATCHDOG_PID", "1", 1);
    assert_true(notify_watchdog_interval() == 0);
    unsetenv("WATCHDOG_PID");
    unsetenv("WATCHDOG_USEC");
}

/* Not started by systemd: every call is a silent no-op. */
static void test_no_socket_is_a_noop(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    notify_ready();
    notify_reloading();
    notify_watchdog();
    notify_stopping();
    assert_true(notify_watchdog_interval() == 0);
    expect_nothing();
    setenv("NOTIFY_SOCKET", sf.path, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ready_and_stopping),
        cmocka_unit_test(test_reloading_then_ready),
        cmocka_unit_test(test_watchdog_interval),
        cmocka_unit_test(test_no_socket_is_a_noop),
    };
    return cmocka_run_group_tests(tests, bind_setup, bind_teardown);
}

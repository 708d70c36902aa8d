/*
 * test_http_limits.c - what the HTTP interface refuses to let a client, or an
 * operator's mistake, cost: serving a non-loopback address without a token.
 *
 * Each test starts its own hosts against the program's redis-server.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "itest.h"

/* ---- item: no token, no address but loopback ---- */

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_insecure_refused),
    };
    return cmocka_run_group_tests(tests, it_group_setup, it_group_teardown);
}

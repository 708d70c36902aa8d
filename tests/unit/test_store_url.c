/*
 * test_store_url.c - Redis addresses: every form redis_addr_parse accepts
 * (one server, unix sockets, Sentinel, Cluster), every form it refuses with
 * a message saying what is wrong, and the password: masked in every message
 * whatever form the URL carries it in, and taken from the URL, then
 * $BGTASK_REDIS_PASSWORD, then the config.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "util.h"

#define SECRET "s3cr3t-pw"

static void test_server_forms(void **state)
{
    (void)state;
    redis_addr a;
    char err[512];
    assert_int_equal(redis_addr_parse("redis://127.0.0.1:6380/2", &a, err, sizeof err), 0);
    assert_int_equal(a.kind, REDIS_SERVER);
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 6380);
    assert_int_equal(a.db, 2);
    assert_null(a.password);
    assert_null(a.username);
    redis_addr_free(&a);

    assert_int_equal(redis_addr_parse("redis://localhost", &a, err, sizeof err), 0);
    assert_string_equal(a.host, "localhost");
    assert_int_equal(a.port, 6379);
    assert_int_equal(a.db, 0);
    redis_addr_free(&a);

    assert_int_equal(redis_addr_parse("redis://:" SECRET "@h:1/3", &a, err, sizeof err), 0);
    assert_string_equal(a.password, SECRET);
    assert_null(a.username);
    assert_string_equal(a.host, "h");
    redis_addr_free(&a);

    /* A password may hold ':', '@' and '/': the host starts after the last '@'. */
    assert_int_equal(redis_addr_parse("redis://app:p@ss:w/rd@h/1", &a, err, sizeof err), 0);
    assert_string_equal(a.username, "app");
    assert_string_equal(a.password, "p@ss:w/rd");
    assert_string_equal(a.host, "h");
    assert_int_equal(a.db, 1);
    redis_addr_free(&a);

    assert_int_equal(redis_addr_parse("redis://[::1]:7000/0", &a, err, sizeof err), 0);
    assert_string_equal(a.host, "::1");
    assert_int_equal(a.port, 7000);
    redis_addr_free(&a);

    assert_int_equal(redis_addr_parse("unix:///run/redis.sock?db=4", &a, err, sizeof err), 0);
    assert_string_equal(a.path, "/run/redis.sock");
    assert_int_equal(a.db, 4);
    assert_null(a.host);
    redis_addr_free(&a);

    assert_int_equal(redis_addr_parse("/tmp/r.sock", &a, err, sizeof err), 0);
    assert_string_equal(a.path, "/tmp/r.sock");
    redis_addr_free(&a);
}

static void test_sentinel_and_cluster_forms(void **state)
{
    (void)state;
    redis_addr a;
    char err[512];
    assert_int_equal(redis_addr_parse("redis+sentinel://:" SECRET "@10.0.0.1:26380,10.0.0.2,"
                                      "[::1]:26381/mymaster/3",
                                      &a, err, sizeof err),
                     0);
    assert_int_equal(a.kind, REDIS_SENTINEL);
    assert_int_equal(a.nseeds, 3);
    assert_string_equal(a.seeds[0].host, "10.0.0.1");
    assert_int_equal(a.seeds[0].port, 26380);
    assert_string_equal(a.seeds[1].host, "10.0.0.2");
    assert_int_equal(a.seeds[1].port, 26379); /* the sentinel port by default */
    assert_string_equal(a.seeds[2].host, "::1");
    assert_int_equal(a.seeds[2].port, 26381);
    assert_string_equal(a.master, "mymaster");
    assert_int_equal(a.db, 3);
    assert_string_equal(a.password, SECRET);
    assert_null(a.host);

    redis_addr b;
    redis_addr_copy(&b, &a);
    redis_addr_free(&a);
    assert_int_equal(b.nseeds, 3);
    assert_string_equal(b.seeds[2].host, "::1");
    assert_string_equal(b.master, "mymaster");
    assert_string_equal(b.password, SECRET);
    char buf[700];
    redis_addr_describe(&b, buf, sizeof buf);
    assert_string_equal(buf, "master 'mymaster' db 3, through the sentinels at 10.0.0.1:26380,"
                             "10.0.0.2:26379,[::1]:26381");
    redis_addr_free(&b);

    assert_int_equal(redis_addr_parse("redis+sentinel://h/m", &a, err, sizeof err), 0);
    assert_int_equal(a.db, 0);
    assert_string_equal(a.master, "m");
    redis_addr_free(&a);

    assert_int_equal(redis_addr_parse("redis+cluster://u:" SECRET "@h1:7000,h2:7001,h3", &a, err,
                                      sizeof err),
                     0);
    assert_int_equal(a.kind, REDIS_CLUSTER);
    assert_int_equal(a.nseeds, 3);
    assert_int_equal(a.seeds[2].port, 6379);
    assert_string_equal(a.username, "u");
    assert_string_equal(a.password, SECRET);
    redis_addr_describe(&a, buf, sizeof buf);
    assert_null(strstr(buf, SECRET));
    redis_addr_free(&a);
    assert_int_equal(redis_addr_parse("redis+cluster://h1:7000/0", &a, err, sizeof err), 0);
    redis_addr_free(&a);
}

/* Each bad URL is refused with a message holding `want`; none shows the password. */
static void test_refused(void **state)
{
    (void)state;
    static const struct {
        const char *url, *want;
    } cases[] = {
        {"", "empty redis address"},
        {"redis:/:" SECRET "@h", "expected redis://"},
        {":" SECRET "@h", "expected redis://"},
        {SECRET "@h", "expected redis://"},
        {"app:" SECRET "@h:1", "expected redis://"},
        {"http://:" SECRET "@h", "expected redis://"},
        {"redis://:" SECRET "@h:99999", "port must be 1..65535, got '99999'"},
        {"redis://:" SECRET "@h:x/0", "port must be 1..65535, got 'x'"},
        {"redis://:" SECRET "@h/x", "database must be a number"},
        {"redis://" SECRET "@h", "expected ':password@' or 'user:password@'"},
        {"redis://:@h", "empty password"},
        {"redis://:" SECRET "@", "missing host"},
        {"redis://:" SECRET "@:6379", "missing host"},
        {"redis://:" SECRET "@[::1:7000", "unterminated [address]"},
        {"redis://:" SECRET "@h1,h2", "redis:// takes one host"},
        {"unix://relative.sock", "must be absolute"},
        {"unix:///r.sock?x=1", "expected ?db=N"},
        {"redis+sentinel://:" SECRET "@h1:1,h2:2", "expected /MASTER"},
        {"redis+sentinel://:" SECRET "@h1:1,h2:2/", "expected /MASTER"},
        {"redis+sentinel://:" SECRET "@h1:1,,h2:2/m", "missing host"},
        {"redis+sentinel://:" SECRET "@h1:1,h2:0/m", "port must be 1..65535, got '0'"},
        {"redis+sentinel://:" SECRET "@h1/m/x", "database must be a number"},
        {"redis+sentinel://u:" SECRET "@h1 h2/m", "is not a host name"},
        {"redis+cluster://:" SECRET "@h1:1,h2:2/3", "database 0 only"},
        {"redis+cluster://:" SECRET "@h1:1,:2", "missing host"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        redis_addr a;
        char err[512] = "";
        int rc = redis_addr_parse(cases[i].url, &a, err, sizeof err);
        if (rc != -EINVAL)
            fail_msg("'%s' was accepted", cases[i].url);
        if (!strstr(err, cases[i].want))
            fail_msg("'%s': message '%s' does not say '%s'", cases[i].url, err, cases[i].want);
        if (strstr(err, SECRET))
            fail_msg("'%s': message '%s' shows the password", cases[i].url, err);
        assert_null(a.host);
        assert_null(a.password);
        assert_null(a.seeds);
    }
}

static void test_mask(void **state)
{
    (void)state;
    static const struct {
        const char *url, *masked;
    } cases[] = {
        {"redis://:" SECRET "@h:1/0", "redis://***@h:1/0"},
        {"redis://user:" SECRET "@h", "redis://***@h"},
        {"redis:/:" SECRET "@h", "redis:/***@h"},
        {"redis::" SECRET "@h", "redis:***@h"},
        {":" SECRET "@h", "***@h"},
        {SECRET "@h", "***@h"},
        {"app:" SECRET "@h", "app:***@h"},
        {"redis+sentinel://:" SECRET "@a:1,b:2/m/0", "redis+sentinel://***@a:1,b:2/m/0"},
        {"redis+cluster://u:" SECRET "@a:1,b:2", "redis+cluster://***@a:1,b:2"},
        {"redis://:p@ss@h", "redis://***@h"},
        {"redis://h:1/0", "redis://h:1/0"},
        {"/run/redis.sock", "/run/redis.sock"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *m = redis_url_mask(cases[i].url);
        if (strcmp(m, cases[i].masked) != 0)
            fail_msg("mask('%s') = '%s', want '%s'", cases[i].url, m, cases[i].masked);
        free(m);
    }
}

/* The password: the URL's, else $BGTASK_REDIS_PASSWORD, else the config's. */
static void test_password_sources(void **state)
{
    (void)state;
    redis_addr a;
    char err[512];
    unsetenv("BGTASK_REDIS");
    unsetenv("BGTASK_REDIS_PASSWORD");
    assert_int_equal(redis_addr_resolve("redis://h", NULL, NULL, "from-config", &a, err,
                                        sizeof err),
                     0);
    assert_string_equal(a.password, "from-config");
    redis_addr_free(&a);

    setenv("BGTASK_REDIS_PASSWORD", "from-env", 1);
    assert_int_equal(redis_addr_resolve("redis://h", NULL, NULL, "from-config", &a, err,
                                        sizeof err),
                     0);
    assert_string_equal(a.password, "from-env");
    redis_addr_free(&a);

    assert_int_equal(redis_addr_resolve("redis://:from-url@h", NULL, NULL, "from-config", &a, err,
                                        sizeof err),
                     0);
    assert_string_equal(a.password, "from-url");
    redis_addr_free(&a);
    unsetenv("BGTASK_REDIS_PASSWORD");

    assert_int_equal(redis_addr_resolve(NULL, NULL, NULL, NULL, &a, err, sizeof err), 0);
    assert_null(a.password);
    assert_string_equal(a.host, "127.0.0.1");
    redis_addr_free(&a);

    /* A bad address says where it came from, never with its password. */
    assert_int_equal(redis_addr_resolve("redis:/:" SECRET "@h", NULL, NULL, NULL, &a, err,
                                        sizeof err),
                     -EINVAL);
    assert_true(strncmp(err, "--redis: redis:/***@h: ", 23) == 0);
    assert_int_equal(redis_addr_resolve(NULL, ":" SECRET "@h", "x.conf", NULL, &a, err,
                                        sizeof err),
                     -EINVAL);
    assert_true(strncmp(err, "x.conf: redis.url: ***@h: ", 26) == 0);
    setenv("BGTASK_REDIS", "redis+sentinel://:" SECRET "@h", 1);
    assert_int_equal(redis_addr_resolve(NULL, NULL, NULL, NULL, &a, err, sizeof err), -EINVAL);
    assert_true(strncmp(err, "$BGTASK_REDIS: redis+sentinel://***@h: ", 39) == 0);
    assert_null(strstr(err, SECRET));
    unsetenv("BGTASK_REDIS");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_forms),
        cmocka_unit_test(test_sentinel_and_cluster_forms),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_mask),
        cmocka_unit_test(test_password_sources),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

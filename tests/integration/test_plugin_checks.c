/*
 * test_plugin_checks.c - a plugin as an outsider brings it: bgtaskd
 * --check-plugin on files built outside the repository (what it prints, its
 * exit codes, the loader's refusals), and a plugin whose init does not
 * return (a host in it still answers SIGTERM, and plugins.init_timeout ends
 * it, with messages that name the plugin).
 *
 * Plugin files are copied from $BUILD/tests/fixtures and
 * $BUILD/tests/plugins into scratch folders of their own (mode 0755).
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../harness/itest.h"

/* ---- helpers ---- */

static const char *build_dir(void)
{
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

/* Copy file from to to with mode (which the umask does not touch). */
static void copy_mode(const char *from, const char *to, mode_t mode)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        fail_msg("%s: %s (run make first)", from, strerror(errno));
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(out >= 0);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        assert_int_equal(write(out, buf, (size_t)n), n);
    assert_int_equal(fchmod(out, mode), 0);
    close(in);
    close(out);
}

/* A fresh folder (0755, absolute path) holding a copy of fixture `name` as file; returns the
 * copy's path (malloc'd); *dir gets the folder (malloc'd). */
static char *outside_copy(const char *kind, const char *name, const char *file, char **dir)
{
    char *tmp = th_tmpdir("outside");
    *dir = realpath(tmp, NULL);
    free(tmp);
    assert_non_null(*dir);
    assert_int_equal(chmod(*dir, 0755), 0);
    char *from = NULL, *to = NULL;
    assert_true(asprintf(&from, "%s/%s/%s.so", build_dir(), kind, name) > 0);
    assert_true(asprintf(&to, "%s/%s", *dir, file) > 0);
    copy_mode(from, to, 0755);
    free(from);
    return to;
}

/* bgtaskd [-c conf] --check-plugin file: its exit code, stdout and stderr (malloc'd). */
static int check(const char *conf, const char *file, char **out, char **err)
{
    char *bin = it_bin("bgtaskd");
    char *argv[8];
    int n = 0;
    argv[n++] = bin;
    if (conf) {
        argv[n++] = "-c";
        argv[n++] = (char *)conf;
    }
    argv[n++] = "--check-plugin";
    argv[n++] = (char *)file;
    argv[n] = NULL;
    int rc = th_run(60, argv, out, err);
    free(bin);
    return rc;
}

static void expect_in(const char *text, const char *needle)
{
    if (!text || !strstr(text, needle))
        fail_msg("want \"%s\" in:\n%s", needle, text ? text : "(nothing)");
}

/* ---- bgtaskd --check-plugin ---- */

/* A plugin built elsewhere, in a folder of its own: it passes and its handlers are listed;
 * the same file in a folder others can write, or owned by another user, is refused with
 * exit 1 and the reason. */
static void test_check_plugin(void **state)
{
    char *dir, *out = NULL, *err = NULL;
    char *file = outside_copy("tests/fixtures", "good", "good.so", &dir);
    assert_int_equal(check(NULL, file, &out, &err), 0);
    char want[1024];
    snprintf(want, sizeof want, "%s: plugin good 1.0, built for plugin ABI", file);
    expect_in(out, want);
    snprintf(want, sizeof want, "%s: handler fx.good (single)\n", file);
    expect_in(out, want);
    snprintf(want, sizeof want, "%s: handler fx.par (parallel)\n", file);
    expect_in(out, want);
    snprintf(want, sizeof want, "%s: 1 hook(s)\n%s: ok\n", file, file);
    expect_in(out, want);
    free(out);
    free(err);

    assert_int_equal(chmod(dir, 0777), 0);
    assert_int_equal(check(NULL, file, &out, &err), 1);
    snprintf(want, sizeof want,
             "bgtaskd: %s: refusing to load: %s is writable by group or others (mode 0777)\n",
             file, dir);
    expect_in(err, want);
    free(out);
    free(err);
    assert_int_equal(chmod(dir, 0755), 0);

    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("nobody");
        uid_t nobody = pw ? pw->pw_uid : 65534;
        assert_int_equal(chown(file, nobody, (gid_t)-1), 0);
        assert_int_equal(check(NULL, file, &out, &err), 1);
        snprintf(want, sizeof want, "bgtaskd: %s: refusing to load: %s is owned by ", file, file);
        expect_in(err, want);
        expect_in(err, "not by root or by the user this host runs as");
        free(out);
        free(err);
    }
    free(file);
    free(dir);
}

/* The loader's other refusals, each with exit 1 and its message; a usage error is 2. */
static void test_check_plugin_refusals(void **state)
{
    struct {
        const char *fixture, *want;
    } cases[] = {
        {"abi_major", "x.so: built for plugin ABI 2.0, this host speaks 1."},
        {"no_entry", ": not a bgtask plugin: no bgt_plugin_entry symbol"},
        {"init_fails", ": init failed (returned"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *dir, *out = NULL, *err = NULL;
        char *file = outside_copy("tests/fixtures", cases[i].fixture, "x.so", &dir);
        int rc = check(NULL, file, &out, &err);
        if (rc != 1)
            fail_msg("%s: exit %d, stdout:\n%s\nstderr:\n%s", cases[i].fixture, rc, out, err);
        expect_in(err, cases[i].want);
        free(out);
        free(err);
        free(file);
        free(dir);
    }
    char *out = NULL, *err = NULL;
    assert_int_equal(check(NULL, "/nonexistent/x.so", &out, &err), 1);
    expect_in(err, "bgtaskd: /nonexistent/x.so: cannot read: /nonexistent: No such file");
    free(out);
    free(err);

    char *bin = it_bin("bgtaskd");
    char *argv[] = {bin, "--check-plugin", NULL};
    assert_int_equal(th_run(30, argv, &out, &err), 2);
    free(out);
    free(err);
    free(bin);
}

/* With -c, the plugin's init gets its section of that config (the plugins.load entry that
 * names the same file). */
static void test_check_plugin_config(void **state)
{
    it_need_redis();
    char *dir, *out = NULL, *err = NULL;
    char *file = outside_copy("tests/fixtures", "good", "good.so", &dir);
    char *plugins = NULL;
    assert_true(asprintf(&plugins,
                         "{ name = \"good\"; file = \"%s\"; config = { extra_handler = "
                         "\"fx.extra\"; }; }",
                         file) > 0);
    th_host h;
    assert_int_equal(th_host_start(&h, &fx.r, &(th_host_opts){.plugins = plugins}), 0);
    th_host_kill(&h); /* only its config file is wanted */
    assert_int_equal(check(h.conf, file, &out, &err), 0);
    char want[1024];
    snprintf(want, sizeof want, "%s: handler fx.extra (single)\n", file);
    expect_in(out, want);
    free(out);
    free(err);
    free(plugins);
    free(file);
    free(dir);
    it_pass();
}

/* ---- an init that does not return ---- */

/* A host loading the hang plugin (config: libconfig text of its section, NULL for none;
 * init_timeout_s: plugins.init_timeout, 0 for the default). */
static th_host *start_hanging(const char *config, double init_timeout_s, char **file)
{
    char *dir;
    *file = outside_copy("tests/plugins", "hang", "hang.so", &dir);
    char *plugins = NULL;
    assert_true(asprintf(&plugins, "{ name = \"hang\"; file = \"%s\";%s%s }", *file,
                         config ? " config = " : "", config ? config : "") > 0);
    assert_true(fx.nhosts < IT_MAX_HOSTS);
    th_host *h = &fx.hosts[fx.nhosts];
    th_host_opts o = {.plugins = plugins, .plugins_init_timeout_s = init_timeout_s};
    assert_int_equal(th_host_start(h, &fx.r, &o), 0);
    fx.nhosts++;
    free(plugins);
    free(dir);
    if (!TH_WAIT_UNTIL(IT_READY_S, th_log_contains(h, "init sleeps now")))
        fail_msg("the host never ran the plugin's init");
    return h;
}

/* SIGTERM during an init that never returns: the host says it will stop when the init
 * returns; a second SIGTERM ends it (exit 1) with a message naming the plugin. */
static void test_init_hang_sigterm(void **state)
{
    it_need_redis();
    char *file;
    th_host *h = start_hanging(NULL, 0, &file);
    th_host_signal(h, SIGTERM);
    char want[1024];
    snprintf(want, sizeof want,
             "SIGTERM while plugin 'hang' (%s) runs its init: the host stops when it returns; "
             "another SIGTERM ends the host at once",
             file);
    assert_true(TH_WAIT_UNTIL(10, th_log_contains(h, want)));
    assert_true(it_host_alive(h));
    th_host_signal(h, SIGTERM);
    int status;
    assert_true(th_host_wait_exit(h, 10, &status));
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    snprintf(want, sizeof want,
             "plugin 'hang' (%s): its init has not returned; ending the host on the second "
             "SIGTERM",
             file);
    assert_true(th_log_contains(h, want));
    free(file);
    it_pass();
}

/* plugins.init_timeout ends a host whose plugin's init runs past it. */
static void test_init_timeout(void **state)
{
    it_need_redis();
    char *file;
    th_host *h = start_hanging(NULL, 1.0, &file);
    int status;
    assert_true(th_host_wait_exit(h, 20, &status));
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    char want[1024];
    snprintf(want, sizeof want,
             "plugin 'hang' (%s): its init has not returned after 1 s (plugins.init_timeout); "
             "ending the host",
             file);
    assert_true(th_log_contains(h, want));
    free(file);
    it_pass();
}

/* A slow init that does return: a SIGTERM during it stops the host as soon as it has, before
 * it starts serving (exit 0). */
static void test_init_slow_then_stop(void **state)
{
    it_need_redis();
    char *file;
    th_host *h = start_hanging("{ seconds = 2; }", 0, &file);
    th_host_signal(h, SIGTERM);
    int status;
    assert_true(th_host_wait_exit(h, 20, &status));
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(th_log_contains(h, "stopped before starting: a stop signal came while plugins "
                                   "loaded"));
    assert_false(th_log_contains(h, "serving"));
    free(file);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_plugin),
        cmocka_unit_test(test_check_plugin_refusals),
        IT_TEST(test_check_plugin_config),
        IT_TEST(test_init_hang_sigterm),
        IT_TEST(test_init_timeout),
        IT_TEST(test_init_slow_then_stop),
    };
    return cmocka_run_group_tests(tests, it_group_setup, it_group_teardown);
}

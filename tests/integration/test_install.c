/*
 * test_install.c - the build and install as a newcomer meets them: make
 * install into a DESTDIR and into a real PREFIX (the SDK's pkg-config file,
 * the config and the systemd unit name the installed paths), a plugin built
 * out of the tree against the installed SDK with the README's command line,
 * make uninstall leaving third-party plugins alone, make CFLAGS=-Werror
 * keeping the flags the build needs, a missing pkg-config module named with
 * its Debian package, and make test installing what is missing first.
 *
 * Each make runs in the repository (the tests' working folder) with this
 * build's $BUILD, without the make flags of the make that runs the tests.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../harness/harness.h"

static const char *build_dir(void)
{
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

/*
 * Run a command line (NULL-terminated) through env(1) with the make variables of the
 * calling make unset and the assignments in env_set ("NAME=value", NULL-terminated; may be
 * NULL) added. Returns the exit code; *out and *err (may be NULL) get what it printed.
 */
static int run_env(const char *const *env_set, char **out, char **err, ...)
{
    const char *argv[64];
    int n = 0;
    argv[n++] = "/usr/bin/env";
    const char *unset[] = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "CFLAGS",
                           "LDFLAGS"};
    for (size_t i = 0; i < sizeof unset / sizeof unset[0]; i++) {
        argv[n++] = "-u";
        argv[n++] = unset[i];
    }
    for (; env_set && *env_set; env_set++)
        argv[n++] = *env_set;
    va_list ap;
    va_start(ap, err);
    for (const char *a; (a = va_arg(ap, const char *)) && n < 62;)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    char *o = NULL, *e = NULL;
    int rc = th_run(300, (char *const *)argv, &o, &e);
    if (out)
        *out = o;
    else
        free(o);
    if (err)
        *err = e;
    else
        free(e);
    return rc;
}

/* The whole of a file (malloc'd), or NULL. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(f);
    fclose(m);
    return buf;
}

static void file_has(const char *path, const char *needle)
{
    char *text = slurp(path);
    if (!text || !strstr(text, needle))
        fail_msg("%s: want \"%s\" in:\n%s", path, needle, text ? text : "(no such file)");
    free(text);
}

/* An absolute scratch folder, mode 0755 (malloc'd). */
static char *scratch(const char *tag)
{
    char *t = th_tmpdir(tag);
    char *abs = realpath(t, NULL);
    free(t);
    assert_non_null(abs);
    assert_int_equal(chmod(abs, 0755), 0);
    return abs;
}

/* The README's complete plugin, written to dir/hello.c. */
static void write_hello(const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/hello.c", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("#include <unistd.h>\n"
          "#include <bgtask.h>\n"
          "static bgt_status greet(bgt_task *t, const cJSON *args, void *udata)\n"
          "{\n"
          "    const cJSON *name = cJSON_GetObjectItemCaseSensitive(args, \"name\");\n"
          "    if (!cJSON_IsString(name)) {\n"
          "        bgt_set_error(t, \"args.name must be a string\");\n"
          "        return BGT_FAILED;\n"
          "    }\n"
          "    cJSON *result = cJSON_CreateObject();\n"
          "    cJSON_AddStringToObject(result, \"greeting\", \"hello\");\n"
          "    bgt_set_result(t, result);\n"
          "    cJSON_Delete(result);\n"
          "    return BGT_OK;\n"
          "}\n"
          "static int hello_init(bgt_plugin *p, const cJSON *config)\n"
          "{\n"
          "    return bgt_register_handler(p, (bgt_handler_def){\n"
          "        .name = \"hello.greet\", .kind = BGT_SINGLE, .run = greet, .max_attempts = 5});\n"
          "}\n"
          "BGT_PLUGIN(\"hello\", \"1.0\", hello_init, NULL);\n",
          f);
    fclose(f);
}

/*
 * make install PREFIX=/opt/bgt DESTDIR=D after make: the SDK's .pc, the config and the unit
 * say /opt/bgt, never D; a plugin built out of the tree with the README's line against
 * D/opt/bgt (pkg-config with that sysroot) passes bgtaskd --check-plugin.
 */
static void test_install_destdir(void **state)
{
    char *dest = scratch("destdir"), *dd = NULL, *bargs = NULL;
    assert_true(asprintf(&dd, "DESTDIR=%s", dest) > 0);
    assert_true(asprintf(&bargs, "BUILD=%s", build_dir()) > 0);
    char *err = NULL;
    int rc = run_env(NULL, NULL, &err, "make", "-s", bargs, "install", "PREFIX=/opt/bgt", dd,
                     NULL);
    if (rc != 0)
        fail_msg("make install: exit %d: %s", rc, err);
    free(err);
    char path[1024], want[1024];
    snprintf(path, sizeof path, "%s/opt/bgt/lib/pkgconfig/bgtask-sdk.pc", dest);
    file_has(path, "prefix=/opt/bgt\n");
    file_has(path, "plugindir=/opt/bgt/lib/bgtask/plugins\n");
    snprintf(path, sizeof path, "%s/opt/bgt/etc/bgtask/bgtaskd.conf", dest);
    file_has(path, "    dir = \"/opt/bgt/lib/bgtask/plugins\";\n");
    file_has(path, "    ui_dir = \"/opt/bgt/share/bgtask/ui\";\n");
    snprintf(path, sizeof path, "%s/opt/bgt/lib/systemd/system/bgtaskd.service", dest);
    file_has(path, "ExecStart=/opt/bgt/bin/bgtaskd -c /opt/bgt/etc/bgtask/bgtaskd.conf\n");
    char *unit = slurp(path);
    assert_null(strstr(unit, dest));
    assert_null(strstr(unit, "@"  "PREFIX@")); /* every placeholder filled */
    assert_null(strstr(unit, "@BINDIR@"));
    free(unit);

    /* Out of the tree: the README's command line, with pkg-config looking into DESTDIR. */
    char *src = scratch("hello"), *pcpath = NULL, *sysroot = NULL;
    write_hello(src);
    assert_true(asprintf(&pcpath, "PKG_CONFIG_PATH=%s/opt/bgt/lib/pkgconfig", dest) > 0);
    assert_true(asprintf(&sysroot, "PKG_CONFIG_SYSROOT_DIR=%s", dest) > 0);
    const char *env[] = {pcpath, sysroot, NULL};
    char *out = NULL;
    assert_int_equal(run_env(env, &out, NULL, "pkg-config", "--cflags", "bgtask-sdk", NULL), 0);
    snprintf(want, sizeof want, "-I%s/opt/bgt/include", dest);
    if (!strstr(out, want))
        fail_msg("pkg-config --cflags bgtask-sdk: want %s in %s", want, out);
    free(out);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && cc -shared -fPIC $(pkg-config --cflags bgtask-sdk) hello.c -o hello.so",
             src);
    rc = run_env(env, NULL, &err, "/bin/sh", "-c", cmd, NULL);
    if (rc != 0)
        fail_msg("%s: exit %d: %s", cmd, rc, err);
    free(err);
    char *bgtaskd = NULL, *so = NULL;
    assert_true(asprintf(&bgtaskd, "%s/bin/bgtaskd", build_dir()) > 0);
    assert_true(asprintf(&so, "%s/hello.so", src) > 0);
    rc = run_env(NULL, &out, &err, bgtaskd, "--check-plugin", so, NULL);
    if (rc != 0)
        fail_msg("--check-plugin %s: exit %d: %s%s", so, rc, out, err);
    snprintf(want, sizeof want, "%s: handler hello.greet (single)\n%s: ok\n", so, so);
    if (!strstr(out, want))
        fail_msg("want \"%s\" in %s", want, out);
    free(out);
    free(err);
    free(bgtaskd);
    free(so);
    free(pcpath);
    free(sysroot);
    free(src);
    free(dd);
    free(bargs);
    free(dest);
}

/*
 * make install PREFIX=P (no DESTDIR): the installed bgtaskd takes the installed config as it
 * is (its plugins from P's plugins folder pass the loader's checks). A third-party plugin
 * dropped into that folder, and the config, survive make uninstall; what install put there
 * does not.
 */
static void test_install_prefix(void **state)
{
    char *top = scratch("prefix"), *prefix = NULL, *parg = NULL, *bargs = NULL;
    assert_true(asprintf(&prefix, "%s/p", top) > 0);
    assert_true(asprintf(&parg, "PREFIX=%s", prefix) > 0);
    assert_true(asprintf(&bargs, "BUILD=%s", build_dir()) > 0);
    char *out = NULL, *err = NULL;
    int rc = run_env(NULL, NULL, &err, "make", "-s", bargs, "install", parg, NULL);
    if (rc != 0)
        fail_msg("make install: exit %d: %s", rc, err);
    free(err);
    char bin[1024], conf[1024], third[1024], shipped[1024];
    snprintf(bin, sizeof bin, "%s/bin/bgtaskd", prefix);
    snprintf(conf, sizeof conf, "%s/etc/bgtask/bgtaskd.conf", prefix);
    rc = run_env(NULL, &out, &err, bin, "--check-config", "-c", conf, NULL);
    if (rc != 0)
        fail_msg("%s --check-config -c %s: exit %d: %s", bin, conf, rc, err);
    char want[1200];
    snprintf(want, sizeof want, "%s: ok (3 plugin(s)", conf);
    if (!strstr(out, want))
        fail_msg("want \"%s\" in %s", want, out);
    free(out);
    free(err);

    /* Installing again keeps the config, and writes the new one next to it. */
    rc = run_env(NULL, &out, NULL, "make", "-s", bargs, "install", parg, NULL);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "bgtaskd.conf.new"));
    free(out);

    snprintf(third, sizeof third, "%s/lib/bgtask/plugins/third.so", prefix);
    snprintf(shipped, sizeof shipped, "%s/lib/bgtask/plugins/demo.so", prefix);
    FILE *f = fopen(third, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(run_env(NULL, NULL, NULL, "make", "-s", bargs, "uninstall", parg, NULL), 0);
    assert_int_equal(access(third, F_OK), 0);
    assert_int_equal(access(conf, F_OK), 0);
    assert_int_not_equal(access(shipped, F_OK), 0);
    assert_int_not_equal(access(bin, F_OK), 0);
    free(prefix);
    free(parg);
    free(bargs);
    free(top);
}

/*
 * make CFLAGS=-Werror keeps what the build needs; a pkg-config module that is missing stops
 * the build with the Debian package to install; make test installs missing packages first.
 * All dry runs (make -n) into a scratch BUILD.
 */
static void test_build_flags(void **state)
{
    char *b = scratch("build"), *bargs = NULL, *obj = NULL;
    assert_true(asprintf(&bargs, "BUILD=%s", b) > 0);
    assert_true(asprintf(&obj, "%s/obj/host/util.o", b) > 0);
    char *out = NULL, *err = NULL;
    int rc = run_env(NULL, &out, &err, "make", "-n", bargs, "CFLAGS=-Werror", obj, NULL);
    if (rc != 0)
        fail_msg("make -n CFLAGS=-Werror: exit %d: %s", rc, err);
    const char *need[] = {" -std=gnu11 ", " -D_GNU_SOURCE ", " -Isdk ", " -Werror"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (!strstr(out, need[i]))
            fail_msg("make CFLAGS=-Werror: want \"%s\" in:\n%s", need[i], out);
    free(out);
    free(err);

    char *empty = scratch("no-pkgconfig"), *libdir = NULL;
    assert_true(asprintf(&libdir, "PKG_CONFIG_LIBDIR=%s", empty) > 0);
    const char *env[] = {libdir, "PKG_CONFIG_PATH=", NULL};
    rc = run_env(env, &out, &err, "make", "-n", bargs, "all", NULL);
    assert_int_not_equal(rc, 0);
    if (!strstr(err, "pkg-config module hiredis not found: install the Debian package "
                     "libhiredis-dev"))
        fail_msg("make without hiredis: exit %d, stderr:\n%s", rc, err);
    free(out);
    free(err);

    rc = run_env(NULL, &out, &err, "make", "-n", bargs, "test", NULL);
    if (rc != 0 || strncmp(out, "tools/install-deps\n", 19) != 0)
        fail_msg("make -n test: exit %d, want tools/install-deps first in:\n%.400s", rc, out);
    free(out);
    free(err);
    free(libdir);
    free(empty);
    free(obj);
    free(bargs);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_install_destdir),
        cmocka_unit_test(test_install_prefix),
        cmocka_unit_test(test_build_flags),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    th_cleanup();
    return rc;
}

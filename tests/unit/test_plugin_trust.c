/*
 * test_plugin_trust.c - who may have written the code the loader runs. A
 * plugin file, every folder from the configured plugins folder down to it,
 * a link on the way and the file a link leads to must be owned by root or by
 * the host's own user and not be writable by group or others; the refusal
 * names the path that failed and why.
 *
 * Each test builds a tree in its own scratch folder under $BUILD/tmp:
 *     <scratch>/plugins/   the plugins folder the loader is given
 *     <scratch>/lib/       a folder outside it, that links lead to
 * and files and folders owned by another user are made with chown, so those
 * tests need root (they skip otherwise; CI runs as root).
 */
#include <errno.h>
#include <pwd.h>
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

#include "../harness/fake_host.h"
#include "plugin.h"
#include "registry.h"
#include "util.h"

typedef struct fx {
    registry reg;
    char root[512];
    char *plugins, *lib;
    char err[1024];
} fx;

static int setup(void **state)
{
    fx *f = xcalloc(1, sizeof *f);
    registry_init(&f->reg);
    snprintf(f->root, sizeof f->root, "%s/tmp", fake_build_dir());
    mkdir(f->root, 0755);
    snprintf(f->root, sizeof f->root, "%s/tmp/test_plugin_trust-%d-XXXXXX", fake_build_dir(),
             (int)getpid());
    if (!mkdtemp(f->root) || chmod(f->root, 0755) < 0) {
        perror(f->root);
        free(f);
        return -1;
    }
    /* Absolute and canonical, as the messages about resolved paths spell them. */
    char *abs = realpath(f->root, NULL);
    if (!abs)
        return -1;
    strlcpy_(f->root, abs, sizeof f->root);
    free(abs);
    f->plugins = xasprintf("%s/plugins", f->root);
    f->lib = xasprintf("%s/lib", f->root);
    if (mkdir(f->plugins, 0755) < 0 || mkdir(f->lib, 0755) < 0 || chmod(f->plugins, 0755) < 0 ||
        chmod(f->lib, 0755) < 0) {
        perror(f->plugins);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    registry_destroy(&f->reg);
    fake_remove_tree(f->root);
    free(f->plugins);
    free(f->lib);
    free(f);
    return 0;
}

/* The good fixture, copied to dir/name with mode 0755; returns its path (heap). */
static char *put_plugin(const char *dir, const char *name)
{
    char *from = xasprintf("%s/tests/fixtures/good.so", fake_build_dir());
    char *to = xasprintf("%s/%s", dir, name);
    fake_copy_file(from, to, 0755);
    free(from);
    return to;
}

/* A symlink dir/name -> target; returns its path (heap). */
static char *put_link(const char *dir, const char *name, const char *target)
{
    char *path = xasprintf("%s/%s", dir, name);
    assert_int_equal(symlink(target, path), 0);
    return path;
}

/* Load path with plugins folder dir; a plugin that loads is unloaded again. */
static int load(fx *f, const char *path, const char *dir)
{
    struct bgt_plugin *p = NULL;
    f->err[0] = '\0';
    int rc = plugin_load(path, dir, NULL, &f->reg, &fake_api, &p, f->err, sizeof f->err);
    if (rc == 0)
        plugin_unload(p);
    else
        assert_null(p);
    return rc;
}

/* Load must be refused, and the message must start with the plugin's path and hold every
 * needle (NULL-terminated). */
static void expect_refused(fx *f, const char *path, const char *dir, ...)
{
    assert_int_equal(load(f, path, dir), -EPERM);
    char want[1024];
    snprintf(want, sizeof want, "%s: refusing to load: ", path);
    if (strncmp(f->err, want, strlen(want)) != 0)
        fail_msg("'%s' does not start with '%s'", f->err, want);
    va_list ap;
    va_start(ap, dir);
    for (const char *needle; (needle = va_arg(ap, const char *));)
        if (!strstr(f->err, needle))
            fail_msg("'%s' does not contain '%s'", f->err, needle);
    va_end(ap);
    assert_int_equal(registry_handlers(&f->reg, NULL, 0), 0);
}

/* Another user's uid and how messages name it; skips the test unless it can chown. */
static uid_t other_user(char *name, size_t n)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_plugin_trust: not root, cannot give files to another user\n");
        skip();
    }
    struct passwd *pw = getpwnam("nobody");
    uid_t uid = pw ? pw->pw_uid : 65534;
    if (pw)
        snprintf(name, n, "is owned by %s (uid %u), not by root or by the user this host runs as",
                 pw->pw_name, (unsigned)uid);
    else
        snprintf(name, n, "is owned by uid %u, not by root or by the user this host runs as",
                 (unsigned)uid);
    return uid;
}

/* The good case: a plugin in the plugins folder, and a link there to a file in a sound
 * folder outside it. */
static void test_good(void **state)
{
    fx *f = *state;
    char *path = put_plugin(f->plugins, "good.so");
    char *target = put_plugin(f->lib, "real.so");
    char *link = put_link(f->plugins, "link.so", "../lib/real.so");
    assert_int_equal(load(f, path, f->plugins), 0);
    assert_int_equal(load(f, link, f->plugins), 0);
    /* A sub-folder of the plugins folder, as autoload never sees it but a config can name. */
    char *sub = xasprintf("%s/sub", f->plugins);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(chmod(sub, 0755), 0);
    char *deep = put_plugin(sub, "deep.so");
    assert_int_equal(load(f, deep, f->plugins), 0);
    free(deep);
    free(sub);
    free(link);
    free(target);
    free(path);
}

/* A link in a world-writable plugins folder: whoever can write the folder chose the link,
 * however sound its target is. A sticky bit does not help: the link is the attacker's own. */
static void test_link_in_open_folder(void **state)
{
    fx *f = *state;
    char *target = put_plugin(f->lib, "real.so");
    char *link = put_link(f->plugins, "link.so", "../lib/real.so");
    assert_int_equal(chmod(f->plugins, 0777), 0);
    char what[700];
    snprintf(what, sizeof what, "%s is writable by group or others (mode 0777)", f->plugins);
    expect_refused(f, link, f->plugins, what, NULL);
    assert_int_equal(chmod(f->plugins, 01777), 0);
    snprintf(what, sizeof what, "%s is writable by group or others (mode 1777)", f->plugins);
    expect_refused(f, link, f->plugins, what, NULL);
    free(link);
    free(target);
}

/* A group-writable plugins folder is refused even for a plugin in a sound sub-folder of it:
 * the sub-folder itself could be swapped. */
static void test_group_writable_folder(void **state)
{
    fx *f = *state;
    char *sub = xasprintf("%s/sub", f->plugins);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(chmod(sub, 0755), 0);
    char *path = put_plugin(sub, "deep.so");
    assert_int_equal(chmod(f->plugins, 0775), 0);
    char what[700];
    snprintf(what, sizeof what, "%s is writable by group or others (mode 0775)", f->plugins);
    expect_refused(f, path, f->plugins, what, NULL);
    /* And the sub-folder on the way, once the plugins folder is sound. */
    assert_int_equal(chmod(f->plugins, 0755), 0);
    assert_int_equal(chmod(sub, 0770), 0);
    snprintf(what, sizeof what, "%s is writable by group or others (mode 0770)", sub);
    expect_refused(f, path, f->plugins, what, NULL);
    free(path);
    free(sub);
}

/* The file itself, writable by others; writable by its owner is fine. */
static void test_writable_file(void **state)
{
    fx *f = *state;
    char *path = put_plugin(f->plugins, "good.so");
    char what[700];
    assert_int_equal(chmod(path, 0666), 0);
    snprintf(what, sizeof what, "%s is writable by group or others (mode 0666)", path);
    expect_refused(f, path, f->plugins, what, NULL);
    assert_int_equal(chmod(path, 0775), 0);
    snprintf(what, sizeof what, "%s is writable by group or others (mode 0775)", path);
    expect_refused(f, path, f->plugins, what, NULL);
    assert_int_equal(chmod(path, 0700), 0);
    assert_int_equal(load(f, path, f->plugins), 0);
    free(path);
}

/* A link whose target is another user's file, in a folder that is otherwise sound. */
static void test_target_owned_by_other(void **state)
{
    fx *f = *state;
    char owned[200];
    uid_t other = other_user(owned, sizeof owned);
    char *target = put_plugin(f->lib, "real.so");
    char *link = put_link(f->plugins, "link.so", "../lib/real.so");
    assert_int_equal(chown(target, other, (gid_t)-1), 0);
    char what[900];
    snprintf(what, sizeof what, "%s %s", target, owned);
    expect_refused(f, link, f->plugins, what, NULL);
    /* The same file named directly, from a plugins folder of its own. */
    expect_refused(f, target, f->lib, what, NULL);
    free(link);
    free(target);
}

/* Another user's folder: on the way to the file, or the folder a link leads to. */
static void test_folder_owned_by_other(void **state)
{
    fx *f = *state;
    char owned[200];
    uid_t other = other_user(owned, sizeof owned);
    char *path = put_plugin(f->plugins, "good.so");
    assert_int_equal(chown(f->plugins, other, (gid_t)-1), 0);
    char what[900];
    snprintf(what, sizeof what, "%s %s", f->plugins, owned);
    expect_refused(f, path, f->plugins, what, NULL);
    assert_int_equal(chown(f->plugins, 0, (gid_t)-1), 0);

    char *target = put_plugin(f->lib, "real.so");
    char *link = put_link(f->plugins, "link.so", "../lib/real.so");
    assert_int_equal(chown(f->lib, other, (gid_t)-1), 0);
    snprintf(what, sizeof what, "%s %s", f->lib, owned);
    expect_refused(f, link, f->plugins, what, NULL);
    free(link);
    free(target);
    free(path);
}

/* A link owned by another user, in a sound folder, to a sound file. */
static void test_link_owned_by_other(void **state)
{
    fx *f = *state;
    char owned[200];
    uid_t other = other_user(owned, sizeof owned);
    char *target = put_plugin(f->lib, "real.so");
    char *link = put_link(f->plugins, "link.so", "../lib/real.so");
    assert_int_equal(lchown(link, other, (gid_t)-1), 0);
    char what[900];
    snprintf(what, sizeof what, "%s (a link) %s", link, owned);
    expect_refused(f, link, f->plugins, what, NULL);
    free(link);
    free(target);
}

/* A file named outside the plugins folder (a plugins.load entry's `file`) is judged from its
 * own folder. */
static void test_outside_plugins_folder(void **state)
{
    fx *f = *state;
    char *path = put_plugin(f->lib, "real.so");
    assert_int_equal(load(f, path, f->plugins), 0);
    assert_int_equal(chmod(f->lib, 0777), 0);
    char what[700];
    snprintf(what, sizeof what, "%s is writable by group or others (mode 0777)", f->lib);
    expect_refused(f, path, f->plugins, what, NULL);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_good, setup, teardown),
        cmocka_unit_test_setup_teardown(test_link_in_open_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_writable_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writable_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_target_owned_by_other, setup, teardown),
        cmocka_unit_test_setup_teardown(test_folder_owned_by_other, setup, teardown),
        cmocka_unit_test_setup_teardown(test_link_owned_by_other, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outside_plugins_folder, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

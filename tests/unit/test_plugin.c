/*
 * test_plugin.c - the plugin loader against the fixture plugins that make
 * builds into $BUILD/tests/fixtures (BUILD defaults to "build"): a plugin that
 * works, a wrong ABI major, a newer minor, no entry symbol, an init that
 * fails, a duplicate handler name, a file that is not ELF, a missing file,
 * unload, and registration outside init. Who may own and write plugin files
 * and folders is test_plugin_trust.c's.
 *
 * Each test copies the fixtures it loads into its own scratch folder
 * ($BUILD/tmp/test_plugin-<pid>-XXXXXX, mode 0755, files 0755), so the
 * loader's permission checks do not depend on the umask the build ran with.
 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
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

/* ---- per-test state: a registry and a scratch folder ---- */

typedef struct fx {
    registry reg;
    char dir[512];
    char err[512];
} fx;

static int setup(void **state)
{
    fx *f = xcalloc(1, sizeof *f);
    registry_init(&f->reg);
    snprintf(f->dir, sizeof f->dir, "%s/tmp", fake_build_dir());
    mkdir(f->dir, 0755);
    snprintf(f->dir, sizeof f->dir, "%s/tmp/test_plugin-%d-XXXXXX", fake_build_dir(),
             (int)getpid());
    if (!mkdtemp(f->dir) || chmod(f->dir, 0755) < 0) {
        perror(f->dir);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    registry_destroy(&f->reg);
    fake_remove_tree(f->dir);
    free(f);
    return 0;
}

/* Copy fixture name into dir as name.so with mode; returns the copy's path (heap). */
static char *install_in(const char *dir, const char *name, mode_t mode)
{
    char *from = xasprintf("%s/tests/fixtures/%s.so", fake_build_dir(), name);
    char *to = xasprintf("%s/%s.so", dir, name);
    fake_copy_file(from, to, mode);
    free(from);
    return to;
}

static char *install(fx *f, const char *name) { return install_in(f->dir, name, 0755); }

/* Load path with config given as JSON text (NULL for none). */
static int load(fx *f, const char *path, const char *config_json, struct bgt_plugin **out)
{
    cJSON *config = NULL;
    if (config_json) {
        config = cJSON_Parse(config_json);
        assert_non_null(config);
    }
    f->err[0] = '\0';
    int rc = plugin_load(path, NULL, config, &f->reg, &fake_api, out, f->err, sizeof f->err);
    cJSON_Delete(config);
    return rc;
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("'%s' does not contain '%s'", haystack, needle);
}

static void assert_registry_empty(fx *f)
{
    assert_int_equal(registry_handlers(&f->reg, NULL, 0), 0);
    assert_int_equal(registry_hooks(&f->reg, NULL, 0), 0);
}

/* Config text holding the addresses of counters, as the fixtures expect them. */
static char *counters_json(int *frees, int *finis, const char *extra)
{
    return xasprintf("{\"free_counter\": %" PRIuPTR ", \"fini_counter\": %" PRIuPTR "%s%s}",
                     (uintptr_t)frees, (uintptr_t)finis, extra ? ", " : "", extra ? extra : "");
}

/* Run fn with stderr sent to a file in the scratch folder; return what was written (heap). */
static char *capture_stderr(fx *f, void (*fn)(fx *, void *), void *arg)
{
    char *path = xasprintf("%s/stderr.txt", f->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    dup2(fd, STDERR_FILENO);
    fn(f, arg);
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    char *text = xcalloc(1, (size_t)len + 1);
    assert_int_equal(pread(fd, text, (size_t)len, 0), len);
    close(fd);
    unlink(path);
    free(path);
    return text;
}

/* ---- the cases ---- */

static void test_good_plugin(void **state)
{
    fx *f = *state;
    int frees = 0, finis = 0;
    char *path = install(f, "good");
    char *config = counters_json(&frees, &finis, "\"extra_handler\": \"fx.cfg\"");
    struct bgt_plugin *p = NULL;

    assert_int_equal(load(f, path, config, &p), 0);
    assert_non_null(p);
    assert_string_equal(p->name, "good");
    assert_string_equal(p->version, "1.0");
    assert_string_equal(p->path, path);
    assert_false(p->in_init);
    assert_int_equal(p->reg_rc, 0);

    const handler *h = registry_find(&f->reg, "fx.good");
    assert_non_null(h);
    assert_ptr_equal(h->plugin, p);
    assert_int_equal(h->def.kind, BGT_SINGLE);
    assert_int_equal(h->def.max_attempts, 5);
    assert_non_null(h->def.run);
    h = registry_find(&f->reg, "fx.par");
    assert_non_null(h);
    assert_int_equal(h->def.kind, BGT_PARALLEL);
    assert_non_null(h->def.split);
    assert_int_equal(h->def.parallelism, 4);
    /* The handler named in the config proves init saw its config. */
    h = registry_find(&f->reg, "fx.cfg");
    assert_non_null(h);
    assert_ptr_equal(h->plugin, p);
    assert_int_equal(registry_count_plugin(&f->reg, p), 3);

    const hook *ks[2];
    assert_int_equal(registry_hooks(&f->reg, ks, 2), 1);
    assert_string_equal(ks[0]->name, "fx-hook");
    assert_ptr_equal(ks[0]->plugin, p);
    assert_non_null(ks[0]->def.before);

    assert_int_equal(frees, 0);
    assert_int_equal(finis, 0);
    plugin_unload(p);
    assert_int_equal(finis, 1);
    assert_int_equal(frees, 4);
    assert_registry_empty(f);
    free(config);
    free(path);
}

static void test_no_config(void **state)
{
    fx *f = *state;
    char *path = install(f, "good");
    struct bgt_plugin *p = NULL;
    assert_int_equal(load(f, path, NULL, &p), 0);
    assert_non_null(registry_find(&f->reg, "fx.good"));
    assert_null(registry_find(&f->reg, "fx.cfg"));
    plugin_unload(p);
    plugin_unload(NULL);

    /* A config that is not an object is refused before anything is loaded. */
    assert_int_equal(load(f, path, "[1, 2]", &p), -EINVAL);
    assert_null(p);
    assert_contains(f->err, "config must be an object");
    assert_registry_empty(f);
    free(path);
}

static void test_abi_major(void **state)
{
    fx *f = *state;
    char *path = install(f, "abi_major");
    struct bgt_plugin *p = (struct bgt_plugin *)&p;
    char want[512];

    assert_true(load(f, path, NULL, &p) < 0);
    assert_null(p);
    snprintf(want, sizeof want, "%s: built for plugin ABI 2.0, this host speaks %d.%d", path,
             BGT_ABI_MAJOR, BGT_ABI_MINOR);
    assert_string_equal(f->err, want);
    assert_registry_empty(f);
    free(path);
}

static void test_newer_minor(void **state)
{
    fx *f = *state;
    char *path = install(f, "newer_minor");
    struct bgt_plugin *p = NULL;
    char want[512];

    assert_true(load(f, path, NULL, &p) < 0);
    assert_null(p);
    snprintf(want, sizeof want, "%s: built for plugin ABI %d.%d, this host speaks %d.%d", path,
             BGT_ABI_MAJOR, BGT_ABI_MINOR + 1, BGT_ABI_MAJOR, BGT_ABI_MINOR);
    assert_contains(f->err, want);
    assert_contains(f->err, "newer host");
    assert_registry_empty(f);
    free(path);
}

static void test_no_entry(void **state)
{
    fx *f = *state;
    char *path = install(f, "no_entry");
    struct bgt_plugin *p = NULL;
    char want[512];

    assert_int_equal(load(f, path, NULL, &p), -ENOEXEC);
    assert_null(p);
    snprintf(want, sizeof want, "%s: not a bgtask plugin: no bgt_plugin_entry symbol", path);
    assert_string_equal(f->err, want);
    assert_registry_empty(f);
    free(path);
}

static void test_init_fails(void **state)
{
    fx *f = *state;
    int frees = 0, finis = 0;
    char *path = install(f, "init_fails");
    char *config = counters_json(&frees, &finis, NULL);
    struct bgt_plugin *p = NULL;
    char want[512];

    unsigned gen = f->reg.generation;
    assert_true(load(f, path, config, &p) < 0);
    assert_null(p);
    snprintf(want, sizeof want, "%s: init failed (returned -1)", path);
    assert_string_equal(f->err, want);
    /* Two handlers and a hook were registered, and each was rolled back. */
    assert_registry_empty(f);
    assert_null(registry_find(&f->reg, "fx.fails.one"));
    assert_null(registry_find(&f->reg, "fx.fails.two"));
    assert_int_equal(frees, 3);
    assert_int_equal(f->reg.generation, gen + 4);
    free(config);
    free(path);
}

/* A plugin_load call to run while stderr is captured. */
struct load_call {
    const char *path;
    const char *config;
    struct bgt_plugin *p;
    int rc;
};

static void do_load(fx *f, void *arg)
{
    struct load_call *c = arg;
    c->rc = load(f, c->path, c->config, &c->p);
}

static void test_duplicate_handler(void **state)
{
    fx *f = *state;
    char *path_a = install(f, "dup_a");
    char *path_b = install(f, "dup_b");
    struct bgt_plugin *a = NULL, *b = NULL;

    assert_int_equal(load(f, path_a, NULL, &a), 0);
    const handler *h = registry_find(&f->reg, "fx.dup");
    assert_non_null(h);
    assert_ptr_equal(h->plugin, a);

    /* dup_b ignores the refusal and returns 0 from init: the load fails anyway,
     * and the log names both plugins. */
    struct load_call c = {.path = path_b};
    char *log = capture_stderr(f, do_load, &c);
    assert_int_equal(c.rc, -EEXIST);
    assert_null(c.p);
    assert_contains(log, "[dup-b] handler 'fx.dup' is already registered by plugin 'dup-a'");
    free(log);
    assert_contains(f->err, path_b);
    assert_contains(f->err, "plugin 'dup-b'");
    assert_contains(f->err, "plugin 'dup-a'");

    /* The first plugin's handler is intact; everything of the second is gone. */
    h = registry_find(&f->reg, "fx.dup");
    assert_non_null(h);
    assert_ptr_equal(h->plugin, a);
    assert_null(registry_find(&f->reg, "fx.dup-b-only"));
    assert_int_equal(registry_handlers(&f->reg, NULL, 0), 1);

    /* A careful plugin returns the refusal: same outcome, init's code shown. */
    assert_int_equal(load(f, path_b, "{\"return_rc\": true}", &b), -EEXIST);
    assert_null(b);
    assert_contains(f->err, "plugin 'dup-b' not loaded: handler 'fx.dup' is already registered "
                            "by plugin 'dup-a' (init returned -17)");
    assert_int_equal(registry_handlers(&f->reg, NULL, 0), 1);

    /* Once the first plugin is gone the name is free. */
    plugin_unload(a);
    assert_registry_empty(f);
    assert_int_equal(load(f, path_b, NULL, &b), 0);
    h = registry_find(&f->reg, "fx.dup");
    assert_non_null(h);
    assert_ptr_equal(h->plugin, b);
    plugin_unload(b);
    free(path_a);
    free(path_b);
}

static void test_not_elf(void **state)
{
    fx *f = *state;
    char *path = xasprintf("%s/bad.so", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("this is not a shared object\n", fp);
    fclose(fp);
    assert_int_equal(chmod(path, 0755), 0);
    struct bgt_plugin *p = NULL;
    char want[512];

    assert_int_equal(load(f, path, NULL, &p), -ENOEXEC);
    assert_null(p);
    snprintf(want, sizeof want, "%s: dlopen failed: ", path);
    assert_true(strncmp(f->err, want, strlen(want)) == 0);
    /* dlerror's own text follows, and it names the file too. */
    assert_true(strlen(f->err) > strlen(want));
    assert_contains(f->err + strlen(want), "bad.so");
    assert_registry_empty(f);
    free(path);
}

static void test_not_regular(void **state)
{
    fx *f = *state;
    char *path = xasprintf("%s/folder.so", f->dir);
    assert_int_equal(mkdir(path, 0755), 0);
    struct bgt_plugin *p = NULL;
    char want[512];
    assert_int_equal(load(f, path, NULL, &p), -EPERM);
    snprintf(want, sizeof want, "%s: refusing to load: not a regular file", path);
    assert_string_equal(f->err, want);
    free(path);
}

static void test_missing_file(void **state)
{
    fx *f = *state;
    char *path = xasprintf("%s/nowhere.so", f->dir);
    struct bgt_plugin *p = NULL;
    char want[512];
    assert_int_equal(load(f, path, NULL, &p), -ENOENT);
    assert_null(p);
    snprintf(want, sizeof want, "%s: cannot read: No such file or directory", path);
    assert_string_equal(f->err, want);
    assert_registry_empty(f);
    free(path);
}

static void test_unload(void **state)
{
    fx *f = *state;
    int frees = 0, finis = 0;
    char *path = install(f, "good");
    char *config = counters_json(&frees, &finis, NULL);
    struct bgt_plugin *p = NULL;

    assert_int_equal(load(f, path, config, &p), 0);
    assert_int_equal(registry_count_plugin(&f->reg, p), 2);
    unsigned gen = f->reg.generation;
    plugin_unload(p);
    assert_int_equal(finis, 1);
    assert_int_equal(frees, 3);
    assert_null(registry_find(&f->reg, "fx.good"));
    assert_null(registry_find(&f->reg, "fx.par"));
    assert_registry_empty(f);
    assert_int_not_equal(f->reg.generation, gen);

    /* It loads again after an unload (fresh dlopen, fresh init). */
    assert_int_equal(load(f, path, config, &p), 0);
    assert_non_null(registry_find(&f->reg, "fx.good"));
    plugin_unload(p);
    assert_int_equal(finis, 2);
    assert_int_equal(frees, 6);
    free(config);
    free(path);
}

static void count_free(void *udata) { ++*(int *)udata; }

static bgt_status run_ok(bgt_task *t, const cJSON *args, void *udata) { return BGT_OK; }

static void test_register_outside_init(void **state)
{
    fx *f = *state;
    char *path = install(f, "good");
    struct bgt_plugin *p = NULL;
    int frees = 0;

    assert_int_equal(load(f, path, NULL, &p), 0);
    unsigned gen = f->reg.generation;
    bgt_handler_def d = {.size = sizeof d,
                         .name = "fx.late",
                         .run = run_ok,
                         .udata = &frees,
                         .udata_free = count_free};
    assert_int_equal(plugin_api_register_handler(p, &d), -EPERM);
    assert_int_equal(frees, 1);
    bgt_hook_def k = {.size = sizeof k, .name = "late", .udata = &frees, .udata_free = count_free};
    assert_int_equal(plugin_api_register_hook(p, &k), -EPERM);
    assert_int_equal(frees, 2);
    assert_int_equal(plugin_api_register_handler(NULL, &d), -EPERM);
    assert_int_equal(frees, 3);
    assert_null(registry_find(&f->reg, "fx.late"));
    assert_int_equal(registry_count_plugin(&f->reg, p), 2);
    assert_int_equal(registry_hooks(&f->reg, NULL, 0), 1);
    assert_int_equal(f->reg.generation, gen);
    /* A refusal after init does not poison the loaded plugin. */
    assert_int_equal(p->reg_rc, 0);
    plugin_unload(p);
    free(path);
}

/* Call the host table's plugin_log the way bgt_plugin_log does. */
__attribute__((format(printf, 3, 4))) static void call_plugin_log(struct bgt_plugin *p, int level,
                                                                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fake_api.plugin_log(p, level, fmt, ap);
    va_end(ap);
}

static void log_through_plugin(fx *f, void *arg)
{
    struct bgt_plugin *p = arg;
    call_plugin_log(p, BGT_LOG_NOTICE, "hello %d", 42);
    call_plugin_log(p, 0, "out of range %s", "level");
    call_plugin_log(p, 99, "too verbose to show");
}

static void test_plugin_log(void **state)
{
    fx *f = *state;
    struct bgt_plugin p = {.name = (char *)"logger"};
    char *log = capture_stderr(f, log_through_plugin, &p);
    assert_contains(log, "[logger] hello 42\n");
    assert_contains(log, "error  [logger] out of range level\n");
    free(log);
}

static void test_scan_dir(void **state)
{
    fx *f = *state;
    const char *names[] = {"b.so", "a.so", ".hidden.so", "notes.txt", "x.so.1", ".so", "c.so"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *path = xasprintf("%s/%s", f->dir, names[i]);
        FILE *fp = fopen(path, "w");
        assert_non_null(fp);
        fclose(fp);
        free(path);
    }
    char **paths = NULL;
    size_t n = 0;
    assert_int_equal(plugin_scan_dir(f->dir, &paths, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 3);
    const char *want[] = {"a.so", "b.so", "c.so"};
    for (size_t i = 0; i < n; i++) {
        char *w = xasprintf("%s/%s", f->dir, want[i]);
        assert_string_equal(paths[i], w);
        free(w);
        free(paths[i]);
    }
    free(paths);

    /* A trailing slash does not double. */
    char *slash = xasprintf("%s/", f->dir);
    assert_int_equal(plugin_scan_dir(slash, &paths, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 3);
    char *w = xasprintf("%s/a.so", f->dir);
    assert_string_equal(paths[0], w);
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    free(w);
    free(slash);

    /* An empty folder gives no paths; a missing one an error naming it. */
    char *empty = xasprintf("%s/empty", f->dir);
    assert_int_equal(mkdir(empty, 0755), 0);
    assert_int_equal(plugin_scan_dir(empty, &paths, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 0);
    assert_null(paths);
    char *missing = xasprintf("%s/missing", f->dir);
    assert_int_equal(plugin_scan_dir(missing, &paths, &n, f->err, sizeof f->err), -ENOENT);
    char *msg = xasprintf("%s: cannot read: No such file or directory", missing);
    assert_string_equal(f->err, msg);
    free(msg);
    free(missing);
    free(empty);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_good_plugin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abi_major, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_minor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_elf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_regular, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_outside_init, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plugin_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_dir, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_reload.c - SIGHUP: a running host loads the plugins added to its
 * config file (by name from plugins.dir, or by file with a config section)
 * and runs their tasks without a restart; a broken config or a plugin that
 * fails to load on SIGHUP is logged and the host keeps running what it has.
 */
#include <signal.h>

#include "../harness/itest.h"

/* How often needle occurs in the host's log. */
static int log_count(const th_host *h, const char *needle)
{
    char *text = it_read_file(h->log);
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    free(text);
    return n;
}

/* Rewrite the host's config with its plugins.load list replaced by `load`. */
static void set_plugins(th_host *h, const char *load)
{
    char *text = it_read_file(h->conf);
    char *from = strstr(text, "load = (");
    assert_non_null(from);
    char *to = strstr(from, ");\n");
    assert_non_null(to);
    char *next = NULL;
    assert_true(asprintf(&next, "%.*sload = ( %s );\n%s", (int)(from - text), text, load, to + 3) >
                0);
    it_write_file(h->conf, next);
    free(next);
    free(text);
}

/* Send SIGHUP and wait for the host to log the outcome of this reload (the n-th). */
static void sighup(th_host *h, int n)
{
    th_host_signal(h, SIGHUP);
    assert_true(TH_WAIT_UNTIL(10, log_count(h, "SIGHUP:") >= n));
}

/* The handlers the host announces in its entry, as a malloc'd string. */
static char *host_handlers(const th_host *h)
{
    char *s = th_host_field(fx.c, IT_PREFIX, h->id, "handlers");
    return s ? s : strdup("");
}

static bool host_has_handler(const th_host *h, const char *name)
{
    char *s = host_handlers(h);
    bool has = strstr(s, name) != NULL;
    free(s);
    return has;
}

static char *probe_load(const char *greeting)
{
    char *path = th_plugin_path("probe", true), *load = NULL;
    assert_true(asprintf(&load,
                         "{ name = \"probe\"; file = \"%s\"; config = { greeting = \"%s\"; "
                         "n = 3; }; }",
                         path, greeting) > 0);
    free(path);
    return load;
}

static void test_sighup_loads_plugins(void **state)
{
    it_need_redis();
    th_host *h = it_host_start(&(th_host_opts){.plugins = "{ name = \"files\"; }"});
    char *demo = it_submit("demo.echo", "{\"hello\": \"reload\"}", NULL);
    char *probe = it_submit("probe.hello", NULL, NULL);

    /* The host serves files.* only: a files task runs, the others wait. */
    char *args = NULL;
    assert_true(asprintf(&args, "{\"path\": \"%s\"}", h->conf) > 0);
    char *files = it_submit("files.checksum", args, NULL);
    assert_true(it_wait_state(files, "SUCCESS", 10));
    it_assert_field(demo, "attempt", "0");
    it_assert_field(probe, "attempt", "0");
    assert_false(host_has_handler(h, "demo.echo"));

    /* Add demo (by name, from plugins.dir) and probe (by file, with a config). */
    char *pl = probe_load("hi"), *load = NULL;
    assert_true(asprintf(&load, "{ name = \"files\"; }, { name = \"demo\"; }, %s", pl) > 0);
    set_plugins(h, load);
    pid_t pid = h->pid;
    sighup(h, 1);
    assert_true(th_log_contains(h, "SIGHUP: handlers reloaded"));

    assert_true(it_wait_state(demo, "SUCCESS", 10));
    assert_true(it_wait_state(probe, "SUCCESS", 10));
    it_assert_ended_on(demo, h, 1);
    it_assert_field(demo, "attempt", "1");
    it_assert_one_terminal(demo, "bgtask_done");
    it_assert_one_terminal(probe, "bgtask_done");
    cJSON *res = it_field_json(probe, "result");
    assert_non_null(res);
    cJSON *cfg = cJSON_GetObjectItem(res, "config");
    assert_string_equal(cJSON_GetObjectItem(cfg, "greeting")->valuestring, "hi");
    assert_int_equal(cJSON_GetObjectItem(cfg, "n")->valueint, 3);
    cJSON_Delete(res);

    /* The same process all along, and its entry now lists the new handlers. */
    assert_int_equal(h->pid, pid);
    assert_true(it_host_alive(h));
    assert_int_equal(log_count(h, "serving"), 1);
    assert_true(TH_WAIT_UNTIL(5, host_has_handler(h, "demo.sleep") &&
                                     host_has_handler(h, "probe.hello") &&
                                     host_has_handler(h, "files.checksum")));

    /* A second SIGHUP with nothing new loads nothing twice. */
    sighup(h, 2);
    assert_true(th_log_contains(h, "SIGHUP: no new plugins"));
    assert_int_equal(log_count(h, "probe plugin loaded"), 1);
    char *again = it_submit("probe.hello", NULL, NULL);
    assert_true(it_wait_state(again, "SUCCESS", 10));
    char *files2 = it_submit("files.checksum", args, NULL);
    assert_true(it_wait_state(files2, "SUCCESS", 10));
    free(files2);
    free(again);
    free(load);
    free(pl);
    free(files);
    free(args);
    free(probe);
    free(demo);
    it_pass();
}

static void test_sighup_bad_config(void **state)
{
    it_need_redis();
    th_host *h = it_host_start(NULL);
    char *good = it_read_file(h->conf);

    /* A syntax error: logged with file and line, the running config kept. */
    char *broken = NULL;
    assert_true(asprintf(&broken, "%sbroken = ;\n", good) > 0);
    it_write_file(h->conf, broken);
    sighup(h, 1);
    assert_true(th_log_contains(h, "keeping the running config"));
    assert_true(th_log_contains(h, "syntax error"));
    int lines = 1;
    for (const char *p = good; *p; p++)
        lines += *p == '\n';
    char *where = NULL;
    assert_true(asprintf(&where, "%s:%d:", h->conf, lines) > 0);
    assert_true(th_log_contains(h, where));
    assert_true(it_host_alive(h));
    char *id = it_submit("demo.echo", "{\"still\": \"here\"}", NULL);
    assert_true(it_wait_state(id, "SUCCESS", 10));
    free(id);

    /* A plugin that cannot be loaded, though plugins.required is on: logged with its
     * path, and the host goes on without it. */
    char *missing = NULL;
    assert_true(asprintf(&missing, "%s.d/missing.so", h->conf) > 0);
    char *load = NULL;
    assert_true(asprintf(&load, "{ name = \"demo\"; }, { name = \"missing\"; file = \"%s\"; }",
                         missing) > 0);
    it_write_file(h->conf, good);
    set_plugins(h, load);
    sighup(h, 2);
    assert_true(TH_WAIT_UNTIL(5, th_log_contains(h, missing)));
    assert_true(it_host_alive(h));
    id = it_submit("demo.sleep", "{\"seconds\": 0.1, \"steps\": 2}", NULL);
    assert_true(it_wait_state(id, "SUCCESS", 10));
    free(id);

    /* An out-of-range setting is refused the same way. */
    char *bad_range = NULL;
    assert_true(asprintf(&bad_range, "%sevents: { maxlen = -5; };\n", good) > 0);
    it_write_file(h->conf, bad_range);
    sighup(h, 3);
    assert_int_equal(log_count(h, "keeping the running config"), 2);
    assert_true(it_host_alive(h));

    /* Fixed again, the next SIGHUP loads what the config now adds. */
    char *pl = probe_load("fixed");
    free(load);
    assert_true(asprintf(&load, "{ name = \"demo\"; }, %s", pl) > 0);
    it_write_file(h->conf, good);
    set_plugins(h, load);
    sighup(h, 4);
    id = it_submit("probe.hello", NULL, NULL);
    assert_true(it_wait_state(id, "SUCCESS", 10));
    cJSON *res = it_field_json(id, "result");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(res, "config"), "greeting")->valuestring, "fixed");
    cJSON_Delete(res);
    assert_true(it_host_alive(h));
    free(id);
    free(pl);
    free(load);
    free(missing);
    free(bad_range);
    free(where);
    free(broken);
    free(good);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_sighup_loads_plugins),
        IT_TEST(test_sighup_bad_config),
    };
    return cmocka_run_group_tests(tests, it_group_setup, it_group_teardown);
}

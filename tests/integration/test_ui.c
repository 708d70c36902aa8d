/*
 * test_ui.c - the dashboard in a real headless Chromium: tests/ui/ui-test.mjs
 * (playwright-core from npm, Debian's chromium) against a private
 * redis-server and two real bgtaskd hosts. "ui" serves HTTP with a token and
 * the dashboard from host/ui, and runs demo and partest tasks; "open" serves
 * HTTP on loopback without a token. The browser runs once, in the group
 * setup; each test checks one of its scenarios. Screenshots of every view go
 * to $BUILD/ui-shots/.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "../harness/harness.h"

#define TOKEN "ui-t0ken_for-tests"
#define CHROMIUM "/usr/bin/chromium"
/* The whole browser run: its scenarios each wait at most 20 s for a condition. */
#define BROWSER_TIMEOUT_S 240

static struct {
    th_redis r;
    th_host ui, open;
    bool ran;      /* the browser run happened (else the tests skip or fail) */
    cJSON *result; /* scenario name -> its line of output */
} fx;

static bool in_ci(void)
{
    const char *ci = getenv("CI");
    return ci && *ci;
}

/* Start a host with HTTP on a free loopback port; fills url. */
static int start_host(th_host *h, const th_host_opts *o, char *url, size_t n)
{
    if (th_host_start(h, &fx.r, o) < 0 || !th_host_wait_ready(h, &fx.r, 15))
        return -1;
    int port = th_host_http_port(h);
    if (port <= 0) {
        th_log_dump(h);
        return -1;
    }
    snprintf(url, n, "http://127.0.0.1:%d", port);
    return 0;
}

/* Run a program found in $PATH (through env); its stdout into *out if not NULL. */
static int run(double timeout_s, char **out, const char *prog, ...)
{
    const char *argv[32] = {"/usr/bin/env", prog};
    int n = 2;
    va_list ap;
    va_start(ap, prog);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 31)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    return th_run(timeout_s, (char *const *)argv, out, NULL);
}

/* node, npm and chromium, and the locked npm packages (npm ci from package-lock.json). */
static bool browser_ready(void)
{
    if (access(CHROMIUM, X_OK) != 0) {
        fprintf(stderr, "test_ui: %s not found (tools/install-deps installs it)\n", CHROMIUM);
        return false;
    }
    if (run(30, NULL, "node", "--version", NULL) != 0) {
        fprintf(stderr, "test_ui: node not found (tools/install-deps installs it)\n");
        return false;
    }
    struct stat sb;
    if (stat("tests/ui/node_modules/playwright-core/package.json", &sb) == 0)
        return true;
    int rc = run(300, NULL, "npm", "--prefix", "tests/ui", "ci", "--no-audit", "--no-fund", NULL);
    if (rc != 0)
        fprintf(stderr, "test_ui: npm ci in tests/ui failed (%d)\n", rc);
    return rc == 0;
}

static int group_setup(void **state)
{
    int rc = th_redis_start(&fx.r, false);
    if (rc == -1)
        return -1;
    if (rc != 0)
        return 0; /* no redis-server, not in CI: the tests skip */
    if (!browser_ready())
        return in_ci() ? -1 : 0;
    char *ui_dir = realpath("host/ui", NULL);
    char *partest = th_plugin_path("partest", true);
    if (!ui_dir || !partest)
        return -1;
    char extra[1024], open_extra[1024], plugins[1024], url[64], open_url[64];
    snprintf(extra, sizeof extra,
             "http: { listen = \"127.0.0.1:0\"; token = \"%s\"; ui_dir = \"%s\"; };", TOKEN,
             ui_dir);
    snprintf(open_extra, sizeof open_extra, "http: { listen = \"127.0.0.1:0\"; ui_dir = \"%s\"; };",
             ui_dir);
    snprintf(plugins, sizeof plugins, "{ name = \"demo\"; }, { name = \"partest\"; file = \"%s\"; }",
             partest);
    free(ui_dir);
    free(partest);
    th_host_opts ui = {.id = "ui", .plugins = plugins, .extra = extra, .workers = 6};
    if (start_host(&fx.ui, &ui, url, sizeof url) < 0)
        return -1;
    th_host_opts open = {.id = "open", .plugins = "{ name = \"files\"; }", .extra = open_extra};
    if (start_host(&fx.open, &open, open_url, sizeof open_url) < 0)
        return -1;

    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char shots[512];
    snprintf(shots, sizeof shots, "%s/ui-shots", build);
    char *out = NULL;
    rc = run(BROWSER_TIMEOUT_S, &out, "node", "tests/ui/ui-test.mjs", "--url", url, "--token", TOKEN,
             "--open-url", open_url, "--shots", shots, NULL);
    fprintf(stderr, "test_ui: the browser run exited %d; screenshots in %s/\n%s", rc, shots,
            out ? out : "");
    fx.result = cJSON_CreateObject();
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "scenario");
        if (cJSON_IsString(name) && !cJSON_GetObjectItemCaseSensitive(fx.result, name->valuestring))
            cJSON_AddItemToObject(fx.result, name->valuestring, j);
        else
            cJSON_Delete(j);
    }
    free(out);
    fx.ran = true;
    return 0;
}

/* Both hosts must stop cleanly, with no sanitizer report in their logs (make asan). */
static int group_teardown(void **state)
{
    int rc = 0;
    th_host *hosts[] = {&fx.ui, &fx.open};
    for (int i = 0; i < 2; i++) {
        if (!hosts[i]->pid)
            continue;
        int st = th_host_stop(hosts[i], 15);
        if (st != 0 || th_log_contains(hosts[i], "Sanitizer") ||
            th_log_contains(hosts[i], "runtime error:")) {
            fprintf(stderr, "host %s: exit %d, or a sanitizer report:\n", hosts[i]->id, st);
            th_log_dump(hosts[i]);
            rc = -1;
        }
    }
    cJSON_Delete(fx.result);
    th_cleanup();
    return rc;
}

/* The scenario's line must say ok. */
static void scenario(const char *name)
{
    if (!fx.ran)
        skip();
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(fx.result, name);
    if (!s) {
        th_log_dump(&fx.ui);
        fail_msg("scenario %s did not run (the browser run stopped before it)", name);
    }
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s, "ok"))) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(s, "error");
        th_log_dump(&fx.ui);
        fail_msg("scenario %s: %s", name, cJSON_IsString(e) ? e->valuestring : "failed");
    }
}

static void test_no_token(void **state) { scenario("no_token"); }
static void test_token(void **state) { scenario("token"); }
static void test_overview(void **state) { scenario("overview"); }
static void test_live_task(void **state) { scenario("live_task"); }
static void test_cancel(void **state) { scenario("cancel"); }
static void test_logs(void **state) { scenario("logs"); }
static void test_retry_subtasks(void **state) { scenario("retry_subtasks"); }
static void test_handlers(void **state) { scenario("handlers"); }
static void test_retry_task(void **state) { scenario("retry_task"); }
static void test_pause(void **state) { scenario("pause"); }
static void test_bulk_retry(void **state) { scenario("bulk_retry"); }
static void test_purge(void **state) { scenario("purge"); }
static void test_cancel_all(void **state) { scenario("cancel_all"); }
static void test_history(void **state) { scenario("history"); }
static void test_tasks_pages(void **state) { scenario("tasks_pages"); }
static void test_token_refused_later(void **state) { scenario("token_refused_later"); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_token),     cmocka_unit_test(test_token),
        cmocka_unit_test(test_overview),     cmocka_unit_test(test_live_task),
        cmocka_unit_test(test_cancel),       cmocka_unit_test(test_logs),
        cmocka_unit_test(test_retry_task),   cmocka_unit_test(test_retry_subtasks),
        cmocka_unit_test(test_handlers),     cmocka_unit_test(test_pause),
        cmocka_unit_test(test_bulk_retry),   cmocka_unit_test(test_purge),
        cmocka_unit_test(test_cancel_all),   cmocka_unit_test(test_history),
        cmocka_unit_test(test_tasks_pages),
        cmocka_unit_test(test_token_refused_later),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

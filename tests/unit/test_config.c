/*
 * test_config.c - the configuration reader: defaults, the shipped files,
 * every kind of bad setting (with its file:line message), path resolution
 * and plugin config conversion to JSON.
 *
 * Run from the repository root (the shipped files are read as config/...).
 * Scratch files go in a fresh folder under $BUILD/tmp (default build/tmp),
 * removed at the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "store.h"
#include "util.h"

/* The scratch folder, absolute and canonical (so expected paths can be built from it). */
static char *tmp;

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int setup(void **state)
{
    (void)state;
    const char *build = getenv("BUILD");
    char *base = xasprintf("%s/tmp", build && *build ? build : "build");
    char *tmpl = xasprintf("%s/test_config-XXXXXX", base);
    char *made = NULL;
    /* mkdir -p $BUILD/tmp; fall back to /tmp if the build folder cannot take it. */
    char *parent = xasprintf("%s", base);
    char *slash = strrchr(parent, '/');
    if (slash) {
        *slash = '\0';
        mkdir(parent, 0755);
    }
    free(parent);
    mkdir(base, 0755);
    made = mkdtemp(tmpl);
    if (!made) {
        free(tmpl);
        tmpl = xstrdup("/tmp/test_config-XXXXXX");
        made = mkdtemp(tmpl);
    }
    free(base);
    if (!made) {
        free(tmpl);
        return -1;
    }
    tmp = realpath(made, NULL);
    free(tmpl);
    return tmp ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (tmp)
        nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(tmp);
    tmp = NULL;
    return 0;
}

/* Write text to tmp/name (creating tmp/<folder> parts as needed); returns the heap path. */
static char *write_file(const char *name, const char *text)
{
    char *path = xasprintf("%s/%s", tmp, name);
    for (char *p = path + strlen(tmp) + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        mkdir(path, 0755);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* Copy the file at src to tmp/name; returns the heap path. */
static char *copy_file(const char *src, const char *name)
{
    FILE *f = fopen(src, "r");
    assert_non_null(f);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    assert_non_null(m);
    int ch;
    while ((ch = fgetc(f)) != EOF)
        fputc(ch, m);
    fclose(f);
    fclose(m);
    char *path = write_file(name, buf);
    free(buf);
    return path;
}

static bool all_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

static void test_defaults(void **state)
{
    (void)state;
    bgt_config c;
    config_defaults(&c);
    assert_null(c.path);
    assert_string_equal(c.redis_url, "redis://127.0.0.1:6379/0");
    assert_null(c.redis_password);
    assert_string_equal(c.prefix, "bgtask");
    assert_null(c.host_id);
    assert_int_equal(c.workers, 8);
    assert_string_equal(c.log_level, "info");
    assert_true(c.lease_s == 15);
    assert_true(c.heartbeat_s == 5);
    assert_true(c.progress_interval_s == 1);
    assert_true(c.retention_s == 86400);
    assert_int_equal(c.max_attempts, 3);
    assert_true(c.backoff_base_s == 1);
    assert_true(c.backoff_max_s == 300);
    assert_true(c.shutdown_grace_s == 30);
    assert_int_equal(c.max_args_bytes, 1048576);
    assert_int_equal(c.max_result_bytes, 1048576);
    assert_int_equal(c.max_subtasks, 10000);
    assert_int_equal(c.parallelism, 8);
    assert_true(c.kill_grace_s == 5);
    assert_int_equal(c.events_maxlen, 100000);
    char *cwd = getcwd(NULL, 0);
    char *want = xasprintf("%s/plugins", cwd);
    assert_string_equal(c.plugins_dir, want);
    free(want);
    free(cwd);
    assert_false(c.plugins_autoload);
    assert_true(c.plugins_required);
    assert_int_equal(c.nplugins, 0);
    assert_null(c.http_listen);
    assert_null(c.http_token);
    assert_null(c.http_token_file);
    assert_false(c.http_metrics_auth);
    assert_int_equal(c.http_max_body, 1048576);
    assert_int_equal(c.http_max_connections, 1024);
    char *ui = config_default_ui_dir();
    assert_string_equal(c.http_ui_dir, ui);
    assert_non_null(strstr(ui, "/share/bgtask/ui"));
    free(ui);
    assert_false(c.http_allow_insecure);
    assert_int_equal(c.http_max_per_client, 256);
    assert_true(c.http_request_timeout_s == 10);
    assert_int_equal(c.http_sse_max_queued, 67108864);
    assert_true(c.plugins_init_timeout_s == 60);
    assert_true(c.http_metrics_interval_s == 5);
    assert_int_equal(c.http_metrics_max_handlers, 100);
    config_free(&c);
    assert_true(all_zero(&c, sizeof c));
}

/* An empty file is valid: all defaults, plugins "plugins" next to the file. */
static void test_empty_file(void **state)
{
    (void)state;
    char *path = write_file("empty/x.conf", "# nothing\n");
    bgt_config c;
    char err[512];
    assert_int_equal(config_load(path, &c, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_string_equal(c.path, path);
    assert_int_equal(c.workers, 8);
    char *want = xasprintf("%s/empty/plugins", tmp);
    assert_string_equal(c.plugins_dir, want);
    free(want);
    config_free(&c);
    free(path);
}

static void test_shipped_dev(void **state)
{
    (void)state;
    bgt_config c;
    char err[512];
    int rc = config_load("config/bgtaskd.conf", &c, err, sizeof err);
    if (rc != 0)
        fail_msg("config/bgtaskd.conf: %s", err);
    assert_string_equal(c.redis_url, "redis://127.0.0.1:6379/0");
    assert_null(c.redis_password);
    assert_string_equal(c.prefix, "bgtask");
    assert_null(c.host_id);
    assert_int_equal(c.workers, 8);
    assert_string_equal(c.log_level, "info");
    assert_true(c.lease_s == 15 && c.heartbeat_s == 5);
    assert_false(c.plugins_autoload);
    assert_true(c.plugins_required);
    assert_null(c.http_listen);
    assert_null(c.http_token);
    assert_non_null(strstr(c.http_ui_dir, "/host/ui")); /* the source tree's dashboard */

    /* plugins.dir = "../build/plugins" from config/: <repo>/build/plugins. */
    char *confdir = realpath("config", NULL);
    assert_non_null(confdir);
    char *repo = xstrdup(confdir);
    *strrchr(repo, '/') = '\0';
    char *want = xasprintf("%s/build/plugins", repo);
    char *want_unresolved = xasprintf("%s/../build/plugins", confdir);
    if (strcmp(c.plugins_dir, want) != 0 && strcmp(c.plugins_dir, want_unresolved) != 0)
        fail_msg("plugins_dir is %s", c.plugins_dir);

    assert_int_equal(c.nplugins, 3);
    assert_string_equal(c.plugins[0].name, "demo");
    char *demo = xasprintf("%s/demo.so", c.plugins_dir);
    assert_string_equal(c.plugins[0].file, demo);
    assert_true(cJSON_IsObject(c.plugins[0].config));
    assert_null(c.plugins[0].config->child);
    assert_string_equal(c.plugins[1].name, "files");
    const cJSON *mfb = cJSON_GetObjectItemCaseSensitive(c.plugins[1].config, "max_files");
    assert_true(cJSON_IsNumber(mfb));
    assert_true(mfb->valuedouble > 0);

    free(demo);
    free(want);
    free(want_unresolved);
    free(repo);
    free(confdir);
    config_free(&c);
}

/* The production example names token_file "http.token" next to itself: load a copy that has one. */
static void test_shipped_production(void **state)
{
    (void)state;
    char *path = copy_file("config/examples/production.conf", "prod/production.conf");
    char *tok = write_file("prod/http.token", "s3cret-Token_value\n");
    bgt_config c;
    char err[512];
    int rc = config_load(path, &c, err, sizeof err);
    if (rc != 0)
        fail_msg("production.conf: %s", err);
    assert_true(strncmp(c.redis_url, "unix://", 7) == 0);
    assert_non_null(c.redis_password);
    assert_true(c.plugins_autoload);
    assert_true(c.plugins_required);
    assert_true(c.lease_s > 15);
    assert_true(c.heartbeat_s <= c.lease_s / 2);
    assert_int_equal(c.max_result_bytes, 8388608);
    assert_string_equal(c.http_listen, "127.0.0.1:9464");
    assert_string_equal(c.http_token_file, tok);
    assert_string_equal(c.http_token, "s3cret-Token_value");
    assert_string_equal(c.plugins_dir, "/usr/local/lib/bgtask/plugins");
    assert_int_equal(c.nplugins, 1);
    assert_string_equal(c.plugins[0].file, "/usr/local/lib/bgtask/plugins/files.so");
    config_free(&c);

    /* Without its token file it must say so (with the resolved path). */
    assert_int_equal(unlink(tok), 0);
    assert_true(config_load(path, &c, err, sizeof err) < 0);
    assert_non_null(strstr(err, "http.token_file must be a readable file, got "));
    assert_non_null(strstr(err, tok));
    assert_true(all_zero(&c, sizeof c));
    free(tok);
    free(path);
}

static void test_missing_file(void **state)
{
    (void)state;
    bgt_config c;
    char err[512];
    char *path = xasprintf("%s/none/x.conf", tmp);
    assert_int_equal(config_load(path, &c, err, sizeof err), -ENOENT);
    char *want = xasprintf("%s: cannot read: No such file or directory", path);
    assert_string_equal(err, want);
    assert_true(all_zero(&c, sizeof c));
    free(want);
    free(path);

    /* A folder is not a config file. */
    assert_int_equal(config_load(tmp, &c, err, sizeof err), -EISDIR);
    want = xasprintf("%s: cannot read: Is a directory", tmp);
    assert_string_equal(err, want);
    free(want);

    /* A NULL or empty error buffer is allowed. */
    assert_true(config_load("/nonexistent/x.conf", &c, NULL, 0) < 0);
}

/*
 * One malformed or out-of-range file each. want is the message after
 * "<path>:"; "@D" in it stands for the scratch folder.
 */
typedef struct bad_case {
    const char *text;
    const char *want;
} bad_case;

static const bad_case bad_cases[] = {
    /* Syntax, from libconfig, with its line. */
    {"redis: {\n  url = \"x\";\n  prefix = ;\n};\n", "3: syntax error"},
    {"tasks: {\n  lease = 10;\n  lease = 11;\n};\n", "3: duplicate setting name"},
    {"@include \"missing.conf\"\n", "1: cannot open include file"},
    /* Unknown names. */
    {"tasks: {\n  lease = 10.0;\n\n  leese = 1;\n};\n", "4: unknown setting tasks.leese"},
    {"\ntask: { lease = 10.0; };\n",
     "2: unknown setting task (expected redis, host, tasks, events, plugins or http)"},
    {"tasks = 5;\n", "1: tasks must be a group { ... }, got an integer"},
    /* redis */
    {"redis: {\n\n  url = 5;\n};\n", "3: redis.url must be a string, got an integer"},
    {"redis: { url = \"\"; };\n", "1: redis.url must be a non-empty string, got \"\""},
    {"redis: { password = 12345; };\n", "1: redis.password must be a string, got an integer"},
    {"redis: { prefix = \"my app\"; };\n",
     "1: redis.prefix must be 1..64 characters without spaces, braces or control characters, "
     "got \"my app\""},
    /* Braces would change the keys' hash tags. */
    {"redis: { prefix = \"a{b}\"; };\n",
     "1: redis.prefix must be 1..64 characters without spaces, braces or control characters, "
     "got \"a{b}\""},
    {"redis: { shards = 0; };\n", "1: redis.shards must be an integer 1..1024, got 0"},
    {"redis: { shards = 1025; };\n", "1: redis.shards must be an integer 1..1024, got 1025"},
    /* host */
    {"host: { id = \"a b\"; };\n",
     "1: host.id must be 1..128 characters without spaces or control characters, got \"a b\""},
    {"host: {\n  workers = 0;\n};\n", "2: host.workers must be an integer 1..1024, got 0"},
    {"tasks: { retention_max = -1; };\n",
     "1: tasks.retention_max must be an integer 0..1000000000, got -1"},
    {"host: { workers = 1025; };\n", "1: host.workers must be an integer 1..1024, got 1025"},
    {"host: { workers = 8.0; };\n",
     "1: host.workers must be an integer 1..1024, got a floating-point number"},
    {"host: { workers = \"8\"; };\n", "1: host.workers must be an integer 1..1024, got a string"},
    {"host: { log_level = \"verbose\"; };\n",
     "1: host.log_level must be one of error, warning, notice, info, debug, got \"verbose\""},
    {"host: { log_level = 7; };\n", "1: host.log_level must be a string, got an integer"},
    {"host: { shutdown_grace = -1; };\n",
     "1: host.shutdown_grace must be a number 0..86400, got -1"},
    /* tasks */
    {"tasks: { lease = 0.5; };\n", "1: tasks.lease must be a number 1..3600, got 0.5"},
    {"tasks: { lease = 3601; };\n", "1: tasks.lease must be a number 1..3600, got 3601"},
    {"tasks: { lease = \"15\"; };\n", "1: tasks.lease must be a number 1..3600, got a string"},
    {"tasks: { heartbeat = 0.01; };\n", "1: tasks.heartbeat must be a number 0.05..1800, got 0.01"},
    {"tasks: {\n  lease = 10;\n  heartbeat = 6;\n};\n",
     "3: tasks.heartbeat must be at most tasks.lease/2 = 5, got 6"},
    {"tasks: {\n  lease = 8;\n};\n",
     "2: tasks.heartbeat must be at most tasks.lease/2 = 4, got 5 (the default)"},
    {"tasks: { progress_interval = 61; };\n",
     "1: tasks.progress_interval must be a number 0..60, got 61"},
    {"tasks: { retention = -1.0; };\n", "1: tasks.retention must be a number 0..31536000, got -1"},
    {"tasks: { max_attempts = 0; };\n", "1: tasks.max_attempts must be an integer 1..1000, got 0"},
    {"tasks: { max_attempts = 1001; };\n",
     "1: tasks.max_attempts must be an integer 1..1000, got 1001"},
    {"tasks: {\n  backoff_base = 10;\n  backoff_max = 5;\n};\n",
     "3: tasks.backoff_max must be at least tasks.backoff_base = 10, got 5"},
    {"tasks: { backoff_base = 400; };\n",
     "1: tasks.backoff_max must be at least tasks.backoff_base = 400, got 300 (the default)"},
    {"tasks: { backoff_max = 86401; };\n",
     "1: tasks.backoff_max must be a number 0..86400, got 86401"},
    {"tasks: { max_args_bytes = 15; };\n",
     "1: tasks.max_args_bytes must be an integer 16..67108864, got 15"},
    {"tasks: { max_result_bytes = 67108865L; };\n",
     "1: tasks.max_result_bytes must be an integer 16..67108864, got 67108865"},
    {"tasks: { max_args_bytes = 1.5e6; };\n",
     "1: tasks.max_args_bytes must be an integer 16..67108864, got a floating-point number"},
    {"tasks: { max_subtasks = 0; };\n",
     "1: tasks.max_subtasks must be an integer 1..1000000, got 0"},
    {"tasks: { parallelism = 1025; };\n",
     "1: tasks.parallelism must be an integer 1..1024, got 1025"},
    {"tasks: { kill_grace = -0.5; };\n", "1: tasks.kill_grace must be a number 0..3600, got -0.5"},
    /* events */
    {"events: { maxlen = 99; };\n", "1: events.maxlen must be an integer 100..1000000000, got 99"},
    /* plugins */
    {"plugins: { dir = \"\"; };\n", "1: plugins.dir must be a non-empty string, got \"\""},
    {"plugins: { autoload = 1; };\n", "1: plugins.autoload must be true or false, got an integer"},
    {"plugins: { required = \"yes\"; };\n",
     "1: plugins.required must be true or false, got a string"},
    {"plugins: { load = \"demo\"; };\n",
     "1: plugins.load must be a list ( { name = \"...\"; }, ... ), got a string"},
    {"plugins: { load = ( \"demo\" ); };\n",
     "1: plugins.load[0] must be a group { name = \"...\"; }, got a string"},
    {"plugins: {\n  load = (\n    { name = \"Demo\"; }\n  );\n};\n",
     "3: plugins.load[0].name must match [a-z0-9][a-z0-9._-]{0,62}, got \"Demo\""},
    {"plugins: { load = ( { name = \"a\"; }, { file = \"x.so\"; } ); };\n",
     "1: plugins.load[1] must have a name, got none"},
    {"plugins: { load = ( { name = 5; } ); };\n",
     "1: plugins.load[0].name must be a string, got an integer"},
    {"plugins: { load = ( { name = \"a\"; file = \"\"; } ); };\n",
     "1: plugins.load[0].file must be a non-empty path, got \"\""},
    {"plugins: { load = ( { name = \"a\";\n flie = \"x.so\"; } ); };\n",
     "2: unknown setting plugins.load[0].flie (expected name, file, config, isolation, "
     "processes, max_tasks_per_process, max_rss, memory_max, kill_grace, breaker_deaths, "
     "breaker_window, breaker_pause, seccomp)"},
    /* isolation */
    {"plugins: { load = ( { name = \"a\";\n isolation = \"proc\"; } ); };\n",
     "2: plugins.load[0].isolation must be \"thread\" or \"process\", got \"proc\""},
    {"plugins: { load = ( { name = \"a\"; isolation = 1; } ); };\n",
     "1: plugins.load[0].isolation must be \"thread\" or \"process\", got an integer"},
    {"plugins: { load = ( { name = \"a\";\n processes = 2; } ); };\n",
     "2: plugins.load[0].processes applies to worker processes: it needs isolation = "
     "\"process\""},
    {"plugins: { load = ( { name = \"a\"; isolation = \"thread\";\n kill_grace = 2.0; } ); };\n",
     "2: plugins.load[0].kill_grace applies to worker processes: it needs isolation = "
     "\"process\""},
    {"plugins: { load = ( { name = \"a\"; isolation = \"process\";\n processes = 0; } ); };\n",
     "2: plugins.load[0].processes must be an integer 1..1024, got 0"},
    {"plugins: { load = ( { name = \"a\"; isolation = \"process\";\n processes = 1.5; } ); };\n",
     "2: plugins.load[0].processes must be an integer 1..1024, got a floating-point number"},
    {"plugins: { load = ( { name = \"a\"; isolation = \"process\";\n max_rss = \"12X\"; } ); };\n",
     "2: plugins.load[0].max_rss must be a size in bytes (an integer, or a string such as "
     "\"512M\" or \"2G\") up to 1T, got \"12X\""},
    {"plugins: { load = ( { name = \"a\"; isolation = \"process\";\n max_rss = -1; } ); };\n",
     "2: plugins.load[0].max_rss must be a size in bytes (an integer, or a string such as "
     "\"512M\" or \"2G\") up to 1T, got an integer"},
    {"plugins: { load = ( { name = \"a\"; isolation = \"process\";\n memory_max = \"1M\"; } ); "
     "};\n",
     "2: plugins.load[0].memory_max must be 0 (none) or at least 16M, got 1048576 bytes"},
    {"plugins: { load = ( { name = \"a\"; isolation = \"process\";\n kill_grace = -1.0; } ); };\n",
     "2: plugins.load[0].kill_grace must be a number 0..3600, got -1"},
    {"plugins: { load = ( { name = \"a\"; isolation = \"process\";\n breaker_deaths = 0; } ); };\n",
     "2: plugins.load[0].breaker_deaths must be an integer 1..1000, got 0"},
    {"plugins: { load = ( { name = \"a\"; isolation = \"process\";\n seccomp = \"strict\"; } ); "
     "};\n",
     "2: plugins.load[0].seccomp must be \"off\", \"basic\" or \"no-network\", got \"strict\""},
    {"plugins: {\n  load = (\n    { name = \"demo\"; },\n    { name = \"other\"; },\n"
     "    { name = \"demo\"; file = \"/x/demo2.so\"; }\n  );\n};\n",
     "5: plugin names in plugins.load must be unique, got \"demo\" twice (lines 3 and 5)"},
    {"plugins: { load = ( { name = \"a\"; config = 5; } ); };\n",
     "1: plugins.load[0].config must be a group { ... }, got an integer"},
    {"plugins: { load = ( { name = \"a\";\n config = { x = { y = ( 1, 9007199254740993L ); }; "
     "}; } ); };\n",
     "2: plugins.load[0].config.x.y[1] must be an integer -2^53..2^53 to fit JSON, got "
     "9007199254740993"},
    /* http */
    {"http: { listen = \"localhost\"; };\n",
     "1: http.listen must be \"host:port\" with a port 0..65535, got \"localhost\""},
    {"http: { listen = \"127.0.0.1:70000\"; };\n",
     "1: http.listen must be \"host:port\" with a port 0..65535, got \"127.0.0.1:70000\""},
    {"http: { token = \"a secret\"; };\n",
     "1: http.token must be printable characters without spaces, got a string that is not"},
    {"http: {\n  token = \"abc\";\n  token_file = \"good.token\";\n};\n",
     "3: only one of http.token and http.token_file may be set, got both (lines 2 and 3)"},
    {"http: {\n  token_file = \"nope.token\";\n};\n",
     "2: http.token_file must be a readable file, got @D/nope.token: No such file or directory"},
    {"http: { token_file = \"empty.token\"; };\n",
     "1: http.token_file must hold one line of printable characters without spaces, got an "
     "empty file"},
    {"http: { token_file = \"spaced.token\"; };\n",
     "1: http.token_file must hold one line of printable characters without spaces, got "
     "something else"},
    {"redis: {\n  password = \"abc\";\n  password_file = \"good.token\";\n};\n",
     "3: only one of redis.password and redis.password_file may be set, got both (lines 2 and 3)"},
    {"redis: { password_file = \"nope.pw\"; };\n",
     "1: redis.password_file must be a readable file, got @D/nope.pw: No such file or directory"},
    {"redis: { password_file = \"empty.token\"; };\n",
     "1: redis.password_file must hold one line of printable characters, got an empty file"},
    {"redis: { password_file = \"twoline.pw\"; };\n",
     "1: redis.password_file must hold one line of printable characters, got something else"},
    {"http: { metrics_auth = \"no\"; };\n",
     "1: http.metrics_auth must be true or false, got a string"},
    {"http: { max_body = 1023; };\n",
     "1: http.max_body must be an integer 1024..67108864, got 1023"},
    {"http: { max_connections = 0; };\n",
     "1: http.max_connections must be an integer 1..100000, got 0"},
    {"http: {\n  listen = \"0.0.0.0:9464\";\n};\n",
     "2: http.listen 0.0.0.0:9464 is not a loopback address and no http.token or "
     "http.token_file is set: anyone who can reach it could submit, read and cancel tasks. Set "
     "a token, listen on a loopback address such as 127.0.0.1, or set http.allow_insecure = "
     "true to serve it anyway"},
    {"http: { listen = \"[::]:9464\"; };\n",
     "1: http.listen [::]:9464 is not a loopback address and no http.token or "
     "http.token_file is set: anyone who can reach it could submit, read and cancel tasks. Set "
     "a token, listen on a loopback address such as 127.0.0.1, or set http.allow_insecure = "
     "true to serve it anyway"},
    {"http: { listen = \"10.1.2.3:9464\"; token = \"\"; };\n",
     "1: http.listen 10.1.2.3:9464 is not a loopback address and no http.token or "
     "http.token_file is set: anyone who can reach it could submit, read and cancel tasks. Set "
     "a token, listen on a loopback address such as 127.0.0.1, or set http.allow_insecure = "
     "true to serve it anyway"},
    {"http: { allow_insecure = 1; };\n",
     "1: http.allow_insecure must be true or false, got an integer"},
    {"http: { max_connections_per_client = 0; };\n",
     "1: http.max_connections_per_client must be an integer 1..100000, got 0"},
    {"http: { request_timeout = 0.05; };\n",
     "1: http.request_timeout must be a number 0.1..3600, got 0.05"},
    {"http: { sse_max_queued = 1000; };\n",
     "1: http.sse_max_queued must be an integer 65536..2147483647, got 1000"},
    {"plugins: { init_timeout = 3601; };\n",
     "1: plugins.init_timeout must be a number 0..3600, got 3601"},
    {"http: { metrics_interval = -1; };\n",
     "1: http.metrics_interval must be a number 0..3600, got -1"},
    {"http: { metrics_max_handlers = 100001; };\n",
     "1: http.metrics_max_handlers must be an integer 0..100000, got 100001"},
};

/* s with every "@D" replaced by the scratch folder; a heap string. */
static char *expand(const char *s)
{
    char *out = xstrdup("");
    for (const char *p = s; *p;) {
        const char *at = strstr(p, "@D");
        size_t n = at ? (size_t)(at - p) : strlen(p);
        char *next = xasprintf("%s%.*s%s", out, (int)n, p, at ? tmp : "");
        free(out);
        out = next;
        p += n + (at ? 2 : 0);
    }
    return out;
}

static void test_bad_settings(void **state)
{
    (void)state;
    char *f;
    free(write_file("good.token", "abc\n"));
    free(write_file("empty.token", "\n"));
    free(write_file("twoline.pw", "hunter2\nhunter3\n"));
    free(write_file("spaced.token", "two words\n"));
    int failures = 0;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *b = &bad_cases[i];
        f = write_file("bad.conf", b->text);
        bgt_config c;
        char err[512];
        memset(&c, 0xa5, sizeof c);
        int rc = config_load(f, &c, err, sizeof err);
        char *tail = expand(b->want);
        char *want = xasprintf("%s:%s", f, tail);
        if (rc >= 0) {
            fprintf(stderr, "case %zu: loaded, expected: %s\n", i, want);
            failures++;
            config_free(&c);
        } else if (strcmp(err, want) != 0) {
            fprintf(stderr, "case %zu:\n  got:      %s\n  expected: %s\n", i, err, want);
            failures++;
        } else if (!all_zero(&c, sizeof c)) {
            fprintf(stderr, "case %zu: the config is not zeroed after the failure\n", i);
            failures++;
        }
        free(want);
        free(tail);
        free(f);
    }
    assert_int_equal(failures, 0);
}

/* Secrets never reach a message. */
static void test_secrets_not_in_messages(void **state)
{
    (void)state;
    char *f = write_file("secret.conf", "redis: { password = \"hunter2\"; };\n"
                                        "http: { token = \"bad token hunter3\"; };\n");
    bgt_config c;
    char err[512];
    assert_true(config_load(f, &c, err, sizeof err) < 0);
    assert_null(strstr(err, "hunter"));
    free(f);
}

/* Without a token, http.listen must be a loopback address, unless http.allow_insecure says
 * otherwise; a name is judged when the server resolves it. */
static void test_http_loopback(void **state)
{
    (void)state;
    const char *ok[] = {
        "http: { listen = \"0.0.0.0:9464\"; allow_insecure = true; };\n",
        "http: { listen = \"0.0.0.0:9464\"; token = \"t\"; };\n",
        "http: { listen = \"127.0.0.2:1\"; };\n",
        "http: { listen = \"[::1]:1\"; };\n",
        "http: { listen = \"[::ffff:127.0.0.1]:1\"; };\n",
        "http: { listen = \"localhost:1\"; };\n",
        "http: { listen = \"myhost.example:1\"; };\n",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char *f = write_file("loopback.conf", ok[i]);
        bgt_config c;
        char err[512];
        if (config_load(f, &c, err, sizeof err) < 0)
            fail_msg("%s: %s", ok[i], err);
        assert_int_equal(c.http_allow_insecure, i == 0);
        config_free(&c);
        free(f);
    }
}

static void test_values(void **state)
{
    (void)state;
    char *f = write_file("values.conf",
                         "redis: { url = \"/run/redis.sock\"; password = \"pw\";\n"
                         "         prefix = \"p1\"; };\n"
                         "host: { id = \"h-1\"; workers = 1024L; log_level = \"debug\";\n"
                         "        shutdown_grace = 0; };\n"
                         "tasks: { lease = 3600; heartbeat = 0.05; progress_interval = 0;\n"
                         "         retention = 31536000; max_attempts = 1000; backoff_base = 0;\n"
                         "         backoff_max = 0.0; max_args_bytes = 67108864L;\n"
                         "         max_result_bytes = 16; max_subtasks = 1000000;\n"
                         "         parallelism = 1; };\n"
                         "events: { maxlen = 1000000000; };\n"
                         "plugins: { autoload = true; required = false; load = []; };\n"
                         "http: { listen = \"[::1]:0\"; token = \"tok\"; metrics_auth = true;\n"
                         "        max_body = 67108864; max_connections = 100000;\n"
                         "        ui_dir = \"/srv/ui\";\n"
                         "        max_connections_per_client = 100000; request_timeout = 3600; };\n");
    bgt_config c;
    char err[512];
    int rc = config_load(f, &c, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    assert_string_equal(c.redis_url, "/run/redis.sock");
    assert_string_equal(c.redis_password, "pw");
    assert_string_equal(c.prefix, "p1");
    assert_string_equal(c.host_id, "h-1");
    assert_int_equal(c.workers, 1024);
    assert_string_equal(c.log_level, "debug");
    assert_true(c.shutdown_grace_s == 0);
    assert_true(c.lease_s == 3600 && c.heartbeat_s == 0.05 && c.progress_interval_s == 0);
    assert_true(c.retention_s == 31536000 && c.backoff_base_s == 0 && c.backoff_max_s == 0);
    assert_int_equal(c.max_attempts, 1000);
    assert_int_equal(c.max_args_bytes, 67108864);
    assert_int_equal(c.max_result_bytes, 16);
    assert_int_equal(c.max_subtasks, 1000000);
    assert_int_equal(c.parallelism, 1);
    assert_int_equal(c.events_maxlen, 1000000000);
    assert_true(c.plugins_autoload);
    assert_false(c.plugins_required);
    assert_int_equal(c.nplugins, 0);
    assert_string_equal(c.http_listen, "[::1]:0");
    assert_string_equal(c.http_token, "tok");
    assert_null(c.http_token_file);
    assert_null(c.redis_password_file);
    assert_true(c.http_metrics_auth);
    assert_int_equal(c.http_max_body, 67108864);
    assert_int_equal(c.http_max_connections, 100000);
    assert_string_equal(c.http_ui_dir, "/srv/ui");
    assert_int_equal(c.http_max_per_client, 100000);
    assert_true(c.http_request_timeout_s == 3600);
    config_free(&c);

    /* Empty strings mean "unset" where the schema says so. */
    free(f);
    f = write_file("empties.conf", "redis: { password = \"\"; };\nhost: { id = \"\"; };\n"
                                   "http: { listen = \"\"; token = \"\"; token_file = \"\";\n"
                                   "        ui_dir = \"\"; };\n"
                                   "plugins: { load = (); };\n");
    rc = config_load(f, &c, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    assert_null(c.redis_password);
    assert_null(c.host_id);
    assert_null(c.http_listen);
    assert_null(c.http_token);
    assert_null(c.http_token_file);
    assert_string_equal(c.http_ui_dir, ""); /* "" is no dashboard, not the default */
    assert_int_equal(c.nplugins, 0);
    config_free(&c);
    free(f);
}

/* The deployment examples load, each with its password file next to it, and their Redis
 * URLs parse as the shape they show. */
static void test_shipped_deployments(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        redis_kind kind;
        int min_replicas_ack;
    } ex[] = {
        {"redis-aof", REDIS_SERVER, 0},
        {"sentinel", REDIS_SENTINEL, 1},
        {"cluster", REDIS_CLUSTER, 1},
    };
    char *pw = write_file("deploy/redis.password", "a password\n");
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        char *src = xasprintf("config/examples/%s.conf", ex[i].name);
        char *dst = xasprintf("deploy/%s.conf", ex[i].name);
        char *path = copy_file(src, dst);
        bgt_config c;
        char err[512];
        if (config_load(path, &c, err, sizeof err) != 0)
            fail_msg("%s: %s", src, err);
        assert_string_equal(c.redis_password, "a password");
        assert_int_equal(c.min_replicas_ack, ex[i].min_replicas_ack);
        redis_addr a;
        if (redis_addr_parse(c.redis_url, &a, err, sizeof err) != 0)
            fail_msg("%s: redis.url: %s", src, err);
        assert_int_equal(a.kind, ex[i].kind);
        /* Protocol 2 runs on all three, a Redis Cluster too. */
        assert_int_equal(store_addr_check(&a, err, sizeof err), 0);
        redis_addr_free(&a);
        config_free(&c);
        free(path);
        free(dst);
        free(src);
    }
    free(pw);
}

/* redis.password_file: a relative path resolves against the config's folder; a final
 * newline is not part of the password; spaces are. */
static void test_password_file(void **state)
{
    (void)state;
    char *pw = write_file("pw/redis.pw", "a pass word\n");
    char *f = write_file("pw/x.conf", "redis: { password_file = \"redis.pw\"; };\n");
    bgt_config c;
    char err[512];
    int rc = config_load(f, &c, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    assert_string_equal(c.redis_password, "a pass word");
    assert_string_equal(c.redis_password_file, pw);
    config_free(&c);
    free(f);
    free(pw);
}

/* Relative paths resolve against the config's folder (canonical), whatever the current folder. */
static void test_relative_paths(void **state)
{
    (void)state;
    char *p2 = xasprintf("%s/rel/p2", tmp);
    char *f = write_file("rel/sub/x.conf",
                         "@include \"inc.conf\"\n"
                         "plugins: {\n"
                         "  load = (\n"
                         "    { name = \"a\"; },\n"
                         "    { name = \"b\"; file = \"lib/b.so\"; },\n"
                         "    { name = \"c\"; file = \"/nonexistent-abs/c.so\"; },\n"
                         "    { name = \"d\"; file = \"../p2/./d.so\"; }\n"
                         "  );\n"
                         "  dir = \"../p2/\";\n"
                         "};\n"
                         "http: { token_file = \"../tok\"; };\n");
    free(write_file("rel/sub/inc.conf", "host: { workers = 3; };\n"));
    free(write_file("rel/tok", "t0k\r\n"));
    assert_int_equal(mkdir(p2, 0755), 0);

    bgt_config c;
    char err[512];
    int rc = config_load(f, &c, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    assert_int_equal(c.workers, 3); /* @include is relative to the config's folder too */
    assert_string_equal(c.plugins_dir, p2);
    char *want = xasprintf("%s/a.so", p2);
    assert_string_equal(c.plugins[0].file, want);
    free(want);
    want = xasprintf("%s/rel/sub/lib/b.so", tmp);
    assert_string_equal(c.plugins[1].file, want);
    free(want);
    assert_string_equal(c.plugins[2].file, "/nonexistent-abs/c.so");
    want = xasprintf("%s/d.so", p2);
    assert_string_equal(c.plugins[3].file, want);
    free(want);
    want = xasprintf("%s/rel/tok", tmp);
    assert_string_equal(c.http_token_file, want);
    free(want);
    assert_string_equal(c.http_token, "t0k");
    config_free(&c);
    free(f);

    /* Read through a symlinked folder: paths use the real folder. A folder
     * that does not exist yet is kept as joined. */
    char *link = xasprintf("%s/rel/link", tmp);
    assert_int_equal(symlink("sub", link), 0);
    free(write_file("rel/sub/y.conf", "plugins: { load = ( { name = \"a\"; } ); };\n"));
    f = xasprintf("%s/y.conf", link);
    rc = config_load(f, &c, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    want = xasprintf("%s/rel/sub/plugins/a.so", tmp);
    assert_string_equal(c.plugins[0].file, want);
    free(want);
    config_free(&c);
    free(f);

    free(write_file("rel/sub/z.conf", "plugins: { dir = \"../missing/plugins\"; };\n"));
    f = xasprintf("%s/z.conf", link);
    rc = config_load(f, &c, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    want = xasprintf("%s/rel/sub/../missing/plugins", tmp);
    assert_string_equal(c.plugins_dir, want);
    free(want);
    config_free(&c);
    free(f);
    free(link);
    free(p2);
}

/* An error in an @include file names that file (by its full path) and its line. */
static void test_include_errors(void **state)
{
    (void)state;
    char *f = write_file("inc/main.conf", "host: { workers = 2; };\n\n@include \"part.conf\"\n");
    char *part = write_file("inc/part.conf", "\ntasks: { lease = 0; };\n");
    bgt_config c;
    char err[512];
    assert_int_equal(config_load(f, &c, err, sizeof err), -EINVAL);
    char *want = xasprintf("%s:2: tasks.lease must be a number 1..3600, got 0", part);
    assert_string_equal(err, want);
    free(want);
    free(part);

    part = write_file("inc/part.conf", "tasks: {\n  lease = ;\n};\n");
    assert_int_equal(config_load(f, &c, err, sizeof err), -EINVAL);
    want = xasprintf("%s:2: syntax error", part);
    assert_string_equal(err, want);
    free(want);
    free(part);
    free(f);
}

static void test_plugin_config_json(void **state)
{
    (void)state;
    char *f = write_file("json.conf",
                         "plugins: {\n"
                         "  load = (\n"
                         "    { name = \"a\";\n"
                         "      config = {\n"
                         "        s = \"text\"; i = -7; big = 5000000000L; f = 1.5; yes = true;\n"
                         "        no = false; arr = [1, 2, 3];\n"
                         "        list = (\"x\", 2, { k = \"v\"; }, ());\n"
                         "        nested = { deeper = { n = 0x10; }; empty = {}; };\n"
                         "      };\n"
                         "    },\n"
                         "    { name = \"b.c_d-e\"; config = {}; }\n"
                         "  );\n"
                         "};\n");
    bgt_config c;
    char err[512];
    int rc = config_load(f, &c, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    assert_int_equal(c.nplugins, 2);
    char *json = cJSON_PrintUnformatted(c.plugins[0].config);
    assert_string_equal(json, "{\"s\":\"text\",\"i\":-7,\"big\":5000000000,\"f\":1.5,\"yes\":true,"
                              "\"no\":false,\"arr\":[1,2,3],\"list\":[\"x\",2,{\"k\":\"v\"},[]],"
                              "\"nested\":{\"deeper\":{\"n\":16},\"empty\":{}}}");
    free(json);
    json = cJSON_PrintUnformatted(c.plugins[1].config);
    assert_string_equal(json, "{}");
    free(json);
    config_free(&c);
    free(f);
}

/* The isolation settings of an entry: defaults, sizes with units, every setting read. */
static void test_isolation_settings(void **state)
{
    (void)state;
    char *f = write_file("iso.conf",
                         "plugins: {\n"
                         "  load = (\n"
                         "    { name = \"plain\"; },\n"
                         "    { name = \"boxed\"; isolation = \"process\"; processes = 3;\n"
                         "      max_tasks_per_process = 100; max_rss = \"256M\";\n"
                         "      memory_max = 1073741824L; kill_grace = 0.5; breaker_deaths = 2;\n"
                         "      breaker_window = 10; breaker_pause = 2.5;\n"
                         "      seccomp = \"no-network\"; config = { k = 1; }; },\n"
                         "    { name = \"small\"; isolation = \"process\"; max_rss = \"64k\";\n"
                         "      memory_max = \"2G\"; }\n"
                         "  );\n"
                         "};\n");
    bgt_config c;
    char err[512];
    if (config_load(f, &c, err, sizeof err))
        fail_msg("%s", err);
    assert_int_equal(c.nplugins, 3);
    const isolation_conf *p = &c.plugins[0].iso, *b = &c.plugins[1].iso, *s = &c.plugins[2].iso;
    assert_int_equal(p->mode, ISOLATION_THREAD);
    assert_int_equal(p->processes, 0);
    assert_true(p->kill_grace_s == 5 && p->breaker_deaths == 5 && p->breaker_window_s == 60 &&
                p->breaker_pause_s == 30);
    assert_int_equal(p->seccomp, SECCOMP_OFF);
    assert_int_equal(b->mode, ISOLATION_PROCESS);
    assert_int_equal(b->processes, 3);
    assert_int_equal(b->max_tasks_per_process, 100);
    assert_int_equal(b->max_rss, 256u << 20);
    assert_int_equal(b->memory_max, 1u << 30);
    assert_true(b->kill_grace_s == 0.5 && b->breaker_deaths == 2 && b->breaker_window_s == 10 &&
                b->breaker_pause_s == 2.5);
    assert_int_equal(b->seccomp, SECCOMP_NO_NETWORK);
    assert_non_null(cJSON_GetObjectItem(c.plugins[1].config, "k"));
    assert_int_equal(s->max_rss, 64u << 10);
    assert_int_equal(s->memory_max, 2ull << 30);
    config_free(&c);
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_empty_file),
        cmocka_unit_test(test_shipped_dev),
        cmocka_unit_test(test_shipped_production),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_bad_settings),
        cmocka_unit_test(test_secrets_not_in_messages),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_http_loopback),
        cmocka_unit_test(test_password_file),
        cmocka_unit_test(test_shipped_deployments),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_include_errors),
        cmocka_unit_test(test_plugin_config_json),
        cmocka_unit_test(test_isolation_settings),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

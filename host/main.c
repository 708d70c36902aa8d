/*
 * main.c - bgtaskd: read the config, load the plugins, connect to Redis, run
 * the manager until SIGTERM/SIGINT, reload plugins on SIGHUP.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "config.h"
#include "http.h"
#include "manager.h"
#include "metrics.h"
#include "notify.h"
#include "plugin.h"
#include "registry.h"
#include "store.h"
#include "util.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bgtaskd [-c FILE] [options]\n"
            "\n"
            "Runs background tasks from Redis with the handler plugins named in FILE.\n"
            "\n"
            "  -c, --config FILE   the config file (default: built-in defaults)\n"
            "      --check-config  validate the config and the plugins, then exit\n"
            "      --redis URL     Redis address (overrides $BGTASK_REDIS and the config)\n"
            "      --host-id ID    this host's id (default: config, else hostname:pid)\n"
            "      --http ADDR     serve the HTTP API on ADDR, host:port (overrides http.listen)\n"
            "  -v, --verbose       log at debug level\n"
            "  -h, --help          this text\n"
            "      --version       print the version\n"
            "\n"
            "Signals: SIGTERM/SIGINT drain and exit (a second one releases running tasks at\n"
            "once); SIGHUP loads plugins added to the config since the start.\n"
            "Exit status: 0 after a clean shutdown, 1 on a config or plugin error.\n");
}

/* The loaded plugins, in load order. */
typedef struct loaded {
    struct bgt_plugin *head, *tail;
} loaded;

static bool is_loaded(const loaded *l, const char *path, const char *name)
{
    for (struct bgt_plugin *p = l->head; p; p = p->next)
        if ((path && strcmp(p->path, path) == 0) || (name && strcmp(p->name, name) == 0))
            return true;
    return false;
}

static void add_loaded(loaded *l, struct bgt_plugin *p)
{
    p->next = NULL;
    if (l->tail)
        l->tail->next = p;
    else
        l->head = p;
    l->tail = p;
}

/* Unload in reverse order of loading. */
static void unload_all(loaded *l)
{
    while (l->head) {
        struct bgt_plugin *prev = NULL, *p = l->head;
        while (p->next) {
            prev = p;
            p = p->next;
        }
        if (prev)
            prev->next = NULL;
        else
            l->head = NULL;
        plugin_unload(p);
    }
    l->tail = NULL;
}

/*
 * Load the plugins cfg names that are not loaded yet (and with autoload, every
 * .so of the plugins dir). Returns how many failed to load, or -1 when some
 * did and plugins.required is set.
 */
static int load_plugins(const bgt_config *cfg, registry *reg, loaded *l)
{
    char err[512];
    int failed = 0;
    for (size_t i = 0; i < cfg->nplugins; i++) {
        const plugin_conf *pc = &cfg->plugins[i];
        if (is_loaded(l, pc->file, pc->name))
            continue;
        struct bgt_plugin *p;
        if (plugin_load(pc->file, cfg->plugins_dir, pc->config, reg, host_api(), &p, err,
                        sizeof err) < 0) {
            log_err("%s", err);
            failed++;
            continue;
        }
        add_loaded(l, p);
        log_info("loaded plugin %s %s from %s (%zu handler(s))", p->name, p->version, p->path,
                 registry_count_plugin(reg, p));
    }
    if (cfg->plugins_autoload && cfg->plugins_dir) {
        char **paths = NULL;
        size_t n = 0;
        if (plugin_scan_dir(cfg->plugins_dir, &paths, &n, err, sizeof err) < 0) {
            log_err("%s", err);
            failed++;
        }
        for (size_t i = 0; i < n; i++) {
            char *real = realpath(paths[i], NULL);
            if (!is_loaded(l, real ? real : paths[i], NULL)) {
                struct bgt_plugin *p;
                if (plugin_load(paths[i], cfg->plugins_dir, NULL, reg, host_api(), &p, err,
                                sizeof err) < 0) {
                    log_err("%s", err);
                    failed++;
                } else if (is_loaded(l, NULL, p->name)) {
                    log_err("%s: a plugin named '%s' is already loaded", paths[i], p->name);
                    plugin_unload(p);
                    failed++;
                } else {
                    add_loaded(l, p);
                    log_info("autoloaded plugin %s %s from %s", p->name, p->version, p->path);
                }
            }
            free(real);
            free(paths[i]);
        }
        free(paths);
    }
    if (failed && cfg->plugins_required) {
        log_err("%d plugin(s) failed to load and plugins.required is set", failed);
        return -1;
    }
    return failed;
}

static char *default_host_id(void)
{
    char name[256];
    if (gethostname(name, sizeof name) < 0)
        strcpy(name, "localhost");
    name[sizeof name - 1] = '\0';
    return xasprintf("%s:%d", name, (int)getpid());
}

/* The address for logs: never the password. */
static void log_redis_addr(const redis_addr *a)
{
    char buf[700];
    log_info("redis at %s", redis_addr_describe(a, buf, sizeof buf));
}

/* SIGHUP: load plugins that were added to the config since the start. */
static void reload(const char *path, registry *reg, loaded *l, manager *m)
{
    if (!path) {
        log_warn("SIGHUP: no config file to reload");
        return;
    }
    bgt_config next;
    char err[512];
    if (config_load(path, &next, err, sizeof err) < 0) {
        log_err("SIGHUP: %s; keeping the running config", err);
        return;
    }
    unsigned before = reg->generation;
    next.plugins_required = false; /* a reload never stops a running host */
    int failed = load_plugins(&next, reg, l);
    config_free(&next);
    if (reg->generation != before) {
        manager_handlers_changed(m);
        log_notice("SIGHUP: handlers reloaded%s", failed ? "; some plugins failed (see above)" : "");
    } else if (failed) {
        log_warn("SIGHUP: no new handlers: the plugins that failed to load are named above");
    } else {
        log_notice("SIGHUP: no new plugins (settings other than plugins need a restart)");
    }
}

int main(int argc, char **argv)
{
    const char *conf_path = NULL, *redis_cli = NULL, *host_cli = NULL, *http_cli = NULL;
    bool check = false, verbose = false;
    enum { OPT_CHECK = 256, OPT_REDIS, OPT_HOST, OPT_VERSION, OPT_HTTP };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"check-config", no_argument, NULL, OPT_CHECK},
        {"redis", required_argument, NULL, OPT_REDIS}, {"host-id", required_argument, NULL, OPT_HOST},
        {"verbose", no_argument, NULL, 'v'},      {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION}, {"http", required_argument, NULL, OPT_HTTP},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': conf_path = optarg; break;
        case OPT_CHECK: check = true; break;
        case OPT_REDIS: redis_cli = optarg; break;
        case OPT_HOST: host_cli = optarg; break;
        case OPT_HTTP: http_cli = optarg; break;
        case 'v': verbose = true; break;
        case 'h': usage(stdout); return 0;
        case OPT_VERSION: printf("bgtaskd %s (plugin ABI %d.%d, protocol %d)\n", BGT_VERSION,
                                 BGT_ABI_MAJOR, BGT_ABI_MINOR, STORE_PROTOCOL_VERSION);
                          return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "bgtaskd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    bgt_config cfg;
    char err[512];
    if (conf_path) {
        if (config_load(conf_path, &cfg, err, sizeof err) < 0) {
            fprintf(stderr, "bgtaskd: %s\n", err);
            return 1;
        }
    } else {
        config_defaults(&cfg);
    }
    log_set_level(verbose ? BGT_LOG_DEBUG : log_level_parse(cfg.log_level ? cfg.log_level : "info"));

    redis_addr addr;
    if (redis_addr_resolve(redis_cli, cfg.redis_url, cfg.path, cfg.redis_password, &addr, err,
                           sizeof err) < 0 ||
        store_addr_check(&addr, err, sizeof err) < 0) {
        fprintf(stderr, "bgtaskd: %s\n", err);
        redis_addr_free(&addr);
        config_free(&cfg);
        return 1;
    }

    /* Signals are taken synchronously by this thread; every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    registry reg;
    registry_init(&reg);
    loaded plugins = {0};
    int status = 1;
    metrics *met = NULL;
    manager *m = NULL;
    http_server *http = NULL;
    store *submit_st = NULL;
    char *host_id = NULL;

    if (load_plugins(&cfg, &reg, &plugins) < 0)
        goto out;
    size_t nhandlers = registry_handlers(&reg, NULL, 0);
    if (check) {
        printf("%s: ok (%zu plugin(s), %zu handler(s))\n", conf_path ? conf_path : "defaults",
               cfg.nplugins, nhandlers);
        status = 0;
        goto out;
    }
    if (nhandlers == 0)
        log_warn("no handlers loaded: this host will claim nothing until SIGHUP loads some");

    host_id = xstrdup(host_cli ? host_cli : cfg.host_id ? cfg.host_id : NULL);
    if (!host_id)
        host_id = default_host_id();
    if (strlen(host_id) > 200 || strpbrk(host_id, " \t\r\n")) {
        log_err("host id '%s' must be at most 200 characters without spaces", host_id);
        goto out;
    }

    submit_st = store_open(&cfg, &addr);
    log_redis_addr(&addr);
    int rc = store_connect(submit_st);
    if (rc == -EPROTONOSUPPORT) {
        log_err("%s", store_errstr(submit_st));
        goto out;
    } else if (rc < 0) {
        log_warn("%s; the host will keep trying", store_errstr(submit_st));
    } else {
        char policy[64] = "";
        if (store_config_get(submit_st, "maxmemory-policy", policy, sizeof policy) == 0 &&
            strcmp(policy, "noeviction") != 0)
            log_warn("redis maxmemory-policy is '%s', not 'noeviction': an evicted key is a "
                     "lost task",
                     policy);
    }
    host_api_set_submit_store(submit_st);

    met = metrics_new();
    m = manager_new(&cfg, &addr, &reg, met, host_id);
    if (manager_start(m) < 0) {
        log_err("cannot start the worker threads");
        goto out;
    }
    log_notice("bgtaskd %s: host %s serving %zu handler(s) with %d worker(s), prefix '%s'",
               BGT_VERSION, host_id, nhandlers, cfg.workers, cfg.prefix);
    const char *http_at = http_cli && *http_cli ? http_cli : cfg.http_listen;
    if (http_at && *http_at) {
        http = http_start(&cfg, http_at, &addr, met, &reg, err, sizeof err);
        if (!http) {
            log_err("%s", err);
            manager_stop(m, true);
            goto out;
        }
        log_notice("http: serving on http://%s/%s", http_address(http),
                   cfg.http_token ? " (bearer token required)" : "");
    }

    notify_ready();
    double wd_every = notify_watchdog_interval(), wd_next = 0;
    int stops = 0;
    while (!manager_done(m)) {
        if (wd_every > 0 && mono_s() >= wd_next) {
            notify_watchdog();
            wd_next = mono_s() + wd_every;
        }
        struct timespec tick = {0, 100 * 1000000L};
        int sig = sigtimedwait(&sigs, NULL, &tick);
        if (sig == SIGTERM || sig == SIGINT) {
            if (stops == 0)
                notify_stopping();
            manager_stop(m, stops++ > 0);
        } else if (sig == SIGHUP) {
            notify_reloading();
            reload(conf_path, &reg, &plugins, m);
            notify_ready();
        }
    }
    status = 0;
    log_notice("stopped");
out:
    http_stop(http);
    if (manager_free(m)) {
        /* Handlers that ignored the stop request still run plugin code; their attempts
         * were released. Unloading the plugins under them would crash the exit. */
        log_warn("exiting with handler(s) still running; their attempts were released");
        _exit(status);
    }
    host_api_set_submit_store(NULL);
    store_free(submit_st);
    unload_all(&plugins);
    registry_destroy(&reg);
    metrics_free(met);
    redis_addr_free(&addr);
    config_free(&cfg);
    free(host_id);
    return status;
}

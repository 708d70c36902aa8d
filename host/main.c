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
#include "init_guard.h"
#include "isolate.h"
#include "manager.h"
#include "metrics.h"
#include "notify.h"
#include "plugin.h"
#include "registry.h"
#include "store.h"
#include "util.h"
#include "worker_main.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bgtaskd [-c FILE] [options]\n"
            "\n"
            "Runs background tasks from Redis with the handler plugins named in FILE.\n"
            "\n"
            "  -c, --config FILE   the config file (default: built-in defaults)\n"
            "      --check-config  validate the config and the plugins, then exit\n"
            "      --check-plugin FILE\n"
            "                      check a plugin file as the loader would (who could write it,\n"
            "                      its ABI, its init with its section of -c FILE) and list what it\n"
            "                      registers; exit 0 if it would load, 1 if not\n"
            "      --redis URL     Redis address (overrides $BGTASK_REDIS and the config)\n"
            "      --host-id ID    this host's id (default: config, else hostname:pid)\n"
            "      --http ADDR     serve the HTTP API on ADDR, host:port (overrides http.listen)\n"
            "  -v, --verbose       log at debug level\n"
            "  -h, --help          this text\n"
            "      --version       print the version\n"
            "\n"
            "Signals: SIGTERM/SIGINT drain and exit (a second one releases running tasks at\n"
            "once; while a plugin's init runs, a second one ends the host); SIGHUP loads\n"
            "plugins added to the config since the start.\n"
            "Exit status: 0 after a clean shutdown, 1 on a config or plugin error, 2 on a\n"
            "usage error.\n");
}

/* The loaded plugins, in load order. */
typedef struct loaded {
    struct bgt_plugin *head, *tail;
} loaded;

/* Whether a plugin of this file or name is loaded: in the host (l) or isolated (iso). */
static bool is_loaded(const loaded *l, iso_host *iso, const char *path, const char *name)
{
    for (struct bgt_plugin *p = l->head; p; p = p->next)
        if ((path && strcmp(p->path, path) == 0) || (name && strcmp(p->name, name) == 0))
            return true;
    return iso_loaded(iso, path, name);
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

/* A plugin's init that will not return, or a second stop signal during it: the main
 * thread is in the plugin's code, so only ending the process ends it. */
static void give_up(const char *why)
{
    log_err("%s", why);
    notify_stopping();
    _exit(1);
}

/* Open path (checked against the plugins folder dir) and run its init under the guard g. */
static int load_one(const char *path, const char *dir, const cJSON *config, registry *reg,
                    init_guard *g, struct bgt_plugin **out, char *err, size_t errlen)
{
    int rc = plugin_open(path, dir, out, err, errlen);
    if (rc < 0)
        return rc;
    init_guard_enter(g, (*out)->name, path);
    rc = plugin_init(*out, config, reg, host_api(), err, errlen);
    init_guard_leave(g);
    if (rc < 0)
        *out = NULL;
    return rc;
}

/*
 * Load the plugins cfg names that are not loaded yet (and with autoload, every
 * .so of the plugins dir), each init under the guard g. Returns how many
 * failed to load, or -1 when some did and plugins.required is set.
 */
static int load_plugins(const bgt_config *cfg, registry *reg, loaded *l, iso_host *iso,
                        init_guard *g)
{
    char err[1400];
    int failed = 0;
    for (size_t i = 0; i < cfg->nplugins; i++) {
        const plugin_conf *pc = &cfg->plugins[i];
        if (is_loaded(l, iso, pc->file, pc->name))
            continue;
        /* An isolated plugin's init runs in its worker, which iso bounds by
         * plugins.init_timeout itself (killing the worker, not the host). */
        if (pc->iso.mode == ISOLATION_PROCESS) {
            if (iso_load(iso, pc, err, sizeof err) < 0) {
                log_err("%s", err);
                failed++;
            } else {
                log_info("loaded plugin %s from %s in worker processes (isolation = process)",
                         pc->name, pc->file);
            }
            continue;
        }
        struct bgt_plugin *p;
        if (load_one(pc->file, cfg->plugins_dir, pc->config, reg, g, &p, err, sizeof err) < 0) {
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
            if (!is_loaded(l, iso, real ? real : paths[i], NULL)) {
                struct bgt_plugin *p;
                if (load_one(paths[i], cfg->plugins_dir, NULL, reg, g, &p, err, sizeof err) < 0) {
                    log_err("%s", err);
                    failed++;
                } else if (is_loaded(l, iso, NULL, p->name)) {
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

/* Warn about each master (every master of a cluster) that may evict keys: an evicted key
 * is a lost task. A master that cannot be asked (CONFIG renamed away) is not warned about. */
static void warn_eviction(store *st)
{
    store_master_text *pol;
    size_t n;
    if (store_config_get(st, "maxmemory-policy", &pol, &n) < 0)
        return;
    for (size_t i = 0; i < n; i++)
        if (strcmp(pol[i].text, "noeviction") != 0)
            log_warn("redis %s: maxmemory-policy is '%s', not 'noeviction': an evicted key is a "
                     "lost task",
                     pol[i].server, pol[i].text);
    store_master_texts_free(pol, n);
}

/* Load cfg's plugins while a guard reads the signals (sigs). Returns load_plugins' answer;
 * *stops gets how many SIGTERM/SIGINT came meanwhile. */
static int load_guarded(const bgt_config *cfg, registry *reg, loaded *l, iso_host *iso,
                        const sigset_t *sigs, int *stops)
{
    init_guard *g = init_guard_start(sigs, cfg->plugins_init_timeout_s, give_up);
    int rc = load_plugins(cfg, reg, l, iso, g);
    *stops = init_guard_stop(g);
    return rc;
}

/* SIGHUP: load plugins that were added to the config since the start. Returns how many
 * SIGTERM/SIGINT came while they loaded. */
static int reload(const char *path, registry *reg, loaded *l, iso_host *iso, manager *m,
                  const sigset_t *sigs)
{
    if (!path) {
        log_warn("SIGHUP: no config file to reload");
        return 0;
    }
    bgt_config next;
    char err[512];
    if (config_load(path, &next, err, sizeof err) < 0) {
        log_err("SIGHUP: %s; keeping the running config", err);
        return 0;
    }
    unsigned before = reg->generation;
    next.plugins_required = false; /* a reload never stops a running host */
    int stops;
    int failed = load_guarded(&next, reg, l, iso, sigs, &stops);
    config_free(&next);
    if (reg->generation != before) {
        mgr_handlers_changed(m);
        log_notice("SIGHUP: handlers reloaded%s", failed ? "; some plugins failed (see above)" : "");
    } else if (failed) {
        log_warn("SIGHUP: no new handlers: the plugins that failed to load are named above");
    } else {
        log_notice("SIGHUP: no new plugins (settings other than plugins need a restart)");
    }
    return stops;
}

/* How the plugin file of check_plugin is named in cfg: the config section of the
 * plugins.load entry that loads that same file, or NULL. */
static const cJSON *config_for(const bgt_config *cfg, const char *file)
{
    char *real = realpath(file, NULL);
    const cJSON *found = NULL;
    for (size_t i = 0; i < cfg->nplugins && real && !found; i++) {
        char *r = realpath(cfg->plugins[i].file, NULL);
        if (r && strcmp(r, real) == 0)
            found = cfg->plugins[i].config;
        free(r);
    }
    free(real);
    return found;
}

/*
 * bgtaskd --check-plugin FILE: what the loader checks of a plugin built
 * elsewhere (who could have written it, from cfg's plugins folder or its own;
 * its ABI and entry), then its init with its section of the config (or {})
 * under the init guard, listing what it registers. Prints on stdout, refusals
 * on stderr. Returns the exit status: 0 it would load, 1 it would not.
 */
static int check_plugin(const char *file, const bgt_config *cfg, const sigset_t *sigs)
{
    registry reg;
    registry_init(&reg);
    struct bgt_plugin *p = NULL;
    char err[1024];
    int status = 1;
    if (plugin_open(file, cfg->plugins_dir, &p, err, sizeof err) < 0)
        goto out;
    printf("%s: plugin %s %s, built for plugin ABI %u.%u (this host speaks %d.%d)\n", file,
           p->name, p->version, p->entry->abi_major, p->entry->abi_minor, BGT_ABI_MAJOR,
           BGT_ABI_MINOR);
    init_guard *g = init_guard_start(sigs, cfg->plugins_init_timeout_s, give_up);
    init_guard_enter(g, p->name, file);
    int rc = plugin_init(p, config_for(cfg, file), &reg, host_api(), err, sizeof err);
    init_guard_leave(g);
    init_guard_stop(g);
    if (rc < 0) {
        p = NULL; /* plugin_init unloaded it */
        goto out;
    }
    size_t n = registry_handlers(&reg, NULL, 0);
    const handler **hs = xcalloc(n + 1, sizeof *hs);
    n = registry_handlers(&reg, hs, n);
    for (size_t i = 0; i < n; i++)
        printf("%s: handler %s (%s)\n", file, hs[i]->name,
               hs[i]->def.kind == BGT_PARALLEL ? "parallel" : "single");
    free(hs);
    size_t nhooks = registry_hooks(&reg, NULL, 0);
    if (nhooks)
        printf("%s: %zu hook(s)\n", file, nhooks);
    if (n == 0)
        printf("%s: registers no handler: a host would load it and claim nothing for it\n",
               file);
    printf("%s: ok\n", file);
    status = 0;
out:
    if (status != 0)
        fprintf(stderr, "bgtaskd: %s\n", err);
    plugin_unload(p);
    registry_destroy(&reg);
    return status;
}

/* A breaker paused or resumed handlers: the manager refreshes what it claims. */
static void handlers_changed(void *m) { mgr_handlers_changed(m); }

int main(int argc, char **argv)
{
    /* A worker process of an isolated plugin: nothing of the host runs in it. */
    if (argc > 1 && strcmp(argv[1], WORKER_ARG) == 0)
        return worker_main(argc, argv);
    const char *conf_path = NULL, *redis_cli = NULL, *host_cli = NULL, *http_cli = NULL;
    const char *check_file = NULL;
    bool check = false, verbose = false;
    enum { OPT_CHECK = 256, OPT_REDIS, OPT_HOST, OPT_VERSION, OPT_HTTP, OPT_CHECK_PLUGIN };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"check-config", no_argument, NULL, OPT_CHECK},
        {"redis", required_argument, NULL, OPT_REDIS}, {"host-id", required_argument, NULL, OPT_HOST},
        {"verbose", no_argument, NULL, 'v'},      {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION}, {"http", required_argument, NULL, OPT_HTTP},
        {"check-plugin", required_argument, NULL, OPT_CHECK_PLUGIN},
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
        case OPT_CHECK_PLUGIN: check_file = optarg; break;
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

    /* Signals are taken synchronously (by this thread, or while plugins load by the init
     * guard's); every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (check_file) {
        host_api_set_submit_store(NULL, "bgtaskd --check-plugin submits nothing");
        int st = check_plugin(check_file, &cfg, &sigs);
        config_free(&cfg);
        return st;
    }

    redis_addr addr;
    if (redis_addr_resolve(redis_cli, cfg.redis_url, cfg.path, cfg.redis_password, &addr, err,
                           sizeof err) < 0 ||
        store_addr_check(&addr, err, sizeof err) < 0) {
        fprintf(stderr, "bgtaskd: %s\n", err);
        redis_addr_free(&addr);
        config_free(&cfg);
        return 1;
    }

    registry reg;
    registry_init(&reg);
    loaded plugins = {0};
    int status = 1;
    metrics *met = NULL;
    manager *m = NULL;
    http_server *http = NULL;
    store *submit_st = NULL;
    char *host_id = NULL;
    iso_host *iso = NULL;

    /* Connected before the plugins load, so that an init can bgt_submit (a check submits
     * nothing, and touches no Redis). */
    if (check) {
        host_api_set_submit_store(NULL, "bgtaskd --check-config submits nothing");
    } else {
        submit_st = store_open(&cfg, &addr);
        log_redis_addr(&addr);
        /* Connecting reads {P}:meta, adopting the shard count the data has (marking it is
         * the first claim's or submission's). */
        int rc = store_connect(submit_st);
        if (rc == -EPROTONOSUPPORT) {
            log_err("%s", store_errstr(submit_st));
            goto out;
        } else if (rc == 0 && store_shards(submit_st) != cfg.shards) {
            log_err("the bgtask data at this redis is spread over %d shards ({%s}:meta); "
                    "%s sets redis.shards = %d: set it to %d, or use another prefix or database",
                    store_shards(submit_st), cfg.prefix, conf_path ? conf_path : "the config",
                    cfg.shards, store_shards(submit_st));
            goto out;
        } else if (rc < 0) {
            log_warn("%s; the host will keep trying", store_errstr(submit_st));
        } else {
            warn_eviction(submit_st);
        }
        host_api_set_submit_store(submit_st, NULL);
    }

    met = metrics_new();
    iso = iso_host_new(&cfg, &reg, met);
    int stops = 0;
    if (load_guarded(&cfg, &reg, &plugins, iso, &sigs, &stops) < 0)
        goto out;
    if (stops) {
        log_notice("stopped before starting: a stop signal came while plugins loaded");
        status = 0;
        goto out;
    }
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

    m = mgr_new(&cfg, &addr, &reg, met, host_id);
    iso_set_notify(iso, handlers_changed, m);
    if (iso_start(iso) < 0 || mgr_start(m) < 0) {
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
            mgr_stop(m, true);
            goto out;
        }
        log_notice("http: serving on http://%s/%s", http_address(http),
                   cfg.http_token ? " (bearer token required)" : "");
    }

    notify_ready();
    double wd_every = notify_watchdog_interval(), wd_next = 0;
    while (!mgr_done(m)) {
        if (wd_every > 0 && mono_s() >= wd_next) {
            notify_watchdog();
            wd_next = mono_s() + wd_every;
        }
        struct timespec tick = {0, 100 * 1000000L};
        int sig = sigtimedwait(&sigs, NULL, &tick);
        /* Stop signals that came while a reload loaded plugins count as received now. */
        int got = sig == SIGTERM || sig == SIGINT;
        if (sig == SIGHUP) {
            notify_reloading();
            got = reload(conf_path, &reg, &plugins, iso, m, &sigs);
            if (!got)
                notify_ready();
        }
        for (; got > 0; got--) {
            if (stops == 0)
                notify_stopping();
            mgr_stop(m, stops++ > 0);
        }
    }
    status = 0;
    log_notice("stopped");
out:
    http_stop(http);
    if (iso)
        iso_set_notify(iso, NULL, NULL); /* the manager goes first */
    if (mgr_free(m)) {
        /* Handlers that ignored the stop request still run plugin code; their attempts
         * were released. Unloading the plugins under them would crash the exit. */
        log_warn("exiting with handler(s) still running; their attempts were released");
        _exit(status);
    }
    iso_host_free(iso);
    host_api_set_submit_store(NULL, "the host is stopping");
    store_free(submit_st);
    unload_all(&plugins);
    registry_destroy(&reg);
    metrics_free(met);
    redis_addr_free(&addr);
    config_free(&cfg);
    free(host_id);
    return status;
}

/*
 * config.h - the host's settings, read from a libconfig file. Only config.c
 * includes libconfig. Every setting has a default (config_defaults) and a
 * range; config_load reports the first error as "file:line: what was expected".
 */
#ifndef BGT_CONFIG_H
#define BGT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

/* Where a plugin's code runs. */
typedef enum isolation_mode {
    ISOLATION_THREAD = 0,  /* loaded into the host, run on its worker threads (the default) */
    ISOLATION_PROCESS = 1, /* loaded only by worker processes; the host runs proxies */
} isolation_mode;

/* A system call filter for worker processes. */
typedef enum seccomp_mode {
    SECCOMP_OFF = 0,
    SECCOMP_BASIC = 1,      /* refuse calls no handler needs (ptrace, mount, bpf, ...) */
    SECCOMP_NO_NETWORK = 2, /* basic, and sockets other than AF_UNIX */
} seccomp_mode;

/* The isolation settings of one plugin entry (all but mode need mode = process). */
typedef struct isolation_conf {
    isolation_mode mode;
    int processes;              /* worker processes, 1..1024; 0 = host.workers (default) */
    long max_tasks_per_process; /* calls before a worker is replaced; 0 = never (default) */
    size_t max_rss;             /* replace a worker left above this after a call; 0 = never */
    size_t memory_max;          /* hard limit per worker, bytes; 0 = none (default) */
    double kill_grace_s;        /* stop request to SIGKILL, 0..3600, default 5 */
    int breaker_deaths;         /* crash breaker: this many deaths, 1..1000, default 5 */
    double breaker_window_s;    /* within this window, 1..86400, default 60 */
    double breaker_pause_s;     /* pause claims for this long, 1..86400, default 30 */
    seccomp_mode seccomp;       /* default off */
} isolation_conf;

/* One entry of plugins.load. */
typedef struct plugin_conf {
    char *name;     /* plugin name; the file is <plugins.dir>/<name>.so unless file is set */
    char *file;     /* absolute path of the .so (resolved) */
    cJSON *config;  /* the plugin's own section as JSON (an object, maybe empty); owned */
    isolation_conf iso;
} plugin_conf;

typedef struct bgt_config {
    char *path;               /* the file read, or NULL for defaults only */

    /* redis */
    char *redis_url;          /* "redis://host:port/db", "unix:///path?db=N" or "/path.sock" */
    char *redis_password;     /* NULL for none; never logged (also read from redis_password_file) */
    char *redis_password_file; /* file holding the password (resolved path), or NULL */
    char *prefix;             /* key prefix, default "bgtask" */
    int min_replicas_ack;     /* submits and state changes wait for this many replicas, 0..64,
                                 default 0 (no wait) */
    double ack_timeout_s;     /* for at most this long, 0.01..60, default 1 */
    int shards;               /* shards of new data, 1..1024, default 16 */

    /* host */
    char *host_id;            /* NULL: hostname:pid */
    int workers;              /* worker threads, 1..1024, default 8 */
    char *log_level;          /* error|warning|notice|info|debug, default info */

    /* tasks */
    double lease_s;           /* 1..3600, default 15 */
    double heartbeat_s;       /* 0.05..lease/2, default 5 */
    double progress_interval_s; /* 0..60, default 1 */
    double retention_s;       /* finished tasks kept, 0..31536000, default 86400 */
    long retention_max;       /* finished tasks kept per handler, 0..1e9 (0: no limit), 100000 */
    int max_attempts;         /* default per handler, 1..1000, default 3 */
    double backoff_base_s;    /* first retry delay, 0..3600, default 1 */
    double backoff_max_s;     /* cap, >= backoff_base, default 300 */
    double shutdown_grace_s;  /* 0..86400, default 30 */
    double kill_grace_s;      /* after a timeout, how long a thread-mode handler may still run
                                 before its attempt ends without it: 0..3600, default 5 */
    size_t max_args_bytes;    /* 16..67108864, default 1048576 */
    size_t max_result_bytes;  /* 16..67108864, default 1048576 */
    int max_subtasks;         /* per task, 1..1000000, default 10000 */
    int parallelism;          /* default per parallel handler, 1..1024, default 8 */
    long events_maxlen;       /* events kept (about), 100..1000000000, default 100000 */
    /* A task's bgt_log lines kept with its record: */
    char *task_log_level;     /* tasks.log_level: the least severe kept, error..debug, info */
    int task_log_lines;       /* tasks.log_lines: most kept per task, 0 (none)..10000, 200 */
    size_t task_log_bytes;    /* tasks.log_bytes: most bytes kept per task, 1024..16777216,
                                 65536 */

    /* history */
    double history_window_s;  /* ended tasks counted per minute are kept this long, 0 (off)
                                 ..31622400, default 604800 (7 days) */

    /* plugins */
    char *plugins_dir;        /* absolute (relative paths resolve against the config's folder) */
    bool plugins_autoload;    /* load every .so in plugins_dir too, default false */
    bool plugins_required;    /* a plugin that fails to load stops the host, default true */
    double plugins_init_timeout_s; /* the longest a plugin's init may run, 0 = no limit,
                                      0..3600, default 60 */
    plugin_conf *plugins;     /* plugins.load, in order */
    size_t nplugins;

    /* http (off unless http_listen is set) */
    char *http_listen;        /* "127.0.0.1:9464"; NULL = off */
    char *http_token;         /* bearer token; NULL = none; never logged */
    char *http_token_file;    /* file holding the token (resolved path) */
    bool http_metrics_auth;   /* /metrics needs the token too, default false */
    size_t http_max_body;     /* 1024..67108864, default 1048576 */
    int http_max_connections; /* 1..100000, default 1024 */
    char *http_ui_dir;        /* the dashboard's files (absolute); "" = no dashboard;
                                 default config_default_ui_dir(), where make install puts them */
    int http_max_per_client;  /* connections of one client address, 1..100000, default 256 */
    double http_request_timeout_s; /* a whole request must arrive within, 0.1..3600, default 10 */
    size_t http_sse_max_queued; /* bytes queued for all SSE streams, 65536..2147483647,
                                   default 67108864 */
    double http_metrics_interval_s; /* /metrics reads Redis at most this often, 0..3600,
                                       default 5 */
    int http_metrics_max_handlers; /* queue gauges of handlers this host does not serve,
                                      0..100000, default 100 (the rest: handler="other") */
    bool http_allow_insecure; /* serve a non-loopback address without a token, default false */
} bgt_config;

/*
 * Why an HTTP address (%s) that is not a loopback one is refused without a
 * token: the config (http.listen) and the server (--http) say it alike.
 */
#define HTTP_INSECURE_FMT                                                                      \
    "%s is not a loopback address and no http.token or http.token_file is set: anyone who "   \
    "can reach it could submit, read and cancel tasks. Set a token, listen on a loopback "    \
    "address such as 127.0.0.1, or set http.allow_insecure = true to serve it anyway"

/* Fill c with the defaults (plugins_dir = "plugins" under the current folder). */
void config_defaults(bgt_config *c);

/* The dashboard's default folder: PREFIX/share/bgtask/ui for the running
 * PREFIX/bin/<program>. Returns a heap string the caller frees. */
char *config_default_ui_dir(void);

/*
 * Read path into c (which config_load initialises with the defaults first).
 * Returns 0, or a negative errno with err holding "path:line: message"
 * (or "path: message" when there is no line). On failure c holds nothing
 * that needs freeing. The caller frees a loaded c with config_free.
 */
int config_load(const char *path, bgt_config *c, char *err, size_t errlen);

/* Free everything c owns and zero it. */
void config_free(bgt_config *c);

#endif

/*
 * config.c - read the host's libconfig file into a bgt_config.
 *
 * Every known setting is one row of the table below: its "group.name", its
 * kind, its range and where it goes in bgt_config. The reader walks the file
 * rather than looking settings up, so a setting the table does not know is
 * reported (a typo must not silently fall back to a default). Settings that
 * depend on each other (heartbeat and lease, backoff base and cap, the HTTP
 * token and its file) are checked after the walk, when all values are known.
 * The first error stops the load; its message is "file:line: what was
 * expected, got what", and a failed load leaves nothing allocated. The
 * entries of plugins.load are read by config_plugin.c.
 *
 * Only this file and config_plugin.c include libconfig.
 */
#include "config.h"

#include <fcntl.h>
#include <libconfig.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_int.h"
#include "util.h"

/* A token file is read up to this size; a longer one is refused. */
#define TOKEN_MAX 4096

enum kind {
    K_INT,     /* int field; the value may be written as int or int64 */
    K_LONG,    /* long field; int or int64 */
    K_SIZE,    /* size_t field; int or int64 */
    K_DOUBLE,  /* double field; int, int64 or float */
    K_BOOL,    /* bool field */
    K_STRING,  /* char * field, heap copy */
    K_PLUGINS, /* plugins.load: the plugins / nplugins fields */
};

/* Flags of string settings. */
#define F_EMPTY_NULL 0x1 /* "" means unset: the field becomes NULL */
#define F_SECRET 0x2     /* never put the value in a message */
#define F_PATH 0x4       /* a path: a relative one resolves against the config's folder */
#define F_EMPTY_OFF 0x8  /* "" is a value of its own: the feature is off */

typedef struct spec {
    const char *name;               /* "group.setting" as written in messages */
    enum kind kind;
    double min, max;                /* numbers: the inclusive range */
    size_t off;                     /* offsetof(bgt_config, field) */
    unsigned flags;                 /* strings: F_* */
    bool (*valid)(const char *s);   /* strings: an extra check of a non-empty value */
    const char *expect;             /* strings: what valid() accepts, for the message */
} spec;

static bool log_level_valid(const char *s) { return log_level_parse(s) >= 0; }
static bool prefix_valid(const char *s);
static bool host_id_valid(const char *s);
static bool listen_valid(const char *s);
static bool token_valid(const char *s);
static bool password_valid(const char *s);

#define OFF(field) offsetof(bgt_config, field)

/* The schema. Ranges are those documented in config.h. */
static const spec specs[] = {
    {"redis.url", K_STRING, 0, 0, OFF(redis_url), 0, NULL, NULL},
    {"redis.password", K_STRING, 0, 0, OFF(redis_password), F_EMPTY_NULL | F_SECRET, password_valid,
     "printable characters"},
    {"redis.password_file", K_STRING, 0, 0, OFF(redis_password_file), F_EMPTY_NULL | F_PATH, NULL,
     NULL},
    {"redis.min_replicas_ack", K_INT, 0, 64, OFF(min_replicas_ack), 0, NULL, NULL},
    {"redis.ack_timeout", K_DOUBLE, 0.01, 60, OFF(ack_timeout_s), 0, NULL, NULL},
    {"redis.prefix", K_STRING, 0, 0, OFF(prefix), 0, prefix_valid,
     "1..64 characters without spaces, braces or control characters"},
    {"redis.shards", K_INT, 1, 1024, OFF(shards), 0, NULL, NULL},

    {"host.id", K_STRING, 0, 0, OFF(host_id), F_EMPTY_NULL, host_id_valid,
     "1..128 characters without spaces or control characters"},
    {"host.workers", K_INT, 1, 1024, OFF(workers), 0, NULL, NULL},
    {"host.log_level", K_STRING, 0, 0, OFF(log_level), 0, log_level_valid,
     "one of error, warning, notice, info, debug"},
    {"host.shutdown_grace", K_DOUBLE, 0, 86400, OFF(shutdown_grace_s), 0, NULL, NULL},

    {"tasks.lease", K_DOUBLE, 1, 3600, OFF(lease_s), 0, NULL, NULL},
    /* The upper bound is lease/2, checked once both are known. */
    {"tasks.heartbeat", K_DOUBLE, 0.05, 1800, OFF(heartbeat_s), 0, NULL, NULL},
    {"tasks.progress_interval", K_DOUBLE, 0, 60, OFF(progress_interval_s), 0, NULL, NULL},
    {"tasks.retention", K_DOUBLE, 0, 31536000, OFF(retention_s), 0, NULL, NULL},
    {"tasks.retention_max", K_LONG, 0, 1000000000, OFF(retention_max), 0, NULL, NULL},
    {"tasks.max_attempts", K_INT, 1, 1000, OFF(max_attempts), 0, NULL, NULL},
    {"tasks.backoff_base", K_DOUBLE, 0, 3600, OFF(backoff_base_s), 0, NULL, NULL},
    /* Also >= backoff_base, checked once both are known. */
    {"tasks.backoff_max", K_DOUBLE, 0, 86400, OFF(backoff_max_s), 0, NULL, NULL},
    {"tasks.max_args_bytes", K_SIZE, 16, 67108864, OFF(max_args_bytes), 0, NULL, NULL},
    {"tasks.max_result_bytes", K_SIZE, 16, 67108864, OFF(max_result_bytes), 0, NULL, NULL},
    {"tasks.max_subtasks", K_INT, 1, 1000000, OFF(max_subtasks), 0, NULL, NULL},
    {"tasks.parallelism", K_INT, 1, 1024, OFF(parallelism), 0, NULL, NULL},
    {"tasks.kill_grace", K_DOUBLE, 0, 3600, OFF(kill_grace_s), 0, NULL, NULL},
    {"tasks.log_level", K_STRING, 0, 0, OFF(task_log_level), 0, log_level_valid,
     "one of error, warning, notice, info, debug"},
    {"tasks.log_lines", K_INT, 0, 10000, OFF(task_log_lines), 0, NULL, NULL},
    {"tasks.log_bytes", K_SIZE, 1024, 16777216, OFF(task_log_bytes), 0, NULL, NULL},

    {"events.maxlen", K_LONG, 100, 1000000000, OFF(events_maxlen), 0, NULL, NULL},

    {"history.window", K_DOUBLE, 0, 31622400, OFF(history_window_s), 0, NULL, NULL},

    {"plugins.dir", K_STRING, 0, 0, OFF(plugins_dir), F_PATH, NULL, NULL},
    {"plugins.autoload", K_BOOL, 0, 0, OFF(plugins_autoload), 0, NULL, NULL},
    {"plugins.required", K_BOOL, 0, 0, OFF(plugins_required), 0, NULL, NULL},
    {"plugins.init_timeout", K_DOUBLE, 0, 3600, OFF(plugins_init_timeout_s), 0, NULL, NULL},
    {"plugins.load", K_PLUGINS, 0, 0, 0, 0, NULL, NULL},

    {"http.listen", K_STRING, 0, 0, OFF(http_listen), F_EMPTY_NULL, listen_valid,
     "\"host:port\" with a port 0..65535"},
    {"http.token", K_STRING, 0, 0, OFF(http_token), F_EMPTY_NULL | F_SECRET, token_valid,
     "printable characters without spaces"},
    {"http.token_file", K_STRING, 0, 0, OFF(http_token_file), F_EMPTY_NULL | F_PATH, NULL, NULL},
    {"http.metrics_auth", K_BOOL, 0, 0, OFF(http_metrics_auth), 0, NULL, NULL},
    {"http.max_body", K_SIZE, 1024, 67108864, OFF(http_max_body), 0, NULL, NULL},
    {"http.max_connections", K_INT, 1, 100000, OFF(http_max_connections), 0, NULL, NULL},
    {"http.ui_dir", K_STRING, 0, 0, OFF(http_ui_dir), F_EMPTY_OFF | F_PATH, NULL, NULL},
    {"http.max_connections_per_client", K_INT, 1, 100000, OFF(http_max_per_client), 0, NULL, NULL},
    {"http.request_timeout", K_DOUBLE, 0.1, 3600, OFF(http_request_timeout_s), 0, NULL, NULL},
    {"http.sse_max_queued", K_SIZE, 65536, 2147483647, OFF(http_sse_max_queued), 0, NULL, NULL},
    {"http.metrics_interval", K_DOUBLE, 0, 3600, OFF(http_metrics_interval_s), 0, NULL, NULL},
    {"http.metrics_max_handlers", K_INT, 0, 100000, OFF(http_metrics_max_handlers), 0, NULL, NULL},
    {"http.allow_insecure", K_BOOL, 0, 0, OFF(http_allow_insecure), 0, NULL, NULL},
};

#define NSPECS (sizeof specs / sizeof specs[0])

static const char *const groups[] = {"redis", "host",    "tasks", "events",
                                     "history", "plugins", "http"};


/* True if s is non-empty, at most max bytes, with no spaces or control characters. */
static bool word_valid(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return false;
    return true;
}

/* A key prefix: a word without braces, which would change the keys' hash tags. */
static bool prefix_valid(const char *s)
{
    return word_valid(s, 64) && !strchr(s, '{') && !strchr(s, '}');
}

static bool host_id_valid(const char *s) { return word_valid(s, 128); }

/* A Redis password: printable characters (spaces allowed), at most TOKEN_MAX bytes. */
static bool password_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TOKEN_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < ' ' || s[i] == 0x7f)
            return false;
    return true;
}

/* A bearer token: printable ASCII without spaces (what an HTTP header can carry). */
static bool token_valid(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < 0x21 || *s > 0x7e)
            return false;
    return true;
}

/* "host:port": whatever precedes the last colon, then a decimal port 0..65535. */
static bool listen_valid(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || !colon[1] || strlen(colon + 1) > 5)
        return false;
    long port = 0;
    for (const char *p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        port = port * 10 + (*p - '0');
    }
    return port <= 65535;
}

/* Format the message into l->err; returns -EINVAL so callers can `return fail_at(...)`. */
static int vfail(loader *l, const config_setting_t *s, const char *fmt, va_list ap)
{
    if (!l->err || l->errlen == 0)
        return -EINVAL;
    /* Settings of the file itself have no source file; those of an @include
     * file have its name as written, relative to the include folder. */
    const char *inc = s ? config_setting_source_file(s) : NULL;
    int n;
    if (inc)
        n = snprintf(l->err, l->errlen, "%s%s%s:%u: ", inc[0] == '/' ? "" : l->dir,
                     inc[0] == '/' ? "" : "/", inc, config_setting_source_line(s));
    else if (s)
        n = snprintf(l->err, l->errlen, "%s:%u: ", l->path, config_setting_source_line(s));
    else
        n = snprintf(l->err, l->errlen, "%s: ", l->path);
    if (n < 0 || (size_t)n >= l->errlen)
        return -EINVAL;
    vsnprintf(l->err + n, l->errlen - (size_t)n, fmt, ap);
    return -EINVAL;
}

__attribute__((format(printf, 3, 4))) static int fail_at(loader *l, const config_setting_t *s,
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(l, s, fmt, ap);
    va_end(ap);
    return rc;
}

int config__fail(loader *l, const config_setting_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(l, s, fmt, ap);
    va_end(ap);
    return rc;
}

/* What a setting is, for "got ..." in messages (never its value: it may be a secret). */
static const char *type_name(const config_setting_t *s)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_GROUP: return "a group";
    case CONFIG_TYPE_INT: return "an integer";
    case CONFIG_TYPE_INT64: return "an integer";
    case CONFIG_TYPE_FLOAT: return "a floating-point number";
    case CONFIG_TYPE_STRING: return "a string";
    case CONFIG_TYPE_BOOL: return "a boolean";
    case CONFIG_TYPE_ARRAY: return "an array";
    case CONFIG_TYPE_LIST: return "a list";
    default: return "nothing";
    }
}

/*
 * The absolute form of path p for the config folder dir. A relative p is
 * joined to dir. The folder part is then canonicalised with realpath when it
 * exists (so "../build/plugins" reads as "/repo/build/plugins"), but the last
 * component is kept as written: a plugin file may not exist yet, and a
 * symlinked .so keeps the name the user gave it. Returns a heap string.
 */
static char *resolve_path(const char *dir, const char *p)
{
    char *joined = p[0] == '/' ? xstrdup(p) : xasprintf("%s/%s", dir, p);
    size_t n = strlen(joined);
    while (n > 1 && joined[n - 1] == '/')
        joined[--n] = '\0';
    char *slash = strrchr(joined, '/');
    const char *tail = slash + 1;
    char *out = NULL;
    if (strcmp(tail, ".") == 0 || strcmp(tail, "..") == 0 || !*tail) {
        /* Nothing to keep as written: canonicalise the whole path. */
        out = realpath(joined, NULL);
    } else {
        *slash = '\0';
        char *head = realpath(slash == joined ? "/" : joined, NULL);
        *slash = '/';
        if (head) {
            out = xasprintf("%s/%s", strcmp(head, "/") == 0 ? "" : head, tail);
            free(head);
        }
    }
    if (!out)
        return joined;
    free(joined);
    return out;
}

const char *config__type_name(const config_setting_t *s) { return type_name(s); }

char *config__resolve_path(const char *dir, const char *p) { return resolve_path(dir, p); }

/*
 * Read an integer setting s (int or int64) into *v; refuses other types.
 * libconfig 1.5 keeps a literal of 2^31 or more without the L suffix as a
 * wrapped 32-bit int; every range here ends below 2^31, and the shipped files
 * say to write such values with L.
 */
static int get_integer(loader *l, const config_setting_t *s, const spec *sp, long long *v)
{
    int t = config_setting_type(s);
    if (t == CONFIG_TYPE_INT)
        *v = config_setting_get_int(s);
    else if (t == CONFIG_TYPE_INT64)
        *v = config_setting_get_int64(s);
    else
        return fail_at(l, s, "%s must be an integer %.0f..%.0f, got %s", sp->name, sp->min,
                       sp->max, type_name(s));
    if (*v < (long long)sp->min || *v > (long long)sp->max)
        return fail_at(l, s, "%s must be an integer %.0f..%.0f, got %lld", sp->name, sp->min,
                       sp->max, *v);
    return 0;
}

/* Read setting s described by sp into l->c. */
static int read_setting(loader *l, const config_setting_t *s, const spec *sp)
{
    char *field = (char *)l->c + sp->off;
    int t = config_setting_type(s);
    long long iv;
    int rc;

    switch (sp->kind) {
    case K_INT:
        if ((rc = get_integer(l, s, sp, &iv)) < 0)
            return rc;
        *(int *)(void *)field = (int)iv;
        return 0;
    case K_LONG:
        if ((rc = get_integer(l, s, sp, &iv)) < 0)
            return rc;
        *(long *)(void *)field = (long)iv;
        return 0;
    case K_SIZE:
        if ((rc = get_integer(l, s, sp, &iv)) < 0)
            return rc;
        *(size_t *)(void *)field = (size_t)iv;
        return 0;
    case K_DOUBLE: {
        double v;
        if (t == CONFIG_TYPE_INT)
            v = config_setting_get_int(s);
        else if (t == CONFIG_TYPE_INT64)
            v = (double)config_setting_get_int64(s);
        else if (t == CONFIG_TYPE_FLOAT)
            v = config_setting_get_float(s);
        else
            return fail_at(l, s, "%s must be a number %.15g..%.15g, got %s", sp->name, sp->min,
                           sp->max, type_name(s));
        /* Written so that NaN fails too. */
        if (!(v >= sp->min && v <= sp->max))
            return fail_at(l, s, "%s must be a number %.15g..%.15g, got %.15g", sp->name, sp->min,
                           sp->max, v);
        *(double *)(void *)field = v;
        return 0;
    }
    case K_BOOL:
        if (t != CONFIG_TYPE_BOOL)
            return fail_at(l, s, "%s must be true or false, got %s", sp->name, type_name(s));
        *(bool *)(void *)field = config_setting_get_bool(s) != 0;
        return 0;
    case K_STRING: {
        if (t != CONFIG_TYPE_STRING)
            return fail_at(l, s, "%s must be a string, got %s", sp->name, type_name(s));
        const char *v = config_setting_get_string(s);
        char **dst = (char **)(void *)field;
        if (!*v && (sp->flags & F_EMPTY_OFF)) {
            free(*dst);
            *dst = xstrdup("");
            return 0;
        }
        if (!*v) {
            if (!(sp->flags & F_EMPTY_NULL))
                return fail_at(l, s, "%s must be a non-empty string, got \"\"", sp->name);
            free(*dst);
            *dst = NULL;
            return 0;
        }
        if (sp->valid && !sp->valid(v)) {
            if (sp->flags & F_SECRET)
                return fail_at(l, s, "%s must be %s, got a string that is not", sp->name,
                               sp->expect);
            return fail_at(l, s, "%s must be %s, got \"%s\"", sp->name, sp->expect, v);
        }
        free(*dst);
        *dst = (sp->flags & F_PATH) ? resolve_path(l->dir, v) : xstrdup(v);
        return 0;
    }
    case K_PLUGINS:
        return config__read_plugins(l, s);
    }
    return -EINVAL;
}

/* The spec row for "group.name", or NULL. */
static const spec *find_spec(const char *group, const char *name)
{
    size_t gl = strlen(group);
    for (size_t i = 0; i < NSPECS; i++)
        if (strncmp(specs[i].name, group, gl) == 0 && specs[i].name[gl] == '.' &&
            strcmp(specs[i].name + gl + 1, name) == 0)
            return &specs[i];
    return NULL;
}

/* Index of the spec named name (which must exist). */
static size_t spec_index(const char *name)
{
    for (size_t i = 0; i < NSPECS; i++)
        if (strcmp(specs[i].name, name) == 0)
            return i;
    abort(); /* a name missing from the table is a bug in this file */
}

/* Walk the root: every member must be a known group of known settings. */
static int read_root(loader *l, const config_setting_t *root)
{
    int n = config_setting_length(root);
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = config_setting_get_elem(root, (unsigned)i);
        const char *gn = config_setting_name(g);
        bool known = false;
        for (size_t k = 0; k < sizeof groups / sizeof groups[0]; k++)
            known = known || strcmp(gn, groups[k]) == 0;
        if (!known)
            return fail_at(l, g, "unknown setting %s (expected redis, host, tasks, events, "
                                 "plugins or http)", gn);
        if (config_setting_type(g) != CONFIG_TYPE_GROUP)
            return fail_at(l, g, "%s must be a group { ... }, got %s", gn, type_name(g));
        int m = config_setting_length(g);
        for (int j = 0; j < m; j++) {
            const config_setting_t *s = config_setting_get_elem(g, (unsigned)j);
            const spec *sp = find_spec(gn, config_setting_name(s));
            if (!sp)
                return fail_at(l, s, "unknown setting %s.%s", gn, config_setting_name(s));
            int rc = read_setting(l, s, sp);
            if (rc < 0)
                return rc;
            l->seen[sp - specs] = s;
        }
    }
    return 0;
}

/* The line to blame for a check of two settings: a if it was set, else b (else none). */
static const config_setting_t *blame(const loader *l, const char *a, const char *b)
{
    const config_setting_t *s = l->seen[spec_index(a)];
    return s ? s : l->seen[spec_index(b)];
}

/*
 * Read a secret (the HTTP token, the Redis password) from the file that the
 * setting `name` names (path) into *out: one line of at most TOKEN_MAX bytes
 * that valid() accepts (expect says what that is); a final newline is not
 * part of it.
 */
static int read_secret_file(loader *l, const char *name, const char *path,
                            bool (*valid)(const char *), const char *expect, char **out)
{
    const config_setting_t *s = l->seen[spec_index(name)];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail_at(l, s, "%s must be a readable file, got %s: %s", name, path,
                       strerror(errno));
    char *buf = xmalloc(TOKEN_MAX + 2);
    size_t n = 0;
    ssize_t r;
    int rc = 0;
    while (n < TOKEN_MAX + 1 && (r = read(fd, buf + n, TOKEN_MAX + 1 - n)) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = fail_at(l, s, "%s must be a readable file, got %s: %s", name, path,
                         strerror(errno));
            goto out;
        }
        n += (size_t)r;
    }
    if (n > TOKEN_MAX) {
        rc = fail_at(l, s, "%s must hold at most %d bytes, got %s with more", name, TOKEN_MAX,
                     path);
        goto out;
    }
    /* Editors and `echo` end the file with a newline: it is not part of the secret. */
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    if (strlen(buf) != n || !valid(buf)) {
        rc = fail_at(l, s, "%s must hold one line of %s, got %s", name, expect,
                     n ? "something else" : "an empty file");
        goto out;
    }
    *out = buf;
    buf = NULL;
out:
    if (buf)
        memset(buf, 0, TOKEN_MAX + 2); /* do not leave a secret in freed memory */
    free(buf);
    close(fd);
    return rc;
}

/* Settings a and b (a secret and its file) must not both be set (to non-empty values). */
static int one_of(loader *l, const char *a, const char *b, bool both)
{
    const config_setting_t *t = l->seen[spec_index(a)];
    const config_setting_t *f = l->seen[spec_index(b)];
    if (!both || !t || !f)
        return 0;
    const config_setting_t *later =
        config_setting_source_line(t) > config_setting_source_line(f) ? t : f;
    return fail_at(l, later, "only one of %s and %s may be set, got both (lines %u and %u)", a, b,
                   config_setting_source_line(t), config_setting_source_line(f));
}

/* The checks that need several settings, and the values derived from others. */
static int finish(loader *l)
{
    bgt_config *c = l->c;
    if (c->heartbeat_s > c->lease_s / 2)
        return fail_at(l, blame(l, "tasks.heartbeat", "tasks.lease"),
                       "tasks.heartbeat must be at most tasks.lease/2 = %.15g, got %.15g%s",
                       c->lease_s / 2, c->heartbeat_s,
                       l->seen[spec_index("tasks.heartbeat")] ? "" : " (the default)");
    if (c->backoff_max_s < c->backoff_base_s)
        return fail_at(l, blame(l, "tasks.backoff_max", "tasks.backoff_base"),
                       "tasks.backoff_max must be at least tasks.backoff_base = %.15g, got %.15g%s",
                       c->backoff_base_s, c->backoff_max_s,
                       l->seen[spec_index("tasks.backoff_max")] ? "" : " (the default)");
    int rc;
    if ((rc = one_of(l, "http.token", "http.token_file", c->http_token && c->http_token_file)) <
            0 ||
        (rc = one_of(l, "redis.password", "redis.password_file",
                     c->redis_password && c->redis_password_file)) < 0)
        return rc;
    if (c->http_token_file &&
        (rc = read_secret_file(l, "http.token_file", c->http_token_file, token_valid,
                               "printable characters without spaces", &c->http_token)) < 0)
        return rc;
    if (c->redis_password_file &&
        (rc = read_secret_file(l, "redis.password_file", c->redis_password_file,
                               password_valid, "printable characters", &c->redis_password)) < 0)
        return rc;
    if (c->http_listen && !c->http_token && !c->http_allow_insecure) {
        /* A name is resolved (and judged) when the server starts; an address can be judged
         * now, so --check-config catches it. */
        char host[256];
        const char *colon = strrchr(c->http_listen, ':');
        const char *h = c->http_listen[0] == '[' ? c->http_listen + 1 : c->http_listen;
        size_t n = (size_t)(colon - h) - (c->http_listen[0] == '[' && colon[-1] == ']');
        snprintf(host, sizeof host, "%.*s", (int)(n < sizeof host ? n : sizeof host - 1), h);
        if (host_is_loopback(host) == 0)
            return fail_at(l, l->seen[spec_index("http.listen")], "http.listen " HTTP_INSECURE_FMT,
                           c->http_listen);
    }
    for (size_t i = 0; i < c->nplugins; i++)
        if (!c->plugins[i].file)
            c->plugins[i].file = xasprintf("%s/%s.so", c->plugins_dir, c->plugins[i].name);
    return 0;
}

/* plugins_dir's default: "plugins" under base (or under the current folder if base is NULL). */
static char *default_plugins_dir(const char *base)
{
    if (base)
        return xasprintf("%s/plugins", base);
    char *cwd = getcwd(NULL, 0);
    char *dir = cwd ? xasprintf("%s/plugins", cwd) : xstrdup("plugins");
    free(cwd);
    return dir;
}

/*
 * Where make install puts the dashboard beside the executable running:
 * PREFIX/share/bgtask/ui for PREFIX/bin/bgtaskd, whatever PREFIX the build
 * was installed with. Found at run time, so no compiled-in path can disagree
 * with where the files went.
 */
char *config_default_ui_dir(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return xstrdup("/usr/local/share/bgtask/ui");
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');     /* PREFIX/bin/bgtaskd -> PREFIX/bin */
    if (slash)
        *slash = '\0';
    slash = strrchr(exe, '/');           /* PREFIX/bin -> PREFIX */
    if (slash)
        *slash = '\0';
    return xasprintf("%s/share/bgtask/ui", exe);
}

/*
 * Fill c with the defaults of config.h. Every string is a heap copy, so
 * config_free handles a default and a loaded config alike.
 */
void config_defaults(bgt_config *c)
{
    memset(c, 0, sizeof *c);
    c->redis_url = xstrdup("redis://127.0.0.1:6379/0");
    c->ack_timeout_s = 1.0;
    c->prefix = xstrdup("bgtask");
    c->shards = 16;
    c->workers = 8;
    c->log_level = xstrdup("info");
    c->task_log_level = xstrdup("info");
    c->task_log_lines = 200;
    c->task_log_bytes = 65536;
    c->lease_s = 15;
    c->heartbeat_s = 5;
    c->progress_interval_s = 1;
    c->retention_s = 86400;
    c->retention_max = 100000;
    c->max_attempts = 3;
    c->backoff_base_s = 1;
    c->backoff_max_s = 300;
    c->shutdown_grace_s = 30;
    c->max_args_bytes = 1048576;
    c->max_result_bytes = 1048576;
    c->max_subtasks = 10000;
    c->parallelism = 8;
    c->kill_grace_s = 5;
    c->events_maxlen = 100000;
    c->history_window_s = 604800;
    c->plugins_dir = default_plugins_dir(NULL);
    c->plugins_autoload = false;
    c->plugins_required = true;
    c->plugins_init_timeout_s = 60;
    c->http_max_body = 1048576;
    c->http_max_connections = 1024;
    c->http_ui_dir = config_default_ui_dir();
    c->http_max_per_client = 256;
    c->http_request_timeout_s = 10;
    c->http_sse_max_queued = 67108864;
    c->http_metrics_interval_s = 5;
    c->http_metrics_max_handlers = 100;
}

/* The folder of path, absolute and canonical; NULL with errno set if it cannot be resolved. */
static char *folder_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash)
        dir = xstrdup(".");
    else if (slash == path)
        dir = xstrdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    if (!dir)
        return NULL;
    char *real = realpath(dir, NULL);
    int e = errno;
    free(dir);
    errno = e;
    return real;
}

/*
 * Read path into c. The defaults come first; a plugins.dir left unset means
 * "plugins" next to the config file, as any relative path would. See config.h
 * for the contract: 0, or a negative errno with err = "path:line: message",
 * and on failure c is zeroed with nothing to free.
 */
int config_load(const char *path, bgt_config *c, char *err, size_t errlen)
{
    const config_setting_t *seen[NSPECS] = {0};
    loader l = {.path = path, .c = c, .seen = seen, .err = err, .errlen = errlen};
    config_t cfg;
    FILE *f = NULL;
    int rc;

    config_init(&cfg);
    config_defaults(c);
    if (err && errlen)
        err[0] = '\0';

    struct stat st;
    if (!(f = fopen(path, "re")))
        rc = -errno;
    else if (fstat(fileno(f), &st) < 0)
        rc = -errno;
    else if (S_ISDIR(st.st_mode))
        rc = -EISDIR; /* fopen opens a folder; reading it would fail with a vaguer message */
    else
        rc = 0;
    if (rc < 0) {
        fail_at(&l, NULL, "cannot read: %s", strerror(-rc));
        goto fail;
    }
    if (!(l.dir = folder_of(path))) {
        rc = -errno;
        fail_at(&l, NULL, "cannot resolve its folder: %s", strerror(-rc));
        goto fail;
    }
    /* @include "x.conf" is relative to the config's folder, like every other path. */
    config_set_include_dir(&cfg, l.dir);
    if (!config_read(&cfg, f)) {
        if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO) {
            rc = -EIO;
            fail_at(&l, NULL, "cannot read: %s", config_error_text(&cfg));
        } else {
            const char *inc = config_error_file(&cfg);
            rc = -EINVAL;
            if (err && errlen && inc)
                snprintf(err, errlen, "%s%s%s:%d: %s", inc[0] == '/' ? "" : l.dir,
                         inc[0] == '/' ? "" : "/", inc, config_error_line(&cfg),
                         config_error_text(&cfg));
            else if (err && errlen)
                snprintf(err, errlen, "%s:%d: %s", path, config_error_line(&cfg),
                         config_error_text(&cfg));
        }
        goto fail;
    }
    free(c->plugins_dir);
    c->plugins_dir = default_plugins_dir(l.dir);
    c->path = xstrdup(path);
    if ((rc = read_root(&l, config_root_setting(&cfg))) < 0)
        goto fail;
    if ((rc = finish(&l)) < 0)
        goto fail;
    config_destroy(&cfg);
    fclose(f);
    free(l.dir);
    return 0;

fail:
    config_destroy(&cfg);
    if (f)
        fclose(f);
    free(l.dir);
    config_free(c);
    return rc;
}

/* Free every string and plugin entry of c and zero it; c may be zeroed already. */
void config_free(bgt_config *c)
{
    if (!c)
        return;
    free(c->path);
    free(c->redis_url);
    if (c->redis_password) {
        memset(c->redis_password, 0, strlen(c->redis_password));
        free(c->redis_password);
    }
    free(c->redis_password_file);
    free(c->prefix);
    free(c->host_id);
    free(c->log_level);
    free(c->task_log_level);
    free(c->plugins_dir);
    for (size_t i = 0; i < c->nplugins; i++) {
        free(c->plugins[i].name);
        free(c->plugins[i].file);
        cJSON_Delete(c->plugins[i].config);
    }
    free(c->plugins);
    free(c->http_listen);
    if (c->http_token) {
        memset(c->http_token, 0, strlen(c->http_token));
        free(c->http_token);
    }
    free(c->http_token_file);
    free(c->http_ui_dir);
    memset(c, 0, sizeof *c);
}

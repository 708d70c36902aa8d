/*
 * config_plugin.c - the entries of plugins.load: a plugin's name, its file,
 * its own config section (converted to cJSON for the plugin's init), and
 * where its code runs (isolation and the settings of its worker processes).
 * The isolation settings other than `isolation` itself are refused unless
 * isolation = "process": a setting that would do nothing is a mistake.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_int.h"
#include "util.h"

/* The largest integer a JSON number (a double) holds exactly: 2^53. */
#define JSON_INT_MAX 9007199254740992LL
/* The smallest memory_max: below it a worker cannot even load. */
#define MEMORY_MAX_MIN (16L << 20)
/* The largest size setting: 1 TiB. */
#define SIZE_MAX_SETTING (1LL << 40)

/*
 * Convert a libconfig value to cJSON. name is its path for messages
 * ("plugins.load[0].config.x"). Returns 0 with *out owned by the caller.
 */
static int to_json(loader *l, const config_setting_t *s, const char *name, cJSON **out)
{
    cJSON *j = NULL;
    *out = NULL;
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT: j = cJSON_CreateNumber(config_setting_get_int(s)); break;
    case CONFIG_TYPE_INT64: {
        long long v = config_setting_get_int64(s);
        /* A JSON number is a double: refuse what would silently change. */
        if (v > JSON_INT_MAX || v < -JSON_INT_MAX)
            return config__fail(l, s, "%s must be an integer -2^53..2^53 to fit JSON, got %lld",
                                name, v);
        j = cJSON_CreateNumber((double)v);
        break;
    }
    case CONFIG_TYPE_FLOAT: j = cJSON_CreateNumber(config_setting_get_float(s)); break;
    case CONFIG_TYPE_BOOL: j = cJSON_CreateBool(config_setting_get_bool(s)); break;
    case CONFIG_TYPE_STRING: j = cJSON_CreateString(config_setting_get_string(s)); break;
    case CONFIG_TYPE_GROUP:
    case CONFIG_TYPE_ARRAY:
    case CONFIG_TYPE_LIST: {
        bool group = config_setting_type(s) == CONFIG_TYPE_GROUP;
        j = group ? cJSON_CreateObject() : cJSON_CreateArray();
        if (!j)
            break;
        int n = config_setting_length(s);
        for (int i = 0; i < n; i++) {
            const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
            char *sub = group ? xasprintf("%s.%s", name, config_setting_name(e))
                              : xasprintf("%s[%d]", name, i);
            cJSON *je;
            int rc = to_json(l, e, sub, &je);
            free(sub);
            if (rc < 0) {
                cJSON_Delete(j);
                return rc;
            }
            if (!(group ? cJSON_AddItemToObject(j, config_setting_name(e), je)
                        : cJSON_AddItemToArray(j, je))) {
                cJSON_Delete(je);
                cJSON_Delete(j);
                config__fail(l, e, "%s: out of memory", name);
                return -ENOMEM;
            }
        }
        break;
    }
    default:
        return config__fail(l, s, "%s has a value of an unknown type", name);
    }
    if (!j) {
        config__fail(l, s, "%s: out of memory", name);
        return -ENOMEM;
    }
    *out = j;
    return 0;
}

/* The numeric isolation settings of an entry. */
enum iso_kind { I_INT, I_LONG, I_SIZE, I_DOUBLE };

static const struct iso_spec {
    const char *name;
    enum iso_kind kind;
    double min, max;
    size_t off; /* in isolation_conf */
} iso_specs[] = {
    {"processes", I_INT, 1, 1024, offsetof(isolation_conf, processes)},
    {"max_tasks_per_process", I_LONG, 0, 1e12, offsetof(isolation_conf, max_tasks_per_process)},
    {"max_rss", I_SIZE, 0, SIZE_MAX_SETTING, offsetof(isolation_conf, max_rss)},
    {"memory_max", I_SIZE, 0, SIZE_MAX_SETTING, offsetof(isolation_conf, memory_max)},
    {"kill_grace", I_DOUBLE, 0, 3600, offsetof(isolation_conf, kill_grace_s)},
    {"breaker_deaths", I_INT, 1, 1000, offsetof(isolation_conf, breaker_deaths)},
    {"breaker_window", I_DOUBLE, 1, 86400, offsetof(isolation_conf, breaker_window_s)},
    {"breaker_pause", I_DOUBLE, 1, 86400, offsetof(isolation_conf, breaker_pause_s)},
};
#define NISO (sizeof iso_specs / sizeof iso_specs[0])

/* The defaults of an entry's isolation settings (config.h). */
static void iso_defaults(isolation_conf *iso)
{
    *iso = (isolation_conf){.mode = ISOLATION_THREAD,
                            .kill_grace_s = 5,
                            .breaker_deaths = 5,
                            .breaker_window_s = 60,
                            .breaker_pause_s = 30,
                            .seccomp = SECCOMP_OFF};
}

/*
 * A size: an integer (bytes) or a string "<n>", "<n>K", "<n>M", "<n>G" (binary
 * units). False when s is neither or the number does not parse.
 */
static bool get_size(const config_setting_t *s, long long *v)
{
    int t = config_setting_type(s);
    if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) {
        *v = t == CONFIG_TYPE_INT ? config_setting_get_int(s) : config_setting_get_int64(s);
        return true;
    }
    if (t != CONFIG_TYPE_STRING)
        return false;
    const char *str = config_setting_get_string(s);
    char *end;
    errno = 0;
    long long n = strtoll(str, &end, 10);
    if (end == str || errno || n < 0 || str[0] == '-' || str[0] == '+' || str[0] == ' ')
        return false;
    int shift = 0;
    if (*end == 'K' || *end == 'k')
        shift = 10, end++;
    else if (*end == 'M' || *end == 'm')
        shift = 20, end++;
    else if (*end == 'G' || *end == 'g')
        shift = 30, end++;
    if (*end || n > (SIZE_MAX_SETTING >> shift))
        return false;
    *v = n << shift;
    return true;
}

/* Read the numeric isolation setting m (spec sp) of entry i into iso. */
static int read_iso_number(loader *l, const config_setting_t *m, int i, const struct iso_spec *sp,
                           isolation_conf *iso)
{
    char *field = (char *)iso + sp->off;
    int t = config_setting_type(m);
    if (sp->kind == I_SIZE) {
        long long v;
        if (!get_size(m, &v) || v < 0 || v > (long long)sp->max) {
            const char *shown = t == CONFIG_TYPE_STRING ? config_setting_get_string(m) : NULL;
            return config__fail(l, m,
                                "plugins.load[%d].%s must be a size in bytes (an integer, or a "
                                "string such as \"512M\" or \"2G\") up to 1T, got %s%s%s",
                                i, sp->name, shown ? "\"" : "",
                                shown ? shown : config__type_name(m), shown ? "\"" : "");
        }
        if (strcmp(sp->name, "memory_max") == 0 && v > 0 && v < MEMORY_MAX_MIN)
            return config__fail(l, m, "plugins.load[%d].memory_max must be 0 (none) or at least "
                                      "16M, got %lld bytes", i, v);
        *(size_t *)(void *)field = (size_t)v;
        return 0;
    }
    double v;
    if (t == CONFIG_TYPE_INT)
        v = config_setting_get_int(m);
    else if (t == CONFIG_TYPE_INT64)
        v = (double)config_setting_get_int64(m);
    else if (t == CONFIG_TYPE_FLOAT && sp->kind == I_DOUBLE)
        v = config_setting_get_float(m);
    else
        return config__fail(l, m, "plugins.load[%d].%s must be %s %.15g..%.15g, got %s", i,
                            sp->name, sp->kind == I_DOUBLE ? "a number" : "an integer", sp->min,
                            sp->max, config__type_name(m));
    /* Written so that NaN fails too. */
    if (!(v >= sp->min && v <= sp->max))
        return config__fail(l, m, "plugins.load[%d].%s must be %s %.15g..%.15g, got %.15g", i,
                            sp->name, sp->kind == I_DOUBLE ? "a number" : "an integer", sp->min,
                            sp->max, v);
    if (sp->kind == I_INT)
        *(int *)(void *)field = (int)v;
    else if (sp->kind == I_LONG)
        *(long *)(void *)field = (long)v;
    else
        *(double *)(void *)field = v;
    return 0;
}

/* Read a string setting m of entry i that must be one of words[0..n); *out = its index. */
static int read_word(loader *l, const config_setting_t *m, int i, const char *const *words,
                     int n, int *out)
{
    const char *v = config_setting_type(m) == CONFIG_TYPE_STRING ? config_setting_get_string(m)
                                                                  : NULL;
    for (int k = 0; v && k < n; k++)
        if (strcmp(v, words[k]) == 0) {
            *out = k;
            return 0;
        }
    char expect[128] = "";
    for (int k = 0; k < n; k++)
        snprintf(expect + strlen(expect), sizeof expect - strlen(expect), "%s\"%s\"",
                 k == 0 ? "" : k == n - 1 ? " or " : ", ", words[k]);
    if (v)
        return config__fail(l, m, "plugins.load[%d].%s must be %s, got \"%s\"", i,
                            config_setting_name(m), expect, v);
    return config__fail(l, m, "plugins.load[%d].%s must be %s, got %s", i,
                        config_setting_name(m), expect, config__type_name(m));
}

/*
 * Read member m of entry i if it is an isolation setting: 1 when it was one
 * (*iso_set gets it, for the check that it goes with isolation = "process"),
 * 0 when it is not, or a negative errno.
 */
static int read_iso_setting(loader *l, const config_setting_t *m, int i, isolation_conf *iso,
                            const config_setting_t **iso_set)
{
    static const char *const modes[] = {"thread", "process"};
    static const char *const filters[] = {"off", "basic", "no-network"};
    const char *mn = config_setting_name(m);
    int rc, v;
    if (strcmp(mn, "isolation") == 0) {
        if ((rc = read_word(l, m, i, modes, 2, &v)) < 0)
            return rc;
        iso->mode = (isolation_mode)v;
        return 1;
    }
    if (strcmp(mn, "seccomp") == 0) {
        if ((rc = read_word(l, m, i, filters, 3, &v)) < 0)
            return rc;
        iso->seccomp = (seccomp_mode)v;
        *iso_set = m;
        return 1;
    }
    for (size_t k = 0; k < NISO; k++)
        if (strcmp(mn, iso_specs[k].name) == 0) {
            if ((rc = read_iso_number(l, m, i, &iso_specs[k], iso)) < 0)
                return rc;
            *iso_set = m;
            return 1;
        }
    return 0;
}

/* Read element i of plugins.load (a group) into pc. */
static int read_plugin(loader *l, const config_setting_t *g, int i, plugin_conf *pc)
{
    if (config_setting_type(g) != CONFIG_TYPE_GROUP)
        return config__fail(l, g, "plugins.load[%d] must be a group { name = \"...\"; }, got %s", i,
                       config__type_name(g));
    const config_setting_t *config = NULL, *iso_set = NULL;
    iso_defaults(&pc->iso);
    int n = config_setting_length(g);
    for (int k = 0; k < n; k++) {
        const config_setting_t *m = config_setting_get_elem(g, (unsigned)k);
        const char *mn = config_setting_name(m);
        int t = config_setting_type(m);
        int rc = read_iso_setting(l, m, i, &pc->iso, &iso_set);
        if (rc < 0)
            return rc;
        if (rc == 1)
            continue;
        if (strcmp(mn, "name") == 0) {
            if (t != CONFIG_TYPE_STRING)
                return config__fail(l, m, "plugins.load[%d].name must be a string, got %s", i,
                               config__type_name(m));
            const char *v = config_setting_get_string(m);
            if (!name_valid(v))
                return config__fail(l, m,
                               "plugins.load[%d].name must match [a-z0-9][a-z0-9._-]{0,62}, "
                               "got \"%s\"",
                               i, v);
            pc->name = xstrdup(v);
        } else if (strcmp(mn, "file") == 0) {
            if (t != CONFIG_TYPE_STRING)
                return config__fail(l, m, "plugins.load[%d].file must be a string, got %s", i,
                               config__type_name(m));
            const char *v = config_setting_get_string(m);
            if (!*v)
                return config__fail(l, m, "plugins.load[%d].file must be a non-empty path, got \"\"",
                               i);
            pc->file = config__resolve_path(l->dir, v);
        } else if (strcmp(mn, "config") == 0) {
            if (t != CONFIG_TYPE_GROUP)
                return config__fail(l, m, "plugins.load[%d].config must be a group { ... }, got %s",
                               i, config__type_name(m));
            config = m;
        } else {
            return config__fail(l, m,
                                "unknown setting plugins.load[%d].%s (expected name, file, "
                                "config, isolation, processes, max_tasks_per_process, max_rss, "
                                "memory_max, kill_grace, breaker_deaths, breaker_window, "
                                "breaker_pause, seccomp)",
                                i, mn);
        }
    }
    if (!pc->name)
        return config__fail(l, g, "plugins.load[%d] must have a name, got none", i);
    if (iso_set && pc->iso.mode != ISOLATION_PROCESS)
        return config__fail(l, iso_set,
                            "plugins.load[%d].%s applies to worker processes: it needs "
                            "isolation = \"process\"",
                            i, config_setting_name(iso_set));
    if (config) {
        char *name = xasprintf("plugins.load[%d].config", i);
        int rc = to_json(l, config, name, &pc->config);
        free(name);
        if (rc < 0)
            return rc;
    } else if (!(pc->config = cJSON_CreateObject())) {
        config__fail(l, g, "plugins.load[%d].config: out of memory", i);
        return -ENOMEM;
    }
    return 0;
}

/* Read plugins.load (a list of groups) into l->c->plugins. */
int config__read_plugins(loader *l, const config_setting_t *s)
{
    bgt_config *c = l->c;
    int t = config_setting_type(s);
    /* "load = [];" is an empty array: libconfig has no empty-list syntax other than "()". */
    if (t == CONFIG_TYPE_ARRAY && config_setting_length(s) == 0)
        return 0;
    if (t != CONFIG_TYPE_LIST)
        return config__fail(l, s,
                            "plugins.load must be a list ( { name = \"...\"; }, ... ), got %s",
                            config__type_name(s));
    int n = config_setting_length(s);
    if (n == 0)
        return 0;
    c->plugins = xcalloc((size_t)n, sizeof *c->plugins);
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
        /* Count the entry before reading it so a partial one is freed on failure. */
        c->nplugins = (size_t)i + 1;
        int rc = read_plugin(l, g, i, &c->plugins[i]);
        if (rc < 0)
            return rc;
        for (int k = 0; k < i; k++) {
            if (strcmp(c->plugins[k].name, c->plugins[i].name) != 0)
                continue;
            const config_setting_t *prev = config_setting_get_elem(s, (unsigned)k);
            return config__fail(l, g,
                                "plugin names in plugins.load must be unique, got \"%s\" twice "
                                "(lines %u and %u)",
                                c->plugins[i].name, config_setting_source_line(prev),
                                config_setting_source_line(g));
        }
    }
    return 0;
}


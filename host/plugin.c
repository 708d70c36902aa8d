/*
 * plugin.c - the plugin loader: checks a plugin file before any of its code
 * runs (file and folder permissions, the entry's version fields), calls its
 * init with the host's service table, and undoes everything a failed init
 * registered before it dlclose()s the file.
 */
#include "plugin.h"

#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trust.h"
#include "util.h"

/* The smallest entry a plugin may export: ABI 1.0's fields up to fini. */
#define ENTRY_MIN (offsetof(bgt_plugin_entry_t, fini) + sizeof(void (*)(bgt_plugin *)))
/* The smallest definitions whose (udata, udata_free) pair can be read. */
#define HANDLER_DEF_MIN (offsetof(bgt_handler_def, udata_free) + sizeof(void (*)(void *)))
#define HOOK_DEF_MIN (offsetof(bgt_hook_def, udata_free) + sizeof(void (*)(void *)))

/* dlclose a plugin's handle unless BGT_NO_DLCLOSE is set: keeping the file
 * mapped lets leak reports name the plugin's file and line. */
static void close_dl(void *dl, const char *path)
{
    const char *keep = getenv("BGT_NO_DLCLOSE");
    if (!dl || (keep && *keep))
        return;
    if (dlclose(dl) != 0) {
        const char *e = dlerror();
        log_warn("%s: dlclose failed: %s", path, e ? e : "unknown error");
    }
}

static void free_plugin(struct bgt_plugin *p)
{
    if (!p)
        return;
    free(p->name);
    free(p->version);
    free(p->path);
    free(p->real);
    free(p);
}

/*
 * Check the exported entry. The version fields come first and are read before
 * anything else: only once they match is the rest of the layout known.
 */
static int check_entry(const char *path, const bgt_plugin_entry_t *e, char *err, size_t errlen)
{
    if (e->abi_major != BGT_ABI_MAJOR) {
        snprintf(err, errlen, "%s: built for plugin ABI %u.%u, this host speaks %d.%d", path,
                 e->abi_major, e->abi_minor, BGT_ABI_MAJOR, BGT_ABI_MINOR);
        return -ENOEXEC;
    }
    if (e->abi_minor > BGT_ABI_MINOR) {
        snprintf(err, errlen,
                 "%s: built for plugin ABI %u.%u, this host speaks %d.%d: the plugin needs a "
                 "newer host",
                 path, e->abi_major, e->abi_minor, BGT_ABI_MAJOR, BGT_ABI_MINOR);
        return -ENOEXEC;
    }
    if (e->size < ENTRY_MIN) {
        snprintf(err, errlen, "%s: its entry is %u bytes, plugin ABI %d.%d needs at least %zu",
                 path, e->size, BGT_ABI_MAJOR, BGT_ABI_MINOR, (size_t)ENTRY_MIN);
        return -ENOEXEC;
    }
    if (!e->name || !name_valid(e->name)) {
        snprintf(err, errlen, "%s: plugin name '%.64s' is invalid: it must match "
                 "[a-z0-9][a-z0-9._-]{0,62}", path, e->name ? e->name : "");
        return -ENOEXEC;
    }
    if (!e->init) {
        snprintf(err, errlen, "%s: plugin '%s' has no init function", path, e->name);
        return -ENOEXEC;
    }
    return 0;
}

int plugin_open(const char *path, const char *dir, struct bgt_plugin **out, char *err,
                size_t errlen)
{
    char *real = NULL;
    void *dl = NULL;
    int rc;

    *out = NULL;
    rc = trust_check(path, dir, &real, err, errlen);
    if (rc < 0)
        goto fail;
    dlerror();
    dl = dlopen(real, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        const char *e = dlerror();
        snprintf(err, errlen, "%s: dlopen failed: %s", path, e ? e : "unknown error");
        rc = -ENOEXEC;
        goto fail;
    }
    const bgt_plugin_entry_t *entry = dlsym(dl, BGT_ENTRY_SYMBOL);
    if (!entry) {
        snprintf(err, errlen, "%s: not a bgtask plugin: no " BGT_ENTRY_SYMBOL " symbol", path);
        rc = -ENOEXEC;
        goto fail;
    }
    rc = check_entry(path, entry, err, errlen);
    if (rc < 0)
        goto fail;
    struct bgt_plugin *p = xcalloc(1, sizeof *p);
    p->name = xstrdup(entry->name);
    p->version = xstrdup(entry->version ? entry->version : "");
    p->path = xstrdup(path);
    p->real = real;
    p->dl = dl;
    p->entry = entry;
    *out = p;
    return 0;

fail:
    close_dl(dl, path);
    free(real);
    return rc;
}

int plugin_init(struct bgt_plugin *p, const cJSON *config, registry *reg, const bgt_api *api,
                char *err, size_t errlen)
{
    cJSON *empty = NULL;
    int rc;

    if (config && !cJSON_IsObject(config)) {
        snprintf(err, errlen, "%s: the plugin's config must be an object", p->path);
        rc = -EINVAL;
        goto fail;
    }
    if (!config) {
        empty = cJSON_CreateObject();
        if (!empty) {
            snprintf(err, errlen, "%s: out of memory", p->path);
            rc = -ENOMEM;
            goto fail;
        }
        config = empty;
    }
    p->reg = reg;
    p->in_init = true;
    int irc = p->entry->init(p, api, config);
    p->in_init = false;
    if (irc != 0 || p->reg_rc != 0) {
        /* A refused registration fails the load even when init ignored it:
         * the plugin would otherwise run without a handler it meant to have. */
        if (p->reg_rc != 0 && irc != 0)
            snprintf(err, errlen, "%s: plugin '%s' not loaded: %s (init returned %d)", p->path,
                     p->name, p->reg_err, irc);
        else if (p->reg_rc != 0)
            snprintf(err, errlen, "%s: plugin '%s' not loaded: %s", p->path, p->name,
                     p->reg_err);
        else
            snprintf(err, errlen, "%s: init failed (returned %d)", p->path, irc);
        rc = p->reg_rc != 0 ? p->reg_rc : -ECANCELED;
        /* Undo every registration; the udata_free calls run plugin code, so
         * this comes before dlclose. */
        registry_remove_plugin(reg, p);
        p->reg = NULL;
        goto fail;
    }
    p->initialised = true;
    cJSON_Delete(empty);
    return 0;

fail:
    cJSON_Delete(empty);
    plugin_unload(p);
    return rc;
}

int plugin_load(const char *path, const char *dir, const cJSON *config, registry *reg,
                const bgt_api *api, struct bgt_plugin **out, char *err, size_t errlen)
{
    struct bgt_plugin *p;
    int rc = plugin_open(path, dir, &p, err, errlen);
    if (rc == 0 && (rc = plugin_init(p, config, reg, api, err, errlen)) < 0)
        p = NULL;
    *out = rc == 0 ? p : NULL;
    return rc;
}

void plugin_unload(struct bgt_plugin *p)
{
    if (!p)
        return;
    if (p->initialised && p->entry->fini)
        p->entry->fini(p);
    if (p->reg)
        registry_remove_plugin(p->reg, p);
    close_dl(p->dl, p->path);
    free_plugin(p);
}

/*
 * A registration outside init: refused, and the (udata, udata_free) pair that
 * passed to the host at this call is freed. name/udata/udata_free are only
 * read when the definition's size says they are there (readable).
 */
static int refuse_outside_init(struct bgt_plugin *p, const char *what, bool readable,
                               const char *name, void *udata, void (*udata_free)(void *))
{
    log_msg(BGT_LOG_ERR, p ? p->name : NULL,
            "%s '%.64s': registration is only allowed during init", what,
            readable && name ? name : "?");
    if (readable && udata_free)
        udata_free(udata);
    return -EPERM;
}

/* Log a refused registration and remember the first, which fails the load. */
static int note_refusal(struct bgt_plugin *p, int rc, const char *err)
{
    if (rc < 0) {
        log_msg(BGT_LOG_ERR, p->name, "%s", err);
        if (p->reg_rc == 0) {
            p->reg_rc = rc;
            strlcpy_(p->reg_err, err, sizeof p->reg_err);
        }
    }
    return rc;
}

int plugin_api_register_handler(struct bgt_plugin *p, const bgt_handler_def *def)
{
    bool readable = def && def->size >= HANDLER_DEF_MIN;
    if (!p || !p->in_init)
        return refuse_outside_init(p, "handler", readable, readable ? def->name : NULL,
                                   readable ? def->udata : NULL,
                                   readable ? def->udata_free : NULL);
    char err[sizeof p->reg_err];
    return note_refusal(p, registry_add_handler(p->reg, p, p->name, def, err, sizeof err), err);
}

int plugin_api_register_hook(struct bgt_plugin *p, const bgt_hook_def *def)
{
    bool readable = def && def->size >= HOOK_DEF_MIN;
    if (!p || !p->in_init)
        return refuse_outside_init(p, "hook", readable, readable ? def->name : NULL,
                                   readable ? def->udata : NULL,
                                   readable ? def->udata_free : NULL);
    char err[sizeof p->reg_err];
    return note_refusal(p, registry_add_hook(p->reg, p, def, err, sizeof err), err);
}

void plugin_api_log(struct bgt_plugin *p, int level, const char *fmt, va_list ap)
{
    if (level < BGT_LOG_ERR)
        level = BGT_LOG_ERR;
    if (level > BGT_LOG_DEBUG)
        level = BGT_LOG_DEBUG;
    log_vmsg(level, p ? p->name : NULL, fmt ? fmt : "", ap);
}

static int cmp_path(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int plugin_scan_dir(const char *dir, char ***paths, size_t *n, char *err, size_t errlen)
{
    char **v = NULL;
    size_t cnt = 0, cap = 0;
    int rc = 0;

    *paths = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        rc = -errno;
        snprintf(err, errlen, "%s: cannot read: %s", dir, strerror(-rc));
        return rc;
    }
    size_t dlen = strlen(dir);
    const char *sep = dlen && dir[dlen - 1] == '/' ? "" : "/";
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno) {
                rc = -errno;
                snprintf(err, errlen, "%s: cannot read: %s", dir, strerror(-rc));
                goto fail;
            }
            break;
        }
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || len <= 3 || strcmp(de->d_name + len - 3, ".so") != 0)
            continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 8;
            v = xrealloc(v, cap * sizeof *v);
        }
        v[cnt++] = xasprintf("%s%s%s", dir, sep, de->d_name);
    }
    closedir(d);
    if (cnt)
        qsort(v, cnt, sizeof *v, cmp_path);
    *paths = v;
    *n = cnt;
    return 0;

fail:
    closedir(d);
    for (size_t i = 0; i < cnt; i++)
        free(v[i]);
    free(v);
    return rc;
}

/*
 * plugin.h - the plugin loader. Checks who could have written a plugin file
 * (trust.h: the file, the folders from the plugins folder down to it, links
 * and their targets), dlopen()s it with RTLD_NOW | RTLD_LOCAL, checks the
 * exported bgt_plugin_entry's ABI version before running any plugin code,
 * and calls its init with the host's service table. A failed init undoes
 * every registration the plugin made, then dlclose()s it.
 */
#ifndef BGT_PLUGIN_H
#define BGT_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>

#include "bgtask.h"
#include "registry.h"

/* The host's side of the opaque bgt_plugin a plugin sees. */
struct bgt_plugin {
    char *name;                       /* from the entry */
    char *version;                    /* from the entry */
    char *path;                       /* the file loaded, as named */
    char *real;                       /* its resolved path, the one opened */
    void *dl;                         /* dlopen handle */
    const bgt_plugin_entry_t *entry;  /* inside the plugin's memory */
    registry *reg;                    /* where its handlers and hooks go (set by init) */
    bool initialised;                 /* its init succeeded: fini runs at unload */
    bool in_init;                     /* registration is allowed only during init */
    int reg_rc;                       /* first registration its init had refused (negative
                                         errno), or 0: such a load fails even if init
                                         returns 0 */
    char reg_err[256];                /* that refusal's message */
    struct bgt_plugin *next;          /* the loaded list */
};

/*
 * Open the plugin at path: trust_check against dir (the plugins folder, or
 * NULL), dlopen, and the entry's version fields and name. None of the
 * plugin's functions runs (its ELF constructors do, as with any dlopen). On
 * success *out is the opened plugin, owned by the caller: plugin_init it, or
 * plugin_unload it. On failure returns a negative errno (-EPERM refused by
 * the trust check, -ENOEXEC not a loadable plugin of this ABI, or why the
 * file cannot be read) and err holds "path: reason"; nothing stays open.
 */
int plugin_open(const char *path, const char *dir, struct bgt_plugin **out, char *err,
                size_t errlen);

/*
 * Call an opened plugin's init with config (its section, borrowed; NULL for
 * {}), registering into reg, with the host table api. On failure every
 * registration it made is undone, p is unloaded and freed, a negative errno
 * is returned and err holds "path: reason".
 */
int plugin_init(struct bgt_plugin *p, const cJSON *config, registry *reg, const bgt_api *api,
                char *err, size_t errlen);

/* plugin_open, then plugin_init: *out is the loaded plugin (free with
 * plugin_unload) or NULL on failure. */
int plugin_load(const char *path, const char *dir, const cJSON *config, registry *reg,
                const bgt_api *api, struct bgt_plugin **out, char *err, size_t errlen);

/* Call fini (if init succeeded), remove the plugin's registrations, dlclose (unless the
 * environment sets BGT_NO_DLCLOSE, so leak reports can name the plugin's
 * file), free p. NULL is allowed. */
void plugin_unload(struct bgt_plugin *p);

/*
 * List the plugin files of dir: every "*.so" entry whose name does not start
 * with a dot, as "dir/name", sorted by byte order (so autoload order does not
 * depend on the file system). On success *paths is a heap array of *n heap
 * strings owned by the caller (free each, then the array; NULL when *n is 0).
 * Returns 0, or a negative errno with err = "dir: cannot read: reason".
 */
int plugin_scan_dir(const char *dir, char ***paths, size_t *n, char *err, size_t errlen);

/* The bgt_api entries the loader implements (used to build the host table). */
int plugin_api_register_handler(struct bgt_plugin *p, const bgt_handler_def *def);
int plugin_api_register_hook(struct bgt_plugin *p, const bgt_hook_def *def);
void plugin_api_log(struct bgt_plugin *p, int level, const char *fmt, va_list ap);

#endif

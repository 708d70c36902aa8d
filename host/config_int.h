/*
 * config_int.h - what the two halves of the config reader share: config.c
 * (the settings of the schema) and config_plugin.c (the entries of
 * plugins.load). Nothing else includes it: only these two files include
 * libconfig.
 */
#ifndef BGT_CONFIG_INT_H
#define BGT_CONFIG_INT_H

#include <libconfig.h>

#include "config.h"

/* The state of one load. */
typedef struct loader {
    const char *path;               /* the file, as the caller named it */
    char *dir;                      /* its folder, absolute (realpath) */
    bgt_config *c;                  /* filled as settings are read */
    const config_setting_t **seen;  /* the setting read for each row of the schema, for lines */
    char *err;
    size_t errlen;
} loader;

/* Format "file:line: message" into l->err; returns -EINVAL. s may be NULL (no line). */
__attribute__((format(printf, 3, 4))) int config__fail(loader *l, const config_setting_t *s,
                                                       const char *fmt, ...);
/* What a setting is ("an integer"), for "got ..." in messages; never its value. */
const char *config__type_name(const config_setting_t *s);
/* The absolute form of path p for the config folder dir (heap). */
char *config__resolve_path(const char *dir, const char *p);
/* Read plugins.load (a list of groups) into l->c->plugins. */
int config__read_plugins(loader *l, const config_setting_t *s);

#endif

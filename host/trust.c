/*
 * trust.c - the ownership and mode checks a plugin file passes before the
 * loader opens it: two chains of paths, the one written and the one it
 * resolves to, each from the trusted folder down to the file.
 */
#include "trust.h"

#include <errno.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* How messages name a user: "nobody (uid 65534)", or "uid 1234" without a passwd entry. */
static void user_name(uid_t uid, char *buf, size_t n)
{
    struct passwd pw, *found = NULL;
    char tmp[1024];
    if (getpwuid_r(uid, &pw, tmp, sizeof tmp, &found) == 0 && found)
        snprintf(buf, n, "%s (uid %u)", found->pw_name, (unsigned)uid);
    else
        snprintf(buf, n, "uid %u", (unsigned)uid);
}

/* Check p (st from lstat) on the way to the plugin path. A link's own mode
 * means nothing (always 0777); its owner could still point it elsewhere. */
static int check_one(const char *path, const char *p, const struct stat *st, char *err,
                     size_t errlen)
{
    bool link = S_ISLNK(st->st_mode);
    uid_t me = geteuid();
    if (st->st_uid != 0 && st->st_uid != me) {
        char owner[160], self[160];
        user_name(st->st_uid, owner, sizeof owner);
        user_name(me, self, sizeof self);
        snprintf(err, errlen,
                 "%s: refusing to load: %s%s is owned by %s, not by root or by the user this "
                 "host runs as (%s)",
                 path, p, link ? " (a link)" : "", owner, self);
        return -EPERM;
    }
    if (!link && (st->st_mode & (S_IWGRP | S_IWOTH))) {
        snprintf(err, errlen, "%s: refusing to load: %s is writable by group or others (mode %04o)",
                 path, p, (unsigned)(st->st_mode & 07777));
        return -EPERM;
    }
    return 0;
}

/*
 * Check base, then every path below it down to full, one component at a time
 * (full is base itself or starts with base + "/"). lstat: a link on the way
 * is checked itself, and the next component is looked up through it.
 */
static int check_chain(const char *path, const char *base, const char *full, char *err,
                       size_t errlen)
{
    char *p = xstrdup(full);
    size_t i = strlen(base);
    int rc;
    for (;;) {
        char next = p[i];
        p[i] = '\0';
        struct stat st;
        if (lstat(p, &st) < 0) {
            rc = -errno;
            if (strcmp(p, path) == 0)
                snprintf(err, errlen, "%s: cannot read: %s", path, strerror(-rc));
            else
                snprintf(err, errlen, "%s: cannot read: %s: %s", path, p, strerror(-rc));
        } else {
            rc = check_one(path, p, &st, err, errlen);
        }
        p[i] = next;
        if (rc < 0 || next == '\0')
            break;
        char *slash = strchr(p + i + 1, '/');
        i = slash ? (size_t)(slash - p) : strlen(p);
    }
    free(p);
    return rc;
}

/* Whether path lies below dir as written: dir + "/" + components that are not "..". */
static bool below(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    if (strcmp(dir, "/") == 0)
        n = 0;
    if (strncmp(path, dir, n) != 0 || path[n] != '/' || !path[n + 1])
        return false;
    for (const char *c = path + n; c; c = strchr(c + 1, '/'))
        if (strncmp(c, "/..", 3) == 0 && (c[3] == '/' || c[3] == '\0'))
            return false;
    return true;
}

/* The folder part of path (heap): "." for a bare name, "/" for "/x". */
static char *folder_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return xstrdup(".");
    if (slash == path)
        return xstrdup("/");
    return xasprintf("%.*s", (int)(slash - path), path);
}

/* dir without trailing slashes (heap), or NULL for NULL. */
static char *trim(const char *dir)
{
    if (!dir || !*dir)
        return NULL;
    char *d = xstrdup(dir);
    size_t n = strlen(d);
    while (n > 1 && d[n - 1] == '/')
        d[--n] = '\0';
    return d;
}

int trust_check(const char *path, const char *dir, char **real, char *err, size_t errlen)
{
    char *base = trim(dir), *rbase = NULL;
    struct stat st;
    int rc;

    *real = NULL;
    /* The path as written: from the trusted folder when it leads into it. */
    if (!base || !below(path, base)) {
        free(base);
        base = folder_of(path);
    }
    if ((rc = check_chain(path, base, path, err, errlen)) < 0)
        goto fail;

    /* The path it resolves to: from the trusted folder's resolved form when it stays in it,
     * else from its own folder. */
    if (!(*real = realpath(path, NULL))) {
        rc = -errno;
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(-rc));
        goto fail;
    }
    rbase = realpath(base, NULL);
    if (!rbase || !below(*real, rbase)) {
        free(rbase);
        rbase = folder_of(*real);
    }
    if ((rc = check_chain(path, rbase, *real, err, errlen)) < 0)
        goto fail;

    if (stat(*real, &st) < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(-rc));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: refusing to load: not a regular file", path);
        rc = -EPERM;
        goto fail;
    }
    free(base);
    free(rbase);
    return 0;

fail:
    free(base);
    free(rbase);
    free(*real);
    *real = NULL;
    return rc;
}

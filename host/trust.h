/*
 * trust.h - may this file be run as this host's code? Loading a plugin runs
 * it with the host's rights, so whoever can change the file, or any folder
 * through which its path leads, or a link on that path, could run code as
 * the host. The check says who could.
 */
#ifndef BGT_TRUST_H
#define BGT_TRUST_H

#include <stddef.h>

/*
 * Check the plugin file path against its trusted folder dir (the configured
 * plugins folder; NULL or a folder path does not lead into: the file's own
 * folder). Every one of these must be owned by root or by the host's
 * effective user, and, unless it is a link, not be writable by group or
 * others:
 *   - dir, every folder from it down to path, and path itself, as written
 *     (a link among them is checked itself and then followed);
 *   - the file path resolves to, and every folder from dir's resolved form
 *     down to it; for a file that resolves outside dir, its own folder.
 * The file must be a regular file.
 *
 * On success returns 0 and *real is the resolved absolute path (heap, owned
 * by the caller): the one to open, so the file checked is the file loaded.
 * On failure returns -EPERM (refused: err = "path: refusing to load: <the
 * path that failed> is <why>") or the negative errno of a path that cannot
 * be read (err = "path: cannot read: ..."), and *real is NULL.
 */
int trust_check(const char *path, const char *dir, char **real, char *err, size_t errlen);

#endif

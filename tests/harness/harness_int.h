/*
 * harness_int.h - what the files of the test harness share among themselves
 * (the th__ names, after libuv's uv__): the record of child processes, spawning,
 * scratch folders and small helpers. Tests include harness.h only.
 */
#ifndef BGT_HARNESS_INT_H
#define BGT_HARNESS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "harness.h"

enum child_kind { CHILD_REDIS, CHILD_HOST, CHILD_COMMAND };

/* One process the harness started. Records are kept after a reap (with the
 * status) until th_cleanup, so a pid is only ever signalled while it is ours. */
struct child {
    pid_t pid;
    enum child_kind kind;
    bool reaped;
    int status;       /* waitpid status once reaped */
    char prefix[128]; /* key prefix of a host */
};

/*
 * Whether host_id is among the live hosts under prefix and, when its entry
 * names a pid, that pid is pid: an entry left by an earlier process with the
 * same id (killed, its lease not yet expired) must not pass for this one.
 * Sets *ready; false when the connection failed (harness_keys.c).
 */
bool th__host_registered(redisContext *c, const char *prefix, const char *host_id, pid_t pid,
                         bool *ready);
/* A whole file as a malloc'd NUL-terminated string (length in *len); NULL if unreadable. */
char *th__read_file(const char *path, size_t *len);
/* Print the last max bytes of a file on stderr, under a title. */
void th__dump_tail(const char *title, const char *path, size_t max);
/* The absolute path of $BUILD (default "build"), created if missing; malloc'd. */
char *th__build_dir(void);
/* Remove a scratch folder made by th_tmpdir now, and forget it. */
void th__tmpdir_remove(const char *dir);

/* Record a child we started (prefix: a host's key prefix, or NULL). */
void th__child_add(pid_t pid, enum child_kind kind, const char *prefix);
/* The newest record of pid, or NULL if the harness never started it. The
 * pointer is valid until the next th__child_add. */
struct child *th__child_find(pid_t pid);
/* True if pid is a child we started and have not reaped: the only kind we signal. */
bool th__child_live(pid_t pid);
/* waitpid on a child (blocking or not); true once it has exited (status kept). */
bool th__child_reap(struct child *c, bool block);
/* Wait up to timeout_s for a child to exit; true if it did. */
bool th__child_wait(struct child *c, double timeout_s);
/* kill -9 a live child and reap it; a no-op for NULL or a reaped one. */
void th__child_kill9(struct child *c);
/* "exited with code N" or "killed by signal N" for a waitpid status, in buf. */
const char *th__status_text(int st, char *buf, size_t n);
/*
 * fork + exec argv[0] (a path) with stdin from /dev/null and stdout/stderr on
 * fd_out / fd_err (-1: inherited). The child gets SIGKILL if the test program
 * dies. Returns the pid (not yet recorded: call th__child_add) or -1.
 */
pid_t th__spawn(char *const argv[], int fd_out, int fd_err);

/* The path of name in $PATH (malloc'd), or NULL. */
char *th__find_in_path(const char *name);
/*
 * Start r (its sentinel and bus_port fields say what kind: set bus_port to 1 for a cluster
 * node) in a fresh folder named after tag, on free ports, reading conf_text (written into a
 * file in its folder) first when not NULL. Waits until it answers. 0, -1, or -2 when the
 * binary is missing and CI is not set (skip).
 */
int th__redis_start_as(th_redis *r, const char *tag, const char *conf_text);

#endif

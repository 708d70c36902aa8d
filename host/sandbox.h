/*
 * sandbox.h - the limits put on the worker processes of isolated plugins:
 * a memory limit (cgroup v2 memory.max when the host's cgroup is delegated
 * to it, else RLIMIT_DATA set by the worker itself) and an optional seccomp
 * filter the worker installs before it loads its plugin.
 *
 * cgroup v2. The host's own cgroup (from /proc/self/cgroup, "0::/path")
 * is usable when it lists the memory controller in cgroup.controllers and the
 * host may write to it: systemd gives a unit that with Delegate=yes (and no
 * ProtectControlGroups). v2 lets a cgroup that hands controllers down hold no
 * processes itself, so the host first moves itself into a leaf "host" below
 * its cgroup, then enables +memory for the children and gives each worker
 * slot a cgroup "w-<plugin>-<slot>" with memory.max (and memory.swap.max = 0,
 * so the limit is not stretched by swap). A worker killed by the kernel's OOM
 * killer shows in that cgroup's memory.events (oom_kill).
 */
#ifndef BGT_SANDBOX_H
#define BGT_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"

/*
 * Install the seccomp filter `mode` in the calling process (a worker, still
 * single-threaded). SECCOMP_OFF does nothing. Refused calls fail with EPERM
 * (clone3 with ENOSYS, so libc falls back to clone, whose namespace flags are
 * checked). Returns 0, or a negative errno with err saying why (-ENOTSUP on an
 * architecture the filter is not written for).
 */
int sandbox_seccomp(seccomp_mode mode, char *err, size_t errlen);

/* Limit the calling process's data segment (RLIMIT_DATA) to bytes. 0 or -errno. */
int sandbox_limit_data(size_t bytes);

/* The host's delegated cgroup, once set up. */
typedef struct cgroup_base {
    char *dir;   /* <root><the host's cgroup>, e.g. /sys/fs/cgroup/system.slice/bgtaskd.service */
} cgroup_base;

/*
 * Find the host's cgroup v2 folder under root (normally "/sys/fs/cgroup")
 * from self_cgroup (normally "/proc/self/cgroup"), check that it can hold
 * worker cgroups with a memory limit, move the host into <dir>/host and
 * enable the memory controller for the children. Returns 0 with cg->dir set
 * (free with cgroup_base_free), or a negative errno with why saying what is
 * missing ("the memory controller is not delegated to ...").
 */
int cgroup_base_setup(cgroup_base *cg, const char *root, const char *self_cgroup, char *why,
                      size_t whylen);
void cgroup_base_free(cgroup_base *cg);

/*
 * The cgroup of one worker slot, created if needed, with memory.max = bytes
 * and memory.swap.max = 0 (where the kernel has swap accounting). *path gets
 * its folder (heap). Returns 0 or a negative errno with why set.
 */
int cgroup_worker(const cgroup_base *cg, const char *name, size_t bytes, char **path, char *why,
                  size_t whylen);
/* Move process pid into the cgroup at path. 0 or a negative errno. */
int cgroup_move(const char *path, pid_t pid);
/* The cgroup's oom_kill count from memory.events, or -1 when it cannot be read. */
long cgroup_oom_kills(const char *path);
/* Remove an empty worker cgroup (its processes are gone). */
void cgroup_remove(const char *path);

#endif

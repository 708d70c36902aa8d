/*
 * sandbox.c - memory limits (cgroup v2, RLIMIT_DATA) and the seccomp filter
 * of worker processes. The filter is a classic BPF program written here (no
 * libseccomp): check the architecture, refuse the calls on the lists below,
 * allow the rest.
 */
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util.h"

/* ---- seccomp ---- */

#if defined(__x86_64__)
#define FILTER_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define FILTER_ARCH AUDIT_ARCH_AARCH64
#endif

#ifdef FILTER_ARCH
/* Calls no handler needs and a hostile one could abuse: other processes' memory, mounts and
 * namespaces, kernel modules and keys, the clock, the kernel log, eBPF and perf. */
static const int refused[] = {
    SYS_ptrace,          SYS_process_vm_readv, SYS_process_vm_writev, SYS_mount,
    SYS_umount2,         SYS_pivot_root,       SYS_swapon,            SYS_swapoff,
    SYS_reboot,          SYS_kexec_load,       SYS_init_module,       SYS_finit_module,
    SYS_delete_module,   SYS_bpf,              SYS_perf_event_open,   SYS_setns,
    SYS_unshare,         SYS_keyctl,           SYS_add_key,           SYS_request_key,
    SYS_acct,            SYS_settimeofday,     SYS_clock_settime,     SYS_open_by_handle_at,
    SYS_userfaultfd,     SYS_quotactl,         SYS_syslog,
#ifdef SYS_kexec_file_load
    SYS_kexec_file_load,
#endif
#ifdef __x86_64__
    SYS_iopl,            SYS_ioperm,
#endif
};
#define NREFUSED (sizeof refused / sizeof refused[0])

/* The namespace flags clone() may not carry. */
#define NS_FLAGS                                                                            \
    (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |          \
     CLONE_NEWPID | CLONE_NEWNET)

#define LD_NR BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))
#define LD_ARG0 BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]))
#define RET(v) BPF_STMT(BPF_RET | BPF_K, (v))
#define ERRNO(e) RET(SECCOMP_RET_ERRNO | ((e) & SECCOMP_RET_DATA))
#endif

int sandbox_seccomp(seccomp_mode mode, char *err, size_t errlen)
{
    if (mode == SECCOMP_OFF)
        return 0;
#ifndef FILTER_ARCH
    snprintf(err, errlen, "seccomp filters are written for x86_64 and aarch64 only");
    return -ENOTSUP;
#else
    struct sock_filter prog[NREFUSED * 2 + 32];
    size_t n = 0;
    /* Another architecture's calls (e.g. i386 through int 0x80) would bypass the numbers below. */
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                             offsetof(struct seccomp_data, arch));
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FILTER_ARCH, 1, 0);
    prog[n++] = (struct sock_filter)RET(SECCOMP_RET_KILL_PROCESS);
    prog[n++] = (struct sock_filter)LD_NR;
#ifdef __x86_64__
    /* x32 calls carry this bit: refuse them all. */
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1);
    prog[n++] = (struct sock_filter)ERRNO(EPERM);
#endif
    for (size_t i = 0; i < NREFUSED; i++) {
        prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, refused[i], 0, 1);
        prog[n++] = (struct sock_filter)ERRNO(EPERM);
    }
    /* clone3 passes its flags in memory the filter cannot read: ENOSYS makes libc use clone. */
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1);
    prog[n++] = (struct sock_filter)ERRNO(ENOSYS);
    /* clone: no new namespaces (its flags are the first argument on both architectures). */
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 4);
    prog[n++] = (struct sock_filter)LD_ARG0;
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, NS_FLAGS, 0, 1);
    prog[n++] = (struct sock_filter)ERRNO(EPERM);
    prog[n++] = (struct sock_filter)RET(SECCOMP_RET_ALLOW);
    if (mode == SECCOMP_NO_NETWORK) {
        /* socket(domain, ...): only AF_UNIX. */
        prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 0, 4);
        prog[n++] = (struct sock_filter)LD_ARG0;
        prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 1, 0);
        prog[n++] = (struct sock_filter)ERRNO(EPERM);
        prog[n++] = (struct sock_filter)RET(SECCOMP_RET_ALLOW);
    }
    prog[n++] = (struct sock_filter)RET(SECCOMP_RET_ALLOW);

    struct sock_fprog fprog = {.len = (unsigned short)n, .filter = prog};
    /* Without no_new_privs an unprivileged process may not install a filter, and a setuid
     * program run by the plugin could drop it. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) < 0) {
        int e = errno;
        snprintf(err, errlen, "installing the seccomp filter failed: %s", strerror(e));
        return -e;
    }
    return 0;
#endif
}

int sandbox_limit_data(size_t bytes)
{
    struct rlimit rl = {bytes, bytes};
    return setrlimit(RLIMIT_DATA, &rl) < 0 ? -errno : 0;
}

/* ---- cgroup v2 ---- */

/* Write text to dir/file (which must exist: cgroupfs makes its files). 0 or -errno. */
static int write_file(const char *dir, const char *file, const char *text)
{
    char *path = xasprintf("%s/%s", dir, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    free(path);
    if (fd < 0)
        return -errno;
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    int rc = w < 0 ? -errno : (size_t)w == len ? 0 : -EIO;
    close(fd);
    return rc;
}

/* Read dir/file (up to 4 KiB) into buf. 0 or -errno. */
static int read_file(const char *dir, const char *file, char *buf, size_t n)
{
    char *path = file ? xasprintf("%s/%s", dir, file) : xstrdup(dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0)
        return -errno;
    ssize_t r = read(fd, buf, n - 1);
    int e = errno;
    close(fd);
    if (r < 0)
        return -e;
    buf[r] = '\0';
    return 0;
}

/* True if the space-separated list has word. */
static bool has_word(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)); p += n)
        if ((p == list || p[-1] == ' ' || p[-1] == '\n') &&
            (p[n] == '\0' || p[n] == ' ' || p[n] == '\n'))
            return true;
    return false;
}

int cgroup_base_setup(cgroup_base *cg, const char *root, const char *self_cgroup, char *why,
                      size_t whylen)
{
    char buf[4096], *dir = NULL, *leaf = NULL;
    int rc;
    cg->dir = NULL;
    if ((rc = read_file(self_cgroup, NULL, buf, sizeof buf)) < 0) {
        snprintf(why, whylen, "%s: %s", self_cgroup, strerror(-rc));
        goto fail;
    }
    /* The cgroup v2 line is "0::/path". */
    char *line = strstr(buf, "0::/");
    if (!line || (line != buf && line[-1] != '\n')) {
        snprintf(why, whylen, "the host is in no cgroup v2 hierarchy (%s has no \"0::\" line)",
                 self_cgroup);
        rc = -ENOENT;
        goto fail;
    }
    line += 3;
    line[strcspn(line, "\n")] = '\0';
    dir = xasprintf("%s%s", root, strcmp(line, "/") == 0 ? "" : line);
    if ((rc = read_file(dir, "cgroup.controllers", buf, sizeof buf)) < 0) {
        snprintf(why, whylen, "%s is not a cgroup v2 folder: %s", dir, strerror(-rc));
        goto fail;
    }
    if (!has_word(buf, "memory")) {
        snprintf(why, whylen, "the memory controller is not delegated to %s (its "
                 "cgroup.controllers: \"%.*s\")", dir, (int)strcspn(buf, "\n"), buf);
        rc = -ENOTSUP;
        goto fail;
    }
    if (access(dir, W_OK) < 0) {
        rc = -errno;
        snprintf(why, whylen, "%s is not writable by the host: %s", dir, strerror(-rc));
        goto fail;
    }
    /* A cgroup that hands controllers to its children holds no processes itself. */
    leaf = xasprintf("%s/host", dir);
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    if ((mkdir(leaf, 0755) < 0 && errno != EEXIST) ||
        (rc = write_file(leaf, "cgroup.procs", pid)) < 0) {
        rc = rc < 0 ? rc : -errno;
        snprintf(why, whylen, "cannot move the host into %s: %s", leaf, strerror(-rc));
        goto fail;
    }
    if ((rc = read_file(dir, "cgroup.subtree_control", buf, sizeof buf)) < 0 ||
        (!has_word(buf, "memory") && (rc = write_file(dir, "cgroup.subtree_control",
                                                      "+memory")) < 0)) {
        snprintf(why, whylen, "cannot enable the memory controller in %s/cgroup.subtree_control: "
                 "%s", dir, strerror(-rc));
        goto fail;
    }
    free(leaf);
    cg->dir = dir;
    return 0;

fail:
    free(leaf);
    free(dir);
    return rc;
}

void cgroup_base_free(cgroup_base *cg)
{
    free(cg->dir);
    cg->dir = NULL;
}

int cgroup_worker(const cgroup_base *cg, const char *name, size_t bytes, char **path, char *why,
                  size_t whylen)
{
    char *dir = xasprintf("%s/%s", cg->dir, name);
    char max[32];
    int rc = 0;
    snprintf(max, sizeof max, "%zu", bytes);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        rc = -errno;
    else
        rc = write_file(dir, "memory.max", max);
    if (rc < 0) {
        snprintf(why, whylen, "%s: cannot set memory.max: %s", dir, strerror(-rc));
        free(dir);
        return rc;
    }
    /* Without swap accounting the file is missing: the limit then holds for RAM alone. */
    int src = write_file(dir, "memory.swap.max", "0");
    if (src < 0 && src != -ENOENT)
        log_warn("%s: cannot set memory.swap.max: %s", dir, strerror(-src));
    *path = dir;
    return 0;
}

int cgroup_move(const char *path, pid_t pid)
{
    char text[32];
    snprintf(text, sizeof text, "%d", (int)pid);
    return write_file(path, "cgroup.procs", text);
}

long cgroup_oom_kills(const char *path)
{
    char buf[4096];
    if (read_file(path, "memory.events", buf, sizeof buf) < 0)
        return -1;
    const char *p = strstr(buf, "oom_kill ");
    if (!p || (p != buf && p[-1] != '\n'))
        return -1;
    return strtol(p + 9, NULL, 10);
}

void cgroup_remove(const char *path)
{
    if (rmdir(path) < 0 && errno != ENOENT)
        log_warn("%s: cannot remove the worker's cgroup: %s", path, strerror(errno));
}

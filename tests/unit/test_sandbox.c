/*
 * test_sandbox.c - the limits of worker processes. The seccomp filter is installed in forked
 * children, which report what it refused. The cgroup v2 code runs against a fake cgroup
 * tree (plain folders and files standing in for cgroupfs, whose files the kernel would make):
 * it finds the host's cgroup, refuses one without the memory controller, moves the host into
 * a leaf, enables memory for the children, sets a worker's memory.max and reads its OOM
 * kills.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../harness/harness.h"
#include "sandbox.h"
#include "util.h"

/* Run fn in a child under the filter `mode`; its exit status. */
static int in_filtered_child(seccomp_mode mode, int (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char err[200];
        if (sandbox_seccomp(mode, err, sizeof err) < 0)
            _exit(100);
        /* _exit: a leak checker at exit would need ptrace, which the filter refuses. */
        _exit(fn());
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

/* Bit 0: ptrace refused; bit 1: an AF_INET socket refused; bit 2: an AF_UNIX socket refused;
 * bit 3: clone into a new user namespace refused. */
static int probe(void)
{
    int bits = 0;
    errno = 0;
    if (ptrace(PTRACE_PEEKDATA, getppid(), NULL, NULL) == -1 && errno == EPERM)
        bits |= 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 && errno == EPERM)
        bits |= 2;
    else if (fd >= 0)
        close(fd);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        bits |= 4;
    else
        close(fd);
    long r = syscall(SYS_clone, (unsigned long)(CLONE_NEWUSER | SIGCHLD), NULL, NULL, NULL, 0);
    if (r == 0)
        _exit(0); /* the child of an allowed clone */
    if (r > 0)
        waitpid((pid_t)r, NULL, 0);
    else if (errno == EPERM)
        bits |= 8;
    return bits;
}

static void test_seccomp(void **state)
{
    (void)state;
    int off = in_filtered_child(SECCOMP_OFF, probe);
    assert_int_equal(off & 7, 0);
    assert_int_equal(in_filtered_child(SECCOMP_BASIC, probe), 1 | 8);
    assert_int_equal(in_filtered_child(SECCOMP_NO_NETWORK, probe), 1 | 2 | 8);
}

/* ---- cgroup v2 against a fake tree ---- */

static char *root;

static void put(const char *rel, const char *text)
{
    char *p = xasprintf("%s/%s", root, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(p);
}

static char *get(const char *rel)
{
    char *p = xasprintf("%s/%s", root, rel);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    char buf[256] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    free(p);
    return xstrdup(buf);
}

static void dir(const char *rel)
{
    char *p = xasprintf("%s/%s", root, rel);
    assert_int_equal(mkdir(p, 0755), 0);
    free(p);
}

static void test_cgroup(void **state)
{
    (void)state;
    root = th_tmpdir("cgroup");
    char why[300];
    cgroup_base cg;
    char *self = xasprintf("%s/self", root);

    /* No v2 line. */
    put("self", "4:memory:/x\n");
    assert_true(cgroup_base_setup(&cg, root, self, why, sizeof why) < 0);
    assert_non_null(strstr(why, "has no \"0::\" line"));
    /* A path that is no cgroup v2 folder. */
    put("self", "4:memory:/x\n0::/svc\n");
    assert_true(cgroup_base_setup(&cg, root, self, why, sizeof why) < 0);
    assert_non_null(strstr(why, "/svc is not a cgroup v2 folder"));
    /* The memory controller not delegated. */
    dir("svc");
    put("svc/cgroup.controllers", "cpu pids\n");
    assert_true(cgroup_base_setup(&cg, root, self, why, sizeof why) < 0);
    assert_non_null(strstr(why, "the memory controller is not delegated to"));
    assert_non_null(strstr(why, "\"cpu pids\""));

    /* Delegated: the host moves into svc/host, memory is enabled for the children. */
    put("svc/cgroup.controllers", "cpu memory pids\n");
    put("svc/cgroup.subtree_control", "");
    dir("svc/host");
    put("svc/host/cgroup.procs", "");
    if (cgroup_base_setup(&cg, root, self, why, sizeof why) < 0)
        fail_msg("%s", why);
    char *want = xasprintf("%s/svc", root);
    assert_string_equal(cg.dir, want);
    char *procs = get("svc/host/cgroup.procs"), *ctl = get("svc/cgroup.subtree_control");
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    assert_string_equal(procs, pid);
    assert_string_equal(ctl, "+memory");

    /* A worker's cgroup: memory.max, the move, its OOM kills. */
    dir("svc/w-x-0");
    put("svc/w-x-0/memory.max", "max");
    put("svc/w-x-0/cgroup.procs", "");
    put("svc/w-x-0/memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n");
    char *path = NULL;
    if (cgroup_worker(&cg, "w-x-0", 64u << 20, &path, why, sizeof why) < 0)
        fail_msg("%s", why);
    char *max = get("svc/w-x-0/memory.max");
    assert_string_equal(max, "67108864");
    assert_int_equal(cgroup_move(path, 4242), 0);
    char *moved = get("svc/w-x-0/cgroup.procs");
    assert_string_equal(moved, "4242");
    assert_int_equal(cgroup_oom_kills(path), 2);
    /* A worker cgroup that cannot be made says so. */
    char *nope = NULL;
    assert_true(cgroup_worker(&cg, "no/such/w", 1u << 24, &nope, why, sizeof why) < 0);
    assert_non_null(strstr(why, "cannot set memory.max"));

    free(max);
    free(moved);
    free(path);
    free(procs);
    free(ctl);
    free(want);
    cgroup_base_free(&cg);
    free(self);
    free(root);
}

static int teardown(void **state)
{
    (void)state;
    th_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seccomp),
        cmocka_unit_test(test_cgroup),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}

/*
 * loader_host.h - what the loader tests share: the host table they hand to
 * plugins (the loader's own entries for registration and logging, and task
 * entries that a plugin's init never calls), and scratch-folder helpers.
 * Include once per test program, after <cmocka.h>.
 */
#ifndef BGT_LOADER_HOST_H
#define BGT_LOADER_HOST_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "plugin.h"
#include "util.h"

static const char *fake_task_id(const bgt_task *t)
{
    return "00000000-0000-4000-8000-000000000000";
}
static const char *fake_task_handler(const bgt_task *t) { return "fx.good"; }
static uint32_t fake_task_attempt(const bgt_task *t) { return 1; }
static int fake_task_subtask(const bgt_task *t) { return -1; }
static void fake_progress(bgt_task *t, double current, double total, const char *message) {}
static void fake_last_progress(const bgt_task *t, double *current, double *total) {}
static bool fake_cancelled(const bgt_task *t) { return false; }
static int fake_set_result(bgt_task *t, const cJSON *result) { return 0; }
static void fake_set_error(bgt_task *t, const char *fmt, va_list ap) {}
static void fake_task_log(bgt_task *t, int level, const char *fmt, va_list ap) {}
static int fake_submit(bgt_task *t, const char *name, const cJSON *args, char *id_out)
{
    return -EIO;
}
static int fake_add_subtask(bgt_task *t, const cJSON *args) { return -EPERM; }

static const bgt_api host_api = {
    .size = sizeof(bgt_api),
    .abi_major = BGT_ABI_MAJOR,
    .abi_minor = BGT_ABI_MINOR,
    .register_handler = plugin_api_register_handler,
    .register_hook = plugin_api_register_hook,
    .plugin_log = plugin_api_log,
    .task_id = fake_task_id,
    .task_handler = fake_task_handler,
    .task_attempt = fake_task_attempt,
    .task_subtask = fake_task_subtask,
    .progress = fake_progress,
    .last_progress = fake_last_progress,
    .cancelled = fake_cancelled,
    .set_result = fake_set_result,
    .set_error = fake_set_error,
    .task_log = fake_task_log,
    .submit = fake_submit,
    .add_subtask = fake_add_subtask,
};

static const char *build_dir(void)
{
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

static void remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        chmod(path, 0755);
        DIR *d = opendir(path);
        if (d) {
            struct dirent *de;
            while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                    continue;
                char *sub = xasprintf("%s/%s", path, de->d_name);
                remove_tree(sub);
                free(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* Copy a file, then give the copy mode (not subject to the umask). */
static void copy_file(const char *from, const char *to, mode_t mode)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        fail_msg("%s: %s (build the fixtures with make first)", from, strerror(errno));
    int outfd = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (outfd < 0)
        fail_msg("%s: %s", to, strerror(errno));
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        assert_int_equal(write(outfd, buf, (size_t)n), n);
    assert_int_equal(n, 0);
    assert_int_equal(fchmod(outfd, mode), 0);
    close(in);
    close(outfd);
}

#endif

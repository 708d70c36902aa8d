/*
 * logger.c - a test plugin whose handlers write bgt_log lines, for the task
 * logs kept with their records:
 *
 *   logger.lines  {"n": N=3, "bytes": B=0, "level": "info", "ms": M=0, "fail": false}
 *                 logs N lines "line i of N" (padded with 'x' to B bytes when B is
 *                 larger), at that level, sleeping M ms after each (a cancel ends it
 *                 early); then succeeds, or fails when "fail" is true
 *   logger.par    a parallel task (give it "subtasks"): subtask i logs "subtask i" at
 *                 info, then succeeds
 *
 * Loaded in thread or process isolation alike: what it logs must reach the record
 * either way.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bgtask.h>

static int level_of(const char *s)
{
    static const struct {
        const char *name;
        int level;
    } levels[] = {{"error", BGT_LOG_ERR},   {"warning", BGT_LOG_WARNING}, {"notice", BGT_LOG_NOTICE},
                  {"info", BGT_LOG_INFO},   {"debug", BGT_LOG_DEBUG}};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
        if (s && strcmp(s, levels[i].name) == 0)
            return levels[i].level;
    return BGT_LOG_INFO;
}

static double num(const cJSON *args, const char *name, double dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, name);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static bgt_status logger_lines(bgt_task *t, const cJSON *args, void *udata)
{
    (void)udata;
    int n = (int)num(args, "n", 3), bytes = (int)num(args, "bytes", 0), ms = (int)num(args, "ms", 0);
    const cJSON *lv = cJSON_GetObjectItemCaseSensitive(args, "level");
    int level = level_of(cJSON_IsString(lv) ? lv->valuestring : NULL);
    if (n < 0 || n > 100000 || bytes < 0 || bytes > 100000 || ms < 0 || ms > 60000) {
        bgt_set_error(t, "n must be 0..100000, bytes 0..100000, ms 0..60000");
        return BGT_FAILED;
    }
    char *pad = malloc((size_t)bytes + 1);
    if (!pad) {
        bgt_set_error(t, "out of memory");
        return BGT_FAILED;
    }
    for (int i = 1; i <= n; i++) {
        int head = snprintf(pad, (size_t)bytes + 1, "line %d of %d", i, n);
        if (head < bytes) {
            memset(pad + head, 'x', (size_t)(bytes - head));
            pad[bytes] = '\0';
        }
        if (bytes > 0)
            bgt_log(t, level, "%s", pad);
        else
            bgt_log(t, level, "line %d of %d", i, n);
        bgt_progress(t, i, n, NULL);
        for (int slept = 0; slept < ms && !bgt_cancelled(t); slept += 10)
            nanosleep(&(struct timespec){0, 10 * 1000000L}, NULL);
        if (bgt_cancelled(t)) {
            free(pad);
            return BGT_CANCELLED;
        }
    }
    free(pad);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(args, "fail"))) {
        bgt_set_error(t, "logger.lines was asked to fail");
        return BGT_FAILED;
    }
    return BGT_OK;
}

static bgt_status logger_par(bgt_task *t, const cJSON *args, void *udata)
{
    (void)args;
    (void)udata;
    bgt_log(t, BGT_LOG_INFO, "subtask %d", bgt_subtask(t));
    return BGT_OK;
}

static int logger_init(bgt_plugin *p, const cJSON *config)
{
    (void)config;
    int rc = bgt_register_handler(
        p, (bgt_handler_def){.name = "logger.lines", .kind = BGT_SINGLE, .run = logger_lines});
    if (rc < 0)
        return rc;
    return bgt_register_handler(
        p, (bgt_handler_def){.name = "logger.par", .kind = BGT_PARALLEL, .run = logger_par});
}

BGT_PLUGIN("logger", "1.0", logger_init, NULL);

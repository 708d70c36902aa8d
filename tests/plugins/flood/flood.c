/*
 * flood.c - a test plugin that makes a lot of events: flood.progress
 * {"reports": N, "bytes": B, "go": PATH} waits until the file PATH exists
 * (so a test can connect its streams first), then reports progress N times
 * with a message of B bytes (at most the host's 1024), 100 µs apart.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bgtask.h>

static void pause_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static bgt_status flood_progress(bgt_task *t, const cJSON *args, void *udata)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(args, "reports");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(args, "bytes");
    const cJSON *go = cJSON_GetObjectItemCaseSensitive(args, "go");
    if (!cJSON_IsNumber(n) || !cJSON_IsNumber(b) || b->valuedouble < 1 ||
        b->valuedouble > 1024 || !cJSON_IsString(go)) {
        bgt_set_error(t, "args must be {\"reports\": N, \"bytes\": 1..1024, \"go\": path}");
        return BGT_FAILED;
    }
    while (access(go->valuestring, F_OK) != 0) {
        if (bgt_cancelled(t))
            return BGT_CANCELLED;
        pause_us(10000);
    }
    size_t len = (size_t)b->valuedouble;
    char *msg = malloc(len + 1);
    if (!msg) {
        bgt_set_error(t, "out of memory");
        return BGT_RETRY;
    }
    memset(msg, 'x', len);
    msg[len] = '\0';
    int reports = (int)n->valuedouble;
    for (int i = 1; i <= reports; i++) {
        if (bgt_cancelled(t)) {
            free(msg);
            return BGT_CANCELLED;
        }
        bgt_progress(t, i, reports, msg);
        pause_us(100);
    }
    free(msg);
    return BGT_OK;
}

static int flood_init(bgt_plugin *p, const cJSON *config)
{
    return bgt_register_handler(p, (bgt_handler_def){
        .name = "flood.progress", .kind = BGT_SINGLE, .run = flood_progress, .max_attempts = 1});
}

BGT_PLUGIN("flood", "1.0", flood_init, NULL);

/*
 * hang.c - a test plugin whose init takes its time: with config
 * {"seconds": S} it sleeps S whole seconds and then registers hang.noop;
 * without it, it never returns. It says "init sleeps now" before it sleeps, so a
 * test knows when the host is inside it.
 */
#include <time.h>

#include <bgtask.h>

static bgt_status hang_noop(bgt_task *t, const cJSON *args, void *udata) { return BGT_OK; }

static int hang_init(bgt_plugin *p, const cJSON *config)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(config, "seconds");
    bgt_plugin_log(p, BGT_LOG_NOTICE, "init sleeps now");
    /* Signals are blocked in the host's threads: nothing cuts these sleeps short. */
    double seconds = cJSON_IsNumber(s) ? s->valuedouble : -1; /* < 0: for ever */
    struct timespec one = {1, 0};
    for (double slept = 0; seconds < 0 || slept < seconds; slept += 1)
        nanosleep(&one, NULL);
    return bgt_register_handler(p, (bgt_handler_def){
        .name = "hang.noop", .kind = BGT_SINGLE, .run = hang_noop});
}

BGT_PLUGIN("hang", "1.0", hang_init, NULL);

/*
 * probe.c - a test plugin with one handler the shipped plugins lack,
 * probe.hello, whose result carries the plugin's own config section and the
 * attempt: a test that loads it (at start or by SIGHUP) can tell that this
 * plugin, with that config, is the one that ran the task.
 */
#include <errno.h>
#include <stdlib.h>

#include <bgtask.h>

static void free_json(void *p) { cJSON_Delete(p); }

/* probe.hello: the result is {"config": <the plugin's config>, "attempt": N}. */
static bgt_status probe_hello(bgt_task *t, const cJSON *args, void *udata)
{
    const cJSON *config = udata;
    cJSON *r = cJSON_CreateObject();
    if (r == NULL || !cJSON_AddItemToObject(r, "config", cJSON_Duplicate(config, true)) ||
        !cJSON_AddNumberToObject(r, "attempt", bgt_attempt(t))) {
        cJSON_Delete(r);
        bgt_set_error(t, "out of memory");
        return BGT_FAILED;
    }
    int rc = bgt_set_result(t, r);
    cJSON_Delete(r);
    if (rc < 0) {
        bgt_set_error(t, "the host refused the result");
        return BGT_FAILED;
    }
    return BGT_OK;
}

/* The handler keeps its own copy of the config; the host frees it with the handler. */
static int probe_init(bgt_plugin *p, const cJSON *config)
{
    cJSON *copy = cJSON_Duplicate(config, true);
    if (copy == NULL)
        return -ENOMEM;
    bgt_plugin_log(p, BGT_LOG_INFO, "probe plugin loaded");
    return bgt_register_handler(p, (bgt_handler_def){.name = "probe.hello",
                                                     .kind = BGT_SINGLE,
                                                     .run = probe_hello,
                                                     .udata = copy,
                                                     .udata_free = free_json});
}

BGT_PLUGIN("probe", "1.0", probe_init, NULL);

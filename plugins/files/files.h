/*
 * files.h - what the two files of the files plugin share: the plugin config, and the
 * handler functions of files.cleanup (cleanup.c) that files.c registers.
 */
#ifndef FILES_H
#define FILES_H

#include <bgtask.h>

/* files.cleanup's batch_size: the default, and the bound of the setting and of the arg. */
#define CLEANUP_DEFAULT_BATCH 100
#define CLEANUP_MAX_BATCH 10000

/* What the handlers need from the plugin config: one copy per handler, handed to the host. */
struct files_config {
    long max_files;         /* checksum: files per tree; cleanup: files per task */
    int cleanup_batch_size; /* cleanup: files per subtask when args.batch_size is absent */
    char **allowed_roots;   /* cleanup: the folders it may clean up, as configured (absolute,
                               resolved at each use); owned */
    size_t nallowed;
};

/* Free a struct files_config and what it owns (its udata_free). */
void files_config_free(void *cfg);

/*
 * files.cleanup's split: checks args, lists the old files under args.path and adds one
 * subtask per batch. udata is the handler's struct files_config (borrowed).
 */
bgt_status cleanup_split(bgt_task *t, const cJSON *args, void *udata);

/* files.cleanup's run: deletes (or counts) one batch; args and udata borrowed. */
bgt_status cleanup_run(bgt_task *t, const cJSON *args, void *udata);

/* files.cleanup's merge: totals over the batches' results (borrowed). */
bgt_status cleanup_merge(bgt_task *t, const cJSON *results, void *udata);

#endif /* FILES_H */

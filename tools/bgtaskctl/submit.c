/* submit.c - bgtaskctl submit: args and subtasks from the command line or files, checked before anything is sent. */
#include "ctl.h"
#include "json_check.h"

/* ---- submit ---- */

/* Read a whole file ("-" is stdin) into a NUL-terminated heap buffer; NULL with errno. */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f)
        return NULL;
    size_t n = 0, cap = 4096, r;
    char *buf = xmalloc(cap);
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0)
        if ((n += r) == cap - 1)
            buf = xrealloc(buf, cap *= 2);
    int bad = ferror(f) ? (errno ? errno : EIO) : 0;
    if (f != stdin)
        fclose(f);
    if (bad) {
        free(buf);
        errno = bad;
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/*
 * Check that text (len bytes, from what) is JSON of the wanted type (cJSON_Object
 * or cJSON_Array) and at most max bytes (0: any). Returns EX_OK, or EX_USAGE
 * after saying where the text is wrong. *count gets the number of elements.
 */
static int check_json(const char *what, const char *text, size_t len, int type, size_t max,
                      int *count)
{
    if (strlen(text) != len) {
        fprintf(stderr, "bgtaskctl: %s: invalid JSON: a NUL byte at offset %zu\n", what,
                strlen(text));
        return EX_USAGE;
    }
    char why[160];
    if (!json_text_ok(text, len, why, sizeof why)) {
        fprintf(stderr, "bgtaskctl: %s: %s\n", what, why);
        return EX_USAGE;
    }
    if (max && len > max) {
        fprintf(stderr, "bgtaskctl: %s: %zu bytes, over the limit of %zu (tasks.max_args_bytes)\n",
                what, len, max);
        return EX_USAGE;
    }
    cJSON *v = cJSON_ParseWithOpts(text, NULL, true);
    if (!v) {
        const char *at = cJSON_GetErrorPtr(), *p;
        if (!at || at < text || at > text + len)
            at = text + len;
        int line = 1, col = 1;
        for (p = text; p < at; p++, col++)
            if (*p == '\n')
                line++, col = 0;
        char near[64];
        fprintf(stderr, "bgtaskctl: %s: invalid JSON at line %d, column %d (offset %zu): %s%s%s\n",
                what, line, col, (size_t)(at - text), *at ? "near '" : "at the end of the text",
                *at ? clean(at, 20, near, sizeof near) : "", *at ? "'" : "");
        return EX_USAGE;
    }
    bool ok = (v->type & 0xFF) == type;
    *count = cJSON_GetArraySize(v);
    cJSON_Delete(v);
    if (!ok)
        fprintf(stderr, "bgtaskctl: %s: must be a JSON %s\n", what,
                type == cJSON_Object ? "object" : "array");
    return ok ? EX_OK : EX_USAGE;
}

/* Read and check the JSON of --args / --args-file or --subtasks-file into *text. */
static int load_json(const char *inline_text, const char *file, int type, size_t max, char **text,
                     int *count)
{
    size_t len;
    const char *what = !file ? "--args" : strcmp(file, "-") == 0 ? "stdin" : file;
    if (!file)
        *text = xstrdup(inline_text), len = strlen(inline_text);
    else if (!(*text = read_all(file, &len))) {
        fprintf(stderr, "bgtaskctl: %s: %s\n", what, strerror(errno));
        return EX_USAGE;
    }
    return check_json(what, *text, len, type, max, count);
}

int cmd_submit(ctl *c, const cmd_opts *o, const char *handler)
{
    char *args = NULL, *subs = NULL;
    store *sub = NULL; /* --wait: subscribed to the task before it is submitted */
    int code = EX_USAGE, n;
    if (o->args && o->args_file)
        return usage_error("give --args or --args-file, not both");
    if (!name_valid(handler)) {
        fprintf(stderr, "bgtaskctl: bad handler name '%s': must match [a-z0-9][a-z0-9._-]{0,62}\n",
                handler);
        return EX_USAGE;
    }
    if (o->id && !id_valid(o->id)) {
        fprintf(stderr, "bgtaskctl: bad task id '%s': must be a UUID (36 characters, dashed)\n",
                o->id);
        return EX_USAGE;
    }
    if (load_json(o->args ? o->args : "{}", o->args_file, cJSON_Object, c->cfg.max_args_bytes,
                  &args, &n) != EX_OK)
        goto out;
    if (o->subtasks_file && load_json(NULL, o->subtasks_file, cJSON_Array, 0, &subs, &n) != EX_OK)
        goto out;
    /* The subtasks travel as args.subtasks, however they are given (subtasks.h). */
    char why[300], *given = NULL;
    if (subtasks_submit_args(o->args || o->args_file ? args : NULL, subs, c->cfg.max_subtasks,
                             &given, why, sizeof why) < 0) {
        bool from_args = o->args || o->args_file; /* else the subtasks file alone is wrong */
        fprintf(stderr, "bgtaskctl: %s: %s\n",
                !from_args ? o->subtasks_file : o->args_file ? o->args_file : "--args", why);
        goto out;
    }
    free(args);
    args = given;
    if (subs && strlen(args) > c->cfg.max_args_bytes) {
        fprintf(stderr,
                "bgtaskctl: %s: the subtasks make the task's args %zu bytes, over the limit of "
                "%zu (tasks.max_args_bytes)\n",
                o->subtasks_file, strlen(args), c->cfg.max_args_bytes);
        goto out;
    }
    /* Everything is checked before connecting: bad input never reaches Redis. */
    if (o->min_replicas_ack >= 0)
        c->cfg.min_replicas_ack = (int)o->min_replicas_ack;
    if ((code = ctl_open(c, &c->st)) != EX_OK)
        goto out;
    /* --wait follows the task from its first event on: it subscribes before the task
     * exists, so it needs the id first (chosen here when --id gives none). */
    char id[BGT_ID_LEN + 1];
    if (o->id) {
        for (int i = 0; i <= BGT_ID_LEN; i++) /* one spelling per id, as the store's */
            id[i] = (char)tolower((unsigned char)o->id[i]);
    } else {
        uuid4(id);
    }
    if (o->wait && (code = watch_open(c, id, &sub)) != EX_OK)
        goto out;
    submit_req req = {.id = o->wait || o->id ? id : NULL,
                      .handler = handler,
                      .args = args,
                      .max_attempts = (int)o->max_attempts,
                      .delay_s = o->delay,
                      .parallelism = (int)o->parallelism,
                      .on_failure = o->on_failure};
    int rc = store_submit(c->st, &req, 1);
    if (rc < 0) {
        code = store_fail(c, c->st, rc, "");
    } else if (req.rc == -EEXIST) {
        /* The id names a task, as after a submission: a script tells the two apart by the
         * exit code (or "exists" in the JSON), never by a missing id. */
        printf(c->json ? "{\"task_id\": \"%s\", \"exists\": true}\n" : "%s\n", req.id_out);
        fflush(stdout);
        fprintf(stderr, "bgtaskctl: task %s already exists (nothing was changed)\n", req.id_out);
        code = EX_EXISTS;
    } else if (req.rc < 0) {
        fprintf(stderr, "bgtaskctl: %s\n", req.err[0] ? req.err : strerror(-req.rc));
        code = req.rc == -EPROTO ? EX_FAIL : EX_USAGE;
    } else {
        bool unserved = !ctl_served(c, handler);
        if (c->json) {
            /* What POST /v1/tasks answers: the id, and what to know about it. */
            cJSON *j = view_submitted(req.id_out, req.not_durable ? req.err : NULL,
                                      unserved ? handler : NULL);
            print_json(j, true);
            cJSON_Delete(j);
        } else {
            printf("%s\n", req.id_out);
            fflush(stdout);
        }
        if (req.not_durable)
            fprintf(stderr,
                    "bgtaskctl: warning: task %s is not durable yet: %s; to make sure, submit it "
                    "again with --id %s (exit 6 then means it was kept)\n",
                    req.id_out, req.err, req.id_out);
        if (unserved)
            warn_unserved(handler);
        code = req.not_durable ? EX_NOT_DURABLE : EX_OK;
        if (o->wait) {
            code = watch_follow(c, sub, req.id_out, false, unserved ? mono_s() : 0);
            sub = NULL;
        }
    }
out:
    store_free(sub);
    free(args);
    free(subs);
    return code;
}

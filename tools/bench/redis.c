/* redis.c - Redis' own accounting: INFO commandstats and cpu snapshots, the cost per task between two. */
#include "bench.h"

/* ---- Redis' own accounting ---- */

void snapshot_free(snapshot *s)
{
    free(s->cmds);
    memset(s, 0, sizeof *s);
}

int snapshot_take(store *st, snapshot *s)
{
    memset(s, 0, sizeof *s);
    char *text = NULL;
    int rc = store_info(st, "commandstats", &text);
    if (rc < 0) {
        say("bench: INFO commandstats: %s", store_errstr(st));
        return rc;
    }
    size_t cap = 0;
    for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
        char name[48];
        long long calls, usec;
        if (sscanf(line, "cmdstat_%47[^:]:calls=%lld,usec=%lld", name, &calls, &usec) != 3)
            continue;
        if (s->n == cap) {
            cap = cap ? cap * 2 : 64;
            s->cmds = xrealloc(s->cmds, cap * sizeof *s->cmds);
        }
        cmdstat *c = &s->cmds[s->n++];
        strlcpy_(c->name, name, sizeof c->name);
        c->calls = calls;
        c->usec = usec;
    }
    free(text);
    if ((rc = store_info(st, "cpu", &text)) < 0) {
        say("bench: INFO cpu: %s", store_errstr(st));
        snapshot_free(s);
        return rc;
    }
    double user = 0, sys = 0;
    for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
        sscanf(line, "used_cpu_user:%lf", &user);
        sscanf(line, "used_cpu_sys:%lf", &sys);
    }
    free(text);
    s->cpu_s = user + sys;
    /* A background save or AOF rewrite forks a child that competes for the CPUs (and is
     * not in used_cpu_*): the figures of a run with one are not comparable to one without. */
    if ((rc = store_info(st, "persistence", &text)) < 0) {
        say("bench: INFO persistence: %s", store_errstr(st));
        snapshot_free(s);
        return rc;
    }
    long long rewrites = 0, saves = 0;
    int aof_on = 0;
    s->aof = -1;
    for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
        sscanf(line, "aof_rewrites:%lld", &rewrites);
        sscanf(line, "rdb_saves:%lld", &saves);
        sscanf(line, "aof_enabled:%d", &aof_on);
        sscanf(line, "aof_current_size:%lld", &s->aof);
    }
    free(text);
    s->forks = rewrites + saves;
    if (!aof_on)
        s->aof = -1;
    if ((rc = store_info(st, "memory", &text)) < 0) {
        say("bench: INFO memory: %s", store_errstr(st));
        snapshot_free(s);
        return rc;
    }
    for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n"))
        sscanf(line, "used_memory:%lld", &s->mem);
    free(text);
    return 0;
}

static const cmdstat *snapshot_find(const snapshot *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->cmds[i].name, name) == 0)
            return &s->cmds[i];
    return NULL;
}

/* Whether name is one of the NULL-terminated names. */
static bool one_of(const char *name, const char *const *names)
{
    for (int i = 0; names[i]; i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

/* Commands that run scripts: their usec include the commands the script calls. */
static bool is_script_cmd(const char *name)
{
    static const char *const names[] = {"eval",  "evalsha",  "eval_ro", "evalsha_ro",
                                        "fcall", "fcall_ro", NULL};
    return one_of(name, names);
}

/*
 * Commands the store sends on their own, never from a script: connection and setup
 * commands, subscriptions, the protocol mark. commandstats also counts every command a
 * script calls, under that command's name; whatever is neither a script call nor listed
 * here is taken to have run inside a script.
 */
static bool is_plain_cmd(const char *name)
{
    static const char *const names[] = {
        "ping",          "auth",           "select",       "hello",      "subscribe",
        "psubscribe",    "unsubscribe",    "punsubscribe", "config|get", "script|load",
        "script|exists", "client|setname", "hsetnx",       NULL};
    return one_of(name, names);
}

/* The bench's own probes (the finished count, INFO): left out of the cost. */
static bool is_probe_cmd(const char *name)
{
    return strcmp(name, "info") == 0 || strcmp(name, "llen") == 0;
}

/*
 * The cost per unit (a task, or a subtask: `unit` names it) between two snapshots, over
 * `units` of them; prints the per-command breakdown.
 */
cost snapshot_cost(const snapshot *a, const snapshot *z, long units, const char *unit,
                   const char *title)
{
    cost c = {0};
    double n = units > 0 ? (double)units : 1;
    char calls_h[32], usec_h[32];
    snprintf(calls_h, sizeof calls_h, "calls/%s", unit);
    snprintf(usec_h, sizeof usec_h, "usec/%s", unit);
    int w = (int)strlen(calls_h) > 10 ? (int)strlen(calls_h) : 10;
    printf("  %s: Redis commands per %s (commandstats; * = top level)\n", title, unit);
    printf("    %-22s %*s %*s\n", "command", w, calls_h, w, usec_h);
    for (size_t i = 0; i < z->n; i++) {
        const cmdstat *e = &z->cmds[i];
        const cmdstat *s = snapshot_find(a, e->name);
        long long calls = e->calls - (s ? s->calls : 0);
        long long usec = e->usec - (s ? s->usec : 0);
        if (calls <= 0 || is_probe_cmd(e->name))
            continue;
        bool script = is_script_cmd(e->name), top = script || is_plain_cmd(e->name);
        c.calls += (double)calls;
        if (top) {
            c.toplevel += (double)calls;
            c.usec += (double)usec;
        }
        if (script)
            c.script_calls += (double)calls;
        printf("    %-22s %*.3f %*.3f%s\n", e->name, w, (double)calls / n, w, (double)usec / n,
               top ? " *" : "");
    }
    c.calls /= n;
    c.toplevel /= n;
    c.script_calls /= n;
    c.usec /= n;
    c.cpu_usec = (z->cpu_s - a->cpu_s) * 1e6 / n;
    c.forks = z->forks - a->forks;
    c.aof_bytes = a->aof >= 0 && z->aof >= 0 && c.forks == 0 ? (double)(z->aof - a->aof) / n : -1;
    c.mem_bytes = (double)(z->mem - a->mem) / n;
    return c;
}

void cost_print(const cost *c, const char *unit)
{
    printf("    all commands %.2f/%s (top level %.2f, of which script calls %.3f)\n", c->calls,
           unit, c->toplevel, c->script_calls);
    printf("    command time %.2f us/%s, Redis CPU (INFO cpu) %.2f us/%s\n", c->usec, unit,
           c->cpu_usec, unit);
    if (c->aof_bytes >= 0)
        printf("    AOF %.0f bytes/%s\n", c->aof_bytes, unit);
    printf("    Redis memory %+.0f bytes/%s (used_memory)\n", c->mem_bytes, unit);
    if (c->forks)
        printf("    %lld background AOF rewrite(s) or save(s) ran meanwhile: a forked child "
               "shared the CPUs\n",
               c->forks);
}

/* Add the cost to j as <pre>redis_..._per_<unit>. */
void cost_json(cJSON *j, const char *pre, const char *unit, const cost *c)
{
    char key[96];
    snprintf(key, sizeof key, "%sredis_cmds_per_%s", pre, unit);
    cJSON_AddNumberToObject(j, key, round(c->calls * 100) / 100);
    snprintf(key, sizeof key, "%sredis_toplevel_per_%s", pre, unit);
    cJSON_AddNumberToObject(j, key, round(c->toplevel * 1000) / 1000);
    snprintf(key, sizeof key, "%sredis_script_calls_per_%s", pre, unit);
    cJSON_AddNumberToObject(j, key, round(c->script_calls * 1000) / 1000);
    snprintf(key, sizeof key, "%sredis_usec_per_%s", pre, unit);
    cJSON_AddNumberToObject(j, key, round(c->usec * 100) / 100);
    snprintf(key, sizeof key, "%sredis_cpu_usec_per_%s", pre, unit);
    cJSON_AddNumberToObject(j, key, round(c->cpu_usec * 100) / 100);
    snprintf(key, sizeof key, "%sredis_forks", pre);
    cJSON_AddNumberToObject(j, key, (double)c->forks);
    if (c->aof_bytes >= 0) {
        snprintf(key, sizeof key, "%saof_bytes_per_%s", pre, unit);
        cJSON_AddNumberToObject(j, key, round(c->aof_bytes));
    }
    snprintf(key, sizeof key, "%smem_bytes_per_%s", pre, unit);
    cJSON_AddNumberToObject(j, key, round(c->mem_bytes));
}

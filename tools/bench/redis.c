/* redis.c - Redis' own accounting: INFO commandstats and cpu snapshots (summed over the
 * masters), the cost per task between two. */
#include "bench.h"

/* ---- Redis' own accounting ---- */

void snapshot_free(snapshot *s)
{
    free(s->cmds);
    free(s->masters);
    memset(s, 0, sizeof *s);
}

int info_all(store *st, const char *section, store_master_text **t, size_t *n)
{
    int rc = store_info(st, section, t, n);
    if (rc < 0)
        say("bench: INFO %s: %s", section, store_errstr(st));
    return rc;
}

/* The command's entry in s, added when new. */
static cmdstat *cmd_entry(snapshot *s, size_t *cap, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->cmds[i].name, name) == 0)
            return &s->cmds[i];
    if (s->n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        s->cmds = xrealloc(s->cmds, *cap * sizeof *s->cmds);
    }
    cmdstat *c = &s->cmds[s->n++];
    memset(c, 0, sizeof *c);
    strlcpy_(c->name, name, sizeof c->name);
    return c;
}

/*
 * INFO commandstats, cpu, persistence and memory of every master (one for a single server
 * or Sentinel), summed: what a task costs Redis is the sum over the masters its shards are
 * on. Each master's CPU is kept too, to show how the work spread.
 */
int snapshot_take(store *st, snapshot *s)
{
    memset(s, 0, sizeof *s);
    store_master_text *t = NULL;
    size_t n = 0, cap = 0;
    int rc = info_all(st, "commandstats", &t, &n);
    for (size_t m = 0; rc == 0 && m < n; m++)
        for (char *line = strtok(t[m].text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
            char name[48];
            long long calls, usec;
            if (sscanf(line, "cmdstat_%47[^:]:calls=%lld,usec=%lld", name, &calls, &usec) != 3)
                continue;
            cmdstat *c = cmd_entry(s, &cap, name);
            c->calls += calls;
            c->usec += usec;
        }
    store_master_texts_free(t, n);
    if (rc == 0 && (rc = info_all(st, "cpu", &t, &n)) == 0) {
        s->nmasters = n < BENCH_MAX_MASTERS ? n : BENCH_MAX_MASTERS;
        s->masters = xcalloc(s->nmasters + 1, sizeof *s->masters);
        for (size_t m = 0; m < n; m++) {
            double user = 0, sys = 0;
            for (char *line = strtok(t[m].text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
                sscanf(line, "used_cpu_user:%lf", &user);
                sscanf(line, "used_cpu_sys:%lf", &sys);
            }
            s->cpu_s += user + sys;
            if (m < s->nmasters) {
                strlcpy_(s->masters[m].server, t[m].server, sizeof s->masters[m].server);
                s->masters[m].cpu_s = user + sys;
            }
        }
        store_master_texts_free(t, n);
    }
    /* A background save or AOF rewrite forks a child that competes for the CPUs (and is
     * not in used_cpu_*): the figures of a run with one are not comparable to one without.
     * AOF sizes add up only when every master keeps one. */
    if (rc == 0 && (rc = info_all(st, "persistence", &t, &n)) == 0) {
        bool every_aof = true;
        for (size_t m = 0; m < n; m++) {
            long long rewrites = 0, saves = 0, size = 0;
            int aof_on = 0;
            for (char *line = strtok(t[m].text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
                sscanf(line, "aof_rewrites:%lld", &rewrites);
                sscanf(line, "rdb_saves:%lld", &saves);
                sscanf(line, "aof_enabled:%d", &aof_on);
                sscanf(line, "aof_current_size:%lld", &size);
            }
            s->forks += rewrites + saves;
            s->aof += size;
            every_aof &= aof_on != 0;
        }
        if (!every_aof)
            s->aof = -1;
        store_master_texts_free(t, n);
    }
    if (rc == 0 && (rc = info_all(st, "memory", &t, &n)) == 0) {
        for (size_t m = 0; m < n; m++) {
            long long mem = 0;
            for (char *line = strtok(t[m].text, "\r\n"); line; line = strtok(NULL, "\r\n"))
                sscanf(line, "used_memory:%lld", &mem);
            s->mem += mem;
        }
        store_master_texts_free(t, n);
    }
    if (rc < 0)
        snapshot_free(s);
    return rc;
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
    for (size_t m = 0; m < z->nmasters; m++) {
        double before = 0;
        for (size_t k = 0; k < a->nmasters; k++)
            if (strcmp(a->masters[k].server, z->masters[m].server) == 0)
                before = a->masters[k].cpu_s;
        strlcpy_(c.master[m].server, z->masters[m].server, sizeof c.master[m].server);
        c.master[m].cpu_s = z->masters[m].cpu_s - before;
        c.master[m].cpu_usec = c.master[m].cpu_s * 1e6 / n;
    }
    c.nmasters = z->nmasters;
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
    for (size_t m = 0; c->nmasters > 1 && m < c->nmasters; m++)
        printf("      master %s: %.2f us/%s\n", c->master[m].server, c->master[m].cpu_usec, unit);
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
    if (c->nmasters > 1) {
        snprintf(key, sizeof key, "%sredis_masters", pre);
        cJSON *arr = cJSON_AddArrayToObject(j, key);
        for (size_t m = 0; m < c->nmasters; m++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "server", c->master[m].server);
            snprintf(key, sizeof key, "cpu_usec_per_%s", unit);
            cJSON_AddNumberToObject(o, key, round(c->master[m].cpu_usec * 100) / 100);
            cJSON_AddItemToArray(arr, o);
        }
    }
}

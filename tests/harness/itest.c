/*
 * itest.c - the integration tests' fixture and helpers (itest.h).
 */
#include "itest.h"

#include "events.h"

#include <errno.h>
#include <signal.h>

it_fixture fx;

int it_redis_start(bool aof)
{
    int rc = th_redis_start(&fx.r, aof);
    if (rc == -1)
        return -1;
    fx.up = rc == 0;
    if (fx.up)
        fx.c = th_redis_connect(&fx.r);
    return 0;
}

int it_group_setup(void **state)
{
    (void)state;
    return it_redis_start(false);
}

int it_group_teardown(void **state)
{
    (void)state;
    if (fx.c)
        redisFree(fx.c);
    fx.c = NULL;
    if (fx.up)
        th_redis_stop(&fx.r);
    th_cleanup();
    return 0;
}

int it_setup(void **state)
{
    (void)state;
    fx.nhosts = 0;
    fx.passed = false;
    if (!fx.up)
        return 0;
    redisReply *rep = redisCommand(fx.c, "FLUSHALL");
    if (!rep)
        return -1;
    freeReplyObject(rep);
    return 0;
}

int it_teardown(void **state)
{
    (void)state;
    int rc = 0;
    for (int i = 0; i < fx.nhosts; i++) {
        th_host *h = &fx.hosts[i];
        bool alive = !th_host_wait_exit(h, 0, NULL);
        int st = th_host_stop(h, 15.0);
        bool dirty = th_log_contains(h, "Sanitizer") || th_log_contains(h, "runtime error:");
        if ((alive && st != 0) || dirty) {
            fprintf(stderr, "host %s: %s\n", h->id,
                    dirty ? "sanitizer report in its log" : "did not exit 0 on SIGTERM");
            rc = -1;
        }
        if (!fx.passed || rc)
            th_log_dump(h);
    }
    fx.nhosts = 0;
    return rc;
}

void it_need_redis(void)
{
    if (!fx.up)
        skip();
}

void it_pass(void) { fx.passed = true; }

th_host *it_host_start(const th_host_opts *o)
{
    assert_true(fx.nhosts < IT_MAX_HOSTS);
    th_host *h = &fx.hosts[fx.nhosts];
    assert_int_equal(th_host_start(h, &fx.r, o), 0);
    fx.nhosts++;
    assert_true(th_host_wait_ready(h, &fx.r, IT_READY_S));
    return h;
}

bool it_host_alive(th_host *h) { return !th_host_wait_exit(h, 0, NULL); }

redisReply *it_cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(fx.c, fmt, ap);
    va_end(ap);
    if (!rep)
        fail_msg("redis: %s", fx.c->errstr);
    if (rep->type == REDIS_REPLY_ERROR)
        fail_msg("redis: %s", rep->str);
    return rep;
}

long long it_dbsize(void)
{
    redisReply *rep = it_cmd("DBSIZE");
    long long n = rep->integer;
    freeReplyObject(rep);
    return n;
}

long long it_redis_ms(void)
{
    redisReply *rep = it_cmd("TIME");
    long long ms = atoll(rep->element[0]->str) * 1000 + atoll(rep->element[1]->str) / 1000;
    freeReplyObject(rep);
    return ms;
}

char *it_bin(const char *name)
{
    const char *b = getenv("BUILD");
    char *p = NULL;
    assert_true(asprintf(&p, "%s/bin/%s", b && *b ? b : "build", name) > 0);
    return p;
}

int it_ctl_argv(char **argv)
{
    argv[0] = it_bin("bgtaskctl");
    argv[1] = "--redis";
    argv[2] = fx.r.url;
    return 3;
}

char *it_ctl(int want, char **err, const char *arg, ...)
{
    char *argv[48];
    int n = it_ctl_argv(argv);
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a; a = va_arg(ap, const char *)) {
        assert_true(n < 46);
        argv[n++] = (char *)a;
    }
    va_end(ap);
    argv[n] = NULL;
    char *out = NULL, *msg = NULL;
    int rc = th_run(60, argv, &out, &msg);
    free(argv[0]);
    if (rc != want)
        fail_msg("bgtaskctl %s ...: exit %d, want %d; stderr: %s", arg, rc, want,
                 msg ? msg : "");
    if (err)
        *err = msg;
    else
        free(msg);
    return out;
}

char *it_submit(const char *handler, const char *args, ...)
{
    char *argv[32];
    int n = it_ctl_argv(argv);
    argv[n++] = "submit";
    argv[n++] = (char *)handler;
    if (args) {
        argv[n++] = "--args";
        argv[n++] = (char *)args;
    }
    va_list ap;
    va_start(ap, args);
    for (const char *a = va_arg(ap, const char *); a; a = va_arg(ap, const char *)) {
        assert_true(n < 30);
        argv[n++] = (char *)a;
    }
    va_end(ap);
    argv[n] = NULL;
    char *out = NULL, *err = NULL;
    int rc = th_run(60, argv, &out, &err);
    free(argv[0]);
    if (rc != 0)
        fail_msg("bgtaskctl submit %s exited with %d: %s", handler, rc, err ? err : "");
    free(err);
    assert_int_equal(strlen(out), 37);
    out[36] = '\0';
    return out;
}

char *it_field(const char *id, const char *name)
{
    return th_task_field(fx.c, IT_PREFIX, id, name);
}

bool it_field_is(const char *id, const char *name, const char *want)
{
    char *v = it_field(id, name);
    bool eq = v && strcmp(v, want) == 0;
    free(v);
    return eq;
}

long long it_field_ll(const char *id, const char *name)
{
    char *v = it_field(id, name);
    long long n = v ? atoll(v) : -1;
    free(v);
    return n;
}

void it_assert_field(const char *id, const char *name, const char *want)
{
    char *v = it_field(id, name);
    if (!v)
        fail_msg("task %s: no field %s (want '%s')", id, name, want);
    if (strcmp(v, want) != 0) {
        char got[512];
        snprintf(got, sizeof got, "%s", v);
        free(v);
        fail_msg("task %s: %s is '%s', want '%s'", id, name, got, want);
    }
    free(v);
}

bool it_running_on(const char *id, const char *owner, long long attempt, long long step)
{
    return it_field_is(id, "state", "ONGOING") && it_field_is(id, "owner", owner) &&
           it_field_ll(id, "attempt") == attempt && it_field_ll(id, "progress_current") >= step;
}

void it_assert_ended_on(const char *id, const th_host *h, long long attempt)
{
    char needle[128];
    snprintf(needle, sizeof needle, "[%s] attempt %lld: ", id, attempt);
    /* The host logs an end once Redis has it: the record may be read a moment before. */
    if (!TH_WAIT_UNTIL(5, th_log_contains(h, needle)))
        fail_msg("host %s's log does not say it ended attempt %lld of task %s", h->id, attempt, id);
}

bool it_host_listed(const char *host_id) { return th_host_expiry(fx.c, IT_PREFIX, host_id) >= 0; }

bool it_wait_state(const char *id, const char *state, double timeout_s)
{
    return TH_WAIT_UNTIL(timeout_s, it_field_is(id, "state", state));
}

cJSON *it_field_json(const char *id, const char *name)
{
    char *v = it_field(id, name);
    cJSON *j = v ? cJSON_Parse(v) : NULL;
    free(v);
    return j;
}

struct collect {
    const char *id;
    cJSON *list;
};

static void collect_event(void *arg, const char *sid, const char *task_id, const char *name,
                          const char *data)
{
    struct collect *k = arg;
    if (!task_id || strcmp(task_id, k->id) != 0)
        return;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "ms", (double)atoll(sid));
    cJSON_AddStringToObject(o, "event", name ? name : "");
    cJSON *d = data ? cJSON_Parse(data) : NULL;
    if (!d)
        fail_msg("event %s of task %s: data is not JSON: %s", sid, k->id, data ? data : "(none)");
    cJSON_AddItemToObject(o, "data", d);
    cJSON_AddItemToArray(k->list, o);
}

cJSON *it_events(const char *id)
{
    struct collect k = {id, cJSON_CreateArray()};
    th_each_event(fx.c, IT_PREFIX, collect_event, &k);
    return k.list;
}

const char *it_ev_name(const cJSON *e) { return cJSON_GetObjectItem(e, "event")->valuestring; }

const cJSON *it_ev_data(const cJSON *e) { return cJSON_GetObjectItem(e, "data"); }

const char *it_ev_message(const cJSON *e)
{
    const cJSON *m = cJSON_GetObjectItem(it_ev_data(e), "message");
    return cJSON_IsString(m) ? m->valuestring : "";
}

double it_ev_number(const cJSON *e, const char *field)
{
    const cJSON *v = cJSON_GetObjectItem(it_ev_data(e), field);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

int it_count_released(const char *id, const char *host, int attempt)
{
    char says[128];
    snprintf(says, sizeof says, "released by host %s", host);
    cJSON *evs = it_events(id);
    int released = 0;
    const cJSON *e;
    cJSON_ArrayForEach (e, evs) {
        if (strcmp(it_ev_name(e), "bgtask_updated") == 0 && strstr(it_ev_message(e), says)) {
            released++;
            assert_int_equal((int)it_ev_number(e, "attempt"), attempt);
        }
    }
    cJSON_Delete(evs);
    return released;
}

bool it_ev_terminal(const cJSON *e) { return ev_name_terminal(it_ev_name(e)); }

void it_assert_one_terminal(const char *id, const char *name)
{
    cJSON *evs = it_events(id);
    int terminal = 0;
    const cJSON *e, *last = NULL;
    cJSON_ArrayForEach (e, evs) {
        terminal += it_ev_terminal(e);
        last = e;
        /* Every bgtask_updated carries the progress, whatever it says (a retry, a
         * release, a re-run of failed subtasks): Backend.AI's clients read it. */
        if (strcmp(it_ev_name(e), "bgtask_updated") == 0 &&
            (!cJSON_IsNumber(cJSON_GetObjectItem(it_ev_data(e), "current_progress")) ||
             !cJSON_IsNumber(cJSON_GetObjectItem(it_ev_data(e), "total_progress"))))
            fail_msg("task %s: a bgtask_updated without current_progress and total_progress "
                     "(\"%s\")",
                     id, it_ev_message(e));
    }
    if (terminal != 1 || !last || strcmp(it_ev_name(last), name) != 0) {
        char *s = cJSON_Print(evs);
        fprintf(stderr, "events of %s:\n%s\n", id, s);
        free(s);
        cJSON_Delete(evs);
        fail_msg("task %s: %d terminal event(s), want exactly one %s, last", id, terminal, name);
    }
    cJSON_Delete(evs);
    assert_int_equal(th_count_events(fx.c, IT_PREFIX, id, name), 1);
    static const char *const states[][2] = {{"bgtask_done", "SUCCESS"},
                                            {"bgtask_failed", "FAILURE"},
                                            {"bgtask_cancelled", "CANCELLED"},
                                            {"bgtask_partial_success", "SUCCESS"}};
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
        if (strcmp(states[i][0], name) == 0)
            it_assert_field(id, "state", states[i][1]);
}

void it_write_file(const char *path, const char *text)
{
    char *tmp = NULL;
    assert_true(asprintf(&tmp, "%s.tmp", path) > 0);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, path), 0);
    free(tmp);
}

char *it_read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    assert_true(len >= 0);
    rewind(f);
    char *text = malloc((size_t)len + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
    text[len] = '\0';
    fclose(f);
    return text;
}

/* modes.c - submitting no-op tasks, waiting for them, and the bench's modes. */
#include "bench.h"

/* ---- submitting and waiting ---- */

/* Submit n bench.noop tasks in batches of b->batch, within --timeout. Returns 0 or the
 * first error. */
int submit_noops(const bench *b, store *st, long n)
{
    submit_req *reqs = xcalloc((size_t)b->batch, sizeof *reqs);
    int rc = 0;
    double end = mono_s() + b->timeout_s;
    for (long done = 0; done < n && !interrupted;) {
        if (mono_s() > end) {
            say("bench: %ld of %ld tasks submitted within %.0fs (--timeout)", done, n,
                b->timeout_s);
            rc = -ETIMEDOUT;
            break;
        }
        size_t k = (size_t)(n - done < b->batch ? n - done : b->batch);
        for (size_t i = 0; i < k; i++)
            reqs[i] = (submit_req){.handler = "bench.noop"};
        if ((rc = store_submit(st, reqs, k)) < 0) {
            say("bench: submit: %s", store_errstr(st));
            break;
        }
        for (size_t i = 0; i < k; i++)
            if (reqs[i].rc < 0) {
                say("bench: submit: %s", reqs[i].err);
                rc = reqs[i].rc;
                goto out;
            }
        done += (long)k;
    }
out:
    free(reqs);
    return rc < 0 ? rc : interrupted ? -EINTR : 0;
}

/*
 * Wait until the finished count reaches n, polling every POLL_S. *t_first gets the time
 * the first finished task was seen, *t_done the time all were, *got the last count.
 * -ETIMEDOUT when the run (which began at start) has taken --timeout, or when nothing
 * finished for STALL_S; -ECHILD when one of the hosts h[0..nh) exits, -EINTR on a signal.
 */
int wait_finished(const bench *b, store *st, host_proc *h, int nh, long n, double start,
                  double *t_first, double *t_done, long long *got)
{
    double moved = mono_s();
    long long last = -1;
    *t_first = 0;
    *got = 0;
    for (;;) {
        long long c;
        int rc = store_count_finished(st, "bench.noop", &c);
        double now = mono_s();
        if (rc < 0) {
            say("bench: reading the finished count: %s", store_errstr(st));
            return rc;
        }
        *got = c;
        if (c > 0 && *t_first == 0)
            *t_first = now;
        if (c >= n) {
            *t_done = now;
            return 0;
        }
        if (c != last) {
            last = c;
            moved = now;
        }
        if (interrupted)
            return -EINTR;
        for (int i = 0; i < nh; i++)
            if (!host_alive(&h[i]))
                return -ECHILD;
        if (now - moved > STALL_S || now - start > b->timeout_s) {
            say("bench: %lld of %ld tasks finished after %.1fs; %s", c, n, now - start,
                now - moved > STALL_S ? "nothing finished for 10s" : "out of time (--timeout)");
            return -ETIMEDOUT;
        }
        sleep_s(POLL_S);
    }
}

/* A fresh connection for the bench's own calls. */
store *open_store(const bench *b, const char *prefix)
{
    bgt_config cfg;
    config_defaults(&cfg);
    free(cfg.prefix);
    cfg.prefix = xstrdup(prefix);
    store *st = store_open(&cfg, &b->addr);
    config_free(&cfg);
    if (store_connect(st) < 0) {
        say("bench: %s", store_errstr(st));
        store_free(st);
        return NULL;
    }
    return st;
}

static double self_cpu_s(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return cpu_s(&u);
}

/*
 * Wait (up to HOST_STOP_S) until no master runs a background AOF rewrite or save: one
 * left over from an earlier run would share the CPUs with the next.
 */
int wait_redis_quiet(store *st)
{
    double end = mono_s() + HOST_STOP_S;
    for (;;) {
        store_master_text *t;
        size_t n;
        int rc = info_all(st, "persistence", &t, &n);
        if (rc < 0)
            return rc;
        int busy = 0;
        for (size_t m = 0; m < n; m++)
            for (char *line = strtok(t[m].text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
                int on = 0;
                if (sscanf(line, "aof_rewrite_in_progress:%d", &on) == 1 ||
                    sscanf(line, "rdb_bgsave_in_progress:%d", &on) == 1)
                    busy += on;
            }
        store_master_texts_free(t, n);
        if (!busy)
            return 0;
        if (interrupted)
            return -EINTR;
        if (mono_s() > end) {
            say("bench: redis still runs a background save or AOF rewrite after %.0fs",
                HOST_STOP_S);
            return -ETIMEDOUT;
        }
        sleep_s(0.05);
    }
}

/* ---- the modes ---- */

/* drain: submit everything with no host running, then start one and time it. */
int run_drain(bench *b)
{
    host_proc h = {0};
    snapshot s0 = {0}, s1 = {0}, s2 = {0};
    int rc = host_write_config(b, &h, "drain");
    if (rc < 0)
        return rc;
    store *st = open_store(b, h.prefix);
    if (!st) {
        host_finish(b, &h, false);
        return -EIO;
    }
    printf("drain: %ld tasks submitted in batches of %d, then one host with %d workers\n", b->tasks,
           b->batch, b->workers);
    if ((rc = wait_redis_quiet(st)) < 0 || (rc = snapshot_take(st, &s0)) < 0)
        goto out;
    double t0 = mono_s(), cpu0 = self_cpu_s();
    if ((rc = submit_noops(b, st, b->tasks)) < 0)
        goto out;
    double t1 = mono_s(), cpu1 = self_cpu_s();
    if ((rc = snapshot_take(st, &s1)) < 0)
        goto out;
    double submit_rate = (double)b->tasks / (t1 - t0);
    printf("  submit: %.3fs, %.0f tasks/s (the bench's CPU: %.2f us/task)\n", t1 - t0, submit_rate,
           (cpu1 - cpu0) * 1e6 / (double)b->tasks);
    cJSON_AddNumberToObject(b->json, "submit_rate", round(submit_rate));
    cost sc = snapshot_cost(&s0, &s1, b->tasks, "task", "submit alone");
    cost_print(&sc, "task");
    cost_json(b->json, "submit_", "task", &sc);

    double t2 = mono_s();
    if ((rc = host_start(b, &h)) < 0)
        goto out;
    double t_first, t_done;
    long long got;
    rc = wait_finished(b, st, &h, 1, b->tasks, t2, &t_first, &t_done, &got);
    if (rc < 0) {
        double t = mono_s() - t2;
        printf("  drain: INCOMPLETE: %lld of %ld tasks in %.3fs (%.0f tasks/s)\n", got, b->tasks, t,
               (double)got / t);
        goto out;
    }
    if ((rc = snapshot_take(st, &s2)) < 0)
        goto out;
    double drain_tps = (double)b->tasks / (t_done - t2);
    double steady = t_done > t_first ? (double)(b->tasks - 1) / (t_done - t_first) : drain_tps;
    printf("  drain: %.3fs from the host's start, %.0f tasks/s (first finished after %.1f ms; "
           "%.0f tasks/s from then)\n",
           t_done - t2, drain_tps, (t_first - t2) * 1e3, steady);
    cJSON_AddNumberToObject(b->json, "drain_tps", round(drain_tps));
    cJSON_AddNumberToObject(b->json, "drain_steady_tps", round(steady));
    cJSON_AddNumberToObject(b->json, "drain_first_done_ms", round((t_first - t2) * 1e4) / 10);
    cost dc =
        snapshot_cost(&s0, &s2, b->tasks, "task", "submit + drain (the whole life of a task)");
    cost_print(&dc, "task");
    cost_json(b->json, "", "task", &dc);
    rc = host_stop(&h);
    if (rc == 0) {
        double host_us = cpu_s(&h.usage) * 1e6 / (double)b->tasks;
        printf("  bgtaskd CPU (its whole life): %.2f us/task\n", host_us);
        cJSON_AddNumberToObject(b->json, "host_cpu_usec_per_task", round(host_us * 100) / 100);
    }
out:
    host_finish(b, &h, rc == 0);
    snapshot_free(&s0);
    snapshot_free(&s1);
    snapshot_free(&s2);
    store_free(st);
    return rc;
}

/* mixed: a host is running; submit while it consumes. */
int run_mixed(bench *b)
{
    host_proc h = {0};
    snapshot s0 = {0}, s1 = {0};
    int rc = host_write_config(b, &h, "mixed");
    if (rc < 0)
        return rc;
    store *st = open_store(b, h.prefix);
    if (!st) {
        host_finish(b, &h, false);
        return -EIO;
    }
    printf("mixed: %ld tasks submitted in batches of %d while one host with %d workers runs "
           "them\n",
           b->tasks, b->batch, b->workers);
    if ((rc = host_start(b, &h)) < 0 || (rc = host_wait_registered(st, &h)) < 0 ||
        (rc = wait_redis_quiet(st)) < 0 || (rc = snapshot_take(st, &s0)) < 0)
        goto out;
    double t0 = mono_s();
    if ((rc = submit_noops(b, st, b->tasks)) < 0)
        goto out;
    double t1 = mono_s();
    double t_first, t_done;
    long long got;
    rc = wait_finished(b, st, &h, 1, b->tasks, t0, &t_first, &t_done, &got);
    if (rc < 0) {
        double t = mono_s() - t0;
        printf("  mixed: INCOMPLETE: %lld of %ld tasks in %.3fs (%.0f tasks/s)\n", got, b->tasks, t,
               (double)got / t);
        goto out;
    }
    if ((rc = snapshot_take(st, &s1)) < 0)
        goto out;
    double e2e = (double)b->tasks / (t_done - t0);
    printf("  submit: %.3fs (%.0f tasks/s while the host ran)\n", t1 - t0,
           (double)b->tasks / (t1 - t0));
    printf("  end to end: %.3fs from the first submit to the last finished, %.0f tasks/s\n",
           t_done - t0, e2e);
    cJSON_AddNumberToObject(b->json, "e2e_tps", round(e2e));
    cJSON_AddNumberToObject(b->json, "mixed_submit_rate", round((double)b->tasks / (t1 - t0)));
    cost c = snapshot_cost(&s0, &s1, b->tasks, "task", "mixed");
    cost_print(&c, "task");
    cost_json(b->json, "mixed_", "task", &c);
    rc = host_stop(&h);
    if (rc == 0) {
        double host_us = cpu_s(&h.usage) * 1e6 / (double)b->tasks;
        printf("  bgtaskd CPU (its whole life): %.2f us/task\n", host_us);
        cJSON_AddNumberToObject(b->json, "mixed_host_cpu_usec_per_task",
                                round(host_us * 100) / 100);
    }
out:
    host_finish(b, &h, rc == 0);
    snapshot_free(&s0);
    snapshot_free(&s1);
    store_free(st);
    return rc;
}

/*
 * aof: the AOF bytes a task costs, from its submit to its end, over a drain of --aof-tasks
 * tasks. Redis rewrites its AOF in the background when it has grown by
 * auto-aof-rewrite-percentage, and a rewrite shrinks the file: the setting is 0 (no
 * automatic rewrite) for this run and restored after it. Skipped when AOF is off.
 */
int run_aof(bench *b)
{
    host_proc h = {0};
    snapshot s0 = {0}, s1 = {0};
    char old[32] = "";
    int rc = host_write_config(b, &h, "aof");
    if (rc < 0)
        return rc;
    store *st = open_store(b, h.prefix);
    if (!st) {
        host_finish(b, &h, false);
        return -EIO;
    }
    if ((rc = snapshot_take(st, &s0)) < 0)
        goto out;
    if (s0.aof < 0) {
        printf("aof: skipped: the server keeps no AOF\n");
        goto out;
    }
    printf("aof: %ld tasks submitted, then drained by one host; automatic AOF rewrites off\n",
           b->aof_tasks);
    store_master_text *pct = NULL;
    size_t npct = 0;
    if ((rc = store_config_get(st, "auto-aof-rewrite-percentage", &pct, &npct)) == 0)
        strlcpy_(old, pct[0].text, sizeof old); /* the bench's servers share one setting */
    store_master_texts_free(pct, npct);
    if (rc < 0 || (rc = store_config_set(st, "auto-aof-rewrite-percentage", "0")) < 0) {
        say("bench: auto-aof-rewrite-percentage: %s", store_errstr(st));
        goto out;
    }
    snapshot_free(&s0);
    if ((rc = wait_redis_quiet(st)) < 0 || (rc = snapshot_take(st, &s0)) < 0 ||
        (rc = submit_noops(b, st, b->aof_tasks)) < 0)
        goto out;
    double t0 = mono_s(), t_first, t_done;
    long long got;
    if ((rc = host_start(b, &h)) < 0 ||
        (rc = wait_finished(b, st, &h, 1, b->aof_tasks, t0, &t_first, &t_done, &got)) < 0 ||
        (rc = snapshot_take(st, &s1)) < 0)
        goto out;
    if (s1.forks != s0.forks) {
        say("bench: a background save or rewrite ran during the aof run: no figure");
        rc = -EAGAIN;
        goto out;
    }
    double per = (double)(s1.aof - s0.aof) / (double)b->aof_tasks;
    printf("  AOF: %.0f bytes/task (submit to end)\n", per);
    cJSON_AddNumberToObject(b->json, "aof_tasks", (double)b->aof_tasks);
    cJSON_AddNumberToObject(b->json, "aof_bytes_per_task", round(per));
    rc = host_stop(&h);
out:
    if (old[0] && store_config_set(st, "auto-aof-rewrite-percentage", old) < 0)
        say("bench: could not restore auto-aof-rewrite-percentage %s: %s", old, store_errstr(st));
    host_finish(b, &h, rc == 0);
    snapshot_free(&s0);
    snapshot_free(&s1);
    store_free(st);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The nearest-rank percentile p (0..1) of sorted v[0..n). */
static double percentile(const double *v, long n, double p)
{
    long i = (long)ceil(p * (double)n) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/*
 * Wait on the subscriber for the terminal event of task id. Returns 0 with *at its
 * arrival time, or a negative errno; a failed or cancelled task is -EPROTO.
 */
static int wait_terminal(store *sub, const char *id, double end, double *at)
{
    for (;;) {
        double left = end - mono_s();
        if (left <= 0 || interrupted)
            return interrupted ? -EINTR : -ETIMEDOUT;
        char *name;
        cJSON *data;
        int rc = store_next_event(sub, left, &name, &data);
        if (rc == -ETIMEDOUT || rc == -EINTR)
            continue;
        if (rc == -EPROTO)
            continue; /* not an event message: skip it */
        if (rc < 0)
            return rc;
        *at = mono_s();
        const cJSON *tid = cJSON_GetObjectItemCaseSensitive(data, "task_id");
        bool mine = cJSON_IsString(tid) && strcmp(tid->valuestring, id) == 0;
        bool terminal = ev_name_terminal(name), done = ev_kind_of(name) == EV_DONE;
        if (mine && terminal && !done)
            say("bench: task %s ended with %s", id, name);
        rc = mine && terminal ? (done ? 0 : -EPROTO) : 1;
        free(name);
        cJSON_Delete(data);
        if (rc <= 0)
            return rc;
    }
}

/*
 * latency: one bench.noop at a time on an idle host. The end of a sample is the arrival
 * of the task's terminal event on a subscriber connection (subscribed to every task's
 * channel once, before the first submit): the event is published by the same script
 * that finishes the task, so it marks the end without polling.
 */
int run_latency(bench *b)
{
    host_proc h = {0};
    int rc = host_write_config(b, &h, "latency");
    if (rc < 0)
        return rc;
    store *st = open_store(b, h.prefix), *sub = open_store(b, h.prefix);
    double *lat = xcalloc((size_t)b->samples, sizeof *lat);
    double claim_sum = 0, run_sum = 0;
    long n = 0, claim_n = 0;
    snapshot s0 = {0}, s1 = {0};
    if (!st || !sub) {
        rc = -EIO;
        goto out;
    }
    printf("latency: %ld samples of one bench.noop at a time, host idle in between\n", b->samples);
    if ((rc = store_subscribe_all(sub)) < 0) {
        say("bench: subscribe: %s", store_errstr(sub));
        goto out;
    }
    if ((rc = host_start(b, &h)) < 0 || (rc = host_wait_registered(st, &h)) < 0 ||
        (rc = wait_redis_quiet(st)) < 0 || (rc = snapshot_take(st, &s0)) < 0)
        goto out;
    for (; n < b->samples; n++) {
        submit_req q = {.handler = "bench.noop"};
        char id[BGT_ID_LEN + 1];
        uuid4(id);
        q.id = id;
        double t0 = mono_s(), t1;
        if ((rc = store_submit(st, &q, 1)) < 0 || (rc = q.rc) < 0) {
            say("bench: submit: %s", q.err[0] ? q.err : store_errstr(st));
            break;
        }
        if ((rc = wait_terminal(sub, id, t0 + SAMPLE_S, &t1)) < 0) {
            if (rc == -ETIMEDOUT)
                say("bench: sample %ld: task %s did not finish within %.0fs", n + 1, id, SAMPLE_S);
            break;
        }
        lat[n] = (t1 - t0) * 1e3;
        /* Redis' clock in whole ms: coarse one by one, but the mean over many is fair. */
        cJSON *rec;
        if (store_get_task(st, id, &rec) == 0) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(rec, "created_ms");
            const cJSON *s = cJSON_GetObjectItemCaseSensitive(rec, "started_ms");
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(rec, "finished_ms");
            if (cJSON_IsNumber(c) && cJSON_IsNumber(s) && cJSON_IsNumber(f)) {
                claim_sum += s->valuedouble - c->valuedouble;
                run_sum += f->valuedouble - s->valuedouble;
                claim_n++;
            }
            cJSON_Delete(rec);
        }
        if (!host_alive(&h)) {
            rc = -ECHILD;
            break;
        }
    }
    if (n > 0) {
        double sum = 0;
        for (long i = 0; i < n; i++)
            sum += lat[i];
        qsort(lat, (size_t)n, sizeof *lat, cmp_double);
        double p50 = percentile(lat, n, 0.50), p99 = percentile(lat, n, 0.99);
        double p999 = percentile(lat, n, 0.999), max = lat[n - 1];
        printf("  submit -> done (terminal event received), %ld samples%s:\n", n,
               n < b->samples ? " (INCOMPLETE)" : "");
        printf("    min %.3f  p50 %.3f  mean %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms\n", lat[0],
               p50, sum / (double)n, p99, p999, max);
        if (claim_n)
            printf("    mean by Redis' clock (1 ms steps): submit -> claimed %.3f ms, "
                   "claimed -> finished %.3f ms\n",
                   claim_sum / (double)claim_n, run_sum / (double)claim_n);
        cJSON_AddNumberToObject(b->json, "pickup_samples", (double)n);
        cJSON_AddNumberToObject(b->json, "pickup_p50_ms", round(p50 * 1000) / 1000);
        cJSON_AddNumberToObject(b->json, "pickup_p99_ms", round(p99 * 1000) / 1000);
        cJSON_AddNumberToObject(b->json, "pickup_max_ms", round(max * 1000) / 1000);
        cJSON_AddNumberToObject(b->json, "pickup_mean_ms", round(sum / (double)n * 1000) / 1000);
        if (claim_n)
            cJSON_AddNumberToObject(b->json, "claim_mean_ms",
                                    round(claim_sum / (double)claim_n * 1000) / 1000);
        if (snapshot_take(st, &s1) == 0) {
            long long forks = s1.forks - s0.forks;
            if (forks)
                printf("    %lld background AOF rewrite(s) or save(s) ran meanwhile\n", forks);
            cJSON_AddNumberToObject(b->json, "pickup_redis_forks", (double)forks);
        }
    }
out:
    host_finish(b, &h, rc == 0);
    snapshot_free(&s0);
    snapshot_free(&s1);
    free(lat);
    store_free(sub);
    store_free(st);
    return rc;
}

/* A number field of a task record, or -1 when it has none. */
static double rec_number(const cJSON *rec, const char *field)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, field);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/*
 * parallel: one bench.parallel task of --subtasks no-op subtasks on an idle host. As for a
 * latency sample, its end is the arrival of its terminal event on a subscriber connection
 * (subscribed to the task's channel before the submit); the rate is the subtasks over
 * submit -> done, which takes in the claim, the split and its write, and the end. The
 * record then says whether every subtask succeeded. (Its started_ms and finished_ms are
 * no measure here: a script reads Redis' clock once, when it starts, and the host records
 * a burst of subtask ends in one script call, which may run for a good part of the task.)
 */
int run_parallel(bench *b)
{
    host_proc h = {0};
    snapshot s0 = {0}, s1 = {0};
    cJSON *rec = NULL;
    int rc = host_write_config(b, &h, "parallel");
    if (rc < 0)
        return rc;
    store *st = open_store(b, h.prefix), *sub = open_store(b, h.prefix);
    if (!st || !sub) {
        rc = -EIO;
        goto out;
    }
    char id[BGT_ID_LEN + 1];
    uuid4(id);
    printf("parallel: one bench.parallel task of %ld no-op subtasks, one host with %d workers\n",
           b->subtasks, b->workers);
    if ((rc = store_subscribe_task(sub, id)) < 0) {
        say("bench: subscribe: %s", store_errstr(sub));
        goto out;
    }
    if ((rc = host_start(b, &h)) < 0 || (rc = host_wait_registered(st, &h)) < 0 ||
        (rc = wait_redis_quiet(st)) < 0 || (rc = snapshot_take(st, &s0)) < 0)
        goto out;

    char args[64];
    snprintf(args, sizeof args, "{\"n\": %ld}", b->subtasks);
    submit_req q = {.id = id, .handler = "bench.parallel", .args = args};
    double t0 = mono_s(), t1 = 0, end = t0 + b->timeout_s;
    if ((rc = store_submit(st, &q, 1)) < 0 || (rc = q.rc) < 0) {
        say("bench: submit: %s", q.err[0] ? q.err : store_errstr(st));
        goto out;
    }
    /* Wait in short slices, so that a host that dies is noticed before --timeout. */
    for (;;) {
        rc = wait_terminal(sub, id, fmin(mono_s() + PARALLEL_CHECK_S, end), &t1);
        if (rc != -ETIMEDOUT)
            break;
        if (!host_alive(&h)) {
            rc = -ECHILD;
            break;
        }
        if (mono_s() >= end) {
            say("bench: task %s did not finish within %.0fs (--timeout)", id, b->timeout_s);
            break;
        }
    }
    if (store_get_task(st, id, &rec) < 0)
        rec = NULL;
    double ok = rec_number(rec, "sub_success"), failed = rec_number(rec, "sub_failure");
    if (rc < 0) {
        double t = mono_s() - t0;
        printf("  parallel: INCOMPLETE: %.0f of %ld subtasks succeeded in %.3fs "
               "(%.0f subtasks/s)\n",
               ok < 0 ? 0 : ok, b->subtasks, t, (ok < 0 ? 0 : ok) / t);
        goto out;
    }
    if (ok != (double)b->subtasks) {
        say("bench: task %s ended with %.0f of %ld subtasks succeeded, %.0f failed", id, ok,
            b->subtasks, failed);
        rc = -EPROTO;
        goto out;
    }
    if ((rc = snapshot_take(st, &s1)) < 0)
        goto out;

    double sps = (double)b->subtasks / (t1 - t0);
    printf("  submit -> done (terminal event received): %.3fs, %.0f subtasks/s\n", t1 - t0, sps);
    cJSON_AddNumberToObject(b->json, "parallel_subtasks", (double)b->subtasks);
    cJSON_AddNumberToObject(b->json, "parallel_sps", round(sps));
    cost c = snapshot_cost(&s0, &s1, b->subtasks, "subtask",
                           "parallel (submit, split, every subtask, the end)");
    cost_print(&c, "subtask");
    cost_json(b->json, "parallel_", "subtask", &c);
    rc = host_stop(&h);
    if (rc == 0) {
        double host_us = cpu_s(&h.usage) * 1e6 / (double)b->subtasks;
        printf("  bgtaskd CPU (its whole life): %.2f us/subtask\n", host_us);
        cJSON_AddNumberToObject(b->json, "parallel_host_cpu_usec_per_subtask",
                                round(host_us * 100) / 100);
    }
out:
    host_finish(b, &h, rc == 0);
    snapshot_free(&s0);
    snapshot_free(&s1);
    cJSON_Delete(rec);
    store_free(sub);
    store_free(st);
    return rc;
}

/* used_memory now, summed over the masters, or -1 (said why). */
static long long used_memory(store *st)
{
    store_master_text *t;
    size_t n;
    if (info_all(st, "memory", &t, &n) < 0)
        return -1;
    long long sum = 0;
    for (size_t m = 0; m < n; m++) {
        long long mem = 0;
        for (char *line = strtok(t[m].text, "\r\n"); line; line = strtok(NULL, "\r\n"))
            sscanf(line, "used_memory:%lld", &mem);
        sum += mem;
    }
    store_master_texts_free(t, n);
    return sum;
}

/* Wait until at most `most` tasks are open (not finished); 0, or a negative errno. */
static int wait_open_below(const bench *b, store *st, host_proc *h, long long most, double end)
{
    for (;;) {
        long long open;
        int rc = store_count_open(st, &open);
        if (rc < 0) {
            say("bench: counting open tasks: %s", store_errstr(st));
            return rc;
        }
        if (open <= most)
            return 0;
        if (interrupted)
            return -EINTR;
        if (!host_alive(h))
            return -ECHILD;
        if (mono_s() > end) {
            say("bench: %lld tasks still open at the end of --timeout", open);
            return -ETIMEDOUT;
        }
        sleep_s(0.02);
    }
}

/*
 * flat: --flat-tasks tasks (default 1,000,000) through a running host with
 * tasks.retention_max = --retention-max, submitted in batches while it runs (at most
 * FLAT_AHEAD open at once). Redis' used_memory is sampled every tenth of the run: once
 * the kept records reach retention_max it must stay flat. Memory per kept record is the
 * growth over the run divided by the records kept at its end (the events stream, capped
 * by events.maxlen, is in it).
 */
#define FLAT_AHEAD 50000
int run_flat(bench *b)
{
    host_proc h = {0};
    snapshot s0 = {0}, s1 = {0};
    int rc = host_write_config(b, &h, "flat");
    if (rc < 0)
        return rc;
    store *st = open_store(b, h.prefix);
    if (!st) {
        host_finish(b, &h, false);
        return -EIO;
    }
    printf("flat: %ld tasks through one host with tasks.retention_max = %ld\n", b->flat_tasks,
           b->retention_max);
    long long mem[11] = {0};
    double end = mono_s() + b->timeout_s;
    if ((rc = host_start(b, &h)) < 0 || (rc = host_wait_registered(st, &h)) < 0 ||
        (rc = wait_redis_quiet(st)) < 0 || (rc = snapshot_take(st, &s0)) < 0)
        goto out;
    mem[0] = s0.mem;
    double t0 = mono_s();
    long step = b->flat_tasks / 10 > 0 ? b->flat_tasks / 10 : 1;
    for (long done = 0, next = step, k = 1; done < b->flat_tasks;) {
        long n = b->flat_tasks - done < b->batch * 10L ? b->flat_tasks - done : b->batch * 10L;
        if ((rc = submit_noops(b, st, n)) < 0 ||
            (rc = wait_open_below(b, st, &h, FLAT_AHEAD, end)) < 0)
            goto out;
        done += n;
        if (done >= next && k < 10) {
            mem[k++] = used_memory(st);
            next += step;
        }
    }
    if ((rc = wait_open_below(b, st, &h, 0, end)) < 0 || (rc = snapshot_take(st, &s1)) < 0)
        goto out;
    double t1 = mono_s();
    mem[10] = s1.mem;
    long long kept = 0;
    if ((rc = store_count_finished(st, "bench.noop", &kept)) < 0) {
        say("bench: counting kept tasks: %s", store_errstr(st));
        goto out;
    }
    printf("  %.0f tasks/s; Redis used_memory (MB) at each tenth of the run:\n   ",
           (double)b->flat_tasks / (t1 - t0));
    for (int i = 0; i <= 10; i++)
        printf(" %.1f", (double)mem[i] / 1e6);
    printf("\n");
    /* Flat: over the second half of the run, once retention is full, the spread of the
     * samples taken while tasks flow (the last one is taken once the open tasks, up to
     * FLAT_AHEAD of them, have drained: it is lower by their records). */
    long long lo = mem[5], hi = mem[5];
    for (int i = 5; i < 10; i++) {
        lo = mem[i] < lo ? mem[i] : lo;
        hi = mem[i] > hi ? mem[i] : hi;
    }
    double per = kept > 0 ? (double)(mem[10] - mem[0]) / (double)kept : 0;
    printf("  kept %lld finished records: %.0f bytes each (the events stream, capped by "
           "events.maxlen, included)\n  while tasks flowed, the second half moved %.1f MB "
           "(%.1f%%)\n",
           kept, per, (double)(hi - lo) / 1e6, 100.0 * (double)(hi - lo) / (double)hi);
    cJSON_AddNumberToObject(b->json, "flat_tasks", (double)b->flat_tasks);
    cJSON_AddNumberToObject(b->json, "flat_kept", (double)kept);
    cJSON_AddNumberToObject(b->json, "mem_bytes_per_kept_record", round(per));
    cJSON_AddNumberToObject(b->json, "flat_second_half_spread_bytes", (double)(hi - lo));
    cost c = snapshot_cost(&s0, &s1, b->flat_tasks, "task", "flat");
    cost_print(&c, "task");
    cost_json(b->json, "flat_", "task", &c);
    rc = host_stop(&h);
out:
    host_finish(b, &h, rc == 0);
    snapshot_free(&s0);
    snapshot_free(&s1);
    store_free(st);
    return rc;
}

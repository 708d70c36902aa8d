/*
 * scale.c - the scale mode: --hosts hosts, each in a network namespace of its
 * own when --netns names them (tools/run-scaleout makes them), run no-op tasks
 * submitted while they run. It reports tasks/s, Redis CPU per task and how
 * busy each master was: on a Redis Cluster, how the work spreads over the
 * masters, and which one is the ceiling.
 */
#include "bench.h"

int run_scale(bench *b)
{
    int nh = b->hosts;
    host_proc *h = xcalloc((size_t)nh, sizeof *h);
    snapshot s0 = {0}, s1 = {0};
    store *st = NULL;
    int rc = 0;
    for (int i = 0; i < nh && rc == 0; i++) {
        h[i].index = i + 1;
        h[i].netns = b->nnetns ? b->netns[i % b->nnetns] : NULL;
        rc = host_write_config(b, &h[i], "scale");
    }
    if (rc < 0 || !(st = open_store(b, h[0].prefix))) {
        rc = rc < 0 ? rc : -EIO;
        goto out;
    }
    printf("scale: %ld tasks submitted in batches of %d while %d host(s) with %d workers each "
           "run them%s\n",
           b->tasks, b->batch, nh, b->workers, b->nnetns ? ", each in a network namespace" : "");
    for (int i = 0; i < nh && rc == 0; i++)
        rc = host_start(b, &h[i]);
    for (int i = 0; i < nh && rc == 0; i++)
        rc = host_wait_registered(st, &h[i]);
    if (rc < 0 || (rc = wait_redis_quiet(st)) < 0 || (rc = snapshot_take(st, &s0)) < 0)
        goto out;
    double t0 = mono_s();
    if ((rc = submit_noops(b, st, b->tasks)) < 0)
        goto out;
    double t1 = mono_s(), t_first, t_done;
    long long got;
    rc = wait_finished(b, st, h, nh, b->tasks, t0, &t_first, &t_done, &got);
    if (rc < 0) {
        double t = mono_s() - t0;
        printf("  scale: INCOMPLETE: %lld of %ld tasks in %.3fs (%.0f tasks/s)\n", got, b->tasks, t,
               (double)got / t);
        goto out;
    }
    if ((rc = snapshot_take(st, &s1)) < 0)
        goto out;
    double wall = t_done - t0, tps = (double)b->tasks / wall;
    printf("  %d host(s): %.0f tasks/s from the first submit to the last finished (%.3fs; "
           "submit %.0f tasks/s)\n",
           nh, tps, wall, (double)b->tasks / (t1 - t0));
    cJSON_AddNumberToObject(b->json, "scale_hosts", nh);
    cJSON_AddNumberToObject(b->json, "scale_tps", round(tps));
    cost c = snapshot_cost(&s0, &s1, b->tasks, "task", "scale");
    cost_print(&c, "task");
    cost_json(b->json, "scale_", "task", &c);
    /* How busy each master was: its CPU over the run, as a share of one core (a master
     * uses one core for commands: near 100 % it is the ceiling). */
    printf("    busy (Redis CPU over the run, share of one core):");
    cJSON *busy = cJSON_AddArrayToObject(b->json, "scale_master_busy");
    for (size_t m = 0; m < c.nmasters; m++) {
        double share = c.master[m].cpu_s / wall;
        printf(" %s %.0f%%", c.master[m].server, share * 100);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "server", c.master[m].server);
        cJSON_AddNumberToObject(o, "core_share", round(share * 1000) / 1000);
        cJSON_AddItemToArray(busy, o);
    }
    printf("\n");
    double host_s = 0;
    for (int i = 0; i < nh; i++) {
        int e = host_stop(&h[i]);
        rc = rc < 0 ? rc : e;
        host_s += cpu_s(&h[i].usage);
    }
    if (rc == 0) {
        printf("  bgtaskd CPU (all hosts, their whole life): %.2f us/task\n",
               host_s * 1e6 / (double)b->tasks);
        cJSON_AddNumberToObject(b->json, "scale_host_cpu_usec_per_task",
                                round(host_s * 1e6 / (double)b->tasks * 100) / 100);
    }
out:
    for (int i = 0; i < nh; i++)
        host_finish(b, &h[i], rc == 0);
    snapshot_free(&s0);
    snapshot_free(&s1);
    store_free(st);
    free(h);
    return rc;
}

/*
 * isolation.c - the bench's isolation mode: the same drain of no-op tasks by a host with
 * the bench plugin in its own threads and by one with it in worker processes
 * (isolation = "process"), side by side in one run.
 */
#include "bench.h"

/*
 * One drain: N tasks submitted with no host running, then a host started with the bench
 * plugin's entry extended by `isolation`. *tps gets the steady rate, from the first task
 * finished to the last (the start of the host and of its worker processes left out).
 */
static int drain_rate(bench *b, const char *mode, const char *isolation, double *tps)
{
    host_proc h = {0};
    b->isolation = isolation;
    int rc = host_write_config(b, &h, mode);
    b->isolation = NULL;
    if (rc < 0)
        return rc;
    store *st = open_store(b, h.prefix);
    if (!st) {
        host_finish(b, &h, false);
        return -EIO;
    }
    if ((rc = wait_redis_quiet(st)) < 0 || (rc = submit_noops(b, st, b->tasks)) < 0)
        goto out;
    double t0 = mono_s(), t_first, t_done;
    long long got;
    if ((rc = host_start(b, &h)) < 0)
        goto out;
    rc = wait_finished(b, st, &h, 1, b->tasks, t0, &t_first, &t_done, &got);
    if (rc < 0) {
        printf("  %s: INCOMPLETE: %lld of %ld tasks in %.3fs\n", mode, got, b->tasks,
               mono_s() - t0);
        goto out;
    }
    *tps = t_done > t_first ? (double)(b->tasks - 1) / (t_done - t_first)
                            : (double)b->tasks / (t_done - t0);
    rc = host_stop(&h);
    /* The host's CPU includes its worker processes': it reaped them before it exited. */
    /* Context switches too: what a process boundary costs is mostly waking the other side. */
    printf("  %-16s %.0f tasks/s (%.3fs from the host's start, first finished after %.1f ms); "
           "bgtaskd CPU %.1f us/task, %.2f context switches/task\n",
           mode, *tps, t_done - t0, (t_first - t0) * 1e3,
           rc == 0 ? cpu_s(&h.usage) * 1e6 / (double)b->tasks : NAN,
           rc == 0 ? (double)(h.usage.ru_nvcsw + h.usage.ru_nivcsw) / (double)b->tasks : NAN);
out:
    host_finish(b, &h, rc == 0);
    store_free(st);
    return rc;
}

/* isolation: thread mode and process mode side by side, alternating, best of two each. */
int run_isolation(bench *b)
{
    char proc[96];
    int processes = b->processes > 0 ? b->processes : b->workers;
    snprintf(proc, sizeof proc, "isolation = \"process\"; processes = %d;", processes);
    printf("isolation: %ld no-op tasks drained by one host with %d workers, the bench plugin in "
           "its threads, then in %d worker processes; twice each\n",
           b->tasks, b->workers, processes);
    double best[2] = {0, 0};
    for (int round = 0; round < 2; round++)
        for (int m = 0; m < 2; m++) {
            double tps = 0;
            char mode[32];
            snprintf(mode, sizeof mode, "%s-%d", m ? "iso-process" : "iso-thread", round + 1);
            int rc = drain_rate(b, mode, m ? proc : NULL, &tps);
            if (rc < 0)
                return rc;
            best[m] = fmax(best[m], tps);
        }
    double ratio = best[1] / best[0];
    printf("  thread mode %.0f tasks/s, process mode %.0f tasks/s: process/thread %.2f "
           "(goal >= 0.70)\n",
           best[0], best[1], ratio);
    cJSON_AddNumberToObject(b->json, "isolation_thread_tps", round(best[0]));
    cJSON_AddNumberToObject(b->json, "isolation_process_tps", round(best[1]));
    cJSON_AddNumberToObject(b->json, "isolation_ratio", round(ratio * 100) / 100);
    return 0;
}

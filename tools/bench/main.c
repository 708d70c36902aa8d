/* main.c - the bench's options, main and report (bench.h says what it measures). */
#include "bench.h"

static const char usage_text[] =
    "usage: bench --redis URL [options]\n"
    "\n"
    "Measures one bgtaskd running bench.noop tasks, and one bench.parallel task, against\n"
    "the Redis at URL (use a private server: `make bench` starts one). Prints a table and\n"
    "one JSON line.\n"
    "\n"
    "  --redis URL      the Redis to use (default: $BGTASK_REDIS, else " STORE_DEFAULT_URL ")\n"
    "  --mode M         drain, mixed, latency, parallel, aof, isolation, flat, scale or all\n"
    "                   (default: all but flat and scale)\n"
    "  --tasks N        tasks per throughput mode (default 100000)\n"
    "  --samples M      latency samples (default 2000)\n"
    "  --subtasks N     subtasks of the parallel mode's task (default 10000, at most 1000000)\n"
    "  --aof-tasks N    tasks of the aof mode's drain (default 20000); the aof mode measures\n"
    "                   AOF bytes per task with automatic AOF rewrites off, and is skipped\n"
    "                   when the server keeps no AOF\n"
    "  --processes P    worker processes of the isolation mode's process host (default: as\n"
    "                   many as --workers)\n"
    "  --flat-tasks N   tasks of the flat mode (default 1000000): Redis memory must stay\n"
    "                   flat once --retention-max finished tasks are kept\n"
    "  --retention-max N  the flat mode's tasks.retention_max (default 100000)\n"
    "  --hosts N        hosts of the scale mode (default 1), sharing its tasks\n"
    "  --netns NS,...   the scale mode's hosts run in these network namespaces (host i in\n"
    "                   the i-th, in turn), made with `ip netns add` (tools/run-scaleout)\n"
    "  --workers W      the host's worker threads (default 64: a host claims as many tasks\n"
    "                   per call as it has free workers, and for no-op tasks larger claims\n"
    "                   are what lowers the Redis cost per task)\n"
    "  --batch B        tasks per submit call (default 1000)\n"
    "  --timeout S      the longest any one run may take (default 300)\n"
    "  --keep-logs      keep the host's config and log files under build/bench/\n"
    "  -h, --help       this text\n"
    "\n"
    "Exit status: 0 when every mode ran to its end, 1 when one failed or ran out of time\n"
    "(what was measured until then is printed), 2 on a usage error.\n";

/* ---- main ---- */

/* Print which Redis is measured, over how many masters, and whether they keep an AOF
 * (which weighs on every figure). */
static int describe_redis(bench *b)
{
    store *st = open_store(b, "bgbench");
    if (!st)
        return -EIO;
    store_master_text *server = NULL, *persistence = NULL;
    size_t ns = 0, np = 0;
    int rc = info_all(st, "server", &server, &ns);
    if (rc == 0)
        rc = info_all(st, "persistence", &persistence, &np);
    if (rc < 0)
        goto out;
    char version[32] = "?";
    int aof = 0;
    for (char *line = strtok(server[0].text, "\r\n"); line; line = strtok(NULL, "\r\n"))
        sscanf(line, "redis_version:%31s", version);
    for (size_t m = 0; m < np; m++)
        for (char *line = strtok(persistence[m].text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
            int on = 0;
            if (sscanf(line, "aof_enabled:%d", &on) == 1)
                aof += on != 0;
        }
    char where[700];
    printf("bench: redis %s at %s: %zu master(s), AOF %s\n", version,
           redis_addr_describe(&b->addr, where, sizeof where), ns,
           aof == (int)np ? "on"
           : aof          ? "on some masters only"
                          : "off");
    cJSON_AddStringToObject(b->json, "redis_version", version);
    cJSON_AddBoolToObject(b->json, "aof", aof == (int)np);
    cJSON_AddNumberToObject(b->json, "redis_masters", (double)ns);
out:
    store_master_texts_free(server, ns);
    store_master_texts_free(persistence, np);
    store_free(st);
    return rc;
}

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "bench: %s: '%s' (see bench --help)\n", what, arg);
    return 2;
}

/* --netns NS,...: names of namespaces that exist (ip netns add); -1 after saying why not. */
static int parse_netns(bench *b, const char *list)
{
    char *copy = xstrdup(list), *save = NULL;
    int rc = 0;
    for (char *ns = strtok_r(copy, ",", &save); ns && rc == 0; ns = strtok_r(NULL, ",", &save)) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "/var/run/netns/%s", ns);
        if (ns[strspn(ns, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")] ||
            ns[0] == '.') {
            rc = usage_error("--netns: not a namespace name", ns);
        } else if (access(path, R_OK) < 0) {
            fprintf(stderr, "bench: --netns: no network namespace '%s' (%s: %s)\n", ns, path,
                    strerror(errno));
            rc = 2;
        } else {
            b->netns = xrealloc(b->netns, (b->nnetns + 1) * sizeof *b->netns);
            b->netns[b->nnetns++] = xstrdup(ns);
        }
    }
    free(copy);
    if (rc == 0 && b->nnetns == 0)
        rc = usage_error("--netns: no namespace named", list);
    return rc ? -1 : 0;
}

int main(int argc, char **argv)
{
    bench b = {.modes = MODE_ALL,
               .tasks = 100000,
               .samples = 2000,
               .subtasks = 10000,
               .aof_tasks = 20000,
               .flat_tasks = 1000000,
               .retention_max = 100000,
               .workers = 64,
               .hosts = 1,
               .batch = 1000,
               .timeout_s = 300};
    const char *cli_url = NULL;
    enum {
        O_REDIS = 256,
        O_MODE,
        O_TASKS,
        O_SAMPLES,
        O_SUBTASKS,
        O_AOF_TASKS,
        O_FLAT_TASKS,
        O_RETENTION_MAX,
        O_WORKERS,
        O_PROCESSES,
        O_BATCH,
        O_TIMEOUT,
        O_KEEP,
        O_HOSTS,
        O_NETNS
    };
    static const struct option opts[] = {
        {"redis", required_argument, NULL, O_REDIS},
        {"mode", required_argument, NULL, O_MODE},
        {"tasks", required_argument, NULL, O_TASKS},
        {"samples", required_argument, NULL, O_SAMPLES},
        {"subtasks", required_argument, NULL, O_SUBTASKS},
        {"aof-tasks", required_argument, NULL, O_AOF_TASKS},
        {"flat-tasks", required_argument, NULL, O_FLAT_TASKS},
        {"retention-max", required_argument, NULL, O_RETENTION_MAX},
        {"workers", required_argument, NULL, O_WORKERS},
        {"processes", required_argument, NULL, O_PROCESSES},
        {"batch", required_argument, NULL, O_BATCH},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"keep-logs", no_argument, NULL, O_KEEP},
        {"hosts", required_argument, NULL, O_HOSTS},
        {"netns", required_argument, NULL, O_NETNS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    long v;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_REDIS: cli_url = optarg; break;
        case O_MODE:
            if (strcmp(optarg, "drain") == 0)
                b.modes = MODE_DRAIN;
            else if (strcmp(optarg, "mixed") == 0)
                b.modes = MODE_MIXED;
            else if (strcmp(optarg, "latency") == 0)
                b.modes = MODE_LATENCY;
            else if (strcmp(optarg, "flat") == 0)
                b.modes = MODE_FLAT;
            else if (strcmp(optarg, "aof") == 0)
                b.modes = MODE_AOF;
            else if (strcmp(optarg, "parallel") == 0)
                b.modes = MODE_PARALLEL;
            else if (strcmp(optarg, "isolation") == 0)
                b.modes = MODE_ISOLATION;
            else if (strcmp(optarg, "scale") == 0)
                b.modes = MODE_SCALE;
            else if (strcmp(optarg, "all") == 0)
                b.modes = MODE_ALL;
            else
                return usage_error("--mode must be drain, mixed, latency, parallel, aof, "
                                   "isolation, flat, scale or all",
                                   optarg);
            break;
        case O_TASKS:
            if (!parse_long(optarg, 1, 100000000, &b.tasks))
                return usage_error("--tasks must be 1..100000000", optarg);
            break;
        case O_SAMPLES:
            if (!parse_long(optarg, 1, 10000000, &b.samples))
                return usage_error("--samples must be 1..10000000", optarg);
            break;
        case O_FLAT_TASKS:
            if (!parse_long(optarg, 1, 100000000, &b.flat_tasks))
                return usage_error("--flat-tasks must be 1..100000000", optarg);
            break;
        case O_RETENTION_MAX:
            if (!parse_long(optarg, 1, 1000000000, &b.retention_max))
                return usage_error("--retention-max must be 1..1000000000", optarg);
            break;
        case O_AOF_TASKS:
            if (!parse_long(optarg, 1, 10000000, &b.aof_tasks))
                return usage_error("--aof-tasks must be 1..10000000", optarg);
            break;
        case O_SUBTASKS:
            if (!parse_long(optarg, 1, 1000000, &b.subtasks))
                return usage_error("--subtasks must be 1..1000000", optarg);
            break;
        case O_WORKERS:
            if (!parse_long(optarg, 1, 1024, &v))
                return usage_error("--workers must be 1..1024", optarg);
            b.workers = (int)v;
            break;
        case O_PROCESSES:
            if (!parse_long(optarg, 1, 1024, &v))
                return usage_error("--processes must be 1..1024", optarg);
            b.processes = (int)v;
            break;
        case O_BATCH:
            if (!parse_long(optarg, 1, 100000, &v))
                return usage_error("--batch must be 1..100000", optarg);
            b.batch = (int)v;
            break;
        case O_TIMEOUT:
            if (!parse_long(optarg, 1, 86400, &v))
                return usage_error("--timeout must be 1..86400 seconds", optarg);
            b.timeout_s = (double)v;
            break;
        case O_KEEP: b.keep_logs = true; break;
        case O_HOSTS:
            if (!parse_long(optarg, 1, 64, &v))
                return usage_error("--hosts must be 1..64", optarg);
            b.hosts = (int)v;
            break;
        case O_NETNS:
            if (parse_netns(&b, optarg) < 0)
                return 2;
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument", argv[optind]);

    b.url = redis_url_pick(cli_url, NULL);
    char err[512];
    if (redis_addr_resolve(cli_url, NULL, NULL, NULL, &b.addr, err, sizeof err) < 0 ||
        store_addr_check(&b.addr, err, sizeof err) < 0) {
        fprintf(stderr, "bench: %s\n", err);
        redis_addr_free(&b.addr);
        return 2;
    }
    if (find_paths(&b) < 0) {
        redis_addr_free(&b.addr);
        return 1;
    }
    struct sigaction sa = {.sa_handler = bench_on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    b.json = cJSON_CreateObject();
    cJSON_AddNumberToObject(b.json, "tasks", (double)b.tasks);
    cJSON_AddNumberToObject(b.json, "workers", b.workers);
    cJSON_AddNumberToObject(b.json, "batch", b.batch);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    cJSON_AddNumberToObject(b.json, "cpus", (double)cpus);
    printf("bench: bgtaskd %s, %d worker(s), %ld CPU(s)\n", b.bgtaskd, b.workers, cpus);

    int failed = 0;
    if (describe_redis(&b) < 0)
        failed++;
    if (!failed && !interrupted && (b.modes & MODE_DRAIN) && run_drain(&b) < 0)
        failed++;
    if (!failed && !interrupted && (b.modes & MODE_MIXED) && run_mixed(&b) < 0)
        failed++;
    if (!failed && !interrupted && (b.modes & MODE_LATENCY) && run_latency(&b) < 0)
        failed++;
    if (!failed && !interrupted && (b.modes & MODE_PARALLEL) && run_parallel(&b) < 0)
        failed++;
    if (!failed && !interrupted && (b.modes & MODE_AOF) && run_aof(&b) < 0)
        failed++;
    if (!failed && !interrupted && (b.modes & MODE_ISOLATION) && run_isolation(&b) < 0)
        failed++;
    if (!failed && !interrupted && (b.modes & MODE_FLAT) && run_flat(&b) < 0)
        failed++;
    if (!failed && !interrupted && (b.modes & MODE_SCALE) && run_scale(&b) < 0)
        failed++;
    if (interrupted)
        failed++;
    cJSON_AddBoolToObject(b.json, "complete", failed == 0);

    char *line = cJSON_PrintUnformatted(b.json);
    printf("%s\n", line);
    free(line);
    cJSON_Delete(b.json);
    redis_addr_free(&b.addr);
    for (size_t i = 0; i < b.nnetns; i++)
        free(b.netns[i]);
    free(b.netns);
    return failed ? 1 : 0;
}

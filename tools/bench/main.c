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
    "  --mode M         drain, mixed, latency, parallel, aof, isolation, flat or all\n"
    "                   (default: all but flat)\n"
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

/* Print which Redis is measured and whether it keeps an AOF (which weighs on every figure). */
static int describe_redis(bench *b)
{
    store *st = open_store(b, "bgbench");
    if (!st)
        return -EIO;
    char *server = NULL, *persistence = NULL;
    int rc = store_info(st, "server", &server);
    if (rc == 0)
        rc = store_info(st, "persistence", &persistence);
    if (rc < 0) {
        say("bench: INFO: %s", store_errstr(st));
        goto out;
    }
    char version[32] = "?";
    int aof = 0;
    for (char *line = strtok(server, "\r\n"); line; line = strtok(NULL, "\r\n"))
        sscanf(line, "redis_version:%31s", version);
    for (char *line = strtok(persistence, "\r\n"); line; line = strtok(NULL, "\r\n"))
        sscanf(line, "aof_enabled:%d", &aof);
    if (b->addr.path)
        printf("bench: redis %s at %s, AOF %s\n", version, b->addr.path, aof ? "on" : "off");
    else
        printf("bench: redis %s at %s:%d, AOF %s\n", version, b->addr.host, b->addr.port,
               aof ? "on" : "off");
    cJSON_AddStringToObject(b->json, "redis_version", version);
    cJSON_AddBoolToObject(b->json, "aof", aof != 0);
out:
    free(server);
    free(persistence);
    store_free(st);
    return rc;
}

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "bench: %s: '%s' (see bench --help)\n", what, arg);
    return 2;
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
        O_KEEP
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
            else if (strcmp(optarg, "all") == 0)
                b.modes = MODE_ALL;
            else
                return usage_error("--mode must be drain, mixed, latency, parallel, aof, "
                                   "isolation, flat or all",
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
    if (interrupted)
        failed++;
    cJSON_AddBoolToObject(b.json, "complete", failed == 0);

    char *line = cJSON_PrintUnformatted(b.json);
    printf("%s\n", line);
    free(line);
    cJSON_Delete(b.json);
    redis_addr_free(&b.addr);
    return failed ? 1 : 0;
}

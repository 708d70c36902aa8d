/* main.c - bgtaskctl: options, the connection, and dispatch to the commands. */
#include "ctl.h"

static const char usage_short[] =
    "usage: bgtaskctl [--redis URL] [-c FILE] [--prefix P] [--json] COMMAND [ARGS]\n"
    "commands: submit, status, watch, cancel, retry, purge, pause, resume, logs, list,\n"
    "          hosts, handlers, stats, history, events\n"
    "(bgtaskctl --help)\n";

static const char usage_long[] =
    "usage: bgtaskctl [OPTIONS] COMMAND [ARGS]\n"
    "\n"
    "Submit, follow and manage bgtask background tasks, whose state lives in Redis.\n"
    "\n"
    "Options (also accepted after the command):\n"
    "  --redis URL    Redis address: redis://[:password@]host[:port][/db], unix:///path,\n"
    "                 a master watched by Redis Sentinel:\n"
    "                 redis+sentinel://[:password@]host:port[,host:port...]/MASTER[/db],\n"
    "                 or a Redis Cluster (any of its nodes):\n"
    "                 redis+cluster://[:password@]host:port[,host:port...]\n"
    "                 (default: $BGTASK_REDIS, else the config's redis.url, else\n"
    "                 " STORE_DEFAULT_URL ")\n"
    "                 The password: the URL's, else $BGTASK_REDIS_PASSWORD, else the\n"
    "                 config's (keep it off the command line, where ps shows it)\n"
    "  -c, --config FILE  read redis.url, redis.password (or redis.password_file),\n"
    "                 redis.prefix and the task limits from a bgtaskd config file\n"
    "  --prefix P     key prefix (default: the config's, else \"bgtask\")\n"
    "  --json         machine-readable output\n"
    "  -h, --help     this text\n"
    "  --version      print the version\n"
    "\n"
    "Commands:\n"
    "  submit HANDLER [--args JSON | --args-file F] [--id ID] [--delay S]\n"
    "         [--max-attempts N] [--subtasks-file F] [--parallelism N]\n"
    "         [--on-failure continue|fail_fast] [--min-replicas-ack N] [--wait]\n"
    "                 create a task and print its id (F may be - for stdin);\n"
    "                 --subtasks-file gives a parallel task its subtasks (a JSON\n"
    "                 array: one element of args per subtask; they become args.subtasks,\n"
    "                 and --args must then be {}); --parallelism (1..1024)\n"
    "                 and --on-failure override the handler's for this task;\n"
    "                 --wait then follows it like watch, from its first event (it\n"
    "                 subscribes before submitting), and exits with its outcome;\n"
    "                 --min-replicas-ack N (0..64) waits for N replicas to confirm the\n"
    "                 task (default: the config's redis.min_replicas_ack, else 0)\n"
    "  status ID [--subtasks [--state S] [--offset K] [--limit N]]\n"
    "                 show a task's record; --subtasks adds a table of a parallel\n"
    "                 task's subtasks (index, state, attempt, message), which with\n"
    "                 --json is printed alone, as an array; --state keeps those in\n"
    "                 state S (PENDING, SUCCESS, FAILURE, CANCELLED), --offset skips\n"
    "                 the first K of them, --limit shows at most N (default: all)\n"
    "  watch ID [--subtasks]\n"
    "                 follow a task's progress until it ends; --subtasks adds one line\n"
    "                 per running subtask of a parallel task, with its own progress\n"
    "  cancel ID      cancel a task (a running one is asked to stop)\n"
    "  cancel --handler H --all [--limit N] [--dry-run]\n"
    "                 cancel every unfinished task of handler H (--all is required)\n"
    "  retry ID [--wait]\n"
    "                 run a finished task again as a new attempt: a single task that\n"
    "                 failed or was cancelled as a whole (its max attempts count from\n"
    "                 here), a parallel one's failed and cancelled subtasks (the others\n"
    "                 keep their outcome); exits 1 if the task is still running or has\n"
    "                 nothing to retry; --wait then follows it like watch\n"
    "  retry --handler H [--state FAILURE|CANCELLED] [--since T] [--until T]\n"
    "        [--limit N] [--dry-run]\n"
    "                 retry the finished tasks of handler H in that state (default\n"
    "                 FAILURE) that ended in [since, until), newest first, at most N\n"
    "                 (default 10000); --dry-run only counts them. T: an RFC 3339 time,\n"
    "                 ms since the epoch, or a duration ago (30m, 24h, 7d)\n"
    "  purge --older-than D [--state S]... [--handler H] [--limit N] [--dry-run]\n"
    "  purge ID...    delete finished tasks (record, subtasks) that ended more than D\n"
    "                 ago (90s, 30m, 24h, 7d, 1h30m; 0s: every one), in states S\n"
    "                 (SUCCESS, FAILURE, CANCELLED; default all), or those ids; an\n"
    "                 unfinished task is never deleted (its id is listed as skipped)\n"
    "  pause HANDLER [--reason TEXT]\n"
    "                 no host claims the handler's tasks until it is resumed (running\n"
    "                 ones finish; submissions still wait in its queue)\n"
    "  resume HANDLER its tasks are claimed again\n"
    "  logs ID [--follow] [--after SEQ] [--limit N]\n"
    "                 the task's bgt_log lines kept with its record (tasks.log_level\n"
    "                 and above, the last tasks.log_lines): time, level,\n"
    "                 attempt[/subtask], message; those after line SEQ, at most N\n"
    "                 (1..1000, default 200); --follow: all of them, then new ones as\n"
    "                 they are written, until the task has ended\n"
    "  list [--state S] [--handler H] [--since T] [--until T] [--limit N] [--cursor C]\n"
    "                 tasks newest first (by when they finished, or were created while\n"
    "                 unfinished), those since T (inclusive) until T (exclusive), a page\n"
    "                 of N (1..1000, default 20); --cursor C goes on after the page whose\n"
    "                 next_cursor C is (same filters); --json prints {\"count\", \"tasks\",\n"
    "                 \"next_cursor\"}\n"
    "  hosts          live hosts\n"
    "  handlers       the handlers live hosts serve (with those hosts and their workers),\n"
    "                 and those with tasks waiting that no live host serves (unserved);\n"
    "                 each with its queue and the tasks that ended in the last hour\n"
    "  stats          the unserved handlers first, then queue counts and the finished\n"
    "                 tasks by outcome\n"
    "  history [--handler H] [--since T] [--until T] [--step D]\n"
    "                 tasks that ended, per outcome, in steps of D (whole minutes:\n"
    "                 1m, 15m, 1h; default 1m up to 6 hours, else 1h) from T (default\n"
    "                 24h: a duration means that long ago; also an RFC 3339 time or\n"
    "                 ms since the epoch) until now or --until; of every handler\n"
    "                 (summed) or of H; kept for history.window (default 7 days)\n"
    "  events [--handler H]\n"
    "                 every task's events (of handler H only, if given) as they come,\n"
    "                 one line each (--json: {\"id\", \"event\", \"data\"}), until interrupted\n"
    "\n"
    "Exit codes:\n"
    "  0  success (watch: the task is done)\n"
    "  1  failure (watch: the task failed; retry: nothing to retry)\n"
    "  2  usage error, bad input or Redis cannot be reached\n"
    "  3  the task was cancelled\n"
    "  4  partial success (some subtasks failed)\n"
    "  5  task not found (pause, resume: no such handler)\n"
    "  6  submit --id ID: a task with that id exists already; nothing was changed, and\n"
    "     the id is printed as for a new task (with --json: {\"task_id\", \"exists\": true})\n"
    "  7  submitted, but fewer replicas than --min-replicas-ack (redis.min_replicas_ack)\n"
    "     confirmed it in time: it is on the master only, and a failover may lose it;\n"
    "     the id is printed: submit again with --id ID to make sure (exit 6 then\n"
    "     means it was kept)\n";

__attribute__((format(printf, 1, 2))) int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bgtaskctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fputs(usage_short, stderr);
    return EX_USAGE;
}

/* ---- connection ---- */

/* Resolve the address, password and prefix from the options, env and config. */
int ctl_setup(ctl *c)
{
    char err[512];
    if (c->conf_path) {
        config_free(&c->cfg);
        if (config_load(c->conf_path, &c->cfg, err, sizeof err) < 0) {
            fprintf(stderr, "bgtaskctl: %s\n", err);
            config_defaults(&c->cfg);
            return EX_USAGE;
        }
    }
    c->url = redis_url_pick(c->cli_url, c->conf_path ? c->cfg.redis_url : NULL);
    char *shown = redis_url_mask(c->url);
    snprintf(c->url_shown, sizeof c->url_shown, "%s", shown);
    free(shown);
    if (redis_addr_resolve(c->cli_url, c->conf_path ? c->cfg.redis_url : NULL, c->conf_path,
                           c->conf_path ? c->cfg.redis_password : NULL, &c->addr, err,
                           sizeof err) < 0 ||
        store_addr_check(&c->addr, err, sizeof err) < 0) {
        fprintf(stderr, "bgtaskctl: %s\n", err);
        return EX_USAGE;
    }
    if (!c->prefix)
        c->prefix = c->conf_path && c->cfg.prefix ? c->cfg.prefix : "bgtask";
    if (!*c->prefix || strpbrk(c->prefix, " \t\r\n"))
        return usage_error("bad prefix '%s': must be non-empty, without spaces", c->prefix);
    /* store_open reads the prefix from the config: the one chosen here. */
    if (c->prefix != c->cfg.prefix) {
        free(c->cfg.prefix);
        c->cfg.prefix = xstrdup(c->prefix);
        c->prefix = c->cfg.prefix;
    }
    return EX_OK;
}

/* A new connected store in *out, or EX_USAGE after saying why. */
int ctl_open(ctl *c, store **out)
{
    store *st = store_open(&c->cfg, &c->addr);
    if (store_connect(st) < 0) {
        fprintf(stderr, "bgtaskctl: cannot connect to redis at %s: %s\n", c->url_shown,
                store_errstr(st));
        store_free(st);
        return EX_USAGE;
    }
    *out = st;
    return EX_OK;
}

/* Report a failed store call and return the exit code for it. */
int store_fail(ctl *c, store *st, int rc, const char *id)
{
    if (rc == -ENOENT) {
        fprintf(stderr, "bgtaskctl: task %s not found\n", id);
        return EX_NOTFOUND;
    }
    if (rc == -EIO) {
        fprintf(stderr, "bgtaskctl: cannot reach redis at %s: %s\n", c->url_shown,
                store_errstr(st));
        return EX_USAGE;
    }
    fprintf(stderr, "bgtaskctl: %s\n", store_errstr(st));
    return rc == -EINVAL ? EX_USAGE : EX_FAIL;
}

/* ---- options and main ---- */

enum {
    OPT_REDIS = 256,
    OPT_PREFIX,
    OPT_JSON,
    OPT_VERSION,
    OPT_ARGS,
    OPT_ARGS_FILE,
    OPT_ID,
    OPT_DELAY,
    OPT_MAX_ATTEMPTS,
    OPT_SUBTASKS_FILE,
    OPT_WAIT,
    OPT_STATE,
    OPT_HANDLER,
    OPT_LIMIT,
    OPT_PARALLELISM,
    OPT_ON_FAILURE,
    OPT_SUBTASKS,
    OPT_MIN_REPLICAS_ACK,
    OPT_OFFSET,
    OPT_SINCE,
    OPT_UNTIL,
    OPT_OLDER_THAN,
    OPT_DRY_RUN,
    OPT_ALL,
    OPT_REASON,
    OPT_STEP,
    OPT_AFTER,
    OPT_FOLLOW,
    OPT_CURSOR,
};

/* The options every command takes, first in each table. */
// clang-format off
#define COMMON_OPTIONS                                        \
    {"redis", required_argument, NULL, OPT_REDIS},            \
    {"config", required_argument, NULL, 'c'},                 \
    {"prefix", required_argument, NULL, OPT_PREFIX},          \
    {"json", no_argument, NULL, OPT_JSON},                    \
    {"help", no_argument, NULL, 'h'}
// clang-format on

static const struct option global_options[] = {
    COMMON_OPTIONS, {"version", no_argument, NULL, OPT_VERSION}, {0}};
static const struct option plain_options[] = {COMMON_OPTIONS, {0}};
static const struct option submit_options[] = {
    COMMON_OPTIONS,
    {"args", required_argument, NULL, OPT_ARGS},
    {"args-file", required_argument, NULL, OPT_ARGS_FILE},
    {"id", required_argument, NULL, OPT_ID},
    {"delay", required_argument, NULL, OPT_DELAY},
    {"max-attempts", required_argument, NULL, OPT_MAX_ATTEMPTS},
    {"subtasks-file", required_argument, NULL, OPT_SUBTASKS_FILE},
    {"parallelism", required_argument, NULL, OPT_PARALLELISM},
    {"on-failure", required_argument, NULL, OPT_ON_FAILURE},
    {"min-replicas-ack", required_argument, NULL, OPT_MIN_REPLICAS_ACK},
    {"wait", no_argument, NULL, OPT_WAIT},
    {0},
};
static const struct option subtasks_options[] = {
    COMMON_OPTIONS,
    {"subtasks", no_argument, NULL, OPT_SUBTASKS},
    {0},
};
static const struct option status_options[] = {
    COMMON_OPTIONS,
    {"subtasks", no_argument, NULL, OPT_SUBTASKS},
    {"state", required_argument, NULL, OPT_STATE},
    {"offset", required_argument, NULL, OPT_OFFSET},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {0},
};
static const struct option retry_options[] = {
    COMMON_OPTIONS,
    {"wait", no_argument, NULL, OPT_WAIT},
    {"handler", required_argument, NULL, OPT_HANDLER},
    {"state", required_argument, NULL, OPT_STATE},
    {"since", required_argument, NULL, OPT_SINCE},
    {"until", required_argument, NULL, OPT_UNTIL},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {0},
};
static const struct option cancel_options[] = {
    COMMON_OPTIONS,
    {"handler", required_argument, NULL, OPT_HANDLER},
    {"all", no_argument, NULL, OPT_ALL},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {0},
};
static const struct option purge_options[] = {
    COMMON_OPTIONS,
    {"older-than", required_argument, NULL, OPT_OLDER_THAN},
    {"state", required_argument, NULL, OPT_STATE},
    {"handler", required_argument, NULL, OPT_HANDLER},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {0},
};
static const struct option pause_options[] = {
    COMMON_OPTIONS,
    {"reason", required_argument, NULL, OPT_REASON},
    {0},
};
static const struct option history_options[] = {
    COMMON_OPTIONS,
    {"handler", required_argument, NULL, OPT_HANDLER},
    {"since", required_argument, NULL, OPT_SINCE},
    {"until", required_argument, NULL, OPT_UNTIL},
    {"step", required_argument, NULL, OPT_STEP},
    {0},
};
static const struct option logs_options[] = {
    COMMON_OPTIONS,
    {"follow", no_argument, NULL, OPT_FOLLOW},
    {"after", required_argument, NULL, OPT_AFTER},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {0},
};
static const struct option events_options[] = {
    COMMON_OPTIONS,
    {"handler", required_argument, NULL, OPT_HANDLER},
    {0},
};
static const struct option list_options[] = {
    COMMON_OPTIONS,
    {"state", required_argument, NULL, OPT_STATE},
    {"handler", required_argument, NULL, OPT_HANDLER},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"since", required_argument, NULL, OPT_SINCE},
    {"until", required_argument, NULL, OPT_UNTIL},
    {"cursor", required_argument, NULL, OPT_CURSOR},
    {0},
};

/* How many operands a command takes. */
enum { ONE = 0, OPTIONAL, MANY };

static const struct command {
    const char *name;
    int (*run)(ctl *c, const cmd_opts *o, const char *operand);
    const struct option *options;
    const char *operand; /* what the operand is, or NULL for none */
    int arity;           /* ONE, OPTIONAL (at most one), MANY (task ids, in o->operands) */
} commands[] = {
    {"submit", cmd_submit, submit_options, "a handler name", ONE},
    {"status", cmd_status, status_options, "a task id", ONE},
    {"watch", cmd_watch, subtasks_options, "a task id", ONE},
    {"cancel", cmd_cancel, cancel_options, "a task id", OPTIONAL},
    {"retry", cmd_retry, retry_options, "a task id", OPTIONAL},
    {"purge", cmd_purge, purge_options, "task ids", MANY},
    {"pause", cmd_pause, pause_options, "a handler name", ONE},
    {"resume", cmd_resume, plain_options, "a handler name", ONE},
    {"list", cmd_list, list_options, NULL, ONE},
    {"hosts", cmd_hosts, plain_options, NULL, ONE},
    {"handlers", cmd_handlers, plain_options, NULL, ONE},
    {"stats", cmd_stats, plain_options, NULL, ONE},
    {"events", cmd_events, events_options, NULL, ONE},
    {"history", cmd_history, history_options, NULL, ONE},
    {"logs", cmd_logs, logs_options, "a task id", ONE},
};

/* Apply one parsed option: EX_OK, -1 when the run is over (--help, --version), or EX_USAGE. */
static int apply_option(ctl *c, cmd_opts *o, int opt, char *const argv[])
{
    switch (opt) {
    case OPT_REDIS: c->cli_url = optarg; break;
    case 'c': c->conf_path = optarg; break;
    case OPT_PREFIX: c->prefix = optarg; break;
    case OPT_JSON: c->json = true; break;
    case 'h': fputs(usage_long, stdout); return -1;
    case OPT_VERSION:
        printf("bgtaskctl %s (redis protocol %d)\n", BGT_VERSION, STORE_PROTOCOL_VERSION);
        return -1;
    case OPT_ARGS: o->args = optarg; break;
    case OPT_ARGS_FILE: o->args_file = optarg; break;
    case OPT_SUBTASKS_FILE: o->subtasks_file = optarg; break;
    case OPT_ID: o->id = optarg; break;
    case OPT_WAIT: o->wait = true; break;
    case OPT_SUBTASKS: o->subtasks = true; break;
    case OPT_STATE:
        if (o->nstates == (int)(sizeof o->states / sizeof o->states[0]))
            return usage_error("--state is given too often (at most 4 times)");
        o->state = o->states[o->nstates++] = optarg;
        break;
    case OPT_DRY_RUN: o->dry_run = true; break;
    case OPT_ALL: o->all = true; break;
    case OPT_REASON: o->reason = optarg; break;
    case OPT_SINCE:
    case OPT_UNTIL:
        if (!parse_time_ms(optarg, now_ms(), opt == OPT_SINCE ? &o->since_ms : &o->until_ms))
            return usage_error("--%s must be %s, got '%s'", opt == OPT_SINCE ? "since" : "until",
                               TIME_EXPECTED, optarg);
        *(opt == OPT_SINCE ? &o->since : &o->until) = optarg; /* history reads the text */
        break;
    case OPT_STEP: o->step = optarg; break;
    case OPT_FOLLOW: o->wait = true; break;
    case OPT_CURSOR: o->cursor = optarg; break;
    case OPT_AFTER: {
        long v;
        if (!parse_long(optarg, 0, (1L << 53), &v))
            return usage_error("--after needs a line number (seq) 0..2^53, got '%s'", optarg);
        o->after = v;
        break;
    }
    case OPT_OLDER_THAN:
        if (!parse_duration_ms(optarg, &o->older_than_ms))
            return usage_error("--older-than must be %s, got '%s'", DURATION_EXPECTED, optarg);
        o->has_older_than = true;
        break;
    case OPT_HANDLER: o->handler = optarg; break;
    case OPT_DELAY:
        if (!parse_double(optarg, 0, 31536000, &o->delay))
            return usage_error("--delay needs seconds 0..31536000, got '%s'", optarg);
        break;
    case OPT_MAX_ATTEMPTS:
        if (!parse_long(optarg, 1, 1000, &o->max_attempts))
            return usage_error("--max-attempts needs a number 1..1000, got '%s'", optarg);
        break;
    case OPT_LIMIT:
        if (!parse_long(optarg, 1, 100000, &o->limit))
            return usage_error("--limit needs a number 1..100000, got '%s'", optarg);
        break;
    case OPT_OFFSET:
        if (!parse_long(optarg, 0, VIEW_SUBTASKS_MAX, &o->offset))
            return usage_error("--offset needs a number 0..%d, got '%s'", VIEW_SUBTASKS_MAX,
                               optarg);
        break;
    case OPT_PARALLELISM:
        if (!parse_long(optarg, 1, 1024, &o->parallelism))
            return usage_error("--parallelism needs a number 1..1024, got '%s'", optarg);
        break;
    case OPT_MIN_REPLICAS_ACK:
        if (!parse_long(optarg, 0, 64, &o->min_replicas_ack))
            return usage_error("--min-replicas-ack needs a number 0..64, got '%s'", optarg);
        break;
    case OPT_ON_FAILURE:
        if (strcmp(optarg, "continue") != 0 && strcmp(optarg, "fail_fast") != 0)
            return usage_error("--on-failure must be continue or fail_fast, got '%s'", optarg);
        o->on_failure = optarg;
        break;
    case ':': return usage_error("option %s needs an argument", argv[optind - 1]);
    default:
        if (optopt > 0 && optopt < 256)
            return usage_error("unknown option -%c", optopt);
        return usage_error("unknown option %s", argv[optind - 1]);
    }
    return EX_OK;
}

/* Parse options until the first operand (global) or all of them (a command's). */
static int parse_options(ctl *c, cmd_opts *o, int argc, char **argv, const char *shortopts,
                         const struct option *options)
{
    int opt, rc;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, shortopts, options, NULL)) != -1)
        if ((rc = apply_option(c, o, opt, argv)) != EX_OK)
            return rc;
    return EX_OK;
}

static int run(ctl *c, int argc, char **argv)
{
    cmd_opts o = {.min_replicas_ack = -1};
    int code = parse_options(c, &o, argc, argv, "+:c:h", global_options);
    if (code != EX_OK)
        return code;
    if (optind >= argc)
        return usage_error("no command given");
    const struct command *cmd = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[optind], commands[i].name) == 0)
            cmd = &commands[i];
    if (!cmd)
        return usage_error("unknown command '%s'", argv[optind]);
    argc -= optind;
    argv += optind;
    optind = 0; /* glibc: start over on the command's own arguments */
    if ((code = parse_options(c, &o, argc, argv, ":c:h", cmd->options)) != EX_OK)
        return code;
    const char *operand = optind < argc ? argv[optind] : NULL;
    if (cmd->arity == MANY) {
        o.operands = argv + optind;
        o.noperands = argc - optind;
        operand = NULL; /* the store checks each id */
    } else if (cmd->arity == OPTIONAL && argc - optind > 1) {
        return usage_error("%s takes at most one operand, %s", cmd->name, cmd->operand);
    } else if (cmd->operand && cmd->arity == ONE && argc - optind != 1) {
        return usage_error("%s needs %s", cmd->name, cmd->operand);
    }
    if (!cmd->operand && operand)
        return usage_error("%s takes no operands, got '%s'", cmd->name, operand);
    if (cmd->run == cmd_status && !o.subtasks && (o.state || o.offset || o.limit))
        return usage_error("status: --state, --offset and --limit go with --subtasks");
    if (cmd->run == cmd_status && o.state && !view_subtask_state(o.state))
        return usage_error("--state must be PENDING, SUCCESS, FAILURE or CANCELLED, got '%s'",
                           o.state);
    if ((code = ctl_setup(c)) != EX_OK)
        return code;
    /* A malformed id cannot name a task; submit checks its input before connecting. Ids
     * are matched case-insensitively: the store spells them in lower case. */
    char id[BGT_ID_LEN + 1];
    bool task_id = cmd->operand && strcmp(cmd->operand, "a task id") == 0;
    if (cmd->run != cmd_submit) {
        if (operand && task_id && !id_valid(operand)) {
            fprintf(stderr, "bgtaskctl: task %s not found (not a task id)\n", operand);
            return EX_NOTFOUND;
        }
        if (operand && task_id) {
            for (int i = 0; i <= BGT_ID_LEN; i++)
                id[i] = (char)tolower((unsigned char)operand[i]);
            operand = id;
        }
        if ((code = ctl_open(c, &c->st)) != EX_OK)
            return code;
    }
    return cmd->run(c, &o, operand);
}

int main(int argc, char **argv)
{
    ctl c = {0};
    config_defaults(&c.cfg);
    int code = run(&c, argc, argv);
    store_free(c.st);
    redis_addr_free(&c.addr);
    config_free(&c.cfg);
    return code < 0 ? EX_OK : code;
}

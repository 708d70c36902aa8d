/*
 * net.c - the net plugin: is something listening there? Many TCP probes at once, as one
 * parallel task ("check the status of many agents at once").
 *
 *   net.probe  {"targets": ["host:port", ...], "timeout_ms": T=1000}
 *       1..10000 targets, T 1..60000. The split checks every target and adds one subtask per
 *       target, {"target": "host:port", "timeout_ms": T}. A subtask resolves the host (a
 *       numeric address, or a name through the system's resolver), then opens a TCP
 *       connection to each address in turn until one accepts, and closes it at once. T bounds
 *       the whole subtask, lookup included. Its result:
 *           {"target": "host:port", "ok": true, "latency_ms": x, "address": "127.0.0.1"}
 *       with x the time the accepted connect took (ms, to the microsecond). A target that is
 *       down fails its subtask with a message that starts with the target:
 *           "10.0.0.5:22: Connection refused", "db:5432: timed out after 1000 ms",
 *           "nosuch.example:80: cannot resolve nosuch.example: Name or service not known".
 *       The task's result: {"up": n, "down": m, "results": [one per target, in the order
 *       given: its result, or null when it is down]}. When every target is down the task
 *       fails (the host does not merge when no subtask succeeded).
 *
 * Targets: "host:port", "1.2.3.4:port", "[::1]:port" (an IPv6 address goes in brackets).
 * The port is a number 1..65535; service names are not looked up.
 *
 * Cancellation is checked at least every NET_SLICE_MS, also while a name is being looked up:
 * lookups run through getaddrinfo_a(3), whose requests cannot always be withdrawn, so one that
 * is given up on is kept in the handler's list of abandoned lookups until the resolver is done
 * with it (freed by the next probe, or, waiting for it, when the handler is dropped).
 *
 * Plugin config: none.
 */

/* getaddrinfo_a and struct gaicb are GNU extensions; plugins are built without
 * -D_GNU_SOURCE. */
#define _GNU_SOURCE

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bgtask.h>

/* Bounds of args.targets and args.timeout_ms. */
#define NET_MAX_TARGETS 10000
#define NET_MAX_TIMEOUT_MS 60000
#define NET_DEFAULT_TIMEOUT_MS 1000
/* The longest a probe waits without looking at bgt_cancelled(). */
#define NET_SLICE_MS 50
/* Room for a port in text: 5 digits and the NUL. */
#define NET_PORT_LEN 6

/* A name lookup in flight (getaddrinfo_a). Everything the resolver reads lives in here. */
struct net_lookup {
    struct gaicb cb;
    struct addrinfo hints;
    char host[NI_MAXHOST];
    char port[NET_PORT_LEN];
    struct net_lookup *next; /* in the abandoned list */
};

/* net.probe's udata: the lookups given up on but not yet finished by the resolver. */
struct net_state {
    pthread_mutex_t lock;
    struct net_lookup *abandoned;
};

/* One probe: its target, parsed, and its deadline. */
struct probe {
    bgt_task *t;
    struct net_state *state;
    const char *target;
    char host[NI_MAXHOST];
    char port[NET_PORT_LEN];
    int timeout_ms;
    long long deadline_ns; /* monotonic */
};

/* How a probe step ended, besides success (0). */
enum {
    PROBE_DOWN = -1,      /* the target is down; the error is set */
    PROBE_CANCELLED = -2, /* bgt_cancelled() said so */
    PROBE_RETRY = -3,     /* this host is short of something (memory, descriptors); error set */
};

/* Monotonic nanoseconds: deadlines must not move when the wall clock is set. */
static long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Nanoseconds until the probe's deadline, capped at one slice; <= 0 once it has passed. */
static long long slice_left(const struct probe *pr)
{
    long long left = pr->deadline_ns - mono_ns();
    return left > NET_SLICE_MS * 1000000LL ? NET_SLICE_MS * 1000000LL : left;
}

/*
 * Split target, "host:port" or "[address]:port", into host (NI_MAXHOST bytes) and port
 * (NET_PORT_LEN bytes). Returns NULL, or what is wrong with it.
 */
static const char *parse_target(const char *target, char *host, char *port)
{
    for (const char *c = target; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return "a target has no spaces or control characters";

    const char *h = target, *colon;
    size_t hostlen;
    if (target[0] == '[') {
        const char *close = strchr(target, ']');
        if (close == NULL || close[1] != ':')
            return "expected [address]:port";
        h = target + 1;
        hostlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(target, ':');
        if (colon == NULL)
            return "expected host:port";
        hostlen = (size_t)(colon - target);
        if (memchr(target, ':', hostlen) != NULL)
            return "an IPv6 address goes in brackets, as in [::1]:80";
    }
    if (hostlen == 0)
        return "the host is empty";
    if (hostlen >= NI_MAXHOST)
        return "the host is too long";

    /* Digits only (no sign, no spaces, no service names), 1..5 of them, 1..65535. */
    const char *p = colon + 1;
    size_t plen = strspn(p, "0123456789");
    long value = plen >= 1 && plen < NET_PORT_LEN && p[plen] == '\0' ? strtol(p, NULL, 10) : 0;
    if (value < 1 || value > 65535)
        return "the port must be a number 1..65535";

    memcpy(host, h, hostlen);
    host[hostlen] = '\0';
    snprintf(port, NET_PORT_LEN, "%ld", value);
    return NULL;
}

/* Free the abandoned lookups the resolver has finished with; all of them if `wait`. */
static void reap_lookups(struct net_state *st, bool wait)
{
    pthread_mutex_lock(&st->lock);
    struct net_lookup **pp = &st->abandoned;
    while (*pp != NULL) {
        struct net_lookup *l = *pp;
        const struct gaicb *list[1] = {&l->cb};
        while (wait && gai_error(&l->cb) == EAI_INPROGRESS)
            gai_suspend(list, 1, NULL);
        if (gai_error(&l->cb) == EAI_INPROGRESS) {
            pp = &l->next;
            continue;
        }
        *pp = l->next;
        if (l->cb.ar_result != NULL)
            freeaddrinfo(l->cb.ar_result);
        free(l);
    }
    pthread_mutex_unlock(&st->lock);
}

/*
 * Give up on a lookup in flight: withdraw it if the resolver has not started it, else keep
 * it in the abandoned list (the resolver still writes into it) until it is done.
 */
static void abandon_lookup(struct net_state *st, struct net_lookup *l)
{
    int rc = gai_cancel(&l->cb);
    if (rc == EAI_CANCELED || rc == EAI_ALLDONE) {
        if (rc == EAI_ALLDONE && gai_error(&l->cb) == 0 && l->cb.ar_result != NULL)
            freeaddrinfo(l->cb.ar_result);
        free(l);
        return;
    }
    pthread_mutex_lock(&st->lock);
    l->next = st->abandoned;
    st->abandoned = l;
    pthread_mutex_unlock(&st->lock);
}

/* Set the error for a lookup that failed with getaddrinfo's code rc. */
static int resolve_failed(struct probe *pr, int rc)
{
    if (rc == EAI_MEMORY) {
        bgt_set_error(pr->t, "%s: out of memory looking up %s", pr->target, pr->host);
        return PROBE_RETRY;
    }
    bgt_set_error(pr->t, "%s: cannot resolve %s: %s", pr->target, pr->host, gai_strerror(rc));
    return PROBE_DOWN;
}

/*
 * Resolve the probe's host and port into *out (free with freeaddrinfo). A numeric address
 * is converted at once; a name is looked up by getaddrinfo_a, polled in slices so that the
 * deadline and a cancel are seen. Returns 0 or a PROBE_ code.
 */
static int resolve(struct probe *pr, struct addrinfo **out)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_protocol = IPPROTO_TCP,
        .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
    };
    int rc = getaddrinfo(pr->host, pr->port, &hints, out);
    if (rc != EAI_NONAME)
        return rc == 0 ? 0 : resolve_failed(pr, rc);

    struct net_lookup *l = calloc(1, sizeof *l);
    if (l == NULL) {
        bgt_set_error(pr->t, "%s: out of memory looking up %s", pr->target, pr->host);
        return PROBE_RETRY;
    }
    memcpy(l->host, pr->host, sizeof l->host);
    memcpy(l->port, pr->port, sizeof l->port);
    l->hints = hints;
    l->hints.ai_flags = AI_NUMERICSERV;
    l->cb.ar_name = l->host;
    l->cb.ar_service = l->port;
    l->cb.ar_request = &l->hints;
    struct gaicb *list[1] = {&l->cb};
    rc = getaddrinfo_a(GAI_NOWAIT, list, 1, NULL);
    if (rc != 0) {
        free(l);
        return resolve_failed(pr, rc);
    }
    for (;;) {
        rc = gai_error(&l->cb);
        if (rc != EAI_INPROGRESS)
            break;
        if (bgt_cancelled(pr->t)) {
            abandon_lookup(pr->state, l);
            return PROBE_CANCELLED;
        }
        long long left = slice_left(pr);
        if (left <= 0) {
            abandon_lookup(pr->state, l);
            bgt_set_error(pr->t, "%s: timed out after %d ms looking up %s", pr->target,
                          pr->timeout_ms, pr->host);
            return PROBE_DOWN;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)left};
        gai_suspend((const struct gaicb *const *)list, 1, &ts);
    }
    *out = l->cb.ar_result;
    free(l);
    if (rc != 0)
        return resolve_failed(pr, rc);
    if (*out == NULL) {
        bgt_set_error(pr->t, "%s: cannot resolve %s: no address", pr->target, pr->host);
        return PROBE_DOWN;
    }
    return 0;
}

/*
 * Connect to one address without blocking, polling in slices for the deadline and a cancel.
 * Returns 0 (connected: *latency_ns says how long it took), a PROBE_ code, or a positive
 * errno for this address (refused, unreachable...): the caller tries the next one.
 */
static int connect_one(struct probe *pr, const struct addrinfo *ai, long long *latency_ns)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0)
        return errno;
    int rc = 0;
    long long t0 = mono_ns();
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        rc = errno;
        while (rc == EINPROGRESS) {
            if (bgt_cancelled(pr->t)) {
                rc = PROBE_CANCELLED;
                break;
            }
            long long left = slice_left(pr);
            if (left <= 0) {
                bgt_set_error(pr->t, "%s: timed out after %d ms", pr->target, pr->timeout_ms);
                rc = PROBE_DOWN;
                break;
            }
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            int n = poll(&pfd, 1, (int)((left + 999999) / 1000000));
            if (n < 0 && errno != EINTR) {
                rc = errno;
            } else if (n > 0) {
                int err = 0;
                socklen_t len = sizeof err;
                rc = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 ? errno : err;
            }
        }
    }
    *latency_ns = mono_ns() - t0;
    close(fd);
    return rc;
}

/* Probe every address of res in turn; on success fill the result. Returns 0 or a PROBE_ code. */
static int probe_addresses(struct probe *pr, const struct addrinfo *res, cJSON *result)
{
    int err = 0;
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        long long latency_ns = 0;
        int rc = connect_one(pr, ai, &latency_ns);
        if (rc < 0)
            return rc;
        if (rc > 0) {
            err = rc;
            continue;
        }
        char addr[NI_MAXHOST];
        if (getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof addr, NULL, 0,
                        NI_NUMERICHOST) != 0)
            snprintf(addr, sizeof addr, "%s", pr->host);
        /* To the microsecond: finer digits would only be noise. */
        double latency_ms = (double)((latency_ns + 500) / 1000) / 1000.0;
        if (!cJSON_AddStringToObject(result, "target", pr->target) ||
            !cJSON_AddTrueToObject(result, "ok") ||
            !cJSON_AddNumberToObject(result, "latency_ms", latency_ms) ||
            !cJSON_AddStringToObject(result, "address", addr)) {
            bgt_set_error(pr->t, "%s: out of memory building the result", pr->target);
            return PROBE_RETRY;
        }
        return 0;
    }
    bgt_set_error(pr->t, "%s: %s", pr->target, strerror(err));
    /* Out of descriptors or buffers is this host's trouble, not the target's. */
    bool ours = err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
    return ours ? PROBE_RETRY : PROBE_DOWN;
}

/* Read args.timeout_ms (default NET_DEFAULT_TIMEOUT_MS) into *out; false after an error. */
static bool arg_timeout(bgt_task *t, const cJSON *args, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, "timeout_ms");
    *out = NET_DEFAULT_TIMEOUT_MS;
    if (v == NULL)
        return true;
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > NET_MAX_TIMEOUT_MS ||
        v->valuedouble != (double)(int)v->valuedouble) {
        bgt_set_error(t, "args.timeout_ms must be an integer 1..%d", NET_MAX_TIMEOUT_MS);
        return false;
    }
    *out = (int)v->valuedouble;
    return true;
}

/*
 * net.probe, split: check args.targets (every one of them, so that a typo fails the task
 * before anything runs) and args.timeout_ms, and add one subtask per target.
 */
static bgt_status probe_split(bgt_task *t, const cJSON *args, void *udata)
{
    int timeout_ms;
    const cJSON *targets = cJSON_GetObjectItemCaseSensitive(args, "targets");
    int n = cJSON_GetArraySize(targets);
    if (!cJSON_IsObject(args) || !cJSON_IsArray(targets) || n < 1 || n > NET_MAX_TARGETS) {
        bgt_set_error(t, "args.targets must be an array of 1..%d \"host:port\" strings",
                      NET_MAX_TARGETS);
        return BGT_FAILED;
    }
    if (!arg_timeout(t, args, &timeout_ms))
        return BGT_FAILED;

    int i = 0;
    const cJSON *target;
    cJSON_ArrayForEach(target, targets) {
        char host[NI_MAXHOST], port[NET_PORT_LEN];
        if (!cJSON_IsString(target)) {
            bgt_set_error(t, "args.targets[%d] must be a \"host:port\" string", i);
            return BGT_FAILED;
        }
        const char *why = parse_target(target->valuestring, host, port);
        if (why != NULL) {
            bgt_set_error(t, "args.targets[%d] \"%s\": %s", i, target->valuestring, why);
            return BGT_FAILED;
        }
        i++;
    }

    i = 0;
    cJSON_ArrayForEach(target, targets) {
        cJSON *sub = cJSON_CreateObject();
        if (sub == NULL || !cJSON_AddStringToObject(sub, "target", target->valuestring) ||
            !cJSON_AddNumberToObject(sub, "timeout_ms", timeout_ms)) {
            cJSON_Delete(sub);
            bgt_set_error(t, "out of memory");
            return BGT_FAILED;
        }
        int rc = bgt_add_subtask(t, sub);
        cJSON_Delete(sub);
        if (rc == -E2BIG) {
            bgt_set_error(t, "%d targets are more subtasks than the host accepts "
                             "(tasks.max_subtasks)", n);
            return BGT_FAILED;
        }
        if (rc < 0) {
            bgt_set_error(t, "the host refused the subtask for args.targets[%d]: %s", i,
                          strerror(-rc));
            return BGT_FAILED;
        }
        i++;
    }
    return BGT_OK;
}

/* net.probe, run (one call per target): see the top of this file. */
static bgt_status probe_run(bgt_task *t, const cJSON *args, void *udata)
{
    struct probe pr = {.t = t, .state = udata};
    const cJSON *target = cJSON_GetObjectItemCaseSensitive(args, "target");
    if (!cJSON_IsString(target)) {
        bgt_set_error(t, "args.target must be a \"host:port\" string");
        return BGT_FAILED;
    }
    pr.target = target->valuestring;
    const char *why = parse_target(pr.target, pr.host, pr.port);
    if (why != NULL) {
        bgt_set_error(t, "args.target \"%s\": %s", pr.target, why);
        return BGT_FAILED;
    }
    if (!arg_timeout(t, args, &pr.timeout_ms))
        return BGT_FAILED;
    pr.deadline_ns = mono_ns() + (long long)pr.timeout_ms * 1000000;

    reap_lookups(pr.state, false);
    struct addrinfo *res = NULL;
    cJSON *result = NULL;
    int rc = resolve(&pr, &res);
    if (rc == 0) {
        result = cJSON_CreateObject();
        if (result == NULL) {
            bgt_set_error(t, "%s: out of memory building the result", pr.target);
            rc = PROBE_RETRY;
        } else {
            rc = probe_addresses(&pr, res, result);
        }
        freeaddrinfo(res);
    }
    if (rc == 0) {
        int src = bgt_set_result(t, result);
        if (src < 0) {
            bgt_set_error(t, "%s: the host refused the result: %s", pr.target, strerror(-src));
            rc = PROBE_DOWN;
        }
    }
    cJSON_Delete(result);
    switch (rc) {
    case 0:
        return BGT_OK;
    case PROBE_CANCELLED:
        return BGT_CANCELLED;
    case PROBE_RETRY:
        return BGT_RETRY;
    default:
        return BGT_FAILED;
    }
}

/*
 * net.probe, merge: {"up", "down", "results"}, the results in target order with null for
 * the targets that were down.
 */
static bgt_status probe_merge(bgt_task *t, const cJSON *results, void *udata)
{
    int up = 0, down = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, results) {
        if (cJSON_IsNull(r))
            down++;
        else
            up++;
    }
    cJSON *result = cJSON_CreateObject();
    cJSON *copy = cJSON_Duplicate(results, true);
    if (result == NULL || copy == NULL || !cJSON_AddNumberToObject(result, "up", up) ||
        !cJSON_AddNumberToObject(result, "down", down) ||
        !cJSON_AddItemToObject(result, "results", copy)) {
        cJSON_Delete(copy);
        cJSON_Delete(result);
        bgt_set_error(t, "out of memory");
        return BGT_FAILED;
    }
    int rc = bgt_set_result(t, result);
    cJSON_Delete(result);
    if (rc == -E2BIG) {
        bgt_set_error(t, "the results of %d targets are larger than the host accepts "
                         "(tasks.max_result_bytes)", up + down);
        return BGT_FAILED;
    }
    if (rc < 0) {
        bgt_set_error(t, "the host refused the result: %s", strerror(-rc));
        return BGT_FAILED;
    }
    return BGT_OK;
}

/* The handler's udata_free: waits for the lookups still in the resolver's hands. */
static void net_state_free(void *udata)
{
    struct net_state *st = udata;
    reap_lookups(st, true);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

/* Called once at load: the plugin has no settings; register net.probe. */
static int net_init(bgt_plugin *p, const cJSON *config)
{
    if (config != NULL && !cJSON_IsObject(config)) {
        bgt_plugin_log(p, BGT_LOG_ERR, "config: must be a group of settings");
        return -EINVAL;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, config)
        bgt_plugin_log(p, BGT_LOG_WARNING, "config: unknown setting %s ignored", item->string);

    struct net_state *st = calloc(1, sizeof *st);
    if (st == NULL)
        return -ENOMEM;
    pthread_mutex_init(&st->lock, NULL);
    /* st passes to the host here, whatever the call returns: it frees it with
     * net_state_free. */
    return bgt_register_handler(p, (bgt_handler_def){
                                       .name = "net.probe",
                                       .kind = BGT_PARALLEL,
                                       .run = probe_run,
                                       .split = probe_split,
                                       .merge = probe_merge,
                                       .udata = st,
                                       .udata_free = net_state_free,
                                   });
}

BGT_PLUGIN("net", "1.0", net_init, NULL);

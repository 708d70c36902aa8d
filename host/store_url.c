/*
 * store_url.c - where Redis is: the addresses bgtaskd, bgtaskctl and the
 * bench accept (one server, a master found through Sentinel, a Cluster),
 * where the address and the password come from (command line, environment,
 * config), and the masked form of a URL that every message uses, so a
 * password never reaches a log or a terminal.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "util.h"

/* More seed addresses than this in one URL is a mistake, not a deployment. */
#define MAX_SEEDS 64

/* ---- masking ---- */

/*
 * Where the authority of url starts: after "scheme:" and any slashes when url
 * starts with a scheme ([A-Za-z][A-Za-z0-9+.-]*:), else at the start. So
 * "redis://", "redis:/", "redis+sentinel://" and no scheme at all are alike.
 */
static size_t authority_start(const char *url)
{
    size_t i = 0;
    if (isalpha((unsigned char)url[0])) {
        while (isalnum((unsigned char)url[i]) || url[i] == '+' || url[i] == '.' || url[i] == '-')
            i++;
        if (url[i] != ':')
            return 0;
        i++;
        while (url[i] == '/')
            i++;
        /* "user:pw@host" without a scheme reads as scheme "user": still masked from
         * the colon on, so the password never shows. */
    }
    return i;
}

char *redis_url_mask(const char *url)
{
    if (!url)
        return xstrdup("(none)");
    size_t from = authority_start(url);
    const char *at = strrchr(url + from, '@');
    if (!at)
        return xstrdup(url);
    return xasprintf("%.*s***%s", (int)from, url, at);
}

/* ---- parsing ---- */

typedef struct parse {
    const char *shown; /* the masked URL, for messages */
    char *err;
    size_t errlen;
} parse;

__attribute__((format(printf, 2, 3))) static int bad(parse *p, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errlen, "%s: %s", p->shown, why);
    return -EINVAL;
}

/* A host name or address: printable, no spaces, none of the URL's separators. */
static bool host_valid(const char *s, size_t n)
{
    if (n == 0 || n > 255)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == 0x7f || c == '/' || c == ',' || c == '@' || c == '?' || c == '[' ||
            c == ']')
            return false;
    }
    return true;
}

/* Parse "host", "host:port", "[v6]" or "[v6]:port" (s[0..n)) into out. */
static int parse_hostport(parse *p, const char *s, size_t n, int defport, redis_hostport *out)
{
    const char *host = s, *colon;
    size_t hlen;
    if (n > 0 && s[0] == '[') {
        const char *rb = memchr(s, ']', n);
        if (!rb)
            return bad(p, "unterminated [address] in '%.*s'", (int)n, s);
        host = s + 1;
        hlen = (size_t)(rb - s - 1);
        colon = rb + 1 < s + n ? rb + 1 : NULL;
        if (colon && *colon != ':')
            return bad(p, "expected ':port' after ']' in '%.*s'", (int)n, s);
        if (hlen == 0 || !memchr(host, ':', hlen))
            return bad(p, "[...] must hold an IPv6 address, got '%.*s'", (int)n, s);
    } else {
        colon = memchr(s, ':', n);
        hlen = colon ? (size_t)(colon - s) : n;
        if (hlen > 0 && !host_valid(host, hlen))
            return bad(p, "'%.*s' is not a host name or address", (int)hlen, host);
    }
    if (hlen == 0)
        return bad(p, "missing host%s", n ? " before ':'" : "");
    long port = defport;
    if (colon) {
        char num[8] = "";
        size_t plen = (size_t)(s + n - colon - 1);
        if (plen < sizeof num)
            memcpy(num, colon + 1, plen), num[plen] = '\0';
        if (plen == 0 || plen >= sizeof num || !parse_long(num, 1, 65535, &port))
            return bad(p, "port must be 1..65535, got '%.*s'", (int)(plen > 16 ? 16 : plen),
                       colon + 1);
    }
    out->host = strndup(host, hlen);
    if (!out->host)
        return -ENOMEM;
    out->port = (int)port;
    return 0;
}

/* "[user]:password@" (everything before the last '@'); NULL at = none. */
static int parse_userinfo(parse *p, const char *s, const char *at, redis_addr *out)
{
    if (!at)
        return 0;
    const char *colon = memchr(s, ':', (size_t)(at - s));
    if (!colon)
        return bad(p, "expected ':password@' or 'user:password@' before the host");
    if (colon > s && !(out->username = strndup(s, (size_t)(colon - s))))
        return -ENOMEM;
    if (!(out->password = strndup(colon + 1, (size_t)(at - colon - 1))))
        return -ENOMEM;
    if (!*out->password)
        return bad(p, "empty password after ':' (leave out ':@' for none)");
    return 0;
}

/* A database number "N" (whole text). */
static int parse_db(parse *p, const char *s, redis_addr *out)
{
    long db;
    if (!parse_long(s, 0, 1000000, &db))
        return bad(p, "database must be a number 0..1000000, got '%.16s'", s);
    out->db = (int)db;
    return 0;
}

/* "host[:port][,host[:port]...]" (s[0..n)) into out->seeds. */
static int parse_seeds(parse *p, const char *s, size_t n, int defport, redis_addr *out)
{
    const char *end = s + n;
    for (const char *q = s; q <= end;) {
        const char *comma = memchr(q, ',', (size_t)(end - q));
        const char *e = comma ? comma : end;
        if (out->nseeds == MAX_SEEDS)
            return bad(p, "more than %d addresses", MAX_SEEDS);
        out->seeds = xrealloc(out->seeds, (out->nseeds + 1) * sizeof *out->seeds);
        out->seeds[out->nseeds] = (redis_hostport){0};
        int rc = parse_hostport(p, q, (size_t)(e - q), defport, &out->seeds[out->nseeds]);
        if (rc < 0)
            return rc;
        out->nseeds++;
        if (!comma)
            break;
        q = comma + 1;
    }
    return 0;
}

static int parse_unix(parse *p, const char *url, redis_addr *out)
{
    const char *path = url[0] == '/' ? url : url + 7;
    const char *q = url[0] == '/' ? NULL : strchr(path, '?');
    out->path = q ? strndup(path, (size_t)(q - path)) : xstrdup(path);
    if (!out->path)
        return -ENOMEM;
    if (out->path[0] != '/')
        return bad(p, "a unix socket path must be absolute");
    if (q && (strncmp(q, "?db=", 4) != 0 || parse_db(p, q + 4, out) < 0))
        return bad(p, "expected ?db=N after the socket path");
    return 0;
}

/* redis://, redis+sentinel:// or redis+cluster:// after its scheme (rest). */
static int parse_tcp(parse *p, const char *rest, redis_addr *out)
{
    const char *at = strrchr(rest, '@');
    int rc = parse_userinfo(p, rest, at, out);
    if (rc < 0)
        return rc;
    const char *hosts = at ? at + 1 : rest;
    const char *slash = strchr(hosts, '/');
    size_t hlen = slash ? (size_t)(slash - hosts) : strlen(hosts);
    if (out->kind == REDIS_SERVER) {
        if (memchr(hosts, ',', hlen))
            return bad(p, "redis:// takes one host; for several use redis+sentinel:// or "
                          "redis+cluster://");
        redis_hostport hp = {0};
        if ((rc = parse_hostport(p, hosts, hlen, 6379, &hp)) < 0)
            return rc;
        out->host = hp.host;
        out->port = hp.port;
        if (slash && slash[1])
            return parse_db(p, slash + 1, out);
        return 0;
    }
    bool sentinel = out->kind == REDIS_SENTINEL;
    if ((rc = parse_seeds(p, hosts, hlen, sentinel ? 26379 : 6379, out)) < 0)
        return rc;
    const char *path = slash ? slash + 1 : "";
    if (!sentinel) {
        if (*path && strcmp(path, "0") != 0)
            return bad(p, "a Redis Cluster has database 0 only, got '/%.16s'", path);
        return 0;
    }
    const char *s2 = strchr(path, '/');
    size_t mlen = s2 ? (size_t)(s2 - path) : strlen(path);
    if (mlen == 0)
        return bad(p, "expected /MASTER (the name the sentinels monitor) after the addresses");
    for (size_t i = 0; i < mlen; i++)
        if ((unsigned char)path[i] <= ' ' || path[i] == 0x7f)
            return bad(p, "the master name must not hold spaces or control characters");
    if (mlen > 128)
        return bad(p, "the master name is longer than 128 characters");
    out->master = strndup(path, mlen);
    if (!out->master)
        return -ENOMEM;
    if (s2 && s2[1])
        return parse_db(p, s2 + 1, out);
    return 0;
}

int redis_addr_parse(const char *url, redis_addr *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    char *shown = redis_url_mask(url);
    parse p = {shown, err, errlen};
    int rc;
    if (!url || !*url) {
        snprintf(err, errlen, "empty redis address");
        rc = -EINVAL;
    } else if (url[0] == '/' || strncmp(url, "unix://", 7) == 0) {
        rc = parse_unix(&p, url, out);
    } else if (strncmp(url, "redis://", 8) == 0) {
        rc = parse_tcp(&p, url + 8, out);
    } else if (strncmp(url, "redis+sentinel://", 17) == 0) {
        out->kind = REDIS_SENTINEL;
        rc = parse_tcp(&p, url + 17, out);
    } else if (strncmp(url, "redis+cluster://", 16) == 0) {
        out->kind = REDIS_CLUSTER;
        rc = parse_tcp(&p, url + 16, out);
    } else {
        rc = bad(&p, "expected redis://host:port/db, redis+sentinel://host:port,.../MASTER/db, "
                     "redis+cluster://host:port,..., unix:///path or /path");
    }
    if (rc == -ENOMEM)
        snprintf(err, errlen, "%s: out of memory", shown);
    if (rc < 0)
        redis_addr_free(out);
    free(shown);
    return rc;
}

static void free_secret(char *s)
{
    if (s)
        memset(s, 0, strlen(s));
    free(s);
}

void redis_addr_free(redis_addr *a)
{
    free(a->host);
    free(a->path);
    free(a->username);
    free_secret(a->password);
    for (size_t i = 0; i < a->nseeds; i++)
        free(a->seeds[i].host);
    free(a->seeds);
    free(a->master);
    memset(a, 0, sizeof *a);
}

void redis_addr_copy(redis_addr *dst, const redis_addr *src)
{
    *dst = *src;
    dst->host = src->host ? xstrdup(src->host) : NULL;
    dst->path = src->path ? xstrdup(src->path) : NULL;
    dst->username = src->username ? xstrdup(src->username) : NULL;
    dst->password = src->password ? xstrdup(src->password) : NULL;
    dst->master = src->master ? xstrdup(src->master) : NULL;
    dst->seeds = src->nseeds ? xcalloc(src->nseeds, sizeof *dst->seeds) : NULL;
    for (size_t i = 0; i < src->nseeds; i++)
        dst->seeds[i] = (redis_hostport){xstrdup(src->seeds[i].host), src->seeds[i].port};
}

/* "host:port" or "[v6]:port" into buf. */
static void put_hostport(char *buf, size_t n, const char *host, int port)
{
    snprintf(buf, n, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}

const char *redis_addr_describe(const redis_addr *a, char *buf, size_t n)
{
    char seeds[512] = "";
    size_t used = 0;
    for (size_t i = 0; i < a->nseeds && used + 1 < sizeof seeds; i++) {
        char hp[300];
        put_hostport(hp, sizeof hp, a->seeds[i].host, a->seeds[i].port);
        used += (size_t)snprintf(seeds + used, sizeof seeds - used, "%s%s", i ? "," : "", hp);
    }
    switch (a->kind) {
    case REDIS_SENTINEL:
        snprintf(buf, n, "master '%s' db %d, through the sentinels at %s", a->master, a->db,
                 seeds);
        break;
    case REDIS_CLUSTER: snprintf(buf, n, "the cluster of %s", seeds); break;
    default:
        if (a->path) {
            snprintf(buf, n, "unix:%s db %d", a->path, a->db);
        } else {
            char hp[300];
            put_hostport(hp, sizeof hp, a->host, a->port);
            snprintf(buf, n, "%s db %d", hp, a->db);
        }
    }
    return buf;
}

/* ---- where the address and the password come from ---- */

const char *redis_url_pick(const char *cli, const char *config)
{
    if (cli && *cli)
        return cli;
    const char *env = getenv("BGTASK_REDIS");
    if (env && *env)
        return env;
    if (config && *config)
        return config;
    return STORE_DEFAULT_URL;
}

int redis_addr_resolve(const char *cli, const char *config_url, const char *config_path,
                       const char *config_password, redis_addr *out, char *err, size_t errlen)
{
    const char *url = redis_url_pick(cli, config_url);
    char why[400];
    if (redis_addr_parse(url, out, why, sizeof why) < 0) {
        if (url == cli)
            snprintf(err, errlen, "--redis: %s", why);
        else if (config_url && url == config_url)
            snprintf(err, errlen, "%s: redis.url: %s", config_path ? config_path : "config", why);
        else
            snprintf(err, errlen, "$BGTASK_REDIS: %s", why);
        return -EINVAL;
    }
    if (!out->password) {
        const char *env = getenv("BGTASK_REDIS_PASSWORD");
        const char *pw = env && *env ? env : config_password;
        if (pw && *pw)
            out->password = xstrdup(pw);
    }
    return 0;
}

/*
 * http_ui.c - the dashboard's files: read once from http.ui_dir into a
 * table sorted by name, answered from memory with their type, an ETag and
 * headers that keep the page to its own origin.
 *
 * A request names a file by its exact name; the table is all there is, so a
 * path such as "../x", "a/b" or "%2e%2e" simply names no file.
 */
#include "http_ui.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <microhttpd.h>

#include "util.h"

/* What the page may load and talk to: its own origin only. */
#define UI_CSP                                                                                     \
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "              \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

typedef struct ui_file {
    char *name;
    const char *type; /* Content-Type */
    char *data;
    size_t len;
    char etag[24]; /* "\"<16 hex>\"" */
} ui_file;

struct ui_files {
    ui_file *v; /* sorted by name */
    size_t n;
};

static const struct {
    const char *ext;
    const char *type;
} types[] = {
    {".html", "text/html; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".json", "application/json"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".ico", "image/vnd.microsoft.icon"},
    {".txt", "text/plain; charset=utf-8"},
    {".woff2", "font/woff2"},
};

/* The Content-Type for name's extension, NULL if it is not one we serve. */
static const char *type_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcasecmp(dot, types[i].ext) == 0)
            return types[i].type;
    return NULL;
}

static bool name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > UI_NAME_MAX || name[0] == '.' || name[0] == '-' || name[0] == '_')
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return false;
    return true;
}

/* FNV-1a, 64 bits: enough to tell two versions of a file apart. */
static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const ui_file *)a)->name, ((const ui_file *)b)->name);
}

/* Read one file of the folder (not following a link) into f; -ENOENT means "skip it". */
static int read_one(int dfd, const char *dir, const char *name, size_t room, ui_file *f, char *err,
                    size_t errlen)
{
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ELOOP) /* a symbolic link */
            return -ENOENT;
        int e = errno;
        snprintf(err, errlen, "%s/%s: %s", dir, name, strerror(e));
        return -e;
    }
    struct stat sb;
    int rc = 0;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        rc = -ENOENT;
        goto out;
    }
    if ((size_t)sb.st_size > room) {
        snprintf(err, errlen, "%s/%s: the dashboard's files may hold %u bytes in all; this one "
                 "(%lld bytes) is past that",
                 dir, name, UI_MAX_BYTES, (long long)sb.st_size);
        rc = -EFBIG;
        goto out;
    }
    f->data = xmalloc((size_t)sb.st_size + 1);
    size_t got = 0;
    while (got < (size_t)sb.st_size) {
        ssize_t k = read(fd, f->data + got, (size_t)sb.st_size - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            snprintf(err, errlen, "%s/%s: %s", dir, name, k < 0 ? strerror(errno) : "shorter than its size");
            rc = -EIO;
            goto out;
        }
        got += (size_t)k;
    }
    f->len = got;
    f->name = xstrdup(name);
    f->type = type_of(name);
    snprintf(f->etag, sizeof f->etag, "\"%016llx\"", (unsigned long long)fnv1a(f->data, f->len));
out:
    close(fd);
    if (rc < 0) {
        free(f->data);
        f->data = NULL;
    }
    return rc;
}

int ui_files_load(const char *dir, ui_files **out, char *err, size_t errlen)
{
    *out = NULL;
    ui_files *u = xcalloc(1, sizeof *u);
    int rc = 0;
    DIR *d = NULL;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || !(d = fdopendir(dfd))) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        goto fail;
    }
    size_t bytes = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!name_ok(e->d_name) || !type_of(e->d_name))
            continue;
        if (u->n == UI_MAX_FILES) {
            snprintf(err, errlen, "%s: more than %d files to serve", dir, UI_MAX_FILES);
            rc = -EFBIG;
            goto fail;
        }
        if (u->n % 32 == 0)
            u->v = xrealloc(u->v, (u->n + 32) * sizeof *u->v);
        ui_file *f = &u->v[u->n];
        memset(f, 0, sizeof *f);
        rc = read_one(dfd, dir, e->d_name, UI_MAX_BYTES - bytes, f, err, errlen);
        if (rc == -ENOENT) {
            log_debug("http: %s/%s is not a regular file: not served", dir, e->d_name);
            rc = 0;
            continue;
        }
        if (rc < 0)
            goto fail;
        bytes += f->len;
        u->n++;
    }
    if (u->n)
        qsort(u->v, u->n, sizeof *u->v, by_name);
    if (!u->n || !bsearch(&(ui_file){.name = "index.html"}, u->v, u->n, sizeof *u->v, by_name)) {
        snprintf(err, errlen, "%s: no index.html (is this the dashboard's folder?)", dir);
        rc = -ENOENT;
        goto fail;
    }
    closedir(d);
    *out = u;
    return 0;
fail:
    if (d)
        closedir(d);
    ui_files_free(u);
    return rc;
}

size_t ui_files_count(const ui_files *u) { return u ? u->n : 0; }

void ui_files_free(ui_files *u)
{
    if (!u)
        return;
    for (size_t i = 0; i < u->n; i++) {
        free(u->v[i].name);
        free(u->v[i].data);
    }
    free(u->v);
    free(u);
}

/* True if an If-None-Match header value names etag (or is "*"). Weak
 * comparison, as RFC 9110 asks for this header. */
static bool etag_matches(const char *header, const char *etag)
{
    size_t elen = strlen(etag);
    const char *p = header;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (*p == '*')
            return true;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (strncmp(p, etag, elen) == 0 && (p[elen] == '\0' || p[elen] == ',' || p[elen] == ' '))
            return true;
        while (*p && *p != ',')
            p++;
    }
    return false;
}

int ui_files_answer(const ui_files *u, struct MHD_Connection *c, const char *name)
{
    if (!*name)
        name = "index.html";
    if (!u || !u->n || !name_ok(name))
        return UI_NOT_FOUND;
    const ui_file *f = bsearch(&(ui_file){.name = (char *)name}, u->v, u->n, sizeof *u->v, by_name);
    if (!f)
        return UI_NOT_FOUND;
    const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    bool fresh = inm && etag_matches(inm, f->etag);
    struct MHD_Response *r = MHD_create_response_from_buffer(fresh ? 0 : f->len, f->data,
                                                             MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, f->etag);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    if (!fresh)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, f->type);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Content-Security-Policy", UI_CSP);
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    enum MHD_Result ok = MHD_queue_response(c, fresh ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ok;
}

/*
 * json_check.c - valid UTF-8, no NUL, bounded nesting (see json_check.h).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "json_check.h"

/* The length of the valid UTF-8 sequence at s (at most n bytes), or 0 if none starts there. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* the allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* no overlong forms */
        else if (c == 0xED)
            hi = 0x9F; /* no UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F; /* nothing past U+10FFFF */
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

/* Whether s (n bytes) is valid UTF-8 without a NUL; *at = the offset of the first fault. */
static bool utf8_ok(const char *s, size_t n, size_t *at)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = u[i] ? utf8_seq(u + i, n - i) : 0;
        if (!k) {
            *at = i;
            return false;
        }
        i += k;
    }
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool json_text_ok(const char *text, size_t len, char *err, size_t errlen)
{
    size_t at;
    if (!utf8_ok(text, len, &at)) {
        if (text[at] == '\0')
            snprintf(err, errlen, "a NUL byte at byte %zu: not allowed", at);
        else
            snprintf(err, errlen, "invalid UTF-8 at byte %zu", at);
        return false;
    }
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '"')
                in_string = false;
            else if (c == '\\' && i + 1 < len) {
                i++;
                if (text[i] == 'u' && i + 4 < len) {
                    unsigned v = 0;
                    bool hex = true;
                    for (size_t k = 1; k <= 4; k++) {
                        int h = hexval(text[i + k]);
                        hex = hex && h >= 0;
                        v = v * 16 + (unsigned)(h < 0 ? 0 : h);
                    }
                    if (hex && v == 0) {
                        snprintf(err, errlen,
                                 "a \\u0000 (NUL) character at byte %zu: not allowed in bgtask's "
                                 "JSON (a string would be cut there)",
                                 i - 1);
                        return false;
                    }
                }
            }
            continue;
        }
        if (c == '"')
            in_string = true;
        else if (c == '[' || c == '{') {
            if (++depth > JSON_MAX_DEPTH) {
                snprintf(err, errlen, "nested deeper than %d at byte %zu", JSON_MAX_DEPTH, i);
                return false;
            }
        } else if (c == ']' || c == '}')
            depth--;
    }
    return true;
}

/* json_value_ok's walk; path is the place of v, extended in place (and restored). */
static bool value_ok(const cJSON *v, int depth, char *path, size_t pathlen, char *err,
                     size_t errlen)
{
    size_t at;
    if (cJSON_IsString(v) && v->valuestring &&
        !utf8_ok(v->valuestring, strlen(v->valuestring), &at)) {
        snprintf(err, errlen, "%s: a string with invalid UTF-8 at byte %zu", path, at);
        return false;
    }
    if (!cJSON_IsArray(v) && !cJSON_IsObject(v))
        return true;
    if (depth + 1 > JSON_MAX_DEPTH) {
        snprintf(err, errlen, "%s: nested deeper than %d", path, JSON_MAX_DEPTH);
        return false;
    }
    size_t base = strlen(path);
    int i = 0;
    for (const cJSON *c = v->child; c; c = c->next, i++) {
        if (cJSON_IsObject(v)) {
            const char *k = c->string ? c->string : "";
            if (!utf8_ok(k, strlen(k), &at)) {
                snprintf(err, errlen, "%s: a key with invalid UTF-8 at byte %zu", path, at);
                return false;
            }
            snprintf(path + base, pathlen - base, ".%.40s", k);
        } else
            snprintf(path + base, pathlen - base, "[%d]", i);
        bool ok = value_ok(c, depth + 1, path, pathlen, err, errlen);
        path[base] = '\0';
        if (!ok)
            return false;
    }
    return true;
}

bool json_value_ok(const cJSON *v, char *err, size_t errlen)
{
    char path[512] = "$";
    return value_ok(v, 0, path, sizeof path, err, errlen);
}

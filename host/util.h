/*
 * util.h - what every part of the host shares: logging, clocks, error codes,
 * ids and small string helpers. Internal functions return 0 or a negative
 * errno value (-EINVAL, -ENOENT, -EIO, -ESTALE, ...); strerror(-rc) names it.
 */
#ifndef BGT_UTIL_H
#define BGT_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bgtask.h"

/* Log levels are syslog's (BGT_LOG_ERR ... BGT_LOG_DEBUG from bgtask.h). */

/* Set the most verbose level that is printed (default BGT_LOG_INFO). */
void log_set_level(int level);
/* Parse "error", "warning", "notice", "info" or "debug"; -EINVAL otherwise. */
int log_level_parse(const char *name);
/* Whether a message at level would be printed. */
bool log_enabled(int level);

/*
 * Print one line on stderr: time, level, an optional [tag] (a plugin name or a
 * task id), the message. Thread-safe: each line is written with one write().
 */
__attribute__((format(printf, 3, 4))) void log_msg(int level, const char *tag,
                                                   const char *fmt, ...);
void log_vmsg(int level, const char *tag, const char *fmt, va_list ap);

#define log_err(...) log_msg(BGT_LOG_ERR, NULL, __VA_ARGS__)
#define log_warn(...) log_msg(BGT_LOG_WARNING, NULL, __VA_ARGS__)
#define log_notice(...) log_msg(BGT_LOG_NOTICE, NULL, __VA_ARGS__)
#define log_info(...) log_msg(BGT_LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...) log_msg(BGT_LOG_DEBUG, NULL, __VA_ARGS__)

/* Milliseconds since the epoch (wall clock). */
int64_t now_ms(void);
/* Monotonic seconds, for intervals and deadlines. */
double mono_s(void);
/* Sleep for s seconds (restarts after signals). */
void sleep_s(double s);

/* Fill out (37 bytes) with a fresh random UUIDv4 in dashed lower-case form. */
void uuid4(char out[BGT_ID_LEN + 1]);
/* True if s is a UUID in 36-char dashed form (any version, lower or upper hex). */
bool id_valid(const char *s);
/* True if s matches [a-z0-9][a-z0-9._-]{0,62}. */
bool name_valid(const char *s);
/*
 * Parse s as a whole decimal integer in [min, max] (a command-line number): true and *out set
 * if it is one; false, *out untouched, for empty text, trailing characters or out of range.
 */
bool parse_long(const char *s, long min, long max, long *out);
/* The same for a finite decimal number in [min, max]. */
bool parse_double(const char *s, double min, double max, double *out);

/*
 * Whether host (an address as written in "host:port", without brackets) is a
 * loopback address: 1 for 127.0.0.0/8, ::1, ::ffff:127.x.y.z and "localhost";
 * 0 for any other numeric address (0.0.0.0 and :: included: they mean every
 * interface); -1 for a name, which only resolving can tell.
 */
int host_is_loopback(const char *host);

/* strdup that aborts on out-of-memory (the host cannot go on without memory). */
char *xstrdup(const char *s);
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
/* snprintf into a fresh heap string; aborts on out-of-memory. */
__attribute__((format(printf, 1, 2))) char *xasprintf(const char *fmt, ...);

/* Copy src into dst of size n, always NUL-terminated; returns strlen(src). */
size_t strlcpy_(char *dst, const char *src, size_t n);

#endif

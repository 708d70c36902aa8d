/*
 * util.h - what every part of the host shares: logging, clocks, error codes,
 * ids and small string helpers. Internal functions return 0 or a negative
 * errno value (-EINVAL, -ENOENT, -EIO, -ESTALE, ...); strerror(-rc) names it.
 */
#ifndef BGT_UTIL_H
#define BGT_UTIL_H

#include <errno.h>
#include <pthread.h>
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

/*
 * Initialise a mutex that a thread wanting it spins on briefly before it sleeps: for the
 * locks many threads take for a few instructions at a time (the manager's, the isolated
 * plugins'), where sleeping at once would cost a system call on each side and a context
 * switch whenever the holder runs on the other CPU.
 */
void mutex_init_spinning(pthread_mutex_t *mu);

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
 * Parse a duration (older_than, step, --since 24h): one or more "<n><unit>"
 * pieces, n a whole number and unit ms, s, m, h, d or w ("90s", "1h30m",
 * "7d"); a bare whole number is seconds. True and *ms set (0..2^53 ms); false,
 * *ms untouched, for anything else (empty, signs, fractions, spaces, an unknown
 * unit, overflow). Callers say what was expected: DURATION_EXPECTED.
 */
bool parse_duration_ms(const char *s, int64_t *ms);
/*
 * Parse a point in time (since, until): an RFC 3339 time
 * ("2026-12-03T17:00:00Z", "2026-12-03T17:00:00.250+02:00"; a space for the
 * T and a lowercase t/z are accepted), milliseconds since the epoch (a bare
 * whole number), or a duration meaning that long before now_ms ("24h").
 * True and *ms set (ms since the epoch, never negative); false, *ms untouched,
 * otherwise. Callers say what was expected: TIME_EXPECTED.
 */
bool parse_time_ms(const char *s, int64_t now_ms, int64_t *ms);
#define DURATION_EXPECTED "a duration such as 90s, 30m, 24h, 7d or 1h30m"
#define TIME_EXPECTED                                                                          \
    "a time (RFC 3339 such as 2026-12-03T17:00:00Z, or ms since the epoch) or a duration "     \
    "meaning that long ago, such as 30m, 24h or 7d"

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

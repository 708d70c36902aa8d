/*
 * test_timeparse.c - the one parser of durations and points in time that the
 * HTTP API and bgtaskctl share (since, until, step, older_than): what each
 * accepts, and that everything else is refused without touching the output.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "util.h"

#define NOW INT64_C(1796318680144) /* 2026-12-03T17:24:40.144Z */

static void test_durations(void **state)
{
    static const struct {
        const char *in;
        int64_t ms;
    } ok[] = {
        {"0", 0},           {"90", 90000},        {"90s", 90000},          {"250ms", 250},
        {"30m", 1800000},   {"24h", 86400000},    {"7d", 604800000},       {"2w", 1209600000},
        {"1h30m", 5400000}, {"1m1ms", 60001},     {"1d2h3m4s5ms", 93784005}, {"0s", 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t ms = -1;
        if (!parse_duration_ms(ok[i].in, &ms) || ms != ok[i].ms)
            fail_msg("'%s': got %lld, want %lld", ok[i].in, (long long)ms, (long long)ok[i].ms);
    }
    static const char *const bad[] = {
        "",     "7 days", "-5m", "+5m", "1.5h", "h", "5x", "1h30", "5mm",  " 5m", "5m ",
        "1e3s", "5M",     "ms",  "99999999999999999999", "20000000000w", NULL,
    };
    for (int i = 0; bad[i]; i++) {
        int64_t ms = -7;
        if (parse_duration_ms(bad[i], &ms) || ms != -7)
            fail_msg("'%s' was taken as a duration (%lld)", bad[i], (long long)ms);
    }
    assert_false(parse_duration_ms(NULL, &(int64_t){0}));
}

static void test_times(void **state)
{
    static const struct {
        const char *in;
        int64_t ms;
    } ok[] = {
        {"2026-12-03T17:00:00Z", INT64_C(1796317200000)},
        {"2026-12-03t17:00:00z", INT64_C(1796317200000)},
        {"2026-12-03 17:00:00Z", INT64_C(1796317200000)},
        {"2026-12-03T19:00:00+02:00", INT64_C(1796317200000)},
        {"2026-12-03T12:30:00-04:30", INT64_C(1796317200000)},
        {"2026-12-03T17:00:00.25Z", INT64_C(1796317200250)},
        {"2026-12-03T17:00:00.123456Z", INT64_C(1796317200123)},
        {"2024-02-29T00:00:00Z", INT64_C(1709164800000)},
        {"1970-01-01T00:00:00Z", 0},
        {"1796317200000", INT64_C(1796317200000)},
        {"0", 0},
        {"24h", NOW - 86400000},
        {"90s", NOW - 90000},
        {"1h30m", NOW - 5400000},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t ms = -1;
        if (!parse_time_ms(ok[i].in, NOW, &ms) || ms != ok[i].ms)
            fail_msg("'%s': got %lld, want %lld", ok[i].in, (long long)ms, (long long)ok[i].ms);
    }
    static const char *const bad[] = {
        "",
        "2026-12-03",
        "2026-12-03T17:00:00",        /* no zone */
        "2026-13-03T17:00:00Z",       /* month 13 */
        "2025-02-29T00:00:00Z",       /* not a leap year */
        "2026-12-03T24:00:00Z",
        "2026-12-03T17:00:00+2:00",
        "2026-12-03T17:00:00.Z",
        "2026-12-03T17:00:00Zjunk",
        "1969-12-31T23:59:59Z",       /* before the epoch */
        "yesterday",
        "-1",
        "7 days",
        NULL,
    };
    for (int i = 0; bad[i]; i++) {
        int64_t ms = -7;
        if (parse_time_ms(bad[i], NOW, &ms) || ms != -7)
            fail_msg("'%s' was taken as a time (%lld)", bad[i], (long long)ms);
    }
    /* Longer ago than the epoch: the epoch. */
    int64_t ms = -1;
    assert_true(parse_time_ms("100000w", NOW, &ms));
    assert_int_equal(ms, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_times),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

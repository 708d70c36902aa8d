/*
 * test_ipc.c - the frames of the host-worker protocol: what is built reads back, frames split
 * across reads and packed into one read come out whole, and every kind of malformed input
 * (bad headers, oversized lengths, strings without or with extra NULs, NaN, missing or
 * trailing bytes) is refused with a message, without reading past the frame.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "ipc.h"

/* A connection over one end of a socketpair; *other gets the other end. */
static void pair(ipc_conn *c, int *other, size_t max)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ipc_conn_init(c, sv[0], max);
    *other = sv[1];
}

static void put_raw(int fd, const void *p, size_t n)
{
    assert_int_equal(write(fd, p, n), (ssize_t)n);
}

/* A header as the protocol lays it out. */
static void put_header(int fd, uint32_t len, uint8_t type, uint8_t version, uint8_t r0)
{
    uint8_t h[IPC_HEADER] = {0};
    memcpy(h, &len, 4);
    h[4] = type;
    h[5] = version;
    h[6] = r0;
    put_raw(fd, h, sizeof h);
}

static void test_round_trip(void **state)
{
    (void)state;
    ipc_conn c;
    int fd;
    pair(&c, &fd, 1 << 20);
    ipc_buf b = {0};
    ipc_begin(&b, IPC_DONE);
    ipc_put_u32(&b, 2);
    ipc_put_str(&b, NULL);
    ipc_put_str(&b, "{\"x\":1}");
    ipc_end(&b);
    ipc_conn w;
    ipc_conn_init(&w, fd, 1 << 20);
    /* Two frames in one write, the second split in two writes. */
    assert_int_equal(ipc_send(&w, &b), 0);
    put_raw(fd, b.data, 5);
    ipc_frame f;
    assert_int_equal(ipc_recv(&c, &f), 1);
    assert_int_equal(f.type, IPC_DONE);
    ipc_rd r;
    uint32_t status;
    const char *err, *res;
    ipc_rd_init(&r, &f);
    assert_true(ipc_get_u32(&r, "status", &status));
    assert_true(ipc_get_str(&r, "error", true, 100, &err));
    assert_true(ipc_get_str(&r, "result", true, 100, &res));
    char why[200];
    assert_true(ipc_rd_done(&r, why, sizeof why));
    assert_int_equal(status, 2);
    assert_null(err);
    assert_string_equal(res, "{\"x\":1}");
    assert_int_equal(ipc_next(&c, &f), 0); /* half a frame so far */
    put_raw(fd, b.data + 5, b.len - 5);
    assert_int_equal(ipc_recv(&c, &f), 1);
    assert_int_equal(f.type, IPC_DONE);
    assert_int_equal(f.len, b.len - IPC_HEADER);
    ipc_buf_free(&b);
    ipc_conn_close(&w);
    /* The other end closed: EOF. */
    assert_int_equal(ipc_recv(&c, &f), -EPIPE);
    ipc_conn_close(&c);
}

/* A bad header is refused as soon as the header is there, whatever follows. */
static void test_bad_headers(void **state)
{
    (void)state;
    static const struct {
        uint32_t len;
        uint8_t type, version, r0;
        const char *want;
    } cases[] = {
        {0, IPC_PROGRESS, 1, 0, "frame of protocol version 1, expected 3"},
        {0, 99, IPC_VERSION, 0, "frame of unknown type 99"},
        {0, 0, IPC_VERSION, 0, "frame of unknown type 0"},
        {0, IPC_PROGRESS, IPC_VERSION, 1, "frame header has reserved bytes set"},
        {4097, IPC_DONE, IPC_VERSION, 0, "DONE frame of 4097 bytes, over the limit of 4096"},
        {0xffffffffu, IPC_LOG, IPC_VERSION, 0, "LOG frame of 4294967295 bytes, over the limit"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ipc_conn c;
        int fd;
        pair(&c, &fd, 4096);
        put_header(fd, cases[i].len, cases[i].type, cases[i].version, cases[i].r0);
        ipc_frame f;
        assert_int_equal(ipc_recv(&c, &f), -EPROTO);
        if (!strstr(c.err, cases[i].want))
            fail_msg("case %zu: '%s' does not say '%s'", i, c.err, cases[i].want);
        close(fd);
        ipc_conn_close(&c);
    }
}

/* Read payload as a frame of `type` through a connection. */
static ipc_frame frame_of(ipc_conn *c, int fd, uint8_t type, const void *payload, size_t n)
{
    put_header(fd, (uint32_t)n, type, IPC_VERSION, 0);
    if (n)
        put_raw(fd, payload, n);
    ipc_frame f;
    assert_int_equal(ipc_recv(c, &f), 1);
    return f;
}

/* Fields that do not parse: each get fails, names the field, and never reads past the frame. */
static void test_bad_fields(void **state)
{
    (void)state;
    ipc_conn c;
    int fd;
    pair(&c, &fd, 1 << 16);
    uint8_t p[64];
    char why[200];
    ipc_rd r;
    const char *s;
    uint32_t u;
    double d;

    /* A string whose length runs past the frame. */
    uint32_t n = 1000;
    memcpy(p, &n, 4);
    memcpy(p + 4, "abc", 4);
    ipc_frame f = frame_of(&c, fd, IPC_NOTE, p, 8);
    ipc_rd_init(&r, &f);
    assert_false(ipc_get_str(&r, "text", false, 4096, &s));
    assert_false(ipc_rd_done(&r, why, sizeof why));
    assert_string_equal(why, "field 'text' is missing, too long or malformed");

    /* A string without its NUL, and one with a NUL inside. */
    n = 3;
    memcpy(p, &n, 4);
    memcpy(p + 4, "abc", 3);
    f = frame_of(&c, fd, IPC_NOTE, p, 7);
    ipc_rd_init(&r, &f);
    assert_false(ipc_get_str(&r, "text", false, 4096, &s));
    n = 4;
    memcpy(p, &n, 4);
    memcpy(p + 4, "a\0b", 4);
    f = frame_of(&c, fd, IPC_NOTE, p, 8);
    ipc_rd_init(&r, &f);
    assert_false(ipc_get_str(&r, "text", false, 4096, &s));

    /* Longer than the field allows; NULL where it is not allowed. */
    n = 6;
    memcpy(p, &n, 4);
    memcpy(p + 4, "abcde", 6);
    f = frame_of(&c, fd, IPC_NOTE, p, 10);
    ipc_rd_init(&r, &f);
    assert_false(ipc_get_str(&r, "text", false, 4, &s));
    n = 0;
    memcpy(p, &n, 4);
    f = frame_of(&c, fd, IPC_NOTE, p, 4);
    ipc_rd_init(&r, &f);
    assert_false(ipc_get_str(&r, "text", false, 4, &s));
    ipc_rd_init(&r, &f);
    assert_true(ipc_get_str(&r, "text", true, 4, &s));
    assert_null(s);

    /* Numbers that are not finite, and a u32 cut short. */
    double bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 3; i++) {
        memcpy(p, &bad[i], 8);
        f = frame_of(&c, fd, IPC_PROGRESS, p, 8);
        ipc_rd_init(&r, &f);
        assert_false(ipc_get_f64(&r, "current", &d));
        assert_false(ipc_rd_done(&r, why, sizeof why));
        assert_string_equal(why, "field 'current' is missing, too long or malformed");
    }
    f = frame_of(&c, fd, IPC_DONE, p, 3);
    ipc_rd_init(&r, &f);
    assert_false(ipc_get_u32(&r, "status", &u));
    /* After one failure every later get fails too. */
    assert_false(ipc_get_str(&r, "error", true, 10, &s));
    assert_false(ipc_rd_done(&r, why, sizeof why));
    assert_string_equal(why, "field 'status' is missing, too long or malformed");

    /* Bytes left over after the last field. */
    memset(p, 0, 12);
    f = frame_of(&c, fd, IPC_DONE, p, 12);
    ipc_rd_init(&r, &f);
    assert_true(ipc_get_u32(&r, "status", &u));
    assert_false(ipc_rd_done(&r, why, sizeof why));
    assert_string_equal(why, "8 bytes after the last field");

    close(fd);
    ipc_conn_close(&c);
}

/* Random bytes never make a reader go past its frame or crash (run under ASan by make asan). */
static void test_random_bytes(void **state)
{
    (void)state;
    srandom(7);
    for (int round = 0; round < 2000; round++) {
        ipc_conn c;
        int fd;
        pair(&c, &fd, 256);
        uint8_t buf[300];
        size_t n = (size_t)(random() % (long)sizeof buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)random();
        /* Half the rounds get a plausible header, so the payload readers run too. */
        if (round % 2 && n >= IPC_HEADER) {
            uint32_t len = (uint32_t)(n - IPC_HEADER);
            memcpy(buf, &len, 4);
            buf[4] = (uint8_t)(IPC_READY + random() % 8);
            buf[5] = IPC_VERSION;
            buf[6] = buf[7] = 0;
        }
        if (n)
            put_raw(fd, buf, n);
        close(fd);
        ipc_frame f;
        int rc;
        while ((rc = ipc_recv(&c, &f)) == 1) {
            ipc_rd r;
            const char *s;
            double d;
            uint32_t u;
            ipc_rd_init(&r, &f);
            for (int k = 0; k < 8; k++) {
                ipc_get_str(&r, "s", k % 2, 64, &s);
                ipc_get_f64(&r, "d", &d);
                ipc_get_u32(&r, "u", &u);
            }
            char why[200];
            ipc_rd_done(&r, why, sizeof why);
        }
        assert_true(rc == -EPIPE || rc == -EPROTO);
        ipc_conn_close(&c);
    }
}

/* A non-blocking sender queues what the socket does not take and sends it later, in order. */
static void test_queue_and_flush(void **state)
{
    (void)state;
    ipc_conn s, r;
    int fd;
    pair(&s, &fd, 1 << 22);
    ipc_conn_init(&r, fd, 1 << 22);
    ipc_buf b = {0};
    char *big = malloc(1 << 20);
    memset(big, 'x', (1 << 20) - 1);
    big[(1 << 20) - 1] = '\0';
    ipc_begin(&b, IPC_CALL);
    ipc_put_str(&b, big);
    ipc_end(&b);
    for (int i = 0; i < 4; i++)
        ipc_queue(&s, &b);
    assert_int_equal(ipc_flush(&s), -EAGAIN); /* 4 MiB do not fit a socket buffer */
    assert_true(ipc_pending(&s));
    int got = 0;
    while (got < 4) {
        ipc_frame f;
        int rc = ipc_next(&r, &f);
        if (rc == 1) {
            assert_int_equal(f.type, IPC_CALL);
            assert_int_equal(f.len, b.len - IPC_HEADER);
            got++;
            continue;
        }
        assert_int_equal(rc, 0);
        int fl = ipc_flush(&s);
        assert_true(fl == 0 || fl == -EAGAIN);
        assert_true(ipc_fill(&r) > 0);
    }
    assert_false(ipc_pending(&s));
    free(big);
    ipc_buf_free(&b);
    ipc_conn_close(&s);
    ipc_conn_close(&r);
}

/*
 * ipc_drain reads everything the socket holds without waiting (the worker's proof that it
 * saw every CANCEL written before it starts a call), also past one buffer's worth; ipc_fill
 * says whether it took all there was; the other end closed is -EPIPE.
 */
static void test_drain(void **state)
{
    (void)state;
    ipc_conn c;
    int fd;
    pair(&c, &fd, 1 << 20);
    assert_int_equal(ipc_drain(&c), 0); /* nothing there: no wait */
    assert_true(c.drained);
    ipc_buf b = {0};
    ipc_begin(&b, IPC_CANCEL);
    ipc_put_u32(&b, 7);
    ipc_end(&b);
    enum { N = 20000 }; /* 240,000 bytes: more than one read's room */
    ipc_conn w;
    ipc_conn_init(&w, fd, 1 << 20);
    for (int i = 0; i < N; i++)
        ipc_queue(&w, &b);
    int got = 0;
    while (got < N) {
        int fl = ipc_flush(&w);
        assert_true(fl == 0 || fl == -EAGAIN);
        assert_int_equal(ipc_drain(&c), 0);
        ipc_frame f;
        while (ipc_next(&c, &f) == 1) {
            assert_int_equal(f.type, IPC_CANCEL);
            got++;
        }
    }
    assert_int_equal(got, N);
    assert_false(ipc_pending(&w));
    /* One frame: a blocking fill takes it whole, and says so. */
    assert_int_equal(ipc_send(&w, &b), 0);
    assert_int_equal(ipc_fill(&c), (long)b.len);
    assert_true(c.drained);
    ipc_conn_close(&w);
    assert_int_equal(ipc_drain(&c), -EPIPE);
    ipc_buf_free(&b);
    ipc_conn_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),    cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_bad_fields),    cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_queue_and_flush), cmocka_unit_test(test_drain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

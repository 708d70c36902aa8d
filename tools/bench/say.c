/* say.c - the bench's messages (on stderr) and the flag its signals set. */
#include "bench.h"

volatile sig_atomic_t interrupted;

void bench_on_signal(int sig) { interrupted = sig; }

__attribute__((format(printf, 1, 2))) void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

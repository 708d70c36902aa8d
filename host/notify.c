/*
 * notify.c - sd_notify messages to the service manager (see notify.h). The
 * only file that includes libsystemd's header.
 */
#include "notify.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "util.h"

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

/*
 * Send one state line. sd_notify returns 0 when $NOTIFY_SOCKET is unset (not
 * run by systemd): nothing to say then. A failure is logged once, so a
 * misconfigured socket does not flood the log with one line per watchdog ping.
 */
static void send_state(const char *state)
{
    static int warned;
    int rc = sd_notify(0, state);
    if (rc < 0 && !__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
        log_warn("sd_notify(%.*s): %s", (int)strcspn(state, "\n"), state, strerror(-rc));
}

void notify_ready(void) { send_state("READY=1\nSTATUS=serving"); }

void notify_stopping(void) { send_state("STOPPING=1\nSTATUS=draining"); }

void notify_reloading(void)
{
    /* MONOTONIC_USEC lets a Type=notify-reload unit (systemd 253+) match the
     * reload to its request; older managers ignore it. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[96];
    snprintf(msg, sizeof msg, "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    send_state(msg);
}

void notify_watchdog(void) { send_state("WATCHDOG=1"); }

double notify_watchdog_interval(void)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return 0;
    return (double)usec / 2e6;
}

#else

void notify_ready(void) {}
void notify_stopping(void) {}
void notify_reloading(void) {}
void notify_watchdog(void) {}
double notify_watchdog_interval(void) { return 0; }

#endif

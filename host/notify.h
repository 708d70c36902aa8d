/*
 * notify.h - telling a service manager (systemd, Type=notify) how the host is
 * doing: ready, reloading, stopping, alive. Built on sd_notify from
 * libsystemd when the build found it (HAVE_SYSTEMD); without it, or when the
 * host was not started by systemd ($NOTIFY_SOCKET unset), every call is a
 * no-op, so callers never need to check.
 */
#ifndef BGT_NOTIFY_H
#define BGT_NOTIFY_H

/* READY=1: start-up is done (the manager runs), or a reload has ended. */
void notify_ready(void);
/* STOPPING=1: a graceful shutdown has begun (the drain may take shutdown_grace). */
void notify_stopping(void);
/* RELOADING=1: a SIGHUP reload has begun; call notify_ready() when it has ended. */
void notify_reloading(void);
/* WATCHDOG=1: the host is alive. Send it every notify_watchdog_interval() seconds. */
void notify_watchdog(void);
/*
 * How often to call notify_watchdog(): half of the unit's WatchdogSec, in
 * seconds, or 0 when no watchdog is asked for (or without systemd).
 */
double notify_watchdog_interval(void);

#endif

/*
 * init_guard.h - the host's signals while plugins load. bgtaskd takes
 * SIGTERM, SIGINT and SIGHUP synchronously on its main thread, and the main
 * thread runs each plugin's init: an init that never returns would leave
 * those signals unread. While plugins load, a guard thread reads them
 * instead, and bounds each init:
 *   - a first SIGTERM/SIGINT is noted (and, during an init, logged with the
 *     plugin's name); the caller stops once loading is over;
 *   - a second one during an init, or an init that runs past its timeout,
 *     calls give_up with a message naming the plugin: the main thread is
 *     inside that plugin's code and cannot be stopped any other way;
 *   - a SIGHUP is noted and ignored (plugins are being loaded already).
 */
#ifndef BGT_INIT_GUARD_H
#define BGT_INIT_GUARD_H

#include <signal.h>

typedef struct init_guard init_guard;

/*
 * Start reading sigs (blocked in every thread) on a thread of the guard's.
 * timeout_s bounds each init (0: no bound). give_up(why) must end the
 * process (it is called on the guard's thread, with why borrowed). Returns
 * NULL if the thread cannot start (the signals then wait for the caller).
 */
init_guard *init_guard_start(const sigset_t *sigs, double timeout_s,
                             void (*give_up)(const char *why));

/* plugin's init (file path) starts / has returned. Strings are copied. g may be NULL. */
void init_guard_enter(init_guard *g, const char *plugin, const char *path);
void init_guard_leave(init_guard *g);

/* Stop the thread and free g; returns how many SIGTERM/SIGINT it read (the
 * caller acts on them). g may be NULL (returns 0). */
int init_guard_stop(init_guard *g);

#endif

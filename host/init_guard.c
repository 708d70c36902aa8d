/*
 * init_guard.c - a thread that reads the host's signals and watches the
 * clock while plugins load (see init_guard.h).
 */
#include "init_guard.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

/* How long the thread waits for a signal before it looks at its flags again. */
#define GUARD_TICK_S 0.05

struct init_guard {
    pthread_mutex_t lock;
    pthread_t thr;
    sigset_t sigs;
    double timeout_s;
    void (*give_up)(const char *why);
    /* Under lock. */
    bool stop;
    char *plugin, *path; /* the init running now, or NULL */
    double deadline;     /* mono_s by which it must return (timeout_s > 0) */
    int stops;           /* SIGTERM/SIGINT read */
    int stops_in_init;   /* of which during the init running now */
};

static const char *signal_name(int sig)
{
    return sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "SIGHUP";
}

static void *guard_main(void *arg)
{
    init_guard *g = arg;
    char why[512];
    pthread_mutex_lock(&g->lock);
    while (!g->stop) {
        double wait = GUARD_TICK_S;
        if (g->plugin && g->timeout_s > 0)
            wait = fmin(wait, fmax(g->deadline - mono_s(), 0));
        pthread_mutex_unlock(&g->lock);
        struct timespec ts = {(time_t)wait, (long)((wait - floor(wait)) * 1e9)};
        int sig = sigtimedwait(&g->sigs, NULL, &ts);
        pthread_mutex_lock(&g->lock);
        why[0] = '\0';
        if (sig == SIGTERM || sig == SIGINT) {
            g->stops++;
            if (g->plugin && ++g->stops_in_init == 1)
                log_warn("%s while plugin '%s' (%s) runs its init: the host stops when it "
                         "returns; another %s ends the host at once",
                         signal_name(sig), g->plugin, g->path, signal_name(sig));
            else if (g->plugin)
                snprintf(why, sizeof why,
                         "plugin '%s' (%s): its init has not returned; ending the host on the "
                         "second %s",
                         g->plugin, g->path, signal_name(sig));
        } else if (sig == SIGHUP) {
            log_notice("SIGHUP while plugins load: ignored (send it again once they have)");
        }
        if (!why[0] && g->plugin && g->timeout_s > 0 && mono_s() >= g->deadline)
            snprintf(why, sizeof why,
                     "plugin '%s' (%s): its init has not returned after %g s "
                     "(plugins.init_timeout); ending the host",
                     g->plugin, g->path, g->timeout_s);
        if (why[0]) {
            pthread_mutex_unlock(&g->lock);
            g->give_up(why); /* does not return */
            pthread_mutex_lock(&g->lock);
        }
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

init_guard *init_guard_start(const sigset_t *sigs, double timeout_s,
                             void (*give_up)(const char *why))
{
    init_guard *g = xcalloc(1, sizeof *g);
    pthread_mutex_init(&g->lock, NULL);
    g->sigs = *sigs;
    g->timeout_s = timeout_s;
    g->give_up = give_up;
    int rc = pthread_create(&g->thr, NULL, guard_main, g);
    if (rc != 0) {
        log_warn("cannot start a thread to watch plugin inits: %s", strerror(rc));
        pthread_mutex_destroy(&g->lock);
        free(g);
        return NULL;
    }
    return g;
}

void init_guard_enter(init_guard *g, const char *plugin, const char *path)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->lock);
    free(g->plugin);
    free(g->path);
    g->plugin = xstrdup(plugin);
    g->path = xstrdup(path);
    g->deadline = mono_s() + g->timeout_s;
    g->stops_in_init = 0;
    pthread_mutex_unlock(&g->lock);
}

void init_guard_leave(init_guard *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->lock);
    free(g->plugin);
    free(g->path);
    g->plugin = g->path = NULL;
    pthread_mutex_unlock(&g->lock);
}

int init_guard_stop(init_guard *g)
{
    if (!g)
        return 0;
    pthread_mutex_lock(&g->lock);
    g->stop = true;
    pthread_mutex_unlock(&g->lock);
    pthread_join(g->thr, NULL);
    int stops = g->stops;
    free(g->plugin);
    free(g->path);
    pthread_mutex_destroy(&g->lock);
    free(g);
    return stops;
}

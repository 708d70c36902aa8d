/*
 * registry.h - handler name -> definition and owning plugin, and the list of
 * plugin hooks in registration order. Entries are added while a plugin
 * initialises and removed only when that plugin's load is rolled back or it is
 * unloaded at exit; a handler pointer handed out stays valid until then.
 * All functions are thread-safe.
 *
 * The hooks are also published as an immutable, reference-counted list that
 * is read without any lock (registry_hooks_get): every change builds a new
 * list and swaps the pointer, so the hook chain never calls plugin code under
 * a registry lock, and a hook may call back into the registry. Removing a
 * plugin waits until no thread still runs one of its hooks before it frees
 * them.
 */
#ifndef BGT_REGISTRY_H
#define BGT_REGISTRY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "bgtask.h"

struct bgt_plugin;

/* One registered handler. Read-only once registered, but for paused. */
typedef struct handler {
    char name[BGT_NAME_MAX + 1];
    bgt_handler_def def;       /* copy of the plugin's definition; def.name points at name */
    struct bgt_plugin *plugin; /* owner, or NULL for handlers the host registers itself */
    const char *owner;         /* the owner's name, for messages (borrowed: it lives as
                                  long as the plugin); NULL for the host */
    bool paused;               /* not to be claimed for now (registry_pause_plugin); read it
                                  with registry_paused */
    bool stops_itself;         /* its functions return by themselves after a stop request
                                  (the proxies of an isolated plugin, which kill its worker):
                                  never written off as stuck; set before it is served */
    /* Set by the host for the proxies of an isolated plugin (before it is served): starts a
     * single attempt's run and returns without waiting for it; its status comes back later
     * through task_api_handed_back, on another thread. args_json is the task's args as
     * JSON text, borrowed until then. NULL: def.run is called and waited for. */
    void (*hand_off)(bgt_task *t, const char *args_json, void *udata);
    struct handler *next;
} handler;

/* One registered hook. */
typedef struct hook {
    char name[BGT_NAME_MAX + 1];
    bgt_hook_def def;
    struct bgt_plugin *plugin;
    struct hook *next;
    int refs; /* the lists that hold it, plus one while registered (atomic) */
} hook;

/* A snapshot of the registered hooks, in registration order. Never changes. */
typedef struct hook_list {
    int refs; /* atomic */
    size_t n;
    hook *v[];
} hook_list;

typedef struct registry {
    pthread_mutex_t lock;
    handler *handlers;    /* in registration order */
    hook *hooks;          /* in registration order */
    hook_list *published; /* the hooks as a list, NULL when there are none; swapped under
                            the lock, read without it */
    int readers;          /* threads between reading `published` and referencing it (atomic) */
    unsigned generation;  /* bumped on every change, so readers know to refresh */
} registry;

void registry_init(registry *r);
/* Drop every entry (calling udata_free) and destroy the lock. */
void registry_destroy(registry *r);

/*
 * Add a handler owned by plugin p (NULL for the host), whose name is owner
 * (borrowed until p is removed; NULL for the host). def is copied; its udata
 * passes to the registry whatever this returns (freed here on failure).
 * Returns 0, -EINVAL (invalid definition; err says why), or -EEXIST (name
 * taken; err names the plugin that has it).
 */
int registry_add_handler(registry *r, struct bgt_plugin *p, const char *owner,
                         const bgt_handler_def *def, char *err, size_t errlen);

/* Same for hooks: -EINVAL for a bad definition. Hook names need not be unique. */
int registry_add_hook(registry *r, struct bgt_plugin *p, const bgt_hook_def *def, char *err,
                      size_t errlen);

/* The handler called name, or NULL. The pointer stays valid until its plugin is removed. */
const handler *registry_find(registry *r, const char *name);

/* Remove every handler and hook p registered (calling udata_free). */
void registry_remove_plugin(registry *r, struct bgt_plugin *p);

/*
 * Copy up to max handler pointers into out, in registration order. Returns the
 * total number of handlers (which may exceed max).
 */
size_t registry_handlers(registry *r, const handler **out, size_t max);

/*
 * Copy up to max hook pointers into out, in registration order. Returns the
 * total number of hooks (which may exceed max). A pointer stays valid until
 * its plugin is removed.
 */
size_t registry_hooks(registry *r, const hook **out, size_t max);

/*
 * The current hooks, with a reference taken, or NULL when none is registered.
 * Takes no lock (a few atomic operations); the list stays valid and unchanged
 * until registry_hooks_put, whatever is registered or removed meanwhile.
 */
hook_list *registry_hooks_get(registry *r);
/* True when no plugin has a hook registered (at the moment of asking). */
bool registry_hookless(registry *r);
/* Give back a reference from registry_hooks_get. NULL is allowed. */
void registry_hooks_put(hook_list *l);

/*
 * Pause (or resume) every handler of p: the manager stops claiming their
 * tasks (attempts already claimed run on). Bumps the generation so readers
 * refresh.
 */
void registry_pause_plugin(registry *r, struct bgt_plugin *p, bool paused);
/* Whether h is paused. */
bool registry_paused(const handler *h);
/* Mark every handler of p as stopping by itself (see handler.stops_itself), and give them
 * hand_off (see handler.hand_off; NULL for none). */
void registry_stops_itself(registry *r, struct bgt_plugin *p,
                           void (*hand_off)(bgt_task *t, const char *args_json, void *udata));

/* Number of handlers p registered. */
size_t registry_count_plugin(registry *r, const struct bgt_plugin *p);

#endif

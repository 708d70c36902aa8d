/*
 * registry.c - handler name -> definition and owning plugin, and the plugin
 * hooks, both kept in registration order behind one mutex.
 *
 * Ownership: the (udata, udata_free) pair of a definition belongs to the
 * registry from the registering call on, whatever that call returns. A refused
 * definition has its udata_free called before the call returns; an accepted
 * one when its plugin is removed or the registry is destroyed. udata_free is
 * plugin code, so it is always called with the lock released: a plugin that
 * calls back into the registry from it cannot deadlock.
 *
 * Every link is written with the lock held and with a release store.
 *
 * The hook chain reads the hooks without the lock, through the published
 * hook_list: each change builds a new list under the lock and swaps the
 * pointer. A reader announces itself in r->readers while it loads the pointer
 * and takes a reference; the writer, after the swap, waits until no reader is
 * in that short window, so every reader that saw the old list holds a
 * reference to it before the registry drops its own. A list references its
 * hooks; a removed hook is freed (udata_free called) by the remover once no
 * list holds it any more, that is, once no thread still runs it.
 */
#include "registry.h"

#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* The smallest definitions a plugin may pass: ABI 1.0's fields up to udata_free. */
#define HANDLER_DEF_MIN (offsetof(bgt_handler_def, udata_free) + sizeof(void (*)(void *)))
#define HOOK_DEF_MIN (offsetof(bgt_hook_def, udata_free) + sizeof(void (*)(void *)))

#define NAME_RULE "[a-z0-9][a-z0-9._-]{0,62}"

void registry_init(registry *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
}

/* Call a definition's udata_free, if it has one. */
static void drop_udata(void *udata, void (*udata_free)(void *))
{
    if (udata_free)
        udata_free(udata);
}

/* Free a chain of handlers unlinked from the registry (lock not held). */
static void free_handlers(handler *h)
{
    while (h) {
        handler *next = h->next;
        drop_udata(h->def.udata, h->def.udata_free);
        free(h);
        h = next;
    }
}

/*
 * Free a chain of hooks unlinked from the registry (lock not held): drop the
 * registry's reference to each, wait until no published list holds it (no
 * thread still runs it), then free it.
 */
static void free_hooks(hook *k)
{
    while (k) {
        hook *next = k->next;
        __atomic_sub_fetch(&k->refs, 1, __ATOMIC_ACQ_REL);
        while (__atomic_load_n(&k->refs, __ATOMIC_ACQUIRE) > 0)
            sleep_s(0.001);
        drop_udata(k->def.udata, k->def.udata_free);
        free(k);
        k = next;
    }
}

void registry_hooks_put(hook_list *l)
{
    if (!l || __atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; i < l->n; i++)
        __atomic_sub_fetch(&l->v[i]->refs, 1, __ATOMIC_ACQ_REL);
    free(l);
}

bool registry_hookless(registry *r)
{
    return __atomic_load_n(&r->published, __ATOMIC_ACQUIRE) == NULL;
}

hook_list *registry_hooks_get(registry *r)
{
    if (!__atomic_load_n(&r->published, __ATOMIC_ACQUIRE))
        return NULL; /* the common case: no plugin hooks, and no shared write */
    __atomic_add_fetch(&r->readers, 1, __ATOMIC_SEQ_CST);
    hook_list *l = __atomic_load_n(&r->published, __ATOMIC_SEQ_CST);
    if (l)
        __atomic_add_fetch(&l->refs, 1, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&r->readers, 1, __ATOMIC_SEQ_CST);
    return l;
}

/* Publish the hooks as they are now (lock held): a new list, or NULL for none. */
static void publish_hooks(registry *r)
{
    size_t n = 0;
    for (hook *k = r->hooks; k; k = k->next)
        n++;
    hook_list *l = NULL;
    if (n) {
        l = xmalloc(sizeof *l + n * sizeof l->v[0]);
        l->refs = 1; /* the registry's */
        l->n = 0;
        for (hook *k = r->hooks; k; k = k->next) {
            __atomic_add_fetch(&k->refs, 1, __ATOMIC_RELAXED);
            l->v[l->n++] = k;
        }
    }
    hook_list *old = __atomic_exchange_n(&r->published, l, __ATOMIC_SEQ_CST);
    /* A reader that loaded `old` holds a reference once it has left the window. */
    while (__atomic_load_n(&r->readers, __ATOMIC_SEQ_CST) > 0)
        sched_yield();
    registry_hooks_put(old);
}

void registry_destroy(registry *r)
{
    pthread_mutex_lock(&r->lock);
    handler *hs = r->handlers;
    hook *ks = r->hooks;
    __atomic_store_n(&r->handlers, NULL, __ATOMIC_RELEASE);
    __atomic_store_n(&r->hooks, NULL, __ATOMIC_RELEASE);
    publish_hooks(r);
    pthread_mutex_unlock(&r->lock);
    free_handlers(hs);
    free_hooks(ks);
    pthread_mutex_destroy(&r->lock);
}

/*
 * Write a printable excerpt of a name a plugin passed (which may be long or
 * hold control characters) into out, so error messages stay one clean line.
 */
static const char *shown(const char *name, char *out, size_t outlen)
{
    size_t i = 0;
    for (; name[i] && i + 1 < outlen; i++) {
        unsigned char c = (unsigned char)name[i];
        out[i] = (c >= 0x20 && c < 0x7f && c != '\'') ? (char)c : '?';
    }
    out[i] = '\0';
    if (name[i] && outlen > 4)
        memcpy(out + outlen - 4, "...", 4);
    return out;
}

/* Check a copied handler definition; 0 or -EINVAL with err set. */
static int check_handler(const bgt_handler_def *d, char *err, size_t errlen)
{
    char buf[BGT_NAME_MAX + 2];
    if (!d->name) {
        snprintf(err, errlen, "handler definition has no name");
        return -EINVAL;
    }
    if (!name_valid(d->name)) {
        snprintf(err, errlen, "handler name '%s' is invalid: it must match " NAME_RULE,
                 shown(d->name, buf, sizeof buf));
        return -EINVAL;
    }
    const char *n = d->name;
    if (!d->run) {
        snprintf(err, errlen, "handler '%s': a run function is required", n);
        return -EINVAL;
    }
    if (d->kind != BGT_SINGLE && d->kind != BGT_PARALLEL) {
        snprintf(err, errlen, "handler '%s': kind must be single (0) or parallel (1), got %d", n,
                 (int)d->kind);
        return -EINVAL;
    }
    if (d->split && d->kind != BGT_PARALLEL) {
        snprintf(err, errlen, "handler '%s': a split function is only for parallel handlers", n);
        return -EINVAL;
    }
    if (d->merge && d->kind != BGT_PARALLEL) {
        snprintf(err, errlen, "handler '%s': a merge function is only for parallel handlers", n);
        return -EINVAL;
    }
    if (d->on_failure != BGT_CONTINUE && d->on_failure != BGT_FAIL_FAST) {
        snprintf(err, errlen, "handler '%s': on_failure must be BGT_CONTINUE or BGT_FAIL_FAST", n);
        return -EINVAL;
    }
    if (d->max_attempts < 0 || d->max_attempts > 1000) {
        snprintf(err, errlen, "handler '%s': max_attempts must be 0..1000, got %d", n,
                 d->max_attempts);
        return -EINVAL;
    }
    if (d->parallelism < 0 || d->parallelism > 1024) {
        snprintf(err, errlen, "handler '%s': parallelism must be 0..1024, got %d", n,
                 d->parallelism);
        return -EINVAL;
    }
    if (!isfinite(d->timeout_s) || d->timeout_s < 0) {
        snprintf(err, errlen, "handler '%s': timeout_s must be a finite number >= 0, got %g", n,
                 d->timeout_s);
        return -EINVAL;
    }
    if (d->batch_size < 0) {
        snprintf(err, errlen, "handler '%s': batch_size must be >= 0, got %d", n, d->batch_size);
        return -EINVAL;
    }
    return 0;
}

int registry_add_handler(registry *r, struct bgt_plugin *p, const char *owner,
                         const bgt_handler_def *def, char *err, size_t errlen)
{
    if (!def) {
        snprintf(err, errlen, "handler definition is NULL");
        return -EINVAL;
    }
    /* Too small to hold udata_free: nothing past size can be read, not even
     * the pair that would have to be freed. */
    if (def->size < HANDLER_DEF_MIN) {
        snprintf(err, errlen, "handler definition is %zu bytes; plugin ABI 1.0 needs at least %zu",
                 def->size, (size_t)HANDLER_DEF_MIN);
        return -EINVAL;
    }
    handler *h = xcalloc(1, sizeof *h);
    /* An older plugin's definition is shorter (its missing fields stay zero,
     * the defaults); a newer plugin's is longer (fields we do not know about
     * are ignored). */
    memcpy(&h->def, def, def->size < sizeof h->def ? def->size : sizeof h->def);
    h->def.size = sizeof h->def;
    h->plugin = p;
    h->owner = p ? owner : NULL;
    int rc = check_handler(&h->def, err, errlen);
    if (rc < 0)
        goto fail;
    strlcpy_(h->name, h->def.name, sizeof h->name);
    h->def.name = h->name;

    pthread_mutex_lock(&r->lock);
    handler **tail = &r->handlers;
    for (; *tail; tail = &(*tail)->next) {
        if (strcmp((*tail)->name, h->name) == 0) {
            const char *by = (*tail)->owner;
            snprintf(err, errlen, "handler '%s' is already registered by %s%s%s", h->name,
                     by ? "plugin '" : "", by ? by : "the host", by ? "'" : "");
            pthread_mutex_unlock(&r->lock);
            rc = -EEXIST;
            goto fail;
        }
    }
    __atomic_store_n(tail, h, __ATOMIC_RELEASE);
    __atomic_add_fetch(&r->generation, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&r->lock);
    return 0;

fail:
    drop_udata(h->def.udata, h->def.udata_free);
    free(h);
    return rc;
}

int registry_add_hook(registry *r, struct bgt_plugin *p, const bgt_hook_def *def, char *err,
                      size_t errlen)
{
    char buf[BGT_NAME_MAX + 2];
    if (!def) {
        snprintf(err, errlen, "hook definition is NULL");
        return -EINVAL;
    }
    if (def->size < HOOK_DEF_MIN) {
        snprintf(err, errlen, "hook definition is %zu bytes; plugin ABI 1.0 needs at least %zu",
                 def->size, (size_t)HOOK_DEF_MIN);
        return -EINVAL;
    }
    hook *k = xcalloc(1, sizeof *k);
    memcpy(&k->def, def, def->size < sizeof k->def ? def->size : sizeof k->def);
    k->def.size = sizeof k->def;
    k->plugin = p;
    int rc = -EINVAL;
    if (!k->def.name) {
        snprintf(err, errlen, "hook definition has no name");
        goto fail;
    }
    if (!name_valid(k->def.name)) {
        snprintf(err, errlen, "hook name '%s' is invalid: it must match " NAME_RULE,
                 shown(k->def.name, buf, sizeof buf));
        goto fail;
    }
    strlcpy_(k->name, k->def.name, sizeof k->name);
    k->def.name = k->name;
    k->refs = 1; /* registered */

    pthread_mutex_lock(&r->lock);
    hook **tail = &r->hooks;
    while (*tail)
        tail = &(*tail)->next;
    __atomic_store_n(tail, k, __ATOMIC_RELEASE);
    publish_hooks(r);
    __atomic_add_fetch(&r->generation, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&r->lock);
    return 0;

fail:
    drop_udata(k->def.udata, k->def.udata_free);
    free(k);
    return rc;
}

const handler *registry_find(registry *r, const char *name)
{
    if (!name)
        return NULL;
    pthread_mutex_lock(&r->lock);
    const handler *h = r->handlers;
    while (h && strcmp(h->name, name) != 0)
        h = h->next;
    pthread_mutex_unlock(&r->lock);
    return h;
}

void registry_remove_plugin(registry *r, struct bgt_plugin *p)
{
    handler *hs = NULL, **hs_tail = &hs;
    hook *ks = NULL, **ks_tail = &ks;
    bool changed = false;

    /* Unlink under the lock, keeping the removed entries in order, and free
     * them after it is released. */
    pthread_mutex_lock(&r->lock);
    for (handler **pp = &r->handlers; *pp;) {
        handler *h = *pp;
        if (h->plugin == p) {
            __atomic_store_n(pp, h->next, __ATOMIC_RELEASE);
            h->next = NULL;
            *hs_tail = h;
            hs_tail = &h->next;
            changed = true;
        } else {
            pp = &h->next;
        }
    }
    for (hook **pp = &r->hooks; *pp;) {
        hook *k = *pp;
        if (k->plugin == p) {
            __atomic_store_n(pp, k->next, __ATOMIC_RELEASE);
            k->next = NULL;
            *ks_tail = k;
            ks_tail = &k->next;
            changed = true;
        } else {
            pp = &k->next;
        }
    }
    if (ks)
        publish_hooks(r);
    if (changed)
        __atomic_add_fetch(&r->generation, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&r->lock);

    free_handlers(hs);
    free_hooks(ks);
}

size_t registry_handlers(registry *r, const handler **out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&r->lock);
    for (const handler *h = r->handlers; h; h = h->next, n++)
        if (n < max)
            out[n] = h;
    pthread_mutex_unlock(&r->lock);
    return n;
}

size_t registry_hooks(registry *r, const hook **out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&r->lock);
    for (const hook *k = r->hooks; k; k = k->next, n++)
        if (n < max)
            out[n] = k;
    pthread_mutex_unlock(&r->lock);
    return n;
}

void registry_pause_plugin(registry *r, struct bgt_plugin *p, bool paused)
{
    pthread_mutex_lock(&r->lock);
    for (handler *h = r->handlers; h; h = h->next)
        if (h->plugin == p)
            __atomic_store_n(&h->paused, paused, __ATOMIC_RELEASE);
    __atomic_add_fetch(&r->generation, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&r->lock);
}

bool registry_paused(const handler *h) { return __atomic_load_n(&h->paused, __ATOMIC_ACQUIRE); }

void registry_stops_itself(registry *r, struct bgt_plugin *p,
                           void (*hand_off)(bgt_task *t, const char *args_json, void *udata))
{
    pthread_mutex_lock(&r->lock);
    for (handler *h = r->handlers; h; h = h->next)
        if (h->plugin == p) {
            h->stops_itself = true;
            h->hand_off = hand_off;
        }
    pthread_mutex_unlock(&r->lock);
}

size_t registry_count_plugin(registry *r, const struct bgt_plugin *p)
{
    size_t n = 0;
    pthread_mutex_lock(&r->lock);
    for (const handler *h = r->handlers; h; h = h->next)
        if (h->plugin == p)
            n++;
    pthread_mutex_unlock(&r->lock);
    return n;
}

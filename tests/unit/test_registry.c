/*
 * test_registry.c - the handler and hook registry: definition checks, the
 * ownership of (udata, udata_free), registration order, removal by plugin,
 * the generation counter, concurrent additions, and the hook list read
 * without a lock: snapshots that do not change, removal that waits for the
 * threads still running a hook, hooks that call back into the registry.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../harness/harness.h"
#include "hooks.h"
#include "plugin.h"
#include "registry.h"
#include "util.h"

static struct bgt_plugin plugin_a = {.name = (char *)"pa"};
static struct bgt_plugin plugin_b = {.name = (char *)"pb"};

static bgt_status run_ok(bgt_task *t, const cJSON *args, void *udata) { return BGT_OK; }

static bgt_status split_ok(bgt_task *t, const cJSON *args, void *udata) { return BGT_OK; }

static void hook_before(void *udata, const bgt_hook_info *info) {}

/* udata is an int counter: how many times udata_free ran for it. */
static void count_free(void *udata) { ++*(int *)udata; }

/* A valid single handler definition named name whose udata counts frees. */
static bgt_handler_def hdef(const char *name, int *frees)
{
    return (bgt_handler_def){.size = sizeof(bgt_handler_def),
                             .name = name,
                             .kind = BGT_SINGLE,
                             .run = run_ok,
                             .udata = frees,
                             .udata_free = count_free};
}

static bgt_hook_def kdef(const char *name, int *frees)
{
    return (bgt_hook_def){.size = sizeof(bgt_hook_def),
                          .name = name,
                          .before = hook_before,
                          .udata = frees,
                          .udata_free = count_free};
}

static int setup(void **state)
{
    registry *r = xcalloc(1, sizeof *r);
    registry_init(r);
    *state = r;
    return 0;
}

static int teardown(void **state)
{
    registry *r = *state;
    registry_destroy(r);
    free(r);
    return 0;
}

static size_t handler_count(registry *r) { return registry_handlers(r, NULL, 0); }

static void test_add_and_find(void **state)
{
    registry *r = *state;
    char err[256] = "";
    int frees = 0;
    char name[] = "fx.copy";
    bgt_handler_def d = {.size = sizeof d,
                         .name = name,
                         .kind = BGT_PARALLEL,
                         .run = run_ok,
                         .split = split_ok,
                         .not_retriable = true,
                         .max_attempts = 7,
                         .parallelism = 3,
                         .timeout_s = 2.5,
                         .batch_size = 10,
                         .udata = &frees,
                         .udata_free = count_free};
    assert_int_equal(registry_add_handler(r, &plugin_a, "pa", &d, err, sizeof err), 0);
    /* The name is copied: the caller's buffer may change afterwards. */
    name[0] = 'x';
    const handler *h = registry_find(r, "fx.copy");
    assert_non_null(h);
    assert_string_equal(h->name, "fx.copy");
    assert_ptr_equal(h->def.name, h->name);
    assert_ptr_equal(h->plugin, &plugin_a);
    assert_int_equal(h->def.kind, BGT_PARALLEL);
    assert_ptr_equal(h->def.run, run_ok);
    assert_ptr_equal(h->def.split, split_ok);
    assert_true(h->def.not_retriable);
    assert_int_equal(h->def.max_attempts, 7);
    assert_int_equal(h->def.parallelism, 3);
    assert_true(h->def.timeout_s == 2.5);
    assert_int_equal(h->def.batch_size, 10);
    assert_ptr_equal(h->def.udata, &frees);
    assert_null(registry_find(r, "xx.copy"));
    assert_null(registry_find(r, "fx.cop"));
    assert_null(registry_find(r, NULL));
    assert_int_equal(registry_count_plugin(r, &plugin_a), 1);
    assert_int_equal(registry_count_plugin(r, &plugin_b), 0);
    assert_int_equal(frees, 0);
}

/* Each bad definition is refused with -EINVAL, a message containing want, its
 * udata freed exactly once, and the registry left unchanged. */
static void expect_invalid(registry *r, bgt_handler_def d, const char *want)
{
    char err[256] = "";
    int frees = 0;
    unsigned gen = r->generation;
    d.udata = &frees;
    d.udata_free = count_free;
    assert_int_equal(registry_add_handler(r, &plugin_a, "pa", &d, err, sizeof err), -EINVAL);
    if (!strstr(err, want))
        fail_msg("error '%s' does not contain '%s'", err, want);
    assert_int_equal(frees, 1);
    assert_int_equal(handler_count(r), 0);
    assert_int_equal(r->generation, gen);
}

static void test_validation(void **state)
{
    registry *r = *state;
    int unused = 0;
    bgt_handler_def d;
    char long_name[BGT_NAME_MAX + 10];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';

    d = hdef(NULL, &unused);
    expect_invalid(r, d, "has no name");
    d = hdef("", &unused);
    expect_invalid(r, d, "handler name '' is invalid");
    d = hdef("Upper", &unused);
    expect_invalid(r, d, "handler name 'Upper' is invalid");
    d = hdef("-dash", &unused);
    expect_invalid(r, d, "is invalid");
    d = hdef("a b", &unused);
    expect_invalid(r, d, "is invalid");
    d = hdef("new\nline", &unused);
    expect_invalid(r, d, "handler name 'new?line' is invalid");
    d = hdef(long_name, &unused);
    expect_invalid(r, d, "aaa...' is invalid");
    long_name[BGT_NAME_MAX + 1] = '\0';
    d = hdef(long_name, &unused);
    expect_invalid(r, d, "is invalid");
    d = hdef("fx.x", &unused);
    d.run = NULL;
    expect_invalid(r, d, "handler 'fx.x': a run function is required");
    d = hdef("fx.x", &unused);
    d.kind = (bgt_kind)2;
    expect_invalid(r, d, "kind must be single (0) or parallel (1), got 2");
    d = hdef("fx.x", &unused);
    d.split = split_ok;
    expect_invalid(r, d, "split function is only for parallel handlers");
    d = hdef("fx.x", &unused);
    d.max_attempts = -1;
    expect_invalid(r, d, "max_attempts must be 0..1000, got -1");
    d.max_attempts = 1001;
    expect_invalid(r, d, "max_attempts must be 0..1000, got 1001");
    d = hdef("fx.x", &unused);
    d.parallelism = -1;
    expect_invalid(r, d, "parallelism must be 0..1024, got -1");
    d.parallelism = 1025;
    expect_invalid(r, d, "parallelism must be 0..1024, got 1025");
    d = hdef("fx.x", &unused);
    d.timeout_s = -0.5;
    expect_invalid(r, d, "timeout_s must be a finite number >= 0, got -0.5");
    d.timeout_s = NAN;
    expect_invalid(r, d, "timeout_s");
    d.timeout_s = INFINITY;
    expect_invalid(r, d, "timeout_s");
    d = hdef("fx.x", &unused);
    d.batch_size = -1;
    expect_invalid(r, d, "batch_size must be >= 0, got -1");

    /* The limits themselves are accepted. */
    char err[256];
    int frees = 0;
    long_name[BGT_NAME_MAX] = '\0';
    d = hdef(long_name, &frees);
    d.kind = BGT_PARALLEL;
    d.max_attempts = 1000;
    d.parallelism = 1024;
    d.timeout_s = 0;
    d.batch_size = 0;
    assert_int_equal(registry_add_handler(r, NULL, NULL, &d, err, sizeof err), 0);
    d = hdef("0-._", &frees);
    assert_int_equal(registry_add_handler(r, NULL, NULL, &d, err, sizeof err), 0);
    assert_int_equal(handler_count(r), 2);
    assert_int_equal(frees, 0);

    assert_int_equal(registry_add_handler(r, NULL, NULL, NULL, err, sizeof err), -EINVAL);
}

static void test_definition_size(void **state)
{
    registry *r = *state;
    char err[256] = "";
    int frees = 0;

    /* Too small to reach udata_free: refused, and the pair cannot be read. */
    bgt_handler_def d = hdef("fx.small", &frees);
    d.size = offsetof(bgt_handler_def, udata);
    assert_int_equal(registry_add_handler(r, NULL, NULL, &d, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "plugin ABI 1.0 needs at least"));
    assert_int_equal(frees, 0);
    bgt_hook_def k = kdef("small", &frees);
    k.size = 8;
    assert_int_equal(registry_add_hook(r, NULL, &k, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "hook definition is 8 bytes"));
    assert_int_equal(frees, 0);

    /* A newer plugin's longer definition: known fields kept, the rest ignored. */
    struct {
        bgt_handler_def def;
        long future[4];
    } big = {.def = hdef("fx.big", &frees), .future = {1, 2, 3, 4}};
    big.def.size = sizeof big;
    big.def.max_attempts = 9;
    assert_int_equal(registry_add_handler(r, NULL, NULL, &big.def, err, sizeof err), 0);
    const handler *h = registry_find(r, "fx.big");
    assert_non_null(h);
    assert_int_equal(h->def.size, sizeof(bgt_handler_def));
    assert_int_equal(h->def.max_attempts, 9);
    assert_ptr_equal(h->def.udata_free, count_free);
}

static void test_duplicate(void **state)
{
    registry *r = *state;
    char err[256] = "";
    int frees_a = 0, frees_b = 0;
    bgt_handler_def d = hdef("fx.dup", &frees_a);
    assert_int_equal(registry_add_handler(r, &plugin_a, "pa", &d, err, sizeof err), 0);
    unsigned gen = r->generation;

    d = hdef("fx.dup", &frees_b);
    assert_int_equal(registry_add_handler(r, &plugin_b, "pb", &d, err, sizeof err), -EEXIST);
    assert_string_equal(err, "handler 'fx.dup' is already registered by plugin 'pa'");
    assert_int_equal(frees_b, 1);
    assert_int_equal(frees_a, 0);
    assert_int_equal(r->generation, gen);
    const handler *h = registry_find(r, "fx.dup");
    assert_ptr_equal(h->plugin, &plugin_a);
    assert_ptr_equal(h->def.udata, &frees_a);

    d = hdef("fx.host", &frees_a);
    assert_int_equal(registry_add_handler(r, NULL, NULL, &d, err, sizeof err), 0);
    d = hdef("fx.host", &frees_b);
    assert_int_equal(registry_add_handler(r, &plugin_a, "pa", &d, err, sizeof err), -EEXIST);
    assert_string_equal(err, "handler 'fx.host' is already registered by the host");
    assert_int_equal(frees_b, 2);
}

static void test_order(void **state)
{
    registry *r = *state;
    char err[256];
    int frees = 0;
    const char *names[] = {"zeta", "alpha", "mid", "beta"};
    struct bgt_plugin *owners[] = {&plugin_a, &plugin_b, NULL, &plugin_a};
    for (int i = 0; i < 4; i++) {
        bgt_handler_def d = hdef(names[i], &frees);
        assert_int_equal(registry_add_handler(r, owners[i], owners[i] ? owners[i]->name : NULL, &d,
                                              err, sizeof err),
                         0);
        bgt_hook_def k = kdef(names[3 - i], &frees);
        assert_int_equal(registry_add_hook(r, owners[i], &k, err, sizeof err), 0);
    }
    /* Hook names need not be unique. */
    bgt_hook_def k = kdef("zeta", &frees);
    assert_int_equal(registry_add_hook(r, NULL, &k, err, sizeof err), 0);

    const handler *hs[8];
    assert_int_equal(registry_handlers(r, hs, 8), 4);
    for (int i = 0; i < 4; i++)
        assert_string_equal(hs[i]->name, names[i]);
    const handler *two[2] = {NULL, NULL};
    assert_int_equal(registry_handlers(r, two, 2), 4);
    assert_ptr_equal(two[0], hs[0]);
    assert_ptr_equal(two[1], hs[1]);

    const hook *ks[8];
    assert_int_equal(registry_hooks(r, ks, 8), 5);
    for (int i = 0; i < 4; i++)
        assert_string_equal(ks[i]->name, names[3 - i]);
    assert_string_equal(ks[4]->name, "zeta");
    assert_ptr_equal(ks[4]->def.name, ks[4]->name);
    assert_ptr_equal(ks[0]->def.before, hook_before);
    assert_int_equal(frees, 0);
}

static void test_hook_validation(void **state)
{
    registry *r = *state;
    char err[256] = "";
    int frees = 0;
    bgt_hook_def k = kdef(NULL, &frees);
    assert_int_equal(registry_add_hook(r, &plugin_a, &k, err, sizeof err), -EINVAL);
    assert_string_equal(err, "hook definition has no name");
    assert_int_equal(frees, 1);
    k = kdef("Bad Hook", &frees);
    assert_int_equal(registry_add_hook(r, &plugin_a, &k, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "hook name 'Bad Hook' is invalid"));
    assert_int_equal(frees, 2);
    assert_int_equal(registry_add_hook(r, &plugin_a, NULL, err, sizeof err), -EINVAL);
    assert_int_equal(registry_hooks(r, NULL, 0), 0);
    assert_int_equal(r->generation, 0);

    /* A NULL udata_free is allowed; nothing is called for it. */
    k = kdef("quiet", NULL);
    k.udata_free = NULL;
    assert_int_equal(registry_add_hook(r, &plugin_a, &k, err, sizeof err), 0);
}

static void test_remove_plugin(void **state)
{
    registry *r = *state;
    char err[256];
    int frees_a = 0, frees_b = 0, frees_host = 0;
    bgt_handler_def d;
    bgt_hook_def k;

    d = hdef("a.one", &frees_a);
    assert_int_equal(registry_add_handler(r, &plugin_a, "pa", &d, err, sizeof err), 0);
    d = hdef("b.one", &frees_b);
    assert_int_equal(registry_add_handler(r, &plugin_b, "pb", &d, err, sizeof err), 0);
    d = hdef("a.two", &frees_a);
    assert_int_equal(registry_add_handler(r, &plugin_a, "pa", &d, err, sizeof err), 0);
    d = hdef("host.one", &frees_host);
    assert_int_equal(registry_add_handler(r, NULL, NULL, &d, err, sizeof err), 0);
    d = hdef("b.two", &frees_b);
    assert_int_equal(registry_add_handler(r, &plugin_b, "pb", &d, err, sizeof err), 0);
    k = kdef("a-hook", &frees_a);
    assert_int_equal(registry_add_hook(r, &plugin_a, &k, err, sizeof err), 0);
    k = kdef("b-hook", &frees_b);
    assert_int_equal(registry_add_hook(r, &plugin_b, &k, err, sizeof err), 0);
    assert_int_equal(registry_count_plugin(r, &plugin_a), 2);
    assert_int_equal(registry_count_plugin(r, &plugin_b), 2);
    assert_int_equal(registry_count_plugin(r, NULL), 1);

    unsigned gen = r->generation;
    registry_remove_plugin(r, &plugin_a);
    assert_int_equal(frees_a, 3);
    assert_int_equal(frees_b, 0);
    assert_int_not_equal(r->generation, gen);
    assert_null(registry_find(r, "a.one"));
    assert_null(registry_find(r, "a.two"));
    assert_int_equal(registry_count_plugin(r, &plugin_a), 0);

    const handler *hs[8];
    assert_int_equal(registry_handlers(r, hs, 8), 3);
    assert_string_equal(hs[0]->name, "b.one");
    assert_string_equal(hs[1]->name, "host.one");
    assert_string_equal(hs[2]->name, "b.two");
    const hook *ks[4];
    assert_int_equal(registry_hooks(r, ks, 4), 1);
    assert_string_equal(ks[0]->name, "b-hook");

    /* Removing a plugin with nothing registered changes nothing. */
    gen = r->generation;
    registry_remove_plugin(r, &plugin_a);
    assert_int_equal(r->generation, gen);
    assert_int_equal(frees_a, 3);

    /* The name is free again. */
    d = hdef("a.one", &frees_a);
    assert_int_equal(registry_add_handler(r, &plugin_b, "pb", &d, err, sizeof err), 0);
}

static void test_generation(void **state)
{
    registry *r = *state;
    char err[256];
    int frees = 0;
    assert_int_equal(r->generation, 0);
    bgt_handler_def d = hdef("g.one", &frees);
    assert_int_equal(registry_add_handler(r, &plugin_a, "pa", &d, err, sizeof err), 0);
    assert_int_equal(r->generation, 1);
    bgt_hook_def k = kdef("g-hook", &frees);
    assert_int_equal(registry_add_hook(r, &plugin_a, &k, err, sizeof err), 0);
    assert_int_equal(r->generation, 2);
    d = hdef("g.one", &frees);
    assert_int_equal(registry_add_handler(r, &plugin_b, "pb", &d, err, sizeof err), -EEXIST);
    assert_int_equal(r->generation, 2);
    registry_remove_plugin(r, &plugin_a);
    assert_int_equal(r->generation, 3);
}

static void test_destroy_frees(void **state)
{
    (void)state;
    registry r;
    char err[256];
    int frees = 0;
    registry_init(&r);
    bgt_handler_def d = hdef("d.one", &frees);
    assert_int_equal(registry_add_handler(&r, &plugin_a, "pa", &d, err, sizeof err), 0);
    d = hdef("d.two", &frees);
    assert_int_equal(registry_add_handler(&r, NULL, NULL, &d, err, sizeof err), 0);
    bgt_hook_def k = kdef("d-hook", &frees);
    assert_int_equal(registry_add_hook(&r, &plugin_b, &k, err, sizeof err), 0);
    registry_destroy(&r);
    assert_int_equal(frees, 3);
}

#define PER_THREAD 500

struct adder {
    registry *r;
    struct bgt_plugin *p;
    const char *prefix;
    int frees;
    int failures;
};

static void *add_many(void *arg)
{
    struct adder *a = arg;
    char name[32], err[256];
    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(name, sizeof name, "%s.%d", a->prefix, i);
        bgt_handler_def d = hdef(name, &a->frees);
        if (registry_add_handler(a->r, a->p, a->p->name, &d, err, sizeof err) != 0)
            a->failures++;
        if (!registry_find(a->r, name))
            a->failures++;
    }
    return NULL;
}

static void test_threads(void **state)
{
    registry *r = *state;
    struct adder a = {r, &plugin_a, "ta", 0, 0}, b = {r, &plugin_b, "tb", 0, 0};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, add_many, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, add_many, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.failures, 0);
    assert_int_equal(b.failures, 0);
    assert_int_equal(handler_count(r), 2 * PER_THREAD);
    assert_int_equal(r->generation, 2 * PER_THREAD);
    assert_int_equal(registry_count_plugin(r, &plugin_a), PER_THREAD);
    assert_int_equal(registry_count_plugin(r, &plugin_b), PER_THREAD);

    /* Each thread's entries keep that thread's order. */
    const handler **hs = xcalloc(2 * PER_THREAD, sizeof *hs);
    registry_handlers(r, hs, 2 * PER_THREAD);
    int next_a = 0, next_b = 0;
    char want[32];
    for (int i = 0; i < 2 * PER_THREAD; i++) {
        bool is_a = hs[i]->plugin == &plugin_a;
        snprintf(want, sizeof want, "%s.%d", is_a ? "ta" : "tb", is_a ? next_a++ : next_b++);
        assert_string_equal(hs[i]->name, want);
    }
    free(hs);
    registry_remove_plugin(r, &plugin_a);
    registry_remove_plugin(r, &plugin_b);
    assert_int_equal(a.frees, PER_THREAD);
    assert_int_equal(b.frees, PER_THREAD);
}

/* The names in a hook list, comma-separated, into buf. */
static const char *list_names(const hook_list *l, char *buf, size_t n)
{
    buf[0] = '\0';
    for (size_t i = 0; l && i < l->n; i++)
        snprintf(buf + strlen(buf), n - strlen(buf), "%s%s", i ? "," : "", l->v[i]->name);
    return buf;
}

struct remover {
    registry *r;
    struct bgt_plugin *p;
    int done; /* atomic */
};

static void *remove_plugin(void *arg)
{
    struct remover *rm = arg;
    registry_remove_plugin(rm->r, rm->p);
    __atomic_store_n(&rm->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/*
 * A list is a snapshot: later registrations and removals leave it as it was.
 * Removing a plugin waits until no list that holds its hooks is referenced
 * (no thread runs them any more), and only then calls their udata_free.
 */
static void test_hook_list(void **state)
{
    registry *r = *state;
    char err[256], names[128];
    int frees_a = 0, frees_b = 0;
    assert_null(registry_hooks_get(r));
    bgt_hook_def k = kdef("one", &frees_a);
    assert_int_equal(registry_add_hook(r, &plugin_a, &k, err, sizeof err), 0);
    k = kdef("two", &frees_b);
    assert_int_equal(registry_add_hook(r, &plugin_b, &k, err, sizeof err), 0);
    hook_list *l1 = registry_hooks_get(r);
    assert_string_equal(list_names(l1, names, sizeof names), "one,two");
    k = kdef("three", &frees_a);
    assert_int_equal(registry_add_hook(r, &plugin_a, &k, err, sizeof err), 0);
    assert_string_equal(list_names(l1, names, sizeof names), "one,two");
    hook_list *l2 = registry_hooks_get(r);
    assert_string_equal(list_names(l2, names, sizeof names), "one,two,three");
    registry_hooks_put(l2);

    /* Plugin b goes while l1, which holds its hook, is still in use. */
    struct remover rm = {r, &plugin_b, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, remove_plugin, &rm), 0);
    /* The new list leaves it out at once... */
    assert_true(TH_WAIT_UNTIL(10, ({
                                  hook_list *l = registry_hooks_get(r);
                                  bool gone =
                                      strcmp(list_names(l, names, sizeof names), "one,three") == 0;
                                  registry_hooks_put(l);
                                  gone;
                              })));
    /* ...but its udata outlives every user of l1 (a wait that can only miss a bug,
     * never report one that is not there). */
    sleep_s(0.05);
    assert_int_equal(__atomic_load_n(&rm.done, __ATOMIC_ACQUIRE), 0);
    assert_int_equal(frees_b, 0);
    assert_string_equal(list_names(l1, names, sizeof names), "one,two");
    registry_hooks_put(l1);
    pthread_join(t, NULL);
    assert_int_equal(frees_b, 1);
    assert_int_equal(frees_a, 0);
    registry_remove_plugin(r, &plugin_a);
    assert_int_equal(frees_a, 2);
    assert_null(registry_hooks_get(r));
}

/* What a hook that calls back into the registry saw. */
struct callback {
    registry *r;
    int calls;
    size_t handlers, hooks;
    bool found;
};

static void hook_calls_back(void *udata, const bgt_hook_info *info)
{
    struct callback *cb = udata;
    cb->calls++;
    cb->handlers = registry_handlers(cb->r, NULL, 0);
    cb->hooks = registry_hooks(cb->r, NULL, 0);
    cb->found = registry_find(cb->r, info->handler) != NULL;
}

/* Hooks run without the registry's lock: a hook may call into the registry. */
static void test_hook_calls_registry(void **state)
{
    registry *r = *state;
    char err[256];
    int frees = 0;
    struct callback cb = {.r = r};
    bgt_handler_def d = hdef("cb.work", &frees);
    assert_int_equal(registry_add_handler(r, &plugin_a, "pa", &d, err, sizeof err), 0);
    bgt_hook_def k = {
        .size = sizeof k, .name = "calls-back", .before = hook_calls_back, .udata = &cb};
    assert_int_equal(registry_add_hook(r, &plugin_a, &k, err, sizeof err), 0);
    metrics *met = metrics_new();
    hooks hk = {.met = met, .reg = r};
    bgt_hook_info info = {"00000000-0000-4000-8000-000000000001", "cb.work", 1, -1};
    hooks_before(&hk, &info);
    assert_int_equal(cb.calls, 1);
    assert_int_equal(cb.handlers, 1);
    assert_int_equal(cb.hooks, 1);
    assert_true(cb.found);
    metrics_free(met);
    registry_remove_plugin(r, &plugin_a);
}

struct churn {
    registry *r;
    int stop; /* atomic */
    long calls;
};

static void hook_count(void *udata, const bgt_hook_info *info)
{
    __atomic_add_fetch((long *)udata, 1, __ATOMIC_RELAXED);
}

static void *call_hooks(void *arg)
{
    struct churn *c = arg;
    while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
        hook_list *l = registry_hooks_get(c->r);
        for (size_t i = 0; l && i < l->n; i++)
            l->v[i]->def.before(l->v[i]->def.udata, NULL);
        registry_hooks_put(l);
    }
    return NULL;
}

/* Readers on four threads while hooks come and go: every hook called is alive, and
 * every udata is freed once (ASan checks the first). */
static void test_hook_list_threads(void **state)
{
    registry *r = *state;
    char err[256];
    struct churn c = {.r = r};
    long calls = 0;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, call_hooks, &c), 0);
    int frees = 0;
    for (int round = 0; round < 200; round++) {
        bgt_hook_def k = {.size = sizeof k,
                          .name = "churn",
                          .before = hook_count,
                          .udata = &calls,
                          .udata_free = NULL};
        assert_int_equal(registry_add_hook(r, &plugin_a, &k, err, sizeof err), 0);
        bgt_hook_def k2 = kdef("churn-b", &frees);
        k2.before = hook_before;
        assert_int_equal(registry_add_hook(r, &plugin_b, &k2, err, sizeof err), 0);
        registry_remove_plugin(r, round % 2 ? &plugin_a : &plugin_b);
        registry_remove_plugin(r, round % 2 ? &plugin_b : &plugin_a);
    }
    __atomic_store_n(&c.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(frees, 200);
    assert_null(registry_hooks_get(r));
}

int main(void)
{
    log_set_level(BGT_LOG_DEBUG);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_and_find, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_definition_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hook_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_plugin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generation, setup, teardown),
        cmocka_unit_test(test_destroy_frees),
        cmocka_unit_test_setup_teardown(test_hook_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hook_calls_registry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hook_list_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

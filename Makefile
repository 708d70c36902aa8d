# bgtask - one GNU Makefile, pkg-config for every dependency, output under build/.
#
#   make            build bgtaskd, bgtaskctl, bench and the plugins
#   make test       install missing packages (as root; else name them), then unit tests (cmocka)
#                   and integration tests (real redis-server, real bgtaskd)
#   make asan       the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make run        install missing packages (as root), build, start Redis if needed, run bgtaskd
#   make bench      throughput and latency figures against a private redis-server
#   make install    PREFIX=/usr/local DESTDIR= (SYSCONFDIR=$(PREFIX)/etc, SYSTEMDDIR=...)
#   make check-abi  every plugin exports bgt_plugin_entry alone
#   make format     clang-format the sources
#   make clean

PREFIX    ?= /usr/local
DESTDIR   ?=
# Where make install puts the config (SYSCONFDIR/bgtask/bgtaskd.conf), the
# plugins, and the systemd unit (found there for PREFIX /usr and /usr/local).
SYSCONFDIR ?= $(PREFIX)/etc
PLUGINDIR ?= $(PREFIX)/lib/bgtask/plugins
SYSTEMDDIR ?= $(PREFIX)/lib/systemd/system
BUILD     ?= build
# Where make install puts the dashboard's files, and where bgtaskd looks for
# them when http.ui_dir is not set.
UIDIR     ?= $(PREFIX)/share/bgtask/ui
VERSION   := 0.1.0
CC        ?= gcc

PKG_CONFIG ?= pkg-config
PKGS      := hiredis libconfig libcjson
PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell $(PKG_CONFIG) --libs cmocka 2>/dev/null)
CRYPTO_LIBS := $(shell $(PKG_CONFIG) --libs libcrypto 2>/dev/null)
CJSON_LIBS  := $(shell $(PKG_CONFIG) --libs libcjson 2>/dev/null)
SYSTEMD_CFLAGS := $(shell $(PKG_CONFIG) --exists libsystemd 2>/dev/null && echo -DHAVE_SYSTEMD)
SYSTEMD_LIBS   := $(shell $(PKG_CONFIG) --libs libsystemd 2>/dev/null)
MHD_CFLAGS := $(shell $(PKG_CONFIG) --exists libmicrohttpd 2>/dev/null && echo -DHAVE_MHD $$($(PKG_CONFIG) --cflags libmicrohttpd))
MHD_LIBS   := $(shell $(PKG_CONFIG) --libs libmicrohttpd 2>/dev/null)

# The pkg-config modules a build needs, each with the Debian package that has it
# (libsystemd is optional: without it bgtaskd does not talk to systemd).
NEEDED_PKGS := hiredis:libhiredis-dev libconfig:libconfig-dev libcjson:libcjson-dev \
               libcrypto:libssl-dev libmicrohttpd:libmicrohttpd-dev
TEST_PKGS   := cmocka:libcmocka-dev
# These goals install what is missing first (tools/install-deps) and build in a
# make of their own, so this one must not stop for a module not there yet.
DEPS_FIRST  := test unit integration asan run bench deps clean format uninstall
ifneq ($(filter-out $(DEPS_FIRST),$(or $(MAKECMDGOALS),all)),)
ifeq ($(shell command -v $(PKG_CONFIG) 2>/dev/null),)
$(error $(PKG_CONFIG) not found: install the Debian package pkg-config (or run make deps as root))
endif
$(foreach m,$(NEEDED_PKGS) $(if $(filter %-run,$(MAKECMDGOALS)),$(TEST_PKGS)),\
  $(if $(shell $(PKG_CONFIG) --exists $(firstword $(subst :, ,$(m))) 2>/dev/null && echo y),,\
    $(error pkg-config module $(firstword $(subst :, ,$(m))) not found: install the Debian package $(lastword $(subst :, ,$(m))) (or run make deps as root))))
endif

OPT       ?= -O2
SAN       ?=
ifeq ($(SAN),1)
SANFLAGS  := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT       := -O1
endif

WARN      := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
# What the build needs comes first and stays, whatever CFLAGS and LDFLAGS the
# command line gives (make CFLAGS=-Werror); those come after, so they can
# still change what ours set (-O0 after our -O2). Plugins get them too.
USER_CFLAGS := $(CFLAGS)
USER_LDFLAGS := $(LDFLAGS)
override CFLAGS := -std=gnu11 $(OPT) -g $(WARN) -pthread $(SANFLAGS) -D_GNU_SOURCE \
             -DBGT_VERSION='"$(VERSION)"' -Isdk -Ihost $(USER_CFLAGS)
override LDFLAGS := -pthread $(SANFLAGS) $(USER_LDFLAGS)
PLUGIN_CFLAGS := -std=gnu11 $(OPT) -g $(WARN) -fPIC -fvisibility=hidden $(SANFLAGS) -Isdk \
                 $(shell $(PKG_CONFIG) --cflags libcjson 2>/dev/null) $(USER_CFLAGS)
PLUGIN_LDFLAGS := -shared -Wl,--no-undefined $(SANFLAGS) $(USER_LDFLAGS)

HOST_SRC  := $(filter-out host/main.c,$(wildcard host/*.c))
HOST_OBJ  := $(HOST_SRC:%.c=$(BUILD)/obj/%.o)
HOST_LIB  := $(BUILD)/lib/libbgthost.a
HOST_LIBS := $(PKG_LIBS) $(SYSTEMD_LIBS) $(MHD_LIBS) -ldl -lm

PLUGIN_DIRS := $(patsubst plugins/%/,%,$(sort $(dir $(wildcard plugins/*/*.c))))
PLUGINS     := $(PLUGIN_DIRS:%=$(BUILD)/plugins/%.so)
TPLUGIN_DIRS := $(patsubst tests/plugins/%/,%,$(sort $(dir $(wildcard tests/plugins/*/*.c))))
TPLUGINS    := $(TPLUGIN_DIRS:%=$(BUILD)/tests/plugins/%.so)
FIXTURE_SRC := $(wildcard tests/fixtures/*.c)
FIXTURES    := $(FIXTURE_SRC:tests/fixtures/%.c=$(BUILD)/tests/fixtures/%.so)
UNIT_SRC    := $(wildcard tests/unit/test_*.c)
UNIT_BIN    := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%)
INTEG_SRC   := $(wildcard tests/integration/test_*.c)
INTEG_BIN   := $(INTEG_SRC:tests/integration/%.c=$(BUILD)/tests/integration/%)
# The test harness: one library every test program links (tests/harness/*.c).
HARNESS_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tests/harness/*.c))
HARNESS_LIB := $(BUILD)/lib/libbgtharness.a

# A program of tools/ is a folder: tools/<prog>/*.c builds $(BUILD)/bin/<prog>.
TOOL_DIRS := $(patsubst tools/%/,%,$(sort $(dir $(wildcard tools/*/*.c))))
BINS := $(BUILD)/bin/bgtaskd $(TOOL_DIRS:%=$(BUILD)/bin/%)

.PHONY: all test unit integration test-run unit-run integration-run asan run bench install \
        uninstall check-abi format clean deps
all: $(BINS) $(PLUGINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) $(SYSTEMD_CFLAGS) $(MHD_CFLAGS) -MMD -MP -c $< -o $@

$(HOST_LIB): $(HOST_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/bgtaskd: $(BUILD)/obj/host/main.o $(HOST_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $^ $(HOST_LIBS) -o $@


# A plugin is every .c in its folder, linked into one .so that needs nothing
# from the host: -fvisibility=hidden and --no-undefined.
.SECONDARY:
.SECONDEXPANSION:
$(BUILD)/bin/%: $$(addprefix $(BUILD)/obj/,$$(subst .c,.o,$$(wildcard tools/$$*/*.c))) $(HOST_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $^ $(HOST_LIBS) -o $@

$(BUILD)/plugins/%.so: $$(wildcard plugins/%/*.c) $$(wildcard plugins/%/*.h) sdk/bgtask.h
	@mkdir -p $(@D)
	$(CC) $(PLUGIN_CFLAGS) $(filter %.c,$^) $(PLUGIN_LDFLAGS) $(CJSON_LIBS) $(CRYPTO_LIBS) -o $@

$(BUILD)/tests/plugins/%.so: $$(wildcard tests/plugins/%/*.c) sdk/bgtask.h
	@mkdir -p $(@D)
	$(CC) $(PLUGIN_CFLAGS) $(filter %.c,$^) $(PLUGIN_LDFLAGS) $(CJSON_LIBS) -o $@

$(BUILD)/tests/fixtures/%.so: tests/fixtures/%.c sdk/bgtask.h
	@mkdir -p $(@D)
	$(CC) $(PLUGIN_CFLAGS) $< $(PLUGIN_LDFLAGS) $(CJSON_LIBS) -o $@

$(HARNESS_LIB): $(HARNESS_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/tests/unit/%: $(BUILD)/obj/tests/unit/%.o $(HARNESS_LIB) $(HOST_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $^ $(HOST_LIBS) $(CMOCKA_LIBS) $(CRYPTO_LIBS) -o $@

$(BUILD)/tests/integration/%: $(BUILD)/obj/tests/integration/%.o $(HARNESS_LIB) $(HOST_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $^ $(HOST_LIBS) $(CMOCKA_LIBS) -o $@

TEST_DEPS := all $(UNIT_BIN) $(INTEG_BIN) $(FIXTURES) $(TPLUGINS)

# Building one test binary (make build/tests/integration/test_x) brings what
# it runs up to date too: the programs and the plugins, test ones included.
$(UNIT_BIN) $(INTEG_BIN): | $(BINS) $(PLUGINS) $(FIXTURES) $(TPLUGINS)

# The tests install what is missing first, the way make run does (as root;
# otherwise install-deps names what is missing and stops), then build and run
# in a make that sees the packages.
test unit integration: deps
	$(MAKE) --no-print-directory $@-run

test-run: $(TEST_DEPS)
	BUILD=$(BUILD) tests/run-tests $(UNIT_BIN) $(INTEG_BIN)

unit-run: all $(UNIT_BIN) $(FIXTURES) $(TPLUGINS)
	BUILD=$(BUILD) tests/run-tests $(UNIT_BIN)

integration-run: $(TEST_DEPS)
	BUILD=$(BUILD) tests/run-tests $(INTEG_BIN)

asan:
	$(MAKE) BUILD=build/asan SAN=1 test

deps:
	tools/install-deps

run: deps
	$(MAKE) all
	tools/run-dev

bench: deps
	$(MAKE) all $(TPLUGINS)
	tools/run-bench $(BENCH_ARGS)

# The files that name installed paths are written at install time, from the
# PREFIX (and SYSCONFDIR, PLUGINDIR, UIDIR, SYSTEMDDIR) given then: the SDK's
# pkg-config file, the host's config (config/bgtaskd.conf with the installed
# plugins and dashboard folders; an existing one is kept, the new one written
# next to it as bgtaskd.conf.new) and the systemd unit. DESTDIR only prefixes
# where files go, never what they say.
INSTALL_EDIT = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' \
                   -e 's|@BINDIR@|$(PREFIX)/bin|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
                   -e 's|@PLUGINDIR@|$(PLUGINDIR)|g' -e 's|@UIDIR@|$(UIDIR)|g'
CONF_DIR = $(DESTDIR)$(SYSCONFDIR)/bgtask

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include \
	    $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PLUGINDIR) \
	    $(DESTDIR)$(PREFIX)/share/bgtask/examples $(DESTDIR)$(UIDIR) $(CONF_DIR) \
	    $(DESTDIR)$(SYSTEMDDIR)
	install -m 755 $(BUILD)/bin/bgtaskd $(BUILD)/bin/bgtaskctl $(DESTDIR)$(PREFIX)/bin/
	install -m 644 sdk/bgtask.h $(DESTDIR)$(PREFIX)/include/
	$(INSTALL_EDIT) sdk/bgtask-sdk.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/bgtask-sdk.pc
	install -m 755 $(PLUGINS) $(DESTDIR)$(PLUGINDIR)/
	install -m 644 config/examples/*.conf $(DESTDIR)$(PREFIX)/share/bgtask/examples/
	install -m 644 $(wildcard host/ui/*) $(DESTDIR)$(UIDIR)/
	sed -e 's|^\([[:space:]]*dir = \)"\.\./build/plugins";|\1"$(PLUGINDIR)";|' \
	    -e 's|^\([[:space:]]*ui_dir = \)"\.\./host/ui";|\1"$(UIDIR)";|' \
	    config/bgtaskd.conf > $(BUILD)/bgtaskd.conf.installed
	@grep -q '"$(PLUGINDIR)"' $(BUILD)/bgtaskd.conf.installed && \
	    grep -q '"$(UIDIR)"' $(BUILD)/bgtaskd.conf.installed || \
	    { echo "make install: config/bgtaskd.conf no longer has the dir and ui_dir lines" \
	           "this rule rewrites"; exit 1; }
	@if [ -e $(CONF_DIR)/bgtaskd.conf ]; then \
	    install -m 644 $(BUILD)/bgtaskd.conf.installed $(CONF_DIR)/bgtaskd.conf.new; \
	    echo "make install: kept $(CONF_DIR)/bgtaskd.conf; the new one is bgtaskd.conf.new"; \
	else \
	    install -m 644 $(BUILD)/bgtaskd.conf.installed $(CONF_DIR)/bgtaskd.conf; \
	fi
	$(INSTALL_EDIT) config/bgtaskd.service > $(DESTDIR)$(SYSTEMDDIR)/bgtaskd.service

# Only what install put there: third-party plugins in PLUGINDIR and an edited
# config stay.
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/bgtaskd $(DESTDIR)$(PREFIX)/bin/bgtaskctl \
	    $(DESTDIR)$(PREFIX)/include/bgtask.h $(DESTDIR)$(PREFIX)/lib/pkgconfig/bgtask-sdk.pc \
	    $(PLUGINS:$(BUILD)/plugins/%=$(DESTDIR)$(PLUGINDIR)/%) \
	    $(DESTDIR)$(SYSTEMDDIR)/bgtaskd.service $(CONF_DIR)/bgtaskd.conf.new
	rm -rf $(DESTDIR)$(PREFIX)/share/bgtask $(DESTDIR)$(UIDIR)

# Every plugin must export bgt_plugin_entry and nothing else of its own.
check-abi: $(PLUGINS) $(TPLUGINS)
	@for so in $^; do \
	    syms=$$(nm -D --defined-only $$so | awk '$$2 ~ /^[A-Za-z]$$/ {print $$3}' | grep -v '^_' | sort -u); \
	    if [ "$$syms" != "bgt_plugin_entry" ]; then echo "$$so exports: $$syms"; exit 1; fi; \
	    echo "$$so: ok"; \
	done

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

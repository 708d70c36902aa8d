# bgtask - one GNU Makefile, pkg-config for every dependency, output under build/.
#
#   make            build bgtaskd, bgtaskctl, bench and the plugins
#   make test       unit tests (cmocka) and integration tests (real redis-server, real bgtaskd)
#   make asan       the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make run        install missing packages (as root), build, start Redis if needed, run bgtaskd
#   make bench      throughput and latency figures against a private redis-server
#   make install    PREFIX=/usr/local DESTDIR=
#   make check-abi  every plugin exports bgt_plugin_entry alone
#   make format     clang-format the sources
#   make clean

PREFIX    ?= /usr/local
DESTDIR   ?=
BUILD     ?= build
# Where make install puts the dashboard's files, and where bgtaskd looks for
# them when http.ui_dir is not set.
UIDIR     ?= $(PREFIX)/share/bgtask/ui
VERSION   := 0.1.0
CC        ?= gcc

PKGS      := hiredis libconfig libcjson
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)
CRYPTO_LIBS := $(shell pkg-config --libs libcrypto 2>/dev/null)
CJSON_LIBS  := $(shell pkg-config --libs libcjson 2>/dev/null)
SYSTEMD_CFLAGS := $(shell pkg-config --exists libsystemd 2>/dev/null && echo -DHAVE_SYSTEMD)
SYSTEMD_LIBS   := $(shell pkg-config --libs libsystemd 2>/dev/null)
MHD_CFLAGS := $(shell pkg-config --exists libmicrohttpd 2>/dev/null && echo -DHAVE_MHD $$(pkg-config --cflags libmicrohttpd))
MHD_LIBS   := $(shell pkg-config --libs libmicrohttpd 2>/dev/null)

OPT       ?= -O2
SAN       ?=
ifeq ($(SAN),1)
SANFLAGS  := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT       := -O1
endif

WARN      := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CFLAGS    ?=
CFLAGS    += -std=gnu11 $(OPT) -g $(WARN) -pthread $(SANFLAGS) -D_GNU_SOURCE \
             -DBGT_VERSION='"$(VERSION)"' -DBGT_UI_DIR='"$(UIDIR)"' -Isdk -Ihost
LDFLAGS   += -pthread $(SANFLAGS)
PLUGIN_CFLAGS := -std=gnu11 $(OPT) -g $(WARN) -fPIC -fvisibility=hidden $(SANFLAGS) -Isdk \
                 $(shell pkg-config --cflags libcjson 2>/dev/null)
PLUGIN_LDFLAGS := -shared -Wl,--no-undefined $(SANFLAGS)

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
HARNESS_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tests/harness/*.c))

BINS := $(BUILD)/bin/bgtaskd $(patsubst tools/%.c,$(BUILD)/bin/%,$(wildcard tools/*.c))

.PHONY: all test unit integration asan run bench install uninstall check-abi format clean deps
all: $(BINS) $(PLUGINS) $(BUILD)/bgtask-sdk.pc

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) $(SYSTEMD_CFLAGS) $(MHD_CFLAGS) -MMD -MP -c $< -o $@

$(HOST_LIB): $(HOST_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/bgtaskd: $(BUILD)/obj/host/main.o $(HOST_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $^ $(HOST_LIBS) -o $@

$(BUILD)/bin/%: $(BUILD)/obj/tools/%.o $(HOST_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $^ $(HOST_LIBS) -o $@

# A plugin is every .c in its folder, linked into one .so that needs nothing
# from the host: -fvisibility=hidden and --no-undefined.
.SECONDARY:
.SECONDEXPANSION:
$(BUILD)/plugins/%.so: $$(wildcard plugins/%/*.c) $$(wildcard plugins/%/*.h) sdk/bgtask.h
	@mkdir -p $(@D)
	$(CC) $(PLUGIN_CFLAGS) $(filter %.c,$^) $(PLUGIN_LDFLAGS) $(CJSON_LIBS) $(CRYPTO_LIBS) -o $@

$(BUILD)/tests/plugins/%.so: $$(wildcard tests/plugins/%/*.c) sdk/bgtask.h
	@mkdir -p $(@D)
	$(CC) $(PLUGIN_CFLAGS) $(filter %.c,$^) $(PLUGIN_LDFLAGS) $(CJSON_LIBS) -o $@

$(BUILD)/tests/fixtures/%.so: tests/fixtures/%.c sdk/bgtask.h
	@mkdir -p $(@D)
	$(CC) $(PLUGIN_CFLAGS) $< $(PLUGIN_LDFLAGS) $(CJSON_LIBS) -o $@

$(BUILD)/tests/unit/%: $(BUILD)/obj/tests/unit/%.o $(HARNESS_OBJ) $(HOST_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $^ $(HOST_LIBS) $(CMOCKA_LIBS) $(CRYPTO_LIBS) -o $@

$(BUILD)/tests/integration/%: $(BUILD)/obj/tests/integration/%.o $(HARNESS_OBJ) $(HOST_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $^ $(HOST_LIBS) $(CMOCKA_LIBS) -o $@

$(BUILD)/bgtask-sdk.pc: sdk/bgtask-sdk.pc.in Makefile
	@mkdir -p $(@D)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' $< > $@

TEST_DEPS := all $(UNIT_BIN) $(INTEG_BIN) $(FIXTURES) $(TPLUGINS)

test: $(TEST_DEPS)
	BUILD=$(BUILD) tests/run-tests $(UNIT_BIN) $(INTEG_BIN)

unit: all $(UNIT_BIN) $(FIXTURES) $(TPLUGINS)
	BUILD=$(BUILD) tests/run-tests $(UNIT_BIN)

integration: $(TEST_DEPS)
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

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include \
	    $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/lib/bgtask/plugins \
	    $(DESTDIR)$(PREFIX)/share/bgtask $(DESTDIR)$(UIDIR)
	install -m 755 $(BUILD)/bin/bgtaskd $(BUILD)/bin/bgtaskctl $(DESTDIR)$(PREFIX)/bin/
	install -m 644 sdk/bgtask.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(BUILD)/bgtask-sdk.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/
	install -m 755 $(PLUGINS) $(DESTDIR)$(PREFIX)/lib/bgtask/plugins/
	install -m 644 config/*.conf $(DESTDIR)$(PREFIX)/share/bgtask/
	install -m 644 $(wildcard host/ui/*) $(DESTDIR)$(UIDIR)/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/bgtaskd $(DESTDIR)$(PREFIX)/bin/bgtaskctl \
	    $(DESTDIR)$(PREFIX)/include/bgtask.h $(DESTDIR)$(PREFIX)/lib/pkgconfig/bgtask-sdk.pc
	rm -rf $(DESTDIR)$(PREFIX)/lib/bgtask $(DESTDIR)$(PREFIX)/share/bgtask $(DESTDIR)$(UIDIR)

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

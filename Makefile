# mailferry: build, test and demo on a Debian machine.
#   make demo   builds mailferry and runs a migration, backup and restore on local servers
#   make test   runs the whole test suite, real Dovecot included
SHELL := /bin/bash
PREFIX ?= /usr/local
SWIFT ?= swift
SWIFT_BUILD_FLAGS ?=
# Debian packages the build, the tests and the demo need.
APT_PACKAGES := libarchive-dev pkg-config dovecot-imapd dovecot-pop3d openssl zstd xz-utils python3 ca-certificates

.PHONY: soak
# The soak test (issue 9) at length: the corpus migrated and backed up through a
# fault-injecting proxy in front of Dovecot, over more seeds and rounds than
# `make test` runs. Override MAILFERRY_SOAK_SEEDS / _ROUNDS / _FAULT_RATE / _MESSAGES.
# Every figure and failure names its seed; rerun one with MAILFERRY_SOAK_SEEDS=N.
SOAK_SEEDS ?= 1,2,$(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
SOAK_ROUNDS ?= 20
SOAK_FAULT_RATE ?= 0.9
soak: deps
	$(SWIFT) build --build-tests $(SWIFT_BUILD_FLAGS)
	MAILFERRY_SOAK_SEEDS=$${MAILFERRY_SOAK_SEEDS:-$(SOAK_SEEDS)} MAILFERRY_SOAK_ROUNDS=$${MAILFERRY_SOAK_ROUNDS:-$(SOAK_ROUNDS)} \
	MAILFERRY_SOAK_FAULT_RATE=$${MAILFERRY_SOAK_FAULT_RATE:-$(SOAK_FAULT_RATE)} \
	  $(SWIFT) test --skip-build --no-parallel $(SWIFT_BUILD_FLAGS) --filter SoakTests

.PHONY: all deps build release test demo bench bench-deps bench-run bench-test install uninstall clean fuzz fuzz-imap fuzz-pop3 man completions

all: build

deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	echo "make deps: installing$$missing"; \
	if [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
	  echo "make deps: these Debian packages are missing:$$missing" >&2; \
	  echo "make deps: run as root, or:  sudo apt-get install$$missing" >&2; \
	  exit 1; \
	fi

build: deps
	$(SWIFT) build $(SWIFT_BUILD_FLAGS)

release: deps
	$(SWIFT) build -c release $(SWIFT_BUILD_FLAGS)

# Tests run one at a time: on a 2-core machine Swift's cooperative pool has two
# threads, and suites that block them (subprocesses, file I/O, a 50 MB stream)
# starve the deadline-driven fake-server tests when everything runs at once.
# TEST_FLAGS='--filter X' picks a subset.
TEST_FLAGS ?=
test: deps
	$(SWIFT) build --build-tests $(SWIFT_BUILD_FLAGS)
	$(SWIFT) test --skip-build --no-parallel $(SWIFT_BUILD_FLAGS) $(TEST_FLAGS)

demo: release
	@bash scripts/demo.sh

# make bench: mailferry beside mbsync, mpop and `doveadm backup` on every path (issue 8).
#   BENCH_MESSAGES=500 make bench    quick;   BENCH_RTT_MS=20 make bench    with 20 ms RTT
# bench-run measures whatever release build is there, without building.
BENCH_APT_PACKAGES := isync mpop time

# When make started (before the release build): the bench fits its rounds into 15 minutes overall.
BENCH_STARTED := $(shell date +%s)

bench: release bench-deps
	@BENCH_STARTED="$${BENCH_STARTED:-$(BENCH_STARTED)}" BENCH_BIN_DIR="$$($(SWIFT) build -c release --show-bin-path $(SWIFT_BUILD_FLAGS))" bash scripts/bench.sh

bench-run:
	@BENCH_BIN_DIR="$$($(SWIFT) build -c release --show-bin-path $(SWIFT_BUILD_FLAGS))" bash scripts/bench.sh

# The harness's own self-tests (corpus, delaying proxy, counters); no build needed.
bench-test:
	python3 -m unittest discover -s scripts/bench -p 'test_*.py'

# The peers (mbsync from isync, mpop) and GNU time. Without root or sudo, the bench
# still runs and says which peers it skipped.
bench-deps:
	@missing=""; \
	for p in $(BENCH_APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	echo "make bench-deps: installing$$missing"; \
	if [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing || echo "make bench-deps: could not install$$missing; those peers are skipped" >&2; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing || echo "make bench-deps: could not install$$missing; those peers are skipped" >&2; \
	else \
	  echo "make bench-deps: not root and no sudo; missing$$missing (those peers are skipped)" >&2; \
	fi

install: release man completions
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 "$$($(SWIFT) build -c release --show-bin-path)/mailferry" $(DESTDIR)$(PREFIX)/bin/mailferry
	install -d $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0644 $(GENERATED)/man/man1/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	install -m 0644 $(GENERATED)/completions/mailferry.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/mailferry
	install -m 0644 $(GENERATED)/completions/_mailferry $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_mailferry
	install -m 0644 $(GENERATED)/completions/mailferry.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/mailferry.fish

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/mailferry
	rm -f $(DESTDIR)$(PREFIX)/share/man/man1/mailferry.1 $(DESTDIR)$(PREFIX)/share/man/man1/mailferry.*.1
	rm -f $(DESTDIR)$(PREFIX)/share/bash-completion/completions/mailferry $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_mailferry $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/mailferry.fish

# Man pages (one per command) and shell completions, generated from the argument
# parser into .build/share: `make man`, `make completions`; `make install` installs them.
GENERATED := .build/share

man: release
	$(SWIFT) package --allow-writing-to-package-directory generate-manual --multi-page --configuration release $(SWIFT_BUILD_FLAGS)
	rm -rf $(GENERATED)/man/man1 && install -d $(GENERATED)/man/man1
	cp .build/plugins/GenerateManual/outputs/mailferry/*.1 $(GENERATED)/man/man1/
	rm -f $(GENERATED)/man/man1/mailferry.help.1
	@echo "man pages in $(GENERATED)/man/man1 (try: man -l $(GENERATED)/man/man1/mailferry.migrate.1)"

completions: release
	install -d $(GENERATED)/completions
	bin="$$($(SWIFT) build -c release --show-bin-path)/mailferry"; \
	"$$bin" --generate-completion-script bash > $(GENERATED)/completions/mailferry.bash && \
	"$$bin" --generate-completion-script zsh > $(GENERATED)/completions/_mailferry && \
	"$$bin" --generate-completion-script fish > $(GENERATED)/completions/mailferry.fish
	@echo "completions in $(GENERATED)/completions"

clean:
	rm -rf .build

# libFuzzer run over the POP3 reply parser (POP3Core sources + Fuzz/POP3),
# linked against the debug build of NIOCore. FUZZ_SECONDS bounds the run.
FUZZ_SECONDS ?= 60
FUZZ_POP3_BIN := .build/fuzz/pop3-fuzz
FUZZ_NIO_MODULES := NIOCore _NIODataStructures NIOConcurrencyHelpers _NIOBase64 Atomics DequeModule \
	InternalCollectionsUtilities ContainersPreview CNIOLinux CNIOAtomics CNIODarwin CNIOWindows _AtomicsShims
fuzz-pop3:
	$(SWIFT) build --target POP3Core $(SWIFT_BUILD_FLAGS)
	@mkdir -p .build/fuzz/pop3-corpus
	@B="$$($(SWIFT) build --show-bin-path)"; \
	mapfile -d '' objs < <(for m in $(FUZZ_NIO_MODULES); do [ -d "$$B/$$m.build" ] && find "$$B/$$m.build" -name '*.o' -print0; done); \
	maps=(); for m in "$$B"/C*.build/module.modulemap .build/checkouts/swift-atomics/Sources/_AtomicsShims/include/module.modulemap; do maps+=(-Xcc "-fmodule-map-file=$$m"); done; \
	swiftc -sanitize=fuzzer,address -parse-as-library -swift-version 6 -module-name POP3Core \
	  Sources/POP3Core/*.swift Fuzz/POP3/FuzzPOP3.swift -I "$$B/Modules" "$${maps[@]}" "$${objs[@]}" \
	  -o $(FUZZ_POP3_BIN)
	$(FUZZ_POP3_BIN) -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -timeout=10 .build/fuzz/pop3-corpus Fuzz/POP3/seeds

# Sanitizer runs (issue 9). Each keeps its own scratch path so the normal
# .build stays warm; a cold build takes ~15 minutes of CPU.
#   make test-asan     AddressSanitizer over the whole suite
#   make test-tsan     ThreadSanitizer over the whole suite
#   SANITIZER_TEST_FLAGS='--filter IMAPCoreTests' make test-asan   a subset
# Under a sanitizer, shadow memory and quarantine multiply RSS: the flat-memory
# tests (200 MB archive, 50 MB POP3/IMAP) still move and compare every byte but
# do not check their RSS bounds (MAILFERRY_SANITIZER, see MemoryBounds).
SANITIZER_TEST_FLAGS ?= --no-parallel
.PHONY: test-asan test-tsan
test-asan: deps
	$(SWIFT) build --build-tests --scratch-path .build-asan -Xswiftc -sanitize=address $(SWIFT_BUILD_FLAGS)
	MAILFERRY_SANITIZER=address ASAN_OPTIONS=detect_leaks=0:$${ASAN_OPTIONS:-} $(SWIFT) test --skip-build --scratch-path .build-asan -Xswiftc -sanitize=address $(SWIFT_BUILD_FLAGS) $(SANITIZER_TEST_FLAGS)

test-tsan: deps
	$(SWIFT) build --build-tests --scratch-path .build-tsan -Xswiftc -sanitize=thread $(SWIFT_BUILD_FLAGS)
	MAILFERRY_SANITIZER=thread TSAN_OPTIONS=halt_on_error=1:suppressions=$(CURDIR)/scripts/tsan.supp:$${TSAN_OPTIONS:-} $(SWIFT) test --skip-build --scratch-path .build-tsan -Xswiftc -sanitize=thread $(SWIFT_BUILD_FLAGS) $(SANITIZER_TEST_FLAGS)

# libFuzzer runs (issue 9): scripts/fuzz.sh builds each entry point in Fuzz/<Target>/
# with the sources under test and runs it for FUZZ_SECONDS over its committed seeds.
# A crash stops `make fuzz` with the input saved under fuzz-artifacts/<target>/.
.PHONY: fuzz-header fuzz-mbox fuzz-archive
fuzz: fuzz-pop3 fuzz-imap fuzz-header fuzz-mbox fuzz-archive

fuzz-imap:
	$(SWIFT) build --target IMAPCore $(SWIFT_BUILD_FLAGS)
	FUZZ_SECONDS=$(FUZZ_SECONDS) SWIFT=$(SWIFT) bash scripts/fuzz.sh imap

fuzz-header:
	$(SWIFT) build --target MailModel $(SWIFT_BUILD_FLAGS)
	FUZZ_SECONDS=$(FUZZ_SECONDS) SWIFT=$(SWIFT) bash scripts/fuzz.sh header

fuzz-mbox:
	$(SWIFT) build --target MailStore $(SWIFT_BUILD_FLAGS)
	FUZZ_SECONDS=$(FUZZ_SECONDS) SWIFT=$(SWIFT) bash scripts/fuzz.sh mbox

fuzz-archive:
	$(SWIFT) build --target ArchiveStore $(SWIFT_BUILD_FLAGS)
	FUZZ_SECONDS=$(FUZZ_SECONDS) SWIFT=$(SWIFT) bash scripts/fuzz.sh archive

# mailferry: build, test and demo on a Debian machine.
#   make demo   builds mailferry and runs a migration, backup and restore on local servers
#   make test   runs the whole test suite, real Dovecot included
SHELL := /bin/bash
PREFIX ?= /usr/local
SWIFT ?= swift
SWIFT_BUILD_FLAGS ?=
# Debian packages the build, the tests and the demo need.
APT_PACKAGES := libarchive-dev pkg-config dovecot-imapd dovecot-pop3d openssl zstd xz-utils python3 ca-certificates

.PHONY: all deps build release test demo bench install uninstall clean fuzz fuzz-imap fuzz-pop3 man completions

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

test: deps
	$(SWIFT) build --build-tests $(SWIFT_BUILD_FLAGS)
	$(SWIFT) test --skip-build $(SWIFT_BUILD_FLAGS)

demo: release
	@bash scripts/demo.sh

bench: release
	@bash scripts/bench.sh

install: release
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 "$$($(SWIFT) build -c release --show-bin-path)/mailferry" $(DESTDIR)$(PREFIX)/bin/mailferry

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/mailferry

clean:
	rm -rf .build

# libFuzzer for the IMAP response parser: IMAPCore is compiled with coverage
# and ASan; its dependencies come from the debug build. Runs FUZZ_SECONDS.
FUZZ_SECONDS ?= 60
FUZZ_BUILD := .build/fuzz
FUZZ_DEPS := MailModel Crypto CryptoBoringWrapper CCryptoBoringSSL CCryptoBoringSSLShims NIOCore _NIODataStructures _NIOBase64 CNIOLinux CNIODarwin CNIOWindows CNIOWASI CNIOAtomics Atomics _AtomicsShims NIOConcurrencyHelpers DequeModule InternalCollectionsUtilities ContainersPreview BasicContainers
fuzz-imap:
	$(SWIFT) build --target IMAPCore $(SWIFT_BUILD_FLAGS)
	@mkdir -p $(FUZZ_BUILD)/corpus-imap
	@bin="$$($(SWIFT) build --show-bin-path)"; \
	objs=(); maps=(); \
	for d in $(FUZZ_DEPS); do \
	  if [ -d "$$bin/$$d.build" ]; then while IFS= read -r -d '' o; do objs+=("$$o"); done < <(find "$$bin/$$d.build" -name '*.o' -print0); fi; \
	  [ -f "$$bin/$$d.build/module.modulemap" ] && maps+=(-Xcc "-fmodule-map-file=$$bin/$$d.build/module.modulemap"); \
	done; \
	for inc in $$(find .build/checkouts/swift-nio/Sources .build/checkouts/swift-atomics/Sources .build/checkouts/swift-crypto/Sources -type d -name include 2>/dev/null); do maps+=(-Xcc "-I$$inc"); done; \
	swiftc -sanitize=fuzzer,address -parse-as-library -Onone -g -module-name FuzzIMAP \
	  -I "$$bin/Modules" "$${maps[@]}" Sources/IMAPCore/*.swift fuzz/FuzzIMAP.swift "$${objs[@]}" -lstdc++ \
	  -o $(FUZZ_BUILD)/fuzz-imap
	$(FUZZ_BUILD)/fuzz-imap -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 $(FUZZ_BUILD)/corpus-imap

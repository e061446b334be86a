#!/usr/bin/env bash
# scripts/fuzz.sh TARGET [SECONDS]: builds and runs one libFuzzer target (issue 9).
#
# The sources under test are compiled again, with -sanitize=fuzzer,address, into
# one module together with the entry point in Fuzz/<Target>/, so internal types
# are visible and coverage guides the fuzzer. Their dependencies (NIOCore,
# MailModel, Crypto...) are linked from the ordinary debug build, so run
# `swift build --target <Module>` first (the Makefile does).
#
# Seeds live in Fuzz/<Target>/seeds (committed); the working corpus grows in
# .build/fuzz/<target>-corpus and crashing inputs land in fuzz-artifacts/<target>/.
# Exits non-zero on a crash.
set -euo pipefail
target="${1:?usage: fuzz.sh imap|header|mbox|archive [seconds]}"
seconds="${2:-${FUZZ_SECONDS:-60}}"
SWIFT="${SWIFT:-swift}"
B="$($SWIFT build --show-bin-path)"

NIO_MODULES="NIOCore _NIODataStructures NIOConcurrencyHelpers _NIOBase64 Atomics DequeModule InternalCollectionsUtilities ContainersPreview CNIOLinux CNIOAtomics CNIODarwin CNIOWindows _AtomicsShims"
CRYPTO_MODULES="Crypto CCryptoBoringSSL CCryptoBoringSSLShims CryptoBoringWrapper SwiftASN1"
libs=()
case "$target" in
  imap)
    module=IMAPCore; dir=Fuzz/IMAP
    sources=(Sources/IMAPCore/*.swift)
    deps="MailModel $NIO_MODULES $CRYPTO_MODULES"; max_len=16384 ;;
  header)
    module=MailModel; dir=Fuzz/HeaderReader
    sources=(Sources/MailModel/*.swift)
    deps="$CRYPTO_MODULES"; max_len=8192 ;;
  mbox)
    module=MailStore; dir=Fuzz/Mbox
    sources=(Sources/MailStore/MboxFormat.swift Sources/MailStore/LocalFiles.swift Sources/MailStore/MaildirStore.swift
             Sources/MailStore/MailStoreProtocol.swift Sources/MailStore/MessageBody.swift Sources/MailStore/FolderNameEscaping.swift
             Sources/MailStore/MboxStore.swift)
    deps="MailModel $NIO_MODULES $CRYPTO_MODULES"; max_len=16384 ;;
  archive)
    module=ArchiveStore; dir=Fuzz/Archive
    sources=(Sources/ArchiveStore/TarVolume.swift)
    deps="MailModel $NIO_MODULES $CRYPTO_MODULES"; max_len=16384; libs=(-larchive) ;;
  *) echo "fuzz.sh: unknown target $target" >&2; exit 2 ;;
esac

mkdir -p .build/fuzz/"$target"-corpus fuzz-artifacts/"$target"
bin=.build/fuzz/"$target"-fuzz
objs=()
for m in $deps; do
  [ -d "$B/$m.build" ] || { echo "fuzz.sh: $B/$m.build missing; build the debug module first" >&2; exit 2; }
  while IFS= read -r -d '' o; do objs+=("$o"); done < <(find "$B/$m.build" -name '*.o' -print0)
done
maps=()
for m in "$B"/C*.build/module.modulemap .build/checkouts/swift-atomics/Sources/_AtomicsShims/include/module.modulemap Sources/CArchive/module.modulemap; do
  [ -f "$m" ] && maps+=(-Xcc "-fmodule-map-file=$m")
done
for inc in .build/checkouts/swift-crypto/Sources/CCryptoBoringSSL/include .build/checkouts/swift-crypto/Sources/CCryptoBoringSSLShims/include; do
  [ -d "$inc" ] && maps+=(-Xcc "-I$inc")
done
if [ ! -x "$bin" ] || [ -n "$(find "${sources[@]}" "$dir"/*.swift scripts/fuzz.sh -newer "$bin" 2>/dev/null | head -1)" ]; then
  echo "fuzz.sh: building $bin"
  swiftc -sanitize=fuzzer,address -parse-as-library -swift-version 6 -module-name "$module" \
    "${sources[@]}" "$dir"/*.swift -I "$B/Modules" "${maps[@]}" "${objs[@]}" "${libs[@]}" -lstdc++ \
    -o "$bin"
fi
echo "fuzz.sh: running $target for ${seconds}s"
# The Swift backtracer and ASan fight over a crashing process; ASan reports better.
export SWIFT_BACKTRACE=enable=no
"$bin" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
  -artifact_prefix=fuzz-artifacts/"$target"/ .build/fuzz/"$target"-corpus "$dir"/seeds

#!/usr/bin/env bash
# make bench: measure mailferry beside mbsync, mpop and Dovecot's own `doveadm backup`
# on every path, against one Dovecot on loopback. See scripts/bench/bench.py for the knobs:
#   BENCH_MESSAGES=500 make bench        quick run
#   BENCH_RTT_MS=20 make bench           through a delaying proxy at 0 and 20 ms RTT
# The table goes to stdout, progress to stderr, the JSON to bench-results/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"
PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "make bench: python3 is needed (apt-get install python3)" >&2
  exit 2
fi
for tool in dovecot doveadm openssl; do
  if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
    echo "make bench: $tool is missing; run \`make deps\`" >&2
    exit 2
  fi
done
# The Makefile passes the release bin dir; by hand, find it without building.
if [ -z "${BENCH_BIN_DIR:-}" ] && [ -z "${BENCH_MAILFERRY:-}" ] && command -v "${SWIFT:-swift}" >/dev/null 2>&1; then
  BENCH_BIN_DIR="$("${SWIFT:-swift}" build -c release --show-bin-path 2>/dev/null || true)"
  export BENCH_BIN_DIR
fi
exec "$PYTHON" "$here/bench/bench.py" "$@"

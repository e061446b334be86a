#!/usr/bin/env bash
# make demo: the first thing a new user runs.
#
# Starts a private Dovecot (IMAP and POP3, with its own test CA) in a temporary
# folder, fills a POP3 account with sample mail, and then, with the real
# mailferry binary:
#   1. migrates the POP3 account into an IMAP account,
#   2. backs the IMAP account up into a compressed archive,
#   3. restores the archive into a second IMAP account,
#   4. verifies that every message arrived, byte for byte,
# printing each mailferry command exactly as it ran. Passwords travel in
# MAILFERRY_FROM_PASSWORD / MAILFERRY_TO_PASSWORD, never on a command line.
# Everything it starts is stopped, and its folder removed, when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

SWIFT="${SWIFT:-swift}"
# `make demo` builds the release configuration first; MAILFERRY_DEMO_CONFIGURATION=debug reuses a debug build.
BIN="$($SWIFT build -c "${MAILFERRY_DEMO_CONFIGURATION:-release}" --show-bin-path)"
for tool in mailferry mailferry-fixture; do
  if [ ! -x "$BIN/$tool" ]; then
    echo "demo: $BIN/$tool is missing; run 'make demo' (it builds it first)" >&2
    exit 1
  fi
done
export PATH="$BIN:$PATH"

bold=""; dim=""; reset=""
if [ -t 1 ]; then bold=$'\e[1m'; dim=$'\e[2m'; reset=$'\e[0m'; fi

# Dovecot's sockets need a short path, so not $TMPDIR/long-names.
WORK="$(mktemp -d /tmp/mfdemo.XXXXXX)"
chmod 755 "$WORK"   # Dovecot's mail processes (not root) must reach the fixture inside it
FIXTURE="$WORK/dovecot"
cleanup() {
  status=$?
  mailferry-fixture stop --dir "$FIXTURE" --remove >/dev/null 2>&1 || true
  rm -rf "$WORK"
  if [ "$status" -ne 0 ]; then echo "demo: failed (exit $status); nothing is left running" >&2; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n%s== %s ==%s\n' "$bold" "$1" "$reset"; }
# Prints a command exactly as it runs, then runs it.
run() {
  printf '%s$ %s%s\n' "$bold" "$*" "$reset"
  "$@"
}

step "Starting a private Dovecot (IMAP + POP3, TLS with a test CA) in $WORK"
eval "$(mailferry-fixture start --dir "$FIXTURE")"
HOST="$MAILFERRY_HOST"
CA="$MAILFERRY_CA_FILE"
echo "IMAP on $HOST:$MAILFERRY_IMAPS_PORT (imaps), POP3 on $HOST:$MAILFERRY_POP3S_PORT (pop3s)"

step "Filling the POP3 account 'alice' with sample mail"
SAMPLES="$WORK/samples"
mkdir -p "$SAMPLES"
subjects=("Welcome to the new mail server" "Minutes of Tuesday's meeting" "Re: invoice 2026-114"
          "Holiday photos" "Your order has shipped" "Fwd: quarterly report" "Lunch on Friday?"
          "Password reset (not really)" "Re: Re: project timeline" "Newsletter: November")
for i in "${!subjects[@]}"; do
  n=$((i + 1))
  printf 'Received: from mx.example.net by pop.example.com; %s\r\nFrom: Sender %d <sender%d@example.net>\r\nTo: alice@example.com\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <demo-%d@example.net>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello Alice,\r\n\r\nThis is sample message %d of the mailferry demo. Ünïcödé survives too.\r\n\r\n-- \r\nSender %d\r\n' \
    "Mon, $n Jun 2025 09:0$((n % 10)):00 +0000" "$n" "$n" "${subjects[$i]}" "Mon, $n Jun 2025 09:00:00 +0000" "$n" "$n" "$n" \
    > "$SAMPLES/$(printf '%02d' "$n").eml"
done
# Real-world oddities too, when the shared corpus is beside the clone.
CORPUS="${MAILFERRY_CORPUS:-../shared/mail-corpus}"
if [ -d "$CORPUS/messages" ]; then
  n=0
  for f in "$CORPUS"/messages/*; do
    cp "$f" "$SAMPLES/corpus-$(basename "$f")"
    n=$((n + 1)); [ "$n" -ge 30 ] && break
  done
fi
mailferry-fixture seed --dir "$FIXTURE" --user alice "$SAMPLES"/*.eml

# The passwords go in the environment, never on the command line or in a URL.
export MAILFERRY_FROM_PASSWORD="$MAILFERRY_PASSWORD"
export MAILFERRY_TO_PASSWORD="$MAILFERRY_PASSWORD"
echo "${dim}(passwords: exported as MAILFERRY_FROM_PASSWORD and MAILFERRY_TO_PASSWORD)${reset}"

POP="pop3s://alice@$HOST:$MAILFERRY_POP3S_PORT"
# Three different mailboxes: Dovecot serves one mailbox per user over both
# protocols, so the IMAP accounts have their own names.
IMAP_ALICE="imaps://alice.new@$HOST:$MAILFERRY_IMAPS_PORT"
IMAP_BOB="imaps://bob@$HOST:$MAILFERRY_IMAPS_PORT"
ARCHIVE="archive:$WORK/backup"
STATE="$WORK/state"

step "1. What is in the POP3 account"
run mailferry folders "$POP" --ca-file "$CA"

step "2. Migrate the POP3 account into the IMAP account 'alice.new' (copy, then verify)"
run mailferry migrate --from "$POP" --to "$IMAP_ALICE" --into INBOX --ca-file "$CA" \
    --state "$STATE/migrate.sqlite" --report "$WORK/migrate.json" --verbose

step "   ... and again: a re-run copies nothing twice"
run mailferry migrate --from "$POP" --to "$IMAP_ALICE" --into INBOX --ca-file "$CA" \
    --state "$STATE/migrate.sqlite" --verbose

step "3. Back the IMAP account up into a compressed archive"
run mailferry backup --from "$IMAP_ALICE" --to "$ARCHIVE" --ca-file "$CA" --state "$STATE/backup.sqlite" --verbose
run mailferry archive list "$ARCHIVE"
run mailferry archive check "$ARCHIVE"
echo "${dim}The volumes are ordinary tar files:${reset}"
volumes=("$WORK"/backup/volumes/*.tar.zst)
run tar --zstd -tvf "${volumes[0]}" > "$WORK/volume-listing.txt"
head -5 "$WORK/volume-listing.txt"; echo "   ($(wc -l < "$WORK/volume-listing.txt" | tr -d ' ') entries)"

step "4. Restore the archive into a second account, 'bob'"
run mailferry restore --from "$ARCHIVE" --to "$IMAP_BOB" --ca-file "$CA" --state "$STATE/restore.sqlite" --verbose

step "5. Verify: every message of the POP3 account is in bob's mailbox"
run mailferry verify --from "$POP" --to "$IMAP_BOB" --into INBOX --ca-file "$CA" --verbose
run mailferry folders "$IMAP_BOB" --ca-file "$CA" --from-password-env MAILFERRY_TO_PASSWORD

step "What happened"
copied="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sum(f["copied"] for f in r["folders"]))' "$WORK/migrate.json")"
echo "  $(ls "$SAMPLES" | wc -l | tr -d ' ') messages went POP3 -> IMAP ($copied copied, each checked by SHA-256),"
echo "  into a zstd tar archive, and back into a second account; 'verify' found every one."
echo "  Exit codes for scripts: 0 done, 1 some messages failed, 2 usage, 3 auth, 4 connection/TLS, 5 disk/lock, 6 corrupt."
echo "  Next: README.md (store URLs, config files for cron/systemd), 'mailferry --help'."
echo "  Stopping Dovecot and removing $WORK."

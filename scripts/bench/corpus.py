#!/usr/bin/env python3
"""Deterministic benchmark corpus for `make bench`.

    python3 scripts/bench/corpus.py --messages 5000 --seed 20261122 --out DIR

writes DIR/manifest.json and DIR/msgs/NNNNNN.eml (LF line endings, as Maildir stores them).
The same (messages, seed, CORPUS_VERSION) always gives byte-identical files, so runs on
different machines and days measure the same mail.

Size mix (per message, as stored): about 93% plain or multipart/alternative text mail of
2-20 KB (log-uniform), about 7% with one base64 attachment, the message being 100 KB-2 MB
(log-uniform). 5,000 messages come to about 260 MB. Folders: 12 (INBOX weighted most).
Flags: most \\Seen, some \\Answered / \\Flagged. INTERNALDATE is the Date: header time,
spread over two years.
"""
import argparse
import base64
import hashlib
import json
import math
import os
import random
import sys
import time

CORPUS_VERSION = 1

FOLDERS = [
    ("INBOX", 30), ("Archive", 16), ("Sent", 10), ("Lists/dovecot", 8), ("Lists/swift-dev", 8),
    ("Projects/alpha", 6), ("Projects/beta", 5), ("Receipts", 5), ("Travel", 4), ("Junk", 4),
    ("Trash", 3), ("Drafts", 1),
]

WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but "
    "have an they you were her she there been one all we their has would when if so no will what can "
    "mail server message folder migration backup restore account password report invoice meeting "
    "project release schedule budget review draft attached please thanks regards tomorrow monday "
    "friday week month quarter customer order shipping delivery payment receipt travel booking hotel "
    "flight train ticket agenda minutes notes update status question answer issue patch commit "
    "build test benchmark latency throughput pipeline connection protocol mailbox archive volume "
    "catalog checksum hash index cache sync state journal error retry timeout network storage disk"
).split()
NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
         "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "zoe"]
DOMAINS = ["example.com", "example.net", "example.org", "mail.example.de", "lists.example.io"]
ATTACH = [("application/pdf", "pdf"), ("image/jpeg", "jpg"), ("image/png", "png"),
          ("application/zip", "zip"), ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx")]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
EPOCH0 = 1700000000  # 2023-11-14; dates spread over the two years after it


def rfc5322_date(t, tz_minutes):
    lt = time.gmtime(t + tz_minutes * 60)
    sign = "+" if tz_minutes >= 0 else "-"
    tz = abs(tz_minutes)
    return "%s, %d %s %d %02d:%02d:%02d %s%02d%02d" % (
        DAYS[lt.tm_wday], lt.tm_mday, MONTHS[lt.tm_mon - 1], lt.tm_year,
        lt.tm_hour, lt.tm_min, lt.tm_sec, sign, tz // 60, tz % 60)


def paragraph(rng, approx):
    words = rng.choices(WORDS, k=max(8, approx // 6))
    lines, line = [], []
    n = 0
    for w in words:
        if n + len(w) + 1 > 72:
            lines.append(" ".join(line))
            line, n = [], 0
        line.append(w)
        n += len(w) + 1
    if line:
        lines.append(" ".join(line))
    text = "\n".join(lines)
    return text[0].upper() + text[1:] + "."


def text_body(rng, approx):
    parts, size = [], 0
    while size < approx:
        p = paragraph(rng, min(900, max(120, approx - size)))
        parts.append(p)
        size += len(p) + 2
    return "\n\n".join(parts) + "\n"


def log_uniform(rng, lo, hi):
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def make_message(rng, index):
    sender = rng.choice(NAMES)
    sdom = rng.choice(DOMAINS)
    rcpt = rng.choice(NAMES)
    t = EPOCH0 + rng.randrange(0, 2 * 365 * 86400)
    tz = rng.choice([0, 60, 120, -300, -420, 330])
    subject = " ".join(rng.choices(WORDS, k=rng.randint(3, 9))).capitalize()
    msgid = "<%d.%s.%08x@%s>" % (t, sender, rng.getrandbits(32), sdom)
    attach = rng.random() < 0.07
    target = log_uniform(rng, 100_000, 2_000_000) if attach else log_uniform(rng, 2_000, 20_000)
    hdr = [
        "Return-Path: <%s@%s>" % (sender, sdom),
        "Received: from mx%d.%s (mx%d.%s [192.0.2.%d])\n\tby mail.example.com (Postfix) with ESMTPS id %08X\n\tfor <%s@example.com>; %s"
        % (rng.randint(1, 9), sdom, rng.randint(1, 9), sdom, rng.randint(1, 254), rng.getrandbits(32), rcpt, rfc5322_date(t + 2, 0)),
        "Received: from [10.0.%d.%d] by smtp.%s with ESMTPSA; %s"
        % (rng.randint(0, 255), rng.randint(1, 254), sdom, rfc5322_date(t, tz)),
        "Date: %s" % rfc5322_date(t, tz),
        "From: %s <%s@%s>" % (sender.capitalize(), sender, sdom),
        "To: %s <%s@example.com>" % (rcpt.capitalize(), rcpt),
        "Subject: %s" % subject,
        "Message-ID: %s" % msgid,
        "MIME-Version: 1.0",
    ]
    if rng.random() < 0.3:
        hdr.insert(6, "Cc: %s@%s" % (rng.choice(NAMES), rng.choice(DOMAINS)))
    boundary = "=_b%016x" % rng.getrandbits(64)
    if attach:
        text = text_body(rng, rng.randint(300, 3000))
        ctype, ext = rng.choice(ATTACH)
        raw_len = max(1000, int((target - len(text) - 1500) * 3 / 4))
        blob = base64.encodebytes(rng.randbytes(raw_len)).decode("ascii")
        hdr.append('Content-Type: multipart/mixed; boundary="%s"' % boundary)
        body = ("This is a multi-part message in MIME format.\n\n--%s\n"
                "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n%s\n"
                "--%s\nContent-Type: %s; name=\"file%05d.%s\"\nContent-Transfer-Encoding: base64\n"
                "Content-Disposition: attachment; filename=\"file%05d.%s\"\n\n%s\n--%s--\n"
                % (boundary, text, boundary, ctype, index, ext, index, ext, blob, boundary))
    elif rng.random() < 0.35:
        text = text_body(rng, max(500, (target - 900) // 2))
        html = "<html><body>\n<p>" + text.replace("\n\n", "</p>\n<p>") + "</p>\n</body></html>\n"
        hdr.append('Content-Type: multipart/alternative; boundary="%s"' % boundary)
        body = ("--%s\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n%s\n"
                "--%s\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n%s\n--%s--\n"
                % (boundary, text, boundary, html, boundary))
    else:
        hdr.append("Content-Type: text/plain; charset=utf-8")
        hdr.append("Content-Transfer-Encoding: 8bit")
        body = text_body(rng, max(200, target - 800))
    data = ("\n".join(hdr) + "\n\n" + body).encode("utf-8")
    r = rng.random()
    flags = "S" if r < 0.55 else ("RS" if r < 0.70 else ("FS" if r < 0.78 else ""))
    return data, t, flags


def pick_folder(rng):
    total = sum(w for _, w in FOLDERS)
    x = rng.uniform(0, total)
    for name, w in FOLDERS:
        x -= w
        if x <= 0:
            return name
    return FOLDERS[-1][0]


def generate(out, messages, seed):
    """Writes the corpus into `out` unless an identical one is there already; returns the manifest."""
    manifest_path = os.path.join(out, "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            m = json.load(f)
        if m.get("version") == CORPUS_VERSION and m.get("messages") == messages and m.get("seed") == seed:
            return m
    os.makedirs(os.path.join(out, "msgs"), exist_ok=True)
    rng = random.Random(seed)
    entries = []
    digest = hashlib.sha256()
    for i in range(messages):
        data, t, flags = make_message(rng, i)
        folder = pick_folder(rng)
        name = "%06d.eml" % i
        path = os.path.join(out, "msgs", name)
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (t, t))
        digest.update(data)
        entries.append({"file": name, "folder": folder, "size": len(data),
                        "wire_size": len(data) + data.count(b"\n"), "date": t, "flags": flags})
    m = {
        "version": CORPUS_VERSION, "messages": messages, "seed": seed,
        "bytes": sum(e["size"] for e in entries), "wire_bytes": sum(e["wire_size"] for e in entries),
        "folders": sorted({e["folder"] for e in entries}), "sha256": digest.hexdigest(), "entries": entries,
    }
    with open(manifest_path + ".tmp", "w") as f:
        json.dump(m, f)
    os.replace(manifest_path + ".tmp", manifest_path)
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    m = generate(a.out, a.messages, a.seed)
    sizes = sorted(e["size"] for e in m["entries"])
    big = sum(1 for s in sizes if s >= 100_000)
    print("corpus: %d messages, %.1f MB (%.1f MB on the wire), %d with attachments >= 100 KB, "
          "median %.1f KB, largest %.0f KB, %d folders, sha256 %s" % (
              m["messages"], m["bytes"] / 1e6, m["wire_bytes"] / 1e6, big, sizes[len(sizes) // 2] / 1e3,
              sizes[-1] / 1e3, len(m["folders"]), m["sha256"][:16]), file=sys.stderr)


if __name__ == "__main__":
    main()

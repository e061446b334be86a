#!/usr/bin/env python3
"""`make bench`: measure mailferry and its peers on every path, against one Dovecot.

Knobs (environment):
  BENCH_MESSAGES=5000   corpus size (500 for a quick run)
  BENCH_RUNS=3          runs per case; the table shows the median (and the range)
  BENCH_RTT_MS=         unset: loopback only. `20`: run everything through the delaying proxy
                        at 0 ms (the proxy's own cost) and at 20 ms. A list (`0,20,50`) picks the
                        proxy delays; `direct` in the list adds plain loopback.
  BENCH_TLS=starttls    starttls (every tool uses STARTTLS with the fixture CA) or none
  BENCH_PARALLEL=4      mailferry --parallel
  BENCH_BIG_MB=200      also move one message of this many MB IMAP -> IMAP (peak RSS target); 0: off
  BENCH_TOOLS=          comma list to run only some of: mailferry,mbsync,mpop,doveadm
  BENCH_PATHS=          comma list of path ids (pop3-imap,pop3-maildir,imap-imap,imap-maildir,
                        imap-archive,archive-imap,server-local,big-imap-imap)
  BENCH_SEED=20261122   corpus seed
  BENCH_WORK=/tmp/mailferry-bench-UID   scratch (corpus cache, Dovecot, destinations)
  BENCH_RESULTS=bench-results           where the JSON goes
  BENCH_FIXTURE=        a mailferry-fixture executable (default: BENCH_BIN_DIR/mailferry-fixture)
  BENCH_BIN_DIR=        SwiftPM bin dir holding mailferry (and mailferry-fixture); the Makefile
                        passes the release one. BENCH_MAILFERRY overrides the binary itself.
  BENCH_TIMEOUT=        seconds per run before it counts as failed (default 60 + 0.06 * messages)
  BENCH_SETTLE=1        seconds to wait after the pre-run sync
  BENCH_BUDGET=600      seconds for the whole measurement: rounds that would overrun it are
                        skipped, and the table says so (0: no limit)
  BENCH_STARTED=        epoch seconds `make bench` started (the Makefile sets it): the budget is
                        cut so that build + bench stay within BENCH_TOTAL=900 s
  BENCH_KEEP=1          keep every run's output, logs and reports in BENCH_WORK (for debugging)
"""
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import corpus  # noqa: E402
import dovecot  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
# After files are deleted, how long timed runs wait. Two effects: the disk is mounted with
# `discard` (writes slow for ~15 s), and ext4 without a journal (this machine's root) skips
# inodes freed less than 60 s ago when it allocates new ones (`recently_deleted`, 300 s more
# while the inode table block is dirty; a sync makes it clean). Each skipped inode costs a
# buffer-cache lookup: a profile of an IMAP -> IMAP run 15 s after a bench had deleted its
# files put 1.4 of Dovecot's 4.6 CPU-s in that search (find_get_block_common,
# recently_deleted, ext4_get_group_desc, find_inode_bit), charged to whichever tool writes first.
DELETE_SETTLE_S = 65.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

PATHS = [
    # id, label, source, destination
    ("pop3-imap", "POP3 -> IMAP", "pop3", "imap"),
    ("pop3-maildir", "POP3 -> Maildir", "pop3", "maildir"),
    ("imap-imap", "IMAP -> IMAP", "imap", "imap"),
    ("imap-maildir", "IMAP -> Maildir", "imap", "maildir"),
    ("imap-archive", "IMAP -> archive (zstd)", "imap", "archive"),
    ("archive-imap", "archive -> IMAP (restore)", "archive", "imap"),
    ("server-local", "server-local (doveadm backup)", "imap", "maildir"),
    ("big-imap-imap", "IMAP -> IMAP, one big message", "imap", "imap"),
]
PATH_LABEL = {p[0]: p[1] for p in PATHS}


def env_int(name, default):
    v = os.environ.get(name, "").strip()
    return int(v) if v else default


def env_float(name, default):
    v = os.environ.get(name, "").strip()
    return float(v) if v else default


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Measuring one command
# ---------------------------------------------------------------------------------------

def proc_tree_cpu(root_pid):
    """CPU seconds used so far by `root_pid` and its descendants, including reaped children."""
    if not root_pid:
        return None
    children = {}
    stats = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(")") + 2:].split()
        ppid = int(rest[1])
        utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
        stats[pid] = (utime + stime, cutime + cstime)
        children.setdefault(ppid, []).append(pid)
    if root_pid not in stats:
        return None
    total = 0
    stack = [root_pid]
    while stack:
        pid = stack.pop()
        own, reaped = stats.get(pid, (0, 0))
        total += own + reaped
        stack.extend(children.get(pid, []))
    return total / CLK_TCK


def run_measured(argv, env, out_prefix, timeout, server_pid=None, proxy_pid=None):
    """Runs argv; returns wall, user+sys CPU, peak RSS of the command (and what it waited
    for), plus the CPU the Dovecot tree and the proxy used meanwhile."""
    gnu_time = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
    tfile = out_prefix + ".time"
    full = ([gnu_time, "-f", "%e %U %S %M", "-o", tfile] if gnu_time else []) + argv
    srv0 = proc_tree_cpu(server_pid)
    prx0 = proc_tree_cpu(proxy_pid)
    la0 = os.getloadavg()[0]
    with open(out_prefix + ".stdout", "wb") as so, open(out_prefix + ".stderr", "wb") as se:
        t0 = time.monotonic()
        p = subprocess.Popen(full, env=env, stdin=subprocess.DEVNULL, stdout=so, stderr=se, start_new_session=True)
        timed_out = False
        try:
            _, status, ru = os.wait4(p.pid, 0) if timeout is None else wait_with_timeout(p, timeout)
        except TimeoutError:
            timed_out = True
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            _, status, ru = os.wait4(p.pid, 0)
        except BaseException:
            # Ctrl-C or SIGTERM: the tool runs in its own session, so stop it here.
            try:
                os.killpg(p.pid, signal.SIGKILL)
                os.wait4(p.pid, 0)
            except OSError:
                pass
            raise
        wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    time.sleep(0.2)  # let Dovecot reap its session processes before the CPU snapshot
    srv1 = proc_tree_cpu(server_pid)
    prx1 = proc_tree_cpu(proxy_pid)
    res = {"wall_s": wall, "exit": p.returncode, "timed_out": timed_out, "loadavg_1m_before": la0}
    rss_kib = None
    cpu = None
    if gnu_time and not timed_out:
        try:
            with open(tfile) as f:
                lines = [ln for ln in f.read().splitlines() if ln.strip()]
            parts = lines[-1].split()
            cpu = float(parts[1]) + float(parts[2])
            rss_kib = int(parts[3])
            res["time_method"] = "GNU time"
        except (OSError, IndexError, ValueError):
            cpu = None
    if cpu is None:
        cpu = ru.ru_utime + ru.ru_stime
        rss_kib = ru.ru_maxrss
        res["time_method"] = "wait4 rusage"
    res["cpu_s"] = cpu
    res["peak_rss_mib"] = rss_kib / 1024.0 if rss_kib is not None else None
    res["server_cpu_s"] = (srv1 - srv0) if srv0 is not None and srv1 is not None else None
    res["proxy_cpu_s"] = (prx1 - prx0) if prx0 is not None and prx1 is not None else None
    return res


def wait_with_timeout(p, timeout):
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            return pid, status, ru
        if time.monotonic() > deadline:
            raise TimeoutError()
        time.sleep(0.005)


def tail(path, n=300):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 4000))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[-n:]


def failure_line(path):
    """The most telling line of a failed run's stderr: a Swift crash's first line, else the last line."""
    try:
        with open(path, "rb") as f:
            head = f.read(8000).decode("utf-8", "replace")
    except OSError:
        return ""
    for line in head.splitlines():
        if any(k in line for k in ("Fatal error", "Precondition failed", "Assertion failed", "Program crashed")):
            return line.strip()[:300]
    return tail(path)


def exit_text(code):
    if code < 0:
        return "killed by signal %d" % -code
    if code > 128:
        return "exit %d (signal %d)" % (code, code - 128)
    return "exit %d" % code


def count_maildir(root):
    """Messages in a tree of Maildirs: files in every cur/ and new/."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        base = os.path.basename(dirpath)
        if base in ("cur", "new"):
            n += sum(1 for f in filenames if not f.startswith("."))
    return n


def archive_summary(root):
    """(volumes, bytes, messages-or-None) of an archive:PATH."""
    vols, size = 0, 0
    vdir = os.path.join(root, "volumes")
    for dirpath, _, files in os.walk(vdir):
        for f in files:
            if ".tar" in f and not f.startswith("."):
                vols += 1
                size += os.path.getsize(os.path.join(dirpath, f))
    msgs = None
    cat = os.path.join(root, "catalog.sqlite")
    if os.path.exists(cat):
        try:
            import sqlite3
            db = sqlite3.connect("file:%s?mode=ro" % cat, uri=True)
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            # ArchiveStore's catalog: one `locations` row per message in a folder.
            for t in ("locations", "messages"):
                if t in tables:
                    msgs = db.execute("SELECT count(*) FROM %s" % t).fetchone()[0]
                    break
            db.close()
        except Exception:
            msgs = None
    return vols, size, msgs


# ---------------------------------------------------------------------------------------
# The bench
# ---------------------------------------------------------------------------------------

class Bench:
    def __init__(self):
        self.messages = env_int("BENCH_MESSAGES", 5000)
        self.runs = max(1, env_int("BENCH_RUNS", 3))
        self.seed = env_int("BENCH_SEED", 20261122)
        self.tls = os.environ.get("BENCH_TLS", "starttls").strip() or "starttls"
        if self.tls not in ("starttls", "none"):
            raise SystemExit("BENCH_TLS must be starttls or none")
        self.parallel = env_int("BENCH_PARALLEL", 4)
        self.big_mb = env_int("BENCH_BIG_MB", 200)
        self.big_wire = 0
        self.work = os.environ.get("BENCH_WORK") or "/tmp/mailferry-bench-%d" % os.getuid()
        self.results_dir = os.environ.get("BENCH_RESULTS") or os.path.join(REPO, "bench-results")
        self.timeout = env_float("BENCH_TIMEOUT", 60 + 0.06 * self.messages)
        self.settle_s = env_float("BENCH_SETTLE", 1.0)
        self.budget_s = env_float("BENCH_BUDGET", 600.0)
        # `make bench` passes when it started (before the release build) so that the
        # whole target stays within BENCH_TOTAL (900 s): rounds are cut to fit.
        started = env_float("BENCH_STARTED", 0.0)
        total = env_float("BENCH_TOTAL", 900.0)
        if started > 0 and total > 0 and self.budget_s > 0:
            before = max(0.0, time.time() - started)
            fit = max(60.0, total - before - 45.0)
            if fit < self.budget_s:
                log("bench: %.0f s went to building before the bench; BENCH_BUDGET cut to %.0f s to stay within %.0f s"
                    % (before, fit, total))
                self.budget_s = fit
        self.tools_filter = set(filter(None, os.environ.get("BENCH_TOOLS", "").replace(" ", "").split(",")))
        self.paths_filter = set(filter(None, os.environ.get("BENCH_PATHS", "").replace(" ", "").split(",")))
        rtt = os.environ.get("BENCH_RTT_MS", "").strip()
        if not rtt:
            self.modes = [("direct", None)]
        else:
            items = [x.strip() for x in rtt.split(",") if x.strip()]
            modes = []
            if "direct" in items:
                modes.append(("direct", None))
            delays = sorted({float(x) for x in items if x != "direct"})
            if delays and 0.0 not in delays and len(items) == 1:
                delays = [0.0] + delays  # always show the proxy's own cost beside the delay
            for d in delays:
                modes.append(("proxy %g ms" % d, d))
            self.modes = modes
        bin_dir = os.environ.get("BENCH_BIN_DIR", "").strip()
        self.mailferry = os.environ.get("BENCH_MAILFERRY", "").strip() or (os.path.join(bin_dir, "mailferry") if bin_dir else "")
        self.fixture_bin = os.environ.get("BENCH_FIXTURE", "").strip() or (os.path.join(bin_dir, "mailferry-fixture") if bin_dir else "")
        self.runs_done = []
        self.notes = []
        self.trash = os.path.join(self.work, "trash")
        self.proxy = None
        self.proxy_ports = {}

    # --- helpers ---------------------------------------------------------------------
    def want_tool(self, tool):
        return not self.tools_filter or tool in self.tools_filter

    def want_path(self, path):
        return not self.paths_filter or path in self.paths_filter

    def move_aside(self, *paths):
        os.makedirs(self.trash, exist_ok=True)
        for p in paths:
            if p and os.path.lexists(p):
                os.rename(p, os.path.join(self.trash, "%d-%s" % (time.monotonic_ns(), os.path.basename(p))))

    def settle(self):
        """Before a timed run: flush what earlier runs wrote, and keep their files.

        The disk here is mounted with `discard`: deleting files slows writes for the next
        ~15 s (measured: 2,000 fsynced 50 KB files took 1.9 s right after deleting 250 MB,
        1.45 s 5 s later, 0.87 s 15 s later, 0.61 s with nothing deleted), and ext4 without a
        journal skips recently freed inodes (see DELETE_SETTLE_S). So earlier runs' files are
        only moved aside (a rename) and deleted when the bench ends; only when the disk runs
        short are they deleted here, followed by a sync and a DELETE_SETTLE_S wait."""
        if os.path.isdir(self.trash):
            st = os.statvfs(self.work)
            free = st.f_bavail * st.f_frsize
            if free < 4 * self.corpus["wire_bytes"] + (2 << 30):
                shutil.rmtree(self.trash, ignore_errors=True)
                os.sync()
                time.sleep(max(self.settle_s, DELETE_SETTLE_S))
                return
        os.sync()
        time.sleep(self.settle_s)

    def imap_endpoint(self):
        port = self.fx.imap_port
        if self.proxy is not None:
            port = self.proxy_ports["imap"]
        return self.fx.host, port

    def pop3_endpoint(self):
        port = self.fx.pop3_port
        if self.proxy is not None:
            port = self.proxy_ports["pop3"]
        return self.fx.host, port

    def base_env(self):
        env = dict(os.environ)
        env["HOME"] = os.path.join(self.work, "home")
        env["MAILFERRY_FROM_PASSWORD"] = self.fx.password
        env["MAILFERRY_TO_PASSWORD"] = self.fx.password
        env.pop("MAILFERRY_CORPUS", None)
        return env

    # --- setup -----------------------------------------------------------------------
    def setup(self):
        os.makedirs(self.work, exist_ok=True)
        os.makedirs(os.path.join(self.work, "home"), exist_ok=True)
        # Whatever an earlier (killed) bench left behind; deleting it slows the disk for a while.
        deleted = False
        for name in ("dovecot", "runs", "trash"):
            p = os.path.join(self.work, name)
            if os.path.isdir(os.path.join(p, "run")):
                dovecot.Fixture._kill_master(p)
            if os.path.exists(p):
                shutil.rmtree(p, ignore_errors=True)
                deleted = True
        self.initial_wait = DELETE_SETTLE_S if deleted else 0.0
        try:
            with open(os.path.join(self.work, "last-delete")) as f:
                since = time.time() - float(f.read().strip())
            self.initial_wait = max(self.initial_wait, DELETE_SETTLE_S - since)
        except (OSError, ValueError):
            pass
        shutil.rmtree(os.path.join(self.work, "dovecot.out"), ignore_errors=True)
        t = time.monotonic()
        cdir = os.path.join(self.work, "corpus-v%d-%d-%d" % (corpus.CORPUS_VERSION, self.messages, self.seed))
        for old in os.listdir(self.work):
            if old.startswith("corpus-") and os.path.join(self.work, old) != cdir:
                shutil.rmtree(os.path.join(self.work, old), ignore_errors=True)
        self.corpus = corpus.generate(cdir, self.messages, self.seed)
        self.msgdir = os.path.join(cdir, "msgs")
        log("bench: corpus of %d messages, %.1f MB, %d folders (seed %d) ready in %.1f s" % (
            self.messages, self.corpus["bytes"] / 1e6, len(self.corpus["folders"]), self.seed, time.monotonic() - t))
        t = time.monotonic()
        self.fx = dovecot.Fixture.start(os.path.join(self.work, "dovecot"), self.fixture_bin, log=log)
        log("bench: Dovecot (%s) on 127.0.0.1 IMAP %d, POP3 %d" % (self.fx.kind, self.fx.imap_port, self.fx.pop3_port))
        entries = self.corpus["entries"]
        self.fx.seed("src-imap", entries, self.msgdir)
        # POP3 has one folder; its messages are \Seen already so RETR changes nothing on the server.
        self.fx.seed("src-pop", [dict(e, folder="INBOX") for e in entries], self.msgdir, flags_override="S")
        if self.big_mb > 0:
            big = os.path.join(cdir, "big-%d.eml" % self.big_mb)
            entry = corpus.generate_big(big, self.big_mb, self.seed)
            self.big_wire = entry["wire_size"]
            self.fx.seed("src-big", [entry], cdir)
        log("bench: seeded src-imap (%d folders) and src-pop (INBOX) in %.1f s" % (
            len(self.corpus["folders"]), time.monotonic() - t))
        self.expected = len(entries)
        if self.initial_wait > 0.5:
            log("bench: waiting %.0f s after deleting an earlier bench's files (discard; ext4 skips "
                "recently freed inodes)" % self.initial_wait)
            os.sync()
            time.sleep(self.initial_wait)
        self.mb = self.corpus["wire_bytes"] / 1e6
        os.makedirs(os.path.join(self.work, "runs"), exist_ok=True)

    # --- tools -----------------------------------------------------------------------
    def tool_versions(self):
        v = {}
        for tool, args in (("mbsync", ["--version"]), ("mpop", ["--version"]), ("dovecot", ["--version"])):
            exe = shutil.which(tool) or dovecot.find_tool(tool)
            if not exe:
                v[tool] = None
                continue
            try:
                out = subprocess.run([exe] + args, capture_output=True, text=True, timeout=10).stdout
                v[tool] = out.splitlines()[0].strip() if out else "unknown"
            except Exception:
                v[tool] = "unknown"
        return v

    def probe_mailferry(self):
        """'ok', or why mailferry cannot be measured yet."""
        exe = self.mailferry
        if not exe:
            return "no mailferry binary given (run through `make bench`, or set BENCH_MAILFERRY)"
        if not os.access(exe, os.X_OK):
            return "no mailferry binary at %s" % exe
        try:
            h = subprocess.run([exe, "migrate", "--help"], capture_output=True, text=True, timeout=30)
        except Exception as e:
            return "`mailferry migrate --help` failed: %s" % e
        if h.returncode != 0 or "--from" not in h.stdout + h.stderr:
            return "`mailferry migrate` is not there yet (exit %d)" % h.returncode
        # A real migration of a few messages, checked on disk: IMAP first, else POP3 (the
        # CLI may land before one of the protocol stores does; each path then shows its own result).
        probe = [dict(e, folder=("INBOX" if i < 3 else "Archive")) for i, e in enumerate(self.corpus["entries"][:4])]
        self.fx.seed("probe-src", probe, self.msgdir)
        host = self.fx.host
        whys = []
        for proto, url, want in (("IMAP", "imap://probe-src@%s:%d" % (host, self.fx.imap_port), len(probe)),
                                 ("POP3", "pop3://probe-src@%s:%d" % (host, self.fx.pop3_port), 3)):
            d = os.path.join(self.work, "runs", "probe-" + proto.lower())
            os.makedirs(d, exist_ok=True)
            argv = [exe, "migrate", "--from", url, "--to", "maildir:" + d + "/md",
                    "--state", d + "/state.sqlite", "--json"] + self.mf_common(url, "maildir:")
            try:
                r = subprocess.run(argv, env=self.base_env(), capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                whys.append("a %d-message `mailferry migrate` %s->Maildir did not finish in 60 s" % (want, proto))
                continue
            got = count_maildir(d + "/md")
            if r.returncode == 0 and got == want:
                if whys:
                    self.notes.append("mailferry probe: " + whys[0])
                return "ok"
            with open(d + "/stderr", "w") as f:
                f.write(r.stderr or r.stdout or "")
            line = failure_line(d + "/stderr")
            whys.append("a %d-message `mailferry migrate` %s->Maildir: %s with %d of %d messages%s" % (
                want, proto, exit_text(r.returncode), got, want, (": " + line[:200]) if line else ""))
        return "; ".join(whys)

    def mf_common(self, src="", dst=""):
        """Options every mailferry run gets; with BENCH_TLS=none, plaintext for the
        network ends only (mailferry refuses --to-tls for a maildir: destination)."""
        a = ["--ca-file", self.fx.ca_file]
        if self.tls == "none":
            net = ("imap://", "pop3://")
            if src.startswith(net):
                a += ["--from-tls", "none"]
            if dst.startswith(net):
                a += ["--to-tls", "none"]
        return a

    # --- cases -----------------------------------------------------------------------
    def cases(self):
        """(tool, path id, make(run_dir, round) -> plan) in the order they alternate."""
        out = []
        mf_ok = self.mf_status == "ok"
        if self.want_tool("mailferry") and mf_ok:
            for pid in ("pop3-imap", "pop3-maildir", "imap-imap", "imap-maildir", "imap-archive", "archive-imap"):
                if self.want_path(pid):
                    out.append(("mailferry", pid))
        if self.want_tool("mbsync") and shutil.which("mbsync"):
            for pid in ("imap-imap", "imap-maildir"):
                if self.want_path(pid):
                    out.append(("mbsync", pid))
        if self.want_tool("mpop") and shutil.which("mpop") and self.want_path("pop3-maildir"):
            out.append(("mpop", "pop3-maildir"))
        if self.big_mb > 0 and self.want_path("big-imap-imap"):
            if self.want_tool("mailferry") and mf_ok:
                out.append(("mailferry", "big-imap-imap"))
            if self.want_tool("mbsync") and shutil.which("mbsync"):
                out.append(("mbsync", "big-imap-imap"))
        return out

    def plan(self, tool, pid, rdir, tag, rnd):
        """argv/env/verify for one run of (tool, path); `rdir` is the run's scratch dir."""
        env = self.base_env()
        ihost, iport = self.imap_endpoint()
        phost, pport = self.pop3_endpoint()
        dst_user = "dst-" + tag
        outputs = [rdir]
        if tool == "mailferry":
            exe = self.mailferry
            src = {"pop3": "pop3://src-pop@%s:%d" % (phost, pport),
                   "imap": "imap://%s@%s:%d" % ("src-big" if pid == "big-imap-imap" else "src-imap", ihost, iport)}
            common = ["--state", rdir + "/state.sqlite", "--json", "--report", rdir + "/report.json",
                      "--parallel", str(self.parallel)]
            if pid in ("pop3-imap", "imap-imap", "archive-imap", "big-imap-imap"):
                dst = "imap://%s@%s:%d" % (dst_user, ihost, iport)
                verify = lambda: self.fx.count(dst_user)  # noqa: E731
                outputs.append(self.fx.home(dst_user))
            elif pid in ("pop3-maildir", "imap-maildir"):
                dst = "maildir:" + rdir + "/maildir"
                verify = lambda: count_maildir(rdir + "/maildir")  # noqa: E731
            if pid == "imap-archive":
                archive = rdir + "/archive"
                argv = [exe, "backup", "--from", src["imap"], "--to", "archive:" + archive, "--compression", "zstd"] + common \
                    + self.mf_common(src["imap"], "archive:")
                verify = lambda: self.verify_archive(archive)  # noqa: E731
            elif pid == "archive-imap":
                archive = self.last_archive.get(rnd)
                if not archive or not os.path.exists(archive):
                    return None, "skipped: needs this round's IMAP -> archive volume, and that run failed"
                argv = [exe, "restore", "--from", "archive:" + archive, "--to", dst] + common + self.mf_common("archive:", dst)
            else:
                s_url = src["pop3" if pid.startswith("pop3") else "imap"]
                argv = [exe, "migrate", "--from", s_url, "--to", dst] + common + self.mf_common(s_url, dst)
            return {"argv": argv, "env": env, "verify": verify, "outputs": outputs, "noop": True}, None
        if tool == "mbsync":
            os.makedirs(rdir + "/syncstate", exist_ok=True)
            # isync 1.4 matches only DNS names in the certificate, not IP addresses.
            ihost = "localhost" if ihost == "127.0.0.1" else ihost
            kw = self.mbsync_tls_keyword()
            tls = ("%s STARTTLS\nCertificateFile %s\nSystemCertificates no\n" % (kw, self.fx.ca_file)
                   if self.tls == "starttls" else "%s None\n" % kw)
            far_user = "src-big" if pid == "big-imap-imap" else "src-imap"
            rc = ("IMAPAccount far\nHost %s\nPort %d\nUser %s\nPass %s\nAuthMechs LOGIN PLAIN\n%s\n"
                  "IMAPStore far\nAccount far\n\n" % (ihost, iport, far_user, self.fx.password, tls))
            if pid in ("imap-imap", "big-imap-imap"):
                rc += ("IMAPAccount near\nHost %s\nPort %d\nUser %s\nPass %s\nAuthMechs LOGIN PLAIN\n%s\n"
                       "IMAPStore near\nAccount near\n\n" % (ihost, iport, dst_user, self.fx.password, tls))
                verify = lambda: self.fx.count(dst_user)  # noqa: E731
                outputs.append(self.fx.home(dst_user))
            else:
                os.makedirs(rdir + "/maildir", exist_ok=True)
                rc += "MaildirStore near\nPath %s/maildir/\nInbox %s/maildir/INBOX\nSubFolders Verbatim\n\n" % (rdir, rdir)
                verify = lambda: count_maildir(rdir + "/maildir")  # noqa: E731
            rc += ("Channel bench\nFar :far:\nNear :near:\nPatterns *\nCreate Near\nSync Pull\nExpunge None\n"
                   "Remove None\nCopyArrivalDate yes\nSyncState %s/syncstate/\n" % rdir)
            with open(rdir + "/mbsyncrc", "w") as f:
                f.write(rc)
            os.chmod(rdir + "/mbsyncrc", 0o600)
            return {"argv": ["mbsync", "-q", "-c", rdir + "/mbsyncrc", "-a"], "env": env, "verify": verify,
                    "outputs": outputs, "noop": True}, None
        if tool == "mpop":
            md = rdir + "/maildir"
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(md, sub), exist_ok=True)
            tls = ("tls on\ntls_starttls on\ntls_trust_file %s\n" % self.fx.ca_file) if self.tls == "starttls" else "tls off\n"
            rc = ("defaults\n%s\naccount bench\nhost %s\nport %d\nuser src-pop\npassword %s\nauth user\n"
                  "delivery maildir %s\nkeep on\nonly_new on\nreceived_header off\nuidls_file %s/uidls\n"
                  "account default : bench\n" % (tls, phost, pport, self.fx.password, md, rdir))
            with open(rdir + "/mpoprc", "w") as f:
                f.write(rc)
            os.chmod(rdir + "/mpoprc", 0o600)
            return {"argv": ["mpop", "-q", "-C", rdir + "/mpoprc", "bench"], "env": env,
                    "verify": lambda: count_maildir(md), "outputs": outputs, "noop": True}, None
        if tool == "doveadm":
            dest = self.fx.home("dvbk-" + tag)
            outputs.append(dest)
            argv = [self.fx.doveadm_bin, "-c", self.fx.conf, "backup", "-u", "src-imap",
                    "maildir:%s/Maildir:LAYOUT=fs" % dest]
            return {"argv": argv, "env": env, "verify": lambda: count_maildir(dest + "/Maildir"),
                    "outputs": outputs, "noop": True}, None
        return None, "unknown tool"

    def mbsync_tls_keyword(self):
        """isync 1.5 renamed SSLType to TLSType; 1.4 (Debian 12) knows only SSLType."""
        if not hasattr(self, "_mbsync_kw"):
            self._mbsync_kw = "TLSType"
            try:
                out = subprocess.run(["mbsync", "--version"], capture_output=True, text=True, timeout=10).stdout
                ver = tuple(int(x) for x in out.split()[1].split(".")[:2])
                if ver < (1, 5):
                    self._mbsync_kw = "SSLType"
            except Exception:
                self._mbsync_kw = "SSLType"
        return self._mbsync_kw

    def expect(self, pid):
        """(messages, MB on the wire) a run of path `pid` moves."""
        if pid == "big-imap-imap":
            return 1, self.big_wire / 1e6
        return self.expected, self.mb

    def verify_archive(self, archive):
        vols, size, msgs = archive_summary(archive)
        if vols == 0:
            return 0
        if msgs is None:
            return -1  # volumes there, catalog unreadable to us: the restore run checks the contents
        return msgs

    # --- proxy -----------------------------------------------------------------------
    def start_proxy(self, delay):
        targets = ["%s:%d" % (self.fx.host, self.fx.imap_port), "%s:%d" % (self.fx.host, self.fx.pop3_port)]
        argv = [sys.executable, os.path.join(HERE, "delayproxy.py"), "--rtt-ms", str(delay), "--stdin-watch"]
        for t in targets:
            argv += ["--forward", t]
        self.proxy = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proxy.stdout.readline()
        info = json.loads(line)
        self.proxy_ports = {"imap": info["ports"][targets[0]], "pop3": info["ports"][targets[1]]}
        log("bench: delaying proxy (pid %d) at %g ms RTT: IMAP %d, POP3 %d" % (
            self.proxy.pid, delay, self.proxy_ports["imap"], self.proxy_ports["pop3"]))

    def stop_proxy(self):
        if self.proxy is None:
            return
        try:
            self.proxy.terminate()
            self.proxy.wait(timeout=10)
        except Exception:
            self.proxy.kill()
            self.proxy.wait()
        self.proxy = None
        self.proxy_ports = {}

    # --- running ---------------------------------------------------------------------
    def one(self, mode, tool, pid, rnd):
        tag = "%s-%s-%s-r%d" % (tool, pid, mode.replace(" ", "").replace(".", "_"), rnd)
        rdir = os.path.join(self.work, "runs", tag)
        os.makedirs(rdir, exist_ok=True)
        plan, why = self.plan(tool, pid, rdir, tag, rnd)
        base = {"mode": mode, "tool": tool, "path": pid, "round": rnd + 1}
        if plan is None:
            rec = dict(base, kind="copy", ok=False, reason=why)
            self.runs_done.append(rec)
            return rec
        server_pid = self.fx.master_pid()
        proxy_pid = self.proxy.pid if self.proxy is not None else None
        recs = []
        for kind in ("copy", "noop"):
            if kind == "noop" and not plan["noop"]:
                break
            self.settle()
            res = run_measured(plan["argv"], plan["env"], os.path.join(rdir, kind), self.timeout, server_pid, proxy_pid)
            got = plan["verify"]()
            rec = dict(base, kind=kind, **res)
            report = os.path.join(rdir, "report.json")
            if tool == "mailferry" and os.path.exists(report):
                try:
                    with open(report) as f:
                        rep = json.load(f)
                    totals = {}
                    for folder in (rep.get("folders") or []) if isinstance(rep, dict) else []:
                        for k in ("found", "copied", "duplicates", "skipped", "failed", "verified", "bytes"):
                            if isinstance(folder.get(k), int):
                                totals[k] = totals.get(k, 0) + folder[k]
                    if totals:
                        rec["mailferry_totals"] = totals
                    fails = rep.get("failures") if isinstance(rep, dict) else None
                    if fails:
                        rec["mailferry_failures"] = len(fails)
                        f0 = fails[0] if isinstance(fails[0], dict) else {}
                        rec["mailferry_first_failure"] = "%s %s: %s" % (
                            f0.get("folder", "?"), f0.get("sourceID", ""), f0.get("reason", ""))
                except (OSError, ValueError):
                    pass
                os.replace(report, os.path.join(rdir, "report-%s.json" % kind))
            rec["messages_found"] = got
            expected, mb = self.expect(pid)
            ok = res["exit"] == 0 and not res["timed_out"] and (got == expected or (got == -1 and pid == "imap-archive"))
            rec["ok"] = ok
            if kind == "copy":
                rec["messages"] = expected
                rec["msg_per_s"] = expected / res["wall_s"] if ok else None
                rec["mb_per_s"] = mb / res["wall_s"] if ok else None
                if pid == "imap-archive":
                    vols, size, _ = archive_summary(rdir + "/archive")
                    rec["archive_volumes"], rec["archive_bytes"] = vols, size
            if not ok:
                if res["timed_out"]:
                    rec["reason"] = "timed out after %.0f s" % self.timeout
                elif res["exit"] != 0:
                    why = rec.get("mailferry_first_failure")
                    if why:
                        why = "%d failed, first: %s" % (rec.get("mailferry_failures", 0), why)
                    rec["reason"] = "%s: %s" % (exit_text(res["exit"]), why or failure_line(os.path.join(rdir, kind + ".stderr"))
                                                or tail(os.path.join(rdir, kind + ".stdout")))
                else:
                    rec["reason"] = "%d of %d messages in the destination%s" % (
                        got, expected, " (duplicates)" if kind == "noop" and got > expected else "")
            self.runs_done.append(rec)
            recs.append(rec)
            status = ("%.0f msg/s" % rec["msg_per_s"]) if kind == "copy" and ok else ("%.2f s" % res["wall_s"]) if ok else "FAILED: " + rec["reason"]
            log("bench: [%s] %-9s %-13s %-4s round %d: %s (wall %.2f s, cpu %.2f s, rss %.0f MiB)" % (
                mode, tool, pid, kind, rnd + 1, status, res["wall_s"], res["cpu_s"] or 0, res["peak_rss_mib"] or 0))
            if not ok:
                break
        if tool == "mailferry" and pid == "imap-archive" and recs and recs[0]["ok"]:
            self.last_archive[rnd] = rdir + "/archive"
            self.keep_until_round_end.append(plan["outputs"])
        else:
            self.move_aside(*plan["outputs"])
        return recs[0] if recs else None

    def run_mode(self, mode, delay):
        if delay is not None:
            self.start_proxy(delay)
        try:
            cases = self.cases()
            mode_start = time.monotonic()
            doveadm_case = self.want_tool("doveadm") and self.want_path("server-local") and delay is None
            failed = set()
            for rnd in range(self.runs):
                # Keep `make bench` inside its time budget: skip a round that would overrun it.
                spent = time.monotonic() - self.t0
                if rnd > 0 and self.budget_s > 0:
                    per_round = (time.monotonic() - mode_start) / rnd
                    modes_left = len(self.modes) - [m[0] for m in self.modes].index(mode) - 1
                    if spent + per_round * (1 + modes_left) > self.budget_s:
                        note = ("%s: stopped after %d of %d rounds to stay within BENCH_BUDGET=%.0f s "
                                "(a round took %.0f s); medians are of %d run(s)" % (
                                    mode, rnd, self.runs, self.budget_s, per_round, rnd))
                        self.notes.append(note)
                        log("bench: " + note)
                        break
                self.last_archive = {}
                self.keep_until_round_end = []
                for tool, pid in cases:
                    if (tool, pid) in failed:
                        continue
                    rec = self.one(mode, tool, pid, rnd)
                    if rec is None or not rec.get("ok"):
                        failed.add((tool, pid))
                if doveadm_case and ("doveadm", "server-local") not in failed:
                    rec = self.one(mode, "doveadm", "server-local", rnd)
                    if rec is None or not rec.get("ok"):
                        failed.add(("doveadm", "server-local"))
                for outs in self.keep_until_round_end:
                    self.move_aside(*outs)
        finally:
            self.stop_proxy()

    # --- summary ---------------------------------------------------------------------
    def summarize(self):
        rows = []
        order = {p[0]: i for i, p in enumerate(PATHS)}
        tool_order = {"mailferry": 0, "mbsync": 1, "mpop": 2, "doveadm": 3}
        keys = []
        for r in self.runs_done:
            k = (r["mode"], r["path"], r["tool"], r["kind"])
            if k not in keys:
                keys.append(k)
        mode_order = {m[0]: i for i, m in enumerate(self.modes)}
        keys.sort(key=lambda k: (mode_order.get(k[0], 9), order.get(k[1], 99), k[3] == "noop", tool_order.get(k[2], 9)))
        for k in keys:
            rs = [r for r in self.runs_done if (r["mode"], r["path"], r["tool"], r["kind"]) == k]
            ok = [r for r in rs if r.get("ok")]

            def med(field):
                vals = [r[field] for r in ok if r.get(field) is not None]
                return statistics.median(vals) if vals else None

            row = {"mode": k[0], "path": k[1], "tool": k[2], "kind": k[3], "runs": len(rs), "ok_runs": len(ok),
                   "wall_s": med("wall_s"), "cpu_s": med("cpu_s"), "peak_rss_mib": med("peak_rss_mib"),
                   "server_cpu_s": med("server_cpu_s"), "proxy_cpu_s": med("proxy_cpu_s")}
            if k[3] == "copy":
                row["msg_per_s"] = med("msg_per_s")
                row["mb_per_s"] = med("mb_per_s")
                rates = [r["msg_per_s"] for r in ok if r.get("msg_per_s")]
                row["msg_per_s_min"] = min(rates) if rates else None
                row["msg_per_s_max"] = max(rates) if rates else None
            fails = [r.get("reason") for r in rs if not r.get("ok")]
            if fails:
                row["failure"] = fails[0]
            rows.append(row)
        return rows

    def targets(self, rows):
        """The issue's targets, as ratios measured in this run (only where both figures exist)."""
        def rate(mode, path, tool):
            for r in rows:
                if (r["mode"], r["path"], r["tool"], r["kind"]) == (mode, path, tool, "copy"):
                    return r.get("msg_per_s")
            return None

        def noop(mode, path):
            for r in rows:
                if (r["mode"], r["path"], r["tool"], r["kind"]) == (mode, path, "mailferry", "noop"):
                    return r.get("wall_s")
            return None

        out = []
        for mode, delay in self.modes:
            def ratio(name, a, b, goal):
                if a and b:
                    out.append({"mode": mode, "target": name, "ratio": a / b, "goal": goal, "met": a / b >= goal})
            mf = lambda p: rate(mode, p, "mailferry")  # noqa: E731
            ratio("IMAP->IMAP vs mbsync", mf("imap-imap"), rate(mode, "imap-imap", "mbsync"),
                  2.0 if delay and delay >= 20 else 1.5)
            if delay is None:
                ratio("IMAP->IMAP vs server-local doveadm backup", mf("imap-imap"), rate(mode, "server-local", "doveadm"), 0.9)
            ratio("POP3->Maildir vs mpop", mf("pop3-maildir"), rate(mode, "pop3-maildir", "mpop"), 1.0)
            ratio("IMAP->Maildir vs mbsync", mf("imap-maildir"), rate(mode, "imap-maildir", "mbsync"), 1.0)
            ratio("IMAP->archive vs our IMAP->Maildir", mf("imap-archive"), mf("imap-maildir"), 0.8)
            for r in rows:
                if (r["mode"], r["tool"], r["kind"]) == (mode, "mailferry", "copy") and r.get("peak_rss_mib") is not None:
                    if r["path"] == "big-imap-imap":
                        out.append({"mode": mode, "target": "peak RSS moving one %d MB message <= 64 MiB" % self.big_mb,
                                    "rss_mib": r["peak_rss_mib"], "met": r["peak_rss_mib"] <= 64})
                    elif r["path"] == "imap-imap" and self.messages >= 5000:
                        out.append({"mode": mode, "target": "peak RSS, 5,000 messages IMAP->IMAP --parallel %d <= 128 MiB" % self.parallel,
                                    "rss_mib": r["peak_rss_mib"], "met": r["peak_rss_mib"] <= 128})
            w = noop(mode, "imap-imap")
            if w is not None and self.messages >= 5000:
                out.append({"mode": mode, "target": "IMAP->IMAP no-op re-run under 0.3 s", "wall_s": w, "met": w < 0.3})
        return out

    def print_table(self, rows, tgt):
        def f(v, fmt):
            return fmt % v if v is not None else "-"
        print()
        print("mailferry bench: %d messages (%.1f MB on the wire) in %d folders (POP3: one INBOX), TLS %s, "
              "median of %d runs; mailferry --parallel %d" % (self.messages, self.mb, len(self.corpus["folders"]),
                                                           self.tls, self.runs, self.parallel))
        print("CPU s and peak RSS are the client's; server CPU s is the whole Dovecot tree's during the run.")
        if self.mf_status == "ok":
            build = "debug build: its figures say little" if "/debug/" in self.mailferry else "release" if "/release/" in self.mailferry else "build kind unknown"
            print("mailferry: %s (%s)" % (self.mailferry, build))
        print("Dovecot: %s; load average at start %.2f (other work on this machine skews the figures)" % (
            self.fx.kind, self.load_start))
        hdr = "%-40s %-10s %19s %7s %8s %7s %8s %8s %5s" % ("path", "tool", "msg/s (min-max)", "MB/s", "wall s",
                                                            "CPU s", "RSS MiB", "srv CPU", "ok")
        for mode, delay in self.modes:
            mrows = [r for r in rows if r["mode"] == mode]
            print()
            print("== %s%s" % (mode, "" if delay is None else " (delaying proxy on loopback; proxy CPU s in JSON)"))
            print(hdr)
            print("-" * len(hdr))
            if self.want_tool("mailferry") and self.mf_status != "ok":
                print("%-40s %-10s %s" % ("(all mailferry paths)", "mailferry", "not yet runnable: " + self.mf_status))
            for r in mrows:
                label = PATH_LABEL.get(r["path"], r["path"]) + (" no-op" if r["kind"] == "noop" else "")
                if r["path"] == "big-imap-imap":
                    label = "IMAP -> IMAP, one %d MB message%s" % (self.big_mb, " no-op" if r["kind"] == "noop" else "")
                tool = "doveadm" if r["tool"] == "doveadm" else r["tool"]
                if r["ok_runs"] == 0:
                    print("%-40s %-10s FAILED: %s" % (label, tool, (r.get("failure") or "")[:120]))
                    continue
                if r["kind"] == "copy":
                    rf = "%.0f" if (r["msg_per_s"] or 0) >= 10 else "%.2f"
                    rate = "%s (%s-%s)" % (f(r["msg_per_s"], rf), f(r["msg_per_s_min"], rf), f(r["msg_per_s_max"], rf))
                    mbs = f(r["mb_per_s"], "%.1f")
                else:
                    rate, mbs = "no-op", "-"
                print("%-40s %-10s %19s %7s %8s %7s %8s %8s %5s" % (
                    label, tool, rate, mbs, f(r["wall_s"], "%.2f"), f(r["cpu_s"], "%.2f"), f(r["peak_rss_mib"], "%.0f"),
                    f(r["server_cpu_s"], "%.2f"), "%d/%d" % (r["ok_runs"], r["runs"])))
            for note in self.missing_tools:
                print("%-40s %-10s %s" % (note[0], note[1], note[2]))
        for note in self.notes:
            print("note: " + note)
        if tgt:
            print()
            print("targets (issue 8), ratios within this run:")
            for t in tgt:
                if "rss_mib" in t:
                    print("  [%s] %-45s %.0f MiB %s" % (t["mode"], t["target"], t["rss_mib"], "met" if t["met"] else "MISSED"))
                elif "ratio" in t:
                    print("  [%s] %-45s %.2fx (goal %.1fx) %s" % (t["mode"], t["target"], t["ratio"], t["goal"], "met" if t["met"] else "MISSED"))
                else:
                    print("  [%s] %-45s %.3f s %s" % (t["mode"], t["target"], t["wall_s"], "met" if t["met"] else "MISSED"))

    def main(self):
        started = datetime.datetime.now(datetime.timezone.utc)
        t0 = self.t0 = time.monotonic()
        self.load_start = os.getloadavg()[0]
        self.setup()
        try:
            self.missing_tools = []
            for tool, path in (("mbsync", "IMAP -> IMAP/Maildir"), ("mpop", "POP3 -> Maildir")):
                if self.want_tool(tool) and not shutil.which(tool):
                    self.missing_tools.append((path, tool, "not installed: skipped (`make bench-deps` installs it)"))
                    log("bench: %s is not installed; its rows are skipped (make bench-deps installs it)" % tool)
            if not os.access("/usr/bin/time", os.X_OK):
                log("bench: GNU time is not installed; CPU and RSS come from wait4() rusage")
            self.mf_status = self.probe_mailferry() if self.want_tool("mailferry") else "not selected"
            if self.want_tool("mailferry"):
                log("bench: mailferry: %s" % ("runnable (%s)" % self.mailferry if self.mf_status == "ok" else "not yet runnable: " + self.mf_status))
            for mode, delay in self.modes:
                self.run_mode(mode, delay)
        finally:
            self.stop_proxy()
            self.fx.stop()
        rows = self.summarize()
        tgt = self.targets(rows)
        self.print_table(rows, tgt)
        os.makedirs(self.results_dir, exist_ok=True)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        out = os.path.join(self.results_dir, "bench-%s-%d%s.json" % (
            stamp, self.messages, "-rtt" + os.environ.get("BENCH_RTT_MS", "").replace(",", "_") if os.environ.get("BENCH_RTT_MS") else ""))
        doc = {
            "started": started.isoformat(), "elapsed_s": time.monotonic() - t0,
            "host": {"machine": platform.machine(), "kernel": platform.release(), "cpus": os.cpu_count(),
                     "loadavg_start": self.load_start, "loadavg_end": os.getloadavg()},
            "knobs": {"messages": self.messages, "runs": self.runs, "seed": self.seed, "tls": self.tls,
                      "parallel": self.parallel, "modes": [m[0] for m in self.modes], "timeout_s": self.timeout},
            "corpus": {k: self.corpus[k] for k in ("version", "messages", "seed", "bytes", "wire_bytes", "folders", "sha256")},
            "fixture": self.fx.kind, "tools": self.tool_versions(),
            "mailferry": {"binary": self.mailferry, "status": self.mf_status},
            "units": {"mb": "10^6 bytes of message data as sent on the wire (CRLF)", "rss": "MiB", "cpu": "seconds user+sys"},
            "summary": rows, "targets": tgt, "notes": self.notes, "runs": self.runs_done,
        }
        with open(out, "w") as f:
            json.dump(doc, f, indent=1)
        print()
        print("results: %s (%.0f s in all)" % (os.path.relpath(out, os.getcwd()), time.monotonic() - t0))
        if os.environ.get("BENCH_KEEP") == "1":
            log("bench: BENCH_KEEP=1: runs kept in %s (the next bench deletes them)" % self.work)
        else:
            shutil.rmtree(os.path.join(self.work, "runs"), ignore_errors=True)
            shutil.rmtree(self.trash, ignore_errors=True)
            shutil.rmtree(self.fx.root, ignore_errors=True)
        with open(os.path.join(self.work, "last-delete"), "w") as f:
            f.write("%f\n" % time.time())
        return 0


if __name__ == "__main__":
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so the proxy and Dovecot are stopped.
    def _terminate(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        sys.exit(Bench().main())
    except KeyboardInterrupt:
        log("bench: interrupted; Dovecot and the proxy are stopped, partial runs left in $BENCH_WORK")
        sys.exit(130)

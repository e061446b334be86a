"""The benchmark's Dovecot: `mailferry-fixture` when it is built, else a private one.

Both have the same layout (ROOT/etc/dovecot.conf, homes ROOT/home/USER with
`maildir:~/Maildir:LAYOUT=fs`, any user name logs in with the one password, a CA in
ROOT/tls/ca.pem), so the harness does not care which one runs.
"""
import json
import os
import pwd
import grp
import secrets
import shlex
import shutil
import socket
import subprocess
import time


def free_ports(n):
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def can_connect(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def find_tool(name, dirs=("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")):
    for d in dirs:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return shutil.which(name)


def mail_ids():
    if os.geteuid() == 0:
        for name in ("mail", "nobody"):
            try:
                pw = pwd.getpwnam(name)
                return pw.pw_uid, pw.pw_gid, name, grp.getgrgid(pw.pw_gid).gr_name
            except KeyError:
                continue
        raise RuntimeError("no unprivileged `mail` or `nobody` user for Dovecot's mail processes")
    pw = pwd.getpwuid(os.getuid())
    try:
        group = grp.getgrgid(os.getgid()).gr_name
    except KeyError:
        group = pw.pw_name
    return os.getuid(), os.getgid(), pw.pw_name, group


class Fixture:
    """A running Dovecot: host, ports, password, CA, config, mail uid/gid."""

    def __init__(self, root, kind, host, imap_port, pop3_port, ca_file, password, mail_uid, mail_gid, stop_cmd=None):
        self.root = root
        self.kind = kind
        self.host = host
        self.imap_port = imap_port
        self.pop3_port = pop3_port
        self.ca_file = ca_file
        self.password = password
        self.mail_uid = mail_uid
        self.mail_gid = mail_gid
        self.conf = os.path.join(root, "etc", "dovecot.conf")
        self.stop_cmd = stop_cmd
        self.doveadm_bin = find_tool("doveadm")

    # --- lifecycle -------------------------------------------------------------------
    @staticmethod
    def start(root, fixture_bin=None, log=print):
        if fixture_bin and os.access(fixture_bin, os.X_OK):
            try:
                return Fixture._start_shared(root, fixture_bin)
            except Exception as e:  # fall back, but say so
                log("bench: mailferry-fixture did not start (%s); using the private Dovecot" % e)
                shutil.rmtree(root, ignore_errors=True)
        return Fixture._start_private(root)

    @staticmethod
    def _start_shared(root, fixture_bin):
        os.makedirs(os.path.dirname(root), exist_ok=True)
        # The fixture's Dovecot may inherit our fds: read its output from files, not pipes.
        os.makedirs(root + ".out", exist_ok=True)
        with open(root + ".out/stdout", "w") as o, open(root + ".out/stderr", "w") as e:
            rc = subprocess.run([fixture_bin, "start", "--dir", root], stdin=subprocess.DEVNULL,
                                stdout=o, stderr=e, timeout=120).returncode
        with open(root + ".out/stdout") as o, open(root + ".out/stderr") as e:
            stdout, stderr = o.read(), e.read()
        if rc != 0:
            raise RuntimeError((stderr or stdout).strip()[-400:])
        env = {}
        for line in stdout.splitlines():
            if line.startswith("export "):
                k, _, v = line[len("export "):].partition("=")
                env[k] = shlex.split(v)[0] if v else ""
        info = {}
        try:
            with open(os.path.join(root, "fixture.json")) as f:
                info = json.load(f)
        except OSError:
            pass
        uid, gid, _, _ = mail_ids()
        return Fixture(root, "mailferry-fixture", env.get("MAILFERRY_HOST", "127.0.0.1"),
                       int(env["MAILFERRY_IMAP_PORT"]), int(env["MAILFERRY_POP3_PORT"]),
                       env["MAILFERRY_CA_FILE"], env["MAILFERRY_PASSWORD"],
                       int(info.get("mailUID", uid)), int(info.get("mailGID", gid)),
                       stop_cmd=[fixture_bin, "stop", "--dir", root])

    @staticmethod
    def _start_private(root):
        dovecot = find_tool("dovecot")
        if not dovecot or not find_tool("doveadm"):
            raise RuntimeError("Dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d, or `make deps`)")
        if not find_tool("openssl"):
            raise RuntimeError("openssl is not installed")
        uid, gid, user, group = mail_ids()
        is_root = os.geteuid() == 0
        for sub in ("", "etc", "run", "state", "log", "tls", "home"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
            os.chmod(os.path.join(root, sub), 0o755)
        home = os.path.join(root, "home")
        if is_root:
            os.chown(home, uid, gid)
        os.chmod(home, 0o700)
        make_certificates(os.path.join(root, "tls"))
        password = "bench-" + secrets.token_hex(8)
        last = ""
        for _ in range(4):
            imap_port, pop3_port = free_ports(2)
            conf = private_config(root, imap_port, pop3_port, password, uid, gid, user, group, is_root)
            with open(os.path.join(root, "etc", "dovecot.conf"), "w") as f:
                f.write(conf)
            # Dovecot daemonizes and keeps its output fds: give it a file, not a pipe.
            start_out = os.path.join(root, "log", "start.out")
            with open(start_out, "w") as out:
                r = subprocess.run([dovecot, "-c", os.path.join(root, "etc", "dovecot.conf")],
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=60)
            with open(start_out) as f:
                started = f.read()
            if r.returncode == 0:
                for _ in range(100):
                    if can_connect(imap_port) and can_connect(pop3_port):
                        return Fixture(root, "private", "127.0.0.1", imap_port, pop3_port,
                                       os.path.join(root, "tls", "ca.pem"), password, uid, gid)
                    time.sleep(0.05)
            try:
                with open(os.path.join(root, "log", "dovecot.log")) as f:
                    log = f.read()[-2000:]
            except OSError:
                log = ""
            last = (started + "\n" + log).strip()
            Fixture._kill_master(root)
            if "Address already in use" not in last:
                break
        raise RuntimeError("the benchmark Dovecot did not start: " + last[-1500:])

    @staticmethod
    def _kill_master(root):
        try:
            with open(os.path.join(root, "run", "master.pid")) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, 15)
        except OSError:
            return
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.05)
        try:
            os.kill(pid, 9)
        except OSError:
            pass

    def master_pid(self):
        try:
            with open(os.path.join(self.root, "run", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        if self.stop_cmd:
            subprocess.run(self.stop_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
        else:
            Fixture._kill_master(self.root)

    # --- doveadm ---------------------------------------------------------------------
    def doveadm(self, *args, check=True, timeout=600):
        r = subprocess.run([self.doveadm_bin, "-c", self.conf] + list(args), capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError("doveadm %s failed (%d): %s" % (" ".join(args[:3]), r.returncode, r.stderr.strip()[-500:]))
        return r.stdout

    def home(self, user):
        return os.path.join(self.root, "home", user)

    def folder_path(self, user, folder):
        if folder.upper() != "INBOX":
            self.doveadm("mailbox", "create", "-u", user, folder, check=False)
        return self.doveadm("mailbox", "path", "-u", user, folder).strip()

    def count(self, user):
        """Messages in all folders of `user` (0 when the user has no mail yet)."""
        if not os.path.isdir(self.home(user)):
            return 0
        out = self.doveadm("-f", "tab", "mailbox", "status", "-u", user, "messages", "*")
        total = 0
        for line in out.splitlines()[1:]:
            last = line.rsplit("\t", 1)[-1].strip()
            if last.isdigit():
                total += int(last)
        return total

    def seed(self, user, entries, msgdir, flags_override=None):
        """Links the corpus files into `user`'s Maildirs (names carry S= and W= sizes, mtime is
        INTERNALDATE) and has Dovecot pick them up with one `force-resync`."""
        by_folder = {}
        for i, e in enumerate(entries):
            by_folder.setdefault(e["folder"], []).append((i, e))
        is_root = os.geteuid() == 0
        stamp = int(time.time())
        for folder, items in sorted(by_folder.items()):
            d = self.folder_path(user, folder)
            for sub in ("", "cur", "new", "tmp"):
                p = os.path.join(d, sub)
                os.makedirs(p, exist_ok=True)
                if is_root:
                    os.chown(p, self.mail_uid, self.mail_gid)
            for i, e in items:
                flags = e["flags"] if flags_override is None else flags_override
                name = "%d.M%06dP1Q1.bench,S=%d,W=%d:2,%s" % (stamp, i, e["size"], e["wire_size"], flags)
                src = os.path.join(msgdir, e["file"])
                dst = os.path.join(d, "cur", name)
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
                if is_root:
                    os.chown(dst, self.mail_uid, self.mail_gid)
        self.doveadm("force-resync", "-u", user, "*")
        n = self.count(user)
        if n != len(entries):
            raise RuntimeError("seeding %s: Dovecot sees %d of %d messages" % (user, n, len(entries)))


def make_certificates(d):
    ossl = find_tool("openssl")
    ext = os.path.join(d, "server.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1\nbasicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n")

    def run(*a):
        subprocess.run([ossl] + list(a), check=True, capture_output=True, timeout=120)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", d + "/ca.key", "-out", d + "/ca.pem", "-days", "30", "-subj", "/CN=mailferry bench CA " + secrets.token_hex(4),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", d + "/server.key", "-out", d + "/server.csr", "-subj", "/CN=localhost")
    run("x509", "-req", "-in", d + "/server.csr", "-CA", d + "/ca.pem", "-CAkey", d + "/ca.key", "-CAcreateserial",
        "-out", d + "/server.pem", "-days", "30", "-sha256", "-extfile", ext)
    run("genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048", "-out", d + "/dh.pem")
    for f in ("ca.key", "server.key"):
        os.chmod(os.path.join(d, f), 0o600)
    for f in ("ca.pem", "server.pem", "dh.pem"):
        os.chmod(os.path.join(d, f), 0o644)


def private_config(r, imap_port, pop3_port, password, uid, gid, user, group, is_root):
    if is_root:
        internal_user, internal_group, login_user, login_chroot, chroot_off = "dovecot", "dovecot", "dovenull", "", ""
    else:
        internal_user, internal_group, login_user = user, group, user
        login_chroot = "  chroot =\n"
        chroot_off = "service anvil {\n  chroot =\n}\nservice imap-urlauth-login {\n  chroot =\n}\n"
    return """# mailferry benchmark Dovecot (generated by scripts/bench; do not edit)
instance_name = mailferry-bench-%(name)s
base_dir = %(r)s/run
state_dir = %(r)s/state
log_path = %(r)s/log/dovecot.log
info_log_path = %(r)s/log/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
shutdown_clients = yes
ssl = yes
ssl_cert = <%(r)s/tls/server.pem
ssl_key = <%(r)s/tls/server.key
ssl_dh = <%(r)s/tls/dh.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
pop3_uidl_format = %%08Xu%%08Xv
mail_location = maildir:~/Maildir:LAYOUT=fs
mail_max_userip_connections = 500
first_valid_uid = %(uid)d
last_valid_uid = 0
first_valid_gid = %(first_gid)d
default_internal_user = %(iu)s
default_internal_group = %(ig)s
default_login_user = %(lu)s
mail_plugins =
protocol imap {
  imap_max_line_length = 10M
}
passdb {
  driver = static
  args = password=%(pw)s
}
userdb {
  driver = static
  args = uid=%(uid)d gid=%(gid)d home=%(r)s/home/%%u
}
service imap-login {
%(lc)s  inet_listener imap {
    address = 127.0.0.1
    port = %(imap)d
  }
  inet_listener imaps {
    port = 0
  }
  process_min_avail = 1
}
service pop3-login {
%(lc)s  inet_listener pop3 {
    address = 127.0.0.1
    port = %(pop3)d
  }
  inet_listener pop3s {
    port = 0
  }
}
service imap {
  process_limit = 512
}
service pop3 {
  process_limit = 512
}
%(co)s""" % {"name": os.path.basename(r), "r": r, "uid": uid, "gid": gid, "first_gid": 0 if gid == 0 else 1,
             "iu": internal_user, "ig": internal_group, "lu": login_user, "pw": password, "lc": login_chroot,
             "imap": imap_port, "pop3": pop3_port, "co": chroot_off}

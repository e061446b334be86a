#!/usr/bin/env python3
"""Self-tests for the bench harness: python3 -m unittest discover -s scripts/bench -p 'test_*.py'

They check what the figures rest on: the corpus is deterministic and has the promised size
mix, the delaying proxy keeps every byte in order and adds the asked delay without
throttling, and the counters the harness checks runs with count what they should."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402
import corpus  # noqa: E402


class CorpusTests(unittest.TestCase):
    def test_same_seed_same_bytes_other_seed_other_bytes(self):
        with tempfile.TemporaryDirectory() as d:
            a = corpus.generate(os.path.join(d, "a"), 120, 7)
            b = corpus.generate(os.path.join(d, "b"), 120, 7)
            c = corpus.generate(os.path.join(d, "c"), 120, 8)
            self.assertEqual(a["sha256"], b["sha256"])
            self.assertNotEqual(a["sha256"], c["sha256"])
            h = hashlib.sha256()
            for e in a["entries"]:
                with open(os.path.join(d, "a", "msgs", e["file"]), "rb") as f:
                    data = f.read()
                h.update(data)
                self.assertEqual(len(data), e["size"])
                self.assertEqual(len(data) + data.count(b"\n"), e["wire_size"])
                self.assertNotIn(b"\r", data)
                self.assertIn(b"\nMessage-ID: <", data)
                self.assertEqual(int(os.stat(os.path.join(d, "a", "msgs", e["file"])).st_mtime), e["date"])
            self.assertEqual(h.hexdigest(), a["sha256"])

    def test_size_mix_and_folders(self):
        with tempfile.TemporaryDirectory() as d:
            m = corpus.generate(d, 1500, 20261122)
            sizes = [e["size"] for e in m["entries"]]
            small = sum(1 for s in sizes if 1_500 <= s <= 21_000)
            big = sum(1 for s in sizes if 95_000 <= s <= 2_050_000)
            self.assertGreater(small / len(sizes), 0.85)
            self.assertGreater(big / len(sizes), 0.04)
            self.assertEqual(small + big, len(sizes))
            self.assertEqual(len(m["folders"]), 12)
            # About 50 KB a message, as the 5,000 messages / 258 MB.
            self.assertTrue(35_000 < m["bytes"] / len(sizes) < 70_000, m["bytes"] / len(sizes))

    def test_big_message(self):
        with tempfile.TemporaryDirectory() as d:
            e = corpus.generate_big(os.path.join(d, "big.eml"), 3, 1)
            self.assertEqual(os.path.getsize(os.path.join(d, "big.eml")), e["size"])
            self.assertTrue(2_900_000 < e["size"] <= 3_000_000, e["size"])
            self.assertEqual(corpus.generate_big(os.path.join(d, "big.eml"), 3, 1), e)


class ProxyTests(unittest.TestCase):
    def start_echo(self):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()

        def serve():
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return

                def echo(c=c):
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    while True:
                        data = c.recv(65536)
                        if not data:
                            c.shutdown(socket.SHUT_WR)
                            return
                        c.sendall(data)
                threading.Thread(target=echo, daemon=True).start()
        threading.Thread(target=serve, daemon=True).start()
        self.addCleanup(srv.close)
        return srv.getsockname()[1]

    def start_proxy(self, rtt, port):
        p = subprocess.Popen([sys.executable, os.path.join(HERE, "delayproxy.py"), "--rtt-ms", str(rtt),
                              "--forward", "127.0.0.1:%d" % port], stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (p.terminate(), p.wait(10)))
        return json.loads(p.stdout.readline())["ports"]["127.0.0.1:%d" % port]

    def roundtrips(self, port, n=20):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = time.monotonic()
        for i in range(n):
            msg = b"ping %d\n" % i
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += s.recv(100)
            self.assertEqual(got, msg)
        s.close()
        return (time.monotonic() - t) / n

    def test_delay_added_per_round_trip(self):
        port = self.start_echo()
        rtt = self.roundtrips(self.start_proxy(30, port))
        self.assertGreater(rtt, 0.029)
        self.assertLess(rtt, 0.060)

    def test_bytes_in_order_both_ways_and_not_throttled(self):
        port = self.start_echo()
        pport = self.start_proxy(20, port)
        s = socket.create_connection(("127.0.0.1", pport))
        payload = os.urandom(8 << 20)
        received = bytearray()

        def reader():
            while True:
                data = s.recv(1 << 20)
                if not data:
                    return
                received.extend(data)
        th = threading.Thread(target=reader)
        t = time.monotonic()
        th.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        th.join(30)
        took = time.monotonic() - t
        self.assertEqual(bytes(received), payload)
        # 8 MiB at 20 ms RTT: a window-limited link would take many round trips; this one, about one.
        self.assertLess(took, 1.5)

    def test_zero_delay_passes_through(self):
        port = self.start_echo()
        rtt = self.roundtrips(self.start_proxy(0, port), n=50)
        self.assertLess(rtt, 0.01)


class CounterTests(unittest.TestCase):
    def test_count_maildir_counts_cur_and_new_in_every_folder(self):
        with tempfile.TemporaryDirectory() as d:
            for folder, n_cur, n_new in (("", 2, 1), ("Sent", 3, 0), ("Lists/dovecot", 0, 4)):
                for sub in ("cur", "new", "tmp"):
                    os.makedirs(os.path.join(d, folder, sub), exist_ok=True)
                for i in range(n_cur):
                    open(os.path.join(d, folder, "cur", "%d:2,S" % i), "w").close()
                for i in range(n_new):
                    open(os.path.join(d, folder, "new", "n%d" % i), "w").close()
                open(os.path.join(d, folder, "tmp", "partial"), "w").close()
            open(os.path.join(d, "dovecot-uidlist"), "w").close()
            self.assertEqual(bench.count_maildir(d), 10)

    def test_exit_text(self):
        self.assertEqual(bench.exit_text(1), "exit 1")
        self.assertEqual(bench.exit_text(132), "exit 132 (signal 4)")
        self.assertEqual(bench.exit_text(-9), "killed by signal 9")


class OptionTests(unittest.TestCase):
    def test_plaintext_applies_to_network_ends_only(self):
        b = bench.Bench.__new__(bench.Bench)
        b.fx = type("Fx", (), {"ca_file": "/ca.pem"})()
        b.tls = "none"
        self.assertEqual(b.mf_common("imap://u@h:1", "maildir:/d"), ["--ca-file", "/ca.pem", "--from-tls", "none"])
        self.assertEqual(b.mf_common("archive:/a", "imap://u@h:1"), ["--ca-file", "/ca.pem", "--to-tls", "none"])
        self.assertEqual(b.mf_common("pop3://u@h:1", "imap://u@h:1"),
                         ["--ca-file", "/ca.pem", "--from-tls", "none", "--to-tls", "none"])
        b.tls = "starttls"
        self.assertEqual(b.mf_common("imap://u@h:1", "imap://u@h:1"), ["--ca-file", "/ca.pem"])


if __name__ == "__main__":
    unittest.main()

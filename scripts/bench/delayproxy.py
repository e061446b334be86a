#!/usr/bin/env python3
"""A delaying TCP proxy on loopback, for `BENCH_RTT_MS` (this kernel has no netem).

    python3 delayproxy.py --rtt-ms 20 --forward 127.0.0.1:143 --forward 127.0.0.1:110

listens on one free loopback port per --forward target and prints one JSON line,
{"ports": {"127.0.0.1:143": 40001, ...}}, once it is ready. Every byte is held for
RTT/2 in each direction, so a request/response round trip takes RTT longer, but the
bandwidth is not throttled: reading goes on while earlier data waits, as on a long fat
link. Each direction keeps its own queue of (due time, bytes) served by one timer, so order
is kept. Flow control: reading from a side pauses when the far side's socket buffer is
full or more than 64 MiB wait in the queue. At --rtt-ms 0 data is written through at
once, which shows the proxy's own cost. It stops on SIGTERM/SIGINT or when stdin closes.
"""
import argparse
import asyncio
import collections
import json
import signal
import socket
import sys

HIGH_WATER = 64 << 20
LOW_WATER = 16 << 20


class Direction:
    """Bytes read from `src` travel, after `delay` seconds, to `dst`."""

    def __init__(self, loop, delay):
        self.loop = loop
        self.delay = delay
        self.queue = collections.deque()
        self.queued = 0
        self.timer = None
        self.src = None  # transport we read from
        self.dst = None  # transport we write to
        self.eof = False
        self.dst_paused = False
        self.src_paused = False
        self.closed = False

    def feed(self, data):
        if self.closed:
            return
        if self.delay <= 0 and not self.queue and self.dst is not None:
            self.dst.write(data)
            return
        self.queue.append((self.loop.time() + self.delay, data))
        self.queued += len(data)
        if self.queued > HIGH_WATER:
            self._pause_src()
        if self.timer is None and self.dst is not None:
            self.timer = self.loop.call_at(self.queue[0][0], self.flush)

    def flush(self):
        self.timer = None
        if self.dst is None or self.closed:
            return
        now = self.loop.time()
        out = []
        while self.queue and self.queue[0][0] <= now + 0.0002:
            _, data = self.queue.popleft()
            self.queued -= len(data)
            out.append(data)
        if out:
            self.dst.write(b"".join(out) if len(out) > 1 else out[0])
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self.flush)
        else:
            if self.eof:
                self._finish()
        if self.queued < LOW_WATER and not self.dst_paused:
            self._resume_src()

    def set_eof(self):
        self.eof = True
        if not self.queue and self.timer is None:
            self._finish()

    def _finish(self):
        if self.dst is not None and not self.dst.is_closing():
            try:
                if self.dst.can_write_eof():
                    self.dst.write_eof()
                else:
                    self.dst.close()
            except OSError:
                self.dst.close()

    def _pause_src(self):
        if self.src is not None and not self.src_paused:
            self.src_paused = True
            try:
                self.src.pause_reading()
            except (RuntimeError, AttributeError):
                pass

    def _resume_src(self):
        if self.src is not None and self.src_paused:
            self.src_paused = False
            try:
                self.src.resume_reading()
            except (RuntimeError, AttributeError):
                pass

    def dst_pause(self):
        self.dst_paused = True
        self._pause_src()

    def dst_resume(self):
        self.dst_paused = False
        if self.queued < LOW_WATER:
            self._resume_src()

    def close(self):
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()


class Side(asyncio.Protocol):
    """One TCP connection of a proxied pair. `inbound` carries what this side reads,
    `outbound` what it writes."""

    def __init__(self, inbound, outbound, on_lost):
        self.inbound = inbound
        self.outbound = outbound
        self.on_lost = on_lost
        self.transport = None
        self.eofs = 0

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.inbound.src = transport
        self.outbound.dst = transport
        if self.outbound.queue and self.outbound.timer is None:
            self.outbound.timer = self.outbound.loop.call_at(self.outbound.queue[0][0], self.outbound.flush)

    def data_received(self, data):
        self.inbound.feed(data)

    def eof_received(self):
        self.inbound.set_eof()
        return True  # keep the write half open until the other direction finishes

    def pause_writing(self):
        self.outbound.dst_pause()

    def resume_writing(self):
        self.outbound.dst_resume()

    def connection_lost(self, exc):
        self.on_lost(self)


class Pair:
    def __init__(self, loop, delay):
        self.up = Direction(loop, delay)    # client -> server
        self.down = Direction(loop, delay)  # server -> client
        self.sides = []
        self.lost = 0

    def side_lost(self, side):
        self.lost += 1
        # When one side goes away, let the queued bytes towards the other side drain, then close it.
        for other in self.sides:
            if other is not side and other.transport is not None and not other.transport.is_closing():
                direction = other.outbound
                if direction.queue:
                    direction.set_eof()
                    loop = direction.loop
                    due = direction.queue[-1][0] + 0.05
                    loop.call_at(due, other.transport.close)
                else:
                    other.transport.close()
        if self.lost >= 2:
            self.up.close()
            self.down.close()


async def serve(host, port, target_host, target_port, delay):
    loop = asyncio.get_running_loop()

    def client_factory():
        pair = Pair(loop, delay)
        client = Side(pair.up, pair.down, pair.side_lost)
        pair.sides.append(client)

        async def connect_upstream():
            try:
                _, server = await loop.create_connection(
                    lambda: Side(pair.down, pair.up, pair.side_lost), target_host, target_port)
                pair.sides.append(server)
            except OSError:
                if client.transport is not None:
                    client.transport.close()

        loop.create_task(connect_upstream())
        return client

    return await loop.create_server(client_factory, host, port, reuse_address=True, backlog=512)


async def main_async(args):
    delay = args.rtt_ms / 2000.0
    servers = {}
    for target in args.forward:
        host, _, port = target.rpartition(":")
        srv = await serve("127.0.0.1", 0, host or "127.0.0.1", int(port), delay)
        servers[target] = srv
    ports = {t: s.sockets[0].getsockname()[1] for t, s in servers.items()}
    sys.stdout.write(json.dumps({"ports": ports, "rtt_ms": args.rtt_ms}) + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.stdin_watch:
        loop.add_reader(sys.stdin.fileno(), lambda: (sys.stdin.buffer.raw.read(4096) or stop.set()))
    await stop.wait()
    for s in servers.values():
        s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rtt-ms", type=float, default=20.0, help="added round-trip time (half each way)")
    ap.add_argument("--forward", action="append", required=True, help="HOST:PORT to forward to (repeatable)")
    ap.add_argument("--stdin-watch", action="store_true", help="exit when stdin reaches EOF")
    args = ap.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()

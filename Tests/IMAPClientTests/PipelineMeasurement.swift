import Foundation
import IMAPClient
import Logging
import MailModel
import MailNet
import MailStore
import MailTestSupport
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// Pipelined versus one-at-a-time fetch and append rates against the Dovecot
/// fixture, directly and through a proxy that adds latency. A measurement,
/// not an assertion: it runs only with MAILFERRY_IMAP_BENCH=1 and prints.
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["MAILFERRY_IMAP_BENCH"] == "1"))
struct PipelineMeasurement {
    static let logger = Logger(label: "bench.imap")

    /// `multiAppend`: messages per MULTIAPPEND (1: one APPEND each).
    /// `window`: confirmations awaited once this many are outstanding, as the
    /// transfer Executor does (nil: all appended first, then all awaited).
    func run(port: Int, f: DovecotFixture, depth: Int, batch: Int, count: Int, label: String,
             multiAppend: Int = 1, window: Int? = nil) async throws {
        let account = f.makeUser(prefix: "bench")
        let settings = ConnectionSettings(host: f.host, port: port, tls: .implicit, caFile: f.caFile)
        let store = try await IMAPStore.open(settings: settings, credentials: .password(user: account.user, account.password),
                                             options: IMAPStoreOptions(pipelineDepth: depth, fetchBatchSize: batch,
                                                                       multiAppendMessages: multiAppend),
                                             logger: Self.logger)
        let body = Array(("From: a@example.com\r\nSubject: bench\r\n\r\n" + String(repeating: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", count: 64)).utf8)
        let clock = ContinuousClock()
        var t0 = clock.now
        var pending: [PendingAppend] = []
        var awaited = 0
        for _ in 0..<count {
            pending.append(try await store.append(to: .inbox, AppendRequest(flags: [.seen]), body: .bytes(body)))
            if let window, pending.count - awaited >= window {
                _ = try await pending[awaited].result()
                awaited += 1
            }
        }
        for p in pending[awaited...] { _ = try await p.result() }
        let appendTime = clock.now - t0
        let listing = try await store.listMessages(in: .inbox)
        t0 = clock.now
        let n = ByteTotal()
        _ = try await store.fetchMessages(listing.messages.map(\.id), in: .inbox) { _, b in
            for try await c in b { n.add(c.readableBytes) }
        }
        let fetchTime = clock.now - t0
        let counts = store.appendCounts
        try await store.close()
        func rate(_ d: Duration) -> String {
            let s = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
            return String(format: "%.0f msg/s", Double(count) / s)
        }
        let how = multiAppend > 1 ? "MULTIAPPEND ≤\(multiAppend)" : "APPEND each"
        let win = window.map { ", window \($0)" } ?? ""
        print("BENCH \(label): depth \(depth), batch \(batch), \(how)\(win), \(count) × \(body.count) B: append \(rate(appendTime)) (\(counts.commands) APPEND commands), fetch \(rate(fetchTime))")
    }

    @Test func pipelinedVersusUnpipelined() async throws {
        let f = try DovecotFixture.shared()
        // (depth, fetch batch, messages per MULTIAPPEND, confirmation window)
        let configs: [(Int, Int, Int, Int?)] = [
            (1, 1, 1, nil), (16, 32, 1, nil), (16, 32, 32, nil),
            (16, 32, 1, 8), (16, 32, 32, 8), (16, 32, 1, 64), (16, 32, 32, 64),
        ]
        // Rounds interleave the configurations, so that a busy machine skews them alike.
        let rounds = Int(ProcessInfo.processInfo.environment["MAILFERRY_IMAP_BENCH_ROUNDS"] ?? "") ?? 3
        for (label, delay) in [("direct", 0), ("+2 ms each way", 2)] {
            let proxy = try await DelayProxy.start(upstreamPort: f.imapsPort, delayMS: delay)
            let count = delay == 0 ? 500 : 200
            for _ in 0..<(delay == 0 ? rounds : 1) {
                for (depth, batch, multi, window) in configs {
                    try await run(port: proxy.port, f: f, depth: depth, batch: batch, count: count, label: label,
                                  multiAppend: multi, window: window)
                }
            }
            try await proxy.stop()
        }
    }
}

final class ByteTotal: @unchecked Sendable {
    private let lock = NIOLock()
    private var n = 0
    func add(_ k: Int) { lock.withLock { n += k } }
}

/// A TCP proxy on 127.0.0.1 that delays every chunk by `delayMS` in each direction.
final class DelayProxy: Sendable {
    let port: Int
    private let channel: Channel

    private init(port: Int, channel: Channel) {
        self.port = port
        self.channel = channel
    }

    static func start(upstreamPort: Int, delayMS: Int) async throws -> DelayProxy {
        let group = MultiThreadedEventLoopGroup.singleton
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { inbound in
                inbound.setOption(ChannelOptions.autoRead, value: false).flatMap {
                    ClientBootstrap(group: inbound.eventLoop).connect(host: "127.0.0.1", port: upstreamPort)
                }.flatMap { outbound in
                    let a = DelayForwarder(peer: outbound, delay: delayMS)
                    let b = DelayForwarder(peer: inbound, delay: delayMS)
                    return outbound.pipeline.addHandler(b).flatMap { inbound.pipeline.addHandler(a) }.flatMap {
                        inbound.setOption(ChannelOptions.autoRead, value: true)
                    }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return DelayProxy(port: server.localAddress?.port ?? 0, channel: server)
    }

    func stop() async throws { try await channel.close() }
}

final class DelayForwarder: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let peer: Channel
    let delay: Int
    init(peer: Channel, delay: Int) {
        self.peer = peer
        self.delay = delay
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        let peer = self.peer
        if delay == 0 {
            peer.writeAndFlush(bytes, promise: nil)
        } else {
            // Deliver in order, `delay` ms after arrival.
            context.eventLoop.scheduleTask(in: .milliseconds(Int64(delay))) {
                peer.writeAndFlush(bytes, promise: nil)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        peer.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

import Foundation
import MailModel
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fault the proxy injects into one connection.
public enum ProxyFault: Sendable, Hashable, CustomStringConvertible {
    public enum Direction: String, Sendable, Hashable {
        /// What the client (mailferry) sends to the server.
        case toServer
        /// What the server sends back to the client.
        case toClient
    }

    /// After `bytes` have gone through in `direction`, close both sides.
    case cutAfter(bytes: Int, direction: Direction)
    /// After `bytes` have gone through in `direction`, pass nothing more that way
    /// (the connection stays open: a hung server or a black-holed link).
    case stallAfter(bytes: Int, direction: Direction)
    /// Pass at most `bytesPerChunk` every `interval` in `direction`.
    case trickle(bytesPerChunk: Int, interval: Duration, direction: Direction)
    /// Flip the bits of the byte at offset `byte` (from 0) in `direction` (XOR `mask`).
    case corrupt(byte: Int, direction: Direction, mask: UInt8)
    /// Delay every chunk by `oneWay` in both directions (a round trip gains twice that).
    case latency(oneWay: Duration)

    public var description: String {
        switch self {
        case .cutAfter(let n, let d): return "cut after \(n) bytes \(d.rawValue)"
        case .stallAfter(let n, let d): return "stall after \(n) bytes \(d.rawValue)"
        case .trickle(let n, let i, let d): return "trickle \(n) bytes per \(i) \(d.rawValue)"
        case .corrupt(let n, let d, let m): return "corrupt byte \(n) \(d.rawValue) (xor \(m))"
        case .latency(let l): return "latency \(l) each way"
        }
    }
}

/// A TCP proxy on loopback that sits between a client and a server (usually the Dovecot
/// fixture) and injects faults: cuts after N bytes in either direction, stalls, trickles,
/// corrupted bytes, refused connections for a while, and added latency. Connection `n`
/// (from 0) gets the faults `plan(n)`; the plan can be replaced while the proxy runs.
/// Faults are deterministic for a given plan; `seededCuts` makes a random but reproducible one.
public final class FaultProxy: Sendable {
    public let host = "127.0.0.1"
    public let port: Int
    public let upstreamHost: String
    public let upstreamPort: Int
    private let channel: Channel
    private let shared: NIOLockedValueBox<Shared>

    /// What the proxy has done so far.
    public struct Statistics: Sendable, Hashable {
        public var connections = 0
        public var refused = 0
        public var bytesToServer = 0
        public var bytesToClient = 0
        /// Cuts, stalls and corruptions that actually happened (latency and trickle not counted).
        public var faultsInjected = 0
        public var injected: [String] = []
        /// Connections turned away above `limitConnections(to:)`, and the most open at once.
        public var overLimit = 0
        public var peakOpen = 0
    }

    struct Shared {
        var plan: @Sendable (Int) -> [ProxyFault]
        var refuseUntil: NIODeadline?
        var refuseCount = 0
        var stats = Statistics()
        var open: [Channel] = []
        var live = 0
        var connectionLimit: Int?
        var limitGreeting: [UInt8] = []
    }

    private init(port: Int, upstreamHost: String, upstreamPort: Int, channel: Channel, shared: NIOLockedValueBox<Shared>) {
        self.port = port
        self.upstreamHost = upstreamHost
        self.upstreamPort = upstreamPort
        self.channel = channel
        self.shared = shared
    }

    /// Starts a proxy to `upstreamHost:upstreamPort` where every connection gets `faults`.
    public static func start(upstreamHost: String = "127.0.0.1", upstreamPort: Int,
                             faults: [ProxyFault] = []) async throws -> FaultProxy {
        try await start(upstreamHost: upstreamHost, upstreamPort: upstreamPort) { _ in faults }
    }

    /// Starts a proxy where connection `n` (from 0) gets `plan(n)`.
    public static func start(upstreamHost: String = "127.0.0.1", upstreamPort: Int,
                             plan: @escaping @Sendable (_ connection: Int) -> [ProxyFault]) async throws -> FaultProxy {
        let shared = NIOLockedValueBox(Shared(plan: plan))
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(ChannelOptions.autoRead, value: false)
            .childChannelInitializer { inbound in
                let decision = shared.withLockedValue { s -> (refuse: Bool, index: Int, faults: [ProxyFault]) in
                    if let until = s.refuseUntil, NIODeadline.now() < until {
                        s.stats.refused += 1
                        return (true, -1, [])
                    }
                    if s.refuseCount > 0 {
                        s.refuseCount -= 1
                        s.stats.refused += 1
                        return (true, -1, [])
                    }
                    if let limit = s.connectionLimit, s.live >= limit {
                        s.stats.overLimit += 1
                        return (true, -2, [])
                    }
                    let index = s.stats.connections
                    s.stats.connections += 1
                    s.live += 1
                    s.stats.peakOpen = max(s.stats.peakOpen, s.live)
                    s.open.append(inbound)
                    return (false, index, s.plan(index))
                }
                if decision.refuse {
                    if decision.index == -2 {
                        // Above the connection limit: the server's last words, then it hangs up.
                        let greeting = shared.withLockedValue { $0.limitGreeting }
                        guard !greeting.isEmpty else { return inbound.close() }
                        return inbound.eventLoop.makeCompletedFuture {
                            try inbound.pipeline.syncOperations.addHandler(LastWordsHandler(greeting))
                        }
                    }
                    // Closed at once, before a byte is read or sent, like an overloaded server.
                    return inbound.close()
                }
                inbound.closeFuture.whenComplete { _ in shared.withLockedValue { $0.live -= 1 } }
                let relay = Relay(client: inbound, faults: decision.faults, shared: shared)
                return inbound.eventLoop.makeCompletedFuture {
                    try inbound.pipeline.syncOperations.addHandler(
                        RelaySide(relay: relay, direction: .toServer,
                                  upstream: (upstreamHost, upstreamPort), shared: shared))
                }
            }
        let channel = try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
        guard let port = channel.localAddress?.port else {
            try? await channel.close()
            throw MailError(.storage, scope: .local, "fault proxy: no local port")
        }
        return FaultProxy(port: port, upstreamHost: upstreamHost, upstreamPort: upstreamPort, channel: channel, shared: shared)
    }

    /// Replaces the plan for connections accepted from now on.
    public func setPlan(_ plan: @escaping @Sendable (_ connection: Int) -> [ProxyFault]) {
        shared.withLockedValue { $0.plan = plan }
    }

    /// Every new connection from now on gets `faults`.
    public func setFaults(_ faults: [ProxyFault]) {
        setPlan { _ in faults }
    }

    /// Refuses new connections (accepts and closes them at once) for `duration`.
    public func refuseConnections(for duration: Duration) {
        let until = NIODeadline.now() + duration.nanosecondsAmount
        shared.withLockedValue { $0.refuseUntil = until }
    }

    /// At most `limit` proxied connections open at once (nil: no limit). A connection
    /// above it is sent `greeting` (e.g. Dovecot's `* BYE [UNAVAILABLE] Maximum number
    /// of connections ...` line) and closed, as a server with a connection limit does.
    public func limitConnections(to limit: Int?, greeting: String = "") {
        shared.withLockedValue {
            $0.connectionLimit = limit
            $0.limitGreeting = Array(greeting.utf8)
        }
    }

    /// Refuses (accepts and closes at once) the next `count` new connections.
    public func refuseNextConnections(_ count: Int) {
        shared.withLockedValue { $0.refuseCount = count }
    }

    public var statistics: Statistics { shared.withLockedValue { $0.stats } }

    /// Closes every proxied connection now (both sides), as a network drop would.
    public func dropAllConnections() {
        let open = shared.withLockedValue { s -> [Channel] in
            defer { s.open.removeAll() }
            return s.open
        }
        for c in open { c.close(promise: nil) }
    }

    /// Stops listening and closes every connection.
    public func stop() async {
        dropAllConnections()
        try? await channel.close()
    }

    /// A reproducible random plan for soak tests: each of the first `faultyConnections`
    /// connections is cut once, in a random direction, after a random number of bytes in
    /// `1...maxOffset`; later connections are clean, so a job can always finish.
    public static func seededCuts(seed: UInt64, faultyConnections: Int, maxOffset: Int,
                                  latency: Duration? = nil) -> @Sendable (Int) -> [ProxyFault] {
        var rng = SplitMix64(seed: seed)
        var cuts: [ProxyFault] = []
        for _ in 0..<max(0, faultyConnections) {
            let offset = Int(rng.next() % UInt64(max(1, maxOffset))) + 1
            let direction: ProxyFault.Direction = rng.next() % 3 == 0 ? .toServer : .toClient
            cuts.append(.cutAfter(bytes: offset, direction: direction))
        }
        let fixed = cuts
        return { n in
            var faults: [ProxyFault] = latency.map { [.latency(oneWay: $0)] } ?? []
            if n < fixed.count { faults.append(fixed[n]) }
            return faults
        }
    }
}

/// A small, fast, seedable generator (SplitMix64) so fault plans are reproducible.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// One proxied connection; everything runs on the client channel's event loop.
final class Relay: @unchecked Sendable {
    private enum Item {
        case data(ByteBuffer)
        case close
    }

    private struct Lane {
        var passed = 0
        var queue: [(ready: NIODeadline, item: Item)] = []
        var draining = false
        var stopped = false
        var nextSlot = NIODeadline.uptimeNanoseconds(0)
    }

    let client: Channel
    var server: Channel?
    private let loop: EventLoop
    private let faults: [ProxyFault]
    private let shared: NIOLockedValueBox<FaultProxy.Shared>
    private var lanes: [ProxyFault.Direction: Lane] = [.toServer: Lane(), .toClient: Lane()]
    private var closed = false

    init(client: Channel, faults: [ProxyFault], shared: NIOLockedValueBox<FaultProxy.Shared>) {
        self.client = client
        self.loop = client.eventLoop
        self.faults = faults
        self.shared = shared
    }

    private var latency: TimeAmount {
        for case .latency(let d) in faults { return d.nanosecondsAmount }
        return .zero
    }

    private func target(_ direction: ProxyFault.Direction) -> Channel? {
        direction == .toServer ? server : client
    }

    private func record(_ fault: String) {
        shared.withLockedValue {
            $0.stats.faultsInjected += 1
            $0.stats.injected.append(fault)
        }
    }

    func received(_ input: ByteBuffer, direction: ProxyFault.Direction) {
        guard var lane = lanes[direction], !lane.stopped else { return }
        var buffer = input
        let start = lane.passed
        var end = start + buffer.readableBytes
        var closeAfter = false
        for fault in faults {
            switch fault {
            case .cutAfter(let n, let d) where d == direction && end >= n && start <= n:
                buffer = buffer.getSlice(at: buffer.readerIndex, length: n - start) ?? ByteBuffer()
                end = n
                closeAfter = true
                lane.stopped = true
                record("\(fault)")
            case .stallAfter(let n, let d) where d == direction && end >= n && start <= n:
                buffer = buffer.getSlice(at: buffer.readerIndex, length: n - start) ?? ByteBuffer()
                end = n
                lane.stopped = true
                record("\(fault)")
            default:
                break
            }
            if lane.stopped { break }
        }
        for case .corrupt(let n, let d, let mask) in faults where d == direction && n >= start && n < end {
            let at = buffer.readerIndex + (n - start)
            if let byte = buffer.getInteger(at: at, as: UInt8.self) {
                buffer.setInteger(byte ^ mask, at: at)
                record("corrupt byte \(n) \(direction.rawValue)")
            }
        }
        lane.passed = end
        let count = buffer.readableBytes
        shared.withLockedValue {
            if direction == .toServer { $0.stats.bytesToServer += count } else { $0.stats.bytesToClient += count }
        }
        let now = NIODeadline.now()
        var trickle: (Int, TimeAmount)?
        for case .trickle(let size, let interval, let d) in faults where d == direction {
            trickle = (max(1, size), interval.nanosecondsAmount)
        }
        if let (size, interval) = trickle {
            while buffer.readableBytes > 0 {
                let piece = buffer.readSlice(length: min(size, buffer.readableBytes)) ?? ByteBuffer()
                let slot = max(now + latency, lane.nextSlot)
                lane.queue.append((slot, .data(piece)))
                lane.nextSlot = slot + interval
            }
        } else if count > 0 {
            lane.queue.append((max(now + latency, lane.queue.last?.ready ?? now), .data(buffer)))
        }
        if closeAfter {
            lane.queue.append((max(now + latency, lane.queue.last?.ready ?? now), .close))
        }
        lanes[direction] = lane
        drain(direction)
    }

    /// One side closed: pass the close on once what is queued has been delivered.
    func sideClosed(_ direction: ProxyFault.Direction) {
        // `direction` is the lane fed by the side that closed.
        guard var lane = lanes[direction] else { return }
        let now = NIODeadline.now()
        lane.queue.append((max(now + latency, lane.queue.last?.ready ?? now), .close))
        lanes[direction] = lane
        drain(direction)
    }

    private func drain(_ direction: ProxyFault.Direction) {
        guard var lane = lanes[direction], !lane.draining else { return }
        let now = NIODeadline.now()
        var flushed = false
        while let first = lane.queue.first, first.ready <= now {
            lane.queue.removeFirst()
            switch first.item {
            case .data(let bytes):
                if let target = target(direction) {
                    target.write(bytes, promise: nil)
                    flushed = true
                }
            case .close:
                if flushed { target(direction)?.flush() }
                lanes[direction] = lane
                closeBoth()
                return
            }
        }
        if flushed { target(direction)?.flush() }
        if let next = lane.queue.first {
            lane.draining = true
            lanes[direction] = lane
            loop.scheduleTask(deadline: next.ready) { [self] in
                lanes[direction]?.draining = false
                drain(direction)
            }
            return
        }
        lanes[direction] = lane
    }

    private func closeBoth() {
        guard !closed else { return }
        closed = true
        lanes[.toServer]?.queue.removeAll()
        lanes[.toClient]?.queue.removeAll()
        client.close(promise: nil)
        server?.close(promise: nil)
    }
}

/// Says `words` when the connection is up, then hangs up.
final class LastWordsHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let words: [UInt8]
    init(_ words: [UInt8]) { self.words = words }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        channel.writeAndFlush(ByteBuffer(bytes: words)).whenComplete { _ in channel.close(promise: nil) }
        context.fireChannelActive()
    }
}

final class RelaySide: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let relay: Relay
    /// The lane this side feeds.
    let direction: ProxyFault.Direction
    /// For the client side: where to connect once the client's connection is active.
    let upstream: (host: String, port: Int)?
    let shared: NIOLockedValueBox<FaultProxy.Shared>?

    init(relay: Relay, direction: ProxyFault.Direction, upstream: (String, Int)? = nil,
         shared: NIOLockedValueBox<FaultProxy.Shared>? = nil) {
        self.relay = relay
        self.direction = direction
        self.upstream = upstream.map { (host: $0.0, port: $0.1) }
        self.shared = shared
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        guard let upstream else { return }
        let inbound = context.channel
        let relay = self.relay
        let shared = self.shared
        ClientBootstrap(group: context.eventLoop)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { outbound in
                outbound.eventLoop.makeCompletedFuture {
                    try outbound.pipeline.syncOperations.addHandler(RelaySide(relay: relay, direction: .toClient))
                }
            }
            .connect(host: upstream.host, port: upstream.port)
            .whenComplete { result in
                switch result {
                case .success(let outbound):
                    relay.server = outbound
                    shared?.withLockedValue { $0.open.append(outbound) }
                    inbound.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in
                        inbound.read()
                    }
                case .failure:
                    inbound.close(promise: nil)
                }
            }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        relay.received(unwrapInboundIn(data), direction: direction)
    }

    func channelInactive(context: ChannelHandlerContext) {
        relay.sideClosed(direction)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

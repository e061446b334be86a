import Foundation
import MailModel
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// One step of a scripted fake server's conversation.
///
/// In text sent by `.send`/`.sendLine`, `$tag` stands for the first word of the last line
/// the client sent (the IMAP tag), so a script can answer whatever tag the client chose.
public enum ScriptStep: Sendable {
    /// Send these bytes as they are.
    case sendBytes([UInt8])
    /// Send this text as it is (add your own CRLF; `$tag` is replaced).
    case send(String)
    /// Send this text followed by CRLF (`$tag` is replaced).
    case sendLine(String)
    /// Read one client line (without CRLF) and check it matches the regular expression
    /// (anchored at the start; case-insensitive). A mismatch is recorded in `failures`
    /// and the connection is closed.
    case expectLine(String)
    /// Read client lines, ignoring them, until one matches the regular expression.
    case skipLinesUntil(String)
    /// Read and discard exactly this many raw bytes (a literal the client sends).
    case expectBytes(Int)
    /// Wait before the next step.
    case sleep(Duration)
    /// Send `bytes` `count` times (a flood of untagged responses, a never-ending line).
    case sendRepeated([UInt8], count: Int)
    /// Send `bytes` in pieces of `chunkSize` with `interval` between them.
    case trickle([UInt8], chunkSize: Int, interval: Duration)
    /// Start server-side TLS here (after answering STARTTLS/STLS). Needs `tls` on the server.
    case startTLS
    /// Close the connection (the client sees EOF).
    case close
    /// Stop: read and send nothing more, keep the connection open until the client closes
    /// it or the server stops. For deadline tests.
    case stall

    /// Send text with CRLF line ends from a multi-line Swift string literal (`\n` -> CRLF).
    public static func sendLines(_ text: String) -> ScriptStep {
        .send(text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\n", with: "\r\n"))
    }
}

/// A certificate and key the scripted server presents.
public struct ServerTLS: Sendable {
    public var certificateFile: String
    public var keyFile: String
    /// TLS from the first byte (imaps/pop3s); otherwise only after a `.startTLS` step.
    public var implicit: Bool

    public init(certificateFile: String, keyFile: String, implicit: Bool) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.implicit = implicit
    }

    /// The Dovecot fixture's certificate for `localhost`/127.0.0.1 (trust it with `fixture.caFile`).
    public static func fixture(_ fixture: DovecotFixture, implicit: Bool) -> ServerTLS {
        ServerTLS(certificateFile: fixture.root + "/tls/server.pem", keyFile: fixture.root + "/tls/server.key",
                  implicit: implicit)
    }

    /// Uses certificates made by `TestCertificates`.
    public init(_ certificates: TestCertificates, implicit: Bool) {
        self.init(certificateFile: certificates.certificateFile, keyFile: certificates.keyFile, implicit: implicit)
    }
}

/// A loopback TCP server that plays a script, for what Dovecot will not do on demand:
/// drops, NO/BAD/-ERR, BYE at odd moments, malformed replies, stalls, floods, lying literals,
/// STARTTLS injection. Each accepted connection plays `script(connectionIndex)`.
///
///     let server = try await ScriptedServer.start([
///         .sendLine("* OK ready"),
///         .expectLine(#"\S+ LOGIN "#),
///         .sendLine("$tag NO [AUTHENTICATIONFAILED] nope"),
///         .close,
///     ])
///     defer { Task { await server.stop() } }
///     ... connect to server.host:server.port ...
///     #expect(server.failures.isEmpty)
public final class ScriptedServer: Sendable {
    public let host = "127.0.0.1"
    public let port: Int
    private let channel: Channel
    private let state: NIOLockedValueBox<ServerState>

    struct ServerState {
        var connections = 0
        var failures: [String] = []
        var received: [[String]] = []
        var finished = 0
        var open: [Channel] = []
    }

    private init(port: Int, channel: Channel, state: NIOLockedValueBox<ServerState>) {
        self.port = port
        self.channel = channel
        self.state = state
    }

    /// Starts a server where every connection plays the same script.
    public static func start(_ script: [ScriptStep], tls: ServerTLS? = nil) async throws -> ScriptedServer {
        try await start(tls: tls) { _ in script }
    }

    /// Starts a server where connection `n` (from 0) plays `script(n)`.
    public static func start(tls: ServerTLS? = nil,
                             script: @escaping @Sendable (_ connection: Int) -> [ScriptStep]) async throws -> ScriptedServer {
        let sslContext: NIOSSLContext?
        if let tls {
            do {
                let configuration = TLSConfiguration.makeServerConfiguration(
                    certificateChain: try NIOSSLCertificate.fromPEMFile(tls.certificateFile).map { .certificate($0) },
                    privateKey: .privateKey(try NIOSSLPrivateKey(file: tls.keyFile, format: .pem)))
                sslContext = try NIOSSLContext(configuration: configuration)
            } catch {
                throw MailError(.tls, scope: .local, "scripted server: cannot load \(tls.certificateFile): \(error)")
            }
        } else {
            sslContext = nil
        }
        let implicitTLS = tls?.implicit == true
        let state = NIOLockedValueBox(ServerState())
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let index = state.withLockedValue { s -> Int in
                        s.connections += 1
                        s.received.append([])
                        s.open.append(channel)
                        return s.connections - 1
                    }
                    let sync = channel.pipeline.syncOperations
                    if implicitTLS, let sslContext {
                        try sync.addHandler(NIOSSLServerHandler(context: sslContext))
                    }
                    try sync.addHandler(ScriptHandler(index: index, steps: script(index), sslContext: sslContext, state: state))
                }
            }
        let channel = try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
        guard let port = channel.localAddress?.port else {
            try? await channel.close()
            throw MailError(.storage, scope: .local, "scripted server: no local port")
        }
        return ScriptedServer(port: port, channel: channel, state: state)
    }

    /// How many connections were accepted.
    public var connectionCount: Int { state.withLockedValue { $0.connections } }
    /// Script mismatches: what was expected and what the client sent.
    public var failures: [String] { state.withLockedValue { $0.failures } }
    /// The lines each connection's client sent, in order.
    public var received: [[String]] { state.withLockedValue { $0.received } }
    /// How many connections ran their script to the end (or were closed by it).
    public var finishedCount: Int { state.withLockedValue { $0.finished } }

    /// Stops listening and closes every connection.
    public func stop() async {
        let open = state.withLockedValue { s -> [Channel] in
            defer { s.open.removeAll() }
            return s.open
        }
        for c in open { try? await c.close() }
        try? await channel.close()
    }
}

/// Plays one connection's script.
final class ScriptHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let index: Int
    private let steps: [ScriptStep]
    private let sslContext: NIOSSLContext?
    private let state: NIOLockedValueBox<ScriptedServer.ServerState>
    private var position = 0
    private var buffer: [UInt8] = []
    private var lastTag = "*"
    private var waiting = false
    private var done = false
    private var context: ChannelHandlerContext?

    init(index: Int, steps: [ScriptStep], sslContext: NIOSSLContext?, state: NIOLockedValueBox<ScriptedServer.ServerState>) {
        self.index = index
        self.steps = steps
        self.sslContext = sslContext
        self.state = state
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { run() }
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        run()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffer += bytes.readBytes(length: bytes.readableBytes) ?? []
        if waiting {
            waiting = false
            run()
        }
    }

    private func run() {
        guard let context, !done, !waiting else { return }
        while position < steps.count {
            let step = steps[position]
            switch step {
            case .sendBytes(let bytes):
                write(context, bytes)
            case .send(let text):
                write(context, Array(substitute(text).utf8))
            case .sendLine(let text):
                write(context, Array((substitute(text) + "\r\n").utf8))
            case .expectLine(let pattern):
                guard let line = takeLine() else { return wait(context) }
                if !matches(line, pattern) {
                    fail("connection \(index), step \(position): expected a line matching /\(pattern)/, got \(show(line))")
                    context.close(promise: nil)
                    return
                }
            case .skipLinesUntil(let pattern):
                guard let line = takeLine() else { return wait(context) }
                if !matches(line, pattern) { continue }
            case .expectBytes(let count):
                guard buffer.count >= count else { return wait(context) }
                buffer.removeFirst(count)
            case .sleep(let duration):
                position += 1
                waiting = true
                context.eventLoop.scheduleTask(in: duration.nanosecondsAmount) { [self] in
                    waiting = false
                    run()
                }
                return
            case .sendRepeated(let bytes, let count):
                var chunk = context.channel.allocator.buffer(capacity: bytes.count)
                chunk.writeBytes(bytes)
                for _ in 0..<count {
                    context.write(wrapOutboundOut(chunk), promise: nil)
                }
                context.flush()
            case .trickle(let bytes, let chunkSize, let interval):
                position += 1
                trickle(context, ArraySlice(bytes), chunkSize: max(1, chunkSize), interval: interval)
                return
            case .startTLS:
                guard let sslContext else {
                    fail("connection \(index): .startTLS in a script of a server without TLS")
                    context.close(promise: nil)
                    return
                }
                // Whatever the client sent before the handshake was plaintext: drop it.
                buffer.removeAll()
                do {
                    try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext), position: .first)
                } catch {
                    fail("connection \(index): cannot start TLS: \(error)")
                    context.close(promise: nil)
                    return
                }
            case .close:
                position = steps.count
                finish()
                context.close(promise: nil)
                return
            case .stall:
                position = steps.count
                finish()
                waiting = true
                return
            }
            position += 1
        }
        finish()
    }

    private func wait(_ context: ChannelHandlerContext) {
        waiting = true
    }

    private func trickle(_ context: ChannelHandlerContext, _ rest: ArraySlice<UInt8>, chunkSize: Int, interval: Duration) {
        guard !rest.isEmpty else {
            run()
            return
        }
        let piece = rest.prefix(chunkSize)
        write(context, Array(piece))
        waiting = true
        context.eventLoop.scheduleTask(in: interval.nanosecondsAmount) { [self] in
            waiting = false
            guard let context = self.context else { return }
            trickle(context, rest.dropFirst(piece.count), chunkSize: chunkSize, interval: interval)
        }
    }

    private func write(_ context: ChannelHandlerContext, _ bytes: [UInt8]) {
        var out = context.channel.allocator.buffer(capacity: bytes.count)
        out.writeBytes(bytes)
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }

    private func takeLine() -> String? {
        guard let lf = buffer.firstIndex(of: 0x0A) else { return nil }
        var line = Array(buffer[..<lf])
        buffer.removeSubrange(...lf)
        if line.last == 0x0D { line.removeLast() }
        let text = String(decoding: line, as: UTF8.self)
        if let first = text.split(separator: " ", maxSplits: 1).first { lastTag = String(first) }
        state.withLockedValue { s in
            if index < s.received.count { s.received[index].append(text) }
        }
        return text
    }

    private func matches(_ line: String, _ pattern: String) -> Bool {
        line.range(of: "^(?:" + pattern + ")", options: [.regularExpression, .caseInsensitive]) != nil
    }

    private func substitute(_ text: String) -> String {
        text.replacingOccurrences(of: "$tag", with: lastTag)
    }

    private func show(_ line: String) -> String {
        let shown = line.count > 200 ? String(line.prefix(200)) + "…" : line
        return "\"\(shown)\""
    }

    private func fail(_ message: String) {
        state.withLockedValue { $0.failures.append(message) }
        finish()
    }

    private func finish() {
        guard !done else { return }
        done = true
        state.withLockedValue { $0.finished += 1 }
    }
}

extension Duration {
    var nanosecondsAmount: TimeAmount {
        let (seconds, attoseconds) = components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

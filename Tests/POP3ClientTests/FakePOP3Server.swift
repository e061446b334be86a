@preconcurrency import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import POP3Core

/// A scripted POP3 server for what Dovecot will not do on demand: no CAPA,
/// no UIDL, APOP only, IN-USE and LOGIN-DELAY, drops mid-reply, silence,
/// bare-LF replies, Office 365's two-step XOAUTH2. It speaks enough RFC 1939
/// to be driven by the real client, pipelined commands included.
final class FakePOP3Server: @unchecked Sendable {
    struct Config: Sendable {
        var greeting = "+OK fake POP3 server ready"
        /// An APOP timestamp appended to the greeting.
        var apopStamp: String?
        /// CAPA lines; nil answers CAPA with -ERR (an old server).
        var capa: [String]? = ["TOP", "UIDL", "USER", "PIPELINING", "RESP-CODES", "SASL PLAIN LOGIN"]
        var uidl = true
        var allowUser = true
        var allowAPOP = false
        var user = "alice"
        var password = "s3cret pass"
        /// Accepted XOAUTH2 token; XOAUTH2 only in the two-step form (as Office 365).
        var oauthToken: String?
        /// Reply to PASS (and AUTH) instead of +OK, e.g. "-ERR [IN-USE] locked".
        var loginError: String?
        /// End lines with LF only.
        var bareLF = false
        /// On the first connection, close the socket halfway through the body of RETR n.
        var dropDuringRetr: Int?
        /// Never send anything (not even the greeting).
        var silent = false
        /// Stop answering once logged in.
        var silentAfterLogin = false
        var messages: [[UInt8]] = []
    }

    let config: Config
    private let group: EventLoopGroup
    private var channel: Channel?
    let state = NIOLockedValueBox(SharedState())

    struct SharedState {
        var connections = 0
        var commands: [String] = []
        /// Messages removed by a committed QUIT.
        var deleted: Set<Int> = []
        var retrieved: [Int] = []
    }

    var port: Int { channel?.localAddress?.port ?? 0 }

    init(_ config: Config) throws {
        self.config = config
        group = MultiThreadedEventLoopGroup.singleton
        let cfg = config
        let st = state
        channel = try ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    let n = st.withLockedValue { s -> Int in
                        s.connections += 1
                        return s.connections
                    }
                    try ch.pipeline.syncOperations.addHandler(FakePOP3Handler(config: cfg, state: st, connection: n))
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
    }

    func stop() {
        try? channel?.close().wait()
    }

    var commands: [String] { state.withLockedValue { $0.commands } }
    var connections: Int { state.withLockedValue { $0.connections } }
    var deleted: Set<Int> { state.withLockedValue { $0.deleted } }
}

private final class FakePOP3Handler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let config: FakePOP3Server.Config
    let state: NIOLockedValueBox<FakePOP3Server.SharedState>
    let connection: Int
    var buffer = ByteBuffer()
    var loggedIn = false
    var pendingUser: String?
    var saslMechanism: String?
    var marked: Set<Int> = []
    var closed = false

    init(config: FakePOP3Server.Config, state: NIOLockedValueBox<FakePOP3Server.SharedState>, connection: Int) {
        self.config = config
        self.state = state
        self.connection = connection
    }

    var eol: String { config.bareLF ? "\n" : "\r\n" }

    func channelActive(context: ChannelHandlerContext) {
        guard !config.silent else { return }
        var g = config.greeting
        if let stamp = config.apopStamp { g += " " + stamp }
        send(context, g + eol)
    }

    func send(_ context: ChannelHandlerContext, _ s: String) {
        send(context, Array(s.utf8))
    }

    func send(_ context: ChannelHandlerContext, _ bytes: [UInt8]) {
        guard !closed else { return }
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: bytes)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var d = unwrapInboundIn(data)
        buffer.writeBuffer(&d)
        while !closed, let lf = buffer.readableBytesView.firstIndex(of: 0x0A) {
            let len = lf - buffer.readerIndex
            var line = buffer.readBytes(length: len) ?? []
            buffer.moveReaderIndex(forwardBy: 1)
            if line.last == 0x0D { line.removeLast() }
            handle(context, line)
        }
        buffer.discardReadBytes()
    }

    func multiLine(_ context: ChannelHandlerContext, _ status: String, _ body: [UInt8]) {
        var out = ByteBuffer(string: status + eol)
        var stuffed = POP3MultiLine.stuffed(ByteBuffer(bytes: body))
        if config.bareLF {
            // The encoder ends with ".\r\n" (and CRLF for a body lacking one).
            var bytes = Array(stuffed.readableBytesView)
            bytes.removeLast(3)
            if bytes.suffix(2) == [0x0D, 0x0A] && body.last != 0x0A { bytes.removeLast(2); bytes.append(0x0A) }
            bytes += Array(".\n".utf8)
            stuffed = ByteBuffer(bytes: bytes)
        }
        out.writeBuffer(&stuffed)
        send(context, Array(out.readableBytesView))
    }

    func handle(_ context: ChannelHandlerContext, _ line: [UInt8]) {
        let text = String(decoding: line, as: UTF8.self)
        state.withLockedValue { $0.commands.append(text) }
        if config.silentAfterLogin && loggedIn { return }
        if let mech = saslMechanism {
            saslMechanism = nil
            if text == "*" { return send(context, "-ERR cancelled" + eol) }
            let decoded = Base64.decode(text).map { String(decoding: $0, as: UTF8.self) } ?? ""
            switch mech {
            case "XOAUTH2":
                let expected = "user=\(config.user)\u{01}auth=Bearer \(config.oauthToken ?? "")\u{01}\u{01}"
                return login(context, ok: decoded == expected)
            case "PLAIN":
                return login(context, ok: decoded == "\u{0}\(config.user)\u{0}\(config.password)")
            case "OAUTHBEARER":
                return login(context, ok: decoded.hasPrefix("n,a=\(config.user),\u{01}")
                             && decoded.contains("\u{01}auth=Bearer \(config.oauthToken ?? "")\u{01}\u{01}"))
            default:
                return send(context, "-ERR unknown" + eol)
            }
        }
        let words = text.split(separator: " ", maxSplits: 1).map(String.init)
        let keyword = words.first?.uppercased() ?? ""
        let arg = words.count > 1 ? words[1] : ""
        func number() -> Int? {
            guard let n = Int(arg.split(separator: " ").first ?? ""), n >= 1, n <= config.messages.count, !marked.contains(n) else { return nil }
            return n
        }
        let visible = config.messages.indices.map { $0 + 1 }.filter { n in
            !marked.contains(n) && !state.withLockedValue { $0.deleted.contains(n) }
        }
        switch keyword {
        case "CAPA":
            guard let capa = config.capa else { return send(context, "-ERR unknown command" + eol) }
            send(context, "+OK capabilities follow" + eol + capa.map { $0 + eol }.joined() + "." + eol)
        case "USER" where !loggedIn:
            guard config.allowUser else { return send(context, "-ERR USER not allowed, use APOP" + eol) }
            pendingUser = arg
            send(context, "+OK" + eol)
        case "PASS" where !loggedIn:
            login(context, ok: pendingUser == config.user && arg == config.password)
        case "APOP" where !loggedIn:
            guard config.allowAPOP, let stamp = config.apopStamp else { return send(context, "-ERR no APOP" + eol) }
            let parts = arg.split(separator: " ").map(String.init)
            let digest = md5Hex(stamp + config.password)
            login(context, ok: parts.count == 2 && parts[0] == config.user && parts[1] == digest)
        case "AUTH" where !loggedIn:
            let parts = arg.split(separator: " ").map(String.init)
            let mech = parts.first?.uppercased() ?? ""
            if mech == "XOAUTH2" || mech == "OAUTHBEARER", config.oauthToken != nil {
                // Office 365: only the two-step form works.
                guard parts.count == 1 else { return send(context, "-ERR Protocol error" + eol) }
                saslMechanism = mech
                return send(context, "+ " + eol)
            }
            if mech == "PLAIN" {
                if parts.count == 2 {
                    saslMechanism = mech
                    return handle(context, Array(parts[1].utf8))
                }
                saslMechanism = mech
                return send(context, "+ " + eol)
            }
            send(context, "-ERR unsupported mechanism" + eol)
        case _ where !loggedIn:
            send(context, "-ERR log in first" + eol)
        case "STAT":
            let size = visible.reduce(0) { $0 + config.messages[$1 - 1].count }
            send(context, "+OK \(visible.count) \(size)" + eol)
        case "LIST":
            if !arg.isEmpty {
                guard let n = number() else { return send(context, "-ERR no such message" + eol) }
                return send(context, "+OK \(n) \(config.messages[n - 1].count)" + eol)
            }
            send(context, "+OK" + eol + visible.map { "\($0) \(config.messages[$0 - 1].count)" + eol }.joined() + "." + eol)
        case "UIDL":
            guard config.uidl else { return send(context, "-ERR unknown command" + eol) }
            send(context, "+OK" + eol + visible.map { "\($0) uid-\($0)" + eol }.joined() + "." + eol)
        case "TOP":
            guard let n = number() else { return send(context, "-ERR no such message" + eol) }
            let m = config.messages[n - 1]
            let header = headerBlock(m)
            multiLine(context, "+OK", header)
        case "RETR":
            guard let n = number() else { return send(context, "-ERR no such message" + eol) }
            state.withLockedValue { $0.retrieved.append(n) }
            let m = config.messages[n - 1]
            if config.dropDuringRetr == n && connection == 1 {
                var stuffed = Array(POP3MultiLine.stuffed(ByteBuffer(bytes: m)).readableBytesView)
                stuffed = Array(stuffed.prefix(max(1, stuffed.count / 2)))
                send(context, Array("+OK \(m.count) octets\r\n".utf8) + stuffed)
                closed = true
                context.close(promise: nil)
                return
            }
            multiLine(context, "+OK \(m.count) octets", m)
        case "DELE":
            guard let n = number() else { return send(context, "-ERR no such message" + eol) }
            marked.insert(n)
            send(context, "+OK marked" + eol)
        case "RSET":
            marked = []
            send(context, "+OK" + eol)
        case "NOOP":
            send(context, "+OK" + eol)
        case "QUIT":
            let m = marked
            state.withLockedValue { $0.deleted.formUnion(m) }
            send(context, "+OK bye" + eol)
            closed = true
            context.close(promise: nil)
        default:
            send(context, "-ERR unknown command" + eol)
        }
    }

    func login(_ context: ChannelHandlerContext, ok: Bool) {
        if let e = config.loginError { return send(context, e + eol) }
        if ok {
            loggedIn = true
            send(context, "+OK logged in" + eol)
        } else {
            send(context, "-ERR [AUTH] invalid credentials" + eol)
        }
    }

    func headerBlock(_ m: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        var lineStart = true
        while i < m.count {
            if lineStart {
                if m[i] == 0x0A { out.append(0x0A); return out }
                if m[i] == 0x0D, i + 1 < m.count, m[i + 1] == 0x0A { out += [0x0D, 0x0A]; return out }
            }
            out.append(m[i])
            lineStart = m[i] == 0x0A
            i += 1
        }
        return out
    }
}

func md5Hex(_ s: String) -> String {
    Insecure.MD5.hash(data: Array(s.utf8)).map { b in
        let h = String(b, radix: 16)
        return h.count == 1 ? "0" + h : h
    }.joined()
}

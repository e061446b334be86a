import Foundation
import NIOCore
import NIOPosix

/// A scripted POP3 server on 127.0.0.1 (plaintext) for what Dovecot will not
/// do on demand: refuse an OAuth2 token as expired in the middle of a run,
/// and drop the connection halfway through. It speaks just enough POP3 for
/// POP3Store: CAPA, USER/PASS, AUTH XOAUTH2, STAT, UIDL, LIST, TOP, RETR,
/// DELE, NOOP, RSET, QUIT.
final class FakePOP3: @unchecked Sendable {
    struct Config: Sendable {
        var user = "alice"
        var password: String?
        var acceptedTokens: Set<String> = []
        var messages: [String] = []
        /// Close the connection instead of answering RETR number n (counted over all sessions).
        var dropAtRetr: Int?
        /// Tokens accepted after the drop (the old ones have "expired").
        var tokensAfterDrop: Set<String>?
    }

    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var channel: Channel?
    private let lock = NSLock()
    private var config: Config
    private var retrCount = 0
    private var _log: [String] = []

    var port: Int { channel?.localAddress?.port ?? 0 }
    /// Every command received (AUTH blobs included, to check what was sent).
    var log: [String] {
        lock.lock()
        defer { lock.unlock() }
        return _log
    }

    init(_ config: Config) async throws {
        self.config = config
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [weak self] ch in
                guard let self else { return ch.eventLoop.makeSucceededVoidFuture() }
                return ch.pipeline.addHandler(Session(server: self))
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func shutdown() async {
        try? await channel?.close().get()
        try? await group.shutdownGracefully()
    }

    fileprivate func with<T>(_ body: (inout Config, inout Int, inout [String]) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(&config, &retrCount, &_log)
    }

    private final class Session: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let server: FakePOP3
        var buffer = ByteBuffer()
        var authenticated = false
        var pendingUser: String?
        var awaitingSASL = false
        var deleted = Set<Int>()

        init(server: FakePOP3) { self.server = server }

        func channelActive(context: ChannelHandlerContext) {
            write(context, "+OK fake POP3 ready\r\n")
        }

        func write(_ context: ChannelHandlerContext, _ s: String) {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: s)), promise: nil)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var chunk = unwrapInboundIn(data)
            buffer.writeBuffer(&chunk)
            while let line = nextLine() {
                handle(line, context)
                if !context.channel.isActive { return }
            }
        }

        func nextLine() -> String? {
            let view = buffer.readableBytesView
            guard let i = view.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
            let len = i - view.startIndex + 1
            guard let s = buffer.readString(length: len) else { return nil }
            return s.trimmingCharacters(in: CharacterSet(charactersIn: "\r\n"))
        }

        func tokenFrom(_ b64: String) -> String? {
            guard let d = Data(base64Encoded: b64), let s = String(data: d, encoding: .utf8) else { return nil }
            guard let r = s.range(of: "auth=Bearer ") else { return nil }
            return String(s[r.upperBound...].prefix { $0 != "\u{1}" })
        }

        func finishSASL(_ blob: String, _ context: ChannelHandlerContext) {
            let token = tokenFrom(blob)
            let ok = server.with { cfg, _, _ in token.map { cfg.acceptedTokens.contains($0) } ?? false }
            if ok {
                authenticated = true
                write(context, "+OK logged in\r\n")
            } else {
                write(context, "-ERR [AUTH] invalid or expired token\r\n")
            }
        }

        func handle(_ line: String, _ context: ChannelHandlerContext) {
            server.with { _, _, log in log.append(line) }
            if awaitingSASL {
                awaitingSASL = false
                finishSASL(line, context)
                return
            }
            let parts = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            let cmd = parts.first?.uppercased() ?? ""
            let messages = server.with { cfg, _, _ in cfg.messages }
            func number() -> Int? {
                guard parts.count > 1, let n = Int(parts[1]), n >= 1, n <= messages.count, !deleted.contains(n) else { return nil }
                return n
            }
            switch cmd {
            case "CAPA":
                write(context, "+OK\r\nUSER\r\nUIDL\r\nTOP\r\nSASL XOAUTH2\r\n.\r\n")
            case "USER":
                pendingUser = parts.count > 1 ? parts[1] : nil
                write(context, "+OK\r\n")
            case "PASS":
                let pw = parts.dropFirst().joined(separator: " ")
                let ok = server.with { cfg, _, _ in cfg.password == pw && pendingUser == cfg.user }
                if ok {
                    authenticated = true
                    write(context, "+OK logged in\r\n")
                } else {
                    write(context, "-ERR [AUTH] authentication failed\r\n")
                }
            case "AUTH":
                guard parts.count >= 2, parts[1].uppercased() == "XOAUTH2" else { return write(context, "-ERR unsupported mechanism\r\n") }
                if parts.count >= 3 {
                    finishSASL(parts[2], context)
                } else {
                    awaitingSASL = true
                    write(context, "+ \r\n")
                }
            case "QUIT":
                write(context, "+OK bye\r\n")
                context.close(promise: nil)
            case _ where !authenticated:
                write(context, "-ERR log in first\r\n")
            case "NOOP", "RSET":
                write(context, "+OK\r\n")
            case "STAT":
                let live = messages.indices.filter { !deleted.contains($0 + 1) }
                write(context, "+OK \(live.count) \(live.reduce(0) { $0 + messages[$1].utf8.count })\r\n")
            case "UIDL", "LIST":
                if parts.count > 1 {
                    guard let n = number() else { return write(context, "-ERR no such message\r\n") }
                    write(context, "+OK \(n) \(cmd == "UIDL" ? "uid-\(n)" : "\(messages[n - 1].utf8.count)")\r\n")
                } else {
                    var out = "+OK\r\n"
                    for (i, m) in messages.enumerated() where !deleted.contains(i + 1) {
                        out += "\(i + 1) \(cmd == "UIDL" ? "uid-\(i + 1)" : "\(m.utf8.count)")\r\n"
                    }
                    write(context, out + ".\r\n")
                }
            case "TOP", "RETR":
                guard let n = number() else { return write(context, "-ERR no such message\r\n") }
                if cmd == "RETR" {
                    let drop = server.with { cfg, count, _ -> Bool in
                        count += 1
                        if let d = cfg.dropAtRetr, count == d {
                            cfg.dropAtRetr = nil
                            if let after = cfg.tokensAfterDrop { cfg.acceptedTokens = after }
                            return true
                        }
                        return false
                    }
                    if drop {
                        context.close(promise: nil)
                        return
                    }
                }
                var body = messages[n - 1]
                if cmd == "TOP", let r = body.range(of: "\r\n\r\n") { body = String(body[..<r.upperBound]) }
                let stuffed = body.split(separator: "\n", omittingEmptySubsequences: false)
                    .map { $0.hasPrefix(".") ? "." + $0 : String($0) }.joined(separator: "\n")
                write(context, "+OK\r\n" + stuffed + (stuffed.hasSuffix("\r\n") ? "" : "\r\n") + ".\r\n")
            case "DELE":
                guard let n = number() else { return write(context, "-ERR no such message\r\n") }
                deleted.insert(n)
                write(context, "+OK\r\n")
            default:
                write(context, "-ERR unknown command\r\n")
            }
        }
    }

    /// Plain sample messages with CRLF line ends.
    static func samples(_ n: Int) -> [String] {
        (1...n).map { i in
            "Received: from mx.example.net; Mon, 2 Jun 2025 10:0\(i % 10):00 +0000\r\nFrom: s\(i)@example.net\r\nTo: alice@example.com\r\nSubject: message \(i)\r\nMessage-ID: <fake-\(i)@example.net>\r\nDate: Mon, 2 Jun 2025 10:00:00 +0000\r\n\r\nBody of message \(i).\r\n.leading dot line\r\n"
        }
    }
}

import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A scripted IMAP server on 127.0.0.1 for what Dovecot will not do on
/// demand: drops, NO/BAD, BYE, silence, malformed replies. Each accepted
/// connection runs `script` with a line-oriented session.
final class FakeIMAPServer: Sendable {
    let port: Int
    private let serverChannel: Channel
    private let tasks = NIOLockedValueBox<[Task<Void, Never>]>([])

    final class Session: @unchecked Sendable {
        let inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
        var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
        let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
        var buffer = ByteBuffer()
        /// Every line the client sent, for assertions.
        var received: [String] = []

        init(_ iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator, _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) {
            self.inbound = iterator
            self.iterator = iterator
            self.outbound = outbound
        }

        func send(_ s: String) async throws { try await outbound.write(ByteBuffer(string: s)) }
        func send(_ b: ByteBuffer) async throws { try await outbound.write(b) }

        /// The next line without CRLF; nil at EOF.
        func readLine() async throws -> String? {
            while true {
                if let i = buffer.readableBytesView.firstIndex(of: 0x0A) {
                    let len = i - buffer.readerIndex + 1
                    var line = buffer.readString(length: len) ?? ""
                    while let last = line.last, last.isNewline { line.removeLast() }
                    received.append(line)
                    return line
                }
                guard var more = try await iterator.next() else { return nil }
                buffer.writeBuffer(&more)
            }
        }

        /// Exactly `n` raw bytes (a literal's data).
        func readBytes(_ n: Int) async throws -> [UInt8]? {
            while buffer.readableBytes < n {
                guard var more = try await iterator.next() else { return nil }
                buffer.writeBuffer(&more)
            }
            return buffer.readBytes(length: n)
        }

        /// Reads a command line; returns (tag, rest upper-cased command word, full line).
        func readCommand() async throws -> (tag: String, name: String, line: String)? {
            guard let line = try await readLine() else { return nil }
            let parts = line.split(separator: " ", maxSplits: 2).map(String.init)
            guard parts.count >= 2 else { return (parts.first ?? "", "", line) }
            var name = parts[1].uppercased()
            if name == "UID", parts.count > 2 { name += " " + (parts[2].split(separator: " ").first.map(String.init) ?? "").uppercased() }
            return (parts[0], name, line)
        }

        /// Answers the usual session set-up until `stopAt` (a command name) arrives; returns that command.
        /// `permanentFlags` is what SELECT reports (`\\*` lets keywords be created).
        func standardSession(caps: String = "IMAP4rev1 LITERAL+ UIDPLUS ID ENABLE NAMESPACE AUTH=PLAIN",
                             permanentFlags: String = "\\Seen \\Deleted",
                             stopAt: Set<String>) async throws -> (tag: String, name: String, line: String)? {
            while let c = try await readCommand() {
                if stopAt.contains(c.name) { return c }
                switch c.name {
                case "CAPABILITY": try await send("* CAPABILITY \(caps)\r\n\(c.tag) OK done\r\n")
                case "LOGIN": try await send("\(c.tag) OK [CAPABILITY \(caps)] logged in\r\n")
                case "AUTHENTICATE": try await send("\(c.tag) OK [CAPABILITY \(caps)] logged in\r\n")
                case "ID": try await send("* ID NIL\r\n\(c.tag) OK done\r\n")
                case "ENABLE": try await send("\(c.tag) OK done\r\n")
                case "NAMESPACE": try await send("* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n\(c.tag) OK done\r\n")
                case "LIST": try await send("* LIST (\\HasNoChildren) \"/\" INBOX\r\n\(c.tag) OK done\r\n")
                case "SELECT", "EXAMINE":
                    try await send("* 3 EXISTS\r\n* OK [UIDVALIDITY 42] v\r\n* OK [UIDNEXT 4] n\r\n* OK [PERMANENTFLAGS (\(permanentFlags))] p\r\n\(c.tag) OK [READ-WRITE] done\r\n")
                case "LOGOUT": try await send("* BYE bye\r\n\(c.tag) OK done\r\n"); return nil
                case "NOOP": try await send("\(c.tag) OK done\r\n")
                default: try await send("\(c.tag) BAD unknown\r\n")
                }
            }
            return nil
        }
    }

    private init(port: Int, serverChannel: Channel) {
        self.port = port
        self.serverChannel = serverChannel
    }

    static func start(_ script: @escaping @Sendable (Session) async throws -> Void) async throws -> FakeIMAPServer {
        let bound = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let port = bound.channel.localAddress?.port ?? 0
        let server = FakeIMAPServer(port: port, serverChannel: bound.channel)
        let acceptTask = Task<Void, Never> {
            _ = try? await bound.executeThenClose { inbound in
                for try await conn in inbound {
                    let t = Task<Void, Never> {
                        _ = try? await conn.executeThenClose { input, output in
                            let session = Session(input.makeAsyncIterator(), output)
                            try await script(session)
                        }
                    }
                    server.tasks.withLockedValue { $0.append(t) }
                }
            }
        }
        server.tasks.withLockedValue { $0.append(acceptTask) }
        return server
    }

    func stop() async {
        try? await serverChannel.close()
        for t in tasks.withLockedValue({ $0 }) { t.cancel() }
    }
}

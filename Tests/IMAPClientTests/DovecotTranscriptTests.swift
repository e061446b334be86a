import Foundation
import IMAPClient
import IMAPCore
import Logging
import MailModel
import MailNet
import MailStore
import MailTestSupport
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// Captures what Dovecot really sends in a whole session (plaintext on the
/// loopback, which Dovecot treats as secure), then feeds the captured bytes
/// to a fresh parser whole and byte by byte: both must give the same events.
@Suite(.enabled(if: DovecotFixture.serverTestsEnabled, "MAILFERRY_SKIP_SERVER_TESTS=1"))
struct DovecotTranscriptTests {
    @Test func capturedSessionParsesByteByByte() async throws {
        let f = try DovecotFixture.shared()
        let account = f.makeUser(prefix: "transcript")
        let recorder = RecordingProxy()
        let port = try await recorder.start(upstreamPort: f.imapPort)
        let settings = ConnectionSettings(host: "127.0.0.1", port: port, tls: .none, responseTimeout: .seconds(20))
        do {
            let store = try await IMAPStore.open(settings: settings, credentials: .password(user: account.user, account.password),
                                                 logger: Logger(label: "test.transcript"))
            try await store.createFolder(FolderPath(components: ["Größe", "Ünter"])!)
            _ = try await store.folders()
            _ = try await store.append(to: .inbox, AppendRequest(flags: [.seen, Flag("Work")]),
                                       body: .bytes(Array("Subject: t\r\n\r\nbody with {5}\r\nand ) and (\r\n".utf8))).result()
            let l = try await store.listMessages(in: .inbox, options: ListOptions(includeHeaders: true))
            _ = try await store.fetchMessages(l.messages.map(\.id), in: .inbox) { _, b in for try await _ in b {} }
            try await store.close()
        }
        await recorder.stop()
        let server = recorder.serverBytes
        #expect(server.count > 500)
        func events(_ step: Int) throws -> [ResponseEvent] {
            var p = ResponseParser()
            var out: [ResponseEvent] = []
            var i = 0
            while i < server.count {
                let j = min(server.count, i + step)
                p.append(ByteBuffer(bytes: server[i..<j]))
                while let e = try p.next() {
                    // Join streamed chunks so that feeding patterns compare equal.
                    if case .streamingBytes(let b) = e, case .streamingBytes(var prev)? = out.last {
                        var joined = prev
                        joined.writeImmutableBuffer(b)
                        prev = joined
                        out[out.count - 1] = .streamingBytes(prev)
                    } else {
                        out.append(e)
                    }
                }
                i = j
            }
            #expect(p.isAtResponseBoundary)
            return out
        }
        let whole = try events(server.count)
        let byByte = try events(1)
        #expect(whole == byByte)
        #expect(whole.contains { if case .response(.untagged(.condition(let s))) = $0 { return s.text.contains("ready") }; return false })
        #expect(whole.contains { if case .response(.untagged(.list(let l))) = $0 { return l.name == MailboxName("Größe/Ünter") }; return false })
        #expect(whole.contains { if case .response(.tagged(_, let s)) = $0 { if case .appendUID? = s.code { return true } }; return false })
        #expect(whole.contains(.streamingBytes(ByteBuffer(string: "Subject: t\r\n\r\nbody with {5}\r\nand ) and (\r\n"))))
        #expect(whole.contains { if case .response(.untagged(.condition(let s))) = $0 { return s.kind == .bye }; return false })
    }
}

/// A loopback proxy that records the server's bytes.
final class RecordingProxy: @unchecked Sendable {
    private let lock = NIOLock()
    private var recorded: [UInt8] = []
    private var server: Channel?

    var serverBytes: [UInt8] { lock.withLock { recorded } }

    func record(_ b: ByteBuffer) { lock.withLock { recorded += Array(b.readableBytesView) } }

    func start(upstreamPort: Int) async throws -> Int {
        let me = self
        let s = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { inbound in
                inbound.setOption(ChannelOptions.autoRead, value: false).flatMap {
                    ClientBootstrap(group: inbound.eventLoop).connect(host: "127.0.0.1", port: upstreamPort)
                }.flatMap { outbound in
                    outbound.pipeline.addHandler(Forward(peer: inbound, tap: { me.record($0) })).flatMap {
                        inbound.pipeline.addHandler(Forward(peer: outbound, tap: nil))
                    }.flatMap { inbound.setOption(ChannelOptions.autoRead, value: true) }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        server = s
        return s.localAddress?.port ?? 0
    }

    func stop() async { try? await server?.close() }

    final class Forward: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let peer: Channel
        let tap: (@Sendable (ByteBuffer) -> Void)?
        init(peer: Channel, tap: (@Sendable (ByteBuffer) -> Void)?) {
            self.peer = peer
            self.tap = tap
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let b = unwrapInboundIn(data)
            tap?(b)
            peer.writeAndFlush(b, promise: nil)
        }
        func channelInactive(context: ChannelHandlerContext) {
            peer.close(promise: nil)
            context.fireChannelInactive()
        }
        func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
    }
}

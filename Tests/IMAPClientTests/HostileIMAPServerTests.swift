import Foundation
import IMAPClient
import IMAPCore
import Logging
import MailModel
import MailNet
import MailTestSupport
import NIOCore
import Testing

/// Issue 9: servers that lie, flood, stall or are not who they say. Each case
/// must end in a clear MailError or a correct recovery: no crash, no hang
/// (every wait has a deadline), no unbounded memory.
@Suite(.serialized)
struct HostileIMAPServerTests {
    static let logger = Logger(label: "hostile-imap-test")

    func settings(_ server: ScriptedServer, tls: TLSMode = .none, caFile: String? = nil,
                  timeout: Duration = .seconds(5)) -> ConnectionSettings {
        ConnectionSettings(host: server.host, port: server.port, tls: tls, caFile: caFile,
                           connectTimeout: .seconds(5), responseTimeout: timeout)
    }

    func mailError(_ body: () async throws -> Void) async -> MailError? {
        do {
            try await body()
            return nil
        } catch let e as MailError {
            return e
        } catch {
            Issue.record("not a MailError: \(type(of: error)): \(error)")
            return nil
        }
    }

    static let greeting = "* OK [CAPABILITY IMAP4rev1] hostile ready"

    @Test func greetingThatNeverComesHitsTheDeadline() async throws {
        let server = try await ScriptedServer.start([.stall])
        let e = await mailError {
            _ = try await IMAPConnection.open(settings: settings(server, timeout: .seconds(1)), logger: Self.logger)
        }
        #expect(e != nil, "a silent server must not be waited for forever")
        #expect(e?.retryable == true || e?.kind == .connection, "\(String(describing: e))")
        await server.stop()
    }

    @Test func neverEndingGreetingLineFailsWithBoundedMemory() async throws {
        let server = try await ScriptedServer.start([
            .send("* OK "),
            .sendRepeated(Array(repeating: UInt8(ascii: "x"), count: 4096), count: 4096),  // 16 MB, no CRLF
            .stall,
        ])
        let e = await mailError {
            _ = try await IMAPConnection.open(settings: settings(server), logger: Self.logger)
        }
        #expect(e?.kind == .protocolViolation, "\(String(describing: e))")
        await server.stop()
    }

    @Test func hundredThousandUntaggedExistsAreSurvived() async throws {
        let server = try await ScriptedServer.start([
            .sendLine(Self.greeting),
            .expectLine(#"\S+ NOOP"#),
            .sendRepeated(Array("* 7 EXISTS\r\n".utf8), count: 100_000),
            .sendLine("$tag OK NOOP done"),
            .expectLine(#"\S+ NOOP"#),
            .sendLine("$tag OK still here"),
            .expectLine(#"\S+ LOGOUT"#),
            .sendLines("* BYE\n$tag OK\n"),
            .close,
        ])
        let c = try await IMAPConnection.open(settings: settings(server, timeout: .seconds(30)), logger: Self.logger)
        let r = try await c.execute(.noop)
        #expect(r.status.kind == .ok)
        #expect(r.untagged.allSatisfy { if case .exists(7) = $0 { true } else { false } })
        let r2 = try await c.execute(.noop)
        #expect(r2.status.text == "still here")
        await c.logout()
        #expect(server.failures.isEmpty, "\(server.failures)")
        await server.stop()
    }

    static func fetchScript(_ reply: String) -> [ScriptStep] {
        [
            .sendLine(greeting),
            .expectLine(#"\S+ UID FETCH"#),
            .send(reply),
            .close,
        ]
    }

    func uidFetch(_ c: IMAPConnection) async throws -> CommandResponse {
        try await c.execute(.uidFetch(SequenceSet(numbers: [1]), [.uid, .body(.complete, peek: true)]))
    }

    @Test func literalBiggerThanWhatIsSentEndsInAnError() async throws {
        // Announces 1000 bytes, sends 5 and a tagged OK, then hangs up.
        let server = try await ScriptedServer.start(Self.fetchScript("* 1 FETCH (UID 1 BODY[] {1000}\r\nshort)\r\n$tag OK done\r\n"))
        let c = try await IMAPConnection.open(settings: settings(server), logger: Self.logger)
        let e = await mailError { _ = try await uidFetch(c) }
        #expect(e != nil, "a literal cut short must not pass as a message")
        #expect(e?.kind == .connection || e?.kind == .protocolViolation, "\(String(describing: e))")
        await server.stop()
    }

    @Test func literalBiggerThanWhatIsSentThenSilenceHitsTheDeadline() async throws {
        let server = try await ScriptedServer.start([
            .sendLine(Self.greeting),
            .expectLine(#"\S+ UID FETCH"#),
            .send("* 1 FETCH (UID 1 BODY[] {1000}\r\nshort"),
            .stall,
        ])
        let c = try await IMAPConnection.open(settings: settings(server, timeout: .seconds(1)), logger: Self.logger)
        let e = await mailError { _ = try await uidFetch(c) }
        #expect(e != nil)
        await server.stop()
    }

    @Test func literalSmallerThanWhatIsSentIsAProtocolError() async throws {
        // Announces 3 bytes, sends 20: the rest cannot be parsed as FETCH items.
        let server = try await ScriptedServer.start(Self.fetchScript("* 1 FETCH (UID 1 BODY[] {3}\r\nSubject: much longer)\r\n$tag OK done\r\n"))
        let c = try await IMAPConnection.open(settings: settings(server), logger: Self.logger)
        let e = await mailError { _ = try await uidFetch(c) }
        #expect(e?.kind == .protocolViolation, "\(String(describing: e))")
        await server.stop()
    }

    @Test func hugeLiteralSizeIsRefusedNotAllocated() async throws {
        let server = try await ScriptedServer.start(Self.fetchScript("* 1 FETCH (UID 1 BODY[] {99999999999999999999}\r\nx)\r\n$tag OK\r\n"))
        let c = try await IMAPConnection.open(settings: settings(server), logger: Self.logger)
        let e = await mailError { _ = try await uidFetch(c) }
        #expect(e?.kind == .protocolViolation, "\(String(describing: e))")
        await server.stop()
    }

    @Test func certificateForAnotherHostIsRefused() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mailferry-hostile-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let certs = try TestCertificates.make(in: dir, commonName: "mail.other.example",
                                              hostNames: ["mail.other.example"], ipAddresses: [])
        let server = try await ScriptedServer.start([.sendLine(Self.greeting), .stall], tls: ServerTLS(certs, implicit: true))
        // Trusted CA, wrong name: refused all the same.
        let e = await mailError {
            _ = try await IMAPConnection.open(settings: settings(server, tls: .implicit, caFile: certs.caFile), logger: Self.logger)
        }
        #expect(e?.kind == .tls, "\(String(describing: e))")
        // The same certificate is accepted for its own name (so the refusal above is about the name).
        let named = ConnectionSettings(host: "localhost", port: server.port, tls: .implicit, caFile: certs.caFile,
                                       connectTimeout: .seconds(5), responseTimeout: .seconds(5))
        let e2 = await mailError { _ = try await IMAPConnection.open(settings: named, logger: Self.logger) }
        #expect(e2?.kind == .tls, "localhost is not mail.other.example either: \(String(describing: e2))")
        await server.stop()
    }

    @Test func plaintextInjectedAfterStartTLSIsDiscarded() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mailferry-hostile-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let certs = try TestCertificates.make(in: dir)
        let server = try await ScriptedServer.start([
            .sendLine("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready"),
            .expectLine(#"\S+ STARTTLS"#),
            // A man in the middle appends responses in plaintext, before the
            // handshake: RFC 3501 §6.2.1 says they must be thrown away.
            .send("$tag OK begin TLS\r\n* BYE [ALERT] injected\r\n* CAPABILITY IMAP4rev1 X-INJECTED\r\n"),
            .startTLS,
            .expectLine(#"\S+ CAPABILITY"#),
            .sendLines("* CAPABILITY IMAP4rev1\n$tag OK\n"),
            .expectLine(#"\S+ LOGIN "#),
            .sendLine("$tag OK [CAPABILITY IMAP4rev1] logged in"),
            .expectLine(#"\S+ NOOP"#),
            .sendLine("$tag OK"),
            .expectLine(#"\S+ LOGOUT"#),
            .sendLines("* BYE\n$tag OK\n"),
            .close,
        ], tls: ServerTLS(certs, implicit: false))
        let c = try await IMAPConnection.connect(settings: settings(server, tls: .startTLS, caFile: certs.caFile),
                                                 credentials: .password(user: "alice", "secret"), logger: Self.logger)
        #expect(!c.has(Capability("X-INJECTED")))
        let r = try await c.execute(.noop)
        #expect(r.status.kind == .ok)
        await c.logout()
        #expect(server.failures.isEmpty, "\(server.failures)")
        await server.stop()
    }

    @Test func startTLSNotOfferedIsRefusedBeforeTheLogin() async throws {
        let server = try await ScriptedServer.start([.sendLine(Self.greeting), .stall])
        let e = await mailError {
            _ = try await IMAPConnection.connect(settings: settings(server, tls: .startTLS),
                                                 credentials: .password(user: "alice", "secret"), logger: Self.logger)
        }
        #expect(e?.kind == .tls, "\(String(describing: e))")
        #expect(!server.received.joined().contains { $0.contains("LOGIN") || $0.contains("secret") })
        await server.stop()
    }

    /// A caller that stops taking a FETCH stream it left unread (its reading
    /// paused above the high-water mark) must not leave the connection waiting
    /// forever: every later reply would sit unread behind the paused socket, and
    /// the response deadline used to excuse a paused reader for ever. Now the
    /// paused reader gets one more deadline, then the connection fails with a
    /// retryable connection error and whatever waits on it ends.
    @Test func abandonedStreamWithReadingPausedEndsAtTheDeadline() async throws {
        let size = 4096 * 64
        let server = try await ScriptedServer.start([
            .sendLine(Self.greeting),
            .expectLine(#"\S+ UID FETCH"#),
            .send("* 1 FETCH (UID 1 BODY[] {\(size)}\r\n"),
            .sendRepeated(Array(repeating: UInt8(ascii: "x"), count: 4096), count: 64),
            .send(")\r\n$tag OK done\r\n"),
            .expectLine(#"\S+ NOOP"#),
            .sendLine("$tag OK noop"),
            .stall,
        ])
        let c = try await IMAPConnection.open(settings: settings(server, timeout: .milliseconds(500)),
                                              options: IMAPClientOptions(streamHighWater: 16 * 1024), logger: Self.logger)
        let fetch = c.submit(.command(.uidFetch(SequenceSet(numbers: [1]), [.uid, .body(.complete, peek: true)])))
        // Take a little of the stream, then leave it (as a caller does whose destination failed).
        var sawBytes = false
        while !sawBytes {
            if case .fetch(.streamingBytes) = try await fetch.sink.next() { sawBytes = true }
        }
        let e = await mailError { _ = try await c.execute(.noop, scope: .account) }
        #expect(e?.kind == .connection, "\(String(describing: e))")
        #expect(e?.retryable == true, "\(String(describing: e))")
        #expect(e?.message.contains("reading was paused") == true, "\(String(describing: e))")
        await c.logout()
        await server.stop()
    }
}

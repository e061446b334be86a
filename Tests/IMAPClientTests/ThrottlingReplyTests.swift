import IMAPClient
import IMAPCore
import Logging
import MailModel
import MailNet
import MailTestSupport
import Testing

/// Issue 9: how providers say "slow down", through a scripted server. A
/// throttle must come out as a retryable `.throttled` error carrying the
/// server's wait, never as a failed login or a full mailbox.
@Suite(.serialized)
struct ThrottlingReplyTests {
    static let logger = Logger(label: "throttling-test")

    func settings(_ server: ScriptedServer) -> ConnectionSettings {
        ConnectionSettings(host: server.host, port: server.port, tls: .none,
                           connectTimeout: .seconds(5), responseTimeout: .seconds(5))
    }

    /// Runs one NOOP against a server that answers it with `reply`.
    func refusal(_ reply: String) async throws -> MailError? {
        let server = try await ScriptedServer.start([
            .sendLine("* OK [CAPABILITY IMAP4rev1] ready"),
            .expectLine(#"\S+ NOOP"#),
            .sendLine("$tag " + reply),
            .stall,
        ])
        defer { Task { await server.stop() } }
        let c = try await IMAPConnection.open(settings: settings(server), logger: Self.logger)
        do {
            _ = try await c.execute(.noop)
            return nil
        } catch let e as MailError {
            return e
        }
    }

    @Test func office365ThrottledWithSuggestedBackoff() async throws {
        let e = try await refusal("NO [THROTTLED] Request is throttled. Suggested Backoff Time: 2500 milliseconds")
        #expect(e?.kind == .throttled)
        #expect(e?.retryable == true)
        #expect(e?.retryAfter == 2.5)
    }

    @Test func gmailTooManySimultaneousConnections() async throws {
        let e = try await refusal("NO [OVERQUOTA] Too many simultaneous connections. (Failure)")
        #expect(e?.kind == .throttled, "\(String(describing: e))")
        #expect(e?.retryable == true)
    }

    @Test func gmailBandwidthLimit() async throws {
        let e = try await refusal("NO [OVERQUOTA] Account exceeded command or bandwidth limits. (Failure)")
        #expect(e?.kind == .throttled, "\(String(describing: e))")
        #expect(e?.retryable == true)
    }

    @Test func aFullMailboxIsNotAThrottle() async throws {
        let e = try await refusal("NO [OVERQUOTA] Mailbox is full")
        #expect(e?.kind == .refused, "\(String(describing: e))")
        #expect(e?.retryable == false)
    }

    @Test func unavailableWithRetryAfterSeconds() async throws {
        let e = try await refusal("NO [UNAVAILABLE] Server busy, retry after 7 seconds")
        #expect(e?.kind == .throttled)
        #expect(e?.retryAfter == 7)
    }

    @Test func gmailRefusesTheLoginWhenTooManyConnections() async throws {
        let server = try await ScriptedServer.start([
            .sendLine("* OK [CAPABILITY IMAP4rev1] Gimap ready"),
            .expectLine(#"\S+ LOGIN "#),
            .sendLine("$tag NO [OVERQUOTA] Too many simultaneous connections. (Failure)"),
            .stall,
        ])
        defer { Task { await server.stop() } }
        do {
            _ = try await IMAPConnection.connect(settings: settings(server), credentials: .password(user: "a", "pw"),
                                                 logger: Self.logger)
            Issue.record("login should have been refused")
        } catch let e as MailError {
            #expect(e.kind == .throttled, "a connection limit is not a wrong password: \(e)")
            #expect(e.retryable)
            #expect(!e.message.contains("pw"))
        }
    }

    @Test func serverAboveItsConnectionLimitHangsUp() async throws {
        let server = try await ScriptedServer.start([
            .sendLine("* BYE [UNAVAILABLE] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)"),
            .close,
        ])
        defer { Task { await server.stop() } }
        do {
            _ = try await IMAPConnection.connect(settings: settings(server), credentials: .password(user: "a", "pw"),
                                                 logger: Self.logger)
            Issue.record("a BYE greeting must not connect")
        } catch let e as MailError {
            #expect(e.retryable, "a connection limit passes: \(e)")
        }
    }
}

import IMAPClient
import IMAPCore
import Logging
import MailModel
import MailNet
import MailStore
import NIOCore
import Testing

/// Failures Dovecot will not produce on demand, against a scripted server.
struct FakeServerTests {
    static let logger = Logger(label: "test.imap.fake")

    func settings(_ server: FakeIMAPServer, timeout: Duration = .seconds(5)) -> ConnectionSettings {
        ConnectionSettings(host: "127.0.0.1", port: server.port, tls: .none, connectTimeout: .seconds(5), responseTimeout: timeout)
    }

    static let creds = Credentials.password(user: "user", "secret")

    func mailError(_ body: () async throws -> Void) async -> MailError? {
        do {
            try await body()
            return nil
        } catch let e as MailError {
            return e
        } catch {
            Issue.record("not a MailError: \(error)")
            return nil
        }
    }

    @Test func droppedConnectionInMidLiteral() async throws {
        let server = try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            guard try await s.standardSession(stopAt: ["UID FETCH"]) != nil else { return }
            try await s.send("* 1 FETCH (UID 1 RFC822.SIZE 1000 BODY[] {1000}\r\n" + String(repeating: "x", count: 300))
            // and hang up
        }
        defer { Task { await server.stop() } }
        let store = try await IMAPStore.open(settings: settings(server), credentials: Self.creds, logger: Self.logger)
        let got = ByteCounter()
        let e = await mailError {
            _ = try await store.fetchMessages([MessageID("1")], in: .inbox) { _, body in
                for try await chunk in body { got.add(chunk.readableBytes) }
            }
        }
        #expect(e?.kind == .connection)
        #expect(e?.retryable == true)
        #expect(got.value <= 300)
        try? await store.close()
    }

    static let refusals: [(String, String, MailError.Kind, MailError.Scope)] = [
        ("APPEND", "NO [OVERQUOTA] Quota exceeded", .refused, .account),
        ("APPEND", "NO [TRYCREATE] Mailbox does not exist", .notFound, .folder),
        ("APPEND", "NO [THROTTLED] Slow down", .throttled, .account),
        ("APPEND", "NO Request is throttled. Suggested Backoff Time: 1500 milliseconds", .throttled, .account),
        ("APPEND", "BAD Invalid arguments", .protocolViolation, .message),
        ("APPEND", "NO [LIMIT] message too large", .throttled, .account),
        ("APPEND", "NO [SERVERBUG] oops", .refused, .message),
        ("EXAMINE", "NO [NONEXISTENT] Unknown Mailbox", .notFound, .folder),
        ("EXAMINE", "NO [NOPERM] Access denied", .refused, .folder),
        ("LOGIN", "NO [AUTHENTICATIONFAILED] Authentication failed.", .authentication, .account),
        ("LOGIN", "NO [UNAVAILABLE] Try later", .throttled, .account),
        ("UID FETCH", "BAD Error in IMAP command", .protocolViolation, .folder),
    ]

    @Test(arguments: refusals)
    func noAndBadReplies(_ row: (String, String, MailError.Kind, MailError.Scope)) async throws {
        let (command, reply, kind, scope) = row
        let server = try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            guard let c = try await s.standardSession(caps: "IMAP4rev1 LITERAL+ UIDPLUS NAMESPACE", stopAt: [command]) else { return }
            if command == "APPEND", let open = c.line.lastIndex(of: "{"), let n = Int(c.line[c.line.index(after: open)...].prefix(while: \.isNumber)) {
                _ = try await s.readBytes(n)
                _ = try await s.readLine()
            }
            try await s.send("\(c.tag) \(reply)\r\n")
            _ = try await s.standardSession(stopAt: [])
        }
        defer { Task { await server.stop() } }
        var e: MailError?
        if command == "LOGIN" {
            e = await mailError { _ = try await IMAPStore.open(settings: settings(server), credentials: Self.creds, logger: Self.logger) }
        } else {
            let store = try await IMAPStore.open(settings: settings(server), credentials: Self.creds, logger: Self.logger)
            e = await mailError {
                switch command {
                case "APPEND":
                    let p = try await store.append(to: .inbox, AppendRequest(), body: .bytes(Array("Subject: x\r\n\r\nhi\r\n".utf8)))
                    _ = try await p.result()
                case "EXAMINE":
                    _ = try await store.listMessages(in: FolderPath("Other")!)
                default:
                    _ = try await store.fetchMessages([MessageID("1")], in: .inbox) { _, _ in }
                }
            }
            try? await store.close()
        }
        #expect(e?.kind == kind, "\(reply): \(String(describing: e))")
        #expect(e?.scope == scope, "\(reply): \(String(describing: e))")
        if kind == .throttled { #expect(e?.retryable == true && e?.retryAfter != nil) }
        if reply.contains("1500 milliseconds") { #expect(e?.retryAfter == 1.5) }
        #expect(e?.description.contains("secret") == false)
    }

    static let byeStages = ["greeting", "NAMESPACE", "UID FETCH", "APPEND"]

    @Test(arguments: byeStages)
    func byeAtAnyPoint(_ stage: String) async throws {
        let server = try await FakeIMAPServer.start { s in
            if stage == "greeting" {
                try await s.send("* BYE Too many connections from your IP\r\n")
                return
            }
            try await s.send("* OK ready\r\n")
            guard try await s.standardSession(stopAt: [stage]) != nil else { return }
            if stage == "UID FETCH" { try await s.send("* 1 FETCH (UID 1 BODY[] {3}\r\nabc)\r\n") }
            try await s.send("* BYE Server shutting down\r\n")
        }
        defer { Task { await server.stop() } }
        let e = await mailError {
            let store = try await IMAPStore.open(settings: settings(server), credentials: Self.creds, logger: Self.logger)
            defer { Task { try? await store.close() } }
            if stage == "UID FETCH" {
                _ = try await store.fetchMessages([MessageID("1")], in: .inbox) { _, body in for try await _ in body {} }
            } else if stage == "APPEND" {
                let p = try await store.append(to: .inbox, AppendRequest(), body: .bytes(Array("Subject: y\r\n\r\nhi\r\n".utf8)))
                _ = try await p.result()
            }
        }
        #expect(e?.kind == .connection, "\(String(describing: e))")
        #expect(e?.retryable == true)
        let text = stage == "greeting" ? "Too many connections" : "Server shutting down"
        #expect(e?.description.contains(text) == true, "\(String(describing: e))")
    }

    @Test(arguments: ["greeting", "AUTHENTICATE", "UID FETCH"])
    func serverStopsAnswering(_ stage: String) async throws {
        let server = try await FakeIMAPServer.start { s in
            if stage != "greeting" {
                try await s.send("* OK ready\r\n")
                guard try await s.standardSession(stopAt: [stage]) != nil else { return }
                if stage == "UID FETCH" { try await s.send("* 1 FETCH (UID 1 BODY[] {100}\r\nabc") }
            }
            try await Task.sleep(for: .seconds(20))
        }
        defer { Task { await server.stop() } }
        let clock = ContinuousClock()
        let start = clock.now
        let e = await mailError {
            let store = try await IMAPStore.open(settings: settings(server, timeout: .milliseconds(700)), credentials: Self.creds, logger: Self.logger)
            defer { Task { try? await store.close() } }
            _ = try await store.fetchMessages([MessageID("1")], in: .inbox) { _, body in for try await _ in body {} }
        }
        #expect(e?.kind == .connection)
        #expect(e?.retryable == true)
        #expect(e?.message.contains("did not answer in time") == true, "\(String(describing: e))")
        // It did not hang: the deadline fired long before the server's 20 s sleep ended.
        #expect(clock.now - start < .seconds(15))
    }

    @Test func commandsArePipelined() async throws {
        // The server reads three commands before answering any: a client that
        // waited for each reply would stall here until the deadline.
        let server = try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            guard let first = try await s.standardSession(stopAt: ["NOOP"]) else { return }
            var tags = [first.tag]
            for _ in 0..<2 { if let c = try await s.readCommand() { tags.append(c.tag) } }
            for t in tags.reversed() { try await s.send("\(t) OK done\r\n") }
            _ = try await s.standardSession(stopAt: [])
        }
        defer { Task { await server.stop() } }
        try await IMAPConnection.withConnection(settings: settings(server, timeout: .seconds(3)), credentials: Self.creds,
                                                logger: Self.logger) { c in
            let pending = (0..<3).map { _ in c.submit(.command(.noop)) }
            for p in pending { _ = try await p.response() }
        }
    }

    @Test func malformedReplyIsAProtocolError() async throws {
        let server = try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            guard let c = try await s.standardSession(stopAt: ["NOOP"]) else { return }
            try await s.send("* 1 FETCH (UID banana)\r\n\(c.tag) OK done\r\n")
            try await Task.sleep(for: .seconds(5))
        }
        defer { Task { await server.stop() } }
        let e = await mailError {
            try await IMAPConnection.withConnection(settings: settings(server), credentials: Self.creds, logger: Self.logger) { c in
                _ = try await c.execute(.noop)
            }
        }
        #expect(e?.kind == .protocolViolation)
    }
}

final class ByteCounter: @unchecked Sendable {
    private var n = 0
    private let lock = NSLockShim()
    func add(_ k: Int) { lock.with { n += k } }
    var value: Int { lock.with { n } }
}

import NIOConcurrencyHelpers
struct NSLockShim: Sendable {
    let l = NIOLock()
    func with<T>(_ f: () -> T) -> T { l.withLock(f) }
}

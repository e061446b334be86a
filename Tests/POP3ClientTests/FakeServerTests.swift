import Logging
import MailModel
import MailNet
import MailStore
import NIOCore
import POP3Core
import Testing
@testable import POP3Client

let testLogger: Logger = {
    var l = Logger(label: "pop3-tests")
    l.logLevel = .warning
    return l
}()

func fakeSettings(_ server: FakePOP3Server, timeout: Duration = .seconds(10)) -> ConnectionSettings {
    ConnectionSettings(host: "127.0.0.1", port: server.port, tls: .none, connectTimeout: .seconds(5), responseTimeout: timeout)
}

func sampleMessages(_ count: Int, lineEnding: String = "\r\n") -> [[UInt8]] {
    (1...count).map { i in
        let lines = ["Received: from mx.example by pop.example; Tue, 1 Jul 2003 10:52:37 +0200",
                     "From: sender\(i)@example.com", "Subject: message \(i)", "Date: Mon, 30 Jun 2003 09:00:00 +0000",
                     "Message-ID: <m\(i)@example.com>", "", "Body of message \(i).", ".", "..leading dots", ".end",
                     String(repeating: "x", count: 100 * i)]
        return Array((lines.joined(separator: lineEnding) + lineEnding).utf8)
    }
}

/// Collects a store's messages by id, keyed bytes.
func fetchAll(_ store: POP3Store, _ ids: [MessageID]) async throws -> [MessageID: [UInt8]] {
    let box = Collected()
    _ = try await store.fetchMessages(ids, in: .inbox) { info, body in
        let bytes = try await body.collect()
        box.add(info.id, Array(bytes.readableBytesView))
    }
    return box.all
}

final class Collected: @unchecked Sendable {
    private var items: [MessageID: [UInt8]] = [:]
    private var order: [MessageID] = []
    private let lock = NSLockLike()
    func add(_ id: MessageID, _ b: [UInt8]) { lock.with { items[id] = b; order.append(id) } }
    var all: [MessageID: [UInt8]] { lock.with { items } }
    var sequence: [MessageID] { lock.with { order } }
}

final class NSLockLike: @unchecked Sendable {
    private let l = NIOLockLike()
    func with<T>(_ f: () throws -> T) rethrows -> T { try l.withLock(f) }
}

import NIOConcurrencyHelpers
typealias NIOLockLike = NIOLock

@Suite(.serialized) struct FakeServerTests {
    @Test func userPassPipelinedRetrieveAndCommittedDelete() async throws {
        let msgs = sampleMessages(20)
        let server = try FakePOP3Server(.init(messages: msgs))
        defer { server.stop() }
        let creds = Credentials.password(user: "alice", "s3cret pass")
        try await POP3Connection.withConnection(settings: fakeSettings(server), credentials: creds, logger: testLogger) { c in
            #expect(c.loginMethod == "PLAIN")
            #expect(c.isPipelining)
            let stat = try await c.stat()
            #expect(stat.count == 20)
            let list = try await c.list()
            #expect(list.map(\.number) == Array(1...20))
            let got = Collected()
            try await c.retrieve(Array(1...20)) { n, stream in
                got.add(MessageID(String(n)), Array(try await stream.collect(upTo: 1 << 20).readableBytesView))
            }
            for n in 1...20 { #expect(got.all[MessageID(String(n))] == msgs[n - 1]) }
            try await c.dele([3, 4])
        }
        #expect(server.deleted == [3, 4])
        // The RETRs went out without waiting for each reply: several arrived in one read.
        let retrs = server.commands.filter { $0.hasPrefix("RETR") }
        #expect(retrs.count == 20)
    }

    @Test func unpipelinedWhenNotOffered() async throws {
        var cfg = FakePOP3Server.Config(messages: sampleMessages(5))
        cfg.capa = ["TOP", "UIDL", "USER"]
        let server = try FakePOP3Server(cfg)
        defer { server.stop() }
        try await POP3Connection.withConnection(settings: fakeSettings(server), credentials: .password(user: "alice", "s3cret pass"),
                                                logger: testLogger) { c in
            #expect(!c.isPipelining)
            #expect(c.loginMethod == "USER")
            var seen: [Int] = []
            try await c.retrieve([1, 2, 3, 4, 5]) { n, s in
                seen.append(n)
                try await s.drain()
            }
            #expect(seen == [1, 2, 3, 4, 5])
        }
    }

    @Test func noCapaNoUIDLAPOPOnly() async throws {
        var cfg = FakePOP3Server.Config(messages: sampleMessages(4))
        cfg.capa = nil
        cfg.uidl = false
        cfg.allowUser = false
        cfg.allowAPOP = true
        cfg.apopStamp = "<1896.697170952@dbc.mtview.ca.us>"
        let server = try FakePOP3Server(cfg)
        defer { server.stop() }
        let creds = Credentials.password(user: "alice", "s3cret pass")
        let store = try await POP3Store.open(settings: fakeSettings(server), credentials: creds, logger: testLogger)
        #expect(store.loginMethod == "APOP")
        #expect(server.commands.contains { $0.hasPrefix("APOP alice ") && !$0.contains("s3cret") })
        let listing = try await store.listMessages(in: .inbox)
        #expect(store.idsAreSynthetic)
        #expect(listing.idsAreSynthetic)
        #expect(listing.messages.count == 4)
        #expect(Set(listing.messages.map(\.id)).count == 4)
        #expect(listing.messages.allSatisfy { $0.id.rawValue.hasPrefix("hdr-") })
        let bytes = try await fetchAll(store, listing.messages.map(\.id))
        for (i, m) in listing.messages.enumerated() { #expect(bytes[m.id] == cfg.messages[i]) }
        try await store.close()

        // A second session gives the same synthetic ids.
        let again = try await POP3Store.open(settings: fakeSettings(server), credentials: creds, logger: testLogger)
        #expect(try await again.listMessages(in: .inbox).messages.map(\.id) == listing.messages.map(\.id))
        try await again.close()
    }

    @Test func inUseIsAClearRetryableError() async throws {
        var cfg = FakePOP3Server.Config(messages: sampleMessages(1))
        cfg.loginError = "-ERR [IN-USE] Do you have another POP session running?"
        let server = try FakePOP3Server(cfg)
        defer { server.stop() }
        await #expect {
            _ = try await POP3Connection.connect(settings: fakeSettings(server), credentials: .password(user: "alice", "s3cret pass"),
                                                 logger: testLogger)
        } throws: { e in
            guard let e = e as? MailError else { return false }
            return e.kind == .throttled && e.retryable && e.message.contains("in use by another POP3 session (IN-USE)")
        }
    }

    @Test func loginDelayCarriesTheWait() async throws {
        var cfg = FakePOP3Server.Config(messages: sampleMessages(1))
        cfg.capa = ["USER", "UIDL", "RESP-CODES", "LOGIN-DELAY 900"]
        cfg.loginError = "-ERR [LOGIN-DELAY] wait 15 minutes between logins"
        let server = try FakePOP3Server(cfg)
        defer { server.stop() }
        await #expect {
            _ = try await POP3Connection.connect(settings: fakeSettings(server), credentials: .password(user: "alice", "s3cret pass"),
                                                 logger: testLogger)
        } throws: { e in
            guard let e = e as? MailError else { return false }
            return e.kind == .throttled && e.retryAfter == 900 && e.message.contains("LOGIN-DELAY")
        }
    }

    @Test func wrongPasswordIsAnAuthenticationError() async throws {
        let server = try FakePOP3Server(.init(messages: sampleMessages(1)))
        defer { server.stop() }
        await #expect {
            _ = try await POP3Connection.connect(settings: fakeSettings(server), credentials: .password(user: "alice", "wrong"),
                                                 logger: testLogger)
        } throws: { e in
            guard let e = e as? MailError else { return false }
            return e.kind == .authentication && e.exitCode == 3 && !e.description.contains("wrong")
        }
    }

    @Test(arguments: [true, false])
    func droppedMidRetrNextSessionPicksUp(pipelined: Bool) async throws {
        let msgs = sampleMessages(8)
        var cfg = FakePOP3Server.Config(messages: msgs)
        cfg.dropDuringRetr = 5
        if !pipelined { cfg.capa = ["TOP", "UIDL", "USER"] }
        let server = try FakePOP3Server(cfg)
        defer { server.stop() }
        let creds = Credentials.password(user: "alice", "s3cret pass")
        let done = Collected()

        // First run: the server drops the connection in the middle of message 5
        // (with pipelining, RETR 6.. are already on their way).
        let first = try await POP3Store.open(settings: fakeSettings(server), credentials: creds, logger: testLogger)
        #expect(first.isPipelining == pipelined)
        let listing = try await first.listMessages(in: .inbox)
        let ids = listing.messages.map(\.id)
        try await first.delete(Array(ids.prefix(2)), in: .inbox)
        await #expect {
            _ = try await first.fetchMessages(ids, in: .inbox) { info, body in
                let b = try await body.collect()
                done.add(info.id, Array(b.readableBytesView))
            }
        } throws: { e in
            (e as? MailError)?.kind == .connection && (e as? MailError)?.retryable == true
        }
        first.abandon()
        #expect(server.deleted.isEmpty, "a session that died before QUIT deleted something")
        let firstRun = Set(done.sequence)
        #expect(firstRun == Set(ids[2..<4]))

        // Second run: fetch what the first did not finish.
        let second = try await POP3Store.open(settings: fakeSettings(server), credentials: creds, logger: testLogger)
        let relisted = try await second.listMessages(in: .inbox)
        #expect(relisted.messages.map(\.id) == ids)
        let rest = ids.filter { !firstRun.contains($0) }
        _ = try await second.fetchMessages(rest, in: .inbox) { info, body in
            let b = try await body.collect()
            done.add(info.id, Array(b.readableBytesView))
        }
        try await second.close()
        #expect(done.sequence.count == ids.count, "every message exactly once")
        #expect(Set(done.sequence) == Set(ids))
        for (i, id) in ids.enumerated() { #expect(done.all[id] == msgs[i]) }
    }

    @Test func silentServerHitsTheDeadline() async throws {
        var cfg = FakePOP3Server.Config(messages: sampleMessages(1))
        cfg.silent = true
        let server = try FakePOP3Server(cfg)
        defer { server.stop() }
        let clock = ContinuousClock()
        let start = clock.now
        await #expect {
            _ = try await POP3Connection.connect(settings: fakeSettings(server, timeout: .milliseconds(300)),
                                                 credentials: .password(user: "alice", "s3cret pass"), logger: testLogger)
        } throws: { e in
            guard let e = e as? MailError else { return false }
            return e.kind == .connection && e.retryable && e.message.contains("did not answer in time")
        }
        #expect(clock.now - start < .seconds(30))
    }

    @Test func serverFallingSilentMidSessionHitsTheDeadline() async throws {
        var cfg = FakePOP3Server.Config(messages: sampleMessages(2))
        cfg.silentAfterLogin = true
        cfg.capa = nil
        let server = try FakePOP3Server(cfg)
        defer { server.stop() }
        var settings = fakeSettings(server, timeout: .milliseconds(300))
        settings.responseTimeout = .milliseconds(300)
        let c = try await POP3Connection.connect(settings: settings, credentials: .password(user: "alice", "s3cret pass"),
                                                 options: POP3ClientOptions(loginMethod: "USER"), logger: testLogger)
        await #expect {
            try await c.retrieve([1]) { _, s in try await s.drain() }
        } throws: { e in
            (e as? MailError)?.message.contains("did not answer in time") == true
        }
        c.abort()
    }

    @Test func bareLFRepliesAndEightBitBytes() async throws {
        var msgs = sampleMessages(3, lineEnding: "\n")
        msgs.append([0x53, 0x3A, 0x20, 0xE9, 0xFF, 0x0A, 0x0A] + (0x80...0xFF).map { UInt8($0) } + [0x0A, 0x2E, 0x0A, 0x2E, 0x2E, 0x0A])
        var cfg = FakePOP3Server.Config(messages: msgs)
        cfg.bareLF = true
        let server = try FakePOP3Server(cfg)
        defer { server.stop() }
        let store = try await POP3Store.open(settings: fakeSettings(server), credentials: .password(user: "alice", "s3cret pass"),
                                             logger: testLogger)
        let listing = try await store.listMessages(in: .inbox, options: ListOptions(includeHeaders: true))
        #expect(listing.messages.first?.dateSource == .received)
        #expect(listing.messages.first?.headers?.messageID == "<m1@example.com>")
        let bytes = try await fetchAll(store, listing.messages.map(\.id))
        for (i, m) in listing.messages.enumerated() { #expect(bytes[m.id] == msgs[i]) }
        try await store.close()
    }

    @Test func office365TwoStepXOAuth2() async throws {
        var cfg = FakePOP3Server.Config(messages: sampleMessages(2))
        cfg.capa = ["USER", "UIDL", "SASL XOAUTH2"]
        let token = "EwBwA8l6BAAU" + String(repeating: "t", count: 1500)
        cfg.oauthToken = token
        cfg.user = "someone@contoso.onmicrosoft.com"
        let server = try FakePOP3Server(cfg)
        defer { server.stop() }
        let creds = Credentials(user: "someone@contoso.onmicrosoft.com", secret: .oauth2(.fixed(token)))
        try await POP3Connection.withConnection(settings: fakeSettings(server), credentials: creds, logger: testLogger) { c in
            #expect(c.loginMethod == "XOAUTH2")
            let count = try await c.stat().count
            #expect(count == 2)
        }
        let cmds = server.commands
        let auth = try #require(cmds.firstIndex(of: "AUTH XOAUTH2"))
        let sent = Base64.decode(cmds[auth + 1]).map { String(decoding: $0, as: UTF8.self) }
        #expect(sent == "user=someone@contoso.onmicrosoft.com\u{01}auth=Bearer \(token)\u{01}\u{01}")
    }

    @Test func oauthBearerTwoStep() async throws {
        var cfg = FakePOP3Server.Config(messages: sampleMessages(1))
        cfg.capa = ["UIDL", "SASL OAUTHBEARER XOAUTH2"]
        cfg.oauthToken = "bearer-token"
        let server = try FakePOP3Server(cfg)
        defer { server.stop() }
        let creds = Credentials(user: "alice", secret: .oauth2(.fixed("bearer-token")))
        let c = try await POP3Connection.connect(settings: fakeSettings(server), credentials: creds, logger: testLogger)
        #expect(c.loginMethod == "OAUTHBEARER")
        try await c.quit()
        #expect(server.commands.contains("AUTH OAUTHBEARER"))
    }

    @Test func addedFinalCRLFIsStrippedButRealOnesKept() async throws {
        let msgs: [[UInt8]] = [
            Array("Subject: no final newline\r\n\r\nlast line".utf8),
            Array("Subject: final CRLF\r\n\r\nlast line\r\n".utf8),
            Array("Subject: blank last line\r\n\r\nx\r\n\r\n".utf8),
            Array("Subject: dot last\r\n\r\n.".utf8),
        ]
        let server = try FakePOP3Server(.init(messages: msgs))
        defer { server.stop() }
        let store = try await POP3Store.open(settings: fakeSettings(server), credentials: .password(user: "alice", "s3cret pass"),
                                             logger: testLogger)
        let listing = try await store.listMessages(in: .inbox)
        let bytes = try await fetchAll(store, listing.messages.map(\.id))
        for (i, m) in listing.messages.enumerated() { #expect(bytes[m.id] == msgs[i]) }
        try await store.close()
    }

    @Test func abandonedBodiesAndAFailingHandlerLeaveTheSessionInStep() async throws {
        let msgs = sampleMessages(6)
        let server = try FakePOP3Server(.init(messages: msgs))
        defer { server.stop() }
        let store = try await POP3Store.open(settings: fakeSettings(server), credentials: .password(user: "alice", "s3cret pass"),
                                             logger: testLogger)
        #expect(store.isPipelining)
        let ids = try await store.listMessages(in: .inbox).messages.map(\.id)
        struct Stop: Error {}
        let firstChunks = Collected()
        // Read only the first chunk of each body; fail on the third message
        // while the next RETRs are already in flight.
        await #expect(throws: Stop.self) {
            _ = try await store.fetchMessages(ids, in: .inbox) { info, body in
                var it = body.makeAsyncIterator()
                if let c = try await it.next() { firstChunks.add(info.id, Array(c.readableBytesView)) }
                if info.id == ids[2] { throw Stop() }
            }
        }
        #expect(firstChunks.sequence == Array(ids.prefix(3)))
        // The same session goes on, in step with the server.
        let rest = try await fetchAll(store, Array(ids[3...]))
        for i in 3..<6 { #expect(rest[ids[i]] == msgs[i]) }
        let folders = try await store.folders()
        #expect(folders.first?.messageCount == 6)
        try await store.close()
    }

    @Test func refreshesARefusedToken() async throws {
        var cfg = FakePOP3Server.Config(messages: sampleMessages(1))
        cfg.capa = ["UIDL", "SASL XOAUTH2"]
        cfg.oauthToken = "fresh-token"
        let server = try FakePOP3Server(cfg)
        defer { server.stop() }
        let creds = Credentials(user: "alice", secret: .oauth2(TokenProvider { refresh in refresh ? "fresh-token" : "stale-token" }))
        let c = try await POP3Connection.connect(settings: fakeSettings(server), credentials: creds, logger: testLogger)
        #expect(c.loginMethod == "XOAUTH2")
        try await c.quit()
        #expect(server.commands.filter { $0 == "AUTH XOAUTH2" }.count == 2)
    }

    @Test func uncommittedDeletesAreKeptAndCommittedOnesGo() async throws {
        let server = try FakePOP3Server(.init(messages: sampleMessages(3)))
        defer { server.stop() }
        let creds = Credentials.password(user: "alice", "s3cret pass")
        let s1 = try await POP3Store.open(settings: fakeSettings(server), credentials: creds, logger: testLogger)
        let ids = try await s1.listMessages(in: .inbox).messages.map(\.id)
        try await s1.delete(ids, in: .inbox)
        #expect(s1.pendingDeletions == Set(ids))
        s1.abandon()
        #expect(server.deleted.isEmpty)
        let s2 = try await POP3Store.open(settings: fakeSettings(server), credentials: creds, logger: testLogger)
        #expect(try await s2.listMessages(in: .inbox).messages.map(\.id) == ids)
        try await s2.delete([ids[1]], in: .inbox)
        try await s2.close()
        #expect(server.deleted == [2])
    }

    @Test func storeRefusesWhatPOP3CannotDo() async throws {
        let server = try FakePOP3Server(.init(messages: sampleMessages(1)))
        defer { server.stop() }
        let store = try await POP3Store.open(settings: fakeSettings(server), credentials: .password(user: "alice", "s3cret pass"),
                                             logger: testLogger)
        #expect(!store.capabilities.contains(.append) && !store.capabilities.contains(.flags) && !store.capabilities.contains(.folders))
        await #expect(throws: MailError.self) { _ = try await store.append(to: .inbox, AppendRequest(), body: .bytes([1])) }
        await #expect(throws: MailError.self) { try await store.createFolder(FolderPath("Other")!) }
        let folders = try await store.folders()
        #expect(folders.map(\.path) == [.inbox] && folders.first?.messageCount == 1)
        try await store.close()
    }
}

import Foundation
import MailModel
import MailNet
import MailTestSupport
import Testing

@Suite(.enabled(if: DovecotFixture.serverTestsEnabled, "MAILFERRY_SKIP_SERVER_TESTS=1"))
struct DovecotFixtureTests {
    enum Endpoint: String, CaseIterable, Sendable {
        case imap, imaps, pop3, pop3s
    }

    func settings(_ f: DovecotFixture, _ e: Endpoint, host: String = "localhost", caFile: String? = nil) -> ConnectionSettings {
        let ca = caFile ?? f.caFile
        switch e {
        case .imap: return ConnectionSettings(host: host, port: f.imapPort, tls: .startTLS, caFile: ca)
        case .imaps: return ConnectionSettings(host: host, port: f.imapsPort, tls: .implicit, caFile: ca)
        case .pop3: return ConnectionSettings(host: host, port: f.pop3Port, tls: .startTLS, caFile: ca)
        case .pop3s: return ConnectionSettings(host: host, port: f.pop3sPort, tls: .implicit, caFile: ca)
        }
    }

    @Test(arguments: Endpoint.allCases)
    func greetsOnEveryPortInPlaintextAndTLS(_ endpoint: Endpoint) async throws {
        let fixture = try DovecotFixture.shared()
        let client = try await LineClient.connect(settings(fixture, endpoint))
        defer { Task { await client.close() } }
        switch endpoint {
        case .imap:
            #expect(try await client.line().hasPrefix("* OK"))
            let reply = try await client.command("a STARTTLS", until: "a ")
            #expect(reply.last?.hasPrefix("a OK") == true)
            try await client.startTLS()
            let caps = try await client.command("b CAPABILITY", until: "b ")
            #expect(caps.contains { $0.contains("AUTH=PLAIN") })
            #expect(caps.last?.hasPrefix("b OK") == true)
        case .imaps:
            #expect(try await client.line().hasPrefix("* OK"))
            #expect(try await client.command("a NOOP", until: "a ").last?.hasPrefix("a OK") == true)
        case .pop3:
            #expect(try await client.line().hasPrefix("+OK"))
            #expect(try await client.command("STLS", until: "").last?.hasPrefix("+OK") == true)
            try await client.startTLS()
            let capa = try await client.command("CAPA", until: ".")
            #expect(capa.first?.hasPrefix("+OK") == true)
            #expect(capa.contains("UIDL"))
        case .pop3s:
            #expect(try await client.line().hasPrefix("+OK"))
            #expect(try await client.command("CAPA", until: ".").first?.hasPrefix("+OK") == true)
        }
        await client.close()
    }

    @Test func certificateWithoutCAFileIsATLSErrorNamingTheHost() async throws {
        let fixture = try DovecotFixture.shared()
        var s = settings(fixture, .imaps)
        s.caFile = nil
        let error = await #expect(throws: MailError.self) { _ = try await LineClient.connect(s) }
        #expect(error?.kind == .tls)
        #expect(error?.message.contains("localhost") == true)
        #expect(error?.hint?.contains("--ca-file") == true)
        #expect(error?.retryable == false)
    }

    @Test func certificateNamesTheLoopbackAddress() async throws {
        let fixture = try DovecotFixture.shared()
        let client = try await LineClient.connect(settings(fixture, .pop3s, host: "127.0.0.1"))
        #expect(try await client.line().hasPrefix("+OK"))
        await client.close()
    }

    @Test func plaintextIMAPIntoTLSPortFailsCleanly() async throws {
        let fixture = try DovecotFixture.shared()
        // Implicit TLS against the STARTTLS port: the server answers in plaintext.
        let s = ConnectionSettings(host: "localhost", port: fixture.imapPort, tls: .implicit, caFile: fixture.caFile,
                                   connectTimeout: .seconds(5))
        let error = await #expect(throws: MailError.self) { _ = try await LineClient.connect(s) }
        #expect(error?.kind == .tls || error?.kind == .connection)
    }

    @Test func refusedPortIsARetryableConnectionError() async throws {
        let port = try DovecotFixture.freePorts(1)[0]
        let s = ConnectionSettings(host: "127.0.0.1", port: port, tls: .none, connectTimeout: .seconds(5))
        let error = await #expect(throws: MailError.self) { _ = try await LineClient.connect(s) }
        #expect(error?.kind == .connection)
        #expect(error?.retryable == true)
        #expect(error?.message.contains("127.0.0.1:\(port)") == true)
    }

    @Test func seededMessagesKeepBytesFlagsAndDates() async throws {
        let fixture = try DovecotFixture.shared()
        let account = fixture.makeUser(prefix: "seed")
        let date = InternalDate(secondsSinceEpoch: 1_262_304_000)  // 2010-01-01
        let body1 = "From: a@example.com\r\nSubject: one\r\n\r\nbody with 8-bit \u{e9}\r\n"
        let body2 = "Subject: two\n\nbare LF body\n"
        let uids = try fixture.seed(user: account.user, folder: "Archive/2010 é", messages: [
            SeedMessage(text: body1, flags: [.seen, .flagged, Flag("$Label1")], internalDate: date),
            SeedMessage(text: body2, flags: [.answered], internalDate: InternalDate(secondsSinceEpoch: 1_300_000_000)),
        ])
        #expect(uids == [1, 2])
        let stored = try fixture.messages(user: account.user, folder: "Archive/2010 é")
        #expect(stored.count == 2)
        #expect(stored.first?.bytes == Array(body1.utf8))
        #expect(stored.first?.flags == [.seen, .flagged, Flag("$Label1")])
        #expect(stored.first?.internalDate == date)
        #expect(stored.last?.bytes == Array(body2.utf8))
        #expect(stored.last?.flags == [.answered])
        #expect(try fixture.folders(user: account.user).contains("Archive/2010 é"))

        // The same messages over IMAPS with a normal login.
        let client = try await LineClient.connect(settings(fixture, .imaps))
        _ = try await client.line()
        #expect(try await client.command("a LOGIN \(account.user) \(account.password)", until: "a ").last?.hasPrefix("a OK") == true)
        let select = try await client.command("b EXAMINE \"Archive/2010 &AOk-\"", until: "b ")
        #expect(select.contains("* 2 EXISTS"))
        let fetch = try await client.command("c UID FETCH 1 (FLAGS INTERNALDATE)", until: "c ")
        #expect(fetch.contains { $0.contains("$Label1") && $0.contains("\\Seen") && $0.contains("01-Jan-2010 00:00:00 +0000") })
        await client.close()
    }

    @Test func pop3SeesTheSeededInbox() async throws {
        let fixture = try DovecotFixture.shared()
        let account = fixture.makeUser(prefix: "pop")
        let text = "Subject: pop\r\n\r\n.leading dot\r\n"
        try fixture.seed(user: account.user, messages: [SeedMessage(text: text)])
        let client = try await LineClient.connect(settings(fixture, .pop3s))
        _ = try await client.line()
        #expect(try await client.command("USER \(account.user)", until: "").last?.hasPrefix("+OK") == true)
        #expect(try await client.command("PASS \(account.password)", until: "").last?.hasPrefix("+OK") == true)
        #expect(try await client.command("STAT", until: "").last == "+OK 1 \(text.utf8.count)")
        let uidl = try await client.command("UIDL", until: ".")
        #expect(uidl.count == 3)
        #expect(uidl[1].range(of: #"^1 [0-9a-fA-F]{16}$"#, options: .regularExpression) != nil)
        let retr = try await client.command("RETR 1", until: ".")
        #expect(retr.contains("..leading dot"))
        _ = try await client.command("QUIT", until: "")
        await client.close()
    }

    @Test func masterUserLogsInAsTheTarget() async throws {
        let fixture = try DovecotFixture.shared()
        let account = fixture.makeUser(prefix: "target")
        try fixture.seed(user: account.user, messages: [SeedMessage(text: "Subject: m\r\n\r\nx\r\n")])
        let master = fixture.masterLogin(as: account.user)
        let client = try await LineClient.connect(settings(fixture, .imaps))
        _ = try await client.line()
        #expect(try await client.command("a LOGIN \(master.user) \(master.password)", until: "a ").last?.hasPrefix("a OK") == true)
        #expect(try await client.command("b SELECT INBOX", until: "b ").contains("* 1 EXISTS"))
        await client.close()

        // SASL PLAIN with an authorization identity, as an admin migration sends it.
        let plain = SASLPlain(authorizationIdentity: account.user, authenticationIdentity: fixture.masterUser,
                              password: fixture.masterPassword)
        let second = try await LineClient.connect(settings(fixture, .imaps))
        _ = try await second.line()
        let reply = try await second.command("a AUTHENTICATE PLAIN \(SASL.encode(plain.message, initial: true))", until: "a ")
        #expect(reply.last?.hasPrefix("a OK") == true)
        #expect(try await second.command("b SELECT INBOX", until: "b ").contains("* 1 EXISTS"))
        await second.close()
    }

    @Test func wrongPasswordIsRefused() async throws {
        let fixture = try DovecotFixture.shared()
        let client = try await LineClient.connect(settings(fixture, .imaps))
        _ = try await client.line()
        #expect(try await client.command("a LOGIN someone wrong-password", until: "a ").last?.hasPrefix("a NO") == true)
        await client.close()
    }

    @Test func servesAMaildirATestWrote() async throws {
        let fixture = try DovecotFixture.shared()
        let account = fixture.makeUser(prefix: "ext")
        let tree = FileManager.default.temporaryDirectory.appendingPathComponent("mf-ext-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: tree) }
        for sub in ["cur", "new", "tmp", "Sent/cur", "Sent/new", "Sent/tmp"] {
            try FileManager.default.createDirectory(atPath: tree + "/" + sub, withIntermediateDirectories: true)
        }
        let message = "Subject: ours\r\n\r\nwritten by a test\r\n"
        let file = tree + "/Sent/cur/1600000000.M1P1.test:2,RS"
        try Data(message.utf8).write(to: URL(fileURLWithPath: file))
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSince1970: 1_600_000_000)], ofItemAtPath: file)
        let served = try fixture.serveMaildir(copying: tree, for: account.user)
        #expect(fixture.mailRoot(for: account.user) == served)
        let stored = try fixture.messages(user: account.user, folder: "Sent")
        #expect(stored.count == 1)
        #expect(stored.first?.bytes == Array(message.utf8))
        #expect(stored.first?.flags == [.seen, .answered])
        #expect(stored.first?.internalDate == InternalDate(secondsSinceEpoch: 1_600_000_000))
    }

    @Test func usersDoNotSeeEachOther() throws {
        let fixture = try DovecotFixture.shared()
        let a = fixture.makeUser(prefix: "iso")
        let b = fixture.makeUser(prefix: "iso")
        #expect(a.user != b.user)
        try fixture.seed(user: a.user, messages: [SeedMessage(text: "Subject: a\r\n\r\na\r\n")])
        #expect(try fixture.messages(user: b.user).isEmpty)
        #expect(!"\(a)".contains(a.password))
    }
}

@Suite(.enabled(if: DovecotFixture.serverTestsEnabled, "MAILFERRY_SKIP_SERVER_TESTS=1"))
struct DovecotFixtureLifecycleTests {
    @Test func aStaleFixtureFromADeadRunIsStoppedAndRemoved() throws {
        let parent = ProcessInfo.processInfo.environment["MAILFERRY_FIXTURE_ROOT"] ?? "/tmp/mailferry-fixtures"
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        let dir = parent + "/dv-stale-\(UUID().uuidString.prefix(8))"
        let fixture = try DovecotFixture.start(directory: dir, detached: true)
        #expect(fixture.isRunning)
        // Pretend it belongs to a run that has died: a pid that has just exited.
        let dead = try ProcessRunner.spawnDetached("/bin/true", [])
        var status: Int32 = 0
        _ = waitpid(dead, &status, 0)
        var info = fixture.info
        info.ownerPID = dead
        try JSONEncoder().encode(info).write(to: URL(fileURLWithPath: dir + "/fixture.json"))
        DovecotFixture.cleanUpStaleFixtures()
        #expect(!fixture.isRunning)
        #expect(!FileManager.default.fileExists(atPath: dir))
        fixture.stop(removeFiles: true)  // no-op unless the cleanup failed
    }

    @Test func detachedFixtureStartsAttachesAndStops() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mf-detached-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fixture = try DovecotFixture.start(directory: dir, detached: true)
        let attached = try DovecotFixture.attach(directory: dir)
        #expect(attached.info == fixture.info)
        #expect(DovecotFixture.canConnect(port: attached.imapsPort))
        attached.stop(removeFiles: false)
        #expect(!fixture.isRunning)
        #expect(!DovecotFixture.canConnect(port: fixture.imapsPort))
        #expect(FileManager.default.fileExists(atPath: dir + "/log/dovecot.log"))
    }
}

import Foundation
import Logging
import MailModel
import MailNet
import MailStore
import MailTestSupport
import NIOCore
import POP3Core
import Testing
@testable import POP3Client

/// The corpus folder: `MAILFERRY_CORPUS`, else `../shared/mail-corpus` next to the package.
func corpusDirectory() -> String? {
    if let env = ProcessInfo.processInfo.environment["MAILFERRY_CORPUS"], !env.isEmpty {
        return FileManager.default.fileExists(atPath: env + "/messages") ? env : nil
    }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let dir = root.deletingLastPathComponent().appendingPathComponent("shared/mail-corpus").path
    return FileManager.default.fileExists(atPath: dir + "/messages") ? dir : nil
}

struct CorpusMessage: Sendable {
    var name: String
    var bytes: [UInt8]
    var traits: String
}

func loadCorpus() throws -> [CorpusMessage]? {
    guard let dir = corpusDirectory() else { return nil }
    let manifest = try String(contentsOfFile: dir + "/manifest.tsv", encoding: .utf8)
    var out: [CorpusMessage] = []
    for line in manifest.split(separator: "\n").dropFirst() {
        let cols = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        guard cols.count >= 7 else { continue }
        let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/messages/" + cols[0]))
        out.append(CorpusMessage(name: cols[0], bytes: [UInt8](data), traits: cols[6]))
    }
    return out
}

/// Resident set size of this process, in bytes (Linux /proc).
func residentBytes() -> Int64 {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let digits = line.filter(\.isNumber)
        return (Int64(digits) ?? 0) * 1024
    }
    return 0
}

func dovecotSettings(_ f: DovecotFixture, _ tls: TLSMode, timeout: Duration = .seconds(60)) -> ConnectionSettings {
    ConnectionSettings(host: f.host, port: tls == .implicit ? f.pop3sPort : f.pop3Port, tls: tls, caFile: f.caFile,
                       connectTimeout: .seconds(20), responseTimeout: timeout)
}

/// Streams every listed message and returns (id, key, byte count) in order.
func keysOf(_ store: POP3Store, _ ids: [MessageID]) async throws -> [(MessageID, MessageKey, Int64)] {
    let box = KeyBox()
    _ = try await store.fetchMessages(ids, in: .inbox) { info, body in
        var h = MessageHasher()
        for try await chunk in body { chunk.withUnsafeReadableBytes { h.update($0) } }
        box.add((info.id, h.finalize(), h.rawCount))
    }
    return box.items
}

final class KeyBox: @unchecked Sendable {
    private let lock = NSLock()
    private var _items: [(MessageID, MessageKey, Int64)] = []
    func add(_ i: (MessageID, MessageKey, Int64)) { lock.lock(); _items.append(i); lock.unlock() }
    var items: [(MessageID, MessageKey, Int64)] { lock.lock(); defer { lock.unlock() }; return _items }
}

@Suite(.serialized, .enabled(if: DovecotFixture.serverTestsEnabled))
struct DovecotPOP3Tests {
    @Test(arguments: [TLSMode.startTLS, .implicit])
    func corpusListedRetrievedByteExactAndDeleted(tls: TLSMode) async throws {
        guard let corpus = try loadCorpus() else {
            print("SKIPPED: mail corpus not found (set MAILFERRY_CORPUS or provide ../shared/mail-corpus)")
            return
        }
        let f = try DovecotFixture.shared()
        let account = f.makeUser(prefix: "pop3corpus")
        try f.seed(user: account.user, messages: corpus.map { SeedMessage($0.bytes) })
        let creds = Credentials.password(user: account.user, account.password)

        let store = try await POP3Store.open(settings: dovecotSettings(f, tls), credentials: creds, logger: testLogger)
        #expect(store.isPipelining)
        let listing = try await store.listMessages(in: .inbox, options: ListOptions(includeHeaders: true))
        #expect(listing.messages.count == corpus.count)
        #expect(!store.idsAreSynthetic)
        #expect(Set(listing.messages.map(\.id)).count == corpus.count)
        let dated = Dictionary(grouping: listing.messages, by: { $0.dateSource })
        #expect(listing.messages.allSatisfy { $0.dateSource != nil && $0.internalDate != nil && $0.headers != nil })

        let got = try await keysOf(store, listing.messages.map(\.id))
        #expect(got.count == corpus.count)
        var mismatches: [String] = []
        for (i, c) in corpus.enumerated() where i < got.count {
            if got[i].1 != MessageKey.of(c.bytes) { mismatches.append("\(c.name) [\(c.traits)] got \(got[i].2) bytes, file has \(c.bytes.count)") }
        }
        #expect(mismatches.isEmpty, "not byte-exact: \(mismatches.prefix(10).joined(separator: "; "))")
        let expectedKeys = corpus.map { MessageKey.of($0.bytes) }.sorted()
        #expect(got.map(\.1).sorted() == expectedKeys)
        print("POP3 \(tls.rawValue): \(got.count) corpus messages byte-exact; dates: "
              + dated.map { "\($0.key?.rawValue ?? "none")=\($0.value.count)" }.sorted().joined(separator: " "))

        // Deleted on request, committed by QUIT.
        try await store.delete(listing.messages.map(\.id), in: .inbox)
        try await store.close()
        let after = try await POP3Store.open(settings: dovecotSettings(f, tls), credentials: creds, logger: testLogger)
        #expect(try await after.listMessages(in: .inbox).messages.isEmpty)
        try await after.close()
        #expect(try f.messages(user: account.user).isEmpty)
    }

    @Test func dotLinesAndMissingFinalNewlineComeBackExact() async throws {
        let f = try DovecotFixture.shared()
        let account = f.makeUser(prefix: "pop3dots")
        let samples: [[UInt8]] = [
            Array("Subject: dots\r\n\r\n.\r\n..\r\n...\r\n.x\r\n. \r\nend\r\n".utf8),
            Array("Subject: last line is a dot\r\n\r\nbody\r\n.".utf8),
            Array("Subject: bare LF\n\n.\n..\nno final newline".utf8),
            Array("Subject: only header\r\n".utf8),
            Array("Subject: ends with CRLF CRLF\r\n\r\nx\r\n\r\n".utf8),
        ]
        try f.seed(user: account.user, messages: samples.map { SeedMessage($0) })
        let store = try await POP3Store.open(settings: dovecotSettings(f, .implicit),
                                             credentials: .password(user: account.user, account.password), logger: testLogger)
        let ids = try await store.listMessages(in: .inbox).messages.map(\.id)
        let got = try await keysOf(store, ids)
        #expect(got.map(\.1) == samples.map { MessageKey.of($0) })
        try await store.close()
    }

    @Test func fiftyMegabytesStreamWithFlatMemory() async throws {
        let f = try DovecotFixture.shared()
        let account = f.makeUser(prefix: "pop3big")
        let expected: MessageKey = try {
            var m = Array("Subject: a big one\r\nMessage-ID: <big@example.com>\r\n\r\n".utf8)
            m.reserveCapacity(52_500_000)
            let line = Array(String(repeating: "0123456789", count: 7).utf8) + [0x0D, 0x0A]
            var i = 0
            while m.count < 50 * 1024 * 1024 {
                if i % 997 == 0 { m += Array(".\r\n..dot stuffed\r\n".utf8) }
                m += line
                i += 1
            }
            try f.seed(user: account.user, messages: [SeedMessage(m)])
            return MessageKey.of(m)
        }()
        let store = try await POP3Store.open(settings: dovecotSettings(f, .startTLS),
                                             credentials: .password(user: account.user, account.password), logger: testLogger)
        let ids = try await store.listMessages(in: .inbox).messages.map(\.id)
        let baseline = residentBytes()
        let peak = PeakBox(baseline)
        let box = KeyBox()
        _ = try await store.fetchMessages(ids, in: .inbox) { info, body in
            var h = MessageHasher()
            var sinceSample: Int64 = 0
            for try await chunk in body {
                chunk.withUnsafeReadableBytes { h.update($0) }
                sinceSample += Int64(chunk.readableBytes)
                if sinceSample > 512 * 1024 {
                    sinceSample = 0
                    peak.sample(residentBytes())
                }
            }
            box.add((info.id, h.finalize(), h.rawCount))
        }
        try await store.close()
        #expect(box.items.first?.1 == expected)
        let growth = peak.value - baseline
        print("POP3 50 MB message: RSS grew by \(growth / 1024) KiB while streaming \((box.items.first?.2 ?? 0) / 1024 / 1024) MiB")
        #expect(!MemoryBounds.checked || growth < 32 * 1024 * 1024, "memory grew by \(growth) bytes while streaming a 50 MB message")
    }

    @Test func sessionThatDiesBeforeQuitDeletesNothing() async throws {
        let f = try DovecotFixture.shared()
        let account = f.makeUser(prefix: "pop3nodelete")
        try f.seed(user: account.user, messages: (1...5).map { SeedMessage(text: "Subject: keep \($0)\r\n\r\nbody \($0)\r\n") })
        let creds = Credentials.password(user: account.user, account.password)
        let s1 = try await POP3Store.open(settings: dovecotSettings(f, .startTLS), credentials: creds, logger: testLogger)
        let ids = try await s1.listMessages(in: .inbox).messages.map(\.id)
        try await s1.delete(ids, in: .inbox)
        #expect(try await s1.folders().first?.messageCount == 0) // marked within the session
        s1.abandon() // the connection drops: no QUIT
        try await Task.sleep(for: .milliseconds(200))
        let s2 = try await POP3Store.open(settings: dovecotSettings(f, .startTLS), credentials: creds, logger: testLogger)
        #expect(try await s2.listMessages(in: .inbox).messages.map(\.id) == ids)
        try await s2.close()
        #expect(try f.messages(user: account.user).count == 5)
    }

    @Test(arguments: ["USER", "PLAIN", "LOGIN"])
    func loginMethods(_ method: String) async throws {
        let f = try DovecotFixture.shared()
        let account = f.makeUser(prefix: "pop3login")
        try f.seed(user: account.user, messages: [SeedMessage(text: "Subject: x\r\n\r\ny\r\n")])
        try await POP3Connection.withConnection(settings: dovecotSettings(f, .startTLS),
                                                credentials: .password(user: account.user, account.password),
                                                options: POP3ClientOptions(loginMethod: method), logger: testLogger) { c in
            #expect(c.loginMethod == method)
            let n = try await c.stat().count
            #expect(n == 1)
        }
    }

    @Test func masterUserWithAuthorizationIdentity() async throws {
        let f = try DovecotFixture.shared()
        let account = f.makeUser(prefix: "pop3authz")
        try f.seed(user: account.user, messages: [SeedMessage(text: "Subject: a\r\n\r\nb\r\n"), SeedMessage(text: "Subject: c\r\n\r\nd\r\n")])
        let creds = Credentials.password(user: f.masterUser, f.masterPassword, authorizationIdentity: account.user)
        try await POP3Connection.withConnection(settings: dovecotSettings(f, .implicit), credentials: creds, logger: testLogger) { c in
            #expect(c.loginMethod == "PLAIN")
            let n = try await c.stat().count
            #expect(n == 2)
        }
    }

    @Test func wrongPasswordAndUntrustedCertificate() async throws {
        let f = try DovecotFixture.shared()
        let account = f.makeUser(prefix: "pop3bad")
        await #expect {
            _ = try await POP3Connection.connect(settings: dovecotSettings(f, .startTLS),
                                                 credentials: .password(user: account.user, "not the password"), logger: testLogger)
        } throws: { ($0 as? MailError)?.kind == .authentication }
        var noCA = dovecotSettings(f, .implicit)
        noCA.caFile = nil
        await #expect {
            _ = try await POP3Connection.connect(settings: noCA, credentials: .password(user: account.user, account.password),
                                                 logger: testLogger)
        } throws: { ($0 as? MailError)?.kind == .tls }
        var noCASTLS = dovecotSettings(f, .startTLS)
        noCASTLS.caFile = nil
        await #expect {
            _ = try await POP3Connection.connect(settings: noCASTLS, credentials: .password(user: account.user, account.password),
                                                 logger: testLogger)
        } throws: { ($0 as? MailError)?.kind == .tls }
    }

    /// Figures, not assertions: set MAILFERRY_POP3_BENCH=1 to run. Each set is
    /// retrieved over POP3S directly (loopback) and through a relay adding
    /// 2 ms each way (a 4 ms round trip, a nearby network), with PIPELINING
    /// on and off.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["MAILFERRY_POP3_BENCH"] == "1"))
    func pipelinedVersusUnpipelinedRates() async throws {
        let f = try DovecotFixture.shared()
        var sets: [(String, [[UInt8]])] = [
            ("1000 small messages", (1...1000).map { Array("Subject: small \($0)\r\nMessage-ID: <s\($0)@x>\r\n\r\nhello \($0)\r\n".utf8) }),
        ]
        if let corpus = try loadCorpus() { sets.append(("735 corpus messages", corpus.map(\.bytes))) }
        let proxy = try await LatencyProxy(targetPort: f.pop3sPort, delay: .milliseconds(2))
        for (name, messages) in sets {
            let account = f.makeUser(prefix: "pop3bench")
            try f.seed(user: account.user, messages: messages.map { SeedMessage($0) })
            for (path, port) in [("loopback", f.pop3sPort), ("4 ms RTT", proxy.port)] {
                for pipelining in [true, false] {
                    var settings = dovecotSettings(f, .implicit)
                    settings.port = port
                    let options = POP3StoreOptions(client: POP3ClientOptions(pipelining: pipelining))
                    let store = try await POP3Store.open(settings: settings, credentials: .password(user: account.user, account.password),
                                                         options: options, logger: testLogger)
                    let ids = try await store.listMessages(in: .inbox).messages.map(\.id)
                    let clock = ContinuousClock()
                    let start = clock.now
                    let got = try await keysOf(store, ids)
                    let elapsed = clock.now - start
                    try await store.close()
                    let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                    let bytes = got.reduce(Int64(0)) { $0 + $1.2 }
                    print(String(format: "POP3 RETR %@, POP3S %@, pipelining %@: %d msgs in %.2f s = %.0f msg/s, %.1f MB/s",
                                 name, path, pipelining ? "on " : "off", got.count, secs, Double(got.count) / secs,
                                 Double(bytes) / secs / 1e6))
                }
            }
        }
        await proxy.stop()
    }
}

final class PeakBox: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: Int64
    init(_ v: Int64) { _value = v }
    func sample(_ v: Int64) { lock.lock(); _value = max(_value, v); lock.unlock() }
    var value: Int64 { lock.lock(); defer { lock.unlock() }; return _value }
}

import Foundation
import IMAPClient
import IMAPCore
import Logging
import MailModel
import MailNet
import MailStore
import MailTestSupport
import NIOCore
import Testing

/// The IMAP client and store against the real Dovecot fixture, over STARTTLS and IMAPS.
@Suite(.serialized, .enabled(if: DovecotFixture.serverTestsEnabled, "MAILFERRY_SKIP_SERVER_TESTS=1"))
struct DovecotIMAPTests {
    static let logger = Logger(label: "test.imap.dovecot")
    static let modes: [TLSMode] = [.startTLS, .implicit]

    static func settings(_ f: DovecotFixture, _ tls: TLSMode, caFile: String?? = .none) -> ConnectionSettings {
        ConnectionSettings(host: f.host, port: tls == .implicit ? f.imapsPort : f.imapPort, tls: tls,
                           caFile: caFile ?? f.caFile, connectTimeout: .seconds(10), responseTimeout: .seconds(30))
    }

    static func open(_ f: DovecotFixture, _ tls: TLSMode, _ account: TestAccount, options: IMAPStoreOptions = .init()) async throws -> IMAPStore {
        try await IMAPStore.open(settings: settings(f, tls), credentials: .password(user: account.user, account.password),
                                 options: options, logger: logger)
    }

    static func message(_ subject: String, body: String = "Hello.\r\n") -> [UInt8] {
        Array("From: a@example.com\r\nTo: b@example.com\r\nSubject: \(subject)\r\nMessage-ID: <\(subject.hashValue)@example.com>\r\nDate: Fri, 01 Mar 2024 09:05:00 +0100\r\n\r\n\(body)".utf8)
    }

    @Test(arguments: modes)
    func nestedNonASCIIFoldersWithFlagsKeywordsAndDates(_ tls: TLSMode) async throws {
        let f = try DovecotFixture.shared()
        let store = try await Self.open(f, tls, f.makeUser(prefix: "folders"))
        defer { Task { try? await store.close() } }
        let paths = [FolderPath(components: ["Archiv", "Größe", "日本語"])!, FolderPath(components: ["Tom & Jerry"])!,
                     FolderPath(components: ["Отправленные"])!]
        for p in paths { try await store.createFolder(p) }
        try await store.createFolder(paths[0]) // already there: fine
        let listed = try await store.folders()
        for p in paths + [FolderPath(components: ["Archiv"])!, FolderPath(components: ["Archiv", "Größe"])!, .inbox] {
            #expect(listed.contains { $0.path == p }, "\(p) missing from \(listed.map(\.path))")
        }
        let date = InternalDate.from(year: 2021, month: 12, day: 24, hour: 18, minute: 30, second: 5, zoneMinutes: 60)!
        let bytes = Self.message("nested")
        let flags: Flags = [.seen, .flagged, .answered, Flag("Work"), .forwarded]
        let r = try await store.append(to: paths[0], AppendRequest(flags: flags, internalDate: date), body: .bytes(bytes)).result()
        #expect(r.id != nil && r.uidValidity != nil)
        #expect(r.droppedFlags.isEmpty)
        #expect(r.key == MessageKey.of(bytes))
        let listing = try await store.listMessages(in: paths[0], options: ListOptions(includeHeaders: true))
        #expect(listing.messages.count == 1)
        let m = try #require(listing.messages.first)
        #expect(m.id == r.id)
        #expect(m.flags == flags)
        #expect(m.internalDate == date)
        #expect(m.size == Int64(bytes.count))
        #expect(m.headers?.messageID == "<\("nested".hashValue)@example.com>")
        #expect(listing.validity.uidValidity == r.uidValidity)
        #expect(listing.validity.uidNext != nil)
        let got = BodyBox()
        let missing = try await store.fetchMessages([m.id, MessageID("999")], in: paths[0]) { info, body in
            got.set(info, try await body.collect())
        }
        #expect(missing == [MessageID("999")])
        #expect(got.bytes == bytes)
        #expect(got.info?.flags == flags)
    }

    @Test(arguments: modes)
    func refusedKeywordsAreReported(_ tls: TLSMode) async throws {
        let f = try DovecotFixture.shared()
        let store = try await Self.open(f, tls, f.makeUser(prefix: "kw"))
        defer { Task { try? await store.close() } }
        // "bad keyword" is not an atom: it cannot be stored, the message still goes.
        let r = try await store.append(to: .inbox, AppendRequest(flags: [.seen, Flag("bad keyword")]), body: .bytes(Self.message("kw"))).result()
        #expect(r.droppedFlags == [Flag("bad keyword")])
        let l = try await store.listMessages(in: .inbox)
        #expect(l.messages.first?.flags == [.seen])
    }

    @Test func corpusRoundTripsByteExact() async throws {
        guard let dir = corpusDirectory() else {
            print("corpus not found (set MAILFERRY_CORPUS or provide ../shared/mail-corpus): skipping corpusRoundTripsByteExact")
            return
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/messages").filter { $0.hasSuffix(".eml") }.sorted()
        #expect(files.count > 700)
        let f = try DovecotFixture.shared()
        let store = try await Self.open(f, .startTLS, f.makeUser(prefix: "corpus"))
        defer { Task { try? await store.close() } }
        let folder = FolderPath(components: ["Corpus"])!
        try await store.createFolder(folder)
        var expected: [MessageKey: Int] = [:]
        // The store hashes what it sends (`keysWrittenBytes`): the engine takes
        // each result's key and sizes as they are, so they must be the bytes'.
        #expect(store.capabilities.contains(.keysWrittenBytes))
        var pending: [(PendingAppend, MessageHasher, Int)] = []
        var refused = 0
        func settle() async throws {
            for (p, h, raw) in pending {
                let r = try await p.result()
                #expect(r.key == h.finalize())
                #expect(r.size == Int64(raw))
                #expect(r.normalizedSize == h.normalizedCount)
            }
            pending.removeAll()
        }
        for name in files {
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/messages/" + name)))
            do {
                var h = MessageHasher()
                h.update(bytes)
                pending.append((try await store.append(to: folder, AppendRequest(flags: [.seen]), body: .bytes(bytes)), h, bytes.count))
                expected[MessageKey.of(bytes), default: 0] += 1
            } catch let e as MailError where e.scope == .message {
                refused += 1
                print("corpus message \(name) refused: \(e)")
            }
            if pending.count >= 64 { try await settle() }
        }
        try await settle()
        #expect(refused == 0)
        let listing = try await store.listMessages(in: folder)
        #expect(listing.messages.count == files.count - refused)
        let keys = KeyBag()
        let missing = try await store.fetchMessages(listing.messages.map(\.id), in: folder) { info, body in
            var h = MessageHasher()
            for try await chunk in body { chunk.withUnsafeReadableBytes { h.update($0) } }
            keys.add(h.finalize())
        }
        #expect(missing.isEmpty)
        #expect(keys.counts == expected)
    }

    @Test func fiftyMegabyteMessageKeepsMemoryFlat() async throws {
        let f = try DovecotFixture.shared()
        let store = try await Self.open(f, .implicit, f.makeUser(prefix: "big"))
        defer { Task { try? await store.close() } }
        let size = 50 * 1024 * 1024
        let header = Array("From: big@example.com\r\nSubject: big\r\nMessage-ID: <big@example.com>\r\n\r\n".utf8)
        let line = Array(String(repeating: "0123456789abcdef", count: 4).utf8) + [0x0D, 0x0A]
        let source = GeneratedBody(header: header, line: line, total: size)
        let rss = RSSSampler()
        rss.sample()
        let baseline = rss.peak
        let r = try await store.append(to: .inbox, AppendRequest(), body: MessageBody(size: Int64(size)) {
            rss.sample()
            return source.next()
        }).result()
        #expect(r.size == Int64(size))
        #expect(r.key == source.key())
        let id = try #require(r.id)
        let fetched = KeyBag()
        let missing = try await store.fetchMessages([id], in: .inbox) { info, body in
            var h = MessageHasher()
            var n = 0
            for try await chunk in body {
                n += chunk.readableBytes
                chunk.withUnsafeReadableBytes { h.update($0) }
                if n % (1 << 20) < chunk.readableBytes { rss.sample() }
            }
            #expect(n == size)
            fetched.add(h.finalize())
        }
        #expect(missing.isEmpty)
        #expect(fetched.counts == [r.key: 1])
        let growth = rss.peak - baseline
        print("50 MB message: RSS baseline \(baseline / 1024) KiB, peak growth \(growth / 1024) KiB")
        // Holding the message whole would add at least 50 MB.
        #expect(!MemoryBounds.checked || growth < 40 * 1024 * 1024, "RSS grew by \(growth) bytes")
    }

    /// A body without a size (as POP3 hands them out) is spooled to an unlinked
    /// temp file for the APPEND literal, not collected in memory.
    @Test func unknownSizeBodyIsSpooledToDiskNotMemory() async throws {
        let f = try DovecotFixture.shared()
        let account = try f.makeUser(prefix: "spool")
        let store = try await Self.open(f, .implicit, account)
        defer { Task { try? await store.close() } }
        let size = 24 * 1024 * 1024
        let header = Array("From: spool@example.com\r\nSubject: spool\r\nMessage-ID: <spool@example.com>\r\n\r\n".utf8)
        let line = Array(String(repeating: "fedcba9876543210", count: 4).utf8) + [0x0D, 0x0A]
        let source = GeneratedBody(header: header, line: line, total: size)
        let rss = RSSSampler()
        rss.sample()
        let baseline = rss.peak
        let r = try await store.append(to: .inbox, AppendRequest(), body: MessageBody(size: nil) {
            rss.sample()
            return source.next()
        }).result()
        #expect(r.size == Int64(size))
        #expect(r.key == source.key())
        let server = try f.messages(user: account.user, folder: "INBOX")
        #expect(server.count == 1)
        #expect(server.first.map { MessageKey.of($0.bytes) } == source.key())
        let growth = rss.peak - baseline
        print("24 MB body of unknown size: RSS peak growth \(growth / 1024) KiB")
        // Collecting it in memory would add at least 24 MB.
        #expect(!MemoryBounds.checked || growth < 16 * 1024 * 1024, "RSS grew by \(growth) bytes")
    }

    @Test(arguments: modes)
    func condstoreListsOnlyChanges(_ tls: TLSMode) async throws {
        let f = try DovecotFixture.shared()
        let store = try await Self.open(f, tls, f.makeUser(prefix: "condstore"))
        defer { Task { try? await store.close() } }
        #expect(store.capabilities.contains(.changeTracking))
        var ids: [MessageID] = []
        for i in 1...3 {
            let r = try await store.append(to: .inbox, AppendRequest(), body: .bytes(Self.message("c\(i)"))).result()
            ids.append(try #require(r.id))
        }
        let first = try await store.listMessages(in: .inbox)
        #expect(first.messages.count == 3 && !first.isIncremental)
        #expect(first.validity.highestModSeq != nil)
        try await store.setFlags([.flagged], .add, for: [ids[0]], in: .inbox)
        try await store.delete([ids[1]], in: .inbox)
        let r4 = try await store.append(to: .inbox, AppendRequest(flags: [.seen]), body: .bytes(Self.message("c4"))).result()
        let changes = try await store.listMessages(in: .inbox, options: ListOptions(changedSince: first.validity))
        #expect(changes.isIncremental)
        #expect(Set(changes.messages.map(\.id)) == [ids[0], try #require(r4.id)])
        #expect(changes.messages.first { $0.id == ids[0] }?.flags == [.flagged])
        #expect(changes.vanished == [ids[1]])
        // Nothing changed since: an empty incremental listing.
        let none = try await store.listMessages(in: .inbox, options: ListOptions(changedSince: changes.validity))
        #expect(none.isIncremental && none.messages.isEmpty && none.vanished.isEmpty)
        // Another UIDVALIDITY: a full listing.
        var stale = changes.validity
        stale.uidValidity = (stale.uidValidity ?? 0) + 1
        let full = try await store.listMessages(in: .inbox, options: ListOptions(changedSince: stale))
        #expect(!full.isIncremental && full.messages.count == 3)
    }

    @Test(arguments: modes)
    func wrongPasswordIsAnAuthenticationError(_ tls: TLSMode) async throws {
        let f = try DovecotFixture.shared()
        let account = f.makeUser(prefix: "wrongpw")
        let clock = ContinuousClock()
        let start = clock.now
        do {
            _ = try await IMAPStore.open(settings: Self.settings(f, tls), credentials: .password(user: account.user, "not-the-password"),
                                         logger: Self.logger)
            Issue.record("login with a wrong password succeeded")
        } catch let e as MailError {
            #expect(e.kind == .authentication)
            #expect(e.exitCode == 3)
            #expect(!e.description.contains("not-the-password"))
        }
        #expect(clock.now - start < .seconds(20))
    }

    @Test(arguments: modes)
    func selfSignedCertificateWithoutCAFileNamesTheHost(_ tls: TLSMode) async throws {
        let f = try DovecotFixture.shared()
        let account = f.makeUser(prefix: "tls")
        let clock = ContinuousClock()
        let start = clock.now
        do {
            _ = try await IMAPStore.open(settings: Self.settings(f, tls, caFile: .some(nil)),
                                         credentials: .password(user: account.user, account.password), logger: Self.logger)
            Issue.record("connected without trusting the fixture's CA")
        } catch let e as MailError {
            #expect(e.kind == .tls, "\(e)")
            #expect(e.description.contains(f.host), "\(e)")
        }
        #expect(clock.now - start < .seconds(20))
    }

    @Test func messageWithNULBytesGoesAsLiteral8OrFailsClearly() async throws {
        let f = try DovecotFixture.shared()
        let store = try await Self.open(f, .implicit, f.makeUser(prefix: "nul"))
        defer { Task { try? await store.close() } }
        let bytes = Array("Subject: nul\r\n\r\nbefore".utf8) + [0] + Array("after\r\n".utf8)
        do {
            let r = try await store.append(to: .inbox, AppendRequest(), body: .bytes(bytes)).result()
            #expect(store.connection.has(.binary))
            #expect(r.key == MessageKey.of(bytes))
        } catch let e as MailError {
            // A server without BINARY: a clear per-message error, never a corrupt copy.
            #expect(!store.connection.has(.binary))
            #expect(e.scope == .message && e.kind == .unsupported, "\(e)")
        }
    }

    @Test func masterUserLoginWithAuthorizationIdentity() async throws {
        let f = try DovecotFixture.shared()
        let account = f.makeUser(prefix: "authz")
        let creds = Credentials(user: f.masterUser, authorizationIdentity: account.user, secret: .password(f.masterPassword))
        let store = try await IMAPStore.open(settings: Self.settings(f, .implicit), credentials: creds, logger: Self.logger)
        defer { Task { try? await store.close() } }
        _ = try await store.append(to: .inbox, AppendRequest(), body: .bytes(Self.message("authz"))).result()
        #expect(try await store.listMessages(in: .inbox).messages.count == 1)
    }

    @Test func clientCommandsDirectly() async throws {
        let f = try DovecotFixture.shared()
        let account = f.makeUser(prefix: "client")
        try await IMAPConnection.withConnection(settings: Self.settings(f, .implicit),
                                                credentials: .password(user: account.user, account.password),
                                                logger: Self.logger) { c in
            #expect(c.has(.idle) && c.has(.uidPlus), "\(c.capabilities.map(\.name).sorted())")
            try await c.execute(.create(MailboxName("Sub")))
            let status = try await c.execute(.status(MailboxName("Sub"), [.messages, .uidNext, .uidValidity]))
            #expect(status.untagged.contains { if case .status(_, let s) = $0 { return s.messages == 0 }; return false })
            try await c.execute(.select(.inbox))
            let idle = try await c.idle()
            try await idle.done()
            let search = try await c.execute(.uidSearch(.all))
            #expect(search.untagged.contains { if case .search(let s) = $0 { return s.numbers.isEmpty }; return false })
        }
    }
}

/// Corpus location: MAILFERRY_CORPUS or ../shared/mail-corpus from the package root.
func corpusDirectory() -> String? {
    var candidates: [String] = []
    if let env = ProcessInfo.processInfo.environment["MAILFERRY_CORPUS"] { candidates.append(env) }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    candidates.append(root.deletingLastPathComponent().appendingPathComponent("shared/mail-corpus").path)
    candidates.append("/work/shared/mail-corpus")
    return candidates.first { FileManager.default.fileExists(atPath: $0 + "/messages") }
}

final class BodyBox: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var info: MessageInfo?
    private(set) var bytes: [UInt8] = []
    func set(_ i: MessageInfo, _ b: ByteBuffer) { lock.withLock { info = i; bytes = Array(b.readableBytesView) } }
}

final class KeyBag: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var counts: [MessageKey: Int] = [:]
    func add(_ k: MessageKey) { lock.withLock { counts[k, default: 0] += 1 } }
}

/// A generated message of `total` bytes, handed out in 64 KiB chunks.
final class GeneratedBody: @unchecked Sendable {
    private let lock = NSLock()
    private var produced = 0
    private var hasher = MessageHasher()
    let total: Int
    private let chunk: ByteBuffer
    private let header: [UInt8]

    init(header: [UInt8], line: [UInt8], total: Int) {
        self.header = header
        self.total = total
        var b = ByteBuffer()
        while b.readableBytes + line.count <= 64 * 1024 { b.writeBytes(line) }
        chunk = b
    }

    func next() -> ByteBuffer? {
        lock.withLock {
            guard produced < total else { return nil }
            var out: ByteBuffer
            if produced == 0 {
                out = ByteBuffer(bytes: header)
            } else {
                out = chunk.getSlice(at: chunk.readerIndex, length: min(chunk.readableBytes, total - produced)) ?? ByteBuffer()
            }
            if produced + out.readableBytes > total { out = out.getSlice(at: out.readerIndex, length: total - produced) ?? out }
            produced += out.readableBytes
            out.withUnsafeReadableBytes { hasher.update($0) }
            return out
        }
    }

    func key() -> MessageKey { lock.withLock { hasher.finalize() } }
}

/// Peak resident set size from /proc/self/status.
final class RSSSampler: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var peak = 0

    func sample() {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kb = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return }
        lock.withLock { peak = max(peak, kb * 1024) }
    }
}

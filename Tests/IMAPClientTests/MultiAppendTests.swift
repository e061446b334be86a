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
import Testing

/// MULTIAPPEND (RFC 3502) against the real Dovecot fixture: many messages in
/// one command, each one's bytes, flags and INTERNALDATE kept, APPENDUID's
/// uid-set mapped back to each message.
@Suite(.serialized, .enabled(if: DovecotFixture.serverTestsEnabled, "MAILFERRY_SKIP_SERVER_TESTS=1"))
struct DovecotMultiAppendTests {
    static let logger = Logger(label: "test.imap.multiappend")

    static func message(_ i: Int, size: Int = 0) -> [UInt8] {
        var text = "From: a@example.com\r\nTo: b@example.com\r\nSubject: batch \(i)\r\nMessage-ID: <batch-\(i)@example.com>\r\n\r\nBody \(i)\r\n"
        if size > text.utf8.count { text += String(repeating: "x", count: size - text.utf8.count - 2) + "\r\n" }
        return Array(text.utf8)
    }

    @Test(arguments: [TLSMode.startTLS, .implicit])
    func batchKeepsEveryMessagesBytesFlagsDateAndUID(_ tls: TLSMode) async throws {
        let f = try DovecotFixture.shared()
        let account = f.makeUser(prefix: "multi")
        let options = IMAPStoreOptions(multiAppendMessages: 7, multiAppendBytes: 64 * 1024)
        let store = try await DovecotIMAPTests.open(f, tls, account, options: options)
        defer { Task { try? await store.close() } }
        #expect(store.connection.has(.multiAppend))
        let folder = FolderPath(components: ["Stapel", "Größe"])!
        try await store.createFolder(folder)
        // Sizes straddle the LITERAL- limit and the byte bound, so batches end
        // by count, by bytes and at the end.
        var sent: [(bytes: [UInt8], flags: Flags, date: InternalDate)] = []
        var pending: [PendingAppend] = []
        let flagSets: [Flags] = [[.seen], [], [.flagged, .answered], [Flag("Work")], [.seen, .draft, Flag("$Label1")]]
        for i in 0..<40 {
            let bytes = Self.message(i, size: [100, 5000, 300, 40_000, 2000][i % 5])
            let date = InternalDate.from(year: 2000 + i % 20, month: 1 + i % 12, day: 1 + i % 27, hour: i % 24,
                                         minute: i, second: 59 - i, zoneMinutes: [0, 60, -300, 330][i % 4])!
            let flags = flagSets[i % flagSets.count]
            sent.append((bytes, flags, date))
            pending.append(try await store.append(to: folder, AppendRequest(flags: flags, internalDate: date, sourceID: "\(i)"),
                                                  body: .bytes(bytes)))
        }
        var results: [AppendResult] = []
        for p in pending { results.append(try await p.result()) }
        let listing = try await store.listMessages(in: folder)
        #expect(listing.messages.count == 40)
        for (i, r) in results.enumerated() {
            #expect(r.key == MessageKey.of(sent[i].bytes))
            #expect(r.uidValidity == listing.validity.uidValidity)
            let id = try #require(r.id, "message \(i) has no UID")
            let m = try #require(listing.messages.first { $0.id == id }, "UID \(id) of message \(i) not listed")
            #expect(m.flags == sent[i].flags, "message \(i)")
            #expect(m.internalDate == sent[i].date, "message \(i)")
            #expect(m.size == Int64(sent[i].bytes.count), "message \(i)")
        }
        #expect(Set(results.compactMap(\.id)).count == 40, "every message has its own UID")
        let counts = store.appendCounts
        #expect(counts.messages == 40)
        #expect(counts.commands >= 6 && counts.commands < 40, "batched: \(counts)")
        // Byte-exact, and each UID holds the message it was mapped to.
        let bodies = Bodies()
        let missing = try await store.fetchMessages(results.compactMap(\.id), in: folder) { info, body in
            bodies.set(info.id, try await body.collect())
        }
        #expect(missing.isEmpty)
        for (i, r) in results.enumerated() {
            #expect(bodies.get(r.id!) == sent[i].bytes, "UID \(r.id!) does not hold message \(i)")
        }
    }

    /// Dovecot refuses a keyword longer than `mail_max_keyword_length` (50
    /// by default): `NO [CANNOT] Keyword length too long`. Inside a
    /// MULTIAPPEND it answers NO mid-command and reads the rest of the batch
    /// as commands, so such a message goes alone; refused, it goes once more
    /// without its keywords (SPEC: the rest of the message still goes
    /// through, the report names the keyword dropped). The session learns
    /// the limit: a later message with a keyword as long loses it up front.
    @Test func aKeywordDovecotRefusesIsDroppedAndTheMessageStoredWithoutIt() async throws {
        let f = try DovecotFixture.shared()
        let account = f.makeUser(prefix: "longkw")
        let store = try await DovecotIMAPTests.open(f, .startTLS, account,
                                                    options: IMAPStoreOptions(multiAppendMessages: 10, multiAppendLinger: .milliseconds(200)))
        defer { Task { try? await store.close() } }
        let poison = 4
        let later = 7
        let longKeyword = Flag(String(repeating: "k", count: 60))
        let otherLong = Flag(String(repeating: "q", count: 60))
        let label = Flag("$Label1")
        #expect(longKeyword.isValidKeyword)
        func flags(_ i: Int) -> Flags {
            i == poison ? [longKeyword, label, .flagged] : i == later ? [otherLong] : [.seen]
        }
        var pending: [PendingAppend] = []
        for i in 0..<10 {
            pending.append(try await store.append(to: .inbox, AppendRequest(flags: flags(i), sourceID: "\(i)"),
                                                  body: .bytes(Self.message(i))))
            if i == poison {
                // Confirmed before the next long keyword comes: the limit is learned by then.
                _ = try? await pending[poison].result()
            }
        }
        var stored: [Int: MessageID] = [:]
        var results: [Int: AppendResult] = [:]
        for (i, p) in pending.enumerated() {
            let r = try await p.result()
            results[i] = r
            stored[i] = try #require(r.id, "message \(i) has no UID")
        }
        #expect(stored.count == 10)
        // Refused with its keywords, the message went again with its system flags only.
        // Dovecot said the keyword was too long: the short one is kept.
        #expect(results[poison]?.droppedFlags == [longKeyword], "\(String(describing: results[poison]))")
        #expect(results[later]?.droppedFlags == [otherLong], "\(String(describing: results[later]))")
        for i in 0..<10 where i != poison && i != later { #expect(results[i]?.droppedFlags == [], "message \(i)") }
        #expect(store.appendCounts.commands < 10, "the others were batched: \(store.appendCounts)")
        let listing = try await store.listMessages(in: .inbox)
        #expect(listing.messages.count == 10)
        let byID = Dictionary(listing.messages.map { ($0.id, $0.flags) }, uniquingKeysWith: { a, _ in a })
        let poisonID = try #require(stored[poison])
        let laterID = try #require(stored[later])
        let firstID = try #require(stored[0])
        let poisonFlags = try #require(byID[poisonID])
        #expect(poisonFlags.contains(.flagged))
        #expect(!poisonFlags.contains(longKeyword))
        #expect(poisonFlags.contains(label))
        #expect(byID[laterID]?.contains(otherLong) == false)
        #expect(byID[firstID]?.contains(.seen) == true)
        let bodies = Bodies()
        _ = try await store.fetchMessages(Array(stored.values), in: .inbox) { info, body in bodies.set(info.id, try await body.collect()) }
        for (i, id) in stored { #expect(bodies.get(id) == Self.message(i), "UID \(id) holds message \(i)") }
    }

    @Test func batchesAndSingleAppendsInterleaveAcrossFoldersAndOtherCommands() async throws {
        let f = try DovecotFixture.shared()
        let store = try await DovecotIMAPTests.open(f, .implicit, f.makeUser(prefix: "multi2"))
        defer { Task { try? await store.close() } }
        let a = FolderPath(components: ["A"])!, b = FolderPath(components: ["B"])!
        try await store.createFolder(a)
        try await store.createFolder(b)
        var pending: [(FolderPath, [UInt8], PendingAppend)] = []
        for i in 0..<12 {
            let folder = i % 4 < 2 ? a : b
            let bytes = Self.message(i)
            pending.append((folder, bytes, try await store.append(to: folder, AppendRequest(), body: .bytes(bytes))))
            if i == 5 {
                // Another command while a MULTIAPPEND is open ends it first.
                let listed = try await store.folders()
                #expect(listed.contains { $0.path == a })
            }
        }
        for (folder, bytes, p) in pending {
            let r = try await p.result()
            let got = Bodies()
            _ = try await store.fetchMessages([try #require(r.id)], in: folder) { info, body in got.set(info.id, try await body.collect()) }
            #expect(got.get(r.id!) == bytes)
        }
    }

    @Test func nulPartWayThroughABigMessageIsRefusedAndNothingIsStored() async throws {
        // Dovecot answers the deliberately broken end of the APPEND with BAD
        // and rolls back: nothing is stored, and the session goes on.
        let f = try DovecotFixture.shared()
        let store = try await DovecotIMAPTests.open(f, .implicit, f.makeUser(prefix: "nulbig"))
        defer { Task { try? await store.close() } }
        let size = 5 * 1024 * 1024
        var big = Self.message(1)
        big += [UInt8](repeating: UInt8(ascii: "b"), count: size - big.count)
        big[size - 5000] = 0
        let feed = ChunkFeed(stride(from: 0, to: size, by: 256 * 1024).map { Array(big[$0..<min(size, $0 + 256 * 1024)]) })
        let small = Self.message(2)
        let first = try await store.append(to: .inbox, AppendRequest(), body: .bytes(small))
        var error: MailError?
        do {
            _ = try await store.append(to: .inbox, AppendRequest(sourceID: "Quelle/9/77"),
                                       body: MessageBody(size: Int64(size)) { feed.next() }).result()
        } catch let e as MailError {
            error = e
        }
        #expect(error?.scope == .message, "\(String(describing: error))")
        #expect(error?.kind == .unsupported)
        #expect(error?.messageID == "Quelle/9/77")
        #expect(error?.folder == .inbox)
        #expect(error?.message.contains("nonetheless") == false, "Dovecot must not have stored it: \(String(describing: error))")
        let after = try await store.append(to: .inbox, AppendRequest(), body: .bytes(Self.message(3))).result()
        _ = try await first.result()
        let listing = try await store.listMessages(in: .inbox)
        #expect(listing.messages.count == 2)
        #expect(listing.messages.allSatisfy { $0.size ?? 0 < 1000 })
        #expect(listing.messages.contains { $0.id == after.id })
    }

    @Test func dovecotOffersNoUTF8Accept() async throws {
        // Dovecot 2.3 has no RFC 6855 support: CAPABILITY lacks UTF8=ACCEPT, so
        // mailbox names travel as modified UTF-7 (covered by the unit tests).
        let f = try DovecotFixture.shared()
        let store = try await DovecotIMAPTests.open(f, .implicit, f.makeUser(prefix: "utf8"))
        defer { Task { try? await store.close() } }
        #expect(!store.connection.has(.utf8Accept))
        #expect(!store.connection.isUTF8Enabled)
    }
}

/// The fixture marks some folder names with SPECIAL-USE attributes
/// (DovecotFixture.specialUseFolders); the store's roles come from them,
/// whatever the name.
@Suite(.serialized, .enabled(if: DovecotFixture.serverTestsEnabled, "MAILFERRY_SKIP_SERVER_TESTS=1"))
struct DovecotSpecialUseTests {
    @Test(arguments: [TLSMode.startTLS, .implicit])
    func rolesComeFromTheServersSpecialUseAttributes(_ tls: TLSMode) async throws {
        let f = try DovecotFixture.shared()
        let store = try await DovecotIMAPTests.open(f, tls, f.makeUser(prefix: "roles"))
        defer { Task { try? await store.close() } }
        #expect(store.connection.has(.specialUse))
        // Nothing is created for the user until asked.
        let before = try await store.folders()
        #expect(before.map(\.path) == [.inbox], "\(before.map(\.path))")
        let expected: [String: FolderRole] = [
            "Gesendete Objekte": .sent, "Entwürfe": .drafts, "Gelöschte Objekte": .trash,
            "Junk-E-Mail": .junk, "Archivierte Objekte": .archive,
        ]
        #expect(Set(DovecotFixture.specialUseFolders.map(\.name)) == Set(expected.keys))
        for name in expected.keys { try await store.createFolder(FolderPath(components: [name])!) }
        // A folder with a well-known name but no attribute gets no role: the
        // server's SPECIAL-USE data is what counts once it offers SPECIAL-USE.
        try await store.createFolder(FolderPath(components: ["Sent"])!)
        try await store.createFolder(FolderPath(components: ["Gesendete Objekte", "2024"])!)
        let listed = try await store.folders()
        for (name, role) in expected {
            let info = try #require(listed.first { $0.path == FolderPath(components: [name])! }, "\(name) not listed")
            #expect(info.role == role, "\(name): \(String(describing: info.role))")
        }
        #expect(listed.first { $0.path == FolderPath(components: ["Sent"])! }?.role == nil)
        #expect(listed.first { $0.path == FolderPath(components: ["Gesendete Objekte", "2024"])! }?.role == nil)
        #expect(listed.first { $0.path == .inbox }?.role == nil)
    }
}

final class Bodies: @unchecked Sendable {
    private let lock = NIOLock()
    private var map: [MessageID: [UInt8]] = [:]
    func set(_ id: MessageID, _ b: ByteBuffer) { lock.withLock { map[id] = Array(b.readableBytesView) } }
    func get(_ id: MessageID) -> [UInt8]? { lock.withLock { map[id] } }
}

/// MULTIAPPEND, APPENDUID and mid-literal failures against scripted servers:
/// what Dovecot will not do on demand.
@Suite(.serialized)
struct FakeMultiAppendTests {
    static let logger = Logger(label: "test.imap.multiappend.fake")
    static let creds = Credentials.password(user: "user", "secret")
    static let caps = "IMAP4rev1 LITERAL+ MULTIAPPEND UIDPLUS NAMESPACE"

    func settings(_ server: FakeIMAPServer, timeout: Duration = .seconds(5)) -> ConnectionSettings {
        ConnectionSettings(host: "127.0.0.1", port: server.port, tls: .none, connectTimeout: .seconds(5), responseTimeout: timeout)
    }

    func open(_ server: FakeIMAPServer, _ options: IMAPStoreOptions = .init()) async throws -> IMAPStore {
        try await IMAPStore.open(settings: settings(server), credentials: Self.creds, options: options, logger: Self.logger)
    }

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

    /// One APPEND/MULTIAPPEND as the server read it.
    struct ReadAppend: Sendable {
        var headers: [String] = []
        var bodies: [[UInt8]] = []
        /// What followed the last literal on its line ("" for a plain CRLF).
        var ending = ""
    }

    /// Reads an APPEND whose first line is `line`, answering "+" to
    /// synchronising literals. nil if the client hung up.
    static func readAppend(_ s: FakeIMAPServer.Session, _ line: String) async throws -> ReadAppend? {
        var out = ReadAppend()
        var line = line
        while line.hasSuffix("}"), let open = line.lastIndex(of: "{") {
            let inner = line[line.index(after: open)..<line.index(before: line.endIndex)]
            guard let n = Int(inner.filter(\.isNumber)) else { return nil }
            if !inner.hasSuffix("+") { try await s.send("+ go on\r\n") }
            guard let bytes = try await s.readBytes(n) else { return nil }
            out.headers.append(line)
            out.bodies.append(bytes)
            guard let next = try await s.readLine() else { return nil }
            line = next
        }
        out.ending = line
        return out
    }

    static func body(_ i: Int) -> [UInt8] { Array("Subject: m\(i)\r\nMessage-ID: <m\(i)@x>\r\n\r\nbody \(i)\r\n".utf8) }

    @Test func batchMapsAPPENDUIDSetInOrder() async throws {
        let seen = NIOLockedValueBox<[ReadAppend]>([])
        let server = try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            while let c = try await s.standardSession(caps: Self.caps, stopAt: ["APPEND"]) {
                guard let a = try await Self.readAppend(s, c.line) else { return }
                seen.withLockedValue { $0.append(a) }
                // Out-of-order ranges are fine as long as they list one UID per message, in order.
                let set = a.bodies.count == 3 ? "7,9:10" : a.bodies.count == 1 ? "20" : "30:\(29 + a.bodies.count)"
                try await s.send("\(c.tag) OK [APPENDUID 42 \(set)] done\r\n")
            }
        }
        defer { Task { await server.stop() } }
        let store = try await open(server, IMAPStoreOptions(multiAppendMessages: 3, multiAppendLinger: .milliseconds(200)))
        var pending: [PendingAppend] = []
        for i in 0..<4 {
            pending.append(try await store.append(to: .inbox, AppendRequest(flags: i == 1 ? [.seen] : []), body: .bytes(Self.body(i))))
        }
        var ids: [String?] = []
        for p in pending { ids.append(try await p.result().id?.rawValue) }
        #expect(ids == ["7", "9", "10", "20"])
        let reads = seen.withLockedValue { $0 }
        #expect(reads.map(\.bodies.count) == [3, 1])
        #expect(reads.first?.bodies == (0..<3).map { Self.body($0) })
        #expect(reads.first?.headers.count == 3)
        #expect(reads.first?.headers[1].hasPrefix(" (\\Seen) {") == true, "\(String(describing: reads.first?.headers))")
        #expect(reads.allSatisfy { $0.ending.isEmpty })
        try await store.close()
    }

    @Test func synchronisingLiteralsInABatchWaitForEachContinuation() async throws {
        let seen = NIOLockedValueBox<[ReadAppend]>([])
        let server = try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            var next = 1
            while let c = try await s.standardSession(caps: "IMAP4rev1 MULTIAPPEND UIDPLUS NAMESPACE", stopAt: ["APPEND"]) {
                guard let a = try await Self.readAppend(s, c.line) else { return }
                seen.withLockedValue { $0.append(a) }
                // UIDs go on across commands (a slow machine may split the batch).
                try await s.send("\(c.tag) OK [APPENDUID 42 \(next):\(next + a.bodies.count - 1)] done\r\n")
                next += a.bodies.count
            }
        }
        defer { Task { await server.stop() } }
        let store = try await open(server, IMAPStoreOptions(multiAppendLinger: .milliseconds(200)))
        var pending: [PendingAppend] = []
        for i in 0..<5 { pending.append(try await store.append(to: .inbox, AppendRequest(), body: .bytes(Self.body(i)))) }
        for (i, p) in pending.enumerated() { #expect(try await p.result().id?.rawValue == String(i + 1)) }
        #expect(seen.withLockedValue { $0.flatMap(\.bodies) } == (0..<5).map { Self.body($0) })
        #expect(seen.withLockedValue { $0.allSatisfy { $0.headers.allSatisfy { !$0.contains("+}") } } })
        try await store.close()
    }

    @Test func anOpenBatchEndsByItselfWhenNoMoreMessagesCome() async throws {
        // Nobody awaits a confirmation and no further append comes: the
        // command must still end (else the server waits mid-command and the
        // response deadline fires).
        let ended = NIOLockedValueBox<Int?>(nil)
        let server = try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            while let c = try await s.standardSession(caps: Self.caps, stopAt: ["APPEND"]) {
                guard let a = try await Self.readAppend(s, c.line) else { return }
                ended.withLockedValue { $0 = a.bodies.count }
                try await s.send("\(c.tag) OK [APPENDUID 42 1:\(a.bodies.count)] done\r\n")
            }
        }
        defer { Task { await server.stop() } }
        let store = try await open(server)
        var pending: [PendingAppend] = []
        for i in 0..<2 { pending.append(try await store.append(to: .inbox, AppendRequest(), body: .bytes(Self.body(i)))) }
        for _ in 0..<200 where ended.withLockedValue({ $0 }) == nil { try await Task.sleep(for: .milliseconds(10)) }
        #expect(ended.withLockedValue { $0 } == 2)
        #expect(try await pending[1].result().id?.rawValue == "2")
        try await store.close()
    }

    /// A server that refuses any APPEND (single or MULTIAPPEND) holding a
    /// message with `marker` (all or none, as RFC 3502 says), stores the rest
    /// with consecutive UIDs, and notes every command it read.
    static func refusingServer(marker: String, seen: NIOLockedValueBox<[ReadAppend]>) async throws -> FakeIMAPServer {
        try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            var next = 1
            while let c = try await s.standardSession(caps: Self.caps, stopAt: ["APPEND"]) {
                guard let a = try await Self.readAppend(s, c.line) else { return }
                seen.withLockedValue { $0.append(a) }
                if a.bodies.contains(where: { String(decoding: $0, as: UTF8.self).contains(marker) }) {
                    try await s.send("\(c.tag) NO Message refused: too large for this mailbox\r\n")
                } else {
                    try await s.send("\(c.tag) OK [APPENDUID 42 \(next):\(next + a.bodies.count - 1)] done\r\n")
                    next += a.bodies.count
                }
            }
        }
    }

    @Test func aRefusedBatchIsSentAgainMessageByMessageAndOnlyThePoisonMessageFails() async throws {
        let seen = NIOLockedValueBox<[ReadAppend]>([])
        let server = try await Self.refusingServer(marker: "POISON", seen: seen)
        defer { Task { await server.stop() } }
        let store = try await open(server, IMAPStoreOptions(multiAppendMessages: 10, multiAppendLinger: .milliseconds(200)))
        let poison = 6
        func body(_ i: Int) -> [UInt8] { i == poison ? Array("Subject: POISON\r\n\r\nbad\r\n".utf8) : Self.body(i) }
        var pending: [PendingAppend] = []
        for i in 0..<10 {
            pending.append(try await store.append(to: .inbox, AppendRequest(flags: i == 3 ? [.seen] : [], sourceID: "src\(i)"),
                                                  body: .bytes(body(i))))
        }
        var ids: [String?] = []
        var failed: [Int: MailError] = [:]
        for (i, p) in pending.enumerated() {
            do {
                ids.append(try await p.result().id?.rawValue)
            } catch let e as MailError {
                failed[i] = e
                ids.append(nil)
            }
        }
        // The nine innocent messages are stored alone, in order, with their own UIDs.
        #expect(ids == ["1", "2", "3", "4", "5", "6", nil, "7", "8", "9"])
        #expect(failed.keys.sorted() == [poison])
        let e = failed[poison]
        #expect(e?.scope == .message)
        #expect(e?.kind == .refused)
        #expect(e?.folder == .inbox)
        #expect(e?.messageID == "src\(poison)")
        #expect(e?.message.contains("too large for this mailbox") == true, "\(String(describing: e))")
        #expect(e?.message.contains("fails as a whole") == false, "\(String(describing: e))")

        // Later messages for that folder go alone: no batch pays twice.
        let after = try await store.append(to: .inbox, AppendRequest(), body: .bytes(Self.body(10)))
        let afterNext = try await store.append(to: .inbox, AppendRequest(), body: .bytes(Self.body(11)))
        #expect(try await after.result().id?.rawValue == "10")
        #expect(try await afterNext.result().id?.rawValue == "11")

        let reads = seen.withLockedValue { $0 }
        #expect(reads.map(\.bodies.count) == [10] + Array(repeating: 1, count: 12))
        // The singles carry each message's own bytes and flags again.
        #expect(reads.dropFirst().prefix(10).map { $0.bodies[0] } == (0..<10).map { body($0) })
        #expect(reads[4].headers.first?.contains("(\\Seen)") == true, "\(String(describing: reads[4].headers))")
        #expect(store.appendCounts.commands == 13)
        #expect(store.appendCounts.messages == 12)
        try await store.close()
    }

    /// A server that refuses (as Dovecot does) any APPEND whose flag list
    /// holds a keyword over 50 characters, and stores the rest.
    static func keywordLimitServer(seen: NIOLockedValueBox<[ReadAppend]>) async throws -> FakeIMAPServer {
        try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            var next = 1
            while let c = try await s.standardSession(caps: Self.caps, permanentFlags: "\\Seen \\Deleted \\*", stopAt: ["APPEND"]) {
                guard let a = try await Self.readAppend(s, c.line) else { return }
                seen.withLockedValue { $0.append(a) }
                let words = (a.headers.first ?? "").split(whereSeparator: { " ()".contains($0) })
                if words.contains(where: { $0.count > 50 && !$0.hasPrefix("{") }) {
                    try await s.send("\(c.tag) NO [CANNOT] Keyword length too long\r\n")
                } else {
                    try await s.send("\(c.tag) OK [APPENDUID 42 \(next)] done\r\n")
                    next += 1
                }
            }
        }
    }

    @Test
    func aSingleAppendRefusedForAKeywordGoesAgainWithoutIt() async throws {
        let seen = NIOLockedValueBox<[ReadAppend]>([])
        let server = try await Self.keywordLimitServer(seen: seen)
        defer { Task { await server.stop() } }
        let store = try await open(server, IMAPStoreOptions(multiAppendMessages: 1))
        let long = Flag(String(repeating: "k", count: 60))
        let otherLong = Flag(String(repeating: "q", count: 55))
        let label = Flag("$Label1")
        let first = try await store.append(to: .inbox, AppendRequest(flags: [.seen, long, label], sourceID: "a"),
                                           body: .bytes(Self.body(0)))
        let r0 = try await first.result()
        #expect(r0.id?.rawValue == "1")
        #expect(r0.droppedFlags == [long], "the report names the keyword dropped: \(r0.droppedFlags)")
        // The session learned that 60 is too long; 55 is not known to be, so it pays a refusal too.
        let second = try await store.append(to: .inbox, AppendRequest(flags: [otherLong], sourceID: "b"), body: .bytes(Self.body(1)))
        let r1 = try await second.result()
        #expect(r1.id?.rawValue == "2")
        #expect(r1.droppedFlags == [otherLong])
        // Now the limit is under 55: a keyword as long is dropped up front, one APPEND only.
        let third = try await store.append(to: .inbox, AppendRequest(flags: [Flag(String(repeating: "z", count: 58)), .seen], sourceID: "c"),
                                           body: .bytes(Self.body(2)))
        let r2 = try await third.result()
        #expect(r2.id?.rawValue == "3")
        #expect(r2.droppedFlags == [Flag(String(repeating: "z", count: 58))])

        let reads = seen.withLockedValue { $0 }
        #expect(reads.count == 5, "\(reads.map(\.headers))")
        guard reads.count == 5 else { return }
        #expect(reads[0].headers[0].contains(long.name))
        // Sent again: same bytes, system flags and the short keyword kept.
        #expect(!reads[1].headers[0].contains(long.name))
        #expect(reads[1].headers[0].contains("\\Seen"), "\(reads[1].headers)")
        #expect(reads[1].headers[0].contains("$Label1"), "\(reads[1].headers)")
        #expect(reads[1].bodies == [Self.body(0)])
        #expect(reads[2].headers[0].contains(otherLong.name))
        #expect(!reads[3].headers[0].contains(otherLong.name))
        #expect(reads[3].bodies == [Self.body(1)])
        #expect(!reads[4].headers[0].contains("zzzz"))
        #expect(reads[4].headers[0].contains("\\Seen"))
        #expect(store.appendCounts.commands == 5)
        try await store.close()
    }

    @Test
    func aRefusalNotCausedByKeywordsIsNotSentAgain() async throws {
        // NO for a message without keywords: never retried. NO for one with
        // keywords: sent once more without them, then it fails with the
        // server's words. NO [OVERQUOTA] (the account, not the message): not retried.
        let seen = NIOLockedValueBox<[ReadAppend]>([])
        let server = try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            while let c = try await s.standardSession(caps: Self.caps, permanentFlags: "\\Seen \\Deleted \\*", stopAt: ["APPEND"]) {
                guard let a = try await Self.readAppend(s, c.line) else { return }
                seen.withLockedValue { $0.append(a) }
                if a.bodies.contains(where: { String(decoding: $0, as: UTF8.self).contains("m2") }) {
                    try await s.send("\(c.tag) NO [OVERQUOTA] Quota exceeded\r\n")
                } else {
                    try await s.send("\(c.tag) NO Message refused by policy\r\n")
                }
            }
        }
        defer { Task { await server.stop() } }
        let store = try await open(server, IMAPStoreOptions(multiAppendMessages: 1))
        let e0 = await mailError {
            _ = try await store.append(to: .inbox, AppendRequest(flags: [.seen], sourceID: "p0"), body: .bytes(Self.body(0))).result()
        }
        #expect(e0?.kind == .refused)
        #expect(e0?.message.contains("refused by policy") == true, "\(String(describing: e0))")
        #expect(seen.withLockedValue { $0.count } == 1)

        let e1 = await mailError {
            _ = try await store.append(to: .inbox, AppendRequest(flags: [Flag("$Work")], sourceID: "p1"), body: .bytes(Self.body(1))).result()
        }
        #expect(e1?.kind == .refused)
        #expect(e1?.messageID == "p1")
        #expect(e1?.folder == .inbox)
        let reads = seen.withLockedValue { $0 }
        #expect(reads.count == 3, "one retry without the keyword: \(reads.map(\.headers))")
        #expect(reads.last.map { !$0.headers[0].contains("$Work") } == true)

        let e2 = await mailError {
            _ = try await store.append(to: .inbox, AppendRequest(flags: [Flag("$Work")], sourceID: "p2"), body: .bytes(Self.body(2))).result()
        }
        #expect(e2?.scope == .account, "\(String(describing: e2))")
        #expect(seen.withLockedValue { $0.count } == 4, "quota is not retried")
        try await store.close()
    }

    @Test func aBatchRefusedForNoOneMessageIsStoredWholeWhenSentAgainAlone() async throws {
        // A NO that no single message causes (here, the first MULTIAPPEND of
        // the session): every message is stored by its own APPEND.
        let seen = NIOLockedValueBox<[ReadAppend]>([])
        let server = try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            var n = 0
            while let c = try await s.standardSession(caps: Self.caps, stopAt: ["APPEND"]) {
                guard let a = try await Self.readAppend(s, c.line) else { return }
                seen.withLockedValue { $0.append(a) }
                n += 1
                if n == 1 {
                    try await s.send("\(c.tag) NO [SERVERBUG] could not save (\(a.bodies.count) messages)\r\n")
                } else {
                    try await s.send("\(c.tag) OK [APPENDUID 42 \(98 + n)] done\r\n")
                }
            }
        }
        defer { Task { await server.stop() } }
        let store = try await open(server, IMAPStoreOptions(multiAppendMessages: 4, multiAppendLinger: .milliseconds(200)))
        var pending: [PendingAppend] = []
        for i in 0..<6 {
            if i == 4 {
                // The refusal has been handled before more messages come.
                for (j, p) in pending.enumerated() { #expect(try await p.result().id?.rawValue == String(100 + j), "message \(j)") }
            }
            pending.append(try await store.append(to: .inbox, AppendRequest(sourceID: "\(i)"), body: .bytes(Self.body(i))))
        }
        for (i, p) in pending.enumerated() {
            #expect(try await p.result().id?.rawValue == String(100 + i), "message \(i)")
        }
        let reads = seen.withLockedValue { $0 }
        #expect(reads.map(\.bodies.count) == [4, 1, 1, 1, 1, 1, 1])
        #expect(reads.dropFirst().map { $0.bodies[0] } == (0..<6).map { Self.body($0) })
        try await store.close()
    }

    @Test func aSynchronisingLiteralRefusedMidBatchSendsTheBatchAgainAlone() async throws {
        // No LITERAL+: the server sees each literal's size first and answers
        // NO instead of "+" for a message it will not take in a batch (here:
        // 999 bytes, after the first message); alone it takes it.
        let refusedSize = 999
        let seen = NIOLockedValueBox<[Int]>([])
        let server = try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            var next = 1
            commands: while let c = try await s.standardSession(caps: "IMAP4rev1 MULTIAPPEND UIDPLUS NAMESPACE", stopAt: ["APPEND"]) {
                var line = c.line
                var count = 0
                while line.hasSuffix("}"), let open = line.lastIndex(of: "{") {
                    guard let n = Int(line[line.index(after: open)...].filter(\.isNumber)) else { return }
                    if n == refusedSize && count > 0 {
                        try await s.send("\(c.tag) NO [TOOBIG] message too big\r\n")
                        seen.withLockedValue { $0.append(-(count + 1)) }
                        continue commands
                    }
                    try await s.send("+ go on\r\n")
                    guard (try await s.readBytes(n)) != nil, let l = try await s.readLine() else { return }
                    count += 1
                    line = l
                }
                seen.withLockedValue { $0.append(count) }
                try await s.send("\(c.tag) OK [APPENDUID 42 \(next):\(next + count - 1)] done\r\n")
                next += count
            }
        }
        defer { Task { await server.stop() } }
        let store = try await open(server, IMAPStoreOptions(multiAppendMessages: 8, multiAppendLinger: .milliseconds(200)))
        let big = Array("Subject: big\r\n\r\n".utf8) + Array(repeating: UInt8(ascii: "x"), count: refusedSize - 16)
        #expect(big.count == refusedSize)
        var pending: [PendingAppend] = []
        for i in 0..<5 {
            pending.append(try await store.append(to: .inbox, AppendRequest(sourceID: "s\(i)"), body: .bytes(i == 2 ? big : Self.body(i))))
        }
        var ids: [String?] = []
        for (i, p) in pending.enumerated() {
            let r = try await p.result()
            ids.append(r.id?.rawValue)
            #expect(r.key == MessageKey.of(i == 2 ? big : Self.body(i)), "message \(i)'s key")
        }
        #expect(ids == ["1", "2", "3", "4", "5"])
        // The batch (refused at its third literal), then each message alone.
        #expect(seen.withLockedValue { $0 } == [-3, 1, 1, 1, 1, 1])
        try await store.close()
    }

    @Test func badOnABatchFailsEveryMessageOfItAndNothingIsSentAgain() async throws {
        let seen = NIOLockedValueBox<[ReadAppend]>([])
        let server = try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            var n = 0
            while let c = try await s.standardSession(caps: Self.caps, stopAt: ["APPEND"]) {
                guard let a = try await Self.readAppend(s, c.line) else { return }
                seen.withLockedValue { $0.append(a) }
                n += 1
                if n == 1 {
                    try await s.send("\(c.tag) BAD syntax error in MULTIAPPEND\r\n")
                } else {
                    try await s.send("\(c.tag) OK [APPENDUID 42 100:\(99 + a.bodies.count)] done\r\n")
                }
            }
        }
        defer { Task { await server.stop() } }
        let store = try await open(server, IMAPStoreOptions(multiAppendMessages: 4, multiAppendLinger: .milliseconds(200)))
        var pending: [PendingAppend] = []
        for i in 0..<6 {
            if i == 4 { for p in pending { _ = try? await p.result() } }
            pending.append(try await store.append(to: .inbox, AppendRequest(sourceID: "\(i)"), body: .bytes(Self.body(i))))
        }
        for (i, p) in pending.enumerated() {
            if i < 4 {
                let e = await mailError { _ = try await p.result() }
                #expect(e?.kind == .protocolViolation, "message \(i): \(String(describing: e))")
                #expect(e?.folder == .inbox)
                #expect(e?.message.contains("fails as a whole") == true, "\(String(describing: e))")
            } else {
                #expect(try await p.result().id?.rawValue == String(100 + i - 4))
            }
        }
        // Not sent again alone, and the folder still batches.
        #expect(seen.withLockedValue { $0.map(\.bodies.count) } == [4, 2])
        try await store.close()
    }

    @Test func connectionDroppedMidBatchFailsEveryMessageRetryably() async throws {
        let server = try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            guard let c = try await s.standardSession(caps: Self.caps, stopAt: ["APPEND"]) else { return }
            // Read the first message, then part of the second, and hang up.
            let line = c.line
            guard let open = line.lastIndex(of: "{"), let n = Int(line[line.index(after: open)...].filter(\.isNumber)) else { return }
            _ = try await s.readBytes(n)
            _ = try await s.readBytes(10)
        }
        defer { Task { await server.stop() } }
        let store = try await open(server)
        var pending: [PendingAppend] = []
        var appendError: MailError?
        for i in 0..<6 {
            do {
                pending.append(try await store.append(to: .inbox, AppendRequest(), body: .bytes(Self.body(i))))
            } catch let e as MailError {
                appendError = e
                break
            }
        }
        var failures: [MailError] = []
        for p in pending {
            if let e = await mailError({ _ = try await p.result() }) { failures.append(e) }
        }
        #expect(failures.count == pending.count, "no message of a cut batch may count as stored")
        for e in failures + (appendError.map { [$0] } ?? []) {
            #expect(e.kind == .connection, "\(e)")
            #expect(e.retryable, "\(e)")
        }
        try? await store.close()
    }

    @Test func appendUIDSetOfTheWrongSizeLeavesUIDsUnknown() async throws {
        let server = try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            while let c = try await s.standardSession(caps: Self.caps, stopAt: ["APPEND"]) {
                guard try await Self.readAppend(s, c.line) != nil else { return }
                try await s.send("\(c.tag) OK [APPENDUID 42 5:6] two UIDs for three messages\r\n")
            }
        }
        defer { Task { await server.stop() } }
        let store = try await open(server, IMAPStoreOptions(multiAppendMessages: 3, multiAppendLinger: .milliseconds(200)))
        var pending: [PendingAppend] = []
        for i in 0..<3 { pending.append(try await store.append(to: .inbox, AppendRequest(), body: .bytes(Self.body(i)))) }
        for (i, p) in pending.enumerated() {
            let r = try await p.result()
            #expect(r.id == nil, "message \(i) must not get a guessed UID")
            #expect(r.uidValidity == nil)
            #expect(r.key == MessageKey.of(Self.body(i)), "the append itself succeeded")
        }
        try await store.close()
    }

    @Test(arguments: [1, 3])
    func appendUIDForAnotherUIDValidityIsNotBelieved(_ batch: Int) async throws {
        // Hostile (issue 9): the folder's UIDVALIDITY is 42 (SELECT); the
        // server claims the new message lives under UIDVALIDITY 7.
        let server = try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            while let c = try await s.standardSession(caps: Self.caps, stopAt: ["APPEND"]) {
                guard let a = try await Self.readAppend(s, c.line) else { return }
                try await s.send("\(c.tag) OK [APPENDUID 7 1:\(a.bodies.count)] elsewhere\r\n")
            }
        }
        defer { Task { await server.stop() } }
        let store = try await open(server, IMAPStoreOptions(multiAppendMessages: batch, multiAppendLinger: .milliseconds(200)))
        var pending: [PendingAppend] = []
        for i in 0..<batch { pending.append(try await store.append(to: .inbox, AppendRequest(), body: .bytes(Self.body(i)))) }
        for p in pending {
            let r = try await p.result()
            #expect(r.id == nil, "a UID under another UIDVALIDITY must not be recorded")
            #expect(r.uidValidity == nil)
        }
        try await store.close()
    }

    @Test func nulBytesPartWayThroughABigMessageFailOnlyThatMessage() async throws {
        // Over 4 MB the body streams unread; a NUL found on the way cannot be
        // sent in a plain literal. The literal is completed, the command ended
        // so that the server refuses it, and the session goes on.
        let reads = NIOLockedValueBox<[ReadAppend]>([])
        let server = try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            while let c = try await s.standardSession(caps: Self.caps, stopAt: ["APPEND", "UID FETCH"]) {
                if c.name == "UID FETCH" {
                    try await s.send("* 1 FETCH (UID 5 BODY[] {4}\r\nok\r\n)\r\n\(c.tag) OK done\r\n")
                    continue
                }
                guard let a = try await Self.readAppend(s, c.line) else { return }
                reads.withLockedValue { $0.append(a) }
                if a.ending.isEmpty {
                    try await s.send("\(c.tag) OK [APPENDUID 42 9] done\r\n")
                } else {
                    try await s.send("\(c.tag) BAD Invalid arguments\r\n")
                }
            }
        }
        defer { Task { await server.stop() } }
        let store = try await open(server)
        let size = 5 * 1024 * 1024
        var big = Array(Self.body(0))
        big += [UInt8](repeating: UInt8(ascii: "a"), count: size - big.count)
        big[size - 1000] = 0
        let chunks = stride(from: 0, to: size, by: 64 * 1024).map { Array(big[$0..<min(size, $0 + 64 * 1024)]) }
        let feed = ChunkFeed(chunks)
        let body = MessageBody(size: Int64(size)) { feed.next() }
        var e = await mailError {
            let p = try await store.append(to: FolderPath("Big")!, AppendRequest(sourceID: "INBOX/17/3"), body: body)
            _ = try await p.result()
        }
        #expect(e?.scope == .message, "\(String(describing: e))")
        #expect(e?.kind == .unsupported)
        #expect(e?.folder == FolderPath("Big")!)
        #expect(e?.messageID == "INBOX/17/3")
        #expect(e?.description.contains("NUL") == true)
        // The whole literal went, then bytes that make the command BAD.
        #expect(reads.withLockedValue { $0.first?.bodies.first?.count } == size)
        #expect(reads.withLockedValue { $0.first?.ending } == " )")
        // The session is still in step: the next append and a fetch work.
        e = nil
        let r = try await store.append(to: FolderPath("Big")!, AppendRequest(), body: .bytes(Self.body(1))).result()
        #expect(r.id?.rawValue == "9")
        let got = Bodies()
        _ = try await store.fetchMessages([MessageID("5")], in: .inbox) { info, b in got.set(info.id, try await b.collect()) }
        #expect(got.get(MessageID("5")) == Array("ok\r\n".utf8))
        try await store.close()
    }

    @Test func unsolicitedFetchForAUIDNeverAskedForIsNotDelivered() async throws {
        // Hostile (issue 9): asked for UID 5, the server also sends UID 6 and
        // UID 5 twice. Only UID 5 is delivered, once, with its own bytes.
        let server = try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            while let c = try await s.standardSession(caps: Self.caps, stopAt: ["UID FETCH"]) {
                try await s.send("* 2 FETCH (UID 6 BODY[] {9}\r\nintruder\n)\r\n")
                try await s.send("* 1 FETCH (UID 5 BODY[] {6}\r\nmine\r\n)\r\n")
                try await s.send("* 1 FETCH (UID 5 BODY[] {5}\r\nagain)\r\n")
                try await s.send("* 3 FETCH (BODY[] {4}\r\nnoid UID 7)\r\n")
                try await s.send("\(c.tag) OK done\r\n")
            }
        }
        defer { Task { await server.stop() } }
        let store = try await open(server)
        let delivered = NIOLockedValueBox<[(String, [UInt8])]>([])
        let missing = try await store.fetchMessages([MessageID("5")], in: .inbox) { info, body in
            let b = try await body.collect()
            delivered.withLockedValue { $0.append((info.id.rawValue, Array(b.readableBytesView))) }
        }
        #expect(missing.isEmpty)
        let got = delivered.withLockedValue { $0 }
        #expect(got.count == 1)
        #expect(got.first?.0 == "5")
        #expect(got.first?.1 == Array("mine\r\n".utf8))
        // And the session is still usable.
        let listing = try await store.listMessages(in: .inbox)
        #expect(listing.validity.uidValidity == 42)
        try await store.close()
    }
}

/// Hands out chunks one by one (a streamed source of known size).
final class ChunkFeed: @unchecked Sendable {
    private let lock = NIOLock()
    private var chunks: [[UInt8]]
    init(_ chunks: [[UInt8]]) { self.chunks = chunks.reversed() }
    func next() -> ByteBuffer? {
        lock.withLock { chunks.popLast().map { ByteBuffer(bytes: $0) } }
    }
}

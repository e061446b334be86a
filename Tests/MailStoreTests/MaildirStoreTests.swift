import Foundation
import Testing
@testable import MailStore
import MailModel
import MailTestSupport
import NIOCore

struct FolderNameEscapingTests {
    @Test(arguments: [FolderNameEscaping.Flavor.maildir, .mbox])
    func roundTripsAndStaysInside(_ flavor: FolderNameEscaping.Flavor) {
        var names = StoreConformance.oddFolderNames.flatMap { $0 }
        names += ["a%2Fb", "%", "%%", "%2E", "..a", "a..", "\u{0}", "\u{7F}x", "dovecot", "Dovecot", "x.sbd.sbd", ".sbd", "a.msf", "é", "e\u{301}"]
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let len = Int.random(in: 1...12, using: &rng)
            let pool: [Character] = [".", "/", "%", "\u{0}", "\u{1}", "a", "Z", " ", "é", "📬", "\\", ":", "s", "b", "d", "l", "o", "c", "k"]
            names.append(String((0..<len).map { _ in pool.randomElement(using: &rng)! }))
        }
        for name in names {
            let e = FolderNameEscaping.escape(name, flavor: flavor)
            #expect(FolderNameEscaping.unescape(e, flavor: flavor) == name, "\(name.debugDescription) -> \(e)")
            #expect(!e.isEmpty && e != "." && e != ".." && !e.hasPrefix("."))
            #expect(!e.utf8.contains(0x2F) && !e.utf8.contains(0) && !e.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }))
            if flavor == .maildir { #expect(!["cur", "new", "tmp"].contains(e) && !e.hasPrefix("dovecot")) }
            if flavor == .mbox { #expect(!e.hasSuffix(".sbd") && !e.hasSuffix(".lock") && !e.hasSuffix(".msf")) }
        }
        // Case-only differences stay distinct.
        #expect(FolderNameEscaping.escape("Case", flavor: flavor) != FolderNameEscaping.escape("case", flavor: flavor))
    }

    @Test func examples() {
        #expect(FolderNameEscaping.escape("a/b", flavor: .maildir) == "a%2Fb")
        #expect(FolderNameEscaping.escape("..", flavor: .maildir) == "%2E.")
        #expect(FolderNameEscaping.escape("cur", flavor: .maildir) == "%63ur")
        #expect(FolderNameEscaping.escape("x.lock", flavor: .mbox) == "x%2Elock")
        #expect(FolderNameEscaping.escape("100%", flavor: .mbox) == "100%25")
        #expect(FolderNameEscaping.escape("Février 📬", flavor: .mbox) == "Février 📬")
        // A name another tool wrote with a stray % is read verbatim.
        #expect(FolderNameEscaping.component(forDiskName: "50%off", flavor: .maildir) == "50%off")
    }
}

struct MaildirStoreTests {
    let hello = Array("From: a@example.org\r\nSubject: hi\r\n\r\nHello\r\n".utf8)

    @Test func onDiskLayout() async throws {
        try await withTempDirectory { dir in
            let root = dir + "/Mail"
            let store = try MaildirStore(root: root, create: true)
            let work = FolderPath(components: ["Work", "2024"])!
            try await store.createFolder(work)
            let date = InternalDate(secondsSinceEpoch: 1_057_049_557)
            let r = try await store.append(to: work, AppendRequest(flags: [.seen, .flagged, Flag("Work"), .forwarded], internalDate: date),
                                           body: .bytes(hello)).result()
            let id = try #require(r.id)
            #expect(r.size == Int64(hello.count))
            #expect(r.key == MessageKey.of(hello))
            let cur = root + "/Work/2024/cur"
            let names = try FileManager.default.contentsOfDirectory(atPath: cur)
            #expect(names.count == 1)
            let name = try #require(names.first)
            #expect(name == id.rawValue + ":2,FSab")
            #expect(name.range(of: #"^\d+\.M\d+P\d+Q\d+\.[^/:]+,S=\#(hello.count):2,FSab$"#, options: .regularExpression) != nil, "\(name)")
            let keywords = try String(contentsOfFile: root + "/Work/2024/dovecot-keywords", encoding: .utf8)
            #expect(keywords == "0 $Forwarded\n1 Work\n")
            let attrs = try FileManager.default.attributesOfItem(atPath: cur + "/" + name)
            #expect((attrs[.modificationDate] as? Date)?.timeIntervalSince1970 == 1_057_049_557)
            #expect(fileMode(cur + "/" + name) == 0o600)
            for d in [root, root + "/cur", root + "/Work", root + "/Work/2024", cur, root + "/Work/2024/tmp"] {
                #expect(fileMode(d) == 0o700, "\(d)")
            }
            #expect(fileMode(root + "/Work/2024/dovecot-keywords") == 0o600)
            #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/Work/2024/tmp").isEmpty)

            // A flag change renames the file but keeps its id.
            try await store.setFlags([.seen, Flag("Work")], .remove, for: [id], in: work)
            let after = try FileManager.default.contentsOfDirectory(atPath: cur)
            #expect(after == [id.rawValue + ":2,Fa"])
            let listing = try await store.listMessages(in: work)
            #expect(listing.messages.map(\.id) == [id])
            #expect(listing.messages.first?.flags == [.flagged, .forwarded])
            #expect(listing.messages.first?.internalDate == date)
        }
    }

    /// `keysWrittenBytes`: the transfer engine does not hash a Maildir
    /// append itself, so the result's key must be the key of the file's bytes.
    @Test func appendResultKeyIsTheKeyOfTheBytesWritten() async throws {
        try await withTempDirectory { dir in
            let store = try MaildirStore(root: dir, create: true)
            #expect(store.capabilities.contains(.keysWrittenBytes))
            let text = Array("From: a@example.org\nSubject: bare LF\r\n\nline\rwith CR\n".utf8) + [UInt8](repeating: 0x41, count: 70_000)
            // Chunks cut between CR and LF and at bare LFs.
            var chunks: [ByteBuffer] = []
            var i = 0
            for step in [3, 17, 1, 1, 29, 4096, 65_536] where i < text.count {
                let end = min(text.count, i + step)
                chunks.append(ByteBuffer(bytes: text[i..<end]))
                i = end
            }
            if i < text.count { chunks.append(ByteBuffer(bytes: text[i...])) }
            let box = ChunkQueue(chunks)
            let body = MessageBody(size: nil) { box.next() }
            let r = try await store.append(to: .inbox, AppendRequest(), body: body).result()
            let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/cur")
            let name = try #require(names.first)
            let onDisk = Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/cur/" + name)))
            #expect(onDisk == text, "stored as sent")
            #expect(r.key == MessageKey.of(onDisk))
            #expect(r.size == Int64(onDisk.count))
            var h = MessageHasher()
            h.update(onDisk)
            #expect(r.normalizedSize == h.normalizedCount)
        }
    }

    @Test func aFolderRemovedAfterAnAppendGivesAClearError() async throws {
        try await withTempDirectory { dir in
            let store = try MaildirStore(root: dir, create: true)
            let f = FolderPath("Gone")!
            try await store.createFolder(f)
            _ = try await store.append(to: f, AppendRequest(), body: .bytes(hello)).result()
            try FileManager.default.removeItem(atPath: dir + "/Gone")
            await #expect(throws: MailError.self) {
                _ = try await store.append(to: f, AppendRequest(), body: .bytes(self.hello)).result()
            }
            do {
                _ = try await store.append(to: f, AppendRequest(), body: .bytes(hello)).result()
            } catch let e as MailError {
                #expect(e.kind == .notFound, "\(e)")
            }
        }
    }

    @Test func inboxIsTheRootAndChildrenLiveInINBOX() async throws {
        try await withTempDirectory { dir in
            let store = try MaildirStore(root: dir, create: true)
            _ = try await store.append(to: .inbox, AppendRequest(), body: .bytes(hello)).result()
            try await store.createFolder(FolderPath(components: ["INBOX", "Lists"])!)
            #expect(FileManager.default.fileExists(atPath: dir + "/cur"))
            #expect(FileManager.default.fileExists(atPath: dir + "/INBOX/Lists/cur"))
            #expect(!FileManager.default.fileExists(atPath: dir + "/INBOX/cur"))
            let folders = try await store.folders().map(\.path.description)
            #expect(folders == ["INBOX", "INBOX/Lists"])
        }
    }

    @Test func readsForeignMessagesInNewAndCur() async throws {
        try await withTempDirectory { dir in
            let store = try MaildirStore(root: dir, create: true)
            try Data(hello).write(to: URL(fileURLWithPath: dir + "/new/1642968136.5.mox"))
            try Data(hello).write(to: URL(fileURLWithPath: dir + "/cur/1642966915.1.mox:2,RSPb"))
            try "1 Junk\n".write(toFile: dir + "/dovecot-keywords", atomically: true, encoding: .utf8)
            let listing = try await store.listMessages(in: .inbox)
            let byID = Dictionary(uniqueKeysWithValues: listing.messages.map { ($0.id.rawValue, $0) })
            #expect(byID["1642968136.5.mox"]?.flags == [])
            #expect(byID["1642966915.1.mox"]?.flags == [.answered, .seen, Flag("Junk")])
            // Moving a message out of new/ on a flag change; the unknown P letter is kept.
            try await store.setFlags([.seen], .add, for: [MessageID("1642968136.5.mox"), MessageID("1642966915.1.mox")], in: .inbox)
            #expect(FileManager.default.fileExists(atPath: dir + "/cur/1642968136.5.mox:2,S"))
            #expect(FileManager.default.fileExists(atPath: dir + "/cur/1642966915.1.mox:2,PRSb"))
            let bodies = try await collect(store, listing.messages.map(\.id), in: .inbox)
            #expect(bodies.values.allSatisfy { $0 == hello } && bodies.count == 2)
        }
    }

    @Test func keywordsBeyondTwentySixAreDropped() async throws {
        try await withTempDirectory { dir in
            let store = try MaildirStore(root: dir, create: true)
            let many = Flags((0..<30).map { Flag("k\($0)") } + [Flag("bad keyword")])
            let r = try await store.append(to: .inbox, AppendRequest(flags: many), body: .bytes(hello)).result()
            #expect(r.droppedFlags.count == 5)
            #expect(r.droppedFlags.contains(Flag("bad keyword")))
            let listing = try await store.listMessages(in: .inbox)
            #expect(listing.messages.first?.flags.count == 26)
        }
    }

    @Test func truncatedFileIsAClearErrorNamingIt() async throws {
        try await withTempDirectory { dir in
            let store = try MaildirStore(root: dir, create: true)
            let r = try await store.append(to: .inbox, AppendRequest(), body: .bytes(hello)).result()
            let id = try #require(r.id)
            let name = try #require(try FileManager.default.contentsOfDirectory(atPath: dir + "/cur").first)
            let h = try #require(FileHandle(forWritingAtPath: dir + "/cur/" + name))
            try h.truncate(atOffset: 10)
            try h.close()
            await #expect {
                _ = try await collect(store, [id], in: .inbox)
            } throws: { e in
                guard let e = e as? MailError else { return false }
                return e.kind == .corrupt && e.description.contains(name) && e.scope == .message
            }
        }
    }

    @Test func incompleteMaildirAndOddEntriesAreClearErrors() async throws {
        try await withTempDirectory { dir in
            let store = try MaildirStore(root: dir, create: true)
            try await store.createFolder(FolderPath(components: ["Broken"])!)
            try FileManager.default.removeItem(atPath: dir + "/Broken/new")
            await #expect {
                _ = try await store.listMessages(in: FolderPath(components: ["Broken"])!)
            } throws: { e in
                (e as? MailError)?.description.contains("\(dir)/Broken") == true && (e as? MailError)?.kind == .corrupt
            }
            try FileManager.default.createDirectory(atPath: dir + "/cur/adir", withIntermediateDirectories: false)
            await #expect {
                _ = try await store.listMessages(in: .inbox)
            } throws: { e in
                (e as? MailError)?.description.contains("adir") == true
            }
        }
    }

    @Test func openingAMissingTreeWithoutCreateFails() throws {
        #expect(throws: MailError.self) { try MaildirStore(root: "/nonexistent/mailferry/\(UUID())", create: false) }
    }

    @Test func readsTheCorpusMaildirTarball() async throws {
        guard let corpus = try Corpus.load() else { print(Corpus.absentMessage); return }
        guard let tgz = corpus.containers.first(where: { $0.file.hasSuffix(".maildir.tgz") }) else {
            Issue.record("the corpus has no Maildir tarball")
            return
        }
        try await withTempDirectory { dir in
            let (status, out) = try run(["tar", "-xzf", tgz.path, "-C", dir])
            #expect(status == 0, "\(out)")
            let store = try MaildirStore(root: dir + "/maildir", create: false)
            let listing = try await store.listMessages(in: .inbox)
            #expect(listing.messages.count == 2)
            let flags = listing.messages.map(\.flags)
            #expect(flags.contains { $0.contains(.seen) && $0.contains(.answered) && $0.contains(.flagged) })
            #expect(flags.contains { $0.contains(.deleted) })
            let bodies = try await collect(store, listing.messages.map(\.id), in: .inbox)
            #expect(bodies.count == 2)
            #expect(bodies.values.allSatisfy { HeaderReader.read($0).messageID != nil || !$0.isEmpty })
        }
    }
}

/// Hands out chunks in order, then nil.
final class ChunkQueue: @unchecked Sendable {
    private let lock = NSLock()
    private var chunks: [ByteBuffer]
    init(_ chunks: [ByteBuffer]) { self.chunks = chunks }
    func next() -> ByteBuffer? { lock.withLock { chunks.isEmpty ? nil : chunks.removeFirst() } }
}

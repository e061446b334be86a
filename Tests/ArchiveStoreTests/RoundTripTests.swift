import Foundation
import MailModel
import MailStore
import Testing
@testable import ArchiveStore

@Suite("Archive round trips", .serialized)
struct RoundTripTests {
    /// The whole corpus into an archive and back: byte-exact, with folders
    /// (non-ASCII, slashes in names, INBOX children), flags, keywords and dates.
    @Test(arguments: [(ArchiveFormat.maildir, ArchiveCompression.zstd), (.mbox, .zstd), (.maildir, .none)])
    func corpusRoundTrip(format: ArchiveFormat, compression: ArchiveCompression) async throws {
        guard let corpus = corpusMessages() else { return }
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let path = dir + "/set"
        let store = try ArchiveStore.open(path: path, options: ArchiveOptions(format: format, compression: compression,
                                                                               source: "maildir:/test"),
                                          create: true, logger: testLogger)
        var items: [(FolderPath, Flags, InternalDate, [UInt8])] = []
        for (i, m) in corpus.enumerated() {
            let (f, fl, d) = placement(i)
            items.append((f, fl, d, m.bytes))
        }
        // Sizes unknown for every third message (a POP3 source).
        var placed: [Placed] = []
        for (i, item) in items.enumerated() {
            placed += try await appendAll(store, [item], chunk: 1000 + i * 7, knownSize: i % 3 != 0)
        }
        try await store.close()

        // Permissions: the set is private.
        let attrs = try FileManager.default.attributesOfItem(atPath: path + "/catalog.sqlite")
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
        let dattrs = try FileManager.default.attributesOfItem(atPath: path + "/volumes")
        #expect((dattrs[.posixPermissions] as? Int) == 0o700)
        #expect(volumeFiles(path).count == 1)

        let reader = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let all = try await digestEverything(reader)
        try await reader.close()
        #expect(Set(all.keys) == Set(placed.map(\.folder)))
        var checked = 0
        for p in placed {
            guard let (info, digest) = all[p.folder]?[p.id] else {
                Issue.record("\(p.id) missing from \(p.folder)")
                continue
            }
            #expect(digest == RawSHA256.of(p.bytes), "bytes differ for \(p.id) in \(p.folder)")
            #expect(info.flags == p.flags)
            #expect(info.internalDate == p.date)
            #expect(info.internalDate?.zoneMinutes == p.date.zoneMinutes)
            #expect(info.key == MessageKey.of(p.bytes))
            #expect(info.size == Int64(p.bytes.count))
            checked += 1
        }
        #expect(checked == corpus.count)
        #expect(all.values.reduce(0) { $0 + $1.count } == corpus.count)

        let rw = try ArchiveStore.open(path: path, create: false, logger: testLogger)
        let report = try rw.check()
        try await rw.close()
        #expect(report.isClean, "\(report.problems)")
        #expect(report.messagesChecked == Set(corpus.map { MessageKey.of($0.bytes).hex + "\($0.bytes.count)" }).count)
    }

    /// Three incremental runs: only new bytes go into new volumes, moves are
    /// stored once, flag changes and deletions are recorded, a run with
    /// nothing new writes no volume; `asOf` shows each past state.
    @Test func incrementalRunsAndAsOf() async throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let path = dir + "/set"
        let msgs = (0..<12).map { i in Array("Subject: m\(i)\r\nMessage-ID: <\(i)@x>\r\n\r\nbody \(i)\nFrom here\n>From there\n".utf8) }
        let d = InternalDate(secondsSinceEpoch: 1_600_000_000, zoneMinutes: 120)

        // Run 1: eight messages in two folders.
        var s = try ArchiveStore.open(path: path, create: true, logger: testLogger)
        let first = try await appendAll(s, (0..<8).map { (testFolders[$0 % 2], [Flag.seen], d, msgs[$0]) })
        try await s.close()
        let afterRun1 = InternalDate.now()
        try await Task.sleep(nanoseconds: 1_100_000_000)

        // Run 2: two new, one moved (same bytes into Sent), a flag change, a deletion.
        s = try ArchiveStore.open(path: path, create: true, logger: testLogger)
        let second = try await appendAll(s, [(FolderPath("Sent")!, [], d, msgs[8]), (FolderPath("Sent")!, [], d, msgs[9]),
                                             (FolderPath("Sent")!, [.flagged], d, msgs[0])])
        try await s.setFlags([.answered], .add, for: [first[2].id], in: first[2].folder)
        try await s.delete([first[0].id], in: first[0].folder)
        // Within the run, the listing already shows the changes.
        let inRun = try await s.listMessages(in: first[0].folder)
        #expect(!inRun.messages.contains { $0.id == first[0].id })
        #expect(inRun.messages.first { $0.id == first[2].id }?.flags == [.seen, .answered])
        try await s.close()
        let afterRun2 = InternalDate.now()
        try await Task.sleep(nanoseconds: 1_100_000_000)

        // Run 3: nothing new.
        s = try ArchiveStore.open(path: path, create: true, logger: testLogger)
        try await s.close()

        #expect(volumeFiles(path) == ["v000001.tar.zst", "v000002.tar.zst"])
        s = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let listing = try s.list()
        #expect(listing.runs.count == 3)
        #expect(listing.runs.map(\.messagesAdded) == [8, 2, 0])
        #expect(listing.runs.map(\.locationsAdded) == [8, 3, 0])
        #expect(listing.runs[1].flagChanges == 1)
        #expect(listing.runs[1].deletions == 1)
        #expect(listing.runs[2].volumes.isEmpty)
        #expect(listing.volumes.map(\.messageCount) == [8, 2])
        #expect(listing.storedMessages == 10)
        #expect(listing.liveLocations == 10)
        #expect(listing.deletedLocations == 1)

        // Now: the deleted one is gone, the moved one is in Sent, flags are the latest.
        let now = try await readEverything(s)
        try await s.close()
        #expect(now[first[0].folder]?[first[0].id] == nil)
        #expect(now[first[2].folder]?[first[2].id]?.0.flags == [.seen, .answered])
        #expect(now[FolderPath("Sent")!]?[second[2].id]?.1 == msgs[0])
        #expect(now[FolderPath("Sent")!]?[second[2].id]?.0.flags == [.flagged])

        // As of run 1: eight messages, original flags, no Sent folder.
        let old = try ArchiveStore.open(path: path, options: ArchiveOptions(asOf: afterRun1), create: false, logger: testLogger)
        #expect(!old.capabilities.contains(.append))
        let then = try await readEverything(old)
        #expect(Set(then.keys) == Set([testFolders[0], testFolders[1]]))
        #expect(then.values.reduce(0) { $0 + $1.count } == 8)
        #expect(then[first[0].folder]?[first[0].id]?.1 == msgs[0])
        #expect(then[first[2].folder]?[first[2].id]?.0.flags == [.seen])
        await #expect(throws: MailError.self) {
            try await old.append(to: .inbox, AppendRequest(), body: .bytes(msgs[11]))
        }
        try await old.close()

        // As of run 2: the deletion and flag change are in; run 3 changed nothing.
        let mid = try ArchiveStore.open(path: path, options: ArchiveOptions(asOf: afterRun2), create: false, logger: testLogger)
        let midAll = try await readEverything(mid)
        try await mid.close()
        #expect(midAll.values.reduce(0) { $0 + $1.count } == 10)
        #expect(midAll[first[2].folder]?[first[2].id]?.0.flags == [.seen, .answered])

        // Before any run: an empty view.
        let none = try ArchiveStore.open(path: path, options: ArchiveOptions(asOf: InternalDate(secondsSinceEpoch: 1000)),
                                         create: false, logger: testLogger)
        #expect(try await none.folders().isEmpty)
        try await none.close()
    }

    /// The same bytes appended twice in one run, and again in a later run, are
    /// stored once; a same-key message with different line endings keeps its own bytes.
    @Test func deduplicatesByKeyAndSize() async throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let path = dir + "/set"
        let crlf = Array("Subject: x\r\n\r\nhello\r\n".utf8)
        let lf = Array("Subject: x\n\nhello\n".utf8)
        #expect(MessageKey.of(crlf) == MessageKey.of(lf))
        var s = try ArchiveStore.open(path: path, options: ArchiveOptions(format: .mbox), create: true, logger: testLogger)
        let placed = try await appendAll(s, [(.inbox, [], .now(), crlf), (FolderPath("A")!, [], .now(), crlf),
                                             (.inbox, [], .now(), crlf), (.inbox, [], .now(), lf)])
        try await s.close()
        s = try ArchiveStore.open(path: path, create: true, logger: testLogger)
        _ = try await appendAll(s, [(FolderPath("B")!, [.seen], .now(), crlf)])
        try await s.close()
        s = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let listing = try s.list()
        #expect(listing.storedMessages == 2)
        #expect(listing.liveLocations == 5)
        #expect(listing.volumes.count == 1)
        let all = try await readEverything(s)
        #expect(all[.inbox]?[placed[2].id]?.1 == crlf)
        #expect(all[.inbox]?[placed[3].id]?.1 == lf)
        #expect(all[FolderPath("B")!]?.values.first?.1 == crlf)
        try await s.close()
    }

    @Test func emptyFoldersAndLocking() async throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let path = dir + "/set"
        let s = try ArchiveStore.open(path: path, create: true, logger: testLogger)
        try await s.createFolder(FolderPath("Empty/Child")!)
        // Another process cannot take the set while this run holds it…
        let (held, _) = try run("/usr/bin/env", ["python3", "-c",
                                                 "import fcntl,sys; fcntl.flock(open(sys.argv[1],'a'), fcntl.LOCK_EX|fcntl.LOCK_NB)",
                                                 path + "/lock"])
        #expect(held != 0)
        // …but a reader can (it sees the set as the last commit left it: here,
        // not yet created); a second writer in this process shares the run.
        let early = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        #expect(try await early.folders().isEmpty)
        try await early.close()
        let same = try ArchiveStore.open(path: path, create: true, logger: testLogger)
        #expect(same === s)
        try await same.close()
        try await s.close()
        let r = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        #expect(try await r.folders().map(\.path) == [FolderPath("Empty/Child")!])
        #expect(try await r.listMessages(in: FolderPath("Empty/Child")!).messages.isEmpty)
        await #expect(throws: MailError.self) { _ = try await r.listMessages(in: FolderPath("Nope")!) }
        try await r.close()
        #expect(volumeFiles(path).isEmpty)
        // Opening something that is not an archive.
        #expect(throws: MailError.self) {
            _ = try ArchiveStore.open(path: dir + "/none", create: false, logger: testLogger)
        }
        try FileManager.default.createDirectory(atPath: dir + "/busy", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: dir + "/busy/x", contents: Data("x".utf8))
        do {
            _ = try ArchiveStore.open(path: dir + "/busy", create: true, logger: testLogger)
            Issue.record("wrote into a foreign directory")
        } catch let e as MailError {
            #expect(e.exitCode == 2)
        }
    }

    /// Reading a message appended in this session seals the volume being
    /// written; later appends go to a second volume of the same run, and both
    /// are committed together.
    @Test func readDuringARunSealsTheVolume() async throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let path = dir + "/set"
        let msgs = sampleMessages(6)
        let s = try ArchiveStore.open(path: path, create: true, logger: testLogger)
        let first = try await appendAll(s, msgs[0..<3].map { (.inbox, [.seen], .now(), $0) })
        let got = try await readEverything(s)
        #expect(got[.inbox]?[first[1].id]?.1 == msgs[1])
        let second = try await appendAll(s, msgs[3...].map { (.inbox, [], .now(), $0) })
        #expect(try await readEverything(s)[.inbox]?[second[2].id]?.1 == msgs[5])
        #expect(volumeFiles(path).allSatisfy { $0.hasPrefix(".") }, "nothing visible before close")
        try await s.close()
        #expect(volumeFiles(path) == ["v000001.tar.zst", "v000002.tar.zst"])
        let r = try ArchiveStore.open(path: path, create: false, logger: testLogger)
        let listing = try r.list()
        #expect(listing.runs.count == 1)
        #expect(listing.runs[0].volumes == ["v000001.tar.zst", "v000002.tar.zst"])
        #expect(try r.check().isClean)
        #expect(try await readEverything(r)[.inbox]?.count == 6)
        try await r.close()
    }

    /// Provenance: the source identity and where the date came from are kept.
    @Test func recordsSourceIdentityAndDateSource() async throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let path = dir + "/set"
        let s = try ArchiveStore.open(path: path, options: ArchiveOptions(source: "pop3://u@host:995"), create: true,
                                      logger: testLogger)
        let date = InternalDate(secondsSinceEpoch: 1_600_000_000)
        let r = try await s.append(to: .inbox, AppendRequest(internalDate: date, dateSource: .received, sourceID: "UIDL abc123"),
                                   body: .bytes(sampleMessages(1)[0])).result()
        try await s.close()
        let c = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let loc = try c.catalog.locations(folderID: nil, asOfRun: nil).first
        #expect(loc?.sourceID == "UIDL abc123")
        #expect(loc?.dateSource == .received)
        #expect(try await c.listMessages(in: .inbox).messages.first { $0.id == r.id }?.dateSource == .received)
        #expect(try c.list().runs.first?.source == "pop3://u@host:995")
        try await c.close()
    }

    /// A catalog that is not a database is a corrupt archive (exit 6).
    @Test func corruptCatalogIsRefused() async throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let path = dir + "/set"
        try await backupRun(path, sampleMessages(2))
        try Data(repeating: 0x42, count: 8192).write(to: URL(fileURLWithPath: path + "/catalog.sqlite"))
        unlink(path + "/catalog.sqlite-wal")
        unlink(path + "/catalog.sqlite-shm")
        do {
            _ = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
            Issue.record("a garbage catalog was opened")
        } catch let e as MailError {
            #expect(e.kind == .corrupt)
            #expect(e.exitCode == 6)
        }
    }

    /// The streaming quoters against a line-by-line statement of mboxrd, on
    /// random text made of the bytes that matter, cut into random chunks.
    @Test func mboxrdQuotingMatchesItsDefinition() {
        func lines(_ b: [UInt8]) -> [[UInt8]] {
            var out: [[UInt8]] = []
            var cur: [UInt8] = []
            for c in b {
                cur.append(c)
                if c == 0x0A { out.append(cur); cur = [] }
            }
            if !cur.isEmpty { out.append(cur) }
            return out
        }
        func isFromLine(_ l: [UInt8], minQuotes: Int) -> Bool {
            let q = l.prefix { $0 == UInt8(ascii: ">") }.count
            return q >= minQuotes && l.dropFirst(q).starts(with: Array("From ".utf8))
        }
        func stream(_ b: [UInt8], _ chunks: [Int], _ step: (UnsafeRawBufferPointer, inout [UInt8]) -> Void) -> [UInt8] {
            var out: [UInt8] = []
            var i = 0, k = 0
            while i < b.count {
                let end = min(i + chunks[k % chunks.count], b.count)
                b[i..<end].withUnsafeBytes { step($0, &out) }
                i = end
                k += 1
            }
            return out
        }
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array(">>>From \nx".utf8)
        for _ in 0..<2000 {
            let text = (0..<Int.random(in: 0...80, using: &rng)).map { _ in alphabet.randomElement(using: &rng) ?? 0x78 }
            let chunks = (0..<4).map { _ in Int.random(in: 1...9, using: &rng) }
            let wantQuoted = lines(text).flatMap { isFromLine($0, minQuotes: 0) ? [UInt8(ascii: ">")] + $0 : $0 }
            let wantUnquoted = lines(text).flatMap { isFromLine($0, minQuotes: 1) ? Array($0.dropFirst()) : $0 }
            var q = FromQuoter()
            var quoted = stream(text, chunks) { q.process($0, into: &$1) }
            q.flush(into: &quoted)
            #expect(quoted == wantQuoted, "\(String(decoding: text, as: UTF8.self).debugDescription) \(chunks)")
            #expect(q.quoted == lines(text).filter { isFromLine($0, minQuotes: 0) }.count)
            var u = FromUnquoter()
            var unquoted = stream(text, chunks) { u.process($0, into: &$1) }
            u.flush(into: &unquoted)
            #expect(unquoted == wantUnquoted, "\(String(decoding: text, as: UTF8.self).debugDescription) \(chunks)")
            var back = FromUnquoter()
            var roundTrip = stream(quoted, chunks) { back.process($0, into: &$1) }
            back.flush(into: &roundTrip)
            #expect(roundTrip == text)
        }
    }

    @Test func mboxrdQuotingRoundTrips() {
        let samples: [String] = ["From a\n>From b\n>>From c\nFrom\nxFrom d\n>>>>x\n", ">", "From ", ">From", "\n\nFrom x",
                                 ">>From >From From \r\nFrom"]
        for s in samples {
            let bytes = Array(s.utf8)
            for chunk in [1, 2, 3, 100] {
                var q = FromQuoter()
                var quoted: [UInt8] = []
                var i = 0
                while i < bytes.count {
                    let end = min(i + chunk, bytes.count)
                    bytes[i..<end].withUnsafeBytes { q.process($0, into: &quoted) }
                    i = end
                }
                q.flush(into: &quoted)
                // No line of the quoted text starts with "From ".
                #expect(!String(decoding: quoted, as: UTF8.self).split(separator: "\n").contains { $0.hasPrefix("From ") })
                var u = FromUnquoter()
                var back: [UInt8] = []
                i = 0
                while i < quoted.count {
                    let end = min(i + chunk, quoted.count)
                    quoted[i..<end].withUnsafeBytes { u.process($0, into: &back) }
                    i = end
                }
                u.flush(into: &back)
                #expect(back == bytes, "\(s) chunk \(chunk)")
            }
        }
    }
}

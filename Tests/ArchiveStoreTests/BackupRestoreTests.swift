import Foundation
import MailModel
import MailStore
import MailTestSupport
import SyncState
import Testing
import Transfer
@testable import ArchiveStore

/// What a store holds, as comparable values: folder → sorted (key, flags, date, bytes).
struct Snapshot: Equatable, CustomStringConvertible {
    struct Item: Hashable, Comparable {
        var key: String
        var flags: String
        var date: Int64?
        /// SHA-256 of the raw bytes: equal digests mean byte-exact copies.
        var bytes: String
        static func < (l: Item, r: Item) -> Bool { (l.key, l.flags) < (r.key, r.flags) }
    }
    var folders: [FolderPath: [Item]]
    var description: String {
        folders.keys.sorted().map { "\($0): \(folders[$0]?.map { "\($0.key.prefix(8)) \($0.flags)" } ?? [])" }.joined(separator: "\n")
    }

    static func of(_ server: MemoryServer) -> Snapshot {
        var out: [FolderPath: [Item]] = [:]
        for f in server.folderPaths {
            // Keywords that are not IMAP atoms cannot be archived (they are reported dropped).
            let items = server.messages(in: f).map {
                Item(key: RawSHA256.of($0.bytes), flags: Flags($0.flags.filter { $0.isSystem || $0.isValidKeyword }).description,
                     date: $0.internalDate?.secondsSinceEpoch, bytes: RawSHA256.of($0.bytes))
            }
            if !items.isEmpty { out[f] = items.sorted() }
        }
        return Snapshot(folders: out)
    }

    static func of(_ store: some MailStore) async throws -> Snapshot {
        var out: [FolderPath: [Item]] = [:]
        for (f, msgs) in try await digestEverything(store) {
            let items = msgs.values.map {
                Item(key: $0.1, flags: $0.0.flags.description, date: $0.0.internalDate?.secondsSinceEpoch, bytes: $0.1)
            }
            if !items.isEmpty { out[f] = items.sorted() }
        }
        return Snapshot(folders: out)
    }
}

func corpusSource(_ corpus: [(name: String, bytes: [UInt8])], range: Range<Int>, into server: MemoryServer) {
    for i in range {
        let (f, fl, d) = placement(i)
        server.add(corpus[i].bytes, to: f, flags: fl, internalDate: d)
    }
}

@Suite("Backup and restore through the transfer engine", .serialized)
struct BackupRestoreTests {
    func backup(_ src: MemoryServer, to path: String, state: String, format: ArchiveFormat = .maildir,
                parallel: Int = 1) async throws -> Report {
        let state = try SQLiteStateStore(path: state)
        defer { state.close() }
        let job = MigrationJob(
            source: { src.makeStore() },
            destination: { try ArchiveStore.open(path: path, options: ArchiveOptions(format: format, source: "memory:src"),
                                                 create: true, logger: testLogger) },
            options: MigrationOptions(parallel: parallel, propagateFlags: true, propagateDeletions: true, command: "backup"),
            state: state, logger: testLogger)
        return try await job.run()
    }

    func restore(from path: String, asOf: InternalDate? = nil, to dst: @escaping @Sendable () throws -> any MailStore,
                 state: String, parallel: Int = 1) async throws -> Report {
        let state = try SQLiteStateStore(path: state)
        defer { state.close() }
        let job = MigrationJob(
            source: { try ArchiveStore.open(path: path, options: ArchiveOptions(asOf: asOf, readOnly: true), create: false,
                                            logger: testLogger) },
            destination: { try dst() },
            options: MigrationOptions(parallel: parallel, command: "restore"), state: state, logger: testLogger)
        return try await job.run()
    }

    /// Three incremental backups of a changing account, then restores: the
    /// latest state, a past state (`asOf`), and a second restore that adds nothing.
    @Test func incrementalBackupsAndIdempotentRestore() async throws {
        guard let corpus = corpusMessages(limit: 150) else { return }
        let dir = makeTempDir("backup")
        defer { removeTree(dir) }
        let path = dir + "/set"
        let src = MemoryServer(kind: .imap, name: "src", firstUIDValidity: 100)
        corpusSource(corpus, range: 0..<100, into: src)

        var report = try await backup(src, to: path, state: dir + "/backup.sqlite")
        #expect(report.exitCode == 0, "\(report.failures)")
        let afterRun1 = Snapshot.of(src)
        let run1Done = InternalDate.now()
        try await Task.sleep(nanoseconds: 1_100_000_000)

        // New mail, flag changes, a deletion, a message moved to another folder.
        corpusSource(corpus, range: 100..<150, into: src)
        let session = src.makeStore()
        let inbox = try await session.listMessages(in: .inbox)
        try await session.setFlags([.flagged], .add, for: Array(inbox.messages.prefix(3).map(\.id)), in: .inbox)
        let changed = inbox.messages.prefix(3).filter { !$0.flags.contains(.flagged) }.count
        try await session.close()
        let victim = src.messages(in: .inbox)[5]
        src.removeMessage(uid: victim.uid, from: .inbox)
        let moved = src.messages(in: .inbox)[6]
        src.removeMessage(uid: moved.uid, from: .inbox)
        src.add(moved.bytes, to: FolderPath("Sent")!, flags: moved.flags, internalDate: moved.internalDate)

        report = try await backup(src, to: path, state: dir + "/backup.sqlite")
        #expect(report.exitCode == 0, "\(report.failures)")
        try await Task.sleep(nanoseconds: 1_100_000_000)
        report = try await backup(src, to: path, state: dir + "/backup.sqlite")
        #expect(report.exitCode == 0, "\(report.failures)")

        let s = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let listing = try s.list()
        try await s.close()
        #expect(listing.runs.count == 3)
        #expect(listing.volumes.count == 2, "a run with nothing new writes no volume")
        #expect(listing.runs[1].messagesAdded <= 50, "only new bytes in the second volume (the moved message is not stored again)")
        #expect(listing.runs[1].flagChanges == changed)
        #expect(listing.runs[1].deletions >= 2)
        #expect(listing.runs[2].messagesAdded == 0)

        // Restore the latest state into a fresh account: byte-exact, flags, dates.
        let dst = MemoryServer(kind: .imap, name: "dst", firstUIDValidity: 900)
        report = try await restore(from: path, to: { dst.makeStore() }, state: dir + "/restore.sqlite")
        #expect(report.exitCode == 0, "\(report.failures)")
        #expect(Snapshot.of(dst) == Snapshot.of(src))

        // Restoring again, even with no state, adds nothing.
        report = try await restore(from: path, to: { dst.makeStore() }, state: dir + "/restore2.sqlite")
        #expect(report.exitCode == 0)
        #expect(Snapshot.of(dst) == Snapshot.of(src))

        // As of the first run.
        let old = MemoryServer(kind: .imap, name: "old", firstUIDValidity: 700)
        report = try await restore(from: path, asOf: run1Done, to: { old.makeStore() }, state: dir + "/restore3.sqlite")
        #expect(report.exitCode == 0)
        #expect(Snapshot.of(old) == afterRun1)
    }

    /// Restore into a Maildir tree, twice; and the tree plain `tar` extracts
    /// from the volumes is one `MaildirStore` reads with the same messages.
    @Test(arguments: [ArchiveFormat.maildir, .mbox])
    func restoreToMaildirAndReadTarTree(format: ArchiveFormat) async throws {
        guard let corpus = corpusMessages(limit: 80) else { return }
        let dir = makeTempDir("restore-maildir")
        defer { removeTree(dir) }
        let path = dir + "/set"
        let src = MemoryServer(kind: .imap, name: "src", firstUIDValidity: 100)
        corpusSource(corpus, range: 0..<80, into: src)
        let report = try await backup(src, to: path, state: dir + "/b.sqlite", format: format)
        #expect(report.exitCode == 0, "\(report.failures)")

        let root = dir + "/restored"
        for n in 0..<2 {
            let r = try await restore(from: path, to: { try MaildirStore(root: root, create: true) }, state: dir + "/r\(n).sqlite")
            #expect(r.exitCode == 0, "\(r.failures)")
        }
        let md = try MaildirStore(root: root, create: false)
        let restored = try await Snapshot.of(md)
        try await md.close()
        let want = Snapshot.of(src)
        #expect(restored == want)

        guard format == .maildir else { return }
        let out = dir + "/tar-tree"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        for v in volumeFiles(path) {
            let (status, o) = try run("/usr/bin/env", ["tar", "--zstd", "-x", "-f", path + "/volumes/" + v, "-C", out])
            #expect(status == 0, "\(o)")
        }
        let tree = try MaildirStore(root: out, create: false)
        let fromTar = try await Snapshot.of(tree)
        try await tree.close()
        let a = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let fromArchive = try await Snapshot.of(a)
        try await a.close()
        #expect(fromTar.folders.keys.sorted() == fromArchive.folders.keys.sorted())
        for (f, items) in fromArchive.folders {
            #expect(Set(fromTar.folders[f]?.map(\.bytes) ?? []) == Set(items.map(\.bytes)), "\(f)")
            #expect(Set(fromTar.folders[f]?.map(\.date) ?? []) == Set(items.map(\.date)), "\(f)")
        }
    }

    /// Parallel workers back up into one run (they share the store) and
    /// restore from parallel readers.
    @Test func parallelWorkers() async throws {
        guard let corpus = corpusMessages(limit: 120) else { return }
        let dir = makeTempDir("parallel")
        defer { removeTree(dir) }
        let path = dir + "/set"
        let src = MemoryServer(kind: .imap, name: "src", firstUIDValidity: 100)
        corpusSource(corpus, range: 0..<120, into: src)
        var report = try await backup(src, to: path, state: dir + "/b.sqlite", parallel: 3)
        #expect(report.exitCode == 0, "\(report.failures)")
        let s = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let listing = try s.list()
        try await s.close()
        #expect(listing.runs.count == 1)
        let dst = MemoryServer(kind: .imap, name: "dst", firstUIDValidity: 900)
        report = try await restore(from: path, to: { dst.makeStore() }, state: dir + "/r.sqlite", parallel: 3)
        #expect(report.exitCode == 0, "\(report.failures)")
        #expect(Snapshot.of(dst) == Snapshot.of(src))
    }

    /// `--folder GLOB`: a partial restore takes only the matching folders.
    @Test func partialRestoreByFolder() async throws {
        guard let corpus = corpusMessages(limit: 60) else { return }
        let dir = makeTempDir("partial")
        defer { removeTree(dir) }
        let path = dir + "/set"
        let src = MemoryServer(kind: .imap, name: "src", firstUIDValidity: 100)
        corpusSource(corpus, range: 0..<60, into: src)
        #expect(try await backup(src, to: path, state: dir + "/b.sqlite").exitCode == 0)
        let dst = MemoryServer(kind: .imap, name: "dst", firstUIDValidity: 900)
        let state = try SQLiteStateStore(path: dir + "/r.sqlite")
        defer { state.close() }
        let job = MigrationJob(
            source: { try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger) },
            destination: { dst.makeStore() },
            options: MigrationOptions(selection: FolderSelection(include: ["Février/**"]), command: "restore"),
            state: state, logger: testLogger)
        let report = try await job.run()
        #expect(report.exitCode == 0, "\(report.failures)")
        let want = Snapshot.of(src).folders.filter { $0.key.components.first == "Février" }
        #expect(!want.isEmpty)
        #expect(Snapshot.of(dst).folders == want)
    }
}

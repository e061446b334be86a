import Foundation
import MailModel
import MailStore
import MailTestSupport
import SyncState
import Testing
import Transfer
@testable import ArchiveStore

/// What an archive holds, as comparable values: the catalog's view (folder →
/// sorted key, flags, INTERNALDATE) and the totals `archive list` gives.
struct ArchiveImage: Equatable, CustomStringConvertible {
    struct Item: Hashable, Comparable {
        var key: String
        var flags: String
        var date: Int64?
        static func < (l: Item, r: Item) -> Bool { (l.key, l.flags, l.date ?? 0) < (r.key, r.flags, r.date ?? 0) }
    }
    var folders: [FolderPath: [Item]]
    var storedMessages: Int
    var storedBytes: Int64
    var liveLocations: Int

    var description: String {
        "\(storedMessages) stored (\(storedBytes) bytes), \(liveLocations) live; "
            + folders.keys.sorted().map { "\($0): \(folders[$0]?.count ?? 0)" }.joined(separator: ", ")
    }

    static func of(_ path: String) async throws -> ArchiveImage {
        let s = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        do {
            var folders: [FolderPath: [Item]] = [:]
            for f in try await s.folders() {
                let items = try await s.listMessages(in: f.path).messages.map {
                    Item(key: $0.key?.hex ?? "?", flags: $0.flags.description, date: $0.internalDate?.secondsSinceEpoch)
                }
                if !items.isEmpty { folders[f.path] = items.sorted() }
            }
            let l = try s.list()
            try await s.close()
            return ArchiveImage(folders: folders, storedMessages: l.storedMessages, storedBytes: l.storedBytes,
                                liveLocations: l.liveLocations)
        } catch {
            try? await s.close()
            throw error
        }
    }
}

/// A backup through the transfer engine, as `mailferry backup` runs it.
func engineBackup(_ src: MemoryServer, to path: String, state: String, parallel: Int,
                  format: ArchiveFormat = .maildir) async throws -> Report {
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

final class TurnCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var now = 0
    private(set) var peak = 0
    private(set) var order: [Int] = []
    func enter(_ i: Int) { lock.withLock { now += 1; peak = max(peak, now); order.append(i) } }
    func leave() { lock.withLock { now -= 1 } }
}

@Suite("Parallel backup into one serial volume writer", .serialized)
struct ParallelBackupTests {
    /// The writer queue's places let at most `limit` tasks in at a time,
    /// whatever the number waiting, and every waiter gets its turn.
    @Test(arguments: [1, 3, ArchiveStore.writerQueueDepth])
    func slotsAdmitAtMostTheirLimit(limit: Int) async {
        let gate = AsyncSlots(limit: limit)
        let c = TurnCounter()
        await withTaskGroup(of: Void.self) { g in
            for i in 0..<200 {
                g.addTask {
                    await gate.acquire()
                    c.enter(i)
                    await Task.yield()
                    c.leave()
                    gate.release()
                }
            }
        }
        #expect(c.peak <= limit)
        #expect(c.peak >= 1)
        #expect(Set(c.order) == Set(0..<200))
        // Free again afterwards.
        await gate.acquire()
        gate.release()
    }

    /// Appends are pipelined: each returns once its body is queued for the
    /// volume writer, and many may be outstanding before any result is
    /// asked for. Their results come in with distinct ids, close waits for
    /// the queue, and everything reads back byte-exact.
    @Test func pipelinedAppendsResolveAndCloseWaitsForTheWriter() async throws {
        let dir = makeTempDir("pipelined")
        defer { removeTree(dir) }
        let path = dir + "/set"
        let msgs = sampleMessages(3 * ArchiveStore.writerQueueDepth, tag: "pipe", bodyLines: 300)
        let s = try ArchiveStore.open(path: path, create: true, logger: testLogger)
        var pending: [PendingAppend] = []
        for m in msgs {
            pending.append(try await s.append(to: .inbox, AppendRequest(flags: [.seen], internalDate: .now()),
                                              body: chunkedBody(m, chunk: 1500)))
        }
        var ids = Set<MessageID>()
        for (p, m) in zip(pending, msgs) {
            let r = try await p.result()
            #expect(r.size == Int64(m.count))
            if let id = r.id { ids.insert(id) }
        }
        #expect(ids.count == msgs.count)
        try await s.close()
        let listing = try await ArchiveStore.list(path: path, logger: testLogger)
        #expect(listing.storedMessages == msgs.count && listing.liveLocations == msgs.count)
        let r = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let all = try await readEverything(r)
        try await r.close()
        #expect(Set((all[.inbox] ?? [:]).values.map { $0.1 }) == Set(msgs))
    }

    /// Many tasks deliver the same few messages into different folders at
    /// once: each byte string is stored once, every location is recorded,
    /// and every folder reads back byte-exact.
    @Test(arguments: [ArchiveFormat.maildir, .mbox])
    func concurrentDuplicatesAreStoredOnce(format: ArchiveFormat) async throws {
        let dir = makeTempDir("dups")
        defer { removeTree(dir) }
        let path = dir + "/set"
        let msgs = sampleMessages(5, tag: "dup", bodyLines: 200)
        let folders = (0..<8).map { FolderPath("F\($0)")! }
        let s = try ArchiveStore.open(path: path, options: ArchiveOptions(format: format), create: true, logger: testLogger)
        for f in folders { try await s.createFolder(f) }
        try await withThrowingTaskGroup(of: Void.self) { g in
            for f in folders {
                for m in msgs {
                    g.addTask {
                        _ = try await s.append(to: f, AppendRequest(flags: [.seen], internalDate: .now()),
                                               body: chunkedBody(m, chunk: 997)).result()
                    }
                }
            }
            try await g.waitForAll()
        }
        try await s.close()
        let listing = try await ArchiveStore.list(path: path, logger: testLogger)
        #expect(listing.storedMessages == msgs.count)
        #expect(listing.storedBytes == Int64(msgs.reduce(0) { $0 + $1.count }))
        #expect(listing.liveLocations == msgs.count * folders.count)
        #expect(listing.volumes.count == 1 && listing.runs.count == 1)
        #expect(try await ArchiveStore.check(path: path, logger: testLogger).isClean)
        let r = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let all = try await readEverything(r)
        try await r.close()
        for f in folders {
            let got: [[UInt8]] = (all[f] ?? [:]).values.map { $0.1 }
            #expect(Set(got) == Set(msgs), "\(f)")
        }
    }

    /// Four fetchers deliver a 40 MB message each at once: the bodies are
    /// spooled (1 MiB each in memory at most) while they wait for the one
    /// volume writer, so memory stays flat. Measured in a child process
    /// (this test binary, filtered to `parallelBigChild`), as the 200 MB test does.
    @Test func parallelBigMessagesStayFlat() async throws {
        let dir = makeTempDir("parallel-big")
        defer { removeTree(dir) }
        let report = dir + "/rss.json"
        let (status, output) = try run(CommandLine.arguments[0],
                                       ["--testing-library", "swift-testing", "--filter", "parallelBigChild"],
                                       env: ["MAILFERRY_ARCHIVE_PARALLEL_BIG_CHILD": report])
        try #require(status == 0, "child failed: \(output.suffix(3000))")
        let r = try JSONDecoder().decode([String: Int64].self, from: Data(contentsOf: URL(fileURLWithPath: report)))
        let baseline = r["baseline"] ?? 0, peak = r["peak"] ?? 0
        let mb = { (x: Int64) in String(format: "%.1f MB", Double(x) / 1_048_576) }
        print("4 × 40 MB messages appended at once (child process): baseline RSS \(mb(baseline)); peak \(mb(peak)) (+\(mb(peak - baseline)))")
        #expect(r["ok"] == 1)
        #expect(!MemoryBounds.checked || peak - baseline < 64 * 1024 * 1024)
    }

    /// The child half of `parallelBigMessagesStayFlat`.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["MAILFERRY_ARCHIVE_PARALLEL_BIG_CHILD"] != nil))
    func parallelBigChild() async throws {
        let out = try #require(ProcessInfo.processInfo.environment["MAILFERRY_ARCHIVE_PARALLEL_BIG_CHILD"])
        let dir = makeTempDir("parallel-big-child")
        defer { removeTree(dir) }
        let path = dir + "/set"
        // Sizes differ, so the four are four messages (not one stored once).
        let gens = (0..<4).map { BigMessage(total: 40 * 1024 * 1024 + Int64($0) * 1000) }
        let baseline = currentRSS()
        let sampler = RSSSampler()
        sampler.start()
        let s = try ArchiveStore.open(path: path, create: true, logger: testLogger)
        let results = try await withThrowingTaskGroup(of: AppendResult.self) { g in
            for (i, gen) in gens.enumerated() {
                let folder = FolderPath("F\(i)")!
                try await s.createFolder(folder)
                g.addTask {
                    try await s.append(to: folder, AppendRequest(flags: [], internalDate: InternalDate(secondsSinceEpoch: 1_700_000_000)),
                                       body: MessageBody(size: gen.total) { gen.next() }).result()
                }
            }
            var out: [AppendResult] = []
            for try await r in g { out.append(r) }
            return out
        }
        try await s.close()
        let peak = sampler.stop()
        let listing = try await ArchiveStore.list(path: path, logger: testLogger)
        let ok = Set(results.compactMap(\.key)) == Set(gens.map(\.key)) && listing.storedMessages == 4
            && listing.storedBytes == gens.reduce(0) { $0 + $1.total }
        #expect(ok)
        let json: [String: Int64] = ["baseline": baseline, "peak": peak, "ok": ok ? 1 : 0]
        try JSONEncoder().encode(json).write(to: URL(fileURLWithPath: out))
    }

    /// `--parallel 4` gives the archive a serial backup gives: the same
    /// folders, messages (by key), flags and dates, the same stored bytes,
    /// one run, and messages that sit in several folders stored once.
    @Test(arguments: [ArchiveFormat.maildir, .mbox])
    func parallelBackupEqualsSerial(format: ArchiveFormat) async throws {
        guard let corpus = corpusMessages(limit: 160) else { return }
        let dir = makeTempDir("parallel-vs-serial")
        defer { removeTree(dir) }
        let src = MemoryServer(kind: .imap, name: "src", firstUIDValidity: 100)
        corpusSource(corpus, range: 0..<160, into: src)
        // The same bytes again in other folders (a label copy, a moved message).
        for i in 0..<30 { src.add(corpus[i].bytes, to: FolderPath("Copies")!, flags: [.flagged], internalDate: .now()) }
        for i in 20..<40 { src.add(corpus[i].bytes, to: FolderPath("Copies/Older")!, flags: [], internalDate: .now()) }

        let serial = try await engineBackup(src, to: dir + "/serial", state: dir + "/s.sqlite", parallel: 1, format: format)
        #expect(serial.exitCode == 0, "\(serial.failures)")
        let parallel = try await engineBackup(src, to: dir + "/parallel", state: dir + "/p.sqlite", parallel: 4, format: format)
        #expect(parallel.exitCode == 0, "\(parallel.failures)")
        #expect(parallel.totals.copied == serial.totals.copied)

        let a = try await ArchiveImage.of(dir + "/serial")
        let b = try await ArchiveImage.of(dir + "/parallel")
        #expect(a == b)
        let distinct = Set(corpus.prefix(160).map { RawSHA256.of($0.bytes) })
        #expect(b.storedMessages == distinct.count, "each byte string stored once")
        #expect(b.liveLocations == 160 + 30 + 20)
        #expect(b.folders[FolderPath("Copies")!]?.count == 30)
        // Byte-exact as well.
        let sa = try ArchiveStore.open(path: dir + "/serial", options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let sb = try ArchiveStore.open(path: dir + "/parallel", options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let snapA = try await Snapshot.of(sa)
        let snapB = try await Snapshot.of(sb)
        let listing = try sb.list()
        try await sa.close()
        try await sb.close()
        #expect(snapA == snapB)
        #expect(listing.runs.count == 1, "the workers share one run")
        #expect(try await ArchiveStore.check(path: dir + "/parallel", logger: testLogger).isClean)

        // An incremental parallel run after changes stays equal to a serial one.
        corpusSource(corpus, range: 160..<min(200, corpus.count), into: src)
        let session = src.makeStore()
        let inbox = try await session.listMessages(in: .inbox)
        try await session.setFlags([.answered], .add, for: Array(inbox.messages.prefix(3).map(\.id)), in: .inbox)
        try await session.close()
        let victim = src.messages(in: .inbox)[2]
        src.removeMessage(uid: victim.uid, from: .inbox)
        _ = try await engineBackup(src, to: dir + "/serial", state: dir + "/s.sqlite", parallel: 1, format: format)
        _ = try await engineBackup(src, to: dir + "/parallel", state: dir + "/p.sqlite", parallel: 4, format: format)
        #expect(try await ArchiveImage.of(dir + "/serial") == ArchiveImage.of(dir + "/parallel"))
    }
}

@Suite("Readers beside a backup; writers exclude each other", .serialized)
struct ArchiveLockingTests {
    /// While a backup is writing (a volume under its temporary name, not in
    /// the catalog), `archive list`, `archive check` and a restore reader
    /// work and see only completed volumes; a prune and a second backup are
    /// refused with the holder's pid (exit 5).
    @Test func readersWorkWhileABackupHoldsTheLock() async throws {
        let dir = makeTempDir("locks")
        defer { removeTree(dir) }
        let path = dir + "/set"
        let first = sampleMessages(4, tag: "one")
        try await backupRun(path, first)
        let committed = try await ArchiveStore.list(path: path, logger: testLogger)
        #expect(committed.volumes.count == 1)

        // A backup in progress: its volume is being written under a temporary name.
        let w = try ArchiveStore.open(path: path, create: true, logger: testLogger)
        _ = try await appendAll(w, sampleMessages(2, tag: "two").map { (.inbox, [], .now(), $0) })
        let inProgress = try ArchiveStore.open(path: path, options: ArchiveOptions(), create: true, logger: testLogger)
        #expect(inProgress === w, "a second opener in this process shares the run")
        let temps = ((try? FileManager.default.contentsOfDirectory(atPath: path + "/volumes")) ?? []).filter { $0.hasPrefix(".") }
        #expect(!temps.isEmpty, "the volume being written")

        // Another process can read beside the writer…
        let (shared, _) = try run("/usr/bin/env", ["python3", "-c",
                                                   "import fcntl,sys; fcntl.flock(open(sys.argv[1],'a'), fcntl.LOCK_SH|fcntl.LOCK_NB)",
                                                   path + "/" + ArchiveStore.readerLockName])
        #expect(shared == 0)
        // …and cannot write: the writers' lock names this process.
        let (held, _) = try run("/usr/bin/env", ["python3", "-c",
                                                 "import fcntl,sys; fcntl.flock(open(sys.argv[1],'a'), fcntl.LOCK_EX|fcntl.LOCK_NB)",
                                                 path + "/" + ArchiveStore.writerLockName])
        #expect(held != 0)
        #expect(ArchiveStore.lockHolder(path: path) == String(getpid()))

        // list, check and a restore reader work and see only completed volumes.
        let during = try await ArchiveStore.list(path: path, logger: testLogger)
        #expect(during.volumes == committed.volumes, "only completed volumes")
        #expect(during.storedMessages == first.count)
        for v in during.volumes { #expect(FileManager.default.fileExists(atPath: path + "/volumes/" + v.name)) }
        let checked = try await ArchiveStore.check(path: path, logger: testLogger)
        #expect(checked.isClean, "\(checked.problems)")
        #expect(checked.volumesChecked == during.volumes.count)
        let reader = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let seen = try await readEverything(reader)
        try await reader.close()
        let seenInbox: [[UInt8]] = (seen[.inbox] ?? [:]).values.map { $0.1 }
        #expect(Set(seenInbox) == Set(first), "only what the last commit holds")

        // A prune and a second backup (another opener: a separate lock) are refused, exit 5.
        for create in [false, true] {
            do {
                let other = try ArchiveStore.openUnshared(path: path, options: ArchiveOptions(), create: create, logger: testLogger)
                try await other.close()
                Issue.record("a second writer got the archive (create: \(create))")
            } catch let e as MailError {
                #expect(e.exitCode == 5)
                #expect(e.message.contains("locked by pid \(getpid())"), "\(e.message)")
            }
        }
        try await w.close()
        try await inProgress.close()
        let after = try await ArchiveStore.list(path: path, logger: testLogger)
        #expect(after.storedMessages == 6)
        #expect(after.runs.count == 2)
        #expect(after.volumes.count == 2)
        #expect(ArchiveStore.lockHolder(path: path) == nil, "the pid is cleared on release")
        #expect(try await ArchiveStore.check(path: path, logger: testLogger).isClean)
    }

    /// A prune rewrites volumes, so it needs the archive to itself: it is
    /// refused while a reader is open, and readers are refused while it runs.
    @Test func pruneExcludesReaders() async throws {
        let dir = makeTempDir("prune-lock")
        defer { removeTree(dir) }
        let path = dir + "/set"
        let msgs = sampleMessages(3, tag: "p")
        let placed = try await {
            let s = try ArchiveStore.open(path: path, create: true, logger: testLogger)
            let p = try await appendAll(s, msgs.map { (.inbox, [], .now(), $0) })
            try await s.close()
            return p
        }()
        let d = try ArchiveStore.open(path: path, create: true, logger: testLogger)
        try await d.delete([placed[0].id], in: .inbox)
        try await d.close()
        try await Task.sleep(nanoseconds: 1_100_000_000)

        let reader = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        do {
            _ = try await ArchiveStore.prune(path: path, deletedBefore: .now(), logger: testLogger)
            Issue.record("pruned under a reader")
        } catch let e as MailError {
            #expect(e.exitCode == 5)
            #expect(e.message.contains("being read"), "\(e.message)")
        }
        try await reader.close()

        // While a prune holds both locks, a reader is refused with its pid.
        let pruner = try ArchiveStore.open(path: path, create: false, logger: testLogger)
        let fd = try pruner.excludeReaders()
        do {
            _ = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
            Issue.record("read during a prune")
        } catch let e as MailError {
            #expect(e.exitCode == 5)
            #expect(e.message.contains("locked by pid \(getpid())"), "\(e.message)")
        }
        close(fd)
        let report = try pruner.prune(deletedBefore: .now())
        try await pruner.close()
        #expect(report.messagesRemoved == 1)
        #expect(try await ArchiveStore.list(path: path, logger: testLogger).storedMessages == 2)
        #expect(try await ArchiveStore.check(path: path, logger: testLogger).isClean)
    }
}

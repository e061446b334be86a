import Foundation
import MailModel
import MailStore
import MailTestSupport
import NIOCore
import Testing
@testable import ArchiveStore

@Suite("Archive prune and memory", .serialized)
struct PruneAndMemoryTests {
    @Test(arguments: [ArchiveFormat.maildir, .mbox])
    func pruneRewritesOnlyAffectedVolumes(format: ArchiveFormat) async throws {
        let dir = makeTempDir("prune")
        defer { removeTree(dir) }
        let path = dir + "/set"
        let a = sampleMessages(6, tag: "a")
        let b = sampleMessages(4, tag: "b")
        let c = sampleMessages(2, tag: "c")
        let opts = ArchiveOptions(format: format)
        // Run 1: a0…a5 in INBOX, a0 also in Keep (stored once). Run 2: b0…b3. Run 3: c0, c1.
        var s = try ArchiveStore.open(path: path, options: opts, create: true, logger: testLogger)
        let pa = try await appendAll(s, a.map { (.inbox, [.seen], InternalDate(secondsSinceEpoch: 1_600_000_000), $0) })
        let keep = try await appendAll(s, [(FolderPath("Keep")!, [], InternalDate(secondsSinceEpoch: 1_600_000_000), a[0])])
        try await s.close()
        let pb = try await backupRun(path, b, folder: FolderPath("Other")!, options: opts)
        try await backupRun(path, c, folder: FolderPath("Third")!, options: opts)
        // Run 4: deletions seen on the source.
        s = try ArchiveStore.open(path: path, options: opts, create: true, logger: testLogger)
        try await s.delete([pa[0].id, pa[1].id, pa[2].id], in: .inbox)
        try await s.delete(pb.map(\.id), in: FolderPath("Other")!)
        try await s.close()
        #expect(volumeFiles(path).count == 3)

        // A cut-off before the deletions prunes nothing.
        s = try ArchiveStore.open(path: path, options: opts, create: false, logger: testLogger)
        let none = try s.prune(deletedBefore: InternalDate(secondsSinceEpoch: 1000))
        #expect(none.locationsRemoved == 0)
        #expect(none.rewritten.isEmpty)
        let v3sha = try s.list().volumes.first { $0.name.hasPrefix("v000003") }?.sha256

        let report = try s.prune(deletedBefore: InternalDate(secondsSinceEpoch: InternalDate.now().secondsSinceEpoch + 10))
        #expect(report.locationsRemoved == 7)
        #expect(report.messagesRemoved == 6)   // a0 stays: Keep still holds it
        #expect(report.rewritten.count == 2)
        #expect(report.rewritten["v000001.tar.zst"] == .some("v000004.tar.zst"))
        #expect(report.rewritten["v000002.tar.zst"] == .some(nil))
        #expect(report.volumeBytesAfter < report.volumeBytesBefore)
        let listing = try s.list()
        #expect(listing.volumes.map(\.name) == ["v000003.tar.zst", "v000004.tar.zst"])
        #expect(listing.volumes.first { $0.name == "v000003.tar.zst" }?.sha256 == v3sha, "an unaffected volume was rewritten")
        #expect(listing.volumes.first { $0.name == "v000004.tar.zst" }?.replaces == "v000001.tar.zst")
        #expect(listing.storedMessages == 6)
        #expect(listing.deletedLocations == 0)
        #expect(try s.check().isClean)
        try await s.close()
        #expect(volumeFiles(path) == ["v000003.tar.zst", "v000004.tar.zst"])

        let r = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let all = try await readEverything(r)
        try await r.close()
        #expect(Set(all[.inbox]?.values.map(\.1) ?? []) == Set(a[3...]))
        #expect(all[FolderPath("Keep")!]?[keep[0].id]?.1 == a[0])
        #expect(all[FolderPath("Other")!]?.isEmpty == true)
        #expect(Set(all[FolderPath("Third")!]?.values.map(\.1) ?? []) == Set(c))
        // Ids survive a prune.
        #expect(all[.inbox]?[pa[3].id]?.1 == a[3])
    }

    /// A 200 MB message is archived and read back with flat memory. It runs
    /// in a child process (this test binary, filtered to `bigMessageChild`)
    /// so that no other test's allocations blur the figures; the child reports
    /// its RSS baseline and peaks, and its kernel high-water mark (VmHWM).
    @Test func twoHundredMegabyteMessageStaysFlat() async throws {
        let dir = makeTempDir("big")
        defer { removeTree(dir) }
        let report = dir + "/rss.json"
        let (status, output) = try run(CommandLine.arguments[0],
                                       ["--testing-library", "swift-testing", "--filter", "bigMessageChild"],
                                       env: ["MAILFERRY_ARCHIVE_BIG_CHILD": report])
        try #require(status == 0, "child failed: \(output.suffix(3000))")
        let data = try Data(contentsOf: URL(fileURLWithPath: report))
        let r = try JSONDecoder().decode([String: Int64].self, from: data)
        let baseline = r["baseline"] ?? 0, writePeak = r["writePeak"] ?? 0, readPeak = r["readPeak"] ?? 0, hwm = r["hwm"] ?? 0
        let mb = { (x: Int64) in String(format: "%.1f MB", Double(x) / 1_048_576) }
        print("200 MB message (child process): baseline RSS \(mb(baseline)); peak while archiving \(mb(writePeak)) (+\(mb(writePeak - baseline))); peak while reading back \(mb(readPeak)) (+\(mb(readPeak - baseline))); VmHWM \(mb(hwm))")
        #expect(r["ok"] == 1)
        if MemoryBounds.checked {
            #expect(writePeak - baseline < 64 * 1024 * 1024)
            #expect(readPeak - baseline < 64 * 1024 * 1024)
            #expect(hwm < baseline + 64 * 1024 * 1024)
        }
    }

    /// The child half of the memory test.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["MAILFERRY_ARCHIVE_BIG_CHILD"] != nil))
    func bigMessageChild() async throws {
        let out = try #require(ProcessInfo.processInfo.environment["MAILFERRY_ARCHIVE_BIG_CHILD"])
        let dir = makeTempDir("big-child")
        defer { removeTree(dir) }
        let path = dir + "/set"
        let total: Int64 = 200 * 1024 * 1024
        let gen = BigMessage(total: total)
        let baseline = currentRSS()

        let sampler = RSSSampler()
        sampler.start()
        let s = try ArchiveStore.open(path: path, create: true, logger: testLogger)
        let result = try await s.append(to: .inbox, AppendRequest(flags: [.seen], internalDate: InternalDate(secondsSinceEpoch: 1_700_000_000)),
                                        body: MessageBody(size: total) { gen.next() }).result()
        try await s.close()
        let writePeak = sampler.stop()

        let readSampler = RSSSampler()
        readSampler.start()
        let r = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let listing = try await r.listMessages(in: .inbox)
        let counter = ByteCounter()
        _ = try await r.fetchMessages(listing.messages.map(\.id), in: .inbox) { info, body in
            for try await chunk in body { counter.add(chunk) }
        }
        try await r.close()
        let readPeak = readSampler.stop()
        let ok = result.size == total && result.key == gen.key && counter.count == total && counter.key == gen.key
        #expect(ok)
        var hwm: Int64 = 0
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
           let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }) {
            hwm = (Int64(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
        }
        let json: [String: Int64] = ["baseline": baseline, "writePeak": writePeak, "readPeak": readPeak, "hwm": hwm, "ok": ok ? 1 : 0]
        try JSONEncoder().encode(json).write(to: URL(fileURLWithPath: out))
    }
}

/// A big message made up on the fly, hashed as it goes.
final class BigMessage: @unchecked Sendable {
    let total: Int64
    private var produced: Int64 = 0
    private var hasher = MessageHasher()
    private let block: [UInt8]
    private let lock = NSLock()

    init(total: Int64) {
        self.total = total
        var line = ""
        for i in 0..<4096 { line += "line \(i) of a very large attachment, base64-ish ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n" }
        block = Array(line.utf8)
    }

    var key: MessageKey { lock.lock(); defer { lock.unlock() }; return hasher.finalize() }

    func next() -> ByteBuffer? {
        lock.lock(); defer { lock.unlock() }
        guard produced < total else { return nil }
        var chunk: [UInt8]
        if produced == 0 {
            chunk = Array("From: big@example.org\r\nSubject: big\r\n\r\n".utf8) + block
        } else {
            chunk = block
        }
        let n = Int(min(Int64(chunk.count), total - produced))
        if n < chunk.count { chunk = Array(chunk[0..<n]) }
        produced += Int64(n)
        hasher.update(chunk)
        return ByteBuffer(bytes: chunk)
    }
}

final class ByteCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var hasher = MessageHasher()
    private(set) var count: Int64 = 0
    func add(_ b: ByteBuffer) {
        lock.lock(); defer { lock.unlock() }
        b.withUnsafeReadableBytes { hasher.update($0) }
        count += Int64(b.readableBytes)
    }
    var key: MessageKey { lock.lock(); defer { lock.unlock() }; return hasher.finalize() }
}

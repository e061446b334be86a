import Foundation
import Logging
import MailModel
import MailStore
import MailTestSupport
import NIOCore
import SyncState
import Testing
@testable import Transfer

private func tempRoot(_ tag: String) -> String {
    NSTemporaryDirectory() + "mailferry-\(tag)-\(UUID().uuidString)"
}

private func localJob(_ src: String, _ dst: String, dstKind: String = "maildir", state: any StateStore,
                      options: MigrationOptions = MigrationOptions()) -> MigrationJob {
    var logger = Logger(label: "test.local")
    logger.logLevel = .critical
    var o = options
    o.retry = RetryPolicy(maxAttempts: 3, sleep: { _ in })
    return MigrationJob(source: { try MaildirStore(root: src, create: false) },
                        destination: {
                            dstKind == "mbox" ? try MboxStore(root: dst, create: true) as any MailStore
                                : try MaildirStore(root: dst, create: true)
                        },
                        options: o, state: state, logger: logger)
}

private func fill(_ root: String, _ messages: [(FolderPath, [UInt8], Flags)]) async throws {
    let store = try MaildirStore(root: root, create: true)
    for (f, bytes, flags) in messages {
        try await store.createFolder(f)
        let p = try await store.append(to: f, AppendRequest(flags: flags, internalDate: InternalDate(secondsSinceEpoch: 1_600_000_000)),
                                       body: .bytes(bytes))
        _ = try await p.result()
    }
    try await store.close()
}

@Suite struct LocalStoreMigrationTests {
    @Test(arguments: ["maildir", "mbox"])
    func theCorpusCrossesByteExactAndAReRunCopiesNothing(into kind: String) async throws {
        guard let corpus = try Corpus.load() else {
            print(Corpus.absentMessage)
            return
        }
        let src = tempRoot("corpus-src")
        let dst = tempRoot("corpus-dst")
        let folders = [FolderPath.inbox, FolderPath("Archiv/Février")!, FolderPath("Lists/swift-nio")!]
        var msgs: [(FolderPath, [UInt8], Flags)] = []
        for (i, e) in corpus.messages.enumerated() {
            msgs.append((folders[i % folders.count], try e.load(), i % 3 == 0 ? [.seen] : i % 3 == 1 ? [.seen, Flag("$Label1")] : []))
        }
        try await fill(src, msgs)
        let state = try SQLiteStateStore(path: tempStatePath())
        defer { state.close() }
        let report = try await localJob(src, dst, dstKind: kind, state: state).run()
        #expect(report.exitCode == 0, "\(report.failures.prefix(5))")

        // Byte-exact: every source key is in the same destination folder, once per folder.
        let srcStore = try MaildirStore(root: src, create: false)
        let dstStore: any MailStore = kind == "mbox" ? try MboxStore(root: dst, create: false) : try MaildirStore(root: dst, create: false)
        let want = try await contents(of: srcStore)
        let got = try await contents(of: dstStore)
        let wantKeys = Set(want.map { $0.components(separatedBy: " ").dropLast().joined(separator: " ") })
        let gotKeys = got.map { $0.components(separatedBy: " ").dropLast().joined(separator: " ") }
        #expect(Set(gotKeys) == wantKeys)
        #expect(gotKeys.count == Set(gotKeys).count, "nothing duplicated within a folder")
        #expect(report.totals.found == corpus.messages.count)
        #expect(report.totals.copied + report.totals.duplicates == corpus.messages.count)
        #expect(report.totals.verified == corpus.messages.count)

        let again = try await localJob(src, dst, dstKind: kind, state: state).run()
        #expect(again.totals.copied == 0)
        #expect(again.totals.verified == corpus.messages.count)
        try? FileManager.default.removeItem(atPath: src)
        try? FileManager.default.removeItem(atPath: dst)
    }

    @Test func crashAtEveryEffectIntoMaildirResumesToTheSameTree() async throws {
        var msgs: [(FolderPath, [UInt8], Flags)] = []
        for n in 1...5 { msgs.append((.inbox, makeMessage(n, lf: n % 2 == 0), [.seen])) }
        msgs.append((.inbox, makeMessage(1), [.seen]))
        for n in 6...8 { msgs.append((FolderPath("Projets/Été")!, makeMessage(n), [Flag("$Work")])) }
        let src = tempRoot("crash-src")
        try await fill(src, msgs)

        let refDst = tempRoot("crash-ref")
        let refState = MemoryStateStore()
        _ = try await localJob(src, refDst, state: refState).run()
        let expected = try await contents(of: try MaildirStore(root: refDst, create: false))
        // Effects done: intents written ahead for messages the copy then
        // found to be duplicates are closed unused (abandoned).
        let effects = try refState.journal().filter { $0.status != .abandoned }.count
        #expect(effects >= 9)

        for n in 1...effects {
            let dst = tempRoot("crash-dst")
            let path = tempStatePath()
            do {
                let state = try SQLiteStateStore(path: path)
                defer { state.close() }
                await #expect(throws: MailError.self) {
                    _ = try await localJob(src, dst, state: state, options: MigrationOptions(stopAfterEffect: n)).run()
                }
            }
            let state = try SQLiteStateStore(path: path)
            defer { state.close() }
            let report = try await localJob(src, dst, state: state).run()
            #expect(report.exitCode == 0, "n=\(n)")
            #expect(try await contents(of: try MaildirStore(root: dst, create: false)) == expected, "n=\(n)")
            try? FileManager.default.removeItem(atPath: dst)
        }
    }

    /// A run killed between making a Maildir folder's directory and its
    /// cur/ leaves a directory that lists as a container: the next run
    /// makes it a Maildir again and copies into it (KillTests met this).
    @Test func aFolderLeftWithoutCurByAKilledRunIsMadeWhole() async throws {
        let src = tempRoot("halfmade-src")
        try await fill(src, [(.inbox, makeMessage(1), [.seen]), (FolderPath("Work")!, makeMessage(2), [.seen])])
        let dst = tempRoot("halfmade-dst")
        _ = try MaildirStore(root: dst, create: true)
        try FileManager.default.createDirectory(atPath: dst + "/Work", withIntermediateDirectories: false)
        let report = try await localJob(src, dst, state: MemoryStateStore()).run()
        #expect(report.exitCode == 0, "\(report.failures)")
        let got = try await contents(of: try MaildirStore(root: dst, create: false))
        let want = try await contents(of: try MaildirStore(root: src, create: false))
        #expect(got == want)
        #expect(got.count == 2)
        try? FileManager.default.removeItem(atPath: src)
        try? FileManager.default.removeItem(atPath: dst)
    }

    @Test func memoryStaysFlatWhileABigMessageStreamsThrough() async throws {
        let size = 96 * 1024 * 1024
        let src = GeneratedStore(size: size)
        let dst = tempRoot("big-dst")
        var logger = Logger(label: "test.big")
        logger.logLevel = .critical
        let before = peakRSS()
        let job = MigrationJob(source: { src }, destination: { try MaildirStore(root: dst, create: true) },
                               options: MigrationOptions(verify: false), state: MemoryStateStore(), logger: logger)
        let report = try await job.run()
        let after = peakRSS()
        #expect(report.exitCode == 0)
        #expect(report.totals.bytes == Int64(size))
        let d = try MaildirStore(root: dst, create: false)
        let l = try await d.listMessages(in: .inbox)
        #expect(l.messages.first?.size == Int64(size))
        if let before, let after {
            // The whole message would add 96 MB; streaming adds a few chunks.
            #expect(!MemoryBounds.checked || after - before < 48 * 1024 * 1024, "peak RSS grew by \((after - before) >> 20) MB")
        }
        try? FileManager.default.removeItem(atPath: dst)
    }
}

/// Peak resident set size (VmHWM) in bytes, Linux only.
private func peakRSS() -> Int? {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }) else { return nil }
    let kb = line.split(separator: " ").compactMap { Int($0) }.first
    return kb.map { $0 * 1024 }
}

/// A one-message source whose body is generated chunk by chunk and never held whole.
final class GeneratedStore: MailStore, @unchecked Sendable {
    let size: Int
    init(size: Int) { self.size = size }
    var location: StoreLocation { .maildir(path: "/generated") }
    var capabilities: StoreCapabilities { [.persistentIDs] }
    func folders() async throws -> [FolderInfo] { [FolderInfo(path: .inbox, messageCount: 1)] }
    func createFolder(_ path: FolderPath) async throws {}
    func listMessages(in folder: FolderPath, options: ListOptions) async throws -> FolderListing {
        FolderListing(folder: folder, validity: FolderValidity(uidValidity: 1),
                      messages: [MessageInfo(id: MessageID("1"), size: Int64(size), internalDate: InternalDate(secondsSinceEpoch: 1_600_000_000),
                                             dateSource: .stored)])
    }
    func fetchMessages(_ ids: [MessageID], in folder: FolderPath,
                       _ handler: @Sendable (MessageInfo, MessageBody) async throws -> Void) async throws -> [MessageID] {
        let header = Array("From: big@example.net\r\nSubject: big\r\n\r\n".utf8)
        let total = size
        let sent = Locked(0)
        let body = MessageBody(size: Int64(total)) {
            let offset = sent.get
            guard offset < total else { return nil }
            let n = min(64 * 1024, total - offset)
            var buf = ByteBuffer()
            buf.reserveCapacity(n)
            if offset == 0 {
                buf.writeBytes(header)
                buf.writeRepeatingByte(UInt8(ascii: "x"), count: n - header.count)
            } else {
                var left = n
                while left > 0 {
                    let line = min(left, 78)
                    if line >= 2 {
                        buf.writeRepeatingByte(UInt8(ascii: "y"), count: line - 2)
                        buf.writeBytes([13, 10])
                    } else {
                        buf.writeRepeatingByte(UInt8(ascii: "z"), count: line)
                    }
                    left -= line
                }
            }
            sent.with { $0 += n }
            return buf
        }
        for id in ids {
            try await handler(MessageInfo(id: id, size: Int64(total), internalDate: InternalDate(secondsSinceEpoch: 1_600_000_000),
                                          dateSource: .stored), body)
        }
        return []
    }
    func append(to folder: FolderPath, _ request: AppendRequest, body: MessageBody) async throws -> PendingAppend {
        throw MailError(.unsupported, scope: .account, "read-only")
    }
    func setFlags(_ flags: Flags, _ change: FlagChange, for ids: [MessageID], in folder: FolderPath) async throws {}
    func delete(_ ids: [MessageID], in folder: FolderPath) async throws {}
    func close() async throws {}
}

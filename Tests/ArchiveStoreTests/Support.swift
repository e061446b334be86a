import Foundation
import Logging
import MailModel
import MailStore
import NIOCore
@testable import ArchiveStore

/// Package root, from this file's path (Tests/ArchiveStoreTests/Support.swift).
let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// The shared corpus: MAILFERRY_CORPUS or ../shared/mail-corpus. Nil (and a
/// visible note) when absent.
func corpusMessages(limit: Int? = nil) -> [(name: String, bytes: [UInt8])]? {
    let base = ProcessInfo.processInfo.environment["MAILFERRY_CORPUS"] ?? (packageRoot + "/../shared/mail-corpus")
    let dir = base + "/messages"
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir), !names.isEmpty else {
        print("⚠︎ SKIPPED: mail corpus not found at \(dir) (set MAILFERRY_CORPUS)")
        return nil
    }
    var out: [(String, [UInt8])] = []
    for n in names.sorted() where n.hasSuffix(".eml") {
        if let limit, out.count >= limit { break }
        if let d = FileManager.default.contents(atPath: dir + "/" + n) { out.append((n, Array(d))) }
    }
    return out
}

let testLogger: Logger = {
    var l = Logger(label: "archive-tests")
    l.logLevel = .error
    return l
}()

/// A fresh temp directory, removed by the caller's `defer`.
func makeTempDir(_ tag: String = "archive") -> String {
    let p = NSTemporaryDirectory() + "mailferry-\(tag)-\(UUID().uuidString.prefix(8))"
    try? FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
    return p
}

func removeTree(_ p: String) { try? FileManager.default.removeItem(atPath: p) }

let testFolders: [FolderPath] = [
    .inbox,
    FolderPath("Archive/2024")!,
    FolderPath("Février/Réunions ☕")!,
    FolderPath("Sent")!,
    FolderPath("INBOX/Lists")!,
    FolderPath(components: ["a/b with slash", ".hidden", "cur"])!,
]

let flagChoices: [Flags] = [
    [], [.seen], [.seen, .flagged], [.answered, .seen], [.seen, Flag("$Forwarded")], [Flag("Work"), .flagged],
    [.draft], [.deleted, .seen], [Flag("$Label1"), Flag("Projekt-Ω")],
]

/// What a test put into an archive.
struct Placed: Hashable {
    var folder: FolderPath
    var bytes: [UInt8]
    var flags: Flags
    var date: InternalDate
    var id: MessageID
    var key: MessageKey
}

func placement(_ i: Int) -> (FolderPath, Flags, InternalDate) {
    let folder = testFolders[i % testFolders.count]
    let flags = flagChoices[(i / testFolders.count) % flagChoices.count]
    let date = InternalDate(secondsSinceEpoch: 1_500_000_000 + Int64(i) * 86_399, zoneMinutes: [0, 60, -300, 330][i % 4])
    return (folder, flags, date)
}

/// Appends messages with a chunked body (as a socket would deliver it).
func appendAll(_ store: ArchiveStore, _ items: [(FolderPath, Flags, InternalDate, [UInt8])],
               chunk: Int = 4000, knownSize: Bool = true) async throws -> [Placed] {
    var out: [Placed] = []
    for (folder, flags, date, bytes) in items {
        try await store.createFolder(folder)
        let body = chunkedBody(bytes, chunk: chunk, knownSize: knownSize)
        let r = try await store.append(to: folder, AppendRequest(flags: flags, internalDate: date), body: body).result()
        guard let id = r.id else { throw MailError(.storage, scope: .local, "no id") }
        // Keywords that are not IMAP atoms are refused, and said so.
        let invalid = flags.keywords.filter { !$0.isValidKeyword }
        guard Set(r.droppedFlags) == Set(invalid) else { throw MailError(.storage, scope: .local, "dropped \(r.droppedFlags)") }
        out.append(Placed(folder: folder, bytes: bytes, flags: Flags(flags.filter { $0.isSystem || $0.isValidKeyword }),
                          date: date, id: id, key: r.key))
    }
    return out
}

final class ChunkCursor: @unchecked Sendable {
    let bytes: [UInt8]
    let chunk: Int
    var offset = 0
    let lock = NSLock()
    init(_ b: [UInt8], chunk: Int) { bytes = b; self.chunk = chunk }
    func next() -> ByteBuffer? {
        lock.lock(); defer { lock.unlock() }
        guard offset < bytes.count else { return nil }
        let end = min(offset + chunk, bytes.count)
        defer { offset = end }
        return ByteBuffer(bytes: bytes[offset..<end])
    }
}

func chunkedBody(_ bytes: [UInt8], chunk: Int = 4000, knownSize: Bool = true) -> MessageBody {
    let c = ChunkCursor(bytes, chunk: chunk)
    return MessageBody(size: knownSize ? Int64(bytes.count) : nil) { c.next() }
}

/// Everything a store holds: folder → id → (info, bytes).
func readEverything(_ store: some MailStore) async throws -> [FolderPath: [MessageID: (MessageInfo, [UInt8])]] {
    var out: [FolderPath: [MessageID: (MessageInfo, [UInt8])]] = [:]
    for f in try await store.folders() where f.selectable {
        let listing = try await store.listMessages(in: f.path)
        let collector = Collector()
        let missing = try await store.fetchMessages(listing.messages.map(\.id), in: f.path) { info, body in
            let b = try await body.collect(upTo: 64 << 20)
            collector.add(info, Array(b.readableBytesView))
        }
        guard missing.isEmpty else { throw MailError(.notFound, scope: .folder, "missing \(missing)") }
        let listed = Dictionary(uniqueKeysWithValues: listing.messages.map { ($0.id, $0) })
        var m: [MessageID: (MessageInfo, [UInt8])] = [:]
        for (info, bytes) in collector.items {
            m[info.id] = (listed[info.id] ?? info, bytes)
        }
        out[f.path] = m
    }
    return out
}

/// Like `readEverything`, but keeps only each body's raw SHA-256 and size
/// (byte-exact comparison without holding the bodies).
func digestEverything(_ store: some MailStore) async throws -> [FolderPath: [MessageID: (MessageInfo, String)]] {
    var out: [FolderPath: [MessageID: (MessageInfo, String)]] = [:]
    for f in try await store.folders() where f.selectable {
        let listing = try await store.listMessages(in: f.path)
        let box = DigestBox()
        let missing = try await store.fetchMessages(listing.messages.map(\.id), in: f.path) { info, body in
            var h = RawSHA256()
            for try await chunk in body { chunk.withUnsafeReadableBytes { h.update($0) } }
            box.add(info, h.finalize())
        }
        guard missing.isEmpty else { throw MailError(.notFound, scope: .folder, "missing \(missing)") }
        let listed = Dictionary(uniqueKeysWithValues: listing.messages.map { ($0.id, $0) })
        var m: [MessageID: (MessageInfo, String)] = [:]
        for (info, d) in box.items { m[info.id] = (listed[info.id] ?? info, d) }
        out[f.path] = m
    }
    return out
}

final class DigestBox: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var items: [(MessageInfo, String)] = []
    func add(_ i: MessageInfo, _ d: String) { lock.lock(); items.append((i, d)); lock.unlock() }
}

final class Collector: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var items: [(MessageInfo, [UInt8])] = []
    func add(_ i: MessageInfo, _ b: [UInt8]) { lock.lock(); items.append((i, b)); lock.unlock() }
}

/// Runs a command, returning its exit status and combined output.
@discardableResult
func run(_ exe: String, _ args: [String], cwd: String? = nil, env: [String: String]? = nil) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
    if let env { p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 } }
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

func volumeFiles(_ archive: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: archive + "/volumes")) ?? []).sorted()
}

/// Resident set size of this process, in bytes.
func currentRSS() -> Int64 {
    guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let parts = s.split(separator: " ")
    guard parts.count > 1, let pages = Int64(parts[1]) else { return 0 }
    return pages * Int64(sysconf(Int32(_SC_PAGESIZE)))
}

/// Samples RSS on a background thread while `body` runs; returns the peak.
final class RSSSampler: @unchecked Sendable {
    private let lock = NSLock()
    private var peak: Int64 = 0
    private var running = true
    private var thread: Thread?
    func start() {
        peak = currentRSS()
        let t = Thread { [self] in
            while true {
                lock.lock()
                let go = running
                peak = max(peak, currentRSS())
                lock.unlock()
                if !go { break }
                usleep(5_000)
            }
        }
        thread = t
        t.start()
    }
    func stop() -> Int64 {
        lock.lock(); running = false; let p = max(peak, currentRSS()); lock.unlock()
        usleep(20_000)
        return p
    }
}

import Foundation
import Logging
import MailModel
import MailStore
import MailTestSupport
import SyncState
@testable import Transfer

/// A message with real headers; `lf` writes bare LF line endings.
func makeMessage(_ n: Int, messageID: Bool = true, lf: Bool = false, bodyLines: Int = 3, subject: String? = nil) -> [UInt8] {
    var lines: [String] = [
        "Received: from mx.example.net by mail.example.org; Tue, 2 Jan 2024 10:\(String(format: "%02d", n % 60)):00 +0100",
        "From: Sender \(n % 7) <s\(n % 7)@example.net>",
        "To: someone@example.org",
        "Date: Tue, 2 Jan 2024 09:\(String(format: "%02d", n % 60)):00 +0100",
        "Subject: \(subject ?? "message \(n)")",
    ]
    if messageID { lines.append("Message-ID: <m\(n)@example.net>") }
    lines.append("")
    for i in 0..<bodyLines { lines.append("Body line \(i) of message \(n). Ünïcödé and 8-bit: \u{00E9}") }
    let text = lines.joined(separator: lf ? "\n" : "\r\n") + (lf ? "\n" : "\r\n")
    return Array(text.utf8)
}

let work = FolderPath("Work")!
let deep = FolderPath("Work/Projets/Février")!
let sentSrc = FolderPath("Sent Items")!
let sentDst = FolderPath("Sent")!

/// A small IMAP account: nested and non-ASCII folders, flags, keywords,
/// dates, a SPECIAL-USE Sent folder, bare-LF mail, one message twice.
func populatedSource(_ name: String = "src") -> MemoryServer {
    let s = MemoryServer(kind: .imap, name: name, firstUIDValidity: 500)
    s.addFolder(work)
    s.addFolder(deep)
    s.addFolder(sentSrc, role: .sent)
    let d = { (n: Int) in InternalDate(secondsSinceEpoch: 1_700_000_000 + Int64(n) * 3600, zoneMinutes: 60) }
    s.add(makeMessage(1), to: .inbox, flags: [.seen], internalDate: d(1))
    s.add(makeMessage(2, lf: true), to: .inbox, flags: [.seen, .answered, Flag("$Forwarded")], internalDate: d(2))
    s.add(makeMessage(3, messageID: false), to: .inbox, flags: [], internalDate: d(3))
    s.add(makeMessage(1), to: .inbox, flags: [.seen], internalDate: d(1))  // the same message again
    s.add(makeMessage(4), to: work, flags: [.flagged, Flag("Project-X")], internalDate: d(4))
    s.add(makeMessage(5, bodyLines: 2000), to: work, flags: [.seen], internalDate: d(5))
    s.add(makeMessage(6), to: deep, flags: [.draft], internalDate: d(6))
    s.add(makeMessage(7), to: sentSrc, flags: [.seen], internalDate: d(7))
    s.add(makeMessage(1), to: sentSrc, flags: [.seen], internalDate: d(1))  // same bytes, another folder
    return s
}

func emptyDestination(_ name: String = "dst") -> MemoryServer {
    let s = MemoryServer(kind: .imap, name: name, firstUIDValidity: 9000)
    s.addFolder(sentDst, role: .sent)
    return s
}

/// Records the waits a run asked for instead of sleeping.
final class SleepLog: @unchecked Sendable {
    private let lock = NSLock()
    private var waits: [Double] = []
    func record(_ d: Double) { lock.withLock { waits.append(d) } }
    var all: [Double] { lock.withLock { waits } }
}

func job(_ src: MemoryServer, _ dst: MemoryServer, state: any StateStore, options: MigrationOptions = MigrationOptions(),
         sleeps: SleepLog? = nil) -> MigrationJob {
    var o = options
    let log = sleeps ?? SleepLog()
    o.retry = RetryPolicy(maxAttempts: o.retry.maxAttempts, baseDelay: o.retry.baseDelay, maxDelay: o.retry.maxDelay,
                          jitter: o.retry.jitter, sleep: { log.record($0) })
    var logger = Logger(label: "test.transfer")
    logger.logLevel = .critical
    return MigrationJob(source: { src.makeStore() }, destination: { dst.makeStore() }, options: o, state: state, logger: logger)
}

/// What a destination holds: per folder, keys with flags, sorted.
func snapshot(_ s: MemoryServer) -> [String: [String]] {
    var out: [String: [String]] = [:]
    for f in s.folderPaths {
        let ms = s.messages(in: f)
        if ms.isEmpty { continue }
        out[f.description] = ms.map { "\($0.key.short) \($0.flags) \($0.internalDate?.secondsSinceEpoch ?? -1)" }.sorted()
    }
    return out
}

func tempStatePath() -> String {
    NSTemporaryDirectory() + "mailferry-transfer-\(UUID().uuidString)/job.sqlite"
}

/// Every message of every selectable folder of `store` as "folder key flags",
/// sorted: what two stores must agree on after a migration (bytes by key, flags).
func contents(of store: any MailStore) async throws -> [String] {
    var out: [String] = []
    for f in try await store.folders() where f.selectable {
        let l = try await store.listMessages(in: f.path)
        let keys = Locked([String]())
        _ = try await store.fetchMessages(l.messages.map(\.id), in: f.path) { info, body in
            var h = MessageHasher()
            for try await c in body { c.withUnsafeReadableBytes { h.update($0) } }
            let k = h.finalize()
            keys.with { $0.append("\(f.path) \(k.hex) \(info.flags)") }
        }
        out += keys.get
    }
    return out.sorted()
}

import Foundation
import IMAPClient
import Logging
import MailModel
import MailNet
import MailStore
import MailTestSupport
import NIOConcurrencyHelpers
import NIOCore
import SyncState
import Testing
import Transfer

/// A migration through the transfer engine into an IMAP server that refuses
/// one message: with MULTIAPPEND all or none, the refused batch is sent again
/// message by message, so exactly that message fails and every other one is
/// copied, in one run.
@Suite(.serialized)
struct PoisonMigrationTests {
    static let logger: Logger = {
        var l = Logger(label: "test.imap.poison")
        l.logLevel = .critical
        return l
    }()

    /// One stored message of the fake server's INBOX.
    struct Stored: Sendable {
        var uid: Int
        var bytes: [UInt8]
        var flags: String
        var date: String
    }

    /// A small stateful IMAP server with one INBOX: LIST, SELECT/EXAMINE,
    /// UID FETCH of the listing items (and of whole bodies), APPEND and
    /// MULTIAPPEND. Any APPEND holding a message with `marker` is refused (NO)
    /// as a whole.
    static func server(marker: String, inbox: NIOLockedValueBox<[Stored]>, commands: NIOLockedValueBox<[Int]>) async throws -> FakeIMAPServer {
        let caps = "IMAP4rev1 LITERAL+ MULTIAPPEND UIDPLUS NAMESPACE"
        return try await FakeIMAPServer.start { s in
            try await s.send("* OK ready\r\n")
            while let c = try await s.standardSession(caps: caps, stopAt: ["SELECT", "EXAMINE", "UID FETCH", "APPEND", "LIST"]) {
                switch c.name {
                case "LIST":
                    try await s.send("* LIST (\\HasNoChildren) \"/\" INBOX\r\n\(c.tag) OK done\r\n")
                case "SELECT", "EXAMINE":
                    let n = inbox.withLockedValue { $0.count }
                    let next = inbox.withLockedValue { ($0.last?.uid ?? 0) + 1 }
                    try await s.send("* \(n) EXISTS\r\n* OK [UIDVALIDITY 77] v\r\n* OK [UIDNEXT \(next)] n\r\n"
                                     + "* FLAGS (\\Seen \\Flagged \\Deleted)\r\n* OK [PERMANENTFLAGS (\\Seen \\Flagged \\Deleted \\*)] p\r\n"
                                     + "\(c.tag) OK [\(c.name == "SELECT" ? "READ-WRITE" : "READ-ONLY")] done\r\n")
                case "UID FETCH":
                    let all = inbox.withLockedValue { $0 }
                    let whole = c.line.uppercased().contains("BODY.PEEK[]")
                    let wanted = Self.uids(in: c.line)
                    for (i, m) in all.enumerated() where wanted(m.uid) {
                        var out = "* \(i + 1) FETCH (UID \(m.uid) FLAGS (\(m.flags)) RFC822.SIZE \(m.bytes.count) INTERNALDATE \"\(m.date)\""
                        if whole {
                            out += " BODY[] {\(m.bytes.count)}\r\n"
                            try await s.send(out)
                            try await s.send(ByteBuffer(bytes: m.bytes))
                            try await s.send(")\r\n")
                        } else {
                            out += " BODY[HEADER.FIELDS (MESSAGE-ID DATE FROM RECEIVED)] {2}\r\n\r\n)\r\n"
                            try await s.send(out)
                        }
                    }
                    try await s.send("\(c.tag) OK done\r\n")
                case "APPEND":
                    guard let a = try await FakeMultiAppendTests.readAppend(s, c.line) else { return }
                    if a.bodies.contains(where: { String(decoding: $0, as: UTF8.self).contains(marker) }) {
                        commands.withLockedValue { $0.append(-a.bodies.count) }
                        try await s.send("\(c.tag) NO Message refused: it exceeds the size limit\r\n")
                        continue
                    }
                    commands.withLockedValue { $0.append(a.bodies.count) }
                    let first = inbox.withLockedValue { ($0.last?.uid ?? 0) + 1 }
                    inbox.withLockedValue { box in
                        for (i, (header, bytes)) in zip(a.headers, a.bodies).enumerated() {
                            let flags = header.firstIndex(of: "(").flatMap { o in
                                header[o...].firstIndex(of: ")").map { String(header[header.index(after: o)..<$0]) }
                            } ?? ""
                            let quoted = header.split(separator: "\"", omittingEmptySubsequences: false)
                            let date = quoted.count >= 3 ? String(quoted[1]) : "01-Jan-2024 00:00:00 +0000"
                            box.append(Stored(uid: first + i, bytes: bytes, flags: flags, date: date))
                        }
                    }
                    try await s.send("\(c.tag) OK [APPENDUID 77 \(first):\(first + a.bodies.count - 1)] done\r\n")
                default:
                    try await s.send("\(c.tag) BAD unknown\r\n")
                }
            }
        }
    }

    /// The UIDs a "UID FETCH <set> ..." line asks for (numbers, ranges, "*").
    static func uids(in line: String) -> @Sendable (Int) -> Bool {
        let words = line.split(separator: " ")
        guard words.count > 3 else { return { _ in false } }
        let ranges: [ClosedRange<Int>] = words[3].split(separator: ",").compactMap { part in
            let ends = part.split(separator: ":").map { $0 == "*" ? Int.max : Int($0) }
            guard let lo = ends.first ?? nil else { return nil }
            let hi = (ends.count > 1 ? ends[1] : lo) ?? lo
            return min(lo, hi)...max(lo, hi)
        }
        return { uid in ranges.contains { $0.contains(uid) } }
    }

    static func message(_ i: Int, poison: Bool) -> [UInt8] {
        Array(("From: s\(i)@example.net\r\nTo: r@example.org\r\nSubject: message \(i)\(poison ? " POISON" : "")\r\n"
               + "Message-ID: <poison-test-\(i)@example.net>\r\nDate: Tue, 2 Jan 2024 09:00:00 +0100\r\n\r\nBody \(i)\r\n").utf8)
    }

    @Test func aMigrationFailsExactlyTheRefusedMessageAndCopiesEveryOtherInOneRun() async throws {
        let inbox = NIOLockedValueBox<[Stored]>([])
        let commands = NIOLockedValueBox<[Int]>([])
        let server = try await Self.server(marker: "POISON", inbox: inbox, commands: commands)
        defer { Task { await server.stop() } }

        let source = MemoryServer(kind: .imap, name: "src", firstUIDValidity: 500)
        let poison = 7
        var want: [MessageKey] = []
        for i in 0..<20 {
            let bytes = Self.message(i, poison: i == poison)
            source.add(bytes, to: .inbox, flags: i % 2 == 0 ? [.seen] : [])
            if i != poison { want.append(MessageKey.of(bytes)) }
        }
        let settings = ConnectionSettings(host: "127.0.0.1", port: server.port, tls: .none,
                                          connectTimeout: .seconds(5), responseTimeout: .seconds(10))
        let logger = Self.logger
        let job = MigrationJob(source: { source.makeStore() },
                               destination: {
                                   try await IMAPStore.open(settings: settings, credentials: .password(user: "u", "p"),
                                                            options: IMAPStoreOptions(multiAppendLinger: .milliseconds(50)),
                                                            logger: logger)
                               },
                               options: MigrationOptions(), state: MemoryStateStore(), logger: logger)
        let report = try await job.run()

        let sourceIDs = source.messages(in: .inbox).map { String($0.uid) }
        #expect(report.failures.count == 1, "\(report.failures)")
        #expect(report.failures.first?.sourceID == sourceIDs[poison], "\(report.failures)")
        #expect(report.failures.first?.reason.contains("exceeds the size limit") == true, "\(report.failures)")
        #expect(report.totals.copied == 19)
        let stored = inbox.withLockedValue { $0 }
        #expect(Set(stored.map { MessageKey.of($0.bytes) }) == Set(want), "every message but the refused one, once")
        #expect(stored.count == 19)
        let sent = commands.withLockedValue { $0 }
        // Commands as the server read them (negative: refused): the poison
        // message's batch was refused whole, then sent again alone.
        #expect(sent.contains { $0 < -1 }, "the poison message went in a batch: \(sent)")
        #expect(sent.filter { $0 < 0 }.count == 2, "refused once in the batch, once alone: \(sent)")
    }
}

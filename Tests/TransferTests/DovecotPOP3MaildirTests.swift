import Foundation
import Logging
import MailModel
import MailNet
import MailStore
import MailTestSupport
import SyncState
import Testing
@testable import Transfer

/// POP3 -> Maildir against the real Dovecot: the first run into an empty
/// Maildir sends no `TOP n 0` (Dovecot's logout line counts them), dates
/// still follow the first Received:, else Date:, and the source's own
/// duplicates are still copied once.
@Suite(.serialized, .enabled(if: DovecotFixture.serverTestsEnabled, "MAILFERRY_SKIP_SERVER_TESTS=1"))
struct DovecotPOP3MaildirTests {
    /// Dovecot's `Logged out top=N/B, retr=N/B, ...` lines for `user`, waiting
    /// a little for its log process to write them.
    static func logoutLines(_ f: DovecotFixture, user: String, atLeast: Int) async throws -> [String] {
        var lines: [String] = []
        for _ in 0..<50 {
            let log = (try? String(contentsOfFile: f.logFile, encoding: .utf8)) ?? ""
            lines = log.split(separator: "\n").map(String.init)
                .filter { $0.contains("pop3(\(user))") && $0.contains("Logged out") }
            if lines.count >= atLeast { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        return lines
    }

    @Test func firstRunIntoAnEmptyMaildirSendsNoTOPAndKeepsDatesAndDedupe() async throws {
        guard let corpus = try Corpus.load() else {
            print(Corpus.absentMessage)
            return
        }
        let f = try DovecotFixture.shared()
        let from = f.makeUser(prefix: "pop-md-src")
        let unique = try corpus.messages.map { try $0.load() }
        // Some messages twice or three times, at other places in the mailbox.
        let again = stride(from: 0, to: unique.count, by: 97).map { unique[$0] } + [unique[1], unique[1]]
        let seeds = (unique + again).map { SeedMessage($0) }
        try f.seed(user: from.user, messages: seeds)
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("mf-pop-md-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let state = try SQLiteStateStore(path: tempStatePath())
        defer { state.close() }
        func run() async throws -> Report {
            try await DovecotMigrationTests.job(DovecotMigrationTests.pop3(f, from),
                                                { try MaildirStore(root: root, create: true) }, state: state).run()
        }
        let report = try await run()
        #expect(report.exitCode == 0, "\(report.failures.prefix(5))")
        let wantKeys = Set(unique.map { MessageKey.of($0) })
        let files = try FileManager.default.contentsOfDirectory(atPath: root + "/cur")
        var gotKeys: [MessageKey] = []
        var dated = 0
        for name in files {
            let path = root + "/cur/" + name
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
            gotKeys.append(MessageKey.of(bytes))
            // INTERNALDATE (the file's mtime): the first Received:, else Date:.
            let (date, source) = HeaderReader.read(bytes).impliedInternalDate(downloadedAt: .now())
            if source != .downloadTime {
                let mtime = try FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date
                #expect(mtime.map { Int64($0.timeIntervalSince1970) } == date.secondsSinceEpoch, "\(name): \(source)")
                dated += 1
            }
        }
        #expect(Set(gotKeys) == wantKeys, "every message, byte-exact after CRLF normalisation")
        #expect(gotKeys.count == Set(unique.map { MessageKey.of($0) }).count, "nothing duplicated")
        #expect(dated > 0)
        #expect(report.totals.found == seeds.count)
        #expect(report.totals.duplicates == seeds.count - gotKeys.count)
        #expect(report.totals.verified == seeds.count)
        #expect(report.dateSources.values.reduce(0, +) == report.totals.copied)

        let lines = try await Self.logoutLines(f, user: from.user, atLeast: 1)
        #expect(!lines.isEmpty, "Dovecot logged the session's logout")
        for l in lines { #expect(l.contains("top=0/0"), "no TOP was sent: \(l)") }
        #expect(lines.contains { !$0.contains("retr=0/") }, "the messages were RETR'd")

        // A re-run copies nothing and keeps the count.
        let second = try await run()
        #expect(second.exitCode == 0)
        #expect(second.totals.copied == 0)
        #expect(second.totals.verified == seeds.count)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/cur").count == gotKeys.count)
    }
}

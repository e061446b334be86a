import Foundation
import Logging
import MailModel
import MailNet
import MailStore
import MailTestSupport
import SyncState
import Testing
@testable import Transfer

/// Re-runs against the real Dovecot fixture: a run that finds nothing changed
/// works on the control sessions alone and selects no folder (LIST-STATUS
/// gave each folder's UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ), and every kind
/// of change on either side is still noticed and dealt with.
@Suite(.serialized, .enabled(if: DovecotFixture.serverTestsEnabled, "MAILFERRY_SKIP_SERVER_TESTS=1"))
struct DovecotNoOpTests {
    /// The IMAP sessions a job opened, for counting connections and SELECTs.
    final class Opened: @unchecked Sendable {
        private let lock = NSLock()
        private var stores: [IMAPStore] = []
        func add(_ s: IMAPStore) { lock.withLock { stores.append(s) } }
        var count: Int { lock.withLock { stores.count } }
        var selects: Int { lock.withLock { stores.reduce(0) { $0 + $1.selectCount } } }
    }

    static func imap(_ f: DovecotFixture, _ a: TestAccount, _ opened: Opened) -> StoreFactory {
        { let s = try await IMAPStore.open(settings: ConnectionSettings(host: f.host, port: f.imapPort, tls: .startTLS, caFile: f.caFile,
                                                                       connectTimeout: .seconds(20), responseTimeout: .seconds(120)),
                                           credentials: .password(user: a.user, a.password), logger: DovecotMigrationTests.logger)
          opened.add(s)
          return s }
    }

    struct Run {
        var report: Report
        var sourceSessions: Int
        var destinationSessions: Int
        var sourceSelects: Int
        var destinationSelects: Int
        var selects: Int { sourceSelects + destinationSelects }
    }

    static func run(_ f: DovecotFixture, _ from: TestAccount, _ to: TestAccount, state: any StateStore,
                    _ options: MigrationOptions = MigrationOptions(parallel: 4),
                    logger: Logger = DovecotMigrationTests.logger) async throws -> Run {
        let src = Opened()
        let dst = Opened()
        let job = MigrationJob(source: imap(f, from, src), destination: imap(f, to, dst), options: options, state: state,
                               logger: logger)
        let report = try await job.run()
        #expect(report.exitCode == 0, "\(report.failures.prefix(5))")
        return Run(report: report, sourceSessions: src.count, destinationSessions: dst.count,
                   sourceSelects: src.selects, destinationSelects: dst.selects)
    }

    static func keys(_ f: DovecotFixture, _ user: String, _ folder: String) throws -> [MessageKey] {
        try f.messages(user: user, folder: folder).map { MessageKey.of($0.bytes) }
    }

    /// A no-op re-run, after one more run has settled the marks of what the last changed.
    static func expectQuiet(_ f: DovecotFixture, _ from: TestAccount, _ to: TestAccount, state: any StateStore,
                            total: Int, _ comment: Comment) async throws {
        _ = try await run(f, from, to, state: state)
        let quiet = try await run(f, from, to, state: state)
        #expect(quiet.report.totals.copied == 0, comment)
        #expect(quiet.report.totals.found == total, comment)
        #expect(quiet.report.totals.verified == total, comment)
        #expect(quiet.sourceSessions == 1 && quiet.destinationSessions == 1,
                "\(comment): only the control pair connects (\(quiet.sourceSessions) + \(quiet.destinationSessions) sessions)")
        #expect(quiet.selects == 0, "\(comment): no folder is selected (\(quiet.sourceSelects) + \(quiet.destinationSelects))")
    }

    @Test func aNoOpReRunConnectsOnceAndSelectsNothingYetEveryChangeIsNoticed() async throws {
        let f = try DovecotFixture.shared()
        let from = f.makeUser(prefix: "noop-src")
        let to = f.makeUser(prefix: "noop-dst")
        let folders = ["INBOX": 3, "Work": 3, "Lists/swift": 2, "Travel": 2]
        var n = 0
        for (folder, count) in folders.sorted(by: { $0.key < $1.key }) {
            try f.seed(user: from.user, folder: folder, messages: (0..<count).map { _ in
                n += 1
                return SeedMessage(makeMessage(n), flags: [.seen])
            })
        }
        let state = try SQLiteStateStore(path: tempStatePath())
        defer { state.close() }
        let first = try await Self.run(f, from, to, state: state)
        #expect(first.report.totals.copied == 10)
        try await Self.expectQuiet(f, from, to, state: state, total: 10, "after the first copy")

        // A new message in the source.
        _ = try f.seed(user: from.user, folder: "Work", messages: [SeedMessage(makeMessage(100))])
        let added = try await Self.run(f, from, to, state: state)
        #expect(added.report.totals.copied == 1, "the new message is noticed and copied")
        #expect(added.sourceSelects > 0)
        #expect(Set(try Self.keys(f, to.user, "Work")) == Set(try Self.keys(f, from.user, "Work")))
        try await Self.expectQuiet(f, from, to, state: state, total: 11, "after a new source message")

        // A message expunged from the source: the folder is listed and counted again.
        let inbox = try f.messages(user: from.user, folder: "INBOX")
        _ = try f.doveadm("expunge", "-u", from.user, "mailbox", "INBOX", "uid", String(inbox[0].uid))
        let expunged = try await Self.run(f, from, to, state: state)
        #expect(expunged.sourceSelects > 0)
        #expect(expunged.report.folders.first { $0.source == "INBOX" }?.found == 2)
        #expect(expunged.report.totals.copied == 0)
        try await Self.expectQuiet(f, from, to, state: state, total: 10, "after a source expunge")

        // A message expunged from the destination: it is copied again.
        let travel = try f.messages(user: to.user, folder: "Travel")
        _ = try f.doveadm("expunge", "-u", to.user, "mailbox", "Travel", "uid", String(travel[0].uid))
        let lost = try await Self.run(f, from, to, state: state)
        #expect(lost.destinationSelects > 0)
        #expect(lost.report.totals.copied == 1, "the message the destination lost is copied again")
        #expect(Set(try Self.keys(f, to.user, "Travel")) == Set(try Self.keys(f, from.user, "Travel")))
        try await Self.expectQuiet(f, from, to, state: state, total: 10, "after a destination expunge")

        // A flag changed in the source, with flag propagation: listed (flags are not in the state) and carried over.
        let lists = try f.messages(user: from.user, folder: "Lists/swift")
        _ = try f.doveadm("flags", "add", "-u", from.user, "\\Flagged", "mailbox", "Lists/swift", "uid", String(lists[0].uid))
        let flagged = try await Self.run(f, from, to, state: state, MigrationOptions(parallel: 4, propagateFlags: true))
        #expect(flagged.report.totals.flagsSet == 1)
        #expect(flagged.selects > 0, "a job that propagates flags lists its folders")
        let key = MessageKey.of(lists[0].bytes)
        let carried = try f.messages(user: to.user, folder: "Lists/swift").first { MessageKey.of($0.bytes) == key }
        #expect(carried?.flags.contains(.flagged) == true)
        try await Self.expectQuiet(f, from, to, state: state, total: 10, "after a flag change")

        // The source folder recreated with the same messages: a new UIDVALIDITY, keys decide.
        let work = try f.messages(user: from.user, folder: "Work")
        _ = try f.doveadm("mailbox", "delete", "-u", from.user, "Work")
        try f.seed(user: from.user, folder: "Work",
                   messages: work.map { SeedMessage($0.bytes, flags: $0.flags, internalDate: $0.internalDate) })
        let recreated = try await Self.run(f, from, to, state: state)
        #expect(recreated.sourceSelects > 0)
        #expect(recreated.report.totals.copied == 0)
        #expect(recreated.report.totals.verified == 10)
        try await Self.expectQuiet(f, from, to, state: state, total: 10, "after a UIDVALIDITY change")
        #expect(try Self.keys(f, to.user, "Work").count == 4, "nothing duplicated")
    }

    /// Folders the listings show unchanged but the state cannot vouch for (a
    /// known row lost in each): the helper without connections hands back
    /// those it takes, the control sessions list them, nothing is copied and
    /// the rows are learnt again.
    @Test func quietLookingPairsThatNeedTheServerAreHandedToTheControlSessions() async throws {
        let f = try DovecotFixture.shared()
        let from = f.makeUser(prefix: "noop3-src")
        let to = f.makeUser(prefix: "noop3-dst")
        let folders = ["INBOX", "Work", "Travel", "Receipts", "Lists/a", "Lists/b"]
        for (i, folder) in folders.enumerated() {
            try f.seed(user: from.user, folder: folder, messages: (1...2).map { SeedMessage(makeMessage(i * 10 + $0)) })
        }
        let state = try SQLiteStateStore(path: tempStatePath())
        defer { state.close() }
        #expect(try await Self.run(f, from, to, state: state).report.totals.copied == 12)
        try await Self.expectQuiet(f, from, to, state: state, total: 12, "after the first copy")

        var before: [FolderPath: [MessageKey]] = [:]
        for name in folders {
            let folder = FolderPath(name)!
            let known = try state.known(.source, in: folder)
            before[folder] = known.map(\.key).sorted()
            try state.forget(.source, in: folder, ids: [known[0].id])
        }
        let log = LogCapture()
        let logger = log.logger(label: "test.noop", level: .debug)
        let handedBack = try await Self.run(f, from, to, state: state, logger: logger)
        #expect(handedBack.report.totals.copied == 0)
        #expect(handedBack.report.totals.verified == 12)
        #expect(handedBack.sourceSelects > 0, "the folders are listed by the control sessions")
        #expect(handedBack.sourceSessions == 1 && handedBack.destinationSessions == 1)
        #expect(log.lines.contains { $0.contains("need the server after all") }, "the helper handed pairs back")
        for (folder, keys) in before {
            #expect(try state.known(.source, in: folder).map(\.key).sorted() == keys, "\(folder): the lost row is learnt again")
        }
        #expect(try Self.keys(f, to.user, "Work").count == 2, "nothing duplicated")
        try await Self.expectQuiet(f, from, to, state: state, total: 12, "after the lost rows are learnt")
    }

    /// Two source folders into one destination folder: the destination's
    /// listed status serves the first pair only; the second selects it,
    /// since the first may have written into it.
    @Test func aDestinationFedByTwoFoldersIsSelectedByTheSecondPair() async throws {
        let f = try DovecotFixture.shared()
        let from = f.makeUser(prefix: "noop2-src")
        let to = f.makeUser(prefix: "noop2-dst")
        try f.seed(user: from.user, folder: "A", messages: [SeedMessage(makeMessage(1)), SeedMessage(makeMessage(2))])
        try f.seed(user: from.user, folder: "B", messages: [SeedMessage(makeMessage(3))])
        let options = MigrationOptions(selection: FolderSelection(include: ["A", "B"],
                                                                  map: [FolderMapping(old: FolderPath("A")!, new: FolderPath("All")!),
                                                                        FolderMapping(old: FolderPath("B")!, new: FolderPath("All")!)]),
                                       parallel: 4)
        let state = try SQLiteStateStore(path: tempStatePath())
        defer { state.close() }
        let first = try await Self.run(f, from, to, state: state, options)
        #expect(first.report.totals.copied == 3)
        _ = try await Self.run(f, from, to, state: state, options)
        let quiet = try await Self.run(f, from, to, state: state, options)
        #expect(quiet.report.totals.copied == 0)
        #expect(quiet.report.totals.verified == 3)
        #expect(quiet.sourceSelects == 0)
        #expect(quiet.destinationSelects == 1)
        #expect(quiet.sourceSessions == 1 && quiet.destinationSessions == 1)

        // A new message in B, the second pair: noticed although All's listed status went to A.
        _ = try f.seed(user: from.user, folder: "B", messages: [SeedMessage(makeMessage(4))])
        let added = try await Self.run(f, from, to, state: state, options)
        #expect(added.report.totals.copied == 1)
        #expect(Set(try Self.keys(f, to.user, "All")) == Set(try Self.keys(f, from.user, "A") + Self.keys(f, from.user, "B")))
    }
}

import Foundation
import Logging
import MailModel
import MailNet
import MailStore
import MailTestSupport
import SyncState
import Testing
@testable import Transfer

/// Migrations against the real Dovecot fixture: POP3 -> IMAP and IMAP -> IMAP
/// with the corpus, re-runs, UIDVALIDITY resets and crashes at every effect.
@Suite(.serialized, .enabled(if: DovecotFixture.serverTestsEnabled, "MAILFERRY_SKIP_SERVER_TESTS=1"))
struct DovecotMigrationTests {
    static let logger: Logger = {
        var l = Logger(label: "test.transfer.dovecot")
        l.logLevel = .critical
        return l
    }()

    static func imap(_ f: DovecotFixture, _ a: TestAccount) -> StoreFactory {
        { try await IMAPStore.open(settings: ConnectionSettings(host: f.host, port: f.imapPort, tls: .startTLS, caFile: f.caFile,
                                                               connectTimeout: .seconds(20), responseTimeout: .seconds(120)),
                                   credentials: .password(user: a.user, a.password), logger: logger) }
    }

    static func imap(_ f: DovecotFixture, _ a: TestAccount, via proxy: FaultProxy) -> StoreFactory {
        { try await IMAPStore.open(settings: ConnectionSettings(host: proxy.host, port: proxy.port, tls: .startTLS, caFile: f.caFile,
                                                               connectTimeout: .seconds(20), responseTimeout: .seconds(60)),
                                   credentials: .password(user: a.user, a.password), logger: logger) }
    }

    static func pop3(_ f: DovecotFixture, _ a: TestAccount) -> StoreFactory {
        { try await POP3Store.open(settings: ConnectionSettings(host: f.host, port: f.pop3Port, tls: .startTLS, caFile: f.caFile,
                                                               connectTimeout: .seconds(20), responseTimeout: .seconds(120)),
                                   credentials: .password(user: a.user, a.password), logger: logger) }
    }

    static func job(_ src: @escaping StoreFactory, _ dst: @escaping StoreFactory, state: any StateStore,
                    _ options: MigrationOptions = MigrationOptions()) -> MigrationJob {
        var o = options
        o.parallel = max(o.parallel, 1)
        return MigrationJob(source: src, destination: dst, options: o, state: state, logger: logger)
    }

    static func keys(_ messages: [FixtureMessage]) -> [MessageKey] { messages.map { MessageKey.of($0.bytes) } }

    @Test func pop3ToIMAPCarriesTheCorpusByteExactAndAReRunCopiesNothing() async throws {
        guard let corpus = try Corpus.load() else {
            print(Corpus.absentMessage)
            return
        }
        let f = try DovecotFixture.shared()
        let from = f.makeUser(prefix: "pop-src")
        let to = f.makeUser(prefix: "imap-dst")
        let seeds = try corpus.messages.map { SeedMessage(try $0.load()) }
        try f.seed(user: from.user, messages: seeds)
        let state = try SQLiteStateStore(path: tempStatePath())
        defer { state.close() }
        let report = try await Self.job(Self.pop3(f, from), Self.imap(f, to), state: state,
                                        MigrationOptions(selection: FolderSelection(into: FolderPath("Imported/POP3 Été")!))).run()
        #expect(report.exitCode == 0, "\(report.failures.prefix(5))")
        let want = Set(seeds.map { MessageKey.of($0.bytes) })
        let got = Self.keys(try f.messages(user: to.user, folder: "Imported/POP3 Été"))
        #expect(Set(got) == want, "every corpus message, byte-exact after CRLF normalisation")
        #expect(got.count == want.count, "nothing duplicated")
        #expect(report.totals.verified == seeds.count)
        #expect(report.dateSources.values.reduce(0, +) == report.totals.copied)

        let again = try await Self.job(Self.pop3(f, from), Self.imap(f, to), state: state,
                                       MigrationOptions(selection: FolderSelection(into: FolderPath("Imported/POP3 Été")!))).run()
        #expect(again.totals.copied == 0)
        #expect(again.totals.verified == seeds.count)
        #expect(try f.messages(user: to.user, folder: "Imported/POP3 Été").count == got.count)
    }

    @Test func imapToIMAPCarriesFoldersFlagsKeywordsAndDatesAndSurvivesAUIDVALIDITYReset() async throws {
        guard let corpus = try Corpus.load() else {
            print(Corpus.absentMessage)
            return
        }
        let f = try DovecotFixture.shared()
        let from = f.makeUser(prefix: "imap-src")
        let to = f.makeUser(prefix: "imap-dst")
        let folders = ["INBOX", "Archiv/2024/Février", "Listes/日本語", "Work"]
        var seeded: [String: [SeedMessage]] = [:]
        for (i, e) in corpus.messages.enumerated() {
            let flags: Flags = [[.seen], [.seen, .answered, Flag("$Forwarded")], [Flag("Project-X")], []][i % 4]
            let date = InternalDate(secondsSinceEpoch: 1_500_000_000 + Int64(i) * 7919, zoneMinutes: 0)
            seeded[folders[i % folders.count], default: []].append(SeedMessage(try e.load(), flags: flags, internalDate: date))
        }
        for (folder, msgs) in seeded { try f.seed(user: from.user, folder: folder, messages: msgs) }
        let state = try SQLiteStateStore(path: tempStatePath())
        defer { state.close() }
        let report = try await Self.job(Self.imap(f, from), Self.imap(f, to), state: state, MigrationOptions(parallel: 2)).run()
        #expect(report.exitCode == 0, "\(report.failures.prefix(5))")
        for folder in folders {
            let src = try f.messages(user: from.user, folder: folder)
            let dst = try f.messages(user: to.user, folder: folder)
            let want = Dictionary(src.map { (MessageKey.of($0.bytes), $0) }, uniquingKeysWith: { a, _ in a })
            #expect(dst.count == want.count, "\(folder): each distinct message once")
            for m in dst {
                let o = try #require(want[MessageKey.of(m.bytes)], "\(folder): unexpected message")
                #expect(m.flags == o.flags, "\(folder) uid \(m.uid)")
                #expect(m.internalDate == o.internalDate, "\(folder) uid \(m.uid)")
            }
        }

        // A re-run copies nothing.
        let again = try await Self.job(Self.imap(f, from), Self.imap(f, to), state: state).run()
        #expect(again.totals.copied == 0)

        // The source folder is recreated (new UIDVALIDITY, new UIDs) with one more message;
        // the destination's Work folder likewise. Keys decide: only the new message is copied.
        let work = try f.messages(user: from.user, folder: "Work")
        _ = try f.doveadm("mailbox", "delete", "-u", from.user, "Work")
        try f.seed(user: from.user, folder: "Work",
                   messages: work.map { SeedMessage($0.bytes, flags: $0.flags, internalDate: $0.internalDate) }
                       + [SeedMessage(makeMessage(4242))])
        let dstWork = try f.messages(user: to.user, folder: "Listes/日本語")
        _ = try f.doveadm("mailbox", "delete", "-u", to.user, "Listes/日本語")
        try f.seed(user: to.user, folder: "Listes/日本語",
                   messages: dstWork.map { SeedMessage($0.bytes, flags: $0.flags, internalDate: $0.internalDate) })
        let third = try await Self.job(Self.imap(f, from), Self.imap(f, to), state: state).run()
        #expect(third.exitCode == 0)
        #expect(third.totals.copied == 1)
        for folder in folders {
            let s = Set(Self.keys(try f.messages(user: from.user, folder: folder)))
            let d = Self.keys(try f.messages(user: to.user, folder: folder))
            #expect(Set(d) == s, "\(folder): no loss")
            #expect(d.count == Set(d).count, "\(folder): no duplicates")
        }
    }

    @Test func crashAfterEveryEffectIntoDovecotThenResume() async throws {
        let f = try DovecotFixture.shared()
        let from = f.makeUser(prefix: "crash-src")
        try f.seed(user: from.user, messages: (1...4).map { SeedMessage(makeMessage($0, lf: $0 == 2), flags: [.seen]) }
                   + [SeedMessage(makeMessage(1), flags: [.seen])])
        try f.seed(user: from.user, folder: "Sub/Été", messages: [SeedMessage(makeMessage(9), flags: [Flag("$Work")])])
        let refUser = f.makeUser(prefix: "crash-ref")
        let refState = MemoryStateStore()
        _ = try await Self.job(Self.imap(f, from), Self.imap(f, refUser), state: refState).run()
        // Intents written ahead and closed unused (abandoned) had no effect.
        let effects = try refState.journal().filter { $0.status != .abandoned }.count
        func view(_ user: String) throws -> [String] {
            try ["INBOX", "Sub/Été"].flatMap { folder in
                try f.messages(user: user, folder: folder).map { "\(folder) \(MessageKey.of($0.bytes).short) \($0.flags)" }
            }.sorted()
        }
        let expected = try view(refUser.user)
        #expect(effects >= 6)
        for n in 1...effects {
            let to = f.makeUser(prefix: "crash-dst")
            let state = MemoryStateStore()
            await #expect(throws: MailError.self) {
                _ = try await Self.job(Self.imap(f, from), Self.imap(f, to), state: state,
                                       MigrationOptions(stopAfterEffect: n)).run()
            }
            let report = try await Self.job(Self.imap(f, from), Self.imap(f, to), state: state).run()
            #expect(report.exitCode == 0, "n=\(n): \(report.failures)")
            #expect(try view(to.user) == expected, "n=\(n)")
        }
    }

    @Test func pop3DeleteSourceRemovesOnlyVerifiedMessagesAtQuit() async throws {
        let f = try DovecotFixture.shared()
        let from = f.makeUser(prefix: "pop-del")
        let to = f.makeUser(prefix: "imap-del")
        try f.seed(user: from.user, messages: (1...6).map { SeedMessage(makeMessage($0)) })
        let report = try await Self.job(Self.pop3(f, from), Self.imap(f, to), state: MemoryStateStore(),
                                        MigrationOptions(deleteSource: true)).run()
        #expect(report.exitCode == 0, "\(report.failures)")
        #expect(report.totals.deleted == 6)
        #expect(try f.messages(user: from.user).isEmpty)
        #expect(try f.messages(user: to.user).count == 6)
    }

    @Test func connectionsDroppedMidFetchAndMidAppendAreRetriedAndRecovered() async throws {
        let f = try DovecotFixture.shared()
        let from = f.makeUser(prefix: "drop-src")
        let to = f.makeUser(prefix: "drop-dst")
        try f.seed(user: from.user, messages: (1...30).map { SeedMessage(makeMessage($0, bodyLines: 60), flags: [.seen]) })
        // The first source connection breaks while bodies stream to us; the
        // first three destination connections break while we send APPEND data.
        let srcProxy = try await FaultProxy.start(upstreamPort: f.imapPort) { n in
            n == 0 ? [.cutAfter(bytes: 40_000, direction: .toClient)] : []
        }
        let dstProxy = try await FaultProxy.start(upstreamPort: f.imapPort) { n in
            n < 3 ? [.cutAfter(bytes: 30_000, direction: .toServer)] : []
        }
        var options = MigrationOptions()
        options.retry = RetryPolicy(maxAttempts: 6, baseDelay: 0.05, maxDelay: 1)
        let state = MemoryStateStore()
        let report = try await Self.job(Self.imap(f, from, via: srcProxy), Self.imap(f, to, via: dstProxy), state: state, options).run()
        await srcProxy.stop()
        await dstProxy.stop()
        #expect(report.exitCode == 0, "\(report.failures)")
        #expect(srcProxy.statistics.faultsInjected >= 1, "a fetch was cut")
        #expect(dstProxy.statistics.faultsInjected >= 1, "an append was cut")
        let want = Set(Self.keys(try f.messages(user: from.user)))
        let got = Self.keys(try f.messages(user: to.user))
        #expect(Set(got) == want, "nothing lost")
        #expect(got.count == want.count, "nothing duplicated")
        #expect(try state.openEntries().isEmpty)
    }
}


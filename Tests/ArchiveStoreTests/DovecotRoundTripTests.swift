import Foundation
import MailModel
import MailTestSupport
import Testing
@testable import ArchiveStore

/// Backups and restores through real servers, with the `mailferry` binary users run:
/// the corpus on the Dovecot fixture (IMAP: several folders, nested non-ASCII names,
/// flags and keywords; POP3: INBOX), a first backup, three incremental ones with new
/// mail, flag changes, deletions and moves made on the server in between, then restores
/// into fresh accounts, checked against what Dovecot holds.
@Suite("Archive round trips through Dovecot", .serialized,
       .enabled(if: DovecotFixture.serverTestsEnabled, "MAILFERRY_SKIP_SERVER_TESTS=1"))
struct DovecotRoundTripTests {
    static let folders = ["INBOX", "Archiv/2024", "Archiv/2024/Février", "Listes/日本語", "Work"]
    static let flagSets: [Flags] = [
        [.seen], [.seen, .answered, Flag("$Forwarded")], [Flag("Projekt")], [],
        [.flagged, Flag("$Label1"), Flag("Work")], [.seen, .draft], [.seen, .deleted],
    ]

    /// One folder as Dovecot holds it: CRLF-normalised bytes (what IMAP serves) → the flags
    /// and date of each copy. Copies with the same bytes are one message (SPEC: same bytes
    /// after CRLF normalisation), so a restore has one of them.
    typealias Held = [[UInt8]: [(flags: Flags, date: Int64)]]

    static func held(_ f: DovecotFixture, _ user: String, _ folder: String) throws -> Held {
        var m: Held = [:]
        for x in try f.messages(user: user, folder: folder) {
            m[crlfNormalised(x.bytes), default: []].append((x.flags, x.internalDate.secondsSinceEpoch))
        }
        return m
    }

    /// Per-folder comparison with a readable failure for each differing message.
    static func expectSame(_ f: DovecotFixture, source: String, restored: String, folders: [String],
                           _ what: String) throws {
        for folder in folders {
            let want = try held(f, source, folder)
            let got = try held(f, restored, folder)
            #expect(got.count == want.count, "\(what) \(folder): \(got.count) distinct messages, the source has \(want.count)")
            var wrong = 0
            for (bytes, w) in want {
                guard let g = got[bytes] else {
                    wrong += 1
                    if wrong <= 5 { Issue.record("\(what) \(folder): message \(MessageKey.of(bytes).short) missing or not byte-exact") }
                    continue
                }
                #expect(g.count == 1, "\(what) \(folder): \(MessageKey.of(bytes).short) is there \(g.count) times")
                if !g.allSatisfy({ c in w.contains { $0.flags == c.flags && $0.date == c.date } }) {
                    wrong += 1
                    if wrong <= 5 {
                        Issue.record("\(what) \(folder): \(MessageKey.of(bytes).short) has \(g.map { "\($0.flags) @\($0.date)" }), want one of \(w.map { "\($0.flags) @\($0.date)" })")
                    }
                }
            }
            #expect(wrong == 0, "\(what) \(folder): \(wrong) messages differ")
        }
    }

    static func listing(_ path: String) async throws -> ArchiveListing {
        let s = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let l = try s.list()
        try await s.close()
        return l
    }

    static func uids(_ f: DovecotFixture, _ user: String, _ folder: String) throws -> [UInt32] {
        try f.messages(user: user, folder: folder).map(\.uid)
    }

    @Test func imapBackupThreeIncrementalsMovesAndRestoreToAFreshAccount() async throws {
        guard let corpus = try Corpus.load() else {
            print(Corpus.absentMessage)
            return
        }
        let f = try DovecotFixture.shared()
        let log = RunLog("IMAP → archive → IMAP, full corpus")
        defer { log.print() }
        let src = f.makeUser(prefix: "arc-src"), dst = f.makeUser(prefix: "arc-dst")
        let all = try corpus.messages.map { try $0.load() }
        let later = 45   // 15 new messages before each incremental run
        let firstCount = all.count - later
        var seeded: [String: [SeedMessage]] = [:]
        for i in 0..<firstCount {
            let date = InternalDate(secondsSinceEpoch: 1_400_000_000 + Int64(i) * 86_311, zoneMinutes: 0)
            seeded[Self.folders[i % Self.folders.count], default: []]
                .append(SeedMessage(all[i], flags: Self.flagSets[(i / Self.folders.count) % Self.flagSets.count], internalDate: date))
        }
        var clock = Date()
        for folder in Self.folders { try f.seed(user: src.user, folder: folder, messages: seeded[folder] ?? []) }
        log.note("seeding \(firstCount) messages into \(Self.folders.count) folders: \(String(format: "%.2f", Date().timeIntervalSince(clock))) s")
        func addLater(_ block: Int) throws {
            let range = (firstCount + block * 15)..<(firstCount + (block + 1) * 15)
            let msgs = range.map { SeedMessage(all[$0], flags: [[.seen], [Flag("Neu")], []][$0 % 3], internalDate:
                InternalDate(secondsSinceEpoch: 1_700_000_000 + Int64($0) * 601, zoneMinutes: 0)) }
            try f.seed(user: src.user, folder: ["INBOX", "Listes/日本語", "Work"][block], messages: msgs)
        }

        let dir = makeTempDir("dovecot-imap")
        defer { removeTree(dir) }
        let archive = dir + "/set"
        let env = ["MAILFERRY_FROM_PASSWORD": src.password, "MAILFERRY_TO_PASSWORD": dst.password]
        let imapURL = { (user: String) in "imap://\(user)@\(f.host):\(f.imapPort)" }
        func backup(_ label: String) throws -> JSONReport {
            JSONReport(try log.mailferry(label, ["backup", "--from", imapURL(src.user), "--to", "archive:" + archive,
                                                 "--ca-file", f.caFile, "--state", dir + "/backup.sqlite", "--json"],
                                         env: env).stdout)
        }
        var keysSoFar = Set<MessageKey>()
        func newKeys() throws -> Int {
            var now = Set<MessageKey>()
            for folder in Self.folders { for m in try f.messages(user: src.user, folder: folder) { now.insert(MessageKey.of(m.bytes)) } }
            let fresh = now.subtracting(keysSoFar).count
            keysSoFar.formUnion(now)
            return fresh
        }

        // Run 1: everything.
        var expectedAdded = [try newKeys()]
        var report = try backup("backup 1 (\(firstCount) messages)")
        let distinctPerFolder = try Self.folders.reduce(0) { $0 + (try Self.held(f, src.user, $1).count) }
        #expect(report.total("copied") == distinctPerFolder, "each distinct message of each folder once")
        log.note("corpus: \(firstCount) seeded, \(distinctPerFolder) distinct per folder, \(expectedAdded[0]) distinct keys")

        // Between 1 and 2: new mail, flags (system and keywords) changed, two deletions,
        // one message moved to another folder.
        try addLater(0)
        let inbox = try Self.uids(f, src.user, "INBOX")
        let fevrier = try Self.uids(f, src.user, "Archiv/2024/Février")
        try f.doveadm("flags", "add", "-u", src.user, "\\Flagged Later", "mailbox", "INBOX", "uid", "\(inbox[0]),\(inbox[1])")
        try f.doveadm("flags", "remove", "-u", src.user, "\\Seen $Forwarded", "mailbox", "Archiv/2024/Février", "uid",
                      "\(fevrier[1])")
        try f.doveadm("flags", "replace", "-u", src.user, "\\Answered Reviewed", "mailbox", "Work", "uid", "1:3")
        try f.doveadm("expunge", "-u", src.user, "mailbox", "INBOX", "uid", "\(inbox[5])")
        try f.doveadm("expunge", "-u", src.user, "mailbox", "Archiv/2024/Février", "uid", "\(fevrier[7])")
        try f.doveadm("move", "-u", src.user, "Archiv/2024", "mailbox", "INBOX", "uid", "\(inbox[9])")
        expectedAdded.append(try newKeys())
        report = try backup("backup 2 (15 new, flags, 2 deleted, 1 moved)")
        let afterRun2 = Date()

        // Between 2 and 3: more mail, keywords removed, a move between nested non-ASCII folders.
        try addLater(1)
        try f.doveadm("flags", "remove", "-u", src.user, "Projekt $Label1", "mailbox", "Listes/日本語", "all")
        try f.doveadm("move", "-u", src.user, "Listes/日本語", "mailbox", "Archiv/2024/Février", "uid", "\(fevrier[2]),\(fevrier[3])")
        try f.doveadm("expunge", "-u", src.user, "mailbox", "Work", "uid", "5")
        expectedAdded.append(try newKeys())
        report = try backup("backup 3 (15 new, keywords removed, 1 deleted, 2 moved)")

        // Between 3 and 4: new mail and a flag change only.
        try addLater(2)
        try f.doveadm("flags", "add", "-u", src.user, "\\Seen", "mailbox", "Work", "all")
        expectedAdded.append(try newKeys())
        report = try backup("backup 4 (15 new, \\Seen on Work)")
        // A fifth run with nothing new writes no volume.
        report = try backup("backup 5 (nothing changed)")
        #expect(report.total("copied") == 0)

        let l = try await Self.listing(archive)
        #expect(l.runs.count == 5)
        #expect(l.volumes.count == 4, "a run with nothing new writes no volume")
        #expect(l.runs.map(\.messagesAdded) == expectedAdded + [0], "each run stores only bytes it has not stored before (moves are not stored twice)")
        #expect(l.storedMessages == keysSoFar.count)
        #expect(l.runs[1].deletions >= 3, "2 expunged + 1 moved away")
        #expect(l.runs[2].deletions >= 3, "1 expunged + 2 moved away")
        #expect(l.runs[1].flagChanges >= 6)
        #expect(l.runs[2].flagChanges >= 1)
        #expect(l.runs[3].flagChanges >= 1)
        log.note("archive: \(l.volumes.count) volumes, \(l.volumeBytes) bytes, \(l.storedMessages) messages stored, runs added \(l.runs.map(\.messagesAdded))")

        // Plain tar over all volumes: each stored message is one file, once (the moved
        // messages are not there a second time).
        let tree = dir + "/tree"
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        for v in volumeFiles(archive) {
            let (status, output) = try run("/usr/bin/env", ["tar", "--zstd", "-x", "-f", archive + "/volumes/" + v, "-C", tree])
            #expect(status == 0, "tar failed on \(v): \(output)")
        }
        let files = (FileManager.default.subpaths(atPath: tree) ?? []).filter { $0.contains("cur/") }
        #expect(files.count == l.storedMessages, "one file per stored message")

        // `archive check` agrees that every stored message matches its key.
        try log.mailferry("archive check", ["archive", "check", archive], env: [:])

        // Restore into a fresh account.
        clock = Date()
        report = JSONReport(try log.mailferry("restore to a fresh IMAP account", [
            "restore", "--from", "archive:" + archive, "--to", imapURL(dst.user), "--ca-file", f.caFile,
            "--state", dir + "/restore.sqlite", "--json"], env: env).stdout)
        let restoreSeconds = Date().timeIntervalSince(clock)
        let restoredCount = report.total("copied")
        log.note("restored \(restoredCount) messages (\(String(format: "%.0f", Double(restoredCount) / max(restoreSeconds, 0.001))) msg/s)")
        try Self.expectSame(f, source: src.user, restored: dst.user, folders: Self.folders, "restore")
        let srcFolders = Set(try f.folders(user: src.user)), dstFolders = Set(try f.folders(user: dst.user))
        #expect(dstFolders.isSubset(of: srcFolders.union(["INBOX"])), "no folder the source lacks: \(dstFolders.subtracting(srcFolders))")

        // A second restore (no state, as after losing it) adds nothing.
        let before = try Self.folders.map { try f.status(user: dst.user, folder: $0) }
        report = JSONReport(try log.mailferry("second restore (fresh state)", [
            "restore", "--from", "archive:" + archive, "--to", imapURL(dst.user), "--ca-file", f.caFile,
            "--state", dir + "/restore-again.sqlite", "--json"], env: env).stdout)
        #expect(report.total("copied") == 0)
        let after = try Self.folders.map { try f.status(user: dst.user, folder: $0) }
        #expect(after.map(\.messages) == before.map(\.messages))
        #expect(after.map(\.uidNext) == before.map(\.uidNext), "no APPEND at all: UIDNEXT unchanged")
        _ = afterRun2
    }

    /// POP3 sees INBOX only and has no flags; dates come from Received/Date.
    @Test func pop3BackupThreeIncrementalsDeletionsAsOfAndRestore() async throws {
        guard let corpus = try Corpus.load() else {
            print(Corpus.absentMessage)
            return
        }
        let f = try DovecotFixture.shared()
        let log = RunLog("POP3 → archive → IMAP")
        defer { log.print() }
        let src = f.makeUser(prefix: "arc-pop"), dst = f.makeUser(prefix: "arc-pop-dst"), old = f.makeUser(prefix: "arc-pop-old")
        // Every third corpus message (245), 185 at first, then 30 new before each of runs 2 and 3.
        let picked = try stride(from: 1, to: corpus.messages.count, by: 3).map { try corpus.messages[$0].load() }
        let batches = [0..<185, 185..<215, 215..<picked.count]
        let started = InternalDate.now()
        func seed(_ r: Range<Int>) throws {
            try f.seed(user: src.user, messages: r.map { SeedMessage(picked[$0], flags: $0 % 2 == 0 ? [.seen] : []) })
        }
        try seed(batches[0])

        let dir = makeTempDir("dovecot-pop3")
        defer { removeTree(dir) }
        let archive = dir + "/set"
        let env = ["MAILFERRY_FROM_PASSWORD": src.password, "MAILFERRY_TO_PASSWORD": dst.password]
        func backup(_ label: String) throws -> JSONReport {
            JSONReport(try log.mailferry(label, ["backup", "--from", "pop3://\(src.user)@\(f.host):\(f.pop3Port)",
                                                 "--to", "archive:" + archive, "--format", "mbox", "--compression", "gzip",
                                                 "--ca-file", f.caFile, "--state", dir + "/backup.sqlite", "--json"],
                                         env: env).stdout)
        }
        func inboxKeys(_ user: String) throws -> [MessageKey] { try f.messages(user: user).map { MessageKey.of($0.bytes) } }

        var report = try backup("backup 1 (185 messages)")
        #expect(report.total("copied") == 185)
        // New mail and 10 deletions on the server.
        try seed(batches[1])
        var uids = try Self.uids(f, src.user, "INBOX")
        try f.doveadm("expunge", "-u", src.user, "mailbox", "INBOX", "uid",
                      stride(from: 2, to: 60, by: 6).map { String(uids[$0]) }.joined(separator: ","))
        report = try backup("backup 2 (30 new, 10 deleted)")
        #expect(report.total("copied") == 30)
        let afterRun2Keys = Set(try inboxKeys(src.user))
        try await Task.sleep(nanoseconds: 1_100_000_000)
        let asOf = Date()
        try await Task.sleep(nanoseconds: 1_100_000_000)
        // More new mail and 5 deletions; then 5 deletions only.
        try seed(batches[2])
        uids = try Self.uids(f, src.user, "INBOX")
        try f.doveadm("expunge", "-u", src.user, "mailbox", "INBOX", "uid", uids[100..<105].map(String.init).joined(separator: ","))
        report = try backup("backup 3 (30 new, 5 deleted)")
        uids = try Self.uids(f, src.user, "INBOX")
        try f.doveadm("expunge", "-u", src.user, "mailbox", "INBOX", "uid", uids[0..<5].map(String.init).joined(separator: ","))
        report = try backup("backup 4 (5 deleted, nothing new)")
        #expect(report.total("copied") == 0)

        let l = try await Self.listing(archive)
        #expect(l.runs.count == 4)
        #expect(l.volumes.count == 3)
        #expect(l.runs.map(\.deletions) == [0, 10, 5, 5], "deletions on the server are recorded in each run")
        #expect(l.deletedLocations == 20)
        #expect(l.liveLocations == picked.count - 20)

        // Restore into a fresh IMAP account: the messages the server has now, byte-exact,
        // each dated by its Received/Date header.
        report = JSONReport(try log.mailferry("restore (POP3 set) to IMAP", [
            "restore", "--from", "archive:" + archive, "--to", "imap://\(dst.user)@\(f.host):\(f.imapPort)",
            "--ca-file", f.caFile, "--state", dir + "/restore.sqlite", "--json"], env: env).stdout)
        let want = try f.messages(user: src.user)
        let got = try f.messages(user: dst.user)
        #expect(got.count == want.count)
        #expect(Set(got.map { crlfNormalised($0.bytes) }) == Set(want.map { crlfNormalised($0.bytes) }), "byte-exact as IMAP serves them")
        var dated = 0
        for m in got {
            let h = HeaderReader.read(m.bytes)
            if let d = h.firstReceivedDate ?? h.date {
                dated += 1
                #expect(m.internalDate.secondsSinceEpoch == d.secondsSinceEpoch, "\(MessageKey.of(m.bytes).short): INTERNALDATE from Received/Date")
            } else {
                // No date in the headers: the time it was downloaded.
                #expect(m.internalDate.secondsSinceEpoch >= started.secondsSinceEpoch - 1)
            }
        }
        log.note("\(dated) of \(got.count) restored POP3 messages dated from Received/Date")

        // Again: nothing added, UIDNEXT unchanged.
        let before = try f.status(user: dst.user, folder: "INBOX")
        report = JSONReport(try log.mailferry("second restore (POP3 set)", [
            "restore", "--from", "archive:" + archive, "--to", "imap://\(dst.user)@\(f.host):\(f.imapPort)",
            "--ca-file", f.caFile, "--state", dir + "/restore-again.sqlite", "--json"], env: env).stdout)
        #expect(report.total("copied") == 0)
        let after = try f.status(user: dst.user, folder: "INBOX")
        #expect(after.messages == before.messages && after.uidNext == before.uidNext)

        // --as-of: the set as it stood after run 2 (the 5+5 deleted later come back, the 30 new do not).
        let stamp = ISO8601DateFormatter().string(from: asOf)
        _ = try log.mailferry("restore --as-of after run 2", [
            "restore", "--from", "archive:" + archive, "--to", "imap://\(old.user)@\(f.host):\(f.imapPort)",
            "--as-of", stamp, "--ca-file", f.caFile, "--state", dir + "/restore-old.sqlite", "--json"],
            env: ["MAILFERRY_TO_PASSWORD": old.password])
        let oldKeys = try inboxKeys(old.user)
        #expect(oldKeys.count == afterRun2Keys.count)
        #expect(Set(oldKeys) == afterRun2Keys)
    }
}

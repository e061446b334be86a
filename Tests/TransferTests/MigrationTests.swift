import Foundation
import MailModel
import MailStore
import MailTestSupport
import SyncState
import Testing
@testable import Transfer

@Test func migratesEveryFolderByteExactWithFlagsDatesAndRoles() async throws {
    let src = populatedSource()
    let dst = emptyDestination()
    let state = try SQLiteStateStore(path: tempStatePath())
    defer { state.close() }
    let report = try await job(src, dst, state: state).run()

    #expect(report.exitCode == 0)
    #expect(report.failures.isEmpty)
    // Sent Items went to the destination's \Sent folder.
    #expect(Set(dst.folderPaths.map(\.description)) == ["INBOX", "Sent", "Work", "Work/Projets", "Work/Projets/Février"])
    for (s, d) in [(FolderPath.inbox, FolderPath.inbox), (work, work), (deep, deep), (sentSrc, sentDst)] {
        let want = Dictionary(src.messages(in: s).map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        let got = dst.messages(in: d)
        #expect(got.count == want.count, "\(s): each distinct message once")
        for m in got {
            let o = try #require(want[m.key], "\(d) holds a message the source folder does not")
            #expect(m.bytes == o.bytes, "byte-exact")
            #expect(m.flags == o.flags)
            #expect(m.internalDate == o.internalDate)
        }
    }
    let inbox = try #require(report.folders.first { $0.source == "INBOX" })
    #expect(inbox.found == 4 && inbox.copied == 3 && inbox.duplicates == 1 && inbox.verified == 4 && inbox.missing == 0)
    #expect(report.totals.copied == 8)
    #expect(report.totals.bytes == Int64(dst.folderPaths.flatMap { dst.messages(in: $0) }.reduce(0) { $0 + $1.bytes.count }))
    #expect(try state.openEntries().isEmpty, "every intent confirmed")

    // A re-run copies nothing, fetches nothing and lists without headers.
    src.resetStats()
    dst.resetStats()
    let again = try await job(src, dst, state: state).run()
    #expect(again.totals.copied == 0)
    #expect(again.totals.found == report.totals.found)
    #expect(again.totals.verified == report.totals.found)
    #expect(src.stats.fetchedMessages == 0 && dst.stats.fetchedMessages == 0)
    #expect(src.stats.headerListings == 0 && dst.stats.headerListings == 0)
    #expect(dst.stats.appends == 0)
}

@Test func theReportIsJSONWithoutBodiesOrSecrets() async throws {
    let src = populatedSource()
    let dst = emptyDestination()
    var j = job(src, dst, state: MemoryStateStore())
    j.sourceName = "imaps://alice@imap.example.net"
    let report = try await j.run()
    let text = String(decoding: try report.json(), as: UTF8.self)
    #expect(text.contains("\"copied\""))
    #expect(text.contains("imaps://alice@imap.example.net"))
    #expect(!text.contains("Body line"), "no message bodies")
    let back = try JSONDecoder.iso.decode(Report.self, from: try report.json())
    #expect(back.totals == report.totals)
}

extension JSONDecoder {
    static var iso: JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }
}

@Test func mailAlreadyInTheDestinationFromAnotherToolIsNotCopiedAgain() async throws {
    let src = populatedSource()
    let dst = emptyDestination()
    // Another tool copied two INBOX messages (with its own UIDs), and left an unrelated one.
    dst.add(makeMessage(2, lf: true), to: .inbox, flags: [.seen])
    dst.add(makeMessage(1), to: .inbox)
    dst.add(makeMessage(99), to: .inbox)
    let report = try await job(src, dst, state: MemoryStateStore()).run()
    #expect(report.exitCode == 0)
    let inboxKeys = dst.messages(in: .inbox).map(\.key)
    #expect(inboxKeys.count == Set(inboxKeys).count, "no duplicates")
    #expect(inboxKeys.count == 4, "the three distinct source messages plus the unrelated one")
    let inbox = try #require(report.folders.first { $0.source == "INBOX" })
    #expect(inbox.copied == 1 && inbox.duplicates == 3)
    // Only candidates were read to learn keys, not the whole folder.
    #expect(dst.stats.fetchedMessages == 2)
}

@Test func aDryRunWritesNothingAnywhere() async throws {
    let src = populatedSource()
    let dst = emptyDestination()
    let path = tempStatePath()
    let state = try SQLiteStateStore(path: path)
    defer { state.close() }
    let before = snapshot(dst)
    let report = try await job(src, dst, state: state, options: MigrationOptions(dryRun: true)).run()
    #expect(snapshot(dst) == before)
    #expect(dst.folderPaths.count == 2)
    #expect(try state.journal().isEmpty)
    #expect(try state.mark(.source, .inbox) == nil)
    #expect(report.dryRun)
    #expect(report.totals.copied == 8, "what would be copied")
    let text = PlanPrinter.render(report)
    #expect(text.contains("Nothing was written"))
    #expect(text.contains("create Work/Projets/Février"))
    #expect(src.stats.appends == 0 && dst.stats.appends == 0)
}

@Test func verifyFindsWhatIsMissing() async throws {
    let src = populatedSource()
    let dst = emptyDestination()
    let state = MemoryStateStore()
    _ = try await job(src, dst, state: state).run()
    let ok = try await job(src, dst, state: state).verify()
    #expect(ok.exitCode == 0)
    #expect(ok.folders.reduce(0) { $0 + $1.verified } == 9)
    let victim = try #require(dst.messages(in: work).first)
    dst.removeMessage(uid: victim.uid, from: work)
    let bad = try await job(src, dst, state: state).verify()
    #expect(bad.exitCode == 1)
    #expect(bad.missingCount == 1)
    #expect(bad.folders.first { $0.source == "Work" }?.missing.first?.key == victim.key.hex)
}

@Test func parallelWorkersGiveTheSameResult() async throws {
    let src = populatedSource()
    let serial = emptyDestination()
    _ = try await job(src, serial, state: MemoryStateStore()).run()
    let dst = emptyDestination()
    let report = try await job(src, dst, state: MemoryStateStore(), options: MigrationOptions(parallel: 3)).run()
    #expect(report.exitCode == 0)
    #expect(snapshot(dst) == snapshot(serial))
    #expect(dst.stats.sessions >= 3, "one session per worker")
}

@Test func selectionAndMappingAreHonoured() async throws {
    let src = populatedSource()
    let dst = emptyDestination()
    let options = MigrationOptions(selection: FolderSelection(include: ["Work", "Work/**", "INBOX"], exclude: ["**/Février"],
                                                              map: [FolderMapping(old: work, new: FolderPath("Old/Work")!)]))
    let report = try await job(src, dst, state: MemoryStateStore(), options: options).run()
    #expect(report.folders.map(\.destination).sorted() == ["INBOX", "Old/Work", "Old/Work/Projets"])
    #expect(dst.messages(in: FolderPath("Old/Work")!).count == 2)
    #expect(dst.messages(in: deep).isEmpty)
}

@Test func mirrorsFollowFlagChangesAndDeletionsOfWhatTheyCopied() async throws {
    let src = MemoryServer(kind: .imap, name: "src")
    for n in 1...4 { src.add(makeMessage(n), flags: [.seen]) }
    let dst = MemoryServer(kind: .imap, name: "mirror")
    dst.add(makeMessage(100))  // not ours: never deleted
    let state = MemoryStateStore()
    let options = MigrationOptions(propagateFlags: true, propagateDeletions: true)
    _ = try await job(src, dst, state: state, options: options).run()
    #expect(dst.messages(in: .inbox).count == 5)

    // On the source: one message flagged, one deleted, one new.
    let ms = src.messages(in: .inbox)
    src.removeMessage(uid: ms[1].uid, from: .inbox)
    let s = src.makeStore()
    try await s.setFlags([.seen, .flagged], .replace, for: [MessageID(String(ms[0].uid))], in: .inbox)
    src.add(makeMessage(5))
    let report = try await job(src, dst, state: state, options: options).run()
    #expect(report.exitCode == 0)
    let got = dst.messages(in: .inbox)
    #expect(Set(got.map(\.key)) == Set(src.messages(in: .inbox).map(\.key) + [MessageKey.of(makeMessage(100))]))
    #expect(got.first { $0.key == ms[0].key }?.flags == [.seen, .flagged])
    #expect(report.totals.deleted == 1 && report.totals.flagsSet == 1 && report.totals.copied == 1)
}

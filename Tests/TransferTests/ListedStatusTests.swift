import MailModel
import SyncState
import Testing
@testable import Transfer

private func path(_ s: String) -> FolderPath { FolderPath(s)! }
private func v(_ validity: UInt64?, _ next: UInt64?, _ modSeq: UInt64?) -> FolderValidity {
    FolderValidity(uidValidity: validity, uidNext: next, highestModSeq: modSeq)
}
private func mark(_ side: Side, _ validity: FolderValidity?) -> FolderMark? {
    validity.map { FolderMark(side: side, folder: path("INBOX"), validity: $0, lastID: MessageID("9")) }
}

/// One row of the "unchanged by its listed status" table.
struct ListedCase: Sendable, CustomTestStringConvertible {
    var name: String
    var listed: FolderValidity?
    var saved: FolderValidity?
    var unchanged: Bool
    var testDescription: String { name }
}

let listedCases: [ListedCase] = [
    ListedCase(name: "all three listed and saved, equal", listed: v(7, 101, 555), saved: v(7, 101, 555), unchanged: true),
    ListedCase(name: "a new message: UIDNEXT moved", listed: v(7, 102, 556), saved: v(7, 101, 555), unchanged: false),
    ListedCase(name: "a flag change or an expunge: HIGHESTMODSEQ moved", listed: v(7, 101, 560), saved: v(7, 101, 555), unchanged: false),
    ListedCase(name: "the folder was recreated: UIDVALIDITY changed", listed: v(8, 101, 555), saved: v(7, 101, 555), unchanged: false),
    ListedCase(name: "HIGHESTMODSEQ lower than saved (a restored server) is a change", listed: v(7, 101, 500), saved: v(7, 101, 555), unchanged: false),
    ListedCase(name: "the listing gave no status (no LIST-STATUS or no QRESYNC)", listed: nil, saved: v(7, 101, 555), unchanged: false),
    ListedCase(name: "the listing gave no HIGHESTMODSEQ", listed: v(7, 101, nil), saved: v(7, 101, nil), unchanged: false),
    ListedCase(name: "the listing gave no UIDNEXT", listed: v(7, nil, 555), saved: v(7, nil, 555), unchanged: false),
    ListedCase(name: "the listing gave no UIDVALIDITY", listed: v(nil, 101, 555), saved: v(nil, 101, 555), unchanged: false),
    ListedCase(name: "HIGHESTMODSEQ 0: a folder without mod-sequences cannot tell", listed: v(7, 101, 0), saved: v(7, 101, 0), unchanged: false),
    ListedCase(name: "no saved mark: a first run", listed: v(7, 101, 555), saved: nil, unchanged: false),
    ListedCase(name: "a saved mark without HIGHESTMODSEQ (a server without CONDSTORE then)", listed: v(7, 101, 555), saved: v(7, 101, nil), unchanged: false),
]

struct ListedStatusTests {
    @Test(arguments: listedCases)
    func oneFolder(_ c: ListedCase) {
        #expect(ListedStatus.unchanged(listed: c.listed, saved: mark(.source, c.saved)) == c.unchanged)
    }

    /// The forecast that sizes the workers: both sides unchanged, the source
    /// count listed, and a job that neither propagates flags nor deletes.
    @Test(arguments: [
        // (source unchanged, destination unchanged, count listed, propagate flags, delete source) -> forecast
        (true, true, true, false, false, true),
        (false, true, true, false, false, false),
        (true, false, true, false, false, false),
        (true, true, false, false, false, false),
        (true, true, true, true, false, false),
        (true, true, true, false, true, false),
    ])
    func forecast(_ c: (Bool, Bool, Bool, Bool, Bool, Bool)) {
        let saved = v(7, 101, 555)
        let s = FolderInfo(path: path("INBOX"), messageCount: c.2 ? 100 : nil, validity: c.0 ? saved : v(7, 102, 556))
        let d = FolderInfo(path: path("INBOX"), messageCount: 100, validity: c.1 ? saved : v(7, 101, 600))
        #expect(ListedStatus.forecastUnchanged(source: s, sourceMark: mark(.source, saved),
                                               destination: d, destinationMark: mark(.destination, saved),
                                               propagateFlags: c.3, deleteSource: c.4) == c.5)
        // A folder the destination listing does not hold (to be created) is never forecast unchanged.
        #expect(!ListedStatus.forecastUnchanged(source: s, sourceMark: mark(.source, saved), destination: nil,
                                                destinationMark: mark(.destination, saved), propagateFlags: false, deleteSource: false))
    }

    /// Each folder's listed status is handed out once: the second pair into a
    /// destination, a retry and a re-resolve find none and select.
    @Test func statusesAreHandedOutOnce() {
        let a = FolderPair(source: path("A"), destination: path("All"), reason: .mapped, create: false)
        let b = FolderPair(source: path("B"), destination: path("All"), reason: .mapped, create: false)
        var listed = ListedFolders(source: [FolderInfo(path: path("A"), validity: v(1, 2, 3)),
                                            FolderInfo(path: path("B"), validity: v(4, 5, 6))],
                                   destination: [FolderInfo(path: path("All"), validity: v(7, 8, 9))])
        let first = listed.take(a)
        #expect(first.source?.validity == v(1, 2, 3))
        #expect(first.destination?.validity == v(7, 8, 9))
        let second = listed.take(b)
        #expect(second.source?.validity == v(4, 5, 6))
        #expect(second.destination == nil, "the destination's status went to the first pair into it")
        let again = listed.take(a)
        #expect(again.source == nil && again.destination == nil)
    }
}

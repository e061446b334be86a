import MailModel
import SyncState
import Testing
@testable import Transfer

private func f(_ s: String) -> FolderPath { FolderPath(s)! }
private func info(_ path: String, role: FolderRole? = nil, selectable: Bool = true) -> FolderInfo {
    FolderInfo(path: f(path), role: role, selectable: selectable)
}

// MARK: Folders

struct FolderCase: Sendable, CustomTestStringConvertible {
    var name: String
    var source: [FolderInfo]
    var destination: [FolderInfo]
    var selection = FolderSelection()
    var sourceHasFolders = true
    /// source -> destination (+ "*" when it must be created)
    var expect: [String: String]
    var testDescription: String { name }
}

let folderCases: [FolderCase] = [
    FolderCase(name: "same names; missing folders are created",
               source: [info("INBOX"), info("Work"), info("Work/2024")],
               destination: [info("INBOX"), info("Work")],
               expect: ["INBOX": "INBOX", "Work": "Work", "Work/2024": "Work/2024*"]),
    FolderCase(name: "--folder and --exclude globs",
               source: [info("INBOX"), info("Work"), info("Work/2024"), info("Work/2024/Q1"), info("Spam")],
               destination: [info("INBOX")],
               selection: FolderSelection(include: ["INBOX", "Work/**"], exclude: ["*/2024/*"]),
               expect: ["INBOX": "INBOX", "Work/2024": "Work/2024*"]),
    FolderCase(name: "--folder * stays within one level; inbox matches case-insensitively",
               source: [info("inbox"), info("A"), info("A/B")],
               destination: [],
               selection: FolderSelection(include: ["*"]),
               expect: ["INBOX": "INBOX*", "A": "A*"]),
    FolderCase(name: "--map renames a folder and its children",
               source: [info("INBOX"), info("Old"), info("Old/Sub"), info("Older")],
               destination: [info("INBOX")],
               selection: FolderSelection(map: [FolderMapping(old: f("Old"), new: f("Archive/New"))]),
               expect: ["INBOX": "INBOX", "Old": "Archive/New*", "Old/Sub": "Archive/New/Sub*", "Older": "Older*"]),
    FolderCase(name: "SPECIAL-USE roles match across servers whatever the names",
               source: [info("INBOX"), info("Sent Items", role: .sent), info("Deleted Items", role: .trash), info("Drafts", role: .drafts)],
               destination: [info("INBOX"), info("Sent", role: .sent), info("Trash", role: .trash), info("Entwürfe", role: .drafts)],
               expect: ["INBOX": "INBOX", "Sent Items": "Sent", "Deleted Items": "Trash", "Drafts": "Entwürfe"]),
    FolderCase(name: "a role without a counterpart keeps its name; --map beats the role",
               source: [info("INBOX"), info("Junk", role: .junk), info("Gesendet", role: .sent)],
               destination: [info("INBOX"), info("Sent", role: .sent)],
               selection: FolderSelection(map: [FolderMapping(old: f("Gesendet"), new: f("Old sent"))]),
               expect: ["INBOX": "INBOX", "Junk": "Junk*", "Gesendet": "Old sent*"]),
    FolderCase(name: "POP3: one folder, default INBOX",
               source: [info("INBOX")], destination: [info("INBOX")], sourceHasFolders: false,
               expect: ["INBOX": "INBOX"]),
    FolderCase(name: "POP3 with --into",
               source: [info("INBOX")], destination: [info("INBOX")],
               selection: FolderSelection(into: f("Imported/POP")), sourceHasFolders: false,
               expect: ["INBOX": "Imported/POP*"]),
    FolderCase(name: "non-selectable containers are skipped; their children are not",
               source: [info("INBOX"), info("Lists", selectable: false), info("Lists/swift")],
               destination: [info("INBOX")],
               expect: ["INBOX": "INBOX", "Lists/swift": "Lists/swift*"]),
    FolderCase(name: "a destination folder that is only a container is created (a Maildir left without cur/)",
               source: [info("INBOX"), info("Work"), info("Lists/swift")],
               destination: [info("INBOX"), info("Work", selectable: false), info("Lists", selectable: false)],
               expect: ["INBOX": "INBOX", "Work": "Work*", "Lists/swift": "Lists/swift*"]),
    FolderCase(name: "non-ASCII names pass through unchanged",
               source: [info("Février"), info("日本語/メール")],
               destination: [info("Février")],
               expect: ["Février": "Février", "日本語/メール": "日本語/メール*"]),
]

@Test(arguments: folderCases)
func folderPlans(_ c: FolderCase) throws {
    let plan = try Planner.planFolders(source: c.source, destination: c.destination, selection: c.selection,
                                       sourceHasFolders: c.sourceHasFolders)
    var got: [String: String] = [:]
    for p in plan.pairs { got[p.source.description] = p.destination.description + (p.create ? "*" : "") }
    #expect(got == c.expect)
    #expect(Set(plan.creates.map(\.description)) == Set(c.expect.values.filter { $0.hasSuffix("*") }.map { String($0.dropLast()) }))
}

@Test func intoIsRefusedForAManyFolderSource() {
    #expect(throws: MailError.self) {
        try Planner.planFolders(source: [info("INBOX"), info("Work")], destination: [],
                                selection: FolderSelection(into: f("X")))
    }
}

@Test(arguments: [("Old=New", "Old", "New"), ("A/B=C/D", "A/B/x", "C/D/x"), ("Février=Feb", "Février", "Feb")])
func mapParsing(text: String, from: String, to: String) throws {
    let m = try FolderMapping(parsing: text)
    #expect(m.apply(to: f(from)) == f(to))
}

@Test(arguments: ["Old", "=New", "Old=", ""])
func badMapsAreUsageErrors(text: String) {
    #expect(throws: MailError.self) { try FolderMapping(parsing: text) }
}

// MARK: Messages

private func key(_ n: Int) -> MessageKey { MessageKey.of(Array("message \(n)\r\n".utf8)) }
private func hdr(_ n: Int, mid: Bool = true) -> HeaderSummary {
    HeaderSummary(messageID: mid ? "<\(n)@x>" : nil, dateRaw: "Mon, 1 Jan 2024 00:00:0\(n % 10) +0000", from: "a@x")
}
private func msg(_ id: String, _ n: Int, size: Int64 = 100, headers: Bool = true, mid: Bool = true,
                 flags: Flags = []) -> MessageInfo {
    MessageInfo(id: MessageID(id), size: size, flags: flags, headers: headers ? hdr(n, mid: mid) : nil)
}

/// A compact view of a plan for table comparison.
private func summary(_ actions: [Action]) -> [String] {
    actions.map { a in
        switch a {
        case .createFolder(let f): return "create \(f)"
        case .hash(let side, _, let ids): return "hash \(side.rawValue) \(ids.map(\.rawValue).joined(separator: ","))"
        case .copy(let c): return "copy \(c.sourceID)"
        case .link(let l): return "link \(l.sourceID)=\(l.destinationID)\(l.matchedBy == .headers ? " by headers" : "")"
        case .duplicate(_, let id, _): return "dup \(id)"
        case .setFlags(_, let id, let fl): return "flags \(id) \(fl)"
        case .deleteDestination(_, let ids): return "delete-dest \(ids.map(\.rawValue).joined(separator: ","))"
        case .deleteSource(_, let ids): return "delete-src \(ids.map(\.rawValue).joined(separator: ","))"
        }
    }
}

struct MessageCase: Sendable, CustomTestStringConvertible {
    var name: String
    var source: [MessageInfo]
    var destination: [MessageInfo] = []
    /// source id -> message number (key), as the state or hashing knows it
    var sourceKeys: [String: Int] = [:]
    var destinationKeys: [String: Int] = [:]
    var origins: [String: String] = [:]
    var rewrites = false
    var options = PlanOptions()
    var expect: [String]
    var testDescription: String { name }
}

let messageCases: [MessageCase] = [
    MessageCase(name: "first run into an empty folder copies everything, nothing to hash",
                source: [msg("1", 1), msg("2", 2)], expect: ["copy 1", "copy 2"]),
    MessageCase(name: "re-run: state vouches for both sides; nothing to do",
                source: [msg("1", 1, headers: false), msg("2", 2, headers: false)],
                destination: [msg("7", 1, headers: false), msg("8", 2, headers: false)],
                sourceKeys: ["1": 1, "2": 2], destinationKeys: ["7": 1, "8": 2],
                expect: ["link 1=7", "link 2=8"]),
    MessageCase(name: "re-run with one new source message: only it is copied",
                source: [msg("1", 1), msg("2", 2), msg("3", 3)],
                destination: [msg("7", 1), msg("8", 2)],
                sourceKeys: ["1": 1, "2": 2], destinationKeys: ["7": 1, "8": 2],
                expect: ["link 1=7", "link 2=8", "copy 3"]),
    MessageCase(name: "destination already holds mail from another tool: candidates by headers are hashed",
                source: [msg("1", 1), msg("2", 2)],
                destination: [msg("50", 1), msg("51", 9)],
                expect: ["hash source 1", "hash destination 50"]),
    MessageCase(name: "…and once hashed, the match is linked and the rest copied",
                source: [msg("1", 1), msg("2", 2)],
                destination: [msg("50", 1), msg("51", 9)],
                sourceKeys: ["1": 1], destinationKeys: ["50": 1],
                expect: ["link 1=50", "copy 2"]),
    MessageCase(name: "same headers, different bytes: hashing tells them apart, so it is copied",
                source: [msg("1", 1)], destination: [msg("50", 1)],
                sourceKeys: ["1": 1], destinationKeys: ["50": 5],
                expect: ["copy 1"]),
    MessageCase(name: "sizes that no line-ending change explains rule a candidate out",
                source: [msg("1", 1, size: 100)], destination: [msg("50", 1, size: 250)],
                expect: ["copy 1"]),
    MessageCase(name: "crashed run: the append happened but was never confirmed; keys decide",
                source: [msg("1", 1), msg("2", 2)],
                destination: [msg("7", 1), msg("8", 2)],
                sourceKeys: ["1": 1, "2": 2], destinationKeys: ["7": 1],
                expect: ["hash destination 8"]),
    MessageCase(name: "source UIDVALIDITY changed: no source ids known, keys decide",
                source: [msg("101", 1), msg("102", 2)],
                destination: [msg("7", 1), msg("8", 2)],
                destinationKeys: ["7": 1, "8": 2],
                expect: ["hash source 101,102"]),
    MessageCase(name: "…after hashing, nothing is copied again",
                source: [msg("101", 1), msg("102", 2)],
                destination: [msg("7", 1), msg("8", 2)],
                sourceKeys: ["101": 1, "102": 2], destinationKeys: ["7": 1, "8": 2],
                expect: ["link 101=7", "link 102=8"]),
    MessageCase(name: "destination UIDVALIDITY changed: its ids are void, candidates are hashed",
                source: [msg("1", 1), msg("2", 2)],
                destination: [msg("301", 1), msg("302", 2)],
                sourceKeys: ["1": 1, "2": 2],
                expect: ["hash destination 301,302"]),
    MessageCase(name: "a message twice in the source folder is copied once",
                source: [msg("1", 1), msg("2", 1), msg("3", 3)],
                sourceKeys: ["1": 1, "2": 1, "3": 3],
                expect: ["dup 2", "copy 1", "copy 3"]),
    MessageCase(name: "twins with unknown keys are hashed before anything is copied",
                source: [msg("1", 1), msg("2", 1), msg("3", 3)],
                expect: ["hash source 1,2"]),
    MessageCase(name: "a repeated message already in the destination is linked once and the repeat is a duplicate",
                source: [msg("1", 1), msg("2", 1)], destination: [msg("9", 1)],
                sourceKeys: ["1": 1, "2": 1], destinationKeys: ["9": 1],
                expect: ["link 1=9", "dup 2"]),
    MessageCase(name: "rewriting destination: Message-ID + Date + From stands in for the key",
                source: [msg("1", 1), msg("2", 2)], destination: [msg("40", 1, size: 130)],
                rewrites: true,
                expect: ["link 1=40 by headers", "copy 2"]),
    MessageCase(name: "rewriting destination: no Message-ID, never merged by headers alone",
                source: [msg("1", 1, mid: false)], destination: [msg("40", 1, size: 130, mid: false)],
                rewrites: true,
                expect: ["copy 1"]),
    MessageCase(name: "rewriting destination: what the state vouches for still matches by key",
                source: [msg("1", 1)], destination: [msg("40", 1, size: 130)],
                sourceKeys: ["1": 1], destinationKeys: ["40": 1], rewrites: true,
                expect: ["link 1=40"]),
    MessageCase(name: "flag propagation for mirrors sets the destination's flags to the source's",
                source: [msg("1", 1, flags: [.seen, Flag("$Work")]), msg("2", 2, flags: [.seen])],
                destination: [msg("7", 1, flags: [.seen]), msg("8", 2, flags: [.seen])],
                sourceKeys: ["1": 1, "2": 2], destinationKeys: ["7": 1, "8": 2],
                options: PlanOptions(propagateFlags: true),
                expect: ["link 1=7", "flags 7 (\\Seen $Work)", "link 2=8"]),
    MessageCase(name: "without flag propagation flags of present messages are left alone",
                source: [msg("1", 1, flags: [.flagged])], destination: [msg("7", 1)],
                sourceKeys: ["1": 1], destinationKeys: ["7": 1],
                expect: ["link 1=7"]),
    MessageCase(name: "deletion propagation removes only what this job copied from this folder",
                source: [msg("1", 1)],
                destination: [msg("7", 1), msg("8", 2), msg("9", 3), msg("10", 4)],
                sourceKeys: ["1": 1], destinationKeys: ["7": 1, "8": 2, "9": 3, "10": 4],
                origins: ["7": "INBOX", "8": "INBOX", "9": "Other"],
                options: PlanOptions(propagateDeletions: true),
                expect: ["link 1=7", "delete-dest 8"]),
    MessageCase(name: "deletion propagation waits while a source key is unknown",
                source: [msg("1", 1), msg("2", 2)],
                destination: [msg("7", 1), msg("8", 3)],
                sourceKeys: ["1": 1], destinationKeys: ["7": 1, "8": 3],
                origins: ["7": "INBOX", "8": "INBOX"],
                options: PlanOptions(propagateDeletions: true),
                expect: ["link 1=7", "copy 2"]),
    MessageCase(name: "a header field one listing could not read matches anything; keys then decide",
                source: [MessageInfo(id: MessageID("1"), size: 100, headers: HeaderSummary(messageID: nil, dateRaw: nil, from: "a@x"))],
                destination: [msg("50", 1)],
                expect: ["hash source 1", "hash destination 50"]),
    MessageCase(name: "folding and spacing differences do not hide a candidate",
                source: [MessageInfo(id: MessageID("1"), size: 100,
                                     headers: HeaderSummary(messageID: "<1@x>", dateRaw: "Mon, 1 Jan 2024  00:00:01 +0000", from: "a@x"))],
                destination: [msg("50", 1)],
                expect: ["hash source 1", "hash destination 50"]),
    MessageCase(name: "different Message-IDs rule a candidate out",
                source: [msg("1", 1)], destination: [msg("50", 2)],
                expect: ["copy 1"]),
    MessageCase(name: "POP3 listing without headers: sizes alone filter candidates",
                source: [msg("uidl-1", 1, size: 100, headers: false)],
                destination: [msg("5", 1, size: 104, headers: false), msg("6", 2, size: 900, headers: false)],
                expect: ["hash source uidl-1", "hash destination 5"]),
]

@Test(arguments: messageCases)
func messagePlans(_ c: MessageCase) {
    let pair = FolderPair(source: .inbox, destination: .inbox, reason: .sameName, create: false)
    let input = PairInput(
        pair: pair,
        source: FolderListing(folder: .inbox, messages: c.source),
        destination: FolderListing(folder: .inbox, messages: c.destination),
        sourceKeys: Dictionary(uniqueKeysWithValues: c.sourceKeys.map { (MessageID($0.key), key($0.value)) }),
        destinationKeys: Dictionary(uniqueKeysWithValues: c.destinationKeys.map { (MessageID($0.key), key($0.value)) }),
        destinationOrigins: Dictionary(uniqueKeysWithValues: c.origins.map { (MessageID($0.key), f($0.value)) }),
        destinationRewrites: c.rewrites, options: c.options)
    #expect(summary(Planner.planMessages(input)) == c.expect)
}

@Test func planningIsPureAndRepeatable() {
    let input = PairInput(pair: FolderPair(source: .inbox, destination: .inbox, reason: .sameName, create: false),
                          source: FolderListing(folder: .inbox, messages: [msg("1", 1), msg("2", 2), msg("3", 1)]),
                          destination: FolderListing(folder: .inbox, messages: [msg("9", 2)]))
    #expect(Planner.planMessages(input) == Planner.planMessages(input))
}

@Test func sourceDeletesComeOnlyFromVerifiedIDs() {
    #expect(Planner.planSourceDeletes(folder: .inbox, verified: []) == [])
    #expect(Planner.planSourceDeletes(folder: .inbox, verified: [MessageID("3")])
        == [.deleteSource(folder: .inbox, ids: [MessageID("3")])])
}

import Foundation
import MailModel
import Testing
@testable import SyncState
#if canImport(Glibc)
import Glibc
#endif

private func tempDir() -> String {
    let d = NSTemporaryDirectory() + "mailferry-state-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

private func mode(_ path: String) -> Int {
    var st = stat()
    guard stat(path, &st) == 0 else { return -1 }
    return Int(st.st_mode & 0o777)
}

private let inbox = FolderPath.inbox
private let sent = FolderPath("Archive/Février")!
private let k1 = MessageKey.of(Array("one\r\n".utf8))
private let k2 = MessageKey.of(Array("two\r\n".utf8))

/// The same behaviour from both implementations.
private func exercise(_ s: any StateStore) throws {
    #expect(try s.mark(.source, inbox) == nil)
    #expect(try s.saveMark(FolderMark(side: .source, folder: inbox, validity: FolderValidity(uidValidity: 7, uidNext: 3, highestModSeq: 9),
                                      lastID: MessageID("2"))) == false)
    let m = try s.mark(.source, inbox)
    #expect(m?.validity == FolderValidity(uidValidity: 7, uidNext: 3, highestModSeq: 9))
    #expect(m?.lastID == MessageID("2"))

    try s.remember([
        KnownMessage(side: .source, folder: inbox, id: MessageID("1"), uidValidity: 7, key: k1, size: 5),
        KnownMessage(side: .source, folder: inbox, id: MessageID("2"), uidValidity: 7, key: k2),
        KnownMessage(side: .destination, folder: sent, id: MessageID("40"), uidValidity: UInt64(UInt32.max) + 5, key: k1,
                     origin: inbox, matchedBy: .key),
    ])
    #expect(try s.known(.source, in: inbox).map(\.key) == [k1, k2])
    let d = try s.known(.destination, in: sent)
    #expect(d.count == 1)
    #expect(d.first?.origin == inbox)
    #expect(d.first?.uidValidity == UInt64(UInt32.max) + 5)

    // Same UIDVALIDITY: ids kept. A new one: the folder's ids are void.
    #expect(try s.saveMark(FolderMark(side: .source, folder: inbox, validity: FolderValidity(uidValidity: 7, uidNext: 4))) == false)
    #expect(try s.known(.source, in: inbox).count == 2)
    #expect(try s.saveMark(FolderMark(side: .source, folder: inbox, validity: FolderValidity(uidValidity: 8))) == true)
    #expect(try s.known(.source, in: inbox).isEmpty)
    #expect(try s.known(.destination, in: sent).count == 1, "the other side is untouched")

    try s.forget(.destination, in: sent, ids: [MessageID("40")])
    #expect(try s.known(.destination, in: sent).isEmpty)

    // Journal: intended before, confirmed after; what is left open is what a crash left.
    let seqs = try s.intend([
        .append(from: inbox, id: MessageID("1"), uidValidity: 8, to: sent, key: nil),
        JournalEntry(kind: .delete, side: .source, sourceFolder: inbox, ids: [MessageID("1"), MessageID("2")]),
        JournalEntry(kind: .setFlags, destinationFolder: sent, ids: [MessageID("9")], flags: [.seen, Flag("$Work")]),
    ])
    #expect(seqs.count == 3 && seqs[0] < seqs[1] && seqs[1] < seqs[2])
    #expect(try s.openEntries().count == 3)
    try s.complete(seqs[0], JournalOutcome(.confirmed, destinationID: MessageID("41"), destinationUIDValidity: 99, key: k1),
                   remember: [KnownMessage(side: .destination, folder: sent, id: MessageID("41"), uidValidity: 99, key: k1, origin: inbox)])
    let open = try s.openEntries()
    #expect(open.map(\.seq) == [seqs[1], seqs[2]])
    #expect(open[0].ids == [MessageID("1"), MessageID("2")])
    #expect(open[0].side == .source)
    #expect(open[1].flags == [.seen, Flag("$Work")])
    let j = try s.journal()
    #expect(j[0].status == .confirmed && j[0].destinationID == MessageID("41") && j[0].key == k1)
    #expect(j[0].sourceFolder == inbox && j[0].destinationFolder == sent && j[0].sourceUIDValidity == 8)
    #expect(try s.known(.destination, in: sent).map(\.id) == [MessageID("41")])
}

@Test func memoryStateStoreFollowsTheRules() throws {
    try exercise(MemoryStateStore())
}

@Test func sqliteStateStoreFollowsTheRulesAndSurvivesReopening() throws {
    let dir = tempDir()
    let path = dir + "/job.sqlite"
    do {
        let s = try SQLiteStateStore(path: path)
        try exercise(s)
        s.close()
    }
    let s = try SQLiteStateStore(path: path)
    defer { s.close() }
    #expect(try s.known(.destination, in: sent).count == 1)
    #expect(try s.openEntries().count == 2)
    #expect(try s.mark(.source, inbox)?.validity.uidValidity == 8)
    let mode = try String(contentsOfFile: path, encoding: .isoLatin1).prefix(15)
    #expect(mode == "SQLite format 3")
}

@Test func stateFilesArePrivateWhateverTheUmask() throws {
    let old = umask(0)
    defer { umask(old) }
    let dir = tempDir() + "/deep/state"
    let path = dir + "/job.sqlite"
    let s = try SQLiteStateStore(path: path)
    try s.remember([KnownMessage(side: .source, folder: inbox, id: MessageID("1"), uidValidity: 1, key: k1)])
    #expect(mode(dir) == 0o700)
    #expect(mode(path) == 0o600)
    #expect(mode(path + ".lock") == 0o600)
    if FileManager.default.fileExists(atPath: path + "-wal") { #expect(mode(path + "-wal") == 0o600) }
    s.close()
}

@Test func aSecondRunOfTheSameJobIsRefusedWhileTheFirstHoldsTheLock() throws {
    let path = tempDir() + "/job.sqlite"
    let first = try SQLiteStateStore(path: path)
    do {
        _ = try SQLiteStateStore(path: path)
        Issue.record("a second open should fail")
    } catch let e as MailError {
        #expect(e.kind == .storage)
        #expect(e.exitCode == 5)
        #expect(e.message.contains("held by another run, pid \(getpid())"))
    }
    first.close()
    let again = try SQLiteStateStore(path: path)
    again.close()
}

@Test(arguments: ["text", "damaged-sqlite"])
func aCorruptStateFileIsRefusedAndLeftUnchanged(kind: String) throws {
    let content = kind == "text"
        ? Array("this is not a database, just some text that someone wrote here by mistake".utf8)
        : Array("SQLite format 3\0".utf8) + [UInt8](repeating: 0xAB, count: 4096)
    let path = tempDir() + "/job.sqlite"
    #expect(FileManager.default.createFile(atPath: path, contents: Data(content)))
    do {
        let s = try SQLiteStateStore(path: path)
        s.close()
        Issue.record("a corrupt file should be refused")
    } catch let e as MailError {
        #expect(e.kind == .corrupt)
        #expect(e.exitCode == 6)
    }
    #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(content))
    #expect(!FileManager.default.fileExists(atPath: path + "-wal"))
}

@Test func anotherSQLiteDatabaseIsNotTakenForState() throws {
    let path = tempDir() + "/other.sqlite"
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('create table t(x)'); c.commit()", path]
    try p.run()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { return }
    let before = try Data(contentsOf: URL(fileURLWithPath: path))
    #expect(throws: MailError.self) { try SQLiteStateStore(path: path) }
    #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
}

@Test func defaultLocationFollowsXDGStateHome() {
    #expect(SQLiteStateStore.defaultPath(jobID: "abc", environment: ["XDG_STATE_HOME": "/x/state", "HOME": "/home/u"])
        == "/x/state/mailferry/abc.sqlite")
    #expect(SQLiteStateStore.defaultPath(jobID: "abc", environment: ["HOME": "/home/u"])
        == "/home/u/.local/state/mailferry/abc.sqlite")
    #expect(SQLiteStateStore.defaultPath(jobID: "abc", environment: ["XDG_STATE_HOME": "relative", "HOME": "/home/u"])
        == "/home/u/.local/state/mailferry/abc.sqlite", "XDG says relative paths are ignored")
    let a = SQLiteStateStore.jobID(for: ["imap://a@h", "maildir:/m"])
    #expect(a.count == 16)
    #expect(a == SQLiteStateStore.jobID(for: ["imap://a@h", "maildir:/m"]))
    #expect(a != SQLiteStateStore.jobID(for: ["imap://b@h", "maildir:/m"]))
}

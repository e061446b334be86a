import Foundation
import MailModel
import Testing
@testable import SyncState

/// Closing the state folds its write-ahead log into the database: the next
/// run opens without replaying a log (a re-run that finds nothing changed
/// opened a 4 MB log twice before).
struct StateCloseTests {
    @Test func closeLeavesAnEmptyLogAndEverythingInTheDatabase() throws {
        let dir = NSTemporaryDirectory() + "mailferry-close-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/state.sqlite"
        let folder = FolderPath("Work")!
        let messages = (1...500).map {
            KnownMessage(side: .source, folder: folder, id: MessageID(String($0)), uidValidity: 7,
                         key: MessageKey.of(Array("message \($0)\r\n".utf8)), size: Int64($0))
        }
        let s = try SQLiteStateStore(path: path)
        try s.remember(messages)
        let wal = (try? FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int) ?? 0
        #expect(wal > 0, "the rows went to the log first")
        s.close()
        s.close()  // a second close is harmless
        let after = (try? FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int) ?? 0
        #expect(after == 0, "the log is folded in and emptied (\(after) bytes left)")

        let again = try SQLiteStateStore(path: path)
        defer { again.close() }
        #expect(try again.known(.source, in: folder) == messages)
    }
}

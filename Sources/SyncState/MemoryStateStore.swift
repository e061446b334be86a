import Foundation
import MailModel

/// A `StateStore` held in memory: for tests and `--dry-run`, where nothing
/// may be written anywhere. It follows the same rules as the SQLite store.
public final class MemoryStateStore: StateStore, @unchecked Sendable {
    private struct MessageSlot: Hashable {
        var side: Side
        var folder: FolderPath
        var id: MessageID
    }

    private let lock = NSLock()
    private var marks: [String: FolderMark] = [:]
    private var messages: [MessageSlot: KnownMessage] = [:]
    private var entries: [JournalEntry] = []
    private var nextSeq: Int64 = 1

    public init() {}

    /// A copy whose later changes do not affect this store (dry runs plan on a copy).
    public func snapshot() -> MemoryStateStore {
        lock.lock()
        defer { lock.unlock() }
        let s = MemoryStateStore()
        s.marks = marks
        s.messages = messages
        s.entries = entries
        s.nextSeq = nextSeq
        return s
    }

    private static func markKey(_ side: Side, _ folder: FolderPath) -> String {
        side.rawValue + "\u{0}" + folder.components.joined(separator: "\u{0}")
    }

    public func mark(_ side: Side, _ folder: FolderPath) throws -> FolderMark? {
        lock.lock()
        defer { lock.unlock() }
        return marks[Self.markKey(side, folder)]
    }

    @discardableResult
    public func saveMark(_ mark: FolderMark) throws -> Bool {
        lock.lock()
        defer { lock.unlock() }
        let k = Self.markKey(mark.side, mark.folder)
        var voided = false
        if let old = marks[k], old.validity.uidValidity != mark.validity.uidValidity {
            messages = messages.filter { !($0.key.side == mark.side && $0.key.folder == mark.folder) }
            voided = true
        }
        marks[k] = mark
        return voided
    }

    public func known(_ side: Side, in folder: FolderPath) throws -> [KnownMessage] {
        lock.lock()
        defer { lock.unlock() }
        return messages.values.filter { $0.side == side && $0.folder == folder }.sorted { $0.id < $1.id }
    }

    public func remember(_ list: [KnownMessage]) throws {
        lock.lock()
        defer { lock.unlock() }
        for m in list { messages[MessageSlot(side: m.side, folder: m.folder, id: m.id)] = m }
    }

    public func forget(_ side: Side, in folder: FolderPath, ids: [MessageID]) throws {
        lock.lock()
        defer { lock.unlock() }
        for id in ids { messages[MessageSlot(side: side, folder: folder, id: id)] = nil }
    }

    public func intend(_ list: [JournalEntry]) throws -> [Int64] {
        lock.lock()
        defer { lock.unlock() }
        var out: [Int64] = []
        for var e in list {
            e.seq = nextSeq
            e.status = .intended
            nextSeq += 1
            entries.append(e)
            out.append(e.seq)
        }
        return out
    }

    public func complete(_ seq: Int64, _ outcome: JournalOutcome, remember list: [KnownMessage]) throws {
        lock.lock()
        defer { lock.unlock() }
        guard let i = entries.firstIndex(where: { $0.seq == seq }) else {
            throw MailError(.corrupt, scope: .local, "journal entry \(seq) does not exist")
        }
        entries[i].status = outcome.status
        if let d = outcome.destinationID { entries[i].destinationID = d }
        if let v = outcome.destinationUIDValidity { entries[i].destinationUIDValidity = v }
        if let k = outcome.key { entries[i].key = k }
        for m in list { messages[MessageSlot(side: m.side, folder: m.folder, id: m.id)] = m }
    }

    public func openEntries() throws -> [JournalEntry] {
        lock.lock()
        defer { lock.unlock() }
        return entries.filter { $0.status == .intended }
    }

    public func journal() throws -> [JournalEntry] {
        lock.lock()
        defer { lock.unlock() }
        return entries
    }
}

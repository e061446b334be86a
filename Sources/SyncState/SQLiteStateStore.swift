import Foundation
import GRDB
import MailModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The job state in SQLite (WAL), one file per job, written 0600 in a 0700
/// directory whatever the umask. A lock on a side file (`PATH.lock`, flock)
/// stops two runs of the same job overlapping; it is held until `close()`.
///
/// A file that is not a mailferry state database, or fails SQLite's integrity
/// check, is refused as `.corrupt` before anything in it is changed.
public final class SQLiteStateStore: StateStore, @unchecked Sendable {
    public let path: String
    private let pool: DatabasePool
    private let lock: StateLock

    /// The default state file of a job: `$XDG_STATE_HOME/mailferry/JOB.sqlite`,
    /// else `~/.local/state/mailferry/JOB.sqlite`.
    public static func defaultPath(jobID: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        let base: String
        if let x = environment["XDG_STATE_HOME"], x.hasPrefix("/") {
            base = x
        } else {
            let home = environment["HOME"] ?? NSHomeDirectory()
            base = home + "/.local/state"
        }
        return base + "/mailferry/" + jobID + ".sqlite"
    }

    /// A stable job id from the things that make a job (redacted store URLs,
    /// folder selection): 16 hex digits of their SHA-256.
    public static func jobID(for parts: [String]) -> String {
        String(MessageKey.of(Array(parts.joined(separator: "\n").utf8)).hex.prefix(16))
    }

    /// Opens (creating if needed) the state at `path`, taking the job lock.
    public init(path: String) throws {
        self.path = path
        let dir = (path as NSString).deletingLastPathComponent
        try Self.makePrivateDirectory(dir.isEmpty ? "." : dir)
        lock = try StateLock(path: path + ".lock")
        do {
            let existed = FileManager.default.fileExists(atPath: path)
            if existed {
                try Self.checkHeader(path)
            } else {
                try Self.createPrivateFile(path)
            }
            var config = Configuration()
            config.label = "mailferry-state"
            config.busyMode = .timeout(10)
            // WAL with synchronous=NORMAL survives a killed process; after a
            // power loss the last transactions may be missing, which the
            // engine tolerates: an unrecorded append is found by its key.
            config.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
            if existed {
                // Read-only check first so that a damaged file is not touched.
                var ro = config
                ro.readonly = true
                let check = try DatabaseQueue(path: path, configuration: ro)
                try check.read { db in
                    let result = try String.fetchOne(db, sql: "PRAGMA quick_check") ?? "no answer"
                    guard result == "ok" else {
                        throw MailError(.corrupt, scope: .local, "state file \(path) failed its integrity check: \(result)",
                                        hint: "move it aside; the next run rebuilds the state from the stores")
                    }
                    if try db.tableExists("grdb_migrations") {
                        guard try Self.migrator.hasBeenSuperseded(db) == false else {
                            throw MailError(.corrupt, scope: .local,
                                            "state file \(path) was written by a newer mailferry",
                                            hint: "use that version, or move the file aside")
                        }
                    } else if try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master WHERE type = 'table'") ?? 0 > 0 {
                        throw MailError(.corrupt, scope: .local, "\(path) is an SQLite database but not a mailferry state file")
                    }
                }
                try check.close()
            }
            pool = try DatabasePool(path: path, configuration: config)
            try Self.migrator.migrate(pool)
            for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
                _ = chmod(path + suffix, 0o600)
            }
        } catch let e as MailError {
            lock.release()
            throw e
        } catch let e as DatabaseError {
            lock.release()
            switch e.resultCode {
            case .SQLITE_NOTADB, .SQLITE_CORRUPT:
                throw MailError(.corrupt, scope: .local, "state file \(path) is corrupt: \(e.message ?? "\(e.resultCode)")",
                                hint: "move it aside; the next run rebuilds the state from the stores")
            default:
                throw MailError(.storage, scope: .local, "cannot open state file \(path): \(e.message ?? "\(e.resultCode)")")
            }
        } catch {
            lock.release()
            throw MailError(.storage, scope: .local, "cannot open state file \(path): \(error)")
        }
    }

    /// Releases the job lock and closes the database. The write-ahead log is
    /// folded into the database and emptied first: the next run's open then
    /// has no log to replay (it did so twice, for the read-only check and for
    /// the pool: about 4 MB after a 5,000-message run, on every re-run).
    public func close() {
        let first = closing.withLock { () -> Bool in
            defer { closed = true }
            return !closed
        }
        if first { try? pool.writeWithoutTransaction { try $0.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") } }
        try? pool.close()
        lock.release()
    }

    private let closing = NSLock()
    private var closed = false

    deinit { lock.release() }

    // MARK: Files

    static func makePrivateDirectory(_ dir: String) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) {
            guard isDir.boolValue else {
                throw MailError(.storage, scope: .local, "\(dir) is not a directory")
            }
            return
        }
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw MailError(.storage, scope: .local, "cannot create state directory \(dir): \(error.localizedDescription)")
        }
        _ = chmod(dir, 0o700)
    }

    static func createPrivateFile(_ path: String) throws {
        let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            let err = errno
            if err == EEXIST { return }
            throw MailError(.storage, scope: .local, "cannot create state file \(path): \(String(cString: strerror(err)))")
        }
        _ = fchmod(fd, 0o600)
        closeFD(fd)
    }

    static func checkHeader(_ path: String) throws {
        guard let h = FileHandle(forReadingAtPath: path) else {
            throw MailError(.storage, scope: .local, "cannot read state file \(path)")
        }
        defer { try? h.close() }
        let head = (try? h.read(upToCount: 16)) ?? Data()
        if head.isEmpty { return }  // created and never written: SQLite makes it a database
        guard head == Data("SQLite format 3\0".utf8) else {
            throw MailError(.corrupt, scope: .local, "state file \(path) is not an SQLite database",
                            hint: "check --state; move the file aside if it is damaged")
        }
    }

    // MARK: Schema

    static let migrator: DatabaseMigrator = {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE folder_mark (
                    side TEXT NOT NULL, folder TEXT NOT NULL,
                    uid_validity INTEGER, uid_next INTEGER, highest_modseq INTEGER, last_id TEXT,
                    updated_at REAL NOT NULL,
                    PRIMARY KEY (side, folder));
                CREATE TABLE message (
                    side TEXT NOT NULL, folder TEXT NOT NULL, id TEXT NOT NULL,
                    uid_validity INTEGER, key TEXT NOT NULL, size INTEGER,
                    origin TEXT, matched_by TEXT NOT NULL,
                    PRIMARY KEY (side, folder, id));
                CREATE INDEX message_by_key ON message (side, folder, key);
                CREATE TABLE journal (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    kind TEXT NOT NULL, status TEXT NOT NULL, side TEXT NOT NULL,
                    source_folder TEXT, source_id TEXT, source_uid_validity INTEGER,
                    dest_folder TEXT, dest_id TEXT, dest_uid_validity INTEGER,
                    key TEXT, ids TEXT, flags TEXT,
                    created_at REAL NOT NULL, updated_at REAL);
                CREATE INDEX journal_open ON journal (status) WHERE status = 'intended';
                """)
        }
        return m
    }()

    // MARK: Encoding

    private static func enc(_ f: FolderPath) -> String {
        if let e = encoded.withLock({ $0[f] }) { return e }
        // JSON array of components: exact round trip for any name.
        let data = (try? JSONEncoder().encode(f.components)) ?? Data("[]".utf8)
        let e = String(decoding: data, as: UTF8.self)
        encoded.withLock { if $0.count < 4096 { $0[f] = e } }
        return e
    }

    /// Folder names as stored, by folder (encoded for every row written).
    private static let encoded = LockedDictionary()

    final class LockedDictionary: @unchecked Sendable {
        private let lock = NSLock()
        private var value: [FolderPath: String] = [:]
        func withLock<T>(_ body: (inout [FolderPath: String]) -> T) -> T {
            lock.lock()
            defer { lock.unlock() }
            return body(&value)
        }
    }

    /// Folders by their stored names (decoded for every journal row read:
    /// a JSONDecoder per row made reading the open entries ~3% of a copy's CPU).
    private static let decoded = DecodedFolders()

    final class DecodedFolders: @unchecked Sendable {
        private let lock = NSLock()
        private var value: [String: FolderPath] = [:]
        func get(_ s: String) -> FolderPath? { lock.lock(); defer { lock.unlock() }; return value[s] }
        func put(_ s: String, _ f: FolderPath) { lock.lock(); defer { lock.unlock() }; if value.count < 4096 { value[s] = f } }
    }

    private func dec(_ s: String?) throws -> FolderPath? {
        guard let s else { return nil }
        if let f = Self.decoded.get(s) { return f }
        let f = try decUncached(s)
        Self.decoded.put(s, f)
        return f
    }

    private func decUncached(_ s: String) throws -> FolderPath {
        guard let comps = try? JSONDecoder().decode([String].self, from: Data(s.utf8)),
              let f = FolderPath(components: comps) else {
            throw MailError(.corrupt, scope: .local, "state file \(path) holds a bad folder name")
        }
        return f
    }

    private func decKey(_ s: String?) throws -> MessageKey? {
        guard let s else { return nil }
        guard let k = MessageKey(hex: s) else {
            throw MailError(.corrupt, scope: .local, "state file \(path) holds a bad message key")
        }
        return k
    }

    private static func i64(_ v: UInt64?) -> Int64? { v.map { Int64(bitPattern: $0) } }
    private static func u64(_ v: Int64?) -> UInt64? { v.map { UInt64(bitPattern: $0) } }

    private func wrap<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as MailError {
            throw e
        } catch let e as DatabaseError {
            switch e.resultCode {
            case .SQLITE_CORRUPT, .SQLITE_NOTADB:
                throw MailError(.corrupt, scope: .local, "state file \(path) is corrupt (\(what)): \(e.message ?? "")")
            default:
                throw MailError(.storage, scope: .local, "state file \(path): \(what) failed: \(e.message ?? "\(e.resultCode)")")
            }
        } catch {
            throw MailError(.storage, scope: .local, "state file \(path): \(what) failed: \(error)")
        }
    }

    // MARK: StateStore

    public func mark(_ side: Side, _ folder: FolderPath) throws -> FolderMark? {
        try wrap("reading a folder mark") {
            try pool.read { db in
                guard let row = try Row.fetchOne(db, sql: "SELECT * FROM folder_mark WHERE side = ? AND folder = ?",
                                                 arguments: [side.rawValue, Self.enc(folder)]) else { return nil }
                let v = FolderValidity(uidValidity: Self.u64(row["uid_validity"]), uidNext: Self.u64(row["uid_next"]),
                                       highestModSeq: Self.u64(row["highest_modseq"]))
                let last: String? = row["last_id"]
                return FolderMark(side: side, folder: folder, validity: v, lastID: last.map(MessageID.init))
            }
        }
    }

    @discardableResult
    public func saveMark(_ mark: FolderMark) throws -> Bool {
        try wrap("saving a folder mark") {
            try pool.write { db in
                let f = Self.enc(mark.folder)
                var voided = false
                if let row = try Row.fetchOne(db, sql: "SELECT uid_validity FROM folder_mark WHERE side = ? AND folder = ?",
                                              arguments: [mark.side.rawValue, f]) {
                    let old: Int64? = row["uid_validity"]
                    if Self.u64(old) != mark.validity.uidValidity {
                        try db.execute(sql: "DELETE FROM message WHERE side = ? AND folder = ?",
                                       arguments: [mark.side.rawValue, f])
                        voided = true
                    }
                }
                try db.execute(sql: """
                    INSERT OR REPLACE INTO folder_mark (side, folder, uid_validity, uid_next, highest_modseq, last_id, updated_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [mark.side.rawValue, f, Self.i64(mark.validity.uidValidity),
                                     Self.i64(mark.validity.uidNext), Self.i64(mark.validity.highestModSeq),
                                     mark.lastID?.rawValue, Date().timeIntervalSince1970])
                return voided
            }
        }
    }

    public func known(_ side: Side, in folder: FolderPath) throws -> [KnownMessage] {
        try wrap("reading known messages") {
            // Columns by position and rows decoded as the cursor passes (no copy
            // of each row, no lookup of column names): a re-run reads every
            // row of every folder.
            let out = try pool.read { db -> [KnownMessage] in
                // The primary key (side, folder, id) hands the rows over in id order.
                let rows = try Row.fetchCursor(db, sql: "SELECT id, uid_validity, key, size, origin, matched_by FROM message WHERE side = ? AND folder = ? ORDER BY id",
                                               arguments: [side.rawValue, Self.enc(folder)])
                // Origins repeat (a folder's messages mostly come from one
                // folder): decode each distinct one once.
                var origins: [String: FolderPath] = [:]
                var out: [KnownMessage] = []
                while let row = try rows.next() {
                    guard let key = try decKey(row[2]),
                          let matched = MatchKind(rawValue: row[5] ?? "") else {
                        throw MailError(.corrupt, scope: .local, "state file \(path) holds a bad message row")
                    }
                    var origin: FolderPath?
                    if let o: String = row[4] {
                        if let f = origins[o] {
                            origin = f
                        } else {
                            origin = try dec(o)
                            origins[o] = origin
                        }
                    }
                    out.append(KnownMessage(side: side, folder: folder, id: MessageID(row[0] ?? ""),
                                            uidValidity: Self.u64(row[1]), key: key, size: row[3],
                                            origin: origin, matchedBy: matched))
                }
                return out
            }
            // SQLite orders bytes, Swift strings by scalars: the same for the
            // ASCII ids stores use; sort only when they disagree.
            if zip(out, out.dropFirst()).allSatisfy({ $0.id <= $1.id }) { return out }
            // MessageID's order (numbers as numbers), each id parsed once.
            let keyed = out.map { (UInt64($0.id.rawValue), $0) }
            return keyed.sorted { l, r in
                if let a = l.0, let b = r.0 { return a < b }
                return l.1.id < r.1.id
            }.map(\.1)
        }
    }

    private static func insert(_ m: KnownMessage, _ db: Database) throws {
        try db.cachedStatement(sql: """
            INSERT OR REPLACE INTO message (side, folder, id, uid_validity, key, size, origin, matched_by)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [m.side.rawValue, enc(m.folder), m.id.rawValue, i64(m.uidValidity), m.key.hex,
                             m.size, m.origin.map(enc), m.matchedBy.rawValue])
    }

    public func remember(_ messages: [KnownMessage]) throws {
        guard !messages.isEmpty else { return }
        try wrap("remembering messages") {
            try pool.write { db in
                for m in messages { try Self.insert(m, db) }
            }
        }
    }

    public func forget(_ side: Side, in folder: FolderPath, ids: [MessageID]) throws {
        guard !ids.isEmpty else { return }
        try wrap("forgetting messages") {
            try pool.write { db in
                for id in ids {
                    try db.execute(sql: "DELETE FROM message WHERE side = ? AND folder = ? AND id = ?",
                                   arguments: [side.rawValue, Self.enc(folder), id.rawValue])
                }
            }
        }
    }

    public func intend(_ entries: [JournalEntry]) throws -> [Int64] {
        guard !entries.isEmpty else { return [] }
        return try wrap("writing the journal") {
            try pool.write { db in
                var out: [Int64] = []
                let now = Date().timeIntervalSince1970
                for e in entries {
                    let ids = e.ids.isEmpty ? nil : String(decoding: try JSONEncoder().encode(e.ids), as: UTF8.self)
                    let flags = e.flags.map { $0.sorted.map(\.name).joined(separator: " ") }
                    try db.execute(sql: """
                        INSERT INTO journal (kind, status, side, source_folder, source_id, source_uid_validity,
                                             dest_folder, dest_id, dest_uid_validity, key, ids, flags, created_at)
                        VALUES (?, 'intended', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """, arguments: [e.kind.rawValue, e.side.rawValue, e.sourceFolder.map(Self.enc), e.sourceID?.rawValue,
                                         Self.i64(e.sourceUIDValidity), e.destinationFolder.map(Self.enc),
                                         e.destinationID?.rawValue, Self.i64(e.destinationUIDValidity), e.key?.hex,
                                         ids, flags, now])
                    out.append(db.lastInsertedRowID)
                }
                return out
            }
        }
    }

    public func complete(_ seq: Int64, _ outcome: JournalOutcome, remember messages: [KnownMessage]) throws {
        try complete([JournalCompletion(seq, outcome, remember: messages)])
    }

    public func complete(_ batch: [JournalCompletion]) throws {
        guard !batch.isEmpty else { return }
        try wrap("confirming a journal entry") {
            try pool.write { db in
                let now = Date().timeIntervalSince1970
                let update = try db.cachedStatement(sql: """
                    UPDATE journal SET status = ?, dest_id = COALESCE(?, dest_id),
                        dest_uid_validity = COALESCE(?, dest_uid_validity), key = COALESCE(?, key), updated_at = ?
                    WHERE seq = ?
                    """)
                for c in batch {
                    let outcome = c.outcome
                    try update.execute(arguments: [outcome.status.rawValue, outcome.destinationID?.rawValue,
                                                   Self.i64(outcome.destinationUIDValidity), outcome.key?.hex, now, c.seq])
                    guard db.changesCount == 1 else {
                        throw MailError(.corrupt, scope: .local, "journal entry \(c.seq) does not exist in \(path)")
                    }
                    for m in c.remember { try Self.insert(m, db) }
                }
            }
        }
    }

    private func entries(_ sql: String) throws -> [JournalEntry] {
        try wrap("reading the journal") {
            let rows = try pool.read { db in try Row.fetchAll(db, sql: sql) }
            return try rows.map { row in
                guard let kind = JournalEntry.Kind(rawValue: row["kind"] ?? ""),
                      let status = JournalEntry.Status(rawValue: row["status"] ?? ""),
                      let side = Side(rawValue: row["side"] ?? "") else {
                    throw MailError(.corrupt, scope: .local, "state file \(path) holds a bad journal entry")
                }
                var ids: [MessageID] = []
                if let s: String = row["ids"] {
                    guard let v = try? JSONDecoder().decode([MessageID].self, from: Data(s.utf8)) else {
                        throw MailError(.corrupt, scope: .local, "state file \(path) holds a bad journal entry")
                    }
                    ids = v
                }
                let flags: Flags? = (row["flags"] as String?).map { s in
                    Flags(s.split(separator: " ").map { Flag(String($0)) })
                }
                return JournalEntry(kind: kind, status: status, side: side,
                                    sourceFolder: try dec(row["source_folder"]),
                                    sourceID: (row["source_id"] as String?).map(MessageID.init),
                                    sourceUIDValidity: Self.u64(row["source_uid_validity"]),
                                    destinationFolder: try dec(row["dest_folder"]),
                                    destinationID: (row["dest_id"] as String?).map(MessageID.init),
                                    destinationUIDValidity: Self.u64(row["dest_uid_validity"]),
                                    key: try decKey(row["key"]), ids: ids, flags: flags, seq: row["seq"] ?? 0)
            }
        }
    }

    public func openEntries() throws -> [JournalEntry] {
        try entries("SELECT * FROM journal WHERE status = 'intended' ORDER BY seq")
    }

    public func journal() throws -> [JournalEntry] {
        try entries("SELECT * FROM journal ORDER BY seq")
    }
}

/// An exclusive flock on a side file, holding the owner's pid for the error message.
final class StateLock: @unchecked Sendable {
    private var fd: Int32
    private let lockPath: String
    private let mutex = NSLock()

    init(path: String) throws {
        lockPath = path
        fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw MailError(.storage, scope: .local, "cannot open lock file \(path): \(String(cString: strerror(errno)))")
        }
        _ = fchmod(fd, 0o600)
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let err = errno
            var buf = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &buf, 31, 0)
            let pid = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
            closeFD(fd)
            fd = -1
            if err == EWOULDBLOCK || err == EAGAIN {
                throw MailError(.storage, scope: .local, "the state \(path.dropLast(5)) is held by another run, pid \(pid)",
                                hint: "wait for that run to finish, or use another --state")
            }
            throw MailError(.storage, scope: .local, "cannot lock \(path): \(String(cString: strerror(err)))")
        }
        let pid = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pid.withCString { pwrite(fd, $0, strlen($0), 0) }
    }

    func release() {
        mutex.lock()
        defer { mutex.unlock() }
        guard fd >= 0 else { return }
        _ = ftruncate(fd, 0)
        _ = flock(fd, LOCK_UN)
        closeFD(fd)
        fd = -1
    }

    deinit { release() }
}

private func closeFD(_ fd: Int32) {
    #if canImport(Glibc)
    _ = Glibc.close(fd)
    #elseif canImport(Darwin)
    _ = Darwin.close(fd)
    #endif
}

import Foundation
import GRDB
import MailModel

/// `PATH/catalog.sqlite`: what the archive holds and where.
///
/// - `messages`: one row per stored byte string (key + size), with the volume
///   and the entry (and, for mbox volumes, the offset and quoted length) that hold it.
/// - `locations`: where a message lived on the source: folder, flags (latest and
///   as first seen), INTERNALDATE, source identity, first-seen run, deleted-at run.
/// - `runs`, `volumes` (with the SHA-256 of each file), `folders`,
///   `flag_changes`, `deletions`, `keywords` (Maildir keyword letters).
///
/// Ids come from counters in `meta` and are never reused, even after a prune,
/// so an id remembered by a transfer state never points at another message.
final class Catalog: @unchecked Sendable {
    let db: DatabaseQueue
    let path: String

    init(path: String, readOnly: Bool) throws {
        self.path = path
        if !FileManager.default.fileExists(atPath: path) {
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw MailError(.storage, scope: .local, "cannot create catalog \(path): \(String(cString: strerror(errno)))")
            }
            close(fd)
        }
        var config = Configuration()
        config.readonly = false
        config.busyMode = .timeout(5)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA journal_mode = WAL")
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        do {
            db = try DatabaseQueue(path: path, configuration: config)
            if try db.read({ try Self.migrator.hasBeenSuperseded($0) }) {
                throw MailError(.usage, scope: .local, "catalog \(path) was written by a newer mailferry",
                                hint: "use that version, or a newer one, to read this archive")
            }
            if readOnly {
                // Readers write nothing: they run beside a backup's writes
                // (WAL lets them read the last commit meanwhile).
                guard try db.read({ try Self.migrator.hasCompletedMigrations($0) }) else {
                    throw MailError(.corrupt, scope: .local, "catalog \(path) is incomplete (its creation was interrupted)",
                                    hint: "run a backup into the archive to finish it")
                }
                return
            }
            try Self.migrator.migrate(db)
            try db.write { db in
                for name in ["next_run", "next_volume", "next_message", "next_location", "next_folder"] {
                    try db.execute(sql: "INSERT OR IGNORE INTO meta(name, value) VALUES (?, '1')", arguments: [name])
                }
                let validity = String(UInt32.random(in: 1...UInt32.max))
                try db.execute(sql: "INSERT OR IGNORE INTO meta(name, value) VALUES ('uid_validity', ?)", arguments: [validity])
                try db.execute(sql: "INSERT OR IGNORE INTO meta(name, value) VALUES ('created_at', ?)",
                               arguments: [String(Int64(Date().timeIntervalSince1970))])
            }
        } catch let e as MailError {
            throw e
        } catch let e as DatabaseError where e.resultCode == .SQLITE_NOTADB || e.resultCode == .SQLITE_CORRUPT {
            throw MailError(.corrupt, scope: .local, "catalog \(path) is damaged: \(e.message ?? "\(e.resultCode)")")
        } catch {
            throw MailError(.storage, scope: .local, "catalog \(path) cannot be opened: \(error)")
        }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE runs(
                    id INTEGER PRIMARY KEY,
                    started_at INTEGER NOT NULL,
                    finished_at INTEGER NOT NULL,
                    source TEXT,
                    volume_id INTEGER,
                    messages_added INTEGER NOT NULL,
                    bytes_added INTEGER NOT NULL,
                    locations_added INTEGER NOT NULL,
                    flag_changes INTEGER NOT NULL,
                    deletions INTEGER NOT NULL);
                CREATE TABLE volumes(
                    id INTEGER PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    run_id INTEGER NOT NULL,
                    format TEXT NOT NULL,
                    compression TEXT NOT NULL,
                    file_size INTEGER NOT NULL,
                    sha256 TEXT NOT NULL,
                    message_count INTEGER NOT NULL,
                    created_at INTEGER NOT NULL,
                    replaces TEXT);
                CREATE TABLE folders(
                    id INTEGER PRIMARY KEY,
                    path TEXT NOT NULL UNIQUE,
                    first_run INTEGER NOT NULL);
                CREATE TABLE messages(
                    id INTEGER PRIMARY KEY,
                    key TEXT NOT NULL,
                    size INTEGER NOT NULL,
                    volume_id INTEGER NOT NULL REFERENCES volumes(id),
                    entry_path TEXT NOT NULL,
                    entry_offset INTEGER NOT NULL,
                    entry_length INTEGER NOT NULL,
                    entry_index INTEGER NOT NULL,
                    first_run INTEGER NOT NULL,
                    headers TEXT,
                    UNIQUE(key, size));
                CREATE INDEX messages_volume ON messages(volume_id);
                CREATE TABLE locations(
                    id INTEGER PRIMARY KEY,
                    message_id INTEGER NOT NULL REFERENCES messages(id),
                    folder_id INTEGER NOT NULL REFERENCES folders(id),
                    flags TEXT NOT NULL,
                    initial_flags TEXT NOT NULL,
                    internal_date INTEGER,
                    zone_minutes INTEGER NOT NULL,
                    date_source TEXT,
                    source_id TEXT,
                    first_run INTEGER NOT NULL,
                    deleted_run INTEGER);
                CREATE INDEX locations_folder ON locations(folder_id);
                CREATE INDEX locations_message ON locations(message_id);
                CREATE TABLE flag_changes(
                    id INTEGER PRIMARY KEY,
                    location_id INTEGER NOT NULL REFERENCES locations(id) ON DELETE CASCADE,
                    run_id INTEGER NOT NULL,
                    flags TEXT NOT NULL);
                CREATE INDEX flag_changes_location ON flag_changes(location_id);
                CREATE TABLE deletions(
                    id INTEGER PRIMARY KEY,
                    location_id INTEGER NOT NULL REFERENCES locations(id) ON DELETE CASCADE,
                    run_id INTEGER NOT NULL);
                CREATE TABLE keywords(keyword TEXT PRIMARY KEY, letter INTEGER NOT NULL UNIQUE);
                """)
        }
        return m
    }

    // MARK: - Reads

    func wrap<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as MailError { throw e } catch {
            throw MailError(.storage, scope: .local, "catalog \(path): \(what) failed: \(error)")
        }
    }

    func meta(_ name: String) throws -> String? {
        try wrap("reading \(name)") {
            try db.read { db in try String.fetchOne(db, sql: "SELECT value FROM meta WHERE name = ?", arguments: [name]) }
        }
    }

    func counter(_ name: String) throws -> Int64 { Int64(try meta(name) ?? "1") ?? 1 }

    /// Takes the next run number for good (committed at once).
    func reserveRun() throws -> Int64 {
        try wrap("reserving a run number") {
            try db.write { db in
                let run = Int64(try String.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'next_run'") ?? "1") ?? 1
                try db.execute(sql: "UPDATE meta SET value = ? WHERE name = 'next_run'", arguments: [String(run + 1)])
                return run
            }
        }
    }

    func volumes() throws -> [VolumeRecord] {
        try wrap("listing volumes") { try db.read(Self.volumes) }
    }

    static func volumes(_ db: Database) throws -> [VolumeRecord] {
        try Row.fetchAll(db, sql: "SELECT * FROM volumes ORDER BY id").map(VolumeRecord.init(row:))
    }

    func runs() throws -> [RunRecord] {
        try wrap("listing runs") { try db.read(Self.runs) }
    }

    static func runs(_ db: Database) throws -> [RunRecord] {
        try Row.fetchAll(db, sql: "SELECT * FROM runs ORDER BY id").map(RunRecord.init(row:))
    }

    func folders() throws -> [(id: Int64, path: FolderPath, firstRun: Int64)] {
        try wrap("listing folders") {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT id, path, first_run FROM folders ORDER BY id").compactMap { row in
                    guard let p = Catalog.decodeFolder(row["path"]) else { return nil }
                    return (row["id"], p, row["first_run"])
                }
            }
        }
    }

    func keywordLetters() throws -> [String: Int] {
        try wrap("reading keywords") {
            try db.read { db in
                var out: [String: Int] = [:]
                for row in try Row.fetchAll(db, sql: "SELECT keyword, letter FROM keywords") {
                    out[row["keyword"]] = row["letter"]
                }
                return out
            }
        }
    }

    /// Whether any message is stored (a new archive holds none).
    func holdsMessages() throws -> Bool {
        try wrap("counting messages") {
            try db.read { db in try Bool.fetchOne(db, sql: "SELECT EXISTS(SELECT 1 FROM messages)") ?? true }
        }
    }

    func message(key: MessageKey, size: Int64) throws -> Int64? {
        try wrap("looking up a key") {
            try db.read { db in
                try Int64.fetchOne(db, sql: "SELECT id FROM messages WHERE key = ? AND size = ?", arguments: [key.hex, size])
            }
        }
    }

    func message(id: Int64) throws -> (MessageRecord, HeaderSummary?)? {
        try wrap("looking up a message") {
            try db.read { db in
                guard let row = try Row.fetchOne(db, sql: "SELECT * FROM messages WHERE id = ?", arguments: [id]),
                      let m = MessageRecord(row: row) else { return nil }
                return (m, Catalog.decodeHeaders(row["headers"]))
            }
        }
    }

    /// Locations of one folder (or all folders when `folderID` is nil), as the
    /// set stood after run `asOfRun` (or now).
    func locations(folderID: Int64?, asOfRun: Int64?, ids: [Int64]? = nil) throws -> [LocationRecord] {
        if let ids, ids.count > 500 {
            // Stay far below SQLite's limit on bound variables.
            return try stride(from: 0, to: ids.count, by: 500).flatMap {
                try locations(folderID: folderID, asOfRun: asOfRun, ids: Array(ids[$0..<min($0 + 500, ids.count)]))
            }
        }
        return try wrap("listing messages") {
            try db.read { db in
                var sql = """
                    SELECT l.*, m.key, m.size, m.volume_id, m.entry_path, m.entry_offset, m.entry_length, m.entry_index, m.headers,
                           v.name AS volume_name, f.path AS folder_path
                    FROM locations l JOIN messages m ON m.id = l.message_id
                    JOIN volumes v ON v.id = m.volume_id JOIN folders f ON f.id = l.folder_id
                    WHERE 1 = 1
                    """
                var args: [DatabaseValueConvertible?] = []
                if let folderID { sql += " AND l.folder_id = ?"; args.append(folderID) }
                if let asOfRun {
                    sql += " AND l.first_run <= ? AND (l.deleted_run IS NULL OR l.deleted_run > ?)"
                    args.append(asOfRun); args.append(asOfRun)
                } else {
                    sql += " AND l.deleted_run IS NULL"
                }
                if let ids {
                    sql += " AND l.id IN (\(ids.map { _ in "?" }.joined(separator: ",")))"
                    args.append(contentsOf: ids.map { $0 as DatabaseValueConvertible? })
                }
                sql += " ORDER BY l.id"
                var out = try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args)).compactMap(LocationRecord.init(row:))
                if let asOfRun, !out.isEmpty {
                    // Flags as they stood after that run: the last change up to it, else the first-seen flags.
                    var latest: [Int64: String] = [:]
                    var changeSQL = """
                        SELECT fc.location_id AS l, fc.flags AS f FROM flag_changes fc
                        WHERE fc.run_id <= ? AND fc.id = (SELECT id FROM flag_changes x WHERE x.location_id = fc.location_id
                                                          AND x.run_id <= ? ORDER BY x.run_id DESC, x.id DESC LIMIT 1)
                        """
                    var changeArgs: [DatabaseValueConvertible?] = [asOfRun, asOfRun]
                    if let folderID {
                        changeSQL += " AND fc.location_id IN (SELECT id FROM locations WHERE folder_id = ?)"
                        changeArgs.append(folderID)
                    }
                    for row in try Row.fetchAll(db, sql: changeSQL, arguments: StatementArguments(changeArgs)) {
                        latest[row["l"]] = row["f"]
                    }
                    for i in out.indices {
                        out[i].flags = latest[out[i].id].flatMap(Catalog.decodeFlags) ?? out[i].initialFlags
                    }
                }
                return out
            }
        }
    }

    func messagesInVolume(_ volumeID: Int64) throws -> [MessageRecord] {
        try wrap("listing a volume") {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM messages WHERE volume_id = ? ORDER BY entry_index, entry_offset",
                                 arguments: [volumeID]).compactMap(MessageRecord.init(row:))
            }
        }
    }

    // MARK: - Encoding

    static func encodeFolder(_ f: FolderPath) -> String {
        (try? String(decoding: JSONEncoder().encode(f.components), as: UTF8.self)) ?? "[]"
    }

    static func decodeFolder(_ s: String) -> FolderPath? {
        guard let c = try? JSONDecoder().decode([String].self, from: Data(s.utf8)) else { return nil }
        return FolderPath(components: c)
    }

    /// One encoder for every row (making one per row cost more than the
    /// encoding); `encode` keeps no state between calls.
    private static let encoder = JSONEncoder()

    static func encodeHeaders(_ h: HeaderSummary?) -> String? {
        guard let h else { return nil }
        return try? String(decoding: encoder.encode(h), as: UTF8.self)
    }

    static func decodeHeaders(_ s: String?) -> HeaderSummary? {
        guard let s else { return nil }
        return try? JSONDecoder().decode(HeaderSummary.self, from: Data(s.utf8))
    }

    static func encodeFlags(_ f: Flags) -> String {
        (try? String(decoding: encoder.encode(f), as: UTF8.self)) ?? "[]"
    }

    static func decodeFlags(_ s: String) -> Flags? {
        try? JSONDecoder().decode(Flags.self, from: Data(s.utf8))
    }
}

struct VolumeRecord: Sendable, Hashable {
    var id: Int64
    var name: String
    var runID: Int64
    var format: ArchiveFormat
    var compression: ArchiveCompression
    var fileSize: Int64
    var sha256: String
    var messageCount: Int
    var createdAt: Int64
    var replaces: String?

    init(id: Int64, name: String, runID: Int64, format: ArchiveFormat, compression: ArchiveCompression,
         fileSize: Int64, sha256: String, messageCount: Int, createdAt: Int64, replaces: String?) {
        self.id = id; self.name = name; self.runID = runID; self.format = format; self.compression = compression
        self.fileSize = fileSize; self.sha256 = sha256; self.messageCount = messageCount
        self.createdAt = createdAt; self.replaces = replaces
    }

    init(row: Row) {
        id = row["id"]; name = row["name"]; runID = row["run_id"]
        format = ArchiveFormat(rawValue: row["format"]) ?? .maildir
        compression = ArchiveCompression(rawValue: row["compression"]) ?? .zstd
        fileSize = row["file_size"]; sha256 = row["sha256"]; messageCount = row["message_count"]
        createdAt = row["created_at"]; replaces = row["replaces"]
    }
}

struct RunRecord: Sendable, Hashable {
    var id: Int64
    var startedAt: Int64
    var finishedAt: Int64
    var source: String?
    var volumeID: Int64?
    var messagesAdded: Int
    var bytesAdded: Int64
    var locationsAdded: Int
    var flagChanges: Int
    var deletions: Int

    init(row: Row) {
        id = row["id"]; startedAt = row["started_at"]; finishedAt = row["finished_at"]; source = row["source"]
        volumeID = row["volume_id"]; messagesAdded = row["messages_added"]; bytesAdded = row["bytes_added"]
        locationsAdded = row["locations_added"]; flagChanges = row["flag_changes"]; deletions = row["deletions"]
    }
}

/// Where a stored byte string lives.
struct MessageRecord: Sendable, Hashable {
    var id: Int64
    var key: MessageKey
    var size: Int64
    var volumeID: Int64
    var entryPath: String
    /// mbox volumes: where the quoted message starts inside the entry; 0 for Maildir.
    var entryOffset: Int64
    /// Bytes of the entry the message occupies (quoted length for mbox).
    var entryLength: Int64
    /// Position of the entry in its volume, for reading in order.
    var entryIndex: Int64
    var firstRun: Int64

    init(id: Int64, key: MessageKey, size: Int64, volumeID: Int64, entryPath: String, entryOffset: Int64,
         entryLength: Int64, entryIndex: Int64, firstRun: Int64) {
        self.id = id; self.key = key; self.size = size; self.volumeID = volumeID; self.entryPath = entryPath
        self.entryOffset = entryOffset; self.entryLength = entryLength; self.entryIndex = entryIndex; self.firstRun = firstRun
    }

    /// A `messages` row.
    init?(row: Row) {
        self.init(row: row, idColumn: "id", firstRun: row["first_run"])
    }

    /// The message columns of `row`: a `messages` row, or a join that names
    /// the message by another column (`message_id` in a locations row).
    /// The one place message columns are decoded.
    init?(row: Row, idColumn: String, firstRun: Int64) {
        guard let k = MessageKey(hex: row["key"]) else { return nil }
        id = row[idColumn]; key = k; size = row["size"]; volumeID = row["volume_id"]; entryPath = row["entry_path"]
        entryOffset = row["entry_offset"]; entryLength = row["entry_length"]; entryIndex = row["entry_index"]
        self.firstRun = firstRun
    }
}

struct LocationRecord: Sendable, Hashable {
    var id: Int64
    var messageID: Int64
    var folderID: Int64
    var folder: FolderPath
    var flags: Flags
    var initialFlags: Flags
    var internalDate: InternalDate?
    var dateSource: DateSource?
    var sourceID: String?
    var firstRun: Int64
    var deletedRun: Int64?
    var message: MessageRecord
    var volumeName: String
    /// The header summary, decoded when asked for (a restore never asks).
    var headers: HeaderSummary? {
        get { knownHeaders ?? Catalog.decodeHeaders(headersJSON) }
        set { knownHeaders = newValue; headersJSON = nil }
    }
    private var knownHeaders: HeaderSummary?
    private var headersJSON: String?

    init(id: Int64, folderID: Int64, folder: FolderPath, flags: Flags, internalDate: InternalDate?, dateSource: DateSource?,
         firstRun: Int64, message: MessageRecord, volumeName: String, headers: HeaderSummary?) {
        self.id = id; self.messageID = message.id; self.folderID = folderID; self.folder = folder; self.flags = flags
        self.initialFlags = flags; self.internalDate = internalDate; self.dateSource = dateSource; self.sourceID = nil
        self.firstRun = firstRun; self.deletedRun = nil; self.message = message; self.volumeName = volumeName
        self.knownHeaders = headers
    }

    init?(row: Row) {
        guard let folder = Catalog.decodeFolder(row["folder_path"]),
              let message = MessageRecord(row: row, idColumn: "message_id", firstRun: 0) else { return nil }
        id = row["id"]; messageID = message.id; folderID = row["folder_id"]; self.folder = folder
        flags = Catalog.decodeFlags(row["flags"]) ?? []
        initialFlags = Catalog.decodeFlags(row["initial_flags"]) ?? []
        if let d: Int64 = row["internal_date"] {
            internalDate = InternalDate(secondsSinceEpoch: d, zoneMinutes: row["zone_minutes"])
        }
        dateSource = (row["date_source"] as String?).flatMap(DateSource.init(rawValue:))
        sourceID = row["source_id"]; firstRun = row["first_run"]; deletedRun = row["deleted_run"]
        self.message = message
        volumeName = row["volume_name"]
        headersJSON = row["headers"]
    }
}

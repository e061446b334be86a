import Foundation
import GRDB
import MailModel

/// A location added in this run, not yet in the catalog.
struct PendingLocation: Sendable {
    var id: Int64
    var messageID: Int64
    var folder: FolderPath
    var flags: Flags
    var initialFlags: Flags
    var internalDate: InternalDate
    var dateSource: DateSource?
    var sourceID: String?
    var deleted: Bool
    var key: MessageKey
    var size: Int64
}

/// Everything one run changes, written in one transaction.
struct RunCommit {
    var runID: Int64
    var startedAt: Int64
    var finishedAt: Int64
    var source: String?
    var volumes: [VolumeRecord]
    var newMessages: [MessageRecord]
    var newMessageHeaders: [Int64: (summary: HeaderSummary, json: String?)]
    var newFolders: [(id: Int64, path: FolderPath)]
    var folderIDs: [FolderPath: Int64]
    var newLocations: [PendingLocation]
    var flagChanges: [(locationID: Int64, flags: Flags)]
    var deletions: [Int64]
    var newKeywords: [(keyword: String, letter: Int)]
    var counters: [String: Int64]
}

extension Catalog {
    func commit(_ c: RunCommit) throws {
        try wrap("recording run \(c.runID)") {
            try db.write { db in
                for (name, value) in c.counters {
                    try db.execute(sql: "UPDATE meta SET value = ? WHERE name = ?", arguments: [String(value), name])
                }
                for v in c.volumes {
                    try Catalog.insert(v, db)
                }
                for f in c.newFolders {
                    try db.execute(sql: "INSERT INTO folders(id, path, first_run) VALUES (?, ?, ?)",
                                   arguments: [f.id, Catalog.encodeFolder(f.path), c.runID])
                }
                for (k, l) in c.newKeywords {
                    try db.execute(sql: "INSERT OR IGNORE INTO keywords(keyword, letter) VALUES (?, ?)", arguments: [k, l])
                }
                // One compiled statement per kind of row (not one per row).
                let insertMessage = try db.cachedStatement(sql: """
                    INSERT INTO messages(id, key, size, volume_id, entry_path, entry_offset, entry_length, entry_index, first_run, headers)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """)
                for m in c.newMessages {
                    try insertMessage.execute(arguments: [m.id, m.key.hex, m.size, m.volumeID, m.entryPath, m.entryOffset, m.entryLength,
                                         m.entryIndex, m.firstRun, c.newMessageHeaders[m.id]?.json])
                }
                // A run has few distinct flag sets: each is encoded once.
                var flagJSON: [Flags: String] = [:]
                func encodedFlags(_ f: Flags) -> String {
                    if let e = flagJSON[f] { return e }
                    let e = Catalog.encodeFlags(f)
                    flagJSON[f] = e
                    return e
                }
                let insertLocation = try db.cachedStatement(sql: """
                    INSERT INTO locations(id, message_id, folder_id, flags, initial_flags, internal_date, zone_minutes,
                                          date_source, source_id, first_run, deleted_run)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """)
                for l in c.newLocations {
                    guard let folderID = c.folderIDs[l.folder] else {
                        throw MailError(.storage, scope: .local, "internal: folder \(l.folder) has no catalog id")
                    }
                    let flags = encodedFlags(l.flags)
                    let initialFlags = encodedFlags(l.initialFlags)
                    try insertLocation.execute(arguments: [l.id, l.messageID, folderID, flags, initialFlags,
                                         l.internalDate.secondsSinceEpoch, l.internalDate.zoneMinutes, l.dateSource?.rawValue,
                                         l.sourceID, c.runID, l.deleted ? c.runID : nil])
                    if l.flags != l.initialFlags {
                        try db.execute(sql: "INSERT INTO flag_changes(location_id, run_id, flags) VALUES (?, ?, ?)",
                                       arguments: [l.id, c.runID, Catalog.encodeFlags(l.flags)])
                    }
                    if l.deleted {
                        try db.execute(sql: "INSERT INTO deletions(location_id, run_id) VALUES (?, ?)", arguments: [l.id, c.runID])
                    }
                }
                for (id, flags) in c.flagChanges {
                    let enc = Catalog.encodeFlags(flags)
                    try db.execute(sql: "UPDATE locations SET flags = ? WHERE id = ?", arguments: [enc, id])
                    try db.execute(sql: "INSERT INTO flag_changes(location_id, run_id, flags) VALUES (?, ?, ?)",
                                   arguments: [id, c.runID, enc])
                }
                for id in c.deletions {
                    try db.execute(sql: "UPDATE locations SET deleted_run = ? WHERE id = ? AND deleted_run IS NULL",
                                   arguments: [c.runID, id])
                    try db.execute(sql: "INSERT INTO deletions(location_id, run_id) VALUES (?, ?)", arguments: [id, c.runID])
                }
                try db.execute(sql: """
                    INSERT INTO runs(id, started_at, finished_at, source, volume_id, messages_added, bytes_added,
                                     locations_added, flag_changes, deletions)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET
                        finished_at = excluded.finished_at,
                        volume_id = COALESCE(runs.volume_id, excluded.volume_id),
                        messages_added = runs.messages_added + excluded.messages_added,
                        bytes_added = runs.bytes_added + excluded.bytes_added,
                        locations_added = runs.locations_added + excluded.locations_added,
                        flag_changes = runs.flag_changes + excluded.flag_changes,
                        deletions = runs.deletions + excluded.deletions
                    """, arguments: [c.runID, c.startedAt, c.finishedAt, c.source, c.volumes.first?.id, c.newMessages.count,
                                     c.newMessages.reduce(Int64(0)) { $0 + $1.size }, c.newLocations.count,
                                     c.flagChanges.count + c.newLocations.filter { $0.flags != $0.initialFlags }.count,
                                     c.deletions.count + c.newLocations.filter(\.deleted).count])
            }
        }
    }

    /// The one place a volume row is written (a run's volumes, a prune's rewrites).
    static func insert(_ v: VolumeRecord, _ db: Database) throws {
        try db.execute(sql: """
            INSERT INTO volumes(id, name, run_id, format, compression, file_size, sha256, message_count, created_at, replaces)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: [v.id, v.name, v.runID, v.format.rawValue, v.compression.rawValue, v.fileSize,
                             v.sha256, v.messageCount, v.createdAt, v.replaces])
    }

    /// Replaces one volume by its rewrite (or by nothing), dropping pruned rows.
    func replaceVolume(old: VolumeRecord, new: VolumeRecord?, moved: [MessageRecord], removedMessages: [Int64],
                       removedLocations: [Int64], nextVolume: Int64) throws {
        try wrap("recording the rewrite of \(old.name)") {
            try db.write { db in
                try db.execute(sql: "UPDATE meta SET value = ? WHERE name = 'next_volume'", arguments: [String(nextVolume)])
                if let v = new {
                    try Catalog.insert(v, db)
                }
                for id in removedLocations {
                    try db.execute(sql: "DELETE FROM locations WHERE id = ?", arguments: [id])
                }
                for id in removedMessages {
                    try db.execute(sql: "DELETE FROM messages WHERE id = ?", arguments: [id])
                }
                for m in moved {
                    try db.execute(sql: """
                        UPDATE messages SET volume_id = ?, entry_path = ?, entry_offset = ?, entry_length = ?, entry_index = ?
                        WHERE id = ?
                        """, arguments: [m.volumeID, m.entryPath, m.entryOffset, m.entryLength, m.entryIndex, m.id])
                }
                let left = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM messages WHERE volume_id = ?", arguments: [old.id]) ?? 0
                guard left == 0 else {
                    throw MailError(.storage, scope: .local, "internal: \(left) messages still point at \(old.name) after its rewrite")
                }
                try db.execute(sql: "UPDATE runs SET volume_id = ? WHERE volume_id = ?", arguments: [new?.id, old.id])
                try db.execute(sql: "DELETE FROM volumes WHERE id = ?", arguments: [old.id])
            }
        }
    }

    /// Removes pruned locations whose message stays (it is still referenced elsewhere).
    func removeLocations(_ ids: [Int64]) throws {
        guard !ids.isEmpty else { return }
        try wrap("pruning locations") {
            try db.write { db in
                for id in ids { try db.execute(sql: "DELETE FROM locations WHERE id = ?", arguments: [id]) }
            }
        }
    }
}

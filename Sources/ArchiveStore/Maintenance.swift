import Foundation
import GRDB
import Logging
import MailModel

/// One volume as `archive list` shows it.
public struct ArchiveVolumeSummary: Sendable, Hashable, Codable {
    public var name: String
    public var run: Int64
    public var format: ArchiveFormat
    public var compression: ArchiveCompression
    /// Size of the volume file.
    public var fileSize: Int64
    public var sha256: String
    /// Messages whose bytes this volume holds.
    public var messageCount: Int
    public var createdAt: InternalDate
    /// The volume this one is a pruned rewrite of.
    public var replaces: String?
}

/// One run (backup session) as `archive list` shows it.
public struct ArchiveRunSummary: Sendable, Hashable, Codable {
    public var id: Int64
    public var startedAt: InternalDate
    public var finishedAt: InternalDate
    public var source: String?
    /// The volumes written by the run (usually one; none when nothing was new).
    public var volumes: [String]
    public var messagesAdded: Int
    public var bytesAdded: Int64
    public var locationsAdded: Int
    public var flagChanges: Int
    public var deletions: Int
}

/// `archive list`: volumes, runs and totals.
public struct ArchiveListing: Sendable, Hashable, Codable {
    public var volumes: [ArchiveVolumeSummary]
    public var runs: [ArchiveRunSummary]
    public var folders: Int
    /// Distinct stored messages (byte strings).
    public var storedMessages: Int
    /// Their bytes, uncompressed.
    public var storedBytes: Int64
    /// Messages in folders now (not deleted on the source).
    public var liveLocations: Int
    /// Messages seen deleted on the source and kept until a prune.
    public var deletedLocations: Int
    /// Bytes of all volume files.
    public var volumeBytes: Int64
}

/// One problem `archive check` found.
public struct ArchiveProblem: Sendable, Hashable, Codable, CustomStringConvertible {
    public var volume: String
    public var entry: String?
    public var message: String
    public var description: String {
        "volume \(volume)" + (entry.map { ", entry \($0)" } ?? "") + ": " + message
    }
}

/// `archive check`: what was re-read and what was wrong.
public struct ArchiveCheckReport: Sendable, Hashable, Codable {
    public var volumesChecked: Int
    public var messagesChecked: Int
    public var bytesChecked: Int64
    public var problems: [ArchiveProblem]
    public var isClean: Bool { problems.isEmpty }
    /// The error that ends `archive check` with exit 6, or nil when clean.
    public var error: MailError? {
        guard let first = problems.first else { return nil }
        return MailError(.corrupt, scope: .local,
                         "archive check found \(problems.count) problem(s); first: \(first)")
    }
}

/// `archive prune`: what was rewritten.
public struct ArchivePruneReport: Sendable, Hashable, Codable {
    public var deletedBefore: InternalDate
    /// Locations (message in a folder) dropped from the catalog.
    public var locationsRemoved: Int
    /// Stored messages whose bytes were removed.
    public var messagesRemoved: Int
    public var bytesRemoved: Int64
    /// Old volume name → new volume name (nil when the volume held only pruned mail).
    public var rewritten: [String: String?]
    public var volumeBytesBefore: Int64
    public var volumeBytesAfter: Int64
}

extension ArchiveStore {
    // MARK: - One-call entry points for `mailferry archive list|check|prune PATH`

    /// `archive list PATH`: opens the set read-only (shared lock) and lists it.
    public static func list(path: String, logger: Logger) async throws -> ArchiveListing {
        let s = try open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: logger)
        do {
            let l = try s.list()
            try await s.close()
            return l
        } catch {
            try? await s.close()
            throw error
        }
    }

    /// `archive check PATH`: re-reads every volume (shared lock). Exit 6 when
    /// `report.error` is set; the report names every problem.
    public static func check(path: String, logger: Logger) async throws -> ArchiveCheckReport {
        let s = try open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: logger)
        do {
            let r = try s.check()
            try await s.close()
            return r
        } catch {
            try? await s.close()
            throw error
        }
    }

    /// `archive prune PATH --deleted-before DATE` (exclusive lock, and no reader).
    public static func prune(path: String, deletedBefore: InternalDate, logger: Logger) async throws -> ArchivePruneReport {
        let s = try open(path: path, options: ArchiveOptions(), create: false, logger: logger)
        do {
            let r = try s.prune(deletedBefore: deletedBefore)
            try await s.close()
            return r
        } catch {
            try? await s.close()
            throw error
        }
    }

    // MARK: - list

    /// One read transaction: a backup committing meanwhile is either wholly
    /// in the listing or not at all.
    public func list() throws -> ArchiveListing {
        try catalog.wrap("listing the archive") {
            try catalog.db.read { db in
                let volumes = try Catalog.volumes(db)
                var byRun: [Int64: [String]] = [:]
                for v in volumes { byRun[v.runID, default: []].append(v.name) }
                let runs = try Catalog.runs(db)
                let stored = try Row.fetchOne(db, sql: "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS s FROM messages")
                let live = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM locations WHERE deleted_run IS NULL") ?? 0
                let dead = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM locations WHERE deleted_run IS NOT NULL") ?? 0
                let folders = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM folders") ?? 0
                return ArchiveListing(
                    volumes: volumes.map {
                        ArchiveVolumeSummary(name: $0.name, run: $0.runID, format: $0.format, compression: $0.compression,
                                             fileSize: $0.fileSize, sha256: $0.sha256, messageCount: $0.messageCount,
                                             createdAt: InternalDate(secondsSinceEpoch: $0.createdAt), replaces: $0.replaces)
                    },
                    runs: runs.map {
                        ArchiveRunSummary(id: $0.id, startedAt: InternalDate(secondsSinceEpoch: $0.startedAt),
                                          finishedAt: InternalDate(secondsSinceEpoch: $0.finishedAt), source: $0.source,
                                          volumes: byRun[$0.id] ?? [], messagesAdded: $0.messagesAdded,
                                          bytesAdded: $0.bytesAdded, locationsAdded: $0.locationsAdded,
                                          flagChanges: $0.flagChanges, deletions: $0.deletions)
                    },
                    folders: folders, storedMessages: stored?["n"] ?? 0, storedBytes: stored?["s"] ?? 0,
                    liveLocations: live, deletedLocations: dead,
                    volumeBytes: volumes.reduce(0) { $0 + $1.fileSize })
            }
        }
    }

    // MARK: - check

    /// Re-reads every volume: its file hash, every entry (hostile entries are
    /// problems), and every message against its key and size. Problems are
    /// collected, not thrown; `report.error` maps them to exit 6.
    public func check() throws -> ArchiveCheckReport {
        var report = ArchiveCheckReport(volumesChecked: 0, messagesChecked: 0, bytesChecked: 0, problems: [])
        for v in try catalog.volumes() {
            report.volumesChecked += 1
            let file = volumesDirectory + "/" + v.name
            guard FileManager.default.fileExists(atPath: file) else {
                report.problems.append(ArchiveProblem(volume: v.name, entry: nil, message: "the volume file is missing"))
                continue
            }
            do {
                let sha = try sha256OfFile(file)
                if sha != v.sha256 {
                    report.problems.append(ArchiveProblem(volume: v.name, entry: nil,
                                                          message: "SHA-256 \(sha.prefix(16))… differs from the catalog's \(v.sha256.prefix(16))…"))
                }
            } catch {
                report.problems.append(ArchiveProblem(volume: v.name, entry: nil, message: "\(error)"))
                continue
            }
            let records = try catalog.messagesInVolume(v.id)
            var reader: VolumeMessageReader?
            do {
                let r = try VolumeMessageReader(path: file, volumeName: v.name, format: v.format, wanted: records)
                reader = r
                while let (record, stream) = try r.next() {
                    do {
                        try stream.drain()
                        report.messagesChecked += 1
                        report.bytesChecked += record.size
                    } catch let e as MailError where e.kind == .corrupt && e.message.contains("message \(record.key.short)") {
                        report.problems.append(ArchiveProblem(volume: v.name, entry: record.entryPath,
                                                              message: "message \(record.key.short) is damaged: \(e.message)"))
                    }
                }
                for u in r.unknownEntries {
                    report.problems.append(ArchiveProblem(volume: v.name, entry: u, message: "entry not in the catalog"))
                }
                for m in r.missing {
                    report.problems.append(ArchiveProblem(volume: v.name, entry: m.entryPath,
                                                          message: "message \(m.key.short) is missing from the volume"))
                }
            } catch {
                let left = reader?.missing.count ?? records.count
                report.problems.append(ArchiveProblem(volume: v.name, entry: nil,
                                                      message: "unreadable: \(error) (\(left) message(s) could not be checked)"))
            }
        }
        return report
    }

    // MARK: - prune

    /// Drops messages seen deleted on the source by a run that finished before
    /// `deletedBefore`. Only volumes holding bytes no longer referenced are
    /// rewritten, one at a time: new volume under a temporary name, fsync,
    /// rename, one catalog transaction, then the old file is removed. A crash
    /// at any point leaves a consistent set (a leftover file is cleaned on the
    /// next open).
    ///
    /// Readers (restore, `archive list|check`) are kept out while it runs,
    /// and it fails (exit 5) when one is reading: they could otherwise open a
    /// volume the prune is about to replace.
    public func prune(deletedBefore: InternalDate) throws -> ArchivePruneReport {
        try requirePrunable()
        let readersLock = try excludeReaders()
        defer { Foundation.close(readersLock) }
        let cutoff = deletedBefore.secondsSinceEpoch
        let volumesBefore = try catalog.volumes()
        var report = ArchivePruneReport(deletedBefore: deletedBefore, locationsRemoved: 0, messagesRemoved: 0,
                                        bytesRemoved: 0, rewritten: [:],
                                        volumeBytesBefore: volumesBefore.reduce(0) { $0 + $1.fileSize },
                                        volumeBytesAfter: 0)
        // Which locations go, and which messages lose their last location.
        let (prunable, doomed): ([Int64: Int64], [Int64: Int64]) = try catalog.wrap("planning the prune") {
            try catalog.db.read { db in
                var locs: [Int64: Int64] = [:]   // location -> message
                for row in try Row.fetchAll(db, sql: """
                    SELECT l.id, l.message_id FROM locations l JOIN runs r ON r.id = l.deleted_run
                    WHERE r.finished_at < ?
                    """, arguments: [cutoff]) {
                    locs[row["id"]] = row["message_id"]
                }
                var doomed: [Int64: Int64] = [:]  // message -> volume
                for mid in Set(locs.values) {
                    let others = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM locations WHERE message_id = ?", arguments: [mid]) ?? 0
                    let going = locs.values.filter { $0 == mid }.count
                    if others == going, let vid = try Int64.fetchOne(db, sql: "SELECT volume_id FROM messages WHERE id = ?", arguments: [mid]) {
                        doomed[mid] = vid
                    }
                }
                return (locs, doomed)
            }
        }
        report.locationsRemoved = prunable.count
        // Locations whose message stays: just drop the rows.
        let keepMessageLocations = prunable.filter { doomed[$0.value] == nil }.map(\.key)
        try catalog.removeLocations(keepMessageLocations)
        var byVolume: [Int64: [Int64]] = [:]
        for (message, volume) in doomed { byVolume[volume, default: []].append(message) }
        for v in volumesBefore where byVolume[v.id] != nil {
            let gone = Set(byVolume[v.id] ?? [])
            let all = try catalog.messagesInVolume(v.id)
            let keep = all.filter { !gone.contains($0.id) }
            let goneLocations = prunable.filter { gone.contains($0.value) }.map(\.key)
            report.messagesRemoved += gone.count
            report.bytesRemoved += all.filter { gone.contains($0.id) }.reduce(0) { $0 + $1.size }
            let newName = try rewriteVolume(v, keeping: keep, removedMessages: Array(gone), removedLocations: goneLocations)
            report.rewritten[v.name] = .some(newName)
        }
        let next = try catalog.counter("next_volume")
        withState { $0.nextVolume = next }
        report.volumeBytesAfter = try catalog.volumes().reduce(0) { $0 + $1.fileSize }
        logger.info("archive pruned", metadata: ["locations": "\(report.locationsRemoved)", "messages": "\(report.messagesRemoved)",
                                                 "volumes_rewritten": "\(report.rewritten.count)"])
        return report
    }

    private func rewriteVolume(_ old: VolumeRecord, keeping keep: [MessageRecord], removedMessages: [Int64],
                               removedLocations: [Int64]) throws -> String? {
        let oldPath = volumesDirectory + "/" + old.name
        var nextVolume = try catalog.counter("next_volume")
        var newRecord: VolumeRecord?
        var moved: [MessageRecord] = []
        var builder: VolumeBuilder?
        if !keep.isEmpty {
            // The message's first remaining location names its Maildir entry.
            let locs = try catalog.wrap("reading locations") {
                try catalog.db.read { db -> [Int64: (FolderPath, Flags, Int64)] in
                    var out: [Int64: (FolderPath, Flags, Int64)] = [:]
                    for row in try Row.fetchAll(db, sql: """
                        SELECT l.message_id, l.initial_flags, l.internal_date, f.path FROM locations l
                        JOIN folders f ON f.id = l.folder_id JOIN messages m ON m.id = l.message_id
                        WHERE m.volume_id = ? ORDER BY l.id DESC
                        """, arguments: [old.id]) {
                        if let p = Catalog.decodeFolder(row["path"]) {
                            out[row["message_id"]] = (p, Catalog.decodeFlags(row["initial_flags"]) ?? [], row["internal_date"] ?? 0)
                        }
                    }
                    return out
                }
            }
            let letters = Dictionary(uniqueKeysWithValues: try catalog.keywordLetters().map {
                ($0.key, Character(UnicodeScalar(UInt8(97 + $0.value))))
            })
            let b = try VolumeBuilder(directory: volumesDirectory, sequence: nextVolume, format: old.format,
                                      compression: old.compression)
            builder = b
            do {
                let reader = try VolumeMessageReader(path: oldPath, volumeName: old.name, format: old.format, wanted: keep)
                var copied = 0
                while let (record, stream) = try reader.next() {
                    let spool = Spool(directory: volumesDirectory)
                    while let chunk = try stream.nextChunk() {
                        try chunk.withUnsafeBytes { try spool.write($0) }
                    }
                    let (folder, flags, date) = locs[record.id] ?? (FolderPath.inbox, [], 0)
                    _ = try b.add(messageRow: record.id, key: record.key, spool: spool, folder: folder, flags: flags,
                                  date: date, keywordLetters: letters, run: record.firstRun, volumeID: nextVolume)
                    copied += 1
                }
                guard copied == keep.count else {
                    throw MailError(.corrupt, scope: .local, "volume \(old.name): \(keep.count - copied) message(s) missing; prune stopped",
                                    hint: "run `mailferry archive check`")
                }
                let (sha, size, records) = try b.finish(keywordLetters: letters)
                moved = records
                let finalPath = b.finalPath
                guard rename(b.tempPath, finalPath) == 0 else {
                    throw MailError(.storage, scope: .local, "cannot rename \(b.tempPath): \(String(cString: strerror(errno)))")
                }
                fsyncDirectory(volumesDirectory)
                newRecord = VolumeRecord(id: nextVolume, name: b.name, runID: old.runID, format: old.format,
                                         compression: old.compression, fileSize: size, sha256: sha,
                                         messageCount: records.count, createdAt: Int64(Date().timeIntervalSince1970),
                                         replaces: old.name)
                nextVolume += 1
            } catch {
                b.abandon()
                throw error
            }
        }
        do {
            try catalog.replaceVolume(old: old, new: newRecord, moved: moved, removedMessages: removedMessages,
                                      removedLocations: removedLocations, nextVolume: nextVolume)
        } catch {
            if let b = builder { unlink(b.finalPath) }
            throw error
        }
        unlink(oldPath)
        fsyncDirectory(volumesDirectory)
        return newRecord?.name
    }

    private func requirePrunable() throws {
        guard isWritable else {
            throw MailError(.usage, scope: .local, "\(location) must be opened for writing to prune it")
        }
        guard !withState({ $0.touched }) else {
            throw MailError(.usage, scope: .local, "\(location) has unsaved changes in this session; close it before pruning")
        }
    }
}

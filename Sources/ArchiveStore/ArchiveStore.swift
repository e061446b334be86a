import Foundation
import GRDB
import Logging
import MailModel
import MailStore
import NIOCore

/// How an archive is opened.
public struct ArchiveOptions: Sendable, Hashable {
    /// What new volumes hold: a Maildir tree (default) or mboxrd files.
    public var format: ArchiveFormat
    /// Compression of new volumes (zstd by default).
    public var compression: ArchiveCompression
    /// A read-only view of the set as it stood after the last run that had
    /// finished at this time. Writing is refused in such a view.
    public var asOf: InternalDate?
    /// Open for reading only (restore, list, check): takes a shared lock,
    /// records no run and never cleans up leftovers.
    public var readOnly: Bool
    /// Where the messages come from, recorded with the run (a store URL, never a password).
    public var source: String?
    /// A volume that grows past this many (compressed) bytes is sealed and
    /// committed with what the run has done so far, and the run goes on in a
    /// new volume: a huge first backup that dies keeps what it had stored,
    /// and the run's bookkeeping stays small.
    public var volumeSizeLimit: Int64
    /// The compressor's level (zstd 1–19, gzip 1–9, xz 0–9), or its default
    /// (zstd 3, gzip 6, xz 6, which needs about 94 MB while writing).
    public var compressionLevel: Int?

    public init(format: ArchiveFormat = .maildir, compression: ArchiveCompression = .zstd,
                asOf: InternalDate? = nil, readOnly: Bool = false, source: String? = nil,
                volumeSizeLimit: Int64 = 1 << 30, compressionLevel: Int? = nil) {
        self.compressionLevel = compressionLevel
        self.format = format
        self.compression = compression
        self.asOf = asOf
        self.readOnly = readOnly
        self.source = source
        self.volumeSizeLimit = max(volumeSizeLimit, 1)
    }
}

/// A backup set: `PATH/catalog.sqlite` plus `PATH/volumes/v000001.tar.zst` …,
/// exposed as a `MailStore` so that one transfer engine backs up (any store →
/// archive) and restores (archive → any store).
///
/// As a destination, each session (open … close) is one run:
/// - `append` stores a message's bytes in the run's volume unless the archive
///   already holds the same bytes (same key and size) anywhere, in which case
///   only a new location is recorded: mail moved between folders is stored once.
/// - `setFlags` records a flag change, `delete` a deletion seen on the source;
///   the message stays in the archive, marked, until `prune`.
/// - `close()` seals the volume (temporary name, fsync, rename) and records
///   everything in one catalog transaction. **Appends are durable only once
///   `close()` has returned** (or a checkpoint, below): `append` returns once
///   the body is spooled and queued for the volume writer (its own serial
///   queue, at most `writerQueueDepth` bodies), and the `PendingAppend`
///   resolves when the writer has stored it, with the catalog id the
///   location will have (or the error that stopped the run); if
///   `close()` fails or the process dies first, what was pending is not in the
///   archive and a re-run stores it again. Its ids are never handed out again
///   (they are `RUN << 32 | n`, and the run number is taken durably at open).
/// - A long run commits on the way, whenever its volume reaches
///   `volumeSizeLimit` or it holds 50,000 new locations: each checkpoint is
///   atomic like `close()`, and what it committed stays if the run dies later.
///
/// Opening the same archive for writing again in one process (as parallel
/// transfer workers do) returns the same store: its methods may be called
/// from several tasks, and the run is sealed by the last `close()`.
///
/// As a source, message ids are catalog location ids; `listMessages` gives keys,
/// latest flags (or those as of `asOf`) and INTERNALDATEs. `fetchMessages`
/// reads each needed volume once, front to back, and so hands messages to the
/// handler in volume order (not necessarily the order of `ids`); each body is
/// checked against its key as it streams and fails with `.corrupt` at its end
/// if damaged.
public final class ArchiveStore: MailStore, @unchecked Sendable {
    public let location: StoreLocation
    public let capabilities: StoreCapabilities
    public let path: String
    public let options: ArchiveOptions
    let catalog: Catalog
    let logger: Logger
    let volumesDirectory: String
    let uidValidity: UInt64
    /// The run the view shows (asOf), or nil for the current set.
    let viewRun: Int64?
    private let recordsEmptyRun: Bool
    private let lock = NSLock()
    /// The volume writer: one serial queue of its own (see `append`), and
    /// the places in it that appenders wait for.
    private let writerQueue = DispatchQueue(label: "mailferry.archive.volume-writer", qos: .userInitiated)
    private let writerSlots = AsyncSlots(limit: ArchiveStore.writerQueueDepth)
    /// Spooled bodies waiting for (or in) the volume writer, at most: each
    /// holds at most 1 MiB in memory (the rest is in its unlinked spool file).
    static let writerQueueDepth = 8
    private var lockFD: Int32
    var state: SessionState
    private var isClosed = false

    /// A run also commits what it has after this many new locations, so that
    /// its bookkeeping in memory stays small however many messages it stores.
    static let checkpointEvery = 50_000

    /// Test hooks: fail at a point of `close()`.
    enum FaultPoint: Sendable { case writingVolume(afterBytes: Int64), beforeRename, afterRename, duringCommit }
    var faultPoint: FaultPoint?

    struct SessionState {
        var runID: Int64
        var startedAt: Int64
        var nextMessage: Int64
        var nextLocation: Int64
        var nextFolder: Int64
        var nextVolume: Int64
        /// The volume being written, and volumes of this run already sealed
        /// (complete and fsynced under their temporary names; a read of a
        /// message appended in this session seals the current one).
        var builder: VolumeBuilder?
        var sealed: [SealedVolume] = []
        /// Set when sealing failed: the run can no longer be committed.
        var broken: MailError?
        /// Header summaries of new messages, with their catalog JSON made by
        /// the writer as it goes (not all at once at the commit).
        var newMessageHeaders: [Int64: (summary: HeaderSummary, json: String?)] = [:]
        var newMessageIDs: [KeySize: Int64] = [:]
        var folderIDs: [FolderPath: Int64] = [:]
        var newFolders: [(id: Int64, path: FolderPath)] = []
        var newLocations: [PendingLocation] = []
        var flagChanges: [Int64: Flags] = [:]
        var flagChangeOrder: [Int64] = []
        var deletions: [Int64] = []
        var keywordLetters: [String: Int] = [:]
        var newKeywords: [(keyword: String, letter: Int)] = []
        var touched = false
        /// False while the catalog holds no message at all (a first backup):
        /// then a new message needs no catalog lookup to know it is new. Only
        /// this run adds messages (it holds the writers' lock).
        var catalogHoldsMessages = true
    }

    struct KeySize: Hashable { var key: MessageKey; var size: Int64 }

    struct SealedVolume {
        var builder: VolumeBuilder
        var record: VolumeRecord
        var messages: [MessageRecord]
    }

    private init(path: String, options: ArchiveOptions, catalog: Catalog, logger: Logger, lockFD: Int32,
                 viewRun: Int64?, recordsEmptyRun: Bool) throws {
        self.path = path
        self.options = options
        self.catalog = catalog
        self.logger = logger
        self.lockFD = lockFD
        self.viewRun = viewRun
        self.recordsEmptyRun = recordsEmptyRun
        self.location = .archive(path: path)
        self.volumesDirectory = path + "/volumes"
        self.uidValidity = UInt64(try catalog.meta("uid_validity") ?? "1") ?? 1
        let writable = !options.readOnly && options.asOf == nil
        capabilities = writable
            ? [.folders, .createFolders, .append, .flags, .keywords, .internalDate, .delete, .setFlags,
               .persistentIDs, .appendReturnsID]
            : [.folders, .flags, .keywords, .internalDate, .persistentIDs]
        // A writable session takes its run number durably up front, and its
        // message ids are RUN << 32 | n: ids handed out by a run that died
        // before committing are never handed out again, so an id a transfer
        // state remembers can never come to name another message.
        let runID = writable ? try catalog.reserveRun() : try catalog.counter("next_run")
        state = SessionState(runID: runID, startedAt: Int64(Date().timeIntervalSince1970),
                             nextMessage: try catalog.counter("next_message"),
                             nextLocation: (runID << 32) | 1,
                             nextFolder: try catalog.counter("next_folder"),
                             nextVolume: try catalog.counter("next_volume"))
        for f in try catalog.folders() { state.folderIDs[f.path] = f.id }
        state.catalogHoldsMessages = try catalog.holdsMessages()
        state.keywordLetters = try catalog.keywordLetters()
    }

    deinit {
        state.builder?.abandon()
        for v in state.sealed { v.builder.abandon() }
        Self.releaseLock(lockFD, exclusive: isWritable)
    }

    var isWritable: Bool { !options.readOnly && options.asOf == nil }

    /// Opens (or with `create`, creates) the archive at `path`.
    ///
    /// `create` also marks the session as a backup: it records a run at
    /// `close()` even when nothing was new (so `archive list` shows every
    /// backup). Open sources for a restore with `readOnly`: readers take a
    /// shared lock (`PATH/lock.readers`), so restores and `archive list|check`
    /// run together and while a backup writes (they see the set as its last
    /// commit left it); only a prune keeps them out.
    ///
    /// A writable open takes an exclusive lock (`PATH/lock`, holding its pid;
    /// another backup or prune fails at once with exit 5) and removes what
    /// a crashed run left behind: temporary files, and volume files that no
    /// catalog row references (a volume renamed into place just before a
    /// crash, or the old file of an interrupted prune).
    public static func open(path: String, options: ArchiveOptions = ArchiveOptions(), create: Bool,
                            logger: Logger) throws -> ArchiveStore {
        let writable = !options.readOnly && options.asOf == nil
        guard writable else { return try openUnshared(path: path, options: options, create: create, logger: logger) }
        // Writers in one process share one run (the transfer engine opens a
        // session per parallel worker); the last close() commits it.
        registryLock.lock()
        defer { registryLock.unlock() }
        let key = canonical(path)
        if let entry = openWriters[key] {
            guard entry.store.options.format == options.format, entry.store.options.compression == options.compression else {
                throw MailError(.usage, scope: .local, "archive:\(path) is already open in this process with other options")
            }
            openWriters[key] = (entry.store, entry.count + 1)
            return entry.store
        }
        let store = try openUnshared(path: path, options: options, create: create, logger: logger)
        openWriters[key] = (store, 1)
        return store
    }

    private static let registryLock = NSLock()
    nonisolated(unsafe) private static var openWriters: [String: (store: ArchiveStore, count: Int)] = [:]

    private static func canonical(_ path: String) -> String {
        var p = URL(fileURLWithPath: path).standardizedFileURL.path
        if let r = realpath(p, nil) {
            p = String(cString: r)
            free(r)
        }
        return p
    }

    /// Drops this handle; true when it was the last one and the run is to be sealed.
    private func releaseShared() -> Bool {
        guard isWritable else { return true }
        Self.registryLock.lock()
        defer { Self.registryLock.unlock() }
        let key = Self.canonical(path)
        guard let entry = Self.openWriters[key], entry.store === self else { return true }
        if entry.count > 1 {
            Self.openWriters[key] = (self, entry.count - 1)
            return false
        }
        Self.openWriters[key] = nil
        return true
    }

    /// Opens a store of its own (tests use it to stand for another process).
    static func openUnshared(path: String, options: ArchiveOptions, create: Bool,
                                     logger: Logger) throws -> ArchiveStore {
        let fm = FileManager.default
        let catalogPath = path + "/catalog.sqlite"
        let exists = fm.fileExists(atPath: catalogPath)
        let writable = !options.readOnly && options.asOf == nil
        if !exists {
            guard create, writable else {
                throw MailError(.usage, scope: .local, "archive:\(path) does not exist (no catalog.sqlite)",
                                hint: "a backup creates it: mailferry backup --from SRC --to archive:\(path)")
            }
            var isDir: ObjCBool = false
            if fm.fileExists(atPath: path, isDirectory: &isDir) {
                guard isDir.boolValue else {
                    throw MailError(.usage, scope: .local, "archive:\(path) is a file, not a directory")
                }
                let contents = (try? fm.contentsOfDirectory(atPath: path)) ?? []
                guard contents.allSatisfy({ $0 == "volumes" || $0 == writerLockName || $0 == readerLockName }) else {
                    throw MailError(.usage, scope: .local, "archive:\(path) is a non-empty directory that holds no archive; refusing to write into it")
                }
            } else {
                try makeDirectory(path)
            }
        }
        if writable { try makeDirectory(path + "/volumes") }
        let lockFD = try takeLock(path: path, exclusive: writable)
        do {
            let catalog = try Catalog(path: catalogPath, readOnly: !writable)
            var viewRun: Int64?
            if let asOf = options.asOf {
                let runs = try catalog.runs()
                viewRun = runs.filter { $0.finishedAt <= asOf.secondsSinceEpoch }.map(\.id).max() ?? 0
            }
            let store = try ArchiveStore(path: path, options: options, catalog: catalog, logger: logger, lockFD: lockFD,
                                         viewRun: viewRun, recordsEmptyRun: create)
            if writable { try store.cleanLeftovers() }
            return store
        } catch {
            releaseLock(lockFD, exclusive: writable)
            throw error
        }
    }

    static func makeDirectory(_ p: String) throws {
        if mkdir(p, 0o700) != 0 && errno != EEXIST {
            let e = errno
            if e == ENOENT {
                try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
                return
            }
            throw MailError(.storage, scope: .local, "cannot create \(p): \(String(cString: strerror(e)))")
        }
    }

    /// The writers' lock: `backup` and `prune` hold it exclusively, with
    /// their pid in the file for the error another run gets.
    static let writerLockName = "lock"
    /// The readers' lock: `restore`, `archive list` and `archive check` hold
    /// it shared, and only `prune` takes it exclusively (it rewrites volumes
    /// that readers may be reading). A backup does not take it: what it
    /// writes is under temporary names and not in the catalog until its
    /// commit, so readers see the set as the last commit left it.
    static let readerLockName = "lock.readers"

    /// Takes the writers' lock (exclusive) or the readers' lock (shared);
    /// never waits. Returns -1 for a reader of an archive it cannot lock
    /// (read-only medium, no lock file).
    static func takeLock(path: String, exclusive: Bool) throws -> Int32 {
        let lockPath = path + "/" + (exclusive ? writerLockName : readerLockName)
        var fd = Foundation.open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        if fd < 0 && !exclusive { fd = Foundation.open(lockPath, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else {
            if !exclusive && (errno == ENOENT || errno == EROFS || errno == EACCES) { return -1 }
            throw MailError(.storage, scope: .local, "cannot open \(lockPath): \(String(cString: strerror(errno)))")
        }
        if flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0 {
            let err = errno
            Foundation.close(fd)
            guard err == EWOULDBLOCK || err == EAGAIN else {
                throw MailError(.storage, scope: .local, "cannot lock \(lockPath): \(String(cString: strerror(err)))")
            }
            // A reader is only kept out by a prune, which holds the writers' lock too.
            let holder = lockHolder(path: path)
            throw MailError(.storage, scope: .local,
                            "archive:\(path) is locked by \(holder.map { "pid \($0)" } ?? "another process") "
                                + (exclusive ? "(another mailferry backup or prune is writing it)"
                                             : "(a prune is rewriting its volumes)"),
                            hint: "wait for that run to finish; the lock is \(path)/\(writerLockName)")
        }
        if exclusive {
            let pid = "\(getpid())\n"
            _ = ftruncate(fd, 0)
            _ = pid.withCString { pwrite(fd, $0, strlen($0), 0) }
        }
        return fd
    }

    /// The pid a writer left in the writers' lock file, if any.
    static func lockHolder(path: String) -> String? {
        let fd = Foundation.open(path + "/" + writerLockName, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Foundation.close(fd) }
        var buf = [UInt8](repeating: 0, count: 32)
        let n = pread(fd, &buf, 31, 0)
        guard n > 0 else { return nil }
        let text = String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty || !text.allSatisfy(\.isNumber) ? nil : text
    }

    /// Releases a lock taken by `takeLock`; a writer first clears its pid.
    static func releaseLock(_ fd: Int32, exclusive: Bool) {
        guard fd >= 0 else { return }
        if exclusive { _ = ftruncate(fd, 0) }
        Foundation.close(fd)
    }

    /// For `prune`: keeps readers out while volumes are rewritten. Throws
    /// (exit 5) when one is reading; the caller closes the returned fd.
    func excludeReaders() throws -> Int32 {
        let lockPath = path + "/" + Self.readerLockName
        let fd = Foundation.open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw MailError(.storage, scope: .local, "cannot open \(lockPath): \(String(cString: strerror(errno)))")
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let err = errno
            Foundation.close(fd)
            guard err == EWOULDBLOCK || err == EAGAIN else {
                throw MailError(.storage, scope: .local, "cannot lock \(lockPath): \(String(cString: strerror(err)))")
            }
            throw MailError(.storage, scope: .local,
                            "archive:\(path) is being read by another mailferry run (restore, archive list or archive check); "
                                + "prune rewrites volumes and needs the archive to itself",
                            hint: "run the prune again when the reader has finished")
        }
        return fd
    }

    private func cleanLeftovers() throws {
        let known = Set(try catalog.volumes().map(\.name))
        let names = (try? FileManager.default.contentsOfDirectory(atPath: volumesDirectory)) ?? []
        for n in names {
            let leftoverTemp = n.hasPrefix(".") && n.hasSuffix(".tmp")
            let orphanVolume = n.hasPrefix("v") && ArchiveCompression(fileName: n) != nil && !known.contains(n)
            if leftoverTemp || orphanVolume {
                logger.warning("removing leftover of an interrupted run", metadata: ["file": "\(n)"])
                unlink(volumesDirectory + "/" + n)
            }
        }
        fsyncDirectory(volumesDirectory)
    }

    func withState<T>(_ body: (inout SessionState) throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(&state)
    }

    private func requireWritable(_ what: String) throws {
        guard isWritable else {
            throw MailError(.unsupported, scope: .account,
                            "\(location) is opened \(options.asOf != nil ? "as of a past run" : "read-only") and cannot \(what)")
        }
        guard !isClosed else { throw MailError(.storage, scope: .local, "\(location) is closed") }
    }

    // MARK: - MailStore: reading

    public func folders() async throws -> [FolderInfo] {
        if isWritable { await drainWriter() }
        let counts = try folderCounts()
        var out: [FolderInfo] = []
        var seen = Set<FolderPath>()
        for f in try catalog.folders() where viewRun.map({ f.firstRun <= $0 }) ?? true {
            let c = counts[f.id]
            out.append(FolderInfo(path: f.path, messageCount: c?.0 ?? 0, totalSize: c?.1 ?? 0))
            seen.insert(f.path)
        }
        let pending = withState { s -> [(FolderPath, Int, Int64)] in
            var byFolder: [FolderPath: (Int, Int64)] = [:]
            for l in s.newLocations where !l.deleted {
                byFolder[l.folder, default: (0, 0)].0 += 1
                byFolder[l.folder, default: (0, 0)].1 += l.size
            }
            var r = s.newFolders.map { ($0.path, 0, Int64(0)) }
            for i in r.indices { if let v = byFolder[r[i].0] { r[i].1 = v.0; r[i].2 = v.1 } }
            return r
        }
        for (p, n, size) in pending where !seen.contains(p) {
            out.append(FolderInfo(path: p, messageCount: n, totalSize: size))
        }
        if viewRun == nil {
            // Pending appends to folders that are already in the catalog.
            let extra = withState { s in s.newLocations.filter { !$0.deleted } }
            for l in extra {
                if let i = out.firstIndex(where: { $0.path == l.folder }), seen.contains(l.folder) {
                    out[i].messageCount = (out[i].messageCount ?? 0) + 1
                    out[i].totalSize = (out[i].totalSize ?? 0) + l.size
                }
            }
        }
        return out.sorted { $0.path < $1.path }
    }

    private func folderCounts() throws -> [Int64: (Int, Int64)] {
        try catalog.wrap("counting messages") {
            try catalog.db.read { db in
                var sql = "SELECT l.folder_id AS f, COUNT(*) AS n, SUM(m.size) AS s FROM locations l JOIN messages m ON m.id = l.message_id "
                var args: [Int64] = []
                if let r = viewRun {
                    sql += "WHERE l.first_run <= ? AND (l.deleted_run IS NULL OR l.deleted_run > ?) "
                    args = [r, r]
                } else {
                    sql += "WHERE l.deleted_run IS NULL "
                }
                sql += "GROUP BY l.folder_id"
                var out: [Int64: (Int, Int64)] = [:]
                for row in try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args)) {
                    out[row["f"]] = (row["n"], row["s"] ?? 0)
                }
                return out
            }
        }
    }

    public func createFolder(_ path: FolderPath) async throws {
        try requireWritable("create folders")
        withState { s in _ = ensureFolder(path, &s) }
    }

    private func ensureFolder(_ path: FolderPath, _ s: inout SessionState) -> Int64 {
        if let id = s.folderIDs[path] { return id }
        let id = s.nextFolder
        s.nextFolder += 1
        s.folderIDs[path] = id
        s.newFolders.append((id, path))
        s.touched = true
        return id
    }

    private func folderID(_ folder: FolderPath) throws -> Int64 {
        if let id = withState({ $0.folderIDs[folder] }) {
            if let r = viewRun, let f = try catalog.folders().first(where: { $0.id == id }), f.firstRun > r {
                throw notFound(folder)
            }
            return id
        }
        throw notFound(folder)
    }

    private func notFound(_ folder: FolderPath) -> MailError {
        MailError(.notFound, scope: .folder, "folder \(folder) is not in \(location)", folder: folder)
    }

    public func listMessages(in folder: FolderPath, options: ListOptions) async throws -> FolderListing {
        if isWritable { await drainWriter() }
        let fid = try folderID(folder)
        let pendingChanges = withState { s in (s.flagChanges, Set(s.deletions), s.newLocations.filter { $0.folder == folder && !$0.deleted }) }
        var infos: [MessageInfo] = []
        if withState({ s in !s.newFolders.contains { $0.id == fid } }) {
            for l in try catalog.locations(folderID: fid, asOfRun: viewRun) where !pendingChanges.1.contains(l.id) {
                infos.append(MessageInfo(id: MessageID(String(l.id)), size: l.message.size,
                                         flags: pendingChanges.0[l.id] ?? l.flags, internalDate: l.internalDate,
                                         dateSource: l.dateSource, key: l.message.key,
                                         headers: options.includeHeaders ? (l.headers ?? HeaderSummary()) : nil))
            }
        }
        for l in pendingChanges.2 {
            infos.append(MessageInfo(id: MessageID(String(l.id)), size: l.size, flags: l.flags, internalDate: l.internalDate,
                                     dateSource: l.dateSource, key: l.key,
                                     headers: options.includeHeaders ? try pendingHeaders(l.messageID) : nil))
        }
        let next = withState { $0.nextLocation }
        return FolderListing(folder: folder, validity: FolderValidity(uidValidity: uidValidity, uidNext: UInt64(next)),
                             messages: infos)
    }

    public func fetchMessages(_ ids: [MessageID], in folder: FolderPath,
                              _ handler: @Sendable (MessageInfo, MessageBody) async throws -> Void) async throws -> [MessageID] {
        if isWritable { await drainWriter() }
        let fid = try folderID(folder)
        let numeric = ids.compactMap { Int64($0.rawValue) }
        let deletedNow = withState { Set($0.deletions) }
        let flagOverrides = withState { $0.flagChanges }
        var found = try catalog.locations(folderID: fid, asOfRun: viewRun, ids: numeric).filter { !deletedNow.contains($0.id) }
        found += try pendingLocations(Set(numeric), in: folder)
        let foundIDs = Set(found.map { MessageID(String($0.id)) })
        let missing = ids.filter { !foundIDs.contains($0) }
        try await streamLocations(found) { loc, body in
            let info = MessageInfo(id: MessageID(String(loc.id)), size: loc.message.size, flags: flagOverrides[loc.id] ?? loc.flags,
                                   internalDate: loc.internalDate, dateSource: loc.dateSource, key: loc.message.key)
            try await handler(info, body)
        }
        return missing
    }

    private func pendingHeaders(_ messageID: Int64) throws -> HeaderSummary {
        if let h = withState({ $0.newMessageHeaders[messageID]?.summary }) { return h }
        return try catalog.message(id: messageID)?.1 ?? HeaderSummary()
    }

    /// Locations appended in this session, readable once their volume is
    /// sealed: the current volume is sealed here if it holds one of them.
    private func pendingLocations(_ ids: Set<Int64>, in folder: FolderPath) throws -> [LocationRecord] {
        guard viewRun == nil else { return [] }
        let wanted = withState { s in s.newLocations.filter { ids.contains($0.id) && $0.folder == folder && !$0.deleted } }
        guard !wanted.isEmpty else { return [] }
        return try withState { s in
            if let b = s.builder, wanted.contains(where: { w in b.records.contains { $0.id == w.messageID } }) {
                try sealCurrent(&s)
            }
            var out: [LocationRecord] = []
            for w in wanted {
                let fid = s.folderIDs[w.folder] ?? 0
                let message: MessageRecord
                var volumeName: String
                if let v = s.sealed.first(where: { v in v.messages.contains { $0.id == w.messageID } }),
                   let m = v.messages.first(where: { $0.id == w.messageID }) {
                    message = m
                    volumeName = v.record.name
                } else if let (m, _) = try catalog.message(id: w.messageID) {
                    message = m
                    volumeName = ""
                } else {
                    continue
                }
                if volumeName.isEmpty { volumeName = String(message.volumeID) }
                out.append(LocationRecord(id: w.id, folderID: fid, folder: w.folder, flags: w.flags, internalDate: w.internalDate,
                                          dateSource: w.dateSource, firstRun: s.runID, message: message,
                                          volumeName: volumeName, headers: s.newMessageHeaders[w.messageID]?.summary))
            }
            return out
        }
    }

    /// Seals the volume being written (finish + fsync under its temporary name).
    private func sealCurrent(_ s: inout SessionState) throws {
        guard let b = s.builder else { return }
        s.builder = nil
        do {
            let (sha, size, records) = try b.finish(keywordLetters: lettersMap(s))
            let record = VolumeRecord(id: b.volumeID, name: b.name, runID: s.runID, format: b.format, compression: b.compression,
                                      fileSize: size, sha256: sha, messageCount: records.count,
                                      createdAt: Int64(Date().timeIntervalSince1970), replaces: nil)
            s.sealed.append(SealedVolume(builder: b, record: record, messages: records))
        } catch let e as MailError {
            b.abandon()
            s.broken = e
            throw e
        }
    }

    /// Streams the messages of the given locations, opening each volume once
    /// (a message wanted twice in one call costs a second pass).
    func streamLocations(_ locations: [LocationRecord],
                         _ body: (LocationRecord, MessageBody) async throws -> Void) async throws {
        var volumes: [Int64: (record: VolumeRecord, path: String)] = [:]
        for v in try catalog.volumes() { volumes[v.id] = (v, volumesDirectory + "/" + v.name) }
        for v in withState({ $0.sealed }) { volumes[v.record.id] = (v.record, v.builder.tempPath) }
        var left = locations
        while !left.isEmpty {
            var thisPass: [Int64: LocationRecord] = [:]
            var later: [LocationRecord] = []
            for l in left {
                if thisPass[l.messageID] == nil { thisPass[l.messageID] = l } else { later.append(l) }
            }
            let byVolume = Dictionary(grouping: thisPass.values, by: { $0.message.volumeID })
            for vid in byVolume.keys.sorted() {
                guard let locs = byVolume[vid] else { continue }
                guard let (v, vpath) = volumes[vid] else {
                    throw MailError(.corrupt, scope: .local, "the catalog names volume \(vid), which it does not list")
                }
                var byMessage = Dictionary(uniqueKeysWithValues: locs.map { ($0.messageID, $0) })
                let reader = try VolumeMessageReader(path: vpath, volumeName: v.name,
                                                     format: v.format, wanted: locs.map(\.message))
                reader.stopWhenDone = true
                while let (record, stream) = try reader.next() {
                    guard let loc = byMessage.removeValue(forKey: record.id) else { continue }
                    try await body(loc, stream.body)
                }
                if let lost = byMessage.values.first {
                    throw MailError(.corrupt, scope: .local,
                                    "volume \(v.name): entry \(lost.message.entryPath) is missing (\(byMessage.count) message(s) not found)",
                                    hint: "run `mailferry archive check` on the archive")
                }
            }
            left = later
        }
    }

    // MARK: - MailStore: writing

    public func append(to folder: FolderPath, _ request: AppendRequest, body: MessageBody) async throws -> PendingAppend {
        try requireWritable("append")
        let spool: Spool
        do {
            spool = try await Spool.consume(body, directory: volumesDirectory)
        } catch var e as MailError {
            e.folder = e.folder ?? folder
            throw e
        }
        let key = spool.key
        let keptFlags = Flags(request.flags.filter { $0.isSystem || $0.isValidKeyword })
        let dropped = request.flags.keywords.filter { !$0.isValidKeyword }
        if let given = request.key, given != key {
            throw MailError(.refused, scope: .message,
                            "message bytes do not match the key \(given.short) they were sent with (got \(key.short)); not archived",
                            folder: folder)
        }
        let date = request.internalDate ?? InternalDate.now()
        let dateSource: DateSource? = request.internalDate == nil ? .downloadTime : request.dateSource
        let sourceID = request.sourceID
        // The volume writer is one serial sink with a thread of its own.
        // Parallel fetchers spool their bodies concurrently (above), then hand
        // them to the writer's queue in arrival order and go on fetching: tar,
        // compression and writing run beside the fetches, on no thread of the
        // cooperative pool. The queue holds at most `writerQueueDepth` bodies;
        // an appender waits (suspended) for a place. Deduplication is decided
        // in queue order, so the same message delivered by two fetchers at
        // once is stored once. The append resolves once the writer has taken
        // the message (ids, or the error that stopped the run).
        await writerSlots.acquire()
        let outcome = Outcome<Int64>()
        writerQueue.async { [self] in
            outcome.finish(Result { try store(spool, key: key, folder: folder, flags: keptFlags, date: date,
                                              dateSource: dateSource, sourceID: sourceID) })
            writerSlots.release()
        }
        let uidValidity = self.uidValidity
        let size = spool.size
        return PendingAppend {
            let locID = try await outcome.value()
            return AppendResult(id: MessageID(String(locID)), uidValidity: uidValidity, key: key, size: size,
                                droppedFlags: dropped)
        }
    }

    /// Waits until the volume writer has done everything queued before now.
    private func drainWriter() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            writerQueue.async { c.resume() }
        }
    }

    /// The writer's part of an append (on the writer queue): records the
    /// location, and stores the bytes unless the archive holds them already.
    private func store(_ spool: Spool, key: MessageKey, folder: FolderPath, flags keptFlags: Flags, date: InternalDate,
                       dateSource: DateSource?, sourceID: String?) throws -> Int64 {
        return try withState { s in
            if let broken = s.broken { throw broken }
            guard s.folderIDs[folder] != nil || folder.isInbox else { throw notFound(folder) }
            _ = ensureFolder(folder, &s)
            // Looked up under the lock: parallel appenders share this run.
            var existing = s.newMessageIDs[KeySize(key: key, size: spool.size)]
            if existing == nil, s.catalogHoldsMessages {
                existing = try catalog.message(key: key, size: spool.size)
            }
            let messageID: Int64
            if let existing {
                messageID = existing
            } else {
                messageID = s.nextMessage
                s.nextMessage += 1
                let builder: VolumeBuilder
                if let b = s.builder {
                    builder = b
                } else {
                    builder = try VolumeBuilder(directory: volumesDirectory, sequence: s.nextVolume,
                                                format: options.format, compression: options.compression,
                                                level: options.compressionLevel)
                    s.nextVolume += 1
                    if case .writingVolume(let n) = faultPoint { builder.writer.failAfterBytes = n }
                    s.builder = builder
                }
                let letters = assignLetters(keptFlags, &s)
                _ = try builder.add(messageRow: messageID, key: key, spool: spool, folder: folder, flags: keptFlags,
                                    date: date.secondsSinceEpoch, keywordLetters: letters, run: s.runID,
                                    volumeID: builder.volumeID)
                s.newMessageIDs[KeySize(key: key, size: spool.size)] = messageID
                let headers = spool.headers
                s.newMessageHeaders[messageID] = (headers, Catalog.encodeHeaders(headers))
            }
            let id = s.nextLocation
            s.nextLocation += 1
            s.newLocations.append(PendingLocation(id: id, messageID: messageID, folder: folder, flags: keptFlags,
                                                  initialFlags: keptFlags, internalDate: date, dateSource: dateSource,
                                                  sourceID: sourceID, deleted: false, key: key, size: spool.size))
            s.touched = true
            let volumeFull = (s.builder?.writer.bytesWritten ?? 0) >= options.volumeSizeLimit
            if volumeFull || s.newLocations.count >= Self.checkpointEvery {
                do {
                    try commitPending(&s, final: false)
                } catch let e as MailError {
                    s.broken = e
                    throw e
                }
            }
            return id
        }
    }

    /// Keyword → Maildir letter (`a`…`z`), fixed archive-wide on first use.
    private func assignLetters(_ flags: Flags, _ s: inout SessionState) -> [String: Character] {
        for k in flags.keywords {
            let name = k.name.lowercased()
            if s.keywordLetters[k.name] == nil, s.keywordLetters[name] == nil, s.keywordLetters.count < 26 {
                let letter = (s.keywordLetters.values.max() ?? -1) + 1
                s.keywordLetters[k.name] = letter
                s.newKeywords.append((k.name, letter))
            }
        }
        return lettersMap(s)
    }

    private func lettersMap(_ s: SessionState) -> [String: Character] {
        var out: [String: Character] = [:]
        for (k, l) in s.keywordLetters {
            out[k] = Character(UnicodeScalar(UInt8(97 + l)))
        }
        return out
    }

    public func setFlags(_ flags: Flags, _ change: FlagChange, for ids: [MessageID], in folder: FolderPath) async throws {
        try requireWritable("change flags")
        await drainWriter()
        let flags = Flags(flags.filter { $0.isSystem || $0.isValidKeyword })
        let fid = try folderID(folder)
        let numeric = Set(ids.compactMap { Int64($0.rawValue) })
        let stored = try catalog.locations(folderID: fid, asOfRun: nil, ids: Array(numeric))
        func apply(_ old: Flags) -> Flags {
            switch change {
            case .replace: return flags
            case .add: return old.union(flags)
            case .remove: return old.subtracting(flags)
            }
        }
        withState { s in
            for i in s.newLocations.indices where numeric.contains(s.newLocations[i].id) && s.newLocations[i].folder == folder {
                s.newLocations[i].flags = apply(s.newLocations[i].flags)
                s.touched = true
            }
            for l in stored {
                let current = s.flagChanges[l.id] ?? l.flags
                let new = apply(current)
                if new == l.flags {
                    s.flagChanges[l.id] = nil
                    s.flagChangeOrder.removeAll { $0 == l.id }
                } else if new != current {
                    if s.flagChanges[l.id] == nil { s.flagChangeOrder.append(l.id) }
                    s.flagChanges[l.id] = new
                }
                s.touched = true
            }
        }
    }

    public func delete(_ ids: [MessageID], in folder: FolderPath) async throws {
        try requireWritable("record deletions")
        await drainWriter()
        let fid = try folderID(folder)
        let numeric = Set(ids.compactMap { Int64($0.rawValue) })
        let stored = try catalog.locations(folderID: fid, asOfRun: nil, ids: Array(numeric))
        withState { s in
            for i in s.newLocations.indices where numeric.contains(s.newLocations[i].id) && s.newLocations[i].folder == folder {
                s.newLocations[i].deleted = true
            }
            for l in stored where !s.deletions.contains(l.id) {
                s.deletions.append(l.id)
            }
            s.touched = true
        }
    }

    /// Seals this run: the volume (if any message was new) and the catalog,
    /// in one step. Then releases the lock.
    public func close() async throws {
        guard releaseShared() else { return }
        if isWritable { await drainWriter() }
        try closeSync()
    }

    func closeSync() throws {
        lock.lock()
        defer { lock.unlock() }
        guard !isClosed else { return }
        isClosed = true
        defer {
            Self.releaseLock(lockFD, exclusive: isWritable)
            lockFD = -1
        }
        guard isWritable else { return }
        if let broken = state.broken {
            state.builder?.abandon()
            for v in state.sealed { v.builder.abandon() }
            state.builder = nil
            state.sealed = []
            throw MailError(.storage, scope: .local, "\(location): this run could not be recorded: \(broken.message)")
        }
        guard state.touched || recordsEmptyRun else { return }
        try commitPending(&state, final: true)
    }

    /// Seals the volume being written, renames this run's sealed volumes into
    /// place and records everything pending in one catalog transaction. On
    /// failure, the volumes are removed again and the catalog is untouched.
    /// Called by `close()`, and mid-run when a volume reaches its size limit.
    private func commitPending(_ state: inout SessionState, final: Bool) throws {
        var renamed: [String] = []
        do {
            try sealCurrent(&state)
            let s = state
            if final, !s.sealed.isEmpty, case .beforeRename = faultPoint {
                throw MailError(.storage, scope: .local, "injected failure before rename")
            }
            for v in s.sealed {
                guard rename(v.builder.tempPath, v.builder.finalPath) == 0 else {
                    throw MailError(.storage, scope: .local, "cannot rename \(v.builder.tempPath): \(String(cString: strerror(errno)))")
                }
                renamed.append(v.builder.finalPath)
            }
            if !renamed.isEmpty {
                fsyncDirectory(volumesDirectory)
                if final, case .afterRename = faultPoint { throw MailError(.storage, scope: .local, "injected failure after rename") }
            }
            if final, case .duringCommit = faultPoint { throw MailError(.storage, scope: .local, "injected failure during commit") }
            let messages = s.sealed.flatMap(\.messages)
            let commit = RunCommit(
                runID: s.runID, startedAt: s.startedAt, finishedAt: Int64(Date().timeIntervalSince1970),
                source: options.source, volumes: s.sealed.map(\.record), newMessages: messages,
                newMessageHeaders: s.newMessageHeaders, newFolders: s.newFolders,
                folderIDs: s.folderIDs, newLocations: s.newLocations,
                flagChanges: s.flagChangeOrder.compactMap { id in s.flagChanges[id].map { (id, $0) } },
                deletions: s.deletions, newKeywords: s.newKeywords,
                counters: ["next_message": s.nextMessage,
                           "next_folder": s.nextFolder, "next_volume": s.nextVolume])
            try catalog.commit(commit)
            logger.info(final ? "archive run recorded" : "archive run checkpointed", metadata: [
                "run": "\(s.runID)", "volumes": "\(s.sealed.map(\.record.name))", "new_messages": "\(messages.count)",
                "locations": "\(s.newLocations.count)", "flag_changes": "\(s.flagChanges.count)",
                "deletions": "\(s.deletions.count)",
            ])
            // What is committed is read from the catalog from now on.
            if !messages.isEmpty { state.catalogHoldsMessages = true }
            state.sealed = []
            state.newFolders = []
            state.newLocations = []
            state.flagChanges = [:]
            state.flagChangeOrder = []
            state.deletions = []
            state.newKeywords = []
            state.newMessageHeaders = [:]
            state.newMessageIDs = [:]
        } catch {
            state.builder?.abandon()
            for v in state.sealed { v.builder.abandon() }
            state.builder = nil
            state.sealed = []
            for r in renamed { unlink(r) }
            if !renamed.isEmpty { fsyncDirectory(volumesDirectory) }
            throw error
        }
    }
}

func fsyncDirectory(_ path: String) {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if fd >= 0 {
        fsync(fd)
        close(fd)
    }
}

/// At most `limit` holders at a time for async callers, served in arrival
/// order; waiters are suspended, not blocking a thread of the cooperative pool.
final class AsyncSlots: @unchecked Sendable {
    private let lock = NSLock()
    private let limit: Int
    private var held = 0
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var head = 0

    init(limit: Int) { self.limit = max(1, limit) }

    func acquire() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now: Bool = lock.withLock {
                if held < limit, head == waiters.count {
                    held += 1
                    return true
                }
                waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    /// Hands the place to the next waiter, or frees it.
    func release() {
        let next: CheckedContinuation<Void, Never>? = lock.withLock {
            guard head < waiters.count else {
                held -= 1
                waiters.removeAll(keepingCapacity: true)
                head = 0
                return nil
            }
            let c = waiters[head]
            head += 1
            if head >= 64 && head * 2 >= waiters.count {
                waiters.removeFirst(head)
                head = 0
            }
            return c
        }
        next?.resume()
    }
}

/// A value produced once (on any thread) and awaited by any number of tasks.
final class Outcome<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<T, Error>?
    private var waiters: [CheckedContinuation<T, Error>] = []

    func finish(_ r: Result<T, Error>) {
        let ws: [CheckedContinuation<T, Error>] = lock.withLock {
            guard result == nil else { return [] }
            result = r
            defer { waiters = [] }
            return waiters
        }
        for w in ws { w.resume(with: r) }
    }

    func value() async throws -> T {
        try await withCheckedThrowingContinuation { c in
            let r: Result<T, Error>? = lock.withLock {
                if let result { return result }
                waiters.append(c)
                return nil
            }
            if let r { c.resume(with: r) }
        }
    }
}

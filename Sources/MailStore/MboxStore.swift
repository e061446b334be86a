#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import MailModel
import NIOCore
import NIOConcurrencyHelpers

/// A folder of mboxrd files, one per folder.
///
///     ROOT/INBOX                     folder INBOX (an mboxrd file)
///     ROOT/Archive                   folder "Archive"
///     ROOT/Archive.sbd/2024          folder "Archive/2024" (children live in NAME.sbd/, as Thunderbird does)
///     ROOT/.Archive.mailferry        the index of "Archive" (ids, flags; see below)
///     ROOT/Archive.lock              dot-lock while a writer works (mutt, procmail and Dovecot honour it)
///
/// Folder name components are escaped as `FolderNameEscaping` documents
/// (`%XX` for `/`, `%`, NUL and control characters and a leading `.`; a
/// trailing `.sbd`, `.lock` or `.msf` gets its dot escaped), so no name leaves
/// ROOT and none collides with an index, a lock or a child directory. Plain
/// directories written by other tools (Dovecot's mbox layout) are read as
/// containers too.
///
/// **Messages** are written mboxrd (see `MboxFormat`): a `From MAILER-DAEMON
/// <INTERNALDATE as asctime, UTC>` line, the message with every `>*From `
/// line given one more `>`, a LF if the message did not end with one, and a
/// blank separator line.
///
/// **Flags** are written twice: as `Status:`/`X-Status:`/`X-Keywords:` lines
/// placed right after the `From ` line, so that mutt, Thunderbird and Python's
/// `mailbox` see them; and in the hidden index file `.NAME.mailferry`, which
/// records for each message its id, where it starts, how many bytes of
/// status lines were put in front of it, and whether a LF was added at its
/// end. Reading strips exactly those bytes again, so a message's bytes (and
/// its key) never change. A message with no flags gets no status lines.
///
/// The index is a text file:
///
///     mailferry-mbox 1
///     uidvalidity 1732233600
///     uidnext 4
///     m UID OFFSET LENGTH STATUSBYTES ADDEDLF FLAG...    one per message, in file order
///     p UID OFFSET                                        an append in progress
///
/// An append writes a `p` line (fsync), then the message at the end of the
/// mbox (fsync), then its `m` line (fsync). A `p` without its `m` means the
/// append died: the partial message is cut off by the next writer and is
/// never listed. Deleting and changing flags rewrite the whole mbox into a
/// temporary file (fsync) and rename it into place, then do the same for
/// the index. Every writer holds `NAME.lock` (created with O_EXCL; a lock
/// whose process is gone is broken).
///
/// An mbox without an index (written by another tool) is read as it is: ids
/// are message numbers and flags come from its Status headers; the index is
/// created on the first change. When another tool rewrote a file behind an
/// index's back, the index is rebuilt with a new UIDVALIDITY.
public final class MboxStore: MailStore, @unchecked Sendable {
    public let root: String
    public let location: StoreLocation
    public var capabilities: StoreCapabilities { .localTree }

    /// How long to wait for another program's lock before giving up, in seconds.
    public var lockTimeout: Double {
        get { lockWait.withLockedValue { $0 } }
        set { lockWait.withLockedValue { $0 = newValue } }
    }
    private let lockWait = NIOLockedValueBox<Double>(10)

    private let foreignNames = NIOLockedValueBox<[FolderPath: String]>([:])

    /// Scans by file identity (device, inode, size, mtime of the mbox and its
    /// index), so a folder is read once while nothing changes it.
    struct CacheKey: Hashable { var mbox: Posix.FileStat; var index: Posix.FileStat? }
    private let cache = NIOLockedValueBox<[String: (CacheKey, FolderIndex)]>([:])

    public init(root: String, create: Bool) throws {
        var r = root
        while r.count > 1, r.hasSuffix("/") { r.removeLast() }
        guard !r.isEmpty else { throw MailError(.usage, scope: .local, "mbox: needs a path") }
        self.root = r
        self.location = .mbox(path: r)
        if let st = try Posix.lstat(r) {
            guard st.isDirectory else {
                throw MailError(.usage, scope: .local, "mbox:\(r) is not a directory",
                                hint: "mbox: names a folder of mbox files, one per mail folder")
            }
        } else if !create {
            throw MailError(.notFound, scope: .local, "no mbox folder at \(r)")
        } else {
            try Posix.makeDirectories(r)
        }
    }

    // MARK: Paths

    struct Paths {
        var dir: String
        var name: String
        var file: String { dir + "/" + name }
        var index: String { dir + "/." + name + ".mailferry" }
        var lock: String { dir + "/" + name + ".lock" }
        var children: String { dir + "/" + name + ".sbd" }
        func temp(_ what: String) -> String { dir + "/." + name + ".mailferry-\(what)-\(Posix.pid)" }
    }

    func paths(for folder: FolderPath) -> Paths {
        if let f = foreignNames.withLockedValue({ $0[folder] }), let slash = f.lastIndex(of: "/") {
            return Paths(dir: String(f[..<slash]), name: String(f[f.index(after: slash)...]))
        }
        var dir = root
        let comps = folder.components
        for (i, c) in comps.enumerated() {
            let name = i == 0 && c == "INBOX" ? "INBOX" : FolderNameEscaping.escape(c, flavor: .mbox)
            if i == comps.count - 1 { return Paths(dir: dir, name: name) }
            dir += "/" + name + ".sbd"
        }
        return Paths(dir: root, name: "INBOX")
    }

    // MARK: Folders

    public func folders() async throws -> [FolderInfo] {
        var out: [FolderPath: FolderInfo] = [:]
        var foreign: [FolderPath: String] = [:]
        func component(_ name: String, top: Bool) -> String {
            top && name == "INBOX" ? "INBOX" : FolderNameEscaping.component(forDiskName: name, flavor: .mbox)
        }
        func walk(_ dir: String, _ prefix: [String], depth: Int) throws {
            guard depth < 64 else { return }
            for e in try Posix.listDirectory(dir) where !e.name.hasPrefix(".") {
                let name = e.name
                switch e.type {
                case .file:
                    if name.hasSuffix(".lock") || name.hasSuffix(".msf") { continue }
                    guard let path = FolderPath(components: prefix + [component(name, top: prefix.isEmpty)]) else { continue }
                    let file = dir + "/" + name
                    if paths(for: path).file != file { foreign[path] = file }
                    let st = try Posix.lstat(file)
                    out[path] = FolderInfo(path: path, selectable: true, messageCount: nil, totalSize: st?.size)
                case .directory:
                    let isSbd = name.hasSuffix(".sbd") && name.count > 4
                    let base = isSbd ? String(name.dropLast(4)) : name
                    guard let path = FolderPath(components: prefix + [component(base, top: prefix.isEmpty)]) else { continue }
                    if out[path] == nil { out[path] = FolderInfo(path: path, selectable: false) }
                    if !isSbd { foreign[path] = dir + "/" + name + "/" }
                    try walk(dir + "/" + name, path.components, depth: depth + 1)
                default:
                    continue
                }
            }
        }
        try walk(root, [], depth: 0)
        foreignNames.withLockedValue { m in
            for (k, v) in foreign where !v.hasSuffix("/") { m[k] = v }
        }
        // Counts: one scan per file (cached by file identity).
        var result: [FolderInfo] = []
        for (path, var info) in out {
            if info.selectable {
                let index = try loadIndex(path, forWriting: false)
                info.messageCount = index.messages.count
                info.totalSize = index.messages.reduce(0) { $0 + $1.size }
            }
            result.append(info)
        }
        return result.sorted { $0.path < $1.path }
    }

    public func createFolder(_ path: FolderPath) async throws {
        for p in path.ancestors + [path] {
            let ps = paths(for: p)
            try Posix.makeDirectories(ps.dir)
            if try Posix.lstat(ps.file) == nil {
                let fd: Int32
                do { fd = try Posix.createExclusive(ps.file) } catch let e as MailError where e.kind == .storage {
                    if try Posix.lstat(ps.file) != nil { continue }
                    throw e.with(folder: p)
                }
                try Posix.fsync(fd, path: ps.file)
                sysClose(fd)
                try writeIndexFile(ps, uidValidity: UInt64(Posix.now().seconds), uidNext: 1, records: [])
            }
        }
    }

    // MARK: The index

    struct IndexedMessage: Sendable {
        var uid: UInt64
        var entry: MboxEntry
        var statusBytes: Int64
        var addedLF: Bool
        var flags: Flags
        /// The message's own bytes.
        var contentStart: Int64 { entry.afterFromLine + statusBytes }
        var contentEnd: Int64 { entry.contentEnd - (addedLF ? 1 : 0) }
        var size: Int64 { contentEnd - contentStart - (entry.unquote ? Int64(entry.quotedLines) : 0) }
        var internalDate: InternalDate? { MboxFormat.date(ofFromLine: entry.fromLine) }
    }

    struct FolderIndex: Sendable {
        var uidValidity: UInt64?
        var uidNext: UInt64
        var messages: [IndexedMessage]
        /// An append that never completed: its bytes start here.
        var danglingAppend: Int64?
        var hasIndexFile: Bool
        var fileSize: Int64
        /// The index file does not describe every message (or does not exist).
        var indexStale = true
    }

    struct IndexRecord {
        var uid: UInt64
        var offset: Int64
        var length: Int64
        var statusBytes: Int64
        var addedLF: Bool
        var flags: Flags
    }

    struct IndexFile {
        var uidValidity: UInt64
        var uidNext: UInt64
        var records: [IndexRecord]
        var pending: (uid: UInt64, offset: Int64)?
    }

    private func readIndexFile(_ ps: Paths, folder: FolderPath) throws -> IndexFile? {
        let fd: Int32
        do { fd = try Posix.openRead(ps.index) } catch let e as MailError where e.kind == .notFound { return nil }
        defer { sysClose(fd) }
        var bytes = [UInt8]()
        var off: Int64 = 0
        while true {
            let c = try Posix.pread(fd, count: Posix.chunkSize, at: off, path: ps.index)
            if c.readableBytes == 0 { break }
            off += Int64(c.readableBytes)
            bytes += c.readableBytesView
        }
        func bad(_ why: String) -> MailError {
            MailError(.corrupt, scope: .folder, "\(ps.index) is damaged: \(why)",
                      hint: "delete it to read \(ps.file) as a plain mbox (ids and stored flags are then rebuilt)",
                      folder: folder)
        }
        var lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: true).map { String(decoding: $0, as: UTF8.self) }
        guard lines.first == "mailferry-mbox 1" else { throw bad("unknown header") }
        lines.removeFirst()
        var file = IndexFile(uidValidity: 0, uidNext: 1, records: [], pending: nil)
        for line in lines {
            let f = line.split(separator: " ").map(String.init)
            guard let kind = f.first else { continue }
            switch kind {
            case "uidvalidity":
                guard f.count == 2, let v = UInt64(f[1]) else { throw bad("bad uidvalidity line") }
                file.uidValidity = v
            case "uidnext":
                guard f.count == 2, let v = UInt64(f[1]) else { throw bad("bad uidnext line") }
                file.uidNext = max(file.uidNext, v)
            case "p":
                guard f.count == 3, let uid = UInt64(f[1]), let off = Int64(f[2]) else { throw bad("bad pending line") }
                file.pending = (uid, off)
                file.uidNext = max(file.uidNext, uid + 1)
            case "m":
                guard f.count >= 6, let uid = UInt64(f[1]), let off = Int64(f[2]), let len = Int64(f[3]),
                      let sb = Int64(f[4]), f[5] == "0" || f[5] == "1" else { throw bad("bad message line '\(line)'") }
                let flags = Flags(f.dropFirst(6).map { Flag(Self.unescapeFlag($0)) })
                file.records.append(IndexRecord(uid: uid, offset: off, length: len, statusBytes: sb, addedLF: f[5] == "1", flags: flags))
                if let p = file.pending, p.uid == uid { file.pending = nil }
                file.uidNext = max(file.uidNext, uid + 1)
            default:
                throw bad("unknown line '\(line.prefix(40))'")
            }
        }
        return file
    }

    private static func escapeFlag(_ s: String) -> String {
        var out = ""
        for u in s.utf8 {
            if u <= 0x20 || u == UInt8(ascii: "%") || u >= 0x7F {
                out += "%" + String(u, radix: 16, uppercase: true).leftPad(2)
            } else {
                out.append(Character(Unicode.Scalar(u)))
            }
        }
        return out
    }

    private static func unescapeFlag(_ s: String) -> String {
        percentDecode(s)
    }

    private static func percentDecode(_ s: String) -> String {
        let b = Array(s.utf8)
        var out = [UInt8]()
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "%"), i + 2 < b.count, let v = UInt8(String(decoding: b[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) {
                out.append(v)
                i += 3
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Scans the folder's file and joins it with its index.
    private func buildIndex(_ ps: Paths, folder: FolderPath, fd: Int32) throws -> FolderIndex {
        let st = try Posix.fstat(fd, path: ps.file)
        let key = CacheKey(mbox: st, index: try Posix.lstat(ps.index))
        if let (k, cached) = cache.withLockedValue({ $0[ps.file] }), k == key { return cached }
        let index = try scanIndex(ps, folder: folder, fd: fd, st: st)
        cache.withLockedValue { $0[ps.file] = (key, index) }
        return index
    }

    private func scanIndex(_ ps: Paths, folder: FolderPath, fd: Int32, st: Posix.FileStat) throws -> FolderIndex {
        let file = try readIndexFile(ps, folder: folder)
        let scanner = MboxScanner(fd: fd, path: ps.file, fileSize: st.size, useContentLength: file == nil)
        var entries: [MboxEntry]
        do { entries = try scanner.scan() } catch var e as MailError { e.folder = folder; throw e }

        var index = FolderIndex(uidValidity: nil, uidNext: 1, messages: [], danglingAppend: nil,
                                hasIndexFile: file != nil, fileSize: st.size)
        guard let file else {
            // A plain mbox: message numbers as ids, flags from its headers.
            for (i, e) in entries.enumerated() {
                index.messages.append(IndexedMessage(uid: UInt64(i + 1), entry: e, statusBytes: 0, addedLF: false, flags: e.headerFlags))
            }
            index.uidNext = UInt64(entries.count + 1)
            return index
        }
        if let p = file.pending {
            index.danglingAppend = p.offset
            entries.removeAll { $0.fromOffset >= p.offset }
        }
        // The index must describe the first entries exactly; others were appended by other tools.
        var consistent = file.records.count <= entries.count
        if consistent {
            for (r, e) in zip(file.records, entries) where r.offset != e.fromOffset || r.length != e.length {
                consistent = false
                break
            }
        }
        if consistent {
            for (r, e) in zip(file.records, entries) {
                index.messages.append(IndexedMessage(uid: r.uid, entry: e, statusBytes: r.statusBytes, addedLF: r.addedLF, flags: r.flags))
            }
            var next = file.uidNext
            for e in entries.dropFirst(file.records.count) {
                index.messages.append(IndexedMessage(uid: next, entry: e, statusBytes: 0, addedLF: false, flags: e.headerFlags))
                next += 1
            }
            index.uidValidity = file.uidValidity
            index.uidNext = next
            index.indexStale = entries.count != file.records.count
        } else {
            if let last = file.records.last, last.offset + last.length > st.size,
               zip(file.records.filter({ $0.offset + $0.length <= st.size }), entries)
                .allSatisfy({ $0.offset == $1.fromOffset && $0.length == $1.length }) {
                throw MailError(.corrupt, scope: .folder,
                                "\(ps.file) is truncated: it has \(st.size) bytes, its index \(ps.index) records \(last.offset + last.length)",
                                hint: "restore the file from a backup, or delete the index to read what is left", folder: folder)
            }
            // Rewritten behind our back: ids are void, flags come from the headers.
            for (i, e) in entries.enumerated() {
                index.messages.append(IndexedMessage(uid: UInt64(i + 1), entry: e, statusBytes: 0, addedLF: false, flags: e.headerFlags))
            }
            index.uidValidity = max(file.uidValidity + 1, UInt64(Posix.now().seconds))
            index.uidNext = UInt64(entries.count + 1)
        }
        // Sanity: every message must lie inside its entry.
        for m in index.messages where m.contentStart > m.contentEnd || m.contentEnd > m.entry.entryEnd {
            throw MailError(.corrupt, scope: .folder, "\(ps.file) does not match its index \(ps.index) at byte \(m.entry.fromOffset)",
                            hint: "delete \(ps.index) to read the file as a plain mbox", folder: folder)
        }
        return index
    }

    private func openFolderFile(_ folder: FolderPath) throws -> (Paths, Int32) {
        let ps = paths(for: folder)
        do {
            return (ps, try Posix.openRead(ps.file))
        } catch let e as MailError where e.kind == .notFound {
            throw MailError(.notFound, scope: .folder, "folder \(folder) does not exist in \(location)", folder: folder)
        }
    }

    /// Reads a folder's index under its lock (a read sees no half-written append).
    private func loadIndex(_ folder: FolderPath, forWriting: Bool) throws -> FolderIndex {
        let (ps, fd) = try openFolderFile(folder)
        defer { sysClose(fd) }
        return try withLock(ps, folder: folder, required: false) { try buildIndex(ps, folder: folder, fd: fd) }
    }

    // MARK: Locking

    private func withLock<T>(_ ps: Paths, folder: FolderPath, required: Bool, _ body: () throws -> T) throws -> T {
        let lockPath = ps.lock
        var attempts = 0
        while true {
            let fd = lockPath.withCString { open($0, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
            if fd >= 0 {
                let pidText = Array("\(Posix.pid)\n".utf8)
                try? Posix.writeAll(fd, pidText, path: lockPath)
                sysClose(fd)
                defer { try? Posix.unlink(lockPath) }
                return try body()
            }
            let err = errno
            if err != EEXIST {
                // A read-only place cannot be locked; reading goes ahead, writing cannot.
                if !required, err == EACCES || err == EROFS || err == EPERM { return try body() }
                throw Posix.error("lock", lockPath, err, folder: folder)
            }
            if try breakStaleLock(lockPath) { continue }
            attempts += 1
            if Double(attempts) * 0.05 > lockTimeout {
                throw MailError(.storage, scope: .folder, "\(ps.file) is locked by another program (\(lockPath))",
                                hint: "wait for it to finish, or remove \(lockPath) if nothing is using the file",
                                folder: folder)
            }
            usleep(50_000)
        }
    }

    /// Removes a lock whose process (on this host) is gone, or that is over 10 minutes old.
    private func breakStaleLock(_ path: String) throws -> Bool {
        guard let st = try Posix.lstat(path) else { return true }
        var stale = Posix.now().seconds - st.mtime > 600
        if !stale, let fd = try? Posix.openRead(path) {
            defer { sysClose(fd) }
            if let c = try? Posix.pread(fd, count: 32, at: 0, path: path),
               let pid = Int32(String(decoding: c.readableBytesView, as: UTF8.self).trimmingCharacters().replacingNewlines()),
               pid > 0, kill(pid, 0) != 0, errno == ESRCH {
                stale = true
            }
        }
        if stale { try Posix.unlink(path) }
        return stale
    }

    // MARK: Reading

    public func listMessages(in folder: FolderPath, options: ListOptions) async throws -> FolderListing {
        let (ps, fd) = try openFolderFile(folder)
        defer { sysClose(fd) }
        let index = try withLock(ps, folder: folder, required: false) { try buildIndex(ps, folder: folder, fd: fd) }
        var messages: [MessageInfo] = []
        for m in index.messages {
            var info = MessageInfo(id: MessageID(String(m.uid)), size: m.size, flags: m.flags,
                                   internalDate: m.internalDate, dateSource: m.internalDate == nil ? nil : .stored)
            if options.includeHeaders {
                let reader = bodyReader(fd: dupFD(fd), ps: ps, message: m, folder: folder)
                var hr = HeaderReader()
                while let chunk = try reader.next() {
                    if chunk.withUnsafeReadableBytes({ hr.feed($0) }) { break }
                }
                reader.close()
                info.headers = hr.finish()
            }
            messages.append(info)
        }
        return FolderListing(folder: folder, validity: FolderValidity(uidValidity: index.uidValidity, uidNext: index.uidNext),
                             messages: messages)
    }

    private func dupFD(_ fd: Int32) -> Int32 { dup(fd) }

    private func bodyReader(fd: Int32, ps: Paths, message m: IndexedMessage, folder: FolderPath) -> FileChunkReader {
        FileChunkReader(fd: fd, path: ps.file, start: m.contentStart, end: m.contentEnd, folder: folder,
                        messageID: String(m.uid), filter: m.entry.unquote ? FromUnquoter() : nil)
    }

    public func fetchMessages(
        _ ids: [MessageID], in folder: FolderPath,
        _ handler: @Sendable (MessageInfo, MessageBody) async throws -> Void
    ) async throws -> [MessageID] {
        let (ps, fd) = try openFolderFile(folder)
        defer { sysClose(fd) }
        let index = try withLock(ps, folder: folder, required: false) { try buildIndex(ps, folder: folder, fd: fd) }
        var byUID: [String: IndexedMessage] = [:]
        for m in index.messages { byUID[String(m.uid)] = m }
        var missing: [MessageID] = []
        for id in ids {
            guard let m = byUID[id.rawValue] else { missing.append(id); continue }
            let dfd = dup(fd)
            guard dfd >= 0 else { throw Posix.error("read", ps.file, errno, folder: folder) }
            let reader = bodyReader(fd: dfd, ps: ps, message: m, folder: folder)
            defer { reader.close() }
            let info = MessageInfo(id: id, size: m.size, flags: m.flags, internalDate: m.internalDate,
                                   dateSource: m.internalDate == nil ? nil : .stored)
            try await handler(info, MessageBody(size: m.size) { try reader.next() })
        }
        return missing
    }

    // MARK: Writing

    /// Writes one mboxrd entry; returns (entry bytes, status bytes, added LF, hasher).
    private func writeEntry(fd: Int32, path: String, fromLine: [UInt8], flags: Flags,
                            next: () async throws -> ByteBuffer?) async throws -> (Int64, Int64, Bool, MessageHasher, Int) {
        var written: Int64 = 0
        var buf = [UInt8]()
        buf.reserveCapacity(Posix.chunkSize + 1024)
        func emit(_ bytes: [UInt8]) throws {
            try Posix.writeAll(fd, bytes, path: path)
            written += Int64(bytes.count)
        }
        try emit(fromLine)
        let status = MboxFormat.statusLines(flags)
        try emit(status)
        var quoter = FromQuoter()
        var hasher = MessageHasher()
        while let chunk = try await next() {
            chunk.withUnsafeReadableBytes { p in
                hasher.update(p)
                quoter.process(p, into: &buf)
            }
            if buf.count >= Posix.chunkSize {
                try emit(buf)
                buf.removeAll(keepingCapacity: true)
            }
        }
        quoter.flush(into: &buf)
        let addedLF = quoter.lastByte != 0x0A
        if addedLF { buf.append(0x0A) }
        buf.append(0x0A)  // the blank separator line
        try emit(buf)
        return (written, Int64(status.count), addedLF, hasher, quoter.quoted)
    }

    private func indexLine(_ r: IndexRecord) -> String {
        "m \(r.uid) \(r.offset) \(r.length) \(r.statusBytes) \(r.addedLF ? 1 : 0)"
            + r.flags.sorted.map { " " + Self.escapeFlag($0.name) }.joined() + "\n"
    }

    private func appendToIndex(_ ps: Paths, _ text: String) throws {
        let fd = try Posix.openAppend(ps.index)
        defer { sysClose(fd) }
        try Posix.writeAll(fd, Array(text.utf8), path: ps.index)
        try Posix.fsync(fd, path: ps.index)
    }

    /// Writes a complete index atomically.
    private func writeIndexFile(_ ps: Paths, uidValidity: UInt64, uidNext: UInt64, records: [IndexRecord]) throws {
        var text = "mailferry-mbox 1\nuidvalidity \(uidValidity)\nuidnext \(uidNext)\n"
        for r in records { text += indexLine(r) }
        let tmp = ps.temp("index")
        try? Posix.unlink(tmp)
        let fd = try Posix.createExclusive(tmp)
        var open = true
        defer { if open { sysClose(fd) }; try? Posix.unlink(tmp) }
        try Posix.writeAll(fd, Array(text.utf8), path: tmp)
        try Posix.fsync(fd, path: tmp)
        sysClose(fd)
        open = false
        try Posix.rename(tmp, ps.index)
        try Posix.fsyncDirectory(ps.dir)
    }

    private func records(of index: FolderIndex) -> [IndexRecord] {
        index.messages.map {
            IndexRecord(uid: $0.uid, offset: $0.entry.fromOffset, length: $0.entry.length, statusBytes: $0.statusBytes,
                        addedLF: $0.addedLF, flags: $0.flags)
        }
    }

    public func append(to folder: FolderPath, _ request: AppendRequest, body: MessageBody) async throws -> PendingAppend {
        let (ps, rfd) = try openFolderFile(folder)
        sysClose(rfd)
        // The lock is taken and released around synchronous steps; the body
        // is streamed in between while the lock file is held by us.
        try acquire(ps, folder: folder)
        defer { release(ps) }
        let fd = try Posix.openAppend(ps.file)
        var fdOpen = true
        defer { if fdOpen { sysClose(fd) } }
        var index = try Posix.openRead(ps.file).closingAfter { try buildIndex(ps, folder: folder, fd: $0) }
        // Cut off a partial append left by a crash.
        if let d = index.danglingAppend {
            guard ftruncate(fd, off_t(d)) == 0 else { throw Posix.error("repair", ps.file, errno, folder: folder) }
            index.danglingAppend = nil
            index.fileSize = d
        }
        let uidValidity = index.uidValidity ?? UInt64(Posix.now().seconds)
        if index.indexStale || index.uidValidity != uidValidity {
            // First change to a foreign file, ids given to messages other
            // tools appended, or a rebuilt index: write it out whole.
            try writeIndexFile(ps, uidValidity: uidValidity, uidNext: index.uidNext, records: records(of: index))
        }
        let uid = index.uidNext
        let offset = index.fileSize
        try appendToIndex(ps, "p \(uid) \(offset)\n")

        let flags = Flags(request.flags.filter { $0.isSystem || $0.isValidKeyword })
        let dropped = request.flags.filter { $0.isKeyword && !$0.isValidKeyword }
        let iterator = BodyIterator(body)
        let fromLine = MboxFormat.fromLine(date: request.internalDate ?? .now())
        let (length, statusBytes, addedLF, hasher, quoted) = try await writeEntry(
            fd: fd, path: ps.file, fromLine: fromLine, flags: flags,
            next: { try await iterator.next() })
        try Posix.fsync(fd, path: ps.file)
        sysClose(fd)
        fdOpen = false
        let record = IndexRecord(uid: uid, offset: offset, length: length, statusBytes: statusBytes, addedLF: addedLF, flags: flags)
        try appendToIndex(ps, indexLine(record) + "uidnext \(uid + 1)\n")
        // Keep the cached scan current instead of reading the file again.
        if let mst = try Posix.lstat(ps.file) {
            let entryEnd = offset + length
            let entry = MboxEntry(fromOffset: offset, fromLine: Array(fromLine.dropLast()), afterFromLine: offset + Int64(fromLine.count),
                                  entryEnd: entryEnd, contentEnd: entryEnd - 1, unquote: true, quotedLines: quoted, headerFlags: [])
            index.messages.append(IndexedMessage(uid: uid, entry: entry, statusBytes: statusBytes, addedLF: addedLF, flags: flags))
            index.uidNext = uid + 1
            index.uidValidity = uidValidity
            index.hasIndexFile = true
            index.indexStale = false
            index.fileSize = entryEnd
            let key = CacheKey(mbox: mst, index: try Posix.lstat(ps.index))
            cache.withLockedValue { $0[ps.file] = (key, index) }
        }
        return .done(AppendResult(id: MessageID(String(uid)), uidValidity: uidValidity, key: hasher.finalize(),
                                  size: hasher.rawCount, droppedFlags: dropped))
    }

    private func acquire(_ ps: Paths, folder: FolderPath) throws {
        let lockPath = ps.lock
        var attempts = 0
        while true {
            let fd = lockPath.withCString { open($0, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
            if fd >= 0 {
                try? Posix.writeAll(fd, Array("\(Posix.pid)\n".utf8), path: lockPath)
                sysClose(fd)
                return
            }
            let err = errno
            guard err == EEXIST else { throw Posix.error("lock", lockPath, err, folder: folder) }
            if try breakStaleLock(lockPath) { continue }
            attempts += 1
            if Double(attempts) * 0.05 > lockTimeout {
                throw MailError(.storage, scope: .folder, "\(ps.file) is locked by another program (\(lockPath))",
                                hint: "wait for it to finish, or remove \(lockPath) if nothing is using the file",
                                folder: folder)
            }
            usleep(50_000)
        }
    }

    private func release(_ ps: Paths) { try? Posix.unlink(ps.lock) }

    /// Rewrites a folder's file with `transform` applied to each message's
    /// flags (nil drops the message), then its index; both atomically.
    private func rewrite(_ folder: FolderPath, _ transform: (IndexedMessage) -> Flags?) async throws {
        let (ps, fd) = try openFolderFile(folder)
        defer { sysClose(fd) }
        try acquire(ps, folder: folder)
        defer { release(ps) }
        // Re-open under the lock: another writer may have replaced the file.
        let lfd = try Posix.openRead(ps.file)
        defer { sysClose(lfd) }
        let index = try buildIndex(ps, folder: folder, fd: lfd)
        var changes = false
        var plan: [(IndexedMessage, Flags?)] = []
        for m in index.messages {
            let f = transform(m)
            if f != m.flags { changes = true }
            plan.append((m, f))
        }
        guard changes || index.danglingAppend != nil else { return }
        let tmp = ps.temp("rewrite")
        try? Posix.unlink(tmp)
        let out = try Posix.createExclusive(tmp)
        var outOpen = true
        defer { if outOpen { sysClose(out) }; try? Posix.unlink(tmp) }
        var offset: Int64 = 0
        var records: [IndexRecord] = []
        for (m, f) in plan {
            guard let flags = f else { continue }
            let dfd = dup(lfd)
            guard dfd >= 0 else { throw Posix.error("read", ps.file, errno, folder: folder) }
            let reader = bodyReader(fd: dfd, ps: ps, message: m, folder: folder)
            defer { reader.close() }
            let (length, sb, addedLF, _, _) = try await writeEntry(fd: out, path: tmp, fromLine: m.entry.fromLine + [0x0A],
                                                               flags: flags, next: { try reader.next() })
            records.append(IndexRecord(uid: m.uid, offset: offset, length: length, statusBytes: sb, addedLF: addedLF, flags: flags))
            offset += length
        }
        try Posix.fsync(out, path: tmp)
        sysClose(out)
        outOpen = false
        let uidValidity = index.uidValidity ?? UInt64(Posix.now().seconds)
        // The index first names the new layout under a temporary name; the
        // mbox is renamed into place, then the index. A crash between the two
        // renames leaves an index that no longer matches: it is then rebuilt
        // (new UIDVALIDITY) and no message is lost.
        try Posix.rename(tmp, ps.file)
        try Posix.fsyncDirectory(ps.dir)
        try writeIndexFile(ps, uidValidity: uidValidity, uidNext: index.uidNext, records: records)
    }

    public func setFlags(_ flags: Flags, _ change: FlagChange, for ids: [MessageID], in folder: FolderPath) async throws {
        let wanted = Set(ids.map(\.rawValue))
        let valid = Flags(flags.filter { $0.isSystem || $0.isValidKeyword })
        try await rewrite(folder) { m in
            guard wanted.contains(String(m.uid)) else { return m.flags }
            switch change {
            case .replace: return valid
            case .add: return m.flags.union(valid)
            case .remove: return m.flags.subtracting(valid)
            }
        }
    }

    public func delete(_ ids: [MessageID], in folder: FolderPath) async throws {
        let wanted = Set(ids.map(\.rawValue))
        try await rewrite(folder) { m in wanted.contains(String(m.uid)) ? nil : m.flags }
    }

    public func close() async throws {}
}

/// Reads a `MessageBody` chunk by chunk from a closure.
final class BodyIterator: @unchecked Sendable {
    private var iterator: MessageBody.AsyncIterator
    init(_ body: MessageBody) { iterator = body.makeAsyncIterator() }
    func next() async throws -> ByteBuffer? { try await iterator.next() }
}

extension Int32 {
    /// Runs `body` with this file descriptor, then closes it.
    func closingAfter<T>(_ body: (Int32) throws -> T) rethrows -> T {
        defer { sysClose(self) }
        return try body(self)
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
    func replacingNewlines() -> String { String(filter { $0 != "\n" && $0 != "\r" }) }
}

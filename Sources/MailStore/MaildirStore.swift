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

/// A tree of Maildirs, one per folder, laid out as Dovecot's
/// `mail_location = maildir:ROOT:LAYOUT=fs` expects (add `:UTF-8` to that
/// setting so Dovecot reads non-ASCII names as the UTF-8 we write).
///
///     ROOT/cur ROOT/new ROOT/tmp          INBOX (the root itself, Dovecot's default)
///     ROOT/dovecot-keywords               INBOX's keyword letters
///     ROOT/Archive/cur|new|tmp            folder "Archive"
///     ROOT/Archive/2024/cur|new|tmp       folder "Archive/2024"
///     ROOT/INBOX/Lists/cur|new|tmp        folder "INBOX/Lists" (INBOX's children)
///
/// Folder name components are escaped as `FolderNameEscaping` documents (`%XX`
/// for `/`, `%`, NUL and control characters, a leading `.`, and names that
/// collide with `cur`/`new`/`tmp`/`dovecot*`), so no name climbs out of ROOT.
/// A directory without `cur/` is a container (listed as not selectable).
/// Symbolic links are not followed.
///
/// Messages are files named `SECONDS.M<usec>P<pid>Q<n>.HOST,S=SIZE:2,FLAGS`:
/// - the part before `:2,` is the message's id; it stays the same when flags change;
/// - `S=` is the exact byte size (Dovecot uses it to skip a stat);
/// - FLAGS are, in ASCII order, `D` \Draft, `F` \Flagged, `P` passed (kept, no
///   IMAP meaning), `R` \Answered, `S` \Seen, `T` \Deleted, then lower-case
///   letters `a`–`z` for keywords, numbered 0–25 by the folder's
///   `dovecot-keywords` file (`N name` per line), exactly as Dovecot keeps them.
///   A folder holds at most 26 keywords; more are reported as dropped.
/// - the file's mtime is the INTERNALDATE.
///
/// Writes stream into `tmp/` and get their mtime; before an append's result
/// is reported the file is fsynced, moved into `cur/` and `cur/` is fsynced,
/// for many appends at once (`MaildirCommitter`). Files are 0600, directories 0700.
public final class MaildirStore: MailStore, @unchecked Sendable {
    public let root: String
    public let location: StoreLocation
    /// Appends hash the bytes as they are written (`keysWrittenBytes`).
    public var capabilities: StoreCapabilities { StoreCapabilities.localTree.union(.keysWrittenBytes) }

    /// Serialises keyword-file updates within this process.
    private let keywordLock = NIOLock()
    /// Folders seen on disk under names `escape` would not produce.
    private let foreignNames = NIOLockedValueBox<[FolderPath: String]>([:])

    private static let counter = NIOLockedValueBox<UInt64>(0)
    /// Folders `append` has found complete (cur/, new/, tmp/), by folder.
    private let appendFolders = NIOLockedValueBox<[FolderPath: String]>([:])
    /// Appends written to `tmp/`, made durable in `cur/` in batches.
    private let committer = MaildirCommitter()
    private static let host: String = {
        // '/' and ':' cannot appear in a Maildir file name's host part.
        var out = ""
        for ch in Posix.hostName() {
            switch ch {
            case "/": out += "\\057"
            case ":": out += "\\072"
            case ",": out += "\\054"
            default: out.append(ch)
            }
        }
        return out
    }()

    /// Opens (and with `create`, creates) the Maildir tree at `root`.
    public init(root: String, create: Bool) throws {
        var r = root
        while r.count > 1, r.hasSuffix("/") { r.removeLast() }
        guard !r.isEmpty else { throw MailError(.usage, scope: .local, "maildir: needs a path") }
        self.root = r
        self.location = .maildir(path: r)
        if let st = try Posix.lstat(r) {
            guard st.isDirectory else {
                throw MailError(.usage, scope: .local, "maildir:\(r) is not a directory")
            }
        } else if !create {
            throw MailError(.notFound, scope: .local, "no Maildir at \(r)",
                            hint: "check the path, or let the command create it")
        }
        if create {
            try Posix.makeDirectories(r)
            try makeMaildir(r)
        }
    }

    // MARK: Paths

    /// The directory of a folder. INBOX is the root.
    func directory(for folder: FolderPath) -> String {
        if let foreign = foreignNames.withLockedValue({ $0[folder] }) { return foreign }
        if folder.isInbox { return root }
        var path = root
        for (i, c) in folder.components.enumerated() {
            path += "/" + (i == 0 && c == "INBOX" ? "INBOX" : FolderNameEscaping.escape(c, flavor: .maildir))
        }
        return path
    }

    private func makeMaildir(_ dir: String) throws {
        try Posix.makeDirectory(dir)
        for sub in ["cur", "new", "tmp"] { try Posix.makeDirectory(dir + "/" + sub) }
    }

    private func isMaildir(_ dir: String) throws -> Bool {
        guard let st = try Posix.lstat(dir + "/cur"), st.isDirectory else { return false }
        return true
    }

    // MARK: Folders

    public func folders() async throws -> [FolderInfo] {
        var out: [FolderInfo] = []
        var foreign: [FolderPath: String] = [:]
        if try isMaildir(root) {
            out.append(try folderInfo(.inbox, dir: root))
        }
        func walk(_ dir: String, _ prefix: [String], depth: Int) throws {
            guard depth < 64 else { return }
            for entry in try Posix.listDirectory(dir) where entry.type == .directory {
                let name = entry.name
                if name == "cur" || name == "new" || name == "tmp" { continue }
                if name.hasPrefix(".") { continue }  // Maildir++ folders and hidden dirs are not ours
                let childDir = dir + "/" + name
                let component: String
                if prefix.isEmpty && name == "INBOX" {
                    component = "INBOX"
                } else {
                    component = FolderNameEscaping.component(forDiskName: name, flavor: .maildir)
                }
                let comps = prefix + [component]
                guard let path = FolderPath(components: comps) else { continue }
                if prefix.isEmpty && path.isInbox {
                    // ROOT/INBOX only holds INBOX's children; INBOX itself is ROOT.
                    try walk(childDir, comps, depth: depth + 1)
                    continue
                }
                if directory(for: path) != childDir { foreign[path] = childDir }
                if try isMaildir(childDir) {
                    out.append(try folderInfo(path, dir: childDir))
                } else {
                    out.append(FolderInfo(path: path, selectable: false))
                }
                try walk(childDir, comps, depth: depth + 1)
            }
        }
        try walk(root, [], depth: 0)
        foreignNames.withLockedValue { $0.merge(foreign) { $1 } }
        appendFolders.withLockedValue { $0.removeAll() }
        return out.sorted { $0.path < $1.path }
    }

    private func folderInfo(_ path: FolderPath, dir: String) throws -> FolderInfo {
        var count = 0
        var size: Int64 = 0
        for sub in ["cur", "new"] {
            let d = dir + "/" + sub
            guard let st = try Posix.lstat(d), st.isDirectory else { continue }
            for e in try Posix.listDirectory(d) where e.type == .file && !e.name.hasPrefix(".") {
                count += 1
                if let s = MaildirFileName(e.name).size {
                    size += s
                } else if let st = try Posix.lstat(d + "/" + e.name) {
                    size += st.size
                }
            }
        }
        return FolderInfo(path: path, role: nil, selectable: true, messageCount: count, totalSize: size)
    }

    public func createFolder(_ path: FolderPath) async throws {
        for p in path.ancestors + [path] {
            let dir = directory(for: p)
            if p.isInbox {
                try makeMaildir(root)
            } else if p.components == ["INBOX"] {
                continue
            } else {
                if p.components.count >= 2, p.components[0] == "INBOX", p.components.count == 2 {
                    try Posix.makeDirectory(root + "/INBOX")
                }
                try makeMaildir(dir)
            }
        }
    }

    /// The folder's directory, or a folder-scoped notFound error.
    private func existingFolder(_ folder: FolderPath) throws -> String {
        let dir = directory(for: folder)
        guard try isMaildir(dir) else {
            throw MailError(.notFound, scope: .folder, "folder \(folder) does not exist in \(location)", folder: folder)
        }
        for sub in ["new", "tmp"] {
            guard let st = try Posix.lstat(dir + "/" + sub), st.isDirectory else {
                throw MailError(.corrupt, scope: .folder, "\(dir) is not a complete Maildir: \(sub)/ is missing",
                                hint: "create \(dir)/\(sub) with mode 0700", folder: folder)
            }
        }
        return dir
    }

    // MARK: Scanning

    struct Entry {
        var name: MaildirFileName
        var subdir: String
        var path: String
    }

    /// Every message file of a folder, keyed by id (the base name).
    private func scan(_ dir: String, folder: FolderPath) throws -> [String: Entry] {
        var out: [String: Entry] = [:]
        for sub in ["new", "cur"] {
            for e in try Posix.listDirectory(dir + "/" + sub) where !e.name.hasPrefix(".") {
                guard e.type == .file else {
                    if e.type == .directory {
                        throw MailError(.corrupt, scope: .folder, "\(dir)/\(sub)/\(e.name) is a directory inside a Maildir",
                                        folder: folder)
                    }
                    continue
                }
                let n = MaildirFileName(e.name)
                out[n.base] = Entry(name: n, subdir: sub, path: dir + "/" + sub + "/" + e.name)
            }
        }
        return out
    }

    private func info(for entry: Entry, stat st: Posix.FileStat, keywords: KeywordTable, folder: FolderPath,
                      headers: HeaderSummary? = nil) -> MessageInfo {
        MessageInfo(id: MessageID(entry.name.base), size: st.size, flags: entry.name.flags(keywords),
                    internalDate: InternalDate(secondsSinceEpoch: st.mtime), dateSource: .stored,
                    headers: headers)
    }

    public func listMessages(in folder: FolderPath, options: ListOptions) async throws -> FolderListing {
        let dir = try existingFolder(folder)
        let keywords = try KeywordTable.load(dir, folder: folder)
        var messages: [MessageInfo] = []
        for entry in try scan(dir, folder: folder).values {
            guard let st = try Posix.lstat(entry.path) else { continue }  // moved away meanwhile
            var headers: HeaderSummary?
            if options.includeHeaders { headers = try readHeaders(entry.path, folder: folder, id: entry.name.base) }
            messages.append(info(for: entry, stat: st, keywords: keywords, folder: folder, headers: headers))
        }
        messages.sort { $0.id.rawValue < $1.id.rawValue }
        return FolderListing(folder: folder, validity: FolderValidity(uidValidity: 1), messages: messages)
    }

    private func readHeaders(_ path: String, folder: FolderPath, id: String) throws -> HeaderSummary? {
        let fd: Int32
        do { fd = try Posix.openRead(path) } catch let e as MailError where e.kind == .notFound { return nil }
        defer { sysClose(fd) }
        var reader = HeaderReader()
        var offset: Int64 = 0
        while offset < Int64(HeaderReader.maxHeaderBytes) {
            let chunk = try Posix.pread(fd, count: 16 * 1024, at: offset, path: path)
            if chunk.readableBytes == 0 { break }
            offset += Int64(chunk.readableBytes)
            if chunk.withUnsafeReadableBytes({ reader.feed($0) }) { break }
        }
        return reader.finish()
    }

    public func fetchMessages(
        _ ids: [MessageID], in folder: FolderPath,
        _ handler: @Sendable (MessageInfo, MessageBody) async throws -> Void
    ) async throws -> [MessageID] {
        let dir = try existingFolder(folder)
        var keywords = try KeywordTable.load(dir, folder: folder)
        var entries = try scan(dir, folder: folder)
        var missing: [MessageID] = []
        for id in ids {
            var opened: (Int32, Entry)?
            for attempt in 0..<3 {
                guard let entry = entries[id.rawValue] else { break }
                do {
                    opened = (try Posix.openRead(entry.path), entry)
                    break
                } catch let e as MailError where e.kind == .notFound && attempt < 2 {
                    // Renamed by a flag change elsewhere: look again.
                    entries = try scan(dir, folder: folder)
                    keywords = try KeywordTable.load(dir, folder: folder)
                }
            }
            guard let (fd, entry) = opened else { missing.append(id); continue }
            let st: Posix.FileStat
            do { st = try Posix.fstat(fd, path: entry.path) } catch { sysClose(fd); throw error }
            if let recorded = entry.name.size, recorded != st.size {
                sysClose(fd)
                throw MailError(.corrupt, scope: .message,
                                "\(entry.path) is \(st.size) bytes but its name records S=\(recorded) (truncated or damaged)",
                                folder: folder, messageID: id.rawValue)
            }
            let reader = FileChunkReader(fd: fd, path: entry.path, start: 0, end: st.size, folder: folder, messageID: id.rawValue)
            let body = MessageBody(size: st.size) { try reader.next() }
            defer { reader.close() }
            try await handler(info(for: entry, stat: st, keywords: keywords, folder: folder), body)
        }
        return missing
    }

    // MARK: Writing

    /// This process's id, read once (not a getpid(2) per message).
    private static let pid = Posix.pid

    private static func uniqueName() -> String {
        let n = counter.withLockedValue { c -> UInt64 in c += 1; return c }
        let t = Posix.now()
        return "\(t.seconds).M\(t.micros)P\(pid)Q\(n).\(host)"
    }

    public func append(to folder: FolderPath, _ request: AppendRequest, body: MessageBody) async throws -> PendingAppend {
        // A folder checked once (cur/, new/, tmp/) is not stat'ed again for
        // each message; if it went away, the create below fails and the
        // check runs again for a clear error.
        let dir: String
        if let known = appendFolders.withLockedValue({ $0[folder] }) {
            dir = known
        } else {
            dir = try existingFolder(folder)
            appendFolders.withLockedValue { $0[folder] = dir }
        }
        let unique = Self.uniqueName()
        let tmpPath = dir + "/tmp/" + unique
        let fd: Int32
        do {
            fd = try Posix.createExclusive(tmpPath)
        } catch {
            appendFolders.withLockedValue { _ = $0.removeValue(forKey: folder) }
            _ = try existingFolder(folder)
            throw error
        }
        var hasher = MessageHasher()
        var staged = false
        defer {
            if !staged {
                sysClose(fd)
                try? Posix.unlink(tmpPath)
            }
        }
        for try await chunk in body {
            try chunk.withUnsafeReadableBytes { p in
                hasher.update(p)
                try Posix.writeAll(fd, p, path: tmpPath)
            }
        }
        let date = request.internalDate ?? InternalDate.now()
        try Posix.setTimes(fd, seconds: date.secondsSinceEpoch, path: tmpPath)
        // Durability is settled in `committer.commit`: the pages start for
        // the disk now, while the next message streams in.
        Posix.startWriteback(fd)

        let (letters, dropped) = try keywordLock.withLock {
            try KeywordTable.letters(for: request.flags, dir: dir, folder: folder)
        }
        let size = hasher.rawCount
        let base = "\(unique),S=\(size)"
        let finalPath = dir + "/cur/" + base + ":2," + MaildirFileName.infoString(system: request.flags, keywordLetters: letters, preserved: [])
        let result = AppendResult(id: MessageID(base), uidValidity: 1, key: hasher.finalize(), size: size, droppedFlags: dropped,
                                  normalizedSize: hasher.normalizedCount)
        let ticket = committer.stage(.init(fd: fd, tmpPath: tmpPath, finalPath: finalPath, curDir: dir + "/cur"))
        staged = true
        let committer = self.committer
        return PendingAppend {
            try committer.commit(ticket)
            return result
        }
    }

    public func setFlags(_ flags: Flags, _ change: FlagChange, for ids: [MessageID], in folder: FolderPath) async throws {
        let dir = try existingFolder(folder)
        try keywordLock.withLock {
            let entries = try scan(dir, folder: folder)
            let table = try KeywordTable.load(dir, folder: folder)
            var changed = false
            for id in ids {
                guard let entry = entries[id.rawValue] else { continue }
                let old = entry.name.flags(table)
                let new: Flags
                switch change {
                case .replace: new = flags
                case .add: new = old.union(flags)
                case .remove: new = old.subtracting(flags)
                }
                let (letters, _) = try KeywordTable.letters(for: new, dir: dir, folder: folder)
                // Keep letters we do not understand (P, unknown keywords) unless replaced.
                let unknownKeywordLetters = entry.name.keywordLetters.filter { table.name(for: $0) == nil }
                let info = MaildirFileName.infoString(system: new, keywordLetters: letters + unknownKeywordLetters,
                                                      preserved: entry.name.preservedUpper)
                let target = dir + "/cur/" + entry.name.base + ":2," + info
                if target == entry.path { continue }
                do {
                    try Posix.rename(entry.path, target)
                    changed = true
                } catch let e as MailError where e.kind == .notFound {
                    continue  // deleted meanwhile
                }
            }
            if changed {
                try Posix.fsyncDirectory(dir + "/cur")
                try Posix.fsyncDirectory(dir + "/new")
            }
        }
    }

    public func delete(_ ids: [MessageID], in folder: FolderPath) async throws {
        let dir = try existingFolder(folder)
        let entries = try scan(dir, folder: folder)
        var touched = Set<String>()
        for id in ids {
            guard let entry = entries[id.rawValue] else { continue }
            try Posix.unlink(entry.path)
            touched.insert(entry.subdir)
        }
        for sub in touched { try Posix.fsyncDirectory(dir + "/" + sub) }
    }

    /// Commits what was appended and not yet awaited.
    public func close() async throws {
        try committer.commitAll()
    }
}

/// Group commit of Maildir appends. `append` leaves each message written in
/// `tmp/` (its pages already on their way to the disk); the first `commit`
/// then, for every message staged so far, in order: fsyncs the file, moves
/// it into `cur/` (link + unlink, never replacing), and fsyncs each `cur/`
/// once for the lot. An append's result is reported only after its file and
/// its directory entry are on disk, as before; what is saved is a directory
/// fsync per message (one per batch instead) and the fsync of `tmp/` (an
/// entry left there by a crash is garbage Maildir readers ignore).
///
/// mpop, for comparison, fsyncs each file and no directory.
final class MaildirCommitter: @unchecked Sendable {
    struct Staged {
        var fd: Int32
        var tmpPath: String
        var finalPath: String
        var curDir: String
    }

    private let lock = NIOLock()
    /// Held for a whole commit, so a second caller waits for the first's fsyncs.
    private let commitLock = NIOLock()
    private var queue: [(ticket: UInt64, staged: Staged)] = []
    private var outcomes: [UInt64: MailError?] = [:]
    private var nextTicket: UInt64 = 0

    func stage(_ s: Staged) -> UInt64 {
        lock.withLock {
            nextTicket += 1
            queue.append((nextTicket, s))
            return nextTicket
        }
    }

    /// Makes `ticket`'s message durable in `cur/` (with everything staged
    /// before and after it so far) or throws why it could not.
    func commit(_ ticket: UInt64) throws {
        try commitLock.withLock {
            if lock.withLock({ outcomes[ticket] == nil }) { runBatch() }
            guard let outcome = lock.withLock({ outcomes.removeValue(forKey: ticket) }) else {
                throw MailError(.storage, scope: .message, "a Maildir append was lost before it was committed")
            }
            if let e = outcome { throw e }
        }
    }

    func commitAll() throws {
        try commitLock.withLock {
            runBatch()
            let failed = lock.withLock { () -> MailError? in
                let e = outcomes.values.compactMap { $0 }.first
                outcomes = [:]
                return e
            }
            if let failed { throw failed }
        }
    }

    /// Called with `commitLock` held.
    private func runBatch() {
        let batch = lock.withLock { () -> [(ticket: UInt64, staged: Staged)] in
            let b = queue
            queue = []
            return b
        }
        guard !batch.isEmpty else { return }
        var results: [UInt64: MailError?] = [:]
        var dirs: [String: [UInt64]] = [:]
        for (ticket, s) in batch {
            do {
                defer { sysClose(s.fd) }
                do {
                    try Posix.fsync(s.fd, path: s.tmpPath)
                    try Posix.renameNoReplace(s.tmpPath, s.finalPath)
                } catch {
                    try? Posix.unlink(s.tmpPath)
                    throw error
                }
                results[ticket] = .some(nil)
                dirs[s.curDir, default: []].append(ticket)
            } catch let e as MailError {
                results[ticket] = e
            } catch {
                results[ticket] = MailError(.storage, scope: .message, "cannot store \(s.finalPath): \(error)")
            }
        }
        for (dir, tickets) in dirs {
            do {
                try Posix.fsyncDirectory(dir)
            } catch {
                let e = (error as? MailError) ?? MailError(.storage, scope: .folder, "cannot sync \(dir): \(error)")
                for t in tickets { results[t] = e }
            }
        }
        lock.withLock { outcomes.merge(results) { $1 } }
    }
}

/// A Maildir message file name split into its parts.
struct MaildirFileName: Sendable, Hashable {
    /// Everything before the `:` info separator: the message's id.
    var base: String
    /// Info letters after `:2,` (empty for files in new/).
    var letters: [Character]

    init(_ name: String) {
        if let colon = name.firstIndex(of: ":") {
            base = String(name[..<colon])
            let info = name[name.index(after: colon)...]
            letters = info.hasPrefix("2,") ? Array(info.dropFirst(2)) : []
        } else {
            base = name
            letters = []
        }
    }

    /// The `,S=` size, if the name records one.
    var size: Int64? {
        for part in base.split(separator: ",").dropFirst() where part.hasPrefix("S=") {
            return Int64(part.dropFirst(2))
        }
        return nil
    }

    static let systemLetters: [(Character, Flag)] = [
        ("D", .draft), ("F", .flagged), ("R", .answered), ("S", .seen), ("T", .deleted),
    ]

    var keywordLetters: [Character] { letters.filter { $0 >= "a" && $0 <= "z" } }
    /// Upper-case letters with no IMAP meaning (`P` passed, and others): kept as they are.
    var preservedUpper: [Character] {
        letters.filter { c in c >= "A" && c <= "Z" && !Self.systemLetters.contains(where: { $0.0 == c }) }
    }

    func flags(_ table: KeywordTable) -> Flags {
        var f = Flags()
        for c in letters {
            if let s = Self.systemLetters.first(where: { $0.0 == c }) {
                f.insert(s.1)
            } else if let k = table.name(for: c) {
                f.insert(Flag(k))
            }
        }
        return f
    }

    static func infoString(system flags: Flags, keywordLetters: [Character], preserved: [Character]) -> String {
        var set = Set(preserved).union(keywordLetters)
        for (c, f) in systemLetters where flags.contains(f) { set.insert(c) }
        return String(set.sorted())
    }
}

/// A folder's `dovecot-keywords` file: `N name` lines mapping letter `a`+N to a keyword.
struct KeywordTable: Sendable {
    var names: [Int: String] = [:]

    static func load(_ dir: String, folder: FolderPath) throws -> KeywordTable {
        let path = dir + "/dovecot-keywords"
        let fd: Int32
        do { fd = try Posix.openRead(path) } catch let e as MailError where e.kind == .notFound { return KeywordTable() }
        defer { sysClose(fd) }
        var bytes = [UInt8]()
        var off: Int64 = 0
        while bytes.count < 1 << 20 {
            let chunk = try Posix.pread(fd, count: 16 * 1024, at: off, path: path)
            if chunk.readableBytes == 0 { break }
            off += Int64(chunk.readableBytes)
            bytes += chunk.readableBytesView
        }
        var t = KeywordTable()
        for line in bytes.split(separator: 0x0A) {
            let text = String(decoding: line, as: UTF8.self).trimmingCharacters()
            guard let sp = text.firstIndex(of: " "), let n = Int(text[..<sp]), (0..<26).contains(n) else { continue }
            let name = String(text[text.index(after: sp)...])
            if !name.isEmpty { t.names[n] = name }
        }
        return t
    }

    func name(for letter: Character) -> String? {
        guard let a = letter.asciiValue, a >= UInt8(ascii: "a"), a <= UInt8(ascii: "z") else { return nil }
        return names[Int(a - UInt8(ascii: "a"))]
    }

    /// The letters for the keywords of `flags`, adding new keywords to the
    /// folder's file (atomically). Returns the keywords that did not fit.
    static func letters(for flags: Flags, dir: String, folder: FolderPath) throws -> ([Character], [Flag]) {
        let keywords = flags.keywords
        guard !keywords.isEmpty else { return ([], []) }
        var table = try load(dir, folder: folder)
        var letters: [Character] = []
        var dropped: [Flag] = []
        var grew = false
        for k in keywords {
            guard k.isValidKeyword else { dropped.append(k); continue }
            if let (n, _) = table.names.first(where: { Flag($0.value) == k }) {
                letters.append(Character(Unicode.Scalar(UInt8(ascii: "a") + UInt8(n))))
            } else if let free = (0..<26).first(where: { table.names[$0] == nil }) {
                table.names[free] = k.name
                grew = true
                letters.append(Character(Unicode.Scalar(UInt8(ascii: "a") + UInt8(free))))
            } else {
                dropped.append(k)
            }
        }
        if grew { try table.save(dir) }
        return (letters, dropped)
    }

    func save(_ dir: String) throws {
        let path = dir + "/dovecot-keywords"
        let tmp = dir + "/.dovecot-keywords.mailferry-\(Posix.pid)-\(Posix.now().micros)"
        let text = names.keys.sorted().map { "\($0) \(names[$0] ?? "")\n" }.joined()
        let fd = try Posix.createExclusive(tmp)
        var open = true
        defer { if open { sysClose(fd) } }
        do {
            try Posix.writeAll(fd, Array(text.utf8), path: tmp)
            try Posix.fsync(fd, path: tmp)
            sysClose(fd)
            open = false
            try Posix.rename(tmp, path)
            try Posix.fsyncDirectory(dir)
        } catch {
            try? Posix.unlink(tmp)
            throw error
        }
    }
}

extension String {
    func trimmingCharacters() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\r" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s = s.dropLast() }
        return String(s)
    }
}

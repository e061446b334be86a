import Foundation
import MailModel
import MailStore
import NIOCore

/// A mail server held in memory, for fast engine tests: folders with
/// UIDVALIDITY and UIDs, flags, dates, SPECIAL-USE roles, and faults to
/// inject (refused messages, connections dropped mid-body, throttling,
/// refused keywords, rewriting on append). Open sessions with `makeStore()`:
/// each is one `MailStore` (one "connection"); the data is shared.
///
/// `.imap` behaves like an IMAP server with UIDPLUS; `.pop3` like a POP3
/// mailbox (one folder, UIDL ids, no sizes on bodies, no append, deletions
/// committed only when the session is closed).
public final class MemoryServer: @unchecked Sendable {
    public enum Kind: Sendable { case imap, pop3 }

    public struct Message: Sendable, Hashable {
        public var uid: UInt64
        public var bytes: [UInt8]
        public var flags: Flags
        public var internalDate: InternalDate?
        public var modSeq: UInt64
        public var key: MessageKey { MessageKey.of(bytes) }
    }

    struct Folder {
        var role: FolderRole?
        var selectable: Bool = true
        var uidValidity: UInt64
        var uidNext: UInt64 = 1
        var messages: [Message] = []
    }

    /// Faults the server injects. Counters count down as faults fire.
    public struct Faults: Sendable {
        /// APPENDs whose bytes make this true are refused with NO (a message-scope error).
        public var refuseAppend: (@Sendable ([UInt8]) -> Bool)?
        /// The next N message bodies fetched break off after `dropAfterBytes`; the session dies.
        public var dropFetches = 0
        /// The next N appends break off mid-body; the session dies.
        public var dropAppends = 0
        public var dropAfterBytes = 100
        /// The next N operations (list, fetch, append) are throttled.
        public var throttles = 0
        public var throttleRetryAfter: Double? = 0.01
        /// Keywords this server refuses; the message goes through without them.
        public var refusedKeywords: Set<Flag> = []
        /// Prepends a header to every appended message, as some servers do.
        public var rewriteOnAppend = false
        /// At most this many sessions open at once: `openSession()` beyond it is
        /// refused the way Dovecot refuses (`* BYE [UNAVAILABLE] Maximum number of
        /// connections ... exceeded`) and Gmail (`Too many simultaneous connections`).
        public var connectionLimit: Int?
        public init() {}
    }

    public let kind: Kind
    public let name: String
    /// Listings say their ids were made up (a POP3 server without UIDL). Set before use.
    public var syntheticIDs = false
    public var capabilities: StoreCapabilities
    private let lock = NSLock()
    private var folders: [FolderPath: Folder] = [:]
    private var nextValidity: UInt64
    private var modSeq: UInt64 = 1
    private var _faults = Faults()
    private var _stats = Stats()

    /// What the server was asked to do, for tests that check a re-run does no work.
    public struct Stats: Sendable, Hashable {
        public var sessions = 0
        public var listings = 0
        public var headerListings = 0
        public var fetchedMessages = 0
        public var fetchedBytes: Int64 = 0
        public var appends = 0
        public var deletes = 0
        public var flagChanges = 0
        /// Sessions refused above `Faults.connectionLimit`, and the most open at once.
        public var refusedSessions = 0
        public var peakOpenSessions = 0
    }

    public init(kind: Kind = .imap, name: String = "memory", capabilities: StoreCapabilities? = nil,
                firstUIDValidity: UInt64 = 1000) {
        self.kind = kind
        self.name = name
        self.nextValidity = firstUIDValidity
        switch kind {
        case .imap:
            self.capabilities = capabilities ?? StoreCapabilities.localTree.union(.appendReturnsID)
            folders[.inbox] = Folder(role: nil, uidValidity: firstUIDValidity)
            nextValidity += 1
        case .pop3:
            self.capabilities = capabilities ?? [.delete, .persistentIDs]
            folders[.inbox] = Folder(role: nil, uidValidity: 1)
        }
    }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    public var faults: Faults {
        get { locked { _faults } }
        set { locked { _faults = newValue } }
    }

    public var stats: Stats { locked { _stats } }
    public func resetStats() { locked { _stats = Stats() } }

    private var openSessions = 0

    /// Opens a session (never refused; see `openSession()`).
    public func makeStore() -> MemoryStore {
        locked {
            _stats.sessions += 1
            openSessions += 1
            _stats.peakOpenSessions = max(_stats.peakOpenSessions, openSessions)
        }
        return MemoryStore(server: self)
    }

    /// Opens a session as a client connecting would: refused above `Faults.connectionLimit`.
    public func openSession() throws -> MemoryStore {
        try locked {
            if let limit = _faults.connectionLimit, openSessions >= limit {
                _stats.refusedSessions += 1
                throw MailError(.connection, scope: .account, retryable: true,
                                "\(name): * BYE [UNAVAILABLE] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=\(limit))")
            }
        }
        return makeStore()
    }

    /// Sessions open now (opened and not yet closed).
    public var openSessionCount: Int { locked { openSessions } }

    fileprivate func sessionClosed() { locked { openSessions = max(0, openSessions - 1) } }

    // MARK: Setting up and inspecting

    /// Creates a folder (and parents) if missing.
    public func addFolder(_ path: FolderPath, role: FolderRole? = nil, selectable: Bool = true) {
        locked {
            for p in path.ancestors where folders[p] == nil {
                folders[p] = Folder(role: nil, uidValidity: nextValidity)
                nextValidity += 1
            }
            if folders[path] == nil {
                folders[path] = Folder(role: role, selectable: selectable, uidValidity: nextValidity)
                nextValidity += 1
            } else {
                folders[path]?.role = role
                folders[path]?.selectable = selectable
            }
        }
    }

    /// Adds a message and returns its UID.
    @discardableResult
    public func add(_ bytes: [UInt8], to folder: FolderPath = .inbox, flags: Flags = [],
                    internalDate: InternalDate? = nil) -> UInt64 {
        if locked({ folders[folder] == nil }) { addFolder(folder) }
        return locked { insert(bytes, folder, flags, internalDate) }
    }

    private func insert(_ bytes: [UInt8], _ folder: FolderPath, _ flags: Flags, _ date: InternalDate?) -> UInt64 {
        modSeq += 1
        let uid = folders[folder]!.uidNext
        folders[folder]!.uidNext += 1
        folders[folder]!.messages.append(Message(uid: uid, bytes: bytes, flags: flags, internalDate: date, modSeq: modSeq))
        return uid
    }

    /// Deletes a folder and creates it again with the same messages under a
    /// new UIDVALIDITY and new UIDs, as a server does after a rebuild.
    public func recreate(_ folder: FolderPath) {
        locked {
            guard var f = folders[folder] else { return }
            f.uidValidity = nextValidity
            nextValidity += 1
            var uid: UInt64 = 1
            f.messages = f.messages.map { m in
                var m = m
                m.uid = uid
                uid += 1
                return m
            }
            f.uidNext = uid
            folders[folder] = f
        }
    }

    public var folderPaths: [FolderPath] { locked { folders.keys.sorted() } }

    public func messages(in folder: FolderPath) -> [Message] { locked { folders[folder]?.messages ?? [] } }

    public func uidValidity(of folder: FolderPath) -> UInt64? { locked { folders[folder]?.uidValidity } }

    /// Every folder's messages as (folder, key, flags), sorted: what a test compares.
    public func contents() -> [FolderPath: [MessageKey]] {
        locked {
            folders.mapValues { $0.messages.map(\.key).sorted() }.filter { !$0.value.isEmpty }
        }
    }

    public func removeMessage(uid: UInt64, from folder: FolderPath) {
        locked { folders[folder]?.messages.removeAll { $0.uid == uid } }
    }

    // MARK: Operations used by sessions

    fileprivate func consumeThrottle() -> MailError? {
        locked {
            guard _faults.throttles > 0 else { return nil }
            _faults.throttles -= 1
            return MailError(.throttled, scope: .account, retryable: true, "\(name): [THROTTLED] slow down",
                             retryAfter: _faults.throttleRetryAfter)
        }
    }

    fileprivate func folderInfos() -> [FolderInfo] {
        locked {
            folders.map { path, f in
                FolderInfo(path: path, role: f.role, selectable: f.selectable, messageCount: f.messages.count,
                           totalSize: f.messages.reduce(0) { $0 + Int64($1.bytes.count) })
            }.sorted { $0.path < $1.path }
        }
    }

    fileprivate func create(_ path: FolderPath) {
        addFolder(path, role: locked { folders[path]?.role })
    }

    fileprivate func listing(_ folder: FolderPath, headers: Bool, hidden: Set<UInt64>) throws -> FolderListing {
        try locked {
            guard let f = folders[folder], f.selectable else {
                throw MailError(.notFound, scope: .folder, "\(name): no folder \(folder)", folder: folder)
            }
            _stats.listings += 1
            if headers { _stats.headerListings += 1 }
            let infos = f.messages.filter { !hidden.contains($0.uid) }.map { m in
                MessageInfo(id: id(m.uid), size: Int64(m.bytes.count),
                            flags: kind == .pop3 ? [] : m.flags,
                            internalDate: kind == .pop3 ? nil : m.internalDate,
                            dateSource: kind == .pop3 ? nil : .stored,
                            headers: headers ? HeaderReader.read(m.bytes) : nil,
                            modSeq: kind == .pop3 ? nil : m.modSeq)
            }
            let v = kind == .pop3 ? FolderValidity()
                : FolderValidity(uidValidity: f.uidValidity, uidNext: f.uidNext, highestModSeq: modSeq)
            return FolderListing(folder: folder, validity: v, messages: infos, idsAreSynthetic: syntheticIDs)
        }
    }

    fileprivate func id(_ uid: UInt64) -> MessageID {
        kind == .pop3 ? MessageID("uidl-\(uid)") : MessageID(String(uid))
    }

    fileprivate func uid(_ id: MessageID) -> UInt64? {
        kind == .pop3 ? UInt64(id.rawValue.dropFirst(5)) : UInt64(id.rawValue)
    }

    fileprivate func message(_ folder: FolderPath, _ uid: UInt64) throws -> Message? {
        try locked {
            guard let f = folders[folder] else {
                throw MailError(.notFound, scope: .folder, "\(name): no folder \(folder)", folder: folder)
            }
            return f.messages.first { $0.uid == uid }
        }
    }

    fileprivate func noteFetch(bytes: Int) -> Int? {
        locked {
            _stats.fetchedMessages += 1
            _stats.fetchedBytes += Int64(bytes)
            guard _faults.dropFetches > 0 else { return nil }
            _faults.dropFetches -= 1
            return _faults.dropAfterBytes
        }
    }

    fileprivate func appendFault() -> (drop: Int?, rewrite: Bool, refused: Set<Flag>, refuse: (@Sendable ([UInt8]) -> Bool)?) {
        locked {
            _stats.appends += 1
            var drop: Int? = nil
            if _faults.dropAppends > 0 {
                _faults.dropAppends -= 1
                drop = _faults.dropAfterBytes
            }
            return (drop, _faults.rewriteOnAppend, _faults.refusedKeywords, _faults.refuseAppend)
        }
    }

    fileprivate func store(_ bytes: [UInt8], _ folder: FolderPath, _ flags: Flags, _ date: InternalDate?) throws -> (UInt64, UInt64) {
        try locked {
            guard folders[folder] != nil else {
                throw MailError(.notFound, scope: .folder, "\(name): no folder \(folder)", folder: folder)
            }
            let uid = insert(bytes, folder, flags, date ?? InternalDate.now())
            return (uid, folders[folder]!.uidValidity)
        }
    }

    fileprivate func changeFlags(_ flags: Flags, _ change: FlagChange, _ uids: Set<UInt64>, _ folder: FolderPath) throws {
        try locked {
            guard var f = folders[folder] else {
                throw MailError(.notFound, scope: .folder, "\(name): no folder \(folder)", folder: folder)
            }
            _stats.flagChanges += 1
            for i in f.messages.indices where uids.contains(f.messages[i].uid) {
                switch change {
                case .replace: f.messages[i].flags = flags
                case .add: f.messages[i].flags = f.messages[i].flags.union(flags)
                case .remove: f.messages[i].flags = f.messages[i].flags.subtracting(flags)
                }
                modSeq += 1
                f.messages[i].modSeq = modSeq
            }
            folders[folder] = f
        }
    }

    fileprivate func expunge(_ uids: Set<UInt64>, _ folder: FolderPath) {
        locked {
            _stats.deletes += uids.count
            folders[folder]?.messages.removeAll { uids.contains($0.uid) }
        }
    }
}

/// One session with a `MemoryServer`: a complete `MailStore`.
public final class MemoryStore: MailStore, @unchecked Sendable {
    public let server: MemoryServer
    private let lock = NSLock()
    private var dead = false
    private var closed = false
    /// POP3: ids marked for deletion, committed on close.
    private var pendingDeletes: [FolderPath: Set<UInt64>] = [:]

    init(server: MemoryServer) { self.server = server }

    public var location: StoreLocation { .maildir(path: "/memory/\(server.name)") }
    public var capabilities: StoreCapabilities { server.capabilities }

    private func check(throttle: Bool = true) throws {
        let state: (Bool, Bool) = lock.withLock { (dead, closed) }
        if state.1 { throw MailError(.connection, scope: .account, "\(server.name): session closed") }
        if state.0 {
            throw MailError(.connection, scope: .account, retryable: true, "\(server.name): connection lost")
        }
        if throttle, let e = server.consumeThrottle() { throw e }
    }

    private func die() -> MailError {
        lock.withLock { dead = true }
        return MailError(.connection, scope: .account, retryable: true, "\(server.name): connection lost mid-message")
    }

    public func folders() async throws -> [FolderInfo] {
        try check()
        return server.folderInfos()
    }

    public func createFolder(_ path: FolderPath) async throws {
        try check(throttle: false)
        guard capabilities.contains(.createFolders) else { throw unsupportedError("create folders") }
        server.create(path)
    }

    public func listMessages(in folder: FolderPath, options: ListOptions) async throws -> FolderListing {
        try check()
        let hidden = lock.withLock { pendingDeletes[folder] ?? [] }
        return try server.listing(folder, headers: options.includeHeaders, hidden: hidden)
    }

    public func fetchMessages(_ ids: [MessageID], in folder: FolderPath,
                              _ handler: @Sendable (MessageInfo, MessageBody) async throws -> Void) async throws -> [MessageID] {
        try check()
        var missing: [MessageID] = []
        let hidden = lock.withLock { pendingDeletes[folder] ?? [] }
        for id in ids {
            try check(throttle: false)
            guard let uid = server.uid(id), !hidden.contains(uid), let m = try server.message(folder, uid) else {
                missing.append(id)
                continue
            }
            let drop = server.noteFetch(bytes: m.bytes.count)
            let info = MessageInfo(id: id, size: Int64(m.bytes.count),
                                   flags: server.kind == .pop3 ? [] : m.flags,
                                   internalDate: server.kind == .pop3 ? nil : m.internalDate,
                                   dateSource: server.kind == .pop3 ? nil : .stored,
                                   modSeq: server.kind == .pop3 ? nil : m.modSeq)
            let reader = ChunkReader(bytes: m.bytes, chunk: 997, dropAfter: drop)
            let body = MessageBody(size: server.kind == .pop3 ? nil : Int64(m.bytes.count)) { try reader.next() }
            do {
                try await handler(info, body)
            } catch {
                if reader.dropped { throw die() }
                throw error
            }
            if reader.dropped { throw die() }
        }
        return missing
    }

    public func append(to folder: FolderPath, _ request: AppendRequest, body: MessageBody) async throws -> PendingAppend {
        try check()
        guard capabilities.contains(.append) else { throw unsupportedError("append messages") }
        let fault = server.appendFault()
        var bytes: [UInt8] = []
        if let size = body.size { bytes.reserveCapacity(Int(size)) }
        for try await chunk in body {
            bytes.append(contentsOf: chunk.readableBytesView)
            if let d = fault.drop, bytes.count >= d { throw die() }
        }
        if let d = fault.drop, bytes.count < d { throw die() }
        if let size = body.size, Int64(bytes.count) != size {
            throw MailError(.protocolViolation, scope: .message, "\(server.name): body had \(bytes.count) bytes, not \(size)",
                            folder: folder)
        }
        let sentKey = MessageKey.of(bytes)
        let sent = Int64(bytes.count)
        if let refuse = fault.refuse, refuse(bytes) {
            let name = server.name
            return PendingAppend {
                throw MailError(.refused, scope: .message, "\(name): APPEND refused: message rejected by policy", folder: folder)
            }
        }
        var flags = request.flags
        var dropped: [Flag] = []
        // Like an IMAP server: a keyword that is not an atom cannot be stored.
        for k in flags.keywords where fault.refused.contains(k) || !k.isValidKeyword {
            flags.remove(k)
            dropped.append(k)
        }
        if !capabilities.contains(.flags) { flags = [] }
        if fault.rewrite { bytes = Array("X-Rewritten-By: memory\r\n".utf8) + bytes }
        let (uid, validity) = try server.store(bytes, folder, flags,
                                               capabilities.contains(.internalDate) ? request.internalDate : nil)
        let result = AppendResult(id: capabilities.contains(.appendReturnsID) ? server.id(uid) : nil,
                                  uidValidity: validity, key: sentKey, size: sent, droppedFlags: dropped)
        return PendingAppend { result }
    }

    public func setFlags(_ flags: Flags, _ change: FlagChange, for ids: [MessageID], in folder: FolderPath) async throws {
        try check(throttle: false)
        guard capabilities.contains(.setFlags) else { throw unsupportedError("change flags") }
        try server.changeFlags(flags, change, Set(ids.compactMap(server.uid)), folder)
    }

    public func delete(_ ids: [MessageID], in folder: FolderPath) async throws {
        try check(throttle: false)
        guard capabilities.contains(.delete) else { throw unsupportedError("delete messages") }
        let uids = Set(ids.compactMap(server.uid))
        if server.kind == .pop3 {
            lock.withLock { pendingDeletes[folder, default: []].formUnion(uids) }
        } else {
            server.expunge(uids, folder)
        }
    }

    public func close() async throws {
        let (wasDead, wasClosed, pending): (Bool, Bool, [FolderPath: Set<UInt64>]) = lock.withLock {
            defer { closed = true; pendingDeletes = [:] }
            return (dead, closed, pendingDeletes)
        }
        if !wasClosed { server.sessionClosed() }
        // A dropped session commits nothing (POP3 without QUIT).
        guard !wasDead else { return }
        for (folder, uids) in pending { server.expunge(uids, folder) }
    }

    private func unsupportedError(_ what: String) -> MailError {
        MailError(.unsupported, scope: .account, "\(location) cannot \(what)")
    }
}

private final class ChunkReader: @unchecked Sendable {
    let bytes: [UInt8]
    let chunk: Int
    let dropAfter: Int?
    var offset = 0
    var dropped = false
    let lock = NSLock()

    init(bytes: [UInt8], chunk: Int, dropAfter: Int?) {
        self.bytes = bytes
        self.chunk = chunk
        self.dropAfter = dropAfter
    }

    func next() throws -> ByteBuffer? {
        try lock.withLock {
            if let d = dropAfter, offset >= min(d, max(bytes.count - 1, 0)) {
                dropped = true
                throw MailError(.connection, scope: .account, retryable: true, "connection lost mid-message")
            }
            guard offset < bytes.count else { return nil }
            var end = min(offset + chunk, bytes.count)
            if let d = dropAfter { end = min(end, max(d, offset + 1)) }
            let b = ByteBuffer(bytes: bytes[offset..<end])
            offset = end
            return b
        }
    }
}

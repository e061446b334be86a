import IMAPClient
import IMAPCore
import Logging
import MailModel
import MailNet
import NIOConcurrencyHelpers
import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How an `IMAPStore` works the connection.
public struct IMAPStoreOptions: Sendable, Hashable {
    /// Commands in flight at once (fetch batches, appends). 1 turns pipelining off.
    public var pipelineDepth: Int
    /// UIDs per UID FETCH command when streaming bodies.
    public var fetchBatchSize: Int
    /// Everything else about the client (stream buffering, ENABLE, ID, parser limits).
    public var client: IMAPClientOptions
    /// Most messages one MULTIAPPEND (RFC 3502) carries, when the server
    /// offers it; 1 turns MULTIAPPEND off (one APPEND per message).
    public var multiAppendMessages: Int
    /// Most bytes one MULTIAPPEND carries. Messages over 4 MB always go alone.
    /// A batch's messages are kept in memory until its reply (a refused
    /// batch is sent again message by message), so this also bounds the
    /// memory each batch in flight holds.
    public var multiAppendBytes: Int64
    /// How long an open MULTIAPPEND waits for another message before it is
    /// ended (the server stores a batch only once its command line ends).
    public var multiAppendLinger: Duration

    public init(pipelineDepth: Int = 16, fetchBatchSize: Int = 32,
                client: IMAPClientOptions = IMAPClientOptions(),
                multiAppendMessages: Int = 32, multiAppendBytes: Int64 = 8 * 1024 * 1024,
                multiAppendLinger: Duration = .milliseconds(2)) {
        self.pipelineDepth = max(1, pipelineDepth)
        self.fetchBatchSize = max(1, fetchBatchSize)
        self.client = client
        self.client.pipelineDepth = self.pipelineDepth
        self.multiAppendMessages = max(1, multiAppendMessages)
        self.multiAppendBytes = max(0, multiAppendBytes)
        self.multiAppendLinger = multiAppendLinger
    }
}

/// A `MailStore` over one IMAP connection.
///
/// Fetches stream message bytes as they arrive, several UID FETCH batches in
/// flight; appends stream with LITERAL+ (or LITERAL- for small messages, else
/// synchronising literals) and return before the server confirms, so many
/// APPENDs are in flight at once. With MULTIAPPEND (RFC 3502), messages up to
/// 4 MB bound for one folder share one command (`IMAPStoreOptions.multiAppend*`):
/// the server stores all of them or none. Each batched message's bytes (read
/// whole already, for the NUL check) are kept until the batch's reply, so a
/// refusal (NO) sends each message again as its own APPEND: one message the
/// server will not take fails alone, with the server's words, and the rest
/// are stored; that folder is then not batched again for the session. A BAD
/// fails each message of the batch, and a connection lost mid-batch fails
/// each retryably. Kept bytes are bounded by `multiAppendBytes` per batch.
/// APPENDUID's uid-set gives each message its UID, in order; a set of the
/// wrong size, or one for another UIDVALIDITY than the folder's, is not
/// believed: the message counts as stored with its UID unknown, and later
/// runs find it by its key.
public final class IMAPStore: MailStore {
    public let location: StoreLocation
    public let capabilities: StoreCapabilities
    public let connection: IMAPConnection
    let options: IMAPStoreOptions
    let logger: Logger
    let map: IMAPFolderMap
    private let state = NIOLockedValueBox(State())

    struct Selection: Sendable {
        var folder: FolderPath
        var readOnly: Bool
        var validity: FolderValidity
        var exists: UInt32
        /// nil: the server sent no PERMANENTFLAGS (all flags are permanent).
        var permanentFlags: [Flag]?
    }

    struct State: Sendable {
        var selected: Selection?
        /// PERMANENTFLAGS per folder, learned on SELECT/EXAMINE (nil entry: all permanent).
        var permanentFlags: [FolderPath: [Flag]?] = [:]
        /// UIDVALIDITY per folder, learned on SELECT/EXAMINE: an APPENDUID for
        /// another UIDVALIDITY is not believed.
        var uidValidity: [FolderPath: UInt64] = [:]
        /// The MULTIAPPEND whose command line is still open.
        var openBatch: AppendBatch?
        var appendCommands = 0
        var appendedMessages = 0
        /// SELECT and EXAMINE commands sent.
        var selects = 0
        /// Messages per MULTIAPPEND for now (see `lingerThenClose`); nil: the option's bound.
        var batchLimit: Int?
        /// Folders where a MULTIAPPEND was refused this session: their
        /// messages go one APPEND each (see `resendAlone`).
        var unbatched: Set<FolderPath> = []
        /// The longest keyword the server takes, learned this session from an
        /// APPEND refused because a keyword was too long (Dovecot's
        /// `mail_max_keyword_length`): longer keywords are dropped up front,
        /// so later messages do not pay a refused APPEND first.
        var maxKeywordLength: Int?
    }

    /// APPEND commands sent and messages they carried (more messages than
    /// commands when MULTIAPPEND batched them). For measurements and tests.
    public var appendCounts: (commands: Int, messages: Int) {
        state.withLockedValue { ($0.appendCommands, $0.appendedMessages) }
    }

    /// SELECT and EXAMINE commands sent this session. For measurements and
    /// tests (a re-run that finds nothing changed selects no folder).
    public var selectCount: Int { state.withLockedValue { $0.selects } }

    /// Serialises everything that writes an APPEND's bytes (the outbound
    /// stream belongs to one open APPEND at a time).
    let appendLock = AsyncMutex()

    init(location: StoreLocation, connection: IMAPConnection, options: IMAPStoreOptions, map: IMAPFolderMap, logger: Logger) {
        self.location = location
        self.connection = connection
        self.options = options
        self.map = map
        self.logger = logger
        // Appends hash the bytes as they go on the wire (`HashingBody`), so the
        // engine need not hash them a second time (`keysWrittenBytes`).
        var caps: StoreCapabilities = [.folders, .createFolders, .append, .flags, .keywords, .internalDate, .delete,
                                       .setFlags, .persistentIDs, .keysWrittenBytes]
        if connection.enabled.contains(.condStore) || connection.enabled.contains(.qresync) { caps.insert(.changeTracking) }
        if connection.has(.uidPlus) { caps.insert(.appendReturnsID) }
        self.capabilities = caps
    }

    /// Connects, logs in, enables CONDSTORE/QRESYNC/UTF8=ACCEPT when offered,
    /// and reads the personal namespace and hierarchy separator.
    public static func open(settings: ConnectionSettings, credentials: Credentials,
                            options: IMAPStoreOptions = .init(), logger: Logger) async throws -> IMAPStore {
        let connection = try await IMAPConnection.connect(settings: settings, credentials: credentials,
                                                          options: options.client, logger: logger)
        do {
            var prefix = ""
            var separator: Character?
            if connection.has(.namespace) {
                let r = try await connection.execute(.namespace, scope: .account)
                for case .namespace(let ns) in r.untagged {
                    if let p = ns.personal.first {
                        prefix = p.prefix.decoded(utf8: connection.isUTF8Enabled)
                        separator = p.separator
                    }
                }
            }
            if separator == nil {
                let r = try await connection.execute(.list(reference: MailboxName(bytes: []), pattern: "", specialUse: false, status: []), scope: .account)
                for case .list(let item) in r.untagged { separator = item.separator }
            }
            let account = StoreLocation.NetworkAccount(user: credentials.authorizationIdentity ?? credentials.user,
                                                       host: settings.host, port: settings.port, tls: settings.tls)
            let map = IMAPFolderMap(prefix: prefix, separator: separator, utf8: connection.isUTF8Enabled)
            logger.debug("IMAP store open", metadata: ["host": "\(settings.host)", "prefix": "\(prefix)",
                                                       "separator": "\(separator.map(String.init) ?? "NIL")",
                                                       "capabilities": "\(connection.capabilities.map(\.name).sorted().joined(separator: " "))"])
            return IMAPStore(location: .imap(account), connection: connection, options: options, map: map, logger: logger)
        } catch {
            await connection.logout()
            throw error
        }
    }

    var host: String { connection.settings.host }

    func mailbox(_ folder: FolderPath) throws -> MailboxName {
        guard let m = map.mailbox(for: folder) else {
            throw MailError(.usage, scope: .folder,
                            "the folder \(folder) cannot be named on \(host): a name part contains the hierarchy separator \"\(map.separator.map(String.init) ?? "")\"",
                            hint: "rename it with --map", folder: folder)
        }
        return m
    }

    // MARK: Folders

    public func folders() async throws -> [FolderInfo] {
        try await flushAppends()
        let specialUse = connection.has(.specialUse)
        let listStatus = connection.has(.listStatus)
        var statusItems: [MailboxStatus.Item] = []
        // With QRESYNC enabled, UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ (which an
        // expunge raises too) say whether a folder changed as a SELECT would:
        // a re-run that finds them as it left them need not select the folder.
        let tracksChanges = listStatus && connection.enabled.contains(.qresync)
        if listStatus {
            statusItems = [.messages]
            if tracksChanges { statusItems += [.uidValidity, .uidNext, .highestModSeq] }
            if connection.has(Capability("STATUS=SIZE")) { statusItems.append(.size) }
        }
        let r = try await connection.execute(.list(reference: MailboxName(bytes: []), pattern: "*", specialUse: specialUse,
                                                   status: statusItems), scope: .account)
        var statuses: [MailboxName: MailboxStatus] = [:]
        for case .status(let m, let s) in r.untagged { statuses[m] = s }
        var out: [FolderInfo] = []
        var seen = Set<FolderPath>()
        for case .list(let item) in r.untagged {
            guard let path = map.path(for: item.name, separator: item.separator), !seen.contains(path) else { continue }
            if item.hasAttribute("\\NonExistent") { continue }
            seen.insert(path)
            let status = statuses[item.name]
            var validity: FolderValidity?
            if tracksChanges, let v = status?.uidValidity, let n = status?.uidNext, let m = status?.highestModSeq {
                validity = FolderValidity(uidValidity: UInt64(v), uidNext: UInt64(n), highestModSeq: m)
            }
            out.append(FolderInfo(path: path,
                                  role: IMAPFolderMap.role(attributes: item.attributes, path: path, serverHasSpecialUse: specialUse),
                                  selectable: item.isSelectable,
                                  messageCount: status?.messages.map(Int.init),
                                  totalSize: status?.size.map { Int64($0) },
                                  validity: validity))
        }
        // Parents that exist only implicitly (a server that lists "a/b" without "a").
        for f in out {
            for a in f.path.ancestors where !seen.contains(a) {
                seen.insert(a)
                out.append(FolderInfo(path: a, selectable: false))
            }
        }
        return out.sorted { $0.path < $1.path }
    }

    public func createFolder(_ path: FolderPath) async throws {
        try await flushAppends()
        for p in path.ancestors + [path] {
            let m = try mailbox(p)
            if p.isInbox { continue }
            do {
                try await connection.execute(.create(m), scope: .folder)
            } catch let e as MailError where e.kind == .refused {
                // Already there is fine: check with LIST rather than trusting the text.
                let r = try await connection.execute(.list(reference: MailboxName(bytes: []), pattern: m.decoded(utf8: map.utf8),
                                                           specialUse: false, status: []), scope: .folder)
                let exists = r.untagged.contains { if case .list(let i) = $0 { return i.name == m }; return false }
                if !exists { throw e.with(folder: p) }
            }
        }
    }

    // MARK: Selection

    @discardableResult
    func select(_ folder: FolderPath, readOnly: Bool, fresh: Bool = false, flush: Bool = true) async throws -> Selection {
        if !fresh, let s = state.withLockedValue({ $0.selected }), s.folder == folder, s.readOnly == readOnly || !s.readOnly {
            return s
        }
        if flush { try await flushAppends() }
        let m = try mailbox(folder)
        let cmd: Command = readOnly ? .examine(m) : .select(m)
        let r: CommandResponse
        do {
            state.withLockedValue {
                $0.selected = nil
                $0.selects += 1
            }
            r = try await connection.execute(cmd, scope: .folder)
        } catch let e as MailError {
            throw e.with(folder: folder)
        }
        var sel = Selection(folder: folder, readOnly: readOnly, validity: FolderValidity(), exists: 0, permanentFlags: nil)
        func note(_ code: ResponseCode?) {
            switch code {
            case .uidValidity(let v)?: sel.validity.uidValidity = UInt64(v)
            case .uidNext(let n)?: sel.validity.uidNext = UInt64(n)
            case .highestModSeq(let m)?: sel.validity.highestModSeq = m
            case .permanentFlags(let f)?: sel.permanentFlags = f
            case .readOnly?: sel.readOnly = true
            default: break
            }
        }
        for u in r.untagged {
            switch u {
            case .condition(let s): note(s.code)
            case .exists(let n): sel.exists = n
            default: break
            }
        }
        note(r.status.code)
        let final = sel
        state.withLockedValue {
            $0.selected = final
            // A read-only mailbox reports no permanent flags; only READ-WRITE tells.
            if !final.readOnly { $0.permanentFlags[folder] = .some(final.permanentFlags) }
            if let v = final.validity.uidValidity { $0.uidValidity[folder] = v }
        }
        return sel
    }

    // MARK: Listing

    static let headerFields = ["MESSAGE-ID", "DATE", "FROM", "RECEIVED"]

    public func listMessages(in folder: FolderPath, options listOptions: ListOptions) async throws -> FolderListing {
        let condStore = capabilities.contains(.changeTracking)
        // Always afresh: EXISTS, UIDNEXT and HIGHESTMODSEQ must be current.
        let sel = try await select(folder, readOnly: true, fresh: true)
        var items: [FetchItem] = [.uid, .flags, .rfc822Size, .internalDate]
        if condStore { items.append(.modSeq) }
        if listOptions.includeHeaders { items.append(.body(.headerFields(Self.headerFields), peek: true)) }
        var changedSince: UInt64?
        var incremental = false
        if let since = listOptions.changedSince, condStore, connection.enabled.contains(.qresync),
           let v = since.uidValidity, v == sel.validity.uidValidity, let modSeq = since.highestModSeq {
            changedSince = modSeq
            incremental = true
        }
        var listing = FolderListing(folder: folder, validity: sel.validity, messages: [], isIncremental: incremental)
        if sel.exists == 0 { return listing }
        if incremental, let h = sel.validity.highestModSeq, let c = changedSince, h <= c {
            return listing
        }
        let r: CommandResponse
        do {
            r = try await connection.execute(.uidFetch(.all, items, changedSince: changedSince, vanished: incremental), scope: .folder)
        } catch let e as MailError {
            throw e.with(folder: folder)
        }
        var vanished: [MessageID] = []
        for case .vanished(_, let set) in r.untagged {
            vanished += set.ranges.flatMap { $0.upperBound == UInt32.max ? [$0.lowerBound] : Array($0) }.map { MessageID(String($0)) }
        }
        var byUID: [UInt32: MessageInfo] = [:]
        for f in r.fetches {
            guard let uid = f.uid else { continue }
            var info = byUID[uid] ?? MessageInfo(id: MessageID(String(uid)))
            for a in f.attributes {
                switch a {
                case .flags(let fl): info.flags = Flags(fl)
                case .rfc822Size(let n): info.size = n
                case .internalDate(let d): info.internalDate = d; info.dateSource = .stored
                case .modSeq(let m): info.modSeq = m
                default: break
                }
            }
            for (_, bytes) in f.parts {
                info.headers = HeaderReader.read(bytes.readableBytesView)
            }
            byUID[uid] = info
        }
        listing.messages = byUID.keys.sorted().compactMap { byUID[$0] }
        listing.vanished = vanished.sorted()
        return listing
    }

    // MARK: Fetching

    public func fetchMessages(_ ids: [MessageID], in folder: FolderPath,
                              _ handler: @Sendable (MessageInfo, MessageBody) async throws -> Void) async throws -> [MessageID] {
        var missing: [MessageID] = []
        var uids: [UInt32] = []
        for id in ids {
            if let u = UInt32(id.rawValue), u > 0 { uids.append(u) } else { missing.append(id) }
        }
        uids = Array(Set(uids)).sorted()
        guard !uids.isEmpty else { return missing }
        try await flushAppends()
        try await select(folder, readOnly: true)
        let batches = stride(from: 0, to: uids.count, by: options.fetchBatchSize).map {
            Array(uids[$0..<min(uids.count, $0 + options.fetchBatchSize)])
        }
        let items: [FetchItem] = [.uid, .rfc822Size, .flags, .internalDate, .body(.complete, peek: true)]
        // Every batch goes into the pipeline at once; the connection keeps
        // `pipelineDepth` of them in flight and the rest queued. Servers may
        // run pipelined FETCHes in parallel, so their data shares one sink
        // and is matched by UID.
        let sink = connection.submitGroup(batches.map { .command(.uidFetch(SequenceSet(numbers: $0), items)) })
        var stream = FetchGroupStream(sink: sink, commands: batches.count)
        var seen = Set<UInt32>()
        do {
            try await stream.run(folder: folder, wanted: Set(uids), seen: &seen, store: self, handler)
        } catch {
            // Let the rest of the pipeline run out so that the connection stays usable.
            if !(error is MailError) || (error as? MailError)?.scope != .account { await stream.drain() }
            throw error
        }
        missing += uids.filter { !seen.contains($0) }.map { MessageID(String($0)) }
        return missing
    }

    // MARK: Appending

    public func append(to folder: FolderPath, _ request: AppendRequest, body: MessageBody) async throws -> PendingAppend {
        await appendLock.lock()
        do {
            let p = try await appendLocked(to: folder, request, body: body)
            appendLock.unlock()
            return p
        } catch {
            appendLock.unlock()
            throw error
        }
    }

    /// Ends the open MULTIAPPEND, if any, and waits for its reply, so that
    /// other commands can go and their untagged data is not taken for the
    /// APPEND's (untagged responses go to the oldest command in flight).
    func flushAppends() async throws {
        guard state.withLockedValue({ $0.openBatch != nil }) else { return }
        await appendLock.lock()
        let batch = state.withLockedValue { $0.openBatch }
        await closeOpenBatch()
        appendLock.unlock()
        // Its outcome belongs to its messages' confirmations, not to this caller.
        _ = try? await batch?.result(0)
    }

    /// Ends the open MULTIAPPEND (CRLF); its reply is read in the background
    /// and handed to every message of the batch. Call with `appendLock` held.
    func closeOpenBatch() async {
        guard let batch = state.withLockedValue({ s -> AppendBatch? in
            defer { s.openBatch = nil }
            return s.openBatch
        }) else { return }
        do {
            try await connection.endAppend(batch.pending, .finish)
        } catch {
            batch.settle(.failure(error))
            return
        }
        batch.readReply(store: self)
    }

    /// Runs beside each MULTIAPPEND: ends `batch` once no message has joined
    /// it for `multiAppendLinger`, so that an open command never waits on a
    /// caller that has stopped appending (nor runs into the response deadline).
    func lingerThenClose(_ batch: AppendBatch) async throws {
        while batch.isOpen {
            let generation = batch.generation
            try await Task.sleep(for: options.multiAppendLinger)
            guard batch.isOpen, batch.generation == generation else { continue }
            await appendLock.lock()
            if batch.generation == generation, state.withLockedValue({ $0.openBatch === batch }) {
                // The appender stopped while a confirmation waits on this very
                // batch: most likely it waits for confirmations itself (the
                // transfer engine bounds the appends in flight). Then batches
                // of half that size keep two in flight, one filling while the
                // server stores the other; batches that fill up grow again.
                let c = batch.count
                if c >= 4, batch.hasWaiter {
                    state.withLockedValue { $0.batchLimit = max(2, c / 2) }
                }
                await closeOpenBatch()
            }
            appendLock.unlock()
        }
    }

    private func appendLocked(to folder: FolderPath, _ request: AppendRequest, body: MessageBody) async throws -> PendingAppend {
        let m = try mailbox(folder)
        // Learn PERMANENTFLAGS once per folder.
        var permanent: [Flag]??
        permanent = state.withLockedValue { $0.permanentFlags[folder] }
        if permanent == nil {
            await closeOpenBatch()
            // PERMANENTFLAGS comes only with a read-write SELECT.
            do {
                try await select(folder, readOnly: false, fresh: state.withLockedValue { $0.selected?.readOnly ?? true }, flush: false)
            } catch let e as MailError where e.kind == .notFound {
                throw e.with(folder: folder)
            }
            permanent = state.withLockedValue { $0.permanentFlags[folder] } ?? .some(nil)
        }
        var flags: [Flag] = []
        var dropped: [Flag] = []
        let perm = permanent ?? nil
        let anyKeyword = perm.map { $0.contains(Flag("\\*")) } ?? true
        let maxKeyword = state.withLockedValue { $0.maxKeywordLength } ?? Int.max
        for f in request.flags.sorted where f != .recent {
            if f.isKeyword {
                if f.isValidKeyword && (anyKeyword || perm?.contains(f) == true) && f.name.utf8.count <= maxKeyword {
                    flags.append(f)
                } else {
                    dropped.append(f)
                }
            } else if perm == nil || perm?.contains(f) == true {
                flags.append(f)
            } else {
                dropped.append(f)
            }
        }
        let sourceName = request.sourceID.map { " (source \($0))" } ?? ""
        // The exact size, and whether it holds NUL bytes (literal8 with BINARY, else refused).
        var source = body
        var size = body.size
        var hasNUL = false
        // The whole message when it is in memory (read for the NUL check):
        // a MULTIAPPEND keeps it to send it again alone if the batch is refused.
        var held: ByteBuffer?
        let checkLimit = Self.nulCheckLimit
        if let known = size, known <= Int64(checkLimit) {
            let buffer: ByteBuffer
            do {
                buffer = try await body.collect(upTo: checkLimit)
            } catch let e as MailError {
                throw e.with(folder: folder)
            }
            hasNUL = Self.containsNUL(buffer)
            size = Int64(buffer.readableBytes)
            source = .bytes(buffer)
            held = buffer
        } else if size == nil {
            // No size (POP3): spool to an unlinked temp file, never to memory.
            let spooled: SpooledBody.Spooled
            do {
                spooled = try await SpooledBody.spool(body, inMemoryLimit: checkLimit)
            } catch let e as MailError {
                throw e.with(folder: folder)
            }
            hasNUL = spooled.containsNUL
            size = spooled.size
            source = spooled.body
            held = spooled.buffer
        }
        guard let size else { throw MailError(.storage, scope: .message, "message size unknown", folder: folder) }
        let binary = hasNUL
        if hasNUL, !connection.has(.binary) {
            throw MailError(.unsupported, scope: .message,
                            "the message\(sourceName) contains NUL bytes, which \(host) cannot store (no BINARY extension)",
                            folder: folder, messageID: request.sourceID)
        }
        // Bodies over the check limit stream unread, watched for NUL bytes.
        let streamed = !binary && size > Int64(checkLimit)
        let hasher = HashingBody(source, checkNUL: streamed)
        // A keyword longer than Dovecot's default limit may be refused mid-command:
        // the literal then waits for "+" (see `batchedKeywordLimit`).
        let message = AppendWriter.Message(flags: flags, internalDate: request.internalDate, size: size, binary: binary,
                                           synchronizing: Self.mayBeRefusedForKeywords(flags))
        let finalDropped = dropped
        if !dropped.isEmpty {
            logger.info("keywords dropped on append", metadata: ["folder": "\(folder)", "flags": "\(dropped.map(\.name))"])
        }

        // MULTIAPPEND: small messages (held in memory) for one folder share
        // one command, unless a batch for that folder was refused this session.
        let (open, limit, unbatched) = state.withLockedValue {
            ($0.openBatch, $0.batchLimit ?? options.multiAppendMessages, $0.unbatched.contains(folder))
        }
        let batchable = connection.has(.multiAppend) && options.multiAppendMessages > 1 && !streamed
            && held != nil && !unbatched && !flags.contains { $0.isKeyword && $0.name.utf8.count > Self.batchedKeywordLimit }
        if let open, !(batchable && open.folder == folder && open.count < limit && open.bytes + size <= options.multiAppendBytes) {
            if open.count >= limit {
                // Full: allow one more next time, up to the option's bound.
                state.withLockedValue { $0.batchLimit = min(options.multiAppendMessages, limit + 1) }
            }
            await closeOpenBatch()
        }
        if batchable, let held {
            let item = AppendBatch.Item(message: message, bytes: held, sourceID: request.sourceID)
            let batch: AppendBatch
            let index: Int
            if let open = state.withLockedValue({ $0.openBatch }) {
                batch = open
                index = batch.join(item)
                do {
                    try await connection.appendNext(batch.pending, message: message, body: hasher)
                } catch {
                    // The command is over: nothing of it was stored.
                    state.withLockedValue { $0.openBatch = nil }
                    if Self.isRefusal(error) {
                        // The server refused the batch before this message's
                        // literal (a synchronising literal it would not take):
                        // each message goes again alone, this one too.
                        // Sent now, before any later message, so the folder keeps its order.
                        // This message's bytes never went: hash them here for its key.
                        do { for try await _ in hasher {} } catch {}
                        let sent = await sendAloneLocked(batch, refusal: error)
                        Task { await self.collectAlone(batch, sent) }
                    } else {
                        let e = Self.batchError(error, folder: folder, count: batch.count)
                        batch.settle(.failure(e))
                        throw e
                    }
                }
            } else {
                let pending: PendingCommand
                do {
                    pending = try await connection.beginAppend(to: m, message: message, body: hasher)
                } catch let e as MailError {
                    throw e.with(folder: folder)
                }
                batch = AppendBatch(folder: folder, pending: pending, uidValidity: state.withLockedValue { $0.uidValidity[folder] },
                                    host: host, logger: logger)
                index = batch.join(item)
                state.withLockedValue {
                    $0.openBatch = batch
                    $0.appendCommands += 1
                }
                Task { try? await self.lingerThenClose(batch) }
            }
            state.withLockedValue { $0.appendedMessages += 1 }
            let key = hasher.finalize()
            let normalized = hasher.normalizedCount
            return PendingAppend {
                batch.noteWaiter()
                let (id, validity) = try await batch.result(index)
                return AppendResult(id: id, uidValidity: validity, key: key, size: size, droppedFlags: finalDropped,
                                    normalizedSize: normalized)
            }
        }

        // A message held in memory can go again without its keywords if the
        // server refuses it for one of them; a streamed one cannot (its bytes
        // are gone), it fails as before.
        let keywordsSent = flags.filter(\.isKeyword)
        let resendable = keywordsSent.isEmpty ? nil : held
        let pending: PendingCommand
        do {
            pending = try await connection.beginAppend(to: m, message: message, body: hasher)
        } catch {
            guard message.synchronizing, resendable != nil, Self.mayBeKeywordRefusal(error) else {
                throw (error as? MailError)?.with(folder: folder) ?? error
            }
            // Refused before its bytes went (it waited for "+"), most likely for a
            // keyword: it goes again without them as its confirmation is awaited,
            // once this append has let go of the append lock.
            state.withLockedValue { $0.appendCommands += 1 }
            do { for try await _ in hasher {} } catch {}
            return finishSingleAppend(.failure(error), folder: folder, message, hasher: hasher, size: size, dropped: dropped,
                                      keywordsSent: keywordsSent, resendable: resendable, sourceID: request.sourceID)
        }
        state.withLockedValue {
            $0.appendCommands += 1
            $0.appendedMessages += 1
        }
        if hasher.sawNUL {
            // Every byte went (the literal is complete); the command ends so
            // that the server refuses it and the session stays usable.
            do {
                try await connection.endAppend(pending, .abort)
            } catch let e as MailError {
                throw e.with(folder: folder)
            }
            let e = MailError(.unsupported, scope: .message,
                              "the message\(sourceName) has NUL bytes part-way through, which \(host) cannot store without the BINARY extension; it was not appended",
                              folder: folder, messageID: request.sourceID)
            let uidValidity = state.withLockedValue { $0.uidValidity[folder] }
            let logger = self.logger
            let host = self.host
            return PendingAppend {
                // The server should answer BAD. If it stored the message anyway, say where.
                if let r = try? await pending.response(scope: .message) {
                    var where_ = ""
                    if case .appendUID(let v, let uids)? = r.status.code, UInt64(v) == uidValidity ?? UInt64(v) {
                        where_ = " as UID \(uids)"
                    }
                    logger.warning("the server accepted an APPEND that was meant to be refused", metadata: ["folder": "\(folder)"])
                    throw MailError(.unsupported, scope: .message,
                                    "\(e.message); \(host) nonetheless stored it\(where_), its NUL bytes possibly altered",
                                    folder: folder, messageID: request.sourceID)
                }
                throw e
            }
        }
        do {
            try await connection.endAppend(pending, .finish)
        } catch let e as MailError {
            throw e.with(folder: folder)
        }
        return finishSingleAppend(.success(pending), folder: folder, message, hasher: hasher, size: size, dropped: dropped,
                                  keywordsSent: keywordsSent, resendable: resendable, sourceID: request.sourceID)
    }

    /// The confirmation of a single APPEND whose bytes `hasher` has seen: its
    /// reply, or (`sent` failed: refused before the bytes) none. A refusal
    /// that its keywords may have caused sends `resendable` again without them.
    private func finishSingleAppend(_ sent: Result<PendingCommand, Error>, folder: FolderPath, _ message: AppendWriter.Message,
                                    hasher: HashingBody, size: Int64, dropped: [Flag], keywordsSent: [Flag],
                                    resendable: ByteBuffer?, sourceID: String?) -> PendingAppend {
        let key = hasher.finalize()
        let normalized = hasher.normalizedCount
        let uidValidity = state.withLockedValue { $0.uidValidity[folder] }
        let logger = self.logger
        return PendingAppend {
            var r: CommandResponse
            var droppedNow = dropped
            do {
                r = try await sent.get().response(scope: .message)
            } catch {
                guard let resendable, Self.mayBeKeywordRefusal(error) else {
                    throw (error as? MailError)?.with(folder: folder) ?? error
                }
                let left: [Flag]
                (r, left) = try await self.appendWithoutKeywords(folder: folder, message, bytes: resendable, keywords: keywordsSent,
                                                                 sourceID: sourceID, refusal: error)
                droppedNow += left
            }
            let (id, validity) = AppendBatch.mapAppendUID(r.status.code, index: 0, count: 1, uidValidity: uidValidity,
                                                          folder: folder, logger: logger)
            return AppendResult(id: id, uidValidity: validity, key: key, size: size, droppedFlags: droppedNow,
                                normalizedSize: normalized)
        }
    }

    /// Whether `buffer` holds a NUL byte (memchr: the byte-wise search over
    /// a ByteBufferView cost ~3% of an IMAP -> IMAP copy's CPU).
    static func containsNUL(_ buffer: ByteBuffer) -> Bool {
        buffer.withUnsafeReadableBytes { raw in
            guard let base = raw.baseAddress, raw.count > 0 else { return false }
            return memchr(base, 0, raw.count) != nil
        }
    }

    /// Messages up to this size are read whole before an APPEND (checked for
    /// NUL bytes, sent as literal8 when needed); bigger ones stream.
    static let nulCheckLimit = 4 * 1024 * 1024

    /// A message with a longer keyword goes alone, never in a MULTIAPPEND.
    /// Dovecot (2.3, `mail_max_keyword_length` = 50 by default) refuses such
    /// a keyword with NO at once, mid-command, and then reads the rest of
    /// the batch's LITERAL+ bytes as commands: the session falls out of step
    /// (and message lines would be run as commands). Alone, the APPEND is
    /// refused cleanly ("Keyword length too long") and the session goes on.
    static let batchedKeywordLimit = 50

    /// A keyword longer than `batchedKeywordLimit`: the server may refuse the
    /// APPEND for it as soon as it reads the command line, so the literal must
    /// wait for "+". With LITERAL+ Dovecot 2.3 then reads the message's own
    /// lines as commands (seen as "a reply for the unknown tag To:").
    static func mayBeRefusedForKeywords(_ flags: [Flag]) -> Bool {
        flags.contains { $0.isKeyword && $0.name.utf8.count > batchedKeywordLimit }
    }

    /// True for a refusal of the command itself (NO) that says nothing about
    /// the session or the account: with a MULTIAPPEND, possibly caused by
    /// one of its messages only. Not BAD, a lost connection, a timeout,
    /// throttling, quota or a missing folder.
    static func isRefusal(_ error: Error) -> Bool {
        guard let e = error as? MailError else { return false }
        return e.scope == .message && e.kind == .refused
    }

    /// A refusal of a single APPEND that its keywords may have caused: a
    /// plain NO for this message (not BAD, throttling, quota, a missing
    /// folder, a lost connection, nor a refusal that asks to try again later).
    static func mayBeKeywordRefusal(_ error: Error) -> Bool {
        guard isRefusal(error), let e = error as? MailError else { return false }
        return !e.retryable
    }

    /// The server refused one APPEND that carried `keywords` (Dovecot:
    /// `NO [CANNOT] Keyword length too long`). Sends the same bytes again so
    /// that the rest of the message still goes through (SPEC: the report
    /// names the keywords dropped): when the reply says a keyword was too
    /// long, first without the keywords over Dovecot's default limit (50),
    /// so short ones such as `$Label1` are kept; if still refused, or the
    /// reply says nothing of length, with the system flags only. Learns the
    /// longest keyword the server takes from a length refusal. Returns the
    /// reply and the keywords left out; throws the last refusal if the
    /// server will not take the message without its keywords either.
    func appendWithoutKeywords(folder: FolderPath, _ message: AppendWriter.Message, bytes: ByteBuffer, keywords: [Flag],
                               sourceID: String?, refusal: Error) async throws -> (CommandResponse, [Flag]) {
        let text = ((refusal as? MailError)?.message ?? "\(refusal)").lowercased()
        let aboutLength = text.contains("keyword") && (text.contains("long") || text.contains("length"))
        if aboutLength, let longest = keywords.map({ $0.name.utf8.count }).max(), longest > 1 {
            state.withLockedValue { $0.maxKeywordLength = min($0.maxKeywordLength ?? Int.max, longest - 1) }
        }
        var attempts: [[Flag]] = []
        let short = keywords.filter { $0.name.utf8.count <= Self.batchedKeywordLimit }
        if aboutLength, !short.isEmpty, short.count < keywords.count { attempts.append(short) }
        attempts.append([])
        var lastError = refusal
        for keep in attempts {
            let left = keywords.filter { !keep.contains($0) }
            logger.warning("the server refused the message with its keywords; sending it again without some of them",
                           metadata: ["folder": "\(folder)", "message": "\(sourceID ?? "?")",
                                      "dropped": "\(left.map(\.name))", "reply": "\(lastError)"])
            var plain = message
            plain.flags = message.flags.filter { !$0.isKeyword || keep.contains($0) }
            plain.synchronizing = Self.mayBeRefusedForKeywords(plain.flags)
            await appendLock.lock()
            let pending: PendingCommand
            do {
                await closeOpenBatch()
                let m = try mailbox(folder)
                pending = try await connection.beginAppend(to: m, message: plain, body: MessageBody.bytes(bytes))
                try await connection.endAppend(pending, .finish)
                state.withLockedValue { $0.appendCommands += 1 }
                appendLock.unlock()
            } catch {
                appendLock.unlock()
                throw Self.withSource((error as? MailError)?.with(folder: folder) ?? error, sourceID)
            }
            do {
                return (try await pending.response(scope: .message), left)
            } catch {
                lastError = error
                guard Self.mayBeKeywordRefusal(error) else { break }
            }
        }
        throw Self.withSource((lastError as? MailError)?.with(folder: folder) ?? lastError, sourceID)
    }

    /// A MULTIAPPEND was refused (NO): the server stored none of it, and one
    /// message may be the cause. Sends each of its messages again as its own
    /// APPEND, in order, so that only the message(s) the server refuses alone
    /// fail, each with the server's own words; later messages for the folder
    /// go alone for the rest of the session.
    func resendAlone(_ batch: AppendBatch, refusal: Error) async {
        await appendLock.lock()
        await closeOpenBatch()
        let sent = await sendAloneLocked(batch, refusal: refusal)
        appendLock.unlock()
        await collectAlone(batch, sent)
    }

    /// Sends each message of the refused `batch` as its own APPEND. Call
    /// with `appendLock` held. nil: nothing to send again (the batch is settled).
    func sendAloneLocked(_ batch: AppendBatch, refusal: Error) async -> [Result<PendingCommand, Error>]? {
        let folder = batch.folder
        batch.markClosed()
        let items = batch.takeItems()
        guard items.count > 1, let m = try? mailbox(folder) else {
            batch.settle(.failure(Self.batchError(refusal, folder: folder, count: items.count)))
            return nil
        }
        state.withLockedValue { _ = $0.unbatched.insert(folder) }
        logger.notice("MULTIAPPEND refused; sending its messages one by one",
                      metadata: ["folder": "\(folder)", "messages": "\(items.count)", "reply": "\(refusal)"])
        var sent: [Result<PendingCommand, Error>] = []
        for item in items {
            do {
                let p = try await connection.beginAppend(to: m, message: item.message, body: MessageBody.bytes(item.bytes))
                try await connection.endAppend(p, .finish)
                state.withLockedValue { $0.appendCommands += 1 }
                sent.append(.success(p))
            } catch {
                sent.append(.failure(Self.withSource(Self.batchError(error, folder: folder, count: 1), item.sourceID)))
            }
        }
        return sent
    }

    /// Each message's own reply to `sendAloneLocked`'s APPENDs, handed to
    /// the batch's waiters.
    func collectAlone(_ batch: AppendBatch, _ sent: [Result<PendingCommand, Error>]?) async {
        guard let sent else { return }
        let folder = batch.folder
        let sources = batch.sourceIDs
        var results: [Result<(MessageID?, UInt64?), Error>] = []
        for (i, s) in sent.enumerated() {
            switch s {
            case .success(let p):
                do {
                    let r = try await p.response(scope: .message)
                    results.append(.success(AppendBatch.mapAppendUID(r.status.code, index: 0, count: 1, uidValidity: batch.uidValidity,
                                                                     folder: folder, logger: logger)))
                } catch {
                    let id = i < sources.count ? sources[i] : nil
                    results.append(.failure(Self.withSource(Self.batchError(error, folder: folder, count: 1), id)))
                }
            case .failure(let e):
                results.append(.failure(e))
            }
        }
        batch.settleEach(results)
    }

    static func withSource(_ error: Error, _ sourceID: String?) -> Error {
        guard var e = error as? MailError, e.messageID == nil, let sourceID else { return error }
        e.messageID = sourceID
        return e
    }

    static func batchError(_ error: Error, folder: FolderPath, count: Int) -> Error {
        guard var e = error as? MailError else { return error }
        e = e.with(folder: folder)
        if count > 1, e.scope == .message {
            e.message += " (a MULTIAPPEND of \(count) messages fails as a whole; none of them was stored)"
        }
        return e
    }

    // MARK: Changing

    public func setFlags(_ flags: Flags, _ change: FlagChange, for ids: [MessageID], in folder: FolderPath) async throws {
        let uids = ids.compactMap { UInt32($0.rawValue) }
        guard !uids.isEmpty else { return }
        try await flushAppends()
        try await select(folder, readOnly: false)
        let mode: StoreMode = change == .add ? .add : change == .remove ? .remove : .replace
        let list = flags.sorted.filter { $0 != .recent && (!$0.isKeyword || $0.isValidKeyword) }
        let pending = SequenceSet(numbers: uids).chunked().map {
            connection.submit(.command(.uidStore($0, mode, silent: true, flags: list)))
        }
        for p in pending {
            do { _ = try await p.response(scope: .folder) } catch let e as MailError { throw e.with(folder: folder) }
        }
    }

    public func delete(_ ids: [MessageID], in folder: FolderPath) async throws {
        let uids = ids.compactMap { UInt32($0.rawValue) }
        guard !uids.isEmpty else { return }
        try await setFlags([.deleted], .add, for: ids, in: folder)
        do {
            if connection.has(.uidPlus) {
                for set in SequenceSet(numbers: uids).chunked() {
                    try await connection.execute(.uidExpunge(set), scope: .folder)
                }
            } else {
                // Plain EXPUNGE also removes messages the user marked \Deleted; only
                // run it when every \Deleted message is one of ours.
                let r = try await connection.execute(.uidSearch(.deleted), scope: .folder)
                var deleted = Set<UInt32>()
                for case .search(let s) in r.untagged { deleted.formUnion(s.numbers) }
                if deleted.isSubset(of: Set(uids)) {
                    try await connection.execute(.expunge, scope: .folder)
                } else {
                    logger.warning("messages left marked \\Deleted: the server lacks UIDPLUS and other messages are marked too",
                                   metadata: ["folder": "\(folder)"])
                }
            }
        } catch let e as MailError {
            throw e.with(folder: folder)
        }
    }

    public func close() async throws {
        try? await flushAppends()
        await connection.logout()
    }
}

extension Optional where Wrapped == Bool {
    var orFalse: Bool { self ?? false }
}

/// Reads the responses of a group of pipelined UID FETCH commands and hands
/// each wanted message's body to the handler as it streams.
struct FetchGroupStream {
    let sink: ResponseSink
    let commands: Int
    var completed = 0
    var firstFailure: MailError?

    init(sink: ResponseSink, commands: Int) {
        self.sink = sink
        self.commands = commands
    }

    mutating func run(folder: FolderPath, wanted: Set<UInt32>, seen: inout Set<UInt32>, store: IMAPStore,
                      _ handler: @Sendable (MessageInfo, MessageBody) async throws -> Void) async throws {
        var info: MessageInfo?
        var uid: UInt32?
        while completed < commands {
            let item: ResponseSink.Item
            do {
                item = try await sink.next()
            } catch let e as MailError {
                throw e.with(folder: folder)
            }
            switch item {
            case .fetch(.fetchStart):
                info = MessageInfo(id: MessageID(""))
                uid = nil
            case .fetch(.fetchAttribute(let a)):
                switch a {
                case .uid(let u): uid = u; info?.id = MessageID(String(u))
                case .flags(let f): info?.flags = Flags(f)
                case .rfc822Size(let n): info?.size = n
                case .internalDate(let d): info?.internalDate = d; info?.dateSource = .stored
                case .modSeq(let m): info?.modSeq = m
                default: break
                }
            case .fetch(.streamingBegin(let kind, let size)):
                let reader = BodyReader(sink: sink)
                guard case .body(let section, nil) = kind, section == .complete, let u = uid, wanted.contains(u), !seen.contains(u),
                      var i = info else {
                    // Not one we asked for (or the UID came after the body): skip its bytes.
                    if uid == nil { store.logger.warning("FETCH body before its UID; skipped", metadata: ["folder": "\(folder)"]) }
                    try await reader.drain()
                    continue
                }
                seen.insert(u)
                i.size = size
                let body = MessageBody(size: size) { try await reader.next() }
                do {
                    try await handler(i, body)
                } catch {
                    try? await reader.drain()
                    throw error
                }
                try await reader.drain()
            case .fetch(.fetchEnd):
                info = nil
                uid = nil
            case .fetch, .untagged, .continuation, .readyForBody:
                break
            case .completed(let status):
                completed += 1
                if status.kind == .ok { continue }
                // Messages expunged meanwhile: the rest arrived, the missing ones are reported.
                if status.kind == .no, !(status.code?.isThrottling ?? false) {
                    store.logger.info("UID FETCH ended with NO: \(status.text)", metadata: ["folder": "\(folder)"])
                    continue
                }
                if firstFailure == nil {
                    firstFailure = IMAPErrors.from(status, command: "UID FETCH", host: store.host, scope: .folder).with(folder: folder)
                }
            }
        }
        if let firstFailure { throw firstFailure }
    }

    /// Consumes what is left of the group.
    mutating func drain() async {
        while completed < commands {
            guard let item = try? await sink.next() else { return }
            if case .completed = item { completed += 1 }
        }
    }
}

/// Hands out one streamed body from a FETCH's sink, then stops at its end.
final class BodyReader: @unchecked Sendable {
    private let sink: ResponseSink
    private let lock = NIOLock()
    private var ended = false

    init(sink: ResponseSink) { self.sink = sink }

    func next() async throws -> ByteBuffer? {
        if lock.withLock({ ended }) { return nil }
        while true {
            switch try await sink.next() {
            case .fetch(.streamingBytes(let b)): return b
            case .fetch(.streamingEnd):
                lock.withLock { ended = true }
                return nil
            case .completed:
                lock.withLock { ended = true }
                throw MailError(.protocolViolation, scope: .folder, "the FETCH ended inside a message body")
            default: continue
            }
        }
    }

    func drain() async throws {
        while try await next() != nil {}
    }
}

/// Passes a body through while hashing it (the key of the bytes as sent),
/// optionally watching for NUL bytes (every byte still passes, so that the
/// literal is complete and the APPEND can be refused cleanly).
final class HashingBody: AsyncSequence, @unchecked Sendable {
    typealias Element = ByteBuffer
    private let body: MessageBody
    private let lock = NIOLock()
    private var hasher = MessageHasher()
    private let checkNUL: Bool
    private(set) var sawNUL = false

    init(_ body: MessageBody, checkNUL: Bool) {
        self.body = body
        self.checkNUL = checkNUL
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        var inner: MessageBody.AsyncIterator
        let owner: HashingBody
        mutating func next() async throws -> ByteBuffer? {
            guard let chunk = try await inner.next() else { return nil }
            owner.update(chunk)
            return chunk
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(inner: body.makeAsyncIterator(), owner: self) }

    func update(_ chunk: ByteBuffer) {
        lock.withLock {
            chunk.withUnsafeReadableBytes { raw in
                hasher.update(raw)
                if checkNUL, let base = raw.baseAddress, memchr(base, 0, raw.count) != nil { sawNUL = true }
            }
        }
    }

    func finalize() -> MessageKey { lock.withLock { hasher.finalize() } }
    /// Bytes after CRLF normalisation (what the key covers).
    var normalizedCount: Int64 { lock.withLock { hasher.normalizedCount } }
}

/// One MULTIAPPEND (RFC 3502) command: the messages that joined it, and its
/// one reply, shared by all of them. The server stores all or none. Each
/// message's bytes are kept (the buffer already read for the NUL check, not
/// a copy) until the reply, so that a refused batch can be sent again one
/// message at a time (`IMAPStore.resendAlone`).
final class AppendBatch: @unchecked Sendable {
    struct Item: Sendable {
        let message: AppendWriter.Message
        let bytes: ByteBuffer
        let sourceID: String?
    }

    let folder: FolderPath
    let pending: PendingCommand
    /// The folder's UIDVALIDITY when the batch began (from SELECT).
    let uidValidity: UInt64?
    let host: String
    let logger: Logger
    private let lock = NIOLock()
    private var _count = 0
    private var _bytes: Int64 = 0
    private var _generation = 0
    private var _open = true
    private var _waiter = false
    private var items: [Item] = []
    private var _sourceIDs: [String?] = []
    /// The batch's one reply, when its messages share it.
    private var outcome: Result<CommandResponse, Error>?
    /// Each message's own result, when they were sent again one by one.
    private var singles: [Result<(MessageID?, UInt64?), Error>]?
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(folder: FolderPath, pending: PendingCommand, uidValidity: UInt64?, host: String, logger: Logger) {
        self.folder = folder
        self.pending = pending
        self.uidValidity = uidValidity
        self.host = host
        self.logger = logger
    }

    var count: Int { lock.withLock { _count } }
    var bytes: Int64 { lock.withLock { _bytes } }
    var generation: Int { lock.withLock { _generation } }
    /// True until the command line is ended (or the command failed).
    var isOpen: Bool { lock.withLock { _open && !done } }
    private var done: Bool { outcome != nil || singles != nil }

    /// Someone awaits a confirmation from this batch.
    func noteWaiter() { lock.withLock { _waiter = true } }
    var hasWaiter: Bool { lock.withLock { _waiter } }

    /// Adds a message; returns its index in the batch.
    func join(_ item: Item) -> Int {
        lock.withLock {
            _generation += 1
            _bytes += item.message.size
            _count += 1
            items.append(item)
            _sourceIDs.append(item.sourceID)
            return _count - 1
        }
    }

    func markClosed() { lock.withLock { _open = false } }
    var sourceIDs: [String?] { lock.withLock { _sourceIDs } }

    /// The kept messages, handed over once (to be sent again alone).
    func takeItems() -> [Item] {
        lock.withLock {
            defer { items = [] }
            return items
        }
    }

    /// The command line has ended: read the reply in the background. A
    /// refusal (NO) of more than one message sends them again one by one.
    func readReply(store: IMAPStore) {
        lock.withLock { _open = false }
        let pending = self.pending
        let folder = self.folder
        Task {
            do {
                let r = try await pending.response(scope: .message)
                self.settle(.success(r))
            } catch {
                if self.count > 1, IMAPStore.isRefusal(error) {
                    await store.resendAlone(self, refusal: error)
                } else {
                    self.settle(.failure(IMAPStore.batchError(error, folder: folder, count: self.count)))
                }
            }
        }
    }

    /// The one reply for every message of the batch.
    func settle(_ result: Result<CommandResponse, Error>) {
        finish { $0.outcome = result }
    }

    /// Each message's own result, in order.
    func settleEach(_ results: [Result<(MessageID?, UInt64?), Error>]) {
        finish { $0.singles = results }
    }

    private func finish(_ set: (AppendBatch) -> Void) {
        let ws: [CheckedContinuation<Void, Never>] = lock.withLock {
            _open = false
            guard !done else { return [] }
            set(self)
            items = []
            defer { waiters = [] }
            return waiters
        }
        for w in ws { w.resume() }
    }

    /// The new UID of message `index` and its UIDVALIDITY (nil when the
    /// server did not tell in a way that can be trusted); throws the
    /// message's refusal.
    func result(_ index: Int) async throws -> (MessageID?, UInt64?) {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now: Bool = lock.withLock {
                if done { return true }
                waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
        let (outcome, singles, count) = lock.withLock { (self.outcome, self.singles, _count) }
        if let singles {
            guard index < singles.count else {
                throw MailError(.storage, scope: .message, "no result for message \(index + 1) of a MULTIAPPEND", folder: folder)
            }
            return try singles[index].get()
        }
        guard let outcome else { throw MailError(.storage, scope: .message, "a MULTIAPPEND ended without a reply", folder: folder) }
        let r = try outcome.get()
        return Self.mapAppendUID(r.status.code, index: index, count: count, uidValidity: uidValidity, folder: folder, logger: logger)
    }

    /// Maps APPENDUID's uid-set (RFC 4315: one UID per appended message, in
    /// order) to message `index` of `count`. Returns no id when the server's
    /// answer cannot be trusted: a UIDVALIDITY other than the folder's (the
    /// mapping would point into another incarnation of the folder), a set
    /// whose size does not match the number of messages, or `*`. The message
    /// was still stored; without an id, later runs find it by its key.
    static func mapAppendUID(_ code: ResponseCode?, index: Int, count: Int, uidValidity: UInt64?, folder: FolderPath,
                             logger: Logger) -> (MessageID?, UInt64?) {
        guard case .appendUID(let v, let set)? = code else { return (nil, nil) }
        if let uidValidity, UInt64(v) != uidValidity {
            logger.warning("APPENDUID names UIDVALIDITY \(v), not the folder's \(uidValidity); the new UID is treated as unknown",
                           metadata: ["folder": "\(folder)"])
            return (nil, nil)
        }
        guard !set.ranges.contains(where: { $0.upperBound == UInt32.max }), set.count == count else {
            logger.warning("APPENDUID \(set) does not give one UID per appended message (\(count)); the new UIDs are treated as unknown",
                           metadata: ["folder": "\(folder)"])
            return (nil, nil)
        }
        let uids = set.numbers
        guard index < uids.count, uids[index] > 0 else { return (nil, nil) }
        return (MessageID(String(uids[index])), UInt64(v))
    }
}

/// A lock that an async task may hold across suspension points. FIFO.
final class AsyncMutex: @unchecked Sendable {
    private let lock = NIOLock()
    private var held = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func lock() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now: Bool = lock.withLock {
                if held {
                    waiters.append(c)
                    return false
                }
                held = true
                return true
            }
            if now { c.resume() }
        }
    }

    func unlock() {
        let next: CheckedContinuation<Void, Never>? = lock.withLock {
            if waiters.isEmpty {
                held = false
                return nil
            }
            return waiters.removeFirst()
        }
        next?.resume()
    }
}

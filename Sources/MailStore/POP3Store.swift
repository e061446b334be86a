import Foundation
import Logging
import MailModel
import MailNet
import NIOCore
import POP3Client
import POP3Core

/// How a `POP3Store` reads its account.
public struct POP3StoreOptions: Sendable, Hashable {
    public var client: POP3ClientOptions
    /// Dovecot (and others) end a message that lacks a final line break with
    /// an added CRLF. When a retrieved message is exactly its LIST size plus
    /// a final CRLF, that CRLF is dropped so the key matches the original.
    public var stripAddedFinalCRLF: Bool

    public init(client: POP3ClientOptions = POP3ClientOptions(), stripAddedFinalCRLF: Bool = true) {
        self.client = client
        self.stripAddedFinalCRLF = stripAddedFinalCRLF
    }
}

/// A POP3 account as a `MailStore`: one folder (INBOX), read and delete only.
///
/// - Message ids are the UIDL ids. A server without UIDL gets stable
///   synthetic ids (`hdr-…`, a hash of the `TOP n 0` header block and the
///   LIST size; `idsAreSynthetic` says so, for the report).
/// - INTERNALDATE is the first `Received:` date, else `Date:`, else the time
///   of download; `MessageInfo.dateSource` says which.
/// - `delete` sends DELE inside the session; only `close()` (QUIT) commits.
///   A session that ends any other way deletes nothing.
/// - Bodies stream (`MessageBody.size` is nil: LIST sizes are not exact on
///   every server).
public final class POP3Store: MailStore, @unchecked Sendable {
    public let location: StoreLocation
    public let options: POP3StoreOptions
    private let connection: POP3Connection
    private let logger: Logger

    /// True when the server has no UIDL and ids were made from headers.
    public private(set) var idsAreSynthetic = false
    /// The id → message number map of the last listing.
    private var numbers: [MessageID: Int] = [:]
    private var listed: [MessageID: MessageInfo] = [:]
    private var listSizes: [Int: Int64] = [:]
    private var markedForDeletion: Set<MessageID> = []

    /// Headers come from `TOP n 0`, one request per message; `fetchMessages`
    /// reads them from each RETR'd body (`headersPerMessage`).
    public var capabilities: StoreCapabilities { [.delete, .persistentIDs, .headersPerMessage] }

    /// Messages marked with DELE in this session, not yet committed by `close()`.
    public var pendingDeletions: Set<MessageID> { markedForDeletion }

    /// The login method the server accepted, for reports.
    public var loginMethod: String? { connection.loginMethod }
    public var serverCapabilities: POP3Capabilities? { connection.capabilities }
    public var isPipelining: Bool { connection.isPipelining }

    private init(location: StoreLocation, options: POP3StoreOptions, connection: POP3Connection, logger: Logger) {
        self.location = location
        self.options = options
        self.connection = connection
        self.logger = logger
    }

    /// Connects, negotiates TLS and logs in.
    public static func open(settings: ConnectionSettings, credentials: Credentials,
                            options: POP3StoreOptions = .init(), logger: Logger) async throws -> POP3Store {
        let connection = try await POP3Connection.connect(settings: settings, credentials: credentials,
                                                          options: options.client, logger: logger)
        let location = StoreLocation.pop3(.init(user: credentials.user, host: settings.host, port: settings.port, tls: settings.tls))
        return POP3Store(location: location, options: options, connection: connection, logger: logger)
    }

    public func folders() async throws -> [FolderInfo] {
        let s = try await connection.stat()
        return [FolderInfo(path: .inbox, role: nil, selectable: true, messageCount: s.count, totalSize: s.size)]
    }

    public func createFolder(_ path: FolderPath) async throws {
        guard path.isInbox else { throw unsupported("create folders (POP3 has only INBOX)") }
    }

    private func checkFolder(_ folder: FolderPath) throws {
        guard folder.isInbox else {
            throw MailError(.notFound, scope: .folder, "\(location) has only INBOX", folder: folder)
        }
    }

    public func listMessages(in folder: FolderPath, options listOptions: ListOptions) async throws -> FolderListing {
        try checkFolder(folder)
        let scan = try await connection.list()
        let uids = try await connection.uidl()
        var sizeOf: [Int: Int64] = [:]
        for s in scan { sizeOf[s.number] = s.size }
        let order = scan.map(\.number)
        var ids: [Int: MessageID] = [:]
        var headers: [Int: HeaderSummary] = [:]
        let needHeaders = listOptions.includeHeaders || uids == nil
        var headerHashes: [Int: MessageKey] = [:]
        if needHeaders && !order.isEmpty {
            // The header block is hashed only for synthetic ids (no UIDL).
            let hashHeaders = uids == nil
            let missing = try await connection.top(order, lines: 0) { n, stream in
                var reader = HeaderReader()
                var hasher = MessageHasher()
                while let chunk = try await stream.next() {
                    if hashHeaders { chunk.withUnsafeReadableBytes { hasher.update($0) } }
                    reader.feed(chunk.readableBytesView)
                }
                headers[n] = reader.finish()
                if hashHeaders { headerHashes[n] = hasher.finalize() }
            }
            if !missing.isEmpty { logger.debug("TOP found messages gone", metadata: ["numbers": "\(missing)"]) }
        }
        if let uids {
            for u in uids { ids[u.number] = MessageID(u.uniqueID) }
            idsAreSynthetic = false
        } else {
            // No UIDL: an id from the header block and size, stable across
            // sessions; identical ones are told apart by their order.
            idsAreSynthetic = true
            var seen: [String: Int] = [:]
            for n in order {
                var h = MessageHasher()
                h.update(Array((headerHashes[n]?.hex ?? "no-headers").utf8))
                h.update(Array(" \(sizeOf[n] ?? -1)".utf8))
                let base = "hdr-" + String(h.finalize().hex.prefix(32))
                let k = seen[base, default: 0] + 1
                seen[base] = k
                ids[n] = MessageID(k == 1 ? base : "\(base)-\(k)")
            }
        }
        var messages: [MessageInfo] = []
        let listedAt = InternalDate.now()
        numbers = [:]
        listed = [:]
        listSizes = sizeOf
        for n in order {
            guard let id = ids[n] else {
                throw MailError(.protocolViolation, scope: .folder, "\(location.description) listed message \(n) without a UIDL id",
                                folder: .inbox)
            }
            var info = MessageInfo(id: id, size: sizeOf[n])
            if let h = headers[n] {
                info.headers = h
                if let r = h.firstReceivedDate {
                    info.internalDate = r
                    info.dateSource = .received
                } else if let d = h.date {
                    info.internalDate = d
                    info.dateSource = .dateHeader
                } else {
                    // Nothing in the headers: the message gets the time it is
                    // listed for download (the same run fetches it).
                    info.internalDate = listedAt
                    info.dateSource = .downloadTime
                }
            }
            if numbers[id] != nil {
                throw MailError(.protocolViolation, scope: .folder, "\(location.description) gave two messages the UIDL \(id)",
                                folder: .inbox, messageID: id.rawValue)
            }
            numbers[id] = n
            listed[id] = info
            messages.append(info)
        }
        return FolderListing(folder: .inbox, validity: FolderValidity(), messages: messages,
                             idsAreSynthetic: idsAreSynthetic)
    }

    public func fetchMessages(_ ids: [MessageID], in folder: FolderPath,
                              _ handler: @Sendable (MessageInfo, MessageBody) async throws -> Void) async throws -> [MessageID] {
        try checkFolder(folder)
        if numbers.isEmpty && !ids.isEmpty { _ = try await listMessages(in: .inbox, options: ListOptions()) }
        var gone: [MessageID] = []
        var wanted: [(MessageID, Int)] = []
        for id in ids {
            if let n = numbers[id], !markedForDeletion.contains(id) { wanted.append((id, n)) } else { gone.append(id) }
        }
        let byNumber = Dictionary(wanted.map { ($0.1, $0.0) }, uniquingKeysWith: { a, _ in a })
        let strip = options.stripAddedFinalCRLF
        let missing = try await connection.retrieve(wanted.map(\.1)) { n, stream in
            guard let id = byNumber[n] else { return }
            var info = self.listed[id] ?? MessageInfo(id: id, size: self.listSizes[n])
            let body = POP3BodyAdapter(stream: stream, listSize: strip ? self.listSizes[n] : nil)
            if info.dateSource == nil || info.headers == nil {
                // Read the header block (bounded) before handing the body on,
                // to give the message its date; the bytes are replayed.
                let summary = try await body.readHeaders()
                if info.headers == nil { info.headers = summary }
                if info.dateSource == nil {
                    let (date, source) = summary.impliedInternalDate(downloadedAt: .now())
                    info.internalDate = date
                    info.dateSource = source
                }
            }
            do {
                try await handler(info, MessageBody(size: nil) { try await body.next() })
            } catch let e as MailError {
                throw e.with(messageID: id.rawValue)
            }
        }
        // A refused RETR means gone only if LIST agrees; otherwise it is an
        // error for that message, not a silent skip.
        for n in missing {
            guard let id = byNumber[n] else { continue }
            if try await connection.exists(n) {
                throw MailError(.refused, scope: .message, retryable: true,
                                "\(location.description) refused to send message \(n) although it is listed",
                                folder: .inbox, messageID: id.rawValue)
            }
            gone.append(id)
        }
        return gone
    }

    public func append(to folder: FolderPath, _ request: AppendRequest, body: MessageBody) async throws -> PendingAppend {
        throw unsupported("append (POP3 is read-only)")
    }

    public func setFlags(_ flags: Flags, _ change: FlagChange, for ids: [MessageID], in folder: FolderPath) async throws {
        throw unsupported("set flags (POP3 has none)")
    }

    /// Marks messages for deletion (DELE, pipelined). Nothing is removed
    /// until `close()` sends QUIT; a session that ends otherwise keeps them all.
    public func delete(_ ids: [MessageID], in folder: FolderPath) async throws {
        try checkFolder(folder)
        if numbers.isEmpty && !ids.isEmpty { _ = try await listMessages(in: .inbox, options: ListOptions()) }
        let targets = ids.compactMap { id in numbers[id].map { (id, $0) } }.filter { !markedForDeletion.contains($0.0) }
        let refused = Set(try await connection.dele(targets.map(\.1)))
        for (id, n) in targets where !refused.contains(n) { markedForDeletion.insert(id) }
        logger.debug("marked for deletion", metadata: ["count": "\(targets.count - refused.count)"])
    }

    /// QUIT: commits the deletions marked in this session.
    public func close() async throws {
        try await connection.quit()
    }

    /// Drops the connection without QUIT: nothing marked is deleted.
    public func abandon() {
        connection.abort()
    }
}

/// Turns a POP3 message stream into MessageBody chunks: replays the header
/// bytes read ahead for the date, and drops the CRLF a server added to a
/// message without a final line break (seen as LIST size + CRLF).
final class POP3BodyAdapter: @unchecked Sendable {
    private let stream: POP3MessageStream
    private let listSize: Int64?
    private var replay: [ByteBuffer] = []
    private var emitted: Int64 = 0
    /// Bytes past the LIST size, held back (at most 2).
    private var held = ByteBuffer()
    private var heldOverflow = false
    private var finished = false

    init(stream: POP3MessageStream, listSize: Int64?) {
        self.stream = stream
        self.listSize = listSize
    }

    /// Reads chunks until the header block ends (or 256 KB), keeping them
    /// for replay.
    func readHeaders() async throws -> HeaderSummary {
        var reader = HeaderReader()
        while !reader.isComplete, let c = try await rawNext() {
            replay.append(c)
            reader.feed(c.readableBytesView)
        }
        return reader.finish()
    }

    func next() async throws -> ByteBuffer? {
        if !replay.isEmpty { return replay.removeFirst() }
        return try await rawNext()
    }

    /// The stream with the trailing added CRLF handled.
    private func rawNext() async throws -> ByteBuffer? {
        guard !finished else { return nil }
        guard let limit = listSize else {
            let c = try await stream.next()
            if c == nil { finished = true }
            return c
        }
        while true {
            guard var c = try await stream.next() else {
                finished = true
                // Exactly LIST size + CRLF: the server added the CRLF.
                if !heldOverflow, held.readableBytes == 2, held.readableBytesView.elementsEqual([0x0D, 0x0A]) {
                    return nil
                }
                if held.readableBytes > 0 {
                    let h = held
                    held = ByteBuffer()
                    return h
                }
                return nil
            }
            if heldOverflow {
                return c
            }
            let room = limit - emitted
            if Int64(c.readableBytes) <= room {
                emitted += Int64(c.readableBytes)
                return c
            }
            // Part of this chunk lies past the LIST size.
            let keep = Int(max(0, room))
            var out = keep > 0 ? c.readSlice(length: keep) : nil
            emitted += Int64(keep)
            held.writeBuffer(&c)
            if held.readableBytes > 2 {
                // Not the added-CRLF case: hand everything on.
                heldOverflow = true
                if var o = out {
                    o.writeBuffer(&held)
                    held = ByteBuffer()
                    return o
                }
                let h = held
                held = ByteBuffer()
                return h
            }
            if let o = out, o.readableBytes > 0 { out = nil; return o }
        }
    }
}

import Foundation
import MailModel
import NIOCore

/// What a store can do. A POP3 store has one folder, no flags and no append;
/// a Maildir tree can do everything but track changes by MODSEQ.
public struct StoreCapabilities: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// More than one folder, and a hierarchy.
    public static let folders = StoreCapabilities(rawValue: 1 << 0)
    /// Folders can be created.
    public static let createFolders = StoreCapabilities(rawValue: 1 << 1)
    /// Messages can be appended.
    public static let append = StoreCapabilities(rawValue: 1 << 2)
    /// System flags are kept.
    public static let flags = StoreCapabilities(rawValue: 1 << 3)
    /// Keywords are kept (see `StoreCapabilities` of the folder for refusals).
    public static let keywords = StoreCapabilities(rawValue: 1 << 4)
    /// INTERNALDATE is kept on append.
    public static let internalDate = StoreCapabilities(rawValue: 1 << 5)
    /// Messages can be deleted.
    public static let delete = StoreCapabilities(rawValue: 1 << 6)
    /// Flags can be changed after append.
    public static let setFlags = StoreCapabilities(rawValue: 1 << 7)
    /// `listMessages(changedSince:)` returns only changes (CONDSTORE/QRESYNC).
    public static let changeTracking = StoreCapabilities(rawValue: 1 << 8)
    /// Message ids stay valid across sessions while `FolderValidity.uidValidity` holds.
    public static let persistentIDs = StoreCapabilities(rawValue: 1 << 9)
    /// Appends report the new message's id (IMAP UIDPLUS, Maildir file name).
    public static let appendReturnsID = StoreCapabilities(rawValue: 1 << 10)
    /// The store may rewrite messages on append (then verification falls back to headers).
    public static let rewritesMessages = StoreCapabilities(rawValue: 1 << 11)
    /// `AppendResult.key` (and its sizes) are computed by the store from the
    /// very bytes it wrote, as it wrote them: a caller need not hash the body
    /// a second time to check what was stored (Maildir).
    public static let keysWrittenBytes = StoreCapabilities(rawValue: 1 << 12)
    /// Headers in a listing cost a request per message (POP3: `TOP n 0`);
    /// the bodies a fetch hands out come with them read (`MessageInfo.headers`).
    /// The engine then asks for them only when a destination's messages must
    /// be matched, not to tell a source's own duplicates apart.
    public static let headersPerMessage = StoreCapabilities(rawValue: 1 << 13)

    public static let localTree: StoreCapabilities = [.folders, .createFolders, .append, .flags, .keywords,
                                                      .internalDate, .delete, .setFlags, .persistentIDs, .appendReturnsID]

    public var description: String {
        let names: [(StoreCapabilities, String)] = [
            (.folders, "folders"), (.createFolders, "createFolders"), (.append, "append"), (.flags, "flags"),
            (.keywords, "keywords"), (.internalDate, "internalDate"), (.delete, "delete"), (.setFlags, "setFlags"),
            (.changeTracking, "changeTracking"), (.persistentIDs, "persistentIDs"),
            (.appendReturnsID, "appendReturnsID"), (.rewritesMessages, "rewritesMessages"),
            (.keysWrittenBytes, "keysWrittenBytes"), (.headersPerMessage, "headersPerMessage"),
        ]
        return names.filter { contains($0.0) }.map(\.1).joined(separator: ",")
    }
}

/// How a listing is asked for.
public struct ListOptions: Sendable, Hashable {
    /// Also read Message-ID, Date, From and the first Received date of each
    /// message (IMAP: BODY.PEEK[HEADER.FIELDS (...)]; POP3: TOP n 0).
    public var includeHeaders: Bool
    /// Only what changed since this MODSEQ, when the store has `.changeTracking`
    /// and the folder's UIDVALIDITY still equals `changedSince.uidValidity`.
    public var changedSince: FolderValidity?

    public init(includeHeaders: Bool = false, changedSince: FolderValidity? = nil) {
        self.includeHeaders = includeHeaders
        self.changedSince = changedSince
    }
}

/// A message to append.
public struct AppendRequest: Sendable, Hashable {
    public var flags: Flags
    public var internalDate: InternalDate?
    /// The key, when the caller already knows it (stores may use it to name files).
    public var key: MessageKey?
    /// Where `internalDate` came from at the source (POP3: a Received header…),
    /// for stores that record it (the archive catalog).
    public var dateSource: DateSource?
    /// The message's identity at the source (folder, UIDVALIDITY and UID, a
    /// UIDL, a file name), for stores that record provenance (the archive
    /// catalog). Never used to find a message.
    public var sourceID: String?

    public init(flags: Flags = [], internalDate: InternalDate? = nil, key: MessageKey? = nil,
                dateSource: DateSource? = nil, sourceID: String? = nil) {
        self.flags = flags
        self.internalDate = internalDate
        self.key = key
        self.dateSource = dateSource
        self.sourceID = sourceID
    }
}

/// What a confirmed append left behind.
public struct AppendResult: Sendable, Hashable {
    /// The new message's id, when the store reports it (APPENDUID, file name).
    public var id: MessageID?
    /// The folder's UIDVALIDITY the id belongs to.
    public var uidValidity: UInt64?
    /// The key of the bytes as they were sent.
    public var key: MessageKey
    /// Bytes sent.
    public var size: Int64
    /// Keywords the store refused; the message went through without them.
    public var droppedFlags: [Flag]
    /// Bytes after CRLF normalisation (what `key` covers), when the store counted them.
    public var normalizedSize: Int64?

    public init(id: MessageID?, uidValidity: UInt64? = nil, key: MessageKey, size: Int64, droppedFlags: [Flag] = [],
                normalizedSize: Int64? = nil) {
        self.id = id
        self.uidValidity = uidValidity
        self.key = key
        self.size = size
        self.droppedFlags = droppedFlags
        self.normalizedSize = normalizedSize
    }
}

/// An append whose bytes have been handed over but whose confirmation may
/// still be on its way (IMAP pipelining). Await `result()` to learn the outcome.
///
/// The confirmation is waited for once: later calls, and calls made while
/// the first still waits, get the same outcome. A store's wait may send
/// again (IMAP re-sends a message refused for its keywords), so running it
/// twice could store a message twice, and its reply can be read only once.
public struct PendingAppend: Sendable {
    private let outcome: Outcome

    public init(_ wait: @escaping @Sendable () async throws -> AppendResult) { outcome = Outcome(wait) }
    public static func done(_ r: AppendResult) -> PendingAppend { PendingAppend(outcome: Outcome(done: .success(r))) }

    private init(outcome: Outcome) { self.outcome = outcome }

    public func result() async throws -> AppendResult { try await outcome.value() }

    /// The wait, run by the first caller; everyone else gets its result.
    private final class Outcome: @unchecked Sendable {
        private enum State {
            case idle(@Sendable () async throws -> AppendResult)
            case waiting([CheckedContinuation<AppendResult, Error>])
            case done(Result<AppendResult, Error>)
        }

        private let lock = NSLock()
        private var state: State

        init(_ wait: @escaping @Sendable () async throws -> AppendResult) { state = .idle(wait) }
        init(done: Result<AppendResult, Error>) { state = .done(done) }

        func value() async throws -> AppendResult {
            enum Turn { case result(Result<AppendResult, Error>), wait, run(@Sendable () async throws -> AppendResult) }
            let turn: Turn = lock.withLock {
                switch state {
                case .done(let r): return .result(r)
                case .waiting: return .wait
                case .idle(let wait):
                    state = .waiting([])
                    return .run(wait)
                }
            }
            switch turn {
            case .result(let r):
                return try r.get()
            case .wait:
                return try await withCheckedThrowingContinuation { c in
                    let done: Result<AppendResult, Error>? = lock.withLock {
                        switch state {
                        case .waiting(var list):
                            list.append(c)
                            state = .waiting(list)
                            return nil
                        case .done(let r): return r
                        case .idle: return .failure(CancellationError())
                        }
                    }
                    if let done { c.resume(with: done) }
                }
            case .run(let wait):
                let r: Result<AppendResult, Error>
                do { r = .success(try await wait()) } catch { r = .failure(error) }
                let waiters: [CheckedContinuation<AppendResult, Error>] = lock.withLock {
                    defer { state = .done(r) }
                    if case .waiting(let list) = state { return list }
                    return []
                }
                for w in waiters { w.resume(with: r) }
                return try r.get()
            }
        }
    }
}

/// How `setFlags` changes flags.
public enum FlagChange: Sendable, Hashable {
    case replace, add, remove
}

/// One mailbox interface for every kind of store. The operations follow what
/// the transfer engine needs, not any one wire protocol.
///
/// Errors are `MailError`s carrying their scope (message, folder, account).
/// A store instance is used by one task at a time unless it says otherwise;
/// parallel workers open one store (one connection) each.
public protocol MailStore: AnyObject, Sendable {
    /// The store's URL, safe to print.
    var location: StoreLocation { get }
    var capabilities: StoreCapabilities { get }

    /// Every folder, with counts where cheap.
    func folders() async throws -> [FolderInfo]

    /// Creates a folder and any missing parents. Succeeds if it already exists.
    func createFolder(_ path: FolderPath) async throws

    /// The messages of a folder, with ids, sizes, flags and dates.
    func listMessages(in folder: FolderPath, options: ListOptions) async throws -> FolderListing

    /// Streams the given messages in order. `handler` is called once per
    /// message that still exists and must consume (or may abandon) the body
    /// before returning; unread bytes are skipped. Returns the ids that no
    /// longer exist.
    func fetchMessages(
        _ ids: [MessageID], in folder: FolderPath,
        _ handler: @Sendable (MessageInfo, MessageBody) async throws -> Void
    ) async throws -> [MessageID]

    /// Appends one message. Returns once the body has been consumed; the
    /// confirmation may arrive later (pipelining). Call it again before
    /// awaiting the previous result to keep several appends in flight.
    func append(to folder: FolderPath, _ request: AppendRequest, body: MessageBody) async throws -> PendingAppend

    /// Changes flags of messages.
    func setFlags(_ flags: Flags, _ change: FlagChange, for ids: [MessageID], in folder: FolderPath) async throws

    /// Deletes messages. POP3 marks them and commits only on `close()`.
    func delete(_ ids: [MessageID], in folder: FolderPath) async throws

    /// Ends the session cleanly (IMAP LOGOUT, POP3 QUIT which commits deletes,
    /// file handles closed). A store that is not closed commits nothing pending.
    func close() async throws
}

extension MailStore {
    public func listMessages(in folder: FolderPath) async throws -> FolderListing {
        try await listMessages(in: folder, options: ListOptions())
    }

    func unsupported(_ what: String) -> MailError {
        MailError(.unsupported, scope: .account, "\(location) cannot \(what)")
    }
}

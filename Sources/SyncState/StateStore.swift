import MailModel

/// Which end of a job a folder or message belongs to.
public enum Side: String, Sendable, Codable, Hashable, CaseIterable {
    case source, destination
}

/// What a run last saw of one folder on one side: UIDVALIDITY, UIDNEXT and
/// HIGHESTMODSEQ, and the highest id it has dealt with. When `uidValidity`
/// changes, every id remembered for that folder is void and keys decide.
public struct FolderMark: Sendable, Hashable, Codable {
    public var side: Side
    public var folder: FolderPath
    public var validity: FolderValidity
    /// The highest message id dealt with (UID high-water mark), if ids are numeric.
    public var lastID: MessageID?

    public init(side: Side, folder: FolderPath, validity: FolderValidity, lastID: MessageID? = nil) {
        self.side = side
        self.folder = folder
        self.validity = validity
        self.lastID = lastID
    }
}

/// How a destination message was found to be a source message.
public enum MatchKind: String, Sendable, Codable, Hashable {
    /// Same SHA-256 key: the same bytes.
    case key
    /// Same Message-ID, Date and From, for destinations that rewrite messages.
    case headers
}

/// One id whose key is known: the id -> key half of the map on the source
/// side, the key -> id half on the destination side.
public struct KnownMessage: Sendable, Hashable, Codable {
    public var side: Side
    public var folder: FolderPath
    public var id: MessageID
    /// The folder's UIDVALIDITY the id belongs to.
    public var uidValidity: UInt64?
    public var key: MessageKey
    /// Bytes after CRLF normalisation, when known.
    public var size: Int64?
    /// Destination side: the source folder the message was copied from, or
    /// nil when it was already there (earlier run of another tool).
    public var origin: FolderPath?
    public var matchedBy: MatchKind

    public init(side: Side, folder: FolderPath, id: MessageID, uidValidity: UInt64?, key: MessageKey,
                size: Int64? = nil, origin: FolderPath? = nil, matchedBy: MatchKind = .key) {
        self.side = side
        self.folder = folder
        self.id = id
        self.uidValidity = uidValidity
        self.key = key
        self.size = size
        self.origin = origin
        self.matchedBy = matchedBy
    }
}

/// An effect on a store, written to the journal before it is carried out.
public struct JournalEntry: Sendable, Hashable {
    public enum Kind: String, Sendable, Codable, Hashable {
        case createFolder = "create"
        case append
        case setFlags = "flags"
        case delete
    }

    public enum Status: String, Sendable, Codable, Hashable {
        /// Written, effect maybe under way or maybe done: a crash leaves it here.
        case intended
        /// The store confirmed it.
        case confirmed
        /// After a crash: the effect was found to have happened (key found in the destination).
        case settled
        /// After a crash or a failure: the effect was found not to have happened.
        case abandoned
    }

    /// Set by the store when the entry is written.
    public var seq: Int64
    public var kind: Kind
    public var status: Status
    /// For `.delete` and `.setFlags`: the side whose messages change.
    public var side: Side
    public var sourceFolder: FolderPath?
    public var sourceID: MessageID?
    public var sourceUIDValidity: UInt64?
    public var destinationFolder: FolderPath?
    public var destinationID: MessageID?
    public var destinationUIDValidity: UInt64?
    /// The message key, when known before the effect (always known after an append).
    public var key: MessageKey?
    /// Ids a `.delete` or `.setFlags` touches, in `folder` of `side`.
    public var ids: [MessageID]
    public var flags: Flags?

    public init(kind: Kind, status: Status = .intended, side: Side = .destination,
                sourceFolder: FolderPath? = nil, sourceID: MessageID? = nil, sourceUIDValidity: UInt64? = nil,
                destinationFolder: FolderPath? = nil, destinationID: MessageID? = nil,
                destinationUIDValidity: UInt64? = nil, key: MessageKey? = nil, ids: [MessageID] = [],
                flags: Flags? = nil, seq: Int64 = 0) {
        self.seq = seq
        self.kind = kind
        self.status = status
        self.side = side
        self.sourceFolder = sourceFolder
        self.sourceID = sourceID
        self.sourceUIDValidity = sourceUIDValidity
        self.destinationFolder = destinationFolder
        self.destinationID = destinationID
        self.destinationUIDValidity = destinationUIDValidity
        self.key = key
        self.ids = ids
        self.flags = flags
    }

    public static func append(from sourceFolder: FolderPath, id: MessageID, uidValidity: UInt64?,
                              to destinationFolder: FolderPath, key: MessageKey?) -> JournalEntry {
        JournalEntry(kind: .append, side: .destination, sourceFolder: sourceFolder, sourceID: id,
                     sourceUIDValidity: uidValidity, destinationFolder: destinationFolder, key: key)
    }

    /// The folder the effect changes.
    public var targetFolder: FolderPath? { side == .source ? sourceFolder : destinationFolder }
}

/// How an intended effect ended.
public struct JournalOutcome: Sendable, Hashable {
    public var status: JournalEntry.Status
    public var destinationID: MessageID?
    public var destinationUIDValidity: UInt64?
    public var key: MessageKey?

    public init(_ status: JournalEntry.Status, destinationID: MessageID? = nil,
                destinationUIDValidity: UInt64? = nil, key: MessageKey? = nil) {
        self.status = status
        self.destinationID = destinationID
        self.destinationUIDValidity = destinationUIDValidity
        self.key = key
    }
}

/// The resumable state of one job, as the transfer engine sees it: folder
/// marks, the id -> key -> destination id map, and the effect journal.
/// The rule it serves: journal, then act, then confirm.
///
/// Every method is one transaction. Implementations are safe to call from
/// several tasks at once (parallel folder workers).
public protocol StateStore: AnyObject, Sendable {
    /// The folder's last saved mark, if any.
    func mark(_ side: Side, _ folder: FolderPath) throws -> FolderMark?

    /// Saves a mark. When the UIDVALIDITY differs from the saved one, every
    /// id remembered for that side's folder is forgotten in the same
    /// transaction, and the result is true.
    @discardableResult
    func saveMark(_ mark: FolderMark) throws -> Bool

    /// Ids with known keys in a folder.
    func known(_ side: Side, in folder: FolderPath) throws -> [KnownMessage]

    /// Adds or replaces known ids (by side, folder and id).
    func remember(_ messages: [KnownMessage]) throws

    /// Forgets ids that no longer exist.
    func forget(_ side: Side, in folder: FolderPath, ids: [MessageID]) throws

    /// Writes intended effects, in one transaction, before any of them is
    /// carried out. Returns their sequence numbers, in order.
    func intend(_ entries: [JournalEntry]) throws -> [Int64]

    /// Closes an intended effect and records what it taught, in one transaction.
    func complete(_ seq: Int64, _ outcome: JournalOutcome, remember: [KnownMessage]) throws

    /// Closes several intended effects, in order, in one transaction (the
    /// transfer engine batches the confirmations of a window of appends).
    func complete(_ batch: [JournalCompletion]) throws

    /// Effects written as intended and never confirmed: what a crash left open.
    func openEntries() throws -> [JournalEntry]

    /// The journal, oldest first (for audits and tests).
    func journal() throws -> [JournalEntry]
}

/// One `complete` of a batch.
public struct JournalCompletion: Sendable, Hashable {
    public var seq: Int64
    public var outcome: JournalOutcome
    public var remember: [KnownMessage]

    public init(_ seq: Int64, _ outcome: JournalOutcome, remember: [KnownMessage] = []) {
        self.seq = seq
        self.outcome = outcome
        self.remember = remember
    }
}

extension StateStore {
    /// One transaction per entry; stores that can do better override it.
    public func complete(_ batch: [JournalCompletion]) throws {
        for c in batch { try complete(c.seq, c.outcome, remember: c.remember) }
    }

    public func complete(_ seq: Int64, _ outcome: JournalOutcome) throws {
        try complete(seq, outcome, remember: [])
    }

    public func intend(_ entry: JournalEntry) throws -> Int64 {
        let seqs = try intend([entry])
        guard let s = seqs.first else {
            throw MailError(.corrupt, scope: .local, "state store returned no journal sequence number")
        }
        return s
    }
}

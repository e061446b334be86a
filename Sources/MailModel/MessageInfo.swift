/// A message's id inside one store and folder: an IMAP UID, a POP3 UIDL, a
/// Maildir base name, an mbox offset. Opaque outside its store, and only
/// meaningful together with the folder's `FolderListing.validity`.
public struct MessageID: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    public var rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    /// Numeric ids (UIDs) sort numerically; others as strings.
    public static func < (l: MessageID, r: MessageID) -> Bool {
        if let a = UInt64(l.rawValue), let b = UInt64(r.rawValue) { return a < b }
        return l.rawValue < r.rawValue
    }

    public init(from decoder: Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

/// What a listing says about one message, without reading its body.
public struct MessageInfo: Hashable, Sendable, Codable {
    public var id: MessageID
    /// Size in bytes as the store reports it (IMAP RFC822.SIZE, file size), if known.
    public var size: Int64?
    public var flags: Flags
    public var internalDate: InternalDate?
    /// Where `internalDate` came from.
    public var dateSource: DateSource?
    /// The key, when the store knows it without reading the body (archive catalog).
    public var key: MessageKey?
    /// Message-ID, Date and From, when the listing asked for headers.
    public var headers: HeaderSummary?
    /// IMAP MODSEQ (CONDSTORE), if the store tracks changes.
    public var modSeq: UInt64?

    public init(id: MessageID, size: Int64? = nil, flags: Flags = [], internalDate: InternalDate? = nil,
                dateSource: DateSource? = nil, key: MessageKey? = nil, headers: HeaderSummary? = nil,
                modSeq: UInt64? = nil) {
        self.id = id
        self.size = size
        self.flags = flags
        self.internalDate = internalDate
        self.dateSource = dateSource
        self.key = key
        self.headers = headers
        self.modSeq = modSeq
    }
}

/// What a store says about one of its folders.
public struct FolderInfo: Hashable, Sendable, Codable {
    public var path: FolderPath
    /// SPECIAL-USE role, if the store knows one.
    public var role: FolderRole?
    /// False for a pure container (IMAP `\Noselect`).
    public var selectable: Bool
    public var messageCount: Int?
    public var totalSize: Int64?
    /// The folder's UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ as the folder
    /// listing gave them (IMAP LIST-STATUS), only when the store tracks
    /// changes well enough that they say what a SELECT would (QRESYNC: an
    /// expunge raises HIGHESTMODSEQ). nil: the listing does not tell.
    public var validity: FolderValidity?

    public init(path: FolderPath, role: FolderRole? = nil, selectable: Bool = true,
                messageCount: Int? = nil, totalSize: Int64? = nil, validity: FolderValidity? = nil) {
        self.path = path
        self.role = role
        self.selectable = selectable
        self.messageCount = messageCount
        self.totalSize = totalSize
        self.validity = validity
    }
}

/// A folder's validity and change counters: IMAP UIDVALIDITY, UIDNEXT and
/// HIGHESTMODSEQ, or a store's equivalent. When `uidValidity` changes, every
/// id remembered for the folder is void and keys decide.
public struct FolderValidity: Hashable, Sendable, Codable {
    public var uidValidity: UInt64?
    public var uidNext: UInt64?
    public var highestModSeq: UInt64?

    public init(uidValidity: UInt64? = nil, uidNext: UInt64? = nil, highestModSeq: UInt64? = nil) {
        self.uidValidity = uidValidity
        self.uidNext = uidNext
        self.highestModSeq = highestModSeq
    }
}

/// A folder's messages as listed at one moment.
public struct FolderListing: Sendable, Codable {
    public var folder: FolderPath
    public var validity: FolderValidity
    /// Messages, in the store's natural order (UID order for IMAP).
    public var messages: [MessageInfo]
    /// When the listing was asked for changes only (CONDSTORE): true if
    /// `messages` holds only new or changed ones, and `vanished` the removed ids.
    public var isIncremental: Bool
    public var vanished: [MessageID]
    /// True when the store had no ids of its own and made them up (POP3
    /// without UIDL: a hash of the `TOP n 0` headers plus the size). Reports say so.
    public var idsAreSynthetic: Bool

    public init(folder: FolderPath, validity: FolderValidity = FolderValidity(), messages: [MessageInfo],
                isIncremental: Bool = false, vanished: [MessageID] = [], idsAreSynthetic: Bool = false) {
        self.folder = folder
        self.validity = validity
        self.messages = messages
        self.isIncremental = isIncremental
        self.vanished = vanished
        self.idsAreSynthetic = idsAreSynthetic
    }
}

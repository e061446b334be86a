/// Every error mailferry reports: what went wrong, how far the damage reaches,
/// and whether trying again can help. It never carries credentials or bodies.
public struct MailError: Error, Sendable, CustomStringConvertible, Equatable {
    /// How far the failure reaches.
    public enum Scope: String, Sendable, Codable, Comparable {
        /// One message failed; the rest of its folder goes on.
        case message
        /// One folder failed; other folders go on.
        case folder
        /// The whole account or connection failed.
        case account
        /// Local state, archive or configuration: the run stops.
        case local

        private var rank: Int { [.message: 0, .folder: 1, .account: 2, .local: 3][self] ?? 3 }
        public static func < (l: Scope, r: Scope) -> Bool { l.rank < r.rank }
    }

    public enum Kind: String, Sendable, Codable {
        /// Bad command line or configuration (exit 2).
        case usage
        /// Credentials refused (exit 3).
        case authentication
        /// Could not connect, connection lost, or a deadline passed (exit 4).
        case connection
        /// TLS negotiation or certificate check failed (exit 4).
        case tls
        /// The server refused a command (NO/BAD/-ERR) for this item.
        case refused
        /// The server is throttling us; see `retryAfter`.
        case throttled
        /// The server sent something we cannot parse.
        case protocolViolation
        /// Local disk, permissions, or a lock held by another run (exit 5).
        case storage
        /// A corrupt archive, state file or message file (exit 6).
        case corrupt
        /// The item does not exist (any more).
        case notFound
        /// The store cannot do this (e.g. append to POP3).
        case unsupported
        /// The run was cancelled (exit 130).
        case cancelled
    }

    public var kind: Kind
    public var scope: Scope
    /// True when the same operation may succeed later (dropped connection, throttling, timeout).
    public var retryable: Bool
    /// One line for humans: what happened, naming the folder or message.
    public var message: String
    /// What the user can do about it, if anything obvious.
    public var hint: String?
    public var folder: FolderPath?
    /// The source id of the message concerned (UID, UIDL, file name), never its body.
    public var messageID: String?
    /// A server-suggested wait before retrying, in seconds.
    public var retryAfter: Double?

    public init(_ kind: Kind, scope: Scope, retryable: Bool = false, _ message: String,
                hint: String? = nil, folder: FolderPath? = nil, messageID: String? = nil,
                retryAfter: Double? = nil) {
        self.kind = kind
        self.scope = scope
        self.retryable = retryable
        self.message = message
        self.hint = hint
        self.folder = folder
        self.messageID = messageID
        self.retryAfter = retryAfter
    }

    public var description: String {
        var s = message
        if let folder, !message.contains(folder.description) { s += " (folder \(folder))" }
        if let messageID, !message.contains(messageID) { s += " (message \(messageID))" }
        if let hint { s += "; \(hint)" }
        return s
    }

    /// The process exit code from SPEC.md that this error maps to when it ends a run.
    public var exitCode: Int32 {
        switch kind {
        case .usage: return 2
        case .authentication: return 3
        case .connection, .tls: return 4
        case .storage: return 5
        case .corrupt: return 6
        case .cancelled: return 130
        case .refused, .throttled, .protocolViolation, .notFound, .unsupported:
            return scope >= .account ? 4 : 1
        }
    }

    /// The same error, narrowed to a folder or message.
    public func with(folder: FolderPath? = nil, messageID: String? = nil) -> MailError {
        var e = self
        if let folder { e.folder = folder }
        if let messageID { e.messageID = messageID }
        return e
    }
}

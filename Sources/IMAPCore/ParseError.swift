import NIOCore

/// The server sent bytes that are not IMAP, or that break one of the
/// parser's limits. Distinct from "need more bytes", which the parser reports
/// by returning nil from `ResponseParser.next()`.
public struct ParseError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Reason: String, Sendable, Hashable {
        /// A byte that the grammar does not allow here.
        case syntax
        /// A line longer than `ParserLimits.maxLineLength` without CRLF.
        case lineTooLong
        /// A literal larger than the limit for where it appears.
        case literalTooLarge
        /// A number that does not fit its type.
        case numberOverflow
        /// Parentheses nested deeper than `ParserLimits.maxNestingDepth`.
        case nestingTooDeep
    }

    public var reason: Reason
    /// What the parser expected, for humans.
    public var detail: String
    /// Up to 64 bytes of the input near the error, printable ASCII only.
    public var context: String

    public init(_ reason: Reason, _ detail: String, context: String = "") {
        self.reason = reason
        self.detail = detail
        self.context = context
    }

    public var description: String {
        context.isEmpty ? "IMAP parse error (\(reason.rawValue)): \(detail)"
            : "IMAP parse error (\(reason.rawValue)): \(detail) near \"\(context)\""
    }
}

/// Limits that bound what a hostile or broken server can make the parser hold.
public struct ParserLimits: Sendable, Hashable {
    /// Longest line (outside streamed literals) before a ParseError.
    public var maxLineLength: Int
    /// Longest line for responses that are long lists of numbers (SEARCH,
    /// ESEARCH, VANISHED), which real servers do send for large folders.
    public var maxNumberListLineLength: Int
    /// Largest literal held in memory (mailbox names, header fields, envelope strings).
    public var maxInlineLiteralSize: Int
    /// Largest streamed literal (a message body).
    public var maxStreamedLiteralSize: Int64
    /// Deepest nesting of parenthesised lists (BODYSTRUCTURE).
    public var maxNestingDepth: Int

    public init(maxLineLength: Int = 64 * 1024, maxNumberListLineLength: Int = 16 * 1024 * 1024,
                maxInlineLiteralSize: Int = 4 * 1024 * 1024, maxStreamedLiteralSize: Int64 = 1 << 40,
                maxNestingDepth: Int = 100) {
        self.maxLineLength = maxLineLength
        self.maxNumberListLineLength = maxNumberListLineLength
        self.maxInlineLiteralSize = maxInlineLiteralSize
        self.maxStreamedLiteralSize = maxStreamedLiteralSize
        self.maxNestingDepth = maxNestingDepth
    }
}

/// Thrown inside the parser when the buffer ends before the grammar does.
/// Never escapes `ResponseParser`.
struct NeedMoreBytes: Error {}

/// An IMAP message flag: a system flag (`\Seen`, `\Answered`, `\Flagged`,
/// `\Deleted`, `\Draft`) or a keyword (`$Forwarded`, `Work`, ...).
///
/// Flag names compare case-insensitively (RFC 3501 §2.3.2); the spelling
/// first seen is kept for output. System flags are always spelled canonically.
///
///     flag-keyword    = "$MDNSent" / "$Forwarded" / "$Junk" / ... / atom
///     flag            = "\Answered" / "\Flagged" / "\Deleted" / "\Seen" / "\Draft" / flag-keyword / flag-extension
public struct Flag: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    public let name: String
    private let folded: String

    public init(_ name: String) {
        let folded = name.lowercased()
        switch folded {
        case "\\seen": self.name = "\\Seen"
        case "\\answered": self.name = "\\Answered"
        case "\\flagged": self.name = "\\Flagged"
        case "\\deleted": self.name = "\\Deleted"
        case "\\draft": self.name = "\\Draft"
        case "\\recent": self.name = "\\Recent"
        default: self.name = name
        }
        self.folded = folded
    }

    public static let seen = Flag("\\Seen")
    public static let answered = Flag("\\Answered")
    public static let flagged = Flag("\\Flagged")
    public static let deleted = Flag("\\Deleted")
    public static let draft = Flag("\\Draft")
    /// Session-only; never stored or carried over.
    public static let recent = Flag("\\Recent")
    public static let forwarded = Flag("$Forwarded")
    public static let junk = Flag("$Junk")
    public static let notJunk = Flag("$NotJunk")

    /// True for `\Seen` and the other backslash flags.
    public var isSystem: Bool { name.hasPrefix("\\") }
    public var isKeyword: Bool { !isSystem }

    /// A keyword must be an IMAP atom: printable ASCII without
    /// `( ) { SP CTL % * " \ ]`. Anything else cannot be stored on a server.
    public var isValidKeyword: Bool {
        guard isKeyword, !name.isEmpty else { return false }
        for b in name.utf8 {
            if b <= 0x20 || b >= 0x7F { return false }
            switch b {
            case UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "{"), UInt8(ascii: "%"),
                 UInt8(ascii: "*"), UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "]"):
                return false
            default: continue
            }
        }
        return true
    }

    public var description: String { name }

    public static func == (lhs: Flag, rhs: Flag) -> Bool { lhs.folded == rhs.folded }
    public func hash(into hasher: inout Hasher) { hasher.combine(folded) }
    public static func < (lhs: Flag, rhs: Flag) -> Bool {
        // System flags first, then keywords, each alphabetically.
        if lhs.isSystem != rhs.isSystem { return lhs.isSystem }
        return lhs.folded < rhs.folded
    }

    public init(from decoder: Decoder) throws {
        self.init(try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(name)
    }
}

/// A set of flags. `\Recent` is never kept.
public struct Flags: Hashable, Sendable, Codable, Sequence, ExpressibleByArrayLiteral, CustomStringConvertible {
    public private(set) var members: Set<Flag>

    public init() { members = [] }
    public init<S: Sequence>(_ flags: S) where S.Element == Flag {
        members = Set(flags.filter { $0 != .recent })
    }
    public init(arrayLiteral elements: Flag...) { self.init(elements) }

    public func contains(_ f: Flag) -> Bool { members.contains(f) }
    public mutating func insert(_ f: Flag) { if f != .recent { members.insert(f) } }
    public mutating func remove(_ f: Flag) { members.remove(f) }
    public func union(_ other: Flags) -> Flags { Flags(members.union(other.members)) }
    public func subtracting(_ other: Flags) -> Flags { Flags(members.subtracting(other.members)) }
    public var isEmpty: Bool { members.isEmpty }
    public var count: Int { members.count }
    public var keywords: [Flag] { sorted.filter(\.isKeyword) }
    public var systemFlags: [Flag] { sorted.filter(\.isSystem) }
    /// Deterministic order: system flags, then keywords.
    public var sorted: [Flag] { members.sorted() }
    public func makeIterator() -> IndexingIterator<[Flag]> { sorted.makeIterator() }
    public var description: String { "(" + sorted.map(\.name).joined(separator: " ") + ")" }

    public init(from decoder: Decoder) throws {
        self.init(try decoder.singleValueContainer().decode([Flag].self))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(sorted)
    }
}

import NIOCore

/// An extended response code (RFC 2449 §8, RFC 3206) carried in brackets
/// right after `+OK` or `-ERR`.
///
///     resp-code   = "[" resp-level *("/" resp-level) "]"
///     resp-level  = 1*<any CHAR except "/" and "]">
///
/// Known codes: `IN-USE` and `LOGIN-DELAY` (RFC 2449), `SYS/TEMP`,
/// `SYS/PERM` and `AUTH` (RFC 3206).
public struct POP3ResponseCode: Hashable, Sendable, CustomStringConvertible {
    /// The levels, upper-cased, e.g. `["SYS", "TEMP"]`.
    public var levels: [String]

    public init(levels: [String]) { self.levels = levels.map { $0.uppercased() } }
    public init(_ text: String) { self.init(levels: text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)) }

    public static let inUse = POP3ResponseCode("IN-USE")
    public static let loginDelay = POP3ResponseCode("LOGIN-DELAY")
    public static let sysTemp = POP3ResponseCode("SYS/TEMP")
    public static let sysPerm = POP3ResponseCode("SYS/PERM")
    public static let auth = POP3ResponseCode("AUTH")

    /// True when this code is `other` or a more specific code below it
    /// (`SYS/TEMP/DISK` is within `SYS/TEMP`).
    public func isWithin(_ other: POP3ResponseCode) -> Bool {
        levels.count >= other.levels.count && Array(levels.prefix(other.levels.count)) == other.levels
    }

    public var description: String { levels.joined(separator: "/") }

    /// Parses `[CODE]` at the start of `text`; returns the code and the rest
    /// of the text (leading space removed), or nil when there is no
    /// well-formed code (the bracket is then ordinary text, as RFC 2449 allows
    /// servers that do not announce RESP-CODES).
    public static func parse(prefixOf text: ArraySlice<UInt8>) -> (POP3ResponseCode, ArraySlice<UInt8>)? {
        guard text.first == UInt8(ascii: "["), let close = text.firstIndex(of: UInt8(ascii: "]")) else { return nil }
        let inner = text[(text.startIndex + 1)..<close]
        let levels = inner.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        guard !levels.isEmpty, levels.allSatisfy({ lvl in
            !lvl.isEmpty && lvl.allSatisfy { $0 > 0x20 && $0 < 0x7F }
        }) else { return nil }
        var rest = text[(close + 1)...]
        if rest.first == POP3Bytes.sp { rest = rest.dropFirst() }
        return (POP3ResponseCode(levels: levels.map { String(decoding: $0, as: UTF8.self) }), rest)
    }

    public func write(to buffer: inout ByteBuffer) {
        buffer.writeString("[\(description)]")
    }
}

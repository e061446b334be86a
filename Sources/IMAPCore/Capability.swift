import NIOCore

/// A capability name, compared case-insensitively.
///
///     capability-data = "CAPABILITY" *(SP capability) SP "IMAP4rev1" *(SP capability)
///     capability      = ("AUTH=" auth-type) / atom
public struct Capability: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name.uppercased() }
    public var description: String { name }

    public static let imap4rev1 = Capability("IMAP4rev1")
    public static let imap4rev2 = Capability("IMAP4rev2")
    public static let startTLS = Capability("STARTTLS")
    public static let loginDisabled = Capability("LOGINDISABLED")
    public static let saslIR = Capability("SASL-IR")
    public static let literalPlus = Capability("LITERAL+")
    public static let literalMinus = Capability("LITERAL-")
    public static let idle = Capability("IDLE")
    public static let uidPlus = Capability("UIDPLUS")
    public static let condStore = Capability("CONDSTORE")
    public static let qresync = Capability("QRESYNC")
    public static let enable = Capability("ENABLE")
    public static let namespace = Capability("NAMESPACE")
    public static let id = Capability("ID")
    public static let multiAppend = Capability("MULTIAPPEND")
    public static let move = Capability("MOVE")
    public static let specialUse = Capability("SPECIAL-USE")
    public static let createSpecialUse = Capability("CREATE-SPECIAL-USE")
    public static let listStatus = Capability("LIST-STATUS")
    public static let listExtended = Capability("LIST-EXTENDED")
    public static let esearch = Capability("ESEARCH")
    public static let binary = Capability("BINARY")
    public static let utf8Accept = Capability("UTF8=ACCEPT")
    public static let unselect = Capability("UNSELECT")
    public static let gmail = Capability("X-GM-EXT-1")

    public static func auth(_ mechanism: String) -> Capability { Capability("AUTH=" + mechanism) }

    /// `AUTH=PLAIN` → `PLAIN`.
    public var authMechanism: String? { name.hasPrefix("AUTH=") ? String(name.dropFirst(5)) : nil }

    /// Reads `capability *(SP capability)` up to the end of the line or `]`.
    static func parseList(_ c: inout Cursor) throws -> [Capability] {
        var out: [Capability] = []
        while true {
            let b = try c.peek()
            if b == UInt8(ascii: " ") { c.index += 1; continue }
            if b == 0x0D || b == 0x0A || b == UInt8(ascii: "]") { return out }
            out.append(Capability(try c.atom()))
        }
    }

    static func writeList(_ caps: [Capability], to out: inout ByteBuffer) {
        for cap in caps { out.writeString(" " + cap.name) }
    }
}

import NIOCore

/// NAMESPACE data (RFC 2342).
///
///     namespace-response = "NAMESPACE" SP namespace SP namespace SP namespace
///     namespace          = nil / "(" 1*namespace-descr ")"
///     namespace-descr    = "(" string SP (DQUOTE QUOTED-CHAR DQUOTE / nil) *namespace-response-extension ")"
public struct NamespaceResponse: Hashable, Sendable {
    public struct Description: Hashable, Sendable {
        public var prefix: MailboxName
        public var separator: Character?
        public init(prefix: MailboxName, separator: Character?) {
            self.prefix = prefix
            self.separator = separator
        }
    }
    public var personal: [Description]
    public var otherUsers: [Description]
    public var shared: [Description]

    public init(personal: [Description] = [], otherUsers: [Description] = [], shared: [Description] = []) {
        self.personal = personal
        self.otherUsers = otherUsers
        self.shared = shared
    }

    static func parseOne(_ c: inout Cursor) throws -> [Description] {
        if try c.tryNIL() { return [] }
        try c.expect(UInt8(ascii: "("))
        try c.enterNesting()
        defer { c.leaveNesting() }
        var out: [Description] = []
        while try c.peek() == UInt8(ascii: "(") {
            c.index += 1
            let prefix = MailboxName(bytes: try c.string())
            try c.expectSpace()
            var sep: Character?
            if !(try c.tryNIL()) {
                let q = try c.quoted()
                if let f = q.first, q.count == 1, f < 0x80 { sep = Character(Unicode.Scalar(f)) }
            }
            // Extensions: SP string SP "(" string *(SP string) ")"
            while try c.peek() == UInt8(ascii: " ") {
                c.index += 1
                try c.skipValue()
            }
            try c.expect(UInt8(ascii: ")"))
            out.append(Description(prefix: prefix, separator: sep))
            if try c.peek() == UInt8(ascii: " ") { c.index += 1 }
        }
        try c.expect(UInt8(ascii: ")"))
        return out
    }

    static func parse(_ c: inout Cursor) throws -> NamespaceResponse {
        let p = try parseOne(&c)
        try c.expectSpace()
        let o = try parseOne(&c)
        try c.expectSpace()
        let s = try parseOne(&c)
        return NamespaceResponse(personal: p, otherUsers: o, shared: s)
    }

    func write(to out: inout ByteBuffer) {
        out.writeString("NAMESPACE")
        for list in [personal, otherUsers, shared] {
            if list.isEmpty { out.writeString(" NIL"); continue }
            out.writeString(" (")
            for d in list {
                let sep = d.separator.map { $0 == "\\" ? "\"\\\\\"" : "\"\($0)\"" } ?? "NIL"
                out.writeString("(\"\(String(decoding: d.prefix.bytes, as: UTF8.self))\" \(sep))")
            }
            out.writeString(")")
        }
    }
}

import NIOCore

/// One LIST or LSUB reply line (RFC 3501, RFC 5258 LIST-EXTENDED, RFC 6154 SPECIAL-USE).
///
///     mailbox-list    = "(" [mbx-list-flags] ")" SP (DQUOTE QUOTED-CHAR DQUOTE / nil) SP mailbox
///                       [SP "(" mbox-list-extended ")"]
///     mbx-list-flags  = *(mbx-list-oflag SP) mbx-list-sflag *(SP mbx-list-oflag) / mbx-list-oflag *(SP mbx-list-oflag)
///     mbox-list-extended-item = tag SP tagged-ext-val     ; e.g. CHILDINFO ("SUBSCRIBED"), OLDNAME (name)
///     use-attr        = "\All" / "\Archive" / "\Drafts" / "\Flagged" / "\Junk" / "\Sent" / "\Trash"
public struct MailboxListItem: Hashable, Sendable {
    /// Attributes as sent, e.g. `\HasChildren`, `\Noselect`, `\Sent`.
    public var attributes: [String]
    public var separator: Character?
    public var name: MailboxName
    /// Extended data, e.g. `CHILDINFO` → `["SUBSCRIBED"]`.
    public var extended: [String: [String]]

    public init(attributes: [String], separator: Character?, name: MailboxName, extended: [String: [String]] = [:]) {
        self.attributes = attributes
        self.separator = separator
        self.name = name
        self.extended = extended
    }

    public func hasAttribute(_ a: String) -> Bool { attributes.contains { $0.lowercased() == a.lowercased() } }

    /// `\Noselect` or `\NonExistent` (which implies it).
    public var isSelectable: Bool { !hasAttribute("\\Noselect") && !hasAttribute("\\NonExistent") }

    static func parse(_ c: inout Cursor) throws -> MailboxListItem {
        let attrs = try c.parenthesized { c in try c.flagToken() }
        try c.expectSpace()
        var sep: Character?
        if !(try c.tryNIL()) {
            let q = try c.quoted()
            guard q.count == 1, q[0] < 0x80 else { throw c.fail("hierarchy separator must be one ASCII character") }
            sep = Character(Unicode.Scalar(q[0]))
        }
        try c.expectSpace()
        let name = try MailboxName.parse(&c)
        var ext: [String: [String]] = [:]
        if try c.peek() == UInt8(ascii: " ") {
            c.index += 1
            _ = try c.parenthesized { c -> Int in
                let tag = try c.atom().uppercased()
                try c.expectSpace()
                var values: [String] = []
                if try c.peek() == UInt8(ascii: "(") {
                    values = try c.parenthesized { c in String(decoding: try c.astring(), as: UTF8.self) }
                } else {
                    values = [String(decoding: try c.astring(), as: UTF8.self)]
                }
                ext[tag] = values
                return 0
            }
        }
        return MailboxListItem(attributes: attrs, separator: sep, name: name, extended: ext)
    }

    func write(to out: inout ByteBuffer) {
        out.writeString("(" + attributes.joined(separator: " ") + ") ")
        if let separator {
            out.writeString(separator == "\\" || separator == "\"" ? "\"\\\(separator)\" " : "\"\(separator)\" ")
        } else {
            out.writeString("NIL ")
        }
        var w = CommandWriter.forResponse()
        name.write(to: &w)
        out.writeBuffer(&w.buffer)
        if !extended.isEmpty {
            out.writeString(" (" + extended.sorted(by: { $0.key < $1.key })
                .map { "\($0.key) (" + $0.value.map { "\"\($0)\"" }.joined(separator: " ") + ")" }.joined(separator: " ") + ")")
        }
    }
}

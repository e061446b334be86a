import NIOCore

/// STATUS data (RFC 3501 §7.2.4, RFC 7162 HIGHESTMODSEQ, RFC 8438 SIZE).
///
///     mailbox-data    =/ "STATUS" SP mailbox SP "(" [status-att-list] ")"
///     status-att-list = status-att-val *(SP status-att-val)
///     status-att-val  = ("MESSAGES" / "UIDNEXT" / "UIDVALIDITY" / "UNSEEN" / "RECENT" / "SIZE" / "HIGHESTMODSEQ") SP number64
public struct MailboxStatus: Hashable, Sendable {
    public var messages: UInt32?
    public var recent: UInt32?
    public var uidNext: UInt32?
    public var uidValidity: UInt32?
    public var unseen: UInt32?
    public var highestModSeq: UInt64?
    public var size: UInt64?

    public init(messages: UInt32? = nil, recent: UInt32? = nil, uidNext: UInt32? = nil, uidValidity: UInt32? = nil,
                unseen: UInt32? = nil, highestModSeq: UInt64? = nil, size: UInt64? = nil) {
        self.messages = messages
        self.recent = recent
        self.uidNext = uidNext
        self.uidValidity = uidValidity
        self.unseen = unseen
        self.highestModSeq = highestModSeq
        self.size = size
    }

    /// Names for the STATUS command and LIST RETURN (STATUS (...)).
    public enum Item: String, Sendable, CaseIterable { case messages = "MESSAGES", recent = "RECENT", uidNext = "UIDNEXT", uidValidity = "UIDVALIDITY", unseen = "UNSEEN", highestModSeq = "HIGHESTMODSEQ", size = "SIZE" }

    static func parse(_ c: inout Cursor) throws -> MailboxStatus {
        var s = MailboxStatus()
        _ = try c.parenthesized { c -> Int in
            let name = try c.atom().uppercased()
            try c.expectSpace()
            let v = try c.number64()
            func u32() throws -> UInt32 {
                guard v <= UInt64(UInt32.max) else { throw c.fail(.numberOverflow, "\(name) out of range") }
                return UInt32(v)
            }
            switch name {
            case "MESSAGES": s.messages = try u32()
            case "RECENT": s.recent = try u32()
            case "UIDNEXT": s.uidNext = try u32()
            case "UIDVALIDITY": s.uidValidity = try u32()
            case "UNSEEN": s.unseen = try u32()
            case "HIGHESTMODSEQ": s.highestModSeq = v
            case "SIZE": s.size = v
            default: break
            }
            return 0
        }
        return s
    }

    func write(to out: inout ByteBuffer) {
        var parts: [String] = []
        if let messages { parts.append("MESSAGES \(messages)") }
        if let recent { parts.append("RECENT \(recent)") }
        if let uidNext { parts.append("UIDNEXT \(uidNext)") }
        if let uidValidity { parts.append("UIDVALIDITY \(uidValidity)") }
        if let unseen { parts.append("UNSEEN \(unseen)") }
        if let highestModSeq { parts.append("HIGHESTMODSEQ \(highestModSeq)") }
        if let size { parts.append("SIZE \(size)") }
        out.writeString("(" + parts.joined(separator: " ") + ")")
    }
}

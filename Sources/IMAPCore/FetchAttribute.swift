import MailModel
import NIOCore

/// One item of a FETCH response other than message bytes (those stream; see
/// `StreamingKind`).
///
///     msg-att         = "(" (msg-att-dynamic / msg-att-static) *(SP (msg-att-dynamic / msg-att-static)) ")"
///     msg-att-dynamic = "FLAGS" SP "(" [flag-fetch *(SP flag-fetch)] ")" / "MODSEQ" SP "(" mod-sequence-value ")"
///     msg-att-static  = "ENVELOPE" SP envelope / "INTERNALDATE" SP date-time / "RFC822.SIZE" SP number64 /
///                       "BODY" ["STRUCTURE"] SP body / "UID" SP uniqueid /
///                       "BODY" section ["<" number ">"] SP nstring / "BINARY" section-binary SP (nstring / literal8) /
///                       "BINARY.SIZE" section-binary SP number
///     X-GM-MSGID SP number64 / X-GM-THRID SP number64 / X-GM-LABELS SP "(" [astring *(SP astring)] ")"   ; Gmail
public enum FetchAttribute: Hashable, Sendable {
    case uid(UInt32)
    case flags([Flag])
    case internalDate(InternalDate)
    case rfc822Size(Int64)
    case modSeq(UInt64)
    case gmailMessageID(UInt64)
    case gmailThreadID(UInt64)
    case gmailLabels([String])
    case binarySize(section: [UInt32], size: UInt32)
    /// ENVELOPE, BODYSTRUCTURE and unknown items: name only (skipped).
    case other(String)

    func write(to out: inout ByteBuffer) {
        switch self {
        case .uid(let u): out.writeString("UID \(u)")
        case .flags(let f): out.writeString("FLAGS "); FlagList.write(f, to: &out)
        case .internalDate(let d): out.writeString("INTERNALDATE " + IMAPDateTime.format(d))
        case .rfc822Size(let n): out.writeString("RFC822.SIZE \(n)")
        case .modSeq(let m): out.writeString("MODSEQ (\(m))")
        case .gmailMessageID(let n): out.writeString("X-GM-MSGID \(n)")
        case .gmailThreadID(let n): out.writeString("X-GM-THRID \(n)")
        case .gmailLabels(let l):
            out.writeString("X-GM-LABELS (")
            var w = CommandWriter.forResponse()
            for (i, label) in l.enumerated() {
                if i > 0 { w.writeString(" ") }
                w.writeAString(Array(label.utf8))
            }
            out.writeBuffer(&w.buffer)
            out.writeString(")")
        case .binarySize(let s, let n): out.writeString("BINARY.SIZE[" + s.map(String.init).joined(separator: ".") + "] \(n)")
        case .other(let n): out.writeString(n + " NIL")
        }
    }
}

/// Message bytes in a FETCH response, which the parser streams.
///
///     "BODY" section ["<" number ">"] / "BINARY" section-binary ["<" number ">"] /
///     "RFC822" / "RFC822.HEADER" / "RFC822.TEXT"
public enum StreamingKind: Hashable, Sendable, CustomStringConvertible {
    case body(section: SectionSpecifier, origin: UInt32?)
    case binary(section: [UInt32], origin: UInt32?)
    case rfc822, rfc822Header, rfc822Text

    public var description: String {
        switch self {
        case .body(let s, let o): return "BODY\(s)" + (o.map { "<\($0)>" } ?? "")
        case .binary(let s, let o): return "BINARY[" + s.map(String.init).joined(separator: ".") + "]" + (o.map { "<\($0)>" } ?? "")
        case .rfc822: return "RFC822"
        case .rfc822Header: return "RFC822.HEADER"
        case .rfc822Text: return "RFC822.TEXT"
        }
    }
}

enum FetchItemParser {
    enum Item {
        case attribute(FetchAttribute)
        /// A streamed item; the value (literal header, quoted string or NIL) follows.
        case streaming(StreamingKind)
    }

    /// Parses one item name and, for non-streamed items, its value.
    static func parse(_ c: inout Cursor) throws -> Item {
        let nameBytes = try c.take(while: { Cursor.isAtomChar($0) && $0 != UInt8(ascii: "[") && $0 != UInt8(ascii: "<") }, what: "fetch item")
        let name = String(decoding: nameBytes.map(Cursor.upper), as: UTF8.self)
        func origin(_ c: inout Cursor) throws -> UInt32? {
            guard try c.peek() == UInt8(ascii: "<") else { return nil }
            c.index += 1
            let n = try c.number()
            try c.expect(UInt8(ascii: ">"))
            return n
        }
        switch name {
        case "BODY" where try c.peek() == UInt8(ascii: "["):
            let s = try SectionSpecifier.parse(&c)
            let o = try origin(&c)
            try c.expectSpace()
            return .streaming(.body(section: s, origin: o))
        case "BINARY":
            let s = try SectionSpecifier.parse(&c)
            let o = try origin(&c)
            try c.expectSpace()
            return .streaming(.binary(section: s.part, origin: o))
        case "BINARY.SIZE":
            let s = try SectionSpecifier.parse(&c)
            try c.expectSpace()
            return .attribute(.binarySize(section: s.part, size: try c.number()))
        case "RFC822": try c.expectSpace(); return .streaming(.rfc822)
        case "RFC822.HEADER": try c.expectSpace(); return .streaming(.rfc822Header)
        case "RFC822.TEXT": try c.expectSpace(); return .streaming(.rfc822Text)
        default: break
        }
        try c.expectSpace()
        switch name {
        case "UID": return .attribute(.uid(try c.nzNumber()))
        case "FLAGS": return .attribute(.flags(try FlagList.parse(&c)))
        case "INTERNALDATE": return .attribute(.internalDate(try IMAPDateTime.parse(&c)))
        case "RFC822.SIZE": return .attribute(.rfc822Size(Int64(try c.number64())))
        case "MODSEQ":
            try c.expect(UInt8(ascii: "("))
            let m = try c.number64()
            try c.expect(UInt8(ascii: ")"))
            return .attribute(.modSeq(m))
        case "X-GM-MSGID": return .attribute(.gmailMessageID(try c.number64()))
        case "X-GM-THRID": return .attribute(.gmailThreadID(try c.number64()))
        case "X-GM-LABELS":
            return .attribute(.gmailLabels(try c.parenthesized { c in
                if try c.peek() == UInt8(ascii: "\\") { return try c.flagToken() }
                return String(decoding: try c.astring(), as: UTF8.self)
            }))
        default:
            try c.skipValue()
            return .attribute(.other(name))
        }
    }
}

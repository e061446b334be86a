import NIOCore

/// The part of a message a BODY[...] or BINARY[...] item names.
///
///     section         = "[" [section-spec] "]"
///     section-spec    = section-msgtext / (section-part ["." section-text])
///     section-msgtext = "HEADER" / "HEADER.FIELDS" [".NOT"] SP header-list / "TEXT"
///     section-part    = nz-number *("." nz-number)
///     section-text    = section-msgtext / "MIME"
///     header-list     = "(" header-fld-name *(SP header-fld-name) ")"
///     section-binary  = "[" [section-part] "]"                       ; RFC 3516
///     partial         = "<" number "." nz-number ">"                 ; in commands
///     "<" number ">"                                                  ; in responses (origin)
public struct SectionSpecifier: Hashable, Sendable, CustomStringConvertible {
    public enum Text: Hashable, Sendable {
        case header, text, mime
        case headerFields([String])
        case headerFieldsNot([String])
    }
    public var part: [UInt32]
    public var text: Text?

    public init(part: [UInt32] = [], text: Text? = nil) {
        self.part = part
        self.text = text
    }

    public static let complete = SectionSpecifier()
    public static let header = SectionSpecifier(text: .header)
    public static func headerFields(_ names: [String]) -> SectionSpecifier { SectionSpecifier(text: .headerFields(names)) }

    public var description: String {
        var s = part.map(String.init).joined(separator: ".")
        if let text {
            if !s.isEmpty { s += "." }
            switch text {
            case .header: s += "HEADER"
            case .text: s += "TEXT"
            case .mime: s += "MIME"
            case .headerFields(let f): s += "HEADER.FIELDS (" + f.joined(separator: " ") + ")"
            case .headerFieldsNot(let f): s += "HEADER.FIELDS.NOT (" + f.joined(separator: " ") + ")"
            }
        }
        return "[" + s + "]"
    }

    /// Parses from "[" to "]" inclusive.
    static func parse(_ c: inout Cursor) throws -> SectionSpecifier {
        try c.expect(UInt8(ascii: "["))
        var spec = SectionSpecifier()
        if try c.peek() == UInt8(ascii: "]") { c.index += 1; return spec }
        while true {
            let b = try c.peek()
            if b >= 0x30, b <= 0x39 {
                spec.part.append(try c.nzNumber())
                if try c.peek() == UInt8(ascii: ".") { c.index += 1; continue }
                break
            }
            if try c.tryKeyword("HEADER.FIELDS.NOT") {
                try c.expectSpace()
                spec.text = .headerFieldsNot(try c.parenthesized { c in String(decoding: try c.astring(), as: UTF8.self) })
            } else if try c.tryKeyword("HEADER.FIELDS") {
                try c.expectSpace()
                spec.text = .headerFields(try c.parenthesized { c in String(decoding: try c.astring(), as: UTF8.self) })
            } else if try c.tryKeyword("HEADER") {
                spec.text = .header
            } else if try c.tryKeyword("TEXT") {
                spec.text = .text
            } else if try c.tryKeyword("MIME") {
                spec.text = .mime
            } else {
                throw c.fail("bad section specifier")
            }
            break
        }
        try c.expect(UInt8(ascii: "]"))
        return spec
    }
}

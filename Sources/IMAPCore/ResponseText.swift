import NIOCore

/// The status part of a tagged response, a greeting, or an untagged OK/NO/BAD/BYE/PREAUTH.
///
///     resp-cond-state = ("OK" / "NO" / "BAD") SP resp-text
///     resp-cond-bye   = "BYE" SP resp-text
///     resp-cond-auth  = ("OK" / "PREAUTH") SP resp-text
///     resp-text       = ["[" resp-text-code "]" SP] text
public struct StatusResponse: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable { case ok = "OK", no = "NO", bad = "BAD", bye = "BYE", preauth = "PREAUTH" }
    public var kind: Kind
    public var code: ResponseCode?
    public var text: String

    public init(_ kind: Kind, code: ResponseCode? = nil, text: String = "") {
        self.kind = kind
        self.code = code
        self.text = text
    }

    public var description: String {
        var b = ByteBuffer()
        write(to: &b)
        return String(buffer: b)
    }

    static func parseKind(_ c: inout Cursor) throws -> Kind? {
        for k in [Kind.ok, .no, .bad, .bye, .preauth] {
            let save = c.index
            if try c.tryKeyword(k.rawValue) {
                let next = try c.peek()
                if next == UInt8(ascii: " ") || next == 0x0D || next == 0x0A { return k }
                c.index = save
            }
        }
        return nil
    }

    /// Parses after the kind keyword: `[SP resp-text]` (text may be missing, as some servers send).
    static func parseText(_ c: inout Cursor, kind: Kind) throws -> StatusResponse {
        var r = StatusResponse(kind)
        if try c.atCRLF() { return r }
        try c.expectSpace()
        if try c.peek() == UInt8(ascii: "[") {
            c.index += 1
            let save = c.index
            do {
                r.code = try ResponseCode.parse(&c)
                try c.expect(UInt8(ascii: "]"))
            } catch let e as ParseError {
                // An unparsable code is kept as text rather than failing the response.
                guard e.reason == .syntax || e.reason == .numberOverflow else { throw e }
                c.index = save
                let raw = try ResponseCode.freeText(&c)
                if try c.peek() == UInt8(ascii: "]") { c.index += 1 }
                r.code = .other(name: raw, text: nil)
            }
            if try c.peek() == UInt8(ascii: " ") { c.index += 1 }
        }
        r.text = String(decoding: try c.restOfLine(), as: UTF8.self)
        return r
    }

    func write(to out: inout ByteBuffer) {
        out.writeString(kind.rawValue)
        if let code {
            out.writeString(" [")
            code.write(to: &out)
            out.writeString("]")
        }
        if !text.isEmpty || code == nil { out.writeString(" " + text) }
    }
}

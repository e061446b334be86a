import NIOCore

/// ID (RFC 2971), both the command argument and the response.
///
///     id          = "ID" SP id-params-list
///     id-params-list = "(" *(string SP nstring) ")" / nil
public struct IDParameters: Hashable, Sendable {
    public var fields: [String: String?]
    public init(_ fields: [String: String?] = [:]) { self.fields = fields }

    static func parse(_ c: inout Cursor) throws -> IDParameters {
        if try c.tryNIL() { return IDParameters() }
        var fields: [String: String?] = [:]
        var key: String?
        _ = try c.parenthesized { c -> Int in
            if let k = key {
                fields.updateValue(try c.nstring().map { String(decoding: $0, as: UTF8.self) }, forKey: k)
                key = nil
            } else {
                key = String(decoding: try c.string(), as: UTF8.self)
            }
            return 0
        }
        return IDParameters(fields)
    }

    func write(to out: inout CommandWriter) {
        if fields.isEmpty { out.writeString("NIL"); return }
        out.writeString("(")
        for (i, (k, v)) in fields.sorted(by: { $0.key < $1.key }).enumerated() {
            if i > 0 { out.writeString(" ") }
            out.writeQuoted(k)
            out.writeString(" ")
            if let v { out.writeQuoted(v) } else { out.writeString("NIL") }
        }
        out.writeString(")")
    }
}

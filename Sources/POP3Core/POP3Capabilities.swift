import NIOCore

/// The reply to CAPA (RFC 2449 §5): one capability per line.
///
///     capa-resp  = "+OK" *schar CRLF *capability "." CRLF
///     capability = capa-tag *(SP param) CRLF
///     capa-tag   = 1*cchar
///     param      = 1*pchar
///
/// Tags are case-insensitive and kept upper-cased; parameters keep their case
/// (SASL mechanism names are upper-cased for matching).
public struct POP3Capabilities: Hashable, Sendable, CustomStringConvertible {
    /// Tag → parameters, in the order the server sent them.
    public private(set) var entries: [(tag: String, parameters: [String])] = []

    public init() {}

    public init(_ entries: [(String, [String])]) {
        for (t, p) in entries { add(tag: t, parameters: p) }
    }

    public static func == (l: POP3Capabilities, r: POP3Capabilities) -> Bool {
        l.entries.count == r.entries.count && zip(l.entries, r.entries).allSatisfy { $0.tag == $1.tag && $0.parameters == $1.parameters }
    }

    public func hash(into h: inout Hasher) {
        for e in entries { h.combine(e.tag); h.combine(e.parameters) }
    }

    public mutating func add(tag: String, parameters: [String]) {
        entries.append((tag.uppercased(), parameters))
    }

    /// Adds one line of the CAPA body (without its line ending).
    public mutating func add(line: ArraySlice<UInt8>) throws {
        let words = POP3Bytes.words(POP3Bytes.dropCR(line))
        guard let tag = words.first else { return } // blank lines are ignored
        guard tag.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw POP3ParseError("CAPA tag is not printable ASCII: \(POP3StatusLine.preview(tag))")
        }
        add(tag: String(decoding: tag, as: UTF8.self), parameters: words.dropFirst().map { String(decoding: $0, as: UTF8.self) })
    }

    public static func parse(lines: [ArraySlice<UInt8>]) throws -> POP3Capabilities {
        var c = POP3Capabilities()
        for l in lines { try c.add(line: l) }
        return c
    }

    public func has(_ tag: String) -> Bool { entries.contains { $0.tag == tag.uppercased() } }
    public func parameters(_ tag: String) -> [String]? { entries.first { $0.tag == tag.uppercased() }?.parameters }

    public var pipelining: Bool { has("PIPELINING") }
    public var uidl: Bool { has("UIDL") }
    public var top: Bool { has("TOP") }
    public var user: Bool { has("USER") }
    public var stls: Bool { has("STLS") }
    public var respCodes: Bool { has("RESP-CODES") }
    public var authRespCode: Bool { has("AUTH-RESP-CODE") }
    /// SASL mechanisms, upper-cased (RFC 5034 §6).
    public var saslMechanisms: [String] { (parameters("SASL") ?? []).map { $0.uppercased() } }
    /// LOGIN-DELAY seconds, if announced (RFC 2449 §6.5).
    public var loginDelay: Int? { parameters("LOGIN-DELAY")?.first.flatMap { Int($0) } }
    public var implementation: String? { parameters("IMPLEMENTATION")?.joined(separator: " ") }

    public var description: String {
        entries.map { ([$0.tag] + $0.parameters).joined(separator: " ") }.joined(separator: ", ")
    }

    /// The body lines of a CAPA reply (before dot-stuffing and the final `.`).
    public func write(to buffer: inout ByteBuffer) {
        for e in entries {
            buffer.writeString(([e.tag] + e.parameters).joined(separator: " "))
            buffer.writeString("\r\n")
        }
    }
}

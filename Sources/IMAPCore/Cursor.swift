import NIOCore

/// A read position over buffered bytes with the primitive productions of
/// RFC 3501 §9 (atoms, numbers, quoted strings, literals, nesting). Running
/// off the end throws `NeedMoreBytes`; a grammar violation throws `ParseError`.
///
///     atom            = 1*ATOM-CHAR
///     ATOM-CHAR       = <any CHAR except atom-specials>
///     atom-specials   = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
///     number          = 1*DIGIT            ; unsigned 32-bit
///     number64        = 1*DIGIT            ; unsigned 63-bit (RFC 9051)
///     quoted          = DQUOTE *QUOTED-CHAR DQUOTE
///     literal         = "{" number64 ["+"] "}" CRLF *CHAR8
///     literal8        = "~{" number64 "}" CRLF *OCTET
struct Cursor {
    let buffer: ByteBuffer
    var index: Int
    let end: Int
    let limits: ParserLimits
    var depth = 0

    init(_ buffer: ByteBuffer, limits: ParserLimits) {
        self.buffer = buffer
        self.index = buffer.readerIndex
        self.end = buffer.writerIndex
        self.limits = limits
    }

    var isAtEnd: Bool { index >= end }
    var consumed: Int { index - buffer.readerIndex }

    func peek() throws -> UInt8 {
        guard index < end, let b = buffer.getInteger(at: index, as: UInt8.self) else { throw NeedMoreBytes() }
        return b
    }

    func peek(offset: Int) throws -> UInt8 {
        guard index + offset < end, let b = buffer.getInteger(at: index + offset, as: UInt8.self) else { throw NeedMoreBytes() }
        return b
    }

    mutating func byte() throws -> UInt8 {
        let b = try peek()
        index += 1
        return b
    }

    func fail(_ detail: String) -> ParseError { fail(.syntax, detail) }

    func fail(_ reason: ParseError.Reason, _ detail: String) -> ParseError {
        let from = max(buffer.readerIndex, index - 24)
        let len = min(end - from, 64)
        let bytes = buffer.getBytes(at: from, length: max(0, len)) ?? []
        let text = String(decoding: bytes.map { $0 >= 0x20 && $0 < 0x7F ? $0 : UInt8(ascii: ".") }, as: UTF8.self)
        return ParseError(reason, detail, context: text)
    }

    mutating func expect(_ b: UInt8) throws {
        let got = try peek()
        guard got == b else { throw fail("expected '\(Character(Unicode.Scalar(b)))'") }
        index += 1
    }

    mutating func expectSpace() throws { try expect(UInt8(ascii: " ")) }

    mutating func expectCRLF() throws {
        // Tolerate a bare LF, as some servers send one.
        let b = try peek()
        if b == 0x0D {
            _ = try peek(offset: 1)
            guard try peek(offset: 1) == 0x0A else { throw fail("expected CRLF") }
            index += 2
        } else if b == 0x0A {
            index += 1
        } else {
            throw fail("expected end of line")
        }
    }

    func atCRLF() throws -> Bool {
        let b = try peek()
        return b == 0x0D || b == 0x0A
    }

    /// Case-insensitive match of an ASCII keyword; consumes it on success.
    mutating func tryKeyword(_ word: String) throws -> Bool {
        var i = 0
        for w in word.utf8 {
            guard index + i < end else {
                // The bytes so far match: we cannot tell yet.
                throw NeedMoreBytes()
            }
            let b = buffer.getInteger(at: index + i, as: UInt8.self) ?? 0
            if Self.upper(b) != Self.upper(w) { return false }
            i += 1
        }
        index += i
        return true
    }

    mutating func expectKeyword(_ word: String) throws {
        guard try tryKeyword(word) else { throw fail("expected \(word)") }
    }

    static func upper(_ b: UInt8) -> UInt8 { b >= 0x61 && b <= 0x7A ? b - 0x20 : b }

    static func isAtomChar(_ b: UInt8) -> Bool {
        switch b {
        case 0...0x20, 0x7F...0xFF: return false
        case UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "{"), UInt8(ascii: "%"), UInt8(ascii: "*"),
             UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "]"):
            return false
        default: return true
        }
    }

    /// ASTRING-CHAR = ATOM-CHAR / resp-specials
    static func isAStringChar(_ b: UInt8) -> Bool { isAtomChar(b) || b == UInt8(ascii: "]") }

    /// Reads bytes while `pred` holds; at least one. Needs a terminator to be buffered.
    mutating func take(while pred: (UInt8) -> Bool, what: String) throws -> [UInt8] {
        var out: [UInt8] = []
        while true {
            let b = try peek()
            guard pred(b) else { break }
            out.append(b)
            index += 1
            if out.count > limits.maxLineLength { throw fail(.lineTooLong, "\(what) too long") }
        }
        guard !out.isEmpty else { throw fail("expected \(what)") }
        return out
    }

    mutating func atom() throws -> String {
        String(decoding: try take(while: Self.isAtomChar, what: "atom"), as: UTF8.self)
    }

    /// Any run of non-space, non-paren, non-CRLF bytes: for flags (`\Seen`) and lenient tokens.
    mutating func flagToken() throws -> String {
        var bytes: [UInt8] = []
        if try peek() == UInt8(ascii: "\\") { bytes.append(try byte()) }
        if try peek() == UInt8(ascii: "*"), bytes == [UInt8(ascii: "\\")] {
            index += 1
            return "\\*"
        }
        bytes += try take(while: Self.isAtomChar, what: "flag")
        return String(decoding: bytes, as: UTF8.self)
    }

    mutating func number() throws -> UInt32 {
        let v = try number64()
        guard v <= UInt64(UInt32.max) else { throw fail(.numberOverflow, "number larger than 2^32-1") }
        return UInt32(v)
    }

    mutating func nzNumber() throws -> UInt32 {
        let v = try number()
        guard v > 0 else { throw fail("expected a non-zero number") }
        return v
    }

    mutating func number64() throws -> UInt64 {
        var v: UInt64 = 0
        var digits = 0
        while true {
            let b = try peek()
            guard b >= 0x30, b <= 0x39 else { break }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(b - 0x30))
            guard !o1, !o2, a <= UInt64(Int64.max) else { throw fail(.numberOverflow, "number larger than 2^63-1") }
            v = a
            digits += 1
            index += 1
        }
        guard digits > 0 else { throw fail("expected a number") }
        return v
    }

    /// quoted = DQUOTE *QUOTED-CHAR DQUOTE, with `\"` and `\\` escapes.
    mutating func quoted() throws -> [UInt8] {
        try expect(UInt8(ascii: "\""))
        var out: [UInt8] = []
        while true {
            var b = try byte()
            if b == UInt8(ascii: "\"") { return out }
            if b == UInt8(ascii: "\\") { b = try byte() }
            if b == 0x0D || b == 0x0A { throw fail("line break inside a quoted string") }
            out.append(b)
            if out.count > limits.maxLineLength { throw fail(.lineTooLong, "quoted string too long") }
        }
    }

    /// The header of a literal: `{n}`, `{n+}` or `~{n}` then CRLF. Returns the size.
    mutating func literalHeader() throws -> (size: Int64, binary: Bool) {
        var binary = false
        if try peek() == UInt8(ascii: "~") { index += 1; binary = true }
        try expect(UInt8(ascii: "{"))
        let n: UInt64
        do { n = try number64() } catch let e as ParseError where e.reason == .numberOverflow {
            throw fail(.literalTooLarge, "literal size larger than 2^63-1")
        }
        if try peek() == UInt8(ascii: "+") { index += 1 }
        try expect(UInt8(ascii: "}"))
        try expectCRLF()
        return (Int64(n), binary)
    }

    /// A literal held in memory (bounded by `maxInlineLiteralSize`).
    mutating func inlineLiteral() throws -> [UInt8] {
        let (size, _) = try literalHeader()
        guard size <= Int64(limits.maxInlineLiteralSize) else {
            throw fail(.literalTooLarge, "literal of \(size) bytes where at most \(limits.maxInlineLiteralSize) are allowed")
        }
        let n = Int(size)
        guard end - index >= n else { throw NeedMoreBytes() }
        let bytes = buffer.getBytes(at: index, length: n) ?? []
        index += n
        return bytes
    }

    /// string = quoted / literal
    mutating func string() throws -> [UInt8] {
        let b = try peek()
        if b == UInt8(ascii: "\"") { return try quoted() }
        if b == UInt8(ascii: "{") || b == UInt8(ascii: "~") { return try inlineLiteral() }
        throw fail("expected a string")
    }

    /// astring = 1*ASTRING-CHAR / string
    mutating func astring() throws -> [UInt8] {
        let b = try peek()
        if b == UInt8(ascii: "\"") || b == UInt8(ascii: "{") { return try string() }
        // `~` is an ASTRING-CHAR: only `~{` starts a literal8 (an atom such as `~backup` is a name).
        if b == UInt8(ascii: "~"), try peek(offset: 1) == UInt8(ascii: "{") { return try string() }
        return try take(while: Self.isAStringChar, what: "astring")
    }

    /// nstring = string / nil
    mutating func nstring() throws -> [UInt8]? {
        if try tryNIL() { return nil }
        return try string()
    }

    mutating func tryNIL() throws -> Bool {
        let b = try peek()
        guard b == UInt8(ascii: "N") || b == UInt8(ascii: "n") else { return false }
        // NIL must be followed by a delimiter to be NIL and not an atom such as "NILS".
        guard try tryKeyword("NIL") else { return false }
        let next = try peek()
        if Self.isAtomChar(next) { index -= 3; return false }
        return true
    }

    mutating func enterNesting() throws {
        depth += 1
        if depth > limits.maxNestingDepth { throw fail(.nestingTooDeep, "lists nested deeper than \(limits.maxNestingDepth)") }
    }

    mutating func leaveNesting() { depth -= 1 }

    /// `(` item *(SP item) `)` or `()`; `item` parses one element.
    mutating func parenthesized<T>(_ item: (inout Cursor) throws -> T) throws -> [T] {
        try expect(UInt8(ascii: "("))
        try enterNesting()
        defer { leaveNesting() }
        var out: [T] = []
        if try peek() == UInt8(ascii: ")") { index += 1; return out }
        while true {
            out.append(try item(&self))
            let b = try byte()
            if b == UInt8(ascii: ")") { return out }
            guard b == UInt8(ascii: " ") else { index -= 1; throw fail("expected SP or ')' in a list") }
            // Tolerate doubled spaces.
            while try peek() == UInt8(ascii: " ") { index += 1 }
        }
    }

    /// Skips any value: NIL, number, atom, string, or a nested list. Used for
    /// data mailferry does not read (ENVELOPE, BODYSTRUCTURE, unknown items).
    mutating func skipValue() throws {
        let b = try peek()
        switch b {
        case UInt8(ascii: "("):
            _ = try parenthesized { c in try c.skipValue() }
        case UInt8(ascii: "\""):
            _ = try quoted()
        case UInt8(ascii: "{"), UInt8(ascii: "~"):
            _ = try inlineLiteral()
        case UInt8(ascii: "\\"):
            _ = try flagToken()
        default:
            _ = try take(while: { Self.isAStringChar($0) || $0 == UInt8(ascii: "[") || $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "*") }, what: "value")
            // Section spec of an unknown item, e.g. FOO[1.2]
            if try peek() == UInt8(ascii: "[") { _ = try take(while: { $0 != UInt8(ascii: "]") && $0 != 0x0D && $0 != 0x0A }, what: "section"); try expect(UInt8(ascii: "]")) }
        }
    }

    /// The rest of the line, without CRLF (not consumed). Bytes kept as is.
    mutating func restOfLine() throws -> [UInt8] {
        var out: [UInt8] = []
        while true {
            let b = try peek()
            if b == 0x0D || b == 0x0A { return out }
            out.append(b)
            index += 1
            if out.count > limits.maxLineLength { throw fail(.lineTooLong, "line too long") }
        }
    }
}

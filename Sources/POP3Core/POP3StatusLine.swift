import NIOCore

/// A single-line reply, or the first line of a multi-line one (RFC 1939 §3,
/// RFC 2449 §3 and §8).
///
///     single-line = status [SP [resp-code SP] text] CRLF
///     status      = "+OK" / "-ERR"
///     text        = *schar          ; up to 512 octets with CRLF (RFC 2449 §4)
///
/// Servers also end lines with a bare LF and send 8-bit bytes in the text;
/// both are accepted. The status keyword is matched case-insensitively.
public struct POP3StatusLine: Hashable, Sendable, CustomStringConvertible {
    public var isOK: Bool
    public var code: POP3ResponseCode?
    /// The human-readable text (bytes that are not UTF-8 are replaced).
    public var text: String

    public init(isOK: Bool, code: POP3ResponseCode? = nil, text: String = "") {
        self.isOK = isOK
        self.code = code
        self.text = text
    }

    public var description: String {
        var s = isOK ? "+OK" : "-ERR"
        if let code { s += " [\(code)]" }
        if !text.isEmpty { s += " " + text }
        return s
    }

    /// True when `line` (without its line ending) starts with `+OK` or `-ERR`.
    public static func looksLikeStatus(_ line: ArraySlice<UInt8>) -> Bool {
        (try? parse(line: line)) != nil
    }

    /// Parses one line without its line ending (a trailing CR is dropped).
    public static func parse(line raw: ArraySlice<UInt8>) throws -> POP3StatusLine {
        let line = POP3Bytes.dropCR(raw)
        func hasPrefix(_ p: String) -> Bool {
            let pb = Array(p.utf8)
            guard line.count >= pb.count else { return false }
            for (a, b) in zip(line.prefix(pb.count), pb) where a | 0x20 != b | 0x20 { return false }
            // The keyword must end there ("+OKAY" is not "+OK").
            if line.count > pb.count {
                let next = line[line.startIndex + pb.count]
                return next == POP3Bytes.sp || next == 0x09
            }
            return true
        }
        let ok: Bool
        let rest: ArraySlice<UInt8>
        if hasPrefix("+OK") {
            ok = true
            rest = line.dropFirst(3)
        } else if hasPrefix("-ERR") {
            ok = false
            rest = line.dropFirst(4)
        } else {
            throw POP3ParseError("expected +OK or -ERR, got \(POP3StatusLine.preview(line))")
        }
        var text = rest
        while let f = text.first, f == POP3Bytes.sp || f == 0x09 { text = text.dropFirst() }
        var code: POP3ResponseCode?
        if let (c, after) = POP3ResponseCode.parse(prefixOf: text) {
            code = c
            text = after
        }
        return POP3StatusLine(isOK: ok, code: code, text: String(decoding: text, as: UTF8.self))
    }

    public func write(to buffer: inout ByteBuffer) {
        buffer.writeString(isOK ? "+OK" : "-ERR")
        if let code {
            buffer.writeString(" ")
            code.write(to: &buffer)
        }
        if !text.isEmpty { buffer.writeString(" " + text) }
        buffer.writeString("\r\n")
    }

    /// A short, printable rendering of unexpected input for error messages.
    static func preview<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        let shown = bytes.prefix(40).map { b -> String in
            (b >= 0x20 && b < 0x7F) ? String(UnicodeScalar(b)) : "\\x" + String(b, radix: 16, uppercase: true)
        }.joined()
        return "\"" + shown + (bytes.count > 40 ? "…" : "") + "\""
    }

    // MARK: Helpers for particular replies

    /// The APOP timestamp in a greeting: the first `<...>` containing `@`
    /// (RFC 1939 §7: `msg-id` form).
    public var apopTimestamp: String? {
        guard let open = text.firstIndex(of: "<"), let close = text[open...].firstIndex(of: ">") else { return nil }
        let stamp = String(text[open...close])
        return stamp.count > 2 ? stamp : nil
    }

    /// `+OK nn mm` of STAT: message count and total size (RFC 1939 §5).
    ///
    ///     stat-reply = "+OK" SP 1*DIGIT SP 1*DIGIT [SP text]
    public func statValues() throws -> (count: Int, size: Int64) {
        let w = POP3Bytes.words(Array(text.utf8))
        guard w.count >= 2, let n = POP3Bytes.decimal(w[0], max: UInt64(Int32.max)),
              let s = POP3Bytes.decimal(w[1]) else {
            throw POP3ParseError("STAT reply is not \"count size\": \(POP3StatusLine.preview(Array(text.utf8)))")
        }
        return (Int(n), Int64(s))
    }
}

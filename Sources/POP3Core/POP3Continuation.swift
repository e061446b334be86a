import NIOCore

/// A SASL server challenge during AUTH (RFC 5034 §4).
///
///     continue-req = "+" SP [base64] CRLF
///
/// Some servers send a bare `+` with no space (accepted). Office 365 sends
/// `+ ` with an empty challenge before it expects the XOAUTH2 token.
public struct POP3Continuation: Hashable, Sendable {
    /// The challenge exactly as sent (still base64).
    public var base64: String

    public init(base64: String) { self.base64 = base64 }

    /// The decoded challenge, or nil when it is not valid base64.
    public var decoded: [UInt8]? { Base64.decode(base64) }

    /// True when `line` (without its line ending) is a continuation and not
    /// `+OK`.
    public static func matches(_ line: ArraySlice<UInt8>) -> Bool {
        let l = POP3Bytes.dropCR(line)
        guard l.first == UInt8(ascii: "+") else { return false }
        if l.count == 1 { return true }
        return l[l.startIndex + 1] == POP3Bytes.sp
    }

    public static func parse(line raw: ArraySlice<UInt8>) throws -> POP3Continuation {
        let l = POP3Bytes.dropCR(raw)
        guard matches(l) else { throw POP3ParseError("expected a SASL continuation \"+ \", got \(POP3StatusLine.preview(l))") }
        var rest = l.dropFirst()
        while rest.first == POP3Bytes.sp { rest = rest.dropFirst() }
        while let last = rest.last, last == POP3Bytes.sp { rest = rest.dropLast() }
        guard rest.allSatisfy({ Base64.isAlphabet($0) }) else {
            throw POP3ParseError("SASL challenge is not base64")
        }
        return POP3Continuation(base64: String(decoding: rest, as: UTF8.self))
    }

    public func write(to buffer: inout ByteBuffer) {
        buffer.writeString(base64.isEmpty ? "+ \r\n" : "+ \(base64)\r\n")
    }
}

/// RFC 4648 base64, without line breaks; used by SASL lines.
public enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func isAlphabet(_ b: UInt8) -> Bool {
        (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39)
            || b == UInt8(ascii: "+") || b == UInt8(ascii: "/") || b == UInt8(ascii: "=")
    }

    public static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        let a = Array(bytes)
        var out = [UInt8]()
        out.reserveCapacity((a.count + 2) / 3 * 4)
        var i = 0
        while i + 2 < a.count {
            let n = UInt32(a[i]) << 16 | UInt32(a[i + 1]) << 8 | UInt32(a[i + 2])
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], alphabet[Int(n & 63)]]
            i += 3
        }
        let rem = a.count - i
        if rem == 1 {
            let n = UInt32(a[i]) << 16
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], 0x3D, 0x3D]
        } else if rem == 2 {
            let n = UInt32(a[i]) << 16 | UInt32(a[i + 1]) << 8
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], 0x3D]
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(_ s: String) -> [UInt8]? {
        var vals = [UInt8]()
        var padding = 0
        for c in s.utf8 {
            let v: UInt8
            switch c {
            case 0x41...0x5A: v = c - 0x41
            case 0x61...0x7A: v = c - 0x61 + 26
            case 0x30...0x39: v = c - 0x30 + 52
            case UInt8(ascii: "+"): v = 62
            case UInt8(ascii: "/"): v = 63
            case UInt8(ascii: "="): padding += 1; continue
            default: return nil
            }
            guard padding == 0 else { return nil }
            vals.append(v)
        }
        guard vals.count % 4 != 1, padding <= 2 else { return nil }
        var out = [UInt8]()
        var i = 0
        while i < vals.count {
            let chunk = vals[i..<min(i + 4, vals.count)]
            var n: UInt32 = 0
            for (k, v) in chunk.enumerated() { n |= UInt32(v) << (18 - 6 * UInt32(k)) }
            out.append(UInt8(n >> 16 & 0xFF))
            if chunk.count > 2 { out.append(UInt8(n >> 8 & 0xFF)) }
            if chunk.count > 3 { out.append(UInt8(n & 0xFF)) }
            i += 4
        }
        return out
    }
}

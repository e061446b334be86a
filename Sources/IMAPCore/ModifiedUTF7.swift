/// Modified UTF-7 for mailbox names (RFC 3501 §5.1.3).
///
///     mbox-name   = *( printable-ascii / "&-" / "&" modified-base64 "-" )
///     printable   = %x20-25 / %x27-7E          ; "&" is written "&-"
///     modified-base64 = base64 of UTF-16BE with "," instead of "/", no "=" padding
public enum ModifiedUTF7 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,".utf8)
    static let reverse: [UInt8: UInt8] = {
        var r: [UInt8: UInt8] = [:]
        for (i, c) in alphabet.enumerated() { r[c] = UInt8(i) }
        return r
    }()

    public static func encode(_ s: String) -> String {
        var out: [UInt8] = []
        var pending: [UInt16] = []
        func flush() {
            guard !pending.isEmpty else { return }
            var bytes: [UInt8] = []
            for u in pending { bytes.append(UInt8(u >> 8)); bytes.append(UInt8(u & 0xFF)) }
            out.append(UInt8(ascii: "&"))
            var i = 0
            while i < bytes.count {
                let b0 = bytes[i]
                let b1 = i + 1 < bytes.count ? bytes[i + 1] : 0
                let b2 = i + 2 < bytes.count ? bytes[i + 2] : 0
                out.append(alphabet[Int(b0 >> 2)])
                out.append(alphabet[Int((b0 & 0x03) << 4 | b1 >> 4)])
                if i + 1 < bytes.count { out.append(alphabet[Int((b1 & 0x0F) << 2 | b2 >> 6)]) }
                if i + 2 < bytes.count { out.append(alphabet[Int(b2 & 0x3F)]) }
                i += 3
            }
            out.append(UInt8(ascii: "-"))
            pending.removeAll()
        }
        for scalar in s.unicodeScalars {
            let v = scalar.value
            if v >= 0x20 && v <= 0x7E {
                flush()
                if v == 0x26 { out.append(0x26); out.append(UInt8(ascii: "-")) } else { out.append(UInt8(v)) }
            } else {
                pending.append(contentsOf: Array(String(scalar).utf16))
            }
        }
        flush()
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes a name; nil when it is not valid modified UTF-7 (then callers
    /// show the raw bytes).
    public static func decode(_ bytes: [UInt8]) -> String? {
        var out = ""
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if b < 0x20 || b > 0x7E { return nil }
            if b != UInt8(ascii: "&") {
                out.unicodeScalars.append(Unicode.Scalar(b))
                i += 1
                continue
            }
            guard let dash = bytes[(i + 1)...].firstIndex(of: UInt8(ascii: "-")) else { return nil }
            if dash == i + 1 {
                out.append("&")
                i += 2
                continue
            }
            var bits: UInt32 = 0
            var nbits = 0
            var raw: [UInt8] = []
            for c in bytes[(i + 1)..<dash] {
                guard let v = reverse[c] else { return nil }
                bits = bits << 6 | UInt32(v)
                nbits += 6
                if nbits >= 8 {
                    nbits -= 8
                    raw.append(UInt8((bits >> UInt32(nbits)) & 0xFF))
                }
            }
            // Leftover bits must be zero padding of less than one base64 digit.
            guard raw.count % 2 == 0, !raw.isEmpty, nbits < 6, bits & ((1 << UInt32(nbits)) - 1) == 0 else { return nil }
            var units: [UInt16] = []
            for j in stride(from: 0, to: raw.count, by: 2) { units.append(UInt16(raw[j]) << 8 | UInt16(raw[j + 1])) }
            var decoded = ""
            for r in UnicodeDecodingResultSequence(units) {
                guard let s = r else { return nil }
                // Printable ASCII must not be base64-encoded.
                if s.value >= 0x20 && s.value <= 0x7E { return nil }
                decoded.unicodeScalars.append(s)
            }
            out += decoded
            i = dash + 1
        }
        return out
    }

    public static func decode(_ s: String) -> String? { decode(Array(s.utf8)) }
}

struct UnicodeDecodingResultSequence: Sequence, IteratorProtocol {
    var iterator: IndexingIterator<[UInt16]>
    var codec = UTF16()
    init(_ units: [UInt16]) { iterator = units.makeIterator() }
    mutating func next() -> Unicode.Scalar?? {
        switch codec.decode(&iterator) {
        case .scalarValue(let s): return .some(s)
        case .emptyInput: return nil
        case .error: return .some(nil)
        }
    }
}

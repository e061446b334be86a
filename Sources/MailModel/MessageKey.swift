@preconcurrency import Crypto
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A message's identity: the SHA-256 of its bytes after every line ending has
/// been normalised to CRLF (a bare LF becomes CRLF; CRLF and lone CR are kept).
///
/// The key is what state, catalogs and reports use to say "the same message".
/// UIDs, UIDLs and file names are only caches that lead to it.
public struct MessageKey: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    /// The 32 digest bytes.
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }

    /// Parses 64 lower- or upper-case hex digits.
    public init?(hex: String) {
        func parse(_ utf8: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
            guard utf8.count == 64 else { return nil }
            var out = [UInt8]()
            out.reserveCapacity(32)
            var i = 0
            while i < 64 {
                guard let hi = Self.nibble(utf8[i]), let lo = Self.nibble(utf8[i + 1]) else { return nil }
                out.append(hi << 4 | lo)
                i += 2
            }
            return out
        }
        var hex = hex
        // Native strings are contiguous: no copy of the digits first.
        guard let out = hex.withUTF8(parse) else { return nil }
        self.bytes = out
    }

    /// The digest bytes at once (the synthesised hash fed them one by one;
    /// state reads and plans put thousands of keys in sets and dictionaries).
    public func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// 64 lower-case hex digits.
    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public var description: String { hex }

    /// The first 12 hex digits, for logs and progress lines.
    public var short: String { String(hex.prefix(12)) }

    public static func < (lhs: MessageKey, rhs: MessageKey) -> Bool {
        lhs.bytes.lexicographicallyPrecedes(rhs.bytes)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard let k = MessageKey(hex: s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a 64-digit hex message key")
        }
        self = k
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(hex)
    }

    /// The key of a whole message held in memory.
    public static func of<Bytes: Sequence>(_ bytes: Bytes) -> MessageKey where Bytes.Element == UInt8 {
        var h = MessageHasher()
        h.update(bytes)
        return h.finalize()
    }
}

/// Computes a `MessageKey` incrementally, chunk by chunk, normalising line
/// endings on the way. Also counts the raw bytes and the normalised bytes, so
/// a caller that streams a message learns its size for free.
public struct MessageHasher: @unchecked Sendable {
    private var sha = SHA256()
    private var lastWasCR = false
    private var scratch: [UInt8] = []
    /// Bytes fed in, as they were.
    public private(set) var rawCount: Int64 = 0
    /// Bytes hashed, after LF -> CRLF normalisation.
    public private(set) var normalizedCount: Int64 = 0

    public init() {}

    public mutating func update(_ buffer: UnsafeRawBufferPointer) {
        guard let base = buffer.baseAddress, !buffer.isEmpty else { return }
        let n = buffer.count
        rawCount += Int64(n)
        // Bare LFs are found with memchr (vectorised), not byte by byte: a
        // chunk whose every LF follows a CR hashes as it is, in one call.
        var start = 0
        var from = 0
        while from < n, let hit = memchr(base + from, 0x0A, n - from) {
            let i = base.distance(to: UnsafeRawPointer(hit))
            let prevCR = i == 0 ? lastWasCR : buffer[i - 1] == 0x0D
            if !prevCR {
                // Hash everything before the bare LF, then CRLF.
                if i > start {
                    sha.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[start..<i]))
                    normalizedCount += Int64(i - start)
                }
                Self.crlf.withUnsafeBytes { sha.update(bufferPointer: $0) }
                normalizedCount += 2
                start = i + 1
            }
            from = i + 1
        }
        if n > start {
            sha.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[start..<n]))
            normalizedCount += Int64(n - start)
        }
        lastWasCR = buffer[n - 1] == 0x0D
    }

    public mutating func update<Bytes: Sequence>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        if let done: Void = bytes.withContiguousStorageIfAvailable({ self.update(UnsafeRawBufferPointer($0)) }) {
            return done
        }
        let array = Array(bytes)
        array.withUnsafeBytes { self.update($0) }
    }

    public func finalize() -> MessageKey {
        let digest = sha.finalize()
        // SHA-256 always yields 32 bytes, so the failable init cannot fail here.
        return MessageKey(uncheckedDigest: Array(digest))
    }

    private static let crlf: [UInt8] = [0x0D, 0x0A]
}

extension MessageKey {
    fileprivate init(uncheckedDigest: [UInt8]) {
        self.bytes = uncheckedDigest
    }
}

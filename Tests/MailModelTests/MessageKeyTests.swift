import Testing
@testable import MailModel

struct MessageKeyTests {
    @Test(arguments: [
        ("a\nb\n", "a\r\nb\r\n"),
        ("a\r\nb", "a\r\nb"),
        ("a\rb\n", "a\rb\r\n"),
        ("", ""),
    ])
    func normalisesBareLF(raw: String, crlf: String) {
        #expect(MessageKey.of(Array(raw.utf8)) == MessageKey.of(Array(crlf.utf8)))
    }

    @Test func chunkBoundaryBetweenCRAndLF() {
        var h = MessageHasher()
        h.update(Array("line\r".utf8))
        h.update(Array("\nnext\n".utf8))
        #expect(h.finalize() == MessageKey.of(Array("line\r\nnext\r\n".utf8)))
        #expect(h.normalizedCount == 12)
        #expect(h.rawCount == 11)
    }

    @Test func knownDigest() {
        // SHA-256 of "abc".
        #expect(MessageKey.of(Array("abc".utf8)).hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func hexRoundTrip() throws {
        let k = MessageKey.of(Array("hello".utf8))
        #expect(MessageKey(hex: k.hex) == k)
        #expect(MessageKey(hex: "zz") == nil)
    }

    /// The reference: normalise the whole message, then hash it in one piece.
    private static func referenceKey(_ raw: [UInt8]) -> (MessageKey, Int) {
        var out: [UInt8] = []
        var prev: UInt8 = 0
        for b in raw {
            if b == 0x0A && prev != 0x0D { out.append(0x0D) }
            out.append(b)
            prev = b
        }
        var h = MessageHasher()
        out.withUnsafeBytes { h.update($0) }
        // `out` has no bare LF, so this hashes it as it is.
        return (h.finalize(), out.count)
    }

    /// Messages of CR, LF, CRLF and text, cut into chunks at every kind of
    /// place (between CR and LF, at a bare LF, one-byte chunks), hash as the
    /// normalised whole does.
    @Test(arguments: 0..<40)
    func chunkedAgreesWithReference(seed: Int) {
        var rng = SplitMix(UInt64(seed) &* 0x9E37_79B9 &+ 1)
        let alphabet: [UInt8] = [0x0D, 0x0A, 0x61, 0x62, 0x20, 0x0D, 0x0A]
        let length = Int(rng.next() % 3000)
        let raw = (0..<length).map { _ in rng.next() % 4 == 0 ? alphabet[Int(rng.next() % 7)] : 0x78 }
        let (want, wantCount) = Self.referenceKey(raw)
        var h = MessageHasher()
        var i = 0
        while i < raw.count {
            let step = seed % 5 == 0 ? 1 : 1 + Int(rng.next() % 200)
            let end = min(raw.count, i + step)
            raw[i..<end].withUnsafeBytes { h.update($0) }
            i = end
        }
        #expect(h.finalize() == want)
        #expect(h.normalizedCount == Int64(wantCount))
        #expect(h.rawCount == Int64(raw.count))
    }
}

struct SplitMix {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

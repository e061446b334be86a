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
}

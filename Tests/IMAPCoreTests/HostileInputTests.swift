import IMAPCore
import NIOCore
import Testing

/// Input that a broken or hostile server may send: always a ParseError with
/// a reason, never a crash, a hang or unbounded memory.
struct HostileInputTests {
    func firstError(_ input: [UInt8], feed: Feed, limits: ParserLimits = ParserLimits()) -> ParseError? {
        do {
            _ = try parse(input, feed: feed, limits: limits)
            return nil
        } catch let e as ParseError {
            return e
        } catch {
            return nil
        }
    }

    @Test(arguments: [Feed.whole, .sevenByteChunks])
    func literalSizeOf2To63(feed: Feed) {
        let e = firstError(bytes("* 1 FETCH (BODY[] {9223372036854775808}\r\nabc"), feed: feed)
        #expect(e?.reason == .literalTooLarge)
        let e2 = firstError(bytes("* LIST () \"/\" {9223372036854775807}\r\nabc"), feed: feed)
        #expect(e2?.reason == .literalTooLarge)
        let e3 = firstError(bytes("* 1 FETCH (BODY[] {99999999999999999999999}\r\n"), feed: feed)
        #expect(e3?.reason == .literalTooLarge)
    }

    @Test func streamedLiteralOverTheLimit() {
        let e = firstError(bytes("* 1 FETCH (BODY[] {5000}\r\n"), feed: .whole, limits: ParserLimits(maxStreamedLiteralSize: 4096))
        #expect(e?.reason == .literalTooLarge)
    }

    @Test(arguments: [Feed.whole, .sevenByteChunks])
    func nesting10000Deep(feed: Feed) {
        let deep = "* 1 FETCH (BODYSTRUCTURE " + String(repeating: "(", count: 10_000) + String(repeating: ")", count: 10_000) + ")\r\n"
        #expect(firstError(bytes(deep), feed: feed)?.reason == .nestingTooDeep)
        let deepList = "* LIST " + String(repeating: "(", count: 10_000) + "\r\n"
        #expect(firstError(bytes(deepList), feed: feed) != nil)
        let deepID = "* ID " + String(repeating: "(", count: 10_000) + "\r\n"
        #expect(firstError(bytes(deepID), feed: feed) != nil)
    }

    @Test(arguments: [Feed.whole, .sevenByteChunks])
    func eightyKilobyteLineWithoutCRLF(feed: Feed) {
        let long = "* OK " + String(repeating: "a", count: 80 * 1024)
        #expect(firstError(bytes(long), feed: feed)?.reason == .lineTooLong)
        let longFetch = "* 1 FETCH (FLAGS (" + String(repeating: "b", count: 80 * 1024)
        #expect(firstError(bytes(longFetch), feed: feed)?.reason == .lineTooLong)
        let longTag = String(repeating: "T", count: 80 * 1024)
        #expect(firstError(bytes(longTag), feed: feed)?.reason == .lineTooLong)
    }

    @Test func longSearchLineIsAllowed() throws {
        let numbers = (1...20_000).map(String.init).joined(separator: " ")
        let got = try parse("* SEARCH \(numbers)\r\n")
        guard case .response(.untagged(.search(let s))) = got.first else { Issue.record("no search"); return }
        #expect(s.numbers.count == 20_000)
    }

    static let garbage: [String] = [
        "\r\n", "*\r\n", "* \r\n", "A1\r\n", "A1 MAYBE\r\n", "* 1 FETCH UID 1)\r\n", "* 1 FETCH (UID)\r\n",
        "* 1 FETCH (UID 0)\r\n", "* 1 FETCH (UID x)\r\n", "* 1 FETCH (BODY[ {3}\r\nabc)\r\n", "* 1 FETCH (BODY[] {3x}\r\n",
        "* LIST (\\A \"/\" x\r\n", "* LIST () \"//\" x\r\n", "* STATUS x (MESSAGES 99999999999)\r\n",
        "* 1 FETCH (INTERNALDATE \"not a date\")\r\n", "* 1 FETCH (FLAGS (\\Seen) UID 1 \"\r\n",
        "* 4294967296 EXISTS\r\n", "A1 OK [UIDVALIDITY 99999999999] x\r\n", "* 1 FETCH (BODY[] \"unterminated\r\n",
        "\u{0}\u{1}\u{2}\r\n", "* 1 FETCH (MODSEQ (abc))\r\n",
    ]

    @Test(arguments: garbage)
    func garbageIsAnErrorOrTolerated(_ input: String) {
        // Must not crash or hang; most are errors, a few are tolerated.
        for feed in Feed.allCases {
            _ = firstError(bytes(input), feed: feed)
        }
    }

    @Test func errorIsSticky() throws {
        var p = ResponseParser()
        p.append(ByteBuffer(string: "* 1 FETCH (UID x)\r\nA1 OK fine\r\n"))
        #expect(try p.next() == .fetchStart(sequenceNumber: 1))
        #expect(throws: ParseError.self) { try p.next() }
        #expect(throws: ParseError.self) { try p.next() }
    }

    @Test func randomBytesNeverCrash() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = bytes("* ()[]{}~+\"\\\r\n0123456789 FETCH BODY UID LIST OK NO BAD NIL")
        for _ in 0..<300 {
            let n = Int.random(in: 1..<300, using: &rng)
            let input = (0..<n).map { _ in alphabet.randomElement(using: &rng) ?? 0 }
            var p = ResponseParser()
            p.append(ByteBuffer(bytes: input))
            var steps = 0
            while steps < 10_000 {
                steps += 1
                guard let e = try? p.next(), e != nil else { break }
            }
            #expect(steps < 10_000)
        }
    }
}

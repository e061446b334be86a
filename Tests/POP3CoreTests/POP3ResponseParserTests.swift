import NIOCore
import Testing
@testable import POP3Core

/// Runs the parser over `input` fed in pieces of `step` bytes (0 = all at
/// once) and returns the events, with adjacent chunks merged.
func parseAll(_ kinds: [POP3ResponseKind], _ input: [UInt8], step: Int = 0,
              limits: POP3ParserLimits = POP3ParserLimits()) throws -> [POP3ResponseEvent] {
    var p = POP3ResponseParser(limits: limits)
    for k in kinds { p.expect(k) }
    var buffer = ByteBuffer()
    var events: [POP3ResponseEvent] = []
    func drain() throws {
        while let e = try p.next(&buffer) {
            if case .chunk(var c) = e, case .chunk(var prev)? = events.last {
                prev.writeBuffer(&c)
                events[events.count - 1] = .chunk(prev)
            } else {
                events.append(e)
            }
        }
        buffer.discardReadBytes()
    }
    if step == 0 {
        buffer.writeBytes(input)
        try drain()
    } else {
        var i = 0
        while i < input.count {
            buffer.writeBytes(input[i..<min(i + step, input.count)])
            i += step
            try drain()
        }
    }
    return events
}

private func b(_ s: String) -> [UInt8] { Array(s.utf8) }
private func chunk(_ s: String) -> POP3ResponseEvent { .chunk(ByteBuffer(string: s)) }
private func chunk(_ bytes: [UInt8]) -> POP3ResponseEvent { .chunk(ByteBuffer(bytes: bytes)) }
private func line(_ s: String) -> POP3ResponseEvent { .line(ByteBuffer(string: s)) }
private let ok = POP3ResponseEvent.status(POP3StatusLine(isOK: true))

@Suite struct ResponseParserTests {
    /// (name, stuffed wire body after "+OK\r\n", expected unstuffed body)
    static let streamCases: [(String, String, String)] = [
        ("plain", "Subject: x\r\n\r\nhello\r\n.\r\n", "Subject: x\r\n\r\nhello\r\n"),
        ("empty", ".\r\n", ""),
        ("dot stuffed", "a\r\n..b\r\n...\r\n..\r\n.\r\n", "a\r\n.b\r\n..\r\n.\r\n"),
        ("dot line first", "..\r\nx\r\n.\r\n", ".\r\nx\r\n"),
        ("unneeded stuffing stripped", ".x\r\n.\r\n", "x\r\n"),
        ("bare LF", "a\nb\n..c\n.\n", "a\nb\n.c\n"),
        ("bare LF terminator after CRLF body", "a\r\nb\r\n.\n", "a\r\nb\r\n"),
        ("CR data after dot", ".\rx\r\n.\r\n", "\rx\r\n"),
        ("dot not at line start", "a.b\r\n .\r\n.\r\n", "a.b\r\n .\r\n"),
        ("lone CR line break kept", "a\rb\r\n.\r\n", "a\rb\r\n"),
        ("trailing bytes after end are left", "x\r\n.\r\n", "x\r\n"),
    ]

    @Test(arguments: streamCases, [0, 1, 2, 3, 7])
    func streaming(_ c: (String, String, String), step: Int) throws {
        let events = try parseAll([.multiLineStream], b("+OK message follows\r\n" + c.1), step: step)
        var expected: [POP3ResponseEvent] = [.status(POP3StatusLine(isOK: true, text: "message follows"))]
        if !c.2.isEmpty { expected.append(chunk(c.2)) }
        expected.append(.end)
        #expect(events == expected, "case \(c.0), step \(step)")
    }

    @Test(arguments: [1, 2, 5])
    func eightBitAndLongLines(step: Int) throws {
        var body: [UInt8] = Array(repeating: UInt8(ascii: "a"), count: 5000) + [0x0D, 0x0A]
        body += (0x80...0xFF).map { UInt8($0) } + [0x0A]
        body += [0x00, 0x2E, 0x0D, 0x0A]
        var wire = ByteBuffer()
        POP3MultiLine.stuff(ByteBuffer(bytes: body), into: &wire)
        let events = try parseAll([.multiLineStream], b("+OK\r\n") + Array(wire.readableBytesView), step: step)
        #expect(events == [ok, chunk(body), .end])
    }

    @Test func stuffingRoundTrip() throws {
        let samples = ["", "x", ".", "..", ".\r\n", "a\r\n.\r\nb", "a\n.\n", "no newline", "\r\n.\r\n.\r\n", ".x\r\n..y\n"]
        for s in samples {
            let stuffed = POP3MultiLine.stuffed(ByteBuffer(string: s))
            let back = try #require(try POP3MultiLine.unstuff(stuffed))
            // The encoder adds CRLF to a body without a final line break, as servers do.
            let expected = (s.isEmpty || s.utf8.last == 0x0A) ? s : s + "\r\n"
            #expect(String(buffer: back) == expected, "sample \(s.debugDescription)")
        }
    }

    @Test func pipelinedReplies() throws {
        let wire = "+OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n+OK 120 octets\r\nX\r\n.\r\n-ERR no such message\r\n+OK bye\r\n"
        for step in [0, 1, 4] {
            let events = try parseAll([.multiLineLines, .multiLineLines, .multiLineStream, .multiLineStream, .singleLine], b(wire), step: step)
            #expect(events == [
                .status(POP3StatusLine(isOK: true, text: "2 messages")), line("1 120"), line("2 200"), .end,
                ok, line("1 a"), line("2 b"), .end,
                .status(POP3StatusLine(isOK: true, text: "120 octets")), chunk("X\r\n"), .end,
                .status(POP3StatusLine(isOK: false, text: "no such message")),
                .status(POP3StatusLine(isOK: true, text: "bye")),
            ])
        }
    }

    @Test func linesAreUnstuffed() throws {
        let events = try parseAll([.multiLineLines], b("+OK\r\nTOP\r\n..odd\n.\n"))
        #expect(events == [ok, line("TOP"), line(".odd"), .end])
    }

    @Test func sasl() throws {
        let events = try parseAll([.sasl, .sasl, .sasl], b("+ \r\n+ VXNlcm5hbWU6\r\n+OK Logged in.\r\n"), step: 1)
        #expect(events == [.continuation(POP3Continuation(base64: "")),
                           .continuation(POP3Continuation(base64: "VXNlcm5hbWU6")),
                           .status(POP3StatusLine(isOK: true, text: "Logged in."))])
        let failed = try parseAll([.sasl], b("-ERR [AUTH] Authentication failed.\r\n"))
        #expect(failed == [.status(POP3StatusLine(isOK: false, code: .auth, text: "Authentication failed."))])
    }

    @Test func partialInputIsNotAnError() throws {
        #expect(try parseAll([.singleLine], b("+OK no line end yet")) == [])
        #expect(try parseAll([.multiLineStream], b("+OK\r\nabc\r\n.")) == [ok, chunk("abc\r\n")])
        #expect(try parseAll([.multiLineStream], b("+OK\r\nabc\r\n.\r")) == [ok, chunk("abc\r\n")])
        #expect(try parseAll([.multiLineLines], b("+OK\r\nTOP")) == [ok])
    }

    @Test func chunksAreSlicesNotWholeMessages() throws {
        // A body fed in 1 KB pieces comes out in pieces no larger than what arrived.
        var body = ByteBuffer()
        for i in 0..<2000 { body.writeString("line \(i) of a message that is not held whole\r\n") }
        let wire = ByteBuffer(string: "+OK\r\n").readableBytesView + POP3MultiLine.stuffed(body).readableBytesView
        var p = POP3ResponseParser()
        p.expect(.multiLineStream)
        var buffer = ByteBuffer()
        var total = 0
        var largest = 0
        var i = 0
        let all = Array(wire)
        while i < all.count {
            buffer.writeBytes(all[i..<min(i + 1024, all.count)])
            i += 1024
            while let e = try p.next(&buffer) {
                if case .chunk(let c) = e {
                    total += c.readableBytes
                    largest = max(largest, c.readableBytes)
                }
            }
            buffer.discardReadBytes()
        }
        #expect(total == body.readableBytes)
        #expect(largest <= 1024)
    }
}

@Suite struct HostileInputTests {
    @Test func endlessStatusLineIsRefusedWithBoundedMemory() throws {
        var p = POP3ResponseParser(limits: POP3ParserLimits(maxLineLength: 512))
        p.expect(.singleLine)
        var buffer = ByteBuffer(string: "+OK ")
        var thrown: POP3ParseError?
        for _ in 0..<100 {
            buffer.writeRepeatingByte(UInt8(ascii: "x"), count: 100)
            do { _ = try p.next(&buffer) } catch let e as POP3ParseError { thrown = e; break }
        }
        #expect(thrown?.message.contains("longer than 512") == true)
        #expect(buffer.readableBytes < 1024)
    }

    @Test func endlessListingLineIsRefused() {
        let wire = b("+OK\r\n1 ") + Array(repeating: UInt8(ascii: "9"), count: 10_000)
        #expect(throws: POP3ParseError.self) { try parseAll([.multiLineLines], wire) }
    }

    @Test func endlessBodyLineStreamsInsteadOfGrowing() throws {
        var p = POP3ResponseParser()
        p.expect(.multiLineStream)
        var buffer = ByteBuffer(string: "+OK\r\n")
        _ = try p.next(&buffer)
        var streamed = 0
        for _ in 0..<1000 {
            buffer.writeRepeatingByte(UInt8(ascii: "y"), count: 4096)
            while let e = try p.next(&buffer) { if case .chunk(let c) = e { streamed += c.readableBytes } }
            #expect(buffer.readableBytes == 0)
            buffer.discardReadBytes()
        }
        #expect(streamed == 4_096_000)
    }

    @Test func unsolicitedDataIsAnError() {
        #expect(throws: POP3ParseError.self) { try parseAll([], b("+OK surprise\r\n")) }
        #expect(throws: POP3ParseError.self) { try parseAll([.singleLine], b("+OK\r\n+OK extra\r\n")) }
    }

    @Test(arguments: ["* OK IMAP4rev1\r\n", "220 smtp ready\r\n", "\u{0}\u{0}\r\n", "HTTP/1.1 400\r\n"])
    func wrongProtocolIsAnError(_ s: String) {
        #expect(throws: POP3ParseError.self) { try parseAll([.singleLine], b(s)) }
    }

    @Test func hugeContinuationRefused() {
        let wire = b("+ ") + Array(repeating: UInt8(ascii: "A"), count: 70_000)
        #expect(throws: POP3ParseError.self) { try parseAll([.sasl], wire) }
    }
}

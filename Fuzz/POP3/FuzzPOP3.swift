// libFuzzer entry point for the POP3 reply parser. Built by `make fuzz-pop3`
// together with the POP3Core sources (same module, so internals are visible).
//
// Each input is read as: byte 0 picks the sequence of reply kinds the parser
// expects, byte 1 the size of the pieces the rest is fed in. The parser must
// never crash, must never hold an unbounded amount of unread input, and must
// give back exactly what `POP3MultiLine.stuff` put in.
import NIOCore

@_cdecl("LLVMFuzzerTestOneInput")
public func pop3FuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    guard input.count >= 2 else { return 0 }
    let kinds: [POP3ResponseKind] = [.singleLine, .multiLineLines, .multiLineStream, .sasl]
    var parser = POP3ResponseParser(limits: POP3ParserLimits(maxLineLength: 512, maxContinuationLength: 2048))
    var selector = Int(input[0])
    for _ in 0..<4 {
        parser.expect(kinds[selector & 3])
        selector >>= 2
    }
    let step = max(1, Int(input[1]) % 64)
    let body = input[2...]
    var buffer = ByteBuffer()
    var i = body.startIndex
    feeding: while i < body.endIndex {
        buffer.writeBytes(body[i..<min(i + step, body.endIndex)])
        i += step
        do {
            while let event = try parser.next(&buffer) {
                if case .status(let s) = event { _ = s.description; _ = try? s.statValues() }
                if case .line(let l) = event {
                    _ = try? POP3ScanListing.parse(line: Array(l.readableBytesView)[...])
                    _ = try? POP3UniqueIDListing.parse(line: Array(l.readableBytesView)[...])
                }
                if case .continuation(let c) = event { _ = c.decoded }
            }
        } catch {
            break feeding
        }
        // Nothing is kept beyond one line limit plus one piece.
        precondition(buffer.readableBytes <= 2048 + 64, "parser holds \(buffer.readableBytes) unread bytes")
        buffer.discardReadBytes()
    }

    // Round trip: stuffing then unstuffing gives the body back (with the
    // line break the encoder adds to a body that lacks one).
    let original = ByteBuffer(bytes: body)
    let stuffed = POP3MultiLine.stuffed(original)
    var u = POP3DotUnstuffer()
    let wire = stuffed
    var out = ByteBuffer()
    var ended = false
    var piece = ByteBuffer()
    var j = wire.readerIndex
    while !ended, j < wire.writerIndex {
        if let s = wire.getSlice(at: j, length: min(step, wire.writerIndex - j)) { var s = s; piece.writeBuffer(&s) }
        j += step
        while let e = u.next(&piece) {
            switch e {
            case .chunk(var c): out.writeBuffer(&c)
            case .end: ended = true
            }
            if ended { break }
        }
        piece.discardReadBytes()
    }
    var expected = Array(body)
    if let last = expected.last, last != 0x0A { expected += [0x0D, 0x0A] }
    precondition(ended && Array(out.readableBytesView) == expected, "dot-stuffing round trip failed")
    _ = wire.readableBytes
    return 0
}

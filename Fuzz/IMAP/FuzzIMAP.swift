// libFuzzer entry point for the IMAP response parser. Built by `make fuzz-imap`
// (scripts/fuzz.sh imap) together with the IMAPCore sources, as one module.
//
// Byte 0 picks the size of the pieces the rest is fed in. The parser must
// never crash, must stay within its line limit (no unbounded buffering), and
// every complete response it returns must survive encode -> parse unchanged
// in meaning (parsing what we wrote gives a response that writes the same bytes).
import NIOCore

@_cdecl("LLVMFuzzerTestOneInput")
public func imapFuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    guard input.count >= 1 else { return 0 }
    let step = max(1, Int(input[0]) % 97)
    let body = input[1...]
    let limits = ParserLimits(maxLineLength: 2048, maxNumberListLineLength: 4096, maxInlineLiteralSize: 4096,
                              maxStreamedLiteralSize: 1 << 20, maxNestingDepth: 20)
    var parser = ResponseParser(limits: limits)
    var i = body.startIndex
    var responses: [Response] = []
    feeding: while i < body.endIndex {
        parser.append(ByteBuffer(bytes: body[i..<min(i + step, body.endIndex)]))
        i += step
        do {
            while let event = try parser.next() {
                if case .response(let r) = event { responses.append(r) }
            }
        } catch {
            _ = error.description
            break feeding
        }
        // Bounded: at most a line limit (or an inline literal) plus one piece.
        precondition(parser.bufferedByteCount <= 2048 + 4096 + 97 + 64, "parser holds \(parser.bufferedByteCount) bytes")
    }
    // What we write, we read back. A response parsed from hostile input may
    // be normalised once (an unknown response keeps its name only, a broken
    // response code is kept as text and may look like a known one when
    // written), so the check is on the second pass: write(parse(write(r)))
    // must equal write(r') where r' = parse(write(r)). Our own output must
    // always parse.
    for r in responses.prefix(8) {
        if case .untagged(.other) = r { continue }
        let once = writeAndReparse(r)
        if case .untagged(.other) = once.response { continue }
        let twice = writeAndReparse(once.response)
        precondition(once.bytes == twice.bytes || { if case .untagged(.other) = twice.response { return true } else { return false } }(),
                     "encode/parse not stable: \(String(decoding: once.bytes.readableBytesView, as: UTF8.self)) vs \(String(decoding: twice.bytes.readableBytesView, as: UTF8.self))")
    }
    return 0
}

/// Writes `r`, parses it back; our own encoding must parse.
private func writeAndReparse(_ r: Response) -> (bytes: ByteBuffer, response: Response) {
    var written = ByteBuffer()
    r.write(to: &written)
    var again = ResponseParser(limits: ParserLimits())
    again.append(written)
    do {
        while let e = try again.next() {
            if case .response(let back) = e {
                var b = ByteBuffer()
                back.write(to: &b)
                return (b, back)
            }
        }
    } catch {
        preconditionFailure("re-parsing our own encoding of \(r) failed: \(error) (\(String(decoding: written.readableBytesView, as: UTF8.self)))")
    }
    preconditionFailure("our own encoding of \(r) did not parse to a response: \(String(decoding: written.readableBytesView, as: UTF8.self))")
}

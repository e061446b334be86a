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
    for r in responses.prefix(8) {
        // `other` keeps only the name of a response it does not know (so
        // `* OK*junk` comes out as other("OK"), which writes as `* OK`): it
        // is not meant to round-trip.
        if case .untagged(.other) = r { continue }
        var first = ByteBuffer()
        r.write(to: &first)
        var again = ResponseParser(limits: ParserLimits())
        again.append(first)
        var second: Response?
        do {
            while let e = try again.next() {
                if case .response(let r2) = e { second = r2; break }
            }
        } catch {
            preconditionFailure("re-parsing our own encoding of \(r) failed: \(error) (\(String(decoding: first.readableBytesView, as: UTF8.self)))")
        }
        guard let second else {
            preconditionFailure("our own encoding of \(r) did not parse to a response: \(String(decoding: first.readableBytesView, as: UTF8.self))")
        }
        var secondBytes = ByteBuffer()
        second.write(to: &secondBytes)
        precondition(first == secondBytes, "encode/parse not stable: \(String(decoding: first.readableBytesView, as: UTF8.self)) vs \(String(decoding: secondBytes.readableBytesView, as: UTF8.self))")
    }
    return 0
}

// libFuzzer entry point for the IMAP response parser (`make fuzz-imap`).
// Feeds each input twice: whole, and split at a position taken from its first
// byte, so that "need more bytes" paths are exercised. Any crash, hang or
// sanitizer report is a bug; ParseErrors are the expected outcome for junk.
import IMAPCore
import NIOCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIMAPResponses(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let split = size > 0 ? Int(bytes[0]) % (size + 1) : 0
    for chunks in [[bytes[...]], [bytes[..<split], bytes[split...]]] {
        var parser = ResponseParser(limits: ParserLimits(maxLineLength: 4096, maxNumberListLineLength: 8192,
                                                         maxInlineLiteralSize: 8192, maxNestingDepth: 50))
        var steps = 0
        outer: for chunk in chunks {
            parser.append(ByteBuffer(bytes: chunk))
            while true {
                steps += 1
                if steps > 100_000 { fatalError("parser did not make progress") }
                do {
                    guard try parser.next() != nil else { break }
                } catch {
                    break outer
                }
            }
        }
    }
    // Mailbox names: decoding must never trap, and encoding round-trips.
    if let s = ModifiedUTF7.decode(Array(bytes)) {
        if ModifiedUTF7.decode(ModifiedUTF7.encode(s)) != s { fatalError("modified UTF-7 round trip failed") }
    }
    return 0
}

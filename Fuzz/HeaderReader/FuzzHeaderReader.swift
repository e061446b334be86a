// libFuzzer entry point for the RFC 5322 header reader (HeaderReader,
// RFC5322Date). Built by `make fuzz-header` (scripts/fuzz.sh header) with the
// MailModel sources as one module.
//
// Byte 0 picks the piece size. Reading in pieces must give the same summary
// as reading the whole message at once; nothing may crash; any date found
// must be a valid InternalDate.
@_cdecl("LLVMFuzzerTestOneInput")
public func headerFuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    guard input.count >= 1 else { return 0 }
    let step = max(1, Int(input[0]) % 61)
    let body = Array(input[1...])
    let whole = HeaderReader.read(body)
    var r = HeaderReader()
    var i = 0
    while i < body.count {
        if r.feed(body[i..<min(i + step, body.count)]) { break }
        i += step
    }
    let pieces = r.finish()
    precondition(whole == pieces, "piecewise read differs: \(whole) vs \(pieces)")
    _ = whole.impliedInternalDate(downloadedAt: InternalDate(secondsSinceEpoch: 0))
    // The date parser on its own, with the raw bytes as a string.
    let s = String(decoding: body.prefix(512), as: UTF8.self)
    if let d = RFC5322Date.parse(s) { _ = d.description }
    return 0
}

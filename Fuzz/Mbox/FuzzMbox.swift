// libFuzzer entry point for the mbox reader (MboxScanner, FromUnquoter,
// FromQuoter). Built by `make fuzz-mbox` (scripts/fuzz.sh mbox) with the
// local-store sources of MailStore as one module.
//
// Byte 0: bit 0 turns Content-Length on, the rest picks the piece size used
// for unquoting. The file is an unlinked temporary file. Entries must be in order,
// inside the file and not overlap; unquoting in pieces must equal unquoting
// whole; quoting then unquoting any message gives it back.
#if canImport(Glibc)
import Glibc
#endif
import NIOCore

private let memfd: Int32 = {
    let path = "/tmp/mailferry-fuzz-mbox-\(getpid())"
    let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
    unlink(path)
    return fd
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func mboxFuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    guard input.count >= 1 else { return 0 }
    let useContentLength = input[0] & 1 == 1
    let step = max(1, Int(input[0] >> 1) % 53)
    let body = Array(input[1...])
    precondition(memfd >= 0, "cannot create the temporary file")
    _ = ftruncate(memfd, 0)
    let written = body.withUnsafeBytes { pwrite(memfd, $0.baseAddress, $0.count, 0) }
    precondition(written == body.count, "pwrite failed")
    let scanner = MboxScanner(fd: memfd, path: "fuzz.mbox", fileSize: Int64(body.count), useContentLength: useContentLength)
    if let entries = try? scanner.scan() {
        var last: Int64 = 0
        for e in entries {
            precondition(e.fromOffset >= last, "entries overlap or go backwards")
            precondition(e.fromOffset < e.afterFromLine, "empty From line")
            precondition(e.afterFromLine <= e.contentEnd && e.contentEnd <= e.entryEnd, "bad entry bounds \(e)")
            precondition(e.entryEnd <= Int64(body.count), "entry past end of file")
            last = e.entryEnd
            let raw = Array(body[Int(e.afterFromLine)..<Int(e.contentEnd)])
            var whole = FromUnquoter()
            let all = whole.process(ByteBuffer(bytes: raw), final: true)
            var pieced = FromUnquoter()
            var out = ByteBuffer()
            var i = 0
            repeat {
                let end = min(i + step, raw.count)
                var o = pieced.process(ByteBuffer(bytes: raw[i..<end]), final: end == raw.count)
                out.writeBuffer(&o)
                i = end
            } while i < raw.count
            precondition(all == out, "piecewise unquoting differs")
        }
    }
    // Round trip: quoting then unquoting gives the message back.
    var q = FromQuoter()
    var quoted: [UInt8] = []
    var i = 0
    while i < body.count {
        let end = min(i + step, body.count)
        body[i..<end].withUnsafeBytes { q.process($0, into: &quoted) }
        i = end
    }
    q.flush(into: &quoted)
    var u = FromUnquoter()
    let back = u.process(ByteBuffer(bytes: quoted), final: true)
    precondition(Array(back.readableBytesView) == body, "quote/unquote round trip failed")
    return 0
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import MailModel
import NIOCore

/// The mbox file format as the mbox store reads and writes it.
///
/// Writing is mboxrd:
///
///     mbox       = *entry
///     entry      = from-line [status-lines] quoted-message [LF] LF
///     from-line  = "From " sender SP asctime-date LF   ; "From MAILER-DAEMON Thu Mar  7 09:05:01 2024"
///     quoted     = a line matching ">*From " gets one more ">"
///
/// Reading accepts mboxrd, mboxo (its `>From ` lines lose one `>`, which is
/// all mboxo can say), Content-Length delimited files (mboxcl2: the body is
/// taken as is when the header's length lands exactly on the next `From `
/// line or the end of the file; only in files without a mailferry index),
/// CRLF files, and `From ` lines without a date (`From - `). Outside such a
/// body every line that starts with `From ` begins a new message.
enum MboxFormat {
    static let from: [UInt8] = Array("From ".utf8)

    /// `From MAILER-DAEMON <asctime in UTC>` plus LF.
    static func fromLine(date: InternalDate) -> [UInt8] {
        let utc = InternalDate(secondsSinceEpoch: date.secondsSinceEpoch, zoneMinutes: 0)
        let c = utc.civil
        let days = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
        var dayIndex = (utc.secondsSinceEpoch / 86_400) % 7
        if utc.secondsSinceEpoch < 0, utc.secondsSinceEpoch % 86_400 != 0 { dayIndex -= 1 }
        if dayIndex < 0 { dayIndex += 7 }
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        let day = c.day < 10 ? " \(c.day)" : "\(c.day)"
        let text = "From MAILER-DAEMON \(days[Int(dayIndex)]) \(months[c.month - 1]) \(day) \(two(c.hour)):\(two(c.minute)):\(two(c.second)) \(c.year)\n"
        return Array(text.utf8)
    }

    /// The date of a `From ` line, or nil (`From - `, or no date at all).
    static func date(ofFromLine line: [UInt8]) -> InternalDate? {
        var text = String(decoding: line, as: UTF8.self)
        guard text.hasPrefix("From ") else { return nil }
        text.removeFirst(5)
        var tokens = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }).map(String.init)
        // The sender comes first; try dropping 1, then more tokens (senders with spaces).
        for _ in 0..<3 {
            guard !tokens.isEmpty else { return nil }
            tokens.removeFirst()
            guard tokens.count >= 4 else { return nil }
            if let d = RFC5322Date.parse(tokens.joined(separator: " ")) { return d }
        }
        return nil
    }

    /// Number of `>` before `From ` when the line is a quoted From line.
    static func quoteDepth(_ prefix: [UInt8]) -> Int? {
        var i = 0
        while i < prefix.count, prefix[i] == UInt8(ascii: ">") { i += 1 }
        guard i > 0, prefix.count >= i + 5, prefix[i..<(i + 5)].elementsEqual(from) else { return nil }
        return i
    }

    /// The status lines written ahead of a message so that other mbox
    /// readers (mutt, Python's `mailbox`, Thunderbird) see its flags. The mbox
    /// store strips exactly these bytes again (their length is in its index).
    static func statusLines(_ flags: Flags) -> [UInt8] {
        var status = ""
        if flags.contains(.seen) { status += "R" }
        var x = ""
        if flags.contains(.answered) { x += "A" }
        if flags.contains(.flagged) { x += "F" }
        if flags.contains(.draft) { x += "T" }
        if flags.contains(.deleted) { x += "D" }
        let kw = flags.keywords.filter(\.isValidKeyword).map(\.name)
        guard !flags.isEmpty, !(status.isEmpty && x.isEmpty && kw.isEmpty) else { return [] }
        var out = "Status: " + status + "O\n"
        if !x.isEmpty { out += "X-Status: " + x + "\n" }
        if !kw.isEmpty { out += "X-Keywords: " + kw.joined(separator: " ") + "\n" }
        return Array(out.utf8)
    }

    /// Flags from `Status:`, `X-Status:` and `X-Keywords:` header values.
    static func flags(status: String?, xStatus: String?, keywords: String?) -> Flags {
        var f = Flags()
        if let s = status, s.contains("R") { f.insert(.seen) }
        if let x = xStatus {
            if x.contains("A") { f.insert(.answered) }
            if x.contains("F") { f.insert(.flagged) }
            if x.contains("T") { f.insert(.draft) }
            if x.contains("D") { f.insert(.deleted) }
        }
        if let k = keywords {
            for w in k.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\t" }) {
                let flag = Flag(String(w))
                if flag.isValidKeyword { f.insert(flag) }
            }
        }
        return f
    }
}

/// One message as found in an mbox file (byte offsets into the file).
struct MboxEntry: Sendable, Hashable {
    /// Start of the `From ` line.
    var fromOffset: Int64
    /// The `From ` line without its line end.
    var fromLine: [UInt8]
    /// First byte after the `From ` line.
    var afterFromLine: Int64
    /// Where the next entry starts (or the file ends).
    var entryEnd: Int64
    /// End of the message proper: before the blank separator line.
    var contentEnd: Int64
    /// `>From ` lines to unquote (counted from `afterFromLine`), false for Content-Length bodies.
    var unquote: Bool
    /// How many quoted From lines lie in the message (each is one byte longer on disk).
    var quotedLines: Int
    /// Flags found in the message's own Status/X-Status/X-Keywords headers.
    var headerFlags: Flags

    var length: Int64 { entryEnd - fromOffset }
}

/// Finds the messages of an mbox file, streaming it in 64 KB chunks; memory
/// stays small whatever the file's size.
struct MboxScanner {
    let fd: Int32
    let path: String
    let fileSize: Int64
    /// Honour Content-Length headers (foreign files only; ours are pure mboxrd).
    let useContentLength: Bool

    private static let prefixCap = 1024

    func scan() throws -> [MboxEntry] {
        var entries: [MboxEntry] = []
        var cur: MboxEntry?
        var inHeaders = false
        var status: String?, xStatus: String?, keywords: String?
        var contentLength: Int64?
        var lastLineStart: Int64 = 0
        var lastLineEmpty = false
        var sawContent = false

        func finish(at end: Int64) {
            guard var e = cur else { return }
            e.entryEnd = end
            e.contentEnd = (lastLineEmpty && lastLineStart >= e.afterFromLine) ? lastLineStart : end
            e.headerFlags = MboxFormat.flags(status: status, xStatus: xStatus, keywords: keywords)
            entries.append(e)
            cur = nil
        }

        var pos: Int64 = 0
        var lineStart: Int64 = 0
        var prefix: [UInt8] = []
        prefix.reserveCapacity(Self.prefixCap)

        // Handles one complete line; returns a position to jump to (Content-Length).
        func handleLine(end: Int64) throws -> Int64? {
            let isEmpty = prefix.isEmpty || prefix == [0x0D]
            defer {
                lastLineStart = lineStart
                lastLineEmpty = isEmpty
            }
            // Every line starting "From " separates messages, as in Python's
            // `mailbox`, mutt and Dovecot: mbox writers quote such lines in
            // bodies. Only a Content-Length body (skipped above) may hold them.
            if prefix.starts(with: MboxFormat.from) {
                finish(at: lineStart)
                var fl = prefix
                if fl.last == 0x0D { fl.removeLast() }
                cur = MboxEntry(fromOffset: lineStart, fromLine: fl, afterFromLine: end, entryEnd: end, contentEnd: end,
                                unquote: true, quotedLines: 0, headerFlags: [])
                inHeaders = true
                status = nil; xStatus = nil; keywords = nil; contentLength = nil
                return nil
            }
            guard cur != nil else {
                if isEmpty { return nil }  // blank lines before the first message
                sawContent = true
                return nil
            }
            if MboxFormat.quoteDepth(prefix) != nil { cur?.quotedLines += 1 }
            guard inHeaders else { return nil }
            if isEmpty {
                inHeaders = false
                if useContentLength, let n = contentLength, n >= 0 {
                    let target = end + n
                    if try contentLengthLandsWell(target) {
                        cur?.unquote = false
                        cur?.quotedLines = 0
                        return target
                    }
                }
                return nil
            }
            if let colon = prefix.firstIndex(of: UInt8(ascii: ":")), prefix.first != 0x20, prefix.first != 0x09 {
                let name = String(decoding: prefix[..<colon], as: UTF8.self).lowercased()
                var value = String(decoding: prefix[(colon + 1)...], as: UTF8.self)
                value = value.trimmingCharacters()
                switch name {
                case "status": if status == nil { status = value }
                case "x-status": if xStatus == nil { xStatus = value }
                case "x-keywords": if keywords == nil { keywords = value }
                case "content-length": if contentLength == nil { contentLength = Int64(value) }
                default: break
                }
            }
            return nil
        }

        while pos < fileSize {
            let chunk = try Posix.pread(fd, count: Posix.chunkSize, at: pos, path: path)
            if chunk.readableBytes == 0 {
                throw MailError(.corrupt, scope: .folder, "\(path) shrank while it was being read")
            }
            var jump: Int64?
            let consumed: Int = try chunk.withUnsafeReadableBytes { p -> Int in
                var i = 0
                let n = p.count
                while i < n {
                    // Find the next LF in bulk.
                    let rest = UnsafeRawBufferPointer(rebasing: p[i..<n])
                    let lf = memchr(rest.baseAddress!, 0x0A, rest.count)
                    let lineEndIndex = lf.map { i + (UnsafeRawPointer($0) - rest.baseAddress!) } ?? n
                    if prefix.count < Self.prefixCap {
                        let take = min(Self.prefixCap - prefix.count, lineEndIndex - i)
                        prefix.append(contentsOf: UnsafeRawBufferPointer(rebasing: p[i..<(i + take)]))
                    }
                    if lf == nil { return n }
                    let end = pos + Int64(lineEndIndex + 1)
                    if let target = try handleLine(end: end) {
                        jump = target
                        return lineEndIndex + 1
                    }
                    prefix.removeAll(keepingCapacity: true)
                    lineStart = end
                    i = lineEndIndex + 1
                }
                return n
            }
            if let target = jump {
                prefix.removeAll(keepingCapacity: true)
                pos = target
                lineStart = target
                // The body was skipped: the next line decides by itself.
                lastLineEmpty = false
                lastLineStart = target
                continue
            }
            pos += Int64(consumed)
        }
        if !prefix.isEmpty || lineStart < fileSize {
            // A last line without LF.
            let end = fileSize
            if lineStart < end {
                _ = try handleLine(end: end)
                // A final line without LF is never a separator line.
                if lastLineStart == lineStart { lastLineEmpty = false }
            }
        }
        finish(at: fileSize)
        if entries.isEmpty, sawContent {
            throw MailError(.corrupt, scope: .folder, "\(path) is not an mbox file: it does not start with a 'From ' line",
                            hint: "check that the file is an mbox (mboxrd, mboxo or mboxcl2)")
        }
        return entries
    }

    /// Content-Length is trusted only when it ends exactly at the end of the
    /// file or right before (an optional blank line and) the next `From ` line.
    private func contentLengthLandsWell(_ target: Int64) throws -> Bool {
        if target == fileSize { return true }
        guard target < fileSize else { return false }
        let peek = try Posix.pread(fd, count: 8, at: target, path: path)
        let b = Array(peek.readableBytesView)
        for skip in [0, 1, 2] {
            if skip == 1 && b.first != 0x0A { continue }
            if skip == 2 && !(b.count > 1 && b[0] == 0x0D && b[1] == 0x0A) { continue }
            if b.count >= skip + 5, b[skip..<(skip + 5)].elementsEqual(MboxFormat.from) { return true }
        }
        return false
    }
}

/// Where the quoters write: an array (mbox and archive writers) or a
/// `ByteBuffer` (the mbox store's read filter).
protocol QuotingSink {
    mutating func put(_ byte: UInt8)
    mutating func put(_ bytes: UnsafeRawBufferPointer)
}

extension Array: QuotingSink where Element == UInt8 {
    mutating func put(_ byte: UInt8) { append(byte) }
    mutating func put(_ bytes: UnsafeRawBufferPointer) { append(contentsOf: bytes) }
}

extension ByteBuffer: QuotingSink {
    mutating func put(_ byte: UInt8) { writeInteger(byte) }
    mutating func put(_ bytes: UnsafeRawBufferPointer) { writeBytes(bytes) }
}

/// The line-start matcher both quoters share: a run of `>` then `From `.
///
/// Its state is O(1) whatever the line: the `>` run is passed on as it comes
/// (all `>` are alike, so adding or dropping one at the end of the run is the
/// same as at its start) and at most four bytes of `From ` are held back.
struct FromLineMatcher {
    static let from: [UInt8] = Array("From ".utf8)
    private var atLineStart = true
    private var inPrefix = false
    /// `>` seen at the start of this line (the unquoter holds the first back).
    private var quotes = 0
    /// Bytes of `From ` matched after the `>` run.
    private var matched = 0

    /// Copies `p` to `out`; at each line start, a line `>{minQuotes,}From `
    /// gets `delta` (+1 or -1) `>`. Returns how many lines were changed.
    mutating func run<S: QuotingSink>(_ p: UnsafeRawBufferPointer, into out: inout S, minQuotes: Int, delta: Int) -> Int {
        var changed = 0
        var i = 0
        let n = p.count
        while i < n {
            if atLineStart {
                atLineStart = false
                inPrefix = true
                quotes = 0
                matched = 0
            }
            if inPrefix {
                let b = p[i]
                if matched == 0 && b == UInt8(ascii: ">") {
                    quotes += 1
                    // Dropping one: hold back the first `>` until the line is known.
                    if delta >= 0 || quotes > 1 { out.put(b) }
                    i += 1
                    continue
                }
                if quotes >= minQuotes && b == Self.from[matched] {
                    matched += 1
                    i += 1
                    if matched == Self.from.count {
                        if delta > 0 { out.put(UInt8(ascii: ">")) }
                        Self.from.withUnsafeBytes { out.put($0) }
                        changed += 1
                        inPrefix = false
                    }
                    continue
                }
                flushPrefix(into: &out, delta: delta)
                // `b` is not consumed: the copy below starts with it.
            }
            let rest = UnsafeRawBufferPointer(rebasing: p[i..<n])
            if let base = rest.baseAddress, let lf = memchr(base, 0x0A, rest.count) {
                let len = (UnsafeRawPointer(lf) - base) + 1
                out.put(UnsafeRawBufferPointer(rebasing: rest[0..<len]))
                i += len
                atLineStart = true
            } else {
                out.put(rest)
                i = n
            }
        }
        return changed
    }

    /// Emits what a line start held back (at a mismatch, or at the end).
    mutating func flushPrefix<S: QuotingSink>(into out: inout S, delta: Int) {
        guard inPrefix else { return }
        if delta < 0 && quotes > 0 { out.put(UInt8(ascii: ">")) }
        Self.from[0..<matched].withUnsafeBytes { out.put($0) }
        inPrefix = false
        quotes = 0
        matched = 0
    }
}

/// Undoes mboxrd quoting while streaming: a line `>+From ` loses one `>`.
/// Holds O(1) state however the input is cut into chunks.
public struct FromUnquoter: StreamFilter {
    private var matcher = FromLineMatcher()

    public init() {}

    /// Unquotes `p`, appending to `out`. Call `flush` after the last chunk.
    public mutating func process(_ p: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        _ = matcher.run(p, into: &out, minQuotes: 1, delta: -1)
    }

    /// Emits what was held back at the end of the input.
    public mutating func flush(into out: inout [UInt8]) {
        matcher.flushPrefix(into: &out, delta: -1)
    }

    mutating func process(_ chunk: ByteBuffer, final: Bool) -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(chunk.readableBytes + 8)
        chunk.withUnsafeReadableBytes { p in _ = matcher.run(p, into: &out, minQuotes: 1, delta: -1) }
        if final { matcher.flushPrefix(into: &out, delta: -1) }
        return out
    }
}

/// Applies mboxrd quoting while streaming a message into an mbox file: a
/// line `>*From ` gets one more `>`. Also notes whether the message ended with LF.
/// Holds O(1) state however the input is cut into chunks.
public struct FromQuoter {
    private var matcher = FromLineMatcher()
    /// The last byte of the input so far.
    public private(set) var lastByte: UInt8?
    /// Lines that were quoted.
    public private(set) var quoted = 0

    public init() {}

    /// Quotes `p`, appending to `out`. Call `flush` after the last chunk.
    public mutating func process(_ p: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        if let l = p.last { lastByte = l }
        quoted += matcher.run(p, into: &out, minQuotes: 0, delta: 1)
    }

    /// Emits what was held back at the end of the input.
    public mutating func flush(into out: inout [UInt8]) {
        matcher.flushPrefix(into: &out, delta: 1)
    }
}

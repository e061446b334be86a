import NIOCore

/// An incremental parser for the server side of an IMAP connection.
///
/// Feed it bytes with `append`, then call `next()` until it returns nil,
/// which means "need more bytes". Malformed input or input that breaks the
/// `ParserLimits` throws a `ParseError`; after that the parser stays failed.
///
/// Message bytes in FETCH responses are never gathered: a literal of any
/// size comes out as `streamingBytes` slices of the buffers that were fed in.
public struct ResponseParser: Sendable {
    public let limits: ParserLimits
    private var buffer = ByteBuffer()
    private var mode: Mode = .lineStart
    private var pending: [ResponseEvent] = []
    /// Bytes after the reader index already searched for a line feed.
    private var scanned = 0

    private enum Mode: Sendable {
        case lineStart
        case fetch(first: Bool)
        case streaming(remaining: Int64)
        case failed(ParseError)
    }

    public init(limits: ParserLimits = ParserLimits()) { self.limits = limits }

    /// Bytes held and not yet handed out.
    public var bufferedByteCount: Int { buffer.readableBytes }

    /// True when the parser is between responses (not inside a FETCH).
    public var isAtResponseBoundary: Bool {
        if case .lineStart = mode { return pending.isEmpty }
        return false
    }

    public mutating func append(_ bytes: ByteBuffer) {
        var bytes = bytes
        if buffer.readableBytes == 0 {
            buffer = bytes
        } else {
            if buffer.readerIndex > 64 * 1024 { buffer.discardReadBytes() }
            buffer.writeBuffer(&bytes)
        }
    }

    /// Drops everything buffered (STARTTLS: bytes after the OK came before
    /// the handshake and must not be trusted). Returns how many were dropped.
    @discardableResult
    public mutating func discardBufferedBytes() -> Int {
        let n = buffer.readableBytes
        buffer = ByteBuffer()
        scanned = 0
        return n
    }

    /// The next event, or nil when more bytes are needed.
    public mutating func next() throws(ParseError) -> ResponseEvent? {
        if !pending.isEmpty { return pending.removeFirst() }
        do {
            switch mode {
            case .failed(let e):
                throw e
            case .streaming(let remaining):
                guard buffer.readableBytes > 0 else { return nil }
                let n = Int(min(remaining, Int64(buffer.readableBytes)))
                guard let slice = buffer.readSlice(length: n) else { return nil }
                let left = remaining - Int64(n)
                if left == 0 {
                    mode = .fetch(first: false)
                    pending.append(.streamingEnd)
                } else {
                    mode = .streaming(remaining: left)
                }
                return .streamingBytes(slice)
            case .lineStart:
                return try nextLine()
            case .fetch(let first):
                return try nextFetchItem(first: first)
            }
        } catch let e as ParseError {
            mode = .failed(e)
            throw e
        } catch {
            // Only ParseError and NeedMoreBytes are thrown inside.
            let e = ParseError(.syntax, "internal parser error")
            mode = .failed(e)
            throw e
        }
    }

    /// Searches for LF; returns true if one exists. Enforces the line limit.
    private mutating func lineAvailable(limit: Int) throws -> Bool {
        let readable = buffer.readableBytes
        if scanned < readable {
            let found = buffer.withUnsafeReadableBytes { raw -> Int? in
                guard let base = raw.baseAddress else { return nil }
                let start = base.advanced(by: scanned)
                guard let p = memchr(start, 0x0A, raw.count - scanned) else { return nil }
                return UnsafeRawPointer(p) - UnsafeRawPointer(base)
            }
            if found != nil { return true }
            scanned = readable
        }
        if readable > limit {
            throw ParseError(.lineTooLong, "line longer than \(limit) bytes without CRLF",
                             context: String(decoding: (buffer.getBytes(at: buffer.readerIndex, length: 32) ?? []).map { $0 >= 0x20 && $0 < 0x7F ? $0 : 46 }, as: UTF8.self))
        }
        return false
    }

    private func lineLimit() -> Int {
        // Long number lists (SEARCH, ESEARCH, VANISHED) get their own limit.
        let head = buffer.getBytes(at: buffer.readerIndex, length: min(12, buffer.readableBytes)) ?? []
        let text = String(decoding: head, as: UTF8.self).uppercased()
        if text.hasPrefix("* SEARCH") || text.hasPrefix("* ESEARCH") || text.hasPrefix("* VANISHED") || text.hasPrefix("* SORT") {
            return limits.maxNumberListLineLength
        }
        return limits.maxLineLength
    }

    private mutating func consume(to index: Int) {
        buffer.moveReaderIndex(to: index)
        scanned = 0
    }

    private mutating func nextLine() throws -> ResponseEvent? {
        guard buffer.readableBytes > 0 else { return nil }
        let limit = lineLimit()
        guard try lineAvailable(limit: limit) else { return nil }
        var c = Cursor(buffer, limits: limits)
        do {
            let ev = try parseLine(&c)
            consume(to: c.index)
            return ev
        } catch is NeedMoreBytes {
            // A literal inside the response: wait for the next line feed.
            scanned = buffer.readableBytes
            if buffer.readableBytes > limit + limits.maxInlineLiteralSize {
                throw ParseError(.lineTooLong, "response longer than \(limit + limits.maxInlineLiteralSize) bytes")
            }
            return nil
        }
    }

    private mutating func parseLine(_ c: inout Cursor) throws -> ResponseEvent {
        let first = try c.peek()
        if first == UInt8(ascii: "+") {
            c.index += 1
            if try c.peek() == UInt8(ascii: " ") { c.index += 1 }
            let text = String(decoding: try c.restOfLine(), as: UTF8.self)
            try c.expectCRLF()
            return .response(.continuation(text))
        }
        if first == UInt8(ascii: "*") {
            c.index += 1
            try c.expectSpace()
            return try parseUntagged(&c)
        }
        let tag = try c.take(while: { Cursor.isAStringChar($0) && $0 != UInt8(ascii: "+") }, what: "tag")
        try c.expectSpace()
        guard let kind = try StatusResponse.parseKind(&c) else { throw c.fail("expected OK, NO or BAD after the tag") }
        let s = try StatusResponse.parseText(&c, kind: kind)
        try c.expectCRLF()
        return .response(.tagged(tag: String(decoding: tag, as: UTF8.self), s))
    }

    private mutating func parseUntagged(_ c: inout Cursor) throws -> ResponseEvent {
        let b = try c.peek()
        if b >= 0x30, b <= 0x39 {
            let n = try c.number()
            try c.expectSpace()
            let name = try c.atom().uppercased()
            let u: UntaggedResponse
            switch name {
            case "EXISTS": u = .exists(n)
            case "RECENT": u = .recent(n)
            case "EXPUNGE": u = .expunge(n)
            case "FETCH":
                try c.expectSpace()
                try c.expect(UInt8(ascii: "("))
                mode = .fetch(first: true)
                return .fetchStart(sequenceNumber: n)
            default:
                try skipToLineEnd(&c)
                u = .other(name: name)
            }
            try c.expectCRLF()
            return .response(.untagged(u))
        }
        if let kind = try StatusResponse.parseKind(&c) {
            let s = try StatusResponse.parseText(&c, kind: kind)
            try c.expectCRLF()
            return .response(.untagged(.condition(s)))
        }
        let name = try c.atom().uppercased()
        let u: UntaggedResponse
        switch name {
        case "CAPABILITY": u = .capability(try Capability.parseList(&c))
        case "ENABLED": u = .enabled(try Capability.parseList(&c))
        case "LIST": try c.expectSpace(); u = .list(try MailboxListItem.parse(&c))
        case "LSUB": try c.expectSpace(); u = .lsub(try MailboxListItem.parse(&c))
        case "STATUS":
            try c.expectSpace()
            let m = try MailboxName.parse(&c)
            try c.expectSpace()
            u = .status(m, try MailboxStatus.parse(&c))
            // Some servers add a trailing space.
            while try c.peek() == UInt8(ascii: " ") { c.index += 1 }
        case "FLAGS": try c.expectSpace(); u = .flags(try FlagList.parse(&c))
        case "SEARCH": u = .search(try SearchResponse.parse(&c))
        case "ESEARCH": u = .esearch(try ExtendedSearchResponse.parse(&c))
        case "ID": try c.expectSpace(); u = .id(try IDParameters.parse(&c))
        case "NAMESPACE": try c.expectSpace(); u = .namespace(try NamespaceResponse.parse(&c))
        case "VANISHED":
            try c.expectSpace()
            var earlier = false
            if try c.peek() == UInt8(ascii: "(") {
                try c.expect(UInt8(ascii: "("))
                try c.expectKeyword("EARLIER")
                try c.expect(UInt8(ascii: ")"))
                try c.expectSpace()
                earlier = true
            }
            u = .vanished(earlier: earlier, try SequenceSet.parse(&c))
        default:
            try skipToLineEnd(&c)
            u = .other(name: name)
        }
        try c.expectCRLF()
        return .response(.untagged(u))
    }

    /// Skips an unknown response's data, literals included.
    private func skipToLineEnd(_ c: inout Cursor) throws {
        while true {
            let b = try c.peek()
            if b == 0x0D || b == 0x0A { return }
            if b == UInt8(ascii: "{") {
                let save = c.index
                if (try? c.inlineLiteral()) == nil { c.index = save + 1 }
                continue
            }
            c.index += 1
        }
    }

    private mutating func nextFetchItem(first: Bool) throws -> ResponseEvent? {
        guard buffer.readableBytes > 0 else { return nil }
        var c = Cursor(buffer, limits: limits)
        do {
            if !first {
                let b = try c.peek()
                if b == UInt8(ascii: ")") {
                    c.index += 1
                    // Tolerate trailing spaces before CRLF.
                    while try c.peek() == UInt8(ascii: " ") { c.index += 1 }
                    try c.expectCRLF()
                    consume(to: c.index)
                    mode = .lineStart
                    return .fetchEnd
                }
                try c.expectSpace()
            } else if try c.peek() == UInt8(ascii: ")") {
                // An empty FETCH "()", seen from some servers.
                c.index += 1
                try c.expectCRLF()
                consume(to: c.index)
                mode = .lineStart
                return .fetchEnd
            }
            switch try FetchItemParser.parse(&c) {
            case .attribute(let a):
                consume(to: c.index)
                mode = .fetch(first: false)
                return .fetchAttribute(a)
            case .streaming(let kind):
                let b = try c.peek()
                if b == UInt8(ascii: "{") || b == UInt8(ascii: "~") {
                    let (size, _) = try c.literalHeader()
                    guard size <= limits.maxStreamedLiteralSize else {
                        throw c.fail(.literalTooLarge, "literal of \(size) bytes exceeds the limit of \(limits.maxStreamedLiteralSize)")
                    }
                    consume(to: c.index)
                    if size == 0 {
                        mode = .fetch(first: false)
                        pending.append(.streamingEnd)
                    } else {
                        mode = .streaming(remaining: size)
                    }
                    return .streamingBegin(kind, byteCount: size)
                }
                if try c.tryNIL() {
                    consume(to: c.index)
                    mode = .fetch(first: false)
                    pending.append(.streamingEnd)
                    return .streamingBegin(kind, byteCount: 0)
                }
                let q = try c.quoted()
                consume(to: c.index)
                mode = .fetch(first: false)
                if !q.isEmpty { pending.append(.streamingBytes(ByteBuffer(bytes: q))) }
                pending.append(.streamingEnd)
                return .streamingBegin(kind, byteCount: Int64(q.count))
            }
        } catch is NeedMoreBytes {
            if !(try lineAvailable(limit: limits.maxLineLength)) { return nil }
            if buffer.readableBytes > limits.maxLineLength + limits.maxInlineLiteralSize {
                throw ParseError(.lineTooLong, "FETCH item longer than \(limits.maxLineLength + limits.maxInlineLiteralSize) bytes")
            }
            return nil
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

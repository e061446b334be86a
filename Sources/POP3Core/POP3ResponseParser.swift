import NIOCore

/// The shape of reply a command expects.
public enum POP3ResponseKind: Sendable, Hashable {
    /// One status line (greeting, USER, STAT, DELE, ...).
    case singleLine
    /// A status line; after `+OK`, short lines up to `.` (CAPA, LIST, UIDL).
    case multiLineLines
    /// A status line; after `+OK`, a message streamed as chunks (RETR, TOP).
    case multiLineStream
    /// AUTH and SASL replies: a `+ ` challenge, or a final status line.
    case sasl
}

/// What the parser read.
public enum POP3ResponseEvent: Sendable, Equatable {
    /// A status line. For a multi-line kind with `+OK`, body events follow
    /// until `.end`; for `-ERR` the reply is complete.
    case status(POP3StatusLine)
    /// A SASL challenge; the reply is complete and the client answers.
    case continuation(POP3Continuation)
    /// One unstuffed line of a CAPA/LIST/UIDL body, without its line ending.
    case line(ByteBuffer)
    /// Unstuffed message bytes of RETR/TOP, line endings as sent.
    case chunk(ByteBuffer)
    /// The end of a multi-line body.
    case end
}

/// An incremental POP3 reply parser. The client tells it, in order, what
/// each command it sent expects (`expect`), which is what makes pipelining
/// work: replies arrive in the order of the commands. `next` returns one
/// event at a time and nil when it needs more bytes; it throws a
/// `POP3ParseError` on malformed or oversized input.
///
///     reply = single-line / multi-line / continue-req     ; RFC 1939, RFC 5034
public struct POP3ResponseParser: Sendable {
    enum Mode: Sendable {
        case awaitingStatus
        case lines
        case stream(POP3DotUnstuffer)
    }

    public let limits: POP3ParserLimits
    private var expected: [POP3ResponseKind] = []
    private var head = 0
    private var mode: Mode = .awaitingStatus

    public init(limits: POP3ParserLimits = POP3ParserLimits()) {
        self.limits = limits
    }

    /// Registers the reply kind of the next command sent.
    public mutating func expect(_ kind: POP3ResponseKind) {
        if head > 64 && head * 2 > expected.count {
            expected.removeFirst(head)
            head = 0
        }
        expected.append(kind)
    }

    /// Replies still expected, including the one being read.
    public var outstanding: Int { expected.count - head }

    /// True while a multi-line body is being read.
    public var inBody: Bool {
        if case .awaitingStatus = mode { return false }
        return true
    }

    /// Forgets every expectation (after STLS, or when the connection is reset).
    public mutating func reset() {
        expected.removeAll()
        head = 0
        mode = .awaitingStatus
    }

    public mutating func next(_ buffer: inout ByteBuffer) throws -> POP3ResponseEvent? {
        switch mode {
        case .stream(var u):
            let e = u.next(&buffer)
            mode = .stream(u)
            switch e {
            case nil: return nil
            case .chunk(let c): return .chunk(c)
            case .end:
                finishReply()
                return .end
            }
        case .lines:
            guard let line = try readLine(&buffer, max: limits.maxLineLength) else { return nil }
            var body = POP3Bytes.dropCR(line)
            if body.first == POP3Bytes.dot {
                if body.count == 1 {
                    finishReply()
                    return .end
                }
                body = body.dropFirst()
            }
            return .line(ByteBuffer(bytes: body))
        case .awaitingStatus:
            guard buffer.readableBytes > 0 else { return nil }
            guard head < expected.count else {
                throw POP3ParseError("the server sent data nobody asked for: \(POP3StatusLine.preview(buffer.readableBytesView))")
            }
            let kind = expected[head]
            let max = kind == .sasl ? limits.maxContinuationLength : limits.maxLineLength
            guard let line = try readLine(&buffer, max: max) else { return nil }
            if kind == .sasl, POP3Continuation.matches(line) {
                let c = try POP3Continuation.parse(line: line)
                finishReply()
                return .continuation(c)
            }
            let status = try POP3StatusLine.parse(line: line)
            switch kind {
            case .multiLineLines where status.isOK:
                mode = .lines
            case .multiLineStream where status.isOK:
                mode = .stream(POP3DotUnstuffer())
            default:
                finishReply()
            }
            return .status(status)
        }
    }

    private mutating func finishReply() {
        mode = .awaitingStatus
        head += 1
        if head == expected.count {
            expected.removeAll(keepingCapacity: true)
            head = 0
        }
    }

    /// One line without its LF (a CR stays; callers drop it). Throws when no
    /// LF comes within `max` bytes, so an endless line cannot grow memory.
    private func readLine(_ buffer: inout ByteBuffer, max: Int) throws -> ArraySlice<UInt8>? {
        let view = buffer.readableBytesView
        let limit = Swift.min(view.count, max + 1)
        guard let lf = view[view.startIndex..<(view.startIndex + limit)].firstIndex(of: POP3Bytes.lf) else {
            if view.count > max {
                throw POP3ParseError("a reply line is longer than \(max) bytes")
            }
            return nil
        }
        let len = lf - view.startIndex
        let bytes = buffer.readBytes(length: len) ?? []
        buffer.moveReaderIndex(forwardBy: 1)
        return bytes[...]
    }
}

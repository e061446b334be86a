import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The body of a multi-line reply (RFC 1939 §3): byte-stuffed lines ended by
/// a line holding only `.`.
///
///     multi-line-body = *stuffed-line "." CRLF
///     stuffed-line    = ["."] *octet CRLF     ; a line starting with "." gets one more "."
///
/// The decoder is `POP3DotUnstuffer`; the encoder is `POP3MultiLine.stuff`.
/// Both also accept and keep a bare LF as a line ending, as old servers send.
public enum POP3MultiLine {
    /// Dot-stuffs `body` and appends the terminating `.` line. A body that
    /// does not end with a line break gets CRLF first, as servers do (RFC 1939
    /// requires the terminator on a line of its own).
    public static func stuff(_ body: ByteBuffer, into out: inout ByteBuffer) {
        var atLineStart = true
        let view = body.readableBytesView
        out.reserveCapacity(out.readableBytes + view.count + view.count / 64 + 5)
        var runStart = view.startIndex
        var i = view.startIndex
        while i < view.endIndex {
            let b = view[i]
            if atLineStart && b == POP3Bytes.dot {
                out.writeBytes(view[runStart..<i])
                out.writeInteger(POP3Bytes.dot)
                runStart = i
            }
            atLineStart = (b == POP3Bytes.lf)
            i += 1
        }
        out.writeBytes(view[runStart..<view.endIndex])
        if !view.isEmpty && view.last != POP3Bytes.lf { out.writeString("\r\n") }
        out.writeString(".\r\n")
    }

    public static func stuffed(_ body: ByteBuffer) -> ByteBuffer {
        var out = ByteBuffer()
        stuff(body, into: &out)
        return out
    }

    /// Unstuffs a complete multi-line body held in memory (tests, small replies).
    public static func unstuff(_ stuffed: ByteBuffer) throws -> ByteBuffer? {
        var u = POP3DotUnstuffer()
        var input = stuffed
        var out = ByteBuffer()
        while let e = u.next(&input) {
            switch e {
            case .chunk(var c): out.writeBuffer(&c)
            case .end: return out
            }
        }
        return nil
    }
}

/// Streaming dot-unstuffing: hands out the body bytes of a multi-line reply
/// as slices of the input, without holding any line, and stops at the
/// terminating `.` line. Line endings are kept exactly as sent (CRLF, or a
/// bare LF from servers that send one); the line break before the terminator
/// belongs to the body. Chunk boundaries may fall anywhere, including inside
/// CRLF and right after a line's first `.`.
///
/// Memory stays bounded whatever the input: an endless line is handed on as
/// it arrives.
public struct POP3DotUnstuffer: Sendable {
    public enum Event: Sendable, Equatable {
        /// Unstuffed body bytes (never empty).
        case chunk(ByteBuffer)
        /// The terminating `.` line was read (and consumed).
        case end
    }

    enum State: Sendable, Equatable {
        case lineStart
        case midLine
        /// A `.` at the start of a line was consumed; the next byte decides.
        case afterDot
        /// `.` CR at the start of a line; LF ends the body.
        case afterDotCR
        case done
    }

    var state: State = .lineStart

    public init() {}

    public var isDone: Bool { state == .done }

    /// The next event from `buffer`, consuming what it covers; nil when more
    /// bytes are needed.
    public mutating func next(_ buffer: inout ByteBuffer) -> Event? {
        while true {
            switch state {
            case .done:
                return nil
            case .afterDot:
                guard let b: UInt8 = buffer.getInteger(at: buffer.readerIndex) else { return nil }
                if b == POP3Bytes.lf {
                    buffer.moveReaderIndex(forwardBy: 1)
                    state = .done
                    return .end
                }
                if b == POP3Bytes.cr {
                    buffer.moveReaderIndex(forwardBy: 1)
                    state = .afterDotCR
                    continue
                }
                // ".." or ".x": the first dot was stuffing and is dropped.
                state = .midLine
                continue
            case .afterDotCR:
                guard let b: UInt8 = buffer.getInteger(at: buffer.readerIndex) else { return nil }
                if b == POP3Bytes.lf {
                    buffer.moveReaderIndex(forwardBy: 1)
                    state = .done
                    return .end
                }
                // ".\rx": the CR was data.
                state = .midLine
                return .chunk(POP3DotUnstuffer.crBuffer)
            case .lineStart, .midLine:
                let n = buffer.readableBytes
                guard n > 0 else { return nil }
                if state == .lineStart, buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) == POP3Bytes.dot {
                    buffer.moveReaderIndex(forwardBy: 1)
                    state = .afterDot
                    continue
                }
                // Find the first LF that is followed by "." (or ends the input).
                let (take, endsAtLineStart) = buffer.withUnsafeReadableBytes { raw -> (Int, Bool) in
                    guard let base = raw.baseAddress else { return (0, false) }
                    var from = 0
                    while from < n {
                        guard let p = memchr(base + from, Int32(POP3Bytes.lf), n - from) else { return (n, false) }
                        let j = base.distance(to: UnsafeRawPointer(p))
                        if j + 1 == n { return (n, true) }
                        if raw[j + 1] == POP3Bytes.dot { return (j + 1, true) }
                        from = j + 1
                    }
                    return (n, false)
                }
                // `take` > 0: the first byte is not a line-start dot.
                guard let slice = buffer.readSlice(length: take) else { return nil }
                state = endsAtLineStart ? .lineStart : .midLine
                return .chunk(slice)
            }
        }
    }

    static let crBuffer = ByteBuffer(bytes: [POP3Bytes.cr])
}

import NIOCore

/// One line of LIST (RFC 1939 §5): a message number and its size in octets.
/// The same `scan-listing` follows `+OK` in a LIST reply for one message.
///
///     scan-listing = msg-number SP size [SP *schar]
///     msg-number   = 1*DIGIT
///     size         = 1*DIGIT
public struct POP3ScanListing: Hashable, Sendable {
    public var number: Int
    public var size: Int64

    public init(number: Int, size: Int64) {
        self.number = number
        self.size = size
    }

    public static func parse(line: ArraySlice<UInt8>) throws -> POP3ScanListing {
        let w = POP3Bytes.words(POP3Bytes.dropCR(line))
        guard w.count >= 2, let n = POP3Bytes.decimal(w[0], max: UInt64(Int32.max)), n > 0,
              let s = POP3Bytes.decimal(w[1]) else {
            throw POP3ParseError("LIST line is not \"number size\": \(POP3StatusLine.preview(line))")
        }
        return POP3ScanListing(number: Int(n), size: Int64(s))
    }

    public func write(to buffer: inout ByteBuffer) {
        buffer.writeString("\(number) \(size)\r\n")
    }
}

import NIOCore

/// One line of UIDL (RFC 1939 §7): a message number and its unique id.
///
///     unique-id-listing = msg-number SP unique-id
///     unique-id         = 1*70 uchar         ; uchar = 0x21-0x7E
///
/// Ids longer than 70 characters are accepted (some servers send them), up
/// to the parser's line limit; an id with bytes outside 0x21-0x7E is refused
/// because it could not be stored and compared safely.
public struct POP3UniqueIDListing: Hashable, Sendable {
    public var number: Int
    public var uniqueID: String

    public init(number: Int, uniqueID: String) {
        self.number = number
        self.uniqueID = uniqueID
    }

    public static func parse(line: ArraySlice<UInt8>) throws -> POP3UniqueIDListing {
        let w = POP3Bytes.words(POP3Bytes.dropCR(line))
        guard w.count >= 2, let n = POP3Bytes.decimal(w[0], max: UInt64(Int32.max)), n > 0 else {
            throw POP3ParseError("UIDL line is not \"number id\": \(POP3StatusLine.preview(line))")
        }
        guard w[1].allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else {
            throw POP3ParseError("UIDL id has bytes outside 0x21-0x7E: \(POP3StatusLine.preview(w[1]))")
        }
        return POP3UniqueIDListing(number: Int(n), uniqueID: String(decoding: w[1], as: UTF8.self))
    }

    public func write(to buffer: inout ByteBuffer) {
        buffer.writeString("\(number) \(uniqueID)\r\n")
    }
}

/// The server sent bytes that do not follow the POP3 grammar, or that would
/// make the parser hold more than its bounds allow. A partial buffer is never
/// an error: the parser returns nil ("need more bytes") instead.
public struct POP3ParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { "POP3 protocol error: \(message)" }
}

/// Limits that keep the parser's memory bounded whatever the server sends.
public struct POP3ParserLimits: Sendable, Hashable {
    /// Longest status, continuation or listing line (RFC 2449 §4 allows 512
    /// octets for a response line; real servers send more in greetings).
    public var maxLineLength: Int
    /// Longest SASL continuation line (base64 challenges can be long).
    public var maxContinuationLength: Int

    public init(maxLineLength: Int = 8 * 1024, maxContinuationLength: Int = 64 * 1024) {
        self.maxLineLength = maxLineLength
        self.maxContinuationLength = maxContinuationLength
    }
}

/// Shared helpers for the line-based grammar types.
enum POP3Bytes {
    static let cr: UInt8 = 0x0D
    static let lf: UInt8 = 0x0A
    static let sp: UInt8 = 0x20
    static let dot: UInt8 = 0x2E

    /// Strips a trailing CR (the LF is never part of a line handed to a parser).
    static func dropCR<C: BidirectionalCollection>(_ line: C) -> C.SubSequence where C.Element == UInt8 {
        if let last = line.last, last == cr { return line.dropLast() }
        return line[...]
    }

    /// A decimal number that fits the given bound; nil for anything else
    /// (signs, spaces, overflow).
    static func decimal<C: Collection>(_ digits: C, max: UInt64 = UInt64(Int64.max)) -> UInt64? where C.Element == UInt8 {
        guard !digits.isEmpty, digits.count <= 20 else { return nil }
        var v: UInt64 = 0
        for d in digits {
            guard d >= 0x30, d <= 0x39 else { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(d - 0x30))
            guard !o1, !o2, a <= max else { return nil }
            v = a
        }
        return v
    }

    /// Splits on runs of spaces and tabs.
    static func words<C: Collection>(_ line: C) -> [C.SubSequence] where C.Element == UInt8 {
        line.split(whereSeparator: { $0 == sp || $0 == 0x09 })
    }
}

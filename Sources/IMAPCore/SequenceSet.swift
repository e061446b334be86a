import NIOCore

/// A set of UIDs or message sequence numbers.
///
///     sequence-set    = (seq-number / seq-range) ["," sequence-set]
///     seq-range       = seq-number ":" seq-number
///     seq-number      = nz-number / "*"
///     uid-set         = (uniqueid / uid-range) *("," uid-set)     ; RFC 4315
public struct SequenceSet: Hashable, Sendable, CustomStringConvertible {
    /// Inclusive ranges; `UInt32.max` stands for `*`.
    public var ranges: [ClosedRange<UInt32>]

    public init(_ ranges: [ClosedRange<UInt32>]) { self.ranges = ranges }
    public static let all = SequenceSet([1...UInt32.max])

    /// Compresses a list of numbers into ranges (sorted, duplicates removed).
    public init<S: Sequence>(numbers: S) where S.Element == UInt32 {
        let sorted = Set(numbers).sorted()
        var out: [ClosedRange<UInt32>] = []
        for n in sorted {
            if let last = out.last, last.upperBound != UInt32.max, last.upperBound + 1 == n {
                out[out.count - 1] = last.lowerBound...n
            } else {
                out.append(n...n)
            }
        }
        ranges = out
    }

    public var isEmpty: Bool { ranges.isEmpty }

    /// The members, for sets without `*`.
    public var numbers: [UInt32] {
        ranges.flatMap { r -> [UInt32] in r.upperBound == UInt32.max ? [r.lowerBound] : Array(r) }
    }

    public var count: Int { ranges.reduce(0) { $0 + ($1.upperBound == UInt32.max ? 1 : $1.count) } }

    public func contains(_ n: UInt32) -> Bool { ranges.contains { $0.contains(n) } }

    public var description: String {
        func num(_ n: UInt32) -> String { n == UInt32.max ? "*" : String(n) }
        return ranges.map { $0.lowerBound == $0.upperBound ? num($0.lowerBound) : "\(num($0.lowerBound)):\(num($0.upperBound))" }
            .joined(separator: ",")
    }

    /// Splits into sets whose text is at most `maxLength` bytes (servers limit command lines).
    public func chunked(maxLength: Int = 8000) -> [SequenceSet] {
        var out: [SequenceSet] = []
        var cur: [ClosedRange<UInt32>] = []
        var len = 0
        for r in ranges {
            let l = SequenceSet([r]).description.utf8.count + 1
            if len + l > maxLength, !cur.isEmpty { out.append(SequenceSet(cur)); cur = []; len = 0 }
            cur.append(r)
            len += l
        }
        if !cur.isEmpty { out.append(SequenceSet(cur)) }
        return out
    }

    static func parse(_ c: inout Cursor) throws -> SequenceSet {
        var ranges: [ClosedRange<UInt32>] = []
        func seqNumber(_ c: inout Cursor) throws -> UInt32 {
            if try c.peek() == UInt8(ascii: "*") { c.index += 1; return UInt32.max }
            return try c.nzNumber()
        }
        while true {
            let a = try seqNumber(&c)
            var b = a
            if try c.peek() == UInt8(ascii: ":") {
                c.index += 1
                b = try seqNumber(&c)
            }
            ranges.append(min(a, b)...max(a, b))
            if ranges.count > c.limits.maxNumberListLineLength { throw c.fail(.lineTooLong, "sequence set too long") }
            guard try c.peek() == UInt8(ascii: ",") else { break }
            c.index += 1
        }
        return SequenceSet(ranges)
    }

    func write(to out: inout CommandWriter) { out.writeString(description) }
}

import NIOCore

/// SEARCH and ESEARCH results.
///
///     mailbox-data    =/ "SEARCH" *(SP nz-number) [SP "(" "MODSEQ" SP mod-sequence-value ")"]   ; RFC 7162
///     esearch-response = "ESEARCH" [search-correlator] [SP "UID"] *(SP search-return-data)      ; RFC 4731
///     search-correlator = SP "(" "TAG" SP tag-string ")"
///     search-return-data = "MIN" SP nz-number / "MAX" SP nz-number / "ALL" SP sequence-set /
///                          "COUNT" SP number / "MODSEQ" SP mod-sequence-value
public struct SearchResponse: Hashable, Sendable {
    public var numbers: [UInt32]
    public var highestModSeq: UInt64?
    public init(numbers: [UInt32], highestModSeq: UInt64? = nil) {
        self.numbers = numbers
        self.highestModSeq = highestModSeq
    }

    static func parse(_ c: inout Cursor) throws -> SearchResponse {
        var r = SearchResponse(numbers: [])
        while try c.peek() == UInt8(ascii: " ") {
            c.index += 1
            let b = try c.peek()
            if b == UInt8(ascii: "(") {
                try c.expect(UInt8(ascii: "("))
                try c.expectKeyword("MODSEQ")
                try c.expectSpace()
                r.highestModSeq = try c.number64()
                try c.expect(UInt8(ascii: ")"))
            } else if b == 0x0D || b == 0x0A {
                break
            } else {
                r.numbers.append(try c.nzNumber())
            }
        }
        return r
    }

    func write(to out: inout ByteBuffer) {
        out.writeString("SEARCH")
        for n in numbers { out.writeString(" \(n)") }
        if let highestModSeq { out.writeString(" (MODSEQ \(highestModSeq))") }
    }
}

public struct ExtendedSearchResponse: Hashable, Sendable {
    public var tag: String?
    public var uid: Bool
    public var min: UInt32?
    public var max: UInt32?
    public var all: SequenceSet?
    public var count: UInt32?
    public var modSeq: UInt64?

    public init(tag: String? = nil, uid: Bool = false, min: UInt32? = nil, max: UInt32? = nil,
                all: SequenceSet? = nil, count: UInt32? = nil, modSeq: UInt64? = nil) {
        self.tag = tag
        self.uid = uid
        self.min = min
        self.max = max
        self.all = all
        self.count = count
        self.modSeq = modSeq
    }

    static func parse(_ c: inout Cursor) throws -> ExtendedSearchResponse {
        var r = ExtendedSearchResponse()
        while try c.peek() == UInt8(ascii: " ") {
            c.index += 1
            if try c.peek() == UInt8(ascii: "(") {
                try c.expect(UInt8(ascii: "("))
                try c.expectKeyword("TAG")
                try c.expectSpace()
                r.tag = String(decoding: try c.string(), as: UTF8.self)
                try c.expect(UInt8(ascii: ")"))
                continue
            }
            let name = try c.atom().uppercased()
            if name == "UID" { r.uid = true; continue }
            try c.expectSpace()
            switch name {
            case "MIN": r.min = try c.number()
            case "MAX": r.max = try c.number()
            case "COUNT": r.count = try c.number()
            case "ALL": r.all = try SequenceSet.parse(&c)
            case "MODSEQ": r.modSeq = try c.number64()
            default: try c.skipValue()
            }
        }
        return r
    }

    func write(to out: inout ByteBuffer) {
        out.writeString("ESEARCH")
        if let tag { out.writeString(" (TAG \"\(tag)\")") }
        if uid { out.writeString(" UID") }
        if let min { out.writeString(" MIN \(min)") }
        if let max { out.writeString(" MAX \(max)") }
        if let all { out.writeString(" ALL \(all)") }
        if let count { out.writeString(" COUNT \(count)") }
        if let modSeq { out.writeString(" MODSEQ \(modSeq)") }
    }
}

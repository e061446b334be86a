import IMAPCore
import NIOCore
import Testing

/// Events with streamed chunks joined, so that feeding patterns compare equal.
enum Ev: Hashable {
    case response(Response)
    case fetchStart(UInt32)
    case attr(FetchAttribute)
    case body(StreamingKind, [UInt8])
    case fetchEnd
}

enum Feed: CustomStringConvertible, CaseIterable {
    case whole, byteByByte, sevenByteChunks
    var description: String {
        switch self {
        case .whole: return "whole"
        case .byteByByte: return "byte by byte"
        case .sevenByteChunks: return "7-byte chunks"
        }
    }
}

/// Feeds `input` in the given pattern and collects the events.
func parse(_ input: [UInt8], feed: Feed = .whole, limits: ParserLimits = ParserLimits()) throws -> [Ev] {
    var p = ResponseParser(limits: limits)
    var out: [Ev] = []
    var streaming: (StreamingKind, [UInt8], Int64)?
    func drain() throws {
        while let e = try p.next() {
            switch e {
            case .response(let r): out.append(.response(r))
            case .fetchStart(let n): out.append(.fetchStart(n))
            case .fetchAttribute(let a): out.append(.attr(a))
            case .streamingBegin(let k, let n): streaming = (k, [], n)
            case .streamingBytes(let b):
                streaming?.1 += Array(b.readableBytesView)
            case .streamingEnd:
                if let s = streaming {
                    #expect(Int64(s.1.count) == s.2)
                    out.append(.body(s.0, s.1))
                }
                streaming = nil
            case .fetchEnd: out.append(.fetchEnd)
            }
        }
    }
    let step: Int
    switch feed {
    case .whole: step = max(1, input.count)
    case .byteByByte: step = 1
    case .sevenByteChunks: step = 7
    }
    var i = 0
    while i < input.count {
        let j = min(input.count, i + step)
        p.append(ByteBuffer(bytes: input[i..<j]))
        try drain()
        i = j
    }
    try drain()
    #expect(p.bufferedByteCount == 0, "bytes left over: \(p.bufferedByteCount)")
    return out
}

func parse(_ s: String, feed: Feed = .whole) throws -> [Ev] { try parse(Array(s.utf8), feed: feed) }

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

import IMAPCore
import NIOCore
import Testing
@testable import IMAPClient

/// Queued message bytes must not keep a much bigger read buffer alive: the
/// high-water mark counts bytes, so it bounds memory only if what waits in
/// the queue is about as big as it says.
@Suite struct ResponseSinkTests {
    /// A slice of `length` bytes out of a buffer of 128 KiB, as the TLS
    /// handler hands a few records' plaintext to the parser.
    private func slice(_ length: Int) -> ByteBuffer {
        var big = ByteBufferAllocator().buffer(capacity: 128 * 1024)
        big.writeRepeatingByte(0x61, count: 128 * 1024)
        return big.getSlice(at: 1000, length: length)!
    }

    @Test func queuedBytesAreCopiedOutOfAMuchBiggerBuffer() async throws {
        let sink = ResponseSink(highWater: 1 << 20) {}
        let s = slice(300)
        #expect(s.storageCapacity >= 128 * 1024)
        #expect(sink.push(.fetch(.streamingBytes(s))) == false)
        guard case .fetch(.streamingBytes(let got)) = try await sink.next() else {
            Issue.record("expected the bytes back")
            return
        }
        #expect(got == s)
        #expect(got.storageCapacity < 4096)
    }

    @Test func bytesNearlyAsBigAsTheirBufferStayAsTheyAre() async throws {
        let sink = ResponseSink(highWater: 1 << 20) {}
        let s = slice(100 * 1024)
        _ = sink.push(.fetch(.streamingBytes(s)))
        guard case .fetch(.streamingBytes(let got)) = try await sink.next() else {
            Issue.record("expected the bytes back")
            return
        }
        #expect(got == s)
        #expect(got.storageCapacity == s.storageCapacity)
    }

    @Test func theHighWaterMarkStillPausesReading() {
        let sink = ResponseSink(highWater: 1000) {}
        #expect(sink.push(.fetch(.streamingBytes(slice(600)))) == false)
        #expect(sink.push(.fetch(.streamingBytes(slice(600)))) == true)
    }
}

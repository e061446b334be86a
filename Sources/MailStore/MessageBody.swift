import MailModel
import NIOCore
import NIOConcurrencyHelpers

/// A message's bytes, handed out chunk by chunk as they arrive from a socket
/// or a file. Iterate it once. The producer waits while the consumer works, so
/// memory stays flat whatever the message's size.
///
/// `size` is the exact byte count when the producer knows it in advance (an
/// IMAP literal, a file); POP3 does not, and a consumer that needs it
/// (an IMAP APPEND) spools the body first with `withKnownSize`.
public struct MessageBody: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer
    public let size: Int64?
    private let next: @Sendable () async throws -> ByteBuffer?

    /// `next` returns the next chunk, or nil at the end. It is called from one
    /// task at a time.
    public init(size: Int64?, next: @escaping @Sendable () async throws -> ByteBuffer?) {
        self.size = size
        self.next = next
    }

    /// A body already in memory.
    public static func bytes(_ buffer: ByteBuffer) -> MessageBody {
        let box = OnceBox(buffer)
        return MessageBody(size: Int64(buffer.readableBytes)) { box.take() }
    }

    public static func bytes(_ bytes: [UInt8]) -> MessageBody {
        .bytes(ByteBuffer(bytes: bytes))
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let next: @Sendable () async throws -> ByteBuffer?
        public mutating func next() async throws -> ByteBuffer? { try await next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(next: next) }

    /// Reads the whole body into one buffer. Refuses bodies over `limit`.
    public func collect(upTo limit: Int = 512 * 1024 * 1024) async throws -> ByteBuffer {
        var out = ByteBuffer()
        if let size, size <= limit { out.reserveCapacity(Int(size)) }
        for try await var chunk in self {
            guard out.readableBytes + chunk.readableBytes <= limit else {
                throw MailError(.storage, scope: .message, "message larger than \(limit) bytes cannot be held in memory")
            }
            out.writeBuffer(&chunk)
        }
        return out
    }
}

/// Hands out a value once, then nil. Thread-safe.
final class OnceBox: @unchecked Sendable {
    private var value: ByteBuffer?
    private let lock = NIOLock()
    init(_ v: ByteBuffer) { value = v }
    func take() -> ByteBuffer? {
        lock.withLock {
            defer { value = nil }
            return value
        }
    }
}

import IMAPCore
import NIOConcurrencyHelpers
import NIOCore

/// Where the connection hands one command's responses, and where the caller
/// waits for them. Message bytes count against a high-water mark: above it
/// the connection stops reading from the socket until the caller catches up.
public final class ResponseSink: @unchecked Sendable {
    public enum Item: Sendable {
        case untagged(UntaggedResponse)
        case fetch(ResponseEvent)
        case continuation(String)
        case readyForBody
        case completed(StatusResponse)
    }

    private let lock = NIOLock()
    private var items = CircularBuffer<Item>()
    private var waiter: CheckedContinuation<Item, Error>?
    private var failure: Error?
    private var bufferedBytes = 0
    private var paused = false
    private var completed = false
    let highWater: Int
    let lowWater: Int
    /// Called (from any thread) when the caller has drained below the low-water mark.
    let resume: @Sendable () -> Void

    init(highWater: Int = 2 * 1024 * 1024, resume: @escaping @Sendable () -> Void) {
        self.highWater = highWater
        self.lowWater = highWater / 4
        self.resume = resume
    }

    /// From the event loop. Returns true when reading should pause.
    func push(_ item: Item) -> Bool {
        var bytes = 0
        if case .fetch(.streamingBytes(let b)) = item { bytes = b.readableBytes }
        let (w, pause): (CheckedContinuation<Item, Error>?, Bool) = lock.withLock {
            if case .completed = item { completed = true }
            if let w = waiter {
                waiter = nil
                return (w, false)
            }
            items.append(Self.compacted(item))
            bufferedBytes += bytes
            if bufferedBytes > highWater { paused = true; return (nil, true) }
            return (nil, false)
        }
        w?.resume(returning: item)
        return pause
    }

    /// From the event loop: the connection failed.
    func fail(_ error: Error) {
        let w: CheckedContinuation<Item, Error>? = lock.withLock {
            if failure == nil { failure = error }
            defer { waiter = nil }
            return waiter
        }
        w?.resume(throwing: error)
    }

    /// Message bytes that wait in the queue, copied out of the read buffer
    /// they are a slice of when that buffer is much bigger than they are:
    /// a slice keeps its whole buffer alive (a TLS read buffer of 32-128 KB
    /// behind a few hundred bytes), so the high-water mark, which counts
    /// the bytes, would not bound the memory held. Bytes handed straight to
    /// a waiting caller are not copied.
    static func compacted(_ item: Item) -> Item {
        guard case .fetch(.streamingBytes(let b)) = item,
              b.storageCapacity > 2 * b.readableBytes + compactionSlack else { return item }
        var copy = ByteBufferAllocator().buffer(capacity: b.readableBytes)
        _ = copy.writeImmutableBuffer(b)
        return .fetch(.streamingBytes(copy))
    }

    /// Below this much waste a queued slice is kept as it is.
    static let compactionSlack = 4096

    public var isCompleted: Bool { lock.withLock { completed } }

    /// The next item; waits. Throws the connection's error once the items run out.
    public func next() async throws -> Item {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Item, Error>) in
            let (item, err, wake): (Item?, Error?, Bool) = lock.withLock {
                if let first = items.popFirst() {
                    if case .fetch(.streamingBytes(let b)) = first { bufferedBytes -= b.readableBytes }
                    var wake = false
                    if paused, bufferedBytes <= lowWater { paused = false; wake = true }
                    return (first, nil, wake)
                }
                if let failure { return (nil, failure, false) }
                waiter = c
                return (nil, nil, false)
            }
            if wake { resume() }
            if let item { c.resume(returning: item) } else if let err { c.resume(throwing: err) }
        }
    }
}

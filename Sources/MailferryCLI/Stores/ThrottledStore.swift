import Foundation
import MailModel
import MailStore
import NIOCore

/// A token bucket: `rate` units per second, with a burst of one second's worth.
/// `reserve` says how long the caller must wait before using `n` units; the
/// caller sleeps outside the actor so other callers are not held up.
actor RateLimiter {
    let rate: Double
    private var tokens: Double
    private var last: Double?

    init(perSecond rate: Double) {
        self.rate = rate
        self.tokens = rate
    }

    /// Seconds to wait before `n` units may be used, at time `now` (seconds).
    func reserve(_ n: Double, now: Double) -> Double {
        if let last { tokens = min(rate, tokens + (now - last) * rate) }
        last = now
        tokens -= n
        return tokens >= 0 ? 0 : -tokens / rate
    }

    func acquire(_ n: Double) async throws {
        let now = Double(DispatchTime.now().uptimeNanoseconds) / 1e9
        let wait = reserve(n, now: now)
        if wait > 0 { try await Task.sleep(nanoseconds: UInt64(wait * 1e9)) }
    }
}

/// Wraps a source store so that reading from it keeps to
/// `--max-bytes-per-second` and `--max-messages-per-second`. Everything else
/// passes straight through. One limiter is shared by all parallel workers, so
/// the limit holds for the whole job.
final class ThrottledStore: MailStore {
    let inner: any MailStore
    let bytes: RateLimiter?
    let messages: RateLimiter?

    init(_ inner: any MailStore, bytes: RateLimiter?, messages: RateLimiter?) {
        self.inner = inner
        self.bytes = bytes
        self.messages = messages
    }

    var location: StoreLocation { inner.location }
    var capabilities: StoreCapabilities { inner.capabilities }

    func folders() async throws -> [FolderInfo] { try await inner.folders() }
    func createFolder(_ path: FolderPath) async throws { try await inner.createFolder(path) }
    func listMessages(in folder: FolderPath, options: ListOptions) async throws -> FolderListing {
        try await inner.listMessages(in: folder, options: options)
    }

    func fetchMessages(_ ids: [MessageID], in folder: FolderPath,
                       _ handler: @Sendable (MessageInfo, MessageBody) async throws -> Void) async throws -> [MessageID] {
        let bytes = self.bytes, messages = self.messages
        return try await inner.fetchMessages(ids, in: folder) { info, body in
            if let messages { try await messages.acquire(1) }
            guard let bytes else { return try await handler(info, body) }
            let iterator = IteratorBox(body.makeAsyncIterator())
            let paced = MessageBody(size: body.size) {
                guard let chunk = try await iterator.next() else { return nil }
                try await bytes.acquire(Double(chunk.readableBytes))
                return chunk
            }
            try await handler(info, paced)
        }
    }

    func append(to folder: FolderPath, _ request: AppendRequest, body: MessageBody) async throws -> PendingAppend {
        try await inner.append(to: folder, request, body: body)
    }

    func setFlags(_ flags: Flags, _ change: FlagChange, for ids: [MessageID], in folder: FolderPath) async throws {
        try await inner.setFlags(flags, change, for: ids, in: folder)
    }

    func delete(_ ids: [MessageID], in folder: FolderPath) async throws { try await inner.delete(ids, in: folder) }
    func close() async throws { try await inner.close() }
}

/// A body's iterator, advanced by one task at a time (MessageBody's contract).
private final class IteratorBox: @unchecked Sendable {
    var iterator: MessageBody.AsyncIterator
    init(_ i: MessageBody.AsyncIterator) { iterator = i }
    func next() async throws -> ByteBuffer? { try await iterator.next() }
}

import Foundation
import MailModel
import MailStore
import NIOCore

/// Time as the rate limiter sees it, so tests can use a virtual one.
public protocol PacingClock: Sendable {
    /// Seconds since an arbitrary origin, monotonic.
    func now() -> Double
    func sleep(_ seconds: Double) async throws
}

/// The real monotonic clock.
public struct SystemPacingClock: PacingClock {
    public init() {}
    public func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
    public func sleep(_ seconds: Double) async throws {
        guard seconds > 0 else { return }
        try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
    }
}

/// A clock that only moves when someone sleeps on it (or `advance` is called):
/// a run paced with it never waits, and the waits it was asked for add up.
public final class VirtualPacingClock: PacingClock, @unchecked Sendable {
    private let lock = NSLock()
    private var time: Double
    private var slept: [Double] = []

    public init(start: Double = 0) { time = start }
    public func now() -> Double { lock.withLock { time } }
    public func sleep(_ seconds: Double) async throws {
        lock.withLock {
            slept.append(seconds)
            time += max(0, seconds)
        }
    }
    public func advance(_ seconds: Double) { lock.withLock { time += max(0, seconds) } }
    /// Every wait asked for, in order.
    public var sleeps: [Double] { lock.withLock { slept } }
}

/// A token bucket: `rate` units per second, holding at most `burst` units.
/// `reserve` takes the units at once, going into debt if needed, and says how
/// long the caller must wait before using them; concurrent callers therefore
/// queue up behind each other. A request bigger than the bucket is allowed and
/// waits for its whole excess.
public struct TokenBucket: Sendable, Hashable {
    public let rate: Double
    public let burst: Double
    public private(set) var tokens: Double
    private var last: Double?

    /// `burst` defaults to one second's worth, and at least one unit.
    public init(rate: Double, burst: Double? = nil) {
        self.rate = max(rate, .leastNormalMagnitude)
        self.burst = max(burst ?? max(rate, 1), 0)
        self.tokens = self.burst
    }

    /// Seconds to wait, from `now`, before `units` may be used.
    public mutating func reserve(_ units: Double, now: Double) -> Double {
        if let last, now > last { tokens = min(burst, tokens + (now - last) * rate) }
        last = max(last ?? now, now)
        tokens -= max(0, units)
        return tokens >= 0 ? 0 : -tokens / rate
    }
}

/// A token bucket shared by every worker of a job, waiting on a clock, and
/// recording what it imposed.
public final class RateLimiter: @unchecked Sendable {
    private let lock = NSLock()
    private var bucket: TokenBucket
    private var waited: Double = 0
    private var used: Double = 0
    private var waits = 0
    public let clock: any PacingClock

    public init(perSecond rate: Double, burst: Double? = nil, clock: any PacingClock = SystemPacingClock()) {
        bucket = TokenBucket(rate: rate, burst: burst)
        self.clock = clock
    }

    public var rate: Double { bucket.rate }

    /// Seconds to wait before `units` may be used at `now` (takes the units).
    public func reserve(_ units: Double, now: Double) -> Double {
        lock.withLock {
            let d = bucket.reserve(units, now: now)
            used += units
            waited += d
            if d > 0 { waits += 1 }
            return d
        }
    }

    /// Waits until `units` may be used.
    public func acquire(_ units: Double) async throws {
        let d = reserve(units, now: clock.now())
        if d > 0 { try await clock.sleep(d) }
    }

    /// Total seconds of waiting imposed so far.
    public var totalDelay: Double { lock.withLock { waited } }
    /// Units that went through.
    public var totalUnits: Double { lock.withLock { used } }
    /// How many acquisitions had to wait.
    public var delayedCount: Int { lock.withLock { waits } }
}

/// `--max-bytes-per-second` and `--max-messages-per-second` for one job: the
/// limiters every session of the source shares, so the caps hold for the job
/// whatever `--parallel` is.
public final class Pacing: Sendable {
    public let bytes: RateLimiter?
    public let messages: RateLimiter?

    public init(bytesPerSecond: Double? = nil, messagesPerSecond: Double? = nil,
                clock: any PacingClock = SystemPacingClock()) {
        bytes = bytesPerSecond.flatMap { $0 > 0 ? RateLimiter(perSecond: $0, clock: clock) : nil }
        messages = messagesPerSecond.flatMap { $0 > 0 ? RateLimiter(perSecond: $0, clock: clock) : nil }
    }

    public var isActive: Bool { bytes != nil || messages != nil }

    public var summary: Report.Pacing {
        Report.Pacing(bytesPerSecond: bytes?.rate, messagesPerSecond: messages?.rate,
                      bytesPaced: Int64(bytes?.totalUnits ?? 0), messagesPaced: Int(messages?.totalUnits ?? 0),
                      bytesWaitSeconds: bytes?.totalDelay ?? 0, messagesWaitSeconds: messages?.totalDelay ?? 0)
    }

    /// Wraps a source session so its reads keep to the caps.
    public func wrap(_ store: any MailStore) -> any MailStore {
        isActive ? PacedStore(store, pacing: self) : store
    }
}

extension Report {
    /// What the rate caps imposed.
    public struct Pacing: Codable, Sendable, Hashable {
        public var bytesPerSecond: Double?
        public var messagesPerSecond: Double?
        /// Bytes and messages read through the limiters.
        public var bytesPaced: Int64
        public var messagesPaced: Int
        /// Seconds of waiting the limiters imposed.
        public var bytesWaitSeconds: Double
        public var messagesWaitSeconds: Double
    }
}

/// A source session whose reads (bodies fetched to copy or to hash) keep to the
/// job's caps: one message token per message, byte tokens per chunk as it passes.
/// Everything else passes straight through.
final class PacedStore: MailStore, @unchecked Sendable {
    let inner: any MailStore
    let pacing: Pacing

    init(_ inner: any MailStore, pacing: Pacing) {
        self.inner = inner
        self.pacing = pacing
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
        let bytes = pacing.bytes, messages = pacing.messages
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

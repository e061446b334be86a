import Foundation
import MailModel
import MailStore

/// Opens a store: one session (one connection). Parallel workers call it once each.
public typealias StoreFactory = @Sendable () async throws -> any MailStore

/// How a job runs.
public struct MigrationOptions: Sendable {
    public var selection: FolderSelection
    /// `--delete-source`: delete source messages once verification found them in the destination.
    public var deleteSource: Bool
    /// `--dry-run`: plan and report; nothing is written to the destination, the source or the state.
    public var dryRun: Bool
    /// `--parallel N`: folders copied at once, each with its own pair of sessions.
    public var parallel: Int
    /// Archive mirrors: make flags of messages already copied follow the source.
    public var propagateFlags: Bool
    /// Archive mirrors: delete from the destination what this job copied and the source deleted.
    public var propagateDeletions: Bool
    /// Verify after copying (always on for `--delete-source`).
    public var verify: Bool
    /// Appends in flight per folder (pipelining window): most messages
    /// sent and not yet confirmed. Deep enough that MULTIAPPEND batches
    /// fill while earlier ones are stored.
    public var appendWindow: Int
    /// Most bytes (message sizes) in that window: a store may keep what it
    /// sent until the server confirms it (an IMAP MULTIAPPEND keeps its
    /// messages to resend them alone if refused), so this bounds the memory
    /// each folder's appends hold. A message bigger than this goes when the
    /// window is empty, alone.
    public var appendWindowBytes: Int64
    public var retry: RetryPolicy
    /// Throttles: their own budget, and how parallelism falls and recovers.
    public var throttle: ThrottlePolicy
    /// `--max-bytes-per-second` / `--max-messages-per-second`: paces reads from the source.
    public var pacing: Pacing?
    /// Test hook: stop the run, as a crash would, right after effect number n
    /// (1-based) has been carried out and before it is confirmed in the state.
    public var stopAfterEffect: Int?
    /// The command name written into the report.
    public var command: String

    public init(selection: FolderSelection = FolderSelection(), deleteSource: Bool = false, dryRun: Bool = false,
                parallel: Int = 1, propagateFlags: Bool = false, propagateDeletions: Bool = false, verify: Bool = true,
                appendWindow: Int = 64, retry: RetryPolicy = RetryPolicy(), stopAfterEffect: Int? = nil,
                command: String = "migrate", throttle: ThrottlePolicy = ThrottlePolicy(), pacing: Pacing? = nil,
                appendWindowBytes: Int64 = 8 * 1024 * 1024) {
        self.selection = selection
        self.deleteSource = deleteSource
        self.dryRun = dryRun
        self.parallel = max(1, parallel)
        self.propagateFlags = propagateFlags
        self.propagateDeletions = propagateDeletions
        self.verify = verify
        self.appendWindow = max(1, appendWindow)
        self.appendWindowBytes = max(1, appendWindowBytes)
        self.retry = retry
        self.throttle = throttle
        self.pacing = pacing
        self.stopAfterEffect = stopAfterEffect
        self.command = command
    }
}

/// Retries for errors that say trying again may help: exponential backoff with
/// jitter, and the server's own wait when it throttles (RFC 5530
/// `[UNAVAILABLE]`, `[THROTTLED]`, Office 365's "Suggested Backoff Time").
/// `maxAttempts` bounds failures; throttles are waited out under
/// `MigrationOptions.throttle` instead.
public struct RetryPolicy: Sendable {
    public var maxAttempts: Int
    public var baseDelay: Double
    public var maxDelay: Double
    /// Fraction of the delay added or taken away at random.
    public var jitter: Double
    public var sleep: @Sendable (Double) async throws -> Void

    public init(maxAttempts: Int = 5, baseDelay: Double = 0.5, maxDelay: Double = 120, jitter: Double = 0.3,
                sleep: @escaping @Sendable (Double) async throws -> Void = RetryPolicy.taskSleep) {
        self.maxAttempts = max(1, maxAttempts)
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.jitter = jitter
        self.sleep = sleep
    }

    public static let taskSleep: @Sendable (Double) async throws -> Void = { seconds in
        guard seconds > 0 else { return }
        try await Task.sleep(nanoseconds: UInt64(seconds * 1_000_000_000))
    }

    /// The wait before attempt `attempt + 1` (attempt counts from 1), given
    /// a random number in 0..<1.
    public func delay(after attempt: Int, error: MailError, random: Double) -> Double {
        if let server = error.retryAfter, server >= 0 { return min(server, maxDelay) }
        let exp = baseDelay * pow(2, Double(max(0, attempt - 1)))
        let spread = exp * jitter * (2 * random - 1)
        return min(maxDelay, max(0, exp + spread))
    }

    public func shouldRetry(_ error: MailError, attempt: Int) -> Bool {
        attempt < maxAttempts && (error.retryable || error.kind == .throttled)
    }
}

/// Progress for the CLI's progress line.
public struct TransferProgress: Sendable, Hashable {
    /// Messages dealt with (copied, found present, failed) and to deal with.
    public var messagesDone: Int
    public var messagesTotal: Int
    public var bytesDone: Int64
    public var bytesTotal: Int64
    public var folder: FolderPath?
}

/// Counts effects for the stop-after-effect-n hook.
final class EffectCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    let limit: Int?

    init(limit: Int?) { self.limit = limit }

    /// Called right after an effect, before it is confirmed.
    func did(_ what: @autoclosure () -> String) throws {
        guard let limit else { return }
        let n: Int = lock.withLock {
            count += 1
            return count
        }
        if n >= limit {
            throw MailError(.cancelled, scope: .local, "stopped after effect \(limit) (\(what())) by the test hook")
        }
    }

    var total: Int { lock.withLock { count } }
}

/// A value shared by concurrent tasks under a lock.
final class Locked<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ v: T) { value = v }
    func with<R>(_ body: (inout T) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
    var get: T { with { $0 } }
}

import Foundation
import MailModel

/// How a job reacts when a provider says "slow down".
///
/// Throttles (`NO [THROTTLED]`, Office 365's "Suggested Backoff Time", Gmail's
/// `[OVERQUOTA]` and "Too many simultaneous connections", a server that hangs up
/// on connections above its limit) are not failures while the job still moves:
/// they lower the job's parallelism and are waited out under their own budget,
/// separate from `RetryPolicy.maxAttempts`.
public struct ThrottlePolicy: Sendable, Hashable {
    /// Seconds of throttle waits allowed in a row without progress (a message
    /// moved or a folder finished) before the throttled operation fails.
    public var budgetSeconds: Double
    /// Throttles allowed in a row without progress (guards against servers that
    /// ask for no wait at all).
    public var maxThrottlesWithoutProgress: Int
    /// Units of clean progress (messages moved, folders finished) after which
    /// parallelism goes up by one again (additive increase).
    public var increaseAfter: Int

    public init(budgetSeconds: Double = 3600, maxThrottlesWithoutProgress: Int = 1000, increaseAfter: Int = 100) {
        self.budgetSeconds = max(0, budgetSeconds)
        self.maxThrottlesWithoutProgress = max(1, maxThrottlesWithoutProgress)
        self.increaseAfter = max(1, increaseAfter)
    }
}

/// The job's effective parallelism under throttling: additive increase,
/// multiplicative decrease (AIMD), and the throttle budget. A pure value: the
/// engine feeds it events and obeys `limit`; tests drive it with tables.
///
/// - A throttle halves `limit` (never below 1), once per window: throttles from
///   operations started before the last change (an older `generation`) are
///   counted but do not halve again, as TCP counts one loss per window.
/// - A connection refused while `others` connections work (a connection limit)
///   sets `limit` to `others`.
/// - `increaseAfter` units of progress without a throttle raise `limit` by one,
///   never above `ceiling` (`--parallel`).
/// - Progress resets the throttle budget; the budget is spent by throttle waits.
public struct ParallelismController: Sendable, Hashable {
    public let ceiling: Int
    public private(set) var limit: Int
    public private(set) var generation = 0
    public let policy: ThrottlePolicy

    public private(set) var lowest: Int
    public private(set) var throttles = 0
    public private(set) var connectionRefusals = 0
    public private(set) var decreases = 0
    public private(set) var increases = 0
    public private(set) var waitedSeconds: Double = 0

    private(set) var cleanProgress = 0
    private(set) var throttlesWithoutProgress = 0
    private(set) var waitWithoutProgress: Double = 0

    public init(ceiling: Int, policy: ThrottlePolicy = ThrottlePolicy()) {
        self.ceiling = max(1, ceiling)
        self.limit = self.ceiling
        self.lowest = self.ceiling
        self.policy = policy
    }

    /// A throttle seen by an operation started at `generation`.
    public mutating func throttled(generation seen: Int) {
        throttles += 1
        cleanProgress = 0
        guard seen == generation else { return }
        set(max(1, limit / 2))
    }

    /// `connections` connections (or their greetings or logins) of one
    /// worker's pair were refused while `others` workers of this job work: the
    /// server's limit is `others`. Returns false when nobody else works: then it
    /// is not a connection limit. One pair lowers the limit once, however many
    /// of its connections were refused; the report counts connections.
    @discardableResult
    public mutating func connectionRefused(others: Int, connections: Int = 1) -> Bool {
        guard others > 0 else { return false }
        connectionRefusals += max(1, connections)
        cleanProgress = 0
        set(max(1, min(limit, others)))
        return true
    }

    /// `units` messages moved or folders finished.
    public mutating func progress(_ units: Int = 1) {
        guard units > 0 else { return }
        throttlesWithoutProgress = 0
        waitWithoutProgress = 0
        cleanProgress += units
        while cleanProgress >= policy.increaseAfter, limit < ceiling {
            cleanProgress -= policy.increaseAfter
            limit += 1
            increases += 1
            generation += 1
        }
        if limit == ceiling { cleanProgress = min(cleanProgress, policy.increaseAfter) }
    }

    /// Asks to wait `seconds` out for a throttle. False when the budget is
    /// spent: the throttled operation then fails like any other error.
    public mutating func spend(waiting seconds: Double) -> Bool {
        let s = max(0, seconds)
        guard throttlesWithoutProgress + 1 <= policy.maxThrottlesWithoutProgress,
              waitWithoutProgress + s <= policy.budgetSeconds else { return false }
        throttlesWithoutProgress += 1
        waitWithoutProgress += s
        waitedSeconds += s
        return true
    }

    private mutating func set(_ newLimit: Int) {
        guard newLimit != limit else { return }
        if newLimit < limit { decreases += 1 } else { increases += 1 }
        limit = newLimit
        lowest = min(lowest, newLimit)
        generation += 1
    }

    public var summary: Report.Throttling {
        Report.Throttling(requestedParallel: ceiling, finalParallel: limit, lowestParallel: lowest,
                          throttles: throttles, connectionRefusals: connectionRefusals,
                          decreases: decreases, increases: increases, waitedSeconds: waitedSeconds)
    }
}

/// Slots for workers, as many as the controller's `limit`. A worker holds a
/// slot (and its connections) while it works; when the limit drops below the
/// slots in use, workers give theirs back at the next safe point.
final class FlowGate: @unchecked Sendable {
    private let lock = NSLock()
    private var controller: ParallelismController
    private var active = 0
    private var nextWaiter = 0
    private var waiters: [(id: Int, c: CheckedContinuation<Void, Error>)] = []
    private var cancelled = Set<Int>()
    private var opening = false
    private var openingWaiters: [CheckedContinuation<Void, Never>] = []

    init(_ controller: ParallelismController) { self.controller = controller }

    var snapshot: ParallelismController { lock.withLock { controller } }
    var generation: Int { lock.withLock { controller.generation } }
    var inUse: Int { lock.withLock { active } }

    /// Takes a slot if one is free now.
    func tryAcquire() -> Bool {
        lock.withLock {
            guard active < controller.limit else { return false }
            active += 1
            return true
        }
    }

    /// Waits for a slot.
    func acquire() async throws {
        let id: Int = lock.withLock {
            nextWaiter += 1
            return nextWaiter
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
                lock.lock()
                if cancelled.remove(id) != nil {
                    lock.unlock()
                    c.resume(throwing: CancellationError())
                } else if active < controller.limit {
                    active += 1
                    lock.unlock()
                    c.resume()
                } else {
                    waiters.append((id, c))
                    lock.unlock()
                }
            }
        } onCancel: {
            lock.lock()
            if let i = waiters.firstIndex(where: { $0.id == id }) {
                let w = waiters.remove(at: i)
                lock.unlock()
                w.c.resume(throwing: CancellationError())
            } else {
                cancelled.insert(id)
                lock.unlock()
            }
        }
        lock.withLock { _ = cancelled.remove(id) }
    }

    func release() {
        lock.lock()
        active = max(0, active - 1)
        let wake = admit()
        lock.unlock()
        for w in wake { w.resume() }
    }

    /// True when more slots are in use than the limit allows: the caller should give its slot back.
    var shouldYield: Bool { lock.withLock { active > controller.limit } }

    func throttled(generation: Int) { lock.withLock { controller.throttled(generation: generation) } }

    /// `connections` connections of the caller's pair refused while other
    /// workers hold slots: the caller holds one too.
    func connectionRefused(connections: Int = 1) -> Bool {
        lock.withLock { controller.connectionRefused(others: active - 1, connections: connections) }
    }

    /// Runs `body` (opening one worker's pair of sessions) when no other
    /// worker is opening one. Two pairs opening at once against servers with a
    /// connection limit can each win one side and lose the other, so both fail
    /// although the server had room for one of them, and the limit would be
    /// read lower than it is. Within a pair both logins still go at once.
    /// The wait is bounded: whoever holds the turn is inside a login, and every
    /// login has a deadline.
    func withOpeningTurn<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        await takeOpeningTurn()
        defer { passOpeningTurn() }
        try Task.checkCancellation()
        return try await body()
    }

    private func takeOpeningTurn() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            lock.lock()
            if opening {
                openingWaiters.append(c)
                lock.unlock()
            } else {
                opening = true
                lock.unlock()
                c.resume()
            }
        }
    }

    private func passOpeningTurn() {
        lock.lock()
        if openingWaiters.isEmpty {
            opening = false
            lock.unlock()
        } else {
            let next = openingWaiters.removeFirst()
            lock.unlock()
            next.resume()
        }
    }

    func spend(waiting seconds: Double) -> Bool { lock.withLock { controller.spend(waiting: seconds) } }

    func progress(_ units: Int = 1) {
        lock.lock()
        controller.progress(units)
        let wake = admit()
        lock.unlock()
        for w in wake { w.resume() }
    }

    /// Under the lock: waiters that may run now.
    private func admit() -> [CheckedContinuation<Void, Error>] {
        var out: [CheckedContinuation<Void, Error>] = []
        while active < controller.limit, !waiters.isEmpty {
            active += 1
            out.append(waiters.removeFirst().c)
        }
        return out
    }
}

extension Report {
    /// How throttling shaped the run: present when the servers throttled or refused connections.
    public struct Throttling: Codable, Sendable, Hashable {
        public var requestedParallel: Int
        public var finalParallel: Int
        public var lowestParallel: Int
        /// Throttle replies waited out (THROTTLED, OVERQUOTA, UNAVAILABLE...).
        public var throttles: Int
        /// Connections refused above the server's connection limit.
        public var connectionRefusals: Int
        public var decreases: Int
        public var increases: Int
        /// Seconds waited because of throttles.
        public var waitedSeconds: Double
    }
}

import Foundation
import Logging
import MailModel
import MailTestSupport
import SyncState
import Testing
@testable import Transfer

/// Issue 9: throttles lower the job's parallelism (AIMD) and have their own
/// budget; the controller is a pure value, driven here by tables.
struct ParallelismControllerTests {
    enum Event: Sendable, CustomStringConvertible {
        /// A throttle seen by an operation started in the current window.
        case throttle
        /// A throttle from an operation started before the last change.
        case staleThrottle
        case refused(others: Int)
        case progress(Int)

        var description: String {
            switch self {
            case .throttle: return "throttle"
            case .staleThrottle: return "stale throttle"
            case .refused(let o): return "refused(\(o))"
            case .progress(let n): return "progress(\(n))"
            }
        }
    }

    struct Case: Sendable, CustomStringConvertible {
        var name: String
        var ceiling: Int
        var increaseAfter: Int
        var events: [Event]
        /// `limit` after each event.
        var limits: [Int]
        var description: String { name }
    }

    static let cases: [Case] = [
        Case(name: "halves on a throttle, never below 1", ceiling: 8, increaseAfter: 10,
             events: [.throttle, .throttle, .throttle, .throttle, .throttle], limits: [4, 2, 1, 1, 1]),
        Case(name: "one halving per window: throttles from before the change only count", ceiling: 8, increaseAfter: 10,
             events: [.throttle, .staleThrottle, .staleThrottle, .throttle], limits: [4, 4, 4, 2]),
        Case(name: "adds one after clean progress, up to the ceiling", ceiling: 4, increaseAfter: 3,
             events: [.throttle, .throttle, .progress(2), .progress(1), .progress(3), .progress(3), .progress(3), .progress(30)],
             limits: [2, 1, 1, 2, 3, 4, 4, 4]),
        Case(name: "a throttle forgets the progress made so far", ceiling: 4, increaseAfter: 3,
             events: [.throttle, .progress(2), .throttle, .progress(2), .progress(1)], limits: [2, 2, 1, 1, 2]),
        Case(name: "a big step of progress climbs several steps", ceiling: 6, increaseAfter: 2,
             events: [.throttle, .throttle, .progress(5)], limits: [3, 1, 3]),
        Case(name: "a connection limit drops to the connections that work", ceiling: 4, increaseAfter: 5,
             events: [.refused(others: 3), .refused(others: 2), .progress(5), .refused(others: 2)], limits: [3, 2, 3, 2]),
        Case(name: "a refusal with nobody else working is not a connection limit", ceiling: 4, increaseAfter: 5,
             events: [.refused(others: 0), .refused(others: 9)], limits: [4, 4]),
        Case(name: "parallel 1 stays 1", ceiling: 1, increaseAfter: 1,
             events: [.throttle, .progress(10), .refused(others: 1)], limits: [1, 1, 1]),
    ]

    @Test(arguments: cases)
    func aimd(_ c: Case) {
        var ctl = ParallelismController(ceiling: c.ceiling, policy: ThrottlePolicy(increaseAfter: c.increaseAfter))
        #expect(ctl.limit == c.ceiling)
        var seen: [Int] = []
        for e in c.events {
            switch e {
            case .throttle: ctl.throttled(generation: ctl.generation)
            case .staleThrottle: ctl.throttled(generation: ctl.generation - 1)
            case .refused(let o): ctl.connectionRefused(others: o)
            case .progress(let n): ctl.progress(n)
            }
            seen.append(ctl.limit)
            #expect(ctl.limit >= 1 && ctl.limit <= c.ceiling)
        }
        #expect(seen == c.limits, "\(c.name): events \(c.events)")
        #expect(ctl.lowest == min(c.ceiling, seen.min() ?? c.ceiling))
    }

    struct BudgetCase: Sendable, CustomStringConvertible {
        var name: String
        var seconds: Double
        var count: Int
        /// Waits asked for; nil stands for progress.
        var steps: [Double?]
        /// The answer to each wait (progress steps are skipped).
        var allowed: [Bool]
        var description: String { name }
    }

    static let budgets: [BudgetCase] = [
        BudgetCase(name: "time budget", seconds: 10, count: 100, steps: [4, 4, 4, 2], allowed: [true, true, false, true]),
        BudgetCase(name: "progress restores the budget", seconds: 10, count: 100, steps: [6, 4, nil, 9, 1],
                   allowed: [true, true, true, true]),
        BudgetCase(name: "count budget for servers that ask for no wait", seconds: 100, count: 3, steps: [0, 0, 0, 0, nil, 0],
                   allowed: [true, true, true, false, true]),
        BudgetCase(name: "one wait longer than the budget", seconds: 5, count: 100, steps: [6, 5], allowed: [false, true]),
    ]

    @Test(arguments: budgets)
    func throttleBudget(_ c: BudgetCase) {
        var ctl = ParallelismController(ceiling: 2, policy: ThrottlePolicy(budgetSeconds: c.seconds, maxThrottlesWithoutProgress: c.count))
        var answers: [Bool] = []
        for s in c.steps {
            if let s { answers.append(ctl.spend(waiting: s)) } else { ctl.progress(1) }
        }
        #expect(answers == c.allowed, "\(c.name)")
    }

    @Test func summaryForTheReport() {
        var ctl = ParallelismController(ceiling: 4, policy: ThrottlePolicy(increaseAfter: 1))
        ctl.throttled(generation: 0)
        let allowed = ctl.spend(waiting: 2.5)
        #expect(allowed)
        ctl.connectionRefused(others: 1)
        ctl.progress(1)
        let s = ctl.summary
        #expect(s == Report.Throttling(requestedParallel: 4, finalParallel: 2, lowestParallel: 1, throttles: 1,
                                       connectionRefusals: 1, decreases: 2, increases: 1, waitedSeconds: 2.5))
    }
}

/// The gate hands out worker slots under the controller's limit.
struct FlowGateTests {
    @Test func slotsFollowTheLimit() async throws {
        let gate = FlowGate(ParallelismController(ceiling: 3, policy: ThrottlePolicy(increaseAfter: 2)))
        #expect(gate.tryAcquire() && gate.tryAcquire() && gate.tryAcquire())
        #expect(!gate.tryAcquire())
        gate.throttled(generation: gate.generation)     // 3 -> 1
        #expect(gate.shouldYield)
        gate.release()
        gate.release()
        #expect(!gate.shouldYield)
        // A waiter is admitted when progress raises the limit.
        let admitted = Locked(false)
        let waiter = Task {
            try await gate.acquire()
            admitted.with { $0 = true }
        }
        try await Task.sleep(nanoseconds: 20_000_000)
        #expect(!admitted.get, "no slot while the limit is 1 and one is in use")
        gate.progress(2)                                // 1 -> 2
        try await waiter.value
        #expect(admitted.get)
        #expect(gate.inUse == 2)
    }

    @Test func aWaiterIsCancelledCleanly() async throws {
        let gate = FlowGate(ParallelismController(ceiling: 1))
        #expect(gate.tryAcquire())
        let waiter = Task { try await gate.acquire() }
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(gate.inUse == 1)
    }
}

/// End to end with fake servers (MemoryServer): connection limits and long
/// throttling through MigrationJob, the engine the CLI runs.
struct ThrottledJobTests {
    static func logger() -> Logger {
        var l = Logger(label: "test.flow")
        l.logLevel = .critical
        return l
    }

    /// Eight folders of ten messages, flags and dates.
    static func manyFolders(_ name: String) -> MemoryServer {
        let s = MemoryServer(kind: .imap, name: name, firstUIDValidity: 700)
        for f in 0..<8 {
            let folder = FolderPath("Projects/P\(f)")!
            s.addFolder(folder)
            for m in 0..<10 {
                let n = f * 100 + m
                s.add(makeMessage(n, bodyLines: 5 + m), to: folder, flags: m % 3 == 0 ? [.seen] : [Flag("$Label\(m % 2)")],
                      internalDate: InternalDate(secondsSinceEpoch: 1_600_000_000 + Int64(n) * 60, zoneMinutes: -300))
            }
        }
        return s
    }

    static func run(_ src: MemoryServer, _ dst: MemoryServer, parallel: Int, throttle: ThrottlePolicy = ThrottlePolicy(),
                    sleeps: SleepLog = SleepLog()) async throws -> Report {
        var o = MigrationOptions(parallel: parallel)
        o.throttle = throttle
        o.retry = RetryPolicy(sleep: { sleeps.record($0) })
        let job = MigrationJob(source: { try src.openSession() }, destination: { try dst.openSession() },
                               options: o, state: MemoryStateStore(), logger: logger())
        return try await job.run()
    }

    @Test func connectionLimitOfTwoWithParallelFourFinishesAndReportsTheReduction() async throws {
        let src = Self.manyFolders("limited-src")
        let dst = MemoryServer(kind: .imap, name: "limited-dst", firstUIDValidity: 9000)
        src.faults.connectionLimit = 2
        dst.faults.connectionLimit = 2

        let report = try await Self.run(src, dst, parallel: 4)
        #expect(report.exitCode == 0, "\(report.failures)")
        #expect(report.totals.copied == 80)
        #expect(report.totals.verified == 80)
        // Everything moved, once, with flags and dates.
        let reference = MemoryServer(kind: .imap, name: "ref", firstUIDValidity: 9000)
        _ = try await Self.run(Self.manyFolders("ref-src"), reference, parallel: 1)
        #expect(snapshot(dst) == snapshot(reference))
        // The report shows the reduction: 4 asked, at most 2 used.
        let t = try #require(report.throttling, "the refusals are reported")
        #expect(t.requestedParallel == 4)
        #expect(t.lowestParallel >= 2 && t.lowestParallel < 4, "lowered, not below what works: \(t)")
        #expect(t.connectionRefusals >= 1)
        #expect(src.stats.refusedSessions + dst.stats.refusedSessions == t.connectionRefusals)
        #expect(src.stats.peakOpenSessions <= 2 && dst.stats.peakOpenSessions <= 2)
        #expect(src.openSessionCount == 0 && dst.openSessionCount == 0, "every session closed")
    }

    @Test func parallelismComesBackAfterCleanProgressAndProbesTheLimitAgain() async throws {
        let src = Self.manyFolders("probe-src")
        let dst = MemoryServer(kind: .imap, name: "probe-dst", firstUIDValidity: 9000)
        dst.faults.connectionLimit = 2
        let report = try await Self.run(src, dst, parallel: 4, throttle: ThrottlePolicy(increaseAfter: 5))
        #expect(report.exitCode == 0, "\(report.failures)")
        #expect(report.totals.copied == 80)
        let t = try #require(report.throttling)
        #expect(t.increases >= 1, "clean progress raised the limit again: \(t)")
        #expect(t.connectionRefusals >= 2, "and the raised limit met the server's limit again: \(t)")
        #expect(dst.stats.peakOpenSessions <= 2)
    }

    /// Twenty throttles in a row on one folder: four times the failure budget
    /// (RetryPolicy.maxAttempts = 5), yet the job finishes because throttles have their own.
    @Test func manyMoreThrottlesThanRetryAttemptsStillFinish() async throws {
        let src = Self.manyFolders("long-throttle-src")
        let dst = MemoryServer(kind: .imap, name: "long-throttle-dst", firstUIDValidity: 9000)
        dst.faults.throttles = 20
        dst.faults.throttleRetryAfter = 30
        let sleeps = SleepLog()
        let report = try await Self.run(src, dst, parallel: 3, sleeps: sleeps)
        #expect(report.exitCode == 0, "\(report.failures)")
        #expect(report.totals.copied == 80)
        #expect(dst.faults.throttles == 0)
        let t = try #require(report.throttling)
        #expect(t.throttles == 20)
        #expect(t.lowestParallel == 1, "halved down to one connection")
        #expect(t.waitedSeconds == 600)
        #expect(sleeps.all.filter { $0 == 30 }.count == 20, "each throttle waited the server's 30 s")
    }

    /// A server that never stops throttling: the budget runs out and the job
    /// ends with a clear throttling error, instead of waiting forever.
    @Test func aThrottleThatNeverEndsSpendsTheBudgetAndFails() async throws {
        let src = populatedSource()
        let dst = emptyDestination()
        dst.faults.throttles = 1_000_000
        dst.faults.throttleRetryAfter = 60
        let sleeps = SleepLog()
        do {
            _ = try await Self.run(src, dst, parallel: 2, throttle: ThrottlePolicy(budgetSeconds: 600), sleeps: sleeps)
            Issue.record("a throttle that never ends cannot finish")
        } catch let e as MailError {
            #expect(e.kind == .throttled, "\(e)")
        }
        // Ten waits of 60 s fit the 600 s budget; the eleventh throttle ends the run.
        #expect(sleeps.all == Array(repeating: 60, count: 10))
    }

    /// Throttles that start once folders are being copied: past the budget the
    /// folders fail (reported), the job ends with exit code 1, nothing hangs.
    @Test func aThrottleThatNeverEndsMidCopyFailsTheFolders() async throws {
        let src = populatedSource()
        let dst = emptyDestination()
        dst.faults.refuseAppend = { _ in false }
        let sleeps = SleepLog()
        var o = MigrationOptions(parallel: 2)
        o.throttle = ThrottlePolicy(budgetSeconds: 100)
        o.retry = RetryPolicy(sleep: { d in
            sleeps.record(d)
        })
        // Throttling begins once the first folder pair has been planned (the first progress report).
        let started = Locked(false)
        var job = MigrationJob(source: { src.makeStore() }, destination: { dst.makeStore() },
                               options: o, state: MemoryStateStore(), logger: Self.logger())
        job.progress = { _ in
            guard started.with({ s in defer { s = true }; return !s }) else { return }
            var f = dst.faults
            f.throttles = 1_000_000
            f.throttleRetryAfter = 25
            dst.faults = f
        }
        let report = try await job.run()
        #expect(report.exitCode == 1)
        #expect(!report.failures.isEmpty && report.failures.allSatisfy { $0.reason.contains("THROTTLED") }, "\(report.failures)")
        #expect(report.throttling?.throttles ?? 0 > 0)
        #expect(sleeps.all.allSatisfy { $0 == 25 })
    }
}

/// `--max-bytes-per-second` / `--max-messages-per-second`: the token bucket
/// with a virtual clock, and the job asking it for the waits the caps require.
struct PacingTests {
    struct Step: Sendable {
        var at: Double
        var units: Double
        var wait: Double
    }

    struct Case: Sendable, CustomStringConvertible {
        var name: String
        var rate: Double
        var burst: Double?
        var steps: [Step]
        var description: String { name }
    }

    static let cases: [Case] = [
        Case(name: "a burst of one second's worth goes at once", rate: 100, burst: nil,
             steps: [Step(at: 0, units: 60, wait: 0), Step(at: 0, units: 40, wait: 0), Step(at: 0, units: 1, wait: 0.01)]),
        Case(name: "steady rate: each unit past the bucket costs 1/rate", rate: 1000, burst: nil,
             steps: [Step(at: 0, units: 1000, wait: 0), Step(at: 0, units: 500, wait: 0.5),
                     Step(at: 0.5, units: 500, wait: 0.5), Step(at: 1.0, units: 500, wait: 0.5)]),
        Case(name: "a message bigger than the bucket waits for its whole excess", rate: 100, burst: nil,
             steps: [Step(at: 0, units: 1000, wait: 9), Step(at: 9, units: 100, wait: 1)]),
        Case(name: "idle time refills, but never past the burst", rate: 10, burst: 20,
             steps: [Step(at: 0, units: 20, wait: 0), Step(at: 100, units: 20, wait: 0), Step(at: 100, units: 10, wait: 1)]),
        Case(name: "slow message rates still let one message through", rate: 0.5, burst: nil,
             steps: [Step(at: 0, units: 1, wait: 0), Step(at: 0, units: 1, wait: 2), Step(at: 2, units: 1, wait: 2)]),
        Case(name: "a clock that goes back is ignored", rate: 10, burst: nil,
             steps: [Step(at: 5, units: 10, wait: 0), Step(at: 4, units: 10, wait: 1)]),
    ]

    @Test(arguments: cases)
    func tokenBucket(_ c: Case) {
        var b = TokenBucket(rate: c.rate, burst: c.burst)
        for (i, s) in c.steps.enumerated() {
            let w = b.reserve(s.units, now: s.at)
            #expect(abs(w - s.wait) < 1e-9, "\(c.name), step \(i): waited \(w), wanted \(s.wait)")
        }
    }

    @Test func limiterWaitsOnItsClockAndRecordsTheDelay() async throws {
        let clock = VirtualPacingClock()
        let l = RateLimiter(perSecond: 1000, clock: clock)
        for _ in 0..<5 { try await l.acquire(500) }     // 2500 bytes: 1000 free, 1500 at 1000/s
        #expect(clock.sleeps == [0.5, 0.5, 0.5])
        #expect(abs(l.totalDelay - 1.5) < 1e-9)
        #expect(l.totalUnits == 2500)
        #expect(abs(clock.now() - 1.5) < 1e-9)
    }

    /// The job's options reach the limiter: every byte and message read from
    /// the source went through it, and it asked for the waits the caps imply.
    @Test func migrationJobIsPacedByItsOptions() async throws {
        let src = populatedSource()
        let dst = emptyDestination()
        let total = src.folderPaths.flatMap { src.messages(in: $0) }
        let bytes = total.reduce(0) { $0 + $1.bytes.count }
        let clock = VirtualPacingClock()
        let rate = 2000.0
        var o = MigrationOptions()
        o.pacing = Pacing(bytesPerSecond: rate, messagesPerSecond: 2, clock: clock)
        let report = try await job(src, dst, state: MemoryStateStore(), options: o).run()
        #expect(report.exitCode == 0, "\(report.failures)")
        let p = try #require(report.pacing)
        #expect(p.bytesPerSecond == rate && p.messagesPerSecond == 2)
        // Everything copied went through the byte limiter (hashing reads too, so at least that).
        #expect(p.bytesPaced >= report.totals.bytes)
        #expect(report.totals.bytes > 0 && report.totals.bytes <= Int64(bytes))
        // The caps' arithmetic: whatever went through was allowed by the buckets, so
        // the (virtual) time the job waited is at least what the caps require.
        let elapsed = clock.now()
        #expect(elapsed >= (Double(p.bytesPaced) - rate) / rate - 1e-6, "\(p)")
        #expect(elapsed >= (Double(p.messagesPaced) - 2) / 2 - 1e-6, "\(p)")
        #expect(elapsed > 0)
        #expect(p.messagesPaced >= report.totals.copied)
        // Every wait the limiters imposed was asked of the clock (virtual: nothing slept).
        #expect(abs(clock.sleeps.reduce(0, +) - (p.bytesWaitSeconds + p.messagesWaitSeconds)) < 1e-6)
        // Pacing changes the speed, not the result.
        let reference = emptyDestination()
        _ = try await job(populatedSource(), reference, state: MemoryStateStore()).run()
        #expect(snapshot(dst) == snapshot(reference))
    }

    @Test func noCapsNoPacing() async throws {
        let report = try await job(populatedSource(), emptyDestination(), state: MemoryStateStore()).run()
        #expect(report.pacing == nil)
        #expect(report.throttling == nil)
    }
}

import MailModel
import MailTestSupport
import SyncState
import Testing
@testable import Transfer

/// Issue 9: a provider that throttles a parallel run many times (Office 365's
/// THROTTLED with a suggested backoff, on source and destination). The job
/// waits what the server asks, keeps going and finishes with the same result
/// as an unthrottled run: nothing lost, nothing duplicated, no failures.
struct ThrottledParallelTests {
    @Test(arguments: [1, 3])
    func throttledRunFinishesLikeAnUnthrottledOne(parallel: Int) async throws {
        let src = populatedSource()
        let dst = emptyDestination()
        // Consecutive throttles share RetryPolicy.maxAttempts (5) with other retryable
        // errors: 2 + 2 may all land on one operation and still pass.
        dst.faults.throttles = 2
        dst.faults.throttleRetryAfter = 2.5
        src.faults.throttles = 2
        src.faults.throttleRetryAfter = 1.5
        let sleeps = SleepLog()
        let report = try await job(src, dst, state: MemoryStateStore(), options: MigrationOptions(parallel: parallel),
                                   sleeps: sleeps).run()
        #expect(report.exitCode == 0, "\(report.failures)")
        #expect(report.failures.isEmpty)
        let reference = emptyDestination()
        _ = try await job(populatedSource(), reference, state: MemoryStateStore()).run()
        #expect(snapshot(dst) == snapshot(reference))
        // Every throttle was waited out with the server's own figure, not a guess.
        #expect(sleeps.all.filter { $0 == 2.5 }.count == 2)
        #expect(sleeps.all.filter { $0 == 1.5 }.count == 2)
        #expect(dst.faults.throttles == 0 && src.faults.throttles == 0)
    }
}

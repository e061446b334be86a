import Foundation
import Logging
import Testing
import Transfer
@testable import MailferryCLI

/// Issue 9: `--max-bytes-per-second` and `--max-messages-per-second`, parsed
/// from the command line as a user types them, reach the job's limiters, and
/// the limiters ask for the waits the caps require. The clock is virtual, so
/// nothing is timed and nothing sleeps.
@Suite struct RateCapTests {
    @Test func commandLineCapsPaceTheJob() async throws {
        let dir = try TempDir()
        let (src, made) = try LocalEndToEndTests.makeSource(in: dir, count: 12)
        let total = made.values.flatMap { $0 }.reduce(0) { $0 + $1.count }
        let command = try MigrateCommand.parse(["--from", "maildir:" + src, "--to", "maildir:" + dir.path + "/dst",
                                                "--state", dir.path + "/state.sqlite",
                                                "--max-bytes-per-second", "2k", "--max-messages-per-second", "3"])
        let job = try command.makeJob()
        #expect(job.maxBytesPerSecond == 2048)
        #expect(job.maxMessagesPerSecond == 3)
        let clock = VirtualPacingClock()
        var logger = Logger(label: "rate-cap-test")
        logger.logLevel = .critical
        let result = try await JobExecutor.run(job, logger: logger, progress: ProgressRenderer(enabled: false),
                                               pacingClock: clock)
        #expect(result.exitCode == 0, "\(result.summary)")
        let report = try #require(result.report as? Report)
        #expect(report.totals.copied == 12)
        let p = try #require(report.pacing, "the caps reached the engine")
        #expect(p.bytesPerSecond == 2048 && p.messagesPerSecond == 3)
        #expect(p.bytesPaced >= Int64(total), "every byte copied went through the byte limiter")
        #expect(p.messagesPaced >= 12)
        // The waits asked of the clock are what the caps require: past the one-second
        // burst, bytes/2048 and messages/3 seconds.
        let waited = clock.now()
        #expect(waited >= (Double(p.bytesPaced) - 2048) / 2048 - 1e-6, "\(p)")
        #expect(waited >= (Double(p.messagesPaced) - 3) / 3 - 1e-6, "\(p)")
        #expect(abs(clock.sleeps.reduce(0, +) - (p.bytesWaitSeconds + p.messagesWaitSeconds)) < 1e-6)
        #expect(result.summary.contains { $0.contains("rate caps held the transfer back") }, "\(result.summary)")
        // The same bytes arrived.
        let copied = Set(LocalEndToEndTests.maildirMessages(dir.path + "/dst"))
            .union(LocalEndToEndTests.maildirMessages(dir.path + "/dst/Work/Projects"))
        #expect(copied == Set(made.values.flatMap { $0 }))
    }

    @Test func withoutCapsThereIsNoPacing() async throws {
        let dir = try TempDir()
        let (src, _) = try LocalEndToEndTests.makeSource(in: dir, count: 3)
        let job = try MigrateCommand.parse(["--from", "maildir:" + src, "--to", "maildir:" + dir.path + "/dst",
                                            "--state", dir.path + "/state.sqlite"]).makeJob()
        var logger = Logger(label: "rate-cap-test")
        logger.logLevel = .critical
        let clock = VirtualPacingClock()
        let result = try await JobExecutor.run(job, logger: logger, progress: ProgressRenderer(enabled: false), pacingClock: clock)
        #expect(result.exitCode == 0)
        #expect((result.report as? Report)?.pacing == nil)
        #expect(clock.sleeps.isEmpty)
    }
}

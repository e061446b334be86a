import Foundation
import Logging
import MailModel
import MailStore
import MailTestSupport
import SyncState
import Testing
@testable import Transfer

/// The environment variable that turns this test binary into the child a
/// kill test runs: "SRC|DST|STATE".
private let childVariable = "MAILFERRY_TRANSFER_KILL_CHILD"

/// `paced`: at most 100 messages a second, so that a run of the 481
/// messages takes seconds whatever the machine, and the kills land in the
/// middle of the work on a fast machine as on a loaded one.
private func maildirJob(_ src: String, _ dst: String, state: any StateStore, paced: Bool = false) -> MigrationJob {
    var logger = Logger(label: "test.kill")
    logger.logLevel = .critical
    var options = MigrationOptions(appendWindow: 4)
    if paced { options.pacing = Pacing(messagesPerSecond: 100) }
    return MigrationJob(source: { try MaildirStore(root: src, create: false) },
                        destination: { try MaildirStore(root: dst, create: true) },
                        options: options, state: state, logger: logger)
}

private func keysByFolder(_ root: String) async throws -> [String] {
    try await contents(of: MaildirStore(root: root, create: false))
}

/// Runs in a child process: one migration, which the parent kills at a random point.
@Test(.enabled(if: ProcessInfo.processInfo.environment[childVariable] != nil, "runs only as the child of the kill test"))
func childProcessForKillTest() async throws {
    let parts = (ProcessInfo.processInfo.environment[childVariable] ?? "").split(separator: "|").map(String.init)
    try #require(parts.count == 3)
    let state = try SQLiteStateStore(path: parts[2])
    defer { state.close() }
    let report = try await maildirJob(parts[0], parts[1], state: state, paced: true).run()
    #expect(report.exitCode == 0)
}

@Suite(.serialized) struct KillTests {
    /// SIGKILL at random points, several times over, then a run to the end:
    /// the destination equals an uninterrupted run's, and the journal is closed.
    @Test func killedWithSIGKILLAtRandomPointsStillConverges() async throws {
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else {
            print("no /proc/self/exe: the SIGKILL test needs Linux; skipped")
            return
        }
        let base = NSTemporaryDirectory() + "mailferry-kill-\(UUID().uuidString)"
        let src = base + "/src"
        let store = try MaildirStore(root: src, create: true)
        for n in 0..<480 {
            let folder = [FolderPath.inbox, FolderPath("Liste/Été")!, FolderPath("Work")!][n % 3]
            try await store.createFolder(folder)
            let bytes = makeMessage(n, lf: n % 4 == 0, bodyLines: 40 + (n % 7) * 30)
            _ = try await store.append(to: folder, AppendRequest(flags: n % 2 == 0 ? [.seen] : []), body: .bytes(bytes)).result()
        }
        _ = try await store.append(to: .inbox, AppendRequest(), body: .bytes(makeMessage(3))).result()  // a repeat
        try await store.close()

        let reference = base + "/reference"
        let refState = MemoryStateStore()
        _ = try await maildirJob(src, reference, state: refState).run()
        let expected = try await keysByFolder(reference)

        let dst = base + "/dst"
        let statePath = base + "/state/job.sqlite"
        var rng = SystemRandomNumberGenerator()
        var kills = 0
        for _ in 0..<8 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: exe)
            p.arguments = ["--testing-library", "swift-testing", "--filter", "childProcessForKillTest"]
            var env = ProcessInfo.processInfo.environment
            env[childVariable] = "\(src)|\(dst)|\(statePath)"
            p.environment = env
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            // The random point is counted from when the child has opened its
            // state (a loaded machine can take seconds to start a test process),
            // so that the kills land in the middle of work, not before it.
            let started = Date()
            while p.isRunning, !FileManager.default.fileExists(atPath: statePath), Date().timeIntervalSince(started) < 60 {
                try await Task.sleep(nanoseconds: 20_000_000)
            }
            let delay = Double.random(in: 0.1...0.6, using: &rng)
            try await Task.sleep(nanoseconds: UInt64(delay * 1_000_000_000))
            if p.isRunning {
                kill(p.processIdentifier, SIGKILL)
                kills += 1
            }
            p.waitUntilExit()
        }
        let state = try SQLiteStateStore(path: statePath)
        defer { state.close() }
        #expect(try !state.journal().isEmpty, "the child processes did work before the final run")
        let report = try await maildirJob(src, dst, state: state).run()
        #expect(report.exitCode == 0, "\(report.failures.prefix(3))")
        #expect(try await keysByFolder(dst) == expected, "after \(kills) kill(s)")
        #expect(try state.openEntries().isEmpty)
        #expect(kills >= 1, "at least one child run was killed mid-way")
        print("SIGKILL test: \(kills) of 8 child runs killed mid-way; destination matches an uninterrupted run")
        try? FileManager.default.removeItem(atPath: base)
    }
}

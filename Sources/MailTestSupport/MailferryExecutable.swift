import Foundation

/// The built `mailferry` binary, run as a user (or cron) would: one locator
/// and one runner for every test target that drives the executable.
public enum MailferryExecutable {
    /// `MAILFERRY_BIN`, else next to the test bundle (SwiftPM puts both in
    /// one bin folder); nil when it is not built.
    public static let path: String? = {
        let fm = FileManager.default
        if let b = ProcessInfo.processInfo.environment["MAILFERRY_BIN"], fm.isExecutableFile(atPath: b) { return b }
        var candidates: [URL] = []
        let exe = URL(fileURLWithPath: (try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
        var dir = exe.deletingLastPathComponent()
        for _ in 0..<4 {
            candidates.append(dir.appendingPathComponent("mailferry"))
            dir = dir.deletingLastPathComponent()
        }
        for b in Bundle.allBundles { candidates.append(b.bundleURL.deletingLastPathComponent().appendingPathComponent("mailferry")) }
        return candidates.first { fm.isExecutableFile(atPath: $0.path) && !$0.hasDirectoryPath }?.path
    }()

    /// The default state folder of the runs this test process starts: its
    /// own, so that two test runs on one machine (CI beside a developer's
    /// run) never meet at a job's state lock.
    public static let stateHome: String = FileManager.default.temporaryDirectory
        .appendingPathComponent("mailferry-test-state-\(getpid())").path

    /// A minimal environment (PATH, HOME, this process's XDG_STATE_HOME) plus
    /// `extra`, so that the developer's own variables do not leak in.
    public static func environment(_ extra: [String: String]) -> [String: String] {
        var e = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
                 "HOME": ProcessInfo.processInfo.environment["HOME"] ?? "/tmp",
                 "XDG_STATE_HOME": stateHome]
        // Sanitizer runs (make test-asan/test-tsan) configure the binary too:
        // the same options and the same leak policy as the test process.
        for k in ["ASAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS", "UBSAN_OPTIONS", "MAILFERRY_SANITIZER"] {
            if let v = ProcessInfo.processInfo.environment[k] { e[k] = v }
        }
        e.merge(extra) { $1 }
        return e
    }

    /// What one child process did.
    public struct Outcome: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
        /// It did not end within the time allowed and was terminated.
        public var timedOut: Bool
    }

    /// Runs `exe` with `args`, reading stdout and stderr concurrently; a child
    /// still running after `timeout` seconds is terminated (`timedOut`).
    public static func run(_ exe: String, _ args: [String], env: [String: String]?, timeout: TimeInterval,
                           cwd: String? = nil) throws -> Outcome {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        if let env { p.environment = env }
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let box = Output()
        let group = DispatchGroup()
        let oh = out.fileHandleForReading, eh = err.fileHandleForReading
        DispatchQueue.global().async(group: group) { box.set(out: oh.readDataToEndOfFile()) }
        DispatchQueue.global().async(group: group) { box.set(err: eh.readDataToEndOfFile()) }
        var timedOut = false
        if group.wait(timeout: .now() + timeout) == .timedOut {
            timedOut = true
            p.terminate()
            _ = group.wait(timeout: .now() + 5)
        }
        p.waitUntilExit()
        return Outcome(status: p.terminationStatus, stdout: box.out, stderr: box.err, timedOut: timedOut)
    }

    private final class Output: @unchecked Sendable {
        private let lock = NSLock()
        private var o = Data(), e = Data()
        func set(out: Data) { lock.withLock { o = out } }
        func set(err: Data) { lock.withLock { e = err } }
        var out: String { lock.withLock { String(decoding: o, as: UTF8.self) } }
        var err: String { lock.withLock { String(decoding: e, as: UTF8.self) } }
    }
}

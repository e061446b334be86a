import Foundation
import Testing

/// Runs the built `mailferry` binary as a user would.
enum CLI {
    struct Result: Sendable {
        var status: Int32
        var stdout: String
        var stderr: String
        var all: String { stdout + "\n" + stderr }
    }

    /// The binary: `MAILFERRY_BIN`, else next to the test bundle (SwiftPM
    /// puts both in the same bin folder), else `swift build --show-bin-path`.
    static let binary: String = {
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
        if let found = candidates.first(where: { fm.isExecutableFile(atPath: $0.path) && !$0.hasDirectoryPath }) { return found.path }
        if let out = try? run("/usr/bin/env", ["swift", "build", "--show-bin-path"], env: nil, timeout: 120).stdout {
            let p = out.trimmingCharacters(in: .whitespacesAndNewlines) + "/mailferry"
            if fm.isExecutableFile(atPath: p) { return p }
        }
        return "mailferry"
    }()

    /// Runs mailferry with `args`. `env` is added to a minimal environment
    /// (PATH, HOME) so that the developer's own variables do not leak in.
    /// `launcher` runs it through another command (`nsenter … --`).
    static func mailferry(_ args: [String], env: [String: String] = [:], timeout: TimeInterval = 120,
                          cwd: String? = nil, launcher: [String] = []) throws -> Result {
        var e = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
                 "HOME": ProcessInfo.processInfo.environment["HOME"] ?? "/tmp",
                 "XDG_STATE_HOME": FileManager.default.temporaryDirectory.appendingPathComponent("mailferry-test-state").path]
        e.merge(env) { $1 }
        guard let exe = launcher.first else { return try run(binary, args, env: e, timeout: timeout, cwd: cwd) }
        return try run(exe, Array(launcher.dropFirst()) + [binary] + args, env: e, timeout: timeout, cwd: cwd)
    }

    static func run(_ exe: String, _ args: [String], env: [String: String]?, timeout: TimeInterval, cwd: String? = nil) throws -> Result {
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
        let box = Box()
        let group = DispatchGroup()
        let oh = out.fileHandleForReading, eh = err.fileHandleForReading
        DispatchQueue.global().async(group: group) { box.set(out: oh.readDataToEndOfFile()) }
        DispatchQueue.global().async(group: group) { box.set(err: eh.readDataToEndOfFile()) }
        if group.wait(timeout: .now() + timeout) == .timedOut {
            p.terminate()
            _ = group.wait(timeout: .now() + 5)
            Issue.record("mailferry \(args.joined(separator: " ")) did not finish within \(timeout)s")
        }
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: box.out, stderr: box.err)
    }

    final class Box: @unchecked Sendable {
        private let lock = NSLock()
        private var o = Data(), e = Data()
        func set(out: Data) { lock.lock(); o = out; lock.unlock() }
        func set(err: Data) { lock.lock(); e = err; lock.unlock() }
        var out: String { lock.lock(); defer { lock.unlock() }; return String(decoding: o, as: UTF8.self) }
        var err: String { lock.lock(); defer { lock.unlock() }; return String(decoding: e, as: UTF8.self) }
    }
}

/// A temporary folder removed at the end of a test.
final class TempDir: @unchecked Sendable {
    let path: String
    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("mailferry-cli-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    @discardableResult
    func write(_ name: String, _ text: String, mode: Int = 0o600) throws -> String {
        let p = path + "/" + name
        try FileManager.default.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(text.utf8).write(to: URL(fileURLWithPath: p))
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: p)
        return p
    }
}

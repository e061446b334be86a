import Foundation
import MailTestSupport
import Testing

/// Runs the built `mailferry` binary as a user would.
enum CLI {
    struct Result: Sendable {
        var status: Int32
        var stdout: String
        var stderr: String
        var all: String { stdout + "\n" + stderr }
    }

    /// The binary: `MAILFERRY_BIN`, else next to the test bundle, else
    /// `swift build --show-bin-path`.
    static let binary: String = {
        if let found = MailferryExecutable.path { return found }
        if let out = try? run("/usr/bin/env", ["swift", "build", "--show-bin-path"], env: nil, timeout: 120).stdout {
            let p = out.trimmingCharacters(in: .whitespacesAndNewlines) + "/mailferry"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return "mailferry"
    }()

    /// Runs mailferry with `args`. `env` is added to a minimal environment
    /// (PATH, HOME) so that the developer's own variables do not leak in.
    /// `launcher` runs it through another command (`nsenter … --`).
    static func mailferry(_ args: [String], env: [String: String] = [:], timeout: TimeInterval = 120,
                          cwd: String? = nil, launcher: [String] = []) throws -> Result {
        let e = MailferryExecutable.environment(env)
        guard let exe = launcher.first else { return try run(binary, args, env: e, timeout: timeout, cwd: cwd) }
        return try run(exe, Array(launcher.dropFirst()) + [binary] + args, env: e, timeout: timeout, cwd: cwd)
    }

    static func run(_ exe: String, _ args: [String], env: [String: String]?, timeout: TimeInterval, cwd: String? = nil) throws -> Result {
        let o = try MailferryExecutable.run(exe, args, env: env, timeout: timeout, cwd: cwd)
        if o.timedOut { Issue.record("mailferry \(args.joined(separator: " ")) did not finish within \(timeout)s") }
        return Result(status: o.status, stdout: o.stdout, stderr: o.stderr)
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

import Foundation
import MailModel
import MailTestSupport
import Testing

/// Runs the built `mailferry` binary as a user (or cron) would, under
/// `/usr/bin/time` when it is there, so each run's wall time and peak RSS are known.
enum MailferryBinary {
    struct Result: Sendable {
        var status: Int32
        var stdout: String
        var stderr: String
        /// Peak resident set size of the mailferry process, in KiB (0 when unknown).
        var maxRSSKiB: Int
        var seconds: Double
    }

    /// `MAILFERRY_BIN`, else next to the test bundle (SwiftPM puts both in one bin folder).
    static let path: String? = {
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

    /// Runs mailferry with `args` in a minimal environment plus `env`; fails the test
    /// when it does not end within `timeout` seconds.
    static func run(_ args: [String], env: [String: String] = [:], timeout: TimeInterval = 300) throws -> Result {
        guard let binary = path else {
            throw MailError(.notFound, scope: .local, "the mailferry binary is not built (swift build --build-tests builds it)")
        }
        let timeFile = NSTemporaryDirectory() + "mailferry-time-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: timeFile) }
        let timeTool = "/usr/bin/time"
        let useTime = FileManager.default.isExecutableFile(atPath: timeTool)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: useTime ? timeTool : binary)
        p.arguments = useTime ? ["-o", timeFile, "-f", "%M %e", binary] + args : args
        var e = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
                 "HOME": ProcessInfo.processInfo.environment["HOME"] ?? "/tmp",
                 "XDG_STATE_HOME": NSTemporaryDirectory() + "mailferry-test-state"]
        e.merge(env) { $1 }
        p.environment = e
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        let started = Date()
        try p.run()
        let box = OutputBox()
        let group = DispatchGroup()
        let oh = out.fileHandleForReading, eh = err.fileHandleForReading
        DispatchQueue.global().async(group: group) { box.set(out: oh.readDataToEndOfFile()) }
        DispatchQueue.global().async(group: group) { box.set(err: eh.readDataToEndOfFile()) }
        if group.wait(timeout: .now() + timeout) == .timedOut {
            p.terminate()
            _ = group.wait(timeout: .now() + 5)
            Issue.record("mailferry \(args.first ?? "") did not finish within \(timeout)s")
        }
        p.waitUntilExit()
        var rss = 0
        var seconds = Date().timeIntervalSince(started)
        if useTime, let text = try? String(contentsOfFile: timeFile, encoding: .utf8),
           let last = text.split(separator: "\n").last {
            let parts = last.split(separator: " ")
            if parts.count == 2 {
                rss = Int(parts[0]) ?? 0
                seconds = Double(parts[1]) ?? seconds
            }
        }
        return Result(status: p.terminationStatus, stdout: box.out, stderr: box.err, maxRSSKiB: rss, seconds: seconds)
    }

    final class OutputBox: @unchecked Sendable {
        private let lock = NSLock()
        private var o = Data(), e = Data()
        func set(out: Data) { lock.lock(); o = out; lock.unlock() }
        func set(err: Data) { lock.lock(); e = err; lock.unlock() }
        var out: String { lock.lock(); defer { lock.unlock() }; return String(decoding: o, as: UTF8.self) }
        var err: String { lock.lock(); defer { lock.unlock() }; return String(decoding: e, as: UTF8.self) }
    }
}

/// What the tests print at the end: wall times, message counts and peak RSS of each run.
final class RunLog: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    let name: String
    init(_ name: String) { self.name = name }

    /// Runs mailferry, records its figures under `label`, and fails the test on a non-zero exit
    /// unless `expect` says otherwise.
    @discardableResult
    func mailferry(_ label: String, _ args: [String], env: [String: String], expect status: Int32 = 0) throws -> MailferryBinary.Result {
        let r = try MailferryBinary.run(args, env: env)
        #expect(r.status == status, "\(label): exit \(r.status)\n\(r.stderr.suffix(3000))")
        note("\(label): \(String(format: "%.2f", r.seconds)) s, peak RSS \(r.maxRSSKiB / 1024) MiB")
        return r
    }

    func note(_ s: String) { lock.lock(); lines.append(s); lock.unlock() }

    func print() {
        lock.lock(); defer { lock.unlock() }
        Swift.print("[\(name)]\n  " + lines.joined(separator: "\n  "))
    }
}

/// The JSON report a run prints with `--json`: a counter summed over its folders.
struct JSONReport {
    var raw: [String: Any]
    init(_ stdout: String) {
        raw = ((try? JSONSerialization.jsonObject(with: Data(stdout.utf8))) as? [String: Any]) ?? [:]
    }
    func total(_ name: String) -> Int {
        ((raw["folders"] as? [[String: Any]]) ?? []).reduce(0) { $0 + (($1[name] as? Int) ?? 0) }
    }
}

extension DovecotFixture {
    /// `messages` and `uidnext` of a folder, as Dovecot reports them.
    func status(user: String, folder: String) throws -> (messages: Int, uidNext: Int) {
        let out = try doveadm("-f", "flow", "mailbox", "status", "-u", user, "messages uidnext", folder)
        var m = -1, u = -1
        for part in out.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            let kv = part.split(separator: "=", maxSplits: 1)
            guard kv.count == 2 else { continue }
            if kv[0] == "messages" { m = Int(kv[1]) ?? -1 }
            if kv[0] == "uidnext" { u = Int(kv[1]) ?? -1 }
        }
        return (m, u)
    }
}

/// CRLF line ends everywhere (what an IMAP server serves for a message stored with LF).
func crlfNormalised(_ b: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(b.count + b.count / 40)
    var prev: UInt8 = 0
    for c in b {
        if c == 10, prev != 13 { out.append(13) }
        out.append(c)
        prev = c
    }
    return out
}

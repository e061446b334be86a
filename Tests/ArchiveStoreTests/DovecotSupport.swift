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

    static var path: String? { MailferryExecutable.path }

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
        let started = Date()
        let o = try MailferryExecutable.run(useTime ? timeTool : binary, useTime ? ["-o", timeFile, "-f", "%M %e", binary] + args : args,
                                            env: MailferryExecutable.environment(env), timeout: timeout)
        if o.timedOut { Issue.record("mailferry \(args.first ?? "") did not finish within \(timeout)s") }
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
        return Result(status: o.status, stdout: o.stdout, stderr: o.stderr, maxRSSKiB: rss, seconds: seconds)
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

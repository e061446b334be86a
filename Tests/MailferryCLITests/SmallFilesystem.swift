import Foundation
import MailTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A genuinely small file system for disk-full tests: a tmpfs of a few
/// hundred KiB, mounted in a private mount namespace so that nothing outside
/// the test sees it and nothing is left mounted when the test ends.
///
/// A holder process (`unshare … sh -c 'mount …; exec sleep'`) keeps the
/// namespace alive. mailferry runs inside it through `nsenter`, with the same
/// paths as everywhere else; the test reads and changes the files (fills the
/// disk, frees it) through `/proc/PID/root`, which shows the holder's mounts.
///
/// How the namespace is made:
/// - as root (CI): `unshare --mount`;
/// - as any other user: `unshare --map-root-user --mount`, an unprivileged user
///   namespace, where the kernel allows those.
/// Where neither works, `make` throws `Unavailable` with each attempt's reason,
/// so the test fails saying why, rather than passing without having run.
/// `MAILFERRY_SKIP_DISK_FULL_TESTS=1` skips these tests instead (as
/// `MAILFERRY_SKIP_SERVER_TESTS=1` does for Dovecot).
final class SmallFilesystem: @unchecked Sendable {
    struct Unavailable: Error, CustomStringConvertible {
        var description: String
    }

    static var testsEnabled: Bool {
        ProcessInfo.processInfo.environment["MAILFERRY_SKIP_DISK_FULL_TESTS"] != "1"
    }

    /// Where the tmpfs is mounted (inside the namespace).
    let mountPoint: String
    /// The holder process: its mount namespace has the tmpfs.
    let pid: pid_t
    /// Whether a user namespace was needed (not root).
    let userNamespace: Bool

    /// `mountPoint` as this process can reach it.
    var hostView: String { "/proc/\(pid)/root" + mountPoint }

    private init(mountPoint: String, pid: pid_t, userNamespace: Bool) {
        self.mountPoint = mountPoint
        self.pid = pid
        self.userNamespace = userNamespace
    }

    deinit { stop() }

    /// Mounts a tmpfs of `kibibytes` at `mountPoint` (an empty directory) in a new mount namespace.
    static func make(at mountPoint: String, kibibytes: Int) throws -> SmallFilesystem {
        guard let unshare = ["/usr/bin/unshare", "/bin/unshare"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }),
              ["/usr/bin/nsenter", "/bin/nsenter"].contains(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw Unavailable(description: "no unshare/nsenter (util-linux) on this machine")
        }
        var attempts: [(args: [String], userNamespace: Bool)] = []
        if geteuid() == 0 { attempts.append((["--mount"], false)) }
        attempts.append((["--map-root-user", "--mount"], true))
        var reasons: [String] = []
        let script = "mount -t tmpfs -o size=\(kibibytes)k,mode=0700 mailferry-test \"$1\" && : > \"$1/.mounted\" && exec sleep 600"
        for attempt in attempts {
            let log = mountPoint + ".holder.log"
            let pid = try ProcessRunner.spawnDetached(unshare, attempt.args + ["/bin/sh", "-c", script, "holder", mountPoint], logFile: log)
            let deadline = Date().addingTimeInterval(15)
            var status: Int32 = 0
            var exited = false
            while Date() < deadline, !exited {
                if FileManager.default.fileExists(atPath: "/proc/\(pid)/root\(mountPoint)/.mounted") {
                    try? FileManager.default.removeItem(atPath: log)
                    return SmallFilesystem(mountPoint: mountPoint, pid: pid, userNamespace: attempt.userNamespace)
                }
                exited = waitpid(pid, &status, WNOHANG) == pid
                if !exited { usleep(20_000) }
            }
            if !exited {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
            }
            let why = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            try? FileManager.default.removeItem(atPath: log)
            reasons.append("unshare \(attempt.args.joined(separator: " ")): \(why.isEmpty ? "no tmpfs after 15 s" : why)")
        }
        throw Unavailable(description: "cannot make a small file system for the disk-full tests (uid \(geteuid())): "
            + reasons.joined(separator: "; ")
            + ". Run the tests as root, or allow unprivileged user namespaces (kernel.unprivileged_userns_clone=1, "
            + "user.max_user_namespaces > 0), or set MAILFERRY_SKIP_DISK_FULL_TESTS=1 to skip them.")
    }

    /// Runs the built mailferry inside the namespace.
    func mailferry(_ args: [String], env: [String: String] = [:]) throws -> CLI.Result {
        let enter = ["/usr/bin/nsenter", "/bin/nsenter"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "nsenter"
        var launcher = [enter, "--target", "\(pid)", "--mount"]
        if userNamespace { launcher += ["--user", "--preserve-credentials"] }
        return try CLI.mailferry(args, env: env, launcher: launcher + ["--"])
    }

    /// Takes all but `kibibytes` of the free space with a ballast file.
    func fill(leaving kibibytes: Int) throws {
        var st = statvfs()
        guard statvfs(hostView, &st) == 0 else { throw Unavailable(description: "statvfs \(hostView): \(String(cString: strerror(errno)))") }
        let free = Int(st.f_bavail) * Int(st.f_frsize)
        let size = free - kibibytes * 1024
        guard size > 0 else { return }
        // Written in place: an atomic write would need the space twice.
        try Data(count: size).write(to: URL(fileURLWithPath: hostView + "/ballast"))
    }

    /// Frees the space the ballast took.
    func free() throws {
        try FileManager.default.removeItem(atPath: hostView + "/ballast")
    }

    /// Ends the holder: the namespace and its tmpfs go with it.
    func stop() {
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == 0 {
            kill(pid, SIGKILL)
            _ = waitpid(pid, &status, 0)
        }
    }
}

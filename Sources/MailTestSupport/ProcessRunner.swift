import Foundation
import MailModel
import NIOConcurrencyHelpers
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The outcome of one external command.
public struct CommandResult: Sendable {
    public var status: Int32
    public var stdout: Data
    public var stderr: Data
    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
}

/// Runs external tools (openssl, dovecot, doveadm) with a time limit, reading stdout
/// and stderr concurrently so a chatty tool cannot block on a full pipe.
public enum ProcessRunner {
    /// Runs `executable` with `arguments` under `timeout(1)` so it always ends.
    /// With `outputFile`, stdout and stderr go to that file instead of pipes (for daemons,
    /// whose children would otherwise hold the pipes open).
    public static func run(_ executable: String, _ arguments: [String], stdin: Data? = nil,
                           timeoutSeconds: Int = 60, environment: [String: String]? = nil,
                           outputFile: String? = nil) throws -> CommandResult {
        let process = Process()
        let timeoutTool = ["/usr/bin/timeout", "/bin/timeout"].first { FileManager.default.isExecutableFile(atPath: $0) }
        if let timeoutTool {
            process.executableURL = URL(fileURLWithPath: timeoutTool)
            process.arguments = ["-k", "5", "\(timeoutSeconds)", executable] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        }
        if let environment { process.environment = environment }
        if let outputFile {
            _ = FileManager.default.createFile(atPath: outputFile, contents: nil)
            guard let handle = FileHandle(forWritingAtPath: outputFile) else {
                throw MailError(.storage, scope: .local, "cannot write \(outputFile)")
            }
            defer { try? handle.close() }
            process.standardOutput = handle
            process.standardError = handle
            process.standardInput = FileHandle.nullDevice
            do {
                try process.run()
            } catch {
                throw MailError(.storage, scope: .local, "cannot run \(executable): \(error)")
            }
            process.waitUntilExit()
            let text = (try? Data(contentsOf: URL(fileURLWithPath: outputFile))) ?? Data()
            return CommandResult(status: process.terminationStatus, stdout: text, stderr: text)
        }
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let input: Pipe? = stdin == nil ? nil : Pipe()
        if let input {
            process.standardInput = input
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        do {
            try process.run()
        } catch {
            throw MailError(.storage, scope: .local, "cannot run \(executable): \(error)")
        }
        let collected = NIOLockedValueBox((Data(), Data()))
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) {
            let data = err.fileHandleForReading.readDataToEndOfFile()
            collected.withLockedValue { $0.1 = data }
        }
        if let input, let stdin {
            DispatchQueue.global().async(group: group) {
                try? input.fileHandleForWriting.write(contentsOf: stdin)
                try? input.fileHandleForWriting.close()
            }
        }
        let stdoutData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        let stderrData = collected.withLockedValue { $0.1 }
        return CommandResult(status: process.terminationStatus, stdout: stdoutData, stderr: stderrData)
    }

    /// Runs and throws a `MailError` carrying stderr when the command fails.
    @discardableResult
    public static func check(_ executable: String, _ arguments: [String], stdin: Data? = nil,
                             timeoutSeconds: Int = 60) throws -> CommandResult {
        let result = try run(executable, arguments, stdin: stdin, timeoutSeconds: timeoutSeconds)
        guard result.status == 0 else {
            let name = (executable as NSString).lastPathComponent
            let shown = arguments.prefix(12).joined(separator: " ")
            throw MailError(.storage, scope: .local,
                            "\(name) \(shown) failed with status \(result.status): \(result.stderrText.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return result
    }
}

extension ProcessRunner {
    /// Starts `executable` with stdin from /dev/null, stdout and stderr appended to `logFile`
    /// (or /dev/null), and **no other inherited file descriptors**, so a daemon or a
    /// watchdog cannot hold this process's pipes open. Returns the child's pid.
    public static func spawnDetached(_ executable: String, _ arguments: [String], logFile: String? = nil) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logFile ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        closeInheritedDescriptors(&actions)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Its own process group: a Ctrl-C for the tests does not hit it first.
        // An empty signal mask and default dispositions: the spawning thread may be one
        // of the test runner's or NIO's, which block signals, and a daemon inherits the
        // mask. Dovecot's master never unblocks SIGCHLD itself, so with an inherited mask
        // it never reaps its login processes; the zombies count against process_limit
        // (100 for imap-login) and after enough connections new ones are dropped during
        // the greeting.
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        let argv = ([executable] + arguments).map { strdup($0) }
        defer { argv.forEach { free($0) } }
        var cArgs = argv + [nil]
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, &cArgs, environ)
        guard rc == 0 else {
            throw MailError(.storage, scope: .local, "cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        return pid
    }

    /// Makes the child close every descriptor above 2: glibc's
    /// `posix_spawn_file_actions_addclosefrom_np` when present (looked up at run time, it is
    /// not in the Swift Glibc module), else one close action per open descriptor.
    private static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
        #if os(Linux)
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
            let closeFrom = unsafeBitCast(symbol, to: CloseFrom.self)
            if closeFrom(&actions, 3) == 0 { return }
        }
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for fd in open.compactMap(Int32.init) where fd > 2 && fcntl(fd, F_GETFD) != -1 {
            posix_spawn_file_actions_addclose(&actions, fd)
        }
        #endif
    }

    /// Runs a command that daemonizes (forks and exits) and waits for the foreground
    /// part to exit, at most `timeoutSeconds`. Returns its exit status.
    public static func runDaemonizing(_ executable: String, _ arguments: [String], logFile: String,
                                      timeoutSeconds: Int = 30) throws -> Int32 {
        let pid = try spawnDetached(executable, arguments, logFile: logFile)
        let deadline = Date().addingTimeInterval(TimeInterval(timeoutSeconds))
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r < 0 { return -1 }
            if Date() > deadline {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                return -1
            }
            usleep(20_000)
        }
        // WIFEXITED / WEXITSTATUS by hand (the macros are not imported).
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
    }
}

import Foundation
import MailModel

/// Runs a user's command through `/bin/sh -c`, as mbsync's PassCmd does, and
/// returns its standard output. The command line itself is the user's (it may
/// name a key ring entry, never the secret), the output is the secret: it is
/// never logged, and a failing command is reported by its exit status and the
/// first line of its standard error only.
enum ShellCommand {
    struct Failure: Error, CustomStringConvertible {
        var status: Int32
        var stderrLine: String
        var timedOut: Bool
        var description: String {
            if timedOut { return "timed out" }
            return "exited with status \(status)" + (stderrLine.isEmpty ? "" : ": \(stderrLine)")
        }
    }

    /// - Parameters:
    ///   - what: how to name the command in errors ("the password command for --from").
    static func output(of command: String, what: String, timeout: TimeInterval = 120) async throws -> String {
        do {
            return try await run(command, timeout: timeout)
        } catch let f as Failure {
            throw MailError(.authentication, scope: .account,
                            "\(what) '\(command)' \(f)",
                            hint: "run it by hand to check that it prints the secret on its first line")
        } catch let e as MailError {
            throw e
        } catch {
            throw MailError(.usage, scope: .local, "\(what) '\(command)' could not be started: \(error.localizedDescription)")
        }
    }

    static func run(_ command: String, timeout: TimeInterval) async throws -> String {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<String, Error>) in
            DispatchQueue.global().async {
                cont.resume(with: Result { try runBlocking(command, timeout: timeout) })
            }
        }
    }

    private static func runBlocking(_ command: String, timeout: TimeInterval) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        // The child must not inherit the secrets we were given by environment.
        var env = ProcessInfo.processInfo.environment
        for k in env.keys where k.hasPrefix("MAILFERRY_") && (k.hasSuffix("_PASSWORD") || k.hasSuffix("_TOKEN")) {
            env[k] = nil
        }
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let group = DispatchGroup()
        let outData = DataBox(), errData = DataBox()
        let outHandle = out.fileHandleForReading, errHandle = err.fileHandleForReading
        group.enter()
        DispatchQueue.global().async {
            outData.data = outHandle.readDataToEndOfFile()
            group.leave()
        }
        group.enter()
        DispatchQueue.global().async {
            errData.data = errHandle.readDataToEndOfFile()
            group.leave()
        }
        var timedOut = false
        if group.wait(timeout: .now() + timeout) == .timedOut {
            timedOut = true
            p.terminate()
            _ = group.wait(timeout: .now() + 5)
        }
        p.waitUntilExit()
        let errText = String(decoding: errData.data, as: UTF8.self)
        let firstErr = errText.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        guard !timedOut, p.terminationReason == .exit, p.terminationStatus == 0 else {
            throw Failure(status: p.terminationStatus, stderrLine: String(firstErr.prefix(200)), timedOut: timedOut)
        }
        return String(decoding: outData.data, as: UTF8.self)
    }
}

/// Filled by one reader thread, read after `DispatchGroup.wait`.
private final class DataBox: @unchecked Sendable {
    var data = Data()
}

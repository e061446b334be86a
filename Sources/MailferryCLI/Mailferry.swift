import ArgumentParser
import Foundation
import MailModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The root command. The `mailferry` executable calls `MailferryMain.main()`.
public struct Mailferry: AsyncParsableCommand {
    public init() {}

    public static let version = "0.1.0"

    public static let configuration = CommandConfiguration(
        commandName: "mailferry",
        abstract: "Move mail out of POP3 and IMAP accounts, into IMAP servers and compressed backups, and back again.",
        discussion: """
        Stores are named by URL: imap://USER@HOST[:PORT], imaps://…, pop3://…, pop3s://…, \
        maildir:PATH, mbox:PATH and archive:PATH. Passwords never go in a URL: mailferry reads them \
        from MAILFERRY_FROM_PASSWORD / MAILFERRY_TO_PASSWORD, a file or a command.

        Exit codes: 0 done, 1 some messages or folders failed (see the report), 2 usage or \
        configuration error, 3 authentication failed, 4 connection/TLS/certificate error, \
        5 local storage error (disk full, permissions, lock), 6 corrupt archive or state, \
        130 interrupted (a re-run resumes).

        Examples:
          read -rs MAILFERRY_FROM_PASSWORD; read -rs MAILFERRY_TO_PASSWORD
          export MAILFERRY_FROM_PASSWORD MAILFERRY_TO_PASSWORD
          mailferry migrate --from pop3s://alice@pop.old.example \\
              --to imaps://alice@imap.new.example
          mailferry backup --from imaps://alice@imap.new.example \\
              --to archive:/var/backups/alice
          mailferry restore --from archive:/var/backups/alice \\
              --to maildir:/home/alice/Maildir
          mailferry run /etc/mailferry/nightly.toml
        """,
        version: version,
        subcommands: [
            MigrateCommand.self, BackupCommand.self, RestoreCommand.self, VerifyCommand.self,
            FoldersCommand.self, ArchiveCommand.self, RunCommand.self,
        ])
}

/// Parses the command line, runs the command with a SIGINT handler that
/// cancels it cleanly, and exits with the code from SPEC.md.
public enum MailferryMain {
    public static func main(_ arguments: [String]? = nil) async -> Never {
        let command: ParsableCommand
        do {
            command = try Mailferry.parseAsRoot(arguments)
        } catch {
            exitForParseError(error)
        }
        let code = await run(command)
        exit(code)
    }

    static func exitForParseError(_ error: Error) -> Never {
        let code = Mailferry.exitCode(for: error)
        let text = Mailferry.fullMessage(for: error)
        if code == .success {
            if !text.isEmpty { print(text) }
            exit(0)
        }
        if let m = error as? MailError {
            Diagnostics.error(ErrorPresenter.text(for: m))
            exit(m.exitCode)
        }
        FileHandle.standardError.write(Data((SecretRedactor.shared.redact(text) + "\n").utf8))
        // ArgumentParser uses EX_USAGE (64) for usage errors; SPEC.md says 2.
        exit(code == .validationFailure || code.rawValue == 64 ? ExitStatus.usage.rawValue : code.rawValue)
    }

    /// Runs a parsed command; returns its exit code.
    static func run(_ command: sending ParsableCommand) async -> Int32 {
        let task = Task<Int32, Never> {
            do {
                var c = command
                if var a = c as? AsyncParsableCommand {
                    try await a.run()
                } else {
                    try c.run()
                }
                return 0
            } catch let e as ExitCode {
                return e.rawValue
            } catch let e as ExitCodeError {
                return e.code
            } catch where MailferryMain.isArgumentParserError(error) {
                // --help, --version, and ValidationErrors thrown by validate().
                let code = Mailferry.exitCode(for: error)
                let text = Mailferry.fullMessage(for: error)
                if code == .success {
                    if !text.isEmpty { print(text) }
                    return 0
                }
                FileHandle.standardError.write(Data((SecretRedactor.shared.redact(text) + "\n").utf8))
                return code == .validationFailure || code.rawValue == 64 ? ExitStatus.usage.rawValue : code.rawValue
            } catch {
                let p = ErrorPresenter.present(error)
                Diagnostics.error(p.line)
                return p.exitCode
            }
        }
        let interrupts = InterruptHandler { task.cancel() }
        let code = await task.value
        interrupts.stop()
        return interrupts.fired && code != 0 ? ExitStatus.interrupted.rawValue : code
    }
}

extension MailferryMain {
    static func isArgumentParserError(_ error: Error) -> Bool {
        if error is MailError || error is CancellationError { return false }
        return error is ValidationError || error is CleanExit
            || String(reflecting: type(of: error)).hasPrefix("ArgumentParser.")
    }
}

/// On the first SIGINT (or SIGTERM), cancels the run: the current step ends,
/// the state is left consistent, and the process exits 130. A second one
/// exits at once.
final class InterruptHandler: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []
    private let lock = NSLock()
    private var count = 0

    var fired: Bool {
        lock.lock()
        defer { lock.unlock() }
        return count > 0
    }

    init(onInterrupt: @escaping @Sendable () -> Void) {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            src.setEventHandler { [weak self] in
                guard let self else { return }
                self.lock.lock()
                self.count += 1
                let n = self.count
                self.lock.unlock()
                if n == 1 {
                    Diagnostics.writeLine("mailferry: interrupted; finishing the current step so that a re-run resumes (press Ctrl-C again to stop at once)")
                    onInterrupt()
                } else {
                    exit(ExitStatus.interrupted.rawValue)
                }
            }
            src.resume()
            sources.append(src)
        }
    }

    func stop() {
        for s in sources { s.cancel() }
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}

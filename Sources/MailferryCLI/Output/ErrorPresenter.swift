import Foundation
import ArgumentParser
import MailModel

/// Exit statuses from SPEC.md.
public enum ExitStatus: Int32, Sendable {
    case success = 0
    case partialFailure = 1
    case usage = 2
    case authentication = 3
    case connection = 4
    case storage = 5
    case corrupt = 6
    case interrupted = 130
}

/// Turns any error that ends a run into one line for a human and the exit
/// code from SPEC.md. No stack traces, no type names, no secrets.
enum ErrorPresenter {
    struct Presentation {
        var line: String
        var exitCode: Int32
    }

    static func present(_ error: Error) -> Presentation {
        switch error {
        case let e as MailError:
            return Presentation(line: SecretRedactor.shared.redact(text(for: e)), exitCode: e.exitCode)
        case let e as SideError:
            var inner = present(e.error)
            if let hint = e.hint, !inner.line.contains(hint) { inner.line += "; \(hint)" }
            return inner
        case is CancellationError:
            return Presentation(line: "interrupted; the state is consistent and a re-run resumes", exitCode: ExitStatus.interrupted.rawValue)
        case let e as ValidationError:
            return Presentation(line: e.message, exitCode: ExitStatus.usage.rawValue)
        case let e as DecodingError:
            return Presentation(line: "cannot read a file: \(e.localizedDescription)", exitCode: ExitStatus.corrupt.rawValue)
        case let e as CocoaError where e.code == .fileWriteOutOfSpace:
            return Presentation(line: "the disk is full; free some space and run again (a re-run resumes)",
                                exitCode: ExitStatus.storage.rawValue)
        case let e as CocoaError where e.code.rawValue >= 512 && e.code.rawValue < 1024:
            // File writing errors.
            return Presentation(line: "cannot write a file: \(e.localizedDescription)", exitCode: ExitStatus.storage.rawValue)
        case let e as CocoaError where e.code.rawValue >= 256 && e.code.rawValue < 512:
            return Presentation(line: "cannot read a file: \(e.localizedDescription)", exitCode: ExitStatus.storage.rawValue)
        default:
            return Presentation(line: SecretRedactor.shared.redact("\(error)"), exitCode: ExitStatus.partialFailure.rawValue)
        }
    }

    /// The message, the folder/message it concerns and a fix: from the error
    /// itself, or else a standard one for its kind.
    static func text(for e: MailError) -> String {
        var e = e
        if let hint = e.hint {
            if isDiskFull(e), !hint.contains("run again") { e.hint = hint + "; free some space and run again (a re-run resumes)" }
        } else {
            e.hint = defaultHint(for: e, side: nil)
        }
        return e.description
    }

    /// A storage error because the disk (or the quota) is full.
    static func isDiskFull(_ e: MailError) -> Bool {
        let lower = (e.message + " " + (e.hint ?? "")).lowercased()
        return e.kind == .storage && (lower.contains("no space left") || lower.contains("disk is full")
            || lower.contains("disk (or quota) is full") || lower.contains("quota exceeded") || lower.contains("database or disk is full")
            || lower.contains("enough space"))
    }

    /// A TLS error because the server lacks (or refused) STARTTLS / STLS.
    static func isAboutSTARTTLS(_ e: MailError) -> Bool {
        let lower = e.message.lowercased()
        return e.kind == .tls && (lower.contains("starttls") || lower.contains("stls"))
    }

    static func defaultHint(for e: MailError, side: Side?) -> String? {
        let lower = e.message.lowercased()
        let tlsFlag = side.map { $0.flag("tls") } ?? "--from-tls/--to-tls"
        switch e.kind {
        case .tls:
            if isAboutSTARTTLS(e) {
                // POP3 calls it STLS; "starttls" does not contain "stls".
                let implicit = lower.contains("stls") ? "pop3s://, port 995" : "imaps://, port 993"
                return "connect with implicit TLS (\(implicit)) if the server offers it, or pass \(tlsFlag) none when a plaintext connection is really wanted (on a trusted network only)"
            }
            if lower.contains("certificate") || lower.contains("trust") || lower.contains("verify") || lower.contains("self-signed") || lower.contains("issuer") {
                return "if the server uses a private or self-signed CA, pass its certificate with --ca-file PEM"
            }
            return nil
        case .authentication:
            let env = side?.defaultPasswordVariable ?? "MAILFERRY_FROM_PASSWORD / MAILFERRY_TO_PASSWORD"
            return "check the user name and the password (\(env), or the password file or command)"
        case .connection:
            return lower.contains("timed out") || lower.contains("deadline")
                ? "check the host name, the port and any firewall in between"
                : "check the host name and the port, and that the server is running"
        case .storage:
            if lower.contains("lock") || lower.contains("held by another run") { return "another mailferry run holds the lock; wait for it to finish (or check that no run is left over)" }
            if isDiskFull(e) { return "free some space and run again (a re-run resumes)" }
            if lower.contains("permission") { return "check the owner and permissions of the path" }
            return nil
        case .corrupt:
            return "nothing was changed; run 'mailferry archive check' for details"
        default:
            return nil
        }
    }
}

/// An error that happened on one side of a transfer, with a hint that names
/// that side's flags.
struct SideError: Error, CustomStringConvertible {
    var side: Side
    var error: Error
    var hint: String? {
        guard let m = error as? MailError, m.hint == nil else { return nil }
        return ErrorPresenter.defaultHint(for: m, side: side)
    }
    var description: String { ErrorPresenter.present(self).line }

    /// Attaches the side's hint to a MailError so it can be rethrown as one.
    static func annotate(_ error: Error, side: Side) -> Error {
        guard var m = error as? MailError else { return error }
        if m.hint == nil { m.hint = ErrorPresenter.defaultHint(for: m, side: side) }
        return m
    }
}

import IMAPCore
import MailModel

/// Turns IMAP NO/BAD replies into `MailError`s that carry the right kind,
/// scope and retryability. Never includes command arguments (passwords).
public enum IMAPErrors {
    /// - Parameters:
    ///   - command: the command's name ("APPEND", "SELECT"), for the message.
    ///   - host: the server, for the message.
    ///   - scope: how far a plain refusal reaches for this command.
    public static func from(_ status: StatusResponse, command: String, host: String, scope: MailError.Scope = .folder) -> MailError {
        let text = status.text.isEmpty ? "" : ": \(status.text)"
        let what = "\(host) refused \(command) (\(status.kind.rawValue)\(status.code.map { " [\(codeName($0))]" } ?? ""))\(text)"
        if status.kind == .bad {
            return MailError(.protocolViolation, scope: scope, what, hint: "the server did not understand the command; this is likely a mailferry bug or a server limitation")
        }
        let lower = status.text.lowercased()
        if let code = status.code {
            switch code {
            case .authenticationFailed, .authorizationFailed, .expired:
                return MailError(.authentication, scope: .account, "\(host) refused the login\(text)",
                                 hint: code == .expired ? "the password or token has expired" : "check the user name and password")
            case .privacyRequired:
                return MailError(.tls, scope: .account, "\(host) requires TLS for this\(text)")
            case .throttled, .limit, .unavailable:
                return MailError(.throttled, scope: .account, retryable: true, what, retryAfter: retryAfter(status.text) ?? 30)
            case .overQuota:
                // Gmail says OVERQUOTA for its rate limits too ("Too many
                // simultaneous connections", "Account exceeded command or
                // bandwidth limits"): those pass with time, a full mailbox does not.
                if lower.contains("simultaneous") || lower.contains("too many") || lower.contains("bandwidth")
                    || lower.contains("exceeded command") || lower.contains("rate limit") {
                    return MailError(.throttled, scope: .account, retryable: true, what, retryAfter: retryAfter(status.text) ?? 30)
                }
                return MailError(.refused, scope: .account, what, hint: "the destination account is over its quota")
            case .tryCreate, .nonExistent:
                return MailError(.notFound, scope: .folder, what)
            case .inUse:
                return MailError(.refused, scope: scope, retryable: true, what, retryAfter: 5)
            case .serverBug, .corruption:
                return MailError(.refused, scope: scope, retryable: true, what)
            case .alreadyExists:
                return MailError(.refused, scope: scope, what)
            case .noPermission:
                return MailError(.refused, scope: .folder, what, hint: "the account lacks the rights for this folder")
            default: break
            }
        }
        if lower.contains("throttl") || lower.contains("too many") || lower.contains("rate limit") || lower.contains("try again later") {
            return MailError(.throttled, scope: .account, retryable: true, what, retryAfter: retryAfter(status.text) ?? 30)
        }
        if command == "LOGIN" || command.hasPrefix("AUTHENTICATE") {
            return MailError(.authentication, scope: .account, "\(host) refused the login\(text)", hint: "check the user name and password")
        }
        return MailError(.refused, scope: scope, what)
    }

    /// Seconds from texts such as Exchange's "Suggested Backoff Time: 192375 milliseconds".
    static func retryAfter(_ text: String) -> Double? {
        let lower = text.lowercased()
        guard let r = lower.range(of: "backoff time:") ?? lower.range(of: "retry after") ?? lower.range(of: "retry-after") else { return nil }
        let rest = lower[r.upperBound...].drop(while: { $0 == " " || $0 == ":" })
        let digits = rest.prefix(while: \.isNumber)
        guard let n = Double(digits) else { return nil }
        let unit = rest.dropFirst(digits.count).drop(while: { $0 == " " })
        return unit.hasPrefix("ms") || unit.hasPrefix("milli") ? n / 1000 : n
    }

    static func codeName(_ c: ResponseCode) -> String {
        var b = ByteBufferShim()
        return b.name(c)
    }

    static func connectionLost(host: String, during what: String, bye: StatusResponse?) -> MailError {
        if let bye {
            return MailError(.connection, scope: .account, retryable: true, "\(host) ended the session during \(what) (BYE: \(bye.text))")
        }
        return MailError(.connection, scope: .account, retryable: true, "\(host) closed the connection during \(what)")
    }

    static func protocolError(host: String, _ detail: String) -> MailError {
        MailError(.protocolViolation, scope: .account, "\(host) sent something that is not IMAP: \(detail)")
    }
}

import NIOCore

struct ByteBufferShim {
    mutating func name(_ c: ResponseCode) -> String {
        let s = StatusResponse(.ok, code: c, text: "x").description
        // "OK [CODE ...] x"
        guard let open = s.firstIndex(of: "["), let close = s.lastIndex(of: "]") else { return "" }
        let inner = s[s.index(after: open)..<close]
        return String(inner.split(separator: " ").first ?? "")
    }
}

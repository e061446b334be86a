import MailModel
import POP3Core

/// Turns a `-ERR` reply into a `MailError`, using the RFC 2449 / RFC 3206
/// response code when there is one. Server text is kept (it never carries the
/// password: the client never echoes one).
enum POP3Errors {
    static func refused(_ status: POP3StatusLine, command: POP3Command, host: String,
                        loginDelay: Int? = nil, during login: Bool = false) -> MailError {
        let said = status.text.isEmpty ? "" : ": \(status.text)"
        let what = "\(host) refused \(command)\(said)"
        if let code = status.code {
            if code.isWithin(.inUse) {
                return MailError(.throttled, scope: .account, retryable: true,
                                 "the mailbox on \(host) is in use by another POP3 session (IN-USE)\(said)",
                                 hint: "close other mail clients reading this account, or try again later")
            }
            if code.isWithin(.loginDelay) {
                return MailError(.throttled, scope: .account, retryable: true,
                                 "\(host) allows logins only every \(loginDelay.map { "\($0) seconds" } ?? "few minutes") (LOGIN-DELAY)\(said)",
                                 hint: "wait before the next run", retryAfter: loginDelay.map(Double.init))
            }
            if code.isWithin(.sysTemp) {
                return MailError(.connection, scope: .account, retryable: true,
                                 "\(host) has a temporary problem (SYS/TEMP)\(said)", hint: "try again later")
            }
            if code.isWithin(.sysPerm) {
                return MailError(.refused, scope: .account, retryable: false,
                                 "\(host) has a permanent problem with this mailbox (SYS/PERM)\(said)")
            }
            if code.isWithin(.auth) {
                return MailError(.authentication, scope: .account, "\(host) refused the credentials (AUTH)\(said)",
                                 hint: "check the user name and password or token")
            }
        }
        if login {
            return MailError(.authentication, scope: .account, "\(host) refused the login\(said)",
                             hint: "check the user name and password or token")
        }
        return MailError(.refused, scope: .account, what)
    }

    static func unexpected(_ event: POP3ResponseEvent, waitingFor what: String, host: String) -> MailError {
        MailError(.protocolViolation, scope: .account, retryable: true,
                  "\(host) sent an unexpected reply while \(what) was awaited (\(describe(event)))")
    }

    static func describe(_ event: POP3ResponseEvent) -> String {
        switch event {
        case .status(let s): return s.description
        case .continuation: return "a SASL challenge"
        case .line: return "a listing line"
        case .chunk: return "message data"
        case .end: return "end of a multi-line reply"
        }
    }
}

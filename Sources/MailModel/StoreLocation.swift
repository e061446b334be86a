/// How a network store's connection is secured.
public enum TLSMode: String, Sendable, Codable, Hashable, CaseIterable {
    /// TLS from the first byte (imaps, pop3s).
    case implicit
    /// Plaintext, then STARTTLS/STLS; the connection fails if the server does not offer it.
    case startTLS = "starttls"
    /// No TLS at all. Only with an explicit `--from-tls none` / `--to-tls none`.
    case none
}

/// A store named by URL, as SPEC.md lists them:
/// `imap://USER@HOST[:PORT]`, `imaps://…`, `pop3://…`, `pop3s://…`,
/// `maildir:PATH`, `mbox:PATH`, `archive:PATH`.
public enum StoreLocation: Hashable, Sendable, CustomStringConvertible {
    case imap(NetworkAccount)
    case pop3(NetworkAccount)
    case maildir(path: String)
    case mbox(path: String)
    case archive(path: String)

    public struct NetworkAccount: Hashable, Sendable {
        public var user: String
        public var host: String
        public var port: Int
        public var tls: TLSMode

        public init(user: String, host: String, port: Int, tls: TLSMode) {
            self.user = user
            self.host = host
            self.port = port
            self.tls = tls
        }
    }

    /// Parses a store URL. A password in the URL is refused: it would show in
    /// `ps`, shell history and logs.
    public init(parsing text: String) throws {
        func usage(_ m: String, hint: String? = nil) -> MailError {
            MailError(.usage, scope: .local, m, hint: hint)
        }
        for (scheme, make) in [("maildir:", { StoreLocation.maildir(path: $0) }),
                               ("mbox:", { StoreLocation.mbox(path: $0) }),
                               ("archive:", { StoreLocation.archive(path: $0) })] as [(String, (String) -> StoreLocation)] {
            if text.lowercased().hasPrefix(scheme) {
                var path = String(text.dropFirst(scheme.count))
                if path.hasPrefix("//") { path = String(path.dropFirst(2)) }
                guard !path.isEmpty else { throw usage("\(scheme) needs a path, as in \(scheme)/var/backups/mail") }
                self = make(path)
                return
            }
        }
        guard let sep = text.range(of: "://") else {
            throw usage("'\(StoreLocation.redact(text))' is not a store URL",
                        hint: "use imap://, imaps://, pop3://, pop3s://, maildir:, mbox: or archive:")
        }
        let scheme = text[..<sep.lowerBound].lowercased()
        var rest = String(text[sep.upperBound...])
        if rest.hasSuffix("/") { rest.removeLast() }
        let tls: TLSMode
        let defaultPort: Int
        let isIMAP: Bool
        switch scheme {
        case "imap": (tls, defaultPort, isIMAP) = (.startTLS, 143, true)
        case "imaps": (tls, defaultPort, isIMAP) = (.implicit, 993, true)
        case "pop3", "pop": (tls, defaultPort, isIMAP) = (.startTLS, 110, false)
        case "pop3s", "pops": (tls, defaultPort, isIMAP) = (.implicit, 995, false)
        default:
            throw usage("unknown store scheme '\(scheme)'",
                        hint: "use imap://, imaps://, pop3://, pop3s://, maildir:, mbox: or archive:")
        }
        guard let at = rest.lastIndex(of: "@") else {
            throw usage("\(scheme):// needs a user, as in \(scheme)://user@host")
        }
        let userinfo = String(rest[..<at])
        let hostport = String(rest[rest.index(after: at)...])
        if userinfo.contains(":") {
            throw usage("a password in the store URL is refused (it would show in ps, shell history and logs)",
                        hint: "put it in MAILFERRY_FROM_PASSWORD / MAILFERRY_TO_PASSWORD, or use --from-password-file / --from-password-command")
        }
        guard let user = StoreLocation.percentDecode(userinfo), !user.isEmpty else {
            throw usage("the user name in \(scheme):// is empty or badly percent-encoded")
        }
        var host = hostport
        var port = defaultPort
        if hostport.hasPrefix("[") {
            // [IPv6]:port
            guard let close = hostport.firstIndex(of: "]") else { throw usage("unclosed [ in host '\(hostport)'") }
            host = String(hostport[hostport.index(after: hostport.startIndex)..<close])
            let after = hostport[hostport.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { throw usage("bad port in '\(hostport)'") }
                port = p
            } else if !after.isEmpty {
                throw usage("unexpected '\(after)' after host")
            }
        } else if hostport.filter({ $0 == ":" }).count > 1 {
            throw usage("an IPv6 address goes in brackets, as in \(scheme)://user@[\(hostport)]")
        } else if let colon = hostport.lastIndex(of: ":") {
            host = String(hostport[..<colon])
            guard let p = Int(hostport[hostport.index(after: colon)...]), (1...65535).contains(p) else {
                throw usage("bad port in '\(hostport)'")
            }
            port = p
        }
        guard !host.isEmpty else { throw usage("\(scheme):// needs a host") }
        guard !host.contains("/"), !host.contains("?"), !host.contains("#") else {
            throw usage("\(scheme):// takes no path or query after the host ('\(hostport)')",
                        hint: "choose folders with --folder")
        }
        let account = NetworkAccount(user: user, host: host, port: port, tls: tls)
        self = isIMAP ? .imap(account) : .pop3(account)
    }

    public var account: NetworkAccount? {
        switch self {
        case .imap(let a), .pop3(let a): return a
        default: return nil
        }
    }

    public var isNetwork: Bool { account != nil }

    /// The URL again, safe for logs and reports (never holds a password).
    public var description: String {
        switch self {
        case .imap(let a), .pop3(let a):
            let isIMAP: Bool = { if case .imap = self { return true } else { return false } }()
            let scheme: String
            switch (isIMAP, a.tls) {
            case (true, .implicit): scheme = "imaps"
            case (true, _): scheme = "imap"
            case (false, .implicit): scheme = "pop3s"
            case (false, _): scheme = "pop3"
            }
            let host = a.host.contains(":") ? "[\(a.host)]" : a.host
            return "\(scheme)://\(StoreLocation.percentEncodeUser(a.user))@\(host):\(a.port)"
        case .maildir(let p): return "maildir:\(p)"
        case .mbox(let p): return "mbox:\(p)"
        case .archive(let p): return "archive:\(p)"
        }
    }

    /// Removes anything that looks like a password from a URL-ish string.
    public static func redact(_ text: String) -> String {
        guard let sep = text.range(of: "://"), let at = text[sep.upperBound...].lastIndex(of: "@") else { return text }
        let userinfo = text[sep.upperBound..<at]
        guard let colon = userinfo.firstIndex(of: ":") else { return text }
        return String(text[..<colon]) + ":***" + String(text[at...])
    }

    static func percentDecode(_ s: String) -> String? {
        var out = [UInt8]()
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "%") {
                guard i + 2 < b.count, let v = UInt8(String(decoding: b[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) else { return nil }
                out.append(v)
                i += 3
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    static func percentEncodeUser(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            let c = Character(Unicode.Scalar(b))
            if b < 0x80, c.isLetter || c.isNumber || "-._~!$&'()*+,;=".contains(c) {
                out.append(c)
            } else {
                out += String(format: "%%%02X", b)
            }
        }
        return out
    }
}

import Foundation

import Foundation
import MailModel
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Which end of a transfer an option or an error belongs to. Used to name
/// the right flag in messages (`--from-tls` vs `--to-tls`).
public enum Side: String, Sendable, Codable, CaseIterable {
    case from, to

    /// The default environment variable holding this side's password.
    public var defaultPasswordVariable: String {
        self == .from ? "MAILFERRY_FROM_PASSWORD" : "MAILFERRY_TO_PASSWORD"
    }
    public func flag(_ name: String) -> String { "--\(rawValue)-\(name)" }
}

/// Where a password comes from. Never the password itself on a command line.
public enum PasswordSource: Sendable, Hashable {
    /// An environment variable.
    case environment(String)
    /// The first line of a file.
    case file(String)
    /// The standard output of a shell command (first line), as mbsync's PassCmd.
    case command(String)
}

/// The built-in OAuth2 refresh-token grant (RFC 6749 §6).
public struct OAuth2RefreshConfig: Sendable, Hashable {
    public var tokenEndpoint: URL
    public var clientID: String
    /// Where the client secret is, if the provider wants one.
    public var clientSecret: PasswordSource?
    /// Where the refresh token is.
    public var refreshToken: PasswordSource
    public var scope: String?

    public init(tokenEndpoint: URL, clientID: String, clientSecret: PasswordSource? = nil,
                refreshToken: PasswordSource, scope: String? = nil) {
        self.tokenEndpoint = tokenEndpoint
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.refreshToken = refreshToken
        self.scope = scope
    }
}

/// How to log in to a network store.
public enum SecretSource: Sendable, Hashable {
    case password(PasswordSource)
    /// A command that prints an OAuth2 access token; run again when the server
    /// refuses or expires the token.
    case oauth2Command(String)
    case oauth2Refresh(OAuth2RefreshConfig)
}

/// The login of one side: the secret's source and, for admin logins, whom to
/// log in as.
public struct LoginSpec: Sendable, Hashable {
    public var secret: SecretSource
    /// Log in as this admin and act for the URL's user (SASL PLAIN authzid).
    public var adminUser: String?
    /// Dovecot master user: log in as `urluser*master` with the master's password.
    public var masterUser: String?
    public var masterSeparator: String

    public init(secret: SecretSource, adminUser: String? = nil, masterUser: String? = nil, masterSeparator: String = "*") {
        self.secret = secret
        self.adminUser = adminUser
        self.masterUser = masterUser
        self.masterSeparator = masterSeparator
    }

    /// The authentication and authorization identities for the URL's user.
    public func identities(for urlUser: String) -> (authenticate: String, authorize: String?) {
        if let masterUser { return ("\(urlUser)\(masterSeparator)\(masterUser)", nil) }
        if let adminUser { return (adminUser, urlUser) }
        return (urlUser, nil)
    }
}

/// A secret ready to hand to a connection.
public enum ResolvedSecret: Sendable {
    case password(String)
    /// Returns an access token; `forceRefresh` after the server refused the last one.
    case oauth2(@Sendable (_ forceRefresh: Bool) async throws -> String)
}

public struct ResolvedLogin: Sendable {
    public var user: String
    public var authorizationIdentity: String?
    public var secret: ResolvedSecret
}

enum CredentialResolver {
    /// Reads a password (or token, or client secret) from its source and
    /// registers it with the redactor. `what` names it in errors.
    static func read(_ source: PasswordSource, what: String,
                     environment: [String: String] = ProcessInfo.processInfo.environment) async throws -> String {
        let value: String
        switch source {
        case .environment(let name):
            guard let v = environment[name], !v.isEmpty else {
                throw MailError(.usage, scope: .local, "\(what): the environment variable \(name) is not set",
                                hint: "export \(name), or use a password file or command")
            }
            value = v
        case .file(let path):
            let url = URL(fileURLWithPath: (path as NSString).expandingTildeInPath)
            let data: Data
            do {
                data = try Data(contentsOf: url)
            } catch {
                throw MailError(.usage, scope: .local, "\(what): cannot read the file \(path)",
                                hint: "check that it exists and that this user may read it")
            }
            value = firstLine(String(decoding: data, as: UTF8.self))
            warnIfWorldReadable(path: url.path, what: what)
        case .command(let cmd):
            value = firstLine(try await ShellCommand.output(of: cmd, what: "\(what): the command"))
        }
        guard !value.isEmpty else {
            throw MailError(.usage, scope: .local, "\(what) is empty", hint: describe(source))
        }
        SecretRedactor.shared.register(value)
        return value
    }

    static func firstLine(_ s: String) -> String {
        let line = s.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).first.map(String.init) ?? ""
        return line.trimmingCharacters(in: CharacterSet(charactersIn: "\r"))
    }

    static func describe(_ s: PasswordSource) -> String {
        switch s {
        case .environment(let v): return "from the environment variable \(v)"
        case .file(let f): return "from the file \(f)"
        case .command(let c): return "from the command '\(c)'"
        }
    }

    static func warnIfWorldReadable(path: String, what: String) {
        guard let attrs = try? FileManager.default.attributesOfItem(atPath: path),
              let perms = attrs[.posixPermissions] as? NSNumber else { return }
        if perms.intValue & 0o004 != 0 {
            Diagnostics.warning("\(what): \(path) is readable by every user of this machine; chmod 600 it")
        }
    }

    /// Resolves a login for a network account, reading passwords now and
    /// building a token provider for OAuth2.
    static func resolve(_ spec: LoginSpec, account: StoreLocation.NetworkAccount, side: Side,
                        urlSession: URLSession? = nil) async throws -> ResolvedLogin {
        let ids = spec.identities(for: account.user)
        let what = "the \(side == .from ? "source" : "destination") password"
        let secret: ResolvedSecret
        switch spec.secret {
        case .password(let src):
            secret = .password(try await read(src, what: what))
        case .oauth2Command(let cmd):
            let cache = TokenCache { _ in
                let token = firstLine(try await ShellCommand.output(
                    of: cmd, what: "the \(side == .from ? "source" : "destination") OAuth2 token command"))
                guard !token.isEmpty else {
                    throw MailError(.authentication, scope: .account, "the OAuth2 token command '\(cmd)' printed nothing")
                }
                SecretRedactor.shared.register(token)
                return (token, nil)
            }
            secret = .oauth2 { force in try await cache.token(forceRefresh: force) }
        case .oauth2Refresh(let cfg):
            let flow = OAuth2RefreshFlow(config: cfg, session: urlSession)
            let cache = TokenCache { _ in try await flow.fetch() }
            secret = .oauth2 { force in try await cache.token(forceRefresh: force) }
        }
        return ResolvedLogin(user: ids.authenticate, authorizationIdentity: ids.authorize, secret: secret)
    }
}

/// Holds an access token until it expires or the server refuses it; callers
/// asking at the same time share one refresh.
actor TokenCache {
    typealias Fetch = @Sendable (_ previous: String?) async throws -> (token: String, expiresIn: TimeInterval?)
    private let fetch: Fetch
    private var current: (token: String, expires: Date?)?
    private var inFlight: Task<(token: String, expiresIn: TimeInterval?), Error>?
    /// How many times a token was fetched (tests and logs).
    private(set) var fetches = 0

    init(fetch: @escaping Fetch) { self.fetch = fetch }

    func token(forceRefresh: Bool) async throws -> String {
        if !forceRefresh, let c = current, c.expires.map({ $0.timeIntervalSinceNow > 60 }) ?? true {
            return c.token
        }
        if let inFlight { return try await inFlight.value.token }
        let previous = current?.token
        let task = Task { try await fetch(previous) }
        inFlight = task
        defer { inFlight = nil }
        let r = try await task.value
        fetches += 1
        current = (r.token, r.expiresIn.map { Date().addingTimeInterval($0) })
        return r.token
    }
}

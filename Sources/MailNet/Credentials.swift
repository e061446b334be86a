/// Fetches an OAuth2 access token. It is called again with `forceRefresh: true`
/// when the server refused or expired the token it was given.
public struct TokenProvider: Sendable {
    private let fetch: @Sendable (_ forceRefresh: Bool) async throws -> String

    public init(_ fetch: @escaping @Sendable (_ forceRefresh: Bool) async throws -> String) {
        self.fetch = fetch
    }

    /// A provider that always hands out the same token (tests, `--oauth2-token-file`).
    public static func fixed(_ token: String) -> TokenProvider {
        TokenProvider { _ in token }
    }

    public func token(forceRefresh: Bool = false) async throws -> String {
        try await fetch(forceRefresh)
    }
}

/// Who logs in, and with what. Its description never shows the secret.
public struct Credentials: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public enum Secret: Sendable, CustomStringConvertible {
        case password(String)
        case oauth2(TokenProvider)

        public var description: String {
            switch self {
            case .password: return "password <redacted>"
            case .oauth2: return "oauth2 token <redacted>"
            }
        }
    }

    /// The authentication identity (the account logged in with, or the admin/master user).
    public var user: String
    /// SASL PLAIN authorization identity: the mailbox to act as, for admin or
    /// master-user logins (Dovecot master users, Cyrus/Zimbra admins). `nil` for a normal login.
    public var authorizationIdentity: String?
    public var secret: Secret

    public init(user: String, authorizationIdentity: String? = nil, secret: Secret) {
        self.user = user
        self.authorizationIdentity = authorizationIdentity
        self.secret = secret
    }

    public static func password(user: String, _ password: String, authorizationIdentity: String? = nil) -> Credentials {
        Credentials(user: user, authorizationIdentity: authorizationIdentity, secret: .password(password))
    }

    public var isOAuth2: Bool {
        if case .oauth2 = secret { return true }
        return false
    }

    public var description: String {
        var s = "user \(user)"
        if let authorizationIdentity { s += " acting as \(authorizationIdentity)" }
        return s + " (\(secret))"
    }

    public var debugDescription: String { description }
}

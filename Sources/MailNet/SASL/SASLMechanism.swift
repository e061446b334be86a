import Foundation
import MailModel

/// What a SASL mechanism does with one server challenge.
public enum SASLStep: Sendable, Equatable {
    /// Send this client response (raw bytes; `SASL.encode` makes the base64 line).
    case respond([UInt8])
    /// The server reported an error inside the exchange (XOAUTH2/OAUTHBEARER JSON);
    /// send `response` to finish the exchange, then expect a failure reply.
    /// `status` is the JSON `status` value when there is one ("401", "invalid_token", ...).
    case failed(response: [UInt8], status: String?, detail: String)
}

/// A client-side SASL mechanism as a value type: no I/O. The client asks for the
/// initial response (sent with SASL-IR, `AUTH mech ir`, or in reply to the first empty
/// challenge when the server does not take one), then feeds each decoded challenge.
public protocol SASLMechanism: Sendable {
    /// The IANA name, as sent after AUTHENTICATE / AUTH.
    var name: String { get }
    /// The client-first message, or `nil` when the mechanism starts with a server challenge.
    func initialResponse() -> [UInt8]?
    /// The answer to one decoded server challenge.
    mutating func respond(to challenge: [UInt8]) throws -> SASLStep
    /// Tells the mechanism its initial response went out with the command (SASL-IR,
    /// `AUTH mech ir`), so an empty challenge is not answered with it again.
    mutating func markInitialResponseSent()
}

extension SASLMechanism {
    public mutating func markInitialResponseSent() {}
}

/// Base64 for SASL lines: IMAP `AUTHENTICATE` continuations and POP3 `AUTH`.
public enum SASL {
    /// The base64 form of a client response. An empty response is `=` when it is an
    /// initial response (RFC 4959, RFC 5034) and an empty line otherwise.
    public static func encode(_ bytes: [UInt8], initial: Bool = false) -> String {
        if bytes.isEmpty { return initial ? "=" : "" }
        return Data(bytes).base64EncodedString()
    }

    /// Decodes a server challenge (the text after `+ ` or `+`). `nil` when it is not base64.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.isEmpty || trimmed == "=" { return [] }
        return Data(base64Encoded: String(trimmed)).map { [UInt8]($0) }
    }

    /// The mechanism to use for these credentials, by preference among those the server offers.
    /// Passwords: PLAIN, else LOGIN (nil means use the protocol's own LOGIN/USER-PASS).
    /// OAuth2 tokens: OAUTHBEARER, else XOAUTH2.
    public static func preferredMechanism(for credentials: Credentials, offered: [String],
                                          host: String, port: Int) -> String? {
        let upper = Set(offered.map { $0.uppercased() })
        if credentials.isOAuth2 {
            if upper.contains("OAUTHBEARER") { return "OAUTHBEARER" }
            if upper.contains("XOAUTH2") { return "XOAUTH2" }
            return nil
        }
        if upper.contains("PLAIN") { return "PLAIN" }
        if credentials.authorizationIdentity == nil, upper.contains("LOGIN") { return "LOGIN" }
        return nil
    }

    /// Builds the named mechanism for these credentials, fetching an OAuth2 token when needed.
    public static func makeMechanism(named name: String, credentials: Credentials, host: String, port: Int,
                                     forceTokenRefresh: Bool = false) async throws -> any SASLMechanism {
        switch (name.uppercased(), credentials.secret) {
        case ("PLAIN", .password(let password)):
            return SASLPlain(authorizationIdentity: credentials.authorizationIdentity,
                             authenticationIdentity: credentials.user, password: password)
        case ("LOGIN", .password(let password)):
            return SASLLogin(user: credentials.user, password: password)
        case ("XOAUTH2", .oauth2(let provider)):
            return SASLXOAuth2(user: credentials.user, token: try await provider.token(forceRefresh: forceTokenRefresh))
        case ("OAUTHBEARER", .oauth2(let provider)):
            return SASLOAuthBearer(user: credentials.authorizationIdentity ?? credentials.user, host: host, port: port,
                                   token: try await provider.token(forceRefresh: forceTokenRefresh))
        default:
            throw MailError(.unsupported, scope: .account,
                            "the SASL mechanism \(name) cannot be used with \(credentials.isOAuth2 ? "an OAuth2 token" : "a password")")
        }
    }
}

extension MailError {
    static func sasl(_ mechanism: String, _ message: String) -> MailError {
        MailError(.protocolViolation, scope: .account, "SASL \(mechanism): \(message)")
    }
}

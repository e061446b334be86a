import MailModel

/// SASL PLAIN (RFC 4616):
///
///     message   = [authzid] UTF8NUL authcid UTF8NUL passwd
///
/// The authorization identity lets an admin or master user act as another mailbox.
public struct SASLPlain: SASLMechanism, CustomStringConvertible {
    public let name = "PLAIN"
    public var authorizationIdentity: String?
    public var authenticationIdentity: String
    private let password: String
    private var sent = false

    public init(authorizationIdentity: String? = nil, authenticationIdentity: String, password: String) {
        self.authorizationIdentity = authorizationIdentity
        self.authenticationIdentity = authenticationIdentity
        self.password = password
    }

    public var message: [UInt8] {
        Array((authorizationIdentity ?? "").utf8) + [0] + Array(authenticationIdentity.utf8) + [0] + Array(password.utf8)
    }

    public func initialResponse() -> [UInt8]? { message }

    public mutating func markInitialResponseSent() { sent = true }

    /// Without SASL-IR the server opens with an empty challenge; the answer is the message.
    public mutating func respond(to challenge: [UInt8]) throws -> SASLStep {
        guard challenge.isEmpty, !sent else {
            throw MailError.sasl(name, "unexpected server challenge")
        }
        sent = true
        return .respond(message)
    }

    public var description: String { "SASL PLAIN for \(authenticationIdentity) <redacted>" }
}

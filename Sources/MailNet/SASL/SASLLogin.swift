import MailModel

/// The non-standard but widespread SASL LOGIN mechanism (draft-murchison-sasl-login):
/// the server prompts `Username:` then `Password:` (base64), the client answers each.
/// Some servers send other prompt texts, so answers go by order, with the prompt text
/// only used when it clearly names one of the two.
public struct SASLLogin: SASLMechanism, CustomStringConvertible {
    public let name = "LOGIN"
    public var user: String
    private let password: String
    private var step = 0

    public init(user: String, password: String) {
        self.user = user
        self.password = password
    }

    public func initialResponse() -> [UInt8]? { nil }

    public mutating func respond(to challenge: [UInt8]) throws -> SASLStep {
        let prompt = String(decoding: challenge, as: UTF8.self).lowercased()
        let wantsPassword: Bool
        if prompt.hasPrefix("password") {
            wantsPassword = true
        } else if prompt.hasPrefix("user") {
            wantsPassword = false
        } else {
            wantsPassword = step >= 1
        }
        step += 1
        guard step <= 2 else { throw MailError.sasl(name, "the server asked for more than a user name and password") }
        return .respond(Array((wantsPassword ? password : user).utf8))
    }

    public var description: String { "SASL LOGIN for \(user) <redacted>" }
}

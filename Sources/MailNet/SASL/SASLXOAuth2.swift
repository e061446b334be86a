import Foundation
import MailModel

/// Google/Microsoft XOAUTH2:
///
///     initial-client-response = "user=" user ^A "auth=Bearer " token ^A ^A
///
/// On failure the server sends a base64 JSON challenge (`{"status":"401",...}`); the
/// client answers with an empty response and the server then sends its failure reply.
/// Office 365 POP3 sends `AUTH XOAUTH2` without an initial response: the server answers
/// with an empty challenge and the client sends the message then.
public struct SASLXOAuth2: SASLMechanism, CustomStringConvertible {
    public let name = "XOAUTH2"
    public var user: String
    private let token: String
    private var sentMessage = false

    public init(user: String, token: String) {
        self.user = user
        self.token = token
    }

    public var message: [UInt8] {
        Array("user=\(user)\u{01}auth=Bearer \(token)\u{01}\u{01}".utf8)
    }

    public func initialResponse() -> [UInt8]? { message }

    /// Call when the initial response was sent with the command (SASL-IR / `AUTH XOAUTH2 ir`).
    public mutating func markInitialResponseSent() { sentMessage = true }

    public mutating func respond(to challenge: [UInt8]) throws -> SASLStep {
        if challenge.isEmpty, !sentMessage {
            sentMessage = true
            return .respond(message)
        }
        let (status, detail) = OAuthErrorChallenge.parse(challenge)
        return .failed(response: [], status: status, detail: detail)
    }

    public var description: String { "SASL XOAUTH2 for \(user) <redacted>" }
}

/// The JSON error a server sends inside an OAuth SASL exchange (RFC 7628 §3.2.2).
enum OAuthErrorChallenge {
    static func parse(_ challenge: [UInt8]) -> (status: String?, detail: String) {
        let text = String(decoding: challenge, as: UTF8.self)
        guard let object = try? JSONSerialization.jsonObject(with: Data(challenge)) as? [String: Any] else {
            return (nil, text)
        }
        let status = object["status"].map { "\($0)" }
        return (status, text)
    }
}

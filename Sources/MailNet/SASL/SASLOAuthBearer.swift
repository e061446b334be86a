import MailModel

/// OAUTHBEARER (RFC 7628 §3.1):
///
///     kvsep          = %x01
///     key            = 1*(ALPHA)
///     value          = *(VCHAR / SP / HTAB / CR / LF )
///     kvpair         = key "=" value kvsep
///     client-resp    = (gs2-header kvsep *kvpair kvsep) / kvsep
///     gs2-header     = gs2-cb-flag "," [ gs2-authzid ] ","   ; RFC 5801, "n,a=user,"
///
/// On failure the server sends a JSON error challenge; the client answers with a single
/// kvsep (%x01) and the server then sends its failure reply (RFC 7628 §3.2.3).
public struct SASLOAuthBearer: SASLMechanism, CustomStringConvertible {
    public let name = "OAUTHBEARER"
    public var user: String?
    public var host: String?
    public var port: Int?
    private let token: String
    private var sentMessage = false

    public init(user: String?, host: String?, port: Int?, token: String) {
        self.user = user
        self.host = host
        self.port = port
        self.token = token
    }

    /// RFC 5801 saslname escaping: "," as "=2C" and "=" as "=3D".
    static func saslName(_ s: String) -> String {
        s.replacingOccurrences(of: "=", with: "=3D").replacingOccurrences(of: ",", with: "=2C")
    }

    public var message: [UInt8] {
        var s = "n,"
        if let user { s += "a=\(Self.saslName(user))" }
        s += ",\u{01}"
        if let host { s += "host=\(host)\u{01}" }
        if let port { s += "port=\(port)\u{01}" }
        s += "auth=Bearer \(token)\u{01}\u{01}"
        return Array(s.utf8)
    }

    public func initialResponse() -> [UInt8]? { message }

    public mutating func markInitialResponseSent() { sentMessage = true }

    public mutating func respond(to challenge: [UInt8]) throws -> SASLStep {
        if challenge.isEmpty, !sentMessage {
            sentMessage = true
            return .respond(message)
        }
        let (status, detail) = OAuthErrorChallenge.parse(challenge)
        return .failed(response: [0x01], status: status, detail: detail)
    }

    public var description: String { "SASL OAUTHBEARER for \(user ?? "-") <redacted>" }
}

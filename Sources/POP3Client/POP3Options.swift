import POP3Core

/// How the POP3 client behaves beyond what `ConnectionSettings` says.
public struct POP3ClientOptions: Sendable, Hashable {
    /// Use RFC 2449 PIPELINING when the server offers it.
    public var pipelining: Bool
    /// Commands kept in flight when pipelining (RETR, TOP, DELE windows).
    public var pipelineWindow: Int
    /// Forces a login method: a SASL mechanism name (`PLAIN`, `LOGIN`,
    /// `XOAUTH2`, `OAUTHBEARER`), `USER` for USER/PASS or `APOP`. nil picks
    /// the best the server offers.
    public var loginMethod: String?
    /// Send the OAuth2 token with `AUTH` (one line). Off by default: Office
    /// 365 only accepts the two-step form (`AUTH XOAUTH2`, `+ `, token), every
    /// server must take it (RFC 5034 §4), and tokens exceed the 255-octet
    /// command limit anyway.
    public var oauth2InitialResponse: Bool
    /// Parser bounds (line lengths).
    public var limits: POP3ParserLimits
    /// Parsed events buffered before socket reads pause (backpressure).
    public var highWatermark: Int

    public init(pipelining: Bool = true, pipelineWindow: Int = 64, loginMethod: String? = nil,
                oauth2InitialResponse: Bool = false, limits: POP3ParserLimits = POP3ParserLimits(),
                highWatermark: Int = 16) {
        self.pipelining = pipelining
        self.pipelineWindow = max(1, pipelineWindow)
        self.loginMethod = loginMethod
        self.oauth2InitialResponse = oauth2InitialResponse
        self.limits = limits
        self.highWatermark = highWatermark
    }
}

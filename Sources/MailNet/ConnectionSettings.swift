import MailModel

/// Where and how to connect: host, port, TLS mode, an optional extra trusted CA,
/// and the deadlines every network wait is held to.
public struct ConnectionSettings: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var tls: TLSMode
    /// A PEM file of extra CA certificates to trust (`--ca-file`), added to the system trust store.
    public var caFile: String?
    /// TCP connect plus (for implicit TLS / STARTTLS) the TLS handshake.
    public var connectTimeout: Duration
    /// How long to wait for any one server reply.
    public var responseTimeout: Duration

    public init(host: String, port: Int, tls: TLSMode, caFile: String? = nil,
                connectTimeout: Duration = .seconds(30), responseTimeout: Duration = .seconds(120)) {
        self.host = host
        self.port = port
        self.tls = tls
        self.caFile = caFile
        self.connectTimeout = connectTimeout
        self.responseTimeout = responseTimeout
    }

    /// The name TLS checks the certificate against: the host, unless it is an IP literal
    /// (then the certificate must carry the address as an IP SAN, and SNI is not sent).
    public var serverHostname: String? {
        MailTLS.isIPAddress(host) ? nil : host
    }

    /// `host:port`, with IPv6 literals in brackets.
    public var endpoint: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    public var description: String { "\(endpoint) (tls: \(tls.rawValue))" }
}

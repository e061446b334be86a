import MailModel
import NIOCore
import NIOPosix
import NIOSSL
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Turns NIO, NIOSSL and socket errors into `MailError`s that name the host and say
/// whether trying again can help. A `MailError` passes through unchanged.
public enum MailNetErrors {
    public static let caFileHint = "pass --ca-file PEM to trust a private CA"

    public static func map(_ error: Error, settings: ConnectionSettings, during what: String) -> MailError {
        map(error, host: settings.host, port: settings.port, during: what)
    }

    public static func map(_ error: Error, host: String, port: Int, during what: String) -> MailError {
        let endpoint = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        func connection(_ message: String, retryable: Bool = true, hint: String? = nil) -> MailError {
            MailError(.connection, scope: .account, retryable: retryable, message, hint: hint)
        }
        func tls(_ message: String, hint: String? = nil) -> MailError {
            MailError(.tls, scope: .account, retryable: false, message, hint: hint)
        }

        if let error = error as? MailError { return error }
        if error is CancellationError {
            return MailError(.cancelled, scope: .account, "cancelled while \(what) with \(endpoint)")
        }
        if let error = error as? NIOConnectionError {
            if let first = error.connectionErrors.first {
                return map(first.error, host: host, port: port, during: what)
            }
            if error.dnsAError != nil || error.dnsAAAAError != nil {
                return connection("cannot resolve the host name \(host)", retryable: true,
                                  hint: "check the host name and the network")
            }
            return connection("cannot connect to \(endpoint)")
        }
        if let error = error as? IOError {
            return mapErrno(error.errnoCode, endpoint: endpoint, what: what)
        }
        if let error = error as? ChannelError {
            switch error {
            case .connectTimeout(let t):
                return connection("connecting to \(endpoint) timed out after \(t.nanoseconds / 1_000_000) ms",
                                  hint: "check the host, port and firewall")
            case .ioOnClosedChannel, .alreadyClosed, .eof, .outputClosed, .inputClosed:
                return connection("\(host) closed the connection during \(what)")
            default:
                return connection("connection to \(endpoint) failed during \(what): \(error)")
            }
        }
        if let error = error as? NIOSSLExtraError, error == .failedToValidateHostname {
            return tls("the TLS certificate of \(host) does not name \(host)",
                       hint: "connect using a host name the certificate carries, or fix the server's certificate")
        }
        if let error = error as? NIOSSLError {
            switch error {
            case .handshakeFailed(let boring):
                let text = "\(boring)"
                if text.contains("CERTIFICATE_VERIFY_FAILED") {
                    return tls("the TLS certificate of \(host) is not trusted (\(certificateReason(text)))",
                               hint: caFileHint)
                }
                if text.contains("EOF during handshake") {
                    return connection("\(host) closed the connection during the TLS handshake")
                }
                if text.contains("WRONG_VERSION_NUMBER") || text.contains("PACKET_LENGTH_TOO_LONG") {
                    return tls("\(endpoint) did not answer with TLS",
                               hint: "the port may expect plaintext/STARTTLS; check --tls and the port")
                }
                return tls("TLS handshake with \(endpoint) failed: \(text)")
            case .uncleanShutdown:
                return connection("\(host) closed the connection without a TLS close during \(what)")
            case .unableToValidateCertificate:
                return tls("the TLS certificate of \(host) could not be checked", hint: caFileHint)
            default:
                return tls("TLS with \(endpoint) failed during \(what): \(error)")
            }
        }
        if let error = error as? BoringSSLError {
            return tls("TLS with \(endpoint) failed during \(what): \(error)")
        }
        return connection("connection to \(endpoint) failed during \(what): \(error)")
    }

    static func mapErrno(_ code: Int32, endpoint: String, what: String) -> MailError {
        func connection(_ message: String, retryable: Bool = true, hint: String? = nil) -> MailError {
            MailError(.connection, scope: .account, retryable: retryable, message, hint: hint)
        }
        switch code {
        case ECONNREFUSED:
            return connection("\(endpoint) refused the connection", hint: "check the host and port, and that the server runs")
        case EHOSTUNREACH, ENETUNREACH, EHOSTDOWN, ENETDOWN:
            return connection("\(endpoint) is unreachable", hint: "check the network and the host name")
        case ETIMEDOUT:
            return connection("connection to \(endpoint) timed out")
        case ECONNRESET, EPIPE, ECONNABORTED:
            return connection("\(endpoint) reset the connection during \(what)")
        case EACCES, EPERM:
            return connection("not allowed to connect to \(endpoint)", retryable: false)
        default:
            return connection("connection to \(endpoint) failed during \(what): \(String(cString: strerror(code)))")
        }
    }

    private static func certificateReason(_ text: String) -> String {
        // BoringSSL packs the X509 verify result into the reason text when it can.
        for reason in ["self signed certificate in certificate chain", "self-signed certificate",
                       "self signed certificate", "unable to get local issuer certificate",
                       "certificate has expired", "certificate is not yet valid", "hostname mismatch"]
            where text.localizedCaseInsensitiveContains(reason) {
            return reason
        }
        return "certificate verify failed"
    }
}

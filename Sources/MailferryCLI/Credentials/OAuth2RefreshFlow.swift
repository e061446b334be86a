import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import MailModel

/// The OAuth2 refresh-token grant (RFC 6749 §6): trades a long-lived refresh
/// token for a short-lived access token at the provider's token endpoint.
/// Neither token is ever logged; errors carry the endpoint and the provider's
/// `error` code only.
struct OAuth2RefreshFlow: Sendable {
    let config: OAuth2RefreshConfig
    let session: URLSession?
    /// Deadline for one token request.
    var timeout: TimeInterval = 30

    init(config: OAuth2RefreshConfig, session: URLSession? = nil) {
        self.config = config
        self.session = session
    }

    private struct TokenResponse: Decodable {
        var access_token: String?
        var expires_in: Double?
        var token_type: String?
        var error: String?
        var error_description: String?
    }

    /// Fetches a fresh access token and its lifetime in seconds, if given.
    func fetch() async throws -> (token: String, expiresIn: TimeInterval?) {
        let endpoint = config.tokenEndpoint
        let host = endpoint.host ?? ""
        let loopback = host == "localhost" || host == "127.0.0.1" || host == "::1" || host == "[::1]"
        guard endpoint.scheme == "https" || (endpoint.scheme == "http" && loopback) else {
            throw MailError(.usage, scope: .local,
                            "the OAuth2 token endpoint \(endpoint.absoluteString) must use https",
                            hint: "plain http is accepted only for localhost")
        }
        let refresh = try await CredentialResolver.read(config.refreshToken, what: "the OAuth2 refresh token")
        var fields: [(String, String)] = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", config.clientID),
        ]
        if let cs = config.clientSecret {
            fields.append(("client_secret", try await CredentialResolver.read(cs, what: "the OAuth2 client secret")))
        }
        if let scope = config.scope { fields.append(("scope", scope)) }

        var request = URLRequest(url: endpoint, cachePolicy: .reloadIgnoringLocalCacheData, timeoutInterval: timeout)
        request.httpMethod = "POST"
        request.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        request.httpBody = Data(OAuth2RefreshFlow.formEncode(fields).utf8)

        let session = self.session ?? URLSession(configuration: .ephemeral)
        let data: Data, response: URLResponse
        do {
            (data, response) = try await session.data(for: request)
        } catch {
            throw MailError(.connection, scope: .account, retryable: true,
                            "cannot reach the OAuth2 token endpoint \(endpoint.absoluteString): \(error.localizedDescription)")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        let body = try? JSONDecoder().decode(TokenResponse.self, from: data)
        if let token = body?.access_token, !token.isEmpty, (200..<300).contains(status) {
            SecretRedactor.shared.register(token)
            return (token, body?.expires_in)
        }
        // RFC 6749 §5.2: invalid_grant means the refresh token is expired or revoked.
        let code = body?.error ?? "HTTP \(status)"
        let kind: MailError.Kind = (status == 400 || status == 401 || code == "invalid_grant" || code == "invalid_client")
            ? .authentication : .connection
        throw MailError(kind, scope: .account,
                        "the OAuth2 token endpoint \(endpoint.absoluteString) refused the refresh (\(SecretRedactor.shared.redact(code)))",
                        hint: code == "invalid_grant" ? "the refresh token is expired or revoked; authorise mailferry again and store the new refresh token" : nil)
    }

    /// application/x-www-form-urlencoded (WHATWG URL §5.2).
    static func formEncode(_ fields: [(String, String)]) -> String {
        let allowed = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._*")
        func enc(_ s: String) -> String {
            (s.addingPercentEncoding(withAllowedCharacters: allowed) ?? "").replacingOccurrences(of: "%20", with: "+")
        }
        return fields.map { "\(enc($0.0))=\(enc($0.1))" }.joined(separator: "&")
    }
}

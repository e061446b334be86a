import Foundation
import Testing
@testable import MailferryCLI
import MailModel

/// The built-in refresh-token grant against a local stub token endpoint.
@Suite struct OAuth2RefreshTests {
    @Test func exchangesTheRefreshTokenAndRefreshesWhenForced() async throws {
        let issued = Counter()
        let server = try await StubHTTPServer { req in
            guard req.form["grant_type"] == "refresh_token", req.form["refresh_token"] == "rt-distinctive-7731",
                  req.form["client_id"] == "mailferry-test", req.form["client_secret"] == "cs-distinctive-5512" else {
                return (400, #"{"error":"invalid_grant"}"#)
            }
            return (200, #"{"access_token":"at-\#(issued.next())","token_type":"Bearer","expires_in":3600}"#)
        }
        let dir = try TempDir()
        let rt = try dir.write("refresh", "rt-distinctive-7731\n")
        let cs = try dir.write("client-secret", "cs-distinctive-5512\n")
        let spec = LoginSpec(secret: .oauth2Refresh(OAuth2RefreshConfig(
            tokenEndpoint: URL(string: server.url)!, clientID: "mailferry-test", clientSecret: .file(cs), refreshToken: .file(rt))))
        let login = try await CredentialResolver.resolve(spec, account: .init(user: "alice", host: "h", port: 993, tls: .implicit), side: .to)
        guard case .oauth2(let provider) = login.secret else { Issue.record("not oauth2"); await server.shutdown(); return }
        #expect(try await provider(false) == "at-1")
        #expect(try await provider(false) == "at-1", "cached while valid")
        #expect(try await provider(true) == "at-2", "refreshed when the server refused the token")
        #expect(server.requests.count == 2)
        #expect(server.requests.first?.method == "POST")
        #expect(server.requests.first?.headers["content-type"] == "application/x-www-form-urlencoded")
        // The secrets involved are known to the redactor.
        #expect(SecretRedactor.shared.redact("rt-distinctive-7731 cs-distinctive-5512 at-2") == "*** *** ***")
        await server.shutdown()
    }

    @Test func invalidGrantIsAnAuthenticationErrorWithTheFix() async throws {
        let server = try await StubHTTPServer { _ in (400, #"{"error":"invalid_grant","error_description":"expired"}"#) }
        let dir = try TempDir()
        let rt = try dir.write("refresh", "rt-old\n")
        let flow = OAuth2RefreshFlow(config: OAuth2RefreshConfig(tokenEndpoint: URL(string: server.url)!, clientID: "c", refreshToken: .file(rt)))
        do {
            _ = try await flow.fetch()
            Issue.record("accepted a refused refresh")
        } catch let e as MailError {
            #expect(e.kind == .authentication)
            #expect(e.exitCode == 3)
            #expect(e.description.contains("invalid_grant"))
            #expect(e.description.contains("refresh token is expired or revoked"))
        }
        await server.shutdown()
    }

    @Test func plainHTTPIsRefusedExceptOnLoopback() async throws {
        let flow = OAuth2RefreshFlow(config: OAuth2RefreshConfig(tokenEndpoint: URL(string: "http://login.example.com/token")!,
                                                                 clientID: "c", refreshToken: .environment("X")))
        await #expect(throws: MailError.self) { _ = try await flow.fetch() }
    }

    @Test func unreachableEndpointIsAConnectionError() async throws {
        let dir = try TempDir()
        let rt = try dir.write("refresh", "rt\n")
        let flow = OAuth2RefreshFlow(config: OAuth2RefreshConfig(tokenEndpoint: URL(string: "http://127.0.0.1:1/token")!,
                                                                 clientID: "c", refreshToken: .file(rt)))
        do {
            _ = try await flow.fetch()
            Issue.record("reached port 1")
        } catch let e as MailError {
            #expect(e.kind == .connection)
        }
    }

    @Test func formEncoding() {
        #expect(OAuth2RefreshFlow.formEncode([("a b", "c&d=e"), ("x", "é/+")]) == "a+b=c%26d%3De&x=%C3%A9%2F%2B")
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func next() -> Int {
        lock.lock()
        defer { lock.unlock() }
        n += 1
        return n
    }
}

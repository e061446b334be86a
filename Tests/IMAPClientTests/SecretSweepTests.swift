import Foundation
import IMAPClient
import Logging
import MailModel
import MailNet
import MailTestSupport
import NIOConcurrencyHelpers
import Testing

/// Issue 9: the password and its SASL encodings never reach a log (at trace
/// level), an error message or a hint, whichever way the login goes.
@Suite(.serialized)
struct SecretSweepTests {
    static let password = "Sw33p-s3cret-pw"
    /// base64("\0alice\0Sw33p-s3cret-pw"), what AUTHENTICATE PLAIN sends.
    static let plainBlob = Data("\u{0}alice\u{0}\(password)".utf8).base64EncodedString()

    func forbidden(_ text: String) -> [String] {
        [Self.password, Self.plainBlob, String(Self.plainBlob.dropLast(4))].filter { text.contains($0) }
    }

    @Test(arguments: ["IMAP4rev1", "IMAP4rev1 SASL-IR AUTH=PLAIN"])
    func refusedLoginLeaksNothing(_ caps: String) async throws {
        let server = try await ScriptedServer.start([
            .sendLine("* OK [CAPABILITY \(caps)] ready"),
            .skipLinesUntil(#"\S+ (LOGIN|AUTHENTICATE)"#),
            .sendLine("$tag NO [AUTHENTICATIONFAILED] Invalid credentials"),
            .stall,
        ])
        defer { Task { await server.stop() } }
        let capture = LogCapture()
        let settings = ConnectionSettings(host: server.host, port: server.port, tls: .none,
                                          connectTimeout: .seconds(5), responseTimeout: .seconds(5))
        var errorText = ""
        do {
            _ = try await IMAPConnection.connect(settings: settings, credentials: .password(user: "alice", Self.password),
                                                 logger: capture.logger(label: "sweep"))
            Issue.record("the login should have been refused")
        } catch let e as MailError {
            errorText = "\(e) \(e.message) \(e.hint ?? "") \(String(reflecting: e))"
            #expect(e.kind == .authentication)
        }
        // The server did get the secret (so the sweep is not vacuous)...
        #expect(server.received.joined().contains { $0.contains(Self.password) || $0.contains(Self.plainBlob) })
        // ...but mailferry's logs and errors do not carry it.
        #expect(forbidden(capture.all).isEmpty, "log leaks: \(forbidden(capture.all))")
        let credentialsText = "\(Credentials.password(user: "alice", Self.password)) \(String(reflecting: Credentials.password(user: "alice", Self.password)))"
        #expect(forbidden(credentialsText).isEmpty, "Credentials description leaks")
        #expect(forbidden(errorText).isEmpty, "error leaks: \(errorText)")
    }
}

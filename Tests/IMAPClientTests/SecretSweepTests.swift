import Foundation
import IMAPClient
import Logging
import MailModel
import MailNet
import MailTestSupport
import NIOConcurrencyHelpers
import Testing

/// Captures every log record (message and metadata) at trace level.
final class SweepLogCapture: Sendable {
    let lines = NIOLockedValueBox<[String]>([])
    var logger: Logger {
        var l = Logger(label: "sweep") { _ in SweepHandler(capture: self) }
        l.logLevel = .trace
        return l
    }
    var all: String { lines.withLockedValue { $0.joined(separator: "\n") } }
}

struct SweepHandler: LogHandler {
    let capture: SweepLogCapture
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
             file: String, function: String, line: UInt) {
        let m = self.metadata.merging(metadata ?? [:]) { $1 }
        capture.lines.withLockedValue { $0.append("\(level) \(message) \(m)") }
    }
}

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
        let capture = SweepLogCapture()
        let settings = ConnectionSettings(host: server.host, port: server.port, tls: .none,
                                          connectTimeout: .seconds(5), responseTimeout: .seconds(5))
        var errorText = ""
        do {
            _ = try await IMAPConnection.connect(settings: settings, credentials: .password(user: "alice", Self.password),
                                                 logger: capture.logger)
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

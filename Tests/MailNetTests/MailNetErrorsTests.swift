import Foundation
import MailModel
@testable import MailNet
import NIOCore
import NIOSSL
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct MailNetErrorsTests {
    let settings = ConnectionSettings(host: "mail.example.org", port: 993, tls: .implicit)

    @Test func socketErrorsAreRetryableConnectionErrorsNamingTheEndpoint() {
        for code in [ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, ETIMEDOUT, ECONNRESET] {
            let e = MailNetErrors.map(IOError(errnoCode: code, reason: "connect"), settings: settings, during: "connect")
            #expect(e.kind == .connection)
            #expect(e.retryable)
            #expect(e.scope == .account)
            #expect(e.message.contains("mail.example.org:993"))
        }
    }

    @Test func timeoutsAndClosesAreRetryable() {
        let timeout = MailNetErrors.map(ChannelError.connectTimeout(.seconds(3)), settings: settings, during: "connect")
        #expect(timeout.kind == .connection && timeout.retryable)
        let eof = MailNetErrors.map(ChannelError.eof, settings: settings, during: "LOGIN")
        #expect(eof.kind == .connection && eof.retryable && eof.message.contains("LOGIN"))
        let unclean = MailNetErrors.map(NIOSSLError.uncleanShutdown, settings: settings, during: "FETCH")
        #expect(unclean.kind == .connection && unclean.retryable)
    }

    @Test func mailErrorsPassThroughAndCancellationIsCancelled() {
        let original = MailError(.authentication, scope: .account, "nope")
        #expect(MailNetErrors.map(original, settings: settings, during: "x") == original)
        #expect(MailNetErrors.map(CancellationError(), settings: settings, during: "x").kind == .cancelled)
    }

    @Test func settingsAndDurations() {
        #expect(settings.endpoint == "mail.example.org:993")
        #expect(settings.serverHostname == "mail.example.org")
        let v6 = ConnectionSettings(host: "::1", port: 143, tls: .startTLS)
        #expect(v6.endpoint == "[::1]:143")
        #expect(v6.serverHostname == nil)
        #expect(ConnectionSettings(host: "127.0.0.1", port: 1, tls: .none).serverHostname == nil)
        #expect(Duration.milliseconds(1500).timeAmount == .milliseconds(1500))
        #expect(Duration.seconds(-1).timeAmount == .zero)
        #expect(settings.responseTimeout == .seconds(120))
        #expect(settings.connectTimeout == .seconds(30))
    }

    @Test func unreadableCAFileIsAUsageError() {
        #expect(throws: MailError.self) { _ = try MailTLS.makeClientContext(caFile: "/nonexistent/ca.pem") }
        let notPEM = FileManager.default.temporaryDirectory.appendingPathComponent("not-a-ca-\(UUID().uuidString).pem").path
        _ = FileManager.default.createFile(atPath: notPEM, contents: Data("hello".utf8))
        defer { try? FileManager.default.removeItem(atPath: notPEM) }
        let error = #expect(throws: MailError.self) { _ = try MailTLS.makeClientContext(caFile: notPEM) }
        #expect(error?.kind == .usage)
    }

    @Test func withDeadlinePassesResultsAndErrorsThrough() async throws {
        let value = try await withDeadline(.seconds(5), host: "h", waitingFor: "x") { 42 }
        #expect(value == 42)
        await #expect(throws: MailError.self) {
            _ = try await withDeadline(.seconds(5), host: "h", waitingFor: "x") { () async throws -> Int in
                throw MailError(.refused, scope: .message, "no")
            }
        }
        // An operation that ignores cancellation still lets the caller go at the deadline.
        let started = ContinuousClock.now
        await #expect(throws: MailError.self) {
            _ = try await withDeadline(.milliseconds(50), host: "h", waitingFor: "x") { () async -> Int in
                let end = ContinuousClock.now + .milliseconds(400)
                while ContinuousClock.now < end { try? await Task.sleep(for: .milliseconds(10)) }
                return 1
            }
        }
        #expect(ContinuousClock.now - started < .milliseconds(350))
    }
}

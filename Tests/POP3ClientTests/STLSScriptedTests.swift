import Logging
import MailModel
import MailNet
import MailTestSupport
import Testing
@testable import POP3Client

/// STLS against net's ScriptedServer, which can start real TLS mid-script.
@Suite(.serialized, .enabled(if: DovecotFixture.serverTestsEnabled))
struct STLSScriptedTests {
    @Test func plaintextInjectedAfterSTLSIsIgnored() async throws {
        let f = try DovecotFixture.shared()
        let server = try await ScriptedServer.start([
            .sendLine("+OK ready"),
            .expectLine("CAPA"),
            .sendLines("+OK\nSTLS\nUSER\nUIDL\n.\n"),
            .expectLine("STLS"),
            // A man in the middle appends a reply in plaintext: it must never be read.
            .send("+OK Begin TLS\r\n-ERR injected\r\n"),
            .startTLS,
            .expectLine("CAPA"),
            .sendLines("+OK\nUSER\nUIDL\n.\n"),
            .expectLine("USER alice"),
            .sendLine("+OK"),
            .expectLine("PASS "),
            .sendLine("+OK logged in"),
            .expectLine("CAPA"),
            .sendLines("+OK\nUSER\nUIDL\n.\n"),
            .expectLine("STAT"),
            .sendLine("+OK 0 0"),
            .expectLine("QUIT"),
            .sendLine("+OK bye"),
            .close,
        ], tls: .fixture(f, implicit: false))
        let settings = ConnectionSettings(host: "127.0.0.1", port: server.port, tls: .startTLS, caFile: f.caFile,
                                          connectTimeout: .seconds(10), responseTimeout: .seconds(10))
        let count = try await POP3Connection.withConnection(settings: settings, credentials: .password(user: "alice", "pw"),
                                                            logger: testLogger) { c in
            try await c.stat().count
        }
        #expect(count == 0)
        #expect(server.failures.isEmpty, "\(server.failures)")
        await server.stop()
    }

    @Test func endlessGreetingLineFailsWithBoundedMemory() async throws {
        let server = try await ScriptedServer.start([
            .send("+OK "),
            .sendRepeated(Array(repeating: UInt8(ascii: "x"), count: 4096), count: 4096), // 16 MB, no line end
            .stall,
        ])
        let settings = ConnectionSettings(host: "127.0.0.1", port: server.port, tls: .none,
                                          connectTimeout: .seconds(5), responseTimeout: .seconds(10))
        await #expect {
            _ = try await POP3Connection.connect(settings: settings, credentials: .password(user: "alice", "pw"), logger: testLogger)
        } throws: { e in
            guard let e = e as? MailError else { return false }
            return e.kind == .protocolViolation && e.message.contains("longer than")
        }
        await server.stop()
    }

    @Test func stlsNotOfferedIsRefusedBeforeAnyPassword() async throws {
        let server = try await ScriptedServer.start([
            .sendLine("+OK ready"),
            .expectLine("CAPA"),
            .sendLines("+OK\nUSER\nUIDL\n.\n"),
            .stall,
        ])
        let settings = ConnectionSettings(host: "127.0.0.1", port: server.port, tls: .startTLS,
                                          connectTimeout: .seconds(5), responseTimeout: .seconds(5))
        await #expect {
            _ = try await POP3Connection.connect(settings: settings, credentials: .password(user: "alice", "pw"), logger: testLogger)
        } throws: { e in
            guard let e = e as? MailError else { return false }
            return e.kind == .tls && e.message.contains("does not offer STLS")
        }
        #expect(!server.received.joined().contains { $0.hasPrefix("PASS") || $0.hasPrefix("USER") })
        await server.stop()
    }
}

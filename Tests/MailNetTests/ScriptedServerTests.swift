import Foundation
import Logging
import MailModel
import MailNet
import MailTestSupport
import NIOCore
import Testing

@Suite struct ScriptedServerTests {
    @Test func playsAScriptAndAnswersWithTheClientsTag() async throws {
        let server = try await ScriptedServer.start([
            .sendLine("* OK scripted"),
            .expectLine(#"\S+ LOGIN "#),
            .sendLine("$tag NO [AUTHENTICATIONFAILED] nope"),
            .expectLine(#"\S+ LOGOUT"#),
            .sendLine("* BYE"),
            .close,
        ])
        let client = try await LineClient.connect(ConnectionSettings(host: server.host, port: server.port, tls: .none))
        #expect(try await client.line() == "* OK scripted")
        #expect(try await client.command("x7 LOGIN a b", until: "x7 ") == ["x7 NO [AUTHENTICATIONFAILED] nope"])
        #expect(try await client.command("x8 LOGOUT", until: "* BYE") == ["* BYE"])
        await #expect(throws: MailError.self) { _ = try await client.line() }
        #expect(server.failures.isEmpty)
        #expect(server.received == [["x7 LOGIN a b", "x8 LOGOUT"]])
        await client.close()
        await server.stop()
    }

    @Test func recordsAMismatch() async throws {
        let server = try await ScriptedServer.start([.sendLine("+OK"), .expectLine("USER "), .sendLine("+OK")])
        let client = try await LineClient.connect(ConnectionSettings(host: server.host, port: server.port, tls: .none))
        _ = try await client.line()
        try await client.send("PASS x")
        await #expect(throws: MailError.self) { _ = try await client.line() }
        #expect(server.failures.count == 1)
        await client.close()
        await server.stop()
    }

    @Test func stallMakesTheDeadlineFire() async throws {
        let server = try await ScriptedServer.start([.stall])
        let client = try await LineClient.connect(ConnectionSettings(host: server.host, port: server.port, tls: .none))
        let collector = client.collector
        let error = await #expect(throws: MailError.self) {
            _ = try await withDeadline(.milliseconds(200), host: server.host, waitingFor: "the greeting") {
                await collector.line()
            }
        }
        #expect(error?.kind == .connection)
        #expect(error?.retryable == true)
        #expect(error?.message.contains("127.0.0.1") == true)
        #expect(error?.message.contains("the greeting") == true)
        await client.close()
        await server.stop()
    }

    @Test func futureDeadlineClosesTheChannel() async throws {
        let server = try await ScriptedServer.start([.stall])
        let client = try await LineClient.connect(ConnectionSettings(host: server.host, port: server.port, tls: .none))
        let never = client.channel.eventLoop.makePromise(of: Void.self)
        let error = await #expect(throws: MailError.self) {
            try await never.futureResult.withDeadline(.milliseconds(100), host: server.host, waitingFor: "a reply",
                                                      closing: client.channel).get()
        }
        #expect(error?.kind == .connection)
        try await client.channel.closeFuture.get()
        never.succeed()
        await server.stop()
    }

    @Test func perConnectionScriptsAndDrops() async throws {
        let server = try await ScriptedServer.start { n in
            n == 0 ? [.send("+OK first\r\n+OK partial"), .close] : [.sendLine("+OK second")]
        }
        let settings = ConnectionSettings(host: server.host, port: server.port, tls: .none)
        let first = try await LineClient.connect(settings)
        #expect(try await first.line() == "+OK first")
        await #expect(throws: MailError.self) { _ = try await first.line() }  // dropped mid-line
        let second = try await LineClient.connect(settings)
        #expect(try await second.line() == "+OK second")
        #expect(server.connectionCount == 2)
        await first.close()
        await second.close()
        await server.stop()
    }

    @Test func implicitTLSAndCertificateForAnotherHost() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mf-certs-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = try TestCertificates.make(in: dir + "/good")
        let other = try TestCertificates.make(in: dir + "/other", commonName: "mail.example.org",
                                              hostNames: ["mail.example.org"], ipAddresses: [])
        let server = try await ScriptedServer.start([.sendLine("* OK tls")], tls: ServerTLS(good, implicit: true))
        let client = try await LineClient.connect(ConnectionSettings(host: "localhost", port: server.port, tls: .implicit,
                                                                     caFile: good.caFile))
        #expect(try await client.line() == "* OK tls")
        await client.close()
        await server.stop()

        let wrongHost = try await ScriptedServer.start([.sendLine("* OK tls")], tls: ServerTLS(other, implicit: true))
        let error = await #expect(throws: MailError.self) {
            _ = try await LineClient.connect(ConnectionSettings(host: "localhost", port: wrongHost.port, tls: .implicit,
                                                                caFile: other.caFile))
        }
        #expect(error?.kind == .tls)
        #expect(error?.message.contains("localhost") == true)
        #expect(error?.retryable == false)
        await wrongHost.stop()
    }

    @Test func startTLSDiscardsInjectedPlaintext() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mf-certs-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let certs = try TestCertificates.make(in: dir)
        // The server answers STARTTLS and injects a fake tagged reply before the handshake.
        let server = try await ScriptedServer.start([
            .sendLine("* OK ready"),
            .expectLine(#"\S+ STARTTLS"#),
            .send("$tag OK begin TLS\r\n* INJECTED plaintext\r\n"),
            .startTLS,
            .expectLine(#"\S+ NOOP"#),
            .sendLine("$tag OK over TLS"),
        ], tls: ServerTLS(certs, implicit: false))
        let client = try await LineClient.connect(ConnectionSettings(host: "localhost", port: server.port, tls: .startTLS,
                                                                     caFile: certs.caFile))
        _ = try await client.line()
        #expect(try await client.command("s1 STARTTLS", until: "s1 ") == ["s1 OK begin TLS"])
        try await Task.sleep(for: .milliseconds(50))  // let the injected line arrive
        try await client.startTLS()  // discards it, then handshakes
        #expect(try await client.command("s2 NOOP", until: "s2 ") == ["s2 OK over TLS"])
        #expect(server.failures.isEmpty)
        await client.close()
        await server.stop()
    }

    @Test func floodsAndTrickles() async throws {
        let server = try await ScriptedServer.start([
            .sendRepeated(Array("* 1 EXISTS\r\n".utf8), count: 1000),
            .trickle(Array("+OK slow\r\n".utf8), chunkSize: 2, interval: .milliseconds(5)),
        ])
        let client = try await LineClient.connect(ConnectionSettings(host: server.host, port: server.port, tls: .none))
        for _ in 0..<1000 { #expect(try await client.line() == "* 1 EXISTS") }
        #expect(try await client.line() == "+OK slow")
        await client.close()
        await server.stop()
    }
}

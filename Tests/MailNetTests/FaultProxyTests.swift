import Foundation
import MailModel
import MailNet
import MailTestSupport
import Testing

@Suite(.enabled(if: DovecotFixture.serverTestsEnabled, "MAILFERRY_SKIP_SERVER_TESTS=1"))
struct FaultProxyTests {
    func plain(_ proxy: FaultProxy) -> ConnectionSettings {
        ConnectionSettings(host: proxy.host, port: proxy.port, tls: .none, connectTimeout: .seconds(5))
    }

    @Test func passesAPOP3SessionThroughWithLatencyAndTLS() async throws {
        let fixture = try DovecotFixture.shared()
        let account = fixture.makeUser(prefix: "proxy")
        let text = "Subject: via proxy\r\n\r\nhello\r\n"
        try fixture.seed(user: account.user, messages: [SeedMessage(text: text)])
        let proxy = try await FaultProxy.start(upstreamPort: fixture.pop3sPort, faults: [.latency(oneWay: .milliseconds(10))])
        let client = try await LineClient.connect(ConnectionSettings(host: "localhost", port: proxy.port, tls: .implicit,
                                                                     caFile: fixture.caFile))
        let started = ContinuousClock.now
        #expect(try await client.line().hasPrefix("+OK"))
        #expect(try await client.command("USER \(account.user)", until: "").last?.hasPrefix("+OK") == true)
        #expect(try await client.command("PASS \(account.password)", until: "").last?.hasPrefix("+OK") == true)
        let retr = try await client.command("RETR 1", until: ".")
        #expect(retr.contains("Subject: via proxy"))
        #expect(ContinuousClock.now - started >= .milliseconds(60))  // at least three round trips of 20 ms
        await client.close()
        let stats = proxy.statistics
        #expect(stats.connections == 1)
        #expect(stats.bytesToServer > 0 && stats.bytesToClient > 0)
        #expect(stats.faultsInjected == 0)
        await proxy.stop()
    }

    @Test(arguments: [1, 10, 25])
    func cutsAfterExactlyNBytesToTheClient(_ n: Int) async throws {
        let fixture = try DovecotFixture.shared()
        let proxy = try await FaultProxy.start(upstreamPort: fixture.pop3Port, faults: [.cutAfter(bytes: n, direction: .toClient)])
        let client = try await LineClient.connect(plain(proxy))
        await #expect(throws: MailError.self) { _ = try await client.line() }  // EOF before the greeting ends
        #expect(client.collector.discardBuffered() == n)
        #expect(proxy.statistics.faultsInjected == 1)
        #expect(proxy.statistics.bytesToClient == n)
        await client.close()
        await proxy.stop()
    }

    @Test func cutsTheClientsCommandMidway() async throws {
        let fixture = try DovecotFixture.shared()
        let proxy = try await FaultProxy.start(upstreamPort: fixture.imapPort, faults: [.cutAfter(bytes: 5, direction: .toServer)])
        let client = try await LineClient.connect(plain(proxy))
        #expect(try await client.line().hasPrefix("* OK"))
        try await client.send("a1 NOOP")
        await #expect(throws: MailError.self) { _ = try await client.line() }
        #expect(proxy.statistics.bytesToServer == 5)
        await client.close()
        await proxy.stop()
    }

    @Test func corruptsOneByte() async throws {
        let fixture = try DovecotFixture.shared()
        let proxy = try await FaultProxy.start(upstreamPort: fixture.pop3Port,
                                               faults: [.corrupt(byte: 0, direction: .toClient, mask: 0x20)])
        let client = try await LineClient.connect(plain(proxy))
        let greeting = try await client.line()
        #expect(greeting.hasPrefix("\u{0B}OK"))  // "+" (0x2B) xor 0x20
        await client.close()
        await proxy.stop()
    }

    @Test func stallMakesTheClientDeadlineFire() async throws {
        let fixture = try DovecotFixture.shared()
        let proxy = try await FaultProxy.start(upstreamPort: fixture.pop3Port, faults: [.stallAfter(bytes: 0, direction: .toClient)])
        let client = try await LineClient.connect(plain(proxy))
        let collector = client.collector
        let error = await #expect(throws: MailError.self) {
            _ = try await withDeadline(.milliseconds(300), host: proxy.host, waitingFor: "the greeting") { await collector.line() }
        }
        #expect(error?.kind == .connection && error?.retryable == true)
        await client.close()
        await proxy.stop()
    }

    @Test func tricklesButDeliversEverything() async throws {
        let fixture = try DovecotFixture.shared()
        let proxy = try await FaultProxy.start(upstreamPort: fixture.pop3Port,
                                               faults: [.trickle(bytesPerChunk: 4, interval: .milliseconds(5), direction: .toClient)])
        let client = try await LineClient.connect(plain(proxy))
        #expect(try await client.line().hasPrefix("+OK Dovecot"))
        await client.close()
        await proxy.stop()
    }

    @Test func refusesForAWhileThenAccepts() async throws {
        let fixture = try DovecotFixture.shared()
        let proxy = try await FaultProxy.start(upstreamPort: fixture.pop3Port)
        proxy.refuseConnections(for: .milliseconds(300))
        let refused = try? await LineClient.connect(plain(proxy))
        if let refused {
            // The TCP connect may complete before the reset arrives; then the first read fails.
            await #expect(throws: MailError.self) { _ = try await refused.line() }
            await refused.close()
        }
        try await Task.sleep(for: .milliseconds(400))
        let client = try await LineClient.connect(plain(proxy))
        #expect(try await client.line().hasPrefix("+OK"))
        #expect(proxy.statistics.refused == 1)
        await client.close()
        await proxy.stop()
    }

    @Test func seededPlansAreReproducibleAndBounded() {
        let a = FaultProxy.seededCuts(seed: 42, faultyConnections: 20, maxOffset: 5000)
        let b = FaultProxy.seededCuts(seed: 42, faultyConnections: 20, maxOffset: 5000)
        let c = FaultProxy.seededCuts(seed: 43, faultyConnections: 20, maxOffset: 5000)
        let planA = (0..<25).map { a($0) }
        #expect(planA == (0..<25).map { b($0) })
        #expect(planA != (0..<25).map { c($0) })
        #expect(planA[20...].allSatisfy { $0.isEmpty })
        for faults in planA[..<20] {
            guard case .cutAfter(let n, _) = faults.first else {
                Issue.record("expected a cut")
                continue
            }
            #expect((1...5000).contains(n))
        }
    }
}

import Foundation
import MailModel
@testable import MailStore
import Testing

/// A store's confirmation wait may send again (IMAP re-sends a message
/// refused for its keywords) and its reply can be read only once, so a
/// `PendingAppend` waits once and every caller gets that outcome.
struct PendingAppendTests {
    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var n = 0
        func bump() { lock.withLock { n += 1 } }
        var value: Int { lock.withLock { n } }
    }

    static func result(_ n: Int) -> AppendResult {
        AppendResult(id: MessageID("\(n)"), key: MessageKey.of(Array("m\(n)".utf8)), size: 2)
    }

    @Test func aSecondCallGetsTheFirstOutcomeWithoutWaitingAgain() async throws {
        let runs = Counter()
        let p = PendingAppend {
            runs.bump()
            return Self.result(runs.value)
        }
        let a = try await p.result()
        let b = try await p.result()
        #expect(runs.value == 1)
        #expect(a == b && a.id == MessageID("1"))
    }

    @Test func aFailureIsKeptToo() async throws {
        let runs = Counter()
        let p = PendingAppend {
            runs.bump()
            throw MailError(.refused, scope: .message, "NO [CANNOT] refused \(runs.value)")
        }
        for _ in 0..<3 {
            await #expect(throws: MailError.self) { try await p.result() }
        }
        #expect(runs.value == 1)
        do {
            _ = try await p.result()
        } catch let e as MailError {
            #expect(e.message.contains("refused 1"))
        }
    }

    @Test func callersWhileTheFirstWaitsShareItsOutcome() async throws {
        let runs = Counter()
        let release = AsyncStream<Void>.makeStream()
        let p = PendingAppend {
            runs.bump()
            for await _ in release.stream { break }
            return Self.result(7)
        }
        try await withThrowingTaskGroup(of: AppendResult.self) { group in
            for _ in 0..<8 { group.addTask { try await p.result() } }
            try await Task.sleep(for: .milliseconds(50))
            release.continuation.yield()
            var all: [AppendResult] = []
            for try await r in group { all.append(r) }
            #expect(all.count == 8)
            #expect(Set(all.map(\.id)) == [MessageID("7")])
        }
        #expect(runs.value == 1)
    }

    @Test func doneIsImmediate() async throws {
        let p = PendingAppend.done(Self.result(3))
        #expect(try await p.result().id == MessageID("3"))
        #expect(try await p.result().id == MessageID("3"))
    }
}

import Foundation
import MailModel
import MailStore
import MailTestSupport
import SyncState
import Testing
@testable import Transfer

/// Waits (bounded) until `window` has `n` waiters: the acquire under test
/// has registered and not been let in.
private func waitForWaiters(_ window: AppendWindow, _ n: Int) async throws {
    for _ in 0..<5000 {
        if window.occupancy.waiting == n { return }
        try await Task.sleep(for: .milliseconds(1))
    }
    Issue.record("expected \(n) waiter(s), found \(window.occupancy.waiting)")
}

@Suite struct AppendWindowTests {
    @Test func bytesBoundTheWindowAsWellAsMessages() async throws {
        let window = AppendWindow(limit: 64, byteLimit: 100)
        try await window.acquire(bytes: 60)
        try await window.acquire(bytes: 40)
        #expect(window.occupancy.messages == 2 && window.occupancy.bytes == 100)
        let third = Task { try await window.acquire(bytes: 1) }
        try await waitForWaiters(window, 1)
        // Still waiting: 101 bytes would be over the bound.
        #expect(window.occupancy.messages == 2)
        window.release(bytes: 40)
        try await third.value
        #expect(window.occupancy.messages == 2 && window.occupancy.bytes == 61 && window.occupancy.waiting == 0)
    }

    @Test func messagesBoundTheWindow() async throws {
        let window = AppendWindow(limit: 2, byteLimit: .max)
        try await window.acquire(bytes: 1)
        try await window.acquire(bytes: 1)
        let third = Task { try await window.acquire(bytes: 1) }
        try await waitForWaiters(window, 1)
        window.release(bytes: 1)
        try await third.value
        #expect(window.occupancy.messages == 2)
    }

    @Test func aMessageOverTheByteBoundGoesAloneWhenTheWindowIsEmpty() async throws {
        let window = AppendWindow(limit: 64, byteLimit: 100)
        try await window.acquire(bytes: 10)
        let big = Task { try await window.acquire(bytes: 1000) }
        try await waitForWaiters(window, 1)
        window.release(bytes: 10)
        try await big.value
        #expect(window.occupancy.messages == 1 && window.occupancy.bytes == 1000)
        // Nothing else goes beside it.
        let small = Task { try await window.acquire(bytes: 1) }
        try await waitForWaiters(window, 1)
        window.release(bytes: 1000)
        try await small.value
        #expect(window.occupancy.messages == 1 && window.occupancy.bytes == 1)
    }

    @Test func waitersAreLetInInOrder() async throws {
        let window = AppendWindow(limit: 64, byteLimit: 100)
        try await window.acquire(bytes: 60)
        let big = Task { try await window.acquire(bytes: 50) }
        try await waitForWaiters(window, 1)
        // 10 bytes would fit, but the big message waits ahead of it.
        let small = Task { try await window.acquire(bytes: 10) }
        try await waitForWaiters(window, 2)
        window.release(bytes: 60)
        try await big.value
        try await small.value
        #expect(window.occupancy.messages == 2 && window.occupancy.bytes == 60)
    }

    @Test func failWakesEveryWaiterWithTheError() async throws {
        let window = AppendWindow(limit: 1, byteLimit: 100)
        try await window.acquire(bytes: 1)
        let waiter = Task { try await window.acquire(bytes: 1) }
        try await waitForWaiters(window, 1)
        window.fail(MailError(.connection, scope: .account, "gone"))
        await #expect(throws: MailError.self) { try await waiter.value }
        await #expect(throws: MailError.self) { try await window.acquire(bytes: 1) }
    }

    @Test func defaultsAreADeepWindowBoundedInBytes() {
        let o = MigrationOptions()
        #expect(o.appendWindow == 64)
        #expect(o.appendWindowBytes == 8 * 1024 * 1024)
    }

    /// With the default (deep) window, every message found in the
    /// destination after a stop mid-copy had its append intended in the
    /// journal first, and the resumed run ends like an uninterrupted one.
    @Test(arguments: [1, 17, 40, 75])
    func everyAppendIsJournalledBeforeItIsSentWithTheDefaultWindow(stopAfter: Int) async throws {
        let src = MemoryServer(kind: .imap, name: "src")
        var byBytes: [[UInt8]: MessageID] = [:]
        for n in 1...80 {
            let bytes = makeMessage(n, bodyLines: 3 + n % 7)
            byBytes[bytes] = MessageID(String(src.add(bytes)))
        }
        let dst = MemoryServer(kind: .imap, name: "dst")
        let state = MemoryStateStore()
        await #expect(throws: MailError.self) {
            _ = try await job(src, dst, state: state, options: MigrationOptions(stopAfterEffect: stopAfter)).run()
        }
        let journalled = Set(try state.journal().filter { $0.kind == .append }.compactMap(\.sourceID))
        let arrived = dst.messages(in: .inbox)
        #expect(!arrived.isEmpty || stopAfter == 1)
        for m in arrived {
            let id = try #require(byBytes[m.bytes])
            #expect(journalled.contains(id), "message \(id) reached the destination without an intent")
        }
        let report = try await job(src, dst, state: state).run()
        #expect(report.exitCode == 0)
        #expect(Set(dst.messages(in: .inbox).map(\.key)) == Set(src.messages(in: .inbox).map(\.key)))
        #expect(dst.messages(in: .inbox).count == 80)
        #expect(try state.openEntries().isEmpty)
    }
}

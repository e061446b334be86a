import Foundation
import MailModel
import MailStore
import MailTestSupport
import SyncState
import Testing
@testable import Transfer

/// After isync's run-tests.pl: stop after effect n, for every n, resume, and
/// compare with an uninterrupted run. Nothing lost, nothing duplicated.
@Suite struct CrashSafetyTests {
    /// Effects of an uninterrupted run (folder creations + appends).
    static func effectCount() async throws -> Int {
        let src = populatedSource()
        let dst = emptyDestination()
        let state = MemoryStateStore()
        _ = try await job(src, dst, state: state).run()
        // Intents written ahead and closed unused (abandoned) had no effect.
        return try state.journal().filter { $0.status != .abandoned }.count
    }

    @Test func stoppedAfterEveryEffectThenResumedEndsAsAnUninterruptedRun() async throws {
        let reference = emptyDestination()
        _ = try await job(populatedSource(), reference, state: MemoryStateStore()).run()
        let expected = snapshot(reference)
        let effects = try await Self.effectCount()
        #expect(effects >= 10)
        for n in 1...effects {
            let src = populatedSource()
            let dst = emptyDestination()
            let path = tempStatePath()
            do {
                let state = try SQLiteStateStore(path: path)
                defer { state.close() }
                do {
                    _ = try await job(src, dst, state: state, options: MigrationOptions(stopAfterEffect: n)).run()
                    Issue.record("run should have stopped after effect \(n)")
                } catch let e as MailError {
                    #expect(e.kind == .cancelled, "n=\(n)")
                }
            }
            // A new process: the state is read back from disk.
            let state = try SQLiteStateStore(path: path)
            defer { state.close() }
            let report = try await job(src, dst, state: state).run()
            #expect(report.exitCode == 0, "n=\(n): \(report.failures)")
            #expect(snapshot(dst) == expected, "n=\(n): destination differs from an uninterrupted run")
            #expect(try state.openEntries().isEmpty, "n=\(n): journal left open")
            #expect(report.totals.verified == report.totals.found, "n=\(n)")
        }
    }

    @Test func stoppedTwiceInARowStillConverges() async throws {
        let reference = emptyDestination()
        _ = try await job(populatedSource(), reference, state: MemoryStateStore()).run()
        let src = populatedSource()
        let dst = emptyDestination()
        let state = MemoryStateStore()
        for n in [3, 2, 4] {
            await #expect(throws: MailError.self) {
                _ = try await job(src, dst, state: state, options: MigrationOptions(stopAfterEffect: n)).run()
            }
        }
        _ = try await job(src, dst, state: state).run()
        #expect(snapshot(dst) == snapshot(reference))
    }

    @Test func aCrashAfterTheAppendIsSettledByKeyWithoutRecopying() async throws {
        let src = MemoryServer(kind: .imap, name: "src")
        for n in 1...4 { src.add(makeMessage(n)) }
        let dst = MemoryServer(kind: .imap, name: "dst")
        let state = MemoryStateStore()
        // Effect 2 is the second append: done in the destination, never confirmed.
        await #expect(throws: MailError.self) {
            _ = try await job(src, dst, state: state, options: MigrationOptions(appendWindow: 1, stopAfterEffect: 2)).run()
        }
        #expect(dst.messages(in: .inbox).count == 2)
        #expect(try state.openEntries().count == 1)
        let report = try await job(src, dst, state: state).run()
        #expect(report.settledFromCrash == 1)
        #expect(dst.messages(in: .inbox).count == 4)
        #expect(report.totals.copied == 2)
        let settled = try state.journal().filter { $0.status == .settled }
        #expect(settled.count == 1 && settled.first?.destinationID != nil)
        // No marker header was written into anybody's mail.
        for m in dst.messages(in: .inbox) { #expect(src.messages(in: .inbox).contains { $0.bytes == m.bytes }) }
    }
}

@Suite struct UIDValidityTests {
    @Test(arguments: ["source", "destination", "both"])
    func aResetBetweenRunsCausesNoDuplicatesAndNoLoss(side: String) async throws {
        let src = populatedSource()
        let dst = emptyDestination()
        let state = MemoryStateStore()
        _ = try await job(src, dst, state: state).run()
        let expected = snapshot(dst)
        // New messages arrive, then the folders are rebuilt with new UIDVALIDITY.
        src.add(makeMessage(40), to: .inbox, flags: [.seen])
        src.add(makeMessage(41), to: work)
        for f in [FolderPath.inbox, work, deep, sentSrc] where side != "destination" { src.recreate(f) }
        for f in [FolderPath.inbox, work, deep, sentDst] where side != "source" { dst.recreate(f) }
        let report = try await job(src, dst, state: state).run()
        #expect(report.exitCode == 0)
        #expect(report.totals.copied == 2)
        for (s, d) in [(FolderPath.inbox, FolderPath.inbox), (work, work), (deep, deep), (sentSrc, sentDst)] {
            let keys = dst.messages(in: d).map(\.key)
            #expect(keys.count == Set(keys).count, "\(d): no duplicates")
            #expect(Set(keys) == Set(src.messages(in: s).map(\.key)), "\(d): no loss")
        }
        #expect(expected["INBOX"]!.count + 1 == dst.messages(in: .inbox).count)
        // And the run after that is cheap again.
        src.resetStats()
        dst.resetStats()
        let third = try await job(src, dst, state: state).run()
        #expect(third.totals.copied == 0)
        #expect(src.stats.fetchedMessages == 0 && dst.stats.fetchedMessages == 0)
    }
}

@Suite struct FaultTests {
    @Test func droppedConnectionsMidFetchAndMidAppendAreRetriedAndRecovered() async throws {
        let src = populatedSource()
        let dst = emptyDestination()
        src.faults.dropFetches = 2
        src.faults.dropAfterBytes = 150
        dst.faults.dropAppends = 2
        dst.faults.dropAfterBytes = 200
        let sleeps = SleepLog()
        let report = try await job(src, dst, state: MemoryStateStore(), sleeps: sleeps).run()
        #expect(report.exitCode == 0, "\(report.failures)")
        let reference = emptyDestination()
        _ = try await job(populatedSource(), reference, state: MemoryStateStore()).run()
        #expect(snapshot(dst) == snapshot(reference))
        #expect(sleeps.all.count == 4, "one backoff per drop")
        // The four drops may fall in one retry chain (attempts 1...4): each wait is
        // positive and at most the fourth backoff, 0.5 s x 2^3 plus 30% jitter = 5.2 s.
        let policy = RetryPolicy()
        let longest = policy.delay(after: 4, error: MailError(.connection, scope: .account, "drop"), random: 1)
        let waits = sleeps.all
        #expect(waits.allSatisfy { $0 > 0 && $0 <= longest }, "\(waits) vs at most \(longest)")
    }

    @Test func throttlingIsHonouredWithTheServersWait() async throws {
        let src = populatedSource()
        let dst = emptyDestination()
        dst.faults.throttles = 2
        dst.faults.throttleRetryAfter = 7.5
        let sleeps = SleepLog()
        let report = try await job(src, dst, state: MemoryStateStore(), sleeps: sleeps).run()
        #expect(report.exitCode == 0)
        #expect(sleeps.all.filter { $0 == 7.5 }.count == 2)
    }

    @Test func backoffGrowsExponentiallyWithJitter() {
        let p = RetryPolicy(baseDelay: 1, maxDelay: 30, jitter: 0.25)
        let e = MailError(.connection, scope: .account, retryable: true, "lost")
        #expect(p.delay(after: 1, error: e, random: 0.5) == 1)
        #expect(p.delay(after: 3, error: e, random: 0.5) == 4)
        #expect(p.delay(after: 3, error: e, random: 0) == 3)
        #expect(p.delay(after: 3, error: e, random: 0.999) > 4.9)
        #expect(p.delay(after: 10, error: e, random: 0.5) == 30)
        #expect(p.shouldRetry(e, attempt: 1))
        #expect(!p.shouldRetry(e, attempt: 5))
        #expect(!p.shouldRetry(MailError(.authentication, scope: .account, "no"), attempt: 1))
    }

    @Test func aRetryableErrorThatNeverPassesFailsTheFolderNotTheRun() async throws {
        let src = populatedSource()
        let dst = emptyDestination()
        dst.faults.dropAppends = 1000
        let report = try await job(src, dst, state: MemoryStateStore(), options: MigrationOptions(retry: RetryPolicy(maxAttempts: 3))).run()
        #expect(report.exitCode == 1)
        #expect(report.folders.count == 5)
        #expect(report.failures.contains { $0.sourceID == nil })
    }

    @Test func aRefusedMessageIsReportedAndTheRunGoesOn() async throws {
        let src = populatedSource()
        let dst = emptyDestination()
        dst.faults.refuseAppend = { bytes in String(decoding: bytes, as: UTF8.self).contains("message 4") }
        dst.faults.refusedKeywords = [Flag("$Forwarded")]
        let report = try await job(src, dst, state: MemoryStateStore()).run()
        #expect(report.exitCode == 1)
        #expect(report.failures.count == 1)
        #expect(report.failures.first?.folder == "Work")
        #expect(report.failures.first?.reason.contains("refused") == true)
        #expect(report.totals.copied == 7)
        #expect(report.droppedKeywords.map(\.keyword) == ["$Forwarded"])
        #expect(dst.messages(in: .inbox).count == 3, "the message went through without the keyword")
    }
}

@Suite struct DeleteSourceTests {
    @Test func onlyVerifiedMessagesAreDeletedEvenWhenTheDestinationRefusesSome() async throws {
        let src = populatedSource()
        let dst = emptyDestination()
        var df = dst.faults
        df.refuseAppend = { bytes in
            let s = String(decoding: bytes, as: UTF8.self)
            return s.contains("message 4") || s.contains("message 7")
        }
        dst.faults = df
        let report = try await job(src, dst, state: MemoryStateStore(), options: MigrationOptions(deleteSource: true)).run()
        #expect(report.exitCode == 1)
        // What was refused is still in the source; everything else is gone from it.
        let left = src.folderPaths.flatMap { f in src.messages(in: f).map { "\(f) \(String(decoding: $0.bytes, as: UTF8.self).contains("message 4") ? 4 : String(decoding: $0.bytes, as: UTF8.self).contains("message 7") ? 7 : 0)" } }
        #expect(left.sorted() == ["Sent Items 7", "Work 4"])
        #expect(report.totals.deleted == 7)
        for f in dst.folderPaths {
            for m in dst.messages(in: f) { #expect(!String(decoding: m.bytes, as: UTF8.self).contains("message 4")) }
        }
    }

    @Test func aMessageTheDestinationLostIsCopiedAgainBeforeTheSourceIsDeleted() async throws {
        // A destination without APPENDUID; one message later vanishes from it.
        let src = MemoryServer(kind: .imap, name: "src")
        for n in 1...3 { src.add(makeMessage(n)) }
        let dst = MemoryServer(kind: .imap, name: "dst", capabilities: StoreCapabilities.localTree.subtracting(.appendReturnsID))
        let state = MemoryStateStore()
        _ = try await job(src, dst, state: state).run()
        let victim = try #require(dst.messages(in: .inbox).first { String(decoding: $0.bytes, as: UTF8.self).contains("message 2") })
        dst.removeMessage(uid: victim.uid, from: .inbox)
        // The state still says message 2 was copied; verification looks at the destination.
        let report = try await job(src, dst, state: state, options: MigrationOptions(deleteSource: true, verify: true)).run()
        #expect(report.exitCode == 0)
        #expect(report.totals.copied == 1, "the state's word is not taken over the destination's listing")
        #expect(dst.messages(in: .inbox).count == 3)
        #expect(src.messages(in: .inbox).isEmpty, "deleted only after all three were verified")
    }

    @Test func pop3ToIMAPWithDatesFromHeadersAndDeletionCommittedAtQuit() async throws {
        let src = MemoryServer(kind: .pop3, name: "pop")
        src.add(makeMessage(1))
        src.add(Array("From: x@y\r\nDate: Wed, 3 Jan 2024 12:00:00 +0000\r\nMessage-ID: <d@y>\r\n\r\nno received\r\n".utf8))
        src.add(Array("From: x@y\r\nSubject: nothing usable\r\n\r\nbody\r\n".utf8))
        src.add(makeMessage(1))  // the same message twice in one POP3 mailbox
        let dst = MemoryServer(kind: .imap, name: "imap")
        let report = try await job(src, dst, state: MemoryStateStore(),
                                   options: MigrationOptions(selection: FolderSelection(into: FolderPath("From POP")!),
                                                             deleteSource: true)).run()
        #expect(report.exitCode == 0, "\(report.failures)")
        let got = dst.messages(in: FolderPath("From POP")!)
        #expect(got.count == 3)
        #expect(report.dateSources == ["received": 1, "date": 1, "download": 1])
        let first = try #require(got.first { $0.key == MessageKey.of(makeMessage(1)) })
        #expect(first.internalDate == RFC5322Date.parse("Tue, 2 Jan 2024 10:01:00 +0100"))
        #expect(src.messages(in: .inbox).isEmpty, "DELE committed by QUIT after verification")
        #expect(report.totals.deleted == 4)
    }

    @Test func theReportSaysWhenPOP3IDsAreSynthetic() async throws {
        for synthetic in [false, true] {
            let src = MemoryServer(kind: .pop3, name: "pop")
            src.syntheticIDs = synthetic
            src.add(makeMessage(1))
            src.add(makeMessage(2))
            let dst = MemoryServer(kind: .imap, name: "imap")
            let report = try await job(src, dst, state: MemoryStateStore()).run()
            #expect(report.exitCode == 0, "\(report.failures)")
            let inbox = try #require(report.folders.first)
            #expect(inbox.syntheticSourceIDs == synthetic)
            let text = String(decoding: try report.json(pretty: false), as: UTF8.self)
            #expect(text.contains("\"syntheticSourceIDs\":\(synthetic)"))
        }
    }

    @Test func pop3ReRunCopiesNothing() async throws {
        let src = MemoryServer(kind: .pop3, name: "pop")
        for n in 1...5 { src.add(makeMessage(n)) }
        let dst = MemoryServer(kind: .imap, name: "imap")
        let state = MemoryStateStore()
        _ = try await job(src, dst, state: state).run()
        src.resetStats()
        let again = try await job(src, dst, state: state).run()
        #expect(again.totals.copied == 0)
        #expect(src.stats.fetchedMessages == 0 && src.stats.headerListings == 0)
        #expect(dst.messages(in: .inbox).count == 5)
    }
}

@Suite struct RewritingDestinationTests {
    @Test func headersStandInForKeysAndAreReportedPerMessage() async throws {
        let src = MemoryServer(kind: .imap, name: "src")
        src.add(makeMessage(1))
        src.add(makeMessage(2, messageID: false))
        let dst = MemoryServer(kind: .imap, name: "exchange",
                               capabilities: StoreCapabilities.localTree.union([.appendReturnsID, .rewritesMessages]))
        dst.faults.rewriteOnAppend = true
        // Another tool already copied message 1 (rewritten) and message 2 (no Message-ID).
        dst.add(Array("X-Rewritten-By: other\r\n".utf8) + makeMessage(1))
        dst.add(Array("X-Rewritten-By: other\r\n".utf8) + makeMessage(2, messageID: false))
        let report = try await job(src, dst, state: MemoryStateStore()).run()
        #expect(report.exitCode == 0, "\(report.failures)")
        #expect(report.headerMatches.count == 1)
        #expect(report.headerMatches.first?.messageID == "<m1@example.net>")
        #expect(dst.messages(in: .inbox).count == 3, "no Message-ID: never merged by headers alone, so copied")
    }
}

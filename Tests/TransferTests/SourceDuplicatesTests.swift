import Foundation
import Logging
import MailModel
import MailStore
import MailTestSupport
import SyncState
import Testing
@testable import Transfer

/// A POP3 source (headers cost a request per message) into an empty
/// destination is planned without its headers: no `TOP n 0` per message.
/// Its own duplicates are told while copying, and still copied once.
struct SourceDuplicatesTests {
    /// A POP3 account holding: two plain messages, one twice; a message
    /// without Message-ID, twice; two different messages that share
    /// Message-ID, Date and From (and sizes): each must be copied.
    static func pop3Source() -> (MemoryServer, unique: [[UInt8]], all: [[UInt8]]) {
        let src = MemoryServer(kind: .pop3, name: "pop", capabilities: [.delete, .persistentIDs, .headersPerMessage])
        let a = makeMessage(1)
        let b = makeMessage(2, lf: true)
        let noID = makeMessage(3, messageID: false)
        let twinA = makeMessage(4, subject: "first of two")
        let twinB = makeMessage(4, subject: "other of two")
        let all = [a, b, noID, a, twinA, noID, twinB, a]
        for m in all { src.add(m, to: .inbox) }
        return (src, [a, b, noID, twinA, twinB], all)
    }

    static var logger: Logger {
        var l = Logger(label: "test.transfer.sourceduplicates")
        l.logLevel = .critical
        return l
    }

    @Test func intoAnEmptyMemoryDestinationNoHeaderListingAndEachMessageOnce() async throws {
        let (src, unique, all) = Self.pop3Source()
        let dst = emptyDestination()
        let state = try SQLiteStateStore(path: tempStatePath())
        defer { state.close() }
        let report = try await job(src, dst, state: state).run()
        #expect(report.exitCode == 0, "\(report.failures)")
        #expect(src.stats.headerListings == 0, "no TOP n 0 listing")
        #expect(src.stats.fetchedMessages == all.count, "each message read once")
        let got = dst.messages(in: .inbox).map(\.key)
        #expect(got.count == unique.count, "nothing duplicated")
        #expect(Set(got) == Set(unique.map { MessageKey.of($0) }))
        #expect(report.totals.copied == unique.count)
        #expect(report.totals.duplicates == all.count - unique.count)
        #expect(report.totals.verified == all.count)
        #expect(report.dateSources["received"] == unique.count, "dates from the Received: headers of the fetched bodies")
        #expect(try state.openEntries().isEmpty)

        // A re-run: nothing copied, everything still verified.
        src.resetStats()
        let again = try await job(src, dst, state: state).run()
        #expect(again.exitCode == 0)
        #expect(again.totals.copied == 0)
        #expect(again.totals.verified == all.count)
        #expect(dst.messages(in: .inbox).count == unique.count)
    }

    @Test func intoAnEmptyMaildirTheStoreHashesAndTheKeysAreOfTheFilesWritten() async throws {
        let (src, unique, all) = Self.pop3Source()
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("mf-srcdup-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let state = try SQLiteStateStore(path: tempStatePath())
        defer { state.close() }
        let job = MigrationJob(source: { src.makeStore() }, destination: { try MaildirStore(root: root, create: true) },
                               options: MigrationOptions(), state: state, logger: Self.logger)
        let report = try await job.run()
        #expect(report.exitCode == 0, "\(report.failures)")
        #expect(src.stats.headerListings == 0)
        let files = try FileManager.default.contentsOfDirectory(atPath: root + "/cur")
        let onDisk = try files.map { MessageKey.of(Array(try Data(contentsOf: URL(fileURLWithPath: root + "/cur/" + $0)))) }
        #expect(onDisk.count == unique.count)
        #expect(Set(onDisk) == Set(unique.map { MessageKey.of($0) }))
        // The state holds, for every destination file, the key of its bytes.
        let known = try state.known(.destination, in: .inbox)
        #expect(Set(known.map(\.key)) == Set(onDisk))
        #expect(known.count == unique.count)
        #expect(report.totals.duplicates == all.count - unique.count)
        #expect(report.totals.verified == all.count)
    }

    @Test func aDestinationWithMessagesStillMatchesByHeaders() async throws {
        let (src, unique, _) = Self.pop3Source()
        let dst = emptyDestination()
        dst.add(unique[1], to: .inbox)
        let report = try await job(src, dst, state: MemoryStateStore()).run()
        #expect(report.exitCode == 0)
        #expect(src.stats.headerListings > 0, "headers are needed to match what is there")
        #expect(dst.messages(in: .inbox).count == unique.count)
    }

    /// When the first message of a key fails to copy, a later look-alike is
    /// not copied in its place (the planner's rule: the first of each key is
    /// the one copied): it waits, named in the report, and the next run,
    /// planning with headers against what is now there, copies the first.
    @Test func aLaterLookAlikeWaitsWhenTheFirstOneFailsToCopy() async throws {
        let src = MemoryServer(kind: .pop3, name: "pop", capabilities: [.delete, .persistentIDs, .headersPerMessage])
        let a = makeMessage(1)
        src.add(a)
        src.add(makeMessage(2))
        src.add(a)
        let dst = emptyDestination()
        let refusals = Locked(1)
        dst.faults.refuseAppend = { bytes in
            MessageKey.of(bytes) == MessageKey.of(a) && refusals.with { n in defer { n -= 1 }; return n > 0 }
        }
        let state = try SQLiteStateStore(path: tempStatePath())
        defer { state.close() }
        let first = try await job(src, dst, state: state).run()
        #expect(first.exitCode != 0, "two messages were not copied")
        #expect(dst.messages(in: .inbox).count == 1, "only the other message")
        let waited = first.failures.filter { $0.reason.contains("the next run tells them apart") }
        #expect(waited.count == 1, "the later look-alike is named: \(first.failures)")
        #expect(first.failures.count == 2)
        #expect(first.totals.copied == 1)

        let second = try await job(src, dst, state: state).run()
        #expect(second.exitCode == 0, "\(second.failures)")
        #expect(dst.messages(in: .inbox).filter { $0.key == MessageKey.of(a) }.count == 1)
        #expect(second.totals.copied == 1)
        #expect(second.totals.verified == 3)
    }

    @Test func thePlannerLeavesSourceDuplicatesToTheCopyWhenAsked() {
        let a = MessageInfo(id: MessageID("1"), size: 100)
        let b = MessageInfo(id: MessageID("2"), size: 100)
        let pair = FolderPair(source: .inbox, destination: .inbox, reason: .into, create: false)
        let listing = FolderListing(folder: .inbox, messages: [a, b])
        let hashing = Planner.planMessages(PairInput(pair: pair, source: listing, destination: FolderListing(folder: .inbox, messages: [])))
        #expect(hashing == [.hash(.source, folder: .inbox, ids: [a.id, b.id])])
        let copying = Planner.planMessages(PairInput(pair: pair, source: listing, destination: FolderListing(folder: .inbox, messages: []),
                                                     options: PlanOptions(sourceDuplicatesWhileCopying: true)))
        #expect(copying.count == 2)
        #expect(copying.allSatisfy { if case .copy = $0 { return true } else { return false } })
    }

    @Test func squeezeDropsTheSameWhiteSpaceOnTheASCIIFastPath() {
        for b in UInt8(0)..<0x80 {
            let s = "a" + String(UnicodeScalar(b)) + "b"
            let slow = String(String.UnicodeScalarView(s.unicodeScalars.filter { !$0.properties.isWhitespace }))
            #expect(Planner.squeeze(s) == slow, "byte \(b)")
        }
        #expect(Planner.squeeze(" <a b@c>\r\n\t") == "<ab@c>")
        #expect(Planner.squeeze("Zoë\u{00A0}Example\u{2003}<z@e>") == "ZoëExample<z@e>")
    }
}

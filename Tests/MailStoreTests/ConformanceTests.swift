import Foundation
import Testing
import MailModel
import MailStore
import MailTestSupport

/// The shared store conformance suite, run against both local stores.
struct ConformanceTests {
    func suite(_ kind: LocalKind, _ dir: String, corpus: Corpus? = nil) -> StoreConformance {
        let root = dir + "/store"
        return StoreConformance(name: "\(kind)", mustNotTouch: dir, ownEntry: "store", corpus: corpus) {
            try kind.open(root)
        }
    }

    @Test(arguments: LocalKind.allCases)
    func folderNames(_ kind: LocalKind) async throws {
        try await withTempDirectory { try await suite(kind, $0).folderNames() }
    }

    @Test(arguments: LocalKind.allCases)
    func inboxRoundTrip(_ kind: LocalKind) async throws {
        try await withTempDirectory { try await suite(kind, $0).inboxRoundTrip() }
    }

    @Test(arguments: LocalKind.allCases)
    func syntheticRoundTrip(_ kind: LocalKind) async throws {
        try await withTempDirectory { try await suite(kind, $0).syntheticRoundTrip() }
    }

    @Test(arguments: LocalKind.allCases)
    func missingFolder(_ kind: LocalKind) async throws {
        try await withTempDirectory { try await suite(kind, $0).missingFolder() }
    }

    @Test(arguments: LocalKind.allCases)
    func corpusRoundTrip(_ kind: LocalKind) async throws {
        guard let corpus = try Corpus.load() else {
            print(Corpus.absentMessage)
            return
        }
        try await withTempDirectory { try await suite(kind, $0, corpus: corpus).corpusRoundTrip() }
    }

    /// 50 MB through each store, streamed and hashed on the way.
    @Test(arguments: LocalKind.allCases)
    func largeMessage(_ kind: LocalKind) async throws {
        try await withTempDirectory { dir in
            let file = dir + "/large.eml"
            try SyntheticMail.writeLargeMessage(to: file, bytes: 50 * 1024 * 1024)
            try await suite(kind, dir + "/s").largeMessage(file: file)
        }
    }
}

/// The suite is not vacuous: a store that loses a flag or changes a byte fails it.
struct ConformanceSensitivityTests {
    final class Faulty: MailStore, @unchecked Sendable {
        enum Fault: Sendable { case byte, flag, date }
        let inner: MaildirStore
        let fault: Fault
        init(_ inner: MaildirStore, _ fault: Fault) { self.inner = inner; self.fault = fault }
        var location: StoreLocation { inner.location }
        var capabilities: StoreCapabilities { inner.capabilities }
        func folders() async throws -> [FolderInfo] { try await inner.folders() }
        func createFolder(_ path: FolderPath) async throws { try await inner.createFolder(path) }
        func listMessages(in folder: FolderPath, options: ListOptions) async throws -> FolderListing {
            var l = try await inner.listMessages(in: folder, options: options)
            if let i = l.messages.indices.last {
                switch fault {
                case .flag: l.messages[i].flags.remove(.seen); l.messages[i].flags.insert(.draft)
                case .date: l.messages[i].internalDate = InternalDate(secondsSinceEpoch: 1)
                case .byte: break
                }
            }
            return l
        }
        func fetchMessages(_ ids: [MessageID], in folder: FolderPath,
                           _ handler: @Sendable (MessageInfo, MessageBody) async throws -> Void) async throws -> [MessageID] {
            let fault = self.fault
            return try await inner.fetchMessages(ids, in: folder) { info, body in
                guard fault == .byte else { return try await handler(info, body) }
                var all = try await body.collect()
                if all.readableBytes > 3 { all.setInteger(UInt8(ascii: "#"), at: all.readerIndex + 3) } else { all.writeString("#") }
                try await handler(info, .bytes(all))
            }
        }
        func append(to folder: FolderPath, _ request: AppendRequest, body: MessageBody) async throws -> PendingAppend {
            try await inner.append(to: folder, request, body: body)
        }
        func setFlags(_ flags: Flags, _ change: FlagChange, for ids: [MessageID], in folder: FolderPath) async throws {
            try await inner.setFlags(flags, change, for: ids, in: folder)
        }
        func delete(_ ids: [MessageID], in folder: FolderPath) async throws { try await inner.delete(ids, in: folder) }
        func close() async throws {}
    }

    @Test(arguments: [Faulty.Fault.byte, .flag, .date])
    func faultyStoresFail(_ fault: Faulty.Fault) async throws {
        try await withTempDirectory { dir in
            let suite = StoreConformance(name: "faulty", log: { _ in }) { Faulty(try MaildirStore(root: dir + "/s", create: true), fault) }
            await #expect(throws: ConformanceFailure.self) { try await suite.inboxRoundTrip() }
        }
    }
}

/// Engineer transfer's in-memory IMAP-like store runs the same suite.
struct MemoryStoreConformanceTests {
    static let checks = ["folderNames", "inboxRoundTrip", "syntheticRoundTrip", "missingFolder"]

    @Test(arguments: checks)
    func memoryStore(_ check: String) async throws {
        let server = MemoryServer(kind: .imap, name: "memory")
        let suite = StoreConformance(name: "MemoryStore") { server.makeStore() }
        switch check {
        case "folderNames": try await suite.folderNames()
        case "inboxRoundTrip": try await suite.inboxRoundTrip()
        case "syntheticRoundTrip": try await suite.syntheticRoundTrip()
        default: try await suite.missingFolder()
        }
    }
}

import Foundation
import MailModel
import MailStore
import MailTestSupport
import Testing
@testable import ArchiveStore

/// The shared store conformance suite, run against the archive in both formats:
/// appends, listing with headers, fetch (also of messages appended in the same
/// session), flag changes, deletions and a reopen.
@Suite("ArchiveStore conformance", .serialized)
struct ArchiveConformanceTests {
    func suite(_ format: ArchiveFormat, _ dir: String, corpus: Corpus? = nil) -> StoreConformance {
        let root = dir + "/set"
        return StoreConformance(name: "archive(\(format))", mustNotTouch: dir, ownEntry: "set", corpus: corpus) {
            try ArchiveStore.open(path: root, options: ArchiveOptions(format: format), create: true, logger: testLogger)
        }
    }

    func withDir(_ body: (String) async throws -> Void) async throws {
        let dir = makeTempDir("conformance")
        defer { removeTree(dir) }
        try await body(dir)
    }

    @Test(arguments: [ArchiveFormat.maildir, .mbox])
    func folderNames(_ format: ArchiveFormat) async throws {
        try await withDir { try await suite(format, $0).folderNames() }
    }

    @Test(arguments: [ArchiveFormat.maildir, .mbox])
    func inboxRoundTrip(_ format: ArchiveFormat) async throws {
        try await withDir { try await suite(format, $0).inboxRoundTrip() }
    }

    @Test(arguments: [ArchiveFormat.maildir, .mbox])
    func syntheticRoundTrip(_ format: ArchiveFormat) async throws {
        try await withDir { try await suite(format, $0).syntheticRoundTrip() }
    }

    @Test(arguments: [ArchiveFormat.maildir, .mbox])
    func missingFolder(_ format: ArchiveFormat) async throws {
        try await withDir { try await suite(format, $0).missingFolder() }
    }

    @Test(arguments: [ArchiveFormat.maildir, .mbox])
    func corpusRoundTrip(_ format: ArchiveFormat) async throws {
        guard let corpus = try Corpus.load() else {
            print(Corpus.absentMessage)
            return
        }
        try await withDir { try await suite(format, $0, corpus: corpus).corpusRoundTrip() }
    }

    /// 50 MB streamed in and out, hashed on the way.
    @Test func largeMessage() async throws {
        try await withDir { dir in
            let file = dir + "/large.eml"
            try SyntheticMail.writeLargeMessage(to: file, bytes: 50 * 1024 * 1024)
            try await suite(.maildir, dir + "/s").largeMessage(file: file)
        }
    }
}

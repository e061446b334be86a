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

import Foundation
import MailModel

/// `archive list|check|prune`. (Filled in when ArchiveStore lands.)
enum ArchiveMaintenance {
    static func list(path: String, output: OutputSettings) async throws {
        throw MailError(.unsupported, scope: .local, "archive list is not built yet: the archive store has not landed in this build")
    }
    static func check(path: String, output: OutputSettings) async throws {
        throw MailError(.unsupported, scope: .local, "archive check is not built yet: the archive store has not landed in this build")
    }
    static func prune(path: String, deletedBefore: Date, dryRun: Bool, output: OutputSettings) async throws {
        throw MailError(.unsupported, scope: .local, "archive prune is not built yet: the archive store has not landed in this build")
    }
}

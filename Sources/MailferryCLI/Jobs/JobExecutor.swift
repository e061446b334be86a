import Foundation
import Logging
import MailModel

/// Carries out one job against real stores. (Filled in when the transfer
/// engine lands.)
enum JobExecutor {
    static func run(_ job: JobSpec, logger: Logger, progress: ProgressRenderer) async throws -> JobResult {
        throw MailError(.unsupported, scope: .local, "\(job.kind.rawValue) is not built yet: the transfer engine has not landed in this build")
    }
}

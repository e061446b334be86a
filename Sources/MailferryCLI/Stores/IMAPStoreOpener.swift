import Foundation
import Logging
import MailModel
import MailNet
import MailStore

/// Opens IMAP accounts. (The IMAP store adapter has not landed in this build.)
enum IMAPStoreOpener {
    static func open(settings: ConnectionSettings, credentials: Credentials, logger: Logger) async throws -> any MailStore {
        throw MailError(.unsupported, scope: .local, "IMAP stores are not built yet in this version of mailferry")
    }
}

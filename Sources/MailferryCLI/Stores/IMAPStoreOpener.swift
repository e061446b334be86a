import Foundation
import Logging
import MailModel
import MailNet
import MailStore

/// Opens IMAP accounts: one connection per call.
enum IMAPStoreOpener {
    static func open(settings: ConnectionSettings, credentials: Credentials, logger: Logger) async throws -> any MailStore {
        try await IMAPStore.open(settings: settings, credentials: credentials, options: IMAPStoreOptions(), logger: logger)
    }
}

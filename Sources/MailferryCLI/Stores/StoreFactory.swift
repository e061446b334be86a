import Foundation
import Logging
import MailModel
import MailStore

/// Opens the store an endpoint names. (Filled in when the store adapters land.)
enum StoreFactory {
    static func withStore<T: Sendable>(_ endpoint: EndpointSpec, side: Side, logger: Logger,
                                       _ body: (any MailStore) async throws -> T) async throws -> T {
        throw MailError(.unsupported, scope: .local, "\(endpoint.location) cannot be opened yet: the store adapters have not landed in this build")
    }
}

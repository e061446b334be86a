import MailModel
import MailStore

/// A store's name and capabilities without its connection: every operation
/// that would talk to the server throws `NeedsConnection` before doing
/// anything. A folder pair that the folder listings show unchanged is worked
/// through this (the state decides it, no command is sent), on another core
/// than the connected workers; a pair that turns out to need the server is
/// handed back to them, no effect made.
final class OfflineStore: MailStore {
    let location: StoreLocation
    let capabilities: StoreCapabilities

    init(_ base: any MailStore) {
        location = base.location
        capabilities = base.capabilities
    }

    func folders() async throws -> [FolderInfo] { throw NeedsConnection() }
    func createFolder(_ path: FolderPath) async throws { throw NeedsConnection() }
    func listMessages(in folder: FolderPath, options: ListOptions) async throws -> FolderListing { throw NeedsConnection() }
    func fetchMessages(_ ids: [MessageID], in folder: FolderPath,
                       _ handler: @Sendable (MessageInfo, MessageBody) async throws -> Void) async throws -> [MessageID] {
        throw NeedsConnection()
    }
    func append(to folder: FolderPath, _ request: AppendRequest, body: MessageBody) async throws -> PendingAppend {
        throw NeedsConnection()
    }
    func setFlags(_ flags: Flags, _ change: FlagChange, for ids: [MessageID], in folder: FolderPath) async throws {
        throw NeedsConnection()
    }
    func delete(_ ids: [MessageID], in folder: FolderPath) async throws { throw NeedsConnection() }
    func close() async throws {}
}

/// Work given to an `OfflineStore` needed the server after all.
struct NeedsConnection: Error {}

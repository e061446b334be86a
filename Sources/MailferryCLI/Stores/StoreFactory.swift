import ArchiveStore
import Foundation
import Logging
import MailModel
import MailNet
import MailStore

/// Opens the stores that endpoints name: credentials are read once per job,
/// then every call to `open()` makes a new session (one connection), so that
/// parallel workers each get their own.
struct StoreOpener: Sendable {
    enum Access: Sendable {
        /// Read from it (a source, `folders`, `verify`'s destination).
        case read
        /// Write into it, creating it if missing.
        case write
    }

    let endpoint: EndpointSpec
    let side: Side
    let access: Access
    let settings: ConnectionSettings?
    let credentials: Credentials?
    let archiveOptions: ArchiveOptions
    let logger: Logger

    /// Opens a new session. (Rate caps are applied by the transfer engine: `MigrationOptions.pacing`.)
    func open() async throws -> any MailStore {
        do {
            return try await openUnthrottled()
        } catch {
            throw StoreFactory.annotate(error, side: side)
        }
    }

    private func openUnthrottled() async throws -> any MailStore {
        switch endpoint.location {
        case .maildir(let path):
            return try MaildirStore(root: path, create: access == .write)
        case .mbox(let path):
            return try MboxStore(root: path, create: access == .write)
        case .archive(let path):
            return try ArchiveStore.open(path: path, options: archiveOptions, create: access == .write, logger: logger)
        case .pop3:
            guard let settings, let credentials else { throw StoreFactory.noCredentials(endpoint) }
            return try await POP3Store.open(settings: settings, credentials: credentials, logger: logger)
        case .imap:
            guard let settings, let credentials else { throw StoreFactory.noCredentials(endpoint) }
            return try await IMAPStoreOpener.open(settings: settings, credentials: credentials, logger: logger)
        }
    }
}

enum StoreFactory {
    /// Reads credentials and checks local paths; makes no connection yet.
    static func prepare(_ endpoint: EndpointSpec, side: Side, access: StoreOpener.Access, logger: Logger,
                        archiveOptions: ArchiveOptions = ArchiveOptions()) async throws -> StoreOpener {
        var settings: ConnectionSettings?
        var credentials: Credentials?
        if let account = endpoint.location.account {
            if let ca = endpoint.caFile {
                guard FileManager.default.isReadableFile(atPath: ca) else {
                    throw MailError(.usage, scope: .local, "the CA file \(ca) cannot be read",
                                    hint: "give a readable PEM file to \(side.flag("ca-file")) or --ca-file")
                }
            }
            settings = ConnectionSettings(host: account.host, port: account.port, tls: account.tls, caFile: endpoint.caFile)
            let login = try await CredentialResolver.resolve(endpoint.login ?? LoginSpec(secret: .password(.environment(side.defaultPasswordVariable))),
                                                             account: account, side: side)
            let secret: Credentials.Secret
            switch login.secret {
            case .password(let p): secret = .password(p)
            case .oauth2(let fetch): secret = .oauth2(TokenProvider(fetch))
            }
            credentials = Credentials(user: login.user, authorizationIdentity: login.authorizationIdentity, secret: secret)
            if account.tls == .none {
                logger.warning("\(endpoint.location): TLS is off (\(side.flag("tls")) none); the password crosses the network in clear")
            }
        }
        return StoreOpener(endpoint: endpoint, side: side, access: access, settings: settings, credentials: credentials,
                           archiveOptions: archiveOptions, logger: logger)
    }

    /// Opens one session for `body` and closes it after.
    static func withStore<T: Sendable>(_ endpoint: EndpointSpec, side: Side, logger: Logger,
                                       _ body: (any MailStore) async throws -> T) async throws -> T {
        let opener = try await prepare(endpoint, side: side, access: .read, logger: logger,
                                       archiveOptions: ArchiveOptions(readOnly: true))
        let store = try await opener.open()
        do {
            let r = try await body(store)
            try await store.close()
            return r
        } catch {
            try? await store.close()
            throw annotate(error, side: side)
        }
    }

    static func noCredentials(_ e: EndpointSpec) -> MailError {
        MailError(.usage, scope: .local, "no credentials for \(e.location)")
    }

    /// Names this side's flags in the hint (`--from-tls` rather than `--tls`).
    static func annotate(_ error: Error, side: Side) -> Error {
        guard var m = error as? MailError else { return error }
        // The clients' own STARTTLS hint names a generic --tls: give this side's flag, and the caveat.
        if m.hint == nil || ErrorPresenter.isAboutSTARTTLS(m) { m.hint = ErrorPresenter.defaultHint(for: m, side: side) }
        if var h = m.hint {
            h = h.replacingOccurrences(of: "--tls none", with: "\(side.flag("tls")) none")
                .replacingOccurrences(of: "check --tls", with: "check \(side.flag("tls"))")
            m.hint = h
        }
        if m.kind == .tls, m.hint == nil || !(m.hint ?? "").contains("ca-file"),
           m.message.lowercased().contains("certificate") && !m.message.lowercased().contains("does not name") {
            m.hint = (m.hint.map { $0 + "; " } ?? "") + "pass --ca-file PEM to trust a private CA"
        }
        return m
    }
}

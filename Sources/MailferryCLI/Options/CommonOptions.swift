import ArgumentParser
import Foundation
import MailModel

extension TLSMode: ExpressibleByArgument {}
extension OutputSettings.LogFormat: ExpressibleByArgument {}
extension ArchiveFormatOption: ExpressibleByArgument {}
extension CompressionOption: ExpressibleByArgument {}

/// `--json`, `--quiet`, `--verbose`, `--log-format`: every command has them.
struct OutputOptions: ParsableArguments {
    @ArgumentParser.Flag(help: "Print one JSON summary (the report) on standard output.")
    var json = false

    @ArgumentParser.Flag(name: .shortAndLong, help: "Print nothing but errors.")
    var quiet = false

    @ArgumentParser.Flag(name: .shortAndLong,
          help: "Say more on standard error. Repeat for more: -v progress notes, -vv decisions, -vvv the protocol exchange (credentials and bodies redacted).")
    var verbose: Int

    @Option(name: .customLong("log-format"), help: "How log lines look on standard error: text, or json (one object per line, for log shippers).")
    var logFormat: OutputSettings.LogFormat = .text

    var settings: OutputSettings {
        var s = OutputSettings()
        s.verbosity = verbose
        s.quiet = quiet
        s.json = json
        s.logFormat = logFormat
        s.progress = !quiet && !json && logFormat == .text && Terminal.isTerminal(fd: 2) && verbose < 3
        return s
    }

    func validate() throws {
        if quiet && verbose > 0 { throw ValidationError("--quiet and --verbose contradict each other") }
    }
}

/// The options of one side (`--from-…` or `--to-…`), as parsed. Converted to an
/// `EndpointSpec` once the store URL is known.
struct EndpointFlags {
    var tls: TLSMode?
    var caFile: String?
    var passwordEnv: String?
    var passwordFile: String?
    var passwordCommand: String?
    var oauth2TokenCommand: String?
    var oauth2TokenEndpoint: String?
    var oauth2ClientID: String?
    var oauth2ClientSecretFile: String?
    var oauth2RefreshTokenFile: String?
    var oauth2Scope: String?
    var admin: String?
    var masterUser: String?

    /// Builds the endpoint for `url`; `sharedCAFile` is `--ca-file`.
    func endpoint(url: String, side: Side, sharedCAFile: String?) throws -> EndpointSpec {
        var location = try StoreLocation(parsing: url)
        if let tls { location = EndpointFlags.override(location, tls: tls) }
        guard let account = location.account else {
            let networkOnly: [(String?, String)] = [
                (tls?.rawValue, "tls"), (caFile, "ca-file"), (passwordEnv, "password-env"), (passwordFile, "password-file"),
                (passwordCommand, "password-command"), (oauth2TokenCommand, "oauth2-token-command"),
                (oauth2TokenEndpoint, "oauth2-token-endpoint"), (admin, "admin"), (masterUser, "master-user"),
            ]
            if let used = networkOnly.first(where: { $0.0 != nil }) {
                throw MailError(.usage, scope: .local, "\(side.flag(used.1)) applies only to imap:// and pop3:// stores, not \(location)")
            }
            return EndpointSpec(location: location)
        }
        _ = account
        let secret = try secretSource(side: side)
        if admin != nil && masterUser != nil {
            throw MailError(.usage, scope: .local, "\(side.flag("admin")) and \(side.flag("master-user")) exclude each other",
                            hint: "\(side.flag("admin")) logs in with SASL PLAIN and an authorization identity; \(side.flag("master-user")) uses Dovecot's user*master login")
        }
        let login = LoginSpec(secret: secret, adminUser: admin, masterUser: masterUser)
        return EndpointSpec(location: location, caFile: caFile ?? sharedCAFile, login: login)
    }

    func secretSource(side: Side) throws -> SecretSource {
        let given: [(String, SecretSource)] = [
            passwordEnv.map { (side.flag("password-env"), .password(.environment($0))) },
            passwordFile.map { (side.flag("password-file"), .password(.file($0))) },
            passwordCommand.map { (side.flag("password-command"), .password(.command($0))) },
            oauth2TokenCommand.map { (side.flag("oauth2-token-command"), .oauth2Command($0)) },
        ].compactMap { $0 }
        var refresh: SecretSource?
        if let endpoint = oauth2TokenEndpoint {
            guard let url = URL(string: endpoint), url.scheme != nil, url.host != nil else {
                throw MailError(.usage, scope: .local, "\(side.flag("oauth2-token-endpoint")) '\(endpoint)' is not a URL")
            }
            guard let id = oauth2ClientID else {
                throw MailError(.usage, scope: .local, "\(side.flag("oauth2-token-endpoint")) needs \(side.flag("oauth2-client-id"))")
            }
            guard let rt = oauth2RefreshTokenFile else {
                throw MailError(.usage, scope: .local, "\(side.flag("oauth2-token-endpoint")) needs \(side.flag("oauth2-refresh-token-file"))")
            }
            refresh = .oauth2Refresh(OAuth2RefreshConfig(tokenEndpoint: url, clientID: id,
                                                         clientSecret: oauth2ClientSecretFile.map { .file($0) },
                                                         refreshToken: .file(rt), scope: oauth2Scope))
        } else if oauth2ClientID != nil || oauth2RefreshTokenFile != nil || oauth2ClientSecretFile != nil {
            throw MailError(.usage, scope: .local, "the OAuth2 client options need \(side.flag("oauth2-token-endpoint"))")
        }
        let all = given + (refresh.map { [(side.flag("oauth2-token-endpoint"), $0)] } ?? [])
        if all.count > 1 {
            throw MailError(.usage, scope: .local, "\(all.map(\.0).joined(separator: " and ")) exclude each other; give one source of credentials")
        }
        return all.first?.1 ?? .password(.environment(side.defaultPasswordVariable))
    }

    /// `--from-tls` replaces the URL's TLS mode. A default port follows the
    /// mode (143 ↔ 993, 110 ↔ 995); an explicit other port stays.
    static func override(_ location: StoreLocation, tls: TLSMode) -> StoreLocation {
        switch location {
        case .imap(var a):
            if tls == .implicit, a.port == 143 { a.port = 993 }
            if tls != .implicit, a.tls == .implicit, a.port == 993 { a.port = 143 }
            a.tls = tls
            return .imap(a)
        case .pop3(var a):
            if tls == .implicit, a.port == 110 { a.port = 995 }
            if tls != .implicit, a.tls == .implicit, a.port == 995 { a.port = 110 }
            a.tls = tls
            return .pop3(a)
        default:
            return location
        }
    }
}

/// Which side an `EndpointOptions` group is for: it names the flags
/// (`--from-…` or `--to-…`) and the help texts.
protocol EndpointSide {
    static var side: Side { get }
    /// "source" or "destination", for help texts.
    static var noun: String { get }
}

enum SourceSide: EndpointSide {
    static let side = Side.from
    static let noun = "source"
}

enum DestinationSide: EndpointSide {
    static let side = Side.to
    static let noun = "destination"
}

/// `--from-…` connection and credential options.
typealias SourceOptions = EndpointOptions<SourceSide>
/// `--to-…` connection and credential options.
typealias DestinationOptions = EndpointOptions<DestinationSide>

/// One side's connection and credential options, `--from-…` or `--to-…`.
struct EndpointOptions<S: EndpointSide>: ParsableArguments {
    private static func long(_ name: String) -> NameSpecification { .customLong("\(S.side.rawValue)-\(name)") }

    @Option(name: Self.long("tls"), help: ArgumentHelp("Override the \(S.noun) URL's TLS: none, starttls or implicit. 'none' sends the password in clear; use it only on a trusted network.", valueName: "mode"))
    var tls: TLSMode?
    @Option(name: Self.long("ca-file"), help: ArgumentHelp("Also trust the CA certificates in this PEM file for the \(S.noun).", valueName: "pem"))
    var caFile: String?
    @Option(name: Self.long("password-env"), help: ArgumentHelp("Read the \(S.noun) password from this environment variable (default \(S.side.defaultPasswordVariable)).", valueName: "var"))
    var passwordEnv: String?
    @Option(name: Self.long("password-file"), help: ArgumentHelp("Read the \(S.noun) password from the first line of this file.", valueName: "file"))
    var passwordFile: String?
    @Option(name: Self.long("password-command"), help: ArgumentHelp("Run this shell command and use the first line it prints as the \(S.noun) password.", valueName: "cmd"))
    var passwordCommand: String?
    @Option(name: Self.long("oauth2-token-command"), help: ArgumentHelp("Log in to the \(S.noun) with OAuth2 (XOAUTH2/OAUTHBEARER); this command prints an access token and runs again when the token is refused or expires.", valueName: "cmd"))
    var oauth2TokenCommand: String?
    @Option(name: Self.long("oauth2-token-endpoint"), help: ArgumentHelp("Get \(S.noun) access tokens with the OAuth2 refresh-token grant from this https URL.", valueName: "url"))
    var oauth2TokenEndpoint: String?
    @Option(name: Self.long("oauth2-client-id"), help: ArgumentHelp("The OAuth2 client id for the token endpoint.", valueName: "id"))
    var oauth2ClientID: String?
    @Option(name: Self.long("oauth2-client-secret-file"), help: ArgumentHelp("A file holding the OAuth2 client secret, if the provider wants one.", valueName: "file"))
    var oauth2ClientSecretFile: String?
    @Option(name: Self.long("oauth2-refresh-token-file"), help: ArgumentHelp("A file holding the OAuth2 refresh token.", valueName: "file"))
    var oauth2RefreshTokenFile: String?
    @Option(name: Self.long("oauth2-scope"), help: ArgumentHelp("The OAuth2 scope to ask for.", valueName: "scope"))
    var oauth2Scope: String?
    @Option(name: Self.long("admin"), help: ArgumentHelp("Log in as this admin user (with the admin's password) and act for the URL's user (SASL PLAIN authorization identity).", valueName: "user"))
    var admin: String?
    @Option(name: Self.long("master-user"), help: ArgumentHelp("Log in with Dovecot's master-user syntax, user*MASTER, and the master's password.", valueName: "master"))
    var masterUser: String?

    var flags: EndpointFlags {
        EndpointFlags(tls: tls, caFile: caFile, passwordEnv: passwordEnv, passwordFile: passwordFile, passwordCommand: passwordCommand,
                      oauth2TokenCommand: oauth2TokenCommand, oauth2TokenEndpoint: oauth2TokenEndpoint, oauth2ClientID: oauth2ClientID,
                      oauth2ClientSecretFile: oauth2ClientSecretFile, oauth2RefreshTokenFile: oauth2RefreshTokenFile, oauth2Scope: oauth2Scope,
                      admin: admin, masterUser: masterUser)
    }

    /// The endpoint for `url` on this side; `trust` is `--ca-file`.
    func endpoint(_ url: String, trust: TrustOptions) throws -> EndpointSpec {
        try flags.endpoint(url: url, side: S.side, sharedCAFile: trust.caFile)
    }
}

/// `--ca-file`: trusted by both sides.
struct TrustOptions: ParsableArguments {
    @Option(name: .customLong("ca-file"), help: ArgumentHelp("Also trust the CA certificates in this PEM file (both sides). Certificate and host-name checks stay on.", valueName: "pem"))
    var caFile: String?
}

/// Folder selection.
struct FolderOptions: ParsableArguments {
    @Option(name: .customLong("folder"), help: ArgumentHelp("Only folders matching this glob (repeatable). '*' stays within one level, '**' crosses levels.", valueName: "glob"))
    var folders: [String] = []
    @Option(name: .customLong("exclude"), help: ArgumentHelp("Leave out folders matching this glob (repeatable).", valueName: "glob"))
    var exclude: [String] = []
}

/// Options shared by migrate, backup and restore.
struct RunOptions: ParsableArguments {
    @ArgumentParser.Flag(name: .customLong("dry-run"), help: "Show what would be copied; change nothing.")
    var dryRun = false
    @Option(name: .customLong("report"), help: ArgumentHelp("Also write the report to this JSON file.", valueName: "file.json"))
    var report: String?
    @Option(name: .customLong("state"), help: ArgumentHelp("The state file that makes re-runs resume (default: one per pair of stores under ~/.local/state/mailferry).", valueName: "path"))
    var state: String?
    @Option(name: .customLong("parallel"), help: ArgumentHelp("Work on this many folders at once, one connection each.", valueName: "n"))
    var parallel: Int = 1
    @Option(name: .customLong("max-bytes-per-second"), help: ArgumentHelp("Limit the transfer rate: a number of bytes, or with k, M, G.", valueName: "rate"))
    var maxBytesPerSecond: String?
    @Option(name: .customLong("max-messages-per-second"), help: ArgumentHelp("Limit how many messages are copied per second.", valueName: "n"))
    var maxMessagesPerSecond: Double?

    func apply(to job: inout JobSpec) throws {
        job.dryRun = dryRun
        job.reportPath = report
        job.statePath = state
        job.parallel = parallel
        if let m = maxBytesPerSecond {
            guard let b = ByteCountArgument.parse(m) else {
                throw MailError(.usage, scope: .local, "--max-bytes-per-second '\(m)' is not a rate", hint: "for example 500k or 10M")
            }
            job.maxBytesPerSecond = b
        }
        job.maxMessagesPerSecond = maxMessagesPerSecond
    }
}

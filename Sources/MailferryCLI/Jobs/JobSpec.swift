import Foundation
import MailModel

/// One side of a job, fully resolved from flags or a config file, before any
/// connection is made. Holds where secrets come from, never secrets.
public struct EndpointSpec: Sendable {
    public var location: StoreLocation
    /// A PEM file of extra trusted CAs.
    public var caFile: String?
    /// How to log in; nil for local stores.
    public var login: LoginSpec?

    public init(location: StoreLocation, caFile: String? = nil, login: LoginSpec? = nil) {
        self.location = location
        self.caFile = caFile
        self.login = login
    }
}

/// `--map 'OLD=NEW'`: renames a folder (and its subfolders) on the way.
public struct FolderMapping: Sendable, Hashable, Codable {
    public var old: FolderPath
    public var new: FolderPath

    public init(old: FolderPath, new: FolderPath) {
        self.old = old
        self.new = new
    }

    public init(parsing text: String) throws {
        let parts = text.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2, let o = FolderPath(parts[0]), let n = FolderPath(parts[1]) else {
            throw MailError(.usage, scope: .local, "--map '\(text)' is not OLD=NEW", hint: "for example --map 'Sent Items=Sent'")
        }
        self.init(old: o, new: n)
    }

    /// Applies the first mapping whose OLD is the folder or one of its parents.
    public static func apply(_ mappings: [FolderMapping], to folder: FolderPath) -> FolderPath {
        for m in mappings {
            if folder == m.old { return m.new }
            if folder.components.starts(with: m.old.components) {
                let rest = Array(folder.components.dropFirst(m.old.components.count))
                if let p = FolderPath(components: m.new.components + rest) { return p }
            }
        }
        return folder
    }
}

public enum ArchiveFormatOption: String, Sendable, CaseIterable, Codable { case maildir, mbox }
public enum CompressionOption: String, Sendable, CaseIterable, Codable { case zstd, gzip, xz, none }

/// A job: migrate, backup, restore or verify, from flags or a config file.
public struct JobSpec: Sendable {
    public enum Kind: String, Sendable, CaseIterable, Codable { case migrate, backup, restore, verify }

    public var name: String?
    public var kind: Kind
    public var from: EndpointSpec
    public var to: EndpointSpec
    public var folders: [String] = []
    public var exclude: [String] = []
    public var map: [FolderMapping] = []
    /// Destination folder for a POP3 source.
    public var into: FolderPath?
    public var deleteSource = false
    public var dryRun = false
    public var reportPath: String?
    public var statePath: String?
    public var parallel = 1
    public var format: ArchiveFormatOption?
    public var compression: CompressionOption?
    public var asOf: Date?
    public var maxBytesPerSecond: Int64?
    public var maxMessagesPerSecond: Double?

    public init(kind: Kind, from: EndpointSpec, to: EndpointSpec) {
        self.kind = kind
        self.from = from
        self.to = to
    }

    /// Whether a folder is selected by `--folder` / `--exclude`.
    public func selects(_ folder: FolderPath) -> Bool {
        if !folders.isEmpty, !folders.contains(where: { folder.matches(glob: $0) }) { return false }
        return !exclude.contains(where: { folder.matches(glob: $0) })
    }

    /// Checks the combination of options; throws a usage error naming the flag.
    public func validate() throws {
        func usage(_ m: String, hint: String? = nil) -> MailError { MailError(.usage, scope: .local, m, hint: hint) }
        switch kind {
        case .migrate:
            if case .pop3 = to.location {
                throw usage("a POP3 account cannot be a destination", hint: "migrate into an imap://, maildir: or mbox: store")
            }
            if case .archive = to.location {
                throw usage("migrate does not write archives", hint: "use 'mailferry backup --to archive:PATH'")
            }
        case .backup:
            guard case .archive = to.location else {
                throw usage("backup writes to an archive: store, not \(to.location)", hint: "use --to archive:PATH, or 'mailferry migrate' to copy into a mailbox")
            }
            if case .archive = from.location { throw usage("backup reads from a mailbox, not from an archive") }
        case .restore:
            guard case .archive = from.location else {
                throw usage("restore reads from an archive: store, not \(from.location)", hint: "use --from archive:PATH, or 'mailferry migrate'")
            }
            if case .pop3 = to.location { throw usage("a POP3 account cannot be a destination") }
            if case .archive = to.location { throw usage("restore writes to a mailbox, not to an archive") }
        case .verify:
            break
        }
        if into != nil {
            if case .pop3 = from.location {} else {
                throw usage("--into applies only to a POP3 source", hint: "use --map 'OLD=NEW' to rename folders")
            }
        }
        if deleteSource, kind != .migrate { throw usage("--delete-source applies only to migrate") }
        if format != nil || compression != nil, kind != .backup { throw usage("--format and --compression apply only to backup") }
        if asOf != nil, kind != .restore { throw usage("--as-of applies only to restore") }
        guard (1...64).contains(parallel) else { throw usage("--parallel must be between 1 and 64") }
        if let b = maxBytesPerSecond, b <= 0 { throw usage("--max-bytes-per-second must be positive") }
        if let m = maxMessagesPerSecond, m <= 0 { throw usage("--max-messages-per-second must be positive") }
        if from.location == to.location { throw usage("--from and --to name the same store") }
        for g in folders + exclude where g.isEmpty { throw usage("an empty --folder or --exclude pattern matches nothing") }
    }

    /// The state file used when `--state` is not given: one per pair of stores,
    /// under `$XDG_STATE_HOME/mailferry` (or `~/.local/state/mailferry`).
    public func defaultStatePath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        let base: String
        if let x = environment["XDG_STATE_HOME"], x.hasPrefix("/") {
            base = x + "/mailferry"
        } else {
            base = (environment["HOME"] ?? NSHomeDirectory()) + "/.local/state/mailferry"
        }
        let name = "\(kind.rawValue)-\(from.location)-\(to.location)"
        let safe = String(name.map { $0.isLetter || $0.isNumber || "-_.@".contains($0) ? $0 : "_" }.prefix(150))
        return "\(base)/\(safe).sqlite"
    }
}

/// Parses user-given times: `2026-01-31`, `2026-01-31T12:00:00Z`,
/// `2026-01-31 12:00`, or a relative `30d` / `12h` / `2w` before now.
public enum TimeArgument {
    public static func parse(_ text: String, flag: String, now: Date = Date()) throws -> Date {
        let t = text.trimmingCharacters(in: .whitespaces)
        if let last = t.last, let n = Double(t.dropLast()), n >= 0 {
            let unit: Double? = ["s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400][last]
            if let unit { return now.addingTimeInterval(-n * unit) }
        }
        if let d = InternalDate(iso8601: t) { return d.date }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        for pattern in ["yyyy-MM-dd'T'HH:mm:ssXXXXX", "yyyy-MM-dd'T'HH:mm:ss", "yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd HH:mm", "yyyy-MM-dd"] {
            f.dateFormat = pattern
            if let d = f.date(from: t) { return d }
        }
        throw MailError(.usage, scope: .local, "\(flag) '\(text)' is not a time",
                        hint: "use a date like 2026-01-31, a time like 2026-01-31T18:00:00Z, or an age like 30d")
    }
}

/// Parses `--max-bytes-per-second` values: `500000`, `512k`, `10M`, `1G`.
public enum ByteCountArgument {
    public static func parse(_ text: String) -> Int64? {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased().replacingOccurrences(of: "ib", with: "").replacingOccurrences(of: "b", with: "")
        let mult: [Character: Double] = ["k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024]
        if let last = t.last, let m = mult[last], let n = Double(t.dropLast()), n > 0 { return Int64(n * m) }
        if let n = Int64(t), n > 0 { return n }
        return nil
    }
}

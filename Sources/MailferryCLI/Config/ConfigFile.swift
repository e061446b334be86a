import Foundation
import MailModel
import TOMLKit

/// One problem in a config file, with the line it is on.
public struct ConfigIssue: Sendable, Equatable, CustomStringConvertible {
    public var line: Int?
    public var message: String
    public var file: String

    public var description: String {
        "\(file):\(line.map(String.init) ?? "?"): \(message)"
    }
}

/// Every problem found in a config file; `run --check` prints them all.
public struct ConfigErrors: Error, CustomStringConvertible {
    public var issues: [ConfigIssue]
    public var description: String { issues.map(\.description).joined(separator: "\n") }
}

/// A config file for `mailferry run`: accounts, jobs, defaults.
///
/// ```toml
/// [run]
/// parallel = 2                       # jobs at once
///
/// [defaults]                         # any job option, for every job
/// state = "/var/lib/mailferry/{job}.sqlite"
///
/// [accounts.old]
/// url = "pop3s://alice@pop.example.com"
/// password-command = "pass show mail/old"
///
/// [jobs.move-alice]
/// kind = "migrate"                   # migrate, backup, restore or verify
/// from = "old"                       # an account, or maildir:/mbox:/archive: PATH
/// to = "new"
/// ```
public struct ConfigFile: Sendable {
    public var path: String
    public var accountNames: [String]
    /// In the order they are written.
    public var jobs: [JobSpec]
    /// Jobs run at once (`[run] parallel`), 1 by default.
    public var parallelJobs: Int

    static let accountKeys = ["url", "tls", "ca-file", "password-env", "password-file", "password-command",
                              "oauth2-token-command", "oauth2-token-endpoint", "oauth2-client-id", "oauth2-client-secret-file",
                              "oauth2-refresh-token-file", "oauth2-scope", "admin", "master-user"]
    static let jobOptionKeys = ["folders", "exclude", "map", "into", "delete-source", "dry-run", "report", "state", "parallel",
                                "format", "compression", "as-of", "max-bytes-per-second", "max-messages-per-second"]
    static let jobKeys = ["kind", "from", "to"] + jobOptionKeys
    static let topKeys = ["run", "defaults", "accounts", "jobs"]

    /// Reads and checks a config file. Throws `ConfigErrors` naming every
    /// problem with its line, or a usage error when the file cannot be read.
    public static func load(path: String) throws -> ConfigFile {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw MailError(.usage, scope: .local, "cannot read the config file \(path)",
                            hint: "check that it exists and that this user may read it")
        }
        warnIfWritableByOthers(path)
        return try parse(text, path: path)
    }

    public static func parse(_ text: String, path: String) throws -> ConfigFile {
        var p = Parser(path: path, text: text)
        let file = p.parse()
        if !p.issues.isEmpty { throw ConfigErrors(issues: p.issues.sorted { ($0.line ?? 0) < ($1.line ?? 0) }) }
        guard let file else { throw ConfigErrors(issues: [ConfigIssue(line: nil, message: "the config file could not be read", file: path)]) }
        return file
    }

    static func warnIfWritableByOthers(_ path: String) {
        guard let attrs = try? FileManager.default.attributesOfItem(atPath: path),
              let perms = attrs[.posixPermissions] as? NSNumber else { return }
        if perms.intValue & 0o022 != 0 {
            Diagnostics.warning("\(path) is writable by other users, who could make it run any password command; chmod go-w it")
        }
    }

    /// Builds accounts and jobs, collecting every issue.
    struct Parser {
        let path: String
        let text: String
        let index: TOMLLineIndex
        let baseDirectory: String
        var issues: [ConfigIssue] = []

        init(path: String, text: String) {
            self.path = path
            self.text = text
            self.index = TOMLLineIndex(text)
            let dir = (path as NSString).deletingLastPathComponent
            let absDir = dir.hasPrefix("/") ? dir : FileManager.default.currentDirectoryPath + (dir.isEmpty ? "" : "/" + dir)
            self.baseDirectory = absDir
        }

        mutating func issue(_ keyPath: [String], _ message: String) {
            issues.append(ConfigIssue(line: index.line(keyPath), message: message, file: path))
        }

        mutating func parse() -> ConfigFile? {
            let root: TOMLTable
            do {
                root = try TOMLTable(string: text)
            } catch let e as TOMLParseError {
                issues.append(ConfigIssue(line: e.source.begin.line, message: "not valid TOML: \(e.description)", file: path))
                return nil
            } catch {
                issues.append(ConfigIssue(line: nil, message: "not valid TOML", file: path))
                return nil
            }
            checkKeys(root, allowed: ConfigFile.topKeys, at: [])

            var parallelJobs = 1
            if let run = table(root, "run", at: []) {
                checkKeys(run, allowed: ["parallel"], at: ["run"])
                if let n = int(run, "parallel", at: ["run"]) {
                    if (1...32).contains(n) { parallelJobs = n } else { issue(["run", "parallel"], "parallel must be between 1 and 32") }
                }
            }
            let defaults = table(root, "defaults", at: [])
            if let defaults { checkKeys(defaults, allowed: ConfigFile.jobOptionKeys, at: ["defaults"]) }

            var accounts: [String: (table: TOMLTable, location: StoreLocation?)] = [:]
            if let accs = table(root, "accounts", at: []) {
                for name in accs.keys {
                    guard let t = table(accs, name, at: ["accounts"]) else { continue }
                    checkKeys(t, allowed: ConfigFile.accountKeys, at: ["accounts", name])
                    var loc: StoreLocation?
                    if let url = string(t, "url", at: ["accounts", name]) {
                        do { loc = try StoreLocation(parsing: resolveStorePath(url)) } catch let e as MailError {
                            issue(["accounts", name, "url"], e.description)
                        } catch {}
                    } else if t["url"] == nil {
                        issue(["accounts", name], "account '\(name)' needs a url")
                    }
                    if t["password"] != nil || t["pass"] != nil {
                        issue(["accounts", name, t["password"] != nil ? "password" : "pass"],
                              "passwords do not go in the config file; use password-env, password-file or password-command")
                    }
                    if let loc, loc.isNetwork {
                        let sources = ["password-env", "password-file", "password-command", "oauth2-token-command", "oauth2-token-endpoint"]
                        if !sources.contains(where: { t[$0] != nil }) {
                            issue(["accounts", name], "account '\(name)' needs one of \(sources.joined(separator: ", "))")
                        }
                    }
                    accounts[name] = (t, loc)
                }
            }

            var jobs: [JobSpec] = []
            if let js = table(root, "jobs", at: []) {
                // In the order written, not TOMLKit's (sorted) order.
                let names = js.keys.sorted { (index.line(["jobs", $0]) ?? 0) < (index.line(["jobs", $1]) ?? 0) }
                for name in names {
                    guard let t = table(js, name, at: ["jobs"]) else { continue }
                    if let job = makeJob(name: name, t, defaults: defaults, accounts: accounts) { jobs.append(job) }
                }
            }
            if jobs.isEmpty && issues.isEmpty { issue(["jobs"], "the config file has no jobs; add a [jobs.NAME] table") }
            return ConfigFile(path: path, accountNames: accounts.keys.sorted(), jobs: jobs, parallelJobs: parallelJobs)
        }

        mutating func makeJob(name: String, _ t: TOMLTable, defaults: TOMLTable?,
                              accounts: [String: (table: TOMLTable, location: StoreLocation?)]) -> JobSpec? {
            let at = ["jobs", name]
            checkKeys(t, allowed: ConfigFile.jobKeys, at: at)
            guard let kindText = string(t, "kind", at: at) else {
                if t["kind"] == nil { issue(at, "job '\(name)' needs kind = \"migrate\", \"backup\", \"restore\" or \"verify\"") }
                return nil
            }
            guard let kind = JobSpec.Kind(rawValue: kindText) else {
                issue(at + ["kind"], "kind '\(kindText)' is not migrate, backup, restore or verify")
                return nil
            }
            func endpoint(_ key: String, side: Side) -> EndpointSpec? {
                guard let ref = string(t, key, at: at) else {
                    if t[key] == nil { issue(at, "job '\(name)' needs \(key) = an account name or a maildir:/mbox:/archive: path") }
                    return nil
                }
                if let acc = accounts[ref] {
                    guard let loc = acc.location else { return nil }  // already reported
                    return accountEndpoint(acc.table, location: loc, name: ref, side: side)
                }
                if ref.contains(":") {
                    do {
                        let loc = try StoreLocation(parsing: resolveStorePath(ref))
                        if loc.isNetwork {
                            issue(at + [key], "\(key) names a network store directly; define it under [accounts.NAME] with its password source and name the account here")
                            return nil
                        }
                        return EndpointSpec(location: loc)
                    } catch let e as MailError {
                        issue(at + [key], e.description)
                        return nil
                    } catch { return nil }
                }
                let near = Suggest.nearest(ref, in: Array(accounts.keys))
                issue(at + [key], "no account named '\(ref)'" + (near.map { "; did you mean '\($0)'?" } ?? ""))
                return nil
            }
            let from = endpoint("from", side: .from)
            let to = endpoint("to", side: .to)
            guard let from, let to else { return nil }
            var job = JobSpec(kind: kind, from: from, to: to)
            job.name = name

            // A job's own value wins over [defaults].
            func source(_ key: String) -> (TOMLTable, [String])? {
                if t[key] != nil { return (t, at) }
                if let defaults, defaults[key] != nil { return (defaults, ["defaults"]) }
                return nil
            }
            if let (tb, p) = source("folders") { job.folders = stringArray(tb, "folders", at: p) ?? [] }
            if let (tb, p) = source("exclude") { job.exclude = stringArray(tb, "exclude", at: p) ?? [] }
            if let (tb, p) = source("map") { job.map = mappings(tb, at: p) }
            if let (tb, p) = source("into"), let s = string(tb, "into", at: p) {
                if let f = FolderPath(s) { job.into = f } else { issue(p + ["into"], "into needs a folder name") }
            }
            if let (tb, p) = source("delete-source") { job.deleteSource = bool(tb, "delete-source", at: p) ?? false }
            if let (tb, p) = source("dry-run") { job.dryRun = bool(tb, "dry-run", at: p) ?? false }
            if let (tb, p) = source("report"), let s = string(tb, "report", at: p) { job.reportPath = resolveFile(s.replacingOccurrences(of: "{job}", with: name)) }
            if let (tb, p) = source("state"), let s = string(tb, "state", at: p) { job.statePath = resolveFile(s.replacingOccurrences(of: "{job}", with: name)) }
            if let (tb, p) = source("parallel"), let n = int(tb, "parallel", at: p) { job.parallel = n }
            if let (tb, p) = source("format"), let s = string(tb, "format", at: p) {
                if let f = ArchiveFormatOption(rawValue: s) { job.format = f } else { issue(p + ["format"], "format '\(s)' is not maildir or mbox") }
            }
            if let (tb, p) = source("compression"), let s = string(tb, "compression", at: p) {
                if let c = CompressionOption(rawValue: s) { job.compression = c } else { issue(p + ["compression"], "compression '\(s)' is not zstd, gzip, xz or none") }
            }
            if let (tb, p) = source("as-of"), let s = string(tb, "as-of", at: p) {
                do { job.asOf = try TimeArgument.parse(s, flag: "as-of") } catch let e as MailError { issue(p + ["as-of"], e.description) } catch {}
            }
            if let (tb, p) = source("max-bytes-per-second") {
                if let n = tb["max-bytes-per-second"]?.int, n > 0 { job.maxBytesPerSecond = Int64(n) } else if let s = tb["max-bytes-per-second"]?.string, let n = ByteCountArgument.parse(s) { job.maxBytesPerSecond = n } else {
                    issue(p + ["max-bytes-per-second"], "max-bytes-per-second must be a positive number, or a string like \"10M\"")
                }
            }
            if let (tb, p) = source("max-messages-per-second") {
                if let n = tb["max-messages-per-second"]?.double ?? tb["max-messages-per-second"]?.int.map(Double.init), n > 0 { job.maxMessagesPerSecond = n } else {
                    issue(p + ["max-messages-per-second"], "max-messages-per-second must be a positive number")
                }
            }
            // Options that make no sense for this kind of job, from [defaults], are ignored; in the job itself they are errors.
            if kind != .migrate, t["delete-source"] == nil { job.deleteSource = false }
            if kind != .backup, t["format"] == nil, t["compression"] == nil { job.format = nil; job.compression = nil }
            if kind != .restore, t["as-of"] == nil { job.asOf = nil }
            if t["into"] == nil, !job.from.location.isPOP3 { job.into = nil }
            do { try job.validate() } catch let e as MailError { issue(at, "job '\(name)': \(e.description)") } catch {}
            return job
        }

        mutating func accountEndpoint(_ t: TOMLTable, location: StoreLocation, name: String, side: Side) -> EndpointSpec? {
            let at = ["accounts", name]
            var flags = EndpointFlags()
            if let s = string(t, "tls", at: at) {
                if let m = TLSMode(rawValue: s) { flags.tls = m } else { issue(at + ["tls"], "tls '\(s)' is not none, starttls or implicit") }
            }
            flags.caFile = string(t, "ca-file", at: at).map(resolveFile)
            flags.passwordEnv = string(t, "password-env", at: at)
            flags.passwordFile = string(t, "password-file", at: at).map(resolveFile)
            flags.passwordCommand = string(t, "password-command", at: at)
            flags.oauth2TokenCommand = string(t, "oauth2-token-command", at: at)
            flags.oauth2TokenEndpoint = string(t, "oauth2-token-endpoint", at: at)
            flags.oauth2ClientID = string(t, "oauth2-client-id", at: at)
            flags.oauth2ClientSecretFile = string(t, "oauth2-client-secret-file", at: at).map(resolveFile)
            flags.oauth2RefreshTokenFile = string(t, "oauth2-refresh-token-file", at: at).map(resolveFile)
            flags.oauth2Scope = string(t, "oauth2-scope", at: at)
            flags.admin = string(t, "admin", at: at)
            flags.masterUser = string(t, "master-user", at: at)
            do {
                return try flags.endpoint(url: location.description, side: side, sharedCAFile: nil)
            } catch let e as MailError {
                issue(at, "account '\(name)': " + e.description.replacingOccurrences(of: "--\(side.rawValue)-", with: ""))
                return nil
            } catch { return nil }
        }

        // MARK: typed access that reports type errors with their line

        mutating func checkKeys(_ t: TOMLTable, allowed: [String], at: [String]) {
            for k in t.keys where !allowed.contains(k) {
                if at.isEmpty, k == "password" || k == "pass" { continue }
                if at.count == 2, at[0] == "accounts", k == "password" || k == "pass" { continue }
                let near = Suggest.nearest(k, in: allowed)
                let whereText = at.isEmpty ? "at the top level" : "in [\(at.joined(separator: "."))]"
                issue(at + [k], "unknown key '\(k)' \(whereText)" + (near.map { "; did you mean '\($0)'?" } ?? ""))
            }
        }

        mutating func table(_ t: TOMLTable, _ key: String, at: [String]) -> TOMLTable? {
            guard let v = t[key] else { return nil }
            guard let tb = v.table else {
                issue(at + [key], "\(key) must be a table")
                return nil
            }
            return tb
        }

        mutating func string(_ t: TOMLTable, _ key: String, at: [String]) -> String? {
            guard let v = t[key] else { return nil }
            guard let s = v.string else {
                issue(at + [key], "\(key) must be a string (in quotes)")
                return nil
            }
            return s
        }

        mutating func int(_ t: TOMLTable, _ key: String, at: [String]) -> Int? {
            guard let v = t[key] else { return nil }
            guard let n = v.int else {
                issue(at + [key], "\(key) must be a whole number")
                return nil
            }
            return n
        }

        mutating func bool(_ t: TOMLTable, _ key: String, at: [String]) -> Bool? {
            guard let v = t[key] else { return nil }
            guard let b = v.bool else {
                issue(at + [key], "\(key) must be true or false")
                return nil
            }
            return b
        }

        mutating func stringArray(_ t: TOMLTable, _ key: String, at: [String]) -> [String]? {
            guard let v = t[key] else { return nil }
            if let s = v.string { return [s] }
            guard let arr = v.array else {
                issue(at + [key], "\(key) must be a list of strings, like [\"INBOX\", \"Archive/**\"]")
                return nil
            }
            var out: [String] = []
            for item in arr {
                guard let s = item.string else {
                    issue(at + [key], "\(key) must be a list of strings")
                    return nil
                }
                out.append(s)
            }
            return out
        }

        /// `map = ["Sent Items=Sent"]` or `map = { "Sent Items" = "Sent" }`.
        mutating func mappings(_ t: TOMLTable, at: [String]) -> [FolderMapping] {
            guard let v = t["map"] else { return [] }
            var out: [FolderMapping] = []
            if let tb = v.table {
                for k in tb.keys.sorted() {
                    guard let newName = tb[k]?.string, let o = FolderPath(k), let n = FolderPath(newName) else {
                        issue(at + ["map"], "map values must be folder names in quotes")
                        continue
                    }
                    out.append(FolderMapping(old: o, new: n))
                }
                return out
            }
            for s in stringArray(t, "map", at: at) ?? [] {
                do { out.append(try FolderMapping(parsing: s)) } catch let e as MailError { issue(at + ["map"], e.description) } catch {}
            }
            return out
        }

        /// Paths in the file are relative to the file's folder.
        func resolveFile(_ p: String) -> String {
            if p.hasPrefix("/") { return p }
            if p.hasPrefix("~") { return (p as NSString).expandingTildeInPath }
            return baseDirectory + "/" + p
        }

        func resolveStorePath(_ url: String) -> String {
            for scheme in ["maildir:", "mbox:", "archive:"] where url.lowercased().hasPrefix(scheme) {
                var rest = String(url.dropFirst(scheme.count))
                if rest.hasPrefix("//") { rest = String(rest.dropFirst(2)) }
                if rest.isEmpty { return url }
                return scheme + resolveFile(rest)
            }
            return url
        }
    }
}

extension StoreLocation {
    var isPOP3: Bool {
        if case .pop3 = self { return true }
        return false
    }
}

/// "Did you mean …?" for config keys and account names.
enum Suggest {
    static func nearest(_ word: String, in candidates: [String]) -> String? {
        let scored = candidates.map { ($0, distance(word.lowercased(), $0.lowercased())) }
        guard let best = scored.min(by: { $0.1 < $1.1 }) else { return nil }
        return best.1 <= max(2, word.count / 3) ? best.0 : nil
    }

    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev = Array(0...b.count)
        for i in 1...a.count {
            var cur = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            prev = cur
        }
        return prev[b.count]
    }
}

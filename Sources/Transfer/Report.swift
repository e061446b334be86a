import Foundation
import MailModel

/// What a run did, as SPEC.md describes it (`--report FILE.json`, `--json`).
/// It never holds passwords, tokens or message bodies: store URLs are
/// redacted and messages are named by folder, source id and key.
public struct Report: Codable, Sendable {
    public var command: String
    public var source: String
    public var destination: String
    public var started: Date
    public var finished: Date
    public var dryRun: Bool
    public var folders: [FolderReport]
    /// Every message or folder that failed, with a reason.
    public var failures: [Failure]
    /// Where INTERNALDATEs came from (POP3 sources): `received`, `date`, `download`, `stored`.
    public var dateSources: [String: Int]
    /// Messages matched by Message-ID + Date + From on a destination that rewrites messages.
    public var headerMatches: [HeaderMatch]
    /// Keywords a destination refused; the messages went through without them.
    public var droppedKeywords: [DroppedKeyword]
    /// Journal entries a crashed run had left open, and how they were settled.
    public var settledFromCrash: Int
    /// The plan, for `--dry-run`.
    public var plan: [PlannedAction]?
    /// How throttling shaped the run (nil when no server throttled or refused a connection).
    public var throttling: Throttling?
    /// Waits imposed by `--max-bytes-per-second` / `--max-messages-per-second` (nil without a cap).
    public var pacing: Pacing?

    public struct Failure: Codable, Sendable, Hashable {
        public var folder: String
        /// nil when the whole folder failed.
        public var sourceID: String?
        public var reason: String
    }

    public struct HeaderMatch: Codable, Sendable, Hashable {
        public var folder: String
        public var sourceID: String
        public var destinationID: String
        public var messageID: String?
    }

    public struct DroppedKeyword: Codable, Sendable, Hashable {
        public var folder: String
        public var sourceID: String
        public var keyword: String
    }

    public init(command: String, source: String, destination: String, started: Date, dryRun: Bool) {
        self.command = command
        self.source = StoreLocation.redact(source)
        self.destination = StoreLocation.redact(destination)
        self.started = started
        self.finished = started
        self.dryRun = dryRun
        self.folders = []
        self.failures = []
        self.dateSources = [:]
        self.headerMatches = []
        self.droppedKeywords = []
        self.settledFromCrash = 0
        self.plan = nil
        self.throttling = nil
        self.pacing = nil
    }

    public var totals: FolderReport {
        var t = FolderReport(source: "*", destination: "*")
        for f in folders {
            t.found += f.found
            t.copied += f.copied
            t.duplicates += f.duplicates
            t.skipped += f.skipped
            t.failed += f.failed
            t.bytes += f.bytes
            t.verified += f.verified
            t.missing += f.missing
            t.deleted += f.deleted
            t.flagsSet += f.flagsSet
        }
        return t
    }

    /// 0 when everything asked was done, 1 when something failed (SPEC.md).
    public var exitCode: Int32 { failures.isEmpty ? 0 : 1 }

    public func json(pretty: Bool = true) throws -> Data {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys]
        return try e.encode(self)
    }
}

/// One folder pair's counts.
public struct FolderReport: Codable, Sendable, Hashable {
    public var source: String
    public var destination: String
    public var created = false
    /// Selected source messages.
    public var found = 0
    public var copied = 0
    /// Already in the destination (earlier run, crashed run, another tool), or
    /// repeated in the source folder.
    public var duplicates = 0
    /// Gone from the source between listing and fetching.
    public var skipped = 0
    public var failed = 0
    /// Bytes copied.
    public var bytes: Int64 = 0
    public var flagsSet = 0
    /// After verification: source messages found in the destination, and those not.
    public var verified = 0
    public var missing = 0
    /// Source messages deleted after verification (`--delete-source`), or
    /// destination messages deleted by deletion propagation.
    public var deleted = 0
    /// The source had no message ids of its own (POP3 without UIDL): ids were
    /// made from a hash of each message's headers and size.
    public var syntheticSourceIDs = false

    public init(source: String, destination: String) {
        self.source = source
        self.destination = destination
    }
}

/// The outcome of `verify`: every selected source message either found in
/// the destination or listed as missing.
public struct VerifyReport: Codable, Sendable {
    public var source: String
    public var destination: String
    public var started: Date
    public var finished: Date
    public var folders: [Folder]
    public var headerMatches: [Report.HeaderMatch]

    public struct Folder: Codable, Sendable, Hashable {
        public var source: String
        public var destination: String
        public var checked: Int
        public var verified: Int
        public var missing: [Missing]
    }

    public struct Missing: Codable, Sendable, Hashable {
        public var sourceID: String
        public var key: String?
        public var messageID: String?
        public var reason: String
    }

    public var missingCount: Int { folders.reduce(0) { $0 + $1.missing.count } }
    /// 0 when every source message is in the destination, else 1.
    public var exitCode: Int32 { missingCount == 0 ? 0 : 1 }

    public func json(pretty: Bool = true) throws -> Data {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys]
        return try e.encode(self)
    }
}

/// A plan step as `--dry-run` prints it.
public struct PlannedAction: Codable, Sendable, Hashable, CustomStringConvertible {
    public var verb: String
    public var folder: String
    public var detail: String

    public var description: String { "\(verb) \(folder)\(detail.isEmpty ? "" : ": " + detail)" }

    init(_ a: Action) {
        switch a {
        case .createFolder(let f): self.init(verb: "create", folder: f.description, detail: "")
        case .hash(let side, let f, let ids): self.init(verb: "compare", folder: f.description, detail: "\(ids.count) \(side.rawValue) message(s) by key")
        case .copy(let c):
            self.init(verb: "copy", folder: c.sourceFolder.description,
                      detail: "\(c.sourceID) -> \(c.destinationFolder)\(c.size.map { " (\($0) bytes)" } ?? "")")
        case .link(let l): self.init(verb: "present", folder: l.sourceFolder.description,
                                     detail: "\(l.sourceID) = \(l.destinationFolder) \(l.destinationID) (by \(l.matchedBy.rawValue))")
        case .duplicate(let f, let id, let k): self.init(verb: "duplicate", folder: f.description, detail: "\(id) (\(k.short))")
        case .setFlags(let f, let id, let flags): self.init(verb: "flags", folder: f.description, detail: "\(id) \(flags)")
        case .deleteDestination(let f, let ids): self.init(verb: "delete-destination", folder: f.description, detail: "\(ids.count) message(s)")
        case .deleteSource(let f, let ids): self.init(verb: "delete-source", folder: f.description, detail: "\(ids.count) message(s)")
        }
    }

    init(verb: String, folder: String, detail: String) {
        self.verb = verb
        self.folder = folder
        self.detail = detail
    }
}

/// Renders a dry run's plan for a terminal.
public enum PlanPrinter {
    public static func render(_ report: Report) -> String {
        var lines = ["mailferry migrate --dry-run: \(report.source) -> \(report.destination)", ""]
        for f in report.folders {
            var l = "  \(f.source) -> \(f.destination)\(f.created ? " (new)" : ""): \(f.found) found, \(f.copied) to copy, \(f.duplicates) already there"
            if f.flagsSet > 0 { l += ", \(f.flagsSet) flag change(s)" }
            if f.deleted > 0 { l += ", \(f.deleted) to delete" }
            lines.append(l)
        }
        if let plan = report.plan, !plan.isEmpty {
            lines.append("")
            lines.append("Plan (\(plan.count) step(s)):")
            lines += plan.filter { $0.verb != "present" }.map { "  " + $0.description }
        }
        for f in report.failures { lines.append("  ! \(f.folder)\(f.sourceID.map { " \($0)" } ?? ""): \(f.reason)") }
        lines.append("")
        lines.append("Nothing was written (dry run).")
        return lines.joined(separator: "\n")
    }
}

import ArgumentParser
import Foundation
import MailModel

struct ArchiveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "archive",
        abstract: "Look after an archive: list its volumes, check every message, prune deleted ones.",
        subcommands: [ArchiveListCommand.self, ArchiveCheckCommand.self, ArchivePruneCommand.self])
}

/// `archive:PATH` or a plain PATH.
func archivePath(_ text: String) throws -> String {
    if text.lowercased().hasPrefix("archive:") {
        guard case .archive(let p) = try StoreLocation(parsing: text) else { throw ValidationError("'\(text)' is not an archive") }
        return p
    }
    if text.contains("://") || text.lowercased().hasPrefix("maildir:") || text.lowercased().hasPrefix("mbox:") {
        throw MailError(.usage, scope: .local, "'\(StoreLocation.redact(text))' is not an archive", hint: "give archive:PATH or a plain PATH")
    }
    return text
}

struct ArchiveListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Show an archive's volumes and totals.",
        discussion: """
        Examples:
          mailferry archive list /var/backups/mail/alice
          mailferry archive list archive:/var/backups/mail/alice --json
        """)
    @Argument(help: ArgumentHelp("The archive.", valueName: "path")) var path: String
    @OptionGroup(title: "Output") var output: OutputOptions

    func run() async throws {
        Diagnostics.configure(output.settings)
        try await ArchiveMaintenance.list(path: archivePath(path), output: output.settings)
    }
}

struct ArchiveCheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Re-read every volume and check every message against its hash in the catalog.",
        discussion: """
        Exits 0 when the archive is whole, 6 when a volume or message is missing or damaged.

        Examples:
          mailferry archive check /var/backups/mail/alice
        """)
    @Argument(help: ArgumentHelp("The archive.", valueName: "path")) var path: String
    @OptionGroup(title: "Output") var output: OutputOptions

    func run() async throws {
        Diagnostics.configure(output.settings)
        try await ArchiveMaintenance.check(path: archivePath(path), output: output.settings)
    }
}

struct ArchivePruneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Drop messages deleted on the source before a date, rewriting the volumes that hold them.",
        discussion: """
        Examples:
          mailferry archive prune /var/backups/mail/alice --deleted-before 2025-01-01
          mailferry archive prune /var/backups/mail/alice --deleted-before 365d --dry-run
        """)
    @Argument(help: ArgumentHelp("The archive.", valueName: "path")) var path: String
    @Option(name: .customLong("deleted-before"), help: ArgumentHelp("Prune messages deleted on the source before this time (2025-01-01, or an age like 365d).", valueName: "date"))
    var deletedBefore: String
    @ArgumentParser.Flag(name: .customLong("dry-run"), help: "Show what would be pruned; change nothing.")
    var dryRun = false
    @OptionGroup(title: "Output") var output: OutputOptions

    func run() async throws {
        Diagnostics.configure(output.settings)
        let date = try TimeArgument.parse(deletedBefore, flag: "--deleted-before")
        try await ArchiveMaintenance.prune(path: archivePath(path), deletedBefore: date, dryRun: dryRun, output: output.settings)
    }
}

import ArgumentParser
import Foundation
import MailModel

/// migrate, backup, restore and verify: each turns its flags into a job,
/// and runs it the same way.
protocol TransferCommand: AsyncParsableCommand {
    var output: OutputOptions { get }
    /// The job the flags describe, not yet validated.
    func makeJob() throws -> JobSpec
}

extension TransferCommand {
    func run() async throws {
        let job = try makeJob()
        try job.validate()
        try await CLIRun.execute(single: job, output: output.settings)
    }
}

extension JobSpec {
    /// A job with the folder selection the transfer commands share:
    /// `--folder`/`--exclude`, `--map OLD=NEW` and `--into FOLDER`.
    init(kind: Kind, from: EndpointSpec, to: EndpointSpec, folders: FolderOptions, map: [String] = [], into: String? = nil) throws {
        self.init(kind: kind, from: from, to: to)
        self.folders = folders.folders
        exclude = folders.exclude
        self.map = try map.map(FolderMapping.init(parsing:))
        if let into {
            guard let p = FolderPath(into) else { throw ValidationError("--into needs a folder name") }
            self.into = p
        }
    }
}

struct MigrateCommand: TransferCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Copy every message of every selected folder that the destination lacks, then verify.",
        discussion: """
        Re-running is safe and cheap: a state file remembers what was copied, and a message \
        already in the destination (same bytes) is never copied twice. With --delete-source, \
        source messages are deleted only after the copy has been verified.

        Examples:
          # POP3 mailbox into an IMAP account, passwords from the environment
          export MAILFERRY_FROM_PASSWORD MAILFERRY_TO_PASSWORD
          mailferry migrate --from pop3s://alice@pop.old.example \\
              --to imaps://alice@imap.new.example --into INBOX

          # IMAP to IMAP, two folders at a time, renaming the sent folder
          mailferry migrate --from imaps://bob%40old.example@mail.old.example \\
              --to imaps://bob@mail.new.example --map 'Sent Items=Sent' \\
              --exclude Junk --parallel 2 --report bob.json \\
              --from-password-command 'pass show mail/old-bob' \\
              --to-password-file ~/.config/mailferry/new-bob

          # Admin migration: log in as an admin, act for the user
          mailferry migrate --from imaps://carol@old.example --from-admin admin \\
              --to maildir:/srv/mail/carol
        """)

    @Option(name: .customLong("from"), help: ArgumentHelp("The store to copy from.", valueName: "url"))
    var from: String
    @Option(name: .customLong("to"), help: ArgumentHelp("The store to copy into.", valueName: "url"))
    var to: String
    @Option(name: .customLong("into"), help: ArgumentHelp("The destination folder for a POP3 source (default INBOX).", valueName: "folder"))
    var into: String?
    @ArgumentParser.Flag(name: .customLong("delete-source"), help: "Delete source messages once the copy is verified.")
    var deleteSource = false
    @OptionGroup(title: "Folders") var folderOptions: FolderOptions
    @Option(name: .customLong("map"), help: ArgumentHelp("Rename a folder (and its subfolders) on the way (repeatable).", valueName: "old=new"))
    var map: [String] = []
    @OptionGroup(title: "Run") var runOptions: RunOptions
    @OptionGroup(title: "Source connection") var source: SourceOptions
    @OptionGroup(title: "Destination connection") var destination: DestinationOptions
    @OptionGroup(title: "Trust") var trust: TrustOptions
    @OptionGroup(title: "Output") var output: OutputOptions

    func makeJob() throws -> JobSpec {
        var job = try JobSpec(kind: .migrate, from: source.endpoint(from, trust: trust), to: destination.endpoint(to, trust: trust),
                              folders: folderOptions, map: map, into: into)
        job.deleteSource = deleteSource
        try runOptions.apply(to: &job)
        return job
    }
}

struct BackupCommand: TransferCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Add one incremental volume to an archive with what is new since the last run.",
        discussion: """
        Each run writes one compressed tar volume (written to a temporary name and renamed into \
        place when complete) and records flag changes and deletions in the archive's catalog. \
        Extracting every volume in order with plain tar gives a Maildir tree (or mbox files).

        Examples:
          export MAILFERRY_FROM_PASSWORD
          mailferry backup --from imaps://alice@imap.example.net \\
              --to archive:/var/backups/mail/alice
          mailferry backup --from maildir:/home/bob/Maildir \\
              --to archive:/mnt/usb/bob --format mbox --compression xz
        """)

    @Option(name: .customLong("from"), help: ArgumentHelp("The store to back up.", valueName: "url"))
    var from: String
    @Option(name: .customLong("to"), help: ArgumentHelp("The archive: archive:PATH.", valueName: "url"))
    var to: String
    @Option(name: .customLong("format"), help: ArgumentHelp("How messages are laid out inside volumes.", valueName: "maildir|mbox"))
    var format: ArchiveFormatOption?
    @Option(name: .customLong("compression"), help: ArgumentHelp("How volumes are compressed (default zstd).", valueName: "zstd|gzip|xz|none"))
    var compression: CompressionOption?
    @OptionGroup(title: "Folders") var folderOptions: FolderOptions
    @OptionGroup(title: "Run") var runOptions: RunOptions
    @OptionGroup(title: "Source connection") var source: SourceOptions
    @OptionGroup(title: "Trust") var trust: TrustOptions
    @OptionGroup(title: "Output") var output: OutputOptions

    func makeJob() throws -> JobSpec {
        var job = try JobSpec(kind: .backup, from: source.endpoint(from, trust: trust),
                              to: EndpointFlags().endpoint(url: to, side: .to, sharedCAFile: nil), folders: folderOptions)
        job.format = format
        job.compression = compression
        try runOptions.apply(to: &job)
        return job
    }
}

struct RestoreCommand: TransferCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Put messages from an archive back into a mailbox; running it again adds nothing twice.",
        discussion: """
        Examples:
          export MAILFERRY_TO_PASSWORD
          mailferry restore --from archive:/var/backups/mail/alice \\
              --to imaps://alice@imap.example.net
          # one folder tree, as the archive stood on the first of March
          mailferry restore --from archive:/var/backups/mail/alice \\
              --to maildir:/tmp/alice-restore --folder 'Projects/**' --as-of 2026-03-01
        """)

    @Option(name: .customLong("from"), help: ArgumentHelp("The archive: archive:PATH.", valueName: "url"))
    var from: String
    @Option(name: .customLong("to"), help: ArgumentHelp("The store to restore into.", valueName: "url"))
    var to: String
    @Option(name: .customLong("as-of"), help: ArgumentHelp("Restore the archive as it was at this time (2026-03-01, 2026-03-01T18:00:00Z, or an age like 7d).", valueName: "time"))
    var asOf: String?
    @OptionGroup(title: "Folders") var folderOptions: FolderOptions
    @Option(name: .customLong("map"), help: ArgumentHelp("Rename a folder on the way (repeatable).", valueName: "old=new"))
    var map: [String] = []
    @OptionGroup(title: "Run") var runOptions: RunOptions
    @OptionGroup(title: "Destination connection") var destination: DestinationOptions
    @OptionGroup(title: "Trust") var trust: TrustOptions
    @OptionGroup(title: "Output") var output: OutputOptions

    func makeJob() throws -> JobSpec {
        var job = try JobSpec(kind: .restore, from: EndpointFlags().endpoint(url: from, side: .from, sharedCAFile: nil),
                              to: destination.endpoint(to, trust: trust), folders: folderOptions, map: map)
        if let asOf { job.asOf = try TimeArgument.parse(asOf, flag: "--as-of") }
        try runOptions.apply(to: &job)
        return job
    }
}

struct VerifyCommand: TransferCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check that every source message is in the destination; list what is missing.",
        discussion: """
        Exits 0 when every selected source message is in the destination, 1 when some are missing \
        (each one is listed, and in the report).

        Examples:
          mailferry verify --from pop3s://alice@pop.old.example \\
              --to imaps://alice@imap.new.example --into INBOX
          mailferry verify --from archive:/var/backups/mail/alice \\
              --to maildir:/tmp/alice-restore --json
        """)

    @Option(name: .customLong("from"), help: ArgumentHelp("The store whose messages must be present.", valueName: "url"))
    var from: String
    @Option(name: .customLong("to"), help: ArgumentHelp("The store to look in.", valueName: "url"))
    var to: String
    @Option(name: .customLong("into"), help: ArgumentHelp("For a POP3 source, the destination folder (default INBOX).", valueName: "folder"))
    var into: String?
    @OptionGroup(title: "Folders") var folderOptions: FolderOptions
    @Option(name: .customLong("map"), help: ArgumentHelp("A folder renamed by the migration (repeatable).", valueName: "old=new"))
    var map: [String] = []
    @Option(name: .customLong("report"), help: ArgumentHelp("Also write the report to this JSON file.", valueName: "file.json"))
    var report: String?
    @OptionGroup(title: "Source connection") var source: SourceOptions
    @OptionGroup(title: "Destination connection") var destination: DestinationOptions
    @OptionGroup(title: "Trust") var trust: TrustOptions
    @OptionGroup(title: "Output") var output: OutputOptions

    func makeJob() throws -> JobSpec {
        var job = try JobSpec(kind: .verify, from: source.endpoint(from, trust: trust), to: destination.endpoint(to, trust: trust),
                              folders: folderOptions, map: map, into: into)
        job.reportPath = report
        return job
    }
}

import ArgumentParser
import Foundation
import MailModel

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the jobs of a config file (all of them, or the ones named).",
        discussion: """
        A config file names accounts (a store URL and where its password comes from) and jobs \
        (migrate, backup, restore or verify, with the same options as the flags). Jobs run in \
        the order written, or several at once with [run] parallel = N or --parallel N. Paths in \
        the file are relative to the file's folder. Passwords never go in the file itself: use \
        password-env, password-file, password-command or oauth2-token-command. See examples/ \
        in the source tree.

        The exit code is 0 when every job succeeded; otherwise the most serious of the jobs' \
        codes (130, 6, 5, 3, 4, 2, 1 in that order).

        Examples:
          mailferry run --check /etc/mailferry/nightly.toml
          mailferry run /etc/mailferry/nightly.toml
          mailferry run /etc/mailferry/nightly.toml alice-backup bob-backup --json
        """)

    @Argument(help: ArgumentHelp("The config file (TOML).", valueName: "config.toml"))
    var config: String
    @Argument(help: ArgumentHelp("Only these jobs (default: every job in the file).", valueName: "job"))
    var jobs: [String] = []
    @ArgumentParser.Flag(name: .customLong("check"), help: "Only check the file; name the line of each error. Nothing is connected to.")
    var check = false
    @Option(name: .customLong("parallel"), help: ArgumentHelp("Run this many jobs at once (overrides [run] parallel).", valueName: "n"))
    var parallel: Int?
    @OptionGroup(title: "Output") var output: OutputOptions

    func run() async throws {
        let settings = output.settings
        Diagnostics.configure(settings)
        let file: ConfigFile
        do {
            file = try ConfigFile.load(path: config)
        } catch let e as ConfigErrors {
            for i in e.issues { Diagnostics.error(i.description) }
            if settings.json {
                try JSONOutput.print(CheckSummary(ok: false, config: config, errors: e.issues.map { .init(line: $0.line, message: $0.message) }))
            }
            throw ExitCode(ExitStatus.usage.rawValue)
        }
        var selected = file.jobs
        if !jobs.isEmpty {
            let known = file.jobs.compactMap(\.name)
            for name in jobs where !known.contains(name) {
                let near = Suggest.nearest(name, in: known)
                throw MailError(.usage, scope: .local, "\(config) has no job named '\(name)'" + (near.map { "; did you mean '\($0)'?" } ?? ""),
                                hint: "its jobs are: \(known.joined(separator: ", "))")
            }
            selected = file.jobs.filter { jobs.contains($0.name ?? "") }
        }
        if check {
            if settings.json {
                try JSONOutput.print(CheckSummary(ok: true, config: config, jobs: selected.compactMap(\.name), accounts: file.accountNames))
            } else if !settings.quiet {
                print("\(config): OK, \(file.accountNames.count) accounts, \(selected.count) jobs: "
                      + selected.map { "\($0.name ?? "?") (\($0.kind.rawValue) \($0.from.location) → \($0.to.location))" }.joined(separator: ", "))
            }
            return
        }
        if let parallel, !(1...32).contains(parallel) { throw ValidationError("--parallel must be between 1 and 32") }
        try await CLIRun.execute(jobs: selected, parallelJobs: parallel ?? file.parallelJobs, output: settings)
    }

    struct CheckSummary: Codable {
        struct Issue: Codable {
            var line: Int?
            var message: String
        }
        var command = "run --check"
        var ok: Bool
        var config: String
        var errors: [Issue] = []
        var jobs: [String] = []
        var accounts: [String] = []
    }
}

import Foundation
import Testing

/// The command line as a user meets it: usage errors exit 2 with one clear
/// message, unknown flags get a suggestion, passwords in URLs are refused.
@Suite struct ArgumentTests {
    @Test(arguments: [
        (["migrate", "--from", "maildir:/tmp/a", "--to", "maildir:/tmp/b", "--dyr-run"], "--dry-run"),
        (["migrate", "--from", "maildir:/tmp/a", "--to", "maildir:/tmp/b", "--delete-sorce"], "--delete-source"),
        (["backup", "--from", "maildir:/tmp/a", "--to", "archive:/tmp/b", "--compresion", "xz"], "--compression"),
        (["migrate", "--from", "maildir:/tmp/a", "--to", "maildir:/tmp/b", "--from-pasword-env", "X"], "--from-password-env"),
    ])
    func unknownFlagSuggestsTheNearest(args: [String], suggestion: String) throws {
        let r = try CLI.mailferry(args)
        #expect(r.status == 2)
        #expect(r.stderr.contains("Did you mean '\(suggestion)'?"), "\(r.stderr)")
    }

    @Test(arguments: ["imap://alice:hunter2secret@mail.example.com", "pop3s://alice:hunter2secret@pop.example.com:995"])
    func passwordInURLIsRefused(url: String) throws {
        let r = try CLI.mailferry(["migrate", "--from", url, "--to", "maildir:/tmp/x"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("password in the store URL is refused"))
        #expect(r.stderr.contains("MAILFERRY_FROM_PASSWORD"))
        #expect(!r.all.contains("hunter2secret"))
    }

    @Test(arguments: [
        (["migrate", "--from", "maildir:/tmp/a", "--to", "pop3://a@h"], "cannot be a destination"),
        (["migrate", "--from", "maildir:/tmp/a", "--to", "archive:/tmp/b"], "mailferry backup"),
        (["backup", "--from", "maildir:/tmp/a", "--to", "maildir:/tmp/b"], "archive:PATH"),
        (["restore", "--from", "maildir:/tmp/a", "--to", "maildir:/tmp/b"], "archive:"),
        (["migrate", "--from", "maildir:/tmp/a", "--to", "maildir:/tmp/b", "--into", "INBOX"], "--into applies only to a POP3 source"),
        (["migrate", "--from", "maildir:/tmp/a", "--to", "maildir:/tmp/b", "--map", "nonsense"], "OLD=NEW"),
        (["migrate", "--from", "maildir:/tmp/a", "--to", "maildir:/tmp/a"], "same store"),
        (["migrate", "--from", "ftp://a@h", "--to", "maildir:/tmp/b"], "unknown store scheme"),
        (["migrate", "--from", "maildir:/tmp/a", "--to", "maildir:/tmp/b", "--parallel", "0"], "--parallel"),
        (["migrate", "--from", "maildir:/tmp/a", "--to", "maildir:/tmp/b", "--from-tls", "none"], "--from-tls applies only"),
        (["migrate", "--from", "imap://a@h", "--to", "maildir:/tmp/b", "--from-password-env", "A", "--from-password-file", "/x"], "exclude each other"),
        (["migrate", "--from", "imap://a@h", "--to", "maildir:/tmp/b", "--from-admin", "root", "--from-master-user", "m"], "exclude each other"),
        (["migrate", "--from", "imap://a@h", "--to", "maildir:/tmp/b", "--from-oauth2-token-endpoint", "https://t.example/token"], "--from-oauth2-client-id"),
        (["restore", "--from", "archive:/tmp/a", "--to", "maildir:/tmp/b", "--as-of", "last tuesday"], "--as-of"),
        (["archive", "prune", "/tmp/a", "--deleted-before", "yesterday-ish"], "--deleted-before"),
        (["migrate", "--from", "maildir:/tmp/a", "--to", "maildir:/tmp/b", "--max-bytes-per-second", "fast"], "--max-bytes-per-second"),
        (["migrate", "--from", "maildir:/tmp/a", "--to", "maildir:/tmp/b", "--quiet", "--verbose"], "contradict"),
    ])
    func usageErrorsExit2WithOneClearLine(args: [String], expected: String) throws {
        let r = try CLI.mailferry(args)
        #expect(r.status == 2, "\(args): \(r.stderr)")
        #expect(r.stderr.contains(expected), "\(args): \(r.stderr)")
        #expect(!r.stderr.contains("Fatal error"))
        #expect(!r.stderr.contains("MailError("), "no type dumps: \(r.stderr)")
    }

    @Test func missingPasswordNamesTheVariable() throws {
        let r = try CLI.mailferry(["folders", "imap://alice@127.0.0.1:1"])
        #expect(r.status == 2, "\(r.stderr)")
        #expect(r.stderr.contains("MAILFERRY_FROM_PASSWORD"), "\(r.stderr)")
    }

    @Test(arguments: [[], ["migrate"], ["backup"], ["restore"], ["verify"], ["folders"], ["archive"], ["archive", "list"],
                      ["archive", "check"], ["archive", "prune"], ["run"]])
    func everyCommandHasHelp(command: [String]) throws {
        let r = try CLI.mailferry(command + ["--help"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("USAGE: mailferry"), "\(command)")
        if !(command.first == "archive" && command.count == 1) {
            #expect(r.stdout.contains("Examples:"), "\(command) has examples")
        }
        // Examples never show a password.
        for word in ["--password ", ":secret@", "PASSWORD=", "hunter2"] {
            #expect(!r.stdout.contains(word), "\(command) help shows \(word)")
        }
    }

    @Test func versionAndCompletions() throws {
        let v = try CLI.mailferry(["--version"])
        #expect(v.status == 0)
        #expect(!v.stdout.isEmpty)
        for shell in ["bash", "zsh", "fish"] {
            let c = try CLI.mailferry(["--generate-completion-script", shell])
            #expect(c.status == 0)
            #expect(c.stdout.contains("migrate"))
        }
    }
}

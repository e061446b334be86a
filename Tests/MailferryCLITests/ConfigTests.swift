import Foundation
import Testing
@testable import MailferryCLI
import MailModel

/// `mailferry run --check` and the config parser: every error named with its line.
@Suite struct ConfigTests {
    static let good = """
    # A POP3-to-IMAP move and a backup
    [run]
    parallel = 2

    [defaults]
    state = "state/{job}.sqlite"
    report = "reports/{job}.json"

    [accounts.old]
    url = "pop3s://alice@pop.example.com"
    password-command = "pass show mail/old"

    [accounts.new]
    url = "imaps://alice%40example.net@imap.example.net"
    password-env = "NEW_PASSWORD"
    ca-file = "/etc/ssl/private-ca.pem"

    [jobs.move]
    kind = "migrate"
    from = "old"
    to = "new"
    into = "Imported"
    delete-source = true

    [jobs.backup]
    kind = "backup"
    from = "new"
    to = "archive:backups/alice"
    exclude = ["Junk", "Trash"]
    compression = "xz"
    max-bytes-per-second = "10M"

    [jobs.rename]
    kind = "migrate"
    from = "new"
    to = "maildir:/srv/mail/alice"
    map = ["Sent Items=Sent"]
    parallel = 3
    """

    @Test func parsesAccountsJobsAndDefaultsInFileOrder() throws {
        let f = try ConfigFile.parse(Self.good, path: "/etc/mailferry/test.toml")
        #expect(f.parallelJobs == 2)
        #expect(f.jobs.map(\.name) == ["move", "backup", "rename"])
        let move = f.jobs[0]
        #expect(move.kind == .migrate)
        #expect(move.into == FolderPath("Imported"))
        #expect(move.deleteSource)
        #expect(move.statePath == "/etc/mailferry/state/move.sqlite")
        #expect(move.reportPath == "/etc/mailferry/reports/move.json")
        guard case .pop3(let a) = move.from.location else { Issue.record("not pop3"); return }
        #expect(a.user == "alice" && a.port == 995 && a.tls == .implicit)
        #expect(move.from.login?.secret == .password(.command("pass show mail/old")))
        #expect(move.to.caFile == "/etc/ssl/private-ca.pem")
        #expect(move.to.location.account?.user == "alice@example.net")
        let backup = f.jobs[1]
        #expect(backup.to.location == .archive(path: "/etc/mailferry/backups/alice"))
        #expect(backup.exclude == ["Junk", "Trash"])
        #expect(backup.compression == .xz)
        #expect(backup.maxBytesPerSecond == Int64(10 * 1024 * 1024))
        let rename = f.jobs[2]
        #expect(rename.map == [FolderMapping(old: FolderPath("Sent Items")!, new: FolderPath("Sent")!)])
        #expect(rename.parallel == 3)
    }

    @Test func namesTheLineOfEachError() throws {
        let text = """
        [accounts.old]
        url = "pop3s://alice@pop.example.com"
        pasword-env = "X"

        [accounts.new]
        url = "imaps://bob:secret@imap.example.net"
        password-env = "Y"

        [jobs.one]
        kind = "migrat"
        from = "old"
        to = "new"

        [jobs.two]
        kind = "backup"
        from = "olf"
        to = "archive:/tmp/x"
        paralel = 2
        """
        do {
            _ = try ConfigFile.parse(text, path: "c.toml")
            Issue.record("accepted a bad file")
        } catch let e as ConfigErrors {
            let lines = Dictionary(grouping: e.issues, by: { $0.line ?? 0 }).mapValues { $0.map(\.message).joined(separator: " | ") }
            #expect(lines[3]?.contains("unknown key 'pasword-env'") == true, "\(e)")
            #expect(lines[3]?.contains("did you mean 'password-env'") == true, "\(e)")
            #expect(lines[6]?.contains("password in the store URL is refused") == true, "\(e)")
            #expect(lines[10]?.contains("kind 'migrat'") == true, "\(e)")
            #expect(lines[16]?.contains("did you mean 'old'") == true, "\(e)")
            #expect(lines[18]?.contains("did you mean 'parallel'") == true, "\(e)")
            #expect(!e.description.contains("secret"), "the password in the URL is not echoed: \(e)")
        }
    }

    @Test func tomlSyntaxErrorNamesItsLine() throws {
        do {
            _ = try ConfigFile.parse("[jobs.a]\nkind = \"migrate\"\nfrom = \n", path: "c.toml")
            Issue.record("accepted bad TOML")
        } catch let e as ConfigErrors {
            #expect(e.issues.first?.line == 3, "\(e)")
            #expect(e.issues.first?.message.contains("not valid TOML") == true)
        }
    }

    @Test func refusesPasswordsInTheFileAndNetworkURLsInJobs() throws {
        let text = """
        [accounts.a]
        url = "imap://alice@mail.example.com"
        password = "hunter2"

        [jobs.j]
        kind = "backup"
        from = "imaps://alice@mail.example.com"
        to = "archive:/tmp/x"
        """
        do {
            _ = try ConfigFile.parse(text, path: "c.toml")
            Issue.record("accepted a password")
        } catch let e as ConfigErrors {
            #expect(e.issues.contains { $0.line == 3 && $0.message.contains("passwords do not go in the config file") }, "\(e)")
            #expect(e.issues.contains { $0.line == 7 && $0.message.contains("[accounts.NAME]") }, "\(e)")
            #expect(!e.description.contains("hunter2"))
        }
    }

    @Test func runCheckThroughTheBinary() throws {
        let dir = try TempDir()
        let good = try dir.write("good.toml", Self.good)
        let r = try CLI.mailferry(["run", "--check", good])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("OK"))
        #expect(r.stdout.contains("move"))

        let bad = try dir.write("bad.toml", "[jobs.x]\nkind = \"migrate\"\nfrom = \"maildir:/tmp/a\"\nto = \"maildir:/tmp/b\"\nfolder = [\"INBOX\"]\n")
        let b = try CLI.mailferry(["run", "--check", bad])
        #expect(b.status == 2)
        #expect(b.stderr.contains("bad.toml:5:"), "\(b.stderr)")
        #expect(b.stderr.contains("did you mean 'folders'"), "\(b.stderr)")

        let j = try CLI.mailferry(["run", "--check", "--json", bad])
        #expect(j.status == 2)
        let obj = try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any]
        #expect(obj?["ok"] as? Bool == false)
        let errors = obj?["errors"] as? [[String: Any]]
        #expect(errors?.first?["line"] as? Int == 5)

        let unknownJob = try CLI.mailferry(["run", good, "mvoe"])
        #expect(unknownJob.status == 2)
        #expect(unknownJob.stderr.contains("did you mean 'move'"), "\(unknownJob.stderr)")
    }

    @Test func examplesInTheRepositoryAreValid() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let dir = root.appendingPathComponent("examples")
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path))?.filter { $0.hasSuffix(".toml") } ?? []
        #expect(files.count >= 3, "examples/ holds the commented configs")
        for f in files {
            let r = try CLI.mailferry(["run", "--check", dir.appendingPathComponent(f).path])
            #expect(r.status == 0, "\(f): \(r.stderr)")
        }
    }

    @Test func lineIndexSkipsMultilineValues() {
        let idx = TOMLLineIndex("""
        [jobs.a]
        map = [
          "x=y",
          "kind = z",
        ]
        kind = "migrate"
        note = \"\"\"
        from = nowhere
        \"\"\"
        from = "m"
        """)
        #expect(idx.line(["jobs", "a", "map"]) == 2)
        #expect(idx.line(["jobs", "a", "kind"]) == 6)
        #expect(idx.line(["jobs", "a", "from"]) == 10)
    }
}

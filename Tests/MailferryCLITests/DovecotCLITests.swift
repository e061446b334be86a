import Foundation
import MailModel
import MailTestSupport
import Testing

/// The binary against the real Dovecot fixture: the error classes a user
/// meets (wrong password, untrusted certificate), `--json` output checked
/// against the server, admin logins, and a config file with IMAP accounts.
@Suite(.serialized, .enabled(if: DovecotFixture.serverTestsEnabled, "MAILFERRY_SKIP_SERVER_TESTS=1"))
struct DovecotCLITests {
    static func samples(_ n: Int, tag: String) -> [SeedMessage] {
        (1...n).map { i in
            SeedMessage(text: "From: s\(i)@example.net\r\nTo: a@example.com\r\nSubject: \(tag) \(i)\r\nMessage-ID: <\(tag)-\(i)@example.net>\r\nDate: Mon, 2 Jun 2025 10:00:00 +0000\r\n\r\nBody \(i) of \(tag).\r\n",
                        flags: i % 2 == 0 ? [.seen] : [])
        }
    }

    /// Dovecot keeps LF on disk; a message is the same message after CRLF normalisation.
    static func crlf(_ b: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var prev: UInt8 = 0
        for c in b {
            if c == 10, prev != 13 { out.append(13) }
            out.append(c)
            prev = c
        }
        return out
    }

    @Test func migratePOP3ToIMAPWithJSONCheckedAgainstTheServer() throws {
        let f = try DovecotFixture.shared()
        let alice = f.makeUser(prefix: "alice"), bob = f.makeUser(prefix: "bob")
        let seeded = Self.samples(7, tag: "pop")
        try f.seed(user: alice.user, messages: seeded)
        let dir = try TempDir()
        let env = ["MAILFERRY_FROM_PASSWORD": alice.password, "MAILFERRY_TO_PASSWORD": bob.password]
        let r = try CLI.mailferry(["migrate", "--from", "pop3s://\(alice.user)@\(f.host):\(f.pop3sPort)",
                                   "--to", "imaps://\(bob.user)@\(f.host):\(f.imapsPort)", "--into", "Imported",
                                   "--ca-file", f.caFile, "--state", dir.path + "/s.sqlite", "--json"], env: env)
        #expect(r.status == 0, "\(r.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let folders = report["folders"] as? [[String: Any]] ?? []
        #expect(folders.first?["destination"] as? String == "Imported")
        #expect(folders.first?["copied"] as? Int == 7)
        #expect((report["source"] as? String)?.contains(alice.password) == false)
        // What the report says is what the server holds: the same bytes.
        let onServer = try f.messages(user: bob.user, folder: "Imported")
        #expect(onServer.count == 7)
        #expect(Set(onServer.map { Self.crlf($0.bytes) }) == Set(seeded.map { Self.crlf($0.bytes) }))

        // STARTTLS on the plain ports works too, and verify agrees.
        let v = try CLI.mailferry(["verify", "--from", "pop3://\(alice.user)@\(f.host):\(f.pop3Port)",
                                   "--to", "imap://\(bob.user)@\(f.host):\(f.imapPort)", "--into", "Imported",
                                   "--ca-file", f.caFile, "--json"], env: env)
        #expect(v.status == 0, "\(v.stderr)")
    }

    @Test func wrongPasswordExits3() throws {
        let f = try DovecotFixture.shared()
        let u = f.makeUser()
        let r = try CLI.mailferry(["folders", "imaps://\(u.user)@\(f.host):\(f.imapsPort)", "--ca-file", f.caFile],
                                  env: ["MAILFERRY_FROM_PASSWORD": "definitely-not-" + u.password])
        #expect(r.status == 3, "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "one line: \(r.stderr)")
        #expect(!r.stderr.contains(u.password))
    }

    @Test func untrustedCertificateExits4WithTheCAFileHint() throws {
        let f = try DovecotFixture.shared()
        let u = f.makeUser()
        for url in ["imaps://\(u.user)@\(f.host):\(f.imapsPort)", "pop3://\(u.user)@\(f.host):\(f.pop3Port)"] {
            let r = try CLI.mailferry(["folders", url], env: ["MAILFERRY_FROM_PASSWORD": u.password])
            #expect(r.status == 4, "\(url): \(r.stderr)")
            #expect(r.stderr.contains("--ca-file"), "\(url): \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "one line: \(r.stderr)")
        }
    }

    @Test func adminAndMasterUserLogins() throws {
        let f = try DovecotFixture.shared()
        let u = f.makeUser(prefix: "carol")
        try f.seed(user: u.user, messages: Self.samples(2, tag: "master"))
        let env = ["MAILFERRY_FROM_PASSWORD": f.masterPassword]
        let base = "imaps://\(u.user)@\(f.host):\(f.imapsPort)"
        let m = try CLI.mailferry(["folders", base, "--ca-file", f.caFile, "--from-master-user", f.masterUser, "--json"], env: env)
        #expect(m.status == 0, "\(m.stderr)")
        #expect(m.stdout.contains("\"messages\" : 2"), "\(m.stdout)")
        let a = try CLI.mailferry(["folders", base, "--ca-file", f.caFile, "--from-admin", f.masterUser, "--json"], env: env)
        #expect(a.status == 0, "\(a.stderr)")
        #expect(a.stdout.contains("\"messages\" : 2"), "\(a.stdout)")
    }

    @Test func runAConfigWithIMAPAccounts() throws {
        let f = try DovecotFixture.shared()
        let src = f.makeUser(prefix: "cfgsrc"), dst = f.makeUser(prefix: "cfgdst")
        try f.seed(user: src.user, messages: Self.samples(4, tag: "cfg"))
        try f.seed(user: src.user, folder: "Work", messages: Self.samples(3, tag: "work"))
        let dir = try TempDir()
        let pw = try dir.write("secret", src.password + "\n")
        let config = try dir.write("mailferry.toml", """
        [accounts.old]
        url = "imaps://\(src.user)@\(f.host):\(f.imapsPort)"
        password-file = "secret"
        ca-file = "\(f.caFile)"

        [accounts.new]
        url = "imap://\(dst.user)@\(f.host):\(f.imapPort)"
        password-env = "NEW_PW"
        ca-file = "\(f.caFile)"

        [jobs.move]
        kind = "migrate"
        from = "old"
        to = "new"
        map = ["Work=Archive/Work"]
        state = "state/move.sqlite"

        [jobs.backup]
        kind = "backup"
        from = "new"
        to = "archive:backup"
        state = "state/backup.sqlite"
        """)
        _ = pw
        let check = try CLI.mailferry(["run", "--check", config])
        #expect(check.status == 0, "\(check.stderr)")
        let r = try CLI.mailferry(["run", config, "--json"], env: ["NEW_PW": dst.password])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try f.messages(user: dst.user, folder: "Archive/Work").count == 3)
        #expect(try f.messages(user: dst.user).count == 4)
        #expect(FileManager.default.fileExists(atPath: dir.path + "/backup/catalog.sqlite"))
        #expect(!r.stdout.contains(src.password) && !r.stderr.contains(dst.password))
    }
}

import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The binary against local stores: migrate, backup, restore, verify and
/// `run`, with `--json` parsed back and checked against what is on disk.
@Suite struct LocalEndToEndTests {
    /// A Maildir tree (INBOX at the root, plus "Work/Projects") of sample
    /// messages: corpus messages when the corpus is present, else generated ones.
    static func makeSource(in dir: TempDir, count: Int = 24) throws -> (root: String, messages: [String: [Data]]) {
        let root = dir.path + "/src"
        var made: [String: [Data]] = [:]
        let corpus = ProcessInfo.processInfo.environment["MAILFERRY_CORPUS"]
            ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/mail-corpus").path
        var samples: [Data] = []
        if let names = try? FileManager.default.contentsOfDirectory(atPath: corpus + "/messages") {
            for n in names.sorted().prefix(count) {
                if let d = FileManager.default.contents(atPath: corpus + "/messages/" + n) { samples.append(d) }
            }
        } else {
            print("mail corpus not found at \(corpus); using generated messages")
        }
        while samples.count < count {
            let i = samples.count
            samples.append(Data("From: a\(i)@example.net\r\nTo: b@example.com\r\nSubject: sample \(i)\r\nMessage-ID: <s\(i)@example.net>\r\nDate: Mon, 2 Jun 2025 10:00:00 +0000\r\n\r\nbody \(i)\r\n".utf8))
        }
        for (i, data) in samples.enumerated() {
            let folder = i % 3 == 0 ? "Work/Projects" : "INBOX"
            let dirPath = folder == "INBOX" ? root : root + "/" + folder
            for sub in ["cur", "new", "tmp"] {
                try FileManager.default.createDirectory(atPath: dirPath + "/" + sub, withIntermediateDirectories: true)
            }
            try data.write(to: URL(fileURLWithPath: "\(dirPath)/cur/\(1_700_000_000 + i).M\(i)P1.test,S=\(data.count):2,S"))
            made[folder, default: []].append(data)
        }
        return (root, made)
    }

    static func json(_ text: String) throws -> [String: Any] {
        guard let obj = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw CocoaError(.coderReadCorrupt)
        }
        return obj
    }

    /// The message files under a Maildir folder, as bytes.
    static func maildirMessages(_ dir: String) -> [Data] {
        var out: [Data] = []
        for sub in ["cur", "new"] {
            for f in (try? FileManager.default.contentsOfDirectory(atPath: dir + "/" + sub)) ?? [] {
                if let d = FileManager.default.contents(atPath: dir + "/" + sub + "/" + f) { out.append(d) }
            }
        }
        return out
    }

    @Test func migrateBackupRestoreVerifyWithJSON() throws {
        let dir = try TempDir()
        let (src, made) = try Self.makeSource(in: dir)
        let state = dir.path + "/state"

        let m = try CLI.mailferry(["migrate", "--from", "maildir:" + src, "--to", "maildir:" + dir.path + "/dst",
                                   "--state", state + "/m.sqlite", "--json", "--report", dir.path + "/m.json"])
        #expect(m.status == 0, "\(m.stderr)")
        #expect(m.stderr.isEmpty, "off a terminal, a clean run prints nothing on stderr: \(m.stderr)")
        let report = try Self.json(m.stdout)
        #expect(report["command"] as? String == "migrate")
        let folders = report["folders"] as? [[String: Any]] ?? []
        let copied = folders.reduce(0) { $0 + ($1["copied"] as? Int ?? 0) }
        #expect(copied == made.values.reduce(0) { $0 + $1.count })
        // Checked against the disk: the same bytes, folder by folder.
        #expect(Set(Self.maildirMessages(dir.path + "/dst")) == Set(made["INBOX"] ?? []))
        #expect(Set(Self.maildirMessages(dir.path + "/dst/Work/Projects")) == Set(made["Work/Projects"] ?? []))
        // The report file is the same document, private.
        let file = try Self.json(String(decoding: FileManager.default.contents(atPath: dir.path + "/m.json") ?? Data(), as: UTF8.self))
        #expect(file["command"] as? String == "migrate")
        let perms = (try FileManager.default.attributesOfItem(atPath: dir.path + "/m.json")[.posixPermissions] as? NSNumber)?.intValue
        #expect(perms == 0o600)

        // A re-run copies nothing.
        let again = try CLI.mailferry(["migrate", "--from", "maildir:" + src, "--to", "maildir:" + dir.path + "/dst",
                                       "--state", state + "/m.sqlite", "--json"])
        #expect(again.status == 0)
        let r2 = try Self.json(again.stdout)
        #expect((r2["folders"] as? [[String: Any]] ?? []).reduce(0) { $0 + ($1["copied"] as? Int ?? 0) } == 0)

        // Backup, list, check, restore into mbox, verify.
        let b = try CLI.mailferry(["backup", "--from", "maildir:" + dir.path + "/dst", "--to", "archive:" + dir.path + "/arch",
                                   "--compression", "gzip", "--state", state + "/b.sqlite"])
        #expect(b.status == 0, "\(b.stderr)")
        let vols = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/arch/volumes")
        #expect(vols.count == 1 && vols[0].hasSuffix(".tar.gz"), "\(vols)")
        let l = try CLI.mailferry(["archive", "list", dir.path + "/arch", "--json"])
        #expect(l.status == 0)
        #expect(try Self.json(l.stdout)["storedMessages"] as? Int == made.values.reduce(0) { $0 + $1.count })
        let c = try CLI.mailferry(["archive", "check", "archive:" + dir.path + "/arch", "--json"])
        #expect(c.status == 0, "\(c.stderr)")
        let r = try CLI.mailferry(["restore", "--from", "archive:" + dir.path + "/arch", "--to", "mbox:" + dir.path + "/restored",
                                   "--state", state + "/r.sqlite"])
        #expect(r.status == 0, "\(r.stderr)")
        let v = try CLI.mailferry(["verify", "--from", "maildir:" + src, "--to", "mbox:" + dir.path + "/restored", "--json"])
        #expect(v.status == 0, "\(v.stderr)")
        let vr = try Self.json(v.stdout)
        #expect((vr["folders"] as? [[String: Any]] ?? []).allSatisfy { ($0["missing"] as? [Any])?.isEmpty == true })
    }

    @Test func dryRunWritesNothing() throws {
        let dir = try TempDir()
        let (src, made) = try Self.makeSource(in: dir, count: 5)
        let env = ["XDG_STATE_HOME": dir.path + "/xdg"]
        for (cmd, to) in [("migrate", "maildir:" + dir.path + "/dst"), ("backup", "archive:" + dir.path + "/arch")] {
            let r = try CLI.mailferry([cmd, "--from", "maildir:" + src, "--to", to, "--dry-run", "--json"], env: env)
            #expect(r.status == 0, "\(cmd): \(r.stderr)")
            let report = try Self.json(r.stdout)
            #expect(report["dryRun"] as? Bool == true)
            let plan = report["plan"] as? [[String: Any]] ?? []
            #expect(plan.filter { $0["verb"] as? String == "copy" }.count == made.values.reduce(0) { $0 + $1.count }, "\(cmd)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/dst"))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/arch"))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/xdg"), "no state file either")
    }

    @Test func verifyListsWhatIsMissingAndExits1() throws {
        let dir = try TempDir()
        let (src, _) = try Self.makeSource(in: dir, count: 6)
        let m = try CLI.mailferry(["migrate", "--from", "maildir:" + src, "--to", "maildir:" + dir.path + "/dst",
                                   "--state", dir.path + "/s.sqlite"])
        #expect(m.status == 0, "\(m.stderr)")
        // Remove one message from the destination.
        let cur = dir.path + "/dst/cur"
        let victim = try #require(try FileManager.default.contentsOfDirectory(atPath: cur).first)
        try FileManager.default.removeItem(atPath: cur + "/" + victim)
        let v = try CLI.mailferry(["verify", "--from", "maildir:" + src, "--to", "maildir:" + dir.path + "/dst"])
        #expect(v.status == 1)
        #expect(v.stderr.contains("1 missing"), "\(v.stderr)")
        #expect(v.stderr.contains("missing: INBOX message"), "\(v.stderr)")
    }

    @Test func runsAConfigFileWithJSONSummary() throws {
        let dir = try TempDir()
        let (src, made) = try Self.makeSource(in: dir, count: 9)
        let config = try dir.write("jobs.toml", """
        [run]
        parallel = 2

        [defaults]
        state = "state/{job}.sqlite"
        report = "reports/{job}.json"

        [jobs.copy]
        kind = "migrate"
        from = "maildir:\(src)"
        to = "maildir:out/copy"
        exclude = ["Work/**"]

        [jobs.backup]
        kind = "backup"
        from = "maildir:\(src)"
        to = "archive:out/archive"
        """)
        let r = try CLI.mailferry(["run", config, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let summary = try Self.json(r.stdout)
        let jobs = summary["jobs"] as? [[String: Any]] ?? []
        #expect(jobs.map { $0["name"] as? String } == ["copy", "backup"])
        #expect(jobs.allSatisfy { $0["exitCode"] as? Int == 0 })
        #expect(Set(Self.maildirMessages(dir.path + "/out/copy")) == Set(made["INBOX"] ?? []))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/out/copy/Work"), "excluded")
        #expect(FileManager.default.fileExists(atPath: dir.path + "/reports/copy.json"))
        #expect(FileManager.default.fileExists(atPath: dir.path + "/out/archive/catalog.sqlite"))

        // One job by name.
        let one = try CLI.mailferry(["run", config, "copy", "--json"])
        #expect(one.status == 0)
        #expect((try Self.json(one.stdout)["jobs"] as? [Any])?.count == 1)
    }

    @Test func lockHeldByAnotherRunExits5() throws {
        let dir = try TempDir()
        let (src, _) = try Self.makeSource(in: dir, count: 3)
        let statePath = dir.path + "/s.sqlite"
        // Create the state once, then hold its lock as another run would.
        #expect(try CLI.mailferry(["migrate", "--from", "maildir:" + src, "--to", "maildir:" + dir.path + "/dst", "--state", statePath]).status == 0)
        let fd = open(statePath + ".lock", O_RDWR)
        #expect(fd >= 0)
        defer { close(fd) }
        #expect(flock(fd, LOCK_EX | LOCK_NB) == 0)
        let r = try CLI.mailferry(["migrate", "--from", "maildir:" + src, "--to", "maildir:" + dir.path + "/dst", "--state", statePath])
        #expect(r.status == 5, "\(r.stderr)")
        #expect(r.stderr.contains("held by another run"), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "one line: \(r.stderr)")
    }

    @Test func corruptStateAndArchiveExit6() throws {
        let dir = try TempDir()
        let (src, _) = try Self.makeSource(in: dir, count: 3)
        let statePath = try dir.write("bad.sqlite", String(repeating: "not a database ", count: 100))
        let r = try CLI.mailferry(["migrate", "--from", "maildir:" + src, "--to", "maildir:" + dir.path + "/dst", "--state", statePath])
        #expect(r.status == 6, "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/dst/cur"), "nothing was changed")

        let b = try CLI.mailferry(["backup", "--from", "maildir:" + src, "--to", "archive:" + dir.path + "/arch",
                                   "--compression", "none", "--state", dir.path + "/b.sqlite"])
        #expect(b.status == 0, "\(b.stderr)")
        let vol = dir.path + "/arch/volumes/" + (try FileManager.default.contentsOfDirectory(atPath: dir.path + "/arch/volumes").first ?? "")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: vol))
        // Damage a message body in the middle of the tar.
        let mid = bytes.count / 2
        for i in mid..<(mid + 64) where i < bytes.count { bytes[i] ^= 0x55 }
        try bytes.write(to: URL(fileURLWithPath: vol))
        let c = try CLI.mailferry(["archive", "check", dir.path + "/arch"])
        #expect(c.status == 6, "\(c.stderr)")
    }

    @Test func interruptedRunExits130AndResumes() throws {
        let dir = try TempDir()
        let (src, made) = try Self.makeSource(in: dir, count: 30)
        let args = ["migrate", "--from", "maildir:" + src, "--to", "maildir:" + dir.path + "/dst",
                    "--state", dir.path + "/s.sqlite", "--max-messages-per-second", "10"]
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLI.binary)
        p.arguments = args
        p.environment = ["PATH": "/usr/bin:/bin", "HOME": dir.path]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        // Let it copy a few messages (the rate limit keeps it busy for ~2 s), then Ctrl-C.
        Thread.sleep(forTimeInterval: 1.5)
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus == 130, "\(stderr)")
        #expect(stderr.contains("interrupted"))
        // A re-run resumes and finishes; everything is there exactly once.
        let r = try CLI.mailferry(Array(args.dropLast(2)))
        #expect(r.status == 0, "\(r.stderr)")
        let inbox = Self.maildirMessages(dir.path + "/dst")
        #expect(inbox.count == made["INBOX"]?.count)
        #expect(Set(inbox) == Set(made["INBOX"] ?? []))
    }
}

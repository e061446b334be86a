import Foundation
import Testing

/// "A full disk", through the binary, on a genuinely small file system (see
/// `SmallFilesystem`): a migrate or backup whose destination (Maildir, mbox,
/// archive) or state directory fills up stops with one line naming what it was
/// writing and exit 5 (SPEC.md: local storage error), leaves nothing
/// half-written where anything refers to it, and once space is freed a re-run
/// completes with every message there exactly once.
@Suite(.serialized, .enabled(if: SmallFilesystem.testsEnabled, "MAILFERRY_SKIP_DISK_FULL_TESTS=1"))
struct DiskFullTests {
    static let messageCount = 40

    /// 40 messages of about 8 KiB in two folders (INBOX and Work), with
    /// bodies of pseudo-random base64 so that compression cannot make them fit.
    static func makeSource(in dir: TempDir) throws -> String {
        let root = dir.path + "/src"
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        for i in 0..<messageCount {
            let folder = i % 2 == 0 ? root : root + "/Work"
            for sub in ["cur", "new", "tmp"] {
                try FileManager.default.createDirectory(atPath: folder + "/" + sub, withIntermediateDirectories: true)
            }
            var noise = [UInt8](repeating: 0, count: 6000)
            for j in noise.indices {
                seed ^= seed << 13
                seed ^= seed >> 7
                seed ^= seed << 17
                noise[j] = UInt8(truncatingIfNeeded: seed)
            }
            let b64 = Array(Data(noise).base64EncodedString().utf8)
            let body = stride(from: 0, to: b64.count, by: 76)
                .map { String(decoding: b64[$0..<min($0 + 76, b64.count)], as: UTF8.self) }.joined(separator: "\r\n")
            let text = "From: s\(i)@example.net\r\nTo: a@example.com\r\nSubject: filler \(i)\r\nMessage-ID: <filler-\(i)@example.net>\r\n"
                + "Date: Mon, 2 Jun 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
                + "Content-Transfer-Encoding: base64\r\n\r\n" + body + "\r\n"
            let data = Data(text.utf8)
            try data.write(to: URL(fileURLWithPath: "\(folder)/cur/\(1_700_000_000 + i).M\(i)P1.test,S=\(data.count):2,S"))
        }
        return root
    }

    struct Scenario: Sendable, CustomTestStringConvertible {
        enum Filled: String, Sendable { case destination, state }
        var name: String
        /// `migrate`, `backup` or `restore` (from an archive of the source made first).
        var command: String
        /// The destination URL's scheme: maildir, mbox or archive.
        var scheme: String
        /// Which of the two lives on the small file system.
        var filled: Filled
        /// The tmpfs size, and how much of it is left free for the first run.
        var kibibytes: Int
        var leave: Int
        /// Whether the line must name the message it stopped at.
        var namesMessage: Bool
        var testDescription: String { name }
    }

    /// Sizes: the 40 messages take about 330 kB as files, about 250 kB in a
    /// compressed volume; the SQLite state's WAL grows by about 25 kB a
    /// message (hence the larger file system where the state fills up).
    static let scenarios: [Scenario] = [
        Scenario(name: "Maildir destination", command: "migrate", scheme: "maildir", filled: .destination,
                 kibibytes: 1024, leave: 144, namesMessage: true),
        Scenario(name: "mbox destination", command: "migrate", scheme: "mbox", filled: .destination,
                 kibibytes: 1024, leave: 144, namesMessage: true),
        Scenario(name: "archive volume", command: "backup", scheme: "archive", filled: .destination,
                 kibibytes: 1024, leave: 250, namesMessage: true),
        Scenario(name: "archive catalog at the end of the run", command: "backup", scheme: "archive", filled: .destination,
                 kibibytes: 1024, leave: 400, namesMessage: false),
        Scenario(name: "state directory", command: "migrate", scheme: "maildir", filled: .state,
                 kibibytes: 8192, leave: 200, namesMessage: false),
        Scenario(name: "restore into a Maildir", command: "restore", scheme: "maildir", filled: .destination,
                 kibibytes: 1024, leave: 144, namesMessage: true),
    ]

    @Test(arguments: scenarios)
    func aFullDiskStopsTheRunWithExit5AndAReRunCompletes(_ s: Scenario) throws {
        let dir = try TempDir()
        let src = try Self.makeSource(in: dir)
        let mountPoint = dir.path + "/small"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let fs: SmallFilesystem
        do {
            fs = try SmallFilesystem.make(at: mountPoint, kibibytes: s.kibibytes)
        } catch {
            Issue.record("\(error)")
            return
        }
        defer { fs.stop() }

        let destinationPath = s.filled == .destination ? mountPoint + "/dst" : dir.path + "/dst"
        let statePath = s.filled == .state ? mountPoint + "/state/state.sqlite" : dir.path + "/state/state.sqlite"
        let destination = "\(s.scheme):\(destinationPath)"
        let env = ["XDG_STATE_HOME": dir.path + "/xdg"]
        var from = "maildir:" + src
        if s.command == "restore" {
            from = "archive:" + dir.path + "/backup"
            let b = try CLI.mailferry(["backup", "--from", "maildir:" + src, "--to", from, "--state", dir.path + "/backup.sqlite"], env: env)
            #expect(b.status == 0, "\(b.stderr)")
        }
        let args = [s.command, "--from", from, "--to", destination, "--state", statePath]

        // 1. The disk fills up.
        try fs.fill(leaving: s.leave)
        let first = try fs.mailferry(args, env: env)
        #expect(first.status == 5, "SPEC.md: 5 for a local storage error; got \(first.status): \(first.stderr)")
        let lines = first.stderr.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        #expect(lines.count == 1, "exactly one line on stderr: \(first.stderr)")
        let line = lines.first ?? ""
        #expect(line.hasPrefix("mailferry: "), "\(line)")
        #expect(line.contains("No space left on device") || line.contains("disk is full"), "says the disk is full: \(line)")
        #expect(line.contains(mountPoint), "names the file it could not write: \(line)")
        #expect(line.contains("free some space and run again"), "says what to do: \(line)")
        if s.namesMessage {
            // Source ids: Maildir file names here, catalog ids for an archive.
            #expect(line.contains(s.command == "restore" ? "(message " : "(message 1700000"), "names the message it stopped at: \(line)")
            #expect(line.contains("INBOX") || line.contains("Work"), "and its folder: \(line)")
        }
        for junk in ["Fatal error", "Stack dump", "Backtrace", "MailError(", "DatabaseError", ".swift:"] {
            #expect(!first.stderr.contains(junk), "no stack trace or type names (\(junk)): \(first.stderr)")
        }

        // 2. Nothing half-written where anything refers to it: every message
        // the destination shows is whole and is one of the source's.
        if FileManager.default.fileExists(atPath: s.filled == .destination ? fs.hostView + "/dst" : destinationPath) {
            if s.scheme == "archive" {
                let check = try fs.mailferry(["archive", "check", destinationPath], env: env)
                #expect(check.status == 0, "the archive's catalog refers only to whole volumes: \(check.all)")
                let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: fs.hostView + "/dst/volumes")) ?? []
                #expect(leftovers.allSatisfy { !$0.hasPrefix(".") }, "no temporary volume is left behind: \(leftovers)")
            } else {
                let back = try fs.mailferry(["verify", "--from", destination, "--to", "maildir:" + src], env: env)
                #expect(back.status == 0, "every message in the destination is whole: \(back.all)")
            }
            if s.scheme == "maildir" {
                let root = s.filled == .destination ? fs.hostView + "/dst" : destinationPath
                for tmp in [root + "/tmp", root + "/Work/tmp"] {
                    let left = (try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? []
                    #expect(left.isEmpty, "no partial file is left in \(tmp): \(left)")
                }
            }
        }

        // 3. Space is freed; the re-run completes.
        try fs.free()
        let second = try fs.mailferry(args + ["--json"], env: env)
        #expect(second.status == 0, "the re-run completes: \(second.stderr)")
        #expect(second.stderr.isEmpty, "\(second.stderr)")
        let report = try LocalEndToEndTests.json(second.stdout)
        #expect((report["failures"] as? [Any])?.isEmpty == true, "\(second.stdout)")

        // 4. Nothing lost, nothing duplicated: the destination holds exactly the source's messages.
        let listed = try fs.mailferry(["folders", destination, "--json"], env: env)
        #expect(listed.status == 0, "\(listed.stderr)")
        #expect(try LocalEndToEndTests.json(listed.stdout)["totalMessages"] as? Int == Self.messageCount,
                "each message once: \(listed.stdout)")
        let verify = try fs.mailferry(["verify", "--from", "maildir:" + src, "--to", destination], env: env)
        #expect(verify.status == 0, "every source message is in the destination, byte for byte: \(verify.all)")
        if s.scheme == "archive" {
            let check = try fs.mailferry(["archive", "check", destinationPath], env: env)
            #expect(check.status == 0, "\(check.all)")
        } else {
            let back = try fs.mailferry(["verify", "--from", destination, "--to", "maildir:" + src], env: env)
            #expect(back.status == 0, "and nothing else is: \(back.all)")
        }
    }
}

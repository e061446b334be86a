import Foundation
import Testing
@testable import MailStore
import MailModel
import MailTestSupport

/// Python's `mailbox` module, a reader we did not write, must see what we
/// wrote: the same messages, bytes and flags. And we read what it writes.
struct PythonInteropTests {
    static let reader = #"""
import base64, json, mailbox, sys
kind, path = sys.argv[1], sys.argv[2]
out = []
if kind == "maildir":
    md = mailbox.Maildir(path, factory=None, create=False)
    for key in sorted(md.keys()):
        msg = md.get_message(key)
        out.append({"key": key, "bytes": base64.b64encode(md.get_bytes(key)).decode(),
                    "flags": msg.get_flags(), "subdir": msg.get_subdir(), "date": msg.get_date()})
else:
    mb = mailbox.mbox(path, create=False)
    for key in mb.keys():
        msg = mb.get_message(key)
        out.append({"key": str(key), "bytes": base64.b64encode(mb.get_bytes(key)).decode(),
                    "flags": msg.get_flags(), "from": msg.get_from()})
print(json.dumps(out))
"""#

    /// Writes raw bytes (Python's message classes would re-serialise them):
    /// Maildir files go through `Maildir.add`, then get their flags and date
    /// by rename and utime; mbox entries carry their own From line.
    static let writer = #"""
import base64, json, mailbox, os, sys, time
kind, path = sys.argv[1], sys.argv[2]
cases = json.load(sys.stdin)
if kind == "maildir":
    md = mailbox.Maildir(path, create=True)
    for c in cases:
        key = md.add(base64.b64decode(c["bytes"]))
        src = os.path.join(path, "new", key)
        dst = src
        if c["flags"]:
            dst = os.path.join(path, "cur", key + ":2," + "".join(sorted(c["flags"])))
            os.rename(src, dst)
        os.utime(dst, (c["date"], c["date"]))
else:
    mb = mailbox.mbox(path, create=True)
    mb.lock()
    for c in cases:
        head = ("From sender@example.org " + time.asctime(time.gmtime(c["date"])) + "\n").encode()
        mb.add(head + base64.b64decode(c["status"]) + base64.b64decode(c["bytes"]))
    mb.flush()
    mb.unlock()
"""#


    func python(_ script: String, _ args: [String], stdin: Data? = nil) throws -> Any {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script] + args
        let out = Pipe(), err = Pipe(), inp = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = inp
        try p.run()
        if let stdin { inp.fileHandleForWriting.write(stdin) }
        try inp.fileHandleForWriting.close()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw CorpusError("python3 failed (\(p.terminationStatus)): \(errText)")
        }
        return data.isEmpty ? [] : try JSONSerialization.jsonObject(with: data)
    }

    static var pythonAvailable: Bool { (try? run(["python3", "-c", "import mailbox"]))?.0 == 0 }

    /// Edge cases with flags and dates, as the conformance suite uses them.
    var cases: [(SyntheticMail.Message, Flags, InternalDate)] {
        let flagSets: [Flags] = [[], [.seen], [.seen, .flagged, Flag("Work")], [.answered, .draft], [.deleted, .seen, .forwarded]]
        return SyntheticMail.edgeCases.enumerated().map { i, m in
            (m, flagSets[i % flagSets.count], InternalDate(secondsSinceEpoch: 1_000_000_000 + Int64(i) * 86_400))
        }
    }

    @Test(.enabled(if: pythonAvailable, "python3 with the mailbox module is needed"))
    func pythonReadsOurMaildir() async throws {
        try await withTempDirectory { dir in
            let store = try MaildirStore(root: dir, create: true)
            let folder = FolderPath(components: ["Work"])!
            try await store.createFolder(folder)
            var expected: [String: (SyntheticMail.Message, Flags, InternalDate)] = [:]
            for c in cases {
                let r = try await store.append(to: folder, AppendRequest(flags: c.1, internalDate: c.2), body: .bytes(c.0.bytes)).result()
                expected[try #require(r.id).rawValue] = c
            }
            let seen = try #require(try python(Self.reader, ["maildir", dir + "/Work"]) as? [[String: Any]])
            #expect(seen.count == expected.count)
            let keywords = try String(contentsOfFile: dir + "/Work/dovecot-keywords", encoding: .utf8)
            for m in seen {
                let key = try #require(m["key"] as? String)
                guard let (msg, flags, date) = expected[key] else { Issue.record("python sees an unknown message \(key)"); continue }
                #expect(Data(base64Encoded: m["bytes"] as? String ?? "") == Data(msg.bytes), "\(msg.name)")
                #expect(m["subdir"] as? String == "cur")
                #expect((m["date"] as? Double).map { Int64($0) } == date.secondsSinceEpoch, "\(msg.name)")
                // Python reports the info letters; system letters must match ours exactly.
                let letters = Set((m["flags"] as? String ?? "").filter(\.isUppercase))
                var want = Set<Character>()
                if flags.contains(.draft) { want.insert("D") }
                if flags.contains(.flagged) { want.insert("F") }
                if flags.contains(.answered) { want.insert("R") }
                if flags.contains(.seen) { want.insert("S") }
                if flags.contains(.deleted) { want.insert("T") }
                #expect(letters == want, "\(msg.name)")
                let kwLetters = (m["flags"] as? String ?? "").filter(\.isLowercase)
                #expect(kwLetters.count == flags.keywords.count, "\(msg.name)")
                for k in flags.keywords { #expect(keywords.contains(" \(k.name)\n")) }
            }
        }
    }

    @Test(.enabled(if: pythonAvailable, "python3 with the mailbox module is needed"))
    func pythonReadsOurMbox() async throws {
        try await withTempDirectory { dir in
            let store = try MboxStore(root: dir, create: true)
            let folder = FolderPath(components: ["Work"])!
            try await store.createFolder(folder)
            for c in cases {
                _ = try await store.append(to: folder, AppendRequest(flags: c.1, internalDate: c.2), body: .bytes(c.0.bytes)).result()
            }
            let seen = try #require(try python(Self.reader, ["mbox", dir + "/Work"]) as? [[String: Any]])
            #expect(seen.count == cases.count)
            for (m, (msg, flags, date)) in zip(seen, cases) {
                // Python does not unquote and keeps the status lines: undo exactly what mboxrd did.
                var quoted = [UInt8]()
                var q = FromQuoter()
                msg.bytes.withUnsafeBytes { q.process($0, into: &quoted) }
                q.flush(into: &quoted)
                if quoted.last != 0x0A { quoted.append(0x0A) }
                let want = MboxFormat.statusLines(flags) + quoted
                #expect(Data(base64Encoded: m["bytes"] as? String ?? "") == Data(want), "\(msg.name)")
                let pyFlags = Set(m["flags"] as? String ?? "")
                #expect(pyFlags.contains("R") == flags.contains(.seen), "\(msg.name)")
                #expect(pyFlags.contains("F") == flags.contains(.flagged), "\(msg.name)")
                #expect(pyFlags.contains("A") == flags.contains(.answered), "\(msg.name)")
                #expect(pyFlags.contains("D") == flags.contains(.deleted), "\(msg.name)")
                #expect(pyFlags.contains("T") == flags.contains(.draft), "\(msg.name)")
                let from = m["from"] as? String ?? ""
                #expect(from.hasPrefix("MAILER-DAEMON ") && MboxFormat.date(ofFromLine: Array(("From " + from).utf8)) == date, "\(from)")
            }
        }
    }

    @Test(.enabled(if: pythonAvailable, "python3 with the mailbox module is needed"))
    func weReadWhatPythonWrites() async throws {
        // Python adds a final newline and cannot tell mboxo quoting from a
        // real ">From ", so these cases avoid both; the rest is compared exactly.
        func usableForPython(_ b: [UInt8]) -> Bool {
            let text = String(decoding: b, as: UTF8.self)
            return b.last == 0x0A && !text.contains(">From ") && !b.starts(with: Array("From ".utf8)) && !b.contains(0x0D)
        }
        var usable = cases.filter { usableForPython($0.0.bytes) }
        usable.append((SyntheticMail.Message("from-body-lf", "Subject: f\n\nFrom here\nFrom there\n\nFrom again\n"), [.seen], InternalDate(secondsSinceEpoch: 1_234_567_890)))
        if let corpus = try Corpus.load() {
            for e in corpus.messages(with: "eol=lf").prefix(200) {
                let b = try e.load()
                if usableForPython(b), usable.count < 40 { usable.append((SyntheticMail.Message(e.file, b), [.flagged], InternalDate(secondsSinceEpoch: 1_300_000_000))) }
            }
        }
        #expect(usable.count >= 5)
        let payload = try JSONSerialization.data(withJSONObject: usable.map { c in
            ["bytes": Data(c.0.bytes).base64EncodedString(),
             "flags": (c.1.contains(.seen) ? "S" : "") + (c.1.contains(.flagged) ? "F" : "") + (c.1.contains(.answered) ? "R" : "")
                + (c.1.contains(.deleted) ? "T" : "") + (c.1.contains(.draft) ? "D" : ""),
             "status": Data(MboxFormat.statusLines(Flags(c.1.filter(\.isSystem)))).base64EncodedString(),
             "date": c.2.secondsSinceEpoch] as [String: Any]
        })
        try await withTempDirectory { dir in
            _ = try python(Self.writer, ["maildir", dir + "/md"], stdin: payload)
            let md = try MaildirStore(root: dir + "/md", create: false)
            let listing = try await md.listMessages(in: .inbox)
            #expect(listing.messages.count == usable.count)
            let bodies = try await collect(md, listing.messages.map(\.id), in: .inbox)
            for c in usable {
                let hits = listing.messages.filter { bodies[$0.id] == c.0.bytes }
                #expect(!hits.isEmpty, "\(c.0.name) not found")
                #expect(hits.contains { $0.flags == Flags(c.1.filter(\.isSystem)) && $0.internalDate == c.2 }, "\(c.0.name)")
            }

            try FileManager.default.createDirectory(atPath: dir + "/mb", withIntermediateDirectories: true)
            _ = try python(Self.writer, ["mbox", dir + "/mb/INBOX"], stdin: payload)
            let mb = try MboxStore(root: dir + "/mb", create: false)
            let ml = try await mb.listMessages(in: .inbox)
            #expect(ml.messages.count == usable.count)
            let mbodies = try await collect(mb, ml.messages.map(\.id), in: .inbox)
            for (info, c) in zip(ml.messages, usable) {
                let flags = Flags(c.1.filter(\.isSystem))
                #expect(info.flags == flags, "\(c.0.name)")
                #expect(info.internalDate == c.2, "\(c.0.name)")
                // Another tool's Status lines are part of its message.
                #expect(mbodies[info.id] == MboxFormat.statusLines(flags) + c.0.bytes, "\(c.0.name)")
            }
        }
    }
}

import Foundation
import MailModel
import MailStore
import Testing
@testable import ArchiveStore

/// Reads an extracted tree with Python's `mailbox` and prints one JSON object
/// per message. Maildir: every directory with a `cur/` is a folder; keyword
/// letters come from its `dovecot-keywords`. mbox: every `*.mbox` file;
/// mboxrd quoting is undone here, independently of the Swift code.
let pythonReader = #"""
import base64, json, mailbox, os, re, sys
root, fmt = sys.argv[1], sys.argv[2]
out = []
if fmt == "maildir":
    for dirpath, dirnames, filenames in os.walk(root):
        if "cur" not in dirnames:
            continue
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel
        letters = {}
        kw = os.path.join(dirpath, "dovecot-keywords")
        if os.path.exists(kw):
            for line in open(kw, encoding="utf-8"):
                n, name = line.rstrip("\n").split(" ", 1)
                letters[chr(97 + int(n))] = name
        md = mailbox.Maildir(dirpath, factory=None, create=False)
        system = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
        for key in md.keys():
            raw = md.get_bytes(key)
            msg = md.get_message(key)
            flags = [system[c] if c in system else letters[c] for c in msg.get_flags()]
            out.append({"folder": rel, "data": base64.b64encode(raw).decode(), "flags": flags,
                        "mtime": int(msg.get_date()), "subdir": msg.get_subdir()})
else:
    for dirpath, dirnames, filenames in os.walk(root):
        for f in sorted(filenames):
            if not f.endswith(".mbox"):
                continue
            path = os.path.join(dirpath, f)
            mb = mailbox.mbox(path, create=False)
            for key in mb.keys():
                raw = mb.get_bytes(key)
                msg = mb.get_message(key)
                raw = re.sub(rb"(?m)^>(>*From )", rb"\1", raw)
                out.append({"folder": os.path.relpath(dirpath, root), "file": f,
                            "data": base64.b64encode(raw).decode(), "flags": msg.get_flags(),
                            "keywords": msg.get("X-Keywords", "")})
json.dump(out, sys.stdout)
"""#

struct PyMessage: Decodable {
    var folder: String
    var data: String
    var flags: FlagsField
    var mtime: Int64?
    var file: String?
    var keywords: String?

    enum FlagsField: Decodable {
        case list([String]), letters(String)
        init(from d: Decoder) throws {
            let c = try d.singleValueContainer()
            if let l = try? c.decode([String].self) { self = .list(l) } else { self = .letters(try c.decode(String.self)) }
        }
    }

    var bytes: [UInt8] { Array(Data(base64Encoded: data) ?? Data()) }
}

/// The directory each test folder must have on disk, written out by hand.
let expectedMaildirDirs: [FolderPath: String] = [
    .inbox: "",
    FolderPath("Archive/2024")!: "Archive/2024",
    FolderPath("Février/Réunions ☕")!: "Février/Réunions ☕",
    FolderPath("Sent")!: "Sent",
    FolderPath("INBOX/Lists")!: "INBOX/Lists",
    FolderPath(components: ["a/b with slash", ".hidden", "cur"])!: "a%2Fb with slash/%2Ehidden/%63ur",
]

@Suite("Outside readers: plain tar and Python's mailbox", .serialized)
struct OutsideReaderTests {
    static let cases: [(ArchiveFormat, ArchiveCompression)] = [
        (.maildir, .zstd), (.maildir, .gzip), (.maildir, .xz), (.maildir, .none),
        (.mbox, .zstd), (.mbox, .gzip), (.mbox, .xz),
    ]

    @Test(arguments: cases)
    func tarAndPythonReadTheVolumes(format: ArchiveFormat, compression: ArchiveCompression) async throws {
        guard let corpus = corpusMessages(limit: 160) else { return }
        let dir = makeTempDir("outside")
        defer { removeTree(dir) }
        let path = dir + "/set"
        // Two runs, so that extraction has to layer two volumes.
        var expected: [(Placed, run: Int)] = []
        var seen = Set<[UInt8]>()
        for (run, range) in [(1, 0..<100), (2, 100..<corpus.count)] {
            // xz at level 1: the default (6) takes ~94 MB while writing, which
            // would blur memory measurements of tests running beside this one.
            let s = try ArchiveStore.open(path: path, options: ArchiveOptions(format: format, compression: compression,
                                                                               compressionLevel: compression == .xz ? 1 : nil),
                                          create: true, logger: testLogger)
            let items = range.map { i -> (FolderPath, Flags, InternalDate, [UInt8]) in
                let (f, fl, d) = placement(i)
                return (f, fl, d, corpus[i].bytes)
            }
            for p in try await appendAll(s, items) where seen.insert(p.bytes).inserted {
                expected.append((p, run))
            }
            try await s.close()
        }
        let volumes = volumeFiles(path)
        #expect(volumes.count == 2)
        let out = dir + "/extracted"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let flag: [String] = switch compression {
        case .zstd: ["--zstd"]
        case .gzip: ["-z"]
        case .xz: ["-J"]
        case .none: []
        }
        for v in volumes {
            let (status, output) = try run("/usr/bin/env", ["tar"] + flag + ["-x", "-f", path + "/volumes/" + v, "-C", out])
            #expect(status == 0, "tar failed on \(v): \(output)")
        }
        // Modes: files 0600, directories 0700.
        let fm = FileManager.default
        for rel in fm.subpaths(atPath: out) ?? [] {
            let attrs = try fm.attributesOfItem(atPath: out + "/" + rel)
            let mode = (attrs[.posixPermissions] as? Int) ?? -1
            let isDir = (attrs[.type] as? FileAttributeType) == .typeDirectory
            #expect(mode == (isDir ? 0o700 : 0o600), "\(rel) has mode \(String(mode, radix: 8))")
        }

        try pythonReader.write(toFile: dir + "/read.py", atomically: true, encoding: .utf8)
        let (status, json) = try run("/usr/bin/env", ["python3", dir + "/read.py", out, format.rawValue])
        try #require(status == 0, "python failed: \(json.prefix(2000))")
        let messages = try JSONDecoder().decode([PyMessage].self, from: Data(json.utf8))
        #expect(messages.count == expected.count)

        switch format {
        case .maildir:
            var got: [String: [PyMessage]] = [:]
            for m in messages { got[m.folder, default: []].append(m) }
            for (p, _) in expected {
                let folderDir = try #require(expectedMaildirDirs[p.folder])
                let candidates = got[folderDir] ?? []
                guard let m = candidates.first(where: { $0.bytes == p.bytes }) else {
                    Issue.record("message \(p.key.short) not found byte-exact in \(folderDir.isEmpty ? "(root)" : folderDir)")
                    continue
                }
                if case .list(let names) = m.flags { #expect(Flags(names.map(Flag.init)) == p.flags) }
                #expect(m.mtime == p.date.secondsSinceEpoch, "mtime is not the INTERNALDATE")
            }
        case .mbox:
            var got: [String: [PyMessage]] = [:]
            for m in messages { got[m.folder + "/" + (m.file ?? ""), default: []].append(m) }
            // Each folder's file per volume lists its first-stored messages in order.
            var expectByFile: [String: [Placed]] = [:]
            for (p, run) in expected {
                let file = VolumeLayout.folderDirectory(p.folder, format: .mbox) + "/" + String(format: "v%06d.mbox", run)
                expectByFile[file, default: []].append(p)
            }
            #expect(Set(got.keys) == Set(expectByFile.keys))
            for (file, list) in expectByFile {
                let py = got[file] ?? []
                #expect(py.count == list.count, "\(file)")
                // The file's first message carries X-IMAPbase naming the file's keywords
                // (for Dovecot) when any message has one.
                var fileKeywords: [String] = []
                for p in list {
                    for k in p.flags.keywords where k.isValidKeyword && !fileKeywords.contains(k.name) { fileKeywords.append(k.name) }
                }
                for (n, (p, m)) in zip(list, py).enumerated() {
                    // Our Status/X-Status/X-Keywords lines come first; the message follows.
                    let prefix = VolumeLayout.mboxStatusHeaders(p.flags)
                    var b = m.bytes
                    #expect(Array(b.prefix(prefix.count)) == prefix)
                    b.removeFirst(min(prefix.count, b.count))
                    let base = Array("X-IMAPbase: ".utf8)
                    if n == 0 && !fileKeywords.isEmpty {
                        let line = b.firstIndex(of: 0x0A).map { Array(b[...$0]) } ?? []
                        #expect(Array(line.prefix(base.count)) == base, "\(file): no X-IMAPbase in the first message")
                        #expect(String(decoding: line, as: UTF8.self).hasSuffix(" " + fileKeywords.joined(separator: " ") + "\n"))
                        b.removeFirst(line.count)
                    } else {
                        #expect(Array(b.prefix(base.count)) != base, "\(file): X-IMAPbase beyond the first message")
                    }
                    func trimLF(_ x: [UInt8]) -> [UInt8] { var y = x; while y.last == 0x0A { y.removeLast() }; return y }
                    #expect(trimLF(b) == trimLF(p.bytes), "\(file): \(p.key.short)")
                    var f = Flags()
                    if case .letters(let l) = m.flags {
                        for c in l {
                            switch c {
                            case "R": f.insert(.seen)
                            case "A": f.insert(.answered)
                            case "F": f.insert(.flagged)
                            case "T": f.insert(.draft)
                            case "D": f.insert(.deleted)
                            default: break
                            }
                        }
                    }
                    #expect(f == Flags(p.flags.filter(\.isSystem)), "\(file): \(p.key.short)")
                    // A message whose first line is a continuation (the corpus has
                    // one) is unfolded into our X-Keywords line by any reader, so
                    // check that each keyword is there rather than equality.
                    let tokens = Set((m.keywords ?? "").split(whereSeparator: { $0.isWhitespace }).map { Flag(String($0)) })
                    for k in p.flags.keywords where k.isValidKeyword {
                        #expect(tokens.contains(k), "\(file): \(p.key.short) lacks keyword \(k)")
                    }
                }
            }
        }
    }
}

import Foundation
import Logging
import MailModel
import MailNet
import MailStore
import MailTestSupport
import Testing
@testable import ArchiveStore

/// Every volume of an archive extracted with plain `tar` (zstd, gzip, xz) is a tree
/// Dovecot serves: the fixture points a user's mail location at it, and the messages,
/// folders and flags read back through IMAP are the archived ones.
@Suite("Outside readers: Dovecot serves a tar-extracted archive", .serialized,
       .enabled(if: DovecotFixture.serverTestsEnabled, "MAILFERRY_SKIP_SERVER_TESTS=1"))
struct DovecotOutsideReaderTests {
    static let cases: [(ArchiveFormat, ArchiveCompression)] = [
        (.maildir, .zstd), (.maildir, .gzip), (.maildir, .xz),
        (.mbox, .zstd), (.mbox, .gzip), (.mbox, .xz),
    ]

    /// Folders Dovecot can name as we do (no `/` inside a name, no escaped store names).
    static let folders: [FolderPath] = [
        .inbox, FolderPath("Archive/2024")!, FolderPath("Février/Réunions ☕")!, FolderPath("Sent")!, FolderPath("INBOX/Lists")!,
    ]

    static let flagChoices: [Flags] = [
        [], [.seen], [.seen, .flagged], [.answered, .seen], [.seen, Flag("$Forwarded")], [Flag("Work"), .flagged],
        [.draft], [.deleted, .seen], [Flag("$Label1"), Flag("Projekt")],
    ]

    static let logger: Logger = {
        var l = Logger(label: "archive-tests.dovecot")
        l.logLevel = .critical
        return l
    }()

    /// Builds a two-volume archive, extracts it with tar, serves it, and reads it over IMAP.
    /// Returns what was placed, what IMAP gave (folder → [(flags, bytes)]), and the tree.
    static func serveAndRead(format: ArchiveFormat, compression: ArchiveCompression, corpus: [[UInt8]], dir: String,
                             fixture f: DovecotFixture) async throws -> (placed: [Placed], read: [FolderPath: [(Flags, [UInt8])]]) {
        let path = dir + "/set"
        var placed: [Placed] = []
        var seen = Set<MessageKey>()
        let half = corpus.count / 2
        for range in [0..<half, half..<corpus.count] {
            let s = try ArchiveStore.open(path: path, options: ArchiveOptions(format: format, compression: compression,
                                                                               compressionLevel: compression == .xz ? 1 : nil),
                                          create: true, logger: testLogger)
            let items = range.map { i -> (FolderPath, Flags, InternalDate, [UInt8]) in
                (folders[i % folders.count], flagChoices[(i / folders.count) % flagChoices.count],
                 InternalDate(secondsSinceEpoch: 1_500_000_000 + Int64(i) * 86_399, zoneMinutes: 0), corpus[i])
            }
            for p in try await appendAll(s, items) where seen.insert(p.key).inserted { placed.append(p) }
            try await s.close()
        }
        let out = dir + "/extracted"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let flag: [String] = switch compression {
        case .zstd: ["--zstd"]
        case .gzip: ["-z"]
        case .xz: ["-J"]
        case .none: []
        }
        for v in volumeFiles(path) {
            let (status, output) = try run("/usr/bin/env", ["tar"] + flag + ["-x", "-f", path + "/volumes/" + v, "-C", out])
            #expect(status == 0, "tar failed on \(v): \(output)")
        }
        let user = f.makeUser(prefix: "tar-\(format.rawValue)")
        switch format {
        case .maildir: try f.serveMaildir(copying: out, for: user.user, options: ":UTF-8")
        // Read-only: Dovecot rewrites a writable mbox while it is read (X-UID headers);
        // on two corpus messages that rewrite fails ("Sync failed for mbox: ... originally
        // needed 11 bytes, now needs 9 bytes", "Next message unexpectedly corrupted") and
        // they come back spliced with the next message.
        case .mbox: try f.serveMbox(copying: out, for: user.user, options: ":UTF-8", readOnly: true)
        }
        let store = try await IMAPStore.open(
            settings: ConnectionSettings(host: f.host, port: f.imapPort, tls: .startTLS, caFile: f.caFile,
                                         connectTimeout: .seconds(20), responseTimeout: .seconds(60)),
            credentials: .password(user: user.user, user.password), logger: logger)
        var read: [FolderPath: [(Flags, [UInt8])]] = [:]
        do {
            for (folder, messages) in try await readEverything(store) {
                read[folder] = messages.values.map { (Flags($0.0.flags.filter { $0 != .recent }), $0.1) }
            }
            try await store.close()
        } catch {
            try? await store.close()
            throw error
        }
        return (placed, read)
    }

    @Test(arguments: cases)
    func dovecotServesTheExtractedTree(format: ArchiveFormat, compression: ArchiveCompression) async throws {
        guard let corpus = corpusMessages(limit: 120) else { return }
        let f = try DovecotFixture.shared()
        let dir = makeTempDir("dovecot-tar")
        defer { removeTree(dir) }
        let (placed, read) = try await Self.serveAndRead(format: format, compression: compression,
                                                         corpus: corpus.map(\.bytes), dir: dir, fixture: f)
        var byFolder: [FolderPath: [Placed]] = [:]
        for p in placed { byFolder[p.folder, default: []].append(p) }
        // Maildir: Dovecot's folders are ours. mbox: each volume's file is a folder of its own,
        // `FOLDER/vNNNNNN.mbox` (INBOX is the fixture's empty INBOX file).
        var served: [FolderPath: [(Flags, [UInt8])]] = [:]
        for (name, messages) in read {
            if format == .mbox {
                if name.isInbox {
                    #expect(messages.isEmpty)
                    continue
                }
                let last = name.components.last ?? ""
                #expect(last.hasPrefix("v") && last.hasSuffix(".mbox"), "unexpected folder \(name)")
                let parent = try #require(FolderPath(components: Array(name.components.dropLast())))
                served[parent, default: []] += messages
            } else {
                served[name, default: []] += messages
            }
        }
        #expect(Set(served.keys) == Set(byFolder.keys), "folders: \(served.keys.sorted()) want \(byFolder.keys.sorted())")
        for (folder, want) in byFolder {
            let got = served[folder] ?? []
            #expect(got.count == want.count, "\(folder): \(got.count) read, \(want.count) archived")
            var bad = 0
            for p in want {
                let bytes = format == .maildir ? crlfNormalised(p.bytes) : Self.dovecotMboxView(p.bytes)
                guard let m = got.first(where: { $0.1 == bytes }) else {
                    bad += 1
                    if bad < 4 {
                        let why = Self.nearestDifference(bytes, among: got.map(\.1))
                        Issue.record("\(format)/\(compression) \(folder): \(p.key.short) not served byte-exact; \(why)")
                    }
                    continue
                }
                #expect(m.0 == p.flags, "\(format)/\(compression) \(folder) \(p.key.short): flags \(m.0), want \(p.flags)")
            }
            #expect(bad == 0, "\(format)/\(compression) \(folder): \(bad) of \(want.count) differ")
        }
    }

    /// Headers Dovecot hides in every mbox message (`mbox_hide_headers` in Dovecot 2.3's
    /// mbox-mail.c): its own bookkeeping, ours, and the message's own if it has them.
    static let dovecotHiddenMboxHeaders: Set<String> = [
        "content-length", "status", "x-imap", "x-imapbase", "x-keywords", "x-status", "x-uid",
    ]

    /// What Dovecot serves for a message of our mbox volumes: Dovecot reads mbox as
    /// mboxo, so the `>` that mboxrd quoting added to `>*From ` lines stays; a message
    /// that did not end with a newline gets the one we added before the separator; the
    /// headers above are hidden (ours and the message's own). Lines end in CRLF over IMAP.
    static func dovecotMboxView(_ bytes: [UInt8]) -> [UInt8] {
        var quoter = FromQuoter()
        var quoted: [UInt8] = []
        bytes.withUnsafeBytes { quoter.process($0, into: &quoted) }
        quoter.flush(into: &quoted)
        if quoted.last != 0x0A { quoted.append(0x0A) }
        // Drop hidden header fields (with their continuation lines) from the header block.
        var out: [UInt8] = []
        var i = 0
        var inHeader = true
        var hiding = false
        while i < quoted.count {
            let end = (quoted[i...].firstIndex(of: 0x0A) ?? quoted.count - 1) + 1
            let line = Array(quoted[i..<end])
            i = end
            if inHeader {
                if line == [0x0A] || line == [0x0D, 0x0A] {
                    inHeader = false
                } else if line.first == 0x20 || line.first == 0x09 {
                    if hiding { continue }
                } else if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
                    let name = String(decoding: line[..<colon], as: UTF8.self).lowercased()
                    hiding = dovecotHiddenMboxHeaders.contains(name)
                    if hiding { continue }
                } else {
                    hiding = false
                }
            }
            out += line
        }
        return crlfNormalised(out)
    }

    /// Where `want` and the served message sharing its longest prefix part, for failure messages.
    static func nearestDifference(_ want: [UInt8], among served: [[UInt8]]) -> String {
        func common(_ a: [UInt8], _ b: [UInt8]) -> Int {
            var i = 0
            while i < a.count, i < b.count, a[i] == b[i] { i += 1 }
            return i
        }
        // Prefer a served message with the same Message-ID line (corpus messages from one
        // mbox share long prefixes).
        func idLine(_ b: [UInt8]) -> [UInt8]? {
            let needle = Array("\r\nMessage-ID:".utf8)
            guard b.count > needle.count else { return nil }
            for i in 0...(b.count - needle.count) where b[i] == 0x0D && Array(b[i..<i + needle.count]).map({ $0 | 0x20 }) == needle.map({ $0 | 0x20 }) {
                let end = b[(i + 2)...].firstIndex(of: 0x0D) ?? b.count
                return Array(b[i..<end])
            }
            return nil
        }
        let id = idLine(want)
        let sameID = id == nil ? [] : served.filter { idLine($0) == id }
        guard let best = (sameID.isEmpty ? served : sameID).max(by: { common(want, $0) < common(want, $1) }) else {
            return "nothing served"
        }
        let at = common(want, best)
        func show(_ b: [UInt8]) -> String {
            String(decoding: b[max(0, at - 30)..<min(b.count, at + 50)], as: UTF8.self).debugDescription
        }
        return "\(sameID.isEmpty ? "closest" : "same Message-ID") served differs at byte \(at) of \(want.count) (served \(best.count)): want \(show(want)) got \(show(best))"
    }
}

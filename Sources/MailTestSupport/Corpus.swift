import Foundation
import MailModel
import MailStore
import NIOCore

/// The shared real-world mail corpus (`mail-corpus/`: `messages/*.eml`,
/// `containers/*`, `manifest.tsv`). Tests must not require it: `Corpus.load()`
/// returns nil when it is absent, and the caller skips with `Corpus.absentMessage`.
///
/// It is found through `MAILFERRY_CORPUS`, else `../shared/mail-corpus`
/// relative to the package root (the current directory under `swift test`,
/// or the root this file was compiled in).
public struct Corpus: Sendable {
    /// One row of `manifest.tsv`.
    public struct Entry: Sendable, Hashable {
        public var file: String
        public var source: String
        public var license: String
        public var sha256: String
        public var bytes: Int
        public var commit: String
        /// Comma-separated traits, e.g. `eol=lf`, `8bit`, `no_final_newline`,
        /// `charsets=iso-8859-1+koi8-r`.
        public var traits: Set<String>
        /// Absolute path of the file.
        public var path: String

        /// True when the entry has `trait`, or a `trait=...` value.
        public func has(_ trait: String) -> Bool {
            traits.contains(trait) || traits.contains { $0.hasPrefix(trait + "=") }
        }

        /// The file's bytes; fails when the size differs from the manifest.
        public func load() throws -> [UInt8] {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw CorpusError("cannot read corpus file \(path)")
            }
            guard data.count == bytes else {
                throw CorpusError("corpus file \(path) is \(data.count) bytes, the manifest says \(bytes)")
            }
            return [UInt8](data)
        }
    }

    public let root: String
    /// `messages/*.eml`, in manifest order.
    public let messages: [Entry]
    /// `containers/*` (mbox files, a zipped mbox, a Maildir tarball).
    public let containers: [Entry]

    public static let absentMessage =
        "mail corpus not found: set MAILFERRY_CORPUS or place it at ../shared/mail-corpus; corpus tests skipped"

    /// Where the corpus is, or nil.
    public static func locate(filePath: String = #filePath) -> String? {
        let fm = FileManager.default
        func ok(_ p: String) -> Bool { fm.fileExists(atPath: p + "/manifest.tsv") }
        if let env = ProcessInfo.processInfo.environment["MAILFERRY_CORPUS"], !env.isEmpty {
            return ok(env) ? env : nil
        }
        var candidates = [fm.currentDirectoryPath + "/../shared/mail-corpus"]
        // Sources/MailTestSupport/Corpus.swift -> package root.
        let packageRoot = URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        candidates.append(packageRoot + "/../shared/mail-corpus")
        for c in candidates where ok(c) {
            return URL(fileURLWithPath: c).standardizedFileURL.path
        }
        return nil
    }

    /// Loads the manifests; nil when the corpus is absent.
    public static func load() throws -> Corpus? {
        guard let root = locate() else { return nil }
        return try Corpus(root: root)
    }

    public init(root: String) throws {
        self.root = root
        messages = try Corpus.readManifest(root + "/manifest.tsv", dir: root + "/messages")
        let containerManifest = root + "/containers/manifest.tsv"
        containers = FileManager.default.fileExists(atPath: containerManifest)
            ? try Corpus.readManifest(containerManifest, dir: root + "/containers") : []
    }

    /// Messages having every one of `traits` (see `Entry.has`).
    public func messages(with traits: String...) -> [Entry] {
        messages.filter { e in traits.allSatisfy { e.has($0) } }
    }

    static func readManifest(_ path: String, dir: String) throws -> [Entry] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CorpusError("cannot read \(path)")
        }
        let text = String(decoding: data, as: UTF8.self)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        guard let header = lines.first?.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) else {
            throw CorpusError("\(path) is empty")
        }
        lines.removeFirst()
        func col(_ name: String) throws -> Int {
            guard let i = header.firstIndex(of: name) else { throw CorpusError("\(path) has no '\(name)' column") }
            return i
        }
        let (fi, si, li, hi, bi, ci) = (try col("file"), try col("source"), try col("license"), try col("sha256"),
                                        try col("bytes"), try col("commit"))
        let ti = header.firstIndex(of: "traits")
        var out: [Entry] = []
        for (n, line) in lines.enumerated() {
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard f.count >= header.count - (ti == nil ? 0 : 1), f.count > max(fi, si, li, hi, bi, ci),
                  let bytes = Int(f[bi]) else {
                throw CorpusError("\(path) line \(n + 2) is malformed")
            }
            let traits: Set<String> = ti.flatMap { $0 < f.count ? Set(f[$0].split(separator: ",").map(String.init)) : nil } ?? []
            out.append(Entry(file: f[fi], source: f[si], license: f[li], sha256: f[hi], bytes: bytes, commit: f[ci],
                             traits: traits, path: dir + "/" + f[fi]))
        }
        return out
    }
}

public struct CorpusError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Hand-made messages for the edges real mail rarely shows all at once.
public enum SyntheticMail {
    public struct Message: Sendable, Hashable, CustomStringConvertible {
        public var name: String
        public var bytes: [UInt8]
        public var description: String { name }
        public init(_ name: String, _ bytes: [UInt8]) { self.name = name; self.bytes = bytes }
        public init(_ name: String, _ text: String) { self.init(name, Array(text.utf8)) }
    }

    static let header = "From: A <a@example.org>\r\nTo: b@example.org\r\nSubject: edge\r\nMessage-ID: <edge@example.org>\r\nDate: Tue, 1 Jul 2003 10:52:37 +0200\r\n\r\n"

    public static let edgeCases: [Message] = {
        var out: [Message] = []
        out.append(Message("plain-crlf", header + "Hello.\r\n"))
        out.append(Message("8bit", Array("Subject: caf\u{e9}\r\n\r\n".utf8) + [0x80, 0xFF, 0xE9, 0x0D, 0x0A, 0xC3, 0x28, 0x0D, 0x0A]))
        out.append(Message("nul-bytes", Array((header + "a").utf8) + [0x00, 0x00, 0x62, 0x00, 0x0D, 0x0A, 0x00]))
        out.append(Message("bare-lf", "From: a@example.org\nSubject: lf\n\nline one\nline two\n"))
        out.append(Message("mixed-endings", "Subject: mixed\r\n\nCRLF\r\nLF\nCR\rend\r\n"))
        out.append(Message("from-lines", header + "From me to you\r\n>From quoted\r\n>>From twice\r\nFrom\r\n From indented\r\nFrom \r\n"))
        out.append(Message("from-lines-lf", "Subject: f\n\nFrom x\n\nFrom y Tue Jul  1 10:52:37 2003\n>From z\n"))
        out.append(Message("starts-with-from", "From sender@example.org Tue Jul  1 10:52:37 2003\nSubject: mbox-ish\n\nbody\n"))
        out.append(Message("quoted-from-no-newline", "Subject: q\n\n>From the end"))
        out.append(Message("from-no-newline", "Subject: q\n\nFrom the end"))
        out.append(Message("empty", ""))
        out.append(Message("single-lf", "\n"))
        out.append(Message("single-crlf", "\r\n"))
        out.append(Message("no-final-newline", header + "no newline at the end"))
        out.append(Message("ends-with-cr", header + "ends with CR\r"))
        out.append(Message("trailing-blank-lines", header + "blank lines follow\r\n\r\n\r\n"))
        out.append(Message("trailing-blank-lines-lf", "Subject: b\n\nx\n\n\n"))
        out.append(Message("header-only", "Subject: only a header\r\n"))
        out.append(Message("no-header-separator", "Subject: no separator\r\nthis is not a header\r\nbody\r\n"))
        out.append(Message("body-only", "just a body, no header at all\n"))
        out.append(Message("long-line", header + String(repeating: "x", count: 20_000) + "\r\n"))
        out.append(Message("all-bytes", Array(header.utf8) + (0...255).map { UInt8($0) }))
        out.append(Message("status-header", "Status: RO\nX-Status: F\nSubject: has its own status\n\nbody\n"))
        out.append(Message("content-length", "Content-Length: 3\nSubject: cl\n\nFrom a\nbody\n"))
        return out
    }()

    /// Writes a large message to `path` without holding it in memory: a
    /// header, then lines of text with 8-bit bytes, `From ` lines and CRLF/LF
    /// mixes, until `bytes` bytes. Returns its key.
    @discardableResult
    public static func writeLargeMessage(to path: String, bytes: Int) throws -> MessageKey {
        guard FileManager.default.createFile(atPath: path, contents: nil),
              let h = FileHandle(forWritingAtPath: path) else {
            throw CorpusError("cannot create \(path)")
        }
        defer { try? h.close() }
        var hasher = MessageHasher()
        var written = 0
        func put(_ b: [UInt8]) throws {
            let part = Array(b.prefix(bytes - written))
            hasher.update(part)
            try h.write(contentsOf: part)
            written += part.count
        }
        try put(Array("From: big@example.org\r\nSubject: large\r\nMessage-ID: <large@example.org>\r\n\r\n".utf8))
        var block = [UInt8]()
        var n = 0
        while block.count < 1 << 20 {
            n += 1
            switch n % 7 {
            case 0: block += Array("From the middle of a line \(n)\r\n".utf8)
            case 1: block += Array(">From quoted \(n)\n".utf8)
            case 2: block += [0xE9, 0xFF, 0x80, 0x20] + Array("8-bit \(n)\r\n".utf8)
            default: block += Array(String(repeating: "abcdefghij", count: 7).utf8) + [0x0D, 0x0A]
            }
        }
        while written < bytes { try put(block) }
        return hasher.finalize()
    }

    /// Streams a file as a `MessageBody` in 64 KB chunks.
    public static func body(ofFile path: String) throws -> MessageBody {
        guard let h = FileHandle(forReadingAtPath: path) else { throw CorpusError("cannot open \(path)") }
        let attrs = try FileManager.default.attributesOfItem(atPath: path)
        let size = (attrs[.size] as? NSNumber)?.int64Value
        let box = HandleBox(h)
        return MessageBody(size: size) { try box.next() }
    }

    final class HandleBox: @unchecked Sendable {
        private let lock = NSLock()
        private var handle: FileHandle?
        init(_ h: FileHandle) { handle = h }
        func next() throws -> ByteBuffer? {
            lock.lock()
            defer { lock.unlock() }
            guard let h = handle else { return nil }
            let data = try h.read(upToCount: 64 * 1024) ?? Data()
            if data.isEmpty {
                try? h.close()
                handle = nil
                return nil
            }
            return data.withUnsafeBytes { ByteBuffer(bytes: $0) }
        }
        deinit { try? handle?.close() }
    }
}

import Foundation
import MailModel
import MailStore
import NIOCore

/// A message body held until its key is known: in memory up to 1 MiB, then
/// in an unlinked 0600 temp file next to the volumes (so nothing is left
/// behind by a crash). Bytes enter a volume only once the whole body has
/// arrived, so a source that fails mid-message never leaves a partial entry.
///
/// Sendable as a whole handover: filled by one appender, then read only by
/// the volume writer's queue.
final class Spool: @unchecked Sendable {
    static let memoryLimit = 1 << 20
    private var memory: [UInt8] = []
    private var fd: Int32 = -1
    private let directory: String
    private(set) var size: Int64 = 0
    private var hasher = MessageHasher()
    private var headerReader = HeaderReader()
    private var readOffset: Int64 = 0

    init(directory: String) { self.directory = directory }

    /// Message-ID, Date, From and the first Received date, read on the way in.
    var headers: HeaderSummary {
        var r = headerReader
        return r.finish()
    }
    deinit { if fd >= 0 { close(fd) } }

    var key: MessageKey { hasher.finalize() }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard !bytes.isEmpty else { return }
        hasher.update(bytes)
        if !headerReader.isComplete { headerReader.feed(bytes) }
        if fd < 0 && memory.count + bytes.count <= Self.memoryLimit {
            memory.append(contentsOf: bytes)
            size += Int64(bytes.count)
            return
        }
        if fd < 0 {
            let p = directory + "/.spool-\(UUID().uuidString).tmp"
            fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw MailError(.storage, scope: .local, "cannot create spool file in \(directory): \(String(cString: strerror(errno)))")
            }
            unlink(p)
            try memory.withUnsafeBytes { try writeAll($0) }
            memory = []
        }
        try writeAll(bytes)
        size += Int64(bytes.count)
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var off = 0
        while off < bytes.count {
            let n = Foundation.write(fd, bytes.baseAddress! + off, bytes.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                throw MailError(.storage, scope: .local, "cannot write spool file in \(directory): \(String(cString: strerror(errno)))")
            }
            off += n
        }
    }

    /// Runs `body` on the whole message when it is held in memory (nil when
    /// it went to the spool file).
    func withMemoryBytes<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T? {
        guard fd < 0 else { return nil }
        return try memory.withUnsafeBytes { try body($0) }
    }

    /// Restarts reading from the first byte.
    func rewind() { readOffset = 0 }

    /// Reads the next bytes; 0 at the end.
    func read(into buf: UnsafeMutableRawBufferPointer) throws -> Int {
        let left = size - readOffset
        guard left > 0 else { return 0 }
        let want = Int(min(Int64(buf.count), left))
        if fd < 0 {
            memory.withUnsafeBytes { src in
                buf.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[Int(readOffset)..<(Int(readOffset) + want)]))
            }
            readOffset += Int64(want)
            return want
        }
        while true {
            let n = pread(fd, buf.baseAddress, want, off_t(readOffset))
            if n < 0 {
                if errno == EINTR { continue }
                throw MailError(.storage, scope: .local, "cannot read spool file: \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw MailError(.storage, scope: .local, "spool file shorter than written") }
            readOffset += Int64(n)
            return n
        }
    }

    /// Consumes a message body. Refuses a body whose length differs from its
    /// announced size.
    static func consume(_ body: MessageBody, directory: String) async throws -> Spool {
        let s = Spool(directory: directory)
        for try await chunk in body {
            try chunk.withUnsafeReadableBytes { try s.write($0) }
        }
        if let announced = body.size, announced != s.size {
            throw MailError(.refused, scope: .message,
                            "message body was \(s.size) bytes but announced as \(announced); not archived")
        }
        return s
    }
}

/// The volume being written in this run.
final class VolumeBuilder {
    /// The volume's catalog id (also its sequence number in the name).
    let volumeID: Int64
    let name: String
    let stem: String
    let tempPath: String
    let finalPath: String
    let format: ArchiveFormat
    let compression: ArchiveCompression
    let writer: VolumeWriter
    private var entryIndex: Int64 = 0
    private var directories: Set<String> = []
    private var folders: [FolderPath] = []
    private var mbox: [FolderPath: MboxSpool] = [:]
    private(set) var records: [MessageRecord] = []
    private let now = Int64(Date().timeIntervalSince1970)
    var messageCount: Int { records.count }

    init(directory: String, sequence: Int64, format: ArchiveFormat, compression: ArchiveCompression,
         level: Int? = nil) throws {
        volumeID = sequence
        stem = String(format: "v%06lld", sequence)
        name = stem + compression.fileExtension
        tempPath = "\(directory)/.\(name).\(UUID().uuidString.prefix(8)).tmp"
        finalPath = "\(directory)/\(name)"
        self.format = format
        self.compression = compression
        writer = try VolumeWriter(path: tempPath, compression: compression, level: level)
    }

    private func ensureDirectories(for folder: FolderPath) throws {
        if !folders.contains(folder) { folders.append(folder) }
        guard format == .maildir else { return }
        let comps = VolumeLayout.maildirComponents(folder)
        var paths: [String] = []
        for i in 0..<comps.count { paths.append(comps[0...i].joined(separator: "/")) }
        let dir = comps.joined(separator: "/")
        paths += ["cur", "new", "tmp"].map { VolumeLayout.join(dir, $0) }
        for p in paths where !directories.contains(p) {
            try writer.addDirectory(p, mtime: now)
            directories.insert(p)
        }
    }

    /// Adds a message's bytes, returning where they went.
    func add(messageRow: Int64, key: MessageKey, spool: Spool, folder: FolderPath, flags: Flags, date: Int64,
             keywordLetters: [String: Character], run: Int64, volumeID: Int64) throws -> MessageRecord {
        try ensureDirectories(for: folder)
        spool.rewind()
        let record: MessageRecord
        switch format {
        case .maildir:
            let path = VolumeLayout.maildirEntry(folder: folder, messageRow: messageRow, key: key, size: spool.size,
                                                 date: date, flags: flags, keywordLetters: keywordLetters)
            let inMemory: Void? = try spool.withMemoryBytes { try writer.addFile(path, contiguous: $0, mtime: date) }
            if inMemory == nil {
                try writer.addFile(path, size: spool.size, mtime: date) { try spool.read(into: $0) }
            }
            record = MessageRecord(id: messageRow, key: key, size: spool.size, volumeID: volumeID, entryPath: path,
                                   entryOffset: 0, entryLength: spool.size, entryIndex: entryIndex, firstRun: run)
            entryIndex += 1
        case .mbox:
            let m: MboxSpool
            if let existing = mbox[folder] { m = existing } else {
                m = try MboxSpool(directory: (finalPath as NSString).deletingLastPathComponent)
                mbox[folder] = m
            }
            let (offset, length) = try m.append(spool: spool, flags: flags, date: date)
            record = MessageRecord(id: messageRow, key: key, size: spool.size, volumeID: volumeID,
                                   entryPath: VolumeLayout.mboxEntry(folder: folder, volumeStem: stem),
                                   entryOffset: offset, entryLength: length, entryIndex: -1, firstRun: run)
        }
        records.append(record)
        return record
    }

    /// Writes what is still held (mbox files, keyword maps) and seals the file.
    func finish(keywordLetters: [String: Character]) throws -> (sha256: String, size: Int64, records: [MessageRecord]) {
        switch format {
        case .maildir:
            if !keywordLetters.isEmpty {
                let lines = keywordLetters.sorted { $0.value < $1.value }.map { kv -> String in
                    let idx = Int(kv.value.asciiValue ?? 97) - 97
                    return "\(idx) \(kv.key)\n"
                }.joined()
                for f in folders {
                    try writer.addFile(VolumeLayout.join(VolumeLayout.folderDirectory(f), "dovecot-keywords"),
                                       bytes: Array(lines.utf8), mtime: now)
                }
            }
        case .mbox:
            var indexOf: [String: Int64] = [:]
            var shiftOf: [String: Int64] = [:]
            for f in folders {
                guard let m = mbox[f] else { continue }
                let path = VolumeLayout.mboxEntry(folder: f, volumeStem: stem)
                // Parent directories first, so they are 0700 when extracted.
                let comps = VolumeLayout.folderDirectory(f, format: .mbox).split(separator: "/").map(String.init)
                for i in 0..<comps.count {
                    let p = comps[0...i].joined(separator: "/")
                    if !directories.contains(p) {
                        try writer.addDirectory(p, mtime: now)
                        directories.insert(p)
                    }
                }
                // Dovecot honours X-Keywords only for keywords its X-IMAPbase header
                // names, so the file's first message carries one (before its bytes).
                let base = VolumeLayout.mboxIMAPBaseHeader(uidValidity: now, keywords: m.keywords)
                m.rewind(inserting: base)
                try writer.addFile(path, size: m.size + Int64(base.count), mtime: m.latestDate) { try m.read(into: $0) }
                indexOf[path] = entryIndex
                shiftOf[path] = Int64(base.count)
                entryIndex += 1
            }
            for i in records.indices {
                records[i].entryIndex = indexOf[records[i].entryPath] ?? 0
                records[i].entryOffset += shiftOf[records[i].entryPath] ?? 0
            }
        }
        let (sha, size) = try writer.finish()
        return (sha, size, records)
    }

    /// Drops the volume: the writer and its temporary file.
    func abandon() {
        writer.abandon()
        unlink(tempPath)
    }
}

/// One folder's mbox file for the volume being written, spooled to an
/// unlinked temp file because a tar header needs the size up front.
final class MboxSpool {
    private let fd: Int32
    private(set) var size: Int64 = 0
    private(set) var latestDate: Int64 = 0
    /// The valid keywords of the file's messages, in order of first use.
    private(set) var keywords: [String] = []
    /// Where the first message's bytes start (after its `From ` and status lines).
    private var firstMessageStart: Int64?
    private var readOffset: Int64 = 0
    /// Bytes put in at `firstMessageStart` when the spool is read back.
    private var insert: [UInt8] = []
    private var inserted = 0

    init(directory: String) throws {
        let p = directory + "/.mbox-\(UUID().uuidString).tmp"
        fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw MailError(.storage, scope: .local, "cannot create spool file in \(directory): \(String(cString: strerror(errno)))")
        }
        unlink(p)
    }
    deinit { close(fd) }

    private func put(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { b in
            var off = 0
            while off < b.count {
                let n = pwrite(fd, b.baseAddress! + off, b.count - off, off_t(size))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw MailError(.storage, scope: .local, "cannot write mbox spool: \(String(cString: strerror(errno)))")
                }
                off += n
                size += Int64(n)
            }
        }
    }

    /// Appends `From ` line, status headers and the quoted message. Returns the
    /// offset and quoted length of the message itself.
    func append(spool: Spool, flags: Flags, date: Int64) throws -> (Int64, Int64) {
        latestDate = max(latestDate, date)
        try put(VolumeLayout.mboxFromLine(date) + VolumeLayout.mboxStatusHeaders(flags))
        let start = size
        if firstMessageStart == nil { firstMessageStart = start }
        for k in flags.keywords where k.isValidKeyword && !keywords.contains(k.name) { keywords.append(k.name) }
        var quoter = FromQuoter()
        var out: [UInt8] = []
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { buf.deallocate() }
        while true {
            let n = try spool.read(into: buf)
            if n == 0 { break }
            out.removeAll(keepingCapacity: true)
            quoter.process(UnsafeRawBufferPointer(rebasing: buf[0..<n]), into: &out)
            try put(out)
        }
        out.removeAll(keepingCapacity: true)
        quoter.flush(into: &out)
        try put(out)
        let length = size - start
        // A message that does not end with a newline gets one, then the blank
        // separator line; neither belongs to the message.
        try put((quoter.lastByte ?? 0x0A) == 0x0A ? [0x0A] : [0x0A, 0x0A])
        return (start, length)
    }

    /// Reads from the start again, with `inserting` put in before the first message's bytes.
    func rewind(inserting: [UInt8] = []) {
        readOffset = 0
        insert = inserting
        inserted = 0
    }

    func read(into buf: UnsafeMutableRawBufferPointer) throws -> Int {
        let insertAt = firstMessageStart ?? size
        if readOffset == insertAt && inserted < insert.count {
            let n = min(buf.count, insert.count - inserted)
            insert.withUnsafeBytes { src in
                buf.baseAddress!.copyMemory(from: src.baseAddress! + inserted, byteCount: n)
            }
            inserted += n
            return n
        }
        let end = readOffset < insertAt && inserted < insert.count ? insertAt : size
        let left = end - readOffset
        guard left > 0 else { return 0 }
        while true {
            let n = pread(fd, buf.baseAddress, Int(min(Int64(buf.count), left)), off_t(readOffset))
            if n < 0 {
                if errno == EINTR { continue }
                throw MailError(.storage, scope: .local, "cannot read mbox spool: \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw MailError(.storage, scope: .local, "mbox spool shorter than written") }
            readOffset += Int64(n)
            return n
        }
    }
}

/// Walks a volume once, handing out the wanted messages in the order they
/// appear. Each stream must be read (or left) before `next()` is called again.
final class VolumeMessageReader {
    let reader: VolumeReader
    let volumeName: String
    let format: ArchiveFormat
    private var wanted: [String: [MessageRecord]]
    private var currentQueue: [MessageRecord] = []
    private var positionInEntry: Int64 = 0
    private var currentEntry: VolumeEntry?
    private var current: MessageStream?
    /// File entries the catalog does not know (besides keyword maps).
    private(set) var unknownEntries: [String] = []
    private(set) var entriesSeen = 0

    /// When true, `next()` ends as soon as every wanted message was handed
    /// out, without reading the rest of the volume (restores); `check` reads all.
    var stopWhenDone = false

    init(path: String, volumeName: String, format: ArchiveFormat, wanted: [MessageRecord]) throws {
        reader = try VolumeReader(path: path, volumeName: volumeName)
        self.volumeName = volumeName
        self.format = format
        var w: [String: [MessageRecord]] = [:]
        for r in wanted { w[r.entryPath, default: []].append(r) }
        for k in w.keys { w[k]?.sort { $0.entryOffset < $1.entryOffset } }
        self.wanted = w
    }

    /// Paths and records not found by the end of the volume.
    var missing: [MessageRecord] { wanted.values.flatMap { $0 } + currentQueue }

    func next() throws -> (MessageRecord, MessageStream)? {
        if let c = current { try c.abandon(); current = nil }
        while true {
            if let entry = currentEntry, !currentQueue.isEmpty {
                let r = currentQueue.removeFirst()
                guard r.entryOffset >= positionInEntry, r.entryOffset + r.entryLength <= entry.size else {
                    throw MailError(.corrupt, scope: .local,
                                    "volume \(volumeName), entry \(entry.path): message \(r.key.short) lies outside the entry (size \(entry.size))")
                }
                try reader.skip(r.entryOffset - positionInEntry)
                positionInEntry = r.entryOffset + r.entryLength
                let s = MessageStream(reader: reader, record: r, volumeName: volumeName, entryPath: entry.path,
                                      unquote: format == .mbox)
                current = s
                return (r, s)
            }
            if stopWhenDone && wanted.isEmpty && currentQueue.isEmpty { return nil }
            guard let entry = try reader.next() else {
                currentEntry = nil
                return nil
            }
            entriesSeen += 1
            currentEntry = entry
            positionInEntry = 0
            if entry.isDirectory { continue }
            if let q = wanted.removeValue(forKey: entry.path) {
                if format == .maildir, let r = q.first, r.size != entry.size {
                    throw MailError(.corrupt, scope: .local,
                                    "volume \(volumeName), entry \(entry.path): size \(entry.size) does not match the catalog's \(r.size)")
                }
                currentQueue = q
            } else if entry.path != "dovecot-keywords" && !entry.path.hasSuffix("/dovecot-keywords") {
                unknownEntries.append(entry.path)
            }
        }
    }
}

/// One message's bytes as they come out of a volume (unquoted for mbox),
/// checked against the catalog's size and key at the end.
final class MessageStream: @unchecked Sendable {
    private let reader: VolumeReader
    let record: MessageRecord
    private let volumeName: String
    private let entryPath: String
    private var remaining: Int64
    private var unquoter: FromUnquoter?
    private var hasher = MessageHasher()
    private var produced: Int64 = 0
    private var finished = false
    private static let chunkSize = 64 * 1024
    /// Only `nextChunk` (mbox, check) uses it: made on first use.
    private lazy var buffer = [UInt8](repeating: 0, count: Self.chunkSize)

    init(reader: VolumeReader, record: MessageRecord, volumeName: String, entryPath: String, unquote: Bool) {
        self.reader = reader
        self.record = record
        self.volumeName = volumeName
        self.entryPath = entryPath
        self.remaining = record.entryLength
        self.unquoter = unquote ? FromUnquoter() : nil
    }

    private func corrupt(_ what: String) -> MailError {
        MailError(.corrupt, scope: .local, "volume \(volumeName), entry \(entryPath): message \(record.key.short) \(what)",
                  hint: "run `mailferry archive check` on the archive")
    }

    /// The next chunk, or nil once the message has ended and matched its key.
    func nextChunk() throws -> [UInt8]? {
        if finished { return nil }
        if remaining == 0 {
            finished = true
            var tail: [UInt8] = []
            unquoter?.flush(into: &tail)
            if !tail.isEmpty { hasher.update(tail); produced += Int64(tail.count) }
            guard produced == record.size else { throw corrupt("has \(produced) bytes, catalog says \(record.size)") }
            guard hasher.finalize() == record.key else { throw corrupt("does not match its key (damaged bytes)") }
            return tail.isEmpty ? nil : tail
        }
        let want = Int(min(Int64(buffer.count), remaining))
        let n = try buffer.withUnsafeMutableBytes { try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<want])) }
        if n == 0 { throw corrupt("is cut short") }
        remaining -= Int64(n)
        var out: [UInt8]
        if var u = unquoter {
            out = []
            out.reserveCapacity(n)
            buffer.withUnsafeBytes { u.process(UnsafeRawBufferPointer(rebasing: $0[0..<n]), into: &out) }
            unquoter = u
        } else {
            out = Array(buffer[0..<n])
        }
        hasher.update(out)
        produced += Int64(out.count)
        if out.isEmpty { return try nextChunk() }
        return out
    }

    /// Reads the rest, checking it.
    func drain() throws {
        while try nextChunk() != nil {}
    }

    /// Skips the rest without checking.
    func abandon() throws {
        if finished { return }
        finished = true
        if remaining > 0 { try reader.skip(remaining) }
        remaining = 0
    }

    /// The next chunk as a ByteBuffer. A plain entry (Maildir volumes) is
    /// read straight into the buffer that goes out; mbox goes through `nextChunk`.
    func nextBuffer() throws -> ByteBuffer? {
        guard unquoter == nil, !finished, remaining > 0 else {
            return try nextChunk().map { ByteBuffer(bytes: $0) }
        }
        let want = Int(min(Int64(Self.chunkSize), remaining))
        var out = ByteBufferAllocator().buffer(capacity: want)
        let n = try out.writeWithUnsafeMutableBytes(minimumWritableBytes: want) { dst in
            try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: dst[0..<want]))
        }
        if n == 0 { throw corrupt("is cut short") }
        remaining -= Int64(n)
        out.withUnsafeReadableBytes { hasher.update($0) }
        produced += Int64(n)
        return out
    }

    var body: MessageBody {
        MessageBody(size: record.size) { [self] in
            guard let c = try self.nextBuffer() else { return nil }
            return c
        }
    }
}

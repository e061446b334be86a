import CArchive
@preconcurrency import Crypto
import Foundation
import MailModel

// Thin, streaming wrappers over libarchive. A volume is written through our
// own write callback (so we hash the compressed bytes as they leave and see
// disk errors such as ENOSPC with their errno) and read entry by entry; no
// entry is ever extracted to disk.

private let archiveOK: Int32 = 0        // ARCHIVE_OK
private let archiveEOF: Int32 = 1       // ARCHIVE_EOF
private let archiveWarn: Int32 = -20    // ARCHIVE_WARN

let modeRegular: UInt32 = 0o100000      // AE_IFREG
let modeDirectory: UInt32 = 0o040000    // AE_IFDIR
let modeTypeMask: UInt32 = 0o170000     // AE_IFMT

/// libarchive converts entry names through the C library's current locale;
/// under the "C" locale that a CLI usually runs in, UTF-8 names would be
/// mangled (or crash older versions). Every libarchive call that touches names
/// runs under a thread-local UTF-8 locale.
nonisolated(unsafe) private let utf8Locale: locale_t? = newlocale(LC_CTYPE_MASK, "C.UTF-8", nil)
    ?? newlocale(LC_CTYPE_MASK, "en_US.UTF-8", nil)

func withUTF8Locale<T>(_ body: () throws -> T) rethrows -> T {
    let previous = enterUTF8Locale()
    defer { leaveUTF8Locale(previous) }
    return try body()
}

func enterUTF8Locale() -> locale_t? {
    guard let l = utf8Locale else { return nil }
    return uselocale(l)
}

func leaveUTF8Locale(_ previous: locale_t?) {
    if let previous { uselocale(previous) }
}

/// Compression filter of a volume.
public enum ArchiveCompression: String, Sendable, Codable, CaseIterable, Hashable {
    case zstd, gzip, xz, none

    /// File name suffix after `.tar`.
    public var fileExtension: String {
        switch self {
        case .zstd: return ".tar.zst"
        case .gzip: return ".tar.gz"
        case .xz: return ".tar.xz"
        case .none: return ".tar"
        }
    }

    /// The compression a volume file name implies.
    public init?(fileName: String) {
        if fileName.hasSuffix(".tar.zst") { self = .zstd }
        else if fileName.hasSuffix(".tar.gz") { self = .gzip }
        else if fileName.hasSuffix(".tar.xz") { self = .xz }
        else if fileName.hasSuffix(".tar") { self = .none }
        else { return nil }
    }
}

/// Writes one tar volume, streaming. Not thread-safe; owned by one writer.
final class VolumeWriter {
    private var archive: OpaquePointer?
    private var fd: Int32
    let path: String
    private(set) var sha = SHA256()
    private(set) var bytesWritten: Int64 = 0
    fileprivate var lastErrno: Int32 = 0
    private var closed = false
    /// Test hook: fail the write callback once this many compressed bytes went out.
    var failAfterBytes: Int64?

    init(path: String, compression: ArchiveCompression, level: Int? = nil) throws {
        let previous = enterUTF8Locale()
        defer { leaveUTF8Locale(previous) }
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw MailError(.storage, scope: .local, "cannot create volume \(path): \(String(cString: strerror(errno)))")
        }
        guard let a = archive_write_new() else {
            Foundation.close(fd)
            throw MailError(.storage, scope: .local, "libarchive could not allocate a writer")
        }
        archive = a
        var r: Int32
        switch compression {
        case .zstd: r = archive_write_add_filter_zstd(a)
        case .gzip: r = archive_write_add_filter_gzip(a)
        case .xz: r = archive_write_add_filter_xz(a)
        case .none: r = archive_write_add_filter_none(a)
        }
        if r == archiveOK, let level, compression != .none {
            r = archive_write_set_filter_option(a, nil, "compression-level", String(level))
        }
        if r == archiveOK { r = archive_write_set_format_pax_restricted(a) }
        // The compressed stream goes out in 128 KiB writes (the default of
        // 10 KiB blocks cost a write(2) per block); the last one is not padded.
        if r == archiveOK { r = archive_write_set_bytes_per_block(a, Self.outputBlockSize) }
        if r == archiveOK { r = archive_write_set_bytes_in_last_block(a, 1) }
        if r == archiveOK {
            r = archive_write_open2(a, Unmanaged.passUnretained(self).toOpaque(), nil, { _, client, buffer, length in
                guard let client, let buffer else { return -1 }
                let w = Unmanaged<VolumeWriter>.fromOpaque(client).takeUnretainedValue()
                return w.writeOut(UnsafeRawBufferPointer(start: buffer, count: length))
            }, nil, nil)
        }
        if r != archiveOK {
            let message = Self.errorString(a)
            abandon()
            throw MailError(.storage, scope: .local, "cannot start volume \(path): \(message)")
        }
    }

    deinit { abandon() }

    static let outputBlockSize: Int32 = 128 * 1024
    /// Owner of every entry: whoever runs the backup (asked once, not per entry).
    private static let owner = (uid: Int64(getuid()), gid: Int64(getgid()))

    private func writeOut(_ bytes: UnsafeRawBufferPointer) -> Int {
        if let limit = failAfterBytes, bytesWritten + Int64(bytes.count) > limit {
            lastErrno = ENOSPC
            return -1
        }
        var done = 0
        while done < bytes.count {
            let n = Foundation.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                lastErrno = errno
                return -1
            }
            done += n
        }
        sha.update(bufferPointer: bytes)
        bytesWritten += Int64(bytes.count)
        return bytes.count
    }

    static func errorString(_ a: OpaquePointer?) -> String {
        guard let a, let s = archive_error_string(a) else { return "unknown libarchive error" }
        return String(cString: s)
    }

    private func failure(_ what: String) -> MailError {
        var msg = "\(what) in volume \(path): \(Self.errorString(archive))"
        if lastErrno != 0 { msg += " (\(String(cString: strerror(lastErrno))))" }
        return MailError(.storage, scope: .local, msg)
    }

    private func header(path entryPath: String, mode: UInt32, size: Int64, mtime: Int64) throws {
        try withUTF8Locale { try headerUnlocked(path: entryPath, mode: mode, size: size, mtime: mtime) }
    }

    private func headerUnlocked(path entryPath: String, mode: UInt32, size: Int64, mtime: Int64) throws {
        guard let a = archive, let e = archive_entry_new() else { throw failure("no writer") }
        defer { archive_entry_free(e) }
        archive_entry_set_pathname_utf8(e, entryPath)
        archive_entry_set_filetype(e, mode & modeTypeMask)
        archive_entry_set_perm(e, mode & 0o7777)
        archive_entry_set_size(e, size)
        archive_entry_set_mtime(e, time_t(mtime), 0)
        archive_entry_set_uid(e, Self.owner.uid)
        archive_entry_set_gid(e, Self.owner.gid)
        let r = archive_write_header(a, e)
        if r != archiveOK && r != archiveWarn { throw failure("cannot write header for \(entryPath)") }
    }

    func addDirectory(_ entryPath: String, mtime: Int64) throws {
        try header(path: entryPath, mode: modeDirectory | 0o700, size: 0, mtime: mtime)
    }

    /// Writes a regular file of exactly `size` bytes; `fill` is called until it
    /// has produced them all (it returns the number of bytes put in the buffer).
    func addFile(_ entryPath: String, size: Int64, mtime: Int64,
                 fill: (UnsafeMutableRawBufferPointer) throws -> Int) throws {
        try header(path: entryPath, mode: modeRegular | 0o600, size: size, mtime: mtime)
        guard let a = archive else { throw failure("no writer") }
        var remaining = size
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { buf.deallocate() }
        while remaining > 0 {
            let want = Int(min(Int64(buf.count), remaining))
            let n = try fill(UnsafeMutableRawBufferPointer(rebasing: buf[0..<want]))
            guard n > 0 else {
                throw MailError(.storage, scope: .local, "entry \(entryPath) ended \(remaining) bytes short while writing volume \(path)")
            }
            var off = 0
            while off < n {
                let w = archive_write_data(a, buf.baseAddress! + off, n - off)
                if w < 0 { throw failure("cannot write \(entryPath)") }
                off += Int(w)
            }
            remaining -= Int64(n)
        }
        let r = archive_write_finish_entry(a)
        if r != archiveOK && r != archiveWarn { throw failure("cannot finish \(entryPath)") }
    }

    func addFile(_ entryPath: String, bytes: [UInt8], mtime: Int64) throws {
        try bytes.withUnsafeBytes { try addFile(entryPath, contiguous: $0, mtime: mtime) }
    }

    /// Writes a regular file whose bytes are all in memory, handing them to
    /// libarchive as they are (no copy through a staging buffer).
    func addFile(_ entryPath: String, contiguous bytes: UnsafeRawBufferPointer, mtime: Int64) throws {
        try header(path: entryPath, mode: modeRegular | 0o600, size: Int64(bytes.count), mtime: mtime)
        guard let a = archive else { throw failure("no writer") }
        var off = 0
        while off < bytes.count, let base = bytes.baseAddress {
            let w = archive_write_data(a, base + off, bytes.count - off)
            if w < 0 { throw failure("cannot write \(entryPath)") }
            if w == 0 {
                throw MailError(.storage, scope: .local, "entry \(entryPath) could not be written to volume \(path)")
            }
            off += Int(w)
        }
        let r = archive_write_finish_entry(a)
        if r != archiveOK && r != archiveWarn { throw failure("cannot finish \(entryPath)") }
    }

    /// Ends the tar stream, flushes the compressor and fsyncs the file.
    /// Returns the file's SHA-256 (hex) and size.
    func finish() throws -> (sha256: String, size: Int64) {
        try withUTF8Locale { try finishUnlocked() }
    }

    private func finishUnlocked() throws -> (sha256: String, size: Int64) {
        guard let a = archive else { throw failure("writer already finished") }
        let r = archive_write_close(a)
        if r != archiveOK && r != archiveWarn { throw failure("cannot finish") }
        archive_write_free(a)
        archive = nil
        if fsync(fd) != 0 {
            let e = errno
            throw MailError(.storage, scope: .local, "cannot fsync volume \(path): \(String(cString: strerror(e)))")
        }
        Foundation.close(fd)
        fd = -1
        closed = true
        return (sha.finalize().hexString, bytesWritten)
    }

    /// Drops the writer and removes the partial file.
    func abandon() {
        if let a = archive {
            archive_write_free(a)   // may try to flush; errors ignored
            archive = nil
        }
        if fd >= 0 {
            Foundation.close(fd)
            fd = -1
        }
        if !closed {
            unlink(path)
            closed = true
        }
    }
}

/// One entry of a volume being read.
struct VolumeEntry {
    var path: String
    var isDirectory: Bool
    var size: Int64
    var mtime: Int64
}

/// Reads a volume entry by entry, refusing anything that is not a plain file
/// or directory with a relative, non-escaping path.
final class VolumeReader {
    private var archive: OpaquePointer?
    let volumeName: String
    private(set) var currentEntry: VolumeEntry?
    private var entryRemaining: Int64 = 0

    init(path: String, volumeName: String) throws {
        let previous = enterUTF8Locale()
        defer { leaveUTF8Locale(previous) }
        self.volumeName = volumeName
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw MailError(.corrupt, scope: .local, "volume \(volumeName) is missing (\(String(cString: strerror(errno))))")
        }
        guard let a = archive_read_new() else {
            throw MailError(.storage, scope: .local, "libarchive could not allocate a reader")
        }
        archive = a
        archive_read_support_filter_all(a)
        archive_read_support_format_tar(a)
        let r = archive_read_open_filename(a, path, 128 * 1024)
        if r != archiveOK {
            let m = VolumeWriter.errorString(a)
            archive_read_free(a)
            archive = nil
            throw MailError(.corrupt, scope: .local, "volume \(volumeName) cannot be opened: \(m)")
        }
    }

    deinit {
        if let a = archive { archive_read_free(a) }
    }

    private func corrupt(_ what: String, entry: String? = nil) -> MailError {
        var m = "volume \(volumeName)"
        if let entry { m += ", entry \(entry)" }
        return MailError(.corrupt, scope: .local, "\(m): \(what)")
    }

    /// The next entry, or nil at the end. Skips what is left of the current one.
    func next() throws -> VolumeEntry? {
        try withUTF8Locale { try nextUnlocked() }
    }

    private func nextUnlocked() throws -> VolumeEntry? {
        guard let a = archive else { return nil }
        if let entry = currentEntry, entryRemaining > 0 {
            // libarchive passes over the rest itself (still decompressing, and
            // failing on a cut-short volume) without copying it out to us.
            if archive_read_data_skip(a) != archiveOK {
                throw corrupt("unreadable data (\(VolumeWriter.errorString(a)))", entry: entry.path)
            }
            entryRemaining = 0
        }
        var e: OpaquePointer?
        let r = archive_read_next_header(a, &e)
        if r == archiveEOF { currentEntry = nil; return nil }
        guard r == archiveOK || r == archiveWarn, let e else {
            throw corrupt("unreadable (\(VolumeWriter.errorString(a)))", entry: currentEntry?.path)
        }
        let path: String
        if let p = archive_entry_pathname_utf8(e) { path = String(cString: p) }
        else if let p = archive_entry_pathname(e) { path = String(decoding: Array(String(cString: p).utf8), as: UTF8.self) }
        else { throw corrupt("entry without a name") }
        let type = UInt32(archive_entry_filetype(e))
        if archive_entry_hardlink(e) != nil { throw corrupt("hard link refused", entry: path) }
        if type == 0o120000 { throw corrupt("symbolic link refused", entry: path) }
        guard type == modeRegular || type == modeDirectory else {
            throw corrupt("device, fifo or socket entry refused", entry: path)
        }
        try Self.checkPath(path, volume: volumeName)
        let size = archive_entry_size_is_set(e) != 0 ? archive_entry_size(e) : 0
        guard size >= 0, type == modeRegular || size == 0 else { throw corrupt("bad size \(size)", entry: path) }
        let entry = VolumeEntry(path: path, isDirectory: type == modeDirectory, size: size,
                                mtime: Int64(archive_entry_mtime(e)))
        currentEntry = entry
        entryRemaining = size
        return entry
    }

    /// Refuses absolute paths, `..` and empty components, and NUL bytes.
    static func checkPath(_ path: String, volume: String) throws {
        var p = path
        if p.hasSuffix("/") { p.removeLast() }
        let comps = p.split(separator: "/", omittingEmptySubsequences: false)
        let bad = path.hasPrefix("/") || p.isEmpty || path.utf8.contains(0)
            || comps.contains { $0 == ".." || $0 == "." || $0.isEmpty }
        if bad {
            throw MailError(.corrupt, scope: .local, "volume \(volume), entry \(path): path escapes the archive, refused")
        }
    }

    /// Reads up to `buffer.count` bytes of the current entry; 0 at its end.
    /// A volume that ends before the entry's declared size is corrupt.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try withUTF8Locale { try readUnlocked(into: buffer) }
    }

    private func readUnlocked(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let a = archive, let entry = currentEntry else { return 0 }
        if entryRemaining == 0 { return 0 }
        let want = Int(min(Int64(buffer.count), entryRemaining))
        let n = archive_read_data(a, buffer.baseAddress, want)
        if n < 0 { throw corrupt("unreadable data (\(VolumeWriter.errorString(a)))", entry: entry.path) }
        if n == 0 { throw corrupt("entry ends \(entryRemaining) bytes before its declared size", entry: entry.path) }
        entryRemaining -= Int64(n)
        return n
    }

    /// Skips `count` bytes of the current entry.
    func skip(_ count: Int64) throws {
        var left = count
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { buf.deallocate() }
        while left > 0 {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<Int(min(Int64(buf.count), left))]))
            if n == 0 { throw corrupt("entry shorter than expected", entry: currentEntry?.path) }
            left -= Int64(n)
        }
    }

    /// Reads (and so checks) the rest of the current entry.
    func skipRest() throws {
        try skip(entryRemaining)
    }

    var remainingInEntry: Int64 { entryRemaining }
}

extension Sequence where Element == UInt8 {
    var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for b in self {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension SHA256.Digest {
    var hexString: String { Array(self).hexString }
}

/// SHA-256 of raw bytes (no line-ending normalisation), streamed.
struct RawSHA256 {
    private var sha = SHA256()
    init() {}
    mutating func update(_ bytes: UnsafeRawBufferPointer) { sha.update(bufferPointer: bytes) }
    mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { sha.update(bufferPointer: $0) } }
    func finalize() -> String { sha.finalize().hexString }
    static func of(_ bytes: [UInt8]) -> String {
        var h = RawSHA256()
        h.update(bytes)
        return h.finalize()
    }
}

/// SHA-256 of a whole file, streamed.
func sha256OfFile(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
        throw MailError(.corrupt, scope: .local, "cannot read \(path): \(String(cString: strerror(errno)))")
    }
    defer { close(fd) }
    var sha = SHA256()
    let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
    defer { buf.deallocate() }
    while true {
        let n = read(fd, buf.baseAddress, buf.count)
        if n < 0 { if errno == EINTR { continue }; throw MailError(.storage, scope: .local, "cannot read \(path)") }
        if n == 0 { break }
        sha.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buf[0..<n]))
    }
    return sha.finalize().hexString
}

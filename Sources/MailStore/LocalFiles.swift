#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import MailModel
import NIOCore
import NIOConcurrencyHelpers

/// Thin POSIX helpers shared by the local stores (Maildir, mbox). Every
/// failure becomes a `MailError` that names the path; nothing here crashes on
/// what it finds on disk. Directories are made 0700 and files 0600 whatever
/// the umask, because mail is private.
enum Posix {
    /// Chunk size for streaming reads.
    static let chunkSize = 64 * 1024

    static func errorText(_ err: Int32) -> String {
        guard let s = strerror(err) else { return "error \(err)" }
        return String(cString: s)
    }

    static func error(_ op: String, _ path: String, _ err: Int32, scope: MailError.Scope = .folder,
                      folder: FolderPath? = nil, messageID: String? = nil) -> MailError {
        let kind: MailError.Kind = err == ENOENT ? .notFound : .storage
        let hint: String?
        switch err {
        case ENOSPC, EDQUOT: hint = "the disk (or quota) is full"
        case EACCES, EPERM: hint = "check the permissions of \(path)"
        case EROFS: hint = "the file system is read-only"
        default: hint = nil
        }
        // A full disk is not one folder's trouble: every write after it fails too, so it ends the run.
        let reach: MailError.Scope = err == ENOSPC || err == EDQUOT ? .local : scope
        return MailError(kind, scope: reach, "cannot \(op) \(path): \(errorText(err))", hint: hint,
                         folder: folder, messageID: messageID)
    }

    struct FileStat: Sendable, Hashable {
        var isDirectory: Bool
        var isRegular: Bool
        var isSymlink: Bool
        var size: Int64
        var mtime: Int64
        var mtimeNanos: Int64
        var device: UInt64
        var inode: UInt64
    }

    private static func convert(_ st: stat) -> FileStat {
        let fmt = st.st_mode & S_IFMT
        #if canImport(Darwin)
        let sec = Int64(st.st_mtimespec.tv_sec), nsec = Int64(st.st_mtimespec.tv_nsec)
        #else
        let sec = Int64(st.st_mtim.tv_sec), nsec = Int64(st.st_mtim.tv_nsec)
        #endif
        return FileStat(isDirectory: fmt == S_IFDIR, isRegular: fmt == S_IFREG, isSymlink: fmt == S_IFLNK,
                        size: Int64(st.st_size), mtime: sec, mtimeNanos: nsec,
                        device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// `lstat`; nil when the path does not exist, an error for anything else.
    static func lstat(_ path: String) throws -> FileStat? {
        var st = stat()
        if path.withCString({ Glibc_lstat($0, &st) }) == 0 { return convert(st) }
        let e = errno
        if e == ENOENT || e == ENOTDIR { return nil }
        throw error("inspect", path, e)
    }

    static func fstat(_ fd: Int32, path: String) throws -> FileStat {
        var st = stat()
        guard Glibc_fstat(fd, &st) == 0 else { throw error("inspect", path, errno) }
        return convert(st)
    }

    /// Creates one directory (0700). Succeeds if it already exists as a directory.
    static func makeDirectory(_ path: String) throws {
        if path.withCString({ mkdir($0, 0o700) }) == 0 {
            _ = path.withCString { chmod($0, 0o700) }
            return
        }
        let e = errno
        if e == EEXIST, let st = try lstat(path), st.isDirectory { return }
        if e == EEXIST {
            throw MailError(.storage, scope: .folder, "cannot create directory \(path): a file of that name is in the way")
        }
        throw error("create directory", path, e)
    }

    /// `mkdir -p`, 0700 for every directory it creates.
    static func makeDirectories(_ path: String) throws {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            prefix += (prefix.isEmpty || prefix.hasSuffix("/") ? "" : "/") + part
            try makeDirectory(prefix)
        }
    }

    enum EntryType: Sendable { case file, directory, symlink, other }

    /// The names in a directory (without `.` and `..`), with their types.
    /// Names that are not valid UTF-8 are reported, not dropped.
    static func listDirectory(_ path: String) throws -> [(name: String, type: EntryType)] {
        guard let dir = path.withCString({ opendir($0) }) else { throw error("read directory", path, errno) }
        defer { closedir(dir) }
        var out: [(String, EntryType)] = []
        while true {
            errno = 0
            guard let ent = readdir(dir) else {
                if errno != 0 { throw error("read directory", path, errno) }
                break
            }
            let nameBytes: [UInt8] = withUnsafePointer(to: &ent.pointee.d_name) { p in
                p.withMemoryRebound(to: UInt8.self, capacity: 256) { c in
                    var bytes = [UInt8]()
                    var i = 0
                    while i < 256, c[i] != 0 { bytes.append(c[i]); i += 1 }
                    return bytes
                }
            }
            if nameBytes == [0x2E] || nameBytes == [0x2E, 0x2E] { continue }
            guard let name = String(validating: nameBytes, as: UTF8.self) else {
                throw MailError(.corrupt, scope: .folder,
                                "\(path) holds a file whose name is not UTF-8 (\(String(decoding: nameBytes, as: UTF8.self)))",
                                hint: "rename it; mailferry cannot address it")
            }
            var type: EntryType
            switch Int32(ent.pointee.d_type) {
            case Int32(DT_REG): type = .file
            case Int32(DT_DIR): type = .directory
            case Int32(DT_LNK): type = .symlink
            default: type = .other
            }
            if type == .other, let st = try lstat(path + "/" + name) {
                type = st.isRegular ? .file : st.isDirectory ? .directory : st.isSymlink ? .symlink : .other
            }
            out.append((name, type))
        }
        return out
    }

    /// Creates a new file for writing, failing if it exists. Mode 0600.
    static func createExclusive(_ path: String) throws -> Int32 {
        let fd = path.withCString { open($0, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
        guard fd >= 0 else { throw error("create", path, errno) }
        _ = fchmod(fd, 0o600)
        return fd
    }

    static func openRead(_ path: String) throws -> Int32 {
        let fd = path.withCString { open($0, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { throw error("open", path, errno) }
        return fd
    }

    static func openAppend(_ path: String) throws -> Int32 {
        let fd = path.withCString { open($0, O_WRONLY | O_APPEND | O_CLOEXEC) }
        guard fd >= 0 else { throw error("open", path, errno) }
        return fd
    }

    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw error("write", path, errno)
            }
            done += n
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        try bytes.withUnsafeBytes { try writeAll(fd, $0, path: path) }
    }

    static func writeAll(_ fd: Int32, _ buffer: ByteBuffer, path: String) throws {
        try buffer.withUnsafeReadableBytes { try writeAll(fd, $0, path: path) }
    }

    /// Reads up to `count` bytes at `offset`; an empty array means end of file.
    static func pread(_ fd: Int32, count: Int, at offset: Int64, path: String) throws -> ByteBuffer {
        var buf = ByteBufferAllocator().buffer(capacity: count)
        while true {
            var failed: Int32 = 0
            let n = buf.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { p -> Int in
                let r = Glibc_pread(fd, p.baseAddress!, count, off_t(offset))
                if r < 0 { failed = errno; return 0 }
                return r
            }
            if failed == EINTR { continue }
            if failed != 0 { throw error("read", path, failed) }
            _ = n
            return buf
        }
    }

    static func fsync(_ fd: Int32, path: String) throws {
        while Glibc_fsync(fd) != 0 {
            if errno == EINTR { continue }
            // Some file systems refuse fsync on directories; that is not data loss.
            if errno == EINVAL || errno == EBADF { return }
            throw error("sync", path, errno)
        }
    }

    /// Starts writing a file's dirty pages to disk without waiting (Linux
    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that a later `fsync`
    /// finds them written. A hint only: `fsync` still decides durability.
    static func startWriteback(_ fd: Int32) {
        #if os(Linux)
        _ = syncFileRange?(fd, 0, 0, 2 /* SYNC_FILE_RANGE_WRITE */)
        #endif
    }

    #if os(Linux)
    /// glibc's `sync_file_range`, which the Glibc module does not export.
    private typealias SyncFileRange = @convention(c) (Int32, Int64, Int64, UInt32) -> Int32
    private static let syncFileRange: SyncFileRange? = {
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sync_file_range") else { return nil }
        return unsafeBitCast(sym, to: SyncFileRange.self)
    }()
    #endif

    static func fsyncDirectory(_ path: String) throws {
        let fd = path.withCString { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        guard fd >= 0 else { throw error("open directory", path, errno) }
        defer { sysClose(fd) }
        try fsync(fd, path: path)
    }

    static func rename(_ from: String, _ to: String) throws {
        let r = from.withCString { f in to.withCString { t in Glibc_rename(f, t) } }
        guard r == 0 else { throw error("rename \(from) to", to, errno) }
    }

    /// Renames without replacing an existing target (link + unlink).
    static func renameNoReplace(_ from: String, _ to: String) throws {
        let r = from.withCString { f in to.withCString { t in link(f, t) } }
        guard r == 0 else { throw error("move \(from) to", to, errno) }
        _ = from.withCString { Glibc_unlink($0) }
    }

    /// Removes a file; a file that is already gone is not an error.
    static func unlink(_ path: String) throws {
        if path.withCString({ Glibc_unlink($0) }) == 0 || errno == ENOENT { return }
        throw error("delete", path, errno)
    }

    static func setTimes(_ fd: Int32, seconds: Int64, path: String) throws {
        var times = [timespec(tv_sec: time_t(seconds), tv_nsec: 0), timespec(tv_sec: time_t(seconds), tv_nsec: 0)]
        guard futimens(fd, &times) == 0 else { throw error("set the date of", path, errno) }
    }

    static func hostName() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        guard gethostname(&buf, 255) == 0 else { return "localhost" }
        let bytes = buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }
        let name = String(decoding: bytes, as: UTF8.self)
        return name.isEmpty ? "localhost" : name
    }

    static func now() -> (seconds: Int64, micros: Int64) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return (Int64(ts.tv_sec), Int64(ts.tv_nsec) / 1000)
    }

    static var pid: Int32 { getpid() }
}

// Unambiguous names for libc functions that collide with our own.
@inline(__always) private func Glibc_lstat(_ p: UnsafePointer<CChar>, _ st: UnsafeMutablePointer<stat>) -> Int32 { lstat(p, st) }
@inline(__always) private func Glibc_fstat(_ fd: Int32, _ st: UnsafeMutablePointer<stat>) -> Int32 { fstat(fd, st) }
@inline(__always) private func Glibc_pread(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ n: Int, _ o: off_t) -> Int { pread(fd, p, n, o) }
@inline(__always) private func Glibc_fsync(_ fd: Int32) -> Int32 { fsync(fd) }
@inline(__always) private func Glibc_rename(_ a: UnsafePointer<CChar>, _ b: UnsafePointer<CChar>) -> Int32 { rename(a, b) }
@inline(__always) func sysClose(_ fd: Int32) { _ = close(fd) }
@inline(__always) private func Glibc_unlink(_ p: UnsafePointer<CChar>) -> Int32 { unlink(p) }

/// Streams a byte range of an open file in 64 KB chunks, then closes it.
/// `transform` may rewrite each chunk (mbox unquoting). A file that ends
/// before `end` is reported as truncated, naming the file.
final class FileChunkReader: @unchecked Sendable {
    private let lock = NIOLock()
    private var fd: Int32
    private var offset: Int64
    private let end: Int64
    private let path: String
    private let folder: FolderPath?
    private let messageID: String?
    private var filter: StreamFilter?

    init(fd: Int32, path: String, start: Int64, end: Int64, folder: FolderPath?, messageID: String?,
         filter: StreamFilter? = nil) {
        self.fd = fd
        self.path = path
        self.offset = start
        self.end = end
        self.folder = folder
        self.messageID = messageID
        self.filter = filter
    }

    func next() throws -> ByteBuffer? {
        try lock.withLock {
            guard fd >= 0 else { return nil }
            while offset < end {
                let want = Int(min(Int64(Posix.chunkSize), end - offset))
                let chunk = try Posix.pread(fd, count: want, at: offset, path: path)
                if chunk.readableBytes == 0 {
                    throw MailError(.corrupt, scope: .message,
                                    "\(path) ended at byte \(offset), before the \(end) bytes it was listed with (truncated?)",
                                    folder: folder, messageID: messageID)
                }
                offset += Int64(chunk.readableBytes)
                if var f = filter {
                    let out = f.process(chunk, final: offset >= end)
                    filter = f
                    if out.readableBytes == 0 { continue }
                    return out
                }
                return chunk
            }
            if var f = filter {
                filter = nil
                let tail = f.process(ByteBuffer(), final: true)
                if tail.readableBytes > 0 { return tail }
            }
            closeLocked()
            return nil
        }
    }

    private func closeLocked() {
        if fd >= 0 { sysClose(fd); fd = -1 }
    }

    func close() { lock.withLock { closeLocked() } }

    deinit { if fd >= 0 { sysClose(fd) } }
}

/// A byte-stream rewriter applied while reading (mbox `>From ` unquoting).
protocol StreamFilter: Sendable {
    mutating func process(_ chunk: ByteBuffer, final: Bool) -> ByteBuffer
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import MailModel
import NIOCore
import NIOConcurrencyHelpers

/// A body of unknown size (POP3 gives none) spooled to a private temporary
/// file, so a destination that must announce the size first (an IMAP literal)
/// can send it without holding the message in memory.
///
/// The file is created 0600 in `$TMPDIR` (else /tmp) and unlinked at once: it
/// has no name while it is used, and the kernel frees it when the last
/// descriptor closes, even if the process dies.
public enum SpooledBody {
    public struct Spooled: Sendable {
        /// The body again, now with its exact size, read back in 64 KB chunks.
        public let body: MessageBody
        public let size: Int64
        /// True if any byte was NUL (IMAP then needs literal8 / BINARY).
        public let containsNUL: Bool
        /// The bytes themselves when they stayed in memory (the same storage
        /// `body` hands out, not a copy); nil when they went to a file.
        public var buffer: ByteBuffer? = nil
    }

    static let chunkSize = 64 * 1024

    /// Reads `body` to its end into a temporary file. Bodies up to
    /// `inMemoryLimit` bytes stay in memory instead.
    public static func spool(_ body: MessageBody, inMemoryLimit: Int = 4 * 1024 * 1024) async throws -> Spooled {
        var memory = ByteBuffer()
        var file: SpoolFile?
        var size: Int64 = 0
        var nul = false
        for try await var chunk in body {
            if !nul { nul = IMAPStore.containsNUL(chunk) }
            size += Int64(chunk.readableBytes)
            if let f = file {
                try f.append(chunk)
            } else if memory.readableBytes + chunk.readableBytes <= inMemoryLimit {
                memory.writeBuffer(&chunk)
            } else {
                let f = try SpoolFile.make()
                try f.append(memory)
                try f.append(chunk)
                memory = ByteBuffer()
                file = f
            }
        }
        guard let file else {
            return Spooled(body: .bytes(memory), size: size, containsNUL: nul, buffer: memory)
        }
        return Spooled(body: file.reader(size: size), size: size, containsNUL: nul)
    }
}

/// An unlinked temporary file; closed when the last reference goes.
final class SpoolFile: @unchecked Sendable {
    private let fd: Int32
    private let path: String
    private let lock = NIOLock()
    private var offset: Int64 = 0

    private init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { sysClose(fd) }

    static func make() throws -> SpoolFile {
        let dir = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var lastError: Error?
        for _ in 0..<8 {
            let path = dir + "/mailferry-spool-" + UUID().uuidString
            do {
                let fd = try Posix.createExclusive(path)
                // Reopen for reading and writing: createExclusive opens write-only.
                let rw = path.withCString { open($0, O_RDWR | O_CLOEXEC) }
                let err = errno
                sysClose(fd)
                try? Posix.unlink(path)
                guard rw >= 0 else {
                    throw MailError(.storage, scope: .message, "cannot open a spool file in \(dir): \(Posix.errorText(err))")
                }
                return SpoolFile(fd: rw, path: path)
            } catch {
                lastError = error
            }
        }
        throw lastError ?? MailError(.storage, scope: .message, "cannot create a spool file in \(dir)")
    }

    func append(_ buffer: ByteBuffer) throws {
        try lock.withLock { try Posix.writeAll(fd, buffer, path: path) }
    }

    /// A body that reads the file from the start, in chunks.
    func reader(size: Int64) -> MessageBody {
        let position = NIOLockedValueBox<Int64>(0)
        return MessageBody(size: size) { [self] in
            let at = position.withLockedValue { $0 }
            guard at < size else { return nil }
            let want = Int(min(Int64(SpooledBody.chunkSize), size - at))
            let chunk = try lock.withLock { try Posix.pread(fd, count: want, at: at, path: path) }
            guard chunk.readableBytes > 0 else {
                throw MailError(.storage, scope: .message, "the spool file ended early (\(at) of \(size) bytes)")
            }
            position.withLockedValue { $0 = at + Int64(chunk.readableBytes) }
            return chunk
        }
    }
}

// libFuzzer entry point for the archive volume reader (VolumeReader over
// libarchive: tar, with any compression filter). Built by `make fuzz-archive`
// (scripts/fuzz.sh archive) with TarVolume.swift compiled into the module.
//
// Every entry handed out must have a relative path that cannot escape the
// destination; reading an entry gives exactly its declared size or an error;
// nothing may crash, hang or use unbounded memory.
#if canImport(Glibc)
import Glibc
#endif

private let path = "/tmp/mailferry-fuzz-archive-\(getpid()).tar"

@_cdecl("LLVMFuzzerTestOneInput")
public func archiveFuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    precondition(fd >= 0, "cannot write \(path)")
    precondition(write(fd, data, size) == size, "short write")
    close(fd)
    guard let reader = try? VolumeReader(path: path, volumeName: "fuzz") else { return 0 }
    let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
    defer { buf.deallocate() }
    var entries = 0
    do {
        while let e = try reader.next() {
            entries += 1
            precondition(entries <= 100_000, "endless entries")
            precondition(!e.path.hasPrefix("/") && !e.path.split(separator: "/").contains("..") && !e.path.utf8.contains(0),
                         "escaping path handed out: \(e.path)")
            precondition(e.size >= 0 && (!e.isDirectory || e.size == 0), "bad entry \(e)")
            var total: Int64 = 0
            while true {
                let n = try reader.read(into: buf)
                if n == 0 { break }
                total += Int64(n)
                precondition(total <= e.size, "read past declared size")
            }
            precondition(total == e.size, "entry read \(total) of \(e.size)")
        }
    } catch {
        _ = "\(error)"
    }
    return 0
}

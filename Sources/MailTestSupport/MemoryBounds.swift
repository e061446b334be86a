import Foundation

/// Whether tests hold memory to their bounds. Under a sanitizer
/// (`make test-asan` / `make test-tsan` set `MAILFERRY_SANITIZER`) shadow
/// memory and allocation quarantine multiply RSS, so a bound measured there
/// says nothing about mailferry; the tests still move and compare every
/// byte, and say that the bound was not checked.
public enum MemoryBounds {
    /// The sanitizer in use, if any.
    public static var sanitizer: String? {
        let v = ProcessInfo.processInfo.environment["MAILFERRY_SANITIZER"] ?? ""
        return v.isEmpty ? nil : v
    }

    /// True when memory bounds are checked (no sanitizer).
    public static var checked: Bool {
        if let s = sanitizer {
            FileHandle.standardError.write(Data("memory bound not checked under the \(s) sanitizer\n".utf8))
            return false
        }
        return true
    }
}

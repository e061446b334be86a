import Foundation

/// Every secret this process has read (passwords, tokens, refresh tokens),
/// so that whatever is written out (logs, errors, reports, progress) can be
/// scrubbed of them as a last line of defence. Code paths are written not to
/// print secrets in the first place; this catches what slips through, such as
/// a server echoing a token or a protocol trace holding a SASL blob.
///
/// Besides the secret itself, it knows the secret's base64 forms at each of
/// the three byte alignments, so a password inside `AUTHENTICATE PLAIN`'s
/// base64 blob (`\0user\0password`) or an XOAUTH2 string is caught too.
public final class SecretRedactor: @unchecked Sendable {
    public static let shared = SecretRedactor()

    private let lock = NSLock()
    private var needles: [String] = []

    public init() {}

    /// Remembers a secret. A secret shorter than 4 characters is not
    /// searched for (it would blank out ordinary words and numbers); the
    /// structured redaction of logins and SASL exchanges still hides it.
    public func register(_ secret: String) {
        let s = secret.trimmingCharacters(in: .newlines)
        guard s.count >= 4 else { return }
        var forms = [s]
        let bytes = Array(s.utf8)
        if bytes.count >= 4 {
            for offset in 0..<3 {
                forms.append(contentsOf: SecretRedactor.base64Cores(of: bytes, offset: offset).filter { $0.count >= 8 })
            }
            // Percent-encoded form (form bodies, URLs).
            if let pe = s.addingPercentEncoding(withAllowedCharacters: CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")), pe != s { forms.append(pe) }
        }
        lock.lock()
        defer { lock.unlock() }
        for f in forms where !f.isEmpty && !needles.contains(f) { needles.append(f) }
        // Longest first so that a longer match is not half-replaced by a shorter one.
        needles.sort { $0.count > $1.count }
    }

    /// The text with every known secret replaced by `***`.
    public func redact(_ text: String) -> String {
        lock.lock()
        let list = needles
        lock.unlock()
        var out = text
        for n in list where out.contains(n) {
            out = out.replacingOccurrences(of: n, with: "***")
        }
        return out
    }

    public var isEmpty: Bool {
        lock.lock()
        defer { lock.unlock() }
        return needles.isEmpty
    }

    /// The part of base64(prefix + secret + suffix) that depends on the secret
    /// alone, for a prefix of `offset` bytes (mod 3). At least 4 characters.
    static func base64Cores(of bytes: [UInt8], offset: Int) -> [String] {
        // Skip the secret's first (3 - offset) % 3 bytes so that it starts on a
        // 3-byte boundary, then keep only whole groups.
        let skip = (3 - offset) % 3
        guard bytes.count > skip else { return [] }
        let rest = Array(bytes[skip...])
        let whole = rest.count / 3 * 3
        guard whole >= 3 else { return [] }
        let core = Data(rest[..<whole]).base64EncodedString()
        // Standard and URL-safe alphabets.
        let urlSafe = core.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        return core == urlSafe ? [core] : [core, urlSafe]
    }
}

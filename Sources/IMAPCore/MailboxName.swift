import NIOCore

/// A mailbox name as it travels on the wire: modified UTF-7 bytes, or UTF-8
/// once UTF8=ACCEPT is enabled (RFC 6855).
///
///     mailbox = "INBOX" / astring   ; INBOX is case-insensitive
public struct MailboxName: Hashable, Sendable, CustomStringConvertible {
    public var bytes: [UInt8]

    public init(bytes: [UInt8]) {
        // INBOX in any case means INBOX.
        if bytes.count == 5, String(decoding: bytes, as: UTF8.self).uppercased() == "INBOX" {
            self.bytes = Array("INBOX".utf8)
        } else {
            self.bytes = bytes
        }
    }

    public static let inbox = MailboxName(bytes: Array("INBOX".utf8))

    /// From a display name: modified UTF-7, or raw UTF-8 when `utf8` (UTF8=ACCEPT).
    public init(_ display: String, utf8: Bool = false) {
        self.init(bytes: Array((utf8 ? display : ModifiedUTF7.encode(display)).utf8))
    }

    /// The name for display: decoded modified UTF-7, or the UTF-8 bytes as they
    /// are when `utf8` is on or the bytes are not valid modified UTF-7.
    public func decoded(utf8: Bool = false) -> String {
        if !utf8, let s = ModifiedUTF7.decode(bytes) { return s }
        return String(decoding: bytes, as: UTF8.self)
    }

    public var description: String { decoded() }

    /// Splits on the hierarchy delimiter, then decodes each part.
    public func components(separator: Character?, utf8: Bool = false) -> [String] {
        let full = decoded(utf8: utf8)
        guard let separator else { return [full] }
        return full.split(separator: separator, omittingEmptySubsequences: false).map(String.init)
    }

    static func parse(_ c: inout Cursor) throws -> MailboxName {
        MailboxName(bytes: try c.astring())
    }

    func write(to out: inout CommandWriter) {
        out.writeAString(bytes)
    }
}

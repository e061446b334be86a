import MailModel

/// How a folder name component becomes one file or directory name on disk,
/// for both local stores. The rule is the same for Maildir and mbox:
///
/// - Each `FolderPath` component is one path element; the hierarchy is the
///   directory tree, so a `/` *inside* a component never makes a level.
/// - These bytes are written as `%XX` (upper-case hex of the UTF-8 byte):
///   `%` itself, `/`, NUL and every other control character (0x00–0x1F, 0x7F).
/// - A leading `.` is written `%2E`, so `.`, `..` and dot-files can never be
///   produced: no name can climb out of the root or hide.
/// - Names the store itself uses are disguised by escaping their first byte
///   (`cur` becomes `%63ur`): for Maildir `cur`, `new`, `tmp`, `maildirfolder`,
///   `subscriptions` and anything starting with `dovecot`; for mbox any name
///   ending in `.sbd`, `.lock` or `.msf` has the `.` of that suffix escaped;
///   for the mbox files inside archive volumes (`mboxVolume`) the Maildir names
///   are disguised too and a name ending in `.mbox` has that `.` escaped, so no
///   folder can collide with a volume's own file.
/// - Everything else (spaces, emoji, any Unicode) is kept as UTF-8 bytes, so
///   names read naturally in a shell and names that differ only in case stay
///   distinct on a case-sensitive file system.
///
/// `unescape(escape(x)) == x` for every component, and `escape` never yields
/// an empty name, `.`, `..`, or one containing `/` or NUL.
public enum FolderNameEscaping {
    public enum Flavor: Sendable { case maildir, mbox, mboxVolume }

    public static func escape(_ component: String, flavor: Flavor) -> String {
        let bytes = Array(component.utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count + 4)
        func hex(_ b: UInt8) {
            let digits = Array("0123456789ABCDEF".utf8)
            out.append(UInt8(ascii: "%"))
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        let reservedFirst = flavor != .mbox && isReservedMaildirName(component)
        let suffixDot: Int?
        switch flavor {
        case .maildir: suffixDot = nil
        case .mbox: suffixDot = reservedMboxSuffixDot(bytes)
        case .mboxVolume: suffixDot = bytes.count > 5 && component.hasSuffix(".mbox") ? bytes.count - 5 : nil
        }
        for (i, b) in bytes.enumerated() {
            if b < 0x20 || b == 0x7F || b == UInt8(ascii: "/") || b == UInt8(ascii: "%")
                || (i == 0 && b == UInt8(ascii: ".")) || (i == 0 && reservedFirst) || i == suffixDot {
                hex(b)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The component a disk name stands for; nil when the name is not one that
    /// `escape` could have produced (a foreign name: then it is used verbatim).
    public static func unescape(_ name: String, flavor: Flavor) -> String? {
        let b = Array(name.utf8)
        var out = [UInt8]()
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "%") {
                guard i + 2 < b.count, let v = hexValue(b[i + 1], b[i + 2]) else { return nil }
                out.append(v)
                i += 3
            } else {
                out.append(b[i])
                i += 1
            }
        }
        guard let s = String(validating: out, as: UTF8.self), !s.isEmpty,
              escape(s, flavor: flavor) == name else { return nil }
        return s
    }

    /// The component shown for a name found on disk: its unescaped form, or
    /// the name itself when it was not written by us.
    public static func component(forDiskName name: String, flavor: Flavor) -> String {
        unescape(name, flavor: flavor) ?? name
    }

    static func isReservedMaildirName(_ s: String) -> Bool {
        s == "cur" || s == "new" || s == "tmp" || s == "maildirfolder" || s == "subscriptions" || s.hasPrefix("dovecot")
    }

    static let mboxReservedSuffixes = [".sbd", ".lock", ".msf"]

    /// The index of the `.` to escape when a name ends in a suffix the mbox store uses.
    static func reservedMboxSuffixDot(_ bytes: [UInt8]) -> Int? {
        for suffix in mboxReservedSuffixes {
            let s = Array(suffix.utf8)
            if bytes.count > s.count, bytes.suffix(s.count).elementsEqual(s) { return bytes.count - s.count }
        }
        return nil
    }

    private static func hexValue(_ a: UInt8, _ b: UInt8) -> UInt8? {
        func n(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil  // lower-case hex is never written, so never read
            }
        }
        guard let h = n(a), let l = n(b) else { return nil }
        return h << 4 | l
    }
}

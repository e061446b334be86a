import Foundation
import MailModel
import MailStore

/// What the tar holds: a Maildir tree or mboxrd files.
public enum ArchiveFormat: String, Sendable, Codable, CaseIterable, Hashable {
    case maildir, mbox
}

/// How folders, flags and messages are named inside a volume.
///
/// Maildir layout: the tree `MaildirStore` writes (Dovecot `LAYOUT=fs`), so
/// extracting every volume in order into one directory gives a tree that
/// `maildir:DIR`, Dovecot, mutt and Python's `mailbox` read:
///
///     cur/1700000000.M42K0123456789ab.mailferry,S=1234:2,FS     INBOX
///     dovecot-keywords                                            INBOX's keyword letters
///     Archive/2024/cur/...                                        folder "Archive/2024"
///     INBOX/Lists/cur/...                                         folder "INBOX/Lists"
///
/// Keyword letters (`a`…`z`) are fixed archive-wide, so every volume's
/// `dovecot-keywords` agrees with the older ones and holds all letters known
/// when it was written (a later volume's file overwrites an earlier one).
///
/// mbox layout: one mboxrd file per folder and volume, so extracting every
/// volume in order never overwrites a file:
///
///     INBOX/v000003.mbox
///     Archive/2024/v000003.mbox
enum VolumeLayout {
    /// A folder component as a file name: the local stores' rule
    /// (`FolderNameEscaping`), so an extracted volume is a tree MaildirStore
    /// reads under the same names; mbox volumes use its `mboxVolume` flavour.
    static func escapeComponent(_ c: String, mbox: Bool = false) -> String {
        FolderNameEscaping.escape(c, flavor: mbox ? .mboxVolume : .maildir)
    }

    /// The directory elements of a folder: none for INBOX (the root), and a
    /// literal `INBOX` first for INBOX's children.
    static func maildirComponents(_ folder: FolderPath) -> [String] {
        if folder.isInbox { return [] }
        return folder.components.enumerated().map { i, c in
            i == 0 && c == "INBOX" ? "INBOX" : escapeComponent(c)
        }
    }

    static func folderDirectory(_ folder: FolderPath, format: ArchiveFormat = .maildir) -> String {
        switch format {
        case .maildir: return maildirComponents(folder).joined(separator: "/")
        case .mbox:
            return folder.components.enumerated().map { i, c in
                i == 0 && c == "INBOX" ? "INBOX" : escapeComponent(c, mbox: true)
            }.joined(separator: "/")
        }
    }

    /// `dir/name`, or `name` at the root.
    static func join(_ dir: String, _ name: String) -> String { dir.isEmpty ? name : dir + "/" + name }

    /// Maildir info letters for the system flags, sorted as Maildir requires.
    static func maildirInfo(_ flags: Flags, keywordLetters: [String: Character]) -> String {
        var letters: [Character] = []
        if flags.contains(.draft) { letters.append("D") }
        if flags.contains(.flagged) { letters.append("F") }
        if flags.contains(.answered) { letters.append("R") }
        if flags.contains(.seen) { letters.append("S") }
        if flags.contains(.deleted) { letters.append("T") }
        let folded = Dictionary(keywordLetters.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { a, _ in a })
        for k in flags.keywords {
            if let l = folded[k.name.lowercased()] { letters.append(l) }
        }
        return "2," + String(letters.sorted())
    }

    static func maildirEntry(folder: FolderPath, messageRow: Int64, key: MessageKey, size: Int64,
                             date: Int64, flags: Flags, keywordLetters: [String: Character]) -> String {
        let base = "\(max(date, 0)).M\(messageRow)K\(key.short).mailferry,S=\(size)"
        return join(folderDirectory(folder), "cur/\(base):\(maildirInfo(flags, keywordLetters: keywordLetters))")
    }

    static func mboxEntry(folder: FolderPath, volumeStem: String) -> String {
        "\(folderDirectory(folder, format: .mbox))/\(volumeStem).mbox"
    }

    /// `From MAILER-DAEMON Thu Nov 21 10:00:00 2026` (asctime, UTC), with LF.
    static func mboxFromLine(_ date: Int64) -> [UInt8] {
        let d = InternalDate(secondsSinceEpoch: date, zoneMinutes: 0)
        let c = d.civil
        // 1970-01-01 was a Thursday.
        var days = date / 86_400
        if date < 0 && date % 86_400 != 0 { days -= 1 }
        let wd = Int(((days % 7) + 7 + 4) % 7)
        let wdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        let s = String(format: "From MAILER-DAEMON %@ %@ %2d %02d:%02d:%02d %04d\n",
                       wdays[wd], months[c.month - 1], c.day, c.hour, c.minute, c.second, c.year)
        return Array(s.utf8)
    }

    /// `Status:`/`X-Status:`/`X-Keywords:` lines that mutt, Dovecot and
    /// Python's `mailbox` read flags from. Written before the message in mbox
    /// volumes; the catalog's offset points past them, so a restore is byte-exact.
    static func mboxStatusHeaders(_ flags: Flags) -> [UInt8] {
        var s = "Status: " + (flags.contains(.seen) ? "RO" : "O") + "\n"
        var x = ""
        if flags.contains(.answered) { x += "A" }
        if flags.contains(.flagged) { x += "F" }
        if flags.contains(.draft) { x += "T" }
        if flags.contains(.deleted) { x += "D" }
        if !x.isEmpty { s += "X-Status: \(x)\n" }
        let kw = flags.keywords.filter(\.isValidKeyword).map(\.name)
        if !kw.isEmpty { s += "X-Keywords: \(kw.joined(separator: " "))\n" }
        return Array(s.utf8)
    }
}

extension VolumeLayout {
    /// `X-IMAPbase: UIDVALIDITY 0000000000 KEYWORD...` for the first message of an mbox
    /// file whose messages carry keywords (empty otherwise). Dovecot reads a message's
    /// `X-Keywords` only for keywords this header names; the last-UID field is 0, so a
    /// reader numbers the messages from 1. Like the status lines, it is not part of the
    /// message: the catalog's offset points past it.
    static func mboxIMAPBaseHeader(uidValidity: Int64, keywords: [String]) -> [UInt8] {
        guard !keywords.isEmpty else { return [] }
        return Array("X-IMAPbase: \(max(uidValidity, 1)) 0000000000 \(keywords.joined(separator: " "))\n".utf8)
    }
}

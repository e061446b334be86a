import IMAPCore
import MailModel

/// Maps mailferry's `FolderPath`s to a server's mailbox names and back:
/// the personal namespace prefix (`INBOX.` on Courier and Cyrus), the
/// hierarchy separator, and modified UTF-7 or UTF-8 (UTF8=ACCEPT).
struct IMAPFolderMap: Sendable, Hashable {
    var prefix: String
    var separator: Character?
    var utf8: Bool

    /// The server name of a path; nil when a component holds the separator (cannot be represented).
    func mailbox(for path: FolderPath) -> MailboxName? {
        if path.isInbox { return .inbox }
        if let separator, path.components.contains(where: { $0.contains(separator) }) { return nil }
        if separator == nil, path.components.count > 1 { return nil }
        let name = prefix + path.components.joined(separator: separator.map(String.init) ?? "")
        return MailboxName(name, utf8: utf8)
    }

    /// The path of a server name; nil for names outside the personal namespace.
    func path(for mailbox: MailboxName, separator listSeparator: Character?) -> FolderPath? {
        var name = mailbox.decoded(utf8: utf8)
        if name.uppercased() == "INBOX" { return .inbox }
        let sep = listSeparator ?? separator
        if !prefix.isEmpty {
            if name.hasPrefix(prefix) {
                name = String(name.dropFirst(prefix.count))
            } else if let sep, prefix.hasSuffix(String(sep)), name == String(prefix.dropLast()) {
                // The namespace root itself (e.g. "INBOX" for prefix "INBOX.") is INBOX.
                return .inbox
            } else {
                return nil
            }
        }
        guard let sep else { return FolderPath(components: [name]) }
        return FolderPath(components: name.split(separator: sep, omittingEmptySubsequences: false).map(String.init))
    }

    /// A role from SPECIAL-USE attributes, or from well-known names when the server has no SPECIAL-USE.
    static func role(attributes: [String], path: FolderPath, serverHasSpecialUse: Bool) -> FolderRole? {
        for a in attributes { if let r = FolderRole(attribute: a) { return r } }
        if serverHasSpecialUse || path.components.count != 1 { return nil }
        switch path.name.lowercased() {
        case "sent", "sent items", "sent mail", "sent messages", "gesendet", "gesendete elemente", "envoyés", "elementos enviados": return .sent
        case "drafts", "draft", "entwürfe", "brouillons", "borradores": return .drafts
        case "trash", "deleted items", "deleted messages", "papierkorb", "gelöschte elemente", "corbeille", "papelera": return .trash
        case "junk", "spam", "junk email", "junk e-mail", "bulk mail": return .junk
        case "archive", "archives", "archiv": return .archive
        default: return nil
        }
    }
}

/// A folder's name as a list of UTF-8 components, top level first:
/// `["Archive", "2024", "Février"]`. Hierarchy separators, modified UTF-7 and
/// on-disk escaping belong to the stores; here a name is just text.
///
/// INBOX is matched case-insensitively as IMAP requires (RFC 3501 §5.1) and
/// always spelled `INBOX`.
public struct FolderPath: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    public let components: [String]

    /// Components may hold any character, `/` included; an empty list is invalid.
    public init?(components: [String]) {
        guard !components.isEmpty, !components.contains(where: \.isEmpty) else { return nil }
        var c = components
        if c[0].lowercased() == "inbox" { c[0] = "INBOX" }
        self.components = c
    }

    /// Splits a display name on `separator` (`/` by default).
    public init?(_ name: String, separator: Character = "/") {
        self.init(components: name.split(separator: separator, omittingEmptySubsequences: false).map(String.init))
    }

    public static let inbox = FolderPath(uncheckedComponents: ["INBOX"])

    fileprivate init(uncheckedComponents: [String]) { self.components = uncheckedComponents }

    public var isInbox: Bool { components == ["INBOX"] }
    public var name: String { components[components.count - 1] }
    public var parent: FolderPath? {
        components.count > 1 ? FolderPath(uncheckedComponents: Array(components.dropLast())) : nil
    }
    public func appending(_ component: String) -> FolderPath? {
        FolderPath(components: components + [component])
    }
    /// Every ancestor, outermost first, excluding self.
    public var ancestors: [FolderPath] {
        (1..<components.count).map { FolderPath(uncheckedComponents: Array(components.prefix($0))) }
    }

    /// The components joined with `/`, for display, globbing and reports.
    public var description: String { components.joined(separator: "/") }
    public func joined(separator: String) -> String { components.joined(separator: separator) }

    public static func < (l: FolderPath, r: FolderPath) -> Bool {
        // INBOX first, then component-wise.
        if l.isInbox != r.isInbox { return l.isInbox }
        return l.components.lexicographicallyPrecedes(r.components)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let comps = try? c.decode([String].self), let p = FolderPath(components: comps) {
            self = p
            return
        }
        let s = try c.decode(String.self)
        guard let p = FolderPath(s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "empty folder name")
        }
        self = p
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(components)
    }

    /// Shell-style match against the `/`-joined name: `*` matches within one
    /// level, `**` across levels, `?` one character; case-sensitive except INBOX.
    public func matches(glob: String) -> Bool {
        Glob.match(pattern: Array(glob), name: Array(description))
    }
}

/// SPECIAL-USE roles (RFC 6154) that a migration maps across servers.
public enum FolderRole: String, Sendable, Codable, Hashable, CaseIterable {
    case all = "\\All", archive = "\\Archive", drafts = "\\Drafts", flagged = "\\Flagged"
    case junk = "\\Junk", sent = "\\Sent", trash = "\\Trash"

    public init?(attribute: String) {
        guard let r = FolderRole.allCases.first(where: { $0.rawValue.lowercased() == attribute.lowercased() }) else { return nil }
        self = r
    }
}

enum Glob {
    /// `*` matches within one level, `**` across levels (and `**/` also
    /// matches no level at all, as in shells with globstar), `?` one
    /// character other than `/`. A pattern's leading `INBOX` matches in any case.
    static func match(pattern: [Character], name n: [Character]) -> Bool {
        var p = pattern
        if p.count >= 5, String(p[0..<5]).uppercased() == "INBOX", p.count == 5 || p[5] == "/" {
            p.replaceSubrange(0..<5, with: Array("INBOX"))
        }
        var memo = [Int: Bool]()
        func go(_ i: Int, _ j: Int) -> Bool {
            let k = i * (n.count + 1) + j
            if let v = memo[k] { return v }
            let r: Bool
            if i == p.count {
                r = j == n.count
            } else if p[i] == "*" {
                let deep = i + 1 < p.count && p[i + 1] == "*"
                let next = deep ? i + 2 : i + 1
                // "**/" may stand for no level at all.
                if deep, next < p.count, p[next] == "/", go(next + 1, j) {
                    r = true
                } else {
                    var jj = j
                    var ok = go(next, jj)
                    while !ok, jj < n.count, deep || n[jj] != "/" {
                        jj += 1
                        ok = go(next, jj)
                    }
                    r = ok
                }
            } else if j < n.count, p[i] == "?" ? n[j] != "/" : p[i] == n[j] {
                r = go(i + 1, j + 1)
            } else {
                r = false
            }
            memo[k] = r
            return r
        }
        return go(0, 0)
    }
}

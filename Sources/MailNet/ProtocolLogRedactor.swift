/// Redacts secrets from `--verbose` protocol logs, for both IMAP and POP3.
///
/// Feed every client line (as sent, without CRLF) through `clientLine(_:)` and every
/// server line through `serverLine(_:)`, in order. What is hidden:
/// - IMAP `LOGIN` arguments (quoted, atoms or literals) and the literal bodies that follow;
/// - IMAP `AUTHENTICATE mech <initial response>` and every client continuation line until
///   the tagged reply;
/// - POP3 `PASS`, the digest of `APOP`, `AUTH mech <ir>` and every line of the AUTH exchange;
/// - server challenges in an AUTHENTICATE/AUTH exchange (they can echo user data).
public struct ProtocolLogRedactor: Sendable {
    public enum Kind: Sendable { case imap, pop3 }

    public static let placeholder = "<redacted>"
    public let `protocol`: Kind
    private var inAuthExchange = false
    private var pendingLiteral = false

    public init(_ protocol: Kind) {
        self.protocol = `protocol`
    }

    public mutating func clientLine(_ line: String) -> String {
        if pendingLiteral {
            // This line starts with the literal body of a secret argument.
            pendingLiteral = Self.endsWithLiteral(line)
            return Self.placeholder
        }
        if inAuthExchange {
            return Self.placeholder
        }
        switch `protocol` {
        case .imap: return imapClientLine(line)
        case .pop3: return pop3ClientLine(line)
        }
    }

    public mutating func serverLine(_ line: String) -> String {
        guard inAuthExchange else { return line }
        switch `protocol` {
        case .imap:
            if line.hasPrefix("+") { return "+ \(Self.placeholder)" }
            if line.hasPrefix("*") { return line }
            inAuthExchange = false
            return line
        case .pop3:
            if line.hasPrefix("+ ") || line == "+" { return "+ \(Self.placeholder)" }
            inAuthExchange = false
            return line
        }
    }

    private mutating func imapClientLine(_ line: String) -> String {
        let words = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard words.count >= 2 else { return line }
        let command = words[1].uppercased()
        let tag = words[0]
        switch command {
        case "LOGIN":
            pendingLiteral = Self.endsWithLiteral(line)
            return "\(tag) \(words[1]) \(Self.placeholder)"
        case "AUTHENTICATE":
            inAuthExchange = true
            guard words.count == 3 else { return line }
            let rest = words[2].split(separator: " ", maxSplits: 1)
            guard let mechanism = rest.first else { return line }
            return rest.count > 1 ? "\(tag) \(words[1]) \(mechanism) \(Self.placeholder)" : line
        default:
            return line
        }
    }

    private mutating func pop3ClientLine(_ line: String) -> String {
        let words = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard let first = words.first else { return line }
        switch first.uppercased() {
        case "PASS":
            return "\(first) \(Self.placeholder)"
        case "APOP":
            return words.count >= 2 ? "\(first) \(words[1]) \(Self.placeholder)" : line
        case "AUTH":
            guard words.count >= 2 else { return line }  // bare AUTH lists mechanisms
            inAuthExchange = true
            return words.count > 2 ? "\(first) \(words[1]) \(Self.placeholder)" : line
        default:
            return line
        }
    }

    /// `{n}` / `{n+}` / `~{n}` at the end of a line: a literal follows.
    static func endsWithLiteral(_ line: String) -> Bool {
        guard line.hasSuffix("}"), let open = line.lastIndex(of: "{") else { return false }
        let inner = line[line.index(after: open)..<line.index(before: line.endIndex)]
        let digits = inner.hasSuffix("+") || inner.hasSuffix("-") ? inner.dropLast() : inner
        return !digits.isEmpty && digits.allSatisfy(\.isASCII) && digits.allSatisfy(\.isNumber)
    }
}

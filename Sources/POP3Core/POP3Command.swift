import NIOCore

/// A client command (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH).
///
///     command  = keyword *(SP param) CRLF     ; at most 255 octets (RFC 2449 §4)
///     keyword  = 3*4VCHAR
///     param    = 1*VCHAR                      ; at most 40 octets
///     auth     = "AUTH" SP sasl-mech [SP (initial-response / "=")]
///     sasl-line = *base64 / "*"               ; a reply to "+ " or a cancel
///
/// `PASS` is the exception RFC 1939 allows: its argument may contain spaces.
/// Arguments never contain CR or LF; the encoder refuses them, so a password
/// cannot inject a second command.
public enum POP3Command: Hashable, Sendable, CustomStringConvertible {
    case user(String)
    case pass(String)
    /// `APOP name digest`, the digest being 32 lower-case hex digits.
    case apop(String, digest: String)
    /// `AUTH mechanism [initial-response]`; an empty initial response is sent as `=`.
    case auth(String, initialResponse: String?)
    /// The client's reply to a `+ ` challenge: a base64 line.
    case saslResponse(String)
    /// `*`: cancels the exchange.
    case saslCancel
    case capa
    case stls
    case stat
    case list(Int?)
    case uidl(Int?)
    case top(Int, lines: Int)
    case retr(Int)
    case dele(Int)
    case rset
    case noop
    case quit

    /// The reply shape this command expects.
    public var responseKind: POP3ResponseKind {
        switch self {
        case .capa, .list(nil), .uidl(nil): return .multiLineLines
        case .top, .retr: return .multiLineStream
        case .auth, .saslResponse: return .sasl
        default: return .singleLine
        }
    }

    /// What is safe to log: never a password, digest or SASL payload.
    public var description: String {
        switch self {
        case .user(let u): return "USER \(u)"
        case .pass: return "PASS <redacted>"
        case .apop(let u, _): return "APOP \(u) <redacted>"
        case .auth(let m, let ir): return "AUTH \(m)" + (ir == nil ? "" : " <redacted>")
        case .saslResponse: return "<SASL response redacted>"
        case .saslCancel: return "*"
        case .capa: return "CAPA"
        case .stls: return "STLS"
        case .stat: return "STAT"
        case .list(let n): return n.map { "LIST \($0)" } ?? "LIST"
        case .uidl(let n): return n.map { "UIDL \($0)" } ?? "UIDL"
        case .top(let n, let l): return "TOP \(n) \(l)"
        case .retr(let n): return "RETR \(n)"
        case .dele(let n): return "DELE \(n)"
        case .rset: return "RSET"
        case .noop: return "NOOP"
        case .quit: return "QUIT"
        }
    }

    /// The line as sent, without CRLF.
    func line() throws -> String {
        func arg(_ s: String, _ what: String, spaces: Bool = false) throws -> String {
            guard !s.utf8.contains(where: { $0 == POP3Bytes.cr || $0 == POP3Bytes.lf || $0 == 0 }) else {
                throw POP3ParseError("\(what) must not contain CR, LF or NUL")
            }
            guard !s.isEmpty, spaces || !s.utf8.contains(POP3Bytes.sp) else {
                throw POP3ParseError("\(what) must be one non-empty word")
            }
            return s
        }
        func num(_ n: Int) throws -> String {
            guard n > 0 else { throw POP3ParseError("message numbers start at 1, got \(n)") }
            return String(n)
        }
        switch self {
        case .user(let u): return "USER " + (try arg(u, "user name", spaces: true))
        case .pass(let p): return "PASS " + (try arg(p, "password", spaces: true))
        case .apop(let u, let d): return "APOP \(try arg(u, "user name")) \(try arg(d, "APOP digest"))"
        case .auth(let m, let ir):
            let mech = try arg(m, "SASL mechanism")
            guard let ir else { return "AUTH \(mech)" }
            return "AUTH \(mech) \(ir.isEmpty ? "=" : try arg(ir, "SASL initial response"))"
        case .saslResponse(let r): return r.isEmpty ? "" : try arg(r, "SASL response")
        case .saslCancel: return "*"
        case .capa: return "CAPA"
        case .stls: return "STLS"
        case .stat: return "STAT"
        case .list(let n): return try n.map { "LIST \(try num($0))" } ?? "LIST"
        case .uidl(let n): return try n.map { "UIDL \(try num($0))" } ?? "UIDL"
        case .top(let n, let l):
            guard l >= 0 else { throw POP3ParseError("TOP line count must not be negative") }
            return "TOP \(try num(n)) \(l)"
        case .retr(let n): return "RETR \(try num(n))"
        case .dele(let n): return "DELE \(try num(n))"
        case .rset: return "RSET"
        case .noop: return "NOOP"
        case .quit: return "QUIT"
        }
    }

    /// Writes the command and its CRLF.
    public func write(to buffer: inout ByteBuffer) throws {
        let l = try line()
        buffer.writeString(l)
        buffer.writeString("\r\n")
    }

    public func encoded() throws -> ByteBuffer {
        var b = ByteBuffer()
        try write(to: &b)
        return b
    }

    /// Parses a command line (without line ending) as a server would; used by
    /// the scripted test servers and by round-trip tests. `expectingSASL`
    /// reads the line as a SASL reply.
    public static func parse(line raw: ArraySlice<UInt8>, expectingSASL: Bool = false) throws -> POP3Command {
        let line = POP3Bytes.dropCR(raw)
        let text = String(decoding: line, as: UTF8.self)
        if expectingSASL { return text == "*" ? .saslCancel : .saslResponse(text) }
        let kwEnd = line.firstIndex(of: POP3Bytes.sp) ?? line.endIndex
        let keyword = String(decoding: line[..<kwEnd], as: UTF8.self).uppercased()
        let restBytes = kwEnd < line.endIndex ? line[(kwEnd + 1)...] : []
        let rest = String(decoding: restBytes, as: UTF8.self)
        let words = rest.split(separator: " ").map(String.init)
        func number(_ i: Int) throws -> Int {
            guard i < words.count, let n = POP3Bytes.decimal(Array(words[i].utf8), max: UInt64(Int32.max)), n > 0 else {
                throw POP3ParseError("\(keyword) needs a message number")
            }
            return Int(n)
        }
        switch keyword {
        case "USER": return .user(rest)
        case "PASS": return .pass(rest)
        case "APOP":
            guard words.count == 2 else { throw POP3ParseError("APOP needs a name and a digest") }
            return .apop(words[0], digest: words[1])
        case "AUTH":
            guard let m = words.first else { throw POP3ParseError("AUTH needs a mechanism") }
            if words.count > 1 { return .auth(m, initialResponse: words[1] == "=" ? "" : words[1]) }
            return .auth(m, initialResponse: nil)
        case "CAPA": return .capa
        case "STLS": return .stls
        case "STAT": return .stat
        case "LIST": return words.isEmpty ? .list(nil) : .list(try number(0))
        case "UIDL": return words.isEmpty ? .uidl(nil) : .uidl(try number(0))
        case "TOP":
            guard words.count == 2, let l = Int(words[1]), l >= 0 else { throw POP3ParseError("TOP needs a number and a line count") }
            return .top(try number(0), lines: l)
        case "RETR": return .retr(try number(0))
        case "DELE": return .dele(try number(0))
        case "RSET": return .rset
        case "NOOP": return .noop
        case "QUIT": return .quit
        default: throw POP3ParseError("unknown command \(POP3StatusLine.preview(Array(keyword.utf8)))")
        }
    }
}

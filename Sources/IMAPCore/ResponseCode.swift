import MailModel
import NIOCore

/// The bracketed code in a status response.
///
///     resp-text-code  = "ALERT" / "BADCHARSET" [SP "(" charset *(SP charset) ")"] / capability-data /
///                       "PARSE" / "PERMANENTFLAGS" SP "(" [flag-perm *(SP flag-perm)] ")" /
///                       "READ-ONLY" / "READ-WRITE" / "TRYCREATE" / "UIDNEXT" SP nz-number /
///                       "UIDVALIDITY" SP nz-number / "UNSEEN" SP nz-number /
///                       atom [SP 1*<any TEXT-CHAR except "]">]
///     resp-code-apnd  = "APPENDUID" SP nz-number SP append-uid          ; RFC 4315
///     resp-code-copy  = "COPYUID" SP nz-number SP uid-set SP uid-set    ; RFC 4315
///     "HIGHESTMODSEQ" SP mod-sequence-value / "NOMODSEQ" / "MODIFIED" SP sequence-set  ; RFC 7162
///     "CLOSED"                                                          ; RFC 7162
///     RFC 5530: "UNAVAILABLE" / "AUTHENTICATIONFAILED" / "AUTHORIZATIONFAILED" / "EXPIRED" /
///               "PRIVACYREQUIRED" / "CONTACTADMIN" / "NOPERM" / "INUSE" / "EXPUNGEISSUED" /
///               "CORRUPTION" / "SERVERBUG" / "CLIENTBUG" / "CANNOT" / "LIMIT" / "OVERQUOTA" /
///               "ALREADYEXISTS" / "NONEXISTENT"
public enum ResponseCode: Hashable, Sendable {
    case alert
    case badCharset([String])
    case capability([Capability])
    case parse
    case permanentFlags([Flag])
    case readOnly, readWrite, tryCreate
    case uidNext(UInt32)
    case uidValidity(UInt32)
    case unseen(UInt32)
    case highestModSeq(UInt64)
    case noModSeq
    case modified(SequenceSet)
    case closed
    case appendUID(uidValidity: UInt32, uids: SequenceSet)
    case copyUID(uidValidity: UInt32, source: SequenceSet, destination: SequenceSet)
    case uidNotSticky
    case unavailable, authenticationFailed, authorizationFailed, expired, privacyRequired, contactAdmin
    case noPermission, inUse, expungeIssued, corruption, serverBug, clientBug, cannot, limit, overQuota
    case alreadyExists, nonExistent
    /// Not in an RFC, but sent by some servers (and proxies) when rate limiting.
    case throttled
    case other(name: String, text: String?)

    /// Codes that mean "slow down and try later".
    public var isThrottling: Bool { self == .throttled || self == .limit || self == .unavailable }

    private static let simple: [String: ResponseCode] = [
        "ALERT": .alert, "PARSE": .parse, "READ-ONLY": .readOnly, "READ-WRITE": .readWrite,
        "TRYCREATE": .tryCreate, "NOMODSEQ": .noModSeq, "CLOSED": .closed, "UIDNOTSTICKY": .uidNotSticky,
        "UNAVAILABLE": .unavailable, "AUTHENTICATIONFAILED": .authenticationFailed,
        "AUTHORIZATIONFAILED": .authorizationFailed, "EXPIRED": .expired, "PRIVACYREQUIRED": .privacyRequired,
        "CONTACTADMIN": .contactAdmin, "NOPERM": .noPermission, "INUSE": .inUse, "EXPUNGEISSUED": .expungeIssued,
        "CORRUPTION": .corruption, "SERVERBUG": .serverBug, "CLIENTBUG": .clientBug, "CANNOT": .cannot,
        "LIMIT": .limit, "OVERQUOTA": .overQuota, "ALREADYEXISTS": .alreadyExists, "NONEXISTENT": .nonExistent,
        "THROTTLED": .throttled,
    ]

    static func parse(_ c: inout Cursor) throws -> ResponseCode {
        let name = try c.take(while: { Cursor.isAtomChar($0) }, what: "response code").map(Cursor.upper)
        let n = String(decoding: name, as: UTF8.self)
        let hasArgs = try c.peek() == UInt8(ascii: " ")
        if hasArgs { c.index += 1 }
        func noArgs(_ code: ResponseCode) throws -> ResponseCode {
            if hasArgs { _ = try freeText(&c) }
            return code
        }
        switch n {
        case "CAPABILITY": return .capability(try Capability.parseList(&c))
        case "PERMANENTFLAGS": return .permanentFlags(try FlagList.parse(&c))
        case "UIDNEXT": return .uidNext(try c.number())
        case "UIDVALIDITY": return .uidValidity(try c.number())
        case "UNSEEN": return .unseen(try c.number())
        case "HIGHESTMODSEQ": return .highestModSeq(try c.number64())
        case "MODIFIED": return .modified(try SequenceSet.parse(&c))
        case "APPENDUID":
            let v = try c.number()
            try c.expectSpace()
            return .appendUID(uidValidity: v, uids: try SequenceSet.parse(&c))
        case "COPYUID":
            let v = try c.number()
            try c.expectSpace()
            let s = try SequenceSet.parse(&c)
            try c.expectSpace()
            return .copyUID(uidValidity: v, source: s, destination: try SequenceSet.parse(&c))
        case "BADCHARSET":
            guard hasArgs else { return .badCharset([]) }
            return .badCharset(try c.parenthesized { c in String(decoding: try c.astring(), as: UTF8.self) })
        default:
            if let s = simple[n] { return try noArgs(s) }
            return .other(name: n, text: hasArgs ? try freeText(&c) : nil)
        }
    }

    /// 1*<any TEXT-CHAR except "]">
    static func freeText(_ c: inout Cursor) throws -> String {
        var out: [UInt8] = []
        while true {
            let b = try c.peek()
            if b == UInt8(ascii: "]") || b == 0x0D || b == 0x0A { break }
            out.append(b)
            c.index += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    func write(to out: inout ByteBuffer) {
        switch self {
        case .alert: out.writeString("ALERT")
        case .badCharset(let cs): out.writeString(cs.isEmpty ? "BADCHARSET" : "BADCHARSET (" + cs.joined(separator: " ") + ")")
        case .capability(let caps): out.writeString("CAPABILITY"); Capability.writeList(caps, to: &out)
        case .parse: out.writeString("PARSE")
        case .permanentFlags(let f): out.writeString("PERMANENTFLAGS "); FlagList.write(f, to: &out)
        case .readOnly: out.writeString("READ-ONLY")
        case .readWrite: out.writeString("READ-WRITE")
        case .tryCreate: out.writeString("TRYCREATE")
        case .uidNext(let n): out.writeString("UIDNEXT \(n)")
        case .uidValidity(let n): out.writeString("UIDVALIDITY \(n)")
        case .unseen(let n): out.writeString("UNSEEN \(n)")
        case .highestModSeq(let n): out.writeString("HIGHESTMODSEQ \(n)")
        case .noModSeq: out.writeString("NOMODSEQ")
        case .modified(let s): out.writeString("MODIFIED \(s)")
        case .closed: out.writeString("CLOSED")
        case .appendUID(let v, let u): out.writeString("APPENDUID \(v) \(u)")
        case .copyUID(let v, let s, let d): out.writeString("COPYUID \(v) \(s) \(d)")
        case .other(let n, let t): out.writeString(t.map { "\(n) \($0)" } ?? n)
        default:
            let name = Self.simple.first(where: { $0.value == self })?.key ?? "UNKNOWN"
            out.writeString(name)
        }
    }
}

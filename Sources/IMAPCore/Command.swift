import MailModel
import NIOCore

/// A message data item to fetch.
///
///     fetch-att       = "ENVELOPE" / "FLAGS" / "INTERNALDATE" / "RFC822.SIZE" / "BODYSTRUCTURE" / "UID" /
///                       "BODY" [".PEEK"] section ["<" number "." nz-number ">"] /
///                       "BINARY" [".PEEK"] section-binary [partial] / "BINARY.SIZE" section-binary / "MODSEQ"
public enum FetchItem: Hashable, Sendable {
    case uid, flags, internalDate, rfc822Size, modSeq, envelope, bodyStructure
    case body(SectionSpecifier, peek: Bool, partial: ClosedRange<UInt32>? = nil)
    case binary(section: [UInt32], peek: Bool, partial: ClosedRange<UInt32>? = nil)
    case binarySize(section: [UInt32])
    case gmailMessageID, gmailThreadID, gmailLabels

    var text: String {
        func partial(_ p: ClosedRange<UInt32>?) -> String { p.map { "<\($0.lowerBound).\($0.count)>" } ?? "" }
        switch self {
        case .uid: return "UID"
        case .flags: return "FLAGS"
        case .internalDate: return "INTERNALDATE"
        case .rfc822Size: return "RFC822.SIZE"
        case .modSeq: return "MODSEQ"
        case .envelope: return "ENVELOPE"
        case .bodyStructure: return "BODYSTRUCTURE"
        case .body(let s, let peek, let p): return (peek ? "BODY.PEEK" : "BODY") + s.description + partial(p)
        case .binary(let s, let peek, let p):
            return (peek ? "BINARY.PEEK[" : "BINARY[") + s.map(String.init).joined(separator: ".") + "]" + partial(p)
        case .binarySize(let s): return "BINARY.SIZE[" + s.map(String.init).joined(separator: ".") + "]"
        case .gmailMessageID: return "X-GM-MSGID"
        case .gmailThreadID: return "X-GM-THRID"
        case .gmailLabels: return "X-GM-LABELS"
        }
    }
}

/// Search criteria the client uses.
///
///     search-key = "ALL" / "UID" SP sequence-set / "MODSEQ" SP mod-sequence-valzer / "HEADER" SP header-fld-name SP astring /
///                  "DELETED" / "UNDELETED" / "SINCE" SP date / "NOT" SP search-key / "(" search-key *(SP search-key) ")"
public indirect enum SearchKey: Hashable, Sendable {
    case all, deleted, undeleted, seen, unseen
    case uid(SequenceSet)
    case modSeq(UInt64)
    case header(String, String)
    case not(SearchKey)
    case and([SearchKey])

    func write(to w: inout CommandWriter) {
        switch self {
        case .all: w.writeString("ALL")
        case .deleted: w.writeString("DELETED")
        case .undeleted: w.writeString("UNDELETED")
        case .seen: w.writeString("SEEN")
        case .unseen: w.writeString("UNSEEN")
        case .uid(let s): w.writeString("UID \(s)")
        case .modSeq(let m): w.writeString("MODSEQ \(m)")
        case .header(let n, let v):
            w.writeString("HEADER ")
            w.writeAString(Array(n.utf8))
            w.writeString(" ")
            w.writeIMAPString(Array(v.utf8))
        case .not(let k): w.writeString("NOT "); k.write(to: &w)
        case .and(let keys):
            w.writeString("(")
            for (i, k) in keys.enumerated() {
                if i > 0 { w.writeString(" ") }
                k.write(to: &w)
            }
            w.writeString(")")
        }
    }
}

/// How UID STORE changes flags.
public enum StoreMode: String, Hashable, Sendable { case replace = "", add = "+", remove = "-" }

/// QRESYNC parameters for SELECT (RFC 7162 §3.2.5).
public struct QResyncParameters: Hashable, Sendable {
    public var uidValidity: UInt32
    public var modSeq: UInt64
    public var knownUIDs: SequenceSet?
    public init(uidValidity: UInt32, modSeq: UInt64, knownUIDs: SequenceSet? = nil) {
        self.uidValidity = uidValidity
        self.modSeq = modSeq
        self.knownUIDs = knownUIDs
    }
}

/// The commands mailferry sends (APPEND is written by `AppendWriter`, as its
/// message bytes stream).
///
///     command-any     = "CAPABILITY" / "LOGOUT" / "NOOP"
///     command-nonauth = login / authenticate / "STARTTLS"
///     login           = "LOGIN" SP userid SP password
///     authenticate    = "AUTHENTICATE" SP auth-type [SP (base64 / "=")]     ; RFC 4959 SASL-IR
///     command-auth    = create / examine / list / select / status / enable / namespace / id / idle
///     select          = "SELECT" SP mailbox [SP "(" select-param *(SP select-param) ")"]
///     list            = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]
///     create          = "CREATE" SP mailbox [SP "(" "USE" SP "(" use-attr *(SP use-attr) ")" ")"]
///     uid             = "UID" SP (copy / move / fetch / search / store / uid-expunge)
///     fetch           = "FETCH" SP sequence-set SP ("ALL" / "FULL" / "FAST" / fetch-att /
///                       "(" fetch-att *(SP fetch-att) ")") [SP "(" "CHANGEDSINCE" SP mod-sequence-value [SP "VANISHED"] ")"]
///     store           = "STORE" SP sequence-set [SP "(" "UNCHANGEDSINCE" SP mod-sequence-valzer ")"] SP store-att-flags
///     store-att-flags = (["+" / "-"] "FLAGS" [".SILENT"]) SP (flag-list / (flag *(SP flag)))
///     idle            = "IDLE" CRLF "DONE"
public enum Command: Hashable, Sendable {
    case capability, noop, logout, startTLS, namespace, idle, expunge, close, unselect, check
    case login(username: String, password: String)
    case authenticate(mechanism: String, initialResponse: [UInt8]?)
    case id(IDParameters)
    case enable([Capability])
    case list(reference: MailboxName, pattern: String, specialUse: Bool, status: [MailboxStatus.Item])
    case lsub(reference: MailboxName, pattern: String)
    case select(MailboxName, condStore: Bool = false, qresync: QResyncParameters? = nil)
    case examine(MailboxName, condStore: Bool = false, qresync: QResyncParameters? = nil)
    case create(MailboxName, specialUse: [String] = [])
    case status(MailboxName, [MailboxStatus.Item])
    case uidFetch(SequenceSet, [FetchItem], changedSince: UInt64? = nil, vanished: Bool = false)
    case uidSearch(SearchKey, returnOptions: [String]? = nil)
    case uidStore(SequenceSet, StoreMode, silent: Bool, flags: [Flag], unchangedSince: UInt64? = nil)
    case uidExpunge(SequenceSet)
    case uidCopy(SequenceSet, MailboxName)
    case uidMove(SequenceSet, MailboxName)

    /// A short name for logs (never the arguments: LOGIN carries a password).
    public var name: String {
        switch self {
        case .capability: return "CAPABILITY"
        case .noop: return "NOOP"
        case .logout: return "LOGOUT"
        case .startTLS: return "STARTTLS"
        case .namespace: return "NAMESPACE"
        case .idle: return "IDLE"
        case .expunge: return "EXPUNGE"
        case .close: return "CLOSE"
        case .unselect: return "UNSELECT"
        case .check: return "CHECK"
        case .login: return "LOGIN"
        case .authenticate(let m, _): return "AUTHENTICATE " + m
        case .id: return "ID"
        case .enable: return "ENABLE"
        case .list: return "LIST"
        case .lsub: return "LSUB"
        case .select: return "SELECT"
        case .examine: return "EXAMINE"
        case .create: return "CREATE"
        case .status: return "STATUS"
        case .uidFetch: return "UID FETCH"
        case .uidSearch: return "UID SEARCH"
        case .uidStore: return "UID STORE"
        case .uidExpunge: return "UID EXPUNGE"
        case .uidCopy: return "UID COPY"
        case .uidMove: return "UID MOVE"
        }
    }

    /// The command's bytes with `tag`, ending in CRLF.
    public func encode(tag: String, options: EncodingOptions) -> EncodedCommand {
        var w = CommandWriter(options: options)
        w.writeString(tag + " ")
        write(to: &w)
        w.writeString("\r\n")
        return w.finish()
    }

    func writeMailbox(_ m: MailboxName, _ w: inout CommandWriter) { m.write(to: &w) }

    func write(to w: inout CommandWriter) {
        switch self {
        case .capability, .noop, .logout, .startTLS, .namespace, .idle, .expunge, .close, .unselect, .check:
            w.writeString(name)
        case .login(let u, let p):
            w.writeString("LOGIN ")
            w.writeAString(Array(u.utf8))
            w.writeString(" ")
            w.writeIMAPString(Array(p.utf8))
        case .authenticate(let m, let ir):
            w.writeString("AUTHENTICATE " + m)
            if let ir { w.writeString(" " + (ir.isEmpty ? "=" : Base64.encode(ir))) }
        case .id(let p):
            w.writeString("ID ")
            p.write(to: &w)
        case .enable(let caps):
            w.writeString("ENABLE " + caps.map(\.name).joined(separator: " "))
        case .list(let ref, let pattern, let specialUse, let status):
            w.writeString("LIST ")
            ref.write(to: &w)
            w.writeString(" ")
            let pb = Array(pattern.utf8)
            if !pb.isEmpty, pb.allSatisfy({ Cursor.isAStringChar($0) || $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "*") }) {
                w.writeBytes(pb)
            } else {
                w.writeIMAPString(pb)
            }
            var ret: [String] = []
            if specialUse { ret.append("SPECIAL-USE") }
            if !status.isEmpty { ret.append("STATUS (" + status.map(\.rawValue).joined(separator: " ") + ")") }
            if !ret.isEmpty { w.writeString(" RETURN (" + ret.joined(separator: " ") + ")") }
        case .lsub(let ref, let pattern):
            w.writeString("LSUB ")
            ref.write(to: &w)
            w.writeString(" ")
            w.writeIMAPString(Array(pattern.utf8))
        case .select(let m, let cs, let qr), .examine(let m, let cs, let qr):
            w.writeString(name + " ")
            m.write(to: &w)
            if let qr {
                w.writeString(" (QRESYNC (\(qr.uidValidity) \(qr.modSeq)" + (qr.knownUIDs.map { " \($0)" } ?? "") + "))")
            } else if cs {
                w.writeString(" (CONDSTORE)")
            }
        case .create(let m, let use):
            w.writeString("CREATE ")
            m.write(to: &w)
            if !use.isEmpty { w.writeString(" (USE (" + use.joined(separator: " ") + "))") }
        case .status(let m, let items):
            w.writeString("STATUS ")
            m.write(to: &w)
            w.writeString(" (" + items.map(\.rawValue).joined(separator: " ") + ")")
        case .uidFetch(let set, let items, let since, let vanished):
            w.writeString("UID FETCH \(set) (" + items.map(\.text).joined(separator: " ") + ")")
            if let since { w.writeString(" (CHANGEDSINCE \(since)" + (vanished ? " VANISHED)" : ")")) }
        case .uidSearch(let key, let ret):
            w.writeString("UID SEARCH ")
            if let ret { w.writeString("RETURN (" + ret.joined(separator: " ") + ") ") }
            key.write(to: &w)
        case .uidStore(let set, let mode, let silent, let flags, let unchanged):
            w.writeString("UID STORE \(set) ")
            if let unchanged { w.writeString("(UNCHANGEDSINCE \(unchanged)) ") }
            w.writeString(mode.rawValue + "FLAGS" + (silent ? ".SILENT" : "") + " (" + flags.map(\.name).joined(separator: " ") + ")")
        case .uidExpunge(let set): w.writeString("UID EXPUNGE \(set)")
        case .uidCopy(let set, let m): w.writeString("UID COPY \(set) "); m.write(to: &w)
        case .uidMove(let set, let m): w.writeString("UID MOVE \(set) "); m.write(to: &w)
        }
    }
}

/// APPEND and MULTIAPPEND, written in pieces around the streamed message bytes.
///
///     append          = "APPEND" SP mailbox 1*append-message                 ; RFC 3502
///     append-message  = [SP flag-list] [SP date-time] SP append-data
///     append-data     = literal / literal8                                   ; literal8 needs BINARY
public enum AppendWriter {
    public struct Message: Sendable, Hashable {
        public var flags: [Flag]
        public var internalDate: InternalDate?
        public var size: Int64
        /// Use literal8 (`~{n}`), for messages with NUL bytes on servers with BINARY.
        public var binary: Bool
        /// Wait for "+" before the bytes even where LITERAL+/LITERAL- would
        /// allow otherwise: for a message the server may refuse for what its
        /// command line says (a keyword longer than it takes). A refusal then
        /// comes before any byte of the message is sent, so none of them can
        /// be read as commands.
        public var synchronizing: Bool
        public init(flags: [Flag], internalDate: InternalDate?, size: Int64, binary: Bool = false, synchronizing: Bool = false) {
            self.flags = flags
            self.internalDate = internalDate
            self.size = size
            self.binary = binary
            self.synchronizing = synchronizing
        }
    }

    /// `tag APPEND mailbox (flags) "date" {n+}` CRLF; with `first == false`
    /// only the message part for MULTIAPPEND. If the result has two parts,
    /// the second is empty and the client must wait for "+" before the bytes.
    public static func messageHeader(tag: String?, mailbox: MailboxName, message m: Message, options: EncodingOptions) -> EncodedCommand {
        var w = CommandWriter(options: options)
        if let tag {
            w.writeString(tag + " APPEND ")
            mailbox.write(to: &w)
        }
        if !m.flags.isEmpty {
            w.writeString(" (" + m.flags.map(\.name).joined(separator: " ") + ")")
        }
        if let d = m.internalDate { w.writeString(" " + IMAPDateTime.format(d)) }
        w.writeString(" ")
        w.writeLiteralHeader(size: m.size, binary: m.binary, synchronizing: m.synchronizing)
        return w.finish()
    }

    /// The CRLF that ends the command after the last message.
    public static func end() -> ByteBuffer { ByteBuffer(string: "\r\n") }

    /// Ends an APPEND after a complete literal so that the server must refuse
    /// it: `SP ")"` is neither CRLF nor the start of another append-message,
    /// so the command is BAD and nothing of it is stored (RFC 3502 makes a
    /// MULTIAPPEND all or nothing). Used when a message turns out to be
    /// unsendable after its literal was announced.
    public static func abort() -> ByteBuffer { ByteBuffer(string: " )\r\n") }
}

/// Base64 (RFC 4648) for SASL exchanges.
public enum Base64 {
    static let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let b0 = bytes[i], b1 = i + 1 < bytes.count ? bytes[i + 1] : 0, b2 = i + 2 < bytes.count ? bytes[i + 2] : 0
            out.append(table[Int(b0 >> 2)])
            out.append(table[Int((b0 & 3) << 4 | b1 >> 4)])
            out.append(i + 1 < bytes.count ? table[Int((b1 & 0xF) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? table[Int(b2 & 0x3F)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(_ s: String) -> [UInt8]? {
        var out: [UInt8] = []
        var bits: UInt32 = 0
        var n = 0
        for c in s.utf8 {
            if c == UInt8(ascii: "=") { break }
            if c == 0x20 || c == 0x0D || c == 0x0A { continue }
            guard let v = table.firstIndex(of: c) else { return nil }
            bits = bits << 6 | UInt32(v)
            n += 6
            if n >= 8 {
                n -= 8
                out.append(UInt8((bits >> UInt32(n)) & 0xFF))
            }
        }
        return out
    }
}

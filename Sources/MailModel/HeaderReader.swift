#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The few headers mailferry needs from a message: for identity fallbacks
/// (Message-ID + Date + From) and for a POP3 message's INTERNALDATE (the first
/// `Received:` date, else `Date:`).
public struct HeaderSummary: Hashable, Sendable, Codable {
    /// The Message-ID with surrounding white space and comments removed, angle brackets kept.
    public var messageID: String?
    /// The raw `Date:` value, unfolded.
    public var dateRaw: String?
    public var date: InternalDate?
    /// The raw `From:` value, unfolded.
    public var from: String?
    /// The date after the last `;` of the first (topmost) `Received:` header.
    public var firstReceivedDate: InternalDate?

    public init(messageID: String? = nil, dateRaw: String? = nil, date: InternalDate? = nil,
                from: String? = nil, firstReceivedDate: InternalDate? = nil) {
        self.messageID = messageID
        self.dateRaw = dateRaw
        self.date = date
        self.from = from
        self.firstReceivedDate = firstReceivedDate
    }

    /// The fallback identity for destinations that rewrite messages: present
    /// only when Message-ID exists (a message without one is never merged by headers).
    public var fallbackIdentity: String? {
        guard let id = messageID, !id.isEmpty else { return nil }
        return [id, dateRaw ?? "", from ?? ""].joined(separator: "\u{1F}")
    }

    /// The INTERNALDATE a message without one gets, and where it came from.
    public func impliedInternalDate(downloadedAt: InternalDate) -> (InternalDate, DateSource) {
        if let r = firstReceivedDate { return (r, .received) }
        if let d = date { return (d, .dateHeader) }
        return (downloadedAt, .downloadTime)
    }
}

/// Reads the header block of a message: unfolds continuation lines, accepts
/// CRLF, bare LF and 8-bit bytes, tolerates a missing blank line, and stops
/// at the body. Feed it chunks; it never needs more than the header block.
///
///     header-field = field-name ":" unstructured CRLF   ; RFC 5322 §2.2
///     field-name   = 1*ftext                            ; printable US-ASCII except ":"
///     folding      = CRLF 1*WSP
public struct HeaderReader: Sendable {
    /// Header blocks larger than this are cut off; the rest is treated as body.
    public static let maxHeaderBytes = 256 * 1024

    private var line: [UInt8] = []
    private var field: [UInt8]? = nil
    private var consumed = 0
    public private(set) var isComplete = false
    public private(set) var summary = HeaderSummary()

    public init() {}

    /// Reads a whole message held in memory.
    public static func read<Bytes: Sequence>(_ bytes: Bytes) -> HeaderSummary where Bytes.Element == UInt8 {
        var r = HeaderReader()
        r.feed(bytes)
        return r.finish()
    }

    /// Feeds the next bytes. Returns true once the header block has ended and
    /// further input is not needed.
    @discardableResult
    public mutating func feed<Bytes: Sequence>(_ bytes: Bytes) -> Bool where Bytes.Element == UInt8 {
        if isComplete { return true }
        // Contiguous bytes (a ByteBuffer's view, an array): lines found with memchr.
        if let done = bytes.withContiguousStorageIfAvailable({ feedContiguous(UnsafeRawBufferPointer($0)) }) {
            return done
        }
        for b in bytes {
            consumed += 1
            if consumed > Self.maxHeaderBytes {
                endLine()
                completeField()
                isComplete = true
                return true
            }
            if b == 0x0A {
                endLine()
                if isComplete { return true }
            } else {
                line.append(b)
            }
        }
        return false
    }

    /// `feed` for bytes in memory: the same steps, a line at a time.
    private mutating func feedContiguous(_ buffer: UnsafeRawBufferPointer) -> Bool {
        guard let base = buffer.baseAddress else { return false }
        let n = buffer.count
        var i = 0
        while i < n {
            let room = Self.maxHeaderBytes - consumed
            if room <= 0 {
                // The byte past the limit: the block is cut off here.
                consumed += 1
                endLine()
                completeField()
                isComplete = true
                return true
            }
            let limit = min(n, i + room)
            if let hit = memchr(base + i, 0x0A, limit - i) {
                let j = base.distance(to: UnsafeRawPointer(hit))
                line.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[i..<j]))
                consumed += j - i + 1
                i = j + 1
                endLine()
                if isComplete { return true }
            } else {
                line.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[i..<limit]))
                consumed += limit - i
                i = limit
            }
        }
        return false
    }

    /// Ends input (for a message that is all header) and returns what was found.
    public mutating func finish() -> HeaderSummary {
        if !isComplete {
            if !line.isEmpty { endLine() }
            completeField()
            isComplete = true
        }
        return summary
    }

    private mutating func endLine() {
        // The line's storage is lent out and given back emptied: no copy, no
        // allocation per line.
        var buffer: [UInt8] = []
        swap(&buffer, &line)
        endLine(buffer[...])
        buffer.removeAll(keepingCapacity: true)
        swap(&buffer, &line)
    }

    private mutating func endLine(_ whole: ArraySlice<UInt8>) {
        var l = whole
        if l.last == 0x0D { l.removeLast() }
        // A UTF-8 byte order mark before the first header (some Windows tools write one).
        if !sawField, l.starts(with: [0xEF, 0xBB, 0xBF]) { l.removeFirst(3) }
        if l.isEmpty {
            completeField()
            isComplete = true
            return
        }
        if l[l.startIndex] == 0x20 || l[l.startIndex] == 0x09 {
            // Continuation of the current field (unfolding keeps the WSP).
            strayLine = false
            if field != nil { field!.append(contentsOf: l) }
            return
        }
        if HeaderReader.isFieldLine(l) {
            strayLine = false
            completeField()
            // Only the fields the summary reads are kept (and unfolded).
            field = HeaderReader.isWanted(l) ? Array(l) : nil
            sawField = true
            return
        }
        if l.starts(with: HeaderReader.mboxFrom) || l.starts(with: HeaderReader.quotedMboxFrom) {
            return  // an mbox separator (or its quoted form) before or among the headers
        }
        if !sawField || strayLine {
            // No header at all (everything is body), or a second line that is
            // not a header: the block ended (a missing blank line) at the first.
            completeField()
            isComplete = true
            return
        }
        // One stray line inside the header block is tolerated (RFC 2822
        // A.6.3 shows one); if a header or continuation follows, reading goes on.
        strayLine = true
    }

    private var strayLine = false
    private var sawField = false
    static let mboxFrom = Array("From ".utf8)
    static let quotedMboxFrom = Array(">From ".utf8)

    /// `field-name ":"`, where the name is printable US-ASCII without
    /// spaces; white space before the colon is allowed (obs-optional, RFC 5322 §4.5).
    static func isFieldLine(_ l: [UInt8]) -> Bool { isFieldLine(l[...]) }

    static func isFieldLine(_ l: ArraySlice<UInt8>) -> Bool {
        guard let colon = l.firstIndex(of: UInt8(ascii: ":")) else { return false }
        var end = colon
        while end > l.startIndex, l[end - 1] == 0x20 || l[end - 1] == 0x09 { end -= 1 }
        guard end > l.startIndex else { return false }
        return l[l.startIndex..<end].allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }

    /// The field names `completeField` reads, lower-case.
    private static let wanted: [[UInt8]] = ["message-id", "date", "from", "received"].map { Array($0.utf8) }

    /// A field line whose name (trimmed, any case) is one `completeField` reads.
    static func isWanted(_ l: ArraySlice<UInt8>) -> Bool {
        guard let colon = l.firstIndex(of: UInt8(ascii: ":")) else { return false }
        var start = l.startIndex
        var end = colon
        func blank(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0D || b == 0x0A }
        while start < end, blank(l[start]) { start += 1 }
        while end > start, blank(l[end - 1]) { end -= 1 }
        let count = end - start
        return wanted.contains { w in
            guard w.count == count else { return false }
            for k in 0..<count {
                var b = l[start + k]
                if b >= 0x41 && b <= 0x5A { b |= 0x20 }
                if b != w[k] { return false }
            }
            return true
        }
    }

    private mutating func completeField() {
        guard let f = field else { return }
        field = nil
        guard let colon = f.firstIndex(of: UInt8(ascii: ":")) else { return }
        // Only four fields matter: their names are told apart on the bytes,
        // and nothing is built for the others (a String, its lowercased copy
        // and the value's bytes per field were ~4% of a first copy's CPU).
        guard let name = Self.wantedField(f[..<colon]) else { return }
        let value = Array(f[(colon + 1)...])
        switch name {
        case "message-id":
            if summary.messageID == nil {
                let v = HeaderReader.decodeLossy(value).trimmingASCIIWhitespace()
                summary.messageID = HeaderReader.extractMessageID(v)
            }
        case "date":
            if summary.dateRaw == nil {
                let v = HeaderReader.decodeLossy(value).trimmingASCIIWhitespace()
                summary.dateRaw = v
                summary.date = RFC5322Date.parse(v)
            }
        case "from":
            if summary.from == nil {
                summary.from = HeaderReader.decodeLossy(value).trimmingASCIIWhitespace()
            }
        case "received":
            if summary.firstReceivedDate == nil, !receivedSeen {
                receivedSeen = true
                let v = HeaderReader.decodeLossy(value)
                if let semi = v.lastIndex(of: ";") {
                    summary.firstReceivedDate = RFC5322Date.parse(String(v[v.index(after: semi)...]))
                }
            }
        default:
            break
        }
    }

    private var receivedSeen = false

    static let wantedFields = ["message-id", "date", "from", "received"].map { Array($0.utf8) }

    /// The field's name, lowercased, if it is one of `wantedFields` (ASCII
    /// case-insensitive, white space around it ignored); else nil.
    static func wantedField(_ raw: ArraySlice<UInt8>) -> String? {
        func space(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0D || b == 0x0A }
        var lo = raw.startIndex
        var hi = raw.endIndex
        while lo < hi, space(raw[lo]) { lo += 1 }
        while hi > lo, space(raw[hi - 1]) { hi -= 1 }
        let n = hi - lo
        candidates: for w in wantedFields where w.count == n {
            for i in 0..<n {
                var b = raw[lo + i]
                if b >= 0x41 && b <= 0x5A { b |= 0x20 }
                if b != w[i] { continue candidates }
            }
            return String(decoding: w, as: UTF8.self)
        }
        return nil
    }

    /// Bytes as UTF-8, with invalid sequences replaced; header values are only
    /// compared and shown, never written back.
    static func decodeLossy(_ bytes: [UInt8]) -> String {
        String(decoding: bytes, as: UTF8.self)
    }

    /// `<id@host>` from a value that may carry comments or junk around it.
    static func extractMessageID(_ v: String) -> String? {
        if let open = v.firstIndex(of: "<"), let close = v[open...].firstIndex(of: ">") {
            let id = String(v[open...close])
            return id.count > 2 ? id : nil
        }
        let t = v.split(whereSeparator: { $0 == " " || $0 == "\t" }).first.map(String.init)
        return (t?.isEmpty ?? true) ? nil : t
    }
}

extension String {
    func trimmingASCIIWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\r" || f == "\n" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" || l == "\n" { s = s.dropLast() }
        return String(s)
    }
}

/// RFC 5322 §3.3 dates, with the obsolete forms of §4.3 that real mail uses:
/// optional day name, 2- and 3-digit years, missing seconds, named zones
/// (UT, GMT, EST...), military zones, comments, and a missing zone (-0000).
///
///     date-time = [ day-of-week "," ] date time [CFWS]
///     date      = day month year
///     time      = time-of-day zone
///     zone      = ("+" / "-") 4DIGIT / obs-zone
public enum RFC5322Date {
    static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let zones: [String: Int] = [
        "ut": 0, "utc": 0, "gmt": 0, "z": 0,
        "est": -300, "edt": -240, "cst": -360, "cdt": -300,
        "mst": -420, "mdt": -360, "pst": -480, "pdt": -420,
        "cet": 60, "cest": 120, "met": 60, "mest": 120, "bst": 60, "eet": 120, "eest": 180,
        "jst": 540, "ist": 330, "hkt": 480, "aest": 600, "aedt": 660,
    ]

    public static func parse(_ raw: String) -> InternalDate? {
        var raw = raw
        if let d = raw.withUTF8({ parseCommon($0) }) { return d }
        return parseAnyForm(raw)
    }

    /// The form nearly all mail uses, `[Tue, ]1 Jul 2003 10:52:37 +0200`,
    /// optionally followed by a comment such as `(PDT)`, read straight from
    /// the bytes (the general reader below spends about 15 us a date on
    /// String work). Nil for anything else, which goes to `parseAnyForm`;
    /// for what this accepts, both give the same date.
    static func parseCommon(_ b: UnsafeBufferPointer<UInt8>) -> InternalDate? {
        let n = b.count
        var i = 0
        func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0D || c == 0x0A }
        func skipSpaces() -> Bool {
            let start = i
            while i < n, isSpace(b[i]) { i += 1 }
            return i > start
        }
        func digits(exactly min: Int, upTo max: Int) -> Int? {
            var v = 0
            var k = 0
            while i < n, k < max, b[i] >= 0x30, b[i] <= 0x39 {
                v = v * 10 + Int(b[i] &- 0x30)
                i += 1
                k += 1
            }
            guard k >= min, i >= n || b[i] < 0x30 || b[i] > 0x39 else { return nil }
            return v
        }
        func lowerLetter(_ c: UInt8) -> UInt8? {
            if c >= 0x61 && c <= 0x7A { return c }
            if c >= 0x41 && c <= 0x5A { return c | 0x20 }
            return nil
        }
        /// Three letters (lowercased) and the index after them.
        func word3() -> (UInt8, UInt8, UInt8)? {
            guard i + 3 <= n, let a = lowerLetter(b[i]), let c = lowerLetter(b[i + 1]), let d = lowerLetter(b[i + 2]) else { return nil }
            i += 3
            return (a, c, d)
        }
        func matches(_ w: (UInt8, UInt8, UInt8), _ name: StaticString) -> Bool {
            let p = name.utf8Start
            return w.0 == p[0] && w.1 == p[1] && w.2 == p[2]
        }
        _ = skipSpaces()
        // Optional day name: exactly three letters and a comma.
        if i < n, lowerLetter(b[i]) != nil {
            guard let w = word3(), i < n, b[i] == UInt8(ascii: ","),
                  matches(w, "mon") || matches(w, "tue") || matches(w, "wed") || matches(w, "thu")
                    || matches(w, "fri") || matches(w, "sat") || matches(w, "sun") else { return nil }
            i += 1
            guard skipSpaces() else { return nil }
        }
        guard let day = digits(exactly: 1, upTo: 2), skipSpaces() else { return nil }
        guard let mw = word3(), i < n, isSpace(b[i]) else { return nil }
        guard let m = monthNames3.firstIndex(where: { matches(mw, $0) }) else { return nil }
        _ = skipSpaces()
        guard let year = digits(exactly: 4, upTo: 4), skipSpaces() else { return nil }
        guard let hour = digits(exactly: 2, upTo: 2), i < n, b[i] == UInt8(ascii: ":") else { return nil }
        i += 1
        guard let minute = digits(exactly: 2, upTo: 2), i < n, b[i] == UInt8(ascii: ":") else { return nil }
        i += 1
        guard let second = digits(exactly: 2, upTo: 2), skipSpaces(), i < n else { return nil }
        let sign = b[i]
        guard sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") else { return nil }
        i += 1
        guard let z = digits(exactly: 4, upTo: 4) else { return nil }
        // Nothing after the zone but white space and a comment.
        _ = skipSpaces()
        guard i == n || b[i] == UInt8(ascii: "(") else { return nil }
        let zone = (sign == UInt8(ascii: "-") ? -1 : 1) * (z / 100 * 60 + z % 100)
        return InternalDate.from(year: year, month: m + 1, day: day, hour: hour, minute: minute, second: second,
                                 zoneMinutes: zone)
    }

    static let monthNames3: [StaticString] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

    /// Every form `parse` accepts (the obsolete ones included).
    static func parseAnyForm(_ raw: String) -> InternalDate? {
        // Drop comments, turn separators into spaces.
        var cleaned = ""
        var depth = 0
        for ch in raw {
            if ch == "(" { depth += 1; cleaned.append(" "); continue }
            if ch == ")" { if depth > 0 { depth -= 1 }; cleaned.append(" "); continue }
            if depth > 0 { continue }
            cleaned.append(ch == "," || ch == "\t" || ch == "\r" || ch == "\n" ? " " : ch)
        }
        // obs-time allows white space around the colons: "09 :   55  :  06".
        // (Spaces before and after every colon go, in one pass.)
        if cleaned.contains(":") {
            var joined = ""
            var afterColon = false
            for ch in cleaned {
                if ch == ":" {
                    while joined.last == " " { joined.removeLast() }
                    joined.append(ch)
                    afterColon = true
                } else if ch == " " && afterColon {
                    continue
                } else {
                    afterColon = false
                    joined.append(ch)
                }
            }
            cleaned = joined
        }
        var tokens = cleaned.split(separator: " ").map { String($0) }
        guard !tokens.isEmpty else { return nil }
        // Optional day name ("Tue", "Tuesday", "Tue.").
        let dayNames = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        if var first = tokens.first {
            if first.hasSuffix(".") { first.removeLast() }
            if first.count >= 3, first.allSatisfy(\.isLetter), dayNames.contains(String(first.lowercased().prefix(3))) {
                tokens.removeFirst()
            }
        }
        guard tokens.count >= 3 else {
            // Some software writes ISO 8601 into Date:.
            return tokens.count == 1 ? InternalDate(iso8601: tokens[0]) : nil
        }
        var day: Int?
        var month: Int?
        var idx = 0
        // "1 Jul 2003" or "Jul 1 2003" (asctime-ish).
        if let d = Int(tokens[0]) {
            day = d
            month = monthIndex(tokens[1])
            idx = 2
        } else if let m = monthIndex(tokens[0]), let d = Int(tokens[1]) {
            month = m
            day = d
            idx = 2
        } else if tokens[0].contains("-") {
            // "01-Jul-2003"
            let parts = tokens[0].split(separator: "-").map(String.init)
            guard parts.count == 3 else { return nil }
            day = Int(parts[0])
            month = monthIndex(parts[1])
            tokens.replaceSubrange(0...0, with: [parts[2]])
            idx = 0
            return finish(day: day, month: month, tokens: Array(tokens[idx...]))
        }
        return finish(day: day, month: month, tokens: Array(tokens[idx...]))
    }

    private static func finish(day: Int?, month: Int?, tokens: [String]) -> InternalDate? {
        guard let day, let month, !tokens.isEmpty else { return nil }
        var t = tokens
        var yearTok: String
        var timeTok: String
        // asctime puts the year last: "Jul 1 10:52:37 2003".
        if t[0].contains(":"), t.count >= 2, Int(t[1]) != nil {
            timeTok = t[0]
            yearTok = t[1]
            t.removeFirst(2)
        } else {
            yearTok = t[0]
            guard t.count >= 2 else { return nil }
            timeTok = t[1]
            t.removeFirst(2)
        }
        guard var year = Int(yearTok), yearTok.count <= 4 else { return nil }
        if yearTok.count <= 2 { year += year < 50 ? 2000 : 1900 } else if yearTok.count == 3 { year += 1900 }
        // A zone glued to the time: "00:01+0000".
        if let signAt = timeTok.firstIndex(where: { $0 == "+" || $0 == "-" }) {
            t.insert(String(timeTok[signAt...]), at: 0)
            timeTok = String(timeTok[..<signAt])
        }
        var hms = timeTok.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        // Fractional seconds: "35.882".
        if hms.count == 3, let dot = hms[2].firstIndex(of: ".") { hms[2] = String(hms[2][..<dot]) }
        let nums = hms.map { Int($0) }
        guard nums.count == 2 || nums.count == 3, nums.allSatisfy({ $0 != nil }) else { return nil }
        let h = nums[0] ?? 0, mi = nums[1] ?? 0, s = nums.count > 2 ? (nums[2] ?? 0) : 0
        var zone = 0
        if let z0 = t.first {
            let z = String(z0.filter { $0 != ":" })
            if let sign = z.first, sign == "+" || sign == "-", z.count >= 5, let v = Int(z.dropFirst().prefix(4)) {
                zone = (sign == "-" ? -1 : 1) * (v / 100 * 60 + v % 100)
            } else if z.count == 4, z.allSatisfy(\.isNumber), let v = Int(z) {
                zone = v / 100 * 60 + v % 100  // a zone that lost its sign
            } else if let v = zones[z.lowercased()] {
                zone = v
            } else if z.count == 1, let c = z.lowercased().first, c.isLetter {
                zone = 0  // military zones are unreliable (RFC 5322 §4.3): treat as -0000
            }
        }
        return InternalDate.from(year: year, month: month, day: day, hour: h, minute: mi, second: s, zoneMinutes: zone)
    }

    private static func monthIndex(_ s: String) -> Int? {
        let l = s.lowercased()
        guard l.count >= 3 else { return nil }
        return months.firstIndex(of: String(l.prefix(3))).map { $0 + 1 }
    }
}

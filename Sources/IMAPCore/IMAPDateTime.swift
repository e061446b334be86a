import MailModel
import NIOCore

/// INTERNALDATE as IMAP writes it.
///
///     date-time       = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE
///     date-day-fixed  = (SP DIGIT) / 2DIGIT
///     date-month      = "Jan" / "Feb" / "Mar" / "Apr" / "May" / "Jun" / "Jul" / "Aug" / "Sep" / "Oct" / "Nov" / "Dec"
///     time            = 2DIGIT ":" 2DIGIT ":" 2DIGIT
///     zone            = ("+" / "-") 4DIGIT
public enum IMAPDateTime {
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `"01-Jan-2024 09:30:00 +0100"` including the quotes.
    public static func format(_ d: InternalDate) -> String {
        let c = d.civil
        let z = abs(d.zoneMinutes)
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        var year = String(c.year)
        while year.count < 4 { year = "0" + year }
        return "\"\(two(c.day))-\(months[c.month - 1])-\(year) \(two(c.hour)):\(two(c.minute)):\(two(c.second)) \(d.zoneMinutes < 0 ? "-" : "+")\(two(z / 60))\(two(z % 60))\""
    }

    /// Parses the text between the quotes; nil if malformed.
    public static func parse(_ text: String) -> InternalDate? {
        let t = text.trimmingCharacters(in: " ")
        let parts = t.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 3 else { return nil }
        let dmy = parts[0].split(separator: "-")
        let hms = parts[1].split(separator: ":")
        guard dmy.count == 3, hms.count == 3, let day = Int(dmy[0]), let year = Int(dmy[2]),
              let mi = months.firstIndex(where: { $0.lowercased() == dmy[1].lowercased() }),
              let h = Int(hms[0]), let m = Int(hms[1]), let s = Int(hms[2]) else { return nil }
        let zone = parts[2]
        guard zone.count == 5, let sign = zone.first, sign == "+" || sign == "-",
              let zh = Int(zone.dropFirst().prefix(2)), let zm = Int(zone.suffix(2)) else { return nil }
        let minutes = (sign == "-" ? -1 : 1) * (zh * 60 + zm)
        return InternalDate.from(year: year, month: mi + 1, day: day, hour: h, minute: m, second: s, zoneMinutes: minutes)
    }

    static func parse(_ c: inout Cursor) throws -> InternalDate {
        let bytes = try c.quoted()
        if let d = parseCanonical(bytes) { return d }
        let raw = String(decoding: bytes, as: UTF8.self)
        guard let d = parse(raw) else { throw c.fail("bad date-time \"\(raw)\"") }
        return d
    }

    /// The form servers send (`dd-Mon-yyyy hh:mm:ss +zzzz`, the day maybe
    /// space-padded), read from the bytes without making strings: listing a
    /// folder parses one per message. nil sends the text to `parse(_:)`.
    static func parseCanonical<Bytes: Collection>(_ bytes: Bytes) -> InternalDate? where Bytes.Element == UInt8 {
        var b = Array(bytes)
        while b.first == 0x20 { b.removeFirst() }
        if b.count == 25 { b.insert(0x30, at: 0) }  // one-digit day
        guard b.count == 26 else { return nil }
        func digit(_ i: Int) -> Int? {
            let v = Int(b[i]) - 0x30
            return (0...9).contains(v) ? v : nil
        }
        func two(_ i: Int) -> Int? {
            guard let a = digit(i), let c = digit(i + 1) else { return nil }
            return a * 10 + c
        }
        guard b[2] == 0x2D, b[6] == 0x2D, b[11] == 0x20, b[14] == 0x3A, b[17] == 0x3A, b[20] == 0x20,
              b[21] == 0x2B || b[21] == 0x2D,
              let day = two(0), let y1 = two(7), let y2 = two(9), let h = two(12), let m = two(15), let sec = two(18),
              let zh = two(22), let zm = two(24) else { return nil }
        let mon = [b[3] | 0x20, b[4] | 0x20, b[5] | 0x20]
        guard let mi = monthBytes.firstIndex(of: mon) else { return nil }
        let minutes = (b[21] == 0x2D ? -1 : 1) * (zh * 60 + zm)
        return InternalDate.from(year: y1 * 100 + y2, month: mi + 1, day: day, hour: h, minute: m, second: sec,
                                 zoneMinutes: minutes)
    }

    private static let monthBytes: [[UInt8]] = months.map { Array($0.lowercased().utf8) }
}

extension String {
    func trimmingCharacters(in ch: Character) -> String {
        var s = Substring(self)
        while s.first == ch { s = s.dropFirst() }
        while s.last == ch { s = s.dropLast() }
        return String(s)
    }
}

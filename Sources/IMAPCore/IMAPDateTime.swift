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
        let raw = String(decoding: try c.quoted(), as: UTF8.self)
        guard let d = parse(raw) else { throw c.fail("bad date-time \"\(raw)\"") }
        return d
    }
}

extension String {
    func trimmingCharacters(in ch: Character) -> String {
        var s = Substring(self)
        while s.first == ch { s = s.dropFirst() }
        while s.last == ch { s = s.dropLast() }
        return String(s)
    }
}

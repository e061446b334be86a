import Foundation

/// When a server received a message (IMAP INTERNALDATE), to the second, with
/// the zone it was given in so that it can be written back the same way.
public struct InternalDate: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    /// Seconds since 1970-01-01T00:00:00Z.
    public var secondsSinceEpoch: Int64
    /// The zone offset the date was written in, in minutes east of UTC.
    public var zoneMinutes: Int

    public init(secondsSinceEpoch: Int64, zoneMinutes: Int = 0) {
        self.secondsSinceEpoch = secondsSinceEpoch
        self.zoneMinutes = zoneMinutes
    }

    public init(_ date: Date, zoneMinutes: Int = 0) {
        self.init(secondsSinceEpoch: Int64(date.timeIntervalSince1970.rounded(.down)), zoneMinutes: zoneMinutes)
    }

    public var date: Date { Date(timeIntervalSince1970: TimeInterval(secondsSinceEpoch)) }

    public static func now() -> InternalDate { InternalDate(Date()) }

    /// Equal instants compare equal whatever their zone.
    public static func == (l: InternalDate, r: InternalDate) -> Bool { l.secondsSinceEpoch == r.secondsSinceEpoch }
    public func hash(into h: inout Hasher) { h.combine(secondsSinceEpoch) }
    public static func < (l: InternalDate, r: InternalDate) -> Bool { l.secondsSinceEpoch < r.secondsSinceEpoch }

    /// Broken-down civil time in the date's own zone.
    public var civil: (year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) {
        let local = secondsSinceEpoch + Int64(zoneMinutes) * 60
        var days = local / 86_400
        var rem = local % 86_400
        if rem < 0 { rem += 86_400; days -= 1 }
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (Int(m <= 2 ? y + 1 : y), Int(m), Int(d), Int(rem / 3600), Int(rem % 3600 / 60), Int(rem % 60))
    }

    /// Seconds since the epoch for a civil time at a zone offset; nil when out of range.
    public static func from(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int,
                            zoneMinutes: Int) -> InternalDate? {
        guard (1...12).contains(month), (1...31).contains(day), (0...23).contains(hour),
              (0...59).contains(minute), (0...60).contains(second), (1...9999).contains(year) else { return nil }
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = Int64(month > 2 ? month - 3 : month + 9)
        let doy = (153 * mp + 2) / 5 + Int64(day) - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        let secs = days * 86_400 + Int64(hour) * 3600 + Int64(minute) * 60 + Int64(min(second, 59))
        return InternalDate(secondsSinceEpoch: secs - Int64(zoneMinutes) * 60, zoneMinutes: zoneMinutes)
    }

    /// ISO 8601 in the date's own zone, e.g. `2024-03-01T09:30:00+01:00`.
    public var iso8601: String {
        let c = civil
        let sign = zoneMinutes < 0 ? "-" : "+"
        let z = abs(zoneMinutes)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d%@%02d:%02d",
                      c.year, c.month, c.day, c.hour, c.minute, c.second, sign, z / 60, z % 60)
    }

    public var description: String { iso8601 }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Int64.self) {
            self.init(secondsSinceEpoch: n)
            return
        }
        let s = try c.decode(String.self)
        guard let d = InternalDate(iso8601: s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not an ISO 8601 date: \(s)")
        }
        self = d
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(iso8601)
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS` followed by `Z` or `±HH:MM` (or `±HHMM`).
    /// A date alone (`YYYY-MM-DD`) means midnight UTC.
    public init?(iso8601 s: String) {
        let b = Array(s.utf8)
        func num(_ from: Int, _ len: Int) -> Int? {
            guard from + len <= b.count else { return nil }
            var v = 0
            for i in from..<(from + len) {
                guard b[i] >= 0x30, b[i] <= 0x39 else { return nil }
                v = v * 10 + Int(b[i] - 0x30)
            }
            return v
        }
        guard let y = num(0, 4), b.count >= 10, b[4] == UInt8(ascii: "-"), let mo = num(5, 2),
              b[7] == UInt8(ascii: "-"), let d = num(8, 2) else { return nil }
        if b.count == 10 {
            guard let v = InternalDate.from(year: y, month: mo, day: d, hour: 0, minute: 0, second: 0, zoneMinutes: 0) else { return nil }
            self = v
            return
        }
        guard b.count >= 19, b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: " "),
              let h = num(11, 2), b[13] == UInt8(ascii: ":"), let mi = num(14, 2),
              b[16] == UInt8(ascii: ":"), let se = num(17, 2) else { return nil }
        var i = 19
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
        }
        var zone = 0
        if i == b.count {
            zone = 0
        } else if b[i] == UInt8(ascii: "Z") || b[i] == UInt8(ascii: "z") {
            guard i + 1 == b.count else { return nil }
        } else if b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") {
            let sign = b[i] == UInt8(ascii: "-") ? -1 : 1
            guard let zh = num(i + 1, 2) else { return nil }
            var zm = 0
            if i + 3 < b.count, b[i + 3] == UInt8(ascii: ":") {
                guard let m = num(i + 4, 2), i + 6 == b.count else { return nil }
                zm = m
            } else if i + 3 < b.count {
                guard let m = num(i + 3, 2), i + 5 == b.count else { return nil }
                zm = m
            } else if i + 3 != b.count {
                return nil
            }
            zone = sign * (zh * 60 + zm)
        } else {
            return nil
        }
        guard let v = InternalDate.from(year: y, month: mo, day: d, hour: h, minute: mi, second: se, zoneMinutes: zone) else { return nil }
        self = v
    }
}

/// Where a message's INTERNALDATE came from, for a source without one (POP3,
/// or mail files without a date). Reports count each kind.
public enum DateSource: String, Sendable, Codable, Hashable, CaseIterable {
    /// The server or store kept a real INTERNALDATE (IMAP, Maildir mtime, mbox `From ` line).
    case stored
    /// The date of the first (topmost) `Received:` header.
    case received
    /// The `Date:` header.
    case dateHeader = "date"
    /// Nothing usable in the message: the time it was downloaded.
    case downloadTime = "download"
}

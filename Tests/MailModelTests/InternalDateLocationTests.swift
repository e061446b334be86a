import Foundation
import Testing
@testable import MailModel

struct InternalDateTests {
    @Test(arguments: [Int64(0), 1, -1, 59, 86_399, 86_400, -86_400, -86_401, 951_782_400, 1_057_049_557,
                      253_402_300_799, -62_103_974_400, 4_102_444_800, 1_709_251_200])
    func civilRoundTrip(seconds: Int64) throws {
        // Years 1...9999 are representable; the extremes only at UTC.
        let extreme = seconds < -62_000_000_000 || seconds > 253_000_000_000
        for zone in extreme ? [0] : [0, 60, -300, 330, 840, -720] {
            let d = InternalDate(secondsSinceEpoch: seconds, zoneMinutes: zone)
            let c = d.civil
            let back = InternalDate.from(year: c.year, month: c.month, day: c.day, hour: c.hour, minute: c.minute,
                                         second: c.second, zoneMinutes: zone)
            #expect(back?.secondsSinceEpoch == seconds, "\(seconds) @\(zone)")
            let iso = try #require(InternalDate(iso8601: d.iso8601))
            #expect(iso == d && iso.zoneMinutes == zone, "\(d.iso8601)")
        }
    }

    @Test func knownValues() {
        let d = InternalDate(secondsSinceEpoch: 1_057_049_557, zoneMinutes: 120)
        #expect(d.iso8601 == "2003-07-01T10:52:37+02:00")
        #expect(InternalDate(secondsSinceEpoch: 0).iso8601 == "1970-01-01T00:00:00+00:00")
        #expect(InternalDate(secondsSinceEpoch: -1).iso8601 == "1969-12-31T23:59:59+00:00")
        #expect(InternalDate(secondsSinceEpoch: 951_782_400).civil.month == 2)  // 2000-02-29
        #expect(InternalDate(secondsSinceEpoch: 951_782_400).civil.day == 29)
        #expect(InternalDate(secondsSinceEpoch: 0, zoneMinutes: -330).iso8601 == "1969-12-31T18:30:00-05:30")
    }

    @Test(arguments: [
        ("2003-07-01T10:52:37+02:00", Int64(1_057_049_557)), ("2003-07-01T08:52:37Z", 1_057_049_557),
        ("2003-07-01T08:52:37z", 1_057_049_557), ("2003-07-01 08:52:37", 1_057_049_557),
        ("2003-07-01T10:52:37+0200", 1_057_049_557), ("2003-07-01T10:52:37+02", 1_057_049_557),
        ("2003-07-01T08:52:37.123Z", 1_057_049_557), ("2003-07-01", 1_057_017_600),
    ])
    func isoParsing(text: String, seconds: Int64) {
        #expect(InternalDate(iso8601: text)?.secondsSinceEpoch == seconds, "\(text)")
    }

    @Test(arguments: ["", "2003", "2003-13-01", "2003-07-01T25:00:00Z", "2003-07-01T10:52:37+2", "2003-07-01T10:52:37 junk",
                      "2003-07-01T10:52", "20030701", "2003-07-01T10:52:37+02:00x", "０３-07-01"])
    func isoRejects(text: String) {
        #expect(InternalDate(iso8601: text) == nil, "\(text)")
    }

    @Test func equalityIgnoresZoneAndCodableKeepsIt() throws {
        let a = InternalDate(secondsSinceEpoch: 100, zoneMinutes: 60)
        let b = InternalDate(secondsSinceEpoch: 100, zoneMinutes: 0)
        #expect(a == b && a.hashValue == b.hashValue)
        let back = try JSONDecoder().decode(InternalDate.self, from: JSONEncoder().encode(a))
        #expect(back == a && back.zoneMinutes == 60)
        #expect(try JSONDecoder().decode(InternalDate.self, from: Data("1057049557".utf8)).secondsSinceEpoch == 1_057_049_557)
        #expect(InternalDate.from(year: 2024, month: 2, day: 30, hour: 0, minute: 0, second: 0, zoneMinutes: 0) != nil)
        #expect(InternalDate.from(year: 2024, month: 0, day: 1, hour: 0, minute: 0, second: 0, zoneMinutes: 0) == nil)
    }
}

struct StoreLocationTests {
    @Test(arguments: [
        ("imap://alice@mail.example.org", "imap://alice@mail.example.org:143"),
        ("IMAPS://alice@mail.example.org", "imaps://alice@mail.example.org:993"),
        ("pop3://bob@pop.example.org:1110", "pop3://bob@pop.example.org:1110"),
        ("pop3s://bob@pop.example.org/", "pop3s://bob@pop.example.org:995"),
        ("imap://user%40example.com@mail.example.org", "imap://user%40example.com@mail.example.org:143"),
        ("imaps://u@[::1]:9993", "imaps://u@[::1]:9993"),
        ("imaps://u@[2001:db8::1]", "imaps://u@[2001:db8::1]:993"),
        ("imap://j%C3%B6rg@h", "imap://j%C3%B6rg@h:143"),
    ])
    func parsesNetworkURLs(text: String, canonical: String) throws {
        let loc = try StoreLocation(parsing: text)
        #expect(loc.description == canonical)
        #expect(try StoreLocation(parsing: loc.description) == loc)
    }

    @Test func fields() throws {
        let loc = try StoreLocation(parsing: "imap://user%40example.com@[::1]:1143")
        let a = try #require(loc.account)
        #expect(a.user == "user@example.com" && a.host == "::1" && a.port == 1143 && a.tls == .startTLS)
        #expect(try StoreLocation(parsing: "pop3s://u@h").account?.tls == .implicit)
        #expect(try StoreLocation(parsing: "jörg@x".isEmpty ? "" : "imap://j%C3%B6rg@h").account?.user == "jörg")
    }

    @Test(arguments: [("maildir:/var/mail/x", "maildir:/var/mail/x"), ("MAILDIR:rel/dir", "maildir:rel/dir"),
                      ("mbox:///srv/mbox", "mbox:/srv/mbox"), ("archive:/backups/set", "archive:/backups/set")])
    func parsesLocalURLs(text: String, canonical: String) throws {
        let loc = try StoreLocation(parsing: text)
        #expect(loc.description == canonical)
        #expect(!loc.isNetwork)
    }

    @Test func refusesPasswordsWithoutEchoingThem() {
        for text in ["imap://alice:s3cret@mail.example.org", "imaps://alice:s3cr@t@mail.example.org:993", "pop3://:s3cret@h"] {
            do {
                _ = try StoreLocation(parsing: text)
                Issue.record("accepted \(StoreLocation.redact(text))")
            } catch let e as MailError {
                #expect(e.kind == .usage)
                #expect(!e.description.contains("s3cr"))
                #expect(e.description.contains("password"))
                #expect(e.hint?.contains("MAILFERRY_FROM_PASSWORD") == true)
                #expect(e.exitCode == 2)
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
        #expect(StoreLocation.redact("imap://alice:s3cr@t@h") == "imap://alice:***@h")
        #expect(StoreLocation.redact("imap://alice@h") == "imap://alice@h")
    }

    @Test(arguments: ["", "imap://", "imap://host", "imap://@host", "imap://u@", "imap://u@host:0", "imap://u@host:70000",
                      "imap://u@host:abc", "ftp://u@host", "maildir:", "mbox://", "imap://u@[::1", "imap://u@[::1]x",
                      "imap://u%ZZ@h", "imap://u%FF@h", "just-a-path", "imap://u@::1", "imap://u@host/INBOX"])
    func rejects(text: String) {
        #expect(throws: MailError.self, "\(text)") { try StoreLocation(parsing: text) }
    }
}

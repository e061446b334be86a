import MailModel
import Testing
@testable import IMAPCore

/// The byte-level fast path for INTERNALDATE agrees with the general parser.
@Suite struct IMAPDateTimeCanonicalTests {
    @Test(arguments: [
        "01-Jan-2024 09:30:00 +0100", " 1-Feb-2024 00:00:00 -0000", "1-mar-1999 23:59:59 -0530",
        "31-DEC-2099 12:00:00 +1400", "29-Feb-2000 01:02:03 +0000", "07-Jul-1970 00:00:01 -1200",
    ])
    func agreesWithTheGeneralParser(_ text: String) throws {
        let fast = try #require(IMAPDateTime.parseCanonical(Array(text.utf8)))
        let slow = try #require(IMAPDateTime.parse(text))
        #expect(fast == slow)
        #expect(fast.zoneMinutes == slow.zoneMinutes)
    }

    @Test(arguments: ["", "01-Jan-2024", "01-Jan-2024 09:30:00", "01-Foo-2024 09:30:00 +0100",
                      "01-Jan-2024 09:30:00 *0100", "0x-Jan-2024 09:30:00 +0100", "01-Jan-2024T09:30:00 +0100"])
    func leavesAnythingElseToTheGeneralParser(_ text: String) {
        #expect(IMAPDateTime.parseCanonical(Array(text.utf8)) == nil)
    }
}

import IMAPCore
import MailModel
import NIOCore
import Testing

struct CommandEncoderTests {
    static let plain = EncodingOptions()
    static let plus = EncodingOptions(literalPlus: true)
    static let minus = EncodingOptions(literalMinus: true)

    static let table: [(Command, EncodingOptions, [String])] = [
        (.capability, plain, ["A1 CAPABILITY\r\n"]),
        (.login(username: "fred", password: "secret"), plain, ["A1 LOGIN fred \"secret\"\r\n"]),
        (.login(username: "fred@example.com", password: "pa\"ss\\word"), plain, ["A1 LOGIN fred@example.com \"pa\\\"ss\\\\word\"\r\n"]),
        (.login(username: "fred", password: "pässword"), plain, ["A1 LOGIN fred {9}\r\n", "pässword\r\n"]),
        (.login(username: "fred", password: "pässword"), plus, ["A1 LOGIN fred {9+}\r\npässword\r\n"]),
        (.login(username: "fred", password: "pässword"), minus, ["A1 LOGIN fred {9+}\r\npässword\r\n"]),
        (.authenticate(mechanism: "PLAIN", initialResponse: Array("\u{0}fred\u{0}secret".utf8)), plain, ["A1 AUTHENTICATE PLAIN AGZyZWQAc2VjcmV0\r\n"]),
        (.authenticate(mechanism: "PLAIN", initialResponse: []), plain, ["A1 AUTHENTICATE PLAIN =\r\n"]),
        (.authenticate(mechanism: "XOAUTH2", initialResponse: nil), plain, ["A1 AUTHENTICATE XOAUTH2\r\n"]),
        (.enable([.condStore, .qresync]), plain, ["A1 ENABLE CONDSTORE QRESYNC\r\n"]),
        (.id(IDParameters(["name": "mailferry", "version": "1"])), plain, ["A1 ID (\"name\" \"mailferry\" \"version\" \"1\")\r\n"]),
        (.list(reference: MailboxName(bytes: []), pattern: "*", specialUse: true, status: [.messages, .uidValidity]), plain,
         ["A1 LIST \"\" * RETURN (SPECIAL-USE STATUS (MESSAGES UIDVALIDITY))\r\n"]),
        (.select(MailboxName("Entwürfe"), condStore: true), plain, ["A1 SELECT Entw&APw-rfe (CONDSTORE)\r\n"]),
        (.select(MailboxName("Entwürfe", utf8: true)), EncodingOptions(utf8Accept: true), ["A1 SELECT \"Entwürfe\"\r\n"]),
        (.examine(.inbox, qresync: QResyncParameters(uidValidity: 67890007, modSeq: 90060115194045000, knownUIDs: SequenceSet([41...211]))), plain,
         ["A1 EXAMINE INBOX (QRESYNC (67890007 90060115194045000 41:211))\r\n"]),
        (.create(MailboxName("Sent Items"), specialUse: ["\\Sent"]), plain, ["A1 CREATE \"Sent Items\" (USE (\\Sent))\r\n"]),
        (.status(MailboxName("a b"), [.messages, .highestModSeq]), plain, ["A1 STATUS \"a b\" (MESSAGES HIGHESTMODSEQ)\r\n"]),
        (.uidFetch(SequenceSet([1...UInt32.max]), [.uid, .flags, .rfc822Size, .internalDate, .modSeq], changedSince: 12345, vanished: true), plain,
         ["A1 UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE MODSEQ) (CHANGEDSINCE 12345 VANISHED)\r\n"]),
        (.uidFetch(SequenceSet(numbers: [1, 2, 3, 7]), [.body(.complete, peek: true), .body(.headerFields(["MESSAGE-ID", "DATE"]), peek: true, partial: 0...1023)], changedSince: nil, vanished: false), plain,
         ["A1 UID FETCH 1:3,7 (BODY.PEEK[] BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE)]<0.1024>)\r\n"]),
        (.uidFetch(SequenceSet([5...5]), [.binary(section: [], peek: true)], changedSince: nil, vanished: false), plain, ["A1 UID FETCH 5 (BINARY.PEEK[])\r\n"]),
        (.uidSearch(.and([.modSeq(5), .undeleted]), returnOptions: ["ALL"]), plain, ["A1 UID SEARCH RETURN (ALL) (MODSEQ 5 UNDELETED)\r\n"]),
        (.uidSearch(.header("Message-ID", "<a@b>"), returnOptions: nil), plain, ["A1 UID SEARCH HEADER Message-ID \"<a@b>\"\r\n"]),
        (.uidStore(SequenceSet([4...4]), .add, silent: true, flags: [.seen, .forwarded]), plain, ["A1 UID STORE 4 +FLAGS.SILENT (\\Seen $Forwarded)\r\n"]),
        (.uidStore(SequenceSet([4...4]), .replace, silent: false, flags: [], unchangedSince: 9), plain, ["A1 UID STORE 4 (UNCHANGEDSINCE 9) FLAGS ()\r\n"]),
        (.uidExpunge(SequenceSet([3...5, 9...9])), plain, ["A1 UID EXPUNGE 3:5,9\r\n"]),
        (.idle, plain, ["A1 IDLE\r\n"]),
        (.logout, plain, ["A1 LOGOUT\r\n"]),
    ]

    @Test(arguments: table)
    func encodes(_ row: (Command, EncodingOptions, [String])) {
        let enc = row.0.encode(tag: "A1", options: row.1)
        #expect(enc.parts.map { String(buffer: $0) } == row.2)
    }

    @Test func appendHeaders() {
        let date = InternalDate.from(year: 2024, month: 3, day: 1, hour: 9, minute: 5, second: 0, zoneMinutes: 60)!
        let m = AppendWriter.Message(flags: [.seen, Flag("Work")], internalDate: date, size: 1234)
        let plus = AppendWriter.messageHeader(tag: "A7", mailbox: MailboxName("Entwürfe"), message: m, options: Self.plus)
        #expect(plus.parts.map { String(buffer: $0) } == ["A7 APPEND Entw&APw-rfe (\\Seen Work) \"01-Mar-2024 09:05:00 +0100\" {1234+}\r\n"])
        let sync = AppendWriter.messageHeader(tag: "A7", mailbox: .inbox, message: m, options: Self.plain)
        #expect(sync.parts.map { String(buffer: $0) } == ["A7 APPEND INBOX (\\Seen Work) \"01-Mar-2024 09:05:00 +0100\" {1234}\r\n", ""])
        // LITERAL- allows non-synchronising literals only up to 4096 bytes.
        let big = AppendWriter.Message(flags: [], internalDate: nil, size: 5000)
        #expect(AppendWriter.messageHeader(tag: "A8", mailbox: .inbox, message: big, options: Self.minus).needsContinuation)
        let small = AppendWriter.Message(flags: [], internalDate: nil, size: 4096)
        #expect(!AppendWriter.messageHeader(tag: "A8", mailbox: .inbox, message: small, options: Self.minus).needsContinuation)
        let binary = AppendWriter.Message(flags: [], internalDate: nil, size: 10, binary: true)
        #expect(String(buffer: AppendWriter.messageHeader(tag: nil, mailbox: .inbox, message: binary, options: Self.plus).parts[0]) == " ~{10+}\r\n")
        // A message the server may refuse for its command line waits for "+" even with LITERAL+.
        let risky = AppendWriter.Message(flags: [Flag(String(repeating: "k", count: 60))], internalDate: nil, size: 103, synchronizing: true)
        for options in [Self.plus, Self.minus, Self.plain] {
            let h = AppendWriter.messageHeader(tag: "A9", mailbox: .inbox, message: risky, options: options)
            #expect(h.parts.map { String(buffer: $0) } == ["A9 APPEND INBOX (\(String(repeating: "k", count: 60))) {103}\r\n", ""])
        }
    }

    @Test(arguments: ["01-Jan-2024 00:00:00 +0000", " 1-Feb-1999 23:59:59 -0800", "29-Feb-2024 12:30:45 +0530"])
    func dateTimeRoundTrips(_ text: String) throws {
        let d = try #require(IMAPDateTime.parse(text))
        let formatted = IMAPDateTime.format(d)
        #expect(IMAPDateTime.parse(String(formatted.dropFirst().dropLast())) == d)
        #expect(IMAPDateTime.parse(String(formatted.dropFirst().dropLast()))?.zoneMinutes == d.zoneMinutes)
    }

    @Test func base64() {
        #expect(Base64.encode(Array("\u{0}user\u{0}pass".utf8)) == "AHVzZXIAcGFzcw==")
        #expect(Base64.decode("AHVzZXIAcGFzcw==") == Array("\u{0}user\u{0}pass".utf8))
        #expect(Base64.decode("!!") == nil)
    }

    @Test func sequenceSetCompresses() {
        #expect(SequenceSet(numbers: [5, 1, 2, 3, 9, 10]).description == "1:3,5,9:10")
        let many = SequenceSet(numbers: stride(from: 1, to: 20_000, by: 2).map { UInt32($0) })
        let chunks = many.chunked(maxLength: 1000)
        #expect(chunks.allSatisfy { $0.description.utf8.count <= 1000 })
        #expect(chunks.reduce(0) { $0 + $1.count } == many.count)
    }
}

import IMAPCore
import MailModel
import NIOCore
import Testing

struct ResponseParserTests {
    static let fixtures: [(String, [Ev])] = [
        ("* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE AUTH=PLAIN] Dovecot ready.\r\n",
         [.response(.untagged(.condition(StatusResponse(.ok, code: .capability([.imap4rev1, .saslIR, .literalPlus, .id, .enable, .idle, .auth("PLAIN")]), text: "Dovecot ready."))))]),
        ("* PREAUTH IMAP4rev1 server logged in as Smith\r\n",
         [.response(.untagged(.condition(StatusResponse(.preauth, text: "IMAP4rev1 server logged in as Smith"))))]),
        ("* BYE Autologout; idle for too long\r\n",
         [.response(.untagged(.condition(StatusResponse(.bye, text: "Autologout; idle for too long"))))]),
        ("A1 OK LOGIN completed\r\n", [.response(.tagged(tag: "A1", StatusResponse(.ok, text: "LOGIN completed")))]),
        ("A2 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
         [.response(.tagged(tag: "A2", StatusResponse(.no, code: .authenticationFailed, text: "Authentication failed.")))]),
        ("A3 BAD Error in IMAP command: Unknown command.\r\n",
         [.response(.tagged(tag: "A3", StatusResponse(.bad, text: "Error in IMAP command: Unknown command.")))]),
        ("A4 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n",
         [.response(.tagged(tag: "A4", StatusResponse(.no, code: .overQuota, text: "Quota exceeded (mailbox for user is full)")))]),
        ("A5 NO [LIMIT] Too many messages\r\n", [.response(.tagged(tag: "A5", StatusResponse(.no, code: .limit, text: "Too many messages")))]),
        ("A5 NO [UNAVAILABLE] Try later\r\n", [.response(.tagged(tag: "A5", StatusResponse(.no, code: .unavailable, text: "Try later")))]),
        ("A5 NO [EXPIRED] Password expired\r\n", [.response(.tagged(tag: "A5", StatusResponse(.no, code: .expired, text: "Password expired")))]),
        ("A5 NO [INUSE] Mailbox in use\r\n", [.response(.tagged(tag: "A5", StatusResponse(.no, code: .inUse, text: "Mailbox in use")))]),
        ("A5 NO [SERVERBUG] Internal error\r\n", [.response(.tagged(tag: "A5", StatusResponse(.no, code: .serverBug, text: "Internal error")))]),
        ("A5 NO [CONTACTADMIN] Call us\r\n", [.response(.tagged(tag: "A5", StatusResponse(.no, code: .contactAdmin, text: "Call us")))]),
        ("A5 NO [THROTTLED] Slow down\r\n", [.response(.tagged(tag: "A5", StatusResponse(.no, code: .throttled, text: "Slow down")))]),
        ("A6 OK [APPENDUID 38505 3955] APPEND completed\r\n",
         [.response(.tagged(tag: "A6", StatusResponse(.ok, code: .appendUID(uidValidity: 38505, uids: SequenceSet([3955...3955])), text: "APPEND completed")))]),
        ("A7 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n",
         [.response(.tagged(tag: "A7", StatusResponse(.ok, code: .copyUID(uidValidity: 38505, source: SequenceSet([304...304, 319...320]), destination: SequenceSet([3956...3958])), text: "Done")))]),
        ("* OK [UIDVALIDITY 3857529045] UIDs valid\r\n", [.response(.untagged(.condition(StatusResponse(.ok, code: .uidValidity(3857529045), text: "UIDs valid"))))]),
        ("* OK [UIDNEXT 4392] Predicted next UID\r\n", [.response(.untagged(.condition(StatusResponse(.ok, code: .uidNext(4392), text: "Predicted next UID"))))]),
        ("* OK [HIGHESTMODSEQ 715194045007] Highest\r\n", [.response(.untagged(.condition(StatusResponse(.ok, code: .highestModSeq(715194045007), text: "Highest"))))]),
        ("* OK [NOMODSEQ] Sorry, this mailbox format doesn't support modsequences\r\n",
         [.response(.untagged(.condition(StatusResponse(.ok, code: .noModSeq, text: "Sorry, this mailbox format doesn't support modsequences"))))]),
        ("* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n",
         [.response(.untagged(.condition(StatusResponse(.ok, code: .permanentFlags([.deleted, .seen, Flag("\\*")]), text: "Limited"))))]),
        ("A8 OK [READ-WRITE] SELECT completed\r\n", [.response(.tagged(tag: "A8", StatusResponse(.ok, code: .readWrite, text: "SELECT completed")))]),
        ("A8 OK [READ-ONLY] EXAMINE completed\r\n", [.response(.tagged(tag: "A8", StatusResponse(.ok, code: .readOnly, text: "EXAMINE completed")))]),
        ("* NO [ALERT] System shutdown in 10 minutes\r\n", [.response(.untagged(.condition(StatusResponse(.no, code: .alert, text: "System shutdown in 10 minutes"))))]),
        ("A9 NO [TRYCREATE] Mailbox doesn't exist: Foo\r\n", [.response(.tagged(tag: "A9", StatusResponse(.no, code: .tryCreate, text: "Mailbox doesn't exist: Foo")))]),
        ("A9 OK [X-SOMETHING 1 2 3] fine\r\n", [.response(.tagged(tag: "A9", StatusResponse(.ok, code: .other(name: "X-SOMETHING", text: "1 2 3"), text: "fine")))]),
        ("+ Ready for literal data\r\n", [.response(.continuation("Ready for literal data"))]),
        ("+ \r\n", [.response(.continuation(""))]),
        ("+\r\n", [.response(.continuation(""))]),
        ("* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n", [.response(.untagged(.capability([.imap4rev1, .startTLS, .loginDisabled])))]),
        ("* 172 EXISTS\r\n", [.response(.untagged(.exists(172)))]),
        ("* 1 RECENT\r\n", [.response(.untagged(.recent(1)))]),
        ("* 22 EXPUNGE\r\n", [.response(.untagged(.expunge(22)))]),
        ("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)\r\n",
         [.response(.untagged(.flags([.answered, .flagged, .deleted, .seen, .draft, .forwarded])))]),
        ("* LIST (\\HasNoChildren) \".\" INBOX\r\n",
         [.response(.untagged(.list(MailboxListItem(attributes: ["\\HasNoChildren"], separator: ".", name: .inbox))))]),
        ("* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent Items\"\r\n",
         [.response(.untagged(.list(MailboxListItem(attributes: ["\\HasNoChildren", "\\Sent"], separator: "/", name: MailboxName("Sent Items")))))]),
        ("* LIST (\\Noselect) NIL \"\"\r\n",
         [.response(.untagged(.list(MailboxListItem(attributes: ["\\Noselect"], separator: nil, name: MailboxName(bytes: [])))))]),
        ("* LIST () \"\\\\\" {5}\r\nab\"cd\r\n",
         [.response(.untagged(.list(MailboxListItem(attributes: [], separator: "\\", name: MailboxName(bytes: bytes("ab\"cd"))))))]),
        ("* LIST (\\Subscribed) \"/\" \"Foo\" (CHILDINFO (\"SUBSCRIBED\"))\r\n",
         [.response(.untagged(.list(MailboxListItem(attributes: ["\\Subscribed"], separator: "/", name: MailboxName("Foo"), extended: ["CHILDINFO": ["SUBSCRIBED"]]))))]),
        ("* LIST (\\HasNoChildren) \"/\" \"&AMk-t&AOk-\"\r\n",
         [.response(.untagged(.list(MailboxListItem(attributes: ["\\HasNoChildren"], separator: "/", name: MailboxName("Été")))))]),
        ("* LSUB () \".\" #news.comp.mail.misc\r\n",
         [.response(.untagged(.lsub(MailboxListItem(attributes: [], separator: ".", name: MailboxName("#news.comp.mail.misc")))))]),
        ("* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292 HIGHESTMODSEQ 7011231777)\r\n",
         [.response(.untagged(.status(MailboxName("blurdybloop"), MailboxStatus(messages: 231, uidNext: 44292, highestModSeq: 7011231777))))]),
        ("* SEARCH 2 84 882\r\n", [.response(.untagged(.search(SearchResponse(numbers: [2, 84, 882]))))]),
        ("* SEARCH\r\n", [.response(.untagged(.search(SearchResponse(numbers: []))))]),
        ("* SEARCH 2 5 6 7 11 12 18 19 20 23 (MODSEQ 917162500)\r\n",
         [.response(.untagged(.search(SearchResponse(numbers: [2, 5, 6, 7, 11, 12, 18, 19, 20, 23], highestModSeq: 917162500))))]),
        ("* ESEARCH (TAG \"A285\") UID MIN 7 MAX 3800\r\n", [.response(.untagged(.esearch(ExtendedSearchResponse(tag: "A285", uid: true, min: 7, max: 3800))))]),
        ("* ESEARCH (TAG \"A284\") UID ALL 4:18,21,28 COUNT 17\r\n",
         [.response(.untagged(.esearch(ExtendedSearchResponse(tag: "A284", uid: true, all: SequenceSet([4...18, 21...21, 28...28]), count: 17))))]),
        ("* VANISHED (EARLIER) 41,43:116,118,120:211,214:540\r\n",
         [.response(.untagged(.vanished(earlier: true, SequenceSet([41...41, 43...116, 118...118, 120...211, 214...540]))))]),
        ("* VANISHED 405,407,410,425\r\n", [.response(.untagged(.vanished(earlier: false, SequenceSet([405...405, 407...407, 410...410, 425...425]))))]),
        ("* ENABLED CONDSTORE QRESYNC\r\n", [.response(.untagged(.enabled([.condStore, .qresync])))]),
        ("* ID (\"name\" \"Dovecot\" \"version\" NIL)\r\n", [.response(.untagged(.id(IDParameters(["name": "Dovecot", "version": nil]))))]),
        ("* ID NIL\r\n", [.response(.untagged(.id(IDParameters())))]),
        ("* NAMESPACE ((\"\" \"/\")) ((\"~\" \"/\")) ((\"#shared/\" \"/\")(\"#public/\" \"/\"))\r\n",
         [.response(.untagged(.namespace(NamespaceResponse(
             personal: [.init(prefix: MailboxName(bytes: []), separator: "/")],
             otherUsers: [.init(prefix: MailboxName("~"), separator: "/")],
             shared: [.init(prefix: MailboxName("#shared/"), separator: "/"), .init(prefix: MailboxName("#public/"), separator: "/")]))))]),
        ("* NAMESPACE ((\"INBOX.\" \".\")) NIL NIL\r\n",
         [.response(.untagged(.namespace(NamespaceResponse(personal: [.init(prefix: MailboxName("INBOX."), separator: ".")]))))]),
        ("* QUOTA \"\" (STORAGE 10 512)\r\n", [.response(.untagged(.other(name: "QUOTA")))]),
        ("* 3 FETCH (UID 17 FLAGS (\\Seen $Label1) RFC822.SIZE 44827 INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" MODSEQ (12121231000))\r\n",
         [.fetchStart(3), .attr(.uid(17)), .attr(.flags([.seen, Flag("$Label1")])), .attr(.rfc822Size(44827)),
          .attr(.internalDate(InternalDate.from(year: 1996, month: 7, day: 17, hour: 2, minute: 44, second: 25, zoneMinutes: -420)!)),
          .attr(.modSeq(12121231000)), .fetchEnd]),
        ("* 12 FETCH (BODY[HEADER] {15}\r\nSubject: hi\r\n\r\n UID 5)\r\n",
         [.fetchStart(12), .body(.body(section: .header, origin: nil), bytes("Subject: hi\r\n\r\n")), .attr(.uid(5)), .fetchEnd]),
        ("* 1 FETCH (UID 9 BODY[] {0}\r\n)\r\n", [.fetchStart(1), .attr(.uid(9)), .body(.body(section: .complete, origin: nil), []), .fetchEnd]),
        ("* 1 FETCH (BODY[1.2.TEXT]<100> \"abc\")\r\n",
         [.fetchStart(1), .body(.body(section: SectionSpecifier(part: [1, 2], text: .text), origin: 100), bytes("abc")), .fetchEnd]),
        ("* 1 FETCH (BODY[HEADER.FIELDS (MESSAGE-ID DATE)] NIL)\r\n",
         [.fetchStart(1), .body(.body(section: .headerFields(["MESSAGE-ID", "DATE"]), origin: nil), []), .fetchEnd]),
        ("* 1 FETCH (BINARY[] ~{3}\r\na\u{0}b)\r\n", [.fetchStart(1), .body(.binary(section: [], origin: nil), [0x61, 0, 0x62]), .fetchEnd]),
        ("* 1 FETCH (RFC822 {2}\r\nhi)\r\n", [.fetchStart(1), .body(.rfc822, bytes("hi")), .fetchEnd]),
        ("* 2 FETCH (ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev1 WG mtg summary\" ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) NIL NIL NIL NIL NIL NIL \"<B27397-0100000@cac.washington.edu>\") BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3028 92) UID 4)\r\n",
         [.fetchStart(2), .attr(.other("ENVELOPE")), .attr(.other("BODYSTRUCTURE")), .attr(.uid(4)), .fetchEnd]),
        ("* 5 FETCH (FLAGS ())\r\n", [.fetchStart(5), .attr(.flags([])), .fetchEnd]),
        ("* 5 FETCH (BINARY.SIZE[] 1024)\r\n", [.fetchStart(5), .attr(.binarySize(section: [], size: 1024)), .fetchEnd]),
    ]

    @Test(arguments: fixtures, Feed.allCases)
    func parsesFixture(_ fixture: (String, [Ev]), feed: Feed) throws {
        let got = try parse(fixture.0, feed: feed)
        #expect(got == fixture.1, "\(fixture.0)")
    }

    @Test func bareLineFeedIsTolerated() throws {
        #expect(try parse("A1 OK done\n") == [.response(.tagged(tag: "A1", StatusResponse(.ok, text: "done")))])
    }

    @Test func partialInputIsNotAnError() throws {
        var p = ResponseParser()
        p.append(ByteBuffer(string: "* 1 FETCH (UID 1"))
        // Nothing until the first line is complete.
        #expect(try p.next() == nil)
        p.append(ByteBuffer(string: "2 BODY[] {10}\r\n01234"))
        #expect(try p.next() == .fetchStart(sequenceNumber: 1))
        #expect(try p.next() == .fetchAttribute(.uid(12)))
        #expect(try p.next() == .streamingBegin(.body(section: .complete, origin: nil), byteCount: 10))
        #expect(try p.next() == .streamingBytes(ByteBuffer(string: "01234")))
        #expect(try p.next() == nil)
        p.append(ByteBuffer(string: "56789)\r\n"))
        #expect(try p.next() == .streamingBytes(ByteBuffer(string: "56789")))
        #expect(try p.next() == .streamingEnd)
        #expect(try p.next() == .fetchEnd)
        #expect(try p.next() == nil)
        #expect(p.isAtResponseBoundary)
    }

    @Test func largeLiteralStreamsWithoutBeingHeld() throws {
        var p = ResponseParser()
        let size = 5_000_000
        p.append(ByteBuffer(string: "* 1 FETCH (BODY[] {\(size)}\r\n"))
        #expect(try p.next() == .fetchStart(sequenceNumber: 1))
        #expect(try p.next() == .streamingBegin(.body(section: .complete, origin: nil), byteCount: Int64(size)))
        var got = 0
        var maxBuffered = 0
        let chunk = ByteBuffer(repeating: UInt8(ascii: "x"), count: 65536)
        var sent = 0
        while sent < size {
            let n = min(65536, size - sent)
            p.append(chunk.getSlice(at: 0, length: n)!)
            sent += n
            maxBuffered = max(maxBuffered, p.bufferedByteCount)
            while let e = try p.next() {
                if case .streamingBytes(let b) = e { got += b.readableBytes } else { #expect(e == .streamingEnd) }
            }
        }
        p.append(ByteBuffer(string: ")\r\n"))
        #expect(try p.next() == .fetchEnd)
        #expect(got == size)
        #expect(maxBuffered <= 65536)
    }

    @Test func pipelinedResponsesInOneBuffer() throws {
        let s = "* 1 FETCH (UID 1 BODY[] {3}\r\nabc)\r\n* 2 FETCH (UID 2 BODY[] {3}\r\ndef)\r\nA1 OK done\r\n"
        let got = try parse(s)
        #expect(got == [.fetchStart(1), .attr(.uid(1)), .body(.body(section: .complete, origin: nil), bytes("abc")), .fetchEnd,
                        .fetchStart(2), .attr(.uid(2)), .body(.body(section: .complete, origin: nil), bytes("def")), .fetchEnd,
                        .response(.tagged(tag: "A1", StatusResponse(.ok, text: "done")))])
    }
}

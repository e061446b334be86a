import IMAPCore
import MailModel
import NIOCore
import Testing

/// Encoding a value and parsing it back gives the same value.
struct RoundTripTests {
    static let responses: [Response] = [
        .tagged(tag: "A1", StatusResponse(.ok, code: .appendUID(uidValidity: 7, uids: SequenceSet([3...3])), text: "done")),
        .tagged(tag: "x.9", StatusResponse(.no, code: .overQuota, text: "full")),
        .tagged(tag: "A2", StatusResponse(.bad, text: "what")),
        .tagged(tag: "A3", StatusResponse(.ok, code: .copyUID(uidValidity: 1, source: SequenceSet([1...4]), destination: SequenceSet([9...12])), text: "c")),
        .tagged(tag: "A4", StatusResponse(.no, code: .badCharset(["UTF-8", "US-ASCII"]), text: "cs")),
        .untagged(.condition(StatusResponse(.ok, code: .capability([.imap4rev1, .literalPlus, .auth("XOAUTH2")]), text: "hi"))),
        .untagged(.condition(StatusResponse(.ok, code: .permanentFlags([.seen, .deleted, Flag("\\*")]), text: "pf"))),
        .untagged(.condition(StatusResponse(.ok, code: .highestModSeq(1 << 40), text: "m"))),
        .untagged(.condition(StatusResponse(.bye, text: "bye"))),
        .untagged(.condition(StatusResponse(.ok, code: .uidNext(5), text: "u"))),
        .untagged(.condition(StatusResponse(.no, code: .authenticationFailed, text: "nope"))),
        .untagged(.condition(StatusResponse(.no, code: .throttled, text: "slow"))),
        .untagged(.capability([.imap4rev1, .idle, .qresync])),
        .untagged(.enabled([.utf8Accept])),
        .untagged(.list(MailboxListItem(attributes: ["\\HasChildren"], separator: "/", name: MailboxName("Archiv/Größe")))),
        .untagged(.list(MailboxListItem(attributes: [], separator: "\\", name: MailboxName("a\\b")))),
        .untagged(.list(MailboxListItem(attributes: ["\\Drafts"], separator: nil, name: MailboxName("日本語 & more")))),
        .untagged(.list(MailboxListItem(attributes: [], separator: ".", name: MailboxName(bytes: bytes("line\r\nbreak"))))),
        .untagged(.status(MailboxName("Über"), MailboxStatus(messages: 3, uidNext: 9, uidValidity: 1, unseen: 0, highestModSeq: 77))),
        .untagged(.flags([.seen, .answered, Flag("Work")])),
        .untagged(.exists(0)), .untagged(.recent(3)), .untagged(.expunge(9)),
        .untagged(.search(SearchResponse(numbers: [1, 5, 9], highestModSeq: 4))),
        .untagged(.esearch(ExtendedSearchResponse(tag: "A9", uid: true, all: SequenceSet([1...3, 7...7]), count: 4))),
        .untagged(.vanished(earlier: true, SequenceSet([1...9]))),
        .untagged(.id(IDParameters(["name": "x", "os": nil]))),
        .untagged(.namespace(NamespaceResponse(personal: [.init(prefix: MailboxName("INBOX."), separator: ".")]))),
        .continuation("go ahead"),
    ]

    @Test(arguments: responses)
    func responseRoundTrips(_ r: Response) throws {
        var b = ByteBuffer()
        r.write(to: &b)
        for feed in Feed.allCases {
            #expect(try parse(Array(b.readableBytesView), feed: feed) == [.response(r)])
        }
    }

    static let fetches: [([FetchAttribute], (StreamingKind, [UInt8])?)] = [
        ([.uid(5), .flags([.seen, Flag("$Forwarded")]), .rfc822Size(1234), .modSeq(99)], nil),
        ([.internalDate(InternalDate.from(year: 2024, month: 2, day: 29, hour: 23, minute: 59, second: 1, zoneMinutes: 330)!)], nil),
        ([.gmailMessageID(1278455344230334865), .gmailThreadID(1266894439832287888), .gmailLabels(["\\Inbox", "Work stuff", "Ärger"])], nil),
        ([.uid(1)], (.body(section: .complete, origin: nil), Array("Subject: x\r\n\r\nbody\r\n".utf8))),
        ([.uid(2)], (.binary(section: [], origin: nil), [0, 1, 2, 0x0D, 0x0A, 0])),
        ([], (.body(section: .headerFields(["MESSAGE-ID", "DATE", "FROM", "RECEIVED"]), origin: nil), Array("Date: x\r\n\r\n".utf8))),
    ]

    @Test(arguments: fetches)
    func fetchRoundTrips(_ f: ([FetchAttribute], (StreamingKind, [UInt8])?)) throws {
        var b = ByteBuffer()
        FetchResponseWriter.write(sequenceNumber: 7, attributes: f.0, body: f.1, literal8: f.1.map { $0.1.contains(0) } ?? false, to: &b)
        var expected: [Ev] = [.fetchStart(7)] + f.0.map { .attr($0) }
        if let body = f.1 { expected.append(.body(body.0, body.1)) }
        expected.append(.fetchEnd)
        for feed in Feed.allCases {
            #expect(try parse(Array(b.readableBytesView), feed: feed) == expected)
        }
    }
}

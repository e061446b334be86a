import IMAPCore
import MailModel
import NIOCore
import Testing

/// Server sides of real sessions. The Gmail and Exchange ones are written
/// from the examples their vendors publish (Google's "IMAP Extensions" page,
/// Microsoft's Exchange Online IMAP notes); the Dovecot one is a session with
/// the test fixture's Dovecot 2.3.
enum Transcripts {
    static let gmail = """
    * OK Gimap ready for requests from 192.0.2.1 h4mb12345678qkb
    * CAPABILITY IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 UIDPLUS COMPRESS=DEFLATE ENABLE MOVE CONDSTORE ESEARCH UTF8=ACCEPT LIST-EXTENDED LIST-STATUS LITERAL- SPECIAL-USE APPENDLIMIT=35651584
    a1 OK user@gmail.com authenticated (Success)
    * LIST (\\HasNoChildren) "/" "INBOX"
    * LIST (\\HasChildren \\Noselect) "/" "[Gmail]"
    * LIST (\\All \\HasNoChildren) "/" "[Gmail]/All Mail"
    * LIST (\\Drafts \\HasNoChildren) "/" "[Gmail]/Drafts"
    * LIST (\\HasNoChildren \\Important) "/" "[Gmail]/Important"
    * LIST (\\HasNoChildren \\Sent) "/" "[Gmail]/Sent Mail"
    * LIST (\\HasNoChildren \\Junk) "/" "[Gmail]/Spam"
    * LIST (\\Flagged \\HasNoChildren) "/" "[Gmail]/Starred"
    * LIST (\\HasNoChildren \\Trash) "/" "[Gmail]/Trash"
    a2 OK Success
    * FLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen $NotPhishing $Phishing)
    * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen $NotPhishing $Phishing \\*)] Flags permitted.
    * OK [UIDVALIDITY 1] UIDs valid.
    * 3 EXISTS
    * 0 RECENT
    * OK [UIDNEXT 6] Predicted next UID.
    * OK [HIGHESTMODSEQ 4235] 
    a3 OK [READ-WRITE] INBOX selected. (Success)
    * 1 FETCH (X-GM-THRID 1278455344230334865 X-GM-MSGID 1278455344230334865 X-GM-LABELS (\\Inbox \\Sent Important "Muy Importante") UID 4 MODSEQ (4123))
    * 2 FETCH (X-GM-THRID 1266894439832287888 X-GM-MSGID 1266894439832287888 X-GM-LABELS (\\Inbox {4}
    foo1 bar) UID 5 MODSEQ (4235))
    a4 OK Success
    a5 NO [ALERT] Please log in via your web browser: https://support.google.com/mail/accounts/answer/78754 (Failure)
    * BYE System Error
    """

    static let exchange = """
    * OK The Microsoft Exchange IMAP4 service is ready. [TQBXADIAUABSADEAMwBDAEEAMAAwADAANQAuAG4AYQBtAHAAcgBkADEAMwAuAHAAcgBvAGQALgBvAHUAdABsAG8AbwBrAC4AYwBvAG0A]
    * CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+
    A1 OK CAPABILITY completed.
    + 
    A2 NO AUTHENTICATE failed.
    A3 OK AUTHENTICATE completed.
    * LIST (\\HasNoChildren) "/" Archive
    * LIST (\\HasNoChildren \\Trash) "/" "Deleted Items"
    * LIST (\\HasNoChildren \\Sent) "/" "Sent Items"
    * LIST (\\Marked \\HasNoChildren \\Junk) "/" "Junk Email"
    * LIST (\\HasNoChildren \\Drafts) "/" Drafts
    * LIST (\\Marked \\HasNoChildren) "/" INBOX
    A4 OK LIST completed.
    * 12 EXISTS
    * 0 RECENT
    * FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $MDNSent)
    * OK [PERMANENTFLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $MDNSent)] Permanent flags
    * OK [UNSEEN 3] Is the first unseen message
    * OK [UIDVALIDITY 14] UIDVALIDITY value
    * OK [UIDNEXT 103] The next unique identifier value
    A5 OK [READ-WRITE] SELECT completed.
    * 1 FETCH (UID 87 RFC822.SIZE 6112 FLAGS (\\Seen) INTERNALDATE "12-Jun-2023 08:02:46 +0000")
    A6 OK FETCH completed.
    A7 NO [OVERQUOTA] APPEND failed. Mailbox size limit exceeded.
    A8 NO Request is throttled. Suggested Backoff Time: 192375 milliseconds
    A9 BAD User is authenticated but not connected.
    * BYE Connection closed. 14
    """

    static let dovecot = """
    * OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot (Debian) ready.
    a1 OK Pre-login capabilities listed, post-login capabilities have more.
    a2 OK Begin TLS negotiation now.
    * CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE
    a3 OK Logged in
    * ID ("name" "Dovecot")
    a4 OK ID completed (0.001 + 0.000 secs).
    * ENABLED CONDSTORE QRESYNC
    a5 OK Enabled.
    * NAMESPACE (("" "/")) NIL NIL
    a6 OK Namespace completed (0.001 + 0.000 secs).
    * LIST (\\HasChildren) "/" Archiv
    * STATUS Archiv (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 1732233600 HIGHESTMODSEQ 1)
    * LIST (\\HasNoChildren) "/" Archiv/Gr&APYA3w-e
    * STATUS Archiv/Gr&APYA3w-e (MESSAGES 2 UIDNEXT 3 UIDVALIDITY 1732233601 HIGHESTMODSEQ 4)
    * LIST (\\HasNoChildren \\Sent) "/" Sent
    * LIST (\\HasNoChildren) "/" INBOX
    * STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 1732233599 HIGHESTMODSEQ 2)
    a7 OK List completed (0.001 + 0.000 secs).
    a8 OK [APPENDUID 1732233601 3] Append completed (0.004 + 0.000 + 0.003 secs).
    * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft Work $Forwarded)
    * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft Work $Forwarded \\*)] Flags permitted.
    * 3 EXISTS
    * 0 RECENT
    * OK [UIDVALIDITY 1732233601] UIDs valid
    * OK [UIDNEXT 4] Predicted next UID
    * OK [HIGHESTMODSEQ 6] Highest
    a9 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).
    * 1 FETCH (UID 1 RFC822.SIZE 18 FLAGS (\\Seen) INTERNALDATE "01-Mar-2024 09:05:00 +0100" MODSEQ (3) BODY[] {20}
    Subject: a

    body
    )
    * 3 FETCH (UID 3 MODSEQ (6) FLAGS (Work))
    * VANISHED (EARLIER) 2
    a10 OK Fetch completed (0.001 + 0.000 secs).
    a11 NO [AUTHENTICATIONFAILED] Authentication failed.
    a12 NO [TRYCREATE] Mailbox doesn't exist: Nope
    a13 BAD Error in IMAP command UID FETCH: Invalid uidset (0.001 + 0.000 secs).
    * BYE Logging out
    a14 OK Logout completed (0.001 + 0.000 secs).
    """

    /// Turns the readable form into wire bytes (every line CRLF-terminated).
    static func wire(_ s: String) -> [UInt8] {
        Array(s.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\r\n").utf8) + [0x0D, 0x0A]
    }
}

struct TranscriptTests {
    @Test(arguments: Feed.allCases)
    func gmail(feed: Feed) throws {
        let ev = try parse(Transcripts.wire(Transcripts.gmail), feed: feed)
        let lists = ev.compactMap { e -> MailboxListItem? in if case .response(.untagged(.list(let l))) = e { return l }; return nil }
        #expect(lists.count == 9)
        #expect(lists.first(where: { $0.hasAttribute("\\Sent") })?.name.decoded() == "[Gmail]/Sent Mail")
        #expect(lists.first(where: { $0.name.decoded() == "[Gmail]" })?.isSelectable == false)
        #expect(ev.contains(.attr(.gmailLabels(["\\Inbox", "\\Sent", "Important", "Muy Importante"]))))
        #expect(ev.contains(.attr(.gmailLabels(["\\Inbox", "foo1", "bar"]))))
        #expect(ev.contains(.attr(.gmailThreadID(1266894439832287888))))
        #expect(ev.contains(.response(.untagged(.condition(StatusResponse(.ok, code: .highestModSeq(4235), text: ""))))))
        #expect(ev.last == .response(.untagged(.condition(StatusResponse(.bye, text: "System Error")))))
        #expect(ev.filter { if case .fetchEnd = $0 { return true }; return false }.count == 2)
    }

    @Test(arguments: Feed.allCases)
    func exchange(feed: Feed) throws {
        let ev = try parse(Transcripts.wire(Transcripts.exchange), feed: feed)
        #expect(ev.filter { if case .response(.tagged) = $0 { return true }; return false }.count == 9)
        #expect(ev.contains(.response(.continuation(""))))
        #expect(ev.contains(.response(.tagged(tag: "A7", StatusResponse(.no, code: .overQuota, text: "APPEND failed. Mailbox size limit exceeded.")))))
        #expect(ev.contains(.attr(.internalDate(InternalDate.from(year: 2023, month: 6, day: 12, hour: 8, minute: 2, second: 46, zoneMinutes: 0)!))))
        #expect(ev.contains(.response(.untagged(.condition(StatusResponse(.ok, code: .unseen(3), text: "Is the first unseen message"))))))
    }

    @Test(arguments: Feed.allCases)
    func dovecot(feed: Feed) throws {
        let ev = try parse(Transcripts.wire(Transcripts.dovecot), feed: feed)
        #expect(ev.contains(.response(.untagged(.status(MailboxName("Archiv/Größe"), MailboxStatus(messages: 2, uidNext: 3, uidValidity: 1732233601, highestModSeq: 4))))))
        #expect(ev.contains(.body(.body(section: .complete, origin: nil), Array("Subject: a\r\n\r\nbody\r\n".utf8))))
        #expect(ev.contains(.response(.untagged(.vanished(earlier: true, SequenceSet([2...2]))))))
        #expect(ev.contains(.response(.tagged(tag: "a8", StatusResponse(.ok, code: .appendUID(uidValidity: 1732233601, uids: SequenceSet([3...3])), text: "Append completed (0.004 + 0.000 + 0.003 secs).")))))
        #expect(ev.last == .response(.tagged(tag: "a14", StatusResponse(.ok, text: "Logout completed (0.001 + 0.000 secs)."))))
    }
}

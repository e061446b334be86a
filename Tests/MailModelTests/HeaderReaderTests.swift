import Foundation
import Testing
@testable import MailModel
import MailTestSupport

struct HeaderReaderTests {
    func read(_ s: String) -> HeaderSummary { HeaderReader.read(Array(s.utf8)) }

    @Test func basicCRLF() {
        let h = read("Received: from a by b; Tue, 1 Jul 2003 10:52:37 +0200\r\nReceived: from c by d; Mon, 30 Jun 2003 10:00:00 +0000\r\nFrom: A <a@x>\r\nDate: Tue, 1 Jul 2003 10:50:00 +0200\r\nMessage-ID: <id@x>\r\n\r\nbody\r\nDate: not this one\r\n")
        #expect(h.messageID == "<id@x>")
        #expect(h.from == "A <a@x>")
        #expect(h.dateRaw == "Tue, 1 Jul 2003 10:50:00 +0200")
        #expect(h.date?.secondsSinceEpoch == 1_057_049_400)
        #expect(h.date?.zoneMinutes == 120)
        #expect(h.firstReceivedDate?.secondsSinceEpoch == 1_057_049_557)
        #expect(h.fallbackIdentity == "<id@x>\u{1F}Tue, 1 Jul 2003 10:50:00 +0200\u{1F}A <a@x>")
    }

    @Test func foldedLinesBareLFAndCaseInsensitiveNames() {
        let h = read("message-id:\n  <folded@x>\nDATE: Tue,\n\t1 Jul 2003\n 10:52:37 +0200\nfrom: \"Folded\n Name\" <f@x>\n\nbody")
        #expect(h.messageID == "<folded@x>")
        #expect(h.date?.secondsSinceEpoch == 1_057_049_557)
        #expect(h.from == "\"Folded Name\" <f@x>")
    }

    @Test func namesMatchWholeAndCaseInsensitivelyWithSpaceBeforeTheColon() {
        let h = read("X-Message-ID: <not@x>\r\nFrom-Name: not\r\nDates: not\r\nMESSAGE-id \t: <id@x>\r\nfRoM : A <a@x>\r\ndAtE: Tue, 1 Jul 2003 10:50:00 +0200\r\nRECEIVED: from a by b; Tue, 1 Jul 2003 10:52:37 +0200\r\n\r\n")
        #expect(h.messageID == "<id@x>")
        #expect(h.from == "A <a@x>")
        #expect(h.date?.secondsSinceEpoch == 1_057_049_400)
        #expect(h.firstReceivedDate?.secondsSinceEpoch == 1_057_049_557)
        #expect(HeaderReader.wantedField(ArraySlice(" Date\t".utf8)) == "date")
        #expect(HeaderReader.wantedField(ArraySlice("Dat".utf8)) == nil)
        #expect(HeaderReader.wantedField(ArraySlice("".utf8)) == nil)
    }

    /// Contiguous input (read a line at a time) gives what byte-by-byte
    /// input gives, whatever the chunking, including a header block cut off
    /// at `maxHeaderBytes`.
    @Test(arguments: [1, 7, 64, 4096, 1 << 20])
    func contiguousAndByteWiseFeedingAgree(chunk: Int) {
        let huge = "X-Long: " + String(repeating: "a", count: HeaderReader.maxHeaderBytes) + "\r\nDate: Tue, 1 Jul 2003 10:50:00 +0200\r\n\r\nbody"
        let inputs = [
            "Received: from a by b; Tue, 1 Jul 2003 10:52:37 +0200\r\nFrom: A <a@x>\r\nDate: Tue, 1 Jul 2003 10:50:00 +0200\r\nMessage-ID: <id@x>\r\n\r\nbody\r\n",
            "message-id:\n  <folded@x>\nDATE: Tue,\n\t1 Jul 2003\n 10:52:37 +0200\nfrom: x\n\nbody",
            "From: a\r\nno colon here\r\nDate: Tue, 1 Jul 2003 10:50:00 +0200\r\n",
            "Message-ID: <" + String(repeating: "m", count: HeaderReader.maxHeaderBytes + 10) + ">\r\n\r\n",
            huge,
        ]
        for text in inputs {
            let bytes = Array(text.utf8)
            var a = HeaderReader()
            var b = HeaderReader()
            var doneA = false
            var doneB = false
            var i = 0
            while i < bytes.count {
                let piece = Array(bytes[i..<min(bytes.count, i + chunk)])
                if !doneA { doneA = a.feed(piece) }
                if !doneB { doneB = b.feed(piece.lazy.map { $0 }) }
                i += chunk
            }
            #expect(doneA == doneB)
            #expect(a.finish() == b.finish())
        }
    }

    @Test func eightBitHeadersAndDuplicates() {
        var bytes = Array("From: ".utf8) + [0xE9, 0xFF, 0x20] + Array("<a@x>\r\nMessage-ID: <first@x>\r\nMessage-ID: <second@x>\r\nDate: Tue, 1 Jul 2003 10:52:37 +0200\r\nDate: Wed, 2 Jul 2003 10:52:37 +0200\r\n\r\n".utf8)
        bytes += [0x00, 0xFF]
        let h = HeaderReader.read(bytes)
        #expect(h.messageID == "<first@x>")
        #expect(h.date?.secondsSinceEpoch == 1_057_049_557)
        #expect(h.from?.hasSuffix("<a@x>") == true)
    }

    @Test func missingHeadersAndOddShapes() {
        #expect(read("") == HeaderSummary())
        #expect(read("\r\n\r\nFrom: body@x\r\n") == HeaderSummary())
        #expect(read("just a body line\nFrom: not a header\n").from == nil)
        let noSep = read("Subject: x\r\nMessage-ID: <n@x>\r\nthis line is body\r\nso is this\r\nDate: Tue, 1 Jul 2003 10:52:37 +0200\r\n")
        #expect(noSep.messageID == "<n@x>")
        #expect(noSep.dateRaw == nil)
        #expect(read("Subject: x\nNote to self: a body line\nand more\n").from == nil)
        // RFC 2822 A.6.3: white space before colons, a stray line, a folded comment-laden date.
        let obs = read("From  : John Doe <jdoe@machine(comment).  example>\r\nTo    : Mary Smith\r\n__\r\n          <mary@example.net>\r\nDate  : Fri, 21 Nov 1997 09(comment):   55  :  06 -0600\r\nMessage-ID  : <1234   @   local(blah)  .machine .example>\r\n\r\nbody\r\n")
        #expect(obs.from == "John Doe <jdoe@machine(comment).  example>")
        #expect(obs.date?.secondsSinceEpoch == 880_127_706)
        #expect(obs.messageID == "<1234   @   local(blah)  .machine .example>")
        let allHeader = read("Message-ID: <only@x>")  // no newline at all
        #expect(allHeader.messageID == "<only@x>")
        let mbox = read("From sender Tue Jul  1 10:52:37 2003\n>From x\nMessage-ID: <m@x>\n\n")
        #expect(mbox.messageID == "<m@x>")
        #expect(read("Message-ID: <>\n\n").messageID == nil)
        #expect(read("Message-ID:   bare-id@x (comment)\n\n").messageID == "bare-id@x")
        #expect(read("Message-ID: (c) <c@x> junk\n\n").messageID == "<c@x>")
        #expect(read("\u{FEFF}From: bom@x\n\n").from == "bom@x")
        #expect(read("Message-ID: <a@x>\n\n").fallbackIdentity != nil)
        #expect(read("Date: Tue, 1 Jul 2003 10:52:37 +0200\n\n").fallbackIdentity == nil)
    }

    @Test func chunkedFeedingMatchesWholeReads() {
        let text = Array("Received: x; Tue, 1 Jul 2003 10:52:37 +0200\r\nMessage-ID:\r\n <c@x>\r\nDate: Tue, 1 Jul 2003 10:52:37 +0200\r\n\r\nbody".utf8)
        let whole = HeaderReader.read(text)
        for size in [1, 2, 3, 7, 64] {
            var r = HeaderReader()
            var done = false
            for start in stride(from: 0, to: text.count, by: size) where !done {
                done = r.feed(text[start..<min(start + size, text.count)])
            }
            #expect(done)
            #expect(r.finish() == whole, "chunk size \(size)")
        }
    }

    /// The contiguous path (memchr, a line at a time) and the byte-at-a-time
    /// path of any other sequence read the same, including at the size cut.
    @Test func contiguousAndByteWiseFeedingAgree() throws {
        var samples: [[UInt8]] = []
        for extra in [-2, -1, 0, 1, 2] {
            // A header block whose end falls around maxHeaderBytes.
            var b = Array("Received: x; Tue, 1 Jul 2003 10:52:37 +0200\r\nMessage-ID: <cut@x>\r\n".utf8)
            let line = Array("X-Filler: ".utf8) + Array(repeating: UInt8(ascii: "b"), count: 500) + [0x0D, 0x0A]
            while b.count + line.count < HeaderReader.maxHeaderBytes - 40 { b += line }
            b += Array("Subject: ".utf8)
            b += Array(repeating: UInt8(ascii: "s"), count: HeaderReader.maxHeaderBytes - b.count - 2 + extra)
            b += Array("\r\nDate: Tue, 1 Jul 2003 10:52:37 +0200\r\n\r\nbody\r\n".utf8)
            samples.append(b)
        }
        samples.append(Array("\u{FEFF}From: a@x\nDate : Tue, 1 Jul 2003 10 : 52 : 37 +0200\nmessage-ID:\n\t<f@x>\nX-Long: a\n b\n\nbody".utf8))
        samples.append(Array("From a@x Tue Jul 1 2003\nFROM: z@x\nReceived: (no date)\nReceived: x; Wed, 2 Jul 2003 10:52:37 +0200\n\n".utf8))
        if let corpus = try Corpus.load() {
            for e in corpus.messages.prefix(200) { samples.append(try e.load()) }
        }
        for bytes in samples {
            var contiguous = HeaderReader()
            var byteWise = HeaderReader()
            let a = contiguous.feed(bytes)
            let b = byteWise.feed(bytes.lazy.map { $0 })
            #expect(a == b)
            #expect(contiguous.finish() == byteWise.finish())
        }
    }

    /// The byte-level reader of the common date form agrees with the general
    /// parser wherever it answers (corpus Date: and Received: values, and
    /// near misses), and answers for most real dates.
    @Test func canonicalDatesAgreeWithTheGeneralParser() throws {
        var values = [
            "Tue, 1 Jul 2003 10:52:37 +0200", "Tue, 01 Jul 2003 10:52:37 +0200 (CEST)", "1 Jul 2003 10:52:37 -0000",
            "\tWed, 2 Jul 2003 23:59:60 -0930", "tue, 1 JUL 2003 10:52:37 +0200", "Tue,1 Jul 2003 10:52:37 +0200",
            "Tue, 1 Jul 2003 10:52:37 +0260", "Tue, 31 Feb 2003 10:52:37 +0200", "Tue, 1 Jul 2003 24:00:00 +0200",
            "Tue, 1 Jul 2003 10:52 +0200", "Tue, 1 Jul 03 10:52:37 +0200", "Tue, 1 July 2003 10:52:37 +0200",
            "Foo, 1 Jul 2003 10:52:37 +0200", "Tue, 1 Jul 2003 10:52:37 GMT", "Tue, 1 Jul 2003 10 : 52 : 37 +0200",
            "Tue, 1 Jul 2003 10:52:37 +0200 (a (b) c)", "Tue, 1 Jul 2003 10:52:37 +0200 junk", "(c) Tue, 1 Jul 2003 10:52:37 +0200",
            "Tue, 1 Jul 2003 10:52:37.5 +0200", "Tue, 1 Jul 2003 10:52:37 +02:00", "Tue, 1 Jul 2003 10:52:37 +0200 (",
            "", " ", "Tue,", "1 Jul",
        ]
        if let corpus = try Corpus.load() {
            for e in corpus.messages {
                let text = String(decoding: try e.load().prefix(16_384), as: UTF8.self)
                for line in text.split(separator: "\n") {
                    let l = line.lowercased()
                    if l.hasPrefix("date:") { values.append(String(line.dropFirst(5))) }
                    if l.hasPrefix("received:"), let semi = line.lastIndex(of: ";") { values.append(String(line[line.index(after: semi)...])) }
                }
            }
        }
        var answered = 0
        for v in values {
            var t = v
            guard let fast = t.withUTF8({ RFC5322Date.parseCommon($0) }) else { continue }
            answered += 1
            #expect(fast == RFC5322Date.parseAnyForm(v), "\(v.debugDescription)")
        }
        #expect(answered * 2 > values.count, "\(answered) of \(values.count)")
    }

    @Test func hugeHeaderBlocksAreCutOff() {
        var bytes = Array("Message-ID: <big@x>\r\n".utf8)
        let filler = Array("X-Filler: ".utf8) + Array(repeating: UInt8(ascii: "a"), count: 1000) + [0x0D, 0x0A]
        for _ in 0..<400 { bytes += filler }
        bytes += Array("Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n\r\n".utf8)
        var r = HeaderReader()
        let done = r.feed(bytes)
        #expect(done)
        let h = r.finish()
        #expect(h.messageID == "<big@x>")
        #expect(h.dateRaw == nil)
    }

    @Test(arguments: [
        ("Tue, 1 Jul 2003 10:52:37 +0200", Int64(1_057_049_557)),
        ("1 Jul 2003 10:52:37 +0200", 1_057_049_557),
        ("Tuesday, 01 Jul 2003 10:52:37 +0200", 1_057_049_557),
        ("Tue., 1 Jul 2003 10:52:37 +0200", 1_057_049_557),
        ("Tue, 1 Jul 03 08:52:37 GMT", 1_057_049_557),
        ("Tue, 1 Jul 103 08:52:37 UT", 1_057_049_557),
        ("Tue, 1 Jul 2003 08:52 +0000", 1_057_049_520),
        ("Tue, 1 Jul 2003 04:52:37 EDT", 1_057_049_557),
        ("Tue, 1 Jul 2003 01:52:37 PDT (Pacific)", 1_057_049_557),
        ("Tue, 1 Jul 2003 08:52:37 Z", 1_057_049_557),
        ("Tue, 1 Jul 2003 08:52:37 -0000", 1_057_049_557),
        ("Tue, 1 Jul 2003 08:52:37", 1_057_049_557),
        ("Tue (day), 1 (one) Jul 2003 10:52:37 +0200 (CEST)", 1_057_049_557),
        ("Tue, 1 Jul 2003 10 : 52 : 37 +0200", 1_057_049_557),
        ("Tue, 1 Jul 2003 10:52:37 +02:00", 1_057_049_557),
        ("Tue Jul  1 08:52:37 2003", 1_057_049_557),
        ("Jul 1 2003 08:52:37 GMT", 1_057_049_557),
        ("01-Jul-2003 10:52:37 +0200", 1_057_049_557),
        ("1 JUL 2003 08:52:37 gmt", 1_057_049_557),
        ("Tue,  1 Jul 2003 08:52:37 +0000 (UTC)", 1_057_049_557),
        ("2003-07-01T08:52:37Z", 1_057_049_557),
        ("Tue, 1 Jul 2003 08:52:60 +0000", 1_057_049_579),
        ("Thu, 13 Feb 1969 23:32 -0330", -27_723_480),
        ("01 Jan 2001 00:01+0000", 978_307_260),
        ("Tue, 17 Jul 2012 22:23:35.882 0000", 1_342_563_815),
        ("Fri, 21 Nov 1997 09(comment):   55  :  06 -0600", 880_127_706),
    ])
    func rfc5322Dates(text: String, seconds: Int64) {
        #expect(RFC5322Date.parse(text)?.secondsSinceEpoch == seconds, "\(text)")
    }

    @Test(arguments: ["", "garbage", "Tue, 32 Jul 2003 10:52:37 +0200", "Tue, 1 Foo 2003 10:52:37 +0200",
                      "Tue, 1 Jul 2003", "Tue, 1 Jul 2003 25:00:00 +0000", "1 Jul", "Tue, 1 Jul 2003 aa:bb:cc +0000",
                      "(only a comment)", "Tue, 1 Jul 99999 10:00:00 +0000"])
    func rfc5322Rejects(text: String) {
        #expect(RFC5322Date.parse(text) == nil, "\(text)")
    }

    /// The byte-level reader of the common form agrees with the general one
    /// on everything it accepts, and leaves every other form to it.
    @Test(arguments: [
        "Tue, 1 Jul 2003 10:52:37 +0200", "1 Jul 2003 10:52:37 +0200", " Sat, 15 Mar 2025 12:06:30 +0000",
        "Thu, 18 Oct 2012 22:48:39 -0700 (PDT)", "Thu, 18 Oct 2012 22:48:39 -0700(PDT)", "tue,  01  jUL 2003\t10:52:37  -0000",
        "Mon, 6 Jun 2005 22:21:22 +0200  ", "Sun, 21 Oct 2007 19:38:13 +1000 (EST", "Wed, 31 Dec 1969 23:59:59 +0000",
        "Fri, 29 Feb 2008 00:00:00 +1400", "Sat, 1 Jan 0099 10:00:00 +0000",
    ])
    func rfc5322CommonFormMatchesTheGeneralReader(text: String) {
        var t = text
        let fast = t.withUTF8 { RFC5322Date.parseCommon($0) }
        #expect(fast != nil, "\(text)")
        #expect(fast == RFC5322Date.parseAnyForm(text), "\(text)")
        #expect(RFC5322Date.parse(text) == fast)
    }

    @Test(arguments: [
        "Tue., 1 Jul 2003 10:52:37 +0200", "Tuesday, 1 Jul 2003 10:52:37 +0200", "Tue, 1 July 2003 10:52:37 +0200",
        "Tue, 1 Jul 03 10:52:37 +0200", "Tue, 1 Jul 2003 10:52 +0200", "Tue, 1 Jul 2003 10:52:37 GMT",
        "Tue, 1 Jul 2003 10:52:37", "Tue, 1 Jul 2003 10:52:37 +02:00", "Tue, 1 Jul 2003 10:52:37 +02000",
        "Tue, 1 Jul 2003 10 : 52 : 37 +0200", "(c) Tue, 1 Jul 2003 10:52:37 +0200", "Tue, 1 Jul 2003 10:52:37 (c) +0200",
        "Tue, 1 Jul 2003 10:52:37 +0200 trailing", "Jul 1 10:52:37 2003", "01-Jul-2003 10:52:37 +0200",
        "Tue, 1 Jul 2003 10:52:37.882 +0200", "Tue, 1 Jul 2003 10:52:37+0200", "Xyz, 1 Jul 2003 10:52:37 +0200",
        "Tue, 123 Jul 2003 10:52:37 +0200", "Tue,1 Jul 2003 10:52:37 +0200", "2003-07-01T10:52:37+02:00",
    ])
    func rfc5322OtherFormsGoToTheGeneralReader(text: String) {
        var t = text
        #expect(t.withUTF8 { RFC5322Date.parseCommon($0) } == nil, "\(text)")
        #expect(RFC5322Date.parse(text) == RFC5322Date.parseAnyForm(text))
    }

    /// Every corpus message: the reader never crashes, finds a Date header
    /// wherever the manifest says there is one, and parses nearly all of them.
    @Test func wholeCorpus() throws {
        guard let corpus = try Corpus.load() else {
            print(Corpus.absentMessage)
            return
        }
        #expect(corpus.messages.count >= 700)
        var withDate = 0
        var unparsed: [String] = []
        var idsFound = 0
        var missed: [String] = []
        for e in corpus.messages {
            let bytes = try e.load()
            let h = HeaderReader.read(bytes)
            // Feeding in small chunks gives the same answer.
            var r = HeaderReader()
            for start in stride(from: 0, to: bytes.count, by: 997) { if r.feed(bytes[start..<min(start + 997, bytes.count)]) { break } }
            #expect(r.finish() == h, "\(e.file)")
            if !e.has("no_messageid"), h.messageID != nil { idsFound += 1 }
            if e.has("no_date") { continue }
            guard let raw = h.dateRaw else {
                missed.append(e.file)
                continue
            }
            withDate += 1
            if h.date == nil { unparsed.append("\(e.file): \(raw)") }
            #expect(h.date == RFC5322Date.parseAnyForm(raw), "\(e.file): \(raw)")
        }
        print("corpus: \(withDate) dates found, \(unparsed.count) unparsed:\n" + unparsed.joined(separator: "\n"))
        #expect(withDate > 500)
        // What stays unparsed must be junk ("%DATE%", "Whenever", hour 59...),
        // judged independently: no month name with a 4-digit year and a valid hh:mm.
        for u in unparsed {
            let value = String(u[u.range(of: ": ")!.upperBound...])
            let hasMonth = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
                .contains { m in value.lowercased().split(whereSeparator: { !$0.isLetter }).contains { $0 == m } }
            let hasYear = value.range(of: #"\b(19|20)\d\d\b"#, options: .regularExpression) != nil
            let hasTime = value.range(of: #"\b([01]?\d|2[0-3]):[0-5]\d\b"#, options: .regularExpression) != nil
            #expect(!(hasMonth && hasYear && hasTime), "a plausible date was not parsed: \(u)")
        }
        #expect(idsFound > 450)
        // Headers that lost their folding (a run of unindented lines) end the
        // block early; that may hide a later Date in very few messages.
        print("corpus: Date header not reached in \(missed)")
        #expect(missed.count <= 1, "\(missed)")
    }
}

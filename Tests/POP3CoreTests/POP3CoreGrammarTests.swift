import NIOCore
import Testing
@testable import POP3Core

private func bytes(_ s: String) -> ArraySlice<UInt8> { Array(s.utf8)[...] }

@Suite struct StatusLineTests {
    static let cases: [(String, Bool, String?, String)] = [
        ("+OK", true, nil, ""),
        ("+OK\r", true, nil, ""),
        ("+OK POP3 ready <1896.697170952@dbc.mtview.ca.us>", true, nil, "POP3 ready <1896.697170952@dbc.mtview.ca.us>"),
        ("-ERR", false, nil, ""),
        ("-ERR [IN-USE] Do you have another POP session running?", false, "IN-USE", "Do you have another POP session running?"),
        ("-ERR [LOGIN-DELAY] wait 5 minutes", false, "LOGIN-DELAY", "wait 5 minutes"),
        ("-ERR [SYS/TEMP] try later", false, "SYS/TEMP", "try later"),
        ("-ERR [SYS/PERM] mailbox locked", false, "SYS/PERM", "mailbox locked"),
        ("-ERR [AUTH] Authentication failed.", false, "AUTH", "Authentication failed."),
        ("+ok lowercase", true, nil, "lowercase"),
        ("-err lowercase", false, nil, "lowercase"),
        ("-ERR [not a code", false, nil, "[not a code"),
        ("-ERR [] empty", false, nil, "[] empty"),
        ("+OK\tTab", true, nil, "Tab"),
        ("+OK caf\u{E9} 8-bit", true, nil, "caf\u{E9} 8-bit"),
    ]

    @Test(arguments: cases)
    func parses(_ c: (String, Bool, String?, String)) throws {
        let s = try POP3StatusLine.parse(line: bytes(c.0))
        #expect(s.isOK == c.1)
        #expect(s.code?.description == c.2)
        #expect(s.text == c.3)
    }

    @Test(arguments: ["", "OK", "+OKAY", "-ERROR", "* OK imap", "+", "+ abc", "ERR"])
    func refuses(_ line: String) {
        #expect(throws: POP3ParseError.self) { try POP3StatusLine.parse(line: bytes(line)) }
    }

    @Test(arguments: cases)
    func roundTrips(_ c: (String, Bool, String?, String)) throws {
        let s = try POP3StatusLine.parse(line: bytes(c.0))
        var b = ByteBuffer()
        s.write(to: &b)
        let line = Array(b.readableBytesView.dropLast(2))
        #expect(try POP3StatusLine.parse(line: line[...]) == s)
    }

    @Test func nonUTF8TextIsReplacedNotRefused() throws {
        let s = try POP3StatusLine.parse(line: [0x2B, 0x4F, 0x4B, 0x20, 0xFF, 0xFE, 0x41])
        #expect(s.isOK)
        #expect(s.text.hasSuffix("A"))
    }

    @Test func codeHierarchy() {
        #expect(POP3ResponseCode("SYS/TEMP/DISK").isWithin(.sysTemp))
        #expect(!POP3ResponseCode.sysPerm.isWithin(.sysTemp))
        #expect(POP3ResponseCode("in-use") == .inUse)
    }

    @Test func apopTimestamp() throws {
        let s = try POP3StatusLine.parse(line: bytes("+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>"))
        #expect(s.apopTimestamp == "<1896.697170952@dbc.mtview.ca.us>")
        #expect(try POP3StatusLine.parse(line: bytes("+OK ready")).apopTimestamp == nil)
    }

    @Test(arguments: [("2 320", 2, Int64(320)), ("0 0", 0, Int64(0)), ("735 52428800 messages", 735, Int64(52_428_800))])
    func stat(_ c: (String, Int, Int64)) throws {
        let v = try POP3StatusLine(isOK: true, text: c.0).statValues()
        #expect(v.count == c.1 && v.size == c.2)
    }

    @Test(arguments: ["", "2", "x 3", "-1 3", "2 99999999999999999999999", "99999999999 1"])
    func statRefuses(_ t: String) {
        #expect(throws: POP3ParseError.self) { try POP3StatusLine(isOK: true, text: t).statValues() }
    }
}

@Suite struct ListingTests {
    @Test(arguments: [("1 120", 1, Int64(120)), ("2 200\r", 2, Int64(200)), ("17  4096 extra", 17, Int64(4096))])
    func scanListing(_ c: (String, Int, Int64)) throws {
        let l = try POP3ScanListing.parse(line: bytes(c.0))
        #expect(l == POP3ScanListing(number: c.1, size: c.2))
        var b = ByteBuffer()
        l.write(to: &b)
        #expect(try POP3ScanListing.parse(line: Array(b.readableBytesView.dropLast(2))[...]) == l)
    }

    @Test(arguments: ["", "1", "0 12", "a 1", "1 -4", "1 18446744073709551616", "1 1e5"])
    func scanListingRefuses(_ line: String) {
        #expect(throws: POP3ParseError.self) { try POP3ScanListing.parse(line: bytes(line)) }
    }

    @Test(arguments: [("1 whqtswO00WBw418f9t5JxYwZ", 1, "whqtswO00WBw418f9t5JxYwZ"), ("2 QhdPYR:00WBw1Ph7x7\r", 2, "QhdPYR:00WBw1Ph7x7")])
    func uidl(_ c: (String, Int, String)) throws {
        let l = try POP3UniqueIDListing.parse(line: bytes(c.0))
        #expect(l == POP3UniqueIDListing(number: c.1, uniqueID: c.2))
        var b = ByteBuffer()
        l.write(to: &b)
        #expect(try POP3UniqueIDListing.parse(line: Array(b.readableBytesView.dropLast(2))[...]) == l)
    }

    @Test func uidlRefusesControlBytes() {
        #expect(throws: POP3ParseError.self) { try POP3UniqueIDListing.parse(line: [0x31, 0x20, 0x41, 0xFF]) }
        #expect(throws: POP3ParseError.self) { try POP3UniqueIDListing.parse(line: bytes("1")) }
    }

    @Test func capabilities() throws {
        let lines = ["TOP", "USER", "SASL PLAIN login XOAUTH2", "RESP-CODES", "LOGIN-DELAY 900", "PIPELINING",
                     "EXPIRE 60", "UIDL", "IMPLEMENTATION Shlemazle-Plotz-v302", "stls", ""].map { bytes($0) }
        let c = try POP3Capabilities.parse(lines: lines)
        #expect(c.pipelining && c.uidl && c.top && c.user && c.stls && c.respCodes)
        #expect(c.saslMechanisms == ["PLAIN", "LOGIN", "XOAUTH2"])
        #expect(c.loginDelay == 900)
        #expect(c.implementation == "Shlemazle-Plotz-v302")
        var b = ByteBuffer()
        c.write(to: &b)
        let back = try POP3Capabilities.parse(lines: String(buffer: b).split(separator: "\r\n").map { bytes(String($0)) })
        #expect(back == c)
    }
}

@Suite struct CommandTests {
    static let cases: [(POP3Command, String)] = [
        (.user("mrose"), "USER mrose"), (.pass("secret with spaces"), "PASS secret with spaces"),
        (.apop("mrose", digest: "c4c9334bac560ecc979e58001b3e22fb"), "APOP mrose c4c9334bac560ecc979e58001b3e22fb"),
        (.auth("PLAIN", initialResponse: "AGZvbwBiYXI="), "AUTH PLAIN AGZvbwBiYXI="),
        (.auth("XOAUTH2", initialResponse: nil), "AUTH XOAUTH2"), (.auth("EXTERNAL", initialResponse: ""), "AUTH EXTERNAL ="),
        (.capa, "CAPA"), (.stls, "STLS"), (.stat, "STAT"), (.list(nil), "LIST"), (.list(3), "LIST 3"),
        (.uidl(nil), "UIDL"), (.uidl(9), "UIDL 9"), (.top(1, lines: 0), "TOP 1 0"), (.retr(12), "RETR 12"),
        (.dele(2), "DELE 2"), (.rset, "RSET"), (.noop, "NOOP"), (.quit, "QUIT"),
    ]

    @Test(arguments: cases)
    func encodesAndParsesBack(_ c: (POP3Command, String)) throws {
        let b = try c.0.encoded()
        #expect(String(buffer: b) == c.1 + "\r\n")
        #expect(try POP3Command.parse(line: bytes(c.1)) == c.0)
    }

    @Test(arguments: [POP3Command.user("a\r\nDELE 1"), .pass("x\nQUIT"), .retr(0), .dele(-1), .top(1, lines: -1),
                      .auth("PL AIN", initialResponse: nil), .user(""), .saslResponse("abc\r\n")])
    func refusesInjection(_ c: POP3Command) {
        #expect(throws: POP3ParseError.self) { try c.encoded() }
    }

    @Test func descriptionNeverShowsSecrets() {
        #expect(!POP3Command.pass("hunter2").description.contains("hunter2"))
        #expect(!POP3Command.apop("u", digest: "abcdef").description.contains("abcdef"))
        #expect(!POP3Command.auth("PLAIN", initialResponse: "c2VjcmV0").description.contains("c2VjcmV0"))
        #expect(!POP3Command.saslResponse("c2VjcmV0").description.contains("c2VjcmV0"))
    }

    @Test func sasl() throws {
        #expect(try POP3Command.parse(line: bytes("dG9rZW4="), expectingSASL: true) == .saslResponse("dG9rZW4="))
        #expect(try POP3Command.parse(line: bytes("*"), expectingSASL: true) == .saslCancel)
        #expect(String(buffer: try POP3Command.saslCancel.encoded()) == "*\r\n")
    }

    @Test func continuation() throws {
        #expect(try POP3Continuation.parse(line: bytes("+ ")).base64 == "")
        #expect(try POP3Continuation.parse(line: bytes("+")).base64 == "")
        #expect(try POP3Continuation.parse(line: bytes("+ VXNlcm5hbWU6\r")).decoded == Array("Username:".utf8))
        #expect(throws: POP3ParseError.self) { try POP3Continuation.parse(line: bytes("+ not base64!")) }
        #expect(!POP3Continuation.matches(bytes("+OK")))
    }

    @Test(arguments: ["", "f", "fo", "foo", "foob", "fooba", "foobar", "\u{0}user\u{0}pass"])
    func base64RoundTrip(_ s: String) {
        let e = Base64.encode(Array(s.utf8))
        #expect(Base64.decode(e) == Array(s.utf8))
    }
}

import Foundation
import MailModel
@testable import MailNet
import Testing

@Suite struct SASLTests {
    @Test func plainMatchesRFC4616Examples() throws {
        // RFC 4616 §4: "\0tim\0tanstaaftanstaaf"
        let tim = SASLPlain(authenticationIdentity: "tim", password: "tanstaaftanstaaf")
        #expect(SASL.encode(try #require(tim.initialResponse()), initial: true) == "AHRpbQB0YW5zdGFhZnRhbnN0YWFm")
        // RFC 4616 §4 second example (with authzid): "Ursel\0Kurt\0xipj3plmq"
        let kurt = SASLPlain(authorizationIdentity: "Ursel", authenticationIdentity: "Kurt", password: "xipj3plmq")
        #expect(kurt.message == Array("Ursel\u{0}Kurt\u{0}xipj3plmq".utf8))
        #expect(SASL.encode(kurt.message) == "VXJzZWwAS3VydAB4aXBqM3BsbXE=")
    }

    @Test func plainAnswersEmptyChallengeOnceWhenNoSASLIR() throws {
        var plain = SASLPlain(authenticationIdentity: "test", password: "test")
        #expect(try plain.respond(to: []) == .respond(Array("\u{0}test\u{0}test".utf8)))
        #expect(throws: MailError.self) { try plain.respond(to: []) }
        var withIR = SASLPlain(authorizationIdentity: "test", authenticationIdentity: "test", password: "test")
        #expect(SASL.encode(withIR.message) == "dGVzdAB0ZXN0AHRlc3Q=")
        withIR.markInitialResponseSent()
        #expect(throws: MailError.self) { try withIR.respond(to: []) }
    }

    @Test func loginAnswersUserThenPassword() throws {
        var login = SASLLogin(user: "tim", password: "secret")
        #expect(login.initialResponse() == nil)
        #expect(try login.respond(to: try #require(SASL.decode("VXNlcm5hbWU6"))) == .respond(Array("tim".utf8)))
        #expect(try login.respond(to: try #require(SASL.decode("UGFzc3dvcmQ6"))) == .respond(Array("secret".utf8)))
        #expect(throws: MailError.self) { try login.respond(to: []) }
        // Servers with unusual prompts still get user then password.
        var odd = SASLLogin(user: "u", password: "p")
        #expect(try odd.respond(to: Array("who?".utf8)) == .respond(Array("u".utf8)))
        #expect(try odd.respond(to: Array("and?".utf8)) == .respond(Array("p".utf8)))
    }

    @Test func xoauth2MatchesGoogleExample() throws {
        // developers.google.com/gmail/imap/xoauth2-protocol
        var x = SASLXOAuth2(user: "someuser@example.com", token: "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
        #expect(SASL.encode(try #require(x.initialResponse())) ==
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==")
        x.markInitialResponseSent()
        let challenge = try #require(SASL.decode(
            "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIG1hYyIsInNjb3BlIjoiaHR0cHM6Ly9tYWlsLmdvb2dsZS5jb20vIn0K"))
        guard case .failed(let response, let status, _) = try x.respond(to: challenge) else {
            Issue.record("expected a failure step")
            return
        }
        #expect(response.isEmpty)
        #expect(status == "401")
    }

    @Test func xoauth2TwoStepOffice365() throws {
        // Office 365 POP3: "AUTH XOAUTH2", server "+ ", client sends the message.
        var x = SASLXOAuth2(user: "u@contoso.com", token: "tok")
        #expect(try x.respond(to: []) == .respond(Array("user=u@contoso.com\u{1}auth=Bearer tok\u{1}\u{1}".utf8)))
        guard case .failed = try x.respond(to: Array("{\"status\":\"400\"}".utf8)) else {
            Issue.record("second challenge must be an error")
            return
        }
    }

    @Test func oauthBearerMatchesRFC7628Example() throws {
        // RFC 7628 §4.1
        var o = SASLOAuthBearer(user: "user@example.com", host: "server.example.com", port: 143,
                                token: "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==")
        #expect(SASL.encode(try #require(o.initialResponse())) ==
            "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB")
        o.markInitialResponseSent()
        // RFC 7628 §4.3: error challenge, client answers with a single %x01.
        let challenge = try #require(SASL.decode(
            "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJleGFtcGxlX3Njb3BlIiwib3BlbmlkLWNvbmZpZ3VyYXRpb24iOiJodHRwczovL2V4YW1wbGUuY29tLy53ZWxsLWtub3duL29wZW5pZC1jb25maWd1cmF0aW9uIn0="))
        guard case .failed(let response, let status, _) = try o.respond(to: challenge) else {
            Issue.record("expected a failure step")
            return
        }
        #expect(response == [0x01])
        #expect(status == "invalid_token")
        #expect(SASLOAuthBearer.saslName("a,b=c") == "a=2Cb=3Dc")
    }

    @Test func base64Edges() {
        #expect(SASL.encode([], initial: true) == "=")
        #expect(SASL.encode([]) == "")
        #expect(SASL.decode("") == [])
        #expect(SASL.decode("=") == [])
        #expect(SASL.decode("not base64!") == nil)
    }

    @Test func mechanismChoiceAndFactory() async throws {
        let pw = Credentials.password(user: "a", "pw")
        #expect(SASL.preferredMechanism(for: pw, offered: ["LOGIN", "PLAIN"], host: "h", port: 1) == "PLAIN")
        #expect(SASL.preferredMechanism(for: pw, offered: ["LOGIN"], host: "h", port: 1) == "LOGIN")
        #expect(SASL.preferredMechanism(for: pw, offered: [], host: "h", port: 1) == nil)
        let oauth = Credentials(user: "a", secret: .oauth2(.fixed("t")))
        #expect(SASL.preferredMechanism(for: oauth, offered: ["XOAUTH2", "OAUTHBEARER"], host: "h", port: 1) == "OAUTHBEARER")
        #expect(SASL.preferredMechanism(for: oauth, offered: ["XOAUTH2"], host: "h", port: 1) == "XOAUTH2")
        let m = try await SASL.makeMechanism(named: "xoauth2", credentials: oauth, host: "h", port: 993)
        #expect(m.name == "XOAUTH2")
        await #expect(throws: MailError.self) { _ = try await SASL.makeMechanism(named: "PLAIN", credentials: oauth, host: "h", port: 1) }
    }

    @Test func credentialsNeverShowSecrets() {
        let c = Credentials.password(user: "alice", "hunter2", authorizationIdentity: "bob")
        #expect(!"\(c)".contains("hunter2"))
        #expect(!String(reflecting: c).contains("hunter2"))
        #expect("\(c)".contains("alice"))
        let p = SASLPlain(authenticationIdentity: "alice", password: "hunter2")
        #expect(!"\(p)".contains("hunter2"))
    }
}

@Suite struct ProtocolLogRedactorTests {
    @Test func imapLoginAndAuthenticate() {
        var r = ProtocolLogRedactor(.imap)
        #expect(r.clientLine("a1 LOGIN alice \"hunter2\"") == "a1 LOGIN <redacted>")
        #expect(r.serverLine("a1 OK Logged in") == "a1 OK Logged in")
        #expect(r.clientLine("a2 SELECT INBOX") == "a2 SELECT INBOX")
        #expect(r.clientLine("a3 AUTHENTICATE PLAIN AGFsaWNlAGh1bnRlcjI=") == "a3 AUTHENTICATE PLAIN <redacted>")
        #expect(r.serverLine("a3 NO failed") == "a3 NO failed")
        #expect(r.clientLine("a4 authenticate LOGIN") == "a4 authenticate LOGIN")
        #expect(r.serverLine("+ VXNlcm5hbWU6") == "+ <redacted>")
        #expect(r.clientLine("YWxpY2U=") == "<redacted>")
        #expect(r.serverLine("+ UGFzc3dvcmQ6") == "+ <redacted>")
        #expect(r.clientLine("aHVudGVyMg==") == "<redacted>")
        #expect(r.serverLine("* CAPABILITY IMAP4rev1") == "* CAPABILITY IMAP4rev1")
        #expect(r.serverLine("a4 OK done") == "a4 OK done")
        #expect(r.clientLine("a5 LOGOUT") == "a5 LOGOUT")
    }

    @Test func imapLoginWithLiterals() {
        var r = ProtocolLogRedactor(.imap)
        #expect(r.clientLine("a1 LOGIN {5}") == "a1 LOGIN <redacted>")
        #expect(r.clientLine("alice {7+}") == "<redacted>")
        #expect(r.clientLine("hunter2") == "<redacted>")
        #expect(r.clientLine("a2 NOOP") == "a2 NOOP")
    }

    @Test func pop3Secrets() {
        var r = ProtocolLogRedactor(.pop3)
        #expect(r.clientLine("USER alice") == "USER alice")
        #expect(r.clientLine("PASS hunter2") == "PASS <redacted>")
        #expect(r.clientLine("APOP alice c4c9334bac560ecc979e58001b3e22fb") == "APOP alice <redacted>")
        #expect(r.clientLine("AUTH") == "AUTH")
        #expect(r.clientLine("AUTH XOAUTH2") == "AUTH XOAUTH2")
        #expect(r.serverLine("+ ") == "+ <redacted>")
        #expect(r.clientLine("dXNlcj1...") == "<redacted>")
        #expect(r.serverLine("+OK") == "+OK")
        #expect(r.clientLine("STAT") == "STAT")
        #expect(r.clientLine("AUTH PLAIN AGFsaWNlAGh1bnRlcjI=") == "AUTH PLAIN <redacted>")
        #expect(r.serverLine("-ERR [AUTH] no") == "-ERR [AUTH] no")
        #expect(r.clientLine("QUIT") == "QUIT")
    }
}

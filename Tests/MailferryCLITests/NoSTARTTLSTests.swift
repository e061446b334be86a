import Foundation
import MailTestSupport
import Testing

/// "A server without STARTTLS", through the binary: with the default TLS mode
/// (imap:// and pop3:// require STARTTLS / STLS), a server that does not offer
/// it ends the run with one line naming the host and the flag that allows
/// plaintext, exit 4 (SPEC.md: connection, TLS or certificate error), and the
/// password never goes out: the scripted server must see no login at all.
@Suite(.serialized) struct NoSTARTTLSTests {
    static let password = "pw-NOSTARTTLS-7c1e"

    /// A scripted server that does not offer STARTTLS / STLS.
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var scheme: String
        var side: String
        var script: [ScriptStep]
        var testDescription: String { name }
    }

    static let imapWithoutSTARTTLS: [ScriptStep] = [
        .sendLine("* OK fake IMAP ready"),
        .expectLine(#"\S+ CAPABILITY$"#),
        .sendLine("* CAPABILITY IMAP4rev1 AUTH=PLAIN LITERAL+"),
        .sendLine("$tag OK CAPABILITY completed"),
        // Whatever the client sends next is recorded; a LOGIN here would fail the test.
        .skipLinesUntil(#"\S+ LOGOUT"#),
        .sendLine("* BYE logging out"),
        .sendLine("$tag OK LOGOUT completed"),
        .close,
    ]

    static let pop3WithoutSTLS: [ScriptStep] = [
        .sendLine("+OK fake POP3 ready"),
        .expectLine("CAPA$"),
        .sendLines("+OK capabilities follow\nUSER\nUIDL\nTOP\nSASL PLAIN\n.\n"),
        .skipLinesUntil("QUIT"),
        .sendLine("+OK bye"),
        .close,
    ]

    /// An older POP3 server: no CAPA at all, and STLS unknown.
    static let pop3WithoutCAPA: [ScriptStep] = [
        .sendLine("+OK old POP3 ready"),
        .expectLine("CAPA$"),
        .sendLine("-ERR unknown command"),
        .expectLine("STLS$"),
        .sendLine("-ERR unknown command"),
        .skipLinesUntil("QUIT"),
        .sendLine("+OK bye"),
        .close,
    ]

    static let cases: [Case] = [
        Case(name: "IMAP source", scheme: "imap", side: "from", script: imapWithoutSTARTTLS),
        Case(name: "POP3 source", scheme: "pop3", side: "from", script: pop3WithoutSTLS),
        Case(name: "POP3 source without CAPA", scheme: "pop3", side: "from", script: pop3WithoutCAPA),
        Case(name: "IMAP destination", scheme: "imap", side: "to", script: imapWithoutSTARTTLS),
    ]

    /// The commands a login would need: IMAP `tag LOGIN`/`tag AUTHENTICATE`, POP3 `USER`/`PASS`/`AUTH`/`APOP`.
    static func logins(in lines: [String]) -> [String] {
        lines.filter { line in
            let words = line.uppercased().split(separator: " ").map(String.init)
            let imap = words.count > 1 && ["LOGIN", "AUTHENTICATE"].contains(words[1])
            let pop3 = words.first.map { ["USER", "PASS", "AUTH", "APOP"].contains($0) } ?? false
            return imap || pop3
        }
    }

    @Test(arguments: cases)
    func defaultTLSAgainstAServerWithoutSTARTTLS(_ c: Case) async throws {
        let server = try await ScriptedServer.start(c.script)
        let dir = try TempDir()
        let remote = "\(c.scheme)://alice@127.0.0.1:\(server.port)"
        let args: [String]
        let env: [String: String]
        if c.side == "from" {
            args = ["migrate", "--from", remote, "--to", "maildir:" + dir.path + "/mail", "--state", dir.path + "/state.sqlite"]
            env = ["MAILFERRY_FROM_PASSWORD": Self.password]
        } else {
            let (src, _) = try LocalEndToEndTests.makeSource(in: dir, count: 2)
            args = ["migrate", "--from", "maildir:" + src, "--to", remote, "--state", dir.path + "/state.sqlite"]
            env = ["MAILFERRY_TO_PASSWORD": Self.password]
        }
        let r = try CLI.mailferry(args, env: env, timeout: 60)
        let received = server.received.flatMap { $0 }
        let connections = server.connectionCount
        let failures = server.failures
        await server.stop()

        #expect(connections >= 1, "mailferry reached the scripted server")
        #expect(failures.isEmpty, "the conversation went as scripted: \(failures)")
        #expect(r.status == 4, "SPEC.md: 4 for a connection, TLS or certificate error; got \(r.status): \(r.stderr)")
        let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        #expect(lines.count == 1, "exactly one line on stderr: \(r.stderr)")
        let line = lines.first ?? ""
        #expect(line.hasPrefix("mailferry: "), "\(line)")
        #expect(line.contains("127.0.0.1"), "names the host: \(line)")
        #expect(line.contains("STARTTLS") || line.contains("STLS"), "says what is missing: \(line)")
        #expect(line.contains("--\(c.side)-tls none"), "names this side's flag: \(line)")
        let other = c.side == "from" ? "--to-tls" : "--from-tls"
        #expect(!line.contains(other) && !line.contains(" --tls"), "and not another side's or a generic flag: \(line)")
        #expect(line.contains("really wanted"), "plaintext only when it is really wanted: \(line)")
        #expect(line.contains("\(c.scheme)s://"), "offers the implicit-TLS URL of the same protocol: \(line)")
        for junk in ["Fatal error", "Stack dump", "Backtrace", "MailError(", "NIO", ".swift:"] {
            #expect(!r.stderr.contains(junk), "no stack trace or type names (\(junk)): \(r.stderr)")
        }
        #expect(r.stdout.isEmpty, "\(r.stdout)")
        // The password (and the user name) never went out in clear.
        #expect(Self.logins(in: received).isEmpty, "no login was attempted: \(received)")
        #expect(!received.joined(separator: "\n").contains(Self.password), "the password never reached the server")
        #expect(!r.all.contains(Self.password))
    }

    /// The same refusal with `--json`: the summary carries the same line and code.
    @Test func theJSONSummaryCarriesTheSameError() async throws {
        let server = try await ScriptedServer.start(Self.pop3WithoutSTLS)
        let dir = try TempDir()
        let r = try CLI.mailferry(["migrate", "--from", "pop3://alice@127.0.0.1:\(server.port)", "--to", "maildir:" + dir.path + "/mail",
                                   "--state", dir.path + "/state.sqlite", "--json"],
                                  env: ["MAILFERRY_FROM_PASSWORD": Self.password], timeout: 60)
        let received = server.received.flatMap { $0 }
        await server.stop()
        #expect(r.status == 4, "\(r.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        #expect(obj?["exitCode"] as? Int == 4, "\(r.stdout)")
        let error = obj?["error"] as? [String: Any]
        #expect(error?["kind"] as? String == "tls", "\(r.stdout)")
        #expect((error?["message"] as? String)?.contains("--from-tls none") == true, "\(r.stdout)")
        #expect(Self.logins(in: received).isEmpty, "no login was attempted: \(received)")
    }
}

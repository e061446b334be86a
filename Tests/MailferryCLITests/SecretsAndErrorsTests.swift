import Foundation
import Testing

/// The password test, the OAuth2 expiry test, and the error classes that a
/// scripted server can provoke. (Dovecot-backed ones are in DovecotCLITests.)
@Suite(.serialized) struct SecretsAndErrorsTests {
    static let password = "Zq7#pw-DISTINCTIVE-p4ss!"
    static let tokenPrefix = "tok-DISTINCTIVE-9f3a"

    /// Every form a secret could leak in: itself, base64 (alone or inside a SASL blob), percent-encoded.
    static func leaks(of secret: String, in text: String) -> [String] {
        var found: [String] = []
        if text.contains(secret) { found.append("plain") }
        let pct = secret.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? secret
        if pct != secret, text.contains(pct) { found.append("percent-encoded") }
        // The base64 of the secret at each byte alignment, minus the edge characters.
        let bytes = Array(secret.utf8)
        for skip in 0..<3 {
            let rest = Array(bytes.dropFirst(skip))
            let whole = rest.count / 3 * 3
            guard whole >= 6 else { continue }
            let core = Data(rest[..<whole]).base64EncodedString()
            if text.contains(core) { found.append("base64 at offset \(skip)") }
        }
        return found
    }

    /// Everything a run leaves: stdout, stderr, and every file under `dir` (reports, state, archives, mail).
    static func everyOutput(_ results: [CLI.Result], dir: String) -> [(String, String)] {
        var out = results.enumerated().flatMap { i, r in [("run \(i) stdout", r.stdout), ("run \(i) stderr", r.stderr)] }
        if let e = FileManager.default.enumerator(atPath: dir) {
            while let f = e.nextObject() as? String {
                let p = dir + "/" + f
                var isDir: ObjCBool = false
                guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir), !isDir.boolValue,
                      let d = FileManager.default.contents(atPath: p) else { continue }
                out.append((f, String(decoding: d, as: UTF8.self)))
            }
        }
        return out
    }

    @Test func thePasswordNeverAppearsInAnyOutput() async throws {
        let server = try await FakePOP3(.init(password: Self.password, messages: FakePOP3.samples(5)))
        let dir = try TempDir()
        let url = "pop3://alice@127.0.0.1:\(server.port)"
        let env = ["MAILFERRY_FROM_PASSWORD": Self.password, "XDG_STATE_HOME": dir.path + "/xdg"]
        var runs: [CLI.Result] = []
        // Protocol trace on, both log formats, reports, state, JSON.
        runs.append(try CLI.mailferry(["folders", url, "--from-tls", "none", "-vvv"], env: env))
        runs.append(try CLI.mailferry(["migrate", "--from", url, "--from-tls", "none", "--to", "maildir:" + dir.path + "/mail",
                                       "--state", dir.path + "/state.sqlite", "--report", dir.path + "/report.json",
                                       "--json", "-vvv", "--log-format", "json"], env: env))
        runs.append(try CLI.mailferry(["verify", "--from", url, "--from-tls", "none", "--to", "maildir:" + dir.path + "/mail",
                                       "--into", "INBOX", "-vv"], env: env))
        // From a file and from a command, too.
        let pwFile = try dir.write("pw", Self.password + "\n")
        runs.append(try CLI.mailferry(["folders", url, "--from-tls", "none", "--from-password-file", pwFile, "-vvv"], env: [:]))
        runs.append(try CLI.mailferry(["folders", url, "--from-tls", "none", "--from-password-command", "cat \(pwFile)", "-vvv",
                                       "--log-format", "json"], env: [:]))
        // A wrong password: the error must not echo either password.
        runs.append(try CLI.mailferry(["folders", url, "--from-tls", "none", "-vvv"],
                                      env: ["MAILFERRY_FROM_PASSWORD": Self.password + "-wrong"]))
        await server.shutdown()

        #expect(runs[0].status == 0, "\(runs[0].stderr)")
        #expect(runs[1].status == 0, "\(runs[1].stderr)")
        #expect(runs[2].status == 0, "\(runs[2].stderr)")
        #expect(runs[3].status == 0 && runs[4].status == 0)
        #expect(runs[5].status == 3, "wrong password exits 3: \(runs[5].stderr)")
        // The trace really was on (so the test would catch a leak in it).
        #expect(runs[0].stderr.contains("PASS"), "protocol trace shown at -vvv")
        #expect(FileManager.default.fileExists(atPath: dir.path + "/report.json"))

        for (name, text) in Self.everyOutput(runs, dir: dir.path) where name != "pw" {
            #expect(Self.leaks(of: Self.password, in: text).isEmpty, "the password leaked into \(name)")
        }
    }

    @Test func wrongPasswordExits3WithOneLine() async throws {
        let server = try await FakePOP3(.init(password: "right", messages: []))
        let r = try CLI.mailferry(["folders", "pop3://alice@127.0.0.1:\(server.port)", "--from-tls", "none"],
                                  env: ["MAILFERRY_FROM_PASSWORD": "wrong"])
        await server.shutdown()
        #expect(r.status == 3, "\(r.stderr)")
        let lines = r.stderr.split(separator: "\n").filter { !$0.contains("warning") }
        #expect(lines.count == 1, "one line: \(r.stderr)")
        #expect(r.stderr.contains("MAILFERRY_FROM_PASSWORD") || r.stderr.lowercased().contains("password"), "\(r.stderr)")
    }

    @Test func unreachableHostExits4() throws {
        let r = try CLI.mailferry(["folders", "pop3://alice@127.0.0.1:1", "--from-tls", "none"],
                                  env: ["MAILFERRY_FROM_PASSWORD": "x"])
        #expect(r.status == 4, "\(r.stderr)")
        #expect(r.stderr.contains("127.0.0.1:1 refused the connection"), "\(r.stderr)")
        #expect(!r.stderr.contains("NIO") && !r.stderr.contains("Error("), "no type names: \(r.stderr)")
        // Every IMAP connection attempt that is refused must end cleanly (a
        // debug build once trapped on a leaked greeting promise here).
        for tls in ["none", "implicit"] {
            for _ in 0..<3 {
                let i = try CLI.mailferry(["folders", "imap://alice@127.0.0.1:1", "--from-tls", tls],
                                          env: ["MAILFERRY_FROM_PASSWORD": "x"])
                #expect(i.status == 4, "\(i.stderr)")
                #expect(i.stderr.contains("127.0.0.1:1 refused the connection"), "\(i.stderr)")
                #expect(!i.stderr.contains("Fatal error"), "\(i.stderr)")
            }
        }
        let j = try CLI.mailferry(["migrate", "--from", "pop3://alice@127.0.0.1:1", "--from-tls", "none",
                                   "--to", "maildir:/tmp/never-written", "--json"], env: ["MAILFERRY_FROM_PASSWORD": "x"])
        #expect(j.status == 4)
        let obj = try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any]
        #expect(obj?["exitCode"] as? Int == 4, "--json reports the failure too: \(j.stdout)")
        #expect((obj?["error"] as? [String: Any])?["kind"] as? String == "connection")
    }

    /// A long migration survives token expiry: the server drops the
    /// connection halfway and from then on refuses the first token; the token
    /// command is run again and the run finishes.
    @Test func oauth2TokenCommandIsRerunWhenTheServerExpiresTheToken() async throws {
        let dir = try TempDir()
        let counter = dir.path + "/runs"
        let cmd = "n=$(cat \(counter) 2>/dev/null || echo 0); n=$((n+1)); echo $n > \(counter); echo \(Self.tokenPrefix)-$n"
        let server = try await FakePOP3(.init(acceptedTokens: ["\(Self.tokenPrefix)-1"], messages: FakePOP3.samples(8),
                                              dropAtRetr: 4, tokensAfterDrop: ["\(Self.tokenPrefix)-2"]))
        let r = try CLI.mailferry(["migrate", "--from", "pop3://alice@127.0.0.1:\(server.port)", "--from-tls", "none",
                                   "--from-oauth2-token-command", cmd, "--to", "maildir:" + dir.path + "/mail",
                                   "--state", dir.path + "/state.sqlite", "--report", dir.path + "/report.json", "--json", "-vvv"])
        let log = server.log
        await server.shutdown()
        #expect(r.status == 0, "\(r.stderr)")
        let runs = (try? String(contentsOfFile: counter, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(runs == "2", "the token command ran once, then once more after the expiry")
        #expect(log.filter { $0.uppercased().hasPrefix("AUTH") }.count >= 3, "login, refused login after the drop, login with the new token: \(log)")
        // Every message arrived once.
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path + "/mail/cur")) ?? []
        #expect(files.count == 8)
        // Neither token shows anywhere.
        for (name, text) in Self.everyOutput([r], dir: dir.path) where name != "runs" {
            #expect(Self.leaks(of: "\(Self.tokenPrefix)-1", in: text).isEmpty, "token 1 leaked into \(name)")
            #expect(Self.leaks(of: "\(Self.tokenPrefix)-2", in: text).isEmpty, "token 2 leaked into \(name)")
        }
    }
}

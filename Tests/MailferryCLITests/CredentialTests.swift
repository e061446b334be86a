import Foundation
import Testing
@testable import MailferryCLI
import MailModel

@Suite struct CredentialTests {
    @Test func environmentFileAndCommandSources() async throws {
        let dir = try TempDir()
        let file = try dir.write("pw", "file-secret-1\nsecond line ignored\n")
        #expect(try await CredentialResolver.read(.environment("MY_PW"), what: "test", environment: ["MY_PW": "env-secret-1"]) == "env-secret-1")
        #expect(try await CredentialResolver.read(.file(file), what: "test") == "file-secret-1")
        #expect(try await CredentialResolver.read(.command("printf 'cmd-secret-1\\nrest\\n'"), what: "test") == "cmd-secret-1")
        // All three are now redacted wherever they would be printed.
        let r = SecretRedactor.shared
        #expect(r.redact("a env-secret-1 b file-secret-1 c cmd-secret-1") == "a *** b *** c ***")
    }

    @Test func missingSourcesAreUsageErrorsNamingTheFix() async throws {
        await #expect(throws: MailError.self) {
            _ = try await CredentialResolver.read(.environment("NOPE_NOT_SET"), what: "the source password", environment: [:])
        }
        do {
            _ = try await CredentialResolver.read(.environment("NOPE_NOT_SET"), what: "the source password", environment: [:])
        } catch let e as MailError {
            #expect(e.kind == .usage)
            #expect(e.description.contains("NOPE_NOT_SET"))
        }
        do {
            _ = try await CredentialResolver.read(.command("echo oops >&2; exit 3"), what: "the source password")
            Issue.record("a failing command was accepted")
        } catch let e as MailError {
            #expect(e.description.contains("status 3"))
            #expect(e.description.contains("oops"))
        }
    }

    @Test func commandDoesNotInheritOurSecrets() async throws {
        setenv("MAILFERRY_FROM_PASSWORD", "inherited-secret", 1)
        defer { unsetenv("MAILFERRY_FROM_PASSWORD") }
        let out = try await ShellCommand.run("echo \"[$MAILFERRY_FROM_PASSWORD]\"", timeout: 10)
        #expect(out == "[]\n")
    }

    @Test func adminAndMasterUserIdentities() {
        let admin = LoginSpec(secret: .password(.environment("X")), adminUser: "root")
        #expect(admin.identities(for: "alice") == ("root", "alice"))
        let master = LoginSpec(secret: .password(.environment("X")), masterUser: "backup")
        #expect(master.identities(for: "alice") == ("alice*backup", nil))
        let plain = LoginSpec(secret: .password(.environment("X")))
        #expect(plain.identities(for: "alice") == ("alice", nil))
    }

    @Test func tokenCommandIsRerunOnForcedRefresh() async throws {
        let dir = try TempDir()
        let counter = dir.path + "/n"
        // Prints token-1, token-2, … one more each run.
        let cmd = "n=$(cat \(counter) 2>/dev/null || echo 0); n=$((n+1)); echo $n > \(counter); echo token-$n"
        let spec = LoginSpec(secret: .oauth2Command(cmd))
        let login = try await CredentialResolver.resolve(spec, account: .init(user: "alice", host: "h", port: 993, tls: .implicit), side: .from)
        guard case .oauth2(let provider) = login.secret else { Issue.record("not oauth2"); return }
        #expect(try await provider(false) == "token-1")
        #expect(try await provider(false) == "token-1", "cached until refused")
        #expect(try await provider(true) == "token-2", "re-run when the server refused it")
        #expect(SecretRedactor.shared.redact("AUTH token-2") == "AUTH ***")
    }

    @Test func redactorCatchesBase64FormsAtEveryAlignment() {
        let r = SecretRedactor()
        r.register("Zq9-distinctive-Pw!")
        for prefix in ["", "\u{0}", "\u{0}alice\u{0}", "user=alice\u{1}auth=Bearer "] {
            let blob = Data((prefix + "Zq9-distinctive-Pw!" + "\u{1}\u{1}").utf8).base64EncodedString()
            let out = r.redact("a1 AUTHENTICATE PLAIN \(blob)")
            #expect(out.contains("***"), "prefix \(prefix.debugDescription): \(out)")
            // What is left cannot be decoded back into the password.
            #expect(!out.contains(blob))
        }
        #expect(r.redact("no secrets here") == "no secrets here")
    }

    @Test func protocolLinesAreRedacted() {
        #expect(LogRedaction.protocolLine("C: a1 LOGIN alice s3cr3t") == "C: a1 LOGIN alice ***")
        #expect(LogRedaction.protocolLine("PASS s3cr3t") == "PASS ***")
        #expect(LogRedaction.protocolLine("a2 AUTHENTICATE XOAUTH2 dXNlcj1hbGljZQFhdXRoPUJlYXJlciB4eHgBAQ==") == "a2 AUTHENTICATE XOAUTH2 ***")
        #expect(LogRedaction.protocolLine("dXNlcj1hbGljZQFhdXRoPUJlYXJlciB4eHgBAQ==") == "***")
        #expect(LogRedaction.protocolLine("* OK IMAP4rev1 ready") == "* OK IMAP4rev1 ready")
    }
}

import Foundation
import Testing
@testable import MailferryCLI
import MailModel

@Suite struct OutputTests {
    @Test func progressLineShowsFolderTotalsRateAndETA() {
        var s = ProgressSnapshot()
        s.folder = "INBOX"
        s.folderDone = 120
        s.folderTotal = 450
        s.messagesDone = 1204
        s.messagesTotal = 9800
        s.bytesDone = 84_100_000
        s.bytesTotal = 712_000_000
        let line = ProgressRenderer.format(s, rate: (bytes: 3_200_000, messages: 40), label: "", width: 200)
        #expect(line.contains("INBOX 120/450"))
        #expect(line.contains("total 1204/9800 msgs"))
        #expect(line.contains("84.1 MB/712.0 MB"))
        #expect(line.contains("3.2 MB/s"))
        #expect(line.contains("ETA 3m16s"), "\(line)")
        // Never wider than the terminal.
        #expect(ProgressRenderer.format(s, rate: nil, label: "job", width: 30).count < 30)
    }

    @Test(arguments: [
        (MailError(.tls, scope: .account, "mail.example.com does not offer STARTTLS"), Side.from, "--from-tls none"),
        (MailError(.tls, scope: .account, "the certificate of mail.example.com is not trusted"), Side.to, "--ca-file"),
        (MailError(.storage, scope: .local, "the state /x is held by another run, pid 42"), Side.from, "another mailferry run"),
        (MailError(.storage, scope: .local, "no space left on device"), Side.to, "free some space"),
        (MailError(.authentication, scope: .account, "login refused"), Side.to, "MAILFERRY_TO_PASSWORD"),
    ])
    func errorsCarryTheFix(error: MailError, side: Side, fix: String) {
        let annotated = StoreFactory.annotate(error, side: side)
        let p = ErrorPresenter.present(annotated)
        #expect(p.line.contains(fix), "\(p.line)")
        #expect(!p.line.contains("\n"))
        #expect(p.exitCode == error.exitCode)
    }

    @Test func exitCodesFollowTheSpec() {
        #expect(ErrorPresenter.present(MailError(.usage, scope: .local, "x")).exitCode == 2)
        #expect(ErrorPresenter.present(MailError(.authentication, scope: .account, "x")).exitCode == 3)
        #expect(ErrorPresenter.present(MailError(.connection, scope: .account, "x")).exitCode == 4)
        #expect(ErrorPresenter.present(MailError(.tls, scope: .account, "x")).exitCode == 4)
        #expect(ErrorPresenter.present(MailError(.storage, scope: .local, "x")).exitCode == 5)
        #expect(ErrorPresenter.present(MailError(.corrupt, scope: .local, "x")).exitCode == 6)
        #expect(ErrorPresenter.present(CancellationError()).exitCode == 130)
        #expect(CLIRun.mostSerious([0, 1, 4, 3]) == 3)
        #expect(CLIRun.mostSerious([0, 1, 130, 6]) == 130)
        #expect(CLIRun.mostSerious([0, 0]) == 0)
    }

    @Test func timeAndRateArguments() throws {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        #expect(try TimeArgument.parse("30d", flag: "--as-of", now: now) == now.addingTimeInterval(-30 * 86400))
        #expect(try TimeArgument.parse("2026-03-01", flag: "--as-of").timeIntervalSince1970 == 1_772_323_200)
        #expect(try TimeArgument.parse("2026-03-01T18:00:00Z", flag: "--as-of").timeIntervalSince1970 == 1_772_388_000)
        #expect(throws: MailError.self) { try TimeArgument.parse("soon", flag: "--as-of") }
        #expect(ByteCountArgument.parse("10M") == Int64(10 * 1024 * 1024))
        #expect(ByteCountArgument.parse("512k") == Int64(512 * 1024))
        #expect(ByteCountArgument.parse("1000") == 1000)
        #expect(ByteCountArgument.parse("fast") == nil)
    }

    @Test func tlsOverrideMovesDefaultPortsOnly() throws {
        let imap = try StoreLocation(parsing: "imap://a@h")
        #expect(EndpointFlags.override(imap, tls: .implicit).account?.port == 993)
        let custom = try StoreLocation(parsing: "imap://a@h:1143")
        #expect(EndpointFlags.override(custom, tls: .none).account?.port == 1143)
        #expect(EndpointFlags.override(custom, tls: .none).account?.tls == TLSMode.none)
        let pops = try StoreLocation(parsing: "pop3s://a@h")
        #expect(EndpointFlags.override(pops, tls: .startTLS).account?.port == 110)
    }
}

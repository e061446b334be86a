import Foundation
import Testing
@testable import MailStore
import MailModel
import MailTestSupport

/// Dovecot (`maildir:PATH:LAYOUT=fs`), pointed at a Maildir tree we wrote,
/// serves the same folders, messages, flags, keywords and dates; and what
/// Dovecot changes there, we read back.
struct DovecotMaildirTests {
    @Test(.enabled(if: DovecotFixture.serverTestsEnabled, "MAILFERRY_SKIP_SERVER_TESTS=1"))
    func dovecotServesOurMaildir() async throws {
        let fixture = try DovecotFixture.shared()
        try await withTempDirectory { dir in
            let root = dir + "/Maildir"
            let store = try MaildirStore(root: root, create: true)
            // ASCII names: Dovecot reads non-ASCII names as UTF-8 only with ":UTF-8" in mail_location.
            let folders: [FolderPath] = [.inbox, FolderPath("Work/2024")!, FolderPath("INBOX/Lists")!, FolderPath("Sent Items")!]
            let flagSets: [Flags] = [[], [.seen], [.seen, .flagged, Flag("Work")], [.answered, .draft, .forwarded], [.deleted, Flag("$Label1")]]
            var expected: [FolderPath: [(bytes: [UInt8], flags: Flags, date: InternalDate)]] = [:]
            for (fi, folder) in folders.enumerated() {
                try await store.createFolder(folder)
                for (i, m) in SyntheticMail.edgeCases.enumerated() where (i + fi) % 2 == 0 {
                    let flags = flagSets[(i + fi) % flagSets.count]
                    let date = InternalDate(secondsSinceEpoch: 1_100_000_000 + Int64(i) * 3600)
                    _ = try await store.append(to: folder, AppendRequest(flags: flags, internalDate: date), body: .bytes(m.bytes)).result()
                    expected[folder, default: []].append((m.bytes, flags, date))
                }
            }
            let user = fixture.makeUser(prefix: "ourmaildir").user
            let served = try fixture.serveMaildir(copying: root, for: user)

            let listed = Set(try fixture.folders(user: user))
            for folder in folders {
                #expect(listed.contains(folder.description), "Dovecot lists \(listed.sorted()), not \(folder)")
                let seen = try fixture.messages(user: user, folder: folder.description)
                let want = expected[folder] ?? []
                #expect(seen.count == want.count, "\(folder)")
                for w in want {
                    let hit = seen.first { $0.bytes == w.bytes && $0.internalDate == w.date }
                    #expect(hit != nil, "\(folder): a message Dovecot does not serve")
                    #expect(hit?.flags == w.flags, "\(folder): Dovecot sees \(hit?.flags.description ?? "-"), we wrote \(w.flags)")
                }
            }
            // Dovecot reads the bytes itself (not just the file we know).
            let text = try fixture.doveadm(["fetch", "-u", user, "size.physical", "mailbox", "Work/2024", "all"])
            let sizes = text.split(separator: "\n").compactMap { $0.split(separator: " ").last.flatMap { Int($0) } }
            #expect(Set(sizes) == Set((expected[FolderPath("Work/2024")!] ?? []).map(\.bytes.count)))

            // Changes made through Dovecot are what we read back.
            try fixture.doveadm(["flags", "add", "-u", user, "\\Answered Archived", "mailbox", "Sent Items", "all"])
            let back = try MaildirStore(root: served, create: false)
            let listing = try await back.listMessages(in: FolderPath("Sent Items")!)
            #expect(listing.messages.count == (expected[FolderPath("Sent Items")!] ?? []).count)
            for m in listing.messages {
                #expect(m.flags.contains(.answered) && m.flags.contains(Flag("Archived")), "\(m.id): \(m.flags)")
            }
            let bodies = try await collect(back, listing.messages.map(\.id), in: FolderPath("Sent Items")!)
            #expect(Set(bodies.values) == Set((expected[FolderPath("Sent Items")!] ?? []).map(\.bytes)))
        }
    }
}

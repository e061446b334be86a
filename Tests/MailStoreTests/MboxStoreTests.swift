import Foundation
import Testing
@testable import MailStore
import MailModel
import MailTestSupport

struct MboxStoreTests {
    let inbox = FolderPath.inbox

    func read(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }
    func write(_ path: String, _ s: String) throws { try Data(s.utf8).write(to: URL(fileURLWithPath: path)) }

    @Test func onDiskFormatIsMboxrd() async throws {
        try await withTempDirectory { dir in
            let store = try MboxStore(root: dir, create: true)
            try await store.createFolder(inbox)
            let m1 = Array("Subject: one\n\nFrom me\n>From you\nend".utf8)  // no final newline
            let m2 = Array("Subject: two\r\n\r\nbody\r\n".utf8)
            let date = InternalDate(secondsSinceEpoch: 1_057_056_757)  // Tue Jul  1 10:52:37 2003 UTC
            _ = try await appendAll(store, inbox, [(m1, [.seen, .answered, Flag("Work")], date), (m2, [], date)])
            let text = String(decoding: try read(dir + "/INBOX"), as: UTF8.self)
            #expect(text == """
                From MAILER-DAEMON Tue Jul  1 10:52:37 2003
                Status: RO
                X-Status: A
                X-Keywords: Work
                Subject: one

                >From me
                >>From you
                end

                From MAILER-DAEMON Tue Jul  1 10:52:37 2003
                Subject: two\r
                \r
                body\r


                """)
            #expect(fileMode(dir + "/INBOX") == 0o600)
            #expect(fileMode(dir + "/.INBOX.mailferry") == 0o600)
            #expect(!FileManager.default.fileExists(atPath: dir + "/INBOX.lock"))
            let listing = try await store.listMessages(in: inbox)
            #expect(listing.messages.map(\.size) == [Int64(m1.count), Int64(m2.count)])
            #expect(listing.messages.map(\.internalDate) == [date, date])
            let bodies = try await collect(store, listing.messages.map(\.id), in: inbox)
            #expect(bodies[listing.messages[0].id] == m1)
            #expect(bodies[listing.messages[1].id] == m2)
        }
    }

    @Test func childrenLiveInSbdDirectories() async throws {
        try await withTempDirectory { dir in
            let store = try MboxStore(root: dir, create: true)
            try await store.createFolder(FolderPath(components: ["Archive", "2024", "x.lock"])!)
            for f in ["Archive", "Archive.sbd/2024", "Archive.sbd/2024.sbd/x%2Elock"] {
                #expect(FileManager.default.fileExists(atPath: dir + "/" + f), "\(f)")
            }
            let names = try await store.folders().map(\.path.description)
            #expect(names == ["Archive", "Archive/2024", "Archive/2024/x.lock"])
        }
    }

    @Test func flagChangesAndDeletesKeepIdsAndBytes() async throws {
        try await withTempDirectory { dir in
            let store = try MboxStore(root: dir, create: true)
            try await store.createFolder(inbox)
            let msgs = (0..<5).map { Array("Subject: \($0)\n\nFrom line \($0)\n".utf8) }
            let ids = try await appendAll(store, inbox, msgs.map { ($0, [], nil) })
            let validity = try await store.listMessages(in: inbox).validity.uidValidity
            try await store.setFlags([.seen, Flag("$Label1")], .add, for: [ids[1], ids[3]], in: inbox)
            try await store.delete([ids[2]], in: inbox)
            let reopened = try MboxStore(root: dir, create: false)
            let listing = try await reopened.listMessages(in: inbox)
            #expect(listing.validity.uidValidity == validity)
            #expect(listing.messages.map(\.id) == [ids[0], ids[1], ids[3], ids[4]])
            #expect(listing.messages.map(\.flags) == [[], [.seen, Flag("$Label1")], [.seen, Flag("$Label1")], []])
            let bodies = try await collect(reopened, listing.messages.map(\.id), in: inbox)
            #expect(bodies[ids[3]] == msgs[3] && bodies[ids[0]] == msgs[0])
            #expect(!FileManager.default.fileExists(atPath: dir + "/INBOX.lock"))
        }
    }

    @Test func readsForeignMboxoAndTakesOverIds() async throws {
        try await withTempDirectory { dir in
            // Written by another tool: mboxo quoting, Status headers, no blank line before the second From line.
            try write(dir + "/Old", """
                From alice@example.org Mon Jan  1 00:00:00 2001
                Status: RO
                X-Status: F
                Subject: a

                >From the body
                From bob@example.org Tue Jan  2 00:00:00 2001
                Subject: b

                hello

                """)
            let store = try MboxStore(root: dir, create: false)
            let folder = FolderPath(components: ["Old"])!
            let listing = try await store.listMessages(in: folder)
            #expect(listing.messages.count == 2)
            #expect(listing.messages.first?.flags == [.seen, .flagged])
            #expect(listing.messages.first?.internalDate == InternalDate.from(year: 2001, month: 1, day: 1, hour: 0, minute: 0, second: 0, zoneMinutes: 0))
            let bodies = try await collect(store, listing.messages.map(\.id), in: folder)
            #expect(bodies[listing.messages[0].id] == Array("Status: RO\nX-Status: F\nSubject: a\n\nFrom the body\n".utf8))
            #expect(bodies[listing.messages[1].id] == Array("Subject: b\n\nhello\n".utf8))
            // The first change writes the index; ids stay what they were.
            let added = try await store.append(to: folder, AppendRequest(), body: .bytes(Array("Subject: c\n\nc\n".utf8))).result()
            let after = try await store.listMessages(in: folder)
            #expect(after.messages.map(\.id) == listing.messages.map(\.id) + [try #require(added.id)])
            // Another tool appends behind our back: existing ids hold, the new message is listed.
            let h = try #require(FileHandle(forWritingAtPath: dir + "/Old"))
            try h.seekToEnd()
            try h.write(contentsOf: Data("From carol@example.org Wed Jan  3 00:00:00 2001\nSubject: d\n\nd\n\n".utf8))
            try h.close()
            let third = try await store.listMessages(in: folder)
            #expect(third.messages.count == 4)
            #expect(Array(third.messages.prefix(3).map(\.id)) == after.messages.map(\.id))
            #expect(third.validity.uidValidity == after.validity.uidValidity)
        }
    }

    @Test func contentLengthDelimitedBodies() async throws {
        try await withTempDirectory { dir in
            let body = "From inside the body\n\nFrom again\n"
            try write(dir + "/CL", "From a Mon Jan  1 00:00:00 2001\nContent-Length: \(body.utf8.count)\nSubject: cl\n\n\(body)\nFrom b Mon Jan  1 00:00:00 2001\nSubject: two\n\nx\n")
            let store = try MboxStore(root: dir, create: false)
            let folder = FolderPath(components: ["CL"])!
            let listing = try await store.listMessages(in: folder)
            #expect(listing.messages.count == 2)
            let bodies = try await collect(store, listing.messages.map(\.id), in: folder)
            #expect(bodies[listing.messages[0].id] == Array("Content-Length: \(body.utf8.count)\nSubject: cl\n\n\(body)".utf8))
        }
    }

    @Test func readsEveryCorpusMboxWithoutCrashing() async throws {
        guard let corpus = try Corpus.load() else { print(Corpus.absentMessage); return }
        let files = corpus.containers.filter { $0.file.hasSuffix(".mbox") }
        #expect(!files.isEmpty)
        try await withTempDirectory { dir in
            for f in files {
                try FileManager.default.copyItem(atPath: f.path, toPath: dir + "/" + f.file)
            }
            let store = try MboxStore(root: dir, create: false)
            let folders = try await store.folders()
            #expect(folders.count == files.count)
            for info in folders {
                let listing = try await store.listMessages(in: info.path, options: ListOptions(includeHeaders: true))
                #expect(!listing.messages.isEmpty, "\(info.path)")
                let bodies = try await collect(store, listing.messages.map(\.id), in: info.path)
                #expect(bodies.count == listing.messages.count)
                let total = bodies.values.reduce(0) { $0 + $1.count }
                let fileSize = try #require(try FileManager.default.attributesOfItem(atPath: dir + "/" + info.path.name)[.size] as? Int)
                #expect(total <= fileSize)
                for m in listing.messages { #expect(Int64(bodies[m.id]?.count ?? -1) == m.size, "\(info.path) \(m.id)") }
            }
            let mox = try await store.listMessages(in: FolderPath(components: ["mox__testdata_importtest.mbox"])!)
            #expect(mox.messages.count == 2)
            let simple = try await store.listMessages(in: FolderPath(components: ["MimeKit__UnitTests_TestData_mbox_simple.mbox.txt.mbox"])!)
            #expect(simple.messages.count == 3)
        }
    }

    @Test func notAnMboxIsAClearError() async throws {
        try await withTempDirectory { dir in
            try Data([0x00, 0xFF, 0x13] + Array("garbage\nmore\n".utf8)).write(to: URL(fileURLWithPath: dir + "/Junk"))
            let store = try MboxStore(root: dir, create: false)
            await #expect {
                _ = try await store.listMessages(in: FolderPath(components: ["Junk"])!)
            } throws: { e in
                guard let e = e as? MailError else { return false }
                return e.kind == .corrupt && e.description.contains(dir + "/Junk")
            }
        }
    }

    @Test func truncatedMboxAndDamagedIndexAreClearErrors() async throws {
        try await withTempDirectory { dir in
            let store = try MboxStore(root: dir, create: true)
            try await store.createFolder(inbox)
            _ = try await appendAll(store, inbox, [(Array("Subject: a\n\na\n".utf8), [.seen], nil), (Array("Subject: b\n\nbbbbbbbbbb\n".utf8), [], nil)])
            let h = try #require(FileHandle(forWritingAtPath: dir + "/INBOX"))
            let size = try h.seekToEnd()
            try h.truncate(atOffset: size - 8)
            try h.close()
            await #expect {
                _ = try await MboxStore(root: dir, create: false).listMessages(in: inbox)
            } throws: { e in
                guard let e = e as? MailError else { return false }
                return e.kind == .corrupt && e.description.contains(dir + "/INBOX") && e.description.contains("truncated")
            }
            try write(dir + "/.INBOX.mailferry", "mailferry-mbox 1\nm x y\n")
            await #expect {
                _ = try await MboxStore(root: dir, create: false).listMessages(in: inbox)
            } throws: { e in
                (e as? MailError)?.description.contains(".INBOX.mailferry") == true
            }
        }
    }

    @Test func anInterruptedAppendIsCutOffAndNeverListed() async throws {
        try await withTempDirectory { dir in
            let store = try MboxStore(root: dir, create: true)
            try await store.createFolder(inbox)
            let a = Array("Subject: a\n\na\n".utf8)
            _ = try await appendAll(store, inbox, [(a, [], nil)])
            let size = try #require(try FileManager.default.attributesOfItem(atPath: dir + "/INBOX")[.size] as? Int)
            // What a crash mid-append leaves: the intent line and half a message.
            let idx = try #require(FileHandle(forWritingAtPath: dir + "/.INBOX.mailferry"))
            try idx.seekToEnd(); try idx.write(contentsOf: Data("p 2 \(size)\n".utf8)); try idx.close()
            let mb = try #require(FileHandle(forWritingAtPath: dir + "/INBOX"))
            try mb.seekToEnd(); try mb.write(contentsOf: Data("From MAILER-DAEMON Thu Jan  1 00:00:00 1970\nSubject: half".utf8)); try mb.close()
            let fresh = try MboxStore(root: dir, create: false)
            #expect(try await fresh.listMessages(in: inbox).messages.count == 1)
            let b = Array("Subject: b\n\nb\n".utf8)
            _ = try await appendAll(fresh, inbox, [(b, [.seen], nil)])
            let listing = try await fresh.listMessages(in: inbox)
            #expect(listing.messages.count == 2)
            let bodies = try await collect(fresh, listing.messages.map(\.id), in: inbox)
            #expect(Set(bodies.values) == [a, b])
            #expect(!String(decoding: try read(dir + "/INBOX"), as: UTF8.self).contains("half"))
        }
    }

    @Test func locks() async throws {
        try await withTempDirectory { dir in
            let store = try MboxStore(root: dir, create: true)
            try await store.createFolder(inbox)
            // A live process's lock is honoured...
            try write(dir + "/INBOX.lock", "\(getpid())\n")
            store.lockTimeout = 0.2
            await #expect {
                _ = try await store.append(to: inbox, AppendRequest(), body: .bytes(Array("x\n".utf8))).result()
            } throws: { e in
                guard let e = e as? MailError else { return false }
                return e.kind == .storage && e.description.contains("INBOX.lock")
            }
            // ...a dead one's is broken.
            try write(dir + "/INBOX.lock", "2147483646\n")
            _ = try await store.append(to: inbox, AppendRequest(), body: .bytes(Array("x\n".utf8))).result()
            #expect(!FileManager.default.fileExists(atPath: dir + "/INBOX.lock"))
        }
    }

    @Test func concurrentAppendersDoNotInterleave() async throws {
        try await withTempDirectory { dir in
            let setup = try MboxStore(root: dir, create: true)
            try await setup.createFolder(inbox)
            let msgs = (0..<40).map { i in Array("Subject: \(i)\n\n".utf8) + Array(repeating: UInt8(ascii: "a") + UInt8(i % 26), count: 20_000) + [0x0A] }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for w in 0..<4 {
                    group.addTask {
                        let s = try MboxStore(root: dir, create: false)
                        for i in stride(from: w, to: msgs.count, by: 4) {
                            _ = try await s.append(to: .inbox, AppendRequest(), body: .bytes(msgs[i])).result()
                        }
                    }
                }
                try await group.waitForAll()
            }
            let listing = try await MboxStore(root: dir, create: false).listMessages(in: inbox)
            #expect(listing.messages.count == msgs.count)
            let bodies = try await collect(setup, listing.messages.map(\.id), in: inbox)
            #expect(Set(bodies.values) == Set(msgs))
        }
    }
}

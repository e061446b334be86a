import Foundation
import Synchronization
import MailModel
import MailStore
import SyncState
import Testing
@testable import ArchiveStore

/// Issue 9: folder names a hostile server may send (`../`, `/`, NUL, control
/// characters) never make a local destination write outside its root, and
/// everything mailferry writes is private (0600 files, 0700 directories)
/// whatever the umask.
@Suite("Hostile folder names and file modes", .serialized)
struct HostileNamesAndModesTests {
    static let hostile: [[String]] = [
        [".."], ["..", ".."], ["..", "etc", "passwd"], ["../../escape"], ["a/../../b"], ["/abs"], ["/"],
        ["."], [".", "x"], ["x", "..", "..", ".."], ["~"], ["nul\u{0}byte"], ["\u{0}"],
        ["ctl\u{1}\u{7}\u{1b}[31m\u{7f}"], ["new\nline"], ["cr\rlf"], ["tab\tname"], ["INBOX", ".."],
        ["cur"], ["new"], ["tmp"], [".hidden"], ["-rf"], ["%2E%2E"], ["..%2F.."], ["\\..\\.."],
    ]

    static let message = Array("Subject: hostile name\r\nMessage-ID: <h@x>\r\n\r\nbody\r\n".utf8)

    enum Kind: String, CaseIterable, CustomStringConvertible {
        case maildir, mbox, archiveMaildir, archiveMbox
        var description: String { rawValue }
    }

    func open(_ kind: Kind, _ root: String) throws -> any MailStore {
        switch kind {
        case .maildir: return try MaildirStore(root: root, create: true)
        case .mbox: return try MboxStore(root: root, create: true)
        case .archiveMaildir:
            return try ArchiveStore.open(path: root, options: ArchiveOptions(format: .maildir, compression: .zstd), create: true,
                                         logger: testLogger)
        case .archiveMbox:
            return try ArchiveStore.open(path: root, options: ArchiveOptions(format: .mbox, compression: .none), create: true,
                                         logger: testLogger)
        }
    }

    /// Every path under `dir`, without following symbolic links.
    func walk(_ dir: String) -> [String] {
        var out: [String] = []
        guard let e = FileManager.default.enumerator(atPath: dir) else { return out }
        while let p = e.nextObject() as? String { out.append(dir + "/" + p) }
        return out
    }

    @Test(arguments: Kind.allCases)
    func hostileFolderNamesStayInsideTheRoot(_ kind: Kind) async throws {
        let sandbox = makeTempDir("hostile")
        defer { removeTree(sandbox) }
        let root = sandbox + "/inside/dest"
        try FileManager.default.createDirectory(atPath: sandbox + "/inside", withIntermediateDirectories: true)
        let before = Set(walk(sandbox))
        let store = try open(kind, root)
        var accepted: [FolderPath: MessageID?] = [:]
        for comps in Self.hostile {
            guard let folder = FolderPath(components: comps) else { continue }
            do {
                try await store.createFolder(folder)
                let r = try await store.append(to: folder, AppendRequest(flags: [.seen]), body: .bytes(Self.message)).result()
                accepted[folder] = r.id
            } catch let e as MailError {
                // Refusing a name is fine; it must say which folder.
                #expect(!e.message.isEmpty)
            }
        }
        try await store.close()
        // Nothing new outside the root.
        let after = Set(walk(sandbox)).subtracting(before)
        let outside = after.filter { $0 != root && !$0.hasPrefix(root + "/") }
        #expect(outside.isEmpty, "written outside \(root): \(outside.sorted())")
        // No symbolic links were made inside it either.
        for p in walk(root) {
            let attrs = try FileManager.default.attributesOfItem(atPath: p)
            #expect(attrs[.type] as? FileAttributeType != .typeSymbolicLink, "symlink \(p)")
        }
        // What was accepted reads back under the same name, with the same bytes.
        let reader = try open(kind, root)
        let listed = Set(try await reader.folders().map(\.path))
        for (folder, id) in accepted {
            #expect(listed.contains(folder), "\(folder.components.debugDescription) not listed back")
            let listing = try await reader.listMessages(in: folder)
            #expect(listing.messages.count == 1, "\(folder.components.debugDescription)")
            if let id = id ?? listing.messages.first?.id {
                let got = Mutex<[UInt8]>([])
                _ = try await reader.fetchMessages([id], in: folder) { _, body in
                    let b = Array(try await body.collect().readableBytesView)
                    got.withLock { $0 = b }
                }
                #expect(got.withLock { $0 } == Self.message, "\(folder.components.debugDescription)")
            }
        }
        try await reader.close()
        #expect(accepted.count >= Self.hostile.count / 2, "\(kind) refused most hostile names: only \(accepted.count) kept")
    }

    @Test(arguments: Kind.allCases)
    func filesArePrivateWhateverTheUmask(_ kind: Kind) async throws {
        let sandbox = makeTempDir("modes")
        defer { removeTree(sandbox) }
        let old = umask(0)
        defer { umask(old) }
        let root = sandbox + "/dest"
        let store = try open(kind, root)
        for f in [FolderPath.inbox, FolderPath("Archive/2024")!] {
            try await store.createFolder(f)
            for _ in 0..<2 {
                _ = try await store.append(to: f, AppendRequest(), body: .bytes(Self.message)).result()
            }
        }
        try await store.close()
        let state = try SQLiteStateStore(path: sandbox + "/state/state.sqlite")
        _ = state
        var checked = 0
        for p in walk(root) + walk(sandbox + "/state") {
            let attrs = try FileManager.default.attributesOfItem(atPath: p)
            let mode = (attrs[.posixPermissions] as? Int) ?? -1
            #expect(mode & 0o077 == 0, "\(p) is \(String(mode, radix: 8)) with umask 000")
            checked += 1
        }
        #expect(checked > 3)
    }
}

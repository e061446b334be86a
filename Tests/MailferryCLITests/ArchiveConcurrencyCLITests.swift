import Foundation
import MailModel
import MailTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// What a restored Maildir tree holds: (folder, flags, bytes, mtime) of every
/// message file, as a multiset. Two trees are equal when they hold the same
/// messages in the same folders with the same flags and INTERNALDATEs.
func maildirImage(_ root: String) -> [String: Int] {
    var out: [String: Int] = [:]
    let fm = FileManager.default
    guard let walker = fm.enumerator(atPath: root) else { return out }
    while let rel = walker.nextObject() as? String {
        let parts = rel.split(separator: "/").map(String.init)
        guard parts.count >= 2, ["cur", "new"].contains(parts[parts.count - 2]) else { continue }
        let full = root + "/" + rel
        guard let data = fm.contents(atPath: full) else { continue }
        let folder = parts.dropLast(2).joined(separator: "/")
        let name = parts[parts.count - 1]
        let flags = name.range(of: ":2,").map { String(name[$0.upperBound...]) } ?? ""
        let mtime = ((try? fm.attributesOfItem(atPath: full)[.modificationDate]) as? Date)?.timeIntervalSince1970 ?? 0
        let key = "\(folder)|\(flags)|\(Int64(mtime))|\(MessageKey.of(Array(data)).hex)"
        out[key, default: 0] += 1
    }
    return out
}

func jsonDictionary(_ text: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
}

/// Holds an archive's writers' lock as a running backup does (flock, pid in the file).
final class HeldArchiveLock {
    let fd: Int32
    init?(_ path: String, name: String = "lock", shared: Bool = false) {
        fd = open(path + "/" + name, O_RDWR | O_CREAT, 0o600)
        guard fd >= 0, flock(fd, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0 else { return nil }
        if !shared {
            let pid = "\(getpid())\n"
            _ = ftruncate(fd, 0)
            _ = pid.withCString { pwrite(fd, $0, strlen($0), 0) }
        }
    }
    func release() {
        _ = ftruncate(fd, 0)
        close(fd)
    }
}

@Suite("Archives: parallel backup and readers beside a backup (binary, local stores)")
struct ArchiveConcurrencyCLITests {
    /// `backup --parallel 3` gives the archive `--parallel 1` gives; messages
    /// present in two folders are stored once.
    @Test func parallelBackupEqualsSerial() throws {
        let dir = try TempDir()
        let (src, made) = try LocalEndToEndTests.makeSource(in: dir, count: 30)
        // Byte copies of INBOX messages in another folder.
        let inbox = src + "/cur"
        let copies = src + "/Copies"
        for sub in ["cur", "new", "tmp"] {
            try FileManager.default.createDirectory(atPath: copies + "/" + sub, withIntermediateDirectories: true)
        }
        let inboxFiles = try FileManager.default.contentsOfDirectory(atPath: inbox).sorted().prefix(8)
        for (i, f) in inboxFiles.enumerated() {
            try FileManager.default.copyItem(atPath: inbox + "/" + f, toPath: copies + "/cur/\(1_800_000_000 + i).C\(i)P1.test:2,F")
        }
        let total = made.values.reduce(0) { $0 + $1.count } + inboxFiles.count
        let distinct = Set(made.values.flatMap { $0 }).count
        var lists: [[String: Any]] = []
        var images: [[String: Int]] = []
        for n in [1, 3] {
            let arch = dir.path + "/arch\(n)"
            let b = try CLI.mailferry(["backup", "--from", "maildir:" + src, "--to", "archive:" + arch, "--parallel", "\(n)",
                                       "--state", dir.path + "/b\(n).sqlite", "--json"])
            #expect(b.status == 0, "--parallel \(n): \(b.stderr)")
            let l = try CLI.mailferry(["archive", "list", arch, "--json"])
            #expect(l.status == 0, "\(l.stderr)")
            lists.append(jsonDictionary(l.stdout))
            #expect(try CLI.mailferry(["archive", "check", arch]).status == 0)
            let r = try CLI.mailferry(["restore", "--from", "archive:" + arch, "--to", "maildir:" + dir.path + "/restored\(n)",
                                       "--state", dir.path + "/r\(n).sqlite"])
            #expect(r.status == 0, "\(r.stderr)")
            images.append(maildirImage(dir.path + "/restored\(n)"))
        }
        for k in ["storedMessages", "storedBytes", "liveLocations", "folders"] {
            #expect("\(lists[0][k] ?? "-")" == "\(lists[1][k] ?? "-")", "\(k)")
        }
        #expect(lists[1]["storedMessages"] as? Int == distinct)
        #expect(lists[1]["liveLocations"] as? Int == total)
        #expect((lists[1]["runs"] as? [Any])?.count == 1)
        #expect(images[0] == images[1])
        #expect(images[1].values.reduce(0, +) == total)
    }

    /// While a backup holds the archive, `archive list`, `archive check` and
    /// `restore` work; `archive prune` and another backup exit 5 naming the
    /// holder's pid. While a reader is open, a prune exits 5.
    @Test func readersWorkWhileABackupHoldsTheLock() throws {
        let dir = try TempDir()
        let (src, made) = try LocalEndToEndTests.makeSource(in: dir, count: 6)
        let arch = dir.path + "/arch"
        let b = try CLI.mailferry(["backup", "--from", "maildir:" + src, "--to", "archive:" + arch, "--state", dir.path + "/b.sqlite"])
        #expect(b.status == 0, "\(b.stderr)")

        let held = try #require(HeldArchiveLock(arch))
        let l = try CLI.mailferry(["archive", "list", arch, "--json"])
        #expect(l.status == 0, "\(l.stderr)")
        #expect(jsonDictionary(l.stdout)["storedMessages"] as? Int == made.values.reduce(0) { $0 + $1.count })
        let c = try CLI.mailferry(["archive", "check", arch])
        #expect(c.status == 0, "\(c.stderr)")
        let r = try CLI.mailferry(["restore", "--from", "archive:" + arch, "--to", "maildir:" + dir.path + "/restored",
                                   "--state", dir.path + "/r.sqlite"])
        #expect(r.status == 0, "\(r.stderr)")
        let p = try CLI.mailferry(["archive", "prune", arch, "--deleted-before", "2030-01-01"])
        #expect(p.status == 5, "\(p.stderr)")
        #expect(p.stderr.contains("locked by pid \(getpid())"), "\(p.stderr)")
        let again = try CLI.mailferry(["backup", "--from", "maildir:" + src, "--to", "archive:" + arch,
                                       "--state", dir.path + "/b2.sqlite"])
        #expect(again.status == 5, "\(again.stderr)")
        #expect(again.stderr.contains("locked by pid \(getpid())"), "\(again.stderr)")
        held.release()

        let reader = try #require(HeldArchiveLock(arch, name: "lock.readers", shared: true))
        let p2 = try CLI.mailferry(["archive", "prune", arch, "--deleted-before", "2030-01-01"])
        #expect(p2.status == 5, "\(p2.stderr)")
        #expect(p2.stderr.contains("being read"), "\(p2.stderr)")
        reader.release()
        let p3 = try CLI.mailferry(["archive", "prune", arch, "--deleted-before", "2030-01-01"])
        #expect(p3.status == 0, "\(p3.stderr)")
    }
}

/// Parallel against serial backup from the real Dovecot fixture, with the
/// corpus in several folders and copies across folders; prints both times.
@Suite(.serialized, .enabled(if: DovecotFixture.serverTestsEnabled, "MAILFERRY_SKIP_SERVER_TESTS=1"))
struct DovecotParallelBackupTests {
    @Test func parallelBackupFromIMAPEqualsSerial() async throws {
        guard let corpus = try Corpus.load() else {
            print(Corpus.absentMessage)
            return
        }
        let f = try DovecotFixture.shared()
        let u = f.makeUser(prefix: "parbackup")
        let all = try corpus.messages.prefix(240).map { try $0.load() }
        let flagChoices: [Flags] = [[], [.seen], [.seen, .flagged], [.answered, .seen]]
        func seeds(_ r: Range<Int>) -> [SeedMessage] {
            r.map { i in SeedMessage(all[i], flags: flagChoices[i % flagChoices.count],
                                     internalDate: InternalDate(secondsSinceEpoch: 1_600_000_000 + Int64(i) * 3_601)) }
        }
        let plan: [(String, Range<Int>)] = [("INBOX", 0..<100), ("Work", 100..<170), ("Lists/Été", 170..<240), ("Copies", 0..<40)]
        for (folder, r) in plan where r.upperBound <= all.count {
            if folder != "INBOX" { try f.createFolder(user: u.user, folder) }
            _ = try f.seed(user: u.user, folder: folder, messages: seeds(r))
        }
        let total = plan.filter { $0.1.upperBound <= all.count }.reduce(0) { $0 + $1.1.count }
        let distinct = Set(all.map { MessageKey.of($0) }).count

        let dir = try TempDir()
        let env = ["MAILFERRY_FROM_PASSWORD": u.password]
        var lists: [[String: Any]] = []
        var images: [[String: Int]] = []
        var seconds: [Int: Double] = [:]
        for n in [1, 4] {
            let arch = dir.path + "/arch\(n)"
            let started = Date()
            let b = try CLI.mailferry(["backup", "--from", "imaps://\(u.user)@\(f.host):\(f.imapsPort)", "--ca-file", f.caFile,
                                       "--to", "archive:" + arch, "--parallel", "\(n)", "--state", dir.path + "/b\(n).sqlite",
                                       "--json"], env: env, timeout: 600)
            seconds[n] = Date().timeIntervalSince(started)
            #expect(b.status == 0, "--parallel \(n): \(b.stderr)")
            let l = try CLI.mailferry(["archive", "list", arch, "--json"])
            lists.append(jsonDictionary(l.stdout))
            let c = try CLI.mailferry(["archive", "check", arch])
            #expect(c.status == 0, "\(c.stderr)")
            let r = try CLI.mailferry(["restore", "--from", "archive:" + arch, "--to", "maildir:" + dir.path + "/restored\(n)",
                                       "--state", dir.path + "/r\(n).sqlite"], timeout: 600)
            #expect(r.status == 0, "\(r.stderr)")
            images.append(maildirImage(dir.path + "/restored\(n)"))
        }
        // The same through 10 ms of latency each way, as a remote server has:
        // where parallel connections pay off. Times are printed, not asserted.
        let proxy = try await FaultProxy.start(upstreamPort: f.imapsPort, faults: [.latency(oneWay: .milliseconds(10))])
        var remote: [Int: Double] = [:]
        for n in [1, 4] {
            let arch = dir.path + "/remote\(n)"
            let started = Date()
            let b = try CLI.mailferry(["backup", "--from", "imaps://\(u.user)@\(f.host):\(proxy.port)", "--ca-file", f.caFile,
                                       "--to", "archive:" + arch, "--parallel", "\(n)", "--state", dir.path + "/rb\(n).sqlite"],
                                      env: env, timeout: 600)
            remote[n] = Date().timeIntervalSince(started)
            #expect(b.status == 0, "through the proxy, --parallel \(n): \(b.stderr)")
            let l = jsonDictionary(try CLI.mailferry(["archive", "list", arch, "--json"]).stdout)
            for k in ["storedMessages", "storedBytes", "liveLocations", "folders"] {
                #expect("\(l[k] ?? "-")" == "\(lists[0][k] ?? "-")", "through the proxy, --parallel \(n): \(k)")
            }
        }
        await proxy.stop()
        print("backup of \(total) messages (\(distinct) distinct) in \(plan.count) folders from Dovecot: "
              + String(format: "direct: --parallel 1 %.2f s, --parallel 4 %.2f s; ", seconds[1] ?? 0, seconds[4] ?? 0)
              + String(format: "10 ms each way: --parallel 1 %.2f s, --parallel 4 %.2f s", remote[1] ?? 0, remote[4] ?? 0))
        for k in ["storedMessages", "storedBytes", "liveLocations", "folders"] {
            #expect("\(lists[0][k] ?? "-")" == "\(lists[1][k] ?? "-")", "\(k)")
        }
        #expect(lists[1]["storedMessages"] as? Int == distinct, "copies across folders stored once")
        #expect(lists[1]["liveLocations"] as? Int == total)
        #expect(images[0] == images[1], "the same folders, bytes, flags and dates")
        #expect(images[1].values.reduce(0, +) == total)
    }
}

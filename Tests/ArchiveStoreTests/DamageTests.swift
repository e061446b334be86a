import Foundation
import MailModel
import MailStore
import Testing
@testable import ArchiveStore

func sampleMessages(_ n: Int, tag: String = "m", bodyLines: Int = 40) -> [[UInt8]] {
    (0..<n).map { i in
        var s = "From: a@example.org\r\nSubject: \(tag) \(i)\r\nMessage-ID: <\(tag)\(i)@example.org>\r\n\r\n"
        for l in 0..<bodyLines { s += "MARKER-\(tag)-\(i) line \(l) \(String(repeating: "x", count: l % 50))\r\n" }
        return Array(s.utf8)
    }
}

/// Writes one run of messages and closes it.
@discardableResult
func backupRun(_ path: String, _ msgs: [[UInt8]], folder: FolderPath = .inbox, options: ArchiveOptions = ArchiveOptions(),
               fault: ArchiveStore.FaultPoint? = nil) async throws -> [Placed] {
    let s = try ArchiveStore.open(path: path, options: options, create: true, logger: testLogger)
    s.faultPoint = fault
    let placed = try await appendAll(s, msgs.map { (folder, [Flag.seen], InternalDate(secondsSinceEpoch: 1_650_000_000), $0) })
    try await s.close()
    return placed
}

func flipByte(_ file: String, at offset: Int) throws {
    var d = try Data(contentsOf: URL(fileURLWithPath: file))
    d[offset] ^= 0x55
    try d.write(to: URL(fileURLWithPath: file))
}

func fetchAll(_ path: String) async throws -> Int {
    let s = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
    do {
        let n = try await readEverything(s).values.reduce(0) { $0 + $1.count }
        try await s.close()
        return n
    } catch {
        try? await s.close()
        throw error
    }
}

@Suite("Archive damage, crashes and hostile volumes", .serialized)
struct DamageTests {
    @Test(arguments: [ArchiveCompression.zstd, .gzip, .none])
    func checkCatchesAFlippedByte(compression: ArchiveCompression) async throws {
        let dir = makeTempDir("flip")
        defer { removeTree(dir) }
        let path = dir + "/set"
        try await backupRun(path, sampleMessages(30), options: ArchiveOptions(compression: compression))
        let s = try ArchiveStore.open(path: path, create: false, logger: testLogger)
        #expect(try s.check().isClean)
        try await s.close()

        let vol = path + "/volumes/" + volumeFiles(path)[0]
        let bytes = try Data(contentsOf: URL(fileURLWithPath: vol))
        // Uncompressed: hit the body of message 17 exactly; compressed: the middle.
        var offset = bytes.count / 2
        if compression == .none, let r = bytes.range(of: Data("MARKER-m-17 line 20".utf8)) { offset = r.lowerBound + 3 }
        try flipByte(vol, at: offset)

        let c = try ArchiveStore.open(path: path, create: false, logger: testLogger)
        let report = try c.check()
        try await c.close()
        #expect(!report.isClean)
        #expect(report.error?.exitCode == 6)
        #expect(report.problems.allSatisfy { $0.volume == "v000001" + compression.fileExtension })
        #expect(report.problems.contains { $0.message.contains("SHA-256") })
        if compression == .none {
            // The damaged message is named with its entry.
            #expect(report.problems.contains { $0.entry?.contains("cur/") == true && $0.message.contains("damaged") },
                    "\(report.problems)")
        }
        // Reading the damaged message fails with a corrupt-archive error, never silently.
        do {
            _ = try await fetchAll(path)
            Issue.record("a damaged volume was read without error")
        } catch let e as MailError {
            #expect(e.kind == .corrupt)
            #expect(e.exitCode == 6)
            #expect(e.message.contains("v000001"))
        }
    }

    @Test(arguments: [ArchiveCompression.zstd, .xz, .none])
    func checkCatchesATruncatedVolume(compression: ArchiveCompression) async throws {
        let dir = makeTempDir("trunc")
        defer { removeTree(dir) }
        let path = dir + "/set"
        try await backupRun(path, sampleMessages(30), options: ArchiveOptions(compression: compression,
                                                                              compressionLevel: compression == .xz ? 1 : nil))
        let vol = path + "/volumes/" + volumeFiles(path)[0]
        let size = try FileManager.default.attributesOfItem(atPath: vol)[.size] as? Int ?? 0
        #expect(truncate(vol, off_t(size / 2)) == 0)
        let c = try ArchiveStore.open(path: path, create: false, logger: testLogger)
        let report = try c.check()
        try await c.close()
        #expect(!report.isClean)
        #expect(report.error?.exitCode == 6)
        #expect(report.messagesChecked < 30)
        await #expect(throws: MailError.self) { _ = try await fetchAll(path) }

        // A missing volume file is reported too.
        unlink(vol)
        let m = try ArchiveStore.open(path: path, create: false, logger: testLogger)
        let r2 = try m.check()
        try await m.close()
        #expect(r2.problems.contains { $0.message.contains("missing") })
    }

    /// A run that fails while sealing its volume (full disk, a crash before or
    /// after the rename, a failing catalog commit) leaves the set exactly as it
    /// was; the next run completes it.
    @Test(arguments: [ArchiveStore.FaultPoint.writingVolume(afterBytes: 300), .beforeRename, .afterRename, .duringCommit])
    func failedRunLeavesTheSetAsItWas(fault: ArchiveStore.FaultPoint) async throws {
        let dir = makeTempDir("fault")
        defer { removeTree(dir) }
        let path = dir + "/set"
        let first = try await backupRun(path, sampleMessages(10, tag: "a"))
        let more = sampleMessages(10, tag: "b")

        let s = try ArchiveStore.open(path: path, create: true, logger: testLogger)
        s.faultPoint = fault
        var lostIDs: [MessageID] = []
        do {
            lostIDs = try await appendAll(s, more.map { (.inbox, [], .now(), $0) }).map(\.id)
            try await s.setFlags([.flagged], .add, for: [first[0].id], in: .inbox)
            try await s.delete([first[1].id], in: .inbox)
            try await s.close()
            Issue.record("the injected failure did not surface")
        } catch let e as MailError {
            #expect(e.kind == .storage)
        }
        #expect(volumeFiles(path) == ["v000001.tar.zst"])

        let c = try ArchiveStore.open(path: path, create: false, logger: testLogger)
        #expect(try c.check().isClean)
        let listing = try c.list()
        #expect(listing.runs.count == 1)
        #expect(listing.liveLocations == 10)
        try await c.close()

        // The next run completes the set.
        let s2 = try ArchiveStore.open(path: path, create: true, logger: testLogger)
        let redone = try await appendAll(s2, more.reversed().map { (.inbox, [], .now(), $0) })
        // Ids the lost run handed out are never handed out again (a transfer
        // state may remember them with the lost messages' keys).
        #expect(Set(redone.map(\.id)).isDisjoint(with: lostIDs))
        #expect(!lostIDs.isEmpty)
        try await s2.delete([first[1].id], in: .inbox)
        try await s2.close()
        let d = try ArchiveStore.open(path: path, create: false, logger: testLogger)
        #expect(try d.check().isClean)
        #expect(try d.list().liveLocations == 19)
        try await d.close()
        #expect(try await fetchAll(path) == 19)
    }

    /// A run whose volumes reach the size limit commits as it goes; if it
    /// then dies, what it committed stays and `check` is clean.
    @Test func checkpointsKeepWhatARunStored() async throws {
        let dir = makeTempDir("checkpoint")
        defer { removeTree(dir) }
        let path = dir + "/set"
        let msgs = sampleMessages(40, bodyLines: 200)
        let s = try ArchiveStore.open(path: path, options: ArchiveOptions(compression: .none, volumeSizeLimit: 64 * 1024),
                                      create: true, logger: testLogger)
        s.faultPoint = .duringCommit
        var placed: [Placed] = []
        do {
            placed = try await appendAll(s, msgs.map { (.inbox, [.seen], .now(), $0) })
            try await s.setFlags([.flagged], .add, for: [placed[0].id], in: .inbox)
            // Listing and reading across committed and pending parts of the run.
            #expect(try await s.listMessages(in: .inbox).messages.count == 40)
            #expect(try await readEverything(s)[.inbox]?.count == 40)
            try await s.close()
            Issue.record("the injected failure did not surface")
        } catch let e as MailError {
            #expect(e.kind == .storage)
        }
        let c = try ArchiveStore.open(path: path, create: false, logger: testLogger)
        let listing = try c.list()
        #expect(try c.check().isClean)
        try await c.close()
        #expect(listing.runs.count == 1)
        #expect(listing.volumes.count >= 2)
        #expect(listing.storedMessages > 0 && listing.storedMessages < 40)
        #expect(listing.liveLocations == listing.storedMessages)
        #expect(listing.runs[0].volumes == listing.volumes.map(\.name))
        // The next run stores only what is missing.
        let s2 = try ArchiveStore.open(path: path, create: true, logger: testLogger)
        _ = try await appendAll(s2, msgs.map { (.inbox, [.seen], .now(), $0) })
        try await s2.close()
        let d = try ArchiveStore.open(path: path, create: false, logger: testLogger)
        #expect(try d.list().storedMessages == 40)
        #expect(try d.check().isClean)
        try await d.close()
    }

    @Test func leftoversOfACrashAreCleanedOnOpen() async throws {
        let dir = makeTempDir("leftover")
        defer { removeTree(dir) }
        let path = dir + "/set"
        try await backupRun(path, sampleMessages(3))
        let vols = path + "/volumes/"
        FileManager.default.createFile(atPath: vols + ".v000002.tar.zst.1234abcd.tmp", contents: Data("half".utf8))
        FileManager.default.createFile(atPath: vols + "v000002.tar.zst", contents: Data("unreferenced".utf8))
        // A read-only open leaves them (another run may own them)…
        let r = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        try await r.close()
        #expect(volumeFiles(path).count == 3)
        // …a writer removes them.
        let w = try ArchiveStore.open(path: path, create: false, logger: testLogger)
        #expect(volumeFiles(path) == ["v000001.tar.zst"])
        #expect(try w.check().isClean)
        try await w.close()
    }

    /// The child half of the SIGKILL test: appends forever into an open run.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["MAILFERRY_ARCHIVE_KILL_CHILD"] != nil))
    func killChild() async throws {
        let env = ProcessInfo.processInfo.environment
        let path = try #require(env["MAILFERRY_ARCHIVE_KILL_CHILD"])
        let s = try ArchiveStore.open(path: path, create: true, logger: testLogger)
        for i in 0..<100_000 {
            _ = try await appendAll(s, [(.inbox, [], .now(), sampleMessages(1, tag: "k\(i)", bodyLines: 2000)[0])])
            if i == 20 { FileManager.default.createFile(atPath: path + ".ready", contents: Data()) }
            try await Task.sleep(nanoseconds: 2_000_000)
        }
        try await s.close()
    }

    /// A backup killed with SIGKILL mid-volume leaves `check` clean and the
    /// next run completes the set.
    @Test func sigkillMidVolume() async throws {
        let exe = CommandLine.arguments[0]
        guard exe.hasSuffix(".xctest") || FileManager.default.isExecutableFile(atPath: exe) else {
            Issue.record("cannot find the test executable to run the child")
            return
        }
        let dir = makeTempDir("kill")
        defer { removeTree(dir) }
        let path = dir + "/set"
        try await backupRun(path, sampleMessages(5))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = ["--testing-library", "swift-testing", "--filter", "killChild"]
        p.environment = ProcessInfo.processInfo.environment.merging(["MAILFERRY_ARCHIVE_KILL_CHILD": path]) { $1 }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        var waited = 0
        while !FileManager.default.fileExists(atPath: path + ".ready") && waited < 600 && p.isRunning {
            try await Task.sleep(nanoseconds: 100_000_000)
            waited += 1
        }
        try #require(FileManager.default.fileExists(atPath: path + ".ready"), "the child never got going")
        // It is mid-volume: a temporary volume file exists.
        #expect(volumeFiles(path).contains { $0.hasPrefix(".v000002") && $0.hasSuffix(".tmp") })
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(p.terminationReason == .uncaughtSignal)

        let c = try ArchiveStore.open(path: path, create: false, logger: testLogger)
        #expect(try c.check().isClean)
        #expect(try c.list().runs.count == 1)
        try await c.close()
        #expect(volumeFiles(path) == ["v000001.tar.zst"])
        try await backupRun(path, sampleMessages(5, tag: "after"))
        let d = try ArchiveStore.open(path: path, create: false, logger: testLogger)
        #expect(try d.check().isClean)
        #expect(try d.list().liveLocations == 10)
        try await d.close()
    }

    // MARK: - Hostile volumes

    static let hostileKinds = ["dotdot", "absolute", "symlink", "hardlink", "chardev", "fifo", "dotdot-dir", "benign"]

    /// Volumes crafted by Python's tarfile: every hostile entry is refused with
    /// a `.corrupt` error naming the volume and the entry.
    @Test(arguments: hostileKinds)
    func hostileEntriesAreRefused(kind: String) throws {
        let dir = makeTempDir("hostile")
        defer { removeTree(dir) }
        let script = #"""
        import io, sys, tarfile
        out, kind = sys.argv[1], sys.argv[2]
        with tarfile.open(out, "w:gz", format=tarfile.PAX_FORMAT) as t:
            data = b"Subject: x\r\n\r\nhi\r\n"
            def add(name, typ=tarfile.REGTYPE, link="", payload=data):
                ti = tarfile.TarInfo(name); ti.type = typ; ti.linkname = link; ti.mode = 0o600
                ti.size = len(payload) if typ == tarfile.REGTYPE else 0
                t.addfile(ti, io.BytesIO(payload) if typ == tarfile.REGTYPE else None)
            add("cur/ok:2,S")
            if kind == "dotdot": add("cur/../../evil")
            if kind == "dotdot-dir": add("../outside/cur/x")
            if kind == "absolute": add("/etc/evil")
            if kind == "symlink": add("cur/link", tarfile.SYMTYPE, "/etc/passwd")
            if kind == "hardlink": add("cur/hard", tarfile.LNKTYPE, "cur/ok:2,S")
            if kind == "chardev": add("dev/null", tarfile.CHRTYPE)
            if kind == "fifo": add("cur/fifo", tarfile.FIFOTYPE)
            if kind == "benign": add("cur/plain")
        """#
        try script.write(toFile: dir + "/make.py", atomically: true, encoding: .utf8)
        let tar = dir + "/hostile.tar.gz"
        let (status, out) = try run("/usr/bin/env", ["python3", dir + "/make.py", tar, kind])
        try #require(status == 0, "\(out)")
        let reader = try VolumeReader(path: tar, volumeName: "hostile.tar.gz")
        var entries: [String] = []
        do {
            while let e = try reader.next() { entries.append(e.path) }
            #expect(kind == "benign", "\(kind) was not refused: \(entries)")
        } catch let e as MailError {
            #expect(kind != "benign", "\(e)")
            #expect(e.kind == .corrupt)
            #expect(e.exitCode == 6)
            #expect(e.message.contains("hostile.tar.gz"))
            #expect(e.message.contains("entry "), "\(e.message)")
        }
    }

    /// An entry whose size differs from the catalog's is corrupt, named by volume and entry.
    @Test func sizeMismatchIsCorrupt() async throws {
        let dir = makeTempDir("size")
        defer { removeTree(dir) }
        let path = dir + "/set"
        let placed = try await backupRun(path, sampleMessages(1), options: ArchiveOptions(compression: .none))
        let s = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let entry = try s.catalog.messagesInVolume(1)[0].entryPath
        try await s.close()
        let script = #"""
        import io, sys, tarfile
        out, name, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
            ti = tarfile.TarInfo(name); ti.size = size; ti.mode = 0o600
            t.addfile(ti, io.BytesIO(b"x" * size))
        """#
        try script.write(toFile: dir + "/make.py", atomically: true, encoding: .utf8)
        let (status, out) = try run("/usr/bin/env", ["python3", dir + "/make.py", path + "/volumes/v000001.tar", entry,
                                                     String(placed[0].bytes.count + 7)])
        try #require(status == 0, "\(out)")
        let report = try await ArchiveStore.check(path: path, logger: testLogger)
        #expect(report.error?.exitCode == 6)
        #expect(report.problems.contains { $0.description.contains("v000001.tar") && $0.message.contains("does not match the catalog") },
                "\(report.problems)")
    }

    /// A volume swapped for a hostile one is caught by `check` and by a restore.
    @Test func hostileVolumeInASet() async throws {
        let dir = makeTempDir("hostile-set")
        defer { removeTree(dir) }
        let path = dir + "/set"
        let placed = try await backupRun(path, sampleMessages(1), options: ArchiveOptions(compression: .none))
        let s = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false, logger: testLogger)
        let entry = try s.catalog.messagesInVolume(1)[0].entryPath
        try await s.close()
        let script = #"""
        import io, sys, tarfile
        out, name, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
            ti = tarfile.TarInfo("cur/evil"); ti.type = tarfile.SYMTYPE; ti.linkname = "../../../../etc/passwd"
            t.addfile(ti)
            ti = tarfile.TarInfo(name); ti.size = size; ti.mode = 0o600
            t.addfile(ti, io.BytesIO(b"x" * size))
        """#
        try script.write(toFile: dir + "/make.py", atomically: true, encoding: .utf8)
        let (status, out) = try run("/usr/bin/env", ["python3", dir + "/make.py", path + "/volumes/v000001.tar", entry,
                                                     String(placed[0].bytes.count)])
        try #require(status == 0, "\(out)")
        let c = try ArchiveStore.open(path: path, create: false, logger: testLogger)
        let report = try c.check()
        try await c.close()
        #expect(report.problems.contains { $0.message.contains("symbolic link refused") }, "\(report.problems)")
        do {
            _ = try await fetchAll(path)
            Issue.record("a hostile volume was read")
        } catch let e as MailError {
            #expect(e.kind == .corrupt)
            #expect(e.message.contains("cur/evil"))
        }
    }
}


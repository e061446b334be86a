import ArchiveStore
import Foundation
import MailModel

/// `archive list|check|prune`.
enum ArchiveMaintenance {
    /// Opens the archive read-only (shared lock) for `body`, and closes it.
    static func withReadOnly<T>(_ path: String, _ body: (ArchiveStore) throws -> T) async throws -> T {
        let store = try ArchiveStore.open(path: path, options: ArchiveOptions(readOnly: true), create: false,
                                          logger: Diagnostics.makeLogger())
        do {
            let r = try body(store)
            try await store.close()
            return r
        } catch {
            try? await store.close()
            throw error
        }
    }

    static func list(path: String, output: OutputSettings) async throws {
        let l = try await withReadOnly(path) { try $0.list() }
        if output.json { return try JSONOutput.print(l) }
        var out = "VOLUME                       MESSAGES        SIZE  CREATED\n"
        for v in l.volumes {
            let size = ProgressRenderer.bytes(v.fileSize)
            out += v.name.padding(toLength: 28, withPad: " ", startingAt: 0) + " "
                + String(repeating: " ", count: max(0, 8 - String(v.messageCount).count)) + "\(v.messageCount)"
                + "  " + String(repeating: " ", count: max(0, 10 - size.count)) + size
                + "  \(v.createdAt.iso8601)" + (v.replaces.map { " (replaces \($0))" } ?? "") + "\n"
        }
        out += "\(l.volumes.count) volumes (\(ProgressRenderer.bytes(l.volumeBytes))), \(l.runs.count) runs, \(l.folders) folders, "
            + "\(l.storedMessages) messages stored (\(ProgressRenderer.bytes(l.storedBytes))), "
            + "\(l.liveLocations) live, \(l.deletedLocations) deleted on the source\n"
        FileHandle.standardOutput.write(Data(out.utf8))
    }

    static func check(path: String, output: OutputSettings) async throws {
        let r = try await withReadOnly(path) { try $0.check() }
        if output.json {
            try JSONOutput.print(r)
        } else if !output.quiet || !r.isClean {
            for p in r.problems.prefix(50) { Diagnostics.error("problem: \(p)") }
            if !output.quiet {
                FileHandle.standardOutput.write(Data(("checked \(r.volumesChecked) volumes, \(r.messagesChecked) messages, "
                    + "\(ProgressRenderer.bytes(r.bytesChecked)): " + (r.isClean ? "all whole" : "\(r.problems.count) problem(s)") + "\n").utf8))
            }
        }
        if !r.isClean { throw ExitCodeError(ExitStatus.corrupt.rawValue) }
    }

    static func prune(path: String, deletedBefore: Date, dryRun: Bool, output: OutputSettings) async throws {
        let cutoff = InternalDate(deletedBefore)
        if dryRun {
            let l = try await withReadOnly(path) { try $0.list() }
            let text = "dry run: would drop messages deleted on the source before \(cutoff.iso8601); "
                + "the archive has \(l.deletedLocations) location(s) marked deleted (of any date)\n"
            if output.json {
                try JSONOutput.print(["dryRun": "true", "deletedBefore": cutoff.iso8601, "deletedLocations": "\(l.deletedLocations)"])
            } else {
                FileHandle.standardOutput.write(Data(text.utf8))
            }
            return
        }
        let store = try ArchiveStore.open(path: path, options: ArchiveOptions(), create: false, logger: Diagnostics.makeLogger())
        let r: ArchivePruneReport
        do {
            r = try store.prune(deletedBefore: cutoff)
            try await store.close()
        } catch {
            try? await store.close()
            throw error
        }
        if output.json { return try JSONOutput.print(r) }
        if !output.quiet {
            FileHandle.standardOutput.write(Data(("pruned \(r.locationsRemoved) location(s), \(r.messagesRemoved) message(s), "
                + "\(ProgressRenderer.bytes(r.bytesRemoved)); \(r.rewritten.count) volume(s) rewritten; volumes now "
                + "\(ProgressRenderer.bytes(r.volumeBytesAfter)) (were \(ProgressRenderer.bytes(r.volumeBytesBefore)))\n").utf8))
        }
    }
}

/// Ends a command with an exit code after its output has been written.
struct ExitCodeError: Error {
    var code: Int32
    init(_ code: Int32) { self.code = code }
}

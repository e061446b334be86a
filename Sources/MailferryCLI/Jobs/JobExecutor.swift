import ArchiveStore
import Foundation
import Logging
import MailModel
import MailStore
import SyncState
import Transfer

/// Carries out one job: reads credentials, opens the state (taking the job
/// lock), runs the transfer engine with a progress callback, and turns its
/// report into the exit code and a few lines for a human.
enum JobExecutor {
    /// `pacingClock` is the clock the rate caps wait on (tests pass a virtual one).
    static func run(_ job: JobSpec, logger: Logger, progress: ProgressRenderer,
                    pacingClock: any PacingClock = SystemPacingClock()) async throws -> JobResult {
        // Archive options: what the archive side is, and how it is opened.
        var fromArchive = ArchiveOptions(readOnly: true)
        var toArchive = ArchiveOptions()
        switch job.kind {
        case .backup:
            toArchive.format = ArchiveFormat(rawValue: (job.format ?? .maildir).rawValue) ?? .maildir
            toArchive.compression = ArchiveCompression(rawValue: (job.compression ?? .zstd).rawValue) ?? .zstd
            toArchive.source = job.from.location.description
        case .restore:
            fromArchive.asOf = job.asOf.map { InternalDate($0) }
        case .verify:
            toArchive = ArchiveOptions(readOnly: true)
        case .migrate:
            break
        }
        // A dry run changes nothing: a local destination that does not exist yet is
        // planned against an empty stand-in in a temporary folder, removed after.
        var destinationEndpoint = job.to
        var standIn: String?
        if job.dryRun, let path = Self.localPath(job.to.location), !FileManager.default.fileExists(atPath: path) {
            let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("mailferry-dry-run-\(UUID().uuidString)").path
            standIn = tmp
            switch job.to.location {
            case .maildir: destinationEndpoint.location = .maildir(path: tmp)
            case .mbox: destinationEndpoint.location = .mbox(path: tmp)
            default: destinationEndpoint.location = .archive(path: tmp)
            }
            logger.info("dry run: \(job.to.location) does not exist yet; planning against an empty destination")
        }
        defer { if let standIn { try? FileManager.default.removeItem(atPath: standIn) } }

        let source = try await StoreFactory.prepare(job.from, side: .from, access: .read, logger: logger,
                                                    archiveOptions: fromArchive)
        let destinationAccess: StoreOpener.Access = job.kind == .verify || (job.dryRun && standIn == nil) ? .read : .write
        let destination = try await StoreFactory.prepare(destinationEndpoint, side: .to, access: destinationAccess, logger: logger,
                                                         archiveOptions: job.dryRun && standIn == nil ? ArchiveOptions(readOnly: true) : toArchive)

        var options = MigrationOptions()
        options.selection = FolderSelection(include: job.folders, exclude: job.exclude,
                                            map: job.map.map { Transfer.FolderMapping(old: $0.old, new: $0.new) },
                                            into: job.into)
        options.deleteSource = job.deleteSource
        options.dryRun = job.dryRun
        options.command = job.kind.rawValue
        options.parallel = job.parallel
        if job.maxBytesPerSecond != nil || job.maxMessagesPerSecond != nil {
            // One set of limiters for the whole job, shared by every source session.
            options.pacing = Pacing(bytesPerSecond: job.maxBytesPerSecond.map(Double.init),
                                    messagesPerSecond: job.maxMessagesPerSecond, clock: pacingClock)
        }
        if job.kind == .backup {
            // An archive records flag changes and deletions seen on the source.
            options.propagateFlags = true
            options.propagateDeletions = true
            // --parallel N: N source sessions fetch folders at once (the
            // transfer engine's workers); they share the archive's one run,
            // whose volume writer takes their messages one at a time.
        }

        // The state: the job lock and what makes re-runs cheap. Verify needs none.
        let state: any StateStore
        var sqlite: SQLiteStateStore?
        let statePath = job.statePath.map { ($0 as NSString).expandingTildeInPath }
            ?? SQLiteStateStore.defaultPath(jobID: SQLiteStateStore.jobID(for: [job.kind.rawValue, job.from.location.description,
                                                                                job.to.location.description]))
        if (job.kind == .verify && job.statePath == nil) || (job.dryRun && !FileManager.default.fileExists(atPath: statePath)) {
            // Verify needs no state; a first dry run must not create one.
            state = MemoryStateStore()
        } else {
            let path = statePath
            let s = try SQLiteStateStore(path: path)
            sqlite = s
            state = s
        }
        defer { sqlite?.close() }

        var engine = MigrationJob(source: { try await source.open() }, destination: { try await destination.open() },
                                  options: options, state: state, logger: logger)
        engine.sourceName = job.from.location.description
        engine.destinationName = job.to.location.description
        engine.progress = { p in
            var s = ProgressSnapshot()
            s.folder = p.folder?.description
            s.messagesDone = p.messagesDone
            s.messagesTotal = p.messagesTotal
            s.bytesDone = p.bytesDone
            s.bytesTotal = p.bytesTotal
            progress.update(s)
        }

        let started = Date()
        if job.kind == .verify {
            let report = try await engine.verify()
            return JobResult(report: report, exitCode: report.exitCode, summary: summary(verify: report, job: job))
        }
        let report = try await engine.run()
        if job.dryRun, !Diagnostics.settings.json, !Diagnostics.settings.quiet {
            FileHandle.standardOutput.write(Data((SecretRedactor.shared.redact(PlanPrinter.render(report)) + "\n").utf8))
        }
        return JobResult(report: report, exitCode: report.exitCode,
                         summary: summary(report, job: job, seconds: Date().timeIntervalSince(started)))
    }

    static func localPath(_ l: StoreLocation) -> String? {
        switch l {
        case .maildir(let p), .mbox(let p): return p
        case .archive(let p): return p + "/catalog.sqlite"
        default: return nil
        }
    }

    static func summary(_ r: Report, job: JobSpec, seconds: TimeInterval) -> [String] {
        let t = r.totals
        var line = "\(job.kind.rawValue)\(job.dryRun ? " (dry run)" : "") \(r.source) → \(r.destination): "
            + "\(t.found) found, \(t.copied) copied, \(t.duplicates) already there"
        if t.skipped > 0 { line += ", \(t.skipped) skipped" }
        if t.verified > 0 { line += ", \(t.verified) verified" }
        if t.deleted > 0 { line += ", \(t.deleted) deleted from the source" }
        line += ", \(r.failures.count) failed; \(ProgressRenderer.bytes(t.bytes)) in \(ProgressRenderer.duration(seconds))"
        var lines = [line]
        for f in r.failures.prefix(20) {
            lines.append("  failed: \(f.folder)\(f.sourceID.map { " message \($0)" } ?? ""): \(f.reason)")
        }
        if r.failures.count > 20 { lines.append("  … and \(r.failures.count - 20) more (see --report FILE.json)") }
        for d in r.droppedKeywords.prefix(5) {
            lines.append("  note: \(d.folder) message \(d.sourceID): the destination refused the keyword \(d.keyword); the message went through without it")
        }
        if let t = r.throttling {
            var note = "  note: the servers throttled \(t.throttles) time(s)"
            if t.connectionRefusals > 0 { note += " and refused \(t.connectionRefusals) connection(s) above their limit" }
            note += String(format: "; waited %.1f s", t.waitedSeconds)
            if t.lowestParallel < t.requestedParallel {
                note += "; parallelism lowered from \(t.requestedParallel) to \(t.lowestParallel) (\(t.finalParallel) at the end)"
            }
            lines.append(note)
        }
        if let p = r.pacing, p.bytesWaitSeconds + p.messagesWaitSeconds > 0 {
            lines.append(String(format: "  note: rate caps held the transfer back %.1f s", max(p.bytesWaitSeconds, p.messagesWaitSeconds)))
        }
        if !r.headerMatches.isEmpty {
            lines.append("  note: \(r.headerMatches.count) message(s) matched by Message-ID, Date and From because the destination rewrites messages (listed in the report)")
        }
        return lines
    }

    static func summary(verify r: VerifyReport, job: JobSpec) -> [String] {
        let checked = r.folders.reduce(0) { $0 + $1.checked }
        let verified = r.folders.reduce(0) { $0 + $1.verified }
        var lines = ["verify \(r.source) → \(r.destination): \(checked) checked, \(verified) present, \(r.missingCount) missing"]
        for f in r.folders {
            for m in f.missing.prefix(50) {
                lines.append("  missing: \(f.source) message \(m.sourceID)\(m.messageID.map { " \($0)" } ?? ""): \(m.reason)")
            }
            if f.missing.count > 50 { lines.append("  … and \(f.missing.count - 50) more in \(f.source) (see --report FILE.json)") }
        }
        return lines
    }
}

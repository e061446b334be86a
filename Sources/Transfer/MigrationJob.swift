import Foundation
import Logging
import MailModel
import MailStore
import SyncState

/// A migration between two stores: the entry point the CLI calls.
///
///     let job = MigrationJob(source: { try await openStore(src) }, destination: { try await openStore(dst) },
///                            options: MigrationOptions(...), state: try SQLiteStateStore(path: p), logger: log)
///     let report = try await job.run()       // exit with report.exitCode
///
/// Phases, in order (after dsync): list folders, plan folders, then per folder
/// pair: list, resolve (state, then size and headers, then keys), copy
/// (journal, act, confirm), verify, delete verified source messages.
/// Folder pairs run on `parallel` workers, each with its own pair of sessions.
///
/// Errors thrown by `run()` end the whole run (authentication, local storage,
/// corrupt state, cancellation: `MailError.exitCode`). Message and folder
/// failures do not: they are in the report, whose `exitCode` is then 1.
public struct MigrationJob: Sendable {
    public var source: StoreFactory
    public var destination: StoreFactory
    public var options: MigrationOptions
    public var state: any StateStore
    public var logger: Logger
    /// Called as messages are dealt with (from several tasks; keep it quick).
    public var progress: (@Sendable (TransferProgress) -> Void)?
    /// Store URLs as the report shows them (redacted again before use).
    public var sourceName: String?
    public var destinationName: String?

    public init(source: @escaping StoreFactory, destination: @escaping StoreFactory, options: MigrationOptions = MigrationOptions(),
                state: any StateStore, logger: Logger = Logger(label: "mailferry.transfer"),
                progress: (@Sendable (TransferProgress) -> Void)? = nil) {
        self.source = source
        self.destination = destination
        self.options = options
        self.state = state
        self.logger = logger
        self.progress = progress
    }

    // MARK: migrate

    public func run() async throws -> Report {
        let started = Date()
        let effectiveState: any StateStore = options.dryRun ? DryRunStateStore(base: state) : state
        let gate = FlowGate(ParallelismController(ceiling: options.parallel, policy: options.throttle))
        var control = try await openSessions(gate: gate)
        let report = Locked(Report(command: options.command, source: sourceName ?? control.source.location.description,
                                   destination: destinationName ?? control.destination.location.description,
                                   started: started, dryRun: options.dryRun))
        var executor = Executor(options: options, state: effectiveState, logger: logger,
                                effects: EffectCounter(limit: options.stopAfterEffect), report: report,
                                progress: ProgressTracker(progress))
        executor.flow = gate
        do {
            let plan = try await withRetry("folder list", sessions: &control, gate: gate) { s in
                try await planFolders(s, listed: executor.listed)
            }
            report.with { rep in
                for s in plan.skipped {
                    logger.info("skipping \(s.folder): \(s.reason)")
                }
                if options.dryRun {
                    rep.plan = plan.creates.map { PlannedAction(.createFolder($0)) }
                }
            }
            if !options.dryRun { try abandonOpenNonAppends(effectiveState) }
            let folderReports = try await runPairs(plan.pairs, control: &control, executor: executor, gate: gate)
            report.with { $0.folders = folderReports }
        } catch {
            await control.close()
            throw Self.mapped(error)
        }
        do {
            try await control.closeAfterSuccess()
        } catch {
            throw Self.mapped(error)
        }
        Self.summarise(gate: gate, pacing: options.pacing, into: report)
        return report.with {
            $0.finished = Date()
            return $0
        }
    }

    /// Throttling and pacing figures for the report.
    static func summarise(gate: FlowGate, pacing: Pacing?, into report: Locked<Report>) {
        let c = gate.snapshot
        report.with {
            $0.throttling = c.throttles + c.connectionRefusals > 0 ? c.summary : nil
            $0.pacing = pacing.map(\.summary)
        }
    }

    // MARK: verify

    public func verify() async throws -> VerifyReport {
        let started = Date()
        let gate = FlowGate(ParallelismController(ceiling: 1, policy: options.throttle))
        var control = try await openSessions(gate: gate)
        let report = Locked(Report(command: "verify", source: "", destination: "", started: started, dryRun: false))
        let executor = Executor(options: options, state: state, logger: logger, effects: EffectCounter(limit: nil),
                                report: report, progress: ProgressTracker(progress))
        var out = VerifyReport(source: StoreLocation.redact(sourceName ?? control.source.location.description),
                               destination: StoreLocation.redact(destinationName ?? control.destination.location.description),
                               started: started, finished: started, folders: [], headerMatches: [])
        do {
            let plan = try await withRetry("folder list", sessions: &control, gate: gate) { s in
                try await planFolders(s, listed: executor.listed)
            }
            for pair in plan.pairs {
                let v = try await withRetry(pair.source.description, sessions: &control, gate: gate) { s in
                    try await Verifier(executor: executor).verify(pair, s)
                }
                out.folders.append(.init(source: pair.source.description, destination: pair.destination.description,
                                         checked: v.checked, verified: v.verified.count, missing: v.missing))
                out.headerMatches += v.headerMatches
            }
        } catch {
            await control.close()
            throw Self.mapped(error)
        }
        await control.close()
        out.finished = Date()
        return out
    }

    /// The folder half of the plan, for `mailferry folders`-style previews and tests.
    public func folderPlan() async throws -> FolderPlan {
        let s = try await openSessions(gate: FlowGate(ParallelismController(ceiling: 1, policy: options.throttle)))
        do {
            let plan = try await planFolders(s)
            await s.close()
            return plan
        } catch {
            await s.close()
            throw Self.mapped(error)
        }
    }

    // MARK: Internals

    /// Opens a source session, paced when the job has rate caps.
    func openSource() async throws -> any MailStore {
        let src = try await source()
        return options.pacing?.wrap(src) ?? src
    }

    /// Opens a pair of sessions. Throttles are waited out under the throttle
    /// budget; other retryable errors under `retry.maxAttempts`. A worker that
    /// holds a slot (`holdsSlot`) and is refused while other workers work has
    /// met the server's connection limit: parallelism drops to what works, and
    /// the worker waits for a slot before trying again.
    /// `requeue`: a worker between folders gives its slot back and lets the caller
    /// put the work back (`ConnectionLimitReached`) rather than wait holding it.
    /// `stillWanted`, checked when this worker's turn to connect comes: false
    /// ends the wait with `NoWorkLeft` instead of connecting.
    func openSessions(gate: FlowGate, holdsSlot: Bool = false, requeue: Bool = false,
                      stillWanted: (@Sendable () -> Bool)? = nil) async throws -> Sessions {
        var attempt = 1
        var throttleStreak = 0
        while true {
            let generation = gate.generation
            var refusedConnections = 1
            do {
                // Both logins of the pair at once; one pair at a time (see FlowGate.withOpeningTurn).
                let opened = try await gate.withOpeningTurn { () async throws -> PairOpening in
                    if let stillWanted, !stillWanted() { throw NoWorkLeft() }
                    return try await self.openPair()
                }
                switch opened {
                case .success(let s): return s
                case .failure(let e, let refused):
                    refusedConnections = refused
                    throw e
                }
            } catch let e as MailError where e.retryable || e.kind == .throttled {
                if holdsSlot, gate.connectionRefused(connections: refusedConnections) {
                    guard gate.spend(waiting: 0) else { throw e }
                    let limit = gate.snapshot.limit
                    logger.notice("a connection was refused while \(gate.inUse - 1) other worker(s) work (\(e)); parallelism lowered to \(limit)")
                    gate.release()
                    if requeue { throw ConnectionLimitReached() }
                    try await gate.acquire()
                    try await options.retry.sleep(options.retry.delay(after: 1, error: MailError(.connection, scope: .account, ""),
                                                                      random: Double.random(in: 0..<1)))
                    continue
                }
                let d: Double
                if e.kind == .throttled {
                    throttleStreak += 1
                    gate.throttled(generation: generation)
                    d = options.retry.delay(after: throttleStreak, error: e, random: Double.random(in: 0..<1))
                    guard gate.spend(waiting: d) else {
                        logger.error("cannot open the stores (\(e)); the throttle budget is spent")
                        throw e
                    }
                } else {
                    guard options.retry.shouldRetry(e, attempt: attempt) else { throw e }
                    d = options.retry.delay(after: attempt, error: e, random: Double.random(in: 0..<1))
                    attempt += 1
                }
                logger.warning("cannot open the stores (\(e)); trying again in \(String(format: "%.1f", d)) s")
                try await options.retry.sleep(d)
            }
        }
    }

    enum PairOpening: Sendable {
        case success(Sessions)
        /// `refused`: how many of the two connections failed in a way a retry
        /// may cure (refused, dropped, throttled).
        case failure(MailError, refused: Int)
    }

    /// Opens source and destination at once. When either fails the other is
    /// closed; the error reported is one a retry cannot cure if there is one
    /// (a wrong password), else the source's.
    func openPair() async throws -> PairOpening {
        let destination = self.destination
        async let dst = Self.outcome { try await destination() }
        let src = await Self.outcome { try await self.openSource() }
        let d = await dst
        switch (src, d) {
        case let (.success(s), .success(d)):
            return .success(Sessions(source: s, destination: d))
        case let (.success(s), .failure(e)):
            try? await s.close()
            return try Self.pairFailure([e])
        case let (.failure(e), .success(d)):
            try? await d.close()
            return try Self.pairFailure([e])
        case let (.failure(e1), .failure(e2)):
            return try Self.pairFailure([e1, e2])
        }
    }

    private static func outcome<T>(_ body: () async throws -> T) async -> Result<T, any Error> {
        do { return .success(try await body()) } catch { return .failure(error) }
    }

    /// Errors that are not `MailError`s (cancellation) are thrown as they are.
    private static func pairFailure(_ errors: [any Error]) throws -> PairOpening {
        var mail: [MailError] = []
        for e in errors {
            guard let m = e as? MailError else { throw e }
            mail.append(m)
        }
        let passing = mail.filter { $0.retryable || $0.kind == .throttled }
        if let fatal = mail.first(where: { !($0.retryable || $0.kind == .throttled) }) {
            return .failure(fatal, refused: passing.count)
        }
        return .failure(mail[0], refused: passing.count)
    }

    /// `listed`, when given, gets both sides' folder listings for the
    /// executor's unchanged-folder check (the source's message counts, and
    /// statuses that spare unchanged folders a SELECT).
    func planFolders(_ s: Sessions, listed: Locked<ListedFolders>? = nil) async throws -> FolderPlan {
        let sf = try await s.source.folders()
        let df = try await s.destination.folders()
        listed?.with { $0 = ListedFolders(source: sf, destination: df) }
        return try Planner.planFolders(source: sf, destination: df, selection: options.selection,
                                       sourceHasFolders: s.source.capabilities.contains(.folders))
    }

    /// Creates, flag changes and deletes a crash left open are redone by the
    /// next plan if still needed: close them in the journal.
    func abandonOpenNonAppends(_ state: any StateStore) throws {
        for e in try state.openEntries() where e.kind != .append {
            try state.complete(e.seq, JournalOutcome(.abandoned))
        }
    }

    /// Runs `body`, and on errors that may pass (dropped connection, throttling)
    /// reopens the sessions and runs it again, with backoff. Failures count
    /// against `retry.maxAttempts`; throttles against the throttle budget, and
    /// each lowers the job's parallelism: a worker holding a slot above the new
    /// limit closes its sessions and waits for a slot before going on.
    func withRetry<T: Sendable>(_ what: String, sessions: inout Sessions, gate: FlowGate, holdsSlot: Bool = false,
                                _ body: (Sessions) async throws -> T) async throws -> T {
        var attempt = 1
        var throttleStreak = 0
        while true {
            let generation = gate.generation
            do {
                try Task.checkCancellation()
                return try await body(sessions)
            } catch let e as MailError where e.kind == .throttled {
                throttleStreak += 1
                gate.throttled(generation: generation)
                let d = options.retry.delay(after: throttleStreak, error: e, random: Double.random(in: 0..<1))
                guard gate.spend(waiting: d) else {
                    logger.error("\(what): \(e); the throttle budget is spent")
                    throw e
                }
                let limit = gate.snapshot.limit
                logger.warning("\(what): \(e); waiting \(String(format: "%.1f", d)) s (parallelism now \(limit))")
                if holdsSlot, gate.shouldYield {
                    await sessions.close()
                    gate.release()
                    try await options.retry.sleep(d)
                    try await gate.acquire()
                    sessions = try await openSessions(gate: gate, holdsSlot: true)
                } else {
                    try await options.retry.sleep(d)
                    if e.scope >= .account {
                        await sessions.close()
                        sessions = try await openSessions(gate: gate, holdsSlot: holdsSlot)
                    }
                }
            } catch let e as MailError where options.retry.shouldRetry(e, attempt: attempt) {
                let d = options.retry.delay(after: attempt, error: e, random: Double.random(in: 0..<1))
                logger.warning("\(what): \(e); retrying in \(String(format: "%.1f", d)) s (attempt \(attempt + 1) of \(options.retry.maxAttempts))")
                try await options.retry.sleep(d)
                attempt += 1
                await sessions.close()
                sessions = try await openSessions(gate: gate, holdsSlot: holdsSlot)
            }
        }
    }

    /// Folder pairs grouped by destination folder (pairs into one folder run
    /// one after the other, so dedupe by key holds), spread over workers.
    func runPairs(_ pairs: [FolderPair], control: inout Sessions, executor: Executor, gate: FlowGate) async throws -> [FolderReport] {
        var groups: [[FolderPair]] = []
        var index: [FolderPath: Int] = [:]
        for p in pairs {
            if let i = index[p.destination] {
                groups[i].append(p)
            } else {
                index[p.destination] = groups.count
                groups.append([p])
            }
        }
        let queue = Locked(groups.enumerated().map { $0 })
        let results = Locked([Int: [FolderReport]]())
        // Groups the folder listings show unchanged take the control sessions
        // moments each: only the others are worth a worker's connections.
        let quietGroups = try groups.map { g in try g.allSatisfy { try forecastUnchanged($0, executor: executor) } }
        let quiet = quietGroups.filter { $0 }.count
        let workers = min(options.parallel, max(1, groups.count - quiet))
        // Quiet groups of one pair need no command to the server when they are
        // what they seem (the state decides them): with --parallel above 1, a
        // helper without connections works them on another core beside the
        // connected workers, and leaves any that need the server after all
        // (`NeedsConnection`, thrown before any effect) for the control sessions.
        let offline = options.parallel > 1
            ? Set(quietGroups.indices.filter { quietGroups[$0] && groups[$0].count == 1 }) : []
        let leftovers = Locked([(Int, [FolderPair])]())
        if quiet > 0 {
            logger.debug("\(quiet) of \(groups.count) folder group(s) unchanged by their listed status; \(workers) worker(s)\(offline.count > 1 ? " and a helper" : "")")
        }
        let first = control
        let job = self
        let finalControl = Locked<Sessions?>(nil)
        // Worker 0 inherits the control sessions, so it takes its slot now: open
        // connections and slots must agree for connection limits to be read right.
        let firstHolds = gate.tryAcquire()
        try await withThrowingTaskGroup(of: Void.self) { group in
            if offline.count > 1 {
                let local = Sessions(source: OfflineStore(first.source), destination: OfflineStore(first.destination))
                group.addTask {
                    while let (gi, g) = queue.with({ q -> (Int, [FolderPair])? in
                        guard let i = q.firstIndex(where: { offline.contains($0.offset) }) else { return nil }
                        return q.remove(at: i)
                    }) {
                        var s = local
                        do {
                            let rep = try await job.runPair(g[0], sessions: &s, executor: executor, gate: gate)
                            results.with { $0[gi] = [rep] }
                        } catch is NeedsConnection {
                            leftovers.with { $0.append((gi, g)) }
                        }
                        // A retry may have swapped in sessions of its own: not kept.
                        if !(s.source is OfflineStore && s.destination is OfflineStore) { await s.close() }
                    }
                }
            }
            for w in 0..<workers {
                group.addTask {
                    // Worker 0 starts with the control sessions; the others open their own once they have work.
                    var sessions: Sessions? = w == 0 ? first : nil
                    var holding = w == 0 && firstHolds
                    func finish() async {
                        // Connections closed before the slot is given back, so that the
                        // next holder never meets them at the server's connection limit.
                        if w == 0 { finalControl.with { $0 = sessions } } else { await sessions?.close() }
                        if holding { gate.release() }
                        holding = false
                    }
                    do {
                        while true {
                            if !holding {
                                if !gate.tryAcquire() {
                                    // No idle connections while waiting: they count against the server's limit.
                                    await sessions?.close()
                                    sessions = nil
                                    try await gate.acquire()
                                }
                                holding = true
                            }
                            if sessions == nil {
                                // Connect before taking work: work is never held by a worker
                                // waiting its turn to connect, and a worker whose turn comes
                                // when the others have done everything does not connect at all.
                                guard !queue.with({ $0.isEmpty }) else { break }
                                do {
                                    sessions = try await job.openSessions(gate: gate, holdsSlot: true, requeue: true,
                                                                          stillWanted: { !queue.with { $0.isEmpty } })
                                } catch is ConnectionLimitReached {
                                    // Over the server's connection limit: the work stays for the
                                    // workers that have connections, and this one waits for a slot.
                                    holding = false
                                    continue
                                } catch is NoWorkLeft {
                                    break
                                }
                            }
                            guard var s = sessions, let (gi, g) = queue.with({ $0.isEmpty ? nil : $0.removeFirst() }) else { break }
                            var reps: [FolderReport] = []
                            for pair in g {
                                reps.append(try await job.runPair(pair, sessions: &s, executor: executor, gate: gate))
                                sessions = s
                            }
                            results.with { $0[gi] = reps }
                            if gate.shouldYield {
                                // Parallelism was lowered: give the slot and the connections back.
                                await s.close()
                                sessions = nil
                                gate.release()
                                holding = false
                            }
                        }
                    } catch {
                        await finish()
                        throw error
                    }
                    if w != 0, let s = sessions {
                        // A destination that writes on close (an archive) reports its errors here.
                        sessions = nil
                        do { try await s.closeAfterSuccess() } catch { await finish(); throw error }
                    }
                    await finish()
                }
            }
            try await group.waitForAll()
        }
        if let c = finalControl.get { control = c }
        let left = leftovers.get.sorted { $0.0 < $1.0 }
        if !left.isEmpty {
            logger.debug("\(left.count) folder pair(s) the listings showed unchanged need the server after all")
            if finalControl.get == nil {
                // The control sessions were given back (parallelism lowered): new ones.
                control = try await openSessions(gate: gate)
            }
            try await gate.acquire()
            do {
                for (gi, g) in left {
                    var reps: [FolderReport] = []
                    for pair in g { reps.append(try await runPair(pair, sessions: &control, executor: executor, gate: gate)) }
                    results.with { $0[gi] = reps }
                }
            } catch {
                gate.release()
                throw error
            }
            gate.release()
        }
        return results.get.sorted { $0.key < $1.key }.flatMap(\.value)
    }

    /// The forecast of `ListedStatus.forecastUnchanged` for one pair, from
    /// this run's folder listings and the saved marks.
    func forecastUnchanged(_ pair: FolderPair, executor: Executor) throws -> Bool {
        let l = executor.listed.get
        guard let s = l.source[pair.source], let d = l.destination[pair.destination] else { return false }
        return ListedStatus.forecastUnchanged(source: s, sourceMark: try executor.state.mark(.source, pair.source),
                                              destination: d, destinationMark: try executor.state.mark(.destination, pair.destination),
                                              propagateFlags: options.propagateFlags, deleteSource: options.deleteSource)
    }

    /// One pair: copy (with retries), verify, delete verified source messages.
    /// A failure that ends the pair is reported; failures that end the run are thrown.
    func runPair(_ pair: FolderPair, sessions: inout Sessions, executor: Executor, gate: FlowGate) async throws -> FolderReport {
        let fr = Locked(FolderReport(source: pair.source.description, destination: pair.destination.description))
        let copied = Locked(Set<MessageID>())
        do {
            let unchanged = try await withRetry(pair.source.description, sessions: &sessions, gate: gate, holdsSlot: true) { s in
                try await executor.copyPair(pair, s, folderReport: fr, copiedThisRun: copied)
            }
            if !options.dryRun, options.verify || options.deleteSource {
                let v: PairVerification
                if let unchanged, !options.deleteSource {
                    // Nothing changed: the copy pass's listings, moments old, are the check.
                    // (Deleting from the source always waits for a listing of its own.)
                    v = Verifier(executor: executor).verify(pair, resolved: unchanged)
                } else {
                    v = try await withRetry(pair.source.description, sessions: &sessions, gate: gate, holdsSlot: true) { s in
                        try await Verifier(executor: executor).verify(pair, s)
                    }
                }
                fr.with {
                    $0.verified = v.verified.count
                    $0.missing = v.missing.count
                }
                let reported = Set(executor.report.get.failures.filter { $0.folder == pair.source.description }
                    .compactMap(\.sourceID))
                for m in v.missing where !reported.contains(m.sourceID) {
                    executor.report.with {
                        $0.failures.append(.init(folder: pair.source.description, sourceID: m.sourceID,
                                                 reason: "not verified in the destination: \(m.reason)"))
                    }
                }
                if options.deleteSource, !v.verified.isEmpty {
                    try await deleteVerified(pair, v.verified, sessions: &sessions, executor: executor, report: fr)
                }
            }
            // A folder finished: clean progress for the flow control (a failed one is not).
            gate.progress(1)
        } catch let e as MailError where e.scope <= .folder || (e.scope == .account && e.retryable) {
            logger.error("\(pair.source): \(e)")
            fr.with { $0.failed += 1 }
            executor.report.with { $0.failures.append(.init(folder: pair.source.description, sourceID: nil, reason: e.description)) }
        }
        return fr.get
    }

    /// `--delete-source`: journal, delete, and (POP3) commit with QUIT at the
    /// end of the session. Only ids verification found are passed here.
    func deleteVerified(_ pair: FolderPair, _ ids: [MessageID], sessions: inout Sessions, executor: Executor,
                        report fr: Locked<FolderReport>) async throws {
        for action in Planner.planSourceDeletes(folder: pair.source, verified: ids) {
            guard case .deleteSource(let folder, let ids) = action else { continue }
            let seq = try state.intend(JournalEntry(kind: .delete, side: .source, sourceFolder: folder, ids: ids))
            try await sessions.source.delete(ids, in: folder)
            if !sessions.source.capabilities.contains(.folders) {
                // POP3: DELE takes effect at QUIT; close now so the deletion is
                // committed in the session that verified it.
                try await sessions.source.close()
                sessions.source = try await openSource()
            }
            try executor.effects.did("delete \(ids.count) in source \(folder)")
            try state.complete(seq, JournalOutcome(.confirmed))
            try state.forget(.source, in: folder, ids: ids)
            fr.with { $0.deleted += ids.count }
        }
    }

    static func mapped(_ error: Error) -> Error {
        if error is CancellationError {
            return MailError(.cancelled, scope: .local, "interrupted; the state is consistent and a re-run resumes")
        }
        return error
    }
}

/// A worker between folders met the server's connection limit and gave its slot back.
struct ConnectionLimitReached: Error {}

/// A worker's turn to connect came when no work was left.
struct NoWorkLeft: Error {}

/// For `--dry-run`: reads go to the real state, writes stay in memory and
/// are thrown away, so a dry run writes nothing anywhere.
final class DryRunStateStore: StateStore, @unchecked Sendable {
    private let base: any StateStore
    private let overlay = MemoryStateStore()
    private let loaded = Locked(Set<String>())

    init(base: any StateStore) { self.base = base }

    private func load(_ side: Side, _ folder: FolderPath) throws {
        let k = side.rawValue + "\u{0}" + folder.components.joined(separator: "\u{0}")
        guard loaded.with({ $0.insert(k).inserted }) else { return }
        if let m = try base.mark(side, folder) { try overlay.saveMark(m) }
        try overlay.remember(try base.known(side, in: folder))
    }

    func mark(_ side: Side, _ folder: FolderPath) throws -> FolderMark? {
        try load(side, folder)
        return try overlay.mark(side, folder)
    }

    func saveMark(_ mark: FolderMark) throws -> Bool {
        try load(mark.side, mark.folder)
        return try overlay.saveMark(mark)
    }

    func known(_ side: Side, in folder: FolderPath) throws -> [KnownMessage] {
        try load(side, folder)
        return try overlay.known(side, in: folder)
    }

    func remember(_ messages: [KnownMessage]) throws {
        for m in messages { try load(m.side, m.folder) }
        try overlay.remember(messages)
    }

    func forget(_ side: Side, in folder: FolderPath, ids: [MessageID]) throws {
        try load(side, folder)
        try overlay.forget(side, in: folder, ids: ids)
    }

    func intend(_ entries: [JournalEntry]) throws -> [Int64] { try overlay.intend(entries) }
    func complete(_ seq: Int64, _ outcome: JournalOutcome, remember: [KnownMessage]) throws {
        try overlay.complete(seq, outcome, remember: remember)
    }
    func openEntries() throws -> [JournalEntry] { try base.openEntries() }
    func journal() throws -> [JournalEntry] { try base.journal() + overlay.journal() }
}

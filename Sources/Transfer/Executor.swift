import Foundation
import Logging
import MailModel
import MailStore
import NIOCore
import SyncState

/// One worker's pair of sessions. Replaced after a dropped connection.
struct Sessions: Sendable {
    var source: any MailStore
    var destination: any MailStore

    func close() async {
        try? await source.close()
        try? await destination.close()
    }

    /// Closes both at the end of work that succeeded. The destination's close
    /// can be where its writes become durable (an archive seals its run there),
    /// so its failure (a full disk, say) fails the run instead of passing unseen.
    func closeAfterSuccess() async throws {
        try? await source.close()
        try await destination.close()
    }
}

/// The pair's knowledge once listings, state and hashing have been put together.
struct Resolved: Sendable {
    var input: PairInput
    var actions: [Action]
    var sourceExists: Bool
    var destinationExists: Bool
}

/// Carries out plans: journal, act, confirm. One `Executor` serves a whole
/// job; each call works on one folder pair with the sessions it is given.
struct Executor: Sendable {
    let options: MigrationOptions
    let state: any StateStore
    let logger: Logger
    let effects: EffectCounter
    let report: Locked<Report>
    let progress: ProgressTracker
    /// Both sides' folder listings of this run, for `unchangedSinceLastRun`:
    /// the source folders' message counts (IMAP LIST-STATUS), and a folder
    /// whose listed status is the saved one is not selected.
    var listed = Locked(ListedFolders())
    /// The job's flow control: told of every message moved (clean progress).
    var flow: FlowGate? = nil

    // MARK: Knowledge

    /// What the state holds for one side of a pair, read once per resolve.
    struct Stored {
        var mark: FolderMark?
        var known: [KnownMessage]

        init(_ state: any StateStore, _ side: Side, _ folder: FolderPath) throws {
            mark = try state.mark(side, folder)
            known = try state.known(side, in: folder)
        }
    }

    /// Ids of a listing whose keys the state vouches for (same UIDVALIDITY, still listed).
    func knowledge(_ stored: Stored, _ listing: FolderListing, persistent: Bool)
        -> (keys: [MessageID: MessageKey], origins: [MessageID: FolderPath]) {
        guard persistent, let mark = stored.mark,
              mark.validity.uidValidity == listing.validity.uidValidity else { return ([:], [:]) }
        let present = Set(listing.messages.map(\.id))
        var keys: [MessageID: MessageKey] = [:]
        var origins: [MessageID: FolderPath] = [:]
        for k in stored.known
        where k.uidValidity == listing.validity.uidValidity && present.contains(k.id) {
            keys[k.id] = k.key
            if let o = k.origin { origins[k.id] = o }
        }
        return (keys, origins)
    }

    /// Saves the folder's mark (voiding ids when UIDVALIDITY changed) and forgets ids no longer listed.
    /// Nothing is written when the mark is the one saved and no id went away.
    func commitMark(_ side: Side, _ folder: FolderPath, _ listing: FolderListing, _ stored: Stored) throws {
        let mark = FolderMark(side: side, folder: folder, validity: listing.validity,
                              lastID: listing.messages.map(\.id).max())
        var voided = false
        if mark != stored.mark {
            voided = try state.saveMark(mark)
        }
        if voided {
            logger.notice("UIDVALIDITY of \(side.rawValue) folder \(folder) changed: its ids are void, keys decide")
            return
        }
        guard !listing.isIncremental, !stored.known.isEmpty else { return }
        let present = Set(listing.messages.map(\.id))
        let stale = stored.known.map(\.id).filter { !present.contains($0) }
        try state.forget(side, in: folder, ids: stale)
    }

    /// Lists both folders, reads what the state knows, and hashes what only
    /// keys can decide, until the planner can decide everything.
    func resolve(_ pair: FolderPair, _ s: Sessions, planOptions: PlanOptions, destinationMayBeMissing: Bool) async throws -> Resolved {
        let srcPersistent = s.source.capabilities.contains(.persistentIDs)
        let dstPersistent = s.destination.capabilities.contains(.persistentIDs)
        let srcStored = try Stored(state, .source, pair.source)
        let dstStored = try Stored(state, .destination, pair.destination)
        if let r = try await unchangedSinceLastRun(pair, s, srcStored, dstStored, planOptions: planOptions) {
            return r
        }
        let firstSource = srcStored.mark == nil
        // POP3 gives headers at a TOP per message: they are asked for below
        // only if the destination holds messages to match.
        //
        // An IMAP source keeps its header listing: telling its duplicates
        // while copying would need the bodies in UID order (the first of each
        // key is the one copied, with its flags and date), and pipelined
        // FETCHes are not answered in order (Dovecot runs them side by side:
        // UID 117 came before UID 67). The listing costs the server little
        // once its cache holds those fields (no gain measured on `make bench`).
        let headersPerMessage = s.source.capabilities.contains(.headersPerMessage)
        var sl = try await s.source.listMessages(in: pair.source,
                                                 options: ListOptions(includeHeaders: firstSource && !headersPerMessage))
        var dl = FolderListing(folder: pair.destination, messages: [])
        var destinationExists = true
        do {
            let firstDest = dstStored.mark == nil
            dl = try await s.destination.listMessages(in: pair.destination, options: ListOptions(includeHeaders: firstDest && !sl.messages.isEmpty))
        } catch let e as MailError where e.kind == .notFound && destinationMayBeMissing {
            destinationExists = false
        }
        var sk = knowledge(srcStored, sl, persistent: srcPersistent)
        var dk = knowledge(dstStored, dl, persistent: dstPersistent)
        let sUnknown = sl.messages.filter { sk.keys[$0.id] == nil && $0.key == nil }.count
        let dUnknown = dl.messages.filter { dk.keys[$0.id] == nil && $0.key == nil }.count
        // An empty destination: headers would only tell the source's own
        // duplicates apart, and the copy tells those as it reads each body.
        let duplicatesWhileCopying = headersPerMessage && dl.messages.isEmpty && !options.dryRun
            && sl.messages.contains { $0.headers == nil }
        let needHeaders = !duplicatesWhileCopying
            && ((sUnknown > 0 && (!dl.messages.isEmpty || sUnknown >= 2)) || (dUnknown > 0 && !sl.messages.isEmpty))
        if needHeaders {
            if sl.messages.contains(where: { $0.headers == nil }) {
                sl = try await s.source.listMessages(in: pair.source, options: ListOptions(includeHeaders: true))
                sk = knowledge(srcStored, sl, persistent: srcPersistent)
            }
            if destinationExists, dl.messages.contains(where: { $0.headers == nil }) {
                dl = try await s.destination.listMessages(in: pair.destination, options: ListOptions(includeHeaders: true))
                dk = knowledge(dstStored, dl, persistent: dstPersistent)
            }
        }
        try commitMark(.source, pair.source, sl, srcStored)
        if destinationExists { try commitMark(.destination, pair.destination, dl, dstStored) }

        var pairOptions = planOptions
        pairOptions.sourceDuplicatesWhileCopying = duplicatesWhileCopying
        var input = PairInput(pair: pair, source: sl, destination: dl, sourceKeys: sk.keys, destinationKeys: dk.keys,
                              destinationOrigins: dk.origins,
                              destinationRewrites: s.destination.capabilities.contains(.rewritesMessages),
                              options: pairOptions)
        for round in 0..<4 {
            let actions = Planner.planMessages(input)
            let hashes = actions.compactMap { a -> (Side, FolderPath, [MessageID])? in
                if case .hash(let side, let f, let ids) = a { return (side, f, ids) }
                return nil
            }
            if hashes.isEmpty {
                return Resolved(input: input, actions: actions, sourceExists: true, destinationExists: destinationExists)
            }
            guard round < 3 else { break }
            for (side, folder, ids) in hashes {
                let store = side == .source ? s.source : s.destination
                let listing = side == .source ? input.source : input.destination
                let (learned, vanished) = try await hashMessages(ids, in: folder, store: store)
                var remember: [KnownMessage] = []
                for (id, (key, size)) in learned {
                    if side == .source { input.sourceKeys[id] = key } else { input.destinationKeys[id] = key }
                    remember.append(KnownMessage(side: side, folder: folder, id: id, uidValidity: listing.validity.uidValidity,
                                                 key: key, size: size))
                }
                if (side == .source ? srcPersistent : dstPersistent) { try state.remember(remember) }
                let gone = Set(vanished)
                if side == .source {
                    input.source.messages.removeAll { gone.contains($0.id) }
                } else {
                    input.destination.messages.removeAll { gone.contains($0.id) }
                }
                logger.debug("hashed \(learned.count) \(side.rawValue) message(s) in \(folder) to tell candidates apart")
            }
        }
        throw MailError(.protocolViolation, scope: .folder, "could not learn the keys of messages in \(pair.source)",
                        folder: pair.source)
    }

    /// The pair as the state left it, when neither folder changed since: both
    /// stores track changes (CONDSTORE/QRESYNC), each folder's UIDVALIDITY,
    /// UIDNEXT and HIGHESTMODSEQ are the ones saved, the state knows a key for
    /// every source message (as many as the folder holds, by LIST-STATUS) and finds each of
    /// those keys in the destination, and no append to this pair is left open.
    /// Two SELECTs then replace two full listings, and none is needed for a
    /// folder whose LIST-STATUS of this run (`listed`, used once per folder)
    /// already gave the saved UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ.
    /// Anything else (or a server that cannot say) gives nil and the full way.
    func unchangedSinceLastRun(_ pair: FolderPair, _ s: Sessions, _ src: Stored, _ dst: Stored,
                               planOptions: PlanOptions) async throws -> Resolved? {
        // Taken whether used or not: a later look at these folders in this run
        // (a retry, a re-resolve, the next pair into the same destination) selects.
        let status = listed.with { $0.take(pair) }
        func tracked(_ m: FolderMark?) -> FolderValidity? {
            guard let v = m?.validity, v.uidValidity != nil, v.uidNext != nil, v.highestModSeq != nil else { return nil }
            return v
        }
        let both: StoreCapabilities = [.changeTracking, .persistentIDs]
        // Flags are not in the state: a job that propagates them lists.
        guard !planOptions.propagateFlags,
              s.source.capabilities.isSuperset(of: both), s.destination.capabilities.isSuperset(of: both),
              let sv = tracked(src.mark), let dv = tracked(dst.mark), !src.known.isEmpty else { return nil }
        let srcKnown = src.known.filter { $0.uidValidity == sv.uidValidity }
        let dstKnown = dst.known.filter { $0.uidValidity == dv.uidValidity }
        var dstByKey: [MessageKey: MessageID] = [:]
        for k in dstKnown where dstByKey[k.key] == nil { dstByKey[k.key] = k.id }
        // As many known as the folder holds (its count, from the folder listing
        // of this run, holds while UIDNEXT and HIGHESTMODSEQ are the saved ones):
        // a message that failed to copy last time has no row, so it is not skipped.
        guard srcKnown.count == src.known.count, listed.with({ $0.sourceCount(pair.source) }) == srcKnown.count,
              srcKnown.allSatisfy({ dstByKey[$0.key] != nil }) else { return nil }
        guard try !state.openEntries().contains(where: {
            $0.kind == .append && $0.sourceFolder == pair.source && $0.destinationFolder == pair.destination
        }) else { return nil }
        func unchanged(_ l: FolderListing, _ v: FolderValidity) -> Bool {
            l.isIncremental && l.messages.isEmpty && l.vanished.isEmpty && l.validity == v
        }
        let sourceListed = ListedStatus.unchanged(listed: status.source?.validity, saved: src.mark)
        if !sourceListed {
            let sl = try await s.source.listMessages(in: pair.source, options: ListOptions(changedSince: sv))
            guard unchanged(sl, sv) else { return nil }
        }
        let destinationListed = ListedStatus.unchanged(listed: status.destination?.validity, saved: dst.mark)
        if !destinationListed {
            let dl = try await s.destination.listMessages(in: pair.destination, options: ListOptions(changedSince: dv))
            guard unchanged(dl, dv) else { return nil }
        }
        // The listings the full way would give, as far as planning needs them.
        let source = FolderListing(folder: pair.source, validity: sv,
                                   messages: srcKnown.map { MessageInfo(id: $0.id, size: $0.size) })
        let destination = FolderListing(folder: pair.destination, validity: dv,
                                        messages: dstKnown.map { MessageInfo(id: $0.id, size: $0.size) })
        var dOrigins: [MessageID: FolderPath] = [:]
        for k in dstKnown { if let o = k.origin { dOrigins[k.id] = o } }
        let input = PairInput(pair: pair, source: source, destination: destination,
                              sourceKeys: Dictionary(srcKnown.map { ($0.id, $0.key) }, uniquingKeysWith: { a, _ in a }),
                              destinationKeys: Dictionary(dstKnown.map { ($0.id, $0.key) }, uniquingKeysWith: { a, _ in a }),
                              destinationOrigins: dOrigins,
                              destinationRewrites: s.destination.capabilities.contains(.rewritesMessages),
                              options: planOptions)
        let actions = Planner.planMessages(input)
        // Only links (and duplicates) may come out of an unchanged pair; anything else goes the full way.
        guard actions.allSatisfy({ a in
            switch a {
            case .link, .duplicate: return true
            default: return false
            }
        }) else { return nil }
        logger.debug("\(pair.source) -> \(pair.destination): unchanged since the last run (UIDNEXT, HIGHESTMODSEQ\(sourceListed && destinationListed ? " in the folder listings" : ""))")
        return Resolved(input: input, actions: actions, sourceExists: true, destinationExists: true)
    }

    /// Reads messages only to learn their keys.
    func hashMessages(_ ids: [MessageID], in folder: FolderPath, store: any MailStore) async throws
        -> (learned: [MessageID: (MessageKey, Int64)], vanished: [MessageID]) {
        let out = Locked([MessageID: (MessageKey, Int64)]())
        let vanished = try await store.fetchMessages(ids, in: folder) { info, body in
            var h = MessageHasher()
            for try await chunk in body {
                chunk.withUnsafeReadableBytes { h.update($0) }
            }
            let result = (h.finalize(), h.normalizedCount)
            out.with { $0[info.id] = result }
        }
        return (out.get, vanished)
    }

    // MARK: One pair

    /// Copies one folder pair. Message failures are reported and the pair goes
    /// on; errors that end the pair are thrown (the caller retries).
    /// Returns the resolution when the pair needed no change at all (nothing
    /// created, copied, flagged or deleted): verification can use it instead
    /// of listing both folders again.
    @discardableResult
    func copyPair(_ pair: FolderPair, _ s: Sessions, folderReport: Locked<FolderReport>,
                  copiedThisRun: Locked<Set<MessageID>>) async throws -> Resolved? {
        let planOptions = PlanOptions(propagateFlags: options.propagateFlags, propagateDeletions: options.propagateDeletions,
                                      destinationFlags: s.destination.capabilities.contains(.setFlags))
        if pair.create, !options.dryRun {
            let seq = try state.intend(JournalEntry(kind: .createFolder, destinationFolder: pair.destination))
            try await s.destination.createFolder(pair.destination)
            try effects.did("create \(pair.destination)")
            try state.complete(seq, JournalOutcome(.confirmed))
            folderReport.with { $0.created = true }
        } else if pair.create {
            folderReport.with { $0.created = true }
        }
        let r = try await resolve(pair, s, planOptions: planOptions, destinationMayBeMissing: options.dryRun)
        try settleCrashed(pair, r)

        let found = r.input.source.messages.count
        var links: [LinkItem] = []
        var copies: [CopyItem] = []
        var flagChanges: [(FolderPath, MessageID, Flags)] = []
        var destDeletes: [MessageID] = []
        var duplicates = 0
        for a in r.actions {
            switch a {
            case .link(let l): links.append(l)
            case .copy(let c): copies.append(c)
            case .duplicate: duplicates += 1
            case .setFlags(let f, let id, let flags): flagChanges.append((f, id, flags))
            case .deleteDestination(_, let ids): destDeletes += ids
            case .createFolder, .hash, .deleteSource: break
            }
        }
        let already = copiedThisRun.get
        let linkedNotByUs = links.filter { !already.contains($0.sourceID) }.count
        folderReport.with {
            $0.found = found
            $0.duplicates = linkedNotByUs + duplicates
            $0.syntheticSourceIDs = r.input.source.idsAreSynthetic
        }
        report.with { rep in
            for l in links where l.matchedBy == .headers {
                rep.headerMatches.append(.init(folder: pair.source.description, sourceID: l.sourceID.rawValue,
                                               destinationID: l.destinationID.rawValue, messageID: l.messageID))
            }
            if options.dryRun { rep.plan = (rep.plan ?? []) + r.actions.map(PlannedAction.init) }
        }
        progress.add(total: copies.count + links.count + duplicates,
                     bytes: copies.reduce(0) { $0 + ($1.size ?? 0) }, done: links.count + duplicates)
        if options.dryRun {
            folderReport.with {
                $0.copied = copies.count
                $0.bytes = copies.reduce(0) { $0 + ($1.size ?? 0) }
                $0.flagsSet = flagChanges.count
                $0.deleted = destDeletes.count
            }
            return nil
        }

        // Remember what is already there, in one transaction.
        var remember: [KnownMessage] = []
        for l in links {
            guard let k = l.key else { continue }
            // Rows the state already holds (it vouched for these keys) are not written again.
            if r.input.sourceKeys[l.sourceID] != k {
                remember.append(KnownMessage(side: .source, folder: pair.source, id: l.sourceID,
                                             uidValidity: r.input.source.validity.uidValidity, key: k))
            }
            if l.matchedBy == .key, r.input.destinationKeys[l.destinationID] != k {
                remember.append(KnownMessage(side: .destination, folder: pair.destination, id: l.destinationID,
                                             uidValidity: r.input.destination.validity.uidValidity, key: k,
                                             origin: r.input.destinationOrigins[l.destinationID], matchedBy: .key))
            }
        }
        if s.source.capabilities.contains(.persistentIDs) || s.destination.capabilities.contains(.persistentIDs) {
            try state.remember(remember)
        }

        for (folder, id, flags) in flagChanges {
            let seq = try state.intend(JournalEntry(kind: .setFlags, side: .destination, destinationFolder: folder,
                                                    ids: [id], flags: flags))
            try await s.destination.setFlags(flags, .replace, for: [id], in: folder)
            try effects.did("flags \(folder) \(id)")
            try state.complete(seq, JournalOutcome(.confirmed))
            folderReport.with { $0.flagsSet += 1 }
        }

        if !copies.isEmpty {
            try await copyMessages(copies, pair: pair, s, validity: r.input.source.validity,
                                   folderReport: folderReport, copiedThisRun: copiedThisRun,
                                   duplicatesWhileCopying: r.input.options.sourceDuplicatesWhileCopying)
        }

        if options.propagateDeletions, !copies.isEmpty {
            // New messages had unknown keys when the plan was made; now that
            // they are known, the deletions the source saw can be told.
            let again = try await resolve(pair, s, planOptions: planOptions, destinationMayBeMissing: false)
            destDeletes = again.actions.flatMap { a -> [MessageID] in
                if case .deleteDestination(_, let ids) = a { return ids }
                return []
            }
        }
        if !destDeletes.isEmpty {
            let seq = try state.intend(JournalEntry(kind: .delete, side: .destination, destinationFolder: pair.destination,
                                                    ids: destDeletes))
            try await s.destination.delete(destDeletes, in: pair.destination)
            try effects.did("delete \(destDeletes.count) in \(pair.destination)")
            try state.complete(seq, JournalOutcome(.confirmed))
            try state.forget(.destination, in: pair.destination, ids: destDeletes)
            folderReport.with { $0.deleted += destDeletes.count }
        }
        let unchanged = !pair.create && copies.isEmpty && flagChanges.isEmpty && destDeletes.isEmpty
        return unchanged ? r : nil
    }

    /// Closes the append intents a crashed run left open for this pair: an
    /// append is settled as done when its key is now found in the destination,
    /// else abandoned (the plan copies the message again).
    func settleCrashed(_ pair: FolderPair, _ r: Resolved) throws {
        guard !options.dryRun else { return }
        let open = try state.openEntries().filter {
            $0.kind == .append && $0.sourceFolder == pair.source && $0.destinationFolder == pair.destination
        }
        guard !open.isEmpty else { return }
        var linked: [MessageID: LinkItem] = [:]
        var linkedKeys: [MessageKey: LinkItem] = [:]
        for case .link(let l) in r.actions {
            linked[l.sourceID] = l
            if let k = l.key { linkedKeys[k] = l }
        }
        var settled = 0
        for e in open {
            let sameValidity = e.sourceUIDValidity == r.input.source.validity.uidValidity
            let l = (sameValidity ? e.sourceID.flatMap { linked[$0] } : nil) ?? e.key.flatMap { linkedKeys[$0] }
            if let l {
                try state.complete(e.seq, JournalOutcome(.settled, destinationID: l.destinationID,
                                                         destinationUIDValidity: r.input.destination.validity.uidValidity,
                                                         key: l.key))
                settled += 1
            } else {
                try state.complete(e.seq, JournalOutcome(.abandoned))
            }
        }
        logger.notice("\(open.count) append(s) left open by an interrupted run into \(pair.destination): \(settled) found done, \(open.count - settled) to redo")
        report.with { $0.settledFromCrash += open.count }
    }

    // MARK: Streaming copy

    private struct InFlight: Sendable {
        var seq: Int64
        var item: CopyItem
        var tap: HashTap
        var pending: PendingAppend
        var dateSource: DateSource?
        /// What it takes of the append window.
        var cost: Int64
    }

    /// Streams the messages from the source into the destination: one fetch
    /// in order, appends pipelined with at most `appendWindow` messages
    /// (and `appendWindowBytes`) awaiting confirmation, each message hashed
    /// as its chunks pass.
    func copyMessages(_ copies: [CopyItem], pair: FolderPair, _ s: Sessions, validity: FolderValidity,
                      folderReport: Locked<FolderReport>, copiedThisRun: Locked<Set<MessageID>>,
                      duplicatesWhileCopying: Bool = false) async throws {
        let byID = Dictionary(copies.map { ($0.sourceID, $0) }, uniquingKeysWith: { a, _ in a })
        let window = AppendWindow(limit: options.appendWindow, byteLimit: options.appendWindowBytes)
        let (stream, cont) = AsyncStream.makeStream(of: InFlight.self)
        let state = self.state
        let effects = self.effects
        let destStore = s.destination
        let sourceStore = s.source
        let destinationRewrites = s.destination.capabilities.contains(.rewritesMessages)
        // A store that hashes what it writes gives the key of the stored bytes
        // itself: the body is not hashed a second time here.
        let storeHashes = s.destination.capabilities.contains(.keysWrittenBytes)
        // Planned without the source's headers: its own duplicates are told here.
        let seen = duplicatesWhileCopying ? SourceDuplicates(destinationRewrites: destinationRewrites) : nil
        let intents = IntentBatcher(copies, pair: pair, validity: validity, state: state,
                                    batchSize: max(1, options.appendWindow))
        defer {
            // Intents written ahead for messages that never came (vanished,
            // or the pair ended early) had no effect.
            try? intents.abandonUnused()
        }

        try await withThrowingTaskGroup(of: Void.self) { group in
            // Confirmations, in order, as they arrive; written to the state a
            // window at a time (one transaction). A crash before a batch is
            // written leaves its appends intended: the next run settles them
            // by key, as for any append whose confirmation was lost.
            group.addTask {
                var confirmed: [JournalCompletion] = []
                let batchSize = max(1, self.options.appendWindow)
                func flush() throws {
                    guard !confirmed.isEmpty else { return }
                    let batch = confirmed
                    confirmed = []
                    try state.complete(batch)
                }
                do {
                    for await f in stream {
                        do {
                            let result = try await f.pending.result()
                            let key = storeHashes ? result.key : f.tap.key
                            let (size, rawSize) = storeHashes ? (result.normalizedSize ?? result.size, result.size)
                                                              : (f.tap.size, f.tap.rawSize)
                            if result.key != key, !destinationRewrites {
                                window.release(bytes: f.cost)
                                confirmed.append(JournalCompletion(f.seq, JournalOutcome(.abandoned)))
                                self.fail(pair, f.item.sourceID, "the destination received different bytes than were sent",
                                          folderReport)
                                continue
                            }
                            var remember = [KnownMessage(side: .source, folder: pair.source, id: f.item.sourceID,
                                                         uidValidity: validity.uidValidity, key: key, size: size)]
                            if let id = result.id {
                                remember.append(KnownMessage(side: .destination, folder: pair.destination, id: id,
                                                             uidValidity: result.uidValidity, key: key, size: size,
                                                             origin: pair.source))
                            }
                            confirmed.append(JournalCompletion(f.seq, JournalOutcome(.confirmed, destinationID: result.id,
                                                                                     destinationUIDValidity: result.uidValidity,
                                                                                     key: key),
                                                               remember: remember))
                            copiedThisRun.with { _ = $0.insert(f.item.sourceID) }
                            folderReport.with {
                                $0.copied += 1
                                $0.bytes += rawSize
                            }
                            self.report.with { rep in
                                for k in result.droppedFlags {
                                    rep.droppedKeywords.append(.init(folder: pair.source.description,
                                                                     sourceID: f.item.sourceID.rawValue, keyword: k.name))
                                }
                                if let ds = f.dateSource { rep.dateSources[ds.rawValue, default: 0] += 1 }
                            }
                            self.progress.advance(messages: 1, bytes: rawSize, folder: pair.source)
                            self.flow?.progress(1)
                            window.release(bytes: f.cost)
                        } catch let e as MailError where e.scope == .message {
                            window.release(bytes: f.cost)
                            confirmed.append(JournalCompletion(f.seq, JournalOutcome(.abandoned)))
                            self.fail(pair, f.item.sourceID, e.description, folderReport)
                        } catch {
                            // A run-ending error names the folder and message it stopped at.
                            throw Self.naming(error, pair, f.item.sourceID)
                        }
                        if confirmed.count >= batchSize { try flush() }
                    }
                    try flush()
                } catch {
                    // What was confirmed is recorded before the error ends the pair.
                    try? flush()
                    window.fail(error)
                    throw error
                }
            }
            // Bodies, streamed from the source into the destination.
            group.addTask {
                defer { cont.finish() }
                do {
                    let vanished = try await sourceStore.fetchMessages(copies.map(\.sourceID), in: pair.source) { info, body in
                        try Task.checkCancellation()
                        guard let item = byID[info.id] else { return }
                        var body = body
                        var info = info
                        if let seen {
                            switch try await seen.check(info, key: item.key, body: body) {
                            case .first(let b, let judged):
                                body = b
                                info = judged
                            case .duplicate(let key, let size):
                                try state.remember([KnownMessage(side: .source, folder: pair.source, id: item.sourceID,
                                                                 uidValidity: validity.uidValidity, key: key, size: size)])
                                folderReport.with { $0.duplicates += 1 }
                                self.progress.advance(messages: 1, bytes: 0, folder: pair.source)
                                return
                            case .deferred(let earlier):
                                self.fail(pair, item.sourceID, "not copied: message \(earlier) of this folder, which may be "
                                          + "the same message, failed to copy; the next run tells them apart", folderReport)
                                return
                            }
                        }
                        // Its size as the source tells it (unknown: counted as nothing).
                        let cost = body.size ?? item.size ?? 0
                        try await window.acquire(bytes: cost)
                        let seq = try intents.seq(for: item)
                        var request = AppendRequest(flags: item.flags, internalDate: item.internalDate ?? info.internalDate,
                                                    key: item.key)
                        var source = body
                        var dateSource: DateSource? = item.dateSource ?? info.dateSource
                        if request.internalDate == nil {
                            // POP3: the date of the first Received:, else Date:, else now.
                            let headers: HeaderSummary
                            if let h = item.headers ?? info.headers {
                                headers = h
                            } else {
                                let peeked = try await PeekedBody.peekHeaders(body)
                                headers = peeked.headers
                                source = peeked.body
                            }
                            let (d, ds) = headers.impliedInternalDate(downloadedAt: .now())
                            request.internalDate = d
                            dateSource = ds
                        }
                        let tap = HashTap(hashing: !storeHashes)
                        let pending: PendingAppend
                        do {
                            pending = try await destStore.append(to: pair.destination, request, body: tap.wrap(source))
                        } catch let e as MailError where e.scope == .message {
                            window.release(bytes: cost)
                            try state.complete(seq, JournalOutcome(.abandoned))
                            seen?.recordFailed(info)
                            self.fail(pair, item.sourceID, e.description, folderReport)
                            return
                        } catch {
                            throw Self.naming(error, pair, item.sourceID)
                        }
                        try effects.did("append \(pair.source) \(item.sourceID) to \(pair.destination)")
                        seen?.record(info, key: item.key, tap: storeHashes ? nil : tap, pending: pending)
                        cont.yield(InFlight(seq: seq, item: item, tap: tap, pending: pending, dateSource: dateSource, cost: cost))
                    }
                    if !vanished.isEmpty {
                        folderReport.with { $0.skipped += vanished.count }
                        self.progress.advance(messages: vanished.count, bytes: 0, folder: pair.source)
                        self.logger.info("\(vanished.count) message(s) vanished from \(pair.source) before they could be copied")
                    }
                } catch {
                    window.fail(error)
                    throw error
                }
            }
            try await group.waitForAll()
        }
    }

    /// A run-ending error met while copying one message (a full disk, say)
    /// names the folder and the message it stopped at.
    static func naming(_ error: Error, _ pair: FolderPair, _ id: MessageID) -> Error {
        guard let e = error as? MailError, e.scope == .local, e.folder == nil, e.messageID == nil else { return error }
        return e.with(folder: pair.source, messageID: id.rawValue)
    }

    func fail(_ pair: FolderPair, _ id: MessageID?, _ reason: String, _ folderReport: Locked<FolderReport>) {
        logger.warning("\(pair.source) \(id?.rawValue ?? ""): \(reason)")
        folderReport.with { $0.failed += 1 }
        progress.advance(messages: 1, bytes: 0, folder: pair.source)
        report.with {
            $0.failures.append(.init(folder: pair.source.description, sourceID: id?.rawValue, reason: reason))
        }
    }
}

/// Writes append intents a window ahead, one transaction per window, so
/// that each is in the journal before its append starts (the rule) without a
/// transaction per message. Intents never used are closed as abandoned.
final class IntentBatcher: @unchecked Sendable {
    private let lock = NSLock()
    private let copies: [CopyItem]
    private let pair: FolderPair
    private let validity: FolderValidity
    private let state: any StateStore
    private let batchSize: Int
    private var next = 0
    private var taken = Set<MessageID>()
    private var ahead: [MessageID: Int64] = [:]

    init(_ copies: [CopyItem], pair: FolderPair, validity: FolderValidity, state: any StateStore, batchSize: Int) {
        self.copies = copies
        self.pair = pair
        self.validity = validity
        self.state = state
        self.batchSize = batchSize
    }

    private func entry(_ item: CopyItem) -> JournalEntry {
        .append(from: pair.source, id: item.sourceID, uidValidity: validity.uidValidity, to: pair.destination, key: item.key)
    }

    /// The journal sequence number of `item`'s append intent, written now
    /// (with the next few) unless it was written ahead.
    func seq(for item: CopyItem) throws -> Int64 {
        try lock.withLock {
            if let s = ahead.removeValue(forKey: item.sourceID) { return s }
            var batch = [item]
            taken.insert(item.sourceID)
            while batch.count < batchSize, next < copies.count {
                let c = copies[next]
                next += 1
                if taken.insert(c.sourceID).inserted { batch.append(c) }
            }
            let seqs = try state.intend(batch.map(entry))
            guard seqs.count == batch.count, let first = seqs.first else {
                throw MailError(.corrupt, scope: .local, "state store returned no journal sequence number")
            }
            for (c, s) in zip(batch.dropFirst(), seqs.dropFirst()) { ahead[c.sourceID] = s }
            return first
        }
    }

    func abandonUnused() throws {
        let open = lock.withLock { () -> [Int64] in
            let o = ahead.values.sorted()
            ahead = [:]
            return o
        }
        guard !open.isEmpty else { return }
        try state.complete(open.map { JournalCompletion($0, JournalOutcome(.abandoned)) })
    }
}

/// Bounds the appends awaiting confirmation, in messages and in bytes. A
/// message costs its size; one bigger than the byte bound is let in only
/// when the window is empty (it goes alone). Waiters are let in in order
/// (a big message is not passed over by small ones). `fail` wakes every
/// waiter with the error.
final class AppendWindow: @unchecked Sendable {
    private let lock = NSLock()
    let limit: Int
    let byteLimit: Int64
    private var inUse = 0
    private var bytesInUse: Int64 = 0
    private var failure: Error?
    private var waiters: [(bytes: Int64, c: CheckedContinuation<Void, Error>)] = []

    init(limit: Int, byteLimit: Int64 = .max) {
        self.limit = max(1, limit)
        self.byteLimit = max(1, byteLimit)
    }

    /// Messages and bytes in the window now, and acquires waiting (for tests).
    var occupancy: (messages: Int, bytes: Int64, waiting: Int) { lock.withLock { (inUse, bytesInUse, waiters.count) } }

    private func fits(_ bytes: Int64) -> Bool {
        inUse == 0 || (inUse < limit && bytesInUse + bytes <= byteLimit)
    }

    func acquire(bytes: Int64 = 0) async throws {
        let bytes = max(0, bytes)
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
            lock.lock()
            if let failure {
                lock.unlock()
                c.resume(throwing: failure)
            } else if waiters.isEmpty, fits(bytes) {
                inUse += 1
                bytesInUse += bytes
                lock.unlock()
                c.resume()
            } else {
                waiters.append((bytes, c))
                lock.unlock()
            }
        }
    }

    func release(bytes: Int64 = 0) {
        lock.lock()
        inUse = max(0, inUse - 1)
        bytesInUse = max(0, bytesInUse - max(0, bytes))
        var wake: [CheckedContinuation<Void, Error>] = []
        while let first = waiters.first, fits(first.bytes) {
            waiters.removeFirst()
            inUse += 1
            bytesInUse += first.bytes
            wake.append(first.c)
        }
        lock.unlock()
        for w in wake { w.resume() }
    }

    func fail(_ error: Error) {
        lock.lock()
        if failure == nil { failure = error }
        let ws = waiters
        waiters = []
        lock.unlock()
        for w in ws { w.c.resume(throwing: error) }
    }
}

/// Sees every chunk of a body as it passes to the destination: the key and
/// the size come for free, without a second read. Not `hashing`, it hands the
/// body on untouched (the destination hashes what it writes).
final class HashTap: @unchecked Sendable {
    private let lock = NSLock()
    private var hasher = MessageHasher()
    private let hashing: Bool

    init(hashing: Bool = true) { self.hashing = hashing }

    func wrap(_ body: MessageBody) -> MessageBody {
        guard hashing else { return body }
        let it = IteratorBox(body.makeAsyncIterator())
        return MessageBody(size: body.size) { [self] in
            let chunk = try await it.next()
            if let chunk {
                lock.withLock { chunk.withUnsafeReadableBytes { hasher.update($0) } }
            }
            return chunk
        }
    }

    var key: MessageKey { lock.withLock { hasher.finalize() } }
    /// Bytes after CRLF normalisation (what the key covers).
    var size: Int64 { lock.withLock { hasher.normalizedCount } }
    /// Bytes as they passed.
    var rawSize: Int64 { lock.withLock { hasher.rawCount } }
}

final class IteratorBox: @unchecked Sendable {
    private var it: MessageBody.AsyncIterator
    init(_ it: MessageBody.AsyncIterator) { self.it = it }
    func next() async throws -> ByteBuffer? { try await it.next() }
}

/// Reads a body's header block ahead (at most `HeaderReader.maxHeaderBytes`)
/// and hands back a body that replays it before the rest.
enum PeekedBody {
    static func peekHeaders(_ body: MessageBody) async throws -> (headers: HeaderSummary, body: MessageBody) {
        let it = IteratorBox(body.makeAsyncIterator())
        var reader = HeaderReader()
        var held: [ByteBuffer] = []
        var total = 0
        while !reader.isComplete, total < HeaderReader.maxHeaderBytes, let chunk = try await it.next() {
            held.append(chunk)
            total += chunk.readableBytes
            _ = reader.feed(chunk.readableBytesView)
        }
        let summary = reader.finish()
        let replay = Locked(held)
        let replayed = MessageBody(size: body.size) {
            if let first = replay.with({ $0.isEmpty ? nil : $0.removeFirst() }) { return first }
            return try await it.next()
        }
        return (summary, replayed)
    }
}

/// Totals for the progress callback.
final class ProgressTracker: @unchecked Sendable {
    private let lock = NSLock()
    private var value = TransferProgress(messagesDone: 0, messagesTotal: 0, bytesDone: 0, bytesTotal: 0, folder: nil)
    private let callback: (@Sendable (TransferProgress) -> Void)?

    init(_ callback: (@Sendable (TransferProgress) -> Void)?) { self.callback = callback }

    func add(total: Int, bytes: Int64, done: Int) {
        let v: TransferProgress = lock.withLock {
            value.messagesTotal += total
            value.bytesTotal += bytes
            value.messagesDone += done
            return value
        }
        callback?(v)
    }

    func advance(messages: Int, bytes: Int64, folder: FolderPath?) {
        let v: TransferProgress = lock.withLock {
            value.messagesDone += messages
            value.bytesDone += bytes
            value.folder = folder
            return value
        }
        callback?(v)
    }
}

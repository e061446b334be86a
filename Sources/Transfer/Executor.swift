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
    /// The job's flow control: told of every message moved (clean progress).
    var flow: FlowGate? = nil

    // MARK: Knowledge

    /// Ids of a listing whose keys the state vouches for (same UIDVALIDITY, still listed).
    func knowledge(_ side: Side, _ folder: FolderPath, _ listing: FolderListing, persistent: Bool)
        throws -> (keys: [MessageID: MessageKey], origins: [MessageID: FolderPath]) {
        guard persistent, let mark = try state.mark(side, folder),
              mark.validity.uidValidity == listing.validity.uidValidity else { return ([:], [:]) }
        let present = Set(listing.messages.map(\.id))
        var keys: [MessageID: MessageKey] = [:]
        var origins: [MessageID: FolderPath] = [:]
        for k in try state.known(side, in: folder)
        where present.contains(k.id) && k.uidValidity == listing.validity.uidValidity {
            keys[k.id] = k.key
            if let o = k.origin { origins[k.id] = o }
        }
        return (keys, origins)
    }

    /// Saves the folder's mark (voiding ids when UIDVALIDITY changed) and forgets ids no longer listed.
    func commitMark(_ side: Side, _ folder: FolderPath, _ listing: FolderListing) throws {
        let voided = try state.saveMark(FolderMark(side: side, folder: folder, validity: listing.validity,
                                                   lastID: listing.messages.map(\.id).max()))
        if voided {
            logger.notice("UIDVALIDITY of \(side.rawValue) folder \(folder) changed: its ids are void, keys decide")
        }
        guard !listing.isIncremental else { return }
        let present = Set(listing.messages.map(\.id))
        let stale = try state.known(side, in: folder).map(\.id).filter { !present.contains($0) }
        try state.forget(side, in: folder, ids: stale)
    }

    /// Lists both folders, reads what the state knows, and hashes what only
    /// keys can decide, until the planner can decide everything.
    func resolve(_ pair: FolderPair, _ s: Sessions, planOptions: PlanOptions, destinationMayBeMissing: Bool) async throws -> Resolved {
        let srcPersistent = s.source.capabilities.contains(.persistentIDs)
        let dstPersistent = s.destination.capabilities.contains(.persistentIDs)
        let firstSource = try state.mark(.source, pair.source) == nil
        var sl = try await s.source.listMessages(in: pair.source, options: ListOptions(includeHeaders: firstSource))
        var dl = FolderListing(folder: pair.destination, messages: [])
        var destinationExists = true
        do {
            let firstDest = try state.mark(.destination, pair.destination) == nil
            dl = try await s.destination.listMessages(in: pair.destination, options: ListOptions(includeHeaders: firstDest && !sl.messages.isEmpty))
        } catch let e as MailError where e.kind == .notFound && destinationMayBeMissing {
            destinationExists = false
        }
        var sk = try knowledge(.source, pair.source, sl, persistent: srcPersistent)
        var dk = try knowledge(.destination, pair.destination, dl, persistent: dstPersistent)
        let sUnknown = sl.messages.filter { sk.keys[$0.id] == nil && $0.key == nil }.count
        let dUnknown = dl.messages.filter { dk.keys[$0.id] == nil && $0.key == nil }.count
        let needHeaders = (sUnknown > 0 && (!dl.messages.isEmpty || sUnknown >= 2)) || (dUnknown > 0 && !sl.messages.isEmpty)
        if needHeaders {
            if sl.messages.contains(where: { $0.headers == nil }) {
                sl = try await s.source.listMessages(in: pair.source, options: ListOptions(includeHeaders: true))
                sk = try knowledge(.source, pair.source, sl, persistent: srcPersistent)
            }
            if destinationExists, dl.messages.contains(where: { $0.headers == nil }) {
                dl = try await s.destination.listMessages(in: pair.destination, options: ListOptions(includeHeaders: true))
                dk = try knowledge(.destination, pair.destination, dl, persistent: dstPersistent)
            }
        }
        try commitMark(.source, pair.source, sl)
        if destinationExists { try commitMark(.destination, pair.destination, dl) }

        var input = PairInput(pair: pair, source: sl, destination: dl, sourceKeys: sk.keys, destinationKeys: dk.keys,
                              destinationOrigins: dk.origins,
                              destinationRewrites: s.destination.capabilities.contains(.rewritesMessages),
                              options: planOptions)
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
    func copyPair(_ pair: FolderPair, _ s: Sessions, folderReport: Locked<FolderReport>,
                  copiedThisRun: Locked<Set<MessageID>>) async throws {
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
            return
        }

        // Remember what is already there, in one transaction.
        var remember: [KnownMessage] = []
        for l in links {
            guard let k = l.key else { continue }
            remember.append(KnownMessage(side: .source, folder: pair.source, id: l.sourceID,
                                         uidValidity: r.input.source.validity.uidValidity, key: k))
            if l.matchedBy == .key {
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
                                   folderReport: folderReport, copiedThisRun: copiedThisRun)
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
    }

    /// Streams the messages from the source into the destination: one fetch
    /// in order, appends pipelined with at most `appendWindow` awaiting
    /// confirmation, each message hashed as its chunks pass.
    func copyMessages(_ copies: [CopyItem], pair: FolderPair, _ s: Sessions, validity: FolderValidity,
                      folderReport: Locked<FolderReport>, copiedThisRun: Locked<Set<MessageID>>) async throws {
        let byID = Dictionary(copies.map { ($0.sourceID, $0) }, uniquingKeysWith: { a, _ in a })
        let window = AppendWindow(limit: options.appendWindow)
        let (stream, cont) = AsyncStream.makeStream(of: InFlight.self)
        let state = self.state
        let effects = self.effects
        let destStore = s.destination
        let sourceStore = s.source
        let destinationRewrites = s.destination.capabilities.contains(.rewritesMessages)

        try await withThrowingTaskGroup(of: Void.self) { group in
            // Confirmations, in order, as they arrive.
            group.addTask {
                for await f in stream {
                    do {
                        let result = try await f.pending.result()
                        let key = f.tap.key
                        if result.key != key, !destinationRewrites {
                            window.release()
                            try state.complete(f.seq, JournalOutcome(.abandoned))
                            self.fail(pair, f.item.sourceID, "the destination received different bytes than were sent",
                                      folderReport)
                            continue
                        }
                        var remember = [KnownMessage(side: .source, folder: pair.source, id: f.item.sourceID,
                                                     uidValidity: validity.uidValidity, key: key, size: f.tap.size)]
                        if let id = result.id {
                            remember.append(KnownMessage(side: .destination, folder: pair.destination, id: id,
                                                         uidValidity: result.uidValidity, key: key, size: f.tap.size,
                                                         origin: pair.source))
                        }
                        try state.complete(f.seq, JournalOutcome(.confirmed, destinationID: result.id,
                                                                 destinationUIDValidity: result.uidValidity, key: key),
                                           remember: remember)
                        copiedThisRun.with { _ = $0.insert(f.item.sourceID) }
                        folderReport.with {
                            $0.copied += 1
                            $0.bytes += f.tap.rawSize
                        }
                        self.report.with { rep in
                            for k in result.droppedFlags {
                                rep.droppedKeywords.append(.init(folder: pair.source.description,
                                                                 sourceID: f.item.sourceID.rawValue, keyword: k.name))
                            }
                            if let ds = f.dateSource { rep.dateSources[ds.rawValue, default: 0] += 1 }
                        }
                        self.progress.advance(messages: 1, bytes: f.tap.rawSize, folder: pair.source)
                        self.flow?.progress(1)
                        window.release()
                    } catch let e as MailError where e.scope == .message {
                        window.release()
                        try state.complete(f.seq, JournalOutcome(.abandoned))
                        self.fail(pair, f.item.sourceID, e.description, folderReport)
                    } catch {
                        window.fail(error)
                        // Drain so the producer is not left waiting.
                        throw error
                    }
                }
            }
            // Bodies, streamed from the source into the destination.
            group.addTask {
                defer { cont.finish() }
                do {
                    let vanished = try await sourceStore.fetchMessages(copies.map(\.sourceID), in: pair.source) { info, body in
                        try Task.checkCancellation()
                        guard let item = byID[info.id] else { return }
                        try await window.acquire()
                        let seq = try state.intend(.append(from: pair.source, id: item.sourceID,
                                                           uidValidity: validity.uidValidity,
                                                           to: pair.destination, key: item.key))
                        var request = AppendRequest(flags: item.flags, internalDate: item.internalDate ?? info.internalDate,
                                                    key: item.key)
                        var source = body
                        var dateSource: DateSource? = item.dateSource ?? info.dateSource
                        if request.internalDate == nil {
                            // POP3: the date of the first Received:, else Date:, else now.
                            let headers: HeaderSummary
                            if let h = item.headers {
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
                        let tap = HashTap()
                        let pending: PendingAppend
                        do {
                            pending = try await destStore.append(to: pair.destination, request, body: tap.wrap(source))
                        } catch let e as MailError where e.scope == .message {
                            window.release()
                            try state.complete(seq, JournalOutcome(.abandoned))
                            self.fail(pair, item.sourceID, e.description, folderReport)
                            return
                        }
                        try effects.did("append \(pair.source) \(item.sourceID) to \(pair.destination)")
                        cont.yield(InFlight(seq: seq, item: item, tap: tap, pending: pending, dateSource: dateSource))
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

    func fail(_ pair: FolderPair, _ id: MessageID?, _ reason: String, _ folderReport: Locked<FolderReport>) {
        logger.warning("\(pair.source) \(id?.rawValue ?? ""): \(reason)")
        folderReport.with { $0.failed += 1 }
        progress.advance(messages: 1, bytes: 0, folder: pair.source)
        report.with {
            $0.failures.append(.init(folder: pair.source.description, sourceID: id?.rawValue, reason: reason))
        }
    }
}

/// Bounds the appends awaiting confirmation. `fail` wakes every waiter with the error.
final class AppendWindow: @unchecked Sendable {
    private let lock = NSLock()
    private let limit: Int
    private var inUse = 0
    private var failure: Error?
    private var waiters: [CheckedContinuation<Void, Error>] = []

    init(limit: Int) { self.limit = limit }

    func acquire() async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
            lock.lock()
            if let failure {
                lock.unlock()
                c.resume(throwing: failure)
            } else if inUse < limit {
                inUse += 1
                lock.unlock()
                c.resume()
            } else {
                waiters.append(c)
                lock.unlock()
            }
        }
    }

    func release() {
        lock.lock()
        if !waiters.isEmpty {
            let w = waiters.removeFirst()
            lock.unlock()
            w.resume()
        } else {
            inUse = max(0, inUse - 1)
            lock.unlock()
        }
    }

    func fail(_ error: Error) {
        lock.lock()
        if failure == nil { failure = error }
        let ws = waiters
        waiters = []
        lock.unlock()
        for w in ws { w.resume(throwing: error) }
    }
}

/// Sees every chunk of a body as it passes to the destination: the key and
/// the size come for free, without a second read.
final class HashTap: @unchecked Sendable {
    private let lock = NSLock()
    private var hasher = MessageHasher()

    func wrap(_ body: MessageBody) -> MessageBody {
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

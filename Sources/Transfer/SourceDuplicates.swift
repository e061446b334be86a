import Foundation
import MailModel
import MailStore

/// Tells the duplicates inside a source folder apart while its messages are
/// copied, for a pair planned without the source's headers (POP3 into an
/// empty destination: no `TOP n 0` per message, see
/// `PlanOptions.sourceDuplicatesWhileCopying`). The rule is the planner's:
/// the first message of each key is copied, the later ones are duplicates.
///
/// Messages come in source order with the headers their fetch read. One
/// whose headers and size (`Planner.mayBeSame`) match no earlier message
/// cannot have an earlier one's key (equal bytes have equal headers), so it
/// streams on as it is. Otherwise it is spooled and hashed, and its key is
/// compared with those earlier messages' keys (of the bytes their
/// destination stored); only an exact match makes it a duplicate.
///
/// An earlier look-alike whose copy failed leaves its key unknown: the later
/// message then waits (`deferred`). Copying it would put the later one's
/// flags and date where the planner's rule puts the first one's; the next
/// run, planning with headers against what is now there, tells them apart.
final class SourceDuplicates: @unchecked Sendable {
    enum Verdict: Sendable {
        /// Copy it: this body (the same bytes, possibly spooled); `info`
        /// carries the headers it was judged by (for `record`).
        case first(MessageBody, info: MessageInfo)
        /// Its key was already copied in this pair.
        case duplicate(key: MessageKey, size: Int64?)
        /// Not copied in this pass: `earlier`, which may be the same message
        /// and comes first, failed to copy.
        case deferred(earlier: MessageID)
    }

    private struct Earlier {
        var info: MessageInfo
        /// Nil when its append did not store it.
        var key: @Sendable () async -> MessageKey?
    }

    private let lock = NSLock()
    private let destinationRewrites: Bool
    private var earlier: [Earlier] = []
    private var byMessageID: [String: [Int]] = [:]
    /// Earlier messages without a Message-ID: they may pair with any message.
    private var wild: [Int] = []

    init(destinationRewrites: Bool) {
        self.destinationRewrites = destinationRewrites
    }

    private func candidates(for m: MessageInfo) -> [Earlier] {
        lock.withLock {
            let pool: [Int]
            if let id = m.headers?.messageID {
                pool = (byMessageID[Planner.squeeze(id)] ?? []) + wild
            } else {
                pool = Array(earlier.indices)
            }
            return pool.sorted().map { earlier[$0] }.filter { Planner.mayBeSame(m, $0.info) }
        }
    }

    /// Decides whether `info` (key known in advance, or nil) is a duplicate of
    /// an earlier message of this pair.
    func check(_ listed: MessageInfo, key known: MessageKey?, body original: MessageBody) async throws -> Verdict {
        var info = listed
        var body = original
        if info.headers == nil {
            // A store that did not read them: the header block, read ahead and replayed.
            let peeked = try await PeekedBody.peekHeaders(original)
            info.headers = peeked.headers
            body = peeked.body
        }
        let cands = candidates(for: info)
        guard !cands.isEmpty else { return .first(body, info: info) }
        var earlierKeys = Set<MessageKey>()
        var failed: [MessageID] = []
        for c in cands {
            if let k = await c.key() { earlierKeys.insert(k) } else { failed.append(c.info.id) }
        }
        if let known {
            if earlierKeys.contains(known) { return .duplicate(key: known, size: nil) }
            if let f = failed.first { return .deferred(earlier: f) }
            return .first(body, info: info)
        }
        if earlierKeys.isEmpty {
            // Nothing stored to compare with: it is copied, or waits behind a failed one, unread.
            if let f = failed.first { return .deferred(earlier: f) }
            return .first(body, info: info)
        }
        // Its key decides: read it once into a spool (memory, or an unlinked
        // file past 4 MB), hashing on the way; the spool is what gets copied.
        let tap = HashTap()
        let spooled = try await SpooledBody.spool(tap.wrap(body))
        let key = tap.key
        if earlierKeys.contains(key) { return .duplicate(key: key, size: tap.size) }
        if let f = failed.first { return .deferred(earlier: f) }
        return .first(spooled.body, info: info)
    }

    /// Remembers a message whose copy failed before it reached the destination.
    func recordFailed(_ info: MessageInfo) {
        insert(Earlier(info: info, key: { nil }))
    }

    /// Remembers a message handed to the destination: its key is the one
    /// the destination confirms (the tap's, when the executor hashed).
    func record(_ info: MessageInfo, key known: MessageKey?, tap: HashTap?, pending: PendingAppend) {
        let rewrites = destinationRewrites
        let key: @Sendable () async -> MessageKey? = {
            guard let r = try? await pending.result() else { return nil }
            if let known { return known }
            guard let tap else { return r.key }
            return r.key == tap.key || rewrites ? tap.key : nil
        }
        insert(Earlier(info: info, key: key))
    }

    private func insert(_ e: Earlier) {
        lock.withLock {
            let i = earlier.count
            earlier.append(e)
            if let id = e.info.headers?.messageID {
                byMessageID[Planner.squeeze(id), default: []].append(i)
            } else {
                wild.append(i)
            }
        }
    }
}

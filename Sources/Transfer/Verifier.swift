import Foundation
import Logging
import MailModel
import MailStore
import SyncState

/// The outcome of checking one folder pair.
struct PairVerification: Sendable {
    var checked: Int
    /// Source ids found in the destination.
    var verified: [MessageID]
    var missing: [VerifyReport.Missing]
    var headerMatches: [Report.HeaderMatch]
}

/// Confirms that every selected source message is in the destination, by
/// key: the state vouches for ids it knows (same UIDVALIDITY, still listed);
/// only what it cannot vouch for is fetched and hashed. On destinations
/// that rewrite messages, Message-ID + Date + From stands in for the key,
/// and never for a message without a Message-ID.
struct Verifier: Sendable {
    let executor: Executor

    func verify(_ pair: FolderPair, _ s: Sessions) async throws -> PairVerification {
        let r = try await executor.resolve(pair, s, planOptions: PlanOptions(), destinationMayBeMissing: true)
        return verify(pair, resolved: r)
    }

    /// Verifies from a resolution already made (both folders listed, the
    /// state read, keys learnt): the copy pass of a pair that needed nothing.
    func verify(_ pair: FolderPair, resolved r: Resolved) -> PairVerification {
        var linkedKeys = Set<MessageKey>()
        var verified: [MessageID] = []
        var missing: [VerifyReport.Missing] = []
        var headerMatches: [Report.HeaderMatch] = []
        let info = Dictionary(r.input.source.messages.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for a in r.actions {
            switch a {
            case .link(let l):
                verified.append(l.sourceID)
                if let k = l.key { linkedKeys.insert(k) }
                if l.matchedBy == .headers {
                    headerMatches.append(.init(folder: pair.source.description, sourceID: l.sourceID.rawValue,
                                               destinationID: l.destinationID.rawValue, messageID: l.messageID))
                }
            default: break
            }
        }
        for a in r.actions {
            switch a {
            case .duplicate(_, let id, let k):
                if linkedKeys.contains(k) {
                    verified.append(id)
                } else {
                    missing.append(.init(sourceID: id.rawValue, key: k.hex, messageID: info[id]?.headers?.messageID,
                                         reason: "not in \(pair.destination)"))
                }
            case .copy(let c):
                let reason = r.destinationExists ? "not in \(pair.destination)" : "folder \(pair.destination) does not exist"
                missing.append(.init(sourceID: c.sourceID.rawValue, key: c.key?.hex, messageID: c.headers?.messageID,
                                     reason: reason))
            default: break
            }
        }
        return PairVerification(checked: r.input.source.messages.count, verified: verified, missing: missing,
                                headerMatches: headerMatches)
    }
}

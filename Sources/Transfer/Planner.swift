import MailModel
import SyncState

/// `--map OLD=NEW`: a folder, and everything under it, gets a new name.
public struct FolderMapping: Sendable, Hashable, Codable {
    public var old: FolderPath
    public var new: FolderPath

    public init(old: FolderPath, new: FolderPath) {
        self.old = old
        self.new = new
    }

    /// Parses `OLD=NEW` (names `/`-separated, as shown to users).
    public init(parsing text: String) throws {
        let parts = text.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, let o = FolderPath(String(parts[0])), let n = FolderPath(String(parts[1])) else {
            throw MailError(.usage, scope: .local, "--map needs OLD=NEW with two folder names, not '\(text)'")
        }
        self.init(old: o, new: n)
    }

    /// The new name of `path` if it is OLD or lies under it.
    public func apply(to path: FolderPath) -> FolderPath? {
        guard path.components.starts(with: old.components) else { return nil }
        return FolderPath(components: new.components + path.components.dropFirst(old.components.count))
    }
}

/// Which source folders a job takes, and where they go.
public struct FolderSelection: Sendable, Hashable {
    /// `--folder GLOB`: when not empty, a folder must match one.
    public var include: [String]
    /// `--exclude GLOB`: a folder matching one is left out.
    public var exclude: [String]
    /// `--map OLD=NEW`, first match wins.
    public var map: [FolderMapping]
    /// `--into FOLDER`: the destination of a one-folder source (POP3); default INBOX.
    public var into: FolderPath?

    public init(include: [String] = [], exclude: [String] = [], map: [FolderMapping] = [], into: FolderPath? = nil) {
        self.include = include
        self.exclude = exclude
        self.map = map
        self.into = into
    }

    public func selects(_ path: FolderPath) -> Bool {
        if !include.isEmpty, !include.contains(where: { path.matches(glob: $0) }) { return false }
        return !exclude.contains { path.matches(glob: $0) }
    }
}

/// One source folder and the destination folder its messages go to.
public struct FolderPair: Sendable, Hashable, Codable {
    public var source: FolderPath
    public var destination: FolderPath
    /// Why the destination has this name.
    public var reason: Reason
    /// The destination folder does not exist yet.
    public var create: Bool

    public enum Reason: String, Sendable, Hashable, Codable {
        case sameName = "same name", mapped = "--map", into = "--into", role = "special-use role"
    }

    public init(source: FolderPath, destination: FolderPath, reason: Reason, create: Bool) {
        self.source = source
        self.destination = destination
        self.reason = reason
        self.create = create
    }
}

/// The folder half of a plan.
public struct FolderPlan: Sendable, Hashable {
    public var pairs: [FolderPair]
    /// Source folders left out, and why.
    public var skipped: [SkippedFolder]
    /// Destination folders to create, parents first.
    public var creates: [FolderPath]

    public struct SkippedFolder: Sendable, Hashable, Codable {
        public var folder: FolderPath
        public var reason: String
    }
}

/// One thing the executor will do. Plans are values: tests compare them.
public enum Action: Sendable, Hashable {
    case createFolder(FolderPath)
    /// Read these messages and learn their keys (candidates that size and
    /// headers could not tell apart). Reads only; nothing changes.
    case hash(Side, folder: FolderPath, ids: [MessageID])
    case copy(CopyItem)
    /// The message is already in the destination: remember the mapping.
    case link(LinkItem)
    /// The same message appears again in the source folder; it is copied once.
    case duplicate(folder: FolderPath, id: MessageID, key: MessageKey)
    case setFlags(folder: FolderPath, id: MessageID, flags: Flags)
    /// Archive mirrors: a message this job copied that is gone from the source.
    case deleteDestination(folder: FolderPath, ids: [MessageID])
    /// `--delete-source`, only for verified messages.
    case deleteSource(folder: FolderPath, ids: [MessageID])
}

public struct CopyItem: Sendable, Hashable {
    public var sourceFolder: FolderPath
    public var sourceID: MessageID
    public var destinationFolder: FolderPath
    public var flags: Flags
    public var internalDate: InternalDate?
    public var dateSource: DateSource?
    /// Known when state or hashing already told it; else learnt while streaming.
    public var key: MessageKey?
    public var size: Int64?
    public var headers: HeaderSummary?
}

public struct LinkItem: Sendable, Hashable {
    public var sourceFolder: FolderPath
    public var sourceID: MessageID
    public var key: MessageKey?
    public var destinationFolder: FolderPath
    public var destinationID: MessageID
    public var matchedBy: MatchKind
    /// For `.headers` matches: the Message-ID that matched (for the report).
    public var messageID: String?
}

/// What the planner knows about one folder pair.
public struct PairInput: Sendable {
    public var pair: FolderPair
    public var source: FolderListing
    /// Empty when the destination folder does not exist yet.
    public var destination: FolderListing
    /// Source ids whose keys are known (state or hashing), valid for `source.validity`.
    public var sourceKeys: [MessageID: MessageKey]
    /// Destination ids whose keys are known, valid for `destination.validity`.
    public var destinationKeys: [MessageID: MessageKey]
    /// Destination ids this job copied, and from which source folder (for deletion propagation).
    public var destinationOrigins: [MessageID: FolderPath]
    /// The destination may rewrite messages: unvouched messages match by Message-ID + Date + From.
    public var destinationRewrites: Bool
    public var options: PlanOptions

    public init(pair: FolderPair, source: FolderListing, destination: FolderListing,
                sourceKeys: [MessageID: MessageKey] = [:], destinationKeys: [MessageID: MessageKey] = [:],
                destinationOrigins: [MessageID: FolderPath] = [:], destinationRewrites: Bool = false,
                options: PlanOptions = PlanOptions()) {
        self.pair = pair
        self.source = source
        self.destination = destination
        self.sourceKeys = sourceKeys
        self.destinationKeys = destinationKeys
        self.destinationOrigins = destinationOrigins
        self.destinationRewrites = destinationRewrites
        self.options = options
    }
}

public struct PlanOptions: Sendable, Hashable {
    /// Make the destination's flags equal the source's for messages already there.
    public var propagateFlags: Bool
    /// Delete from the destination what this job copied and the source no longer has.
    public var propagateDeletions: Bool
    /// The destination keeps flags / can change them.
    public var destinationFlags: Bool
    /// Messages of unknown key are not hashed to tell duplicates inside the
    /// source apart: the copy tells them as it reads each message, and copies
    /// the first of each key only. The executor sets it for a source listed
    /// without headers (POP3) into an empty destination.
    public var sourceDuplicatesWhileCopying: Bool

    public init(propagateFlags: Bool = false, propagateDeletions: Bool = false, destinationFlags: Bool = true,
                sourceDuplicatesWhileCopying: Bool = false) {
        self.propagateFlags = propagateFlags
        self.propagateDeletions = propagateDeletions
        self.destinationFlags = destinationFlags
        self.sourceDuplicatesWhileCopying = sourceDuplicatesWhileCopying
    }
}

/// The pure half of the engine, after dsync: listings and state in, actions out.
/// No I/O, no clock, no randomness.
public enum Planner {
    // MARK: Folders

    /// Chooses source folders and names their destinations.
    ///
    /// Order of rules: `--into` (one-folder sources), then `--map`, then
    /// SPECIAL-USE roles (a source `\Sent` goes to the destination's `\Sent`
    /// whatever its name), then the same name.
    public static func planFolders(source: [FolderInfo], destination: [FolderInfo], selection: FolderSelection,
                                   sourceHasFolders: Bool = true) throws -> FolderPlan {
        var skipped: [FolderPlan.SkippedFolder] = []
        var chosen: [FolderInfo] = []
        for f in source.sorted(by: { $0.path < $1.path }) {
            if !f.selectable {
                skipped.append(.init(folder: f.path, reason: "not selectable (a container)"))
            } else if !selection.selects(f.path) {
                skipped.append(.init(folder: f.path, reason: "not selected by --folder/--exclude"))
            } else {
                chosen.append(f)
            }
        }
        let oneFolder = !sourceHasFolders || source.filter(\.selectable).count == 1
        if selection.into != nil, !oneFolder {
            throw MailError(.usage, scope: .local, "--into applies to a one-folder source (POP3); this source has \(source.count) folders",
                            hint: "use --map 'OLD=NEW' to rename folders")
        }
        var byRole: [FolderRole: FolderPath] = [:]
        for d in destination.sorted(by: { $0.path < $1.path }) {
            if let r = d.role, byRole[r] == nil { byRole[r] = d.path }
        }
        // A destination folder that cannot hold messages (a container, or a
        // Maildir whose cur/ a killed run never made) is created: creating
        // is idempotent, and copying into it as it is fails the folder.
        let existing = Set(destination.filter(\.selectable).map(\.path))
        var pairs: [FolderPair] = []
        for f in chosen {
            let target: FolderPath
            let reason: FolderPair.Reason
            if oneFolder, !sourceHasFolders || selection.into != nil {
                target = selection.into ?? .inbox
                reason = .into
            } else if let m = selection.map.lazy.compactMap({ $0.apply(to: f.path) }).first {
                target = m
                reason = .mapped
            } else if let r = f.role, let d = byRole[r] {
                target = d
                reason = d == f.path ? .sameName : .role
            } else {
                target = f.path
                reason = .sameName
            }
            pairs.append(FolderPair(source: f.path, destination: target, reason: reason,
                                    create: !existing.contains(target)))
        }
        var creates: [FolderPath] = []
        var seen = existing
        for p in pairs where p.create {
            for a in p.destination.ancestors + [p.destination] where !seen.contains(a) {
                seen.insert(a)
                if a == p.destination { creates.append(a) }
            }
        }
        return FolderPlan(pairs: pairs, skipped: skipped, creates: creates.sorted())
    }

    // MARK: Messages

    /// Two listed messages that could be the same message: the cheap filter
    /// before hashing. Headers must agree where both sides listed them (a
    /// field one side could not read matches anything: header listings of
    /// different stores are not equally complete); sizes must be within what
    /// line-ending normalisation can explain (a message with bare LFs grows by
    /// at most a factor of two when normalised to CRLF).
    public static func mayBeSame(_ a: MessageInfo, _ b: MessageInfo) -> Bool {
        if let ha = a.headers, let hb = b.headers {
            guard agree(ha.messageID, hb.messageID), agree(ha.dateRaw, hb.dateRaw), agree(ha.from, hb.from) else { return false }
        }
        if let sa = a.size, let sb = b.size, sa > 0, sb > 0 {
            guard max(sa, sb) <= 2 * min(sa, sb) else { return false }
        }
        return true
    }

    private static func agree(_ a: String?, _ b: String?) -> Bool {
        guard let a, let b else { return true }
        return squeeze(a) == squeeze(b)
    }

    /// A header value without white space, for comparisons that folding and
    /// spacing must not upset.
    static func squeeze(_ s: String) -> String {
        // ASCII (nearly every header value): white space is HT, LF, VT, FF,
        // CR and SP, and a value without any comes back as it is. The
        // Unicode property lookup for every scalar cost ~2.5% of a copy's CPU.
        var ascii = true
        var white = false
        for b in s.utf8 {
            if b >= 0x80 { ascii = false; break }
            if b == 0x20 || (b >= 0x09 && b <= 0x0D) { white = true }
        }
        if ascii {
            guard white else { return s }
            return String(decoding: s.utf8.filter { !($0 == 0x20 || ($0 >= 0x09 && $0 <= 0x0D)) }, as: UTF8.self)
        }
        return String(String.UnicodeScalarView(s.unicodeScalars.filter { !$0.properties.isWhitespace }))
    }

    /// The actions for one folder pair. When some messages can be told apart
    /// only by their keys, the result holds only `.hash` actions: carry them
    /// out, add the keys to the input, and plan again.
    public static func planMessages(_ input: PairInput) -> [Action] {
        let src = input.source.messages
        let dst = input.destination.messages
        let sFolder = input.pair.source
        let dFolder = input.pair.destination
        let rewrites = input.destinationRewrites

        var destByKey: [MessageKey: MessageInfo] = [:]
        var destUnknown: [MessageInfo] = []
        var destByFallback: [String: MessageInfo] = [:]
        for d in dst {
            if let k = input.destinationKeys[d.id] ?? d.key {
                if destByKey[k] == nil { destByKey[k] = d }
            } else {
                destUnknown.append(d)
                if rewrites, let f = d.headers?.fallbackIdentity, destByFallback[f] == nil { destByFallback[f] = d }
            }
        }
        func key(_ m: MessageInfo) -> MessageKey? { input.sourceKeys[m.id] ?? m.key }

        // Resolution: which messages need their keys before anything is decided.
        let sourceIndex = CandidateIndex(src)
        let unknownDestIndex = CandidateIndex(destUnknown)
        let knownDestIndex = CandidateIndex(Array(destByKey.values))
        var hashSource: [MessageID] = []
        var hashDest = Set<MessageID>()
        for m in src {
            let k = key(m)
            if k == nil, !input.options.sourceDuplicatesWhileCopying {
                // Another source message that may be this one: a duplicate
                // inside the folder must be told by its key, or it is copied twice.
                if sourceIndex.candidates(for: m).contains(where: { $0.id != m.id }) {
                    hashSource.append(m.id)
                    continue
                }
            }
            if rewrites {
                // Unvouched destination messages cannot be hashed usefully: headers decide.
                if k == nil, !knownDestIndex.candidates(for: m).isEmpty { hashSource.append(m.id) }
                continue
            }
            let cands = unknownDestIndex.candidates(for: m)
            if !cands.isEmpty {
                hashDest.formUnion(cands.map(\.id))
                if k == nil { hashSource.append(m.id) }
            } else if k == nil, !knownDestIndex.candidates(for: m).isEmpty {
                hashSource.append(m.id)
            }
        }
        if !hashSource.isEmpty || !hashDest.isEmpty {
            var out: [Action] = []
            if !hashSource.isEmpty { out.append(.hash(.source, folder: sFolder, ids: hashSource)) }
            if !hashDest.isEmpty {
                out.append(.hash(.destination, folder: dFolder, ids: dst.map(\.id).filter { hashDest.contains($0) }))
            }
            return out
        }

        // Decision: every message that could be in the destination now has a key.
        var actions: [Action] = []
        var claimed = Set<MessageKey>()
        var claimedDest = Set<MessageID>()
        var copies: [CopyItem] = []
        for m in src {
            let k = key(m)
            if let k, claimed.contains(k) {
                actions.append(.duplicate(folder: sFolder, id: m.id, key: k))
                continue
            }
            if let k { claimed.insert(k) }
            if let k, let d = destByKey[k] {
                claimedDest.insert(d.id)
                actions.append(.link(LinkItem(sourceFolder: sFolder, sourceID: m.id, key: k, destinationFolder: dFolder,
                                              destinationID: d.id, matchedBy: .key)))
                if input.options.propagateFlags, input.options.destinationFlags, d.flags != m.flags {
                    actions.append(.setFlags(folder: dFolder, id: d.id, flags: m.flags))
                }
                continue
            }
            if rewrites, let fid = m.headers?.fallbackIdentity, let d = destByFallback[fid], !claimedDest.contains(d.id) {
                claimedDest.insert(d.id)
                actions.append(.link(LinkItem(sourceFolder: sFolder, sourceID: m.id, key: k, destinationFolder: dFolder,
                                              destinationID: d.id, matchedBy: .headers, messageID: m.headers?.messageID)))
                continue
            }
            copies.append(CopyItem(sourceFolder: sFolder, sourceID: m.id, destinationFolder: dFolder, flags: m.flags,
                                   internalDate: m.internalDate, dateSource: m.dateSource, key: k, size: m.size,
                                   headers: m.headers))
        }
        actions += copies.map(Action.copy)

        if input.options.propagateDeletions {
            // Only when every source message's key is known: an unknown key might be the one.
            let sourceKeys = src.compactMap(key)
            if sourceKeys.count == src.count {
                let present = Set(sourceKeys)
                let gone = dst.filter { d in
                    guard input.destinationOrigins[d.id] == sFolder, let k = input.destinationKeys[d.id] else { return false }
                    return !present.contains(k)
                }.map(\.id)
                if !gone.isEmpty { actions.append(.deleteDestination(folder: dFolder, ids: gone)) }
            }
        }
        return actions
    }

    /// `--delete-source`: the source messages that verification found, and
    /// nothing else.
    public static func planSourceDeletes(folder: FolderPath, verified: [MessageID]) -> [Action] {
        verified.isEmpty ? [] : [.deleteSource(folder: folder, ids: verified)]
    }
}

/// Finds the messages that `Planner.mayBeSame` could pair with a message,
/// without comparing every pair: messages are bucketed by Message-ID; those
/// listed without one (or without headers) are compared with everything.
struct CandidateIndex {
    private var byMessageID: [String: [MessageInfo]] = [:]
    /// Messages whose Message-ID is unknown: they may pair with any message.
    private var wild: [MessageInfo] = []
    private var all: [MessageInfo]

    init(_ messages: [MessageInfo]) {
        all = messages
        for m in messages {
            if let id = m.headers?.messageID {
                byMessageID[Planner.squeeze(id), default: []].append(m)
            } else {
                wild.append(m)
            }
        }
    }

    func candidates(for m: MessageInfo) -> [MessageInfo] {
        let pool: [MessageInfo]
        if let id = m.headers?.messageID {
            pool = (byMessageID[Planner.squeeze(id)] ?? []) + wild
        } else {
            pool = all
        }
        return pool.filter { Planner.mayBeSame(m, $0) }
    }
}

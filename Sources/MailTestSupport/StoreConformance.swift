import Foundation
import MailModel
import MailStore
import NIOCore

/// A failed conformance check. Its text names the store, the check, the
/// folder and the message case, so a failure reads without a debugger.
public struct ConformanceFailure: Error, CustomStringConvertible {
    public let store: String
    public let check: String
    public let problems: [String]
    public var description: String {
        "\(store) failed \(check):\n  - " + problems.prefix(40).joined(separator: "\n  - ")
            + (problems.count > 40 ? "\n  (\(problems.count - 40) more)" : "")
    }
}

/// One suite every `MailStore` passes. It uses only the protocol and skips
/// what the store's capabilities say it cannot do. Each check is a separate
/// method, so a test target can run them as separate tests; `runAll()` runs
/// them in order.
///
/// `open` must open the *same* store each time it is called (a fresh
/// instance on the same data): the suite reopens it to check persistence.
/// Give each suite its own empty store.
public struct StoreConformance: Sendable {
    public typealias Opener = @Sendable () async throws -> any MailStore

    public let name: String
    public let open: Opener
    /// A directory that must not change while the store works (for local
    /// stores: the directory holding the store's root). Nil for remote stores.
    public let mustNotTouch: String?
    /// The store's own entry inside `mustNotTouch`, which may change.
    public let ownEntry: String?
    public let corpus: Corpus?
    /// Where progress and skip notes go.
    public let log: @Sendable (String) -> Void

    public init(name: String, mustNotTouch: String? = nil, ownEntry: String? = nil, corpus: Corpus? = nil,
                log: @escaping @Sendable (String) -> Void = { print($0) }, open: @escaping Opener) {
        self.name = name
        self.open = open
        self.mustNotTouch = mustNotTouch
        self.ownEntry = ownEntry
        self.corpus = corpus
        self.log = log
    }

    // MARK: Helpers

    struct Problems {
        var list: [String] = []
        mutating func add(_ s: String) { list.append(s) }
        func check(_ store: String, _ name: String) throws {
            if !list.isEmpty { throw ConformanceFailure(store: store, check: name, problems: list) }
        }
    }

    /// Odd folder names: each must round-trip, and none may escape the root.
    public static let oddFolderNames: [[String]] = [
        ["Work"], ["Work", "Sub"], ["a/b"], [".."], ["."], ["..", ".."], [".hidden"], [" spaced name "],
        ["nul\u{0}byte"], ["ctrl\u{1}\u{1F}\u{7F}"], ["emoji 📬 ✉️"], ["Case"], ["case"], ["CASE"],
        ["cur"], ["new"], ["tmp"], ["dovecot-keywords"], ["x.sbd"], ["x.lock"], ["%41"], ["100%"],
        ["Février", "Données"], ["INBOX", "child"], ["a", "..", "b"], ["trailing."], ["back\\slash"], ["colon:name"],
    ]

    func fetchAll(_ store: any MailStore, _ ids: [MessageID], in folder: FolderPath) async throws
        -> (bodies: [MessageID: [UInt8]], infos: [MessageID: MessageInfo], missing: [MessageID]) {
        let box = Collector()
        let missing = try await store.fetchMessages(ids, in: folder) { info, body in
            let buf = try await body.collect(upTo: 64 * 1024 * 1024)
            box.put(info, Array(buf.readableBytesView))
        }
        return (box.bodies, box.infos, missing)
    }

    final class Collector: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var bodies: [MessageID: [UInt8]] = [:]
        private(set) var infos: [MessageID: MessageInfo] = [:]
        func put(_ i: MessageInfo, _ b: [UInt8]) {
            lock.lock()
            bodies[i.id] = b
            infos[i.id] = i
            lock.unlock()
        }
    }

    func snapshot() -> Set<String>? {
        guard let dir = mustNotTouch else { return nil }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return Set(names.filter { $0 != ownEntry })
    }

    func comparableFlags(_ f: Flags, _ caps: StoreCapabilities) -> Flags {
        var out = Flags()
        for flag in f {
            if flag.isSystem, caps.contains(.flags) { out.insert(flag) }
            if flag.isKeyword, caps.contains(.keywords) { out.insert(flag) }
        }
        return out
    }

    // MARK: Checks

    /// Folders with odd names are created, listed under the same names,
    /// hold messages, and survive a reopen; nothing appears outside the root.
    public func folderNames() async throws {
        let store = try await open()
        let caps = store.capabilities
        guard caps.contains(.createFolders) else { log("\(name): skipping folder names (no createFolders)"); return }
        var p = Problems()
        let before = snapshot()
        let paths = Self.oddFolderNames.compactMap { FolderPath(components: $0) }
        for path in paths {
            do { try await store.createFolder(path) } catch { p.add("createFolder(\(path.components)) threw \(error)") }
            do { try await store.createFolder(path) } catch { p.add("createFolder(\(path.components)) twice threw \(error)") }
        }
        let expected = Set(paths)
        func checkListing(_ s: any MailStore, _ when: String) async throws {
            let listed = Set(try await s.folders().map(\.path))
            for path in expected where !listed.contains(path) {
                p.add("\(when): folder \(path.components.debugDescription) is not listed (listed: \(listed.count) folders)")
            }
        }
        try await checkListing(store, "after create")
        if caps.contains(.append) {
            for (i, path) in paths.enumerated() {
                let bytes = Array("Subject: folder \(i)\r\n\r\nin \(path.components)\r\n".utf8)
                do {
                    _ = try await store.append(to: path, AppendRequest(), body: .bytes(bytes)).result()
                    let listing = try await store.listMessages(in: path)
                    if listing.messages.count != 1 {
                        p.add("folder \(path.components.debugDescription) holds \(listing.messages.count) messages after one append")
                    } else {
                        let got = try await fetchAll(store, [listing.messages[0].id], in: path).bodies.values.first
                        if got != bytes { p.add("folder \(path.components.debugDescription) returned other bytes") }
                    }
                } catch {
                    p.add("append to \(path.components.debugDescription) threw \(error)")
                }
            }
        }
        try await store.close()
        let reopened = try await open()
        try await checkListing(reopened, "after reopen")
        try await reopened.close()
        if let before, let after = snapshot(), before != after {
            p.add("entries appeared or vanished outside the store's root: \(after.symmetricDifference(before).sorted())")
        }
        try p.check(name, "folderNames")
    }

    struct Case {
        var name: String
        var bytes: [UInt8]
        var flags: Flags
        var date: InternalDate
    }

    static let flagSets: [Flags] = [
        [], [.seen], [.seen, .flagged, .forwarded], [.answered, .draft, Flag("Work")], [.deleted, .seen, Flag("$Label1"), Flag("Ünicode")],
    ]
    static let dates: [InternalDate] = [
        InternalDate(secondsSinceEpoch: 1_057_049_557), InternalDate(secondsSinceEpoch: 946_684_799, zoneMinutes: 60),
        InternalDate(secondsSinceEpoch: 1_700_000_000), InternalDate(secondsSinceEpoch: 86_400 * 365),
    ]

    func cases(_ messages: [(String, [UInt8])]) -> [Case] {
        messages.enumerated().map { i, m in
            Case(name: m.0, bytes: m.1, flags: Self.flagSets[i % Self.flagSets.count], date: Self.dates[i % Self.dates.count])
        }
    }

    /// Appends every case, then lists, fetches, changes flags, deletes and
    /// reopens, comparing bytes, sizes, keys, flags and dates each time.
    func roundTrip(_ cases: [Case], folder: FolderPath, check: String) async throws {
        let store = try await open()
        let caps = store.capabilities
        guard caps.contains(.append) else { log("\(name): skipping \(check) (no append)"); return }
        var p = Problems()
        if caps.contains(.createFolders) { try await store.createFolder(folder) }
        var ids: [MessageID: Case] = [:]
        var order: [MessageID] = []
        for c in cases {
            let r: AppendResult
            do {
                r = try await store.append(to: folder, AppendRequest(flags: c.flags, internalDate: c.date), body: .bytes(c.bytes)).result()
            } catch {
                p.add("append of \(c.name) threw \(error)")
                continue
            }
            if r.key != MessageKey.of(c.bytes) { p.add("\(c.name): append reported key \(r.key.short), expected \(MessageKey.of(c.bytes).short)") }
            if r.size != Int64(c.bytes.count) { p.add("\(c.name): append reported size \(r.size), expected \(c.bytes.count)") }
            let invalid = c.flags.keywords.filter { !$0.isValidKeyword }
            for k in invalid where !r.droppedFlags.contains(k) { p.add("\(c.name): keyword \(k) cannot be stored but was not reported dropped") }
            if caps.contains(.appendReturnsID) {
                guard let id = r.id else { p.add("\(c.name): append returned no id"); continue }
                if ids[id] != nil { p.add("\(c.name): append returned a duplicate id \(id)") }
                ids[id] = c
                order.append(id)
            }
        }
        try p.check(name, check + " (append)")

        func expectedFlags(_ c: Case) -> Flags {
            comparableFlags(Flags(c.flags.filter { $0.isSystem || $0.isValidKeyword }), caps)
        }
        func verify(_ s: any MailStore, _ expect: [MessageID: (Case, Flags)], _ when: String) async throws {
            let listing = try await s.listMessages(in: folder, options: ListOptions(includeHeaders: true))
            if listing.messages.count != expect.count {
                p.add("\(when): listing has \(listing.messages.count) messages, expected \(expect.count)")
            }
            var listed: [MessageID: MessageInfo] = [:]
            for m in listing.messages {
                if listed[m.id] != nil { p.add("\(when): id \(m.id) listed twice") }
                listed[m.id] = m
            }
            let fetched = try await fetchAll(s, Array(expect.keys), in: folder)
            if !fetched.missing.isEmpty { p.add("\(when): fetch says \(fetched.missing) are missing") }
            for (id, (c, flags)) in expect {
                guard let info = listed[id] else { p.add("\(when): \(c.name) (id \(id)) is not listed"); continue }
                guard let body = fetched.bodies[id] else { p.add("\(when): \(c.name) (id \(id)) was not fetched"); continue }
                if body != c.bytes {
                    let at = (0..<min(body.count, c.bytes.count)).first(where: { body[$0] != c.bytes[$0] }) ?? min(body.count, c.bytes.count)
                    p.add("\(when): \(c.name) came back with other bytes (\(body.count) vs \(c.bytes.count), first difference at byte \(at))")
                }
                if let size = info.size, size != Int64(c.bytes.count) { p.add("\(when): \(c.name) listed with size \(size), expected \(c.bytes.count)") }
                if let fi = fetched.infos[id], let size = fi.size, size != Int64(c.bytes.count) {
                    p.add("\(when): \(c.name) fetched with size \(size), expected \(c.bytes.count)")
                }
                let got = comparableFlags(info.flags, caps)
                if got != flags { p.add("\(when): \(c.name) has flags \(got), expected \(flags)") }
                if caps.contains(.internalDate) {
                    if info.internalDate != c.date {
                        p.add("\(when): \(c.name) has INTERNALDATE \(info.internalDate.map(\.iso8601) ?? "none"), expected \(c.date.iso8601)")
                    }
                }
                if info.headers == nil { p.add("\(when): \(c.name) listed without headers though includeHeaders was asked") }
            }
        }

        var expect: [MessageID: (Case, Flags)] = [:]
        if !caps.contains(.appendReturnsID) {
            log("\(name): \(check): ids matched by key (no appendReturnsID)")
            let listing = try await store.listMessages(in: folder)
            let fetched = try await fetchAll(store, listing.messages.map(\.id), in: folder)
            var byKey: [MessageKey: [Case]] = [:]
            for c in cases { byKey[MessageKey.of(c.bytes), default: []].append(c) }
            for (id, body) in fetched.bodies {
                let k = MessageKey.of(body)
                if var list = byKey[k], !list.isEmpty {
                    let c = list.removeFirst()
                    byKey[k] = list
                    ids[id] = c
                    order.append(id)
                }
            }
        }
        for (id, c) in ids { expect[id] = (c, expectedFlags(c)) }
        try await verify(store, expect, "after append")
        try p.check(name, check + " (read back)")

        // Flag changes.
        if caps.contains(.setFlags) {
            let sorted = order
            let thirds = [Array(sorted.enumerated().filter { $0.offset % 3 == 0 }.map(\.element)),
                          Array(sorted.enumerated().filter { $0.offset % 3 == 1 }.map(\.element)),
                          Array(sorted.enumerated().filter { $0.offset % 3 == 2 }.map(\.element))]
            let add: Flags = [.seen, Flag("Added")]
            let replace: Flags = [.flagged, .answered, Flag("$Replaced")]
            let remove: Flags = [.seen, .flagged, Flag("Work")]
            try await store.setFlags(add, .add, for: thirds[0], in: folder)
            try await store.setFlags(replace, .replace, for: thirds[1], in: folder)
            try await store.setFlags(remove, .remove, for: thirds[2], in: folder)
            for id in thirds[0] { if let (c, f) = expect[id] { expect[id] = (c, comparableFlags(f.union(add), caps)) } }
            for id in thirds[1] { if let (c, _) = expect[id] { expect[id] = (c, comparableFlags(replace, caps)) } }
            for id in thirds[2] { if let (c, f) = expect[id] { expect[id] = (c, comparableFlags(f.subtracting(remove), caps)) } }
            try await verify(store, expect, "after setFlags")
            try p.check(name, check + " (setFlags)")
        } else {
            log("\(name): \(check): skipping setFlags (not supported)")
        }

        // Deletes.
        if caps.contains(.delete) {
            let gone = order.enumerated().filter { $0.offset % 4 == 1 }.map(\.element)
            try await store.delete(gone, in: folder)
            for id in gone { expect[id] = nil }
            try await verify(store, expect, "after delete")
            let again = try await fetchAll(store, gone, in: folder)
            if Set(again.missing) != Set(gone) { p.add("after delete: fetch of deleted ids reported missing \(again.missing), expected \(gone)") }
            try p.check(name, check + " (delete)")
        } else {
            log("\(name): \(check): skipping delete (not supported)")
        }
        try await store.close()

        // Reopen: the same ids, bytes and flags.
        if caps.contains(.persistentIDs) {
            let reopened = try await open()
            try await verify(reopened, expect, "after reopen")
            try await reopened.close()
            try p.check(name, check + " (reopen)")
        }
    }

    /// Every synthetic edge case round-trips.
    public func syntheticRoundTrip() async throws {
        try await roundTrip(cases(SyntheticMail.edgeCases.map { ($0.name, $0.bytes) }),
                            folder: FolderPath(components: ["Conformance", "Synthetic"]) ?? .inbox, check: "syntheticRoundTrip")
    }

    /// The same in INBOX (which some stores keep apart).
    public func inboxRoundTrip() async throws {
        try await roundTrip(cases(SyntheticMail.edgeCases.prefix(6).map { ($0.name, $0.bytes) }), folder: .inbox, check: "inboxRoundTrip")
    }

    /// Every corpus message round-trips (skipped with a note without the corpus).
    public func corpusRoundTrip(limit: Int? = nil) async throws {
        guard let corpus else { log("\(name): \(Corpus.absentMessage)"); return }
        var msgs: [(String, [UInt8])] = []
        for e in corpus.messages.prefix(limit ?? corpus.messages.count) { msgs.append((e.file, try e.load())) }
        try await roundTrip(cases(msgs), folder: FolderPath(components: ["Conformance", "Corpus"]) ?? .inbox, check: "corpusRoundTrip")
    }

    /// A large message streams in and out; it is hashed on the way, never held whole.
    public func largeMessage(file: String) async throws {
        let store = try await open()
        guard store.capabilities.contains(.append) else { log("\(name): skipping largeMessage (no append)"); return }
        let folder = FolderPath(components: ["Conformance", "Large"]) ?? .inbox
        if store.capabilities.contains(.createFolders) { try await store.createFolder(folder) }
        var expected = MessageHasher()
        let reader = try SyntheticMail.body(ofFile: file)
        for try await chunk in reader { chunk.withUnsafeReadableBytes { expected.update($0) } }
        let key = expected.finalize()
        let r = try await store.append(to: folder, AppendRequest(flags: [.seen]), body: try SyntheticMail.body(ofFile: file)).result()
        var p = Problems()
        if r.key != key { p.add("append reported key \(r.key.short), expected \(key.short)") }
        if r.size != expected.rawCount { p.add("append reported \(r.size) bytes, expected \(expected.rawCount)") }
        let listing = try await store.listMessages(in: folder)
        guard let id = r.id ?? listing.messages.first?.id else { throw ConformanceFailure(store: name, check: "largeMessage", problems: ["no id"]) }
        let got = HashBox()
        let missing = try await store.fetchMessages([id], in: folder) { info, body in
            var h = MessageHasher()
            var maxChunk = 0
            for try await chunk in body {
                maxChunk = max(maxChunk, chunk.readableBytes)
                chunk.withUnsafeReadableBytes { h.update($0) }
            }
            got.set(h, maxChunk)
        }
        if !missing.isEmpty { p.add("the message is missing after append") }
        if let (h, maxChunk) = got.get() {
            if h.finalize() != key { p.add("fetched bytes have key \(h.finalize().short), expected \(key.short)") }
            if h.rawCount != expected.rawCount { p.add("fetched \(h.rawCount) bytes, expected \(expected.rawCount)") }
            if maxChunk > 1 << 20 { p.add("fetch handed out a \(maxChunk)-byte chunk: the body is not streamed") }
        } else {
            p.add("the handler was not called")
        }
        try await store.close()
        try p.check(name, "largeMessage")
    }

    final class HashBox: @unchecked Sendable {
        private let lock = NSLock()
        private var value: (MessageHasher, Int)?
        func set(_ h: MessageHasher, _ m: Int) { lock.lock(); value = (h, m); lock.unlock() }
        func get() -> (MessageHasher, Int)? { lock.lock(); defer { lock.unlock() }; return value }
    }

    /// Operations on a folder that does not exist fail with a clear error.
    public func missingFolder() async throws {
        let store = try await open()
        var p = Problems()
        let ghost = FolderPath(components: ["Does not exist \(UInt32.random(in: 0...UInt32.max))"]) ?? .inbox
        do {
            _ = try await store.listMessages(in: ghost)
            p.add("listing a missing folder succeeded")
        } catch let e as MailError {
            if e.kind != .notFound { p.add("listing a missing folder gave \(e.kind), expected notFound") }
            if !e.description.contains(ghost.description) { p.add("the error does not name the folder: \(e)") }
        }
        if store.capabilities.contains(.append) {
            do {
                _ = try await store.append(to: ghost, AppendRequest(), body: .bytes(Array("x\r\n".utf8))).result()
                p.add("appending to a missing folder succeeded")
            } catch is MailError {}
        }
        try await store.close()
        try p.check(name, "missingFolder")
    }

    /// Every check, in order.
    public func runAll(largeMessageFile: String? = nil) async throws {
        try await folderNames()
        try await inboxRoundTrip()
        try await syntheticRoundTrip()
        try await missingFolder()
        try await corpusRoundTrip()
        if let f = largeMessageFile { try await largeMessage(file: f) }
    }
}

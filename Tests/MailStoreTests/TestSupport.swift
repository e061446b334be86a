import Foundation
import MailModel
import MailStore
import MailTestSupport

/// A fresh private directory under the system temp dir, removed at the end.
func withTempDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let base = FileManager.default.temporaryDirectory.appendingPathComponent("mailferry-test-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: base) }
    return try await body(base)
}

enum LocalKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case maildir, mbox
    var description: String { rawValue }

    func open(_ root: String, create: Bool = true) throws -> any MailStore {
        switch self {
        case .maildir: return try MaildirStore(root: root, create: create)
        case .mbox: return try MboxStore(root: root, create: create)
        }
    }
}

func collect(_ store: any MailStore, _ ids: [MessageID], in folder: FolderPath) async throws -> [MessageID: [UInt8]] {
    let box = Box()
    _ = try await store.fetchMessages(ids, in: folder) { info, body in
        box.set(info.id, Array(try await body.collect().readableBytesView))
    }
    return box.value
}

final class Box: @unchecked Sendable {
    private let lock = NSLock()
    private var v: [MessageID: [UInt8]] = [:]
    func set(_ k: MessageID, _ b: [UInt8]) { lock.lock(); v[k] = b; lock.unlock() }
    var value: [MessageID: [UInt8]] { lock.lock(); defer { lock.unlock() }; return v }
}

/// Runs a command, returning its exit status and combined output.
func run(_ args: [String]) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

func fileMode(_ path: String) -> Int {
    ((try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]) as? NSNumber)?.intValue ?? -1
}

func appendAll(_ store: any MailStore, _ folder: FolderPath, _ msgs: [([UInt8], Flags, InternalDate?)]) async throws -> [MessageID] {
    var ids: [MessageID] = []
    for (bytes, flags, date) in msgs {
        let r = try await store.append(to: folder, AppendRequest(flags: flags, internalDate: date), body: .bytes(bytes)).result()
        if let id = r.id { ids.append(id) }
    }
    return ids
}

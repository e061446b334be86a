import ArgumentParser
import Foundation
import MailModel
import MailStore

struct FoldersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "folders",
        abstract: "List a store's folders with message counts and sizes.",
        discussion: """
        The password comes from MAILFERRY_FROM_PASSWORD unless a --from-password-… option says otherwise.

        Examples:
          export MAILFERRY_FROM_PASSWORD
          mailferry folders imaps://alice@imap.example.net
          mailferry folders maildir:/home/alice/Maildir --json
        """)

    @Argument(help: ArgumentHelp("The store to list.", valueName: "url"))
    var url: String
    @OptionGroup(title: "Folders") var folderOptions: FolderOptions
    @OptionGroup(title: "Connection") var source: SourceOptions
    @OptionGroup(title: "Trust") var trust: TrustOptions
    @OptionGroup(title: "Output") var output: OutputOptions

    struct Row: Codable {
        var folder: String
        var role: String?
        var selectable: Bool
        var messages: Int?
        var bytes: Int64?
    }

    struct Summary: Codable {
        var command = "folders"
        var store: String
        var folders: [Row]
        var totalMessages: Int
        var totalBytes: Int64
    }

    func run() async throws {
        let settings = output.settings
        Diagnostics.configure(settings)
        let endpoint = try source.endpoint(url, trust: trust)
        let logger = Diagnostics.makeLogger()
        let rows: [Row] = try await StoreFactory.withStore(endpoint, side: .from, logger: logger) { store in
            let infos = try await store.folders()
            return infos.sorted { $0.path < $1.path }
                .filter { info in
                    (folderOptions.folders.isEmpty || folderOptions.folders.contains { info.path.matches(glob: $0) })
                        && !folderOptions.exclude.contains { info.path.matches(glob: $0) }
                }
                .map { Row(folder: $0.path.description, role: $0.role.map { String($0.rawValue.dropFirst()) },
                           selectable: $0.selectable, messages: $0.messageCount, bytes: $0.totalSize) }
        }
        let summary = Summary(store: endpoint.location.description, folders: rows,
                              totalMessages: rows.compactMap(\.messages).reduce(0, +),
                              totalBytes: rows.compactMap(\.bytes).reduce(0, +))
        if settings.json {
            try JSONOutput.print(summary)
            return
        }
        let width = max(6, rows.map(\.folder.count).max() ?? 0)
        var out = "FOLDER".padding(toLength: width, withPad: " ", startingAt: 0) + "  MESSAGES        SIZE  ROLE\n"
        for r in rows {
            let msgs = r.messages.map(String.init) ?? "-"
            let size = r.bytes.map(ProgressRenderer.bytes) ?? "-"
            out += r.folder.padding(toLength: width, withPad: " ", startingAt: 0)
                + "  " + String(repeating: " ", count: max(0, 8 - msgs.count)) + msgs
                + "  " + String(repeating: " ", count: max(0, 10 - size.count)) + size
                + "  " + (r.role ?? (r.selectable ? "" : "(container)")) + "\n"
        }
        out += "\(rows.count) folders, \(summary.totalMessages) messages, \(ProgressRenderer.bytes(summary.totalBytes))\n"
        FileHandle.standardOutput.write(Data(SecretRedactor.shared.redact(out).utf8))
    }
}

/// Prints one JSON document on standard output.
enum JSONOutput {
    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .iso8601
        return e
    }

    static func data<T: Encodable>(_ value: T) throws -> Data {
        let raw = try encoder().encode(value)
        // Last line of defence: no secret leaves in a report.
        let text = SecretRedactor.shared.redact(String(decoding: raw, as: UTF8.self))
        return Data(text.utf8)
    }

    static func print<T: Encodable>(_ value: T) throws {
        var d = try data(value)
        d.append(0x0A)
        FileHandle.standardOutput.write(d)
    }

    /// Writes a report file atomically, readable by its owner only.
    static func write<T: Encodable>(_ value: T, to path: String) throws {
        let url = URL(fileURLWithPath: (path as NSString).expandingTildeInPath)
        let d = try data(value)
        do {
            let parent = url.deletingLastPathComponent().path
            if !FileManager.default.fileExists(atPath: parent) {
                try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            }
            try d.write(to: url, options: [.atomic])
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: url.path)
        } catch {
            throw MailError(.storage, scope: .local, "cannot write the report \(path): \(error.localizedDescription)")
        }
    }
}

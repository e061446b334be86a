import Foundation
import Logging
import MailModel

/// How chatty a run is, from the common options.
public struct OutputSettings: Sendable {
    public enum LogFormat: String, Sendable, CaseIterable { case text, json }
    /// 0: errors and warnings; 1: info; 2: debug; 3+: protocol trace (redacted).
    public var verbosity: Int = 0
    public var quiet = false
    public var json = false
    public var logFormat: LogFormat = .text
    /// Show a live progress line (stderr is a terminal, not quiet, not json).
    public var progress = false
    public init() {}

    public var logLevel: Logger.Level {
        if quiet { return .error }
        switch verbosity {
        case ..<1: return .warning
        case 1: return .info
        case 2: return .debug
        default: return .trace
        }
    }
}

/// The process's one place that writes human text to standard error. Every
/// line goes through the secret redactor, and the progress line is cleared
/// first so that messages do not land in the middle of it.
public enum Diagnostics {
    nonisolated(unsafe) static var settings = OutputSettings()
    static let lock = NSLock()
    /// Set by the progress renderer while a live line is on screen.
    nonisolated(unsafe) static var liveLineShown = false

    public static func configure(_ s: OutputSettings) {
        lock.lock()
        settings = s
        lock.unlock()
    }

    /// Writes one line to standard error, redacted, after clearing a live line.
    static func writeLine(_ text: String) {
        let line = SecretRedactor.shared.redact(text) + "\n"
        lock.lock()
        defer { lock.unlock() }
        if liveLineShown {
            FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
            liveLineShown = false
        }
        FileHandle.standardError.write(Data(line.utf8))
    }

    static func warning(_ text: String) {
        guard !settings.quiet else { return }
        if settings.logFormat == .json {
            writeLine(JSONLogLine.make(level: .warning, label: "mailferry", message: text, metadata: [:]))
        } else {
            writeLine("mailferry: warning: \(text)")
        }
    }

    /// A run's summary line: plain text, or a JSON log line with `--log-format json`.
    static func summary(_ text: String) {
        if settings.logFormat == .json {
            writeLine(JSONLogLine.make(level: .notice, label: "mailferry", message: text, metadata: ["event": "summary"]))
        } else {
            writeLine(text)
        }
    }

    static func error(_ text: String) {
        if settings.logFormat == .json {
            writeLine(JSONLogLine.make(level: .error, label: "mailferry", message: text, metadata: [:]))
        } else {
            writeLine("mailferry: \(text)")
        }
    }

    /// A logger that writes in the chosen format at the chosen level.
    public static func makeLogger(label: String = "mailferry") -> Logger {
        let s = settings
        var logger = Logger(label: label) { label in
            DiagnosticsLogHandler(label: label, format: s.logFormat)
        }
        logger.logLevel = s.logLevel
        return logger
    }
}

/// The log handler behind `makeLogger`: every line goes through
/// `Diagnostics.writeLine`, redacted, as text
/// (`2026-11-22T01:02:03Z info imap: message key=value`) or, with
/// `--log-format json`, as one JSON object per line for log shippers.
struct DiagnosticsLogHandler: LogHandler {
    var label: String
    var format: OutputSettings.LogFormat
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    init(label: String, format: OutputSettings.LogFormat) {
        self.label = label
        self.format = format
    }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        var all = metadata
        if let m = event.metadata { all.merge(m) { $1 } }
        let fields = all.reduce(into: [String: String]()) { $0[$1.key] = LogRedaction.value($1.key, $1.value) }
        let message = LogRedaction.protocolLine(event.message.description)
        switch format {
        case .text:
            let meta = fields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            let ts = ISO8601DateFormatter().string(from: Date())
            Diagnostics.writeLine("\(ts) \(event.level) \(label): \(message)" + (meta.isEmpty ? "" : " " + meta))
        case .json:
            Diagnostics.writeLine(JSONLogLine.make(level: event.level, label: label, message: message, metadata: fields))
        }
    }
}

/// One JSON log object on one line.
enum JSONLogLine {
    static func make(level: Logger.Level, label: String, message: String, metadata: [String: String]) -> String {
        var obj: [String: String] = metadata
        obj["time"] = ISO8601DateFormatter().string(from: Date())
        obj["level"] = level.rawValue
        obj["logger"] = label
        obj["message"] = SecretRedactor.shared.redact(message)
        guard let data = try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .withoutEscapingSlashes]) else { return message }
        return String(decoding: data, as: UTF8.self)
    }
}

/// Scrubs what the protocol layers log at trace level: credentials in login
/// commands and SASL exchanges, and message bodies.
enum LogRedaction {
    static let secretKeys: Set<String> = ["password", "secret", "token", "access_token", "refresh_token", "authorization", "pass"]

    static func value(_ key: String, _ v: Logger.Metadata.Value) -> String {
        if secretKeys.contains(key.lowercased()) { return "***" }
        return SecretRedactor.shared.redact("\(v)")
    }

    /// IMAP `a1 LOGIN user pass`, `AUTHENTICATE PLAIN <b64>`, SASL
    /// continuation lines, POP3 `PASS x` and `AUTH XOAUTH2 <b64>`.
    static func protocolLine(_ line: String) -> String {
        var s = SecretRedactor.shared.redact(line)
        let words = s.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        let upper = words.map { $0.uppercased() }
        if let i = upper.firstIndex(of: "LOGIN"), i + 2 < words.count + 1, words.count > i + 1 {
            // tag LOGIN user password
            if words.count > i + 2 { s = (words[...(i + 1)] + ["***"]).joined(separator: " ") }
        } else if let i = upper.firstIndex(where: { $0 == "AUTHENTICATE" || $0 == "AUTH" }), words.count > i + 2 {
            s = (words[...(i + 1)] + ["***"]).joined(separator: " ")
        } else if upper.first == "PASS", words.count > 1 {
            s = "PASS ***"
        } else if looksLikeSASLBlob(s) {
            s = "***"
        }
        return s
    }

    /// A long line of base64 alone: a SASL response (or body data; hidden either way).
    static func looksLikeSASLBlob(_ s: String) -> Bool {
        let t = s.trimmingCharacters(in: .whitespaces)
        let rest = t.hasPrefix("C: ") || t.hasPrefix("> ") ? String(t.dropFirst(2)).trimmingCharacters(in: .whitespaces) : t
        guard rest.count >= 16 else { return false }
        return rest.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "+/=-_".contains($0)) }
    }
}

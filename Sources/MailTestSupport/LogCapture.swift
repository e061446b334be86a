import Logging
import NIOConcurrencyHelpers

/// Captures every log record as a line, "level message metadata", for tests
/// that look at what a run logged (or must never log, such as a password).
public final class LogCapture: Sendable {
    private let records = NIOLockedValueBox<[String]>([])

    public init() {}

    /// A logger whose records, at `level` and above, land here.
    public func logger(label: String = "test", level: Logger.Level = .trace) -> Logger {
        var l = Logger(label: label) { _ in CapturingLogHandler(capture: self) }
        l.logLevel = level
        return l
    }

    public var lines: [String] { records.withLockedValue { $0 } }
    public var all: String { lines.joined(separator: "\n") }

    fileprivate func add(_ line: String) { records.withLockedValue { $0.append(line) } }
}

/// The handler behind `LogCapture.logger`: the logger's metadata and the
/// record's, merged, follow the message.
public struct CapturingLogHandler: LogHandler {
    let capture: LogCapture
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .trace

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let m = metadata.merging(event.metadata ?? [:]) { $1 }
        capture.add(m.isEmpty ? "\(event.level) \(event.message)" : "\(event.level) \(event.message) \(m)")
    }
}

import Foundation

/// Counts that a transfer reports as it goes. Totals may be unknown at first
/// (a folder not yet listed).
public struct ProgressSnapshot: Sendable, Equatable {
    public var folder: String?
    public var folderDone: Int = 0
    public var folderTotal: Int?
    public var messagesDone: Int = 0
    public var messagesTotal: Int?
    public var bytesDone: Int64 = 0
    public var bytesTotal: Int64?
    public var foldersDone: Int = 0
    public var foldersTotal: Int?
    public var failed: Int = 0

    public init() {}
}

/// The live progress line on a terminal:
/// `INBOX 120/450 · total 1,204/9,800 msgs · 84.1 MB/712 MB · 3.2 MB/s · ETA 3m12s`
/// Redrawn at most 10 times a second, on standard error only, and cleared
/// before any other line is written.
public final class ProgressRenderer: @unchecked Sendable {
    private let lock = NSLock()
    private let enabled: Bool
    private let start = Date()
    private var lastDraw = Date.distantPast
    private var snapshot = ProgressSnapshot()
    /// Recent (time, bytes, messages) samples for the rate.
    private var samples: [(Date, Int64, Int)] = []
    private let label: String

    public init(enabled: Bool, label: String = "") {
        self.enabled = enabled
        self.label = label
    }

    public func update(_ s: ProgressSnapshot) {
        guard enabled else { return }
        lock.lock()
        defer { lock.unlock() }
        snapshot = s
        let now = Date()
        samples.append((now, s.bytesDone, s.messagesDone))
        samples.removeAll { now.timeIntervalSince($0.0) > 10 }
        guard now.timeIntervalSince(lastDraw) >= 0.1 else { return }
        lastDraw = now
        draw(now: now)
    }

    /// Clears the line; called when the run ends.
    public func finish() {
        guard enabled else { return }
        Diagnostics.lock.lock()
        if Diagnostics.liveLineShown {
            FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
            Diagnostics.liveLineShown = false
        }
        Diagnostics.lock.unlock()
    }

    private func draw(now: Date) {
        let line = ProgressRenderer.format(snapshot, rate: rate(now: now), label: label, width: Terminal.width())
        Diagnostics.lock.lock()
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + SecretRedactor.shared.redact(line)).utf8))
        Diagnostics.liveLineShown = true
        Diagnostics.lock.unlock()
    }

    private func rate(now: Date) -> (bytes: Double, messages: Double)? {
        guard let first = samples.first, let last = samples.last else { return nil }
        let dt = last.0.timeIntervalSince(first.0)
        guard dt >= 0.5 else { return nil }
        return (Double(last.1 - first.1) / dt, Double(last.2 - first.2) / dt)
    }

    static func format(_ s: ProgressSnapshot, rate: (bytes: Double, messages: Double)?, label: String, width: Int) -> String {
        var parts: [String] = []
        if !label.isEmpty { parts.append(label) }
        if let f = s.folder {
            parts.append("\(f) \(s.folderDone)/\(s.folderTotal.map(String.init) ?? "?")")
        }
        parts.append("total \(s.messagesDone)/\(s.messagesTotal.map(String.init) ?? "?") msgs")
        parts.append(bytes(s.bytesDone) + (s.bytesTotal.map { "/" + bytes($0) } ?? ""))
        if let r = rate {
            parts.append(bytes(Int64(r.bytes)) + "/s")
            if let total = s.bytesTotal, r.bytes > 0 {
                parts.append("ETA " + duration(Double(max(0, total - s.bytesDone)) / r.bytes))
            } else if let total = s.messagesTotal, r.messages > 0 {
                parts.append("ETA " + duration(Double(max(0, total - s.messagesDone)) / r.messages))
            }
        }
        if s.failed > 0 { parts.append("\(s.failed) failed") }
        let line = parts.joined(separator: " · ")
        return line.count < width ? line : String(line.prefix(max(10, width - 1)))
    }

    static func bytes(_ n: Int64) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var v = Double(n)
        var i = 0
        while v >= 1000, i < units.count - 1 {
            v /= 1000
            i += 1
        }
        return i == 0 ? "\(n) B" : String(format: "%.1f", v) + " " + units[i]
    }

    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "?" }
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m\(String(format: "%02d", s % 60))s" }
        return "\(s / 3600)h\(String(format: "%02d", s / 60 % 60))m"
    }
}

import Logging
import MailModel
import MailNet
import NIOConcurrencyHelpers
import NIOCore

/// A minimal line-oriented client for tests: collects CRLF lines from the server.
final class LineCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    private let lock = NIOLock()
    private var buffer: [UInt8] = []
    private var waiter: CheckedContinuation<String?, Never>?
    private var closed = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        let chunk = bytes.readBytes(length: bytes.readableBytes) ?? []
        lock.withLock { buffer += chunk }
        deliver()
    }

    func channelInactive(context: ChannelHandlerContext) {
        lock.withLock { closed = true }
        deliver()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func takeLine() -> String? {
        guard let lf = buffer.firstIndex(of: 0x0A) else { return nil }
        var line = Array(buffer[..<lf])
        buffer.removeSubrange(...lf)
        if line.last == 0x0D { line.removeLast() }
        return String(decoding: line, as: UTF8.self)
    }

    private func deliver() {
        let (w, line): (CheckedContinuation<String?, Never>?, String?) = lock.withLock {
            guard let w = waiter else { return (nil, nil) }
            if let line = takeLine() {
                waiter = nil
                return (w, line)
            }
            if closed {
                waiter = nil
                return (w, nil)
            }
            return (nil, nil)
        }
        w?.resume(returning: line)
    }

    /// The next line, or nil when the connection closed.
    func line() async -> String? {
        await withCheckedContinuation { (c: CheckedContinuation<String?, Never>) in
            let immediate: String?? = lock.withLock {
                if let line = takeLine() { return .some(line) }
                if closed { return .some(nil) }
                waiter = c
                return nil
            }
            if let immediate { c.resume(returning: immediate) }
        }
    }

    /// Drops whatever was received but not read (before STARTTLS); returns how many bytes.
    func discardBuffered() -> Int {
        lock.withLock {
            defer { buffer.removeAll() }
            return buffer.count
        }
    }
}

struct LineClient {
    let channel: Channel
    let collector: LineCollector
    let settings: ConnectionSettings

    static func connect(_ settings: ConnectionSettings) async throws -> LineClient {
        let collector = LineCollector()
        let channel = try await MailConnector.connect(settings: settings, logger: Logger(label: "test")) { channel in
            try channel.pipeline.syncOperations.addHandler(collector)
        }
        return LineClient(channel: channel, collector: collector, settings: settings)
    }

    func line() async throws -> String {
        let collector = self.collector
        let got = try await withDeadline(.seconds(10), host: settings.host, waitingFor: "a line") {
            await collector.line()
        }
        guard let got else {
            throw MailError(.connection, scope: .account, retryable: true, "\(settings.host) closed the connection")
        }
        return got
    }

    func send(_ line: String) async throws {
        var buffer = channel.allocator.buffer(capacity: line.utf8.count + 2)
        buffer.writeString(line + "\r\n")
        try await channel.writeAndFlush(buffer)
    }

    /// Sends a command and reads lines until one starts with `until`.
    func command(_ line: String, until prefix: String) async throws -> [String] {
        try await send(line)
        var lines: [String] = []
        while true {
            let l = try await self.line()
            lines.append(l)
            if l.hasPrefix(prefix) { return lines }
        }
    }

    func startTLS() async throws {
        _ = collector.discardBuffered()
        try await MailTLS.startTLS(on: channel, settings: settings, logger: Logger(label: "test"))
    }

    func close() async {
        try? await channel.close()
    }
}

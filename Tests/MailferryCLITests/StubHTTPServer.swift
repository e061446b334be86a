import Foundation
import NIOCore
import NIOPosix

/// A tiny HTTP/1.1 server on 127.0.0.1 for the OAuth2 token endpoint tests.
/// Each request is answered by `respond(method, path, body)`, which returns a
/// status and a JSON body. Requests are recorded.
final class StubHTTPServer: @unchecked Sendable {
    struct Request: Sendable {
        var method: String
        var path: String
        var headers: [String: String]
        var body: String
        /// The form fields of an application/x-www-form-urlencoded body.
        var form: [String: String] {
            var out: [String: String] = [:]
            for pair in body.split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1).map {
                    String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0)
                }
                if kv.count == 2 { out[kv[0]] = kv[1] }
            }
            return out
        }
    }

    typealias Responder = @Sendable (Request) -> (status: Int, json: String)

    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var channel: Channel?
    private let lock = NSLock()
    private var _requests: [Request] = []
    let responder: Responder

    var requests: [Request] {
        lock.lock()
        defer { lock.unlock() }
        return _requests
    }

    var port: Int { channel?.localAddress?.port ?? 0 }
    var url: String { "http://127.0.0.1:\(port)/token" }

    init(_ responder: @escaping Responder) async throws {
        self.responder = responder
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [weak self] ch in
                guard let self else { return ch.eventLoop.makeSucceededVoidFuture() }
                return ch.pipeline.addHandler(Handler(server: self))
            }
        channel = try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
    }

    func shutdown() async {
        try? await channel?.close().get()
        try? await group.shutdownGracefully()
    }

    fileprivate func record(_ r: Request) {
        lock.lock()
        _requests.append(r)
        lock.unlock()
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let server: StubHTTPServer
        var buffer = ByteBuffer()
        init(server: StubHTTPServer) { self.server = server }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var chunk = unwrapInboundIn(data)
            buffer.writeBuffer(&chunk)
            let text = String(buffer: buffer)
            guard let headEnd = text.range(of: "\r\n\r\n") else { return }
            let head = text[..<headEnd.lowerBound].split(separator: "\r\n").map(String.init)
            var headers: [String: String] = [:]
            for h in head.dropFirst() {
                if let c = h.firstIndex(of: ":") {
                    headers[h[..<c].lowercased()] = h[h.index(after: c)...].trimmingCharacters(in: .whitespaces)
                }
            }
            let length = Int(headers["content-length"] ?? "0") ?? 0
            let body = String(text[headEnd.upperBound...])
            guard body.utf8.count >= length else { return }
            let requestLine = head.first?.split(separator: " ").map(String.init) ?? []
            let req = Request(method: requestLine.first ?? "", path: requestLine.count > 1 ? requestLine[1] : "",
                              headers: headers, body: body)
            server.record(req)
            let (status, json) = server.responder(req)
            let reason = status == 200 ? "OK" : "Error"
            let response = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: application/json\r\nContent-Length: \(json.utf8.count)\r\nConnection: close\r\n\r\n\(json)"
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response))).whenComplete { _ in context.close(promise: nil) }
            buffer.clear()
        }
    }
}

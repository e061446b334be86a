import Logging
import NIOConcurrencyHelpers
import MailModel
import NIOCore
import NIOPosix
import NIOSSL

/// Opens connections for the IMAP and POP3 clients.
public enum MailConnector {
    /// Connects to `settings.host:settings.port` within `settings.connectTimeout`.
    ///
    /// With `tls == .implicit` a TLS handler goes first in the pipeline and this returns
    /// only once the handshake has completed and the certificate (system trust store plus
    /// `settings.caFile`) and host name have been checked. With `.startTLS` or `.none` the
    /// connection is plaintext; the client calls `MailTLS.startTLS(on:settings:logger:)`
    /// after the server accepted STARTTLS/STLS.
    ///
    /// `channelInitializer` adds the protocol handlers; it runs on the channel's event loop
    /// (use `channel.pipeline.syncOperations`). Every failure is a `MailError` naming the host.
    public static func connect(
        settings: ConnectionSettings,
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        sslContext: NIOSSLContext? = nil,
        logger: Logger,
        channelInitializer: @escaping @Sendable (Channel) throws -> Void
    ) async throws -> Channel {
        var sslContextToUse: NIOSSLContext?
        if settings.tls == .implicit {
            sslContextToUse = try sslContext ?? MailTLS.makeClientContext(caFile: settings.caFile)
        }
        let tlsContext = sslContextToUse
        let handshakes = HandshakePromises()
        let host = settings.host
        logger.debug("connecting", metadata: ["endpoint": "\(settings.endpoint)", "tls": "\(settings.tls.rawValue)"])
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(settings.connectTimeout.timeAmount)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelOption(ChannelOptions.socketOption(.so_keepalive), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Runs once per connection attempt (happy eyeballs may try several
                    // addresses): each attempt gets its own TLS handler.
                    let sync = channel.pipeline.syncOperations
                    if let tlsContext {
                        let promise = channel.eventLoop.makePromise(of: Void.self)
                        handshakes.set(promise, for: channel)
                        let handler = try MailTLS.makeClientHandler(context: tlsContext, host: host)
                        try sync.addHandler(handler)
                        try sync.addHandler(HandshakeWaiter(promise: promise))
                    }
                    try channelInitializer(channel)
                }
            }
        let channel: Channel
        do {
            channel = try await bootstrap.connect(host: settings.host, port: settings.port).get()
        } catch {
            let mapped = MailNetErrors.map(error, settings: settings, during: "connect")
            logger.debug("connect failed", metadata: ["endpoint": "\(settings.endpoint)", "error": "\(mapped)"])
            throw mapped
        }
        if tlsContext != nil {
            guard let promise = handshakes.take(for: channel) else {
                channel.close(promise: nil)
                throw MailError(.tls, scope: .account, "TLS was not set up on the connection to \(settings.endpoint)")
            }
            do {
                try await promise.futureResult
                    .withDeadline(settings.connectTimeout, host: settings.host,
                                  waitingFor: "the TLS handshake", closing: channel)
                    .mapMailError(settings: settings, during: "the TLS handshake").get()
            } catch {
                channel.close(promise: nil)
                throw error
            }
            logger.debug("TLS established", metadata: ["endpoint": "\(settings.endpoint)"])
        }
        return channel
    }

    /// Connects, runs `body`, and closes the channel whatever happens.
    public static func withConnection<T: Sendable>(
        settings: ConnectionSettings,
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger,
        channelInitializer: @escaping @Sendable (Channel) throws -> Void,
        _ body: (Channel) async throws -> T
    ) async throws -> T {
        let channel = try await connect(settings: settings, group: group, logger: logger,
                                        channelInitializer: channelInitializer)
        do {
            let result = try await body(channel)
            try? await channel.close()
            return result
        } catch {
            try? await channel.close()
            throw error
        }
    }
}

/// The handshake promise of each connection attempt, so the caller can wait for the
/// one whose connection won.
private final class HandshakePromises: Sendable {
    private let promises = NIOLockedValueBox([ObjectIdentifier: EventLoopPromise<Void>]())

    func set(_ promise: EventLoopPromise<Void>, for channel: Channel) {
        promises.withLockedValue { $0[ObjectIdentifier(channel)] = promise }
    }

    func take(for channel: Channel) -> EventLoopPromise<Void>? {
        promises.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }
}

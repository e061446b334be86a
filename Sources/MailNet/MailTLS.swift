import Foundation
import Logging
import MailModel
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOTLS

/// TLS for both clients: a client context that trusts the system store plus an
/// optional `--ca-file`, with certificate and host-name checks always on.
public enum MailTLS {
    /// A client TLS context. Certificate and host-name verification cannot be turned off.
    /// - Parameter caFile: a PEM file of extra CA certificates to trust.
    ///
    /// Contexts are cached per CA file (path, size, mtime, inode): building
    /// one reads and parses the system trust store, which a run with eight
    /// connections did eight times (7% of a no-op run's CPU).
    /// Connections that open at once (a run's source and destination) wait
    /// for one build rather than each making its own.
    public static func makeClientContext(caFile: String?) throws -> NIOSSLContext {
        let cacheKey = contextCacheKey(caFile)
        if let cacheKey, let cached = contextCache.withLockedValue({ $0[cacheKey] }) { return cached }
        return try buildLock.withLock {
            if let cacheKey, let cached = contextCache.withLockedValue({ $0[cacheKey] }) { return cached }
            let context = try buildClientContext(caFile: caFile)
            if let cacheKey { contextCache.withLockedValue { $0[cacheKey] = context } }
            return context
        }
    }

    private static let contextCache = NIOLockedValueBox<[String: NIOSSLContext]>([:])
    private static let buildLock = NIOLock()

    /// nil when the CA file cannot be examined (the build then reports why).
    private static func contextCacheKey(_ caFile: String?) -> String? {
        guard let caFile else { return "system" }
        guard let a = try? FileManager.default.attributesOfItem(atPath: caFile),
              let size = a[.size], let mtime = (a[.modificationDate] as? Date)?.timeIntervalSince1970,
              let inode = a[.systemFileNumber] else { return nil }
        return "\(caFile)\u{0}\(size)\u{0}\(mtime)\u{0}\(inode)"
    }

    private static func buildClientContext(caFile: String?) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .fullVerification
        configuration.minimumTLSVersion = .tlsv12
        if let caFile {
            guard FileManager.default.isReadableFile(atPath: caFile) else {
                throw MailError(.usage, scope: .local, "cannot read the CA file \(caFile)",
                                hint: "pass --ca-file a readable PEM file")
            }
            do {
                let certificates = try NIOSSLCertificate.fromPEMFile(caFile)
                guard !certificates.isEmpty else {
                    throw MailError(.usage, scope: .local, "the CA file \(caFile) holds no PEM certificate")
                }
                configuration.additionalTrustRoots = [.certificates(certificates)]
            } catch let error as MailError {
                throw error
            } catch {
                throw MailError(.usage, scope: .local, "the CA file \(caFile) is not a PEM certificate file (\(error))")
            }
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw MailError(.tls, scope: .local, "cannot set up TLS: \(error)")
        }
    }

    /// A client handler checking the certificate against `settings.host`.
    public static func makeClientHandler(context: NIOSSLContext, settings: ConnectionSettings) throws -> NIOSSLClientHandler {
        try makeClientHandler(context: context, host: settings.host)
    }

    static func makeClientHandler(context: NIOSSLContext, host: String) throws -> NIOSSLClientHandler {
        do {
            // With an IP literal, SNI is not sent but the certificate must still
            // name the address (NIOSSL checks IP SANs against the peer address).
            return try NIOSSLClientHandler(context: context, serverHostname: isIPAddress(host) ? nil : host)
        } catch {
            throw MailError(.tls, scope: .account, "cannot start TLS with \(host): \(error)")
        }
    }

    /// Upgrades a plaintext connection after the server accepted STARTTLS/STLS.
    ///
    /// The caller **must** have discarded every byte it read after the server's
    /// positive reply to STARTTLS/STLS before calling this (RFC 3501 §6.2.1,
    /// RFC 2595 §3.1): anything the server sent in plaintext after that reply is a
    /// possible injection and must never be treated as a response. The TLS handler
    /// goes to the front of the pipeline, so everything from now on is decrypted
    /// before any other handler sees it. Returns when the handshake has completed
    /// and the certificate has been checked, or throws a `MailError`.
    public static func startTLS(on channel: Channel, settings: ConnectionSettings, context: NIOSSLContext? = nil,
                                logger: Logger) async throws {
        let sslContext = try context ?? makeClientContext(caFile: settings.caFile)
        let promise = channel.eventLoop.makePromise(of: Void.self)
        let host = settings.host
        let added: EventLoopFuture<Void> = channel.eventLoop.submit {
            guard channel.isActive else { throw ChannelError.ioOnClosedChannel }
            let handler = try makeClientHandler(context: sslContext, host: host)
            let waiter = HandshakeWaiter(promise: promise)
            let sync = channel.pipeline.syncOperations
            try sync.addHandler(handler, position: .first)
            try sync.addHandler(waiter, position: .after(handler))
        }
        do {
            try await added.get()
        } catch {
            promise.fail(error)
            throw MailNetErrors.map(error, settings: settings, during: "STARTTLS")
        }
        logger.debug("TLS handshake started", metadata: ["host": "\(settings.host)"])
        try await promise.futureResult.withDeadline(settings.connectTimeout, host: settings.host,
                                                          waitingFor: "the TLS handshake", closing: channel)
            .mapMailError(settings: settings, during: "the TLS handshake").get()
        logger.debug("TLS established", metadata: ["host": "\(settings.host)"])
    }

    /// Upgrades a plaintext connection after STARTTLS; see the other overload.
    /// `serverHostname` is the name the certificate must carry.
    public static func startTLS(on channel: Channel, serverHostname: String, caFile: String?,
                                timeout: Duration = .seconds(30), logger: Logger) async throws {
        let settings = ConnectionSettings(host: serverHostname, port: 0, tls: .startTLS, caFile: caFile,
                                          connectTimeout: timeout)
        try await startTLS(on: channel, settings: settings, logger: logger)
    }

    public static func isIPAddress(_ host: String) -> Bool {
        if host.contains(":") { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { p in !p.isEmpty && p.count <= 3 && p.allSatisfy(\.isASCII) && p.allSatisfy(\.isNumber) }
    }
}

/// Completes its promise when the TLS handshake finishes, fails it on any error
/// or close before that, then takes itself out of the pipeline.
final class HandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let promise: EventLoopPromise<Void>
    private var done = false

    init(promise: EventLoopPromise<Void>) {
        self.promise = promise
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted = tls {
            finish(context: context, .success(()))
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        finish(context: context, .failure(error))
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(context: context, .failure(NIOSSLError.uncleanShutdown))
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finish(context: context, .failure(ChannelError.ioOnClosedChannel))
    }

    private func finish(context: ChannelHandlerContext, _ result: Result<Void, Error>) {
        guard !done else { return }
        done = true
        promise.completeWith(result)
    }
}

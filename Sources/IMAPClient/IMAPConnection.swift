import IMAPCore
import Logging
import MailModel
import MailNet
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// Settings of the IMAP client beyond where to connect.
public struct IMAPClientOptions: Sendable, Hashable {
    /// Commands in flight at once on the connection.
    public var pipelineDepth: Int
    /// Bytes of message data buffered for a slow consumer before reading pauses.
    public var streamHighWater: Int
    /// Enable CONDSTORE/QRESYNC when offered.
    public var enableCondStore: Bool
    /// Enable UTF8=ACCEPT when offered.
    public var enableUTF8: Bool
    /// Send ID with this client name (nil: no ID).
    public var clientName: String?
    public var parserLimits: ParserLimits

    public init(pipelineDepth: Int = 16, streamHighWater: Int = 2 * 1024 * 1024, enableCondStore: Bool = true,
                enableUTF8: Bool = true, clientName: String? = "mailferry", parserLimits: ParserLimits = ParserLimits()) {
        self.pipelineDepth = pipelineDepth
        self.streamHighWater = streamHighWater
        self.enableCondStore = enableCondStore
        self.enableUTF8 = enableUTF8
        self.clientName = clientName
        self.parserLimits = parserLimits
    }
}

/// One command's complete reply, collected (for commands whose data is small).
public struct CommandResponse: Sendable {
    public var status: StatusResponse
    public var untagged: [UntaggedResponse]
    /// FETCH responses: attributes, and any message parts collected in memory.
    public var fetches: [FetchedMessage]
}

/// One FETCH response held in memory.
public struct FetchedMessage: Sendable {
    public var sequenceNumber: UInt32
    public var attributes: [FetchAttribute]
    public var parts: [(StreamingKind, ByteBuffer)]

    public var uid: UInt32? {
        for a in attributes { if case .uid(let u) = a { return u } }
        return nil
    }
}

/// A command sent and not yet answered.
public struct PendingCommand: Sendable {
    public let id: UInt64
    public let name: String
    public let sink: ResponseSink
    let connection: IMAPConnection

    /// Collects the reply; throws a `MailError` for NO/BAD (scope as given).
    public func response(scope: MailError.Scope = .folder, collectingUpTo limit: Int = 64 * 1024 * 1024) async throws -> CommandResponse {
        var untagged: [UntaggedResponse] = []
        var fetches: [FetchedMessage] = []
        var current: FetchedMessage?
        var part: (StreamingKind, ByteBuffer)?
        var collected = 0
        while true {
            switch try await sink.next() {
            case .untagged(let u): untagged.append(u)
            case .fetch(let ev):
                switch ev {
                case .fetchStart(let n): current = FetchedMessage(sequenceNumber: n, attributes: [], parts: [])
                case .fetchAttribute(let a): current?.attributes.append(a)
                case .streamingBegin(let k, _): part = (k, ByteBuffer())
                case .streamingBytes(var b):
                    collected += b.readableBytes
                    if collected > limit {
                        throw MailError(.storage, scope: .message, "\(name) returned more than \(limit) bytes to hold in memory")
                    }
                    part?.1.writeBuffer(&b)
                case .streamingEnd:
                    if let p = part { current?.parts.append(p) }
                    part = nil
                case .fetchEnd:
                    if let c = current { fetches.append(c) }
                    current = nil
                case .response: break
                }
            case .continuation, .readyForBody: break
            case .completed(let status):
                guard status.kind == .ok else {
                    throw IMAPErrors.from(status, command: name, host: connection.settings.host, scope: scope)
                }
                return CommandResponse(status: status, untagged: untagged, fetches: fetches)
            }
        }
    }
}

/// An IMAP connection with an `async` API. Commands may be issued from one
/// task while earlier ones are still in flight: that is the pipeline.
/// Open it with `withConnection { }` so that it is always closed.
public final class IMAPConnection: Sendable {
    public let settings: ConnectionSettings
    public let options: IMAPClientOptions
    let channel: Channel
    let handler: LoopBound
    let snapshot: NIOLockedValueBox<SessionSnapshot>
    let logger: Logger
    private let ids = ManagedAtomicCounter()

    init(settings: ConnectionSettings, options: IMAPClientOptions, channel: Channel, handler: IMAPChannelHandler, logger: Logger) {
        self.settings = settings
        self.options = options
        self.channel = channel
        self.handler = LoopBound(value: handler)
        self.snapshot = handler.snapshot
        self.logger = logger
    }

    public var capabilities: Set<Capability> { snapshot.withLockedValue { $0.capabilities } }
    public var enabled: Set<Capability> { snapshot.withLockedValue { $0.enabled } }
    public var phase: ClientStateMachine.Phase { snapshot.withLockedValue { $0.phase } }
    public var encodingOptions: EncodingOptions { snapshot.withLockedValue { $0.encodingOptions } }
    public func has(_ c: Capability) -> Bool { capabilities.contains(c) }
    public var isUTF8Enabled: Bool { enabled.contains(.utf8Accept) }

    // MARK: Opening and closing

    /// Connects, reads the greeting, upgrades with STARTTLS when asked, logs
    /// in, and enables what mailferry uses. Every step has a deadline.
    public static func connect(settings: ConnectionSettings, credentials: Credentials,
                               options: IMAPClientOptions = IMAPClientOptions(), logger: Logger) async throws -> IMAPConnection {
        let connection = try await open(settings: settings, options: options, logger: logger)
        do {
            try await connection.startSession(credentials: credentials)
            return connection
        } catch {
            try? await connection.channel.close()
            throw error
        }
    }

    /// Connects and reads the greeting only (no STARTTLS, no login).
    public static func open(settings: ConnectionSettings, options: IMAPClientOptions = IMAPClientOptions(),
                            logger: Logger) async throws -> IMAPConnection {
        let box = NIOLockedValueBox<(IMAPChannelHandler, EventLoopFuture<StatusResponse>)?>(nil)
        let channel = try await MailConnector.connect(settings: settings, logger: logger) { channel in
            let promise = channel.eventLoop.makePromise(of: StatusResponse.self)
            let handler = IMAPChannelHandler(host: settings.host, responseTimeout: settings.responseTimeout,
                                             pipelineDepth: options.pipelineDepth, limits: options.parserLimits,
                                             greeting: promise, logger: logger)
            try channel.pipeline.syncOperations.addHandler(handler)
            box.withLockedValue { $0 = (handler, promise.futureResult) }
        }
        guard let (handler, greeting) = box.withLockedValue({ $0 }) else {
            channel.close(promise: nil)
            throw MailError(.connection, scope: .account, "the IMAP handler was not set up for \(settings.host)")
        }
        let connection = IMAPConnection(settings: settings, options: options, channel: channel, handler: handler, logger: logger)
        do {
            let g = try await greeting.get()
            logger.debug("greeting", metadata: ["host": "\(settings.host)", "text": "\(g.text)"])
        } catch {
            channel.close(promise: nil)
            throw error
        }
        return connection
    }

    /// Opens a connection, runs `body`, and logs out and closes whatever happens.
    public static func withConnection<T: Sendable>(settings: ConnectionSettings, credentials: Credentials,
                                                   options: IMAPClientOptions = IMAPClientOptions(), logger: Logger,
                                                   _ body: (IMAPConnection) async throws -> T) async throws -> T {
        let c = try await connect(settings: settings, credentials: credentials, options: options, logger: logger)
        do {
            let r = try await body(c)
            await c.logout()
            return r
        } catch {
            await c.logout()
            throw error
        }
    }

    /// LOGOUT (bounded by the response deadline), then close.
    public func logout() async {
        if channel.isActive, phase != .closed {
            _ = try? await execute(.logout, scope: .account)
        }
        try? await channel.close()
    }

    func startSession(credentials: Credentials) async throws {
        if capabilities.isEmpty { _ = try await execute(.capability, scope: .account) }
        switch settings.tls {
        case .startTLS:
            guard has(.startTLS) else {
                throw MailError(.tls, scope: .account, "\(settings.host) does not offer STARTTLS",
                                hint: "use imaps:// or, on a trusted network only, --tls none")
            }
            _ = try await execute(.startTLS, scope: .account)
            try await MailTLS.startTLS(on: channel, settings: settings, logger: logger)
            try await onLoop { $0.tlsStarted() }
            _ = try await execute(.capability, scope: .account)
        case .implicit, .none: break
        }
        if phase == .notAuthenticated { try await authenticate(credentials) }
        if capabilities.isEmpty { _ = try await execute(.capability, scope: .account) }
        if let name = options.clientName, has(.id) {
            _ = try? await execute(.id(IDParameters(["name": name])), scope: .account)
        }
        var toEnable: [Capability] = []
        if options.enableCondStore {
            if has(.qresync) { toEnable += [.condStore, .qresync] } else if has(.condStore) { toEnable.append(.condStore) }
        }
        if options.enableUTF8, has(.utf8Accept) { toEnable.append(.utf8Accept) }
        if !toEnable.isEmpty, has(.enable) {
            _ = try await execute(.enable(toEnable), scope: .account)
        }
    }

    /// LOGIN, or AUTHENTICATE with PLAIN (SASL-IR, authorization identity),
    /// XOAUTH2 or OAUTHBEARER. A refused OAuth token is fetched again once.
    public func authenticate(_ credentials: Credentials) async throws {
        let offered = capabilities.compactMap(\.authMechanism)
        let mechanism = SASL.preferredMechanism(for: credentials, offered: offered, host: settings.host, port: settings.port)
        guard let mechanism else {
            if case .password(let password) = credentials.secret, credentials.authorizationIdentity == nil, !has(.loginDisabled) {
                _ = try await execute(.login(username: credentials.user, password: password), scope: .account)
                return
            }
            throw MailError(.authentication, scope: .account,
                            "\(settings.host) offers no way to log in with \(credentials.isOAuth2 ? "an OAuth2 token" : "these credentials") (offered: \(offered.sorted().joined(separator: " ")))")
        }
        do {
            try await saslExchange(mechanism, credentials: credentials, refresh: false)
        } catch let e as MailError where e.kind == .authentication && credentials.isOAuth2 {
            logger.debug("OAuth token refused; fetching a new one", metadata: ["host": "\(settings.host)"])
            try await saslExchange(mechanism, credentials: credentials, refresh: true)
        }
    }

    private func saslExchange(_ name: String, credentials: Credentials, refresh: Bool) async throws {
        var mech = try await SASL.makeMechanism(named: name, credentials: credentials, host: settings.host,
                                                port: settings.port, forceTokenRefresh: refresh)
        var initial: [UInt8]?
        if has(.saslIR), let ir = mech.initialResponse() {
            initial = ir
            mech.markInitialResponseSent()
        }
        let pending = submit(.authenticate(mechanism: name, initialResponse: initial))
        var oauthDetail: String?
        while true {
            switch try await pending.sink.next() {
            case .continuation(let text):
                guard let challenge = SASL.decode(text) else {
                    throw IMAPErrors.protocolError(host: settings.host, "an AUTHENTICATE challenge that is not base64")
                }
                let line: String
                switch try mech.respond(to: challenge) {
                case .respond(let bytes): line = SASL.encode(bytes)
                case .failed(let response, _, let detail):
                    oauthDetail = detail
                    line = SASL.encode(response)
                }
                try await onLoop { $0.continuationResponse(pending.id, line: line) }
            case .completed(let status):
                guard status.kind == .ok else {
                    var e = IMAPErrors.from(status, command: "AUTHENTICATE \(name)", host: settings.host, scope: .account)
                    if e.kind != .throttled { e.kind = .authentication; e.scope = .account }
                    if let oauthDetail { e.message += " (\(oauthDetail))" }
                    throw e
                }
                return
            case .untagged, .fetch, .readyForBody: continue
            }
        }
    }

    // MARK: Commands

    /// Sends a command into the pipeline and returns at once.
    public func submit(_ command: OutboundCommand) -> PendingCommand {
        let id = ids.next()
        let handler = self.handler
        let sink = ResponseSink(highWater: options.streamHighWater) { [channel] in
            channel.eventLoop.execute { handler.value.resumeReading() }
        }
        channel.eventLoop.execute { handler.value.submit(id, command, sink: sink) }
        return PendingCommand(id: id, name: command.name, sink: sink, connection: self)
    }

    /// Sends several commands whose responses go to one sink, in wire order.
    /// For pipelined commands whose data the server may interleave or finish
    /// out of order (Dovecot runs pipelined FETCHes in parallel): the caller
    /// matches data by UID and counts one `.completed` per command.
    public func submitGroup(_ commands: [OutboundCommand]) -> ResponseSink {
        let handler = self.handler
        let sink = ResponseSink(highWater: options.streamHighWater) { [channel] in
            channel.eventLoop.execute { handler.value.resumeReading() }
        }
        let ids = commands.map { _ in self.ids.next() }
        channel.eventLoop.execute {
            for (id, command) in zip(ids, commands) { handler.value.submit(id, command, sink: sink) }
        }
        return sink
    }

    /// Sends a command and collects its reply.
    @discardableResult
    public func execute(_ command: Command, scope: MailError.Scope = .folder) async throws -> CommandResponse {
        try await submit(.command(command)).response(scope: scope)
    }

    func onLoop(_ body: @escaping @Sendable (IMAPChannelHandler) -> Void) async throws {
        let handler = self.handler
        try await channel.eventLoop.submit { body(handler.value) }.get()
    }

    /// APPEND one message, streaming `body`; returns once every byte is
    /// written (the reply may come later: await `PendingCommand.response()`).
    /// `message.size` must be exact.
    public func append<Body: AsyncSequence & Sendable>(to mailbox: MailboxName, message: AppendWriter.Message, body: Body) async throws -> PendingCommand
    where Body.Element == ByteBuffer {
        let pending = try await beginAppend(to: mailbox, message: message, body: body)
        try await endAppend(pending, .finish)
        return pending
    }

    /// How an APPEND's command line goes on after a message's bytes.
    public enum AppendEnding: Sendable {
        /// CRLF: the command is complete and the server answers.
        case finish
        /// Another message follows in the same command (MULTIAPPEND, RFC 3502):
        /// call `appendNext`, then eventually `endAppend(.finish)`.
        case keepOpen
        /// The command ends with bytes the server must refuse (BAD): nothing
        /// of it is stored and the session stays in step.
        case abort
    }

    /// Starts an APPEND and streams its first message; the command line stays
    /// open until `endAppend` (or `appendNext` for more messages, when the
    /// server offers MULTIAPPEND). Nothing else can be sent on the connection
    /// meanwhile, so end it promptly.
    public func beginAppend<Body: AsyncSequence & Sendable>(to mailbox: MailboxName, message: AppendWriter.Message, body: Body) async throws -> PendingCommand
    where Body.Element == ByteBuffer {
        let pending = submit(.append(mailbox, message))
        try await streamMessage(pending, message: message, body: body)
        return pending
    }

    /// The next message of an open MULTIAPPEND begun with `beginAppend`.
    /// Throws the command's reply if the server ended it early (a NO instead
    /// of "+"): then the whole command failed and nothing of it was stored.
    public func appendNext<Body: AsyncSequence & Sendable>(_ pending: PendingCommand, message: AppendWriter.Message, body: Body) async throws
    where Body.Element == ByteBuffer {
        // One trip to the event loop for both steps (each trip is a thread
        // hand-off; per message they were a good part of a copy's CPU).
        let id = pending.id
        try await onLoop {
            $0.messageDone(id)
            $0.appendNext(id, message)
        }
        try await streamMessage(pending, message: message, body: body)
    }

    /// Ends an APPEND begun with `beginAppend`.
    public func endAppend(_ pending: PendingCommand, _ ending: AppendEnding) async throws {
        let id = pending.id
        switch ending {
        case .finish: try await onLoop { $0.finishBody(id) }
        case .keepOpen: try await onLoop { $0.messageDone(id) }
        case .abort: try await onLoop { $0.abortAppend(id) }
        }
    }

    private func streamMessage<Body: AsyncSequence & Sendable>(_ pending: PendingCommand, message: AppendWriter.Message, body: Body) async throws
    where Body.Element == ByteBuffer {
        // Wait for the go-ahead (at once with LITERAL+, after "+" otherwise) or a refusal.
        waiting: while true {
            let item = try await pending.sink.next()
            switch item {
            case .readyForBody: break waiting
            case .completed(let status):
                throw IMAPErrors.from(status, command: "APPEND", host: settings.host, scope: .message)
            default: continue
            }
        }
        var sent: Int64 = 0
        let handler = self.handler
        let id = pending.id
        do {
            for try await chunk in body {
                sent += Int64(chunk.readableBytes)
                if sent > message.size { break }
                // One wait per chunk: for the hop to the event loop and the
                // write both (the write's completion paces the producer).
                let loop = channel.eventLoop
                try await loop.flatSubmit { handler.value.writeBody(id, chunk) ?? loop.makeSucceededVoidFuture() }.get()
            }
        } catch {
            // The literal is cut short: the session cannot be kept in step.
            channel.close(promise: nil)
            // A write on a connection the peer dropped fails with a socket
            // error (EPIPE): a lost connection, which a retry may cure.
            // Errors of the body's own source pass as they are.
            if error is IOError || error is ChannelError {
                throw MailNetErrors.map(error, host: settings.host, port: settings.port, during: "sending a message")
            }
            throw error
        }
        guard sent == message.size else {
            // A literal that does not match its size would desynchronise the session.
            channel.close(promise: nil)
            throw MailError(.storage, scope: .account, "the message body had \(sent) bytes where \(message.size) were announced; the connection was closed")
        }
    }

    /// Starts IDLE; returns once the server confirmed. Call `done` on the result to end it.
    public func idle() async throws -> IdleSession {
        let pending = submit(.idle)
        while true {
            switch try await pending.sink.next() {
            case .continuation: return IdleSession(pending: pending, connection: self)
            case .completed(let s): throw IMAPErrors.from(s, command: "IDLE", host: settings.host, scope: .account)
            default: continue
            }
        }
    }
}

/// An IDLE in progress.
public struct IdleSession: Sendable {
    let pending: PendingCommand
    let connection: IMAPConnection

    /// The next untagged response while idling (EXISTS, EXPUNGE, FETCH flags).
    public func next() async throws -> ResponseSink.Item { try await pending.sink.next() }

    /// Sends DONE and waits for the IDLE command to complete.
    public func done() async throws {
        let id = pending.id
        try await connection.onLoop { $0.endIdle(id) }
        _ = try await pending.response(scope: .account)
    }
}

final class ManagedAtomicCounter: Sendable {
    private let value = NIOLockedValueBox<UInt64>(0)
    func next() -> UInt64 { value.withLockedValue { $0 += 1; return $0 } }
}

/// The channel handler, touched only on its event loop (every use is inside
/// `eventLoop.execute`/`submit`).
struct LoopBound: Sendable {
    let value: IMAPChannelHandler
}

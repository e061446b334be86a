@preconcurrency import Crypto
import Logging
import MailModel
import MailNet
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import POP3Core

/// An authenticated POP3 session (RFC 1939) in the TRANSACTION state, with
/// CAPA (RFC 2449), STLS (RFC 2595), SASL (RFC 5034) and PIPELINING.
///
/// One task uses a connection at a time (it is a stream of replies in
/// order); parallel work opens one connection each. Prefer the scoped
/// `withConnection`, which ends with QUIT when the body succeeds and drops the
/// connection without QUIT (committing nothing) when it throws.
public final class POP3Connection: @unchecked Sendable {
    public let settings: ConnectionSettings
    public let options: POP3ClientOptions
    public private(set) var greeting = POP3StatusLine(isOK: true)
    /// The server's capabilities; nil when it does not know CAPA.
    public private(set) var capabilities: POP3Capabilities?
    /// The login method that succeeded (`USER`, `APOP` or a SASL mechanism).
    public private(set) var loginMethod: String?
    let logger: Logger

    private let channel: Channel
    private let handler: NIOLoopBound<POP3ChannelHandler>
    private var events: [POP3ResponseEvent] = []
    private var eventIndex = 0
    /// Replies owed by the server that nobody has read yet (a pipeline cut
    /// short by an error); they are skipped before the next command.
    private var unreadReplies: [POP3ResponseKind] = []
    private var broken: MailError?
    private var closed = false

    /// True when RETR/TOP/DELE go out in windows without waiting.
    public var isPipelining: Bool { options.pipelining && (capabilities?.pipelining ?? false) }

    private init(settings: ConnectionSettings, options: POP3ClientOptions, logger: Logger, channel: Channel,
                 handler: NIOLoopBound<POP3ChannelHandler>) {
        self.settings = settings
        self.options = options
        self.logger = logger
        self.channel = channel
        self.handler = handler
    }

    // MARK: Opening and closing

    /// Connects, reads the greeting, negotiates TLS as `settings.tls` says,
    /// and logs in. Every wait is bounded by the settings' deadlines.
    public static func connect(settings: ConnectionSettings, credentials: Credentials,
                               options: POP3ClientOptions = POP3ClientOptions(), logger: Logger) async throws -> POP3Connection {
        let conn = try await open(settings: settings, options: options, logger: logger)
        do {
            try await conn.start()
            try await conn.login(credentials)
            return conn
        } catch {
            conn.abort()
            throw error
        }
    }

    /// Connects and reads the greeting, without logging in (and without
    /// STLS); for tests of the pre-login state.
    static func open(settings: ConnectionSettings, options: POP3ClientOptions, logger: Logger) async throws -> POP3Connection {
        let configuration = POP3ConnectionStateMachine.Configuration(
            host: settings.host, port: settings.port, responseTimeout: settings.responseTimeout,
            highWatermark: options.highWatermark, limits: options.limits)
        let box = NIOLockedValueBox<NIOLoopBound<POP3ChannelHandler>?>(nil)
        let channel = try await MailConnector.connect(settings: settings, logger: logger) { channel in
            try channel.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
            let h = POP3ChannelHandler(configuration: configuration, logger: logger)
            try channel.pipeline.syncOperations.addHandler(h)
            box.withLockedValue { $0 = NIOLoopBound(h, eventLoop: channel.eventLoop) }
        }
        guard let handler = box.withLockedValue({ $0 }) else {
            channel.close(promise: nil)
            throw MailError(.connection, scope: .account, "the POP3 handler was not set up for \(settings.endpoint)")
        }
        return POP3Connection(settings: settings, options: options, logger: logger, channel: channel, handler: handler)
    }

    /// Connects, logs in, runs `body`, then QUIT (which commits DELE). If
    /// `body` throws, the connection is dropped without QUIT: the server
    /// deletes nothing.
    public static func withConnection<T: Sendable>(
        settings: ConnectionSettings, credentials: Credentials, options: POP3ClientOptions = POP3ClientOptions(),
        logger: Logger, _ body: (POP3Connection) async throws -> T
    ) async throws -> T {
        let conn = try await connect(settings: settings, credentials: credentials, options: options, logger: logger)
        let result: T
        do {
            result = try await body(conn)
        } catch {
            conn.abort()
            throw error
        }
        try await conn.quit()
        return result
    }

    /// Ends the session with QUIT: the server enters its UPDATE state and
    /// removes the messages marked with DELE. Throws when the server refuses
    /// (then nothing was removed).
    public func quit() async throws {
        guard !closed else { return }
        defer { abort() }
        try await skipUnread()
        try await send([.quit])
        let s = try await status(for: .quit)
        guard s.isOK else {
            throw MailError(.refused, scope: .account, retryable: true,
                            "\(settings.host) refused QUIT, so messages marked for deletion were kept: \(s.text)")
        }
        // Wait (bounded) for the server to close its side.
        _ = try? await channel.closeFuture.withDeadline(.seconds(2), host: settings.host, waitingFor: "the close after QUIT").get()
    }

    /// Drops the connection without QUIT: marked deletions are not committed.
    public func abort() {
        guard !closed else { return }
        closed = true
        channel.close(promise: nil)
    }

    // MARK: Low level

    func send(_ commands: [POP3Command]) async throws {
        if let broken { throw broken }
        guard !closed else { throw MailError(.connection, scope: .account, "the connection to \(settings.host) is closed") }
        let h = handler
        try await channel.eventLoop.submit { try h.value.send(commands) }.get()
    }

    func nextEvent() async throws -> POP3ResponseEvent {
        if eventIndex < events.count {
            defer {
                eventIndex += 1
                if eventIndex == events.count {
                    events.removeAll(keepingCapacity: true)
                    eventIndex = 0
                }
            }
            return events[eventIndex]
        }
        if let broken { throw broken }
        let h = handler
        let loop = channel.eventLoop
        let batch: [POP3ResponseEvent]
        do {
            batch = try await loop.flatSubmit { h.value.next(loop: loop) }.get()
        } catch {
            let e = (error as? MailError) ?? MailNetErrors.map(error, settings: settings, during: "POP3")
            broken = e
            throw e
        }
        guard let first = batch.first else {
            let e = MailError(.connection, scope: .account, retryable: true, "\(settings.host) closed the connection")
            broken = e
            throw e
        }
        if batch.count > 1 {
            events = batch
            eventIndex = 1
        }
        return first
    }

    /// Reads the status line of the reply to `command`.
    func status(for command: POP3Command) async throws -> POP3StatusLine {
        let e = try await nextEvent()
        guard case .status(let s) = e else {
            throw fail(POP3Errors.unexpected(e, waitingFor: "the reply to \(command)", host: settings.host))
        }
        return s
    }

    /// Marks the connection unusable (out of step with the server) and returns the error.
    func fail(_ error: MailError) -> MailError {
        broken = error
        abort()
        return error
    }

    /// Lines of a multi-line reply, up to its end.
    func lines(max: Int = 50_000_000) async throws -> [ByteBuffer] {
        var out: [ByteBuffer] = []
        while true {
            let e = try await nextEvent()
            switch e {
            case .line(let l):
                guard out.count < max else { throw fail(MailError(.protocolViolation, scope: .account, "\(settings.host) sent more than \(max) listing lines")) }
                out.append(l)
            case .end: return out
            default: throw fail(POP3Errors.unexpected(e, waitingFor: "a listing line", host: settings.host))
            }
        }
    }

    /// Skips one reply whose status was not read.
    private func skipReply(_ kind: POP3ResponseKind) async throws {
        let e = try await nextEvent()
        switch e {
        case .status(let s) where s.isOK && (kind == .multiLineLines || kind == .multiLineStream):
            while true {
                let b = try await nextEvent()
                if case .end = b { return }
            }
        case .status, .continuation: return
        default: throw fail(POP3Errors.unexpected(e, waitingFor: "a reply to skip", host: settings.host))
        }
    }

    private func skipUnread() async throws {
        while !unreadReplies.isEmpty {
            let k = unreadReplies.removeFirst()
            try await skipReply(k)
        }
    }

    /// Sends one command and reads its status line; -ERR becomes a MailError.
    @discardableResult
    func simple(_ command: POP3Command) async throws -> POP3StatusLine {
        try await skipUnread()
        try await send([command])
        let s = try await status(for: command)
        guard s.isOK else { throw POP3Errors.refused(s, command: command, host: settings.host) }
        return s
    }

    // MARK: Greeting, CAPA, STLS

    private func start() async throws {
        let g = try await status(for: .noop)
        greeting = g
        guard g.isOK else {
            if g.code != nil { throw fail(POP3Errors.refused(g, command: .noop, host: settings.host)) }
            throw fail(MailError(.connection, scope: .account, retryable: true,
                                 "\(settings.host) turned the connection away: \(g.text)"))
        }
        capabilities = try await fetchCapabilities()
        switch settings.tls {
        case .startTLS:
            if let caps = capabilities, !caps.stls {
                throw fail(MailError(.tls, scope: .account, "\(settings.host) does not offer STLS, and plaintext logins are refused",
                                     hint: "use pop3s:// (port 995), or --tls none if you accept plaintext"))
            }
            try await send([.stls])
            let s = try await status(for: .stls)
            guard s.isOK else {
                throw fail(MailError(.tls, scope: .account, "\(settings.host) refused STLS: \(s.text)",
                                     hint: "use pop3s:// (port 995), or --tls none if you accept plaintext"))
            }
            do {
                try await MailTLS.startTLS(on: channel, settings: settings, logger: logger)
            } catch {
                throw fail((error as? MailError) ?? MailNetErrors.map(error, settings: settings, during: "STLS"))
            }
            let h = handler
            try await channel.eventLoop.submit { h.value.tlsEstablished() }.get()
            // RFC 2595 §4: capabilities learnt before TLS are forgotten.
            capabilities = try await fetchCapabilities()
        case .implicit, .none:
            break
        }
    }

    /// CAPA, or nil when the server does not know it.
    public func fetchCapabilities() async throws -> POP3Capabilities? {
        try await skipUnread()
        try await send([.capa])
        let s = try await status(for: .capa)
        guard s.isOK else { return nil }
        var caps = POP3Capabilities()
        for l in try await lines(max: 1000) {
            do { try caps.add(line: Array(l.readableBytesView)[...]) } catch let e as POP3ParseError {
                logger.debug("ignoring a CAPA line", metadata: ["reason": "\(e.message)"])
            }
        }
        return caps
    }

    // MARK: Login

    private func login(_ credentials: Credentials) async throws {
        let method = try chooseLoginMethod(credentials)
        logger.debug("logging in", metadata: ["host": "\(settings.host)", "user": "\(credentials.user)", "method": "\(method)"])
        switch method {
        case "USER":
            try await simpleLogin(.user(credentials.user), credentials)
            guard case .password(let p) = credentials.secret else { throw noPassword(method) }
            try await simpleLogin(.pass(p), credentials)
        case "APOP":
            guard case .password(let p) = credentials.secret else { throw noPassword(method) }
            guard let stamp = greeting.apopTimestamp else {
                throw MailError(.unsupported, scope: .account, "\(settings.host) offers no APOP timestamp in its greeting")
            }
            let digest = Insecure.MD5.hash(data: Array((stamp + p).utf8)).map { b in
                let h = String(b, radix: 16)
                return h.count == 1 ? "0" + h : h
            }.joined()
            try await simpleLogin(.apop(credentials.user, digest: digest), credentials)
        default:
            do {
                try await sasl(method, credentials, refreshToken: false)
            } catch let e as MailError where e.kind == .authentication && credentials.isOAuth2 {
                // The token may have expired: fetch a fresh one and try once more.
                logger.debug("OAuth2 token refused; refreshing it once", metadata: ["host": "\(settings.host)"])
                try await sasl(method, credentials, refreshToken: true)
            }
        }
        loginMethod = method
        // RFC 2449 §5: capabilities may differ in the TRANSACTION state.
        if capabilities != nil, let after = try await fetchCapabilities() { capabilities = after }
    }

    private func noPassword(_ method: String) -> MailError {
        MailError(.usage, scope: .account, "\(method) login needs a password, not an OAuth2 token")
    }

    func chooseLoginMethod(_ credentials: Credentials) throws -> String {
        let mechanisms = capabilities?.saslMechanisms ?? []
        if let forced = options.loginMethod?.uppercased() { return forced }
        if credentials.isOAuth2 {
            return SASL.preferredMechanism(for: credentials, offered: mechanisms, host: settings.host, port: settings.port)
                ?? "XOAUTH2"
        }
        if credentials.authorizationIdentity != nil {
            // Only SASL PLAIN carries an authorization identity.
            return "PLAIN"
        }
        if mechanisms.contains("PLAIN") { return "PLAIN" }
        let hasStamp = greeting.apopTimestamp != nil
        if let caps = capabilities {
            if caps.user { return "USER" }
            if mechanisms.contains("LOGIN") { return "LOGIN" }
            if hasStamp { return "APOP" }
            return "USER"
        }
        // No CAPA: an old server. APOP when it offers a timestamp, else USER/PASS.
        return hasStamp ? "APOP" : "USER"
    }

    private func simpleLogin(_ command: POP3Command, _ credentials: Credentials) async throws {
        try await send([command])
        let s = try await status(for: command)
        guard s.isOK else {
            throw POP3Errors.refused(s, command: command, host: settings.host,
                                     loginDelay: capabilities?.loginDelay, during: true)
        }
    }

    private func sasl(_ name: String, _ credentials: Credentials, refreshToken: Bool) async throws {
        var mechanism = try await SASL.makeMechanism(named: name, credentials: credentials, host: settings.host,
                                                     port: settings.port, forceTokenRefresh: refreshToken)
        var command = POP3Command.auth(name, initialResponse: nil)
        let isOAuth = name == "XOAUTH2" || name == "OAUTHBEARER"
        if let ir = mechanism.initialResponse(), !isOAuth || options.oauth2InitialResponse {
            let encoded = SASL.encode(ir, initial: true)
            // RFC 5034 §4: no initial response if the command would exceed 255 octets.
            if "AUTH \(name) \(encoded)\r\n".utf8.count <= 255 {
                command = .auth(name, initialResponse: encoded == "=" ? "" : encoded)
                mechanism.markInitialResponseSent()
            }
        }
        try await send([command])
        var failure: String?
        var rounds = 0
        while true {
            let e = try await nextEvent()
            switch e {
            case .continuation(let c):
                rounds += 1
                guard rounds <= 10, let challenge = SASL.decode(c.base64) else {
                    try await send([.saslCancel])
                    _ = try await status(for: .saslCancel)
                    throw MailError(.protocolViolation, scope: .account, "\(settings.host) sent a bad SASL \(name) challenge")
                }
                let step: SASLStep
                do { step = try mechanism.respond(to: challenge) } catch {
                    try await send([.saslCancel])
                    _ = try await status(for: .saslCancel)
                    throw error
                }
                switch step {
                case .respond(let bytes):
                    try await send([.saslResponse(SASL.encode(bytes))])
                case .failed(let response, let status, let detail):
                    failure = status.map { "status \($0)" } ?? detail
                    try await send([.saslResponse(SASL.encode(response))])
                }
            case .status(let s):
                if s.isOK { return }
                var err = POP3Errors.refused(s, command: command, host: settings.host,
                                             loginDelay: capabilities?.loginDelay, during: true)
                if let failure { err.message += " (\(failure))" }
                throw err
            default:
                throw fail(POP3Errors.unexpected(e, waitingFor: "the AUTH reply", host: settings.host))
            }
        }
    }

    // MARK: Transaction commands

    /// STAT: message count and total size (messages marked deleted excluded).
    public func stat() async throws -> (count: Int, size: Int64) {
        let s = try await simple(.stat)
        do { return try s.statValues() } catch let e as POP3ParseError {
            throw fail(MailError(.protocolViolation, scope: .account, "\(settings.host): \(e.message)"))
        }
    }

    /// LIST: every message's number and size.
    public func list() async throws -> [POP3ScanListing] {
        try await skipUnread()
        try await send([.list(nil)])
        let s = try await status(for: .list(nil))
        guard s.isOK else { throw POP3Errors.refused(s, command: .list(nil), host: settings.host) }
        return try await lines().map { l in
            do { return try POP3ScanListing.parse(line: Array(l.readableBytesView)[...]) } catch let e as POP3ParseError {
                throw fail(MailError(.protocolViolation, scope: .account, "\(settings.host): \(e.message)"))
            }
        }
    }

    /// UIDL: every message's unique id, or nil when the server has no UIDL.
    public func uidl() async throws -> [POP3UniqueIDListing]? {
        if let caps = capabilities, !caps.uidl { return nil }
        try await skipUnread()
        try await send([.uidl(nil)])
        let s = try await status(for: .uidl(nil))
        guard s.isOK else { return nil }
        return try await lines().map { l in
            do { return try POP3UniqueIDListing.parse(line: Array(l.readableBytesView)[...]) } catch let e as POP3ParseError {
                throw fail(MailError(.protocolViolation, scope: .account, "\(settings.host): \(e.message)"))
            }
        }
    }

    public func noop() async throws { try await simple(.noop) }

    /// LIST n: whether message n exists (and is not marked deleted).
    public func exists(_ number: Int) async throws -> Bool {
        try await skipUnread()
        try await send([.list(number)])
        return try await status(for: .list(number)).isOK
    }

    /// RSET: unmarks every message marked for deletion in this session.
    public func rset() async throws { try await simple(.rset) }

    /// DELE for each number, pipelined when the server allows. Returns the
    /// numbers the server refused (e.g. already deleted). Nothing is removed
    /// until `quit()`.
    @discardableResult
    public func dele(_ numbers: [Int]) async throws -> [Int] {
        var refused: [Int] = []
        try await pipeline(numbers.map { .dele($0) }) { i, status, _ in
            if !status.isOK { refused.append(numbers[i]) }
        }
        return refused
    }

    /// Retrieves messages (RETR) in order, each handed to `handler` as a
    /// stream of chunks while it arrives. With PIPELINING the next RETRs are
    /// already on their way while `handler` works. Messages the server
    /// refuses (gone) are returned.
    @discardableResult
    public func retrieve(_ numbers: [Int], _ handler: (Int, POP3MessageStream) async throws -> Void) async throws -> [Int] {
        try await fetch(numbers.map { .retr($0) }, numbers, handler)
    }

    /// TOP n lines for each number (headers when `lines` is 0).
    @discardableResult
    public func top(_ numbers: [Int], lines: Int, _ handler: (Int, POP3MessageStream) async throws -> Void) async throws -> [Int] {
        try await fetch(numbers.map { .top($0, lines: lines) }, numbers, handler)
    }

    private func fetch(_ commands: [POP3Command], _ numbers: [Int],
                       _ handler: (Int, POP3MessageStream) async throws -> Void) async throws -> [Int] {
        var missing: [Int] = []
        try await pipeline(commands) { i, status, stream in
            if let stream {
                try await handler(numbers[i], stream)
            } else if status.code == nil {
                // Most likely deleted meanwhile; `exists(_:)` can confirm.
                missing.append(numbers[i])
            } else {
                throw POP3Errors.refused(status, command: commands[i], host: settings.host).with(messageID: String(numbers[i]))
            }
        }
        return missing
    }

    /// Sends `commands` keeping up to the window in flight (one at a time
    /// without PIPELINING) and hands each reply to `each` in order: its
    /// status, and for a multi-line `+OK` the body, which is drained after
    /// `each` returns. If `each` throws, the replies still owed are skipped
    /// before the next command, so the session stays usable.
    func pipeline(_ commands: [POP3Command],
                  _ each: (Int, POP3StatusLine, POP3MessageStream?) async throws -> Void) async throws {
        guard !commands.isEmpty else { return }
        try await skipUnread()
        let window = isPipelining ? options.pipelineWindow : 1
        // Commands go out in groups of at least half a window (or what is
        // left), not one per reply: each send is a hop to the event loop, a
        // TLS record and a write(2); half a window stays in flight meanwhile.
        let group = max(1, window / 2)
        var sent = 0
        func refill(_ inFlight: Int) async throws {
            let n = min(window - inFlight, commands.count - sent)
            guard n > 0, n >= group || sent + n == commands.count else { return }
            try await send(Array(commands[sent..<(sent + n)]))
            sent += n
        }
        try await refill(0)
        for i in 0..<commands.count {
            let s = try await status(for: commands[i])
            // This reply is being read: the next command may go out now.
            try await refill(sent - i - 1)
            let kind = commands[i].responseKind
            let stream = (s.isOK && (kind == .multiLineStream || kind == .multiLineLines)) ? POP3MessageStream(self) : nil
            do {
                try await each(i, s, stream)
                try await stream?.drain()
            } catch {
                // Keep the session in step: the rest of this reply and the
                // replies already asked for are skipped later.
                // (If the connection broke, it stays broken; the first error is what counts.)
                if let stream, !stream.isFinished { try? await stream.drain() }
                unreadReplies.append(contentsOf: commands[(i + 1)..<sent].map(\.responseKind))
                throw error
            }
        }
    }
}

/// One message's bytes as they arrive (dot-unstuffed, line endings as the
/// server sent them). Iterate once; `bytesRead` counts what was handed out.
public final class POP3MessageStream: AsyncSequence, @unchecked Sendable {
    public typealias Element = ByteBuffer
    private let connection: POP3Connection
    public private(set) var isFinished = false
    public private(set) var bytesRead: Int64 = 0

    init(_ connection: POP3Connection) { self.connection = connection }

    /// The next chunk, or nil at the end of the message.
    public func next() async throws -> ByteBuffer? {
        guard !isFinished else { return nil }
        let e = try await connection.nextEvent()
        switch e {
        case .chunk(let c):
            bytesRead += Int64(c.readableBytes)
            return c
        case .line(var l):
            // A multi-line listing read as bytes: give the line back with CRLF.
            l.writeString("\r\n")
            bytesRead += Int64(l.readableBytes)
            return l
        case .end:
            isFinished = true
            return nil
        default:
            throw connection.fail(POP3Errors.unexpected(e, waitingFor: "message data", host: connection.settings.host))
        }
    }

    /// Reads and discards the rest of the message.
    public func drain() async throws {
        while try await next() != nil {}
    }

    /// The rest of the message in one buffer; refuses more than `limit` bytes.
    public func collect(upTo limit: Int) async throws -> ByteBuffer {
        var out = ByteBuffer()
        while var c = try await next() {
            guard out.readableBytes + c.readableBytes <= limit else {
                throw MailError(.storage, scope: .message, "a POP3 reply larger than \(limit) bytes cannot be held in memory")
            }
            out.writeBuffer(&c)
        }
        return out
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let stream: POP3MessageStream
        public mutating func next() async throws -> ByteBuffer? { try await stream.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: self) }
}

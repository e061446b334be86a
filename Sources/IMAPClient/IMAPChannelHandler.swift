import IMAPCore
import Logging
import MailModel
import MailNet
import NIOConcurrencyHelpers
import NIOCore

/// What the async side may read about the session at any time.
struct SessionSnapshot: Sendable {
    var capabilities: Set<Capability> = []
    var enabled: Set<Capability> = []
    var phase: ClientStateMachine.Phase = .awaitingGreeting
    var lastBye: StatusResponse?
    var encodingOptions = EncodingOptions()
}

/// Carries out the state machine's actions on a channel: parses what arrives,
/// writes what the machine says, hands responses to each command's sink,
/// pauses reading while a consumer is behind, and enforces the response
/// deadline. It makes no protocol decisions of its own.
final class IMAPChannelHandler: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var parser: ResponseParser
    private var machine: ClientStateMachine
    private var sinks: [ClientStateMachine.CommandID: ResponseSink] = [:]
    private var context: ChannelHandlerContext?
    private let greeting: EventLoopPromise<StatusResponse>
    private var greetingDone = false
    private var failed: MailError?
    private var readPaused = false
    /// The deadline already passed once while reading was paused for a slow
    /// consumer; if the consumer still has not caught up at the next one, it
    /// never will (it gave up on its data) and the connection is failed.
    private var pausedDeadlineSpent = false
    private var pendingRead = false
    /// After STARTTLS was accepted and until TLS is in place, every inbound byte is dropped.
    private var discardUntilTLS = false
    private var deadlineTask: Scheduled<Void>?
    private let host: String
    private let responseTimeout: Duration
    private let logger: Logger
    let snapshot = NIOLockedValueBox(SessionSnapshot())

    init(host: String, responseTimeout: Duration, pipelineDepth: Int, limits: ParserLimits = ParserLimits(),
         greeting: EventLoopPromise<StatusResponse>, logger: Logger) {
        self.host = host
        self.responseTimeout = responseTimeout
        self.parser = ResponseParser(limits: limits)
        self.machine = ClientStateMachine(pipelineDepth: pipelineDepth)
        self.greeting = greeting
        self.logger = logger
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { armDeadline(context: context, waitingFor: "the greeting") }
    }

    func channelActive(context: ChannelHandlerContext) {
        armDeadline(context: context, waitingFor: "the greeting")
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadlineTask?.cancel()
        // A connection attempt that lost the race (happy eyeballs) or was refused
        // is torn down without ever becoming active: nothing may stay waiting.
        if !greetingDone || !sinks.isEmpty {
            failAll(failed ?? IMAPErrors.connectionLost(host: host, during: currentActivity(), bye: nil))
        }
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        if discardUntilTLS || failed != nil { return }
        parser.append(bytes)
        process(context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if readPaused {
            pendingRead = true
        } else {
            context.read()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let bye = snapshot.withLockedValue { $0.lastBye }
        failAll(failed ?? IMAPErrors.connectionLost(host: host, during: currentActivity(), bye: bye))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // After a BYE the reason is the BYE, not the reset that followed it.
        if let bye = snapshot.withLockedValue({ $0.lastBye }) {
            failAll(IMAPErrors.connectionLost(host: host, during: currentActivity(), bye: bye))
        } else {
            failAll(MailNetErrors.map(error, host: host, port: 0, during: currentActivity()))
        }
        context.close(promise: nil)
    }

    // MARK: From the async side (always on the event loop)

    func submit(_ id: ClientStateMachine.CommandID, _ command: OutboundCommand, sink: ResponseSink) {
        if let failed {
            sink.fail(failed)
            return
        }
        sinks[id] = sink
        perform(machine.submit(id, command))
    }

    func writeBody(_ id: ClientStateMachine.CommandID, _ bytes: ByteBuffer) -> EventLoopFuture<Void>? {
        guard let context else { return nil }
        if let failed { return context.eventLoop.makeFailedFuture(failed) }
        var future: EventLoopFuture<Void>?
        for action in machine.bodyChunk(id, bytes) {
            if case .write(let b) = action {
                let p = context.eventLoop.makePromise(of: Void.self)
                context.writeAndFlush(wrapOutboundOut(b), promise: p)
                // Bytes the peer took are progress: the deadline counts from here.
                p.futureResult.whenSuccess { [weak self] in
                    guard let self, let ctx = self.context else { return }
                    self.armDeadline(context: ctx, waitingFor: "a reply")
                }
                future = p.futureResult
            }
        }
        return future
    }

    func finishBody(_ id: ClientStateMachine.CommandID) { perform(machine.finishBody(id)) }

    func messageDone(_ id: ClientStateMachine.CommandID) { perform(machine.messageDone(id)) }

    func appendNext(_ id: ClientStateMachine.CommandID, _ message: AppendWriter.Message) {
        perform(machine.appendNext(id, message))
    }

    func abortAppend(_ id: ClientStateMachine.CommandID) { perform(machine.abortAppend(id)) }

    func continuationResponse(_ id: ClientStateMachine.CommandID, line: String) {
        perform(machine.continuationResponse(id, line: line))
    }

    func endIdle(_ id: ClientStateMachine.CommandID) { perform(machine.endIdle(id)) }

    /// TLS is in place after STARTTLS; responses may flow again.
    func tlsStarted() {
        discardUntilTLS = false
        if let context { armDeadline(context: context, waitingFor: "a reply") }
    }

    func resumeReading() {
        guard readPaused, let context else { return }
        readPaused = false
        pausedDeadlineSpent = false
        if pendingRead {
            pendingRead = false
            context.read()
        }
        armDeadline(context: context, waitingFor: "a reply")
    }

    // MARK: Internals

    private func currentActivity() -> String {
        machine.phase == .awaitingGreeting ? "the greeting" : "the session"
    }

    private func process(context: ChannelHandlerContext) {
        while failed == nil, !discardUntilTLS {
            let event: ResponseEvent?
            do {
                event = try parser.next()
            } catch {
                fail(IMAPErrors.protocolError(host: host, error.description), context: context)
                return
            }
            guard let event else { break }
            perform(machine.receive(event))
        }
        armDeadline(context: context, waitingFor: "a reply")
    }

    private func perform(_ actions: [ClientStateMachine.Action]) {
        guard let context else { return }
        publishSnapshot()
        var wrote = false
        for action in actions {
            switch action {
            case .write(let b):
                context.write(wrapOutboundOut(b), promise: nil)
                wrote = true
            case .greeting(let s):
                greetingDone = true
                greeting.succeed(s)
            case .untagged(let u, let id):
                if let id, let sink = sinks[id] { _ = sink.push(.untagged(u)) }
            case .fetch(let ev, let id):
                if let id, let sink = sinks[id], sink.push(.fetch(ev)), !readPaused {
                    readPaused = true
                    pausedDeadlineSpent = false
                }
            case .continuation(let id, let text):
                _ = sinks[id]?.push(.continuation(text))
            case .readyForBody(let id):
                _ = sinks[id]?.push(.readyForBody)
            case .completed(let id, let status):
                _ = sinks.removeValue(forKey: id)?.push(.completed(status))
            case .startTLS:
                // Bytes after the OK arrived before TLS: never trust them.
                let dropped = parser.discardBufferedBytes()
                if dropped > 0 { logger.warning("dropped \(dropped) plaintext bytes sent after the STARTTLS reply") }
                discardUntilTLS = true
            case .bye(let s):
                snapshot.withLockedValue { $0.lastBye = s }
                if !greetingDone {
                    greetingDone = true
                    greeting.fail(MailError(.connection, scope: .account, retryable: true, "\(host) refused the connection: \(s.text)"))
                }
            case .protocolError(let detail):
                fail(IMAPErrors.protocolError(host: host, detail), context: context)
                return
            }
        }
        if wrote {
            context.flush()
            armDeadline(context: context, waitingFor: "a reply")
        }
    }

    /// Publishes the machine's state before any waiter is woken, so that a
    /// caller resuming after a reply sees what that reply changed.
    private func publishSnapshot() {
        let m = machine
        snapshot.withLockedValue {
            $0.capabilities = m.capabilities
            $0.enabled = m.enabled
            $0.phase = m.phase
            $0.encodingOptions = m.encodingOptions
        }
    }

    private func fail(_ error: MailError, context: ChannelHandlerContext) {
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: MailError) {
        if failed == nil { failed = error }
        deadlineTask?.cancel()
        if !greetingDone {
            greetingDone = true
            greeting.fail(error)
        }
        _ = machine.connectionClosed()
        let all = sinks
        sinks.removeAll()
        for sink in all.values { sink.fail(error) }
    }

    /// (Re)arms the response deadline while something waits for the server.
    private func armDeadline(context: ChannelHandlerContext, waitingFor what: String) {
        deadlineTask?.cancel()
        deadlineTask = nil
        guard failed == nil else { return }
        let waiting = machine.phase == .awaitingGreeting || !machine.isQuiet || discardUntilTLS
        guard waiting else { return }
        let timeout = responseTimeout
        let host = self.host
        let handler = self
        deadlineTask = context.eventLoop.scheduleTask(in: timeout.timeAmount) {
            guard let ctx = handler.context else { return }
            // The TLS handshake after STARTTLS has its own deadline, which closes the channel.
            if handler.discardUntilTLS { return }
            if handler.readPaused {
                // A caller that is slow to consume is not the server's fault: it
                // gets one more period. One that took nothing for that long has
                // stopped taking (it gave up on a stream it left unread), and with
                // reading paused every later reply would be waited for forever.
                if !handler.pausedDeadlineSpent {
                    handler.pausedDeadlineSpent = true
                    handler.armDeadline(context: ctx, waitingFor: what)
                    return
                }
                handler.logger.debug("reading stayed paused past the deadline", metadata: ["host": "\(host)"])
                handler.fail(deadlineError(host: host, waitingFor: "the caller to take the data read so far (reading was paused)",
                                           after: timeout), context: ctx)
                return
            }
            handler.logger.debug("response deadline passed", metadata: ["host": "\(host)"])
            handler.fail(deadlineError(host: host, waitingFor: what, after: timeout), context: ctx)
        }
    }
}

import Logging
import MailModel
import MailNet
import NIOCore
import POP3Core

/// Carries out what `POP3ConnectionStateMachine` decides; nothing more. Lives
/// on the channel's event loop; the async side reaches it through
/// `NIOLoopBound`. The channel must run with autoRead off: reads are asked for
/// only when the consumer has room (backpressure).
final class POP3ChannelHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var machine: POP3ConnectionStateMachine
    private var context: ChannelHandlerContext?
    private var pending: EventLoopPromise<[POP3ResponseEvent]>?
    private var timer: Scheduled<Void>?
    private let logger: Logger
    private var redactor = ProtocolLogRedactor(.pop3)

    init(configuration: POP3ConnectionStateMachine.Configuration, logger: Logger) {
        machine = POP3ConnectionStateMachine(configuration: configuration)
        self.logger = logger
    }

    var discardedAfterSTLS: Int { machine.discardedAfterSTLS }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { perform(machine.channelActive()) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        timer?.cancel()
    }

    func channelActive(context: ChannelHandlerContext) {
        perform(machine.channelActive())
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        perform(machine.channelRead(unwrapInboundIn(data)))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        perform(machine.channelReadComplete())
    }

    func channelInactive(context: ChannelHandlerContext) {
        perform(machine.channelInactive())
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        let mapped = (error as? MailError) ?? MailNetErrors.map(error, host: machine.configuration.host, port: machine.configuration.port,
                                                                  during: "the POP3 session")
        perform(machine.errorCaught(mapped))
    }

    // MARK: Called by the session, on the event loop

    func send(_ commands: [POP3Command]) throws {
        if logger.logLevel <= .trace {
            for c in commands { logger.trace("C: \(redactor.clientLine(c.description))") }
        }
        perform(try machine.send(commands))
    }

    func next(loop: EventLoop) -> EventLoopFuture<[POP3ResponseEvent]> {
        let promise = loop.makePromise(of: [POP3ResponseEvent].self)
        if let old = pending {
            old.fail(MailError(.usage, scope: .local, "two readers on one POP3 connection"))
        }
        pending = promise
        // Works after the channel closed too: the machine still holds what
        // was parsed and the reason the connection ended.
        perform(machine.consumerNext())
        return promise.futureResult
    }

    func tlsEstablished() {
        perform(machine.tlsEstablished())
    }

    private func deadlinePassed() {
        timer = nil
        perform(machine.timerFired())
    }

    // MARK: Actions

    private func perform(_ actions: [POP3ConnectionStateMachine.Action]) {
        for action in actions {
            switch action {
            case .write(let bytes):
                context?.writeAndFlush(wrapOutboundOut(bytes), promise: nil)
            case .read:
                context?.read()
            case .armTimer:
                timer?.cancel()
                if let context {
                    let loop = context.eventLoop
                    let bound = NIOLoopBound(self, eventLoop: loop)
                    timer = loop.scheduleTask(in: machine.configuration.responseTimeout.timeAmount) {
                        bound.value.deadlinePassed()
                    }
                }
            case .cancelTimer:
                timer?.cancel()
                timer = nil
            case .deliver(let events):
                if logger.logLevel <= .trace {
                    for e in events {
                        if case .status(let s) = e { logger.trace("S: \(redactor.serverLine(s.description))") }
                    }
                }
                let p = pending
                pending = nil
                p?.succeed(events)
            case .finish(let error):
                let p = pending
                pending = nil
                if let error { p?.fail(error) } else { p?.succeed([]) }
            case .close:
                timer?.cancel()
                timer = nil
                context?.close(promise: nil)
            }
        }
    }
}


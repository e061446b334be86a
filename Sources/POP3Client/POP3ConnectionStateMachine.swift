import MailModel
import MailNet
import NIOCore
import POP3Core

/// The connection's state, as a value: bytes and consumer requests go in,
/// actions come out. The channel handler (`POP3ChannelHandler`) only carries
/// the actions out, so this is tested without sockets.
///
/// It owns the reply parser and the queue of commands in flight (pipelining),
/// buffers parsed events up to a high-water mark (backpressure: no socket read
/// is asked for while the consumer is behind), arms the response deadline only
/// while the consumer is actually waiting for the server, and after a positive
/// STLS reply throws away every plaintext byte until TLS is up (RFC 2595 §4).
public struct POP3ConnectionStateMachine: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        public var responseTimeout: Duration
        /// Parsed events buffered at which socket reads stop; they resume
        /// when the consumer takes them (it takes all buffered at once).
        public var highWatermark: Int
        public var limits: POP3ParserLimits

        public init(host: String, port: Int = 0, responseTimeout: Duration, highWatermark: Int = 16,
                    limits: POP3ParserLimits = POP3ParserLimits()) {
            self.host = host
            self.port = port
            self.responseTimeout = responseTimeout
            self.highWatermark = max(1, highWatermark)
            self.limits = limits
        }
    }

    public enum Action: Sendable, Equatable {
        /// Write and flush these bytes.
        case write(ByteBuffer)
        /// Ask the channel for more bytes.
        case read
        /// Start (or restart) the response deadline.
        case armTimer
        case cancelTimer
        /// Complete the consumer's pending request with these events (empty
        /// only together with `end` or an error).
        case deliver([POP3ResponseEvent])
        /// The consumer's pending request ends: nil when the connection closed
        /// cleanly with nothing outstanding, else the error.
        case finish(MailError?)
        case close
    }

    enum Phase: Sendable, Equatable {
        case active
        /// STLS was accepted; plaintext is discarded until `tlsEstablished()`.
        case awaitingTLS
        /// The connection failed; the error is handed to the consumer after
        /// what was already parsed.
        case failed(MailError)
        /// The connection closed.
        case closed(MailError?)
    }

    public let configuration: Configuration
    private(set) var phase: Phase = .active
    private var parser: POP3ResponseParser
    private var leftover = ByteBuffer()
    private var buffered: [POP3ResponseEvent] = []
    /// For each reply still expected, whether its command was STLS.
    private var inFlight: [Bool] = [false] // the greeting
    private var inFlightHead = 0
    private var consumerWaiting = false
    private var readInFlight = false
    /// Plaintext bytes thrown away after STLS (a possible injection).
    public private(set) var discardedAfterSTLS = 0

    public init(configuration: Configuration) {
        self.configuration = configuration
        parser = POP3ResponseParser(limits: configuration.limits)
        parser.expect(.singleLine) // the greeting
    }

    /// Replies the server still owes.
    public var outstandingReplies: Int { parser.outstanding }

    // MARK: Inputs

    public mutating func channelActive() -> [Action] {
        requestRead()
    }

    /// Encodes and sends commands; with more than one they are pipelined.
    public mutating func send(_ commands: [POP3Command]) throws -> [Action] {
        switch phase {
        case .failed(let e), .closed(let e?): throw e
        case .closed(nil): throw MailError(.connection, scope: .account, retryable: true, "the connection to \(configuration.host) is closed")
        case .awaitingTLS: throw MailError(.tls, scope: .account, "a command was sent before TLS was established")
        case .active: break
        }
        var out = ByteBuffer()
        for c in commands {
            do { try c.write(to: &out) } catch let e as POP3ParseError {
                throw MailError(.usage, scope: .account, "cannot send \(c): \(e.message)")
            }
        }
        for c in commands {
            parser.expect(c.responseKind)
            inFlight.append(c == .stls)
        }
        var actions: [Action] = [.write(out)]
        if consumerWaiting { actions.append(.armTimer) }
        return actions
    }

    /// The consumer asks for the next events.
    public mutating func consumerNext() -> [Action] {
        // A second request while one waits replaces it (the handler fails the
        // old one); the new one is answered when events arrive.
        if consumerWaiting { return [] }
        if !buffered.isEmpty {
            let events = buffered
            buffered.removeAll(keepingCapacity: true)
            return [.deliver(events)] + requestRead()
        }
        switch phase {
        case .failed(let e):
            return [.finish(e)]
        case .closed(let e):
            return [.finish(e)]
        case .active, .awaitingTLS:
            consumerWaiting = true
            return [.armTimer] + requestRead()
        }
    }

    public mutating func channelRead(_ data: ByteBuffer) -> [Action] {
        switch phase {
        case .awaitingTLS:
            discardedAfterSTLS += data.readableBytes
            return []
        case .failed, .closed:
            return []
        case .active:
            break
        }
        var input: ByteBuffer
        if leftover.readableBytes > 0 {
            var d = data
            leftover.writeBuffer(&d)
            input = leftover
            leftover = ByteBuffer()
        } else {
            input = data
        }
        do {
            parsing: while let event = try parser.next(&input) {
                let before = outstandingBefore(event)
                buffered.append(event)
                if before.completesReply {
                    let wasSTLS = inFlight[inFlightHead]
                    inFlightHead += 1
                    if inFlightHead == inFlight.count {
                        inFlight.removeAll(keepingCapacity: true)
                        inFlightHead = 0
                    }
                    if wasSTLS, case .status(let s) = event, s.isOK {
                        // RFC 2595 §4: nothing the server sent in plaintext after
                        // the +OK may be taken as a reply.
                        discardedAfterSTLS += input.readableBytes
                        input.moveReaderIndex(forwardBy: input.readableBytes)
                        phase = .awaitingTLS
                        break parsing
                    }
                }
            }
        } catch let e as POP3ParseError {
            return fail(MailError(.protocolViolation, scope: .account, retryable: true,
                                  "\(configuration.host) sent a malformed POP3 reply: \(e.message)"))
        } catch {
            return fail(MailError(.protocolViolation, scope: .account, retryable: true, "\(configuration.host): \(error)"))
        }
        if input.readableBytes > 0 {
            input.discardReadBytes()
            leftover = input
        }
        return deliverIfWaiting()
    }

    public mutating func channelReadComplete() -> [Action] {
        readInFlight = false
        return requestRead()
    }

    /// The response deadline passed.
    public mutating func timerFired() -> [Action] {
        guard consumerWaiting else { return [] }
        return fail(deadlineError(host: configuration.host, waitingFor: "a POP3 reply", after: configuration.responseTimeout))
    }

    public mutating func tlsEstablished() -> [Action] {
        guard phase == .awaitingTLS else { return [] }
        phase = .active
        leftover = ByteBuffer()
        return requestRead()
    }

    public mutating func channelInactive() -> [Action] {
        readInFlight = false
        switch phase {
        case .failed, .closed: break
        case .active, .awaitingTLS:
            if parser.outstanding > 0 {
                let what = parser.inBody ? "in the middle of a reply" : "with \(parser.outstanding) repl\(parser.outstanding == 1 ? "y" : "ies") outstanding"
                phase = .closed(MailError(.connection, scope: .account, retryable: true,
                                          "\(configuration.host) closed the connection \(what)"))
            } else {
                phase = .closed(nil)
            }
        }
        return deliverIfWaiting()
    }

    public mutating func errorCaught(_ error: MailError) -> [Action] {
        fail(error)
    }

    // MARK: Helpers

    private struct Completion { var completesReply: Bool }

    /// Whether `event` (just parsed) completed a reply: the parser's queue
    /// head moved on. Worked out from the event itself.
    private func outstandingBefore(_ event: POP3ResponseEvent) -> Completion {
        switch event {
        case .continuation, .end: return Completion(completesReply: true)
        case .status: return Completion(completesReply: !parser.inBody)
        case .line, .chunk: return Completion(completesReply: false)
        }
    }

    private mutating func requestRead() -> [Action] {
        guard !readInFlight else { return [] }
        switch phase {
        case .failed, .closed: return []
        case .awaitingTLS:
            // The TLS handshake needs reads; plaintext that arrives is dropped.
            readInFlight = true
            return [.read]
        case .active:
            guard buffered.count < configuration.highWatermark || consumerWaiting else { return [] }
            readInFlight = true
            return [.read]
        }
    }

    private mutating func deliverIfWaiting() -> [Action] {
        guard consumerWaiting else { return [] }
        if !buffered.isEmpty {
            consumerWaiting = false
            let events = buffered
            buffered.removeAll(keepingCapacity: true)
            return [.cancelTimer, .deliver(events)] + requestRead()
        }
        switch phase {
        case .failed(let e), .closed(let e?):
            consumerWaiting = false
            return [.cancelTimer, .finish(e)]
        case .closed(nil):
            consumerWaiting = false
            return [.cancelTimer, .finish(nil)]
        case .active, .awaitingTLS:
            return []
        }
    }

    private mutating func fail(_ error: MailError) -> [Action] {
        switch phase {
        case .failed, .closed: return []
        default: break
        }
        phase = .failed(error)
        return deliverIfWaiting() + [.close]
    }
}

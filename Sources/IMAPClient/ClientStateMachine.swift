
import IMAPCore
import NIOCore

/// What the client asks the connection to send. APPEND and AUTHENTICATE are
/// their own cases because bytes from the caller follow the command.
public enum OutboundCommand: Sendable {
    case command(Command)
    /// APPEND of one message; the caller streams `message.size` bytes after
    /// `readyForBody`, then calls `finishBody`.
    case append(MailboxName, AppendWriter.Message)
    /// AUTHENTICATE; each "+" challenge is handed to the caller, who answers with `continuationResponse`.
    case authenticate(mechanism: String, initialResponse: [UInt8]?)
    /// IDLE; the caller ends it with `endIdle`.
    case idle

    var name: String {
        switch self {
        case .command(let c): return c.name
        case .append: return "APPEND"
        case .authenticate(let m, _): return "AUTHENTICATE " + m
        case .idle: return "IDLE"
        }
    }
}

/// The connection's protocol state as a value type: tags, the pipeline of
/// commands in flight, who owns the outbound byte stream (a command waiting for
/// "+", an APPEND body being streamed), capabilities and the session phase.
/// Every method returns the actions to carry out; nothing here does I/O, so it
/// is tested without sockets.
public struct ClientStateMachine: Sendable {
    public typealias CommandID = UInt64

    public enum Phase: Hashable, Sendable {
        case awaitingGreeting, notAuthenticated, authenticated, selected, loggingOut, closed
    }

    public enum Action: Sendable {
        /// Write these bytes (and flush).
        case write(ByteBuffer)
        /// The greeting arrived (OK or PREAUTH).
        case greeting(StatusResponse)
        /// An untagged response, delivered to the oldest command in flight (nil: none).
        case untagged(UntaggedResponse, CommandID?)
        /// A FETCH event, delivered to the oldest command in flight.
        case fetch(ResponseEvent, CommandID?)
        /// A "+" for a command that talks with the caller (AUTHENTICATE challenge, IDLE started).
        case continuation(CommandID, String)
        /// The APPEND may now stream its message bytes.
        case readyForBody(CommandID)
        /// The command finished with this status (OK, NO or BAD).
        case completed(CommandID, StatusResponse)
        /// STARTTLS was accepted: drop every byte buffered after the OK, then start TLS.
        case startTLS
        /// The server said BYE (the connection will close).
        case bye(StatusResponse)
        /// The server broke the protocol; close the connection and fail everything.
        case protocolError(String)
    }

    private struct InFlight: Sendable {
        var id: CommandID
        var tag: String
        var command: OutboundCommand
    }

    private enum Writer: Sendable {
        case idle
        /// Waiting for "+" before sending the next parts of a synchronising literal.
        case awaitingContinuation(CommandID, parts: [ByteBuffer], thenBody: Bool)
        /// An APPEND is streaming its body.
        case streamingBody(CommandID)
        /// A MULTIAPPEND between two messages: the command line is still open
        /// and the caller either sends another message or ends the command.
        case appendOpen(CommandID)
        /// AUTHENTICATE exchange until its tagged reply.
        case authenticating(CommandID)
        /// IDLE until the caller sends DONE.
        case idling(CommandID, started: Bool)
    }

    public private(set) var phase: Phase = .awaitingGreeting
    public private(set) var capabilities: Set<Capability> = []
    public private(set) var enabled: Set<Capability> = []
    public private(set) var selectedMailbox: MailboxName?
    /// Most commands that may be in flight at once.
    public var pipelineDepth: Int
    private let tagPrefix: String
    private var nextTag = 1
    private var inFlight = CircularBuffer<InFlight>()
    private var queue = CircularBuffer<(CommandID, OutboundCommand)>()
    private var writer = Writer.idle

    public init(pipelineDepth: Int = 16, tagPrefix: String = "M") {
        self.pipelineDepth = max(1, pipelineDepth)
        self.tagPrefix = tagPrefix
    }

    public var encodingOptions: EncodingOptions {
        EncodingOptions(capabilities: capabilities, utf8Enabled: enabled.contains(.utf8Accept))
    }

    public var inFlightCount: Int { inFlight.count }
    public var queuedCount: Int { queue.count }
    /// True when nothing is waiting for the server (an IDLE that started counts as quiet).
    public var isQuiet: Bool {
        if inFlight.isEmpty && queue.isEmpty { return true }
        if case .idling(_, true) = writer, inFlight.count == 1 { return true }
        return false
    }
    public var hasSelectedMailbox: Bool { phase == .selected }

    // MARK: - From the caller

    /// Queues a command; it is written as soon as the pipeline and the outbound stream allow.
    public mutating func submit(_ id: CommandID, _ command: OutboundCommand) -> [Action] {
        queue.append((id, command))
        return pump()
    }

    /// Message bytes of the APPEND that owns the outbound stream.
    public mutating func bodyChunk(_ id: CommandID, _ bytes: ByteBuffer) -> [Action] {
        guard case .streamingBody(let owner) = writer, owner == id else { return [] }
        return [.write(bytes)]
    }

    /// Ends the APPEND's message bytes; the command line ends and the next command may go.
    /// Also ends a MULTIAPPEND that is open between two messages.
    public mutating func finishBody(_ id: CommandID) -> [Action] {
        switch writer {
        case .streamingBody(let owner) where owner == id, .appendOpen(let owner) where owner == id:
            writer = .idle
            return [.write(AppendWriter.end())] + pump()
        default:
            return []
        }
    }

    /// Ends one message's bytes of a MULTIAPPEND (RFC 3502) but keeps the
    /// command open: the caller follows with `appendNext`, `finishBody` or `abortAppend`.
    public mutating func messageDone(_ id: CommandID) -> [Action] {
        guard case .streamingBody(let owner) = writer, owner == id else { return [] }
        writer = .appendOpen(id)
        return []
    }

    /// The next message of an open MULTIAPPEND: its flags, date and literal
    /// header; `readyForBody` follows at once (LITERAL+/LITERAL-) or after "+".
    public mutating func appendNext(_ id: CommandID, _ message: AppendWriter.Message) -> [Action] {
        guard case .appendOpen(let owner) = writer, owner == id else { return [] }
        let enc = AppendWriter.messageHeader(tag: nil, mailbox: MailboxName(bytes: []), message: message, options: encodingOptions)
        if enc.parts.count > 1 {
            writer = .awaitingContinuation(id, parts: Array(enc.parts.dropFirst()).filter { $0.readableBytes > 0 }, thenBody: true)
            return [.write(enc.parts[0])]
        }
        writer = .streamingBody(id)
        return [.write(enc.parts[0]), .readyForBody(id)]
    }

    /// Ends an open APPEND after a complete literal with bytes no grammar
    /// accepts, so that the server refuses (BAD) the whole command and stores
    /// nothing of it, while the session stays in step.
    public mutating func abortAppend(_ id: CommandID) -> [Action] {
        switch writer {
        case .streamingBody(let owner) where owner == id, .appendOpen(let owner) where owner == id:
            writer = .idle
            return [.write(AppendWriter.abort())] + pump()
        default:
            return []
        }
    }

    /// A line in answer to an AUTHENTICATE challenge (already base64, without CRLF).
    public mutating func continuationResponse(_ id: CommandID, line: String) -> [Action] {
        guard case .authenticating(let owner) = writer, owner == id else { return [] }
        return [.write(ByteBuffer(string: line + "\r\n"))]
    }

    /// Ends IDLE with DONE.
    public mutating func endIdle(_ id: CommandID) -> [Action] {
        guard case .idling(let owner, _) = writer, owner == id else { return [] }
        writer = .idle
        return [.write(ByteBuffer(string: "DONE\r\n"))] + pump()
    }

    /// The connection closed; commands still queued or in flight are returned so their callers can fail.
    public mutating func connectionClosed() -> [CommandID] {
        phase = .closed
        let ids = inFlight.map(\.id) + queue.map(\.0)
        inFlight.removeAll()
        queue.removeAll()
        writer = .idle
        return ids
    }

    private mutating func pump() -> [Action] {
        var actions: [Action] = []
        while case .idle = writer, inFlight.count < pipelineDepth, let (id, command) = queue.first {
            // Nothing may be written before the greeting, and STARTTLS must be
            // answered before anything else goes out.
            if phase == .awaitingGreeting { break }
            if let last = inFlight.last, case .command(.startTLS) = last.command { break }
            if case .command(.startTLS) = command, !inFlight.isEmpty { break }
            queue.removeFirst()
            let tag = tagPrefix + String(nextTag)
            nextTag += 1
            inFlight.append(InFlight(id: id, tag: tag, command: command))
            let options = encodingOptions
            switch command {
            case .command(let c):
                let enc = c.encode(tag: tag, options: options)
                actions.append(.write(enc.parts[0]))
                if enc.parts.count > 1 {
                    writer = .awaitingContinuation(id, parts: Array(enc.parts.dropFirst()), thenBody: false)
                }
                if case .logout = c { phase = .loggingOut }
            case .append(let mailbox, let message):
                let enc = AppendWriter.messageHeader(tag: tag, mailbox: mailbox, message: message, options: options)
                actions.append(.write(enc.parts[0]))
                if enc.parts.count > 1 {
                    // Everything up to the literal's header went; the rest waits for "+".
                    let rest = Array(enc.parts.dropFirst()).filter { $0.readableBytes > 0 }
                    writer = .awaitingContinuation(id, parts: rest, thenBody: true)
                } else {
                    writer = .streamingBody(id)
                    actions.append(.readyForBody(id))
                }
            case .authenticate(let mechanism, let ir):
                let enc = Command.authenticate(mechanism: mechanism, initialResponse: ir).encode(tag: tag, options: options)
                actions.append(.write(enc.parts[0]))
                writer = .authenticating(id)
            case .idle:
                actions.append(.write(ByteBuffer(string: tag + " IDLE\r\n")))
                writer = .idling(id, started: false)
            }
        }
        return actions
    }

    // MARK: - From the server

    public mutating func receive(_ event: ResponseEvent) -> [Action] {
        switch event {
        case .response(.tagged(let tag, let status)):
            return receiveTagged(tag, status)
        case .response(.continuation(let text)):
            return receiveContinuation(text)
        case .response(.untagged(let u)):
            return receiveUntagged(u)
        case .fetchStart, .fetchAttribute, .streamingBegin, .streamingBytes, .streamingEnd, .fetchEnd:
            if phase == .awaitingGreeting { return [.protocolError("FETCH data before the greeting")] }
            return [.fetch(event, inFlight.first?.id)]
        }
    }

    private mutating func noteCode(_ code: ResponseCode?) {
        if case .capability(let caps)? = code { capabilities = Set(caps) }
    }

    private mutating func receiveUntagged(_ u: UntaggedResponse) -> [Action] {
        if phase == .awaitingGreeting {
            guard case .condition(let s) = u else { return [.protocolError("the server did not start with a greeting")] }
            noteCode(s.code)
            switch s.kind {
            case .ok: phase = .notAuthenticated
            case .preauth: phase = .authenticated
            case .bye: phase = .closed; return [.bye(s)]
            case .no, .bad: return [.protocolError("the greeting was \(s.kind.rawValue): \(s.text)")]
            }
            return [.greeting(s)] + pump()
        }
        switch u {
        case .capability(let caps): capabilities = Set(caps)
        case .enabled(let caps): enabled.formUnion(caps)
        case .condition(let s):
            noteCode(s.code)
            if s.kind == .bye {
                if phase != .loggingOut { phase = .closed }
                return [.bye(s)]
            }
        default: break
        }
        return [.untagged(u, inFlight.first?.id)]
    }

    private mutating func receiveContinuation(_ text: String) -> [Action] {
        switch writer {
        case .awaitingContinuation(let id, var parts, let thenBody):
            var actions: [Action] = []
            if !parts.isEmpty { actions.append(.write(parts.removeFirst())) }
            // Another synchronising literal inside the same command waits again.
            let moreLiterals = parts.count > 0
            if moreLiterals {
                writer = .awaitingContinuation(id, parts: parts, thenBody: thenBody)
            } else if thenBody {
                writer = .streamingBody(id)
                actions.append(.readyForBody(id))
            } else {
                writer = .idle
                actions += pump()
            }
            return actions
        case .authenticating(let id):
            return [.continuation(id, text)]
        case .idling(let id, _):
            writer = .idling(id, started: true)
            return [.continuation(id, text)]
        case .idle, .streamingBody, .appendOpen:
            return [.protocolError("unexpected continuation request \"+ \(text)\"")]
        }
    }

    private mutating func receiveTagged(_ tag: String, _ status: StatusResponse) -> [Action] {
        guard let index = inFlight.firstIndex(where: { $0.tag == tag }) else {
            return [.protocolError("a reply for the unknown tag \(tag)")]
        }
        let done = inFlight.remove(at: index)
        noteCode(status.code)
        var actions: [Action] = []
        // A command that owned the outbound stream gives it back (a NO instead of "+" included).
        switch writer {
        case .awaitingContinuation(let id, _, _) where id == done.id: writer = .idle
        case .authenticating(let id) where id == done.id: writer = .idle
        case .idling(let id, _) where id == done.id: writer = .idle
        case .streamingBody(let id) where id == done.id, .appendOpen(let id) where id == done.id:
            // The server refused the APPEND before the body went; nothing more may be sent for it.
            writer = .idle
        default: break
        }
        if status.kind == .ok {
            switch done.command {
            case .command(.login), .authenticate:
                phase = .authenticated
                // Capabilities change after login; a server that does not send them gets asked.
                if case .capability? = status.code {} else { capabilities = [] }
            case .command(.select(let m, _, _)), .command(.examine(let m, _, _)):
                phase = .selected
                selectedMailbox = m
            case .command(.close), .command(.unselect):
                phase = .authenticated
                selectedMailbox = nil
            case .command(.startTLS):
                capabilities = []
                actions.append(.startTLS)
            case .command(.logout):
                phase = .closed
            default: break
            }
        } else if case .command(.select) = done.command {
            // A failed SELECT leaves no mailbox selected (RFC 3501 §6.3.1).
            if phase == .selected { phase = .authenticated; selectedMailbox = nil }
        } else if case .command(.examine) = done.command {
            if phase == .selected { phase = .authenticated; selectedMailbox = nil }
        }
        actions.append(.completed(done.id, status))
        return actions + pump()
    }
}

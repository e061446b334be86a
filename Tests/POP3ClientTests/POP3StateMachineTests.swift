import MailModel
import NIOCore
import POP3Core
import Testing
@testable import POP3Client

/// The connection state machine, driven without sockets.
@Suite struct POP3StateMachineTests {
    typealias M = POP3ConnectionStateMachine

    func machine(high: Int = 4) -> M {
        M(configuration: .init(host: "pop.example", responseTimeout: .seconds(5), highWatermark: high))
    }

    func delivered(_ actions: [M.Action]) -> [POP3ResponseEvent] {
        actions.flatMap { a -> [POP3ResponseEvent] in
            if case .deliver(let e) = a { return e }
            return []
        }
    }

    @Test func greetingThenCommand() throws {
        var m = machine()
        #expect(m.channelActive() == [.read])
        // The consumer waits for the greeting: the deadline is armed.
        #expect(m.consumerNext() == [.armTimer])
        let got = m.channelRead(ByteBuffer(string: "+OK ready\r\n"))
        #expect(got.first == .cancelTimer)
        #expect(delivered(got) == [.status(POP3StatusLine(isOK: true, text: "ready"))])
        let sent = try m.send([.user("alice")])
        #expect(sent == [.write(ByteBuffer(string: "USER alice\r\n"))])
        #expect(m.outstandingReplies == 1)
    }

    @Test func deadlineOnlyWhileWaiting() throws {
        var m = machine()
        _ = m.channelActive()
        // Nobody waits: a timer firing does nothing.
        #expect(m.timerFired() == [])
        _ = m.consumerNext()
        let fired = m.timerFired()
        guard case .finish(let e?) = fired.first(where: { if case .finish = $0 { return true }; return false }) else {
            Issue.record("expected the consumer to be failed, got \(fired)")
            return
        }
        #expect(e.kind == .connection && e.retryable && e.message.contains("did not answer in time"))
        #expect(fired.last == .close)
        #expect(throws: MailError.self) { _ = try m.send([.noop]) }
    }

    @Test func pipelinedRepliesAreBufferedUpToTheWatermark() throws {
        var m = machine(high: 2)
        _ = m.channelActive()
        _ = m.channelRead(ByteBuffer(string: "+OK\r\n"))
        _ = m.channelReadComplete()
        _ = try m.send([.noop, .noop, .noop])
        #expect(m.outstandingReplies == 3) // the greeting is parsed (buffered, unread)
        _ = m.channelRead(ByteBuffer(string: "+OK\r\n+OK\r\n+OK\r\n"))
        // Four events buffered, high-water mark 2: no further read is asked for.
        #expect(m.channelReadComplete() == [])
        let next = m.consumerNext()
        #expect(delivered(next).count == 4)
        #expect(next.contains(.read))
    }

    @Test func plaintextAfterSTLSIsDiscarded() throws {
        var m = machine()
        _ = m.channelActive()
        _ = m.channelRead(ByteBuffer(string: "+OK\r\n"))
        _ = try m.send([.stls])
        // An attacker appends a fake reply after the +OK.
        let actions = m.channelRead(ByteBuffer(string: "+OK begin TLS\r\n+OK injected\r\n"))
        #expect(delivered(actions).isEmpty) // nobody waiting yet
        let next = m.consumerNext()
        #expect(delivered(next) == [.status(POP3StatusLine(isOK: true)), .status(POP3StatusLine(isOK: true, text: "begin TLS"))])
        #expect(m.discardedAfterSTLS == "+OK injected\r\n".utf8.count)
        _ = m.channelRead(ByteBuffer(string: "+OK more plaintext\r\n"))
        #expect(m.discardedAfterSTLS == "+OK injected\r\n+OK more plaintext\r\n".utf8.count)
        #expect(throws: MailError.self) { _ = try m.send([.capa]) }
        _ = m.tlsEstablished()
        #expect(try m.send([.capa]).count == 1)
    }

    @Test func closeMidReplyIsARetryableError() throws {
        var m = machine()
        _ = m.channelActive()
        _ = m.channelRead(ByteBuffer(string: "+OK\r\n"))
        _ = try m.send([.retr(1)])
        _ = m.channelRead(ByteBuffer(string: "+OK\r\nhalf a mess"))
        _ = m.channelInactive()
        let first = m.consumerNext()
        #expect(delivered(first).count == 3)
        let second = m.consumerNext()
        guard case .finish(let e?) = second.first else {
            Issue.record("expected an error, got \(second)")
            return
        }
        #expect(e.kind == .connection && e.retryable && e.message.contains("middle of a reply"))
    }

    @Test func cleanCloseEndsQuietly() {
        var m = machine()
        _ = m.channelActive()
        _ = m.channelRead(ByteBuffer(string: "+OK\r\n"))
        _ = m.channelInactive()
        _ = m.consumerNext()
        #expect(m.consumerNext() == [.finish(nil)])
    }

    @Test func malformedReplyFailsTheConnection() {
        var m = machine()
        _ = m.channelActive()
        _ = m.consumerNext()
        let a = m.channelRead(ByteBuffer(string: "* OK IMAP4rev1 ready\r\n"))
        guard case .finish(let e?) = a.dropFirst().first else {
            Issue.record("expected an error, got \(a)")
            return
        }
        #expect(e.kind == .protocolViolation)
        #expect(a.last == .close)
    }
}

import IMAPClient
import IMAPCore
import NIOCore
import Testing

/// The connection state machine, driven without sockets.
struct ClientStateMachineTests {
    typealias A = ClientStateMachine.Action

    func writes(_ actions: [A]) -> [String] {
        actions.compactMap { if case .write(let b) = $0 { return String(buffer: b) }; return nil }
    }

    func completed(_ actions: [A]) -> [UInt64] {
        actions.compactMap { if case .completed(let id, _) = $0 { return id }; return nil }
    }

    func greeted(depth: Int = 16, caps: String = "IMAP4rev1 LITERAL+") -> ClientStateMachine {
        var m = ClientStateMachine(pipelineDepth: depth, tagPrefix: "A")
        _ = m.receive(.response(.untagged(.condition(StatusResponse(.ok, code: .capability(caps.split(separator: " ").map { Capability(String($0)) }), text: "ready")))))
        return m
    }

    func tagged(_ tag: String, _ kind: StatusResponse.Kind = .ok, code: ResponseCode? = nil) -> ResponseEvent {
        .response(.tagged(tag: tag, StatusResponse(kind, code: code, text: "done")))
    }

    @Test func nothingIsWrittenBeforeTheGreeting() {
        var m = ClientStateMachine(tagPrefix: "A")
        #expect(writes(m.submit(1, .command(.capability))).isEmpty)
        let a = m.receive(.response(.untagged(.condition(StatusResponse(.ok, text: "hi")))))
        #expect(writes(a) == ["A1 CAPABILITY\r\n"])
        #expect(m.phase == .notAuthenticated)
    }

    @Test func preauthGreetingIsAuthenticated() {
        var m = ClientStateMachine()
        _ = m.receive(.response(.untagged(.condition(StatusResponse(.preauth, text: "hi")))))
        #expect(m.phase == .authenticated)
    }

    @Test func byeGreetingAndGarbageBeforeGreeting() {
        var m = ClientStateMachine()
        let a = m.receive(.response(.untagged(.condition(StatusResponse(.bye, text: "go away")))))
        #expect(a.contains { if case .bye = $0 { return true }; return false })
        var m2 = ClientStateMachine()
        let b = m2.receive(.response(.untagged(.exists(3))))
        #expect(b.contains { if case .protocolError = $0 { return true }; return false })
    }

    @Test func pipelineDepthIsHonouredAndTagsMatchReplies() {
        var m = greeted(depth: 2)
        var out: [String] = []
        for i in 1...5 { out += writes(m.submit(UInt64(i), .command(.noop))) }
        #expect(out == ["A1 NOOP\r\n", "A2 NOOP\r\n"])
        #expect(m.inFlightCount == 2 && m.queuedCount == 3)
        // Replies may come for any tag in flight; each frees a slot.
        let a = m.receive(tagged("A2"))
        #expect(completed(a) == [2])
        #expect(writes(a) == ["A3 NOOP\r\n"])
        let b = m.receive(tagged("A1"))
        #expect(completed(b) == [1])
        #expect(writes(b) == ["A4 NOOP\r\n"])
    }

    @Test func untaggedDataGoesToTheOldestCommand() {
        var m = greeted()
        _ = m.submit(7, .command(.uidFetch(.all, [.uid])))
        _ = m.submit(8, .command(.noop))
        let a = m.receive(.response(.untagged(.exists(4))))
        guard case .untagged(.exists(4), 7)? = a.first else { Issue.record("\(a)"); return }
        let f = m.receive(.fetchStart(sequenceNumber: 1))
        guard case .fetch(.fetchStart(1), 7)? = f.first else { Issue.record("\(f)"); return }
        _ = m.receive(tagged("A1"))
        let b = m.receive(.response(.untagged(.recent(1))))
        guard case .untagged(.recent(1), 8)? = b.first else { Issue.record("\(b)"); return }
    }

    @Test func synchronisingLiteralWaitsForContinuationAndHoldsOtherCommands() {
        var m = greeted(caps: "IMAP4rev1")
        let a = m.submit(1, .command(.login(username: "u", password: "pässword")))
        #expect(writes(a) == ["A1 LOGIN u {9}\r\n"])
        #expect(writes(m.submit(2, .command(.noop))).isEmpty)
        let b = m.receive(.response(.continuation("go ahead")))
        #expect(writes(b) == ["pässword\r\n", "A2 NOOP\r\n"])
    }

    @Test func literalPlusAppendStreamsAtOnceAndHoldsTheNextCommand() {
        var m = greeted()
        let a = m.submit(1, .append(.inbox, AppendWriter.Message(flags: [.seen], internalDate: nil, size: 5)))
        #expect(writes(a) == ["A1 APPEND INBOX (\\Seen) {5+}\r\n"])
        #expect(a.contains { if case .readyForBody(1) = $0 { return true }; return false })
        #expect(writes(m.submit(2, .append(.inbox, AppendWriter.Message(flags: [], internalDate: nil, size: 3)))).isEmpty)
        #expect(writes(m.bodyChunk(1, ByteBuffer(string: "hello"))) == ["hello"])
        // Another command's bytes never land inside the literal.
        #expect(writes(m.bodyChunk(2, ByteBuffer(string: "xyz"))).isEmpty)
        let f = m.finishBody(1)
        #expect(writes(f) == ["\r\n", "A2 APPEND INBOX {3+}\r\n"])
        #expect(f.contains { if case .readyForBody(2) = $0 { return true }; return false })
        #expect(m.inFlightCount == 2)
    }

    @Test func synchronisingAppendWaitsAndARefusalFreesTheStream() {
        var m = greeted(caps: "IMAP4rev1")
        let a = m.submit(1, .append(MailboxName("Nope"), AppendWriter.Message(flags: [], internalDate: nil, size: 5)))
        #expect(writes(a) == ["A1 APPEND Nope {5}\r\n"])
        #expect(!a.contains { if case .readyForBody = $0 { return true }; return false })
        _ = m.submit(2, .command(.noop))
        let b = m.receive(tagged("A1", .no, code: .tryCreate))
        #expect(completed(b) == [1])
        #expect(writes(b) == ["A2 NOOP\r\n"])
        _ = m.receive(tagged("A2"))
        _ = m.submit(3, .append(.inbox, AppendWriter.Message(flags: [], internalDate: nil, size: 2)))
        let c = m.receive(.response(.continuation("ok")))
        #expect(c.contains { if case .readyForBody(3) = $0 { return true }; return false })
    }

    func ready(_ actions: [A], _ id: UInt64) -> Bool {
        actions.contains { if case .readyForBody(let i) = $0 { return i == id }; return false }
    }

    @Test func multiAppendKeepsOneCommandOpenAcrossMessages() {
        var m = greeted(caps: "IMAP4rev1 LITERAL+ MULTIAPPEND")
        let a = m.submit(1, .append(.inbox, AppendWriter.Message(flags: [.seen], internalDate: nil, size: 5)))
        #expect(writes(a) == ["A1 APPEND INBOX (\\Seen) {5+}\r\n"])
        #expect(writes(m.submit(2, .command(.noop))).isEmpty)
        #expect(writes(m.bodyChunk(1, ByteBuffer(string: "hello"))) == ["hello"])
        #expect(m.messageDone(1).isEmpty, "between messages nothing is written and the NOOP still waits")
        let b = m.appendNext(1, AppendWriter.Message(flags: [], internalDate: nil, size: 3))
        #expect(writes(b) == [" {3+}\r\n"])
        #expect(ready(b, 1))
        #expect(writes(m.bodyChunk(1, ByteBuffer(string: "abc"))) == ["abc"])
        let f = m.finishBody(1)
        #expect(writes(f) == ["\r\n", "A2 NOOP\r\n"])
    }

    @Test func multiAppendWithSynchronisingLiteralsWaitsForEachContinuation() {
        var m = greeted(caps: "IMAP4rev1 LITERAL- MULTIAPPEND")
        let a = m.submit(1, .append(.inbox, AppendWriter.Message(flags: [], internalDate: nil, size: 5000)))
        #expect(writes(a) == ["A1 APPEND INBOX {5000}\r\n"])
        #expect(!ready(a, 1))
        #expect(ready(m.receive(.response(.continuation("go"))), 1))
        _ = m.bodyChunk(1, ByteBuffer(repeating: 0x41, count: 5000))
        _ = m.messageDone(1)
        // LITERAL- allows a small one without waiting, not a big one.
        let small = m.appendNext(1, AppendWriter.Message(flags: [.flagged], internalDate: nil, size: 4096))
        #expect(writes(small) == [" (\\Flagged) {4096+}\r\n"])
        #expect(ready(small, 1))
        _ = m.messageDone(1)
        let big = m.appendNext(1, AppendWriter.Message(flags: [], internalDate: nil, size: 4097))
        #expect(writes(big) == [" {4097}\r\n"])
        #expect(!ready(big, 1))
        #expect(ready(m.receive(.response(.continuation("go"))), 1))
        // A refusal instead of "+" ends the whole command and frees the stream.
        _ = m.submit(2, .command(.noop))
        let r = m.receive(tagged("A1", .no, code: .overQuota))
        #expect(completed(r) == [1])
        #expect(writes(r) == ["A2 NOOP\r\n"])
    }

    @Test func abortedAppendEndsWithBytesTheServerMustRefuse() {
        var m = greeted(caps: "IMAP4rev1 LITERAL+")
        _ = m.submit(1, .append(.inbox, AppendWriter.Message(flags: [], internalDate: nil, size: 2)))
        _ = m.submit(2, .command(.noop))
        _ = m.bodyChunk(1, ByteBuffer(string: "ab"))
        #expect(writes(m.abortAppend(1)) == [" )\r\n", "A2 NOOP\r\n"])
        #expect(m.abortAppend(1).isEmpty, "only once, only by the owner")
    }

    @Test func authenticateExchange() {
        var m = greeted(caps: "IMAP4rev1 AUTH=XOAUTH2")
        let a = m.submit(1, .authenticate(mechanism: "XOAUTH2", initialResponse: Array("abc".utf8)))
        #expect(writes(a) == ["A1 AUTHENTICATE XOAUTH2 YWJj\r\n"])
        let b = m.receive(.response(.continuation("eyJzdGF0dXMiOiI0MDEifQ==")))
        guard case .continuation(1, "eyJzdGF0dXMiOiI0MDEifQ==")? = b.first else { Issue.record("\(b)"); return }
        #expect(writes(m.continuationResponse(1, line: "")) == ["\r\n"])
        let c = m.receive(tagged("A1", .no, code: .authenticationFailed))
        #expect(completed(c) == [1])
        #expect(m.phase == .notAuthenticated)
        _ = m.submit(2, .authenticate(mechanism: "PLAIN", initialResponse: nil))
        _ = m.receive(tagged("A2", .ok, code: .capability([.imap4rev1, .condStore])))
        #expect(m.phase == .authenticated)
        #expect(m.capabilities.contains(.condStore))
    }

    @Test func idleStartsAndEndsWithDone() {
        var m = greeted()
        #expect(writes(m.submit(1, .idle)) == ["A1 IDLE\r\n"])
        #expect(!m.isQuiet)
        let a = m.receive(.response(.continuation("idling")))
        guard case .continuation(1, _)? = a.first else { Issue.record("\(a)"); return }
        #expect(m.isQuiet)
        #expect(writes(m.submit(2, .command(.noop))).isEmpty)
        let exists = m.receive(.response(.untagged(.exists(5))))
        guard case .untagged(.exists(5), 1)? = exists.first else { Issue.record("\(exists)"); return }
        #expect(writes(m.endIdle(1)) == ["DONE\r\n", "A2 NOOP\r\n"])
    }

    @Test func startTLSHoldsLaterCommandsAndAsksForTheHandshake() {
        var m = greeted(caps: "IMAP4rev1 STARTTLS")
        #expect(writes(m.submit(1, .command(.startTLS))) == ["A1 STARTTLS\r\n"])
        #expect(writes(m.submit(2, .command(.capability))).isEmpty)
        let a = m.receive(tagged("A1"))
        guard case .startTLS? = a.first else { Issue.record("\(a)"); return }
        #expect(m.capabilities.isEmpty)
        #expect(writes(a) == ["A2 CAPABILITY\r\n"])
    }

    @Test func selectTracksTheSelectedState() {
        var m = greeted()
        _ = m.submit(1, .command(.select(MailboxName("Work"))))
        _ = m.receive(tagged("A1", .ok, code: .readWrite))
        #expect(m.phase == .selected)
        #expect(m.selectedMailbox == MailboxName("Work"))
        _ = m.submit(2, .command(.select(MailboxName("Gone"))))
        _ = m.receive(tagged("A2", .no))
        #expect(m.phase == .authenticated)
        #expect(m.selectedMailbox == nil)
    }

    @Test func protocolViolations() {
        var m = greeted()
        let a = m.receive(tagged("Z9"))
        #expect(a.contains { if case .protocolError = $0 { return true }; return false })
        let b = m.receive(.response(.continuation("why")))
        #expect(b.contains { if case .protocolError = $0 { return true }; return false })
    }

    @Test func byeMidSessionAndClose() {
        var m = greeted()
        _ = m.submit(1, .command(.noop))
        _ = m.submit(2, .command(.noop))
        let a = m.receive(.response(.untagged(.condition(StatusResponse(.bye, text: "shutting down")))))
        #expect(a.contains { if case .bye = $0 { return true }; return false })
        #expect(Set(m.connectionClosed()) == [1, 2])
        #expect(m.phase == .closed)
    }

    @Test func enabledAndUTF8ChangeEncoding() {
        var m = greeted(caps: "IMAP4rev1 UTF8=ACCEPT ENABLE")
        _ = m.submit(1, .command(.enable([.utf8Accept])))
        _ = m.receive(.response(.untagged(.enabled([.utf8Accept]))))
        _ = m.receive(tagged("A1"))
        #expect(m.encodingOptions.utf8Accept)
        #expect(writes(m.submit(2, .command(.select(MailboxName("Entwürfe", utf8: true))))) == ["A2 SELECT \"Entwürfe\"\r\n"])
    }
}

import MailModel
import NIOCore

/// A server response that is not a FETCH (FETCH arrives as a run of events
/// so that message bytes can stream).
///
///     response        = *(continue-req / response-data) response-done
///     continue-req    = "+" SP (resp-text / base64) CRLF
///     response-data   = "*" SP (resp-cond-state / resp-cond-bye / mailbox-data / message-data / capability-data /
///                       enable-data / id-response / namespace-response / esearch-response) CRLF
///     response-tagged = tag SP resp-cond-state CRLF
///     greeting        = "*" SP (resp-cond-auth / resp-cond-bye) CRLF
///     mailbox-data    = "FLAGS" SP flag-list / "LIST" SP mailbox-list / "LSUB" SP mailbox-list /
///                       "SEARCH" *(SP nz-number) / "STATUS" SP mailbox SP "(" [status-att-list] ")" /
///                       number SP "EXISTS" / number SP "RECENT"
///     message-data    = nz-number SP ("EXPUNGE" / ("FETCH" SP msg-att))
///     expunged-resp   = "VANISHED" [SP "(EARLIER)"] SP known-uids           ; RFC 7162
///     enable-data     = "ENABLED" *(SP capability)                          ; RFC 5161
public enum Response: Hashable, Sendable {
    case tagged(tag: String, StatusResponse)
    case untagged(UntaggedResponse)
    /// The text (or base64 challenge) after "+ ".
    case continuation(String)
}

public enum UntaggedResponse: Hashable, Sendable {
    /// OK, NO, BAD, BYE or PREAUTH, including the greeting.
    case condition(StatusResponse)
    case capability([Capability])
    case list(MailboxListItem)
    case lsub(MailboxListItem)
    case status(MailboxName, MailboxStatus)
    case flags([Flag])
    case exists(UInt32)
    case recent(UInt32)
    case expunge(UInt32)
    case search(SearchResponse)
    case esearch(ExtendedSearchResponse)
    case vanished(earlier: Bool, SequenceSet)
    case enabled([Capability])
    case id(IDParameters)
    case namespace(NamespaceResponse)
    /// A response mailferry does not use, by name.
    case other(name: String)
}

/// What the parser hands out, in wire order.
public enum ResponseEvent: Hashable, Sendable {
    case response(Response)
    /// `* n FETCH (` — attributes and streamed bodies follow until `fetchEnd`.
    case fetchStart(sequenceNumber: UInt32)
    case fetchAttribute(FetchAttribute)
    /// A message part of `byteCount` bytes follows as `streamingBytes` chunks (none if 0), then `streamingEnd`.
    case streamingBegin(StreamingKind, byteCount: Int64)
    case streamingBytes(ByteBuffer)
    case streamingEnd
    case fetchEnd
}

extension Response {
    /// Writes the response as a server would (for fake servers and round-trip tests).
    public func write(to out: inout ByteBuffer) {
        switch self {
        case .tagged(let tag, let s):
            out.writeString(tag + " ")
            s.write(to: &out)
        case .continuation(let t):
            out.writeString("+ " + t)
        case .untagged(let u):
            out.writeString("* ")
            u.write(to: &out)
        }
        out.writeString("\r\n")
    }
}

extension UntaggedResponse {
    func write(to out: inout ByteBuffer) {
        switch self {
        case .condition(let s): s.write(to: &out)
        case .capability(let c): out.writeString("CAPABILITY"); Capability.writeList(c, to: &out)
        case .list(let l): out.writeString("LIST "); l.write(to: &out)
        case .lsub(let l): out.writeString("LSUB "); l.write(to: &out)
        case .status(let m, let s):
            out.writeString("STATUS ")
            var w = CommandWriter.forResponse()
            m.write(to: &w)
            out.writeBuffer(&w.buffer)
            out.writeString(" ")
            s.write(to: &out)
        case .flags(let f): out.writeString("FLAGS "); FlagList.write(f, to: &out)
        case .exists(let n): out.writeString("\(n) EXISTS")
        case .recent(let n): out.writeString("\(n) RECENT")
        case .expunge(let n): out.writeString("\(n) EXPUNGE")
        case .search(let s): s.write(to: &out)
        case .esearch(let e): e.write(to: &out)
        case .vanished(let earlier, let set): out.writeString(earlier ? "VANISHED (EARLIER) \(set)" : "VANISHED \(set)")
        case .enabled(let c): out.writeString("ENABLED"); Capability.writeList(c, to: &out)
        case .id(let p):
            out.writeString("ID ")
            var w = CommandWriter.forResponse()
            p.write(to: &w)
            out.writeBuffer(&w.buffer)
        case .namespace(let n): n.write(to: &out)
        case .other(let name): out.writeString(name)
        }
    }
}

/// Writes FETCH responses as a server would, for fake servers and tests.
public enum FetchResponseWriter {
    public static func write(sequenceNumber: UInt32, attributes: [FetchAttribute],
                             body: (StreamingKind, [UInt8])? = nil, literal8: Bool = false, to out: inout ByteBuffer) {
        out.writeString("* \(sequenceNumber) FETCH (")
        for (i, a) in attributes.enumerated() {
            if i > 0 { out.writeString(" ") }
            a.write(to: &out)
        }
        if let (kind, bytes) = body {
            if !attributes.isEmpty { out.writeString(" ") }
            out.writeString("\(kind) \(literal8 ? "~" : ""){\(bytes.count)}\r\n")
            out.writeBytes(bytes)
        }
        out.writeString(")\r\n")
    }
}

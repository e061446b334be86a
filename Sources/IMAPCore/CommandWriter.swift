import NIOCore

/// How commands may be written on this connection.
public struct EncodingOptions: Sendable, Hashable {
    /// LITERAL+ (RFC 7888): every literal may be non-synchronising.
    public var literalPlus: Bool
    /// LITERAL- (RFC 7888): literals up to 4096 bytes may be non-synchronising.
    public var literalMinus: Bool
    /// UTF8=ACCEPT is enabled (RFC 6855): mailbox names travel as UTF-8 quoted strings.
    public var utf8Accept: Bool

    public init(literalPlus: Bool = false, literalMinus: Bool = false, utf8Accept: Bool = false) {
        self.literalPlus = literalPlus
        self.literalMinus = literalMinus
        self.utf8Accept = utf8Accept
    }

    public init(capabilities: Set<Capability>, utf8Enabled: Bool = false) {
        self.init(literalPlus: capabilities.contains(.literalPlus), literalMinus: capabilities.contains(.literalMinus),
                  utf8Accept: utf8Enabled)
    }

    /// Whether a literal of `size` bytes may be sent without waiting for "+".
    public func nonSynchronizing(size: Int64) -> Bool { literalPlus || (literalMinus && size <= 4096) }
}

/// A command as bytes, split where a synchronising literal makes the client
/// wait for the server's "+" before going on.
public struct EncodedCommand: Sendable {
    /// Send `parts[0]`, then wait for a continuation before each further part.
    public var parts: [ByteBuffer]
    public var needsContinuation: Bool { parts.count > 1 }
}

/// Builds command bytes; chooses atom, quoted string or literal for strings.
///
///     astring         = 1*ASTRING-CHAR / string
///     string          = quoted / literal
///     literal         = "{" number64 ["+"] "}" CRLF *CHAR8      ; "+" with LITERAL+/LITERAL-
///     literal8        = "~{" number64 ["+"] "}" CRLF *OCTET     ; RFC 3516
public struct CommandWriter: Sendable {
    public internal(set) var buffer = ByteBuffer()
    public internal(set) var finishedParts: [ByteBuffer] = []
    public let options: EncodingOptions
    /// Writing a server response: literals are plain `{n}` and never split.
    let serverSide: Bool

    public init(options: EncodingOptions) {
        self.options = options
        self.serverSide = false
    }

    /// A writer for server responses (fake servers, round-trip tests).
    static func forResponse() -> CommandWriter { CommandWriter(options: EncodingOptions(), serverSide: true) }

    private init(options: EncodingOptions, serverSide: Bool) {
        self.options = options
        self.serverSide = serverSide
    }

    public mutating func writeString(_ s: String) { buffer.writeString(s) }
    public mutating func writeBytes(_ b: [UInt8]) { buffer.writeBytes(b) }

    static func canBeQuoted(_ bytes: [UInt8], utf8: Bool) -> Bool {
        guard bytes.count <= 1000 else { return false }
        for b in bytes {
            if b == 0 || b == 0x0D || b == 0x0A { return false }
            if b >= 0x80 && !utf8 { return false }
        }
        if utf8, bytes.contains(where: { $0 >= 0x80 }), String(validatingUTF8: bytes.map { CChar(bitPattern: $0) } + [0]) == nil { return false }
        return true
    }

    public mutating func writeQuoted(_ s: String) {
        let bytes = Array(s.utf8)
        if Self.canBeQuoted(bytes, utf8: true) { writeQuotedBytes(bytes) } else { writeLiteral(bytes) }
    }

    mutating func writeQuotedBytes(_ bytes: [UInt8]) {
        buffer.writeInteger(UInt8(ascii: "\""))
        for b in bytes {
            if b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") { buffer.writeInteger(UInt8(ascii: "\\")) }
            buffer.writeInteger(b)
        }
        buffer.writeInteger(UInt8(ascii: "\""))
    }

    /// An atom when possible, else a quoted string, else a literal.
    public mutating func writeAString(_ bytes: [UInt8]) {
        if !bytes.isEmpty, bytes.allSatisfy(Cursor.isAStringChar) {
            buffer.writeBytes(bytes)
        } else if Self.canBeQuoted(bytes, utf8: options.utf8Accept) {
            writeQuotedBytes(bytes)
        } else {
            writeLiteral(bytes)
        }
    }

    /// A string that must not be an atom (LOGIN password: quoted or literal).
    public mutating func writeIMAPString(_ bytes: [UInt8]) {
        if Self.canBeQuoted(bytes, utf8: options.utf8Accept) { writeQuotedBytes(bytes) } else { writeLiteral(bytes) }
    }

    public mutating func writeLiteral(_ bytes: [UInt8]) {
        let sync = writeLiteralHeader(size: Int64(bytes.count), binary: false)
        _ = sync
        buffer.writeBytes(bytes)
    }

    /// Writes `{n}`/`{n+}`/`~{n}` CRLF. For a synchronising literal the bytes
    /// so far become a part of their own, and the client must wait for "+"
    /// before sending what follows. Returns true when synchronising.
    /// `synchronizing` asks for "+" even where LITERAL+/LITERAL- allow otherwise.
    @discardableResult
    public mutating func writeLiteralHeader(size: Int64, binary: Bool, synchronizing: Bool = false) -> Bool {
        if serverSide {
            buffer.writeString((binary ? "~{" : "{") + String(size) + "}\r\n")
            return false
        }
        let nonSync = !synchronizing && options.nonSynchronizing(size: size)
        buffer.writeString((binary ? "~{" : "{") + String(size) + (nonSync ? "+}" : "}") + "\r\n")
        if !nonSync {
            finishedParts.append(buffer)
            buffer = ByteBuffer()
        }
        return !nonSync
    }

    public mutating func finish() -> EncodedCommand {
        var parts = finishedParts
        parts.append(buffer)
        finishedParts = []
        buffer = ByteBuffer()
        return EncodedCommand(parts: parts)
    }
}

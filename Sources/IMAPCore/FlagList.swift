import MailModel
import NIOCore

/// Flag lists as they appear in FLAGS, PERMANENTFLAGS, FETCH and STORE.
///
///     flag-list       = "(" [flag *(SP flag)] ")"
///     flag            = "\Answered" / "\Flagged" / "\Deleted" / "\Seen" / "\Draft" / flag-keyword / flag-extension
///     flag-perm       = flag / "\*"
///     flag-fetch      = flag / "\Recent"
public enum FlagList {
    /// Parses a flag list; `\*` is returned as the flag `\*`.
    static func parse(_ c: inout Cursor) throws -> [Flag] {
        try c.parenthesized { c in Flag(try c.flagToken()) }
    }

    static func write(_ flags: [Flag], to out: inout ByteBuffer) {
        out.writeString("(" + flags.map(\.name).joined(separator: " ") + ")")
    }
}

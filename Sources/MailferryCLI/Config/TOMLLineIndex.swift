/// Finds the line on which each table and key of a TOML document is written,
/// so that configuration errors can name it. TOMLKit parses the values; this
/// only reads headers (`[a.b]`, `[[a]]`) and `key =` lines, skipping
/// multi-line strings and arrays.
struct TOMLLineIndex {
    /// "jobs.nightly" → line of `[jobs.nightly]`; "jobs.nightly.from" → line of `from =`.
    private(set) var lines: [String: Int] = [:]
    /// Table paths in the order they appear.
    private(set) var tableOrder: [String] = []

    init(_ text: String) {
        var table: [String] = []
        var inMultiline: String?   // the closing delimiter of a multi-line string
        var depth = 0              // open [ or { of a value spanning lines
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNo = i + 1
            let line = String(raw)
            if let close = inMultiline {
                if line.contains(close) { inMultiline = nil }
                continue
            }
            if depth > 0 {
                depth += TOMLLineIndex.bracketBalance(line)
                continue
            }
            let t = TOMLLineIndex.stripComment(line).trimmingCharacters(in: .whitespaces)
            if t.isEmpty { continue }
            if t.hasPrefix("[") {
                let isArray = t.hasPrefix("[[")
                let inner = t.dropFirst(isArray ? 2 : 1).prefix { $0 != "]" || false }
                table = TOMLLineIndex.splitKey(String(inner))
                let key = table.joined(separator: ".")
                if lines[key] == nil || isArray {
                    lines[key] = lineNo
                    tableOrder.append(key)
                }
                continue
            }
            guard let eq = TOMLLineIndex.firstUnquoted("=", in: t) else { continue }
            let keyPart = String(t[..<eq]).trimmingCharacters(in: .whitespaces)
            let value = String(t[t.index(after: eq)...]).trimmingCharacters(in: .whitespaces)
            let full = (table + TOMLLineIndex.splitKey(keyPart)).joined(separator: ".")
            if lines[full] == nil { lines[full] = lineNo }
            for delim in ["\"\"\"", "'''"] where value.hasPrefix(delim) {
                if !value.dropFirst(3).contains(delim) { inMultiline = delim }
            }
            if inMultiline == nil { depth = max(0, TOMLLineIndex.bracketBalance(value)) }
        }
    }

    func line(_ path: [String]) -> Int? {
        var p = path
        while !p.isEmpty {
            if let l = lines[p.joined(separator: ".")] { return l }
            p.removeLast()
        }
        return nil
    }

    /// `a."b.c".d` → ["a", "b.c", "d"].
    static func splitKey(_ s: String) -> [String] {
        var parts: [String] = []
        var cur = ""
        var quote: Character?
        for c in s {
            if let q = quote {
                if c == q { quote = nil } else { cur.append(c) }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if c == "." {
                parts.append(cur.trimmingCharacters(in: .whitespaces))
                cur = ""
            } else {
                cur.append(c)
            }
        }
        parts.append(cur.trimmingCharacters(in: .whitespaces))
        return parts
    }

    static func stripComment(_ line: String) -> String {
        guard let i = firstUnquoted("#", in: line) else { return line }
        return String(line[..<i])
    }

    static func firstUnquoted(_ ch: Character, in s: String) -> String.Index? {
        var quote: Character?
        var escaped = false
        var i = s.startIndex
        while i < s.endIndex {
            let c = s[i]
            if let q = quote {
                if escaped { escaped = false } else if c == "\\" && q == "\"" { escaped = true } else if c == q { quote = nil }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if c == ch {
                return i
            }
            i = s.index(after: i)
        }
        return nil
    }

    /// Opening minus closing brackets and braces outside strings and comments.
    static func bracketBalance(_ s: String) -> Int {
        var n = 0
        var quote: Character?
        var escaped = false
        for c in s {
            if let q = quote {
                if escaped { escaped = false } else if c == "\\" && q == "\"" { escaped = true } else if c == q { quote = nil }
                continue
            }
            switch c {
            case "\"", "'": quote = c
            case "#": return n
            case "[", "{": n += 1
            case "]", "}": n -= 1
            default: break
            }
        }
        return n
    }
}

import Foundation

import Foundation
import Testing
@testable import MailModel

struct FolderPathTests {
    @Test func componentsAndINBOX() throws {
        #expect(FolderPath("inbox")?.isInbox == true)
        #expect(FolderPath("Inbox/Sub")?.components == ["INBOX", "Sub"])
        #expect(FolderPath("Archive/inbox")?.components == ["Archive", "inbox"])  // only the top level is INBOX
        #expect(FolderPath("") == nil)
        #expect(FolderPath("a//b") == nil)
        #expect(FolderPath("/a") == nil)
        #expect(FolderPath(components: []) == nil)
        #expect(FolderPath(components: ["a/b"])?.components == ["a/b"])  // a slash inside a name is text
        #expect(FolderPath("a.b.c", separator: ".")?.components == ["a", "b", "c"])
        let p = try #require(FolderPath("A/B/C"))
        #expect(p.name == "C")
        #expect(p.parent == FolderPath("A/B"))
        #expect(p.ancestors == [FolderPath("A")!, FolderPath("A/B")!])
        #expect(p.appending("D") == FolderPath("A/B/C/D"))
        #expect(p.appending("") == nil)
        #expect(FolderPath("Case") != FolderPath("case"))
    }

    @Test func ordering() {
        let sorted = ["b", "INBOX/x", "a/b", "INBOX", "a"].compactMap { FolderPath($0) }.sorted()
        #expect(sorted.map(\.description) == ["INBOX", "INBOX/x", "a", "a/b", "b"])
    }

    @Test func codableAcceptsListsAndStrings() throws {
        let p = try #require(FolderPath(components: ["a/b", "Février"]))
        let data = try JSONEncoder().encode(p)
        #expect(try JSONDecoder().decode(FolderPath.self, from: data) == p)
        #expect(try JSONDecoder().decode(FolderPath.self, from: Data(#""Work/2024""#.utf8)) == FolderPath("Work/2024"))
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(FolderPath.self, from: Data(#""""#.utf8)) }
    }

    @Test(arguments: [
        ("*", "Work", true), ("*", "Work/Sub", false), ("**", "Work/Sub/x", true),
        ("Work/*", "Work/Sub", true), ("Work/*", "Work/Sub/x", false), ("Work/**", "Work/Sub/x", true),
        ("Work/**", "Work", false), ("W?rk", "Work", true), ("W?rk", "W/rk", false), ("work", "Work", false),
        ("inbox", "INBOX", true), ("Inbox/*", "INBOX/Lists", true), ("INBOX*", "INBOX", true),
        ("a/**/b", "a/b", true), ("a/**/b", "a/x/y/b", true), ("**/Sent", "Archive/2024/Sent", true),
        ("**/Sent", "Sent", true), ("*Sent*", "Sent Items", true), ("", "x", false), ("x", "", false),
        ("Février/*", "Février/Données", true), ("📬*", "📬 post", true),
    ])
    func glob(pattern: String, name: String, matches: Bool) {
        let path = FolderPath(name) ?? FolderPath(components: [name.isEmpty ? "-" : name])!
        if name.isEmpty { return }
        #expect(path.matches(glob: pattern) == matches, "\(pattern) ~ \(name)")
    }
}

struct FlagTests {
    @Test func systemFlagsAreCanonicalAndCaseInsensitive() {
        #expect(Flag("\\SEEN") == .seen)
        #expect(Flag("\\SEEN").name == "\\Seen")
        #expect(Flag("$forwarded") == .forwarded)
        #expect(Flag("$forwarded").name == "$forwarded")  // the first spelling is kept
        #expect(Flag.seen.isSystem && !Flag.seen.isKeyword)
        #expect(Flag("Work").isKeyword)
        #expect(Flag("\\Recent") == .recent)
    }

    @Test(arguments: [("Work", true), ("$Label1", true), ("has space", false), ("", false), ("a(b", false), ("a]b", false),
                      ("a%b", false), ("a*b", false), ("a\"b", false), ("Ünicode", false), ("\\Seen", false), ("a{b", false),
                      ("tab\tx", false), ("NonJunk", true), ("a.b-c_d", true)])
    func keywordValidity(name: String, valid: Bool) {
        #expect(Flag(name).isValidKeyword == valid)
    }

    @Test func flagSets() throws {
        var f: Flags = [.seen, Flag("work"), .recent, Flag("Work")]
        #expect(f.count == 2)  // \Recent is never kept; keywords fold case
        #expect(!f.contains(.recent))
        f.insert(.recent)
        #expect(f.count == 2)
        f.insert(.answered)
        #expect(f.sorted == [.answered, .seen, Flag("work")])
        #expect(f.systemFlags == [.answered, .seen])
        #expect(f.keywords == [Flag("Work")])
        #expect(f.description == "(\\Answered \\Seen work)")
        #expect(f.subtracting([.seen]).count == 2)
        #expect(f.union([.draft]).contains(.draft))
        let data = try JSONEncoder().encode(f)
        #expect(try JSONDecoder().decode(Flags.self, from: data) == f)
        #expect(Flags([Flag.recent]).isEmpty)
    }
}

import Foundation
import IMAPCore
import NIOCore
import Testing

/// Inputs `make fuzz-imap` found (Tests/FuzzCorpus/imap/), replayed through the
/// parser as the fuzz entry point feeds them: byte 0 is the piece size. Each
/// must parse or fail with a ParseError, never crash or hold unbounded input.
struct FuzzRegressionTests {
    static let directory: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<2 { url.deleteLastPathComponent() }
        return url.path + "/FuzzCorpus/imap"
    }()

    static var inputs: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
    }

    @Test func corpusIsPresent() {
        #expect(!Self.inputs.isEmpty, "no fuzz regression inputs in \(Self.directory)")
    }

    @Test(arguments: inputs)
    func replay(_ name: String) throws {
        let input = Array(try Data(contentsOf: URL(fileURLWithPath: Self.directory + "/" + name)))
        guard let first = input.first else { return }
        let step = max(1, Int(first) % 97)
        let body = input.dropFirst()
        var parser = ResponseParser(limits: ParserLimits(maxLineLength: 2048, maxNumberListLineLength: 4096,
                                                         maxInlineLiteralSize: 4096, maxStreamedLiteralSize: 1 << 20,
                                                         maxNestingDepth: 20))
        var i = body.startIndex
        var events = 0
        feeding: while i < body.endIndex {
            parser.append(ByteBuffer(bytes: body[i..<min(i + step, body.endIndex)]))
            i += step
            do {
                while let e = try parser.next() {
                    events += 1
                    if case .response(.untagged(.other(let name))) = e {
                        // An unknown response keeps its name only; writing it
                        // back is not expected to give the same response.
                        #expect(!name.isEmpty)
                    }
                }
            } catch {
                #expect(!error.description.isEmpty)
                break feeding
            }
            #expect(parser.bufferedByteCount <= 2048 + 4096 + 97 + 64)
        }
        #expect(events >= 0)
    }
}

/// Found by `make fuzz-imap`: a mailbox name written as an atom starting with
/// `~` was taken for a literal8 (`~{n}`), so our own LIST encoding did not
/// parse back, and a server listing `~backup` unquoted broke the session.
struct TildeAtomTests {
    @Test func listNameAtomStartingWithTilde() throws {
        var p = ResponseParser()
        p.append(ByteBuffer(string: "* LIST (\\HasNoChildren) \"/\" ~backup\r\n* LIST () \"/\" ~{3}\r\nabc\r\n"))
        var names: [String] = []
        while let e = try p.next() {
            if case .response(.untagged(.list(let item))) = e { names.append(item.name.decoded(utf8: true)) }
        }
        #expect(names == ["~backup", "abc"])
    }
}

// mailferry-fixture: a detached Dovecot test fixture for `make demo` and `make bench`.
//
//   mailferry-fixture start --dir DIR    start Dovecot in DIR, print `export` lines
//   mailferry-fixture stop --dir DIR     stop it (DIR is kept unless --remove)
//   mailferry-fixture env --dir DIR      print the `export` lines again
//   mailferry-fixture seed --dir DIR --user USER [--folder F] FILE...
//                                        put message files into a mailbox
import Foundation
import MailModel
import MailTestSupport

func usage() -> Never {
    FileHandle.standardError.write(Data("""
    usage: mailferry-fixture start --dir DIR
           mailferry-fixture stop --dir DIR [--remove]
           mailferry-fixture env --dir DIR
           mailferry-fixture seed --dir DIR --user USER [--folder FOLDER] FILE...

    """.utf8))
    exit(2)
}

func shellQuote(_ s: String) -> String {
    "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

func exports(_ f: DovecotFixture) -> String {
    let pairs: [(String, String)] = [
        ("MAILFERRY_FIXTURE_DIR", f.root),
        ("MAILFERRY_HOST", f.host),
        ("MAILFERRY_IMAP_PORT", "\(f.imapPort)"),
        ("MAILFERRY_IMAPS_PORT", "\(f.imapsPort)"),
        ("MAILFERRY_POP3_PORT", "\(f.pop3Port)"),
        ("MAILFERRY_POP3S_PORT", "\(f.pop3sPort)"),
        ("MAILFERRY_CA_FILE", f.caFile),
        ("MAILFERRY_PASSWORD", f.password),
        ("MAILFERRY_MASTER_USER", f.masterUser),
        ("MAILFERRY_MASTER_PASSWORD", f.masterPassword),
        ("MAILFERRY_DOVECOT_PID", "\(f.pid)"),
    ]
    return pairs.map { "export \($0.0)=\(shellQuote($0.1))" }.joined(separator: "\n") + "\n"
}

var arguments = Array(CommandLine.arguments.dropFirst())
guard let command = arguments.first else { usage() }
arguments.removeFirst()
var dir: String?
var user: String?
var folder = "INBOX"
var remove = false
var files: [String] = []
var index = 0
while index < arguments.count {
    let a = arguments[index]
    func value() -> String {
        index += 1
        guard index < arguments.count else { usage() }
        return arguments[index]
    }
    switch a {
    case "--dir": dir = value()
    case "--user": user = value()
    case "--folder": folder = value()
    case "--remove": remove = true
    default:
        if a.hasPrefix("--") { usage() }
        files.append(a)
    }
    index += 1
}
guard let dir else { usage() }

do {
    switch command {
    case "start":
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let fixture = try DovecotFixture.start(directory: dir, detached: true)
        print(exports(fixture), terminator: "")
    case "env":
        print(exports(try DovecotFixture.attach(directory: dir)), terminator: "")
    case "stop":
        let fixture = try DovecotFixture.attach(directory: dir)
        fixture.stop(removeFiles: remove)
    case "seed":
        guard let user else { usage() }
        let fixture = try DovecotFixture.attach(directory: dir)
        var messages: [SeedMessage] = []
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw MailError(.storage, scope: .local, "cannot read \(file)")
            }
            messages.append(SeedMessage([UInt8](data)))
        }
        let uids = try fixture.seed(user: user, folder: folder, messages: messages)
        print("seeded \(uids.count) messages into \(user)/\(folder)")
    default:
        usage()
    }
} catch {
    FileHandle.standardError.write(Data("mailferry-fixture: \(error)\n".utf8))
    exit(1)
}

import Foundation
import MailModel
import NIOConcurrencyHelpers
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A login on the fixture. Any user name works with the fixture password, so each test
/// makes its own fresh user and tests never see each other's mail.
public struct TestAccount: Sendable, Hashable, CustomStringConvertible {
    public var user: String
    public var password: String

    public init(user: String, password: String) {
        self.user = user
        self.password = password
    }

    public var description: String { "\(user) (password <redacted>)" }
}

/// A message to put into a fixture mailbox, with its flags and INTERNALDATE.
public struct SeedMessage: Sendable {
    public var bytes: [UInt8]
    public var flags: Flags
    /// INTERNALDATE (the Maildir file's mtime); now when `nil`.
    public var internalDate: InternalDate?

    public init(_ bytes: [UInt8], flags: Flags = [], internalDate: InternalDate? = nil) {
        self.bytes = bytes
        self.flags = flags
        self.internalDate = internalDate
    }

    public init(text: String, flags: Flags = [], internalDate: InternalDate? = nil) {
        self.init(Array(text.utf8), flags: flags, internalDate: internalDate)
    }
}

/// A message as the fixture's Dovecot holds it, read back for checks.
public struct FixtureMessage: Sendable, Hashable {
    public var uid: UInt32
    public var flags: Flags
    public var internalDate: InternalDate
    public var bytes: [UInt8]
    /// The Maildir file the message lives in.
    public var path: String
}

/// A private Dovecot 2.3 for tests: its own config, base_dir, state and log dirs, a temp
/// mail root, a CA and a server certificate for `localhost`/127.0.0.1, listening on free
/// loopback ports for IMAP (STARTTLS), IMAPS, POP3 (STLS) and POP3S.
///
/// - Logins: any user name with `password`; `user*masterUser` with `masterPassword` (or
///   SASL PLAIN with authzid `user`, authcid `masterUser`) logs in as `user`.
/// - Mail: `maildir:~/Maildir:LAYOUT=fs`, one fresh home per user under the temp root;
///   `serveMaildir(copying:for:)` points a user at a Maildir tree a test wrote.
/// - `pop3_uidl_format = %08Xu%08Xv`, plaintext auth allowed (for `--tls none` tests).
///
/// Use `DovecotFixture.shared()` in tests: one instance per test process, started on first
/// use and stopped at exit. Guard server tests with
/// `@Test(.enabled(if: DovecotFixture.serverTestsEnabled))`: they are skipped only when
/// `MAILFERRY_SKIP_SERVER_TESTS=1`; a missing Dovecot makes `shared()` throw, so the test fails.
public final class DovecotFixture: Sendable {
    /// Everything a client needs, also written to `fixture.json` in the fixture directory.
    public struct Info: Codable, Sendable, Hashable {
        public var root: String
        public var host: String
        public var imapPort: Int
        public var imapsPort: Int
        public var pop3Port: Int
        public var pop3sPort: Int
        public var caFile: String
        public var password: String
        public var masterUser: String
        public var masterPassword: String
        /// The Dovecot master process.
        public var pid: Int32
        /// The process the fixture belongs to (0 for a detached fixture).
        public var ownerPID: Int32
        public var mailUID: UInt32
        public var mailGID: UInt32
    }

    public let info: Info
    private let users = NIOLockedValueBox(UserState())

    private struct UserState {
        var counter = 0
        var overrides: [String: String] = [:]
    }

    public var root: String { info.root }
    /// Always the loopback address; the certificate names both `127.0.0.1` and `localhost`.
    public var host: String { info.host }
    public var imapPort: Int { info.imapPort }
    public var imapsPort: Int { info.imapsPort }
    public var pop3Port: Int { info.pop3Port }
    public var pop3sPort: Int { info.pop3sPort }
    /// The CA that signed the server certificate, as PEM: pass it as `--ca-file`.
    public var caFile: String { info.caFile }
    public var password: String { info.password }
    public var masterUser: String { info.masterUser }
    public var masterPassword: String { info.masterPassword }
    public var pid: Int32 { info.pid }
    public var configFile: String { root + "/etc/dovecot.conf" }
    public var logFile: String { root + "/log/dovecot.log" }

    init(info: Info) {
        self.info = info
    }

    // MARK: - Skipping and availability

    /// False only when `MAILFERRY_SKIP_SERVER_TESTS=1`.
    public static var serverTestsEnabled: Bool {
        ProcessInfo.processInfo.environment["MAILFERRY_SKIP_SERVER_TESTS"] != "1"
    }

    static let installHint = "install Dovecot with `make deps` (or `apt-get install dovecot-imapd dovecot-pop3d`); "
        + "set MAILFERRY_SKIP_SERVER_TESTS=1 to skip the server tests"

    static func findTool(_ name: String, env: String, in dirs: [String]) -> String? {
        if let path = ProcessInfo.processInfo.environment[env], FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        return dirs.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static var dovecotBinary: String? {
        findTool("dovecot", env: "MAILFERRY_DOVECOT", in: ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"])
    }

    static var doveadmBinary: String? {
        findTool("doveadm", env: "MAILFERRY_DOVEADM", in: ["/usr/bin", "/usr/local/bin", "/usr/sbin"])
    }

    /// Throws a clear error naming what to install when Dovecot (with IMAP and POP3) or openssl is missing.
    public static func checkInstalled() throws {
        var missing: [String] = []
        if dovecotBinary == nil { missing.append("dovecot (dovecot-core)") }
        if doveadmBinary == nil { missing.append("doveadm (dovecot-core)") }
        let libexec = ["/usr/lib/dovecot", "/usr/libexec/dovecot", "/usr/local/libexec/dovecot"]
        if !libexec.contains(where: { FileManager.default.isExecutableFile(atPath: $0 + "/imap") }) {
            missing.append("the IMAP server (dovecot-imapd)")
        }
        if !libexec.contains(where: { FileManager.default.isExecutableFile(atPath: $0 + "/pop3") }) {
            missing.append("the POP3 server (dovecot-pop3d)")
        }
        if findTool("openssl", env: "MAILFERRY_OPENSSL", in: ["/usr/bin", "/usr/local/bin"]) == nil {
            missing.append("openssl")
        }
        guard missing.isEmpty else {
            throw MailError(.unsupported, scope: .local,
                            "the Dovecot test fixture cannot start: missing \(missing.joined(separator: ", "))",
                            hint: installHint)
        }
    }

    // MARK: - The shared instance

    private static let sharedState = NIOLockedValueBox<Result<DovecotFixture, MailError>?>(nil)

    /// The process-wide fixture, started on first use (about a second) and stopped when
    /// the process exits. A fixture left behind by a crashed earlier run is cleaned up first.
    public static func shared() throws -> DovecotFixture {
        let result: Result<DovecotFixture, MailError> = sharedState.withLockedValue { state in
            if let state { return state }
            let made: Result<DovecotFixture, MailError>
            do {
                cleanUpStaleFixtures()
                let fixture = try start(directory: nil, detached: false)
                atexit { DovecotFixture.stopSharedAtExit() }
                made = .success(fixture)
            } catch let error as MailError {
                made = .failure(error)
            } catch {
                made = .failure(MailError(.storage, scope: .local, "the Dovecot test fixture cannot start: \(error)"))
            }
            state = made
            return made
        }
        return try result.get()
    }

    static func stopSharedAtExit() {
        let fixture: DovecotFixture? = sharedState.withLockedValue { state in
            if case .success(let f) = state { return f }
            return nil
        }
        fixture?.stop(removeFiles: true)
    }

    /// Where shared fixtures live: `$MAILFERRY_FIXTURE_ROOT` or `/tmp/mailferry-fixtures`
    /// (short, because Dovecot's UNIX sockets need short paths).
    static var fixturesParent: String {
        ProcessInfo.processInfo.environment["MAILFERRY_FIXTURE_ROOT"] ?? "/tmp/mailferry-fixtures"
    }

    /// Stops and removes fixtures whose owning process is gone (a crashed or killed run).
    public static func cleanUpStaleFixtures() {
        let parent = fixturesParent
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: parent) else { return }
        for entry in entries where entry.hasPrefix("dv-") {
            let dir = parent + "/" + entry
            guard let data = FileManager.default.contents(atPath: dir + "/fixture.json"),
                  let info = try? JSONDecoder().decode(Info.self, from: data) else {
                // Half-made: remove it if it is old enough to not be starting right now.
                if let attributes = try? FileManager.default.attributesOfItem(atPath: dir),
                   let modified = attributes[.modificationDate] as? Date,
                   Date().timeIntervalSince(modified) > 600 {
                    try? FileManager.default.removeItem(atPath: dir)
                }
                continue
            }
            guard info.ownerPID > 0, !processIsAlive(info.ownerPID) else { continue }
            DovecotFixture(info: info).stop(removeFiles: true)
        }
    }

    static func processIsAlive(_ pid: Int32) -> Bool {
        guard pid > 0 else { return false }
        return kill(pid, 0) == 0 || errno == EPERM
    }

    /// True when `pid` is a running Dovecot master using `config` (guards against reused pids).
    static func isDovecot(pid: Int32, config: String) -> Bool {
        guard processIsAlive(pid) else { return false }
        #if os(Linux)
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        let args = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        return args.first.map { $0.hasSuffix("dovecot") } == true && args.contains(config)
        #else
        return true
        #endif
    }

    // MARK: - Start and stop

    /// Starts a fixture. With `directory` nil, in a fresh directory under
    /// `/tmp/mailferry-fixtures`; `detached` fixtures outlive this process (for
    /// `mailferry-fixture start`) and must be stopped with `stop()`.
    public static func start(directory: String?, detached: Bool) throws -> DovecotFixture {
        try checkInstalled()
        let fm = FileManager.default
        let root: String
        if let directory {
            root = URL(fileURLWithPath: directory).standardizedFileURL.path
            if fm.fileExists(atPath: root + "/fixture.json") {
                throw MailError(.usage, scope: .local, "a fixture already lives in \(root)",
                                hint: "stop it first with `mailferry-fixture stop --dir \(root)`")
            }
        } else {
            try fm.createDirectory(atPath: fixturesParent, withIntermediateDirectories: true,
                                   attributes: [.posixPermissions: 0o755])
            _ = chmod(fixturesParent, 0o1777)
            root = fixturesParent + "/dv-\(getpid())-\(randomHex(4))"
        }
        let isRoot = geteuid() == 0
        let mailIDs = try mailUser(isRoot: isRoot)
        for sub in ["", "/etc", "/run", "/state", "/log", "/tls", "/home", "/external"] {
            try fm.createDirectory(atPath: root + sub, withIntermediateDirectories: true,
                                   attributes: [.posixPermissions: 0o755])
        }
        _ = chmod(root, 0o755)
        // Only the mail user may see the mail.
        for sub in ["/home", "/external"] {
            if isRoot { _ = chown(root + sub, mailIDs.uid, mailIDs.gid) }
            _ = chmod(root + sub, 0o700)
        }
        try makeCertificates(in: root + "/tls")

        let password = "fixture-" + randomHex(8)
        let masterPassword = "master-" + randomHex(8)
        let masterUser = "fixture-admin"
        try Data("\(masterUser):{PLAIN}\(masterPassword)\n".utf8).write(to: URL(fileURLWithPath: root + "/etc/master-users"))
        try Data().write(to: URL(fileURLWithPath: root + "/etc/users"))
        for file in ["/etc/master-users", "/etc/users"] { _ = chmod(root + file, 0o644) }

        guard let dovecot = dovecotBinary else { throw MailError(.unsupported, scope: .local, "dovecot missing", hint: installHint) }
        var lastError = ""
        for _ in 0..<4 {
            let ports = try freePorts(4)
            let info = Info(root: root, host: "127.0.0.1", imapPort: ports[0], imapsPort: ports[1],
                            pop3Port: ports[2], pop3sPort: ports[3], caFile: root + "/tls/ca.pem",
                            password: password, masterUser: masterUser, masterPassword: masterPassword,
                            pid: 0, ownerPID: detached ? 0 : getpid(), mailUID: mailIDs.uid, mailGID: mailIDs.gid)
            let config = makeConfig(info: info, isRoot: isRoot)
            try Data(config.utf8).write(to: URL(fileURLWithPath: root + "/etc/dovecot.conf"))
            let status = try ProcessRunner.runDaemonizing(dovecot, ["-c", root + "/etc/dovecot.conf"],
                                                          logFile: root + "/log/start.out")
            if status == 0, let pid = waitForMasterPID(root: root), waitForListeners(ports) {
                var started = info
                started.pid = pid
                let data = try JSONEncoder().encode(started)
                try data.write(to: URL(fileURLWithPath: root + "/fixture.json"))
                let fixture = DovecotFixture(info: started)
                if !detached { fixture.startWatchdog() }
                return fixture
            }
            let log = (try? String(contentsOfFile: root + "/log/dovecot.log", encoding: .utf8)) ?? ""
            let startOutput = (try? String(contentsOfFile: root + "/log/start.out", encoding: .utf8)) ?? ""
            lastError = (startOutput + "\n" + log.suffix(2000)).trimmingCharacters(in: .whitespacesAndNewlines)
            // A port may have been taken between choosing and binding: stop and retry.
            if let pid = readMasterPID(root: root) { terminate(pid: pid) }
            if !lastError.contains("Address already in use") { break }
        }
        if directory == nil { try? fm.removeItem(atPath: root) }
        throw MailError(.storage, scope: .local, "the Dovecot test fixture did not start: \(lastError)",
                        hint: "see the Dovecot log above; " + installHint)
    }

    /// Attaches to a detached fixture started in `directory` (reads `fixture.json`).
    public static func attach(directory: String) throws -> DovecotFixture {
        let path = URL(fileURLWithPath: directory).standardizedFileURL.path + "/fixture.json"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MailError(.notFound, scope: .local, "no fixture in \(directory) (no fixture.json)")
        }
        do {
            return DovecotFixture(info: try JSONDecoder().decode(Info.self, from: data))
        } catch {
            throw MailError(.corrupt, scope: .local, "cannot read \(path): \(error)")
        }
    }

    /// Whether the Dovecot master is still running.
    public var isRunning: Bool { Self.isDovecot(pid: pid, config: configFile) }

    /// Stops Dovecot (TERM, then KILL after 5 s) and, with `removeFiles`, deletes the fixture directory.
    public func stop(removeFiles: Bool = true) {
        if Self.isDovecot(pid: pid, config: configFile) {
            Self.terminate(pid: pid)
        } else if let current = Self.readMasterPID(root: root), Self.isDovecot(pid: current, config: configFile) {
            Self.terminate(pid: current)
        }
        // The master is gone; its children (login, auth, log...) follow within moments.
        // Wait for the listeners to close, then kill any straggler of this instance.
        let ports = [imapPort, imapsPort, pop3Port, pop3sPort]
        for _ in 0..<60 where ports.contains(where: { Self.canConnect(port: $0) }) {
            usleep(50_000)
        }
        Self.killInstanceProcesses(instance: Self.instanceName(root: root))
        try? FileManager.default.removeItem(atPath: root + "/fixture.json")
        if removeFiles { try? FileManager.default.removeItem(atPath: root) }
    }

    /// Unique per fixture directory (the base name plus a hash of the full path), so two
    /// fixtures in directories with the same base name never touch each other's processes.
    static func instanceName(root: String) -> String {
        var hash: UInt32 = 2_166_136_261
        for byte in root.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        let base = String((root as NSString).lastPathComponent.prefix(24))
        return "mailferry-\(base)-" + String(format: "%08x", hash)
    }

    /// SIGKILLs every process whose title is `dovecot-<instance>/...` (Dovecot's children
    /// rename themselves so).
    static func killInstanceProcesses(instance: String) {
        #if os(Linux)
        let prefix = "dovecot-\(instance)/"
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return }
        for entry in entries {
            guard let pid = Int32(entry), pid != getpid(),
                  let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { continue }
            if String(decoding: data.prefix(prefix.utf8.count), as: UTF8.self) == prefix {
                _ = kill(pid, SIGKILL)
            }
        }
        #endif
    }

    static func terminate(pid: Int32) {
        guard pid > 0 else { return }
        _ = kill(pid, SIGTERM)
        for _ in 0..<100 {
            if !processIsAlive(pid) { return }
            reapIfChild(pid)
            usleep(50_000)
        }
        _ = kill(pid, SIGKILL)
        reapIfChild(pid)
    }

    static func reapIfChild(_ pid: Int32) {
        var status: Int32 = 0
        _ = waitpid(pid, &status, WNOHANG)
    }

    /// A tiny shell loop that stops Dovecot and removes the directory if this process dies
    /// without running its exit handlers (killed, crashed).
    private func startWatchdog() {
        let script = "while kill -0 \(info.ownerPID) 2>/dev/null; do sleep 1; done; "
            + "if grep -q dovecot /proc/\(pid)/cmdline 2>/dev/null; then kill -TERM \(pid); sleep 2; fi; "
            + "rm -rf '\(root)'"
        _ = try? ProcessRunner.spawnDetached("/bin/sh", ["-c", script])
    }

    static func readMasterPID(root: String) -> Int32? {
        guard let text = try? String(contentsOfFile: root + "/run/master.pid", encoding: .utf8) else { return nil }
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    static func waitForMasterPID(root: String) -> Int32? {
        for _ in 0..<100 {
            if let pid = readMasterPID(root: root), processIsAlive(pid) { return pid }
            usleep(50_000)
        }
        return nil
    }

    static func waitForListeners(_ ports: [Int]) -> Bool {
        for _ in 0..<100 {
            if ports.allSatisfy({ canConnect(port: $0) }) { return true }
            usleep(50_000)
        }
        return false
    }

    // MARK: - Users and mail

    /// A fresh user (never used before in this fixture) with the fixture password.
    public func makeUser(prefix: String = "user") -> TestAccount {
        let n = users.withLockedValue { state -> Int in
            state.counter += 1
            return state.counter
        }
        let clean = prefix.lowercased().filter { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }
        let user = "\(clean.isEmpty ? "user" : clean)-\(n)-\(Self.randomHex(3))"
        return TestAccount(user: user, password: password)
    }

    /// The account a master-user login as `user` uses: `user*fixture-admin` / master password
    /// (for IMAP LOGIN), or PLAIN with authzid `user` and authcid `masterUser`.
    public func masterLogin(as user: String) -> TestAccount {
        TestAccount(user: "\(user)*\(masterUser)", password: masterPassword)
    }

    /// The Maildir root Dovecot serves for `user`.
    public func mailRoot(for user: String) -> String {
        if let override = users.withLockedValue({ $0.overrides[user] }) { return override }
        return root + "/home/\(user)/Maildir"
    }

    /// Points `user` at a copy of the Maildir tree at `path` (files, names and mtimes kept,
    /// `LAYOUT=fs`) and returns where the copy lives. The tree is copied so that Dovecot,
    /// which runs as an unprivileged mail user when tests run as root, can read and write it.
    /// `options` are appended to the mail location (e.g. `":UTF-8"` to read folder names
    /// as UTF-8 rather than modified UTF-7).
    @discardableResult
    public func serveMaildir(copying path: String, for user: String, options: String = "") throws -> String {
        try serveTree(copying: path, for: user, as: "Maildir") { "maildir:\($0):LAYOUT=fs" + options }
    }

    /// Points `user` at a copy of the mbox tree at `path`: `mbox:COPY:INBOX=<inbox>` plus
    /// `options`, where `inbox` is a path inside the tree or, when nil, an (empty) file
    /// beside it. Returns where the copy lives.
    ///
    /// `readOnly` makes the copy unwritable and keeps Dovecot's index and control files
    /// beside it, so Dovecot serves the files as they are instead of rewriting them (adding
    /// X-UID/X-IMAPbase headers and padding) while a client reads.
    @discardableResult
    public func serveMbox(copying path: String, for user: String, inbox: String? = nil,
                          options: String = "", readOnly: Bool = false) throws -> String {
        let home = root + "/external/\(user)"
        let extra = readOnly ? ":INDEX=\(home)/index:CONTROL=\(home)/control" : ""
        let dest = try serveTree(copying: path, for: user, as: "mail") { dest in
            "mbox:\(dest):INBOX=" + (inbox.map { dest + "/" + $0 } ?? home + "/inbox") + extra + options
        }
        if readOnly { try ProcessRunner.check("/bin/chmod", ["-R", "a-w", dest]) }
        return dest
    }

    /// Copies `path` to the user's external home and points the user's `mail` userdb field
    /// at `location(copy)` through the passwd-file userdb.
    func serveTree(copying path: String, for user: String, as name: String,
                   location: (String) -> String) throws -> String {
        let dest = root + "/external/\(user)/\(name)"
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/external/\(user)", withIntermediateDirectories: true)
        try? fm.removeItem(atPath: dest)
        try ProcessRunner.check("/bin/cp", ["-a", path, dest])
        if geteuid() == 0 {
            try ProcessRunner.check("/bin/chown", ["-R", "\(info.mailUID):\(info.mailGID)", root + "/external/\(user)"])
        }
        let mail = location(dest)
        let line = "\(user)::\(info.mailUID):\(info.mailGID)::\(root)/external/\(user)::userdb_mail=\(mail)\n"
        try users.withLockedValue { state in
            let file = root + "/etc/users"
            guard let handle = FileHandle(forWritingAtPath: file) else {
                throw MailError(.storage, scope: .local, "cannot write \(file)")
            }
            defer { try? handle.close() }
            try handle.seekToEnd()
            try handle.write(contentsOf: Data(line.utf8))
            state.overrides[user] = dest
            // Dovecot re-reads a passwd-file only when its mtime (in whole seconds) changes;
            // two edits within one second would go unseen. Give every edit its own mtime.
            let stamp = Date(timeIntervalSince1970: TimeInterval(1_000_000_000 + state.overrides.count))
            try FileManager.default.setAttributes([.modificationDate: stamp], ofItemAtPath: file)
        }
        // Dovecot's auth process also checks the file at most once a second: wait until it
        // hands out the new mail location.
        for _ in 0..<40 {
            let got = try doveadm("user", "-f", "mail", user).trimmingCharacters(in: .whitespacesAndNewlines)
            if got == mail { return dest }
            usleep(100_000)
        }
        throw MailError(.storage, scope: .local, "Dovecot did not pick up the mail location override for \(user)")
    }

    /// Runs `doveadm -c <fixture config> args...` and returns its stdout.
    @discardableResult
    public func doveadm(_ arguments: [String], stdin: Data? = nil) throws -> String {
        guard let tool = Self.doveadmBinary else {
            throw MailError(.unsupported, scope: .local, "doveadm is missing", hint: Self.installHint)
        }
        return try ProcessRunner.check(tool, ["-c", configFile] + arguments, stdin: stdin, timeoutSeconds: 120).stdoutText
    }

    @discardableResult
    public func doveadm(_ arguments: String...) throws -> String {
        try doveadm(arguments)
    }

    /// Creates a folder (and its parents); a folder that exists already is fine.
    public func createFolder(user: String, _ folder: String) throws {
        guard folder.uppercased() != "INBOX" else {
            _ = try doveadm("mailbox", "status", "-u", user, "messages", "INBOX")
            return
        }
        do {
            try doveadm("mailbox", "create", "-u", user, folder)
        } catch let error as MailError where error.message.contains("exists") {
            return
        }
    }

    /// The folders of `user`, as Dovecot lists them (`/` separated).
    public func folders(user: String) throws -> [String] {
        try doveadm("mailbox", "list", "-u", user).split(separator: "\n").map(String.init).filter { !$0.isEmpty }
    }

    /// The on-disk Maildir directory of `folder`.
    public func maildirPath(user: String, folder: String) throws -> String {
        try doveadm("mailbox", "path", "-u", user, folder).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Puts `messages` into `folder` (created if needed) as Maildir files with their flags and
    /// INTERNALDATE (file mtime), resyncs Dovecot, adds keywords with `doveadm flags`, and
    /// returns the UIDs Dovecot gave them, in order.
    @discardableResult
    public func seed(user: String, folder: String = "INBOX", messages: [SeedMessage]) throws -> [UInt32] {
        try createFolder(user: user, folder)
        let dir = try maildirPath(user: user, folder: folder)
        let fm = FileManager.default
        let isRoot = geteuid() == 0
        for sub in ["", "/cur", "/new", "/tmp"] where !fm.fileExists(atPath: dir + sub) {
            try fm.createDirectory(atPath: dir + sub, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            if isRoot { _ = chown(dir + sub, info.mailUID, info.mailGID) }
        }
        let stamp = Int(Date().timeIntervalSince1970)
        let batch = Self.randomHex(4)
        var bases: [String] = []
        for (index, message) in messages.enumerated() {
            let base = "\(stamp).M\(String(format: "%06d", index))P\(getpid())Q\(batch).mailferry-seed"
            let tmp = dir + "/tmp/" + base
            try Data(message.bytes).write(to: URL(fileURLWithPath: tmp))
            _ = chmod(tmp, 0o600)
            if isRoot { _ = chown(tmp, info.mailUID, info.mailGID) }
            let date = (message.internalDate ?? InternalDate.now()).date
            try fm.setAttributes([.modificationDate: date], ofItemAtPath: tmp)
            let final = dir + "/cur/" + base + ":2," + Self.maildirFlagLetters(message.flags)
            guard rename(tmp, final) == 0 else {
                throw MailError(.storage, scope: .local, "cannot move \(tmp) into cur/: \(String(cString: strerror(errno)))")
            }
            bases.append(base)
        }
        try doveadm("force-resync", "-u", user, folder)
        let uids = try uidMap(folderPath: dir)
        var result: [UInt32] = []
        // One `doveadm flags add` per distinct keyword set, not per message.
        var byKeywords: [[String]: [UInt32]] = [:]
        for (index, base) in bases.enumerated() {
            guard let uid = uids[base] else {
                throw MailError(.storage, scope: .local, "Dovecot did not pick up the seeded file \(base) in \(folder)")
            }
            result.append(uid)
            let keywords = messages[index].flags.keywords.map(\.name).sorted()
            if !keywords.isEmpty { byKeywords[keywords, default: []].append(uid) }
        }
        for (keywords, list) in byKeywords.sorted(by: { $0.key.joined() < $1.key.joined() }) {
            try doveadm(["flags", "add", "-u", user, keywords.joined(separator: " "), "mailbox", folder,
                         "uid", list.map(String.init).joined(separator: ",")])
        }
        return result
    }

    /// Every message in `folder` as Dovecot sees it: UID, flags, INTERNALDATE and bytes.
    public func messages(user: String, folder: String = "INBOX") throws -> [FixtureMessage] {
        // `doveadm fetch` succeeds silently on a missing mailbox; `mailbox status` does not.
        _ = try doveadm("mailbox", "status", "-u", user, "messages", folder)
        let table = try doveadm(["-f", "tab", "fetch", "-u", user, "uid flags", "mailbox", folder, "all"])
        var flagsByUID: [UInt32: Flags] = [:]
        for line in table.split(separator: "\n").dropFirst() {
            let columns = line.split(separator: "\t", maxSplits: 1, omittingEmptySubsequences: false)
            guard let first = columns.first, let uid = UInt32(first) else { continue }
            let names = columns.count > 1 ? columns[1].split(separator: " ").map(String.init) : []
            flagsByUID[uid] = Flags(names.map(Flag.init).filter { $0 != .recent })
        }
        let dir = try maildirPath(user: user, folder: folder)
        let files = try filesByBase(folderPath: dir)
        var result: [FixtureMessage] = []
        for (base, uid) in try uidMap(folderPath: dir).sorted(by: { $0.value < $1.value }) {
            guard let flags = flagsByUID[uid], let path = files[base] else { continue }
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            let mtime = (attributes[.modificationDate] as? Date) ?? Date(timeIntervalSince1970: 0)
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            result.append(FixtureMessage(uid: uid, flags: flags, internalDate: InternalDate(mtime), bytes: bytes, path: path))
        }
        return result
    }

    /// Dovecot's `dovecot-uidlist`: base file name -> UID.
    func uidMap(folderPath: String) throws -> [String: UInt32] {
        let path = folderPath + "/dovecot-uidlist"
        guard let data = FileManager.default.contents(atPath: path) else { return [:] }
        var map: [String: UInt32] = [:]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n").dropFirst() {
            guard let space = line.firstIndex(of: " "), let uid = UInt32(line[..<space]),
                  let colon = line.firstIndex(of: ":") else { continue }
            map[String(line[line.index(after: colon)...])] = uid
        }
        return map
    }

    func filesByBase(folderPath: String) throws -> [String: String] {
        var files: [String: String] = [:]
        for sub in ["new", "cur"] {
            let dir = folderPath + "/" + sub
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
                let base = name.split(separator: ":", maxSplits: 1).first.map(String.init) ?? name
                files[base] = dir + "/" + name
            }
        }
        return files
    }

    static func maildirFlagLetters(_ flags: Flags) -> String {
        var letters: [Character] = []
        if flags.contains(.draft) { letters.append("D") }
        if flags.contains(.flagged) { letters.append("F") }
        if flags.contains(.answered) { letters.append("R") }
        if flags.contains(.seen) { letters.append("S") }
        if flags.contains(.deleted) { letters.append("T") }
        return String(letters)
    }

    // MARK: - Config, certificates, ports

    static func mailUser(isRoot: Bool) throws -> (uid: UInt32, gid: UInt32, name: String, group: String) {
        if isRoot {
            // Dovecot refuses UID 0 for mail; Debian's `mail` user is the usual unprivileged one.
            for name in ["mail", "nobody"] {
                if let pw = getpwnam(name) {
                    let group = getgrgid(pw.pointee.pw_gid).map { String(cString: $0.pointee.gr_name) } ?? name
                    return (pw.pointee.pw_uid, pw.pointee.pw_gid, name, group)
                }
            }
            throw MailError(.storage, scope: .local, "no unprivileged `mail` or `nobody` user for Dovecot's mail processes")
        }
        let uid = getuid()
        let gid = getgid()
        guard let pw = getpwuid(uid) else {
            throw MailError(.storage, scope: .local, "the current user (uid \(uid)) has no passwd entry; Dovecot needs a user name")
        }
        let group = getgrgid(gid).map { String(cString: $0.pointee.gr_name) } ?? String(cString: pw.pointee.pw_name)
        return (uid, gid, String(cString: pw.pointee.pw_name), group)
    }

    /// Folders the fixture marks with SPECIAL-USE attributes (not created
    /// until a test creates them).
    public static let specialUseFolders: [(name: String, attribute: String)] = [
        ("Gesendete Objekte", "\\Sent"), ("Entwürfe", "\\Drafts"), ("Gelöschte Objekte", "\\Trash"),
        ("Junk-E-Mail", "\\Junk"), ("Archivierte Objekte", "\\Archive"),
    ]

    static var specialUseConfig: String {
        specialUseFolders.map { "  mailbox \"\($0.name)\" {\n    special_use = \($0.attribute)\n  }" }.joined(separator: "\n")
    }

    static func makeConfig(info: Info, isRoot: Bool) -> String {
        let r = info.root
        let internalUser: String
        let internalGroup: String
        let loginUser: String
        let chrootOff: String
        if isRoot {
            internalUser = "dovecot"
            internalGroup = "dovecot"
            loginUser = "dovenull"
            chrootOff = ""
        } else {
            let me = (try? mailUser(isRoot: false))
            internalUser = me?.name ?? "nobody"
            internalGroup = me?.group ?? "nogroup"
            loginUser = internalUser
            // Only root can chroot.
            chrootOff = """
            service anvil {
              chroot =
            }
            service imap-urlauth-login {
              chroot =
            }

            """
        }
        let loginChroot = isRoot ? "" : "  chroot =\n"
        return """
        # mailferry test fixture (generated; do not edit)
        instance_name = \(instanceName(root: r))
        base_dir = \(r)/run
        state_dir = \(r)/state
        log_path = \(r)/log/dovecot.log
        info_log_path = \(r)/log/dovecot.log
        debug_log_path = \(r)/log/dovecot.log
        protocols = imap pop3
        listen = 127.0.0.1
        shutdown_clients = yes
        ssl = yes
        ssl_cert = <\(r)/tls/server.pem
        ssl_key = <\(r)/tls/server.key
        ssl_dh = <\(r)/tls/dh.pem
        ssl_min_protocol = TLSv1.2
        disable_plaintext_auth = no
        auth_mechanisms = plain login
        auth_master_user_separator = *
        auth_cache_size = 0
        auth_failure_delay = 0
        auth_verbose = yes
        pop3_uidl_format = %08Xu%08Xv
        mail_location = maildir:~/Maildir:LAYOUT=fs
        mail_max_userip_connections = 500
        first_valid_uid = \(info.mailUID)
        last_valid_uid = 0
        first_valid_gid = \(info.mailGID == 0 ? 0 : 1)
        default_internal_user = \(internalUser)
        default_internal_group = \(internalGroup)
        default_login_user = \(loginUser)
        mail_plugins =
        # SPECIAL-USE (RFC 6154): LIST shows these attributes on these names
        # once a test creates them; none is created automatically, so other
        # tests' folder lists stay as they were. The names are ones no other
        # test uses; see DovecotFixture.specialUseFolders.
        namespace inbox {
          inbox = yes
        \(specialUseConfig)
        }
        protocol imap {
          imap_max_line_length = 10M
        }
        passdb {
          driver = passwd-file
          args = scheme=PLAIN username_format=%u \(r)/etc/master-users
          master = yes
          pass = yes
        }
        passdb {
          driver = static
          args = password=\(info.password)
        }
        userdb {
          driver = passwd-file
          args = username_format=%u \(r)/etc/users
        }
        userdb {
          driver = static
          args = uid=\(info.mailUID) gid=\(info.mailGID) home=\(r)/home/%u
        }
        service imap-login {
        \(loginChroot)  inet_listener imap {
            address = 127.0.0.1
            port = \(info.imapPort)
          }
          inet_listener imaps {
            address = 127.0.0.1
            port = \(info.imapsPort)
            ssl = yes
          }
          process_min_avail = 1
        }
        service pop3-login {
        \(loginChroot)  inet_listener pop3 {
            address = 127.0.0.1
            port = \(info.pop3Port)
          }
          inet_listener pop3s {
            address = 127.0.0.1
            port = \(info.pop3sPort)
            ssl = yes
          }
        }
        service imap {
          process_limit = 512
        }
        service pop3 {
          process_limit = 512
        }
        \(chrootOff)
        """
    }

    /// A CA and a server certificate (CN `localhost`, SANs `localhost`, 127.0.0.1 and ::1),
    /// made with the openssl CLI, plus RFC 7919 DH parameters.
    static func makeCertificates(in dir: String) throws {
        try TestCertificates.make(in: dir)
        let openssl = findTool("openssl", env: "MAILFERRY_OPENSSL", in: ["/usr/bin", "/usr/local/bin"]) ?? "/usr/bin/openssl"
        try ProcessRunner.check(openssl, ["genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048",
                                          "-out", dir + "/dh.pem"])
        _ = chmod(dir + "/dh.pem", 0o644)
    }

    /// `count` distinct free loopback TCP ports (bound together, then released).
    public static func freePorts(_ count: Int) throws -> [Int] {
        var sockets: [Int32] = []
        defer { for s in sockets { close(s) } }
        var ports: [Int] = []
        for _ in 0..<count {
            #if os(Linux)
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            #else
            let fd = socket(AF_INET, SOCK_STREAM, 0)
            #endif
            guard fd >= 0 else { throw MailError(.storage, scope: .local, "socket() failed: \(errno)") }
            sockets.append(fd)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = 0
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let bound = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else { throw MailError(.storage, scope: .local, "bind() failed: \(errno)") }
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let named = withUnsafeMutablePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
            }
            guard named == 0 else { throw MailError(.storage, scope: .local, "getsockname() failed: \(errno)") }
            ports.append(Int(UInt16(bigEndian: addr.sin_port)))
        }
        return ports
    }

    /// Whether something accepts TCP connections on 127.0.0.1:`port`.
    public static func canConnect(port: Int) -> Bool {
        #if os(Linux)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return result == 0
    }

    static func randomHex(_ bytes: Int) -> String {
        var g = SystemRandomNumberGenerator()
        return (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &g)) }.joined()
    }
}

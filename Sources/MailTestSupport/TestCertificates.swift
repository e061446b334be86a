import Foundation
import MailModel

/// A private CA and a server certificate made with the openssl CLI, for TLS tests:
/// `caFile` is what a client trusts (`--ca-file`); `certificateFile`/`keyFile` what a server presents.
public struct TestCertificates: Sendable, Hashable {
    public var directory: String
    public var caFile: String { directory + "/ca.pem" }
    public var caKeyFile: String { directory + "/ca.key" }
    public var certificateFile: String { directory + "/server.pem" }
    public var keyFile: String { directory + "/server.key" }

    /// Makes `ca.pem`/`ca.key` and `server.pem`/`server.key` (EC P-256, 30 days) in `directory`.
    /// The server certificate has CN `commonName` and SANs for `hostNames` and `ipAddresses`.
    /// `selfSigned: true` makes the server certificate its own issuer (no CA).
    @discardableResult
    public static func make(in directory: String, commonName: String = "localhost",
                            hostNames: [String] = ["localhost"], ipAddresses: [String] = ["127.0.0.1", "::1"],
                            selfSigned: Bool = false) throws -> TestCertificates {
        let fm = FileManager.default
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let openssl = DovecotFixture.findTool("openssl", env: "MAILFERRY_OPENSSL", in: ["/usr/bin", "/usr/local/bin"]) ?? "/usr/bin/openssl"
        let certs = TestCertificates(directory: directory)
        let sans = (hostNames.map { "DNS:\($0)" } + ipAddresses.map { "IP:\($0)" }).joined(separator: ", ")
        let ext = directory + "/server.ext"
        var extText = "basicConstraints = critical, CA:FALSE\n"
            + "keyUsage = critical, digitalSignature, keyEncipherment\n"
            + "extendedKeyUsage = serverAuth\n"
            + "subjectKeyIdentifier = hash\n"
        if !sans.isEmpty { extText += "subjectAltName = \(sans)\n" }
        if !selfSigned { extText += "authorityKeyIdentifier = keyid\n" }
        try Data(extText.utf8).write(to: URL(fileURLWithPath: ext))
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try ProcessRunner.check(openssl, ["req", "-x509"] + ec + ["-keyout", certs.caKeyFile, "-out", certs.caFile,
                                          "-days", "30", "-subj", "/CN=mailferry test CA \(DovecotFixture.randomHex(4))",
                                          "-addext", "basicConstraints=critical,CA:TRUE",
                                          "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        if selfSigned {
            try ProcessRunner.check(openssl, ["req", "-x509"] + ec + ["-keyout", certs.keyFile, "-out", certs.certificateFile,
                                              "-days", "30", "-subj", "/CN=\(commonName)", "-extensions", "v3_req",
                                              "-config", try opensslConfig(in: directory, ext: extText)])
        } else {
            let csr = directory + "/server.csr"
            try ProcessRunner.check(openssl, ["req"] + ec + ["-keyout", certs.keyFile, "-out", csr, "-subj", "/CN=\(commonName)"])
            try ProcessRunner.check(openssl, ["x509", "-req", "-in", csr, "-CA", certs.caFile, "-CAkey", certs.caKeyFile,
                                              "-CAcreateserial", "-out", certs.certificateFile, "-days", "30", "-sha256",
                                              "-extfile", ext])
        }
        for file in [certs.caKeyFile, certs.keyFile] { _ = chmod(file, 0o600) }
        for file in [certs.caFile, certs.certificateFile] { _ = chmod(file, 0o644) }
        return certs
    }

    private static func opensslConfig(in directory: String, ext: String) throws -> String {
        let path = directory + "/selfsigned.cnf"
        let text = "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n[v3_req]\n" + ext
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }
}

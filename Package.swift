// swift-tools-version:6.0
// mailferry: move mail out of POP3 and IMAP accounts, into IMAP servers and
// compressed backups, and back again. See ARCHITECTURE.md for who imports whom.
import PackageDescription

let swift6: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "mailferry",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "mailferry", targets: ["mailferry"]),
        .library(name: "MailferryKit", targets: ["MailferryCLI", "Transfer", "MailStore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
    ],
    targets: [
        // Value types: keys, flags, dates, folder paths, errors, header reader, store URLs.
        .target(
            name: "MailModel",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swift6),
        // IMAP wire grammar: parser and encoder, no I/O.
        .target(
            name: "IMAPCore",
            dependencies: ["MailModel", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swift6),
        // POP3 wire grammar: replies, CAPA, dot-unstuffing, no I/O.
        .target(
            name: "POP3Core",
            dependencies: ["MailModel", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swift6),
        // Sockets, TLS/STARTTLS, deadlines and SASL shared by both clients.
        .target(
            name: "MailNet",
            dependencies: [
                "MailModel",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swift6),
        .target(
            name: "IMAPClient",
            dependencies: [
                "IMAPCore", "MailNet", .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swift6),
        .target(
            name: "POP3Client",
            dependencies: ["POP3Core", "MailNet", .product(name: "Logging", package: "swift-log"),
                           .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swift6),
        // libarchive, found through pkg-config.
        .systemLibrary(
            name: "CArchive",
            pkgConfig: "libarchive",
            providers: [.apt(["libarchive-dev"])]),
        // The MailStore protocol and the adapters for IMAP, POP3, Maildir and mbox.
        .target(
            name: "MailStore",
            dependencies: [
                "MailModel", "IMAPClient", "POP3Client", "MailNet",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swift6),
        // Compressed tar volumes plus a GRDB catalog, exposed as a MailStore.
        .target(
            name: "ArchiveStore",
            dependencies: [
                "MailModel", "MailStore", "CArchive",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swift6),
        // Resumable state: high-water marks, id -> key -> destination map, effect journal.
        .target(
            name: "SyncState",
            dependencies: ["MailModel", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: swift6),
        // Pure planner, journalling executor, verifier, report.
        .target(
            name: "Transfer",
            dependencies: [
                "MailModel", "MailStore", "SyncState",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swift6),
        .target(
            name: "MailferryCLI",
            dependencies: [
                "MailModel", "MailStore", "ArchiveStore", "SyncState", "Transfer", "MailNet",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: swift6),
        .executableTarget(
            name: "mailferry",
            dependencies: ["MailferryCLI"],
            swiftSettings: swift6),
        // Test support: Dovecot fixture, scripted fake servers, fault proxy,
        // store conformance suite, corpus loader.
        .target(
            name: "MailTestSupport",
            dependencies: [
                "MailModel", "MailStore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swift6),
        // Starts/stops a detached Dovecot fixture for `make demo` and `make bench`.
        .executableTarget(
            name: "mailferry-fixture",
            dependencies: ["MailTestSupport", "MailModel"],
            swiftSettings: swift6),

        .testTarget(name: "MailModelTests", dependencies: ["MailModel", "MailTestSupport"], swiftSettings: swift6),
        .testTarget(name: "IMAPCoreTests", dependencies: ["IMAPCore"], swiftSettings: swift6),
        .testTarget(name: "POP3CoreTests", dependencies: ["POP3Core"], swiftSettings: swift6),
        .testTarget(name: "MailNetTests", dependencies: ["MailNet", "MailTestSupport"], swiftSettings: swift6),
        .testTarget(name: "IMAPClientTests", dependencies: ["IMAPClient", "MailStore", "MailTestSupport", "Transfer", "SyncState"], swiftSettings: swift6),
        .testTarget(name: "POP3ClientTests", dependencies: ["POP3Client", "MailStore", "MailTestSupport"], swiftSettings: swift6),
        .testTarget(name: "MailStoreTests", dependencies: ["MailStore", "MailTestSupport"], swiftSettings: swift6),
        .testTarget(name: "ArchiveStoreTests", dependencies: ["ArchiveStore", "MailTestSupport", "Transfer", "SyncState", "MailStore", "MailNet"], swiftSettings: swift6),
        .testTarget(name: "SyncStateTests", dependencies: ["SyncState"], swiftSettings: swift6),
        .testTarget(name: "TransferTests", dependencies: ["Transfer", "SyncState", "MailStore", "MailNet", "MailTestSupport", "ArchiveStore"], swiftSettings: swift6),
        .testTarget(name: "MailferryCLITests", dependencies: [
            "MailferryCLI", "MailTestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ], swiftSettings: swift6),
    ]
)

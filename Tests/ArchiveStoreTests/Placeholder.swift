import Testing
@testable import ArchiveStore
@Test func placeholder() {}

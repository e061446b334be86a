import Testing
@testable import SyncState
@Test func placeholder() {}

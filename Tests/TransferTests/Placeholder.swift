import Testing
@testable import Transfer
@Test func placeholder() {}

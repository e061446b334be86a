import Testing
@testable import IMAPCore
@Test func placeholder() {}

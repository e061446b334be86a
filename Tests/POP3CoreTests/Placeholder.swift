import Testing
@testable import POP3Core
@Test func placeholder() {}

import Testing
@testable import POP3Client
@Test func placeholder() {}

import Testing
@testable import MailferryCLI
@Test func placeholder() {}

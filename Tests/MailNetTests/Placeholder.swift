import Testing
@testable import MailNet
@Test func placeholder() {}

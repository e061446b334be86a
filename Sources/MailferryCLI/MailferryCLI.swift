import ArgumentParser
public struct Mailferry: AsyncParsableCommand {
    public init() {}
    public static let configuration = CommandConfiguration(commandName: "mailferry")
    public func run() async throws {}
}

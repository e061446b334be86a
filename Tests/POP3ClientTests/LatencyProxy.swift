import NIOCore
import NIOPosix

/// A loopback TCP relay that delays every chunk by `delay` in each direction,
/// so benchmarks can show what pipelining saves on a real network (on
/// loopback a round trip costs almost nothing). TLS passes through untouched.
final class LatencyProxy: Sendable {
    let port: Int
    private let channel: Channel

    init(targetPort: Int, delay: TimeAmount) async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { inbound in
                ClientBootstrap(group: inbound.eventLoop)
                    .channelInitializer { outbound in
                        outbound.eventLoop.makeCompletedFuture {
                            try outbound.pipeline.syncOperations.addHandler(DelayedRelay(peer: inbound, delay: delay))
                        }
                    }
                    .connect(host: "127.0.0.1", port: targetPort)
                    .flatMapThrowing { outbound in
                        try inbound.pipeline.syncOperations.addHandler(DelayedRelay(peer: outbound, delay: delay))
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = channel.localAddress?.port ?? 0
    }

    func stop() async {
        try? await channel.close()
    }
}

private final class DelayedRelay: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let peer: Channel
    let delay: TimeAmount

    init(peer: Channel, delay: TimeAmount) {
        self.peer = peer
        self.delay = delay
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        let peer = self.peer
        // Same delay for every chunk on one loop: order is kept.
        context.eventLoop.scheduleTask(in: delay) { peer.writeAndFlush(bytes, promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let peer = self.peer
        context.eventLoop.scheduleTask(in: delay) { peer.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

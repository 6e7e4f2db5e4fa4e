import FrameDump
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// What every connection's handler shares: the options, the cameras, the connection count.
final class ServerContext: Sendable {
    let options: ServeOptions
    let cameras: [LiveCamera]
    /// `Basic …` values of the Authorization header that are let in; empty: no authentication.
    let authorizations: Set<String>
    private let counts = NIOLockedValueBox((connections: 0, viewerIDs: 0))

    init(options: ServeOptions, cameras: [LiveCamera]) {
        self.options = options
        self.cameras = cameras
        authorizations = Set(options.credentials.map { "Basic " + Base64.encode(Array($0.utf8)) })
    }

    /// A connection came: whether it is beyond --max-clients (it is then answered 503).
    func connectionOpened() -> Bool {
        counts.withLockedValue { counts in
            counts.connections += 1
            return counts.connections > options.maxClients
        }
    }

    func connectionClosed() { counts.withLockedValue { $0.connections -= 1 } }

    var connections: Int { counts.withLockedValue { $0.connections } }

    func nextViewerID() -> Int {
        counts.withLockedValue { counts in
            counts.viewerIDs += 1
            return counts.viewerIDs
        }
    }

    func state() -> ServerState {
        ServerState(listen: "\(options.host):\(options.port)", clients: connections, maxClients: options.maxClients,
                    cameras: cameras.map(\.state))
    }

    func stateJSON() -> String {
        FrameDumpJSON.encode(state())
    }
}

/// `framedump serve`: the cameras' live pictures over HTTP, on SwiftNIO.
///
/// One capture per camera, however many viewers: each frame is made JPEG once and every
/// viewer sends that one buffer. A slow viewer skips to the newest picture; it never slows the
/// capture or the others.
public final class LiveViewServer: Sendable {
    let context: ServerContext
    private let group: MultiThreadedEventLoopGroup
    private let channel: NIOLockedValueBox<(any Channel)?>

    public init(options: ServeOptions) throws(ServeError) {
        guard !options.cameras.isEmpty else { throw .usage("serve needs at least one device (-d)") }
        guard (1...100).contains(options.quality) else { throw .usage("--quality \(options.quality): must be 1...100") }
        guard options.maxClients >= 1 else { throw .usage("--max-clients \(options.maxClients): must be at least 1") }
        let cameras = options.cameras.enumerated().map { LiveCamera(index: $0.offset, options: $0.element, serve: options) }
        context = ServerContext(options: options, cameras: cameras)
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        channel = NIOLockedValueBox(nil)
    }

    /// The address it listens on, once ``start()`` returned.
    public var localAddress: String? { channel.withLockedValue { $0?.localAddress?.description } }

    /// Binds and starts the cameras. Errors name the address.
    public func start() throws(ServeError) {
        let context = self.context
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // A small send buffer per viewer: the kernel holds a few pictures, not seconds of
            // them, so a viewer that falls behind skips to the newest instead of lagging.
            .childChannelOption(.socketOption(.so_sndbuf), value: 512 * 1024)
            .childChannelOption(.maxMessagesPerRead, value: 4)
            .childChannelInitializer { channel in
                let overLimit = context.connectionOpened()
                let guardHandler = RequestGuard(limit: context.options.maxHeaderBytes)
                let partWriter = PartWriter()
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(partWriter)
                    try channel.pipeline.syncOperations.addHandler(guardHandler)
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(RequestHandler(server: context, overLimit: overLimit, guardBox: guardHandler,
                                                                                  partWriter: partWriter))
                }
            }
        do {
            let bound = try bootstrap.bind(host: context.options.host, port: context.options.port).wait()
            channel.withLockedValue { $0 = bound }
        } catch {
            throw .runtime("cannot listen on \(context.options.host):\(context.options.port): \(error) (--listen ADDR:PORT chooses another)")
        }
        for camera in context.cameras { camera.start() }
    }

    /// A camera that gave up (and why), if one did: the server then ends with it.
    public var failure: String? { context.cameras.lazy.compactMap(\.failure).first }

    /// Stops the cameras and closes every connection.
    public func stop() {
        for camera in context.cameras { camera.stop() }
        let bound = channel.withLockedValue { channel -> (any Channel)? in
            defer { channel = nil }
            return channel
        }
        try? bound?.close().wait()
        try? group.syncShutdownGracefully()
    }

    /// The JSON of `/state`, for the CLI's summary.
    public var stateJSON: String { context.stateJSON() }
}

/// Standard base64 (RFC 4648) of `bytes`, for HTTP Basic credentials.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let b0 = UInt32(bytes[i]), b1 = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0, b2 = i + 2 < bytes.count ? UInt32(bytes[i + 2]) : 0
            let triple = b0 << 16 | b1 << 8 | b2
            out.append(alphabet[Int(triple >> 18 & 63)])
            out.append(alphabet[Int(triple >> 12 & 63)])
            out.append(i + 1 < bytes.count ? alphabet[Int(triple >> 6 & 63)] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? alphabet[Int(triple & 63)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}

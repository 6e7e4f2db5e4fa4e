import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import V4L2

/// The server's answer to one connection's requests. Only GET and HEAD are served, and nothing
/// from the file system: the routes are the cameras' pictures, `/state`, and the page.
///
/// - `/stream`, `/N/stream`, mjpg-streamer's `/?action=stream`: multipart/x-mixed-replace JPEG.
/// - `/snapshot`, `/N/snapshot`, `/?action=snapshot`: the newest picture.
/// - `/state`: JSON (``ServerState``).
/// - `/`, `/N/`: an HTML page with the picture and a statistics panel that reads `/state`.
final class RequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    static let boundary = "boundarydonotcross"

    private let server: ServerContext
    private let overLimit: Bool
    private let guardBox: RequestGuard
    private var viewer: (cameraIndex: Int, viewer: Viewer)?
    private var head: HTTPRequestHead?
    private var timeout: Scheduled<Void>?

    private let partWriter: PartWriter

    init(server: ServerContext, overLimit: Bool, guardBox: RequestGuard, partWriter: PartWriter) {
        self.server = server
        self.overLimit = overLimit
        self.guardBox = guardBox
        self.partWriter = partWriter
    }

    func channelActive(context: ChannelHandlerContext) {
        armTimeout(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        if let viewer {
            server.cameras[viewer.cameraIndex].hub.remove(viewer.viewer)
            self.viewer = nil
        }
        server.connectionClosed()
        context.fireChannelInactive()
    }

    /// Slowloris: a request head must arrive whole within the request timeout.
    private func armTimeout(context: ChannelHandlerContext) {
        timeout?.cancel()
        let seconds = server.options.requestTimeoutSeconds
        let channel = context.channel
        // Cancelled when a whole request head has come; the answer goes through the pipeline's encoder.
        timeout = context.eventLoop.scheduleTask(in: .milliseconds(Int64(seconds * 1000))) {
            let body = "the request did not arrive within \(seconds) s\n"
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
            headers.add(name: "Content-Length", value: "\(body.utf8.count)")
            headers.add(name: "Connection", value: "close")
            channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .requestTimeout, headers: headers)), promise: nil)
            channel.write(HTTPServerResponsePart.body(.byteBuffer(channel.allocator.buffer(string: body))), promise: nil)
            channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            head = request
        case .body:
            break
        case .end:
            guard let request = head else { return }
            head = nil
            timeout?.cancel()
            guardBox.requestDone()
            handle(request, context: context)
        }
    }

    private struct Route {
        enum Kind { case stream, snapshot, state, page }
        var kind: Kind
        var camera: Int?
        var extraHeaders = false
    }

    private func route(_ uri: String) -> Route? {
        let (path, query) = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
            .map(String.init).splitPair()
        let parameters = Dictionary(query.split(separator: "&").map { part -> (String, String) in
            let pair = part.split(separator: "=", maxSplits: 1).map(String.init)
            return (pair[0], pair.count > 1 ? pair[1] : "")
        }, uniquingKeysWith: { first, _ in first })
        let extra = parameters["extra_headers"] == "1"
        var parts = path.split(separator: "/").map(String.init)
        var camera: Int?
        if let first = parts.first, let number = Int(first), number >= 0 {
            guard number < server.cameras.count else { return nil }
            camera = number
            parts.removeFirst()
        }
        switch parts {
        case []:
            switch parameters["action"] {
            case "stream"?: return Route(kind: .stream, camera: camera ?? 0, extraHeaders: extra)
            case "snapshot"?: return Route(kind: .snapshot, camera: camera ?? 0)
            case nil: return Route(kind: .page, camera: camera)
            default: return nil
            }
        case ["index.html"]: return Route(kind: .page, camera: camera)
        case ["stream"], ["stream.mjpg"]: return Route(kind: .stream, camera: camera ?? 0, extraHeaders: extra)
        case ["snapshot"], ["snapshot.jpg"]: return Route(kind: .snapshot, camera: camera ?? 0)
        case ["state"]: return camera == nil ? Route(kind: .state, camera: nil) : nil
        default: return nil
        }
    }

    private func handle(_ request: HTTPRequestHead, context: ChannelHandlerContext) {
        if overLimit {
            respond(context: context, status: .serviceUnavailable, body: "too many clients (--max-clients \(server.options.maxClients))\n", extra: [("Retry-After", "5")])
            return
        }
        guard request.method == .GET || request.method == .HEAD else {
            respond(context: context, status: .methodNotAllowed, body: "only GET and HEAD are served\n", extra: [("Allow", "GET, HEAD")])
            return
        }
        if !server.authorizations.isEmpty {
            guard let given = request.headers.first(name: "Authorization"), server.authorizations.contains(given) else {
                respond(context: context, status: .unauthorized, body: "authentication required\n",
                        extra: [("WWW-Authenticate", "Basic realm=\"framedump\", charset=\"UTF-8\"")])
                return
            }
        }
        let headOnly = request.method == .HEAD
        guard let route = route(request.uri) else {
            respond(context: context, status: .notFound, body: "no such page: try /, /stream, /snapshot or /state\n", headOnly: headOnly)
            return
        }
        switch route.kind {
        case .state:
            respond(context: context, status: .ok, body: server.stateJSON(), contentType: "application/json", headOnly: headOnly)
        case .page:
            respond(context: context, status: .ok, body: LivePage.html(cameras: server.cameras.count, only: route.camera),
                    contentType: "text/html; charset=utf-8", headOnly: headOnly)
        case .snapshot:
            let camera = server.cameras[route.camera ?? 0]
            guard let frame = camera.hub.latest else {
                respond(context: context, status: .serviceUnavailable, body: "no picture yet\n", headOnly: headOnly,
                        extra: [("Retry-After", "1")])
                return
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "image/jpeg")
            headers.add(name: "Content-Length", value: "\(frame.jpeg.readableBytes)")
            headers.add(name: "Cache-Control", value: "no-store")
            headers.add(name: "X-Timestamp", value: Viewer.seconds(frame.timestampNanoseconds))
            if let sequence = frame.sequence { headers.add(name: "X-Frame-Sequence", value: "\(sequence)") }
            headers.add(name: "Connection", value: "close")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: .ok, headers: headers))), promise: nil)
            if !headOnly { context.write(wrapOutboundOut(.body(.byteBuffer(frame.jpeg))), promise: nil) }
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
        case .stream:
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "multipart/x-mixed-replace;boundary=\(Self.boundary)")
            headers.add(name: "Cache-Control", value: "no-store, no-cache, must-revalidate, max-age=0")
            headers.add(name: "Pragma", value: "no-cache")
            headers.add(name: "Connection", value: "close")
            // HTTP/1.0, as ustreamer and mjpg-streamer answer: the body runs until the connection
            // closes, with no chunked framing for naive multipart readers to trip on.
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_0, status: .ok, headers: headers))), promise: nil)
            if headOnly {
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
                return
            }
            let index = route.camera ?? 0
            let address = context.remoteAddress?.description ?? "?"
            let viewer = Viewer(id: server.nextViewerID(), channel: context.channel, writer: partWriter, address: address,
                                extraHeaders: route.extraHeaders, dropSameFrames: server.options.dropSameFrames,
                                now: MonotonicClock.nanoseconds())
            self.viewer = (index, viewer)
            server.cameras[index].hub.add(viewer)
        }
    }

    private func respond(context: ChannelHandlerContext, status: HTTPResponseStatus, body: String, contentType: String = "text/plain; charset=utf-8",
                         headOnly: Bool = false, extra: [(String, String)] = []) {
        var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
        buffer.writeString(body)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(buffer.readableBytes)")
        headers.add(name: "Cache-Control", value: "no-store")
        for (name, value) in extra { headers.add(name: name, value: value) }
        // One request per connection: a browser polling /state opens a new one each time.
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if !headOnly { context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

private extension Array where Element == String {
    func splitPair() -> (String, String) { (self.first ?? "", count > 1 ? self[1] : "") }
}

/// The first handler of each connection: it counts the bytes of the request in progress and
/// answers 431 and closes when a request head grows past the limit, before the HTTP decoder
/// buffers it. GET and HEAD have no body, so a request is its head.
/// The first handler of a connection's pipeline, next to the socket: a viewer writes its
/// multipart parts through it, past the HTTP handlers (the response head has gone through them;
/// the parts are bytes of its body, which HTTP/1.0 sends as they are), so a part costs no walk
/// through the HTTP encoder, its validator and error handler. Used on the channel's event loop only.
final class PartWriter: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func write(_ buffer: ByteBuffer) {
        context?.write(wrapOutboundOut(buffer), promise: nil)
    }

    /// Writes `buffer`, flushes, and completes when the socket took it (fails once the channel is gone).
    func writeAndFlush(_ buffer: ByteBuffer, on loop: any EventLoop) -> EventLoopFuture<Void> {
        guard let context else { return loop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
        let promise = loop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: promise)
        return promise.futureResult
    }
}

final class RequestGuard: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let limit: Int
    private var bytes = 0
    private var refused = false

    init(limit: Int) { self.limit = limit }

    /// The request handler took a whole request: the next one counts from zero.
    func requestDone() { bytes = 0 }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        let buffer = unwrapInboundIn(data)
        bytes += buffer.readableBytes
        if bytes > limit {
            refused = true
            var answer = context.channel.allocator.buffer(capacity: 160)
            let body = "the request head is over \(limit) bytes\n"
            answer.writeString("HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)")
            // Half-close, then drain: closing with the client's bytes unread would reset the
            // connection before it reads the answer. The rest is dropped (refused), and the
            // connection closed in two seconds whatever the client does.
            let channel = context.channel
            context.writeAndFlush(NIOAny(answer)).whenComplete { _ in
                channel.close(mode: .output, promise: nil)
                channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
            }
            return
        }
        context.fireChannelRead(data)
    }
}

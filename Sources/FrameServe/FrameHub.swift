import NIOConcurrencyHelpers
import NIOCore
import V4L2

/// One published picture: a JPEG every viewer sends from as it is (no copy per viewer), with
/// the captured frame's sequence and driver timestamp. A placeholder has no sequence.
struct PublishedFrame: Sendable {
    var jpeg: ByteBuffer
    var width: UInt32
    var height: UInt32
    /// The driver's sequence number; nil for a generated placeholder.
    var sequence: UInt32?
    /// CLOCK_MONOTONIC nanoseconds: the driver's timestamp, or when the placeholder was made.
    var timestampNanoseconds: Int64
    /// Counts from 1 for each picture the hub publishes.
    var serial: UInt64
    /// The part's header lines, the same for every viewer, made once per picture: the boundary,
    /// Content-Type, Content-Length, X-Timestamp, X-Frame-Sequence (or X-Frame-Placeholder) and
    /// X-Frame-Serial, without the blank line that ends them.
    var fields: ByteBuffer
    /// `fields` and the blank line: what a viewer without extra headers sends before the JPEG.
    var head: ByteBuffer

    init(jpeg: ByteBuffer, width: UInt32, height: UInt32, sequence: UInt32?, timestampNanoseconds: Int64, serial: UInt64) {
        self.jpeg = jpeg
        self.width = width
        self.height = height
        self.sequence = sequence
        self.timestampNanoseconds = timestampNanoseconds
        self.serial = serial
        var fields = ByteBufferAllocator().buffer(capacity: 192)
        fields.writeString("--\(RequestHandler.boundary)\r\nContent-Type: image/jpeg\r\nContent-Length: \(jpeg.readableBytes)\r\n")
        fields.writeString("X-Timestamp: \(Viewer.seconds(timestampNanoseconds))\r\n")
        if let sequence { fields.writeString("X-Frame-Sequence: \(sequence)\r\n") } else { fields.writeString("X-Frame-Placeholder: 1\r\n") }
        fields.writeString("X-Frame-Serial: \(serial)\r\n")
        var head = fields
        head.writeString("\r\n")
        self.fields = fields
        self.head = head
    }
}

/// The newest picture of one camera and the viewers that want it.
///
/// The capture thread publishes each picture once; each viewer takes it on its own event loop.
/// A viewer has at most one picture in flight and one waiting: a newer picture replaces the one
/// waiting (counted as skipped), so a slow viewer always gets the newest picture and never holds
/// up the capture or the other viewers.
final class FrameHub: Sendable {
    private struct State {
        var latest: PublishedFrame?
        var viewers: [ObjectIdentifier: Viewer] = [:]
        var serial: UInt64 = 0
    }

    private let state = NIOLockedValueBox(State())
    /// Called (outside the lock) whenever the number of viewers changes.
    private let viewersChanged: @Sendable (Int) -> Void

    init(viewersChanged: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.viewersChanged = viewersChanged
    }

    var latest: PublishedFrame? { state.withLockedValue { $0.latest } }
    var viewers: [Viewer] { state.withLockedValue { Array($0.viewers.values) } }
    var viewerCount: Int { state.withLockedValue { $0.viewers.count } }

    /// Makes `jpeg` the newest picture and offers it to every viewer.
    @discardableResult
    func publish(_ jpeg: ByteBuffer, width: UInt32, height: UInt32, sequence: UInt32?, timestampNanoseconds: Int64) -> PublishedFrame {
        let (frame, viewers) = state.withLockedValue { state -> (PublishedFrame, [Viewer]) in
            state.serial += 1
            let frame = PublishedFrame(jpeg: jpeg, width: width, height: height, sequence: sequence,
                                       timestampNanoseconds: timestampNanoseconds, serial: state.serial)
            state.latest = frame
            return (frame, Array(state.viewers.values))
        }
        // One task per event loop for all of its viewers, not one per viewer.
        var batches: [(loop: any EventLoop, viewers: [Viewer])] = []
        for viewer in viewers {
            viewer.countOffer()
            if let index = batches.firstIndex(where: { $0.loop === viewer.eventLoop }) {
                batches[index].viewers.append(viewer)
            } else {
                batches.append((viewer.eventLoop, [viewer]))
            }
        }
        for batch in batches {
            let group = batch.viewers
            batch.loop.execute { for viewer in group { viewer.take(frame) } }
        }
        return frame
    }

    /// Adds a viewer; it gets the newest picture at once, if there is one.
    func add(_ viewer: Viewer) {
        let (latest, count) = state.withLockedValue { state -> (PublishedFrame?, Int) in
            state.viewers[ObjectIdentifier(viewer)] = viewer
            return (state.latest, state.viewers.count)
        }
        viewersChanged(count)
        if let latest { viewer.offer(latest) }
    }

    func remove(_ viewer: Viewer) {
        let count = state.withLockedValue { state -> Int in
            state.viewers[ObjectIdentifier(viewer)] = nil
            return state.viewers.count
        }
        viewersChanged(count)
    }
}

/// A viewer of `/stream`: one HTTP connection that receives a multipart part per picture.
/// Its counters are read by `/state` from other threads.
final class Viewer: Sendable {
    struct Counters: Sendable, Codable {
        /// Pictures offered since it joined, sent in full, and skipped for a newer one.
        var offered = 0
        var sent = 0
        var skipped = 0
        var bytes = 0
    }

    let id: Int
    let address: String
    let joinedNanoseconds: Int64
    private let channel: any Channel
    /// Writes the parts next to the socket, past the HTTP handlers.
    private let writer: PartWriter
    private let extraHeaders: Bool
    /// Touched only on the channel's event loop.
    private let delivery: NIOLoopBoundBox<Delivery>
    private let counters = NIOLockedValueBox(Counters())
    /// Consecutive identical pictures sent, for --drop-same-frames.
    private let dropSame: Int

    private struct Delivery {
        var writing = false
        var pending: PublishedFrame?
        var lastSent: ByteBuffer?
        var sameInARow = 0
    }

    init(id: Int, channel: any Channel, writer: PartWriter, address: String, extraHeaders: Bool, dropSameFrames: Int, now: Int64) {
        self.id = id
        self.channel = channel
        self.writer = writer
        self.address = address
        self.extraHeaders = extraHeaders
        self.dropSame = dropSameFrames
        self.joinedNanoseconds = now
        self.delivery = NIOLoopBoundBox(Delivery(), eventLoop: channel.eventLoop)
    }

    var snapshot: Counters { counters.withLockedValue { $0 } }

    var eventLoop: any EventLoop { channel.eventLoop }

    /// From any thread: the newest picture for this viewer.
    func offer(_ frame: PublishedFrame) {
        countOffer()
        channel.eventLoop.execute { self.take(frame) }
    }

    /// Counts a picture offered; ``take(_:)`` follows on the viewer's event loop.
    func countOffer() {
        counters.withLockedValue { $0.offered += 1 }
    }

    /// On the viewer's event loop: sends `frame` now, or keeps it as the one waiting.
    func take(_ frame: PublishedFrame) {
        if delivery.value.writing {
            if delivery.value.pending != nil { counters.withLockedValue { $0.skipped += 1 } }
            delivery.value.pending = frame
            return
        }
        write(frame)
    }

    private func write(_ frame: PublishedFrame) {
        // --drop-same-frames N: a picture identical to the last one sent is skipped, N times in a row at most.
        if dropSame > 0, let last = delivery.value.lastSent, last == frame.jpeg {
            if delivery.value.sameInARow < dropSame {
                delivery.value.sameInARow += 1
                counters.withLockedValue { $0.skipped += 1 }
                return
            }
        }
        delivery.value.sameInARow = 0
        if dropSame > 0 { delivery.value.lastSent = frame.jpeg }
        delivery.value.writing = true
        // The header lines and the JPEG are the picture's own buffers, shared by every viewer;
        // only the send time of extra headers is made per viewer.
        var size = frame.jpeg.readableBytes + Self.tail.readableBytes
        if extraHeaders {
            var send = channel.allocator.buffer(capacity: 48)
            send.writeString("X-Send-Timestamp: \(Self.seconds(MonotonicClock.nanoseconds()))\r\n\r\n")
            size += frame.fields.readableBytes + send.readableBytes
            writer.write(frame.fields)
            writer.write(send)
        } else {
            size += frame.head.readableBytes
            writer.write(frame.head)
        }
        writer.write(frame.jpeg)
        let done = writer.writeAndFlush(Self.tail, on: channel.eventLoop)
        let sent = size
        done.hop(to: channel.eventLoop).whenComplete { result in
            self.delivery.value.writing = false
            guard case .success = result else { return }
            self.counters.withLockedValue {
                $0.sent += 1
                $0.bytes += sent
            }
            if let next = self.delivery.value.pending {
                self.delivery.value.pending = nil
                self.write(next)
            }
        }
    }

    /// The CRLF after a part's JPEG, one buffer for every part.
    private static let tail: ByteBuffer = {
        var tail = ByteBufferAllocator().buffer(capacity: 2)
        tail.writeString("\r\n")
        return tail
    }()

    /// Seconds with microseconds, as ustreamer's X-Timestamp.
    static func seconds(_ nanoseconds: Int64) -> String {
        let micros = nanoseconds / 1000
        let fraction = String(micros % 1_000_000)
        return "\(micros / 1_000_000).\(String(repeating: "0", count: 6 - fraction.count))\(fraction)"
    }
}

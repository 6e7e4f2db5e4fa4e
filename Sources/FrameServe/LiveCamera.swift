import Dispatch
import FrameBridge
import FrameDump
import NIOConcurrencyHelpers
import NIOCore
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// One camera of the server: a capture thread that takes frames from a ``CapturePin``,
/// makes each one JPEG once (encoded with libjpeg-turbo, or an MJPEG frame as it came) and
/// publishes it to the camera's ``FrameHub``, from which every viewer sends.
///
/// Lifetime of a frame: the pin hands the thread a ``StreamPointer`` (the frame's only
/// reference: `keepLeadingEdge: false`); the thread locks it, encodes or copies the payload
/// into a new buffer and releases the pointer, so the buffer is queued to the driver again
/// before any viewer sends a byte. Viewers hold the JPEG, never the driver's buffer: a slow
/// viewer cannot starve the capture.
///
/// A source that goes away does not end the stream: on a lost signal or an unplug the viewers
/// get a placeholder picture (NO SIGNAL, DISCONNECTED) at the last size, once a second, until
/// the pin follows the source change or the device comes back.
final class LiveCamera: Sendable {
    let index: Int
    let options: ServeOptions.Camera
    let serve: ServeOptions
    let hub: FrameHub
    private let status: NIOLockedValueBox<CameraStatus>
    private let control = NIOLockedValueBox(Control())
    /// Signalled when the viewer count changes or a stop is asked, for an idle camera's wait.
    private let nudge = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    private struct Control {
        var started = false
        var stopRequested = false
        var pin: CapturePin?
        var viewers = 0
        var lastViewerLeft: Int64 = 0
        /// Why the camera stopped for good (the server then exits 1), if it did.
        var failure: String?
    }

    init(index: Int, options: ServeOptions.Camera, serve: ServeOptions) {
        self.index = index
        self.options = options
        self.serve = serve
        status = NIOLockedValueBox(CameraStatus(index: index, device: options.path,
                                                encoder: "libjpeg-turbo, quality \(serve.quality)"))
        let control = self.control
        let nudge = self.nudge
        hub = FrameHub(viewersChanged: { count in
            control.withLockedValue { control in
                if count == 0 && control.viewers > 0 { control.lastViewerLeft = MonotonicClock.nanoseconds() }
                control.viewers = count
            }
            nudge.signal()
        })
    }

    var state: CameraStatus {
        var state = status.withLockedValue { $0 }
        state.viewers = hub.viewers.map { ViewerState($0) }.sorted { $0.id < $1.id }
        state.capturedFps = state.fpsMeter.rate
        state.sentFps = state.viewers.map(\.fps).max() ?? 0
        return state
    }

    var failure: String? { control.withLockedValue { $0.failure } }

    /// Starts the capture thread.
    func start() {
        control.withLockedValue { $0.started = true }
        // A queue of its own: the capture thread blocks in the pin's poll, never on NIO's loops.
        DispatchQueue(label: "framedump.serve.camera\(index)").async { [self] in
            run()
            finished.signal()
        }
    }

    /// Stops the capture and waits for its thread to end.
    func stop() {
        let (pin, started) = control.withLockedValue { control -> (CapturePin?, Bool) in
            let started = control.started
            control.started = false
            control.stopRequested = true
            return (control.pin, started)
        }
        pin?.stop()
        nudge.signal()
        if started { finished.wait() }
    }

    private var stopRequested: Bool { control.withLockedValue { $0.stopRequested } }

    private func update(_ body: (inout CameraStatus) -> Void) { status.withLockedValue(body) }

    // MARK: - The capture thread

    private func run() {
        var pin: CapturePin?
        var identity: (bus: String, card: String)?
        var size = (options.format.width ?? 640, options.format.height ?? 480)
        var lastPlaceholder: Int64 = 0
        var troubleSince: Int64?
        /// Set by an unplug, cleared when the device is open again (counted as a reconnect).
        var awaitingReturn = false
        let encoder: JPEGEncoder
        do {
            encoder = try JPEGEncoder(quality: serve.quality)
        } catch {
            giveUp("\(options.path): \(error)")
            return
        }

        func placeholder(_ reason: Placeholder.Reason, every seconds: Double = 1) {
            let now = MonotonicClock.nanoseconds()
            guard Double(now - lastPlaceholder) >= seconds * 1e9, let jpeg = Placeholder.jpeg(reason, width: size.0, height: size.1) else { return }
            lastPlaceholder = now
            hub.publish(jpeg, width: size.0, height: size.1, sequence: nil, timestampNanoseconds: now)
            update { $0.placeholders += 1 }
        }

        func close() {
            pin?.stop()
            pin = nil
            control.withLockedValue { $0.pin = nil }
        }

        while !stopRequested {
            // --idle-stop: no viewer for that long closes the device; the next viewer opens it.
            if let idle = serve.idleStopSeconds {
                let (viewers, left) = control.withLockedValue { ($0.viewers, $0.lastViewerLeft) }
                if viewers == 0 && (pin == nil || Double(MonotonicClock.nanoseconds() - left) >= idle * 1e9) {
                    if pin != nil { close() }
                    update { $0.status = "idle"; $0.detail = "no viewer: the device is closed until one comes (--idle-stop)" }
                    _ = nudge.wait(timeout: .now() + .milliseconds(500))
                    continue
                }
            }
            if pin == nil {
                do {
                    let opened = try open(identity: identity)
                    pin = opened.pin
                    identity = (opened.device.capabilities.busInfo, opened.device.capabilities.card)
                    control.withLockedValue { $0.pin = opened.pin }
                    let format = opened.pin.format
                    size = (format.width, format.height)
                    troubleSince = nil
                    let returned = awaitingReturn
                    awaitingReturn = false
                    update {
                        $0.started(format: format, pin: opened.pin, path: opened.device.path)
                        if returned { $0.reconnects += 1 }
                    }
                    if stopRequested { break }
                } catch {
                    let disconnected = identity != nil
                    update { $0.status = disconnected ? "disconnected" : "starting"; $0.detail = "\(error)" }
                    placeholder(disconnected ? .disconnected : .starting)
                    if !disconnected && !serve.reconnect {
                        giveUp("\(error)")
                        break
                    }
                    if let limit = serve.reconnectTimeoutSeconds {
                        let since = troubleSince ?? MonotonicClock.nanoseconds()
                        troubleSince = since
                        if Double(MonotonicClock.nanoseconds() - since) >= limit * 1e9 {
                            giveUp("\(options.path): the device did not come back within \(limit) s (--reconnect-timeout): \(error)")
                            break
                        }
                    }
                    _ = nudge.wait(timeout: .now() + .milliseconds(250))
                    continue
                }
            }
            guard let current = pin else { continue }
            do {
                guard var event = try current.nextEvent(timeout: .milliseconds(500), keepLeadingEdge: false) else {
                    if let loss = current.signalLoss {
                        placeholder(.noSignal)
                        if checkSignalLimit(since: &troubleSince, loss: loss) { break }
                    }
                    continue
                }
                // A live view wants the newest picture: frames that queued up while the last one
                // was encoded are passed over (each goes back to the driver as the next replaces
                // it), so a viewer is never shown a frame that waited in the driver's queue.
                // Only a frame older than one frame period can have a newer one behind it: a
                // frame on time costs no extra poll.
                let now = MonotonicClock.nanoseconds()
                var passedOver = 0
                if let taken = event.frameTimestamp, now - taken > Self.period(current.frameInterval) {
                    while event.isFrame, let newer = try current.nextEvent(timeout: .zero, keepLeadingEdge: false) {
                        event = newer
                        passedOver += 1
                    }
                }
                if passedOver > 0 { update { $0.passedOver += passedOver } }
                switch consume event {
                case .frame(var pointer):
                    let format = current.format
                    let info = pointer.info
                    let jpeg: ByteBuffer = try pointer.withLockedPayload { (payload: borrowing FramePayload) throws(ServeError) -> ByteBuffer in
                        if format.pixelFormat.isJPEG {
                            let bytes = payload.unsafeCompressedBytes
                            var buffer = ByteBufferAllocator().buffer(capacity: bytes.count)
                            buffer.writeBytes(bytes)
                            return buffer
                        }
                        return try encoder.encode(payload, format: format)
                    }
                    pointer.release()
                    size = (format.width, format.height)
                    troubleSince = nil
                    // Counted before it is offered: a viewer that has frame N finds it in /state.
                    let statistics = current.statistics
                    update { $0.captured(statistics: statistics, bytes: jpeg.readableBytes, at: now) }
                    hub.publish(jpeg, width: format.width, height: format.height, sequence: info.sequence,
                                timestampNanoseconds: info.timestampNanoseconds)
                case .formatChanged(let change):
                    size = (change.format.width, change.format.height)
                    troubleSince = nil
                    update { $0.formatChanged(change) }
                case .noSignal(let loss):
                    update { $0.status = "no signal"; $0.detail = loss.description }
                    lastPlaceholder = 0
                    placeholder(.noSignal)
                    troubleSince = troubleSince ?? MonotonicClock.nanoseconds()
                }
            } catch let error as LockedPayloadError<ServeError> {
                if case .body(let failure) = error {
                    update { $0.encodeFailures += 1; $0.detail = failure.description }
                }
            } catch let error as CaptureError {
                if stopRequested { break }
                let statistics = current.statistics
                update { $0.addEarlier(statistics) }
                close()
                let unplugged = error.kind == .disconnected
                if unplugged { awaitingReturn = true }
                // Counted before the placeholder goes out: a viewer that sees it finds the unplug in /state.
                update {
                    $0.status = unplugged ? "disconnected" : "restarting"
                    $0.detail = error.message
                    if unplugged { $0.disconnects += 1 }
                }
                lastPlaceholder = 0
                placeholder(unplugged ? .disconnected : .noSignal)
                if unplugged && !serve.reconnect {
                    giveUp("\(error.message) (serve --reconnect waits for it to come back)")
                    break
                }
                troubleSince = MonotonicClock.nanoseconds()
                // A fatal driver error: the pin opens the device again; an unplug: it waits for it.
                if !unplugged { identity = nil }
            } catch {
                update { $0.detail = "\(error)" }
            }
        }
        close()
        update { if $0.status != "ended" { $0.status = "stopped" } }
    }

    /// Nanoseconds per frame at `interval`; 1/30 s when the driver gives none.
    private static func period(_ interval: Fraction?) -> Int64 {
        guard let interval, interval.numerator > 0, interval.denominator > 0 else { return 33_333_333 }
        return Int64(interval.numerator) * 1_000_000_000 / Int64(interval.denominator)
    }

    /// Ends the camera with `message`: the server exits 1 with it.
    private func giveUp(_ message: String) {
        control.withLockedValue { $0.failure = message }
        update { $0.status = "ended"; $0.detail = message }
    }

    /// With --wait-for-signal S, gives up once the signal has been gone for S seconds.
    private func checkSignalLimit(since: inout Int64?, loss: SignalLoss) -> Bool {
        let start = since ?? MonotonicClock.nanoseconds()
        since = start
        guard let limit = serve.waitForSignalSeconds, Double(MonotonicClock.nanoseconds() - start) >= limit * 1e9 else { return false }
        giveUp("\(options.path): no signal for \(limit) s (--wait-for-signal): \(loss)")
        return true
    }

    /// Opens the device (or, after an unplug, the device with the same bus and card, whatever
    /// its node number now) and starts a pin on it.
    private func open(identity: (bus: String, card: String)?) throws -> (device: VideoDevice, pin: CapturePin) {
        var device: VideoDevice?
        if let identity {
            for path in DeviceListing.videoDevicePaths() {
                guard let candidate = try? VideoDevice(path: path, backend: options.backend) else { continue }
                let caps = candidate.capabilities
                if caps.busInfo == identity.bus && caps.card == identity.card && caps.canCapture {
                    device = candidate
                    break
                }
            }
            guard let device else { throw ServeError.runtime("\(options.path): waiting for the device (bus \(identity.bus), card \(identity.card)) to come back") }
            return try startPin(on: device)
        }
        device = try VideoDevice(path: options.path, backend: options.backend)
        return try startPin(on: device!)
    }

    private func startPin(on device: VideoDevice) throws -> (device: VideoDevice, pin: CapturePin) {
        let pin = try CapturePin(device: device, configuration: options.format.pinConfiguration(errorFramePolicy: .skip, corruptFramePolicy: .skip))
        let format = pin.format
        guard format.pixelFormat.isJPEG || JPEGEncoder.canEncode(format.pixelFormat) else {
            throw ServeError.usage("\(device.path): pixel format \(format.pixelFormat) cannot be served; use --pixel-format with one of \(JPEGEncoder.formats.map(\.description).joined(separator: ", ")) or MJPG")
        }
        let candidate = try AllocatorPlan.candidate(memory: options.memory, source: options.dmabufSource, format: format, backend: options.backend)
        let result = try pin.start(AllocatorPlan.selection(candidate: candidate, memory: options.memory, frameCount: options.buffers, framing: pin.framing))
        if result.fellBackToDefault, options.memory != .mmap {
            pin.stop()
            throw ServeError.runtime("\(device.path): --memory \(options.memory) was rejected: \(result.rejections.map(\.description).joined(separator: "; "))")
        }
        return (device, pin)
    }
}

extension PinEvent {
    /// Whether this is a frame (read without consuming the event).
    fileprivate var isFrame: Bool {
        switch self {
        case .frame: true
        case .formatChanged: false
        case .noSignal: false
        }
    }

    /// A frame's driver timestamp (CLOCK_MONOTONIC nanoseconds); nil for another event.
    fileprivate var frameTimestamp: Int64? {
        switch self {
        case .frame(let pointer): pointer.info.timestampNanoseconds
        case .formatChanged: nil
        case .noSignal: nil
        }
    }
}

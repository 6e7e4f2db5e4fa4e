import FrameBridge
import V4L2

/// Frames per second over the last whole second.
struct FPSMeter: Sendable {
    private var windowStart: Int64 = 0
    private var count = 0
    private(set) var rate = 0.0

    mutating func tick(at now: Int64) {
        if windowStart == 0 { windowStart = now }
        count += 1
        let elapsed = now - windowStart
        if elapsed >= 1_000_000_000 {
            rate = Double(count) * 1e9 / Double(elapsed)
            windowStart = now
            count = 0
        }
    }
}

/// One viewer in `/state`.
struct ViewerState: Codable, Sendable {
    var id: Int
    var address: String
    var seconds: Double
    /// Pictures offered to it, sent in full, and skipped because a newer one came first.
    var offered: Int
    var sent: Int
    var skipped: Int
    var bytes: Int
    var fps: Double

    init(_ viewer: Viewer) {
        let counters = viewer.snapshot
        let seconds = Double(MonotonicClock.nanoseconds() - viewer.joinedNanoseconds) / 1e9
        id = viewer.id
        address = viewer.address
        self.seconds = (seconds * 10).rounded() / 10
        offered = counters.offered
        sent = counters.sent
        skipped = counters.skipped
        bytes = counters.bytes
        fps = seconds > 0 ? (Double(counters.sent) / seconds * 10).rounded() / 10 : 0
    }
}

/// One camera in `/state`.
struct CameraStatus: Codable, Sendable {
    struct Format: Codable, Sendable {
        var width: UInt32
        var height: UInt32
        var pixelFormat: String
        var fps: Double?
    }

    var index: Int
    var device: String
    /// starting, streaming, no signal, disconnected, restarting, idle, stopped, ended.
    var status = "starting"
    var detail: String?
    var format: Format?
    /// "libjpeg-turbo, quality N", or "passthrough (MJPEG from the camera)".
    var encoder: String
    /// Frames taken from the driver and published, over all of the camera's streams.
    var captured = 0
    var capturedFps = 0.0
    var sentFps = 0.0
    var bytesPublished = 0
    /// Frames taken from the driver but not published because a newer one was already waiting
    /// (the capture fell behind: encoding took longer than a frame period).
    var passedOver = 0
    /// Placeholder pictures published (NO SIGNAL, DISCONNECTED).
    var placeholders = 0
    var encodeFailures = 0
    /// What the driver dropped or flagged (CaptureStatistics over every stream of the camera).
    var driverDropped = 0
    var errorFrames = 0
    var corruptFrames = 0
    var driverViolations = 0
    var sourceChanges = 0
    /// Unplugs seen, and returns of the unplugged device (opened and streaming again).
    var disconnects = 0
    var reconnects = 0
    var viewers: [ViewerState] = []

    var fpsMeter = FPSMeter()
    /// The counts of the pins before the current one.
    private var earlier = CaptureStatistics()

    enum CodingKeys: String, CodingKey {
        case index, device, status, detail, format, encoder, captured, capturedFps, sentFps, bytesPublished, passedOver, placeholders,
             encodeFailures, driverDropped, errorFrames, corruptFrames, driverViolations, sourceChanges, disconnects, reconnects, viewers
    }

    init(index: Int, device: String, encoder: String) {
        self.index = index
        self.device = device
        self.encoder = encoder
    }

    mutating func started(format: ImageFormat, pin: CapturePin, path: String) {
        status = "streaming"
        detail = nil
        device = path
        setFormat(format, interval: pin.frameInterval)
    }

    mutating func formatChanged(_ change: FormatChange) {
        status = "streaming"
        detail = "the source changed to \(change.format.width)x\(change.format.height)"
        setFormat(change.format, interval: change.frameInterval)
    }

    private mutating func setFormat(_ format: ImageFormat, interval: Fraction?) {
        let fps = interval.flatMap { $0.numerator > 0 ? Double($0.denominator) / Double($0.numerator) : nil }
        self.format = Format(width: format.width, height: format.height, pixelFormat: format.pixelFormat.description, fps: fps)
        if format.pixelFormat.isJPEG { encoder = "passthrough (\(format.pixelFormat) from the camera, validated)" }
    }

    /// A frame published; `now` is when it was taken from the driver.
    mutating func captured(statistics: CaptureStatistics, bytes: Int, at now: Int64) {
        status = "streaming"
        detail = nil
        captured += 1
        bytesPublished += bytes
        fpsMeter.tick(at: now)
        let total = earlier.adding(statistics)
        driverDropped = total.dropped
        errorFrames = total.errorFlagged
        corruptFrames = total.corruptSkipped + total.corruptDelivered
        driverViolations = total.driverViolations
        sourceChanges = total.sourceChanges
    }

    /// A pin ended (unplug, fatal error): its counts join those before it.
    mutating func addEarlier(_ statistics: CaptureStatistics) {
        earlier = earlier.adding(statistics)
    }
}

/// The whole of `/state`.
struct ServerState: Codable, Sendable {
    var listen: String
    var clients: Int
    var maxClients: Int
    var cameras: [CameraStatus]
}

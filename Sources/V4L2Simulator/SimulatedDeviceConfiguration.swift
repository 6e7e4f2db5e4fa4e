import V4L2

/// When a simulated device fills the buffers queued to it.
public enum SimulatedFrameProduction: Sendable, Hashable {
    /// An infinitely fast driver: every VIDIOC_DQBUF and poll that finds no filled buffer
    /// fills the oldest queued buffer at once. Good for benchmarks.
    case onDemand
    /// Buffers are filled only when a test calls ``SimulatedV4L2Backend/produceFrames(path:count:)``.
    case manual
}

/// A frame size, in pixels.
public struct SimulatedFrameSize: Sendable, Hashable {
    public var width: UInt32
    public var height: UInt32
    public init(width: UInt32, height: UInt32) {
        self.width = width
        self.height = height
    }
}

/// The frame sizes a simulated device offers (VIDIOC_ENUM_FRAMESIZES) for every pixel format.
public enum SimulatedFrameSizes: Sendable, Hashable {
    /// A list of sizes; S_FMT/TRY_FMT pick the nearest one, as webcams do.
    case discrete([SimulatedFrameSize])
    /// Any size in a range on a grid; S_FMT/TRY_FMT clamp and round to it.
    case stepwise(minWidth: UInt32, maxWidth: UInt32, stepWidth: UInt32,
                  minHeight: UInt32, maxHeight: UInt32, stepHeight: UInt32)

    /// The webcam sizes of vivid, up to 1080p.
    public static let webcam = SimulatedFrameSizes.discrete([
        SimulatedFrameSize(width: 320, height: 180),
        SimulatedFrameSize(width: 640, height: 360),
        SimulatedFrameSize(width: 640, height: 480),
        SimulatedFrameSize(width: 1280, height: 720),
        SimulatedFrameSize(width: 1920, height: 1080),
    ])
}

/// The MJPEG format of a simulated camera: real baseline JPEG pictures, encoded with
/// TurboJPEG from a test pattern when the format is first streamed, one per variant, the
/// variants cycling with the sequence number.
public struct SimulatedMJPEG: Sendable, Hashable {
    /// TurboJPEG subsampling (`TJSAMP_420` = 2, `TJSAMP_422` = 1, ...).
    public var subsampling: Int32
    public var quality: Int32
    /// Different pictures (a square moves across colour bars); frame `n` is variant `n % variants`.
    public var variants: Int
    /// Zero bytes after the EOI marker, inside bytesused (cameras pad frames).
    public var trailingPadding: Int
    /// sizeimage; nil for width x height x 2 (typical of a UVC camera's dwMaxVideoFrameSize).
    public var maximumFrameSize: UInt32?

    public init(subsampling: Int32 = 2, quality: Int32 = 85, variants: Int = 4, trailingPadding: Int = 0,
                maximumFrameSize: UInt32? = nil) {
        self.subsampling = subsampling
        self.quality = quality
        self.variants = max(1, variants)
        self.trailingPadding = max(0, trailingPadding)
        self.maximumFrameSize = maximumFrameSize
    }
}

/// The source plugged into a simulated device's HDMI input (input 3): what it sends at first.
/// Tests change it while the device streams with ``SimulatedV4L2Backend/changeSource(path:width:height:)``
/// and ``SimulatedV4L2Backend/setSignal(path:present:)``.
public struct SimulatedHDMISource: Sendable, Hashable {
    /// The picture size of the source's timings (60 frames a second; CEA-861 timings for
    /// 640x480, 1280x720 and 1920x1080, CVT reduced blanking for other sizes).
    public var width: UInt32
    public var height: UInt32
    /// False: nothing is plugged in (QUERY_DV_TIMINGS is ENOLINK, ENUMINPUT says no signal).
    public var hasSignal: Bool

    public init(width: UInt32 = 1280, height: UInt32 = 720, hasSignal: Bool = true) {
        self.width = width
        self.height = height
        self.hasSignal = hasSignal
    }
}

/// What a simulated V4L2 device looks like and how it behaves.
public struct SimulatedDeviceConfiguration: Sendable, Hashable {
    /// Capture through `V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE` only (else single-planar only).
    /// Multi-planar mode also offers the two-plane NM12 format.
    public var multiplanar: Bool
    /// False makes a video output device, with no capture queue and no inputs.
    public var canCapture: Bool
    /// The memory kinds REQBUFS and CREATE_BUFS accept (reported as `V4L2_BUF_CAP_SUPPORTS_*`).
    public var memoryKinds: Set<MemoryKind>
    /// The fewest buffers the driver works with: the value of V4L2_CID_MIN_BUFFERS_FOR_CAPTURE,
    /// the least REQBUFS allocates, the least STREAMON accepts, and how many must be queued
    /// before the device starts producing frames (videobuf2's `min_queued_buffers`).
    public var minimumBuffers: UInt32
    /// The most buffers a queue can have (at most 32).
    public var maximumBuffers: UInt32
    /// Multi-planar mode only: where the pixels start in plane 0 (`data_offset`; vivid uses 128).
    /// Plane 0's `sizeimage` and `bytesused` include it.
    public var dataOffset: UInt32
    /// QUERYCAP `driver`.
    public var driver: String
    /// QUERYCAP `card`.
    public var card: String
    /// QUERYCAP `bus_info`.
    public var busInfo: String
    /// QUERYCAP `version` (`KERNEL_VERSION(major, minor, patch)`).
    public var driverVersion: UInt32
    /// The frame sizes offered for every format.
    public var frameSizes: SimulatedFrameSizes
    /// The frame intervals offered for every format and size (seconds per frame); the first is the default.
    public var frameIntervals: [Fraction]
    /// The format the device starts with.
    public var initialPixelFormat: FourCC
    public var initialWidth: UInt32
    public var initialHeight: UInt32
    /// When buffers are filled.
    public var production: SimulatedFrameProduction
    /// Whether frames get the ``SimulatedPattern`` bytes; false leaves the memory untouched
    /// (for benchmarks that measure everything but the copy).
    public var fillsPayload: Bool
    /// Offer MJPEG (single-planar devices only; last in ENUM_FMT, flagged compressed); nil for none.
    public var mjpeg: SimulatedMJPEG?
    /// Makes input 3 ("HDMI 3") a live DV-timings input with this source: DV timings, its
    /// signal status in ENUMINPUT, and V4L2_EVENT_SOURCE_CHANGE events. Nil (the default): the
    /// input is listed but has no source, and the DV-timings and event ioctls are ENOTTY.
    public var hdmiSource: SimulatedHDMISource?

    public init(multiplanar: Bool = false,
                canCapture: Bool = true,
                memoryKinds: Set<MemoryKind> = [.mmap, .userPointer, .dmabuf],
                minimumBuffers: UInt32 = 2,
                maximumBuffers: UInt32 = 32,
                dataOffset: UInt32 = 0,
                driver: String = "v4l2sim",
                card: String = "Simulated Camera",
                busInfo: String = "platform:v4l2sim-000",
                driverVersion: UInt32 = (6 << 16) | (1 << 8),
                frameSizes: SimulatedFrameSizes = .webcam,
                frameIntervals: [Fraction] = [Fraction(1, 30), Fraction(1, 60)],
                initialPixelFormat: FourCC = .yuyv,
                initialWidth: UInt32 = 640,
                initialHeight: UInt32 = 360,
                production: SimulatedFrameProduction = .onDemand,
                fillsPayload: Bool = true,
                mjpeg: SimulatedMJPEG? = nil,
                hdmiSource: SimulatedHDMISource? = nil) {
        self.multiplanar = multiplanar
        self.canCapture = canCapture
        self.memoryKinds = memoryKinds
        self.minimumBuffers = minimumBuffers
        self.maximumBuffers = maximumBuffers
        self.dataOffset = dataOffset
        self.driver = driver
        self.card = card
        self.busInfo = busInfo
        self.driverVersion = driverVersion
        self.frameSizes = frameSizes
        self.frameIntervals = frameIntervals
        self.initialPixelFormat = initialPixelFormat
        self.initialWidth = initialWidth
        self.initialHeight = initialHeight
        self.production = production
        self.fillsPayload = fillsPayload
        self.mjpeg = mjpeg
        self.hdmiSource = hdmiSource
    }

    /// The buffer type of the device's one queue.
    public var bufferType: BufferType {
        switch (canCapture, multiplanar) {
        case (true, false): return .videoCapture
        case (true, true): return .videoCaptureMultiplanar
        case (false, false): return .videoOutput
        case (false, true): return .videoOutputMultiplanar
        }
    }
}

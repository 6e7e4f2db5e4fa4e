import Synchronization
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// How a pin sets up its device before streaming. Unset fields keep the device's values.
public struct PinConfiguration: Sendable {
    /// The video input to select (VIDIOC_S_INPUT).
    public var input: UInt32?
    public var pixelFormat: FourCC?
    public var width: UInt32?
    public var height: UInt32?
    /// Bytes per line of the first plane (S_FMT's bytesperline): padding at the end of each
    /// line, where the driver supports it. nil lets the driver choose.
    public var bytesPerLine: UInt32?
    /// Frames per second to ask for (VIDIOC_S_PARM).
    public var framesPerSecond: Double?
    /// Controls to set before streaming, by v4l2-ctl name (`osd_text_mode`) and value.
    public var controls: [(name: String, value: Int64)]
    /// Use the multi-planar queue even if the device also has a single-planar one.
    public var preferMultiplanar: Bool
    /// Frames held behind the leading edge (the distinct trailing edge); 0 for none.
    public var trailingWindow: Int
    public var starvationPolicy: StarvationPolicy
    public var errorFramePolicy: ErrorFramePolicy
    /// What happens to a compressed frame that fails validation (``CompressedFrameDefects``).
    public var corruptFramePolicy: CorruptFramePolicy
    /// The field order to ask for (S_FMT's field). The driver may choose another (vivid's TV
    /// input makes `none` interlaced): ``CapturePin/format`` says what is in force.
    public var field: FieldOrder = .none
    /// Whether the pin follows source changes of its input (``SourceChangePolicy``). After a
    /// change, the size comes from the source; `pixelFormat` and `field` are asked for again,
    /// `width` and `height` are not.
    public var sourceChanges: SourceChangePolicy = .follow

    public init(input: UInt32? = nil, pixelFormat: FourCC? = nil, width: UInt32? = nil, height: UInt32? = nil,
                framesPerSecond: Double? = nil, controls: [(name: String, value: Int64)] = [],
                preferMultiplanar: Bool = false, trailingWindow: Int = 0,
                starvationPolicy: StarvationPolicy = .block, errorFramePolicy: ErrorFramePolicy = .deliver,
                corruptFramePolicy: CorruptFramePolicy = .skip, sourceChanges: SourceChangePolicy = .follow) {
        self.sourceChanges = sourceChanges
        self.input = input
        self.pixelFormat = pixelFormat
        self.width = width
        self.height = height
        self.framesPerSecond = framesPerSecond
        self.controls = controls
        self.preferMultiplanar = preferMultiplanar
        self.trailingWindow = trailingWindow
        self.starvationPolicy = starvationPolicy
        self.errorFramePolicy = errorFramePolicy
        self.corruptFramePolicy = corruptFramePolicy
    }
}

/// A capture pin: the capture queue of an open V4L2 device, with AVStream semantics.
///
/// - ``framing`` reads its framing requirements (KSPROPERTY_CONNECTION_ALLOCATORFRAMING_EX).
/// - ``start(_:)`` selects an allocator (``AllocatorSelection``), initializes it, allocates
///   and queues every frame, and starts streaming.
/// - ``advance(timeout:)`` moves the leading edge onto the next filled buffer
///   (DQBUF); ``cloneLeadingEdge()`` or ``next(timeout:keepLeadingEdge:)`` hand out
///   ``StreamPointer``s that hold frames. A frame goes back to the driver when the last
///   reference to it goes.
/// - ``stop()`` stops streaming (STREAMOFF) and cancels held frames; the allocator frees the
///   memory once no pointer holds a frame.
///
/// Every buffer the driver hands back is checked (index range, state, bytesused <= length,
/// data_offset < bytesused) before it becomes a frame; an impossible answer is counted in
/// ``statistics`` and never delivered.
///
/// Source changes (``PinConfiguration/sourceChanges``, `.follow` by default): on an input with
/// DV timings or analog standards the pin subscribes to V4L2_EVENT_SOURCE_CHANGE. On the event
/// it stops (STREAMOFF, held frames cancelled, buffers given back), applies the detected
/// timings or standard, reads the new format, runs allocator selection again with the
/// selection given to ``start(_:)`` and starts again; ``nextEvent(timeout:keepLeadingEdge:)``
/// reports ``PinEvent/formatChanged(_:)`` before the first frame of the new format. With no
/// signal it stays stopped and waits for the next event.
public final class CapturePin: Sendable {
    public let device: VideoDevice
    public let bufferType: BufferType
    let core: PinCore
    let configuration: PinConfiguration

    /// What the pin is set up with and what changes with the source: the format, its framing,
    /// the last allocator selection, and the follow-up of a source change. The frames' own
    /// state is the core's (`core.state`); this lock is never taken inside that one.
    struct LiveState: Sendable {
        var format: ImageFormat
        var frameInterval: Fraction?
        var framing: AllocatorFraming
        /// The outcome of the last allocator selection.
        var lastSelection: AllocatorSelectionResult?
        /// The selection given to start(), run again after a source change.
        var selection: AllocatorSelection?
        var lastChange: FormatChange?
        var subscription: SourceSubscription?
        /// The event being followed and the frames dropped at it.
        var pendingEvent: DeviceEvent?
        var pendingDropped = 0
        var pendingAfterNoSignal = false
    }

    struct SourceSubscription: Sendable {
        var input: UInt32
        /// True for DV timings (HDMI), false for analog standards.
        var digital: Bool
    }

    let live: Locked<LiveState>

    /// The format in force (after the driver adjusted the requested one); after a source
    /// change, the new one.
    public var format: ImageFormat { live.withLock { $0.format } }
    /// The frame interval in force, if the driver reports one.
    public var frameInterval: Fraction? { live.withLock { $0.frameInterval } }
    /// How many source changes the pin followed: it moves on (before the first frame of the new
    /// format) each time the pin restarts in a new format, so a caller of ``next(timeout:keepLeadingEdge:)``
    /// can tell.
    public var formatGeneration: UInt64 { core.state.withLock { $0.formatGeneration } }
    /// The last source change followed.
    public var lastFormatChange: FormatChange? { live.withLock { $0.lastChange } }
    /// Why the pin waits for a signal, while it does.
    public var signalLoss: SignalLoss? { core.state.withLock { $0.machine.signalLoss } }
    /// Whether the pin is between a source change and its restart, or waits for a signal.
    public var isFollowingSourceChange: Bool { core.followingSource.load(ordering: .acquiring) }

    /// Opens the capture queue of `device` and applies `configuration`: input, format, frame
    /// rate and controls. A format or size the driver cannot do is an error, not a silent change.
    public init(device: VideoDevice, configuration: PinConfiguration = PinConfiguration()) throws(CaptureError) {
        let bufferType = try CapturePin.bufferType(of: device, configuration: configuration)
        self.device = device
        self.bufferType = bufferType
        self.configuration = configuration
        let (format, frameInterval, framing) = try CapturePin.capturingErrors(of: device) {
            if let input = configuration.input {
                try device.selectInput(input)
            }
            let negotiated = try CapturePin.negotiateFormat(device: device, bufferType: bufferType, configuration: configuration, commit: true)
            try CapturePin.applyRateAndControls(device: device, bufferType: bufferType, configuration: configuration)
            // A control can change the format's colorimetry (vivid's hsv_encoding, colorspace,
            // quantization): the format in force is read again after the controls.
            let format = configuration.controls.isEmpty ? negotiated : try device.format(bufferType)
            return (format, try device.frameInterval(bufferType), try AllocatorFraming.query(device: device, bufferType: bufferType))
        }
        live = Locked(LiveState(format: format, frameInterval: frameInterval, framing: framing))
        let validation: FrameValidation = !framing.isCompressed ? .uncompressed : (framing.pixelFormat.isJPEG ? .jpeg : .compressed)
        core = try PinCore(device: device, bufferType: bufferType, trailingWindow: configuration.trailingWindow,
                       starvationPolicy: configuration.starvationPolicy, errorFramePolicy: configuration.errorFramePolicy,
                       corruptFramePolicy: configuration.corruptFramePolicy, validation: validation)
    }

    deinit {
        stop()
    }

    // MARK: - Framing and selection

    /// The pin's framing requirements (read-only; the KSPROPERTY_CONNECTION_ALLOCATORFRAMING_EX analog).
    public var framing: AllocatorFraming { live.withLock { $0.framing } }

    /// The outcome of the last allocator selection, with the reasons for rejected candidates.
    public var selection: AllocatorSelectionResult? { live.withLock { $0.lastSelection } }

    /// The allocator in use while streaming.
    public var allocator: (any AllocatorDispatch)? { core.state.withLock { $0.allocator } }

    // MARK: - Streaming

    /// Whether the pin is streaming.
    public var isStreaming: Bool { core.state.withLock { $0.machine.isStreaming } }

    // MARK: - Introspection

    /// The stream's counters.
    public var statistics: CaptureStatistics { core.state.withLock { $0.statistics } }

    /// How many buffers are in each state: queued to the driver, held by references, free.
    public var bufferCounts: (queued: Int, held: Int, free: Int) {
        core.state.withLock { state in
            var counts = (queued: 0, held: 0, free: 0)
            for slot in state.slots {
                switch slot.state {
                case .queued: counts.queued += 1
                case .held: counts.held += 1
                case .free: counts.free += 1
                }
            }
            return counts
        }
    }

    /// The number of stream pointers alive.
    public var livePointers: Int { core.state.withLock { $0.livePointers } }

    /// The number of frames (the driver's buffers) while streaming; 0 before ``start(_:)``.
    public var frameCount: Int { core.state.withLock { $0.slots.count } }

    /// Reads the format and the framing from the device again, for a format another call has
    /// changed: on a memory-to-memory device, setting the OUTPUT format changes the CAPTURE one
    /// (an encoder's coded size and sizeimage follow the raw frames'). Only while not streaming.
    public func reloadFormat() throws(CaptureError) {
        guard !isStreaming else {
            throw CaptureError(.invalidState, "\(device.path): the format cannot be read again while streaming")
        }
        let bufferType = self.bufferType
        let device = self.device
        let (format, interval, framing) = try CapturePin.capturingErrors(of: device) {
            (try device.format(bufferType), try? device.frameInterval(bufferType),
             try AllocatorFraming.query(device: device, bufferType: bufferType))
        }
        live.withLock {
            $0.format = format
            $0.frameInterval = interval ?? nil
            $0.framing = framing
        }
    }

    /// The error that stopped the stream, if one did.
    public var failure: CaptureError? { core.state.withLock { $0.machine.failure } }
}

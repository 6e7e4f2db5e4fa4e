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
/// - ``advance(timeoutMilliseconds:)`` moves the leading edge onto the next filled buffer
///   (DQBUF); ``cloneLeadingEdge()`` or ``next(timeoutMilliseconds:)`` hand out
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
    private let framingCache: Locked<AllocatorFraming>
    private let lastSelection = Locked<AllocatorSelectionResult?>(nil)

    /// What changes with the source: the format and its framing, and the follow-up state.
    private struct LiveState: Sendable {
        var format: ImageFormat
        var frameInterval: Fraction?
        /// The selection given to start(), run again after a source change.
        var selection: AllocatorSelection?
        var lastChange: FormatChange?
        var subscription: SourceSubscription?
        /// The event being followed and the frames dropped at it.
        var pendingEvent: DeviceEvent?
        var pendingDropped = 0
        var pendingAfterNoSignal = false
    }

    private struct SourceSubscription: Sendable {
        var input: UInt32
        /// True for DV timings (HDMI), false for analog standards.
        var digital: Bool
    }

    private let live: Locked<LiveState>

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
    public var signalLoss: SignalLoss? {
        core.state.withLock { state in
            if case .noSignal(let loss, _) = state.source { return loss }
            return nil
        }
    }
    /// Whether the pin is between a source change and its restart, or waits for a signal.
    public var isFollowingSourceChange: Bool { core.followingSource.load(ordering: .acquiring) }

    /// Opens the capture queue of `device` and applies `configuration`: input, format, frame
    /// rate and controls. A format or size the driver cannot do is an error, not a silent change.
    public init(device: VideoDevice, configuration: PinConfiguration = PinConfiguration()) throws(CaptureError) {
        let bufferType = try CapturePin.bufferType(of: device, configuration: configuration)
        self.device = device
        self.bufferType = bufferType
        self.configuration = configuration
        let format: ImageFormat
        let frameInterval: Fraction?
        do {
            if let input = configuration.input {
                try device.selectInput(input)
            }
            let negotiated = try CapturePin.negotiateFormat(device: device, bufferType: bufferType, configuration: configuration, commit: true)
            try CapturePin.applyRateAndControls(device: device, bufferType: bufferType, configuration: configuration)
            // A control can change the format's colorimetry (vivid's hsv_encoding, colorspace,
            // quantization): the format in force is read again after the controls.
            format = configuration.controls.isEmpty ? negotiated : try device.format(bufferType)
            frameInterval = try device.frameInterval(bufferType)
            framingCache = Locked(try AllocatorFraming.query(device: device, bufferType: bufferType))
        } catch let error as CaptureError {
            throw error
        } catch let error as V4L2Error {
            throw CaptureError(error)
        } catch {
            throw CaptureError(.device, "\(device.path): \(error)")
        }
        live = Locked(LiveState(format: format, frameInterval: frameInterval))
        let framing = framingCache.withLock { $0 }
        let validation: FrameValidation = !framing.isCompressed ? .uncompressed : (framing.pixelFormat.isJPEG ? .jpeg : .compressed)
        core = try PinCore(device: device, bufferType: bufferType, trailingWindow: configuration.trailingWindow,
                       starvationPolicy: configuration.starvationPolicy, errorFramePolicy: configuration.errorFramePolicy,
                       corruptFramePolicy: configuration.corruptFramePolicy, validation: validation)
    }

    deinit {
        stop()
    }

    /// The framing a pin with `configuration` would have, read without owning the queue, so it
    /// works while another process streams: TRY_FMT instead of S_FMT (G_FMT alone when no format
    /// is asked for) and CREATE_BUFS(0) for the capability bits. Only what is asked for is set:
    /// the input (when it is not already selected), the frame rate and the controls.
    public static func proposedFraming(device: VideoDevice, configuration: PinConfiguration = PinConfiguration())
        throws(CaptureError) -> (format: ImageFormat, frameInterval: Fraction?, framing: AllocatorFraming) {
        let bufferType = try CapturePin.bufferType(of: device, configuration: configuration)
        do {
            if let input = configuration.input, (try? device.currentInput()) != input {
                try device.selectInput(input)
            }
            let format: ImageFormat
            if configuration.pixelFormat == nil && configuration.width == nil && configuration.height == nil {
                format = try device.format(bufferType)
            } else {
                format = try negotiateFormat(device: device, bufferType: bufferType, configuration: configuration, commit: false)
            }
            try applyRateAndControls(device: device, bufferType: bufferType, configuration: configuration)
            let interval = try device.frameInterval(bufferType)
            return (format, interval, try AllocatorFraming.query(device: device, bufferType: bufferType, format: format))
        } catch let error as CaptureError {
            throw error
        } catch let error as V4L2Error {
            throw CaptureError(error)
        } catch {
            throw CaptureError(.device, "\(device.path): \(error)")
        }
    }

    /// The capture queue a pin uses on `device`; an error when it cannot capture by streaming.
    static func bufferType(of device: VideoDevice, configuration: PinConfiguration) throws(CaptureError) -> BufferType {
        let caps = device.capabilities
        guard caps.canCapture else {
            throw CaptureError(.invalidConfiguration,
                               "\(device.path): not a video capture device (card \"\(caps.card)\", capabilities: \(caps.deviceCapabilities.names.joined(separator: ", ")))",
                               reason: .notCaptureDevice)
        }
        guard caps.deviceCapabilities.contains(.streaming) else {
            throw CaptureError(.invalidConfiguration, "\(device.path): the driver does not support streaming I/O")
        }
        if configuration.preferMultiplanar && caps.deviceCapabilities.contains(.videoCaptureMultiplanar) {
            return .videoCaptureMultiplanar
        }
        return caps.captureBufferType!
    }

    /// The format for `configuration`: S_FMT when `commit`, else TRY_FMT. A pixel format or size
    /// the driver cannot do is an error, not a silent change.
    static func negotiateFormat(device: VideoDevice, bufferType: BufferType, configuration: PinConfiguration,
                                commit: Bool) throws -> ImageFormat {
        var format = try device.format(bufferType)
        if let pixelFormat = configuration.pixelFormat, pixelFormat != format.pixelFormat {
            let offered = try device.formats(bufferType).map(\.pixelFormat)
            guard offered.contains(pixelFormat) else {
                throw CaptureError(.invalidConfiguration,
                                   "\(device.path): pixel format \(pixelFormat) is not offered (offered: \(offered.map(\.description).joined(separator: ", ")))")
            }
            format.pixelFormat = pixelFormat
        }
        if let width = configuration.width { format.width = width }
        if let height = configuration.height { format.height = height }
        format.planes = []
        format.field = configuration.field.rawValue
        let granted = commit ? try device.setFormat(format) : try device.tryFormat(format)
        let ioctl = commit ? "VIDIOC_S_FMT" : "VIDIOC_TRY_FMT"
        if let pixelFormat = configuration.pixelFormat, granted.pixelFormat != pixelFormat {
            throw CaptureError(.invalidConfiguration, "\(device.path): \(ioctl): the driver replaced pixel format \(pixelFormat) with \(granted.pixelFormat)")
        }
        if (configuration.width != nil && granted.width != configuration.width)
            || (configuration.height != nil && granted.height != configuration.height) {
            throw CaptureError(.invalidConfiguration,
                               "\(device.path): \(ioctl): size \(configuration.width ?? format.width)x\(configuration.height ?? format.height) is not supported for \(granted.pixelFormat); the nearest is \(granted.width)x\(granted.height) (VIDIOC_ENUM_FRAMESIZES lists the sizes)",
                               reason: .sizeNotSupported)
        }
        return granted
    }

    /// S_PARM for the frame rate and the controls, each only when asked for.
    static func applyRateAndControls(device: VideoDevice, bufferType: BufferType, configuration: PinConfiguration) throws {
        if let fps = configuration.framesPerSecond {
            guard let interval = Fraction(framesPerSecond: fps) else {
                throw CaptureError(.invalidConfiguration, "\(device.path): frame rate \(fps) is outside \(Fraction.framesPerSecondRangeDescription) frames per second")
            }
            _ = try device.setFrameInterval(interval, bufferType)
        }
        for control in configuration.controls {
            guard let info = try device.control(named: control.name) else {
                throw CaptureError(.invalidConfiguration, "\(device.path): no control named \(control.name) (VIDIOC_QUERY_EXT_CTRL lists the controls)",
                                   reason: .noSuchControl)
            }
            // A string or compound control has no integer value to set (S_EXT_CTRLS would say ERANGE).
            guard info.type.isNumeric else {
                throw CaptureError(.invalidConfiguration,
                                   "\(device.path): control \(info.commandLineName) is a \(info.type) control; only integer, boolean, menu, bitmask and button controls can be set")
            }
            if info.type != .button && (control.value < info.minimum || control.value > info.maximum) {
                throw CaptureError(.invalidConfiguration,
                                   "\(device.path): control \(info.commandLineName)=\(control.value) is out of range \(info.minimum)...\(info.maximum)")
            }
            try device.setControlValue(info.id, control.value, type: info.type)
        }
    }

    // MARK: - Framing and selection

    /// The pin's framing requirements (read-only; the KSPROPERTY_CONNECTION_ALLOCATORFRAMING_EX analog).
    public var framing: AllocatorFraming { framingCache.withLock { $0 } }

    /// The outcome of the last allocator selection, with the reasons for rejected candidates.
    public var selection: AllocatorSelectionResult? { lastSelection.withLock { $0 } }

    /// The allocator in use while streaming.
    public var allocator: (any AllocatorDispatch)? { core.state.withLock { $0.allocator } }

    // MARK: - Streaming

    /// Whether the pin is streaming.
    public var isStreaming: Bool {
        core.state.withLock { state in
            if case .streaming = state.phase { return true }
            return false
        }
    }

    /// Selects an allocator, initializes it, allocates and queues every frame, and starts
    /// streaming (VIDIOC_STREAMON). On failure nothing stays allocated, so a retry can succeed.
    ///
    /// - Returns: the selection, with the reasons for every rejected candidate.
    @discardableResult
    public func start(_ selection: AllocatorSelection = AllocatorSelection()) throws(CaptureError) -> AllocatorSelectionResult {
        try begin(selection, restart: false)
    }

    /// start(), or with `restart` the start after a source change: statistics go on, and the
    /// pin must still be following the change (a stop() meanwhile ends it).
    private func begin(_ selection: AllocatorSelection, restart: Bool) throws(CaptureError) -> AllocatorSelectionResult {
        let ready = core.state.withLock { state -> String? in
            switch state.phase {
            case .streaming: return "\(device.path): the pin is already streaming"
            case .idle, .stopped, .failed:
                if state.starting { return "\(device.path): the pin is being started by another caller" }
                if restart {
                    guard case .restartPending = state.source else {
                        return "\(device.path): the pin was stopped while it followed a source change"
                    }
                } else if state.source.isActive {
                    return "\(device.path): the pin is following a source change (restarting, or waiting for a signal); call stop() before start()"
                }
                if state.allocator != nil {
                    return "\(device.path): \(state.livePointers) stream pointer(s) from the previous stream still hold frames; release them before starting again"
                }
                // Claimed here, in the same critical section as the check: a second start()
                // cannot pass the check while this one sets up.
                state.starting = true
                return nil
            }
        }
        if let ready { throw CaptureError(.invalidState, ready) }
        var committed = false
        defer { if !committed { core.state.withLock { $0.starting = false } } }
        if !restart {
            live.withLock { $0.selection = selection }
            // Before STREAMON, so that no change between the two goes unseen.
            try subscribeToSourceChanges()
        }

        let framing: AllocatorFraming
        do {
            let known = framingCache.withLock { $0 }
            framing = try AllocatorFraming.query(device: device, bufferType: bufferType, knownMinimum: known.framesMinimum,
                                                 knownCompression: (known.pixelFormat, known.isCompressed))
        } catch {
            throw CaptureError(error)
        }
        framingCache.withLock { $0 = framing }
        let result = selection.select(framing: framing)
        lastSelection.withLock { $0 = result }
        let allocator = result.chosen
        let queue = PinQueue(device: device, bufferType: bufferType, format: format)

        let granted: Int
        do {
            granted = try allocator.initialize(queue: queue, framing: framing, frameCount: result.frameCount)
        } catch {
            allocator.delete()
            throw error
        }
        let kind = allocator.offer.memoryKind
        let storage = StreamStorage(capacity: AllocatorFraming.queueMaximumFrames)
        func undo() {
            for index in 0..<storage.count { allocator.free(index: index, memory: storage.memories[index]) }
            allocator.delete()
        }
        guard granted <= storage.capacity else {
            undo()
            throw CaptureError(.allocator, "\(allocator.name): granted \(granted) frames, more than a queue holds (\(storage.capacity))")
        }
        for index in 0..<granted {
            do throws(CaptureError) {
                let memory = try allocator.allocate(index: index)
                for plane in 0..<framing.countItems where plane < memory.planeCount && memory.planes[plane].length < framing.items[plane].bufferSize {
                    allocator.free(index: index, memory: memory)
                    throw CaptureError(.allocator, "\(allocator.name): frame \(index) plane \(plane) has \(memory.planes[plane].length) bytes, below the framing's \(framing.items[plane].bufferSize) (the largest frame, sizeimage)")
                }
                storage.store(memory, at: index, bufferType: bufferType, kind: kind)
            } catch {
                undo()
                throw error
            }
        }
        let trailingCapacity = core.trailingWindow
        let failure = core.state.withLock { state -> V4L2Error? in
            state.slots.removeAll()
            for _ in 0..<granted {
                var slot = PinCore.Slot()
                slot.handlers.reserveCapacity(2)
                state.slots.append(slot)
            }
            state.queuedCount = 0
            state.storage = storage
            state.allocator = allocator
            state.synchronizesCPUAccess = kind == .dmabuf
            core.memoryKindValue.store(kind.rawValue, ordering: .relaxed)
            if restart {
                // The counters go on across the change; the new stream numbers its frames from 0.
                state.statistics.lastSequence = nil
                state.statistics.sourceChanges += 1
                state.formatGeneration += 1
            } else {
                state.statistics = CaptureStatistics()
            }
            state.leadingEdge = nil
            state.trailing = Array(repeating: (slot: -1, generation: 0), count: trailingCapacity)
            state.trailingStart = 0
            state.trailingCount = 0
            state.pendingRequeue = false
            for index in state.slots.indices {
                if let error = PinCore.queue(&state, index: index, device: device, bufferType: bufferType) { return error }
            }
            state.statistics.requeueFailures = 0
            do throws(V4L2Error) {
                try device.streamOn(bufferType)
            } catch {
                return error
            }
            state.phase = .streaming
            state.source = .none
            state.starting = false
            state.starvedWaiter = false
            // A wake-up left from the previous stream's stop() must not end this stream's first wait.
            core.wakeup.drain()
            core.publish(state)
            return nil
        }
        committed = failure == nil
        if let failure {
            _ = try? device.streamOff(bufferType)
            core.state.withLock { state in
                state.slots.removeAll()
                state.queuedCount = 0
                state.storage = nil
                state.allocator = nil
                state.phase = .stopped
                core.publish(state)
            }
            undo()
            throw CaptureError(failure)
        }
        return result
    }

    /// Stops streaming (VIDIOC_STREAMOFF): every buffer comes back from the driver, held frames
    /// are cancelled (their handlers run; a later lock fails), and the allocator frees the memory
    /// as soon as no stream pointer is alive. Safe to call more than once.
    public func stop() {
        var handlers: [@Sendable () -> Void] = []
        let teardown = core.state.withLock { state -> PinCore.Teardown? in
            if case .streaming = state.phase {
                _ = try? device.streamOff(bufferType)
                state.phase = .stopped
            }
            // A stop ends a source change being followed too: the pin no longer restarts.
            state.source = .none
            handlers = core.cancelHeldFrames(&state)
            core.publish(state)
            return core.takeTeardownIfDone(&state)
        }
        for handler in handlers { handler() }
        teardown?.run()
        unsubscribeFromSourceChanges()
        core.wake()
    }

    /// Makes a consumer waiting in ``advance(timeout:)`` or ``next(timeout:keepLeadingEdge:)``
    /// return at once (false / nil), from any thread; with no wait under way, the next one
    /// returns at once. The pin goes on streaming. ``stop()`` wakes the consumer too.
    public func wake() {
        core.wake()
    }

    /// The descriptor that ``wake()`` signals (an eventfd): a signal handler may pass it to
    /// `WakeupEvent.signal(descriptor:)` (async-signal-safe) to wake the consumer, after
    /// setting the flag the consumer checks. Valid while the pin exists.
    public var wakeupDescriptor: Int32 { core.wakeup.descriptor }

    /// Moves the leading edge onto the next filled buffer (DQBUF), waiting up to `timeout`.
    ///
    /// The frame the leading edge was on moves into the trailing window (if one is configured)
    /// or loses the edge's reference; at no references it goes back to the driver.
    ///
    /// The wait has one deadline, from the monotonic clock: however often the driver wakes the
    /// poll without a buffer (EAGAIN), it ends when `timeout` has passed. ``stop()`` and
    /// ``wake()`` end it at once.
    ///
    /// Call it (and ``next(timeout:keepLeadingEdge:)``) from one consumer thread at a
    /// time; stream pointers may be cloned, locked and released from any thread.
    ///
    /// - Returns: true when the edge advanced; false when the timeout passed first, or the wait
    ///   was woken by ``stop()`` or ``wake()``.
    /// - Throws: ``CaptureError`` when the pin is not streaming, on a fatal streaming error
    ///   (EIO) or a disconnect (ENODEV), both of which cancel held frames and stop the stream,
    ///   and ``CaptureError/Kind/endOfStream`` when the driver says the stream has ended (EPIPE).
    ///
    /// A source change the pin follows also returns false for that wait (the pin restarted,
    /// or waits for a signal): ``formatGeneration`` moved on and ``format`` is the new one, so
    /// no frame of a new format comes unannounced. ``nextEvent(timeout:keepLeadingEdge:)`` says more.
    public func advance(timeout: Duration = .seconds(2)) throws(CaptureError) -> Bool {
        let outcome = try advance(timeout: timeout, clone: .edgeOnly)
        switch consume outcome {
        case .timedOut: return false
        case .woken: return false
        case .advanced: return true
        case .frame: return true
        case .formatChanged: return false
        case .noSignal: return false
        }
    }

    /// Who references a newly dequeued frame.
    private enum Holders {
        /// The leading edge only (``advance(timeout:)``).
        case edgeOnly
        /// The leading edge and a pointer for the caller (``next(timeout:keepLeadingEdge:)``).
        case edgeAndPointer
        /// A pointer for the caller only; the edge lets go of its previous frame.
        case pointerOnly
    }

    /// What ``advance(timeout:clone:)`` hands back.
    private enum Outcome: ~Copyable {
        case timedOut
        /// stop() or wake() ended the wait.
        case woken
        /// The edge moved; no pointer was asked for.
        case advanced
        /// The edge moved (or, with `.pointerOnly`, a frame was taken) and here is its pointer.
        case frame(StreamPointer)
        /// The pin followed a source change and streams in a new format.
        case formatChanged(FormatChange)
        /// The pin followed a source change and found no signal.
        case noSignal(SignalLoss)
    }

    /// Nanoseconds in `timeout`, clamped to 0...; nil for a timeout too long to matter (≥ 100
    /// years), which waits without a deadline.
    static func nanoseconds(_ timeout: Duration) -> Int64? {
        let (seconds, attoseconds) = timeout.components
        if seconds < 0 { return 0 }
        if seconds >= 100 * 365 * 86_400 { return nil }
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    /// - Parameter ready: what a poll the caller already made said of the device (a PinGroup's
    ///   one poll over all its pins): the first round uses it instead of polling again.
    private func advance(timeout: Duration, clone: Holders, ready: PollEvents? = nil) throws(CaptureError) -> Outcome {
        var ready = ready
        var deadline = WaitDeadline(timeout)
        var waitedForStarvation = false
        var polled = false
        var descriptor = BufferDescriptor(index: 0, bufferType: bufferType, memory: core.streamMemoryKind)
        while true {
            if !core.fedAndStreaming.load(ordering: .acquiring) || waitedForStarvation {
                switch prepare(&waitedForStarvation) {
                case .fail(let error):
                    // stop() between two polls of this wait ends it, as a wake-up would.
                    if polled, error.kind == .invalidState, wasStoppedByCaller { return .woken }
                    throw error
                case .runHandlers(let handlers):
                    for handler in handlers { handler() }
                    deadline.timePassed()
                    continue
                case .follow:
                    return try followSource(deadline: deadline.absolute)
                case .ready: break
                }
            }
            // The first poll runs even with no time left, so a zero timeout still takes a
            // frame that is ready.
            let milliseconds = deadline.pollMilliseconds()
            let events: PollEvents
            polled = true
            if let given = ready {
                ready = nil
                events = given
            } else {
                let subscribed = core.subscribedToSource.load(ordering: .relaxed)
                do {
                    let answer = try device.poll(events: subscribed ? [.input, .error, .priority] : [.input, .error],
                                                 wakeup: core.wakeup, timeoutMilliseconds: milliseconds, deadline: deadline.absolute)
                    if answer.woken, core.wakeup.drain().woken { return .woken }
                    events = answer.events
                } catch {
                    if let failure = failUnlessStopped(error) { throw failure }
                    return .woken
                }
            }
            if events.isEmpty {
                if deadline.hasPassed { return .timedOut }
                continue
            }
            // Events before frames: a frame that is ready beside a source change may already
            // have the new format, so it is not dequeued for delivery.
            if events.contains(.priority) {
                let event: DeviceEvent?
                do throws(V4L2Error) {
                    event = try takeSourceChangeEvent()
                } catch {
                    if let failure = failUnlessStopped(error) { throw failure }
                    return .woken
                }
                if let event {
                    beginSourceChange(event)
                    return try followSource(deadline: deadline.absolute)
                }
                if events.isDisjoint(with: [.input, .error]) {
                    if deadline.hasPassed { return .timedOut }
                    continue
                }
            }
            descriptor.memory = core.streamMemoryKind
            let dequeued: Bool
            do {
                dequeued = try device.dequeue(into: &descriptor)
            } catch {
                if error.errno == .brokenPipe {
                    throw CaptureError(.endOfStream, "\(device.path): the stream has ended (VIDIOC_DQBUF: EPIPE, the driver's last buffer was dequeued)", underlying: error)
                }
                if let failure = failUnlessStopped(error) { throw failure }
                return .woken
            }
            guard dequeued else {
                if events.contains(.error) {
                    if let failure = failUnlessStopped(V4L2Error(device: device.path, operation: "poll", errno: nil,
                                                                 detail: "the driver reported an error (POLLERR) and has no buffer to dequeue")) {
                        throw failure
                    }
                    return .woken
                }
                // EAGAIN after a readable poll: the deadline bounds how often that repeats.
                if deadline.hasPassed { return .timedOut }
                continue
            }
            let accepted = accept(&descriptor, clone: clone)
            switch consume accepted {
            case .some(let outcome): return outcome
            case .none: continue
            }
        }
    }

    private enum Step {
        case ready
        case fail(CaptureError)
        case runHandlers([@Sendable () -> Void])
        /// The pin is between a source change and its restart, or waits for a signal.
        case follow
    }

    /// Before waiting: the pin must be streaming; buffers whose QBUF failed are retried; when
    /// the consumer holds every buffer the starvation policy applies.
    private func prepare(_ waitedForStarvation: inout Bool) -> Step {
        core.state.withLock { state -> Step in
            switch state.phase {
            case .streaming: break
            case .failed(let error): return .fail(error)
            case .idle, .stopped:
                if state.source.isActive { return .follow }
                return .fail(CaptureError(.invalidState, "\(device.path): the pin is not streaming; call start() first"))
            }
            if state.pendingRequeue {
                state.pendingRequeue = false
                for index in state.slots.indices where state.slots[index].state == .free {
                    _ = PinCore.queue(&state, index: index, device: device, bufferType: bufferType)
                }
                core.publish(state)
            }
            if state.queuedCount > 0 {
                waitedForStarvation = false
                return .ready
            }
            // Starved: the trailing window gives way first.
            if state.trailingCount > 0 {
                let entry = state.trailing[state.trailingStart]
                state.trailingStart = (state.trailingStart + 1) % state.trailing.count
                state.trailingCount -= 1
                core.dropReference(&state, slot: entry.slot, generation: entry.generation)
                core.publish(state)
                return .runHandlers([])
            }
            // Then the frame under the leading edge, when only the edge holds it: the edge is
            // about to move on, and otherwise a pin whose every other buffer is held (or that
            // has a single buffer) could never dequeue again.
            if let edge = state.leadingEdge, edge.slot < state.slots.count,
               state.slots[edge.slot].generation == edge.generation, state.slots[edge.slot].state == .held,
               state.slots[edge.slot].references == 1 {
                state.leadingEdge = nil
                core.dropReference(&state, slot: edge.slot, generation: edge.generation)
                core.publish(state)
                return .runHandlers([])
            }
            switch core.starvationPolicy {
            case .block:
                if !waitedForStarvation {
                    state.statistics.starvationWaits += 1
                    waitedForStarvation = true
                }
                state.starvedWaiter = true
                return .ready
            case .cancelOldestUnlocked:
                var oldest: Int?
                for index in state.slots.indices where state.slots[index].state == .held && state.slots[index].locks == 0 {
                    if let current = oldest, state.slots[current].dequeueOrder <= state.slots[index].dequeueOrder { continue }
                    oldest = index
                }
                guard let victim = oldest else {
                    if !waitedForStarvation {
                        state.statistics.starvationWaits += 1
                        waitedForStarvation = true
                    }
                    state.starvedWaiter = true
                    return .ready
                }
                if let edge = state.leadingEdge, edge.slot == victim { state.leadingEdge = nil }
                let handlers = core.cancel(&state, slot: victim)
                state.statistics.starvationCancels += 1
                _ = PinCore.queue(&state, index: victim, device: device, bufferType: bufferType)
                core.publish(state)
                return .runHandlers(handlers)
            }
        }
    }

    /// After DQBUF reported an impossible index, the buffer it really dequeued is one the pin
    /// still counts as queued: find it with VIDIOC_QUERYBUF (neither QUEUED nor DONE) and queue
    /// it again, so that no buffer is lost. Called with the state locked.
    private func reclaimMisreportedBuffers(_ state: inout PinCore.State) {
        for index in state.slots.indices where state.slots[index].state == .queued {
            guard let answer = try? device.queryBuffer(index: UInt32(index), bufferType: bufferType, memory: core.streamMemoryKind),
                  answer.flags.isDisjoint(with: [.queued, .done]) else { continue }
            _ = PinCore.queue(&state, index: index, device: device, bufferType: bufferType)
        }
        core.publish(state)
    }

    /// Checks a dequeued buffer and, when it is sound, makes it the leading edge (and, with
    /// `clone`, takes a reference to it for the caller in the same critical section).
    ///
    /// `descriptor` is inout only so that it is passed by address: by value, Swift copied the
    /// ~300-byte descriptor into the locked closure on every frame. It is not changed.
    private func accept(_ descriptor: inout BufferDescriptor, clone: Holders) -> Outcome? {
        core.state.withLock { state -> Outcome? in
            let index = Int(descriptor.index)
            // Sequence gaps are frames the driver dropped. A buffer rejected below still used
            // its sequence number: it is counted as a violation, not also as a drop.
            var dropped: UInt32 = 0
            if let last = state.statistics.lastSequence, descriptor.sequence > last &+ 1, descriptor.sequence > last {
                dropped = descriptor.sequence - last - 1
                state.statistics.dropped += Int(dropped)
            }
            if state.statistics.firstSequence == nil { state.statistics.firstSequence = descriptor.sequence }
            if state.statistics.lastSequence.map({ descriptor.sequence > $0 }) ?? true {
                state.statistics.lastSequence = descriptor.sequence
            }
            guard index >= 0, index < state.slots.count else {
                state.statistics.driverViolations += 1
                state.statistics.lastViolation = "VIDIOC_DQBUF returned index \(index), outside 0..<\(state.slots.count)"
                reclaimMisreportedBuffers(&state)
                return nil
            }
            guard state.slots[index].state == .queued else {
                state.statistics.driverViolations += 1
                state.statistics.lastViolation = "VIDIOC_DQBUF returned buffer \(index), which was not queued"
                reclaimMisreportedBuffers(&state)
                return nil
            }
            guard let memories = state.memoryBase else { return nil }
            let expectedPlanes = memories[index].planeCount
            var problem: String?
            var defects: CompressedFrameDefects = []
            if core.validation != .uncompressed, descriptor.planeCount == expectedPlanes, descriptor.planeCount >= 1 {
                var synchronizationFailed = false
                defects = validateCompressed(&descriptor, memory: memories + index, synchronize: state.synchronizesCPUAccess ? state.allocator : nil,
                                             synchronizationFailed: &synchronizationFailed)
                if synchronizationFailed { state.statistics.synchronizationFailures += 1 }
            }
            if descriptor.planeCount != expectedPlanes {
                problem = "buffer \(index) has \(descriptor.planeCount) planes, expected \(expectedPlanes)"
            } else {
                for plane in 0..<descriptor.planeCount {
                    let p = descriptor.planes[plane]
                    let length = max(Int(p.length), 0)
                    let memoryLength = memories[index].planes[plane].length
                    if Int(p.bytesUsed) > length || Int(p.bytesUsed) > memoryLength {
                        problem = "buffer \(index) plane \(plane): bytesused \(p.bytesUsed) > length \(min(length, memoryLength))"
                    } else if defects.contains(.empty) {
                        // A compressed frame with nothing in it: counted below, not a violation.
                    } else if p.bytesUsed == 0 {
                        problem = "buffer \(index) plane \(plane): bytesused is 0"
                    } else if p.dataOffset >= p.bytesUsed {
                        problem = "buffer \(index) plane \(plane): data_offset \(p.dataOffset) >= bytesused \(p.bytesUsed)"
                    }
                    if problem != nil { break }
                }
            }
            if let problem {
                state.statistics.driverViolations += 1
                state.statistics.lastViolation = problem
                _ = PinCore.queue(&state, index: index, device: device, bufferType: bufferType)
                return nil
            }
            if !defects.isEmpty {
                let s = state.statistics
                state.statistics.compressedEmpty = s.compressedEmpty + (defects.contains(.empty) ? 1 : 0)
                state.statistics.compressedMissingStartOfImage = s.compressedMissingStartOfImage + (defects.contains(.missingStartOfImage) ? 1 : 0)
                state.statistics.compressedTruncated = s.compressedTruncated + (defects.contains(.truncated) ? 1 : 0)
                state.statistics.compressedBytesUsedOverLength = s.compressedBytesUsedOverLength + (defects.contains(.bytesUsedOverLength) ? 1 : 0)
                state.statistics.lastCorruption = "buffer \(index) (sequence \(descriptor.sequence)): \(defects.names.joined(separator: ", "))"
                if core.corruptFramePolicy == .skip {
                    state.statistics.corruptSkipped += 1
                    _ = PinCore.queue(&state, index: index, device: device, bufferType: bufferType)
                    return nil
                }
                state.statistics.corruptDelivered += 1
            }
            if descriptor.flags.contains(.error) {
                state.statistics.errorFlagged += 1
                if core.errorFramePolicy == .skip {
                    state.statistics.skippedErrorFrames += 1
                    _ = PinCore.queue(&state, index: index, device: device, bufferType: bufferType)
                    return nil
                }
            }
            state.dequeueCounter += 1
            PinCore.setSlot(&state, index, .held)
            let slot = state.slots.address(index)
            slot.pointee.generation &+= 1
            slot.pointee.references = 1
            slot.pointee.locks = 0
            slot.pointee.dequeueOrder = state.dequeueCounter
            // Holders: the slot, plus the caller's pointer when one is made below.
            let record = state.records.take(&descriptor, droppedBefore: dropped, holders: clone == .edgeOnly ? 1 : 2)
            if !defects.isEmpty { FrameRecord.info(record).pointee.defects = defects }
            FrameRecord.info(record).pointee.formatGeneration = state.formatGeneration
            slot.pointee.record = record
            let generation = slot.pointee.generation
            let previous = state.leadingEdge
            state.leadingEdge = clone == .pointerOnly ? nil : (index, generation)
            if let previous {
                if core.trailingWindow > 0 {
                    if state.trailingCount == core.trailingWindow {
                        let oldest = state.trailing[state.trailingStart]
                        state.trailing[state.trailingStart] = previous
                        state.trailingStart = (state.trailingStart + 1) % core.trailingWindow
                        core.dropReference(&state, slot: oldest.slot, generation: oldest.generation)
                    } else {
                        state.trailing[(state.trailingStart + state.trailingCount) % core.trailingWindow] = previous
                        state.trailingCount += 1
                    }
                } else {
                    core.dropReference(&state, slot: previous.slot, generation: previous.generation)
                }
            }
            state.statistics.delivered += 1
            core.publish(state)
            guard clone != .edgeOnly else { return .advanced }
            // With .pointerOnly the pointer takes over the reference the edge would have had.
            if clone == .edgeAndPointer { slot.pointee.references += 1 }
            let id = PinCore.issuePointer(&state)
            return .frame(StreamPointer(core: core, slot: index, generation: generation, id: id, record: record))
        }
    }

    /// Validates a compressed frame before it is delivered. bytesused 0 and bytesused > length
    /// become defects instead of driver violations (a compressed frame's size varies, and
    /// cameras do send empty or overlong ones); bytesused is cut to the buffer so that nothing
    /// past it is ever read. For JPEG, the payload's SOI and EOI markers are checked.
    /// Called with the state locked. (`descriptor` is inout to be passed by address; only an
    /// overlong bytesused is changed.)
    private func validateCompressed(_ descriptor: inout BufferDescriptor, memory: UnsafeMutablePointer<FrameMemory>,
                                    synchronize allocator: (any AllocatorDispatch)?,
                                    synchronizationFailed: inout Bool) -> CompressedFrameDefects {
        let plane = descriptor.planes[0]
        let length = min(max(Int(plane.length), 0), memory.pointee.planes[0].length)
        if Int(plane.bytesUsed) > length {
            descriptor.planes[0].bytesUsed = UInt32(length)
            if plane.dataOffset >= UInt32(length) { descriptor.planes[0].dataOffset = 0 }
            return .bytesUsedOverLength
        }
        if plane.bytesUsed == 0 || plane.bytesUsed == plane.dataOffset {
            descriptor.planes[0].dataOffset = 0
            descriptor.planes[0].bytesUsed = 0
            return .empty
        }
        guard core.validation == .jpeg, plane.dataOffset < plane.bytesUsed, let base = memory.pointee.planes[0].address else { return [] }
        // Runs under the state lock. A failed synchronization still checks the bytes (at worst
        // stale in a CPU cache) and is counted.
        var synchronized = true
        do throws(CaptureError) { try allocator?.beginCPUAccess(index: Int(descriptor.index), memory: memory.pointee) } catch { synchronized = false }
        let defects = JPEGFrameCheck.defects(UnsafeRawBufferPointer(start: base + Int(plane.dataOffset),
                                                                    count: Int(plane.bytesUsed - plane.dataOffset)))
        if synchronized {
            do throws(CaptureError) { try allocator?.endCPUAccess(index: Int(descriptor.index), memory: memory.pointee) } catch { synchronized = false }
        }
        if !synchronized { synchronizationFailed = true }
        return defects
    }

    /// Stops the stream after a fatal error and records it; returns the error to throw.
    /// ``fail(_:)``, or nil when stop() ran on another thread while this one waited (STREAMOFF
    /// makes poll say POLLERR and DQBUF EINVAL): the wait was ended by the stop, as if woken.
    private func failUnlessStopped(_ error: V4L2Error) -> CaptureError? {
        if wasStoppedByCaller { return nil }
        let failure = fail(error)
        if failure.kind == .invalidState, wasStoppedByCaller { return nil }
        return failure
    }

    private func fail(_ error: V4L2Error) -> CaptureError {
        let captureError: CaptureError
        if error.errno == .noSuchDevice || device.isDisconnected {
            // An unplug shows as ENODEV, or (depending on timing) as EINVAL or POLLERR from a
            // node whose QUERYCAP then says ENODEV.
            captureError = CaptureError(.disconnected, "\(device.path): the device was disconnected (\(error.operation): \(error.errno?.name ?? "POLLERR"))", underlying: error)
        } else if error.errno == .ioError || error.operation == "poll" {
            captureError = CaptureError(.fatalStreamingError, "\(device.path): streaming stopped after a fatal driver error (\(error.operation): \(error.errno?.name ?? "POLLERR"))", underlying: error)
        } else {
            captureError = CaptureError(error)
        }
        var handlers: [@Sendable () -> Void] = []
        var stoppedMeanwhile = false
        let teardown = core.state.withLock { state -> PinCore.Teardown? in
            guard case .streaming = state.phase else {
                // stop() ran on another thread while this one waited: not a driver failure.
                stoppedMeanwhile = true
                return nil
            }
            _ = try? device.streamOff(bufferType)
            state.phase = .failed(captureError)
            handlers = core.cancelHeldFrames(&state)
            core.publish(state)
            return core.takeTeardownIfDone(&state)
        }
        if stoppedMeanwhile {
            return core.state.withLock { state in
                if case .failed(let error) = state.phase { return error }
                return CaptureError(.invalidState, "\(device.path): the pin was stopped while waiting for a frame")
            }
        }
        for handler in handlers { handler() }
        teardown?.run()
        return captureError
    }

    // MARK: - Stream pointers

    /// A new reference to the frame at the leading edge, or nil before the first frame.
    public func cloneLeadingEdge() -> StreamPointer? {
        let taken = core.state.withLock { state -> (Int, UInt32, UInt64, UnsafeMutablePointer<FrameRecord>)? in
            guard let edge = state.leadingEdge, edge.slot < state.slots.count,
                  state.slots[edge.slot].generation == edge.generation, state.slots[edge.slot].state == .held,
                  let record = state.slots[edge.slot].record else { return nil }
            state.slots[edge.slot].references += 1
            state.records.retain(record)
            return (edge.slot, edge.generation, PinCore.issuePointer(&state), record)
        }
        guard let (slot, generation, id, record) = taken else { return nil }
        return StreamPointer(core: core, slot: slot, generation: generation, id: id, record: record)
    }

    /// Advances the leading edge and returns a reference to the new frame; nil on timeout or
    /// when ``stop()`` or ``wake()`` ended the wait.
    ///
    /// A source change the pin follows makes that wait return nil too: the pin restarted (or
    /// waits for a signal, when later waits return nil at their timeout), ``format`` is the new
    /// one and ``formatGeneration`` moved on, as does ``FrameInfo/formatGeneration`` of the
    /// frames that follow. ``nextEvent(timeout:keepLeadingEdge:)`` reports the change itself.
    ///
    /// - Parameter keepLeadingEdge: true (the AVStream default) keeps the leading edge on the
    ///   new frame until the next advance, so the frame returns to the driver only after both
    ///   the returned pointer is gone and the edge has moved on. false hands the edge's own
    ///   reference to the returned pointer: the frame is queued again (QBUF) the moment that
    ///   pointer goes, which keeps one more buffer with the driver while the consumer waits
    ///   (what a dump loop wants). Then ``cloneLeadingEdge()`` returns nil and the trailing
    ///   window does not fill.
    public func next(timeout: Duration = .seconds(2), keepLeadingEdge: Bool = true) throws(CaptureError) -> StreamPointer? {
        let outcome = try advance(timeout: timeout, clone: keepLeadingEdge ? .edgeAndPointer : .pointerOnly)
        switch consume outcome {
        case .frame(let pointer): return pointer
        case .timedOut: return nil
        case .woken: return nil
        case .advanced: return nil
        case .formatChanged: return nil
        case .noSignal: return nil
        }
    }

    /// The next frame, or the source change that comes before the frames of a new format, or
    /// the loss of the signal; nil when the timeout passed, or ``stop()`` or ``wake()`` ended
    /// the wait. `keepLeadingEdge` as for ``next(timeout:keepLeadingEdge:)``.
    ///
    /// After ``PinEvent/noSignal(_:)`` the pin is stopped (not streaming) and each wait returns
    /// nil at its timeout while there is no signal; the caller decides when to give up (with
    /// ``stop()``). When the signal is back the pin restarts and the wait returns
    /// ``PinEvent/formatChanged(_:)``, also when the format is the one before the loss.
    ///
    /// A restart needs the driver's buffers back (REQBUFS 0), which happens once no stream
    /// pointer holds a frame of the old stream: while some do, waits return nil at their timeout.
    public func nextEvent(timeout: Duration = .seconds(2), keepLeadingEdge: Bool = true) throws(CaptureError) -> PinEvent? {
        try nextEvent(timeout: timeout, keepLeadingEdge: keepLeadingEdge, ready: nil)
    }

    /// ``nextEvent(timeout:keepLeadingEdge:)`` after a poll of the caller's own (a PinGroup's)
    /// said `ready` of the device: no second poll before the DQBUF.
    func nextEvent(timeout: Duration, keepLeadingEdge: Bool, ready: PollEvents?) throws(CaptureError) -> PinEvent? {
        let outcome = try advance(timeout: timeout, clone: keepLeadingEdge ? .edgeAndPointer : .pointerOnly, ready: ready)
        switch consume outcome {
        case .frame(let pointer): return .frame(pointer)
        case .formatChanged(let change): return .formatChanged(change)
        case .noSignal(let loss): return .noSignal(loss)
        case .timedOut: return nil
        case .woken: return nil
        case .advanced: return nil
        }
    }

    /// Adds `count` frames while streaming (VIDIOC_CREATE_BUFS through the kernel pool allocator),
    /// allocates and queues them.
    public func addFrames(_ count: Int) throws(CaptureError) {
        // Under the state lock, like start(): stop() cannot delete the allocator between the
        // check, CREATE_BUFS and the new buffers' QBUF.
        let failure = core.state.withLock { state -> CaptureError? in
            guard let allocator = state.allocator, let storage = state.storage else {
                return CaptureError(.invalidState, "\(device.path): the pin has no buffers to add to; call start() first")
            }
            guard let pool = allocator as? KernelPoolAllocator else {
                return CaptureError(.invalidState, "\(device.path): only the kernel pool (mmap) allocator can grow")
            }
            let range: Range<Int>
            do throws(CaptureError) {
                range = try pool.grow(by: count)
            } catch {
                return error
            }
            for index in range {
                let memory: FrameMemory
                do throws(CaptureError) {
                    memory = try pool.allocate(index: index)
                } catch {
                    return error
                }
                guard index < storage.capacity else {
                    pool.free(index: index, memory: memory)
                    return CaptureError(V4L2Error(device: device.path, operation: "VIDIOC_CREATE_BUFS", errno: nil,
                                                  detail: "buffer \(index) is beyond the \(AllocatorFraming.queueMaximumFrames) a queue holds"))
                }
                storage.store(memory, at: index, bufferType: bufferType, kind: .mmap)
                while state.slots.count <= index { state.slots.append(PinCore.Slot()) }
                if case .streaming = state.phase, let error = PinCore.queue(&state, index: index, device: device, bufferType: bufferType) {
                    core.publish(state)
                    return CaptureError(error)
                }
            }
            core.publish(state)
            return nil
        }
        if let failure { throw failure }
    }

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

    /// The error that stopped the stream, if one did.
    public var failure: CaptureError? {
        core.state.withLock { state in
            if case .failed(let error) = state.phase { return error }
            return nil
        }
    }
}

// MARK: - Following source changes

extension CapturePin {
    /// Subscribes to V4L2_EVENT_SOURCE_CHANGE for the current input when it has DV timings or
    /// standards and the configuration follows source changes. A device without events
    /// (EINVAL, ENOTTY) has no change to follow: nothing is subscribed.
    private func subscribeToSourceChanges() throws(CaptureError) {
        guard configuration.sourceChanges == .follow, live.withLock({ $0.subscription == nil }) else { return }
        let input: UInt32
        let capabilities: InputCapabilities
        do throws(V4L2Error) {
            input = try device.currentInput()
            guard let entry = try device.inputs().first(where: { $0.index == input }) else { return }
            capabilities = entry.capabilityFlags
        } catch {
            // No inputs to ask about (a memory-to-memory or odd device): no live source.
            return
        }
        let digital = capabilities.contains(.dvTimings)
        guard digital || capabilities.contains(.standards) else { return }
        do throws(V4L2Error) {
            try device.subscribe(.sourceChange, id: input)
        } catch {
            if error.errno == .invalidArgument || error.errno == .inappropriateIOCTLForDevice { return }
            throw CaptureError(.device, "\(device.path): VIDIOC_SUBSCRIBE_EVENT (source change, input \(input)) failed: \(error); set PinConfiguration.sourceChanges to .ignore to capture without following source changes",
                               underlying: error)
        }
        live.withLock { $0.subscription = SourceSubscription(input: input, digital: digital) }
        core.subscribedToSource.store(true, ordering: .releasing)
    }

    private func unsubscribeFromSourceChanges() {
        let subscription = live.withLock { live -> SourceSubscription? in
            defer { live.subscription = nil }
            return live.subscription
        }
        guard let subscription else { return }
        core.subscribedToSource.store(false, ordering: .releasing)
        try? device.unsubscribe(.sourceChange, id: subscription.input)
    }

    /// Drains the event queue (DQEVENT until ENOENT); the last source-change event, if any.
    private func takeSourceChangeEvent() throws(V4L2Error) -> DeviceEvent? {
        var found: DeviceEvent?
        // Bounded: a driver that never says ENOENT must not keep the consumer here.
        for _ in 0..<64 {
            guard let event = try device.dequeueEvent() else { break }
            if event.kind == .sourceChange { found = event }
        }
        return found
    }

    /// The event arrived while streaming: STREAMOFF, held frames cancelled as stop() does, and
    /// the buffers given back once no pointer holds one. Frames the driver filled after the
    /// event are dequeued and dropped (counted), never delivered.
    private func beginSourceChange(_ event: DeviceEvent) {
        var handlers: [@Sendable () -> Void] = []
        var dropped = 0
        let teardown = core.state.withLock { state -> PinCore.Teardown? in
            guard case .streaming = state.phase else { return nil }
            var descriptor = BufferDescriptor(index: 0, bufferType: bufferType, memory: core.streamMemoryKind)
            while dropped < state.slots.count, (try? device.dequeue(into: &descriptor)) == true {
                dropped += 1
                let index = Int(descriptor.index)
                if index >= 0, index < state.slots.count, state.slots[index].state == .queued {
                    PinCore.setSlot(&state, index, .free)
                }
            }
            _ = try? device.streamOff(bufferType)
            state.phase = .stopped
            state.source = .restartPending
            state.statistics.droppedAtSourceChange += dropped
            handlers = core.cancelHeldFrames(&state)
            core.publish(state)
            return core.takeTeardownIfDone(&state)
        }
        live.withLock { live in
            live.pendingEvent = event
            live.pendingDropped = dropped
            live.pendingAfterNoSignal = false
        }
        for handler in handlers { handler() }
        teardown?.run()
    }

    private enum FollowStep {
        case stopped
        case restart
        case waitForBuffers
        case report(SignalLoss)
        case waitForSignal
    }

    /// Ends the follow-up with a failure: the pin is failed, as a driver error while streaming makes it.
    private func failFollowing(_ error: CaptureError) -> CaptureError {
        core.state.withLock { state in
            if state.source.isActive {
                state.source = .none
                state.phase = .failed(error)
                core.publish(state)
            }
        }
        return error
    }

    /// Runs the follow-up of a source change on the consumer's wait, up to `deadline`:
    /// the restart once the buffers are back, the report of a lost signal, the wait for the
    /// next event while there is none.
    private func followSource(deadline: Int64?) throws(CaptureError) -> Outcome {
        while true {
            let step = core.state.withLock { state -> FollowStep in
                switch state.source {
                case .none: return .stopped
                case .restartPending:
                    return state.allocator == nil && state.teardownsRunning == 0 && !state.starting ? .restart : .waitForBuffers
                case .noSignal(let loss, let reported):
                    if reported { return .waitForSignal }
                    state.source = .noSignal(loss, reported: true)
                    return .report(loss)
                }
            }
            var milliseconds: Int32 = -1
            switch step {
            case .stopped: return .woken
            case .report(let loss): return .noSignal(loss)
            case .restart:
                if let outcome = try restartAfterSourceChange() { return outcome }
                continue
            case .waitForBuffers, .waitForSignal:
                if let deadline {
                    let left = deadline - MonotonicClock.nanoseconds()
                    milliseconds = left <= 0 ? 0 : Int32(clamping: (left + 999_999) / 1_000_000)
                }
                // Stream pointers let go of their frames on other threads, with no descriptor
                // to wait on: the wait for the buffers looks again every 10 ms.
                if case .waitForBuffers = step { milliseconds = milliseconds < 0 ? 10 : min(milliseconds, 10) }
            }
            // POLLPRI only: for POLLIN, vb2 answers POLLERR while the queue is not streaming.
            let answer: (events: PollEvents, woken: Bool)
            do throws(V4L2Error) {
                answer = try device.poll(events: [.priority], wakeup: core.wakeup, timeoutMilliseconds: milliseconds)
            } catch {
                throw failFollowing(CaptureError(error))
            }
            if answer.woken, core.wakeup.drain().woken { return .woken }
            if answer.events.contains(.priority) {
                let event: DeviceEvent?
                do throws(V4L2Error) {
                    event = try takeSourceChangeEvent()
                } catch {
                    throw failFollowing(CaptureError(error))
                }
                if let event {
                    let wasLost = core.state.withLock { state -> Bool in
                        guard case .noSignal = state.source else { return false }
                        state.source = .restartPending
                        core.publish(state)
                        return true
                    }
                    live.withLock { live in
                        live.pendingEvent = event
                        if wasLost { live.pendingAfterNoSignal = true }
                    }
                    continue
                }
            } else if !answer.events.isDisjoint(with: [.error, .hangUp]) {
                let disconnected = device.isDisconnected
                throw failFollowing(CaptureError(disconnected ? .disconnected : .fatalStreamingError,
                                                 "\(device.path): \(disconnected ? "the device was disconnected" : "the driver reported an error (POLLERR)") while the pin waited for its source (after a source change)"))
            }
            if let deadline, MonotonicClock.nanoseconds() >= deadline { return .timedOut }
        }
    }

    /// Detects and applies the new timings or standard, sets the format again (the size from
    /// the source; pixel format and field as configured), runs allocator selection again and
    /// starts. Nil when there is no signal (the pin then waits for one).
    private func restartAfterSourceChange() throws(CaptureError) -> Outcome? {
        let (subscription, previous, selection, event, dropped, afterNoSignal) = live.withLock { live in
            (live.subscription, live.format, live.selection, live.pendingEvent, live.pendingDropped, live.pendingAfterNoSignal)
        }
        guard let subscription, let selection else {
            throw failFollowing(CaptureError(.invalidState, "\(device.path): a source change without a subscription or a selection to restart with"))
        }
        var detected: DetectedSource
        var newFormat: ImageFormat
        var interval: Fraction?
        var attempts = 0
        while true {
            attempts += 1
            detected = try detectSource(subscription, apply: true)
            if let loss = detected.loss {
                let waiting = core.state.withLock { state -> Bool in
                    guard case .restartPending = state.source else { return false }
                    state.source = .noSignal(loss, reported: false)
                    core.publish(state)
                    return true
                }
                if waiting { live.withLock { $0.pendingAfterNoSignal = true } }
                return nil
            }
            (newFormat, interval) = try setFormatAfterSourceChange(previous: previous, input: subscription.input)
            // Applying the timings can itself queue a source-change event (vivid moves its
            // colorspace control with the timings, and that control sends one). Such events
            // are dropped here, before STREAMON; if the source really changed meanwhile, it
            // no longer matches what was applied, and the restart starts over.
            let queued: DeviceEvent?
            do throws(V4L2Error) {
                queued = try takeSourceChangeEvent()
            } catch {
                throw failFollowing(CaptureError(error))
            }
            guard queued != nil, attempts < 4 else { break }
            let now = try detectSource(subscription, apply: false)
            if now.loss == nil, now.timings == detected.timings, now.standard.map({ $0 & (detected.standard ?? 0) != 0 }) ?? true { break }
        }
        live.withLock { live in
            live.format = newFormat
            live.frameInterval = interval
        }
        let result: AllocatorSelectionResult
        do throws(CaptureError) {
            result = try begin(selection, restart: true)
        } catch {
            // stop() while this restart ran: the caller ended the stream.
            if wasStoppedByCaller { return .woken }
            throw failFollowing(error)
        }
        let framing = self.framing
        let generation = formatGeneration
        let change = live.withLock { live -> FormatChange in
            let change = FormatChange(input: subscription.input, changes: event?.sourceChanges ?? [], previous: previous, format: newFormat,
                                      frameInterval: interval, framing: framing, selection: result, timings: detected.timings, standard: detected.standard,
                                      generation: generation, framesDropped: dropped, afterNoSignal: afterNoSignal,
                                      eventTimestampNanoseconds: event?.timestampNanoseconds ?? 0,
                                      restartedNanoseconds: MonotonicClock.nanoseconds())
            live.lastChange = change
            live.pendingEvent = nil
            live.pendingDropped = 0
            live.pendingAfterNoSignal = false
            return change
        }
        return .formatChanged(change)
    }

    private struct DetectedSource {
        var timings: DVTimings?
        var standard: UInt64?
        var loss: SignalLoss?
    }

    /// What the input receives now: QUERY_DV_TIMINGS on a DV input (ENOLINK, ENOLCK, ERANGE: no
    /// signal) or QUERYSTD on an analog one (0: no signal), and the input's status bits. With
    /// `apply`, the detected timings or standard are set (S_DV_TIMINGS, S_STD).
    private func detectSource(_ subscription: SourceSubscription, apply: Bool) throws(CaptureError) -> DetectedSource {
        var result = DetectedSource()
        let status = (try? device.inputs())?.first { $0.index == subscription.input }?.statusFlags
        do throws(V4L2Error) {
            if subscription.digital {
                do throws(V4L2Error) {
                    let timings = try device.queryDVTimings()
                    result.timings = apply ? try device.setDVTimings(timings) : timings
                } catch {
                    guard error.operation == "VIDIOC_QUERY_DV_TIMINGS", let errno = error.errno,
                          [ENOLINK, ENOLCK, ERANGE].contains(errno.rawValue) else { throw error }
                    result.loss = SignalLoss(input: subscription.input, status: status, detail: error.description, underlying: error)
                }
            } else {
                let standard = try device.queryStandard()
                if standard == 0 {
                    result.loss = SignalLoss(input: subscription.input, status: status, detail: "\(device.path): VIDIOC_QUERYSTD detected no standard", underlying: nil)
                } else if apply {
                    if try device.standard() & standard == 0 { try device.setStandard(standard) }
                    result.standard = try device.standard()
                } else {
                    result.standard = standard
                }
            }
        } catch {
            let hint = error.errno == .resourceBusy ? " (the queue still has buffers: another handle may own it)" : ""
            throw failFollowing(CaptureError(.device, "\(device.path): following a source change of input \(subscription.input): \(error)\(hint)", underlying: error))
        }
        if result.loss == nil, let status, status.contains(.noSignal) {
            result.loss = SignalLoss(input: subscription.input, status: status, detail: "\(device.path): VIDIOC_ENUMINPUT says no signal", underlying: nil)
        }
        return result
    }

    /// G_FMT (the size the source now has), then S_FMT with the pixel format (the configured
    /// one, else the previous) and the configured field. A replaced pixel format is an error.
    private func setFormatAfterSourceChange(previous: ImageFormat, input: UInt32) throws(CaptureError) -> (ImageFormat, Fraction?) {
        let newFormat: ImageFormat
        let interval: Fraction?
        let wanted = configuration.pixelFormat ?? previous.pixelFormat
        do throws(V4L2Error) {
            var request = try device.format(bufferType)
            request.pixelFormat = wanted
            request.field = configuration.field.rawValue
            request.planes = []
            newFormat = try device.setFormat(request)
            interval = try device.frameInterval(bufferType)
        } catch {
            throw failFollowing(CaptureError(.device, "\(device.path): setting the format after a source change of input \(input): \(error)", underlying: error))
        }
        guard newFormat.pixelFormat == wanted else {
            throw failFollowing(CaptureError(.invalidConfiguration,
                                             "\(device.path): VIDIOC_S_FMT after a source change to \(newFormat.width)x\(newFormat.height): the driver replaced pixel format \(wanted) with \(newFormat.pixelFormat); the new source cannot be captured as \(wanted) (stop, and start a pin with another pixel format)"))
        }
        return (newFormat, interval)
    }

    /// The poll events a ``PinGroup`` waits on for this pin.
    var groupPollEvents: PollEvents {
        // While it follows a change the queue is not streaming: POLLIN would say POLLERR.
        if core.followingSource.load(ordering: .acquiring) { return [.priority] }
        return core.subscribedToSource.load(ordering: .relaxed) ? [.input, .error, .priority] : [.input, .error]
    }

    /// Whether the pin waits to restart after a source change (a group retries it each wait).
    var isRestartPending: Bool {
        core.state.withLock { state in
            if case .restartPending = state.source { return true }
            return false
        }
    }
}

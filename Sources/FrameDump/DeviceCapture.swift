import FrameBridge
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// One device of a capture: its pin, the outputs of its current segment and its counts. The
/// ``CaptureLoop`` drives one of these (``CaptureSession``) or several (``MultiCaptureSession``).
///
/// The steps keep framedump's promise that nothing is written before the device streams:
/// ``init(options:position:)`` opens the device, applies the format options and checks
/// everything that can be checked first (container, pictures, the allocator selection);
/// ``start()`` starts the pin and only then creates the outputs; ``write(_:)`` writes one
/// frame; ``finish()`` or ``abandon()`` end it. Following the source is in
/// DeviceCapture+Source.swift, the summary and messages in ``CaptureReport``, the segments in
/// ``SegmentLog`` and ``SegmentOutputs``, the reconnect in ``Reconnector``.
final class DeviceCapture {
    let options: CaptureOptions
    private(set) var device: VideoDevice
    private(set) var pin: CapturePin
    /// The format the outputs of the current segment were made for.
    var format: ImageFormat
    /// The outputs of the current segment; nil when making them failed at a source change.
    var outputs: SegmentOutputs?
    /// The segments before the current one, and the current one's -o path.
    var segments: SegmentLog
    var segmentOutputPath: String?
    /// Source changes followed, and when the signal was lost (while it is).
    var sourceChangesFollowed = 0
    var signalLostAt: Int64?
    var noSignalNanoseconds: Int64 = 0
    /// Why the capture stopped at a source change, when it did.
    var stoppedBySourceChange: String?
    /// One-line notices for the user (a frame rate the driver changed).
    var notices: [String] = []
    /// The frame rate in force, when one was asked for.
    private(set) var grantedFramesPerSecond: Double?
    /// The device's place among the `-d` options (0 for a single device).
    let position: Int

    private let candidate: any AllocatorDispatch
    /// The descriptor `-o -` writes to.
    var standardOutputDescriptor: Int32 = 1

    private(set) var allocatorName = ""
    private(set) var bufferCount = 0
    private(set) var framesWritten = 0
    private(set) var firstTimestamp: Int64 = 0
    private(set) var lastTimestamp: Int64 = 0
    /// Whether every frame so far had a CLOCK_MONOTONIC timestamp (what relates devices' frames).
    private(set) var monotonicTimestamps = true
    /// Frames a decoding sink (MJPEG to PNG or y4m) could not decode.
    private(set) var framesNotDecoded = 0
    /// The reconnects, and the statistics of the pins before.
    private(set) var reconnector: Reconnector
    /// When the last frame came (or the stream started): what `--timeout` counts from.
    var lastFrameTime: Int64 = 0
    /// The error that ended this device's stream early, when one did.
    var failure: FrameDumpError?

    /// All frames written, or the stream ended: by an error, or cleanly at a source change.
    var isDone: Bool { framesWritten >= options.count || failure != nil || stoppedBySourceChange != nil }

    /// Opens the device and sets it up; checks what can be checked before streaming.
    init(options: CaptureOptions, position: Int = 0) throws(FrameDumpError) {
        try options.validate()
        self.options = options
        self.position = position
        reconnector = Reconnector(options: options)
        do {
            device = try VideoDevice(path: options.devicePath, backend: options.backend)
        } catch {
            throw FrameDumpError(error)
        }
        try options.format.checkControls(on: device)
        let waitedForSignal = try SignalWait.awaitSignal(device, options: options)
        do {
            pin = try CapturePin(device: device, configuration: options.format.pinConfiguration(
                errorFramePolicy: options.errorFramePolicy, corruptFramePolicy: options.corruptFramePolicy))
        } catch {
            throw FrameDumpError(error)
        }
        format = pin.format
        segments = SegmentLog(baseOutputPath: options.outputPath)
        segmentOutputPath = options.outputPath
        candidate = try AllocatorPlan.candidate(memory: options.memory, source: options.dmabufSource, format: format,
                                                backend: options.backend)
        outputs = try SegmentOutputs(options: options, format: format, outputPath: segmentOutputPath, device: device)
        let preview = selection(framing: pin.framing).select(framing: pin.framing)
        if preview.fellBackToDefault || !preview.rejections.isEmpty {
            throw .runtime(CaptureReport.rejectionMessage(memory: options.memory, path: device.path, candidate: candidate,
                                                          rejections: preview.rejections))
        }
        if let waitedForSignal {
            noSignalNanoseconds = waitedForSignal.nanoseconds
            notices.append("\(device.path): the signal on input \(waitedForSignal.input) came after \(FrameDumpFormatting.decimal(Double(waitedForSignal.nanoseconds) / 1e9)) s (--wait-for-signal)")
        }
    }

    private func selection(framing: AllocatorFraming?) -> AllocatorSelection {
        AllocatorPlan.selection(candidate: candidate, memory: options.memory, frameCount: options.buffers, framing: framing)
    }

    /// Starts the pin, then creates the outputs (the pin streams: now they may be created).
    func start() throws(FrameDumpError) {
        let result: AllocatorSelectionResult
        do {
            result = try pin.start(selection(framing: pin.framing))
        } catch {
            throw FrameDumpError(error)
        }
        if result.fellBackToDefault {
            pin.stop()
            throw .runtime(CaptureReport.rejectionMessage(memory: options.memory, path: device.path, candidate: candidate,
                                                          rejections: result.rejections))
        }
        allocatorName = result.chosen.name
        if let asked = options.format.framesPerSecond, let interval = pin.frameInterval, interval.numerator > 0 {
            let granted = Double(interval.denominator) / Double(interval.numerator)
            grantedFramesPerSecond = granted
            if abs(granted - asked) > asked * 0.005 {
                notices.append("\(device.path): --fps \(FrameDumpFormatting.decimal(asked)): the driver set \(FrameDumpFormatting.decimal(granted)) frames per second (VIDIOC_S_PARM granted \(interval) s per frame)")
            }
        }
        let buffers = pin.bufferCounts
        bufferCount = buffers.queued + buffers.held + buffers.free
        lastFrameTime = Clock.coarseNanoseconds()
        do throws(FrameDumpError) {
            try openOutputs()
        } catch {
            pin.stop()
            outputs?.close()
            throw error
        }
    }

    /// Creates the current segment's outputs.
    func openOutputs() throws(FrameDumpError) {
        try outputs?.open(framing: pin.framing, frameInterval: pin.frameInterval, standard: Self.analogStandard(device),
                          standardOutputDescriptor: standardOutputDescriptor)
    }

    /// The analog standard of the current input (G_STD), when it takes standards.
    static func analogStandard(_ device: VideoDevice) -> UInt64? {
        guard let current = try? device.currentInput(),
              let input = (try? device.inputs())?.first(where: { $0.index == current }),
              input.capabilityFlags.contains(.standards) else { return nil }
        return try? device.standard()
    }

    /// Writes one frame to every sink and gives it back to the driver. A frame whose lock fails
    /// (cancelled by a stop under way) is not written; false then.
    @discardableResult
    func write(_ pointer: consuming StreamPointer) throws(FrameDumpError) -> Bool {
        lastFrameTime = Clock.coarseNanoseconds()
        do {
            try pointer.lock()
        } catch {
            return false
        }
        let index = framesWritten
        let info = pointer.info
        let outputs = self.outputs
        let notDecodedBefore = outputs?.framesNotDecoded ?? 0
        var sinkError: FrameDumpError?
        do {
            try pointer.withPayload { payload in
                try outputs?.write(payload, index: index)
            }
        } catch {
            sinkError = FrameDumpError.wrap(error)
        }
        pointer.unlock()
        pointer.release()
        if let sinkError { throw sinkError }
        if let outputs, outputs.decodes, outputs.framesNotDecoded > notDecodedBefore { framesNotDecoded += 1 }
        if index == 0 { firstTimestamp = info.timestampNanoseconds }
        lastTimestamp = info.timestampNanoseconds
        if !info.isMonotonic { monotonicTimestamps = false }
        framesWritten += 1
        return true
    }

    /// The pin's statistics with those of the pins before a reconnect.
    var statistics: CaptureStatistics { reconnector.earlierStatistics.adding(pin.statistics) }

    /// The summary so far (``CaptureReport``).
    func summary(cpuMicroseconds: Double, cpuFrames: Int, elapsedSeconds: Double, interrupted: Bool) -> CaptureSummary {
        CaptureReport.summary(of: self, cpuMicroseconds: cpuMicroseconds, cpuFrames: cpuFrames, elapsedSeconds: elapsedSeconds,
                              interrupted: interrupted)
    }

    /// The segment being written.
    var currentSegment: SegmentSummary {
        segments.current(format: format, outputPath: segmentOutputPath, framesWritten: framesWritten, output: outputs?.output)
    }

    /// Takes the notices gathered since the last call.
    func takeNotices() -> [String] {
        defer { notices.removeAll() }
        return notices
    }

    /// How long to wait for the next frame: the frame timeout, or while the signal is lost,
    /// --wait-for-signal's.
    var deadline: Int64 {
        if let signalLostAt, let wait = options.waitForSignalSeconds { return Clock.deadline(signalLostAt, plusSeconds: wait) }
        return Clock.deadline(lastFrameTime, plusSeconds: options.frameTimeoutSeconds)
    }

    /// write/writev calls the stream output made.
    var outputWriteCalls: Int { outputs?.output?.writeCalls ?? 0 }

    /// Ends the stream after the last frame: stops the pin, finishes the sinks, closes the output.
    func finish() throws(FrameDumpError) {
        pin.stop()
        try outputs?.finish()
    }

    /// Ends the stream after a failure: stops the pin and closes the output, which keeps every
    /// whole frame written. A y4m stream whose first frame failed holds nothing (the header
    /// goes with that frame): no empty file is left behind.
    func abandon() {
        pin.stop()
        outputs?.close()
        if options.container == .y4m, let output = outputs?.output, output.committedBytes == 0, let path = segmentOutputPath, path != "-" {
            unlink(path)
        }
    }

    /// After an unplug: waits for the same device to come back, checks that it streams the
    /// same format and starts a pin on it (``Reconnector``). Returns false when a stop was
    /// requested meanwhile.
    func reconnect(stopFlag: StopFlag) throws(FrameDumpError) -> Bool {
        guard let back = try reconnector.reconnect(device: device, pin: pin, format: format, stopFlag: stopFlag) else { return false }
        device = back.device
        pin = back.pin
        lastFrameTime = Clock.coarseNanoseconds()
        return true
    }
}

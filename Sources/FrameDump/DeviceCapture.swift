import FrameBridge
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// One device of a capture: its pin, its sinks and its counts. ``CaptureSession`` drives one of
/// these, ``MultiCaptureSession`` several (one poll over all their pins).
///
/// The steps keep framedump's promise that nothing is written before the device streams:
/// ``init(options:)`` opens the device, applies the format options and checks everything that
/// can be checked first (container, pictures, the allocator selection); ``start()`` starts the
/// pin and only then creates the outputs; ``write(_:)`` writes one frame; ``finish()`` or
/// ``abandon()`` end it.
final class DeviceCapture {
    let options: CaptureOptions
    private(set) var device: VideoDevice
    private(set) var pin: CapturePin
    /// The format the outputs of the current segment were made for.
    private(set) var format: ImageFormat
    /// The segments before the current one (a source change the capture followed starts a new one).
    private var earlierSegments: [SegmentSummary] = []
    /// Frames and bytes of the segments before the current one.
    private var framesBeforeSegment = 0
    private var bytesBeforeSegment = 0
    private var pngFilesBeforeSegment = 0
    private var jpegFilesBeforeSegment = 0
    private var framesDirectBefore = 0
    private var framesBufferedBefore = 0
    /// The current segment's -o path (with -segK after the first).
    private var segmentOutputPath: String?
    /// Source changes followed, and when the signal was lost (while it is).
    private(set) var sourceChangesFollowed = 0
    private(set) var signalLostAt: Int64?
    private var noSignalNanoseconds: Int64 = 0
    /// Why the capture stopped at a source change, when it did.
    var stoppedBySourceChange: String?
    /// One-line notices for the user (a frame rate the driver changed).
    private(set) var notices: [String] = []
    /// The frame rate asked for and the one in force, when one was asked for.
    private(set) var grantedFramesPerSecond: Double?
    /// The device's place among the `-d` options (0 for a single device).
    let position: Int

    private var jpegFormat: Bool
    private let candidate: any AllocatorDispatch
    private var png: PNGSink?
    private var mjpegPNG: MJPEGPNGSink?
    private var jpeg: JPEGSink?
    private var sinks: [any FrameSink] = []
    private var decodingSinks: [any DecodingSink] = []
    private(set) var output: FrameOutput?
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
    private var framesNotDecoded = 0
    /// Statistics of the pins before a reconnect, and the gaps.
    private var earlier = CaptureStatistics()
    private(set) var reconnects = 0
    private var disconnectedNanoseconds: Int64 = 0
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
        do {
            device = try VideoDevice(path: options.devicePath, backend: options.backend)
        } catch {
            throw FrameDumpError(error)
        }
        try options.format.checkControls(on: device)
        let waitedForSignal = try Self.awaitSignal(device, options: options)
        do {
            pin = try CapturePin(device: device, configuration: options.format.pinConfiguration(
                errorFramePolicy: options.errorFramePolicy, corruptFramePolicy: options.corruptFramePolicy))
        } catch {
            throw FrameDumpError(error)
        }
        format = pin.format
        jpegFormat = format.pixelFormat.isJPEG
        segmentOutputPath = options.outputPath
        candidate = try AllocatorPlan.candidate(memory: options.memory, source: options.dmabufSource, format: format,
                                                backend: options.backend)
        try prepareSinks()
        let preview = selection(framing: pin.framing).select(framing: pin.framing)
        if preview.fellBackToDefault || !preview.rejections.isEmpty {
            throw .runtime(rejectionMessage(rejections: preview.rejections))
        }
        if let waitedForSignal {
            noSignalNanoseconds = waitedForSignal.nanoseconds
            notices.append("\(device.path): the signal on input \(waitedForSignal.input) came after \(FrameDumpFormatting.decimal(Double(waitedForSignal.nanoseconds) / 1e9)) s (--wait-for-signal)")
        }
    }

    /// Before the pin is made: an input that says it has no signal (ENUMINPUT's status, or
    /// QUERY_DV_TIMINGS on a DV input) would stream noise. With --wait-for-signal this waits for
    /// the signal (a source-change event, POLLPRI) and applies the timings it brings; without,
    /// it fails naming the input. Returns the input and how long it waited, nil when the
    /// signal was there.
    private static func awaitSignal(_ device: VideoDevice, options: CaptureOptions) throws(FrameDumpError) -> (input: UInt32, nanoseconds: Int64)? {
        do {
            if let input = options.format.input, (try? device.currentInput()) != input { try device.selectInput(input) }
        } catch {
            throw FrameDumpError(error)
        }
        guard var loss = signalLoss(device) else {
            try applyDetectedTimings(device)
            return nil
        }
        guard let wait = options.waitForSignalSeconds else {
            throw .runtime("\(device.path): no signal on input \(loss.input) (\(loss.detail)); connect the source, or --wait-for-signal SECONDS waits for it")
        }
        let start = MonotonicClock.nanoseconds()
        let deadline = Clock.deadline(start, plusSeconds: wait)
        let subscribed = (try? device.subscribe(.sourceChange, id: loss.input)) != nil
        defer { if subscribed { try? device.unsubscribe(.sourceChange, id: loss.input) } }
        while true {
            let left = deadline - MonotonicClock.nanoseconds()
            guard left > 0 else {
                throw .runtime("\(device.path): no signal on input \(loss.input) within \(FrameDumpFormatting.decimal(wait)) s (\(loss.detail); --wait-for-signal)")
            }
            // Woken by the source-change event; a driver without events is asked again each 200 ms.
            let slice = subscribed ? left : min(left, 200_000_000)
            _ = try? device.poll(events: [.priority], timeoutMilliseconds: Int32(clamping: (slice + 999_999) / 1_000_000))
            while subscribed, (try? device.dequeueEvent()) ?? nil != nil {}
            guard let still = signalLoss(device) else { break }
            loss = still
        }
        try applyDetectedTimings(device)
        return (loss.input, MonotonicClock.nanoseconds() - start)
    }

    /// On a DV input: the timings the source sends (QUERY_DV_TIMINGS) when they differ from those
    /// set (G_DV_TIMINGS); on an analog one, the standard it sends (QUERYSTD) when the one set
    /// (G_STD) is not among those detected. The capture starts in the source's format, not in
    /// one left over (a PAL source read as NTSC would be 480 of its 576 lines, rolling).
    private static func applyDetectedTimings(_ device: VideoDevice) throws(FrameDumpError) {
        do {
            if let timings = try? device.queryDVTimings() {
                if let current = try? device.dvTimings(), current != timings { _ = try device.setDVTimings(timings) }
            } else if let detected = try? device.queryStandard(), detected != 0,
                      let current = try? device.standard(), current & detected == 0 {
                try device.setStandard(detected)
            }
        } catch {
            throw FrameDumpError(error)
        }
    }

    /// The current input's lack of signal, if it has none.
    static func signalLoss(_ device: VideoDevice) -> (input: UInt32, detail: String)? {
        guard let input = try? device.currentInput(), let info = (try? device.inputs())?.first(where: { $0.index == input }) else {
            return nil
        }
        if info.capabilityFlags.contains(.dvTimings) {
            do {
                _ = try device.queryDVTimings()
            } catch {
                if [ENOLINK, ENOLCK, ERANGE].contains(error.errno?.rawValue ?? 0) { return (input, error.description) }
            }
        }
        if info.statusFlags.contains(.noSignal) { return (input, "VIDIOC_ENUMINPUT: status no signal") }
        return nil
    }

    /// The sinks for `format`, checked before anything is written. MJPEG/JPEG frames are decoded
    /// with TurboJPEG for y4m and PNG (MJPEGSinks.swift).
    private func prepareSinks() throws(FrameDumpError) {
        png = nil
        mjpegPNG = nil
        jpeg = nil
        sinks = []
        decodingSinks = []
        if options.outputPath != nil && options.container == .y4m {
            if jpegFormat { try MJPEGY4MSink.check(format) } else { try Y4MConverter.check(format) }
        }
        if let directory = options.pngDirectory {
            if jpegFormat {
                mjpegPNG = try MJPEGPNGSink(directory: directory, every: options.pngEvery, format: format)
            } else {
                png = try PNGSink(directory: directory, every: options.pngEvery, format: format, device: device)
            }
        }
        if let directory = options.jpegDirectory {
            jpeg = try JPEGSink(directory: directory, every: options.pngEvery, format: format)
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
            throw .runtime(rejectionMessage(rejections: result.rejections))
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
            try createOutputs()
        } catch {
            pin.stop()
            try? output?.close()
            throw error
        }
    }

    private func createOutputs() throws(FrameDumpError) {
        if let path = segmentOutputPath {
            var capacity = 64
            for item in pin.framing.items { capacity += max(item.frameSizeMaximum, item.frameSizeMinimum) }
            // Direct I/O for raw frames only: a y4m frame starts with its FRAME header.
            let directIO = options.container == .raw ? options.directIO : .off
            let stream: FrameOutput
            if path == "-" {
                stream = FrameOutput.wrapping(descriptor: standardOutputDescriptor, frameCapacity: capacity)
                try stream.enableDirectIO(directIO)
            } else {
                stream = try FrameOutput.create(path: path, frameCapacity: capacity, directIO: directIO)
            }
            output = stream
            switch options.container {
            case .raw:
                sinks.append(RawSink(output: stream))
            case .y4m where jpegFormat:
                // The header waits for the first decoded frame: its chroma tag is the JPEG's.
                let sink = try MJPEGY4MSink(output: stream, format: format, frameInterval: pin.frameInterval,
                                            framesPerSecond: options.format.framesPerSecond)
                sinks.append(sink)
                decodingSinks.append(sink)
            case .y4m:
                let sink = try Y4MSink(output: stream, format: format, frameInterval: pin.frameInterval,
                                       framesPerSecond: options.format.framesPerSecond,
                                       standard: CaptureSession.analogStandard(device))
                try sink.writeHeader()
                sinks.append(sink)
            }
        }
        if let png {
            try png.createDirectory()
            sinks.append(png)
        }
        if let mjpegPNG {
            try mjpegPNG.createDirectory()
            sinks.append(mjpegPNG)
            decodingSinks.append(mjpegPNG)
        }
        if let jpeg {
            try jpeg.createDirectory()
            sinks.append(jpeg)
        }
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
        var notDecodedBefore = 0
        for sink in decodingSinks { notDecodedBefore += sink.framesNotDecoded }
        var sinkError: FrameDumpError?
        do {
            try pointer.withPayload { payload in
                for sink in sinks {
                    try sink.write(payload, index: index)
                }
            }
        } catch {
            sinkError = FrameDumpError.wrap(error)
        }
        pointer.unlock()
        pointer.release()
        if let sinkError { throw sinkError }
        if !decodingSinks.isEmpty {
            var notDecoded = 0
            for sink in decodingSinks { notDecoded += sink.framesNotDecoded }
            if notDecoded > notDecodedBefore { framesNotDecoded += 1 }
        }
        if index == 0 { firstTimestamp = info.timestampNanoseconds }
        lastTimestamp = info.timestampNanoseconds
        if !info.isMonotonic { monotonicTimestamps = false }
        framesWritten += 1
        return true
    }

    /// The pin's statistics with those of the pins before a reconnect.
    var statistics: CaptureStatistics { earlier.adding(pin.statistics) }

    /// The summary so far. `cpuMicroseconds` and `elapsedSeconds` are the capture's (the whole
    /// process's CPU, for several devices: it is shared by their frames).
    func summary(cpuMicroseconds: Double, cpuFrames: Int, elapsedSeconds: Double, interrupted: Bool) -> CaptureSummary {
        let statistics = statistics
        var fps = 0.0
        if framesWritten >= 2, lastTimestamp > firstTimestamp {
            fps = Double(framesWritten - 1) * 1e9 / Double(lastTimestamp - firstTimestamp)
        }
        var summary = CaptureSummary(device: device.path, backend: device.backend.name, pixelFormat: format.pixelFormat.description,
                              width: format.width, height: format.height, bufferType: format.bufferType.description,
                              memory: options.memory.description, allocator: allocatorName, buffers: bufferCount,
                              container: options.outputPath == nil ? nil : options.container.rawValue,
                              output: options.outputPath, framesRequested: options.count,
                              framesWritten: framesWritten, framesDropped: statistics.dropped,
                              errorFrames: statistics.errorFlagged, framesSkipped: statistics.skippedErrorFrames,
                              driverViolations: statistics.driverViolations, averageFps: fps.isFinite ? fps : 0,
                              cpuMicrosecondsPerFrame: cpuFrames > 0 ? cpuMicroseconds / Double(cpuFrames) : 0,
                              bytesWritten: output?.committedBytes ?? 0, framesDirect: output?.framesDirect ?? 0,
                              framesBuffered: output?.framesBuffered ?? 0, directIO: directIODescription,
                              pngFilesWritten: (png?.filesWritten ?? 0) + (mjpegPNG?.filesWritten ?? 0),
                              interrupted: interrupted, durationSeconds: elapsedSeconds.isFinite ? elapsedSeconds : 0,
                              reconnects: reconnects, disconnectedSeconds: Double(disconnectedNanoseconds) / 1e9,
                              compressed: pin.framing.isCompressed ? CompressedSummary(
                                policy: options.corruptFramePolicy, statistics: statistics,
                                jpegFilesWritten: jpeg?.filesWritten ?? 0, framesNotDecoded: framesNotDecoded,
                                lastDecodeError: decodingSinks.compactMap(\.lastDecodeError).last) : nil)
        summary.error = failure?.message
        let segments = earlierSegments + [currentSegment]
        // The summary's format is the first segment's; each segment says its own.
        let first = segments[0]
        summary.pixelFormat = first.pixelFormat
        summary.width = first.width
        summary.height = first.height
        summary.field = first.field
        summary.bytesWritten = bytesBeforeSegment + (output?.committedBytes ?? 0)
        summary.framesDirect = framesDirectBefore + (output?.framesDirect ?? 0)
        summary.framesBuffered = framesBufferedBefore + (output?.framesBuffered ?? 0)
        summary.pngFilesWritten += pngFilesBeforeSegment
        summary.compressed?.jpegFilesWritten += jpegFilesBeforeSegment
        summary.segments = segments
        summary.sourceChanges = sourceChangesFollowed
        summary.framesDroppedAtSourceChange = statistics.droppedAtSourceChange
        var noSignal = noSignalNanoseconds
        if let signalLostAt { noSignal += Clock.coarseNanoseconds() - signalLostAt }
        summary.noSignalSeconds = Double(noSignal) / 1e9
        summary.stoppedBySourceChange = stoppedBySourceChange
        summary.framesPerSecondRequested = options.format.framesPerSecond
        summary.framesPerSecondGranted = grantedFramesPerSecond
        return summary
    }

    /// The segment being written.
    private var currentSegment: SegmentSummary {
        SegmentSummary(output: segmentOutputPath, width: format.width, height: format.height, pixelFormat: format.pixelFormat.description,
                       field: FieldOrder.name(format.field), framesWritten: framesWritten - framesBeforeSegment,
                       bytesWritten: output?.committedBytes ?? 0)
    }

    /// The path of segment `k` (0 is -o itself): `-segK` before the extension.
    static func segmentPath(_ path: String, _ k: Int) -> String {
        guard k > 0 else { return path }
        let slash = path.lastIndex(of: "/")
        let name = slash.map { path[path.index(after: $0)...] } ?? path[...]
        if let dot = name.lastIndex(of: "."), dot != name.startIndex {
            return String(path[..<dot]) + "-seg\(k)" + String(path[dot...])
        }
        return path + "-seg\(k)"
    }

    /// A source event of the pin: a format change it followed, or the loss of the signal.
    enum SourceEvent {
        case formatChanged(FormatChange)
        case noSignal(SignalLoss)
    }

    /// The next frame (into `frame`) or source event of the pin; nil for a frame or nothing.
    /// (A function of its own: a `consume` in a session's long loop made Swift 6.3.1's
    /// MovedAsyncVarDebugInfoPropagator pass never finish.)
    func next(timeout: Duration, frame: inout StreamPointer?) throws(CaptureError) -> SourceEvent? {
        guard let event = try pin.nextEvent(timeout: timeout, keepLeadingEdge: false) else { return nil }
        switch consume event {
        case .frame(let pointer):
            frame = consume pointer
            return nil
        case .formatChanged(let change): return .formatChanged(change)
        case .noSignal(let loss): return .noSignal(loss)
        }
    }

    /// What a session does after a source event.
    enum SourceAction {
        case goOn
        /// Stop cleanly (`--on-source-change stop`): the message says why.
        case stop(String)
        case fail(FrameDumpError)
    }

    /// Follows a source event: a new format starts a new segment (a new output file, sinks for
    /// the new format); the loss of the signal waits for it with --wait-for-signal, or fails.
    func handle(_ event: SourceEvent) -> SourceAction {
        let now = Clock.coarseNanoseconds()
        switch event {
        case .noSignal(let loss):
            guard let wait = options.waitForSignalSeconds else {
                return .fail(.runtime("\(device.path): the source lost its signal (\(loss)); the output keeps the \(framesWritten) whole frames written before (of \(options.count); --wait-for-signal SECONDS waits for the signal to come back)"))
            }
            if signalLostAt == nil { signalLostAt = now }
            notices.append("\(device.path): no signal (\(loss)); waiting up to \(FrameDumpFormatting.decimal(wait)) s for it (--wait-for-signal)")
            return .goOn
        case .formatChanged(let change):
            if let lost = signalLostAt {
                noSignalNanoseconds += now - lost
                signalLostAt = nil
            }
            lastFrameTime = now
            let new = change.format
            let same = new.pixelFormat == format.pixelFormat && new.width == format.width && new.height == format.height
                && new.field == format.field && new.planes.map(\.bytesPerLine) == format.planes.map(\.bytesPerLine)
                && new.planes.map(\.sizeImage) == format.planes.map(\.sizeImage)
            if same { return .goOn }
            let described = "\(new.pixelFormat) \(new.width)x\(new.height)\(new.field == format.field ? "" : ", field \(FieldOrder.name(new.field))")"
            if options.onSourceChange == .stop {
                stoppedBySourceChange = "the source changed to \(described) (--on-source-change stop)"
                return .stop("\(device.path): the source changed to \(described) after \(framesWritten) frames; stopped (--on-source-change stop)")
            }
            if options.outputPath == "-" {
                stoppedBySourceChange = "the source changed to \(described); standard output cannot take a second format"
                return .fail(.runtime("\(device.path): the source changed to \(described) after \(framesWritten) frames; a stream on standard output cannot change its format (a y4m reader takes one header), so the capture stopped; -o FILE writes one file per format (FILE-seg1, ...), or --on-source-change stop ends the capture cleanly"))
            }
            do throws(FrameDumpError) {
                try beginSegment(format: new)
            } catch {
                return .fail(error)
            }
            sourceChangesFollowed += 1
            notices.append("\(device.path): the source changed to \(described); segment \(earlierSegments.count)\(segmentOutputPath.map { " goes to \($0)" } ?? "")")
            return .goOn
        }
    }

    /// Ends the current segment's outputs and starts the next one's, for `new`.
    private func beginSegment(format new: ImageFormat) throws(FrameDumpError) {
        for sink in sinks { try sink.finish() }
        try output?.close()
        earlierSegments.append(currentSegment)
        framesBeforeSegment = framesWritten
        bytesBeforeSegment += output?.committedBytes ?? 0
        framesDirectBefore += output?.framesDirect ?? 0
        framesBufferedBefore += output?.framesBuffered ?? 0
        pngFilesBeforeSegment += (png?.filesWritten ?? 0) + (mjpegPNG?.filesWritten ?? 0)
        jpegFilesBeforeSegment += jpeg?.filesWritten ?? 0
        output = nil
        format = new
        jpegFormat = new.pixelFormat.isJPEG
        segmentOutputPath = options.outputPath.map { Self.segmentPath($0, earlierSegments.count) }
        try prepareSinks()
        try createOutputs()
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

    /// The message for a deadline that passed: no frame, or no signal back.
    var deadlineMessage: String {
        if signalLostAt != nil, let wait = options.waitForSignalSeconds {
            return "\(device.path): the signal did not come back within \(FrameDumpFormatting.decimal(wait)) s (--wait-for-signal); the output keeps the \(framesWritten) whole frames written before (of \(options.count))"
        }
        return timeoutMessage
    }

    /// write/writev calls the stream output made.
    var outputWriteCalls: Int { output?.writeCalls ?? 0 }

    /// Ends the stream after the last frame: stops the pin, finishes the sinks, closes the output.
    func finish() throws(FrameDumpError) {
        pin.stop()
        for sink in sinks { try sink.finish() }
        try output?.close()
    }

    /// Ends the stream after a failure: stops the pin and closes the output, which keeps every
    /// whole frame written. A y4m stream whose first frame failed holds nothing (the header
    /// goes with that frame): no empty file is left behind.
    func abandon() {
        pin.stop()
        try? output?.close()
        if options.container == .y4m, let output, output.committedBytes == 0, let path = segmentOutputPath, path != "-" {
            unlink(path)
        }
    }

    /// After an unplug: waits for the same device to come back, checks that it streams the
    /// same format and starts a pin on it. Returns false when a stop was requested meanwhile.
    func reconnect(stopFlag: StopFlag) throws(FrameDumpError) -> Bool {
        let identity = device.capabilities
        let lost = MonotonicClock.nanoseconds()
        pin.stop()
        let deadline = Clock.deadline(lost, plusSeconds: options.reconnectWaitSeconds)
        var found: VideoDevice?
        while found == nil {
            if stopFlag.isRequested { return false }
            for path in DeviceListing.videoDevicePaths() {
                guard let candidate = try? VideoDevice(path: path, backend: options.backend) else { continue }
                let caps = candidate.capabilities
                if caps.busInfo == identity.busInfo && caps.card == identity.card && caps.canCapture {
                    found = candidate
                    break
                }
            }
            if found == nil {
                guard MonotonicClock.nanoseconds() < deadline else {
                    throw .runtime("\(device.path): the device was disconnected and did not come back within \(FrameDumpFormatting.decimal(options.reconnectWaitSeconds)) s (looked for bus \(identity.busInfo), card \(identity.card); --reconnect-timeout changes the limit)")
                }
                usleep(200_000)
            }
        }
        let returned = found!
        do {
            try options.format.checkControls(on: returned)
            let newPin = try CapturePin(device: returned, configuration: options.format.pinConfiguration(
                errorFramePolicy: options.errorFramePolicy, corruptFramePolicy: options.corruptFramePolicy))
            let newFormat = newPin.format
            guard newFormat.pixelFormat == format.pixelFormat, newFormat.width == format.width, newFormat.height == format.height,
                  newFormat.planes.map(\.sizeImage) == format.planes.map(\.sizeImage),
                  newFormat.planes.map(\.bytesPerLine) == format.planes.map(\.bytesPerLine) else {
                throw FrameDumpError.runtime("\(returned.path): the device came back with another format (\(newFormat.pixelFormat) \(newFormat.width)x\(newFormat.height), was \(format.pixelFormat) \(format.width)x\(format.height)); the output holds the frames before the disconnect")
            }
            let candidate = try AllocatorPlan.candidate(memory: options.memory, source: options.dmabufSource, format: newFormat,
                                                        backend: options.backend)
            let selection = AllocatorPlan.selection(candidate: candidate, memory: options.memory, frameCount: options.buffers)
            let result = try newPin.start(selection)
            if result.fellBackToDefault {
                newPin.stop()
                throw FrameDumpError.runtime(rejectionMessage(rejections: result.rejections, candidate: candidate, path: returned.path))
            }
            device = returned
            stopFlag.detach()
            stopFlag.attach(wakeupDescriptor: newPin.wakeupDescriptor)
            // The old pin's counts move to `earlier` only as it is replaced: until then
            // `statistics` adds them itself (a failed reconnect counted them twice).
            earlier = earlier.adding(pin.statistics)
            pin = newPin
        } catch let error as FrameDumpError {
            throw error
        } catch {
            throw FrameDumpError.wrap(error)
        }
        reconnects += 1
        disconnectedNanoseconds += MonotonicClock.nanoseconds() - lost
        lastFrameTime = Clock.coarseNanoseconds()
        return true
    }

    /// The summary's word on direct I/O: nil without a stream.
    private var directIODescription: String? {
        guard let output else { return nil }
        if options.container == .y4m { return "not used: y4m frames start with a FRAME header, never aligned for O_DIRECT" }
        if pin.framing.isCompressed, output.framesDirect == 0, output.directIO.isActive {
            return output.directIO.description + "; compressed frames vary in size, so most are not a whole number of blocks"
        }
        return output.directIO.description
    }

    /// Why `--memory`'s allocator was not chosen; `candidate` and `path` are this capture's
    /// unless a reconnect made new ones.
    private func rejectionMessage(rejections: [AllocatorRejection], candidate: (any AllocatorDispatch)? = nil,
                                  path: String? = nil) -> String {
        let reasons = rejections.map(\.reason).joined(separator: "; ")
        return "--memory \(options.memory): \(path ?? device.path): allocator \((candidate ?? self.candidate).name) was rejected: \(reasons.isEmpty ? "no reason given" : reasons)"
    }

    /// The message for a stream that ended with `error` after some frames.
    func endMessage(_ error: CaptureError) -> String {
        if error.kind == .disconnected {
            return "\(error.description); the output keeps the \(framesWritten) whole frames written before (of \(options.count); --reconnect waits for the device to come back)"
        }
        return "\(error.description) (after \(framesWritten) of \(options.count) frames)"
    }

    /// The message for a device that sent no frame for `--timeout` seconds.
    var timeoutMessage: String {
        "\(device.path): no frame arrived for \(FrameDumpFormatting.decimal(options.frameTimeoutSeconds)) s (poll/VIDIOC_DQBUF timed out after \(framesWritten) of \(options.count) frames); is the device producing frames? (--timeout changes the limit)"
    }
}

import FrameBridge
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// A capture: opens the device, applies the format options, selects the requested
/// allocator (only that one: a rejection is an error naming the reason), starts the pin,
/// and writes `count` frames to the sinks (a raw or YUV4MPEG2 stream and/or PNG pictures).
///
/// Nothing is written before the pin streams: bad options, a device that cannot do the
/// format, an unknown control, an unsupported container format or a rejected allocator fail
/// first, and the output file is created only after VIDIOC_STREAMON succeeded.
///
/// The loop per frame is `pin.next(keepLeadingEdge: false)` (in short slices, so the stop flag
/// is noticed), lock, write the sinks, unlock, release (which queues the buffer again at once).
/// With only the raw sink it
/// allocates nothing per frame: one writev per frame from a preallocated iovec array.
public final class CaptureSession {
    public let options: CaptureOptions
    /// Set (by SIGINT/SIGTERM, or a test) to stop after the current frame.
    public let stopFlag: StopFlag
    /// The live progress line, if one is shown.
    public var progress: ProgressLine?
    /// The descriptor `-o -` writes to (standard output).
    public var standardOutputDescriptor: Int32 = 1
    /// Called after each frame is written, with the number of frames written so far.
    public var afterFrame: ((Int) -> Void)?

    /// The pin while the session runs (for inspection).
    public private(set) var pin: CapturePin?
    /// write/writev calls the stream output made (one per frame, plus the y4m header).
    public private(set) var outputWriteCalls = 0

    public init(options: CaptureOptions, stopFlag: StopFlag = StopSignals.flag) {
        self.options = options
        self.stopFlag = stopFlag
    }

    private struct Progress {
        var framesWritten = 0
        var firstTimestamp: Int64 = 0
        var lastTimestamp: Int64 = 0
        var interrupted = false
        var startTime: Int64 = 0
        var startCPU: Int64 = 0
    }

    /// Runs the capture and returns its summary.
    ///
    /// - Throws: ``FrameDumpError``; when frames had been written, its ``FrameDumpError/summary``
    ///   says how many.
    public func run() throws(FrameDumpError) -> CaptureSummary {
        try options.validate()
        let device: VideoDevice
        do {
            device = try VideoDevice(path: options.devicePath, backend: options.backend)
        } catch {
            throw FrameDumpError(error)
        }
        try options.format.checkControls(on: device)
        let pin: CapturePin
        do {
            pin = try CapturePin(device: device, configuration: options.format.pinConfiguration(errorFramePolicy: options.errorFramePolicy))
        } catch {
            throw FrameDumpError(error)
        }
        self.pin = pin
        defer {
            pin.stop()
            self.pin = nil
        }
        let format = pin.format

        // Everything that can be checked before streaming.
        if options.outputPath != nil && options.container == .y4m {
            try Y4MConverter.check(format)
        }
        var png: PNGSink?
        if let directory = options.pngDirectory {
            png = try PNGSink(directory: directory, every: options.pngEvery, format: format, device: device)
        }
        let candidate = try AllocatorPlan.candidate(memory: options.memory, source: options.dmabufSource, format: format,
                                                    backend: options.backend)
        let selection = AllocatorPlan.selection(candidate: candidate, memory: options.memory, frameCount: options.buffers,
                                                framing: pin.framing)
        let preview = selection.select(framing: pin.framing)
        if preview.fellBackToDefault || !preview.rejections.isEmpty {
            throw .runtime(rejectionMessage(device: device, candidate: candidate, rejections: preview.rejections))
        }

        var progress = Progress()
        progress.startCPU = Clock.cpuMicroseconds()
        progress.startTime = Clock.monotonicNanoseconds()
        let result: AllocatorSelectionResult
        do {
            result = try pin.start(selection)
        } catch {
            throw FrameDumpError(error)
        }
        if result.fellBackToDefault {
            pin.stop()
            throw .runtime(rejectionMessage(device: device, candidate: candidate, rejections: result.rejections))
        }
        let allocatorName = result.chosen.name
        let buffers = pin.bufferCounts
        let bufferCount = buffers.queued + buffers.held + buffers.free

        // The pin streams: now the outputs may be created.
        var sinks: [any FrameSink] = []
        var output: FrameOutput?
        do throws(FrameDumpError) {
            if let path = options.outputPath {
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
                case .y4m:
                    let sink = try Y4MSink(output: stream, format: format, frameInterval: pin.frameInterval,
                                           framesPerSecond: options.format.framesPerSecond)
                    try sink.writeHeader()
                    sinks.append(sink)
                }
            }
            if let png {
                try png.createDirectory()
                sinks.append(png)
            }
        } catch {
            try? output?.close()
            throw error
        }

        func summary() -> CaptureSummary {
            let statistics = pin.statistics
            let elapsed = Double(Clock.monotonicNanoseconds() - progress.startTime) / 1e9
            let cpu = Double(Clock.cpuMicroseconds() - progress.startCPU)
            var fps = 0.0
            if progress.framesWritten >= 2, progress.lastTimestamp > progress.firstTimestamp {
                fps = Double(progress.framesWritten - 1) * 1e9 / Double(progress.lastTimestamp - progress.firstTimestamp)
            }
            return CaptureSummary(device: device.path, backend: device.backend.name, pixelFormat: format.pixelFormat.description,
                                  width: format.width, height: format.height, bufferType: format.bufferType.description,
                                  memory: options.memory.description, allocator: allocatorName, buffers: bufferCount,
                                  container: options.outputPath == nil ? nil : options.container.rawValue,
                                  output: options.outputPath, framesRequested: options.count,
                                  framesWritten: progress.framesWritten, framesDropped: statistics.dropped,
                                  errorFrames: statistics.errorFlagged, framesSkipped: statistics.skippedErrorFrames,
                                  driverViolations: statistics.driverViolations, averageFps: fps.isFinite ? fps : 0,
                                  cpuMicrosecondsPerFrame: progress.framesWritten > 0 ? cpu / Double(progress.framesWritten) : 0,
                                  bytesWritten: output?.committedBytes ?? 0, framesDirect: output?.framesDirect ?? 0,
                                  framesBuffered: output?.framesBuffered ?? 0, directIO: directIODescription(output),
                                  pngFilesWritten: png?.filesWritten ?? 0,
                                  interrupted: progress.interrupted, durationSeconds: elapsed.isFinite ? elapsed : 0)
        }

        func failure(_ error: FrameDumpError) -> FrameDumpError {
            self.progress?.clear()
            pin.stop()
            try? output?.close()
            // A y4m stream whose first frame failed holds nothing (the header goes with that
            // frame): leave no empty file behind.
            if options.container == .y4m, let output, output.committedBytes == 0, let path = options.outputPath, path != "-" {
                unlink(path)
            }
            self.outputWriteCalls = output?.writeCalls ?? 0
            var error = error
            error.summary = summary()
            return error
        }

        let count = options.count
        let timeout = Int64(options.frameTimeoutSeconds * 1e9)
        let slice = max(1, options.pollSliceMilliseconds)
        var lastFrameTime = Clock.monotonicNanoseconds()
        while progress.framesWritten < count {
            if stopFlag.isRequested {
                progress.interrupted = true
                break
            }
            // The pointer holds the frame's only reference: it is queued again the moment it
            // is released after the write, not at the next advance.
            var next: StreamPointer?
            do {
                next = try pin.next(timeoutMilliseconds: slice, keepLeadingEdge: false)
            } catch {
                throw failure(FrameDumpError(.runtime, "\(error.description) (after \(progress.framesWritten) of \(count) frames)"))
            }
            let now = Clock.monotonicNanoseconds()
            guard var pointer = next.take() else {
                if now - lastFrameTime >= timeout {
                    throw failure(.runtime("\(device.path): no frame arrived for \(FrameDumpFormatting.decimal(options.frameTimeoutSeconds)) s (poll/VIDIOC_DQBUF timed out after \(progress.framesWritten) of \(count) frames); is the device producing frames? (--timeout changes the limit)"))
                }
                continue
            }
            lastFrameTime = now
            do {
                try pointer.lock()
            } catch {
                continue
            }
            let index = progress.framesWritten
            let timestamp = pointer.info.timestampNanoseconds
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
            if let sinkError { throw failure(sinkError) }
            if index == 0 { progress.firstTimestamp = timestamp }
            progress.lastTimestamp = timestamp
            progress.framesWritten += 1
            afterFrame?(progress.framesWritten)
            if let line = self.progress, line.isDue(now: now) {
                let elapsed = Double(now - progress.startTime) / 1e9
                line.show(frames: progress.framesWritten, total: count,
                          fps: elapsed > 0 ? Double(progress.framesWritten) / elapsed : 0,
                          dropped: pin.statistics.dropped, now: now)
            }
        }
        self.progress?.clear()
        let finished = summary()
        pin.stop()
        outputWriteCalls = output?.writeCalls ?? 0
        do throws(FrameDumpError) {
            for sink in sinks { try sink.finish() }
            try output?.close()
        } catch {
            var error = error
            error.summary = finished
            throw error
        }
        return finished
    }

    /// The summary's word on direct I/O: nil without a stream.
    private func directIODescription(_ output: FrameOutput?) -> String? {
        guard let output else { return nil }
        if options.container == .y4m { return "not used: y4m frames start with a FRAME header, never aligned for O_DIRECT" }
        return output.directIO.description
    }

    private func rejectionMessage(device: VideoDevice, candidate: any AllocatorDispatch, rejections: [AllocatorRejection]) -> String {
        let reasons = rejections.map(\.reason).joined(separator: "; ")
        return "--memory \(options.memory): \(device.path): allocator \(candidate.name) was rejected: \(reasons.isEmpty ? "no reason given" : reasons)"
    }
}

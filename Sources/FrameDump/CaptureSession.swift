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
        /// Frames a decoding sink (MJPEG to PNG or y4m) could not decode.
        var framesNotDecoded = 0
        var startTime: Int64 = 0
        var startCPU: Int64 = 0
    }

    /// Runs the capture and returns its summary.
    ///
    /// - Throws: ``FrameDumpError``; when frames had been written, its ``FrameDumpError/summary``
    ///   says how many.
    public func run() throws(FrameDumpError) -> CaptureSummary {
        try options.validate()
        var device: VideoDevice
        do {
            device = try VideoDevice(path: options.devicePath, backend: options.backend)
        } catch {
            throw FrameDumpError(error)
        }
        try options.format.checkControls(on: device)
        var pin: CapturePin
        do {
            pin = try CapturePin(device: device, configuration: options.format.pinConfiguration(
                errorFramePolicy: options.errorFramePolicy, corruptFramePolicy: options.corruptFramePolicy))
        } catch {
            throw FrameDumpError(error)
        }
        self.pin = pin
        // SIGINT wakes the pin's wait at once; detached (waiting out a handler under way)
        // before the pin, and its eventfd, can go.
        stopFlag.attach(wakeupDescriptor: pin.wakeupDescriptor)
        defer {
            stopFlag.detach()
            pin.stop()
            self.pin = nil
        }
        let format = pin.format

        // Everything that can be checked before streaming.
        // MJPEG/JPEG frames are decoded with TurboJPEG for y4m and PNG (MJPEGSinks.swift).
        let jpegFormat = format.pixelFormat.isJPEG
        if options.outputPath != nil && options.container == .y4m {
            if jpegFormat { try MJPEGY4MSink.check(format) } else { try Y4MConverter.check(format) }
        }
        var png: PNGSink?
        var mjpegPNG: MJPEGPNGSink?
        if let directory = options.pngDirectory {
            if jpegFormat {
                mjpegPNG = try MJPEGPNGSink(directory: directory, every: options.pngEvery, format: format)
            } else {
                png = try PNGSink(directory: directory, every: options.pngEvery, format: format, device: device)
            }
        }
        var jpeg: JPEGSink?
        if let directory = options.jpegDirectory {
            jpeg = try JPEGSink(directory: directory, every: options.pngEvery, format: format)
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
        var decodingSinks: [any DecodingSink] = []
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
                case .y4m where jpegFormat:
                    // The header waits for the first decoded frame: its chroma tag is the JPEG's.
                    let sink = try MJPEGY4MSink(output: stream, format: format, frameInterval: pin.frameInterval,
                                                framesPerSecond: options.format.framesPerSecond)
                    sinks.append(sink)
                    decodingSinks.append(sink)
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
            if let mjpegPNG {
                try mjpegPNG.createDirectory()
                sinks.append(mjpegPNG)
                decodingSinks.append(mjpegPNG)
            }
            if let jpeg {
                try jpeg.createDirectory()
                sinks.append(jpeg)
            }
        } catch {
            try? output?.close()
            throw error
        }

        // Statistics of the pins before a reconnect, and the gaps.
        var earlier = CaptureStatistics()
        var reconnects = 0
        var disconnectedNanoseconds: Int64 = 0

        func summary() -> CaptureSummary {
            var statistics = pin.statistics
            statistics.dropped += earlier.dropped
            statistics.errorFlagged += earlier.errorFlagged
            statistics.skippedErrorFrames += earlier.skippedErrorFrames
            statistics.driverViolations += earlier.driverViolations
            statistics.compressedEmpty += earlier.compressedEmpty
            statistics.compressedMissingStartOfImage += earlier.compressedMissingStartOfImage
            statistics.compressedTruncated += earlier.compressedTruncated
            statistics.compressedBytesUsedOverLength += earlier.compressedBytesUsedOverLength
            statistics.corruptSkipped += earlier.corruptSkipped
            statistics.corruptDelivered += earlier.corruptDelivered
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
                                  pngFilesWritten: (png?.filesWritten ?? 0) + (mjpegPNG?.filesWritten ?? 0),
                                  interrupted: progress.interrupted, durationSeconds: elapsed.isFinite ? elapsed : 0,
                                  reconnects: reconnects, disconnectedSeconds: Double(disconnectedNanoseconds) / 1e9,
                                  compressed: pin.framing.isCompressed ? CompressedSummary(
                                    policy: options.corruptFramePolicy, statistics: statistics,
                                    jpegFilesWritten: jpeg?.filesWritten ?? 0, framesNotDecoded: progress.framesNotDecoded,
                                    lastDecodeError: decodingSinks.compactMap(\.lastDecodeError).last) : nil)
        }

        /// After an unplug: waits for the same device to come back, checks that it streams the
        /// same format and starts a pin on it. Returns false when a stop was requested meanwhile.
        func reconnect() throws(FrameDumpError) -> Bool {
            let identity = device.capabilities
            let lost = Clock.monotonicNanoseconds()
            earlier.dropped += pin.statistics.dropped
            earlier.errorFlagged += pin.statistics.errorFlagged
            earlier.skippedErrorFrames += pin.statistics.skippedErrorFrames
            earlier.driverViolations += pin.statistics.driverViolations
            earlier.compressedEmpty += pin.statistics.compressedEmpty
            earlier.compressedMissingStartOfImage += pin.statistics.compressedMissingStartOfImage
            earlier.compressedTruncated += pin.statistics.compressedTruncated
            earlier.compressedBytesUsedOverLength += pin.statistics.compressedBytesUsedOverLength
            earlier.corruptSkipped += pin.statistics.corruptSkipped
            earlier.corruptDelivered += pin.statistics.corruptDelivered
            pin.stop()
            let deadline = lost + Int64(options.reconnectTimeoutSeconds * 1e9)
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
                    guard Clock.monotonicNanoseconds() < deadline else {
                        throw .runtime("\(device.path): the device was disconnected and did not come back within \(FrameDumpFormatting.decimal(options.reconnectTimeoutSeconds)) s (looked for bus \(identity.busInfo), card \(identity.card); --reconnect-timeout changes the limit)")
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
                    throw FrameDumpError.runtime(rejectionMessage(device: returned, candidate: candidate, rejections: result.rejections))
                }
                device = returned
                stopFlag.detach()
                stopFlag.attach(wakeupDescriptor: newPin.wakeupDescriptor)
                pin = newPin
                self.pin = newPin
            } catch let error as FrameDumpError {
                throw error
            } catch {
                throw FrameDumpError.wrap(error)
            }
            reconnects += 1
            disconnectedNanoseconds += Clock.monotonicNanoseconds() - lost
            return true
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
                // One wait up to the frame timeout: the stop flag wakes it (the pin's eventfd).
                let left = max(0, timeout - (Clock.monotonicNanoseconds() - lastFrameTime))
                next = try pin.next(timeout: .nanoseconds(left), keepLeadingEdge: false)
            } catch {
                if error.kind == .disconnected {
                    if options.reconnect {
                        self.progress?.clear()
                        do throws(FrameDumpError) {
                            guard try reconnect() else {
                                progress.interrupted = true
                                break
                            }
                        } catch {
                            throw failure(error)
                        }
                        lastFrameTime = Clock.monotonicNanoseconds()
                        continue
                    }
                    throw failure(FrameDumpError(.runtime, "\(error.description); the output keeps the \(progress.framesWritten) whole frames written before (of \(count); --reconnect waits for the device to come back)"))
                }
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
            if let sinkError { throw failure(sinkError) }
            if !decodingSinks.isEmpty {
                var notDecoded = 0
                for sink in decodingSinks { notDecoded += sink.framesNotDecoded }
                if notDecoded > notDecodedBefore { progress.framesNotDecoded += 1 }
            }
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
        if pin?.framing.isCompressed == true, output.framesDirect == 0, output.directIO.isActive {
            return output.directIO.description + "; compressed frames vary in size, so most are not a whole number of blocks"
        }
        return output.directIO.description
    }

    private func rejectionMessage(device: VideoDevice, candidate: any AllocatorDispatch, rejections: [AllocatorRejection]) -> String {
        let reasons = rejections.map(\.reason).joined(separator: "; ")
        return "--memory \(options.memory): \(device.path): allocator \(candidate.name) was rejected: \(reasons.isEmpty ? "no reason given" : reasons)"
    }
}

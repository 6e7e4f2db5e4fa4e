import FrameBridge
import V4L2

/// What a device's capture says: its summary (``CaptureSummary``) and the words of its
/// messages (a stream that ended, a frame or a signal that did not come, a rejected allocator).
enum CaptureReport {
    /// The summary of `capture` so far. `cpuMicroseconds` and `elapsedSeconds` are the
    /// capture's (the whole process's CPU, for several devices: it is shared by their frames).
    static func summary(of capture: DeviceCapture, cpuMicroseconds: Double, cpuFrames: Int, elapsedSeconds: Double,
                        interrupted: Bool) -> CaptureSummary {
        let options = capture.options
        let statistics = capture.statistics
        let format = capture.format
        let outputs = capture.outputs
        let output = outputs?.output
        let log = capture.segments
        let framesWritten = capture.framesWritten
        var fps = 0.0
        if framesWritten >= 2, capture.lastTimestamp > capture.firstTimestamp {
            fps = Double(framesWritten - 1) * 1e9 / Double(capture.lastTimestamp - capture.firstTimestamp)
        }
        var summary = CaptureSummary(device: capture.device.path, backend: capture.device.backend.name, pixelFormat: format.pixelFormat.description,
                              width: format.width, height: format.height, bufferType: format.bufferType.description,
                              memory: options.memory.description, allocator: capture.allocatorName, buffers: capture.bufferCount,
                              container: options.outputPath == nil ? nil : options.container.rawValue,
                              output: options.outputPath, framesRequested: options.count,
                              framesWritten: framesWritten, framesDropped: statistics.dropped,
                              errorFrames: statistics.errorFlagged, framesSkipped: statistics.skippedErrorFrames,
                              driverViolations: statistics.driverViolations, averageFps: fps.isFinite ? fps : 0,
                              cpuMicrosecondsPerFrame: cpuFrames > 0 ? cpuMicroseconds / Double(cpuFrames) : 0,
                              bytesWritten: output?.committedBytes ?? 0, framesDirect: output?.framesDirect ?? 0,
                              framesBuffered: output?.framesBuffered ?? 0, directIO: directIODescription(capture),
                              pngFilesWritten: outputs?.pngFilesWritten ?? 0,
                              interrupted: interrupted, durationSeconds: elapsedSeconds.isFinite ? elapsedSeconds : 0,
                              reconnects: capture.reconnector.reconnects,
                              disconnectedSeconds: Double(capture.reconnector.disconnectedNanoseconds) / 1e9,
                              compressed: capture.pin.framing.isCompressed ? CompressedSummary(
                                policy: options.corruptFramePolicy, statistics: statistics,
                                jpegFilesWritten: outputs?.jpegFilesWritten ?? 0, framesNotDecoded: capture.framesNotDecoded,
                                lastDecodeError: outputs?.lastDecodeError) : nil)
        summary.error = capture.failure?.message
        let segments = log.earlier + [capture.currentSegment]
        // The summary's format is the first segment's; each segment says its own.
        let first = segments[0]
        summary.pixelFormat = first.pixelFormat
        summary.width = first.width
        summary.height = first.height
        summary.field = first.field
        summary.bytesWritten = log.bytesBefore + (output?.committedBytes ?? 0)
        summary.framesDirect = log.framesDirectBefore + (output?.framesDirect ?? 0)
        summary.framesBuffered = log.framesBufferedBefore + (output?.framesBuffered ?? 0)
        summary.pngFilesWritten += log.pngFilesBefore
        summary.compressed?.jpegFilesWritten += log.jpegFilesBefore
        summary.segments = segments
        summary.sourceChanges = capture.sourceChangesFollowed
        summary.framesDroppedAtSourceChange = statistics.droppedAtSourceChange
        var noSignal = capture.noSignalNanoseconds
        if let signalLostAt = capture.signalLostAt { noSignal += Clock.coarseNanoseconds() - signalLostAt }
        summary.noSignalSeconds = Double(noSignal) / 1e9
        summary.stoppedBySourceChange = capture.stoppedBySourceChange
        summary.framesPerSecondRequested = options.format.framesPerSecond
        summary.framesPerSecondGranted = capture.grantedFramesPerSecond
        return summary
    }

    /// The summary's word on direct I/O: nil without a stream.
    private static func directIODescription(_ capture: DeviceCapture) -> String? {
        guard let output = capture.outputs?.output else { return nil }
        if capture.options.container == .y4m { return "not used: y4m frames start with a FRAME header, never aligned for O_DIRECT" }
        if capture.pin.framing.isCompressed, output.framesDirect == 0, output.directIO.isActive {
            return output.directIO.description + "; compressed frames vary in size, so most are not a whole number of blocks"
        }
        return output.directIO.description
    }

    /// Why `--memory`'s allocator `candidate` was not chosen for the device at `path`.
    static func rejectionMessage(memory: MemoryKind, path: String, candidate: any AllocatorDispatch,
                                 rejections: [AllocatorRejection]) -> String {
        let reasons = rejections.map(\.reason).joined(separator: "; ")
        return "--memory \(memory): \(path): allocator \(candidate.name) was rejected: \(reasons.isEmpty ? "no reason given" : reasons)"
    }

    /// The message for a stream of `capture` that ended with `error` after some frames.
    static func endMessage(_ capture: DeviceCapture, _ error: CaptureError) -> String {
        let options = capture.options
        if error.kind == .disconnected {
            return "\(error.description); the output keeps the \(capture.framesWritten) whole frames written before (of \(options.count); --reconnect waits for the device to come back)"
        }
        return "\(error.description) (after \(capture.framesWritten) of \(options.count) frames)"
    }

    /// The message for a deadline of `capture` that passed: no frame, or no signal back.
    static func deadlineMessage(_ capture: DeviceCapture) -> String {
        let options = capture.options
        if capture.signalLostAt != nil, let wait = options.waitForSignalSeconds {
            return "\(capture.device.path): the signal did not come back within \(FrameDumpFormatting.decimal(wait)) s (--wait-for-signal); the output keeps the \(capture.framesWritten) whole frames written before (of \(options.count))"
        }
        return "\(capture.device.path): no frame arrived for \(FrameDumpFormatting.decimal(options.frameTimeoutSeconds)) s (poll/VIDIOC_DQBUF timed out after \(capture.framesWritten) of \(options.count) frames); is the device producing frames? (--timeout changes the limit)"
    }
}

import FrameBridge
import V4L2

/// Following the source of a device's capture: a format change the pin followed starts a new
/// segment; a lost signal is waited for with --wait-for-signal, or ends the stream.
extension DeviceCapture {
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

    /// What the loop does after a source event.
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
            notices.append("\(device.path): the source changed to \(described); segment \(segments.earlier.count)\(segmentOutputPath.map { " goes to \($0)" } ?? "")")
            return .goOn
        }
    }

    /// Ends the current segment's outputs and starts the next one's, for `new`.
    private func beginSegment(format new: ImageFormat) throws(FrameDumpError) {
        try outputs?.finish()
        segments.endSegment(currentSegment, framesWritten: framesWritten, outputs: outputs)
        outputs = nil
        format = new
        segmentOutputPath = segments.currentOutputPath
        outputs = try SegmentOutputs(options: options, format: new, outputPath: segmentOutputPath, device: device)
        try openOutputs()
    }
}

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
/// The loop per frame is `pin.next(keepLeadingEdge: false)` (one wait up to the frame timeout,
/// woken at once by the stop flag), lock, write the sinks, unlock, release (which queues the
/// buffer again at once). With only the raw sink it allocates nothing per frame: one writev per
/// frame from a preallocated iovec array. Several devices: ``MultiCaptureSession``.
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
    /// Called with one-line notices: a frame rate the driver changed, a source change followed,
    /// a lost signal waited for.
    public var notice: ((String) -> Void)?

    /// The pin while the session runs (for inspection).
    public private(set) var pin: CapturePin?
    /// write/writev calls the stream output made (one per frame, plus the y4m header).
    public private(set) var outputWriteCalls = 0

    public init(options: CaptureOptions, stopFlag: StopFlag = StopSignals.flag) {
        self.options = options
        self.stopFlag = stopFlag
    }

    /// Runs the capture and returns its summary.
    ///
    /// - Throws: ``FrameDumpError``; when frames had been written, its ``FrameDumpError/summary``
    ///   says how many.
    public func run() throws(FrameDumpError) -> CaptureSummary {
        let capture = try DeviceCapture(options: options)
        capture.standardOutputDescriptor = standardOutputDescriptor
        pin = capture.pin
        // SIGINT wakes the pin's wait at once; detached (waiting out a handler under way)
        // before the pin, and its eventfd, can go.
        stopFlag.attach(wakeupDescriptor: capture.pin.wakeupDescriptor)
        defer {
            stopFlag.detach()
            capture.pin.stop()
            self.pin = nil
        }
        let startCPU = Clock.cpuMicroseconds()
        let startTime = MonotonicClock.nanoseconds()
        try capture.start()
        for line in capture.takeNotices() { notice?(line) }
        var interrupted = false

        func summary() -> CaptureSummary {
            capture.summary(cpuMicroseconds: Double(Clock.cpuMicroseconds() - startCPU), cpuFrames: capture.framesWritten,
                            elapsedSeconds: Double(MonotonicClock.nanoseconds() - startTime) / 1e9, interrupted: interrupted)
        }
        func failure(_ error: FrameDumpError) -> FrameDumpError {
            self.progress?.clear()
            capture.abandon()
            outputWriteCalls = capture.outputWriteCalls
            var error = error
            error.summary = summary()
            return error
        }

        let count = options.count
        while !capture.isDone {
            if stopFlag.isRequested {
                interrupted = true
                break
            }
            // The pointer holds the frame's only reference: it is queued again the moment it
            // is released after the write, not at the next advance.
            var frame: StreamPointer?
            let source: DeviceCapture.SourceEvent?
            do {
                // One wait up to the frame timeout: the stop flag wakes it (the pin's eventfd).
                source = try capture.next(timeout: .nanoseconds(max(0, capture.deadline - Clock.coarseNanoseconds())), frame: &frame)
            } catch {
                if error.kind == .disconnected && options.reconnect {
                    self.progress?.clear()
                    do throws(FrameDumpError) {
                        guard try capture.reconnect(stopFlag: stopFlag) else {
                            interrupted = true
                            break
                        }
                    } catch {
                        throw failure(error)
                    }
                    pin = capture.pin
                    continue
                }
                throw failure(FrameDumpError(.runtime, capture.endMessage(error)))
            }
            if let source {
                let action = capture.handle(source)
                self.progress?.clear()
                for line in capture.takeNotices() { notice?(line) }
                switch action {
                case .goOn: continue
                case .stop(let message):
                    notice?(message)
                case .fail(let error): throw failure(error)
                }
                break
            }
            guard let pointer = frame.take() else {
                if Clock.coarseNanoseconds() >= capture.deadline {
                    throw failure(.runtime(capture.deadlineMessage))
                }
                continue
            }
            do throws(FrameDumpError) {
                guard try capture.write(pointer) else { continue }
            } catch {
                throw failure(error)
            }
            afterFrame?(capture.framesWritten)
            if let line = self.progress {
                let now = Clock.coarseNanoseconds()
                if line.isDue(now: now) {
                    let elapsed = Double(now - startTime) / 1e9
                    line.show(frames: capture.framesWritten, total: count,
                              fps: elapsed > 0 ? Double(capture.framesWritten) / elapsed : 0,
                              dropped: capture.pin.statistics.dropped, now: now)
                }
            }
        }
        self.progress?.clear()
        let finished = summary()
        outputWriteCalls = capture.outputWriteCalls
        do throws(FrameDumpError) {
            try capture.finish()
        } catch {
            var error = error
            error.summary = finished
            throw error
        }
        return finished
    }

    /// The analog standard of the current input (G_STD), when it takes standards.
    static func analogStandard(_ device: VideoDevice) -> UInt64? {
        guard let current = try? device.currentInput(),
              let input = (try? device.inputs())?.first(where: { $0.index == current }),
              input.capabilityFlags.contains(.standards) else { return nil }
        return try? device.standard()
    }
}

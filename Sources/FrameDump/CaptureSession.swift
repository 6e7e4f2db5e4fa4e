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
/// The loop (``CaptureLoop``) per frame is one wait on the pin up to the frame timeout (woken
/// at once by the stop flag), lock, write the sinks, unlock, release (which queues the buffer
/// again at once). With only the raw sink it allocates nothing per frame: one writev per frame
/// from a preallocated iovec array. Several devices: ``MultiCaptureSession``.
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

        var loop = CaptureLoop(captures: [capture], devices: [0], source: PinSource(capture), scope: .capture,
                               stopFlag: stopFlag, startTime: startTime)
        loop.progress = progress
        loop.notice = notice
        if let afterFrame { loop.afterFrame = { _, frames in afterFrame(frames) } }
        loop.afterReconnect = { [unowned self] in self.pin = capture.pin }
        interrupted = try loop.run { error in
            self.progress?.clear()
            capture.abandon()
            outputWriteCalls = capture.outputWriteCalls
            var error = error
            error.summary = summary()
            return error
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
}

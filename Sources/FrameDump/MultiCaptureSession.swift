import FrameBridge
import V4L2

/// A capture from several devices at once (`framedump capture -d A -d B ...`): one process, one
/// poll(2) over every pin (``PinGroup``), `count` frames from each.
///
/// Every device is opened and set up before any starts, so a bad option or format fails before
/// anything is written. While streaming, one device's failure or unplug (or `--timeout` without a
/// frame) ends that device's stream with its error and the others go on; its output keeps every
/// whole frame. With `allOrNothing`, the first failure stops every device.
///
/// Frames of different devices are related by their timestamps (CLOCK_MONOTONIC): the summary
/// gives each device's skew to the first device.
public final class MultiCaptureSession {
    public let options: [CaptureOptions]
    public let allOrNothing: Bool
    /// Set (by SIGINT/SIGTERM, or a test) to stop after the current frame.
    public let stopFlag: StopFlag
    /// The live progress line, if one is shown.
    public var progress: ProgressLine?
    /// Called after each frame is written, with the device's position and its frames so far.
    public var afterFrame: ((Int, Int) -> Void)?
    /// Called with one-line notices (``CaptureSession/notice``).
    public var notice: ((String) -> Void)?

    public init(options: [CaptureOptions], allOrNothing: Bool = false, stopFlag: StopFlag = StopSignals.flag) {
        precondition(!options.isEmpty, "MultiCaptureSession needs at least one device")
        self.options = options
        self.allOrNothing = allOrNothing
        self.stopFlag = stopFlag
    }

    /// Checks what concerns the devices together: each device once, each output once, one
    /// backend, no stream to standard output from more than one device.
    public static func validate(_ options: [CaptureOptions]) throws(FrameDumpError) {
        var devices: Set<String> = []
        var outputs: [String: Int] = [:]
        for (n, device) in options.enumerated() {
            guard devices.insert(device.devicePath).inserted else {
                throw .usage("-d \(device.devicePath) is given twice; each device can be captured once")
            }
            if device.reconnect && options.count > 1 {
                throw .usage("--reconnect works with one -d only (it waits for the device in the capture loop)")
            }
            if device.backend !== options[0].backend {
                throw .usage("-d \(device.devicePath): every device of one capture must be opened the same way (--libv4l2 applies to all)")
            }
            let places: [(option: String, path: String?)] = [("-o", device.outputPath), ("--png-dir", device.pngDirectory),
                                                             ("--jpeg-dir", device.jpegDirectory)]
            for (option, place) in places {
                guard let path = place else { continue }
                if option == "-o", path == "-", options.count > 1 {
                    throw .usage("-o -: \(options.count) devices cannot share standard output; name a file with {n} (the device's position), e.g. -o cam{n}.raw")
                }
                if let other = outputs[path] {
                    throw .usage("\(option) \(path): devices \(other) and \(n) would write to the same place; put {n} (the device's position among the -d options) in the name, e.g. cam{n}.raw")
                }
                outputs[path] = n
            }
        }
    }

    /// Runs the capture and returns its summary; a device whose stream ended early has its
    /// ``CaptureSummary/error`` set (``MultiCaptureSummary/failedDevices``).
    ///
    /// - Throws: ``FrameDumpError`` when setting up a device fails (before anything is written),
    ///   and with `allOrNothing` on the first failure (its ``FrameDumpError/devicesSummary``
    ///   says what had been written).
    public func run() throws(FrameDumpError) -> MultiCaptureSummary {
        try Self.validate(options)
        var captures: [DeviceCapture] = []
        for (n, device) in options.enumerated() {
            captures.append(try DeviceCapture(options: device, position: n))
        }
        defer { for capture in captures { capture.pin.stop() } }
        let count = options[0].count
        let startCPU = Clock.cpuMicroseconds()
        let startTime = MonotonicClock.nanoseconds()
        var interrupted = false
        let skew = SkewMeter(devices: captures.count, capacity: options.map(\.count).max() ?? count)

        func summary() -> MultiCaptureSummary {
            let cpu = Double(Clock.cpuMicroseconds() - startCPU)
            var frames = 0
            for capture in captures { frames += capture.framesWritten }
            let elapsed = Double(MonotonicClock.nanoseconds() - startTime) / 1e9
            var devices = captures.map {
                $0.summary(cpuMicroseconds: cpu, cpuFrames: frames, elapsedSeconds: elapsed, interrupted: interrupted)
            }
            let monotonic = captures.allSatisfy(\.monotonicTimestamps)
            for i in devices.indices.dropFirst() where monotonic {
                devices[i].skew = skew.summary(device: i, reference: devices[0].device)
            }
            return MultiCaptureSummary(devices: devices, allOrNothing: allOrNothing, interrupted: interrupted,
                                       durationSeconds: elapsed.isFinite ? elapsed : 0,
                                       cpuMicrosecondsPerFrame: frames > 0 ? cpu / Double(frames) : 0,
                                       skewNote: monotonic ? nil : "not measured: a device's timestamps are not CLOCK_MONOTONIC")
        }
        func fatal(_ error: FrameDumpError) -> FrameDumpError {
            self.progress?.clear()
            for capture in captures { capture.abandon() }
            var error = error
            error.devicesSummary = summary()
            return error
        }
        /// Ends device `c`'s stream with `error`; with allOrNothing, everything.
        func end(_ c: Int, _ error: FrameDumpError) throws(FrameDumpError) {
            captures[c].failure = error
            captures[c].abandon()
            if allOrNothing {
                throw fatal(FrameDumpError(.runtime, "\(error.message) (--all-or-nothing: every device stopped)"))
            }
        }

        // Start each device; with allOrNothing one that cannot start stops the capture.
        var started: [Int] = []
        for (c, capture) in captures.enumerated() {
            do throws(FrameDumpError) {
                try capture.start()
                for line in capture.takeNotices() { notice?(line) }
                started.append(c)
            } catch {
                if allOrNothing || error.kind == .usage { throw fatal(error) }
                try end(c, error)
            }
        }
        guard !started.isEmpty else {
            self.progress?.clear()
            return summary()
        }
        let group: PinGroup
        do {
            group = try PinGroup(started.map { captures[$0].pin }, allOrNothing: allOrNothing)
        } catch {
            throw fatal(FrameDumpError(error))
        }
        stopFlag.attach(wakeupDescriptor: group.wakeupDescriptor)
        defer { stopFlag.detach() }

        var loop = CaptureLoop(captures: captures, devices: started, source: GroupSource(group),
                               scope: .device(allOrNothing: allOrNothing), stopFlag: stopFlag, startTime: startTime)
        loop.progress = progress
        loop.notice = notice
        loop.afterFrame = afterFrame
        loop.skew = skew
        interrupted = try loop.run(fatal: fatal)
        self.progress?.clear()
        group.stop()
        var finished = summary()
        for (c, capture) in captures.enumerated() where capture.failure == nil {
            do throws(FrameDumpError) {
                try capture.finish()
            } catch {
                capture.failure = error
                finished.devices[c].error = error.message
            }
        }
        return finished
    }
}

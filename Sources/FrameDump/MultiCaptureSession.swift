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

        while started.contains(where: { !captures[$0].isDone }) {
            if stopFlag.isRequested {
                interrupted = true
                break
            }
            // One wait up to the earliest device's frame timeout.
            var deadline = Int64.max
            for c in started where !captures[c].isDone {
                deadline = min(deadline, captures[c].deadline)
            }
            let now = Clock.coarseNanoseconds()
            var frame: StreamPointer? = nil
            if let (g, ending, source) = try wait(group, timeout: .nanoseconds(max(0, deadline - now)), fatal: fatal, frame: &frame) {
                let c = started[g]
                let capture = captures[c]
                if let source {
                    guard !capture.isDone else { continue }
                    let action = capture.handle(source)
                    self.progress?.clear()
                    for line in capture.takeNotices() { notice?(line) }
                    switch action {
                    case .goOn: break
                    case .stop(let message):
                        notice?(message)
                        group.retire(pin: g)
                    case .fail(let error):
                        group.retire(pin: g)
                        try end(c, error)
                    }
                    continue
                }
                if let ending {
                    guard !capture.isDone else { continue }
                    try end(c, FrameDumpError(.runtime, capture.endMessage(ending)))
                    continue
                }
                guard let pointer = frame.take(), !capture.isDone else { continue }
                let timestamp = pointer.info.timestampNanoseconds
                do throws(FrameDumpError) {
                    guard try capture.write(pointer) else { continue }
                } catch {
                    group.retire(pin: g)
                    try end(c, error)
                    continue
                }
                skew.record(device: c, timestamp: timestamp)
                afterFrame?(c, capture.framesWritten)
                if capture.framesWritten >= capture.options.count { group.retire(pin: g) }
                if let line = self.progress {
                    let now = Clock.coarseNanoseconds()
                    if line.isDue(now: now) {
                        var dropped = 0
                        for capture in captures { dropped += capture.pin.statistics.dropped }
                        let seconds = Double(now - startTime) / 1e9
                        line.show(devices: captures.map(\.framesWritten), total: count, seconds: seconds, dropped: dropped, now: now)
                    }
                }
            } else {
                let now = Clock.coarseNanoseconds()
                for (g, c) in started.enumerated() where !captures[c].isDone {
                    if now >= captures[c].deadline {
                        group.retire(pin: g)
                        try end(c, .runtime(captures[c].deadlineMessage))
                    }
                }
            }
        }
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

extension MultiCaptureSession {
    /// The group's next event: the pin, and its frame (in `frame`), the error that ended its
    /// stream or its source event; nil when the wait timed out or was woken. With allOrNothing the group stopped every
    /// pin on a failure, whose error names the device. (A function of its own: a `consume` in
    /// run()'s long body made Swift 6.3.1's MovedAsyncVarDebugInfoPropagator pass never finish.)
    fileprivate func wait(_ group: PinGroup, timeout: Duration, fatal: (FrameDumpError) -> FrameDumpError,
                          frame: inout StreamPointer?) throws(FrameDumpError)
        -> (pin: Int, ending: CaptureError?, source: DeviceCapture.SourceEvent?)? {
        let next: PinGroupEvent?
        do {
            next = try group.next(timeout: timeout)
        } catch {
            throw fatal(FrameDumpError(.runtime, "\(error.description) (--all-or-nothing: every device stopped)"))
        }
        guard let event = consume next else { return nil }
        switch consume event {
        case .frame(let pin, let pointer):
            frame = consume pointer
            return (pin, nil, nil)
        case .ended(let pin, let error):
            return (pin, error, nil)
        case .formatChanged(let pin, let change):
            return (pin, nil, .formatChanged(change))
        case .noSignal(let pin, let loss):
            return (pin, nil, .noSignal(loss))
        }
    }
}

/// How far each device's frames lie from the first device's: for every frame of device k > 0,
/// the distance of its timestamp to the nearest frame of device 0 among the last few, corrected
/// when a nearer frame of device 0 comes after it.
///
/// Its memory is bounded whatever the frame count (-n): per device the first
/// ``exactLimit`` distances, from which the median is exact, and a histogram of 1/64-octave
/// bins that takes over for the median beyond them (within 1.6%). The count, the mean and
/// the maximum are exact. Nothing is allocated per frame.
final class SkewMeter {
    private static let window = 4
    /// Distances kept per device for an exact median.
    static let exactLimit = 16_384

    /// One device's distances: the last one stays pending while a later frame of device 0
    /// may still lower it.
    private struct Device {
        var pending: Int64?
        var lastTimestamp: Int64 = 0
        /// Committed distances: how many, their sum and the largest.
        var count = 0
        var total = 0.0
        var maximum: Int64 = 0
        /// The first ``exactLimit`` committed distances.
        var exact: [Int64] = []
        var histogram: SkewHistogram

        mutating func commit(_ distance: Int64) {
            count += 1
            total += Double(distance)
            maximum = max(maximum, distance)
            if exact.count < SkewMeter.exactLimit { exact.append(distance) }
            histogram.add(distance)
        }
    }

    private var reference: [Int64]
    private var referenceCount = 0
    private var devices: [Device]

    /// - Parameter capacity: the frames expected per device; storage is reserved for at most
    ///   ``exactLimit`` of them.
    init(devices: Int, capacity: Int) {
        reference = Array(repeating: 0, count: Self.window)
        let reserved = max(0, min(capacity, Self.exactLimit))
        self.devices = (0..<devices).map { k in
            var device = Device(histogram: SkewHistogram(allocated: k > 0))
            if k > 0 { device.exact.reserveCapacity(reserved) }
            return device
        }
    }

    /// The distances this meter can hold in memory, all devices together (what it allocates,
    /// the histograms aside, which have a fixed size).
    var storedDistanceCapacity: Int { devices.reduce(0) { $0 + $1.exact.capacity } }

    func record(device: Int, timestamp: Int64) {
        if device == 0 {
            reference[referenceCount % Self.window] = timestamp
            referenceCount += 1
            // A device's last frame may lie nearer to this frame than to the earlier ones.
            for k in devices.indices.dropFirst() {
                guard let pending = devices[k].pending else { continue }
                let distance = abs(devices[k].lastTimestamp - timestamp)
                if distance < pending { devices[k].pending = distance }
            }
            return
        }
        guard referenceCount > 0 else { return }
        var nearest = Int64.max
        for i in 0..<min(referenceCount, Self.window) { nearest = min(nearest, abs(timestamp - reference[i])) }
        if let pending = devices[device].pending { devices[device].commit(pending) }
        devices[device].pending = nearest
        devices[device].lastTimestamp = timestamp
    }

    func summary(device k: Int, reference path: String) -> SkewSummary? {
        guard k > 0 else { return nil }
        var device = devices[k]
        if let pending = device.pending { device.commit(pending) }
        guard device.count > 0 else { return nil }
        let median: Int64
        if device.count == device.exact.count {
            median = device.exact.sorted()[device.count / 2]
        } else {
            median = device.histogram.value(atRank: device.count / 2)
        }
        let mean: Double
        if device.count == device.exact.count {
            // Summed in ascending order, as always: the same mean to the last digit.
            var total = 0.0
            for distance in device.exact.sorted() { total += Double(distance) }
            mean = total / Double(device.count) / 1e6
        } else {
            mean = device.total / Double(device.count) / 1e6
        }
        return SkewSummary(reference: path, framesCompared: device.count, medianMilliseconds: Double(median) / 1e6,
                           meanMilliseconds: mean, maximumMilliseconds: Double(device.maximum) / 1e6)
    }
}

/// Counts of non-negative nanosecond distances in bins of 1/64 octave (exact below 64 ns):
/// 3,712 counters whatever the number of values.
struct SkewHistogram {
    private static let subBins = 64
    private static let binCount = 58 * 64
    private var counts: [Int]

    init(allocated: Bool) {
        counts = allocated ? Array(repeating: 0, count: Self.binCount) : []
    }

    static func bin(_ value: Int64) -> Int {
        let value = max(0, value)
        if value < Int64(subBins) { return Int(value) }
        let exponent = 63 - value.leadingZeroBitCount          // 6...62
        let mantissa = Int(value >> (exponent - 6)) & (subBins - 1)
        return (exponent - 5) * subBins + mantissa
    }

    /// The middle of `bin`'s range.
    static func value(ofBin bin: Int) -> Int64 {
        if bin < subBins { return Int64(bin) }
        let exponent = bin / subBins + 5
        let mantissa = Int64(bin % subBins)
        let low = (Int64(subBins) + mantissa) << (exponent - 6)
        return low + (Int64(1) << (exponent - 6)) / 2
    }

    mutating func add(_ value: Int64) {
        counts[Self.bin(value)] += 1
    }

    /// The value of rank `rank` (0 the smallest), within its bin.
    func value(atRank rank: Int) -> Int64 {
        var seen = 0
        for (bin, count) in counts.enumerated() where count > 0 {
            seen += count
            if seen > rank { return Self.value(ofBin: bin) }
        }
        return 0
    }
}

/// A device's skew to the first device (``CaptureSummary/skew``).
public struct SkewSummary: Hashable, Sendable, Codable {
    /// The first device, whose frames the others are compared with.
    public var reference: String
    public var framesCompared: Int
    public var medianMilliseconds: Double
    public var meanMilliseconds: Double
    public var maximumMilliseconds: Double

    func render() -> String {
        "median \(FrameDumpFormatting.decimal(medianMilliseconds, digits: 2)) ms, max \(FrameDumpFormatting.decimal(maximumMilliseconds, digits: 2)) ms from the nearest frame of \(reference) (\(framesCompared) frames)"
    }
}

/// What a capture from several devices did: each device's summary, and the totals.
public struct MultiCaptureSummary: Hashable, Sendable, Codable {
    public var devices: [CaptureSummary]
    /// Frames written, all devices together.
    public var framesWritten: Int
    /// Devices whose stream ended early with an error (``CaptureSummary/error``).
    public var failedDevices: Int
    public var allOrNothing: Bool
    public var interrupted: Bool
    public var durationSeconds: Double
    /// The process's user plus system CPU time per frame, over all devices' frames.
    public var cpuMicrosecondsPerFrame: Double
    /// The largest skew of any device to the first device.
    public var maximumSkewMilliseconds: Double?
    /// Why the skew was not measured, when it was not.
    public var skewNote: String?

    init(devices: [CaptureSummary], allOrNothing: Bool, interrupted: Bool, durationSeconds: Double,
         cpuMicrosecondsPerFrame: Double, skewNote: String?) {
        self.devices = devices
        var written = 0
        var failed = 0
        for device in devices {
            written += device.framesWritten
            if device.error != nil { failed += 1 }
        }
        framesWritten = written
        failedDevices = failed
        self.allOrNothing = allOrNothing
        self.interrupted = interrupted
        self.durationSeconds = durationSeconds
        self.cpuMicrosecondsPerFrame = cpuMicrosecondsPerFrame
        maximumSkewMilliseconds = devices.compactMap(\.skew?.maximumMilliseconds).max()
        self.skewNote = skewNote
    }

    /// The text summary: each device's, then the totals.
    public func render() -> String {
        var text = devices.map { $0.render() }.joined()
        text += "framedump: \(devices.count) devices: \(framesWritten) frames in \(FrameDumpFormatting.decimal(durationSeconds)) s, "
        text += "cpu per frame \(FrameDumpFormatting.decimal(cpuMicrosecondsPerFrame, digits: 1)) us"
        if let maximumSkewMilliseconds { text += ", largest skew \(FrameDumpFormatting.decimal(maximumSkewMilliseconds, digits: 2)) ms" }
        if let skewNote { text += ", skew \(skewNote)" }
        if failedDevices > 0 { text += ", \(failedDevices) ended early" }
        return text + "\n"
    }

    /// The JSON summary (camelCase keys).
    public func json() -> String { FrameDumpJSON.encode(self) }
}

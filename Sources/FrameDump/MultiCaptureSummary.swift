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

import V4L2

/// What a pin does when its source changes (V4L2_EVENT_SOURCE_CHANGE: an HDMI source's
/// timings, an analog standard, the signal coming or going).
public enum SourceChangePolicy: String, Sendable, Codable, CaseIterable {
    /// Subscribe to source changes (on an input with DV timings or standards) and follow them:
    /// stop, apply the new timings or standard, read the new format, select an allocator
    /// again and restart. ``CapturePin/nextEvent(timeout:keepLeadingEdge:)`` reports it.
    case follow
    /// No subscription: the pin keeps streaming what it was set up with.
    case ignore
}

/// Why a pin that follows its source is not streaming: the source has no usable signal.
public struct SignalLoss: Sendable, CustomStringConvertible {
    /// The input whose signal is gone.
    public var input: UInt32
    /// The input's status bits (VIDIOC_ENUMINPUT), when they could be read.
    public var status: InputStatus?
    /// What said so: `VIDIOC_QUERY_DV_TIMINGS: ENOLINK (no signal)`, `VIDIOC_QUERYSTD: no standard detected`, …
    public var detail: String
    /// The failed query, when one failed.
    public var underlying: V4L2Error?

    public var description: String {
        let bits = status.map { $0.names.isEmpty ? "" : " (input status: \($0.names.joined(separator: ", ")))" } ?? ""
        return "input \(input): \(detail)\(bits)"
    }
}

/// A source change the pin followed: the stream was stopped and started again in `format`.
/// Every frame delivered after it has this format; none of the old one follows it.
public struct FormatChange: Sendable {
    /// The input the change came from (the event's id).
    public var input: UInt32
    /// What the event said changed (the last event, when several came at once).
    public var changes: SourceChanges
    /// The format before the change and the one in force now.
    public var previous: ImageFormat
    public var format: ImageFormat
    public var frameInterval: Fraction?
    public var framing: AllocatorFraming
    /// The allocator selection run again with the candidates given to ``CapturePin/start(_:)``:
    /// a candidate that no longer fits is among its rejections.
    public var selection: AllocatorSelectionResult
    /// The timings detected and applied (QUERY_DV_TIMINGS, S_DV_TIMINGS) on a DV input.
    public var timings: DVTimings?
    /// The standard detected and applied (QUERYSTD, S_STD) on an analog input.
    public var standard: UInt64?
    /// ``CapturePin/formatGeneration`` after the change (1 for the first change).
    public var generation: UInt64
    /// Frames the driver had filled when the event was seen, dropped undelivered.
    public var framesDropped: Int
    /// Whether the pin had been waiting for a signal (``PinEvent/noSignal(_:)``) before it.
    public var afterNoSignal: Bool
    /// CLOCK_MONOTONIC nanoseconds: the event (the driver's timestamp) and the restart (STREAMON).
    public var eventTimestampNanoseconds: Int64
    public var restartedNanoseconds: Int64
}

/// What ``CapturePin/nextEvent(timeout:keepLeadingEdge:)`` hands back.
public enum PinEvent: ~Copyable {
    /// The next frame (in the format of the last ``formatChanged(_:)``, or the pin's first).
    case frame(StreamPointer)
    /// The source changed and the pin restarted in a new format; the frames that follow have it.
    /// Also after ``noSignal(_:)`` when the signal is back, even if the format is the same.
    case formatChanged(FormatChange)
    /// The source has no signal: the pin stopped and waits for it (each later wait returns nil
    /// at its timeout while there is none, then ``formatChanged(_:)`` when it is back).
    /// Reported once per loss.
    case noSignal(SignalLoss)
}

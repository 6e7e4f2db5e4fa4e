import FrameBridge

/// What a capture did, printed at the end (text on standard error, or JSON with `--json`).
public struct CaptureSummary: Hashable, Sendable, Codable {
    public var device: String
    /// `kernel`, `libv4l2` or `simulator`.
    public var backend: String
    public var pixelFormat: String
    /// The field order in force (`none` for progressive, `interlaced`, ...).
    public var field: String = "none"
    public var width: UInt32
    public var height: UInt32
    /// `video-capture` or `video-capture-mplane`.
    public var bufferType: String
    public var memory: String
    /// The allocator selection chose.
    public var allocator: String
    /// Buffers the allocator provided.
    public var buffers: Int
    /// `raw` or `y4m`, when a stream was written.
    public var container: String?
    /// The output path (`-` for standard output), when a stream was written.
    public var output: String?
    public var framesRequested: Int
    /// Frames written (or, without an output, captured).
    public var framesWritten: Int
    /// Frames the driver dropped (gaps in sequence numbers).
    public var framesDropped: Int
    /// Frames with V4L2_BUF_FLAG_ERROR (written or skipped).
    public var errorFrames: Int
    /// Error-flagged frames skipped (`--error-frames skip`).
    public var framesSkipped: Int
    /// Impossible answers from the driver, never written.
    public var driverViolations: Int
    /// Frames per second, from the first to the last frame's timestamp.
    public var averageFps: Double
    /// User plus system CPU time per frame, in microseconds (getrusage).
    public var cpuMicrosecondsPerFrame: Double
    /// Stream bytes written (header and whole frames).
    public var bytesWritten: Int
    /// Frames of the stream written with O_DIRECT, straight from the capture buffer.
    public var framesDirect: Int = 0
    /// Frames of the stream written through the page cache.
    public var framesBuffered: Int = 0
    /// Whether the stream used direct I/O, and why not when it did not (``DirectIOStatus``),
    /// when a stream was written.
    public var directIO: String?
    public var pngFilesWritten: Int
    /// Whether SIGINT/SIGTERM (or a stop request) ended the capture early.
    public var interrupted: Bool
    /// Wall time from the start of streaming to the end, in seconds.
    public var durationSeconds: Double
    /// Times the device was unplugged and came back (`--reconnect`).
    public var reconnects: Int = 0
    /// Seconds without the device, over all reconnects: the gap in the stream.
    public var disconnectedSeconds: Double = 0
    /// Compressed formats only (MJPEG, ...): frame validation and MJPEG outputs.
    public var compressed: CompressedSummary? = nil
    /// Each format the capture wrote, in order: one segment, or one more after each source change
    /// it followed (`--on-source-change follow`), each in its own file (-o with -segK).
    public var segments: [SegmentSummary] = []
    /// Source changes followed into a new segment.
    public var sourceChanges: Int = 0
    /// Frames the driver had filled when a source change came, dropped undelivered.
    public var framesDroppedAtSourceChange: Int = 0
    /// Seconds without a signal (`--wait-for-signal`).
    public var noSignalSeconds: Double = 0
    /// Why the capture stopped at a source change, when it did.
    public var stoppedBySourceChange: String? = nil
    /// `--fps`, and the rate the driver set (VIDIOC_S_PARM's answer), when --fps was given.
    public var framesPerSecondRequested: Double? = nil
    public var framesPerSecondGranted: Double? = nil
    /// The error that ended this device's stream early (with several devices, the others went on).
    public var error: String? = nil
    /// With several devices, for each but the first: how far its frames' timestamps lie from the
    /// nearest frame of the first device.
    public var skew: SkewSummary? = nil

    /// The text summary, one item per line.
    public func render() -> String {
        var text = "framedump: \(device): \(framesWritten)/\(framesRequested) frames"
        if let output { text += " to \(output == "-" ? "standard output" : output) (\(container ?? "raw"))" }
        text += "\n"
        text += "  format           : \(pixelFormat) \(width)x\(height) (\(bufferType))\(field == "none" ? "" : ", field \(field)")\n"
        text += "  allocator        : \(allocator), \(buffers) buffers, \(memory) memory, backend \(backend)\n"
        text += "  frames written   : \(framesWritten)\n"
        text += "  frames dropped   : \(framesDropped)\n"
        text += "  error frames     : \(errorFrames)\n"
        text += "  frames skipped   : \(framesSkipped)\n"
        text += "  driver violations: \(driverViolations)\n"
        text += "  average fps      : \(FrameDumpFormatting.decimal(averageFps))\n"
        text += "  cpu per frame    : \(FrameDumpFormatting.decimal(cpuMicrosecondsPerFrame, digits: 1)) us\n"
        text += "  bytes written    : \(bytesWritten)\n"
        if let directIO {
            text += "  direct i/o       : \(framesDirect) frames direct, \(framesBuffered) through the page cache; \(directIO)\n"
        }
        if pngFilesWritten > 0 { text += "  png files        : \(pngFilesWritten)\n" }
        if reconnects > 0 {
            text += "  reconnects       : \(reconnects) (\(FrameDumpFormatting.decimal(disconnectedSeconds)) s without the device)\n"
        }
        if let compressed { text += compressed.render() }

        if let requested = framesPerSecondRequested, let granted = framesPerSecondGranted, abs(granted - requested) > requested * 0.005 {
            text += "  frame rate       : \(FrameDumpFormatting.decimal(granted)) fps (--fps \(FrameDumpFormatting.decimal(requested)) asked; the driver set it)\n"
        }
        if segments.count > 1 || sourceChanges > 0 {
            text += "  source changes   : \(sourceChanges) followed, \(framesDroppedAtSourceChange) frames dropped at them\n"
            for (k, segment) in segments.enumerated() {
                text += "  segment \(k)        : \(segment.pixelFormat) \(segment.width)x\(segment.height)\(segment.field == "none" ? "" : " \(segment.field)"), \(segment.framesWritten) frames\(segment.output.map { " to \($0)" } ?? "")\n"
            }
        }
        if noSignalSeconds > 0 { text += "  no signal        : \(FrameDumpFormatting.decimal(noSignalSeconds)) s\n" }
        if let stoppedBySourceChange { text += "  stopped          : \(stoppedBySourceChange)\n" }
        if let skew { text += "  skew             : \(skew.render())\n" }
        if let error { text += "  ended by         : \(error)\n" }
        text += "  interrupted      : \(interrupted ? "yes" : "no")\n"
        return text
    }

    /// The JSON summary (camelCase keys).
    public func json() -> String { FrameDumpJSON.encode(self) }
}

/// One format of a capture (``CaptureSummary/segments``).
public struct SegmentSummary: Hashable, Sendable, Codable {
    /// The file this segment went to (-o, then -o with -seg1, -seg2, ...), when a stream was written.
    public var output: String?
    public var width: UInt32
    public var height: UInt32
    public var pixelFormat: String
    public var field: String
    public var framesWritten: Int
    public var bytesWritten: Int
}

/// The compressed-frame part of a capture summary: each validation case counted separately.
public struct CompressedSummary: Hashable, Sendable, Codable {
    /// `--corrupt-frames`: `skip` or `deliver`.
    public var corruptFrames: String
    /// Frames with bytesused 0.
    public var corruptEmpty: Int
    /// JPEG frames without an SOI marker (FF D8) at the start.
    public var corruptMissingSOI: Int
    /// JPEG frames without an EOI marker (FF D9) at the end, after at most
    /// ``JPEGFrameCheck/maximumTrailingPadding`` zero bytes: truncated.
    public var corruptTruncated: Int
    /// Frames whose bytesused was larger than the buffer.
    public var corruptBytesUsedOverLength: Int
    /// Corrupt frames given back to the driver unwritten (`skip`).
    public var corruptSkipped: Int
    /// Corrupt frames written, flagged (`deliver`); they count in framesWritten.
    public var corruptDelivered: Int
    /// The last corrupt frame, described.
    public var lastCorruption: String?
    /// `--jpeg-dir` files written.
    public var jpegFilesWritten: Int
    /// Frames that PNG or y4m output could not decode (corrupt, or refused by libjpeg): no
    /// picture was made of them.
    public var framesNotDecoded: Int
    public var lastDecodeError: String?

    public init(policy: CorruptFramePolicy, statistics: CaptureStatistics, jpegFilesWritten: Int, framesNotDecoded: Int,
                lastDecodeError: String?) {
        corruptFrames = policy.rawValue
        corruptEmpty = statistics.compressedEmpty
        corruptMissingSOI = statistics.compressedMissingStartOfImage
        corruptTruncated = statistics.compressedTruncated
        corruptBytesUsedOverLength = statistics.compressedBytesUsedOverLength
        corruptSkipped = statistics.corruptSkipped
        corruptDelivered = statistics.corruptDelivered
        lastCorruption = statistics.lastCorruption
        self.jpegFilesWritten = jpegFilesWritten
        self.framesNotDecoded = framesNotDecoded
        self.lastDecodeError = lastDecodeError
    }

    func render() -> String {
        var text = "  corrupt frames   : \(corruptSkipped) skipped, \(corruptDelivered) delivered (--corrupt-frames \(corruptFrames)): "
        text += "\(corruptEmpty) empty, \(corruptMissingSOI) without SOI, \(corruptTruncated) truncated (no EOI), "
        text += "\(corruptBytesUsedOverLength) bytesused > length\n"
        if let lastCorruption { text += "  last corrupt     : \(lastCorruption)\n" }
        if jpegFilesWritten > 0 { text += "  jpeg files       : \(jpegFilesWritten)\n" }
        if framesNotDecoded > 0 {
            text += "  not decoded      : \(framesNotDecoded) frames got no picture\(lastDecodeError.map { "; last: \($0)" } ?? "")\n"
        }
        return text
    }
}

import FrameBridge
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// The memory-to-memory device a capture feeds: a node, or an encoder found by its codec.
public enum ConnectionTarget: Hashable, Sendable, CustomStringConvertible {
    case device(String)
    /// The first encoder whose CAPTURE queue gives this format (`--encode fwht`, `--encode h264`).
    case codec(FourCC)

    /// `fwht`, `h264`, `hevc`, `jpeg`, `vp8`, `vp9` name a codec; anything else is a device path.
    public static func parse(_ text: String) -> ConnectionTarget {
        let codecs: [String: String] = ["fwht": "FWHT", "h264": "H264", "hevc": "HEVC", "jpeg": "JPEG", "vp8": "VP80", "vp9": "VP90"]
        if let code = codecs[text.lowercased()], let fourCC = FourCC(code) { return .codec(fourCC) }
        return .device(text)
    }

    public var description: String {
        switch self {
        case .device(let path): return path
        case .codec(let fourCC): return fourCC.description
        }
    }
}

/// `capture --encode` / `--convert`: the capture options of the source, and the device it feeds.
public struct ConnectionOptions: Sendable {
    /// The source's options: device, count, memory, buffers, format, -o, timeout.
    public var capture: CaptureOptions
    /// `.encoder` for --encode, `.converter` for --convert.
    public var role: MemoryToMemoryRole
    public var target: ConnectionTarget
    public var preference: ConnectionPreference
    /// A converter's output format and size (`--pixel-format`, `--size` with --convert).
    public var resultFormat: FourCC?
    public var resultWidth: UInt32?
    public var resultHeight: UInt32?

    public init(capture: CaptureOptions, role: MemoryToMemoryRole, target: ConnectionTarget, preference: ConnectionPreference = .auto,
                resultFormat: FourCC? = nil, resultWidth: UInt32? = nil, resultHeight: UInt32? = nil) {
        self.capture = capture
        self.role = role
        self.target = target
        self.preference = preference
        self.resultFormat = resultFormat
        self.resultWidth = resultWidth
        self.resultHeight = resultHeight
    }
}

/// A capture whose frames go through a memory-to-memory device (``MemoryToMemoryConnection``)
/// and whose output is what the device gives: an encoded stream, or converted frames.
///
/// The stream is written as the device gives it: H.264 as its Annex B bytes; FWHT in the layout
/// of v4l2-ctl's `--stream-to-hdr` (per buffer the fourcc `Vhdr` and each plane's length, big
/// endian, before its bytes), which `v4l2-ctl --stream-from-hdr` reads back; a converter's
/// frames raw. Like ``CaptureSession``, nothing is written before the devices stream; the file
/// holds whole buffers only.
public final class ConnectionSession {
    public let options: ConnectionOptions
    public let stopFlag: StopFlag
    /// One-line notices for the user.
    public var notice: ((String) -> Void)?

    public init(options: ConnectionOptions, stopFlag: StopFlag = StopSignals.flag) {
        self.options = options
        self.stopFlag = stopFlag
    }

    /// What one segment (one format of the source) did.
    private struct SegmentState {
        var captured = 0
        var dropped = 0
        var bytesWritten = 0
        var results = 0
        var lastSequence: UInt32?
    }

    /// Runs the capture into the device; after a source change (`--on-source-change follow`),
    /// the connection is drained and set up again in the new format, into the next segment's file.
    public func run() throws(FrameDumpError) -> ConnectionSummary {
        let capture = options.capture
        try capture.validate()
        if capture.outputPath == "-" {
            throw .usage("-o -: with --encode or --convert, write the stream to a file")
        }
        let source: VideoDevice, target: VideoDevice
        do {
            source = try VideoDevice(path: capture.devicePath, backend: capture.backend)
            target = try VideoDevice(path: try ConnectionSession.find(options.target, role: options.role, backend: capture.backend),
                                     backend: capture.backend)
        } catch let error as V4L2Error {
            throw FrameDumpError(error)
        } catch let error as FrameDumpError {
            throw error
        } catch {
            throw .runtime("\(error)")
        }
        try capture.format.checkControls(on: source)
        if let path = capture.outputPath { try FrameOutput.checkWritable(path: path) }
        let startCPU = Clock.cpuMicroseconds()
        let startTime = MonotonicClock.nanoseconds()
        var segments: [ConnectionSummary.Segment] = []
        var last: (connection: MemoryToMemoryConnection, state: SegmentState)?
        var totals = SegmentState()
        var interrupted = false
        var failure: FrameDumpError?
        var sourceChangesFollowed = 0
        while true {
            let remaining = capture.count - totals.captured
            let path = capture.outputPath.map { SegmentLog.path($0, segments.count) }
            let connection: MemoryToMemoryConnection
            do throws(FrameDumpError) {
                if let waited = try SignalWait.awaitSignal(source, options: capture) {
                    notice?("\(source.path): the signal on input \(waited.input) came after \(FrameDumpFormatting.decimal(Double(waited.nanoseconds) / 1e9)) s (--wait-for-signal)")
                }
                connection = try connect(source: source, target: target)
            } catch {
                if segments.isEmpty { throw error }
                failure = error
                break
            }
            var state = SegmentState()
            // Before the segment: a pin that follows a change reads the new format at once.
            let format = connection.source.format, result = connection.results.format
            let allocator = connection.source.allocator?.name ?? "none"
            let outcome = segment(connection, count: remaining, path: path, state: &state)
            totals.captured += state.captured
            totals.dropped += state.dropped
            totals.bytesWritten += state.bytesWritten
            totals.results += state.results
            segments.append(ConnectionSummary.Segment(
                output: path, pixelFormat: format.pixelFormat.description, width: format.width, height: format.height,
                framesCaptured: state.captured, resultFrames: connection.statistics.results, resultBytes: connection.statistics.resultBytes,
                resultPixelFormat: result.pixelFormat.description, resultWidth: result.width, resultHeight: result.height,
                connection: connection.kind.rawValue, allocator: allocator))
            last = (connection, state)
            switch outcome {
            case .done:
                break
            case .interrupted:
                interrupted = true
            case .failed(let error):
                failure = error
            case .sourceChanged:
                sourceChangesFollowed += 1
                if capture.onSourceChange == .follow, totals.captured < capture.count {
                    notice?("\(source.path): the source changed; the connection is drained and set up again, into \(capture.outputPath.map { SegmentLog.path($0, segments.count) } ?? "no file")")
                    continue
                }
            }
            break
        }
        guard let (connection, _) = last else { throw failure ?? .runtime("\(source.path): no segment ran") }
        let duration = MonotonicClock.nanoseconds() - startTime
        let statistics = connection.statistics
        let resultFormat = connection.results.format
        let summary = ConnectionSummary(
            device: capture.devicePath, pixelFormat: connection.source.format.pixelFormat.description,
            width: connection.source.format.width, height: connection.source.format.height,
            bytesPerLine: Int(connection.source.format.planes.first?.bytesPerLine ?? 0),
            framesRequested: capture.count, framesCaptured: totals.captured, framesDropped: totals.dropped,
            output: capture.outputPath, bytesWritten: totals.bytesWritten,
            connection: ConnectionSummary.Connection(
                device: connection.device.path, role: connection.role?.rawValue ?? "unknown",
                chosen: connection.kind.rawValue, zeroCopy: connection.kind.isZeroCopy, why: connection.selection.why,
                rejections: connection.selection.rejections.map { .init(kind: $0.kind.rawValue, reason: $0.reason) },
                framesSent: statistics.framesSent, framesReturned: statistics.framesReturned,
                framesInFlightMaximum: statistics.inFlightMaximum, framesCopied: statistics.framesCopied,
                bytesCopied: statistics.bytesCopied, framesRefused: statistics.framesRefused),
            result: ConnectionSummary.Result(
                pixelFormat: resultFormat.pixelFormat.description, width: resultFormat.width, height: resultFormat.height,
                compressed: connection.results.framing.isCompressed,
                container: resultFormat.pixelFormat == FourCC("FWHT") ? "v4l2-ctl-hdr" : "raw",
                frames: totals.results, bytes: segments.reduce(0) { $0 + $1.resultBytes },
                timestampsMatched: statistics.resultsMatched, timestampsUnmatched: statistics.resultsUnmatched),
            segments: segments, sourceChangesFollowed: sourceChangesFollowed,
            cpuMicrosecondsPerFrame: totals.captured > 0 ? Double(Clock.cpuMicroseconds() - startCPU) / Double(totals.captured) : 0,
            durationSeconds: Double(duration) / 1e9, interrupted: interrupted, error: failure?.message)
        if var failure {
            failure.connectionSummary = summary
            throw failure
        }
        if totals.results < totals.captured, !interrupted {
            var error = FrameDumpError.runtime("\(connection.device.path): \(totals.results) results for \(totals.captured) frames captured")
            error.connectionSummary = summary
            throw error
        }
        return summary
    }

    /// A source pin and a connection for the source's current format.
    private func connect(source: VideoDevice, target: VideoDevice) throws(FrameDumpError) -> MemoryToMemoryConnection {
        let capture = options.capture
        var sourceConfiguration = capture.format.pinConfiguration(errorFramePolicy: capture.errorFramePolicy,
                                                                  corruptFramePolicy: capture.corruptFramePolicy)
        // The pin notices a change (and stops following it once the connection stops it); the
        // session sets everything up again in the new format.
        sourceConfiguration.sourceChanges = .follow
        var resultConfiguration = PinConfiguration(sourceChanges: .ignore)
        do throws(CaptureError) {
            let description = try ConnectionSession.describe(target)
            if options.role == .converter, sourceConfiguration.pixelFormat == nil {
                // The converter takes some formats only: the camera's own if it is one, else
                // the first the camera offers that the converter takes.
                sourceConfiguration.pixelFormat = try ConnectionSession.commonFormat(source: source, takes: description.outputFormats.map(\.pixelFormat))
            }
            let pin = try CapturePin(device: source, configuration: sourceConfiguration)
            switch options.role {
            case .encoder:
                let coded = description.captureFormats.first { $0.isCompressed }?.pixelFormat
                if case .codec(let fourCC) = options.target { resultConfiguration.pixelFormat = fourCC } else { resultConfiguration.pixelFormat = coded }
                resultConfiguration.width = pin.format.width
                resultConfiguration.height = pin.format.height
            case .converter, .decoder:
                resultConfiguration.pixelFormat = options.resultFormat
                resultConfiguration.width = options.resultWidth
                resultConfiguration.height = options.resultHeight
            }
            // The camera's own allocator (--memory, --dmabuf-from), used where the connection
            // leaves the source free to choose (the copy).
            let candidate: any AllocatorDispatch
            do throws(FrameDumpError) {
                candidate = try AllocatorPlan.candidate(memory: capture.memory, source: capture.dmabufSource, format: pin.format,
                                                        backend: capture.backend)
            } catch {
                throw CaptureError(.invalidConfiguration, error.message)
            }
            let connection = try MemoryToMemoryConnection(
                source: pin, device: target, results: resultConfiguration, preference: options.preference,
                sourceSelection: AllocatorPlan.selection(candidate: candidate, memory: capture.memory, frameCount: capture.buffers, framing: pin.framing),
                sourceMemory: capture.memory == .mmap ? nil : capture.memory)
            try connection.start()
            return connection
        } catch {
            throw FrameDumpError(error)
        }
    }

    private enum SegmentOutcome {
        case done
        case interrupted
        case sourceChanged
        case failed(FrameDumpError)
    }

    /// Captures up to `count` frames into `connection` and writes its results to `path`; drains
    /// the device at the end, also when the source changed.
    private func segment(_ connection: MemoryToMemoryConnection, count: Int, path: String?, state: inout SegmentState) -> SegmentOutcome {
        let capture = options.capture
        defer { connection.stop() }
        let output: FrameOutput?
        if let path {
            do throws(FrameDumpError) {
                let capacity = connection.results.framing.items.map(\.bufferSize).reduce(0, +) + 4 + 4 * maximumPlaneCount
                output = try FrameOutput.create(path: path, frameCapacity: capacity, directIO: .off)
            } catch {
                return .failed(error)
            }
        } else {
            output = nil
        }
        let writer = ResultWriter(output: output, withHeaders: connection.results.format.pixelFormat == FourCC("FWHT"))
        var results = 0
        func write(_ result: inout StreamPointer) throws {
            results += 1
            try writer.write(&result)
        }
        var outcome = SegmentOutcome.done
        let timeoutNanoseconds = Int64(capture.frameTimeoutSeconds * 1e9)
        var lastFrame = MonotonicClock.nanoseconds()
        let generation = connection.source.formatGeneration
        do {
            while state.captured < count {
                if stopFlag.isRequested {
                    outcome = .interrupted
                    break
                }
                // Waits of at most a second: a source change the pin has begun to follow shows
                // (the pin cannot restart while the connection holds frames of the old format).
                guard let frame = try connection.source.next(timeout: .seconds(1), keepLeadingEdge: false) else {
                    if stopFlag.isRequested {
                        outcome = .interrupted
                        break
                    }
                    if connection.source.isFollowingSourceChange || connection.source.formatGeneration != generation {
                        outcome = .sourceChanged
                        break
                    }
                    if MonotonicClock.nanoseconds() - lastFrame > timeoutNanoseconds {
                        throw FrameDumpError.runtime("\(capture.devicePath): no frame for \(FrameDumpFormatting.decimal(capture.frameTimeoutSeconds)) s (--timeout)")
                    }
                    try connection.collect(timeout: .zero, deliver: write)
                    continue
                }
                lastFrame = MonotonicClock.nanoseconds()
                let sequence = frame.info.sequence
                if let last = state.lastSequence, sequence &- last > 1 { state.dropped += Int(sequence &- last &- 1) }
                state.lastSequence = sequence
                state.captured += 1
                try connection.send(frame, timeout: .seconds(2), deliver: write)
                try connection.collect(timeout: .zero, deliver: write)
            }
            try connection.finish(timeout: .seconds(10), deliver: write)
        } catch let error as FrameDumpError {
            outcome = .failed(error)
        } catch let error as CaptureError {
            outcome = .failed(FrameDumpError(error))
        } catch {
            outcome = .failed(.runtime("\(error)"))
        }
        state.results = results
        if let output {
            state.bytesWritten = output.committedBytes
            do {
                try output.close()
            } catch {
                if case .done = outcome { outcome = .failed(error) }
            }
        }
        return outcome
    }

    /// The device of `target`: a path as given, or the first encoder (of `role`) whose CAPTURE
    /// side gives the codec.
    static func find(_ target: ConnectionTarget, role: MemoryToMemoryRole, backend: any DeviceBackend) throws(FrameDumpError) -> String {
        guard case .codec(let fourCC) = target else {
            if case .device(let path) = target { return path }
            return ""
        }
        var seen: [String] = []
        for index in 0..<64 {
            let path = "/dev/video\(index)"
            guard access(path, F_OK) == 0, let device = try? VideoDevice(path: path, backend: backend),
                  let description = try? device.memoryToMemoryDescription() else { continue }
            seen.append("\(path) (\(description.role?.rawValue ?? "?"): \(description.captureFormats.map(\.pixelFormat.description).joined(separator: ", ")))")
            if description.role == role, description.captureFormats.contains(where: { $0.pixelFormat == fourCC }) { return path }
        }
        throw .runtime("--encode \(fourCC.description.lowercased()): no memory-to-memory \(role) gives \(fourCC) (\(seen.isEmpty ? "no memory-to-memory device found" : "found: " + seen.joined(separator: "; "))); name the device with --encode /dev/videoN")
    }

    static func describe(_ device: VideoDevice) throws(CaptureError) -> MemoryToMemoryDescription {
        let description: MemoryToMemoryDescription?
        do { description = try device.memoryToMemoryDescription() } catch { throw CaptureError(error) }
        guard let description else {
            throw CaptureError(.invalidConfiguration, "\(device.path): not a memory-to-memory device (card \"\(device.capabilities.card)\")",
                               reason: .notMemoryToMemoryDevice)
        }
        return description
    }

    /// The camera's current format if `takes` has it, else the first format both sides have.
    static func commonFormat(source: VideoDevice, takes: [FourCC]) throws(CaptureError) -> FourCC {
        do {
            let bufferType = source.capabilities.captureBufferType ?? .videoCapture
            let current = try source.format(bufferType).pixelFormat
            if takes.contains(current) { return current }
            let offered = try source.formats(bufferType).map(\.pixelFormat)
            if let common = offered.first(where: takes.contains) { return common }
            throw CaptureError(.invalidConfiguration,
                               "\(source.path) offers \(offered.map(\.description).joined(separator: ", ")) and the converter takes \(takes.map(\.description).joined(separator: ", ")): none in common",
                               reason: .formatNotSupported)
        } catch let error as CaptureError {
            throw error
        } catch let error as V4L2Error {
            throw CaptureError(error)
        } catch {
            throw CaptureError(.device, "\(source.path): \(error)")
        }
    }
}

/// Writes a device's results whole: FWHT with v4l2-ctl's `--stream-to-hdr` headers (the fourcc
/// 'Vhdr' and each plane's length, big endian, before the plane's bytes), anything else raw.
final class ResultWriter {
    let output: FrameOutput?
    let withHeaders: Bool
    /// The headers of the buffer being written; the frame's segments point into it until the
    /// frame is committed.
    private var header: UnsafeMutableRawBufferPointer

    init(output: FrameOutput?, withHeaders: Bool) {
        self.output = output
        self.withHeaders = withHeaders
        header = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 + 4 * maximumPlaneCount, alignment: 4)
        let id = UInt32(UInt8(ascii: "V")) | UInt32(UInt8(ascii: "h")) << 8 | UInt32(UInt8(ascii: "d")) << 16 | UInt32(UInt8(ascii: "r")) << 24
        header.storeBytes(of: id.bigEndian, toByteOffset: 0, as: UInt32.self)
    }

    deinit { header.deallocate() }

    func write(_ result: inout StreamPointer) throws {
        guard let output else { return }
        let header = self.header, withHeaders = self.withHeaders
        try result.withLockedPayload { (payload: borrowing FramePayload) throws(FrameDumpError) in
            output.beginFrame()
            if withHeaders { output.append(UnsafeRawBufferPointer(rebasing: header[0..<4])) }
            for plane in 0..<payload.planeCount {
                let data = payload.unsafePlaneBytes(plane)
                if withHeaders {
                    header.storeBytes(of: UInt32(data.count).bigEndian, toByteOffset: 4 + 4 * plane, as: UInt32.self)
                    output.append(UnsafeRawBufferPointer(rebasing: header[(4 + 4 * plane)..<(8 + 4 * plane)]))
                }
                output.append(data)
            }
            try output.commitFrame()
        }
    }
}

/// What `capture --encode` / `--convert` did.
public struct ConnectionSummary: Hashable, Sendable, Codable {
    /// One format of the source: its file and counts (a source change starts another).
    public struct Segment: Hashable, Sendable, Codable {
        public var output: String?
        public var pixelFormat: String
        public var width: UInt32
        public var height: UInt32
        public var framesCaptured: Int
        public var resultFrames: Int
        public var resultBytes: Int
        public var resultPixelFormat: String
        public var resultWidth: UInt32
        public var resultHeight: UInt32
        public var connection: String
        /// The capture side's allocator (kernel-pool for the capture-dmabuf kind, the device's
        /// exported buffers for device-dmabuf, --memory's for the copy).
        public var allocator: String
    }

    public struct Rejection: Hashable, Sendable, Codable {
        public var kind: String
        public var reason: String
    }

    /// The connection: the device, the kind chosen and why, the kinds rejected and why, and its counts.
    public struct Connection: Hashable, Sendable, Codable {
        public var device: String
        /// encoder, decoder or converter.
        public var role: String
        /// capture-dmabuf, device-dmabuf or copy.
        public var chosen: String
        public var zeroCopy: Bool
        public var why: String
        public var rejections: [Rejection]
        public var framesSent: Int
        public var framesReturned: Int
        /// The most captured frames the device held at once.
        public var framesInFlightMaximum: Int
        public var framesCopied: Int
        public var bytesCopied: Int
        /// Frames the copy could not send (every OUTPUT buffer busy).
        public var framesRefused: Int
    }

    /// What the device produced.
    public struct Result: Hashable, Sendable, Codable {
        public var pixelFormat: String
        public var width: UInt32
        public var height: UInt32
        public var compressed: Bool
        /// `v4l2-ctl-hdr` (FWHT) or `raw`.
        public var container: String
        public var frames: Int
        public var bytes: Int
        /// Results whose timestamp is a captured frame's, and those that match none.
        public var timestampsMatched: Int
        public var timestampsUnmatched: Int
    }

    public var device: String
    public var pixelFormat: String
    public var width: UInt32
    public var height: UInt32
    public var bytesPerLine: Int
    public var framesRequested: Int
    public var framesCaptured: Int
    public var framesDropped: Int
    public var output: String?
    public var bytesWritten: Int
    public var connection: Connection
    public var result: Result
    /// One per format of the source, in order.
    public var segments: [Segment]
    public var sourceChangesFollowed: Int
    public var cpuMicrosecondsPerFrame: Double
    public var durationSeconds: Double
    public var interrupted: Bool
    public var error: String?

    public func json() -> String { FrameDumpJSON.encode(self) }

    public func render() -> String {
        var lines = [
            "\(device): \(framesCaptured) of \(framesRequested) frames captured, \(pixelFormat) \(width)x\(height) (bytesperline \(bytesPerLine)), \(framesDropped) dropped",
            "connection to \(connection.device) (\(connection.role)): \(connection.chosen)\(connection.zeroCopy ? " (zero-copy)" : "") — \(connection.why)",
        ]
        for rejection in connection.rejections { lines.append("  rejected \(rejection.kind): \(rejection.reason)") }
        lines.append("  \(connection.framesSent) frames sent, at most \(connection.framesInFlightMaximum) in flight\(connection.framesCopied > 0 ? ", \(connection.framesCopied) copied" : "")\(connection.framesRefused > 0 ? ", \(connection.framesRefused) refused" : "")")
        lines.append("\(connection.device) gave \(result.frames) \(result.pixelFormat) \(result.width)x\(result.height) buffers, \(result.bytes) bytes; \(result.timestampsMatched) matched to their captured frame by timestamp")
        if let output { lines.append("wrote \(bytesWritten) bytes to \(output) (\(result.container))") }
        if segments.count > 1 {
            for (k, segment) in segments.enumerated() {
                lines.append("  segment \(k): \(segment.pixelFormat) \(segment.width)x\(segment.height), \(segment.framesCaptured) frames -> \(segment.resultFrames) \(segment.resultPixelFormat) \(segment.resultWidth)x\(segment.resultHeight) (\(segment.connection))\(segment.output.map { " in " + $0 } ?? "")")
            }
        }
        lines.append("CPU \(FrameDumpFormatting.decimal(cpuMicrosecondsPerFrame)) µs per frame, \(FrameDumpFormatting.decimal(durationSeconds)) s\(interrupted ? ", interrupted" : "")")
        return lines.joined(separator: "\n") + "\n"
    }
}

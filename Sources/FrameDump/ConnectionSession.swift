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
        var sourceConfiguration = capture.format.pinConfiguration(errorFramePolicy: capture.errorFramePolicy,
                                                                  corruptFramePolicy: capture.corruptFramePolicy)
        sourceConfiguration.sourceChanges = .ignore
        var resultConfiguration = PinConfiguration(sourceChanges: .ignore)
        let connection: MemoryToMemoryConnection
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
            connection = try MemoryToMemoryConnection(
                source: pin, device: target, results: resultConfiguration, preference: options.preference,
                sourceSelection: AllocatorSelection(frameCount: capture.buffers),
                sourceMemory: capture.memory == .mmap ? nil : capture.memory)
        } catch {
            throw FrameDumpError(error)
        }
        var header = [UInt8](repeating: 0, count: 4 + 4 * maximumPlaneCount)
        let resultFormat = connection.results.format
        let compressed = connection.results.framing.isCompressed
        let withHeaders = resultFormat.pixelFormat == FourCC("FWHT")
        let output: FrameOutput?
        if let path = capture.outputPath { try FrameOutput.checkWritable(path: path) }
        let startCPU = Clock.cpuMicroseconds()
        let startTime = MonotonicClock.nanoseconds()
        do {
            try connection.start()
        } catch {
            throw FrameDumpError(error)
        }
        defer { connection.stop() }
        if let path = capture.outputPath {
            let capacity = connection.results.framing.items.map(\.bufferSize).reduce(0, +) + header.count
            output = try FrameOutput.create(path: path, frameCapacity: capacity, directIO: .off)
        } else {
            output = nil
        }
        var captured = 0, dropped = 0, bytesWritten = 0, results = 0
        var lastSequence: UInt32?
        var interrupted = false
        let timeout = Duration.milliseconds(Int64(capture.frameTimeoutSeconds * 1000))

        func write(_ result: inout StreamPointer) throws {
            results += 1
            guard let output else { return }
            try result.withLockedPayload { (payload: borrowing FramePayload) throws(FrameDumpError) in
                output.beginFrame()
                header.withUnsafeMutableBytes { bytes in
                    if withHeaders {
                        // v4l2-ctl --stream-to-hdr: the fourcc 'Vhdr' and each plane's length,
                        // as big-endian 32-bit words, before the plane's bytes.
                        let id = UInt32(UInt8(ascii: "V")) | UInt32(UInt8(ascii: "h")) << 8 | UInt32(UInt8(ascii: "d")) << 16 | UInt32(UInt8(ascii: "r")) << 24
                        bytes.storeBytes(of: id.bigEndian, toByteOffset: 0, as: UInt32.self)
                    }
                }
                header.withUnsafeBytes { bytes in
                    if withHeaders { output.append(UnsafeRawBufferPointer(rebasing: bytes[0..<4])) }
                }
                for plane in 0..<payload.planeCount {
                    let data = payload.unsafePlaneBytes(plane)
                    if withHeaders {
                        header.withUnsafeMutableBytes { bytes in
                            bytes.storeBytes(of: UInt32(data.count).bigEndian, toByteOffset: 4 + 4 * plane, as: UInt32.self)
                        }
                        header.withUnsafeBytes { bytes in output.append(UnsafeRawBufferPointer(rebasing: bytes[(4 + 4 * plane)..<(8 + 4 * plane)])) }
                    }
                    output.append(data)
                }
                try output.commitFrame()
            }
        }

        var failure: FrameDumpError?
        do {
            while captured < capture.count {
                if stopFlag.isRequested {
                    interrupted = true
                    break
                }
                guard let frame = try connection.source.next(timeout: timeout, keepLeadingEdge: false) else {
                    if stopFlag.isRequested {
                        interrupted = true
                        break
                    }
                    throw FrameDumpError.runtime("\(capture.devicePath): no frame for \(FrameDumpFormatting.decimal(capture.frameTimeoutSeconds)) s (--timeout)")
                }
                let sequence = frame.info.sequence
                if let last = lastSequence, sequence &- last > 1 { dropped += Int(sequence &- last &- 1) }
                lastSequence = sequence
                captured += 1
                try connection.send(frame, timeout: timeout, deliver: write)
                try connection.collect(timeout: .zero, deliver: write)
            }
            try connection.finish(timeout: .seconds(10), deliver: write)
        } catch let error as FrameDumpError {
            failure = error
        } catch let error as CaptureError {
            failure = FrameDumpError(error)
        } catch {
            failure = .runtime("\(error)")
        }
        if let output {
            bytesWritten = output.committedBytes
            do { try output.close() } catch { failure = failure ?? error }
        }
        let duration = MonotonicClock.nanoseconds() - startTime
        let statistics = connection.statistics
        let summary = ConnectionSummary(
            device: capture.devicePath, pixelFormat: connection.source.format.pixelFormat.description,
            width: connection.source.format.width, height: connection.source.format.height,
            bytesPerLine: Int(connection.source.format.planes.first?.bytesPerLine ?? 0),
            framesRequested: capture.count, framesCaptured: captured, framesDropped: dropped,
            output: capture.outputPath, bytesWritten: bytesWritten,
            connection: ConnectionSummary.Connection(
                device: connection.device.path, role: connection.role?.rawValue ?? "unknown",
                chosen: connection.kind.rawValue, zeroCopy: connection.kind.isZeroCopy, why: connection.selection.why,
                rejections: connection.selection.rejections.map { .init(kind: $0.kind.rawValue, reason: $0.reason) },
                framesSent: statistics.framesSent, framesReturned: statistics.framesReturned,
                framesInFlightMaximum: statistics.inFlightMaximum, framesCopied: statistics.framesCopied,
                bytesCopied: statistics.bytesCopied, framesRefused: statistics.framesRefused),
            result: ConnectionSummary.Result(
                pixelFormat: resultFormat.pixelFormat.description, width: resultFormat.width, height: resultFormat.height,
                compressed: compressed, container: withHeaders ? "v4l2-ctl-hdr" : "raw",
                frames: statistics.results, bytes: statistics.resultBytes,
                timestampsMatched: statistics.resultsMatched, timestampsUnmatched: statistics.resultsUnmatched),
            cpuMicrosecondsPerFrame: captured > 0 ? Double(Clock.cpuMicroseconds() - startCPU) / Double(captured) : 0,
            durationSeconds: Double(duration) / 1e9, interrupted: interrupted, error: failure?.message)
        if var failure {
            failure.connectionSummary = summary
            throw failure
        }
        if results < captured, !interrupted {
            var error = FrameDumpError.runtime("\(connection.device.path): \(results) results for \(captured) frames captured")
            error.connectionSummary = summary
            throw error
        }
        return summary
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

/// What `capture --encode` / `--convert` did.
public struct ConnectionSummary: Hashable, Sendable, Codable {
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
        lines.append("CPU \(FrameDumpFormatting.decimal(cpuMicrosecondsPerFrame)) µs per frame, \(FrameDumpFormatting.decimal(durationSeconds)) s\(interrupted ? ", interrupted" : "")")
        return lines.joined(separator: "\n") + "\n"
    }
}

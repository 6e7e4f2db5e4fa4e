#if canImport(Glibc)
import Glibc
#endif
import FrameBridge
import V4L2

/// A frame interval in a report: seconds per frame and the rate.
public struct IntervalReport: Hashable, Sendable, Codable {
    /// `discrete`, `stepwise` or `continuous`.
    public var kind: String
    /// Seconds per frame (the minimum for a range).
    public var numerator: UInt32
    public var denominator: UInt32
    /// Frames per second (the maximum for a range).
    public var fps: Double
    /// As v4l2-ctl prints it.
    public var text: String

    init(_ interval: FrameInterval) {
        switch interval {
        case .discrete(let value):
            kind = "discrete"
            numerator = value.numerator
            denominator = value.denominator
        case .stepwise(let min, _, _):
            kind = "stepwise"
            numerator = min.numerator
            denominator = min.denominator
        case .continuous(let min, _):
            kind = "continuous"
            numerator = min.numerator
            denominator = min.denominator
        }
        fps = numerator == 0 ? 0 : Double(denominator) / Double(numerator)
        text = interval.description
    }
}

/// A frame size in a report, with the frame intervals offered for it.
public struct SizeReport: Hashable, Sendable, Codable {
    /// `discrete`, `stepwise` or `continuous`.
    public var kind: String
    /// The size (discrete), or the largest size (ranges).
    public var width: UInt32
    public var height: UInt32
    /// The smallest size of a range; equal to width/height for a discrete size.
    public var minWidth: UInt32
    public var minHeight: UInt32
    public var text: String
    public var intervals: [IntervalReport]
}

/// A pixel format in a report.
public struct FormatReport: Hashable, Sendable, Codable {
    public var pixelFormat: FourCC
    public var description: String
    /// V4L2_FMT_FLAG_COMPRESSED, or a known compressed fourcc (MJPG, JPEG, H264, ...).
    public var compressed: Bool = false
    public var sizes: [SizeReport]
}

/// A format in force.
public struct CurrentFormatReport: Hashable, Sendable, Codable {
    public var bufferType: String
    public var pixelFormat: FourCC
    public var width: UInt32
    public var height: UInt32
    public var field: UInt32
    /// Bytes per line and image size of each plane.
    public var planes: [PlaneFormat]
    /// Seconds per frame, when the driver reports it.
    public var frameInterval: Fraction?

    public init(format: ImageFormat, frameInterval: Fraction?) {
        bufferType = format.bufferType.description
        pixelFormat = format.pixelFormat
        width = format.width
        height = format.height
        field = format.field
        planes = format.planes
        self.frameInterval = frameInterval
    }
}

/// A video input in a report.
public struct InputReport: Hashable, Sendable, Codable {
    public var index: UInt32
    public var name: String
    public var type: String
    public var status: UInt32
    /// The status bits by name (`no signal`, ...); empty when the input is fine.
    public var statusFlags: [String] = []
    /// `dv-timings` (HDMI-like), `standards` (analog).
    public var capabilities: [String] = []
}

/// What the current input of a live source (HDMI, analog) is set to and receives.
public struct LiveSourceReport: Hashable, Sendable, Codable {
    /// The DV timings the receiver is set to (G_DV_TIMINGS), as v4l2-ctl names them (`1280x720p60`).
    public var dvTimings: String?
    /// What QUERY_DV_TIMINGS detects now, or why nothing (`no signal`, `no lock`, `out of range`).
    public var detectedDVTimings: String?
    /// The presets (ENUM_DV_TIMINGS), by index.
    public var dvTimingsPresets: [String] = []
    /// The analog standard set (G_STD) and detected (QUERYSTD; `none` with no signal).
    public var standard: String?
    public var detectedStandard: String?
    /// The standards (ENUMSTD).
    public var standards: [String] = []
    /// Whether the device can send source-change events (VIDIOC_SUBSCRIBE_EVENT answered).
    public var sourceChangeEvents: Bool = false
}

/// A control in a report, with its range and current value.
public struct ControlReport: Hashable, Sendable, Codable {
    public var id: UInt32
    public var name: String
    /// The name `--set-ctrl` takes (`osd_text_mode`).
    public var commandLineName: String
    public var type: String
    public var minimum: Int64
    public var maximum: Int64
    public var step: UInt64
    public var defaultValue: Int64
    /// The current value; nil for write-only controls or when it cannot be read.
    public var value: Int64?
    public var flags: [String]
    public var menuItems: [ControlMenuItem]
}

/// A memory-to-memory device in `framedump info`: its role and both queues with their formats.
public struct MemoryToMemoryReport: Hashable, Sendable, Codable {
    /// `encoder`, `decoder` or `converter`; nil when a queue lists no format.
    public var role: MemoryToMemoryRole?
    public var outputBufferType: String
    public var captureBufferType: String
    /// The OUTPUT queue's format in force and the formats it takes (what the application writes).
    public var currentOutputFormat: CurrentFormatReport?
    public var outputFormats: [FormatReport]
    /// The CAPTURE queue's format in force and the formats it gives (what the device produces).
    public var currentCaptureFormat: CurrentFormatReport?
    public var captureFormats: [FormatReport]
    /// The encoder controls FrameBridge knows (bitrate, GOP size, force key frame, FWHT QPs), by C name.
    public var encoderControls: [String] = []
}

/// `framedump info`: capabilities, inputs, formats with sizes and frame intervals, controls.
public struct DeviceReport: Hashable, Sendable, Codable {
    public var path: String
    public var backend: String
    public var driver: String
    public var card: String
    public var busInfo: String
    public var version: String
    public var capabilities: [String]
    public var deviceCapabilities: [String]
    public var canCapture: Bool
    public var captureBufferType: String?
    public var inputs: [InputReport]
    public var currentInput: UInt32?
    /// DV timings or standards of the current input, when it has either.
    public var liveSource: LiveSourceReport?
    public var currentFormat: CurrentFormatReport?
    public var formats: [FormatReport]
    public var controls: [ControlReport]
    /// For a memory-to-memory device (codec, scaler, converter): its role and both queues.
    public var memoryToMemory: MemoryToMemoryReport? = nil

    /// Reads everything from `device`.
    public static func make(device: VideoDevice) throws(FrameDumpError) -> DeviceReport {
        let caps = device.capabilities
        do {
            var report = DeviceReport(path: device.path, backend: device.backend.name, driver: caps.driver, card: caps.card,
                                      busInfo: caps.busInfo, version: caps.version, capabilities: caps.capabilities.names,
                                      deviceCapabilities: caps.deviceCapabilities.names, canCapture: caps.canCapture,
                                      captureBufferType: caps.captureBufferType?.description, inputs: [], currentInput: nil,
                                      currentFormat: nil, formats: [], controls: [])
            if caps.canCapture {
                let inputs = try device.inputs()
                report.inputs = inputs.map { input in
                    var capabilities: [String] = []
                    if input.capabilityFlags.contains(.dvTimings) { capabilities.append("dv-timings") }
                    if input.capabilityFlags.contains(.standards) { capabilities.append("standards") }
                    return InputReport(index: input.index, name: input.name, type: input.typeName, status: input.status,
                                       statusFlags: input.statusFlags.names, capabilities: capabilities)
                }
                if !report.inputs.isEmpty { report.currentInput = try? device.currentInput() }
                if let current = report.currentInput, let input = inputs.first(where: { $0.index == current }) {
                    report.liveSource = liveSourceReport(device: device, input: input)
                }
            }
            if let bufferType = caps.captureBufferType {
                let format = try device.format(bufferType)
                report.currentFormat = CurrentFormatReport(format: format, frameInterval: try device.frameInterval(bufferType))
                for description in try device.formats(bufferType) {
                    var sizes: [SizeReport] = []
                    for size in try device.frameSizes(description.pixelFormat) {
                        sizes.append(try sizeReport(size, pixelFormat: description.pixelFormat, device: device))
                    }
                    report.formats.append(FormatReport(pixelFormat: description.pixelFormat,
                                                       description: description.description,
                                                       compressed: description.isCompressed, sizes: sizes))
                }
            }
            if let description = try device.memoryToMemoryDescription() {
                report.memoryToMemory = memoryToMemoryReport(device: device, description)
            }
            for control in try device.controls() {
                var value: Int64?
                if control.type.isNumeric && !control.isWriteOnly && !control.isDisabled {
                    value = try? device.controlValue(control.id)
                }
                var flags: [String] = []
                if control.isDisabled { flags.append("disabled") }
                if control.isReadOnly { flags.append("read-only") }
                if control.flags & ControlInfo.flagInactive != 0 { flags.append("inactive") }
                if control.isWriteOnly { flags.append("write-only") }
                report.controls.append(ControlReport(id: control.id, name: control.name, commandLineName: control.commandLineName,
                                                     type: control.type.description, minimum: control.minimum,
                                                     maximum: control.maximum, step: control.step,
                                                     defaultValue: control.defaultValue, value: value, flags: flags,
                                                     menuItems: control.menuItems))
            }
            return report
        } catch {
            throw FrameDumpError(error)
        }
    }

    /// Both queues of a memory-to-memory device: formats in force (G_FMT) and offered (ENUM_FMT,
    /// with frame sizes where the driver lists them; a refused query leaves them out).
    static func memoryToMemoryReport(device: VideoDevice, _ description: MemoryToMemoryDescription) -> MemoryToMemoryReport {
        func formatReports(_ formats: [FormatDescription]) -> [FormatReport] {
            formats.map { format in
                let sizes = ((try? device.frameSizes(format.pixelFormat)) ?? []).compactMap {
                    try? sizeReport($0, pixelFormat: format.pixelFormat, device: device)
                }
                return FormatReport(pixelFormat: format.pixelFormat, description: format.description,
                                    compressed: format.isCompressed, sizes: sizes)
            }
        }
        let queues = description.queues
        var report = MemoryToMemoryReport(
            role: description.role, outputBufferType: queues.output.description, captureBufferType: queues.capture.description,
            currentOutputFormat: (try? device.format(queues.output)).map { CurrentFormatReport(format: $0, frameInterval: nil) },
            outputFormats: formatReports(description.outputFormats),
            currentCaptureFormat: (try? device.format(queues.capture)).map { CurrentFormatReport(format: $0, frameInterval: nil) },
            captureFormats: formatReports(description.captureFormats))
        report.encoderControls = ((try? device.encoderControls()) ?? [:]).keys.sorted { $0.id < $1.id }.map(\.description)
        return report
    }

    /// Read-only queries of the current input's timings or standard; a query the driver
    /// refuses leaves its field out rather than failing the report.
    static func liveSourceReport(device: VideoDevice, input: VideoInput) -> LiveSourceReport? {
        let capabilities = input.capabilityFlags
        guard capabilities.contains(.dvTimings) || capabilities.contains(.standards) else { return nil }
        var report = LiveSourceReport()
        if capabilities.contains(.dvTimings) {
            report.dvTimings = (try? device.dvTimings())?.description
            do {
                report.detectedDVTimings = try device.queryDVTimings().description
            } catch {
                switch error.errno?.rawValue {
                case ENOLINK: report.detectedDVTimings = "no signal"
                case ENOLCK: report.detectedDVTimings = "no lock"
                case ERANGE: report.detectedDVTimings = "out of range"
                default: report.detectedDVTimings = nil
                }
            }
            report.dvTimingsPresets = ((try? device.dvTimingsPresets()) ?? []).map(\.description)
        }
        if capabilities.contains(.standards) {
            report.standard = (try? device.standard()).map(StandardID.name)
            report.detectedStandard = (try? device.queryStandard()).map(StandardID.name)
            report.standards = ((try? device.standards()) ?? []).map(\.name)
        }
        if (try? device.subscribe(.sourceChange, id: input.index)) != nil {
            report.sourceChangeEvents = true
            try? device.unsubscribe(.sourceChange, id: input.index)
        }
        return report
    }

    static func sizeReport(_ size: FrameSize, pixelFormat: FourCC, device: VideoDevice) throws(V4L2Error) -> SizeReport {
        switch size {
        case let .discrete(width, height):
            let intervals = try device.frameIntervals(pixelFormat, width: width, height: height).map(IntervalReport.init)
            return SizeReport(kind: "discrete", width: width, height: height, minWidth: width, minHeight: height,
                              text: size.description, intervals: intervals)
        case let .stepwise(minWidth, maxWidth, _, minHeight, maxHeight, _):
            let intervals = try device.frameIntervals(pixelFormat, width: maxWidth, height: maxHeight).map(IntervalReport.init)
            return SizeReport(kind: "stepwise", width: maxWidth, height: maxHeight, minWidth: minWidth, minHeight: minHeight,
                              text: size.description, intervals: intervals)
        case let .continuous(minWidth, maxWidth, minHeight, maxHeight):
            let intervals = try device.frameIntervals(pixelFormat, width: maxWidth, height: maxHeight).map(IntervalReport.init)
            return SizeReport(kind: "continuous", width: maxWidth, height: maxHeight, minWidth: minWidth, minHeight: minHeight,
                              text: size.description, intervals: intervals)
        }
    }

    /// The text `framedump info` prints.
    public func render() -> String {
        var text = """
        Device \(path) (backend \(backend))
          Driver name   : \(driver)
          Card type     : \(card)
          Bus info      : \(busInfo)
          Driver version: \(version)
          Capabilities  : \(capabilities.joined(separator: ", "))
          Device caps   : \(deviceCapabilities.joined(separator: ", "))
          Can capture   : \(canCapture ? "yes (\(captureBufferType ?? "?"))" : memoryToMemory.map { _ in "no (memory-to-memory: both queues below)" } ?? "no")

        """
        if let m2m = memoryToMemory {
            text += "Memory-to-memory: \(m2m.role.map { "\($0)" } ?? "unknown role (a queue lists no format)")\n"
            for (side, bufferType, current, formats) in [
                ("OUTPUT (written by the application)", m2m.outputBufferType, m2m.currentOutputFormat, m2m.outputFormats),
                ("CAPTURE (produced by the device)", m2m.captureBufferType, m2m.currentCaptureFormat, m2m.captureFormats),
            ] {
                text += "  \(side), \(bufferType):\n"
                if let format = current {
                    text += "    Current format: \(format.pixelFormat) \(format.width)x\(format.height)"
                    text += format.planes.enumerated().map { ", plane \($0.offset): bytes per line \($0.element.bytesPerLine), size image \($0.element.sizeImage)" }.joined()
                    text += "\n"
                }
                for format in formats {
                    text += "    '\(format.pixelFormat)' (\(format.description))\(format.compressed ? ", compressed" : "")"
                    text += format.sizes.isEmpty ? "\n" : ": " + format.sizes.map(\.text).joined(separator: ", ") + "\n"
                }
            }
            if !m2m.encoderControls.isEmpty {
                text += "  Encoder controls: \(m2m.encoderControls.joined(separator: ", "))\n"
            }
        }
        if !inputs.isEmpty {
            text += "Inputs:\n"
            for input in inputs {
                let mark = input.index == currentInput ? " (current)" : ""
                var line = "  \(input.index): \(input.name) [\(input.type)]\(mark)"
                if !input.capabilities.isEmpty { line += ", \(input.capabilities.joined(separator: ", "))" }
                line += ", status: " + (input.statusFlags.isEmpty ? "ok" : input.statusFlags.joined(separator: ", "))
                text += line + "\n"
            }
        }
        if let live = liveSource {
            text += "Live source (current input):\n"
            if let timings = live.dvTimings { text += "  DV timings        : \(timings)\n" }
            if let detected = live.detectedDVTimings { text += "  Detected timings  : \(detected)\n" }
            if !live.dvTimingsPresets.isEmpty {
                text += "  DV timings presets: \(live.dvTimingsPresets.enumerated().map { "\($0.offset): \($0.element)" }.joined(separator: ", "))\n"
            }
            if let standard = live.standard { text += "  Standard          : \(standard)\n" }
            if let detected = live.detectedStandard { text += "  Detected standard : \(detected)\n" }
            if !live.standards.isEmpty { text += "  Standards         : \(live.standards.joined(separator: ", "))\n" }
            text += "  Source-change events: \(live.sourceChangeEvents ? "yes" : "no")\n"
        }
        if let format = currentFormat {
            text += "Current format: \(format.pixelFormat) \(format.width)x\(format.height) (\(format.bufferType), field \(format.field))"
            if let interval = format.frameInterval, interval.numerator != 0 {
                text += ", \(interval) s per frame (\(FrameDumpFormatting.decimal(Double(interval.denominator) / Double(interval.numerator))) fps)"
            }
            text += "\n"
            for (index, plane) in format.planes.enumerated() {
                text += "  plane \(index): bytes per line \(plane.bytesPerLine), size image \(plane.sizeImage)\n"
            }
        }
        if !formats.isEmpty {
            text += "Formats:\n"
            for format in formats {
                text += "  '\(format.pixelFormat)' (\(format.description))\(format.compressed ? ", compressed" : "")\n"
                for size in format.sizes {
                    text += "    Size: \(size.kind) \(size.text)\n"
                    for interval in size.intervals {
                        text += "      Interval: \(interval.kind) \(interval.text)\n"
                    }
                }
            }
        }
        if !controls.isEmpty {
            text += "Controls:\n"
            for control in controls {
                var line = "  \(control.commandLineName) (\(control.type))"
                switch control.type {
                case "button", "ctrl_class": break
                case "str":
                    line += " : min=\(control.minimum) max=\(control.maximum) step=\(control.step)"
                default:
                    line += " : min=\(control.minimum) max=\(control.maximum) step=\(control.step) default=\(control.defaultValue)"
                    if let value = control.value { line += " value=\(value)" }
                }
                if !control.flags.isEmpty { line += " flags=\(control.flags.joined(separator: ","))" }
                text += line + "\n"
                for item in control.menuItems {
                    text += "      \(item.index): \(item.name)\n"
                }
            }
        }
        return text
    }
}

enum FrameDumpFormatting {
    /// A number with at most `digits` decimals, without trailing zeros; a number between -1 and
    /// 1 keeps three significant digits (the notice about `--fps 0.001` names 0.001, not 0, and
    /// 0.125 stays 0.125).
    static func decimal(_ value: Double, digits: Int = 2) -> String {
        guard value.isFinite else { return "0" }
        var digits = digits
        let magnitude = abs(value)
        if magnitude > 0 && magnitude < 1 {
            let leadingZeros = Int((-log10(magnitude)).rounded(.up)) - 1
            digits = max(digits, min(leadingZeros + 3, 15))
        }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let rounded = (value * scale).rounded() / scale
        if rounded == rounded.rounded() && abs(rounded) < 1e15 { return String(Int64(rounded)) }
        var text = String(rounded)
        if let dot = text.firstIndex(of: "."), text.distance(from: dot, to: text.endIndex) > digits + 1 {
            text = String(text[..<text.index(dot, offsetBy: digits + 1)])
        }
        return text
    }
}

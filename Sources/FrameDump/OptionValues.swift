import FrameBridge
import V4L2

/// A control to set before streaming, by the name v4l2-ctl prints (`osd_text_mode`).
public struct ControlSetting: Hashable, Sendable, Codable, CustomStringConvertible {
    public var name: String
    public var value: Int64
    public init(name: String, value: Int64) {
        self.name = name
        self.value = value
    }
    public var description: String { "\(name)=\(value)" }
}

/// Where `--memory dmabuf` gets its dmabufs from.
public enum DMABufSource: Hashable, Sendable, CustomStringConvertible {
    /// Another V4L2 device's MMAP buffers, exported with VIDIOC_EXPBUF.
    case device(String)
    /// DRM dumb buffers from vgem (the first vgem card, or the DRM node given).
    case vgem(String?)

    public var description: String {
        switch self {
        case .device(let path): return path
        case .vgem(let path): return path.map { "vgem \($0)" } ?? "vgem"
        }
    }
}

/// The stream format of `-o`.
public enum OutputContainer: String, Hashable, Sendable, Codable, CaseIterable {
    /// Each frame's payload bytes, plane after plane, as `v4l2-ctl --stream-to` writes them.
    case raw
    /// A YUV4MPEG2 stream, which ffmpeg and mpv read.
    case y4m
}

/// The frame size asked for with `--size WxH`.
public struct RequestedSize: Hashable, Sendable, CustomStringConvertible {
    public var width: UInt32
    public var height: UInt32
    public init(width: UInt32, height: UInt32) {
        self.width = width
        self.height = height
    }
    public var description: String { "\(width)x\(height)" }
}

/// Why the value of an option is refused: what is wrong and an example of a good value.
/// swift-argument-parser puts the option and the value in front of it ("The value '0' is
/// invalid for '-n <N>': ..."), so the message itself does not repeat them.
public struct OptionValueError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The parsers of framedump's option values that swift-argument-parser cannot do alone
/// (its `transform`s), each range checked here and nowhere else. The options whose values
/// are a fixed set (--memory, --container, --direct-io, --error-frames, --corrupt-frames) are
/// `CaseIterable` enums the parser reads itself.
public enum OptionValues {
    /// `-n`: at least 1.
    public static func frameCount(_ text: String) throws(OptionValueError) -> Int {
        guard let count = Int(text), count >= 1 else {
            throw OptionValueError("expected a frame count of at least 1, such as 30")
        }
        return count
    }

    /// The values `--buffers` takes, as its help shows them.
    public static let bufferRange = AllocatorPlan.bufferRange

    /// `--buffers`: within ``bufferRange``.
    public static func bufferCount(_ text: String) throws(OptionValueError) -> Int {
        guard let count = Int(text), bufferRange.contains(count) else {
            throw OptionValueError("expected a buffer count in \(bufferRange.lowerBound)...\(bufferRange.upperBound), such as 4")
        }
        return count
    }

    /// `--bytesperline`: 1...1,048,576 bytes.
    public static func bytesPerLine(_ text: String) throws(OptionValueError) -> UInt32 {
        guard let value = UInt32(text), (1...1_048_576).contains(value) else {
            throw OptionValueError("expected bytes per line in 1...1048576, such as 1536")
        }
        return value
    }

    /// `--every`: at least 1.
    public static func every(_ text: String) throws(OptionValueError) -> Int {
        guard let every = Int(text), every >= 1 else {
            throw OptionValueError("expected a whole number of at least 1, such as 10 (a file of every 10th frame)")
        }
        return every
    }

    /// The longest duration `--timeout`, `--wait-for-signal` and `--reconnect-timeout` take:
    /// 365 days (a deadline in nanoseconds holds about 292 years; 1e10 s would not fit).
    public static let secondsMaximum = 31_536_000.0

    /// `--timeout`, `--wait-for-signal`, `--reconnect-timeout`: a positive number of seconds up
    /// to ``secondsMaximum``.
    public static func seconds(_ text: String) throws(OptionValueError) -> Double {
        guard let seconds = Double(text), seconds.isFinite, seconds > 0, seconds <= secondsMaximum else {
            throw OptionValueError("expected a positive number of seconds up to \(Int(secondsMaximum)) (365 days), such as 5 or 0.5")
        }
        return seconds
    }

    /// `--input N`: an input number as VIDIOC_S_INPUT takes it (0...Int32.max).
    public static func input(_ text: String) throws(OptionValueError) -> UInt32 {
        guard let index = Int(text), index >= 0, index <= Int(Int32.max) else {
            throw OptionValueError("expected an input number such as 0 (`framedump info` lists the inputs)")
        }
        return UInt32(index)
    }

    /// The width and height `--size` takes.
    public static let sizeRange: ClosedRange<UInt32> = 1...16384

    /// `--size WxH`, e.g. `640x480`.
    public static func size(_ text: String) throws(OptionValueError) -> RequestedSize {
        let parts = text.lowercased().split(separator: "x", omittingEmptySubsequences: false)
        guard parts.count == 2, let width = UInt32(parts[0]), let height = UInt32(parts[1]),
              !parts[0].hasPrefix("+"), !parts[1].hasPrefix("+") else {
            throw OptionValueError("malformed size; expected WIDTHxHEIGHT such as 640x480")
        }
        guard sizeRange.contains(width), sizeRange.contains(height) else {
            throw OptionValueError("out of range; width and height must be \(sizeRange.lowerBound)...\(sizeRange.upperBound), such as 640x480")
        }
        return RequestedSize(width: width, height: height)
    }

    /// `--pixel-format FOURCC`, e.g. `YUYV` (one to four printable ASCII characters).
    public static func fourCC(_ text: String) throws(OptionValueError) -> FourCC {
        guard !text.isEmpty, !text.hasPrefix(" "), let code = FourCC(text) else {
            throw OptionValueError("bad FOURCC; expected up to four characters such as YUYV or NV12, a big-endian variant as `framedump info` prints it (\"Y16 -BE\"), or a hex code (0x56595559)")
        }
        return code
    }

    /// The frame rates `--fps` takes: from V4L2's slowest (one frame in 1000 s) to 10000.
    public static let framesPerSecondMaximum = 10000.0
    public static let framesPerSecondMinimum = Fraction.framesPerSecondRange.lowerBound

    /// `--fps F`: a positive number (`30`, `29.97`) or a fraction (`30000/1001`).
    public static func framesPerSecond(_ text: String) throws(OptionValueError) -> Double {
        let value: Double?
        if let slash = text.firstIndex(of: "/") {
            let numerator = Double(text[..<slash])
            let denominator = Double(text[text.index(after: slash)...])
            if let numerator, let denominator, denominator != 0 { value = numerator / denominator } else { value = nil }
        } else {
            value = Double(text)
        }
        guard let value, value.isFinite, value >= framesPerSecondMinimum, value <= framesPerSecondMaximum else {
            throw OptionValueError("expected a frame rate from \(framesPerSecondMinimum) to \(Int(framesPerSecondMaximum)) frames per second, such as 30, 29.97 or 30000/1001")
        }
        return value
    }

    /// One value of `--set-ctrl`: `NAME=VALUE`, or several comma-separated (`a=1,b=2`), as v4l2-ctl takes them.
    public static func controls(_ value: String) throws(OptionValueError) -> [ControlSetting] {
        var result: [ControlSetting] = []
        for item in value.split(separator: ",", omittingEmptySubsequences: false) {
            let text = item.trimmingSpaces
            guard let equals = text.firstIndex(of: "=") else {
                throw OptionValueError("malformed \"\(text)\"; expected NAME=VALUE such as osd_text_mode=2")
            }
            let name = String(text[..<equals]).trimmingSpaces
            let valueText = String(text[text.index(after: equals)...]).trimmingSpaces
            guard !name.isEmpty, !ControlInfo.commandLineName(for: name).isEmpty else {
                throw OptionValueError("malformed \"\(text)\": the control name is missing; expected NAME=VALUE such as osd_text_mode=2")
            }
            guard let number = integer(valueText) else {
                throw OptionValueError("malformed \"\(text)\": \"\(valueText)\" is not an integer; expected NAME=VALUE such as osd_text_mode=2 (framedump sets integer, boolean, menu, bitmask and button controls)")
            }
            result.append(ControlSetting(name: name, value: number))
        }
        return result
    }

    /// A decimal, `0x` hexadecimal or negative integer.
    static func integer(_ text: String) -> Int64? {
        var body = Substring(text)
        var negative = false
        if body.hasPrefix("-") {
            negative = true
            body = body.dropFirst()
        } else if body.hasPrefix("+") {
            body = body.dropFirst()
        }
        guard !body.isEmpty, !body.hasPrefix("-"), !body.hasPrefix("+") else { return nil }
        let magnitude: Int64?
        if body.lowercased().hasPrefix("0x") {
            magnitude = Int64(body.dropFirst(2), radix: 16)
        } else {
            magnitude = Int64(body, radix: 10)
        }
        guard let magnitude else { return nil }
        return negative ? -magnitude : magnitude
    }

    /// `--dmabuf-from DEV|vgem` (also `vgem:/dev/dri/cardN`).
    public static func dmabufSource(_ text: String) throws(OptionValueError) -> DMABufSource {
        if text.lowercased() == "vgem" { return .vgem(nil) }
        if text.lowercased().hasPrefix("vgem:") {
            let path = String(text.dropFirst(5))
            guard !path.isEmpty else { throw OptionValueError("names no DRM node; expected vgem or vgem:/dev/dri/cardN") }
            return .vgem(path)
        }
        guard !text.isEmpty else {
            throw OptionValueError("empty; expected a V4L2 device such as /dev/video1, or vgem")
        }
        if text.hasPrefix("/dev/dri/") { return .vgem(text) }
        return .device(text)
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        var text = Substring(self)
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return String(text)
    }
}

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

/// Parsers for the values of framedump's options. Each error names the option and shows
/// an example of a good value.
public enum ArgumentParsing {
    /// `--size WxH`, e.g. `640x480`.
    public static func size(_ text: String) throws(FrameDumpError) -> (width: UInt32, height: UInt32) {
        let parts = text.lowercased().split(separator: "x", omittingEmptySubsequences: false)
        guard parts.count == 2, let width = UInt32(parts[0]), let height = UInt32(parts[1]),
              !parts[0].hasPrefix("+"), !parts[1].hasPrefix("+") else {
            throw .usage("--size: malformed size \"\(text)\"; expected WIDTHxHEIGHT such as 640x480")
        }
        guard width > 0, height > 0, width <= 16384, height <= 16384 else {
            throw .usage("--size: \(text) is out of range; width and height must be 1...16384")
        }
        return (width, height)
    }

    /// `--pixel-format FOURCC`, e.g. `YUYV` (one to four printable ASCII characters).
    public static func fourCC(_ text: String) throws(FrameDumpError) -> FourCC {
        guard !text.isEmpty, !text.hasPrefix(" "), let code = FourCC(text) else {
            throw .usage("--pixel-format: bad FOURCC \"\(text)\"; expected up to four characters such as YUYV or NV12, a big-endian variant as `framedump info` prints it (\"Y16 -BE\"), or a hex code (0x56595559)")
        }
        return code
    }

    /// `--fps F`: a positive number (`30`, `29.97`) or a fraction (`30000/1001`).
    public static func framesPerSecond(_ text: String) throws(FrameDumpError) -> Double {
        let value: Double?
        if let slash = text.firstIndex(of: "/") {
            let numerator = Double(text[..<slash])
            let denominator = Double(text[text.index(after: slash)...])
            if let numerator, let denominator, denominator != 0 { value = numerator / denominator } else { value = nil }
        } else {
            value = Double(text)
        }
        guard let value, value.isFinite, value > 0, value <= 10000 else {
            throw .usage("--fps: bad frame rate \"\(text)\"; expected a positive number such as 30, 29.97 or 30000/1001")
        }
        return value
    }

    /// The values of `--set-ctrl`, each `NAME=VALUE` or several comma-separated (`a=1,b=2`), as v4l2-ctl takes them.
    public static func controls(_ values: [String]) throws(FrameDumpError) -> [ControlSetting] {
        var result: [ControlSetting] = []
        for value in values {
            for item in value.split(separator: ",", omittingEmptySubsequences: false) {
                let text = item.trimmingSpaces
                guard let equals = text.firstIndex(of: "=") else {
                    throw .usage("--set-ctrl: malformed \"\(text)\"; expected NAME=VALUE such as osd_text_mode=2")
                }
                let name = String(text[..<equals]).trimmingSpaces
                let valueText = String(text[text.index(after: equals)...]).trimmingSpaces
                guard !name.isEmpty, !ControlInfo.commandLineName(for: name).isEmpty else {
                    throw .usage("--set-ctrl: malformed \"\(text)\": the control name is missing; expected NAME=VALUE such as osd_text_mode=2")
                }
                guard let number = integer(valueText) else {
                    throw .usage("--set-ctrl: malformed \"\(text)\": \"\(valueText)\" is not an integer; expected NAME=VALUE such as osd_text_mode=2 (framedump sets integer, boolean, menu, bitmask and button controls)")
                }
                result.append(ControlSetting(name: name, value: number))
            }
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

    /// `--memory mmap|userptr|dmabuf`.
    public static func memoryKind(_ text: String) throws(FrameDumpError) -> MemoryKind {
        guard let kind = MemoryKind(name: text) else {
            throw .usage("--memory: unknown memory kind \"\(text)\"; expected mmap, userptr or dmabuf")
        }
        return kind
    }

    /// `--dmabuf-from DEV|vgem` (also `vgem:/dev/dri/cardN`).
    public static func dmabufSource(_ text: String) throws(FrameDumpError) -> DMABufSource {
        if text.lowercased() == "vgem" { return .vgem(nil) }
        if text.lowercased().hasPrefix("vgem:") {
            let path = String(text.dropFirst(5))
            guard !path.isEmpty else { throw .usage("--dmabuf-from: \"\(text)\" names no DRM node; expected vgem or vgem:/dev/dri/cardN") }
            return .vgem(path)
        }
        guard !text.isEmpty else {
            throw .usage("--dmabuf-from: empty; expected a V4L2 device such as /dev/video1, or vgem")
        }
        if text.hasPrefix("/dev/dri/") { return .vgem(text) }
        return .device(text)
    }

    /// `--container raw|y4m`.
    public static func container(_ text: String) throws(FrameDumpError) -> OutputContainer {
        guard let container = OutputContainer(rawValue: text.lowercased()) else {
            throw .usage("--container: unknown container \"\(text)\"; expected raw or y4m")
        }
        return container
    }

    /// `--direct-io auto|on|off`.
    public static func directIOMode(_ text: String) throws(FrameDumpError) -> DirectIOMode {
        guard let mode = DirectIOMode(rawValue: text.lowercased()) else {
            throw .usage("--direct-io: unknown mode \"\(text)\"; expected auto, on or off")
        }
        return mode
    }

    /// `--error-frames deliver|skip`.
    public static func errorFramePolicy(_ text: String) throws(FrameDumpError) -> ErrorFramePolicy {
        guard let policy = ErrorFramePolicy(rawValue: text.lowercased()) else {
            throw .usage("--error-frames: unknown policy \"\(text)\"; expected deliver or skip")
        }
        return policy
    }

    /// `--corrupt-frames deliver|skip`.
    public static func corruptFramePolicy(_ text: String) throws(FrameDumpError) -> CorruptFramePolicy {
        guard let policy = CorruptFramePolicy(rawValue: text.lowercased()) else {
            throw .usage("--corrupt-frames: unknown policy \"\(text)\"; expected deliver or skip")
        }
        return policy
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

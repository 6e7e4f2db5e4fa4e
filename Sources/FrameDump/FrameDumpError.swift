import FrameBridge
import V4L2

/// An error of a framedump command: a one-line message that names the device, option or
/// ioctl involved, and whether it is a usage error (exit code 2) or a runtime one (exit code 1).
public struct FrameDumpError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Codable {
        /// The command line is wrong: a malformed or out-of-range option, or a value the device does not offer.
        case usage
        /// Something failed while running: a device call, an allocator, a write.
        case runtime
    }

    public var kind: Kind
    /// One line, without the `framedump: ` prefix.
    public var message: String
    /// What had been captured when a capture failed part-way, if anything had.
    public var summary: CaptureSummary?
    /// With several devices: what each had captured when the capture failed.
    public var devicesSummary: MultiCaptureSummary?
    /// `capture --encode` / `--convert`: what had been captured and produced when it failed.
    public var connectionSummary: ConnectionSummary?

    public init(_ kind: Kind, _ message: String, summary: CaptureSummary? = nil) {
        self.kind = kind
        self.message = FrameDumpError.oneLine(message)
        self.summary = summary
    }

    public static func usage(_ message: String) -> FrameDumpError { FrameDumpError(.usage, message) }
    public static func runtime(_ message: String) -> FrameDumpError { FrameDumpError(.runtime, message) }

    /// A device-layer error: its description already names the device, the ioctl and the errno;
    /// framedump adds which of its commands shows what the device offers.
    public init(_ error: V4L2Error) {
        self.init(.runtime, FrameDumpError.withHint(error.description, FrameDumpError.hint(for: error)))
    }

    /// A capture error. A configuration the device cannot do (format, size, control) is a
    /// usage error; everything else is a runtime one.
    public init(_ error: CaptureError) {
        self.init(error.kind == .invalidConfiguration ? .usage : .runtime,
                  FrameDumpError.withHint(error.description, FrameDumpError.hint(for: error)))
    }

    /// framedump's hint for a device-layer error: the libraries say what is wrong in V4L2's
    /// terms, the CLI says which command (or option) helps.
    static func hint(for error: V4L2Error) -> String? {
        guard let errno = error.errno else { return nil }
        switch (error.operation, errno) {
        case ("open", .noSuchFileOrDirectory):
            return "`framedump list` shows the video devices"
        case ("VIDIOC_QUERYCAP", .inappropriateIOCTLForDevice), ("VIDIOC_QUERYCAP", .invalidArgument):
            return "pick a /dev/video* node (`framedump list`)"
        case ("VIDIOC_S_FMT", .invalidArgument), ("VIDIOC_TRY_FMT", .invalidArgument):
            return "`framedump info -d \(error.device)` lists the formats and sizes"
        case ("VIDIOC_S_INPUT", .invalidArgument):
            return "`framedump info -d \(error.device)` lists the inputs"
        case ("VIDIOC_REQBUFS", .invalidArgument):
            return "`framedump framing -d \(error.device)` lists the memory kinds"
        default:
            return nil
        }
    }

    /// framedump's hint for a capture error, by its reason (or its underlying device error).
    static func hint(for error: CaptureError) -> String? {
        switch error.reason {
        case .notCaptureDevice: return "pick a capture node with `framedump list`"
        case .sizeNotSupported: return "`framedump info` lists the sizes"
        case .noSuchControl: return "`framedump info` lists the controls"
        case .exporterUnavailable: return "or name a DRM node with --dmabuf-from vgem:/dev/dri/cardN"
        case .notMemoryToMemoryDevice: return "`framedump list` names the encoders and converters"
        case .formatNotSupported: return "`framedump info -d DEVICE` lists the formats on each side"
        case .noConnection: return "--connection auto falls back to a copy"
        case nil: return error.underlying.flatMap { hint(for: $0) }
        }
    }

    static func withHint(_ message: String, _ hint: String?) -> String {
        guard let hint else { return message }
        return "\(message); \(hint)"
    }

    /// 2 for usage errors, 1 for runtime errors.
    public var exitCode: Int32 { kind == .usage ? 2 : 1 }

    public var description: String { message }

    static func oneLine(_ text: String) -> String {
        var result = String.UnicodeScalarView()
        var lastWasSpace = false
        for scalar in text.unicodeScalars {
            if scalar == "\n" || scalar == "\r" || scalar == "\t" {
                if !lastWasSpace && !result.isEmpty { result.append(" ") }
                lastWasSpace = true
            } else {
                result.append(scalar)
                lastWasSpace = scalar == " "
            }
        }
        var line = String(result)
        while line.hasSuffix(" ") { line.removeLast() }
        return line
    }

    /// Wraps any error thrown by the lower layers.
    static func wrap(_ error: any Error) -> FrameDumpError {
        switch error {
        case let error as FrameDumpError: return error
        case let error as CaptureError: return FrameDumpError(error)
        case let error as V4L2Error: return FrameDumpError(error)
        default: return .runtime("\(error)")
        }
    }
}

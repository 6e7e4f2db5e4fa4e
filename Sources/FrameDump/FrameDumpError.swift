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

    public init(_ kind: Kind, _ message: String, summary: CaptureSummary? = nil) {
        self.kind = kind
        self.message = FrameDumpError.oneLine(message)
        self.summary = summary
    }

    public static func usage(_ message: String) -> FrameDumpError { FrameDumpError(.usage, message) }
    public static func runtime(_ message: String) -> FrameDumpError { FrameDumpError(.runtime, message) }

    /// A device-layer error: its description already names the device, the ioctl and the errno.
    public init(_ error: V4L2Error) {
        self.init(.runtime, error.description)
    }

    /// A capture error. A configuration the device cannot do (format, size, control) is a
    /// usage error; everything else is a runtime one.
    public init(_ error: CaptureError) {
        self.init(error.kind == .invalidConfiguration ? .usage : .runtime, error.description)
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

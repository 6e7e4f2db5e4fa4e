import SystemPackage
/// A failed call on a V4L2 device, naming the device, the call (usually a `VIDIOC_*`
/// ioctl), the errno and, where one is known, what the user can do about it.
public struct V4L2Error: Error, Sendable, Hashable, CustomStringConvertible {
    /// The device path, for example `/dev/video0`.
    public var device: String
    /// The call that failed: `open`, `mmap`, `poll` or an ioctl name such as `VIDIOC_S_FMT`.
    public var operation: String
    /// The errno the call returned; nil for a failure FrameBridge detected itself.
    public var errno: Errno?
    /// What went wrong in words, when the errno alone does not say it.
    public var detail: String?
    /// What to do about it.
    public var hint: String?

    public init(device: String, operation: String, errno: Errno?, detail: String? = nil, hint: String? = nil) {
        self.device = device
        self.operation = operation
        self.errno = errno
        self.detail = detail
        self.hint = hint ?? errno.flatMap { V4L2Error.defaultHint(operation: operation, errno: $0) }
    }

    public var description: String {
        var text = "\(device): \(operation) failed"
        if let errno { text += ": \(errno)" }
        if let detail { text += ": \(detail)" }
        if let hint { text += "; \(hint)" }
        return text
    }

    static func defaultHint(operation: String, errno: Errno) -> String? {
        switch (operation, errno) {
        case ("open", .noSuchFileOrDirectory):
            return "no such device node"
        case ("open", .permissionDenied), ("open", .notPermitted):
            return "no permission to open it; run as root or join the video group"
        case ("open", .resourceBusy):
            return "the device is in use by another process"
        case ("VIDIOC_QUERYCAP", .inappropriateIOCTLForDevice), ("VIDIOC_QUERYCAP", .invalidArgument):
            return "this is not a V4L2 device"
        case (_, .resourceBusy):
            return "the device is in use (another process is streaming from it, or buffers are still allocated); stop the other user and retry"
        case (_, .noSuchDevice):
            return "the device was disconnected"
        case ("VIDIOC_S_FMT", .invalidArgument), ("VIDIOC_TRY_FMT", .invalidArgument):
            return "the driver refused this format (VIDIOC_ENUM_FMT and VIDIOC_ENUM_FRAMESIZES list what it offers)"
        case ("VIDIOC_DQBUF", .brokenPipe):
            return "the buffer flagged LAST was dequeued before (the end of a drain or of a stream): nothing more comes until ENC/DEC_CMD_START or a restart of the CAPTURE queue"
        case (_, .inappropriateIOCTLForDevice):
            return "the driver does not support this ioctl"
        default:
            return nil
        }
    }
}

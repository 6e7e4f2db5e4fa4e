import V4L2

/// An error of the capture pipeline: what went wrong, the device, and the ioctl or
/// allocator involved.
public struct CaptureError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, Codable {
        /// A device call failed (the underlying `V4L2Error` names it).
        case device
        /// Streaming stopped after a fatal driver error (EIO from DQBUF or POLLERR).
        case fatalStreamingError
        /// The device went away (ENODEV).
        case disconnected
        /// The driver ended the stream (EPIPE from DQBUF after its last buffer): no frame will come.
        case endOfStream
        /// The frame was cancelled (STREAMOFF, a fatal error or a disconnect) before it was locked.
        case frameCancelled
        /// An allocator could not provide what it was asked for.
        case allocator
        /// The request does not fit the pin's state (e.g. start while streaming).
        case invalidState
        /// A configuration value is wrong (format, size, count).
        case invalidConfiguration
        /// The driver handed back something impossible (index out of range, bytesused > length).
        case driverViolation
    }

    /// What a caller may want to tell its user more about (an application adds its own
    /// hints, such as which of its commands lists the sizes); nil when the kind says enough.
    public enum Reason: String, Sendable, Codable {
        /// The device has no video capture queue.
        case notCaptureDevice
        /// The driver gave another frame size than the one asked for.
        case sizeNotSupported
        /// The device has no control of the name asked for.
        case noSuchControl
        /// The dmabuf exporter (a DRM node) could not be opened.
        case exporterUnavailable
        /// The device named for a connection is not a memory-to-memory device.
        case notMemoryToMemoryDevice
        /// The device does not take the pixel format asked for (a connection's OUTPUT queue).
        case formatNotSupported
        /// No connection kind fits both ends (``ConnectionSelectionResult/rejections`` says why).
        case noConnection
    }

    public var kind: Kind
    public var message: String
    public var underlying: V4L2Error?
    public var reason: Reason?

    public init(_ kind: Kind, _ message: String, underlying: V4L2Error? = nil, reason: Reason? = nil) {
        self.kind = kind
        self.message = message
        self.underlying = underlying
        self.reason = reason
    }

    public init(_ error: V4L2Error) {
        kind = error.errno == .noSuchDevice ? .disconnected : .device
        message = error.description
        underlying = error
    }

    public var description: String { message }
}

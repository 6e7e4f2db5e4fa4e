/// What the emulated camera offers and how it misbehaves.
public struct CameraConfiguration: Sendable {
    public enum Format: String, Sendable, CaseIterable {
        case yuyv, mjpeg
    }

    public struct FrameSize: Sendable, Hashable, CustomStringConvertible {
        public var width: Int
        public var height: Int
        public init(width: Int, height: Int) { self.width = width; self.height = height }
        public var description: String { "\(width)x\(height)" }
    }

    /// Formats in descriptor order: the first is format index 1.
    public var formats: [Format] = [.yuyv, .mjpeg]
    /// Frame sizes, offered by every format, the first is the default.
    public var sizes: [FrameSize] = [FrameSize(width: 640, height: 360), FrameSize(width: 320, height: 180)]
    /// The default frame rate; every size also offers half of it.
    public var framesPerSecond: Int = 30
    /// Close the connection (pull the cable) after this many frames have been sent in all.
    public var unplugAfterFrames: Int? = nil
    /// Every Nth MJPEG frame (N, 2N, ...) is cut short: no EOI marker.
    public var corruptEvery: Int? = nil
    /// Every Nth frame carries the payload header's ERR bit.
    public var errorEvery: Int? = nil
    /// The string descriptors: uvcvideo shows the product as the card name.
    public var manufacturer = "FrameBridge"
    public var product = "FrameBridge UVC Camera"
    public var serial = "FB-UVC-0"

    public init() {}

    /// Frame intervals offered for each size, in 100 ns units, the default first.
    public var frameIntervals: [UInt32] {
        let fps = max(1, framesPerSecond)
        let first = UInt32(10_000_000 / fps)
        let half = UInt32(10_000_000 / max(1, fps / 2))
        return half == first ? [first] : [first, half]
    }

    /// The largest frame, in bytes, of `format` at `size` (uvcvideo's sizeimage).
    public func maxFrameSize(_ format: Format, _ size: FrameSize) -> Int {
        // YUYV is exact; a JPEG of the pattern is far below 2 bytes per pixel.
        size.width * size.height * 2
    }
}

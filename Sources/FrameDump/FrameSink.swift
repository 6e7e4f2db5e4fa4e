import FrameBridge
import V4L2

/// Where captured frames go. A sink is called with each frame while the frame is locked.
public protocol FrameSink: AnyObject {
    /// Writes frame number `index` (0 for the first frame of the capture).
    func write(_ payload: borrowing FramePayload, index: Int) throws(FrameDumpError)
    /// Called once after the last frame.
    func finish() throws(FrameDumpError)
}

/// Writes each frame's payload bytes, plane after plane (for each plane, `bytesused - data_offset`
/// bytes from `data_offset`), exactly what `v4l2-ctl --stream-to` writes. One writev per frame.
public final class RawSink: FrameSink {
    public let output: FrameOutput

    public init(output: FrameOutput) {
        self.output = output
    }

    public func write(_ payload: borrowing FramePayload, index: Int) throws(FrameDumpError) {
        output.beginFrame()
        for plane in 0..<payload.planeCount {
            output.append(payload.unsafePlaneBytes(plane))
        }
        try output.commitFrame()
    }

    public func finish() throws(FrameDumpError) {}
}

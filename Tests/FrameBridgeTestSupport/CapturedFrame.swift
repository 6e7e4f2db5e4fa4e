// The library makes a CapturedFrame only in `pin.frames()`; tests that take frames with
// `next` and hand them to other threads or tasks wrap them here (internal init, hence @testable).
@testable import FrameBridge

extension CapturedFrame {
    /// A frame that holds `pointer`: it can cross into another task or thread, be read there
    /// under its lock and released from any thread.
    public static func holding(_ pointer: consuming StreamPointer) -> CapturedFrame {
        CapturedFrame(pointer)
    }
}

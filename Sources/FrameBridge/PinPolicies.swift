import V4L2

/// What the pin does when the consumer holds every buffer, so the driver has none to fill.
public enum StarvationPolicy: String, Sendable, Codable, CaseIterable {
    /// Wait for the consumer to release a frame (``CapturePin/advance(timeout:)``
    /// returns false when its timeout passes); each wait is counted.
    case block
    /// Cancel the oldest held frame that is not locked and give it back to the driver; counted.
    case cancelOldestUnlocked = "cancel-oldest"
}

/// What the pin does with a frame the driver flagged with V4L2_BUF_FLAG_ERROR.
public enum ErrorFramePolicy: String, Sendable, Codable, CaseIterable {
    /// Deliver it (``FrameInfo/hasError`` is true); counted.
    case deliver
    /// Give it straight back to the driver; counted, not delivered.
    case skip
}

/// How a pin checks what the driver wrote into a frame.
enum FrameValidation: Sendable {
    /// bytesused must be 1...length: anything else is a driver violation.
    case uncompressed
    /// A compressed format: bytesused 0 and bytesused > length are corrupt frames (policy applies).
    case compressed
    /// A JPEG format: as `compressed`, plus the SOI and EOI markers.
    case jpeg
}

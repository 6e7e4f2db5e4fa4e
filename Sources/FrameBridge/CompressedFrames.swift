import V4L2

/// What the pin does with a compressed frame that fails validation (``CompressedFrameDefects``).
public enum CorruptFramePolicy: String, Sendable, Codable, CaseIterable {
    /// Deliver it, flagged (``FrameInfo/defects``, ``FrameInfo/isCorrupt``); counted.
    case deliver
    /// Give it straight back to the driver (QBUF); counted, not delivered. The default.
    case skip
}

/// What is wrong with a compressed frame, found before it is delivered. Each is counted
/// separately in ``CaptureStatistics``.
public struct CompressedFrameDefects: OptionSet, Hashable, Sendable, Codable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// bytesused is 0 (nothing after data_offset): an empty frame.
    public static let empty = CompressedFrameDefects(rawValue: 1 << 0)
    /// The payload does not start with a JPEG SOI marker (FF D8).
    public static let missingStartOfImage = CompressedFrameDefects(rawValue: 1 << 1)
    /// The payload does not end with a JPEG EOI marker (FF D9), allowing
    /// ``JPEGFrameCheck/maximumTrailingPadding`` zero bytes after it: the frame is truncated.
    public static let truncated = CompressedFrameDefects(rawValue: 1 << 2)
    /// bytesused is larger than the buffer (length). A delivered frame's payload is cut to the
    /// buffer's length: the bytes beyond it do not exist.
    public static let bytesUsedOverLength = CompressedFrameDefects(rawValue: 1 << 3)

    public var names: [String] {
        var names: [String] = []
        if contains(.empty) { names.append("empty") }
        if contains(.missingStartOfImage) { names.append("missing-soi") }
        if contains(.truncated) { names.append("truncated") }
        if contains(.bytesUsedOverLength) { names.append("bytesused-over-length") }
        return names
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(names)
    }

    public init(from decoder: any Decoder) throws {
        let names = try decoder.singleValueContainer().decode([String].self)
        self = []
        for defect in [CompressedFrameDefects.empty, .missingStartOfImage, .truncated, .bytesUsedOverLength]
        where names.contains(defect.names[0]) {
            insert(defect)
        }
    }
}

/// The marker checks of a JPEG frame (MJPEG, JPEG), done on every compressed frame before delivery.
public enum JPEGFrameCheck {
    /// Zero bytes allowed after the EOI marker. Cameras pad frames (uvcvideo passes on what the
    /// camera sent; some pad to a 512-byte or 4 KiB boundary), so a payload that ends in zeros is
    /// still whole when an EOI comes within this many bytes of its end. 4096 covers padding to a
    /// page and keeps the backward scan of a truncated frame short. Only 0x00 counts as padding.
    public static let maximumTrailingPadding = 4096

    /// The defects of `payload` (the bytes from data_offset to bytesused) as a JPEG picture:
    /// ``CompressedFrameDefects/empty``, ``CompressedFrameDefects/missingStartOfImage``,
    /// ``CompressedFrameDefects/truncated``. Reads at most the first two bytes and the last
    /// `maximumTrailingPadding + 2`.
    @inlinable
    public static func defects(_ payload: UnsafeRawBufferPointer) -> CompressedFrameDefects {
        guard let base = payload.baseAddress, payload.count > 0 else { return .empty }
        let bytes = base.assumingMemoryBound(to: UInt8.self)
        let count = payload.count
        var defects: CompressedFrameDefects = []
        if count < 2 || bytes[0] != 0xFF || bytes[1] != 0xD8 { defects.insert(.missingStartOfImage) }
        // The last non-zero byte, within the padding allowance, must end an EOI (FF D9).
        var end = count
        let lowest = max(0, count - maximumTrailingPadding)
        while end > lowest && bytes[end - 1] == 0 { end -= 1 }
        // An SOI alone (FF D8 FF D9 needs 4 bytes) is not a picture: the EOI must follow the SOI.
        if end < 4 || bytes[end - 1] != 0xD9 || bytes[end - 2] != 0xFF { defects.insert(.truncated) }
        return defects
    }
}

import CTurboJPEG

/// The pictures the emulated camera sends. Both formats show the same image: eight vertical
/// colour bars, and across the top a band of 32 blocks that spells the frame number in binary
/// (most significant bit first; white = 1). Brightness and contrast act on luma as a processing
/// unit does: Y' = clamp((Y - 16) * contrast / 100 + 16 + brightness).
///
/// Every function here is deterministic, so a test computes the very bytes the camera sent.
public enum FramePattern {
    public static let brightnessRange: ClosedRange<Int> = -64...64
    public static let contrastRange: ClosedRange<Int> = 0...200
    public static let defaultBrightness = 0
    public static let defaultContrast = 100
    /// Height of the frame-number band, in rows.
    public static func bandHeight(_ height: Int) -> Int { min(max(2, height / 12) & ~1, height) }
    /// MJPEG frames repeat after this many distinct pictures, so the camera encodes each once.
    public static let jpegPeriod = 16

    // 75% colour bars (white, yellow, cyan, green, magenta, red, blue, black), BT.601 limited range.
    static let bars: [(y: UInt8, u: UInt8, v: UInt8)] = [
        (180, 128, 128), (162, 44, 142), (131, 156, 44), (112, 72, 58),
        (84, 184, 198), (65, 100, 212), (35, 212, 114), (16, 128, 128),
    ]

    static func adjust(_ y: UInt8, brightness: Int, contrast: Int) -> UInt8 {
        let value = (Int(y) - 16) * contrast / 100 + 16 + brightness
        return UInt8(clamping: value)
    }

    /// One YUYV frame (width must be even).
    public static func yuyv(width: Int, height: Int, frameNumber: UInt32,
                            brightness: Int = defaultBrightness, contrast: Int = defaultContrast) -> [UInt8] {
        var frame = [UInt8](repeating: 0, count: width * height * 2)
        frame.withUnsafeMutableBufferPointer { fill(yuyv: $0, width: width, height: height, frameNumber: frameNumber,
                                                    brightness: brightness, contrast: contrast) }
        return frame
    }

    /// Writes one YUYV frame into `out` (width * height * 2 bytes).
    public static func fill(yuyv out: UnsafeMutableBufferPointer<UInt8>, width: Int, height: Int, frameNumber: UInt32,
                            brightness: Int, contrast: Int) {
        precondition(width % 2 == 0 && out.count >= width * height * 2)
        let stride = width * 2
        // The bar row, built once and copied.
        for pair in 0..<(width / 2) {
            let bar = bars[min(7, pair * 2 * 8 / width)]
            let y = adjust(bar.y, brightness: brightness, contrast: contrast)
            out[pair * 4] = y; out[pair * 4 + 1] = bar.u; out[pair * 4 + 2] = y; out[pair * 4 + 3] = bar.v
        }
        let band = bandHeight(height)
        let base = out.baseAddress!
        for row in max(1, band)..<height { (base + row * stride).update(from: base, count: stride) }
        // The band: 32 blocks, grey (neutral chroma).
        let white = adjust(235, brightness: brightness, contrast: contrast)
        let black = adjust(16, brightness: brightness, contrast: contrast)
        for pair in 0..<(width / 2) {
            let bit = 31 - min(31, pair * 2 * 32 / width)
            let y = (frameNumber >> UInt32(bit)) & 1 == 1 ? white : black
            out[pair * 4] = y; out[pair * 4 + 1] = 128; out[pair * 4 + 2] = y; out[pair * 4 + 3] = 128
        }
        for row in 1..<max(1, band) { (base + row * stride).update(from: base, count: stride) }
    }

    /// Reads the frame number back from a YUYV frame's band (nil when the band is not clean).
    public static func frameNumber(yuyv frame: UnsafeRawBufferPointer, width: Int, height: Int) -> UInt32? {
        guard frame.count >= width * height * 2, width >= 64 else { return nil }
        var number: UInt32 = 0
        for bit in 0..<32 {
            let pair = (bit * width / 32 + width / 64) / 2
            let y = frame[pair * 4]
            number = number << 1 | (y > 128 ? 1 : 0)
        }
        return number
    }

    /// One baseline JPEG (4:2:2, quality 85) of the same picture; frame numbers repeat every
    /// `jpegPeriod` frames.
    public static func jpeg(width: Int, height: Int, frameNumber: UInt32,
                            brightness: Int = defaultBrightness, contrast: Int = defaultContrast,
                            encoder: JPEGEncoder) throws -> [UInt8] {
        let picture = yuyv(width: width, height: height, frameNumber: frameNumber % UInt32(jpegPeriod),
                           brightness: brightness, contrast: contrast)
        return try encoder.encode(yuyv: picture, width: width, height: height)
    }
}

/// A TurboJPEG compressor that takes YUYV and writes 4:2:2 baseline JPEGs.
public final class JPEGEncoder {
    private let handle: tjhandle
    private var y: [UInt8] = [], u: [UInt8] = [], v: [UInt8] = []
    public let quality: Int32

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public init(quality: Int32 = 85) throws {
        guard let handle = tjInitCompress() else { throw Failure(description: "tjInitCompress failed") }
        self.handle = handle
        self.quality = quality
    }

    deinit { tjDestroy(handle) }

    public func encode(yuyv: [UInt8], width: Int, height: Int) throws -> [UInt8] {
        let chroma = width / 2 * height
        if y.count != width * height { y = [UInt8](repeating: 0, count: width * height) }
        if u.count != chroma { u = [UInt8](repeating: 0, count: chroma); v = u }
        yuyv.withUnsafeBufferPointer { src in
            y.withUnsafeMutableBufferPointer { yp in
                u.withUnsafeMutableBufferPointer { up in
                    v.withUnsafeMutableBufferPointer { vp in
                        let s = src.baseAddress!, py = yp.baseAddress!, pu = up.baseAddress!, pv = vp.baseAddress!
                        for i in 0..<(width * height / 2) {
                            py[2 * i] = s[4 * i]; pu[i] = s[4 * i + 1]; py[2 * i + 1] = s[4 * i + 2]; pv[i] = s[4 * i + 3]
                        }
                    }
                }
            }
        }
        var output: UnsafeMutablePointer<UInt8>? = nil
        var size: UInt = 0
        let status: Int32 = y.withUnsafeBufferPointer { yp in
            u.withUnsafeBufferPointer { up in
                v.withUnsafeBufferPointer { vp in
                    var planes: [UnsafePointer<UInt8>?] = [yp.baseAddress, up.baseAddress, vp.baseAddress]
                    var strides: [Int32] = [Int32(width), Int32(width / 2), Int32(width / 2)]
                    return tjCompressFromYUVPlanes(handle, &planes, Int32(width), &strides, Int32(height),
                                                   Int32(TJSAMP_422.rawValue), &output, &size, quality, 0)
                }
            }
        }
        defer { if let output { tjFree(output) } }
        guard status == 0, let output else {
            throw Failure(description: "tjCompressFromYUVPlanes: \(String(cString: tjGetErrorStr2(handle)))")
        }
        return Array(UnsafeBufferPointer(start: output, count: Int(size)))
    }
}
